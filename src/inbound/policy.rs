//! Intake policy as pure functions: address syntax (the raw path between `<` and `>`, parsed
//! once into the one [`Address`] type; domain syntax, then [`crate::address::normalise_domain`]),
//! the MAIL/RCPT parameters we advertise, the relay decision (accepted domain, or
//! a trusted client and a rule naming the domain, plus a route), and the grouping of accepted
//! recipients into legs. Never does IO and never touches a socket: the session asks, this module
//! answers with a [`Reply`].

use super::reply::Reply;
use crate::address::Address;
use crate::config::Gateway;
use crate::queue::NewLeg;
use crate::routing::{How, Route};
use crate::telemetry::Rejection;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// Longest local part (RFC 5321 §4.5.3.1.1) and whole path we accept.
pub const MAX_LOCAL_LEN: usize = 64;
pub const MAX_DOMAIN_LEN: usize = 255;
pub const MAX_PATH_LEN: usize = 256;
/// Slowest average DATA transfer rate the time limit allows for, in bytes per second.
pub const DATA_MIN_RATE: u64 = 16 * 1024;

/// The gateway section, pre-digested for per-command checks.
#[derive(Clone, Debug)]
pub struct Policy {
    pub hostname: String,
    /// Normalised (lower case, no trailing dot).
    pub accept_domains: HashSet<String>,
    pub trusted_networks: Vec<IpNet>,
    pub max_message_size: u64,
    /// Largest header section (`max_header_size`): `552 5.3.4` above it.
    pub max_header_size: usize,
    pub max_received: u32,
    pub reject_unrouted: bool,
    /// `trusted_relay_any`: trusted clients may relay to any routed domain, `routing.default`
    /// included (otherwise only to domains a rule names explicitly).
    pub trusted_relay_any: bool,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub command_timeout: Duration,
    /// Base of the DATA time limit ([`Policy::data_time_limit`]).
    pub data_timeout: Duration,
    /// Longest wait for the next DATA byte (`data_idle_timeout`, at most `data_timeout`).
    pub data_idle_timeout: Duration,
    pub min_free_space: u64,
    pub require_tls: bool,
    /// Abuse limits (see `inbound::limits`).
    pub ipv6_prefix: u8,
    pub max_connection_rate: u32,
    pub max_session_time: Duration,
    /// Bytes per second a DATA block must average once `data_timeout` has passed.
    pub min_data_rate: u64,
    pub junk_command_limit: u32,
    pub hard_error_limit: u32,
    /// PROXY protocol: on, and from which balancers.
    pub proxy_protocol: bool,
    pub proxy_from: Vec<IpNet>,
}

impl Policy {
    pub fn from_gateway(g: &Gateway) -> Self {
        Self {
            hostname: g.hostname.clone(),
            accept_domains: g
                .accept_domains
                .iter()
                .filter_map(|d| check_domain(d, true).ok())
                .collect(),
            trusted_networks: g.trusted_networks.clone(),
            max_message_size: g.max_message_size.0,
            max_header_size: usize::try_from(g.max_header_size.0).unwrap_or(usize::MAX),
            max_received: g.max_received,
            reject_unrouted: g.reject_unrouted,
            trusted_relay_any: g.trusted_relay_any,
            max_recipients: g.max_recipients.max(1),
            max_connections: g.max_connections.max(1),
            max_connections_per_ip: g.max_connections_per_ip.max(1),
            command_timeout: g.command_timeout.0,
            data_timeout: g.data_timeout.0,
            data_idle_timeout: g.data_idle_timeout.0.min(g.data_timeout.0),
            min_free_space: g.min_free_space.0,
            require_tls: g.tls.as_ref().is_some_and(|t| t.require),
            ipv6_prefix: g.ipv6_prefix.clamp(16, 128),
            max_connection_rate: g.max_connection_rate,
            max_session_time: g.max_session_time.0,
            min_data_rate: g.min_data_rate.0.max(1),
            junk_command_limit: g.junk_command_limit.max(1),
            hard_error_limit: g.hard_error_limit.max(1),
            proxy_protocol: g.proxy_protocol,
            proxy_from: g.proxy_from.clone(),
        }
    }

