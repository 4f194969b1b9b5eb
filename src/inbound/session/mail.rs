//! The MAIL phase: opening a transaction (sequence, parameters, TLS requirement, announced
//! size, sender syntax, free disk space). After Stalwart's `inbound/mail.rs`. It never reads or
//! writes the socket; the reply goes back to the dispatcher.

use super::{Session, Transaction, size_exceeded, unsupported_param};
use crate::inbound::limits::Rejection;
use crate::inbound::policy;
use crate::inbound::reply::{Reply, bad_sequence};
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_SMTPUTF8};

impl Session {
    pub(super) fn mail(&mut self, line: &str, flags: u64, size: u64) -> Reply {
        let p = &self.settings.policy;
        if self.helo.is_none() {
            return bad_sequence("Send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return bad_sequence("Nested MAIL command");
        }
        let stats = &self.inbound.stats;
        // Every refusal below is counted here, once, by its reason.
        let refuse = |why: Rejection, r: Reply| {
            stats.rejected(why);
            r
        };
        if let Some(param) = policy::unadvertised_mail_param(line) {
            return refuse(Rejection::Syntax, unsupported_param(param));
        }
        if p.require_tls && !self.conn.is_tls() {
            let r = Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
            return refuse(Rejection::Policy, r);
        }
        if size > p.max_message_size {
            return refuse(Rejection::Size, size_exceeded());
        }
        let smtputf8 = flags & MAIL_SMTPUTF8 != 0;
        let from =
            match policy::extract_path(line).and_then(|raw| policy::parse_sender(raw, smtputf8)) {
                Ok(m) => m.map(|m| m.to_string()).unwrap_or_default(),
                Err(e) => return refuse(Rejection::Syntax, e.mail_reply()),
            };
        match crate::queue::disk::free_space(&self.settings.state_dir) {
            Ok(free) if free >= p.min_free_space => {}
            Ok(free) => {
                tracing::warn!(
                    free,
                    reserve = p.min_free_space,
                    "disk space below reserve, deferring mail"
                );
                return refuse(Rejection::Storage, insufficient_storage());
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.settings.state_dir.display(), "cannot check free space");
                return refuse(Rejection::Storage, insufficient_storage());
            }
        }
        self.tx = Some(Transaction {
            from,
            smtputf8,
            body_8bit: flags & MAIL_BODY_8BITMIME != 0,
            size,
            rcpts: Vec::new(),
            rcpt_attempts: 0,
        });
        Reply::new(250, "2.1.0", "Ok")
    }
}

/// `452 4.3.1`: free disk space below the reserve (or unknown).
fn insufficient_storage() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage")
}
