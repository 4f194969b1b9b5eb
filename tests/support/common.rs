//! Helpers every test file shares: free loopback ports and the one skip policy.
//!
//! Include it once per test crate, at the crate root, as
//! `#[path = "support/common.rs"] mod common;` (the other support modules call it as
//! `crate::common`, so a test that includes them includes this too). It never starts processes; it
//! only holds the small pieces the server fixtures share (greeting probe, process-group stop, file
//! modes, log tails).
//!
//! Skip policy: a test that cannot run here (a tool is missing, the machine cannot mount a
//! filesystem, no IPv6 loopback, …) calls [`skip_or_fail`] and returns. Under `CI=true` that
//! panics with the reason, so a missing prerequisite fails CI instead of passing with a
//! "skipping" line; elsewhere it prints one `skipping: …` line. Fixtures that cannot return
//! without the tool (Dovecot, Postfix, dnsmasq, smtp-sink) use [`required_tool`], which fails
//! everywhere.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

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
        "master" | "imapd" | "ctl_cyrusdb" => "cyrus-imapd (unpacked by .ci/install-cyrus.sh)",
        "dnsmasq" => "dnsmasq-base",
        "systemd-analyze" => "systemd",
        "strace" => "strace",
        "mkfs.ext4" => "e2fsprogs",
        "mount" | "umount" => "mount",
        "promtool" => "prometheus",
        "dkimsign" | "dkimverify" | "arcsign" | "arcverify" => "python3-dkim",
        "openssl" => "openssl",
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

/// Connect to `addr`, read one line: true if it is an IMAP `* OK` greeting.
pub fn greeting_ok(addr: SocketAddr) -> bool {
    let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(_) => line.starts_with("* OK"),
        Err(_) => false,
    }
}

/// Stop a server started as the leader of its own process group (`process_group(0)`) and reap
/// it. Idempotent (`None`: nothing to do). SIGTERM goes to the whole group, SIGKILL after 3 s.
pub fn stop_group(child: &mut Option<Child>) {
    let Some(mut child) = child.take() else {
        return;
    };
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the process group we created for our own, not yet reaped, child.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(Some(_)) => break,
            _ => {
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
}

/// chmod.
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The last `n` lines of the concatenation of `files` (missing files read as empty).
pub fn tail_of(files: &[PathBuf], n: usize) -> String {
    let mut s = String::new();
    for f in files {
        s.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Panics unless `user` is a plausible test user name: ASCII letters, digits, `_`, `-` and the
/// characters of `extra` (the fixtures' passwd files and mailbox names rely on it).
pub fn check_user_name(user: &str, extra: &str) {
    assert!(
        !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c) || extra.contains(c)),
        "bad test user name {user:?}"
    );
}

/// Write the fixture password `pw-<user>` (no newline) to `<dir>/secrets/<user>.pass`, mode 0600,
/// and return its path (for `password_file` in job configs).
pub fn write_secret(dir: &Path, user: &str) -> PathBuf {
    let dir = dir.join("secrets");
    std::fs::create_dir_all(&dir).expect("mkdir secrets");
    let p = dir.join(format!("{user}.pass"));
    std::fs::write(&p, format!("pw-{user}")).expect("write secret");
    set_mode(&p, 0o600);
    p
}
