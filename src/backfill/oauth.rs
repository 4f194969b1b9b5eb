//! XOAUTH2 access tokens: from `token_command` (run with the user as its argument; prints a bare
//! token or JSON with `access_token` and optional `expires_in`) or from the OAuth2
//! client-credentials flow (`oauth = { token_url, client_id, client_secret_file, scope }`),
//! cached until shortly before they expire. Never talks IMAP.

use super::CMD_TIMEOUT;
use super::{BackfillError, Result};
use crate::config::{ImapEndpoint, OAuth};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Cache lifetime when the token source says nothing about expiry.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Token source + cache of one side.
pub struct Tokens {
    command: Option<PathBuf>,
    oauth: Option<(OAuth, String)>,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(serde::Deserialize)]
struct TokenJson {
    access_token: String,
    expires_in: Option<u64>,
}

fn parse_token(out: &str) -> Result<(String, Duration)> {
    let t = out.trim();
    if t.starts_with('{') {
        let j: TokenJson = serde_json::from_str(t)
            .map_err(|e| BackfillError::Config(format!("token JSON: {e}")))?;
        let life = j
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        Ok((j.access_token, life))
    } else if t.is_empty() {
        Err(BackfillError::Config(
            "token source returned nothing".into(),
        ))
    } else {
        Ok((t.to_string(), DEFAULT_LIFETIME))
    }
}

impl Tokens {
    pub fn new(ep: &ImapEndpoint, base: &Path) -> Result<Tokens> {
        let oauth = match &ep.oauth {
            Some(o) => {
                let p = crate::config::resolve_path(base, &o.client_secret_file);
                let secret = std::fs::read_to_string(&p)
                    .map_err(|e| BackfillError::Config(format!("{}: {e}", p.display())))?
                    .trim()
                    .to_string();
                Some((o.clone(), secret))
            }
            None => None,
        };
        Ok(Tokens {
            command: ep
                .token_command
                .as_ref()
                .map(|p| crate::config::resolve_path(base, p)),
            oauth,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache_key(&self, user: &str) -> String {
        if self.command.is_some() {
            user.to_string()
        } else {
            String::new()
        }
    }

    /// A valid token for `user`.
    pub async fn get(&self, user: &str) -> Result<String> {
        let key = self.cache_key(user);
        let mut cache = self.cache.lock().await;
        if let Some((t, until)) = cache.get(&key)
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let (token, life) = self.fetch(user).await?;
        // Refresh a little early (10% of the lifetime, at most a minute).
        let early = (life / 10).min(Duration::from_secs(60));
        cache.insert(key, (token.clone(), Instant::now() + life - early));
        Ok(token)
    }

    /// Drop the cached token (after AUTHENTICATIONFAILED).
    pub async fn invalidate(&self, user: &str) {
        self.cache.lock().await.remove(&self.cache_key(user));
    }

    async fn fetch(&self, user: &str) -> Result<(String, Duration)> {
        if let Some(cmd) = &self.command {
            let out = tokio::time::timeout(
                CMD_TIMEOUT,
                tokio::process::Command::new(cmd)
                    .arg(user)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .map_err(|_| BackfillError::Timeout(format!("token_command {}", cmd.display())))?
            .map_err(|e| BackfillError::Config(format!("token_command {}: {e}", cmd.display())))?;
            if !out.status.success() {
                return Err(BackfillError::Auth {
                    user: user.to_string(),
                    reply: format!(
                        "token_command exited {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            return parse_token(&String::from_utf8_lossy(&out.stdout));
        }
        if let Some((o, secret)) = &self.oauth {
            let mut form = format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                form_encode(&o.client_id),
                form_encode(secret)
            );
            if let Some(s) = &o.scope {
                form.push_str(&format!("&scope={}", form_encode(s)));
            }
            let body = tokio::time::timeout(CMD_TIMEOUT, post_form(&o.token_url, &form))
                .await
                .map_err(|_| BackfillError::Timeout(format!("token_url {}", o.token_url)))??;
            return parse_token(&body);
        }
        Err(BackfillError::Config(
            "xoauth2 needs token_command or oauth".into(),
        ))
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// POST an `application/x-www-form-urlencoded` body to an http(s) URL; the response body.
async fn post_form(url: &str, form: &str) -> Result<String> {
    let err = |m: String| BackfillError::Auth {
        user: String::new(),
        reply: format!("token_url {url}: {m}"),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(BackfillError::Config(format!(
            "token_url must be http(s): {url}"
        )));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .map_err(|_| BackfillError::Config(format!("bad port in {url}")))?,
        ),
        _ => (hostport, if tls { 443 } else { 80 }),
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut buf = Vec::new();
    if tls {
        let cfg = Arc::new(
            crate::tls_client::client_config(true, None)
                .map_err(|e| BackfillError::Config(e.to_string()))?,
        );
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| BackfillError::Config(e.to_string()))?;
        let mut s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| err(e.to_string()))?;
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = s.take(1 << 20).read_to_end(&mut buf).await;
    } else {
        let mut s = tcp;
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
        s.take(1 << 20)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| err("malformed HTTP response".into()))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.lines().next().unwrap_or_default().to_string();
    if !status.contains(" 200") {
        return Err(err(status));
    }
    Ok(String::from_utf8_lossy(&buf[split + 4..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens() {
        assert_eq!(parse_token("abc\n").unwrap().0, "abc");
        let (t, l) = parse_token(r#"{"access_token":"x","expires_in":60}"#).unwrap();
        assert_eq!((t.as_str(), l), ("x", Duration::from_secs(60)));
        assert!(parse_token("  ").is_err());
    }
}
