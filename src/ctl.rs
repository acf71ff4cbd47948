//! What a handler can do beyond answering the frame in front of it: push
//! to, or disconnect, any open connection, send a datagram anywhere, set
//! and cancel timers. All of it on the loop's one thread, through a
//! [`Ctl`] lent to each callback.
//!
//! Pushes to other connections are queued here and applied by the server
//! as soon as the callback returns (in order: a connection receives what
//! was pushed to it in the order it was pushed), then written eagerly. So
//! that a handler learns at once whether a push fits, the server keeps a
//! small table beside its connections ([`Peers`]): for each open one, its
//! id and the bytes it has not written yet.

use std::os::fd::OwnedFd;
use std::time::Instant;

use socket2::SockAddr;

use crate::config::Framing;
use crate::conn::Limits;
use crate::handler::ConnId;
use crate::outbox::{Datagrams, SendError};
use crate::timers::{TimerId, Timers};

/// Who a timer calls back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The server's own deadline for connection `key` (idle, drain).
    Deadline(usize),
    /// A handler timer of the connection whose id is `key` and `serial`
    /// (kept flat, so that an owner is three words, not four: a timer is
    /// 56 bytes, and with `--idle-timeout` every connection has one),
    /// with the handler's token.
    Conn { key: u32, serial: u64, token: u64 },
    /// A handler timer of the whole server, with the handler's token.
    Server { token: u64 },
}

impl Owner {
    /// A handler timer of connection `id`. Its slot fits in 32 bits:
    /// every connection holds a descriptor, and descriptors are `int`s.
    fn conn(id: ConnId, token: u64) -> Owner {
        Owner::Conn {
            key: u32::try_from(id.key).unwrap_or(u32::MAX),
            serial: id.serial,
            token,
        }
    }

    /// The id of a [`Conn`](Owner::Conn) owner's connection.
    pub(crate) fn conn_id(key: u32, serial: u64) -> ConnId {
        ConnId {
            key: key as usize,
            serial,
        }
    }
}

/// What the server knows of one slab slot, for pushes: two words, since
/// every connection has one (its two flags ride in the low bits of the
/// serial's word: no count of connections reaches 2^62).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The serial of the connection in the slot, or of the last one (0:
    /// never used), shifted by [`FLAGS`], with [`OPEN`] set while it is
    /// open (the serial is kept after it closes, so that its entry, until
    /// reaped, has an id without a copy) and [`FULL`] set when a push was
    /// refused for being over the limit: tell the handler when the output
    /// has drained.
    serial: u64,
    /// Bytes of output not yet written (as of the last flush, plus what
    /// was pushed since).
    pending: usize,
}

/// Bits of [`Slot::serial`] below the serial.
const FLAGS: u32 = 2;
/// [`Slot::serial`]'s flag: the connection is open.
const OPEN: u64 = 1;
/// [`Slot::serial`]'s flag: a push was refused, `drained` is owed.
const FULL: u64 = 1 << 1;

impl Slot {
    /// Whether `id`'s connection is the one open in this slot.
    #[inline]
    fn holds(&self, id: ConnId) -> bool {
        self.serial & !FULL == (id.serial << FLAGS | OPEN)
    }

    /// The serial alone.
    #[inline(always)]
    fn serial(&self) -> u64 {
        self.serial >> FLAGS
    }

    /// Whether a push was refused since the output last drained.
    #[inline]
    fn full(&self) -> bool {
        self.serial & FULL != 0
    }

    /// Notes a refused push (`drained` is owed), or that it was told.
    fn set_full(&mut self, full: bool) {
        self.serial = self.serial & !FULL | if full { FULL } else { 0 };
    }
}

/// The push-side view of every connection slot, indexed by slab key.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    slots: Vec<Slot>,
    /// The handler's timers of the connection in each slot, cancelled
    /// when it closes; only as long as the highest slot that set one.
    /// Boxed: one word per slot for the connections that set none (most),
    /// and kept with the slot, so a reused slot reuses its allocation.
    // Box<Vec>, not Vec: one word instead of three in every slot.
    #[allow(clippy::box_collection)]
    timers: Vec<Option<Box<Vec<TimerId>>>>,
    /// Serial of the last connection opened (serials start at 1).
    last_serial: u64,
}

