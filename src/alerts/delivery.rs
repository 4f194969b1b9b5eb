//! Sends alert notices, the IO edge of the alerts: a JSON POST to the rule's webhook (a
//! Slack-compatible `text` field plus `alert`, `status` and `details`) through THE HTTP client,
//! bounded in time and retried a few times with back-off; and/or a plain-text mail to the rule's
//! address, committed to cutover's own queue from the null sender `<>` (so nothing ever bounces
//! back into a loop) and routed like any mail: the routing rules for the address, else
//! `bounce.via`. One worker sends the notices in order, off the evaluation task: a slow webhook
//! delays only other notices, never intake or delivery; when its bounded backlog is full, new
//! notices are dropped with a log line. Never decides what to send.

use crate::bounce::field;
use crate::config::Config;
use crate::http_client::{HttpClient, Request, Url};
use crate::queue::{Envelope, NewLeg, Queue, QueueError, QueueId};
use crate::routing::Router;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// The rule recorded on an alert mail's leg when no routing rule matches its address.
pub const ALERT_RULE: &str = "alert";
/// Notices waiting for the worker at most.
pub const BACKLOG: usize = 256;
/// Time limit of one webhook request.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits before the 2nd, 3rd and 4th webhook attempts.
pub const WEBHOOK_RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
];

/// Firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One notice to send.
#[derive(Clone, Debug)]
pub struct Notice {
    pub alert: String,
    pub status: Status,
    pub text: String,
    pub details: Value,
    pub webhook: Option<Url>,
    pub email: Option<String>,
}

/// The webhook body: `{"text", "alert", "status", "details"}` (Slack reads `text`).
pub fn payload(n: &Notice) -> Value {
    json!({
        "text": n.text,
        "alert": n.alert,
        "status": n.status.as_str(),
        "details": n.details,
    })
}

