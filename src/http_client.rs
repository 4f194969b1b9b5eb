//! The one HTTP client (reqwest, over the crate's own rustls configuration from
//! `crate::tls_client`): the CLI's admin API calls, the backfill's ledger fetch and OAuth token
//! requests, the MTA-STS policy fetch of `cutover dns check`, the alerts' webhook notices.
//! Bounded: a time limit per request and a size limit per response body. Never follows
//! redirects (a token endpoint or the admin API has no business redirecting; RFC 8461 forbids it
//! for MTA-STS) and never uses a proxy from the environment.

use std::time::Duration;

pub use reqwest::Url;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP client setup: {0}")]
    Setup(String),
    #[error("{url}: {msg}")]
    Transport { url: String, msg: String },
    #[error("{url}: no answer within {limit:?}")]
    Timeout { url: String, limit: Duration },
    #[error("{url}: response body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// A response: its status and its whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What to send.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// `Authorization: Bearer` token.
    pub bearer: Option<&'a str>,
    /// An `application/x-www-form-urlencoded` body.
    pub form: Option<&'a [(&'a str, &'a str)]>,
    /// A JSON body (`Content-Type: application/json`).
    pub json: Option<&'a serde_json::Value>,
    /// Largest response body accepted.
    pub limit: usize,
}

/// A client with one time limit per request.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    timeout: Duration,
}

impl HttpClient {
    /// A client verifying servers against the system roots; each request (connect to the last
    /// body byte) within `timeout`.
    pub fn new(timeout: Duration) -> Result<HttpClient, HttpError> {
        Self::resolving(timeout, None)
    }

    /// Like [`HttpClient::new`], but `host` connects to `addrs` (looked up by the caller, e.g.
    /// through the `[dns]` servers) instead of the system resolver's answer; the port is the
    /// URL's (443 for `https` without one).
    pub fn resolving(
        timeout: Duration,
        host: Option<(&str, &[std::net::SocketAddr])>,
    ) -> Result<HttpClient, HttpError> {
        let tls = system_roots_config()?;
        let mut builder = reqwest::Client::builder();
        if let Some((name, addrs)) = host {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        let inner = builder
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| HttpError::Setup(e.to_string()))?;
        Ok(HttpClient { inner, timeout })
    }

    /// `method url` with `req`; any status is a response.
    pub async fn send(
        &self,
        method: &str,
        url: &Url,
        req: Request<'_>,
    ) -> Result<Response, HttpError> {
        let text = url.to_string();
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::Timeout {
                    url: text.clone(),
                    limit: self.timeout,
                }
            } else {
                HttpError::Transport {
                    url: text.clone(),
                    msg: error_chain(&e),
                }
            }
        };
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| HttpError::Setup(format!("method {method:?}: {e}")))?;
        let mut b = self
            .inner
            .request(method, url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = req.bearer {
            b = b.bearer_auth(t);
        }
        if let Some(f) = req.form {
            b = b.form(f);
        }
        if let Some(j) = req.json {
            b = b.json(j);
        }
        let mut resp = b.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > req.limit {
                return Err(HttpError::TooLarge {
                    url: text,
                    limit: req.limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

/// The verifying TLS configuration, built once per process (loading the system roots reads
/// files; the backfill makes a client per mailbox).
fn system_roots_config() -> Result<rustls::ClientConfig, HttpError> {
    static CONFIG: std::sync::OnceLock<Result<rustls::ClientConfig, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| crate::tls_client::client_config(true, None).map_err(|e| e.to_string()))
        .clone()
        .map_err(HttpError::Setup)
}

/// The error and its sources, one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
