//! `cutover dns check` through the real binary against a private dnsmasq on a loopback port:
//! MX at the gateway (ok), MX still at the old server (not switched, TTL advice), SPF admitting
//! or not admitting the gateway (through a real `include:` lookup), MTA-STS policies served over
//! HTTPS on 127.0.0.x:443 (enforce without the gateway fails, with it passes, an untrusted
//! certificate is named as such), NXDOMAIN, a dead DNS server, bad usage, the JSON shape.
//!
//! The policy host must be `https://mta-sts.DOMAIN/` on port 443 (RFC 8461 fixes both), so the
//! MTA-STS tests bind 127.0.0.x:443 (root, as in CI; elsewhere they skip, failing under
//! `CI=true`); the test CA reaches the binary through `SSL_CERT_FILE`, which the system-roots
//! loader honours.

#[path = "support/common.rs"]
mod common;
#[path = "support/dnsmasq.rs"]
mod dnsmasq;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;

use dnsmasq::{Dnsmasq, dnsmasq, resolver};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GATEWAY_IP: &str = "127.0.0.50";

/// A config naming `mx.cutover.test` as the gateway and `dns` as the only name server.
fn config(dir: &Path, dns: std::net::SocketAddr, tls: bool) -> PathBuf {
    let tls_line = if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["mx.cutover.test".into()]).unwrap();
        std::fs::write(dir.join("gw.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("gw.key"), ck.signing_key.serialize_pem()).unwrap();
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
            dir.join("gw.pem").display(),
            dir.join("gw.key").display()
        )
    } else {
        String::new()
    };
    let path = dir.join("cutover.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nhostname = \"mx.cutover.test\"\npublic_names = [\"mx.cutover.test\"]\nlisten = [\"127.0.0.1:2525\"]\nstate_dir = \"{}\"\naccept_domains = [\"example.test\"]\n{tls_line}\n[targets.old]\naddress = \"127.0.0.1:2526\"\n\n[routing]\ndefault = [\"old\"]\n\n[dns]\nservers = [\"{dns}\"]\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Run `cutover dns check ARGS -c CONFIG` with `env`, at most 60 s.
fn run(cfg: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.args(["dns", "check"]).args(args).arg("-c").arg(cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("cutover dns check did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The first finding of `check` with its status and text (message + advice).
fn finding(v: &Value, check: &str) -> (String, String) {
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {v:#}"));
    (
        f["status"].as_str().unwrap().to_string(),
        format!("{} {}", f["message"], f["advice"]),
    )
}

async fn dns(extra: &[&str]) -> Dnsmasq {
    let mut argv = vec![
        "--host-record=ready.test,127.0.0.9".to_string(),
        format!("--host-record=mx.cutover.test,{GATEWAY_IP}"),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let d = dnsmasq(&refs);
    let _ = resolver(&d).await;
    d
}

#[tokio::test]
async fn mx_at_the_gateway_is_ok() {
    let d = dns(&[
        "--local-ttl=300",
        "--mx-host=example.test,mx.cutover.test,10",
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), d.addr, true);
    let out = run(&cfg, &["example.test", "--json"], &[]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["domain"], "example.test");
    assert_eq!(v["mx_state"], "switched");
    assert_eq!(v["mx"][0]["exchange"], "mx.cutover.test");
    assert_eq!(v["mx"][0]["ttl"], 300);
    assert_eq!(v["mx"][0]["ours_by"], "name");
    assert_eq!(v["mx"][0]["addresses"][0], GATEWAY_IP);
    assert_eq!(v["gateway"]["names"][0], "mx.cutover.test");
    assert_eq!(v["gateway"]["addresses"][0], GATEWAY_IP);
    assert_eq!(finding(&v, "mx").0, "ok");
    assert_eq!(finding(&v, "ttl").0, "ok");
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn mx_at_the_old_server_is_not_switched_and_the_ttl_is_too_high() {
    let d = dns(&[
        "--local-ttl=3600",
        "--mx-host=example.test,old.example.test,10",
        "--host-record=old.example.test,127.0.0.60",
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), d.addr, true);
    let out = run(&cfg, &["example.test", "--json"], &[]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "warnings only: {v:#}");
    assert_eq!(v["mx_state"], "not_switched");
    assert_eq!(v["mx"][0]["ttl"], 3600);
    assert!(v["mx"][0].get("ours_by").is_none());
    let (status, text) = finding(&v, "mx");
    assert_eq!(status, "warn");
    assert!(
        text.contains("not switched") && text.contains("mx.cutover.test"),
        "{text}"
    );
    let (status, text) = finding(&v, "ttl");
    assert_eq!(status, "warn");
    assert!(
        text.contains("lower the MX TTL to 300 s at least 1h"),
        "{text}"
    );
    assert_eq!(v["status"], "warn");
    // The human form: the table and the marked lines.
    let out = run(&cfg, &["example.test"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("old.example.test") && text.contains("3600s"),
        "{text}"
    );
    assert!(
        text.contains("⚠ mx") && text.contains("→ lower the MX TTL"),
        "{text}"
    );
}

#[tokio::test]
async fn spf_admitting_and_not_admitting_the_gateway() {
    let d = dns(&[
        "--mx-host=example.test,old.example.test,10",
        "--mx-host=other.test,old.example.test,10",
        "--host-record=old.example.test,127.0.0.60",
        "--txt-record=example.test,v=spf1 mx include:_spf.example.test -all",
        &format!("--txt-record=_spf.example.test,v=spf1 ip4:{GATEWAY_IP} -all"),
        "--txt-record=other.test,v=spf1 ip4:192.0.2.0/24 ~all",
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), d.addr, true);
    let v = json(&run(&cfg, &["example.test", "--json"], &[]));
    assert_eq!(finding(&v, "spf").0, "ok", "{v:#}");
    assert_eq!(v["spf"][0]["address"], GATEWAY_IP);
    assert_eq!(v["spf"][0]["result"], "pass");
    assert_eq!(v["spf"][0]["detail"], "include:_spf.example.test");
    let v = json(&run(&cfg, &["other.test", "--json"], &[]));
    let (status, text) = finding(&v, "spf");
    assert_eq!(status, "warn", "{v:#}");
    assert!(text.contains("softfail"), "{text}");
    assert!(text.contains(&format!("add ip4:{GATEWAY_IP}")), "{text}");
    assert_eq!(v["spf_record"], "v=spf1 ip4:192.0.2.0/24 ~all");
}

#[tokio::test]
async fn nonexistent_domain_fails_clearly() {
    let d = dns(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), d.addr, true);
    let out = run(&cfg, &["nonexistent.test"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("✘ mx") && text.contains("nonexistent.test does not exist (NXDOMAIN)"),
        "{text}"
    );
    let v = json(&run(&cfg, &["nonexistent.test", "--json"], &[]));
    assert_eq!(v["mx_state"], "nxdomain");
    assert_eq!(v["status"], "fail");
}

#[test]
fn dead_dns_server_fails_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = dnsmasq::free_udp_port();
    let cfg = config(
        dir.path(),
        format!("127.0.0.1:{port}").parse().unwrap(),
        false,
    );
    let t = Instant::now();
    let out = run(&cfg, &["example.test", "--json"], &[]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["mx_state"], "dns_error");
    let (_, text) = finding(&v, "mx");
    assert!(
        text.contains("DNS lookup of MX example.test failed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("[dns] servers 127.0.0.1:{port}")),
        "{text}"
    );
    assert_eq!(v["findings"].as_array().unwrap().len(), 1, "{v:#}");
    // A bound against hanging, not a performance figure (one query, 3 s limit).
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    eprintln!("dead DNS server reported after {:?}", t.elapsed());
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:53".parse().unwrap(), false);
    let out = run(&cfg, &["not a domain"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a domain name"));
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["dns", "check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("1 when one fails") && help.contains("--json"),
        "{help}"
    );
}

/// Serve `policy` as `/.well-known/mta-sts.txt` over HTTPS on `ip:443`; `None` when port 443
/// cannot be bound here (after the skip policy).
async fn policy_server(
    ip: &str,
    tls: Arc<rustls::ServerConfig>,
    policy: &'static str,
) -> Option<()> {
    let l = match tokio::net::TcpListener::bind((ip, 443)).await {
        Ok(l) => l,
        Err(e) => {
            common::skip_or_fail(&format!(
                "cannot bind {ip}:443 for the MTA-STS policy host: {e}"
            ));
            return None;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut s) = acceptor.accept(sock).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if req.starts_with(b"GET /.well-known/mta-sts.txt ") {
                    ("200 OK", policy)
                } else {
                    ("404 Not Found", "")
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Some(())
}

const ENFORCE_OLD_ONLY: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: old.example.test\r\nmax_age: 604800\r\n";
const ENFORCE_WITH_GATEWAY: &str = "version: STSv1\r\nmode: enforce\r\nmx: old.example.test\r\nmx: *.cutover.test\r\nmax_age: 604800\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_policy_must_list_the_gateway() {
    // Two domains, each with its policy host on its own loopback address.
    let (tls_a, ca) = fake_smtp::ca_signed("mta-sts.a.test");
    let (tls_b, ca_b) = fake_smtp::ca_signed("mta-sts.b.test");
    let Some(()) = policy_server("127.0.0.71", tls_a, ENFORCE_OLD_ONLY).await else {
        return;
    };
    let Some(()) = policy_server("127.0.0.72", tls_b, ENFORCE_WITH_GATEWAY).await else {
        return;
    };
    let d = dns(&[
        "--mx-host=a.test,old.example.test,10",
        "--mx-host=b.test,old.example.test,10",
        "--host-record=old.example.test,127.0.0.60",
        "--txt-record=_mta-sts.a.test,v=STSv1; id=20261130a",
        "--txt-record=_mta-sts.b.test,v=STSv1; id=20261130b",
        "--host-record=mta-sts.a.test,127.0.0.71",
        "--host-record=mta-sts.b.test,127.0.0.72",
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), d.addr, true);
    let cas = dir.path().join("cas.pem");
    std::fs::write(&cas, format!("{ca}{ca_b}")).unwrap();
    let env = [("SSL_CERT_FILE", cas.as_path())];
    let out = tokio::task::block_in_place(|| run(&cfg, &["a.test", "--json"], &env));
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let (status, text) = finding(&v, "mta-sts");
    assert_eq!(status, "fail");
    assert!(
        text.contains("does not list mx.cutover.test") && text.contains("refuse to deliver"),
        "{text}"
    );
    assert_eq!(v["mta_sts"]["id"], "20261130a");
    assert_eq!(v["mta_sts"]["policy"]["mode"], "enforce");
    assert_eq!(v["mta_sts"]["policy"]["max_age"], 604800);

    let out = tokio::task::block_in_place(|| run(&cfg, &["b.test", "--json"], &env));
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let (status, text) = finding(&v, "mta-sts");
    assert_eq!(status, "ok", "{text}");
    assert!(text.contains("lists the gateway"), "{text}");

    // Trusting another CA only: the certificate is named as the problem.
    let (_, other_ca) = fake_smtp::ca_signed("unrelated.test");
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_ca).unwrap();
    let env = [("SSL_CERT_FILE", other.as_path())];
    let out = tokio::task::block_in_place(|| run(&cfg, &["a.test", "--json"], &env));
    let v = json(&out);
    let (status, text) = finding(&v, "mta-sts");
    assert_eq!(status, "warn", "{v:#}");
    assert!(
        text.contains("policy host certificate not trusted"),
        "{text}"
    );
}
