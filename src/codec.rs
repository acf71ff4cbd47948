//! Framings: how a byte stream is cut into frames, and how replies are
//! encoded. Pure code: bytes in, frames (or "need more", or an error) out.
//! The server, the handler API, the client and the fuzzers share it.
//!
//! # Wire formats
//!
//! `raw`: every chunk read is a frame; nothing is added.
//!
//! `line`: a frame ends at `\n`, which belongs to it.
//!
//! ```text
//! +---------------------------+----+
//! | payload (no \n), <= max   | \n |
//! +---------------------------+----+
//! ```
//!
//! `length`: a 4-byte big-endian unsigned length, then that many bytes.
//!
//! ```text
//! +--------+--------+--------+--------+-------------------------+
//! |        payload length n (u32, big endian)  | n payload bytes |
//! +--------+--------+--------+--------+-------------------------+
//!  n = 0 is a valid, empty frame; n > max closes the connection.
//! ```
//!
//! # Memory
//!
//! A decoder buffers bytes only while it holds a partial frame, and never
//! more than that frame has delivered so far: a header announcing 4 GiB
//! reserves nothing. The line decoder searches each byte for `\n` once
//! (the buffered tail is known to have none), so a long line arriving one
//! byte at a time costs linear time.

use std::fmt;

use crate::buffer::Partial;
use crate::config::Framing;

/// Length of the `length` framing's header.
pub const HEADER_LEN: usize = 4;

/// A frame that breaks the framing's limits; it ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame's payload is (or announces) `len` bytes, more than `max`.
    TooLarge {
        /// Payload length seen or announced so far.
        len: u64,
        /// The `--max-frame` limit.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds --max-frame {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// One decoded frame: its bytes as they were on the wire, and where the
/// payload lies within them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    wire: &'a [u8],
    /// Bytes of header before the payload (4 for `length`, else 0).
    head: u8,
    /// Bytes of trailer after the payload (1 for a `\n`, else 0).
    tail: u8,
}

impl<'a> Frame<'a> {
    /// A frame whose wire form is its payload (raw, or a message).
    pub fn raw(bytes: &'a [u8]) -> Frame<'a> {
        Frame {
            wire: bytes,
            head: 0,
            tail: 0,
        }
    }

    /// The payload: without the `length` header or the line's `\n`.
    pub fn payload(&self) -> &'a [u8] {
        &self.wire[self.head as usize..self.wire.len() - self.tail as usize]
    }

    /// The frame exactly as received, header or newline included.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }
}

/// What was left in the decoder at end of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eof {
    /// Nothing was pending (or the line tail was delivered as a frame).
    Clean,
    /// A partial `length` frame of this many bytes was dropped.
    Dropped(usize),
}

/// An incremental decoder for one connection.
///
/// Call [`decode`](Self::decode) with each chunk read, then
/// [`decode_eof`](Self::decode_eof) once at end of input. Frames go to a
/// sink that returns `false` to stop delivery (the connection is closing);
/// bytes after that point are discarded.
///
/// # Examples
///
/// ```
/// use uds_reactor::codec::{Decoder, Eof};
/// use uds_reactor::Framing;
///
/// let mut d = Decoder::new(Framing::Line, 1024);
/// let mut spare = Vec::new();
/// let mut frames = Vec::new();
/// d.decode(b"hel", &mut spare, |f| { frames.push(f.wire().to_vec()); true }).unwrap();
/// d.decode(b"lo\nwor", &mut spare, |f| { frames.push(f.wire().to_vec()); true }).unwrap();
/// assert_eq!(d.decode_eof(&mut spare, |f| { frames.push(f.wire().to_vec()); true }), Eof::Clean);
/// assert_eq!(frames, [b"hello\n".to_vec(), b"wor".to_vec()]);
/// ```
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    max_frame: usize,
    state: DecodeState,
}

