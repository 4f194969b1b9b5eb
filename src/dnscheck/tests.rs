use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn gw() -> Identity {
    Identity {
        names: vec!["mx.cutover.example".into()],
        addresses: vec![ip("198.51.100.25")],
        unresolved: Vec::new(),
        tls: true,
    }
}

fn rec(pref: u16, name: &str, ttl: u32, addr: &str) -> MxRecord {
    MxRecord {
        preference: pref,
        exchange: name.into(),
        ttl,
        addresses: vec![ip(addr)],
        address_error: None,
    }
}

fn obs(mx: MxAnswer) -> Observed {
    let mut spf = spf::SpfFacts::default();
    spf.txt.insert("example.com".into(), None);
    Observed {
        domain: "example.com".into(),
        mx,
        spf,
        sts_txt: Ok(None),
        policy: PolicyFetch::NotTried,
    }
}

fn finding<'a>(r: &'a Report, check: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} finding in {:#?}", r.findings))
}

#[test]
fn switched_by_name_and_by_address() {
    let o = obs(MxAnswer::Records(vec![
        rec(10, "mx.cutover.example", 300, "198.51.100.25"),
        rec(20, "backup.example.com", 300, "198.51.100.25"),
    ]));
    let r = analyse(&o, &gw());
    assert_eq!(r.mx_state, MxState::Switched);
    assert_eq!(r.mx[0].ours_by, Some("name"));
    assert_eq!(r.mx[1].ours_by, Some("address"));
    assert_eq!(r.status, Status::Ok);
    assert_eq!(finding(&r, "ttl").status, Status::Ok);
}

#[test]
fn not_switched_with_a_high_ttl_advises_lowering_it() {
    let o = obs(MxAnswer::Records(vec![rec(
        10,
        "old-mx.example.com",
        3600,
        "192.0.2.10",
    )]));
    let r = analyse(&o, &gw());
    assert_eq!(r.mx_state, MxState::NotSwitched);
    assert_eq!(finding(&r, "mx").status, Status::Warn);
    assert!(finding(&r, "mx").message.contains("not switched"));
    let ttl = finding(&r, "ttl");
    assert_eq!(ttl.status, Status::Warn);
    assert!(ttl.advice.as_deref().unwrap().contains("300 s at least 1h"));
    assert_eq!(r.status, Status::Warn);
}

#[test]
fn low_ttl_is_fine_before_the_switch() {
    let o = obs(MxAnswer::Records(vec![rec(
        10,
        "old.example.com",
        300,
        "192.0.2.10",
    )]));
    assert_eq!(finding(&analyse(&o, &gw()), "ttl").status, Status::Ok);
}

#[test]
fn partial_switch_is_a_risk() {
    let o = obs(MxAnswer::Records(vec![
        rec(10, "mx.cutover.example", 300, "198.51.100.25"),
        rec(20, "old-backup.example.com", 300, "192.0.2.11"),
    ]));
    let r = analyse(&o, &gw());
    assert_eq!(r.mx_state, MxState::Partial);
    let f = finding(&r, "mx");
    assert_eq!(f.status, Status::Warn);
    assert!(f.message.contains("bypasses cutover"), "{}", f.message);
}

#[test]
fn nxdomain_dns_failure_and_null_mx_fail() {
    let r = analyse(&obs(MxAnswer::NxDomain), &gw());
    assert_eq!((r.mx_state, r.status), (MxState::Nxdomain, Status::Fail));
    assert!(finding(&r, "mx").message.contains("does not exist"));
    assert_eq!(r.findings.len(), 1);
    let r = analyse(&obs(MxAnswer::Failed("timed out".into())), &gw());
    assert_eq!((r.mx_state, r.status), (MxState::DnsError, Status::Fail));
    let mut null = rec(0, "", 300, "192.0.2.1");
    null.addresses.clear();
    let r = analyse(&obs(MxAnswer::Records(vec![null])), &gw());
    assert_eq!((r.mx_state, r.status), (MxState::NullMx, Status::Fail));
    let r = analyse(&obs(MxAnswer::NoRecords), &gw());
    assert_eq!((r.mx_state, r.status), (MxState::NoMx, Status::Warn));
}

fn with_spf(record: &str) -> Observed {
    let mut o = obs(MxAnswer::Records(vec![rec(
        10,
        "old.example.com",
        300,
        "192.0.2.10",
    )]));
    o.spf
        .txt
        .insert("example.com".into(), Some(vec![record.into()]));
    o
}

