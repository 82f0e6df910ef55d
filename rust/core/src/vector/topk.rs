//! A bounded collector that keeps the `k` best `(rank, key)` pairs.
//!
//! Order: a higher rank is better; equal ranks prefer the smaller key, so
//! results are deterministic however the scan is split across threads.
//!
//! Not a binary heap: candidates that reach the current threshold are
//! appended to a buffer of up to `2k` (at least `k + 32`) entries, and a full
//! buffer is cut back to its best `k` by selection, which raises the
//! threshold. A push that enters costs an append instead of a sift through
//! the heap (`log k` compare-and-swaps), and the cuts cost O(1) per push
//! amortized. That matters when candidates arrive in no particular order
//! (the clustered index's list-by-list batch scan, where a heap took a
//! quarter of the time).

use std::cmp::Ordering;

/// The `k` best of everything pushed so far.
///
/// ```
/// use slabcache_core::vector::TopK;
/// let mut t = TopK::new(2);
/// for (rank, key) in [(0.5, 1), (0.9, 2), (0.1, 3), (0.7, 4)] {
///     t.push(rank, key);
/// }
/// assert_eq!(t.into_sorted(), vec![(0.9, 2), (0.7, 4)]);
/// ```
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    /// Candidates, unordered; every entry better than `threshold` or tied with it.
    buf: Vec<(f32, u64)>,
    /// The rank a candidate must reach to enter (`-inf` until the first cut).
    threshold: f32,
}

/// `a` before `b` when `a` is better (higher rank, then smaller key).
#[inline]
fn order(a: &(f32, u64), b: &(f32, u64)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl TopK {
    /// An empty collector that keeps at most `k` entries.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            buf: Vec::new(),
            threshold: f32::NEG_INFINITY,
        }
    }

    fn cap(&self) -> usize {
        (2 * self.k).max(self.k + 32)
    }

    /// The most entries kept.
    pub fn k(&self) -> usize {
        self.k
    }

    /// How many entries are kept now (at most `k`).
    pub fn len(&self) -> usize {
        self.buf.len().min(self.k)
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() || self.k == 0
    }

    /// Offers a candidate; cheap when it cannot enter. A NaN rank (an
    /// overflowed score) never enters.
    #[inline]
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn push(&mut self, rank: f32, key: u64) {
        // `!(>=)` rather than `<`: the same one comparison, and it also turns NaN away.
        if !(rank >= self.threshold) || self.k == 0 {
            return;
        }
        if self.buf.len() >= self.cap() {
            self.cut();
        }
        self.buf.push((rank, key));
    }

    /// Keeps the best `k` of the buffer and raises the threshold to the worst of them.
    #[inline(never)]
    fn cut(&mut self) {
        if self.buf.len() <= self.k {
            return;
        }
        let k = self.k;
        self.buf.select_nth_unstable_by(k - 1, order);
        self.buf.truncate(k);
        self.threshold = self.buf[k - 1].0;
        // Equal ranks with a larger key than the k-th can never enter; those with a
        // smaller one still can, so the threshold admits ties.
    }

    /// Adds every entry of `other`.
    pub fn merge(&mut self, other: TopK) {
        self.merge_ref(&other);
    }

    /// Adds every entry of `other`, leaving it as it is.
    pub fn merge_ref(&mut self, other: &TopK) {
        for item in &other.buf {
            self.push(item.0, item.1);
        }
    }

    /// The kept entries, best first.
    pub fn into_sorted(mut self) -> Vec<(f32, u64)> {
        if self.k == 0 {
            return Vec::new();
        }
        self.cut();
        self.buf.sort_unstable_by(order);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_with_deterministic_ties() {
        let mut t = TopK::new(3);
        for key in [5u64, 3, 9, 1, 7] {
            t.push(1.0, key);
        }
        assert_eq!(t.into_sorted(), vec![(1.0, 1), (1.0, 3), (1.0, 5)]);
    }

    #[test]
    fn nan_never_enters() {
        let mut t = TopK::new(2);
        t.push(f32::NAN, 1);
        t.push(f32::NEG_INFINITY, 2);
        t.push(f32::NAN, 3);
        assert_eq!(t.into_sorted(), vec![(f32::NEG_INFINITY, 2)]);
    }

    #[test]
    fn matches_a_full_sort() {
        let vals: Vec<f32> = (0..500).map(|i| ((i * 7919) % 113) as f32).collect();
        for k in [0usize, 1, 7, 100, 600] {
            let mut t = TopK::new(k);
            for (i, &v) in vals.iter().enumerate() {
                t.push(v, i as u64);
            }
            let mut all: Vec<(f32, u64)> = vals
                .iter()
                .enumerate()
                .map(|(i, &v)| (v, i as u64))
                .collect();
            all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            all.truncate(k);
            assert_eq!(t.into_sorted(), all);
        }
    }
}
