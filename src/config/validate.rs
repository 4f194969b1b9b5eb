//! Completes and cross-checks a parsed configuration. Completing it changes the `Config`:
//! `gateway.state_dir` resolved against the configuration's directory, `accept_domains`
//! normalised, `bounce.via` defaulted, and the list files it names read into it
//! (`recipients_file` patterns, `recipients_known` allow-lists). Checking it: names that must
//! exist, windows that must be ordered, files that must be readable, and the warnings about the
//! gateway's own settings. Reads files; writes none. Whether routing patterns compile (and
//! shadowed rules) is the routing module's check (`routing::check`), run by `crate::loader`.

use super::{Config, KeyPath, KnownList, Reader, resolve_path};
use crate::address::Address;
use std::path::Path;

/// The target names a configuration defines (including those whose section failed to parse),
/// for "unknown target" checks.
struct Known {
    names: Vec<String>,
    /// The names as the error message lists them.
    list: String,
}

impl Known {
    fn new(c: &Config, broken_targets: &[String]) -> Known {
        let mut names: Vec<String> = c.targets.keys().chain(broken_targets).cloned().collect();
        names.sort();
        let list = if names.is_empty() {
            "none defined".to_string()
        } else {
            names.join(", ")
        };
        Known { names, list }
    }

    fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// `names` (a rule's `deliver`, `routing.default`) must name at least one known target.
    fn check_targets(&self, names: &[String], path: &KeyPath, cx: &mut Reader<'_>) {
        if names.is_empty() {
            cx.error(path, "names no target".into());
        }
        for n in names {
            if !self.contains(n) {
                cx.error(path, format!("unknown target {n:?} (known: {})", self.list));
            }
        }
    }
}

/// Complete `c` (see the module doc) and check it, reporting into `cx`. `failed`: the sections
/// that did not parse (their checks are skipped); `broken_targets`: targets whose section did
/// not parse (still known names).
pub(crate) fn complete_and_check(
    c: &mut Config,
    base_dir: &Path,
    failed: &[&str],
    broken_targets: &[String],
    cx: &mut Reader<'_>,
) {
    let ok = |s: &str| !failed.contains(&s);
    if ok("gateway") {
        gateway(c, base_dir, cx);
    }
    if ok("admin") {
        super::admin::check(c, base_dir, cx);
    }
    let known = Known::new(c, broken_targets);
    targets(c, base_dir, cx);
    routing(c, base_dir, &known, cx);
    queue(c, ok("queue"), cx);
    bounce_via(c, ok("bounce"), &known, cx);
    backfill_jobs(c, &known, cx);
    super::alert::check(c, &known.names, cx);
}

/// Each target: address or mx, domains, limits, readable files, AUTH only inside verified TLS;
/// loads its `recipients_known` list.
/// `keep_original` without `convert_tnef` (targets and backfill jobs).
const KEEP_ORIGINAL_ALONE: &str =
    "keeps winmail.dat beside its conversion: set convert_tnef = true too";

fn targets(c: &mut Config, base_dir: &Path, cx: &mut Reader<'_>) {
    let p = KeyPath::root();
    for (name, t) in c.targets.iter_mut() {
        let tp = p.key("targets").key(name);
        if let Some(file) = &t.recipients_known {
            t.known = read_known(&resolve_path(base_dir, file), &tp, cx);
        }
        if t.keep_original && !t.convert_tnef {
            cx.error(&tp.key("keep_original"), KEEP_ORIGINAL_ALONE.into());
        }
        match (&t.address, &t.mx) {
            (Some(_), Some(_)) => {
                cx.error(&tp.key("mx"), "set either address or mx, not both".into())
            }
            (None, None) => cx.error(
                &tp,
                "needs address = \"host:port\" or mx = \"domain\"".into(),
            ),
            _ => {}
        }
        if let Some(d) = &t.mx
            && !is_domain(d)
        {
            cx.error(&tp.key("mx"), format!("invalid domain {d:?}"));
        }
        if let Some(d) = &t.rcpt_domain
            && !is_domain(d)
        {
            cx.error(&tp.key("rcpt_domain"), format!("invalid domain {d:?}"));
        }
        if t.connections == 0 {
            cx.error(&tp.key("connections"), "must be at least 1".into());
        }
        if t.messages_per_connection == 0 {
            cx.error(
                &tp.key("messages_per_connection"),
                "must be at least 1".into(),
            );
        }
        if let Some(ca) = &t.tls_ca {
            readable(&resolve_path(base_dir, ca), &tp.key("tls_ca"), cx);
        }
        if let Some(a) = &t.auth {
            target_auth(t, a, base_dir, &tp, cx);
        }
        if let Some(a) = &t.arc
            && !is_domain(&a.domain)
        {
            let d = &a.domain;
            cx.error(
                &tp.key("arc").key("domain"),
                format!("invalid domain {d:?}"),
            );
        }
    }
}

