//! Who may use the admin API: an axum middleware in front of every route. It refuses DNS
//! rebinding (a `Host` that does not name this listener), cross-site browser requests (`Origin`
//! or `Sec-Fetch-Site` of another site) and requests that need the `admin.token_file` token and
//! do not carry it (`Authorization: Bearer <token>`). Decides only; the routes do the work.
//!
//! Policy, in order (`/healthz` is exempt from all of it, for load balancers and probes):
//! 1. `Host` is required and must name this listener, with its port: the bound address as
//!    `ip:port`; on a loopback listener also `localhost`, `127.0.0.1` and `[::1]`; on an
//!    unspecified one (`0.0.0.0`, `::`) `localhost` and any IP literal; and `gateway.hostname`.
//!    A rebinding page's requests carry the attacker's name, never one of these.
//! 2. A request with `Sec-Fetch-Site` other than `same-origin`/`none`, or with an `Origin` whose
//!    host:port is not the `Host`, is cross-site: refused (403).
//! 3. The token is needed for every state-changing request (any method but GET/HEAD), for the
//!    ledger (`/api/ledger/...`) and anything not listed below, and — when the listener is not
//!    loopback — for every route. Open on loopback: `GET /`, `/metrics`, `/api/queue`,
//!    `/api/queue/{id}` (the zero-setup status page and demo). A wrong token is 401 anywhere.
//! 4. Without a token file: on loopback, what needs the token is served only to non-browser
//!    clients (no `Origin`, no `Sec-Fetch-*`: the CLI, curl), so the demo and the CLI work with
//!    no setup while a page the operator opens cannot change anything; off loopback, only
//!    `/healthz` is served.
//!
//! The token and `gateway.hostname` come from the configuration in force, so a SIGHUP reload
//! that changes the token file takes effect on the next request.

use super::ApiError;
use crate::config::{AdminToken, Config};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::watch;

/// What the middleware needs: the bound address and the configuration in force.
#[derive(Clone)]
pub struct Guard {
    pub local: SocketAddr,
    pub config: watch::Receiver<Arc<Config>>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: no `Host` header.
    NoHost,
    /// 403: a `Host` that is not a name of this listener.
    ForeignHost(String),
    /// 403: a cross-site browser request.
    CrossSite(String),
    /// 401: the token is needed and missing or wrong.
    Unauthorized,
    /// 403: the token is needed and none is configured.
    NoTokenConfigured { loopback: bool },
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::ForeignHost(_) | Refusal::CrossSite(_) | Refusal::NoTokenConfigured { .. } => {
                StatusCode::FORBIDDEN
            }
        }
    }

    fn message(&self, local: SocketAddr) -> String {
        match self {
            Refusal::NoHost => "a Host header is required".into(),
            Refusal::ForeignHost(h) => format!(
                "Host {h:?} is not a name of this admin listener (DNS rebinding?); \
                 use http://{local}/"
            ),
            Refusal::CrossSite(why) => format!("cross-site request refused ({why})"),
            Refusal::Unauthorized => "this request needs the admin token: send \
                 `Authorization: Bearer <token>` with the contents of admin.token_file"
                .into(),
            Refusal::NoTokenConfigured { loopback: true } => {
                "a browser may not change the queue or read the ledger without the admin token; \
                 use the `cutover queue` CLI, or set admin.token_file and send it"
                    .into()
            }
            Refusal::NoTokenConfigured { loopback: false } => {
                "admin.listen is not loopback and admin.token_file is not set: only /healthz \
                 is served"
                    .into()
            }
        }
    }
}

/// The facts about a listener the policy needs (from the bound address and the config).
pub struct Listener<'a> {
    pub local: SocketAddr,
    pub hostname: &'a str,
    pub token: Option<&'a AdminToken>,
}

impl Listener<'_> {
    fn loopback(&self) -> bool {
        self.local.ip().is_loopback()
    }

    /// Whether `host` (a `Host` header value) names this listener.
    fn host_ok(&self, host: &str) -> bool {
        let Ok(auth) = host.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        if auth.as_str().contains('@') || auth.port_u16().unwrap_or(80) != self.local.port() {
            return false;
        }
        let name = auth.host();
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let listen = self.local.ip();
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return listen.is_unspecified()
                || ip == listen
                || (listen.is_loopback() && ip.is_loopback());
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        (name == "localhost" && (listen.is_loopback() || listen.is_unspecified()))
            || name == self.hostname.trim_end_matches('.').to_ascii_lowercase()
    }
}

