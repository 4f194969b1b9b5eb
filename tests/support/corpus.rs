//! Test fixture: a deterministic mail corpus for backfill tests, and its loaders (IMAP APPEND, or straight into a
//! Dovecot Maildir), each returning a [`Manifest`] of what was stored.
//!
//! Owns: its own seeded PRNG (SplitMix64; same options => byte-identical messages, flags and dates), the folder
//! set (nested `Projects/2024`, non-ASCII `Entwürfe`, `Архив`, SPECIAL-USE names Sent/Drafts/Trash/Junk/Archive),
//! the message kinds (normal, no Message-ID, byte-identical duplicate in the same folder, the same message in two
//! folders, a mailing-list copy + direct copy sharing one Message-ID with different bytes, one big attachment),
//! flags + keywords, INTERNALDATEs over 2012-2024.
//! Must never: read real mail, use the network beyond the loopback IMAP server it is given, or depend on another
//! support file (the IMAP login and modified UTF-7 code here are deliberately self-contained).
//!
//! Messages use CRLF line endings throughout, so `sha256` in the manifest equals the sha256 of what IMAP
//! `BODY.PEEK[]` returns, and `size` equals RFC822.SIZE.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Folders (UTF-8, `/` hierarchy) and their weights.
pub const FOLDERS: &[(&str, u32)] = &[
    ("INBOX", 40),
    ("Sent", 12),
    ("Drafts", 2),
    ("Trash", 2),
    ("Junk", 1),
    ("Archive", 6),
    ("Projects", 3),
    ("Projects/2024", 6),
    ("Lists/rust-users", 4),
    ("Entwürfe", 3),
    ("Архив", 3),
];
/// Keywords used (also the `dovecot-keywords` index order, letters a, b, c, ... in Maildir file names).
pub const KEYWORDS: &[&str] = &["$Forwarded", "$Label1", "Work", "$MDNSent", "$Label2"];
const T0: i64 = 1_325_376_000; // 2012-01-01T00:00:00Z
const T1: i64 = 1_735_603_200; // 2024-12-31T00:00:00Z
const T_DELTA: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z

/// What a message is, for tests that reason about duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Normal,
    /// No Message-ID header at all.
    NoMessageId,
    /// A byte-identical second copy of an earlier message in the same folder (double delivery).
    DupExact,
    /// A byte-identical copy of an earlier message in another folder (same Message-ID in two folders).
    DupCross,
    /// Mailing-list copy: same Message-ID as an earlier (direct) message in the same folder, different bytes.
    ListCopy,
    /// The message carrying the big attachment.
    Big,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::NoMessageId => "nomid",
            Kind::DupExact => "dupexact",
            Kind::DupCross => "dupcross",
            Kind::ListCopy => "listcopy",
            Kind::Big => "big",
        }
    }
}

/// Generator options. `CorpusOptions::new("alice", 200)` is a sensible test corpus.
#[derive(Clone, Debug)]
pub struct CorpusOptions {
    pub user: String,
    pub seed: u64,
    /// Total number of messages (every duplicate counts).
    pub n: usize,
    /// First sequence number; a later batch (`start = previous n`) gets new ids and dates after 2025-01-01.
    pub start: usize,
    /// Raw size of the one big attachment (base64 makes the message ~1.37x larger); None: no big message.
    pub big_attachment: Option<usize>,
    /// Upper bound for ordinary message sizes (log-uniform 600 B .. max).
    pub max_size: usize,
    /// Folders to use (UTF-8, `/` hierarchy); default [`FOLDERS`].
    pub folders: Vec<(String, u32)>,
    /// Fractions of n (each at least 1 when n >= 12 and this is the first batch).
    pub nomid: f64,
    pub dupexact: f64,
    pub dupcross: f64,
    pub listcopy: f64,
}

impl CorpusOptions {
    pub fn new(user: &str, n: usize) -> Self {
        CorpusOptions {
            user: user.to_string(),
            seed: 1,
            n,
            start: 0,
            big_attachment: Some(5 * 1024 * 1024),
            max_size: 64 * 1024,
            folders: FOLDERS.iter().map(|(f, w)| (f.to_string(), *w)).collect(),
            nomid: 0.03,
            dupexact: 0.01,
            dupcross: 0.02,
            listcopy: 0.01,
        }
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn start(mut self, start: usize) -> Self {
        self.start = start;
        self
    }
    pub fn big_attachment(mut self, raw_bytes: Option<usize>) -> Self {
        self.big_attachment = raw_bytes;
        self
    }
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes.max(1024);
        self
    }
    pub fn folders(mut self, folders: &[&str]) -> Self {
        self.folders = folders.iter().map(|f| (f.to_string(), 1)).collect();
        self
    }
}

