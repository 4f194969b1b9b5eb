//! A Maildir mail store (one user's `Maildir`, Maildir++ folders as Dovecot and Courier lay them
//! out) as a backfill endpoint: the storage layer only.
//!
//! Owns: listing the folders (`<root>` is INBOX, `<root>/.A.B` is `A/B`, names modified UTF-7 on
//! disk, the `subscriptions` file), reading a folder's messages (flags from the `:2,<info>` file
//! name suffix and `dovecot-keywords`, INTERNALDATE = the file's mtime, the size IMAP reports),
//! and writing: folders (+ Dovecot's `maildirfolder` marker), messages (tmp/ → fsync → rename
//! into cur/ → fsync cur/), flag changes (renames), keyword indexes and subscriptions (dotlock
//! file written, fsynced and renamed over the original, as Dovecot does).
//!
//! Never talks IMAP, never decides what to copy (that is `index` and the runner), never writes
//! backfill state, never rewrites a stored message in place, never panics on odd file names
//! (non-UTF-8 names are skipped with a warning).
//!
//! Decisions (see the tests):
//! - [`Listing`]: delimiter `Some('.')`, wire names as Dovecot's LIST shows this Maildir with
//!   separator `.` (the directory name without its leading dot: modified UTF-7, `.`-separated),
//!   so `plan::logical` gives the logical name. The methods take *logical* names (UTF-8,
//!   `/`-separated; a component containing `.` can't exist in Maildir++ and is refused).
//! - Sizes are what IMAP's RFC822.SIZE would be: CRLF line ends (`,W=` from the name when there,
//!   else the file size plus one per bare LF).
//! - Bytes read are CRLF-normalised (IMAP APPEND needs CRLF). Bytes written are stored with LF
//!   line ends by default ([`LineEndings::Lf`]), as Dovecot's and Courier's deliveries store them
//!   and as local tools (mutt, grep, procmail) expect; [`LineEndings::Crlf`] stores them as given.
//! - Flags: `D` \Draft, `F` \Flagged, `P` $Forwarded, `R` \Answered, `S` \Seen, `T` \Deleted,
//!   `a`..`z` keywords indexed by `dovecot-keywords`. Dovecot ignores `P`, so `$Forwarded` is
//!   written both as `P` and as a keyword letter (Dovecot sees the keyword, Courier/mutt the `P`).
//!   Messages in `new/` have no flags.

use super::plan::{self, FolderInfo, Listing};
use super::{BackfillError, Result};
use crate::header;
use crate::queue::spool::sync_dir;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The hierarchy delimiter of the wire names in [`Maildir::list`] (Maildir++).
pub const DELIMITER: char = '.';
/// Keyword letters `a`..`z`.
pub const MAX_KEYWORDS: usize = 26;
/// Keyword index file of a folder (Dovecot).
pub const KEYWORDS_FILE: &str = "dovecot-keywords";
/// Subscriptions file at the root (Courier, Dovecot).
pub const SUBSCRIPTIONS_FILE: &str = "subscriptions";
/// Marker file Dovecot puts in every subfolder.
pub const FOLDER_MARKER: &str = "maildirfolder";
/// Header bytes [`Folder::read_head`] reads at most (a header section longer than this is cut).
pub const MAX_HEAD: usize = 1 << 20;
/// A dotlock older than this is stale (its writer died) and is broken (Dovecot: 2 minutes).
const STALE_LOCK: Duration = Duration::from_secs(120);
/// How long a write waits for another writer's dotlock.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// System flags and their info letters, in info (ASCII) order.
const SYSTEM: [(char, &str); 6] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('P', "$Forwarded"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];

/// How [`Folder::append`] stores line ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineEndings {
    /// CRLF → LF: what Dovecot and Courier store, what local tools expect (default).
    #[default]
    Lf,
    /// The bytes as given (CRLF, as received over IMAP).
    Crlf,
}

/// One user's Maildir.
#[derive(Clone, Debug)]
pub struct Maildir {
    root: PathBuf,
    line_endings: LineEndings,
}

