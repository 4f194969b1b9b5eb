//! Fleet mode (`[ledger] url`) with the real components: a private PostgreSQL (initdb +
//! pg_ctl, tests/support/postgres.rs), two `cutover serve` gateways, Dovecot as the old and
//! the new server (mail reaches them through an SMTP-to-dovecot-lda bridge, as an MTA in
//! front of Dovecot would deliver it), and `cutover backfill worker` processes.
//!
//! - Two gateways each take half of the mail, with dual delivery for a pilot user; three
//!   workers then copy the old Dovecot to the new one: exact, and no message either gateway
//!   dual-delivered is copied again (even one the user filed into another folder).
//! - kill -9 of a worker in the middle of a mailbox: another worker takes the mailbox over
//!   once the lease expires and finishes it: exact, no duplicates.
//! - PostgreSQL stopped while mail flows: deliveries are not delayed, the records wait in the
//!   outbox (which survives a kill -9 of the gateway) and are replayed; a backfill does not
//!   trust the ledger while a gateway's outbox is not drained.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/gateway.rs"]
mod gateway_conf;
#[path = "support/imap_fault.rs"]
mod imap_fault;
#[path = "support/imapcheck.rs"]
mod imapcheck;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod support;

use backfill::Job;
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imap_fault::{Action, FaultProxy};
use imapcheck::{FolderMap, compare, snapshot};
use postgres::Postgres;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Client, Gateway};

const LDA: &str = "/usr/lib/dovecot/dovecot-lda";

/// An SMTP server that hands every message to `dovecot-lda` for each recipient's INBOX (the
/// local part is the Dovecot user): what an MTA in front of Dovecot does.
#[derive(Clone)]
struct LdaBridge {
    conf: PathBuf,
    rcpts: Vec<String>,
    buf: Vec<u8>,
}