/// One generated message.
#[derive(Clone, Debug)]
pub struct Message {
    /// Sequence number (duplicates carry the sequence number of their original).
    pub seq: usize,
    /// `X-Test-Id` header value (`<user>-<seq>`), shared by byte-identical copies.
    pub id: String,
    /// UTF-8 folder name, `/` hierarchy.
    pub folder: String,
    pub kind: Kind,
    pub message_id: Option<String>,
    /// System flags (`\Seen` ...) and keywords, sorted; never `\Recent`.
    pub flags: Vec<String>,
    /// INTERNALDATE, epoch seconds.
    pub internaldate: i64,
    /// The message, CRLF line endings.
    pub data: Vec<u8>,
}

impl Message {
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.data))
    }
}

/// A generated corpus.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub user: String,
    pub messages: Vec<Message>,
}

/// What a loader stored: one entry per message, plus the folders created (and subscribed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
    /// Every folder that holds messages, UTF-8 `/` hierarchy (INBOX included).
    pub folders: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub id: String,
    pub folder: String,
    pub kind: Kind,
    pub message_id: Option<String>,
    pub size: usize,
    pub sha256: String,
    pub flags: Vec<String>,
    pub internaldate: i64,
}

impl Manifest {
    /// Message count per folder.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in &self.entries {
            *m.entry(e.folder.clone()).or_insert(0) += 1;
        }
        m
    }
    pub fn total_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.size).sum()
    }
    pub fn count_kind(&self, kind: Kind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }
    /// Merge a later batch into this manifest.
    pub fn extend(&mut self, other: Manifest) {
        self.entries.extend(other.entries);
        self.folders.extend(other.folders);
    }
    /// One JSON object per line (id, folder, kind, message_id, size, sha256, flags, internaldate).
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            s.push_str(
                &serde_json::json!({
                    "id": e.id, "folder": e.folder, "kind": e.kind.as_str(),
                    "message_id": e.message_id, "size": e.size, "sha256": e.sha256,
                    "flags": e.flags, "internaldate": e.internaldate,
                })
                .to_string(),
            );
            s.push('\n');
        }
        s
    }
}

impl Corpus {
    /// Generate the corpus (pure; deterministic for the same options).
    pub fn generate(opts: &CorpusOptions) -> Corpus {
        generate(opts)
    }

    pub fn manifest(&self) -> Manifest {
        Manifest {
            entries: self
                .messages
                .iter()
                .map(|m| ManifestEntry {
                    id: m.id.clone(),
                    folder: m.folder.clone(),
                    kind: m.kind,
                    message_id: m.message_id.clone(),
                    size: m.data.len(),
                    sha256: m.sha256(),
                    flags: m.flags.clone(),
                    internaldate: m.internaldate,
                })
                .collect(),
            folders: self.messages.iter().map(|m| m.folder.clone()).collect(),
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.data.len()).sum()
    }

    /// APPEND every message over IMAP (LOGIN `login`/`password` on plain `addr`) with its exact flags and
    /// INTERNALDATE; folders are created and subscribed first. `sep` is the server's hierarchy separator.
    /// One APPEND per round trip: fine for a few hundred messages; use `write_maildir` for thousands.
    pub async fn load_imap(
        &self,
        addr: SocketAddr,
        login: &str,
        password: &str,
        sep: char,
    ) -> Result<Manifest, String> {
        self.load_imap_prefixed(addr, login, password, sep, "")
            .await
    }

