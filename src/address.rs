//! The recipient address as routing, verification and the config's lists see it: `local@domain`
//! split once, the domain normalised (lower case, no trailing dot). Pure; never does IO.

use std::fmt;

/// A recipient address split and normalised for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Local part as written (quotes kept).
    pub local: String,
    /// Domain, lower-case, without a trailing dot.
    pub domain: String,
}

impl Address {
    /// Split `local@domain` (angle brackets and surrounding spaces allowed) and normalise the
    /// domain. Returns `None` when there is no `@`, an empty side, or whitespace/control bytes.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .unwrap_or(s);
        let at = s.rfind('@')?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if local.is_empty() || domain.is_empty() {
            return None;
        }
        let quoted = local.starts_with('"') && local.ends_with('"') && local.len() >= 2;
        if local
            .chars()
            .any(|c| c.is_control() || (!quoted && c.is_whitespace()))
            || domain
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '@')
            || domain.starts_with('.')
            || domain.contains("..")
        {
            return None;
        }
        Some(Self {
            local: local.to_string(),
            domain: domain.to_lowercase(),
        })
    }

    pub fn is_quoted(&self) -> bool {
        self.local.starts_with('"')
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}
