//! `uds-reactor client`: arguments and entry point. The work is in
//! [`Client`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use uds_reactor::config::parse_size;
use uds_reactor::{Address, Framing, SocketType};

use super::{Client, ClientConfig};
use crate::args::{self, parse_secs};

/// Connect to a uds-reactor (or any Unix socket) and pipe stdin/stdout.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Socket type (must match the server's).
    #[arg(long = "type", value_name = "TYPE", default_value = "stream", value_parser = args::socket_type())]
    socket_type: SocketType,

    /// Stream framing: raw bytes; one line per frame; or each line's bytes
    /// behind a 4-byte big-endian length. Replies print one per line.
    #[arg(long, value_name = "FRAMING", default_value = "raw", value_parser = args::framing())]
    framing: Framing,

    /// Largest line sent or reply accepted (bytes, or with K/M/G).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_size)]
    max_frame: usize,

    /// dgram: after end of input, how long to wait for missing replies.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    wait: Duration,

    /// Open PATH read-only and send it with the first message (repeatable:
    /// all go with the first one). Descriptors that come back are reported
    /// on stderr as `fd N -> TARGET`.
    #[arg(long = "send-fd", value_name = "PATH")]
    send_fd: Vec<PathBuf>,

    /// Server socket path, or @name for an abstract address.
    #[arg(value_name = "PATH|@name")]
    path: OsString,
}

/// Runs the client subcommand: 0 when the server closed (or every datagram
/// was answered), 1 for a runtime error, 2 for a usage error.
pub fn run(args: ClientArgs) -> ExitCode {
    let config = match config_from(args) {
        Ok(config) => config,
        Err(msg) => crate::usage_error(Some("client"), &msg),
    };
    let client = match Client::connect(&config) {
        Ok(client) => client,
        Err(e) => return fail(&e),
    };
    if let Some(path) = client.local_path() {
        remove_on_signal(path.to_path_buf());
    }
    match client.run(std::io::stdin(), std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn config_from(args: ClientArgs) -> Result<ClientConfig, String> {
    let config = ClientConfig {
        address: Address::parse(&args.path),
        socket_type: args.socket_type,
        framing: args.framing,
        max_frame: args.max_frame,
        reply_wait: args.wait,
        send_fds: args.send_fd,
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn fail(e: &uds_reactor::Error) -> ExitCode {
    crate::fail("uds-reactor client", e)
}

/// A datagram client's socket file outlives a kill unless removed here:
/// on SIGINT/SIGTERM/SIGHUP, remove it and exit as the signal would.
fn remove_on_signal(path: std::path::PathBuf) {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("client-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = std::fs::remove_file(&path);
                std::process::exit(128 + signal);
            }
        });
    if spawned.is_err() {
        log::debug!("no signal thread: the socket file stays if killed");
    }
}
