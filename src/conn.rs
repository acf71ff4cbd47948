//! The sans-IO connection: a state machine that is handed the bytes read,
//! end of input and the time, and hands back the bytes to write, the
//! interest it wants and why it closed. It never sees a socket, mio, the
//! clock or the logger, so tests and fuzzers drive it byte by byte.
//!
//! # Driving it
//!
//! The driver (the server's loop, a test, a fuzz target) calls, in any
//! order the socket dictates:
//!
//! * inputs: [`handle_read`](Conn::handle_read) with each chunk read while
//!   [`wants_read`](Conn::wants_read); [`handle_eof`](Conn::handle_eof) on
//!   a zero-length read; [`handle_written`](Conn::handle_written) after a
//!   write; [`handle_timeout`](Conn::handle_timeout) when
//!   [`poll_timeout`](Conn::poll_timeout) passes; [`shutdown`](Conn::shutdown)
//!   when the server stops; [`handle_io_error`](Conn::handle_io_error).
//! * outputs: [`transmit`](Conn::transmit) (the next bytes, or the next
//!   message, to write), [`interest`](Conn::interest) (what to register),
//!   [`is_done`](Conn::is_done) (reap it) and
//!   [`close_reason`](Conn::close_reason).
//!
//! Writing eagerly is the driver's job: after each input, write
//! `transmit()` while [`pending`](Conn::pending) is not zero or until the
//! socket would block (`pending`, not an empty `transmit`: a message
//! socket may owe an empty message).

use std::ops::Range;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::buffer::{Spares, READ_SIZE};
use crate::codec::{DecodeState, Eof, FrameError};
use crate::config::{Config, Framing, SocketType};
use crate::ctl::Ctl;
use crate::fds::Attached;
use crate::handler::{Closed, ConnId, Context, Handler, PeerCred};
use crate::outbox;

mod delivery;

use delivery::{context, Delivery, Output};

/// Settings shared by every connection of a server (kept out of [`Conn`]
/// so an idle connection stays small).
#[derive(Clone, Debug)]
pub struct Limits {
    /// How the input stream is cut into frames.
    pub framing: Framing,
    /// Whether the socket keeps message boundaries (seqpacket).
    pub messages: bool,
    /// Largest frame payload accepted.
    pub max_frame: usize,
    /// Past this many bytes of unsent output, stop reading.
    pub max_buffer: usize,
    /// Close after this long without traffic either way.
    pub idle_timeout: Option<Duration>,
    /// How long a closing connection may take to flush its output.
    pub drain_timeout: Duration,
    /// Descriptors one message (on a stream: one frame) may carry.
    pub max_fds: usize,
}

impl Limits {
    /// The limits a server with `config` applies.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            framing: config.framing,
            messages: config.socket_type == SocketType::Seqpacket,
            max_frame: config.max_frame,
            max_buffer: config.max_buffer,
            idle_timeout: config.idle_timeout,
            drain_timeout: config.drain_timeout,
            max_fds: config.max_fds,
        }
    }

    /// Whether connections are polled level-triggered (see
    /// [`Conn::interest`]): message sockets, where no read can tell that
    /// the queue is empty (each returns one message), so an edge-triggered
    /// loop pays a read that finds nothing after every message; and
    /// streams that take descriptors, where a read ends at the bytes that
    /// carry them, so a short read does not prove the socket drained.
    /// Either way the driver reads once per readiness and the next wait
    /// tells whether more is there, as a level-triggered C loop does.
    pub fn level_triggered(&self) -> bool {
        self.messages || self.max_fds > 0
    }

    /// The output buffer's growth limit: `max_buffer` plus the replies to
    /// one read. Reading stops at `max_buffer`, so plain backpressure never
    /// grows past it; only a frame completed from a long partial does
    /// (briefly: the buffer shrinks back once the peer drains it), or a
    /// handler that answers one read with more than it read (it can watch
    /// [`Context::pending`](crate::Context::pending)): the limit only
    /// shapes the allocation steps, it never refuses a reply.
    pub fn out_limit(&self) -> usize {
        self.max_buffer.saturating_add(READ_ROOM)
    }
}

