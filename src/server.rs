//! The running gateway: opens the queue, binds every SMTP listener and the admin API, starts
//! the delivery scheduler, reloads configuration atomically, and drains on shutdown. Shared by
//! `cutover serve` and `cutover demo`. Owns wiring only: no protocol logic, no signals.
//!
//! Storage failure. A storage watchdog ([`crate::queue::health`]) probes the queue every 2 s: a
//! small key written to the `health` tree, flushed ([`Queue::flush`]), read back, plus a spool
//! file written and fsynced, each probe bounded by 5 s. `/healthz` serves the same probe (cached
//! for 1 s): `200 ok`, or `503` with the reason as JSON. sled 0.34 cannot recover from an IO
//! error in a log write (disk full, EIO) without being reopened: it either fails every later
//! write, or, when a flush misses the error's wake-up, blocks every later call forever (the
//! flush keeps sled's global lock). The gateway cannot reopen the db in place (sessions,
//! scheduler, ledger and admin hold it), so after 3 store probe failures in a row (≈ 6 s; ≈ 11 s
//! when the store hangs: the first probe waits for its timeout, the next ones fail at once while
//! its call is still stuck) [`Server::failed`] resolves with the reason;
//! `cutover serve` then logs it, stops the listeners, gives sessions a short drain, and exits with
//! code 75 (EX_TEMPFAIL), forcibly 15 s later if the orderly shutdown hangs, so the supervisor
//! (systemd `Restart=on-failure`) starts it again and the reopen runs recovery. A probe that
//! passes again resets the count (nothing restarts for a failure that cleared), and a spool-only
//! failure (the spool file cannot be written while the store works) makes `/healthz` unhealthy
//! without ever restarting. Because sled can block the async workers that call it, the watchdog
//! and the admin API each run on a thread and runtime of their own: both keep working when the
//! SMTP and delivery runtime is stuck.

use crate::config::Config;
use crate::inbound::{Inbound, Settings};
use crate::loader::Loaded;
use crate::outbound::scheduler::Scheduler;
use crate::queue::Queue;
use crate::queue::health::{Health, WatchdogOptions};
use crate::routing::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Why the gateway could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("creating state_dir {path}: {source}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the SMTP listener: {0}")]
    Inbound(#[from] crate::inbound::InboundError),
    #[error("opening the queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("{key}: cannot bind {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the delivery ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("starting delivery: {0}")]
    Scheduler(#[from] crate::outbound::scheduler::SchedulerError),
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The waves as `wave_not_converged` alert rules see them: each wave's next switch and whether
/// its mailboxes' backfill converged (what blocks its verdict otherwise).
fn wave_facts(
    queue: Queue,
    routes: watch::Receiver<Arc<crate::routing::Router>>,
) -> crate::alerts::WaveSource {
    Arc::new(move |cfg, now| {
        let msgs = queue.list().unwrap_or_default();
        let routes = routes.borrow().clone();
        crate::waves::load::statuses(cfg, &routes, &msgs, now)
            .into_iter()
            .map(|w| crate::alerts::rules::WaveFact {
                switch_at: w.wave.next_switch.as_ref().and_then(|n| {
                    crate::config::values::Timestamp::parse(&n.at)
                        .ok()
                        .map(|t| t.0)
                }),
                converged: w.backfill.converged == w.backfill.mailboxes && w.verdict.ready,
                unconverged: w.verdict.reasons,
                name: w.wave.name,
            })
            .collect()
    })
}

/// Serve the admin API on a thread and runtime of its own, so that `/healthz` (and the queue
/// API) still answer when the gateway's runtime is stuck (after a storage failure sled can block
/// the workers that call it forever). The returned receiver resolves when the thread ends.
fn start_admin(
    listener: std::net::TcpListener,
    state: crate::admin::AdminState,
    mut stop: watch::Receiver<bool>,
) -> Result<oneshot::Receiver<()>, ServerError> {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    crate::own_thread::spawn("admin-http", done_tx, move || async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin HTTP: cannot use the listener");
                return;
            }
        };
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::admin::serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    })
    .map_err(ServerError::Thread)?;
    Ok(done_rx)
}

