//! IMAP operations of one folder pair: LIST/LSUB, STATUS, indexing a folder (UID, FLAGS,
//! INTERNALDATE, RFC822.SIZE and the identity headers, in large UID ranges, plus the body prefix
//! for messages without Message-ID), and copying chosen messages: `FETCH BODY.PEEK[]` streamed
//! from the source into pipelined `APPEND`s (LITERAL+ when offered) carrying the same flags
//! (system flags and keywords, never `\Recent`) and INTERNALDATE. At most [`WINDOW`] messages /
//! [`WINDOW_BYTES`] are in flight, so memory stays bounded whatever the folder size.
//! Never decides what to copy (that is `index`) and never writes state (the caller does, from
//! the confirmations reported here).

use super::CMD_TIMEOUT;
use super::index::{DstMsg, SrcMsg};
use super::namespace::Namespaces;
use super::plan::{FolderInfo, Listing};
use super::session::{Conn, ImapStream, timed};
pub use super::uidset::uid_set;
use super::uidset::{self, Chunk};
use super::{BackfillError, Result};
use crate::fingerprint::{self, FpKey};
use async_imap::imap_proto::{Response, Status};
use async_imap::types::Flag;
use futures_util::TryStreamExt;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Messages in flight between the source FETCH and the destination's APPEND confirmation.
pub const WINDOW: usize = 64;
/// Bytes in flight (bodies written but not yet confirmed).
pub const WINDOW_BYTES: usize = 32 << 20;
/// Messages per MULTIAPPEND command.
pub const MULTIAPPEND_BATCH: usize = 32;
/// UIDs per UID command (FETCH, STORE, SEARCH); the command line's length bounds it too
/// ([`uid_chunks`]).
const UID_CHUNK: usize = 2000;
/// The index items of a first index FETCH (the longest one), for the line budget of its UID set.
const INDEX_ITEMS: &str =
    "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-CUTOVER-LOOP)])";
/// The identity items of an index FETCH.
const IDENTITY_ITEMS: &str = "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-CUTOVER-LOOP)])";
/// The items of a copy's FETCH.
const BODY_ITEMS: &str = "(UID BODY.PEEK[])";
/// Timeout for one step of a streamed response (one FETCH item, one APPEND reply).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

pub use super::meta::{Flags, Meta};

/// A folder's index.
#[derive(Debug, Default)]
pub struct SrcIndex {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub msgs: Vec<SrcMsg>,
    pub meta: HashMap<u32, Meta>,
    /// Fingerprints computed in this pass (for the cache).
    pub learnt: Learnt,
    /// Messages carrying cutover's delivery stamp.
    pub stamped: std::collections::HashSet<u32>,
}

impl SrcIndex {
    /// The message with this UID (`msgs` is sorted by UID).
    pub fn msg(&self, uid: u32) -> Option<&SrcMsg> {
        self.msgs
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .and_then(|i| self.msgs.get(i))
    }
}

/// LIST + LSUB of one account, with its personal namespace (NAMESPACE when offered).
/// SPECIAL-USE attributes are asked for explicitly (`RETURN (SPECIAL-USE)`) where LIST-EXTENDED
/// allows it, because some servers (Cyrus) omit them from a plain LIST.
pub async fn list(conn: &mut Conn) -> Result<Listing> {
    let ns = if conn.caps.namespace {
        namespace(conn).await?
    } else {
        None
    };
    let pattern = if conn.caps.special_use && conn.caps.list_extended {
        "* RETURN (SPECIAL-USE)"
    } else {
        "*"
    };
    timed("LIST", CMD_TIMEOUT, async {
        let mut delimiter = None;
        let mut folders = Vec::new();
        {
            let names: Vec<_> = conn
                .session
                .list(Some(""), Some(pattern))
                .await
                .map_err(|e| BackfillError::from_imap("LIST", e))?
                .try_collect()
                .await
                .map_err(|e| BackfillError::from_imap("LIST", e))?;
            for n in names {
                if delimiter.is_none() {
                    delimiter = n.delimiter().and_then(|d| d.chars().next());
                }
                folders.push(FolderInfo {
                    wire: n.name().to_string(),
                    attrs: n.attributes().iter().map(attr_name).collect(),
                    subscribed: false,
                });
            }
        }
        let subs: Vec<_> = conn
            .session
            .lsub(Some(""), Some("*"))
            .await
            .map_err(|e| BackfillError::from_imap("LSUB", e))?
            .try_collect()
            .await
            .map_err(|e| BackfillError::from_imap("LSUB", e))?;
        for s in subs {
            if let Some(f) = folders.iter_mut().find(|f| f.wire == s.name()) {
                f.subscribed = true;
            }
        }
        let (prefix, foreign) = match &ns {
            Some(ns) => {
                let p = ns.personal();
                if p.delimiter.is_some() {
                    delimiter = p.delimiter;
                }
                (p.prefix, ns.foreign_prefixes())
            }
            None => (String::new(), Vec::new()),
        };
        tracing::debug!(user = %conn.user, prefix, ?delimiter, "personal namespace");
        Ok(Listing {
            delimiter,
            folders,
            prefix,
            foreign,
        })
    })
    .await
}

