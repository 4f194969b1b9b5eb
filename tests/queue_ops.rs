//! `cutover queue retry|hold|release|delete|reroute` through the real binary, on a stopped
//! gateway (store opened directly) and on a running one (admin API served in-process): the
//! same output either way; the admin API's operation routes and status codes; `/metrics` as
//! Prometheus text; the operations alongside the real delivery engine (loopback SMTP sinks).

#[path = "support/common.rs"]
mod common;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/queue.rs"]
mod support;

use cutover::outbound::stats::Stats;
use cutover::queue::Queue;
use cutover::queue::model::MessageSummary;
use cutover::queue::ops::{Deleted, LegsChanged, Rerouted};
use queueops::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use support::*;

/// The routing of `write_config`, then carol moved to `new` (wave-1).
fn write_rerouted_config(dir: &Path, state: &Path, admin: SocketAddr) -> PathBuf {
    let base = write_config(dir, state, admin);
    let text = std::fs::read_to_string(&base).unwrap().replace(
        "[[routing.rule]]\nname = \"pilot\"",
        "[[routing.rule]]\nname = \"wave-1\"\nrecipients = [\"carol@example.com\"]\ndeliver = [\"new\"]\n\n[[routing.rule]]\nname = \"pilot\"",
    );
    assert!(text.contains("wave-1"));
    let path = dir.join("rerouted.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Run the binary off the async workers.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        cutover(&a)
    })
    .await
    .unwrap()
}

fn args(cmd: &str, cfg: &Path) -> Vec<String> {
    let mut v: Vec<String> = cmd.split_whitespace().map(String::from).collect();
    v.push("-c".into());
    v.push(cfg.to_str().unwrap().into());
    v
}

/// Two messages (`legs()`: old[bob, carol], new[bob]); returns their ids.
async fn fill(state: &Path) -> (Queue, Vec<String>) {
    let q = Queue::open(state).unwrap();
    let a = commit(&q, "sender1@example.org", &body(1, 2000), legs()).await;
    let b = commit(&q, "sender2@example.org", &body(2, 200_000), legs()).await;
    (q, vec![a.0, b.0])
}

/// The operator session both scenarios run; `(command, exit code, stdout with ids replaced,
/// stderr)` per step. `cfg` routes like acceptance did; `rerouted` moves carol to `new`.
/// `before_reroute` runs before the first step that uses `rerouted` (a running gateway reloads).
async fn scenario(
    cfg: &Path,
    rerouted: &Path,
    ids: &[String],
    before_reroute: impl FnOnce(),
) -> Vec<Step> {
    let mut before_reroute = Some(before_reroute);
    let (a, b) = (&ids[0], &ids[1]);
    let steps: Vec<(String, &Path)> = vec![
        (format!("queue hold {a}"), cfg),
        ("queue list --state held --json".to_string(), cfg),
        (
            format!("queue release {} --json", a.to_ascii_lowercase()),
            cfg,
        ),
        (format!("queue hold {a} {b}"), cfg),
        ("queue retry --all".into(), cfg),
        (format!("queue reroute {a}"), cfg),
        (format!("queue reroute {a} --json"), rerouted),
        ("queue reroute --all".to_string(), rerouted),
        (format!("queue show {a}"), cfg),
        (format!("queue release {a} {b}"), cfg),
        (format!("queue retry {a}"), cfg),
        (format!("queue delete {b}"), cfg),
        (
            format!("queue delete {b} 0000000000000Z --yes --bounce"),
            cfg,
        ),
        ("queue list --json".into(), cfg),
        ("queue hold 0000000000000Z".into(), cfg),
        (format!("queue delete {a} --yes --json"), cfg),
        ("queue list".into(), cfg),
        ("queue retry".into(), cfg),
        // Malformed ids: refused as typed (exit 2), before anything is done.
        ("queue hold 0000000000000Z not-an-id".into(), cfg),
        ("queue show 0V5KQ2H8M3A7C".into(), cfg),
    ];
    let mut out = Vec::new();
    let mut dsn: Option<String> = None;
    for (cmd, c) in steps {
        if c == rerouted
            && let Some(f) = before_reroute.take()
        {
            f();
        }
        let o = run(args(&cmd, c)).await;
        let mut text = stdout(&o);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if cmd.contains("--bounce") {
            // The DSN's id differs between runs.
            let id = text
                .split("bounce ")
                .nth(1)
                .map(|s| s.trim_end_matches([')', '\n']).to_string());
            dsn = id;
        }
        if let Some(d) = &dsn {
            text = text.replace(d.as_str(), "<DSN>");
        }
        text = text.replace(a.as_str(), "<A>").replace(b.as_str(), "<B>");
        // Time stamps in show/list output differ between runs by a few ms/s.
        let raw = text.clone();
        let text = without_times(&text);
        let code = o.status.code().unwrap_or(-1);
        eprintln!("$ cutover {cmd}\n{text}{err}[exit {code}]");
        let err_kind = if err.contains("refusing to delete without --yes") {
            "refused"
        } else if err.contains("invalid queue id") {
            err.as_str()
        } else if err.contains("no such message") {
            "missing"
        } else if err.contains("required") {
            "usage"
        } else {
            ""
        };
        out.push(Step {
            cmd: cmd
                .replace(a.as_str(), "<A>")
                .replace(b.as_str(), "<B>")
                .replace(a.to_ascii_lowercase().as_str(), "<a>"),
            code,
            text: format!("{text}{err_kind}"),
            raw,
        });
    }
    out
}

