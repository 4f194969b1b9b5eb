//! The SMTP listener (intake): one tokio task per connection running our own session state
//! machine on `smtp-proto`'s command parser, STARTTLS, the acceptance policy, trace stamping, and
//! the hand-off of each accepted message to the durable queue (`250` only once it is on disk).
//! It never delivers mail and never reaches into the queue's storage beyond its public API.
//!
//! Layout, by protocol phase: `listener` (accept loop, connection limits, shutdown), `proxy`
//! (PROXY protocol header), `limits` (anvil-style per-client counting and intake counters),
//! `session/` (the state machine: `conn` for framing and IO, the run loop and dispatch, then one
//! file per phase: `ehlo` with the greeting, capabilities and STARTTLS, `mail`, `rcpt`, `data`
//! with the pure DATA verdict), `policy` (pure address and relay decisions, leg planning),
//! `data` (pure DATA decoder), `stamp` (pure trace headers and loop scan), `tls` (certificates
//! and the plain/TLS stream), `reply` (reply formatting), `verify` (recipient verification:
//! known lists and probes of the target, with their cache).

pub mod data;
pub mod limits;
pub mod listener;
pub mod policy;
pub mod proxy;
pub mod reply;
pub mod session;
pub mod stamp;
pub mod tls;
pub mod verify;

use crate::config::{Config, resolve_path};
use crate::queue::Queue;
use crate::routing::Router;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use listener::{ConnTracker, serve_listener};
pub use policy::Policy;

/// Why the intake could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("recipient verification: {0}")]
    Verify(#[from] crate::outbound::resolve::ResolverError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// Everything a session needs from the configuration; replaced as a whole on reload.
pub struct Settings {
    pub policy: Policy,
    /// The configuration's compiled routing table (`crate::loader::Loaded::router`).
    pub router: Arc<Router>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub state_dir: PathBuf,
    /// Recipient verification (known lists, probes).
    pub verify: verify::VerifyConfig,
    /// Edge authentication (`[auth]`, ARC keys).
    pub auth: crate::auth::EdgeAuth,
}

impl Settings {
    /// Build from a validated configuration and the router compiled with it (reads the TLS PEM
    /// files).
    pub fn from_config(cfg: &Config, router: Arc<Router>) -> Result<Settings, InboundError> {
        // Relative paths are relative to the config file's directory (as `config check` reads them).
        let base = cfg.path.parent().unwrap_or(std::path::Path::new("."));
        let tls = match &cfg.gateway.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(tls::load_server_config(
                &resolve_path(base, &t.cert),
                &resolve_path(base, &t.key),
            )?)),
            None => None,
        };
        Ok(Settings {
            policy: Policy::from_gateway(&cfg.gateway),
            router,
            tls,
            state_dir: resolve_path(base, &cfg.gateway.state_dir),
            verify: verify::VerifyConfig::from_config(cfg)?,
            auth: crate::auth::EdgeAuth::new(cfg)?,
        })
    }
}

/// Shared state of the intake: current settings (swappable), the queue, connection counts, the
/// recipient verification cache.
pub struct Inbound {
    settings: RwLock<Arc<Settings>>,
    pub queue: Queue,
    pub conns: ConnTracker,
    pub rates: limits::RateLimiter,
    pub stats: Arc<limits::IntakeStats>,
    pub verifier: verify::Verifier,
    /// Accepted recipients per target and message sizes (shared with the scheduler by `serve`).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// What edge authentication found and decided.
    pub auth_stats: Arc<crate::auth::AuthStats>,
}

impl Inbound {
    pub fn new(settings: Settings, queue: Queue) -> Arc<Inbound> {
        Arc::new(Inbound {
            settings: RwLock::new(Arc::new(settings)),
            queue,
            conns: ConnTracker::default(),
            rates: limits::RateLimiter::default(),
            stats: Arc::default(),
            verifier: verify::Verifier::default(),
            telemetry: Arc::default(),
            auth_stats: Arc::default(),
        })
    }

    /// The settings in force now (sessions take one snapshot per connection).
    pub fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Atomically switch to new settings (SIGHUP reload); sessions already running keep theirs.
    /// Cached verification answers are dropped (targets or their users may have changed).
    pub fn replace_settings(&self, s: Settings) {
        let new = Arc::new(s);
        match self.settings.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        self.verifier.clear();
    }
}
