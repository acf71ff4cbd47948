//! The `buffer` fuzz target: [`Buffer`] operations against a `VecDeque`
//! model.

use std::collections::VecDeque;

use super::Input;
use crate::buffer::{Buffer, MIN_ALLOC, OVERSHOOT, SPARE_MAX};

/// Fuzz target `buffer`.
///
/// Two buffers share one spare, as connections share the server's. Each
/// has a fixed growth limit (as each decoder or output buffer has). Input:
/// two limit bytes, then operations: a byte (low bit: which buffer; the
/// rest: push / consume / release / big push / shrink) and its arguments.
/// Pushed bytes are fresh windows of a pseudo-random pattern, and a
/// buffer is filled to at most `HELD_MAX`.
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
    let mut models: [VecDeque<u8>; 2] = [VecDeque::new(), VecDeque::new()];
    // Per buffer: the most capacity it may hold until it next empties.
    let mut allowed = [0usize; 2];
    let mut spare: Vec<u8> = Vec::new();
    let pattern = pattern();
    let mut counter = 0usize;
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
                let n = n.min(HELD_MAX.saturating_sub(model.len()));
                // A window of the pattern that starts somewhere new, so a
                // lost, doubled or reordered byte shows.
                let start = counter % PATTERN_SLACK;
                counter = counter.wrapping_add(n | 1);
                let pushed = Pushed {
                    data: &pattern[start..start + n],
                    limit,
                    cap_before,
                    spare_before,
                };
                pushed.apply(b, model, &mut spare, &mut allowed[i]);
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
        check(&bufs, &models, &mut allowed, &spare);
    }
}

/// One push, applied to a buffer and its model, with the checks on the
/// spare hand-off and the growth it allows.
struct Pushed<'a> {
    data: &'a [u8],
    limit: usize,
    cap_before: usize,
    spare_before: usize,
}

impl Pushed<'_> {
    fn apply(
        &self,
        b: &mut Buffer,
        model: &mut VecDeque<u8>,
        spare: &mut Vec<u8>,
        allowed: &mut usize,
    ) {
        let (n, held, limit) = (self.data.len(), model.len(), self.limit);
        let needed = held + n;
        let takes = self.cap_before == 0
            && n > 0
            && self.spare_before > 0
            && self.spare_before <= limit
            && self.spare_before / 2 <= needed.max(MIN_ALLOC);
        b.push(self.data, limit, spare);
        model.extend(self.data);
        if takes {
            assert_eq!(spare.capacity(), 0, "the spare was taken");
            *allowed = (*allowed).max(self.spare_before);
        } else {
            assert_eq!(spare.capacity(), self.spare_before, "the spare stays");
        }
        let growth = if needed <= limit {
            limit
        } else {
            needed.saturating_add(OVERSHOOT.max(held.saturating_sub(limit)))
        };
        if n > 0 {
            *allowed = (*allowed).max(growth);
        }
    }
}

/// After every operation: each buffer holds what its model holds, within
/// the capacity allowed; the spare is empty and bounded.
fn check(
    bufs: &[Buffer; 2],
    models: &[VecDeque<u8>; 2],
    allowed: &mut [usize; 2],
    spare: &Vec<u8>,
) {
    for ((b, model), allowed) in bufs.iter().zip(models).zip(allowed.iter_mut()) {
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

/// The most bytes a buffer is made to hold: past [`SPARE_MAX`] and
/// large limits, yet small enough that checking every byte after every
/// operation stays fast.
const HELD_MAX: usize = 3 << 20;

/// How far into the pattern a push may start.
const PATTERN_SLACK: usize = 4093;

/// Pseudo-random bytes (xorshift), without a short period, as long as the
/// largest push plus [`PATTERN_SLACK`]; built once per process.
fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..(255 << 12) + PATTERN_SLACK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    })
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
