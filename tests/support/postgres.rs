//! Test fixture: a private, throw-away PostgreSQL server (Debian's `postgresql` package) on a free
//! loopback port, for the tests of the PostgreSQL-backed shared ledger and backfill leases.
//!
//! Owns: a temp dir (`data/` made by `initdb`, `sock/` for the unix socket, `server.log`), one
//! postmaster started with `pg_ctl start -w` on `127.0.0.1:<free port>`, the superuser role `cutover`
//! (made by `initdb -U cutover`) and the database `cutover` (initdb's `postgres` database renamed, so
//! there is no `postgres` database; `template1` is there). Authentication is `trust` (`initdb -A
//! trust`); the server listens on 127.0.0.1 and its private socket only, so that means loopback only.
//! Must never: bind anything but 127.0.0.1, use a fixed port, touch a system cluster (/etc/postgresql,
//! /var/lib/postgresql, /var/run/postgresql, port 5432), turn `fsync` off (a test checks durability),
//! wait without a bound, or leave a postgres process behind (Drop: `pg_ctl stop -m immediate`, then
//! SIGKILL to the postmaster's process group).
//!
//! Binaries: `initdb`, `pg_ctl`, `postgres` live in `/usr/lib/postgresql/<major>/bin` (not on `$PATH`);
//! the highest major there is used, and its `psql` too (not `/usr/bin/psql`, the pg_wrapper script).
//! `initdb`/`postgres` refuse to run as root: when the test runs as root they run as the `postgres`
//! system user the package creates (`Command::uid/gid`, supplementary groups dropped), the temp dir is
//! chowned to it, and their working directory is the temp dir (they fail on a cwd they cannot read).
//! The temp dir's parent (`$TMPDIR`, normally /tmp) must be searchable by that user. Run as another user,
//! everything runs as that user. `psql` (a client) always runs as the caller.
//!
//! Skip policy: no `initdb` or no `postgres` user (package not installed) → [`Postgres::start`] calls
//! `skip_or_fail` and returns `None` (a panic under `CI=true`). Anything else that goes wrong panics
//! with the server log's tail.
//!
//! Include with `#[path = "support/postgres.rs"] mod postgres;` plus `common.rs`.
//!
//! ```ignore
//! let Some(pg) = Postgres::start() else { return };
//! let url = pg.url();                        // postgres://cutover@127.0.0.1:PORT/cutover
//! pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
//! pg.stop();                                 // outage: connections refused, data kept
//! pg.start_again();
//! pg.crash();                                // immediate stop: recovery on the next start
//! pg.start_again();                          // same data dir and port
//! assert_eq!(pg.psql("SELECT x FROM t"), "1");
//! ```
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, skip_or_fail, tail_of};

/// Where Debian installs each major version's server binaries.
const LIB_DIR: &str = "/usr/lib/postgresql";
/// The system user the package creates; the server runs as it when the test runs as root.
const PG_USER: &str = "postgres";
const ROLE: &str = "cutover";
const DATABASE: &str = "cutover";
/// Bound of `pg_ctl start -w` / `stop -w` (seconds).
const WAIT_SECS: u64 = 20;
/// Starts tried on fresh ports when the chosen port was taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// Server settings appended to `postgresql.conf` (the port is passed on each start).
const SETTINGS: &str = "listen_addresses = '127.0.0.1'\n\
    shared_buffers = 16MB\n\
    max_connections = 100\n\
    logging_collector = off\n\
    log_min_messages = warning\n";

/// A running (or, after [`Postgres::stop`], stopped) private PostgreSQL server.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// (uid, gid) the server runs as: `postgres` when the test is root, else `None` (the caller).
    owner: Option<(u32, u32)>,
    startup: Duration,
}

/// `/usr/lib/postgresql/<highest major>/bin`, if one holds `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    std::fs::read_dir(LIB_DIR)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// (uid, gid) of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
}

/// The binaries and the user to run them as, or why PostgreSQL cannot run here.
fn prerequisites() -> Result<(PathBuf, Option<(u32, u32)>), String> {
    let missing = "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)";
    let bin = bin_dir().ok_or_else(|| format!("{missing}: no {LIB_DIR}/*/bin/initdb"))?;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok((bin, None));
    }
    let ids = user_ids(PG_USER).ok_or_else(|| format!("{missing}: no system user {PG_USER}"))?;
    Ok((bin, Some(ids)))
}

impl Postgres {
    /// initdb + `pg_ctl start` on 127.0.0.1:<free port>; role and database `cutover`. `None` (after
    /// `skip_or_fail`, which panics under `CI=true`) when PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let t0 = Instant::now();
        let (bin, owner) = match prerequisites() {
            Ok(p) => p,
            Err(why) => {
                skip_or_fail(&why);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("cutover-pg-")
            .tempdir()
            .expect("temp dir");
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            owner,
            startup: Duration::ZERO,
        };
        pg.init();
        pg.first_start();
        // The database initdb made, renamed: 0.1 s, where CREATE DATABASE (a copy of template1, with
        // fsync) takes over 1 s. template1 stays for connections that need another database.
        pg.psql_db(
            "template1",
            &format!("ALTER DATABASE postgres RENAME TO {DATABASE}"),
        );
        pg.startup = t0.elapsed();
        Some(pg)
    }

