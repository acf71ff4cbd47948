//! The datagram endpoint: one bound socket, each datagram a frame answered
//! to its sender; replies queue (bounded by `--max-buffer`) while the
//! receiver is full.
//!
//! The handler fills a plain queue ([`Datagrams`]) and the endpoint sends
//! it once the callback returns: write eagerly, then wait. A datagram
//! socket gets no "writable again" event after a send to a full receiver
//! fails (the receiver's queue is not ours), so queued replies are retried
//! on a short timer. While the queue is over its limit nothing is read:
//! blocking senders slow down instead of replies being lost.
//!
//! The queue is one FIFO for every sender: a bound sender that never reads
//! its replies holds up the others once the queue is full, as it would
//! hold up a blocking server. Datagrams that cannot be answered (longer
//! than `--max-frame`, from an unbound sender, refused by the credential
//! check) are dropped, counted, and logged at most once a second per
//! kind, with the sender's pid/uid/gid: `SO_PASSCRED` is always on so the
//! kernel attaches them.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::event::Event;
use socket2::{SockAddr, Socket};

use super::logging::{RateLimited, Who};
use super::Core;
use crate::codec::Frame;
use crate::config::Config;
use crate::conn::CloseReason;
use crate::ctl::Owner;
use crate::error::Error;
use crate::handler::{Closed, ConnId, Context, Handler};
use crate::outbox::{Datagrams, Outbox, Through};
use crate::stats::Stats;
use crate::sys;

/// The one "connection" of a datagram socket.
const DGRAM_ID: ConnId = ConnId { key: 0, serial: 0 };

/// Datagrams read per turn before the loop polls again.
const READS_PER_TURN: usize = 64;
/// How soon queued replies are retried after a receiver was full.
const RETRY: Duration = Duration::from_millis(2);

/// The handler's state for the whole datagram socket, made by its `open`
/// when the server is built (with nowhere to reply yet: what it sends
/// there is dropped).
pub(super) fn open_state<H: Handler<M>, M>(core: &mut Core<H, M>) -> H::State {
    let (mut nowhere, mut no_fds) = (crate::buffer::Buffer::new(), None);
    let outbox = Outbox::Messages {
        out: &mut nowhere,
        limit: 0,
        fds: &mut no_fds,
        through: None,
    };
    let Core {
        handler,
        spares,
        world,
        ..
    } = core;
    let mut cx = Context::new(
        DGRAM_ID,
        None,
        outbox,
        None,
        &mut spares.output,
        world.ctl(Instant::now(), None),
    );
    let state = handler.open(&mut cx);
    nowhere.release(&mut spares.output);
    state
}

