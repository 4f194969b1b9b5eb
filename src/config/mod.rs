//! Configuration: reads the TOML file (and the list files it names) into a typed, validated
//! [`Config`]. Every problem is reported as a [`Diagnostic`] naming file, line and key, and all of
//! them are collected before giving up. Never does IO other than reading those files.

mod admin;
mod alert;
mod auth;
mod backfill;
mod diag;
mod ledger;
mod model;
pub mod profile;
mod validate;
pub mod values;

pub use alert::{AlertCondition, DEFAULT_DSN_PER, webhook_url};
pub use auth::{ArcSealing, Auth, DmarcAction};
pub use backfill::*;
pub use diag::{Diagnostic, KeyPath, Seg, Severity};
pub use ledger::{LedgerSection, LedgerUrl};
pub use model::*;

use diag::SpanIndex;
use serde::de::{DeserializeOwned, IntoDeserializer};
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The error diagnostics (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// A loaded configuration with its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

const SECTIONS: &[&str] = &[
    "gateway", "targets", "routing", "queue", "admin", "dns", "bounce", "backfill", "alert",
    "alerting", "auth", "ledger",
];

/// What a check above this module (the routing checks: `crate::loader`) is told about the
/// configuration it checks, besides the configuration itself.
pub struct CheckContext<'p> {
    /// The config file's directory (relative paths are relative to it).
    pub base_dir: &'p Path,
    /// `[routing]` was read without errors (its rules are worth compiling).
    pub routing_ok: bool,
    /// `[gateway]` was read without errors.
    pub gateway_ok: bool,
}

/// A check run after this module's own validation, reporting through the same diagnostics (a
/// closure: the loader keeps what its check compiled).
pub type Check<'a> = &'a mut dyn FnMut(&Config, &CheckContext<'_>, &mut Reader<'_>);

/// Read the configuration at `path`, validate it, and run `extra` over it.
pub fn load_with(path: &Path, extra: Check<'_>) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_with(&text, path, extra)
}

