//! Test fixture: snapshot an IMAP account and compare two snapshots (source vs destination of a backfill).
//!
//! Owns: `snapshot()` (LIST with SPECIAL-USE attributes, LSUB, and per message UID, flags minus `\Recent`,
//! INTERNALDATE, RFC822.SIZE, sha256 of BODY.PEEK[], Message-ID and X-Test-Id), `compare()` by multiset of body
//! hashes per mapped folder pair (missing, extra/duplicates, flag, date and body mismatches, missing folders and
//! subscriptions), `Diff::is_exact()`, duplicate counting, and `Snapshot::from_messages` to compare against an
//! expected list (e.g. a corpus manifest).
//! Must never: modify the account (EXAMINE and BODY.PEEK only), keep more than one message body in memory at a
//! time, or depend on another support file (its small IMAP login and modified UTF-7 code are self-contained).
//!
//! Folder names in snapshots are UTF-8 with `/` as hierarchy separator whatever the server uses, so a Maildir++
//! source (`.`) and an fs-layout destination (`/`) compare with the identity map.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sha2::{Digest as _, Sha256};

const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// One message of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgSnap {
    pub uid: u32,
    /// Sorted; system flags (`\Seen` ...) and keywords; never `\Recent`.
    pub flags: Vec<String>,
    /// INTERNALDATE, epoch seconds.
    pub internaldate: i64,
    pub size: u64,
    /// sha256 (hex) of BODY[].
    pub sha256: String,
    pub message_id: Option<String>,
    /// `X-Test-Id` header (corpus messages), used to tell a changed body from a missing message.
    pub test_id: Option<String>,
}

