//! XOAUTH2 access tokens: from `token_command` (run with the user as its argument; prints a bare
//! token or JSON with `access_token` and optional `expires_in`) or from the OAuth2
//! client-credentials flow (`oauth = { token_url, client_id, client_secret_file, scope }`),
//! cached until shortly before they expire. Never talks IMAP.

use super::CMD_TIMEOUT;
use super::{BackfillError, Result};
use crate::config::{ImapEndpoint, OAuth};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
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
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_id", o.client_id.as_str()),
                ("client_secret", secret.as_str()),
            ];
            if let Some(s) = &o.scope {
                form.push(("scope", s.as_str()));
            }
            let body = post_form(&o.token_url, &form).await?;
            return parse_token(&body);
        }
        Err(BackfillError::Config(
            "xoauth2 needs token_command or oauth".into(),
        ))
    }
}

/// POST an `application/x-www-form-urlencoded` body to an http(s) URL; the response body.
async fn post_form(url: &str, form: &[(&str, &str)]) -> Result<String> {
    use crate::http_client::{HttpClient, Request, Url};
    let err = |m: String| BackfillError::Auth {
        user: String::new(),
        reply: format!("token_url {url}: {m}"),
    };
    let parsed = Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| BackfillError::Config(format!("token_url must be http(s): {url}")))?;
    let client = HttpClient::new(CMD_TIMEOUT).map_err(|e| BackfillError::Config(e.to_string()))?;
    let resp = client
        .send(
            "POST",
            &parsed,
            Request {
                form: Some(form),
                limit: 1 << 20,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| err(e.to_string()))?;
    if resp.status != 200 {
        return Err(err(format!("HTTP {}", resp.status)));
    }
    Ok(String::from_utf8_lossy(&resp.body).into_owned())
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
