//! How to reach a target: its hosts (static address or MX, see [`super::resolve`]), its TLS
//! policy and connector, timeouts and AUTH credentials, and opening a [`Session`] on the first
//! host that answers. Shared by delivery (the scheduler) and recipient probes
//! (`inbound::verify`), so a probe talks to a target exactly as delivery does. Never sends
//! mail and never decides routes or retries.

use super::client::{ConnectSpec, Session};
use super::reply::Outcome;
use super::resolve::{Hop, Resolver};
use crate::config::{Target, TlsMode, resolve_path};
use crate::tls_client::{Connector, connector};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Everything needed to open a session to one target (or to the MX hosts of a domain).
#[derive(Clone)]
pub struct Dial {
    pub hops: Vec<Hop>,
    /// TLS policy, connector, EHLO name, timeouts and credentials; `host` and `addr` are
    /// filled in from each hop.
    pub spec: ConnectSpec,
}

/// The connection settings shared by every host of a dial.
fn spec(
    tls: TlsMode,
    connector: Connector,
    helo: &str,
    (connect_timeout, timeout): (Duration, Duration),
    auth: Option<(String, String)>,
) -> ConnectSpec {
    ConnectSpec {
        host: String::new(),
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        tls,
        connector,
        helo: helo.to_string(),
        connect_timeout,
        timeout,
        auth,
    }
}

impl Dial {
    /// A configured target: its hosts, TLS policy, timeouts and credentials (the password file
    /// and `tls_ca` relative to `base_dir`, the config file's directory), read now. The delivery
    /// engine reads those once per loaded configuration instead ([`super::settings`]).
    pub async fn target(
        resolver: &Resolver,
        t: &Target,
        base_dir: &Path,
        helo: &str,
        allow_private_mx: bool,
    ) -> Result<Dial, Outcome> {
        let hops = resolver.hops(t, allow_private_mx).await?;
        Ok(Dial {
            hops,
            spec: Dial::target_spec(t, base_dir, helo)?,
        })
    }

    /// [`Dial::target`] with connection settings resolved beforehand by [`Dial::target_spec`]
    /// (an error in them is reported after host resolution, as [`Dial::target`] does).
    pub async fn prepared(
        resolver: &Resolver,
        t: &Target,
        spec: &Result<ConnectSpec, Outcome>,
        allow_private_mx: bool,
    ) -> Result<Dial, Outcome> {
        let hops = resolver.hops(t, allow_private_mx).await?;
        Ok(Dial {
            hops,
            spec: spec.clone()?,
        })
    }

    /// The connection settings of a configured target: TLS policy and connector (`tls_ca`),
    /// timeouts, AUTH credentials (the password file). Paths are relative to `base_dir`.
    pub fn target_spec(t: &Target, base_dir: &Path, helo: &str) -> Result<ConnectSpec, Outcome> {
        let auth = match &t.auth {
            Some(a) => {
                let path = resolve_path(base_dir, &a.password_file);
                let pass = std::fs::read_to_string(&path)
                    .map_err(|e| Outcome::local(&format!("cannot read {}: {e}", path.display())))?;
                Some((
                    a.username.clone(),
                    pass.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
            None => None,
        };
        let ca = t.tls_ca.as_ref().map(|p| resolve_path(base_dir, p));
        let conn =
            connector(t.tls_verify, ca.as_deref()).map_err(|e| Outcome::local(&e.to_string()))?;
        Ok(spec(
            t.tls,
            conn,
            helo,
            (t.connect_timeout.0, t.timeout.0),
            auth,
        ))
    }

    /// The MX hosts of `domain` on port 25, opportunistic TLS with verification, no AUTH (DSNs
    /// with `bounce.via = "mx"`).
    pub async fn domain(
        resolver: &Resolver,
        domain: &str,
        helo: &str,
        allow_private_mx: bool,
    ) -> Result<Dial, Outcome> {
        Dial::domain_prepared(resolver, domain, &Dial::domain_spec(helo), allow_private_mx).await
    }

    /// [`Dial::domain`] with the settings of [`Dial::domain_spec`] built beforehand.
    pub async fn domain_prepared(
        resolver: &Resolver,
        domain: &str,
        spec: &Result<ConnectSpec, Outcome>,
        allow_private_mx: bool,
    ) -> Result<Dial, Outcome> {
        let hops = resolver
            .hops_for_domain(domain, 25, allow_private_mx)
            .await?;
        Ok(Dial {
            hops,
            spec: spec.clone()?,
        })
    }

    /// The connection settings for a domain's MX hosts: opportunistic TLS verified against the
    /// system trust store, default timeouts, no AUTH.
    pub fn domain_spec(helo: &str) -> Result<ConnectSpec, Outcome> {
        let conn = connector(true, None).map_err(|e| Outcome::local(&e.to_string()))?;
        Ok(spec(
            TlsMode::Opportunistic,
            conn,
            helo,
            (Duration::from_secs(30), Duration::from_secs(300)),
            None,
        ))
    }

    /// Cap both timeouts at `limit` (a probe must answer within its time budget).
    pub fn capped(mut self, limit: Duration) -> Dial {
        self.spec.connect_timeout = self.spec.connect_timeout.min(limit);
        self.spec.timeout = self.spec.timeout.min(limit);
        self
    }

    /// Open a session on the first host (and address) that answers; `name` names the target in
    /// the error when there is no address at all.
    pub async fn open(&self, name: &str) -> Result<Session, Outcome> {
        let mut last = Outcome::local(&format!("no address for target {name}"));
        for hop in &self.hops {
            for addr in &hop.addrs {
                let spec = ConnectSpec {
                    host: hop.host.clone(),
                    addr: *addr,
                    ..self.spec.clone()
                };
                match Session::open(&spec).await {
                    Ok(s) => return Ok(s),
                    Err(o) => {
                        tracing::debug!(host = %hop.host, %addr, reply = %o.reply(), "connection attempt failed; trying the next host");
                        last = o;
                    }
                }
            }
        }
        Err(last)
    }
}
