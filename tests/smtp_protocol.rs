//! Protocol conformance of the SMTP intake against a real `cutover serve`: a table of
//! command/reply scripts (each on a fresh connection), then the stored result (legs, stamped
//! body), plus limits, timeouts (command, DATA idle, DATA time limit scaled by size), low disk,
//! SIGTERM drain and SIGHUP reload.

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use support::*;

type Expect = &'static [(u16, &'static str)];

/// One write and the replies it must produce, in order (code 0 = connection closed).
struct Step(Vec<u8>, Expect);

fn st(send: impl AsRef<[u8]>, expect: Expect) -> Step {
    Step(send.as_ref().to_vec(), expect)
}

fn msg(subject: &str) -> Vec<u8> {
    format!("From: a@b.net\r\nSubject: {subject}\r\n\r\nhello\r\n.leading dot\r\n").into_bytes()
}

async fn run_script(g: &Gateway, name: &str, steps: &[Step]) -> Vec<String> {
    let mut c = Client::greeted(g.smtp).await;
    let mut ids = Vec::new();
    for (i, Step(send, expect)) in steps.iter().enumerate() {
        c.send(send).await;
        for (code, esc) in expect.iter() {
            if *code == 0 {
                assert!(c.closed().await, "{name} step {i}: expected close");
                continue;
            }
            let r = c.read_reply().await;
            assert!(
                r.is(*code, esc),
                "{name} step {i} ({:?}): expected {code} {esc}, got {r:?}",
                String::from_utf8_lossy(&send[..send.len().min(80)])
            );
            if let Some(id) = queued_id(&r) {
                ids.push(id);
            }
        }
    }
    ids
}

