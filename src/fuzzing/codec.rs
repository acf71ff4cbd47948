//! The `codec` fuzz target: a [`Decoder`] fed in arbitrary pieces against
//! itself fed at once and against a byte-at-a-time model of the framings.

use super::{framing, Input};
use crate::buffer::MIN_ALLOC;
use crate::codec::{self, Decoder, Eof, FrameError, HEADER_LEN};
use crate::config::Framing;

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

/// The decoder's memory bounds, after every chunk.
fn check_memory(d: &Decoder, spare: &Vec<u8>) {
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
    // Memory follows the bytes that arrived, not what a header
    // announces or the limit allows: none without a partial frame, at
    // most twice the partial (doubling growth, or a spare taken back)
    // or one allocation granule.
    if d.buffered() == 0 {
        assert_eq!(d.capacity(), 0, "no partial frame, no memory");
    }
    let grown = 2 * d.buffered().max(MIN_ALLOC);
    assert!(d.capacity() <= grown, "{} > {grown}", d.capacity());
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
/// Input: framing byte, max-frame size byte (0xfe: 4 GiB - 1, 0xff:
/// unlimited, else as `Input::size`), frame budget byte (0 means
/// unlimited, else stop delivery after that many frames), a count of cut
/// sizes and the cut sizes (bytes, cycled; 0 feeds an empty chunk), then
/// the stream.
///
/// Checks: the same frames and error whether the stream is fed at once,
/// in the arbitrary pieces, or a byte at a time, and the same as the
/// `model` of the framing (a line error's `len` is how much was seen
/// when it tripped, so only `max` and `len > max` are compared for
/// lines); frames concatenate back to a
/// prefix of the stream (all of it when nothing failed, less a dropped
/// partial length frame); each frame re-encodes to its wire form; the
/// decoder's buffered bytes and heap capacity never exceed
/// [`Decoder::limit`] (a constant of 0 bytes) nor twice the bytes it
/// holds (two 4 KiB granules for small partials), so a header announcing
/// 4 GiB reserves nothing; it holds nothing between frames, after EOF or
/// after an error.
pub fn codec(data: &[u8]) {
    let mut input = Input::new(data);
    let framing = framing(input.byte());
    let max_frame = match input.byte() {
        // No practical limit: a header may announce up to 4 GiB.
        0xfe => u32::MAX as usize,
        0xff => usize::MAX,
        b => Input::new(&[b]).size(),
    };
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
    let bytes = run_decoder(framing, max_frame, stream.chunks(1), stop);
    let model = model(framing, max_frame, stream, stop);

    for (other, what) in [(&cut, "cut"), (&bytes, "byte at a time"), (&model, "model")] {
        same(framing, max_frame, &whole, other, what);
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

/// Asserts `a` and `b` (the same stream, decoded two ways) agree: the
/// same frames (raw: the same bytes; its frames are whatever each call
/// brought) and the same ending (a line error's `len` is how much the
/// decoder had seen when it tripped, so for lines only `max` and
/// `len > max` are compared).
fn same(framing: Framing, max_frame: usize, a: &Decoded, b: &Decoded, what: &str) {
    if framing == Framing::Raw {
        let joined =
            |d: &Decoded| -> Vec<u8> { d.frames.iter().flat_map(|(f, _)| f.clone()).collect() };
        assert_eq!(joined(a), joined(b), "the same bytes: whole vs {what}");
    } else {
        assert_eq!(a.frames, b.frames, "the same frames: whole vs {what}");
    }
    match (&a.end, &b.end) {
        (
            Err(FrameError::TooLarge { len: a, max: m1 }),
            Err(FrameError::TooLarge { len: b, max: m2 }),
        ) if framing == Framing::Line => {
            assert_eq!((m1, m2), (&max_frame, &max_frame));
            assert!(*a > max_frame as u64 && *b > max_frame as u64);
        }
        (x, y) => assert_eq!(x, y, "the same ending: whole vs {what}"),
    }
}

/// SPEC's framings, one byte at a time, written from the contract rather
/// than from the decoder: a line is complete at its `\n` and too long
/// once its payload would pass `max_frame`; a length frame is too large as
/// soon as its header is complete and announces more than `max_frame`, and
/// complete at header plus payload; at EOF a line tail is a frame and a
/// partial length frame is dropped. Delivery stops after `stop` frames.
fn model(framing: Framing, max_frame: usize, stream: &[u8], stop: usize) -> Decoded {
    let mut frames = Vec::new();
    let mut cur = Vec::new();
    if framing == Framing::Raw {
        if !stream.is_empty() {
            frames.push((stream.to_vec(), false));
        }
        return Decoded {
            frames,
            end: Ok(Eof::Clean),
        };
    }
    for &b in stream {
        let complete = match framing {
            Framing::Line if b == b'\n' => true,
            Framing::Line if cur.len() == max_frame => {
                let len = cur.len() as u64 + 1;
                let end = Err(FrameError::TooLarge {
                    len,
                    max: max_frame,
                });
                return Decoded { frames, end };
            }
            _ => false,
        };
        cur.push(b);
        let complete = complete
            || match framing {
                Framing::Length if cur.len() >= HEADER_LEN => {
                    let n = u32::from_be_bytes([cur[0], cur[1], cur[2], cur[3]]);
                    if n as usize > max_frame {
                        let len = u64::from(n);
                        let end = Err(FrameError::TooLarge {
                            len,
                            max: max_frame,
                        });
                        return Decoded { frames, end };
                    }
                    cur.len() == HEADER_LEN + n as usize
                }
                _ => false,
            };
        if complete {
            frames.push((std::mem::take(&mut cur), false));
            if frames.len() >= stop {
                let end = Ok(Eof::Clean);
                return Decoded { frames, end };
            }
        }
    }
    let end = match framing {
        Framing::Line if !cur.is_empty() => {
            frames.push((cur, true));
            Eof::Clean
        }
        Framing::Length if !cur.is_empty() => Eof::Dropped(cur.len()),
        _ => Eof::Clean,
    };
    Decoded {
        frames,
        end: Ok(end),
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