/// One folder (a directory with `cur/`, `new/`, `tmp/`).
#[derive(Clone, Debug)]
pub struct Folder {
    dir: PathBuf,
    line_endings: LineEndings,
}

/// One message of a folder: a small record (no bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The file name before the info (`:2,...`): stable across flag changes and new/ → cur/.
    pub key: String,
    pub path: PathBuf,
    /// `(\Seen $Label)`, never `\Recent`.
    pub flags: String,
    /// Epoch seconds (the file's mtime).
    pub internaldate: i64,
    /// RFC822.SIZE: the size with CRLF line ends.
    pub size: u32,
}

/// What [`Folder::append`] / [`Folder::set_flags`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub path: PathBuf,
    /// Flags that could not be stored: keywords beyond the 26 letters, unknown `\` flags.
    pub dropped: Vec<String>,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> BackfillError {
    BackfillError::Refused(format!("maildir: {what} {}: {e}", path.display()))
}

fn refused(msg: String) -> BackfillError {
    BackfillError::Refused(format!("maildir: {msg}"))
}

impl Maildir {
    /// A Maildir at `root` (which need not exist yet: see [`Maildir::create_root`]).
    pub fn open(root: &Path) -> Result<Maildir> {
        if root.as_os_str().is_empty() {
            return Err(refused("empty root path".into()));
        }
        Ok(Maildir {
            root: root.to_path_buf(),
            line_endings: LineEndings::default(),
        })
    }

