//! Bounded byte buffers that hold heap memory only while they hold bytes.
//!
//! A connection keeps bytes only while it has a partial frame or unsent
//! output; an idle one holds no allocation at all. To keep a busy
//! connection from allocating on every event, a drained buffer hands its
//! allocation to a *spare* owned by the server (one per server, not per
//! connection), and the next buffer that needs memory takes it back.
//!
//! ```text
//!            start               len
//!   bytes:  [ consumed | pending  ]   spare capacity ...
//!            ^^^^^^^^^^ reclaimed by compaction when the buffer must grow
//! ```

/// The largest allocation a drained buffer may leave in the spare; bigger
/// ones are freed so that one burst does not pin memory for ever.
pub const SPARE_MAX: usize = 1 << 20;

/// The smallest allocation made for a buffer: small frames share one.
pub const MIN_ALLOC: usize = 4 << 10;

/// The most a stream read takes at once: the size of the server's one
/// shared read buffer. Larger reads were measured (one stream of 64 KiB
/// messages): 128 KiB halves the syscalls per message, yet on a quiet
/// machine costs 2% more CPU per GB and raises the median latency from 51
/// to 77 µs, since two messages wait for one read; 256 KiB overflows the
/// default 208 KiB send buffer on the way back.
pub const READ_SIZE: usize = 64 << 10;

/// The least room a buffer grown past its limit gets beyond what it
/// needs: one read's worth ([`READ_SIZE`]), so a burst past the limit (the
/// replies to one read) costs one or two reallocations, not one per frame.
pub const OVERSHOOT: usize = READ_SIZE;

/// The server's spare allocations, one for partial input frames and one for
/// output, lent to whichever connection needs memory next; and where the
/// descriptors of a write-through reply wait to be written.
#[derive(Debug, Default)]
pub struct Spares {
    /// For decoders' partial frames.
    pub input: Vec<u8>,
    /// For unsent output.
    pub output: Vec<u8>,
    /// The descriptors riding on the head of the write-through piece
    /// [`Conn::handle_read`](crate::conn::Conn::handle_read) named, until
    /// [`Conn::handle_through`](crate::conn::Conn::handle_through); empty
    /// otherwise (one for the server, so an echo that carries descriptors
    /// allocates nothing).
    pub through_fds: Vec<std::os::fd::OwnedFd>,
}

/// A FIFO byte buffer with a read cursor.
///
/// Invariants: `start <= bytes.len()`; `start == bytes.len()` only when both
/// are 0; an empty buffer has capacity 0 unless it was just handed a spare.
#[derive(Debug, Default)]
pub struct Buffer {
    /// The bytes; `bytes[..start]` are consumed and await compaction.
    bytes: Vec<u8>,
    /// Read cursor into `bytes`.
    start: usize,
}

impl Buffer {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Buffer {
        Buffer {
            bytes: Vec::new(),
            start: 0,
        }
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of heap memory held (what the memory bounds are about).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The bytes held, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Appends `data`.
    ///
    /// Growth: by doubling (from 4 KiB) but never past `limit` bytes of
    /// capacity while the bytes fit in it; past it (a burst the caller let
    /// through), to what is needed plus [`OVERSHOOT`] or the overshoot so
    /// far, whichever is more, so a burst costs few reallocations and a
    /// flood stays amortized O(1) per byte. A buffer without memory takes
    /// `spare`'s allocation if that fits both `limit` and the push (at most
    /// twice what it would allocate itself), so a big spare never inflates
    /// a small buffer.
    pub fn push(&mut self, data: &[u8], limit: usize, spare: &mut Vec<u8>) {
        self.start = append(&mut self.bytes, self.start, data, limit, spare);
    }

    /// Gives back capacity past `limit` once the bytes held fit under it
    /// again (after a burst past the limit has drained).
    pub fn shrink(&mut self, limit: usize) {
        if self.bytes.capacity() > limit && self.len() <= limit {
            self.bytes.drain(..self.start);
            self.start = 0;
            self.bytes.shrink_to(limit);
        }
    }

    /// Drops the oldest `n` bytes (at most [`len`](Self::len)); when the
    /// buffer empties, its allocation goes to `spare` or is freed.
    pub fn consume(&mut self, n: usize, spare: &mut Vec<u8>) {
        self.start += n.min(self.len());
        if self.start == self.bytes.len() {
            self.release(spare);
        }
    }

