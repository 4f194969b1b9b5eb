use super::*;
use proptest::prelude::*;
use std::time::SystemTime;

const BASE: &str = r#"[gateway]
hostname = "mx1.example.com"
accept_domains = ["example.com"]

[targets.old]
address = "127.0.0.1:2526"
rcpt_domain = "old.example"
[targets.new]
address = "127.0.0.1:2527"
rcpt_domain = "new.example"
"#;

/// A configuration from `BASE` + `extra`, with `known.txt` in its directory.
fn config(
    extra: &str,
    known: &str,
) -> (
    tempfile::TempDir,
    VerifyConfig,
    std::sync::Arc<crate::routing::Router>,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("known.txt"), known).unwrap();
    let path = dir.path().join("cutover.toml");
    let loaded = crate::loader::parse(&format!("{BASE}{extra}"), &path).unwrap();
    let v = VerifyConfig::from_config(&loaded.config).unwrap();
    (dir, v, loaded.router)
}

fn route(r: &crate::routing::Router, a: &str) -> Route {
    r.route(a, SystemTime::now()).unwrap()
}

#[test]
fn plan_rule_probes_all_its_targets_target_probes_itself() {
    let (_d, v, r) = config(
        r#"verify_recipients = "probe"
[routing]
default = ["old"]
[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com"]
deliver = ["old", "new"]
verify_recipients = "probe"
[[routing.rule]]
name = "wave"
recipients = ["@sales.example.com"]
deliver = ["old"]
[[routing.rule]]
name = "plain-new"
recipients = ["carol@example.com"]
deliver = ["new"]
"#,
        "",
    );
    // `verify_recipients` right after BASE belongs to [targets.new].
    assert!(v.is_enabled());
    assert_eq!(v.plan(&route(&r, "bob@example.com")).probes, ["old", "new"]);
    assert_eq!(
        v.plan(&route(&r, "carol@example.com")).probes,
        ["new"],
        "target setting"
    );
    assert!(v.plan(&route(&r, "x@sales.example.com")).is_empty());
    assert!(
        v.plan(&route(&r, "dave@example.com")).is_empty(),
        "default route to old, which does not probe"
    );
}

#[test]
fn plan_lists_from_rule_and_target() {
    let (_d, v, r) = config(
        r#"recipients_known = "known.txt"
[routing]
default = ["old"]
[[routing.rule]]
name = "wave"
recipients = ["@example.com"]
deliver = ["new"]
recipients_known = "known.txt"
[[routing.rule]]
name = "other"
recipients = ["@sub.example.com"]
deliver = ["old"]
"#,
        "alice@example.com\n",
    );
    let p = v.plan(&route(&r, "alice@example.com"));
    assert_eq!(p.lists.len(), 2, "rule list and target list");
    assert!(p.probes.is_empty());
    assert!(v.plan(&route(&r, "x@sub.example.com")).is_empty());
}

#[test]
fn known_set_compares_domain_case_insensitively_and_local_parts_like_routing() {
    let list = KnownList {
        file: "k".into(),
        addresses: vec![
            (1, "Alice@Example.COM".into()),
            (2, "bob+x@example.com".into()),
        ],
    };
    let k = KnownSet::new(&list, &MatchOptions::default(), "k".into());
    assert!(k.contains(&a("alice@example.com")));
    assert!(k.contains(&a("ALICE@example.com.")));
    assert!(
        k.contains(&a("alice+news@example.com")),
        "extension of a listed address"
    );
    assert!(k.contains(&a("bob+x@example.com")));
    assert!(!k.contains(&a("bob@example.com")));
    assert!(!k.contains(&a("alice@example.org")));
    assert!(Address::parse("not an address").is_none());
    let strict = MatchOptions {
        ignore_local_case: false,
        recipient_delimiter: String::new(),
    };
    let k = KnownSet::new(&list, &strict, "k".into());
    assert!(k.contains(&a("Alice@example.com")));
    assert!(!k.contains(&a("alice@example.com")));
    assert!(!k.contains(&a("Alice+news@example.com")));
}

#[test]
fn probe_address_applies_the_targets_rewrite_to_our_domains_only() {
    let (_d, v, _r) = config(
        r#"[[routing.rule]]
name = "all"
recipients = ["@example.com", "@partner.example"]
deliver = ["old", "new"]
verify_recipients = "probe"
"#,
        "",
    );
    assert_eq!(
        v.probe_address("old", &a("alice@example.com")),
        "alice@old.example"
    );
    assert_eq!(
        v.probe_address("new", &a("alice@example.com")),
        "alice@new.example"
    );
    assert_eq!(
        v.probe_address("new", &a("x@partner.example")),
        "x@partner.example"
    );
}

#[test]
fn postmaster_is_exempt() {
    let (_d, v, _r) = config("", "");
    assert!(v.exempt(&a("postmaster@example.com")));
    assert!(v.exempt(&a("PostMaster@example.com")));
    assert!(!v.exempt(&a("postmaster@partner.example")));
    assert!(!v.exempt(&a("alice@example.com")));
}

#[test]
fn replies() {
    assert_eq!(reply(&Verdict::Known), None);
    let r = reply(&Verdict::Unknown("550 5.1.1 no".into())).unwrap();
    assert_eq!(
        r.to_string(),
        "550 5.1.1 Recipient address rejected: unknown user"
    );
    let r = reply(&Verdict::TempFail("connection refused".into())).unwrap();
    assert_eq!((r.code, r.esc), (450, "4.1.1"));
    assert_eq!(
        Verdict::from_outcome(&Outcome::from_reply(550, "5.1.1 unknown")),
        Verdict::Unknown("550 5.1.1 unknown".into())
    );
    assert_eq!(
        Verdict::from_outcome(&Outcome::from_reply(250, "ok")),
        Verdict::Known
    );
    assert!(matches!(
        Verdict::from_outcome(&Outcome::local("timeout")),
        Verdict::TempFail(_)
    ));
    assert!(matches!(
        Verdict::from_outcome(&Outcome::from_reply(451, "4.3.0 later")),
        Verdict::TempFail(_)
    ));
}

#[test]
fn ttls_never_cache_temporary_failures() {
    let (p, n) = (Duration::from_secs(3600), Duration::from_secs(600));
    assert_eq!(ttl(&Verdict::Known, p, n), p);
    assert_eq!(ttl(&Verdict::Unknown(String::new()), p, n), n);
    assert_eq!(ttl(&Verdict::TempFail(String::new()), p, n), Duration::ZERO);
}

#[test]
fn cache_expiry_and_zero_ttl() {
    let now = Instant::now();
    let mut c = Cache::new(10);
    c.put("new", "a@x", Verdict::Known, Duration::from_secs(5), now);
    assert_eq!(c.get("new", "a@x", now), Some(Verdict::Known));
    assert_eq!(c.get("old", "a@x", now), None, "keyed by target");
    assert_eq!(c.get("new", "a@x", now + Duration::from_secs(5)), None);
    assert!(c.is_empty(), "expired entry dropped");
    c.put("new", "b@x", Verdict::Known, Duration::from_secs(5), now);
    c.put(
        "new",
        "b@x",
        Verdict::TempFail(String::new()),
        Duration::ZERO,
        now,
    );
    assert_eq!(c.get("new", "b@x", now), None, "a zero TTL forgets");
}

#[test]
fn cache_evicts_the_oldest() {
    let now = Instant::now();
    let mut c = Cache::new(3);
    let h = Duration::from_secs(3600);
    for a in ["a", "b", "c"] {
        c.put("t", a, Verdict::Known, h, now);
    }
    c.put("t", "a", Verdict::Unknown(String::new()), h, now); // refreshed: now the newest
    c.put("t", "d", Verdict::Known, h, now);
    assert_eq!(c.len(), 3);
    assert_eq!(c.get("t", "b", now), None, "oldest evicted");
    assert_eq!(c.get("t", "a", now), Some(Verdict::Unknown(String::new())));
    assert!(c.get("t", "c", now).is_some() && c.get("t", "d", now).is_some());
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Known),
        "[a-z]{0,3}".prop_map(Verdict::Unknown),
        "[a-z]{0,3}".prop_map(Verdict::TempFail),
    ]
}

