//! Id → (list, row) for the clustered index, in one of two forms:
//!
//! * [`DenseLists`] while ids are dense (assigned ids, or ids numbered from
//!   0 by the caller): an array indexed by id holding only the id's **list**
//!   bit-packed in the fewest bits that hold `nlist` (11 bits, 1.375 B per
//!   id, at `nlist` 1379; 16 up to 65535 lists). The row is found
//!   by scanning that list's id column (~100 ids on SIFT at 119k rows),
//!   and compaction of a list leaves the array untouched.
//! * [`PageMap`] once they are not (the array would outgrow the table): an
//!   open-addressing table of packed `list << 32 | row` values whose ids are
//!   read from the lists themselves (8 B a slot, 10.7-21 B a row at load
//!   ≤ 3/4, against 19-39 B for a `HashMap<u64, (u32, u32)>`). Linear
//!   probing, backward-shift deletion; the caller removes a list's entries
//!   before compacting it and re-inserts them after (lookups compare
//!   through the lists' id columns).
//!
//! [`Locator`] switches from the first to the second when an add or a
//! removal makes the array cost more than 8 B per live id (plus 128 KiB).

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
    pages[p as usize].id(r as usize)
}

/// The table.
///
/// ```
/// use slabcache_core::vector::page_map::PageMap;
/// use slabcache_core::vector::store::RowStore;
/// use slabcache_core::vector::Metric;
/// let mut page = RowStore::new(2, Metric::Ip, false);
/// page.reserve(2, 70).unwrap();
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

/// Slack the dense array may hold regardless of density (bytes).
const DENSE_SLACK_BYTES: usize = 1 << 17;
/// Most bytes per live id the dense array may cost.
const DENSE_BYTES_PER_ID: usize = 8;

/// List numbers indexed by id, bit-packed: each entry takes the fewest bits
/// that hold every list number plus the "no list" mark (all ones), so 11
/// bits for `nlist` 1379; the row is found in the list.
#[derive(Debug, Clone)]
pub struct DenseLists {
    /// Bits per entry (1..=32).
    bits: u32,
    /// Entries (ids `0..span`).
    span: usize,
    /// The entries, `bits` each, little-endian across words; unused bits are ones.
    words: Vec<u64>,
}

impl DenseLists {
    /// An empty array for `nlist` lists.
    pub fn new(nlist: usize) -> DenseLists {
        // The largest list number and the mark (2^bits - 1) must differ.
        let bits = (usize::BITS - nlist.leading_zeros()).clamp(1, 32);
        DenseLists {
            bits,
            span: 0,
            words: Vec::new(),
        }
    }