    /// Empties the buffer and gives back its allocation, to `spare` if
    /// that is worth it, else to the allocator.
    pub fn release(&mut self, spare: &mut Vec<u8>) {
        let mut bytes = std::mem::take(&mut self.bytes);
        self.start = 0;
        if bytes.capacity() > spare.capacity() && bytes.capacity() <= SPARE_MAX {
            bytes.clear();
            *spare = bytes;
        }
    }
}

/// Appends `data` to `bytes`, of which the first `start` are consumed,
/// growing as [`Buffer::push`] documents; returns the new `start` (0 once
/// the consumed front was reclaimed).
#[inline(always)]
fn append(
    bytes: &mut Vec<u8>,
    mut start: usize,
    data: &[u8],
    limit: usize,
    spare: &mut Vec<u8>,
) -> usize {
    if data.is_empty() {
        return start;
    }
    let held = bytes.len() - start;
    let needed = held + data.len();
    let fits = spare.capacity() <= limit && spare.capacity() / 2 <= needed.max(MIN_ALLOC);
    if bytes.capacity() == 0 && spare.capacity() != 0 && fits {
        std::mem::swap(bytes, spare);
        bytes.clear();
    }
    if needed > bytes.capacity() - start {
        // Reclaim the consumed front before asking for more memory.
        bytes.drain(..start);
        start = 0;
        if needed > bytes.capacity() {
            let target = if needed <= limit {
                (bytes.capacity() * 2).max(MIN_ALLOC).min(limit).max(needed)
            } else {
                needed.saturating_add(OVERSHOOT.max(held.saturating_sub(limit)))
            };
            bytes.reserve_exact(target - bytes.len());
        }
    }
    bytes.extend_from_slice(data);
    start
}

/// A [`Buffer`] without the read cursor, one word smaller: appended to,
/// then emptied whole. A decoder's partial frame is one (it is handed on
/// complete, never consumed in part), kept in every connection.
///
/// Invariant: an empty one has capacity 0 unless it was just handed a
/// spare.
#[derive(Debug, Default)]
pub struct Partial {
    bytes: Vec<u8>,
}

impl Partial {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Partial {
        Partial { bytes: Vec::new() }
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes of heap memory held.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends `data`, growing as [`Buffer::push`] does.
    pub fn push(&mut self, data: &[u8], limit: usize, spare: &mut Vec<u8>) {
        append(&mut self.bytes, 0, data, limit, spare);
    }

    /// Empties the buffer and gives back its allocation, as
    /// [`Buffer::release`] does.
    pub fn release(&mut self, spare: &mut Vec<u8>) {
        let mut bytes = std::mem::take(&mut self.bytes);
        if bytes.capacity() > spare.capacity() && bytes.capacity() <= SPARE_MAX {
            bytes.clear();
            *spare = bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_buffer_holds_no_memory() {
        let b = Buffer::new();
        assert_eq!(b.capacity(), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn drained_buffer_hands_allocation_to_spare_and_back() {
        let mut spare = Vec::new();
        let mut b = Buffer::new();
        b.push(b"hello", usize::MAX, &mut spare);
        let cap = b.capacity();
        assert!(cap >= 5);
        b.consume(5, &mut spare);
        assert_eq!(b.capacity(), 0);
        assert_eq!(spare.capacity(), cap);
        b.push(b"again", usize::MAX, &mut spare);
        assert_eq!(
            spare.capacity(),
            0,
            "the spare was reused, not a new allocation"
        );
        assert_eq!(b.as_slice(), b"again");
    }

    #[test]
    fn growth_respects_the_limit_hint() {
        let mut spare = Vec::new();
        let mut b = Buffer::new();
        for _ in 0..100 {
            b.push(&[7; 100], 10_000, &mut spare);
        }
        assert_eq!(b.len(), 10_000);
        assert!(b.capacity() <= 10_000);
    }

    #[test]
    fn partial_consume_keeps_order_across_compaction() {
        let mut spare = Vec::new();
        let mut b = Buffer::new();
        b.push(b"abcdef", 8, &mut spare);
        b.consume(4, &mut spare);
        b.push(b"ghijkl", 8, &mut spare);
        assert_eq!(b.as_slice(), b"efghijkl");
    }

    #[test]
    fn partial_grows_like_a_buffer_and_gives_its_memory_back() {
        let mut spare = Vec::new();
        let mut p = Partial::new();
        p.push(b"abc", 10_000, &mut spare);
        p.push(b"def", 10_000, &mut spare);
        assert_eq!(p.as_slice(), b"abcdef");
        assert_eq!(p.capacity(), MIN_ALLOC);
        p.release(&mut spare);
        assert!(p.is_empty());
        assert_eq!(p.capacity(), 0);
        assert_eq!(
            spare.capacity(),
            MIN_ALLOC,
            "the allocation went to the spare"
        );
        p.push(b"x", 10_000, &mut spare);
        assert_eq!(spare.capacity(), 0, "and came back");
    }

    #[test]
    fn huge_allocations_are_not_kept_as_spare() {
        let mut spare = Vec::new();
        let mut b = Buffer::new();
        b.push(&vec![0; SPARE_MAX + 1], usize::MAX, &mut spare);
        b.consume(usize::MAX, &mut spare);
        assert_eq!(spare.capacity(), 0);
        assert_eq!(b.capacity(), 0);
    }
}
