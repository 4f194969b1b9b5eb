//! `cutover dns check DOMAIN`: what the DNS says about a domain at the MX switch. This module
//! owns the verdicts: from the records looked up ([`Observed`], gathered by [`lookup`]) and the
//! gateway's identity ([`Identity`]) it builds a [`Report`] of findings (ok / warn / fail, each
//! with advice): do the MX records point at this gateway, is their TTL low enough to switch,
//! does the domain's SPF admit cutover's addresses, does an MTA-STS policy list the gateway.
//! Pure: never looks anything up and never changes DNS (it advises).

pub mod lookup;
pub mod mta_sts;
pub mod spf;

use serde::Serialize;
use std::net::IpAddr;

/// MX TTL (seconds) low enough for a switch.
pub const SWITCH_TTL: u32 = 300;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `mx`, `ttl`, `gateway`, `spf` or `mta-sts`.
    pub check: &'static str,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

impl Finding {
    fn new(check: &'static str, status: Status, message: String, advice: Option<String>) -> Self {
        Finding {
            check,
            status,
            message,
            advice,
        }
    }
}

/// Who "this gateway" is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `gateway.public_names`, else `gateway.hostname`.
    pub names: Vec<String>,
    /// The addresses those names resolve to, and the listen addresses (not unspecified, not
    /// loopback).
    pub addresses: Vec<IpAddr>,
    /// Names that did not resolve, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<(String, String)>,
    /// Is STARTTLS configured (`gateway.tls`)?
    pub tls: bool,
}

/// One MX record with the addresses of its exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
    /// As the resolver answered (a caching resolver gives the time remaining).
    pub ttl: u32,
    pub addresses: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_error: Option<String>,
}

/// The MX lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxAnswer {
    Records(Vec<MxRecord>),
    /// The domain exists but has no MX (senders use its A/AAAA).
    NoRecords,
    NxDomain,
    Failed(String),
}

/// A TXT lookup: the strings of each record (`None`: no record / no such name), or an error.
pub type TxtAnswer = Result<Option<Vec<String>>, String>;

/// The MTA-STS policy fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyFetch {
    /// No valid `_mta-sts` record, so nothing was fetched.
    NotTried,
    Body(String),
    /// HTTP status other than 200.
    Status(u16),
    Failed(String),
}

/// Everything looked up for one domain.
#[derive(Clone, Debug)]
pub struct Observed {
    pub domain: String,
    pub mx: MxAnswer,
    /// The domain's TXT records and what its SPF record needs looked up.
    pub spf: spf::SpfFacts,
    pub sts_txt: TxtAnswer,
    pub policy: PolicyFetch,
}

/// Where the MX records point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MxState {
    Switched,
    Partial,
    NotSwitched,
    NoMx,
    NullMx,
    Nxdomain,
    DnsError,
}

/// One MX record in the report: is it ours, and how do we know.
#[derive(Clone, Debug, Serialize)]
pub struct MxView {
    #[serde(flatten)]
    pub record: MxRecord,
    /// `"name"`, `"address"` or absent (not this gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ours_by: Option<&'static str>,
}

/// SPF result for one gateway address.
#[derive(Clone, Debug, Serialize)]
pub struct SpfView {
    pub address: IpAddr,
    #[serde(flatten)]
    pub result: spf::SpfResult,
}

/// The MTA-STS state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StsView {
    pub id: Option<String>,
    pub policy: Option<mta_sts::Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole answer (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub domain: String,
    pub status: Status,
    pub gateway: Identity,
    pub mx_state: MxState,
    pub mx: Vec<MxView>,
    pub spf_record: Option<String>,
    pub spf: Vec<SpfView>,
    pub mta_sts: StsView,
    pub findings: Vec<Finding>,
}

/// Judge what was looked up.
pub fn analyse(obs: &Observed, id: &Identity) -> Report {
    let mut mx_out = Vec::new();
    let (mx_state, mx) = mx_findings(obs, id, &mut mx_out);
    // Without DNS the gateway's names were not looked up either: nothing to say about them.
    let mut findings = if mx_state == MxState::DnsError {
        Vec::new()
    } else {
        gateway_findings(id)
    };
    findings.extend(mx_out);
    let mut report = Report {
        domain: obs.domain.clone(),
        status: Status::Ok,
        gateway: id.clone(),
        mx_state,
        mx,
        spf_record: None,
        spf: Vec::new(),
        mta_sts: StsView::default(),
        findings: Vec::new(),
    };
    if !matches!(mx_state, MxState::Nxdomain | MxState::DnsError) {
        spf_findings(obs, id, &mut report, &mut findings);
        report.mta_sts = sts_findings(obs, id, &mut findings);
    }
    report.status = findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Ok);
    report.findings = findings;
    report
}

