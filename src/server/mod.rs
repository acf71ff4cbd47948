//! The server: one thread, one `mio::Poll`, one endpoint (a listener and
//! its connections, or a datagram socket), and the handler.
//!
//! # The loop
//!
//! ```text
//! loop:
//!   stop if draining and drained (or the drain deadline passed)
//!   timeout = 0 if the endpoint has work left over (ready list,
//!             unfinished accepts, unread datagrams), else until the
//!             nearest deadline
//!   poll(timeout)
//!   stop if an upgrade handed the socket over and nothing is owed
//!   for each event: waker -> nothing (a stop request is checked below);
//!                   signals -> stop, log or upgrade; the new process of
//!                   an upgrade -> hand over or give up; anything else ->
//!                   the endpoint
//!   the endpoint's turn: accept (bounded), work the ready list (bounded),
//!                        fire due deadlines, reap what finished
//!   the metrics socket's turn: accept (bounded), drop overdue clients
//!   the upgrade's turn: give up on a new process late to listen, end the
//!                       drain after a handover
//!   ping systemd's watchdog if due
//!   publish the counters (if a Handle was made: only one reads them)
//! ```
//!
//! The rooms: this file holds the public API and the loop; `conns` the
//! connection endpoint (a listener, a slab of connections, their ready
//! list, reap list and timers), `accept` its admission of new
//! connections, `pump` the per-connection I/O; `dgram` the datagram
//! endpoint; `lifecycle` signals, shutdown and the final flush; `timers`
//! the deadline heap; `logging` how peers are named and warnings limited;
//! `metrics` the metrics socket and its clients; `watchdog` systemd's
//! `WATCHDOG=1`; `listen` where the socket comes from (bound or
//! inherited); `upgrade` the SIGUSR2 binary upgrade.
//!
//! mio is edge-triggered: each connection is read until `WouldBlock` (or a
//! short read, which on a stream means the same), or, when its per-event
//! budget runs out or backpressure stops it with input left, it goes on the
//! ready list and the next poll does not sleep. Output is written eagerly;
//! WRITABLE is registered only while bytes remain. Where no read can tell
//! that a connection is drained, polling is level-triggered instead
//! (`sys::epoll_level`, READABLE only while reading is wanted), one read a
//! readiness, the next wait telling whether more is there: seqpacket
//! connections, where a read returns one message and edge-triggered
//! draining would cost a read that finds nothing after each; and streams
//! that take descriptors, where a read that brings some ends at their
//! bytes, short or not. (The datagram socket stays edge-triggered and is
//! drained: measured, one wait a datagram cost more than the empty read.)

mod accept;
mod conns;
mod dgram;
mod handle;
mod lifecycle;
mod listen;
mod logging;
mod metrics;
mod pump;
mod upgrade;
mod watchdog;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use socket2::Socket;

use crate::buffer::{Spares, READ_SIZE};
use crate::config::{Address, Config, SocketType};
use crate::conn::Limits;
use crate::ctl::{Framer, World};
use crate::error::Error;
use crate::handler::{Echo, Handler};
use crate::stats::{SharedStats, Stats};
use crate::sys::SocketFile;
use conns::Connections;
use dgram::Dgram;
use listen::{listen, Listening};

use handle::Shared;
pub use handle::{Handle, MessageError};
use metrics::Metrics;
pub use upgrade::Program;
use upgrade::Upgrade;
use watchdog::Watchdog;

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The listener, or the datagram socket.
const ENDPOINT: Token = Token(2);
/// The readiness channel to the new process of an upgrade ...
const UPGRADE_READY: Token = Token(3);
/// ... and its pidfd (readable once it exits).
const UPGRADE_CHILD: Token = Token(4);
/// Connection tokens are slab keys shifted past the reserved ones.
const FIRST_CONN: usize = 5;

/// What every endpoint works with: the handler and the state the loop
/// lends to whichever connection is being served.
struct Core<H: Handler<M>, M> {
    handler: H,
    config: Config,
    limits: Limits,
    /// Allocations lent to buffers that need memory (see [`crate::buffer`]).
    spares: Spares,
    /// The one shared read buffer: connections own none.
    scratch: Vec<u8>,
    /// The descriptors of the read being handled (`--max-fds`).
    fds: Vec<OwnedFd>,
    stats: Stats,
    /// What a [`Ctl`] works on.
    world: World,
    /// Messages from other threads.
    messages: Receiver<M>,
    /// The waker fired: messages may be waiting.
    messages_ready: bool,
}

/// Messages taken from the queue per turn before the loop polls again.
const MESSAGES_PER_TURN: usize = 256;

