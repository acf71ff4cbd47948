//! The handler the `conn` target drives besides [`Echo`](crate::Echo): a
//! script, read from the input, of what to answer each frame with (copies
//! of the payload, pieces of it, copies of the wire form, an empty reply),
//! whether to greet in [`Handler::open`] and when to call
//! [`Context::close`]. It answers through [`Context::send`] (framed) and
//! [`Context::send_wire`] (verbatim) only, and records what it saw, so the
//! driver can check that `close` came exactly once with the final state.
//!
//! What the script *must* have sent is computed elsewhere, by the model
//! (`model.rs`), from the frames that model decodes itself.

use crate::codec::Frame;
use crate::ctl::Ctl;
use crate::fuzzing::Input;
use crate::handler::{Closed, ConnId, Context, Handler, PeerCred};

/// The greeting's text; a script sends a prefix of it. It holds a `\n`, a
/// NUL and what looks like a length header, so that a framing bug shows.
pub(super) const GREETING: &[u8] = b"hi, peer\n\0\0\0\x01!ok";

/// The most replies a script sends for one frame: three, then an empty one.
pub(super) const MAX_REPLIES: usize = 4;

/// How a script answers each frame (before the optional empty reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// `k` copies of the payload, each one framed reply.
    Copies,
    /// The payload cut into `k` pieces, each one framed reply: piece `j`
    /// is `payload[j * len / k..(j + 1) * len / k]`, so a payload shorter
    /// than `k` gives empty pieces.
    Pieces,
    /// `k` copies of the frame as it came on the wire, verbatim.
    Wire,
}

/// When a script closes the connection (after answering the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CloseOn {
    Never,
    /// On the n-th frame (1-based).
    Frame(u64),
    /// On a frame whose payload holds this byte.
    Byte(u8),
}

/// What a [`Scripted`] handler does, read from three bytes of the input.
#[derive(Clone, Copy, Debug)]
pub(super) struct Script {
    pub(super) shape: Shape,
    /// Replies of `shape` per frame, `0..=3`.
    pub(super) k: usize,
    /// Then one empty framed reply (`\n` on line, a zero header on length,
    /// nothing on raw, an empty message on seqpacket).
    pub(super) empty: bool,
    /// A greeting of this many bytes of [`GREETING`] in `open`.
    pub(super) greeting: Option<usize>,
    /// Close in `open`, after the greeting.
    pub(super) close_in_open: bool,
    pub(super) close_on: CloseOn,
}

impl Script {
    /// Byte 1: `k` (bits 0-1), shape (bits 2-3: copies, pieces, wire,
    /// copies), an empty reply (bit 4). Byte 2: greet (bit 7) with that
    /// many bytes (bits 0-3), close in `open` (bit 6). Byte 3: close on
    /// frame `n` (`0..=127`, 0 never) or, with bit 7, on a payload holding
    /// the byte in bits 0-6.
    pub(super) fn from_input(input: &mut Input<'_>) -> Script {
        let (replies, open, close) = (input.byte(), input.byte(), input.byte());
        Script {
            shape: match (replies >> 2) & 3 {
                1 => Shape::Pieces,
                2 => Shape::Wire,
                _ => Shape::Copies,
            },
            k: usize::from(replies & 3),
            empty: replies & 0x10 != 0,
            greeting: (open & 0x80 != 0).then_some(usize::from(open & 0x0f)),
            close_in_open: open & 0x40 != 0,
            close_on: match close {
                0 => CloseOn::Never,
                c if c < 0x80 => CloseOn::Frame(u64::from(c)),
                c => CloseOn::Byte(c & 0x7f),
            },
        }
    }
}

/// A connection's state as a [`Scripted`] handler keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Seen {
    /// Frames delivered.
    pub(super) frames: u64,
    /// Payload bytes delivered.
    pub(super) payload: u64,
    /// The greeting was sent.
    pub(super) greeted: bool,
    /// The handler called [`Context::close`].
    pub(super) closed: bool,
}

/// A handler that follows a [`Script`].
#[derive(Debug)]
pub(super) struct Scripted {
    script: Script,
    /// Every `close`: the state handed back, the id and the peer.
    pub(super) closes: Vec<(Seen, ConnId, Option<PeerCred>)>,
}

impl Scripted {
    pub(super) fn new(script: Script) -> Scripted {
        Scripted {
            script,
            closes: Vec::new(),
        }
    }
}

impl Handler for Scripted {
    type State = Seen;
    const PEER_CREDENTIALS: bool = false;

    fn open(&mut self, cx: &mut Context<'_>) -> Seen {
        let mut seen = Seen::default();
        if let Some(n) = self.script.greeting {
            cx.send(&GREETING[..n]).expect("a greeting fits");
            seen.greeted = true;
        }
        if self.script.close_in_open {
            seen.closed = true;
            cx.close();
        }
        seen
    }

    fn frame(&mut self, seen: &mut Seen, frame: Frame<'_>, cx: &mut Context<'_>) {
        assert!(!seen.closed, "a frame delivered after Context::close");
        seen.frames += 1;
        let payload = frame.payload();
        seen.payload += payload.len() as u64;
        let k = self.script.k;
        for j in 0..k {
            let sent = match self.script.shape {
                Shape::Copies => cx.send(payload),
                Shape::Pieces => {
                    let start = j * payload.len() / k;
                    cx.send(&payload[start..][..piece(payload.len(), j, k)])
                }
                Shape::Wire => cx.send_wire(frame.wire()),
            };
            sent.expect("a reply to a frame fits");
        }
        if self.script.empty {
            cx.send(b"").expect("an empty reply fits");
        }
        let close = match self.script.close_on {
            CloseOn::Never => false,
            CloseOn::Frame(n) => seen.frames == n,
            CloseOn::Byte(b) => payload.contains(&b),
        };
        if close {
            seen.closed = true;
            cx.close();
        }
    }

    fn close(&mut self, seen: Seen, closed: Closed, _: &mut Ctl<'_>) {
        self.closes.push((seen, closed.id, closed.peer));
    }
}

/// The length of piece `j` of `k` of a payload of `len` bytes.
fn piece(len: usize, j: usize, k: usize) -> usize {
    (j + 1) * len / k - j * len / k
}
