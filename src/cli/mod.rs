//! Command-line surface (clap derive): argument parsing, exit codes and human/JSON output.
//! Each command's handler lives in its own file; none of them holds protocol logic.

mod arc_cmd;
mod backfill_cmd;
mod config_cmd;
mod demo_cmd;
mod dns_cmd;
mod queue_cmd;
mod route_cmd;
mod serve_cmd;
mod wave_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub const DEFAULT_CONFIG: &str = "/etc/cutover/cutover.toml";

/// cutover: mail-migration gateway (SMTP intake, split/dual delivery, IMAP backfill).
#[derive(Parser, Debug)]
#[command(name = "cutover", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `-c/--config`, shared by every command.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(short = 'c', long = "config", value_name = "PATH", default_value = DEFAULT_CONFIG, global = true)]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (SMTP listener, delivery, admin HTTP).
    Serve(serve_cmd::ServeArgs),
    /// Zero-setup tour: stand-in old/new servers, sample mail, where each message went.
    Demo(demo_cmd::DemoArgs),
    /// Validate the configuration.
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCmd,
    },
    /// Explain routing decisions.
    Route {
        #[command(subcommand)]
        command: route_cmd::RouteCmd,
    },
    /// Inspect and operate on the queue (live through the admin API, or offline).
    Queue {
        #[command(subcommand)]
        command: queue_cmd::QueueCmd,
    },
    /// Copy mail history over IMAP.
    Backfill {
        #[command(subcommand)]
        command: backfill_cmd::BackfillCmd,
    },
    /// Check a domain's DNS for the MX switch (MX, TTL, SPF, MTA-STS).
    Dns {
        #[command(subcommand)]
        command: dns_cmd::DnsCmd,
    },
    /// Waves (routing rules with a window): when each switches, and whether it is ready.
    Wave {
        #[command(subcommand)]
        command: wave_cmd::WaveCmd,
    },
    /// ARC sealing: the DNS record of each target's sealing key.
    Arc {
        #[command(subcommand)]
        command: arc_cmd::ArcCmd,
    },
}

pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => serve_cmd::run(a),
        Command::Demo(a) => demo_cmd::run_cmd(a),
        Command::Config { command } => config_cmd::run(command),
        Command::Route { command } => route_cmd::run(command),
        Command::Queue { command } => queue_cmd::run(command),
        Command::Backfill { command } => backfill_cmd::run(command),
        Command::Dns { command } => dns_cmd::run(command),
        Command::Wave { command } => wave_cmd::run(command),
        Command::Arc { command } => arc_cmd::run(command),
    }
}

/// Load the config or print every diagnostic (file:line: key: message) and fail with exit 1.
pub fn load_config(
    path: &std::path::Path,
) -> anyhow::Result<Result<cutover::loader::Loaded, ExitCode>> {
    match cutover::loader::load(path) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("{w}");
            }
            Ok(Ok(l))
        }
        Err(cutover::config::ConfigError::Invalid(diags)) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!("{}: {} error(s)", path.display(), diags.len());
            Ok(Err(ExitCode::from(1)))
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(Err(ExitCode::from(1)))
        }
    }
}
