//! The delivery engine's unlabelled counters (the per-target ones are in `crate::telemetry`),
//! exported on `/metrics`: plain atomics, written by the scheduler and read by the admin renderer. A leaf: it depends on nothing in the crate, so admin
//! reads them without depending on the scheduler. Never decides or logs anything.

use std::sync::atomic::AtomicU64;

/// Counters exported on /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub dsn_failure: AtomicU64,
    pub dsn_delay: AtomicU64,
    /// Dual-delivery legs that failed while another leg delivered (operator problem, no DSN).
    pub dual_leg_failures: AtomicU64,
    pub target_backoffs: AtomicU64,
    pub connections_opened: AtomicU64,
}