    /// Line ends of messages written through this Maildir's folders.
    pub fn with_line_endings(mut self, le: LineEndings) -> Maildir {
        self.line_endings = le;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Create the root (= INBOX: `cur/`, `new/`, `tmp/`). Idempotent.
    pub fn create_root(&self) -> Result<()> {
        make_dirs(&self.root, false)
    }

    /// Every folder: INBOX, then the Maildir++ folders sorted, with the implied parents that have
    /// no `cur/` as `\Noselect`, `\HasChildren` / `\HasNoChildren`, and the subscriptions.
    pub fn list(&self) -> Result<Listing> {
        let subs: BTreeSet<String> = self.subscriptions()?.into_iter().collect();
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut selectable: BTreeSet<String> = BTreeSet::new();
        let rd = fs::read_dir(&self.root).map_err(|e| io_err("read", &self.root, e))?;
        for de in rd {
            let de = de.map_err(|e| io_err("read", &self.root, e))?;
            let os = de.file_name();
            let Some(name) = os.to_str() else {
                tracing::warn!(path = %de.path().display(), "maildir: skipping non-UTF-8 folder name");
                continue;
            };
            let Some(wire) = name.strip_prefix('.') else {
                continue;
            };
            if wire.is_empty() || wire == "." || !de.path().is_dir() {
                continue;
            }
            if wire.split(DELIMITER).any(str::is_empty) {
                tracing::warn!(path = %de.path().display(), "maildir: skipping folder with an empty name component");
                continue;
            }
            if de.path().join("cur").is_dir() {
                selectable.insert(wire.to_string());
            }
            // The folder and every implied parent.
            let mut end = 0;
            for part in wire.split(DELIMITER) {
                end += part.len();
                names.insert(wire[..end].to_string());
                end += 1;
            }
        }
        let has_children = |w: &str| {
            names
                .iter()
                .any(|n| n.len() > w.len() + 1 && n.starts_with(w) && n.as_bytes()[w.len()] == b'.')
        };
        let mut folders = vec![FolderInfo {
            wire: "INBOX".into(),
            attrs: vec![
                if has_children("INBOX") {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                }
                .into(),
            ],
            subscribed: subs.contains("INBOX"),
        }];
        for w in &names {
            if w == "INBOX" {
                continue;
            }
            let mut attrs = Vec::new();
            if !selectable.contains(w) {
                attrs.push("\\Noselect".to_string());
            }
            attrs.push(
                if has_children(w) {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                }
                .into(),
            );
            folders.push(FolderInfo {
                wire: w.clone(),
                attrs,
                subscribed: subs.contains(w),
            });
        }
        Ok(Listing {
            delimiter: Some(DELIMITER),
            folders,
            ..Default::default()
        })
    }

    /// Directory of a logical folder name (`INBOX` = the root).
    fn dir_of(&self, logical: &str) -> Result<PathBuf> {
        Ok(match wire_of(logical)? {
            None => self.root.clone(),
            Some(w) => self.root.join(format!(".{w}")),
        })
    }

    /// An existing folder (one with `cur/`).
    pub fn folder(&self, logical: &str) -> Result<Folder> {
        let dir = self.dir_of(logical)?;
        if !dir.join("cur").is_dir() {
            return Err(refused(format!(
                "no folder {logical:?} at {}",
                dir.display()
            )));
        }
        Ok(Folder {
            dir,
            line_endings: self.line_endings,
        })
    }

    /// Create a folder (and the root when needed). Idempotent; the parents stay implied
    /// (Maildir++ needs no directory for them).
    pub fn create(&self, logical: &str) -> Result<()> {
        let dir = self.dir_of(logical)?;
        self.create_root()?;
        if dir != self.root {
            make_dirs(&dir, true)?;
        }
        Ok(())
    }

    /// Subscribe a folder (its wire name into `subscriptions`, atomically, in the file's own
    /// format: Dovecot 2.3's version 2 when the file has it, else one wire name a line). Idempotent.
    pub fn subscribe(&self, logical: &str) -> Result<()> {
        let wire = wire_of(logical)?.unwrap_or_else(|| "INBOX".into());
        let path = self.root.join(SUBSCRIPTIONS_FILE);
        let lock = Dotlock::acquire(&path)?;
        let (v2, mut subs) = self.read_subscriptions()?;
        if subs.contains(&wire) {
            return Ok(());
        }
        subs.push(wire);
        let mut text = String::from(if v2 { SUBS_V2_HEADER } else { "" });
        for s in &subs {
            if v2 {
                text.push_str(&s.replace(DELIMITER, "\t"));
            } else {
                text.push_str(s);
            }
            text.push('\n');
        }
        lock.commit(text.as_bytes())
    }

    /// The subscribed wire names (empty when there is no `subscriptions` file).
    pub fn subscriptions(&self) -> Result<Vec<String>> {
        Ok(self.read_subscriptions()?.1)
    }

    /// `(version 2, wire names)` of the `subscriptions` file. Version 1 (Courier, old Dovecot):
    /// one wire name a line. Version 2 (Dovecot 2.3): `V<TAB>2`, an empty line, then one name a
    /// line with TAB as the hierarchy separator.
    fn read_subscriptions(&self) -> Result<(bool, Vec<String>)> {
        let path = self.root.join(SUBSCRIPTIONS_FILE);
        let text = match fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((false, Vec::new())),
            Err(e) => return Err(io_err("read", &path, e)),
        };
        let (v2, body) = match text.strip_prefix(SUBS_V2_HEADER) {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let names = body
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(|l| {
                if v2 {
                    l.replace('\t', &DELIMITER.to_string())
                } else {
                    l.to_string()
                }
            })
            .collect();
        Ok((v2, names))
    }
}

/// First lines of a version 2 `subscriptions` file (Dovecot 2.3).
const SUBS_V2_HEADER: &str = "V\t2\n\n";

/// Maildir++ wire name of a logical name (`None` for INBOX), refusing what Maildir++ can't hold.
fn wire_of(logical: &str) -> Result<Option<String>> {
    if logical.eq_ignore_ascii_case("INBOX") {
        return Ok(None);
    }
    let bad = logical.is_empty()
        || logical
            .split('/')
            .any(|c| c.is_empty() || c.contains(DELIMITER) || c.contains('\0'));
    if bad {
        return Err(refused(format!(
            "folder name {logical:?} can't be stored in Maildir++ (empty component or '.')"
        )));
    }
    Ok(Some(plan::wire(logical, Some(DELIMITER))))
}

/// Create `dir` with `cur/`, `new/`, `tmp/` (+ `maildirfolder`), fsyncing what was created.
fn make_dirs(dir: &Path, subfolder: bool) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    let existed = dir.is_dir();
    for sub in ["cur", "new", "tmp"] {
        let p = dir.join(sub);
        b.create(&p).map_err(|e| io_err("create", &p, e))?;
    }
    if subfolder {
        let m = dir.join(FOLDER_MARKER);
        if !m.exists() {
            File::create(&m)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err("create", &m, e))?;
        }
    }
    sync_dir(dir).map_err(|e| io_err("fsync", dir, e))?;
    if !existed && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).map_err(|e| io_err("fsync", parent, e))?;
    }
    Ok(())
}

