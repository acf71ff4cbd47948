//! The `conn` fuzz target: a [`Conn`] under an arbitrary schedule, driving
//! the built-in [`Echo`] or a scripted handler (`script.rs`: several framed
//! or verbatim replies per frame, empty ones, a greeting, `Context::close`),
//! checked after every step against a byte-at-a-time model (`model.rs`) of
//! SPEC's framings, of what the handler owes and of the lifecycle.

use std::time::{Duration, Instant};

use super::Input;
use crate::buffer::{Spares, MIN_ALLOC, OVERSHOOT, READ_SIZE};
use crate::codec::HEADER_LEN;
use crate::config::Framing;
use crate::conn::{Conn, Limits, Tally, READ_ROOM};
use crate::ctl::{Framer, World};
use crate::handler::{ConnId, Echo, Handler};

mod model;
mod script;

use model::{Model, Reason, Replier, RECORD_HEAD};
use script::{Script, Scripted, Seen, GREETING};

/// The largest read the server makes on a stream (its scratch buffer).
const MAX_READ: usize = READ_SIZE;

/// The memory bound's constant for [`Echo`]:
/// `conn.memory() <= max_buffer + max_frame + MEMORY_SLACK`. It covers one read's replies past
/// `max_buffer` ([`READ_ROOM`]), the headroom an output buffer gets when a
/// completed long frame pushes it past its limit ([`OVERSHOOT`]), and the
/// partial frame left by that same read (at most one read, held in at most
/// twice its size or two allocation granules).
pub const MEMORY_SLACK: usize = READ_ROOM + OVERSHOOT + MAX_READ + 2 * MIN_ALLOC;

/// Fuzz target `conn`.
///
/// Input: a mode byte, size bytes for `max_frame` and `max_buffer`, idle
/// and drain timeouts (10 ms units; idle 0 is off), then — unless the
/// handler is [`Echo`] — three bytes of script, then operations. The mode
/// byte's low two bits pick the framing (raw, line, length, or messages: a
/// seqpacket connection, raw); [`Echo`] runs when the byte is below 4 or
/// at least 128 (where the seeds of the echo-only format cluster, so they
/// still replay as they were), the script otherwise. Each operation is a
/// byte and its arguments: read a chunk taken from the input, read a
/// large chunk of a repeated pattern, write part of the output, write all
/// of it, EOF, let time pass (then `handle_timeout`), shutdown, an I/O
/// error or a would-block (nothing). Like the server, it reads (and sees
/// EOF) only while `wants_read()`, at most 64 KiB at a time, a message
/// longer than `max_frame` goes to `handle_oversized`, and it writes while
/// `pending() > 0` (an empty message is written like any other). At the
/// end it drains everything, delivers EOF and calls `finish`.
///
/// Checks after every step: the bytes written plus those pending equal
/// exactly what the handler owes for the frames the model decoded (echo:
/// each frame's wire form; script: its replies framed by the connection's
/// framing, `\n` appended on line, a big-endian length on length, one
/// message each on seqpacket, verbatim on raw and for `send_wire`), in
/// order, nothing owed for frames after the handler's `close` — after an
/// I/O error or a timeout, what was written is a prefix of it; each call's
/// [`Tally`] counts the frames and replies the model counted;
/// `interest()`, `wants_read()`, `is_done()`, `poll_timeout()` and
/// `close_reason()` follow from the state, and a done connection stays
/// done; output never exceeds `max_buffer` by more than one read's
/// replies; `memory()` stays within `memory_bound`, and a connection
/// with nothing pending holds no memory at all. At the end, the script's
/// `close` ran exactly once, with the final state.
pub fn conn(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let limits = limits(mode, &mut input);
    if !(4..0x80).contains(&mode) {
        run(&mut input, limits, Echo, Replier::Echo);
        return;
    }
    let script = Script::from_input(&mut input);
    let replier = Replier::Script(script);
    let (handler, model) = run(&mut input, limits, Scripted::new(script), replier);
    let last = Seen {
        frames: model.frames,
        payload: model.payload,
        greeted: script.greeting.is_some(),
        closed: model.handler_closed,
    };
    assert_eq!(
        handler.closes,
        [(last, ConnId { key: 0, serial: 1 }, None)],
        "close once, with the final state"
    );
}

