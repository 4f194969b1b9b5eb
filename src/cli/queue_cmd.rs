//! `cutover queue ...` (owned by the intake work; not available yet).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum QueueCmd {}

pub fn run(cmd: QueueCmd) -> anyhow::Result<ExitCode> {
    match cmd {}
}