/// Room in the output for the replies to one read past `max_buffer`: the
/// server's read size.
pub const READ_ROOM: usize = READ_SIZE;

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer finished (end of input) and everything owed was written.
    Eof,
    /// The server stopped (and wrote what it owed, within the drain
    /// timeout).
    Shutdown,
    /// A frame broke `--max-frame`.
    Frame(FrameError),
    /// A partial `length` frame of this many bytes was pending at EOF and
    /// was dropped (the connection itself finished normally).
    PartialAtEof(usize),
    /// No traffic for `--idle-timeout`.
    Idle,
    /// The output could not be flushed within `--drain-timeout`.
    DrainTimeout,
    /// The handler asked to close.
    Handler,
    /// The peer sent more descriptors than `--max-fds` allows (in one
    /// message, or in one frame on a stream), or the kernel lost some
    /// (the server was out of descriptors).
    Descriptors,
    /// Reading or writing failed (the peer went away).
    Io,
}

/// What the driver is told after each input: counts, and the replies to
/// write straight from its read buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Frames decoded and handed to the handler.
    pub frames_in: u64,
    /// Replies the handler sent.
    pub frames_out: u64,
    /// After [`handle_read`](Conn::handle_read): the piece of the read
    /// (a range of its `data`) that the replies are, verbatim, and that is
    /// not in the output (write-through: see [`Conn::handle_through`]).
    /// It comes first: nothing else is pending when it is set.
    pub through: Option<Range<usize>>,
}

/// Where a connection is in its life. The phases form a line, and a
/// connection only ever moves forward along it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Reading and writing.
    Open,
    /// The peer finished sending: write what is owed, then done.
    Eof,
    /// Closing (a frame error, the handler, shutdown): read nothing more,
    /// write what is owed within the drain timeout, then done.
    Closing,
    /// Done at once; pending output discarded.
    Dead,
}

/// One connection's state. See the [module docs](self) for the driving
/// order.
///
/// Invariants: once `is_done()` it stays done and wants nothing; it wants
/// READABLE only while reading is allowed, WRITABLE only while output is
/// pending; output exceeds `max_buffer` by at most one input chunk's
/// replies, and the decoder holds at most one partial frame.
#[derive(Debug)]
pub struct Conn<S> {
    /// The partial frame; the framing and its limit are the [`Limits`]'.
    decoder: DecodeState,
    /// Unsent output, and the descriptors attached to it.
    out: Output,
    /// What most connections never need, made on first use.
    extra: Option<Box<Extra>>,
    state: S,
    /// Last traffic either way (or when closing began).
    last_active: Instant,
    phase: Phase,
}

/// The parts of a [`Conn`] that most connections never use, boxed so that
/// an idle connection carries one word for them instead of six.
#[derive(Debug, Default)]
struct Extra {
    /// Descriptors received and not yet handed to a frame's callback
    /// (they go with the next frame delivered); made on first use.
    fds_in: Option<Vec<OwnedFd>>,
    /// The peer's credentials, when the server asked for them.
    peer: Option<PeerCred>,
    /// Why it closed, if not by a normal end of input.
    reason: Option<CloseReason>,
}

/// What a [`Conn`] asks the driver to register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wants {
    /// Register for readability.
    pub read: bool,
    /// Register for writability.
    pub write: bool,
}

impl<S> Conn<S> {
    /// Accepts a connection at `now`: the handler's
    /// [`open`](Handler::open) makes its state (and may greet it, set
    /// timers, or close it at once). `sock`, the connection's socket, is
    /// lent to `open` for the peer's identity (a driver without sockets
    /// passes `None`).
    // The inputs, then what the callback borrows: grouping them would
    // only hide that.
    #[allow(clippy::too_many_arguments)]
    pub fn open<H, M>(
        id: ConnId,
        peer: Option<PeerCred>,
        sock: Option<BorrowedFd<'_>>,
        now: Instant,
        limits: &Limits,
        handler: &mut H,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) -> (Conn<S>, Tally)
    where
        H: Handler<M, State = S>,
    {
        let mut out = Output::default();
        let cx = context(
            id,
            peer,
            limits,
            &mut out,
            None,
            &mut spares.output,
            ctl,
            None,
        );
        let mut cx = cx.with_socket(sock);
        let state = handler.open(&mut cx);
        let (close, sent) = cx.outcome();
        let mut conn = Conn {
            decoder: DecodeState::new(),
            out,
            extra: peer.map(|peer| {
                Box::new(Extra {
                    peer: Some(peer),
                    ..Extra::default()
                })
            }),
            state,
            last_active: now,
            phase: Phase::Open,
        };
        if close {
            conn.begin_close(CloseReason::Handler);
        }
        let tally = Tally {
            frames_out: sent,
            ..Tally::default()
        };
        (conn, tally)
    }

