//! The IO edge of waves: reads each `[[backfill.job]]`'s `mailboxes_file` and its pass reports
//! (`<state_dir>/backfill/<job>/report.json` and the shards' `<job>.shardI-N/report.json`) into
//! [`JobBackfill`] data for the pure functions. Read-only; an unreadable file becomes an error
//! string in the data (the verdict names it), never a failure of the whole status.

use super::{Inputs, JobBackfill, Overview, WaveStatus};
use crate::backfill::report::JobReport;
use crate::backfill::runner::{parse_mailboxes, state_dir_of};
use crate::config::{BackfillJob, Config};
use crate::queue::model::MessageSummary;
use crate::routing::Router;
use std::path::Path;
use std::time::SystemTime;

/// Every backfill job of `config` as data.
pub fn backfill_jobs(config: &Config) -> Vec<JobBackfill> {
    let base = config.path.parent().unwrap_or(Path::new("."));
    config
        .backfill
        .jobs
        .iter()
        .map(|job| one_job(config, base, job))
        .collect()
}

/// Each rule's `recipients_file` as written, by rule index (for naming where members come from).
pub fn rule_files(config: &Config) -> Vec<Option<String>> {
    config
        .routing
        .rules
        .iter()
        .map(|r| r.recipients_file.as_ref().map(|p| p.display().to_string()))
        .collect()
}

fn one_job(config: &Config, base: &Path, job: &BackfillJob) -> JobBackfill {
    let list = crate::config::resolve_path(base, &job.mailboxes_file);
    let (mailboxes, mailboxes_error) = match std::fs::read_to_string(&list) {
        Ok(text) => (parse_mailboxes(&text), None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", list.display()))),
    };
    let (reports, report_error) = reports(config, &job.name);
    JobBackfill {
        job: job.name.clone(),
        mailboxes,
        reports,
        mailboxes_error,
        report_error,
    }
}

/// The job's report and its shards' reports; the first read error, if any.
fn reports(config: &Config, job: &str) -> (Vec<JobReport>, Option<String>) {
    let dir = state_dir_of(config, job, None);
    let mut paths = vec![dir.join("report.json")];
    let shard_prefix = dir
        .file_name()
        .map(|n| format!("{}.shard", n.to_string_lossy()));
    if let (Some(parent), Some(prefix)) = (dir.parent(), shard_prefix)
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        let mut shards: Vec<_> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join("report.json"))
            .collect();
        shards.sort();
        paths.extend(shards);
    }
    let mut out = Vec::new();
    let mut error = None;
    for p in paths {
        match JobReport::read(&p) {
            Ok(r) => out.push(r),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                error.get_or_insert_with(|| format!("{}: {e}", p.display()));
            }
        }
    }
    (out, error)
}

/// Every wave's status at `now`, its backfill data read from disk (for the status page).
pub fn statuses(
    config: &Config,
    routes: &Router,
    queue: &[MessageSummary],
    now: SystemTime,
) -> Vec<WaveStatus> {
    with_inputs(config, routes, queue, now, super::statuses)
}

/// [`super::overview`] with the backfill data read from disk (`cutover wave list`, `/api/waves`).
pub fn overview(
    config: &Config,
    routes: &Router,
    queue: &[MessageSummary],
    now: SystemTime,
) -> Overview {
    with_inputs(config, routes, queue, now, super::overview)
}

/// [`super::status`] with the backfill data read from disk (`cutover wave status`,
/// `/api/waves/{name}`); `None` for an unknown wave.
pub fn status(
    config: &Config,
    routes: &Router,
    queue: &[MessageSummary],
    name: &str,
    now: SystemTime,
) -> Option<WaveStatus> {
    if !routes.rules().iter().any(|r| r.name == name) {
        return None;
    }
    with_inputs(config, routes, queue, now, |i| super::status(i, name))
}

/// The names of the waves (rules), for "unknown wave" messages.
pub fn names(routes: &Router) -> String {
    let n: Vec<&str> = routes.rules().iter().map(|r| r.name.as_str()).collect();
    if n.is_empty() {
        "none".into()
    } else {
        n.join(", ")
    }
}

fn with_inputs<T>(
    config: &Config,
    routes: &Router,
    queue: &[MessageSummary],
    now: SystemTime,
    f: impl FnOnce(&Inputs) -> T,
) -> T {
    let jobs = backfill_jobs(config);
    let files = rule_files(config);
    f(&Inputs {
        routes,
        files: &files,
        queue,
        backfill: &jobs,
        now,
    })
}
