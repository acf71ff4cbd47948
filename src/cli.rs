//! Command-line parsing: clap definitions, the checks clap cannot express,
//! and the mapping from outcomes to exit statuses. No socket code.

mod client;
mod load;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

use uds_reactor::config::{parse_mode, parse_size};
use uds_reactor::{Address, Config, Framing, Group, Server, SocketType};

const AFTER_HELP: &str = "\
Sizes take plain bytes or a K, M or G suffix (powers of 1024).

Signals: SIGINT/SIGTERM/SIGHUP stop accepting, remove the socket file and
flush pending output for up to --drain-timeout (a second signal exits at
once); SIGUSR1 logs one 'stats key=value ...' line.

Environment: LISTEN_PID/LISTEN_FDS (systemd socket activation: serve the
inherited descriptor 3; PATH may be omitted), NOTIFY_SOCKET (READY=1 once
listening, STOPPING=1 at shutdown), JOURNAL_STREAM (log without timestamps).

Exit status: 0 after a signal, 1 on a runtime error, 2 on a usage error.";

/// A single-threaded Unix-domain-socket echo server (stream, seqpacket,
/// dgram; raw, line or length framing).
#[derive(Parser, Debug)]
#[command(
    name = "uds-reactor",
    version,
    args_conflicts_with_subcommands = true,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
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

/// The server's options (SPEC "Command line").
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Socket path, or @name for a Linux abstract address. May be omitted
    /// under systemd socket activation.
    #[arg(value_name = "PATH")]
    path: Option<OsString>,

    /// Socket type.
    #[arg(long = "type", value_name = "TYPE", default_value = "stream", value_parser = ["stream", "seqpacket", "dgram"])]
    socket_type: String,

    /// Stream framing: raw bytes, newline-terminated lines, or 4-byte
    /// big-endian length prefixes. Stream sockets only.
    #[arg(long, value_name = "FRAMING", default_value = "raw", value_parser = ["raw", "line", "length"])]
    framing: String,

    /// Largest frame payload accepted (bytes, or with K/M/G).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_size)]
    max_frame: usize,

    /// Per-connection cap on unsent output; past it, reading that peer
    /// pauses until it drains.
    #[arg(long, value_name = "BYTES", default_value = "256K", value_parser = parse_size)]
    max_buffer: usize,

    /// Exact permissions of the socket file, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    mode: u32,

    /// Group owner of the socket file.
    #[arg(long, value_name = "NAME|GID")]
    group: Option<Group>,

    /// Serve only peers with this uid (repeatable; SO_PEERCRED).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,

    /// ... or with this gid (repeatable).
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gid: Vec<u32>,

    /// Further connections are accepted and closed at once [default: what
    /// the open-file limit allows].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Close connections with no traffic for this long; 0 = never.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs, allow_hyphen_values = true)]
    idle_timeout: Duration,

    /// On shutdown, how long pending output may still be flushed.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs, allow_hyphen_values = true)]
    drain_timeout: Duration,

    /// Listen backlog.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        allow_negative_numbers = true
    )]
    backlog: i32,

    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    log_level: LevelFilter,

    /// More logging (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less logging (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
}

/// Runs the binary: 0 after a signal-initiated shutdown, 1 for a runtime
/// error, 2 for a usage error; errors are one line on stderr.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        None => serve(cli.serve, &matches),
        Some(Command::Client(args)) => client::run(args),
        Some(Command::Load(args)) => load::run(args),
    }
}

fn serve(args: ServeArgs, matches: &ArgMatches) -> ExitCode {
    init_logging(level(args.log_level, args.verbose, args.quiet));
    // A daemon's choice (SPEC "Running"), not the library's.
    if let Err(e) = uds_reactor::raise_open_file_limit() {
        log::debug!("cannot read the open-file limit: {e}");
    }
    let config = match config_from(args, matches) {
        Ok(config) => config,
        Err(msg) => Cli::command()
            .error(ErrorKind::ArgumentConflict, msg)
            .exit(),
    };
    let result = Server::bind(config).and_then(|mut server| {
        server.handle_signals()?;
        server.run()
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uds-reactor: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Builds the library's config, rejecting options that make no sense
/// together (clap cannot express these).
fn config_from(args: ServeArgs, matches: &ArgMatches) -> Result<Config, String> {
    let given = |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine));
    let socket_type: SocketType = args.socket_type.parse()?;
    let framing: Framing = args.framing.parse()?;
    if args.path.as_ref().is_some_and(|p| p.is_empty()) {
        return Err("the socket PATH is empty".into());
    }
    let address = args.path.as_deref().map(Address::parse);
    if socket_type == SocketType::Dgram {
        for flag in ["backlog", "max_connections", "idle_timeout"] {
            if given(flag) {
                return Err(format!(
                    "--{} does not apply to --type dgram (a datagram socket has no connections)",
                    flag.replace('_', "-")
                ));
            }
        }
    }
    if matches!(address, Some(Address::Abstract(_))) && (given("mode") || given("group")) {
        return Err(
            "--mode and --group apply to socket files; an abstract address (@name) has none".into(),
        );
    }
    let config = Config {
        address,
        socket_type,
        framing,
        max_frame: args.max_frame,
        max_buffer: args.max_buffer,
        mode: args.mode,
        group: args.group,
        allow_uids: args.allow_uid,
        allow_gids: args.allow_gid,
        max_connections: args.max_connections,
        idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
        drain_timeout: args.drain_timeout,
        backlog: args.backlog,
        systemd: true,
    };
    config.validate().map_err(|e| e.to_string())?;
    if config.address.is_none() && !activated() {
        return Err("a PATH is required (unless started by systemd socket activation)".into());
    }
    Ok(config)
}

/// Whether systemd passed us sockets: `LISTEN_FDS` set and `LISTEN_PID`
/// naming this process (otherwise the variables are someone else's).
fn activated() -> bool {
    let ours = std::env::var("LISTEN_PID").is_ok_and(|pid| pid == std::process::id().to_string());
    ours && std::env::var_os("LISTEN_FDS").is_some()
}

/// Parses `--log-level`, listing the choices when the value is not one.
fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not a log level (off, error, warn, info, debug, trace)"))
}

/// `--log-level` stepped up by `-v` and down by `-q`.
fn level(base: LevelFilter, verbose: u8, quiet: u8) -> LevelFilter {
    const LEVELS: [LevelFilter; 6] = [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    let at = LEVELS.iter().position(|l| *l == base).unwrap_or(3) as i32;
    let at = (at + i32::from(verbose) - i32::from(quiet)).clamp(0, 5);
    LEVELS[at as usize]
}

/// Logs to stderr, one line each, without module paths, and only our own
/// crate's lines (mio's trace lines are noise to an operator). Under
/// journald (`JOURNAL_STREAM` set) the journal stamps each line itself, so
/// ours carry no time.
pub fn init_logging(level: LevelFilter) {
    let mut builder = ConfigBuilder::new();
    builder
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_allow_str("uds_reactor")
        .set_time_format_rfc3339();
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.set_time_level(LevelFilter::Off);
    }
    let config = builder.build();
    // Only fails if a logger is already set, which cannot happen here.
    let _ = WriteLogger::init(level, config, std::io::stderr());
}

/// Parses whole or fractional seconds.
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
}
