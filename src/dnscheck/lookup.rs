//! The IO of `cutover dns check`: looks up what [`super::analyse`] judges, through the resolver
//! of `[dns]` (`crate::outbound::resolve::hickory_resolver`) and the one HTTP client (the
//! MTA-STS policy, ≤ 64 KiB within 10 s, connecting to the address the same resolver gave).
//! Bounded: each query has a time limit; SPF follows at most [`spf::LOOKUP_LIMIT`] lookups.
//! Never judges and never changes anything.

use super::{Identity, MxAnswer, MxRecord, Observed, PolicyFetch, TxtAnswer, mta_sts, spf};
use crate::config::Config;
use crate::http_client::{HttpClient, Request, Url};
use crate::outbound::resolve::{ResolverError, hickory_resolver};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Time limit of one DNS query (one attempt per server).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Time limit of the policy fetch.
pub const POLICY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest policy accepted (RFC 8461 suggests 64 KiB).
pub const POLICY_LIMIT: usize = 64 << 10;
/// MX exchanges whose addresses are looked up, at most.
const MAX_EXCHANGES: usize = 10;

/// The DNS side of a check.
pub struct Lookup {
    dns: TokioResolver,
    /// Who is asked, for messages.
    servers: String,
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Lookup {
    /// A resolver for `[dns]` with short time limits (a dead server answers within seconds).
    pub fn new(config: &Config) -> Result<Lookup, ResolverError> {
        let dns = hickory_resolver(&config.dns, |o| {
            o.timeout = QUERY_TIMEOUT;
            o.attempts = 1;
        })?;
        let servers = if config.dns.servers.is_empty() {
            "the system resolver".to_string()
        } else {
            let list: Vec<String> = config.dns.servers.iter().map(|s| s.to_string()).collect();
            format!("[dns] servers {}", list.join(", "))
        };
        Ok(Lookup { dns, servers })
    }

    /// What [`super::analyse`] needs: the gateway's identity and the domain's records. When the
    /// MX lookup gets no answer at all, nothing else is asked (it would only time out again).
    pub async fn gather(&self, config: &Config, domain: &str) -> (Identity, Observed) {
        let obs = self.observe(domain).await;
        let resolve = !matches!(obs.mx, MxAnswer::Failed(_));
        (self.identity(config, resolve).await, obs)
    }

    /// The gateway's identity: its names and (when `resolve`) what they resolve to, its
    /// listen addresses.
    pub async fn identity(&self, config: &Config, resolve: bool) -> Identity {
        let g = &config.gateway;
        let names = if g.public_names.is_empty() {
            vec![g.hostname.clone()]
        } else {
            g.public_names.clone()
        };
        let mut id = Identity {
            names,
            tls: g.tls.is_some(),
            ..Identity::default()
        };
        for a in &g.listen {
            let ip = a.ip();
            if !ip.is_unspecified() && !ip.is_loopback() && !id.addresses.contains(&ip) {
                id.addresses.push(ip);
            }
        }
        for n in id.names.clone() {
            if !resolve {
                break;
            }
            match self.ips(&n).await {
                Ok(ips) => ips.into_iter().for_each(|ip| {
                    if !id.addresses.contains(&ip) {
                        id.addresses.push(ip);
                    }
                }),
                Err(e) => id.unresolved.push((n, e)),
            }
        }
        id
    }

    /// Everything [`super::analyse`] needs about `domain`.
    pub async fn observe(&self, domain: &str) -> Observed {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mx = self.mx(&domain).await;
        let mut obs = Observed {
            domain: domain.clone(),
            mx,
            spf: spf::SpfFacts::default(),
            sts_txt: Ok(None),
            policy: PolicyFetch::NotTried,
        };
        if matches!(obs.mx, MxAnswer::NxDomain | MxAnswer::Failed(_)) {
            return obs;
        }
        obs.spf = self.spf_facts(&domain).await;
        obs.sts_txt = self.txt(&format!("_mta-sts.{domain}")).await;
        if let Ok(Some(t)) = &obs.sts_txt
            && matches!(mta_sts::txt_id(t), Ok(Some(_)))
        {
            obs.policy = self.policy(&domain).await;
        }
        obs
    }

    async fn mx(&self, domain: &str) -> MxAnswer {
        let recs: Vec<(u16, String, u32)> = match self.dns.mx_lookup(fqdn(domain).as_str()).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_utf8(), r.ttl)),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => return MxAnswer::NxDomain,
            Err(e) if e.is_no_records_found() => return MxAnswer::NoRecords,
            Err(e) => return MxAnswer::Failed(format!("{e} (asked {})", self.servers)),
        };
        let mut out = Vec::new();
        for (preference, exchange, ttl) in recs {
            let exchange = exchange.trim_end_matches('.').to_string();
            let (addresses, address_error) = if exchange.is_empty() || out.len() >= MAX_EXCHANGES {
                (Vec::new(), None)
            } else {
                match self.ips(&exchange).await {
                    Ok(a) => (a, None),
                    Err(e) => (Vec::new(), Some(e)),
                }
            };
            out.push(MxRecord {
                preference,
                exchange,
                ttl,
                addresses,
                address_error,
            });
        }
        out.sort_by(|a, b| (a.preference, &a.exchange).cmp(&(b.preference, &b.exchange)));
        MxAnswer::Records(out)
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match self.dns.lookup_ip(fqdn(host).as_str()).await {
            Ok(l) => Ok(l.iter().collect()),
            Err(e) if e.is_nx_domain() => Err("no such name (NXDOMAIN)".into()),
            Err(e) if e.is_no_records_found() => Err("no A/AAAA record".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn txt(&self, name: &str) -> TxtAnswer {
        match self.dns.txt_lookup(fqdn(name).as_str()).await {
            Ok(l) => Ok(Some(
                l.answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect(),
            )),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The domain's TXT records and what its SPF record needs, breadth first, at most
    /// [`spf::LOOKUP_LIMIT`] lookups after the first.
    async fn spf_facts(&self, domain: &str) -> spf::SpfFacts {
        let mut facts = spf::SpfFacts::default();
        let mut todo = VecDeque::from([spf::Need::Txt(domain.to_string())]);
        let mut lookups = 0;
        while let Some(need) = todo.pop_front() {
            if lookups > spf::LOOKUP_LIMIT {
                break;
            }
            lookups += 1;
            match need {
                spf::Need::Txt(d) if !facts.txt.contains_key(&d) => {
                    self.spf_record(&d, &mut facts, &mut todo).await
                }
                spf::Need::A(d) if !facts.a.contains_key(&d) => match self.ips(&d).await {
                    Ok(a) => {
                        facts.a.insert(d, a);
                    }
                    Err(e) => {
                        facts.failed.insert(d, e);
                    }
                },
                spf::Need::Mx(d) if !facts.mx.contains_key(&d) => {
                    let addrs = self.mx_addresses(&d).await;
                    facts.mx.insert(d, addrs);
                }
                _ => lookups -= 1,
            }
        }
        facts
    }

    async fn spf_record(&self, d: &str, facts: &mut spf::SpfFacts, todo: &mut VecDeque<spf::Need>) {
        match self.txt(d).await {
            Ok(txts) => {
                if let Some(Ok(Some(rec))) = txts.as_deref().map(spf::select)
                    && let Ok(terms) = spf::parse(rec)
                {
                    todo.extend(spf::needs(&terms, d));
                }
                facts.txt.insert(d.to_string(), txts);
            }
            Err(e) => {
                facts.failed.insert(d.to_string(), e);
            }
        }
    }

    /// The addresses of the MX exchanges of `d` (for an SPF `mx` term).
    async fn mx_addresses(&self, d: &str) -> Vec<IpAddr> {
        let mut out = Vec::new();
        if let MxAnswer::Records(recs) = self.mx(d).await {
            for r in recs {
                out.extend(r.addresses);
            }
        }
        out
    }

    /// GET the policy from `mta-sts.DOMAIN` (port 443), at the address `[dns]` gives.
    async fn policy(&self, domain: &str) -> PolicyFetch {
        let host = mta_sts::policy_host(domain);
        let addrs: Vec<SocketAddr> = match self.ips(&host).await {
            Ok(a) => a.into_iter().map(|ip| SocketAddr::new(ip, 443)).collect(),
            Err(e) => return PolicyFetch::Failed(format!("policy host {host}: {e}")),
        };
        let url = match Url::parse(&mta_sts::policy_url(domain)) {
            Ok(u) => u,
            Err(e) => return PolicyFetch::Failed(e.to_string()),
        };
        let client =
            match HttpClient::resolving(POLICY_TIMEOUT, Some((host.as_str(), addrs.as_slice()))) {
                Ok(c) => c,
                Err(e) => return PolicyFetch::Failed(e.to_string()),
            };
        let req = Request {
            limit: POLICY_LIMIT,
            ..Request::default()
        };
        match client.send("GET", &url, req).await {
            Ok(r) if r.status == 200 => {
                PolicyFetch::Body(String::from_utf8_lossy(&r.body).into_owned())
            }
            Ok(r) => PolicyFetch::Status(r.status),
            Err(e) => PolicyFetch::Failed(e.to_string()),
        }
    }
}
