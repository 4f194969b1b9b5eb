//! `[[alert]]` rules and `[alerting]` (DESIGN.md §4, issue 12 item 5): their serde shapes and
//! defaults, and [`check`], the cross-checks of each rule (called from `validate.rs`): the
//! parameters its condition needs and no others, names that must exist, a webhook that is an
//! http(s) URL, an address that parses. Never evaluates or sends an alert (`crate::alerts` does).

use super::values::HumanDuration;
use super::{Config, KeyPath, Reader};
use serde::Deserialize;
use std::time::Duration;

/// `when = "..."`: what an alert watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCondition {
    /// The delivery engine cannot connect to `target` (connection failures in a row, since the
    /// first of them).
    TargetUnreachable,
    /// A deferred leg (of `target`, or of any target) is older than `older_than`.
    OldestDeferred,
    /// More than `rate` non-delivery DSNs were generated within `per`.
    DsnRate,
    /// The last finished pass of backfill `job` had failures.
    BackfillFailed,
    /// Routing rule (wave) `wave` switches within `within` and its mailboxes have not converged.
    WaveNotConverged,
}

impl AlertCondition {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertCondition::TargetUnreachable => "target_unreachable",
            AlertCondition::OldestDeferred => "oldest_deferred",
            AlertCondition::DsnRate => "dsn_rate",
            AlertCondition::BackfillFailed => "backfill_failed",
            AlertCondition::WaveNotConverged => "wave_not_converged",
        }
    }

    /// Does the condition take parameter `key`?
    fn accepts(self, key: &str) -> bool {
        let (required, optional) = self.parameters();
        required.contains(&key) || optional.contains(&key)
    }

    /// The parameters the condition needs, then those it also accepts.
    fn parameters(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            AlertCondition::TargetUnreachable => (&["target"], &[]),
            AlertCondition::OldestDeferred => (&["older_than"], &["target"]),
            AlertCondition::DsnRate => (&["rate"], &["per"]),
            AlertCondition::BackfillFailed => (&["job"], &[]),
            AlertCondition::WaveNotConverged => (&["wave", "within"], &[]),
        }
    }
}

/// The window of `dsn_rate` when `per` is not given.
pub const DEFAULT_DSN_PER: Duration = Duration::from_secs(600);

/// One `[[alert]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    pub when: AlertCondition,
    /// `target_unreachable` (required) and `oldest_deferred` (optional: any target).
    pub target: Option<String>,
    /// How long the condition must hold before the alert fires (`for`; default 0).
    #[serde(rename = "for", default)]
    pub hold: HumanDuration,
    /// `oldest_deferred`: the age a deferred leg must exceed.
    pub older_than: Option<HumanDuration>,
    /// `dsn_rate`: fire when more than this many non-delivery DSNs were generated ...
    pub rate: Option<u64>,
    /// ... within this window (default 10m).
    pub per: Option<HumanDuration>,
    /// `backfill_failed`: the `[[backfill.job]]` name.
    pub job: Option<String>,
    /// `wave_not_converged`: the `[[routing.rule]]` whose switch is watched ...
    pub wave: Option<String>,
    /// ... from this long before it.
    pub within: Option<HumanDuration>,
    /// POST a JSON notice here (`{"text": ..}`, Slack-compatible).
    pub webhook: Option<String>,
    /// Mail a notice to this address through cutover's own queue.
    pub email: Option<String>,
    /// Its position among the `[[alert]]` tables of the file (set by the reader; messages
    /// name `alert[N]` by it even when an earlier table failed to read).
    #[serde(skip)]
    pub index: usize,
}

impl AlertRule {
    /// The `dsn_rate` window.
    pub fn dsn_per(&self) -> Duration {
        self.per.map(|d| d.0).unwrap_or(DEFAULT_DSN_PER)
    }

    /// Which of the condition parameters are set.
    fn set_parameters(&self) -> [(&'static str, bool); 7] {
        [
            ("target", self.target.is_some()),
            ("older_than", self.older_than.is_some()),
            ("rate", self.rate.is_some()),
            ("per", self.per.is_some()),
            ("job", self.job.is_some()),
            ("wave", self.wave.is_some()),
            ("within", self.within.is_some()),
        ]
    }
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `[alerting]`: how the alert rules are run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerting {
    /// How often the rules are evaluated (default 10s).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            interval: default_interval(),
        }
    }
}

