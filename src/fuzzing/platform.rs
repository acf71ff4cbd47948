//! The `platform` fuzz target: the handler platform (pushes by id,
//! disconnects, connection and server timers, `drained`, messages) over
//! up to eight connections in one world, driven the way the server's
//! connection endpoint drives it (`server/conns.rs`, `server/pump.rs`;
//! mirrored in `endpoint.rs`), with a scripted handler (`script.rs`)
//! checked against a model (`model.rs`, `peer.rs`) of what the handler
//! API documents.

use std::time::{Duration, Instant};

use slab::Slab;

use super::Input;
use crate::buffer::Spares;
use crate::config::Framing;
use crate::conn::{Conn, Limits, Tally};
use crate::ctl::{Ctl, Framer, Owner, World};
use crate::handler::{ConnId, Handler};
use crate::timers::{TimerId, TimerKey};

mod endpoint;
mod model;
mod peer;
mod script;

use model::Model;
use script::Platform;

/// Connections open at once; slots are reused.
const SLOTS: usize = 8;

/// Operations per input at most.
const MAX_OPS: usize = 3_000;

/// The driver's clock step.
const TICK: Duration = Duration::from_millis(10);

/// Fuzz target `platform`.
///
/// Input: `max_frame - 8`, `max_buffer - 8`, the idle timeout (off below
/// 128, else `1 + (b & 63)` ticks of 10 ms) and the drain timeout
/// (`1 + (b & 63)` ticks); then operations, each a byte (mod 10) and its
/// arguments: open a connection (the room its peer's socket has, in
/// bytes), read a chunk of up to 63 bytes of the input on one (a
/// connection is picked by a byte among those open), let its peer take
/// up to 510 more bytes (its output is written as far as that room goes),
/// EOF on one, an I/O error on one, let up to 31 ticks pass, deliver a
/// message, or load the next bytes of the input as the tape that scripts
/// the callbacks without a frame. Framing is `line`; each frame's payload
/// is the script its callback runs (see the handler's module for the
/// actions: replies, `send_to` and `send_wire_to` and `disconnect` to any
/// id it remembers, stale ones included, connection and server timers,
/// cancels, `close`). Like the server, after each callback the pushes it
/// queued are applied in order to the connections still open and written
/// eagerly; each operation ends with a turn: due timers (deadlines,
/// connection and server timers), `drained`, then reaping what finished
/// (whose `close` may push and disconnect in turn). At the end every peer
/// reads everything and ends its input, what is left is killed, and the
/// timer heap is emptied with a deadline far in the future.
///
/// Checks: frames arrive in order, as a byte-at-a-time line decoder cuts
/// what was read; each connection writes exactly its replies and the
/// pushes addressed to its id while it was open, in the order queued (a
/// prefix of them if it was killed; all of them otherwise, by its close);
/// `send_to`, `send_wire_to` and `disconnect` to a closed id (a newer
/// connection in its slot or not, or one found finished and waiting for
/// its `close`) return `Closed`, and nothing accepted is ever dropped; a
/// push to an open connection (itself included) is refused as `Full`
/// exactly when its pending output plus the framed payload would pass
/// `max_buffer`; `drained` comes only after a refusal, once, and is owed
/// once the connection went down to half;
/// `cancel_timer` is true exactly for a live timer; a timer fires only
/// live, due and in deadline order, every due one in the turn, and never
/// for a closed or cancelled owner; `close` comes once, with the state
/// `open` made; `is_open`, `pending_of`, `pending`, `is_done` and
/// `wants_read` match the model after each operation; at the end the
/// heap holds exactly the live server timers.
pub fn platform(data: &[u8]) {
    let mut input = Input::new(data);
    let mut t = Driver::new(limits(&mut input));
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        t.op(&mut input);
        t.turn();
        t.check();
    }
    t.finish();
}

/// The limits the input asks for.
fn limits(input: &mut Input<'_>) -> Limits {
    Limits {
        framing: Framing::Line,
        messages: false,
        max_frame: 8 + usize::from(input.byte()),
        max_buffer: 8 + usize::from(input.byte()),
        idle_timeout: match input.byte() {
            b if b < 0x80 => None,
            b => Some(TICK * (1 + u32::from(b & 0x3f))),
        },
        drain_timeout: TICK * (1 + u32::from(input.byte() & 0x3f)),
        max_fds: 0,
    }
}

