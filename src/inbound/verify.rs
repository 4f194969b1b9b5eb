//! Recipient verification (no backscatter): before a `RCPT TO` is answered `250`, check that the
//! recipient exists downstream, so mail for unknown users is refused at RCPT time (`550 5.1.1`)
//! instead of being accepted and bounced later to a usually forged sender.
//!
//! Two checks, configured per `[[routing.rule]]` (for the recipients it matches) and per
//! `[targets.NAME]` (for every recipient routed there):
//! - `recipients_known = "FILE"`: an allow-list, one address a line (Postfix's
//!   `relay_recipient_maps`); the domain compares case-insensitively, the local part as routing
//!   compares it (`ignore_local_case`, and `alice+tag` is known when `alice` is listed). The file
//!   is read by the config loader, so a SIGHUP reload re-reads it (an unreadable file fails the
//!   reload and the running lists stay).
//! - `verify_recipients = "probe"` (Postfix's `reject_unverified_recipient`): `MAIL FROM:<>`,
//!   `RCPT TO` at the target, through the same outbound client and connection policy delivery
//!   uses, after the target's `rcpt_domain` rewrite (the probe asks what delivery would ask).
//!   2xx = known, 5xx = unknown (`550 5.1.1`), 4xx / timeout / connection error = `450 4.1.1`.
//!   A rule's probe asks every target of the rule; a target's probe asks that target.
//!
//! A recipient is accepted only when every list names it and no probed target refuses it; a
//! refusal wins over a temporary failure (dual delivery: the recipient must exist on every
//! probed side). Probes for one recipient run concurrently within `gateway.verify_timeout`.
//! Answers are cached per (target, probed address, local part folded unless
//! `ignore_local_case = false`): known for `verify_cache_positive`, unknown
//! for `verify_cache_negative`, temporary failures not at all; the cache is bounded
//! ([`CACHE_MAX`] entries, oldest evicted), lives in `Inbound` and is emptied on reload.
//! Concurrent probes of the same (target, address) share one connection (single flight), and
//! at most the target's `connections` probes are open to it at once (besides delivery's).
//! `postmaster` at an accepted domain is never verified (RFC 5321 §4.5.1).
//!
//! Owns the plan (pure), the cache (pure, time passed in), the reply choice (pure) and the probe
//! calls at the edge. Never delivers, never routes, never writes to the queue.

use super::reply::Reply;
use crate::address::Address;
use crate::config::{Config, KnownList, VerifyMode};
use crate::outbound::dial::Dial;
use crate::outbound::reply::Outcome;
use crate::outbound::resolve::{Resolver, ResolverError};
use crate::routing::{self, MatchOptions, Route};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Most cached probe answers; the oldest entry goes first beyond this.
pub const CACHE_MAX: usize = 100_000;

/// An allow-list, compiled: folded addresses.
#[derive(Clone, Debug)]
pub struct KnownSet {
    keys: HashSet<String>,
    opts: MatchOptions,
    /// `targets.new.recipients_known` / `routing.rule[0].recipients_known` (for logs).
    pub source: String,
}

impl KnownSet {
    pub fn new(list: &KnownList, opts: &MatchOptions, source: String) -> KnownSet {
        let keys = list
            .addresses
            .iter()
            .filter_map(|(_, a)| Address::parse(a))
            .map(|a| opts.keys(&a).0)
            .collect();
        KnownSet {
            keys,
            opts: opts.clone(),
            source,
        }
    }

    /// Is `a` listed (itself, or without its `+extension`)?
    pub fn contains(&self, a: &Address) -> bool {
        let (full, base) = self.opts.keys(a);
        self.keys.contains(&full) || base.is_some_and(|b| self.keys.contains(&b))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What one rule or target asks for.
#[derive(Clone, Debug, Default)]
pub struct Check {
    pub probe: bool,
    pub known: Option<Arc<KnownSet>>,
}

impl Check {
    fn is_off(&self) -> bool {
        !self.probe && self.known.is_none()
    }
}

/// A probed target: how to reach it and how it rewrites recipients.
#[derive(Clone, Debug)]
struct ProbeTarget {
    target: crate::config::Target,
    /// Probes open at once to this target: at most its `connections` (apart from delivery's).
    slots: Arc<Semaphore>,
}

/// The verification settings, from the configuration (part of `inbound::Settings`).
#[derive(Clone, Default)]
pub struct VerifyConfig {
    /// By rule index.
    rules: Vec<Check>,
    targets: HashMap<String, Check>,
    probe_targets: HashMap<String, ProbeTarget>,
    accept_domains: Vec<String>,
    /// `routing.ignore_local_case`: cache keys fold the local part.
    fold_local: bool,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub timeout: Duration,
    base_dir: PathBuf,
    helo: String,
    allow_private_mx: bool,
    /// Built only when some rule or target probes.
    resolver: Option<Resolver>,
}

/// What to check for one recipient.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub lists: Vec<Arc<KnownSet>>,
    /// Targets to probe, in route order, each once.
    pub probes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.probes.is_empty()
    }
}

