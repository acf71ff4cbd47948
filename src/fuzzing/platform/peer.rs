//! One connection as the `platform` model knows it: what it must be
//! written and has written, what it read and has not yet been delivered
//! (decoded here, byte by byte, as `line` framing cuts it), and where it
//! is in its life.

use std::collections::VecDeque;

use crate::handler::ConnId;

/// What is known of one connection, by serial.
#[derive(Debug, Default)]
pub(super) struct Peer {
    pub(super) id: Option<ConnId>,
    /// Between the handler's `open` and its `close`.
    pub(super) open: bool,
    /// The peer finished sending.
    pub(super) eof: bool,
    /// Closing on the handler's word (or a frame error): nothing more read.
    pub(super) closing: bool,
    /// Closed at once by the driver (an I/O error, a deadline): output gone.
    pub(super) killed: bool,
    /// Every byte the connection must write, in order.
    pub(super) owed: Vec<u8>,
    /// Every byte it wrote.
    pub(super) written: Vec<u8>,
    /// Bytes read and not yet decoded into frames.
    pub(super) input: VecDeque<u8>,
    /// The partial line.
    pub(super) cur: Vec<u8>,
    /// The line tail EOF made a frame, not yet delivered.
    pub(super) tail: Option<Vec<u8>>,
    /// A push was refused as full, and the output has not been down to
    /// half since.
    pub(super) full: bool,
    /// Refusal streaks that went down to half: `drained` calls owed.
    pub(super) drained_owed: u32,
    /// The server found it done and put it on its reap list: closed to
    /// the handler from then on, though its `close` is still to come.
    pub(super) reaping: bool,
}

impl Peer {
    /// Bytes owed and not written (none once killed: output is dropped).
    pub(super) fn pending(&self) -> usize {
        if self.killed {
            0
        } else {
            self.owed.len() - self.written.len()
        }
    }

    /// Nothing more is read: EOF, closing, or killed.
    pub(super) fn read_done(&self) -> bool {
        self.eof || self.closing || self.killed
    }

    /// Finished, as `Conn::is_done` must say.
    pub(super) fn done(&self) -> bool {
        self.killed || (self.read_done() && self.pending() == 0)
    }
}

/// The next complete line of `p`'s input (its frame error, if the
/// partial outgrows `max_frame`, ends the input).
pub(super) fn next_line(p: &mut Peer, max_frame: usize) -> Option<Vec<u8>> {
    while let Some(b) = p.input.pop_front() {
        if b == b'\n' {
            return Some(std::mem::take(&mut p.cur));
        }
        p.cur.push(b);
        if p.cur.len() > max_frame {
            p.closing = true;
            p.input.clear();
            p.cur.clear();
            return None;
        }
    }
    None
}
