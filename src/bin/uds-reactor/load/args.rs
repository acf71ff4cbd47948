//! `uds-reactor load`: arguments and entry point. The work is in
//! [`generate`].

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use uds_reactor::config::parse_size;
use uds_reactor::{Address, Framing, SocketType};

use super::{generate, Limit, LoadConfig};
use crate::args::{self, parse_secs};

/// Drive a server with echo traffic and report throughput and latency.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Socket type (must match the server's).
    #[arg(long = "type", value_name = "TYPE", default_value = "stream", value_parser = args::socket_type())]
    socket_type: SocketType,

    /// Stream framing (must match the server's).
    #[arg(long, value_name = "FRAMING", default_value = "raw", value_parser = args::framing())]
    framing: Framing,

    /// Connections (datagram sockets) driven at once.
    #[arg(short = 'c', long, value_name = "CONNECTIONS", default_value_t = 1)]
    connections: usize,

    /// Payload bytes per message (or with K/M/G).
    #[arg(short = 's', long, value_name = "SIZE", default_value = "64", value_parser = parse_size)]
    size: usize,

    /// Messages in flight per connection.
    #[arg(short = 'P', long, value_name = "PIPELINE", default_value_t = 1)]
    pipeline: usize,

    /// Messages in all (echo cycles with --churn) [default: 100000].
    #[arg(
        short = 'n',
        long,
        value_name = "MESSAGES",
        conflicts_with = "duration"
    )]
    messages: Option<u64>,

    /// Run for this long instead, then wait for the messages in flight.
    #[arg(short = 'd', long, value_name = "SECONDS", value_parser = parse_secs)]
    duration: Option<Duration>,

    /// Connect, echo one message, close, repeat; reports conns/s.
    #[arg(long)]
    churn: bool,

    /// Attach K descriptors (K distinct open files) to every message and
    /// check that the same files come back with each echo; reports fds/s.
    #[arg(long, value_name = "K", default_value_t = 0)]
    fds: usize,

    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,

    /// Fail when no echo comes back for this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    timeout: Duration,

    /// Server socket path, or @name for an abstract address.
    #[arg(value_name = "PATH|@name")]
    path: OsString,
}

/// Runs the load subcommand: 0 when every message was echoed intact, 1
/// for a runtime or verification error, 2 for a usage error.
pub fn run(args: LoadArgs) -> ExitCode {
    let json = args.json;
    let config = match config_from(args) {
        Ok(config) => config,
        Err(msg) => crate::usage_error(Some("load"), &msg),
    };
    match generate(&config) {
        Ok(report) if json => {
            println!("{}", report.to_json(&config));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.summary(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uds-reactor load: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn config_from(args: LoadArgs) -> Result<LoadConfig, String> {
    let limit = match (args.messages, args.duration) {
        (_, Some(d)) => Limit::Time(d),
        (Some(n), None) => Limit::Messages(n),
        (None, None) => Limit::Messages(100_000),
    };
    let config = LoadConfig {
        address: Address::parse(&args.path),
        socket_type: args.socket_type,
        framing: args.framing,
        connections: args.connections,
        size: args.size,
        pipeline: args.pipeline,
        limit,
        churn: args.churn,
        fds: args.fds,
        stall_timeout: args.timeout.max(Duration::from_millis(1)),
        progress: std::io::stderr().is_terminal(),
        handle_signals: true,
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}
