//! The shipped systemd unit: required settings present (among them the restart policy the
//! storage watchdog relies on), and `systemd-analyze verify` accepts it when the tool exists on
//! this machine (the skip policy of tests/support/common.rs: under `CI=true` a missing tool is a
//! failure).

#[path = "support/common.rs"]
mod common;

use std::process::Command;

const UNIT: &str = include_str!("../systemd/cutover.service");

#[test]
fn unit_has_the_required_settings() {
    for line in [
        "Type=exec",
        "ExecStart=/usr/local/bin/cutover serve -c /etc/cutover/cutover.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=cutover",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "Restart=on-failure",
        "StartLimitIntervalSec=0",
    ] {
        assert!(UNIT.lines().any(|l| l.trim() == line), "missing {line:?}");
    }
}

/// After a storage failure (exit 75) systemd must restart it, neither in a tight loop nor after
/// minutes of lost mail.
#[test]
fn unit_restarts_after_a_failure_at_a_sane_pace() {
    let sec: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RestartSec="))
        .collect();
    assert_eq!(sec.len(), 1, "one RestartSec= expected: {sec:?}");
    let d = humantime::parse_duration(sec[0]).unwrap();
    assert!(
        d >= std::time::Duration::from_secs(1) && d <= std::time::Duration::from_secs(60),
        "RestartSec={}",
        sec[0]
    );
    // Exit 75 must count as a failure (not listed as a success status, not excluded from restart).
    for key in ["SuccessExitStatus=", "RestartPreventExitStatus="] {
        assert!(
            !UNIT
                .lines()
                .any(|l| l.trim().starts_with(key) && l.contains("75")),
            "{key} must not list 75"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_it() {
    let Some(analyze) = common::tool("systemd-analyze") else {
        return;
    };
    // verify wants the ExecStart binary to exist: point a copy of the unit at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_cutover");
    let unit = UNIT.replace("/usr/local/bin/cutover", bin);
    let path = dir.path().join("cutover.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about our unit are what matter; a container without a running systemd may print
    // unrelated complaints about other units.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cutover.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}