impl VerifyConfig {
    /// From a validated configuration (builds a DNS resolver when any probing is configured).
    pub fn from_config(cfg: &Config) -> Result<VerifyConfig, ResolverError> {
        let opts = MatchOptions {
            ignore_local_case: cfg.routing.ignore_local_case,
            recipient_delimiter: cfg.routing.recipient_delimiter.clone(),
        };
        let check = |mode: Option<VerifyMode>, known: &Option<KnownList>, source: String| Check {
            probe: mode == Some(VerifyMode::Probe),
            known: known
                .as_ref()
                .map(|k| Arc::new(KnownSet::new(k, &opts, source))),
        };
        let rules: Vec<Check> = cfg
            .routing
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                check(
                    r.verify_recipients,
                    &r.known,
                    format!("routing.rule[{i}].recipients_known"),
                )
            })
            .collect();
        let targets: HashMap<String, Check> = cfg
            .targets
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    check(
                        t.verify_recipients,
                        &t.known,
                        format!("targets.{name}.recipients_known"),
                    ),
                )
            })
            .filter(|(_, c)| !c.is_off())
            .collect();
        // Every target a probing rule delivers to, and every probing target.
        let mut probed: HashSet<&str> = HashSet::new();
        for (r, c) in cfg.routing.rules.iter().zip(&rules) {
            if c.probe {
                probed.extend(r.deliver.iter().map(String::as_str));
            }
        }
        probed.extend(
            targets
                .iter()
                .filter(|(_, c)| c.probe)
                .map(|(n, _)| n.as_str()),
        );
        let probe_targets: HashMap<String, ProbeTarget> = probed
            .iter()
            .filter_map(|n| {
                cfg.targets.get(*n).map(|t| {
                    let slots = Arc::new(Semaphore::new(t.connections.max(1)));
                    let target = t.clone();
                    (n.to_string(), ProbeTarget { target, slots })
                })
            })
            .collect();
        let resolver = if probe_targets.is_empty() {
            None
        } else {
            Some(Resolver::new(&cfg.dns)?)
        };
        Ok(VerifyConfig {
            rules,
            targets,
            probe_targets,
            accept_domains: cfg.gateway.accept_domains.clone(),
            fold_local: cfg.routing.ignore_local_case,
            positive_ttl: cfg.gateway.verify_cache_positive.0,
            negative_ttl: cfg.gateway.verify_cache_negative.0,
            timeout: cfg.gateway.verify_timeout.0,
            base_dir: cfg
                .path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
            helo: cfg.gateway.hostname.clone(),
            allow_private_mx: cfg.dns.allow_private_mx,
            resolver,
        })
    }

    /// Is any verification configured at all?
    pub fn is_enabled(&self) -> bool {
        !self.targets.is_empty() || self.rules.iter().any(|c| !c.is_off())
    }

    /// Which lists must name the recipient and which targets to probe, for a recipient routed
    /// by `route` (pure): the matched rule's settings apply to all of the rule's targets, each
    /// target's own settings to itself.
    pub fn plan(&self, route: &Route) -> Plan {
        let mut plan = Plan::default();
        let rule = route.rule_index.and_then(|i| self.rules.get(i));
        if let Some(k) = rule.and_then(|r| r.known.clone()) {
            plan.lists.push(k);
        }
        let rule_probes = rule.is_some_and(|r| r.probe);
        for t in &route.targets {
            let own = self.targets.get(t);
            if let Some(k) = own.and_then(|c| c.known.clone()) {
                plan.lists.push(k);
            }
            if (rule_probes || own.is_some_and(|c| c.probe)) && !plan.probes.contains(t) {
                plan.probes.push(t.clone());
            }
        }
        plan
    }

    /// The address `target` would be asked about for `address` (its `rcpt_domain` rewrite).
    pub fn probe_address(&self, target: &str, address: &Address) -> String {
        let rd = self
            .probe_targets
            .get(target)
            .and_then(|p| p.target.rcpt_domain.as_deref());
        routing::final_rcpt(address, rd, &self.accept_domains, false)
    }

    /// Is `address` exempt from verification (`postmaster` at an accepted domain)?
    pub fn exempt(&self, a: &Address) -> bool {
        a.local.eq_ignore_ascii_case("postmaster") && a.in_domains(&self.accept_domains)
    }
}

