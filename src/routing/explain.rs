//! `route explain`: everything about how one address is routed at one instant (the rule, how it
//! matched, where the pattern came from, its window, each target and the address it receives),
//! as data for the CLI to print or serialise. Pure; the reply at RCPT is added by the caller
//! from the intake's own decision (`inbound::policy::decide_rcpt`).

use super::{How, Origin, Route};
use crate::address::Address;
use crate::config::Config;
use crate::config::values::Timestamp;
use std::time::SystemTime;

/// What `route explain` reports.
#[derive(Debug, serde::Serialize)]
pub struct Explained {
    pub address: String,
    pub at: String,
    pub routed: bool,
    pub rule: Option<String>,
    pub rule_index: Option<usize>,
    pub how: Option<How>,
    pub pattern: Option<String>,
    pub source: Option<String>,
    pub active_from: Option<String>,
    pub active_until: Option<String>,
    pub accepted_domain: bool,
    pub targets: Vec<TargetOut>,
    /// The reply an internet client gets at RCPT, and one in `trusted_networks`.
    pub rcpt_reply: String,
    pub rcpt_reply_trusted: String,
}

/// One target of the route.
#[derive(Debug, serde::Serialize)]
pub struct TargetOut {
    pub name: String,
    pub final_address: String,
    pub via: String,
}

/// Explain `route` (what the router answered for `address` at `now`) under `c`.
pub fn explain(c: &Config, address: &Address, route: Option<&Route>, now: SystemTime) -> Explained {
    let accepted = address.in_domains(&c.gateway.accept_domains);
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
        rcpt_reply: String::new(),
        rcpt_reply_trusted: String::new(),
    };
    if let Some(r) = route {
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
            let final_address =
                super::rewrite_rcpt(address, target.and_then(|t| t.rcpt_domain.as_deref()));
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
    out
}