    /// Is `ip` in `trusted_networks` (IPv4-mapped IPv6 addresses count as IPv4)?
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }

    pub fn accepts_domain(&self, domain: &str) -> bool {
        self.accept_domains.contains(domain)
    }

    /// How long a whole DATA block may take, the lesser of two limits:
    /// - the size limit: `data_timeout` plus the time the message needs at [`DATA_MIN_RATE`]. The
    ///   size is the one announced with `MAIL FROM ... SIZE=` (`announced`, 0 = none: then
    ///   `max_message_size`), or the bytes `received` so far if the client sent more than it
    ///   announced, never more than `max_message_size`. With the defaults (10 min, 50 MiB) that is
    ///   10 min + 53 min for an unannounced or 50 MiB message, 10 min + 64 s for 1 MiB;
    /// - the rate limit (`min_data_rate`, Postfix's `smtpd_min_data_rate`): `data_timeout` plus
    ///   the bytes `received` so far at that rate, so a client trickling a byte now and then is cut
    ///   off after `data_timeout` however large the size it announced.
    pub fn data_time_limit(&self, announced: u64, received: u64) -> Duration {
        let size = if announced == 0 {
            self.max_message_size
        } else {
            announced.max(received).min(self.max_message_size)
        };
        let by_size = self.data_timeout.saturating_add(Duration::from_millis(
            size.saturating_mul(1000) / DATA_MIN_RATE,
        ));
        let by_rate = self.data_timeout.saturating_add(Duration::from_millis(
            received.saturating_mul(1000) / self.min_data_rate.max(1),
        ));
        by_size.min(by_rate)
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("no closing '>' in path")]
    Unterminated,
    #[error("empty address")]
    Empty,
    #[error("address too long")]
    TooLong,
    #[error("source routes are not accepted")]
    SourceRoute,
    #[error("address has no domain")]
    NoDomain,
    #[error("malformed local part")]
    BadLocal,
    #[error("quoted local part hides a routing character")]
    QuotedRouting,
    #[error("'%' or '!' routing in local part")]
    RoutingHack,
    #[error("address literals are not accepted")]
    IpLiteral,
    #[error("malformed domain")]
    BadDomain,
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsUtf8,
    #[error("control character in address")]
    Control,
}

impl AddrError {
    /// The reply for a refused recipient.
    pub fn rcpt_reply(self) -> Reply {
        match self {
            AddrError::NeedsUtf8 => Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address requires SMTPUTF8 at MAIL FROM",
            ),
            AddrError::SourceRoute
            | AddrError::QuotedRouting
            | AddrError::RoutingHack
            | AddrError::IpLiteral => Reply::new(550, "5.7.1", format!("Relaying denied: {self}")),
            _ => Reply::new(
                501,
                "5.1.3",
                format!("Bad recipient address syntax: {self}"),
            ),
        }
    }

    /// The reason a refused address is counted under (`cutover_intake_rejections_total`),
    /// matching [`AddrError::rcpt_reply`]: routing tricks are relaying, the rest syntax.
    pub fn rejection(&self) -> Rejection {
        match self {
            AddrError::SourceRoute
            | AddrError::QuotedRouting
            | AddrError::RoutingHack
            | AddrError::IpLiteral => Rejection::RelayDenied,
            _ => Rejection::Syntax,
        }
    }

    /// The reply for a refused sender.
    pub fn mail_reply(self) -> Reply {
        match self {
            AddrError::NeedsUtf8 => Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address requires SMTPUTF8 at MAIL FROM",
            ),
            _ => Reply::new(501, "5.1.7", format!("Bad sender address syntax: {self}")),
        }
    }
}

/// The raw path of a `MAIL FROM:`/`RCPT TO:` line: the text between the first `<` and the `>`
/// closing it (quotes respected), or the bare word after the colon when there are no brackets.
pub fn extract_path(line: &str) -> Result<&str, AddrError> {
    split_path(line).map(|(path, _)| path)
}

/// [`extract_path`], plus the text after the path: the ESMTP parameters (`SIZE=10 BODY=8BITMIME`).
pub fn split_path(line: &str) -> Result<(&str, &str), AddrError> {
    let Some(colon) = line.find(':') else {
        return Err(AddrError::Empty);
    };
    let rest = line[colon + 1..].trim_start_matches([' ', '\t']);
    let Some(inner) = rest.strip_prefix('<') else {
        // Lenient form without brackets: up to the first whitespace.
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        return Ok((&rest[..end], &rest[end..]));
    };
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => return Ok((&inner[..i], &inner[i + 1..])),
            '\r' | '\n' => return Err(AddrError::Unterminated),
            _ => {}
        }
    }
    Err(AddrError::Unterminated)
}

/// The first `MAIL FROM` parameter cutover does not advertise, if any (its keyword, upper case,
/// at most 64 characters). Advertised: `SIZE=n` (SIZE), `BODY=7BIT` / `BODY=8BITMIME` (8BITMIME)
/// and `SMTPUTF8`. Everything else (`REQUIRETLS`, `BODY=BINARYMIME`, the DSN parameters `RET` and
/// `ENVID`, `HOLDFOR`, `AUTH`, `MT-PRIORITY`, ...) would be a promise cutover cannot keep, so it is
/// refused with `555 5.5.4` (RFC 5321 §4.1.1.11) instead of being dropped silently.
pub fn unadvertised_mail_param(line: &str) -> Option<String> {
    let params = split_path(line).map(|(_, p)| p).unwrap_or("");
    params.split_ascii_whitespace().find_map(|p| {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        let ok = match key.to_ascii_uppercase().as_str() {
            "SIZE" => !value.is_empty(),
            "BODY" => value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME"),
            "SMTPUTF8" => !p.contains('='),
            _ => false,
        };
        (!ok).then(|| param_name(p))
    })
}