    /// The peer's credentials.
    pub fn peer(&self) -> Option<PeerCred> {
        self.extra.as_ref().and_then(|extra| extra.peer)
    }

    /// One of the connection's timers fired ([`Handler::timer`]). Ignored
    /// once the connection is done.
    pub fn handle_timer<H, M>(
        &mut self,
        id: ConnId,
        token: u64,
        limits: &Limits,
        handler: &mut H,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) -> Tally
    where
        H: Handler<M, State = S>,
    {
        self.callback(id, limits, spares, ctl, |state, cx| {
            handler.timer(state, token, cx)
        })
    }

    /// Output a push found full has drained ([`Handler::drained`]).
    pub fn handle_drained<H, M>(
        &mut self,
        id: ConnId,
        limits: &Limits,
        handler: &mut H,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) -> Tally
    where
        H: Handler<M, State = S>,
    {
        self.callback(id, limits, spares, ctl, |state, cx| {
            handler.drained(state, cx)
        })
    }

    /// Queues a push: `payload` framed (or verbatim) as this connection's
    /// replies are. Ignored once it is dead (killed: its output is gone).
    /// The driver must not push to a connection it has found done: the
    /// push table refuses those, so that nothing accepted is dropped.
    pub fn push(
        &mut self,
        payload: &[u8],
        framed: bool,
        fds: Vec<OwnedFd>,
        limits: &Limits,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) {
        if self.phase == Phase::Dead {
            return;
        }
        // Not a handler callback: an id nobody can match.
        let id = ConnId {
            key: usize::MAX,
            serial: 0,
        };
        let mut cx = context(
            id,
            self.peer(),
            limits,
            &mut self.out,
            None,
            &mut spares.output,
            ctl,
            None,
        );
        // The size was checked (and counted) when the push was queued.
        let _ = cx.send_fds_as(payload, framed, fds);
    }

    /// Closes the connection on the handler's word (a
    /// [`disconnect`](Ctl::disconnect)): flush, then finish.
    pub fn handle_disconnect(&mut self) {
        self.begin_close(CloseReason::Handler);
    }

    /// A callback outside input: the handler gets a Context of its own.
    fn callback(
        &mut self,
        id: ConnId,
        limits: &Limits,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
        f: impl FnOnce(&mut S, &mut Context<'_>),
    ) -> Tally {
        if self.is_done() {
            return Tally::default();
        }
        let mut cx = context(
            id,
            self.peer(),
            limits,
            &mut self.out,
            None,
            &mut spares.output,
            ctl,
            None,
        );
        f(&mut self.state, &mut cx);
        let (close, sent) = cx.outcome();
        if close {
            self.begin_close(CloseReason::Handler);
        }
        Tally {
            frames_out: sent,
            ..Tally::default()
        }
    }

    /// Feeds bytes read from the socket (one message, for seqpacket).
    // The inputs, then what the callbacks borrow (handler, spare
    // allocations, the server's Ctl): grouping them would only hide that.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn handle_read<H, M>(
        &mut self,
        id: ConnId,
        data: &[u8],
        now: Instant,
        limits: &Limits,
        handler: &mut H,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) -> Tally
    where
        H: Handler<M, State = S>,
    {
        if self.read_done() {
            return Tally::default();
        }
        self.last_active = now;
        let Spares {
            input,
            output,
            through_fds,
        } = spares;
        let (peer, received) = split(&mut self.extra);
        let mut delivery = Delivery::new(
            id,
            peer,
            limits,
            &mut self.out,
            received,
            output,
            ctl,
            Some((data, through_fds)),
        );
        let result = self
            .decoder
            .decode(limits.framing, limits.max_frame, data, input, |frame| {
                delivery.deliver(handler, &mut self.state, frame)
            });
        let (mut tally, close) = (delivery.tally, delivery.close);
        tally.through = delivery.through;
        if let Err(e) = result {
            // The partial frame will never complete: do not hold it (up to
            // max_frame) while the output drains to a slow peer.
            self.decoder.clear(input);
            if let Some(extra) = self.extra.as_deref_mut() {
                extra.fds_in = None;
            }
            self.begin_close(CloseReason::Frame(e));
        } else if close {
            self.begin_close(CloseReason::Handler);
        }
        tally
    }