fn gateway_findings(id: &Identity) -> Vec<Finding> {
    let mut out: Vec<Finding> = id
        .unresolved
        .iter()
        .map(|(n, why)| {
            Finding::new(
                "gateway",
                Status::Warn,
                format!("gateway name {n} does not resolve: {why}"),
                Some("publish an A/AAAA record for it before pointing MX at it".into()),
            )
        })
        .collect();
    if id.addresses.is_empty() {
        out.push(Finding::new(
            "gateway",
            Status::Warn,
            "no public address known for this gateway: MX and SPF are compared by name only".into(),
            Some("set gateway.public_names to the names the MX records will use".into()),
        ));
    }
    out
}

/// Is this exchange the gateway, and by what?
fn ours(r: &MxRecord, id: &Identity) -> Option<&'static str> {
    let name = r.exchange.trim_end_matches('.');
    if id.names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        Some("name")
    } else if r.addresses.iter().any(|a| id.addresses.contains(a)) {
        Some("address")
    } else {
        None
    }
}

fn mx_findings(obs: &Observed, id: &Identity, out: &mut Vec<Finding>) -> (MxState, Vec<MxView>) {
    let d = &obs.domain;
    let fail = |m: String, a: Option<String>| Finding::new("mx", Status::Fail, m, a);
    let recs = match &obs.mx {
        MxAnswer::NxDomain => {
            out.push(fail(format!("domain {d} does not exist (NXDOMAIN)"), None));
            return (MxState::Nxdomain, Vec::new());
        }
        MxAnswer::Failed(e) => {
            out.push(fail(format!("DNS lookup of MX {d} failed: {e}"), None));
            return (MxState::DnsError, Vec::new());
        }
        MxAnswer::NoRecords => {
            out.push(Finding::new(
                "mx",
                Status::Warn,
                format!("{d} has no MX records: senders deliver to its own address"),
                Some(switch_advice(id)),
            ));
            return (MxState::NoMx, Vec::new());
        }
        MxAnswer::Records(r) => r,
    };
    let views: Vec<MxView> = recs
        .iter()
        .map(|r| MxView {
            record: r.clone(),
            ours_by: ours(r, id),
        })
        .collect();
    if let [only] = recs.as_slice()
        && matches!(only.exchange.as_str(), "" | ".")
    {
        out.push(fail(format!("{d} has a null MX: it accepts no mail"), None));
        return (MxState::NullMx, views);
    }
    let state = mx_state(&views, d, id, out);
    ttl_finding(recs, state, out);
    (state, views)
}

fn mx_state(views: &[MxView], d: &str, id: &Identity, out: &mut Vec<Finding>) -> MxState {
    let mine: Vec<&str> = views
        .iter()
        .filter(|v| v.ours_by.is_some())
        .map(|v| v.record.exchange.as_str())
        .collect();
    let others: Vec<&str> = views
        .iter()
        .filter(|v| v.ours_by.is_none())
        .map(|v| v.record.exchange.as_str())
        .collect();
    let (state, status, message, advice) = if others.is_empty() {
        (
            MxState::Switched,
            Status::Ok,
            format!(
                "every MX of {d} points at this gateway ({})",
                mine.join(", ")
            ),
            None,
        )
    } else if mine.is_empty() {
        (
            MxState::NotSwitched,
            Status::Warn,
            format!(
                "not switched yet: the MX of {d} point elsewhere ({})",
                others.join(", ")
            ),
            Some(switch_advice(id)),
        )
    } else {
        (
            MxState::Partial,
            Status::Warn,
            format!(
                "partly switched: {} point at this gateway, {} do not: mail through them bypasses cutover",
                mine.join(", "),
                others.join(", ")
            ),
            Some(format!(
                "remove or repoint {} (a lower-priority MX still receives mail whenever senders cannot reach the first)",
                others.join(", ")
            )),
        )
    };
    out.push(Finding::new("mx", status, message, advice));
    state
}

