//! `cutover queue list|show|retry|hold|release|delete|reroute` (postqueue/postsuper
//! equivalents): work on a running gateway through its admin API (`admin.listen`), or on a
//! stopped one by opening the store directly. Both paths yield the same structs and go through
//! the same rendering, so the output is identical. Changes the queue only through the queue's
//! operations (`queue::ops`); holds no queue logic itself. Sends the `admin.token_file` token
//! (`Authorization: Bearer`) when the config names one; human output [`escape`]s the control
//! characters mail may carry (HELO, addresses, headers, replies) before they reach a terminal.

use super::ConfigArg;
use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use cutover::admin::ApiError;
use cutover::admin::ops;
use cutover::config::AdminToken;
use cutover::queue::model::{Leg, Message, MessageSummary, RcptState};
use cutover::queue::ops::{Deleted, LegsChanged, Rerouted};
use cutover::queue::{Queue, QueueError, QueueId};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// List queued messages (like `postqueue -p`), with their legs.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only messages with a leg in this state (queued, deferred, delivered, failed,
        /// partial, held).
        #[arg(long, value_name = "S", value_parser = ["queued", "deferred", "delivered", "failed", "partial", "held"])]
        state: Option<String>,
        /// Only messages with a leg for this target.
        #[arg(long, value_name = "T")]
        target: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, size, legs with recipients, the first 20 header lines.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Queue id (case-insensitive).
        #[arg(value_parser = QueueIdParser)]
        id: QueueId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make pending deliveries due now (like `postqueue -i` / `postqueue -f`).
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        select: Selection,
        /// Print JSON (one object per message).
        #[arg(long)]
        json: bool,
    },
    /// Hold messages: no delivery attempt until released (like `postsuper -h`).
    Hold {
        #[command(flatten)]
        config: ConfigArg,
        /// Queue ids (case-insensitive).
        #[arg(required = true, value_parser = QueueIdParser)]
        ids: Vec<QueueId>,
        /// Print JSON (one object per message).
        #[arg(long)]
        json: bool,
    },
    /// Release held messages (like `postsuper -H`).
    Release {
        #[command(flatten)]
        config: ConfigArg,
        /// Queue ids (case-insensitive).
        #[arg(required = true, value_parser = QueueIdParser)]
        ids: Vec<QueueId>,
        /// Print JSON (one object per message).
        #[arg(long)]
        json: bool,
    },
    /// Delete messages (like `postsuper -d`); no bounce unless --bounce.
    Delete {
        #[command(flatten)]
        config: ConfigArg,
        /// Queue ids (case-insensitive).
        #[arg(required = true, value_parser = QueueIdParser)]
        ids: Vec<QueueId>,
        /// Really delete (required).
        #[arg(long)]
        yes: bool,
        /// Send the sender a non-delivery report for the recipients not delivered yet.
        #[arg(long)]
        bounce: bool,
        /// Print JSON (one object per message).
        #[arg(long)]
        json: bool,
    },
    /// Re-apply the current routing to recipients not delivered yet (on a running gateway: its
    /// loaded routing; recipients on a leg being delivered right now are reported, not moved).
    Reroute {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        select: Selection,
        /// Print JSON (one object per message).
        #[arg(long)]
        json: bool,
    },
}

/// `ID...` or `--all`.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Queue ids (case-insensitive).
    #[arg(value_parser = QueueIdParser)]
    ids: Vec<QueueId>,
    /// Every message in the queue.
    #[arg(long)]
    all: bool,
}

/// Queue ids are parsed once, here, as clap reads them: a malformed one fails the command
/// (exit 2) before anything is done, with `error: invalid queue id "..."` naming it (escaped
/// for the terminal, unlike clap's own `invalid value` message).
#[derive(Clone)]
struct QueueIdParser;