fn data(body: &[u8]) -> Vec<u8> {
    stuffed(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_table() {
    let g = Gateway::start(Opts {
        extra_gateway: "max_recipients = 5\nmax_message_size = \"64KiB\"\nmax_received = 30\n"
            .into(),
        ..Default::default()
    });
    let received = |n: usize| {
        let mut b = String::new();
        for i in 0..n {
            b.push_str(&format!(
                "Received: from h{i} by h{} ; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
                i + 1
            ));
        }
        b.push_str("Subject: hops\r\n\r\nbody\r\n");
        b.into_bytes()
    };
    let big = {
        let line = "x".repeat(78) + "\r\n";
        line.repeat(100 * 1024 / 80).into_bytes()
    };
    let long_line = format!("Subject: long\r\n\r\n{}\r\n", "y".repeat(2000)).into_bytes();

    let scripts: Vec<(&str, Vec<Step>)> = vec![
        (
            "basics",
            vec![
                st("EHLO client.test\r\n", &[(250, "")]),
                st("HELO client.test\r\n", &[(250, "")]),
                st("NOOP\r\n", &[(250, "2.0.0")]),
                st("VRFY alice\r\n", &[(252, "2.5.2")]),
                st("HELP\r\n", &[(214, "2.0.0")]),
                st("FOO bar\r\n", &[(500, "5.5.1")]),
                st("EXPN list\r\n", &[(502, "5.5.1")]),
                st("STARTTLS\r\n", &[(502, "5.5.1")]),
                st("QUIT\r\n", &[(221, "2.0.0"), (0, "")]),
            ],
        ),
        (
            "sequence",
            vec![
                st("MAIL FROM:<a@b.net>\r\n", &[(503, "5.5.1")]),
                st("EHLO c\r\n", &[(250, "")]),
                st("RCPT TO:<a@example.com>\r\n", &[(503, "5.5.1")]),
                st("DATA\r\n", &[(503, "5.5.1")]),
                st("MAIL FROM:<a@b.net>\r\n", &[(250, "2.1.0")]),
                st("MAIL FROM:<a@b.net>\r\n", &[(503, "5.5.1")]),
                st("DATA\r\n", &[(503, "5.5.1")]),
                st("RCPT TO:<x@evil.net>\r\n", &[(550, "5.7.1")]),
                st("DATA\r\n", &[(554, "5.5.1")]),
                st("RSET\r\n", &[(250, "2.0.0")]),
                st("RCPT TO:<a@example.com>\r\n", &[(503, "5.5.1")]),
                st("MAIL FROM:<a>\r\n", &[(501, "")]),
            ],
        ),
        (
            "null sender, RSET mid-transaction, two transactions",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st("MAIL FROM:<>\r\n", &[(250, "2.1.0")]),
                st("RCPT TO:<alice@example.com>\r\n", &[(250, "2.1.5")]),
                st("RSET\r\n", &[(250, "2.0.0")]),
                st("RCPT TO:<alice@example.com>\r\n", &[(503, "5.5.1")]),
                st("MAIL FROM:<>\r\n", &[(250, "2.1.0")]),
                st("RCPT TO:<bob@example.com>\r\n", &[(250, "2.1.5")]),
                st("DATA\r\n", &[(354, "")]),
                st(data(&msg("null sender to bob")), &[(250, "2.0.0")]),
                st("MAIL FROM:<sender@b.net>\r\n", &[(250, "2.1.0")]),
                st("RCPT TO:<Carol@EXAMPLE.COM.>\r\n", &[(250, "2.1.5")]),
                st("RCPT TO:<alice@example.com>\r\n", &[(250, "2.1.5")]),
                st("DATA\r\n", &[(354, "")]),
                st(data(&msg("second")), &[(250, "2.0.0")]),
            ],
        ),
        (
            "pipelining",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st(
                    "MAIL FROM:<p@b.net>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<x@evil.net>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
                    &[
                        (250, "2.1.0"),
                        (250, "2.1.5"),
                        (550, "5.7.1"),
                        (250, "2.1.5"),
                        (354, ""),
                    ],
                ),
                st(
                    [
                        data(&msg("pipelined 1")),
                        b"MAIL FROM:<>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n".to_vec(),
                    ]
                    .concat(),
                    &[(250, "2.0.0"), (250, "2.1.0"), (250, "2.1.5"), (354, "")],
                ),
                st(
                    [data(&msg("pipelined 2")), b"NOOP\r\nQUIT\r\n".to_vec()].concat(),
                    &[(250, "2.0.0"), (250, "2.0.0"), (221, "2.0.0"), (0, "")],
                ),
            ],
        ),
        (
            "SIZE",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st("MAIL FROM:<a@b.net> SIZE=70000\r\n", &[(552, "5.3.4")]),
                st("MAIL FROM:<a@b.net> SIZE=1000\r\n", &[(250, "2.1.0")]),
                st("RCPT TO:<alice@example.com>\r\n", &[(250, "2.1.5")]),
                st("DATA\r\n", &[(354, "")]),
                st(data(&big), &[(552, "5.3.4")]),
                st("NOOP\r\n", &[(250, "2.0.0")]),
                st("MAIL FROM:<a@b.net> BODY=8BITMIME\r\n", &[(250, "2.1.0")]),
            ],
        ),
        (
            "SMTPUTF8",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st("MAIL FROM:<jörg@b.net>\r\n", &[(553, "5.6.7")]),
                st("MAIL FROM:<a@b.net>\r\n", &[(250, "2.1.0")]),
                st("RCPT TO:<müller@example.com>\r\n", &[(553, "5.6.7")]),
                st("RSET\r\n", &[(250, "")]),
                st("MAIL FROM:<jörg@b.net> SMTPUTF8\r\n", &[(250, "2.1.0")]),
                st("RCPT TO:<müller@example.com>\r\n", &[(250, "2.1.5")]),
                st("DATA\r\n", &[(354, "")]),
                st(
                    data("Subject: grüße\r\n\r\nÄÖÜ\r\n".as_bytes()),
                    &[(250, "2.0.0")],
                ),
            ],
        ),
        (
            "policy replies",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st("MAIL FROM:<a@b.net>\r\n", &[(250, "")]),
                st("RCPT TO:<x@evil.net>\r\n", &[(550, "5.7.1")]),
                st("RCPT TO:<someone@unrouted.example>\r\n", &[(550, "5.1.1")]),
                st(
                    "RCPT TO:<@relay.net:alice@example.com>\r\n",
                    &[(550, "5.7.1")],
                ),
                st("RCPT TO:<postmaster>\r\n", &[(250, "2.1.5")]),
                st("RCPT TO:<u1@example.com>\r\n", &[(250, "2.1.5")]),
                st("RCPT TO:<u2@example.com>\r\n", &[(250, "2.1.5")]),
                st("RCPT TO:<u3@example.com>\r\n", &[(250, "2.1.5")]),
                st("RCPT TO:<u4@example.com>\r\n", &[(250, "2.1.5")]),
                st("RCPT TO:<u5@example.com>\r\n", &[(452, "4.5.3")]),
            ],
        ),
        (
            "loops",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st(
                    "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
                    &[(250, ""), (250, ""), (354, "")],
                ),
                st(data(&received(31)), &[(554, "5.4.6")]),
                st(
                    "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
                    &[(250, ""), (250, ""), (354, "")],
                ),
                st(
                    data(b"X-Cutover-Loop: mx.test\r\nSubject: loop\r\n\r\nx\r\n"),
                    &[(554, "5.4.6")],
                ),
                st(
                    "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
                    &[(250, ""), (250, ""), (354, "")],
                ),
                st(data(&received(30)), &[(250, "2.0.0")]),
            ],
        ),
        (
            "defined behaviour on bad input",
            vec![
                st("EHLO c\r\n", &[(250, "")]),
                st(format!("NOOP {}\r\n", "z".repeat(5000)), &[(500, "5.5.2")]),
                st("NOOP\r\n", &[(250, "2.0.0")]),
                st("NO\0OP\r\n", &[(500, "5.5")]),
                st("NOOP\n", &[(250, "2.0.0")]),
                st("\r\n", &[(500, "5.5")]),
                st(
                    "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
                    &[(250, ""), (250, ""), (354, "")],
                ),
                st(
                    b"Subject: bare\r\n\r\nline\nwith bare LF\r\n.\r\n",
                    &[(550, "5.6.0")],
                ),
                st(
                    "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
                    &[(250, ""), (250, ""), (354, "")],
                ),
                st(b"Subject: nul\r\n\r\nnul\0byte\r\n.\r\n", &[(550, "5.6.0")]),
                st(
                    "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
                    &[(250, ""), (250, ""), (354, "")],
                ),
                st(data(&long_line), &[(250, "2.0.0")]),
                st("QUIT\r\n", &[(221, ""), (0, "")]),
            ],
        ),
    ];

    let mut too_many = vec![st("EHLO c\r\n", &[(250, "")])];
    for _ in 0..19 {
        too_many.push(st("BOGUS\r\n", &[(500, "5.5.1")]));
    }
    too_many.push(st("BOGUS\r\n", &[(500, "5.5.1"), (421, "4.7.0"), (0, "")]));
    let bdat = vec![
        st("EHLO c\r\n", &[(250, "")]),
        st(
            "MAIL FROM:<a@b.net>\r\nRCPT TO:<alice@example.com>\r\n",
            &[(250, ""), (250, "")],
        ),
        st(
            "BDAT 20 LAST\r\nMAIL FROM:<injected>\r\n",
            &[(502, "5.5.1"), (0, "")],
        ),
    ];
    let mut scripts = scripts;
    scripts.push(("error limit", too_many));
    scripts.push(("BDAT is not offered", bdat));

    let mut accepted = Vec::new();
    for (name, steps) in &scripts {
        accepted.extend(run_script(&g, name, steps).await);
    }
    // 2 + 2 + 1 + 1 + 1 accepted messages.
    assert_eq!(accepted.len(), 7, "{accepted:?}");

    // What was stored: legs by routing, the stamp, and the bytes otherwise verbatim.
    let mut g = g;
    g.kill9();
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    let list = q.list().unwrap();
    assert_eq!(list.len(), 7);
    let first = q
        .get(&cutover::queue::QueueId::parse(&accepted[0]).unwrap())
        .unwrap();
    let legs: Vec<(String, Vec<String>)> = first
        .record
        .legs
        .iter()
        .map(|l| {
            (
                l.target.clone(),
                l.recipients.iter().map(|r| r.address.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        legs,
        vec![
            ("old".to_string(), vec!["bob@example.com".to_string()]),
            ("new".to_string(), vec!["bob@example.com".to_string()])
        ]
    );
    let second = q
        .get(&cutover::queue::QueueId::parse(&accepted[1]).unwrap())
        .unwrap();
    let mut legs: Vec<(String, Vec<String>, Vec<String>)> = second
        .record
        .legs
        .iter()
        .map(|l| {
            (
                l.target.clone(),
                l.recipients.iter().map(|r| r.address.clone()).collect(),
                l.recipients.iter().map(|r| r.rule.clone()).collect(),
            )
        })
        .collect();
    legs.sort();
    assert_eq!(
        legs,
        vec![
            (
                "new".into(),
                vec!["Carol@example.com".into()],
                vec!["wave".into()]
            ),
            (
                "old".into(),
                vec!["alice@example.com".into()],
                vec!["domain".into()]
            ),
        ]
    );
    let body = q
        .read_body(&cutover::queue::QueueId::parse(&accepted[0]).unwrap())
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    // Edge authentication's one Authentication-Results (127.0.0.1 is not trusted here), then
    // our Received: and loop header, then the message exactly as sent.
    assert!(
        text.starts_with("Authentication-Results: mx.test;\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("Authentication-Results:").count(), 1, "{text}");
    assert!(text.contains("\r\nReceived: from c ([127.0.0.1])\r\n\tby mx.test (cutover) with ESMTP\r\n\tfor <bob@example.com>;\r\n\t"), "{text}");
    let orig = msg("null sender to bob");
    let stamp_end =
        text.find("X-Cutover-Loop: mx.test\r\n").unwrap() + "X-Cutover-Loop: mx.test\r\n".len();
    assert_eq!(&body[stamp_end..], &orig[..]);
    assert_eq!(text.matches("Received:").count(), 1);
    // Two recipients: no `for` clause.
    let body2 = String::from_utf8(
        q.read_body(&cutover::queue::QueueId::parse(&accepted[1]).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(!body2.contains("for <"), "{body2}");
    let log = g.log();
    assert!(
        log.contains("accepted") && log.contains(&accepted[0]),
        "acceptance log line missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits() {
    let g = Gateway::start(Opts {
        extra_gateway: "max_connections = 3\nmax_connections_per_ip = 2\n".into(),
        ..Default::default()
    });
    let mut a = Client::greeted(g.smtp).await;
    let _b = Client::greeted(g.smtp).await;
    let mut c = Client::connect(g.smtp).await;
    assert!(c.read_reply().await.is(421, "4.7.0"));
    assert!(c.closed().await);
    let mut d = Client::connect_from("127.0.0.3", g.smtp).await;
    assert_eq!(d.read_reply().await.code, 220);
    let mut e = Client::connect_from("127.0.0.4", g.smtp).await;
    assert!(e.read_reply().await.is(421, "4.3.2"));
    // A slot frees up when a session ends.
    assert_eq!(a.cmd("QUIT").await.code, 221);
    assert!(a.closed().await);
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let mut f = Client::connect_from("127.0.0.5", g.smtp).await;
        if f.read_reply().await.code == 220 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(d.cmd("NOOP").await.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts() {
    let g = Gateway::start(Opts {
        extra_gateway:
            "command_timeout = \"1s\"\ndata_timeout = \"2s\"\ndata_idle_timeout = \"1s\"\n".into(),
        ..Default::default()
    });
    let mut c = Client::greeted(g.smtp).await;
    let r = c.read_reply().await;
    assert!(r.is(421, "4.4.2"), "{r:?}");
    assert!(c.closed().await);

    // A client that stops sending mid-DATA: 421 once nothing came for data_idle_timeout.
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b.net>").await;
    c.cmd("RCPT TO:<alice@example.com>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: stalled\r\n\r\nhalf a message\r\n").await;
    let r = c.read_reply().await;
    assert!(r.is(421, "4.4.2"), "{r:?}");
    assert!(
        r.text.contains("waiting for DATA"),
        "idle timeout expected: {r:?}"
    );
    assert!(c.closed().await);
    let mut g = g;
    g.kill9();
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    assert!(q.list().unwrap().is_empty());
}

/// Big messages over slow links: DATA may last longer than `data_timeout` as long as bytes keep
/// coming (the limit grows with the size); the announced SIZE bounds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_time_limit_scales_with_the_size() {
    let g = Gateway::start(Opts {
        // min_data_rate 1 B/s: only the size limit is under test here (tests/smtp_limits.rs
        // has the rate).
        extra_gateway: "data_timeout = \"2s\"\ndata_idle_timeout = \"1s\"\nmin_data_rate = 1\n"
            .into(),
        ..Default::default()
    });
    let pause = std::time::Duration::from_millis(200);
    let lines = 20; // 20 × 200 ms = 4 s: twice data_timeout, never idle for 1 s.

    // No SIZE: the limit is data_timeout + max_message_size (50 MiB) at 16 KiB/s.
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b.net>").await;
    c.cmd("RCPT TO:<alice@example.com>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let started = std::time::Instant::now();
    let mut body = b"Subject: trickle\r\n\r\n".to_vec();
    c.send(&body).await;
    for i in 0..lines {
        tokio::time::sleep(pause).await;
        let line = format!("line {i}\r\n");
        c.send(line.as_bytes()).await;
        body.extend_from_slice(line.as_bytes());
    }
    c.send(b".\r\n").await;
    let r = c.read_reply().await;
    let took = started.elapsed();
    assert!(r.is(250, "2.0.0"), "trickled for {took:?}: {r:?}");
    assert!(took > std::time::Duration::from_secs(2), "{took:?}");
    let id = queued_id(&r).unwrap();
    assert_eq!(c.cmd("QUIT").await.code, 221);

    // SIZE=200 announced: the limit is 2 s + 200 B at 16 KiB/s; the same trickle is cut off.
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO c").await.code, 250);
    assert_eq!(
        plain_cmd(&mut s, "MAIL FROM:<a@b.net> SIZE=200").await.code,
        250
    );
    assert_eq!(
        plain_cmd(&mut s, "RCPT TO:<alice@example.com>").await.code,
        250
    );
    assert_eq!(plain_cmd(&mut s, "DATA").await.code, 354);
    let (mut rd, mut wr) = s.into_split();
    // Read everything the server says until it closes, while the client keeps trickling.
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(STEP, rd.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    });
    {
        use tokio::io::AsyncWriteExt;
        let _ = wr.write_all(b"Subject: trickle with SIZE\r\n\r\n").await;
        for i in 0..2 * lines {
            if reader.is_finished() {
                break;
            }
            tokio::time::sleep(pause).await;
            let _ = wr.write_all(format!("line {i}\r\n").as_bytes()).await;
        }
    }
    let said = reader.await.unwrap();
    assert!(
        said.starts_with("421 4.4.2 ") && said.contains("Time limit for DATA"),
        "{said:?}"
    );

    let mut g = g;
    g.kill9();
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    let list = q.list().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id.0, id);
    assert!(
        q.read_body(&cutover::queue::QueueId::parse(&id).unwrap())
            .unwrap()
            .ends_with(&body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_disk_reserve_defers_and_writes_nothing() {
    let mut g = Gateway::start(Opts {
        extra_gateway: "min_free_space = \"1000000GiB\"\n".into(),
        ..Default::default()
    });
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    let r = c.cmd("MAIL FROM:<a@b.net>").await;
    assert!(r.is(452, "4.3.1"), "{r:?}");
    assert!(c.cmd("RCPT TO:<alice@example.com>").await.is(503, "5.5.1"));
    assert!(c.cmd("DATA").await.is(503, "5.5.1"));
    assert_eq!(c.cmd("QUIT").await.code, 221);
    g.kill9();
    let spool = g.state_dir().join("spool");
    let files: Vec<_> = std::fs::read_dir(&spool)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "{files:?}");
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    assert!(q.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_in_data() {
    let mut g = Gateway::start(Opts::default());
    let mut idle = Client::greeted(g.smtp).await;
    idle.cmd("EHLO idle").await;
    let mut busy = Client::greeted(g.smtp).await;
    busy.cmd("EHLO busy").await;
    busy.cmd("MAIL FROM:<a@b.net>").await;
    busy.cmd("RCPT TO:<alice@example.com>").await;
    assert_eq!(busy.cmd("DATA").await.code, 354);
    busy.send(b"Subject: drain\r\n\r\nfirst half\r\n").await;
    g.signal(libc::SIGTERM);
    // The idle session is told to go away; new connections are refused.
    let r = idle.read_reply().await;
    assert!(r.is(421, "4.3.2"), "{r:?}");
    let deadline = std::time::Instant::now() + STEP;
    while std::net::TcpStream::connect(g.smtp).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The one in DATA finishes and gets its 250.
    busy.send(b"second half\r\n.\r\n").await;
    let r = busy.read_reply().await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    busy.send(b"QUIT\r\n").await;
    let st = g.terminate();
    assert!(st.success(), "exit {st}: {}", g.log());
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    assert_eq!(q.list().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_or_keeps_old_config() {
    let g = Gateway::start(Opts::default());
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b.net>").await;
    assert!(c.cmd("RCPT TO:<x@newdomain.test>").await.is(550, "5.7.1"));
    drop(c);

    // Valid change: a new accepted domain routed to `new`.
    let text = std::fs::read_to_string(&g.config).unwrap();
    let good = text
        .replace(
            "accept_domains = [\"example.com\", \"unrouted.example\"]",
            "accept_domains = [\"example.com\", \"unrouted.example\", \"newdomain.test\"]",
        )
        .replace(
            "recipients = [\"@example.com\"]",
            "recipients = [\"@example.com\", \"@newdomain.test\"]",
        );
    std::fs::write(&g.config, &good).unwrap();
    g.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let mut c = Client::greeted(g.smtp).await;
        c.cmd("EHLO c").await;
        c.cmd("MAIL FROM:<a@b.net>").await;
        if c.cmd("RCPT TO:<x@newdomain.test>").await.code == 250 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload not applied: {}",
            g.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Invalid file: logged, old settings kept.
    std::fs::write(&g.config, "[gateway]\nmax_received = \"lots\"\n").unwrap();
    g.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + STEP;
    while !g.log().contains("reload failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload error logged: {}",
            g.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b.net>").await;
    assert_eq!(c.cmd("RCPT TO:<x@newdomain.test>").await.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_acceptance_log() {
    let mut g = Gateway::start(Opts {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    });
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    let r = send_message(
        &mut c,
        "s@b.net",
        &["bob@example.com"],
        b"Subject: log\r\n\r\nx\r\n",
    )
    .await;
    let id = queued_id(&r).unwrap();
    c.cmd("QUIT").await;
    assert!(g.terminate().success());
    let line = g
        .log()
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no log line for {id}: {}", g.log()))
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let f = &v["fields"];
    assert_eq!(f["message"], "accepted");
    assert_eq!(f["queue_id"], id.as_str());
    assert_eq!(f["from"], "s@b.net");
    assert!(f["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f["legs"].as_str().unwrap().contains("old:1"));
    assert!(f["legs"].as_str().unwrap().contains("new:1"));
}

/// Garbage (random bytes with many CR/LF/NUL/dots, long runs, pipelined commands) must never take
/// the server down or wedge it: afterwards a fresh session still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_input_is_survived() {
    let g = Gateway::start(Opts::default());
    let alphabet: &[u8] = b"\r\n\0.:<>@\" \tMAILFROMRCPTDATAEHLOSTARTTLSBDAT0123456789\xff\xc3";
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..60 {
        let mut c = Client::greeted(g.smtp).await;
        if round % 2 == 0 {
            c.cmd("EHLO fuzz").await;
            c.cmd("MAIL FROM:<a@b.net>").await;
            c.cmd("RCPT TO:<alice@example.com>").await;
            c.cmd("DATA").await;
        }
        let len = rng.usize(1..20_000);
        let junk: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        c.send_lossy(&junk).await;
        // Whatever it answered, it must still answer (or close) promptly.
        c.send_lossy(b"\r\n.\r\nQUIT\r\n").await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while c.read_reply().await.code != 0 {}
        })
        .await;
    }
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO after").await;
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: ok\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    assert!(!g.log().contains("panicked"), "{}", g.log());
}

/// A storage failure while the body is written (here: the spool directory vanished under a large
/// message) answers `451 4.3.0`; the session and the server carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_error_gives_451() {
    let g = Gateway::start(Opts::default());
    std::fs::remove_dir_all(g.state_dir().join("spool")).unwrap();
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO c").await;
    let big = "y".repeat(78) + "\r\n";
    let body = format!("Subject: big\r\n\r\n{}", big.repeat(4000));
    let r = send_message(&mut c, "a@b.net", &["alice@example.com"], body.as_bytes()).await;
    assert!(r.is(451, "4.3.0"), "{r:?}");
    assert_eq!(c.cmd("NOOP").await.code, 250);
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: small\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
}
