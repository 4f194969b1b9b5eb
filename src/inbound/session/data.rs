//! The DATA phase: the DATA command's sequence checks, the body intake (trace headers first,
//! then the decoded content streamed into the queue's body writer while the header section is
//! scanned, under the idle and overall DATA time limits), the verdict on the finished block (a
//! pure function of the decoder's counters, the header scan and the limits), and the commit to
//! the queue (`250` only once the message is on disk). After Stalwart's `inbound/data.rs`. It
//! never reads the socket directly (`conn` does) and never delivers.

use super::conn::ReadOutcome;
use super::{Next, Session, Transaction, size_exceeded};
use crate::inbound::data::DataDecoder;
use crate::inbound::limits::{IntakeStats, Limit, Rejection};
use crate::inbound::policy;
use crate::inbound::reply::{Reply, bad_sequence};
use crate::inbound::stamp::{self, HeaderScan, TraceInfo};
use crate::queue::{BodyWriter, Envelope};
use std::time::SystemTime;
use tokio::time::Instant;

/// What the finished DATA block comes to, before storage is considered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Acceptable: commit it to the queue.
    Commit,
    /// Refused with this reply, counted under this reason.
    Refuse(Reply, Rejection),
}

/// The limits a DATA block is judged against.
#[derive(Clone, Copy, Debug)]
pub(super) struct DataLimits {
    pub max_size: u64,
    pub max_received: u32,
}

/// Judge a finished DATA block from the decoder's counters and the header scan. The first
/// failing check decides, in this order: size, bare LF, bare CR, NUL, header size, our loop
/// header, the number of `Received:` headers.
pub(super) fn verdict(dec: &DataDecoder, scan: &HeaderScan, limits: DataLimits) -> Verdict {
    let refuse =
        |code, esc, text: &'static str, why| Verdict::Refuse(Reply::new(code, esc, text), why);
    let policy = Rejection::Policy;
    if dec.size > limits.max_size {
        Verdict::Refuse(size_exceeded(), Rejection::Size)
    } else if dec.bare_lf > 0 {
        refuse(
            550,
            "5.6.0",
            "Message contains bare LF; lines must end with CRLF",
            policy,
        )
    } else if dec.bare_cr > 0 {
        // Refused like bare LF rather than normalised: cutover relays bytes verbatim (a rewrite
        // would break DKIM), and a CR that some receivers take for a line end is an SMTP
        // smuggling vector (`\r.\r`).
        refuse(
            550,
            "5.6.0",
            "Message contains bare CR; lines must end with CRLF",
            policy,
        )
    } else if dec.nul > 0 {
        refuse(550, "5.6.0", "Message contains NUL bytes", policy)
    } else if scan.too_large {
        refuse(
            552,
            "5.3.4",
            "Message header section exceeds fixed maximum size",
            Rejection::Size,
        )
    } else if scan.loop_seen {
        refuse(
            554,
            "5.4.6",
            "Mail loop detected (our X-Cutover-Loop header)",
            Rejection::Loop,
        )
    } else if scan.received > limits.max_received {
        refuse(
            554,
            "5.4.6",
            "Too many hops (Received: headers), mail loop?",
            Rejection::Loop,
        )
    } else {
        Verdict::Commit
    }
}

/// `451 4.3.0`: the message could not be stored.
fn storage_failure() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Error: queue storage failure, try again later",
    )
}

/// The message body on its way into the queue.
struct Body {
    /// None once storage failed or the message is known to be refused.
    writer: Option<BodyWriter>,
    storage_error: bool,
    /// A message edge authentication evaluates is held until the end of DATA (its fields go on
    /// top, forged ones come out); the trace fields wait with it.
    held: Option<Held>,
}

/// The content of an evaluated message and the trace fields that go on top of it.
struct Held {
    content: Vec<u8>,
    trace: String,
}

impl Body {
    async fn write(&mut self, bytes: &[u8]) {
        if let Some(h) = self.held.as_mut() {
            if self.writer.is_some() {
                h.content.extend_from_slice(bytes);
            }
            return;
        }
        self.write_through(bytes).await;
    }

    async fn write_through(&mut self, bytes: &[u8]) {
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.write(bytes).await
        {
            tracing::error!(error = %e, "cannot write message body");
            self.storage_error = true;
            self.writer = None;
        }
    }

    /// The message will be refused: stop spooling and holding.
    fn discard(&mut self) {
        self.writer = None;
        if let Some(h) = self.held.as_mut() {
            h.content = Vec::new();
        }
    }

    /// The writer to commit, unless storage failed.
    fn finish(self) -> Option<BodyWriter> {
        if self.storage_error {
            None
        } else {
            self.writer
        }
    }
}

