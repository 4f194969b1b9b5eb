//! Routing: which targets a recipient goes to at a given instant. A pure function of the
//! configuration ([`Router::route`]), compiled once so that lookups cost the same with 50 or
//! 50,000 listed addresses. Also the per-target `rcpt_domain` rewrite, and (`check`) the
//! configuration checks that need compiled rules. Never does IO.

mod check;
pub mod explain;

pub use check::check;

use crate::address::{Address, normalise_domain};
use crate::config::Routing;
use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

/// Matching options shared by all patterns.
#[derive(Clone, Debug)]
pub struct MatchOptions {
    pub ignore_local_case: bool,
    pub recipient_delimiter: String,
}

impl Default for MatchOptions {
    fn default() -> Self {
        Self {
            ignore_local_case: true,
            recipient_delimiter: "+".into(),
        }
    }
}

impl MatchOptions {
    fn fold_local(&self, local: &str) -> String {
        if self.ignore_local_case {
            local.to_lowercase()
        } else {
            local.to_string()
        }
    }

    /// The address as matched (`local@domain`, local part folded) and, when it carries an
    /// extension (`alice+tag`), the address without it.
    pub fn keys(&self, a: &Address) -> (String, Option<String>) {
        let local = self.fold_local(&a.local);
        let full = format!("{local}@{}", a.domain);
        let base = (!self.recipient_delimiter.is_empty() && !a.is_quoted())
            .then(|| local.find(self.recipient_delimiter.as_str()))
            .flatten()
            .filter(|&i| i > 0)
            .map(|i| format!("{}@{}", &local[..i], a.domain));
        (full, base)
    }
}

/// One recipient pattern of a rule.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// `alice@example.com` (stored folded).
    Exact(String),
    /// `@example.com`: every address at that domain.
    Domain(String),
    /// `@.example.com`: every address at any subdomain of it (not the domain itself).
    Subdomain(String),
    /// `*.admin@example.com`: `*` any run of characters, `?` one.
    Glob(String, regex::Regex),
    /// `re:^ops-.*@example\.com$`, anchored.
    Regex(String, regex::Regex),
}

