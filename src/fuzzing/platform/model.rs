//! The `platform` target's model of what the server owes each connection,
//! written from the handler API's documentation, not from `ctl.rs`: which
//! connections are open, the frames each must see (line framing, decoded
//! here byte by byte), the bytes each must be written (its replies and
//! the pushes addressed to it, in order), what every `send_to`,
//! `disconnect` and `cancel_timer` must return, which timers are live and
//! when `drained` is owed.
//!
//! The scripted handler (`script.rs`) reports each thing it does and sees,
//! the driver (`platform.rs`) each thing the server does; both call in
//! here in the order it happens, and every call checks what it can.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::peer::{next_line, Peer};
use crate::conn::CloseReason;
use crate::handler::ConnId;
use crate::outbox::SendError;
use crate::timers::TimerId;

/// One handler timer.
#[derive(Debug)]
struct Timer {
    /// The connection's serial; `None` for a server timer.
    owner: Option<u64>,
    token: u64,
    deadline: Instant,
    /// Set, and neither fired nor cancelled nor gone with its connection.
    live: bool,
}

/// A push accepted and not yet applied.
#[derive(Debug)]
struct Queued {
    to: ConnId,
    /// The bytes as they go on the wire; `None` for a disconnect.
    wire: Option<Vec<u8>>,
}

/// The model. See the module docs.
#[derive(Debug)]
pub(super) struct Model {
    max_frame: usize,
    max_buffer: usize,
    /// Indexed by serial - 1.
    peers: Vec<Peer>,
    queue: VecDeque<Queued>,
    timers: HashMap<TimerId, Timer>,
    /// The timer just popped: whether its owner's callback is owed, and
    /// whether it came.
    firing: Option<(TimerId, bool, bool)>,
}

impl Model {
    pub(super) fn new(max_frame: usize, max_buffer: usize) -> Model {
        Model {
            max_frame,
            max_buffer,
            peers: Vec::new(),
            queue: VecDeque::new(),
            timers: HashMap::new(),
            firing: None,
        }
    }

    fn peer(&mut self, id: ConnId) -> &mut Peer {
        let p = &mut self.peers[id.serial() as usize - 1];
        assert_eq!(p.id, Some(id), "{id:?} is not the id it was opened with");
        p
    }

    /// Open to the handler: not closed, nor found finished.
    fn is_open(&self, id: ConnId) -> bool {
        let i = id.serial() as usize;
        (1..=self.peers.len()).contains(&i) && self.peers[i - 1].id == Some(id) && {
            let p = &self.peers[i - 1];
            p.open && !p.reaping
        }
    }

    // ---- the handler's reports ----

    /// `open`: a new serial, in a slot no open connection holds.
    pub(super) fn opened(&mut self, id: ConnId) {
        assert_eq!(id.serial(), self.peers.len() as u64 + 1, "serials count up");
        let taken = self
            .peers
            .iter()
            .any(|p| p.open && p.id.unwrap().slot() == id.slot());
        assert!(!taken, "{id:?} opened in a slot still in use");
        self.peers.push(Peer {
            id: Some(id),
            open: true,
            ..Peer::default()
        });
    }

    /// `frame`: the next line the model decodes from what was read.
    pub(super) fn frame(&mut self, id: ConnId, payload: &[u8]) {
        let max_frame = self.max_frame;
        let p = self.peer(id);
        assert!(
            p.open && !p.closing && !p.killed,
            "a frame to {id:?} after its end"
        );
        let next = next_line(p, max_frame).or_else(|| p.tail.take());
        assert_eq!(next.as_deref(), Some(payload), "frames of {id:?} in order");
    }

    /// `Context::send` on `id` (always fits on a stream).
    pub(super) fn reply(&mut self, id: ConnId, payload: &[u8]) {
        let p = self.peer(id);
        p.owed.extend_from_slice(payload);
        p.owed.push(b'\n');
    }

    /// `send_to` (`framed`) or `send_wire_to` from connection `from` (or a
    /// callback with no connection) to `to`, and what it returned.
    pub(super) fn push(
        &mut self,
        from: Option<ConnId>,
        to: ConnId,
        payload: &[u8],
        framed: bool,
        result: Result<(), SendError>,
    ) {
        let mut wire = payload.to_vec();
        if framed {
            wire.push(b'\n');
        }
        if !self.is_open(to) {
            assert_eq!(result, Err(SendError::Closed), "push to stale {to:?}");
            return;
        }
        let queued = self.queued_to(to);
        let max_buffer = self.max_buffer;
        let p = self.peer(to);
        let pending = p.pending() + queued;
        // To the connection itself or another: the framed length counts.
        let fits = pending + wire.len() <= max_buffer;
        assert_eq!(
            result.is_ok(),
            fits,
            "push of {} to {to:?} with {pending} of {max_buffer} pending",
            payload.len()
        );
        match result {
            Ok(()) if from == Some(to) => p.owed.extend_from_slice(&wire),
            Ok(()) => self.queue.push_back(Queued {
                to,
                wire: Some(wire),
            }),
            Err(SendError::Full { .. }) => p.full = true,
            Err(e) => panic!("push to {to:?}: {e:?}"),
        }
    }

