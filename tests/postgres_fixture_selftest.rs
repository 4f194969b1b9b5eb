//! Self-test of the PostgreSQL fixture (tests/support/postgres.rs): it starts (time printed, not
//! asserted), psql writes and reads through the URL's port, `stop()` refuses connections, data
//! survives `start_again()` on the same port, committed rows survive `crash()`, instances run side by side, and Drop leaves no
//! postgres process behind.

#[path = "support/common.rs"]
mod common;
#[path = "support/postgres.rs"]
mod postgres;

use postgres::Postgres;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Can something connect to 127.0.0.1:`port`?
fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Pids of processes whose command line mentions `needle` (procfs; this test's own excluded).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[test]
fn start_stop_start_again_keeps_data() {
    let Some(pg) = Postgres::start() else { return };
    eprintln!(
        "postgres: started in {:?} at {}",
        pg.startup_time(),
        pg.url()
    );
    assert_eq!(
        pg.url(),
        format!("postgres://cutover@127.0.0.1:{}/cutover", pg.port())
    );
    assert!(pg.is_running());
    assert!(accepts(pg.port()));
    assert_eq!(
        pg.psql("SELECT current_user || '@' || current_database()"),
        "cutover@cutover"
    );
    assert_eq!(pg.psql("SHOW fsync"), "on");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')");
    assert_eq!(pg.psql("SELECT id, v FROM t"), "1|one");

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        !accepts(pg.port()),
        "port {} still accepts after stop()",
        pg.port()
    );
    pg.stop(); // idempotent

    pg.start_again();
    assert!(pg.is_running());
    assert!(accepts(pg.port()));
    assert_eq!(pg.psql("SELECT id, v FROM t"), "1|one");

    let data = pg.data_dir();
    let pid = pg.postmaster_pid().expect("postmaster.pid");
    assert!(
        !processes_mentioning(&data).is_empty(),
        "no process names {}",
        data.display()
    );
    drop(pg);
    assert_eq!(
        processes_mentioning(&data),
        Vec::<u32>::new(),
        "left behind"
    );
    assert!(!postgres::process_alive(pid), "postmaster {pid} alive");
}

#[test]
fn psql_error_panics_with_stderr() {
    let Some(pg) = Postgres::start() else { return };
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pg.psql("SELECT * FROM no_such_table")
    }))
    .expect_err("psql on a missing table must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no_such_table"), "{msg}");
}

#[test]
fn instances_run_side_by_side_and_drop_after_stop() {
    let Some(a) = Postgres::start() else { return };
    let Some(b) = Postgres::start() else { return };
    assert_ne!(a.port(), b.port());
    a.psql("CREATE TABLE only_a (x int)");
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_a'"),
        "0"
    );
    let data = a.data_dir();
    a.stop();
    drop(a); // already stopped: Drop returns at once
    assert!(processes_mentioning(&data).is_empty());
    assert_eq!(b.psql("SELECT 1"), "1");
}

#[test]
fn committed_rows_survive_a_crash() {
    let Some(pg) = Postgres::start() else { return };
    pg.psql("CREATE TABLE ledger (id int PRIMARY KEY)");
    pg.psql("INSERT INTO ledger SELECT generate_series(1, 1000)");
    pg.crash();
    assert!(!pg.is_running());
    assert!(!accepts(pg.port()));
    pg.start_again();
    assert_eq!(pg.psql("SELECT count(*) FROM ledger"), "1000");
    assert!(
        std::fs::read_to_string(pg.log_file())
            .unwrap_or_default()
            .contains("not properly shut down"),
        "no crash recovery in the log"
    );
}
