//! RFC 3464 delivery status notifications: builds the `multipart/report` message for a failure
//! or a delay. [`build`] is pure: it never sends, never touches the queue, and refuses to build a
//! DSN for a message whose own sender is `<>`. [`stage`] is the one shared way to turn a built DSN
//! into a new queue message (from `<>` to the sender, on the `bounce.via` target), inserted by
//! the caller in the same transaction as the change that caused it; it never delivers.

use crate::config::Config;
use crate::header;
use crate::queue::model::{BOUNCE_RULE, MX_TARGET, MessageRecord};
use crate::queue::store::Staged;
use crate::queue::{Envelope, NewLeg, Queue, QueueError, QueueId, stage_message};
use crate::time::{rfc5322_date, unix_secs};
use std::io::Read;
use std::time::SystemTime;

/// Failure (Action: failed) or delay warning (Action: delayed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsnKind {
    Failure,
    /// Delay warning; the message keeps being retried until this instant.
    Delay {
        will_retry_until: SystemTime,
    },
}

/// One recipient reported in a DSN.
#[derive(Clone, Debug)]
pub struct DsnRecipient {
    /// The address the sender used (envelope RCPT).
    pub original: String,
    /// The address given to the target (after `rcpt_domain` rewriting).
    pub final_rcpt: String,
    /// Target name (`old`, `new`, ...).
    pub target: String,
    /// The remote server that answered, `host` or `host:port`.
    pub remote_mta: Option<String>,
    /// The remote reply, e.g. `550 5.1.1 <bob@example.com>: user unknown`, or a local reason.
    pub diagnostic: String,
    pub last_attempt: Option<SystemTime>,
}

/// Everything the builder needs.
#[derive(Clone, Debug)]
pub struct DsnInput<'a> {
    pub kind: DsnKind,
    /// This gateway's hostname (Reporting-MTA).
    pub reporting_mta: &'a str,
    pub queue_id: &'a str,
    /// The envelope sender of the original message; empty = `<>`.
    pub sender: &'a str,
    pub arrival: SystemTime,
    pub now: SystemTime,
    /// The original message's header block (up to the blank line).
    pub original_headers: &'a [u8],
    pub recipients: &'a [DsnRecipient],
}

/// Status code (`5.1.1`) from a reply: its enhanced code if present, else class from the basic
/// code (`5.0.0` / `4.0.0`), else `default`.
pub fn status_of(reply: &str, default: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let code = code.split('-').next().unwrap_or(code);
    if let Some(esc) = words.next() {
        let parts: Vec<&str> = esc.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return esc.to_string();
        }
    }
    match code.as_bytes().first() {
        Some(b'5') if code.len() == 3 => "5.0.0".into(),
        Some(b'4') if code.len() == 3 => "4.0.0".into(),
        _ => default.to_string(),
    }
}

