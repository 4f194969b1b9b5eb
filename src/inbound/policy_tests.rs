use super::*;
use crate::routing::How;
use proptest::prelude::*;

fn policy() -> Policy {
    Policy {
        hostname: "mx.test".into(),
        accept_domains: ["example.com".to_string()].into_iter().collect(),
        trusted_networks: vec!["127.0.0.2/32".parse().unwrap()],
        max_message_size: 1 << 20,
        max_header_size: 100 << 10,
        max_received: 30,
        reject_unrouted: true,
        trusted_relay_any: false,
        max_recipients: 10,
        max_connections: 10,
        max_connections_per_ip: 5,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(600),
        data_idle_timeout: Duration::from_secs(120),
        min_free_space: 0,
        require_tls: false,
        ipv6_prefix: 64,
        max_connection_rate: 100,
        max_session_time: Duration::from_secs(3600),
        min_data_rate: 16 * 1024,
        junk_command_limit: 100,
        hard_error_limit: 20,
        proxy_protocol: false,
        proxy_from: Vec::new(),
    }
}

fn route(rule: &str, targets: &[&str]) -> Route {
    Route {
        rule: rule.into(),
        rule_index: Some(0),
        targets: targets.iter().map(|s| s.to_string()).collect(),
        how: How::Address,
        pattern: None,
        origin: None,
    }
}

#[test]
fn extract_path_forms() {
    assert_eq!(extract_path("RCPT TO:<a@b.c>"), Ok("a@b.c"));
    assert_eq!(extract_path("RCPT TO: <a@b.c> NOTIFY=NEVER"), Ok("a@b.c"));
    assert_eq!(extract_path("MAIL FROM:<>"), Ok(""));
    assert_eq!(extract_path("RCPT TO:<\"a>b\"@c.d>"), Ok("\"a>b\"@c.d"));
    assert_eq!(extract_path("RCPT TO:<a@b"), Err(AddrError::Unterminated));
    assert_eq!(extract_path("RCPT TO:a@b.c"), Ok("a@b.c"));
}

#[test]
fn recipient_tricks_are_refused() {
    let cases: &[(&str, AddrError)] = &[
        ("@a.net,@b.net:u@example.com", AddrError::SourceRoute),
        ("@evil.net:u@example.com", AddrError::SourceRoute),
        ("u%evil.net@example.com", AddrError::RoutingHack),
        ("evil.net!u@example.com", AddrError::RoutingHack),
        ("\"u@evil.net\"@example.com", AddrError::QuotedRouting),
        ("\"u%evil.net\"@example.com", AddrError::QuotedRouting),
        ("u@[192.0.2.1]", AddrError::IpLiteral),
        ("u@evil.net@example.com", AddrError::BadLocal),
        ("u@", AddrError::BadDomain),
        ("@", AddrError::SourceRoute),
        ("u", AddrError::NoDomain),
        ("", AddrError::Empty),
        ("u\0@example.com", AddrError::Control),
        ("u@exa mple.com", AddrError::BadDomain),
        ("u@example..com", AddrError::BadDomain),
        ("u@.example.com", AddrError::BadDomain),
        ("müller@example.com", AddrError::NeedsUtf8),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_recipient(raw, false), Err(*want), "{raw}");
    }
    let long = format!("{}@example.com", "a".repeat(300));
    assert_eq!(parse_recipient(&long, false), Err(AddrError::TooLong));
    let long_local = format!("{}@example.com", "a".repeat(65));
    assert_eq!(
        parse_recipient(&long_local, false),
        Err(AddrError::BadLocal)
    );
}

#[test]
fn recipients_normalise() {
    let m = parse_recipient("Alice@EXAMPLE.COM.", false).unwrap();
    assert_eq!(m.local, "Alice");
    assert_eq!(m.domain, "example.com");
    assert_eq!(m.to_string(), "Alice@example.com");
    let q = parse_recipient("\"john smith\"@example.com", false).unwrap();
    assert_eq!(q.local, "\"john smith\"");
    let u = parse_recipient("müller@exämple.com", true).unwrap();
    assert_eq!(u.domain, "exämple.com");
}

