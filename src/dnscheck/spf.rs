//! SPF (RFC 7208) for `cutover dns check`: parse a `v=spf1` record into its terms and evaluate
//! whether an address is admitted, from facts looked up beforehand ([`SpfFacts`]). Pure: never
//! looks anything up; what the facts lack (a failed lookup, the 10-lookup limit, macros,
//! `exists`/`ptr`) makes the answer [`SpfResult::Unknown`], never a guess.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// DNS-querying terms evaluated at most (RFC 7208 §4.6.4).
pub const LOOKUP_LIMIT: usize = 10;

/// `+`, `-`, `~`, `?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// One mechanism or modifier of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    All(Qualifier),
    Include(Qualifier, String),
    /// `a[:domain][/len4][//len6]`: `None` domain = the record's own.
    A(Qualifier, Option<String>, u8, u8),
    Mx(Qualifier, Option<String>, u8, u8),
    Ip(Qualifier, ipnet::IpNet),
    /// `exists`, `ptr` or a term with macros: not evaluated offline.
    Unsupported(Qualifier, String),
    Redirect(String),
}

/// A record's terms, or why it is not a usable SPF record.
pub fn parse(record: &str) -> Result<Vec<Term>, String> {
    let mut words = record.split_ascii_whitespace();
    match words.next() {
        Some(v) if v.eq_ignore_ascii_case("v=spf1") => {}
        _ => return Err("not an SPF record (no v=spf1)".into()),
    }
    words.filter_map(|w| parse_term(w).transpose()).collect()
}

/// Is this TXT string an SPF record (`v=spf1` then a space or the end)?
pub fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start();
    t.len() >= 6
        && t[..6].eq_ignore_ascii_case("v=spf1")
        && t[6..].chars().next().is_none_or(|c| c == ' ')
}

/// One word; `Ok(None)` for modifiers that do not change the result (`exp=`, unknown ones).
fn parse_term(w: &str) -> Result<Option<Term>, String> {
    let (q, rest) = match w.as_bytes().first() {
        Some(b'+') => (Qualifier::Pass, &w[1..]),
        Some(b'-') => (Qualifier::Fail, &w[1..]),
        Some(b'~') => (Qualifier::SoftFail, &w[1..]),
        Some(b'?') => (Qualifier::Neutral, &w[1..]),
        _ => (Qualifier::Pass, w),
    };
    let lower = rest.to_ascii_lowercase();
    if let Some(d) = lower.strip_prefix("redirect=") {
        return Ok(Some(Term::Redirect(d.to_string())));
    }
    if lower.contains('=') {
        return Ok(None);
    }
    let (name, arg) = match lower.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => match lower.split_once('/') {
            Some((n, _)) => (n, None),
            None => (lower.as_str(), None),
        },
    };
    if arg.is_some_and(|a| a.contains('%')) {
        return Ok(Some(Term::Unsupported(q, rest.to_string())));
    }
    let bad = || format!("SPF term {w:?} is malformed");
    Ok(Some(match name {
        "all" => Term::All(q),
        "include" => Term::Include(q, arg.ok_or_else(bad)?.to_string()),
        "ip4" | "ip6" => Term::Ip(q, parse_net(arg.ok_or_else(bad)?).ok_or_else(bad)?),
        "a" | "mx" => {
            let spec = match arg {
                Some(a) => a.to_string(),
                None => lower.get(name.len()..).unwrap_or("").to_string(),
            };
            let (domain, l4, l6) = split_cidr(&spec).ok_or_else(bad)?;
            if name == "a" {
                Term::A(q, domain, l4, l6)
            } else {
                Term::Mx(q, domain, l4, l6)
            }
        }
        "exists" | "ptr" => Term::Unsupported(q, rest.to_string()),
        _ => return Err(format!("SPF term {w:?} is unknown")),
    }))
}

/// `1.2.3.4`, `1.2.3.0/24`, `2001:db8::/32`.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    if s.contains('/') {
        s.parse().ok()
    } else {
        s.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
    }
}

