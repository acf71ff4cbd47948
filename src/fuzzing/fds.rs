//! The `fds` fuzz target: a [`Conn`] running [`Echo`] with real
//! descriptors attached to its reads (`handle_fds`), checked against a
//! model of SPEC's attachment rule and of each descriptor's fate: sent
//! back once, at the right place, or closed.
//!
//! Each descriptor is one end of a fresh `UnixStream::pair()`; the driver
//! keeps the other end, nonblocking. The passed end's identity is its
//! inode. A kept end reads EOF (`Ok(0)`) exactly when every copy of the
//! passed end is closed, so the check needs no view of the process's
//! descriptor table (which threads running other targets change).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::Input;
use crate::buffer::{Spares, READ_SIZE};
use crate::codec::HEADER_LEN;
use crate::config::Framing;
use crate::conn::{CloseReason, Conn, Limits};
use crate::ctl::{Framer, World};
use crate::handler::{ConnId, Echo};

/// The largest read the server makes on a stream.
const MAX_READ: usize = READ_SIZE;

/// Descriptors made per input, at most: each costs a few system calls.
const MAX_MADE: usize = 64;

/// Operations per input, at most.
const MAX_OPS: usize = 400;

/// Bytes a message record takes besides the message (its length).
const RECORD_HEAD: usize = 4;

/// Fuzz target `fds`.
///
/// Input: a mode byte (low two bits: raw, line, length, or messages — a
/// seqpacket connection), a byte for `max_fds` (0 to 5, or 253, the
/// kernel's limit, for a byte of 0xf0 and up), size bytes for
/// `max_frame` and `max_buffer`, then operations: read a chunk from the
/// input, with or without descriptors (a count and, rarely, the `lost`
/// flag); write part of the output or all of it; EOF; shutdown; an I/O
/// error; descriptors handed to a connection closed to input. Like the
/// server, it reads only while `wants_read()`, calls `handle_fds` before
/// the read they came with, sends a message longer than `max_frame` to
/// `handle_oversized`, and takes an empty read (with descriptors: only on
/// a message socket, the one kind that can carry them without a byte) as
/// EOF. At most 64 descriptors and 400 operations per input. At the end it
/// drains everything, delivers EOF and calls `finish`.
///
/// Checks: every write's `transmit_fds()` is the model's next bytes (a
/// stream's stop short of the next attached set) with the set the model
/// places at its head: on a stream, the descriptors of the reads whose
/// first byte lies in a frame go with the first byte of that frame's echo
/// (raw: of that read's echo), on seqpacket with that message's echo, in
/// the order they came; the sets written, with their places, are a prefix
/// of the model's and, at the end, all of them (or, after an I/O error,
/// the prefix written before it). A frame whose reads bring more than
/// `max_fds`, or a read flagged `lost`, closes with
/// [`CloseReason::Descriptors`]; that frame's descriptors, those of a
/// frame cut by a frame error, those handed over after the input closed,
/// those written (this side's copies) and those held when the connection
/// is killed are closed at once; the rest at `finish` at the latest.
/// After `finish` every descriptor is closed; as a moved `OwnedFd` closes
/// once, that is exactly once. `pending()`, `fds_pending()`,
/// `wants_read()` (which stops at `max_fds` descriptors held for output),
/// `is_done()` and `close_reason()` follow from the model.
pub fn fds(data: &[u8]) {
    drive(data);
}

/// What one run did: the descriptors made, the sets written, and the
/// close reason.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    made: usize,
    sets: usize,
    reason: Option<CloseReason>,
}