#[test]
fn senders_are_lenient() {
    assert_eq!(parse_sender("", false), Ok(None));
    assert!(parse_sender("a%b@example.net", false).unwrap().is_some());
    assert_eq!(
        parse_sender("@relay.net:bob@example.net", false)
            .unwrap()
            .unwrap()
            .to_string(),
        "bob@example.net"
    );
    assert_eq!(parse_sender("nodomain", false), Err(AddrError::NoDomain));
}

#[test]
fn relay_decision() {
    let p = policy();
    let ours = parse_recipient("a@example.com", false).unwrap();
    let theirs = parse_recipient("a@evil.net", false).unwrap();
    let sub = parse_recipient("a@sub.example.com", false).unwrap();
    let r = || Some(route("r", &["old"]));
    assert!(matches!(
        decide_rcpt(&p, &ours, false, r()),
        RcptDecision::Accept(_)
    ));
    for m in [&theirs, &sub] {
        match decide_rcpt(&p, m, false, r()) {
            RcptDecision::Reject(rep) => {
                assert_eq!((rep.code, rep.esc), (550, "5.7.1"));
                assert_eq!(rcpt_rejection(&rep), Rejection::RelayDenied);
            }
            d => panic!("{d:?}"),
        }
    }
    // Trusted: any routed domain, nothing unrouted.
    assert!(matches!(
        decide_rcpt(&p, &theirs, true, r()),
        RcptDecision::Accept(_)
    ));
    match decide_rcpt(&p, &theirs, true, None) {
        RcptDecision::Reject(rep) => assert_eq!((rep.code, rep.esc), (550, "5.1.1")),
        d => panic!("{d:?}"),
    }
    match decide_rcpt(&p, &ours, false, None) {
        RcptDecision::Reject(rep) => assert_eq!((rep.code, rep.esc), (550, "5.1.1")),
        d => panic!("{d:?}"),
    }
    let mut lax = p.clone();
    lax.reject_unrouted = false;
    match decide_rcpt(&lax, &ours, false, None) {
        RcptDecision::Reject(rep) => {
            assert_eq!(rep.code, 450);
            assert_eq!(rcpt_rejection(&rep), Rejection::Unrouted);
        }
        d => panic!("{d:?}"),
    }
    // Address errors: routing tricks count as relaying, the rest as syntax.
    assert_eq!(AddrError::RoutingHack.rejection(), Rejection::RelayDenied);
    assert_eq!(AddrError::NoDomain.rejection(), Rejection::Syntax);
}

#[test]
fn trusted_relay_needs_a_rule_naming_the_domain() {
    let p = policy();
    let theirs = parse_recipient("a@evil.net", false).unwrap();
    let ours = parse_recipient("a@example.com", false).unwrap();
    let with = |how: How, rule_index: Option<usize>, pattern: Option<&str>| Route {
        rule: if rule_index.is_some() { "r" } else { "default" }.into(),
        rule_index,
        targets: vec!["old".into()],
        how,
        pattern: pattern.map(str::to_string),
        origin: None,
    };
    let default = with(How::Default, None, None);
    let refused = |d: RcptDecision| match d {
        RcptDecision::Reject(rep) => (rep.code, rep.esc),
        d => panic!("{d:?}"),
    };
    // routing.default carries a trusted client's mail for our domains, never for others.
    assert_eq!(
        refused(decide_rcpt(&p, &theirs, true, Some(default.clone()))),
        (550, "5.7.1")
    );
    assert!(matches!(
        decide_rcpt(&p, &ours, true, Some(default.clone())),
        RcptDecision::Accept(_)
    ));
    assert!(matches!(
        decide_rcpt(&p, &ours, false, Some(default.clone())),
        RcptDecision::Accept(_)
    ));
    // Rules that name the domain.
    for r in [
        with(How::Address, Some(0), Some("a@evil.net")),
        with(How::AddressWithoutExtension, Some(0), Some("a@evil.net")),
        with(How::Domain, Some(0), Some("@evil.net")),
        with(How::ParentDomain, Some(0), Some("@.net")),
        with(How::Glob, Some(0), Some("*@evil.net")),
    ] {
        assert!(
            matches!(
                decide_rcpt(&p, &theirs, true, Some(r.clone())),
                RcptDecision::Accept(_)
            ),
            "{r:?}"
        );
        assert_eq!(
            refused(decide_rcpt(&p, &theirs, false, Some(r))),
            (550, "5.7.1")
        );
    }
    // Rules that match any domain do not name it.
    for r in [
        with(How::Glob, Some(0), Some("postmaster@*")),
        with(How::Glob, Some(0), Some("*@evil.n?t")),
        with(How::Regex, Some(0), Some("re:.*")),
    ] {
        assert_eq!(
            refused(decide_rcpt(&p, &theirs, true, Some(r.clone()))),
            (550, "5.7.1"),
            "{r:?}"
        );
    }
    // The operator's opt-in.
    let mut any = p.clone();
    any.trusted_relay_any = true;
    assert!(matches!(
        decide_rcpt(&any, &theirs, true, Some(default.clone())),
        RcptDecision::Accept(_)
    ));
    assert_eq!(
        refused(decide_rcpt(&any, &theirs, false, Some(default))),
        (550, "5.7.1")
    );
}

