//! Per-(mailbox, folder) backfill state in sled: the UIDVALIDITY of both sides and the source
//! watermark (highest source UID handled), at `<state_dir>/backfill/<job>[.shardI-N]/state.sled`.
//! The watermark only moves after the destination confirmed every APPEND at or below it.
//! Also: the daily upload counters, the UIDs given to Maildir messages, and a cache of message
//! fingerprints per folder and UIDVALIDITY (so a pass fetches identity headers only for
//! messages it has not seen). Owns nothing else (no IMAP, no reports).
//!
//! Fleet mode (`backfill worker`): the folder states, the daily counters and the Gmail
//! copies live in the shared PostgreSQL instead (tables `backfill_folder`, `backfill_bytes`,
//! `backfill_gmail`), so any worker resumes a mailbox where another left it. The fingerprint
//! cache and the Maildir UIDs stay local files (a cache, and a Maildir seen by another worker
//! gets its own UIDVALIDITY there, which the runner handles like any UIDVALIDITY change).

use crate::fingerprint::FpKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("backfill state {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("backfill state: {0}")]
    Db(#[from] sled::Error),
    #[error("backfill state: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("backfill state: {0}")]
    Pg(#[from] crate::pgdb::PgError),
    #[error("backfill fingerprint cache {path}: {source}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What an earlier pass left for one folder pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    pub src_uidvalidity: u32,
    pub dst_uidvalidity: u32,
    /// Every source UID at or below this was copied, recognised or skipped.
    pub done_uid: u32,
    /// The destination folder (wire name) it was copied to.
    pub dst_wire: String,
    /// Verdict and counts of the last pass that examined the folder (for no-op reports).
    #[serde(default)]
    pub converged: bool,
    #[serde(default)]
    pub src_count: u64,
    #[serde(default)]
    pub dst_count: u64,
    /// Source HIGHESTMODSEQ when the folder was last examined (0: no CONDSTORE).
    #[serde(default)]
    pub src_modseq: u64,
}

/// `s` as one file name: ASCII letters, digits, `-`, `_` and `.` kept, anything else `_`;
/// never empty, `.` or `..`.
pub fn safe_name(s: &str) -> String {
    if s.chars().all(|c| c == '.') {
        return format!("_{s}");
    }
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The state directory of a job (and shard).
pub fn job_dir(state_dir: &Path, job: &str, shard: Option<(u32, u32)>) -> PathBuf {
    let safe = safe_name(job);
    let name = match shard {
        Some((i, n)) => format!("{safe}.shard{i}-{n}"),
        None => safe,
    };
    state_dir.join("backfill").join(name)
}

/// Where folder states, counters and Gmail copies are kept.
#[derive(Clone)]
enum Store {
    /// `<job dir>/state.sled`.
    Local(sled::Db),
    /// The fleet's PostgreSQL, rows of job `job`.
    Shared { db: crate::pgdb::PgDb, job: String },
}

/// The state store of one job run.
#[derive(Clone)]
pub struct State {
    store: Store,
    /// `<job dir>/fingerprints/`: the fingerprint cache, one flat file per folder (kept out of
    /// sled: hundreds of thousands of small inserts grow sled's memory far beyond its cache).
    fp_dir: PathBuf,
    /// `<job dir>/maildir-uids/`: the UIDs given to Maildir messages, one file per folder.
    uid_dir: PathBuf,
}

fn cache_err(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Cache {
        path: path.display().to_string(),
        source,
    }
}

/// A Maildir UID file as read: UIDVALIDITY (`None`: no usable file), key → UID, and whether
/// where its last whole line ends (a torn line after it, from a crash while appending, is
/// ignored and cut off at the next append: its UID was never reported durable).
type UidFile = (Option<u32>, std::collections::HashMap<String, u32>, u64);

fn read_uids(path: &Path) -> Result<UidFile, StateError> {
    let mut map = std::collections::HashMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, map, 0)),
        Err(e) => return Err(cache_err(path)(e)),
    };
    let whole = text.rfind('\n').map_or(0, |i| i as u64 + 1);
    let mut lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
    let uv = lines
        .next()
        .and_then(|l| l.trim_end().strip_prefix("uidvalidity "))
        .and_then(|v| v.parse().ok());
    if uv.is_none() {
        return Ok((None, map, 0));
    }
    for l in lines {
        if let Some((uid, key)) = l.trim_end_matches('\n').split_once(' ')
            && let Ok(uid) = uid.parse()
        {
            map.insert(key.to_string(), uid);
        }
    }
    Ok((uv, map, whole))
}