/// One connection, as the server's slab holds it.
struct Entry {
    id: ConnId,
    conn: Conn<ConnId>,
    /// Its deadline (idle or drain) in the heap.
    timer: Option<TimerKey>,
    /// On the reap list already.
    reaping: bool,
    /// Bytes its socket takes before it would block.
    room: usize,
}

/// A callback on one connection.
type Callback<'f> = &'f mut dyn FnMut(
    &mut Conn<ConnId>,
    ConnId,
    &mut Platform,
    &Limits,
    &mut Spares,
    &mut Ctl<'_>,
) -> Tally;

/// The server's connection endpoint, without sockets.
struct Driver {
    slab: Slab<Entry>,
    handler: Platform,
    world: World,
    spares: Spares,
    limits: Limits,
    now: Instant,
    /// Finished connections to close at the end of the turn.
    reap: Vec<usize>,
    /// Connections to tell they drained.
    drained: Vec<ConnId>,
}

impl Driver {
    fn new(limits: Limits) -> Driver {
        Driver {
            slab: Slab::new(),
            handler: Platform::new(Model::new(limits.max_frame, limits.max_buffer)),
            world: World::new(Framer::new(&limits)),
            spares: Spares::default(),
            limits,
            now: Instant::now(),
            reap: Vec::new(),
            drained: Vec::new(),
        }
    }

    /// One operation from `input`.
    fn op(&mut self, input: &mut Input<'_>) {
        match input.byte() % 10 {
            0 | 1 => {
                let room = usize::from(input.byte());
                self.open(room);
            }
            2 | 3 => {
                let (k, n) = (input.byte(), usize::from(input.byte() % 64));
                let chunk = input.take(n);
                if let Some(key) = self.pick(k) {
                    self.read(key, chunk);
                }
            }
            4 => {
                let (k, n) = (input.byte(), 2 * usize::from(input.byte()));
                if let Some(key) = self.pick(k) {
                    self.slab[key].room += n;
                    self.after(key);
                }
            }
            5 => {
                if let Some(key) = self.pick(input.byte()) {
                    self.eof(key);
                }
            }
            6 => {
                if let Some(key) = self.pick(input.byte()) {
                    self.kill(key);
                }
            }
            7 => self.now += TICK * u32::from(input.byte() % 32),
            8 => {
                self.handler
                    .message((), &mut self.world.ctl(self.now, None));
                self.apply_pushes();
            }
            _ => {
                let n = usize::from(input.byte() % 32);
                self.handler.load_tape(input.take(n));
            }
        }
    }

    /// The slab key of an open connection, by `k`.
    fn pick(&self, k: u8) -> Option<usize> {
        let n = self.slab.len();
        let nth = (n > 0).then(|| usize::from(k) % n)?;
        self.slab.iter().nth(nth).map(|(key, _)| key)
    }

    /// Accepts a connection whose peer's socket takes `room` bytes.
    fn open(&mut self, room: usize) {
        if self.slab.len() == SLOTS {
            return;
        }
        let key = self.slab.vacant_key();
        let id = self.world.peers.open(key);
        let ctl = &mut self.world.ctl(self.now, None);
        let (handler, spares) = (&mut self.handler, &mut self.spares);
        let (conn, _) = Conn::open(id, None, None, self.now, &self.limits, handler, spares, ctl);
        let entry = Entry {
            id,
            conn,
            timer: None,
            reaping: false,
            room,
        };
        assert_eq!(self.slab.insert(entry), key);
        self.after(key);
    }

    fn read(&mut self, key: usize, chunk: &[u8]) {
        let (id, now) = (self.slab[key].id, self.now);
        if chunk.is_empty() || !self.slab[key].conn.wants_read(&self.limits) {
            return;
        }
        self.handler.model.read(id, chunk);
        self.invoke(key, &mut |conn, id, handler, limits, spares, ctl| {
            let tally = conn.handle_read(id, chunk, now, limits, handler, spares, ctl);
            if let Some(piece) = tally.through.clone() {
                // Not written through here: kept, and flushed as the rest.
                conn.handle_through(&chunk[piece], None, now, limits, spares);
            }
            tally
        });
        self.handler.model.read_end(id);
        self.after(key);
    }