fn drive(data: &[u8]) -> Summary {
    let mut input = Input::new(data);
    let mode = input.byte();
    let max_fds = match input.byte() {
        b if b >= 0xf0 => 253,
        b => usize::from(b % 6),
    };
    let limits = Limits {
        framing: match mode % 4 {
            1 => Framing::Line,
            2 => Framing::Length,
            _ => Framing::Raw,
        },
        messages: mode % 4 == 3,
        max_frame: input.size().max(1),
        max_buffer: input.size().max(1),
        idle_timeout: None,
        drain_timeout: Duration::from_secs(1),
        max_fds,
    };
    let mut t = Driver::new(limits);
    t.check();
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        t.op(&mut input);
        t.check();
    }
    t.end()
}

/// Why the model closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Frame,
    PartialAtEof(usize),
    Descriptors,
    Io,
}

impl Reason {
    fn matches(this: Option<Reason>, got: Option<CloseReason>) -> bool {
        matches!(
            (this, got),
            (None, None)
                | (Some(Reason::Frame), Some(CloseReason::Frame(_)))
                | (Some(Reason::Descriptors), Some(CloseReason::Descriptors))
                | (Some(Reason::Io), Some(CloseReason::Io))
        ) || matches!(
            (this, got),
            (Some(Reason::PartialAtEof(n)), Some(CloseReason::PartialAtEof(m))) if n == m
        )
    }
}

/// The model: SPEC's framings byte by byte, the echo they owe, and where
/// the descriptors (by index of creation) go. Shares no code with the
/// implementation.
#[derive(Debug)]
struct Model {
    framing: Framing,
    messages: bool,
    max_frame: usize,
    max_fds: usize,
    max_buffer: usize,
    /// The partial frame (line, length).
    cur: Vec<u8>,
    /// The descriptors of the reads whose first byte is in the partial
    /// frame (or, with none, in the next one).
    cur_fds: Vec<usize>,
    /// Stream: the echo owed, all of it; messages: each message owed.
    owed: Vec<u8>,
    owed_msgs: Vec<Vec<u8>>,
    /// Bytes (stream) or messages written.
    written: usize,
    /// `(place, descriptors)`: each set at the output byte (stream) or
    /// message (seqpacket) it goes with, in order.
    expected: Vec<(usize, Vec<usize>)>,
    /// No more input is taken.
    read_done: bool,
    /// Output discarded.
    killed: bool,
    reason: Option<Reason>,
}

impl Model {
    fn new(limits: &Limits) -> Model {
        Model {
            framing: limits.framing,
            messages: limits.messages,
            max_frame: limits.max_frame,
            max_fds: limits.max_fds,
            max_buffer: limits.max_buffer,
            cur: Vec::new(),
            cur_fds: Vec::new(),
            owed: Vec::new(),
            owed_msgs: Vec::new(),
            written: 0,
            expected: Vec::new(),
            read_done: false,
            killed: false,
            reason: None,
        }
    }

    fn set_reason(&mut self, reason: Reason) {
        self.reason.get_or_insert(reason);
    }

    /// Descriptors came with the next read: those that must be closed
    /// now.
    fn fds(&mut self, new: Vec<usize>, lost: bool) -> Vec<usize> {
        if self.read_done {
            return new;
        }
        self.cur_fds.extend(new);
        if lost || self.cur_fds.len() > self.max_fds {
            self.read_done = true;
            self.set_reason(Reason::Descriptors);
            return std::mem::take(&mut self.cur_fds);
        }
        Vec::new()
    }

    /// A read of `chunk` (not oversized); returns the descriptors that
    /// must be closed now.
    fn read(&mut self, chunk: &[u8]) -> Vec<usize> {
        if self.read_done {
            return Vec::new();
        }
        if self.messages || self.framing == Framing::Raw {
            self.frame(chunk);
            return Vec::new();
        }
        for &b in chunk {
            self.cur.push(b);
            let ok = match self.framing {
                Framing::Line if b == b'\n' => {
                    let wire = std::mem::take(&mut self.cur);
                    self.frame(&wire);
                    true
                }
                Framing::Line => self.cur.len() <= self.max_frame,
                _ if self.cur.len() < HEADER_LEN => true,
                _ => {
                    let head = [self.cur[0], self.cur[1], self.cur[2], self.cur[3]];
                    let n = u32::from_be_bytes(head) as usize;
                    if n <= self.max_frame && self.cur.len() == HEADER_LEN + n {
                        let wire = std::mem::take(&mut self.cur);
                        self.frame(&wire);
                    }
                    n <= self.max_frame
                }
            };
            if !ok {
                // The partial frame never completes: its descriptors go.
                self.read_done = true;
                self.set_reason(Reason::Frame);
                return std::mem::take(&mut self.cur_fds);
            }
        }
        Vec::new()
    }

