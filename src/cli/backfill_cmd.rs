//! `cutover backfill run JOB [--mailbox USER] [--dry-run] [--report PATH] [--shard I/N] [--json]` and
//! `cutover backfill status JOB [--json] [--shard I/N]` and `cutover backfill worker JOB
//! [--json]` (fleet mode): argument parsing, exit codes and human output around
//! `cutover::backfill::runner` and `::worker`. Exit 0 when every mailbox converged, 1 when some
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
    /// Fleet mode (`[ledger] url`): take mailbox leases of the job's shared pass until none is
    /// left (start as many workers as you like, any time); exit 0 when the pass converged.
    Worker {
        /// Job name (`[[backfill.job]] name`).
        job: String,
        /// No progress bars, log lines only.
        #[arg(long, short)]
        quiet: bool,
        /// Print this worker's JSON report on stdout at the end.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the last (or running) pass of a job (fleet mode: the shared pass).
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
        BackfillCmd::Worker {
            job,
            quiet,
            json,
            config,
        } => worker(&config, &job, quiet, json),
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
            if loaded.config.ledger.shared() {
                return shared_status(&loaded.config, &job, json);
            }
            let path = runner::state_dir_of(&loaded.config, &job, shard).join("report.json");
            let r = match JobReport::read(&path) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("job {job:?} has not run yet (no {})", path.display());
                    return Ok(ExitCode::from(1));
                }
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            };
            show(&r, json)
        }
    }
}

fn worker(config: &ConfigArg, job: &str, quiet: bool, json: bool) -> anyhow::Result<ExitCode> {
    init_tracing();
    let loaded = match super::load_config(&config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    runner::find_job(&loaded.config, job)?;
    if !loaded.config.ledger.shared() {
        eprintln!(
            "error: {}: backfill worker needs [ledger] url or url_file (a shared PostgreSQL); \
             on one machine use `cutover backfill run {job}`",
            config.config.display()
        );
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Runtime::new()?;
    let opts = RunOptions {
        quiet: quiet || json,
        ..Default::default()
    };
    let r = rt.block_on(cutover::backfill::worker::run_worker(
        &loaded.config,
        job,
        opts,
    ))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "worker {} of job {} pass {}: {} mailbox(es) done here ({} taken over, {} lost), {:.1}s",
            r.worker,
            r.job,
            r.pass,
            r.mailboxes.len(),
            r.taken_over,
            r.lost,
            r.duration_ms as f64 / 1000.0
        );
        if let Some(p) = &r.pass_report {
            print_summary(p);
        }
    }
    let converged = r.pass_report.as_ref().is_some_and(|p| p.converged);
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn shared_status(
    config: &cutover::config::Config,
    job: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let base = config.path.parent().unwrap_or(std::path::Path::new("."));
    let db = cutover::pgdb::PgDb::new(&config.ledger, base)?;
    let rt = tokio::runtime::Runtime::new()?;
    let Some(r) = rt.block_on(cutover::backfill::lease::job_report(&db, job))? else {
        eprintln!("job {job:?} has no shared pass yet (database {})", db.url());
        return Ok(ExitCode::from(1));
    };
    show(&r, json)
}

/// `backfill status`'s output and exit code: 0 when the pass converged.
fn show(r: &JobReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print_summary(r);
    }
    Ok(if r.converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
    if let Some(f) = &r.fleet {
        println!(
            "  shared pass {}: {} done, {} running, {} pending",
            f.pass,
            f.done,
            f.running.len(),
            f.pending
        );
        for l in &f.running {
            println!(
                "  {} -> {}: running on {} (attempt {}, lease until {})",
                l.source_user, l.destination_user, l.worker, l.attempts, l.expires
            );
        }
    }
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
