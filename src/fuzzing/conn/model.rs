//! The `conn` target's model: SPEC's framings decoded one byte at a time,
//! what the handler owes for each frame, and the connection's lifecycle as
//! its docs state it. It shares no code with the implementation: it cuts
//! frames, encodes replies and counts them itself.

use std::time::Instant;

use super::script::{CloseOn, Script, Shape, GREETING, MAX_REPLIES};
use crate::codec::{FrameError, HEADER_LEN};
use crate::config::Framing;
use crate::conn::{CloseReason, Limits};

/// Bytes a message record takes besides the message (its length).
pub(super) const RECORD_HEAD: usize = 4;

/// Which handler runs, as the model knows it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Replier {
    /// Each frame goes back as it came.
    Echo,
    /// A [`Script`]'s replies, greeting and close.
    Script(Script),
}

impl Replier {
    /// The most replies one frame gets.
    pub(super) fn max_replies(&self) -> usize {
        match self {
            Replier::Echo => 1,
            Replier::Script(_) => MAX_REPLIES,
        }
    }
}

/// Why the model closed (a frame error's `len` is not modelled: it is how
/// much of the frame the decoder had seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    None,
    Frame,
    PartialAtEof(usize),
    Idle,
    Drain,
    Handler,
    Io,
}

impl Reason {
    pub(super) fn matches(self, got: Option<CloseReason>, max: usize) -> bool {
        match (self, got) {
            (Reason::None, None) => true,
            (Reason::Frame, Some(CloseReason::Frame(FrameError::TooLarge { len, max: m }))) => {
                m == max && len > max as u64
            }
            (Reason::PartialAtEof(n), Some(CloseReason::PartialAtEof(m))) => n == m,
            (Reason::Idle, Some(CloseReason::Idle)) => true,
            (Reason::Drain, Some(CloseReason::DrainTimeout)) => true,
            (Reason::Handler, Some(CloseReason::Handler)) => true,
            (Reason::Io, Some(CloseReason::Io)) => true,
            _ => false,
        }
    }
}

