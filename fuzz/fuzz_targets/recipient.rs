//! The recipient and sender parsers (`extract_path`/`split_path`, `parse_recipient`,
//! `parse_sender`, the parameter checks) with and without SMTPUTF8, then everything the intake
//! does with an address: routing (`Router::route` against the linear reference
//! `Router::route_linear`, over a fixed rule set plus input-chosen patterns), the relay decision,
//! leg planning and the `rcpt_domain` rewrite.
//!
//! Checks: a path is a substring of its line; what SMTPUTF8-less parsing accepts, SMTPUTF8 parsing
//! accepts identically; a parsed mailbox parses back to itself; a strict recipient is a valid
//! sender; the indexed router agrees with the linear scan; an accepted recipient has a route
//! with targets; legs carry each accepted recipient once per target.
#![no_main]

use arbitrary::Arbitrary;
use cutover::config::values::Timestamp;
use cutover::config::{Routing, Rule};
use cutover::inbound::Policy;
use cutover::inbound::policy::{self, RcptDecision};
use cutover::routing::{self, CompiledRule, Router};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    line: &'a str,
    utf8: bool,
    /// Extra patterns for an extra rule (invalid ones are dropped, as the loader would refuse them).
    patterns: Vec<&'a str>,
    delimiter: u8,
    ignore_local_case: bool,
    /// Seconds after the epoch-ish base at which to route.
    at: u32,
    trusted: bool,
    relay_any: bool,
    reject_unrouted: bool,
    rcpt_domain: Option<&'a str>,
}

const BASE: u64 = 1_790_000_000;

fn rules(extra: &[&str]) -> Vec<Rule> {
    let rule =
        |name: &str, pats: &[&str], deliver: &[&str], from: Option<u64>, until: Option<u64>| Rule {
            name: name.into(),
            recipients: pats.iter().map(|s| s.to_string()).collect(),
            recipients_file: None,
            deliver: deliver.iter().map(|s| s.to_string()).collect(),
            active_from: from.map(|s| Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s))),
            active_until: until.map(|s| Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s))),
            file_patterns: Vec::new(),
            verify_recipients: None,
            recipients_known: None,
            known: None,
        };
    let mut v = vec![
        rule(
            "pilot",
            &[
                "bob@example.com",
                "Carol@Example.COM",
                "\"q u\"@example.com",
            ],
            &["old", "new"],
            None,
            None,
        ),
        rule(
            "wave-1",
            &["@sales.example.com", "*.admin@example.com"],
            &["new"],
            Some(BASE + 1000),
            None,
        ),
        rule(
            "wave-2",
            &[
                "@.example.org",
                "re:it-[a-z]+@example\\.com",
                "d?ve@example.com",
            ],
            &["new"],
            None,
            Some(BASE + 2000),
        ),
        rule("partner", &["@partner.net", "x*@*"], &["old"], None, None),
    ];
    v.push(Rule {
        file_patterns: extra
            .iter()
            .enumerate()
            .map(|(i, s)| (i + 1, s.to_string()))
            .collect(),
        ..rule("fuzz", &[], &["new"], None, None)
    });
    v
}

fn policy(trusted_relay_any: bool, reject_unrouted: bool) -> Policy {
    static BASE_POLICY: OnceLock<Policy> = OnceLock::new();
    let mut p = BASE_POLICY
        .get_or_init(|| Policy {
            hostname: "mx1.example.com".into(),
            accept_domains: ["example.com", "sales.example.com", "münchen.example"]
                .iter()
                .map(|s| s.to_string())
                .collect::<HashSet<_>>(),
            trusted_networks: Vec::new(),
            max_message_size: 1 << 20,
            max_header_size: 1 << 16,
            max_received: 30,
            reject_unrouted: true,
            trusted_relay_any: false,
            max_recipients: 100,
            max_connections: 10,
            max_connections_per_ip: 10,
            command_timeout: Duration::from_secs(1),
            data_timeout: Duration::from_secs(1),
            data_idle_timeout: Duration::from_secs(1),
            min_free_space: 0,
            require_tls: false,
            ipv6_prefix: 64,
            max_connection_rate: 100,
            max_session_time: Duration::from_secs(3600),
            min_data_rate: 500,
            junk_command_limit: 100,
            hard_error_limit: 20,
            proxy_protocol: false,
            proxy_from: Vec::new(),
        })
        .clone();
    p.trusted_relay_any = trusted_relay_any;
    p.reject_unrouted = reject_unrouted;
    p
}