/// One step: command (ids replaced), exit code, stdout without time stamps plus the kind of
/// error reported, and the whole stdout (ids replaced) for JSON decoding.
#[derive(Debug)]
struct Step {
    cmd: String,
    code: i32,
    text: String,
    raw: String,
}

impl Step {
    fn key(&self) -> (&str, i32, &str) {
        (&self.cmd, self.code, &self.text)
    }
}

/// Drop the lines carrying time stamps (they differ between runs).
fn without_times(text: &str) -> String {
    const TIMED: &[&str] = &[
        "received_at",
        "next_attempt",
        "created",
        "\"next\"",
        "arrival:",
        "attempts ",
        "secs_since_epoch",
        "nanos_since_epoch",
    ];
    let stamp = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ").unwrap();
    text.lines()
        .filter(|l| !TIMED.iter().any(|t| l.contains(t)))
        .map(|l| format!("{}\n", stamp.replace_all(l, "<TIME>")))
        .collect()
}

fn check_scenario(out: &[Step]) {
    let step = |i: usize| (&out[i].code, out[i].text.as_str());
    assert_eq!(step(0), (&0, "<A>: held (2 legs)\n"));
    let held: Vec<MessageSummary> = serde_json::from_str(&out[1].raw).unwrap();
    assert_eq!(held.len(), 1);
    let rel: Vec<LegsChanged> = serde_json::from_str(&out[2].raw).unwrap();
    assert_eq!(rel[0].legs, 2);
    assert_eq!(step(3), (&0, "<A>: held (2 legs)\n<B>: held (2 legs)\n"));
    // Everything held: retry --all has nothing to make due.
    assert_eq!(step(4), (&0, ""));
    // Same routing as at acceptance: nothing moves.
    assert_eq!(step(5), (&0, "<A>: unchanged\n"));
    let r: Vec<Rerouted> = serde_json::from_str(&out[6].raw).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].moved.len(), 1);
    assert_eq!(r[0].moved[0].recipient, "carol@example.com");
    assert_eq!(r[0].moved[0].from, vec!["old"]);
    assert_eq!(r[0].moved[0].to, vec!["new"]);
    assert_eq!(r[0].moved[0].rule, "wave-1");
    assert!(r[0].busy.is_empty());
    assert_eq!(
        step(7),
        (
            &0,
            "<B>: rerouted 1 recipient (carol@example.com: old -> new)\n"
        )
    );
    let show = step(8).1;
    assert!(
        show.contains("carol@example.com  queued  [rule wave-1]"),
        "{show}"
    );
    assert!(show.contains("new queued (held)"), "{show}");
    assert_eq!(
        step(9),
        (&0, "<A>: released (2 legs)\n<B>: released (2 legs)\n")
    );
    assert_eq!(step(10), (&0, "<A>: due now (2 legs)\n"));
    assert_eq!(step(11), (&2, "refused"));
    assert_eq!(
        step(12),
        (
            &1,
            "<B>: deleted (2 pending recipients, bounce <DSN>)\nmissing"
        )
    );
    let list: Vec<MessageSummary> = serde_json::from_str(&out[13].raw).unwrap();
    assert_eq!(list.len(), 2, "A and the DSN");
    assert_eq!(list[1].id.0, "<DSN>");
    assert_eq!(list[1].mail_from, "");
    assert_eq!(list[1].legs[0].target, "old", "bounce.via defaults to old");
    assert_eq!(list[1].legs[0].recipients[0].address, "sender2@example.org");
    assert_eq!(step(14), (&1, "missing"));
    let d: Vec<Deleted> = serde_json::from_str(&out[15].raw).unwrap();
    assert_eq!(d[0].bounce, None);
    assert_eq!(d[0].pending, vec!["bob@example.com", "carol@example.com"]);
    assert!(step(16).1.contains("<DSN>"));
    assert!(step(16).1.contains("in 1 message."));
    assert_eq!(step(17).0, &2, "retry needs IDs or --all");
    assert_eq!(
        step(18),
        (
            &2,
            "error: invalid queue id \"not-an-id\": 9 characters, a queue id has 14\n"
        )
    );
    assert_eq!(
        step(19),
        (
            &2,
            "error: invalid queue id \"0V5KQ2H8M3A7C\": 13 characters, a queue id has 14\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_offline_and_live_give_the_same_output() {
    // Offline: a stopped gateway, the store opened by the command.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(dir.path(), &state, dead_addr());
    let rerouted = write_rerouted_config(dir.path(), &state, dead_addr());
    let (q, ids) = fill(&state).await;
    q.close().unwrap();
    let offline = scenario(&cfg, &rerouted, &ids, || {}).await;
    check_scenario(&offline);

    // Live: the queue open in this process behind the admin API. The CLI's `rerouted` config
    // only names the admin address; the running gateway reroutes by ITS config, so swap it in
    // through the watch channel as a reload would.
    let dir2 = tempfile::tempdir().unwrap();
    let state2 = dir2.path().join("state");
    let (q2, ids2) = fill(&state2).await;
    let plain = write_config(dir2.path(), &state2, dead_addr());
    let admin = start_admin(q2.clone(), &plain, None).await;
    let live_dir = dir2.path().join("live");
    std::fs::create_dir_all(&live_dir).unwrap();
    let cfg2 = write_config(&live_dir, &state2, admin.addr);
    let rerouted2 = write_rerouted_config(&live_dir, &state2, admin.addr);
    let reloaded = cutover::loader::load(&rerouted2).unwrap();
    let (reload, reload_routes) = (admin.config.clone(), admin.routes.clone());
    let live = scenario(&cfg2, &rerouted2, &ids2, move || {
        reload_routes.send(reloaded.router).unwrap();
        reload.send(Arc::new(reloaded.config)).unwrap();
    })
    .await;
    check_scenario(&live);
    let keys = |v: &[Step]| {
        v.iter()
            .map(|s| s.key())
            .map(|(a, b, c)| (a.to_string(), b, c.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&live),
        keys(&offline),
        "same output through the admin API"
    );
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_operations_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_rerouted_config(dir.path(), &state, dead_addr());
    let (q, ids) = fill(&state).await;
    let stats = Arc::new(Stats::default());
    stats.dsn_failure.store(1, Ordering::Relaxed);
    let admin = start_admin(q.clone(), &cfg, Some(stats)).await;
    let addr = admin.addr;
    let (a, b) = (&ids[0], &ids[1]);

    // 404 for unknown ids on every operation, JSON error body.
    for (m, p) in [
        ("POST", "/api/queue/0000000000000Z/retry"),
        ("POST", "/api/queue/0000000000000Z/hold"),
        ("POST", "/api/queue/0000000000000Z/release"),
        ("POST", "/api/queue/0000000000000Z/reroute"),
        ("DELETE", "/api/queue/0000000000000Z"),
        ("GET", "/api/queue/0000000000000Z"),
    ] {
        let r = http(addr, m, p).await;
        assert!(r.starts_with("HTTP/1.0 404"), "{m} {p}: {r}");
        assert!(body_of(&r).contains(r#""error""#), "{r}");
    }
    // 400 for malformed ids (not "not found"), naming the id in the JSON error body.
    for (m, p, bad) in [
        ("POST", "/api/queue/nonsense/hold", "nonsense"),
        ("POST", "/api/queue/0000000000000U/retry", "0000000000000U"),
        (
            "POST",
            "/api/queue/8ZZZZZZZZZZZZZ/release",
            "8ZZZZZZZZZZZZZ",
        ),
        ("POST", "/api/queue/0V5KQ2H8M3A7C/reroute", "0V5KQ2H8M3A7C"),
        ("DELETE", "/api/queue/nonsense?bounce=true", "nonsense"),
        ("GET", "/api/queue/nonsense", "nonsense"),
    ] {
        let r = http(addr, m, p).await;
        assert!(r.starts_with("HTTP/1.0 400"), "{m} {p}: {r}");
        let e: cutover::admin::ApiError = serde_json::from_str(body_of(&r)).unwrap();
        assert!(
            e.error.starts_with(&format!("invalid queue id \"{bad}\"")),
            "{m} {p}: {r}"
        );
    }
    // Wrong method.
    let r = http(addr, "GET", "/api/queue/retry").await;
    assert!(r.starts_with("HTTP/1.0 405"), "{r}");

    // Live reroute of a message whose legs are due now (a delivery may be in flight): busy.
    let r = http(addr, "POST", &format!("/api/queue/{a}/reroute")).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let rr: Rerouted = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(rr.busy, vec!["carol@example.com"]);
    assert!(rr.moved.is_empty());
    // Held: it moves.
    let r = http(addr, "POST", &format!("/api/queue/{a}/hold")).await;
    let held: LegsChanged = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(held.legs, 2);
    let r = http(addr, "POST", "/api/queue/reroute").await;
    let all: Vec<Rerouted> = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].moved.len(), 1);
    assert_eq!(all[1].busy, vec!["carol@example.com"]);
    let r = http(addr, "POST", &format!("/api/queue/{a}/release")).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let r = http(addr, "POST", "/api/queue/retry").await;
    let all: Vec<LegsChanged> = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(all.len(), 2);

    // Metrics before the delete: 2 messages, legs by target/state, counters.
    let r = http(addr, "GET", "/metrics").await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    assert!(
        r.contains("content-type: application/openmetrics-text"),
        "{r}"
    );
    let m = parse_metrics(body_of(&r));
    eprintln!("{}", body_of(&r));
    assert_eq!(m["cutover_queue_messages"], 2.0);
    assert_eq!(m[r#"cutover_queue_legs{target="old",state="queued"}"#], 2.0);
    assert_eq!(m[r#"cutover_queue_legs{target="new",state="queued"}"#], 2.0);
    assert!(m["cutover_queue_oldest_message_age_seconds"] > 0.0);
    assert!(m["cutover_queue_bytes"] >= 202_000.0);
    assert_eq!(m[r#"cutover_dsn_total{kind="failure"}"#], 1.0);
    // The per-target counters come with the telemetry (see the live test below).
    assert!(
        !m.keys().any(|k| k.starts_with("cutover_delivery")),
        "{m:?}"
    );
    for name in [
        r#"cutover_dsn_total{kind="delay"}"#,
        "cutover_dual_leg_failures_total",
        "cutover_target_backoffs_total",
        "cutover_connections_opened_total",
    ] {
        assert_eq!(m.get(name), Some(&0.0), "{name}");
    }

    // Delete with and without a bounce. With a delivery engine in the process, a leg due now
    // may be in flight: a bounce is refused for it (409 after a bounded wait); hold it first.
    let r = http(addr, "POST", &format!("/api/queue/{b}/hold")).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let r = http(addr, "DELETE", &format!("/api/queue/{b}?bounce=true")).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let d: Deleted = serde_json::from_str(body_of(&r)).unwrap();
    let dsn = d.bounce.expect("a DSN");
    let text = String::from_utf8(q.read_body(&dsn).unwrap()).unwrap();
    assert!(text.contains("deleted by the administrator"), "{text}");
    let r = http(addr, "DELETE", &format!("/api/queue/{a}")).await;
    let d: Deleted = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(d.bounce, None);
    let ids_left: Vec<String> = q.list().unwrap().into_iter().map(|m| m.id.0).collect();
    assert_eq!(ids_left, vec![dsn.0.clone()]);
    let m = parse_metrics(body_of(&http(addr, "GET", "/metrics").await));
    assert_eq!(m["cutover_queue_messages"], 1.0);
    admin.stop().await;

    // Without a delivery engine: queue gauges only.
    let admin = start_admin(q.clone(), &cfg, None).await;
    let m = parse_metrics(body_of(&http(admin.addr, "GET", "/metrics").await));
    assert_eq!(m["cutover_queue_messages"], 1.0);
    assert!(!m.keys().any(|k| k.starts_with("cutover_delivery")));
    admin.stop().await;
}

/// A config whose targets are the given sinks: default `old`, carol on `new` (wave-1).
fn sink_config(
    dir: &Path,
    state: &Path,
    admin: SocketAddr,
    old: SocketAddr,
    new: SocketAddr,
) -> PathBuf {
    let text = format!(
        r#"[gateway]
hostname = "mx.test"
listen = ["127.0.0.1:0"]
state_dir = "{}"
accept_domains = ["example.com"]

[targets.old]
address = "{old}"
tls = "none"
[targets.new]
address = "{new}"
tls = "none"

[routing]
default = ["old"]
[[routing.rule]]
name = "wave-1"
recipients = ["carol@example.com"]
deliver = ["new"]

[queue]
retry_schedule = ["1s"]

[admin]
listen = "{admin}"
"#,
        state.display()
    );
    let path = dir.join("sinks.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// With the real delivery engine running: a held message is not delivered while others are;
/// a live reroute moves it; release delivers it to the new target only; /metrics shows the
/// engine's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_operations_with_the_delivery_engine() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let old = fake_smtp::FakeSmtp::start(fake_smtp::Script::default()).await;
    let new = fake_smtp::FakeSmtp::start(fake_smtp::Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let q = Queue::open(&state).unwrap();
    // Accepted when carol still lived on old.
    let held_id = commit(
        &q,
        "s@example.org",
        &body(1, 1500),
        vec![cutover::queue::NewLeg {
            target: "old".into(),
            rules: vec!["default".into()],
            recipients: vec!["carol@example.com".into()],
        }],
    )
    .await;
    q.hold(&held_id).await.unwrap();
    let other_id = commit(
        &q,
        "s@example.org",
        &body(2, 1500),
        vec![cutover::queue::NewLeg {
            target: "old".into(),
            rules: vec!["default".into()],
            recipients: vec!["dave@example.com".into()],
        }],
    )
    .await;

    // The engine and the admin API share the config channel, as `serve` wires them.
    let cfg_path = sink_config(dir.path(), &state, dead_addr(), old.addr, new.addr);
    let loaded = cutover::loader::load(&cfg_path).unwrap();
    let (cfg_tx, cfg_rx) = tokio::sync::watch::channel(Arc::new(loaded.config));
    let (_routes_tx, routes_rx) = tokio::sync::watch::channel(loaded.router);
    let sched =
        cutover::outbound::scheduler::Scheduler::new(q.clone(), cfg_rx.clone(), None).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(sched.clone().run(stop_rx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = listener.local_addr().unwrap();
    let (admin_stop, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(cutover::admin::serve(
        listener,
        cutover::admin::AdminState::new(q.clone(), cfg_rx, routes_rx, Some(sched.stats.clone()))
            .with_telemetry(sched.telemetry.clone()),
        async {
            let _ = admin_stop_rx.await;
        },
    ));
    let cli_dir = dir.path().join("cli");
    std::fs::create_dir_all(&cli_dir).unwrap();
    let cli_cfg = sink_config(&cli_dir, &state, admin_addr, old.addr, new.addr);

    // The unheld message goes out; the held one stays.
    let q2 = q.clone();
    wait_for("the unheld message to be delivered", || {
        q2.list().unwrap().iter().all(|m| m.id != other_id)
    })
    .await;
    assert_eq!(old.received().len(), 1);
    assert_eq!(old.received()[0].rcpts, vec!["dave@example.com"]);
    assert!(q.record(&held_id).unwrap().legs[0].held);

    // Live reroute through the binary: carol moves to new, still held.
    let o = run(args(&format!("queue reroute {held_id}"), &cli_cfg)).await;
    assert_eq!(
        stdout(&o),
        format!("{held_id}: rerouted 1 recipient (carol@example.com: old -> new)\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rec = q.record(&held_id).unwrap();
    assert_eq!(rec.legs.len(), 1);
    assert_eq!(rec.legs[0].target, "new");
    assert!(rec.legs[0].held);

    // Release: delivered to new only.
    let o = run(args(&format!("queue release {held_id}"), &cli_cfg)).await;
    assert_eq!(stdout(&o), format!("{held_id}: released (1 leg)\n"));
    let q2 = q.clone();
    wait_for("the released message to be delivered", || {
        q2.list().unwrap().is_empty()
    })
    .await;
    assert_eq!(new.received().len(), 1);
    assert_eq!(new.received()[0].rcpts, vec!["carol@example.com"]);
    assert_eq!(old.received().len(), 1, "nothing more went to old");

    // A leg's final state is counted just after the update that may remove the message: the
    // queue can be empty a moment before the counters move. Wait for them (bounded).
    let t = std::time::Instant::now();
    let m = loop {
        let m = parse_metrics(body_of(&http(admin_addr, "GET", "/metrics").await));
        let settled = ["old", "new"].iter().all(|target| {
            m.get(&format!(
                r#"cutover_queue_residence_seconds_count{{target="{target}"}}"#
            )) == Some(&1.0)
        });
        if settled || t.elapsed() > std::time::Duration::from_secs(10) {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(m["cutover_queue_messages"], 0.0);
    for target in ["old", "new"] {
        let t = format!(r#"{{target="{target}"}}"#);
        assert_eq!(m[&format!("cutover_delivery_attempts_total{t}")], 1.0);
        assert_eq!(m[&format!("cutover_delivery_delivered_total{t}")], 1.0);
        assert_eq!(
            m[&format!("cutover_delivery_latency_seconds_count{t}")],
            1.0
        );
        assert_eq!(m[&format!("cutover_queue_residence_seconds_count{t}")], 1.0);
    }
    assert!(m["cutover_connections_opened_total"] >= 2.0);

    let _ = admin_stop.send(());
    admin.await.unwrap().unwrap();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), engine).await;
    drop(cfg_tx);
}
