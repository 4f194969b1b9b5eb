//! `cutover demo`: a zero-setup tour. Embedded old/new stand-in servers writing Maildirs under
//! `./cutover-demo/`, cutover itself with an example config, sample traffic, and a table of
//! where each message went. Never used by `serve`.

pub mod standin;
