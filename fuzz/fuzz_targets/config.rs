//! The configuration loader (`loader::parse`: TOML syntax, every section's keys and values,
//! validation and warnings) on arbitrary text, then what the gateway builds from a configuration
//! it accepted: the router and the intake policy.
//!
//! Checks: no panic; every diagnostic points at a line of the text; an accepted configuration
//! compiles into a router without pattern errors (validation caught them all) and its policy's
//! limits are sane; parsing is deterministic.
#![no_main]

use cutover::inbound::Policy;
use cutover::routing::Router;
use cutover::{config, loader};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory that does not exist: files the text names (recipients_file, tls, mailboxes)
    // resolve under it and are missing, never read from elsewhere on this machine.
    let path = Path::new("/nonexistent-cutover-fuzz/cutover.toml");
    let lines = text.matches('\n').count() + 1;
    match loader::parse(text, path) {
        Ok(loaded) => {
            for d in &loaded.warnings {
                if let Some(l) = d.line {
                    if d.file.ends_with("cutover.toml") {
                        assert!(
                            l >= 1 && l <= lines,
                            "warning line {l} outside the text ({lines} lines)"
                        );
                    }
                }
            }
            let cfg = &loaded.config;
            let (_router, errors) = Router::new(&cfg.routing);
            assert!(
                errors.is_empty(),
                "accepted config with bad patterns: {errors:?}"
            );
            let p = Policy::from_gateway(&cfg.gateway);
            assert!(p.max_recipients >= 1 && p.max_connections >= 1);
            assert!(p.data_idle_timeout <= p.data_timeout);
            let again = loader::parse(text, path).expect("second parse");
            assert_eq!(
                again.warnings.len(),
                loaded.warnings.len(),
                "nondeterministic warnings"
            );
        }
        Err(e) => {
            let diags = e.diagnostics();
            assert!(!diags.is_empty() || matches!(e, config::ConfigError::Read { .. }));
            for d in diags {
                if let Some(l) = d.line {
                    if d.file.ends_with("cutover.toml") {
                        assert!(
                            l >= 1 && l <= lines,
                            "error line {l} outside the text ({lines} lines)"
                        );
                    }
                }
            }
            let _ = e.to_string();
        }
    }
});
