//! The connection endpoint: a listener and its connections, in a slab
//! whose key is the token, with the lists that carry work from one turn
//! to the next.
//!
//! Admission lives in `accept`, the per-connection I/O in `pump`; this
//! file holds the endpoint's state, its turn, and how connections end.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use log::{debug, info, warn};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::Registry;
use slab::Slab;
use socket2::Socket;

use super::logging::{RateLimited, Who};
use super::{Core, ENDPOINT, FIRST_CONN};
use crate::config::{Config, SocketType};
use crate::conn::{CloseReason, Conn, Wants};
use crate::ctl::{Owner, Push, Slot, World};
use crate::handler::{ConnId, Handler};
use crate::sys;
use crate::timers::{TimerId, TimerKey};

/// Descriptors kept back from `--max-connections`'s default for the
/// listener, poll, waker, signals, logging and the standard streams.
const FD_RESERVE: u64 = 32;

/// Bytes of each per-connection table (the slab, the push table, and with
/// `--idle-timeout` the deadlines and the timer heap) reserved up front.
/// Untouched, a reservation costs address space, not memory. Grown from
/// nothing instead, a table leaves its early, smaller copies behind in the
/// heap, resident for good (130 KiB, 13 B per connection at 10,000).
/// Above malloc's threshold (128 KiB), a reservation is mapped apart from
/// the heap and grows in place, with no copy left behind.
const RESERVE_BYTES: usize = 256 << 10;

/// How many `T`s fit in [`RESERVE_BYTES`], at most `max`.
fn reserve<T>(max: usize) -> usize {
    (RESERVE_BYTES / std::mem::size_of::<T>().max(1)).min(max)
}

/// One connection's slab entry: its socket, its state machine and what the
/// loop knows of its readiness. Every open connection has one, idle or
/// not, so it holds only what cannot live elsewhere: its id is the slab
/// key and the push table's serial ([`Peers::id`]), its deadline timer is
/// in [`Connections::deadlines`], and its flags share a byte ([`Marks`]).
/// 104 bytes for the built-in echo (`Entry<()>`).
///
/// [`Peers::id`]: crate::ctl::Peers::id
pub(super) struct Entry<S> {
    pub(super) sock: Socket,
    pub(super) conn: Conn<S>,
    /// Interest currently registered with the poller.
    pub(super) registered: Wants,
    /// What the loop knows of its readiness, and the lists it is on.
    pub(super) marks: Marks,
}

impl<S> Entry<S> {
    pub(super) fn new(sock: Socket, conn: Conn<S>) -> Entry<S> {
        Entry {
            sock,
            conn,
            registered: Wants {
                read: true,
                write: false,
            },
            marks: Marks(0),
        }
    }
}

/// What the loop knows of an entry's readiness and the lists it is on
/// (ready, reap, touched), as bits of one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Marks(u8);

impl Marks {
    /// Input may be waiting: an edge was seen and not drained yet.
    pub(super) const READABLE: u8 = 1;
    /// The peer shut down its side (RDHUP/HUP seen): a short read no
    /// longer proves the socket drained, since the EOF behind the data
    /// brings no new edge; read on until the zero-length read.
    pub(super) const READ_CLOSED: u8 = 1 << 1;
    /// On the ready list.
    pub(super) const QUEUED: u8 = 1 << 2;
    /// On the reap list.
    pub(super) const REAPING: u8 = 1 << 3;
    /// On the list of connections pushed to in this batch.
    pub(super) const TOUCHED: u8 = 1 << 4;

    /// Whether `mark` is set.
    #[inline]
    pub(super) fn has(self, mark: u8) -> bool {
        self.0 & mark != 0
    }

    /// Sets `mark` if `when` (else leaves it as it was).
    #[inline]
    pub(super) fn add(&mut self, mark: u8, when: bool) {
        self.0 |= u8::from(when) * mark;
    }

    /// Sets or clears `mark`.
    #[inline]
    pub(super) fn set(&mut self, mark: u8, on: bool) {
        self.0 = (self.0 & !mark) | if on { mark } else { 0 };
    }
}

/// The listener and its connections.
pub(super) struct Connections<S> {
    /// `None` once shutdown began (or an upgrade handed it over).
    pub(super) listener: Option<Socket>,
    pub(super) slab: Slab<Entry<S>>,
    /// Each connection's deadline timer (idle or drain), by slab key; only
    /// as long as the highest key that had one, so that without
    /// `--idle-timeout` an idle connection pays nothing for it.
    pub(super) deadlines: Vec<Option<TimerKey>>,
    /// Connections with readiness left over (slab keys).
    pub(super) ready: Vec<usize>,
    /// Finished connections to close after the batch (slab keys).
    pub(super) reap: Vec<usize>,
    /// Connections whose output drained after a refused push, to tell
    /// the handler (ids, not slots: a slot may be reused before then).
    pub(super) drained: Vec<ConnId>,
    /// Connections pushed to in the batch being applied (slab keys).
    pub(super) touched: Vec<usize>,
    /// The listener may have connections waiting.
    pub(super) accept_ready: bool,
    /// Accepting is paused until then (out of descriptors).
    pub(super) accept_paused: Option<Instant>,
    pub(super) max_connections: usize,
    /// One warning a second for failed accepts ...
    pub(super) accept_log: RateLimited,
    /// ... and, counted apart, for connections over the limit.
    pub(super) limit_log: RateLimited,
}

