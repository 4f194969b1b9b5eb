//! Test fixture: a tiny OAuth2 authorization server on 127.0.0.1 (tokio, HTTP/1.1, `Connection: close`).
//!
//! Owns: `POST /token` (grant_type=client_credentials; client id/secret in the form or HTTP Basic; returns
//! `{"access_token", "token_type": "Bearer", "expires_in", "scope"}`), `POST /introspect` (RFC 7662 `token=...`,
//! the form Dovecot's oauth2 passdb sends with `introspection_mode = post`; answers `active`, `username`,
//! `client_id`, `scope`, `exp`), tokens bound to a user (`issue_token(user)`, for `token_command` scripts) or to the
//! client (client-credentials "app" tokens, valid for every mailbox like Office 365's app-only tokens: Dovecot
//! must then run with `DovecotOptions::oauth2_app_tokens`), expiry, revocation, injected token-endpoint failures,
//! request counters, and a `token_command` script (bash, /dev/tcp) that fetches a fresh user token from the test-only
//! `POST /user-token` endpoint each time it runs (so "refresh on AUTHENTICATIONFAILED" can be tested).
//! Must never: listen beyond loopback, block (every read has a timeout), or depend on another support file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Default client registered at start.
pub const CLIENT_ID: &str = "cutover";
pub const CLIENT_SECRET: &str = "cutover-secret";

#[derive(Clone, Debug)]
pub struct TokenInfo {
    /// The user the token is bound to; for client-credentials tokens, the client id.
    pub username: String,
    pub client_id: String,
    pub scope: String,
    pub expires_at: Instant,
    pub exp_epoch: u64,
    pub revoked: bool,
}

#[derive(Default)]
struct State {
    clients: HashMap<String, String>,
    tokens: HashMap<String, TokenInfo>,
    expires_in: u64,
    counter: u64,
    fail_token_requests: usize,
    token_requests: usize,
    user_token_requests: usize,
    token_failures_sent: usize,
    introspections: usize,
    /// token -> active answers given
    log: Vec<String>,
}

/// The running server; dropping it stops it.
pub struct OAuthServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl OAuthServer {
    /// Start on 127.0.0.1:0 with client `cutover` / `cutover-secret` and tokens valid for 3600 s.
    pub async fn start() -> OAuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind oauth");
        let addr = listener.local_addr().expect("oauth addr");
        let state = Arc::new(Mutex::new(State {
            expires_in: 3600,
            ..Default::default()
        }));
        state
            .lock()
            .unwrap()
            .clients
            .insert(CLIENT_ID.into(), CLIENT_SECRET.into());
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        OAuthServer { addr, state, task }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:PORT/token`
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }
    /// `http://127.0.0.1:PORT/introspect` (give it to `DovecotOptions::oauth2`).
    pub fn introspection_url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }
    pub fn add_client(&self, id: &str, secret: &str) {
        self.state
            .lock()
            .unwrap()
            .clients
            .insert(id.into(), secret.into());
    }
    /// Lifetime (`expires_in`) of tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.state.lock().unwrap().expires_in = secs;
    }
    /// Issue a token bound to `user` directly (what a `token_command` would print).
    pub fn issue_token(&self, user: &str) -> String {
        let mut s = self.state.lock().unwrap();
        issue(&mut s, user, "direct", "imap")
    }
    /// Make every token issued so far inactive (the next XOAUTH2 login with one fails: AUTHENTICATIONFAILED).
    pub fn revoke_all(&self) {
        for t in self.state.lock().unwrap().tokens.values_mut() {
            t.revoked = true;
        }
    }
    pub fn revoke(&self, token: &str) {
        if let Some(t) = self.state.lock().unwrap().tokens.get_mut(token) {
            t.revoked = true;
        }
    }
    /// Answer the next `n` token requests with HTTP 503 `{"error":"temporarily_unavailable"}`.
    pub fn fail_next_token_requests(&self, n: usize) {
        self.state.lock().unwrap().fail_token_requests = n;
    }
    /// Token endpoint requests received (failed ones included).
    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }
    /// Tokens issued (client credentials + `issue_token`).
    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens.len()
    }
    /// Introspection requests received (one per XOAUTH2 login Dovecot verified).
    pub fn introspections(&self) -> usize {
        self.state.lock().unwrap().introspections
    }
    /// Times the `token_command` script (or anything else) asked `POST /user-token` for a user token.
    pub fn user_token_requests(&self) -> usize {
        self.state.lock().unwrap().user_token_requests
    }
    /// Write an executable bash script to `dir/token-command.sh` that prints a fresh access token for the user
    /// given as its first argument (`json = false`: the bare token on one line; `json = true`: the JSON
    /// `{"access_token", "expires_in", "token_type"}`). Exits 1 with a message on stderr if the server refuses.
    pub fn token_command_script(&self, dir: &std::path::Path, json: bool) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let port = self.addr.port();
        let extract = if json {
            "printf '%s\\n' \"$json\""
        } else {
            "printf '%s\\n' \"$json\" | sed -n 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/p'"
        };
        let script = format!(
            r#"#!/bin/bash
# token_command for tests (tests/support/oauth.rs): prints an access token for user $1
set -eu
user=${{1:?usage: token-command.sh USER}}
body="user=$user"
exec 3<>/dev/tcp/127.0.0.1/{port}
printf 'POST /user-token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${{#body}}" "$body" >&3
resp=$(timeout 10 cat <&3)
case "$resp" in
  "HTTP/1.1 200"*) ;;
  *) echo "token server refused: ${{resp%%$'\r'*}}" >&2; exit 1 ;;
