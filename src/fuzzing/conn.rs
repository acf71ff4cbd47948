//! The `conn` fuzz target: a [`Conn`] echoing under an arbitrary schedule,
//! checked after every step against a byte-at-a-time model of SPEC's echo
//! semantics.

use std::time::{Duration, Instant};

use super::Input;
use crate::buffer::{Spares, MIN_ALLOC, OVERSHOOT};
use crate::codec::{FrameError, HEADER_LEN};
use crate::config::Framing;
use crate::conn::{CloseReason, Conn, Limits, READ_ROOM};
use crate::handler::{ConnId, Echo};

/// The largest read the server makes on a stream (its scratch buffer).
const MAX_READ: usize = 64 << 10;

/// The memory bound's constant: `conn.memory() <= max_buffer + max_frame +
/// MEMORY_SLACK`. It covers one read's replies past `max_buffer`
/// ([`READ_ROOM`]), the headroom an output buffer gets when a completed
/// long frame pushes it past its limit ([`OVERSHOOT`]), and the partial
/// frame left by that same read (at most one read, held in at most twice
/// its size or two allocation granules).
pub const MEMORY_SLACK: usize = READ_ROOM + OVERSHOOT + MAX_READ + 2 * MIN_ALLOC;

/// Fuzz target `conn`.
///
/// Input: a mode byte (raw, line, length, or messages: a seqpacket
/// connection, raw), size bytes for `max_frame` and `max_buffer`, idle and
/// drain timeouts (10 ms units; idle 0 is off), then operations, each a
/// byte and its arguments: read a chunk taken from the input, read a large
/// chunk of a repeated pattern, write part of `transmit()`, write all of
/// it, EOF, let time pass (then `handle_timeout`), shutdown, an I/O error
/// or a would-block (nothing). Like the server, it reads (and sees EOF)
/// only while `wants_read()`, at most 64 KiB at a time, and a message
/// longer than `max_frame` goes to `handle_oversized`. At the end it
/// drains everything and delivers EOF, as a well-behaved peer would.
///
/// Checks after every step: the bytes written back plus those pending
/// equal exactly what the echo owes for the bytes read (raw: all of them;
/// line: complete lines, plus the tail at EOF; length: complete frames,
/// a partial one at EOF dropped; everything stops at the first frame
/// error; messages: each message, in order) — after an I/O error or a
/// timeout, what was written is a prefix of it; `interest()`,
/// `wants_read()`, `is_done()`, `poll_timeout()` and `close_reason()`
/// follow from the state, and a done connection stays done; `memory() <=
/// max_buffer + max_frame +` [`MEMORY_SLACK`], and a connection with
/// nothing pending holds no memory at all.
pub fn conn(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte() % 4;
    let limits = Limits {
        framing: match mode {
            1 => Framing::Line,
            2 => Framing::Length,
            _ => Framing::Raw,
        },
        messages: mode == 3,
        max_frame: input.size().max(1),
        max_buffer: input.size().max(1),
        idle_timeout: match input.byte() {
            0 => None,
            b => Some(ticks(b)),
        },
        drain_timeout: ticks(input.byte()),
    };
    // The fake clock: a fixed base plus the offsets the input asks for.
    let now = Instant::now();
    let mut t = Driver {
        conn: Conn::new(&limits, None, now, ()),
        model: Model::new(&limits, now),
        now,
        spares: Spares::default(),
        limits,
        was_done: false,
    };
    t.conn.open(ConnId(0), &t.limits, &mut Echo, &mut t.spares);
    t.check();
    let mut ops = 0;
    while !input.is_empty() && ops < 5_000 {
        ops += 1;
        match input.byte() % 9 {
            0 | 1 => {
                let n = input.size().min(MAX_READ);
                let chunk = input.take(n);
                t.read(chunk);
            }
            2 => {
                let n = (usize::from(input.byte()) + 1) * 256;
                let len = 1 + usize::from(input.byte() % 8);
                let pattern = match input.take(len) {
                    [] => &b"ab\n"[..],
                    p => p,
                };
                let chunk: Vec<u8> = pattern.iter().copied().cycle().take(n).collect();
                t.read(&chunk);
            }
            3 => {
                let n = input.size();
                t.write(Some(n));
            }
            4 => t.flush(),
            5 => t.eof(),
            6 => {
                t.now += ticks(input.byte()) / 2;
                t.conn.handle_timeout(t.now, &t.limits, &mut t.spares);
                t.model.timeout(t.now, &t.limits);
            }
            7 => {
                t.conn.shutdown(t.now);
                t.model.shutdown(t.now);
            }
            _ => {
                if input.byte() == 0xff && !t.model.done() {
                    t.conn.handle_io_error(&mut t.spares);
                    t.model.kill(Reason::Io);
                }
            }
        }
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
}

/// `b` ticks of 10 ms.
fn ticks(b: u8) -> Duration {
    Duration::from_millis(u64::from(b) * 10)
}

/// The connection, its model and the driver's side of the world.
struct Driver {
    conn: Conn<()>,
    model: Model,
    now: Instant,
    spares: Spares,
    limits: Limits,
    /// The connection was done at the last check: it must stay done.
    was_done: bool,
}

impl Driver {
    /// A read of `chunk` (a message on a message socket), if the
    /// connection wants one; an empty read is EOF.
    fn read(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return self.eof();
        }
        if !self.conn.wants_read(&self.limits) {
            return;
        }
        if self.limits.messages && chunk.len() > self.limits.max_frame {
            self.conn.handle_oversized(chunk.len() as u64, &self.limits);
        } else {
            self.conn.handle_read(
                ConnId(0),
                chunk,
                self.now,
                &self.limits,
                &mut Echo,
                &mut self.spares,
            );
        }
        self.model.read(chunk, self.now);
    }

    fn eof(&mut self) {
        if self.conn.wants_read(&self.limits) {
            self.conn
                .handle_eof(ConnId(0), &self.limits, &mut Echo, &mut self.spares);
            self.model.eof();
        }
    }

    /// One write of `transmit()`: `n` bytes of it (a short write, at least
    /// one byte) or all of it; a message is always written whole.
    fn write(&mut self, n: Option<usize>) {
        let data = self.conn.transmit(&self.limits);
        if data.is_empty() {
            return;
        }
        let n = n.map_or(data.len(), |n| 1 + n % data.len());
        if self.limits.messages {
            self.model.written_msgs.push(data.to_vec());
        } else {
            self.model.written.extend_from_slice(&data[..n]);
        }
        self.conn
            .handle_written(n, self.now, &self.limits, &mut self.spares);
        self.model.wrote(self.now);
    }

    /// Writes until nothing is pending, as the server does eagerly.
    fn flush(&mut self) {
        while !self.conn.transmit(&self.limits).is_empty() {
            self.write(None);
            self.check();
        }
    }

    /// A connection closed to input (EOF, frame error, shutdown, killed)
    /// ignores stale events: a read, an EOF, a shutdown or a timeout
    /// delivered anyway change nothing, and a done one stays done.
    fn poke_closed(&mut self) {
        if !self.model.read_done {
            return;
        }
        let before = (
            self.conn.pending(),
            self.conn.memory(),
            self.conn.close_reason(),
            self.conn.interest(),
        );
        let stale = b"stale\n\0\0\0\x01x";
        let (id, limits) = (ConnId(0), &self.limits);
        self.conn
            .handle_read(id, stale, self.now, limits, &mut Echo, &mut self.spares);
        self.conn
            .handle_eof(id, limits, &mut Echo, &mut self.spares);
        if self.model.done() {
            self.conn.shutdown(self.now);
            let later = self.now + Duration::from_secs(1 << 20);
            self.conn.handle_timeout(later, limits, &mut self.spares);
        }
        let after = (
            self.conn.pending(),
            self.conn.memory(),
            self.conn.close_reason(),
            self.conn.interest(),
        );
        assert_eq!(before, after, "stale events on a closed connection");
        self.check();
    }

    fn check(&mut self) {
        let done = self.model.done();
        assert!(done || !self.was_done, "a done connection stays done");
        self.was_done = done;
        let (conn, model, limits) = (&self.conn, &self.model, &self.limits);
        let pending = model.pending();
        assert_eq!(conn.pending(), pending, "pending bytes");
        assert_eq!(conn.is_done(), done, "is_done");
        let wants = conn.interest();
        assert_eq!(wants.read, !done && !model.read_done, "read interest");
        assert_eq!(wants.write, !done && pending > 0, "write interest");
        if done {
            assert!(conn.poll_timeout(limits).is_none(), "no timer when done");
            assert!(
                conn.transmit(limits).is_empty(),
                "nothing to write when done"
            );
        }
        let wants_read = !model.read_done && pending < limits.max_buffer;
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

        // What was written and what is pending is what the echo owes.
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

        let memory = conn.memory();
        let bound = limits.max_buffer + limits.max_frame + MEMORY_SLACK;
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

/// Why the model closed (a frame error's `len` is not modelled: it is how
/// much of the frame the decoder had seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    None,
    Frame,
    PartialAtEof(usize),
    Idle,
    Drain,
    Io,
}

impl Reason {
    fn matches(self, got: Option<CloseReason>, max: usize) -> bool {
        match (self, got) {
            (Reason::None, None) => true,
            (Reason::Frame, Some(CloseReason::Frame(FrameError::TooLarge { len, max: m }))) => {
                m == max && len > max as u64
            }
            (Reason::PartialAtEof(n), Some(CloseReason::PartialAtEof(m))) => n == m,
            (Reason::Idle, Some(CloseReason::Idle)) => true,
            (Reason::Drain, Some(CloseReason::DrainTimeout)) => true,
            (Reason::Io, Some(CloseReason::Io)) => true,
            _ => false,
        }
    }
}

/// SPEC's echo semantics, one byte at a time, and the connection's
/// lifecycle as its docs state it.
#[derive(Debug)]
struct Model {
    framing: Framing,
    messages: bool,
    max_frame: usize,
    /// The partial frame (line, length).
    cur: Vec<u8>,
    /// Stream: every byte the echo owes, in order.
    owed: Vec<u8>,
    owed_msgs: Vec<Vec<u8>>,
    written: Vec<u8>,
    written_msgs: Vec<Vec<u8>>,
    /// No more input is taken (EOF, frame error, shutdown, killed).
    read_done: bool,
    /// Close once flushed, within the drain timeout.
    closing: bool,
    /// Closed at once; output discarded.
    killed: bool,
    frame_error: bool,
    reason: Reason,
    /// Last traffic (or when closing began): the timers run from it.
    active: Instant,
}

impl Model {
    fn new(limits: &Limits, now: Instant) -> Model {
        Model {
            framing: limits.framing,
            messages: limits.messages,
            max_frame: limits.max_frame,
            cur: Vec::new(),
            owed: Vec::new(),
            owed_msgs: Vec::new(),
            written: Vec::new(),
            written_msgs: Vec::new(),
            read_done: false,
            closing: false,
            killed: false,
            frame_error: false,
            reason: Reason::None,
            active: now,
        }
    }

    fn read(&mut self, chunk: &[u8], now: Instant) {
        if self.messages {
            if chunk.len() > self.max_frame {
                return self.frame_error();
            }
            self.active = now;
            self.owed_msgs.push(chunk.to_vec());
            return;
        }
        self.active = now;
        for &b in chunk {
            if !self.byte(b) {
                return self.frame_error();
            }
        }
    }

    /// Takes one byte; false on a frame error.
    fn byte(&mut self, b: u8) -> bool {
        match self.framing {
            Framing::Raw => self.owed.push(b),
            Framing::Line if b == b'\n' => {
                self.cur.push(b);
                self.owed.append(&mut self.cur);
            }
            Framing::Line => {
                if self.cur.len() == self.max_frame {
                    return false;
                }
                self.cur.push(b);
            }
            Framing::Length => {
                self.cur.push(b);
                if self.cur.len() >= HEADER_LEN {
                    let n =
                        u32::from_be_bytes([self.cur[0], self.cur[1], self.cur[2], self.cur[3]]);
                    let n = n as usize;
                    if n > self.max_frame {
                        return false;
                    }
                    if self.cur.len() == HEADER_LEN + n {
                        self.owed.append(&mut self.cur);
                    }
                }
            }
        }
        true
    }

    fn frame_error(&mut self) {
        self.frame_error = true;
        self.read_done = true;
        self.closing = true;
        self.set_reason(Reason::Frame);
    }

    fn eof(&mut self) {
        self.read_done = true;
        match self.framing {
            Framing::Line => self.owed.append(&mut self.cur),
            Framing::Length if !self.cur.is_empty() => {
                self.set_reason(Reason::PartialAtEof(self.cur.len()));
                self.cur.clear();
            }
            _ => {}
        }
    }

    fn wrote(&mut self, now: Instant) {
        if !self.closing {
            self.active = now;
        }
    }

    fn shutdown(&mut self, now: Instant) {
        if !self.closing {
            self.active = now;
        }
        self.read_done = true;
        self.closing = true;
    }

    fn timeout(&mut self, now: Instant, limits: &Limits) {
        if self.deadline(limits).is_some_and(|d| now >= d) {
            let reason = if self.closing {
                Reason::Drain
            } else {
                Reason::Idle
            };
            self.kill(reason);
        }
    }

    fn kill(&mut self, reason: Reason) {
        self.killed = true;
        self.read_done = true;
        self.closing = true;
        self.set_reason(reason);
    }

    fn set_reason(&mut self, reason: Reason) {
        if self.reason == Reason::None {
            self.reason = reason;
        }
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.done() {
            None
        } else if self.closing {
            Some(self.active + limits.drain_timeout)
        } else {
            limits.idle_timeout.map(|idle| self.active + idle)
        }
    }

    fn owed_len(&self) -> usize {
        if self.messages {
            self.owed_msgs.len()
        } else {
            self.owed.len()
        }
    }

    fn written_len(&self) -> usize {
        if self.messages {
            self.written_msgs.len()
        } else {
            self.written.len()
        }
    }

    /// Bytes of output held: stream bytes, or message records (a `u32`
    /// length and the bytes).
    fn pending(&self) -> usize {
        if self.killed {
            0
        } else if self.messages {
            let rest = &self.owed_msgs[self.written_msgs.len()..];
            rest.iter().map(|m| 4 + m.len()).sum()
        } else {
            self.owed.len() - self.written.len()
        }
    }

    fn done(&self) -> bool {
        self.killed || (self.read_done && self.pending() == 0)
    }
}