impl Peers {
    /// Reserves room for `n` slots (address space: untouched, it is not
    /// resident).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.slots.reserve_exact(n);
    }

    /// A connection opens in slot `key`: its id.
    pub(crate) fn open(&mut self, key: usize) -> ConnId {
        if self.slots.len() <= key {
            self.slots.resize_with(key + 1, Slot::default);
        }
        self.last_serial += 1;
        let slot = &mut self.slots[key];
        slot.serial = self.last_serial << FLAGS | OPEN;
        slot.pending = 0;
        ConnId {
            key,
            serial: self.last_serial,
        }
    }

    /// The id of the connection that has slot `key`, or had it last (the
    /// server asks only for slots whose connection it still holds).
    #[inline(always)]
    pub(crate) fn id(&self, key: usize) -> ConnId {
        ConnId {
            key,
            serial: self.slots.get(key).map_or(0, Slot::serial),
        }
    }

    /// The connection `id` closed: its slot is free, and the timers its
    /// handler set are cancelled (they never fire, and cost nothing).
    pub(crate) fn close(&mut self, id: ConnId, timers: &mut Timers<Owner>) {
        if let Some(slot) = self.slots.get_mut(id.key).filter(|s| s.holds(id)) {
            slot.serial &= !OPEN;
            let list = self.timers.get_mut(id.key).and_then(Option::as_mut);
            for t in list.into_iter().flat_map(|list| list.drain(..)) {
                timers.cancel_id(t);
            }
        }
    }

    /// The slot of `id`, if that connection is still open (and not being
    /// disconnected).
    fn get_mut(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.slots.get_mut(id.key).filter(|s| s.holds(id))
    }

    /// The output of the connection in slot `key` (open: the caller holds
    /// it) after a flush: `pending` bytes. Returns true when the handler
    /// is to be told it drained (a push was refused and it is now at or
    /// under `low_water`). Every settle of every connection comes here, so
    /// it is a store and a test.
    #[inline(always)]
    pub(crate) fn settle(&mut self, key: usize, pending: usize, low_water: usize) -> bool {
        match self.slots.get_mut(key) {
            Some(slot) => {
                slot.pending = pending;
                slot.full() && Self::drained(slot, low_water)
            }
            None => false,
        }
    }

    #[cold]
    fn drained(slot: &mut Slot, low_water: usize) -> bool {
        let drained = slot.pending <= low_water;
        if drained {
            slot.set_full(false);
        }
        drained
    }

    /// A handler timer of `id` fired: it is no longer the connection's.
    pub(crate) fn timer_fired(&mut self, id: ConnId, timer: TimerId) -> bool {
        if self.get_mut(id).is_none() {
            return false;
        }
        if let Some(list) = self.timers.get_mut(id.key).and_then(Option::as_mut) {
            if let Some(i) = list.iter().position(|t| *t == timer) {
                list.swap_remove(i);
            }
        }
        true
    }

    /// Notes `timer` as one of `id`'s, if it is open, to cancel it when
    /// it closes.
    fn add_timer(&mut self, id: ConnId, timer: TimerId) {
        if self.get_mut(id).is_none() {
            return;
        }
        if self.timers.len() <= id.key {
            self.timers.resize_with(id.key + 1, || None);
        }
        let list = self.timers[id.key].get_or_insert_with(Box::default);
        list.push(timer);
    }
}

/// What a push asks, applied after the callback.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Push {
    /// Write the next `len` bytes of the push buffer to `to`: as one frame
    /// of its framing, or verbatim.
    Send {
        to: ConnId,
        len: usize,
        framed: bool,
        /// Descriptors go with it: the next entry of the push fds.
        fds: bool,
    },
    /// Close `to` once what it owes is written.
    Close { to: ConnId },
}

/// Pushes waiting for the callback to return; reused, so steady pushing
/// allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Pushes {
    ops: Vec<Push>,
    bytes: Vec<u8>,
    /// The descriptors of the pushes that carry some, in order.
    fds: Vec<Vec<OwnedFd>>,
}

impl Pushes {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Takes the pushes out, in order, with their bytes and descriptors;
    /// `done` gives the (emptied) buffers back, keeping their allocations.
    pub(crate) fn take(&mut self) -> (Vec<Push>, Vec<u8>, Vec<Vec<OwnedFd>>) {
        (
            std::mem::take(&mut self.ops),
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.fds),
        )
    }

    /// Gives back what [`take`](Self::take) took, emptied (descriptors
    /// not taken out of `fds` are closed).
    pub(crate) fn done(
        &mut self,
        mut ops: Vec<Push>,
        mut bytes: Vec<u8>,
        mut fds: Vec<Vec<OwnedFd>>,
    ) {
        if self.ops.is_empty() {
            ops.clear();
            bytes.clear();
            fds.clear();
            self.ops = ops;
            self.bytes = bytes;
            self.fds = fds;
        }
    }
}

