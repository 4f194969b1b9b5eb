//! `cutover route explain ADDR [--at TIME] [--json]`.

use super::ConfigArg;
use clap::Subcommand;
use cutover::address::Address;
use cutover::config::values::Timestamp;
use cutover::inbound::policy::{Policy, RcptDecision, decide_rcpt};
use cutover::routing::explain;
use std::process::ExitCode;
use std::time::SystemTime;

#[derive(Subcommand, Debug)]
pub enum RouteCmd {
    /// Which rule matches ADDR, why, which targets, and the address each target receives.
    Explain {
        /// Recipient address.
        addr: String,
        /// Evaluate at this instant (RFC 3339) instead of now.
        #[arg(long, value_name = "RFC3339", value_parser = parse_at)]
        at: Option<Timestamp>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn parse_at(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s)
}

pub fn run(cmd: RouteCmd) -> anyhow::Result<ExitCode> {
    let RouteCmd::Explain {
        addr,
        at,
        json,
        config,
    } = cmd;
    let loaded = match super::load_config(&config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let c = &loaded.config;
    let Some(address) = Address::parse(&addr) else {
        eprintln!("cutover: {addr:?} is not an address (expected local@domain)");
        return Ok(ExitCode::from(1));
    };
    let now = at.map(|t| t.0).unwrap_or_else(SystemTime::now);
    let route = loaded.router.route_address(&address, now);
    let mut out = explain::explain(c, &address, route.as_ref(), now);
    // The answer at RCPT, from the same decision the SMTP session makes.
    let policy = Policy::from_gateway(&c.gateway);
    let verdict = |trusted: bool| match decide_rcpt(&policy, &address, trusted, route.clone()) {
        RcptDecision::Accept(_) => "250 2.1.5 Ok".to_string(),
        RcptDecision::Reject(r) => r.to_string(),
    };
    out.rcpt_reply = verdict(false);
    out.rcpt_reply_trusted = verdict(true);
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("address:  {}", out.address);
    println!("at:       {}", out.at);
    if !out.accepted_domain {
        println!(
            "note:     domain {} is not in gateway.accept_domains (only trusted_networks may relay to it)",
            address.domain
        );
    }
    match &route {
        None => {
            println!("rule:     none (no rule matches and routing.default is not set)");
            println!("result:   unrouted: the gateway answers {}", out.rcpt_reply);
        }
        Some(r) => {
            match r.rule_index {
                Some(i) => {
                    println!("rule:     {} (rule[{i}])", r.rule);
                    println!(
                        "matched:  {} {:?}{}",
                        r.how,
                        r.pattern.as_deref().unwrap_or(""),
                        out.source
                            .as_deref()
                            .map(|s| format!(" from {s}"))
                            .unwrap_or_default()
                    );
                    let window = match (&out.active_from, &out.active_until) {
                        (None, None) => "always active".to_string(),
                        (f, u) => format!(
                            "active from {} until {}",
                            f.as_deref().unwrap_or("the start"),
                            u.as_deref().unwrap_or("further notice")
                        ),
                    };
                    println!("window:   {window}");
                }
                None => println!("rule:     default ({})", r.how),
            }
            for t in &out.targets {
                println!("target:   {} -> {}  via {}", t.name, t.final_address, t.via);
            }
            println!("rcpt:     {}", out.rcpt_reply);
        }
    }
    if out.rcpt_reply_trusted != out.rcpt_reply {
        println!(
            "trusted:  {} (from trusted_networks)",
            out.rcpt_reply_trusted
        );
    }
    Ok(ExitCode::SUCCESS)
}
