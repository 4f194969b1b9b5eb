//! `cutover wave list|status` with the real binary on a stopped gateway (queue store opened
//! directly) and a running one (admin API served in-process over the same queue), and
//! `GET /api/waves[/{name}]` giving the same JSON: a pilot rule, a wave scheduled in the future
//! with a `recipients_file`, queued legs for its members, and a backfill job's report before
//! (not ready: a mailbox with failures) and after (ready) convergence.

#[path = "support/common.rs"]
mod common;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/queue.rs"]
mod support;

use cutover::backfill::report::{Failure, FolderReport, JobReport, MailboxReport};
use cutover::queue::{NewLeg, Queue};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use support::*;

/// The instant every command is evaluated at (30 hours before the wave starts).
const AT: &str = "2026-11-30T12:00:00Z";
const SWITCH: &str = "2026-12-01T18:00:00Z";

/// The queue tests' config (targets old/new, default old, the `pilot` rule) plus a wave
/// scheduled at [`SWITCH`] with a `recipients_file`, and a backfill job for it.
fn wave_config(dir: &Path, state: &Path, admin: SocketAddr) -> String {
    let files = dir.parent().unwrap().display().to_string();
    std::fs::create_dir_all(dir).unwrap();
    let path = write_config(dir, state, admin);
    let extra = format!(
        r#"
[[routing.rule]]
name = "wave-1"
recipients = ["alice@example.com"]
recipients_file = "{files}/wave-1.txt"
deliver = ["new"]
active_from = "{SWITCH}"

[[backfill.job]]
name = "wave-1"
source = {{ maildir = "{files}/old/{{user}}" }}
destination = {{ maildir = "{files}/new/{{user}}" }}
mailboxes_file = "{files}/wave-1.csv"
"#
    );
    let text = std::fs::read_to_string(&path).unwrap() + &extra;
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn mailbox(user: &str, failed: usize) -> MailboxReport {
    MailboxReport {
        source_user: user.into(),
        destination_user: user.into(),
        direction: "forward".into(),
        folders: vec![FolderReport {
            folder: "INBOX".into(),
            destination: "INBOX".into(),
            source_count: 10,
            destination_count: 10 - failed as u64,
            copied: 10 - failed as u64,
            failed: (0..failed)
                .map(|i| Failure {
                    uid: i as u32 + 1,
                    reply: "NO [OVERQUOTA] quota exceeded".into(),
                })
                .collect(),
            converged: failed == 0,
            ..Default::default()
        }],
        copied: 10 - failed as u64,
        converged: failed == 0,
        ..Default::default()
    }
}

/// The job's report as the runner writes it after a pass.
fn write_report(state: &Path, carol_failures: usize) {
    let mut r = JobReport {
        job: "wave-1".into(),
        started: "2026-11-30T10:00:00Z".into(),
        finished: Some("2026-11-30T10:07:00Z".into()),
        mailboxes: vec![mailbox("alice", 0), mailbox("carol", carol_failures)],
        ..Default::default()
    };
    r.total();
    r.write(&state.join("backfill/wave-1/report.json")).unwrap();
}

/// Run the binary; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let o = cutover(args);
    (
        o.status.code().unwrap_or(-1),
        stdout(&o),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json_of(args: &[&str]) -> (i32, Value) {
    let (code, out, err) = run(args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out} {err}"));
    (code, v)
}

async fn queue_mail(state: &Path) {
    let q = Queue::open(state).unwrap();
    let legs = vec![NewLeg {
        target: "old".into(),
        rules: vec!["default".into(), "default".into(), "pilot".into()],
        recipients: vec![
            "alice@example.com".into(),
            "ops.admin@example.com".into(),
            "bob@example.com".into(),
        ],
    }];
    commit(&q, "sender@example.org", &body(1, 2000), legs).await;
    q.close().unwrap();
}

fn reasons(v: &Value) -> String {
    v["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_list_and_status_offline_live_and_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path();
    let state = files.join("state");
    std::fs::write(
        files.join("wave-1.txt"),
        "# wave 1\ncarol@example.com\n*.admin@example.com\n",
    )
    .unwrap();
    std::fs::write(files.join("wave-1.csv"), "alice\ncarol\n").unwrap();
    let cfg = wave_config(&files.join("offline"), &state, dead_addr());
    queue_mail(&state).await;
    write_report(&state, 2);

    // wave list --json
    let (code, list) = json_of(&["wave", "list", "--json", "--at", AT, "-c", &cfg]);
    assert_eq!(code, 0);
    assert_eq!(list["at"], AT);
    assert_eq!(list["next_switch"]["wave"], "wave-1");
    assert_eq!(list["next_switch"]["at"], SWITCH);
    assert_eq!(list["next_switch"]["in_secs"], 30 * 3600);
    let waves = list["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 2);
    assert_eq!(waves[0]["name"], "pilot");
    assert_eq!(waves[0]["state"], "always");
    assert_eq!(waves[0]["verdict"]["ready"], true);
    let w = &waves[1];
    assert_eq!(
        (w["state"].as_str(), w["active"].as_bool()),
        (Some("scheduled"), Some(false))
    );
    assert_eq!(w["active_from"], SWITCH);
    assert_eq!(w["addresses"], 2);
    assert_eq!(w["patterns"], 1);
    assert_eq!(w["pending"]["legs"], 1);
    assert_eq!(w["backfill"]["converged"], 1);
    assert_eq!(w["backfill"]["failed"], 1);
    assert_eq!(w["verdict"]["ready"], false);
    let change = &w["next_switch"]["changes"][0];
    assert_eq!(
        change["text"],
        "mail for 2 addresses and pattern *.admin@example.com moves from [old] to [new]"
    );

    // wave status --json: not ready (carol's mailbox has failures), exit 1.
    let (code, st) = json_of(&["wave", "status", "wave-1", "--json", "--at", AT, "-c", &cfg]);
    assert_eq!(code, 1);
    let members = st["members"].as_array().unwrap();
    assert_eq!(members[0]["address"], "alice@example.com");
    assert_eq!(members[0]["now"]["targets"], serde_json::json!(["old"]));
    assert_eq!(members[0]["after"]["targets"], serde_json::json!(["new"]));
    assert_eq!(members[0]["pending"]["by_target"]["old"], 1);
    assert_eq!(members[0]["backfill"][0]["state"], "converged");
    assert_eq!(members[1]["address"], "carol@example.com");
    assert!(
        members[1]["source"]
            .as_str()
            .unwrap()
            .ends_with("wave-1.txt:2"),
        "{st}"
    );
    assert_eq!(members[1]["backfill"][0]["state"], "failed");
    assert_eq!(members[1]["backfill"][0]["failures"], 2);
    assert_eq!(st["patterns"][0]["queued_recipients"], 1);
    let why = reasons(&st);
    assert!(
        why.contains(
            "carol@example.com (job wave-1: 2 failure(s), last pass 2026-11-30T10:07:00Z)"
        ),
        "{why}"
    );
    let notes = st["verdict"]["notes"].to_string();
    assert!(
        notes.contains("1 leg(s) for members are still pending to old"),
        "{notes}"
    );

    // Human output: the timeline and the verdict at a glance.
    let (code, text, _) = run(&["wave", "status", "wave-1", "--at", AT, "-c", &cfg]);
    assert_eq!(code, 1);
    eprintln!("--- wave status\n{text}");
    assert!(
        text.contains("window:   2026-12-01T18:00:00Z → (no end)"),
        "{text}"
    );
    assert!(
        text.contains("next switch: starts 2026-12-01T18:00:00Z (in 1d 6h)"),
        "{text}"
    );
    assert!(text.contains("✘ NOT ready to switch:"), "{text}");
    let (code, text, _) = run(&["wave", "list", "--at", AT, "-c", &cfg]);
    assert_eq!(code, 0);
    eprintln!("--- wave list\n{text}");
    assert!(
        text.contains(
            "wave-1  scheduled  2026-12-01T18:00:00Z → (no end)  deliver [new]  ✘ not ready"
        ),
        "{text}"
    );

    // Unknown wave: exit 2, naming the waves there are.
    let (code, _, err) = run(&["wave", "status", "nope", "-c", &cfg]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no wave named \"nope\"") && err.contains("pilot, wave-1"),
        "{err}"
    );
    assert_eq!(run(&["wave", "status", "pilot", "-c", &cfg]).0, 0);

    // Carol's next pass converges: ready.
    write_report(&state, 0);
    let (code, st) = json_of(&["wave", "status", "wave-1", "--json", "--at", AT, "-c", &cfg]);
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["verdict"]["ready"], true);
    assert_eq!(reasons(&st), "");

    // A running gateway: the CLI reads the queue through the admin API; /api/waves is the same.
    let q = Queue::open(&state).unwrap();
    let server = queueops::start_admin(q.clone(), Path::new(&cfg), None).await;
    let live_cfg = wave_config(&files.join("live"), &state, server.addr);
    let lc = live_cfg.clone();
    let (cli_list, cli_status) = tokio::task::spawn_blocking(move || {
        (
            json_of(&["wave", "list", "--json", "--at", AT, "-c", &lc]).1,
            json_of(&["wave", "status", "wave-1", "--json", "--at", AT, "-c", &lc]).1,
        )
    })
    .await
    .unwrap();
    assert_eq!(
        cli_status["pending"]["legs"], 1,
        "the queue came through the API"
    );
    let api = |path: &str| {
        let path = path.to_string();
        let addr = server.addr;
        async move {
            let resp = queueops::http(addr, "GET", &path).await;
            (
                resp.lines().next().unwrap_or("").to_string(),
                queueops::body_of(&resp).to_string(),
            )
        }
    };
    let (status_line, body) = api(&format!("/api/waves?at={AT}")).await;
    assert!(status_line.contains(" 200"), "{status_line} {body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), cli_list);
    let (_, body) = api(&format!("/api/waves/wave-1?at={AT}")).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), cli_status);
    let (status_line, body) = api("/api/waves/nope").await;
    assert!(
        status_line.contains(" 404") && body.contains("pilot, wave-1"),
        "{status_line} {body}"
    );
    let (status_line, _) = api("/api/waves?at=tomorrow").await;
    assert!(status_line.contains(" 400"), "{status_line}");
    server.stop().await;
}