/// A target's `auth`: the password file readable, and only inside verified TLS.
fn target_auth(
    t: &super::Target,
    a: &super::TargetAuth,
    base_dir: &Path,
    tp: &KeyPath,
    cx: &mut Reader<'_>,
) {
    readable(
        &resolve_path(base_dir, &a.password_file),
        &tp.key("auth").key("password_file"),
        cx,
    );
    // AUTH only inside verified TLS (the client refuses too, but say so up front).
    use crate::config::TlsMode;
    let weak = match t.tls {
        TlsMode::None => Some("tls = \"none\" sends the password in cleartext"),
        TlsMode::Opportunistic => Some(
            "tls = \"opportunistic\" sends the password in cleartext when STARTTLS is not offered",
        ),
        TlsMode::Required | TlsMode::Implicit if !t.tls_verify => {
            Some("tls_verify = false sends the password to any server that answers")
        }
        TlsMode::Required | TlsMode::Implicit => None,
    };
    if let Some(why) = weak {
        cx.error(
            &tp.key("auth"),
            format!(
                "needs verified TLS: set tls = \"required\" or \"implicit\" and keep tls_verify = true ({why})"
            ),
        );
    }
}

/// `routing.default` and each rule: known targets, unique names, ordered windows; loads its
/// `recipients_file` patterns and `recipients_known` list.
fn routing(c: &mut Config, base_dir: &Path, known: &Known, cx: &mut Reader<'_>) {
    let p = KeyPath::root();
    if let Some(d) = &c.routing.default {
        known.check_targets(d, &p.key("routing").key("default"), cx);
    }
    let mut names = std::collections::HashSet::new();
    for (i, rule) in c.routing.rules.iter_mut().enumerate() {
        let rp = p.key("routing").key("rule").index(i);
        if rule.name.trim().is_empty() {
            cx.error(&rp.key("name"), "must not be empty".into());
        } else if rule.name == "default" {
            cx.error(
                &rp.key("name"),
                "\"default\" is reserved for routing.default".into(),
            );
        } else if !names.insert(rule.name.clone()) {
            cx.error(
                &rp.key("name"),
                format!("duplicate rule name {:?}", rule.name),
            );
        }
        known.check_targets(&rule.deliver, &rp.key("deliver"), cx);
        if let (Some(f), Some(u)) = (rule.active_from, rule.active_until)
            && f >= u
        {
            cx.error(
                &rp.key("active_until"),
                format!(
                    "must be after active_from ({} >= {})",
                    f.to_rfc3339(),
                    u.to_rfc3339()
                ),
            );
        }
        if let Some(file) = &rule.recipients_file {
            let full = resolve_path(base_dir, file);
            match std::fs::read_to_string(&full) {
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let l = line.split('#').next().unwrap_or("").trim();
                        if !l.is_empty() {
                            rule.file_patterns.push((n + 1, l.to_string()));
                        }
                    }
                }
                Err(e) => cx.error(
                    &rp.key("recipients_file"),
                    format!("cannot read {}: {e}", full.display()),
                ),
            }
        }
        if let Some(file) = &rule.recipients_known {
            rule.known = read_known(&resolve_path(base_dir, file), &rp, cx);
        }
        if rule.recipients.is_empty() && rule.recipients_file.is_none() {
            cx.error(
                &rp,
                "has no recipients (set recipients or recipients_file)".into(),
            );
        }
    }
}

/// `[queue]`: a non-empty retry schedule of non-zero steps, a non-zero `max_age`. `parsed`:
/// the section parsed (an empty schedule is then a mistake, not a parse failure's default).
fn queue(c: &Config, parsed: bool, cx: &mut Reader<'_>) {
    let p = KeyPath::root();
    let q = p.key("queue");
    if parsed && c.queue.retry_schedule.is_empty() {
        cx.error(
            &q.key("retry_schedule"),
            "must list at least one interval".into(),
        );
    }
    if c.queue.retry_schedule.iter().any(|d| d.0.is_zero()) {
        cx.error(
            &q.key("retry_schedule"),
            "intervals must be greater than zero".into(),
        );
    }
    if c.queue.max_age.0.is_zero() {
        cx.error(&q.key("max_age"), "must be greater than zero".into());
    }
}

