//! Test helper for the backfill tests: writes a job config (TOML + mailboxes CSV) in a temp dir,
//! runs the real `cutover backfill run|status` binary, and reads its JSON report.
//! Must never: talk IMAP itself (use dovecot.rs / imapcheck.rs), or depend on files other tests own.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One job under test.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// An IMAP side as TOML inline-table body (without braces).
pub fn plain_side(port: u16, password_file: &Path) -> String {
    format!(
        r#"host = "127.0.0.1", port = {port}, tls = "none", auth = "plain", password_file = "{}""#,
        password_file.display()
    )
}

impl Job {
    /// `source`/`destination`: inline-table bodies; `extra`: more `[[backfill.job]]` keys;
    /// `mailboxes`: CSV lines; `top`: extra top-level TOML (e.g. `[admin]`).
    pub fn new(source: &str, destination: &str, mailboxes: &str, extra: &str, top: &str) -> Job {
        let dir = tempfile::Builder::new()
            .prefix("cutover-bf-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("mailboxes.csv"), mailboxes).unwrap();
        let cfg = format!(
            r#"[gateway]
state_dir = "{state}"
accept_domains = ["example.com"]
[targets.old]
address = "127.0.0.1:25"
[targets.new]
address = "127.0.0.1:25"
{top}
[[backfill.job]]
name = "t"
source = {{ {source} }}
destination = {{ {destination} }}
mailboxes_file = "mailboxes.csv"
{extra}
"#,
            state = dir.path().join("state").display()
        );
        std::fs::write(dir.path().join("cutover.toml"), cfg).unwrap();
        Job {
            dir,
            name: "t".into(),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cutover.toml")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The command line for `backfill run` (not started).
    pub fn run_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.arg("backfill")
            .arg("run")
            .arg(&self.name)
            .arg("-c")
            .arg(self.config())
            .arg("-q")
            .args(args)
            .env("CUTOVER_LOG", "info");
        c
    }

    /// The command line for `backfill worker` as fleet member `instance` (not started).
    pub fn worker_cmd(&self, instance: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.args(["backfill", "worker", &self.name, "--json", "-q", "-c"])
            .arg(self.config())
            .env("CUTOVER_INSTANCE", instance)
            .env("CUTOVER_LOG", "info");
        c
    }

    /// Run one pass; returns (output, report).
    pub fn run(&self, args: &[&str]) -> (Output, serde_json::Value) {
        let report = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report);
        let out = self
            .run_cmd(args)
            .arg("--report")
            .arg(&report)
            .output()
            .expect("run cutover");
        let r = std::fs::read(&report)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        (out, r)
    }

    /// Run one pass and insist it converged.
    pub fn run_ok(&self, args: &[&str]) -> serde_json::Value {
        let (out, r) = self.run(args);
        assert!(
            out.status.success(),
            "backfill failed ({}):\nstdout:\n{}\nstderr:\n{}\nreport: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            serde_json::to_string_pretty(&r).unwrap_or_default()
        );
        assert_eq!(r["converged"], true, "{r:#}");
        r
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["backfill", "status", &self.name, "--json", "-c"])
            .arg(self.config())
            .output()
            .expect("run cutover status");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// Total `copied` of a report.
pub fn copied(r: &serde_json::Value) -> u64 {
    r["copied"].as_u64().unwrap_or(u64::MAX)
}

/// The folder report `name` of the first mailbox.
pub fn folder<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["mailboxes"][0]["folders"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["folder"] == name))
        .unwrap_or_else(|| panic!("no folder {name} in report {r:#}"))
}
