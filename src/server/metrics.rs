//! The metrics endpoint: a second stream listener in the same loop, and
//! its scrapes (one request, one response, close), over the protocol in
//! [`crate::metrics`].
//!
//! A scrape costs at most [`MAX_REQUEST`] bytes of request plus its
//! response, and lives until a deadline set when it is accepted (10 s, or
//! `--idle-timeout` if shorter), however slowly it sends or reads. At most
//! [`MAX_SCRAPES`] are open at once; past that a new one is closed at
//! once. Everything is nonblocking and edge-triggered like the main
//! endpoint: read until `WouldBlock`, write eagerly, and ask for
//! WRITABLE only when a response is left over. Scrapes' tokens lie above
//! [`METRICS`], far from the connections' slab keys.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::Socket;

use super::logging::RateLimited;
use crate::config::{Address, Config, SocketType};
use crate::error::Error;
use crate::metrics::{respond, MAX_REQUEST};
use crate::stats::Stats;
use crate::sys::{self, SocketFile};
use crate::timers::{TimerKey, Timers};

/// The metrics listener; its scrapes are `METRICS + 1 + slab key`.
pub(super) const METRICS: Token = Token(usize::MAX / 2);

/// Scrapes open at once; a Prometheus server needs one.
const MAX_SCRAPES: usize = 64;

/// Accepts per turn, so a crowd of scrapers cannot starve the echo.
const ACCEPTS_PER_TURN: usize = 16;

/// How long a scrape may take, at most (shortened by `--idle-timeout`).
const DEADLINE: Duration = Duration::from_secs(10);

/// Bytes of a finished scrape's unread input discarded before it closes,
/// so its client sees EOF rather than a reset after the response.
const DISCARD: usize = 64 * 1024;

/// Whether `token` is the metrics listener's or a scrape's.
pub(super) fn owns(token: Token) -> bool {
    token.0 >= METRICS.0
}

/// One metrics client.
struct Scrape {
    sock: Socket,
    /// The request so far. Invariant: `request.len() <= MAX_REQUEST + 1`
    /// (one byte more tells an oversized request).
    request: Vec<u8>,
    /// The whole response, once the request is complete; empty before.
    response: Vec<u8>,
    /// Bytes of `response` sent. Invariant: `written <= response.len()`.
    written: usize,
    /// WRITABLE is registered (a response write would have blocked).
    writing: bool,
    /// The scrape's deadline in [`Metrics::timers`].
    timer: Option<TimerKey>,
}

/// The listener and its scrapes.
pub(super) struct Metrics {
    listener: Socket,
    /// The socket file we own (`None` for an abstract address or one
    /// systemd made); dropping it removes the file if it is still ours.
    file: Option<SocketFile>,
    /// The address, as logs name it.
    pub(super) address: Address,
    scrapes: Slab<Scrape>,
    /// One deadline per scrape (owner: its slab key).
    timers: Timers<usize>,
    /// How long a scrape may take.
    deadline: Duration,
    /// The listener may have connections waiting.
    accept_ready: bool,
    /// One warning a second for clients over [`MAX_SCRAPES`].
    full_log: RateLimited,
}

impl Metrics {
    /// Binds `address` by the main socket's rules (`config`'s mode, group
    /// and backlog), as a stream listener registered as [`METRICS`].
    ///
    /// # Errors
    ///
    /// As [`sys::bind`], naming the metrics address; [`Error::Io`] with
    /// step `register`.
    pub(super) fn bind(
        config: &Config,
        address: &Address,
        registry: &Registry,
    ) -> Result<Metrics, Error> {
        let mut own = config.clone();
        own.address = Some(address.clone());
        own.socket_type = SocketType::Stream;
        let bound = sys::bind(&own)?;
        Metrics::serve(bound.socket, bound.file, address.clone(), config, registry)
    }

    /// Serves a metrics listener passed by socket activation (an upgrade's
    /// old process, or systemd with `FileDescriptorName=metrics`), with
    /// its file if it is ours.
    ///
    /// # Errors
    ///
    /// [`Error::Activation`] for a socket without an address;
    /// [`Error::Io`] with step `register`.
    pub(super) fn adopt(
        listener: Socket,
        file: Option<SocketFile>,
        config: &Config,
        registry: &Registry,
    ) -> Result<Metrics, Error> {
        let address = sys::local_address(&listener)
            .ok_or_else(|| Error::Activation("the metrics socket has no address".into()))?;
        Metrics::serve(listener, file, address, config, registry)
    }

