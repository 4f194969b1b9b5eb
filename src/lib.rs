//! cutover: a mail-migration gateway.

pub mod config;
pub mod queue;
pub mod routing;
pub mod bounce;
pub mod outbound;
