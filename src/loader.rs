//! Turning a configuration file into a checked [`Loaded`] configuration: config's own parsing and
//! validation plus the routing checks (patterns compile; shadowed rules). The one entry point
//! every command uses, so no caller can skip the routing checks; it sits above both `config`
//! (a leaf) and `routing` (which reads config's model), keeping the two free of a cycle.

use crate::config::{self, ConfigError, Loaded};
use std::path::Path;

/// Read and check the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    config::load_with(path, crate::routing::check)
}

/// Parse and check configuration text; `path` names it in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    config::parse_with(text, path, crate::routing::check)
}
