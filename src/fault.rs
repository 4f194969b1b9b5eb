//! Test-only fault points: `fault_point("name")` aborts the process (like a kill -9 or a power
//! cut at that instant) when the environment variable `CUTOVER_FAULT` names it. Compiled to
//! nothing in release builds; the crash tests use the debug binary. Never used for control
//! flow.

/// Abort here if `CUTOVER_FAULT` equals `name` (debug builds only).
#[inline]
pub fn fault_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("CUTOVER_FAULT").is_ok_and(|v| v == name) {
        eprintln!("cutover: fault point {name}: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
