//! The running gateway: opens the queue, binds every SMTP listener and the admin API, starts
//! the delivery scheduler, reloads configuration atomically, and drains on shutdown. Shared by
//! `cutover serve` and `cutover demo`. Owns wiring only: no protocol logic, no signals.

use crate::config::Config;
use crate::inbound::{Inbound, Settings};
use crate::outbound::scheduler::Scheduler;
use crate::queue::Queue;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
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
}

/// How to run the gateway.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Start the delivery scheduler (off only for intake benchmarks).
    pub deliver: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { deliver: true }
    }
}

/// A started gateway.
pub struct Server {
    pub queue: Queue,
    pub inbound: Arc<Inbound>,
    pub scheduler: Option<Arc<Scheduler>>,
    config_tx: watch::Sender<Arc<Config>>,
    stop_tx: watch::Sender<bool>,
    smtp_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    listeners: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    delivery: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind everything and start serving.
    pub async fn start(cfg: Config, opts: ServerOptions) -> Result<Server, ServerError> {
        // Relative to the config file's directory, like every path in it.
        let state_dir = crate::config::resolve_path(
            cfg.path.parent().unwrap_or(std::path::Path::new(".")),
            &cfg.gateway.state_dir,
        );
        std::fs::create_dir_all(&state_dir).map_err(|source| ServerError::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let settings = Settings::from_config(&cfg)?;
        let queue = Queue::open(&state_dir)?;
        let mut bound = Vec::new();
        for addr in &cfg.gateway.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    key: "gateway.listen",
                    addr: *addr,
                    source,
                })?;
            bound.push(l);
        }
        let admin_listener = TcpListener::bind(cfg.admin.listen)
            .await
            .map_err(|source| ServerError::Bind {
                key: "admin.listen",
                addr: cfg.admin.listen,
                source,
            })?;
        let admin_addr = admin_listener.local_addr().unwrap_or(cfg.admin.listen);
        let smtp_addrs: Vec<SocketAddr> =
            bound.iter().filter_map(|l| l.local_addr().ok()).collect();
        for a in &smtp_addrs {
            tracing::info!(addr = %a, hostname = %cfg.gateway.hostname, "SMTP listening");
        }
        tracing::info!(addr = %admin_addr, "admin HTTP listening");

        let cfg = Arc::new(cfg);
        let (config_tx, config_rx) = watch::channel(cfg.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let inbound = Inbound::new(settings, queue.clone());
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
            // Every delivery is recorded in the ledger the backfill engine reads.
            let ledger = crate::ledger::Ledger::open(queue.store().db())?;
            let sched = Scheduler::new(
                queue.clone(),
                config_rx.clone(),
                Some(ledger.delivered_hook()),
            )?;
            let task = tokio::spawn(sched.clone().run(stop_rx.clone()));
            (Some(sched), Some(task))
        } else {
            tracing::info!("delivery is off: the scheduler is not started");
            (None, None)
        };
        let mut admin_stop = stop_rx.clone();
        let state = crate::admin::AdminState::new(
            queue.clone(),
            config_rx,
            scheduler.as_ref().map(|s| s.stats.clone()),
        );
        let admin = tokio::spawn(async move {
            let r = crate::admin::serve(admin_listener, state, async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "admin HTTP server failed");
            }
        });
        Ok(Server {
            queue,
            inbound,
            scheduler,
            config_tx,
            stop_tx,
            smtp_addrs,
            admin_addr,
            listeners,
            admin,
            delivery,
        })
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
    pub fn reload(&self, cfg: Config) -> Result<(), ServerError> {
        let settings = Settings::from_config(&cfg)?;
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
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin).await;
        if let Some(d) = self.delivery {
            // In-flight attempts end within their SMTP timeouts; don't wait longer than the drain.
            if tokio::time::timeout(drain, d).await.is_err() {
                tracing::warn!("delivery attempts still running at exit; they will be retried");
            }
        }
        self.queue.flush().await?;
        tracing::info!("stopped");
        Ok(())
    }
}
