//! `cutover queue list|show` against a stopped gateway (store opened directly) and a running one
//! (admin API served in-process): the real binary, the same output either way.

#[path = "support/common.rs"]
mod common;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/queue.rs"]
mod support;

use cutover::queue::Queue;
use cutover::queue::model::{Message, MessageSummary};
use support::*;

fn run_all(cfg: &str, ids: &[String]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut cmds: Vec<Vec<String>> = vec![
        vec!["queue".into(), "list".into()],
        vec!["queue".into(), "list".into(), "--json".into()],
    ];
    for id in ids {
        cmds.push(vec!["queue".into(), "show".into(), id.clone()]);
        cmds.push(vec![
            "queue".into(),
            "show".into(),
            id.clone(),
            "--json".into(),
        ]);
    }
    cmds.push(vec!["queue".into(), "show".into(), "0000000000000Z".into()]);
    for mut c in cmds {
        c.push("-c".into());
        c.push(cfg.into());
        let args: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
        let o = cutover(&args);
        assert!(
            o.status.code() == Some(0) || o.status.code() == Some(1),
            "{args:?}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        out.push((stdout(&o), o.status.code().unwrap_or(-1)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_offline_and_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let offline_cfg = write_config(dir.path(), &state, dead_addr());
    let offline_cfg = offline_cfg.to_str().unwrap().to_string();

    // Before anything is queued: no db yet, an empty queue, nothing created.
    let o = cutover(&["queue", "list", "-c", &offline_cfg]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "Mail queue is empty\n");
    assert!(!state.exists());

    let small = body(1, 3000);
    let large = body(2, 300_000);
    let ids = {
        let q = Queue::open(&state).unwrap();
        let a = commit(&q, "sender1@example.org", &small, legs()).await;
        let b = commit(&q, "", &large, legs()).await;
        q.close().unwrap();
        vec![a.0, b.0]
    };

    let offline = run_all(&offline_cfg, &ids);
    eprintln!(
        "--- queue list\n{}--- queue show\n{}",
        offline[0].0, offline[2].0
    );
    // list --json
    let list: Vec<MessageSummary> = serde_json::from_str(&offline[1].0).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id.0, ids[0]);
    assert_eq!(list[1].size, large.len() as u64);
    assert_eq!(list[1].mail_from, "");
    assert_eq!(list[0].legs[0].recipients.len(), 2);
    // human list
    let human = &offline[0].0;
    assert!(
        human.contains(&ids[0]) && human.contains(&ids[1]),
        "{human}"
    );
    assert!(human.contains("sender1@example.org"));
    assert!(human.contains("<>"));
    assert!(human.contains("carol@example.com  queued"), "{human}");
    assert!(human.contains("in 2 messages."), "{human}");
    // show --json (large message)
    let m: Message = serde_json::from_str(&offline[5].0).unwrap();
    assert_eq!(m.record.id.0, ids[1]);
    assert_eq!(m.record.size, large.len() as u64);
    assert_eq!(m.headers.len(), 5);
    assert_eq!(m.headers[3], "Subject: message 2");
    assert_eq!(m.record.legs[1].target, "new");
    // show (human)
    let show = &offline[2].0;
    assert!(show.contains("Subject: message 1"), "{show}");
    assert!(
        show.contains("carol@example.com  queued  [rule default]"),
        "{show}"
    );
    // unknown id → exit 1
    assert_eq!(offline.last().unwrap().1, 1);
    // filters
    let count = |args: &[&str]| {
        let mut a = vec!["queue", "list", "--json", "-c", &offline_cfg];
        a.extend_from_slice(args);
        let o = cutover(&a);
        assert!(o.status.success(), "{a:?}");
        serde_json::from_str::<Vec<MessageSummary>>(&stdout(&o))
            .unwrap()
            .len()
    };
    assert_eq!(count(&["--target", "new"]), 2);
    assert_eq!(count(&["--target", "nowhere"]), 0);
    assert_eq!(count(&["--state", "queued", "--target", "old"]), 2);
    assert_eq!(count(&["--state", "deferred"]), 0);
    assert_eq!(count(&["--state", "held"]), 0);
    assert!(
        !cutover(&["queue", "list", "--state", "bogus", "-c", &offline_cfg])
            .status
            .success()
    );

    // Now a "running gateway": the queue open in this process, the admin API on a port.
    let q = Queue::open(&state).unwrap();
    let server = queueops::start_admin(q.clone(), std::path::Path::new(&offline_cfg), None).await;
    let admin = server.addr;
    let live_dir = dir.path().join("live");
    std::fs::create_dir_all(&live_dir).unwrap();
    let live_cfg = write_config(&live_dir, &state, admin);
    let live_cfg = live_cfg.to_str().unwrap().to_string();
    let ids2 = ids.clone();
    let live = tokio::task::spawn_blocking(move || run_all(&live_cfg, &ids2))
        .await
        .unwrap();
    assert_eq!(live, offline, "same output through the admin API");

    // While the store is locked, the offline path explains itself.
    let o = tokio::task::spawn_blocking(move || cutover(&["queue", "list", "-c", &offline_cfg]))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by another process"), "{err}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    let id = commit(&q, "a@example.org", &body(3, 500), legs()).await;
    let cfg = write_config(dir.path(), dir.path(), dead_addr());
    let server = queueops::start_admin(q.clone(), &cfg, None).await;
    let addr = server.addr;
    let get = |path: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        buf
    };
    let r = get("/healthz".into()).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let r = get(format!("/api/queue/{}", id.0)).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    assert!(r.contains(r#""headers":["#), "{r}");
    let r = get("/api/queue/0000000000000Z".into()).await;
    assert!(r.starts_with("HTTP/1.0 404"), "{r}");
    assert!(r.contains(r#""error""#), "{r}");
    let r = get("/api/queue".into()).await;
    assert!(r.starts_with("HTTP/1.0 200") && r.contains(&id.0), "{r}");
    // The status page lists the message and links to the API.
    let r = get("/".into()).await;
    assert!(
        r.starts_with("HTTP/1.0 200") && r.contains("text/html"),
        "{r}"
    );
    assert!(
        r.contains("<b>1</b>messages queued") && r.contains(&id.0),
        "{r}"
    );
    server.stop().await;
}

/// Mail controls HELO, addresses and headers: `queue list` / `queue show` never pass its
/// control characters (ESC sequences, a CR that rewrites the line) to the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_escape_control_characters_from_mail() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(dir.path(), &state, dead_addr());
    let cfg = cfg.to_str().unwrap().to_string();
    let id = {
        let q = Queue::open(&state).unwrap();
        let data = b"Subject: hi\x1b]0;pwned\x07\rFAKE: all delivered\r\n\
                     X-Bidi: abc\xe2\x80\xaedef\\x41\r\nFrom: <a@example.org>\r\n\r\nbody\r\n";
        let mut w = q.body_writer().unwrap();
        w.write(&data[..]).await.unwrap();
        let mut env = envelope("evil\x1b[31m@example.org", 1_790_000_000_000);
        env.helo = "client\x1b[2J\r\x1b[1;32mtrusted.example".into();
        let mut legs = legs();
        legs[0].recipients.push("x\x1b[8m@example.com".into());
        let id = q.commit(w, env, legs).await.unwrap();
        q.close().unwrap();
        id.0
    };
    let list = cutover(&["queue", "list", "-c", &cfg]);
    let show = cutover(&["queue", "show", &id, "-c", &cfg]);
    for (what, o) in [("list", &list), ("show", &show)] {
        assert!(o.status.success(), "{what}: {o:?}");
        assert!(
            !o.stdout
                .iter()
                .any(|&b| b == 0x1b || b == b'\r' || b == 0x07),
            "{what} wrote raw control characters: {:?}",
            stdout(o)
        );
    }
    let list = stdout(&list);
    assert!(list.contains("evil\\x1b[31m@example.org"), "{list}");
    assert!(list.contains("x\\x1b[8m@example.com  queued"), "{list}");
    let show = stdout(&show);
    assert!(
        show.contains("client:   client\\x1b[2J\\r\\x1b[1;32mtrusted.example [127.0.0.1:40000]"),
        "{show}"
    );
    assert!(
        show.contains("  Subject: hi\\x1b]0;pwned\\x07\\rFAKE: all delivered\n"),
        "{show}"
    );
    // A bidi override is made visible; a literal backslash in mail cannot fake an escape.
    assert!(show.contains("X-Bidi: abc\\u{202e}def\\\\x41"), "{show}");
    // JSON keeps the data exact (serde escapes it).
    let o = cutover(&["queue", "show", &id, "--json", "-c", &cfg]);
    let m: Message = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        m.record.envelope.helo,
        "client\x1b[2J\r\x1b[1;32mtrusted.example"
    );
    assert!(!o.stdout.contains(&0x1b));
}
