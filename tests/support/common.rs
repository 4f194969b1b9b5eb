//! Helpers every test file shares: free loopback ports and the one skip policy.
//!
//! Include it once per test crate, at the crate root, as
//! `#[path = "support/common.rs"] mod common;` (the other support modules call it as
//! `crate::common`, so a test that includes them includes this too). It never starts processes.
//!
//! Skip policy: a test that cannot run here (a tool is missing, the machine cannot mount a
//! filesystem, no IPv6 loopback, …) calls [`skip_or_fail`] and returns. Under `CI=true` that
//! panics with the reason, so a missing prerequisite fails CI instead of passing with a
//! "skipping" line; elsewhere it prints one `skipping: …` line. Fixtures that cannot return
//! without the tool (Dovecot, Postfix, dnsmasq, smtp-sink) use [`required_tool`], which fails
//! everywhere.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Is this a CI run (`CI=true`)?
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The test cannot run here because of `reason`: under `CI=true` this panics; otherwise it
/// prints one `skipping: {reason}` line and the caller returns.
pub fn skip_or_fail(reason: &str) {
    assert!(!under_ci(), "CI=true, so this test may not skip: {reason}");
    eprintln!("skipping: {reason}");
}

/// The Debian package that provides `tool` (for messages; `.ci/run` installs them).
fn package_of(tool: &str) -> &'static str {
    match tool {
        "smtp-sink" | "smtp-source" | "postfix" => "postfix",
        "dovecot" | "dovecot-lda" => "dovecot-imapd",
        "dnsmasq" => "dnsmasq-base",
        "systemd-analyze" => "systemd",
        "strace" => "strace",
        "mkfs.ext4" => "e2fsprogs",
        "mount" | "umount" => "mount",
        _ => "?",
    }
}

/// Where to look besides `$PATH` (sbin is often not on a user's PATH; dovecot-lda lives apart).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/lib/dovecot"];

/// Path of the executable `tool` (a bare name searched in `$PATH` and the sbin directories, or
/// an absolute path), or a message naming the package that provides it.
pub fn find_tool(tool: &str) -> Result<PathBuf, String> {
    let name = Path::new(tool);
    let found = if name.is_absolute() {
        name.is_file().then(|| name.to_path_buf())
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(EXTRA_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    };
    found.ok_or_else(|| {
        let base = name
            .file_name()
            .map_or(tool.into(), |n| n.to_string_lossy());
        format!(
            "{tool} is not installed (Debian package {}; .ci/run installs it)",
            package_of(&base)
        )
    })
}

/// The skip policy for a tool: its path, or `None` after [`skip_or_fail`].
pub fn tool(tool: &str) -> Option<PathBuf> {
    find_tool(tool).map_err(|why| skip_or_fail(&why)).ok()
}

/// Path of a tool a fixture cannot do without: panics (everywhere) when it is missing.
pub fn required_tool(tool: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|why| panic!("{why}"))
}