/// [`State::maildir_uids`] on the blocking pool.
fn assign_uids(path: &Path, keys: &[String]) -> Result<(u32, Vec<u32>), StateError> {
    use std::io::Write as _;
    let io = cache_err(path);
    let (uv, map, whole) = read_uids(path)?;
    let mut next = map.values().copied().max().unwrap_or(0) + 1;
    let mut buf = String::new();
    let uidvalidity = uv.unwrap_or_else(|| {
        let now = crate::time::unix_secs(std::time::SystemTime::now());
        let uv = u32::try_from(now).unwrap_or(u32::MAX).max(1);
        buf.push_str(&format!("uidvalidity {uv}\n"));
        uv
    });
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        match map.get(k) {
            Some(&uid) => out.push(uid),
            None if k.contains(['\n', '\r']) => out.push(0),
            None => {
                buf.push_str(&format!("{next} {k}\n"));
                out.push(next);
                next += 1;
            }
        }
    }
    if buf.is_empty() {
        return Ok((uidvalidity, out));
    }
    let dir = path.parent().unwrap_or(path);
    std::fs::create_dir_all(dir).map_err(&io)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(uv.is_none())
        .open(path)
        .map_err(&io)?;
    if uv.is_some() {
        f.set_len(whole).map_err(&io)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(whole)).map_err(&io)?;
    }
    f.write_all(buf.as_bytes()).map_err(&io)?;
    f.sync_all().map_err(&io)?;
    if uv.is_none() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(&io)?;
    }
    Ok((uidvalidity, out))
}

/// Key prefix of the Gmail messages copied ([`State::gmail_copied`]).
const GMAIL_COPIED_KEY: &str = "gmid";
const GMAIL_COPIED: &[u8] = GMAIL_COPIED_KEY.as_bytes();

impl State {
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let path = dir.join("state.sled");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(16 << 20)
            .open()
            .map_err(|source| StateError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(State {
            store: Store::Local(db),
            fp_dir: dir.join("fingerprints"),
            uid_dir: dir.join("maildir-uids"),
        })
    }

    /// Fleet mode: state of job `job` in the shared database; the local caches under `dir`.
    pub fn shared(dir: &Path, db: crate::pgdb::PgDb, job: &str) -> State {
        State {
            store: Store::Shared {
                db,
                job: job.to_string(),
            },
            fp_dir: dir.join("fingerprints"),
            uid_dir: dir.join("maildir-uids"),
        }
    }

    fn key(direction: &str, mailbox: &str, folder: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(direction.len() + mailbox.len() + folder.len() + 2);
        k.extend_from_slice(direction.as_bytes());
        k.push(0);
        k.extend_from_slice(mailbox.as_bytes());
        k.push(0);
        k.extend_from_slice(folder.as_bytes());
        k
    }

