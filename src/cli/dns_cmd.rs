//! `cutover dns check DOMAIN [--json]`: looks the domain up (`cutover::dnscheck::lookup`),
//! judges it (`cutover::dnscheck::analyse`) and prints the report. Exit 0 when nothing fails,
//! 1 when a finding fails, 2 on bad usage (clap). Never changes DNS.

use super::ConfigArg;
use clap::Subcommand;
use cutover::dnscheck::{self, Finding, Report, Status, lookup::Lookup};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DnsCmd {
    /// The MX records of DOMAIN, their TTLs, and whether they point at this gateway; what else
    /// matters at the MX switch: the TTL to lower beforehand, whether the domain's SPF admits
    /// cutover's addresses, whether an MTA-STS policy lists the gateway.
    ///
    /// Exit status: 0 when no finding fails (warnings allowed), 1 when one fails (e.g. the
    /// domain does not exist, DNS does not answer, an enforced MTA-STS policy does not list the
    /// gateway), 2 on bad usage.
    Check {
        /// The mail domain (e.g. example.com).
        #[arg(value_parser = parse_domain)]
        domain: String,
        /// Machine-readable output: the whole report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// A domain name: letters, digits, `-`, `_` and dots; no `@`, no spaces.
fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim_end_matches('.');
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if d.is_empty() || d.len() > 253 || !d.split('.').all(ok_label) {
        return Err(format!("{s:?} is not a domain name (e.g. example.com)"));
    }
    Ok(d.to_ascii_lowercase())
}

pub fn run(cmd: DnsCmd) -> anyhow::Result<ExitCode> {
    let DnsCmd::Check {
        domain,
        json,
        config,
    } = cmd;
    let loaded = match super::load_config(&config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let c = &loaded.config;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let l = Lookup::new(c)?;
        let (id, obs) = l.gather(c, &domain).await;
        anyhow::Ok(dnscheck::analyse(&obs, &id))
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        // DNS text (TXT records, names) comes from whoever runs the zone: shown escaped, line
        // by line, so it cannot rewrite the operator's terminal.
        for line in render(&report).lines() {
            println!("{}", super::queue_cmd::escape(line));
        }
    }
    Ok(if report.status == Status::Fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Ok => "✔",
        Status::Warn => "⚠",
        Status::Fail => "✘",
    }
}

/// The human report: the MX table, then one line per finding with its advice.
fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "domain:  {}", r.domain);
    let _ = writeln!(
        out,
        "gateway: {} ({})",
        r.gateway.names.join(", "),
        join(&r.gateway.addresses)
    );
    if !r.mx.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:>4}  {:<32} {:>7}  {:<8} addresses",
            "pref", "exchange", "ttl", "gateway"
        );
        for m in &r.mx {
            let rec = &m.record;
            let addrs = match &rec.address_error {
                Some(e) => e.clone(),
                None => join(&rec.addresses),
            };
            let ours = m
                .ours_by
                .map(|b| format!("yes ({b})"))
                .unwrap_or_else(|| "no".into());
            let _ = writeln!(
                out,
                "  {:>4}  {:<32} {:>6}s  {:<8} {addrs}",
                rec.preference, rec.exchange, rec.ttl, ours
            );
        }
    }
    out.push('\n');
    for f in &r.findings {
        out.push_str(&finding_line(f));
    }
    let verdict = match r.status {
        Status::Ok => "ok",
        Status::Warn => "ok, with warnings",
        Status::Fail => "FAILED",
    };
    let _ = writeln!(out, "\nresult: {verdict}");
    out
}

fn finding_line(f: &Finding) -> String {
    let mut s = format!("{} {:<8} {}\n", mark(f.status), f.check, f.message);
    if let Some(a) = &f.advice {
        s.push_str(&format!("  {:<8} → {a}\n", ""));
    }
    s
}

fn join(a: &[std::net::IpAddr]) -> String {
    if a.is_empty() {
        return "no address".into();
    }
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