/// `[domain][/len4][//len6]` → (domain, len4, len6).
fn split_cidr(spec: &str) -> Option<(Option<String>, u8, u8)> {
    let (rest, l6) = match spec.split_once("//") {
        Some((r, l)) => (r, l.parse::<u8>().ok().filter(|l| *l <= 128)?),
        None => (spec, 128),
    };
    let (domain, l4) = match rest.split_once('/') {
        Some((d, l)) => (d, l.parse::<u8>().ok().filter(|l| *l <= 32)?),
        None => (rest, 32),
    };
    let domain = (!domain.is_empty()).then(|| domain.to_string());
    Some((domain, l4, l6))
}

/// What the walker looked up: TXT strings per domain (`None`: no such record or domain), the
/// addresses of `a` targets and of the exchanges of `mx` targets. A domain absent from a map
/// was not looked up (limit, or the lookup failed: `failed` says why).
#[derive(Clone, Debug, Default)]
pub struct SpfFacts {
    pub txt: BTreeMap<String, Option<Vec<String>>>,
    pub a: BTreeMap<String, Vec<IpAddr>>,
    pub mx: BTreeMap<String, Vec<IpAddr>>,
    pub failed: BTreeMap<String, String>,
}

/// The outcome for one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "detail")]
pub enum SpfResult {
    /// Admitted, by this term.
    Pass(String),
    Fail(String),
    SoftFail(String),
    Neutral(String),
    /// The domain has no SPF record.
    None,
    /// Not decidable offline / from the facts: why.
    Unknown(String),
    /// The record (or one it includes) is broken: why.
    PermError(String),
}

/// The single SPF record among a domain's TXT strings.
pub fn select(txts: &[String]) -> Result<Option<&str>, String> {
    let spf: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
    match spf.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.as_str())),
        _ => Err(format!("{} SPF records (RFC 7208 allows one)", spf.len())),
    }
}

/// SPF result for `ip` sending as `domain`.
pub fn evaluate(domain: &str, ip: IpAddr, facts: &SpfFacts) -> SpfResult {
    check(domain, ip, facts, 0)
}

fn check(domain: &str, ip: IpAddr, facts: &SpfFacts, depth: usize) -> SpfResult {
    if depth > LOOKUP_LIMIT {
        return SpfResult::PermError("include/redirect nesting deeper than 10".into());
    }
    let txts = match facts.txt.get(domain) {
        Some(Some(t)) => t,
        Some(None) => return SpfResult::None,
        None => return not_looked_up(domain, facts),
    };
    let record = match select(txts) {
        Ok(Some(r)) => r,
        Ok(None) => return SpfResult::None,
        Err(e) => return SpfResult::PermError(format!("{domain}: {e}")),
    };
    let terms = match parse(record) {
        Ok(t) => t,
        Err(e) => return SpfResult::PermError(format!("{domain}: {e}")),
    };
    let mut redirect = None;
    for t in &terms {
        match term_matches(t, domain, ip, facts, depth) {
            Some(Ok(q)) => return qualified(q, describe(t)),
            Some(Err(r)) => return r,
            None => {}
        }
        if let Term::Redirect(d) = t {
            redirect = Some(d);
        }
    }
    match redirect {
        Some(d) => check(d, ip, facts, depth + 1),
        None => SpfResult::Neutral("no term matched (default ?all)".into()),
    }
}

fn not_looked_up(domain: &str, facts: &SpfFacts) -> SpfResult {
    match facts.failed.get(domain) {
        Some(why) => SpfResult::Unknown(format!("{domain}: {why}")),
        None => SpfResult::Unknown(format!(
            "{domain} not looked up (limit of {LOOKUP_LIMIT} DNS lookups)"
        )),
    }
}

