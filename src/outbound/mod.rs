//! Outbound delivery: the scheduler that picks due legs, the SMTP client (mail-send), target
//! resolution (static address or MX via hickory), TLS/AUTH policy (its TLS settings from
//! `crate::tls_client`), how to reach a target
//! (`dial`, shared with recipient probes) and reply classification. Never decides routes: legs
//! arrive from the queue already routed.

pub mod client;
pub mod dial;
pub mod mx;
pub mod reply;
pub mod resolve;
pub mod retry;
pub mod scheduler;
pub mod settings;
pub mod stats;
pub mod tnef;