impl<S> Connections<S> {
    /// The endpoint for `listener`, already registered as [`ENDPOINT`];
    /// its tables, and `world`'s, get their room reserved.
    pub(super) fn new(listener: Socket, config: &Config, world: &mut World) -> Connections<S> {
        if config.socket_type == SocketType::Seqpacket {
            // Probed on the listener: accepted sockets are raised alike.
            super::dgram::fit_messages(&listener, config.max_frame);
        }
        let nofile = sys::nofile_limit().unwrap_or(1024);
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| nofile.saturating_sub(FD_RESERVE).max(1) as usize);
        world.peers.reserve(reserve::<Slot>(max_connections));
        let mut deadlines = Vec::new();
        if config.idle_timeout.is_some() {
            deadlines.reserve_exact(reserve::<Option<TimerKey>>(max_connections));
            world.timers.reserve(max_connections, RESERVE_BYTES);
        }
        Connections {
            listener: Some(listener),
            slab: Slab::with_capacity(reserve::<Entry<S>>(max_connections)),
            deadlines,
            ready: Vec::new(),
            reap: Vec::new(),
            drained: Vec::new(),
            touched: Vec::new(),
            accept_ready: false,
            accept_paused: None,
            max_connections,
            accept_log: RateLimited::default(),
            limit_log: RateLimited::default(),
        }
    }

    /// Connections open.
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no connection is open.
    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// When the loop must wake: now while work is left over, else at the
    /// end of an accept pause (timers are the loop's to watch).
    pub(super) fn wakeup(&self, now: Instant) -> Option<Instant> {
        let busy = !self.ready.is_empty()
            || !self.drained.is_empty()
            || (self.accept_ready && self.accept_paused.is_none());
        if busy {
            return Some(now);
        }
        self.accept_paused
    }

    /// Marks `key` to be worked again next turn (it has input left).
    pub(super) fn mark_ready(ready: &mut Vec<usize>, entry: &mut Entry<S>, key: usize) {
        if !entry.marks.has(Marks::QUEUED) {
            entry.marks.set(Marks::QUEUED, true);
            ready.push(key);
        }
    }
}

impl<S> Connections<S> {
    /// A readiness event: the listener's, or a connection's.
    pub(super) fn on_event<H, M>(
        &mut self,
        event: &Event,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        if event.token() == ENDPOINT {
            self.accept_ready = true;
            return;
        }
        let key = event.token().0 - FIRST_CONN;
        let Some(entry) = self.slab.get_mut(key) else {
            return; // stale: the connection closed in this batch
        };
        let read_closed = event.is_read_closed() || event.is_error();
        entry
            .marks
            .add(Marks::READABLE, event.is_readable() || read_closed);
        entry.marks.add(Marks::READ_CLOSED, read_closed);
        if event.is_writable() {
            self.flush(key, core, now);
        }
        self.work(key, core, registry, now);
    }

    /// The work after the events: accepts, leftovers, deadlines, reaping.
    pub(super) fn turn<H, M>(&mut self, core: &mut Core<H, M>, registry: &Registry, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        if self.accept_paused.is_some_and(|until| now >= until) {
            self.accept_paused = None;
            self.accept_ready = true;
        }
        if self.accept_ready && self.accept_paused.is_none() {
            self.accept_batch(core, registry, now);
        }
        // By index, not `mem::take`: the list keeps its allocation. Keys
        // queued again meanwhile land past `queued` and wait for next turn.
        let queued = self.ready.len();
        for i in 0..queued {
            let key = self.ready[i];
            if let Some(entry) = self.slab.get_mut(key) {
                entry.marks.set(Marks::QUEUED, false);
                self.work(key, core, registry, now);
            }
        }
        self.ready.drain(..queued);
        while let Some((timer, owner)) = core.world.timers.pop_due(now) {
            self.fire(timer, owner, core, registry, now);
        }
        // By index, as it grows: a drained callback's pushes may queue
        // more. By id: a slot reused since belongs to someone else.
        let mut i = 0;
        while i < self.drained.len() {
            let id = self.drained[i];
            i += 1;
            if !self.slab.contains(id.key) || core.world.peers.id(id.key) != id {
                continue;
            }
            self.callback(
                id.key,
                core,
                registry,
                now,
                |conn, id, handler, limits, spares, ctl| {
                    conn.handle_drained(id, limits, handler, spares, ctl)
                },
            );
        }
        self.drained.clear();
        self.reap_finished(core, registry, now);
    }