impl Session {
    pub(super) fn data_command(&mut self) -> Next {
        match &self.tx {
            None => self.reply(bad_sequence("Need MAIL command")),
            Some(tx) if tx.rcpts.is_empty() && tx.rcpt_attempts > 0 => {
                self.reply(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(tx) if tx.rcpts.is_empty() => self.reply(bad_sequence("Need RCPT command")),
            Some(_) => {
                self.conn
                    .write_raw("354 End data with <CR><LF>.<CR><LF>\r\n");
                return Next::Data;
            }
        }
        Next::Continue
    }

    /// The DATA block: stream it into the queue's body writer, then judge and commit. False when
    /// the connection must end (client gone, timeout).
    pub(super) async fn data(&mut self) -> bool {
        let Some(tx) = self.tx.take() else {
            return true;
        };
        // The 354 must reach the client before it sends the content.
        if !self.conn.flush().await {
            return false;
        }
        let started = SystemTime::now();
        let mut body = self.start_body(&tx, started).await;
        let Some((dec, scan)) = self.receive_body(&tx, &mut body).await else {
            return false;
        };
        self.conn.end_data();
        let p = &self.settings.policy;
        let limits = DataLimits {
            max_size: p.max_message_size,
            max_received: p.max_received,
        };
        let stats = self.inbound.stats.clone();
        let reply = match verdict(&dec, &scan, limits) {
            Verdict::Refuse(r, why) => {
                stats.rejected(why);
                r
            }
            Verdict::Commit => self.authenticate_and_commit(&tx, body, started, &dec).await,
        };
        if reply.code != 250 {
            IntakeStats::inc(&self.inbound.stats.messages_refused);
            tracing::info!(client = %self.peer, from = %tx.from, size = dec.size, reply = %reply, "message refused");
        }
        self.reply(reply);
        true
    }

    /// A body writer with our trace headers written (`Received:`, the loop header).
    async fn start_body(&mut self, tx: &Transaction, started: SystemTime) -> Body {
        let mut body = match self.inbound.queue.body_writer() {
            Ok(w) => Body {
                writer: Some(w),
                storage_error: false,
                held: None,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start a message body");
                Body {
                    writer: None,
                    storage_error: true,
                    held: None,
                }
            }
        };
        if body.writer.is_some() {
            let trace = self.trace_fields(tx, started);
            if self.settings.auth.evaluates(self.trusted) {
                body.held = Some(Held {
                    content: Vec::new(),
                    trace,
                });
            } else {
                body.write(trace.as_bytes()).await;
            }
        }
        body
    }

    /// Our trace fields: the `Received:` and the loop header.
    fn trace_fields(&self, tx: &Transaction, started: SystemTime) -> String {
        let p = &self.settings.policy;
        let tls = self.conn.tls_info();
        let single = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].0.as_str());
        let mut stamp_text = stamp::received(&TraceInfo {
            helo: self.helo.as_deref().unwrap_or_default(),
            client_ip: self.peer.ip(),
            hostname: &p.hostname,
            tls: tls.as_ref().map(|(v, c)| (v.as_str(), c.as_str())),
            esmtp: self.esmtp,
            smtputf8: tx.smtputf8,
            single_rcpt: single,
            date: started,
        });
        stamp_text.push_str(&stamp::loop_header(&p.hostname));
        stamp_text
    }

    /// An acceptable block: evaluate it when it was held (and refuse it if the policy says
    /// so), write it, and hand it to the queue.
    async fn authenticate_and_commit(
        &mut self,
        tx: &Transaction,
        mut body: Body,
        started: SystemTime,
        dec: &DataDecoder,
    ) -> Reply {
        let legs = policy::plan_legs(&tx.rcpts);
        let mut seals = std::collections::BTreeMap::new();
        let mut auth_summary = String::new();
        if let Some(held) = body.held.take()
            && body.writer.is_some()
        {
            let targets: Vec<&str> = legs.iter().map(|l| l.target.as_str()).collect();
            let helo = self.helo.clone().unwrap_or_default();
            let client = crate::auth::Client {
                ip: self.peer.ip(),
                helo: &helo,
                mail_from: &tx.from,
            };
            let settings = self.settings.clone();
            let done = settings
                .auth
                .process(
                    &held.content,
                    &client,
                    held.trace.as_bytes(),
                    &targets,
                    &self.inbound.auth_stats,
                )
                .await;
            if let crate::auth::Decision::Refuse {
                code,
                esc,
                text,
                reason,
            } = done.decision
            {
                self.inbound.stats.rejected(match reason {
                    crate::auth::Reason::Dmarc => Rejection::Dmarc,
                    crate::auth::Reason::Spoof => Rejection::Spoof,
                });
                tracing::info!(client = %self.peer, from = %tx.from, auth = %done.summary, "refused by edge authentication");
                return Reply::new(code, esc, text);
            }
            drop(held);
            body.write_through(&done.message).await;
            seals = done.seals;
            auth_summary = done.summary;
        }
        match body.finish() {
            Some(w) => {
                self.commit(tx, w, legs, seals, started, dec, &auth_summary)
                    .await
            }
            None => {
                self.inbound.stats.rejected(Rejection::Storage);
                storage_failure()
            }
        }
    }

