//! The IMAP backfill engine (DESIGN.md §3 "Backfill passes"): copies mail history from the
//! source to the destination server per `[[backfill.job]]`, without duplicates, resumably, and
//! reports convergence. Never speaks SMTP; never decides routes.
//!
//! Layout: `session` (connect, TLS, auth), `utf7`, `namespace` and `plan` (folder names and
//! mapping), `index` (multiplicity decision), `state` (per-folder UIDVALIDITY + watermark),
//! `imap_ops` (every IMAP folder operation: NAMESPACE, LIST, STATUS, indexing, copying, flags),
//! `maildir` (a local Maildir++ store: storage only), `endpoint` (one set of folder operations
//! over either), `throttle` (back-off hints), `runner` (jobs, mailboxes, shards), `progress`
//! and `report`.

pub mod endpoint;
pub mod gmail;
pub mod imap_ops;
pub mod index;
pub mod lease;
pub mod maildir;
pub mod meta;
pub mod namespace;
pub mod oauth;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod report;
pub mod runner;
pub mod session;
pub mod state;
pub mod throttle;
pub mod transform;
pub mod uidset;
pub mod utf7;
pub mod worker;

use std::time::Duration;

/// Timeout of one network round trip: an IMAP command (connect, login, small commands), an
/// OAuth token request.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a backfill step failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Connection-level trouble (reset, EOF, BYE, TLS, parse): reconnect and retry.
    #[error("{0}")]
    Connection(String),
    /// The server asked us to slow down (`[THROTTLED]`, `[UNAVAILABLE]`, O365's "Suggested
    /// Backoff Time"): pause the account, honouring the hint, then retry.
    #[error("server throttled: {reply}")]
    Throttled {
        reply: String,
        hint: Option<Duration>,
    },
    /// A command was refused (NO/BAD) for a reason retrying won't fix.
    #[error("server refused: {0}")]
    Refused(String),
    #[error("login failed for {user}: {reply}")]
    Auth { user: String, reply: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

impl BackfillError {
    /// Worth reconnecting and trying again.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            BackfillError::Connection(_)
                | BackfillError::Throttled { .. }
                | BackfillError::Timeout(_)
        )
    }

    /// Classify an async-imap error.
    pub fn from_imap(context: &str, e: async_imap::error::Error) -> BackfillError {
        use async_imap::error::Error as E;
        match e {
            E::No(s) | E::Bad(s) => {
                if let Some(hint) = throttle::hint(&s) {
                    BackfillError::Throttled {
                        reply: format!("{context}: {s}"),
                        hint,
                    }
                } else {
                    BackfillError::Refused(format!("{context}: {s}"))
                }
            }
            E::Validate(v) => BackfillError::Refused(format!("{context}: {v}")),
            other => BackfillError::Connection(format!("{context}: {other}")),
        }
    }
}

/// Result alias for the engine.
pub type Result<T> = std::result::Result<T, BackfillError>;