    /// [`Corpus::load_imap`] into a server whose personal namespace has the prefix `prefix` (wire
    /// form with its separator, e.g. `INBOX.` on Cyrus with `altnamespace: no`): every folder but
    /// INBOX is stored as `prefix` + its wire name. The manifest keeps the logical names.
    pub async fn load_imap_prefixed(
        &self,
        addr: SocketAddr,
        login: &str,
        password: &str,
        sep: char,
        prefix: &str,
    ) -> Result<Manifest, String> {
        let mut session = imap_login(addr, login, password).await?;
        let mut made = BTreeSet::new();
        for m in &self.messages {
            let mut wire = wire_name(&m.folder, sep);
            if wire != "INBOX" {
                wire.insert_str(0, prefix);
            }
            if made.insert(wire.clone()) && wire != "INBOX" {
                let _ = io(session.create(&wire)).await; // "already exists" is fine
                io(session.subscribe(&wire))
                    .await
                    .map_err(|e| format!("SUBSCRIBE {wire}: {e}"))?;
            }
            let flags = format!("({})", m.flags.join(" "));
            let date = format!("\"{}\"", imap_date(m.internaldate));
            io(session.append(&wire, Some(flags.as_str()), Some(date.as_str()), &m.data))
                .await
                .map_err(|e| format!("APPEND {} to {wire}: {e}", m.id))?;
        }
        let _ = io(session.logout()).await;
        Ok(self.manifest())
    }

    /// Write every message straight into `maildir` (the user's Maildir root, i.e. INBOX), Dovecot style:
    /// `cur/<time>.M<seq>P<n>.cutover-corpus,S=<size>,W=<vsize>:2,<flags>`, keywords via `dovecot-keywords`,
    /// file mtime = INTERNALDATE, `subscriptions` updated, files chowned to `owner` (Dovecot's mail uid/gid).
    /// `layout_fs`: false = Maildir++ (`.Folder.Sub`, sep `.`), true = LAYOUT=fs (`Folder/Sub`, sep `/`).
    /// Do this while no IMAP session has the folders open (Dovecot picks new files up on the next sync).
    pub fn write_maildir(
        &self,
        maildir: &Path,
        layout_fs: bool,
        owner: Option<(u32, u32)>,
    ) -> std::io::Result<Manifest> {
        let sep = if layout_fs { '/' } else { '.' };
        let mut made: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (counter, m) in self.messages.iter().enumerate() {
            let dir = match made.get(&m.folder) {
                Some(d) => d.clone(),
                None => {
                    let d = folder_dir(maildir, &m.folder, layout_fs);
                    ensure_maildir_folder(maildir, &d, m.folder != "INBOX", owner)?;
                    made.insert(m.folder.clone(), d.clone());
                    d
                }
            };
            write_maildir_message(&dir, m, counter, owner)?;
        }
        // Dovecot 2.3 reads the v1 subscriptions format: one mailbox name (wire form) per line.
        let sub = maildir.join("subscriptions");
        let mut names: BTreeSet<String> = std::fs::read_to_string(&sub)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("V\t"))
            .map(str::to_string)
            .collect();
        for f in made.keys().filter(|f| *f != "INBOX") {
            names.insert(wire_name(f, sep));
        }
        let mut text = String::new();
        for n in names {
            text.push_str(&n);
            text.push('\n');
        }
        std::fs::write(&sub, text)?;
        chown_opt(&sub, owner)?;
        Ok(self.manifest())
    }
}

/// Directory of `folder` under the Maildir root.
pub fn folder_dir(maildir: &Path, folder: &str, layout_fs: bool) -> PathBuf {
    if folder.eq_ignore_ascii_case("INBOX") {
        return maildir.to_path_buf();
    }
    let parts: Vec<String> = folder.split('/').map(mutf7_encode).collect();
    if layout_fs {
        parts.iter().fold(maildir.to_path_buf(), |p, s| p.join(s))
    } else {
        maildir.join(format!(".{}", parts.join(".")))
    }
}

fn ensure_maildir_folder(
    root: &Path,
    dir: &Path,
    is_folder: bool,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    // create every missing directory from root down, chowning each
    let mut chain = vec![];
    let mut p = dir.to_path_buf();
    while !p.exists() && p.starts_with(root) {
        chain.push(p.clone());
        match p.parent() {
            Some(q) => p = q.to_path_buf(),
            None => break,
        }
    }
    for d in chain.iter().rev() {
        std::fs::create_dir(d)?;
        chown_opt(d, owner)?;
    }
    for sub in ["cur", "new", "tmp"] {
        let d = dir.join(sub);
        if !d.exists() {
            std::fs::create_dir(&d)?;
            chown_opt(&d, owner)?;
        }
    }
    if is_folder {
        let mf = dir.join("maildirfolder");
        if !mf.exists() {
            std::fs::write(&mf, b"")?;
            chown_opt(&mf, owner)?;
        }
    }
    let kw = dir.join("dovecot-keywords");
    if !kw.exists() {
        let mut s = String::new();
        for (i, k) in KEYWORDS.iter().enumerate() {
            s.push_str(&format!("{i} {k}\n"));
        }
        std::fs::write(&kw, s)?;
        chown_opt(&kw, owner)?;
    }
    Ok(())
}