/// `bounce.via`: a known target or `mx`; defaults to `old` when such a target exists, else
/// `mx`. `parsed`: the section parsed.
fn bounce_via(c: &mut Config, parsed: bool, known: &Known, cx: &mut Reader<'_>) {
    let p = KeyPath::root();
    match &c.bounce.via {
        Some(via) if parsed && via != "mx" && !known.contains(via) => cx.error(
            &p.key("bounce").key("via"),
            format!("unknown target {via:?} (known: {}; or \"mx\")", known.list),
        ),
        Some(_) => {}
        None => {
            let via = if c.targets.contains_key("old") {
                "old"
            } else {
                "mx"
            };
            c.bounce.via = Some(via.to_string());
        }
    }
}

/// Each backfill job: unique names, ordered dates, limits, known ledger target, credentials
/// for its auth mechanism, folder globs that compile.
fn backfill_jobs(c: &Config, known: &Known, cx: &mut Reader<'_>) {
    let p = KeyPath::root();
    let mut jobs = std::collections::HashSet::new();
    for (i, j) in c.backfill.jobs.iter().enumerate() {
        let jp = p.key("backfill").key("job").index(i);
        if !jobs.insert(j.name.clone()) {
            cx.error(&jp.key("name"), format!("duplicate job name {:?}", j.name));
        }
        if let (Some(s), Some(b)) = (j.since, j.before)
            && s >= b
        {
            cx.error(
                &jp.key("before"),
                format!("must be after since ({s} >= {b})"),
            );
        }
        if j.concurrency == Some(0) {
            cx.error(&jp.key("concurrency"), "must be at least 1".into());
        }
        if let Some(t) = &j.ledger_target
            && !c.targets.contains_key(t)
        {
            cx.error(
                &jp.key("ledger_target"),
                format!("unknown target {t:?} (known: {})", known.list),
            );
        }
        if j.connections_per_mailbox == Some(0) {
            cx.error(
                &jp.key("connections_per_mailbox"),
                "must be at least 1".into(),
            );
        }
        for (side, ep) in [("source", &j.source), ("destination", &j.destination)] {
            let sp = jp.key(side);
            use crate::config::ImapAuth;
            if let Some(m) = &ep.maildir {
                if !ep.host.is_empty() {
                    cx.error(
                        &sp.key("maildir"),
                        "a side is either a Maildir or an IMAP server (host): not both".into(),
                    );
                }
                if m.trim().is_empty() {
                    cx.error(&sp.key("maildir"), "empty path".into());
                }
                continue;
            }
            if ep.host.is_empty() || ep.port == 0 {
                cx.error(
                    &sp,
                    "needs host and port (an IMAP server) or maildir = \"PATH\"".into(),
                );
                continue;
            }
            match ep.auth {
                ImapAuth::Plain if ep.password_file.is_none() && ep.passwords_file.is_none() => cx
                    .error(
                        &sp.key("auth"),
                        "plain auth needs password_file (admin or user) or passwords_file".into(),
                    ),
                ImapAuth::Xoauth2 if ep.token_command.is_none() && ep.oauth.is_none() => cx.error(
                    &sp.key("auth"),
                    "xoauth2 needs token_command or oauth = {..}".into(),
                ),
                _ => {}
            }
        }
        backfill_profiles(j, &jp, cx);
        for glob in j.folders.include.iter().chain(&j.folders.exclude) {
            if let Err(e) = globset::Glob::new(glob) {
                cx.error(
                    &jp.key("folders"),
                    format!("invalid folder glob {glob:?}: {e}"),
                );
            }
        }
    }
}

/// A side's `max_message_size` within its profile's limit; `keep_original` only with
/// `convert_tnef`; `gmail_labels` only for a Gmail source.
fn backfill_profiles(j: &crate::config::BackfillJob, jp: &KeyPath, cx: &mut Reader<'_>) {
    use crate::config::profile::{Labels, Profile, ProfileName};
    for (side, ep) in [("source", &j.source), ("destination", &j.destination)] {
        let p = Profile::of(ep.profile);
        if let (Some(size), Some(limit)) = (ep.max_message_size, p.max_message_size_limit)
            && size.0 > limit
        {
            cx.error(
                &jp.key(side).key("max_message_size"),
                format!(
                    "{} takes messages up to {limit} bytes ({} MiB); {} is more",
                    p.name,
                    limit >> 20,
                    size.0
                ),
            );
        }
    }
    if j.keep_original && !j.convert_tnef {
        cx.error(&jp.key("keep_original"), KEEP_ORIGINAL_ALONE.into());
    }
    if j.gmail_labels == Labels::Keywords && j.source.profile != ProfileName::Gmail {
        cx.warn(
            &jp.key("gmail_labels"),
            "applies to a Gmail source: set source.profile = \"gmail\" (or it is used only when the source advertises X-GM-EXT-1)".into(),
        );
    }
}