fn class(v: &Verdict) -> u8 {
    match v {
        Verdict::Known => 0,
        Verdict::TempFail(_) => 1,
        Verdict::Unknown(_) => 2,
    }
}

proptest! {
    /// The combined answer is the worst one (unknown > tempfail > known), whatever the order.
    #[test]
    fn combine_takes_the_worst(vs in prop::collection::vec(verdict(), 0..6), seed in any::<u64>()) {
        let worst = vs.iter().map(class).max().unwrap_or(0);
        let c = combine(vs.clone());
        prop_assert_eq!(class(&c), worst);
        let mut shuffled = vs.clone();
        fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
        prop_assert_eq!(class(&combine(shuffled)), worst);
        prop_assert_eq!(reply(&c).is_none(), worst == 0);
    }

    /// The cache never holds more than its bound, and the newest `max` distinct keys put with a
    /// live TTL are always found with their latest value.
    #[test]
    fn cache_bounded_and_keeps_the_newest(
        ops in prop::collection::vec((0u8..12, verdict()), 0..200),
        max in 1usize..8,
    ) {
        let now = Instant::now();
        let mut c = Cache::new(max);
        let mut latest: Vec<(u8, Verdict)> = Vec::new();
        for (k, v) in ops {
            c.put("t", &k.to_string(), v.clone(), Duration::from_secs(60), now);
            latest.retain(|(x, _)| *x != k);
            latest.push((k, v));
            prop_assert!(c.len() <= max);
        }
        for (k, v) in latest.iter().rev().take(max) {
            prop_assert_eq!(c.get("t", &k.to_string(), now), Some(v.clone()));
        }
    }
}

fn a(s: &str) -> Address {
    Address::parse(s).unwrap()
}