/// `(key, info letters)` of a message file name: `key` is all before `:2,` (or `!2,` / `;2,`),
/// `info` what follows (empty when there is no info).
pub fn parse_info(name: &str) -> (&str, &str) {
    for sep in [":2,", "!2,", ";2,"] {
        if let Some(i) = name.rfind(sep) {
            return (&name[..i], &name[i + sep.len()..]);
        }
    }
    (name, "")
}

/// The info separator a name uses (`:` when none).
fn info_sep(name: &str) -> char {
    [':', '!', ';']
        .into_iter()
        .find(|c| name.contains(&format!("{c}2,")))
        .unwrap_or(':')
}

/// `(\Seen $Label)` flags of an info string, keyword letters resolved by `keywords` (index 0 =
/// `a`; letters without a keyword are skipped, as Dovecot does).
pub fn info_to_flags(info: &str, keywords: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in info.chars() {
        let f = match c {
            'a'..='z' => keywords.get(c as usize - 'a' as usize).cloned(),
            _ => SYSTEM.iter().find(|s| s.0 == c).map(|s| s.1.to_string()),
        };
        if let Some(f) = f
            && !out.iter().any(|o| o.eq_ignore_ascii_case(&f))
        {
            out.push(f);
        }
    }
    format!("({})", out.join(" "))
}

/// Info string of a flags string: system letters, then keyword letters (indexes into
/// `keywords`, which gains the new ones while there is room). Returns `(info, dropped)`:
/// dropped are keywords that don't fit and `\` flags Maildir can't hold (`\Recent` is ignored).
/// Letters are sorted, as the Maildir spec asks.
pub fn flags_to_info(flags: &str, keywords: &mut Vec<String>) -> (String, Vec<String>) {
    let mut letters: BTreeSet<char> = BTreeSet::new();
    let mut dropped = Vec::new();
    for f in flags
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split_whitespace()
    {
        if f.eq_ignore_ascii_case("\\Recent") {
            continue;
        }
        if let Some(s) = SYSTEM.iter().find(|s| s.1.eq_ignore_ascii_case(f)) {
            letters.insert(s.0);
            if s.0 != 'P' {
                continue;
            }
        } else if f.starts_with('\\') {
            dropped.push(f.to_string());
            continue;
        }
        // A keyword ($Forwarded too, so Dovecot sees it).
        let idx = match keywords.iter().position(|k| k.eq_ignore_ascii_case(f)) {
            Some(i) => Some(i),
            None if keywords.len() < MAX_KEYWORDS => {
                keywords.push(f.to_string());
                Some(keywords.len() - 1)
            }
            None => None,
        };
        match idx.and_then(|i| u8::try_from(i).ok()) {
            Some(i) => {
                letters.insert(char::from(b'a' + i));
            }
            None => dropped.push(f.to_string()),
        }
    }
    (letters.into_iter().collect(), dropped)
}

/// Parse `dovecot-keywords` text: `<index> <name>` lines; gaps stay empty names.
fn parse_keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((i, name)) = line.split_once(' ') else {
            continue;
        };
        let Ok(i) = i.parse::<usize>() else { continue };
        if i >= MAX_KEYWORDS || name.is_empty() {
            continue;
        }
        if out.len() <= i {
            out.resize(i + 1, String::new());
        }
        out[i] = name.to_string();
    }
    out
}

fn format_keywords(kw: &[String]) -> String {
    kw.iter()
        .enumerate()
        .filter(|(_, k)| !k.is_empty())
        .map(|(i, k)| format!("{i} {k}\n"))
        .collect()
}

