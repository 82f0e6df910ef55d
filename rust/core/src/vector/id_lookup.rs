//! Id → row for a [`RowStore`](super::store::RowStore): free while ids
//! arrive in increasing order, a [`RowMap`] once they do not.
//!
//! Ids assigned by the index count up, and callers that number their own
//! vectors usually add them in order. While every stored id (tombstones
//! included) is larger than the one before it, the store's own `ids` column
//! is sorted — compaction keeps the order — so a binary search over it finds
//! a row and the lookup costs no memory at all. The first id that breaks the
//! order (an older id re-added, or ids in random order) switches to a
//! [`RowMap`] of the live rows (5–11 B per row), for good.

use crate::error::Result;
use crate::vector::row_map::RowMap;
use crate::vector::store::IdSource;

/// How ids are found.
///
/// ```
/// use slabcache_core::vector::id_lookup::IdLookup;
/// let mut ids = vec![3u64, 8, 20];
/// let live = |_: usize| true;
/// let mut look = IdLookup::default();
/// look.appended(&ids, 0, live).unwrap();
/// assert!(look.is_sorted() && look.memory_bytes() == 0);
/// assert_eq!(look.get(&ids, 8, live), Some(1));
/// ids.push(5); // out of order: the lookup builds a table
/// look.appended(&ids, 3, live).unwrap();
/// assert!(!look.is_sorted());
/// assert_eq!(look.get(&ids, 5, live), Some(3));
/// ```
#[derive(Debug, Clone, Default)]
pub enum IdLookup {
    /// `ids` is strictly increasing: binary search.
    #[default]
    Sorted,
    /// A table of the live rows.
    Map(RowMap),
}

impl IdLookup {
    /// Whether lookups are binary searches (no table).
    pub fn is_sorted(&self) -> bool {
        matches!(self, IdLookup::Sorted)
    }

    /// Bytes held (0 while sorted).
    pub fn memory_bytes(&self) -> usize {
        match self {
            IdLookup::Sorted => 0,
            IdLookup::Map(m) => m.memory_bytes(),
        }
    }

    /// The live row holding `id`.
    #[inline]
    pub fn get(
        &self,
        ids: &(impl IdSource + ?Sized),
        id: u64,
        live: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            IdLookup::Sorted => ids.search_sorted(id).filter(|&r| live(r)),
            IdLookup::Map(m) => m.get(ids, id),
        }
    }

    /// Whether appending `new` (in this order) after `ids` keeps the lookup
    /// sorted.
    pub fn stays_sorted(&self, ids: &(impl IdSource + ?Sized), new: &[u64]) -> bool {
        let n = ids.count();
        self.is_sorted()
            && new.first().is_none_or(|&f| n == 0 || f > ids.id(n - 1))
            && new.windows(2).all(|w| w[0] < w[1])
    }

    /// Makes room for `extra` entries (only a table needs it).
    pub fn reserve(&mut self, ids: &(impl IdSource + ?Sized), extra: usize) -> Result<()> {
        match self {
            IdLookup::Sorted => Ok(()),
            IdLookup::Map(m) => m.reserve(ids, extra),
        }
    }

    /// Records rows `first..ids.len()` just appended. Switches to a table if
    /// they broke the order (the caller checked [`stays_sorted`](Self::stays_sorted)
    /// and reserved what the table needs, so only the switch allocates).
    pub fn appended(
        &mut self,
        ids: &(impl IdSource + ?Sized),
        first: usize,
        live: impl Fn(usize) -> bool,
    ) -> Result<()> {
        match self {
            IdLookup::Sorted => {
                let sorted = ids.increasing_from(first);
                if !sorted {
                    *self = IdLookup::Map(RowMap::build(ids, live)?);
                }
            }
            IdLookup::Map(m) => {
                for r in first..ids.count() {
                    m.insert(ids, r);
                }
            }
        }
        Ok(())
    }

    /// Forgets `id` (its row is being tombstoned); returns its row.
    pub fn remove(
        &mut self,
        ids: &(impl IdSource + ?Sized),
        id: u64,
        live: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            IdLookup::Sorted => ids.search_sorted(id).filter(|&r| live(r)),
            IdLookup::Map(m) => m.remove(ids, id),
        }
    }

    /// Rebuilds after compaction (a table is sized to the live rows).
    pub fn rebuild(
        &mut self,
        ids: &(impl IdSource + ?Sized),
        live: impl Fn(usize) -> bool,
    ) -> Result<()> {
        if let IdLookup::Map(m) = self {
            *m = RowMap::build(ids, live)?;
        }
        Ok(())
    }

    /// The lookup for loaded rows: sorted if their ids increase.
    pub fn for_rows(
        ids: &(impl IdSource + ?Sized),
        live: impl Fn(usize) -> bool,
    ) -> Result<IdLookup> {
        if ids.increasing_from(0) {
            Ok(IdLookup::Sorted)
        } else {
            Ok(IdLookup::Map(RowMap::build(ids, live)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_until_an_id_comes_out_of_order() {
        let mut ids: Vec<u64> = (0..100).map(|i| i * 2).collect();
        let live = |_: usize| true;
        let mut l = IdLookup::default();
        l.appended(&ids, 0, live).unwrap();
        assert!(l.is_sorted());
        for (r, &id) in ids.iter().enumerate() {
            assert_eq!(l.get(&ids, id, live), Some(r));
            assert_eq!(l.get(&ids, id + 1, live), None);
        }
        assert!(!l.stays_sorted(&ids, &[7]));
        ids.push(7);
        l.appended(&ids, 100, live).unwrap();
        assert!(!l.is_sorted());
        for (r, &id) in ids.iter().enumerate() {
            assert_eq!(l.get(&ids, id, live), Some(r));
        }
    }

    #[test]
    fn sorted_lookup_hides_dead_rows() {
        let ids = vec![1u64, 2, 3];
        let l = IdLookup::Sorted;
        assert_eq!(l.get(&ids, 2, |r| r != 1), None);
        assert_eq!(l.get(&ids, 3, |r| r != 1), Some(2));
    }
}
