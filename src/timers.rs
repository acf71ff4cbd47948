//! Deadlines: an indexed min-heap, so a timer can be moved earlier or
//! cancelled in O(log n), and a closed connection's timers go with it.
//! One structure for the server's own deadlines (idle, drain) and the
//! handler's ([`TimerId`]).
//!
//! Activity only ever moves a connection's idle deadline later, so a busy
//! connection costs nothing per event: its timer stays where it is, and
//! when it fires the connection finds its real deadline later and is
//! scheduled again once. Only an earlier deadline (the drain at shutdown)
//! moves a timer. Memory follows the timers that are set: a cancelled one
//! leaves nothing behind.
//!
//! ```text
//! entries (slab, key = TimerKey):  [ (deadline, owner, heap index) ... ]
//! heap (Vec of entry keys):        min-heap by deadline; entry.at == its index
//! ```

use std::time::Instant;

use slab::Slab;

/// Names one set timer, to move or cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey(usize);

/// A timer the handler set, to cancel it by. Slots are reused, so it
/// carries the serial of the timer it named: cancelling a timer that has
/// fired, or was cancelled, does nothing, whatever took its slot since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    serial: u64,
}

#[derive(Debug)]
struct Entry<T> {
    deadline: Instant,
    owner: T,
    /// Position in `heap`. Invariant: `heap[at] == this entry's key`.
    at: usize,
    /// Unique for the server's life: tells this timer from later ones in
    /// the same slot.
    serial: u64,
}

/// Pending deadlines, each with an owner (`T`: whom to call back).
#[derive(Debug)]
pub(crate) struct Timers<T> {
    entries: Slab<Entry<T>>,
    heap: Vec<usize>,
    next_serial: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            entries: Slab::new(),
            heap: Vec::new(),
            next_serial: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Reserves `bytes` of room for entries, and as much for their heap
    /// places, for at most `max` timers (address space: untouched, it is
    /// not resident).
    pub(crate) fn reserve(&mut self, max: usize, bytes: usize) {
        let entries = bytes / std::mem::size_of::<Entry<T>>();
        self.entries.reserve_exact(entries.min(max));
        let places = bytes / std::mem::size_of::<usize>();
        self.heap.reserve_exact(places.min(max));
    }
}

impl<T: Copy> Timers<T> {
    /// Makes sure `owner` is woken by `deadline`: sets a timer in `slot` if
    /// there is none, moves it earlier if it is later, else leaves it (a
    /// later deadline is found when the earlier one fires).
    pub(crate) fn schedule(&mut self, slot: &mut Option<TimerKey>, owner: T, deadline: Instant) {
        match *slot {
            Some(TimerKey(key)) => {
                let entry = &mut self.entries[key];
                if deadline < entry.deadline {
                    entry.deadline = deadline;
                    let at = entry.at;
                    self.sift_up(at);
                }
            }
            None => *slot = Some(TimerKey(self.insert(owner, deadline).key)),
        }
    }

    /// Sets a timer for `owner` at `deadline`.
    pub(crate) fn insert(&mut self, owner: T, deadline: Instant) -> TimerId {
        self.next_serial += 1;
        let serial = self.next_serial;
        let key = self.entries.insert(Entry {
            deadline,
            owner,
            at: self.heap.len(),
            serial,
        });
        self.heap.push(key);
        self.sift_up(self.heap.len() - 1);
        TimerId { key, serial }
    }

    /// Cancels the timer `id` names, if it is still set; gives its owner.
    pub(crate) fn cancel_id(&mut self, id: TimerId) -> Option<T> {
        match self.entries.get(id.key) {
            Some(entry) if entry.serial == id.serial => {
                let entry = self.entries.remove(id.key);
                self.remove_at(entry.at);
                Some(entry.owner)
            }
            _ => None,
        }
    }

    /// Cancels the timer in `slot`, if any.
    pub(crate) fn cancel(&mut self, slot: &mut Option<TimerKey>) {
        if let Some(TimerKey(key)) = slot.take() {
            if let Some(entry) = self.entries.try_remove(key) {
                self.remove_at(entry.at);
            }
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.first().map(|&key| self.entries[key].deadline)
    }

    /// Removes and returns the owner of one timer due at `now`, with the
    /// id it had (an owner's slot naming it must be cleared).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let &key = self.heap.first()?;
        if self.entries[key].deadline > now {
            return None;
        }
        let entry = self.entries.remove(key);
        self.remove_at(0);
        Some((
            TimerId {
                key,
                serial: entry.serial,
            },
            entry.owner,
        ))
    }

    /// Timers set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Takes heap position `at` out, filling it with the last entry.
    fn remove_at(&mut self, at: usize) {
        self.heap.swap_remove(at);
        if at < self.heap.len() {
            self.entries[self.heap[at]].at = at;
            self.sift_down(at);
            self.sift_up(at);
        }
    }

    fn deadline(&self, at: usize) -> Instant {
        self.entries[self.heap[at]].deadline
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.entries[self.heap[a]].at = a;
        self.entries[self.heap[b]].at = b;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.deadline(parent) <= self.deadline(at) {
                return;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if left < self.heap.len() && self.deadline(left) < self.deadline(least) {
                least = left;
            }
            if right < self.heap.len() && self.deadline(right) < self.deadline(least) {
                least = right;
            }
            if least == at {
                return;
            }
            self.swap(at, least);
            at = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Timers against a sorted list model, under a pseudo-random mix of
    /// schedules, cancels and pops.
    #[test]
    fn matches_a_sorted_model() {
        let base = Instant::now();
        let mut timers = Timers::default();
        let mut slots: Vec<Option<TimerKey>> = vec![None; 64];
        let mut model: Vec<Option<Instant>> = vec![None; 64];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let owner = (seed % 64) as usize;
            let at = base + Duration::from_millis((seed >> 8) % 1000);
            match (seed >> 40) % 4 {
                0 | 1 => {
                    timers.schedule(&mut slots[owner], owner, at);
                    let m = &mut model[owner];
                    *m = Some(m.map_or(at, |old| old.min(at)));
                }
                2 => {
                    timers.cancel(&mut slots[owner]);
                    model[owner] = None;
                }
                _ => {
                    let now = base + Duration::from_millis(step % 1000);
                    let due = model.iter().flatten().filter(|&&d| d <= now).min().copied();
                    match timers.pop_due(now) {
                        Some((id, o)) => {
                            assert_eq!(slots[o], Some(TimerKey(id.key)));
                            assert_eq!(model[o], due, "the earliest due timer fires");
                            slots[o] = None;
                            model[o] = None;
                        }
                        None => assert_eq!(due, None, "nothing due is missed"),
                    }
                }
            }
            assert_eq!(timers.next(), model.iter().flatten().min().copied());
            assert_eq!(timers.len(), model.iter().flatten().count());
        }
    }

    #[test]
    fn a_stale_id_cancels_nothing() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let first = timers.insert(1, now);
        assert_eq!(timers.pop_due(now), Some((first, 1)));
        // The slot is reused by a new timer: the old id must not touch it.
        let second = timers.insert(2, now + Duration::from_secs(1));
        assert_eq!(timers.cancel_id(first), None);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.cancel_id(second), Some(2));
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn cancelled_timers_leave_nothing() {
        let now = Instant::now();
        let mut timers = Timers::default();
        for i in 0..1000 {
            let mut slot = None;
            timers.schedule(&mut slot, i, now + Duration::from_secs(600));
            timers.cancel(&mut slot);
            assert_eq!(slot, None);
        }
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next(), None);
    }
}
