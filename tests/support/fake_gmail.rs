//! Test fixture: an in-process fake Gmail IMAP server (tokio, 127.0.0.1:0), for tests of the Gmail
//! profile where no real Gmail is reachable. It models Gmail's IMAP semantics: one message store per
//! account, labels shown as folders that share messages, `X-GM-EXT-1` (`X-GM-MSGID`, `X-GM-THRID`,
//! `X-GM-LABELS` in FETCH, STORE and SEARCH).
//!
//! Owns: the listener, the per-connection command reader (lines; synchronising `{n}` literals up to
//! APPENDLIMIT and `{n+}` literals up to 4096 bytes, LITERAL-), the account stores, per-folder UIDs,
//! and the log of command lines received (tag stripped, literals elided, passwords masked).
//! Must never: touch anything but loopback, read unbounded input (every line and literal has a
//! limit; a connection ends on EOF), or depend on another support file.
//!
//! Model (and the choices where Gmail's behaviour had to be pinned down):
//! - Folders: `INBOX` (label `\Inbox`), user labels (nested with `/`; adding `A/B` creates `A`, as
//!   Gmail does), `[Gmail]` (`\Noselect`), `[Gmail]/All Mail` (`\All`: every message not labelled
//!   `\Spam`/`\Trash`), `[Gmail]/Sent Mail` (`\Sent`), `[Gmail]/Drafts` (`\Draft`), `[Gmail]/Spam`
//!   (`\Spam`), `[Gmail]/Trash` (`\Trash`), `[Gmail]/Starred` (messages with the `\Flagged` flag),
//!   `[Gmail]/Important` (`\Important`). A message labelled `\Spam` or `\Trash` shows only there.
//! - UIDs: each folder has its own UIDVALIDITY and UIDNEXT; a message gets a UID when it enters a
//!   folder; a UID is never reused (a message leaving and re-entering gets a new one).
//! - `X-GM-LABELS` (FETCH): system labels as atoms (`\Inbox \Important \Sent \Draft \Spam \Trash
//!   \Starred`, `\Starred` standing for the `\Flagged` flag), user labels as quoted strings. The
//!   label of the selected folder itself is left out (in INBOX no `\Inbox`, in `Work` no `"Work"`,
//!   in `[Gmail]/Starred` no `\Starred`), which is how Gmail is commonly reported to answer (not
//!   stated in Google's extension docs); in `[Gmail]/All Mail` every label is shown.
//!   `FakeGmail::set_show_selected_label(true)` lists the own label too.
//! - `X-GM-THRID` equals the message's own `X-GM-MSGID` (no threading). APPEND always creates a new
//!   message (Gmail's merging of messages with equal Message-ID is not modelled).
//! - EXPUNGE of a `\Deleted` message removes the folder's label (Starred: the `\Flagged` flag; All
//!   Mail: adds `\Trash`; Spam/Trash: deletes the message), like Gmail's default auto-expunge.
//! - Not implemented (so not advertised): IDLE, COMPRESS, CONDSTORE, ESEARCH, MOVE, MULTIAPPEND,
//!   BINARY, XLIST, QUOTA, LIST-STATUS, UTF8=ACCEPT; FETCH of ENVELOPE/BODYSTRUCTURE/MIME parts
//!   answers BAD. Folder names are not modified-UTF-7 encoded (use ASCII labels).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};

/// What the fake advertises (Gmail's list minus what it does not implement).
pub const CAPABILITIES: &str = "IMAP4rev1 UNSELECT NAMESPACE ID CHILDREN X-GM-EXT-1 UIDPLUS ENABLE \
                                LIST-EXTENDED LITERAL- SPECIAL-USE APPENDLIMIT=35651584";
const APPENDLIMIT: usize = 35_651_584;
const LITERAL_MINUS: usize = 4096;
const MAX_LINE: usize = 64 << 10;
const MAX_COMMAND: usize = APPENDLIMIT + (1 << 20);
const SYSTEM_LABELS: [&str; 6] = [
    "\\Inbox",
    "\\Important",
    "\\Sent",
    "\\Draft",
    "\\Spam",
    "\\Trash",
];
const BASE_FLAGS: &str = "\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing";

/// One message as the tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GmMessage {
    pub msgid: u64,
    pub thrid: u64,
    pub bytes: Vec<u8>,
    /// Stored labels: system ones (`\Inbox`, `\Sent`, `\Important`, `\Draft`, `\Spam`, `\Trash`)
    /// first, then user labels sorted. Starred is the `\Flagged` flag, not a label.
    pub labels: Vec<String>,
    pub flags: Vec<String>,
    /// RFC 3501 date-time, day zero-padded (`01-Jan-2024 10:00:00 +0000`).
    pub internal_date: String,
}

/// One folder as the tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GmFolder {
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// (UID, X-GM-MSGID), by UID.
    pub uids: Vec<(u32, u64)>,
}

/// The running fake. Dropping it stops accepting connections.
pub struct FakeGmail {
    addr: SocketAddr,
    st: Arc<Mutex<State>>,
    accept: tokio::task::AbortHandle,
}