impl Pattern {
    /// Parse one pattern as written in `recipients` or a list file.
    pub fn parse(raw: &str, opts: &MatchOptions) -> Result<Self, String> {
        let s = raw.trim();
        if let Some(re) = s.strip_prefix("re:") {
            let r = regex::RegexBuilder::new(&format!("^(?:{re})$"))
                .case_insensitive(opts.ignore_local_case)
                .build()
                .map_err(|e| format!("invalid regex {re:?}: {}", error_reason(&e.to_string())))?;
            return Ok(Pattern::Regex(s.to_string(), r));
        }
        if s.is_empty() {
            return Err("empty pattern".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) && !s.starts_with('"') {
            return Err(format!("invalid pattern {s:?}: contains whitespace"));
        }
        if let Some(d) = s.strip_prefix("@.") {
            return domain_part(d, s).map(Pattern::Subdomain);
        }
        if let Some(d) = s.strip_prefix('@') {
            return domain_part(d, s).map(Pattern::Domain);
        }
        if s.contains('*') || s.contains('?') {
            if !s.contains('@') {
                return Err(format!(
                    "invalid pattern {s:?}: a glob must contain '@' (e.g. \"*.admin@example.com\")"
                ));
            }
            let (l, d) = s.rsplit_once('@').unwrap_or((s, ""));
            let mut re = String::from("^");
            for c in format!("{}@{}", opts.fold_local(l), normalise_domain(d)).chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            let r = regex::RegexBuilder::new(&re)
                .case_insensitive(opts.ignore_local_case)
                .build()
                .map_err(|e| format!("invalid glob {s:?}: {}", error_reason(&e.to_string())))?;
            return Ok(Pattern::Glob(s.to_string(), r));
        }
        let a = Address::parse(s).ok_or_else(|| {
            format!("invalid pattern {s:?}: expected an address, @domain, @.domain, a glob with '*', or re:REGEX")
        })?;
        Ok(Pattern::Exact(format!(
            "{}@{}",
            opts.fold_local(&a.local),
            a.domain
        )))
    }

    /// Does this pattern match the given keys (see [`MatchOptions::keys`])? Returns how.
    pub fn matches(&self, a: &Address, full: &str, base: Option<&str>) -> Option<How> {
        match self {
            Pattern::Exact(e) => {
                if e == full {
                    Some(How::Address)
                } else if base == Some(e.as_str()) {
                    Some(How::AddressWithoutExtension)
                } else {
                    None
                }
            }
            Pattern::Domain(d) => (*d == a.domain).then_some(How::Domain),
            Pattern::Subdomain(d) => is_subdomain(&a.domain, d).then_some(How::ParentDomain),
            Pattern::Glob(_, r) | Pattern::Regex(_, r) => {
                let how = if matches!(self, Pattern::Glob(..)) {
                    How::Glob
                } else {
                    How::Regex
                };
                if r.is_match(full) || base.is_some_and(|b| r.is_match(b)) {
                    Some(how)
                } else {
                    None
                }
            }
        }
    }

    /// The pattern as written (normalised for exact/domain forms).
    pub fn text(&self) -> String {
        match self {
            Pattern::Exact(e) => e.clone(),
            Pattern::Domain(d) => format!("@{d}"),
            Pattern::Subdomain(d) => format!("@.{d}"),
            Pattern::Glob(s, _) | Pattern::Regex(s, _) => s.clone(),
        }
    }

    /// The domain this pattern is confined to, when it is literal.
    pub fn literal_domain(&self) -> Option<&str> {
        match self {
            Pattern::Exact(e) => e.rsplit_once('@').map(|(_, d)| d),
            Pattern::Domain(d) => Some(d),
            _ => None,
        }
    }

    /// Does `self` match every address `other` matches? (Conservative: false when unsure.)
    pub fn covers(&self, other: &Pattern, opts: &MatchOptions) -> bool {
        match (self, other) {
            (Pattern::Exact(a), Pattern::Exact(b)) => a == b,
            (Pattern::Domain(a), Pattern::Domain(b)) => a == b,
            (Pattern::Subdomain(a), Pattern::Subdomain(b) | Pattern::Domain(b)) => {
                is_subdomain(b, a) || a == b && matches!(other, Pattern::Subdomain(_))
            }
            (Pattern::Glob(a, _), Pattern::Glob(b, _))
            | (Pattern::Regex(a, _), Pattern::Regex(b, _)) => a == b,
            (Pattern::Domain(a), Pattern::Glob(g, _)) => glob_domain(g).is_some_and(|d| d == *a),
            (Pattern::Subdomain(a), Pattern::Glob(g, _)) => {
                glob_domain(g).is_some_and(|d| is_subdomain(&d, a))
            }
            (p, Pattern::Exact(e)) => Address::parse(e).is_some_and(|addr| {
                let (full, base) = opts.keys(&addr);
                p.matches(&addr, &full, base.as_deref()).is_some()
            }),
            _ => false,
        }
    }
}

/// The reason of a (multi-line) regex or glob error: its last line, without its `error: `
/// prefix (the lines before it quote the pattern and point at the fault).
fn error_reason(s: &str) -> String {
    let l = s.lines().last().unwrap_or(s).trim();
    l.strip_prefix("error: ").unwrap_or(l).to_string()
}

/// The domain of a glob when it is literal (no wildcard after the `@`).
fn glob_domain(g: &str) -> Option<String> {
    let (_, d) = g.rsplit_once('@')?;
    (!d.contains(['*', '?'])).then(|| normalise_domain(d))
}

fn domain_part(d: &str, whole: &str) -> Result<String, String> {
    let d = normalise_domain(d);
    if d.is_empty() || d.contains('@') || d.starts_with('.') || d.ends_with('.') || d.contains("..")
    {
        return Err(format!("invalid pattern {whole:?}: bad domain"));
    }
    Ok(d)
}

fn is_subdomain(domain: &str, parent: &str) -> bool {
    domain.len() > parent.len() + 1
        && domain.ends_with(parent)
        && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
}

/// How a pattern matched (Postfix transport(5) search order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Address,
    AddressWithoutExtension,
    Domain,
    ParentDomain,
    Glob,
    Regex,
    Default,
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            How::Address => "exact address",
            How::AddressWithoutExtension => "address without +extension",
            How::Domain => "domain",
            How::ParentDomain => "parent domain",
            How::Glob => "glob",
            How::Regex => "regex",
            How::Default => "no rule matched; routing.default",
        })
    }
}

/// Where a pattern was written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `recipients[i]` of the rule.
    Inline(usize),
    /// A line of the rule's `recipients_file`.
    File(usize),
}