/// CRLF size of `bytes`: one more per LF without a CR before it. `prev_cr` carries across
/// chunks.
fn crlf_extra(bytes: &[u8], prev_cr: &mut bool) -> u64 {
    let mut n = 0;
    for &b in bytes {
        if b == b'\n' && !*prev_cr {
            n += 1;
        }
        *prev_cr = b == b'\r';
    }
    n
}

/// Bare LF → CRLF.
fn to_crlf(bytes: &[u8], prev_cr: &mut bool, out: &mut Vec<u8>) {
    for &b in bytes {
        if b == b'\n' && !*prev_cr {
            out.push(b'\r');
        }
        out.push(b);
        *prev_cr = b == b'\r';
    }
}

/// CRLF → LF (a lone CR stays).
fn to_lf(bytes: &[u8]) -> Vec<u8> {
    crate::fingerprint::crlf_to_lf(bytes, usize::MAX)
}

/// `,W=<n>` of a key (Dovecot's virtual, CRLF size).
fn w_size(key: &str) -> Option<u64> {
    key.split(',')
        .skip(1)
        .find_map(|p| p.strip_prefix("W="))
        .and_then(|v| v.parse().ok())
}

/// The host part of unique names: `/` and `:` escaped as the Maildir spec says.
fn hostname() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(read_hostname)
}