fn write_maildir_message(
    dir: &Path,
    m: &Message,
    counter: usize,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut letters: Vec<char> = m
        .flags
        .iter()
        .filter_map(|f| match f.as_str() {
            "\\Draft" => Some('D'),
            "\\Flagged" => Some('F'),
            "\\Answered" => Some('R'),
            "\\Seen" => Some('S'),
            "\\Deleted" => Some('T'),
            kw => KEYWORDS
                .iter()
                .position(|k| *k == kw)
                .map(|i| (b'a' + i as u8) as char),
        })
        .collect();
    letters.sort_unstable();
    let letters: String = letters.into_iter().collect();
    let base = format!(
        "{}.M{}P{}.cutover-corpus",
        m.internaldate.max(0),
        m.seq,
        counter
    );
    // all line endings are CRLF already: the virtual (CRLF) size equals the file size
    let name = format!("{base},S={},W={}:2,{letters}", m.data.len(), m.data.len());
    let tmp = dir.join("tmp").join(&base);
    std::fs::write(&tmp, &m.data)?;
    let t = std::time::UNIX_EPOCH + Duration::from_secs(m.internaldate.max(0) as u64);
    let f = std::fs::File::options().write(true).open(&tmp)?;
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    drop(f);
    chown_opt(&tmp, owner)?;
    std::fs::rename(&tmp, dir.join("cur").join(name))
}

fn chown_opt(p: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((u, g)) => std::os::unix::fs::chown(p, Some(u), Some(g)),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------------------------------------ generator

/// SplitMix64: small, fast, good enough for test data; stable across platforms and versions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Seed from a string (FNV-1a), e.g. `"1/alice/0"`.
    pub fn from_str_seed(s: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(h)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
    pub fn weighted<'a>(&mut self, items: &'a [(String, u32)]) -> &'a str {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = self.range(0, total.max(1) - 1);
        for (name, w) in items {
            if r < u64::from(*w) {
                return name;
            }
            r -= u64::from(*w);
        }
        &items[0].0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "at",
    "this",
    "have",
    "from",
    "or",
    "an",
    "but",
    "not",
    "are",
    "which",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "been",
    "has",
    "more",
    "if",
    "will",
    "one",
    "about",
    "migration",
    "mailbox",
    "server",
    "folder",
    "invoice",
    "meeting",
    "report",
    "quarterly",
    "budget",
    "draft",
    "review",
    "please",
    "attached",
    "thanks",
    "regards",
    "schedule",
    "project",
    "release",
    "customer",
    "support",
    "ticket",
    "update",
    "deadline",
    "Grüße",
    "Übersicht",
    "отчёт",
    "встреча",
];
const NAMES: &[&str] = &[
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Barbara Liskov",
    "Ken Thompson",
    "Margaret Hamilton",
    "Radia Perlman",
    "Jürgen Müller",
    "Élodie Durand",
    "Иван Петров",
];

