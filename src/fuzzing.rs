//! Fuzz target bodies, shared by `fuzz/fuzz_targets/*.rs` (one-line calls)
//! and `tests/fuzz_corpus.rs`, which replays every committed seed and
//! regression through them on stable `cargo test`.
//!
//! Each target decodes its operations from the raw input by hand (no
//! `arbitrary`, so the library gains no dependency) and checks the real
//! structure against a model written independently of it:
//!
//! * [`codec`]: a [`Decoder`] fed in arbitrary pieces must deliver the
//!   same frames and the same error as when fed at once; frames re-encode
//!   to their wire form; memory stays within [`Decoder::limit`].
//! * [`buffer`]: [`Buffer`] operations against a `VecDeque<u8>`.
//! * [`conn`]: a [`Conn`](crate::conn::Conn) echoing over an arbitrary
//!   schedule of reads, short writes, EOF, timeouts and shutdown, against a
//!   byte-at-a-time model of the echo semantics.
//!
//! Not part of the API: hidden from the docs, may change at any time.
#![allow(missing_docs)]

use std::collections::VecDeque;

use crate::buffer::{Buffer, MIN_ALLOC, OVERSHOOT, SPARE_MAX};
use crate::codec::{self, Decoder, Eof, FrameError};
use crate::config::Framing;

mod conn;

pub use conn::conn;

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

/// What a decoder delivered: frames (wire bytes, and whether they came
/// from `decode_eof`), then how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<(Vec<u8>, bool)>,
    end: Result<Eof, FrameError>,
}

/// Feeds `chunks` to a fresh decoder, stopping delivery after `stop`
/// frames; checks the memory bound after every call.
fn run_decoder<'a>(
    framing: Framing,
    max_frame: usize,
    chunks: impl Iterator<Item = &'a [u8]>,
    stop: usize,
) -> Decoded {
    let mut d = Decoder::new(framing, max_frame);
    let mut spare = Vec::new();
    let mut frames = Vec::new();
    let check_memory = |d: &Decoder, spare: &Vec<u8>| {
        // Bound: the partial frame's own limit, to the byte (the line
        // decoder's limit counts the `\n`). The spare only ever holds this
        // decoder's own allocations, so it obeys it too.
        assert!(
            d.buffered() <= d.limit(),
            "{} > {}",
            d.buffered(),
            d.limit()
        );
        assert!(
            d.capacity() <= d.limit(),
            "{} > {}",
            d.capacity(),
            d.limit()
        );
        assert!(spare.capacity() <= d.limit());
        assert!(spare.is_empty());
    };
    for chunk in chunks {
        if frames.len() >= stop {
            break;
        }
        let result = d.decode(chunk, &mut spare, |f| {
            check_frame(framing, max_frame, f.wire(), f.payload(), false);
            frames.push((f.wire().to_vec(), false));
            frames.len() < stop
        });
        check_memory(&d, &spare);
        if let Err(e) = result {
            d.clear(&mut spare);
            assert_eq!(d.capacity(), 0);
            return Decoded {
                frames,
                end: Err(e),
            };
        }
    }
    if frames.len() >= stop {
        d.clear(&mut spare);
        return Decoded {
            frames,
            end: Ok(Eof::Clean),
        };
    }
    let eof = d.decode_eof(&mut spare, |f| {
        check_frame(framing, max_frame, f.wire(), f.payload(), true);
        frames.push((f.wire().to_vec(), true));
        true
    });
    assert_eq!(d.capacity(), 0, "a decoder at EOF holds nothing");
    assert_eq!(d.buffered(), 0);
    Decoded {
        frames,
        end: Ok(eof),
    }
}

/// One frame obeys its framing and re-encodes to its wire form.
fn check_frame(framing: Framing, max_frame: usize, wire: &[u8], payload: &[u8], at_eof: bool) {
    assert!(!wire.is_empty() || framing == Framing::Length);
    let mut encoded = Vec::new();
    match framing {
        Framing::Raw => assert_eq!(payload, wire),
        Framing::Line if at_eof => {
            // The unterminated tail: as is, no `\n` anywhere.
            assert_eq!(payload, wire);
            assert!(!wire.contains(&b'\n'));
            assert!(payload.len() <= max_frame);
            return;
        }
        Framing::Line => {
            assert_eq!(wire.last(), Some(&b'\n'));
            assert!(!payload.contains(&b'\n'));
            assert!(payload.len() <= max_frame);
        }
        Framing::Length => {
            assert!(!at_eof, "a partial length frame is never delivered");
            assert!(payload.len() <= max_frame);
        }
    }
    codec::encode(framing, payload, &mut encoded).expect("frames under 4 GiB encode");
    assert_eq!(encoded, wire, "decode then encode round-trips");
}