    /// `initdb` into `data/`, plus the fixed settings and the socket directory.
    fn init(&self) {
        std::fs::create_dir(self.sock_dir()).expect("mkdir sock");
        for p in [self.dir.path(), &self.sock_dir()] {
            self.give(p);
        }
        let out = self
            .as_server(&self.bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                ROLE,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg("--no-instructions")
            .arg("-D")
            .arg(self.data_dir())
            .output()
            .expect("run initdb");
        check(&out, "initdb", "");
        let sock = self.sock_dir();
        let conf = format!("{SETTINGS}unix_socket_directories = '{}'\n", sock.display());
        let file = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&file).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&file, text).expect("write postgresql.conf");
    }

    /// chown `p` to the server's user (when the test is root).
    fn give(&self, p: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
    }

    /// A command for a server binary: as the server's user, in the temp dir, no stdin.
    fn as_server(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Start on a free port; on a port taken meanwhile, again on another one (bounded).
    fn first_start(&mut self) {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            let out = self.pg_ctl_start();
            if out.status.success() {
                return;
            }
            last = self.failure("pg_ctl start", &out);
            if !last.contains("already in use") {
                break;
            }
        }
        panic!("{last}");
    }

    /// `pg_ctl start -w` on `self.port`: returns once the server accepts connections (or after
    /// [`WAIT_SECS`], failing). The postmaster's output goes to `server.log`, so no pipe stays open.
    fn pg_ctl_start(&self) -> Output {
        self.as_server(&self.bin.join("pg_ctl"))
            .args(["start", "-w", "-t", &WAIT_SECS.to_string()])
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &format!("-p {}", self.port)])
            .output()
            .expect("run pg_ctl start")
    }

    /// `pg_ctl stop -w -m <mode>` (bounded by `secs`).
    fn pg_ctl_stop(&self, mode: &str, secs: u64) -> std::io::Result<Output> {
        self.as_server(&self.bin.join("pg_ctl"))
            .args(["stop", "-w", "-t", &secs.to_string(), "-m", mode])
            .arg("-D")
            .arg(self.data_dir())
            .output()
    }

    /// A message naming `what`, its output and the server log's tail.
    fn failure(&self, what: &str, out: &Output) -> String {
        format!(
            "{what} failed ({}): {}{}\n--- server.log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail_of(&[self.log_file()], 30)
        )
    }

    /// `postgres://cutover@127.0.0.1:PORT/cutover`.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`initdb -D`), kept across [`stop`](Self::stop) / [`start_again`](Self::start_again).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The unix socket directory (`unix_socket_directories`).
    pub fn sock_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The postmaster's log (`pg_ctl -l`).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// How long [`start`](Self::start) took (initdb, start, database rename).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// `pg_ctl stop -m fast` (for outage tests): returns once the server is gone; data kept.
    /// Nothing to do when it is not running.
    pub fn stop(&self) {
        let Some(pid) = self.postmaster_pid().filter(|p| process_alive(*p)) else {
            return;
        };
        let out = self
            .pg_ctl_stop("fast", WAIT_SECS)
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "{}",
            self.failure("pg_ctl stop", &out)
        );
        // pg_ctl returns when postmaster.pid is gone, a moment before the process is.
        wait_gone(pid, Duration::from_secs(WAIT_SECS));
    }

    /// A crash (for durability tests): `pg_ctl stop -m immediate` (SIGQUIT, no shutdown checkpoint),
    /// then SIGKILL to the process group if the postmaster outlives 5 s; [`start_again`](Self::start_again)
    /// runs crash recovery from the WAL. Nothing to do when it is not running. Never panics.
    pub fn crash(&self) {
        let Some(pid) = self.postmaster_pid().filter(|p| process_alive(*p)) else {
            return;
        };
        let _ = self.pg_ctl_stop("immediate", 10);
        if !wait_gone(pid, Duration::from_secs(5)) {
            // SAFETY: kill(2) on the process group of the postmaster this fixture started.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            wait_gone(pid, Duration::from_secs(3));
        }
    }

    /// Start again after [`stop`](Self::stop): same data dir and port; returns once it accepts
    /// connections (at most [`WAIT_SECS`]). Nothing to do when it is running.
    pub fn start_again(&self) {
        if self.is_running() {
            return;
        }
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "{}",
            self.failure("pg_ctl start", &out)
        );
    }

    /// Is the postmaster alive (the pid in `postmaster.pid` is a live process)?
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(process_alive)
    }

    /// The pid on the first line of `postmaster.pid`, while that file exists.
    pub fn postmaster_pid(&self) -> Option<libc::pid_t> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok().filter(|p| *p > 0)
    }

    /// Run `sql` with `psql -At` (tuples only, unaligned; rows joined by `\n`, columns by `|`) in the
    /// database `cutover`; its output without the final newline. Several statements separated by
    /// `;` run in one implicit transaction. Panics with psql's stderr on any error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db(DATABASE, sql)
    }

    /// [`psql`](Self::psql) in database `db`. Bounded: connect timeout 10 s, statements 60 s.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                ROLE,
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGOPTIONS", "-c statement_timeout=60s")
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        check(&out, "psql", sql);
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }
}

/// Panic with `what`, `detail` and stderr unless `out` succeeded.
fn check(out: &Output, what: &str, detail: &str) {
    assert!(
        out.status.success(),
        "{what} {detail:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

impl Drop for Postgres {
    /// [`crash`](Postgres::crash): `pg_ctl stop -m immediate` (bounded), SIGKILL to the
    /// postmaster's process group (pg_ctl makes it a session leader) if it is still there.
    fn drop(&mut self) {
        self.crash();
    }
}

/// Does process `pid` exist and is it not a zombie (an exited server its reaper has not reaped)?
pub fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces or parentheses, so after the last ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Wait (at most `limit`) until `pid` is gone; true if it is.
fn wait_gone(pid: libc::pid_t, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
