//! `[ledger]`: where the ledger lives. Absent (the default): the embedded sled ledger in each
//! gateway's `state_dir`, nothing to set up. With `url` or `url_file`: one PostgreSQL shared by
//! every gateway and backfill worker of the fleet (ledger, backfill leases and per-folder
//! state). Serde shape, defaults and the checks of this section only; reads `url_file` at load
//! (so a reload re-reads it). Never connects (that is `crate::pgdb`).

use super::diag::KeyPath;
use super::values::HumanDuration;
use super::{Reader, resolve_path};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[ledger]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// `postgres://user:password@host:port/db?sslmode=require` inline (prefer `url_file`).
    #[serde(default)]
    pub url: Option<LedgerUrl>,
    /// A file holding the URL (a Kubernetes Secret mounted as a file).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// A PEM CA bundle for the database's certificate (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This process's name in the fleet (default: env `CUTOVER_INSTANCE`, else the host name).
    #[serde(default)]
    pub instance: Option<String>,
    /// A backfill worker that has not renewed its lease for this long loses it (default 60s).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: HumanDuration,
    /// How often a gateway ships its outbox and reports it drained (default 1s).
    #[serde(default = "default_flush_interval")]
    pub flush_interval: HumanDuration,
    /// Records per INSERT (default 500).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long a backfill waits for every gateway's outbox to drain before it gives up on a
    /// mailbox for this pass (default 2m).
    #[serde(default = "default_drain_wait")]
    pub drain_wait: HumanDuration,
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            url: None,
            url_file: None,
            ca_file: None,
            instance: None,
            lease_ttl: default_lease_ttl(),
            flush_interval: default_flush_interval(),
            batch: default_batch(),
            drain_wait: default_drain_wait(),
        }
    }
}

fn default_lease_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_flush_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_batch() -> usize {
    500
}
fn default_drain_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}

/// A PostgreSQL URL. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct LedgerUrl(String);

impl std::fmt::Debug for LedgerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LedgerUrl({})", self.redacted())
    }
}

impl LedgerUrl {
    /// The URL (with its password): for connecting only.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***` (for messages and logs).
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            // key=value form: hide `password=...`.
            return s
                .split(' ')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***",
                    _ => kv,
                })
                .collect::<Vec<_>>()
                .join(" ");
        };
        let rest = &s[scheme_end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        match rest[..auth_end].rfind('@') {
            Some(at) => match rest[..at].find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &s[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                ),
                None => s.clone(),
            },
            None => s.clone(),
        }
    }
}

impl LedgerSection {
    /// Whether the fleet mode (a shared PostgreSQL) is configured.
    pub fn shared(&self) -> bool {
        self.url.is_some()
    }

    /// This process's name in the fleet.
    pub fn instance_name(&self) -> String {
        if let Some(i) = &self.instance {
            return i.clone();
        }
        if let Ok(i) = std::env::var("CUTOVER_INSTANCE")
            && !i.trim().is_empty()
        {
            return i.trim().to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    }
}

/// The section's checks: one of `url`/`url_file`, the file read into `url`, a URL that
/// PostgreSQL's client accepts, sane timings.
pub(crate) fn check(l: &mut LedgerSection, base_dir: &Path, cx: &mut Reader<'_>) {
    let k = KeyPath::root().key("ledger");
    match (&l.url, &l.url_file) {
        (Some(_), Some(_)) => cx.error(
            &k.key("url_file"),
            "set url or url_file, not both (url_file keeps the password out of this file)".into(),
        ),
        (None, Some(file)) => {
            let full = resolve_path(base_dir, file);
            match std::fs::read_to_string(&full) {
                Ok(text) if text.trim().is_empty() => {
                    cx.error(&k.key("url_file"), format!("{} is empty", full.display()))
                }
                Ok(text) => l.url = Some(LedgerUrl(text.trim().to_string())),
                Err(e) => cx.error(
                    &k.key("url_file"),
                    format!("cannot read {}: {e}", full.display()),
                ),
            }
        }
        _ => {}
    }
    if let Some(u) = &l.url
        && let Err(e) = u.secret().parse::<tokio_postgres::Config>()
    {
        let key = if l.url_file.is_some() {
            "url_file"
        } else {
            "url"
        };
        cx.error(
            &k.key(key),
            format!(
                "not a PostgreSQL URL ({}): {e}; write postgres://user:password@host:5432/database",
                u.redacted()
            ),
        );
    }
    if let Some(ca) = &l.ca_file {
        let full = resolve_path(base_dir, ca);
        if !full.is_file() {
            cx.error(
                &k.key("ca_file"),
                format!("{} does not exist", full.display()),
            );
        }
    }
    if l.lease_ttl.0 < Duration::from_secs(3) {
        cx.error(
            &k.key("lease_ttl"),
            "must be at least 3s (the heartbeat renews at a third of it)".into(),
        );
    }
    if l.batch == 0 || l.batch > 10_000 {
        cx.error(&k.key("batch"), "must be between 1 and 10000".into());
    }
    if let Some(i) = &l.instance
        && (i.is_empty() || i.len() > 200 || i.chars().any(|c| c.is_control()))
    {
        cx.error(
            &k.key("instance"),
            "must be 1 to 200 printable characters".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_shown() {
        let u = LedgerUrl("postgres://cutover:s3cret@db.example:5432/cutover".into());
        assert_eq!(
            u.redacted(),
            "postgres://cutover:***@db.example:5432/cutover"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
        let u = LedgerUrl("postgres://cutover@127.0.0.1:5/c".into());
        assert_eq!(u.redacted(), "postgres://cutover@127.0.0.1:5/c");
        let u = LedgerUrl("host=/tmp user=x password=y".into());
        assert_eq!(u.redacted(), "host=/tmp user=x password=***");
    }
}