fn generate(opts: &CorpusOptions) -> Corpus {
    let mut rng = Rng::from_str_seed(&format!("{}/{}/{}", opts.seed, opts.user, opts.start));
    let n = opts.n;
    let first_batch = opts.start == 0;
    let folders = if opts.folders.is_empty() {
        vec![("INBOX".to_string(), 1)]
    } else {
        opts.folders.clone()
    };
    let multi_folder = folders.len() > 1;
    // Forced positions so that every kind exists in any first batch of n >= 12 messages.
    let mut forced: BTreeMap<usize, Kind> = BTreeMap::new();
    if first_batch && n >= 12 {
        forced.insert(1, Kind::NoMessageId);
        forced.insert(n / 3, Kind::NoMessageId);
        if opts.big_attachment.is_some() {
            forced.insert(n / 2, Kind::Big);
        }
        forced.insert(n - 4, Kind::ListCopy);
        forced.insert(n - 3, Kind::DupExact);
        if multi_folder {
            forced.insert(n - 2, Kind::DupCross);
        }
        forced.insert(n - 1, Kind::DupExact);
    } else if first_batch && opts.big_attachment.is_some() && n > 0 {
        forced.insert(n / 2, Kind::Big);
    }
    let mut out: Vec<Message> = Vec::with_capacity(n);
    for i in 0..n {
        let seq = opts.start + i;
        let frac = i as f64 / (n.max(2) - 1) as f64;
        let when = if first_batch {
            let jitter = rng.range(0, 6 * 86_400) as i64 - 3 * 86_400;
            (T0 + (frac * (T1 - T0) as f64) as i64 + jitter).clamp(T0, T1)
        } else {
            T_DELTA + i as i64 * 3600 + rng.range(0, 3000) as i64
        };
        let kind = match forced.get(&i) {
            Some(k) => *k,
            None => {
                let r = rng.f64();
                let t1 = opts.dupexact;
                let t2 = t1 + opts.dupcross;
                let t3 = t2 + opts.listcopy;
                let t4 = t3 + opts.nomid;
                if r < t1 {
                    Kind::DupExact
                } else if r < t2 && multi_folder {
                    Kind::DupCross
                } else if r < t2 {
                    Kind::Normal
                } else if r < t3 {
                    Kind::ListCopy
                } else if r < t4 {
                    Kind::NoMessageId
                } else {
                    Kind::Normal
                }
            }
        };
        let msg = match kind {
            Kind::DupExact | Kind::DupCross if !out.is_empty() => {
                // copy an earlier, non-big original, byte for byte
                let candidates: Vec<usize> = (0..out.len())
                    .filter(|&j| out[j].kind != Kind::Big && out[j].kind != Kind::DupCross)
                    .collect();
                if candidates.is_empty() {
                    new_message(&mut rng, opts, seq, &folders, when, Kind::Normal, None)
                } else {
                    let orig = out[*rng.pick(&candidates)].clone();
                    let folder = if kind == Kind::DupExact {
                        orig.folder.clone()
                    } else {
                        let others: Vec<&(String, u32)> =
                            folders.iter().filter(|(f, _)| *f != orig.folder).collect();
                        others[rng.range(0, others.len() as u64 - 1) as usize]
                            .0
                            .clone()
                    };
                    let flags = pick_flags(&mut rng, &folder, frac);
                    Message {
                        folder,
                        kind,
                        flags,
                        internaldate: orig.internaldate + rng.range(60, 30 * 86_400) as i64,
                        ..orig
                    }
                }
            }
            Kind::ListCopy => {
                let candidates: Vec<usize> = (0..out.len())
                    .filter(|&j| out[j].kind == Kind::Normal && out[j].message_id.is_some())
                    .collect();
                if candidates.is_empty() {
                    new_message(&mut rng, opts, seq, &folders, when, Kind::Normal, None)
                } else {
                    let orig = out[*rng.pick(&candidates)].clone();
                    new_message(
                        &mut rng,
                        opts,
                        seq,
                        &folders,
                        when,
                        Kind::ListCopy,
                        Some(&orig),
                    )
                }
            }
            Kind::DupExact | Kind::DupCross => {
                new_message(&mut rng, opts, seq, &folders, when, Kind::Normal, None)
            }
            k => new_message(&mut rng, opts, seq, &folders, when, k, None),
        };
        out.push(msg);
    }
    Corpus {
        user: opts.user.clone(),
        messages: out,
    }
}

fn pick_flags(rng: &mut Rng, folder: &str, t_frac: f64) -> Vec<String> {
    let mut f: BTreeSet<&str> = BTreeSet::new();
    match folder {
        "Sent" => {
            f.insert("\\Seen");
        }
        "Drafts" | "Entwürfe" => {
            f.insert("\\Draft");
            if rng.chance(0.5) {
                f.insert("\\Seen");
            }
        }
        _ => {
            if rng.chance(0.55 + 0.4 * (1.0 - t_frac)) {
                f.insert("\\Seen");
            }
            if rng.chance(0.12) {
                f.insert("\\Answered");
            }
            if rng.chance(0.08) {
                f.insert("\\Flagged");
            }
        }
    }
    for (kw, p) in [
        ("$Forwarded", 0.05),
        ("$Label1", 0.04),
        ("Work", 0.05),
        ("$MDNSent", 0.02),
        ("$Label2", 0.02),
    ] {
        if rng.chance(p) {
            f.insert(kw);
        }
    }
    if rng.chance(0.02) {
        f.insert("\\Deleted");
    }
    f.into_iter().map(str::to_string).collect()
}

