//! The `uds-reactor` binary: parse the command line, run the library's
//! server (or the client, or the load generator), map the outcome to an
//! exit status. The library is the server; everything only the command
//! line needs lives here.
//!
//! `main` → [`run`] → exit status: 0 after a signal-initiated shutdown (or
//! a client or load run that went as asked), 1 for a runtime error, 2 for
//! a usage error. A runtime error is one line on stderr; a usage error
//! reads like clap's own.

// Every system call the library lacks is in its `sys` module; none here.
#![forbid(unsafe_code)]

mod args;
mod client;
mod load;
mod logging;
mod serve;
mod socket;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use uds_reactor::Error;

/// A single-threaded Unix-domain-socket echo server (stream, seqpacket,
/// dgram; raw, line or length framing).
#[derive(Parser, Debug)]
#[command(
    name = "uds-reactor",
    version,
    args_conflicts_with_subcommands = true,
    after_help = serve::AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect to a socket: stdin to the socket, the socket to stdout
    /// (like `nc -U`, aware of types and framings).
    Client(client::ClientArgs),
    /// Load generator: drive a server with echo traffic, verify every byte,
    /// report msgs/s, MB/s and latency (like `redis-benchmark`).
    Load(load::LoadArgs),
}

fn main() -> ExitCode {
    run()
}

/// Parses the command line and runs what it asks for. Usage errors clap
/// finds exit here, with status 2, in clap's words.
fn run() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        None => {
            reject_extra(&cli.serve);
            serve::run(cli.serve, &matches)
        }
        Some(Command::Client(args)) => client::run(args),
        Some(Command::Load(args)) => load::run(args),
    }
}

/// A second PATH is a usage error naming it. clap cannot say so itself:
/// with subcommands beside an optional PATH it reads the extra word as a
/// subcommand and complains about that instead, so [`serve::ServeArgs`]
/// collects extra words and they are refused here, in clap's own words
/// (a subcommand's name after PATH keeps clap's message for it).
fn reject_extra(args: &serve::ServeArgs) {
    let Some(extra) = args.extra.first() else {
        return;
    };
    let extra = extra.to_string_lossy().into_owned();
    let mut cmd = Cli::command();
    cmd.build();
    let usage = cmd.render_usage();
    let mut err = if cmd.find_subcommand(&extra).is_some() {
        let mut err = clap::Error::new(ErrorKind::ArgumentConflict).with_cmd(&cmd);
        err.insert(ContextKind::InvalidSubcommand, ContextValue::String(extra));
        err.insert(ContextKind::PriorArg, ContextValue::String("[PATH]".into()));
        err
    } else {
        let mut err = clap::Error::new(ErrorKind::UnknownArgument).with_cmd(&cmd);
        err.insert(ContextKind::InvalidArg, ContextValue::String(extra));
        err
    };
    err.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
    err.exit()
}

/// The exit status for an error: 2 for a usage error (bad settings), 1 for
/// everything else.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Config(_) => 2,
        _ => 1,
    }
}

/// Reports an error that ended a run: one line on stderr, under `prefix`
/// (`uds-reactor client`, ...), and its exit status.
fn fail(prefix: &str, e: &Error) -> ExitCode {
    eprintln!("{prefix}: {e}");
    ExitCode::from(exit_code(e))
}

/// Exits 2 with a usage error in the style of clap's own, with the usage
/// of `subcommand` (or of the server, for `None`).
fn usage_error(subcommand: Option<&str>, msg: &str) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let sub = subcommand.and_then(|name| cmd.find_subcommand_mut(name));
    match sub {
        Some(sub) => sub.error(ErrorKind::ArgumentConflict, msg).exit(),
        None => cmd.error(ErrorKind::ArgumentConflict, msg).exit(),
    }
}