#[test]
fn unadvertised_parameters() {
    // Advertised: SIZE, BODY=7BIT|8BITMIME, SMTPUTF8 (any case); nothing for RCPT.
    for ok in [
        "MAIL FROM:<a@b.c>\r\n",
        "MAIL FROM:<a@b.c> SIZE=100 body=8bitmime SMTPUTF8\r\n",
        "MAIL FROM:<> BODY=7BIT\r\n",
        "MAIL FROM:a@b.c SIZE=1\r\n",
        "MAIL FROM:<\"x> y\"@b.c> SIZE=5\r\n",
    ] {
        assert_eq!(unadvertised_mail_param(ok), None, "{ok}");
    }
    for (bad, name) in [
        ("MAIL FROM:<a@b.c> REQUIRETLS\r\n", "REQUIRETLS"),
        ("MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n", "BODY=BINARYMIME"),
        ("MAIL FROM:<a@b.c> SIZE=10 RET=HDRS\r\n", "RET"),
        ("MAIL FROM:<a@b.c> ENVID=QQ314159\r\n", "ENVID"),
        ("MAIL FROM:<a@b.c> HOLDFOR=60\r\n", "HOLDFOR"),
        ("MAIL FROM:<a@b.c> MT-PRIORITY=0\r\n", "MT-PRIORITY"),
        ("MAIL FROM:<a@b.c> AUTH=<>\r\n", "AUTH"),
        ("MAIL FROM:<a@b.c> SMTPUTF8=yes\r\n", "SMTPUTF8"),
    ] {
        assert_eq!(unadvertised_mail_param(bad).as_deref(), Some(name), "{bad}");
    }
    assert_eq!(unadvertised_rcpt_param("RCPT TO:<a@b.c>\r\n"), None);
    assert_eq!(unadvertised_rcpt_param("RCPT TO:<\"n o\"@b.c>\r\n"), None);
    for (bad, name) in [
        ("RCPT TO:<a@b.c> NOTIFY=SUCCESS,FAILURE\r\n", "NOTIFY"),
        ("RCPT TO:<a@b.c> ORCPT=rfc822;a@b.c\r\n", "ORCPT"),
        ("RCPT TO:a@b.c NOTIFY=NEVER\r\n", "NOTIFY"),
    ] {
        assert_eq!(unadvertised_rcpt_param(bad).as_deref(), Some(name), "{bad}");
    }
}

#[test]
fn trusted_networks_and_mapped_v6() {
    let p = policy();
    assert!(p.is_trusted("127.0.0.2".parse().unwrap()));
    assert!(p.is_trusted("::ffff:127.0.0.2".parse().unwrap()));
    assert!(!p.is_trusted("127.0.0.1".parse().unwrap()));
}

