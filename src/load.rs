//! A load generator like `redis-benchmark`: one thread, one `mio::Poll`,
//! `connections` nonblocking sockets, each keeping `pipeline` messages in
//! flight, every echoed byte checked.
//!
//! Messages are derived from a per-connection seed and counter (see
//! `load/wire.rs`), so checking an echo is a `memcmp` against a slice of
//! one shared pattern: nothing is stored, generated or allocated per
//! message. Replies are read into one shared buffer and written from the
//! pattern with `sendmsg`, so the generator costs about as many syscalls
//! per message as the server it drives.
//!
//! A run is bounded by a message count or a duration; in churn mode each
//! connection carries one echo and closes, and the report counts
//! connections per second. A run that stops making progress for
//! [`LoadConfig::stall_timeout`] fails.
//!
//! # Examples
//!
//! ```
//! use uds_reactor::load::{self, Limit, LoadConfig};
//! use uds_reactor::{Config, Server};
//!
//! let path = std::env::temp_dir().join(format!("load-doc-{}.sock", std::process::id()));
//! let server = Server::bind(Config::new(&path))?;
//! let handle = server.handle();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut config = LoadConfig::new(&path);
//! config.connections = 4;
//! config.limit = Limit::Messages(1000);
//! let report = load::run(&config)?;
//! assert_eq!(report.messages, 1000);
//!
//! handle.stop();
//! thread.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod histogram;
mod slot;
mod wire;

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

pub use histogram::Histogram;
use slot::{Cx, Opened, Slot, Tally};
use wire::Wire;

use crate::config::{Address, Framing, SocketType};
use crate::error::Error;
use crate::{client, sys};

/// Token of the signal source (connections use their index).
const SIGNALS: Token = Token(usize::MAX);
/// Smallest shared read buffer.
const SCRATCH: usize = 256 << 10;
/// Poll again this soon while a connect waits for backlog room, or a
/// datagram for room in the server's queue.
const RETRY: Duration = Duration::from_millis(1);
/// Largest number of connections.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// How long a run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// This many messages in all (echo cycles in churn mode), shared out
    /// among the connections.
    Messages(u64),
    /// Send for this long, then wait for the messages in flight.
    Time(Duration),
}

/// A load run's settings; [`LoadConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server's address (`@name` = abstract).
    pub address: Address,
    /// Socket type; must match the server's.
    pub socket_type: SocketType,
    /// Stream framing; must be `Raw` for seqpacket and dgram.
    pub framing: Framing,
    /// Connections (datagram sockets) driven at once.
    pub connections: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// When to stop.
    pub limit: Limit,
    /// Connect, one echo, close, repeat.
    pub churn: bool,
    /// Fail when no message completes for this long.
    pub stall_timeout: Duration,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// Stop sending on SIGINT/SIGTERM and report what was done (the
    /// process's handlers for them are replaced).
    pub handle_signals: bool,
}

impl LoadConfig {
    /// 1 stream/raw connection, 64-byte messages, pipeline 1, 100,000
    /// messages, a 10 s stall timeout.
    pub fn new(address: impl AsRef<OsStr>) -> LoadConfig {
        LoadConfig {
            address: Address::parse(address.as_ref()),
            socket_type: SocketType::Stream,
            framing: Framing::Raw,
            connections: 1,
            size: 64,
            pipeline: 1,
            limit: Limit::Messages(100_000),
            churn: false,
            stall_timeout: Duration::from_secs(10),
            progress: false,
            handle_signals: false,
        }
    }

    /// Checks the combination of settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the option: a framing on a message type,
    /// churn on datagrams, zero or absurd counts and sizes.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: &str| Err(Error::Config(msg.into()));
        if self.socket_type != SocketType::Stream && self.framing != Framing::Raw {
            return Err(Error::Config(format!(
                "--framing {} applies to stream sockets only; {} sockets keep message boundaries already",
                self.framing, self.socket_type
            )));
        }
        if self.churn && self.socket_type == SocketType::Dgram {
            return bad("--churn needs connections; a datagram socket has none");
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return bad("-c/--connections must be between 1 and 1048576");
        }
        if self.size == 0 || self.size > u32::MAX as usize {
            return bad("-s/--size must be between 1 and 4G - 1");
        }
        if self.pipeline == 0 || self.pipeline > 1 << 16 {
            return bad("-P/--pipeline must be between 1 and 65536");
        }
        if self.limit == Limit::Messages(0) || self.limit == Limit::Time(Duration::ZERO) {
            return bad("-n/--messages and -d/--duration must be more than 0");
        }
        Ok(())
    }
}