    /// Read the block up to its `CRLF.CRLF` into `body`. None when the connection must end
    /// (a `421` is queued on a timeout).
    async fn receive_body(
        &mut self,
        tx: &Transaction,
        body: &mut Body,
    ) -> Option<(DataDecoder, HeaderScan)> {
        let settings = self.settings.clone();
        let p = &settings.policy;
        let mut dec = DataDecoder::new();
        let mut scan = HeaderScan::new(&p.hostname, p.max_header_size);
        let mut dbuf: Vec<u8> = Vec::with_capacity(super::conn::READ_CHUNK);
        // Two limits (see `Policy::data_time_limit`): no byte for `data_idle_timeout`, or the
        // whole block taking longer than `data_timeout` + its size at DATA_MIN_RATE.
        let data_started = Instant::now();
        loop {
            if self.conn.decode_data(&mut dec, &mut dbuf) {
                if !scan.is_done() {
                    scan.feed(&dbuf);
                }
                if dec.size > p.max_message_size || scan.too_large {
                    // Refused at the end anyway: stop spooling.
                    body.discard();
                }
                if !dbuf.is_empty() {
                    body.write(&dbuf).await;
                }
                if dec.is_done() {
                    break;
                }
            }
            let limit = data_started + p.data_time_limit(tx.size, dec.size);
            let deadline = limit.min(Instant::now() + p.data_idle_timeout);
            match self.conn.fill_data(deadline).await {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout => {
                    self.data_timeout(Instant::now() >= limit, data_started, dec.size);
                    return None;
                }
                _ => {
                    tracing::info!(client = %self.peer, bytes = dec.size, "connection lost during DATA");
                    return None;
                }
            }
        }
        scan.finish();
        Some((dec, scan))
    }

    /// Queue the `421` for a DATA block that took too long (`overall`) or stalled.
    fn data_timeout(&mut self, overall: bool, data_started: Instant, bytes: u64) {
        self.inbound.stats.limit_hit(Limit::DataRate);
        tracing::info!(
            client = %self.peer,
            bytes,
            elapsed = ?data_started.elapsed(),
            "{}",
            if overall { "DATA time limit reached" } else { "DATA idle timeout" }
        );
        self.reply(Reply::new(
            421,
            "4.4.2",
            if overall {
                "Time limit for DATA reached, closing connection"
            } else {
                "Timeout waiting for DATA, closing connection"
            },
        ));
    }