/// Raises `sock`'s send buffer so messages up to `max_frame` can be sent,
/// and warns if the system caps it lower (`net.core.wmem_max`).
pub(super) fn fit_messages(sock: &Socket, max_frame: usize) {
    match sys::fit_send_buffer(sock, max_frame) {
        Ok(room) if room < max_frame => warn!(
            "--max-frame {max_frame} exceeds the longest message the socket send buffer allows ({room} bytes; raise net.core.wmem_max): longer replies cannot be sent"
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot size the socket send buffer for --max-frame {max_frame}: {e}"),
    }
}

/// The datagram socket, its reply queue and the handler's state for it.
pub(super) struct Dgram<S> {
    sock: Socket,
    queue: Datagrams,
    state: S,
    /// Datagrams may be waiting (an edge was seen and not drained).
    readable: bool,
    /// False once shutdown began.
    reading: bool,
    /// Queued replies are retried then.
    retry_at: Option<Instant>,
    max_buffer: usize,
    /// Descriptors one datagram may carry (`--max-fds`).
    max_fds: usize,
    /// The descriptors of the datagram being handled.
    received: Vec<OwnedFd>,
    /// One warning a second per kind of dropped datagram.
    fds_log: RateLimited,
    oversized_log: RateLimited,
    unbound_log: RateLimited,
    rejected_log: RateLimited,
}

impl<S> Dgram<S> {
    /// The endpoint for `sock`, already registered; `state` is the
    /// handler's for the whole socket.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `SO_PASSCRED` cannot be set.
    pub(super) fn new(sock: Socket, config: &Config, state: S) -> Result<Dgram<S>, Error> {
        // Always on: the credential check needs it, and so does naming the
        // sender of a dropped datagram in the log.
        sock.set_passcred(true)
            .map_err(|e| Error::io("setsockopt SO_PASSCRED", "datagram socket", e))?;
        fit_messages(&sock, config.max_frame);
        Ok(Dgram {
            sock,
            queue: Datagrams::new(),
            state,
            readable: true,
            reading: true,
            retry_at: None,
            max_buffer: config.max_buffer,
            max_fds: config.max_fds,
            received: Vec::new(),
            fds_log: RateLimited::default(),
            oversized_log: RateLimited::default(),
            unbound_log: RateLimited::default(),
            rejected_log: RateLimited::default(),
        })
    }
}

impl<S> Dgram<S> {
    /// The reply queue, for a callback outside a datagram (a message).
    pub(super) fn queue_mut(&mut self) -> &mut Datagrams {
        &mut self.queue
    }

    /// Sends what a callback outside a datagram queued.
    pub(super) fn flush_queue<H: Handler<M>, M>(&mut self, core: &mut Core<H, M>) {
        self.flush(None, &mut core.stats);
    }

    /// The socket is readable (the only event it registers for).
    pub(super) fn on_event(&mut self, event: &Event) {
        self.readable |= event.is_readable() || event.is_error();
    }

    /// Whether reading can go on without waiting for an event.
    fn has_work(&self) -> bool {
        self.reading
            && self.readable
            && self.queue.cost() < self.max_buffer
            && (self.max_fds == 0 || self.queue.held_fds() < self.max_fds)
    }

    /// When the loop must wake: now while datagrams can be read, else when
    /// queued replies are to be retried.
    pub(super) fn wakeup(&self, now: Instant) -> Option<Instant> {
        if self.has_work() {
            Some(now)
        } else {
            self.retry_at
        }
    }

    /// Whether no replies are waiting.
    pub(super) fn is_drained(&self) -> bool {
        self.queue.is_empty()
    }

    /// The socket (handed to the new process of an upgrade).
    pub(super) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Replies waiting.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Shutdown: read nothing more; queued replies are still sent.
    pub(super) fn stop_reading(&mut self) {
        self.reading = false;
    }

    /// Sends due replies, then reads (bounded) while the queue has room.
    pub(super) fn turn<H, M>(&mut self, core: &mut Core<H, M>, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        self.flush(None, &mut core.stats);
        for _ in 0..READS_PER_TURN {
            if !self.has_work() {
                break;
            }
            let max = core.config.max_frame.min(core.scratch.len());
            let fds = (self.max_fds > 0).then_some((&mut self.received, self.max_fds));
            match sys::recv_dgram(&self.sock, &mut core.scratch[..max], true, fds) {
                Ok(d) => self.answer(&d, core, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("receive datagram: {e}");
                    self.readable = false;
                }
            }
        }
        while let Some((_, owner)) = core.world.timers.pop_due(now) {
            // A datagram socket has no connections: only server timers.
            if let Owner::Server { token } = owner {
                let ctl = &mut core.world.ctl(now, Some(&mut self.queue));
                core.handler.server_timer(token, ctl);
                self.flush(None, &mut core.stats);
            }
        }
        self.retry_at = (!self.queue.is_empty()).then(|| now + RETRY);
    }

    /// Hands one datagram to the handler, or drops it (counted) when it
    /// cannot be answered.
    fn answer<H, M>(&mut self, d: &sys::Datagram, core: &mut Core<H, M>, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        core.stats.bytes_in += d.full_len as u64;
        core.stats.fds_in += self.received.len() as u64;
        let Some(from) = self.admit(d, core, now) else {
            self.received.clear();
            core.stats.dropped += 1;
            return;
        };
        core.stats.frames_in += 1;
        let received = (self.max_fds > 0).then_some(&mut self.received);
        let Core {
            handler,
            spares,
            scratch,
            stats,
            world,
            ..
        } = &mut *core;
        let data = &scratch[..d.len];
        // A reply that is this datagram goes straight back from the read
        // buffer, as on connections (see `outbox`'s write-through).
        let mut piece = None;
        let outbox = Outbox::Datagrams {
            queue: &mut self.queue,
            to: from,
            through: Some(Through {
                input: data,
                piece: &mut piece,
                fds: &mut spares.through_fds,
            }),
        };
        let mut cx = Context::new(
            DGRAM_ID,
            d.cred,
            outbox,
            received,
            &mut spares.output,
            world.ctl(now, None),
        );
        handler.frame(&mut self.state, Frame::raw(data), &mut cx);
        // (Replies count as frames out once sent: see `send`.)
        // Descriptors the handler did not take are closed.
        self.received.clear();
        // Write eagerly (the piece first: nothing is queued before it);
        // only what must wait keeps a copy of its bytes and the address.
        let blocked = piece.is_some_and(|piece| {
            let reply = &data[piece];
            let blocked = send(&self.sock, from, reply, &[], stats).is_break();
            if blocked {
                let _ = self.queue.push_to_sender(reply); // it fitted a read
            }
            blocked
        });
        if !blocked {
            self.flush(Some(from), stats);
        }
        self.queue.keep_sender(from);
    }

    /// The address to answer `d` at, or `None` (logged, rate-limited) when
    /// it must be dropped: too long, refused credentials, no address.
    fn admit<'d, H: Handler<M>, M>(
        &mut self,
        d: &'d sys::Datagram,
        core: &mut Core<H, M>,
        now: Instant,
    ) -> Option<&'d SockAddr> {
        let (config, who) = (&core.config, Who(d.cred));
        if d.truncated {
            if let Some(n) = self.oversized_log.hit(now) {
                warn!(
                    "dropped a datagram of {} bytes, longer than --max-frame {}, from {who} ({n} in the last second)",
                    d.full_len, config.max_frame
                );
            }
            return None;
        }
        if d.fds_lost || self.received.len() > self.max_fds {
            core.stats.fd_errors += 1;
            if let Some(n) = self.fds_log.hit(now) {
                warn!(
                    "dropped a datagram from {who}: it carried more descriptors than --max-fds {} allows, or the server is out of descriptors ({n} in the last second)",
                    self.max_fds
                );
            }
            return None;
        }
        if config.checks_credentials() && !d.cred.is_some_and(|c| config.allows(c.uid, c.gid)) {
            core.stats.rejected_cred += 1;
            if let Some(n) = self.rejected_log.hit(now) {
                warn!("rejected a datagram from {who}: not in --allow-uid/--allow-gid ({n} in the last second)");
            }
            return None;
        }
        if d.from.is_none() {
            if let Some(n) = self.unbound_log.hit(now) {
                debug!("dropped a datagram from an unbound sender ({who}): no address to answer; the client must bind its socket ({n} in the last second)");
            }
        }
        d.from.as_ref()
    }

    /// Sends queued replies in order until one blocks; `sender` is the
    /// sender being answered, if a callback just ran.
    fn flush(&mut self, sender: Option<&SockAddr>, stats: &mut Stats) {
        while let Some((to, data)) = self.queue.front(sender) {
            let fds = self.queue.front_fds();
            if send(&self.sock, to, data, fds, stats).is_break() {
                return;
            }
            self.queue.pop();
        }
    }

    /// The end: replies still queued are dropped (counted), and the state
    /// goes back to the handler.
    pub(super) fn finish<H, M>(self, core: &mut Core<H, M>)
    where
        H: Handler<M, State = S>,
    {
        core.stats.dropped += self.queue.len() as u64;
        let closed = Closed {
            id: DGRAM_ID,
            peer: None,
            reason: CloseReason::Shutdown,
        };
        let Core { handler, world, .. } = &mut *core;
        handler.close(self.state, closed, &mut world.ctl(Instant::now(), None));
    }
}