/// What a run did. Every message counted was echoed and checked byte for
/// byte; a run with any error returns [`LoadError`] instead.
#[derive(Clone, Debug)]
pub struct Report {
    /// Messages echoed (one per connection in churn mode).
    pub messages: u64,
    /// Wire bytes echoed, one way (headers and newlines included).
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// From the first connect to the last echo.
    pub elapsed: Duration,
    /// Round-trip time of each message, in nanoseconds: from when the
    /// window admitted it to when its last byte came back.
    pub latency: Histogram,
}

impl Report {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.secs()
    }

    /// Megabytes (10^6 bytes) echoed per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs()
    }

    /// Connections opened per second.
    pub fn conns_per_sec(&self) -> f64 {
        self.connections as f64 / self.secs()
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as one JSON object, with `config`'s settings.
    pub fn to_json(&self, config: &LoadConfig) -> String {
        let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
        let h = &self.latency;
        format!(
            concat!(
                "{{\"type\":\"{}\",\"framing\":\"{}\",\"connections\":{},\"size\":{},",
                "\"pipeline\":{},\"churn\":{},\"messages\":{},\"bytes\":{},",
                "\"connections_opened\":{},\"errors\":0,\"seconds\":{:.6},",
                "\"msgs_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"conns_per_sec\":{:.1},",
                "\"latency_us\":{{\"min\":{},\"mean\":{},\"p50\":{},\"p99\":{},",
                "\"p999\":{},\"max\":{}}}}}"
            ),
            config.socket_type,
            config.framing,
            config.connections,
            config.size,
            config.pipeline,
            config.churn,
            self.messages,
            self.bytes,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.conns_per_sec(),
            us(h.min()),
            us(h.mean()),
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max()),
        )
    }

    /// The human-readable summary, with `config`'s settings.
    pub fn summary(&self, config: &LoadConfig) -> String {
        let h = &self.latency;
        let mut s = format!(
            "{}/{}: {} connections, {}-byte messages, pipeline {}{}\n",
            config.socket_type,
            config.framing,
            config.connections,
            config.size,
            config.pipeline,
            if config.churn { ", churn" } else { "" },
        );
        s += &format!(
            "  messages    {} in {:.3} s: {:.0} msgs/s, {:.2} MB/s\n",
            self.messages,
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.mb_per_sec()
        );
        if config.churn {
            s += &format!(
                "  connections {} opened: {:.0} conns/s\n",
                self.connections,
                self.conns_per_sec()
            );
        }
        s += &format!(
            "  latency     p50 {}  p99 {}  p99.9 {}  max {}\n",
            Nanos(h.quantile(0.5)),
            Nanos(h.quantile(0.99)),
            Nanos(h.quantile(0.999)),
            Nanos(h.max())
        );
        s += "  errors      0 (every echoed byte checked)\n";
        s
    }
}