    /// Hand the message to the queue: `250` with its id once it is on disk.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &mut self,
        tx: &Transaction,
        w: BodyWriter,
        legs: Vec<crate::queue::NewLeg>,
        seals: std::collections::BTreeMap<String, String>,
        started: SystemTime,
        dec: &DataDecoder,
        auth: &str,
    ) -> Reply {
        let per_target: Vec<(String, usize)> = legs
            .iter()
            .map(|l| (l.target.clone(), l.recipients.len()))
            .collect();
        let leg_summary: Vec<String> = per_target.iter().map(|(t, n)| format!("{t}:{n}")).collect();
        let rcpts: Vec<&str> = tx.rcpts.iter().map(|(a, _)| a.as_str()).collect();
        let env = Envelope {
            mail_from: tx.from.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            client_addr: self.peer,
            received_at: started,
            smtputf8: tx.smtputf8,
            body_8bit: tx.body_8bit,
        };
        match self.inbound.queue.commit_sealed(w, env, legs, seals).await {
            Ok(id) => {
                self.accepted += 1;
                self.counters.message_accepted();
                IntakeStats::inc(&self.inbound.stats.messages_accepted);
                let legs = per_target.iter().map(|(t, n)| (t.as_str(), *n));
                self.inbound
                    .telemetry
                    .accepted(dec.size, legs, SystemTime::now());
                tracing::info!(
                    queue_id = %id,
                    client = %self.peer,
                    from = %tx.from,
                    size = dec.size,
                    rcpts = ?rcpts,
                    legs = ?leg_summary,
                    tls = self.conn.tls_info().is_some(),
                    long_lines = dec.long_lines,
                    auth,
                    "accepted"
                );
                Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
            }
            Err(e) => {
                tracing::error!(client = %self.peer, error = %e, "queue commit failed");
                self.inbound.stats.rejected(Rejection::Storage);
                storage_failure()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DataLimits = DataLimits {
        max_size: 100,
        max_received: 3,
    };

    /// A clean decoder/scan pair, as after a small, well-formed message.
    fn clean() -> (DataDecoder, HeaderScan) {
        let mut dec = DataDecoder::new();
        dec.size = 50;
        (dec, HeaderScan::new("mx.example", 1000))
    }

    fn refused(dec: &DataDecoder, scan: &HeaderScan) -> (u16, &'static str, String) {
        match verdict(dec, scan, LIMITS) {
            Verdict::Refuse(r, _) => (r.code, r.esc, r.text.into_owned()),
            Verdict::Commit => panic!("expected a refusal"),
        }
    }

    #[test]
    fn clean_message_is_committed() {
        let (dec, scan) = clean();
        assert_eq!(verdict(&dec, &scan, LIMITS), Verdict::Commit);
        // At the limits exactly.
        let (mut dec, mut scan) = clean();
        dec.size = 100;
        scan.received = 3;
        dec.long_lines = 7; // logged, never refused
        assert_eq!(verdict(&dec, &scan, LIMITS), Verdict::Commit);
    }

    /// Each check on its own, on an otherwise clean message.
    #[test]
    fn each_check_refuses_alone() {
        type Spoil = fn(&mut DataDecoder, &mut HeaderScan);
        let cases: [(Spoil, u16, &str, &str); 7] = [
            (
                |d, _| d.size = 101,
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            (
                |d, _| d.bare_lf = 1,
                550,
                "5.6.0",
                "Message contains bare LF; lines must end with CRLF",
            ),
            (
                |d, _| d.bare_cr = 1,
                550,
                "5.6.0",
                "Message contains bare CR; lines must end with CRLF",
            ),
            (|d, _| d.nul = 2, 550, "5.6.0", "Message contains NUL bytes"),
            (
                |_, s| s.too_large = true,
                552,
                "5.3.4",
                "Message header section exceeds fixed maximum size",
            ),
            (
                |_, s| s.loop_seen = true,
                554,
                "5.4.6",
                "Mail loop detected (our X-Cutover-Loop header)",
            ),
            (
                |_, s| s.received = 4,
                554,
                "5.4.6",
                "Too many hops (Received: headers), mail loop?",
            ),
        ];
        for (spoil, code, esc, text) in cases {
            let (mut dec, mut scan) = clean();
            spoil(&mut dec, &mut scan);
            assert_eq!(refused(&dec, &scan), (code, esc, text.to_string()));
        }
    }

    /// The reason each refusal is counted under in `/metrics`.
    #[test]
    fn each_refusal_has_its_reason() {
        type Spoil = fn(&mut DataDecoder, &mut HeaderScan);
        let cases: [(Spoil, Rejection); 5] = [
            (|d, _| d.size = 101, Rejection::Size),
            (|_, s| s.too_large = true, Rejection::Size),
            (|d, _| d.bare_lf = 1, Rejection::Policy),
            (|_, s| s.loop_seen = true, Rejection::Loop),
            (|_, s| s.received = 4, Rejection::Loop),
        ];
        for (spoil, why) in cases {
            let (mut dec, mut scan) = clean();
            spoil(&mut dec, &mut scan);
            match verdict(&dec, &scan, LIMITS) {
                Verdict::Refuse(_, got) => assert_eq!(got, why),
                Verdict::Commit => panic!("expected a refusal"),
            }
        }
    }

    #[test]
    fn first_failing_check_decides() {
        let (mut dec, mut scan) = clean();
        dec.size = 101;
        dec.bare_lf = 1;
        dec.bare_cr = 1;
        dec.nul = 1;
        scan.too_large = true;
        scan.loop_seen = true;
        scan.received = 9;
        let expected = [
            (552, "5.3.4", "Message size"),
            (550, "5.6.0", "bare LF"),
            (550, "5.6.0", "bare CR"),
            (550, "5.6.0", "NUL"),
            (552, "5.3.4", "header section"),
            (554, "5.4.6", "X-Cutover-Loop"),
            (554, "5.4.6", "Too many hops"),
        ];
        for (i, (code, esc, text)) in expected.into_iter().enumerate() {
            let got = refused(&dec, &scan);
            assert_eq!((got.0, got.1), (code, esc), "step {i}");
            assert!(got.2.contains(text), "step {i}: {}", got.2);
            match i {
                0 => dec.size = 1,
                1 => dec.bare_lf = 0,
                2 => dec.bare_cr = 0,
                3 => dec.nul = 0,
                4 => scan.too_large = false,
                5 => scan.loop_seen = false,
                _ => scan.received = 0,
            }
        }
        assert_eq!(verdict(&dec, &scan, LIMITS), Verdict::Commit);
    }
}