/// The first `RCPT TO` parameter, if any: cutover advertises none (no DSN: `NOTIFY` and `ORCPT`
/// are refused with `555 5.5.4` rather than ignored).
pub fn unadvertised_rcpt_param(line: &str) -> Option<String> {
    let params = split_path(line).map(|(_, p)| p).unwrap_or("");
    params.split_ascii_whitespace().next().map(param_name)
}

/// `BODY=BINARYMIME` as given, or just the keyword for a parameter with another value; printable
/// and bounded, for the reply text.
fn param_name(p: &str) -> String {
    let shown = match p.split_once('=') {
        Some((k, v)) if k.eq_ignore_ascii_case("BODY") => format!("{k}={v}"),
        Some((k, _)) => k.to_string(),
        None => p.to_string(),
    };
    shown
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Check the labels of `domain` (one trailing dot allowed; `utf8` allows non-ASCII labels) and
/// return it normalised ([`crate::address::normalise_domain`]).
pub fn check_domain(domain: &str, utf8: bool) -> Result<String, AddrError> {
    if domain.starts_with('[') {
        return Err(AddrError::IpLiteral);
    }
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() || d.len() > MAX_DOMAIN_LEN {
        return Err(AddrError::BadDomain);
    }
    for label in d.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(AddrError::BadDomain);
        }
        for c in label.chars() {
            if c.is_ascii_alphanumeric() || c == '-' {
                continue;
            }
            if !c.is_ascii() && !c.is_control() && !c.is_whitespace() {
                if !utf8 {
                    return Err(AddrError::NeedsUtf8);
                }
                continue;
            }
            return Err(AddrError::BadDomain);
        }
    }
    Ok(crate::address::normalise_domain(domain))
}

/// Parse a raw path (as returned by [`extract_path`]) strictly, the way a recipient must look:
/// no source route, no `%`/`!` routing, no quoted local part hiding `@`/`%`/`!`, no address
/// literal, non-ASCII only with `utf8`.
pub fn parse_recipient(raw: &str, utf8: bool) -> Result<Address, AddrError> {
    parse_mailbox(raw, utf8, true)
}

/// Parse a sender path leniently (`%`/`!` allowed in the local part, which only matters for
/// bounces); an empty path is the null sender and returns `Ok(None)`.
pub fn parse_sender(raw: &str, utf8: bool) -> Result<Option<Address>, AddrError> {
    if raw.is_empty() {
        return Ok(None);
    }
    // RFC 5321 §4.1.1.2: a source route in a reverse-path is accepted and ignored.
    let raw = if raw.starts_with('@') {
        raw.split_once(':')
            .map(|(_, r)| r)
            .ok_or(AddrError::SourceRoute)?
    } else {
        raw
    };
    parse_mailbox(raw, utf8, false).map(Some)
}

fn parse_mailbox(raw: &str, utf8: bool, strict: bool) -> Result<Address, AddrError> {
    if raw.is_empty() {
        return Err(AddrError::Empty);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(AddrError::TooLong);
    }
    if raw.chars().any(|c| c.is_control()) {
        return Err(AddrError::Control);
    }
    if raw.starts_with('@') {
        return Err(AddrError::SourceRoute);
    }
    if !utf8 && !raw.is_ascii() {
        return Err(AddrError::NeedsUtf8);
    }
    // Split at the last '@' outside quotes.
    let (local, domain) = split_local_domain(raw)?;
    if local.is_empty() || local.len() > MAX_LOCAL_LEN {
        return Err(AddrError::BadLocal);
    }
    if local.starts_with('"') {
        let inner = local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .filter(|_| local.len() >= 2)
            .ok_or(AddrError::BadLocal)?;
        let unescaped: String = unescape_quoted(inner)?;
        if strict && unescaped.contains(['@', '%', '!', '"', ':', ',', '<', '>']) {
            return Err(AddrError::QuotedRouting);
        }
    } else {
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddrError::BadLocal);
        }
        for c in local.chars() {
            let ok = c.is_ascii_alphanumeric()
                || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                || (!c.is_ascii() && !c.is_whitespace());
            if !ok {
                return Err(AddrError::BadLocal);
            }
        }
        if strict && local.contains(['%', '!']) {
            return Err(AddrError::RoutingHack);
        }
    }
    let domain = check_domain(domain, utf8)?;
    Ok(Address {
        local: local.to_string(),
        domain,
    })
}

