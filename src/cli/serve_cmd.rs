//! `cutover serve` (owned by the intake work; not available yet).

use super::ConfigArg;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(_a: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("serve is not implemented in this build")
}
