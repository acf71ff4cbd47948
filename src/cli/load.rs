//! `uds-reactor load`: arguments and entry point (owned by the load-generator work).

use std::process::ExitCode;

/// Drive a server with echo traffic and report throughput and latency.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {}

/// Runs the load subcommand.
pub fn run(_args: LoadArgs) -> ExitCode {
    ExitCode::from(1)
}