/// Parse and validate configuration text, and run `extra` over it; `path` names it in messages
/// and anchors relative paths.
pub fn parse_with(text: &str, path: &Path, extra: Check<'_>) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => return Err(syntax_error(text, file, &e)),
    };
    let root = doc.get_ref();
    let mut cx = Reader {
        file: file.clone(),
        index: SpanIndex::new(text, root),
        diags: Vec::new(),
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

    for (k, _) in root.iter() {
        let k = k.get_ref().as_ref();
        if !SECTIONS.contains(&k) {
            cx.error(
                &KeyPath::root().key(k),
                format!("unknown section (known: {})", SECTIONS.join(", ")),
            );
        }
    }
    let top = |name: &str| {
        root.iter()
            .find(|(k, _)| k.get_ref().as_ref() == name)
            .map(|(_, v)| v)
    };

    // A section that fails to read is replaced by its defaults and marked, so that the rest of the
    // file is still checked and every error is reported at once.
    let mut failed: Vec<&'static str> = Vec::new();
    let gateway: Gateway = cx.section_or_default("gateway", top("gateway"), &mut failed);
    // Targets that failed to read still count as defined (no cascade of "unknown target").
    let (targets, broken_targets) = read_targets(&mut cx, top("targets"));

    let (routing, routing_ok) = read_routing(&mut cx, top("routing"));

    let queue: Queue = cx.section_or_default("queue", top("queue"), &mut failed);
    let admin: Admin = cx.section_or_default("admin", top("admin"), &mut failed);
    let dns: Dns = cx.section_or_default("dns", top("dns"), &mut failed);
    let bounce: Bounce = cx.section_or_default("bounce", top("bounce"), &mut failed);

    let backfill = read_backfill(&mut cx, top("backfill"));
    let alert = read_alerts(&mut cx, top("alert"));
    let alerting: Alerting = cx.section_or_default("alerting", top("alerting"), &mut failed);
    let auth: Auth = cx.section_or_default("auth", top("auth"), &mut failed);
    if !failed.contains(&"auth") {
        auth::check(&auth, &mut cx);
    }
    let mut ledger: LedgerSection = cx.section_or_default("ledger", top("ledger"), &mut failed);
    if !failed.contains(&"ledger") {
        ledger::check(&mut ledger, &base_dir, &mut cx);
    }

    let mut config = Config {
        path: path.to_path_buf(),
        gateway,
        targets,
        routing,
        queue,
        admin,
        dns,
        bounce,
        backfill,
        alert,
        alerting,
        auth,
        ledger,
    };
    validate::complete_and_check(&mut config, &base_dir, &failed, &broken_targets, &mut cx);
    extra(
        &config,
        &CheckContext {
            base_dir: &base_dir,
            routing_ok,
            gateway_ok: !failed.contains(&"gateway"),
        },
        &mut cx,
    );
    // Report in reading order: the config file by line, then list files by line.
    cx.diags
        .sort_by(|a, b| (a.file != file, &a.file, a.line).cmp(&(b.file != file, &b.file, b.line)));
    let (errors, warnings): (Vec<_>, Vec<_>) = cx
        .diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if errors.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// The diagnostic for text that is not TOML.
fn syntax_error(text: &str, file: String, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| {
        text.as_bytes()[..s.start.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    ConfigError::Invalid(vec![Diagnostic {
        severity: Severity::Error,
        file,
        line,
        key: String::new(),
        message: format!("TOML syntax error: {}", e.message().trim()),
    }])
}

/// `[targets.NAME]` sections; the names of those that failed to read come second.
fn read_targets(
    cx: &mut Reader<'_>,
    v: Option<&Spanned<DeValue<'_>>>,
) -> (std::collections::BTreeMap<String, Target>, Vec<String>) {
    let p = KeyPath::root();
    let mut targets = std::collections::BTreeMap::new();
    // Targets that failed to read still count as defined (no cascade of "unknown target").
    let mut broken_targets = Vec::new();
    if let Some(v) = v {
        match v.get_ref() {
            DeValue::Table(t) => {
                for (name, tv) in t.iter() {
                    let name = name.get_ref().to_string();
                    match cx.section::<Target>(&p.key("targets").key(&name), tv) {
                        Some(target) => {
                            targets.insert(name, target);
                        }
                        None => broken_targets.push(name),
                    }
                }
            }
            _ => cx.error(
                &p.key("targets"),
                "must be a table of [targets.NAME] sections".into(),
            ),
        }
    }

    (targets, broken_targets)
}

/// `[routing]` and its `[[routing.rule]]`s; `false` second when any part failed to read.
fn read_routing(cx: &mut Reader<'_>, v: Option<&Spanned<DeValue<'_>>>) -> (Routing, bool) {
    let p = KeyPath::root();
    let mut routing = Routing::default();
    let mut routing_ok = true;
    if let Some(v) = v {
        let rp = p.key("routing");
        match cx.section::<RoutingWithRules>(&rp, v) {
            Some(head) => {
                routing.default = head.default;
                routing.ignore_local_case = head.ignore_local_case;
                routing.recipient_delimiter = head.recipient_delimiter;
            }
            None => routing_ok = false,
        }
        if let DeValue::Table(t) = v.get_ref()
            && let Some((_, rules)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == "rule")
        {
            match rules.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match cx.section::<Rule>(&rp.key("rule").index(i), item) {
                            Some(r) => routing.rules.push(r),
                            None => routing_ok = false,
                        }
                    }
                }
                _ => cx.error(
                    &rp.key("rule"),
                    "must be an array: write [[routing.rule]]".into(),
                ),
            }
        }
    } else {
        routing.ignore_local_case = true;
        routing.recipient_delimiter = "+".into();
    }

    (routing, routing_ok)
}

/// `[backfill]` and its `[[backfill.job]]`s (jobs that fail to read are reported and left out).
fn read_backfill(cx: &mut Reader<'_>, v: Option<&Spanned<DeValue<'_>>>) -> BackfillSection {
    let p = KeyPath::root();
    let mut backfill = BackfillSection::default();
    if let Some(v) = v {
        let bp = p.key("backfill");
        cx.section::<BackfillWithJobs>(&bp, v);
        if let DeValue::Table(t) = v.get_ref()
            && let Some((_, jobs)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == "job")
        {
            match jobs.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(j) = cx.section::<BackfillJob>(&bp.key("job").index(i), item) {
                            backfill.jobs.push(j);
                        }
                    }
                }
                _ => cx.error(
                    &bp.key("job"),
                    "must be an array: write [[backfill.job]]".into(),
                ),
            }
        }
    }

    backfill
}