/// `Some(Ok(q))`: the term matches with qualifier `q`; `Some(Err(r))`: evaluation ends with `r`;
/// `None`: no match, go on.
fn term_matches(
    t: &Term,
    domain: &str,
    ip: IpAddr,
    facts: &SpfFacts,
    depth: usize,
) -> Option<Result<Qualifier, SpfResult>> {
    let in_any = |addrs: &[IpAddr], l4: u8, l6: u8| {
        addrs.iter().any(|a| {
            let len = if a.is_ipv4() { l4 } else { l6 };
            ipnet::IpNet::new(*a, len).is_ok_and(|n| n.trunc().contains(&ip))
        })
    };
    let addr_term = |map: &BTreeMap<String, Vec<IpAddr>>, q, d: &Option<String>, l4, l6| {
        let d = d.as_deref().unwrap_or(domain);
        match map.get(d) {
            Some(addrs) => in_any(addrs, l4, l6).then_some(Ok(q)),
            None => Some(Err(not_looked_up(d, facts))),
        }
    };
    match t {
        Term::All(q) => Some(Ok(*q)),
        Term::Ip(q, net) => net.contains(&ip).then_some(Ok(*q)),
        Term::A(q, d, l4, l6) => addr_term(&facts.a, *q, d, *l4, *l6),
        Term::Mx(q, d, l4, l6) => addr_term(&facts.mx, *q, d, *l4, *l6),
        Term::Include(q, d) => match check(d, ip, facts, depth + 1) {
            SpfResult::Pass(_) => Some(Ok(*q)),
            SpfResult::Fail(_) | SpfResult::SoftFail(_) | SpfResult::Neutral(_) => None,
            SpfResult::None => Some(Err(SpfResult::PermError(format!(
                "include:{d} has no SPF record"
            )))),
            other => Some(Err(other)),
        },
        Term::Unsupported(_, s) => Some(Err(SpfResult::Unknown(format!(
            "{s} is not evaluated offline"
        )))),
        Term::Redirect(_) => None,
    }
}

fn qualified(q: Qualifier, by: String) -> SpfResult {
    match q {
        Qualifier::Pass => SpfResult::Pass(by),
        Qualifier::Fail => SpfResult::Fail(by),
        Qualifier::SoftFail => SpfResult::SoftFail(by),
        Qualifier::Neutral => SpfResult::Neutral(by),
    }
}

/// The term as written (for "admitted by ip4:…").
fn describe(t: &Term) -> String {
    let q = |q: &Qualifier| match q {
        Qualifier::Pass => "",
        Qualifier::Fail => "-",
        Qualifier::SoftFail => "~",
        Qualifier::Neutral => "?",
    };
    let dom = |d: &Option<String>| d.as_ref().map(|d| format!(":{d}")).unwrap_or_default();
    match t {
        Term::All(x) => format!("{}all", q(x)),
        Term::Include(x, d) => format!("{}include:{d}", q(x)),
        Term::A(x, d, _, _) => format!("{}a{}", q(x), dom(d)),
        Term::Mx(x, d, _, _) => format!("{}mx{}", q(x), dom(d)),
        Term::Ip(x, n) => {
            let kind = if n.addr().is_ipv4() { "ip4" } else { "ip6" };
            format!("{}{kind}:{n}", q(x))
        }
        Term::Unsupported(x, s) => format!("{}{s}", q(x)),
        Term::Redirect(d) => format!("redirect={d}"),
    }
}

/// The domains a record's terms need looked up: (TXT of includes/redirect, A of `a` targets,
/// MX of `mx` targets), `own` standing for the record's domain.
pub fn needs(terms: &[Term], own: &str) -> Vec<Need> {
    let d = |x: &Option<String>| x.clone().unwrap_or_else(|| own.to_string());
    terms
        .iter()
        .filter_map(|t| match t {
            Term::Include(_, x) | Term::Redirect(x) => Some(Need::Txt(x.clone())),
            Term::A(_, x, _, _) => Some(Need::A(d(x))),
            Term::Mx(_, x, _, _) => Some(Need::Mx(d(x))),
            _ => None,
        })
        .collect()
}