    /// Descriptors came with the read about to be fed to
    /// [`handle_read`](Self::handle_read) (call this first): they go with
    /// the next frame delivered. `lost` says the kernel dropped some
    /// (`MSG_CTRUNC`). More than `max_fds` for one frame, or any lost,
    /// closes the connection as a protocol violation
    /// ([`CloseReason::Descriptors`]): it reads nothing more, flushes what
    /// it owes, and every descriptor it received and holds is closed.
    /// Takes them all out of `fds`.
    pub fn handle_fds(&mut self, fds: &mut Vec<OwnedFd>, lost: bool, limits: &Limits) {
        if self.read_done() {
            fds.clear();
            return;
        }
        let held = self.extra().fds_in.get_or_insert_with(Vec::new);
        crate::fds::move_all(held, fds);
        if lost || held.len() > limits.max_fds {
            held.clear();
            self.begin_close(CloseReason::Descriptors);
        }
    }

    /// The peer shut down its write side (a zero-length read): decode what
    /// is pending, then finish once the output is flushed.
    pub fn handle_eof<H, M>(
        &mut self,
        id: ConnId,
        limits: &Limits,
        handler: &mut H,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) -> Tally
    where
        H: Handler<M, State = S>,
    {
        if self.read_done() {
            return Tally::default();
        }
        self.phase = Phase::Eof;
        let Spares { input, output, .. } = spares;
        let (peer, received) = split(&mut self.extra);
        let mut delivery =
            Delivery::new(id, peer, limits, &mut self.out, received, output, ctl, None);
        let eof = self.decoder.decode_eof(limits.framing, input, |frame| {
            delivery.deliver(handler, &mut self.state, frame)
        });
        let (tally, close) = (delivery.tally, delivery.close);
        if let Eof::Dropped(n) = eof {
            self.extra().reason = Some(CloseReason::PartialAtEof(n));
        }
        if close {
            self.begin_close(CloseReason::Handler);
        }
        tally
    }

    /// The next bytes to write: all pending bytes on a stream, the next
    /// whole message on a message socket; empty when nothing is pending.
    pub fn transmit(&self, limits: &Limits) -> &[u8] {
        let pending = self.out.bytes.as_slice();
        if limits.messages {
            outbox::first_record(pending)
        } else {
            pending
        }
    }

    /// As [`transmit`](Self::transmit), with the descriptors that go with
    /// it: the bytes stop short of the next ones attached further on (a
    /// write carries at most one set, on its first byte).
    #[inline]
    pub fn transmit_fds(&self, limits: &Limits) -> (&[u8], &[OwnedFd]) {
        let data = self.transmit(limits);
        match self.out.fds.as_deref() {
            None => (data, &[]),
            Some(at) => {
                let data = match at.run() {
                    Some(run) if !limits.messages => &data[..run.min(data.len())],
                    _ => data,
                };
                (data, at.at_head())
            }
        }
    }

    /// Descriptors attached to unsent output.
    pub fn fds_pending(&self) -> usize {
        self.out.fds.as_deref().map_or(0, Attached::held)
    }

