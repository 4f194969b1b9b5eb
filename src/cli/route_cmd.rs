//! `cutover route explain ADDR [--at TIME] [--json]`.

use super::ConfigArg;
use clap::Subcommand;
use cutover::address::Address;
use cutover::config::values::Timestamp;
use cutover::routing::{Origin, Router, rewrite_rcpt};
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

#[derive(serde::Serialize)]
struct Explained {
    address: String,
    at: String,
    routed: bool,
    rule: Option<String>,
    rule_index: Option<usize>,
    how: Option<cutover::routing::How>,
    pattern: Option<String>,
    source: Option<String>,
    active_from: Option<String>,
    active_until: Option<String>,
    accepted_domain: bool,
    targets: Vec<TargetOut>,
}

#[derive(serde::Serialize)]
struct TargetOut {
    name: String,
    final_address: String,
    via: String,
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
    let (router, _) = Router::new(&c.routing);
    let route = router.route_address(&address, now);
    let accepted = c.gateway.accept_domains.contains(&address.domain);
    let mut out = Explained {
        address: address.to_string(),
        at: Timestamp(now).to_rfc3339(),
        routed: route.is_some(),
        rule: None,
        rule_index: None,
        how: None,
        pattern: None,
        source: None,
        active_from: None,
        active_until: None,
        accepted_domain: accepted,
        targets: Vec::new(),
    };
    if let Some(r) = &route {
        out.rule = Some(r.rule.clone());
        out.rule_index = r.rule_index;
        out.how = Some(r.how);
        out.pattern = r.pattern.clone();
        if let Some(i) = r.rule_index {
            let rule = &c.routing.rules[i];
            out.active_from = rule.active_from.map(|t| t.to_rfc3339());
            out.active_until = rule.active_until.map(|t| t.to_rfc3339());
            out.source = r.origin.as_ref().map(|o| match o {
                Origin::Inline(j) => format!("routing.rule[{i}].recipients[{j}]"),
                Origin::File(l) => format!(
                    "{}:{l}",
                    rule.recipients_file
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            });
        }
        for t in &r.targets {
            let target = c.targets.get(t);
            let final_address = rewrite_rcpt(&addr, target.and_then(|t| t.rcpt_domain.as_deref()));
            let via = match target {
                Some(t) => match (&t.address, &t.mx) {
                    (Some(a), _) => format!("{a} (tls {:?})", t.tls).to_lowercase(),
                    (None, Some(m)) => format!("MX of {m} (tls {:?})", t.tls).to_lowercase(),
                    _ => String::new(),
                },
                None => String::new(),
            };
            out.targets.push(TargetOut {
                name: t.clone(),
                final_address,
                via,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("address:  {}", out.address);
    println!("at:       {}", out.at);
    if !accepted {
        println!(
            "note:     domain {} is not in gateway.accept_domains (only trusted_networks may relay to it)",
            address.domain
        );
    }
    match &route {
        None => {
            println!("rule:     none (no rule matches and routing.default is not set)");
            println!("result:   unrouted: the gateway answers 550 5.1.1 at RCPT");
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
        }
    }
    Ok(ExitCode::SUCCESS)
}