/// Keep only printable ASCII on one line (header/field values), bounded in length.
pub(crate) fn field(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(900)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Build the DSN (full message bytes, CRLF line ends) for `input`, addressed to its sender.
/// `None` when the original sender is `<>` (never bounce a bounce) or there is nobody to report.
pub fn build(input: &DsnInput<'_>) -> Option<Vec<u8>> {
    if input.sender.is_empty() || input.recipients.is_empty() {
        return None;
    }
    let host = field(input.reporting_mta);
    // Queue ids are alphanumeric; filter anyway, so that the boundary (quoted in Content-Type,
    // RFC 2046 §5.1.1 bchars) stays 7-bit whatever the caller passes.
    let id: String = input
        .queue_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    let boundary = format!("{id}.{}/{host}", unix_secs(input.now));
    let mut m = String::new();
    header_fields(&mut m, input, &host, &boundary);
    m.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");
    human_part(&mut m, input, &host, &boundary);
    status_part(&mut m, input, &host, &boundary);

    // Part 3: the original headers.
    m.push_str(&format!(
        "--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(&crlf_normalised(header::section(input.original_headers)));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some(out)
}

/// The DSN's own header section: exactly its eight fixed fields.
fn header_fields(m: &mut String, input: &DsnInput<'_>, host: &str, boundary: &str) {
    let subject = match input.kind {
        DsnKind::Failure => "Undelivered Mail Returned to Sender",
        DsnKind::Delay { .. } => "Delayed Mail (still being retried)",
    };
    let mut h = |k: &str, v: &str| {
        m.push_str(k);
        m.push_str(": ");
        m.push_str(v);
        m.push_str("\r\n");
    };
    h(
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    h("To", &format!("<{}>", field(input.sender)));
    h("Subject", subject);
    h("Date", &rfc5322_date(input.now));
    h(
        "Message-ID",
        &format!(
            "<{}.{}.dsn@{host}>",
            field(input.queue_id),
            unix_secs(input.now)
        ),
    );
    h("Auto-Submitted", "auto-replied");
    h("MIME-Version", "1.0");
    h(
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""),
    );
}

/// Part 1: for humans.
fn human_part(m: &mut String, input: &DsnInput<'_>, host: &str, boundary: &str) {
    m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"));
    m.push_str(&format!("This is the mail system at host {host}.\r\n\r\n"));
    match input.kind {
        DsnKind::Failure => m.push_str(
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. \
             It's attached below.\r\n\r\nFor further assistance, please send mail to postmaster.\r\n\r\n",
        ),
        DsnKind::Delay { will_retry_until } => m.push_str(&format!(
            "####################################################################\r\n\
             # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
             ####################################################################\r\n\r\n\
             Your message could not be delivered yet to the recipients below.\r\n\
             It will be retried until {}.\r\n\r\n",
            rfc5322_date(will_retry_until)
        )),
    }
    for r in input.recipients {
        let line = format!(
            "<{}>: via {}{}: {}",
            field(&r.original),
            field(&r.target),
            r.remote_mta
                .as_deref()
                .map(|x| format!(" ({})", field(x)))
                .unwrap_or_default(),
            field(&r.diagnostic)
        );
        // RFC 5322 §2.1.1: at most 998 bytes a line (found by fuzz/dsn: a long address and a
        // long remote reply made one line of both). `field` leaves ASCII only, so any byte
        // index is a char boundary; the full reply is in the delivery-status part.
        m.push_str(&line[..line.len().min(998)]);
        m.push_str("\r\n");
    }
    m.push_str("\r\n");
}

/// Part 2: machine-readable status (RFC 3464).
fn status_part(m: &mut String, input: &DsnInput<'_>, host: &str, boundary: &str) {
    let (action, status_default) = match input.kind {
        DsnKind::Failure => ("failed", "5.0.0"),
        DsnKind::Delay { .. } => ("delayed", "4.0.0"),
    };
    m.push_str(&format!(
        "--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {host}\r\n"));
    m.push_str(&format!(
        "X-Cutover-Queue-ID: {}\r\n",
        field(input.queue_id)
    ));
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc5322_date(input.arrival)
    ));
    for r in input.recipients {
        m.push_str("\r\n");
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            field(&r.final_rcpt)
        ));
        if r.final_rcpt != r.original {
            m.push_str(&format!(
                "Original-Recipient: rfc822; {}\r\n",
                field(&r.original)
            ));
        }
        m.push_str(&format!("Action: {action}\r\n"));
        m.push_str(&format!(
            "Status: {}\r\n",
            status_of(&r.diagnostic, status_default)
        ));
        if let Some(mta) = &r.remote_mta {
            let host_only = mta.rsplit_once(':').map(|(h, _)| h).unwrap_or(mta);
            m.push_str(&format!(
                "Remote-MTA: dns; {}\r\n",
                field(host_only.trim_matches(['[', ']']))
            ));
        }
        let is_smtp = r
            .diagnostic
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_digit());
        m.push_str(&format!(
            "Diagnostic-Code: {}; {}\r\n",
            if is_smtp { "smtp" } else { "x-cutover" },
            field(&r.diagnostic)
        ));
        if let Some(t) = r.last_attempt {
            m.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc5322_date(t)));
        }
        if let DsnKind::Delay { will_retry_until } = input.kind {
            m.push_str(&format!(
                "Will-Retry-Until: {}\r\n",
                rfc5322_date(will_retry_until)
            ));
        }
    }
    m.push_str("\r\n");
}

