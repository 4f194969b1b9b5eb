//! `cutover demo`: the zero-setup tour (see `cutover::demo`). Logging and exit codes only.

use anyhow::Context;
use cutover::demo::{DemoOptions, run};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Run both phases quickly, check where the mail went, and exit (CI mode).
    #[arg(long)]
    pub once: bool,
    /// Directory for the stand-in Maildirs, queue state and generated config.
    #[arg(long, default_value = "cutover-demo")]
    pub dir: PathBuf,
    /// SMTP listen address of the demo gateway.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub smtp: SocketAddr,
    /// Admin HTTP address of the demo gateway.
    #[arg(long, default_value = "127.0.0.1:8025")]
    pub admin: SocketAddr,
    /// When wave 2 switches to the new server (default 60s, or 3s with --once).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wave_delay: Option<Duration>,
    /// Print the result as JSON at the end.
    #[arg(long)]
    pub json: bool,
}

pub fn run_cmd(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let opts = DemoOptions {
        dir: a.dir.clone(),
        once: a.once,
        wave_delay: a.wave_delay.unwrap_or(if a.once {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(60)
        }),
        smtp_listen: a.smtp,
        admin_listen: a.admin,
    };
    let mut out = std::io::stdout();
    let report = rt
        .block_on(run(opts, &mut out))
        .with_context(|| "demo failed")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    // Every message cutover accepted must have landed somewhere.
    let lost: Vec<_> = report
        .sent
        .iter()
        .filter(|s| s.answer.starts_with('2') && s.landed.is_empty())
        .collect();
    if !lost.is_empty() {
        eprintln!(
            "cutover demo: {} accepted message(s) did not arrive in time",
            lost.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
