//! The RCPT phase: one recipient checked (sequence, parameters, count, syntax, the unqualified
//! postmaster, routing and relay policy, recipient verification) and added to the transaction,
//! and its count towards the session's limits. After Stalwart's `inbound/rcpt.rs`. It never
//! reads or writes the socket; the reply goes back to the dispatcher.

use super::{Session, unsupported_param};
use crate::inbound::limits::{IntakeStats, Rejection};
use crate::inbound::policy::{self, RcptDecision};
use crate::inbound::reply::{Reply, bad_sequence};
use std::time::SystemTime;

impl Session {
    pub(super) async fn rcpt(&mut self, line: &str) -> Reply {
        let settings = self.settings.clone();
        let p = &settings.policy;
        let trusted = self.trusted;
        let stats = &self.inbound.stats;
        // Every refusal below is counted here, once, by its reason.
        let refuse = |why: Rejection, r: Reply| {
            stats.rejected(why);
            r
        };
        let Some(tx) = self.tx.as_mut() else {
            return bad_sequence("Need MAIL command");
        };
        tx.rcpt_attempts += 1;
        if let Some(param) = policy::unadvertised_rcpt_param(line) {
            return refuse(Rejection::Syntax, unsupported_param(param));
        }
        if tx.rcpts.len() >= p.max_recipients {
            let r = Reply::new(452, "4.5.3", "Too many recipients");
            return refuse(Rejection::Policy, r);
        }
        let raw = match policy::extract_path(line) {
            Ok(r) => r,
            Err(e) => return refuse(e.rejection(), e.rcpt_reply()),
        };
        let mailbox = if raw.eq_ignore_ascii_case("postmaster") {
            // RFC 5321 §4.5.1: the unqualified postmaster is ours.
            match p.accept_domains.iter().min() {
                Some(d) => crate::address::Address::new("postmaster", d),
                None => {
                    let r = Reply::new(550, "5.1.1", "No postmaster here");
                    return refuse(Rejection::Unrouted, r);
                }
            }
        } else {
            match policy::parse_recipient(raw, tx.smtputf8) {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(client = %self.peer, rcpt = %raw.escape_debug(), reason = %e, "recipient refused");
                    return refuse(e.rejection(), e.rcpt_reply());
                }
            }
        };
        let address = mailbox.to_string();
        let route = settings.router.route_address(&mailbox, SystemTime::now());
        match policy::decide_rcpt(p, &mailbox, trusted, route) {
            RcptDecision::Accept(route) => {
                if !tx.rcpts.iter().any(|(a, _)| a == &address) {
                    // Recipient verification (known lists, probes of the target): trusted
                    // clients too, so nothing undeliverable is queued.
                    let v = &settings.verify;
                    if v.is_enabled()
                        && let Some(r) = self.inbound.verifier.check(v, &mailbox, &route).await
                    {
                        tracing::info!(client = %self.peer, rcpt = %address, reply = %r, "recipient refused");
                        let why = match r.code {
                            500.. => Rejection::UnknownRecipient,
                            _ => Rejection::VerifyTempfail,
                        };
                        return refuse(why, r);
                    }
                    tx.rcpts.push((address, route));
                }
                Reply::new(250, "2.1.5", "Ok")
            }
            RcptDecision::Reject(r) => {
                tracing::info!(client = %self.peer, rcpt = %address, reply = %r, "recipient refused");
                refuse(policy::rcpt_rejection(&r), r)
            }
        }
    }

    /// A refused recipient is an error towards `hard_error_limit` (directory harvesting), except
    /// `452 4.5.3` (too many recipients: the client sends the rest in another transaction).
    /// Syntax and sequence errors are counted by [`Session::reply`].
    pub(super) fn count_rcpt(&mut self, r: &Reply) {
        let stats = &self.inbound.stats;
        if r.code < 400 {
            IntakeStats::inc(&stats.rcpts_accepted);
            return;
        }
        IntakeStats::inc(&stats.rcpts_refused);
        if r.esc != "4.5.3" && !(r.code >= 500 && r.esc.starts_with("5.5.")) {
            self.counters.errors += 1;
        }
    }
}