/// The state behind a handler's [`Ctl`]: the push table, the pushes
/// waiting, and every timer (the server's own and the handler's: one
/// heap).
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) peers: Peers,
    pub(crate) pushes: Pushes,
    pub(crate) timers: Timers<Owner>,
    pub(crate) framer: Framer,
}

impl World {
    /// Nothing open, nothing pushed, no timer; pushes framed by `framer`.
    pub(crate) fn new(framer: Framer) -> World {
        World {
            peers: Peers::default(),
            pushes: Pushes::default(),
            timers: Timers::default(),
            framer,
        }
    }

    /// The handler's view of the server, for one batch of callbacks.
    #[inline]
    pub(crate) fn ctl<'a>(
        &'a mut self,
        now: Instant,
        datagrams: Option<&'a mut Datagrams>,
    ) -> Ctl<'a> {
        Ctl {
            now,
            world: self,
            datagrams,
        }
    }
}

/// How the server frames a pushed payload, for the limit check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Framer {
    /// Bytes a framed payload gains (`\n`, a length header, a record).
    pub(crate) framed_overhead: usize,
    /// Bytes a verbatim payload gains (a record on message sockets).
    pub(crate) wire_overhead: usize,
    /// Pending output a push may not take a connection past.
    pub(crate) max_buffer: usize,
}

impl Framer {
    /// The framing `limits` describe.
    pub(crate) fn new(limits: &Limits) -> Framer {
        Framer {
            framed_overhead: match (limits.messages, limits.framing) {
                (true, _) => 4,
                (false, Framing::Line) => 1,
                (false, Framing::Length) => 4,
                (false, Framing::Raw) => 0,
            },
            wire_overhead: if limits.messages { 4 } else { 0 },
            max_buffer: limits.max_buffer,
        }
    }
}

/// The server, as a handler's callback sees it: push to any connection,
/// set timers, read the time. Lent to every callback; a [`Context`]
/// derefs to it.
///
/// Getters: [`now`](Ctl::now), [`is_open`](Ctl::is_open),
/// [`pending_of`](Ctl::pending_of). Outputs, queued and applied in order
/// once the callback returns: [`send_to`](Ctl::send_to),
/// [`send_wire_to`](Ctl::send_wire_to), [`disconnect`](Ctl::disconnect),
/// [`send_datagram`](Ctl::send_datagram). Timers:
/// [`set_server_timer`](Ctl::set_server_timer),
/// [`cancel_timer`](Ctl::cancel_timer) (and, per connection,
/// [`Context::set_timer`]). Nothing here allocates per call once the
/// server's queues have grown to their working size.
///
/// # Examples
///
/// A broadcaster that never buffers without bound for a slow reader: a
/// member whose output is full is dropped, and a heartbeat goes to
/// everyone every second.
///
/// ```
/// use std::time::Duration;
/// use uds_reactor::{Closed, ConnId, Context, Ctl, Frame, Handler, SendError};
///
/// #[derive(Default)]
/// struct Broadcast {
///     members: Vec<ConnId>,
///     beat: u64,
/// }
///
/// impl Handler for Broadcast {
///     type State = ();
///
///     fn open(&mut self, cx: &mut Context<'_>) {
///         if self.members.is_empty() {
///             let at = cx.now() + Duration::from_secs(1);
///             cx.set_server_timer(at, 0);
///         }
///         self.members.push(cx.id());
///     }
///
///     fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
///         let members = self.members.clone();
///         shout(cx, &members, frame.payload());
///     }
///
///     fn close(&mut self, _: (), closed: Closed, _: &mut Ctl<'_>) {
///         self.members.retain(|&m| m != closed.id);
///     }
///
///     fn server_timer(&mut self, _: u64, ctl: &mut Ctl<'_>) {
///         self.beat += 1;
///         let line = format!("beat {}", self.beat);
///         shout(ctl, &self.members, line.as_bytes());
///         if !self.members.is_empty() {
///             let at = ctl.now() + Duration::from_secs(1);
///             ctl.set_server_timer(at, 0);
///         }
///     }
/// }
///
/// /// Sends to every member; drops the ones that cannot keep up.
/// fn shout(ctl: &mut Ctl<'_>, members: &[ConnId], line: &[u8]) {
///     for &m in members {
///         if let Err(SendError::Full { .. }) = ctl.send_to(m, line) {
///             let _ = ctl.disconnect(m);
///         }
///     }
/// }
/// ```
///
/// [`Context`]: crate::Context
/// [`Context::set_timer`]: crate::Context::set_timer
pub struct Ctl<'a> {
    now: Instant,
    /// Three words to copy per callback, whatever the world holds.
    world: &'a mut World,
    /// The datagram queue, on a datagram socket.
    datagrams: Option<&'a mut Datagrams>,
}

