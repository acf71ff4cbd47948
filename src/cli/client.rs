//! `uds-reactor client`: arguments and entry point (owned by the client work).

use std::process::ExitCode;

/// Connect to a uds-reactor (or any Unix socket) and pipe stdin/stdout.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {}

/// Runs the client subcommand.
pub fn run(_args: ClientArgs) -> ExitCode {
    ExitCode::from(1)
}