impl Drop for FakeGmail {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeGmail {
    /// Listen on 127.0.0.1:0 with these (user, password) accounts, each with Gmail's system folders.
    pub async fn start(accounts: &[(&str, &str)]) -> FakeGmail {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake_gmail: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake_gmail: local_addr");
        let mut st = State {
            accounts: HashMap::new(),
            next_msgid: 1_700_000_000_000_000_001,
            log: Vec::new(),
            show_own_label: false,
        };
        for (u, p) in accounts {
            st.accounts.insert(u.to_string(), Account::new(p));
        }
        let st = Arc::new(Mutex::new(st));
        let shared = st.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, shared.clone()));
            }
        })
        .abort_handle();
        FakeGmail { addr, st, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Add a message (as if delivered) with these labels (`\Inbox`, `\Sent`, `\Important`,
    /// `\Draft`, `\Spam`, `\Trash`, `\Starred` = the `\Flagged` flag, or user labels such as
    /// `Work/Projects`, created with their parents when new), flags and INTERNALDATE (RFC 3501
    /// date-time, quotes optional). Returns its X-GM-MSGID. Panics on an unknown user or a bad date.
    pub fn add(
        &self,
        user: &str,
        bytes: &[u8],
        labels: &[&str],
        flags: &[&str],
        internal_date: &str,
    ) -> u64 {
        let date = parse_date_time(internal_date.trim_matches('"'))
            .unwrap_or_else(|| panic!("fake_gmail::add: bad INTERNALDATE {internal_date:?}"));
        let mut st = lock(&self.st);
        let id = st.next_msgid;
        st.next_msgid += 1;
        let a = st
            .accounts
            .get_mut(user)
            .unwrap_or_else(|| panic!("fake_gmail::add: no account {user:?}"));
        let mut m = Msg::new(id, bytes.to_vec(), date);
        for f in flags {
            m.add_flag(f);
        }
        a.msgs.insert(id, m);
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        a.apply_labels(id, &labels, Op::Add);
        a.sync();
        id
    }

    /// Replace the labels of the message of `user` whose bytes contain `needle` (a test
    /// changing labels between passes, as a user in Gmail's web UI would).
    pub fn relabel(&self, user: &str, needle: &str, labels: &[&str]) {
        let mut st = lock(&self.st);
        let a = st
            .accounts
            .get_mut(user)
            .unwrap_or_else(|| panic!("fake_gmail::relabel: no account {user:?}"));
        let id = a
            .msgs
            .iter()
            .find(|(_, m)| {
                m.bytes
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            })
            .map(|(id, _)| *id)
            .unwrap_or_else(|| panic!("fake_gmail::relabel: no message with {needle:?}"));
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        a.apply_labels(id, &labels, Op::Replace);
        a.sync();
    }

    /// Every message of `user`, by X-GM-MSGID.
    pub fn messages(&self, user: &str) -> Vec<GmMessage> {
        let st = lock(&self.st);
        let Some(a) = st.accounts.get(user) else {
            return Vec::new();
        };
        a.msgs
            .values()
            .map(|m| GmMessage {
                msgid: m.id,
                thrid: m.id,
                bytes: m.bytes.clone(),
                labels: ordered_labels(&m.labels),
                flags: m.flags.clone(),
                internal_date: m.date.clone(),
            })
            .collect()
    }

    /// A folder's UIDVALIDITY, UIDNEXT and UIDs (`None`: no such folder or `\Noselect`).
    pub fn folder(&self, user: &str, name: &str) -> Option<GmFolder> {
        let st = lock(&self.st);
        let f = st.accounts.get(user)?.folder(name)?;
        (f.kind != Kind::NoSelect).then(|| GmFolder {
            name: f.name.clone(),
            uidvalidity: f.uidvalidity,
            uidnext: f.uidnext,
            uids: f.uids.iter().map(|(u, id)| (*u, *id)).collect(),
        })
    }

    /// Folder names of `user` (LIST order).
    pub fn folders(&self, user: &str) -> Vec<String> {
        let st = lock(&self.st);
        st.accounts
            .get(user)
            .map(|a| a.folders.iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default()
    }

    /// With `true`, FETCH X-GM-LABELS also lists the selected folder's own label (`\\Inbox` in
    /// INBOX); the default (`false`) leaves it out, as the module doc describes.
    pub fn set_show_selected_label(&self, on: bool) {
        lock(&self.st).show_own_label = on;
    }

    /// Command lines received so far on all connections: tag stripped, literals as `{n}`, LOGIN
    /// passwords and AUTHENTICATE responses as `***`.
    pub fn commands(&self) -> Vec<String> {
        lock(&self.st).log.clone()
    }
}

fn lock(st: &Mutex<State>) -> MutexGuard<'_, State> {
    st.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Store model.

struct State {
    accounts: HashMap<String, Account>,
    next_msgid: u64,
    log: Vec<String>,
    /// FETCH X-GM-LABELS shows the selected folder's own label too (default: left out).
    show_own_label: bool,
}

#[derive(Clone, Debug)]
struct Msg {
    id: u64,
    bytes: Vec<u8>,
    date: String,
    flags: Vec<String>,
    labels: BTreeSet<String>,
}

impl Msg {
    fn new(id: u64, bytes: Vec<u8>, date: String) -> Msg {
        Msg {
            id,
            bytes,
            date,
            flags: Vec::new(),
            labels: BTreeSet::new(),
        }
    }
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
    }
    fn add_flag(&mut self, f: &str) {
        if let Some(f) = canon_flag(f)
            && !self.has_flag(&f)
        {
            self.flags.push(f);
        }
    }
    fn remove_flag(&mut self, f: &str) {
        self.flags.retain(|x| !x.eq_ignore_ascii_case(f));
    }
    fn hidden(&self) -> bool {
        self.labels.contains("\\Spam") || self.labels.contains("\\Trash")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Label(String),
    All,
    Starred,
    NoSelect,
}

impl Kind {
    /// Whether a folder of this kind shows `m`.
    fn holds(&self, m: &Msg) -> bool {
        match self {
            Kind::All => !m.hidden(),
            Kind::Starred => !m.hidden() && m.has_flag("\\Flagged"),
            Kind::Label(l) if l == "\\Spam" || l == "\\Trash" => m.labels.contains(l),
            Kind::Label(l) => !m.hidden() && m.labels.contains(l),
            Kind::NoSelect => false,
        }
    }
    /// The X-GM-LABELS entry this folder stands for (left out of FETCH X-GM-LABELS inside it).
    fn own_label(&self) -> Option<&str> {
        match self {
            Kind::Label(l) => Some(l),
            Kind::Starred => Some("\\Starred"),
            _ => None,
        }
    }
}

struct Folder {
    name: String,
    kind: Kind,
    special: Option<&'static str>,
    uidvalidity: u32,
    uidnext: u32,
    uids: BTreeMap<u32, u64>,
}

struct Account {
    password: String,
    msgs: BTreeMap<u64, Msg>,
    folders: Vec<Folder>,
    subscribed: BTreeSet<String>,
    next_uidvalidity: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Replace,
}

/// A label as given by a client or test, canonical.
enum Label {
    System(&'static str),
    Starred,
    User(String),
}

fn canon_label(s: &str) -> Label {
    if s.eq_ignore_ascii_case("INBOX") || s.eq_ignore_ascii_case("\\Inbox") {
        return Label::System("\\Inbox");
    }
    if s.eq_ignore_ascii_case("\\Starred") {
        return Label::Starred;
    }
    if s.eq_ignore_ascii_case("\\Drafts") {
        return Label::System("\\Draft");
    }
    match SYSTEM_LABELS.iter().find(|l| l.eq_ignore_ascii_case(s)) {
        Some(l) => Label::System(l),
        None => Label::User(s.trim_end_matches('/').to_string()),
    }
}

fn canon_flag(f: &str) -> Option<String> {
    const SYS: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    if let Some(s) = SYS.iter().find(|s| s.eq_ignore_ascii_case(f)) {
        return Some(s.to_string());
    }
    // \Recent, \* and unknown system flags are not stored.
    (!f.starts_with('\\') && !f.is_empty()).then(|| f.to_string())
}

fn ordered_labels(labels: &BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = SYSTEM_LABELS
        .iter()
        .filter(|l| labels.contains(**l))
        .map(|l| l.to_string())
        .collect();
    out.extend(labels.iter().filter(|l| !l.starts_with('\\')).cloned());
    out
}

impl Account {
    fn new(password: &str) -> Account {
        let mut a = Account {
            password: password.to_string(),
            msgs: BTreeMap::new(),
            folders: Vec::new(),
            subscribed: BTreeSet::new(),
            next_uidvalidity: 11,
        };
        let l = |s: &str| Kind::Label(s.to_string());
        let system = [
            ("INBOX", l("\\Inbox"), None),
            ("[Gmail]", Kind::NoSelect, None),
            ("[Gmail]/All Mail", Kind::All, Some("\\All")),
            ("[Gmail]/Drafts", l("\\Draft"), Some("\\Drafts")),
            ("[Gmail]/Important", l("\\Important"), Some("\\Important")),
            ("[Gmail]/Sent Mail", l("\\Sent"), Some("\\Sent")),
            ("[Gmail]/Spam", l("\\Spam"), Some("\\Junk")),
            ("[Gmail]/Starred", Kind::Starred, Some("\\Flagged")),
            ("[Gmail]/Trash", l("\\Trash"), Some("\\Trash")),
        ];
        for (name, kind, special) in system {
            a.push_folder(name, kind, special);
        }
        a
    }

    fn push_folder(&mut self, name: &str, kind: Kind, special: Option<&'static str>) {
        if kind != Kind::NoSelect {
            self.subscribed.insert(name.to_string());
        }
        self.folders.push(Folder {
            name: name.to_string(),
            kind,
            special,
            uidvalidity: self.next_uidvalidity,
            uidnext: 1,
            uids: BTreeMap::new(),
        });
        self.next_uidvalidity += 1;
    }

    fn index(&self, name: &str) -> Option<usize> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Some(0);
        }
        self.folders.iter().position(|f| f.name == name)
    }

    fn folder(&self, name: &str) -> Option<&Folder> {
        self.index(name).map(|i| &self.folders[i])
    }

    /// Create the folder of user label `label` and its parents (no-op for existing ones).
    fn ensure_label(&mut self, label: &str) {
        let mut prefix = String::new();
        for (i, part) in label.split('/').enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.index(&prefix).is_none() && !part.is_empty() {
                let p = prefix.clone();
                self.push_folder(&p, Kind::Label(p.clone()), None);
            }
        }
    }

    /// Add/remove/replace labels of message `id` (user labels' folders created first).
    fn apply_labels(&mut self, id: u64, labels: &[String], op: Op) {
        let canon: Vec<Label> = labels.iter().map(|l| canon_label(l)).collect();
        if op != Op::Remove {
            for l in &canon {
                if let Label::User(u) = l {
                    self.ensure_label(u);
                }
            }
        }
        let Some(m) = self.msgs.get_mut(&id) else {
            return;
        };
        if op == Op::Replace {
            m.labels.clear();
            m.remove_flag("\\Flagged");
        }
        for l in canon {
            let name = match l {
                Label::System(s) => s.to_string(),
                Label::User(u) => u,
                Label::Starred if op == Op::Remove => {
                    m.remove_flag("\\Flagged");
                    continue;
                }
                Label::Starred => {
                    m.add_flag("\\Flagged");
                    continue;
                }
            };
            if op == Op::Remove {
                m.labels.remove(&name);
            } else {
                m.labels.insert(name);
            }
        }
    }

    /// A message put into folder `kind` (APPEND, COPY) takes on what the folder stands for.
    fn enter(&mut self, kind: &Kind, id: u64) {
        let Some(m) = self.msgs.get_mut(&id) else {
            return;
        };
        match kind {
            Kind::Label(l) => {
                m.labels.insert(l.clone());
            }
            Kind::Starred => m.add_flag("\\Flagged"),
            Kind::All | Kind::NoSelect => {}
        }
    }

    /// A message expunged from folder `kind` loses what the folder stands for.
    fn leave(&mut self, kind: &Kind, id: u64) {
        if matches!(kind, Kind::Label(l) if l == "\\Spam" || l == "\\Trash") {
            self.msgs.remove(&id);
            return;
        }
        let Some(m) = self.msgs.get_mut(&id) else {
            return;
        };
        m.remove_flag("\\Deleted");
        match kind {
            Kind::Label(l) => {
                m.labels.remove(l);
            }
            Kind::Starred => m.remove_flag("\\Flagged"),
            Kind::All => {
                m.labels.insert("\\Trash".into());
            }
            Kind::NoSelect => {}
        }
    }

    /// Bring every folder's UIDs in line with the labels: new members get the next UID, UIDs of
    /// messages no longer shown are dropped (never reused).
    fn sync(&mut self) {
        let msgs = &self.msgs;
        for f in &mut self.folders {
            let kind = f.kind.clone();
            f.uids
                .retain(|_, id| msgs.get(id).is_some_and(|m| kind.holds(m)));
            let present: BTreeSet<u64> = f.uids.values().copied().collect();
            for (id, m) in msgs {
                if kind.holds(m) && !present.contains(id) {
                    f.uids.insert(f.uidnext, *id);
                    f.uidnext += 1;
                }
            }
        }
    }

    fn keywords(&self) -> BTreeSet<String> {
        self.msgs
            .values()
            .flat_map(|m| m.flags.iter().filter(|f| !f.starts_with('\\')).cloned())
            .collect()
    }

    fn has_children(&self, name: &str) -> bool {
        let p = format!("{name}/");
        self.folders.iter().any(|f| f.name.starts_with(&p))
    }
}

