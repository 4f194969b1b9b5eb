//! `cutover backfill ...` (owned by the backfill work; not available yet).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BackfillCmd {}

pub fn run(cmd: BackfillCmd) -> anyhow::Result<ExitCode> {
    match cmd {}
}
