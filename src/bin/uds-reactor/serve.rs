//! The default command, serving: its options, the `Config` they build
//! (with the checks clap cannot express), and the run of the library's
//! server. No socket code.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use log::LevelFilter;

use uds_reactor::config::{parse_mode, parse_size};
use uds_reactor::{Address, Config, Error, Framing, Group, Program, Server, SocketType};

use crate::args::{self, parse_level, parse_secs};
use crate::logging;

/// The server's `--help` epilogue.
pub const AFTER_HELP: &str = "\
Sizes take plain bytes or a K, M or G suffix (powers of 1024).

Signals: SIGINT/SIGTERM/SIGHUP stop accepting, remove the socket file and
flush pending output for up to --drain-timeout (a second signal exits at
once); SIGUSR1 logs one 'stats key=value ...' line; SIGUSR2 upgrades: starts
this binary again (the path it was started by) with the same arguments,
hands it the sockets, and once it listens stops accepting, serves its open
connections for up to --drain-timeout and exits 0, leaving the socket file
to the new process.

Metrics: with --metrics, `curl --unix-socket PATH http://localhost/metrics`
gives the same counters as uds_reactor_<key>_total and
uds_reactor_open_connections.

Environment: LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES (socket activation: serve
the inherited descriptor 3, or the one not named 'metrics'; PATH may be
omitted), NOTIFY_SOCKET (READY=1 once listening, STOPPING=1 at shutdown;
MAINPID= too after an upgrade), WATCHDOG_USEC/WATCHDOG_PID (WATCHDOG=1
every half period, from the loop), JOURNAL_STREAM (when it names stderr:
each line starts with its priority, <3> error to <7> debug, and has no time).

Exit status: 0 after a signal, 1 on a runtime error, 2 on a usage error.";

/// The server's options (SPEC "Command line").
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Socket path, or @name for a Linux abstract address. May be omitted
    /// under systemd socket activation.
    #[arg(value_name = "PATH")]
    path: Option<OsString>,

    /// Words after PATH: none is valid, but they are collected (with
    /// whatever follows them) so that the error names the first one (see
    /// `reject_extra` in main.rs).
    #[arg(hide = true, value_name = "EXTRA", trailing_var_arg = true)]
    pub extra: Vec<OsString>,

    /// Socket type.
    #[arg(long = "type", value_name = "TYPE", default_value = "stream", value_parser = args::socket_type())]
    socket_type: SocketType,

    /// Stream framing: raw bytes, newline-terminated lines, or 4-byte
    /// big-endian length prefixes. Stream sockets only.
    #[arg(long, value_name = "FRAMING", default_value = "raw", value_parser = args::framing())]
    framing: Framing,

    /// Largest frame payload accepted (bytes, or with K/M/G).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_size)]
    max_frame: usize,

    /// Per-connection cap on unsent output; past it, reading that peer
    /// pauses until it drains.
    #[arg(long, value_name = "BYTES", default_value = "256K", value_parser = parse_size)]
    max_buffer: usize,

    /// Descriptors (SCM_RIGHTS) one received message may carry, at most
    /// 253; each goes back with the echo of the bytes it came with. 0:
    /// none are taken (the kernel closes any a peer sends).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_fds: usize,

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

    /// A second socket (path or @name) answering `GET /metrics` with the
    /// counters in the Prometheus text format; its file gets --mode and
    /// --group like the main one.
    #[arg(long, value_name = "PATH")]
    metrics: Option<OsString>,

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

/// Serves until a signal: 0 after a signal-initiated shutdown, 1 for a
/// runtime error, 2 for a usage error (bad settings, or no PATH and no
/// socket inherited from systemd).
pub fn run(args: ServeArgs, matches: &ArgMatches) -> ExitCode {
    // First: the path we were started by, before a new build may be
    // installed there (SIGUSR2 runs whatever is at that path then).
    let program = Program::current();
    logging::init(logging::level(args.log_level, args.verbose, args.quiet));
    let config = match config_from(args, matches) {
        Ok(config) => config,
        Err(msg) => crate::usage_error(None, &msg),
    };
    // Our choice as a program, before the server sizes its default
    // connection cap from it; refusal only lowers that cap.
    if let Err(e) = uds_reactor::raise_open_file_limit() {
        log::debug!("cannot read the open-file limit: {e}");
    }
    let result = Server::bind(config).and_then(|mut server| {
        server.handle_signals()?;
        match program {
            Ok(program) => server.handle_upgrades(program)?,
            Err(e) => {
                log::warn!("SIGUSR2 upgrades are off: cannot resolve our own executable: {e}")
            }
        }
        server.run()
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // The library finds some usage errors only as it binds: no PATH
        // and nothing inherited from systemd, say.
        Err(Error::Config(msg)) => crate::usage_error(None, &msg),
        Err(e) => crate::fail("uds-reactor", &e),
    }
}

/// Builds the library's config, rejecting options that make no sense
/// together (clap cannot express these).
fn config_from(args: ServeArgs, matches: &ArgMatches) -> Result<Config, String> {
    let given = |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine));
    let socket_type = args.socket_type;
    if args.path.as_ref().is_some_and(|p| p.is_empty()) {
        return Err("the socket PATH is empty".into());
    }
    let address = args.path.as_deref().map(Address::parse);
    if args.metrics.as_ref().is_some_and(|p| p.is_empty()) {
        return Err("the --metrics PATH is empty".into());
    }
    let metrics = args.metrics.as_deref().map(Address::parse);
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
    // They apply to the metrics socket's file too, if it has one.
    let metrics_file = matches!(metrics, Some(Address::Path(_)));
    if matches!(address, Some(Address::Abstract(_)))
        && !metrics_file
        && (given("mode") || given("group"))
    {
        return Err(
            "--mode and --group apply to socket files; an abstract address (@name) has none".into(),
        );
    }
    // Field by field: Config is non_exhaustive (it will grow).
    let mut config = Config::default();
    config.address = address;
    config.socket_type = socket_type;
    config.framing = args.framing;
    config.max_frame = args.max_frame;
    config.max_buffer = args.max_buffer;
    config.max_fds = args.max_fds;
    config.mode = args.mode;
    config.group = args.group;
    config.allow_uids = args.allow_uid;
    config.allow_gids = args.allow_gid;
    config.max_connections = args.max_connections;
    config.idle_timeout = (!args.idle_timeout.is_zero()).then_some(args.idle_timeout);
    config.drain_timeout = args.drain_timeout;
    config.backlog = args.backlog;
    config.metrics = metrics;
    // The binary opts in to systemd: activation and notifications.
    config.systemd = true;
    // Without a PATH the library decides: it serves what systemd passed,
    // or refuses (a usage error) if nothing was.
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}