fn gateway(c: &mut Config, base_dir: &Path, cx: &mut Reader<'_>) {
    // Relative to the config file, like every other path in it, for every command alike.
    c.gateway.state_dir = resolve_path(base_dir, &c.gateway.state_dir);
    let g = KeyPath::root().key("gateway");
    if !is_fqdn(&c.gateway.hostname) {
        let why = format!(
            "{:?} is not a fully qualified domain name (it names the gateway in EHLO, Received:, X-Cutover-Loop: and DSNs; e.g. \"mx1.example.com\")",
            c.gateway.hostname
        );
        if cx.index.contains(&g.key("hostname")) {
            cx.error(&g.key("hostname"), why);
        } else {
            // Left out: configurations used only for backfill or queue commands need no name,
            // so the default stays usable there; `serve` with it is what the warning is about.
            cx.warn(&g.key("hostname"), format!("not set, so {why}"));
        }
    }
    for (i, n) in c.gateway.public_names.iter().enumerate() {
        if !is_fqdn(n) {
            cx.error(
                &g.key("public_names").index(i),
                format!("{n:?} is not a fully qualified domain name (the name the MX records point at, e.g. \"mx1.example.com\")"),
            );
        }
    }
    if c.gateway.accept_domains.is_empty() {
        cx.error(
            &g.key("accept_domains"),
            "must list at least one domain".into(),
        );
    }
    for (i, d) in c.gateway.accept_domains.iter_mut().enumerate() {
        let n = crate::address::normalise_domain(d.trim());
        if !is_domain(&n) {
            cx.error(
                &g.key("accept_domains").index(i),
                format!("invalid domain {d:?}"),
            );
        }
        *d = n;
    }
    if c.gateway.listen.is_empty() {
        cx.error(&g.key("listen"), "must list at least one address".into());
    }
    if c.gateway.max_message_size.0 == 0 {
        cx.error(
            &g.key("max_message_size"),
            "must be greater than zero".into(),
        );
    }
    if c.gateway.max_header_size.0 == 0 {
        cx.error(
            &g.key("max_header_size"),
            "must be greater than zero".into(),
        );
    }
    gateway_networks(c, &g, cx);
    gateway_limits(c, &g, cx);
    if let Some(tls) = &c.gateway.tls {
        readable(
            &resolve_path(base_dir, &tls.cert),
            &g.key("tls").key("cert"),
            cx,
        );
        readable(
            &resolve_path(base_dir, &tls.key),
            &g.key("tls").key("key"),
            cx,
        );
    }
}

/// `trusted_networks` and the PROXY protocol peers: warnings about networks too broad to trust.
fn gateway_networks(c: &Config, g: &KeyPath, cx: &mut Reader<'_>) {
    for (i, net) in c.gateway.trusted_networks.iter().enumerate() {
        if let Some(why) = broad_network(net) {
            cx.warn(
                &g.key("trusted_networks").index(i),
                format!(
                    "{net} is {why}: behind SNAT, a load balancer or a Kubernetes Service every client may come from it; list the old server's own addresses (e.g. \"10.1.2.3/32\")"
                ),
            );
        }
    }
    if c.gateway.trusted_relay_any {
        cx.warn(
            &g.key("trusted_relay_any"),
            "trusted_networks may relay to any domain on the internet through routing.default (an open relay for every client in them)".into(),
        );
    }
    if c.gateway.proxy_protocol && c.gateway.proxy_from.is_empty() {
        cx.error(
            &g.key("proxy_protocol"),
            "needs proxy_from = [the load balancers' addresses] (a PROXY header from anyone else would let them choose their own client address)".into(),
        );
    }
    if !c.gateway.proxy_protocol && !c.gateway.proxy_from.is_empty() {
        cx.warn(
            &g.key("proxy_from"),
            "ignored: proxy_protocol is not enabled".into(),
        );
    }
    for (i, net) in c.gateway.proxy_from.iter().enumerate() {
        if c.gateway.proxy_protocol
            && let Some(why) = broad_network(net)
        {
            cx.warn(
                &g.key("proxy_from").index(i),
                format!("{net} is {why}: every host in it may claim any client address; list the load balancers' own addresses"),
            );
        }
    }
}

