//! `cutover arc key [--target NAME] [--json]`: the DNS TXT record to publish for each target's
//! ARC sealing key (`<selector>._domainkey.<domain>`), derived from the configured private key.
//! Exit 0 when at least one record is printed, 1 when no target (or not the one named) seals,
//! 2 on bad usage. Never changes DNS, never prints the private key.

use super::ConfigArg;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ArcCmd {
    /// The TXT record each target's `arc` key must be published under, so that receivers
    /// (Microsoft 365, Gmail) can verify cutover's ARC seals.
    Key {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Machine-readable output: an array of {target, domain, selector, name, txt}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn run(cmd: ArcCmd) -> anyhow::Result<ExitCode> {
    let ArcCmd::Key {
        target,
        json,
        config,
    } = cmd;
    let loaded = match super::load_config(&config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let records: Vec<serde_json::Value> = cutover::auth::key_records(&loaded.config)?
        .into_iter()
        .filter(|(name, _)| target.as_ref().is_none_or(|t| t == name))
        .map(|(name, sealer)| {
            let (owner, txt) = sealer.dns_record();
            let (domain, selector) = sealer.identity();
            serde_json::json!({
                "target": name, "domain": domain, "selector": selector,
                "name": owner, "txt": txt,
            })
        })
        .collect();
    if records.is_empty() {
        eprintln!(
            "{}: no target {}has arc = {{ domain, selector, private_key_file }}",
            config.config.display(),
            target.map(|t| format!("named {t:?} ")).unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        for r in &records {
            println!("# target {}", r["target"].as_str().unwrap_or_default());
            println!(
                "{} IN TXT {}",
                r["name"].as_str().unwrap_or_default(),
                txt_strings(r["txt"].as_str().unwrap_or_default())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A TXT value as zone-file character-strings of at most 255 bytes each (an RSA-2048 key
/// record is longer than one).
fn txt_strings(v: &str) -> String {
    v.as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}