#[test]
fn legs_group_by_target() {
    let accepted = vec![
        ("a@example.com".to_string(), route("wave", &["new"])),
        ("b@example.com".to_string(), route("pilot", &["old", "new"])),
        ("c@example.com".to_string(), route("default", &["old"])),
    ];
    let legs = plan_legs(&accepted);
    assert_eq!(legs.len(), 2);
    assert_eq!(legs[0].target, "new");
    assert_eq!(legs[0].recipients, vec!["a@example.com", "b@example.com"]);
    assert_eq!(legs[0].rules, vec!["wave", "pilot"]);
    assert_eq!(legs[1].target, "old");
    assert_eq!(legs[1].recipients, vec!["b@example.com", "c@example.com"]);
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,300}") {
        let _ = extract_path(&s);
        let _ = parse_recipient(&s, false);
        let _ = parse_recipient(&s, true);
        let _ = parse_sender(&s, true);
    }

    #[test]
    fn accepted_recipients_never_route_elsewhere(s in "[a-z%!@\"\\[\\]:,.]{1,40}") {
        // Whatever is accepted has exactly one unquoted '@' and a plain domain.
        if let Ok(m) = parse_recipient(&s, false) {
            prop_assert!(!m.domain.contains(['@', '[', ']', ':', ',']));
            prop_assert!(!m.local.contains(['%', '!']));
            prop_assert!(!m.local.trim_matches('"').contains('@'));
        }
    }

    #[test]
    fn legs_cover_every_recipient(n in 1usize..20, dual in proptest::collection::vec(any::<bool>(), 20)) {
        let accepted: Vec<(String, Route)> = (0..n)
            .map(|i| {
                let t: &[&str] = if dual[i] { &["old", "new"] } else { &["old"] };
                (format!("u{i}@example.com"), route("r", t))
            })
            .collect();
        let legs = plan_legs(&accepted);
        for (rcpt, r) in &accepted {
            for t in &r.targets {
                let leg = legs.iter().find(|l| &l.target == t).unwrap();
                prop_assert_eq!(leg.recipients.iter().filter(|x| *x == rcpt).count(), 1);
            }
        }
        for l in &legs {
            prop_assert_eq!(l.recipients.len(), l.rules.len());
        }
    }
}

#[test]
fn data_time_limit_scales_with_the_size() {
    // min_data_rate 1 B/s: the rate limit (data_timeout + received seconds) never binds here.
    let p = Policy {
        min_data_rate: 1,
        ..policy()
    }; // 600 s base, 1 MiB max
    let mib = Duration::from_secs(64); // 1 MiB at 16 KiB/s
    // No SIZE: the largest message allowed.
    assert_eq!(p.data_time_limit(0, 4096), Duration::from_secs(600) + mib);
    // SIZE announced: that size; more received than announced: what was received; capped.
    assert_eq!(p.data_time_limit(16 * 1024, 100), Duration::from_secs(601));
    assert_eq!(
        p.data_time_limit(16 * 1024, 32 * 1024),
        Duration::from_secs(602)
    );
    assert_eq!(
        p.data_time_limit(1 << 20, 50 << 20),
        Duration::from_secs(600) + mib
    );
    // The defaults: 10 min + 50 MiB at 16 KiB/s = 3,800 s.
    let big = Policy {
        max_message_size: 50 << 20,
        ..p
    };
    assert_eq!(
        big.data_time_limit(0, 4096),
        Duration::from_secs(600 + 3200)
    );
}

#[test]
fn data_time_limit_needs_the_minimum_rate() {
    // 500 B/s (Postfix's smtpd_min_data_rate): a trickle gets data_timeout and what it sent
    // allows, however much it announced.
    let p = Policy {
        max_message_size: 50 << 20,
        min_data_rate: 500,
        ..policy()
    };
    assert_eq!(p.data_time_limit(0, 0), Duration::from_secs(600));
    assert_eq!(p.data_time_limit(50 << 20, 5_000), Duration::from_secs(610));
    // A fast client is bounded by the size limit as before.
    assert_eq!(
        p.data_time_limit(1 << 20, 1 << 20),
        Duration::from_secs(600 + 64)
    );
}