impl clap::builder::TypedValueParser for QueueIdParser {
    type Value = QueueId;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<QueueId, clap::Error> {
        QueueId::parse(&value.to_string_lossy()).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"))
                .with_cmd(cmd)
        })
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A running gateway's admin API: where, and the token to send (`admin.token_file`).
struct Api {
    addr: SocketAddr,
    token: Option<AdminToken>,
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.addr, f)
    }
}

/// Where the answer came from (for errors only: the output is the same).
enum Source {
    Api(Api),
    Store(Queue),
    Empty,
}

pub fn run(cmd: QueueCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: QueueCmd) -> anyhow::Result<ExitCode> {
    let (config, json) = match &cmd {
        QueueCmd::List { config, json, .. }
        | QueueCmd::Show { config, json, .. }
        | QueueCmd::Retry { config, json, .. }
        | QueueCmd::Hold { config, json, .. }
        | QueueCmd::Release { config, json, .. }
        | QueueCmd::Delete { config, json, .. }
        | QueueCmd::Reroute { config, json, .. } => (config, *json),
    };
    if let QueueCmd::Delete { yes: false, .. } = &cmd {
        eprintln!(
            "cutover: refusing to delete without --yes (deleted messages are gone for good; \
             add --bounce to notify their senders)"
        );
        return Ok(ExitCode::from(2));
    }
    let loaded = match super::load_config(&config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let cfg = loaded.config;
    let router = loaded.router;
    let source = connect(
        cfg.admin.listen,
        cfg.admin.token.clone(),
        &cfg.gateway.state_dir,
    )
    .await?;
    let hold = matches!(cmd, QueueCmd::Hold { .. });
    match cmd {
        QueueCmd::List { state, target, .. } => list(&source, json, state, target).await,
        QueueCmd::Show { id, .. } => show(&source, json, id).await,
        QueueCmd::Retry { select, .. } => retry(&source, json, select).await,
        QueueCmd::Hold { ids, .. } | QueueCmd::Release { ids, .. } => {
            hold_or_release(&source, json, ids, hold).await
        }
        QueueCmd::Delete { ids, bounce, .. } => delete(&source, json, ids, bounce, &cfg).await,
        QueueCmd::Reroute { select, .. } => reroute(&source, json, select, &router).await,
    }
}

async fn list(
    source: &Source,
    json: bool,
    state: Option<String>,
    target: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut list = fetch_list(source).await?;
    list.retain(|m| {
        m.legs
            .iter()
            .any(|l| leg_matches(l, state.as_deref(), target.as_deref()))
    });
    print_view(json, &list, |l: &Vec<MessageSummary>| render_list(l))
}

/// Every message of the queue (`queue list --json` before filtering).
async fn fetch_list(source: &Source) -> anyhow::Result<Vec<MessageSummary>> {
    Ok(match source {
        Source::Api(addr) => api_get(addr, "/api/queue").await?.ok_or_else(|| {
            anyhow!("admin API at {addr} answered 404 for /api/queue (not cutover?)")
        })?,
        Source::Store(q) => q.list()?,
        Source::Empty => Vec::new(),
    })
}

/// The queue's messages from a running gateway (admin API) or a stopped one (its store), the
/// way `queue list` reads them, for other commands (`wave`).
pub(super) async fn summaries(
    cfg: &cutover::config::Config,
) -> anyhow::Result<Vec<MessageSummary>> {
    let source = connect(
        cfg.admin.listen,
        cfg.admin.token.clone(),
        &cfg.gateway.state_dir,
    )
    .await?;
    fetch_list(&source).await
}

async fn show(source: &Source, json: bool, id: QueueId) -> anyhow::Result<ExitCode> {
    let msg: Option<Message> = match source {
        Source::Api(addr) => api_get(addr, &format!("/api/queue/{id}")).await?,
        Source::Store(q) => match q.get(&id) {
            Ok(m) => Some(m),
            Err(QueueError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        Source::Empty => None,
    };
    let Some(msg) = msg else {
        eprintln!("cutover: no such message in the queue: {id}");
        return Ok(ExitCode::from(1));
    };
    print_view(json, &msg, render_show)
}

/// Print a view as pretty JSON or as text.
fn print_view<T: serde::Serialize + ?Sized>(
    json: bool,
    v: &T,
    text: impl Fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", text(v));
    }
    Ok(ExitCode::SUCCESS)
}

async fn retry(source: &Source, json: bool, select: Selection) -> anyhow::Result<ExitCode> {
    let mut out = Outcome::default();
    if select.all {
        let v: Vec<LegsChanged> = match source {
            Source::Api(addr) => api_all(addr, "/api/queue/retry").await?,
            Source::Store(q) => q.retry_all(SystemTime::now()).await?,
            Source::Empty => Vec::new(),
        };
        out.items
            .extend(v.iter().map(|r| (render_legs(r), to_json(r))));
    } else {
        for id in &select.ids {
            let r: Option<LegsChanged> = match source {
                Source::Api(addr) => api_one(addr, "POST", id, "/retry").await?,
                Source::Store(q) => found(q.retry(id, SystemTime::now()).await)?,
                Source::Empty => None,
            };
            out.push(id, r.as_ref().map(|r| (render_legs(r), to_json(r))));
        }
    }
    out.finish(json)
}

async fn hold_or_release(
    source: &Source,
    json: bool,
    ids: Vec<QueueId>,
    hold: bool,
) -> anyhow::Result<ExitCode> {
    let mut out = Outcome::default();
    for id in &ids {
        let r: Option<LegsChanged> = match (source, hold) {
            (Source::Api(addr), true) => api_one(addr, "POST", id, "/hold").await?,
            (Source::Api(addr), false) => api_one(addr, "POST", id, "/release").await?,
            (Source::Store(q), true) => found(q.hold(id).await)?,
            (Source::Store(q), false) => found(q.release(id, SystemTime::now()).await)?,
            (Source::Empty, _) => None,
        };
        out.push(id, r.as_ref().map(|r| (render_legs(r), to_json(r))));
    }
    out.finish(json)
}

async fn delete(
    source: &Source,
    json: bool,
    ids: Vec<QueueId>,
    bounce: bool,
    cfg: &cutover::config::Config,
) -> anyhow::Result<ExitCode> {
    let mut out = Outcome::default();
    for id in &ids {
        let r: Option<Deleted> = match source {
            Source::Api(addr) => {
                let q = if bounce {
                    "?bounce=true"
                } else {
                    "?bounce=false"
                };
                api_one(addr, "DELETE", id, q).await?
            }
            Source::Store(q) => {
                found(ops::delete(q, id, bounce.then_some(cfg), SystemTime::now(), false).await)?
            }
            Source::Empty => None,
        };
        out.push(id, r.as_ref().map(|r| (render_deleted(r), to_json(r))));
    }
    out.finish(json)
}

async fn reroute(
    source: &Source,
    json: bool,
    select: Selection,
    router: &cutover::routing::Router,
) -> anyhow::Result<ExitCode> {
    // Offline: no scheduler runs, so no leg is in flight (`live = false`).
    let routes = router.clone();
    let mut out = Outcome::default();
    if select.all {
        let v: Vec<Rerouted> = match source {
            Source::Api(addr) => api_all(addr, "/api/queue/reroute").await?,
            Source::Store(q) => ops::reroute_all(q, &routes, SystemTime::now(), false).await?,
            Source::Empty => Vec::new(),
        };
        out.items
            .extend(v.iter().map(|r| (render_rerouted(r), to_json(r))));
    } else {
        for id in &select.ids {
            let r: Option<Rerouted> = match source {
                Source::Api(addr) => api_one(addr, "POST", id, "/reroute").await?,
                Source::Store(q) => {
                    found(ops::reroute(q, id, &routes, SystemTime::now(), false).await)?
                }
                Source::Empty => None,
            };
            out.push(id, r.as_ref().map(|r| (render_rerouted(r), to_json(r))));
        }
    }
    out.finish(json)
}

/// Results of an action over several messages: one line (or JSON value) per message; ids not
/// in the queue are reported on stderr and make the exit code 1.
#[derive(Default)]
struct Outcome {
    items: Vec<(String, serde_json::Value)>,
    missing: usize,
}

impl Outcome {
    fn push(&mut self, id: &QueueId, item: Option<(String, serde_json::Value)>) {
        match item {
            Some(i) => self.items.push(i),
            None => {
                eprintln!("cutover: no such message in the queue: {id}");
                self.missing += 1;
            }
        }
    }

    fn finish(self, json: bool) -> anyhow::Result<ExitCode> {
        if json {
            let v: Vec<serde_json::Value> = self.items.into_iter().map(|(_, j)| j).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            for (line, _) in &self.items {
                println!("{line}");
            }
        }
        Ok(if self.missing > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `NotFound` → `None` (reported per id), other queue errors fail the command.
fn found<T>(r: Result<T, QueueError>) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(QueueError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `0V5KQ2H8M3A7C: held (2 legs)`.
pub fn render_legs(r: &LegsChanged) -> String {
    let mut s = format!("{}: {} ({})", r.id, r.action.past(), plural(r.legs, "leg"));
    if r.held > 0 {
        let _ = write!(s, ", {} held", plural(r.held, "leg"));
    }
    s
}

/// `ID: deleted (2 pending recipients, bounce DSNID)`.
pub fn render_deleted(r: &Deleted) -> String {
    let bounce = match &r.bounce {
        Some(b) => format!("bounce {b}"),
        None => "no bounce".into(),
    };
    format!(
        "{}: deleted ({}, {bounce})",
        r.id,
        plural(r.pending.len(), "pending recipient")
    )
}

/// `ID: rerouted 2 recipients (a@x: old -> new; ...)`, plus unrouted / busy ones.
pub fn render_rerouted(r: &Rerouted) -> String {
    let mut s = if r.moved.is_empty() {
        format!("{}: unchanged", r.id)
    } else {
        let moves: Vec<String> = r
            .moved
            .iter()
            .map(|m| {
                let side = |v: &[String]| {
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.join(",")
                    }
                };
                format!(
                    "{}: {} -> {}",
                    escape(&m.recipient),
                    side(&m.from),
                    side(&m.to)
                )
            })
            .collect();
        format!(
            "{}: rerouted {} ({})",
            r.id,
            plural(r.moved.len(), "recipient"),
            moves.join("; ")
        )
    };
    if !r.unrouted.is_empty() {
        let unrouted: Vec<String> = r.unrouted.iter().map(|a| escape(a)).collect();
        let _ = write!(s, "; unrouted, left in place: {}", unrouted.join(", "));
    }
    if !r.busy.is_empty() {
        let busy: Vec<String> = r.busy.iter().map(|a| escape(a)).collect();
        let _ = write!(
            s,
            "; being delivered right now, try again: {}",
            busy.join(", ")
        );
    }
    s
}

/// `--state` / `--target` filter on one leg (both must hold when both are given).
fn leg_matches(leg: &Leg, state: Option<&str>, target: Option<&str>) -> bool {
    let state_ok = match state {
        None => true,
        Some("held") => leg.held,
        Some(s) => leg.state.as_str() == s,
    };
    state_ok && target.is_none_or(|t| leg.target == t)
}

/// The admin API if something listens on `admin.listen`, else the store (stopped gateway).
async fn connect(
    admin: SocketAddr,
    token: Option<AdminToken>,
    state_dir: &Path,
) -> anyhow::Result<Source> {
    let addr = loopback_for(admin);
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
    if let Ok(Ok(_open)) = probe {
        return Ok(Source::Api(Api { addr, token }));
    }
    if !state_dir.join("db").exists() {
        return Ok(Source::Empty);
    }
    match Queue::open(state_dir) {
        Ok(q) => Ok(Source::Store(q)),
        Err(QueueError::Locked(_)) => bail!(
            "the queue in {} is in use by another process (a running `cutover serve`?), \
             but nothing answers on admin.listen = {admin}; check [admin] listen in the config",
            state_dir.display()
        ),
        Err(e) => Err(anyhow!(e).context(format!("opening the queue in {}", state_dir.display()))),
    }
}

/// An unspecified listen address (0.0.0.0 / ::) is reached through loopback.
fn loopback_for(a: SocketAddr) -> SocketAddr {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, a.port())
}

/// `method path` on the admin API, with the token when the config names one: the status and
/// the body.
async fn api_request(api: &Api, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use cutover::http_client::{HttpClient, Request, Url};
    let addr = api.addr;
    let url = Url::parse(&format!("http://{addr}{path}"))
        .with_context(|| format!("admin API URL for {path}"))?;
    let secret = api.token.as_ref().map(|t| t.secret());
    let resp = HttpClient::new(REQUEST_TIMEOUT)?
        .send(
            method,
            &url,
            Request {
                bearer: secret,
                limit: 256 << 20,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("talking to the admin API at {addr}"))?;
    Ok((resp.status, resp.body))
}

/// `method path`: JSON body decoded on 200, `Ok(None)` on 404, an error otherwise.
async fn api_call<T: serde::de::DeserializeOwned>(
    addr: &Api,
    method: &str,
    path: &str,
) -> anyhow::Result<Option<T>> {
    let (status, body) = api_request(addr, method, path).await?;
    match status {
        200 => Ok(Some(serde_json::from_slice(&body).with_context(|| {
            format!("admin API at {addr}: unexpected response to {method} {path}")
        })?)),
        // The API's own 404 (unknown id) carries `{"error": ..}`; a bare 404 is an unknown route.
        404 if serde_json::from_slice::<ApiError>(&body).is_ok() => Ok(None),
        404 => bail!("admin API at {addr} has no {method} {path} (an older cutover?)"),
        401 | 403 => bail!(
            "admin API at {addr} refused {method} {path} ({status}): {}{}",
            api_error_text(&body),
            if addr.token.is_some() {
                " (is admin.token_file in this config the one the gateway reads?)"
            } else {
                " (set admin.token_file in this config to the gateway's token file)"
            }
        ),
        s => bail!(
            "admin API at {addr} answered {s} for {method} {path}: {}",
            api_error_text(&body)
        ),
    }
}

/// The `error` of a JSON error body, else the body (escaped: it goes to the terminal).
fn api_error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => escape(&e.error),
        Err(_) => escape(String::from_utf8_lossy(body).trim()),
    }
}

async fn api_get<T: serde::de::DeserializeOwned>(
    addr: &Api,
    path: &str,
) -> anyhow::Result<Option<T>> {
    api_call(addr, "GET", path).await
}

/// An action on one message: `/api/queue/{id}{suffix}`.
async fn api_one<T: serde::de::DeserializeOwned>(
    addr: &Api,
    method: &str,
    id: &QueueId,
    suffix: &str,
) -> anyhow::Result<Option<T>> {
    api_call(addr, method, &format!("/api/queue/{id}{suffix}")).await
}

/// An action on every message (`POST`); a 404 means an older gateway without it.
async fn api_all<T: serde::de::DeserializeOwned>(addr: &Api, path: &str) -> anyhow::Result<Vec<T>> {
    api_call(addr, "POST", path)
        .await?
        .ok_or_else(|| anyhow!("admin API at {addr} does not know POST {path} (older gateway?)"))
}

/// Text from mail (HELO, addresses, headers, remote replies) made safe for a terminal: control
/// characters but TAB (C0, DEL, C1: ESC sequences, a CR that rewrites the line, ...) and
/// bidirectional overrides become visible escapes (`\x1b`, `\r`, `\u{202e}`), and `\` becomes
/// `\\` so an escape in the mail cannot pass for one of ours. Everything else is shown as is.
pub fn escape(s: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let unsafe_char = |c: char| (c.is_control() && c != '\t') || c == '\\' || bidi(c);
    if !s.chars().any(unsafe_char) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push(c),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || bidi(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn fmt_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_else(|_| "?".into())
}

fn sender(s: &str) -> String {
    if s.is_empty() { "<>".into() } else { escape(s) }
}

fn rcpt_state(s: &RcptState) -> String {
    match s {
        RcptState::Queued => "queued".into(),
        RcptState::Deferred { next, attempts, .. } => {
            format!("deferred (attempt {attempts}, next {})", fmt_time(*next))
        }
        RcptState::Delivered { .. } => "delivered".into(),
        RcptState::Failed { .. } => "failed".into(),
    }
}

fn render_leg(out: &mut String, leg: &Leg, indent: &str, with_rule: bool) {
    let _ = writeln!(
        out,
        "{indent}{} {}{}",
        leg.target,
        leg.state.as_str(),
        if leg.held { " (held)" } else { "" }
    );
    for r in &leg.recipients {
        let _ = write!(
            out,
            "{indent}    {}  {}",
            escape(&r.address),
            rcpt_state(&r.state)
        );
        if with_rule {
            let _ = write!(out, "  [rule {}]", escape(&r.rule));
        }
        if let Some(reply) = r.state.last_reply() {
            let _ = write!(out, "  ({})", escape(reply));
        }
        out.push('\n');
    }
}

/// `postqueue -p`-like table.
pub fn render_list(list: &[MessageSummary]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("Mail queue is empty\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<14} {:>10} {:<20} Sender / legs",
        "-Queue ID-", "-Size-", "-Arrival Time-"
    );
    let mut total = 0u64;
    for m in list {
        total += m.size;
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:<20} {}{}",
            m.id,
            m.size,
            fmt_time(m.received_at),
            sender(&m.mail_from),
            if m.body_missing {
                "  [BODY MISSING]"
            } else {
                ""
            }
        );
        for leg in &m.legs {
            render_leg(&mut out, leg, "    ", false);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "-- {} KiB in {} message{}.",
        total.div_ceil(1024),
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    out
}

/// `queue show ID`.
pub fn render_show(m: &Message) -> String {
    let r = &m.record;
    let e = &r.envelope;
    let mut out = String::new();
    let _ = writeln!(out, "id:       {}", r.id);
    let _ = writeln!(out, "arrival:  {}", fmt_time(e.received_at));
    let _ = writeln!(out, "size:     {} bytes", r.size);
    let _ = writeln!(out, "sender:   {}", sender(&e.mail_from));
    let _ = writeln!(out, "client:   {} [{}]", escape(&e.helo), e.client_addr);
    let mut opts = Vec::new();
    if e.smtputf8 {
        opts.push("SMTPUTF8");
    }
    if e.body_8bit {
        opts.push("BODY=8BITMIME");
    }
    if !opts.is_empty() {
        let _ = writeln!(out, "options:  {}", opts.join(" "));
    }
    let body = match &r.body {
        cutover::queue::model::BodyLocation::Inline => "inline".to_string(),
        cutover::queue::model::BodyLocation::Spool { file } => format!("spool file {file}"),
    };
    let _ = writeln!(
        out,
        "body:     {body}{}",
        if r.body_missing { " [MISSING]" } else { "" }
    );
    let _ = writeln!(out, "legs:");
    for leg in &r.legs {
        render_leg(&mut out, leg, "  ", true);
        let _ = write!(out, "      attempts {}", leg.attempts);
        if let Some(n) = leg.next_attempt {
            let _ = write!(out, ", next attempt {}", fmt_time(n));
        }
        let _ = writeln!(out, ", created {}", fmt_time(leg.created));
    }
    let _ = writeln!(out, "headers:");
    for h in &m.headers {
        let _ = writeln!(out, "  {}", escape(h));
    }
    out
}