/// How to run the gateway.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Start the delivery scheduler (off only for intake benchmarks).
    pub deliver: bool,
    /// Watch the storage and report a persistent failure through [`Server::failed`]
    /// (`None`: no watchdog; `/healthz` still probes).
    pub watchdog: Option<WatchdogOptions>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            deliver: true,
            watchdog: Some(WatchdogOptions::default()),
        }
    }
}

/// A started gateway.
pub struct Server {
    pub queue: Queue,
    pub inbound: Arc<Inbound>,
    pub scheduler: Option<Arc<Scheduler>>,
    /// The `[[alert]]` rules' task and its recent events.
    pub alerts: Arc<crate::alerts::Alerts>,
    health: Arc<Health>,
    failed_rx: watch::Receiver<Option<String>>,
    config_tx: watch::Sender<Arc<Config>>,
    /// The routing table compiled with the configuration in force (admin reroute).
    routes_tx: watch::Sender<Arc<Router>>,
    stop_tx: watch::Sender<bool>,
    smtp_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    listeners: Vec<JoinHandle<()>>,
    /// Resolve (sender dropped) when the admin and watchdog threads end.
    admin_done: oneshot::Receiver<()>,
    delivery: Option<JoinHandle<()>>,
    watchdog_done: Option<oneshot::Receiver<()>>,
    /// Fleet mode: the ledger outbox's shipper, stopped after delivery.
    shipper: Option<Shipping>,
}

/// The ledger outbox's shipper task and its stop signal.
type Shipping = (watch::Sender<bool>, JoinHandle<()>);

/// The SMTP listeners and the admin listener of `cfg`, bound, with their local addresses.
type Bound = (
    Vec<tokio::net::TcpListener>,
    std::net::TcpListener,
    Vec<SocketAddr>,
    SocketAddr,
);