fuzz_target!(|inp: Input<'_>| {
    // Path extraction, on the raw line and as a RCPT/MAIL command line.
    for line in [
        inp.line.to_string(),
        format!("RCPT TO:{}", inp.line),
        format!("MAIL FROM:{}", inp.line),
    ] {
        if let Ok((path, params)) = policy::split_path(&line) {
            let base = line.as_ptr() as usize;
            let p = path.as_ptr() as usize;
            assert!(
                p >= base && p + path.len() <= base + line.len(),
                "path outside line"
            );
            assert!(params.len() <= line.len());
            assert_eq!(policy::extract_path(&line).ok(), Some(path));
        }
        if let Some(p) = policy::unadvertised_mail_param(&line) {
            assert!(p.len() <= 64 && p.chars().all(|c| c.is_ascii_graphic()));
        }
        if let Some(p) = policy::unadvertised_rcpt_param(&line) {
            assert!(p.len() <= 64 && p.chars().all(|c| c.is_ascii_graphic()));
        }
    }
    let raw = policy::extract_path(inp.line).unwrap_or(inp.line);

    let ascii = policy::parse_recipient(raw, false);
    let utf8 = policy::parse_recipient(raw, true);
    if let Ok(m) = &ascii {
        assert_eq!(
            utf8.as_ref().ok(),
            Some(m),
            "SMTPUTF8 parsing refuses what plain parsing accepts"
        );
    }
    for (res, flag) in [(&ascii, false), (&utf8, true)] {
        if let Ok(m) = res {
            let again = policy::parse_recipient(&m.to_string(), flag);
            assert_eq!(
                again.as_ref().ok(),
                Some(m),
                "mailbox does not parse back to itself"
            );
            assert_eq!(
                policy::check_domain(&m.domain, flag).ok().as_deref(),
                Some(m.domain.as_str()),
                "domain normalisation is not idempotent"
            );
            if !raw.starts_with('@') {
                let s = policy::parse_sender(raw, flag);
                assert_eq!(
                    s.ok().flatten().as_ref(),
                    Some(m),
                    "a valid recipient is a valid sender"
                );
            }
        }
    }
    if let Ok(Some(m)) = policy::parse_sender(raw, inp.utf8) {
        assert!(!m.domain.is_empty() && !m.local.is_empty());
    }

    // Routing over a fixed table plus the input's patterns.
    let delim = match inp.delimiter % 4 {
        0 => "+",
        1 => "",
        2 => "-",
        _ => "+-",
    };
    let opts = routing::MatchOptions {
        ignore_local_case: inp.ignore_local_case,
        recipient_delimiter: delim.to_string(),
    };
    // The fixed rules are compiled once per option set (regex compilation is slow); the input's
    // patterns are compiled per run, as the loader does, and invalid ones dropped.
    let key = (inp.delimiter % 4) as usize * 2 + inp.ignore_local_case as usize;
    static BASE_RULES: OnceLock<Vec<Vec<CompiledRule>>> = OnceLock::new();
    let base = &BASE_RULES.get_or_init(|| {
        (0..8)
            .map(|k| {
                let opts = routing::MatchOptions {
                    ignore_local_case: k % 2 == 1,
                    recipient_delimiter: ["+", "", "-", "+-"][k / 2].to_string(),
                };
                let cfg = Routing {
                    default: None,
                    ignore_local_case: opts.ignore_local_case,
                    recipient_delimiter: opts.recipient_delimiter.clone(),
                    rules: rules(&[]),
                };
                let (r, errors) = Router::new(&cfg);
                assert!(errors.is_empty(), "{errors:?}");
                r.rules().to_vec()
            })
            .collect()
    })[key];
    let mut compiled = base.clone();
    if let Some(last) = compiled.last_mut() {
        last.patterns = inp
            .patterns
            .iter()
            .take(4)
            .enumerate()
            .filter_map(|(i, p)| {
                routing::Pattern::parse(p, &opts)
                    .ok()
                    .map(|pat| (pat, routing::Origin::File(i + 1)))
            })
            .collect();
    }
    let router = Router::from_rules(
        opts,
        compiled,
        (inp.at % 3 == 0).then(|| vec!["old".to_string()]),
    );
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(BASE - 5000 + inp.at as u64 % 10_000);
    let candidates: Vec<String> = [
        ascii.as_ref().ok().map(|m| m.to_string()),
        Some(raw.to_string()),
        Some(inp.line.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    for addr in &candidates {
        let fast = router.route(addr, now);
        let slow = router.route_linear(addr, now);
        assert_eq!(
            fast.as_ref().map(|r| (r.rule.clone(), r.targets.clone())),
            slow,
            "index and linear scan disagree for {addr:?}"
        );
        if let Some(a) = cutover::address::Address::parse(addr) {
            let _ = routing::rewrite_rcpt(&a, inp.rcpt_domain);
        }
        let _ = routing::final_rcpt_stored(
            addr,
            inp.rcpt_domain,
            &["example.com".to_string()],
            inp.trusted,
        );
    }

    // Relay decision and legs, as the session does them.
    if let Ok(m) = utf8 {
        let p = policy(inp.relay_any, inp.reject_unrouted);
        let address = m.to_string();
        let route = router.route_address(&m, now);
        match policy::decide_rcpt(&p, &m, inp.trusted, route) {
            RcptDecision::Accept(r) => {
                assert!(!r.targets.is_empty(), "accepted without targets");
                assert!(
                    p.accepts_domain(&m.domain) || inp.trusted,
                    "relayed for an untrusted client"
                );
                let accepted = vec![(address.clone(), r.clone()), (address.clone(), r.clone())];
                let legs = policy::plan_legs(&accepted);
                let mut targets: Vec<String> = r.targets.clone();
                targets.dedup();
                assert_eq!(legs.len(), targets.iter().collect::<HashSet<_>>().len());
                for l in &legs {
                    assert_eq!(l.recipients, vec![address.clone()]);
                    assert_eq!(l.rules.len(), l.recipients.len());
                }
            }
            RcptDecision::Reject(r) => assert!(r.code >= 400),
        }
    }
});
