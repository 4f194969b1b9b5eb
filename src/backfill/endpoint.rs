//! Backfill endpoints: one set of folder operations (LIST, STATUS, index, create, subscribe,
//! flags, copy) over either an IMAP account (`imap_ops` on a `session::Conn`) or a Maildir on
//! disk (`maildir`), so the runner treats `source = { maildir = ".." }` like an IMAP server.
//! Owns the dispatch and the Maildir side's UIDs (kept in the job state: a Maildir has none,
//! and the watermark and the pairing need stable ones). Never decides what to copy (`index`),
//! never plans folders (`plan`).

use super::imap_ops::{
    self, Assigned, DstIndex, Flags, FolderStatus, Known, Meta, Outcome, SrcIndex, Window,
};
use super::index::{DstMsg, SrcMsg};
use super::maildir::{self, Entry, Maildir};
use super::plan::{self, Listing};
use super::session::{Conn, Side};
use super::state::State;
use super::transform::Transform;
use super::{BackfillError, Result};
use crate::config::ImapEndpoint;
use crate::fingerprint;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How to reach one side of a job.
pub enum Access {
    Imap(Box<Side>),
    /// `maildir` template (`{user}` replaced), resolved against the config's directory.
    Maildir {
        template: String,
        base: PathBuf,
    },
}

impl Access {
    pub fn new(label: &'static str, ep: &ImapEndpoint, base: &Path) -> Result<Access> {
        match &ep.maildir {
            Some(t) => Ok(Access::Maildir {
                template: t.clone(),
                base: base.to_path_buf(),
            }),
            None => Ok(Access::Imap(Box::new(Side::new(label, ep, base)?))),
        }
    }

    /// A session for `user`: logged in (IMAP) or the user's Maildir (created if missing when
    /// it is written to).
    pub async fn connect(&self, user: &str, state: &State) -> Result<Endpoint> {
        match self {
            Access::Imap(side) => Ok(Endpoint::Imap(side.connect(user).await?)),
            Access::Maildir { template, base } => {
                let root = base.join(maildir_path(template, user)?);
                Ok(Endpoint::Maildir(MaildirAccount {
                    md: Maildir::open(&root)?,
                    user: user.to_string(),
                    state: state.clone(),
                    files: std::sync::Mutex::new(None),
                }))
            }
        }
    }
}

/// The Maildir path of `user` from a template: `{user}` is the whole user name, `{local}` and
/// `{domain}` its parts around the last `@` (`/srv/mail/{domain}/{local}/Maildir`).
pub fn maildir_path(template: &str, user: &str) -> Result<String> {
    let (local, domain) = user.rsplit_once('@').unwrap_or((user, ""));
    for part in [user, local, domain] {
        if part.contains('/') || part.starts_with('.') || part.contains('\0') {
            return Err(BackfillError::Config(format!(
                "user {user:?} cannot name a Maildir directory"
            )));
        }
    }
    Ok(template
        .replace("{user}", user)
        .replace("{local}", local)
        .replace("{domain}", domain))
}

/// A folder's wire name and its message files by UID (sorted).
type IndexedFiles = (String, Vec<(u32, Box<Path>)>);

/// One user's Maildir, with the job state holding its UIDs.
pub struct MaildirAccount {
    md: Maildir,
    user: String,
    state: State,
    /// The message files of the folder indexed last, by UID (sorted): a copy finds its file
    /// without listing the folder again.
    files: std::sync::Mutex<Option<IndexedFiles>>,
}

/// A session with one side.
pub enum Endpoint {
    Imap(Conn),
    Maildir(MaildirAccount),
}

impl MaildirAccount {
    fn folder(&self, wire: &str) -> Result<maildir::Folder> {
        self.md
            .folder(&plan::logical(wire, Some(maildir::DELIMITER)))
    }

    /// Entries with their UIDs (assigned on first sight).
    async fn entries(&self, wire: &str) -> Result<(u32, Vec<(u32, Entry)>)> {
        let f = self.folder(wire)?;
        let mut entries = blocking(move || f.entries()).await?;
        // A UID file line holds one key: a file name with a line break is left out (never seen
        // outside of damage; reported).
        entries.retain(|e| {
            let ok = !e.key.contains(['\n', '\r']);
            if !ok {
                tracing::warn!(path = %e.path.display(), "maildir: skipping a message file whose name has a line break");
            }
            ok
        });
        let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        let (uv, uids) = self
            .state
            .maildir_uids(&self.folder_id(wire), &keys)
            .await?;
        Ok((uv, uids.into_iter().zip(entries).collect()))
    }

