//! Id → row lookup for a [`RowStore`](super::store::RowStore): an
//! open-addressing table of bare `u32` row numbers.
//!
//! A `HashMap<u64, usize>` costs 19–39 B per row (16 B entries, a control
//! byte, load factor and power-of-two growth). The id is already stored in
//! the row (`ids.id(row)`), so the table keeps only the 4-byte row number and
//! compares ids through the store: 5–11 B per row. Linear probing with
//! backward-shift deletion keeps probe runs short without tombstones, and the
//! table shrinks when the store compacts, so memory follows the live rows.

use crate::vector::store::IdSource;

/// Marks a free slot.
const EMPTY: u32 = u32::MAX;
/// The largest row number the table can hold.
pub const MAX_ROWS: usize = (u32::MAX - 1) as usize;

/// Row numbers keyed by the id stored at that row.
///
/// ```
/// use slabcache_core::vector::row_map::RowMap;
/// let ids = vec![10u64, 20, 30];
/// let mut m = RowMap::default();
/// for r in 0..ids.len() {
///     m.insert(&ids, r);
/// }
/// assert_eq!(m.get(&ids, 20), Some(1));
/// assert_eq!(m.remove(&ids, 20), Some(1));
/// assert_eq!(m.get(&ids, 20), None);
/// assert_eq!(m.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RowMap {
    slots: Vec<u32>,
    len: usize,
}

#[inline]
fn hash(id: u64) -> u64 {
    // Fibonacci hashing spreads sequential ids over the whole table.
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl RowMap {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the table.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * 4
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        // High bits of the product are the best mixed.
        (hash(id) >> (64 - self.slots.len().trailing_zeros())) as usize & self.mask()
    }

    /// The row holding `id`, if any.
    #[inline]
    pub fn get(&self, ids: &(impl IdSource + ?Sized), id: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(id);
        loop {
            let r = self.slots[i];
            if r == EMPTY {
                return None;
            }
            if ids.id(r as usize) == id {
                return Some(r as usize);
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes room for `extra` more entries without rehashing midway.
    pub fn reserve(&mut self, ids: &(impl IdSource + ?Sized), extra: usize) -> crate::Result<()> {
        let need = self.len + extra;
        if need > MAX_ROWS {
            return Err(crate::Error::out_of_memory(format!(
                "an index holds at most {MAX_ROWS} rows"
            )));
        }
        // Load factor at most 3/4.
        let want = (need * 4).div_ceil(3).max(8).next_power_of_two();
        if want > self.slots.len() {
            self.rehash(ids, want)?;
        }
        Ok(())
    }

    fn rehash(&mut self, ids: &(impl IdSource + ?Sized), cap: usize) -> crate::Result<()> {
        let mut fresh: Vec<u32> = Vec::new();
        fresh
            .try_reserve_exact(cap)
            .map_err(|_| crate::Error::out_of_memory("cannot grow the id table"))?;
        fresh.resize(cap, EMPTY);
        let old = std::mem::replace(&mut self.slots, fresh);
        self.len = 0;
        for r in old.into_iter().filter(|&r| r != EMPTY) {
            self.place(ids, r);
        }
        Ok(())
    }

    fn place(&mut self, ids: &(impl IdSource + ?Sized), row: u32) {
        let mask = self.mask();
        let mut i = self.home(ids.id(row as usize));
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = row;
        self.len += 1;
    }

    /// Adds `row` under `ids.id(row)` (which must not be present). Call
    /// [`reserve`](Self::reserve) first; without room this grows the table
    /// (and panics only if that allocation fails).
    pub fn insert(&mut self, ids: &(impl IdSource + ?Sized), row: usize) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.reserve(ids, 1).expect("RowMap: out of memory");
        }
        debug_assert!(self.get(ids, ids.id(row)).is_none());
        self.place(ids, row as u32);
    }

    /// Removes `id`; returns its row. `ids` must still hold every row's id.
    pub fn remove(&mut self, ids: &(impl IdSource + ?Sized), id: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(id);
        loop {
            let r = self.slots[i];
            if r == EMPTY {
                return None;
            }
            if ids.id(r as usize) == id {
                break;
            }
            i = (i + 1) & mask;
        }
        let found = self.slots[i] as usize;
        // Backward-shift deletion: pull later members of the run into the hole
        // when their home lies at or before it (cyclically).
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let r = self.slots[j];
            if r == EMPTY {
                break;
            }
            let h = self.home(ids.id(r as usize));
            let dist_j = j.wrapping_sub(h) & mask;
            let dist_hole = hole.wrapping_sub(h) & mask;
            if dist_hole <= dist_j {
                self.slots[hole] = r;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        Some(found)
    }

    /// A table of every row in `ids` for which `live(row)` holds, sized to
    /// them (used after compaction and on load: memory follows live rows).
    pub fn build(
        ids: &(impl IdSource + ?Sized),
        live: impl Fn(usize) -> bool,
    ) -> crate::Result<RowMap> {
        let mut m = RowMap::default();
        let n = (0..ids.count()).filter(|&r| live(r)).count();
        m.reserve(ids, n)?;
        for r in (0..ids.count()).filter(|&r| live(r)) {
            m.place(ids, r as u32);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn matches_a_hashmap_under_random_inserts_and_removes() {
        let mut ids: Vec<u64> = Vec::new();
        let mut m = RowMap::default();
        let mut model: HashMap<u64, usize> = HashMap::new();
        let mut x = 12345u64;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = x % 3000;
            if model.contains_key(&id) && step % 3 != 0 {
                let r = model.remove(&id).unwrap();
                assert_eq!(m.remove(&ids, id), Some(r));
            } else if let std::collections::hash_map::Entry::Vacant(slot) = model.entry(id) {
                ids.push(id);
                m.insert(&ids, ids.len() - 1);
                slot.insert(ids.len() - 1);
            }
            if step % 997 == 0 {
                for probe in 0..3000u64 {
                    assert_eq!(m.get(&ids, probe), model.get(&probe).copied());
                }
            }
        }
        assert_eq!(m.len(), model.len());
    }

    #[test]
    fn build_is_sized_to_the_live_rows() {
        let ids: Vec<u64> = (0..10_000).collect();
        let m = RowMap::build(&ids, |r| r % 10 == 0).unwrap();
        assert_eq!(m.len(), 1000);
        assert!(m.memory_bytes() <= 4 * 2048);
        assert_eq!(m.get(&ids, 500), Some(500));
        assert_eq!(m.get(&ids, 501), None);
    }
}