/// Fuzz target `codec`.
///
/// Input: framing byte, max-frame size byte, frame budget byte (0 means
/// unlimited, else stop delivery after that many frames), a count of cut
/// sizes and the cut sizes (bytes, cycled; 0 feeds an empty chunk), then
/// the stream.
///
/// Checks: the same frames and error whatever the cuts (a line error's
/// `len` is how much was seen when it tripped, so only `max` and
/// `len > max` are compared for lines); frames concatenate back to a
/// prefix of the stream (all of it when nothing failed, less a dropped
/// partial length frame); each frame re-encodes to its wire form; the
/// decoder's buffered bytes and heap capacity never exceed
/// [`Decoder::limit`] (a constant of 0 bytes), and it holds nothing after
/// EOF or an error.
pub fn codec(data: &[u8]) {
    let mut input = Input::new(data);
    let framing = framing(input.byte());
    let max_frame = input.size();
    let stop = match input.byte() {
        // A raw frame is whatever one call brought: stopping after some
        // number of them means different bytes for different cuts.
        _ if framing == Framing::Raw => usize::MAX,
        0 => usize::MAX,
        n => usize::from(n),
    };
    let ncuts = usize::from(input.byte() % 16);
    let cuts: Vec<usize> = input.take(ncuts).iter().map(|&b| usize::from(b)).collect();
    let stream = input.take(usize::MAX);

    let whole = run_decoder(framing, max_frame, std::iter::once(stream), stop);
    let pieces = Pieces {
        rest: stream,
        cuts: &cuts,
        next: 0,
    };
    let cut = run_decoder(framing, max_frame, pieces, stop);

    if framing == Framing::Raw {
        let joined =
            |d: &Decoded| -> Vec<u8> { d.frames.iter().flat_map(|(f, _)| f.clone()).collect() };
        assert_eq!(
            joined(&whole),
            joined(&cut),
            "the same bytes whatever the cuts"
        );
    } else {
        assert_eq!(whole.frames, cut.frames, "same frames whatever the cuts");
    }
    match (&whole.end, &cut.end) {
        (
            Err(FrameError::TooLarge { len: a, max: m1 }),
            Err(FrameError::TooLarge { len: b, max: m2 }),
        ) if framing == Framing::Line => {
            assert_eq!((m1, m2), (&max_frame, &max_frame));
            assert!(*a > max_frame as u64 && *b > max_frame as u64);
        }
        (a, b) => assert_eq!(a, b, "same ending whatever the cuts"),
    }

    let delivered: Vec<u8> = whole.frames.iter().flat_map(|(f, _)| f.clone()).collect();
    assert!(
        stream.starts_with(&delivered),
        "frames are the stream, in order"
    );
    let stopped = whole.frames.len() >= stop;
    match whole.end {
        Ok(Eof::Clean) if !stopped => assert_eq!(delivered.len(), stream.len()),
        Ok(Eof::Dropped(n)) => {
            assert_eq!(framing, Framing::Length);
            assert_eq!(delivered.len() + n, stream.len());
            assert!(n > 0);
        }
        _ => {}
    }
}

/// The stream cut by cycling through `cuts`; what is left after a whole
/// cycle that moved nothing goes in one piece.
struct Pieces<'a> {
    rest: &'a [u8],
    cuts: &'a [usize],
    next: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() && self.next >= self.cuts.len() {
            return None;
        }
        let n = if self.cuts.iter().all(|&c| c == 0) {
            self.next = self.cuts.len();
            self.rest.len()
        } else {
            let c = self.cuts[self.next % self.cuts.len()];
            self.next += 1;
            c
        };
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(head)
    }
}

