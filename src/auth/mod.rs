//! Edge authentication (`[auth]`, `targets.NAME.arc`): SPF on MAIL FROM and HELO, DKIM, DMARC
//! and the incoming ARC chain evaluated at intake with mail-auth, through the gateway's hickory
//! resolver (its `[dns]` servers and its cache) within one time budget per message; the
//! decision under the configured policy (`verdict`, pure); the one `Authentication-Results:`
//! stamped with `gateway.hostname` as authserv-id after removing incoming ones that claim it
//! (`headers`, pure); and one ARC set per message and target sealed over the bytes exactly as
//! they will be delivered (`seal`). It owns the counters of what it found. It never reads the
//! socket, never stores or delivers a message (the intake does, with what this returns), and
//! never changes a byte of the message besides adding its header fields on top and removing
//! the forged ones.

pub mod headers;
pub mod seal;
pub mod verdict;
mod verify;

pub use verdict::{Decision, Outcome, Reason};
pub use verify::Client;

use crate::config::{Auth, Config};
use seal::Sealer;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What can go wrong setting up or sealing.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("ARC key {file}: {why}")]
    Key { file: String, why: String },
    #[error("DNS resolver for [auth]: {0}")]
    Resolver(String),
    #[error("ARC sealing: {0}")]
    Seal(String),
}

/// The methods counted in `cutover_auth_results_total`.
pub const METHODS: [&str; 4] = ["spf", "dkim", "dmarc", "arc"];
/// The results counted, in [`Outcome`] order.
pub const OUTCOMES: [Outcome; 7] = [
    Outcome::Pass,
    Outcome::Fail,
    Outcome::SoftFail,
    Outcome::Neutral,
    Outcome::None,
    Outcome::TempError,
    Outcome::PermError,
];
/// The decisions counted in `cutover_auth_decisions_total`.
pub const DECISIONS: [&str; 4] = ["accept", "quarantine", "reject", "tempfail"];

/// Counters of evaluated messages: results per method, decisions.
#[derive(Debug, Default)]
pub struct AuthStats {
    results: [[AtomicU64; OUTCOMES.len()]; METHODS.len()],
    decisions: [AtomicU64; DECISIONS.len()],
}

impl AuthStats {
    fn count(&self, results: [Outcome; METHODS.len()], decision: &Decision) {
        for (m, r) in results.iter().enumerate() {
            let i = OUTCOMES.iter().position(|o| o == r).unwrap_or(0);
            self.results[m][i].fetch_add(1, Ordering::Relaxed);
        }
        let d = DECISIONS
            .iter()
            .position(|l| *l == decision.label())
            .unwrap_or(0);
        self.decisions[d].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages whose `method` (an index into [`METHODS`]) came out as `outcome`.
    pub fn result_count(&self, method: usize, outcome: Outcome) -> u64 {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.results
            .get(method)
            .map_or(0, |r| r[i].load(Ordering::Relaxed))
    }

    /// Messages decided as `DECISIONS[i]`.
    pub fn decision_count(&self, i: usize) -> u64 {
        self.decisions
            .get(i)
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }
}

/// The message as it is to be stored, and what to tell the client.
#[derive(Debug)]
pub struct Processed {
    pub decision: Decision,
    /// Our fields on top (`Authentication-Results:`, a quarantine header, then the trace
    /// fields the intake passed), the forged `Authentication-Results:` removed. Empty when
    /// the message is refused.
    pub message: Vec<u8>,
    /// The ARC set to put on top of each copy, by target name.
    pub seals: BTreeMap<String, String>,
    /// `spf=… dkim=… dmarc=… arc=…` for the acceptance line.
    pub summary: String,
}

/// Edge authentication as configured: the settings, the authenticator (None when
/// `auth.verify` is off), the sealing keys by target. Replaced as a whole on reload; the
/// counters ([`AuthStats`]) live with the intake.
pub struct EdgeAuth {
    settings: Auth,
    hostname: String,
    accept_domains: HashSet<String>,
    authenticator: Option<mail_auth::MessageAuthenticator>,
    sealers: BTreeMap<String, Sealer>,
    /// Targets whose copies are converted (TNEF → MIME) at delivery: their seal covers the
    /// converted copy (the conversion is deterministic, so delivery produces the same bytes).
    tnef: BTreeMap<String, crate::convert::TnefOptions>,
}

impl std::fmt::Debug for EdgeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeAuth")
            .field("settings", &self.settings)
            .field("verify", &self.authenticator.is_some())
            .field("sealers", &self.sealers)
            .finish()
    }
}

impl EdgeAuth {
    /// Set up from a loaded configuration: the resolver of `[dns]`, the keys of every target's
    /// `arc`.
    pub fn new(cfg: &Config) -> Result<EdgeAuth, AuthError> {
        let settings = cfg.auth.clone();
        let authenticator = if settings.verify {
            Some(verify::authenticator(&cfg.dns, settings.time_budget.0)?)
        } else {
            None
        };
        Ok(EdgeAuth {
            hostname: cfg.gateway.hostname.clone(),
            accept_domains: cfg
                .gateway
                .accept_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            sealers: sealers(cfg)?,
            tnef: cfg
                .targets
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.tnef()?)))
                .collect(),
            settings,
            authenticator,
        })
    }

    /// Whether a message from this client is evaluated (and so held until the end of DATA):
    /// `auth.verify` on and the client outside `trusted_networks`.
    pub fn evaluates(&self, trusted: bool) -> bool {
        self.authenticator.is_some() && !trusted
    }
}

/// The sealer of each target with `arc`.
fn sealers(cfg: &Config) -> Result<BTreeMap<String, Sealer>, AuthError> {
    let base = cfg.path.parent().unwrap_or(Path::new("."));
    cfg.targets
        .iter()
        .filter_map(|(name, t)| t.arc.as_ref().map(|a| (name, a)))
        .map(|(name, a)| Ok((name.clone(), Sealer::load(a, base)?)))
        .collect()
}

/// The key records of every target with `arc`: `(target, sealer)`, for `cutover arc key`.
pub fn key_records(cfg: &Config) -> Result<Vec<(String, Sealer)>, AuthError> {
    Ok(sealers(cfg)?.into_iter().collect())
}

/// The loader's check: each `arc` key file (relative to `base`) parses, and sealing has
/// results to seal.
pub fn check(c: &Config, base: &Path, cx: &mut crate::config::Reader<'_>) {
    for (name, t) in &c.targets {
        let Some(a) = &t.arc else { continue };
        let kp = crate::config::KeyPath::root()
            .key("targets")
            .key(name)
            .key("arc");
        if let Err(e) = Sealer::load(a, base) {
            cx.error(&kp.key("private_key_file"), e.to_string());
        }
        if !c.auth.verify {
            cx.error(
                &kp,
                "ARC sealing needs auth.verify = true (the seal carries the intake's results)"
                    .into(),
            );
        }
    }
}