/// The alert mail (CRLF line ends, 7-bit, lines under 998 bytes), from `cutover@HOST` to `to`.
pub fn email_message(hostname: &str, to: &str, n: &Notice, now: SystemTime, id: &str) -> Vec<u8> {
    let host = field(hostname);
    let word = match n.status {
        Status::Firing => "FIRING",
        Status::Resolved => "RESOLVED",
    };
    let mut m = String::new();
    for (k, v) in [
        ("From", format!("cutover <cutover@{host}>")),
        ("To", format!("<{}>", field(to))),
        (
            "Subject",
            format!("[cutover {host}] {word} {}", field(&n.alert)),
        ),
        ("Date", crate::time::rfc5322_date(now)),
        ("Message-ID", format!("<{}.alert@{host}>", field(id))),
        ("Auto-Submitted", "auto-generated".to_string()),
        (
            "X-Cutover-Alert",
            format!("{}; {}", field(&n.alert), n.status.as_str()),
        ),
        ("MIME-Version", "1.0".to_string()),
        ("Content-Type", "text/plain; charset=us-ascii".to_string()),
    ] {
        m.push_str(&format!("{k}: {v}\r\n"));
    }
    m.push_str("\r\n");
    let details = serde_json::to_string_pretty(&n.details).unwrap_or_default();
    for line in n.text.lines().chain([""]).chain(details.lines()) {
        let ascii: String = line
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        // ASCII only, so any index is a char boundary.
        let mut rest = ascii.as_str();
        loop {
            let (head, tail) = rest.split_at(rest.len().min(900));
            m.push_str(head);
            m.push_str("\r\n");
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
    }
    m.into_bytes()
}

/// The legs of an alert mail to `to`: the targets its routing rule names, else `bounce.via`.
fn legs(cfg: &Config, router: &Router, to: &str, now: SystemTime) -> Vec<NewLeg> {
    match router.route(to, now) {
        Some(route) => route
            .targets
            .into_iter()
            .map(|target| NewLeg {
                target,
                rules: vec![route.rule.clone()],
                recipients: vec![to.to_string()],
            })
            .collect(),
        None => vec![NewLeg {
            target: crate::bounce::dsn_target(cfg),
            rules: vec![ALERT_RULE.into()],
            recipients: vec![to.to_string()],
        }],
    }
}

/// Commit the alert mail for `n` to `to` to the queue (durable when this returns).
pub async fn enqueue_email(
    queue: &Queue,
    cfg: &Config,
    router: &Router,
    to: &str,
    n: &Notice,
) -> Result<QueueId, QueueError> {
    let now = SystemTime::now();
    let id = format!("{}.{}", crate::time::unix_ms(now), fastrand::u32(..));
    let msg = email_message(&cfg.gateway.hostname, to, n, now, &id);
    let mut body = queue.body_writer()?;
    body.write(&msg).await?;
    let env = Envelope::generated(&cfg.gateway.hostname, now);
    queue.commit(body, env, legs(cfg, router, to, now)).await
}

/// POST `body` to `url`: up to 1 + [`WEBHOOK_RETRIES`] attempts; a 2xx answer is success.
pub async fn post_webhook(
    client: &HttpClient,
    url: &Url,
    body: &Value,
    retries: &[Duration],
) -> Result<(), String> {
    let mut last = String::new();
    for wait in std::iter::once(Duration::ZERO).chain(retries.iter().copied()) {
        tokio::time::sleep(wait).await;
        let req = Request {
            json: Some(body),
            limit: 64 << 10,
            ..Default::default()
        };
        match client.send("POST", url, req).await {
            Ok(r) if (200..300).contains(&r.status) => return Ok(()),
            Ok(r) => last = format!("{url}: HTTP {}", r.status),
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(error = %last, "alert webhook attempt failed");
    }
    Err(last)
}

/// The sending side of the worker.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Notice>,
}

/// What the worker needs besides the notices.
pub struct Worker {
    pub queue: Queue,
    pub config: watch::Receiver<Arc<Config>>,
    pub routes: watch::Receiver<Arc<Router>>,
    /// Waits between webhook attempts ([`WEBHOOK_RETRIES`]).
    pub retries: Vec<Duration>,
}

impl Outbox {
    /// Start the worker; it ends once every [`Outbox`] is dropped and its backlog is sent.
    pub fn start(w: Worker) -> Outbox {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(run(w, rx));
        Outbox { tx }
    }

    /// Queue `n` for sending; never waits (a full backlog drops it, logged).
    pub fn send(&self, n: Notice) {
        if let Err(e) = self.tx.try_send(n) {
            tracing::error!(error = %e, "alert notice dropped: the sending backlog is full");
        }
    }
}

async fn run(w: Worker, mut rx: mpsc::Receiver<Notice>) {
    let mut client: Option<HttpClient> = None;
    while let Some(n) = rx.recv().await {
        if let Some(to) = &n.email {
            let cfg = w.config.borrow().clone();
            let router = w.routes.borrow().clone();
            match enqueue_email(&w.queue, &cfg, &router, to, &n).await {
                Ok(id) => {
                    tracing::info!(alert = %n.alert, status = n.status.as_str(), to = %to, queue_id = %id, "alert mail queued")
                }
                Err(e) => {
                    tracing::error!(alert = %n.alert, to = %to, error = %e, "alert mail not queued")
                }
            }
        }
        if let Some(url) = &n.webhook {
            if client.is_none() {
                client = HttpClient::new(WEBHOOK_TIMEOUT)
                    .map_err(|e| tracing::error!(error = %e, "alert webhook: no HTTP client"))
                    .ok();
            }
            let Some(c) = &client else { continue };
            match post_webhook(c, url, &payload(&n), &w.retries).await {
                Ok(()) => {
                    tracing::info!(alert = %n.alert, status = n.status.as_str(), "alert webhook sent")
                }
                Err(e) => {
                    tracing::error!(alert = %n.alert, error = %e, "alert webhook failed; notice lost")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(text: &str) -> Notice {
        Notice {
            alert: "new-unreachable".into(),
            status: Status::Firing,
            text: text.into(),
            details: json!({"target": "new", "reason": "connection refused"}),
            webhook: None,
            email: Some("ops@example.com".into()),
        }
    }

    #[test]
    fn payload_is_slack_compatible() {
        let p = payload(&notice("[cutover mx] FIRING new-unreachable: down"));
        assert_eq!(p["text"], "[cutover mx] FIRING new-unreachable: down");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alert"], "new-unreachable");
        assert_eq!(p["details"]["target"], "new");
    }

    #[test]
    fn mail_is_7bit_crlf_with_bounded_lines_and_no_injected_headers() {
        let long = format!("déjà {}\r\nBcc: evil@x", "x".repeat(3000));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut n = notice(&long);
        n.alert = "a\r\nBcc: evil@x".into();
        let m = email_message("mx.example.com", "ops@example.com", &n, now, "1.2");
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(m.is_ascii());
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert!(text.starts_with("From: cutover <cutover@mx.example.com>\r\nTo: <ops@example.com>\r\nSubject: [cutover mx.example.com] FIRING a  Bcc: evil@x\r\n"));
        assert!(text.contains("Auto-Submitted: auto-generated\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.contains("\r\nBcc:"));
        assert!(
            body.contains("d??j?? x") || body.contains("d?j? x"),
            "{body}"
        );
        assert!(body.contains("\"reason\": \"connection refused\""));
        assert!(text.split("\r\n").all(|l| l.len() <= 998));
    }
}