/// One rule, compiled.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub name: String,
    pub deliver: Vec<String>,
    pub active_from: Option<SystemTime>,
    pub active_until: Option<SystemTime>,
    pub patterns: Vec<(Pattern, Origin)>,
}

impl CompiledRule {
    /// Active at `now`: `active_from` inclusive, `active_until` exclusive.
    pub fn active_at(&self, now: SystemTime) -> bool {
        self.active_from.is_none_or(|f| f <= now) && self.active_until.is_none_or(|u| now < u)
    }

    pub fn has_window(&self) -> bool {
        self.active_from.is_some() || self.active_until.is_some()
    }
}

/// The result of routing one recipient.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// The matched rule's name, or `default`.
    pub rule: String,
    /// Index of the rule in file order (`None` for the default).
    pub rule_index: Option<usize>,
    /// Target names, in the rule's order.
    pub targets: Vec<String>,
    pub how: How,
    /// The pattern that matched, as written (normalised).
    pub pattern: Option<String>,
    pub origin: Option<Origin>,
}

/// Compiled routing table.
#[derive(Clone, Debug, Default)]
pub struct Router {
    opts: MatchOptions,
    rules: Vec<CompiledRule>,
    default: Option<Vec<String>>,
    /// Folded address → (rule, pattern) pairs, in rule order.
    exact: HashMap<String, Vec<(u32, u32)>>,
    /// Domain → (rule, pattern), in rule order.
    domains: HashMap<String, Vec<(u32, u32)>>,
    /// Parent domain → (rule, pattern), in rule order.
    parents: HashMap<String, Vec<(u32, u32)>>,
    /// Globs and regexes, in rule order.
    scanned: Vec<(u32, u32)>,
}

/// A pattern that failed to compile: rule index, origin, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub rule: usize,
    pub origin: Origin,
    pub message: String,
}