// ---------------------------------------------------------------------------------------------
// Reading commands.

enum Part {
    Text(Vec<u8>),
    Lit(Vec<u8>),
}

enum Read {
    Eof,
    Cmd(Vec<Part>),
    TooBig { tag: String, close: bool },
}

/// One line without its CRLF (`None`: EOF, also in the middle of a line).
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 || !buf.ends_with(b"\n") {
        if buf.len() >= MAX_LINE {
            return Err(std::io::Error::other("fake_gmail: command line too long"));
        }
        return Ok(None);
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    Ok(Some(buf))
}

/// `{n}` / `{n+}` at the end of a line: (position of `{`, n, synchronising).
fn literal_spec(line: &[u8]) -> Option<(usize, usize, bool)> {
    if !line.ends_with(b"}") {
        return None;
    }
    let open = line.iter().rposition(|&c| c == b'{')?;
    let inner = &line[open + 1..line.len() - 1];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((open, n, sync))
}

async fn read_command<R, W>(r: &mut R, w: &mut W) -> std::io::Result<Read>
where
    R: AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut parts = Vec::new();
    let mut total = 0usize;
    loop {
        let Some(line) = read_line(r).await? else {
            return Ok(Read::Eof);
        };
        total += line.len();
        let Some((at, n, sync)) = literal_spec(&line) else {
            parts.push(Part::Text(line));
            return Ok(Read::Cmd(parts));
        };
        if (!sync && n > LITERAL_MINUS) || n > APPENDLIMIT || total + n > MAX_COMMAND {
            let first = match parts.first() {
                Some(Part::Text(t)) => t.clone(),
                _ => line.clone(),
            };
            let tag = String::from_utf8_lossy(&first)
                .split(' ')
                .next()
                .unwrap_or("*")
                .to_string();
            return Ok(Read::TooBig { tag, close: !sync });
        }
        parts.push(Part::Text(line[..at].to_vec()));
        if sync {
            w.write_all(b"+ go ahead\r\n").await?;
            w.flush().await?;
        }
        let mut lit = vec![0u8; n];
        r.read_exact(&mut lit).await?;
        total += n;
        parts.push(Part::Lit(lit));
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Atom(String),
    Str(String),
    Lit(Vec<u8>),
    Open,
    Close,
}

fn tokenize(parts: Vec<Part>) -> Vec<Tok> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Lit(b) => out.push(Tok::Lit(b)),
            Part::Text(t) => tokenize_text(&String::from_utf8_lossy(&t), &mut out),
        }
    }
    out
}

/// Atoms keep `[...]` sections whole (`BODY.PEEK[HEADER.FIELDS (A B)]<0.10>` is one token).
fn tokenize_text(s: &str, out: &mut Vec<Tok>) {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            ' ' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() {
                        i += 1;
                    }
                    v.push(c[i]);
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            _ => {
                let mut v = String::new();
                let mut depth = 0usize;
                while i < c.len() && (depth > 0 || !matches!(c[i], ' ' | '(' | ')')) {
                    match c[i] {
                        '[' => depth += 1,
                        ']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    v.push(c[i]);
                    i += 1;
                }
                out.push(Tok::Atom(v));
            }
        }
    }
}

/// The log form of a command: tag stripped, literals as `{n}`, secrets masked.
fn log_line(toks: &[Tok]) -> String {
    let cmd = match toks.get(1) {
        Some(Tok::Atom(a)) => a.to_ascii_uppercase(),
        _ => String::new(),
    };
    let mut out: Vec<String> = Vec::new();
    for (i, t) in toks.iter().enumerate().skip(1) {
        let secret = i == 3 && matches!(cmd.as_str(), "LOGIN" | "AUTHENTICATE");
        out.push(match t {
            _ if secret => "***".into(),
            Tok::Atom(a) => a.clone(),
            Tok::Str(s) => quote(s),
            Tok::Lit(b) => format!("{{{}}}", b.len()),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
        });
    }
    out.join(" ").replace("( ", "(").replace(" )", ")")
}

/// A cursor over a command's arguments.
struct Args {
    t: Vec<Tok>,
    i: usize,
}