impl MsgSnap {
    /// Identity used to pair a missing source message with a destination message whose bytes differ.
    fn identity(&self) -> Option<String> {
        match (&self.test_id, &self.message_id) {
            (None, None) => None,
            (t, m) => Some(format!("{t:?}/{m:?}")),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct FolderSnap {
    /// Name on the wire (modified UTF-7, server separator).
    pub wire: String,
    /// LIST attributes, e.g. `\Sent`, `\HasNoChildren`.
    pub attributes: Vec<String>,
    /// RFC 6154 attribute if any (`\Sent`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`, `\All`, `\Flagged`).
    pub special_use: Option<String>,
    pub selectable: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// In UID order.
    pub messages: Vec<MsgSnap>,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub separator: String,
    /// UTF-8 name with `/` hierarchy -> folder.
    pub folders: BTreeMap<String, FolderSnap>,
    /// Subscribed folders (UTF-8, `/` hierarchy).
    pub subscriptions: BTreeSet<String>,
}

impl Snapshot {
    /// Build an "expected" snapshot from (folder, message) pairs; all folders selectable and subscribed.
    pub fn from_messages(items: impl IntoIterator<Item = (String, MsgSnap)>) -> Snapshot {
        let mut s = Snapshot {
            separator: "/".into(),
            ..Default::default()
        };
        for (folder, m) in items {
            let f = s
                .folders
                .entry(folder.clone())
                .or_insert_with(|| FolderSnap {
                    wire: folder.clone(),
                    selectable: true,
                    ..Default::default()
                });
            f.messages.push(m);
            if !folder.eq_ignore_ascii_case("INBOX") {
                s.subscriptions.insert(folder);
            }
        }
        s
    }
    /// Message count per selectable folder.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.folders
            .iter()
            .filter(|(_, f)| f.selectable)
            .map(|(n, f)| (n.clone(), f.messages.len()))
            .collect()
    }
    pub fn total(&self) -> usize {
        self.folders.values().map(|f| f.messages.len()).sum()
    }
    pub fn total_bytes(&self) -> u64 {
        self.folders
            .values()
            .flat_map(|f| f.messages.iter())
            .map(|m| m.size)
            .sum()
    }
    /// Folder carrying SPECIAL-USE `attr` (e.g. `\Sent`), if any.
    pub fn special(&self, attr: &str) -> Option<&str> {
        self.folders
            .iter()
            .find(|(_, f)| f.special_use.as_deref() == Some(attr))
            .map(|(n, _)| n.as_str())
    }
    /// Sum over folders and body hashes of (copies - 1): identical messages sharing a folder.
    pub fn duplicate_count(&self) -> usize {
        self.folders.values().map(folder_duplicates).sum()
    }
}

fn folder_duplicates(f: &FolderSnap) -> usize {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &f.messages {
        *by.entry(&m.sha256).or_insert(0) += 1;
    }
    by.values().map(|c| c - 1).sum()
}

/// How source folders map to destination folders for `compare`.
#[derive(Clone, Debug)]
pub struct FolderMap {
    /// Explicit source -> destination names (UTF-8, `/` hierarchy).
    pub explicit: BTreeMap<String, String>,
    /// Map a source folder with a SPECIAL-USE attribute to the destination folder with the same attribute.
    pub by_special_use: bool,
    /// Source folders not expected on the destination.
    pub excluded: BTreeSet<String>,
    /// Personal-namespace prefixes (UTF-8, `/` hierarchy, e.g. `INBOX/` for Cyrus's `INBOX.` with
    /// `altnamespace: no`) of the source and the destination: a source folder `src_prefix + X` is
    /// expected as `dst_prefix + X` (INBOX stays INBOX), so logical names compare equal.
    pub src_prefix: String,
    pub dst_prefix: String,
}

impl Default for FolderMap {
    fn default() -> Self {
        FolderMap {
            explicit: BTreeMap::new(),
            by_special_use: true,
            excluded: BTreeSet::new(),
            src_prefix: String::new(),
            dst_prefix: String::new(),
        }
    }
}

impl FolderMap {
    /// Same name on both sides (after separator normalisation), SPECIAL-USE attributes first.
    pub fn identity() -> Self {
        Self::default()
    }
    pub fn map(mut self, src: &str, dst: &str) -> Self {
        self.explicit.insert(src.to_string(), dst.to_string());
        self
    }
    pub fn exclude(mut self, src: &str) -> Self {
        self.excluded.insert(src.to_string());
        self
    }
    pub fn no_special_use(mut self) -> Self {
        self.by_special_use = false;
        self
    }
    /// Personal-namespace prefixes of source and destination (see the fields), e.g.
    /// `FolderMap::identity().prefixes("", "INBOX/")` for Dovecot -> Cyrus with `INBOX.`.
    pub fn prefixes(mut self, src: &str, dst: &str) -> Self {
        self.src_prefix = src.to_string();
        self.dst_prefix = dst.to_string();
        self
    }
    /// Destination name for a source folder (None: excluded).
    pub fn resolve(&self, src: &Snapshot, dst: &Snapshot, name: &str) -> Option<String> {
        if self.excluded.contains(name) {
            return None;
        }
        if self.by_special_use
            && let Some(attr) = src.folders.get(name).and_then(|f| f.special_use.as_deref())
            && let Some(d) = dst.special(attr)
        {
            return Some(d.to_string());
        }
        if let Some(d) = self.explicit.get(name) {
            return Some(d.clone());
        }
        if name.eq_ignore_ascii_case("INBOX") {
            return Some(name.to_string());
        }
        let logical = name.strip_prefix(&self.src_prefix).unwrap_or(name);
        Some(format!("{}{logical}", self.dst_prefix))
    }
}

/// A message reference in a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgRef {
    pub uid: u32,
    pub sha256: String,
    pub message_id: Option<String>,
    pub test_id: Option<String>,
}

impl From<&MsgSnap> for MsgRef {
    fn from(m: &MsgSnap) -> Self {
        MsgRef {
            uid: m.uid,
            sha256: m.sha256.clone(),
            message_id: m.message_id.clone(),
            test_id: m.test_id.clone(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct FolderDiff {
    pub src_folder: String,
    pub dst_folder: String,
    pub src_count: usize,
    pub dst_count: usize,
    /// Source messages with no counterpart (by body hash, multiplicity counted).
    pub missing: Vec<MsgRef>,
    /// Destination messages beyond the source's multiplicity whose body exists in the source folder.
    pub duplicates: Vec<MsgRef>,
    /// Destination messages whose body is not in the source folder at all (and no body mismatch).
    pub unexpected: Vec<MsgRef>,
    /// Same bytes, different flags: (source message, destination flags).
    pub flag_mismatches: Vec<(MsgRef, Vec<String>, Vec<String>)>,
    /// Same bytes, different INTERNALDATE: (message, source date, destination date).
    pub date_mismatches: Vec<(MsgRef, i64, i64)>,
    /// Same identity (X-Test-Id / Message-ID), different bytes: (source, destination).
    pub body_mismatches: Vec<(MsgRef, MsgRef)>,
}

impl FolderDiff {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.unexpected.is_empty()
            && self.flag_mismatches.is_empty()
            && self.date_mismatches.is_empty()
            && self.body_mismatches.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Diff {
    /// Keyed by source folder.
    pub folders: BTreeMap<String, FolderDiff>,
    /// Selectable source folders (not excluded) with no destination folder.
    pub missing_folders: Vec<String>,
    /// Destination folders holding messages that no source folder maps to.
    pub extra_folders: Vec<String>,
    /// Subscribed source folders whose destination is not subscribed.
    pub missing_subscriptions: Vec<String>,
}

impl Diff {
    /// Destination equals source: every folder, message (bytes), flag, date and subscription.
    pub fn is_exact(&self) -> bool {
        self.missing_folders.is_empty()
            && self.extra_folders.is_empty()
            && self.missing_subscriptions.is_empty()
            && self.folders.values().all(FolderDiff::is_exact)
    }
    /// Every source message has a counterpart with the same bytes (flags/dates/extras not considered).
    pub fn converged(&self) -> bool {
        self.missing_folders.is_empty()
            && self
                .folders
                .values()
                .all(|f| f.missing.is_empty() && f.body_mismatches.is_empty())
    }
    pub fn missing(&self) -> usize {
        self.folders.values().map(|f| f.missing.len()).sum()
    }
    /// Extra copies on the destination of messages the source folder has (what "0 duplicates" asserts).
    pub fn duplicates(&self) -> usize {
        self.folders.values().map(|f| f.duplicates.len()).sum()
    }
    pub fn flag_mismatches(&self) -> usize {
        self.folders.values().map(|f| f.flag_mismatches.len()).sum()
    }
    pub fn date_mismatches(&self) -> usize {
        self.folders.values().map(|f| f.date_mismatches.len()).sum()
    }
    pub fn body_mismatches(&self) -> usize {
        self.folders.values().map(|f| f.body_mismatches.len()).sum()
    }
    /// Human-readable summary for assertion messages (first few items per category).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for f in &self.missing_folders {
            let _ = writeln!(s, "missing folder: {f}");
        }
        for f in &self.extra_folders {
            let _ = writeln!(s, "extra folder: {f}");
        }
        for f in &self.missing_subscriptions {
            let _ = writeln!(s, "missing subscription: {f}");
        }
        for (name, f) in &self.folders {
            if f.is_exact() {
                continue;
            }
            let _ = writeln!(
                s,
                "{name} -> {}: src {} dst {}; missing {} duplicates {} unexpected {} flags {} dates {} bodies {}",
                f.dst_folder,
                f.src_count,
                f.dst_count,
                f.missing.len(),
                f.duplicates.len(),
                f.unexpected.len(),
                f.flag_mismatches.len(),
                f.date_mismatches.len(),
                f.body_mismatches.len()
            );
            for m in f.missing.iter().take(3) {
                let _ = writeln!(s, "  missing {:?} {:?}", m.test_id, m.message_id);
            }
            for m in f.duplicates.iter().take(3) {
                let _ = writeln!(s, "  duplicate uid {} {:?}", m.uid, m.test_id);
            }
            for m in f.unexpected.iter().take(3) {
                let _ = writeln!(s, "  unexpected uid {} {:?}", m.uid, m.test_id);
            }
            for (m, a, b) in f.flag_mismatches.iter().take(3) {
                let _ = writeln!(s, "  flags {:?}: {a:?} vs {b:?}", m.test_id);
            }
            for (m, a, b) in f.date_mismatches.iter().take(3) {
                let _ = writeln!(s, "  date {:?}: {a} vs {b}", m.test_id);
            }
            for (a, b) in f.body_mismatches.iter().take(3) {
                let _ = writeln!(s, "  body {:?}: {} vs {}", a.test_id, a.sha256, b.sha256);
            }
        }
        if s.is_empty() {
            s.push_str("exact\n");
        }
        s
    }
}

/// Compare a source and a destination snapshot through `map`.
pub fn compare(src: &Snapshot, dst: &Snapshot, map: &FolderMap) -> Diff {
    let mut diff = Diff::default();
    let mut mapped_dst: BTreeSet<String> = BTreeSet::new();
    let empty = FolderSnap::default();
    for (name, sf) in src.folders.iter().filter(|(_, f)| f.selectable) {
        let Some(dname) = map.resolve(src, dst, name) else {
            continue;
        };
        mapped_dst.insert(dname.clone());
        let df = match dst.folders.get(&dname).filter(|f| f.selectable) {
            Some(f) => f,
            None => {
                diff.missing_folders.push(name.clone());
                &empty
            }
        };
        if src.subscriptions.contains(name) && !dst.subscriptions.contains(&dname) {
            diff.missing_subscriptions.push(name.clone());
        }
        diff.folders
            .insert(name.clone(), compare_folder(name, &dname, sf, df));
    }
    for (dname, df) in &dst.folders {
        if !mapped_dst.contains(dname) && !df.messages.is_empty() {
            diff.extra_folders.push(dname.clone());
        }
    }
    diff
}

fn compare_folder(sname: &str, dname: &str, sf: &FolderSnap, df: &FolderSnap) -> FolderDiff {
    let mut fd = FolderDiff {
        src_folder: sname.to_string(),
        dst_folder: dname.to_string(),
        src_count: sf.messages.len(),
        dst_count: df.messages.len(),
        ..Default::default()
    };
    let mut s_by: BTreeMap<&str, Vec<&MsgSnap>> = BTreeMap::new();
    let mut d_by: BTreeMap<&str, Vec<&MsgSnap>> = BTreeMap::new();
    for m in &sf.messages {
        s_by.entry(&m.sha256).or_default().push(m);
    }
    for m in &df.messages {
        d_by.entry(&m.sha256).or_default().push(m);
    }
    let mut missing: Vec<&MsgSnap> = Vec::new();
    let mut unexpected: Vec<&MsgSnap> = Vec::new();
    for (sha, ss) in &s_by {
        let mut ds: Vec<&MsgSnap> = d_by.get(sha).cloned().unwrap_or_default();
        let mut unmatched_src: Vec<&MsgSnap> = Vec::new();
        // exact pairs first (same flags and date), then the rest in order
        for s in ss {
            if let Some(i) = ds
                .iter()
                .position(|d| d.flags == s.flags && d.internaldate == s.internaldate)
            {
                ds.remove(i);
            } else {
                unmatched_src.push(s);
            }
        }
        for s in unmatched_src {
            if ds.is_empty() {
                missing.push(s);
                continue;
            }
            let d = ds.remove(0);
            if d.flags != s.flags {
                fd.flag_mismatches
                    .push((MsgRef::from(s), s.flags.clone(), d.flags.clone()));
            }
            if d.internaldate != s.internaldate {
                fd.date_mismatches
                    .push((MsgRef::from(s), s.internaldate, d.internaldate));
            }
        }
        fd.duplicates.extend(ds.into_iter().map(MsgRef::from));
    }
    for (sha, ds) in &d_by {
        if !s_by.contains_key(sha) {
            unexpected.extend(ds.iter().copied());
        }
    }
    // a missing source message and an unexpected destination message with the same identity: body changed
    for s in missing {
        let pos = s.identity().and_then(|id| {
            unexpected
                .iter()
                .position(|d| d.identity().as_deref() == Some(id.as_str()))
        });
        match pos {
            Some(i) => {
                let d = unexpected.remove(i);
                fd.body_mismatches.push((MsgRef::from(s), MsgRef::from(d)));
            }
            None => fd.missing.push(MsgRef::from(s)),
        }
    }
    fd.unexpected = unexpected.into_iter().map(MsgRef::from).collect();
    fd
}

/// Connect and LOGIN on a plain loopback port.
pub async fn login(
    addr: SocketAddr,
    user: &str,
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
    tokio::time::timeout(IO_TIMEOUT, client.login(user, password))
        .await
        .map_err(|_| "login timeout".to_string())?
        .map_err(|(e, _)| format!("LOGIN {user}: {e}"))
}

async fn io<T>(
    what: &str,
    f: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timeout")),
    }
}

/// Snapshot the account `user` on the plain IMAP port `addr` (read-only: LIST, LSUB, EXAMINE, UID FETCH).
pub async fn snapshot(addr: SocketAddr, user: &str, password: &str) -> Result<Snapshot, String> {
    let mut session = login(addr, user, password).await?;
    let snap = snapshot_session(&mut session).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
    snap
}

/// Snapshot over an already authenticated session (e.g. a master-user or TLS login made by the caller).
pub async fn snapshot_session<T>(session: &mut async_imap::Session<T>) -> Result<Snapshot, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let mut snap = Snapshot::default();
    let mut listed: Vec<(String, Vec<String>, String)> = Vec::new();
    {
        let stream = io("LIST", session.list(Some(""), Some("*"))).await?;
        let names: Vec<_> = tokio::time::timeout(IO_TIMEOUT, stream.try_collect::<Vec<_>>())
            .await
            .map_err(|_| "LIST timeout".to_string())?
            .map_err(|e| format!("LIST: {e}"))?;
        for n in &names {
            let attrs: Vec<String> = n.attributes().iter().map(attr_name).collect();
            let sep = n.delimiter().unwrap_or("/").to_string();
            listed.push((n.name().to_string(), attrs, sep));
        }
    }
    if let Some((_, _, sep)) = listed.first() {
        snap.separator = sep.clone();
    }
    {
        let stream = io("LSUB", session.lsub(Some(""), Some("*"))).await?;
        let names: Vec<_> = tokio::time::timeout(IO_TIMEOUT, stream.try_collect::<Vec<_>>())
            .await
            .map_err(|_| "LSUB timeout".to_string())?
            .map_err(|e| format!("LSUB: {e}"))?;
        for n in &names {
            let sep = n.delimiter().unwrap_or("/").to_string();
            snap.subscriptions.insert(utf8_name(n.name(), &sep));
        }
    }
    for (wire, attrs, sep) in listed {
        let mut selectable = !attrs.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        });
        // Dovecot's mailbox list index can keep a stale `\Noselect` for a folder whose creation
        // raced a client that was killed (seen: an auto-created `Junk` listed `\Noselect` that
        // EXAMINE opens, 0 messages): the folder counts as there when it opens.
        if !selectable
            && !attrs
                .iter()
                .any(|a| a.eq_ignore_ascii_case("\\NonExistent"))
            && tokio::time::timeout(IO_TIMEOUT, session.examine(&wire))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            selectable = true;
        }
        let special_use = attrs
            .iter()
            .find(|a| {
                [
                    "\\Sent",
                    "\\Drafts",
                    "\\Trash",
                    "\\Junk",
                    "\\Archive",
                    "\\All",
                    "\\Flagged",
                ]
                .iter()
                .any(|s| s.eq_ignore_ascii_case(a))
            })
            .cloned();
        let mut f = FolderSnap {
            wire: wire.clone(),
            attributes: attrs,
            special_use,
            selectable,
            ..Default::default()
        };
        if selectable {
            let mb = io(&format!("EXAMINE {wire}"), session.examine(&wire)).await?;
            f.uidvalidity = mb.uid_validity.unwrap_or(0);
            f.uidnext = mb.uid_next.unwrap_or(0);
            if mb.exists > 0 {
                let stream = io(
                    &format!("UID FETCH {wire}"),
                    session.uid_fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"),
                )
                .await?;
                let mut stream = std::pin::pin!(stream);
                loop {
                    let next = tokio::time::timeout(IO_TIMEOUT, stream.try_next())
                        .await
                        .map_err(|_| format!("UID FETCH {wire}: timeout"))?
                        .map_err(|e| format!("UID FETCH {wire}: {e}"))?;
                    let Some(fetch) = next else { break };
                    let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) else {
                        continue; // unsolicited FLAGS update etc.
                    };
                    let mut flags: Vec<String> =
                        fetch.flags().filter_map(|fl| flag_name(&fl)).collect();
                    flags.sort();
                    f.messages.push(MsgSnap {
                        uid,
                        flags,
                        internaldate: fetch.internal_date().map(|d| d.timestamp()).unwrap_or(0),
                        size: u64::from(fetch.size.unwrap_or(0)),
                        sha256: hex::encode(Sha256::digest(body)),
                        message_id: header_value(body, "Message-ID"),
                        test_id: header_value(body, "X-Test-Id"),
                    });
                }
                f.messages.sort_by_key(|m| m.uid);
            }
        }
        snap.folders.insert(utf8_name(&wire, &sep), f);
    }
    Ok(snap)
}