fn switch_advice(id: &Identity) -> String {
    match id.names.first() {
        Some(n) => format!("to switch, publish MX records naming {n} (gateway.public_names)"),
        None => "to switch, publish MX records naming this gateway".into(),
    }
}

fn ttl_finding(recs: &[MxRecord], state: MxState, out: &mut Vec<Finding>) {
    let ttl = recs.iter().map(|r| r.ttl).max().unwrap_or(0);
    let human = humantime::format_duration(std::time::Duration::from_secs(ttl.into()));
    let f = if state == MxState::Switched {
        Finding::new(
            "ttl",
            Status::Ok,
            format!("MX TTL is {ttl} s ({human})"),
            (ttl <= SWITCH_TTL).then(|| {
                "once the switch is confirmed, the TTL may go back up (e.g. 3600 s)".to_string()
            }),
        )
    } else if ttl > SWITCH_TTL {
        Finding::new(
            "ttl",
            Status::Warn,
            format!(
                "MX TTL is {ttl} s ({human}): resolvers may keep using the old MX that long after the switch"
            ),
            Some(format!(
                "lower the MX TTL to {SWITCH_TTL} s at least {human} before the switch; raise it again once the switch is confirmed"
            )),
        )
    } else {
        Finding::new(
            "ttl",
            Status::Ok,
            format!("MX TTL is {ttl} s: low enough for the switch"),
            None,
        )
    };
    out.push(f);
}

fn spf_findings(obs: &Observed, id: &Identity, report: &mut Report, out: &mut Vec<Finding>) {
    let d = &obs.domain;
    let warn = |m: String, a: Option<String>| Finding::new("spf", Status::Warn, m, a);
    let record = match obs.spf.txt.get(d.as_str()) {
        Some(Some(t)) => spf::select(t),
        Some(None) => Ok(None),
        None => Err(obs
            .spf
            .failed
            .get(d.as_str())
            .cloned()
            .unwrap_or_else(|| "not looked up".into())),
    };
    let record = match record {
        Ok(Some(r)) => r.to_string(),
        Ok(None) => {
            out.push(Finding::new(
                "spf",
                Status::Ok,
                format!("{d} publishes no SPF record: nothing to admit cutover to"),
                None,
            ));
            return;
        }
        Err(e) => {
            out.push(warn(format!("SPF of {d}: {e}"), None));
            return;
        }
    };
    report.spf_record = Some(record);
    for ip in &id.addresses {
        let result = spf::evaluate(d, *ip, &obs.spf);
        out.push(spf_finding(d, *ip, &result));
        report.spf.push(SpfView {
            address: *ip,
            result,
        });
    }
}

fn spf_finding(d: &str, ip: IpAddr, r: &spf::SpfResult) -> Finding {
    use spf::SpfResult as R;
    let kind = if ip.is_ipv4() { "ip4" } else { "ip6" };
    let advice = format!(
        "mail from {d} senders that cutover relays (e.g. the old server sending to migrated users) reaches the targets from {ip}: add {kind}:{ip} to the SPF record of {d}, or make the targets trust cutover (Exchange Online: an inbound connector for {ip} with enhanced filtering; Postfix: mynetworks)"
    );
    let (status, message, advice) = match r {
        R::Pass(by) => (
            Status::Ok,
            format!("SPF of {d} admits {ip} (by {by})"),
            None,
        ),
        R::Unknown(why) => (
            Status::Warn,
            format!("SPF of {d} for {ip} not evaluated: {why}"),
            Some(advice),
        ),
        R::PermError(why) => (
            Status::Warn,
            format!("SPF of {d} is broken: {why}"),
            Some(advice),
        ),
        R::None => (Status::Ok, format!("{d} publishes no SPF record"), None),
        R::Fail(by) | R::SoftFail(by) | R::Neutral(by) => (
            Status::Warn,
            format!(
                "SPF of {d} does not admit {ip} (result {}, by {by})",
                spf_word(r)
            ),
            Some(advice),
        ),
    };
    Finding::new("spf", status, message, advice)
}

fn spf_word(r: &spf::SpfResult) -> &'static str {
    match r {
        spf::SpfResult::Fail(_) => "fail",
        spf::SpfResult::SoftFail(_) => "softfail",
        _ => "neutral",
    }
}

