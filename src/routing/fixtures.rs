//! Test-only builders of routing configuration (rules, a `[routing]` table, a checked
//! [`Router`]) shared by the unit tests of `routing` and of the modules that read it (`waves`).
//! Compiled only under `cfg(test)`; it never does IO and holds no test of its own.

use super::Router;
use crate::config::{Routing, Rule};

/// A rule `name` for the patterns `pats`, delivering to `deliver`; always active, no file.
pub(crate) fn rule(name: &str, pats: &[&str], deliver: &[&str]) -> Rule {
    Rule {
        name: name.into(),
        recipients: pats.iter().map(|s| s.to_string()).collect(),
        recipients_file: None,
        deliver: deliver.iter().map(|s| s.to_string()).collect(),
        active_from: None,
        active_until: None,
        file_patterns: vec![],
        verify_recipients: None,
        recipients_known: None,
        known: None,
    }
}

/// `[routing]` with `rules` in file order, `default` targets, case-insensitive local parts and
/// `+` as the recipient delimiter.
pub(crate) fn routing(rules: Vec<Rule>, default: Option<&[&str]>) -> Routing {
    Routing {
        default: default.map(|d| d.iter().map(|s| s.to_string()).collect()),
        ignore_local_case: true,
        recipient_delimiter: "+".into(),
        rules,
    }
}

/// The router of [`routing`]`(rules, default)`; panics if any pattern is rejected.
pub(crate) fn router(rules: Vec<Rule>, default: Option<&[&str]>) -> Router {
    let (r, errors) = Router::new(&routing(rules, default));
    assert!(errors.is_empty(), "{errors:?}");
    r
}
