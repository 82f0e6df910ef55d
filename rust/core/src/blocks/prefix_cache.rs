//! The prefix cache: block hash -> device blocks holding that content.
//!
//! Two requests that compute the same prefix before either has cached it
//! each get their own block with the same hash, so one hash may name several
//! blocks (as in vLLM). A lookup returns the earliest-registered block still
//! cached; evicting one duplicate leaves the others findable.

use std::collections::HashMap;

use super::block_hash::{BlockHash, IdBuildHasher};

/// One hash's blocks, earliest first; almost always exactly one.
#[derive(Debug, Clone)]
enum Holders {
    One(u32),
    Many(Vec<u32>),
}

/// Map from block hash to the cached device blocks with that content.
///
/// ```
/// use slabcache_core::blocks::{BlockHash, PrefixCache};
/// let mut c = PrefixCache::default();
/// let h = BlockHash::of_block(None, 0, &[1, 2]);
/// c.insert(h, 5);
/// c.insert(h, 9); // a duplicate computed concurrently
/// assert_eq!(c.get(&h), Some(5));
/// c.remove(&h, 5);
/// assert_eq!(c.get(&h), Some(9));
/// ```
#[derive(Debug, Clone, Default)]
pub struct PrefixCache {
    map: HashMap<BlockHash, Holders, IdBuildHasher>,
    blocks: usize,
}

impl PrefixCache {
    /// The earliest-registered cached block with content `hash`.
    #[inline]
    pub fn get(&self, hash: &BlockHash) -> Option<u32> {
        match self.map.get(hash)? {
            Holders::One(b) => Some(*b),
            Holders::Many(v) => v.first().copied(),
        }
    }

    /// Registers `block` as holding `hash`.
    pub fn insert(&mut self, hash: BlockHash, block: u32) {
        self.blocks += 1;
        match self.map.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Holders::One(block));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => match e.get_mut() {
                Holders::One(b) => {
                    let first = *b;
                    *e.get_mut() = Holders::Many(vec![first, block]);
                }
                Holders::Many(v) => v.push(block),
            },
        }
    }

    /// Unregisters `block` from `hash`; `false` if it was not registered.
    pub fn remove(&mut self, hash: &BlockHash, block: u32) -> bool {
        let Some(h) = self.map.get_mut(hash) else {
            return false;
        };
        let removed = match h {
            Holders::One(b) if *b == block => {
                self.map.remove(hash);
                true
            }
            Holders::One(_) => false,
            Holders::Many(v) => match v.iter().position(|&b| b == block) {
                Some(i) => {
                    v.remove(i);
                    if v.len() == 1 {
                        *h = Holders::One(v[0]);
                    }
                    true
                }
                None => false,
            },
        };
        if removed {
            self.blocks -= 1;
        }
        removed
    }

    /// Number of cached blocks (duplicates counted).
    pub fn num_blocks(&self) -> usize {
        self.blocks
    }

    /// Number of distinct hashes.
    pub fn num_hashes(&self) -> usize {
        self.map.len()
    }

    /// Every (hash, block) pair, for invariant checks.
    pub fn iter(&self) -> impl Iterator<Item = (BlockHash, u32)> + '_ {
        self.map.iter().flat_map(|(h, holders)| {
            let v: Vec<u32> = match holders {
                Holders::One(b) => vec![*b],
                Holders::Many(v) => v.clone(),
            };
            v.into_iter().map(move |b| (*h, b))
        })
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.blocks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_insertion_order() {
        let mut c = PrefixCache::default();
        let h = BlockHash::of_block(None, 0, &[3]);
        c.insert(h, 1);
        c.insert(h, 2);
        c.insert(h, 3);
        assert_eq!(c.num_blocks(), 3);
        assert_eq!(c.num_hashes(), 1);
        assert!(c.remove(&h, 2));
        assert!(!c.remove(&h, 2));
        assert_eq!(c.get(&h), Some(1));
        assert!(c.remove(&h, 1));
        assert_eq!(c.get(&h), Some(3));
        assert!(c.remove(&h, 3));
        assert_eq!(c.get(&h), None);
        assert_eq!(c.num_blocks(), 0);
    }
}
