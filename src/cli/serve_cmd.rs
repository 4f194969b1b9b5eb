//! `cutover serve`: load the config, open the queue, bind every `gateway.listen` address and the
//! admin API, start the delivery scheduler (unless `--no-deliver`), run until SIGTERM/SIGINT (drain: stop accepting, let sessions in DATA finish within
//! a bound, flush the queue, exit 0), and reload on SIGHUP (routing, policy, TLS — atomically; an
//! invalid new config is logged and the old one kept). Also sets up logging (`--log-format`).
//! No protocol logic here.

use super::ConfigArg;
use anyhow::Context;
use cutover::inbound::{Inbound, Settings};
use cutover::queue::Queue;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log line format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How long SIGTERM waits for sessions in DATA to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Accept and queue only; do not run the delivery scheduler (intake benchmarks, maintenance).
    #[arg(long)]
    pub no_deliver: bool,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(a.log_format);
    let loaded = match super::load_config(&a.config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(a, loaded.config))
}

async fn serve(a: ServeArgs, cfg: cutover::config::Config) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal that arrives once the port is open must not kill us outright.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Relative to the config file's directory, like every path in it.
    let state_dir = cutover::config::resolve_path(
        cfg.path.parent().unwrap_or(Path::new(".")),
        &cfg.gateway.state_dir,
    );
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating state_dir {}", state_dir.display()))?;
    let settings = Settings::from_config(&cfg).context("setting up the SMTP listener")?;
    let queue = Queue::open(&state_dir)
        .with_context(|| format!("opening the queue under {}", state_dir.display()))?;

    let mut listeners = Vec::new();
    for addr in &cfg.gateway.listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("gateway.listen: cannot bind {addr}"))?;
        tracing::info!(%addr, hostname = %cfg.gateway.hostname, "SMTP listening");
        listeners.push(l);
    }
    let admin_listener = TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", cfg.admin.listen))?;

    let inbound = Inbound::new(settings, queue.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    // The delivery engine follows config reloads through this channel.
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
    let (scheduler, stats) = if a.no_deliver {
        tracing::info!("--no-deliver: the delivery scheduler is not started");
        (None, None)
    } else {
        let sched =
            cutover::outbound::scheduler::Scheduler::new(queue.clone(), cfg_rx.clone(), None)
                .context("starting the delivery scheduler")?;
        let stats = sched.stats.clone();
        (Some(tokio::spawn(sched.run(stop_rx.clone()))), Some(stats))
    };

    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(cutover::inbound::serve_listener(
            l,
            inbound.clone(),
            stop_rx.clone(),
        )));
    }
    let mut admin_stop = stop_rx.clone();
    let admin = tokio::spawn(cutover::admin::serve(
        admin_listener,
        cutover::admin::AdminState::new(queue.clone(), cfg_rx, stats),
        async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        },
    ));

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = hup.recv() => {
                if let Some(new) = reload(&a.config.config, &cfg, &inbound) {
                    let _ = cfg_tx.send(Arc::new(new));
                }
            }
        }
    }

    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let open = inbound.conns.open();
    if open > 0 {
        tracing::info!(sessions = open, limit = ?a.drain_timeout, "waiting for sessions to finish");
    }
    if !inbound.conns.wait_idle(a.drain_timeout).await {
        tracing::warn!(
            sessions = inbound.conns.open(),
            "drain timeout: closing the remaining sessions"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
    if let Some(s) = scheduler {
        // In-flight attempts end within their own SMTP timeouts; don't wait longer than the drain.
        if tokio::time::timeout(a.drain_timeout, s).await.is_err() {
            tracing::warn!("delivery attempts still running at exit; they will be retried");
        }
    }
    if let Err(e) = queue.flush().await {
        tracing::error!(error = %e, "final queue flush failed");
        return Ok(ExitCode::from(1));
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: load and validate the file again; switch atomically or keep the old settings.
/// Returns the new configuration when it was applied (for the delivery engine).
fn reload(
    path: &Path,
    running: &cutover::config::Config,
    inbound: &Arc<Inbound>,
) -> Option<cutover::config::Config> {
    let cfg = match cutover::config::load(path) {
        Ok(l) => {
            for w in &l.warnings {
                tracing::warn!("{w}");
            }
            l.config
        }
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("reload: {line}");
            }
            tracing::error!("reload failed: keeping the running configuration");
            return None;
        }
    };
    match Settings::from_config(&cfg) {
        Ok(s) => {
            if cfg.gateway.listen != running.gateway.listen
                || cfg.gateway.state_dir != running.gateway.state_dir
                || cfg.admin.listen != running.admin.listen
            {
                tracing::warn!(
                    "reload: listen addresses, state_dir and admin.listen need a restart; kept"
                );
            }
            inbound.replace_settings(s);
            tracing::info!("configuration reloaded (routing, policy, TLS, targets)");
            Some(cfg)
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed: keeping the running configuration");
            None
        }
    }
}
