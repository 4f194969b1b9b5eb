//! `[[alert]]` rules end to end (issue 12 item 5) against a real `cutover serve`: a target that
//! is down and comes back, with notices to a local HTTP sink (an axum server on loopback) and by
//! mail through cutover's own queue to an SMTP sink; `GET /api/alerts`; and `config check`
//! messages for bad rules (file:line:key). Every wait is bounded.

#[path = "support/common.rs"]
mod common;
#[path = "support/counting_sink.rs"]
mod counting_sink;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;
#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod support;

use common::free_port;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Client, Gateway};

/// A webhook receiver: answers `503` to the first `fail_first` POSTs (they are counted, not
/// kept), then `200`, keeping each JSON body.
struct HttpSink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
}

impl HttpSink {
    async fn start(fail_first: usize) -> HttpSink {
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (g, r) = (got.clone(), refused.clone());
        let hook = move |axum::Json(v): axum::Json<Value>| {
            let (g, r) = (g.clone(), r.clone());
            async move {
                let mut refused = r.lock().unwrap();
                if *refused < fail_first {
                    *refused += 1;
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap().push(v);
                axum::http::StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(hook));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        HttpSink { addr, got, refused }
    }

    fn got(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

/// Poll `f` every 100 ms until it is true; false after `limit`.
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// A gateway whose target `new` is `127.0.0.1:{down}` (nothing listens yet) and takes every
/// recipient by default; `ops@example.com` goes to `old` at `old`; alerts evaluated every
/// 300 ms; retries every second.
fn gateway(down: u16, old: SocketAddr, alerts: &str) -> Gateway {
    Gateway::start_config(|smtp, admin, state| {
        format!(
            r#"{gateway}
[targets.new]
address = "127.0.0.1:{down}"
tls = "none"
connect_timeout = "2s"
[targets.old]
address = "{old}"
tls = "none"

[routing]
default = ["new"]
[[routing.rule]]
name = "ops"
recipients = ["ops@example.com"]
deliver = ["old"]

[queue]
retry_schedule = ["1s"]

[admin]
listen = "{admin}"

[alerting]
interval = "300ms"

{alerts}
"#,
            gateway = gateway::gateway_table(smtp, state),
        )
    })
}

async fn send_one(g: &Gateway, to: &str) {
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let body = format!(
        "From: alice@example.org\r\nTo: {to}\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nhello\r\n"
    );
    let r = support::send_message(&mut c, "alice@example.org", &[to], body.as_bytes()).await;
    assert_eq!(r.code, 250, "{r:?}");
}

/// The target on port `down` comes back (a sink there); wait until the message queued for it
/// is delivered.
async fn target_comes_back(g: &Gateway, down: u16) -> counting_sink::CountingSink {
    let sink = counting_sink::CountingSink::start_on(&format!("127.0.0.1:{down}"))
        .await
        .unwrap();
    let delivered = || sink.tally.lock().unwrap().messages == 1;
    assert!(
        until(Duration::from_secs(30), delivered).await,
        "not delivered after the target came back: {}",
        g.log()
    );
    sink
}

/// `GET /api/alerts` of the gateway.
async fn api_alerts(admin: SocketAddr) -> Value {
    use cutover::http_client::{HttpClient, Request, Url};
    let client = HttpClient::new(Duration::from_secs(5)).unwrap();
    let url = Url::parse(&format!("http://{admin}/api/alerts")).unwrap();
    let r = client
        .send(
            "GET",
            &url,
            Request {
                limit: 1 << 20,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_fires_once_then_resolves_once_on_the_webhook() {
    // The first POST is refused: the notice is retried, not lost, and not doubled.
    let hook = HttpSink::start(1).await;
    let down = free_port();
    let g = gateway(
        down,
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            r#"[[alert]]
name = "new-unreachable"
when = "target_unreachable"
target = "new"
for = "2s"
webhook = "http://{}/hook"
"#,
            hook.addr
        ),
    );
    let started = Instant::now();
    send_one(&g, "carol@example.com").await;

    assert!(
        until(Duration::from_secs(30), || hook.got().len() == 1).await,
        "no firing notice: {}",
        g.log()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "fired before the 2s hold time"
    );
    let fired = &hook.got()[0];
    assert_eq!(fired["status"], "firing", "{fired}");
    assert_eq!(fired["alert"], "new-unreachable");
    let text = fired["text"].as_str().unwrap();
    assert!(
        text.starts_with("[cutover mx.test] FIRING new-unreachable: target new unreachable since"),
        "{text}"
    );
    assert_eq!(fired["details"]["target"], "new");
    assert_eq!(fired["details"]["condition"], "target_unreachable");
    assert_eq!(*hook.refused.lock().unwrap(), 1, "the refused attempt");

    // Still down over several evaluation ticks: no repeat.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.got().len(), 1, "{:?}", hook.got());

    // The target comes back; the queued message is retried and delivered.
    target_comes_back(&g, down).await;
    assert!(
        until(Duration::from_secs(15), || hook.got().len() == 2).await,
        "no resolve notice: {:?}",
        hook.got()
    );
    let resolved = &hook.got()[1];
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert!(
        resolved["text"].as_str().unwrap().starts_with(
            "[cutover mx.test] RESOLVED new-unreachable: target_unreachable no longer holds"
        ),
        "{resolved}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.got().len(), 2, "{:?}", hook.got());

    // The status page's source: newest first.
    let api = api_alerts(g.admin).await;
    let events = api["alerts"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{api}");
    assert_eq!(events[0]["status"], "resolved");
    assert_eq!(events[1]["status"], "firing");
    assert_eq!(events[1]["alert"], "new-unreachable");
    assert_eq!(events[1]["condition"], "target_unreachable");
    assert_eq!(events[1]["text"], fired["text"]);
}

/// The alert mails `fake` received, as text.
fn mails(fake: &fake_smtp::FakeSmtp) -> Vec<(String, Vec<String>, String)> {
    fake.received()
        .into_iter()
        .map(|r| {
            (
                r.mail_from,
                r.rcpts,
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_deferred_alert_mails_through_the_queue() {
    let old = fake_smtp::FakeSmtp::start(fake_smtp::Script::default()).await;
    let down = free_port();
    let g = gateway(
        down,
        old.addr,
        r#"[[alert]]
name = "stuck-new"
when = "oldest_deferred"
target = "new"
older_than = "2s"
email = "ops@example.com"
"#,
    );
    send_one(&g, "carol@example.com").await;
    assert!(
        until(Duration::from_secs(30), || mails(&old).len() == 1).await,
        "no alert mail: {}",
        g.log()
    );
    let (from, rcpts, body) = mails(&old).remove(0);
    assert_eq!(from, "", "alert mail comes from the null sender");
    assert_eq!(rcpts, ["ops@example.com"]);
    assert!(
        body.contains("From: cutover <cutover@mx.test>\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Subject: [cutover mx.test] FIRING stuck-new\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Auto-Submitted: auto-generated\r\n"),
        "{body}"
    );
    assert!(
        body.contains("FIRING stuck-new: the oldest deferred leg to new is"),
        "{body}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mails(&old).len(), 1, "no repeat while it stays firing");

    let sink = target_comes_back(&g, down).await;
    assert!(
        until(Duration::from_secs(15), || mails(&old).len() == 2).await,
        "no resolve mail: {}",
        g.log()
    );
    let (_, _, body) = mails(&old).remove(1);
    assert!(
        body.contains("Subject: [cutover mx.test] RESOLVED stuck-new\r\n"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mails(&old).len(), 2);
    assert_eq!(
        sink.tally.lock().unwrap().messages,
        1,
        "alert mails never go to the target they are about here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_rate_fires_on_a_bounce_and_resolves_when_the_window_passes() {
    let hook = HttpSink::start(0).await;
    // `new` refuses the recipient: a non-delivery DSN to the sender, via `old`.
    let new = fake_smtp::FakeSmtp::start(fake_smtp::Script {
        rcpt_replies: vec![(1, "550 5.1.1 no such user".into())],
        ..Default::default()
    })
    .await;
    let old = fake_smtp::FakeSmtp::start(fake_smtp::Script::default()).await;
    let g = gateway(
        new.addr.port(),
        old.addr,
        &format!(
            r#"[bounce]
via = "old"

[[alert]]
name = "bounces"
when = "dsn_rate"
rate = 0
per = "3s"
webhook = "http://{}/hook"
"#,
            hook.addr
        ),
    );
    send_one(&g, "carol@example.com").await;
    assert!(
        until(Duration::from_secs(30), || hook.got().len() == 1).await,
        "no firing notice: {}",
        g.log()
    );
    let fired = &hook.got()[0];
    assert_eq!(fired["status"], "firing", "{fired}");
    assert!(
        fired["text"]
            .as_str()
            .unwrap()
            .ends_with("FIRING bounces: 1 non-delivery DSNs in the last 3s (more than 0)"),
        "{fired}"
    );
    assert_eq!(old.received().len(), 1, "the DSN went out via old");
    assert!(
        until(Duration::from_secs(15), || hook.got().len() == 2).await,
        "no resolve notice once the window passed: {:?}",
        hook.got()
    );
    assert_eq!(hook.got()[1]["status"], "resolved");
}

fn check(dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["config", "check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        path.display().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &str = r#"[gateway]
hostname = "mx1.example.com"
listen = ["127.0.0.1:2525"]
state_dir = "/tmp/cutover-test-state"
accept_domains = ["example.com"]

[targets.new]
address = "127.0.0.1:2527"

[routing]
default = ["new"]
[[routing.rule]]
name = "wave-1"
recipients = ["bob@example.com"]
deliver = ["new"]
active_from = "2026-12-01T18:00:00Z"
"#;

#[test]
fn config_check_names_file_line_and_key_of_bad_alert_rules() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"{BASE}
[[alert]]
name = "a"
when = "target_unreachable"
target = "nwe"
webhook = "ftp://hooks.example.com/x"

[[alert]]
name = "b"
when = "oldest_deferred"
for = "5 fortnights"
webhook = "https://hooks.example.com/x"

[[alert]]
name = "c"
when = "dsn_rate"
rate = 5
job = "wave-1"

[[alert]]
name = "d"
when = "backfill_failed"
job = "nope"
email = "not an address"

[[alert]]
name = "e"
when = "wave_not_converged"
wave = "wave-1"
webhook = "https://hooks.example.com/x"
"#
    );
    let (code, path, err) = check(dir.path(), &text);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        format!("{path}:21: alert[0].target: unknown target \"nwe\" (known: new)"),
        format!(
            "{path}:22: alert[0].webhook: must be an http:// or https:// URL with a host (got \"ftp://hooks.example.com/x\")"
        ),
        format!("{path}:27: alert[1].for: invalid duration \"5 fortnights\""),
        format!(
            "{path}:30: alert[2]: has nowhere to send notices: set webhook = \"https://...\" and/or email = \"ADDRESS\""
        ),
        format!("{path}:34: alert[2].job: not a parameter of when = \"dsn_rate\""),
        format!("{path}:39: alert[3].job: unknown backfill job \"nope\" (known: none defined)"),
        format!(
            "{path}:40: alert[3].email: invalid address \"not an address\": write local@domain"
        ),
        format!("{path}:44: alert[4].when: \"wave_not_converged\" needs within = \"24h\""),
    ];
    for (got, want) in lines.iter().zip(&expected) {
        assert!(
            got.starts_with(want.as_str()),
            "got  {got}\nwant {want}\n{err}"
        );
    }
    assert_eq!(
        lines[expected.len()],
        format!("{path}: 8 error(s)"),
        "{err}"
    );

    // A correct rule of each kind passes (the wave without a window only warns).
    let ok = format!(
        r#"{BASE}
[[alert]]
name = "new-unreachable"
when = "target_unreachable"
target = "new"
for = "5m"
webhook = "https://hooks.example.com/T000/B000"

[[alert]]
name = "stuck"
when = "oldest_deferred"
older_than = "1h"
email = "postmaster@example.com"

[[alert]]
name = "bounces"
when = "dsn_rate"
rate = 20
per = "10m"
webhook = "http://127.0.0.1:9/hook"

[[alert]]
name = "wave-1-ready"
when = "wave_not_converged"
wave = "wave-1"
within = "24h"
email = "postmaster@example.com"

[alerting]
interval = "30s"
"#
    );
    let (code, _, err) = check(dir.path(), &ok);
    assert_eq!((code, err.as_str()), (0, ""));
}
