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
//! With `--fds K` every message carries K descriptors (the same K open
//! files, made at start), and each echo is checked to bring the same open
//! files back (see `load/fds.rs`); without, no descriptor is sent or
//! received and every read and write is as plain as before.
//!
//! A run is bounded by a message count or a duration; in churn mode each
//! connection carries one echo and closes, and the report counts
//! connections per second. A run that stops making progress for
//! [`LoadConfig::stall_timeout`] fails.

mod args;
mod error;
mod fds;
mod histogram;
mod report;
mod slot;
mod wire;

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use socket2::SockAddr;

use uds_reactor::fds::MAX_FDS;
use uds_reactor::{Address, Error, Framing, SocketType};

pub use args::{run, LoadArgs};
pub use error::LoadError;
use fds::Passed;
use histogram::Histogram;
use report::{Nanos, Report};
use slot::{Cx, Opened, Slot, Tally};
use wire::Wire;

use crate::socket;

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

/// A load run's settings (from `uds-reactor load`'s options).
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
    /// Descriptors attached to every message (and checked on the way
    /// back); 0 for none.
    pub fds: usize,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// Stop sending on SIGINT/SIGTERM and report what was done (the
    /// process's handlers for them are replaced).
    pub handle_signals: bool,
}

impl LoadConfig {
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
        if self.fds > MAX_FDS {
            return Err(Error::Config(format!(
                "--fds {}: at most {MAX_FDS} descriptors go in one message",
                self.fds
            )));
        }
        Ok(())
    }
}

/// Runs the load described by `config` and reports on it.
///
/// # Errors
///
/// [`LoadError`]: bad settings, a failed connect (`connect /path: ...`),
/// the first byte that does not match, a connection closed early, a
/// stall.
pub fn generate(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let addr = socket::server_addr(&config.address)?;
    // Thousands of connections need descriptors; refusal is not fatal.
    let _ = uds_reactor::raise_open_file_limit();
    let mut driver = Driver::new(config)?;
    driver.drive(&addr)?;
    Ok(driver.report())
}

/// The event loop of one run: the poll, the slots, the clocks.
struct Driver<'c> {
    config: &'c LoadConfig,
    poll: Poll,
    /// SIGINT/SIGTERM, when the config asks for them.
    signals: Option<Signals>,
    slots: Vec<Slot>,
    run: Run,
    start: Instant,
    /// When a timed run stops sending.
    deadline: Option<Instant>,
    /// No more messages are admitted: the slots finish those in flight.
    stopping: bool,
    /// When a message last completed, and the count then (stall check).
    last_progress: Instant,
    last_count: u64,
    ticker: Ticker,
}

