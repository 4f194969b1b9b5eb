//! The shipped systemd unit: required settings present, and `systemd-analyze verify` accepts it
//! when the tool exists on this machine.

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
    ] {
        assert!(UNIT.lines().any(|l| l.trim() == line), "missing {line:?}");
    }
}

#[test]
fn systemd_analyze_verify_accepts_it() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipping verify");
        return;
    }
    // verify wants the ExecStart binary to exist: point a copy of the unit at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_cutover");
    let unit = UNIT.replace("/usr/local/bin/cutover", bin);
    let path = dir.path().join("cutover.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
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
