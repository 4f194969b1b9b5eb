//! Connection abuse limits and the PROXY protocol ("Trust II" §2 and §3) against a real
//! `cutover serve`: the PROXY v1/v2 header from a listed balancer sets the client address used
//! for relay policy, limits and `Received:`; IPv6 clients are counted by /64; a per-client
//! connection rate; a command must arrive within `command_timeout` however it is trickled; a
//! session lifetime; a minimum DATA rate; the junk-command limit; the hard error limit counting
//! rejected recipients; each answered with its 421 and counted in `/metrics`.

#[path = "support/common.rs"]
mod common;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `cutover_smtp_limit_total{limit="NAME"}` from `/metrics`.
async fn limit_count(g: &Gateway, name: &str) -> u64 {
    let text = queueops::http(g.admin, "GET", "/metrics").await;
    let key = format!("cutover_smtp_limit_total{{limit=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
}

/// Read until the server closes; everything it said.
async fn read_all(s: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Send `chunk` every `every` (at most `times`) until the server closes; what it said and when.
async fn trickle(
    s: tokio::net::TcpStream,
    chunk: &'static [u8],
    every: Duration,
    times: usize,
) -> (String, Duration) {
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut got)).await;
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    });
    for _ in 0..times {
        if reader.is_finished() || wr.write_all(chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
    }
    reader.await.unwrap()
}

