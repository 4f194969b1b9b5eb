//! cutover: a mail-migration gateway.

pub mod admin;
pub mod bounce;
pub mod config;
pub mod demo;
pub mod inbound;
pub mod outbound;
pub mod queue;
pub mod routing;
pub mod server;