    /// A message longer than `max_frame`.
    fn oversized(&mut self) {
        self.read_done = true;
        self.set_reason(Reason::Frame);
    }

    /// One frame echoed, with the descriptors waiting for it.
    fn frame(&mut self, wire: &[u8]) {
        let place = if self.messages {
            self.owed_msgs.push(wire.to_vec());
            self.owed_msgs.len() - 1
        } else {
            self.owed.extend_from_slice(wire);
            self.owed.len() - wire.len()
        };
        if !self.cur_fds.is_empty() {
            self.expected
                .push((place, std::mem::take(&mut self.cur_fds)));
        }
    }

    fn eof(&mut self) {
        if self.read_done {
            return;
        }
        self.read_done = true;
        match self.framing {
            Framing::Line if !self.cur.is_empty() => {
                let tail = std::mem::take(&mut self.cur);
                self.frame(&tail);
            }
            Framing::Length if !self.cur.is_empty() => {
                self.set_reason(Reason::PartialAtEof(self.cur.len()));
            }
            _ => {}
        }
    }

    fn shutdown(&mut self) {
        self.read_done = true;
    }

    /// Killed: the descriptors attached to unsent output and those
    /// waiting for a frame must be closed now.
    fn kill(&mut self) -> Vec<usize> {
        self.killed = true;
        self.read_done = true;
        self.set_reason(Reason::Io);
        let written = self.sets_written();
        let mut gone: Vec<usize> = self
            .expected
            .drain(written..)
            .flat_map(|(_, set)| set)
            .collect();
        gone.append(&mut self.cur_fds);
        gone
    }

    /// How many of the expected sets have been written.
    fn sets_written(&self) -> usize {
        self.expected
            .iter()
            .take_while(|(place, _)| *place < self.written)
            .count()
    }

    /// The set that goes with the next write, if any.
    fn head_set(&self) -> Option<&[usize]> {
        match self.expected.get(self.sets_written()) {
            Some((place, set)) if *place == self.written => Some(set),
            _ => None,
        }
    }

    /// Where the next write must stop (a stream's next attached set).
    fn run_end(&self) -> usize {
        self.expected
            .iter()
            .map(|(place, _)| *place)
            .find(|&place| place > self.written)
            .unwrap_or(self.owed.len())
    }

    fn pending(&self) -> usize {
        if self.killed {
            0
        } else if self.messages {
            let rest = &self.owed_msgs[self.written..];
            rest.iter().map(|m| RECORD_HEAD + m.len()).sum()
        } else {
            self.owed.len() - self.written
        }
    }

    fn fds_pending(&self) -> usize {
        let written = self.sets_written();
        self.expected[written..].iter().map(|(_, s)| s.len()).sum()
    }

    fn wants_read(&self) -> bool {
        !self.read_done
            && self.pending() < self.max_buffer
            && (self.max_fds == 0 || self.fds_pending() < self.max_fds)
    }

    fn done(&self) -> bool {
        self.killed || (self.read_done && self.pending() == 0)
    }
}

/// A descriptor made for the connection: the end kept, and the inode of
/// the end passed.
struct Made {
    kept: UnixStream,
    inode: u64,
}