impl mailin_embedded::Handler for LdaBridge {
    fn data_start(
        &mut self,
        _d: &str,
        _f: &str,
        _8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.rcpts = to.to_vec();
        self.buf.clear();
        mailin_embedded::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> mailin_embedded::Response {
        for r in &self.rcpts {
            let user = r.split('@').next().unwrap_or(r);
            let lf = String::from_utf8_lossy(&self.buf).replace("\r\n", "\n");
            let mut child = match Command::new(LDA)
                .arg("-c")
                .arg(&self.conf)
                .args(["-d", user, "-m", "INBOX", "-f", "sender@example.net"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(_) => return mailin_embedded::response::INTERNAL_ERROR,
            };
            if let Some(mut stdin) = child.stdin.take() {
                let _ = std::io::Write::write_all(&mut stdin, lf.as_bytes());
            }
            if !child.wait().is_ok_and(|s| s.success()) {
                return mailin_embedded::response::INTERNAL_ERROR;
            }
        }
        mailin_embedded::response::OK
    }
}

/// Start an [`LdaBridge`] in front of `d`; its address.
fn bridge(d: &Dovecot, users: &[&str]) -> SocketAddr {
    for u in users {
        let _ = d.maildir(u);
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut server = mailin_embedded::Server::new(LdaBridge {
        conf: d.conf_path(),
        rcpts: Vec::new(),
        buf: Vec::new(),
    });
    server
        .with_name("bridge.test")
        .with_num_threads(4)
        .with_tcp_listener(l);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    addr
}

/// A gateway of the fleet: `old`/`new` targets, `carol` dual-delivered (the pilot), everyone
/// else to old; the shared ledger at `db`, as instance `name`; also knows the backfill job `t`
/// (the workers' job: its pass report is mirrored for the status page).
fn gateway(name: &str, db: &Postgres, old: SocketAddr, new: SocketAddr) -> Gateway {
    let mut g = Gateway::configure(|smtp, admin, state| {
        let dir = state.parent().unwrap();
        std::fs::write(dir.join("mailboxes.csv"), "carol@example.com\n").unwrap();
        std::fs::write(dir.join("imap.pass"), "secret\n").unwrap();
        format!(
            r#"{gateway}
[targets.old]
address = "{old}"
tls = "none"
[targets.new]
address = "{new}"
tls = "none"

[[routing.rule]]
name = "pilot"
recipients = ["carol@example.com"]
deliver = ["old", "new"]
[[routing.rule]]
name = "domain"
recipients = ["@example.com"]
deliver = ["old"]

[admin]
listen = "{admin}"

[ledger]
url = "{url}"
flush_interval = "200ms"

[[backfill.job]]
name = "t"
source = {{ host = "127.0.0.1", port = 1, tls = "none", auth = "plain", password_file = "imap.pass" }}
destination = {{ host = "127.0.0.1", port = 1, tls = "none", auth = "plain", password_file = "imap.pass" }}
mailboxes_file = "mailboxes.csv"
"#,
            gateway = gateway_conf::gateway_table(smtp, state),
            url = db.url(),
        )
    });
    g.set_env("CUTOVER_INSTANCE", name);
    g.spawn();
    g
}

fn message(id: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.net>\r\nTo: {to}\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}@example.net>\r\nSubject: {id}\r\n\r\nBody of {id}.\r\n"
    )
    .into_bytes()
}

async fn send(addr: SocketAddr, to: &str, id: &str) {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = support::send_message(&mut c, "sender@example.net", &[to], &message(id, to)).await;
    assert_eq!(r.code, 250, "{id}: {r:?}");
    let _ = c.cmd("QUIT").await;
}

/// Messages in `user`'s `folder` on `d`.
async fn count(d: &Dovecot, user: &str, folder: &str) -> u32 {
    let mut c = d.login(user).await;
    let n = c.examine(&d.wire_name(folder)).await.exists;
    c.logout().await;
    n
}

/// Wait (at most 60 s) until `user`'s INBOX on `d` holds `n` messages.
async fn until_count(d: &Dovecot, user: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = count(d, user, "INBOX").await;
        if got >= n {
            assert_eq!(got, n, "{user}: more messages than sent");
            return;
        }
        assert!(Instant::now() < deadline, "{user}: {got} of {n} delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (at most 30 s) until `sql` prints `want` (once a gateway created the schema).
fn until_sql(db: &Postgres, sql: &str, want: &str) {
    until_schema(db);
    until(db, sql, want);
}

/// Wait (at most 30 s) until the schema exists (a gateway's first shipping round).
fn until_schema(db: &Postgres) {
    until(db, "SELECT to_regclass('public.gateways') IS NOT NULL", "t");
}

fn until(db: &Postgres, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = db.psql(sql);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Dovecot for the fleet tests: users log in by address (`carol@example.com` is Dovecot's
/// `carol`), the form in which the gateways record deliveries in the ledger.
fn dovecot(opts: DovecotOptions) -> Dovecot {
    Dovecot::start(opts.extra_conf("auth_username_format = %Ln"))
}

/// A job from `old` to `new` over `users` (logging in as `<user>@example.com`, passwords
/// `pw-<user>`), with the shared ledger, a 3 s lease and a 3 s drain wait.
fn fleet_job(old: SocketAddr, new: SocketAddr, db: &Postgres, users: &[&str], extra: &str) -> Job {
    let list: String = users.iter().map(|u| format!("{u}@example.com\n")).collect();
    let job = Job::new(
        &side(old),
        &side(new),
        &list,
        &format!("ledger_target = \"new\"\n{extra}"),
        &format!(
            "[ledger]\nurl = \"{}\"\nlease_ttl = \"3s\"\ndrain_wait = \"3s\"\n",
            db.url()
        ),
    );
    let lines: String = users
        .iter()
        .map(|u| format!("{u}@example.com,pw-{u}\n"))
        .collect();
    std::fs::write(job.config().with_file_name("passwords.csv"), lines).unwrap();
    job
}

/// A job side at `a`, passwords from the job's `passwords.csv`.
fn side(a: SocketAddr) -> String {
    format!(
        r#"host = "127.0.0.1", port = {}, tls = "none", auth = "plain", passwords_file = "passwords.csv""#,
        a.port()
    )
}

fn worker_json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "worker output: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Message-ID → count, over every folder of `user`'s mailbox on `d`.
async fn ids(d: &Dovecot, user: &str) -> BTreeMap<String, usize> {
    let s = snapshot(d.addr(), user, &d.password(user)).await.unwrap();
    let mut out = BTreeMap::new();
    for f in s.folders.values() {
        for m in &f.messages {
            *out.entry(m.message_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_then_three_workers_copy_exactly_without_the_dual_delivered() {
    let Some(db) = Postgres::start() else { return };
    let old = dovecot(DovecotOptions::old());
    let new = dovecot(DovecotOptions::new());
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let (to_old, to_new) = (bridge(&old, &users), bridge(&new, &users));
    let mut a = gateway("gw-a", &db, to_old, to_new);
    let mut b = gateway("gw-b", &db, to_old, to_new);

    // Mail through both gateways: half each; carol is the dual-delivered pilot.
    for i in 0..8 {
        let gw = if i % 2 == 0 { a.smtp } else { b.smtp };
        send(gw, "carol@example.com", &format!("live-carol-{i}")).await;
        send(gw, "alice@example.com", &format!("live-alice-{i}")).await;
    }
    until_count(&old, "carol", 8).await;
    until_count(&new, "carol", 8).await;
    until_count(&old, "alice", 8).await;
    // Both gateways' records reach the shared ledger.
    until_sql(
        &db,
        "SELECT count(DISTINCT gateway) || ' ' || count(*) FROM ledger WHERE target = 'new'",
        "2 8",
    );

    // The gateways stop cleanly (SIGTERM): each ships its last records and says so.
    for g in [&mut a, &mut b] {
        assert!(g.terminate().success(), "{}", g.log());
    }
    assert_eq!(
        db.psql("SELECT string_agg(instance || ' ' || pending || ' ' || stopped, ',' ORDER BY instance) FROM gateways"),
        "gw-a 0 true,gw-b 0 true"
    );

    // History on the old server, and carol files 3 dual-delivered messages into Archive.
    for (n, u) in users.iter().enumerate() {
        Corpus::generate(
            &CorpusOptions::new(u, 40 + 20 * n)
                .big_attachment(None)
                .max_size(8 * 1024)
                .folders(&["INBOX", "Archive", "Sent"]),
        )
        .write_maildir(&old.maildir(u), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    }
    {
        let mut c = old.login("carol").await;
        c.create_if_missing(&old.wire_name("Archive")).await;
        c.select("INBOX").await;
        let moved: Vec<u32> = c
            .session
            .uid_search("OR SUBJECT live-carol-1 OR SUBJECT live-carol-2 SUBJECT live-carol-3")
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(moved.len(), 3, "{moved:?}");
        let set: Vec<String> = moved.iter().map(u32::to_string).collect();
        c.session
            .uid_mv(set.join(","), old.wire_name("Archive"))
            .await
            .unwrap();
        c.logout().await;
    }

    // Three workers, started together; PostgreSQL's transaction count measures their load.
    let xacts = || -> i64 {
        db.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'cutover'")
            .parse()
            .unwrap_or(0)
    };
    let before = xacts();
    let job = fleet_job(old.addr(), new.addr(), &db, &users, "concurrency = 2");
    let workers: Vec<std::process::Child> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| {
            job.worker_cmd(w)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<std::process::Output> = tokio::task::block_in_place(|| {
        workers
            .into_iter()
            .map(|w| w.wait_with_output().unwrap())
            .collect()
    });
    std::thread::sleep(Duration::from_millis(1500)); // statistics are flushed about every second
    eprintln!(
        "PostgreSQL: {} transactions for {} mailboxes with 3 workers",
        xacts() - before,
        users.len()
    );
    let mut done_here = 0;
    for o in &outs {
        let r = worker_json(o);
        assert!(
            o.status.success(),
            "{r:#}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        done_here += r["mailboxes"].as_array().map_or(0, Vec::len);
        assert_eq!(r["pass"], 1, "{r:#}");
    }
    assert_eq!(
        done_here,
        users.len(),
        "each mailbox done by exactly one worker"
    );
    let workers_used = db.psql(
        "SELECT count(DISTINCT worker) FROM backfill_lease WHERE status = 'done' AND pass = 1",
    );
    eprintln!("mailboxes spread over {workers_used} worker(s)");

    // Exact for everyone but carol; carol: each message exactly as often as on the old side,
    // and the 8 dual-delivered ones never copied (3 of them credited from the ledger).
    for u in users.iter().filter(|u| **u != "carol") {
        let s = snapshot(old.addr(), u, &old.password(u)).await.unwrap();
        let d = snapshot(new.addr(), u, &new.password(u)).await.unwrap();
        let diff = compare(&s, &d, &FolderMap::identity());
        assert!(diff.is_exact(), "{u}: {}", diff.summary());
    }
    assert_eq!(ids(&old, "carol").await, ids(&new, "carol").await);
    let status = job.status_json();
    assert_eq!(status["converged"], true, "{status:#}");
    assert_eq!(status["fleet"]["done"], users.len(), "{status:#}");
    let carol = status["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["source_user"] == "carol@example.com")
        .unwrap();
    let archive = carol["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["folder"] == "Archive")
        .unwrap();
    assert_eq!(archive["skipped"]["ledger"], 3, "{carol:#}");

    // A worker started after the pass closed begins pass 2: a no-op.
    let o = tokio::task::block_in_place(|| job.worker_cmd("w4").output().unwrap());
    let r = worker_json(&o);
    assert!(o.status.success(), "{r:#}");
    assert_eq!(r["pass"], 2);
    assert_eq!(r["pass_report"]["copied"], 0, "{r:#}");
}

/// Wait until the destination stops changing (a killed worker's APPENDs in flight land).
async fn settle(new: &Dovecot, user: &str) {
    let mut last = count(new, user, "INBOX").await;
    let mut stable = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && stable.elapsed() < Duration::from_millis(600) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = count(new, user, "INBOX").await;
        if n != last {
            last = n;
            stable = Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_mailbox_is_finished_by_another() {
    let Some(db) = Postgres::start() else { return };
    let old = dovecot(DovecotOptions::old());
    let new = dovecot(DovecotOptions::new());
    let manifest = Corpus::generate(
        &CorpusOptions::new("alice", 120)
            .big_attachment(None)
            .max_size(8 * 1024)
            .folders(&["INBOX"]),
    )
    .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
    .unwrap();
    let total = manifest.entries.len() as u32;
    let _ = new.maildir("alice");
    // Slow APPENDs so the kill lands in the middle of the mailbox.
    let dst = FaultProxy::start(new.addr()).await;
    dst.inject_times(
        "APPEND",
        1,
        100_000,
        Action::Delay(Duration::from_millis(100)),
    );
    let job = fleet_job(
        old.addr(),
        dst.addr(),
        &db,
        &["alice"],
        "connections_per_mailbox = 1",
    );

    let mut first = job.worker_cmd("w1").stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut at = 0;
    while Instant::now() < deadline && at < 20 {
        at = count(&new, "alice", "INBOX").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    let _ = first.wait();
    settle(&new, "alice").await;
    let at = count(&new, "alice", "INBOX").await;
    assert!(at > 0 && at < total, "kill landed at {at}/{total}");
    assert_eq!(
        db.psql("SELECT status || ' ' || worker FROM backfill_lease"),
        "running w1"
    );

    // The second worker waits for the lease to expire, then resumes the mailbox.
    dst.clear();
    let started = Instant::now();
    let o = tokio::task::block_in_place(|| job.worker_cmd("w2").output().unwrap());
    let r = worker_json(&o);
    assert!(
        o.status.success(),
        "{r:#}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(r["taken_over"], 1, "{r:#}");
    eprintln!("takeover and finish took {:?}", started.elapsed());
    assert_eq!(
        db.psql("SELECT status || ' ' || worker || ' ' || attempts FROM backfill_lease"),
        "done w2 2"
    );
    let s = snapshot(old.addr(), "alice", "pw-alice").await.unwrap();
    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{}\n{r:#}", diff.summary());
    assert_eq!(diff.duplicates(), 0);
    // Resumed, not restarted: the folder state written by w1 was used.
    let copied_by_w2 = r["mailboxes"][0]["copied"].as_u64().unwrap();
    assert_eq!(copied_by_w2 + u64::from(at), u64::from(total), "{r:#}");
}

/// Deliveries while PostgreSQL is down: on time, recorded in the outbox (durable across a
/// kill -9 of the gateway), replayed when it is back; meanwhile a backfill does not trust the
/// ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_delivery_goes_on_and_the_outbox_replays() {
    let Some(db) = Postgres::start() else { return };
    let old = dovecot(DovecotOptions::old());
    let new = dovecot(DovecotOptions::new());
    let users = ["carol"];
    let (to_old, to_new) = (bridge(&old, &users), bridge(&new, &users));
    let mut gw = gateway("gw-a", &db, to_old, to_new);
    send(gw.smtp, "carol@example.com", "before").await;
    until_count(&new, "carol", 1).await;
    until_sql(&db, "SELECT count(*) FROM ledger WHERE target = 'new'", "1");

    db.stop();
    let sent = Instant::now();
    for i in 0..5 {
        send(gw.smtp, "carol@example.com", &format!("during-{i}")).await;
    }
    until_count(&new, "carol", 6).await;
    until_count(&old, "carol", 6).await;
    let took = sent.elapsed();
    eprintln!("5 dual deliveries with PostgreSQL down took {took:?}");
    assert!(
        took < Duration::from_secs(50),
        "deliveries waited for PostgreSQL ({took:?}); the first retry is 1 min"
    );
    // 5 messages × 2 targets wait in the outbox, and /metrics says so.
    let metrics = queueops::http(gw.admin, "GET", "/metrics").await;
    assert!(
        metrics.contains("cutover_ledger_outbox_pending 10\n"),
        "{metrics}"
    );
    // The records wait in the outbox, and survive a kill -9 of the gateway.
    gw.kill9();
    gw.spawn();
    db.start_again();
    until_sql(&db, "SELECT count(*) FROM ledger WHERE target = 'new'", "6");
    until_sql(
        &db,
        "SELECT pending FROM gateways WHERE instance = 'gw-a'",
        "0",
    );

    // A gateway with records not yet shipped holds the backfill back...
    db.psql(
        "INSERT INTO gateways (instance, pending, drained_at, heartbeat_at, stopped)
         VALUES ('gw-down', 4, now() - interval '1 hour', now() - interval '1 hour', false)",
    );
    let job = fleet_job(old.addr(), new.addr(), &db, &users, "");
    let o = tokio::task::block_in_place(|| job.worker_cmd("w1").output().unwrap());
    let r = worker_json(&o);
    assert!(!o.status.success(), "{r:#}");
    let err = r["mailboxes"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("gw-down") && err.contains("outbox"), "{r:#}");
    assert_eq!(count(&new, "carol", "INBOX").await, 6, "nothing copied");
    // ...until it has shipped them (here: it stopped cleanly with an empty outbox).
    db.psql("UPDATE gateways SET pending = 0, stopped = true WHERE instance = 'gw-down'");
    let o = tokio::task::block_in_place(|| job.worker_cmd("w1").output().unwrap());
    let r = worker_json(&o);
    assert!(o.status.success(), "{r:#}");
    assert_eq!(r["pass"], 2);
    assert_eq!(
        count(&new, "carol", "INBOX").await,
        6,
        "the 6 delivered are not copied"
    );
    assert_eq!(ids(&old, "carol").await, ids(&new, "carol").await);
}
