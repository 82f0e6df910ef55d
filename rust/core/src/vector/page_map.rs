//! Id → (list, row) for the clustered index: an open-addressing table of
//! packed `list << 32 | row` values whose ids are read from the lists
//! themselves (8 B a slot, 10.7-21 B a row at load ≤ 3/4, against 19-39 B
//! for a `HashMap<u64, (u32, u32)>`). Linear probing, backward-shift
//! deletion; the caller removes a list's entries before compacting it and
//! re-inserts them after (lookups compare through the lists' id columns).

use crate::error::{Error, Result};
use crate::vector::store::RowStore;

const EMPTY: u64 = u64::MAX;

#[inline]
fn pack(p: u32, r: u32) -> u64 {
    (p as u64) << 32 | r as u64
}

#[inline]
fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

#[inline]
fn id_at(pages: &[RowStore], v: u64) -> u64 {
    let (p, r) = unpack(v);
    pages[p as usize].ids[r as usize]
}

/// The table.
///
/// ```
/// use slabcache_core::vector::page_map::PageMap;
/// use slabcache_core::vector::store::RowStore;
/// use slabcache_core::vector::Metric;
/// let mut page = RowStore::new(2, Metric::Ip, false);
/// page.reserve(2).unwrap();
/// page.append(&[1.0, 0.0, 0.0, 1.0], &[70, 9]);
/// let pages = vec![page];
/// let mut m = PageMap::default();
/// m.insert(&pages, 0, 0);
/// m.insert(&pages, 0, 1);
/// assert_eq!(m.get(&pages, 9), Some((0, 1)));
/// assert_eq!(m.remove(&pages, 70), Some((0, 0)));
/// assert_eq!(m.get(&pages, 70), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PageMap {
    slots: Vec<u64>,
    len: usize,
}

impl PageMap {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * 8
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize & (self.slots.len() - 1)
    }

    /// Where `id` lives.
    pub fn get(&self, pages: &[RowStore], id: u64) -> Option<(u32, u32)> {
        self.slot_of(pages, id).map(|i| unpack(self.slots[i]))
    }

    fn slot_of(&self, pages: &[RowStore], id: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            let v = self.slots[i];
            if v == EMPTY {
                return None;
            }
            if id_at(pages, v) == id {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Room for `extra` more entries (or `OutOfMemory`, nothing changed).
    pub fn reserve(&mut self, pages: &[RowStore], extra: usize) -> Result<()> {
        let need = self.len + extra;
        let want = (need * 4).div_ceil(3).max(8).next_power_of_two();
        if want > self.slots.len() {
            let mut fresh: Vec<u64> = Vec::new();
            fresh
                .try_reserve_exact(want)
                .map_err(|_| Error::out_of_memory("cannot grow the id table"))?;
            fresh.resize(want, EMPTY);
            let old = std::mem::replace(&mut self.slots, fresh);
            self.len = 0;
            for v in old.into_iter().filter(|&v| v != EMPTY) {
                self.place(pages, v);
            }
        }
        Ok(())
    }

    fn place(&mut self, pages: &[RowStore], v: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(id_at(pages, v));
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = v;
        self.len += 1;
    }

    /// Adds row `r` of list `p` under its id (which must not be present).
    /// Grows the table if needed (panics only if that allocation fails;
    /// call [`reserve`](Self::reserve) first).
    pub fn insert(&mut self, pages: &[RowStore], p: usize, r: usize) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.reserve(pages, 1).expect("PageMap: out of memory");
        }
        self.place(pages, pack(p as u32, r as u32));
    }

    /// Removes `id`; returns where it was.
    pub fn remove(&mut self, pages: &[RowStore], id: u64) -> Option<(u32, u32)> {
        let i = self.slot_of(pages, id)?;
        let found = unpack(self.slots[i]);
        let mask = self.slots.len() - 1;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let v = self.slots[j];
            if v == EMPTY {
                break;
            }
            let h = self.home(id_at(pages, v));
            if hole.wrapping_sub(h) & mask <= j.wrapping_sub(h) & mask {
                self.slots[hole] = v;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        Some(found)
    }

    /// Gives memory back when the table is mostly empty.
    pub fn shrink(&mut self, pages: &[RowStore]) {
        let want = (self.len * 4).div_ceil(3).max(8).next_power_of_two();
        if want * 4 <= self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            let mut fresh = Vec::with_capacity(want);
            fresh.resize(want, EMPTY);
            self.slots = fresh;
            self.len = 0;
            for v in old.into_iter().filter(|&v| v != EMPTY) {
                self.place(pages, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::Metric;
    use std::collections::HashMap;

    #[test]
    fn matches_a_hashmap_under_adds_removes_and_compactions() {
        let mut pages: Vec<RowStore> = (0..5)
            .map(|_| RowStore::new(1, Metric::Ip, false))
            .collect();
        let mut m = PageMap::default();
        let mut model: HashMap<u64, (u32, u32)> = HashMap::new();
        let mut x = 99u64;
        for step in 0..6000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = x % 2000;
            if let Some(&(p, r)) = model.get(&id) {
                if step % 3 != 0 {
                    assert_eq!(m.remove(&pages, id), Some((p, r)));
                    pages[p as usize].tombstone(r as usize);
                    model.remove(&id);
                    let pu = p as usize;
                    if pages[pu].wants_compaction() {
                        let live: Vec<u64> = (0..pages[pu].rows())
                            .filter(|&r| pages[pu].is_live(r))
                            .map(|r| pages[pu].ids[r])
                            .collect();
                        for &lid in &live {
                            m.remove(&pages, lid).unwrap();
                        }
                        pages[pu].compact(|_, _| {});
                        for r in 0..pages[pu].rows() {
                            m.insert(&pages, pu, r);
                            model.insert(pages[pu].ids[r], (p, r as u32));
                        }
                    }
                }
            } else {
                let p = (x % 5) as usize;
                pages[p].reserve(1).unwrap();
                pages[p].append(&[1.0], &[id]);
                let r = pages[p].rows() - 1;
                m.insert(&pages, p, r);
                model.insert(id, (p as u32, r as u32));
            }
            if step % 500 == 0 {
                m.shrink(&pages);
                for probe in 0..2000u64 {
                    assert_eq!(m.get(&pages, probe), model.get(&probe).copied(), "{probe}");
                }
            }
        }
        assert_eq!(m.len(), model.len());
    }
}
