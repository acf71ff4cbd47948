//! The per-connection I/O pump: read what the budget allows, hand it to
//! the connection, write its output eagerly, and bring the registration,
//! the ready list and the deadline in line with the connection's state.

use std::io;
use std::ops::{ControlFlow, Range};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use log::{debug, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::conns::{Connections, Entry, Marks};
use super::{Core, FIRST_CONN};
use crate::conn::Wants;
use crate::ctl::Owner;
use crate::handler::Handler;
use crate::sys;
use crate::timers::{TimerKey, Timers};

/// Reads per connection per turn before others get theirs.
const READS_PER_TURN: usize = 4;

impl<S> Connections<S> {
    /// Reads what this connection's budget allows, writing replies eagerly.
    pub(super) fn work<H, M>(
        &mut self,
        key: usize,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        let Some(entry) = self.slab.get_mut(key) else {
            return;
        };
        for _ in 0..READS_PER_TURN {
            if !entry.marks.has(Marks::READABLE) || !entry.conn.wants_read(&core.limits) {
                break;
            }
            // Two copies of the read: with `--max-fds 0` the one without
            // a trace of descriptors.
            let read = match core.limits.max_fds {
                0 => read_once::<H, M, false>(entry, key, core, now),
                _ => read_once::<H, M, true>(entry, key, core, now),
            };
            let (stop, through) = match read {
                ControlFlow::Continue(through) => (false, through),
                ControlFlow::Break(()) => (true, None),
            };
            // The replies that went through first, straight from the read
            // buffer; then the output, unless the socket is full already.
            let full = through.is_some_and(|piece| write_through(entry, core, piece, now));
            if !full && entry.conn.pending() > 0 {
                flush_entry(entry, core, now);
            }
            if stop {
                break;
            }
        }
        // Pushes first: one this connection queued to itself must land
        // before `settle` can find it done and reap it.
        if !core.world.pushes.is_empty() {
            self.apply_pushes(core, registry, now);
        }
        self.settle(key, core, registry);
    }

    /// Writes the connection's pending output, if it is still open.
    pub(super) fn flush<H, M>(&mut self, key: usize, core: &mut Core<H, M>, now: Instant)
    where
        H: Handler<M, State = S>,
    {
        if let Some(entry) = self.slab.get_mut(key) {
            flush_entry(entry, core, now);
        }
    }

    /// After any change to a connection: bring its registration, ready-list
    /// place and deadline in line with its state, or, once it is done
    /// (a failed registration included), put it on the reap list.
    pub(super) fn settle<H, M>(&mut self, key: usize, core: &mut Core<H, M>, registry: &Registry)
    where
        H: Handler<M, State = S>,
    {
        let Some(entry) = self.slab.get_mut(key) else {
            return;
        };
        // Registrations change only when the interest does (most turns
        // it does not: checked here, the syscall path kept out of line).
        let wants = entry.conn.interest(&core.limits);
        if !entry.conn.is_done() && wants != entry.registered {
            reregister(entry, wants, key, registry, core);
        }
        if entry.conn.is_done() {
            if !entry.marks.has(Marks::REAPING) {
                // Closed to the handler from here on: pushes and
                // disconnects get `Closed`, its timers are gone, and
                // nothing can revive it before it is reaped.
                if let Some(timer) = self.deadlines.get_mut(key) {
                    core.world.timers.cancel(timer);
                }
                let id = core.world.peers.id(key);
                core.world.peers.close(id, &mut core.world.timers);
                entry.marks.set(Marks::REAPING, true);
                self.reap.push(key);
            }
            return;
        }
        // A drained connection that still has input waiting must read on.
        if entry.marks.has(Marks::READABLE) && entry.conn.wants_read(&core.limits) {
            Connections::mark_ready(&mut self.ready, entry, key);
        }
        let deadline = entry.conn.poll_timeout(&core.limits);
        if deadline.is_some() || self.deadlines.get(key).is_some_and(Option::is_some) {
            set_deadline(&mut self.deadlines, key, deadline, &mut core.world.timers);
        }
        // The push table follows the output; a push refused as full is
        // answered with `drained` once it went down to half the limit.
        let low_water = core.config.max_buffer / 2;
        if core
            .world
            .peers
            .settle(key, entry.conn.pending(), low_water)
        {
            self.drained.push(core.world.peers.id(key));
        }
    }
}

/// Sets, moves or cancels the deadline timer of connection `key`. Out of
/// line: without `--idle-timeout` only a closing connection has one.
#[inline(never)]
fn set_deadline(
    deadlines: &mut Vec<Option<TimerKey>>,
    key: usize,
    deadline: Option<Instant>,
    timers: &mut Timers<Owner>,
) {
    match deadline {
        Some(deadline) => {
            if deadlines.len() <= key {
                deadlines.resize(key + 1, None);
            }
            timers.schedule(&mut deadlines[key], Owner::Deadline(key), deadline);
        }
        None => {
            if let Some(timer @ Some(_)) = deadlines.get_mut(key) {
                timers.cancel(timer);
            }
        }
    }
}

/// One read and what follows from it: the replies' write-through piece of
/// the read buffer, if any; `Break` when reading must stop for this turn
/// (drained, oversized, failed).
#[inline]
fn read_once<H: Handler<M>, M, const FDS: bool>(
    entry: &mut Entry<H::State>,
    key: usize,
    core: &mut Core<H, M>,
    now: Instant,
) -> ControlFlow<(), Option<Range<usize>>> {
    let id = core.world.peers.id(key);
    let Core {
        handler,
        config,
        limits,
        spares,
        scratch,
        fds,
        stats,
        world,
        ..
    } = core;
    let ctl = &mut world.ctl(now, None);
    let read = if FDS {
        // Every read a recvmsg with room for descriptors: on a stream they
        // ride on a byte, and a plain read would let the kernel drop them.
        let max = match limits.messages {
            true => config.max_frame.min(scratch.len()),
            false => scratch.len(),
        };
        read_fds(entry, &mut scratch[..max], fds, limits, stats)
    } else if limits.messages {
        let max = config.max_frame.min(scratch.len());
        sys::recv_msg(entry.sock.as_fd(), &mut scratch[..max])
    } else {
        sys::recv_once(entry.sock.as_fd(), scratch).map(|n| (n, n))
    };
    let tally = match read {
        Ok((0, 0)) => {
            entry.marks.set(Marks::READABLE, false);
            entry.conn.handle_eof(id, limits, handler, spares, ctl)
        }
        Ok((n, full)) => {
            stats.bytes_in += full as u64;
            if full > n {
                entry.conn.handle_oversized(full as u64, limits);
                return ControlFlow::Break(());
            }
            // (A stream read that brings descriptors ends at their bytes,
            // short or not; such streams are polled level-triggered, so
            // the next wait reports what is left.)
            // A short read drained a stream; a message socket reads one
            // message a readiness, the level saying whether more wait.
            let short = n < scratch.len() && !entry.marks.has(Marks::READ_CLOSED);
            if limits.messages || short {
                entry.marks.set(Marks::READABLE, false);
            }
            entry
                .conn
                .handle_read(id, &scratch[..n], now, limits, handler, spares, ctl)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            entry.marks.set(Marks::READABLE, false);
            return ControlFlow::Break(());
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return ControlFlow::Continue(None),
        Err(e) => {
            debug!("read {id}: {e}");
            entry.conn.handle_io_error(spares);
            return ControlFlow::Break(());
        }
    };
    stats.frames_in += tally.frames_in;
    stats.frames_out += tally.frames_out;
    ControlFlow::Continue(tally.through)
}

/// Writes the replies' write-through piece of the read buffer (nothing
/// else is pending); what the socket does not take is kept as output.
/// Whether the socket is full (or the connection failed): no flush then.
#[inline]
fn write_through<H: Handler<M>, M>(
    entry: &mut Entry<H::State>,
    core: &mut Core<H, M>,
    piece: Range<usize>,
    now: Instant,
) -> bool {
    let Core {
        limits,
        spares,
        scratch,
        stats,
        ..
    } = core;
    let data = &scratch[piece];
    loop {
        let fds = &spares.through_fds;
        let sent = match fds.is_empty() {
            true => sys::send_once(entry.sock.as_fd(), data),
            false => send_with_fds(&entry.sock, data, fds),
        };
        let written = match sent {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                spares.through_fds.clear(); // the connection is gone
                return write_failed(&e, data.len(), entry, spares);
            }
        };
        let n = written.unwrap_or(0);
        stats.bytes_out += n as u64;
        if written.is_some() && !fds.is_empty() {
            stats.fds_out += fds.len() as u64;
        }
        entry
            .conn
            .handle_through(data, written, now, limits, spares);
        return n < data.len() && !limits.messages || written.is_none();
    }
}

/// `sendmsg` of `data` with `fds`: out of line, so the path without
/// descriptors stays as small as it was.
#[inline(never)]
fn send_with_fds(sock: &socket2::Socket, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    sys::send_fds(sock.as_fd(), data, fds, None)
}

/// One `recvmsg` with room for `--max-fds` descriptors: `(bytes copied,
/// real length)` as for a plain read; the descriptors go to the
/// connection (which closes itself over the limit, or if some were lost).
#[inline(never)]
fn read_fds<S>(
    entry: &mut Entry<S>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    limits: &crate::conn::Limits,
    stats: &mut crate::stats::Stats,
) -> io::Result<(usize, usize)> {
    let got = sys::recv_fds(entry.sock.as_fd(), buf, limits.max_fds, fds)?;
    if !fds.is_empty() || got.fds_lost {
        stats.fds_in += fds.len() as u64;
        entry.conn.handle_fds(fds, got.fds_lost, limits);
    }
    Ok((got.len, got.full_len))
}

/// Writes pending output until it is gone or the socket would block.
fn flush_entry<H: Handler<M>, M>(entry: &mut Entry<H::State>, core: &mut Core<H, M>, now: Instant) {
    if entry.conn.fds_pending() > 0 {
        return flush_fds(entry, core, now);
    }
    let limits = &core.limits;
    // `pending`, not an empty `transmit`: a message socket may owe an
    // empty message, which is sent like any other.
    while entry.conn.pending() > 0 {
        let data = entry.conn.transmit(limits);
        let len = data.len();
        match sys::send_once(entry.sock.as_fd(), data) {
            Ok(n) => {
                core.stats.bytes_out += n as u64;
                entry.conn.handle_written(n, now, limits, &mut core.spares);
                if n < len && !limits.messages {
                    return; // the send buffer is full: wait for WRITABLE
                }
            }
            Err(e) => {
                if write_failed(&e, len, entry, &mut core.spares) {
                    return;
                }
            }
        }
    }
}

/// [`flush_entry`] when descriptors are attached to the output: each
/// write a `sendmsg` carrying the set at its head (if any), and stopping
/// short of the next. Out of line: the path without them stays as it was.
#[inline(never)]
fn flush_fds<H: Handler<M>, M>(entry: &mut Entry<H::State>, core: &mut Core<H, M>, now: Instant) {
    let limits = &core.limits;
    while entry.conn.pending() > 0 {
        let (data, fds) = entry.conn.transmit_fds(limits);
        let (len, sent_fds) = (data.len(), fds.len());
        match sys::send_fds(entry.sock.as_fd(), data, fds, None) {
            Ok(n) => {
                core.stats.bytes_out += n as u64;
                if n > 0 || limits.messages {
                    core.stats.fds_out += sent_fds as u64;
                }
                entry.conn.handle_written(n, now, limits, &mut core.spares);
                if n < len && !limits.messages {
                    return; // the send buffer is full: wait for WRITABLE
                }
            }
            Err(e) => {
                if write_failed(&e, len, entry, &mut core.spares) {
                    return;
                }
            }
        }
    }
}

/// A write of `len` bytes failed with `e`: whether writing stops (it
/// would block, or the connection is finished); `false` to retry.
#[cold]
fn write_failed<S>(
    e: &io::Error,
    len: usize,
    entry: &mut Entry<S>,
    spares: &mut crate::buffer::Spares,
) -> bool {
    match e.kind() {
        io::ErrorKind::WouldBlock => return true,
        io::ErrorKind::Interrupted => return false,
        _ => {}
    }
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        warn!("closing: a reply of {len} bytes is longer than the socket's send buffer allows (raise net.core.wmem_max)");
    } else {
        debug!("write: {e}");
    }
    entry.conn.handle_io_error(spares);
    true
}

/// Registers the interest the connection's state asks for (it changed).
/// A failure ends the connection (its caller reaps it).
#[inline(never)]
fn reregister<H: Handler<M>, M>(
    entry: &mut Entry<H::State>,
    wants: Wants,
    key: usize,
    registry: &Registry,
    core: &mut Core<H, M>,
) {
    let Some(interest) = to_interest(wants) else {
        return; // nothing wanted: done, or about to be
    };
    let fd = entry.sock.as_raw_fd();
    let token = Token(key + FIRST_CONN);
    let done = match core.limits.level_triggered() {
        true => {
            let ways = (wants.read, wants.write);
            sys::epoll_level(registry.as_fd(), entry.sock.as_fd(), token.0, ways, false)
        }
        false => registry.reregister(&mut SourceFd(&fd), token, interest),
    };
    match done {
        Ok(()) => entry.registered = wants,
        Err(e) => {
            warn!("reregister #{key}: {e}; closing it");
            entry.conn.handle_io_error(&mut core.spares);
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
