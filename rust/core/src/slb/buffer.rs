//! The lookaside buffer itself: per-scope FP32 rows, one global LRU.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::slb::dot::{best, DotFn};

/// The rows of one scope, back to back, with their keys and LRU ticks.
#[derive(Debug, Clone, Default)]
struct ScopeRows {
    name: Box<str>,
    vecs: Vec<f32>,
    keys: Vec<u64>,
    ticks: Vec<u64>,
}

/// A hit: the stored key and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlbHit {
    /// The key given to [`Slb::insert`].
    pub key: u64,
    /// Cosine similarity in `[-1, 1]`.
    pub score: f32,
}

/// A small FP32 buffer of recent vectors per scope, scanned exhaustively with
/// SIMD dot products before an index is searched (Aeon's semantic lookaside
/// buffer). Rows are stored unit-normalised, so a scan is one dot per row.
///
/// Capacity is bounded per scope and globally; when either is full the least
/// recently used row (of that scope, or of all scopes) is evicted. A hit
/// refreshes its row's recency. A scope is a hard partition: a query sees
/// only its own scope's rows.
///
/// ```
/// use slabcache_core::slb::Slb;
/// let mut slb = Slb::new(2, 4, 16).unwrap();
/// slb.insert("gpt-4o", 7, &[1.0, 0.0]).unwrap();
/// let hit = slb.find_nearest("gpt-4o", &[0.9, 0.1], 0.9).unwrap().unwrap();
/// assert_eq!(hit.key, 7);
/// assert!(slb.find_nearest("other-model", &[1.0, 0.0], 0.5).unwrap().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Slb {
    dim: usize,
    per_scope: usize,
    global: usize,
    scope_ids: HashMap<Box<str>, u32>,
    scopes: Vec<ScopeRows>,
    free_scopes: Vec<u32>,
    /// key -> (scope number, slot in that scope)
    slot_of: HashMap<u64, (u32, u32)>,
    /// tick -> key, oldest first
    lru: BTreeMap<u64, u64>,
    tick: u64,
    dot: DotFn,
    dot_name: &'static str,
}

/// Within this of ±1 a cosine is rounding noise of the normalisation: it is
/// reported as exactly ±1, so that `threshold = 1.0` matches equal vectors.
pub const COSINE_EPS: f32 = 4e-6;

/// Clamps a computed cosine to `[-1, 1]`, snapping rounding noise to ±1.
#[inline]
pub fn snap(c: f32) -> f32 {
    if c >= 1.0 - COSINE_EPS {
        1.0
    } else if c <= -1.0 + COSINE_EPS {
        -1.0
    } else {
        c
    }
}

/// Validates a cosine threshold.
pub fn check_threshold(t: f32) -> Result<()> {
    if !(-1.0..=1.0).contains(&t) {
        return Err(Error::invalid_argument(format!(
            "threshold must be a cosine similarity in [-1, 1], got {t}"
        )));
    }
    Ok(())
}