impl Args {
    fn next(&mut self) -> Option<Tok> {
        let t = self
            .t
            .get_mut(self.i)
            .map(|t| std::mem::replace(t, Tok::Close));
        self.i += 1;
        t
    }
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn end(&self) -> bool {
        self.i >= self.t.len()
    }
    fn astring(&mut self) -> Option<String> {
        match self.next()? {
            Tok::Atom(s) | Tok::Str(s) => Some(s),
            Tok::Lit(b) => String::from_utf8(b).ok(),
            _ => None,
        }
    }
    fn atom_upper(&mut self) -> Option<String> {
        match self.next()? {
            Tok::Atom(s) => Some(s.to_ascii_uppercase()),
            _ => None,
        }
    }
    fn open(&mut self) -> bool {
        let is = self.peek() == Some(&Tok::Open);
        if is {
            self.i += 1;
        }
        is
    }
    /// `(a b ...)` or one astring.
    fn list(&mut self) -> Option<Vec<String>> {
        if !self.open() {
            return self.astring().map(|s| vec![s]);
        }
        let mut out = Vec::new();
        loop {
            if self.peek() == Some(&Tok::Close) {
                self.i += 1;
                return Some(out);
            }
            out.push(self.astring()?);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and sessions.

enum Done {
    Ok(String),
    No(String),
    Bad(String),
    Bye,
}

fn ok(s: &str) -> Done {
    Done::Ok(s.to_string())
}
fn no(s: &str) -> Done {
    Done::No(s.to_string())
}
fn bad(s: &str) -> Done {
    Done::Bad(s.to_string())
}

/// The selected folder and the client's view of it (UID, X-GM-MSGID by sequence number).
struct Sel {
    name: String,
    ro: bool,
    view: Vec<(u32, u64)>,
}

struct Session {
    st: Arc<Mutex<State>>,
    user: Option<String>,
    sel: Option<Sel>,
}

async fn serve(tcp: TcpStream, st: Arc<Mutex<State>>) {
    let _ = tcp.set_nodelay(true);
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    let mut s = Session {
        st,
        user: None,
        sel: None,
    };
    if w.write_all(b"* OK Gimap ready for requests from 127.0.0.1 fake\r\n")
        .await
        .is_err()
    {
        return;
    }
    loop {
        let parts = match read_command(&mut r, &mut w).await {
            Ok(Read::Cmd(p)) => p,
            Ok(Read::TooBig { tag, close }) => {
                let line = format!(
                    "{tag} BAD [TOOBIG] Literal too big (LITERAL- allows {LITERAL_MINUS} octets, APPENDLIMIT {APPENDLIMIT})\r\n"
                );
                if w.write_all(line.as_bytes()).await.is_err() || close {
                    return;
                }
                continue;
            }
            Ok(Read::Eof) | Err(_) => return,
        };
        let toks = tokenize(parts);
        if toks.is_empty() {
            continue;
        }
        lock(&s.st).log.push(log_line(&toks));
        let (out, bye) = s.command(toks, &mut r, &mut w).await;
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() || bye {
            return;
        }
    }
}

impl Session {
    /// Run one command; the bytes to send and whether to close afterwards.
    async fn command<R, W>(&mut self, toks: Vec<Tok>, r: &mut R, w: &mut W) -> (Vec<u8>, bool)
    where
        R: AsyncBufRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut a = Args { t: toks, i: 0 };
        let tag = match a.next() {
            Some(Tok::Atom(t)) => t,
            _ => "*".to_string(),
        };
        let mut out = Vec::new();
        let done = match a.atom_upper() {
            Some(c) if c == "AUTHENTICATE" => self.authenticate(&mut a, r, w).await,
            Some(c) => self.execute(&c, &mut a, &mut out),
            None => bad("Missing command"),
        };
        let (status, text, bye) = match done {
            Done::Ok(t) => ("OK", t, false),
            Done::No(t) => ("NO", t, false),
            Done::Bad(t) => ("BAD", t, false),
            Done::Bye => ("OK", "LOGOUT Success".to_string(), true),
        };
        if bye {
            out.extend_from_slice(b"* BYE LOGOUT Requested\r\n");
        }
        out.extend_from_slice(format!("{tag} {status} {text}\r\n").as_bytes());
        (out, bye)
    }

    /// AUTHENTICATE PLAIN, with or without an initial response.
    async fn authenticate<R, W>(&mut self, a: &mut Args, r: &mut R, w: &mut W) -> Done
    where
        R: AsyncBufRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        use base64::Engine as _;
        if self.user.is_some() {
            return bad("Already authenticated");
        }
        if a.atom_upper().as_deref() != Some("PLAIN") {
            return no("[CANNOT] Unsupported mechanism (the fake knows PLAIN)");
        }
        let resp = match a.astring() {
            Some(s) => s,
            None => {
                if w.write_all(b"+ \r\n").await.is_err() || w.flush().await.is_err() {
                    return bad("Connection trouble");
                }
                match read_line(r).await {
                    Ok(Some(l)) => String::from_utf8_lossy(&l).into_owned(),
                    _ => return bad("No response"),
                }
            }
        };
        if resp == "*" {
            return bad("Authentication canceled");
        }
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(resp.trim()) else {
            return bad("Invalid base64");
        };
        let parts: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        match parts.as_slice() {
            [authz, user, pass] if authz.is_empty() || authz == user => self.login_as(user, pass),
            _ => no("[AUTHENTICATIONFAILED] Invalid credentials (Failure)"),
        }
    }

    fn login_as(&mut self, user: &str, pass: &str) -> Done {
        let good = lock(&self.st)
            .accounts
            .get(user)
            .is_some_and(|a| a.password == pass);
        if !good {
            return no("[AUTHENTICATIONFAILED] Invalid credentials (Failure)");
        }
        self.user = Some(user.to_string());
        Done::Ok(format!("{user} authenticated (Success)"))
    }

    fn execute(&mut self, cmd: &str, a: &mut Args, out: &mut Vec<u8>) -> Done {
        match cmd {
            "CAPABILITY" => {
                let auth = if self.user.is_none() {
                    " AUTH=PLAIN"
                } else {
                    ""
                };
                out.extend_from_slice(format!("* CAPABILITY {CAPABILITIES}{auth}\r\n").as_bytes());
                ok("Thats all she wrote!")
            }
            "LOGOUT" => Done::Bye,
            "ID" => {
                out.extend_from_slice(b"* ID (\"name\" \"GImap\" \"vendor\" \"Google, Inc.\" \"support-url\" \"https://support.google.com/mail\")\r\n");
                ok("Success")
            }
            "NOOP" | "CHECK" if self.user.is_none() => ok("Success"),
            "LOGIN" if self.user.is_some() => bad("Already authenticated"),
            "LOGIN" => match (a.astring(), a.astring()) {
                (Some(u), Some(p)) => self.login_as(&u, &p),
                _ => bad("LOGIN needs a user and a password"),
            },
            _ if self.user.is_none() => bad("Unknown command or not valid in this state"),
            "NAMESPACE" => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                ok("Success")
            }
            "ENABLE" => {
                out.extend_from_slice(b"* ENABLED\r\n");
                ok("Success")
            }
            _ => self.in_account(cmd, a, out),
        }
    }

    fn in_account(&mut self, cmd: &str, a: &mut Args, out: &mut Vec<u8>) -> Done {
        let (cmd, uid) = if cmd == "UID" {
            match a.atom_upper() {
                Some(c) => (c, true),
                None => return bad("UID needs a command"),
            }
        } else {
            (cmd.to_string(), false)
        };
        let Some(user) = self.user.clone() else {
            return bad("Not authenticated");
        };
        let st = self.st.clone();
        let mut g = lock(&st);
        let State {
            accounts,
            next_msgid,
            show_own_label,
            ..
        } = &mut *g;
        let Some(acct) = accounts.get_mut(&user) else {
            return no("Account gone");
        };
        let mut c = Ctx {
            a: acct,
            next_msgid,
            show_own_label: *show_own_label,
            sel: &mut self.sel,
            out,
            uid,
        };
        c.notify(false);
        let done = c.dispatch(&cmd, a);
        c.a.sync();
        c.notify(true);
        done
    }
}

/// One command's access to the account, the selection and the output.
struct Ctx<'a> {
    a: &'a mut Account,
    /// X-GM-MSGIDs are global (all accounts): the next one.
    next_msgid: &'a mut u64,
    show_own_label: bool,
    sel: &'a mut Option<Sel>,
    out: &'a mut Vec<u8>,
    uid: bool,
}

