//! The `uds-reactor` binary: parse the command line, set up logging, run
//! the library's server, map the outcome to an exit status.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
