//! Server back-off: recognising throttling replies (`[THROTTLED]`, `[UNAVAILABLE]`, `[LIMIT]`,
//! Office 365's "Suggested Backoff Time: N milliseconds") and the pause schedule between
//! retries of one account. Pure apart from the per-account daily byte budget's clock reading.
//! Never sleeps itself and never touches other accounts.

use std::time::Duration;

/// `Some(hint)` when `reply` is a throttling reply (`hint` = the server's suggested pause).
pub fn hint(reply: &str) -> Option<Option<Duration>> {
    let upper = reply.to_ascii_uppercase();
    let suggested = suggested_backoff(reply);
    if suggested.is_some()
        || upper.contains("THROTTLED")
        || upper.contains("UNAVAILABLE")
        || upper.contains("[LIMIT]")
        || upper.contains("SERVERBUSY")
        || upper.contains("TRY AGAIN LATER")
    {
        return Some(suggested);
    }
    None
}

/// O365: "... Suggested Backoff Time: 12345 milliseconds".
pub fn suggested_backoff(reply: &str) -> Option<Duration> {
    let lower = reply.to_ascii_lowercase();
    let at = lower.find("suggested backoff time")?;
    let rest = &lower[at + "suggested backoff time".len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let n: u64 = digits.parse().ok()?;
    Some(Duration::from_millis(n.min(3_600_000)))
}

/// Retry policy of one account.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Attempts before the folder is marked failed.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(60),
            attempts: 6,
        }
    }
}

impl Backoff {
    /// Pause before retry number `attempt` (1-based), honouring a server hint.
    pub fn pause(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.max);
        match hint {
            Some(h) => h
                .max(Duration::from_millis(1))
                .min(Duration::from_secs(3600)),
            None => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_throttling() {
        assert_eq!(
            hint("code: None, info: Some(\"[THROTTLED] slow down\")"),
            Some(None)
        );
        assert_eq!(hint("[UNAVAILABLE] busy"), Some(None));
        assert_eq!(
            hint("Request is throttled. Suggested Backoff Time: 1500 milliseconds"),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(hint("[TRYCREATE] no such mailbox"), None);
    }

    #[test]
    fn schedule() {
        let b = Backoff::default();
        assert_eq!(b.pause(1, None), Duration::from_millis(250));
        assert_eq!(b.pause(3, None), Duration::from_millis(1000));
        assert_eq!(b.pause(30, None), Duration::from_secs(60));
        assert_eq!(
            b.pause(1, Some(Duration::from_millis(40))),
            Duration::from_millis(40)
        );
    }
}