    fn folder_id(&self, wire: &str) -> String {
        format!("{}\u{0}{wire}", self.md.root().display())
    }

    /// The bytes of message `uid` (`None`: gone). Its file comes from the last index of the
    /// folder; a file renamed since (flags changed, new/ → cur/) is found again by its key.
    async fn read(&self, wire: &str, uid: u32) -> Result<Option<Vec<u8>>> {
        let f = self.folder(wire)?;
        if let Some(path) = self.indexed_file(wire, uid) {
            let f2 = f.clone();
            if let Some(body) = blocking(move || f2.read_file(&path)).await? {
                return Ok(Some(body));
            }
        }
        let Some(key) = self.state.maildir_key(&self.folder_id(wire), uid)? else {
            return Ok(None);
        };
        blocking(
            move || match f.entries()?.into_iter().find(|e| e.key == key) {
                Some(e) => f.read_file(&e.path),
                None => Ok(None),
            },
        )
        .await
    }

    fn indexed_file(&self, wire: &str, uid: u32) -> Option<Box<Path>> {
        let files = self.files.lock().ok()?;
        let (w, list) = files.as_ref()?;
        if w != wire {
            return None;
        }
        let i = list.binary_search_by_key(&uid, |(u, _)| *u).ok()?;
        list.get(i).map(|(_, p)| p.clone())
    }

    /// Index a folder: one small record per message, the fingerprint from the head of each file.
    async fn index(
        &self,
        wire: &str,
    ) -> Result<(u32, Vec<(u32, Entry, fingerprint::Fingerprint, bool)>)> {
        let (uv, entries) = self.entries(wire).await?;
        let mut files: Vec<(u32, Box<Path>)> = entries
            .iter()
            .map(|(u, e)| (*u, e.path.clone().into_boxed_path()))
            .collect();
        files.sort_unstable_by_key(|(u, _)| *u);
        if let Ok(mut slot) = self.files.lock() {
            *slot = Some((wire.to_string(), files));
        }
        let f = self.folder(wire)?;
        let out = blocking(move || {
            let mut out = Vec::with_capacity(entries.len());
            for (uid, e) in entries {
                let head = f.read_head(&e, fingerprint::BODY_PREFIX)?;
                let fp = fingerprint::fingerprint(&head);
                let stamped = fingerprint::has_header(&head, "X-Cutover-Loop");
                out.push((uid, e, fp, stamped));
            }
            Ok(out)
        })
        .await?;
        Ok((uv, out))
    }
}

/// Run blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackfillError::Connection(format!("maildir task: {e}")))?
}

impl Endpoint {
    pub fn user(&self) -> &str {
        match self {
            Endpoint::Imap(c) => &c.user,
            Endpoint::Maildir(m) => &m.user,
        }
    }

    /// The server speaks Gmail's extensions (`X-GM-EXT-1`).
    pub fn is_gmail(&self) -> bool {
        matches!(self, Endpoint::Imap(c) if c.caps.gmail)
    }

    /// Gmail labels and X-GM-MSGID of `uids` (empty off Gmail).
    pub async fn gmail_labels(
        &mut self,
        wire: &str,
        uids: &[u32],
    ) -> Result<HashMap<u32, super::gmail::GmInfo>> {
        match self {
            Endpoint::Imap(c) if c.caps.gmail => super::gmail::fetch_labels(c, wire, uids).await,
            _ => Ok(HashMap::new()),
        }
    }

    /// Add a Gmail label to messages of `wire` (an error off Gmail).
    pub async fn gmail_add_label(&mut self, wire: &str, uids: &[u32], label: &str) -> Result<()> {
        match self {
            Endpoint::Imap(c) if c.caps.gmail => {
                super::gmail::add_label(c, wire, uids, label).await
            }
            _ => Err(BackfillError::Config(
                "labels need a Gmail destination (X-GM-EXT-1)".into(),
            )),
        }
    }

    /// Before writing to a destination: a Maildir's root (its INBOX) exists. IMAP: nothing.
    pub async fn prepare_root(&mut self) -> Result<()> {
        match self {
            Endpoint::Imap(_) => Ok(()),
            Endpoint::Maildir(m) => {
                let md = m.md.clone();
                blocking(move || md.create_root()).await
            }
        }
    }