/// What the server serves: dispatched once per event and once per turn.
enum Endpoint<S> {
    /// A stream or seqpacket listener and its connections.
    Connections(Connections<S>),
    /// A datagram socket, each datagram answered to its sender.
    Datagrams(Dgram<S>),
}

/// A bound Unix-socket server, ready to [`run`](Server::run).
///
/// Dropping a server, run or not, closes its socket and removes the socket
/// file it created (if that is still its file).
///
/// # Examples
///
/// Echo on a thread, stopped from another:
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use uds_reactor::{Config, Server};
///
/// let path = std::env::temp_dir().join(format!("echo-doc-{}.sock", std::process::id()));
/// let server = Server::bind(Config::new(&path))?;
/// let handle = server.handle();
/// let thread = std::thread::spawn(move || server.run());
///
/// let mut client = UnixStream::connect(&path)?;
/// client.write_all(b"ping")?;
/// let mut reply = [0; 4];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"ping");
///
/// handle.stop();
/// let stats = thread.join().unwrap()?;
/// assert_eq!(stats.bytes_in, 4);
/// assert!(!path.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<H: Handler<M> = Echo, M = ()> {
    core: Core<H, M>,
    poll: Poll,
    endpoint: Endpoint<H::State>,
    /// The socket file we created; dropping it removes the file if it is
    /// still ours. `None` for abstract and inherited sockets, and once
    /// shutdown began.
    file: Option<SocketFile>,
    shared: Arc<Shared>,
    /// Cloned into every [`Handle`].
    messages: SyncSender<M>,
    signals: Option<Signals>,
    /// Shutdown began; connections must be flushed by this deadline.
    draining: Option<Instant>,
    /// The metrics socket and its clients (`--metrics`); `None` without
    /// one, and once shutdown began.
    metrics: Option<Metrics>,
    /// systemd's watchdog, pinged from the loop (only with
    /// [`Config::systemd`] and `WATCHDOG_USEC` set).
    watchdog: Option<Watchdog>,
    /// The SIGUSR2 upgrade: the program to start, and where an upgrade
    /// stands (see [`Server::handle_upgrades`]).
    upgrade: Upgrade,
}

impl Server<Echo> {
    /// Binds a server that echoes.
    ///
    /// # Errors
    ///
    /// As [`Server::with_handler`].
    pub fn bind(config: Config) -> Result<Server<Echo>, Error> {
        Server::with_handler(config, Echo)
    }
}

