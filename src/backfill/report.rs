//! The JSON report of a backfill run (`--report PATH`, `<job dir>/report.json`, and
//! `cutover backfill status JOB --json`): per mailbox and folder, counts, skips by reason,
//! failures with the server's reply, bytes, duration and the `converged` verdict. Data only;
//! writing is atomic (temp file + rename). Never talks IMAP.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Failure {
    pub uid: u32,
    pub reply: String,
}

/// What happened to one message beyond a plain copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageNote {
    pub uid: u32,
    /// `converted`, `skipped` or `mapped`.
    pub action: String,
    /// The counter it adds to (`too_large`, `gmail_label_elsewhere`, `tnef`, ...).
    pub kind: String,
    pub detail: String,
}

impl MessageNote {
    pub fn new(uid: u32, action: &str, kind: &str, detail: String) -> MessageNote {
        MessageNote {
            uid,
            action: action.into(),
            kind: kind.into(),
            detail,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FolderReport {
    /// Logical source folder name.
    pub folder: String,
    /// Logical destination folder name.
    pub destination: String,
    /// Why the destination name differs from the source's (delimiter in a name, a name the
    /// destination refused), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Source messages considered (after `since`/`before`).
    pub source_count: u64,
    /// Destination messages after the pass (counterpart folder).
    pub destination_count: u64,
    pub copied: u64,
    /// Skipped as duplicates, by reason: `present` (a copy in the counterpart folder),
    /// `ledger` (delivered by cutover, anywhere in the mailbox), `earlier_pass` (at or below
    /// the watermark, not re-examined because nothing new arrived); `present_dual_delivered`
    /// says how many of the `present` ones are copies cutover itself delivered.
    pub skipped: BTreeMap<String, u64>,
    /// Handled by an earlier pass but gone from the destination (never re-copied).
    pub missing: u64,
    /// Messages already present whose destination flags were set to the source's.
    #[serde(default)]
    pub flags_updated: u64,
    pub failed: Vec<Failure>,
    /// Copied with gentler metadata after the destination refused the original (keywords over
    /// its limit, a date before 1970): per message, what was given up and the refusal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjusted: Vec<Failure>,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Per message, what was converted (TNEF), skipped by policy (size limit, Gmail label
    /// copied elsewhere) or mapped (Gmail labels as keywords or labels), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<MessageNote>,
    /// Messages converted on the way (TNEF → MIME).
    #[serde(default)]
    pub converted: u64,
    /// Every source message has a counterpart on the destination (messages skipped by policy
    /// count as handled: they are listed in `messages` and `skipped`).
    pub converged: bool,
    /// Why the folder failed as a whole (after retries), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MailboxReport {
    pub source_user: String,
    pub destination_user: String,
    /// `forward` or `reverse` (direction = "both" adds a reverse entry).
    pub direction: String,
    pub folders: Vec<FolderReport>,
    pub copied: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub converged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pauses on server back-off / reconnects.
    pub retries: u32,
    /// Messages converted (TNEF), skipped by policy and mapped, over the folders.
    #[serde(default)]
    pub converted: u64,
    #[serde(default)]
    pub skipped_by_policy: u64,
    #[serde(default)]
    pub mapped: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobReport {
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub dry_run: bool,
    /// RFC 3339.
    pub started: String,
    pub finished: Option<String>,
    pub running: bool,
    pub mailboxes: Vec<MailboxReport>,
    pub copied: u64,
    pub bytes: u64,
    pub failed: u64,
    pub duration_ms: u64,
    pub converged: bool,
    /// Fleet mode (`backfill worker`): the shared pass's leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetView>,
}

/// What the shared pass of a fleet backfill looks like (from the lease table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// The pass number (1 for the first).
    pub pass: i32,
    /// Mailboxes not yet started (or whose worker's lease expired).
    pub pending: u64,
    /// Mailboxes being worked on now.
    pub running: Vec<LeaseView>,
    /// Mailboxes finished in this pass.
    pub done: u64,
}

/// A mailbox held by a worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub source_user: String,
    pub destination_user: String,
    pub worker: String,
    /// How many workers have taken it this pass (above 1: taken over after a lease expired).
    pub attempts: i32,
    /// RFC 3339: when the lease runs out unless renewed.
    pub expires: String,
}

impl JobReport {
    /// Recompute the totals from the mailboxes.
    pub fn total(&mut self) {
        self.copied = self.mailboxes.iter().map(|m| m.copied).sum();
        self.bytes = self.mailboxes.iter().map(|m| m.bytes).sum();
        self.failed = self
            .mailboxes
            .iter()
            .flat_map(|m| &m.folders)
            .map(|f| f.failed.len() as u64 + u64::from(f.error.is_some()))
            .sum::<u64>()
            + self.mailboxes.iter().filter(|m| m.error.is_some()).count() as u64;
        self.converged = !self.mailboxes.is_empty() && self.mailboxes.iter().all(|m| m.converged);
    }

    /// Write atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> std::io::Result<JobReport> {
        let data = std::fs::read(path)?;
        serde_json::from_slice(&data).map_err(std::io::Error::other)
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