#[test]
fn spf_admitting_the_gateway_is_ok_otherwise_advice() {
    let r = analyse(&with_spf("v=spf1 ip4:198.51.100.0/24 -all"), &gw());
    assert_eq!(finding(&r, "spf").status, Status::Ok);
    assert!(matches!(r.spf[0].result, spf::SpfResult::Pass(_)));
    let r = analyse(&with_spf("v=spf1 ip4:192.0.2.0/24 ~all"), &gw());
    let f = finding(&r, "spf");
    assert_eq!(f.status, Status::Warn);
    assert!(f.message.contains("softfail"), "{}", f.message);
    assert!(f.advice.as_deref().unwrap().contains("ip4:198.51.100.25"));
    let r = analyse(&with_spf("v=spf1 include:_spf.example.net -all"), &gw());
    assert!(finding(&r, "spf").message.contains("not evaluated"));
}

fn with_sts(policy: &str) -> Observed {
    let mut o = obs(MxAnswer::Records(vec![rec(
        10,
        "old.example.com",
        300,
        "192.0.2.10",
    )]));
    o.sts_txt = Ok(Some(vec!["v=STSv1; id=2026113001".into()]));
    o.policy = PolicyFetch::Body(policy.into());
    o
}

#[test]
fn mta_sts_enforce_without_the_gateway_fails() {
    let r = analyse(
        &with_sts("version: STSv1\nmode: enforce\nmx: old.example.com\nmax_age: 86400\n"),
        &gw(),
    );
    let f = finding(&r, "mta-sts");
    assert_eq!(f.status, Status::Fail);
    assert!(f.message.contains("refuse to deliver"), "{}", f.message);
    assert!(
        f.advice
            .as_deref()
            .unwrap()
            .contains("mx: mx.cutover.example")
    );
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.mta_sts.id.as_deref(), Some("2026113001"));
}

#[test]
fn mta_sts_listing_the_gateway_by_wildcard_is_ok() {
    let r = analyse(
        &with_sts("version: STSv1\nmode: enforce\nmx: *.cutover.example\nmax_age: 86400\n"),
        &gw(),
    );
    assert_eq!(finding(&r, "mta-sts").status, Status::Ok);
    assert_eq!(r.status, Status::Warn.min(r.status));
}

#[test]
fn mta_sts_testing_warns_and_no_tls_fails_under_enforce() {
    let p = "version: STSv1\nmode: testing\nmx: old.example.com\nmax_age: 86400\n";
    assert_eq!(
        finding(&analyse(&with_sts(p), &gw()), "mta-sts").status,
        Status::Warn
    );
    let mut id = gw();
    id.tls = false;
    let p = "version: STSv1\nmode: enforce\nmx: mx.cutover.example\nmax_age: 86400\n";
    let r = analyse(&with_sts(p), &id);
    assert!(
        r.findings
            .iter()
            .any(|f| f.status == Status::Fail && f.message.contains("gateway.tls"))
    );
}

#[test]
fn mta_sts_fetch_failures_say_why() {
    let mut o = with_sts("");
    o.policy = PolicyFetch::Failed("invalid peer certificate: UnknownIssuer".into());
    let f = finding(&analyse(&o, &gw()), "mta-sts").clone();
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.message.contains("policy host certificate not trusted"),
        "{}",
        f.message
    );
    o.policy = PolicyFetch::Status(404);
    assert!(
        finding(&analyse(&o, &gw()), "mta-sts")
            .message
            .contains("HTTP 404")
    );
    o.sts_txt = Ok(None);
    assert_eq!(finding(&analyse(&o, &gw()), "mta-sts").status, Status::Ok);
}

#[test]
fn report_serializes() {
    let r = analyse(
        &with_sts("version: STSv1\nmode: enforce\nmx: old.example.com\nmax_age: 86400\n"),
        &gw(),
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["status"], "fail");
    assert_eq!(v["mx_state"], "not_switched");
    assert_eq!(v["mx"][0]["exchange"], "old.example.com");
    assert_eq!(v["mx"][0]["ttl"], 300);
    assert_eq!(v["mta_sts"]["policy"]["mode"], "enforce");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "mta-sts" && f["status"] == "fail")
    );
}