    /// `direction` is `"fwd"` or `"rev"`; `mailbox` the source user; `folder` the logical name.
    pub async fn get(
        &self,
        direction: &str,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<FolderState>, StateError> {
        let v = match &self.store {
            Store::Local(db) => db
                .get(Self::key(direction, mailbox, folder))?
                .map(|v| v.to_vec()),
            Store::Shared { db, job } => db
                .client()
                .await?
                .query_opt(
                    "SELECT state::text FROM backfill_folder
                     WHERE job = $1 AND direction = $2 AND mailbox = $3 AND folder = $4",
                    &[job, &direction, &mailbox, &folder],
                )
                .await
                .map_err(crate::pgdb::PgError::from)?
                .map(|r| r.get::<_, String>(0).into_bytes()),
        };
        match v {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Store and flush (durable when this returns).
    pub async fn put(
        &self,
        direction: &str,
        mailbox: &str,
        folder: &str,
        st: &FolderState,
    ) -> Result<(), StateError> {
        match &self.store {
            Store::Local(db) => {
                db.insert(
                    Self::key(direction, mailbox, folder),
                    serde_json::to_vec(st)?,
                )?;
                db.flush_async().await?;
            }
            Store::Shared { db, job } => {
                let v = serde_json::to_string(st)?;
                db.client()
                    .await?
                    .execute(
                        "INSERT INTO backfill_folder (job, direction, mailbox, folder, state)
                         VALUES ($1, $2, $3, $4, $5::text::jsonb)
                         ON CONFLICT (job, direction, mailbox, folder)
                         DO UPDATE SET state = excluded.state",
                        &[job, &direction, &mailbox, &folder, &v],
                    )
                    .await
                    .map_err(crate::pgdb::PgError::from)?;
            }
        }
        Ok(())
    }

    /// Bytes uploaded to `account` on `day` (`YYYY-MM-DD`, UTC) for `max_bytes_per_day`.
    pub async fn bytes_on(&self, account: &str, day: &str) -> Result<u64, StateError> {
        match &self.store {
            Store::Local(db) => Ok(db
                .get(Self::key("bytes", account, day))?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)),
            Store::Shared { db, job } => {
                let row = db
                    .client()
                    .await?
                    .query_opt(
                        "SELECT bytes FROM backfill_bytes WHERE job = $1 AND account = $2 AND day = $3",
                        &[job, &account, &day],
                    )
                    .await
                    .map_err(crate::pgdb::PgError::from)?;
                Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
            }
        }
    }

    /// Add to [`State::bytes_on`].
    pub async fn add_bytes(&self, account: &str, day: &str, n: u64) -> Result<(), StateError> {
        let db = match &self.store {
            Store::Local(db) => db,
            Store::Shared { db, job } => {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                db.client()
                    .await?
                    .execute(
                        "INSERT INTO backfill_bytes (job, account, day, bytes) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (job, account, day)
                         DO UPDATE SET bytes = backfill_bytes.bytes + excluded.bytes",
                        &[job, &account, &day, &n],
                    )
                    .await
                    .map_err(crate::pgdb::PgError::from)?;
                return Ok(());
            }
        };
        let key = Self::key("bytes", account, day);
        db.update_and_fetch(key, |old| {
            let cur = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some((cur + n).to_be_bytes().to_vec())
        })?;
        db.flush_async().await?;
        Ok(())
    }

    /// UIDs of the messages `keys` of a Maildir folder (`folder`: its directory), assigning the
    /// next free UIDs to keys seen for the first time, in the order given; with the folder's
    /// UIDVALIDITY (fixed at its first sight). A Maildir has no UIDs of its own, and the
    /// watermark and the pairing need stable ones. Durable when this returns: one flat file per
    /// folder under `<job dir>/maildir-uids/` (`uidvalidity UV` then `UID KEY` lines), appended
    /// and fsynced (kept out of sled for the same reason as the fingerprint cache). A lost file
    /// gives the folder a new UIDVALIDITY, which the next pass handles by fingerprint.
    pub async fn maildir_uids(
        &self,
        folder: &str,
        keys: &[String],
    ) -> Result<(u32, Vec<u32>), StateError> {
        let path = self.uid_file(folder);
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(move || assign_uids(&path, &keys))
            .await
            .map_err(|e| StateError::Cache {
                path: "maildir-uids".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// The Maildir key a UID of [`State::maildir_uids`] stands for (reads the folder's file:
    /// for the rare message renamed since its folder was indexed).
    pub fn maildir_key(&self, folder: &str, uid: u32) -> Result<Option<String>, StateError> {
        let path = self.uid_file(folder);
        let (_, map, _) = read_uids(&path)?;
        Ok(map.into_iter().find(|(_, u)| *u == uid).map(|(k, _)| k))
    }

    fn uid_file(&self, folder: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(folder.as_bytes());
        self.uid_dir.join(hex::encode(&h[..16]))
    }

    /// The cache file of one folder: a hash of (side, account, folder) names it.
    fn fp_file(&self, side: &str, account: &str, wire: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(Self::key(side, account, wire));
        self.fp_dir.join(hex::encode(&h[..16]))
    }

    /// Fingerprints cached for the folder `wire` of `account` (`side`: which configured side),
    /// in the form of [`super::imap_ops::Known`]. A missing or damaged file is an empty cache (it
    /// only costs a fetch of identity headers). Lines are `UID STAMPED KEY` with the hex
    /// [`FpKey`]; a line written by an older version carries the fingerprint text instead.
    pub fn known(
        &self,
        side: &str,
        account: &str,
        wire: &str,
    ) -> Result<super::imap_ops::Known, StateError> {
        let mut out = super::imap_ops::Known::default();
        let Ok(text) = std::fs::read_to_string(self.fp_file(side, account, wire)) else {
            return Ok(out);
        };
        let mut lines = text.lines();
        let Some(uv) = lines.next().and_then(|l| l.strip_prefix("uidvalidity ")) else {
            return Ok(out);
        };
        let Ok(uv) = uv.parse() else {
            return Ok(out);
        };
        out.uidvalidity = Some(uv);
        for l in lines {
            let mut f = l.splitn(3, ' ');
            let (Some(uid), Some(st), Some(fp)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(uid) = uid.parse::<u32>() else {
                continue;
            };
            let key = FpKey::from_hex(fp)
                .unwrap_or_else(|| crate::fingerprint::Fingerprint(fp.to_string()).key());
            out.map.insert(uid, (key, st == "1"));
        }
        Ok(out)
    }

    /// Remember what an index learnt (appended to the folder's file; a new UIDVALIDITY starts
    /// the file over). A cache: not fsynced (losing it costs one fetch of identity headers).
    pub fn learn(
        &self,
        side: &str,
        account: &str,
        wire: &str,
        learnt: &super::imap_ops::Learnt,
    ) -> Result<(), StateError> {
        use std::io::Write as _;
        if learnt.items.is_empty() {
            return Ok(());
        }
        let path = self.fp_file(side, account, wire);
        let io = |e: std::io::Error| StateError::Cache {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(&self.fp_dir).map_err(io)?;
        let head = format!("uidvalidity {}", learnt.uidvalidity);
        let same = std::fs::File::open(&path).ok().is_some_and(|f| {
            let mut first = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut first).is_ok()
                && first.trim_end() == head
        });
        let mut buf = String::new();
        if !same {
            buf.push_str(&head);
            buf.push('\n');
        }
        for (uid, key, stamped) in &learnt.items {
            buf.push_str(&format!("{uid} {} {}\n", u8::from(*stamped), key.to_hex()));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(same)
            .truncate(!same)
            .open(&path)
            .map_err(io)?;
        f.write_all(buf.as_bytes()).map_err(io)?;
        Ok(())
    }

    /// Whether Gmail message `msgid` (X-GM-MSGID) of source `account` has been copied
    /// (`gmail_labels = "keywords"`: one copy per Gmail message, whatever its labels become).
    pub async fn gmail_copied(&self, account: &str, msgid: u64) -> Result<bool, StateError> {
        match &self.store {
            Store::Local(db) => {
                let k = Self::key(GMAIL_COPIED_KEY, account, &msgid.to_string());
                Ok(db.contains_key(k)?)
            }
            Store::Shared { db, job } => Ok(db
                .client()
                .await?
                .query_opt(
                    "SELECT 1 FROM backfill_gmail WHERE job = $1 AND account = $2 AND msgid = $3",
                    &[job, &account, &(msgid as i64)],
                )
                .await
                .map_err(crate::pgdb::PgError::from)?
                .is_some()),
        }
    }

    /// Record copied Gmail messages (durable when this returns).
    pub async fn record_gmail_copies(
        &self,
        account: &str,
        msgids: &[u64],
    ) -> Result<(), StateError> {
        if msgids.is_empty() {
            return Ok(());
        }
        let db = match &self.store {
            Store::Local(db) => db,
            Store::Shared { db, job } => {
                let ids: Vec<i64> = msgids.iter().map(|m| *m as i64).collect();
                db.client()
                    .await?
                    .execute(
                        "INSERT INTO backfill_gmail (job, account, msgid)
                         SELECT $1, $2, unnest($3::bigint[]) ON CONFLICT DO NOTHING",
                        &[job, &account, &ids],
                    )
                    .await
                    .map_err(crate::pgdb::PgError::from)?;
                return Ok(());
            }
        };
        for m in msgids {
            let k = Self::key(GMAIL_COPIED_KEY, account, &m.to_string());
            db.insert(k, &[][..])?;
        }
        db.flush_async().await?;
        Ok(())
    }

    /// Every stored folder state: (direction, mailbox, folder, state) (local mode; empty in
    /// fleet mode).
    pub fn all(&self) -> Result<Vec<(String, String, String, FolderState)>, StateError> {
        let mut out = Vec::new();
        let Store::Local(db) = &self.store else {
            return Ok(out);
        };
        for kv in db.iter() {
            let (k, v) = kv?;
            let parts: Vec<&[u8]> = k.splitn(3, |&b| b == 0).collect();
            if parts.len() != 3 || parts[0] == b"bytes" || parts[0] == GMAIL_COPIED {
                continue;
            }
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            out.push((
                s(parts[0]),
                s(parts[1]),
                s(parts[2]),
                serde_json::from_slice(&v)?,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roundtrip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let jd = job_dir(dir.path(), "wave 1", Some((0, 3)));
        assert!(jd.ends_with("backfill/wave_1.shard0-3"));
        {
            let st = State::open(&jd).unwrap();
            assert_eq!(st.get("fwd", "alice", "INBOX").await.unwrap(), None);
            let fs = FolderState {
                src_uidvalidity: 1,
                dst_uidvalidity: 2,
                done_uid: 40,
                dst_wire: "INBOX".into(),
                ..Default::default()
            };
            st.put("fwd", "alice", "INBOX", &fs).await.unwrap();
        }
        let st = State::open(&jd).unwrap();
        assert_eq!(
            st.get("fwd", "alice", "INBOX")
                .await
                .unwrap()
                .unwrap()
                .done_uid,
            40
        );
        assert_eq!(st.all().unwrap().len(), 1);
    }

    #[test]
    fn fingerprint_cache_per_uidvalidity() {
        use crate::backfill::imap_ops::Learnt;
        use crate::fingerprint::Fingerprint;
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path()).unwrap();
        let fp = |s: &str| Fingerprint(s.into()).key();
        let l = Learnt {
            uidvalidity: 7,
            items: vec![(1, fp("m:a"), false), (2, fp("h:b"), true)],
        };
        st.learn("source", "alice", "INBOX", &l).unwrap();
        let k = st.known("source", "alice", "INBOX").unwrap();
        assert_eq!(k.uidvalidity, Some(7));
        assert_eq!(k.map.get(&2), Some(&(fp("h:b"), true)));
        assert!(st.known("source", "alice", "Sent").unwrap().is_empty());
        assert!(st.known("source", "alice", "INBO").unwrap().is_empty());
        // A new UIDVALIDITY replaces the folder's entries.
        let l2 = Learnt {
            uidvalidity: 8,
            items: vec![(1, fp("m:c"), false)],
        };
        st.learn("source", "alice", "INBOX", &l2).unwrap();
        let k = st.known("source", "alice", "INBOX").unwrap();
        assert_eq!(k.uidvalidity, Some(8));
        assert_eq!(k.map.len(), 1);
        assert_eq!(k.map.get(&1), Some(&(fp("m:c"), false)));
        assert_eq!(st.all().unwrap().len(), 0);
    }

    #[test]
    fn fingerprint_cache_reads_lines_of_the_text_format() {
        use crate::fingerprint::Fingerprint;
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path()).unwrap();
        let path = st.fp_file("source", "alice", "INBOX");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "uidvalidity 9\n4 1 m:old@x\n5 0 h:0123\n").unwrap();
        let k = st.known("source", "alice", "INBOX").unwrap();
        assert_eq!(k.uidvalidity, Some(9));
        assert_eq!(k.map[&4], (Fingerprint("m:old@x".into()).key(), true));
        assert_eq!(k.map[&5], (Fingerprint("h:0123".into()).key(), false));
    }

    #[tokio::test]
    async fn maildir_uid_file_survives_a_torn_append() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path()).unwrap();
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (uv, a) = st.maildir_uids("/m/.A", &k(&["x", "y"])).await.unwrap();
        assert_eq!(a, vec![1, 2]);
        // A crash in the middle of appending "3 z\n": the partial line is not a UID.
        let path = st.uid_file("/m/.A");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("3 z");
        std::fs::write(&path, text).unwrap();
        let (uv2, b) = st.maildir_uids("/m/.A", &k(&["y", "w"])).await.unwrap();
        assert_eq!((uv2, b), (uv, vec![2, 3]));
        assert_eq!(st.maildir_key("/m/.A", 3).unwrap().as_deref(), Some("w"));
        // A lost file starts the folder over under a new UIDVALIDITY line.
        std::fs::remove_file(&path).unwrap();
        let (_, c) = st.maildir_uids("/m/.A", &k(&["w"])).await.unwrap();
        assert_eq!(c, vec![1]);
    }

    #[tokio::test]
    async fn maildir_uids_are_stable() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path()).unwrap();
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (uv, a) = st.maildir_uids("/m/.A", &k(&["x", "y"])).await.unwrap();
        assert_eq!(a, vec![1, 2]);
        let (uv2, b) = st.maildir_uids("/m/.A", &k(&["z", "x"])).await.unwrap();
        assert_eq!((uv2, b), (uv, vec![3, 1]));
        assert_eq!(st.maildir_key("/m/.A", 3).unwrap().as_deref(), Some("z"));
        let (_, c) = st.maildir_uids("/m/.B", &k(&["x"])).await.unwrap();
        assert_eq!(c, vec![1]);
        assert_eq!(st.all().unwrap().len(), 0);
    }
}