/// One target's answer about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// Refused (5xx, or not on a list); the reason for the log.
    Unknown(String),
    /// Could not tell now (4xx, timeout, connection error).
    TempFail(String),
}

impl Verdict {
    /// Classify a probe's outcome.
    pub fn from_outcome(o: &Outcome) -> Verdict {
        match o {
            Outcome::Delivered { .. } => Verdict::Known,
            Outcome::Failed { reply } => Verdict::Unknown(reply.clone()),
            Outcome::Deferred { reply } => Verdict::TempFail(reply.clone()),
        }
    }
}

/// All answers together: any refusal wins, then any temporary failure, else known.
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut out = Verdict::Known;
    for v in verdicts {
        match (&out, v) {
            (Verdict::Unknown(_), _) => {}
            (_, v @ Verdict::Unknown(_)) => out = v,
            (Verdict::Known, v @ Verdict::TempFail(_)) => out = v,
            _ => {}
        }
    }
    out
}

/// The reply for a combined verdict; `None` = go on and accept.
pub fn reply(v: &Verdict) -> Option<Reply> {
    match v {
        Verdict::Known => None,
        Verdict::Unknown(_) => Some(Reply::new(
            550,
            "5.1.1",
            "Recipient address rejected: unknown user",
        )),
        Verdict::TempFail(_) => Some(Reply::new(
            450,
            "4.1.1",
            "Recipient address rejected: cannot verify it now, try again later",
        )),
    }
}

/// How long an answer is reused: known and unknown for their TTLs, a temporary failure never.
pub fn ttl(v: &Verdict, positive: Duration, negative: Duration) -> Duration {
    match v {
        Verdict::Known => positive,
        Verdict::Unknown(_) => negative,
        Verdict::TempFail(_) => Duration::ZERO,
    }
}

type Key = (String, String);

/// Bounded cache of probe answers with expiry; the oldest insertion is evicted first. Pure:
/// the caller passes the time.
#[derive(Debug)]
pub struct Cache {
    map: HashMap<Key, (Verdict, Instant, u64)>,
    /// Insertion order (key, sequence number); stale pairs are skipped when evicting.
    order: VecDeque<(Key, u64)>,
    seq: u64,
    max: usize,
}