    fn eof(&mut self, key: usize) {
        let id = self.slab[key].id;
        if !self.slab[key].conn.wants_read(&self.limits) {
            return;
        }
        self.handler.model.eof(id);
        self.invoke(key, &mut |conn, id, handler, limits, spares, ctl| {
            conn.handle_eof(id, limits, handler, spares, ctl)
        });
        self.handler.model.eof_end(id);
        self.after(key);
    }

    /// An I/O error: the connection is done at once, its output dropped.
    fn kill(&mut self, key: usize) {
        let e = &mut self.slab[key];
        if !e.conn.is_done() {
            self.handler.model.killed(e.id);
        }
        e.conn.handle_io_error(&mut self.spares);
        self.settle(key);
    }

    /// Runs `f` on the connection in slot `key`, with a Ctl.
    fn invoke(&mut self, key: usize, f: Callback<'_>) {
        let e = &mut self.slab[key];
        let ctl = &mut self.world.ctl(self.now, None);
        f(
            &mut e.conn,
            e.id,
            &mut self.handler,
            &self.limits,
            &mut self.spares,
            ctl,
        );
    }

    /// What follows every callback on `key`: apply its pushes, write,
    /// settle.
    fn after(&mut self, key: usize) {
        self.apply_pushes();
        self.flush(key);
        self.settle(key);
    }

    /// The real state against the model's, after a whole turn.
    fn check(&mut self) {
        let model = &self.handler.model;
        let ctl = self.world.ctl(self.now, None);
        for (_, e) in &self.slab {
            let (pending, done) = (e.conn.pending(), e.conn.is_done());
            model.check(e.id, pending, done, e.conn.wants_read(&self.limits));
            assert!(!done, "{:?} done and not reaped", e.id);
            assert_eq!(ctl.pending_of(e.id), Some(pending), "pending_of {:?}", e.id);
            let queued = self.drained.iter().filter(|&&id| id == e.id).count();
            assert_eq!(
                model.drained_owed(e.id),
                queued,
                "drained owed to {:?}",
                e.id
            );
        }
        for (id, open) in model.ids() {
            assert_eq!(ctl.is_open(id), open, "is_open({id:?})");
        }
    }

    /// Every peer reads all and ends its input; the rest is killed; then
    /// nothing but the live server timers is left in the heap.
    fn finish(&mut self) {
        let keys: Vec<usize> = self.slab.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            if let Some(e) = self.slab.get_mut(key) {
                e.room = usize::MAX;
                self.after(key);
            }
        }
        for &key in &keys {
            if self.slab.contains(key) {
                self.eof(key);
            }
        }
        self.turn();
        self.check();
        let keys: Vec<usize> = self.slab.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.kill(key);
        }
        self.turn();
        assert!(self.slab.is_empty(), "everything closed");
        assert!(self.handler.model.nothing_queued(), "every push applied");
        let mut live = self.handler.model.live_timers();
        assert!(
            live.iter().all(|(_, owner)| owner.is_none()),
            "conn timers outlive close"
        );
        let far = self.now + Duration::from_secs(1 << 30);
        let mut left = Vec::new();
        while let Some((timer, owner)) = self.world.timers.pop_due(far) {
            assert!(
                matches!(owner, Owner::Server { .. }),
                "{owner:?} left in the heap"
            );
            left.push((timer, None));
        }
        let key = |t: &(TimerId, Option<u64>)| format!("{:?}", t.0);
        live.sort_by_key(key);
        left.sort_by_key(key);
        assert_eq!(left, live, "the heap holds exactly the live server timers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target over pseudo-random inputs: thousands of schedules.
    #[test]
    fn random_schedules_pass() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut data = Vec::new();
        for _ in 0..4_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.clear();
            let len = 4 + (seed % 800) as usize;
            let mut s = seed;
            for _ in 0..len {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                data.push((s >> 56) as u8);
            }
            platform(&data);
        }
    }
}
