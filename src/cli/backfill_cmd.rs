//! `cutover backfill run JOB [--mailbox USER] [--dry-run] [--report PATH] [--shard I/N] [--json]` and
//! `cutover backfill status JOB [--json] [--shard I/N]`: argument parsing, exit codes and human
//! output around `cutover::backfill::runner`. Exit 0 when every mailbox converged, 1 when some
//! did not (details in the report), 2 on errors.

use super::ConfigArg;
use clap::Subcommand;
use cutover::backfill::report::JobReport;
use cutover::backfill::runner::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BackfillCmd {
    /// Run one pass of a backfill job (progress bars on a TTY, a JSON report at the end).
    Run {
        /// Job name (`[[backfill.job]] name`).
        job: String,
        /// Only this mailbox (source or destination user from mailboxes_file).
        #[arg(long, value_name = "USER")]
        mailbox: Option<String>,
        /// Plan and count without writing anything.
        #[arg(long)]
        dry_run: bool,
        /// Write the JSON report here too.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// Only mailboxes in shard I of N (0-based; e.g. a Kubernetes Indexed Job's index).
        #[arg(long, value_name = "I/N", value_parser = runner::parse_shard)]
        shard: Option<(u32, u32)>,
        /// No progress bars, log lines only.
        #[arg(long, short)]
        quiet: bool,
        /// Print the JSON report on stdout at the end instead of the summary (no progress bars).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the last (or running) pass of a job.
    Status {
        job: String,
        /// Print the JSON report.
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "I/N", value_parser = runner::parse_shard)]
        shard: Option<(u32, u32)>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cmd: BackfillCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BackfillCmd::Run {
            job,
            mailbox,
            dry_run,
            report,
            shard,
            quiet,
            json,
            config,
        } => {
            init_tracing();
            let loaded = match super::load_config(&config.config)? {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let rt = tokio::runtime::Runtime::new()?;
            let opts = RunOptions {
                mailbox,
                dry_run,
                report,
                shard,
                quiet: quiet || json,
                backoff: None,
            };
            let r = rt.block_on(runner::run_job(&loaded.config, &job, opts))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_summary(&r);
            }
            Ok(if r.converged || dry_run {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        BackfillCmd::Status {
            job,
            json,
            shard,
            config,
        } => {
            let loaded = match super::load_config(&config.config)? {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            runner::find_job(&loaded.config, &job)?;
            let path = runner::state_dir_of(&loaded.config, &job, shard).join("report.json");
            let r = match JobReport::read(&path) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("job {job:?} has not run yet (no {})", path.display());
                    return Ok(ExitCode::from(1));
                }
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_summary(&r);
            }
            Ok(if r.converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn print_summary(r: &JobReport) {
    println!(
        "job {}{}{}: {} mailbox(es), copied {} msgs ({} bytes), {} failure(s), {}{}",
        r.job,
        r.shard
            .as_deref()
            .map(|s| format!(" shard {s}"))
            .unwrap_or_default(),
        if r.dry_run { " (dry run)" } else { "" },
        r.mailboxes.len(),
        r.copied,
        r.bytes,
        r.failed,
        if r.running {
            "running".to_string()
        } else {
            format!("{:.1}s", r.duration_ms as f64 / 1000.0)
        },
        if r.converged {
            ", converged"
        } else {
            ", NOT converged"
        }
    );
    for m in &r.mailboxes {
        println!(
            "  {} -> {} ({}): copied {}, {} folder(s), {}{}",
            m.source_user,
            m.destination_user,
            m.direction,
            m.copied,
            m.folders.len(),
            if m.converged {
                "converged"
            } else {
                "NOT converged"
            },
            m.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
        for f in m.folders.iter().filter(|f| !f.converged) {
            println!(
                "    {} -> {}: source {}, destination {}, copied {}, missing {}, failed {}{}",
                f.folder,
                f.destination,
                f.source_count,
                f.destination_count,
                f.copied,
                f.missing,
                f.failed.len(),
                f.error
                    .as_deref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            );
        }
    }
}
