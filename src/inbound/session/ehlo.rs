//! The greeting and HELO/EHLO phase: which extensions are offered in which session state, the
//! HELO/EHLO/HELP replies (pure text building), and STARTTLS (the command and the session reset
//! after the upgrade; the stream swap itself is `conn`'s). After Stalwart's `inbound/ehlo.rs`.
//! It never reads or writes the socket directly.

use super::conn::Upgrade;
use super::{Next, Session};
use crate::inbound::reply::{Reply, bad_sequence};
use std::time::Duration;

impl Session {
    pub(super) fn ehlo(&mut self, host: String) {
        let offer = Offer {
            max_size: self.settings.policy.max_message_size,
            starttls: self.settings.tls.is_some() && !self.conn.is_tls(),
        };
        let r = ehlo_reply(&self.settings.policy.hostname, &host, offer);
        self.conn.write_raw(&r);
        self.helo = Some(host);
        self.esmtp = true;
        self.tx = None;
    }

    pub(super) fn helo(&mut self, host: String) {
        self.helo = Some(host);
        self.esmtp = false;
        self.tx = None;
        let r = helo_reply(&self.settings.policy.hostname);
        self.conn.write_raw(&r);
    }

    pub(super) fn starttls_command(&mut self) -> Next {
        if self.settings.tls.is_none() {
            self.reply(Reply::new(502, "5.5.1", "STARTTLS not available"));
        } else if self.conn.is_tls() {
            self.reply(bad_sequence("TLS already active"));
        } else {
            self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
            return Next::StartTls;
        }
        Next::Continue
    }

    /// Upgrade after the `220`; the session starts over (no HELO, no transaction). False when
    /// the connection must end.
    pub(super) async fn starttls(&mut self) -> bool {
        let Some(acceptor) = self.settings.tls.clone() else {
            return false;
        };
        let limit = self
            .settings
            .policy
            .command_timeout
            .min(Duration::from_secs(60));
        match self.conn.upgrade(&acceptor, limit).await {
            Upgrade::Done => {
                self.helo = None;
                self.esmtp = false;
                self.tx = None;
                if let Some((v, c)) = self.conn.tls_info() {
                    tracing::debug!(client = %self.peer, version = %v, cipher = %c, "TLS established");
                }
                true
            }
            Upgrade::Gone => false,
            Upgrade::Failed(e) => {
                tracing::info!(client = %self.peer, error = %e, "TLS handshake failed");
                false
            }
            Upgrade::TimedOut => {
                tracing::info!(client = %self.peer, "TLS handshake timeout");
                false
            }
        }
    }
}

/// Extensions offered after EHLO.
#[derive(Clone, Copy, Debug)]
pub(super) struct Offer {
    max_size: u64,
    /// STARTTLS is configured and the session is not under TLS yet.
    starttls: bool,
}

/// `220 <hostname> ESMTP`
pub(super) fn greeting(hostname: &str) -> String {
    format!("220 {hostname} ESMTP cutover\r\n")
}

/// The multi-line EHLO reply.
pub(super) fn ehlo_reply(hostname: &str, helo: &str, offer: Offer) -> String {
    let mut lines = vec![format!("{hostname} greets {}", printable(helo))];
    lines.push("PIPELINING".into());
    lines.push(format!("SIZE {}", offer.max_size));
    lines.push("8BITMIME".into());
    lines.push("SMTPUTF8".into());
    lines.push("ENHANCEDSTATUSCODES".into());
    if offer.starttls {
        lines.push("STARTTLS".into());
    }
    let mut out = String::new();
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == n { ' ' } else { '-' };
        out.push_str(&format!("250{sep}{l}\r\n"));
    }
    out
}

/// The HELO reply.
pub(super) fn helo_reply(hostname: &str) -> String {
    format!("250 {hostname}\r\n")
}

/// The HELP reply.
pub(super) fn help_reply() -> String {
    "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\r\n\
     214 2.0.0 cutover mail gateway\r\n"
        .to_string()
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_lists_extensions() {
        let r = ehlo_reply(
            "mx",
            "c",
            Offer {
                max_size: 100,
                starttls: true,
            },
        );
        assert!(r.starts_with("250-mx greets c\r\n250-PIPELINING\r\n250-SIZE 100\r\n"));
        assert!(r.ends_with("250 STARTTLS\r\n"));
        let r = ehlo_reply(
            "mx",
            "c\r\n",
            Offer {
                max_size: 1,
                starttls: false,
            },
        );
        assert!(r.ends_with("250 ENHANCEDSTATUSCODES\r\n"));
        assert!(!r.contains("STARTTLS"));
        assert_eq!(r.matches("\r\n").count(), 6);
    }
}