    pub async fn list(&mut self) -> Result<Listing> {
        match self {
            Endpoint::Imap(c) => imap_ops::list(c).await,
            Endpoint::Maildir(m) => {
                let md = m.md.clone();
                blocking(move || {
                    if md.root().exists() {
                        md.list()
                    } else {
                        Ok(Listing {
                            delimiter: Some(maildir::DELIMITER),
                            ..Default::default()
                        })
                    }
                })
                .await
            }
        }
    }

    pub async fn status(&mut self, wire: &str) -> Result<FolderStatus> {
        match self {
            Endpoint::Imap(c) => imap_ops::status(c, wire).await,
            Endpoint::Maildir(m) => {
                let (uv, entries) = m.entries(wire).await?;
                Ok(FolderStatus {
                    uidvalidity: uv,
                    uidnext: entries.iter().map(|(u, _)| *u).max().unwrap_or(0) + 1,
                    messages: entries.len() as u32,
                    modseq: 0,
                })
            }
        }
    }

    pub async fn create(&mut self, wire: &str, subscribe: bool) -> Result<()> {
        match self {
            Endpoint::Imap(c) => imap_ops::create(c, wire, subscribe).await,
            Endpoint::Maildir(m) => {
                let md = m.md.clone();
                let logical = plan::logical(wire, Some(maildir::DELIMITER));
                blocking(move || {
                    md.create(&logical)?;
                    if subscribe {
                        md.subscribe(&logical)?;
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    pub async fn subscribe(&mut self, wire: &str) -> Result<()> {
        match self {
            Endpoint::Imap(c) => imap_ops::subscribe(c, wire).await,
            Endpoint::Maildir(m) => {
                let md = m.md.clone();
                let logical = plan::logical(wire, Some(maildir::DELIMITER));
                blocking(move || md.subscribe(&logical)).await
            }
        }
    }

    /// Index a source folder (`known`: fingerprints from earlier passes, IMAP only).
    pub async fn index_source(
        &mut self,
        wire: &str,
        watermark: u32,
        window: Window,
        known: &Known,
    ) -> Result<SrcIndex> {
        let m = match self {
            Endpoint::Imap(c) => {
                return imap_ops::index_source(c, wire, watermark, window, known).await;
            }
            Endpoint::Maildir(m) => m,
        };
        let (uv, items) = m.index(wire).await?;
        let mut out = SrcIndex {
            uidvalidity: uv,
            uidnext: items.iter().map(|i| i.0).max().unwrap_or(0) + 1,
            ..Default::default()
        };
        for (uid, e, fp, _) in items {
            let date = e.internaldate;
            if window.0.is_some_and(|s| date < s) || window.1.is_some_and(|b| date >= b) {
                continue;
            }
            out.meta
                .insert(uid, Meta::new(Flags::parse(&e.flags), Some((date, 0))));
            out.msgs.push(SrcMsg {
                uid,
                fp: fp.key(),
                size: e.size,
                date,
                done: uid <= watermark,
            });
        }
        out.msgs.sort_by_key(|m| m.uid);
        Ok(out)
    }

    /// Index a destination folder (`known` as for [`Endpoint::index_source`]).
    pub async fn index_destination(&mut self, wire: &str, known: &Known) -> Result<DstIndex> {
        let m = match self {
            Endpoint::Imap(c) => return imap_ops::index_destination(c, wire, known).await,
            Endpoint::Maildir(m) => m,
        };
        let (uv, items) = m.index(wire).await?;
        let mut out = DstIndex {
            uidvalidity: uv,
            ..Default::default()
        };
        for (uid, e, fp, stamped) in items {
            out.flags.insert(uid, Flags::parse(&e.flags));
            out.msgs.push(DstMsg {
                uid,
                fp: fp.key(),
                size: e.size,
                date: e.internaldate,
                stamped,
            });
        }
        Ok(out)
    }

    pub async fn store_flags(&mut self, wire: &str, groups: &[(String, Vec<u32>)]) -> Result<()> {
        let m = match self {
            Endpoint::Imap(c) => return imap_ops::store_flags(c, wire, groups).await,
            Endpoint::Maildir(m) => m,
        };
        if groups.is_empty() {
            return Ok(());
        }
        let (_, entries) = m.entries(wire).await?;
        let f = m.folder(wire)?;
        let mut by_uid: HashMap<u32, Entry> = entries.into_iter().collect();
        let mut todo = Vec::new();
        for (flags, uids) in groups {
            for u in uids {
                if let Some(e) = by_uid.remove(u) {
                    todo.push((e, flags.clone()));
                }
            }
        }
        blocking(move || {
            for (e, flags) in todo {
                f.set_flags(&e, &flags)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn defined_keywords(&mut self, wire: &str) -> Result<Vec<String>> {
        match self {
            Endpoint::Imap(c) => imap_ops::defined_keywords(c, wire).await,
            Endpoint::Maildir(m) => {
                let f = m.folder(wire)?;
                blocking(move || f.keywords()).await
            }
        }
    }
}

/// Copy `uids` from `src_wire` to `dst_wire`, reporting each fate through `confirm` (as
/// [`imap_ops::copy_messages`], which does IMAP to IMAP; the Maildir combinations go message by
/// message).
#[allow(clippy::too_many_arguments)]
pub async fn copy_messages(
    src: &mut Endpoint,
    dst: &mut Endpoint,
    src_wire: &str,
    dst_wire: &str,
    uids: &[u32],
    meta: &HashMap<u32, Meta>,
    (multiappend, transform): (bool, &Transform),
    confirm: &mut (dyn FnMut(u32, Outcome) + Send),
) -> Result<Assigned> {
    if let (Endpoint::Imap(s), Endpoint::Imap(d)) = (&mut *src, &mut *dst) {
        let how = (multiappend, transform);
        return imap_ops::copy_messages(s, d, src_wire, dst_wire, uids, meta, how, confirm).await;
    }
    for &uid in uids {
        let m = meta.get(&uid).cloned().unwrap_or_default();
        let body = match &mut *src {
            Endpoint::Imap(c) => imap_ops::fetch_body(c, src_wire, uid).await?,
            Endpoint::Maildir(a) => a.read(src_wire, uid).await?,
        };
        let Some(body) = body else {
            confirm(uid, Outcome::Vanished);
            continue;
        };
        let body = transform.apply(uid, &body).into_owned();
        let n = body.len() as u64;
        let outcome = match &mut *dst {
            Endpoint::Imap(c) => imap_ops::append_one(c, dst_wire, &m, &body).await?,
            Endpoint::Maildir(a) => {
                let f = a.folder(dst_wire)?;
                let date = m.epoch().unwrap_or_else(|| {
                    i64::try_from(crate::time::unix_secs(std::time::SystemTime::now())).unwrap_or(0)
                });
                let stored = blocking(move || f.append(&body, &m.flags.list(), date)).await;
                match stored {
                    Ok(_) => Outcome::Copied { bytes: n },
                    Err(BackfillError::Refused(r)) => Outcome::Refused(r),
                    Err(e) => return Err(e),
                }
            }
        };
        confirm(uid, outcome);
    }
    Ok(Assigned::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn maildir_copy_finds_a_file_renamed_after_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Maildir");
        let md = Maildir::open(&root).unwrap();
        md.create_root().unwrap();
        let stored = md
            .folder("INBOX")
            .unwrap()
            .append(b"Subject: a\n\nbody\n", "(\\Seen)", 1_700_000_000)
            .unwrap();
        let state = State::open(&dir.path().join("state")).unwrap();
        let access = Access::Maildir {
            template: root.display().to_string(),
            base: PathBuf::from("/"),
        };
        let Endpoint::Maildir(a) = access.connect("alice", &state).await.unwrap() else {
            panic!("not a Maildir endpoint");
        };
        let (_, items) = a.index("INBOX").await.unwrap();
        let uid = items[0].0;
        let want = b"Subject: a\r\n\r\nbody\r\n".to_vec();
        assert_eq!(a.read("INBOX", uid).await.unwrap(), Some(want.clone()));
        // The user flags it meanwhile: the file is renamed.
        let renamed = stored.path.with_file_name(format!("{}:2,FS", stored.key));
        std::fs::rename(&stored.path, &renamed).unwrap();
        assert_eq!(a.read("INBOX", uid).await.unwrap(), Some(want));
        std::fs::remove_file(&renamed).unwrap();
        assert_eq!(a.read("INBOX", uid).await.unwrap(), None);
    }

    #[test]
    fn maildir_templates() {
        let p = |t: &str, u: &str| maildir_path(t, u).unwrap_or_else(|e| e.to_string());
        assert_eq!(
            p("/m/{domain}/{local}/Maildir", "bob@example.com"),
            "/m/example.com/bob/Maildir"
        );
        assert_eq!(p("/m/{user}", "bob"), "/m/bob");
        assert!(maildir_path("/m/{user}", "../etc").is_err());
        assert!(maildir_path("/m/{local}", "a/b@x").is_err());
    }
}
