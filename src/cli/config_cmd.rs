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
    },
}

pub fn run(cmd: ConfigCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCmd::Check { config } => {
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