impl<'c> Driver<'c> {
    fn new(config: &'c LoadConfig) -> Result<Driver<'c>, LoadError> {
        let wire = Wire::new(config.socket_type, config.framing, config.size);
        let poll = Poll::new().map_err(|e| Error::io("create", "poll", e))?;
        let passed = match config.fds {
            0 => None,
            k => Some(Passed::new(k).map_err(|e| Error::io("make", "--fds files", e))?),
        };
        let signals = if config.handle_signals {
            Some(register_signals(&poll)?)
        } else {
            None
        };
        let start = Instant::now();
        let slots: Vec<Slot> = quotas(config.limit, config.connections)
            .enumerate()
            .map(|(i, quota)| Slot::new(i, quota, config.pipeline, start))
            .collect();
        let run = Run {
            scratch: vec![0; SCRATCH.max(wire.len() + 1)],
            latency: Histogram::new(),
            interval: Histogram::new(),
            completed: 0,
            fds: 0,
            passed,
            fd_buf: Vec::new(),
            opened: 0,
            reconnect: (0..slots.len()).filter(|&i| !slots[i].is_done()).collect(),
            wire,
        };
        let deadline = match config.limit {
            Limit::Time(d) => Some(start + d),
            Limit::Messages(_) => None,
        };
        Ok(Driver {
            config,
            poll,
            signals,
            slots,
            run,
            start,
            deadline,
            stopping: false,
            last_progress: start,
            last_count: 0,
            ticker: Ticker::new(start),
        })
    }

    /// Turns the loop until every slot is done (or something fails).
    fn drive(&mut self, addr: &SockAddr) -> Result<(), LoadError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            self.send_pending(addr, now)?;
            if self.slots.iter().all(Slot::is_done) {
                return Ok(());
            }
            if !self.stopping && self.deadline.is_some_and(|d| now >= d) {
                self.stop();
                continue;
            }
            self.check_stall(now)?;
            if self.config.progress && now >= self.ticker.next {
                self.ticker.tick(now, &mut self.run, self.start);
            }
            let timeout = self.timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll", "events", e).into());
            }
            self.dispatch(&events)?;
        }
    }

    /// Connects the slots waiting for it and, for datagrams, retries the
    /// sends a full server queue held back.
    fn send_pending(&mut self, addr: &SockAddr, now: Instant) -> Result<(), LoadError> {
        let registry = self.poll.registry();
        self.run
            .reconnect(self.config, addr, &mut self.slots, registry, now)?;
        if self.config.socket_type == SocketType::Dgram {
            // A full server queue gives no reliable writable edge.
            for slot in self.slots.iter_mut() {
                if slot.wants_write() {
                    slot.send(&mut self.run.cx(self.config, registry, now))?;
                }
            }
        }
        Ok(())
    }

    /// Admit no more messages; finish those in flight.
    fn stop(&mut self) {
        self.stopping = true;
        self.slots.iter_mut().for_each(Slot::stop);
    }

    /// Fails the run if no message completed for the stall timeout.
    fn check_stall(&mut self, now: Instant) -> Result<(), LoadError> {
        if self.run.completed != self.last_count {
            self.last_count = self.run.completed;
            self.last_progress = now;
        } else if now.duration_since(self.last_progress) >= self.config.stall_timeout {
            return Err(LoadError::Stalled {
                waited: now.duration_since(self.last_progress),
                outstanding: self.slots.iter().map(Slot::outstanding).sum(),
            });
        }
        Ok(())
    }

    /// How long the next poll may wait: until the nearest of the stall
    /// check, the deadline, the progress line and a retry.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let config = self.config;
        let retry = !self.run.reconnect.is_empty()
            || (config.socket_type == SocketType::Dgram
                && self.slots.iter().any(Slot::wants_write));
        [
            Some(self.last_progress + config.stall_timeout),
            self.deadline.filter(|_| !self.stopping),
            config.progress.then_some(self.ticker.next),
            retry.then_some(now + RETRY),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Hands each event to its slot (or stops, on a signal).
    fn dispatch(&mut self, events: &Events) -> Result<(), LoadError> {
        let now = Instant::now();
        for event in events.iter() {
            if event.token() == SIGNALS {
                let signalled = self
                    .signals
                    .as_mut()
                    .is_some_and(|s| s.pending().next().is_some());
                if signalled && !self.stopping {
                    self.stop();
                }
                continue;
            }
            let i = event.token().0;
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let cx = &mut self.run.cx(self.config, self.poll.registry(), now);
            if slot.on_event(readable, cx)? {
                self.run.reconnect.push(i);
            }
        }
        Ok(())
    }

    /// What the run did, once every slot is done.
    fn report(self) -> Report {
        let elapsed = self.start.elapsed();
        drop(self.slots); // closes the sockets, removes datagram addresses
        let run = self.run;
        Report {
            messages: run.completed,
            bytes: run.completed * run.wire.len() as u64,
            connections: run.opened,
            fds: run.fds,
            elapsed,
            latency: run.latency,
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers and registers them with `poll`.
fn register_signals(poll: &Poll) -> Result<Signals, LoadError> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| Error::io("install", "signals", e))?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| Error::io("register", "signals", e))?;
    Ok(signals)
}

/// The run's shared state, lent to slots as a [`Cx`].
struct Run {
    wire: Wire,
    scratch: Vec<u8>,
    latency: Histogram,
    /// Latencies since the last progress line.
    interval: Histogram,
    completed: u64,
    /// Descriptors come back and checked.
    fds: u64,
    /// `--fds`: the files every message carries.
    passed: Option<Passed>,
    /// Where descriptors are received (checked and emptied at once).
    fd_buf: Vec<OwnedFd>,
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
                fds: &mut self.fds,
            },
            fds: self.passed.as_ref(),
            fd_buf: &mut self.fd_buf,
            opened: &mut self.opened,
            registry,
        }
    }

    /// Connects the slots waiting for it; those facing a full backlog wait
    /// for the next turn.
    fn reconnect(
        &mut self,
        config: &LoadConfig,
        addr: &SockAddr,
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
