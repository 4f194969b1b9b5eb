use super::fixtures::{router, routing, rule};
use super::*;
use crate::config::values::Timestamp;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

fn now() -> SystemTime {
    Timestamp::parse("2026-11-24T12:00:00Z").unwrap().0
}

fn rule_of(r: &Router, addr: &str) -> Option<String> {
    r.route(addr, now()).map(|x| x.rule)
}

#[test]
fn exact_address_and_case() {
    let r = router(vec![rule("a", &["alice@example.com"], &["new"])], None);
    assert_eq!(rule_of(&r, "alice@example.com").as_deref(), Some("a"));
    assert_eq!(rule_of(&r, "ALICE@EXAMPLE.COM").as_deref(), Some("a"));
    assert_eq!(rule_of(&r, "<alice@example.com>").as_deref(), Some("a"));
    assert_eq!(
        rule_of(&r, "alice@example.com.").as_deref(),
        Some("a"),
        "trailing dot"
    );
    assert_eq!(rule_of(&r, "alicia@example.com"), None);
    assert_eq!(rule_of(&r, "alice@example.org"), None);
    let route = r.route("Alice@Example.com", now()).unwrap();
    assert_eq!(route.how, How::Address);
    assert_eq!(route.targets, vec!["new".to_string()]);
}

#[test]
fn case_sensitive_local_part_when_configured() {
    let mut rt = routing(vec![rule("a", &["Alice@example.com"], &["new"])], None);
    rt.ignore_local_case = false;
    let (r, _) = Router::new(&rt);
    assert!(
        r.route("Alice@EXAMPLE.com", now()).is_some(),
        "domain stays case-insensitive"
    );
    assert!(r.route("alice@example.com", now()).is_none());
}

#[test]
fn plus_extension_follows_postfix_order() {
    let r = router(
        vec![
            rule("tagged", &["alice+news@example.com"], &["old"]),
            rule("base", &["alice@example.com"], &["new"]),
        ],
        None,
    );
    let x = r.route("alice+news@example.com", now()).unwrap();
    assert_eq!((x.rule.as_str(), x.how), ("tagged", How::Address));
    let y = r.route("alice+other@example.com", now()).unwrap();
    assert_eq!(
        (y.rule.as_str(), y.how),
        ("base", How::AddressWithoutExtension)
    );
    // A leading delimiter is not an extension.
    assert_eq!(rule_of(&r, "+alice@example.com"), None);
}

#[test]
fn domain_and_subdomain_patterns() {
    let r = router(
        vec![
            rule("sales", &["@sales.example.com"], &["new"]),
            rule("subs", &["@.example.com"], &["old"]),
        ],
        None,
    );
    assert_eq!(rule_of(&r, "x@sales.example.com").as_deref(), Some("sales"));
    assert_eq!(
        rule_of(&r, "x@SALES.example.com.").as_deref(),
        Some("sales")
    );
    assert_eq!(
        rule_of(&r, "x@eu.sales.example.com").as_deref(),
        Some("subs")
    );
    assert_eq!(rule_of(&r, "x@hr.example.com").as_deref(), Some("subs"));
    assert_eq!(
        rule_of(&r, "x@example.com"),
        None,
        "@.domain does not match the domain itself"
    );
    assert_eq!(rule_of(&r, "x@badexample.com"), None);
    assert_eq!(rule_of(&r, "x@example.com.evil.net"), None);
    assert_eq!(
        r.route("x@a.b.example.com", now()).unwrap().how,
        How::ParentDomain
    );
}

