//! Every request id ever freed (and not reused), for exact double-free detection.
//!
//! A bounded "recently freed" memory forgets an id after enough other frees,
//! and a double free then reads as an unknown id. Engines hand out request
//! ids mostly in increasing order, so the freed ids form few runs: they are
//! kept as disjoint half-open intervals `[start, end)`, and memory grows with
//! the number of gaps (ids live or never used between freed ones), not with
//! the number of frees.

use std::collections::BTreeMap;

/// A set of `i64` ids stored as disjoint, non-adjacent intervals.
///
/// ```
/// use slabcache_core::blocks::FreedIds;
/// let mut s = FreedIds::default();
/// for id in 0..100_000 { s.insert(id); }
/// assert!(s.contains(5) && !s.contains(100_000));
/// assert_eq!(s.num_intervals(), 1);
/// s.remove(5);                         // id 5 is live again
/// assert!(!s.contains(5));
/// assert_eq!(s.num_intervals(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FreedIds {
    /// start -> end (exclusive); `end` of `i64::MAX` never occurs for `i64::MAX`
    /// itself, so that id is kept in `has_max`.
    runs: BTreeMap<i64, i64>,
    has_max: bool,
}

impl FreedIds {
    /// Whether `id` is in the set.
    pub fn contains(&self, id: i64) -> bool {
        if id == i64::MAX {
            return self.has_max;
        }
        self.runs
            .range(..=id)
            .next_back()
            .is_some_and(|(_, &end)| id < end)
    }

    /// Adds `id`; `false` if it was already there.
    pub fn insert(&mut self, id: i64) -> bool {
        if id == i64::MAX {
            return !std::mem::replace(&mut self.has_max, true);
        }
        if self.contains(id) {
            return false;
        }
        let (mut start, mut end) = (id, id + 1);
        // Merge with the run ending at `id` and the run starting at `id + 1`.
        if let Some((&s, &e)) = self.runs.range(..id).next_back() {
            if e == id {
                start = s;
            }
        }
        if let Some(e) = self.runs.remove(&end) {
            end = e;
        }
        self.runs.insert(start, end);
        true
    }

    /// Removes `id` (an id that becomes live again); `false` if it was not there.
    pub fn remove(&mut self, id: i64) -> bool {
        if id == i64::MAX {
            return std::mem::replace(&mut self.has_max, false);
        }
        let Some((&s, &e)) = self.runs.range(..=id).next_back() else {
            return false;
        };
        if id >= e {
            return false;
        }
        self.runs.remove(&s);
        if s < id {
            self.runs.insert(s, id);
        }
        if id + 1 < e {
            self.runs.insert(id + 1, e);
        }
        true
    }

    /// `true` when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && !self.has_max
    }

    /// Intervals held (the memory cost).
    pub fn num_intervals(&self) -> usize {
        self.runs.len() + usize::from(self.has_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn matches_a_hash_set_on_mixed_operations() {
        let mut s = FreedIds::default();
        let mut model = HashSet::new();
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = ((x >> 33) % 300) as i64 - 150;
            if x & 3 == 0 {
                assert_eq!(s.remove(id), model.remove(&id));
            } else {
                assert_eq!(s.insert(id), model.insert(id));
            }
        }
        for id in -160..160 {
            assert_eq!(s.contains(id), model.contains(&id), "id {id}");
        }
    }

    #[test]
    fn extremes() {
        let mut s = FreedIds::default();
        assert!(s.insert(i64::MAX) && s.insert(i64::MIN) && s.insert(i64::MAX - 1));
        assert!(s.contains(i64::MAX) && s.contains(i64::MIN) && s.contains(i64::MAX - 1));
        assert!(!s.insert(i64::MAX));
        assert!(s.remove(i64::MAX) && !s.contains(i64::MAX));
        assert!(s.contains(i64::MAX - 1));
    }

    #[test]
    fn increasing_ids_stay_one_interval() {
        let mut s = FreedIds::default();
        // Freed out of order within a window, as requests finish.
        for base in (0..200_000).step_by(8) {
            for k in [3, 0, 7, 1, 6, 2, 5, 4] {
                s.insert(base + k);
            }
        }
        assert_eq!(s.num_intervals(), 1);
    }
}