    /// One timer came due: a connection's deadline, a handler timer of a
    /// connection, or a server-wide one.
    fn fire<H, M>(
        &mut self,
        timer: TimerId,
        owner: Owner,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        match owner {
            Owner::Deadline(key) => {
                let Some(entry) = self.slab.get_mut(key) else {
                    return; // cannot happen: a closing connection cancels it
                };
                if let Some(timer) = self.deadlines.get_mut(key) {
                    *timer = None; // fired: no longer in the heap
                }
                entry
                    .conn
                    .handle_timeout(now, &core.limits, &mut core.spares);
                self.settle(key, core, registry);
            }
            Owner::Conn { key, serial, token } => {
                let id = Owner::conn_id(key, serial);
                // Only while open: a closed connection's timers are gone.
                if core.world.peers.timer_fired(id, timer) {
                    self.callback(
                        id.key,
                        core,
                        registry,
                        now,
                        |conn, id, handler, limits, spares, ctl| {
                            conn.handle_timer(id, token, limits, handler, spares, ctl)
                        },
                    );
                }
            }
            Owner::Server { token } => {
                let Core { handler, world, .. } = &mut *core;
                handler.server_timer(token, &mut world.ctl(now, None));
                self.apply_pushes(core, registry, now);
            }
        }
    }

    /// Runs one handler callback on connection `key` (if it is still
    /// open), then what it queued.
    pub(super) fn callback<H, M>(
        &mut self,
        key: usize,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
        f: impl FnOnce(
            &mut Conn<S>,
            ConnId,
            &mut H,
            &crate::conn::Limits,
            &mut crate::buffer::Spares,
            &mut crate::ctl::Ctl<'_>,
        ) -> crate::conn::Tally,
    ) where
        H: Handler<M, State = S>,
    {
        let Some(entry) = self.slab.get_mut(key) else {
            return;
        };
        let Core {
            handler,
            limits,
            spares,
            stats,
            world,
            ..
        } = &mut *core;
        let id = world.peers.id(key);
        let tally = f(
            &mut entry.conn,
            id,
            handler,
            limits,
            spares,
            &mut world.ctl(now, None),
        );
        stats.frames_out += tally.frames_out;
        // Pushes before `settle`, as in `work`.
        self.apply_pushes(core, registry, now);
        self.flush(key, core, now);
        self.settle(key, core, registry);
    }

    /// Applies what handlers queued for other connections, in order, and
    /// writes it eagerly.
    pub(super) fn apply_pushes<H, M>(
        &mut self,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        while !core.world.pushes.is_empty() {
            let (ops, bytes, mut fds) = core.world.pushes.take();
            let (mut at, mut next_fds) = (0, 0);
            for op in &ops {
                let (to, payload) = match *op {
                    Push::Send { to, len, .. } => {
                        at += len;
                        (to, &bytes[at - len..at])
                    }
                    Push::Close { to } => (to, &[][..]),
                };
                let serial = core.world.peers.id(to.key).serial;
                let Some(entry) = self.slab.get_mut(to.key).filter(|_| serial == to.serial) else {
                    continue; // closed since: pushes never reach a newer connection
                };
                // The push table refuses a connection once it is on the
                // reap list, and pushes are applied before their sender
                // settles: nothing accepted is dropped at reaping.
                debug_assert!(
                    !entry.marks.has(Marks::REAPING),
                    "a push accepted for reaped {to}"
                );
                let Core {
                    limits,
                    spares,
                    stats,
                    world,
                    ..
                } = &mut *core;
                match *op {
                    Push::Send {
                        framed, fds: with, ..
                    } => {
                        let fds = match with {
                            true => std::mem::take(&mut fds[next_fds]),
                            false => Vec::new(),
                        };
                        next_fds += usize::from(with);
                        let ctl = &mut world.ctl(now, None);
                        entry.conn.push(payload, framed, fds, limits, spares, ctl);
                        stats.frames_out += 1;
                    }
                    Push::Close { .. } => entry.conn.handle_disconnect(),
                }
                // Written once per target per batch, not once per push: a
                // fan-out of k messages to one reader is one write.
                if !entry.marks.has(Marks::TOUCHED) {
                    entry.marks.set(Marks::TOUCHED, true);
                    self.touched.push(to.key);
                }
            }
            core.world.pushes.done(ops, bytes, fds);
            for i in 0..self.touched.len() {
                let key = self.touched[i];
                if let Some(entry) = self.slab.get_mut(key) {
                    entry.marks.set(Marks::TOUCHED, false);
                }
                self.flush(key, core, now);
                self.settle(key, core, registry);
            }
            self.touched.clear();
        }
    }

