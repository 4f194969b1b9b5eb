//! The configuration checks that need the compiled router: every pattern compiles (errors at the
//! rule's key, or at the list file's line), and the warnings about rules that can never match and
//! patterns for domains outside `accept_domains`. Run by `crate::loader` after config's own
//! validation, reporting through the same diagnostics. Reads nothing.

use super::{Origin, Pattern, Router};
use crate::config::{CheckContext, Config, KeyPath, Reader, resolve_path};

/// Compile `c.routing` and report what is wrong with it (run by `crate::loader` as config's
/// extra check); the compiled table, unless `[routing]` could not be read.
pub fn check(c: &Config, ctx: &CheckContext<'_>, cx: &mut Reader<'_>) -> Option<Router> {
    if !ctx.routing_ok {
        return None;
    }
    let (router, errors) = Router::new(&c.routing);
    for e in errors {
        let rp = KeyPath::root().key("routing").key("rule").index(e.rule);
        match e.origin {
            Origin::Inline(j) => cx.error(&rp.key("recipients").index(j), e.message),
            Origin::File(line) => {
                let file = c.routing.rules[e.rule]
                    .recipients_file
                    .clone()
                    .unwrap_or_default();
                cx.error_in(
                    &resolve_path(ctx.base_dir, &file),
                    line,
                    &rp.key("recipients_file"),
                    e.message,
                );
            }
        }
    }
    if ctx.gateway_ok {
        warnings(c, &router, cx);
    }
    Some(router)
}

fn warnings(c: &Config, router: &Router, cx: &mut Reader<'_>) {
    let opts = router.options();
    let accepted = &c.gateway.accept_domains;
    for (i, rule) in router.rules().iter().enumerate() {
        let rp = KeyPath::root().key("routing").key("rule").index(i);
        // Shadowed: every pattern covered by an earlier rule that is always active.
        if !rule.patterns.is_empty() {
            let shadow = router.rules()[..i].iter().find(|earlier| {
                !earlier.has_window()
                    && rule
                        .patterns
                        .iter()
                        .all(|(p, _)| earlier.patterns.iter().any(|(e, _)| e.covers(p, opts)))
            });
            if let Some(e) = shadow {
                cx.warn(
                    &rp.key("name"),
                    format!(
                        "rule {:?} can never match: rule {:?} (no time window) comes first and covers all its recipients",
                        rule.name, e.name
                    ),
                );
            }
        }
        for (p, origin) in &rule.patterns {
            if let Some(d) = p.literal_domain()
                && !accepted.iter().any(|a| a == d)
            {
                let key = match origin {
                    Origin::Inline(j) => rp.key("recipients").index(*j),
                    Origin::File(_) => rp.key("recipients_file"),
                };
                let at = match origin {
                    Origin::File(l) => format!(" (list file line {l})"),
                    Origin::Inline(_) => String::new(),
                };
                cx.warn(
                    &key,
                    format!(
                        "{}{at}: domain {d:?} is not in gateway.accept_domains; only trusted_networks can send to it",
                        p.text()
                    ),
                );
            }
            if let Pattern::Subdomain(d) = p
                && !accepted.iter().any(|a| a.ends_with(&format!(".{d}")))
            {
                cx.warn(
                    &rp.key("recipients"),
                    format!("@.{d}: no subdomain of {d:?} is in gateway.accept_domains"),
                );
            }
        }
    }
}
