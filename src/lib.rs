//! cutover: a mail-migration gateway.

pub mod address;
pub mod admin;
pub mod alerts;
pub mod auth;
pub mod backfill;
pub mod bounce;
pub mod config;
pub mod convert;
pub mod demo;
pub mod dnscheck;
pub mod fault;
pub mod fingerprint;
pub mod header;
pub mod http_client;
pub mod inbound;
pub mod ledger;
pub mod loader;
pub mod outbound;
pub mod own_thread;
pub mod queue;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod time;
pub mod tls_client;
pub mod waves;
