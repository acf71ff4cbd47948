//! The server: one thread, one `mio::Poll`, a listener and its connections
//! in a slab whose key is the token.
//!
//! # The loop
//!
//! ```text
//! loop:
//!   timeout = 0 if work is left over (ready list, unfinished accepts),
//!             else until the nearest deadline
//!   poll(timeout)
//!   for each event: listener -> ready to accept; waker/signals -> stop or
//!                   log; connection -> flush if writable, read if readable
//!   accept (bounded), work the ready list (bounded), fire due deadlines
//!   reap connections that finished during the batch
//! ```
//!
//! mio is edge-triggered: each connection is read until `WouldBlock` (or a
//! short read, which on a stream means the same), or, when its per-event
//! budget runs out or backpressure stops it with input left, it goes on the
//! ready list and the next poll does not sleep. Output is written eagerly;
//! WRITABLE is registered only while bytes remain.

pub(crate) mod dgram;
mod timers;

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use socket2::Socket;

use crate::buffer::Spares;
use crate::config::{Address, Config, SocketType};
use crate::conn::{CloseReason, Conn, Limits, Wants, READ_ROOM};
use crate::error::Error;
use crate::handler::{ConnId, Echo, Handler};
use crate::stats::{SharedStats, Stats};
use crate::sys::{self, FileId};
use timers::Timers;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// Connection tokens are slab keys shifted past the reserved ones.
const FIRST_CONN: usize = 3;

/// Reads per connection per turn before others get theirs.
const READS_PER_TURN: usize = 4;
/// Accepts per turn before connections get theirs.
const ACCEPTS_PER_TURN: usize = 128;
/// Size of the shared read buffer for streams: [`READ_ROOM`], the most
/// one read may add past `--max-buffer` (see [`Limits::out_limit`]).
/// Larger reads were measured (one stream of 64 KiB messages): 128 KiB
/// halves the syscalls per message, yet on a quiet machine costs 2% more
/// CPU per GB and raises the median latency from 51 to 77 µs, since two
/// messages wait for one read; 256 KiB overflows the default 208 KiB send
/// buffer on the way back.
const SCRATCH: usize = READ_ROOM;
/// How long accepting pauses after running out of descriptors, unless a
/// connection closes first (nginx waits 500 ms too).
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);
/// Descriptors kept back from `--max-connections`'s default for the
/// listener, poll, waker, signals, logging and the standard streams.
const FD_RESERVE: u64 = 32;

/// What other threads share with the running server.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    waker: Waker,
    stats: SharedStats,
}

/// Stops a server and reads its counters from any thread.
///
/// `Send + Sync + Clone`; built on a `mio::Waker`, so [`stop`](Self::stop)
/// wakes the server at once.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Asks the server to shut down as on SIGTERM: stop accepting, remove
    /// the socket file, flush for up to the drain timeout, return.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.waker.wake() {
            warn!("cannot wake the server to stop it: {e}");
        }
    }

    /// The counters as of the server's last loop turn.
    pub fn stats(&self) -> Stats {
        self.shared.stats.load()
    }
}

/// One connection's slab entry: its socket, its state machine and what the
/// loop knows of its readiness.
struct Entry<S> {
    sock: Socket,
    conn: Conn<S>,
    /// Interest currently registered with the poller.
    registered: Wants,
    /// Input may be waiting: an edge was seen and not drained yet.
    readable: bool,
    /// The peer shut down its side (RDHUP/HUP seen): a short read no longer
    /// proves the socket drained, since the EOF behind the data brings no
    /// new edge; read on until the zero-length read.
    read_closed: bool,
    /// On the ready list already.
    queued: bool,
    /// On the reap list already.
    reaping: bool,
    /// The deadline the timer heap holds for this entry.
    timer: Option<Instant>,
}

