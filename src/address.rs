//! The one address type: `local@domain`, split once and its domain normalised once (lower case,
//! without the trailing dot of an absolute name). A recipient is parsed at `RCPT TO` by
//! `inbound::policy` (the SMTP syntax checks: RFC 5321, SMTPUTF8) into an [`Address`], and that
//! value is what the relay decision, routing, the `rcpt_domain` rewrite and recipient
//! verification use; [`Address::parse`] is the lenient split for addresses already accepted (the
//! queue's records, config lists, the CLI). [`normalise_domain`] is the one domain normaliser.
//! Pure; never does IO and depends on no other module.

use std::fmt;

/// A mail address split and normalised for matching.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Local part as written (quotes kept).
    pub local: String,
    /// Domain, lower-case, without a trailing dot.
    pub domain: String,
}

/// A domain as compared everywhere: lower case, without the one trailing dot of an absolute name
/// (`Example.COM.` → `example.com`). No syntax check (that is the parser's job).
pub fn normalise_domain(domain: &str) -> String {
    domain.strip_suffix('.').unwrap_or(domain).to_lowercase()
}

impl Address {
    /// `local@domain` with the domain normalised; the caller has checked both parts.
    pub fn new(local: &str, domain: &str) -> Self {
        Self {
            local: local.to_string(),
            domain: normalise_domain(domain),
        }
    }

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
        let bare = domain.strip_suffix('.').unwrap_or(domain);
        if local.is_empty() || bare.is_empty() {
            return None;
        }
        let quoted = local.starts_with('"') && local.ends_with('"') && local.len() >= 2;
        if local
            .chars()
            .any(|c| c.is_control() || (!quoted && c.is_whitespace()))
            || bare
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '@')
            || bare.starts_with('.')
            || bare.contains("..")
        {
            return None;
        }
        Some(Self::new(local, domain))
    }

    pub fn is_quoted(&self) -> bool {
        self.local.starts_with('"')
    }

    /// Is the domain one of `domains` (as configured: any case, trailing dot or not)?
    pub fn in_domains(&self, domains: &[String]) -> bool {
        domains.iter().any(|d| normalise_domain(d) == self.domain)
    }

    /// The same local part at `domain` (a target's `rcpt_domain`).
    pub fn at_domain(&self, domain: &str) -> Address {
        Address::new(&self.local, domain)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_normalise() {
        let a = Address::parse(" <Alice+x@Example.COM.> ").unwrap();
        assert_eq!(
            (a.local.as_str(), a.domain.as_str()),
            ("Alice+x", "example.com")
        );
        assert_eq!(a.to_string(), "Alice+x@example.com");
        assert!(a.in_domains(&["EXAMPLE.com.".to_string()]));
        assert!(!a.in_domains(&["example.org".to_string()]));
        assert_eq!(
            a.at_domain("New.Example.").to_string(),
            "Alice+x@new.example"
        );
        assert!(Address::parse("\"a b\"@example.com").is_some_and(|a| a.is_quoted()));
        for bad in [
            "nobody",
            "@example.com",
            "a@",
            "a@.",
            "a b@example.com",
            "a@x..y",
        ] {
            assert_eq!(Address::parse(bad), None, "{bad}");
        }
        assert_eq!(normalise_domain("Example.COM."), "example.com");
        assert_eq!(normalise_domain("example.com"), "example.com");
    }
}