/// One reply as the model owes it.
enum Reply<'a> {
    /// Through `Context::send`: framed.
    Framed(&'a [u8]),
    /// Through `Context::send_wire`: verbatim.
    Wire(&'a [u8]),
}

#[derive(Debug)]
pub(super) struct Model {
    framing: Framing,
    messages: bool,
    max_frame: usize,
    replier: Replier,
    /// The partial frame (line, length).
    pub(super) cur: Vec<u8>,
    /// Stream: every byte the handler owes, in order.
    pub(super) owed: Vec<u8>,
    pub(super) owed_msgs: Vec<Vec<u8>>,
    pub(super) written: Vec<u8>,
    pub(super) written_msgs: Vec<Vec<u8>>,
    /// Frames delivered to the handler, and replies it sent.
    pub(super) frames: u64,
    pub(super) replies: u64,
    /// Payload bytes delivered.
    pub(super) payload: u64,
    /// No more input is taken (EOF, frame error, handler close, shutdown,
    /// killed).
    pub(super) read_done: bool,
    /// Close once flushed, within the drain timeout.
    pub(super) closing: bool,
    /// Closed at once; output discarded.
    pub(super) killed: bool,
    pub(super) frame_error: bool,
    /// The handler called `Context::close`.
    pub(super) handler_closed: bool,
    pub(super) reason: Reason,
    /// Last traffic (or when closing began): the timers run from it.
    active: Instant,
}

impl Model {
    pub(super) fn new(limits: &Limits, replier: Replier, now: Instant) -> Model {
        Model {
            framing: limits.framing,
            messages: limits.messages,
            max_frame: limits.max_frame,
            replier,
            cur: Vec::new(),
            owed: Vec::new(),
            owed_msgs: Vec::new(),
            written: Vec::new(),
            written_msgs: Vec::new(),
            frames: 0,
            replies: 0,
            payload: 0,
            read_done: false,
            closing: false,
            killed: false,
            frame_error: false,
            handler_closed: false,
            reason: Reason::None,
            active: now,
        }
    }

    pub(super) fn max_replies(&self) -> usize {
        self.replier.max_replies()
    }

    /// The handler's `open`: a script's greeting, and its close.
    pub(super) fn open(&mut self) {
        let Replier::Script(script) = self.replier else {
            return;
        };
        if let Some(n) = script.greeting {
            self.owe(Reply::Framed(&GREETING[..n]));
        }
        if script.close_in_open {
            self.handler_close();
        }
    }

    pub(super) fn read(&mut self, chunk: &[u8], now: Instant) {
        if self.messages && chunk.len() > self.max_frame {
            return self.frame_error();
        }
        self.active = now;
        if self.messages || self.framing == Framing::Raw {
            // A message, or whatever one read returned, is one frame.
            self.frame(chunk, chunk);
            return;
        }
        for &b in chunk {
            if self.read_done {
                return; // the handler closed: the rest is not looked at
            }
            if !self.byte(b) {
                return self.frame_error();
            }
        }
    }

    /// Takes one byte of a line or length stream; false on a frame error.
    fn byte(&mut self, b: u8) -> bool {
        self.cur.push(b);
        match self.framing {
            Framing::Line if b == b'\n' => {
                let wire = std::mem::take(&mut self.cur);
                self.frame(&wire[..wire.len() - 1], &wire);
            }
            Framing::Line => return self.cur.len() <= self.max_frame,
            _ if self.cur.len() < HEADER_LEN => {}
            _ => {
                let head = [self.cur[0], self.cur[1], self.cur[2], self.cur[3]];
                let n = u32::from_be_bytes(head) as usize;
                if n > self.max_frame {
                    return false;
                }
                if self.cur.len() == HEADER_LEN + n {
                    let wire = std::mem::take(&mut self.cur);
                    self.frame(&wire[HEADER_LEN..], &wire);
                }
            }
        }
        true
    }

    /// One frame to the handler: what it owes for it, and its close.
    fn frame(&mut self, payload: &[u8], wire: &[u8]) {
        self.frames += 1;
        self.payload += payload.len() as u64;
        let script = match self.replier {
            Replier::Echo => return self.owe(Reply::Wire(wire)),
            Replier::Script(script) => script,
        };
        let k = script.k;
        for j in 0..k {
            let reply = match script.shape {
                Shape::Copies => Reply::Framed(payload),
                Shape::Pieces => {
                    Reply::Framed(&payload[j * payload.len() / k..(j + 1) * payload.len() / k])
                }
                Shape::Wire => Reply::Wire(wire),
            };
            self.owe(reply);
        }
        if script.empty {
            self.owe(Reply::Framed(b""));
        }
        let close = match script.close_on {
            CloseOn::Never => false,
            CloseOn::Frame(n) => self.frames == n,
            CloseOn::Byte(b) => payload.contains(&b),
        };
        if close {
            self.handler_close();
        }
    }

    /// Appends one reply, encoded as SPEC says for this connection.
    fn owe(&mut self, reply: Reply<'_>) {
        self.replies += 1;
        let (bytes, framed) = match reply {
            Reply::Framed(b) => (b, true),
            Reply::Wire(b) => (b, false),
        };
        if self.messages {
            return self.owed_msgs.push(bytes.to_vec());
        }
        match self.framing {
            Framing::Length if framed => {
                let len = u32::try_from(bytes.len()).expect("small reply");
                self.owed.extend_from_slice(&len.to_be_bytes());
                self.owed.extend_from_slice(bytes);
            }
            Framing::Line if framed => {
                self.owed.extend_from_slice(bytes);
                self.owed.push(b'\n');
            }
            _ => self.owed.extend_from_slice(bytes),
        }
    }

    /// The handler called `Context::close`: nothing more is read (and the
    /// partial frame, if any, is never delivered), what is owed is still
    /// written.
    fn handler_close(&mut self) {
        self.handler_closed = true;
        self.read_done = true;
        self.closing = true;
        self.cur.clear();
        self.set_reason(Reason::Handler);
    }

    fn frame_error(&mut self) {
        self.frame_error = true;
        self.read_done = true;
        self.closing = true;
        self.set_reason(Reason::Frame);
    }

    pub(super) fn eof(&mut self) {
        self.read_done = true;
        match self.framing {
            Framing::Line if !self.cur.is_empty() => {
                // The tail without `\n` is a frame of its own.
                let tail = std::mem::take(&mut self.cur);
                self.frame(&tail, &tail);
            }
            Framing::Length if !self.cur.is_empty() => {
                self.set_reason(Reason::PartialAtEof(self.cur.len()));
                self.cur.clear();
            }
            _ => {}
        }
    }

    pub(super) fn wrote(&mut self, now: Instant) {
        if !self.closing {
            self.active = now;
        }
    }

    pub(super) fn shutdown(&mut self, now: Instant) {
        if !self.closing {
            self.active = now;
        }
        self.read_done = true;
        self.closing = true;
    }

    pub(super) fn timeout(&mut self, now: Instant, limits: &Limits) {
        if self.deadline(limits).is_some_and(|d| now >= d) {
            let reason = if self.closing {
                Reason::Drain
            } else {
                Reason::Idle
            };
            self.kill(reason);
        }
    }

    pub(super) fn kill(&mut self, reason: Reason) {
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

    pub(super) fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.done() {
            None
        } else if self.closing {
            Some(self.active + limits.drain_timeout)
        } else {
            limits.idle_timeout.map(|idle| self.active + idle)
        }
    }

    pub(super) fn owed_len(&self) -> usize {
        if self.messages {
            self.owed_msgs.len()
        } else {
            self.owed.len()
        }
    }

    pub(super) fn written_len(&self) -> usize {
        if self.messages {
            self.written_msgs.len()
        } else {
            self.written.len()
        }
    }

    /// Bytes of output held: stream bytes, or message records (a `u32`
    /// length and the bytes).
    pub(super) fn pending(&self) -> usize {
        if self.killed {
            0
        } else if self.messages {
            let rest = &self.owed_msgs[self.written_msgs.len()..];
            rest.iter().map(|m| RECORD_HEAD + m.len()).sum()
        } else {
            self.owed.len() - self.written.len()
        }
    }

    pub(super) fn done(&self) -> bool {
        self.killed || (self.read_done && self.pending() == 0)
    }
}