    /// Shutdown: stop accepting and reading, and give every connection
    /// until its drain deadline to flush.
    pub(super) fn shutdown<H, M>(
        &mut self,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        self.stop_listening(registry);
        for key in 0..self.slab.capacity() {
            if let Some(entry) = self.slab.get_mut(key) {
                entry.conn.shutdown(now);
                self.settle(key, core, registry);
            }
        }
    }

    /// Closes the listener: no more connections are accepted.
    pub(super) fn stop_listening(&mut self, registry: &Registry) {
        if let Some(listener) = self.listener.take() {
            let _ = registry.deregister(&mut SourceFd(&listener.as_raw_fd()));
        }
        self.accept_ready = false;
    }

    /// Closes every connection still open (the end of a shutdown).
    pub(super) fn close_all<H, M>(&mut self, core: &mut Core<H, M>, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        for key in 0..self.slab.capacity() {
            if let Some(entry) = self.slab.try_remove(key) {
                self.close_entry(key, entry, core, now);
            }
        }
    }

    /// Closes the connections that finished during this turn.
    fn reap_finished<H, M>(&mut self, core: &mut Core<H, M>, registry: &Registry, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        if self.reap.is_empty() {
            return;
        }
        // Handlers' close may push to, or disconnect, others: reap those
        // too (each round removes connections, so it ends).
        while !self.reap.is_empty() {
            let mut reap = std::mem::take(&mut self.reap);
            for key in reap.drain(..) {
                if let Some(entry) = self.slab.try_remove(key) {
                    self.close_entry(key, entry, core, now);
                }
            }
            self.apply_pushes(core, registry, now);
            // Keep the allocation: no malloc per turn that closes something.
            if self.reap.is_empty() {
                self.reap = reap;
            }
        }
        // Descriptors came free: waiting connections can be accepted now,
        // not only when the next one arrives.
        if self.accept_paused.take().is_some() {
            self.accept_ready = true;
        }
    }

    /// Logs why `entry` ends, hands its state to the handler and closes it.
    fn close_entry<H, M>(
        &mut self,
        key: usize,
        entry: Entry<S>,
        core: &mut Core<H, M>,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        if let Some(timer) = self.deadlines.get_mut(key) {
            core.world.timers.cancel(timer);
        }
        let id = core.world.peers.id(key);
        core.world.peers.close(id, &mut core.world.timers);
        // Asked of the kernel only if a line names the peer: SO_PEERCRED
        // still tells who connected, and Echo never asked at accept.
        let who = || {
            Who(entry
                .conn
                .peer()
                .or_else(|| sys::peer_cred(entry.sock.as_fd()).ok()))
        };
        let stats = &mut core.stats;
        match entry.conn.close_reason() {
            Some(CloseReason::Frame(e)) => warn!("closing {id} ({}): {e}", who()),
            Some(CloseReason::PartialAtEof(n)) => {
                stats.dropped += 1;
                info!(
                    "{id} ({}) ended inside a frame: dropped {n} bytes of a partial frame",
                    who()
                );
            }
            Some(CloseReason::Idle) => {
                stats.closed_idle += 1;
                debug!("closing {id} ({}): idle", who());
            }
            Some(CloseReason::DrainTimeout) => warn!(
                "closing {id} ({}): output not flushed within the drain timeout",
                who()
            ),
            Some(CloseReason::Handler) => debug!("closing {id} ({}): handler asked", who()),
            Some(CloseReason::Descriptors) => {
                stats.fd_errors += 1;
                warn!(
                    "closing {id} ({}): more descriptors than --max-fds {} in one message (or frame), or the server is out of descriptors",
                    who(),
                    core.config.max_fds
                );
            }
            _ => debug!("closed {id}"),
        }
        stats.closed += 1;
        stats.open -= 1;
        let Core {
            handler,
            spares,
            world,
            ..
        } = &mut *core;
        entry
            .conn
            .finish(id, handler, spares, &mut world.ctl(now, None));
        // Closing the descriptor removes it from the epoll set.
        drop(entry.sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every open connection costs, idle or not: its slab entry and
    /// its push-table slot (the README's idle figure rests on these).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_idle_connection_holds_120_bytes() {
        assert_eq!(std::mem::size_of::<Conn<()>>(), 96);
        assert_eq!(std::mem::size_of::<Entry<()>>(), 104);
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        // With --idle-timeout, each has a timer too.
        assert_eq!(std::mem::size_of::<Owner>(), 24);
    }
}