fn attr_name(a: &async_imap::types::NameAttribute<'_>) -> String {
    use async_imap::types::NameAttribute as A;
    match a {
        A::NoInferiors => "\\Noinferiors".into(),
        A::NoSelect => "\\Noselect".into(),
        A::Marked => "\\Marked".into(),
        A::Unmarked => "\\Unmarked".into(),
        A::All => "\\All".into(),
        A::Archive => "\\Archive".into(),
        A::Drafts => "\\Drafts".into(),
        A::Flagged => "\\Flagged".into(),
        A::Junk => "\\Junk".into(),
        A::Sent => "\\Sent".into(),
        A::Trash => "\\Trash".into(),
        A::Extension(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

fn flag_name(f: &async_imap::types::Flag<'_>) -> Option<String> {
    use async_imap::types::Flag;
    Some(match f {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent | Flag::MayCreate => return None,
        Flag::Custom(c) => c.to_string(),
    })
}

/// Unfolded value of the first header `name` (header section only).
pub fn header_value(data: &[u8], name: &str) -> Option<String> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len().min(64 * 1024));
    let head = String::from_utf8_lossy(&data[..end]);
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

/// Wire name (modified UTF-7, `sep`) -> UTF-8 with `/` hierarchy.
pub fn utf8_name(wire: &str, sep: &str) -> String {
    if wire.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    if sep.is_empty() {
        return mutf7_decode(wire);
    }
    wire.split(sep)
        .map(mutf7_decode)
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 3501 modified UTF-7 decoding (invalid input is returned unchanged).
pub fn mutf7_decode(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('-') else {
            return s.to_string();
        };
        if j == 0 {
            out.push('&');
        } else {
            let b64 = after[..j].replace(',', "/");
            let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64) else {
                return s.to_string();
            };
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            out.push_str(&String::from_utf16_lossy(&units));
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}