impl<H: Handler<M>, M> Server<H, M> {
    /// Validates `config`, binds (or, with `config.systemd`, inherits) the
    /// socket and starts listening; connections wait in the backlog until
    /// [`run`](Self::run). Nothing process-wide changes (see
    /// [`Config::systemd`] for the one opt-in that reads the environment).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for bad settings; [`Error::InUse`] when a server
    /// listens there already; [`Error::NotSocket`], [`Error::NoParent`],
    /// [`Error::PathTooLong`] for unusable paths; [`Error::Io`] naming the
    /// failing step otherwise. Whatever fails, a socket file created on the
    /// way is removed again.
    pub fn with_handler(mut config: Config, handler: H) -> Result<Server<H, M>, Error> {
        config.validate()?;
        let Listening {
            socket,
            file,
            metrics,
            takeover,
        } = listen(&mut config)?;
        // A runtime error names the address as well as the step.
        let target = |what: &str| format!("{what} for {}", shown(&config));
        let poll = Poll::new().map_err(|e| Error::io("create", target("poll"), e))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| Error::io("create", target("waker"), e))?;
        poll.registry()
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                ENDPOINT,
                Interest::READABLE,
            )
            .map_err(|e| Error::io("register", target("the socket"), e))?;
        let metrics = match (metrics, &config.metrics) {
            (Some((socket, file)), _) => {
                Some(Metrics::adopt(socket, file, &config, poll.registry())?)
            }
            (None, Some(address)) => Some(Metrics::bind(&config, address, poll.registry())?),
            (None, None) => None,
        };
        let (messages, received) = mpsc::sync_channel(config.message_queue);
        let watchdog = config
            .systemd
            .then(|| Watchdog::from_env(Instant::now()))
            .flatten();
        let mut core = Core::new(config, handler, received);
        let endpoint = match core.config.socket_type {
            SocketType::Dgram => {
                let state = dgram::open_state(&mut core);
                Endpoint::Datagrams(Dgram::new(socket, &core.config, state)?)
            }
            _ => Endpoint::Connections(Connections::new(socket, &core.config, &mut core.world)),
        };
        Ok(Server {
            core,
            poll,
            endpoint,
            file,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                waker,
                stats: SharedStats::default(),
            }),
            messages,
            signals: None,
            draining: None,
            metrics,
            watchdog,
            upgrade: Upgrade::new(takeover),
        })
    }

    /// A handle to stop the server, read its counters and send its
    /// handler messages from elsewhere.
    pub fn handle(&self) -> Handle<M> {
        Handle {
            shared: Arc::clone(&self.shared),
            messages: self.messages.clone(),
        }
    }

    /// The handler, before the server runs.
    pub fn handler(&self) -> &H {
        &self.core.handler
    }

    /// The handler, before the server runs (to set it up further).
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.core.handler
    }

    /// Calls [`Handler::server_timer`] with `token` at `deadline`, as
    /// [`Ctl::set_server_timer`](crate::Ctl::set_server_timer) does from a
    /// callback: for work the server starts with (a first heartbeat, a
    /// periodic sweep), set before [`run`](Self::run).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use uds_reactor::{Config, Context, Ctl, Frame, Handler, Server};
    ///
    /// struct Sweeper;
    ///
    /// impl Handler for Sweeper {
    ///     type State = ();
    ///     fn open(&mut self, _: &mut Context<'_>) {}
    ///     fn frame(&mut self, _: &mut (), _: Frame<'_>, _: &mut Context<'_>) {}
    ///     fn server_timer(&mut self, _: u64, ctl: &mut Ctl<'_>) {
    ///         ctl.set_server_timer(ctl.now() + Duration::from_secs(60), 0);
    ///     }
    /// }
    ///
    /// let dir = std::env::temp_dir().join(format!("udsr-doc-timer-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let mut server = Server::with_handler(Config::new(dir.join("s.sock")), Sweeper)?;
    /// server.set_server_timer(Instant::now() + Duration::from_secs(60), 0);
    /// # drop(server);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_server_timer(&mut self, deadline: Instant, token: u64) -> crate::TimerId {
        self.core
            .world
            .timers
            .insert(crate::ctl::Owner::Server { token }, deadline)
    }

    /// The address served (for an inherited socket, the one it is bound
    /// to; `None` if it has no name).
    pub fn address(&self) -> Option<&Address> {
        self.core.config.address.as_ref()
    }

    /// Serves until stopped (signal or [`Handle::stop`]), then drains and
    /// returns the final counters.
    ///
    /// It logs `listening on ...` (and, with [`Config::systemd`], tells
    /// systemd `READY=1`) on entry, not in
    /// [`with_handler`](Self::with_handler): whoever waits for that line
    /// may signal at once, so [`handle_signals`](Self::handle_signals) must
    /// be in place by then.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if polling itself fails, which does not happen short
    /// of a kernel or resource failure. Connections are closed and the
    /// socket file removed on that path too.
    pub fn run(self) -> Result<Stats, Error> {
        self.run_handler().0
    }

    /// As [`run`](Self::run), and gives the handler back, with whatever it
    /// accumulated (also when running failed).
    pub fn run_handler(mut self) -> (Result<Stats, Error>, H) {
        self.announce();
        let served = self.serve();
        let (stats, handler) = self.finish();
        (served.map(|()| stats), handler)
    }

    /// The loop (see the [module docs](self)).
    fn serve(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        // The clock is read once a turn, right after the poll: the
        // deadlines of the next poll are reckoned from that reading (a
        // turn's work later, so a wake-up may come that much late).
        let mut now = Instant::now();
        // Only a Handle reads the published counters, and none can be made
        // once the server runs (`handle` borrows the server, `run` takes
        // it): without one now, publishing every turn is work for nobody.
        let publish = Arc::strong_count(&self.shared) > 1;
        loop {
            if let Some(deadline) = self.draining {
                if now >= deadline || self.endpoint.is_drained() {
                    return Ok(());
                }
            }
            if self.upgrade.handed_over() && self.endpoint.is_drained() {
                return Ok(()); // SPEC: as soon as the last one is gone
            }
            let messages = self.core.messages_ready.then_some(now);
            let timers = self.core.world.timers.next();
            let ping = self.watchdog.as_ref().map(Watchdog::deadline);
            let upgrade = self.upgrade_deadline();
            let scrapes = self.metrics.as_ref().and_then(|m| m.wakeup(now));
            let timeout = [
                self.endpoint.wakeup(now),
                scrapes,
                self.draining,
                messages,
                timers,
                ping,
                upgrade,
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll", "events", e));
            }
            now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => self.core.messages_ready = true,
                    SIGNALS => self.take_signals(now),
                    UPGRADE_READY | UPGRADE_CHILD => self.on_upgrade_event(event.token(), now),
                    t if metrics::owns(t) => self.on_metrics_event(event),
                    _ => self
                        .endpoint
                        .on_event(event, &mut self.core, &self.poll, now),
                }
            }
            if self.shared.stop.load(Ordering::Relaxed) && self.draining.is_none() {
                self.begin_shutdown(now);
            }
            self.endpoint
                .turn(&mut self.core, self.poll.registry(), now);
            if let Some(m) = &mut self.metrics {
                m.turn(self.poll.registry(), &mut self.core.scratch, now);
            }
            self.upgrade_turn(now);
            if self.core.messages_ready {
                self.deliver_messages(now);
            }
            // Last in the turn: a turn that never ends sends no ping.
            if let Some(watchdog) = &mut self.watchdog {
                watchdog.tick(now);
            }
            if publish {
                self.shared.stats.publish(&self.core.stats);
            }
        }
    }
}

