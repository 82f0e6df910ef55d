//! A bounded heap that keeps the `k` best `(rank, key)` pairs.
//!
//! Order: a higher rank is better; equal ranks prefer the smaller key, so
//! results are deterministic however the scan is split across threads.

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
    /// A min-heap on (rank, then larger key): `heap[0]` is the worst kept.
    heap: Vec<(f32, u64)>,
    /// The rank a candidate must reach to enter (`-inf` until full).
    threshold: f32,
}

#[inline]
fn better(a: (f32, u64), b: (f32, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl TopK {
    /// An empty heap that keeps at most `k` entries.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: Vec::with_capacity(k),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// How many entries are kept now.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Offers a candidate; cheap when it cannot enter. A NaN rank (an
    /// overflowed score) never enters.
    #[inline]
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn push(&mut self, rank: f32, key: u64) {
        // `!(>=)` rather than `<`: the same one comparison, and it also turns NaN away.
        if !(rank >= self.threshold) {
            return;
        }
        self.push_slow((rank, key));
    }

    #[inline(never)]
    fn push_slow(&mut self, item: (f32, u64)) {
        if self.heap.len() < self.k {
            self.heap.push(item);
            self.sift_up(self.heap.len() - 1);
            if self.heap.len() == self.k {
                self.threshold = self.heap[0].0;
            }
        } else if self.k > 0 && better(item, self.heap[0]) {
            self.heap[0] = item;
            self.sift_down(0);
            self.threshold = self.heap[0].0;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if better(self.heap[p], self.heap[i]) {
                self.heap.swap(p, i);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let mut worst = l;
            if r < n && better(self.heap[l], self.heap[r]) {
                worst = r;
            }
            if better(self.heap[i], self.heap[worst]) {
                self.heap.swap(i, worst);
                i = worst;
            } else {
                break;
            }
        }
    }

    /// Adds every entry of `other`.
    pub fn merge(&mut self, other: TopK) {
        for item in other.heap {
            self.push(item.0, item.1);
        }
    }

    /// The kept entries, best first.
    pub fn into_sorted(mut self) -> Vec<(f32, u64)> {
        self.heap.sort_unstable_by(|a, b| {
            if better(*a, *b) {
                std::cmp::Ordering::Less
            } else if better(*b, *a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        self.heap
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