    #[inline]
    fn none(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    fn words_for(&self, span: usize) -> usize {
        span.saturating_mul(self.bits as usize).div_ceil(64)
    }

    fn span(&self) -> usize {
        self.span
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// Whether an array reaching id `max_id` with `live` ids stays within
    /// its budget.
    fn fits(&self, max_id: u64, live: usize) -> bool {
        usize::try_from(max_id)
            .ok()
            .and_then(|m| m.checked_add(1))
            .is_some_and(|span| {
                self.words_for(span).saturating_mul(8)
                    <= live.saturating_mul(DENSE_BYTES_PER_ID) + DENSE_SLACK_BYTES
            })
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        let bit = i * self.bits as usize;
        let (w, o) = (bit / 64, (bit % 64) as u32);
        let mut v = self.words[w] >> o;
        if o + self.bits > 64 {
            v |= self.words[w + 1] << (64 - o);
        }
        v & self.none()
    }

    #[inline]
    fn list(&self, id: u64) -> Option<u32> {
        let i = usize::try_from(id).ok().filter(|&i| i < self.span)?;
        let l = self.get(i);
        (l != self.none()).then_some(l as u32)
    }

    fn set(&mut self, id: u64, list: Option<u32>) {
        let i = id as usize;
        if i >= self.span {
            let want = self.words_for(i + 1);
            self.words.resize(want, u64::MAX); // all ones: "no list"
            self.span = i + 1;
        }
        let mask = self.none();
        let v = list.map_or(mask, |l| l as u64 & mask);
        let bit = i * self.bits as usize;
        let (w, o) = (bit / 64, (bit % 64) as u32);
        self.words[w] = (self.words[w] & !(mask << o)) | (v << o);
        if o + self.bits > 64 {
            let r = 64 - o;
            self.words[w + 1] = (self.words[w + 1] & !(mask >> r)) | (v >> r);
        }
    }

    fn reserve_to(&mut self, max_id: u64) -> Result<()> {
        let need = self
            .words_for(max_id as usize + 1)
            .saturating_sub(self.words.len());
        self.words
            .try_reserve(need)
            .map_err(|_| Error::out_of_memory("cannot grow the id table"))
    }
}

/// Where the clustered index finds an id: see the [module docs](self).
///
/// ```
/// use slabcache_core::vector::page_map::Locator;
/// use slabcache_core::vector::store::RowStore;
/// use slabcache_core::vector::Metric;
/// let mut page = RowStore::new(2, Metric::Ip, false);
/// page.reserve(2, 9).unwrap();
/// page.append(&[1.0, 0.0, 0.0, 1.0], &[7, 9]);
/// let pages = vec![page];
/// let mut loc = Locator::new(1);
/// loc.reserve(&pages, 2, 9).unwrap();
/// loc.insert(&pages, 0, 0);
/// loc.insert(&pages, 0, 1);
/// assert!(loc.is_dense());
/// assert_eq!(loc.get(&pages, 9), Some((0, 1)));
/// assert_eq!(loc.remove(&pages, 7), Some((0, 0)));
/// assert!(!loc.contains(&pages, 7));
/// loc.reserve(&pages, 1, 1 << 40).unwrap(); // a far id: switches to the table
/// assert!(!loc.is_dense() && loc.get(&pages, 9) == Some((0, 1)));
/// ```
#[derive(Debug, Clone)]
pub enum Locator {
    /// Ids are dense: list numbers by id.
    Dense {
        /// The array.
        lists: DenseLists,
        /// Live ids.
        len: usize,
    },
    /// A hash table of (list, row).
    Table(PageMap),
}

impl Locator {
    /// An empty (dense) locator for `nlist` lists.
    pub fn new(nlist: usize) -> Locator {
        Locator::Dense {
            lists: DenseLists::new(nlist),
            len: 0,
        }
    }

    /// Whether the dense array is in use.
    pub fn is_dense(&self) -> bool {
        matches!(self, Locator::Dense { .. })
    }

    /// Live ids.
    pub fn len(&self) -> usize {
        match self {
            Locator::Dense { len, .. } => *len,
            Locator::Table(t) => t.len(),
        }
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Locator::Dense { lists, .. } => lists.memory_bytes(),
            Locator::Table(t) => t.memory_bytes(),
        }
    }

    /// Whether entries name rows (so a list's compaction must re-insert them).
    pub fn tracks_rows(&self) -> bool {
        !self.is_dense()
    }

    /// Whether `id` is live.
    #[inline]
    pub fn contains(&self, pages: &[RowStore], id: u64) -> bool {
        match self {
            Locator::Dense { lists, .. } => lists.list(id).is_some(),
            Locator::Table(t) => t.get(pages, id).is_some(),
        }
    }

    /// Where `id` lives.
    pub fn get(&self, pages: &[RowStore], id: u64) -> Option<(u32, u32)> {
        match self {
            Locator::Dense { lists, .. } => Locator::get_dense(lists, pages, id),
            Locator::Table(t) => t.get(pages, id),
        }
    }

    /// Room for `extra` more entries, the largest id `max_id`; switches to
    /// the table first if the array would outgrow its budget. Nothing
    /// changes on `OutOfMemory`.
    pub fn reserve(&mut self, pages: &[RowStore], extra: usize, max_id: u64) -> Result<()> {
        let live = self.len() + extra;
        match self {
            Locator::Dense { lists, .. } if !lists.fits(max_id, live) => {
                let mut t = PageMap::table_of(pages)?;
                t.reserve(pages, extra)?;
                *self = Locator::Table(t);
                Ok(())
            }
            Locator::Dense { lists, .. } => lists.reserve_to(max_id),
            Locator::Table(t) => t.reserve(pages, extra),
        }
    }

    /// Adds row `r` of list `p` under its id (not present; reserved first).
    pub fn insert(&mut self, pages: &[RowStore], p: usize, r: usize) {
        match self {
            Locator::Dense { lists, len } => {
                lists.set(pages[p].id(r), Some(p as u32));
                *len += 1;
            }
            Locator::Table(t) => t.insert(pages, p, r),
        }
    }

    /// Removes `id` (its row is still in place); returns where it was.
    pub fn remove(&mut self, pages: &[RowStore], id: u64) -> Option<(u32, u32)> {
        match self {
            Locator::Dense { lists, len } => {
                let at = Locator::get_dense(lists, pages, id)?;
                lists.set(id, None);
                *len -= 1;
                Some(at)
            }
            Locator::Table(t) => t.remove(pages, id),
        }
    }

    fn get_dense(lists: &DenseLists, pages: &[RowStore], id: u64) -> Option<(u32, u32)> {
        let l = lists.list(id)?;
        let page = &pages[l as usize];
        let r = page.ids.position(id, |r| page.is_live(r))?;
        Some((l, r as u32))
    }

    /// Gives memory back after removals: a mostly empty table shrinks; an
    /// array over its budget becomes a table (when that allocation fails the
    /// array stays, which is still correct).
    pub fn shrink(&mut self, pages: &[RowStore]) {
        match self {
            Locator::Dense { lists, len } => {
                let span = lists.span();
                if span > 0 && !lists.fits(span as u64 - 1, *len) {
                    if let Ok(t) = PageMap::table_of(pages) {
                        *self = Locator::Table(t);
                    }
                }
            }
            Locator::Table(t) => t.shrink(pages),
        }
    }

    /// The locator of loaded lists: dense if their ids allow it. A repeated
    /// id is `Corrupt`.
    pub fn for_pages(pages: &[RowStore], nlist: usize) -> Result<Locator> {
        let total: usize = pages.iter().map(|p| p.rows()).sum();
        let max_id = pages.iter().flat_map(|p| p.ids.iter()).max().unwrap_or(0);
        let mut loc = Locator::new(nlist);
        match &mut loc {
            // The rows are in the lists already: start from an empty table, not
            // from `reserve`'s switch (which would enter them all at once).
            Locator::Dense { lists, .. } if !lists.fits(max_id, total) => {
                let mut t = PageMap::default();
                t.reserve(pages, total)?;
                loc = Locator::Table(t);
            }
            Locator::Dense { lists, .. } => lists.reserve_to(max_id)?,
            Locator::Table(_) => unreachable!("a new locator is dense"),
        }
        for (p, page) in pages.iter().enumerate() {
            for r in 0..page.rows() {
                let id = page.id(r);
                if loc.contains(pages, id) {
                    return Err(Error::corrupt(format!("id {id} appears twice in the file")));
                }
                loc.insert(pages, p, r);
            }
        }
        Ok(loc)
    }
}

impl PageMap {
    /// A table of every live row of `pages`, sized to them.
    pub fn table_of(pages: &[RowStore]) -> Result<PageMap> {
        let mut t = PageMap::default();
        let live: usize = pages.iter().map(|p| p.live_rows()).sum();
        t.reserve(pages, live)?;
        for (p, page) in pages.iter().enumerate() {
            for r in (0..page.rows()).filter(|&r| page.is_live(r)) {
                t.insert(pages, p, r);
            }
        }
        Ok(t)
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
                            .map(|r| pages[pu].id(r))
                            .collect();
                        for &lid in &live {
                            m.remove(&pages, lid).unwrap();
                        }
                        pages[pu].compact(|_, _| {});
                        for r in 0..pages[pu].rows() {
                            m.insert(&pages, pu, r);
                            model.insert(pages[pu].id(r), (p, r as u32));
                        }
                    }
                }
            } else {
                let p = (x % 5) as usize;
                pages[p].reserve(1, id).unwrap();
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

    #[test]
    fn dense_lists_pack_every_width_and_match_a_plain_array() {
        for nlist in [1usize, 2, 3, 7, 8, 1379, 2047, 2048, 65535, 1 << 20] {
            let mut d = DenseLists::new(nlist);
            let mut plain: Vec<Option<u32>> = Vec::new();
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ nlist as u64;
            for step in 0..3000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = x % 700;
                let v = (step % 5 != 0).then(|| (x >> 20) as u32 % nlist as u32);
                d.reserve_to(id).unwrap();
                d.set(id, v);
                if id as usize >= plain.len() {
                    plain.resize(id as usize + 1, None);
                }
                plain[id as usize] = v;
            }
            d.set(0, Some(nlist as u32 - 1)); // the largest list number is not the mark
            plain[0] = Some(nlist as u32 - 1);
            for (i, want) in plain.iter().enumerate() {
                assert_eq!(d.list(i as u64), *want, "nlist {nlist} id {i}");
            }
            assert_eq!(d.list(plain.len() as u64), None);
            assert!(d.memory_bytes() >= plain.len() * d.bits as usize / 8);
        }
        assert_eq!(DenseLists::new(1379).bits, 11);
    }

    #[test]
    fn locator_matches_a_hashmap_dense_then_as_a_table() {
        let mut pages: Vec<RowStore> = (0..5)
            .map(|_| RowStore::new(1, Metric::Ip, false))
            .collect();
        let mut loc = Locator::new(5);
        let mut model: HashMap<u64, (u32, u32)> = HashMap::new();
        let mut x = 7u64;
        for step in 0..8000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Dense ids first; from step 5000 on a few far ones force the table.
            let id = if step >= 5000 && step % 50 == 0 {
                x % (1 << 40)
            } else {
                x % 2000
            };
            if step == 4999 {
                assert!(loc.is_dense());
            }
            if let Some(&(p, r)) = model.get(&id) {
                if step % 3 != 0 {
                    assert_eq!(loc.remove(&pages, id), Some((p, r)));
                    pages[p as usize].tombstone(r as usize);
                    model.remove(&id);
                    let pu = p as usize;
                    if pages[pu].wants_compaction() {
                        let tracks = loc.tracks_rows();
                        let live: Vec<u64> = (0..pages[pu].rows())
                            .filter(|&r| tracks && pages[pu].is_live(r))
                            .map(|r| pages[pu].id(r))
                            .collect();
                        for &lid in &live {
                            loc.remove(&pages, lid).unwrap();
                        }
                        pages[pu].compact(|_, _| {});
                        for r in 0..pages[pu].rows() {
                            if tracks {
                                loc.insert(&pages, pu, r);
                            }
                            model.insert(pages[pu].id(r), (p, r as u32));
                        }
                    }
                }
            } else {
                let p = (x % 5) as usize;
                pages[p].reserve(1, id).unwrap();
                loc.reserve(&pages, 1, id).unwrap();
                pages[p].append(&[1.0], &[id]);
                let r = pages[p].rows() - 1;
                loc.insert(&pages, p, r);
                model.insert(id, (p as u32, r as u32));
            }
            if step % 500 == 0 {
                loc.shrink(&pages);
                for probe in (0..2000u64).chain(model.keys().copied().filter(|&k| k >= 2000)) {
                    assert_eq!(
                        loc.get(&pages, probe),
                        model.get(&probe).copied(),
                        "{probe}"
                    );
                    assert_eq!(loc.contains(&pages, probe), model.contains_key(&probe));
                }
            }
        }
        assert!(!loc.is_dense());
        assert_eq!(loc.len(), model.len());
    }
}