impl<'a> Ctl<'a> {
    /// A shorter-lived copy of the same borrows, for one nested callback.
    #[inline]
    pub(crate) fn reborrow(&mut self) -> Ctl<'_> {
        Ctl {
            now: self.now,
            world: self.world,
            datagrams: self.datagrams.as_deref_mut(),
        }
    }

    /// The push limit (`--max-buffer`).
    pub(crate) fn max_buffer(&self) -> usize {
        self.world.framer.max_buffer
    }

    /// Bytes a pushed payload gains on the wire: framed or verbatim.
    pub(crate) fn overhead(&self, framed: bool) -> usize {
        let f = self.world.framer;
        if framed {
            f.framed_overhead
        } else {
            f.wire_overhead
        }
    }
}

impl Ctl<'_> {
    /// The time the loop woke up for this batch of callbacks (the clock
    /// is read once per turn, not per callback).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether `id` names a connection that is open now (not one that
    /// closed, nor a newer one in its slot). A connection stops being
    /// open the moment the server finds it finished (its input over and
    /// its output written, or an error): its
    /// [`close`](crate::Handler::close) comes at the end of that turn,
    /// and meanwhile pushes to it are refused as [`SendError::Closed`].
    pub fn is_open(&self, id: ConnId) -> bool {
        self.world
            .peers
            .slots
            .get(id.key)
            .is_some_and(|s| s.holds(id))
    }

    /// Bytes `id` has yet to write, or `None` if it is not open.
    pub fn pending_of(&self, id: ConnId) -> Option<usize> {
        self.is_open(id)
            .then(|| self.world.peers.slots[id.key].pending)
    }

    /// Queues `payload` to connection `id` as one frame of its framing
    /// (as [`Context::send`](crate::Context::send) does for the current
    /// one); it is written as soon as this callback returns.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if `id` is not open (it closed, and perhaps
    /// a newer connection has its slot: ids are never reused);
    /// [`SendError::Full`] if it would take the connection's unsent
    /// output past `--max-buffer` (nothing is queued; the handler's
    /// [`drained`](crate::Handler::drained) is called once it has written
    /// down to half of that); [`SendError::TooLarge`] over 4 GiB.
    pub fn send_to(&mut self, id: ConnId, payload: &[u8]) -> Result<(), SendError> {
        self.push(id, payload, true)
    }

    /// As [`send_to`](Self::send_to), verbatim: no framing is added on a
    /// stream; one message on a seqpacket socket.
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to).
    pub fn send_wire_to(&mut self, id: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        self.push(id, bytes, false)
    }

    /// As [`send_to`](Self::send_to), with `fds` attached to the frame (see
    /// [`Context::send_with_fds`](crate::Context::send_with_fds)).
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to); nothing is queued and `fds` are
    /// closed.
    pub fn send_to_with_fds(
        &mut self,
        id: ConnId,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        self.push(id, payload, true)?;
        if !fds.is_empty() {
            if let Some(Push::Send { fds: with, .. }) = self.world.pushes.ops.last_mut() {
                *with = true;
                self.world.pushes.fds.push(fds);
            }
        }
        Ok(())
    }

    /// Closes connection `id` once what it owes (pushes included) is
    /// written, within the drain timeout; it reads nothing more meanwhile,
    /// and its handler's `close` follows with `CloseReason::Handler`.
    /// Until then it is still open: a handler that drops a slow reader
    /// should forget its id at once.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if `id` is not open.
    pub fn disconnect(&mut self, id: ConnId) -> Result<(), SendError> {
        if self.world.peers.get_mut(id).is_none() {
            return Err(SendError::Closed);
        }
        self.world.pushes.ops.push(Push::Close { to: id });
        Ok(())
    }

    /// Queues one datagram to `to` (a datagram socket only); it is sent as
    /// soon as this callback returns, in order with the replies.
    ///
    /// # Errors
    ///
    /// [`SendError::Unsupported`] on a connection socket;
    /// [`SendError::Full`] when the reply queue holds `--max-buffer`
    /// already; [`SendError::TooLarge`] over 4 GiB.
    pub fn send_datagram(&mut self, to: &SockAddr, bytes: &[u8]) -> Result<(), SendError> {
        self.send_datagram_with_fds(to, bytes, Vec::new())
    }

    /// As [`send_datagram`](Self::send_datagram), with `fds` attached.
    ///
    /// # Errors
    ///
    /// As [`send_datagram`](Self::send_datagram); nothing is queued and
    /// `fds` are closed.
    pub fn send_datagram_with_fds(
        &mut self,
        to: &SockAddr,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        let max_buffer = self.world.framer.max_buffer;
        let queue = self
            .datagrams
            .as_deref_mut()
            .ok_or(SendError::Unsupported)?;
        queue_datagram(queue, max_buffer, to, bytes, fds)
    }

    /// Calls [`Handler::server_timer`](crate::Handler::server_timer) with
    /// `token` at `deadline` (or at the first turn after it, if it has
    /// passed). Timers cost O(log n) to set, cancel and fire.
    pub fn set_server_timer(&mut self, deadline: Instant, token: u64) -> TimerId {
        self.world.timers.insert(Owner::Server { token }, deadline)
    }

    /// Cancels a timer set by [`set_server_timer`](Self::set_server_timer)
    /// or [`Context::set_timer`](crate::Context::set_timer). Returns
    /// whether it was still set (a timer that fired, was cancelled or
    /// belonged to a connection that closed is not).
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match self.world.timers.cancel_id(id) {
            Some(Owner::Conn { key, serial, .. }) => {
                self.world
                    .peers
                    .timer_fired(Owner::conn_id(key, serial), id);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// A push to connection `id` itself (through its [`Context`]) was
    /// refused as full: `drained` is owed, as for a push from elsewhere.
    ///
    /// [`Context`]: crate::Context
    pub(crate) fn refused(&mut self, id: ConnId) {
        if let Some(slot) = self.world.peers.get_mut(id) {
            slot.set_full(true);
        }
    }

    /// Sets a timer of connection `id` (the current one, for a Context).
    pub(crate) fn set_conn_timer(&mut self, id: ConnId, deadline: Instant, token: u64) -> TimerId {
        let timer = self.world.timers.insert(Owner::conn(id, token), deadline);
        self.world.peers.add_timer(id, timer);
        timer
    }

    fn push(&mut self, id: ConnId, payload: &[u8], framed: bool) -> Result<(), SendError> {
        let framer = self.world.framer;
        let overhead = self.overhead(framed);
        let Some(slot) = self.world.peers.get_mut(id) else {
            return Err(SendError::Closed);
        };
        if payload.len() > u32::MAX as usize {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: u32::MAX as usize,
            });
        }
        let after = slot.pending + payload.len() + overhead;
        if after > framer.max_buffer {
            slot.set_full(true);
            return Err(SendError::Full {
                pending: slot.pending,
                limit: framer.max_buffer,
            });
        }
        slot.pending = after;
        self.world.pushes.bytes.extend_from_slice(payload);
        self.world.pushes.ops.push(Push::Send {
            to: id,
            len: payload.len(),
            framed,
            fds: false,
        });
        Ok(())
    }
}

/// Queues one datagram to `to` with `fds`, unless the queue holds
/// `max_buffer` already.
pub(crate) fn queue_datagram(
    queue: &mut Datagrams,
    max_buffer: usize,
    to: &SockAddr,
    bytes: &[u8],
    mut fds: Vec<OwnedFd>,
) -> Result<(), SendError> {
    if queue.cost() >= max_buffer {
        return Err(SendError::Full {
            pending: queue.cost(),
            limit: max_buffer,
        });
    }
    let place = queue.len();
    queue.push_to(to, bytes)?;
    if !fds.is_empty() {
        queue.attach(place, &mut fds);
    }
    Ok(())
}
