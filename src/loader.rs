//! Turning a configuration file into a checked [`Loaded`] configuration: config's own parsing and
//! validation plus the routing checks (patterns compile; shadowed rules), and the compiled
//! [`Router`] those checks built: compiled exactly once per loaded configuration and shared (an
//! `Arc`) by every consumer (intake, admin reroute, the CLI's route explain and queue reroute), so
//! none compiles its own or can skip the checks. It sits above both `config` (a leaf) and
//! `routing` (which reads config's model), keeping the two free of a cycle. Reads only the files
//! config reads.

use crate::config::{self, Config, ConfigError, Diagnostic};
use crate::routing::Router;
use std::path::Path;
use std::sync::Arc;

/// A checked configuration, its warnings, and its compiled routing table.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub router: Arc<Router>,
}

/// Read and check the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let mut router = None;
    let loaded = config::load_with(path, &mut |c, ctx, cx| {
        router = crate::routing::check(c, ctx, cx);
        crate::auth::check(c, ctx.base_dir, cx);
    })?;
    Ok(with_router(loaded, router))
}

/// Parse and check configuration text; `path` names it in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let mut router = None;
    let loaded = config::parse_with(text, path, &mut |c, ctx, cx| {
        router = crate::routing::check(c, ctx, cx);
        crate::auth::check(c, ctx.base_dir, cx);
    })?;
    Ok(with_router(loaded, router))
}

/// The check compiles the router whenever `[routing]` was read without errors, which a
/// configuration that loaded always was; the empty table (routes nothing) is never used.
fn with_router(loaded: config::Loaded, router: Option<Router>) -> Loaded {
    Loaded {
        config: loaded.config,
        warnings: loaded.warnings,
        router: Arc::new(router.unwrap_or_default()),
    }
}