/// A bound Unix-socket server, ready to [`run`](Server::run).
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
pub struct Server<H: Handler = Echo> {
    config: Config,
    limits: Limits,
    poll: Poll,
    listener: Option<Socket>,
    /// The socket file we created, to remove at shutdown if still ours.
    file: Option<(PathBuf, FileId)>,
    conns: Slab<Entry<H::State>>,
    handler: H,
    shared: Arc<Shared>,
    signals: Option<Signals>,
    spares: Spares,
    /// Shared read buffer: connections own no read buffer.
    scratch: Vec<u8>,
    /// Connections with readiness left over (slab keys).
    ready: Vec<usize>,
    /// Finished connections to close after the batch (slab keys).
    reap: Vec<usize>,
    timers: Timers,
    /// The listener may have connections waiting.
    accept_ready: bool,
    /// Accepting is paused until then (out of descriptors).
    accept_paused: Option<Instant>,
    max_connections: usize,
    /// Shutdown began; connections must be flushed by this deadline.
    draining: Option<Instant>,
    stats: Stats,
    reject_log: RateLimited,
    dgram: Option<dgram::Dgram<H::State>>,
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

impl<H: Handler> Server<H> {
    /// Validates `config`, binds (or, with `config.systemd`, inherits) the
    /// socket and starts listening; connections wait in the backlog until
    /// [`run`](Self::run).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for bad settings; [`Error::InUse`] when a server
    /// listens there already; [`Error::NotSocket`], [`Error::NoParent`],
    /// [`Error::PathTooLong`] for unusable paths; [`Error::Io`] naming the
    /// failing step otherwise.
    pub fn with_handler(mut config: Config, handler: H) -> Result<Server<H>, Error> {
        config.validate()?;
        let nofile = sys::raise_nofile_limit().unwrap_or(1024);
        let inherited = if config.systemd {
            sys::inherited_listener(config.socket_type)?
        } else {
            None
        };
        let (listener, file) = match inherited {
            Some(socket) => {
                // Serve and report what systemd bound, whatever PATH says.
                config.address = sys::local_address(&socket);
                (socket, None)
            }
            None if config.address.is_some() => {
                let bound = sys::bind(&config)?;
                (bound.socket, bound.file)
            }
            None => {
                return Err(Error::Config(
                    "no PATH given and no socket inherited from systemd".into(),
                ))
            }
        };
        let poll = Poll::new().map_err(|e| Error::io("create", "poll", e))?;
        let waker =
            Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("create", "waker", e))?;
        let fd = listener.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
            .map_err(|e| Error::io("register", "listener", e))?;
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| nofile.saturating_sub(FD_RESERVE).max(1) as usize);
        let limits = Limits::from_config(&config);
        let scratch_len = match config.socket_type {
            SocketType::Stream => SCRATCH,
            _ => config.max_frame.max(SCRATCH),
        };
        let mut server = Server {
            limits,
            poll,
            listener: None,
            file,
            conns: Slab::new(),
            handler,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                waker,
                stats: SharedStats::default(),
            }),
            signals: None,
            spares: Spares::default(),
            scratch: vec![0; scratch_len],
            ready: Vec::new(),
            reap: Vec::new(),
            timers: Timers::default(),
            accept_ready: false,
            accept_paused: None,
            max_connections,
            draining: None,
            stats: Stats::default(),
            reject_log: RateLimited::default(),
            dgram: None,
            config,
        };
        if server.config.socket_type == SocketType::Dgram {
            server.dgram = Some(dgram::Dgram::new(listener, &server.config)?);
        } else {
            if server.config.socket_type == SocketType::Seqpacket {
                // Probed on the listener: accepted sockets are raised alike.
                dgram::fit_messages(&listener, server.config.max_frame);
            }
            server.listener = Some(listener);
        }
        Ok(server)
    }

    /// A handle to stop the server and read its counters from elsewhere.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The address served (for an inherited socket, the one it is bound
    /// to; `None` if it has no name).
    pub fn address(&self) -> Option<&Address> {
        self.config.address.as_ref()
    }

    /// Shuts down on SIGINT/SIGTERM/SIGHUP (a second one ends the drain at
    /// once) and logs the counters on SIGUSR1, as the binary does. Without it, only [`Handle::stop`] stops the server.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the handlers cannot be installed.
    pub fn handle_signals(&mut self) -> Result<(), Error> {
        // SIGHUP (the terminal went away) stops us like SIGTERM, leaving no
        // stale file behind, unless it was ignored when we started (nohup).
        let mut stopping = vec![SIGINT, SIGTERM, SIGUSR1];
        if !sys::signal_ignored(SIGHUP) {
            stopping.push(SIGHUP);
        }
        let mut signals =
            Signals::new(stopping).map_err(|e| Error::io("install", "signal handlers", e))?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| Error::io("register", "signal handlers", e))?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Serves until stopped (signal or [`Handle::stop`]), then drains and
    /// returns the final counters.
    ///
    /// It logs `listening on ...` (and tells systemd `READY=1`) on entry,
    /// not in [`with_handler`](Self::with_handler): whoever waits for that
    /// line may signal at once, so [`handle_signals`](Self::handle_signals)
    /// must be in place by then.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if polling itself fails, which does not happen short
    /// of a kernel or resource failure.
    pub fn run(mut self) -> Result<Stats, Error> {
        self.announce();
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.draining {
                let drained =
                    self.conns.is_empty() && self.dgram.as_ref().is_none_or(|d| d.is_drained());
                if drained || now >= deadline {
                    break;
                }
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll", "events", e));
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready = true,
                    WAKER => {}
                    SIGNALS => self.take_signals(now),
                    Token(t) => self.on_conn_event(
                        t - FIRST_CONN,
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_read_closed() || event.is_error(),
                        event.is_writable(),
                        now,
                    ),
                }
            }
            if self.shared.stop.load(Ordering::Relaxed) && self.draining.is_none() {
                self.begin_shutdown(now);
            }
            self.turn(now);
            self.shared.stats.publish(&self.stats);
        }
        self.finish();
        Ok(self.stats)
    }

    /// The work after the events: accepts, leftovers, deadlines, reaping.
    fn turn(&mut self, now: Instant) {
        if let Some(mut d) = self.dgram.take() {
            d.pump(
                now,
                &mut self.handler,
                &mut self.scratch,
                &mut self.stats,
                self.accept_ready,
            );
            self.accept_ready = false;
            self.dgram = Some(d);
            return;
        }
        if self.accept_paused.is_some_and(|until| now >= until) {
            self.accept_paused = None;
            self.accept_ready = true;
        }
        if self.accept_ready && self.accept_paused.is_none() {
            self.accept_batch(now);
        }
        // By index, not `mem::take`: the list keeps its allocation. Keys
        // queued again meanwhile land past `queued` and wait for next turn.
        let queued = self.ready.len();
        for i in 0..queued {
            let key = self.ready[i];
            if let Some(entry) = self.conns.get_mut(key) {
                entry.queued = false;
                self.work(key, now);
            }
        }
        self.ready.drain(..queued);
        while let Some((deadline, key)) = self.timers.pop_due(now) {
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            if entry.timer != Some(deadline) {
                continue; // stale: superseded by an earlier deadline
            }
            entry.timer = None;
            entry
                .conn
                .handle_timeout(now, &self.limits, &mut self.spares);
            self.settle(key);
        }
        self.reap_finished();
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let busy = !self.ready.is_empty()
            || (self.accept_ready && self.accept_paused.is_none())
            || self.dgram.as_ref().is_some_and(|d| d.has_work());
        if busy {
            return Some(Duration::ZERO);
        }
        [
            self.timers.next(),
            self.accept_paused,
            self.draining,
            self.dgram.as_ref().and_then(|d| d.retry_at()),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    fn on_conn_event(
        &mut self,
        key: usize,
        readable: bool,
        read_closed: bool,
        writable: bool,
        now: Instant,
    ) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        entry.readable |= readable;
        entry.read_closed |= read_closed;
        if writable {
            self.flush(key, now);
        }
        self.work(key, now);
    }

    /// Reads what this connection's budget allows, writing replies eagerly.
    fn work(&mut self, key: usize, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let id = ConnId(key);
        let stream = self.config.socket_type == SocketType::Stream;
        let max_msg = self.config.max_frame.min(self.scratch.len());
        for _ in 0..READS_PER_TURN {
            if !entry.readable || !entry.conn.wants_read(&self.limits) {
                break;
            }
            let read = if stream {
                (&entry.sock).read(&mut self.scratch).map(|n| (n, false))
            } else {
                sys::recv_msg(&entry.sock, &mut self.scratch[..max_msg])
            };
            let tally = match read {
                Ok((0, _)) => {
                    entry.readable = false;
                    entry
                        .conn
                        .handle_eof(id, &self.limits, &mut self.handler, &mut self.spares)
                }
                Ok((n, truncated)) => {
                    self.stats.bytes_in += n as u64;
                    if truncated {
                        entry.conn.handle_oversized(n as u64, &self.limits);
                        break;
                    }
                    if stream && n < self.scratch.len() && !entry.read_closed {
                        entry.readable = false; // a short read drained the socket
                    }
                    entry.conn.handle_read(
                        id,
                        &self.scratch[..n],
                        now,
                        &self.limits,
                        &mut self.handler,
                        &mut self.spares,
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    entry.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("read {id}: {e}");
                    entry.conn.handle_io_error(&mut self.spares);
                    break;
                }
            };
            self.stats.frames_in += tally.frames_in;
            self.stats.frames_out += tally.frames_out;
            flush_entry(entry, &self.limits, &mut self.spares, &mut self.stats, now);
        }
        if entry.readable && entry.conn.wants_read(&self.limits) && !entry.queued {
            entry.queued = true;
            self.ready.push(key);
        }
        self.settle(key);
    }

    fn flush(&mut self, key: usize, now: Instant) {
        if let Some(entry) = self.conns.get_mut(key) {
            flush_entry(entry, &self.limits, &mut self.spares, &mut self.stats, now);
        }
    }

    /// After any change to a connection: reap it if done, else bring its
    /// registration and deadline in line with its state.
    fn settle(&mut self, key: usize) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        if entry.conn.is_done() {
            if !entry.reaping {
                entry.reaping = true;
                self.reap.push(key);
            }
            return;
        }
        let wants = entry.conn.interest();
        if wants != entry.registered {
            if let Some(interest) = to_interest(wants) {
                let fd = entry.sock.as_raw_fd();
                let res = self.poll.registry().reregister(
                    &mut SourceFd(&fd),
                    Token(key + FIRST_CONN),
                    interest,
                );
                match res {
                    Ok(()) => entry.registered = wants,
                    Err(e) => {
                        warn!("reregister {}: {e}", ConnId(key));
                        entry.conn.handle_io_error(&mut self.spares);
                    }
                }
            }
        }
        // A drained connection that still has input waiting must read on.
        if entry.readable && entry.conn.wants_read(&self.limits) && !entry.queued {
            entry.queued = true;
            self.ready.push(key);
        }
        let deadline = entry.conn.poll_timeout(&self.limits);
        self.timers.schedule(key, deadline, &mut entry.timer);
    }

    /// Accepts waiting connections, up to the per-turn budget.
    fn accept_batch(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                self.accept_ready = false;
                return;
            };
            match sys::accept(listener) {
                Ok(sock) => self.admit(sock, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO)
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: no busy loop; try
                    // again when a connection closes or after a pause.
                    self.stats.accept_errors += 1;
                    if let Some(n) = self.reject_log.hit(now) {
                        warn!("accept: {e}; pausing accepts ({n} errors or rejections in the last second)");
                    }
                    self.accept_paused = Some(now + ACCEPT_PAUSE);
                    self.accept_ready = false;
                    return;
                }
            }
        }
    }

    /// Takes one accepted socket in, or closes it at once if it is over the
    /// limit or fails the credential check.
    fn admit(&mut self, sock: Socket, now: Instant) {
        if self.conns.len() >= self.max_connections {
            self.stats.rejected += 1;
            if let Some(n) = self.reject_log.hit(now) {
                warn!(
                    "connection limit {} reached: closing new connections ({n} in the last second)",
                    self.max_connections
                );
            }
            return;
        }
        let peer = sys::peer_cred(sock.as_fd()).ok();
        if self.config.checks_credentials() {
            let allowed = peer.is_some_and(|p| self.config.allows(p.uid, p.gid));
            if !allowed {
                self.stats.rejected_cred += 1;
                match peer {
                    Some(p) => warn!(
                        "rejected peer pid={} uid={} gid={}: not in --allow-uid/--allow-gid",
                        p.pid, p.uid, p.gid
                    ),
                    None => warn!("rejected peer: credentials unavailable"),
                }
                return;
            }
        }
        let vacant = self.conns.vacant_entry();
        let key = vacant.key();
        let fd = sock.as_raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(key + FIRST_CONN),
            Interest::READABLE,
        ) {
            warn!("register new connection: {e}");
            return;
        }
        if self.limits.messages {
            // Messages up to --max-frame must fit in the send buffer.
            if let Err(e) = sys::fit_send_buffer(&sock, self.config.max_frame) {
                debug!("raise the send buffer of {}: {e}", ConnId(key));
            }
        }
        let mut conn = Conn::new(&self.limits, peer, now);
        let tally = conn.open(
            ConnId(key),
            &self.limits,
            &mut self.handler,
            &mut self.spares,
        );
        self.stats.frames_out += tally.frames_out;
        vacant.insert(Entry {
            sock,
            conn,
            registered: Wants {
                read: true,
                write: false,
            },
            readable: false,
            read_closed: false,
            queued: false,
            reaping: false,
            timer: None,
        });
        self.stats.accepted += 1;
        self.stats.open += 1;
        if let Some(p) = peer {
            debug!(
                "accepted {} pid={} uid={} gid={}",
                ConnId(key),
                p.pid,
                p.uid,
                p.gid
            );
        }
        self.flush(key, now);
        self.settle(key);
    }

    /// Closes the connections that finished during this turn.
    fn reap_finished(&mut self) {
        let freed = !self.reap.is_empty();
        let mut reap = std::mem::take(&mut self.reap);
        for key in reap.drain(..) {
            if let Some(entry) = self.conns.try_remove(key) {
                self.close_entry(key, entry);
            }
        }
        // Keep the allocation: no malloc per turn that closes something.
        if self.reap.is_empty() {
            self.reap = reap;
        }
        // Descriptors came free: waiting connections can be accepted now,
        // not only when the next one arrives.
        if freed && self.accept_paused.take().is_some() {
            self.accept_ready = true;
        }
    }

    fn close_entry(&mut self, key: usize, entry: Entry<H::State>) {
        let id = ConnId(key);
        // Formatted only if a line is logged: no allocation per close.
        let who = Who(entry.conn.peer());
        match entry.conn.close_reason() {
            Some(CloseReason::Frame(e)) => warn!("closing {id} ({who}): {e}"),
            Some(CloseReason::PartialAtEof(n)) => {
                self.stats.dropped += 1;
                info!("{id} ({who}) ended inside a frame: dropped {n} bytes of a partial frame");
            }
            Some(CloseReason::Idle) => {
                self.stats.closed_idle += 1;
                debug!("closing {id} ({who}): idle");
            }
            Some(CloseReason::DrainTimeout) => {
                warn!("closing {id} ({who}): output not flushed within the drain timeout")
            }
            Some(CloseReason::Handler) => debug!("closing {id} ({who}): handler asked"),
            Some(CloseReason::Io) | None => debug!("closed {id}"),
        }
        entry.conn.finish(id, &mut self.handler, &mut self.spares);
        // Closing the descriptor removes it from the epoll set.
        drop(entry.sock);
        self.stats.closed += 1;
        self.stats.open -= 1;
    }

    fn take_signals(&mut self, now: Instant) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let mut stop = false;
        for signal in signals.pending() {
            match signal {
                SIGUSR1 => info!("{}", self.stats),
                _ => stop = true,
            }
        }
        if !stop {
            return;
        }
        if self.draining.is_none() {
            self.begin_shutdown(now);
        } else {
            // A second signal: the operator does not want to wait.
            let n = self.conns.len();
            warn!(
                "second signal: exiting now without flushing {n} connection{}",
                if n == 1 { "" } else { "s" }
            );
            self.draining = Some(now);
        }
    }

    /// Stop accepting and reading, remove the socket file, and give every
    /// connection until the drain deadline to flush.
    fn begin_shutdown(&mut self, now: Instant) {
        let n = self.conns.len();
        info!(
            "shutting down: flushing {n} connection{} for up to {:?}",
            if n == 1 { "" } else { "s" },
            self.config.drain_timeout
        );
        self.draining = Some(now + self.config.drain_timeout);
        self.stop_listening();
        for (_, entry) in self.conns.iter_mut() {
            entry.conn.shutdown(now);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.settle(key);
        }
        if let Err(e) = sys::notify("STOPPING=1") {
            debug!("notify STOPPING=1: {e}");
        }
    }

    fn stop_listening(&mut self) {
        if let Some(listener) = self.listener.take() {
            let fd = listener.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        if let Some(d) = self.dgram.as_mut() {
            d.stop_reading();
        }
        self.accept_ready = false;
        if let Some((path, id)) = self.file.take() {
            match sys::remove_socket_file(&path, id) {
                Ok(true) => debug!("removed {}", path.display()),
                Ok(false) => info!("left {} alone: it is no longer our socket", path.display()),
                Err(e) => warn!("remove {}: {e}", path.display()),
            }
        }
    }

    fn finish(&mut self) {
        if self.draining.is_none() {
            self.stop_listening();
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(entry) = self.conns.try_remove(key) {
                self.close_entry(key, entry);
            }
        }
        if let Some(d) = self.dgram.take() {
            d.finish(&mut self.handler, &mut self.stats);
        }
        self.shared.stats.publish(&self.stats);
        info!("{}", self.stats);
    }

    fn announce(&self) {
        let addr = match &self.config.address {
            Some(a) => a.to_string(),
            None => "an unnamed socket".into(),
        };
        // Only a path we bound ourselves has a file of ours.
        let inherited =
            self.file.is_none() && matches!(self.config.address, Some(Address::Path(_)));
        info!(
            "listening on {addr} ({}, {}){}",
            self.config.socket_type,
            self.config.framing,
            if inherited {
                ", descriptor 3 from systemd"
            } else {
                ""
            }
        );
        if matches!(self.config.address, Some(Address::Abstract(_)))
            && !self.config.checks_credentials()
        {
            warn!("{addr} is an abstract address: file permissions do not apply, any process in this network namespace can connect or send to it (use --allow-uid/--allow-gid)");
        }
        if self.config.systemd {
            if let Err(e) = sys::notify("READY=1") {
                warn!("notify READY=1: {e}");
            }
        }
    }
}

