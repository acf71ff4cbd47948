//! What every message looks like, derived from its connection's seed and
//! its number, so echoes are checked without keeping what was sent.
//!
//! ```text
//! message k of a connection with seed s, framing length:
//! +------------------+-----------------------------------------+
//! | size (u32, BE)   | pattern[off(s, k) .. off(s, k) + size]  |   (+ "\n" for line)
//! +------------------+-----------------------------------------+
//! off(s, k) = (s + k * STEP) mod SPAN, SPAN prime
//! ```
//!
//! Consecutive messages start at different offsets of one random pattern,
//! so a lost, repeated or reordered message fails the check as surely as
//! a flipped byte, and sending or checking is a `memcmp` against a slice:
//! nothing is generated or allocated per message.

use uds_reactor::codec::HEADER_LEN;
use uds_reactor::{Framing, SocketType};

/// Distinct offsets into the pattern (a prime, so offsets cycle slowly).
const SPAN: u64 = 4093;
/// Offset step between consecutive messages (coprime with `SPAN`).
const STEP: u64 = 1543;

/// The wire form of every message of a run.
#[derive(Debug)]
pub(crate) struct Wire {
    /// The `length` header (the same for every message), if any.
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// Payload bytes per message.
    size: usize,
    /// `"\n"` for line framing, else empty.
    tail: &'static [u8],
    /// `SPAN + size` random bytes (no `\n` for line framing).
    pattern: Box<[u8]>,
}

impl Wire {
    /// Messages of `size` payload bytes for this socket type and framing.
    /// (`size` must fit in a `u32` for length framing; the caller checks.)
    pub(crate) fn new(ty: SocketType, framing: Framing, size: usize) -> Wire {
        let framing = if ty == SocketType::Stream {
            framing
        } else {
            Framing::Raw
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let pattern = (0..SPAN as usize + size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match framing {
                    // Printable, so never a newline.
                    Framing::Line => b' ' + (x % 95) as u8,
                    _ => (x >> 32) as u8,
                }
            })
            .collect();
        let (head, head_len) = match framing {
            Framing::Length => ((size as u32).to_be_bytes(), HEADER_LEN),
            _ => ([0; HEADER_LEN], 0),
        };
        Wire {
            head,
            head_len,
            size,
            tail: if framing == Framing::Line { b"\n" } else { b"" },
            pattern,
        }
    }

    /// Bytes of one message on the wire (header and newline included).
    pub(crate) fn len(&self) -> usize {
        self.head_len + self.size + self.tail.len()
    }

    /// The payload of message `k` of the connection seeded `seed`.
    pub(crate) fn payload(&self, seed: u64, k: u64) -> &[u8] {
        let off = (seed.wrapping_add(k.wrapping_mul(STEP)) % SPAN) as usize;
        &self.pattern[off..off + self.size]
    }

    /// Message `k`'s wire bytes from offset `at` to the end of the part
    /// (header, payload, newline) that holds `at`; empty past the end.
    pub(crate) fn segment(&self, seed: u64, k: u64, at: usize) -> &[u8] {
        if at < self.head_len {
            &self.head[at..self.head_len]
        } else if at < self.head_len + self.size {
            &self.payload(seed, k)[at - self.head_len..]
        } else {
            self.tail
                .get(at - self.head_len - self.size..)
                .unwrap_or(&[])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uds_reactor::codec;

    fn whole(w: &Wire, seed: u64, k: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < w.len() {
            out.extend_from_slice(w.segment(seed, k, out.len()));
        }
        out
    }

    #[test]
    fn messages_are_encoded_as_the_codec_would() {
        for framing in [Framing::Raw, Framing::Line, Framing::Length] {
            let w = Wire::new(SocketType::Stream, framing, 100);
            let mut want = Vec::new();
            codec::encode(framing, w.payload(7, 3), &mut want).unwrap();
            assert_eq!(whole(&w, 7, 3), want, "{framing}");
        }
        let line = Wire::new(SocketType::Stream, Framing::Line, 5000);
        assert!(!line.payload(1, 2).contains(&b'\n'));
    }

    #[test]
    fn neighbouring_messages_differ() {
        let w = Wire::new(SocketType::Seqpacket, Framing::Raw, 64);
        for k in 0..1000 {
            assert_ne!(w.payload(5, k), w.payload(5, k + 1));
            assert_ne!(w.payload(5, k), w.payload(6, k));
        }
    }
}