    /// `n` bytes of [`transmit`](Self::transmit) were written at `now`; on
    /// a message socket any `n` consumes the whole message (a message is
    /// sent whole or not at all).
    pub fn handle_written(&mut self, n: usize, now: Instant, limits: &Limits, spares: &mut Spares) {
        if self.phase < Phase::Closing {
            // While closing, the drain deadline stays fixed: a peer that
            // reads a byte at a time must not keep it open for ever.
            self.last_active = now;
        }
        let n = if limits.messages {
            outbox::first_record_len(self.out.bytes.as_slice())
        } else {
            n
        };
        if let Some(at) = self.out.fds.as_deref_mut() {
            if n > 0 {
                // The set at the head went with the write: this side's
                // copies close.
                at.advance(n);
            }
        }
        self.out.bytes.consume(n, &mut spares.output);
        self.out.bytes.shrink(limits.out_limit());
    }

    /// The write-through piece [`handle_read`](Self::handle_read) named
    /// ([`Tally::through`]), `data`, was written straight from the
    /// driver's read buffer, with the descriptors in
    /// [`Spares::through_fds`] (if any) on its first byte: `written`
    /// bytes of it (on a message socket, the whole message), or `None`
    /// when the socket took nothing. What was not written is kept as
    /// output, so the driver may reuse its buffer, with the descriptors
    /// if they did not go; those that went are closed. A driver that does
    /// not write through passes `None`. Call it right after
    /// `handle_read`, before anything else.
    pub fn handle_through(
        &mut self,
        data: &[u8],
        written: Option<usize>,
        now: Instant,
        limits: &Limits,
        spares: &mut Spares,
    ) {
        debug_assert!(self.out.bytes.is_empty(), "the piece comes first");
        if written.is_some() && self.phase < Phase::Closing {
            self.last_active = now; // as in handle_written
        }
        let limit = limits.out_limit();
        if !spares.through_fds.is_empty() {
            through_fds_done(&mut self.out.fds, written.is_some(), spares);
        }
        match (written, limits.messages) {
            (Some(_), true) => {}
            (None, true) => {
                let out = &mut self.out.bytes;
                if outbox::push_record(out, data, limit, &mut spares.output).is_err() {
                    // Cannot happen: a message read fits max_frame, a u32.
                    self.kill(CloseReason::Io, spares);
                }
            }
            (Some(n), false) if n >= data.len() => {}
            (written, false) => {
                let rest = &data[written.unwrap_or(0)..];
                self.out.bytes.push(rest, limit, &mut spares.output);
            }
        }
    }

    /// A message longer than `max_frame` arrived (and was truncated by the
    /// kernel): stop reading, flush what is owed, close.
    pub fn handle_oversized(&mut self, len: u64, limits: &Limits) {
        let max = limits.max_frame;
        self.begin_close(CloseReason::Frame(FrameError::TooLarge {
            len: len.max(max as u64 + 1),
            max,
        }));
    }

    /// Reading or writing failed for good: the connection is done and its
    /// output is discarded.
    pub fn handle_io_error(&mut self, spares: &mut Spares) {
        self.kill(CloseReason::Io, spares);
    }

    /// The server is stopping: read nothing more, flush what is owed (for
    /// at most the drain timeout), then finish.
    pub fn shutdown(&mut self, now: Instant) {
        if self.phase < Phase::Closing {
            self.last_active = now;
            self.phase = Phase::Closing;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Instant> {
        if self.is_done() {
            None
        } else if self.phase == Phase::Closing {
            Some(self.last_active + limits.drain_timeout)
        } else {
            limits.idle_timeout.map(|idle| self.last_active + idle)
        }
    }

    /// Applies the idle and drain deadlines at `now`.
    pub fn handle_timeout(&mut self, now: Instant, limits: &Limits, spares: &mut Spares) {
        match self.poll_timeout(limits) {
            Some(deadline) if now >= deadline => {
                let reason = if self.phase == Phase::Closing {
                    CloseReason::DrainTimeout
                } else {
                    CloseReason::Idle
                };
                self.kill(reason, spares);
            }
            _ => {}
        }
    }

    /// Whether the driver should read now: input is still expected, the
    /// unsent output is under `max_buffer`, and (with `max_fds` > 0) it
    /// holds fewer than `max_fds` descriptors waiting to go back, so a
    /// peer that does not read makes the server hold at most
    /// `2 * max_fds - 1` of its descriptors.
    pub fn wants_read(&self, limits: &Limits) -> bool {
        !self.read_done()
            && self.out.bytes.len() < limits.max_buffer
            && (limits.max_fds == 0 || self.fds_pending() < limits.max_fds)
    }

    /// The readiness to register, a pure function of the state: WRITABLE
    /// while output is pending; READABLE until input ends, kept while
    /// backpressured (with edge-triggered polling an unwanted edge costs
    /// less than two re-registrations) — except on a level-triggered
    /// connection ([`Limits::level_triggered`]: a stream carrying
    /// descriptors), where READABLE follows [`wants_read`], since a level
    /// would report an unwanted one on every wait.
    ///
    /// [`wants_read`]: Self::wants_read
    #[inline]
    pub fn interest(&self, limits: &Limits) -> Wants {
        let read = match limits.level_triggered() {
            true => self.wants_read(limits),
            false => !self.read_done(),
        };
        Wants {
            read,
            write: !self.is_done() && !self.out.bytes.is_empty(),
        }
    }

    /// Whether the connection is finished and can be reaped: killed, or no
    /// more input and no output left.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Dead || (self.read_done() && self.out.bytes.is_empty())
    }

    /// Why it closed, if not by a normal end of input.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.extra.as_ref().and_then(|extra| extra.reason)
    }