/// Fuzz target `buffer`.
///
/// Two buffers share one spare, as connections share the server's. Each
/// has a fixed growth limit (as each decoder or output buffer has). Input:
/// two limit bytes, then operations: a byte (low bit: which buffer; the
/// rest: push / consume / release / big push / shrink) and its arguments.
///
/// Checks after every operation, against a `VecDeque<u8>` per buffer: the
/// same bytes; an empty buffer holds no memory (capacity 0: the spare is
/// only taken by a push of at least one byte); capacity never exceeds what
/// [`Buffer::push`] documents: the limit while the bytes fit in it, else
/// what is needed plus the larger of [`OVERSHOOT`] and the overshoot so
/// far, or a spare it took (which must fit the limit and at most twice
/// the push); `shrink` brings it back under the limit; the spare stays
/// empty, at most [`SPARE_MAX`], and changes only as `push` and `release`
/// document.
pub fn buffer(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = [buffer_limit(input.byte()), buffer_limit(input.byte())];
    let mut bufs = [Buffer::new(), Buffer::new()];
    let mut models = [VecDeque::new(), VecDeque::new()];
    // Per buffer: the most capacity it may hold until it next empties.
    let mut allowed = [0usize; 2];
    let mut spare: Vec<u8> = Vec::new();
    let mut counter = 0u8;
    let mut ops = 0;
    while !input.is_empty() && ops < 10_000 {
        ops += 1;
        let op = input.byte();
        let i = usize::from(op & 1);
        let (b, model, limit) = (&mut bufs[i], &mut models[i], limits[i]);
        let spare_before = spare.capacity();
        let cap_before = b.capacity();
        match (op >> 1) % 5 {
            kind @ (0 | 3) => {
                let n = match kind {
                    0 => input.size(),
                    _ => usize::from(input.byte()) << 12,
                };
                let data: Vec<u8> = (0..n)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        counter
                    })
                    .collect();
                let held = model.len();
                let needed = held + n;
                let takes = cap_before == 0
                    && n > 0
                    && spare_before > 0
                    && spare_before <= limit
                    && spare_before / 2 <= needed.max(MIN_ALLOC);
                b.push(&data, limit, &mut spare);
                model.extend(&data);
                if takes {
                    assert_eq!(spare.capacity(), 0, "the spare was taken");
                    allowed[i] = allowed[i].max(spare_before);
                } else {
                    assert_eq!(spare.capacity(), spare_before, "the spare stays");
                }
                let growth = if needed <= limit {
                    limit
                } else {
                    needed.saturating_add(OVERSHOOT.max(held.saturating_sub(limit)))
                };
                if n > 0 {
                    allowed[i] = allowed[i].max(growth);
                }
            }
            1 => {
                let n = usize::from(input.byte()) * 37 + usize::from(input.byte());
                b.consume(n, &mut spare);
                model.drain(..n.min(model.len()));
                if model.is_empty() {
                    expect_released(cap_before, spare_before, &spare);
                }
            }
            2 => {
                b.release(&mut spare);
                model.clear();
                expect_released(cap_before, spare_before, &spare);
            }
            _ => {
                b.shrink(limit);
                if model.len() <= limit {
                    assert!(b.capacity() <= limit.max(cap_before.min(limit)));
                    allowed[i] = allowed[i].min(limit);
                } else {
                    assert_eq!(b.capacity(), cap_before, "nothing to give back");
                }
                assert_eq!(spare.capacity(), spare_before);
            }
        }
        for ((b, model), allowed) in bufs.iter().zip(&models).zip(&mut allowed) {
            let (front, back) = model.as_slices();
            assert_eq!(b.len(), model.len());
            assert_eq!(&b.as_slice()[..front.len()], front);
            assert_eq!(&b.as_slice()[front.len()..], back);
            assert_eq!(b.is_empty(), model.is_empty());
            if b.is_empty() {
                assert_eq!(b.capacity(), 0, "an empty buffer holds no memory");
                *allowed = 0;
            }
            assert!(b.capacity() >= b.len());
            assert!(b.capacity() <= *allowed, "{} > {}", b.capacity(), allowed);
        }
        assert!(spare.is_empty());
        assert!(spare.capacity() <= SPARE_MAX);
    }
}

/// A buffer's growth limit from a byte: small ones, the allocation
/// granule's neighbourhood, a few large, and "none".
fn buffer_limit(b: u8) -> usize {
    match b % 8 {
        0 => usize::MAX,
        1 => SPARE_MAX + 1,
        2 => usize::from(b),
        3 => 4096 - 1 + usize::from(b % 3),
        _ => usize::from(b) << (b % 13),
    }
}

/// After a buffer of capacity `cap` released into a spare of capacity
/// `before`: the spare keeps the larger allocation, unless it is too big.
fn expect_released(cap: usize, before: usize, spare: &Vec<u8>) {
    let keep = cap > before && cap <= SPARE_MAX;
    let want = if keep { cap } else { before };
    assert_eq!(spare.capacity(), want, "spare after releasing {cap} bytes");
}