fn proxy_v2(client: &str, server: std::net::SocketAddr) -> Vec<u8> {
    // Written by hand from the spec (HAProxy's proxy-protocol.txt §2.2), independently of the
    // parser the gateway uses.
    let client: std::net::SocketAddr = client.parse().unwrap();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    match (client, server) {
        (std::net::SocketAddr::V4(c), std::net::SocketAddr::V4(s)) => {
            h.push(0x11); // TCP over IPv4
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
        (std::net::SocketAddr::V6(c), s) => {
            h.push(0x21); // TCP over IPv6
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            let s6 = match s {
                std::net::SocketAddr::V6(s6) => *s6.ip(),
                std::net::SocketAddr::V4(s4) => s4.ip().to_ipv6_mapped(),
            };
            h.extend_from_slice(&s6.octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
        _ => unreachable!(),
    }
    h
}

/// Connect from 127.0.0.1 (the balancer) and send `header` first.
async fn via_proxy(g: &Gateway, header: &[u8]) -> Client {
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    s.write_all(header).await.unwrap();
    Client::from_stream(s)
}

fn proxied() -> Opts {
    Opts {
        extra_gateway: "proxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\n".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_sets_the_client_for_policy_and_received() {
    let g = Gateway::start(proxied());
    // v1 naming a trusted client (127.0.0.2 is trusted_networks): it may relay to @partner.net,
    // a domain a rule names; the balancer itself could not.
    let mut c = via_proxy(&g, b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n").await;
    assert_eq!(c.read_reply().await.code, 220);
    assert_eq!(c.cmd("EHLO lb.test").await.code, 250);
    let r = send_message(
        &mut c,
        "a@b.net",
        &["x@partner.net"],
        b"Subject: via v1\r\n\r\nhi\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let v1_id = queued_id(&r).unwrap();

    // v2 naming an internet client: relay refused, local delivery fine, Received names it.
    let mut c = via_proxy(&g, &proxy_v2("203.0.113.9:5555", g.smtp)).await;
    assert_eq!(c.read_reply().await.code, 220);
    assert_eq!(c.cmd("EHLO outside.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@b.net>").await.code, 250);
    let r = c.cmd("RCPT TO:<x@partner.net>").await;
    assert!(r.is(550, "5.7.1"), "relay through a proxied client: {r:?}");
    assert!(c.cmd("RSET").await.is(250, "2.0.0"));
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: via v2\r\n\r\nhi\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let v2_id = queued_id(&r).unwrap();
    let shown = |id: &str| {
        let out = std::process::Command::new(bin())
            .args(["queue", "show", id, "--config"])
            .arg(&g.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v2_text = shown(&v2_id);
    assert!(v2_text.contains("203.0.113.9"), "{v2_text}");
    assert!(!v2_text.contains("[127.0.0.1]"), "{v2_text}");
    assert!(shown(&v1_id).contains("127.0.0.2"));

    // A header that is not a PROXY header from the balancer: dropped without a word.
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    s.write_all(b"EHLO sneaky\r\n").await.unwrap();
    assert_eq!(read_all(&mut s, Duration::from_secs(5)).await, "");
    assert_eq!(limit_count(&g, "proxy_header").await, 1);

    // A client outside proxy_from is taken as it comes: its PROXY line is just a bad command.
    let mut c = Client::connect_from("127.0.0.3", g.smtp).await;
    assert_eq!(c.read_reply().await.code, 220);
    let r = c.cmd("PROXY TCP4 127.0.0.2 127.0.0.1 40000 25").await;
    assert!(r.is(500, "5.5.1"), "{r:?}");
    assert_eq!(c.cmd("EHLO direct.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@b.net>").await.code, 250);
    assert!(c.cmd("RCPT TO:<x@partner.net>").await.is(550, "5.7.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_counted_per_64() {
    let g = Gateway::start(Opts {
        extra_gateway:
            "proxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\nmax_connections_per_ip = 1\n"
                .into(),
        ..Default::default()
    });
    let mut a = via_proxy(&g, &proxy_v2("[2001:db8:1:2::1]:1000", g.smtp)).await;
    assert_eq!(a.read_reply().await.code, 220);
    // Another address in the same /64: the same client.
    let mut b = via_proxy(&g, &proxy_v2("[2001:db8:1:2:ffff::9]:1000", g.smtp)).await;
    let r = b.read_reply().await;
    assert!(r.is(421, "4.7.0"), "{r:?}");
    // The next /64 is another client.
    let mut c = via_proxy(&g, b"PROXY TCP6 2001:db8:1:3::1 ::1 1000 25\r\n").await;
    assert_eq!(c.read_reply().await.code, 220);
    assert_eq!(a.cmd("QUIT").await.code, 221);
    assert_eq!(limit_count(&g, "client_connections").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_is_limited_per_client() {
    let g = Gateway::start(Opts {
        extra_gateway: "max_connection_rate = 3\n".into(),
        ..Default::default()
    });
    // 127.0.0.3: the harness's readiness probe comes from 127.0.0.1.
    for _ in 0..3 {
        let mut c = Client::connect_from("127.0.0.3", g.smtp).await;
        assert_eq!(c.read_reply().await.code, 220);
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    let mut c = Client::connect_from("127.0.0.3", g.smtp).await;
    let r = c.read_reply().await;
    assert!(r.is(421, "4.7.0"), "{r:?}");
    assert!(r.text.contains("per minute"), "{r:?}");
    // Another client, and a trusted one, are not affected.
    let mut other = Client::connect_from("127.0.0.4", g.smtp).await;
    assert_eq!(other.read_reply().await.code, 220);
    for _ in 0..5 {
        let mut t = Client::connect_from("127.0.0.2", g.smtp).await;
        assert_eq!(t.read_reply().await.code, 220);
    }
    assert_eq!(limit_count(&g, "connection_rate").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trickled_byte_by_byte_still_times_out() {
    let g = Gateway::start(Opts {
        extra_gateway: "command_timeout = \"2s\"\n".into(),
        ..Default::default()
    });
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    // One byte every 500 ms, never a whole line: each read comes well within the timeout.
    let (said, took) = trickle(s, b"N", Duration::from_millis(500), 30).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(limit_count(&g, "command_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_have_a_lifetime() {
    let g = Gateway::start(Opts {
        extra_gateway: "max_session_time = \"2s\"\n".into(),
        ..Default::default()
    });
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("EHLO busy.test").await.code, 250);
    let started = Instant::now();
    let mut last;
    loop {
        // A busy client: a command every 300 ms (a few NOOPs, far under the junk limit).
        last = c.cmd("NOOP").await;
        if last.code != 250 || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(last.is(421, "4.4.2"), "{last:?}");
    assert!(last.text.contains("Session time"), "{last:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(c.closed().await);
    assert_eq!(limit_count(&g, "session_time").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_slower_than_the_minimum_rate_is_cut_off() {
    let g = Gateway::start(Opts {
        extra_gateway: "data_timeout = \"1s\"\ndata_idle_timeout = \"1s\"\nmin_data_rate = 100\n"
            .into(),
        ..Default::default()
    });
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO slow.test").await.code, 250);
    assert_eq!(plain_cmd(&mut s, "MAIL FROM:<a@b.net>").await.code, 250);
    assert_eq!(
        plain_cmd(&mut s, "RCPT TO:<alice@example.com>").await.code,
        250
    );
    assert_eq!(plain_cmd(&mut s, "DATA").await.code, 354);
    // 10 bytes every 300 ms: 33 B/s, never idle for a second.
    let (said, took) = trickle(s, b"0123456789", Duration::from_millis(300), 60).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(said.contains("Time limit for DATA"), "{said:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(limit_count(&g, "data_rate").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_commands_are_limited() {
    let g = Gateway::start(Opts::default());
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("EHLO junk.test").await.code, 250);
    let mut script = Vec::new();
    for i in 0..101 {
        script.extend_from_slice(if i % 2 == 0 { b"NOOP\r\n" } else { b"RSET\r\n" });
    }
    c.send(&script).await;
    for i in 0..100 {
        let r = c.read_reply().await;
        assert_eq!(r.code, 250, "junk command {i}: {r:?}");
    }
    let r = c.read_reply().await;
    assert!(r.is(421, "4.7.0"), "{r:?}");
    assert!(c.closed().await);
    assert_eq!(limit_count(&g, "junk_commands").await, 1);
    // An accepted message starts the count again (a relay's long session of RSET-separated
    // transactions is fine).
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("EHLO relay.test").await.code, 250);
    for _ in 0..3 {
        for _ in 0..60 {
            assert_eq!(c.cmd("RSET").await.code, 250);
        }
        let r = send_message(
            &mut c,
            "a@b.net",
            &["alice@example.com"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await;
        assert!(r.is(250, "2.0.0"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_recipients_count_towards_the_error_limit() {
    let g = Gateway::start(Opts::default());
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("EHLO harvest.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@b.net>").await.code, 250);
    // A directory harvest: relay attempts, each refused; the 20th refusal is followed by 421.
    for i in 0..20 {
        let r = c.cmd(&format!("RCPT TO:<user{i}@elsewhere.example>")).await;
        assert!(r.is(550, "5.7.1"), "RCPT {i}: {r:?}");
    }
    let r = c.read_reply().await;
    assert!(r.is(421, "4.7.0"), "{r:?}");
    assert!(c.closed().await);
    assert_eq!(limit_count(&g, "errors").await, 1);
}