impl Slb {
    /// An empty buffer of `dim`-wide vectors holding at most `per_scope` rows
    /// per scope and `global` rows in all.
    pub fn new(dim: usize, per_scope: usize, global: usize) -> Result<Slb> {
        if dim == 0 || dim > crate::vector::MAX_DIM {
            return Err(Error::invalid_argument(format!(
                "dim must be in 1..={}, got {dim}",
                crate::vector::MAX_DIM
            )));
        }
        if per_scope == 0 || global == 0 {
            return Err(Error::invalid_argument(
                "per-scope and global capacities must be at least 1",
            ));
        }
        if global > u32::MAX as usize || per_scope > u32::MAX as usize {
            return Err(Error::invalid_argument("capacity must be below 2^32"));
        }
        let (dot, dot_name) = best();
        Ok(Slb {
            dim,
            per_scope,
            global,
            scope_ids: HashMap::new(),
            scopes: Vec::new(),
            free_scopes: Vec::new(),
            slot_of: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            dot,
            dot_name,
        })
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows allowed per scope.
    pub fn per_scope_capacity(&self) -> usize {
        self.per_scope
    }

    /// Rows allowed in all.
    pub fn capacity(&self) -> usize {
        self.global
    }

    /// The dot kernel in use (`"avx2-fma"` or `"portable"`).
    pub fn kernel(&self) -> &'static str {
        self.dot_name
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Rows held in `scope`.
    pub fn scope_len(&self, scope: &str) -> usize {
        self.scope_ids
            .get(scope)
            .map_or(0, |&s| self.scopes[s as usize].keys.len())
    }

    /// Scopes that hold at least one row.
    pub fn scopes(&self) -> Vec<String> {
        self.scope_ids.keys().map(|s| s.to_string()).collect()
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: u64) -> bool {
        self.slot_of.contains_key(&key)
    }

    /// Bytes held by rows and bookkeeping (approximate for the maps).
    pub fn memory_bytes(&self) -> usize {
        let rows: usize = self
            .scopes
            .iter()
            .map(|s| s.vecs.capacity() * 4 + s.keys.capacity() * 16)
            .sum();
        rows + self.slot_of.capacity() * 24 + self.lru.len() * 24
    }

    fn check_vec(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.dim {
            return Err(Error::invalid_argument(format!(
                "vector has {} values, the buffer has dim {}",
                v.len(),
                self.dim
            )));
        }
        crate::vector::check_finite(v, self.dim)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn scope_number(&mut self, scope: &str) -> u32 {
        if let Some(&s) = self.scope_ids.get(scope) {
            return s;
        }
        let rows = ScopeRows {
            name: scope.into(),
            ..ScopeRows::default()
        };
        let s = match self.free_scopes.pop() {
            Some(s) => {
                self.scopes[s as usize] = rows;
                s
            }
            None => {
                self.scopes.push(rows);
                (self.scopes.len() - 1) as u32
            }
        };
        self.scope_ids.insert(scope.into(), s);
        s
    }

    /// Adds (or replaces) `key`'s vector in `scope`; returns the keys evicted
    /// to make room (least recently used of the scope, then of all scopes).
    /// The vector is stored unit-normalised; a zero vector is stored as is
    /// (its cosine with everything is 0).
    pub fn insert(&mut self, scope: &str, key: u64, vector: &[f32]) -> Result<Vec<u64>> {
        self.check_vec(vector)?;
        self.remove(key);
        let mut evicted = Vec::new();
        let s = self.scope_number(scope);
        if self.scopes[s as usize].keys.len() >= self.per_scope {
            let rows = &self.scopes[s as usize];
            let (slot, _) = rows
                .ticks
                .iter()
                .enumerate()
                .min_by_key(|&(_, &t)| t)
                .expect("a full scope has rows");
            let victim = rows.keys[slot];
            self.remove(victim);
            evicted.push(victim);
        }
        while self.slot_of.len() >= self.global {
            let (_, &victim) = self.lru.first_key_value().expect("a full buffer has rows");
            self.remove(victim);
            evicted.push(victim);
        }
        // The scope may have been dropped (emptied) by an eviction above.
        let s = self.scope_number(scope);
        let norm = vector
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt();
        let inv = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
        let tick = self.next_tick();
        let rows = &mut self.scopes[s as usize];
        let slot = rows.keys.len() as u32;
        rows.vecs.extend(vector.iter().map(|&x| x * inv));
        rows.keys.push(key);
        rows.ticks.push(tick);
        self.slot_of.insert(key, (s, slot));
        self.lru.insert(tick, key);
        Ok(evicted)
    }

    /// Removes `key`; returns whether it was held.
    pub fn remove(&mut self, key: u64) -> bool {
        let Some((s, slot)) = self.slot_of.remove(&key) else {
            return false;
        };
        let d = self.dim;
        let rows = &mut self.scopes[s as usize];
        let slot = slot as usize;
        let tick = rows.ticks[slot];
        self.lru.remove(&tick);
        let last = rows.keys.len() - 1;
        if slot != last {
            rows.vecs.copy_within(last * d..(last + 1) * d, slot * d);
            rows.keys[slot] = rows.keys[last];
            rows.ticks[slot] = rows.ticks[last];
            self.slot_of.insert(rows.keys[slot], (s, slot as u32));
        }
        rows.vecs.truncate(last * d);
        rows.keys.truncate(last);
        rows.ticks.truncate(last);
        if rows.keys.is_empty() {
            let name = std::mem::take(&mut rows.name);
            self.scope_ids.remove(&name);
            self.scopes[s as usize] = ScopeRows::default();
            self.free_scopes.push(s);
        }
        true
    }

    /// Removes every row of `scope`; returns their keys.
    pub fn drop_scope(&mut self, scope: &str) -> Vec<u64> {
        let Some(&s) = self.scope_ids.get(scope) else {
            return Vec::new();
        };
        let keys = self.scopes[s as usize].keys.clone();
        for &k in &keys {
            self.remove(k);
        }
        keys
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.scope_ids.clear();
        self.scopes.clear();
        self.free_scopes.clear();
        self.slot_of.clear();
        self.lru.clear();
    }

    /// The best row of `scope` whose cosine with `query` is at least
    /// `threshold`, or `None`; a hit becomes the most recently used row.
    /// Ties go to the earlier slot.
    pub fn find_nearest(
        &mut self,
        scope: &str,
        query: &[f32],
        threshold: f32,
    ) -> Result<Option<SlbHit>> {
        self.check_vec(query)?;
        check_threshold(threshold)?;
        Ok(self.find_checked(scope, query, threshold, true))
    }

    /// [`find_nearest`](Self::find_nearest) without refreshing recency.
    pub fn peek_nearest(
        &self,
        scope: &str,
        query: &[f32],
        threshold: f32,
    ) -> Result<Option<SlbHit>> {
        self.check_vec(query)?;
        check_threshold(threshold)?;
        Ok(self.best_in(scope, query, threshold).map(|(h, _)| h))
    }

    fn best_in(&self, scope: &str, query: &[f32], threshold: f32) -> Option<(SlbHit, usize)> {
        let &s = self.scope_ids.get(scope)?;
        let rows = &self.scopes[s as usize];
        let qn = (self.dot)(query, query).sqrt();
        if qn == 0.0 {
            // Cosine with a zero query is 0 everywhere.
            return (threshold <= 0.0 && !rows.keys.is_empty()).then(|| {
                (
                    SlbHit {
                        key: rows.keys[0],
                        score: 0.0,
                    },
                    0,
                )
            });
        }
        let inv = 1.0 / qn;
        let mut best: Option<(f32, usize)> = None;
        for (slot, row) in rows.vecs.chunks_exact(self.dim).enumerate() {
            let score = snap((self.dot)(query, row) * inv);
            if score >= threshold && best.is_none_or(|(b, _)| score > b) {
                best = Some((score, slot));
            }
        }
        best.map(|(score, slot)| {
            (
                SlbHit {
                    key: rows.keys[slot],
                    score,
                },
                slot,
            )
        })
    }

    fn find_checked(
        &mut self,
        scope: &str,
        query: &[f32],
        threshold: f32,
        touch: bool,
    ) -> Option<SlbHit> {
        let (hit, slot) = self.best_in(scope, query, threshold)?;
        if touch {
            let s = self.scope_ids[scope] as usize;
            let tick = self.next_tick();
            let rows = &mut self.scopes[s];
            let old = std::mem::replace(&mut rows.ticks[slot], tick);
            self.lru.remove(&old);
            self.lru.insert(tick, hit.key);
        }
        Some(hit)
    }

    /// [`find_nearest`](Self::find_nearest) for `m` queries (`m × dim`, one
    /// scope and one threshold each): one result per query.
    pub fn find_many<S: AsRef<str>>(
        &mut self,
        scopes: &[S],
        queries: &[f32],
        thresholds: &[f32],
    ) -> Result<Vec<Option<SlbHit>>> {
        let d = self.dim;
        if !queries.len().is_multiple_of(d) || queries.len() / d != scopes.len() {
            return Err(Error::invalid_argument(format!(
                "{} query values do not make {} vectors of dim {d}",
                queries.len(),
                scopes.len()
            )));
        }
        if thresholds.len() != scopes.len() {
            return Err(Error::invalid_argument(format!(
                "got {} thresholds for {} queries",
                thresholds.len(),
                scopes.len()
            )));
        }
        crate::vector::check_finite(queries, d)?;
        for &t in thresholds {
            check_threshold(t)?;
        }
        Ok(scopes
            .iter()
            .zip(queries.chunks_exact(d))
            .zip(thresholds)
            .map(|((s, q), &t)| self.find_checked(s.as_ref(), q, t, true))
            .collect())
    }

    /// The stored (normalised) vector of `key`.
    pub fn vector(&self, key: u64) -> Option<&[f32]> {
        let &(s, slot) = self.slot_of.get(&key)?;
        let d = self.dim;
        let slot = slot as usize;
        Some(&self.scopes[s as usize].vecs[slot * d..(slot + 1) * d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize, d: usize) -> Vec<f32> {
        let mut v = vec![0.0; d];
        v[i % d] = 1.0;
        v
    }

    #[test]
    fn per_scope_capacity_evicts_that_scopes_lru() {
        let mut slb = Slb::new(4, 2, 100).unwrap();
        slb.insert("a", 1, &unit(0, 4)).unwrap();
        slb.insert("a", 2, &unit(1, 4)).unwrap();
        // Touch 1, so 2 is the LRU of scope a.
        assert_eq!(
            slb.find_nearest("a", &unit(0, 4), 0.9)
                .unwrap()
                .unwrap()
                .key,
            1
        );
        slb.insert("b", 9, &unit(0, 4)).unwrap();
        let ev = slb.insert("a", 3, &unit(2, 4)).unwrap();
        assert_eq!(ev, vec![2]);
        assert!(slb.contains(1) && slb.contains(3) && slb.contains(9));
        assert_eq!(slb.scope_len("a"), 2);
    }

    #[test]
    fn global_capacity_evicts_the_oldest_across_scopes() {
        let mut slb = Slb::new(4, 10, 3).unwrap();
        slb.insert("a", 1, &unit(0, 4)).unwrap();
        slb.insert("b", 2, &unit(1, 4)).unwrap();
        slb.insert("c", 3, &unit(2, 4)).unwrap();
        slb.find_nearest("a", &unit(0, 4), 0.5).unwrap().unwrap();
        let ev = slb.insert("d", 4, &unit(3, 4)).unwrap();
        assert_eq!(ev, vec![2]);
        assert_eq!(slb.len(), 3);
        assert_eq!(slb.scope_len("b"), 0);
        assert!(!slb.scopes().contains(&"b".to_string()));
    }

    #[test]
    fn scopes_are_partitions_and_thresholds_are_validated() {
        let mut slb = Slb::new(3, 8, 8).unwrap();
        slb.insert("x", 1, &[1.0, 2.0, 3.0]).unwrap();
        assert!(slb
            .find_nearest("y", &[1.0, 2.0, 3.0], -1.0)
            .unwrap()
            .is_none());
        let h = slb
            .find_nearest("x", &[2.0, 4.0, 6.0], 1.0)
            .unwrap()
            .unwrap();
        assert!((h.score - 1.0).abs() < 1e-6);
        assert!(slb.find_nearest("x", &[1.0, 2.0, 3.0], 1.5).is_err());
        assert!(slb.find_nearest("x", &[1.0, f32::NAN, 3.0], 0.5).is_err());
        assert!(slb.insert("x", 2, &[1.0, 2.0]).is_err());
        assert_eq!(slb.drop_scope("x"), vec![1]);
        assert!(slb.is_empty());
    }

    #[test]
    fn removal_keeps_slots_consistent() {
        let mut slb = Slb::new(8, 64, 64).unwrap();
        for k in 0..40u64 {
            slb.insert("s", k, &unit(k as usize, 8)).unwrap();
        }
        for k in (0..40u64).step_by(3) {
            assert!(slb.remove(k));
        }
        for k in 0..40u64 {
            assert_eq!(slb.contains(k), k % 3 != 0);
            if k % 3 != 0 {
                assert_eq!(slb.vector(k).unwrap(), unit(k as usize, 8).as_slice());
            }
        }
    }
}