fn crlf_normalised(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 64);
    let mut prev = 0u8;
    for &c in b {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// The leg target a DSN is queued for: `bounce.via`, where `"mx"` (or unset) means delivery by
/// MX lookup of the sender's domain ([`MX_TARGET`]).
pub fn dsn_target(cfg: &Config) -> String {
    match cfg.bounce.via.as_deref() {
        None | Some("mx") => MX_TARGET.to_string(),
        Some(t) => t.to_string(),
    }
}

/// How much of the original body is read for its header block.
const HEADER_READ_LIMIT: u64 = 64 * 1024;

/// The header block of queued message `id`, for a DSN (empty when the body cannot be read:
/// the DSN then goes without it).
pub async fn original_headers(queue: &Queue, id: &QueueId) -> Vec<u8> {
    let q = queue.clone();
    let id = id.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>, QueueError> {
        let mut head = Vec::new();
        q.open_body(&id)?
            .take(HEADER_READ_LIMIT)
            .read_to_end(&mut head)?;
        Ok(header::section(&head).to_vec())
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default()
}

/// A DSN about `original` for `recipients`, ready to be inserted under `dsn_id` in the same
/// transaction as the leg update that caused it: from `<>` to the original sender on the
/// [`dsn_target`] leg, its recipient marked with [`BOUNCE_RULE`]. Pure. `None` when there is
/// nothing to send (sender `<>`, no recipients).
pub fn stage(
    dsn_id: QueueId,
    cfg: &Config,
    original: &MessageRecord,
    kind: DsnKind,
    recipients: &[DsnRecipient],
    headers: &[u8],
    now: SystemTime,
) -> Option<Staged> {
    let msg = build(&DsnInput {
        kind,
        reporting_mta: &cfg.gateway.hostname,
        queue_id: &original.id.0,
        sender: &original.envelope.mail_from,
        arrival: original.envelope.received_at,
        now,
        original_headers: headers,
        recipients,
    })?;
    Some(stage_message(
        dsn_id,
        Envelope::generated(&cfg.gateway.hostname, now),
        vec![NewLeg {
            target: dsn_target(cfg),
            rules: vec![BOUNCE_RULE.into()],
            recipients: vec![original.envelope.mail_from.clone()],
        }],
        msg,
        now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MimeHeaders;
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn rcpt(o: &str, f: &str, diag: &str) -> DsnRecipient {
        DsnRecipient {
            original: o.into(),
            final_rcpt: f.into(),
            target: "new".into(),
            remote_mta: Some("new-mx.example.net:25".into()),
            diagnostic: diag.into(),
            last_attempt: Some(t(1_790_000_100)),
        }
    }

    fn input<'a>(kind: DsnKind, sender: &'a str, rs: &'a [DsnRecipient]) -> DsnInput<'a> {
        DsnInput {
            kind,
            reporting_mta: "mx1.example.com",
            queue_id: "0V5KQ2H8M3A7C",
            sender,
            arrival: t(1_790_000_000),
            now: t(1_790_000_200),
            original_headers: b"From: alice@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nbody text\r\n",
            recipients: rs,
        }
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 <x>: user unknown", "5.0.0"), "5.1.1");
        assert_eq!(status_of("550-5.7.1 denied", "5.0.0"), "5.0.0");
        assert_eq!(status_of("554 transaction failed", "5.0.0"), "5.0.0");
        assert_eq!(status_of("451 try later", "4.0.0"), "4.0.0");
        assert_eq!(status_of("connection refused", "4.4.1"), "4.4.1");
        assert_eq!(status_of("452 4.2.2 mailbox full", "4.0.0"), "4.2.2");
    }

    #[test]
    fn never_bounces_a_bounce() {
        let rs = [rcpt(
            "bob@example.com",
            "bob@example.com",
            "550 5.1.1 unknown",
        )];
        assert!(build(&input(DsnKind::Failure, "", &rs)).is_none());
        assert!(build(&input(DsnKind::Failure, "a@example.org", &[])).is_none());
    }

    #[test]
    fn failure_dsn_is_rfc3464() {
        let rs = [
            rcpt(
                "bob@example.com",
                "bob@example-com.mail.onmicrosoft.com",
                "550 5.1.1 <bob@example-com.mail.onmicrosoft.com>: user unknown",
            ),
            rcpt(
                "carol@example.com",
                "carol@example.com",
                "554 no valid recipients",
            ),
        ];
        let msg = build(&input(DsnKind::Failure, "alice@example.org", &rs)).unwrap();
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(
            !text.contains("\n\n") && !text.replace("\r\n", "").contains('\n'),
            "CRLF only"
        );
        let parsed = mail_parser::MessageParser::default().parse(&msg).unwrap();
        let ct = parsed.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(parsed.parts.len(), 4, "root + 3 parts");
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert!(text.contains("To: <alice@example.org>\r\n"));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("Reporting-MTA: dns; mx1.example.com\r\n"));
        assert!(text.contains("Final-Recipient: rfc822; bob@example-com.mail.onmicrosoft.com\r\nOriginal-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; new-mx.example.net\r\nDiagnostic-Code: smtp; 550 5.1.1"));
        assert!(text.contains(
            "Final-Recipient: rfc822; carol@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        ));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n\r\nFrom: alice@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n"));
        assert!(!text.contains("body text"), "only the headers are returned");
        assert!(text.ends_with("--\r\n"));
    }

    #[test]
    fn delay_dsn() {
        let rs = [rcpt(
            "bob@example.com",
            "bob@example.com",
            "451 4.3.0 try again",
        )];
        let until = t(1_790_400_000);
        let msg = build(&input(
            DsnKind::Delay {
                will_retry_until: until,
            },
            "alice@example.org",
            &rs,
        ))
        .unwrap();
        let text = String::from_utf8(msg).unwrap();
        assert!(text.contains("Subject: Delayed Mail (still being retried)"));
        assert!(text.contains("Action: delayed\r\nStatus: 4.3.0\r\n"));
        assert!(text.contains(&format!("Will-Retry-Until: {}", rfc5322_date(until))));
        assert!(text.contains("THIS IS A WARNING ONLY"));
    }

    #[test]
    fn hostile_values_cannot_inject_headers() {
        let rs = [rcpt(
            "bob@example.com\r\nBcc: evil@x",
            "bob@example.com",
            "550 5.1.1 bad\r\nX-Evil: 1",
        )];
        let text =
            String::from_utf8(build(&input(DsnKind::Failure, "a@b.org\r\nBcc: x@y", &rs)).unwrap())
                .unwrap();
        assert!(!text.contains("\r\nBcc:"));
        assert!(!text.contains("\r\nX-Evil:"));
    }

    #[test]
    fn hostile_queue_id_keeps_the_boundary_7bit() {
        // Found by fuzz/dsn: the queue id went into the MIME boundary unfiltered.
        let rs = [rcpt(
            "bob@example.com",
            "bob@example.com",
            "550 5.1.1 unknown",
        )];
        let mut i = input(DsnKind::Failure, "alice@example.org", &rs);
        i.queue_id = "\0\u{1a}\u{3cf}\" x\r\n--";
        let msg = build(&i).unwrap();
        assert!(msg.is_ascii(), "DSN is 7-bit");
        let parsed = mail_parser::MessageParser::default().parse(&msg).unwrap();
        assert_eq!(parsed.parts.len(), 4, "root + 3 parts");
        assert_eq!(
            parsed.content_type().unwrap().attribute("boundary"),
            Some("x.1790000200/mx1.example.com")
        );
    }

    #[test]
    fn long_address_and_reply_keep_lines_within_998_bytes() {
        // Found by fuzz/dsn: the human-readable line joined address, target, MTA and reply.
        let long = format!("{}@example.com", "a".repeat(250));
        let reply = format!("550 5.1.1 {}", "x".repeat(2000));
        let rs = [rcpt(&long, &long, &reply)];
        let msg = build(&input(DsnKind::Failure, "alice@example.org", &rs)).unwrap();
        for line in msg.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line of {} bytes", line.len());
        }
    }
}
