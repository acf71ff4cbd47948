//! Fuzz target bodies, shared by `fuzz/fuzz_targets/*.rs` (one-line calls)
//! and `tests/fuzz_corpus.rs`, which replays every committed seed and
//! regression through them on stable `cargo test`.
//!
//! Each target decodes its operations from the raw input by hand (no
//! `arbitrary`, so the library gains no dependency) and checks the real
//! structure against a model written independently of it:
//!
//! * `codec`: a [`Decoder`](crate::codec::Decoder) fed in arbitrary
//!   pieces must deliver the same frames and the same error as when fed at
//!   once, and as a byte-at-a-time model of the framing; frames re-encode
//!   to their wire form; memory stays within
//!   [`Decoder::limit`](crate::codec::Decoder::limit).
//! * `buffer`: [`Buffer`](crate::buffer::Buffer) operations against a
//!   `VecDeque<u8>`: contents, capacity bounds, the spare hand-off.
//! * `conn`: a [`Conn`](crate::conn::Conn) with the built-in
//!   [`Echo`](crate::Echo) or a scripted handler (several framed or
//!   verbatim replies per frame, empty ones, a greeting, `Context::close`)
//!   over an arbitrary schedule of reads, short writes, EOF, timeouts and
//!   shutdown, against a byte-at-a-time model of the framings and of what
//!   the handler owes.
//! * `platform`: the handler platform over up to eight connections in one
//!   world (slots reused, ids not), driven as the server drives it, with
//!   a scripted handler pushing to, disconnecting and setting timers for
//!   ids it remembers (stale ones included), against a model of what each
//!   connection must be written, what each call must return and which
//!   timers may fire.
//! * `fds`: a [`Conn`](crate::conn::Conn) running [`Echo`](crate::Echo)
//!   with real descriptors (socket pairs) attached to its reads: each
//!   must go back once, with the first byte of the echo of the frame
//!   holding the first byte of its read (with its message on seqpacket),
//!   in order, or be closed (over `max_fds`, `lost`, a frame error, input
//!   closed, killed, at `finish`); `fds_pending()` and `wants_read()`
//!   follow, and after `finish` nothing is left open.
//!
//! Not part of the API: hidden from the docs, may change at any time.
#![allow(missing_docs)]

use crate::config::Framing;

mod buffer;
mod codec;
mod conn;
mod fds;
mod platform;

pub use buffer::buffer;
pub use codec::codec;
pub use conn::conn;
pub use fds::fds;
pub use platform::platform;

/// The operations' source: bytes taken from the front, zeros once empty.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes (fewer when the input runs out).
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A size from one byte: `0..=127` as is; above, a value within 3 of a
    /// power of two from 16 to 512 KiB, so limits are hit exactly, one
    /// under and one over.
    pub(crate) fn size(&mut self) -> usize {
        let b = self.byte();
        if b < 0x80 {
            return usize::from(b);
        }
        let power = u32::from(b & 0x0f) + 4;
        (1usize << power) + usize::from((b >> 4) & 0x7) - 3
    }
}

/// The framing selected by a byte.
pub(crate) fn framing(b: u8) -> Framing {
    match b % 3 {
        0 => Framing::Raw,
        1 => Framing::Line,
        _ => Framing::Length,
    }
}