/// `NAMESPACE` (RFC 2342), exchanged on the raw stream: imap-proto has no parser for it (its
/// response would wedge async-imap's decoder). `None` when the reply is not understood.
async fn namespace(conn: &mut Conn) -> Result<Option<Namespaces>> {
    const TAG: &str = "NS1";
    const MAX: usize = 64 << 10;
    let io = async {
        let s: &mut ImapStream = conn.session.get_mut();
        s.write_all(format!("{TAG} NAMESPACE\r\n").as_bytes())
            .await?;
        s.flush().await?;
        let mut found = None;
        let mut line = Vec::new();
        let mut total = 0usize;
        loop {
            // Byte by byte: nothing past our tagged reply may be consumed from the stream
            // async-imap reads next (a short response; TLS buffers underneath).
            let mut b = [0u8; 1];
            if s.read(&mut b).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during NAMESPACE",
                ));
            }
            total += 1;
            if total > MAX {
                return Err(std::io::Error::other("NAMESPACE response too long"));
            }
            line.push(b[0]);
            if b[0] != b'\n' {
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            if text.starts_with(TAG) {
                return Ok((found, text));
            }
            if let Some(n) = super::namespace::parse(&text) {
                found = Some(n);
            }
        }
    };
    let (found, done) = tokio::time::timeout(CMD_TIMEOUT, io)
        .await
        .map_err(|_| BackfillError::Timeout("NAMESPACE".into()))?
        .map_err(|e| BackfillError::Connection(format!("NAMESPACE: {e}")))?;
    if !done[TAG.len()..]
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("OK")
    {
        tracing::debug!(reply = done.trim_end(), "NAMESPACE refused");
        return Ok(None);
    }
    Ok(found)
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
        _ => String::new(),
    }
}

/// Create (and subscribe) a destination folder; "already exists" is fine.
pub async fn create(conn: &mut Conn, wire: &str, subscribe: bool) -> Result<()> {
    timed("CREATE", CMD_TIMEOUT, async {
        if let Err(e) = conn.session.create(wire).await {
            let e = BackfillError::from_imap(&format!("CREATE {wire}"), e);
            match &e {
                BackfillError::Refused(s) if s.to_ascii_uppercase().contains("EXIST") => {}
                _ => return Err(e),
            }
        }
        if subscribe {
            conn.session
                .subscribe(wire)
                .await
                .map_err(|e| BackfillError::from_imap(&format!("SUBSCRIBE {wire}"), e))?;
        }
        Ok(())
    })
    .await
}

/// Subscribe only.
pub async fn subscribe(conn: &mut Conn, wire: &str) -> Result<()> {
    timed("SUBSCRIBE", CMD_TIMEOUT, async {
        conn.session
            .subscribe(wire)
            .await
            .map_err(|e| BackfillError::from_imap(&format!("SUBSCRIBE {wire}"), e))
    })
    .await
}

/// What STATUS tells about a folder without selecting it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FolderStatus {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: u32,
    /// CONDSTORE HIGHESTMODSEQ (0 when the server has no CONDSTORE): changes with any flag change.
    pub modseq: u64,
}

/// STATUS (UIDVALIDITY UIDNEXT MESSAGES [HIGHESTMODSEQ]).
pub async fn status(conn: &mut Conn, wire: &str) -> Result<FolderStatus> {
    let items = if conn.caps.condstore {
        "(UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)"
    } else {
        "(UIDVALIDITY UIDNEXT MESSAGES)"
    };
    timed("STATUS", CMD_TIMEOUT, async {
        let m = conn
            .session
            .status(wire, items)
            .await
            .map_err(|e| BackfillError::from_imap(&format!("STATUS {wire}"), e))?;
        Ok(FolderStatus {
            uidvalidity: m.uid_validity.unwrap_or(0),
            uidnext: m.uid_next.unwrap_or(0),
            messages: m.exists,
            modseq: m.highest_modseq.unwrap_or(0),
        })
    })
    .await
}

/// Set the flags of destination messages: `(flags string, dst UIDs)` groups, in `wire`.
pub async fn store_flags(conn: &mut Conn, wire: &str, groups: &[(String, Vec<u32>)]) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    open_folder(conn, wire, false).await?;
    for (flags, uids) in groups {
        let mut uids = uids.clone();
        uids.sort_unstable();
        uids.dedup();
        let items = format!("FLAGS.SILENT {flags}");
        for chunk in uid_chunks(&uids, &items) {
            // Checked for its tagged OK: async-imap's `uid_store` stream ends at the tagged
            // reply whatever it says, so a refused STORE (NO/BAD) would pass for done.
            timed("UID STORE", CMD_TIMEOUT, async {
                conn.session
                    .run_command_and_check_ok(format!("UID STORE {} {items}", chunk.set))
                    .await
                    .map_err(|e| BackfillError::from_imap(&format!("UID STORE {wire}"), e))
            })
            .await?;
        }
    }
    Ok(())
}

/// `uids` (sorted, deduplicated) in UID sets for one command each, whose other arguments are
/// `rest`: at most [`UID_CHUNK`] UIDs and [`uidset::MAX_COMMAND_LINE`] octets a line.
pub(super) fn uid_chunks<'a>(uids: &'a [u32], rest: &str) -> Vec<Chunk<'a>> {
    uidset::chunks(uids, UID_CHUNK, uidset::set_budget(rest.len()))
}

/// The flags of a FETCH response (`\Recent` and `\*` left out).
fn flags_of<'a>(flags: impl Iterator<Item = Flag<'a>>) -> Flags {
    let names: Vec<std::borrow::Cow<'_, str>> = flags
        .filter_map(|f| match f {
            Flag::Seen => Some("\\Seen".into()),
            Flag::Answered => Some("\\Answered".into()),
            Flag::Flagged => Some("\\Flagged".into()),
            Flag::Deleted => Some("\\Deleted".into()),
            Flag::Draft => Some("\\Draft".into()),
            Flag::Recent | Flag::MayCreate => None,
            Flag::Custom(c) => Some(c),
        })
        .collect();
    Flags::from_names(names.iter().map(|n| n.as_ref()))
}

/// Since/before (epoch seconds) of a job: which INTERNALDATEs a pass considers.
pub type Window = (Option<i64>, Option<i64>);