fn split_local_domain(raw: &str) -> Result<(&str, &str), AddrError> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in raw.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '@' if !in_quote => {
                if at.is_some() {
                    // Two unquoted '@': `a@b@example.com`.
                    return Err(AddrError::BadLocal);
                }
                at = Some(i);
            }
            _ => {}
        }
    }
    if in_quote {
        return Err(AddrError::BadLocal);
    }
    let at = at.ok_or(AddrError::NoDomain)?;
    Ok((&raw[..at], &raw[at + 1..]))
}

fn unescape_quoted(inner: &str) -> Result<String, AddrError> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(AddrError::BadLocal)?),
            '"' => return Err(AddrError::BadLocal),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What the relay check decided for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptDecision {
    Accept(Route),
    Reject(Reply),
}

/// The relay decision for a syntactically valid recipient. A domain in `accept_domains` needs a
/// route (a rule, or `routing.default`). Any other domain is relaying: refused (`550 5.7.1`)
/// unless the client is trusted, and even then accepted only through a rule that names the domain
/// explicitly ([`names_domain`]), never through `routing.default` (DESIGN §3: behind SNAT or a
/// Kubernetes Service every client may look trusted), unless `trusted_relay_any` is set.
pub fn decide_rcpt(
    policy: &Policy,
    mailbox: &Address,
    trusted: bool,
    route: Option<Route>,
) -> RcptDecision {
    let ours = policy.accepts_domain(&mailbox.domain);
    if !ours && !trusted {
        return RcptDecision::Reject(Reply::new(550, "5.7.1", "Relaying denied"));
    }
    match route {
        Some(r) if !r.targets.is_empty() => {
            if ours || policy.trusted_relay_any || names_domain(&r) {
                RcptDecision::Accept(r)
            } else {
                RcptDecision::Reject(Reply::new(
                    550,
                    "5.7.1",
                    "Relaying denied: no routing rule names this domain",
                ))
            }
        }
        _ if policy.reject_unrouted || !ours => RcptDecision::Reject(Reply::new(
            550,
            "5.1.1",
            "Recipient address rejected: no route to this mailbox",
        )),
        // reject_unrouted = false: never accept mail we have nowhere to put; ask to retry
        // (the admin may be adding the rule).
        _ => RcptDecision::Reject(Reply::new(
            450,
            "4.1.1",
            "Recipient address not routed yet, try again later",
        )),
    }
}

/// The reason a [`decide_rcpt`] refusal is counted under: its `5.7.1` replies are relaying, the
/// others (`5.1.1`, `4.1.1`) a recipient no rule routes.
pub fn rcpt_rejection(r: &Reply) -> Rejection {
    if r.esc == "5.7.1" {
        Rejection::RelayDenied
    } else {
        Rejection::Unrouted
    }
}

/// Does `route` come from a rule whose matching pattern names the recipient's domain literally:
/// an address, `@domain`, `@.parent`, or a glob with a literal domain (`*.admin@partner.net`)?
/// `routing.default`, a glob with a wildcard domain and a `re:` pattern do not.
pub fn names_domain(route: &Route) -> bool {
    match route.how {
        How::Address | How::AddressWithoutExtension | How::Domain | How::ParentDomain => {
            route.rule_index.is_some()
        }
        How::Glob => {
            route.rule_index.is_some()
                && route
                    .pattern
                    .as_deref()
                    .and_then(|p| p.rsplit_once('@'))
                    .is_some_and(|(_, d)| !d.is_empty() && !d.contains(['*', '?']))
        }
        How::Regex | How::Default => false,
    }
}

/// Group accepted recipients by target, in first-seen order: one leg per target, each with
/// the recipients (and the rule each matched) that go there. A dual-delivery rule gives two legs.
pub fn plan_legs(accepted: &[(String, Route)]) -> Vec<NewLeg> {
    let mut legs: Vec<NewLeg> = Vec::new();
    for (rcpt, route) in accepted {
        for target in &route.targets {
            let leg = match legs.iter_mut().position(|l| &l.target == target) {
                Some(i) => &mut legs[i],
                None => {
                    legs.push(NewLeg {
                        target: target.clone(),
                        rules: Vec::new(),
                        recipients: Vec::new(),
                    });
                    let n = legs.len() - 1;
                    &mut legs[n]
                }
            };
            if !leg.recipients.contains(rcpt) {
                leg.recipients.push(rcpt.clone());
                leg.rules.push(route.rule.clone());
            }
        }
    }
    legs
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
