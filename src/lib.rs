//! cutover: a mail-migration gateway.

pub mod backfill;
pub mod config;
pub mod fingerprint;
pub mod ledger;
pub mod queue;
pub mod routing;