struct Driver {
    conn: Conn<()>,
    id: ConnId,
    handler: Echo,
    model: Model,
    now: Instant,
    spares: Spares,
    world: World,
    limits: Limits,
    made: Vec<Made>,
    /// `(place, descriptors)` as written.
    sent: Vec<(usize, Vec<usize>)>,
}

impl Driver {
    fn new(limits: Limits) -> Driver {
        let now = Instant::now();
        let mut world = World::new(Framer::new(&limits));
        let id = world.peers.open(0);
        let (mut handler, mut spares) = (Echo, Spares::default());
        let ctl = &mut world.ctl(now, None);
        let (conn, _) = Conn::open(id, None, None, now, &limits, &mut handler, &mut spares, ctl);
        Driver {
            conn,
            id,
            handler,
            model: Model::new(&limits),
            now,
            spares,
            world,
            limits,
            made: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// One operation from `input`.
    fn op(&mut self, input: &mut Input<'_>) {
        match input.byte() % 10 {
            0..=2 => {
                let n = input.size().min(MAX_READ);
                let chunk = input.take(n);
                self.read(chunk, 0, false);
            }
            3..=5 => {
                let b = input.byte();
                let (count, lost) = (usize::from(b & 0x07), b >= 0xf0);
                let n = input.size().min(MAX_READ);
                let chunk = input.take(n);
                self.read(chunk, count, lost);
            }
            6 => {
                let n = input.size();
                self.write(Some(n));
            }
            7 => self.flush(),
            8 => match input.byte() % 4 {
                0 => self.eof(),
                1 => {
                    self.conn.shutdown(self.now);
                    self.model.shutdown();
                }
                2 => self.stale(),
                _ => {
                    if input.byte() == 0xff && !self.model.done() {
                        self.conn.handle_io_error(&mut self.spares);
                        let gone = self.model.kill();
                        self.closed(&gone, "held when the connection was killed");
                    }
                }
            },
            _ => self.eof(),
        }
    }

    /// Makes up to `count` descriptors (within the budget): the passed
    /// ends and their indices.
    fn make(&mut self, count: usize) -> (Vec<OwnedFd>, Vec<usize>) {
        let count = count.min(MAX_MADE - self.made.len());
        let mut fds = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let (kept, passed) = UnixStream::pair().expect("socketpair");
            kept.set_nonblocking(true).expect("nonblocking");
            let passed = OwnedFd::from(passed);
            ids.push(self.made.len());
            self.made.push(Made {
                kept,
                inode: inode(&passed),
            });
            fds.push(passed);
        }
        (fds, ids)
    }

    /// The index of a descriptor the connection hands back.
    fn index(&self, fd: &OwnedFd) -> usize {
        let ino = inode(fd);
        self.made
            .iter()
            .position(|m| m.inode == ino)
            .expect("a descriptor the driver made")
    }

    /// Every copy of these descriptors is closed.
    fn closed(&self, ids: &[usize], why: &str) {
        for &i in ids {
            assert_closed(&self.made[i].kept, i, why);
        }
    }

    /// A read of `chunk` (a message on a message socket) with `count`
    /// descriptors, if the connection wants one; an empty read is EOF.
    fn read(&mut self, chunk: &[u8], count: usize, lost: bool) {
        if !self.conn.wants_read(&self.limits) {
            return;
        }
        // Only a message socket carries descriptors without a byte.
        let count = if chunk.is_empty() && !self.limits.messages {
            0
        } else {
            count
        };
        let lost = lost && (!chunk.is_empty() || self.limits.messages);
        if count > 0 || lost {
            let (mut fds, ids) = self.make(count);
            self.conn.handle_fds(&mut fds, lost, &self.limits);
            assert!(fds.is_empty(), "handle_fds takes them all");
            let gone = self.model.fds(ids, lost);
            self.closed(&gone, "after a descriptor violation");
        }
        if chunk.is_empty() {
            return self.eof_now();
        }
        if self.limits.messages && chunk.len() > self.limits.max_frame {
            self.conn.handle_oversized(chunk.len() as u64, &self.limits);
            self.model.oversized();
            return;
        }
        let (id, now, limits) = (self.id, self.now, &self.limits);
        let (handler, spares) = (&mut self.handler, &mut self.spares);
        let ctl = &mut self.world.ctl(now, None);
        let tally = self
            .conn
            .handle_read(id, chunk, now, limits, handler, spares, ctl);
        if let Some(piece) = tally.through {
            // Not written through here: kept as output, written as the rest.
            self.conn
                .handle_through(&chunk[piece], None, now, limits, spares);
        }
        let gone = self.model.read(chunk);
        self.closed(&gone, "their frame broke max_frame");
    }

    /// EOF, if the connection wants to read.
    fn eof(&mut self) {
        if self.conn.wants_read(&self.limits) {
            self.eof_now();
        }
    }

    fn eof_now(&mut self) {
        let ctl = &mut self.world.ctl(self.now, None);
        self.conn.handle_eof(
            self.id,
            &self.limits,
            &mut self.handler,
            &mut self.spares,
            ctl,
        );
        self.model.eof();
    }

    /// Descriptors handed to a connection closed to input (a stale read
    /// event) are closed at once and change nothing.
    fn stale(&mut self) {
        if !self.model.read_done {
            return;
        }
        let before = (
            self.conn.pending(),
            self.conn.fds_pending(),
            self.conn.close_reason(),
        );
        let (mut fds, ids) = self.make(1);
        self.conn.handle_fds(&mut fds, false, &self.limits);
        assert!(fds.is_empty(), "handle_fds takes them all");
        let gone = self.model.fds(ids, false);
        self.closed(&gone, "handed over after the input closed");
        let after = (
            self.conn.pending(),
            self.conn.fds_pending(),
            self.conn.close_reason(),
        );
        assert_eq!(before, after, "stale descriptors change nothing");
    }

    /// One write of `transmit_fds()`: `n` bytes of it (a short write, at
    /// least one byte) or all of it; a message is written whole.
    fn write(&mut self, n: Option<usize>) {
        if self.conn.pending() == 0 {
            return;
        }
        let (data, fds) = self.conn.transmit_fds(&self.limits);
        let ids: Vec<usize> = fds.iter().map(|fd| self.index(fd)).collect();
        let model = &self.model;
        let expect_ids = model.head_set().unwrap_or(&[]);
        assert_eq!(
            ids, expect_ids,
            "descriptors at output place {}",
            model.written
        );
        let n = if self.limits.messages {
            assert_eq!(data, &model.owed_msgs[model.written][..], "next message");
            data.len()
        } else {
            let end = model.run_end();
            assert_eq!(
                data,
                &model.owed[model.written..end],
                "next bytes, up to the next attached set"
            );
            n.map_or(data.len(), |n| 1 + n % data.len())
        };
        if !ids.is_empty() {
            self.sent.push((self.model.written, ids.clone()));
        }
        self.conn
            .handle_written(n, self.now, &self.limits, &mut self.spares);
        self.model.written += if self.limits.messages { 1 } else { n };
        let k = self.sent.len();
        assert_eq!(
            Some(&self.sent[..]),
            self.model.expected.get(..k),
            "sets written in order"
        );
        self.closed(&ids, "written (this side's copies)");
    }

    /// Writes until nothing is pending, as the server does eagerly.
    fn flush(&mut self) {
        while self.conn.pending() > 0 {
            self.write(None);
            self.check();
        }
    }

    fn check(&self) {
        let (conn, model, limits) = (&self.conn, &self.model, &self.limits);
        assert_eq!(conn.pending(), model.pending(), "pending bytes");
        assert_eq!(conn.fds_pending(), model.fds_pending(), "fds_pending");
        assert_eq!(conn.wants_read(limits), model.wants_read(), "wants_read");
        assert_eq!(conn.is_done(), model.done(), "is_done");
        assert!(
            Reason::matches(model.reason, conn.close_reason()),
            "close reason {:?}, model {:?}",
            conn.close_reason(),
            model.reason
        );
    }

    /// A well-behaved peer drains everything and shuts down its side;
    /// then the connection finishes and every descriptor is closed.
    fn end(mut self) -> Summary {
        self.flush();
        self.eof();
        self.flush();
        self.check();
        assert!(
            self.conn.is_done(),
            "a drained connection after EOF is done"
        );
        assert_eq!(self.sent, self.model.expected, "every set written");
        let summary = Summary {
            made: self.made.len(),
            sets: self.sent.len(),
            reason: self.conn.close_reason(),
        };
        let Driver {
            conn,
            id,
            mut handler,
            mut spares,
            mut world,
            now,
            made,
            ..
        } = self;
        conn.finish(id, &mut handler, &mut spares, &mut world.ctl(now, None));
        for (i, m) in made.iter().enumerate() {
            assert_closed(&m.kept, i, "after finish");
        }
        summary
    }
}

/// How long a copy of a passed end may stay open elsewhere: a child that
/// another test thread is forking holds copies of every descriptor until
/// it execs (they are close-on-exec). The fuzzer forks nothing, so there
/// the first look decides; only a finding waits this long.
const FORK_GRACE: Duration = Duration::from_secs(2);

/// Every copy of the passed end whose peer is `kept` (descriptor `i`) is
/// closed: `kept` reads EOF.
fn assert_closed(kept: &UnixStream, i: usize, why: &str) {
    let mut deadline = None;
    loop {
        let mut buf = [0u8; 1];
        match (&*kept).read(&mut buf) {
            Ok(0) => return,
            Ok(_) => panic!("descriptor {i}: data on a silent socket"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let now = Instant::now();
                let until = *deadline.get_or_insert(now + FORK_GRACE);
                assert!(now < until, "descriptor {i} still open, {why}");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("descriptor {i}: {e}"),
        }
    }
}

/// The inode of `fd` (a socket's is unique while it is open).
fn inode(fd: &OwnedFd) -> u64 {
    let file = File::from(fd.try_clone().expect("dup"));
    file.metadata().expect("fstat").ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a read of `data` with `count` descriptors (`lost`: flagged
    /// `MSG_CTRUNC`).
    fn read(count: u8, lost: bool, data: &[u8]) -> Vec<u8> {
        let mut op = vec![3, count | if lost { 0xf0 } else { 0 }, data.len() as u8];
        op.extend_from_slice(data);
        op
    }

    const SHORT_WRITE: [u8; 2] = [6, 1];
    const FLUSH: [u8; 1] = [7];
    const SHUTDOWN: [u8; 2] = [8, 1];
    const STALE: [u8; 2] = [8, 2];
    const KILL: [u8; 3] = [8, 3, 0xff];

    /// Runs `ops` after the header `mode, max_fds, max_frame, max_buffer`.
    fn run(header: [u8; 4], ops: &[&[u8]]) -> Summary {
        let mut data = header.to_vec();
        for op in ops {
            data.extend_from_slice(op);
        }
        drive(&data)
    }

    fn summary(made: usize, sets: usize, reason: Option<CloseReason>) -> Summary {
        Summary { made, sets, reason }
    }

    #[test]
    fn descriptors_go_back_with_their_frames() {
        // Reads that start mid-frame, frames spanning reads, short writes
        // between; raw and messages take each read as a frame.
        let ops: [&[u8]; 7] = [
            &read(1, false, b"ab\n\0\0\0\x01x"),
            &read(2, false, b"cd"),
            &SHORT_WRITE,
            &read(0, false, b"e\n\0\0\0"),
            &read(1, false, b"\x02yz\n\0"),
            &FLUSH,
            &read(1, false, b"\0\0\0"),
        ];
        for mode in [0, 1, 3] {
            assert_eq!(run([mode, 3, 16, 64], &ops), summary(5, 4, None));
        }
        // Length: the last read's partial frame is dropped at EOF, and its
        // descriptor with it.
        // (Three descriptors wait for output after the fifth read: the
        // flush lets the last one in.)
        let ops: [&[u8]; 7] = [
            &read(1, false, b"\0\0\0\x02ab\0\0"),
            &read(2, false, b"\0\x01"),
            &SHORT_WRITE,
            &read(0, false, b"x\0\0\0"),
            &read(1, false, b"\0"),
            &FLUSH,
            &read(1, false, b"\0\0\0"),
        ];
        let partial = Some(CloseReason::PartialAtEof(3));
        assert_eq!(run([2, 3, 16, 64], &ops), summary(5, 3, partial));
    }

    #[test]
    fn held_output_descriptors_pause_reading() {
        // max_fds 2: two sets of one wait for output, so the third read
        // waits for a write; raw, so each read is a frame.
        let ops: [&[u8]; 5] = [
            &read(1, false, b"a"),
            &read(1, false, b"b"),
            &read(1, false, b"c"),
            &FLUSH,
            &read(1, false, b"d"),
        ];
        assert_eq!(run([0, 2, 16, 64], &ops), summary(3, 3, None));
    }

    #[test]
    fn violations_close_what_they_hold() {
        let fds = Some(CloseReason::Descriptors);
        for mode in 0..4 {
            // Over max_fds for one frame (on a line or length stream, over
            // three reads); the frames before it still echoed with theirs
            // (raw and messages: two; length: one; line: none).
            let ops: [&[u8]; 5] = [
                &read(1, false, b"\0\0\0\0"),
                &FLUSH,
                &read(1, false, b"\0"),
                &FLUSH,
                &read(3, false, b"\0"),
            ];
            let sets = [2, 0, 1, 2][usize::from(mode)];
            assert_eq!(run([mode, 2, 16, 64], &ops), summary(5, sets, fds));
            // Lost, with and without descriptors; then stale ones.
            let ops: [&[u8]; 2] = [&read(1, true, b"a\n"), &STALE];
            assert_eq!(run([mode, 2, 16, 64], &ops), summary(2, 0, fds));
            let ops: [&[u8]; 1] = [&read(0, true, b"a\n")];
            assert_eq!(run([mode, 2, 16, 64], &ops), summary(0, 0, fds));
            // Killed with output and descriptors held.
            let ops: [&[u8]; 3] = [
                &read(1, false, b"\0\0\0\0\n"),
                &read(1, false, b"\0"),
                &KILL,
            ];
            let io = Some(CloseReason::Io);
            assert_eq!(run([mode, 4, 16, 64], &ops), summary(2, 0, io));
            // Shutdown with a partial frame's descriptors held.
            let ops: [&[u8]; 2] = [&read(2, false, b"\0\0"), &SHUTDOWN];
            assert_eq!(run([mode, 4, 16, 64], &ops).made, 2);
        }
        // A frame error, then descriptors handed over after it.
        for mode in [1, 2] {
            let ops: [&[u8]; 3] = [&read(1, false, b"\0\0\0\x09abcdef"), &STALE, &FLUSH];
            let got = run([mode, 2, 2, 64], &ops);
            assert!(matches!(got.reason, Some(CloseReason::Frame(_))), "{got:?}");
            assert_eq!((got.made, got.sets), (2, 0));
        }
    }

    /// The target over pseudo-random inputs.
    #[test]
    fn random_schedules_pass() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut data = Vec::new();
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.clear();
            let len = 4 + (seed % 400) as usize;
            let mut s = seed;
            for _ in 0..len {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                data.push((s >> 56) as u8);
            }
            fds(&data);
        }
    }
}