impl Decoder {
    /// A decoder for `framing` accepting payloads up to `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> Decoder {
        Decoder {
            framing,
            max_frame,
            state: DecodeState::new(),
        }
    }

    /// Bytes held for a partial frame.
    pub fn buffered(&self) -> usize {
        self.state.buffered()
    }

    /// Bytes of heap memory held.
    pub fn capacity(&self) -> usize {
        self.state.capacity()
    }

    /// The most bytes a partial frame may hold, a line's `\n` or a length
    /// frame's header included: the bound on [`buffered`](Self::buffered)
    /// and on [`capacity`](Self::capacity).
    pub fn limit(&self) -> usize {
        limit(self.framing, self.max_frame)
    }

    /// Feeds `data`; calls `sink` with each complete frame, in order.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when a line grows past `max_frame` without
    /// its `\n`, or a header announces more than `max_frame`. Frames before
    /// the offending one have been delivered; the decoder must not be fed
    /// again.
    pub fn decode<F>(&mut self, data: &[u8], spare: &mut Vec<u8>, sink: F) -> Result<(), FrameError>
    where
        F: FnMut(Frame<'_>) -> bool,
    {
        self.state
            .decode(self.framing, self.max_frame, data, spare, sink)
    }

    /// Ends the input: a `line` tail without `\n` is delivered as a frame;
    /// a partial `length` frame is dropped and reported.
    pub fn decode_eof<F>(&mut self, spare: &mut Vec<u8>, sink: F) -> Eof
    where
        F: FnMut(Frame<'_>) -> bool,
    {
        self.state.decode_eof(self.framing, spare, sink)
    }

    /// Gives the partial frame's memory back (the connection is closing).
    pub fn clear(&mut self, spare: &mut Vec<u8>) {
        self.state.clear(spare);
    }
}

/// A [`Decoder`] without its settings: only the partial frame. The framing
/// and the limit are passed to each call instead, so that a server, whose
/// connections all share them, does not keep a copy in every connection.
/// Every call must pass the same settings.
///
/// # Examples
///
/// ```
/// use uds_reactor::codec::DecodeState;
/// use uds_reactor::Framing;
///
/// let mut d = DecodeState::new();
/// let mut spare = Vec::new();
/// let mut frames = Vec::new();
/// d.decode(Framing::Line, 1024, b"hel", &mut spare, |f| { frames.push(f.wire().to_vec()); true }).unwrap();
/// d.decode(Framing::Line, 1024, b"lo\n", &mut spare, |f| { frames.push(f.wire().to_vec()); true }).unwrap();
/// assert_eq!(frames, [b"hello\n".to_vec()]);
/// ```
#[derive(Debug, Default)]
pub struct DecodeState {
    /// The partial frame. Invariant (line): holds no `\n`, at most
    /// `max_frame` bytes. Invariant (length): fewer bytes than the frame's
    /// header plus announced payload, and that payload is <= `max_frame`.
    partial: Partial,
}

/// The most bytes a partial frame may hold in `framing` (see
/// [`Decoder::limit`]).
fn limit(framing: Framing, max_frame: usize) -> usize {
    match framing {
        Framing::Raw => 0,
        Framing::Line => max_frame.saturating_add(1),
        Framing::Length => max_frame.saturating_add(HEADER_LEN),
    }
}

impl DecodeState {
    /// Nothing pending; allocates nothing.
    pub const fn new() -> DecodeState {
        DecodeState {
            partial: Partial::new(),
        }
    }

    /// Bytes held for a partial frame.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Bytes of heap memory held.
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// As [`Decoder::decode`], for `framing` and `max_frame`.
    ///
    /// # Errors
    ///
    /// As [`Decoder::decode`].
    // Inlined: `raw`, the default, is a call of the sink; the framings
    // that buffer stay out of line.
    #[inline(always)]
    pub fn decode<F>(
        &mut self,
        framing: Framing,
        max_frame: usize,
        data: &[u8],
        spare: &mut Vec<u8>,
        sink: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(Frame<'_>) -> bool,
    {
        match framing {
            Framing::Raw => {
                let mut sink = sink;
                if !data.is_empty() {
                    sink(Frame::raw(data));
                }
                Ok(())
            }
            Framing::Line => self.decode_lines(max_frame, data, spare, sink),
            Framing::Length => self.decode_lengths(max_frame, data, spare, sink),
        }
    }

    /// As [`Decoder::decode_eof`], for `framing`.
    pub fn decode_eof<F>(&mut self, framing: Framing, spare: &mut Vec<u8>, mut sink: F) -> Eof
    where
        F: FnMut(Frame<'_>) -> bool,
    {
        let pending = self.partial.len();
        let eof = match framing {
            Framing::Raw => Eof::Clean,
            Framing::Line => {
                if pending > 0 {
                    sink(Frame::raw(self.partial.as_slice()));
                }
                Eof::Clean
            }
            Framing::Length if pending > 0 => Eof::Dropped(pending),
            Framing::Length => Eof::Clean,
        };
        self.partial.release(spare);
        eof
    }

    /// Gives the partial frame's memory back (the connection is closing).
    pub fn clear(&mut self, spare: &mut Vec<u8>) {
        self.partial.release(spare);
    }
    #[inline(never)]
    fn decode_lines<F>(
        &mut self,
        max: usize,
        mut data: &[u8],
        spare: &mut Vec<u8>,
        mut sink: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(Frame<'_>) -> bool,
    {
        let too_large = |len: usize| FrameError::TooLarge {
            len: len as u64,
            max,
        };
        if !self.partial.is_empty() {
            // The buffered tail has no `\n`: search only the new bytes.
            let have = self.partial.len();
            let Some(i) = memchr::memchr(b'\n', data) else {
                if have + data.len() > max {
                    return Err(too_large(have + data.len()));
                }
                self.partial.push(data, limit(Framing::Line, max), spare);
                return Ok(());
            };
            if have + i > max {
                return Err(too_large(have + i));
            }
            self.partial
                .push(&data[..=i], limit(Framing::Line, max), spare);
            let go_on = sink(line(self.partial.as_slice()));
            self.partial.release(spare);
            data = &data[i + 1..];
            if !go_on {
                return Ok(());
            }
        }
        // Whole lines straight from `data`, copying nothing.
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', data) {
            if end - start > max {
                return Err(too_large(end - start));
            }
            if !sink(line(&data[start..=end])) {
                return Ok(());
            }
            start = end + 1;
        }
        let rest = &data[start..];
        if rest.len() > max {
            return Err(too_large(rest.len()));
        }
        self.partial.push(rest, limit(Framing::Line, max), spare);
        Ok(())
    }

    #[inline(never)]
    fn decode_lengths<F>(
        &mut self,
        max: usize,
        mut data: &[u8],
        spare: &mut Vec<u8>,
        mut sink: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(Frame<'_>) -> bool,
    {
        if !self.partial.is_empty() {
            // Complete the header first, then the payload, from `data`.
            let have = self.partial.len();
            if have < HEADER_LEN {
                let take = (HEADER_LEN - have).min(data.len());
                self.partial
                    .push(&data[..take], limit(Framing::Length, max), spare);
                data = &data[take..];
                if self.partial.len() < HEADER_LEN {
                    return Ok(());
                }
            }
            let total = HEADER_LEN + announced(self.partial.as_slice(), max)?;
            let take = (total - self.partial.len()).min(data.len());
            self.partial
                .push(&data[..take], limit(Framing::Length, max), spare);
            data = &data[take..];
            if self.partial.len() < total {
                return Ok(());
            }
            let go_on = sink(length_frame(self.partial.as_slice()));
            self.partial.release(spare);
            if !go_on {
                return Ok(());
            }
        }
        // Whole frames straight from `data`; only the tail is copied.
        while data.len() >= HEADER_LEN {
            let total = HEADER_LEN + announced(data, max)?;
            if data.len() < total {
                break;
            }
            if !sink(length_frame(&data[..total])) {
                return Ok(());
            }
            data = &data[total..];
        }
        self.partial.push(data, limit(Framing::Length, max), spare);
        Ok(())
    }
}

/// The payload length in the `length` header at the start of `bytes`,
/// checked against `max_frame`.
fn announced(bytes: &[u8], max_frame: usize) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if n as usize > max_frame {
        return Err(FrameError::TooLarge {
            len: u64::from(n),
            max: max_frame,
        });
    }
    Ok(n as usize)
}

/// A complete line, `\n` included.
fn line(wire: &[u8]) -> Frame<'_> {
    Frame {
        wire,
        head: 0,
        tail: 1,
    }
}

/// A complete length frame, header included.
fn length_frame(wire: &[u8]) -> Frame<'_> {
    Frame {
        wire,
        head: HEADER_LEN as u8,
        tail: 0,
    }
}

/// Appends `payload` to `out` in `framing`'s wire form: as is for raw,
/// with a `\n` for line, behind a big-endian length for length.
///
/// # Errors
///
/// For `length`, a payload longer than `u32::MAX` bytes cannot be encoded;
/// `FrameError::TooLarge` names it and nothing is appended.
pub fn encode(framing: Framing, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    match framing {
        Framing::Raw => out.extend_from_slice(payload),
        Framing::Line => {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Framing::Length => {
            let n = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
                len: payload.len() as u64,
                max: u32::MAX as usize,
            })?;
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(payload);
        }
    }
    Ok(())
}

/// The header of a `length` frame of `len` payload bytes, for writers that
/// send header and payload separately (the server's replies, the client).
///
/// # Errors
///
/// `FrameError::TooLarge` when `len` exceeds `u32::MAX`.
pub fn length_header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::TooLarge {
            len: len as u64,
            max: u32::MAX as usize,
        })
}

#[cfg(test)]
mod tests;