/// Writes pending output until it is gone or the socket would block.
fn flush_entry<S>(
    entry: &mut Entry<S>,
    limits: &Limits,
    spares: &mut Spares,
    stats: &mut Stats,
    now: Instant,
) {
    // `pending`, not an empty `transmit`: a message socket may owe an
    // empty message, which is sent like any other.
    while entry.conn.pending() > 0 {
        let data = entry.conn.transmit(limits);
        let len = data.len();
        match sys::send_nosignal(&entry.sock, data) {
            Ok(n) => {
                stats.bytes_out += n as u64;
                entry.conn.handle_written(n, now, limits, spares);
                if n < len && !limits.messages {
                    return; // the send buffer is full: wait for WRITABLE
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                warn!("closing: a reply of {len} bytes is longer than the socket's send buffer allows (raise net.core.wmem_max)");
                entry.conn.handle_io_error(spares);
                return;
            }
            Err(e) => {
                debug!("write: {e}");
                entry.conn.handle_io_error(spares);
                return;
            }
        }
    }
}

fn to_interest(w: Wants) -> Option<Interest> {
    match (w.read, w.write) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}

/// A peer as logged: `pid=1 uid=2 gid=3`, `?` for what is unknown.
struct Who(Option<sys::PeerCred>);

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "pid={} uid={} gid={}", p.pid, p.uid, p.gid),
            None => f.write_str("pid=? uid=? gid=?"),
        }
    }
}

/// Rate-limits a warning to one line per second, counting what it skipped.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    /// Records one occurrence; returns the count to report if a line is due.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}
