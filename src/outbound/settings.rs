//! Connection settings for every configured target (TLS connector with its `tls_ca`, AUTH
//! password read from its `password_file`, timeouts) and for MX delivery, resolved once per
//! loaded configuration and shared by every delivery attempt until the next reload. Problems
//! (a missing password file, a bad CA file) are logged here, at load; attempts to that target
//! then defer with the same reason. Reads those files only when built; never connects, resolves
//! or decides anything about delivery.

use super::client::ConnectSpec;
use super::dial::Dial;
use super::reply::Outcome;
use crate::config::Config;
use std::collections::HashMap;
use std::path::Path;

/// Per-target connection settings of one configuration.
pub struct TargetSettings {
    targets: HashMap<String, Result<ConnectSpec, Outcome>>,
    mx: Result<ConnectSpec, Outcome>,
}

impl TargetSettings {
    /// Resolve the settings of every target of `cfg` (paths relative to the config file's
    /// directory), logging each target whose settings cannot be built.
    pub fn load(cfg: &Config) -> TargetSettings {
        let base = cfg.path.parent().unwrap_or(Path::new("."));
        let helo = &cfg.gateway.hostname;
        let targets = cfg
            .targets
            .iter()
            .map(|(name, t)| {
                let spec = Dial::target_spec(t, base, helo);
                if let Err(o) = &spec {
                    tracing::error!(target = %name, error = %o.reply(), "target connection settings: deliveries to it will be deferred until this is fixed and the configuration reloaded");
                }
                (name.clone(), spec)
            })
            .collect();
        let mx = Dial::domain_spec(helo);
        if let Err(o) = &mx {
            tracing::error!(error = %o.reply(), "MX delivery TLS settings: deliveries by MX will be deferred");
        }
        TargetSettings { targets, mx }
    }

    /// The settings of target `name` (`None` if the configuration has no such target).
    pub fn target(&self, name: &str) -> Option<&Result<ConnectSpec, Outcome>> {
        self.targets.get(name)
    }

    /// The settings for delivery to a domain's MX hosts.
    pub fn mx(&self) -> &Result<ConnectSpec, Outcome> {
        &self.mx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_once_and_a_missing_password_file_reported_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("relay.pass");
        std::fs::write(&pass, "secret\r\n").unwrap();
        let text = r#"[gateway]
hostname = "mx1.example.com"
accept_domains = ["example.com"]

[targets.relay]
address = "127.0.0.1:2528"
tls = "required"
auth = { username = "cutover", password_file = "relay.pass" }
[targets.plain]
address = "127.0.0.1:2529"
tls = "none"

[routing]
default = ["plain"]
"#;
        let cfg = crate::loader::parse(text, &dir.path().join("cutover.toml"))
            .unwrap()
            .config;
        let loaded = TargetSettings::load(&cfg);
        let spec = loaded.target("relay").unwrap().as_ref().unwrap();
        assert_eq!(spec.auth, Some(("cutover".into(), "secret".into())));
        assert_eq!(spec.helo, "mx1.example.com");
        assert!(spec.connector.verifies);
        // Nothing is read again per connection: the loaded settings keep working.
        std::fs::remove_file(&pass).unwrap();
        assert!(loaded.target("relay").unwrap().is_ok());
        // The next load reports it; the attempt defers with that reason.
        let reloaded = TargetSettings::load(&cfg);
        let Some(Err(o)) = reloaded.target("relay") else {
            panic!("a missing password file must be an error");
        };
        assert!(matches!(o, Outcome::Deferred { .. }));
        assert!(o.reply().starts_with("cannot read "), "{}", o.reply());
        assert!(reloaded.target("plain").unwrap().is_ok());
        assert!(reloaded.target("nope").is_none());
        assert!(reloaded.mx().is_ok());
    }
}