/// `[[alert]]` rules (rules that fail to read are reported and left out).
fn read_alerts(cx: &mut Reader<'_>, v: Option<&Spanned<DeValue<'_>>>) -> Vec<AlertRule> {
    let ap = KeyPath::root().key("alert");
    let Some(v) = v else {
        return Vec::new();
    };
    let DeValue::Array(items) = v.get_ref() else {
        cx.error(&ap, "must be an array: write [[alert]]".into());
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let rule = cx.section::<AlertRule>(&ap.index(i), item)?;
            Some(AlertRule { index: i, ..rule })
        })
        .collect()
}

/// `[routing]` with its rules skipped (they are read one by one).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingWithRules {
    default: Option<Vec<String>>,
    #[serde(default = "yes")]
    ignore_local_case: bool,
    #[serde(default = "plus")]
    recipient_delimiter: String,
    #[allow(dead_code)]
    rule: Option<serde::de::IgnoredAny>,
}

fn yes() -> bool {
    true
}
fn plus() -> String {
    "+".into()
}

/// `[backfill]` with its jobs skipped (they are read one by one).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillWithJobs {
    #[allow(dead_code)]
    job: Option<serde::de::IgnoredAny>,
}

/// Collects diagnostics while reading one document.
pub struct Reader<'a> {
    file: String,
    index: SpanIndex<'a>,
    diags: Vec<Diagnostic>,
}

impl Reader<'_> {
    /// An error at `path` in the config file.
    pub fn error(&mut self, path: &KeyPath, message: String) {
        let line = self.index.line_of_path(path);
        self.push(Severity::Error, self.file.clone(), line, path, message);
    }

    /// A warning at `path` in the config file.
    pub fn warn(&mut self, path: &KeyPath, message: String) {
        let line = self.index.line_of_path(path);
        self.push(Severity::Warning, self.file.clone(), line, path, message);
    }

    /// An error about a line of another file (a list file) that `path` names.
    pub fn error_in(&mut self, file: &Path, line: usize, path: &KeyPath, message: String) {
        self.push(
            Severity::Error,
            file.display().to_string(),
            Some(line),
            path,
            message,
        );
    }

    fn push(
        &mut self,
        severity: Severity,
        file: String,
        line: Option<usize>,
        path: &KeyPath,
        message: String,
    ) {
        self.diags.push(Diagnostic {
            severity,
            file,
            line,
            key: path.to_string(),
            message,
        });
    }

    /// Deserialize a top-level section (defaults when absent); on error record it, mark the
    /// section failed and return the defaults.
    fn section_or_default<T: DeserializeOwned>(
        &mut self,
        name: &'static str,
        v: Option<&Spanned<DeValue<'_>>>,
        failed: &mut Vec<&'static str>,
    ) -> T {
        let defaults = || toml::from_str::<T>("");
        let got = match v {
            Some(v) => self.section(&KeyPath::root().key(name), v),
            None => defaults().ok(),
        };
        match got {
            Some(t) => t,
            None => {
                failed.push(name);
                match defaults() {
                    Ok(t) => t,
                    Err(_) => unreachable_defaults(name),
                }
            }
        }
    }

    /// Deserialize one section, recording its first error.
    fn section<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let de = v.clone().into_deserializer();
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut key = path.join_serde(e.path());
                let inner = e.inner();
                let mut message = inner.message().trim().to_string();
                if let Some(field) = message
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split_once('`'))
                    .map(|(f, _)| f.to_string())
                {
                    if key.0.last() != Some(&Seg::Key(field.clone())) {
                        key = key.key(&field);
                    }
                    message = match message.split_once(", expected ") {
                        Some((_, exp)) => {
                            format!("unknown key (expected {})", exp.replace('`', ""))
                        }
                        None => "unknown key".into(),
                    };
                }
                let line = self
                    .index
                    .line_of_path(&key)
                    .or_else(|| inner.span().map(|s| self.index.line_of(s.start)));
                self.push(Severity::Error, self.file.clone(), line, &key, message);
                None
            }
        }
    }
}

/// Every top-level section deserializes from an empty table (all keys have defaults).
fn unreachable_defaults(name: &str) -> ! {
    panic!("section [{name}] has a key without a default")
}

/// Resolve a path from the config relative to the config file's directory.
pub fn resolve_path(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}