impl Ctx<'_> {
    fn dispatch(&mut self, cmd: &str, a: &mut Args) -> Done {
        let selected_only = matches!(
            cmd,
            "CLOSE" | "UNSELECT" | "EXPUNGE" | "SEARCH" | "FETCH" | "STORE" | "COPY"
        );
        if selected_only && self.sel.is_none() {
            return bad("No mailbox selected");
        }
        if self.uid && !matches!(cmd, "FETCH" | "SEARCH" | "STORE" | "COPY" | "EXPUNGE") {
            return bad("Unknown UID command");
        }
        match cmd {
            "NOOP" | "CHECK" => ok("Success"),
            "SELECT" => self.select(a, false),
            "EXAMINE" => self.select(a, true),
            "CREATE" => self.create(a),
            "DELETE" => self.delete(a),
            "SUBSCRIBE" | "UNSUBSCRIBE" => self.subscribe(a, cmd == "SUBSCRIBE"),
            "LIST" => self.list(a, false),
            "LSUB" => self.list(a, true),
            "STATUS" => self.status(a),
            "APPEND" => self.append(a),
            "CLOSE" => self.close(),
            "UNSELECT" => {
                *self.sel = None;
                ok("Returned to authenticated state. (Success)")
            }
            "EXPUNGE" => self.expunge(a),
            "SEARCH" => self.search(a),
            "FETCH" => self.fetch(a),
            "STORE" => self.store(a),
            "COPY" => self.copy(a),
            _ => bad("Unknown command"),
        }
    }

    fn put(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Tell the client about changes to the selected folder: new messages (EXISTS) and, with
    /// `expunges`, messages gone (EXPUNGE, highest sequence number first).
    fn notify(&mut self, expunges: bool) {
        let Some(sel) = self.sel.as_mut() else {
            return;
        };
        let empty = BTreeMap::new();
        let cur = self.a.folder(&sel.name).map_or(&empty, |f| &f.uids);
        let mut lines = String::new();
        if expunges {
            for i in (0..sel.view.len()).rev() {
                if !cur.contains_key(&sel.view[i].0) {
                    sel.view.remove(i);
                    lines.push_str(&format!("* {} EXPUNGE\r\n", i + 1));
                }
            }
        }
        let last = sel.view.last().map_or(0, |v| v.0);
        let before = sel.view.len();
        sel.view
            .extend(cur.range(last + 1..).map(|(u, id)| (*u, *id)));
        if sel.view.len() != before {
            lines.push_str(&format!("* {} EXISTS\r\n", sel.view.len()));
        }
        self.put(&lines);
    }

    fn select(&mut self, a: &mut Args, ro: bool) -> Done {
        *self.sel = None;
        let Some(name) = a.astring() else {
            return bad("SELECT needs a folder");
        };
        let Some(f) = self.a.folder(&name).filter(|f| f.kind != Kind::NoSelect) else {
            return Done::No(format!("[NONEXISTENT] Unknown Mailbox: {name} (Failure)"));
        };
        let kw: Vec<String> = self.a.keywords().into_iter().collect();
        let flags = format!(
            "{BASE_FLAGS}{}{}",
            if kw.is_empty() { "" } else { " " },
            kw.join(" ")
        );
        let perm = if ro {
            String::new()
        } else {
            format!("{flags} \\*")
        };
        let view: Vec<(u32, u64)> = f.uids.iter().map(|(u, id)| (*u, *id)).collect();
        let text = format!(
            "* FLAGS ({flags})\r\n* OK [PERMANENTFLAGS ({perm})] Flags permitted.\r\n\
             * OK [UIDVALIDITY {}] UIDs valid.\r\n* {} EXISTS\r\n* 0 RECENT\r\n\
             * OK [UIDNEXT {}] Predicted next UID.\r\n",
            f.uidvalidity,
            view.len(),
            f.uidnext
        );
        let fname = f.name.clone();
        self.put(&text);
        *self.sel = Some(Sel {
            name: fname.clone(),
            ro,
            view,
        });
        Done::Ok(format!(
            "[READ-{}] {fname} selected. (Success)",
            if ro { "ONLY" } else { "WRITE" }
        ))
    }

    fn create(&mut self, a: &mut Args) -> Done {
        let Some(name) = a.astring() else {
            return bad("CREATE needs a folder");
        };
        let name = name.trim_end_matches('/').to_string();
        if self.a.index(&name).is_some() {
            return no("[ALREADYEXISTS] Duplicate folder name exists (Failure)");
        }
        if name.is_empty() || name.starts_with("[Gmail]") {
            return no("[CANNOT] Folder name is reserved (Failure)");
        }
        self.a.ensure_label(&name);
        ok("Success")
    }

    fn delete(&mut self, a: &mut Args) -> Done {
        let Some(name) = a.astring() else {
            return bad("DELETE needs a folder");
        };
        let Some(i) = self.a.index(&name) else {
            return no("[NONEXISTENT] Unknown Mailbox (Failure)");
        };
        let f = &self.a.folders[i];
        let Kind::Label(l) = f.kind.clone() else {
            return no("[CANNOT] System folder (Failure)");
        };
        if f.special.is_some() || l.starts_with('\\') {
            return no("[CANNOT] System folder (Failure)");
        }
        for m in self.a.msgs.values_mut() {
            m.labels.remove(&l);
        }
        self.a.subscribed.remove(&l);
        self.a.folders.remove(i);
        ok("Success")
    }

    fn subscribe(&mut self, a: &mut Args, on: bool) -> Done {
        let Some(name) = a.astring() else {
            return bad("SUBSCRIBE needs a folder");
        };
        let Some(f) = self.a.folder(&name) else {
            return no("[NONEXISTENT] Unknown Mailbox (Failure)");
        };
        let n = f.name.clone();
        if on {
            self.a.subscribed.insert(n);
        } else {
            self.a.subscribed.remove(&n);
        }
        ok("Success")
    }

    /// LIST (with LIST-EXTENDED selection `(SUBSCRIBED)` and `RETURN (SPECIAL-USE SUBSCRIBED
    /// CHILDREN)`) and LSUB. Special-use attributes are always shown, as Gmail does.
    fn list(&mut self, a: &mut Args, lsub: bool) -> Done {
        let mut only_subscribed = lsub;
        if !lsub && a.peek() == Some(&Tok::Open) {
            let Some(opts) = a.list() else {
                return bad("Bad selection options");
            };
            only_subscribed |= opts.iter().any(|o| o.eq_ignore_ascii_case("SUBSCRIBED"));
        }
        let (Some(reference), Some(patterns)) = (a.astring(), a.list()) else {
            return bad("LIST needs a reference and a pattern");
        };
        let mut show_subscribed = false;
        if !a.end() {
            if a.atom_upper().as_deref() != Some("RETURN") {
                return bad("Unknown LIST argument");
            }
            let Some(opts) = a.list() else {
                return bad("Bad return options");
            };
            for o in &opts {
                match o.to_ascii_uppercase().as_str() {
                    "SPECIAL-USE" | "CHILDREN" => {}
                    "SUBSCRIBED" => show_subscribed = true,
                    _ => return Done::Bad(format!("Unsupported return option {o}")),
                }
            }
        }
        let verb = if lsub { "LSUB" } else { "LIST" };
        if patterns.iter().all(|p| p.is_empty()) {
            self.put(&format!("* {verb} (\\Noselect) \"/\" \"\"\r\n"));
            return ok("Success");
        }
        let mut lines = String::new();
        for f in &self.a.folders {
            let subscribed = self.a.subscribed.contains(&f.name);
            let hit = patterns
                .iter()
                .any(|p| list_match(&format!("{reference}{p}"), &f.name));
            if !hit || (only_subscribed && !subscribed) {
                continue;
            }
            let mut attrs = Vec::new();
            if f.kind == Kind::NoSelect {
                attrs.push("\\Noselect");
            }
            attrs.push(if self.a.has_children(&f.name) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
            attrs.extend(f.special);
            if show_subscribed && subscribed {
                attrs.push("\\Subscribed");
            }
            lines.push_str(&format!(
                "* {verb} ({}) \"/\" {}\r\n",
                attrs.join(" "),
                quote(&f.name)
            ));
        }
        self.put(&lines);
        ok("Success")
    }

    fn status(&mut self, a: &mut Args) -> Done {
        let (Some(name), Some(items)) = (a.astring(), a.list()) else {
            return bad("STATUS needs a folder and items");
        };
        let Some(f) = self.a.folder(&name).filter(|f| f.kind != Kind::NoSelect) else {
            return Done::No(format!("[NONEXISTENT] Unknown Mailbox: {name} (Failure)"));
        };
        let mut parts = Vec::new();
        for it in &items {
            let v = match it.to_ascii_uppercase().as_str() {
                "MESSAGES" => f.uids.len() as u64,
                "UIDNEXT" => u64::from(f.uidnext),
                "UIDVALIDITY" => u64::from(f.uidvalidity),
                "RECENT" => 0,
                "UNSEEN" => f
                    .uids
                    .values()
                    .filter(|id| self.a.msgs.get(id).is_some_and(|m| !m.has_flag("\\Seen")))
                    .count() as u64,
                _ => return Done::Bad(format!("Unsupported STATUS item {it}")),
            };
            parts.push(format!("{} {v}", it.to_ascii_uppercase()));
        }
        let line = format!("* STATUS {} ({})\r\n", quote(&name), parts.join(" "));
        self.put(&line);
        ok("Success")
    }

    fn append(&mut self, a: &mut Args) -> Done {
        let Some(name) = a.astring() else {
            return bad("APPEND needs a folder");
        };
        let flags = if a.peek() == Some(&Tok::Open) {
            match a.list() {
                Some(f) => f,
                None => return bad("Bad flag list"),
            }
        } else {
            Vec::new()
        };
        let date = match a.peek() {
            Some(Tok::Str(_)) => match a.astring().and_then(|d| parse_date_time(&d)) {
                Some(d) => d,
                None => return bad("Invalid date-time"),
            },
            _ => now_date_time(),
        };
        let Some(Tok::Lit(bytes)) = a.next() else {
            return bad("APPEND needs a literal");
        };
        if !a.end() {
            return bad("Junk after the message (MULTIAPPEND is not supported)");
        }
        let Some(i) = self.a.index(&name) else {
            return no("[TRYCREATE] Folder doesn't exist. (Failure)");
        };
        let kind = self.a.folders[i].kind.clone();
        if kind == Kind::NoSelect {
            return no("[CANNOT] Folder is not selectable (Failure)");
        }
        let id = *self.next_msgid;
        *self.next_msgid += 1;
        let mut m = Msg::new(id, bytes, date);
        for f in &flags {
            m.add_flag(f);
        }
        self.a.msgs.insert(id, m);
        self.a.enter(&kind, id);
        self.a.sync();
        let f = &self.a.folders[i];
        let uid = f
            .uids
            .iter()
            .find(|(_, m)| **m == id)
            .map_or(0, |(u, _)| *u);
        Done::Ok(format!("[APPENDUID {} {uid}] (Success)", f.uidvalidity))
    }

    fn close(&mut self) -> Done {
        if self.sel.as_ref().is_some_and(|s| !s.ro) {
            self.expunge_where(|_| true);
        }
        *self.sel = None;
        ok("Returned to authenticated state. (Success)")
    }

    fn expunge(&mut self, a: &mut Args) -> Done {
        if self.sel.as_ref().is_some_and(|s| s.ro) {
            return no("[READ-ONLY] Folder is read-only (Failure)");
        }
        if !self.uid {
            self.expunge_where(|_| true);
            return ok("Success");
        }
        let Some(set) = a.astring() else {
            return bad("UID EXPUNGE needs a UID set");
        };
        let max = self
            .sel
            .as_ref()
            .and_then(|s| s.view.last())
            .map_or(0, |v| v.0);
        let Some(ranges) = parse_set(&set, max) else {
            return bad("Bad UID set");
        };
        self.expunge_where(|uid| in_set(&ranges, uid));
        ok("Success")
    }

    fn expunge_where(&mut self, pick: impl Fn(u32) -> bool) {
        let Some(sel) = self.sel.as_ref() else {
            return;
        };
        let Some(kind) = self.a.folder(&sel.name).map(|f| f.kind.clone()) else {
            return;
        };
        let doomed: Vec<u64> = sel
            .view
            .iter()
            .filter(|(u, id)| {
                pick(*u) && self.a.msgs.get(id).is_some_and(|m| m.has_flag("\\Deleted"))
            })
            .map(|(_, id)| *id)
            .collect();
        for id in doomed {
            self.a.leave(&kind, id);
        }
        self.a.sync();
    }

    /// (sequence number, UID, X-GM-MSGID) of the selected messages in `set`.
    fn targets(&self, set: &str) -> Option<Vec<(usize, u32, u64)>> {
        let sel = self.sel.as_ref()?;
        let max = if self.uid {
            sel.view.last().map_or(0, |v| v.0)
        } else {
            sel.view.len() as u32
        };
        let ranges = parse_set(set, max)?;
        Some(
            sel.view
                .iter()
                .enumerate()
                .filter(|(i, (u, _))| in_set(&ranges, if self.uid { *u } else { *i as u32 + 1 }))
                .map(|(i, (u, id))| (i + 1, *u, *id))
                .collect(),
        )
    }

    /// The label left out of FETCH X-GM-LABELS: the selected folder's own.
    fn own_label(&self) -> Option<String> {
        if self.show_own_label {
            return None;
        }
        let sel = self.sel.as_ref()?;
        let f = self.a.folder(&sel.name)?;
        f.kind.own_label().map(str::to_string)
    }

    fn fetch(&mut self, a: &mut Args) -> Done {
        let Some(set) = a.astring() else {
            return bad("FETCH needs a set");
        };
        let Some(items) = parse_items(a) else {
            return bad("Could not parse command (unsupported or malformed FETCH items)");
        };
        let Some(targets) = self.targets(&set) else {
            return bad("Bad sequence set");
        };
        let ro = self.sel.as_ref().is_none_or(|s| s.ro);
        let own = self.own_label();
        for (seq, uid, id) in targets {
            let Some(m) = self.a.msgs.get_mut(&id) else {
                continue;
            };
            let mut items = items.clone();
            if !ro && items.iter().any(Item::sets_seen) && !m.has_flag("\\Seen") {
                m.add_flag("\\Seen");
                if !items.contains(&Item::Flags) {
                    items.push(Item::Flags);
                }
            }
            if self.uid && !items.contains(&Item::Uid) {
                items.insert(0, Item::Uid);
            }
            let mut line = format!("* {seq} FETCH (").into_bytes();
            for (k, it) in items.iter().enumerate() {
                if k > 0 {
                    line.push(b' ');
                }
                render(it, m, uid, own.as_deref(), &mut line);
            }
            line.extend_from_slice(b")\r\n");
            self.out.extend_from_slice(&line);
        }
        ok("Success")
    }

    fn store(&mut self, a: &mut Args) -> Done {
        if self.sel.as_ref().is_some_and(|s| s.ro) {
            return no("[READ-ONLY] Folder is read-only (Failure)");
        }
        let (Some(set), Some(item), Some(values)) = (a.astring(), a.atom_upper(), a.list()) else {
            return bad("STORE needs a set, an item and values");
        };
        let (op, rest) = match item.as_bytes().first() {
            Some(b'+') => (Op::Add, &item[1..]),
            Some(b'-') => (Op::Remove, &item[1..]),
            _ => (Op::Replace, &item[..]),
        };
        let silent = rest.ends_with(".SILENT");
        let what = rest.trim_end_matches(".SILENT");
        let labels = match what {
            "FLAGS" => false,
            "X-GM-LABELS" => true,
            _ => return Done::Bad(format!("Unsupported STORE item {item}")),
        };
        let Some(targets) = self.targets(&set) else {
            return bad("Bad sequence set");
        };
        let own = self.own_label();
        for (seq, uid, id) in targets {
            if labels {
                self.a.apply_labels(id, &values, op);
            } else if let Some(m) = self.a.msgs.get_mut(&id) {
                store_flags(m, &values, op);
            }
            let Some(m) = self.a.msgs.get(&id) else {
                continue;
            };
            if !silent {
                let mut line = format!("* {seq} FETCH (").into_bytes();
                if self.uid {
                    line.extend_from_slice(format!("UID {uid} ").as_bytes());
                }
                let it = if labels { Item::Labels } else { Item::Flags };
                render(&it, m, uid, own.as_deref(), &mut line);
                line.extend_from_slice(b")\r\n");
                self.out.extend_from_slice(&line);
            }
        }
        ok("Success")
    }

    fn copy(&mut self, a: &mut Args) -> Done {
        let (Some(set), Some(dest)) = (a.astring(), a.astring()) else {
            return bad("COPY needs a set and a folder");
        };
        let Some(targets) = self.targets(&set) else {
            return bad("Bad sequence set");
        };
        let Some(i) = self.a.index(&dest) else {
            return no("[TRYCREATE] Folder doesn't exist. (Failure)");
        };
        let kind = self.a.folders[i].kind.clone();
        if kind == Kind::NoSelect {
            return no("[CANNOT] Folder is not selectable (Failure)");
        }
        for (_, _, id) in &targets {
            self.a.enter(&kind, *id);
        }
        self.a.sync();
        let f = &self.a.folders[i];
        let by_msg: HashMap<u64, u32> = f.uids.iter().map(|(u, id)| (*id, *u)).collect();
        let pairs: Vec<(u32, u32)> = targets
            .iter()
            .filter_map(|(_, u, id)| by_msg.get(id).map(|d| (*u, *d)))
            .collect();
        if pairs.is_empty() {
            return ok("Success");
        }
        let join = |v: Vec<u32>| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let src = join(pairs.iter().map(|p| p.0).collect());
        let dst = join(pairs.iter().map(|p| p.1).collect());
        Done::Ok(format!("[COPYUID {} {src} {dst}] (Success)", f.uidvalidity))
    }

    fn search(&mut self, a: &mut Args) -> Done {
        let Some(sel) = self.sel.as_ref() else {
            return bad("No mailbox selected");
        };
        let max_uid = sel.view.last().map_or(0, |v| v.0);
        let max_seq = sel.view.len() as u32;
        if matches!(a.peek(), Some(Tok::Atom(c)) if c.eq_ignore_ascii_case("CHARSET")) {
            a.i += 1;
            match a.astring() {
                Some(cs)
                    if cs.eq_ignore_ascii_case("UTF-8") || cs.eq_ignore_ascii_case("US-ASCII") => {}
                _ => return no("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"),
            }
        }
        let mut keys = Vec::new();
        while !a.end() {
            match parse_crit(a, max_uid, max_seq) {
                Some(c) => keys.push(c),
                None => return bad("Could not parse command (unsupported SEARCH criteria)"),
            }
        }
        let all = Crit::And(keys);
        let hits: Vec<String> = sel
            .view
            .iter()
            .enumerate()
            .filter(|(i, (u, id))| {
                self.a
                    .msgs
                    .get(id)
                    .is_some_and(|m| all.matches(m, *u, *i as u32 + 1))
            })
            .map(|(i, (u, _))| {
                if self.uid {
                    u.to_string()
                } else {
                    (i + 1).to_string()
                }
            })
            .collect();
        let line = if hits.is_empty() {
            "* SEARCH\r\n".to_string()
        } else {
            format!("* SEARCH {}\r\n", hits.join(" "))
        };
        self.put(&line);
        ok("SEARCH completed (Success)")
    }
}

fn store_flags(m: &mut Msg, values: &[String], op: Op) {
    if op == Op::Replace {
        m.flags.clear();
    }
    for v in values {
        if op == Op::Remove {
            m.remove_flag(v);
        } else {
            m.add_flag(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FETCH items.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Section {
    Full,
    Header,
    Text,
    Fields { not: bool, names: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    InternalDate,
    Size,
    MsgId,
    ThrId,
    Labels,
    /// `BODY[...]` / `BODY.PEEK[...]` / `RFC822*`: the section, (origin, length), the response name.
    Body {
        peek: bool,
        section: Section,
        partial: Option<(usize, usize)>,
        name: String,
    },
}

impl Item {
    fn sets_seen(&self) -> bool {
        matches!(self, Item::Body { peek: false, section, .. } if *section != Section::Header)
    }
}

fn parse_items(a: &mut Args) -> Option<Vec<Item>> {
    let names = if a.open() {
        let mut v = Vec::new();
        loop {
            match a.next()? {
                Tok::Close => break v,
                Tok::Atom(s) => v.push(s),
                _ => return None,
            }
        }
    } else {
        vec![match a.next()? {
            Tok::Atom(s) => s,
            _ => return None,
        }]
    };
    if !a.end() {
        return None;
    }
    let mut out = Vec::new();
    for n in names {
        match n.to_ascii_uppercase().as_str() {
            "FAST" | "ALL" => out.extend([Item::Flags, Item::InternalDate, Item::Size]),
            _ => out.push(parse_item(&n)?),
        }
    }
    Some(out)
}

fn parse_item(n: &str) -> Option<Item> {
    let up = n.to_ascii_uppercase();
    let body = |peek, section, name: &str| Item::Body {
        peek,
        section,
        partial: None,
        name: name.to_string(),
    };
    Some(match up.as_str() {
        "UID" => Item::Uid,
        "FLAGS" => Item::Flags,
        "INTERNALDATE" => Item::InternalDate,
        "RFC822.SIZE" => Item::Size,
        "X-GM-MSGID" => Item::MsgId,
        "X-GM-THRID" => Item::ThrId,
        "X-GM-LABELS" => Item::Labels,
        "RFC822" => body(false, Section::Full, "RFC822"),
        "RFC822.HEADER" => body(true, Section::Header, "RFC822.HEADER"),
        "RFC822.TEXT" => body(false, Section::Text, "RFC822.TEXT"),
        _ => return parse_body_item(&up),
    })
}

/// `BODY[section]<o.n>` / `BODY.PEEK[section]<o.n>` (sections: empty, HEADER, TEXT,
/// HEADER.FIELDS[.NOT] (names)).
fn parse_body_item(up: &str) -> Option<Item> {
    let (peek, rest) = if let Some(r) = up.strip_prefix("BODY.PEEK[") {
        (true, r)
    } else {
        (false, up.strip_prefix("BODY[")?)
    };
    let close = rest.rfind(']')?;
    let spec = &rest[..close];
    let tail = &rest[close + 1..];
    let section = match spec {
        "" => Section::Full,
        "HEADER" => Section::Header,
        "TEXT" => Section::Text,
        _ => {
            let (not, list) = if let Some(l) = spec.strip_prefix("HEADER.FIELDS.NOT ") {
                (true, l)
            } else {
                (false, spec.strip_prefix("HEADER.FIELDS ")?)
            };
            let inner = list.strip_prefix('(')?.strip_suffix(')')?;
            let names = inner
                .split_whitespace()
                .map(|s| s.trim_matches('"').to_string())
                .collect();
            Section::Fields { not, names }
        }
    };
    let partial = if tail.is_empty() {
        None
    } else {
        let (o, n) = tail.strip_prefix('<')?.strip_suffix('>')?.split_once('.')?;
        Some((o.parse().ok()?, n.parse().ok()?))
    };
    Some(Item::Body {
        peek,
        section,
        partial,
        name: format!("BODY[{spec}]"),
    })
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// (header including its blank line, text).
fn split_message(b: &[u8]) -> (&[u8], &[u8]) {
    match (find(b, b"\r\n\r\n"), find(b, b"\n\n")) {
        (Some(p), q) if q.is_none_or(|q| p < q) => (&b[..p + 4], &b[p + 4..]),
        (_, Some(q)) => (&b[..q + 2], &b[q + 2..]),
        _ => (b, &[]),
    }
}

/// The header fields named (or, with `not`, not named) in `names`, followed by a blank line.
fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&c| c == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line.split(|&c| c == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            keep = names.iter().any(|n| n.eq_ignore_ascii_case(name.trim())) != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn section_bytes(m: &Msg, s: &Section) -> Vec<u8> {
    let (h, t) = split_message(&m.bytes);
    match s {
        Section::Full => m.bytes.clone(),
        Section::Header => h.to_vec(),
        Section::Text => t.to_vec(),
        Section::Fields { not, names } => header_fields(h, names, *not),
    }
}

fn literal(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
}

fn labels_list(m: &Msg, own: Option<&str>) -> String {
    let mut v: Vec<String> = ordered_labels(&m.labels);
    if m.has_flag("\\Flagged") {
        v.push("\\Starred".into());
    }
    v.retain(|l| Some(l.as_str()) != own);
    let rendered: Vec<String> = v
        .iter()
        .map(|l| {
            if l.starts_with('\\') {
                l.clone()
            } else {
                quote(l)
            }
        })
        .collect();
    format!("({})", rendered.join(" "))
}

fn render(it: &Item, m: &Msg, uid: u32, own: Option<&str>, out: &mut Vec<u8>) {
    let text = match it {
        Item::Uid => format!("UID {uid}"),
        Item::Flags => format!("FLAGS ({})", m.flags.join(" ")),
        Item::InternalDate => format!("INTERNALDATE \"{}\"", m.date),
        Item::Size => format!("RFC822.SIZE {}", m.bytes.len()),
        Item::MsgId => format!("X-GM-MSGID {}", m.id),
        Item::ThrId => format!("X-GM-THRID {}", m.id),
        Item::Labels => format!("X-GM-LABELS {}", labels_list(m, own)),
        Item::Body {
            section,
            partial,
            name,
            ..
        } => {
            let mut b = section_bytes(m, section);
            let mut name = name.clone();
            if let Some((o, n)) = partial {
                b = b
                    .get(*o..)
                    .unwrap_or_default()
                    .iter()
                    .take(*n)
                    .copied()
                    .collect();
                name.push_str(&format!("<{o}>"));
            }
            out.extend_from_slice(format!("{name} ").as_bytes());
            literal(out, &b);
            return;
        }
    };
    out.extend_from_slice(text.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// SEARCH.

enum Crit {
    And(Vec<Crit>),
    Or(Box<Crit>, Box<Crit>),
    Not(Box<Crit>),
    All,
    Uid(Vec<(u32, u32)>),
    Seq(Vec<(u32, u32)>),
    Since(i64),
    Before(i64),
    On(i64),
    Flag(String, bool),
    Larger(usize),
    Smaller(usize),
    MsgId(u64),
    ThrId(u64),
    Label(String),
    Header(String, String),
}

impl Crit {
    fn matches(&self, m: &Msg, uid: u32, seq: u32) -> bool {
        let day = || date_day(&m.date).unwrap_or(0);
        match self {
            Crit::And(v) => v.iter().all(|c| c.matches(m, uid, seq)),
            Crit::Or(a, b) => a.matches(m, uid, seq) || b.matches(m, uid, seq),
            Crit::Not(c) => !c.matches(m, uid, seq),
            Crit::All => true,
            Crit::Uid(r) => in_set(r, uid),
            Crit::Seq(r) => in_set(r, seq),
            Crit::Since(d) => day() >= *d,
            Crit::Before(d) => day() < *d,
            Crit::On(d) => day() == *d,
            Crit::Flag(f, want) => m.has_flag(f) == *want,
            Crit::Larger(n) => m.bytes.len() > *n,
            Crit::Smaller(n) => m.bytes.len() < *n,
            Crit::MsgId(id) | Crit::ThrId(id) => m.id == *id,
            Crit::Label(l) => match canon_label(l) {
                Label::System(s) => m.labels.contains(s),
                Label::Starred => m.has_flag("\\Flagged"),
                Label::User(u) => m.labels.contains(&u),
            },
            Crit::Header(name, value) => {
                let h = header_fields(split_message(&m.bytes).0, std::slice::from_ref(name), false);
                let h = String::from_utf8_lossy(&h).to_ascii_lowercase();
                h.len() > 2 && h.contains(&value.to_ascii_lowercase())
            }
        }
    }
}

fn parse_crit(a: &mut Args, max_uid: u32, max_seq: u32) -> Option<Crit> {
    if a.open() {
        let mut v = Vec::new();
        while a.peek() != Some(&Tok::Close) {
            v.push(parse_crit(a, max_uid, max_seq)?);
        }
        a.i += 1;
        return Some(Crit::And(v));
    }
    let key = a.astring()?;
    let up = key.to_ascii_uppercase();
    let flag = |f: &str, want: bool| Some(Crit::Flag(f.to_string(), want));
    match up.as_str() {
        "ALL" => Some(Crit::All),
        "UID" => Some(Crit::Uid(parse_set(&a.astring()?, max_uid)?)),
        "SINCE" => Some(Crit::Since(parse_date(&a.astring()?)?)),
        "BEFORE" => Some(Crit::Before(parse_date(&a.astring()?)?)),
        "ON" => Some(Crit::On(parse_date(&a.astring()?)?)),
        "SEEN" | "ANSWERED" | "FLAGGED" | "DELETED" | "DRAFT" => flag(&format!("\\{key}"), true),
        "UNSEEN" | "UNANSWERED" | "UNFLAGGED" | "UNDELETED" | "UNDRAFT" => {
            flag(&format!("\\{}", &key[2..]), false)
        }
        "KEYWORD" => flag(&a.astring()?, true),
        "UNKEYWORD" => flag(&a.astring()?, false),
        "LARGER" => Some(Crit::Larger(a.astring()?.parse().ok()?)),
        "SMALLER" => Some(Crit::Smaller(a.astring()?.parse().ok()?)),
        "X-GM-MSGID" => Some(Crit::MsgId(a.astring()?.parse().ok()?)),
        "X-GM-THRID" => Some(Crit::ThrId(a.astring()?.parse().ok()?)),
        "X-GM-LABELS" => Some(Crit::Label(a.astring()?)),
        "HEADER" => Some(Crit::Header(a.astring()?, a.astring()?)),
        "NOT" => Some(Crit::Not(Box::new(parse_crit(a, max_uid, max_seq)?))),
        "OR" => {
            let x = parse_crit(a, max_uid, max_seq)?;
            let y = parse_crit(a, max_uid, max_seq)?;
            Some(Crit::Or(Box::new(x), Box::new(y)))
        }
        _ => Some(Crit::Seq(parse_set(&key, max_seq)?)),
    }
}

/// A sequence/UID set (`1:*`, `2,4:7`) as inclusive ranges, `*` being `max`.
fn parse_set(s: &str, max: u32) -> Option<Vec<(u32, u32)>> {
    let num = |x: &str| -> Option<u32> {
        if x == "*" {
            Some(max)
        } else {
            x.parse().ok().filter(|n| *n > 0)
        }
    };
    s.split(',')
        .map(|part| match part.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                Some((a.min(b), a.max(b)))
            }
            None => num(part).map(|n| (n, n)),
        })
        .collect()
}

fn in_set(ranges: &[(u32, u32)], n: u32) -> bool {
    ranges.iter().any(|(a, b)| *a <= n && n <= *b)
}

/// LIST pattern match (`*` anything, `%` anything but the delimiter `/`; INBOX case-insensitive).
fn list_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('%') => {
                for k in 0..=n.len() {
                    if go(&p[1..], &n[k..]) {
                        return true;
                    }
                    if n.get(k) == Some(&'/') {
                        break;
                    }
                }
                false
            }
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let pattern = if pattern.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        pattern
    };
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------------------------
// Dates.

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `d-Mon-yyyy` as days since the epoch.
fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().split('-');
    let d: i64 = it.next()?.trim().parse().ok()?;
    let mon = it.next()?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as i64 + 1;
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// The date part of an INTERNALDATE (in its own zone, as SEARCH compares it).
fn date_day(date_time: &str) -> Option<i64> {
    parse_date(date_time.split(' ').next()?)
}

/// An RFC 3501 date-time (`[ d]d-Mon-yyyy hh:mm:ss +zzzz`), normalised to a zero-padded day.
fn parse_date_time(s: &str) -> Option<String> {
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    parse_date(date)?;
    let (d, my) = date.split_once('-')?;
    let t: Vec<&str> = time.split(':').collect();
    let time_ok = t.len() == 3
        && t.iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()));
    let zone_ok = zone.len() == 5
        && matches!(zone.as_bytes()[0], b'+' | b'-')
        && zone.bytes().skip(1).all(|b| b.is_ascii_digit());
    (time_ok && zone_ok).then(|| {
        format!(
            "{:02}-{my} {time} {zone}",
            d.trim().parse::<u32>().unwrap_or(1)
        )
    })
}

/// Now as an RFC 3501 date-time in UTC.
fn now_date_time() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{d:02}-{}-{y} {:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