/// The `UID SEARCH` criteria that narrow a folder to `window` on the server, widened by a day
/// on each side (servers compare dates in their own time zone); the exact filter is applied to
/// the INTERNALDATEs afterwards. `None` without bounds.
pub fn window_search(window: Window) -> Option<String> {
    const DAY: i64 = 86_400;
    let mut parts = Vec::new();
    if let Some(s) = window.0 {
        parts.push(format!("SINCE {}", crate::time::imap_search_date(s - DAY)));
    }
    if let Some(b) = window.1 {
        parts.push(format!("BEFORE {}", crate::time::imap_search_date(b + DAY)));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// EXAMINE (`read_only`) or SELECT a folder, with the command timeout.
pub(super) async fn open_folder(
    conn: &mut Conn,
    wire: &str,
    read_only: bool,
) -> Result<async_imap::types::Mailbox> {
    let what = if read_only { "EXAMINE" } else { "SELECT" };
    timed(what, CMD_TIMEOUT, async {
        let r = if read_only {
            conn.session.examine(wire).await
        } else {
            conn.session.select(wire).await
        };
        r.map_err(|e| BackfillError::from_imap(&format!("{what} {wire}"), e))
    })
    .await
}

/// Index a folder: EXAMINE, then metadata + identity headers of every message (of those the
/// server finds in `window`), then the body prefix of those without Message-ID. `with_meta`
/// keeps flags/dates for copying (source side).
async fn index_folder(
    conn: &mut Conn,
    wire: &str,
    with_meta: bool,
    window: Window,
    known: &Known,
) -> Result<IndexRaw> {
    let mb = open_folder(conn, wire, true).await?;
    let mut raw = IndexRaw {
        uidvalidity: mb.uid_validity.unwrap_or(0),
        uidnext: mb.uid_next.unwrap_or(0),
        ..Default::default()
    };
    // Fingerprints cached for another UIDVALIDITY mean nothing here.
    let empty = Known::default();
    let known = if known.uidvalidity == Some(raw.uidvalidity) {
        known
    } else {
        &empty
    };
    if mb.exists == 0 {
        return Ok(raw);
    }
    let (sets, expected) = match window_search(window) {
        None => (vec!["1:*".to_string()], mb.exists as usize),
        Some(criteria) => {
            let found = timed("UID SEARCH", CMD_TIMEOUT, async {
                conn.session
                    .uid_search(&criteria)
                    .await
                    .map_err(|e| BackfillError::from_imap(&format!("UID SEARCH {wire}"), e))
            })
            .await?;
            let mut uids: Vec<u32> = found.into_iter().collect();
            uids.sort_unstable();
            let sets = uid_chunks(&uids, INDEX_ITEMS)
                .into_iter()
                .map(|c| c.set)
                .collect();
            (sets, uids.len())
        }
    };
    let mut needs_prefix: Vec<usize> = Vec::new();
    for set in &sets {
        fetch_index_items(
            conn,
            wire,
            set,
            with_meta,
            known,
            &mut raw,
            &mut needs_prefix,
        )
        .await?;
    }
    if raw.items.len() < expected {
        // A cut-short response (BYE ends the stream quietly) or a concurrent change: an
        // incomplete index would copy duplicates or skip messages, so retry instead.
        return Err(BackfillError::Connection(format!(
            "index of {wire}: {} of {expected} messages returned",
            raw.items.len(),
        )));
    }
    if !raw.needs_header.is_empty() {
        fetch_identities(conn, wire, &mut raw, &mut needs_prefix).await?;
    }
    if !needs_prefix.is_empty() {
        fingerprint_by_prefix(conn, wire, &mut raw, &needs_prefix).await?;
    }
    if let Some(it) = raw.items.iter().find(|it| it.fp.is_none()) {
        return Err(BackfillError::Connection(format!(
            "index of {wire}: no identity returned for UID {}",
            it.uid
        )));
    }
    Ok(raw)
}

/// One `UID FETCH` of index items for the UIDs in `set`, appended to `raw`; the positions of
/// messages without Message-ID go to `needs_prefix`.
async fn fetch_index_items(
    conn: &mut Conn,
    wire: &str,
    set: &str,
    with_meta: bool,
    known: &Known,
    raw: &mut IndexRaw,
    needs_prefix: &mut Vec<usize>,
) -> Result<()> {
    // With fingerprints known from an earlier pass, the cheap items only (the server answers
    // them from its index); identity headers follow for the messages not known yet.
    let query = if known.is_empty() {
        INDEX_ITEMS
    } else {
        "(UID FLAGS INTERNALDATE RFC822.SIZE)"
    };
    let mut stream = conn
        .session
        .uid_fetch(set, query)
        .await
        .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
    loop {
        let next = tokio::time::timeout(STEP_TIMEOUT, stream.try_next())
            .await
            .map_err(|_| BackfillError::Timeout(format!("FETCH index of {wire}")))?
            .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
        let Some(f) = next else { break };
        let Some(uid) = f.uid else { continue };
        let (fp, has_id, stamped) = match known.map.get(&uid) {
            Some((fp, stamped)) => (Some(*fp), true, *stamped),
            None if !known.is_empty() => {
                raw.needs_header.push(raw.items.len());
                (None, true, false)
            }
            None => identity(f.header().unwrap_or_default()),
        };
        if !known.map.contains_key(&uid) {
            raw.learn.push(raw.items.len());
        }
        let date = f.internal_date();
        let meta = with_meta.then(|| {
            let date = date.map(|d| {
                let tz = i16::try_from(d.offset().local_minus_utc() / 60).unwrap_or(0);
                (d.timestamp(), tz)
            });
            Meta::new(flags_of(f.flags()), date)
        });
        if !has_id {
            needs_prefix.push(raw.items.len());
        }
        raw.items.push(RawItem {
            uid,
            fp,
            size: f.size.unwrap_or(0),
            date: date.map(|d| d.timestamp()).unwrap_or(0),
            stamped,
            meta,
        });
    }
    Ok(())
}

/// Fingerprint key (when the header has a Message-ID), whether it has one, and cutover's stamp.
fn identity(header: &[u8]) -> (Option<FpKey>, bool, bool) {
    let stamped = fingerprint::has_header(header, "X-Cutover-Loop");
    if fingerprint::has_message_id(header) {
        (Some(fingerprint::fingerprint(header).key()), true, stamped)
    } else {
        (None, false, stamped)
    }
}

/// The identity headers of the messages at `raw.needs_header` (not known from an earlier pass).
async fn fetch_identities(
    conn: &mut Conn,
    wire: &str,
    raw: &mut IndexRaw,
    needs_prefix: &mut Vec<usize>,
) -> Result<()> {
    let pos: HashMap<u32, usize> = raw
        .needs_header
        .iter()
        .map(|&i| (raw.items[i].uid, i))
        .collect();
    let mut uids: Vec<u32> = pos.keys().copied().collect();
    uids.sort_unstable();
    let mut seen = 0usize;
    for chunk in uid_chunks(&uids, IDENTITY_ITEMS) {
        let mut stream = conn
            .session
            .uid_fetch(chunk.set, IDENTITY_ITEMS)
            .await
            .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
        loop {
            let next = tokio::time::timeout(STEP_TIMEOUT, stream.try_next())
                .await
                .map_err(|_| BackfillError::Timeout(format!("FETCH identities of {wire}")))?
                .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
            let Some(f) = next else { break };
            let Some(&i) = f.uid.as_ref().and_then(|u| pos.get(u)) else {
                continue;
            };
            let (fp, has_id, stamped) = identity(f.header().unwrap_or_default());
            raw.items[i].fp = fp;
            raw.items[i].stamped = stamped;
            if !has_id {
                needs_prefix.push(i);
            }
            seen += 1;
        }
    }
    if seen < pos.len() {
        return Err(BackfillError::Connection(format!(
            "index of {wire}: {seen} of {} identities returned",
            pos.len()
        )));
    }
    Ok(())
}

/// Second index pass for the messages at `needs_prefix` (no Message-ID): fingerprint them by
/// their identity headers and body prefix, fetched in UID chunks.
async fn fingerprint_by_prefix(
    conn: &mut Conn,
    wire: &str,
    raw: &mut IndexRaw,
    needs_prefix: &[usize],
) -> Result<()> {
    let pos: HashMap<u32, usize> = needs_prefix
        .iter()
        .map(|&i| (raw.items[i].uid, i))
        .collect();
    let mut uids: Vec<u32> = pos.keys().copied().collect();
    uids.sort_unstable();
    let q = format!(
        "(UID BODY.PEEK[HEADER.FIELDS ({})] BODY.PEEK[TEXT]<0.{}>)",
        fingerprint::HEADER_FIELDS.join(" "),
        fingerprint::BODY_PREFIX * 2
    );
    for chunk in uid_chunks(&uids, &q) {
        let mut stream = conn
            .session
            .uid_fetch(chunk.set, &q)
            .await
            .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
        loop {
            let next = tokio::time::timeout(STEP_TIMEOUT, stream.try_next())
                .await
                .map_err(|_| BackfillError::Timeout(format!("FETCH prefixes of {wire}")))?
                .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
            let Some(f) = next else { break };
            let Some(uid) = f.uid else { continue };
            let Some(&i) = pos.get(&uid) else { continue };
            let mut buf = f.header().unwrap_or_default().to_vec();
            if !buf.ends_with(b"\r\n\r\n") && !buf.ends_with(b"\n\n") {
                buf.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(f.text().unwrap_or_default());
            raw.items[i].fp = Some(fingerprint::fingerprint(&buf).key());
        }
    }
    if needs_prefix.iter().any(|&i| raw.items[i].fp.is_none()) {
        return Err(BackfillError::Connection(format!(
            "index of {wire}: body prefixes missing from the FETCH response"
        )));
    }
    Ok(())
}

#[derive(Default)]
struct IndexRaw {
    uidvalidity: u32,
    uidnext: u32,
    items: Vec<RawItem>,
    /// Positions of items whose identity headers are still to fetch.
    needs_header: Vec<usize>,
    /// Positions of items fingerprinted in this pass (for the caller's cache).
    learn: Vec<usize>,
}

impl IndexRaw {
    /// The fingerprints learnt in this pass, for [`Known`] next time.
    fn learnt(&self) -> Learnt {
        Learnt {
            uidvalidity: self.uidvalidity,
            items: self
                .learn
                .iter()
                .filter_map(|&i| {
                    let it = &self.items[i];
                    Some((it.uid, it.fp?, it.stamped))
                })
                .collect(),
        }
    }
}

/// Fingerprints of a folder's messages known from earlier passes: UID → (fingerprint key,
/// stamped), valid for one UIDVALIDITY. A message's bytes never change under its UID, so its
/// identity need not be fetched twice.
#[derive(Debug, Default)]
pub struct Known {
    pub uidvalidity: Option<u32>,
    pub map: HashMap<u32, (FpKey, bool)>,
}

impl Known {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What an index learnt: (UIDVALIDITY, [(uid, fingerprint key, stamped)]).
#[derive(Debug, Default)]
pub struct Learnt {
    pub uidvalidity: u32,
    pub items: Vec<(u32, FpKey, bool)>,
}

struct RawItem {
    uid: u32,
    /// `None` until the identity headers (or body prefix) were fetched.
    fp: Option<FpKey>,
    size: u32,
    date: i64,
    stamped: bool,
    meta: Option<Meta>,
}

/// Index the source folder. Messages at or below `watermark` are marked done; `window`
/// (since, before as epoch seconds) filters by INTERNALDATE.
pub async fn index_source(
    conn: &mut Conn,
    wire: &str,
    watermark: u32,
    window: Window,
    known: &Known,
) -> Result<SrcIndex> {
    let raw = index_folder(conn, wire, true, window, known).await?;
    let mut out = SrcIndex {
        uidvalidity: raw.uidvalidity,
        uidnext: raw.uidnext,
        learnt: raw.learnt(),
        ..Default::default()
    };
    // Sized once: a grown map or vector holds up to twice the room it needs.
    out.msgs.reserve_exact(raw.items.len());
    out.meta.reserve(raw.items.len());
    for it in raw.items {
        if window.0.is_some_and(|s| it.date < s) || window.1.is_some_and(|b| it.date >= b) {
            continue;
        }
        if let Some(m) = it.meta {
            out.meta.insert(it.uid, m);
        }
        if it.stamped {
            out.stamped.insert(it.uid);
        }
        out.msgs.push(SrcMsg {
            uid: it.uid,
            fp: it.fp.unwrap_or_default(),
            size: it.size,
            date: it.date,
            done: it.uid <= watermark,
        });
    }
    out.msgs.sort_by_key(|m| m.uid);
    Ok(out)
}

/// The destination index of a folder.
#[derive(Debug, Default)]
pub struct DstIndex {
    pub uidvalidity: u32,
    /// Fingerprints computed in this pass (for the cache).
    pub learnt: Learnt,
    pub msgs: Vec<DstMsg>,
    /// uid → flags.
    pub flags: HashMap<u32, Flags>,
}

/// Index the destination folder.
pub async fn index_destination(conn: &mut Conn, wire: &str, known: &Known) -> Result<DstIndex> {
    let raw = index_folder(conn, wire, true, (None, None), known).await?;
    let mut out = DstIndex {
        uidvalidity: raw.uidvalidity,
        learnt: raw.learnt(),
        ..Default::default()
    };
    for it in raw.items {
        if let Some(m) = it.meta {
            out.flags.insert(it.uid, m.flags);
        }
        out.msgs.push(DstMsg {
            uid: it.uid,
            fp: it.fp.unwrap_or_default(),
            size: it.size,
            date: it.date,
            stamped: it.stamped,
        });
    }
    Ok(out)
}

/// A gentler APPEND for a message the destination refused as it was: at `level` 1 only the
/// keywords the destination folder already defines (`defined`, from its FLAGS: a per-mailbox
/// keyword limit refuses new ones), at level 2 no keywords; at both, an INTERNALDATE before
/// 1970 (which some servers refuse) becomes 1970-01-01 00:00:01 UTC ([`Meta::at_epoch`]). `None` when nothing would change, else
/// the new metadata and what was given up (for the report).
pub fn degrade(meta: &Meta, defined: &[String], level: u8) -> Option<(Meta, String)> {
    let keep = |f: &&str| {
        f.starts_with('\\') || (level < 2 && defined.iter().any(|d| d.eq_ignore_ascii_case(f)))
    };
    let dropped: Vec<&str> = meta.flags.names().filter(|f| !keep(f)).collect();
    let old_date = meta.before_1970();
    if dropped.is_empty() && !old_date {
        return None;
    }
    let mut what = Vec::new();
    if !dropped.is_empty() {
        what.push(format!("stored without keyword(s) {}", dropped.join(" ")));
    }
    let mut out = meta.clone();
    if old_date {
        what.push(format!(
            "INTERNALDATE {} stored as 01-Jan-1970 00:00:01 +0000",
            meta.idate().unwrap_or_default()
        ));
        out = out.at_epoch();
    }
    out.flags = Flags::from_names(meta.flags.names().filter(keep));
    Some((out, what.join("; ")))
}

/// The keywords a destination folder defines (its FLAGS response), for [`degrade`].
pub async fn defined_keywords(conn: &mut Conn, wire: &str) -> Result<Vec<String>> {
    let mb = open_folder(conn, wire, true).await?;
    Ok(mb
        .flags
        .iter()
        .filter_map(|f| match f {
            Flag::Custom(c) if !c.starts_with('\\') => Some(c.to_string()),
            _ => None,
        })
        .collect())
}

/// Destination UIDs of copied messages, from `APPENDUID` (RFC 4315): (source UID, destination
/// UID) pairs in the destination folder of UIDVALIDITY `uidvalidity`. Lets the caller remember
/// the copies' fingerprints without fetching them back.
#[derive(Debug, Default)]
pub struct Assigned {
    pub uidvalidity: u32,
    pub pairs: Vec<(u32, u32)>,
}

/// The outcome of one APPEND.
#[derive(Clone, Debug)]
pub enum Outcome {
    Copied {
        bytes: u64,
    },
    /// The destination refused this message (reply text); other messages go on.
    Refused(String),
    /// A MULTIAPPEND batch holding this message was refused as a whole (none appended): the
    /// caller retries these one by one to find the culprit.
    RefusedBatch(String),
    /// The source no longer has it (expunged meanwhile).
    Vanished,
}

/// One plain APPEND (no pipelining): copied, or refused with the server's reply; connection
/// trouble and throttling are errors.
pub async fn append_one(dst: &mut Conn, dst_wire: &str, m: &Meta, body: &[u8]) -> Result<Outcome> {
    let r = tokio::time::timeout(
        STEP_TIMEOUT,
        dst.session
            .append(dst_wire, Some(&m.flags.list()), m.idate().as_deref(), body),
    )
    .await
    .map_err(|_| BackfillError::Timeout(format!("APPEND to {dst_wire}")))?;
    match r {
        Ok(()) => Ok(Outcome::Copied {
            bytes: body.len() as u64,
        }),
        // async-imap reports a tagged NO/BAD in place of the literal's "+" (a server refusing an
        // empty or oversized message up front) and a closed connection alike, without the
        // reply: a NOOP tells them apart.
        Err(async_imap::error::Error::Append) => {
            timed("NOOP", CMD_TIMEOUT, async {
                dst.session
                    .noop()
                    .await
                    .map_err(|e| BackfillError::from_imap("NOOP after a refused APPEND", e))
            })
            .await?;
            Ok(Outcome::Refused(format!(
                "APPEND {dst_wire}: the server refused the command before the message was sent ({} bytes{})",
                body.len(),
                if body.is_empty() { ", empty" } else { "" }
            )))
        }
        Err(e) => match BackfillError::from_imap(&format!("APPEND {dst_wire}"), e) {
            BackfillError::Refused(s) => Ok(Outcome::Refused(s)),
            other => Err(other),
        },
    }
}

/// The whole message `uid` of `wire` (`None`: no longer there).
pub async fn fetch_body(conn: &mut Conn, wire: &str, uid: u32) -> Result<Option<Vec<u8>>> {
    open_folder(conn, wire, true).await?;
    let mut stream = conn
        .session
        .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
        .await
        .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
    let mut out = None;
    loop {
        let next = tokio::time::timeout(STEP_TIMEOUT, stream.try_next())
            .await
            .map_err(|_| BackfillError::Timeout(format!("FETCH body of {wire}")))?
            .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {wire}"), e))?;
        let Some(f) = next else { break };
        if f.uid == Some(uid)
            && let Some(b) = f.body()
        {
            out = Some(b.to_vec());
        }
    }
    Ok(out)
}

/// Copy `uids` (ascending) from the selected-or-not source folder `src_wire` to `dst_wire`.
/// `confirm(uid, outcome)` is called once for each UID when its fate is final (any order).
/// Returns early with an error on connection trouble or throttling; everything confirmed so
/// far stays confirmed.
#[allow(clippy::too_many_arguments)]
pub async fn copy_messages(
    src: &mut Conn,
    dst: &mut Conn,
    src_wire: &str,
    dst_wire: &str,
    uids: &[u32],
    meta: &HashMap<u32, Meta>,
    (multiappend, transform): (bool, &super::transform::Transform),
    confirm: &mut (dyn FnMut(u32, Outcome) + Send),
) -> Result<Assigned> {
    if uids.is_empty() {
        return Ok(Assigned::default());
    }
    open_folder(src, src_wire, true).await?;
    let pipelined = dst.caps.literal_plus;
    let batch = if dst.caps.multiappend && multiappend {
        MULTIAPPEND_BATCH
    } else {
        1
    };
    let mut app = Appender::new(dst_wire, batch);
    for Chunk { uids: chunk, set } in uid_chunks(uids, BODY_ITEMS) {
        let mut seen: std::collections::HashSet<u32> = std::collections::HashSet::new();
        {
            let mut stream = src
                .session
                .uid_fetch(set, BODY_ITEMS)
                .await
                .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {src_wire}"), e))?;
            loop {
                let next = tokio::time::timeout(STEP_TIMEOUT, stream.try_next())
                    .await
                    .map_err(|_| BackfillError::Timeout(format!("FETCH bodies of {src_wire}")))?
                    .map_err(|e| BackfillError::from_imap(&format!("UID FETCH {src_wire}"), e))?;
                let Some(f) = next else { break };
                let Some(uid) = f.uid else { continue };
                let Some(body) = f.body() else { continue };
                if chunk.binary_search(&uid).is_err() {
                    continue;
                }
                let m = meta.get(&uid).cloned().unwrap_or_default();
                seen.insert(uid);
                let body = &*transform.apply(uid, body);
                if pipelined {
                    app.send(dst, uid, &m, body).await?;
                    while app.over_window() {
                        app.complete_one(dst, confirm).await?;
                    }
                } else {
                    match append_one(dst, dst_wire, &m, body).await? {
                        Outcome::Copied { bytes } => app.done_now(uid, bytes),
                        Outcome::Refused(s) | Outcome::RefusedBatch(s) => app.refused_now(uid, s),
                        Outcome::Vanished => {}
                    }
                    app.release(confirm);
                }
            }
        }
        vanished_or_cut_short(src, src_wire, chunk, &seen, &mut app).await?;
        app.release(confirm);
    }
    app.close_batch(dst).await?;
    while app.in_flight() > 0 {
        app.complete_one(dst, confirm).await?;
    }
    app.release(confirm);
    Ok(app.assigned)
}

/// UIDs of `chunk` the FETCH did not return (not in `seen`): expunged meanwhile (reported as
/// vanished), or a response cut short (a BYE ends async-imap's stream quietly: an error, so
/// the pass retries). Only a fresh UID SEARCH can tell.
async fn vanished_or_cut_short(
    src: &mut Conn,
    src_wire: &str,
    chunk: &[u32],
    seen: &std::collections::HashSet<u32>,
    app: &mut Appender,
) -> Result<()> {
    let unseen: Vec<u32> = chunk
        .iter()
        .copied()
        .filter(|v| !seen.contains(v))
        .collect();
    if !unseen.is_empty() {
        let mut still = std::collections::HashSet::new();
        for c in uid_chunks(&unseen, "UID ") {
            still.extend(
                timed("UID SEARCH", CMD_TIMEOUT, async {
                    src.session
                        .uid_search(format!("UID {}", c.set))
                        .await
                        .map_err(|e| BackfillError::from_imap(&format!("UID SEARCH {src_wire}"), e))
                })
                .await?,
            );
        }
        if unseen.iter().any(|u| still.contains(u)) {
            return Err(BackfillError::Connection(format!(
                "FETCH from {src_wire} ended early ({} message(s) not returned)",
                unseen.len()
            )));
        }
        for v in unseen {
            app.vanished(v);
        }
    }
    Ok(())
}

/// The UIDs of an APPENDUID set, in order (bounded by the batch it answers).
fn expand_uid_set(set: &[async_imap::imap_proto::rfc4315::UidSetMember]) -> Vec<u32> {
    use async_imap::imap_proto::rfc4315::UidSetMember as M;
    let mut out = Vec::new();
    for m in set {
        match m {
            M::Uid(u) => out.push(*u),
            M::UidRange(r) => {
                if r.end().saturating_sub(*r.start()) as usize > MULTIAPPEND_BATCH {
                    return Vec::new();
                }
                out.extend(r.clone());
            }
        }
    }
    out
}

/// Pipelined APPENDs on one destination connection: raw commands with LITERAL+, several
/// messages per command when the server offers MULTIAPPEND (one transaction, and one fsync,
/// per batch), confirmations released to the caller as they become final.
struct Appender {
    wire_quoted: String,
    next_tag: u64,
    /// Messages per APPEND command (1 without MULTIAPPEND).
    batch_max: usize,
    /// The command being written: (tag, uids+bytes); terminated by `close_batch`.
    open: Option<(String, Vec<(u32, usize)>)>,
    /// Commands sent and not yet answered, in send order.
    pending: VecDeque<(String, Vec<(u32, usize)>)>,
    msgs_in_flight: usize,
    bytes_in_flight: usize,
    /// Fates: uid → outcome (None = still in flight).
    fates: VecDeque<(u32, Option<Outcome>)>,
    /// What APPENDUID reported.
    assigned: Assigned,
}

/// Bytes per MULTIAPPEND command.
const BATCH_BYTES: usize = 8 << 20;

pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Appender {
    fn new(dst_wire: &str, batch_max: usize) -> Self {
        Appender {
            wire_quoted: quote(dst_wire),
            next_tag: 0,
            batch_max: batch_max.max(1),
            open: None,
            pending: VecDeque::new(),
            msgs_in_flight: 0,
            bytes_in_flight: 0,
            fates: VecDeque::new(),
            assigned: Assigned::default(),
        }
    }
    fn in_flight(&self) -> usize {
        self.msgs_in_flight
    }
    fn over_window(&self) -> bool {
        self.pending.len() > 1
            && (self.msgs_in_flight >= WINDOW || self.bytes_in_flight >= WINDOW_BYTES)
    }
    fn vanished(&mut self, uid: u32) {
        if !self.fates.iter().any(|(u, _)| *u == uid) {
            self.fates.push_back((uid, Some(Outcome::Vanished)));
        }
    }
    fn done_now(&mut self, uid: u32, bytes: u64) {
        self.fates.push_back((uid, Some(Outcome::Copied { bytes })));
    }
    fn refused_now(&mut self, uid: u32, reply: String) {
        self.fates.push_back((uid, Some(Outcome::Refused(reply))));
    }
    /// Hand every final fate to the caller.
    fn release(&mut self, confirm: &mut (dyn FnMut(u32, Outcome) + Send)) {
        let mut rest = VecDeque::new();
        for (u, o) in self.fates.drain(..) {
            match o {
                Some(o) => confirm(u, o),
                None => rest.push_back((u, None)),
            }
        }
        self.fates = rest;
    }

    /// Write (and with `flush`, push out any bytes TLS still buffers: needed before waiting
    /// for replies, wasteful per message).
    async fn write(dst: &mut Conn, parts: &[&[u8]], flush: bool) -> Result<()> {
        let io = async {
            let s: &mut ImapStream = dst.session.get_mut();
            for p in parts {
                s.write_all(p).await?;
            }
            if flush {
                s.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::time::timeout(STEP_TIMEOUT, io)
            .await
            .map_err(|_| BackfillError::Timeout("APPEND write".into()))?
            .map_err(|e| BackfillError::Connection(format!("APPEND write: {e}")))
    }

    async fn send(&mut self, dst: &mut Conn, uid: u32, m: &Meta, body: &[u8]) -> Result<()> {
        let mut head = String::new();
        if self.open.is_none() {
            self.next_tag += 1;
            let tag = format!("C{}", self.next_tag);
            head.push_str(&format!("{tag} APPEND {}", self.wire_quoted));
            self.open = Some((tag, Vec::new()));
        }
        head.push(' ');
        head.push_str(&m.flags.list());
        if let Some(idate) = m.idate() {
            head.push(' ');
            head.push_str(&idate);
        }
        // NUL bytes may only travel in a literal8 (RFC 3516), where the server offers BINARY.
        let literal8 = if dst.caps.binary && body.contains(&0) {
            "~"
        } else {
            ""
        };
        head.push_str(&format!(" {literal8}{{{}+}}\r\n", body.len()));
        Self::write(dst, &[head.as_bytes(), body], false).await?;
        self.msgs_in_flight += 1;
        self.bytes_in_flight += body.len();
        self.fates.push_back((uid, None));
        let full = match &mut self.open {
            Some((_, v)) => {
                v.push((uid, body.len()));
                v.len() >= self.batch_max || v.iter().map(|x| x.1).sum::<usize>() >= BATCH_BYTES
            }
            None => false,
        };
        if full {
            self.close_batch(dst).await?;
        }
        Ok(())
    }

    /// Terminate the command being written.
    async fn close_batch(&mut self, dst: &mut Conn) -> Result<()> {
        if let Some(b) = self.open.take() {
            Self::write(dst, &[b"\r\n"], true).await?;
            self.pending.push_back(b);
        }
        Ok(())
    }

    /// Read responses until the oldest pending APPEND command is answered.
    async fn complete_one(
        &mut self,
        dst: &mut Conn,
        confirm: &mut (dyn FnMut(u32, Outcome) + Send),
    ) -> Result<()> {
        if self.pending.is_empty() {
            self.close_batch(dst).await?;
        }
        let Some((tag, batch)) = self.pending.front().cloned() else {
            return Ok(());
        };
        loop {
            let r = tokio::time::timeout(STEP_TIMEOUT, dst.session.read_response())
                .await
                .map_err(|_| BackfillError::Timeout("APPEND reply".into()))?
                .map_err(|e| BackfillError::Connection(format!("APPEND reply: {e}")))?;
            let Some(r) = r else {
                return Err(BackfillError::Connection(
                    "destination closed the connection during APPEND".into(),
                ));
            };
            match r.parsed() {
                Response::Done {
                    tag: t,
                    status,
                    outcome,
                } if t.0 == tag => {
                    let text = format!(
                        "{status:?} {}{}",
                        outcome
                            .code
                            .as_ref()
                            .map(|c| format!("[{c:?}] "))
                            .unwrap_or_default(),
                        outcome.information.as_deref().unwrap_or("")
                    );
                    self.pending.pop_front();
                    for (_, n) in &batch {
                        self.msgs_in_flight = self.msgs_in_flight.saturating_sub(1);
                        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(*n);
                    }
                    if *status != Status::Ok
                        && let Some(hint) = super::throttle::hint(&text)
                    {
                        // Not appended: leave them unconfirmed; the caller retries.
                        self.forget_in_flight();
                        return Err(BackfillError::Throttled {
                            reply: format!("APPEND: {text}"),
                            hint,
                        });
                    }
                    if *status == Status::Ok
                        && let Some(async_imap::imap_proto::ResponseCode::AppendUid(uv, set)) =
                            &outcome.code
                    {
                        let dst_uids = expand_uid_set(set);
                        if dst_uids.len() == batch.len() {
                            self.assigned.uidvalidity = *uv;
                            self.assigned
                                .pairs
                                .extend(batch.iter().map(|(u, _)| *u).zip(dst_uids));
                        }
                    }
                    for (uid, n) in &batch {
                        let fate = if *status == Status::Ok {
                            Outcome::Copied { bytes: *n as u64 }
                        } else if batch.len() > 1 {
                            Outcome::RefusedBatch(format!("APPEND: {text}"))
                        } else {
                            Outcome::Refused(format!("APPEND: {text}"))
                        };
                        if let Some(f) = self.fates.iter_mut().find(|(u, _)| u == uid) {
                            f.1 = Some(fate);
                        }
                    }
                    self.release(confirm);
                    return Ok(());
                }
                Response::Done { .. } => {}
                Response::Data {
                    status: Status::Bye,
                    outcome,
                } => {
                    let text = outcome.information.as_deref().unwrap_or("").to_string();
                    self.forget_in_flight();
                    if let Some(hint) = super::throttle::hint(&text) {
                        return Err(BackfillError::Throttled {
                            reply: format!("BYE {text}"),
                            hint,
                        });
                    }
                    return Err(BackfillError::Connection(format!("BYE {text}")));
                }
                _ => {}
            }
        }
    }

    /// After a failure, forget in-flight APPENDs (the caller drops the connection; a message
    /// appended anyway is recognised by fingerprint on the retry).
    fn forget_in_flight(&mut self) {
        self.pending.clear();
        self.open = None;
        self.msgs_in_flight = 0;
        self.bytes_in_flight = 0;
        self.fates.retain(|(_, f)| f.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_command_lines_stay_short() {
        let sparse: Vec<u32> = (1..=20_000).step_by(2).collect();
        let items = "FLAGS.SILENT (\\Seen)";
        for c in uid_chunks(&sparse, items) {
            let line = format!("A0001 UID STORE {} {items}\r\n", c.set);
            assert!(line.len() <= uidset::MAX_COMMAND_LINE, "{}", line.len());
        }
    }

    #[test]
    fn flags() {
        let f = vec![
            Flag::Seen,
            Flag::Recent,
            Flag::Custom("$Forwarded".into()),
            Flag::Custom("\\Recent".into()),
        ];
        assert_eq!(flags_of(f.into_iter()).list(), "(\\Seen $Forwarded)");
    }

    #[test]
    fn degrades_keywords_then_dates() {
        // 01-Jan-1965 10:00:00 +0100
        let m = Meta::new(Flags::parse("(\\Seen $Old $New)"), Some((-157_770_000, 60)));
        let defined = vec!["$old".to_string()];
        let (m1, what1) = degrade(&m, &defined, 1).unwrap_or_else(|| (m.clone(), String::new()));
        assert_eq!(m1.flags.list(), "(\\Seen $Old)");
        assert_eq!(
            m1.idate().as_deref(),
            Some("\"01-Jan-1970 00:00:01 +0000\"")
        );
        assert!(what1.contains("$New") && what1.contains("1965"), "{what1}");
        let (m2, _) = degrade(&m1, &defined, 2).unwrap_or_else(|| (m1.clone(), String::new()));
        assert_eq!(m2.flags.list(), "(\\Seen)");
        let plain = Meta::new(Flags::parse("(\\Seen)"), Some((1_704_103_200, 0)));
        assert!(degrade(&plain, &[], 2).is_none());
    }

    #[test]
    fn window_searches() {
        assert_eq!(window_search((None, None)), None);
        assert_eq!(
            window_search((Some(1_704_067_200), None)).as_deref(),
            Some("SINCE 31-Dec-2023")
        );
        assert_eq!(
            window_search((Some(1_704_067_200), Some(1_735_689_600))).as_deref(),
            Some("SINCE 31-Dec-2023 BEFORE 2-Jan-2025")
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a \"b\\"), "\"a \\\"b\\\\\"");
    }
}
