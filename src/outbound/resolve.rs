//! Target resolution: a static `host:port`, or MX records (hickory-resolver) ordered by
//! [`super::mx::plan`] then A/AAAA. Owns the resolver built from `[dns]`; never sends mail.

use super::mx::{MxPlan, plan};
use super::reply::Outcome;
use crate::config::{Dns, Target};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use std::net::SocketAddr;

/// One host to try: its name (for TLS checks and logs) and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver: {0}")]
pub struct ResolverError(String);

/// DNS access for MX targets.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// The system resolver, or the servers in `[dns] servers`.
    pub fn new(dns: &Dns) -> Result<Self, ResolverError> {
        let inner = if dns.servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| ResolverError(e.to_string()))?
                .build()
                .map_err(|e| ResolverError(e.to_string()))?
        } else {
            let servers = dns
                .servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
            .build()
            .map_err(|e| ResolverError(e.to_string()))?
        };
        Ok(Self { inner })
    }

    /// MX plan for `domain`. DNS trouble is temporary; a domain that does not exist is permanent.
    pub async fn mx(&self, domain: &str) -> Result<MxPlan, Outcome> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.inner.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let recs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_utf8())),
                        _ => None,
                    })
                    .collect();
                let recs: Vec<(u16, String)> = recs
                    .into_iter()
                    .map(|(p, h)| (p, if h == "." { String::new() } else { h }))
                    .collect();
                plan(domain, &recs, true, |n| fastrand::usize(..n)).ok_or_else(|| {
                    Outcome::local_permanent(&format!("550 5.1.2 no mail exchanger for {domain}"))
                })
            }
            Err(e) if e.is_nx_domain() => Err(Outcome::local_permanent(&format!(
                "550 5.1.2 domain {domain} does not exist (NXDOMAIN)"
            ))),
            Err(e) if e.is_no_records_found() => {
                Ok(MxPlan::Implicit(domain.trim_end_matches('.').to_string()))
            }
            Err(e) => Err(Outcome::local(&format!(
                "DNS lookup of MX {domain} failed: {e}"
            ))),
        }
    }

    /// A and AAAA of `host`.
    pub async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Outcome> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(l) => Ok(l.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
            Err(e) => Err(Outcome::local(&format!("DNS lookup of {host} failed: {e}"))),
        }
    }

    /// The hosts to try for a target, in order.
    pub async fn hops(&self, target: &Target) -> Result<Vec<Hop>, Outcome> {
        if let Some(a) = &target.address {
            let addrs: Vec<SocketAddr> = match a.host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, a.port)],
                // Static hosts go through the system (getaddrinfo: /etc/hosts, search domains).
                Err(_) => tokio::net::lookup_host((a.host.as_str(), a.port))
                    .await
                    .map_err(|e| Outcome::local(&format!("cannot resolve {}: {e}", a.host)))?
                    .collect(),
            };
            return Ok(vec![Hop {
                host: a.host.clone(),
                addrs,
            }]);
        }
        let Some(domain) = &target.mx else {
            return Err(Outcome::local("target has neither address nor mx"));
        };
        self.hops_for_domain(domain, target.port).await
    }

    /// MX hosts of `domain` (for targets and for `bounce.via = "mx"`).
    pub async fn hops_for_domain(&self, domain: &str, port: u16) -> Result<Vec<Hop>, Outcome> {
        let hosts = match self.mx(domain).await? {
            MxPlan::NullMx => {
                return Err(Outcome::local_permanent(&format!(
                    "556 5.1.10 domain {domain} accepts no mail (null MX)"
                )));
            }
            MxPlan::Implicit(h) => vec![h],
            MxPlan::Hosts(h) => h,
        };
        let mut hops = Vec::new();
        let mut last_err = None;
        for h in hosts {
            match self.addresses(&h, port).await {
                Ok(addrs) if !addrs.is_empty() => hops.push(Hop { host: h, addrs }),
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            }
        }
        if hops.is_empty() {
            return Err(last_err
                .unwrap_or_else(|| Outcome::local(&format!("no address for any MX of {domain}"))));
        }
        Ok(hops)
    }
}
