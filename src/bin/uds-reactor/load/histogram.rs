//! A latency histogram with logarithmic buckets (HDR-like): 32 linear
//! sub-buckets per power of two, so any recorded value is reported within
//! about 3% of itself, in a fixed 15 KiB whatever the range. Recording is
//! a few instructions and never allocates.

/// Linear sub-buckets per power of two, as a shift.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `SUB` have a bucket each; above, 32 per power of two up
/// to 2^64.
const BUCKETS: usize = ((64 - SUB_BITS + 1) * SUB as u32) as usize;

/// Counts of values (nanoseconds, say) in logarithmic buckets, plus the
/// exact minimum, maximum and sum.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
    }

    /// Largest value recorded (0 if none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (0 if none).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Mean of the values recorded (0 if none).
    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / u128::from(self.total)) as u64
        }
    }

    /// The value at quantile `q` (0.5 = median, 0.999 = p99.9): the middle
    /// of the bucket holding it, clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bucket(i);
                return (lo + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// A bucket's lowest value and width.
fn bucket(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = i % SUB;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB + sub) << (exp - SUB_BITS), width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_within_three_percent() {
        for v in [0, 1, 31, 32, 33, 63, 64, 1000, 123_456, 1 << 40, u64::MAX] {
            let (lo, width) = bucket(index(v));
            assert!(lo <= v && v - lo < width, "{v} not in [{lo}, +{width})");
            assert!(v < 64 || width * 32 <= lo, "bucket of {v} too wide");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        for v in 1..=10_000 {
            h.record(v * 1000);
        }
        let near = |got: u64, want: u64| got.abs_diff(want) * 100 <= want * 3;
        assert!(near(h.quantile(0.5), 5_000_000), "{}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 9_900_000), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.mean(), 5_000_500);
        h.clear();
        assert_eq!((h.total, h.quantile(0.5), h.min()), (0, 0, 0));
    }
}