/// The session limits and timeouts: each must be non-zero (and the IPv6 prefix in range).
fn gateway_limits(c: &Config, g: &KeyPath, cx: &mut Reader<'_>) {
    if c.gateway.data_idle_timeout.0.is_zero() {
        cx.error(
            &g.key("data_idle_timeout"),
            "must be greater than zero".into(),
        );
    }
    if !(16..=128).contains(&c.gateway.ipv6_prefix) {
        cx.error(
            &g.key("ipv6_prefix"),
            "must be a prefix length from 16 to 128 (64: one limit per /64)".into(),
        );
    }
    if c.gateway.max_session_time.0.is_zero() {
        cx.error(
            &g.key("max_session_time"),
            "must be greater than zero".into(),
        );
    }
    if c.gateway.min_data_rate.0 == 0 {
        cx.error(
            &g.key("min_data_rate"),
            "must be at least 1 (bytes per second)".into(),
        );
    }
    if c.gateway.hard_error_limit == 0 {
        cx.error(&g.key("hard_error_limit"), "must be at least 1".into());
    }
    if c.gateway.junk_command_limit == 0 {
        cx.error(&g.key("junk_command_limit"), "must be at least 1".into());
    }
    if c.gateway.verify_timeout.0.is_zero() {
        cx.error(
            &g.key("verify_timeout"),
            "must be greater than zero (the longest a recipient's probes may take)".into(),
        );
    }
    if c.gateway.max_recipients == 0 {
        cx.error(&g.key("max_recipients"), "must be at least 1".into());
    }
    if c.gateway.max_connections == 0 || c.gateway.max_connections_per_ip == 0 {
        cx.error(
            &g.key("max_connections"),
            "connection limits must be at least 1".into(),
        );
    }
}

/// Read a `recipients_known` file (the key under `section`): one address a line, `#` comments.
/// `None` (with an error naming the file and key) when it cannot be read; a line that is not
/// an address is an error at its line.
fn read_known(full: &Path, section: &KeyPath, cx: &mut Reader<'_>) -> Option<KnownList> {
    let key = section.key("recipients_known");
    let text = match std::fs::read_to_string(full) {
        Ok(t) => t,
        Err(e) => {
            cx.error(
                &key,
                format!(
                    "cannot read {}: {e} (the allow-list of recipients: one address a line)",
                    full.display()
                ),
            );
            return None;
        }
    };
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        if Address::parse(l).is_some() {
            addresses.push((n + 1, l.to_string()));
        } else {
            cx.error_in(
                full,
                n + 1,
                &key,
                format!(
                    "invalid address {l:?}: recipients_known lists exact addresses (local@domain), one a line"
                ),
            );
        }
    }
    Some(KnownList {
        file: full.to_path_buf(),
        addresses,
    })
}

fn readable(path: &Path, key: &KeyPath, cx: &mut Reader<'_>) {
    if let Err(e) = std::fs::metadata(path) {
        cx.error(key, format!("cannot read {}: {e}", path.display()));
    }
}

/// A fully qualified host name: at least two LDH labels (RFC 1123), a trailing dot allowed, and
/// not an IP address (the last label is not all digits).
pub fn is_fqdn(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    let labels: Vec<&str> = h.split('.').collect();
    !h.is_empty()
        && h.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|l| !l.chars().all(|c| c.is_ascii_digit()))
}

/// Why a `trusted_networks` entry is too broad to trust, if it is: an IPv4 network of /16 or
/// wider, an IPv6 one of /48 or wider (named "private" when it lies in RFC 1918, CGNAT or ULA
/// space, where NAT and container networks put every client).
pub fn broad_network(net: &ipnet::IpNet) -> Option<String> {
    let (broad, private) = match net {
        ipnet::IpNet::V4(n) => {
            let a = n.network();
            let private = a.is_private()
                || ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(100, 64, 0, 0), 10)
                    .is_ok_and(|cgnat| cgnat.contains(&a));
            (n.prefix_len() <= 16, private)
        }
        ipnet::IpNet::V6(n) => (
            n.prefix_len() <= 48,
            (n.network().segments()[0] & 0xfe00) == 0xfc00,
        ),
    };
    broad.then(|| {
        format!(
            "a broad {}range (/{})",
            if private { "private " } else { "" },
            net.prefix_len()
        )
    })
}

/// A plausible DNS domain (LDH labels or UTF-8, no empty labels).
pub fn is_domain(d: &str) -> bool {
    let d = d.trim_end_matches('.');
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}