    /// Bytes of unsent output.
    pub fn pending(&self) -> usize {
        self.out.bytes.len()
    }

    /// Bytes of heap memory held (output plus partial input).
    pub fn memory(&self) -> usize {
        self.out.bytes.capacity() + self.decoder.capacity()
    }

    /// Why the connection ended (or is ending): the reason it was given,
    /// else [`CloseReason::Shutdown`] if the server's stop closed it,
    /// else [`CloseReason::Eof`].
    pub fn end_reason(&self) -> CloseReason {
        match self.close_reason() {
            Some(reason) => reason,
            None if self.phase >= Phase::Closing => CloseReason::Shutdown,
            None => CloseReason::Eof,
        }
    }

    /// Ends the connection, handing the state to the handler.
    pub fn finish<H, M>(
        mut self,
        id: ConnId,
        handler: &mut H,
        spares: &mut Spares,
        ctl: &mut Ctl<'_>,
    ) where
        H: Handler<M, State = S>,
    {
        self.out.bytes.release(&mut spares.output);
        self.out.fds = None;
        self.decoder.clear(&mut spares.input);
        let closed = Closed {
            id,
            peer: self.peer(),
            reason: self.end_reason(),
        };
        handler.close(self.state, closed, ctl);
    }

    /// No more input will be read (EOF, closing, dead).
    fn read_done(&self) -> bool {
        self.phase >= Phase::Eof
    }

    /// Stop reading; close once flushed.
    fn begin_close(&mut self, reason: CloseReason) {
        self.phase = self.phase.max(Phase::Closing);
        self.extra().reason.get_or_insert(reason);
    }

    /// Done now; pending output is dropped.
    fn kill(&mut self, reason: CloseReason, spares: &mut Spares) {
        self.phase = Phase::Dead;
        let extra = self.extra();
        extra.reason.get_or_insert(reason);
        extra.fds_in = None;
        self.out.bytes.release(&mut spares.output);
        self.out.fds = None;
        self.decoder.clear(&mut spares.input);
    }

    /// The rarely used parts, made now if need be.
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

/// The peer's credentials and the descriptors waiting for the next frame,
/// from a connection's [`Extra`], if it has one.
#[inline(always)]
fn split(extra: &mut Option<Box<Extra>>) -> (Option<PeerCred>, Option<&mut Vec<OwnedFd>>) {
    match extra.as_deref_mut() {
        Some(extra) => (extra.peer, extra.fds_in.as_mut()),
        None => (None, None),
    }
}

/// The descriptors of a write-through piece: closed if they went with it
/// (`sent`: this side's copies), else attached to the head of the output,
/// the piece kept. Out of line: most pieces carry none.
#[inline(never)]
fn through_fds_done(at: &mut Option<Box<Attached>>, sent: bool, spares: &mut Spares) {
    match sent {
        true => spares.through_fds.clear(),
        false => outbox::attach(at, 0, &mut spares.through_fds),
    }
}