/// The limits the input asks for; `mode` picks the framing.
fn limits(mode: u8, input: &mut Input<'_>) -> Limits {
    Limits {
        framing: match mode % 4 {
            1 => Framing::Line,
            2 => Framing::Length,
            _ => Framing::Raw,
        },
        messages: mode % 4 == 3,
        max_frame: input.size().max(1),
        max_buffer: input.size().max(1),
        idle_timeout: match input.byte() {
            0 => None,
            b => Some(ticks(b)),
        },
        drain_timeout: ticks(input.byte()),
        max_fds: 0,
    }
}

/// Runs the operations in `input` on a connection with `handler`, then
/// drains it and finishes it; hands back the handler and the model.
fn run<H: Handler>(
    input: &mut Input<'_>,
    limits: Limits,
    handler: H,
    replier: Replier,
) -> (H, Model) {
    // The fake clock: a fixed base plus the offsets the input asks for.
    let now = Instant::now();
    let mut world = World::new(Framer::new(&limits));
    let id = world.peers.open(0);
    let (mut handler, mut spares) = (handler, Spares::default());
    let ctl = &mut world.ctl(now, None);
    let (conn, tally) = Conn::open(id, None, None, now, &limits, &mut handler, &mut spares, ctl);
    let mut t = Driver {
        conn,
        id,
        handler,
        model: Model::new(&limits, replier, now),
        now,
        spares,
        world,
        limits,
        was_done: false,
    };
    t.model.open();
    t.check_tally(tally, (0, 0));
    t.check();
    let mut ops = 0;
    while !input.is_empty() && ops < 5_000 {
        ops += 1;
        t.op(input);
        t.check();
        t.poke_closed();
    }
    // A well-behaved peer: drains everything, then shuts down its side.
    t.flush();
    t.eof();
    t.flush();
    t.check();
    assert!(t.conn.is_done(), "a drained connection after EOF is done");
    if !t.model.killed {
        assert_eq!(t.model.written_len(), t.model.owed_len(), "nothing lost");
    }
    let Driver {
        conn,
        id,
        mut handler,
        model,
        mut spares,
        mut world,
        now,
        ..
    } = t;
    conn.finish(id, &mut handler, &mut spares, &mut world.ctl(now, None));
    (handler, model)
}

/// `b` ticks of 10 ms.
fn ticks(b: u8) -> Duration {
    Duration::from_millis(u64::from(b) * 10)
}

/// The most bytes of replies one input event (a read, or EOF's line tail)
/// may queue when each frame gets at most `replies` replies: every frame's
/// replies are at most `replies` times its wire form (a line's `\n` and a
/// length frame's header pay for the reply's own), and one event's frames
/// span at most the read and a partial frame before it; a message or a
/// tail adds its record head or `\n`.
pub fn burst(limits: &Limits, replies: usize) -> usize {
    replies * (MAX_READ + limits.max_frame + HEADER_LEN + RECORD_HEAD)
}

/// The bound on `memory()`. [`Echo`]'s is `max_buffer + max_frame +`
/// [`MEMORY_SLACK`]. A handler that sends several replies per frame can
/// take the output past its growth limit ([`Limits::out_limit`]) by a
/// whole [`burst`]; past the limit a buffer grows by what it needs plus
/// the overshoot so far, so its capacity may reach twice that excess.
pub fn memory_bound(limits: &Limits, replies: usize) -> usize {
    let echo = limits.max_buffer + limits.max_frame + MEMORY_SLACK;
    if replies <= 1 {
        return echo;
    }
    echo + 2 * burst(limits, replies) + GREETING.len() + RECORD_HEAD
}

/// The connection, its handler, its model and the driver's side of the
/// world.
struct Driver<H: Handler> {
    conn: Conn<H::State>,
    id: ConnId,
    handler: H,
    model: Model,
    now: Instant,
    spares: Spares,
    /// What the handler's Ctl works on.
    world: World,
    limits: Limits,
    /// The connection was done at the last check: it must stay done.
    was_done: bool,
}

impl<H: Handler> Driver<H> {
    /// One operation from `input`.
    fn op(&mut self, input: &mut Input<'_>) {
        match input.byte() % 9 {
            0 | 1 => {
                let n = input.size().min(MAX_READ);
                let chunk = input.take(n);
                self.read(chunk);
            }
            2 => {
                let n = (usize::from(input.byte()) + 1) * 256;
                let len = 1 + usize::from(input.byte() % 8);
                let pattern = match input.take(len) {
                    [] => &b"ab\n"[..],
                    p => p,
                };
                let chunk: Vec<u8> = pattern.iter().copied().cycle().take(n).collect();
                self.read(&chunk);
            }
            3 => {
                let n = input.size();
                self.write(Some(n));
            }
            4 => self.flush(),
            5 => self.eof(),
            6 => {
                self.now += ticks(input.byte()) / 2;
                self.conn
                    .handle_timeout(self.now, &self.limits, &mut self.spares);
                self.model.timeout(self.now, &self.limits);
            }
            7 => {
                self.conn.shutdown(self.now);
                self.model.shutdown(self.now);
            }
            _ => {
                if input.byte() == 0xff && !self.model.done() {
                    self.conn.handle_io_error(&mut self.spares);
                    self.model.kill(Reason::Io);
                }
            }
        }
    }