impl Router {
    /// Compile the routing section. Every bad pattern is reported; good ones are kept.
    pub fn new(routing: &Routing) -> (Self, Vec<PatternError>) {
        let opts = MatchOptions {
            ignore_local_case: routing.ignore_local_case,
            recipient_delimiter: routing.recipient_delimiter.clone(),
        };
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(routing.rules.len());
        for (ri, r) in routing.rules.iter().enumerate() {
            let raw = r
                .recipients
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_str(), Origin::Inline(i)))
                .chain(
                    r.file_patterns
                        .iter()
                        .map(|(l, p)| (p.as_str(), Origin::File(*l))),
                );
            let mut patterns = Vec::new();
            for (p, origin) in raw {
                match Pattern::parse(p, &opts) {
                    Ok(pat) => patterns.push((pat, origin)),
                    Err(message) => errors.push(PatternError {
                        rule: ri,
                        origin,
                        message,
                    }),
                }
            }
            rules.push(CompiledRule {
                name: r.name.clone(),
                deliver: r.deliver.clone(),
                active_from: r.active_from.map(|t| t.0),
                active_until: r.active_until.map(|t| t.0),
                patterns,
            });
        }
        (
            Self::from_rules(opts, rules, routing.default.clone()),
            errors,
        )
    }

    /// Build the index over already compiled rules.
    pub fn from_rules(
        opts: MatchOptions,
        rules: Vec<CompiledRule>,
        default: Option<Vec<String>>,
    ) -> Self {
        let mut r = Router {
            opts,
            default,
            ..Default::default()
        };
        for (ri, rule) in rules.iter().enumerate() {
            for (pi, (p, _)) in rule.patterns.iter().enumerate() {
                let id = (ri as u32, pi as u32);
                match p {
                    Pattern::Exact(e) => r.exact.entry(e.clone()).or_default().push(id),
                    Pattern::Domain(d) => r.domains.entry(d.clone()).or_default().push(id),
                    Pattern::Subdomain(d) => r.parents.entry(d.clone()).or_default().push(id),
                    Pattern::Glob(..) | Pattern::Regex(..) => r.scanned.push(id),
                }
            }
        }
        r.rules = rules;
        r
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    pub fn options(&self) -> &MatchOptions {
        &self.opts
    }

    /// Route `recipient` at `now`: the first active rule (file order) with a matching pattern,
    /// else `routing.default`, else `None`. Unparseable addresses have no route.
    pub fn route(&self, recipient: &str, now: SystemTime) -> Option<Route> {
        let a = Address::parse(recipient)?;
        self.route_address(&a, now)
    }

    /// As [`Router::route`], for an already parsed address.
    pub fn route_address(&self, a: &Address, now: SystemTime) -> Option<Route> {
        let (full, base) = self.opts.keys(a);
        // Best (lowest) active rule found so far among the indexed candidates.
        let mut best: Option<(u32, u32, How)> = None;
        let consider =
            |ids: Option<&Vec<(u32, u32)>>, how: How, best: &mut Option<(u32, u32, How)>| {
                for &(ri, pi) in ids.into_iter().flatten() {
                    if best.is_some_and(|(b, _, _)| b <= ri) {
                        break;
                    }
                    if self.rules[ri as usize].active_at(now) {
                        *best = Some((ri, pi, how));
                        break;
                    }
                }
            };
        // Postfix transport(5) order: full address, address without +ext, domain, parents.
        consider(self.exact.get(&full), How::Address, &mut best);
        if let Some(b) = &base {
            consider(self.exact.get(b), How::AddressWithoutExtension, &mut best);
        }
        consider(self.domains.get(&a.domain), How::Domain, &mut best);
        let mut d = a.domain.as_str();
        while let Some((_, parent)) = d.split_once('.') {
            consider(self.parents.get(parent), How::ParentDomain, &mut best);
            d = parent;
        }
        for &(ri, pi) in &self.scanned {
            if best.is_some_and(|(b, _, _)| b <= ri) {
                break;
            }
            let rule = &self.rules[ri as usize];
            if !rule.active_at(now) {
                continue;
            }
            if let Some(how) = rule.patterns[pi as usize]
                .0
                .matches(a, &full, base.as_deref())
            {
                best = Some((ri, pi, how));
                break;
            }
        }
        match best {
            Some((ri, pi, how)) => {
                let rule = &self.rules[ri as usize];
                let (p, origin) = &rule.patterns[pi as usize];
                Some(Route {
                    rule: rule.name.clone(),
                    rule_index: Some(ri as usize),
                    targets: rule.deliver.clone(),
                    how,
                    pattern: Some(p.text()),
                    origin: Some(origin.clone()),
                })
            }
            None => self.default.as_ref().map(|t| Route {
                rule: "default".into(),
                rule_index: None,
                targets: t.clone(),
                how: How::Default,
                pattern: None,
                origin: None,
            }),
        }
    }

    /// Reference implementation: a linear scan over rules and patterns in file order. Used by
    /// tests to check the index; slow on big tables.
    pub fn route_linear(&self, recipient: &str, now: SystemTime) -> Option<(String, Vec<String>)> {
        let a = Address::parse(recipient)?;
        let (full, base) = self.opts.keys(&a);
        for rule in &self.rules {
            if !rule.active_at(now) {
                continue;
            }
            if rule
                .patterns
                .iter()
                .any(|(p, _)| p.matches(&a, &full, base.as_deref()).is_some())
            {
                return Some((rule.name.clone(), rule.deliver.clone()));
            }
        }
        self.default
            .as_ref()
            .map(|t| ("default".to_string(), t.clone()))
    }
}

/// The address a target receives for `a`: the domain replaced by `rcpt_domain` when set.
pub fn rewrite_rcpt(a: &Address, rcpt_domain: Option<&str>) -> String {
    match rcpt_domain {
        Some(d) => a.at_domain(d).to_string(),
        None => a.to_string(),
    }
}

/// The address a target receives for `a`: [`rewrite_rcpt`] to the target's `rcpt_domain`, but
/// only for a recipient whose domain is one of `accept_domains` (the organisation's own users;
/// mail relayed for trusted clients to other domains keeps its address) and never for a DSN
/// cutover generated itself (`is_dsn`: it goes to the original sender, wherever that is).
pub fn final_rcpt(
    a: &Address,
    rcpt_domain: Option<&str>,
    accept_domains: &[String],
    is_dsn: bool,
) -> String {
    if a.in_domains(accept_domains) && !is_dsn {
        rewrite_rcpt(a, rcpt_domain)
    } else {
        rewrite_rcpt(a, None)
    }
}

/// [`final_rcpt`] for a recipient as stored with a queued message (intake wrote it from an
/// [`Address`], so it parses); anything else is passed on as it is.
pub fn final_rcpt_stored(
    recipient: &str,
    rcpt_domain: Option<&str>,
    accept_domains: &[String],
    is_dsn: bool,
) -> String {
    match Address::parse(recipient) {
        Some(a) => final_rcpt(&a, rcpt_domain, accept_domains, is_dsn),
        None => recipient.trim().to_string(),
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
