//! Who may use the admin API of a real `cutover serve` (loopback ports): the `admin.token_file`
//! token for changes and the ledger (re-read on SIGHUP), `Host` checks against DNS rebinding,
//! cross-site browser requests refused, the zero-setup loopback default (status page, metrics,
//! the CLI) still working, and a listener off loopback serving only `/healthz` without a token.

#[path = "support/common.rs"]
mod common;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod smtp;

use cutover::queue::model::Message;
use queueops::http_with;
use smtp::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// `(status, body)` of one request with these header lines (`"Name: value"` each).
async fn req(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let h: String = headers.iter().map(|l| format!("{l}\r\n")).collect();
    let r = http_with(addr, method, path, &h).await;
    let status = r
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {r:?}"));
    (status, queueops::body_of(&r).to_string())
}

/// One message for alice (old target; nothing listens there, so it stays queued). Its id.
async fn queue_one(g: &Gateway) -> String {
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = send_message(
        &mut c,
        "sender@example.org",
        &["alice@example.com"],
        b"Subject: admin auth\r\nMessage-ID: <auth@example.org>\r\n\r\nhello\r\n",
    )
    .await;
    queued_id(&r).unwrap_or_else(|| panic!("not queued: {r:?}"))
}

/// Whether every leg of `id` is held (read through the API, which needs no token for this).
async fn held(addr: SocketAddr, id: &str) -> bool {
    let host = format!("Host: {addr}");
    let (s, body) = req(addr, "GET", &format!("/api/queue/{id}"), &[&host]).await;
    assert_eq!(s, 200, "{body}");
    let m: Message = serde_json::from_str(&body).unwrap();
    m.record.legs.iter().all(|l| l.held)
}

async fn cli(args: &[&str], config: &Path) -> Output {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.push("-c".into());
    a.push(config.display().to_string());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin()).args(&a).output().unwrap()
    })
    .await
    .unwrap()
}

fn write_token(path: &Path, token: &str) {
    std::fs::write(path, format!("{token}\n")).unwrap();
}