/// Why a run failed.
#[derive(Debug)]
pub enum LoadError {
    /// Bad settings, or a socket could not be made or connected.
    Setup(Error),
    /// An echoed byte differs from the one sent.
    Verify {
        /// Connection index.
        conn: usize,
        /// Message number on that connection.
        message: u64,
        /// Byte offset in the message's wire form.
        offset: usize,
        /// What was sent.
        expected: u8,
        /// What came back.
        got: u8,
    },
    /// An echoed message has the wrong length (message sockets).
    Length {
        /// Connection index.
        conn: usize,
        /// Message number on that connection.
        message: u64,
        /// Bytes sent.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// More bytes came back than were sent.
    Extra {
        /// Connection index.
        conn: usize,
        /// Bytes beyond what was sent.
        bytes: usize,
    },
    /// The server closed a connection that still owed echoes.
    Closed {
        /// Connection index.
        conn: usize,
        /// Messages echoed on it before.
        completed: u64,
        /// Messages in flight when it closed.
        outstanding: u64,
    },
    /// Reading or writing failed.
    Io {
        /// Connection index.
        conn: usize,
        /// `read`, `send`, ...
        step: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// No echo came back for this long.
    Stalled {
        /// How long nothing happened.
        waited: Duration,
        /// Messages in flight, all connections.
        outstanding: u64,
    },
}

impl LoadError {
    /// The process exit status for this error: 2 for bad settings, 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Setup(e) => e.exit_code(),
            _ => 1,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Setup(e) => write!(f, "{e}"),
            LoadError::Verify {
                conn,
                message,
                offset,
                expected,
                got,
            } => write!(
                f,
                "verification error: connection {conn}, message {message}, byte {offset}: sent {expected:#04x}, echoed {got:#04x}"
            ),
            LoadError::Length {
                conn,
                message,
                expected,
                got,
            } => write!(
                f,
                "verification error: connection {conn}, message {message}: sent {expected} bytes, echoed {got}"
            ),
            LoadError::Extra { conn, bytes } => write!(
                f,
                "verification error: connection {conn}: {bytes} bytes echoed that were never sent"
            ),
            LoadError::Closed {
                conn,
                completed,
                outstanding,
            } => write!(
                f,
                "connection {conn} closed by the server after {completed} echoes, {outstanding} still owed"
            ),
            LoadError::Io { conn, step, source } => {
                write!(f, "{step} on connection {conn}: {source}")
            }
            LoadError::Stalled {
                waited,
                outstanding,
            } => write!(
                f,
                "stalled: no echo for {waited:?} with {outstanding} messages in flight"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<Error> for LoadError {
    fn from(e: Error) -> LoadError {
        LoadError::Setup(e)
    }
}

/// Runs the load described by `config` and reports on it.
///
/// # Errors
///
/// [`LoadError`]: bad settings, a failed connect (`connect /path: ...`),
/// the first byte that does not match, a connection closed early, a
/// stall.
pub fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let addr = client::server_addr(&config.address)?;
    // Thousands of connections need descriptors; refusal is not fatal.
    let _ = sys::raise_nofile_limit();
    let wire = Wire::new(config.socket_type, config.framing, config.size);
    let mut poll = Poll::new().map_err(|e| Error::io("create", "poll", e))?;
    let mut signals = None;
    if config.handle_signals {
        let mut s =
            Signals::new([SIGINT, SIGTERM]).map_err(|e| Error::io("install", "signals", e))?;
        poll.registry()
            .register(&mut s, SIGNALS, Interest::READABLE)
            .map_err(|e| Error::io("register", "signals", e))?;
        signals = Some(s);
    }
    let start = Instant::now();
    let mut slots: Vec<Slot> = quotas(config.limit, config.connections)
        .enumerate()
        .map(|(i, quota)| Slot::new(i, quota, config.pipeline, start))
        .collect();
    let mut run = Run {
        scratch: vec![0; SCRATCH.max(wire.len() + 1)],
        latency: Histogram::new(),
        interval: Histogram::new(),
        completed: 0,
        opened: 0,
        reconnect: (0..slots.len()).filter(|&i| !slots[i].is_done()).collect(),
        wire,
    };
    let deadline = match config.limit {
        Limit::Time(d) => Some(start + d),
        Limit::Messages(_) => None,
    };
    let mut stopping = false;
    let mut events = Events::with_capacity(1024);
    let mut last_progress = start;
    let mut last_count = 0;
    let mut ticker = Ticker::new(start);
    loop {
        let now = Instant::now();
        run.reconnect(config, &addr, &mut slots, poll.registry(), now)?;
        if config.socket_type == SocketType::Dgram {
            // A full server queue gives no reliable writable edge.
            for slot in slots.iter_mut() {
                if slot.wants_write() {
                    slot.send(&mut run.cx(config, poll.registry(), now))?;
                }
            }
        }
        if slots.iter().all(Slot::is_done) {
            break;
        }
        if !stopping && deadline.is_some_and(|d| now >= d) {
            stopping = true;
            slots.iter_mut().for_each(Slot::stop);
            continue;
        }
        if run.completed != last_count {
            last_count = run.completed;
            last_progress = now;
        } else if now.duration_since(last_progress) >= config.stall_timeout {
            return Err(LoadError::Stalled {
                waited: now.duration_since(last_progress),
                outstanding: slots.iter().map(Slot::outstanding).sum(),
            });
        }
        if config.progress && now >= ticker.next {
            ticker.tick(now, &mut run, start);
        }
        let retry = !run.reconnect.is_empty()
            || (config.socket_type == SocketType::Dgram && slots.iter().any(Slot::wants_write));
        let timeout = [
            Some(last_progress + config.stall_timeout),
            deadline.filter(|_| !stopping),
            config.progress.then_some(ticker.next),
            retry.then_some(now + RETRY),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("poll", "events", e).into());
        }
        let now = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            if event.token() == SIGNALS {
                if signals
                    .as_mut()
                    .is_some_and(|s| s.pending().next().is_some())
                    && !stopping
                {
                    stopping = true;
                    slots.iter_mut().for_each(Slot::stop);
                }
                continue;
            }
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            if slot.on_event(readable, &mut run.cx(config, poll.registry(), now))? {
                run.reconnect.push(i);
            }
        }
    }
    let elapsed = start.elapsed();
    drop(slots); // closes the sockets, removes datagram addresses
    Ok(Report {
        messages: run.completed,
        bytes: run.completed * run.wire.len() as u64,
        connections: run.opened,
        elapsed,
        latency: run.latency,
    })
}

/// The run's shared state, lent to slots as a [`Cx`].
struct Run {
    wire: Wire,
    scratch: Vec<u8>,
    latency: Histogram,
    /// Latencies since the last progress line.
    interval: Histogram,
    completed: u64,
    opened: u64,
    /// Slots to (re)connect: at start, after a churn cycle, after a full
    /// backlog.
    reconnect: Vec<usize>,
}

impl Run {
    fn cx<'a>(
        &'a mut self,
        config: &LoadConfig,
        registry: &'a mio::Registry,
        now: Instant,
    ) -> Cx<'a> {
        Cx {
            wire: &self.wire,
            ty: config.socket_type,
            pipeline: config.pipeline as u64,
            churn: config.churn,
            now,
            scratch: &mut self.scratch,
            tally: Tally {
                latency: &mut self.latency,
                interval: &mut self.interval,
                completed: &mut self.completed,
            },
            opened: &mut self.opened,
            registry,
        }
    }

    /// Connects the slots waiting for it; those facing a full backlog wait
    /// for the next turn.
    fn reconnect(
        &mut self,
        config: &LoadConfig,
        addr: &socket2::SockAddr,
        slots: &mut [Slot],
        registry: &mio::Registry,
        now: Instant,
    ) -> Result<(), LoadError> {
        let mut waiting = std::mem::take(&mut self.reconnect);
        let mut kept = 0;
        for n in 0..waiting.len() {
            let i = waiting[n];
            if slots[i].is_done() {
                continue;
            }
            let cx = &mut self.cx(config, registry, now);
            if let Opened::Retry = slots[i].open(&config.address, addr, cx)? {
                waiting[kept] = i;
                kept += 1;
            }
        }
        waiting.truncate(kept);
        self.reconnect = waiting;
        Ok(())
    }
}