    /// A read of `chunk` (a message on a message socket), if the
    /// connection wants one; an empty read is EOF.
    fn read(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return self.eof();
        }
        if !self.conn.wants_read(&self.limits) {
            return;
        }
        let before = self.counts();
        let tally = if self.limits.messages && chunk.len() > self.limits.max_frame {
            self.conn.handle_oversized(chunk.len() as u64, &self.limits);
            Tally::default()
        } else {
            let (id, now, limits) = (self.id, self.now, &self.limits);
            let (handler, spares) = (&mut self.handler, &mut self.spares);
            let ctl = &mut self.world.ctl(now, None);
            self.conn
                .handle_read(id, chunk, now, limits, handler, spares, ctl)
        };
        self.model.read(chunk, self.now);
        if let Some(piece) = tally.through.clone() {
            self.write_through(&chunk[piece]);
        }
        self.check_tally(tally, before);
    }

    /// The driver writes the write-through piece of a read straight from
    /// the read: all of it, part of it, or (the socket full) none, picked
    /// by its length so every case comes up; the rest is kept.
    fn write_through(&mut self, data: &[u8]) {
        assert!(!data.is_empty() || self.limits.messages, "an empty piece");
        let written = match (data.len() % 3, self.limits.messages) {
            (0, _) => None,
            (1, _) | (_, true) => Some(data.len()),
            _ => Some(1 + data.len() / 2),
        };
        match written {
            Some(_) if self.limits.messages => self.model.written_msgs.push(data.to_vec()),
            Some(n) => self.model.written.extend_from_slice(&data[..n]),
            None => {}
        }
        let (now, limits) = (self.now, &self.limits);
        self.conn
            .handle_through(data, written, now, limits, &mut self.spares);
        if written.is_some() {
            self.model.wrote(now);
        }
    }

    fn eof(&mut self) {
        if self.conn.wants_read(&self.limits) {
            let before = self.counts();
            let ctl = &mut self.world.ctl(self.now, None);
            let tally = self.conn.handle_eof(
                self.id,
                &self.limits,
                &mut self.handler,
                &mut self.spares,
                ctl,
            );
            self.model.eof();
            self.check_tally(tally, before);
        }
    }

    /// One write of `transmit()`: `n` bytes of it (a short write, at least
    /// one byte) or all of it; a message is always written whole, an
    /// empty one too.
    fn write(&mut self, n: Option<usize>) {
        if self.conn.pending() == 0 {
            return;
        }
        let data = self.conn.transmit(&self.limits);
        let n = if self.limits.messages {
            self.model.written_msgs.push(data.to_vec());
            data.len()
        } else {
            let n = n.map_or(data.len(), |n| 1 + n % data.len());
            self.model.written.extend_from_slice(&data[..n]);
            n
        };
        self.conn
            .handle_written(n, self.now, &self.limits, &mut self.spares);
        self.model.wrote(self.now);
    }

    /// Writes until nothing is pending, as the server does eagerly.
    fn flush(&mut self) {
        while self.conn.pending() > 0 {
            self.write(None);
            self.check();
        }
    }

    /// Frames delivered and replies sent, as the model counts them.
    fn counts(&self) -> (u64, u64) {
        (self.model.frames, self.model.replies)
    }

    /// The connection's tally for one call is what the model counted.
    fn check_tally(&self, tally: Tally, (frames, replies): (u64, u64)) {
        let model = Tally {
            frames_in: self.model.frames - frames,
            frames_out: self.model.replies - replies,
            through: tally.through.clone(),
        };
        assert_eq!(tally, model, "frames and replies of one call");
    }

    /// A connection closed to input (EOF, frame error, handler close,
    /// shutdown, killed) ignores stale events: a read, an EOF, a shutdown
    /// or a timeout delivered anyway change nothing and reach no handler,
    /// and a done one stays done.
    fn poke_closed(&mut self) {
        if !self.model.read_done {
            return;
        }
        let before = self.observed();
        let stale = b"stale\n\0\0\0\x01x";
        let (id, now, limits) = (self.id, self.now, &self.limits);
        let (handler, spares) = (&mut self.handler, &mut self.spares);
        let ctl = &mut self.world.ctl(now, None);
        let read = self
            .conn
            .handle_read(id, stale, now, limits, handler, spares, ctl);
        let eof = self.conn.handle_eof(id, limits, handler, spares, ctl);
        assert_eq!((read, eof), Default::default(), "no frames after close");
        if self.model.done() {
            self.conn.shutdown(now);
            let later = now + Duration::from_secs(1 << 20);
            self.conn.handle_timeout(later, limits, spares);
        }
        assert_eq!(
            before,
            self.observed(),
            "stale events on a closed connection"
        );
        self.check();
    }

    /// What a driver can see of the connection.
    fn observed(&self) -> impl PartialEq + std::fmt::Debug {
        (
            self.conn.pending(),
            self.conn.memory(),
            self.conn.close_reason(),
            self.conn.interest(&self.limits),
        )
    }

    fn check(&mut self) {
        let done = self.model.done();
        assert!(done || !self.was_done, "a done connection stays done");
        self.was_done = done;
        self.check_state();
        self.check_output();
        self.check_memory();
    }

    /// Interest, readiness to read, deadline and close reason follow from
    /// the model's state.
    fn check_state(&self) {
        let (conn, model, limits) = (&self.conn, &self.model, &self.limits);
        let done = model.done();
        let pending = model.pending();
        assert_eq!(conn.pending(), pending, "pending bytes");
        assert_eq!(conn.is_done(), done, "is_done");
        let wants = conn.interest(limits);
        let wants_read = !model.read_done && pending < limits.max_buffer;
        // Level-triggered (message sockets), READABLE follows the wish to
        // read; edge-triggered, it stays on while backpressured.
        let read = match limits.level_triggered() {
            true => wants_read,
            false => !done && !model.read_done,
        };
        assert_eq!(wants.read, read, "read interest");
        assert_eq!(wants.write, !done && pending > 0, "write interest");
        if done {
            assert!(conn.poll_timeout(limits).is_none(), "no timer when done");
            assert!(
                conn.transmit(limits).is_empty(),
                "nothing to write when done"
            );
        }
        assert_eq!(conn.wants_read(limits), wants_read, "wants_read");
        assert_eq!(
            conn.poll_timeout(limits),
            model.deadline(limits),
            "deadline"
        );
        assert!(
            model.reason.matches(conn.close_reason(), limits.max_frame),
            "close reason {:?}, model {:?}",
            conn.close_reason(),
            model.reason
        );
    }

    /// What was written and what is pending is what the handler owes.
    fn check_output(&self) {
        let (conn, model, limits) = (&self.conn, &self.model, &self.limits);
        let transmit = conn.transmit(limits);
        if limits.messages {
            let k = model.written_msgs.len();
            assert_eq!(
                model.written_msgs,
                model.owed_msgs[..k],
                "messages in order"
            );
            match model.owed_msgs.get(k) {
                Some(next) if !model.killed => assert_eq!(transmit, &next[..]),
                _ => assert!(transmit.is_empty()),
            }
        } else {
            let owed = &model.owed[..];
            assert!(owed.starts_with(&model.written), "written is what was owed");
            if model.killed {
                assert!(transmit.is_empty());
            } else {
                assert_eq!(
                    transmit,
                    &owed[model.written.len()..],
                    "pending is the rest"
                );
            }
        }
    }

    /// Output stops growing at `max_buffer` (but for one event's replies);
    /// memory stays bounded, and is given back when nothing is held.
    fn check_memory(&self) {
        let (conn, model, limits) = (&self.conn, &self.model, &self.limits);
        let replies = model.max_replies();
        let greeting = GREETING.len() + RECORD_HEAD;
        let most = limits.max_buffer.max(greeting) + burst(limits, replies);
        let pending = conn.pending();
        assert!(pending <= most, "output {pending} > {most}");
        let memory = conn.memory();
        let bound = memory_bound(limits, replies);
        assert!(memory <= bound, "memory {memory} > {bound}");
        // A partial frame is held until it completes or input ends; after
        // a frame error it can never complete and is freed at once.
        let holds_partial = !model.cur.is_empty() && !model.frame_error;
        if pending == 0 && !holds_partial {
            assert_eq!(memory, 0, "nothing pending, no memory");
        }
        if model.killed {
            assert_eq!(memory, 0, "a killed connection holds nothing");
        }
    }
}
