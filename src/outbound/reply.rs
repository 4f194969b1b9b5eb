//! Classification of what a target answered (or failed to answer) into delivered / deferred /
//! failed, per recipient. Pure.

/// The outcome of one attempt for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: the target took responsibility.
    Delivered { reply: String },
    /// 4xx, timeouts, connection and TLS errors: try again later.
    Deferred { reply: String },
    /// 5xx: permanent for this recipient at this target.
    Failed { reply: String },
}

impl Outcome {
    /// Classify an SMTP reply (`code` with its text, e.g. `550 5.1.1 user unknown`).
    pub fn from_reply(code: u16, text: &str) -> Outcome {
        let reply = one_line(&format!("{code} {text}"));
        match code {
            200..=299 => Outcome::Delivered { reply },
            500..=599 => Outcome::Failed { reply },
            // 4xx and anything unexpected (1xx/3xx where a final reply belongs) is temporary.
            _ => Outcome::Deferred { reply },
        }
    }

    /// A local or network failure (connection refused, timeout, TLS): always temporary.
    pub fn local(reason: &str) -> Outcome {
        Outcome::Deferred {
            reply: one_line(reason),
        }
    }

    /// A local permanent failure (null MX, TLS required but not offered is NOT one of these).
    pub fn local_permanent(reason: &str) -> Outcome {
        Outcome::Failed {
            reply: one_line(reason),
        }
    }

    pub fn reply(&self) -> &str {
        match self {
            Outcome::Delivered { reply }
            | Outcome::Deferred { reply }
            | Outcome::Failed { reply } => reply,
        }
    }

    /// Postfix-style status word for logs.
    pub fn status_word(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "sent",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Failed { .. } => "bounced",
        }
    }
}

/// Multi-line replies and stray control characters folded into one printable line (bounded).
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(512));
    for part in s.split(['\r', '\n']).filter(|p| !p.trim().is_empty()) {
        if !out.is_empty() {
            out.push_str(" / ");
        }
        out.extend(
            part.trim()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
    }
    out.chars().take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(matches!(
            Outcome::from_reply(250, "2.0.0 Ok"),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(451, "4.3.0 try later"),
            Outcome::Deferred { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(452, "4.5.3 too many"),
            Outcome::Deferred { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(550, "5.1.1 unknown"),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(354, "go ahead"),
            Outcome::Deferred { .. }
        ));
        assert!(matches!(
            Outcome::local("connection refused"),
            Outcome::Deferred { .. }
        ));
        assert_eq!(
            Outcome::from_reply(550, "5.1.1 unknown").reply(),
            "550 5.1.1 unknown"
        );
        assert_eq!(
            Outcome::from_reply(550, "5.1.1 unknown").status_word(),
            "bounced"
        );
    }

    #[test]
    fn folds_multiline() {
        assert_eq!(
            one_line("550-5.7.1 first\r\n550 5.7.1 second\r\n"),
            "550-5.7.1 first / 550 5.7.1 second"
        );
        assert_eq!(one_line("a\u{0}b"), "a b");
        assert_eq!(one_line(&"x".repeat(2000)).len(), 512);
    }
}