/// The progress line's clock and counts.
struct Ticker {
    next: Instant,
    last: Instant,
    count: u64,
}

impl Ticker {
    fn new(start: Instant) -> Ticker {
        Ticker {
            next: start + Duration::from_secs(1),
            last: start,
            count: 0,
        }
    }

    fn tick(&mut self, now: Instant, run: &mut Run, start: Instant) {
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-9);
        let msgs = run.completed - self.count;
        eprintln!(
            "[{:>4.0}s] {:>10.0} msgs/s {:>9.2} MB/s  p50 {}  p99 {}  max {}",
            now.duration_since(start).as_secs_f64(),
            msgs as f64 / secs,
            (msgs * run.wire.len() as u64) as f64 / 1e6 / secs,
            Nanos(run.interval.quantile(0.5)),
            Nanos(run.interval.quantile(0.99)),
            Nanos(run.interval.max()),
        );
        run.interval.clear();
        self.count = run.completed;
        self.last = now;
        self.next = now + Duration::from_secs(1);
    }
}

/// Each connection's share of the messages (the first ones get the
/// remainder); unbounded in time mode.
fn quotas(limit: Limit, connections: usize) -> impl Iterator<Item = u64> {
    let c = connections as u64;
    (0..c).map(move |i| match limit {
        Limit::Messages(n) => n / c + u64::from(i < n % c),
        Limit::Time(_) => u64::MAX,
    })
}

/// A duration in nanoseconds, shown in the handiest unit.
struct Nanos(u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0 as f64;
        if ns < 1e3 {
            write!(f, "{ns:.0} ns")
        } else if ns < 1e6 {
            write!(f, "{:.1} us", ns / 1e3)
        } else if ns < 1e9 {
            write!(f, "{:.2} ms", ns / 1e6)
        } else {
            write!(f, "{:.2} s", ns / 1e9)
        }
    }
}