/// Sends one reply, counting what was sent (a frame out, whether it
/// answers the datagram being handled or was queued by any callback) or
/// dropped; `Break` when the receiver is full (the reply stays queued).
fn send(
    sock: &Socket,
    to: &SockAddr,
    data: &[u8],
    fds: &[OwnedFd],
    stats: &mut Stats,
) -> std::ops::ControlFlow<()> {
    loop {
        let sent = if fds.is_empty() {
            sock.send_to_with_flags(data, to, libc::MSG_NOSIGNAL)
        } else {
            send_fds(sock, to, data, fds)
        };
        match sent {
            Ok(n) => {
                stats.frames_out += 1;
                stats.bytes_out += n as u64;
                stats.fds_out += fds.len() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return std::ops::ControlFlow::Break(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The sender went away (ECONNREFUSED, ENOENT): nobody is
                // left to answer.
                debug!("reply to {}: {e}; dropped", show(to));
                stats.dropped += 1;
            }
        }
        return std::ops::ControlFlow::Continue(());
    }
}

/// One datagram to `to` with descriptors attached (out of line: the
/// path without them is the hot one).
#[cold]
fn send_fds(sock: &Socket, to: &SockAddr, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    sys::send_fds(sock.as_fd(), data, fds, Some(to))
}

/// A Unix address for the log: a path, `@name`, or `(unnamed)`.
fn show(addr: &SockAddr) -> String {
    if let Some(path) = addr.as_pathname() {
        return path.display().to_string();
    }
    match addr.as_abstract_namespace() {
        Some(name) => format!("@{}", String::from_utf8_lossy(name)),
        None => "(unnamed)".into(),
    }
}