fn new_message(
    rng: &mut Rng,
    opts: &CorpusOptions,
    seq: usize,
    folders: &[(String, u32)],
    when: i64,
    kind: Kind,
    list_of: Option<&Message>,
) -> Message {
    let domain = "old.example.test";
    let folder = match list_of {
        Some(o) => o.folder.clone(),
        None => rng.weighted(folders).to_string(),
    };
    let message_id = match (kind, list_of) {
        (Kind::NoMessageId, _) => None,
        (_, Some(o)) => o.message_id.clone(),
        _ => Some(format!(
            "<{}.{:06}.{:x}@{domain}>",
            opts.user,
            seq,
            rng.next_u64() & 0xffff_ffff_ffff
        )),
    };
    let sent = folder == "Sent" || folder == "Drafts" || folder == "Entwürfe";
    let me = addr(&capitalize(&opts.user), &format!("{}@{domain}", opts.user));
    let other_name = *rng.pick(NAMES);
    let other = addr(
        other_name,
        &format!(
            "{}@{}",
            ascii_local(other_name),
            rng.pick(&["example.net", "example.org", "corp.example.com"])
        ),
    );
    let mut h: Vec<String> = Vec::new();
    if let Some(o) = list_of {
        // the list copy: list headers, its own Received, different Subject prefix, same Message-ID
        h.push(format!(
            "Received: from lists.example.org (lists.example.org [198.51.100.7])\r\n\tby mail.{domain} with ESMTP id L{:08X}; {}",
            rng.next_u64() as u32,
            rfc2822_date(o.internaldate + 5)
        ));
        h.push("List-Id: <rust-users.lists.example.org>".into());
        h.push("List-Unsubscribe: <mailto:rust-users-leave@lists.example.org>".into());
    } else if !(sent || (kind == Kind::NoMessageId && rng.chance(0.5))) {
        h.push(format!(
            "Received: from mx1.example.net (mx1.example.net [192.0.2.{}])\r\n\tby mail.{domain} with ESMTPS id {:08X}{seq}\r\n\tfor <{}@{domain}>; {}",
            rng.range(1, 254),
            rng.next_u64() as u32,
            opts.user,
            rfc2822_date(when - 2)
        ));
    }
    let date = match list_of {
        Some(o) => o.internaldate - 30,
        None if sent => when + rng.range(1, 30) as i64,
        None => when - rng.range(2, 900) as i64,
    };
    h.push(format!("Date: {}", rfc2822_date(date)));
    h.push(format!("From: {}", if sent { &me } else { &other }));
    h.push(format!("To: {}", if sent { &other } else { &me }));
    let subject = match list_of {
        Some(o) => format!(
            "[rust-users] {}",
            header_value(&o.data, "Subject").unwrap_or_default()
        ),
        None => subject(rng),
    };
    h.push(format!("Subject: {subject}"));
    if let Some(mid) = &message_id {
        h.push(format!("Message-ID: {mid}"));
    }
    h.push("MIME-Version: 1.0".into());
    h.push(format!("X-Test-Id: {}-{:06}", opts.user, seq));
    let head = h.join("\r\n") + "\r\n";
    let target = if kind == Kind::Big {
        0
    } else {
        let lo = 600f64.ln();
        let hi = (opts.max_size.max(1024) as f64).ln();
        // mostly small: square the uniform to lean towards the low end
        let u = rng.f64();
        (lo + u * u * (hi - lo)).exp() as usize
    };
    let data = if kind == Kind::Big || target > 24 * 1024 {
        let raw = match (kind, opts.big_attachment) {
            (Kind::Big, Some(b)) => b,
            _ => (target.saturating_sub(head.len() + 1500)) * 3 / 4,
        };
        multipart(rng, &head, seq, raw.max(512))
    } else {
        let body = text_block(rng, target.saturating_sub(head.len() + 80).max(120));
        format!(
            "{head}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
        )
        .into_bytes()
    };
    let flags = pick_flags(rng, &folder, 0.5);
    Message {
        seq,
        id: format!("{}-{:06}", opts.user, seq),
        folder,
        kind,
        message_id,
        flags,
        internaldate: when,
        data,
    }
}

