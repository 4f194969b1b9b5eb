//! The edge-authentication settings: `[auth]` (what is verified at intake and what a failure
//! leads to) and a target's `arc` (the key ARC sets are sealed with). Serde shapes, defaults and
//! their own checks only; the verification and the sealing are `crate::auth`'s, the key file is
//! parsed there too (the loader runs that check).

use super::Reader;
use super::diag::KeyPath;
use super::values::HumanDuration;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[auth]`: SPF, DKIM, DMARC and ARC at intake. Everything but stamping is off unless set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Evaluate SPF (MAIL FROM and HELO), DKIM, DMARC and ARC for clients outside
    /// `trusted_networks`, and stamp one `Authentication-Results:` (default true).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// What a DMARC failure leads to (default `"off"`: recorded only).
    #[serde(default)]
    pub dmarc: DmarcAction,
    /// Refuse mail from outside `trusted_networks` that uses one of `accept_domains` in MAIL
    /// FROM or the header `From:` and passes neither SPF nor DKIM (default false).
    #[serde(default)]
    pub spoof_protection: bool,
    /// The time all checks of one message may take, DNS included; what is not finished by
    /// then is `temperror` (default 5s).
    #[serde(default = "default_time_budget")]
    pub time_budget: HumanDuration,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            verify: true,
            dmarc: DmarcAction::Off,
            spoof_protection: false,
            time_budget: default_time_budget(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_time_budget() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// `auth.dmarc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DmarcAction {
    /// Results are stamped, nothing is refused.
    #[default]
    Off,
    /// Honour the sender domain's policy: `p=reject` failures get `550 5.7.1`, `p=quarantine`
    /// failures a quarantine header.
    Reject,
}

impl TryFrom<String> for DmarcAction {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "off" => Ok(DmarcAction::Off),
            "reject" => Ok(DmarcAction::Reject),
            other => Err(format!(
                "invalid value {other:?}: write dmarc = \"reject\" (honour p=reject with 550 5.7.1, p=quarantine with a header) or \"off\""
            )),
        }
    }
}

/// `targets.NAME.arc`: seal each copy delivered to this target with an ARC set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcSealing {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PEM private key: RSA (PKCS#8 or PKCS#1) or Ed25519 (PKCS#8).
    pub private_key_file: PathBuf,
}

/// `[auth]`'s own checks: a time budget that can be met.
pub(super) fn check(a: &Auth, cx: &mut Reader<'_>) {
    let budget = a.time_budget.0;
    if budget.is_zero() || budget > Duration::from_secs(60) {
        cx.error(
            &KeyPath::root().key("auth").key("time_budget"),
            "must be between 1ms and 60s (the client waits for it at the end of DATA)".into(),
        );
    }
}