fn read_hostname() -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = h.trim();
    let h = if h.is_empty() { "localhost" } else { h };
    h.replace('/', "\\057")
        .replace(':', "\\072")
        .replace(',', "\\054")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<secs>.M<micros>P<pid>Q<n>.<host>`.
fn unique_name(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn epoch_time(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A Dovecot-style dotlock: `<file>.lock` created exclusively, written, fsynced and renamed
/// over `<file>` ([`Dotlock::commit`]); removed when dropped uncommitted.
struct Dotlock {
    target: PathBuf,
    lock: PathBuf,
    file: Option<File>,
}

impl Dotlock {
    fn acquire(target: &Path) -> Result<Dotlock> {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock = target.with_file_name(name);
        let start = SystemTime::now();
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(f) => {
                    return Ok(Dotlock {
                        target: target.to_path_buf(),
                        lock,
                        file: Some(f),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .map(|t| {
                            crate::time::age_secs(SystemTime::now(), t) >= STALE_LOCK.as_secs()
                        })
                        .unwrap_or(false);
                    if stale {
                        tracing::warn!(path = %lock.display(), "maildir: breaking a stale lock");
                        let _ = fs::remove_file(&lock);
                    } else if start.elapsed().unwrap_or_default() > LOCK_WAIT {
                        return Err(refused(format!("{} is locked", lock.display())));
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Err(e) => return Err(io_err("create", &lock, e)),
            }
        }
    }

    fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let mut f = self
            .file
            .take()
            .ok_or_else(|| refused(format!("{} already committed", self.lock.display())))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err("write", &self.lock, e))?;
        fs::rename(&self.lock, &self.target).map_err(|e| io_err("rename", &self.lock, e))?;
        if let Some(dir) = self.target.parent() {
            sync_dir(dir).map_err(|e| io_err("fsync", dir, e))?;
        }
        Ok(())
    }
}

impl Drop for Dotlock {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.lock);
        }
    }
}

impl Folder {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keyword names by index (`dovecot-keywords`; empty when there is none).
    pub fn keywords(&self) -> Result<Vec<String>> {
        let path = self.dir.join(KEYWORDS_FILE);
        match fs::read(&path) {
            Ok(b) => Ok(parse_keywords(&String::from_utf8_lossy(&b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read", &path, e)),
        }
    }

    /// Info letters for `flags`, adding new keywords to `dovecot-keywords` (under its dotlock,
    /// existing indexes kept).
    fn info_for(&self, flags: &str) -> Result<(String, Vec<String>)> {
        let mut kw = self.keywords()?;
        let before = kw.len();
        let (info, dropped) = flags_to_info(flags, &mut kw);
        if kw.len() == before {
            return Ok((info, dropped));
        }
        // New keywords: redo under the lock (another writer may have added some meanwhile).
        let lock = Dotlock::acquire(&self.dir.join(KEYWORDS_FILE))?;
        let mut kw = self.keywords()?;
        let before = kw.len();
        let (info, dropped) = flags_to_info(flags, &mut kw);
        if kw.len() != before {
            lock.commit(format_keywords(&kw).as_bytes())?;
        }
        Ok((info, dropped))
    }

    /// Every message of `cur/` and `new/`, sorted by (internaldate, key). Reads the files that
    /// have no `,W=` in their name to count their bare LFs (the CRLF size).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let kw = self.keywords()?;
        let mut out = Vec::new();
        for sub in ["cur", "new"] {
            let d = self.dir.join(sub);
            let rd = fs::read_dir(&d).map_err(|e| io_err("read", &d, e))?;
            for de in rd {
                let de = de.map_err(|e| io_err("read", &d, e))?;
                let path = de.path();
                let os = de.file_name();
                let Some(name) = os.to_str() else {
                    tracing::warn!(path = %path.display(), "maildir: skipping non-UTF-8 message file name");
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let meta = match fs::metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    // Renamed or expunged meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("stat", &path, e)),
                };
                let (key, info) = parse_info(name);
                let flags = if sub == "new" {
                    "()".to_string()
                } else {
                    info_to_flags(info, &kw)
                };
                let size = match w_size(key) {
                    Some(w) => w,
                    None => match crlf_size(&path, meta.len()) {
                        Ok(s) => s,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err("read", &path, e)),
                    },
                };
                out.push(Entry {
                    key: key.to_string(),
                    path,
                    flags,
                    internaldate: meta.mtime(),
                    size: u32::try_from(size).unwrap_or(u32::MAX),
                });
            }
        }
        out.sort_by(|a, b| (a.internaldate, &a.key).cmp(&(b.internaldate, &b.key)));
        Ok(out)
    }

    /// The whole message, CRLF line ends (for an IMAP APPEND).
    pub fn read(&self, e: &Entry) -> Result<Vec<u8>> {
        self.read_file(&e.path)?
            .ok_or_else(|| io_err("read", &e.path, io::ErrorKind::NotFound.into()))
    }

    /// [`Folder::read`] by path; `None` when the file is gone (renamed or expunged).
    pub fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        let raw = match fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path, e)),
        };
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
        to_crlf(&raw, &mut false, &mut out);
        Ok(Some(out))
    }

    /// The header section, the empty line and at most `max` body bytes, CRLF line ends (for
    /// `fingerprint::fingerprint` with `max` = `fingerprint::BODY_PREFIX`). A header section
    /// longer than [`MAX_HEAD`] is cut there.
    pub fn read_head(&self, e: &Entry, max: usize) -> Result<Vec<u8>> {
        let f = File::open(&e.path).map_err(|err| io_err("open", &e.path, err))?;
        let mut raw = Vec::new();
        let mut r = f.take(u64::try_from(MAX_HEAD.saturating_add(max)).unwrap_or(u64::MAX));
        let mut buf = [0u8; 8192];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|err| io_err("read", &e.path, err))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some((_, body)) = header::split(&raw)
                && raw.len() >= body.saturating_add(max)
            {
                raw.truncate(body.saturating_add(max));
                break;
            }
        }
        let raw = match header::split(&raw) {
            Some((_, body)) => &raw[..raw.len().min(body.saturating_add(max))],
            None => &raw[..raw.len().min(MAX_HEAD)],
        };
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
        to_crlf(raw, &mut false, &mut out);
        Ok(out)
    }

    /// Store a message: `tmp/<unique>` written, mtime = `internaldate`, fsynced, renamed to
    /// `cur/<unique>,S=<size>,W=<vsize>:2,<info>`, `cur/` fsynced.
    pub fn append(&self, bytes: &[u8], flags: &str, internaldate: i64) -> Result<Stored> {
        let (info, dropped) = self.info_for(flags)?;
        let stored = match self.line_endings {
            LineEndings::Lf => to_lf(bytes),
            LineEndings::Crlf => bytes.to_vec(),
        };
        let vsize = stored.len() as u64 + crlf_extra(&stored, &mut false);
        let host = hostname();
        let (mut f, tmp, unique) = loop {
            let unique = unique_name(host);
            let tmp = self.dir.join("tmp").join(&unique);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => break (f, tmp, unique),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &tmp, e)),
            }
        };
        let written = f
            .write_all(&stored)
            .and_then(|()| f.set_modified(epoch_time(internaldate)))
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp, e));
        }
        drop(f);
        let key = format!("{unique},S={},W={vsize}", stored.len());
        let cur = self.dir.join("cur");
        let path = cur.join(format!("{key}:2,{info}"));
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename", &tmp, e));
        }
        sync_dir(&cur).map_err(|e| io_err("fsync", &cur, e))?;
        Ok(Stored { key, path, dropped })
    }

    /// Replace the flags of a message (a rename within `cur/`, or `new/` → `cur/`), keeping info
    /// letters this module doesn't know. Looks the key up again when `e.path` is gone (renamed
    /// by someone else since [`Folder::entries`]).
    pub fn set_flags(&self, e: &Entry, flags: &str) -> Result<Stored> {
        let (info, dropped) = self.info_for(flags)?;
        let path = if e.path.exists() {
            e.path.clone()
        } else {
            self.find(&e.key)?
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| refused(format!("bad message path {}", path.display())))?;
        let (key, old) = parse_info(name);
        let mut letters: BTreeSet<char> = info.chars().collect();
        letters.extend(
            old.chars()
                .filter(|c| !c.is_ascii_lowercase() && !SYSTEM.iter().any(|s| s.0 == *c)),
        );
        let info: String = letters.into_iter().collect();
        let cur = self.dir.join("cur");
        let to = cur.join(format!("{key}{}2,{info}", info_sep(name)));
        if to != path {
            fs::rename(&path, &to).map_err(|err| io_err("rename", &path, err))?;
            sync_dir(&cur).map_err(|err| io_err("fsync", &cur, err))?;
        }
        Ok(Stored {
            key: key.to_string(),
            path: to,
            dropped,
        })
    }

    /// The current path of the message `key` (a scan of `cur/` and `new/`).
    pub fn find(&self, key: &str) -> Result<PathBuf> {
        for sub in ["cur", "new"] {
            let d = self.dir.join(sub);
            let rd = fs::read_dir(&d).map_err(|e| io_err("read", &d, e))?;
            for de in rd.flatten() {
                if de.file_name().to_str().map(|n| parse_info(n).0) == Some(key) {
                    return Ok(de.path());
                }
            }
        }
        Err(refused(format!(
            "no message {key} in {}",
            self.dir.display()
        )))
    }

    /// A change detector for no-op passes: a hash of the mtime and ctime (ns) of `cur/`, `new/`
    /// and `dovecot-keywords`. Any add, expunge, flag change (rename) or move new/ → cur/ changes
    /// a directory's mtime. Not detected: a file's mtime touched (INTERNALDATE changed) or its
    /// content rewritten in place (Maildir forbids both). Returns 0, "can't tell, do the pass",
    /// while a directory changed less than 2 s ago (a later change within the same timestamp
    /// tick would leave the stamp unchanged).
    pub fn stamp(&self) -> Result<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        for p in [
            self.dir.join("cur"),
            self.dir.join("new"),
            self.dir.join(KEYWORDS_FILE),
        ] {
            let m = match fs::metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    0u8.hash(&mut h);
                    continue;
                }
                Err(e) => return Err(io_err("stat", &p, e)),
            };
            let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
            let ctime = m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
            if now - mtime.max(ctime) < 2_000_000_000 {
                return Ok(0);
            }
            (m.ino(), mtime, ctime, m.len()).hash(&mut h);
        }
        Ok(h.finish().max(1))
    }
}

/// CRLF size of a file of `len` bytes: `len` + its bare LFs.
fn crlf_size(path: &Path, len: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut prev_cr = false;
    let mut extra = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(len + extra);
        }
        extra += crlf_extra(&buf[..n], &mut prev_cr);
    }
}

#[cfg(test)]
#[path = "maildir_tests.rs"]
mod tests;