fn multipart(rng: &mut Rng, head: &str, seq: usize, raw: usize) -> Vec<u8> {
    use base64::Engine as _;
    let boundary = format!("=_cutover_{seq}_{:08x}", rng.next_u64() as u32);
    let text_len = rng.range(300, 2000) as usize;
    let text = text_block(rng, text_len);
    let (ctype, ext) = *rng.pick(&[
        ("application/pdf", "pdf"),
        ("image/jpeg", "jpg"),
        ("application/zip", "zip"),
    ]);
    let blob = base64::engine::general_purpose::STANDARD.encode(rng.bytes(raw));
    let mut b64 = String::with_capacity(blob.len() + blob.len() / 76 * 2 + 2);
    for chunk in blob.as_bytes().chunks(76) {
        b64.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        b64.push_str("\r\n");
    }
    format!(
        "{head}Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n--{boundary}\r\nContent-Type: {ctype}; name=\"file{seq}.{ext}\"\r\nContent-Disposition: attachment; filename=\"file{seq}.{ext}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--{boundary}--\r\n"
    )
    .into_bytes()
}

fn text_block(rng: &mut Rng, nbytes: usize) -> String {
    let mut s = String::new();
    while s.len() < nbytes {
        let k = rng.range(8, 13);
        let words: Vec<&str> = (0..k).map(|_| *rng.pick(WORDS)).collect();
        s.push_str(&capitalize(&words.join(" ")));
        s.push_str(".\r\n");
        if rng.chance(0.12) {
            s.push_str("\r\n");
        }
    }
    s
}

fn subject(rng: &mut Rng) -> String {
    let k = rng.range(3, 7);
    let s = capitalize(
        &(0..k)
            .map(|_| *rng.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let r = rng.f64();
    if r < 0.1 {
        use base64::Engine as _;
        let s = format!("Réunion – {s}");
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    } else if r < 0.3 {
        format!("Re: {s}")
    } else {
        s
    }
}

fn addr(name: &str, email: &str) -> String {
    use base64::Engine as _;
    if name.is_ascii() {
        format!("\"{name}\" <{email}>")
    } else {
        format!(
            "=?UTF-8?B?{}?= <{email}>",
            base64::engine::general_purpose::STANDARD.encode(name)
        )
    }
}

fn ascii_local(name: &str) -> String {
    let l: String = name
        .split(' ')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    if l.is_empty() { "user".into() } else { l }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Unfolded value of the first header `name` in `data` (header section only).
pub fn header_value(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            let mut v = v.trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with(' ') || next.starts_with('\t') {
                    v.push(' ');
                    v.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(v);
        }
    }
    None
}

// ------------------------------------------------------------------------------------------------ dates, names

/// `Tue, 01 Jan 2024 10:00:00 +0000`.
pub fn rfc2822_date(epoch: i64) -> String {
    const DOW: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DOW[(days + 4).rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

const MON: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `01-Jan-2024 10:00:00 +0000` (IMAP date-time, without quotes).
pub fn imap_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        d,
        MON[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Wire name: each `/`-separated part modified-UTF-7 encoded, joined with `sep`; `INBOX` stays `INBOX`.
pub fn wire_name(folder: &str, sep: char) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    folder
        .split('/')
        .map(mutf7_encode)
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

/// RFC 3501 modified UTF-7.
pub fn mutf7_encode(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut buf: Vec<u16> = Vec::new();
    let flush = |buf: &mut Vec<u16>, out: &mut String| {
        if !buf.is_empty() {
            let bytes: Vec<u8> = buf.iter().flat_map(|u| u.to_be_bytes()).collect();
            let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
            out.push('&');
            out.push_str(&b.replace('/', ","));
            out.push('-');
            buf.clear();
        }
    };
    for ch in s.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut buf, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut tmp = [0u16; 2];
            buf.extend_from_slice(ch.encode_utf16(&mut tmp));
        }
    }
    flush(&mut buf, &mut out);
    out
}

// ------------------------------------------------------------------------------------------------ IMAP

const IO_TIMEOUT: Duration = Duration::from_secs(60);

async fn io<T>(
    f: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

async fn imap_login(
    addr: SocketAddr,
    login: &str,
    password: &str,
) -> Result<async_imap::Session<tokio::net::TcpStream>, String> {
    let tcp = tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut client = async_imap::Client::new(tcp);
    tokio::time::timeout(IO_TIMEOUT, client.read_response())
        .await
        .map_err(|_| "greeting timeout".to_string())?
        .map_err(|e| format!("greeting: {e}"))?
        .ok_or("no greeting")?;
    tokio::time::timeout(IO_TIMEOUT, client.login(login, password))
        .await
        .map_err(|_| "login timeout".to_string())?
        .map_err(|(e, _)| format!("LOGIN {login}: {e}"))
}
