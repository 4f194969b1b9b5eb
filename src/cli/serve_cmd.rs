//! `cutover serve`: logging (`--log-format`), signals (SIGTERM/SIGINT drain, SIGHUP reload of
//! routing, policy, TLS and targets; an invalid new config is logged and the old one kept) and
//! exit codes around [`cutover::server::Server`], which does the wiring. No protocol logic here.
//! Exit codes: 0 after a SIGTERM/SIGINT drain, 1 when the final flush fails, 75 (EX_TEMPFAIL)
//! when the queue storage failed persistently (the supervisor restarts it; see `server`).

use super::ConfigArg;
use anyhow::Context;
use cutover::server::{Server, ServerOptions};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// sysexits.h EX_TEMPFAIL: the queue storage failed; a restart (reopen, recovery) may fix it.
const EX_TEMPFAIL: u8 = 75;
/// Drain after a storage failure (sessions can only be answered 451).
const STORAGE_FAILURE_DRAIN: Duration = Duration::from_secs(5);
/// After a storage failure the process exits 75 within this long even if the orderly shutdown
/// hangs (sled can block the threads that call it forever once its log write failed).
const STORAGE_FAILURE_EXIT: Duration = Duration::from_secs(15);

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
    let code = rt.block_on(serve(a, loaded))?;
    if code == ExitCode::from(EX_TEMPFAIL) {
        // Threads stuck in storage calls must not keep the process from exiting.
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    Ok(code)
}

async fn serve(a: ServeArgs, loaded: cutover::loader::Loaded) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal that arrives once the port is open must not kill us outright.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let opts = ServerOptions {
        deliver: !a.no_deliver,
        ..ServerOptions::default()
    };
    let server = Server::start(loaded, opts).await?;
    let failed = loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break None; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break None; }
            _ = hup.recv() => reload(&a.config.config, &server),
            reason = server.failed() => break Some(reason),
        }
    };
    if let Some(reason) = failed {
        tracing::error!(
            %reason,
            "stopping: the queue storage needs a restart (reopen and recovery); exiting with 75"
        );
        // Whatever happens below, exit 75 in bounded time: the runtime itself may be stuck.
        let guard = std::thread::Builder::new()
            .name("exit-guard".into())
            .spawn(|| {
                std::thread::sleep(STORAGE_FAILURE_EXIT);
                eprintln!("cutover: orderly shutdown after the storage failure hangs; exiting 75");
                std::process::exit(i32::from(EX_TEMPFAIL));
            });
        if let Err(e) = guard {
            tracing::error!(error = %e, "cannot start the exit guard; exiting 75 now");
            std::process::exit(i32::from(EX_TEMPFAIL));
        }
        // Sessions can only get 451 now: a short drain, then the supervisor restarts us.
        if let Err(e) = server
            .shutdown(a.drain_timeout.min(STORAGE_FAILURE_DRAIN))
            .await
        {
            tracing::error!(error = %e, "shutdown after the storage failure");
        }
        return Ok(ExitCode::from(EX_TEMPFAIL));
    }
    match server.shutdown(a.drain_timeout).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!(error = %e, "shutdown");
            Ok(ExitCode::from(1))
        }
    }
}

/// SIGHUP: load and validate the file again; switch atomically or keep the old settings.
fn reload(path: &Path, server: &Server) {
    match cutover::loader::load(path) {
        Ok(l) => {
            for w in &l.warnings {
                tracing::warn!("{w}");
            }
            if let Err(e) = server.reload(l) {
                tracing::error!(error = %e, "reload failed: keeping the running configuration");
            }
        }
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("reload: {line}");
            }
            tracing::error!("reload failed: keeping the running configuration");
        }
    }
}