/// Poll until `method path` with these headers answers 200 (bounded: a SIGHUP reload is async).
async fn until_ok(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, body) = req(addr, method, path, headers).await;
        if s == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {s} for {method} {path}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_changes_and_the_ledger() {
    let secrets = tempfile::tempdir().unwrap();
    let token_path = secrets.path().join("admin.token");
    write_token(&token_path, "first-token-0123456789");
    let mut g = Gateway::start(Opts {
        extra: format!("token_file = \"{}\"\n", token_path.display()),
        ..Opts::default()
    });
    let a = g.admin;
    let id = queue_one(&g).await;
    let host = format!("Host: {a}");
    let bearer = "Authorization: Bearer first-token-0123456789";
    let hold = format!("/api/queue/{id}/hold");

    // A change without the token, or with a wrong one: 401 with a challenge; nothing changes.
    let r = http_with(a, "POST", &hold, &format!("{host}\r\n")).await;
    assert!(r.starts_with("HTTP/1.0 401"), "{r}");
    assert!(r.contains("www-authenticate: Bearer"), "{r}");
    assert!(r.contains("needs the admin token"), "{r}");
    for wrong in [
        "Authorization: Bearer first-token-012345678",
        "Authorization: Basic first-token-0123456789",
    ] {
        let (s, body) = req(a, "POST", &hold, &[&host, wrong]).await;
        assert_eq!(s, 401, "{wrong}: {body}");
    }
    let (s, _) = req(a, "DELETE", &format!("/api/queue/{id}"), &[&host]).await;
    assert_eq!(s, 401);
    let (s, _) = req(a, "POST", "/api/queue/retry", &[&host]).await;
    assert_eq!(s, 401);
    assert!(!held(a, &id).await);

    // With the token but a foreign Host (DNS rebinding) or from another site: refused.
    let port = a.port();
    for h in [
        format!("Host: rebind.attacker.example:{port}"),
        format!("Host: localhost:{}", port + 1),
    ] {
        let (s, body) = req(a, "POST", &hold, &[&h, bearer]).await;
        assert_eq!(s, 403, "{h}: {body}");
        assert!(body.contains("not a name of this admin listener"), "{body}");
    }
    let (s, body) = req(a, "POST", &hold, &[bearer]).await;
    assert_eq!(s, 400, "no Host: {body}");
    for cross in [
        "Origin: https://evil.example",
        "Origin: null",
        "Sec-Fetch-Site: cross-site",
    ] {
        let (s, body) = req(a, "POST", &hold, &[&host, bearer, cross]).await;
        assert_eq!(s, 403, "{cross}: {body}");
        assert!(body.contains("cross-site"), "{body}");
    }
    assert!(!held(a, &id).await, "no refused request changed anything");

    // With the token and a Host naming the listener: it works.
    for h in [host.clone(), format!("Host: localhost:{port}")] {
        let (s, body) = req(a, "POST", &hold, &[&h, bearer]).await;
        assert_eq!(s, 200, "{h}: {body}");
    }
    assert!(held(a, &id).await);

    // The ledger needs the token even for a GET.
    let ledger = "/api/ledger/alice@example.com";
    let (s, _) = req(a, "GET", ledger, &[&host]).await;
    assert_eq!(s, 401);
    let (s, body) = req(a, "GET", ledger, &[&host, bearer]).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains(r#""mailbox":"alice@example.com""#), "{body}");

    // Backfill reads the ledger through the API while the gateway holds the db: with the token.
    let db = g.state_dir().join("db");
    let token = cutover::config::AdminToken::parse("first-token-0123456789").unwrap();
    let credits =
        cutover::ledger::credits_for_backfill(&db, a, Some(&token), "alice@example.com", None)
            .await;
    assert!(credits.is_ok(), "{credits:?}");
    let refused = cutover::ledger::credits_for_backfill(&db, a, None, "alice@example.com", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("401"), "{refused}");

    // Reads on loopback stay open: status page, metrics, the queue; /healthz for any Host.
    for p in ["/", "/metrics", "/api/queue"] {
        let (s, body) = req(a, "GET", p, &[&host]).await;
        assert_eq!(s, 200, "{p}: {body}");
    }
    let (s, _) = req(a, "GET", "/healthz", &["Host: whatever.example"]).await;
    assert_eq!(s, 200);

    // The CLI sends the token from the config; a config without token_file gets a clear refusal.
    let o = cli(&["queue", "release", &id], &g.config).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!held(a, &id).await);
    let bare = g.dir.path().join("no-token.toml");
    let text = std::fs::read_to_string(&g.config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("token_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text);
    std::fs::write(&bare, without).unwrap();
    let o = cli(&["queue", "hold", &id], &bare).await;
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused POST") && err.contains("(401)") && err.contains("admin.token_file"),
        "{err}"
    );
    assert!(!held(a, &id).await);

    // SIGHUP re-reads the token file: the new token works, the old one no longer does.
    write_token(&token_path, "second-token-9876543210");
    g.signal(libc::SIGHUP);
    let new_bearer = "Authorization: Bearer second-token-9876543210";
    until_ok(a, "POST", &hold, &[&host, new_bearer]).await;
    let (s, _) = req(
        a,
        "POST",
        &format!("/api/queue/{id}/release"),
        &[&host, bearer],
    )
    .await;
    assert_eq!(s, 401, "the old token is gone");
    assert!(held(a, &id).await);
    // The CLI reads the same file: it follows.
    let o = cli(&["queue", "release", &id], &g.config).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!held(a, &id).await);
    g.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_without_a_token_serves_the_cli_but_not_browsers() {
    let mut g = Gateway::start(Opts::default());
    let a = g.admin;
    let id = queue_one(&g).await;
    let host = format!("Host: {a}");
    let hold = format!("/api/queue/{id}/hold");

    // Zero setup: the status page, metrics and the queue need nothing.
    let (s, body) = req(a, "GET", "/", &[&host]).await;
    assert_eq!(s, 200);
    assert!(body.contains(&id), "{body}");
    let (s, body) = req(a, "GET", "/metrics", &[&host, "Sec-Fetch-Site: none"]).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("cutover_queue_messages"), "{body}");

    // A page the operator opens: a form post (no preflight), a fetch from another site, even a
    // same-origin browser request: none may change the queue without a token.
    for browser in [
        vec![
            "Origin: http://evil.example",
            "Content-Type: application/x-www-form-urlencoded",
        ],
        vec!["Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors"],
        vec!["Sec-Fetch-Site: same-site"],
    ] {
        let mut h = vec![host.as_str()];
        h.extend(browser.iter().copied());
        let (s, body) = req(a, "POST", &hold, &h).await;
        assert_eq!(s, 403, "{browser:?}: {body}");
        assert!(body.contains("cross-site"), "{body}");
    }
    let origin = format!("Origin: http://{a}");
    let (s, body) = req(
        a,
        "POST",
        &hold,
        &[&host, &origin, "Sec-Fetch-Site: same-origin"],
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("without the admin token"), "{body}");
    // DNS rebinding: the attacker's name in Host, for reads, the ledger and changes.
    let rebind = format!("Host: rebind.attacker.example:{}", a.port());
    for (m, p) in [
        ("GET", "/api/queue".to_string()),
        ("GET", "/".to_string()),
        ("GET", "/api/ledger/alice@example.com".to_string()),
        ("DELETE", format!("/api/queue/{id}")),
    ] {
        let (s, body) = req(a, m, &p, &[&rebind]).await;
        assert_eq!(s, 403, "{m} {p}: {body}");
    }
    assert!(!held(a, &id).await);
    assert_eq!(
        g.queue_list().as_array().map(|l| l.len()),
        Some(1),
        "the message is still there"
    );

    // The CLI (no Origin, no Sec-Fetch-*) works with no setup, and so does a plain request.
    let o = cli(&["queue", "hold", &id], &g.config).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(held(a, &id).await);
    let (s, body) = req(a, "POST", &format!("/api/queue/{id}/release"), &[&host]).await;
    assert_eq!(s, 200, "{body}");
    assert!(!held(a, &id).await);
    let (s, _) = req(a, "GET", "/api/ledger/alice@example.com", &[&host]).await;
    assert_eq!(s, 200);
    g.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_everything_but_healthz_needs_the_token() {
    let mut g = Gateway::start(Opts::default());
    let a = g.admin;
    let port = a.port();
    // Move the admin listener to every interface (reached here through 127.0.0.1).
    g.kill9();
    let text = std::fs::read_to_string(&g.config).unwrap();
    let exposed = text.replace(
        &format!("listen = \"{a}\""),
        &format!("listen = \"0.0.0.0:{port}\""),
    );
    assert_ne!(exposed, text);
    std::fs::write(&g.config, &exposed).unwrap();
    g.spawn();
    let host = format!("Host: {a}");

    // No token file: `config check` warns, and only /healthz is served.
    let o = cli(&["config", "check"], &g.config).await;
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("admin.listen: 0.0.0.0:") && err.contains("is not loopback"),
        "{err}"
    );
    for p in ["/", "/metrics", "/api/queue"] {
        let (s, body) = req(a, "GET", p, &[&host]).await;
        assert_eq!(s, 403, "{p}: {body}");
        assert!(body.contains("only /healthz is served"), "{body}");
    }
    let (s, _) = req(a, "GET", "/healthz", &[]).await;
    assert_eq!(s, 200);

    // With a token file (loaded by SIGHUP): reads need it too.
    let token_path = g.dir.path().join("admin.token");
    write_token(&token_path, "exposed-token-abcdef");
    std::fs::write(
        &g.config,
        format!("{exposed}token_file = \"admin.token\"\n"),
    )
    .unwrap();
    g.signal(libc::SIGHUP);
    let bearer = "Authorization: Bearer exposed-token-abcdef";
    until_ok(a, "GET", "/metrics", &[&host, bearer]).await;
    for p in ["/", "/metrics", "/api/queue"] {
        let (s, _) = req(a, "GET", p, &[&host]).await;
        assert_eq!(s, 401, "{p}");
        let (s, _) = req(a, "GET", p, &[&host, bearer]).await;
        assert_eq!(s, 200, "{p}");
    }
    // A name that is not this host's is still refused, token or not.
    let (s, _) = req(
        a,
        "GET",
        "/",
        &[&format!("Host: evil.example:{port}"), bearer],
    )
    .await;
    assert_eq!(s, 403);
    // The CLI reaches 0.0.0.0 through loopback and sends the token.
    let o = cli(&["queue", "list", "--json"], &g.config).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
    g.terminate();
}
