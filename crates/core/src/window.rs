//! Sliding-window counting for the alert rules: buckets `window / SLOTS`
//! wide (rounded up). The total covers the current (partial) bucket and the
//! `SLOTS` before it, so it never under-counts, and counts at most the events of
//! the last 13 buckets (the window rounded up to whole buckets, plus one): a
//! rule may fire up to a bucket (1/12 of the window, rounded up) early, never late. Fixed size, no allocation: 13 counters
//! and one slot number per window per key.

use crate::time::UnixMs;

/// Buckets per window.
pub const SLOTS: usize = 12;
/// Buckets kept: the window's, plus the partial current one.
const RING: usize = SLOTS + 1;

/// One sliding-window sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingSum {
    /// The slot number (`now / width`) of the newest bucket; 0 when empty.
    newest: i64,
    counts: [u64; RING],
}

/// Width of one bucket of a `window_ms` window (at least 1 ms).
pub fn bucket_ms(window_ms: i64) -> i64 {
    (window_ms.max(1) + SLOTS as i64 - 1) / SLOTS as i64
}

impl SlidingSum {
    /// Moves the window so its newest bucket is `now`'s, emptying the buckets
    /// that fell out. A `now` older than the newest bucket counts into the
    /// newest (events arrive nearly in order; a late one is not lost).
    fn advance(&mut self, now: UnixMs, window_ms: i64) -> usize {
        let slot = now.div_euclid(bucket_ms(window_ms));
        if slot > self.newest {
            let gap = (slot - self.newest).min(RING as i64) as usize;
            let from = (self.newest + 1).rem_euclid(RING as i64) as usize;
            for i in 0..gap {
                self.counts[(from + i) % RING] = 0;
            }
            self.newest = slot;
        }
        self.newest.rem_euclid(RING as i64) as usize
    }

    /// Adds `n` at `now`; returns the window's total after it.
    pub fn add(&mut self, now: UnixMs, window_ms: i64, n: u64) -> u64 {
        let at = self.advance(now, window_ms);
        self.counts[at] = self.counts[at].saturating_add(n);
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// The window's total at `now`.
    pub fn total(&mut self, now: UnixMs, window_ms: i64) -> u64 {
        self.advance(now, window_ms);
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// True when nothing is counted (the state can be dropped).
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_fall_out_of_the_window() {
        let mut w = SlidingSum::default();
        let minute = 60_000;
        assert_eq!(w.add(1_000_000, minute, 5), 5);
        assert_eq!(w.add(1_030_000, minute, 1), 6);
        // 61 s after the first: its bucket has left.
        assert_eq!(w.total(1_061_000 + 2 * bucket_ms(minute), minute), 1);
        assert_eq!(w.total(1_200_000, minute), 0);
        assert!(w.is_empty());
    }

    proptest! {
        /// Against an exact count: never below what the last window holds,
        /// never above what 13 buckets (the window rounded up, plus one) hold.
        #[test]
        fn within_one_bucket_of_the_exact_count(
            gaps in proptest::collection::vec(0i64..20_000, 1..300),
            window in 1_000i64..120_000,
        ) {
            let mut w = SlidingSum::default();
            let mut times = Vec::new();
            let mut now = 1_700_000_000_000i64;
            for g in gaps {
                now += g;
                times.push(now);
                let total = w.add(now, window, 1);
                let exact = times.iter().filter(|t| **t > now - window).count() as u64;
                // The ring spans the current partial bucket and 12 whole ones: at most
                // 13 buckets back, one more than the window (rounded up to whole buckets).
                let loose = times.iter().filter(|t| **t > now - (SLOTS as i64 + 1) * bucket_ms(window)).count() as u64;
                prop_assert!(total >= exact, "{total} < {exact}");
                prop_assert!(total <= loose, "{total} > {loose}");
            }
        }
    }
}
