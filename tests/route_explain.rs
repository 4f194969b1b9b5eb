//! `cutover route explain` through the real binary: each pattern kind, wave windows, rewriting, JSON.

use std::process::Command;

const CONFIG: &str = r#"[gateway]
hostname = "mx1.example.com"
listen = ["127.0.0.1:2525"]
state_dir = "/tmp/cutover-route-test"
accept_domains = ["example.com", "sales.example.com", "eu.example.com"]

[targets.old]
address = "127.0.0.1:2526"
[targets.new]
address = "127.0.0.1:2527"
rcpt_domain = "example-com.mail.onmicrosoft.com"

[routing]
default = ["old"]

[[routing.rule]]
name = "wave-1"
recipients_file = "wave-1.txt"
deliver = ["new"]
active_from = "2026-12-01T18:00:00Z"
active_until = "2026-12-08T18:00:00Z"

[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com"]
deliver = ["old", "new"]

[[routing.rule]]
name = "sales"
recipients = ["@sales.example.com"]
deliver = ["new"]

[[routing.rule]]
name = "subsidiaries"
recipients = ["@.example.com"]
deliver = ["new"]

[[routing.rule]]
name = "admins"
recipients = ["*.admin@example.com", "re:it-[a-z]+@example\\.com"]
deliver = ["new"]
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    config: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wave-1.txt"),
        "# wave 1\nalice@example.com\ncarol@example.com\n",
    )
    .unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(&config, CONFIG).unwrap();
    Fixture {
        config: config.display().to_string(),
        _dir: dir,
    }
}

fn explain(f: &Fixture, addr: &str, at: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "route", "explain", addr, "--at", at, "--json", "-c", &f.config,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const INSIDE: &str = "2026-12-02T09:00:00Z";

#[test]
fn each_pattern_kind() {
    let f = fixture();
    let cases = [
        ("alice@example.com", "wave-1", "address", vec!["new"]),
        (
            "Alice+Lists@Example.COM.",
            "wave-1",
            "address_without_extension",
            vec!["new"],
        ),
        ("bob@example.com", "pilot", "address", vec!["old", "new"]),
        ("x@sales.example.com", "sales", "domain", vec!["new"]),
        (
            "x@eu.example.com",
            "subsidiaries",
            "parent_domain",
            vec!["new"],
        ),
        ("db.admin@example.com", "admins", "glob", vec!["new"]),
        ("it-ops@example.com", "admins", "regex", vec!["new"]),
        ("zed@example.com", "default", "default", vec!["old"]),
    ];
    for (addr, rule, how, targets) in cases {
        let v = explain(&f, addr, INSIDE);
        assert_eq!(v["rule"], rule, "{addr}: {v}");
        assert_eq!(v["how"], how, "{addr}: {v}");
        let got: Vec<&str> = v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(got, targets, "{addr}");
    }
}

#[test]
fn wave_window_before_inside_after() {
    let f = fixture();
    assert_eq!(
        explain(&f, "carol@example.com", "2026-12-01T17:59:59Z")["rule"],
        "default"
    );
    let inside = explain(&f, "carol@example.com", "2026-12-01T18:00:00Z");
    assert_eq!(inside["rule"], "wave-1");
    assert!(
        inside["source"].as_str().unwrap().ends_with("wave-1.txt:3"),
        "{inside}"
    );
    assert_eq!(inside["active_from"], "2026-12-01T18:00:00Z");
    assert_eq!(
        explain(&f, "carol@example.com", "2026-12-08T18:00:00Z")["rule"],
        "default"
    );
}

#[test]
fn final_address_after_rcpt_domain_rewrite() {
    let f = fixture();
    let v = explain(&f, "bob@example.com", INSIDE);
    let t = v["targets"].as_array().unwrap();
    assert_eq!(t[0]["final_address"], "bob@example.com");
    assert_eq!(
        t[1]["final_address"],
        "bob@example-com.mail.onmicrosoft.com"
    );
}

#[test]
fn human_output_says_why() {
    let f = fixture();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "route",
            "explain",
            "alice+x@example.com",
            "--at",
            INSIDE,
            "-c",
            &f.config,
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("address:  alice+x@example.com"), "{s}");
    assert!(s.contains("rule:     wave-1 (rule[0])"), "{s}");
    assert!(
        s.contains("matched:  address without +extension \"alice@example.com\""),
        "{s}"
    );
    assert!(
        s.contains("window:   active from 2026-12-01T18:00:00Z until 2026-12-08T18:00:00Z"),
        "{s}"
    );
    assert!(
        s.contains("target:   new -> alice+x@example-com.mail.onmicrosoft.com"),
        "{s}"
    );
}

#[test]
fn unrouted_and_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        CONFIG
            .replace("default = [\"old\"]\n", "")
            .replace("wave-1.txt", "w.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join("w.txt"), "alice@example.com\n").unwrap();
    let run = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args([
                "route",
                "explain",
                addr,
                "--at",
                INSIDE,
                "-c",
                cfg.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let out = run("zed@example.com");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unrouted: the gateway answers 550 5.1.1")
    );
    // The answer comes from the intake's own RCPT decision: with reject_unrouted = false it is
    // 450 4.1.1, as the gateway says.
    std::fs::write(
        &cfg,
        CONFIG
            .replace("default = [\"old\"]\n", "")
            .replace("wave-1.txt", "w.txt")
            .replace("[gateway]\n", "[gateway]\nreject_unrouted = false\n"),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&run("zed@example.com").stdout).into_owned();
    assert!(
        text.contains("unrouted: the gateway answers 450 4.1.1"),
        "{text}"
    );
    // Relaying is what an internet client is told for another domain; trusted clients too when
    // no rule names it.
    let text = String::from_utf8_lossy(&run("x@elsewhere.example").stdout).into_owned();
    assert!(text.contains("550 5.7.1"), "{text}");
    let out = run("not-an-address");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an address"));
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "route",
            "explain",
            "a@example.com",
            "--at",
            "soon",
            "-c",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid time \"soon\""));
}
