//! Deadlines for connections: a min-heap with lazy invalidation.
//!
//! Activity only ever moves a connection's idle deadline later, so a busy
//! connection costs nothing per event: its heap entry stays put, and when
//! it comes due the loop finds the real deadline later and pushes it back
//! once. An entry is live only while it matches the deadline its
//! connection recorded (`scheduled`); anything else is stale and skipped.
//! Cost per event is O(1); per expiry O(log n).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Pending deadlines, keyed by slab key.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Makes sure `key` is woken by `deadline`: pushes an entry only when
    /// the currently scheduled one (if any) is later.
    pub(crate) fn schedule(
        &mut self,
        key: usize,
        deadline: Option<Instant>,
        scheduled: &mut Option<Instant>,
    ) {
        if let Some(d) = deadline {
            if scheduled.is_none_or(|s| d < s) {
                self.heap.push(Reverse((d, key)));
                *scheduled = Some(d);
            }
        }
    }

    /// The earliest entry's time (possibly stale: waking early is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops one entry due at `now`, as (deadline, key).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}
