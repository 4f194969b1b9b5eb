//! `cutover config check`.

use super::ConfigArg;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate the configuration: prints `OK: N rules, M targets` or every error (exit 1).
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print `{"ok", "errors", "warnings", "rules", "targets", "backfill_jobs"}` as JSON
        /// (each diagnostic with its file, line, key and message).
        #[arg(long)]
        json: bool,
    },
}

/// `config check --json`.
fn check_json(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    use cutover::config::{ConfigError, Diagnostic, Severity};
    let (loaded, errors) = match cutover::loader::load(path) {
        Ok(l) => (Some(l), Vec::new()),
        Err(ConfigError::Invalid(diags)) => (None, diags),
        Err(e) => (
            None,
            vec![Diagnostic {
                severity: Severity::Error,
                file: path.display().to_string(),
                line: None,
                key: String::new(),
                message: e.to_string(),
            }],
        ),
    };
    let c = loaded.as_ref().map(|l| &l.config);
    let out = serde_json::json!({
        "ok": errors.is_empty(),
        "errors": errors,
        "warnings": loaded.as_ref().map(|l| l.warnings.clone()).unwrap_or_default(),
        "rules": c.map(|c| c.routing.rules.len()),
        "targets": c.map(|c| c.targets.len()),
        "backfill_jobs": c.map(|c| c.backfill.jobs.len()),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn run(cmd: ConfigCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCmd::Check { config, json: true } => check_json(&config.config),
        ConfigCmd::Check {
            config,
            json: false,
        } => {
            let loaded = match super::load_config(&config.config)? {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let c = &loaded.config;
            let patterns: usize = c
                .routing
                .rules
                .iter()
                .map(|r| r.recipients.len() + r.file_patterns.len())
                .sum();
            println!(
                "OK: {} rules, {} targets ({} patterns, {} backfill jobs{})",
                c.routing.rules.len(),
                c.targets.len(),
                patterns,
                c.backfill.jobs.len(),
                if loaded.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warning(s)", loaded.warnings.len())
                }
            );
            for line in cutover::inbound::verify::explain(c) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