    fn queued_to(&self, to: ConnId) -> usize {
        let wire = |q: &Queued| q.wire.as_ref().map_or(0, Vec::len);
        self.queue.iter().filter(|q| q.to == to).map(wire).sum()
    }

    /// `disconnect(to)` from `from`, and what it returned.
    pub(super) fn disconnect(
        &mut self,
        from: Option<ConnId>,
        to: ConnId,
        result: Result<(), SendError>,
    ) {
        if !self.is_open(to) {
            assert_eq!(result, Err(SendError::Closed), "disconnect of stale {to:?}");
            return;
        }
        assert_eq!(result, Ok(()), "disconnect of open {to:?}");
        if from == Some(to) {
            self.handler_close(to);
        } else {
            self.queue.push_back(Queued { to, wire: None });
        }
    }

    /// `Context::close` on `id`: the rest of its input is never delivered.
    pub(super) fn handler_close(&mut self, id: ConnId) {
        let p = self.peer(id);
        p.closing = true;
        p.input.clear();
        p.cur.clear();
        p.tail = None;
    }

    /// A timer was set: of connection `owner`, or the server's.
    pub(super) fn timer_set(
        &mut self,
        owner: Option<ConnId>,
        id: TimerId,
        token: u64,
        deadline: Instant,
    ) {
        if let Some(o) = owner {
            assert!(self.is_open(o), "a timer set on closed {o:?}");
        }
        let timer = Timer {
            owner: owner.map(|o| o.serial()),
            token,
            deadline,
            live: true,
        };
        assert!(
            self.timers.insert(id, timer).is_none(),
            "timer ids are unique"
        );
    }

    /// `cancel_timer(id)` returned `result`: true exactly while it is live.
    pub(super) fn cancel(&mut self, id: TimerId, result: bool) {
        let t = self
            .timers
            .get_mut(&id)
            .expect("cancel a timer that was set");
        assert_eq!(result, t.live, "cancel_timer's answer");
        t.live = false;
    }

    /// `timer` on connection `id`, or `server_timer` (`id` None).
    pub(super) fn fired(&mut self, id: Option<ConnId>, token: u64) {
        let (timer, wanted, came) = self.firing.as_mut().expect("a timer callback unpopped");
        let t = &self.timers[timer];
        assert_eq!(
            (t.owner, t.token),
            (id.map(|i| i.serial()), token),
            "the timer popped"
        );
        assert!(*wanted, "a timer callback for a finished connection");
        assert!(!*came, "one callback per timer");
        *came = true;
    }

    /// `drained` on `id`: only after a refusal, once per refusal.
    pub(super) fn drained(&mut self, id: ConnId) {
        let p = self.peer(id);
        assert!(p.open && !p.done(), "drained on finished {id:?}");
        assert!(p.drained_owed > 0, "drained on {id:?} without a Full");
        p.drained_owed -= 1;
    }

    /// The server skipped a `drained` queued for `id`: rightly, only
    /// when it has closed since.
    pub(super) fn drained_skipped(&mut self, id: ConnId) {
        assert!(!self.peer(id).open, "a drained owed to open {id:?} skipped");
    }

    /// The server settled `id` (not done): a refusal streak ends once the
    /// output is down to half of `max_buffer`, and `drained` is owed.
    pub(super) fn settled(&mut self, id: ConnId) {
        let low_water = self.max_buffer / 2;
        let p = self.peer(id);
        if p.full && p.pending() <= low_water {
            p.full = false;
            p.drained_owed += 1;
        }
    }

    /// `close` on `id`: once, when it is done; its timers go with it.
    pub(super) fn closed(&mut self, id: ConnId, reason: CloseReason) {
        let p = self.peer(id);
        assert!(p.open, "close of {id:?} twice");
        p.open = false;
        assert!(p.read_done(), "{id:?} closed while reading ({reason:?})");
        if !p.killed {
            assert_eq!(
                p.written, p.owed,
                "{id:?} closed ({reason:?}) before writing all"
            );
        }
        p.drained_owed = 0;
        self.end_timers(id);
    }

    /// The timers of `id` are gone (it finished).
    fn end_timers(&mut self, id: ConnId) {
        let serial = id.serial();
        for t in self.timers.values_mut() {
            if t.owner == Some(serial) {
                t.live = false;
            }
        }
    }

    // ---- the driver's reports ----

    /// `chunk` was read on `id`.
    pub(super) fn read(&mut self, id: ConnId, chunk: &[u8]) {
        let p = self.peer(id);
        assert!(!p.read_done(), "read after input ended");
        p.input.extend(chunk);
    }

    /// The read's callbacks returned: every complete line was delivered.
    pub(super) fn read_end(&mut self, id: ConnId) {
        let max_frame = self.max_frame;
        let p = self.peer(id);
        if let Some(line) = next_line(p, max_frame) {
            panic!("{id:?}: line {line:?} not delivered");
        }
    }

    /// EOF on `id`: a line tail is one more frame.
    pub(super) fn eof(&mut self, id: ConnId) {
        let p = self.peer(id);
        assert!(!p.read_done(), "EOF after input ended");
        p.eof = true;
        if !p.cur.is_empty() {
            p.tail = Some(std::mem::take(&mut p.cur));
        }
    }