#[test]
fn globs_and_regexes() {
    let r = router(
        vec![
            rule("admins", &["*.admin@example.com"], &["new"]),
            rule("it", &["re:it-[a-z]+@example\\.com"], &["old"]),
            rule("single", &["user?@example.com"], &["old"]),
        ],
        None,
    );
    assert_eq!(
        rule_of(&r, "db.admin@example.com").as_deref(),
        Some("admins")
    );
    assert_eq!(
        rule_of(&r, "DB.Admin@Example.com").as_deref(),
        Some("admins")
    );
    assert_eq!(rule_of(&r, "admin@example.com"), None);
    assert_eq!(rule_of(&r, "it-ops@example.com").as_deref(), Some("it"));
    assert_eq!(rule_of(&r, "IT-OPS@example.com").as_deref(), Some("it"));
    assert_eq!(
        rule_of(&r, "it-ops@example.com.evil.net"),
        None,
        "regex is anchored"
    );
    assert_eq!(
        rule_of(&r, "xit-ops@example.com"),
        None,
        "regex is anchored"
    );
    assert_eq!(rule_of(&r, "user1@example.com").as_deref(), Some("single"));
    assert_eq!(rule_of(&r, "user12@example.com"), None);
    // Globs see the address without extension too.
    assert_eq!(
        rule_of(&r, "db.admin+x@example.com").as_deref(),
        Some("admins")
    );
}

#[test]
fn quoted_and_utf8_local_parts_pass_through() {
    let r = router(
        vec![
            rule("q", &["\"john doe\"@example.com"], &["new"]),
            rule("u", &["jürgen@example.com", "@bücher.example"], &["old"]),
        ],
        None,
    );
    assert_eq!(
        rule_of(&r, "\"john doe\"@example.com").as_deref(),
        Some("q")
    );
    assert_eq!(
        rule_of(&r, "\"John Doe\"@example.com").as_deref(),
        Some("q")
    );
    assert_eq!(rule_of(&r, "jürgen@example.com").as_deref(), Some("u"));
    assert_eq!(rule_of(&r, "JÜRGEN@example.com").as_deref(), Some("u"));
    assert_eq!(rule_of(&r, "x@BÜCHER.example").as_deref(), Some("u"));
    // Quoted local parts never lose a "+extension".
    assert!(
        MatchOptions::default()
            .keys(&Address::parse("\"a+b\"@example.com").unwrap())
            .1
            .is_none()
    );
}

#[test]
fn unparseable_addresses_have_no_route() {
    let r = router(vec![rule("a", &["@example.com"], &["new"])], Some(&["old"]));
    for bad in [
        "",
        "example.com",
        "@example.com",
        "alice@",
        "a b@example.com",
        "a@b@",
        "a@.example.com",
        "a@ex..com",
    ] {
        assert!(r.route(bad, now()).is_none(), "{bad:?}");
    }
}

#[test]
fn default_applies_when_nothing_matches() {
    let r = router(
        vec![rule("a", &["alice@example.com"], &["new"])],
        Some(&["old"]),
    );
    let x = r.route("zed@example.com", now()).unwrap();
    assert_eq!(
        (x.rule.as_str(), x.how, x.targets.clone()),
        ("default", How::Default, vec!["old".to_string()])
    );
    let r = router(vec![rule("a", &["alice@example.com"], &["new"])], None);
    assert!(r.route("zed@example.com", now()).is_none());
}

#[test]
fn first_rule_in_file_order_wins_across_kinds() {
    let r = router(
        vec![
            rule("domain-first", &["@example.com"], &["old"]),
            rule("exact-later", &["alice@example.com"], &["new"]),
        ],
        None,
    );
    assert_eq!(
        rule_of(&r, "alice@example.com").as_deref(),
        Some("domain-first")
    );
}

#[test]
fn time_windows_are_inclusive_from_exclusive_until() {
    let from = Timestamp::parse("2026-12-01T18:00:00Z").unwrap();
    let until = Timestamp::parse("2026-12-08T18:00:00Z").unwrap();
    let mut wave = rule("wave-1", &["alice@example.com"], &["new"]);
    wave.active_from = Some(from);
    wave.active_until = Some(until);
    let (r, _) = Router::new(&routing(vec![wave], Some(&["old"])));
    let at = |s: &str| {
        r.route("alice@example.com", Timestamp::parse(s).unwrap().0)
            .unwrap()
            .rule
    };
    assert_eq!(at("2026-12-01T17:59:59Z"), "default");
    assert_eq!(at("2026-12-01T18:00:00Z"), "wave-1");
    assert_eq!(at("2026-12-05T00:00:00Z"), "wave-1");
    assert_eq!(at("2026-12-08T17:59:59Z"), "wave-1");
    assert_eq!(at("2026-12-08T18:00:00Z"), "default");
}