impl<H: Handler<M>, M> Server<H, M> {
    /// An event of the metrics socket or one of its clients, answered
    /// from the counters as they are now (as SIGUSR1 would log them).
    fn on_metrics_event(&mut self, event: &Event) {
        if let Some(m) = &mut self.metrics {
            let Core { scratch, stats, .. } = &mut self.core;
            m.on_event(event, scratch, stats, self.poll.registry());
        }
    }

    /// Hands waiting messages to the handler (bounded per turn; the rest
    /// wait for the next, which does not sleep).
    fn deliver_messages(&mut self, now: Instant) {
        for _ in 0..MESSAGES_PER_TURN {
            let message = match self.core.messages.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    self.core.messages_ready = false;
                    return;
                }
            };
            let Core { handler, world, .. } = &mut self.core;
            let mut ctl = match &mut self.endpoint {
                Endpoint::Datagrams(d) => world.ctl(now, Some(d.queue_mut())),
                Endpoint::Connections(_) => world.ctl(now, None),
            };
            handler.message(message, &mut ctl);
            self.endpoint
                .after_callbacks(&mut self.core, self.poll.registry(), now);
        }
    }
}

impl<H: Handler<M>, M> Core<H, M> {
    fn new(config: Config, handler: H, messages: Receiver<M>) -> Core<H, M> {
        let scratch_len = match config.socket_type {
            SocketType::Stream => READ_SIZE,
            // A whole message must fit, to tell an oversized one.
            _ => config.max_frame.max(READ_SIZE),
        };
        let limits = Limits::from_config(&config);
        let world = World::new(Framer::new(&limits));
        Core {
            handler,
            limits,
            config,
            spares: Spares::default(),
            scratch: vec![0; scratch_len],
            fds: Vec::new(),
            stats: Stats::default(),
            world,
            messages,
            messages_ready: false,
        }
    }
}

impl<S> Endpoint<S> {
    /// One readiness event for the endpoint's socket or a connection.
    fn on_event<H, M>(&mut self, event: &Event, core: &mut Core<H, M>, poll: &Poll, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        match self {
            Endpoint::Connections(c) => c.on_event(event, core, poll.registry(), now),
            Endpoint::Datagrams(d) => d.on_event(event),
        }
    }

    /// The work after the events: I/O left over, due timers, reaping.
    fn turn<H, M>(&mut self, core: &mut Core<H, M>, registry: &Registry, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        match self {
            Endpoint::Connections(c) => c.turn(core, registry, now),
            Endpoint::Datagrams(d) => d.turn(core, now),
        }
    }

    /// What a callback outside the I/O path (a message, a timer) queued:
    /// apply it and write it.
    fn after_callbacks<H, M>(&mut self, core: &mut Core<H, M>, registry: &Registry, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        match self {
            Endpoint::Connections(c) => c.apply_pushes(core, registry, now),
            Endpoint::Datagrams(d) => d.flush_queue(core),
        }
    }

    /// When the loop must wake: `now` if work is left over.
    fn wakeup(&self, now: Instant) -> Option<Instant> {
        match self {
            Endpoint::Connections(c) => c.wakeup(now),
            Endpoint::Datagrams(d) => d.wakeup(now),
        }
    }

    /// Whether nothing is owed to anyone (shutdown can end).
    fn is_drained(&self) -> bool {
        match self {
            Endpoint::Connections(c) => c.is_empty(),
            Endpoint::Datagrams(d) => d.is_drained(),
        }
    }

    /// The listening (or datagram) socket, while it is served.
    fn socket(&self) -> Option<&Socket> {
        match self {
            Endpoint::Connections(c) => c.listener.as_ref(),
            Endpoint::Datagrams(d) => Some(d.socket()),
        }
    }

    /// Connections (or queued replies) still open or waiting.
    fn open(&self) -> usize {
        match self {
            Endpoint::Connections(c) => c.len(),
            Endpoint::Datagrams(d) => d.queued(),
        }
    }
}

/// The address served, as errors and logs name it.
fn shown(config: &Config) -> String {
    match &config.address {
        Some(a) => a.to_string(),
        None => "an unnamed socket".into(),
    }
}