fn sts_findings(obs: &Observed, id: &Identity, out: &mut Vec<Finding>) -> StsView {
    let d = &obs.domain;
    let mut view = StsView::default();
    let mut push =
        |s: Status, m: String, a: Option<String>| out.push(Finding::new("mta-sts", s, m, a));
    let txts = match &obs.sts_txt {
        Ok(Some(t)) => t.clone(),
        Ok(None) => Vec::new(),
        Err(e) => {
            push(
                Status::Warn,
                format!("TXT lookup of _mta-sts.{d} failed: {e}"),
                None,
            );
            return view;
        }
    };
    match mta_sts::txt_id(&txts) {
        Ok(Some(i)) => view.id = Some(i),
        Ok(None) => {
            push(
                Status::Ok,
                format!("{d} publishes no MTA-STS policy (no _mta-sts TXT record)"),
                None,
            );
            return view;
        }
        Err(e) => {
            push(Status::Warn, format!("_mta-sts.{d}: {e}"), None);
            view.error = Some(e);
            return view;
        }
    }
    let policy = match fetched_policy(&obs.policy, d) {
        Ok(p) => p,
        Err(e) => {
            push(
                Status::Warn,
                e.clone(),
                Some(format!(
                    "senders cannot refresh the policy; fix {} (a valid certificate for {}, HTTP 200)",
                    mta_sts::policy_url(d),
                    mta_sts::policy_host(d)
                )),
            );
            view.error = Some(e);
            return view;
        }
    };
    policy_findings(&policy, id, d, &mut push);
    view.policy = Some(policy);
    view
}

fn fetched_policy(f: &PolicyFetch, d: &str) -> Result<mta_sts::Policy, String> {
    let url = mta_sts::policy_url(d);
    match f {
        PolicyFetch::NotTried => Err(format!("MTA-STS policy {url} was not fetched")),
        PolicyFetch::Status(s) => Err(format!("MTA-STS policy {url}: HTTP {s}")),
        PolicyFetch::Failed(e) if e.to_ascii_lowercase().contains("certificate") => Err(format!(
            "MTA-STS policy {url}: policy host certificate not trusted ({e})"
        )),
        PolicyFetch::Failed(e) => Err(format!("MTA-STS policy {url}: {e}")),
        PolicyFetch::Body(b) => {
            mta_sts::parse_policy(b).map_err(|e| format!("MTA-STS policy {url}: {e}"))
        }
    }
}

fn policy_findings(
    p: &mta_sts::Policy,
    id: &Identity,
    d: &str,
    push: &mut impl FnMut(Status, String, Option<String>),
) {
    let missing: Vec<&String> = id
        .names
        .iter()
        .filter(|n| mta_sts::listed(p, n).is_none())
        .collect();
    let mode = match p.mode {
        mta_sts::Mode::Enforce => "enforce",
        mta_sts::Mode::Testing => "testing",
        mta_sts::Mode::None => "none",
    };
    let age = humantime::format_duration(std::time::Duration::from_secs(p.max_age));
    if p.mode == mta_sts::Mode::None {
        push(
            Status::Ok,
            format!("MTA-STS policy of {d} is mode none"),
            None,
        );
    } else if missing.is_empty() {
        push(
            Status::Ok,
            format!(
                "MTA-STS policy of {d} (mode {mode}, max_age {age}) lists the gateway ({})",
                id.names.join(", ")
            ),
            None,
        );
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        let status = if p.mode == mta_sts::Mode::Enforce {
            Status::Fail
        } else {
            Status::Warn
        };
        let consequence = if status == Status::Fail {
            "senders that enforce MTA-STS will refuse to deliver to cutover"
        } else {
            "senders will report failures (mode testing)"
        };
        push(
            status,
            format!(
                "MTA-STS policy of {d} (mode {mode}) does not list {}: {consequence}",
                names.join(", ")
            ),
            Some(format!(
                "add \"mx: {}\" to {} and change the id in the _mta-sts.{d} TXT record, at least {age} (max_age) before the switch",
                names[0],
                mta_sts::policy_url(d)
            )),
        );
    }
    if p.mode != mta_sts::Mode::None && !id.tls {
        let status = if p.mode == mta_sts::Mode::Enforce {
            Status::Fail
        } else {
            Status::Warn
        };
        push(
            status,
            format!(
                "MTA-STS mode {mode} needs STARTTLS with a valid certificate, but gateway.tls is not set"
            ),
            Some("configure gateway.tls with a certificate for the gateway's public names".into()),
        );
    }
}

#[cfg(test)]
mod tests;