#[test]
fn inactive_earlier_rule_lets_later_rule_match() {
    let mut early = rule("future", &["@example.com"], &["new"]);
    early.active_from = Some(Timestamp::parse("2030-01-01T00:00:00Z").unwrap());
    let r = router(
        vec![early, rule("now", &["alice@example.com"], &["old"])],
        None,
    );
    assert_eq!(rule_of(&r, "alice@example.com").as_deref(), Some("now"));
    assert_eq!(rule_of(&r, "bob@example.com"), None);
}

#[test]
fn bad_patterns_are_reported_per_pattern() {
    let (r, errors) = Router::new(&routing(
        vec![rule(
            "a",
            &[
                "ok@example.com",
                "re:([",
                "not an address",
                "@",
                "*nodomain",
            ],
            &["new"],
        )],
        None,
    ));
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0].origin, Origin::Inline(1));
    assert!(
        errors[0].message.starts_with("invalid regex"),
        "{}",
        errors[0].message
    );
    assert!(r.route("ok@example.com", now()).is_some());
}

#[test]
fn rcpt_domain_rewrite() {
    assert_eq!(
        rewrite_rcpt(
            &addr("alice@example.com"),
            Some("example-com.mail.onmicrosoft.com")
        ),
        "alice@example-com.mail.onmicrosoft.com"
    );
    assert_eq!(
        rewrite_rcpt(&addr("<Alice+x@example.com>"), Some("new.example.")),
        "Alice+x@new.example"
    );
    assert_eq!(
        rewrite_rcpt(&addr("\"a@b\"@example.com"), Some("n.example")),
        "\"a@b\"@n.example"
    );
    assert_eq!(
        rewrite_rcpt(&addr("alice@example.com"), None),
        "alice@example.com"
    );
}

#[test]
fn covers_detects_shadowing() {
    let o = MatchOptions::default();
    let p = |s: &str| Pattern::parse(s, &o).unwrap();
    assert!(p("@example.com").covers(&p("alice@example.com"), &o));
    assert!(p("@.example.com").covers(&p("@sales.example.com"), &o));
    assert!(p("@.example.com").covers(&p("@.eu.example.com"), &o));
    assert!(p("*@example.com").covers(&p("bob@example.com"), &o));
    assert!(!p("@example.com").covers(&p("@sales.example.com"), &o));
    assert!(!p("alice@example.com").covers(&p("@example.com"), &o));
}

// ---- properties -------------------------------------------------------------------------

fn arb_pattern() -> impl Strategy<Value = String> {
    let local = prop::sample::select(vec!["alice", "bob", "Carol", "d.admin", "e"]);
    let domain = prop::sample::select(vec![
        "example.com",
        "sales.example.com",
        "Example.org",
        "a.b.example.com",
    ]);
    prop_oneof![
        (local.clone(), domain.clone()).prop_map(|(l, d)| format!("{l}@{d}")),
        domain.clone().prop_map(|d| format!("@{d}")),
        prop::sample::select(vec!["example.com", "b.example.com"]).prop_map(|d| format!("@.{d}")),
        domain.clone().prop_map(|d| format!("*.admin@{d}")),
        prop::sample::select(vec![
            "re:[a-c].*@example\\.com",
            "re:bob@.*",
            "re:.*@sales\\..*"
        ])
        .prop_map(String::from),
    ]
}