/// Routes served without the token on a loopback listener (reads only).
fn open_read(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (path == "/"
            || path == "/metrics"
            || path == "/api/queue"
            || path
                .strip_prefix("/api/queue/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/')))
}

fn get_header(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// The decision for one request (pure, so it is unit-tested on its own).
pub fn decide(
    l: &Listener<'_>,
    method: &Method,
    path: &str,
    authority: Option<&str>,
    h: &HeaderMap,
) -> Result<(), Refusal> {
    if path == "/healthz" {
        return Ok(());
    }
    // 1. DNS rebinding.
    let host = get_header(h, header::HOST)
        .or(authority)
        .ok_or(Refusal::NoHost)?;
    if !l.host_ok(host) {
        return Err(Refusal::ForeignHost(host.to_string()));
    }
    // 2. Cross-site browser requests.
    let fetch_site = get_header(h, "sec-fetch-site");
    if let Some(site) = fetch_site
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Err(Refusal::CrossSite(format!("Sec-Fetch-Site: {site}")));
    }
    let origin = get_header(h, header::ORIGIN);
    if let Some(o) = origin {
        let same = o
            .parse::<axum::http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .and_then(|u| u.authority().map(|a| a.as_str().eq_ignore_ascii_case(host)))
            .unwrap_or(false);
        if !same {
            return Err(Refusal::CrossSite(format!("Origin: {o}")));
        }
    }
    // 3. The token.
    let presented = get_header(h, header::AUTHORIZATION).map(|v| {
        let v = v.trim();
        match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => "",
        }
    });
    if let (Some(token), Some(p)) = (l.token, presented)
        && !token.matches(p)
    {
        return Err(Refusal::Unauthorized);
    }
    let needs_token = !l.loopback() || !open_read(method, path);
    if !needs_token {
        return Ok(());
    }
    match l.token {
        Some(_) if presented.is_some() => Ok(()), // checked above
        Some(_) => Err(Refusal::Unauthorized),
        // 4. No token file: loopback serves non-browser clients only.
        None if l.loopback()
            && origin.is_none()
            && fetch_site.is_none()
            && get_header(h, "sec-fetch-mode").is_none() =>
        {
            Ok(())
        }
        None => Err(Refusal::NoTokenConfigured {
            loopback: l.loopback(),
        }),
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let verdict = {
        let cfg = g.config.borrow();
        let l = Listener {
            local: g.local,
            hostname: &cfg.gateway.hostname,
            token: cfg.admin.token.as_ref(),
        };
        decide(
            &l,
            req.method(),
            req.uri().path(),
            req.uri().authority().map(|a| a.as_str()),
            req.headers(),
        )
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(r) => {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), refusal = ?r,
                "admin API: request refused");
            let mut resp = (
                r.status(),
                Json(ApiError {
                    error: r.message(g.local),
                }),
            )
                .into_response();
            if r == Refusal::Unauthorized
                && let Ok(v) = "Bearer realm=\"cutover admin\"".parse()
            {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn run(
        l: &Listener<'_>,
        m: Method,
        path: &str,
        h: &[(&'static str, &str)],
    ) -> Result<(), Refusal> {
        decide(l, &m, path, None, &headers(h))
    }

    #[test]
    fn hosts() {
        let token = AdminToken::parse("s3cret").unwrap();
        let lo = Listener {
            local: "127.0.0.1:8025".parse().unwrap(),
            hostname: "MX1.example.com",
            token: None,
        };
        for ok in [
            "127.0.0.1:8025",
            "localhost:8025",
            "LOCALHOST.:8025",
            "[::1]:8025",
            "mx1.example.com:8025",
        ] {
            assert_eq!(run(&lo, Method::GET, "/", &[("host", ok)]), Ok(()), "{ok}");
        }
        for bad in [
            "attacker.example:8025",
            "127.0.0.1:8026",
            "localhost",
            "10.0.0.1:8025",
            "user@localhost:8025",
            "",
        ] {
            assert!(
                matches!(
                    run(&lo, Method::GET, "/", &[("host", bad)]),
                    Err(Refusal::ForeignHost(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(run(&lo, Method::GET, "/", &[]), Err(Refusal::NoHost));
        // /healthz is exempt from everything.
        assert_eq!(
            run(&lo, Method::GET, "/healthz", &[("host", "evil:1")]),
            Ok(())
        );
        let any = Listener {
            local: "0.0.0.0:8025".parse().unwrap(),
            hostname: "mx1.example.com",
            token: Some(&token),
        };
        let auth = ("authorization", "Bearer s3cret");
        for ok in ["192.0.2.7:8025", "localhost:8025", "mx1.example.com:8025"] {
            assert_eq!(run(&any, Method::GET, "/", &[("host", ok), auth]), Ok(()));
        }
        assert!(
            run(
                &any,
                Method::GET,
                "/",
                &[("host", "evil.example:8025"), auth]
            )
            .is_err()
        );
        let fixed = Listener {
            local: "192.0.2.7:8025".parse().unwrap(),
            ..any
        };
        assert!(
            run(
                &fixed,
                Method::GET,
                "/",
                &[("host", "192.0.2.8:8025"), auth]
            )
            .is_err()
        );
        assert!(
            run(
                &fixed,
                Method::GET,
                "/",
                &[("host", "localhost:8025"), auth]
            )
            .is_err()
        );
    }

    #[test]
    fn cross_site_and_tokens() {
        let token = AdminToken::parse("s3cret\n").unwrap();
        let open = Listener {
            local: "127.0.0.1:8025".parse().unwrap(),
            hostname: "localhost",
            token: None,
        };
        let with = Listener {
            token: Some(&token),
            ..open
        };
        let host = ("host", "127.0.0.1:8025");
        fn post(l: &Listener<'_>, extra: &[(&'static str, &str)]) -> Result<(), Refusal> {
            let mut h = vec![("host", "127.0.0.1:8025")];
            h.extend_from_slice(extra);
            run(l, Method::POST, "/api/queue/retry", &h)
        }
        // No token file, loopback: the CLI may, a browser may not.
        assert_eq!(post(&open, &[]), Ok(()));
        assert_eq!(
            post(
                &open,
                &[
                    ("origin", "http://127.0.0.1:8025"),
                    ("sec-fetch-site", "same-origin")
                ]
            ),
            Err(Refusal::NoTokenConfigured { loopback: true })
        );
        assert!(matches!(
            post(&open, &[("origin", "http://evil.example")]),
            Err(Refusal::CrossSite(_))
        ));
        assert!(matches!(
            post(&open, &[("origin", "null")]),
            Err(Refusal::CrossSite(_))
        ));
        assert!(matches!(
            post(&open, &[("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossSite(_))
        ));
        assert!(matches!(
            post(&open, &[("sec-fetch-site", "same-site")]),
            Err(Refusal::CrossSite(_))
        ));
        // With a token file: the token, and only the token.
        assert_eq!(post(&with, &[]), Err(Refusal::Unauthorized));
        assert_eq!(
            post(&with, &[("authorization", "Bearer nope")]),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            post(&with, &[("authorization", "Basic s3cret")]),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(post(&with, &[("authorization", "Bearer s3cret")]), Ok(()));
        assert_eq!(post(&with, &[("authorization", "bearer  s3cret ")]), Ok(()));
        // Same-origin browser with the token (a tool page of the operator's own): allowed.
        assert_eq!(
            post(
                &with,
                &[
                    ("authorization", "Bearer s3cret"),
                    ("origin", "http://127.0.0.1:8025")
                ]
            ),
            Ok(())
        );
        // Reads: open on loopback, except the ledger.
        for p in ["/", "/metrics", "/api/queue", "/api/queue/0V5KQ2H8M3A7C"] {
            assert_eq!(run(&with, Method::GET, p, &[host]), Ok(()), "{p}");
            assert_eq!(run(&with, Method::HEAD, p, &[host]), Ok(()), "{p}");
        }
        assert_eq!(
            run(&with, Method::GET, "/api/ledger/bob@example.com", &[host]),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            run(&with, Method::DELETE, "/api/queue/0V5KQ2H8M3A7C", &[host]),
            Err(Refusal::Unauthorized)
        );
        // Off loopback without a token file: nothing but /healthz.
        let exposed = Listener {
            local: "192.0.2.7:8025".parse().unwrap(),
            ..open
        };
        assert_eq!(
            run(&exposed, Method::GET, "/", &[("host", "192.0.2.7:8025")]),
            Err(Refusal::NoTokenConfigured { loopback: false })
        );
        assert_eq!(run(&exposed, Method::GET, "/healthz", &[]), Ok(()));
    }

    #[test]
    fn token_comparison() {
        let t = AdminToken::parse("  abc-123\r\n").unwrap();
        assert!(t.matches("abc-123"));
        assert!(!t.matches("abc-12"));
        assert!(!t.matches("abc-1234"));
        assert!(!t.matches(""));
        assert!(AdminToken::parse(" \n").is_err());
        assert!(AdminToken::parse("two words").is_err());
        assert!(AdminToken::parse("a\nb").is_err());
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
    }
}