    pub(super) fn eof_end(&mut self, id: ConnId) {
        let p = self.peer(id);
        assert_eq!(p.tail, None, "{id:?}: the line tail not delivered");
    }

    /// `id` wrote `bytes`: the next ones it owed.
    pub(super) fn wrote(&mut self, id: ConnId, bytes: &[u8]) {
        let p = self.peer(id);
        assert!(p.open && !p.killed, "{id:?} wrote after its end");
        p.written.extend_from_slice(bytes);
        assert!(
            p.owed.starts_with(&p.written),
            "{id:?} wrote what it did not owe"
        );
    }

    /// The server put `id`, done, on its reap list.
    pub(super) fn reaping(&mut self, id: ConnId) {
        let p = self.peer(id);
        assert!(p.done(), "{id:?} reaped while not done");
        p.reaping = true;
        // Closed to the handler from here: its timers are gone too.
        self.end_timers(id);
    }

    /// The driver killed `id` (an I/O error, or a deadline).
    pub(super) fn killed(&mut self, id: ConnId) {
        let p = self.peer(id);
        p.killed = true;
        p.input.clear();
        p.cur.clear();
    }

    /// The next queued push is applied: it must be this one (`len` bytes
    /// of payload, `None` for a disconnect). Returns whether it still
    /// reaches its connection (the same one, still open).
    pub(super) fn apply(&mut self, to: ConnId, len: Option<usize>) -> bool {
        let q = self
            .queue
            .pop_front()
            .expect("a push applied that was queued");
        assert_eq!(q.to, to, "pushes applied in order");
        let wire_len = |w: &Vec<u8>| w.len() - usize::from(w.last() == Some(&b'\n'));
        assert_eq!(q.wire.as_ref().map(wire_len).is_some(), len.is_some());
        if !self.is_open(to) {
            return false;
        }
        let p = self.peer(to);
        match q.wire {
            Some(_) if p.killed => {}
            Some(wire) => p.owed.extend_from_slice(&wire),
            None => p.closing = true,
        }
        true
    }

    /// A timer was popped from the heap at `now`: it was live and due, the
    /// earliest such; its owner's callback is owed if the owner can take
    /// one (`popped_end` checks it came).
    pub(super) fn popped(&mut self, id: TimerId, owner: Option<ConnId>, token: u64, now: Instant) {
        let t = self
            .timers
            .get_mut(&id)
            .expect("a timer popped that was set");
        assert!(t.live, "a cancelled or closed timer fired: {t:?}");
        assert!(t.deadline <= now, "a timer fired early");
        assert_eq!((t.owner, t.token), (owner.map(|o| o.serial()), token));
        t.live = false;
        let deadline = t.deadline;
        let earlier = self
            .timers
            .values()
            .any(|t| t.live && t.deadline < deadline);
        assert!(!earlier, "timers fire in deadline order");
        let wanted = owner.is_none_or(|o| {
            let p = &self.peers[o.serial() as usize - 1];
            p.open && !p.done()
        });
        self.firing = Some((id, wanted, false));
    }

    /// The popped timer was dispatched: its callback came if it was owed.
    pub(super) fn popped_end(&mut self) {
        let (_, wanted, came) = self.firing.take().expect("popped");
        assert_eq!(came, wanted, "a due timer's callback did not come");
    }

    /// The turn popped every due timer.
    pub(super) fn timers_due(&self, now: Instant) {
        let missed = self.timers.values().find(|t| t.live && t.deadline <= now);
        assert!(missed.is_none(), "a due timer did not fire: {missed:?}");
    }

    // ---- checks against the real state ----

    /// The connection's state as the driver sees it.
    pub(super) fn check(&self, id: ConnId, pending: usize, done: bool, wants_read: bool) {
        let p = &self.peers[id.serial() as usize - 1];
        assert!(p.open, "{id:?} is still in the slab");
        assert_eq!(pending, p.pending(), "{id:?} pending");
        assert_eq!(done, p.done(), "{id:?} done");
        let want = !p.read_done() && p.pending() < self.max_buffer;
        assert_eq!(wants_read, want, "{id:?} wants_read");
    }

    /// Every connection ever opened, and whether it is open.
    pub(super) fn ids(&self) -> impl Iterator<Item = (ConnId, bool)> + '_ {
        self.peers
            .iter()
            .map(|p| (p.id.unwrap(), p.open && !p.reaping))
    }

    /// The `drained` calls the server must have queued for `id`.
    pub(super) fn drained_owed(&self, id: ConnId) -> usize {
        self.peers[id.serial() as usize - 1].drained_owed as usize
    }

    /// The timers still live: only server timers once all is closed.
    pub(super) fn live_timers(&self) -> Vec<(TimerId, Option<u64>)> {
        let live = self.timers.iter().filter(|(_, t)| t.live);
        live.map(|(id, t)| (*id, t.owner)).collect()
    }

    pub(super) fn nothing_queued(&self) -> bool {
        self.queue.is_empty()
    }
}