esac
json=${{resp#*$'\r\n\r\n'}}
{extract}
"#
        );
        let path = dir.join("token-command.sh");
        std::fs::write(&path, script).expect("write token command");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod token command");
        path
    }
    pub fn token_info(&self, token: &str) -> Option<TokenInfo> {
        self.state.lock().unwrap().tokens.get(token).cloned()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn issue(s: &mut State, username: &str, client_id: &str, scope: &str) -> String {
    s.counter += 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let token = format!("tok-{}-{:x}-{:x}", s.counter, now, std::process::id());
    s.tokens.insert(
        token.clone(),
        TokenInfo {
            username: username.to_string(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            expires_at: Instant::now() + Duration::from_secs(s.expires_in),
            exp_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                + s.expires_in,
            revoked: false,
        },
    );
    token
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > 1 << 20 {
        return None;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn respond(sock: &mut TcpStream, status: &str, body: &serde_json::Value) {
    let body = body.to_string();
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let form = parse_form(&String::from_utf8_lossy(&req.body));
    let path = req.path.split('?').next().unwrap_or("");
    let (status, body) = match (req.method.as_str(), path) {
        ("POST", "/token") => token_endpoint(&req, &form, &state),
        ("POST", "/user-token") => {
            let mut s = state.lock().unwrap();
            s.user_token_requests += 1;
            match form.get("user").filter(|u| !u.is_empty()) {
                Some(user) => {
                    let token = issue(&mut s, user, "token-command", "imap");
                    let expires_in = s.expires_in;
                    (
                        "200 OK",
                        serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}),
                    )
                }
                None => (
                    "400 Bad Request",
                    serde_json::json!({"error": "invalid_request"}),
                ),
            }
        }
        ("POST", "/introspect") | ("GET", "/introspect") => {
            let token = form.get("token").cloned().or_else(|| {
                req.header("authorization")
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::to_string)
            });
            introspect(token.as_deref().unwrap_or(""), &state)
        }
        _ => ("404 Not Found", serde_json::json!({"error": "not_found"})),
    };
    respond(&mut sock, status, &body).await;
}

fn token_endpoint(
    req: &Request,
    form: &HashMap<String, String>,
    state: &Arc<Mutex<State>>,
) -> (&'static str, serde_json::Value) {
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    if s.fail_token_requests > 0 {
        s.fail_token_requests -= 1;
        s.token_failures_sent += 1;
        return (
            "503 Service Unavailable",
            serde_json::json!({"error": "temporarily_unavailable"}),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            "400 Bad Request",
            serde_json::json!({"error": "unsupported_grant_type"}),
        );
    }
    // client authentication: HTTP Basic or form fields
    let (id, secret) = match req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| {
            d.split_once(':')
                .map(|(a, b)| (percent_decode(a), percent_decode(b)))
        }) {
        Some(pair) => pair,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if s.clients.get(&id) != Some(&secret) || id.is_empty() {
        return (
            "401 Unauthorized",
            serde_json::json!({"error": "invalid_client"}),
        );
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    let token = issue(&mut s, &id.clone(), &id, &scope);
    let expires_in = s.expires_in;
    (
        "200 OK",
        serde_json::json!({
            "access_token": token, "token_type": "Bearer", "expires_in": expires_in, "scope": scope,
        }),
    )
}

fn introspect(token: &str, state: &Arc<Mutex<State>>) -> (&'static str, serde_json::Value) {
    let mut s = state.lock().unwrap();
    s.introspections += 1;
    let body = match s.tokens.get(token) {
        Some(t) => {
            let active = !t.revoked && Instant::now() < t.expires_at;
            serde_json::json!({
                "active": if active { "true" } else { "false" },
                "username": t.username, "client_id": t.client_id, "scope": t.scope,
                "exp": t.exp_epoch, "token_type": "Bearer",
            })
        }
        // unknown token: inactive, and a username that matches nobody
        None => serde_json::json!({"active": "false", "username": "-invalid-token-"}),
    };
    s.log.push(format!("{token} -> {body}"));
    ("200 OK", body)
}

/// `application/x-www-form-urlencoded` -> map.
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fetch a client-credentials token from `token_url` (a plain HTTP client for tests).
pub async fn client_credentials(
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    scope: &str,
) -> Result<serde_json::Value, String> {
    let rest = token_url
        .strip_prefix("http://")
        .ok_or("only http:// URLs")?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(hostport))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let body = format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}&scope={}",
        scope.replace(' ', "+")
    );
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut resp))
        .await
        .map_err(|_| "read timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("bad HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    serde_json::from_str(body).map_err(|e| e.to_string())
}