    fn serve(
        listener: Socket,
        file: Option<SocketFile>,
        address: Address,
        config: &Config,
        registry: &Registry,
    ) -> Result<Metrics, Error> {
        registry
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                METRICS,
                Interest::READABLE,
            )
            .map_err(|e| Error::io("register", format!("metrics socket {address}"), e))?;
        Ok(Metrics {
            listener,
            file,
            address,
            scrapes: Slab::new(),
            timers: Timers::default(),
            deadline: config.idle_timeout.map_or(DEADLINE, |t| t.min(DEADLINE)),
            accept_ready: false,
            full_log: RateLimited::default(),
        })
    }

    /// The listener (handed to the new process of an upgrade).
    pub(super) fn listener(&self) -> &Socket {
        &self.listener
    }

    /// The socket file we own, if any.
    pub(super) fn file(&self) -> Option<&SocketFile> {
        self.file.as_ref()
    }

    /// Closes the listener and its scrapes, leaving the socket file to
    /// the new process an upgrade handed it to.
    pub(super) fn hand_over(mut self) {
        if let Some(file) = self.file.take() {
            file.release();
        }
    }

    /// When the loop must wake: now while accepts are left over, else at
    /// the nearest scrape deadline.
    pub(super) fn wakeup(&self, now: Instant) -> Option<Instant> {
        if self.accept_ready {
            return Some(now);
        }
        self.timers.next()
    }

    /// A readiness event of the listener or of a scrape. `scratch`: the
    /// loop's shared read buffer; `stats`: the counters as they are now.
    pub(super) fn on_event(
        &mut self,
        event: &Event,
        scratch: &mut [u8],
        stats: &Stats,
        registry: &Registry,
    ) {
        if event.token() == METRICS {
            self.accept_ready = true;
            return;
        }
        let key = event.token().0 - METRICS.0 - 1;
        let Some(scrape) = self.scrapes.get_mut(key) else {
            return; // stale: closed in this batch
        };
        let mut done = Ok(false);
        if scrape.response.is_empty() {
            done = scrape.read(scratch, stats);
        }
        // Write eagerly: as soon as the response exists.
        if matches!(done, Ok(false)) && !scrape.response.is_empty() {
            done = scrape.write(registry, key);
        }
        match done {
            Ok(false) => {}
            Ok(true) => self.close(key, scratch),
            Err(e) => {
                debug!("metrics client: {e}");
                self.close(key, scratch);
            }
        }
    }

    /// Accepts waiting scrapes (bounded) and drops those past their
    /// deadline.
    pub(super) fn turn(&mut self, registry: &Registry, scratch: &mut [u8], now: Instant) {
        if self.accept_ready {
            self.accept(registry, now);
        }
        while let Some((_, key)) = self.timers.pop_due(now) {
            if let Some(scrape) = self.scrapes.get_mut(key) {
                scrape.timer = None;
                debug!(
                    "metrics client dropped: no response sent within {:?}",
                    self.deadline
                );
                self.close(key, scratch);
            }
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            let sock = match sys::accept(&self.listener) {
                Ok(sock) => sock,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the main endpoint pauses and
                    // warns; here the next scrape's edge retries.
                    debug!("accept on metrics socket {}: {e}", self.address);
                    self.accept_ready = false;
                    return;
                }
            };
            if self.scrapes.len() >= MAX_SCRAPES {
                if let Some(n) = self.full_log.hit(now) {
                    warn!(
                        "metrics socket {}: {MAX_SCRAPES} clients open already; closing new ones ({n} in the last second)",
                        self.address
                    );
                }
                continue; // dropped: closed at once
            }
            let entry = self.scrapes.vacant_entry();
            let token = Token(METRICS.0 + 1 + entry.key());
            let registered =
                registry.register(&mut SourceFd(&sock.as_raw_fd()), token, Interest::READABLE);
            if let Err(e) = registered {
                debug!("register a metrics client: {e}");
                continue;
            }
            let mut timer = None;
            self.timers
                .schedule(&mut timer, entry.key(), now + self.deadline);
            entry.insert(Scrape {
                sock,
                request: Vec::new(),
                response: Vec::new(),
                written: 0,
                writing: false,
                timer,
            });
        }
        // The batch ran out with connections maybe still waiting: the
        // loop comes back next turn without sleeping.
    }

    /// Closes a scrape: its deadline goes, what it sent after its request
    /// is discarded (so it reads EOF, not a reset), and its socket closes
    /// (which takes it out of the poller).
    fn close(&mut self, key: usize, scratch: &mut [u8]) {
        let mut scrape = self.scrapes.remove(key);
        self.timers.cancel(&mut scrape.timer);
        let mut left = DISCARD;
        while left > 0 {
            let len = left.min(scratch.len());
            match (&scrape.sock).read(&mut scratch[..len]) {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }
}

impl Scrape {
    /// Reads until the request is complete (its response is then ready),
    /// the socket would block, or the client is gone. `Ok(true)`: close.
    fn read(&mut self, scratch: &mut [u8], stats: &Stats) -> io::Result<bool> {
        loop {
            // One byte past the limit tells an oversized request.
            let room = (MAX_REQUEST + 1 - self.request.len()).min(scratch.len());
            let (n, eof) = match (&self.sock).read(&mut scratch[..room]) {
                Ok(0) => (0, true),
                Ok(n) => (n, false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if eof && self.request.is_empty() {
                return Ok(true); // connected and left: nothing to answer
            }
            self.request.extend_from_slice(&scratch[..n]);
            if let Some(response) = respond(&self.request, eof, stats) {
                self.response = response;
                self.request = Vec::new();
                return Ok(false);
            }
        }
    }

    /// Writes what is left of the response. `Ok(true)`: all sent (close);
    /// `Ok(false)`: the socket is full and WRITABLE is registered.
    fn write(&mut self, registry: &Registry, key: usize) -> io::Result<bool> {
        while self.written < self.response.len() {
            match (&self.sock).write(&self.response[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.writing {
                        self.writing = true;
                        let token = Token(METRICS.0 + 1 + key);
                        registry.reregister(
                            &mut SourceFd(&self.sock.as_raw_fd()),
                            token,
                            Interest::WRITABLE,
                        )?;
                    }
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Tell the client the response is whole before the close.
        let _ = self.sock.shutdown(Shutdown::Write);
        Ok(true)
    }
}