impl Cache {
    pub fn new(max: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// The unexpired answer for `(target, address)`.
    pub fn get(&mut self, target: &str, address: &str, now: Instant) -> Option<Verdict> {
        let key = (target.to_string(), address.to_string());
        match self.map.get(&key) {
            Some((v, until, _)) if now < *until => Some(v.clone()),
            Some(_) => {
                self.map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remember `v` for `ttl` (a zero TTL forgets any earlier answer instead).
    pub fn put(&mut self, target: &str, address: &str, v: Verdict, ttl: Duration, now: Instant) {
        let key = (target.to_string(), address.to_string());
        if ttl.is_zero() {
            self.map.remove(&key);
            return;
        }
        self.seq += 1;
        self.order.push_back((key.clone(), self.seq));
        self.map.insert(key, (v, now + ttl, self.seq));
        while self.map.len() > self.max {
            let Some((k, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|(_, _, cur)| *cur == s) {
                self.map.remove(&k);
            }
        }
        // Re-inserted keys leave stale order entries behind: compact now and then.
        if self.order.len() > 2 * self.max {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(_, _, cur)| cur == s));
        }
    }
}

/// Verification counters for `/metrics`.
#[derive(Debug, Default)]
pub struct VerifyStats {
    pub probe_known: AtomicU64,
    pub probe_unknown: AtomicU64,
    pub probe_tempfail: AtomicU64,
    /// Answered from the cache, or by sharing a probe already in flight.
    pub cache_known: AtomicU64,
    pub cache_unknown: AtomicU64,
    pub list_known: AtomicU64,
    pub list_unknown: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The shared, long-lived side of verification (in `Inbound`): cache, probes in flight, counters.
pub struct Verifier {
    cache: Mutex<Cache>,
    inflight: Mutex<HashMap<Key, watch::Receiver<Option<Verdict>>>>,
    pub stats: Arc<VerifyStats>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            cache: Mutex::new(Cache::new(CACHE_MAX)),
            inflight: Mutex::new(HashMap::new()),
            stats: Arc::new(VerifyStats::default()),
        }
    }
}

enum Slot {
    Wait(watch::Receiver<Option<Verdict>>),
    Lead(watch::Sender<Option<Verdict>>),
}

/// Removes a probe's in-flight entry when the probe ends or is cancelled (waiters then see the
/// sender gone and probe themselves).
struct InFlight<'a> {
    map: &'a Mutex<HashMap<Key, watch::Receiver<Option<Verdict>>>>,
    key: Key,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.map).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Verifier {
    /// Forget every cached answer (configuration reloaded).
    pub fn clear(&self) {
        lock(&self.cache).clear();
    }

    /// Check `address`, routed by `route`: `None` to accept, or the refusal (`550 5.1.1`,
    /// `450 4.1.1`).
    pub async fn check(
        &self,
        cfg: &VerifyConfig,
        address: &Address,
        route: &Route,
    ) -> Option<Reply> {
        let plan = cfg.plan(route);
        if plan.is_empty() || cfg.exempt(address) {
            return None;
        }
        for list in &plan.lists {
            if !list.contains(address) {
                bump(&self.stats.list_unknown);
                tracing::debug!(rcpt = %address, list = %list.source, "recipient not in the known list");
                return reply(&Verdict::Unknown(format!("not in {}", list.source)));
            }
        }
        if !plan.lists.is_empty() {
            bump(&self.stats.list_known);
        }
        if plan.probes.is_empty() {
            return None;
        }
        let probes = plan.probes.iter().map(|t| self.probe(cfg, t, address));
        let verdict =
            match tokio::time::timeout(cfg.timeout, futures_util::future::join_all(probes)).await {
                Ok(vs) => combine(vs),
                Err(_) => {
                    bump(&self.stats.probe_tempfail);
                    Verdict::TempFail(format!("no answer within {:?}", cfg.timeout))
                }
            };
        match &verdict {
            Verdict::Known => {}
            Verdict::Unknown(why) | Verdict::TempFail(why) => {
                tracing::info!(rcpt = %address, targets = ?plan.probes, reason = %why, "recipient verification refused");
            }
        }
        reply(&verdict)
    }

    /// One target's answer: cached, shared with a probe in flight, or asked now.
    async fn probe(&self, cfg: &VerifyConfig, target: &str, address: &Address) -> Verdict {
        let probed = cfg.probe_address(target, address);
        // Cached by the address as routing compares it (`Alice@` and `alice@` are one entry
        // unless `ignore_local_case = false`); the target is asked the address as written.
        let folded = if cfg.fold_local {
            probed.to_lowercase()
        } else {
            probed.clone()
        };
        let key: Key = (target.to_string(), folded.clone());
        loop {
            if let Some(v) = lock(&self.cache).get(target, &folded, Instant::now()) {
                bump(match v {
                    Verdict::Known => &self.stats.cache_known,
                    _ => &self.stats.cache_unknown,
                });
                return v;
            }
            let mut rx = match self.slot(&key) {
                Slot::Wait(rx) => rx,
                Slot::Lead(tx) => {
                    let _guard = InFlight {
                        map: &self.inflight,
                        key: key.clone(),
                    };
                    let v = self.ask(cfg, target, &probed).await;
                    lock(&self.cache).put(
                        target,
                        &folded,
                        v.clone(),
                        ttl(&v, cfg.positive_ttl, cfg.negative_ttl),
                        Instant::now(),
                    );
                    let _ = tx.send(Some(v.clone()));
                    return v;
                }
            };
            let shared = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            if let Some(v) = shared {
                bump(match v {
                    Verdict::Known => &self.stats.cache_known,
                    _ => &self.stats.cache_unknown,
                });
                return v;
            }
            // The probe we waited for was cancelled: look again, and ask ourselves.
        }
    }

    /// Join the probe of `key` in flight, or become the one that asks.
    fn slot(&self, key: &Key) -> Slot {
        let mut inflight = lock(&self.inflight);
        if let Some(rx) = inflight.get(key) {
            return Slot::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx);
        Slot::Lead(tx)
    }

    /// Ask `target` about `probed` now.
    async fn ask(&self, cfg: &VerifyConfig, target: &str, probed: &str) -> Verdict {
        let outcome = match self.open_and_probe(cfg, target, probed).await {
            Ok(o) | Err(o) => o,
        };
        let v = Verdict::from_outcome(&outcome);
        bump(match v {
            Verdict::Known => &self.stats.probe_known,
            Verdict::Unknown(_) => &self.stats.probe_unknown,
            Verdict::TempFail(_) => &self.stats.probe_tempfail,
        });
        tracing::debug!(%target, rcpt = %probed, reply = %outcome.reply(), "recipient probe");
        v
    }

    async fn open_and_probe(
        &self,
        cfg: &VerifyConfig,
        target: &str,
        probed: &str,
    ) -> Result<Outcome, Outcome> {
        let (Some(t), Some(resolver)) = (cfg.probe_targets.get(target), cfg.resolver.as_ref())
        else {
            return Err(Outcome::local(&format!("target {target} cannot be probed")));
        };
        let dial = Dial::target(
            resolver,
            &t.target,
            &cfg.base_dir,
            &cfg.helo,
            cfg.allow_private_mx,
        )
        .await?
        .capped(cfg.timeout);
        // Waiting for a slot counts against the recipient's time budget like the rest.
        let _slot = t
            .slots
            .acquire()
            .await
            .map_err(|_| Outcome::local("probe slots closed"))?;
        let mut session = dial.open(target).await?;
        let o = session.probe(probed).await;
        session.quit().await;
        Ok(o)
    }
}

/// What `config check` says about the verification keys of `cfg`: a heading, then one indented
/// line per rule or target that verifies and one for the cache and time limits; empty when
/// nothing verifies.
pub fn explain(cfg: &Config) -> Vec<String> {
    let known = |file: &std::path::Path, list: &Option<KnownList>| {
        format!(
            "recipients_known = {:?} ({} addresses, re-read on SIGHUP)",
            file.display(),
            list.as_ref().map_or(0, |l| l.addresses.len())
        )
    };
    let mut out = Vec::new();
    for (i, r) in cfg.routing.rules.iter().enumerate() {
        let who = format!("  routing.rule[{i}] {:?}", r.name);
        if r.verify_recipients == Some(VerifyMode::Probe) {
            out.push(format!(
                "{who}: verify_recipients = \"probe\": asks {} (RCPT TO, after its rcpt_domain rewrite) whether each recipient the rule matches exists before accepting it",
                r.deliver.join(" and ")
            ));
        }
        if let Some(f) = &r.recipients_known {
            out.push(format!(
                "{who}: {}: each recipient the rule matches must be listed",
                known(f, &r.known)
            ));
        }
    }
    for (name, t) in &cfg.targets {
        let who = format!("  targets.{name}");
        if t.verify_recipients == Some(VerifyMode::Probe) {
            out.push(format!(
                "{who}: verify_recipients = \"probe\": asks {name} (RCPT TO, after its rcpt_domain rewrite) whether each recipient routed to it exists before accepting it"
            ));
        }
        if let Some(f) = &t.recipients_known {
            out.push(format!(
                "{who}: {}: each recipient routed to {name} must be listed",
                known(f, &t.known)
            ));
        }
    }
    if out.is_empty() {
        return out;
    }
    let probes = cfg
        .routing
        .rules
        .iter()
        .map(|r| r.verify_recipients)
        .chain(cfg.targets.values().map(|t| t.verify_recipients))
        .any(|m| m == Some(VerifyMode::Probe));
    let g = &cfg.gateway;
    out.insert(
        0,
        "recipient verification (unknown users: 550 5.1.1 at RCPT; a probe without an answer: 450 4.1.1; postmaster is never checked):".into(),
    );
    if probes {
        out.push(format!(
        "  probe answers cached per target and address: known {}, unknown {} (gateway.verify_cache_positive, verify_cache_negative; temporary failures never), at most {} per recipient (gateway.verify_timeout)",
        g.verify_cache_positive, g.verify_cache_negative, g.verify_timeout
    ));
    }
    out
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
