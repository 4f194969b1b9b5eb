//! Recovery at open: every committed message is back with its legs; temp spool files (bodies
//! never acknowledged) and index entries without a record are removed; spool files without a
//! record are moved to `spool/orphans/` with a log line and counted (never deleted: after a
//! power cut or a damaged db they may be the only copy of a message); a record whose body is
//! missing is flagged and kept. Relies on the write order in the module doc of `queue`; runs
//! before any commit, never concurrently with one.

use super::model::BodyLocation;
use super::{QueueError, id, spool, store};
use std::path::Path;

/// Where recovery puts spool files it cannot explain, under the spool directory.
pub const ORPHANS_DIR: &str = "orphans";

/// What recovery found and did at open.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    /// Messages in the queue after recovery.
    pub messages: usize,
    /// Legs of those messages.
    pub legs: usize,
    /// `*.tmp` spool files removed (bodies of messages never acknowledged).
    pub removed_tmp: usize,
    /// Spool files without a message record, moved to `spool/orphans/`.
    pub quarantined_orphans: usize,
    /// `bodies`/`due` entries without a message record removed.
    pub removed_entries: usize,
    /// Records whose body is missing (flagged `body_missing`, kept).
    pub missing_bodies: usize,
}

/// Recovery at open (see the module doc for the write order it relies on).
pub(super) fn recover(
    store: &store::Store,
    spool_dir: &Path,
    ids: &id::IdGen,
) -> Result<RecoveryReport, QueueError> {
    let mut rep = RecoveryReport::default();
    let mut spool_names = std::collections::HashSet::new();
    let mut flagged = Vec::new();
    for rec in store.records() {
        let mut rec = rec?;
        rep.messages += 1;
        rep.legs += rec.legs.len();
        let present = match &rec.body {
            BodyLocation::Inline => store.has_inline_body(&rec)?,
            BodyLocation::Spool { file } => {
                spool_names.insert(file.clone());
                spool_dir.join(file).is_file()
            }
        };
        if !present {
            rep.missing_bodies += 1;
            tracing::error!(queue_id = %rec.id, "message body missing; record kept and flagged");
            if !rec.body_missing {
                rec.body_missing = true;
                flagged.push(rec);
            }
        }
    }
    for rec in &flagged {
        store.update(rec)?;
    }
    for (name, tmp) in spool::list(spool_dir)? {
        if tmp {
            std::fs::remove_file(spool_dir.join(&name))?;
            rep.removed_tmp += 1;
        } else if !spool_names.contains(&name) {
            let dir = spool_dir.join(ORPHANS_DIR);
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(spool_dir.join(&name), dir.join(&name))?;
            tracing::warn!(file = %name, to = %dir.display(), "spool file without a message record quarantined (not deleted): inspect it, it is a whole message without its envelope: re-send or remove it");
            rep.quarantined_orphans += 1;
        }
    }
    if rep.quarantined_orphans > 0 {
        spool::sync_dir(&spool_dir.join(ORPHANS_DIR))?;
    }
    if rep.removed_tmp + rep.quarantined_orphans > 0 {
        spool::sync_dir(spool_dir)?;
    }
    rep.removed_entries = store.remove_dangling()?;
    if let Some(raw) = store.last_id()?.as_deref().and_then(id::decode) {
        ids.observe(raw);
    }
    if !flagged.is_empty() || rep.removed_entries > 0 {
        store.sync_blocking()?;
    }
    Ok(rep)
}