/// Check every alert rule and `[alerting]`; `targets`: the names of the defined targets
/// (including those whose section failed to read).
pub(super) fn check(c: &Config, targets: &[String], cx: &mut Reader<'_>) {
    if c.alerting.interval.0.is_zero() {
        cx.error(
            &KeyPath::root().key("alerting").key("interval"),
            "must be greater than zero".into(),
        );
    }
    let mut names = std::collections::HashSet::new();
    for rule in &c.alert {
        let ap = KeyPath::root().key("alert").index(rule.index);
        if rule.name.trim().is_empty() {
            cx.error(&ap.key("name"), "must not be empty".into());
        } else if !names.insert(rule.name.as_str()) {
            cx.error(
                &ap.key("name"),
                format!("duplicate alert name {:?}", rule.name),
            );
        }
        parameters(rule, &ap, cx);
        references(c, rule, targets, &ap, cx);
        destinations(rule, &ap, cx);
    }
}

/// The condition's parameters: each required one present, no foreign one, durations non-zero.
fn parameters(rule: &AlertRule, ap: &KeyPath, cx: &mut Reader<'_>) {
    let when = rule.when.as_str();
    let (required, _) = rule.when.parameters();
    for (key, set) in rule.set_parameters() {
        if set && !rule.when.accepts(key) {
            cx.error(&ap.key(key), format!("not a parameter of when = {when:?}"));
        }
        if !set && required.contains(&key) {
            cx.error(
                &ap.key("when"),
                format!("{when:?} needs {key} = {}", example(key)),
            );
        }
    }
    for (key, d) in [
        ("older_than", rule.older_than),
        ("per", rule.per),
        ("within", rule.within),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            cx.error(&ap.key(key), "must be greater than zero".into());
        }
    }
}

/// An example value for a parameter, for messages.
fn example(key: &str) -> &'static str {
    match key {
        "target" => "\"TARGET\" (a [targets.NAME])",
        "older_than" => "\"1h\"",
        "rate" => "N (more than N DSNs within per, default 10m)",
        "job" => "\"JOB\" (a [[backfill.job]] name)",
        "wave" => "\"RULE\" (a [[routing.rule]] name with active_from/active_until)",
        "within" => "\"24h\"",
        _ => "...",
    }
}

/// `target`, `job` and `wave` name things the configuration defines (when the condition takes
/// them: a foreign one is reported once, by `parameters`).
fn references(c: &Config, rule: &AlertRule, targets: &[String], ap: &KeyPath, cx: &mut Reader<'_>) {
    let when = rule.when;
    if let Some(t) = &rule.target
        && when.accepts("target")
        && !targets.contains(t)
    {
        let known = if targets.is_empty() {
            "none defined".to_string()
        } else {
            targets.join(", ")
        };
        cx.error(
            &ap.key("target"),
            format!("unknown target {t:?} (known: {known})"),
        );
    }
    if let Some(j) = &rule.job
        && when.accepts("job")
        && !c.backfill.jobs.iter().any(|b| &b.name == j)
    {
        let known: Vec<&str> = c.backfill.jobs.iter().map(|b| b.name.as_str()).collect();
        cx.error(
            &ap.key("job"),
            format!("unknown backfill job {j:?} (known: {})", list(&known)),
        );
    }
    if let Some(w) = rule.wave.as_ref().filter(|_| when.accepts("wave")) {
        match c.routing.rules.iter().find(|r| &r.name == w) {
            None => {
                let known: Vec<&str> = c.routing.rules.iter().map(|r| r.name.as_str()).collect();
                cx.error(
                    &ap.key("wave"),
                    format!("unknown routing rule {w:?} (known: {})", list(&known)),
                );
            }
            Some(r) if r.active_from.is_none() && r.active_until.is_none() => cx.warn(
                &ap.key("wave"),
                format!("routing rule {w:?} has no active_from/active_until: it never switches, so this alert never fires"),
            ),
            Some(_) => {}
        }
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none defined".into()
    } else {
        names.join(", ")
    }
}

/// Where notices go: a webhook that is an http(s) URL and/or an address; at least one.
fn destinations(rule: &AlertRule, ap: &KeyPath, cx: &mut Reader<'_>) {
    if rule.webhook.is_none() && rule.email.is_none() {
        cx.error(
            ap,
            "has nowhere to send notices: set webhook = \"https://...\" and/or email = \"ADDRESS\""
                .into(),
        );
    }
    if let Some(w) = &rule.webhook
        && let Err(why) = webhook_url(w)
    {
        cx.error(&ap.key("webhook"), why);
    }
    if let Some(e) = &rule.email
        && crate::address::Address::parse(e).is_none()
    {
        cx.error(
            &ap.key("email"),
            format!("invalid address {e:?}: write local@domain"),
        );
    }
}

/// A webhook URL: absolute `http://` or `https://` with a host.
pub fn webhook_url(s: &str) -> Result<crate::http_client::Url, String> {
    let url = crate::http_client::Url::parse(s.trim()).map_err(|e| {
        format!("invalid URL {s:?} ({e}); write e.g. \"https://hooks.example.com/T000/B000\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "must be an http:// or https:// URL with a host (got {s:?})"
        ));
    }
    Ok(url)
}