/// One lookup an SPF evaluation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Txt(String),
    A(String),
    Mx(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(records: &[(&str, &str)]) -> SpfFacts {
        let mut f = SpfFacts::default();
        for (d, r) in records {
            f.txt.insert(d.to_string(), Some(vec![r.to_string()]));
        }
        f
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_common_mechanisms() {
        let t = parse("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::1 a mx:mail.example.com/24 include:_spf.example.net ~all exp=x").unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(
            t[0],
            Term::Ip(Qualifier::Pass, "192.0.2.0/24".parse().unwrap())
        );
        assert_eq!(t[2], Term::A(Qualifier::Pass, None, 32, 128));
        assert_eq!(
            t[3],
            Term::Mx(Qualifier::Pass, Some("mail.example.com".into()), 24, 128)
        );
        assert_eq!(t[5], Term::All(Qualifier::SoftFail));
        assert!(parse("v=spf10 all").is_err());
        assert!(parse("v=spf1 ip4:nonsense").is_err());
        assert!(parse("v=spf1 bogus:x").is_err());
        assert_eq!(
            parse("v=spf1 a/24//64").unwrap()[0],
            Term::A(Qualifier::Pass, None, 24, 64)
        );
    }

    #[test]
    fn ip_pass_and_softfail() {
        let f = facts(&[("example.com", "v=spf1 ip4:192.0.2.0/24 ~all")]);
        assert_eq!(
            evaluate("example.com", ip("192.0.2.7"), &f),
            SpfResult::Pass("ip4:192.0.2.0/24".into())
        );
        assert_eq!(
            evaluate("example.com", ip("198.51.100.1"), &f),
            SpfResult::SoftFail("~all".into())
        );
    }

    #[test]
    fn include_a_and_mx_from_facts() {
        let mut f = facts(&[
            ("example.com", "v=spf1 a mx include:_spf.example.net -all"),
            ("_spf.example.net", "v=spf1 ip4:203.0.113.0/24 -all"),
        ]);
        f.a.insert("example.com".into(), vec![ip("192.0.2.1")]);
        f.mx.insert("example.com".into(), vec![ip("192.0.2.2")]);
        let e = |a| evaluate("example.com", ip(a), &f);
        assert_eq!(e("192.0.2.1"), SpfResult::Pass("a".into()));
        assert_eq!(e("192.0.2.2"), SpfResult::Pass("mx".into()));
        assert_eq!(
            e("203.0.113.9"),
            SpfResult::Pass("include:_spf.example.net".into())
        );
        assert_eq!(e("198.51.100.1"), SpfResult::Fail("-all".into()));
    }

    #[test]
    fn what_the_facts_lack_is_unknown_not_a_guess() {
        let f = facts(&[("example.com", "v=spf1 include:_spf.example.net -all")]);
        assert!(matches!(
            evaluate("example.com", ip("192.0.2.1"), &f),
            SpfResult::Unknown(_)
        ));
        let f = facts(&[("example.com", "v=spf1 exists:%{i}.x.example.com -all")]);
        assert!(matches!(
            evaluate("example.com", ip("192.0.2.1"), &f),
            SpfResult::Unknown(_)
        ));
    }

    #[test]
    fn redirect_none_and_multiple_records() {
        let f = facts(&[
            ("example.com", "v=spf1 redirect=_spf.example.com"),
            ("_spf.example.com", "v=spf1 ip4:192.0.2.1 -all"),
        ]);
        assert!(matches!(
            evaluate("example.com", ip("192.0.2.1"), &f),
            SpfResult::Pass(_)
        ));
        let mut f = SpfFacts::default();
        f.txt.insert("example.com".into(), None);
        assert_eq!(
            evaluate("example.com", ip("192.0.2.1"), &f),
            SpfResult::None
        );
        f.txt.insert(
            "example.com".into(),
            Some(vec!["v=spf1 -all".into(), "v=spf1 +all".into()]),
        );
        assert!(matches!(
            evaluate("example.com", ip("192.0.2.1"), &f),
            SpfResult::PermError(_)
        ));
    }

    #[test]
    fn needs_lists_lookups() {
        let t = parse("v=spf1 a mx:m.example.com include:i.example.net redirect=r.example.org")
            .unwrap();
        assert_eq!(
            needs(&t, "example.com"),
            vec![
                Need::A("example.com".into()),
                Need::Mx("m.example.com".into()),
                Need::Txt("i.example.net".into()),
                Need::Txt("r.example.org".into()),
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "v=spf1( [-+~?]?[a-z0-9:./=%{}]{0,20}){0,6}") {
            let _ = parse(&s);
        }
    }
}