fn arb_address() -> impl Strategy<Value = String> {
    let local = prop::sample::select(vec![
        "alice",
        "ALICE",
        "alice+x",
        "bob",
        "carol",
        "d.admin",
        "x.admin+t",
        "zed",
    ]);
    let domain = prop::sample::select(vec![
        "example.com",
        "EXAMPLE.COM.",
        "sales.example.com",
        "example.org",
        "a.b.example.com",
        "c.b.example.com",
        "other.net",
    ]);
    (local, domain).prop_map(|(l, d)| format!("{l}@{d}"))
}

fn arb_window() -> impl Strategy<Value = (Option<u64>, Option<u64>)> {
    (prop::option::of(0u64..100), prop::option::of(0u64..100))
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn arb_rules() -> impl Strategy<Value = Vec<crate::config::Rule>> {
    prop::collection::vec(
        (prop::collection::vec(arb_pattern(), 1..4), arb_window()),
        0..8,
    )
    .prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (pats, (f, u)))| {
                let mut r = rule(
                    &format!("r{i}"),
                    &pats.iter().map(String::as_str).collect::<Vec<_>>(),
                    &["t"],
                );
                r.active_from = f.map(|s| Timestamp(at(s)));
                r.active_until = u.map(|s| Timestamp(at(s)));
                r
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn indexed_lookup_equals_linear_scan(rules in arb_rules(), addr in arb_address(), t in 0u64..120, default in any::<bool>()) {
        let (r, errors) = Router::new(&routing(rules, default.then_some(&["d"][..])));
        prop_assert!(errors.is_empty());
        let fast = r.route(&addr, at(t)).map(|x| (x.rule, x.targets));
        prop_assert_eq!(fast, r.route_linear(&addr, at(t)));
    }

    #[test]
    fn rule_outside_its_window_never_matches(rules in arb_rules(), addr in arb_address(), t in 0u64..120) {
        let (r, _) = Router::new(&routing(rules, None));
        if let Some(route) = r.route(&addr, at(t)) {
            let i = route.rule_index.unwrap();
            prop_assert!(r.rules()[i].active_at(at(t)));
        }
    }

    #[test]
    fn adding_a_later_rule_never_changes_a_match(rules in arb_rules(), extra in prop::collection::vec(arb_pattern(), 1..4), addr in arb_address(), t in 0u64..120) {
        let (r1, _) = Router::new(&routing(rules.clone(), None));
        let before = r1.route(&addr, at(t));
        let mut more = rules;
        more.push(rule("extra", &extra.iter().map(String::as_str).collect::<Vec<_>>(), &["x"]));
        let (r2, _) = Router::new(&routing(more, None));
        if let Some(b) = before {
            prop_assert_eq!(Some(b), r2.route(&addr, at(t)));
        }
    }
}

#[test]
fn final_rcpt_rewrites_only_our_domains_and_never_dsns() {
    let ours = vec!["Example.com".to_string()];
    let t = Some("example-com.mail.onmicrosoft.com");
    assert_eq!(
        final_rcpt(&addr("alice@example.COM."), t, &ours, false),
        "alice@example-com.mail.onmicrosoft.com"
    );
    // Trusted relaying to another domain: untouched.
    assert_eq!(
        final_rcpt(&addr("bob@gmail.example"), t, &ours, false),
        "bob@gmail.example"
    );
    // A DSN to one of our own senders: untouched too.
    assert_eq!(
        final_rcpt(&addr("<carol@example.com>"), t, &ours, true),
        "carol@example.com"
    );
    assert_eq!(
        final_rcpt(&addr("alice@example.com"), None, &ours, false),
        "alice@example.com"
    );
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

#[test]
fn stored_recipients_are_rewritten_like_parsed_ones() {
    let ours = vec!["example.com".to_string()];
    let t = Some("example-com.mail.onmicrosoft.com");
    assert_eq!(
        final_rcpt_stored("alice@example.com", t, &ours, false),
        "alice@example-com.mail.onmicrosoft.com"
    );
    assert_eq!(
        final_rcpt_stored(" not an address ", t, &ours, false),
        "not an address"
    );
}
