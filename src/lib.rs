//! cutover: a mail-migration gateway.

pub mod admin;
pub mod config;
pub mod inbound;
pub mod queue;
pub mod routing;
