//! Target resolution: a static `host:port`, or MX records (hickory-resolver) ordered by
//! [`super::mx::plan`] then A/AAAA. Owns the resolver built from `[dns]`; never sends mail.
//! MX routing tries at most [`MAX_MX_HOSTS`] hosts and, unless `[dns] allow_private_mx`,
//! drops exchange addresses that are loopback, private, shared (CGNAT), link-local,
//! unique-local, unspecified or multicast ([`is_private`]). Static addresses are never filtered.

use super::mx::{MxPlan, plan};
use super::reply::Outcome;
use crate::config::{Dns, Target};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use std::net::{IpAddr, SocketAddr};

/// MX hosts tried per attempt, at most (in preference order).
pub const MAX_MX_HOSTS: usize = 5;

/// Addresses an MX exchange may not resolve to unless `[dns] allow_private_mx`: loopback,
/// RFC 1918, CGNAT 100.64/10, link-local, unique-local fc00::/7, unspecified, multicast,
/// broadcast (IPv4-mapped IPv6 is judged as IPv4).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80
        }
    }
}

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

/// The hickory resolver for `[dns]`: the system configuration, or the servers in
/// `[dns] servers` (UDP then TCP, each on its configured port); `tune` adjusts the options
/// (time limits, attempts) before it is built. The one place a resolver is built.
pub fn hickory_resolver(
    dns: &Dns,
    tune: impl FnOnce(&mut ResolverOpts),
) -> Result<TokioResolver, ResolverError> {
    let err = |e: &dyn std::fmt::Display| ResolverError(e.to_string());
    let mut builder = if dns.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| err(&e))?
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
    };
    tune(builder.options_mut());
    builder.build().map_err(|e| err(&e))
}

/// DNS access for MX targets.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// The system resolver, or the servers in `[dns] servers`.
    pub fn new(dns: &Dns) -> Result<Self, ResolverError> {
        Ok(Self {
            inner: hickory_resolver(dns, |_| {})?,
        })
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

    /// The hosts to try for a target, in order. `allow_private` is `[dns] allow_private_mx`
    /// (for `mx` targets; a static `address` is the operator's own choice and always used).
    pub async fn hops(&self, target: &Target, allow_private: bool) -> Result<Vec<Hop>, Outcome> {
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
        self.hops_for_domain(domain, target.port, allow_private)
            .await
    }

    /// MX hosts of `domain` (for targets and for `bounce.via = "mx"`): the first
    /// [`MAX_MX_HOSTS`] of the plan, with private addresses dropped unless `allow_private`.
    /// An MX set that resolves only to private addresses is a local deferral (the operator
    /// may be mid-change in DNS or may set the key; `queue.max_age` bounds the wait).
    pub async fn hops_for_domain(
        &self,
        domain: &str,
        port: u16,
        allow_private: bool,
    ) -> Result<Vec<Hop>, Outcome> {
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
        for h in hosts.into_iter().take(MAX_MX_HOSTS) {
            match self.addresses(&h, port).await {
                Ok(mut addrs) if !addrs.is_empty() => {
                    if !allow_private {
                        addrs.retain(|a| !is_private(a.ip()));
                    }
                    if addrs.is_empty() {
                        tracing::warn!(host = %h, %domain, "MX host resolves only to private addresses; skipped");
                        last_err = Some(Outcome::local(&format!(
                            "MX host {h} of {domain} resolves only to private addresses (set dns.allow_private_mx)"
                        )));
                    } else {
                        hops.push(Hop { host: h, addrs });
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::is_private;

    #[test]
    fn private_ranges() {
        for a in [
            "127.0.0.5",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