fn bind_all(cfg: &Config) -> Result<Bound, ServerError> {
    let mut bound = Vec::new();
    for addr in &cfg.gateway.listen {
        let l = crate::inbound::listener::bind(*addr).map_err(|source| ServerError::Bind {
            key: "gateway.listen",
            addr: *addr,
            source,
        })?;
        bound.push(l);
    }
    // A std listener: the admin API runs on a runtime of its own (see `start_admin`).
    let admin_listener = std::net::TcpListener::bind(cfg.admin.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServerError::Bind {
            key: "admin.listen",
            addr: cfg.admin.listen,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(cfg.admin.listen);
    let smtp_addrs: Vec<SocketAddr> = bound.iter().filter_map(|l| l.local_addr().ok()).collect();
    for a in &smtp_addrs {
        tracing::info!(addr = %a, hostname = %cfg.gateway.hostname, "SMTP listening");
    }
    Ok((bound, admin_listener, smtp_addrs, admin_addr))
}

/// Start the storage watchdog when asked; `failed_tx` gets the reason it gives up.
fn start_watchdog(
    health: &Arc<Health>,
    opts: Option<WatchdogOptions>,
    stop_rx: &watch::Receiver<bool>,
    failed_tx: watch::Sender<Option<String>>,
) -> Result<Option<oneshot::Receiver<()>>, ServerError> {
    let Some(wopts) = opts else {
        return Ok(None);
    };
    let (done_tx, done_rx) = oneshot::channel();
    let on_failure = move |reason: String| {
        tracing::error!(%reason, "queue storage has failed persistently");
        let _ = failed_tx.send(Some(reason));
    };
    health
        .spawn_watchdog(wopts, stop_rx.clone(), on_failure, done_tx)
        .map_err(ServerError::Thread)?;
    Ok(Some(done_rx))
}

/// The ledger every delivery is recorded in, the one the backfill engine reads (fleet mode:
/// also the outbox shipped to the shared ledger).
fn delivery_ledger(cfg: &Config, queue: &Queue) -> Result<crate::ledger::Ledger, ServerError> {
    Ok(if cfg.ledger.shared() {
        crate::ledger::Ledger::on_queue_with_outbox(queue)?
    } else {
        crate::ledger::Ledger::on_queue(queue)?
    })
}

/// Fleet mode: start shipping the ledger outbox to the shared PostgreSQL (never blocks start:
/// the database may be down; the outbox waits), and mirroring the jobs' shared pass reports.
fn start_shipper(cfg: &Config, queue: &Queue) -> Result<Option<Shipping>, ServerError> {
    if !cfg.ledger.shared() {
        return Ok(None);
    }
    let base = cfg.path.parent().unwrap_or(std::path::Path::new("."));
    let db = crate::pgdb::PgDb::new(&cfg.ledger, base).map_err(crate::ledger::LedgerError::from)?;
    let instance = cfg.ledger.instance_name();
    tracing::info!(database = %db.url(), %instance, "shared ledger: shipping the outbox");
    let shipper = crate::ledger::outbox::Shipper::new(
        queue.store().db(),
        db.clone(),
        instance,
        cfg.ledger.batch,
        cfg.ledger.flush_interval.0,
    )?;
    let (tx, rx) = watch::channel(false);
    let jobs: Vec<String> = cfg.backfill.jobs.iter().map(|j| j.name.clone()).collect();
    if !jobs.is_empty() {
        let state_dir = crate::config::resolve_path(base, &cfg.gateway.state_dir);
        tokio::spawn(crate::backfill::lease::mirror_reports(
            db.clone(),
            jobs,
            state_dir,
            Duration::from_secs(5),
            rx.clone(),
        ));
    }
    Ok(Some((tx, tokio::spawn(shipper.run(rx)))))
}

impl Server {
    /// Bind everything and start serving.
    pub async fn start(loaded: Loaded, opts: ServerOptions) -> Result<Server, ServerError> {
        let Loaded {
            config: cfg,
            router,
            ..
        } = loaded;
        // Relative to the config file's directory, like every path in it.
        let state_dir = crate::config::resolve_path(
            cfg.path.parent().unwrap_or(std::path::Path::new(".")),
            &cfg.gateway.state_dir,
        );
        std::fs::create_dir_all(&state_dir).map_err(|source| ServerError::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let settings = Settings::from_config(&cfg, router.clone())?;
        let queue = Queue::open(&state_dir)?;
        let (bound, admin_listener, smtp_addrs, admin_addr) = bind_all(&cfg)?;
        tracing::info!(addr = %admin_addr, "admin HTTP listening");

        let cfg = Arc::new(cfg);
        let (config_tx, config_rx) = watch::channel(cfg.clone());
        let (routes_tx, routes_rx) = watch::channel(router);
        let (stop_tx, stop_rx) = watch::channel(false);
        let inbound = Inbound::new(settings, queue.clone());
        // Every configured target has its series from the start (zeros, not absent).
        inbound
            .telemetry
            .register_targets(cfg.targets.keys().map(String::as_str));
        let listeners = bound
            .into_iter()
            .map(|l| {
                tokio::spawn(crate::inbound::serve_listener(
                    l,
                    inbound.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        let (scheduler, delivery) = if opts.deliver {
            let ledger = delivery_ledger(&cfg, &queue)?;
            let sched = Scheduler::with_telemetry(
                queue.clone(),
                config_rx.clone(),
                Some(ledger.delivered_hook()),
                inbound.telemetry.clone(),
            )?;
            let task = tokio::spawn(sched.clone().run(stop_rx.clone()));
            (Some(sched), Some(task))
        } else {
            tracing::info!("delivery is off: the scheduler is not started");
            (None, None)
        };
        let (alerts, _alerts_task) = crate::alerts::spawn(
            crate::alerts::Inputs {
                queue: queue.clone(),
                config: config_rx.clone(),
                routes: routes_rx.clone(),
                scheduler: scheduler.clone(),
                waves: Some(wave_facts(queue.clone(), routes_rx.clone())),
            },
            stop_rx.clone(),
        );
        let health = Health::new(queue.clone());
        let (failed_tx, failed_rx) = watch::channel(None);
        let watchdog_done = start_watchdog(&health, opts.watchdog, &stop_rx, failed_tx)?;
        let state = crate::admin::AdminState::new(
            queue.clone(),
            config_rx,
            routes_rx,
            scheduler.as_ref().map(|s| s.stats.clone()),
        )
        .with_health(health.clone())
        .with_intake(inbound.stats.clone())
        .with_auth_stats(inbound.auth_stats.clone())
        .with_verify_stats(inbound.verifier.stats.clone())
        .with_telemetry(inbound.telemetry.clone())
        .with_alerts(alerts.clone());
        let admin_done = start_admin(admin_listener, state, stop_rx.clone())?;
        let shipper = start_shipper(&cfg, &queue)?;
        Ok(Server {
            queue,
            inbound,
            scheduler,
            alerts,
            health,
            failed_rx,
            config_tx,
            routes_tx,
            stop_tx,
            smtp_addrs,
            admin_addr,
            listeners,
            admin_done,
            delivery,
            watchdog_done,
            shipper,
        })
    }

    /// Resolves, with the reason, once the watchdog has found the queue storage failed for good
    /// (the gateway should then shut down and exit non-zero to be restarted); never resolves
    /// otherwise.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed_rx.clone();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            // The watchdog is gone without a verdict (stopped, or not running): never.
            Err(_) => std::future::pending().await,
        }
    }

    /// The storage health `/healthz` reports.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn smtp_addrs(&self) -> &[SocketAddr] {
        &self.smtp_addrs
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config_tx.borrow().clone()
    }

    /// Switch to a new, validated configuration (routing, policy, TLS, targets) atomically.
    /// Listen addresses, state_dir and admin.listen need a restart (logged, kept).
    pub fn reload(&self, loaded: Loaded) -> Result<(), ServerError> {
        let Loaded {
            config: cfg,
            router,
            ..
        } = loaded;
        let settings = Settings::from_config(&cfg, router.clone())?;
        let running = self.config();
        if cfg.gateway.listen != running.gateway.listen
            || cfg.gateway.state_dir != running.gateway.state_dir
            || cfg.admin.listen != running.admin.listen
        {
            tracing::warn!(
                "reload: listen addresses, state_dir and admin.listen need a restart; kept"
            );
        }
        self.inbound.replace_settings(settings);
        self.inbound
            .telemetry
            .register_targets(cfg.targets.keys().map(String::as_str));
        let _ = self.routes_tx.send(router);
        let _ = self.config_tx.send(Arc::new(cfg));
        tracing::info!("configuration reloaded (routing, policy, TLS, targets)");
        Ok(())
    }

    /// Stop accepting, let sessions finish within `drain`, stop delivery (in-flight attempts
    /// finish), flush the queue.
    pub async fn shutdown(self, drain: Duration) -> Result<(), ServerError> {
        let _ = self.stop_tx.send(true);
        for t in self.listeners {
            let _ = t.await;
        }
        if let Some(w) = self.watchdog_done {
            // Ends within one probe (bounded); the watchdog holds a queue handle.
            let _ = tokio::time::timeout(2 * crate::queue::health::PROBE_TIMEOUT, w).await;
        }
        let open = self.inbound.conns.open();
        if open > 0 {
            tracing::info!(sessions = open, limit = ?drain, "waiting for sessions to finish");
        }
        if !self.inbound.conns.wait_idle(drain).await {
            tracing::warn!(
                sessions = self.inbound.conns.open(),
                "drain timeout: closing the remaining sessions"
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin_done).await;
        if let Some(d) = self.delivery {
            // In-flight attempts end within their SMTP timeouts; don't wait longer than the drain.
            if tokio::time::timeout(drain, d).await.is_err() {
                tracing::warn!("delivery attempts still running at exit; they will be retried");
            }
        }
        if let Some((stop, task)) = self.shipper {
            // After delivery: the last records go out with the final round (bounded).
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if self.failed_rx.borrow().is_some() {
            // It would only hang or fail: the restart's recovery deals with the store.
            tracing::warn!("queue storage failed: not flushing");
        } else {
            self.queue.flush().await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
