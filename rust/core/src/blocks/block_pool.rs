//! The device block pool: ref counts, cached hashes, the free queue.
//!
//! A block is *free* when no request or pin references it (ref count 0); a
//! free block may still carry a hash, in which case a prefix-cache hit can
//! revive it. Allocation takes the front of the free queue and drops the
//! hash of what it takes (an eviction). Freed blocks go to the back.

use super::block_hash::BlockHash;
use super::events::EventLog;
use super::free_queue::FreeBlockQueue;
use super::prefix_cache::PrefixCache;
use super::try_vec;

/// Device blocks, their ref counts and hashes, and the LRU free queue.
///
/// ```
/// use slabcache_core::blocks::{BlockHash, BlockPool};
/// let mut pool = BlockPool::new(2, false);
/// let b = pool.allocate().unwrap();
/// pool.cache(b, BlockHash::of_block(None, 0, &[1, 2]), None);
/// pool.release(b);                      // free, but still cached
/// assert_eq!(pool.num_free(), 2);
/// let h = BlockHash::of_block(None, 0, &[1, 2]);
/// assert_eq!(pool.lookup(&h), Some(b));
/// pool.touch(b);                        // a hit revives it
/// assert_eq!(pool.num_free(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct BlockPool {
    ref_cnt: Vec<u32>,
    hash: Vec<Option<BlockHash>>,
    free: FreeBlockQueue,
    cache: PrefixCache,
    cached_free: usize,
    evict_first: Vec<u32>,
    /// Prefix-cache events (stored / removed).
    pub events: EventLog,
    /// Cached blocks whose hash was dropped to reuse them.
    pub evictions: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks; `events` turns the event stream on.
    pub fn new(num_blocks: usize, events: bool) -> Self {
        Self::try_new(num_blocks, events).expect("block pool allocation")
    }

    /// Like [`new`](Self::new), but an allocation failure is an `OutOfMemory` error.
    pub fn try_new(num_blocks: usize, events: bool) -> crate::Result<Self> {
        Ok(BlockPool {
            ref_cnt: try_vec(num_blocks, 0)?,
            hash: try_vec(num_blocks, None)?,
            free: FreeBlockQueue::try_new(num_blocks)?,
            cache: PrefixCache::default(),
            cached_free: 0,
            evict_first: Vec::new(),
            events: EventLog::new(events),
            evictions: 0,
        })
    }

    /// Number of blocks in the pool.
    #[inline]
    pub fn num_blocks(&self) -> usize {
        self.ref_cnt.len()
    }

    /// Blocks with ref count 0 (including cached ones that a hit could revive).
    #[inline]
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Free blocks that still hold a hash.
    #[inline]
    pub fn num_cached_free(&self) -> usize {
        self.cached_free
    }

    /// Ref count of `block`.
    #[inline]
    pub fn ref_count(&self, block: u32) -> u32 {
        self.ref_cnt[block as usize]
    }

    /// The hash `block` is cached under, if any.
    #[inline]
    pub fn hash_of(&self, block: u32) -> Option<&BlockHash> {
        self.hash[block as usize].as_ref()
    }

    /// A cached block with content `hash`.
    #[inline]
    pub fn lookup(&self, hash: &BlockHash) -> Option<u32> {
        self.cache.get(hash)
    }

    /// The prefix cache (read only).
    pub fn prefix_cache(&self) -> &PrefixCache {
        &self.cache
    }

    /// The free queue (read only).
    pub fn free_queue(&self) -> &FreeBlockQueue {
        &self.free
    }

    /// Takes one more reference on `block`, taking it out of the free queue if it was free.
    #[inline]
    pub fn touch(&mut self, block: u32) {
        let i = block as usize;
        if self.ref_cnt[i] == 0 {
            self.free.remove(block);
            if self.hash[i].is_some() {
                self.cached_free -= 1;
            }
        }
        self.ref_cnt[i] += 1;
    }

    /// Takes the least recently freed block (evicting its hash), with ref count 1.
    #[inline]
    pub fn allocate(&mut self) -> Option<u32> {
        let b = self.free.pop_front()?;
        let i = b as usize;
        if let Some(h) = self.hash[i].take() {
            self.cached_free -= 1;
            self.cache.remove(&h, b);
            self.events.removed(b, h);
            self.evictions += 1;
        }
        self.ref_cnt[i] = 1;
        Some(b)
    }

    /// Drops one reference to `block` (see [`free_blocks`](Self::free_blocks)).
    #[inline]
    pub fn release(&mut self, block: u32) {
        self.free_blocks(std::iter::once(block));
    }

    /// Drops one reference to each block, given in eviction-priority order
    /// (first = evict first). Blocks reaching zero that hold a cached hash join
    /// the *back* of the free queue in that order (LRU); blocks with no hash
    /// can never be hit, so they go to the *front* in that order and are reused
    /// first (vLLM does the same).
    pub fn free_blocks(&mut self, ordered: impl IntoIterator<Item = u32>) {
        let mut first = std::mem::take(&mut self.evict_first);
        for block in ordered {
            let i = block as usize;
            debug_assert!(self.ref_cnt[i] > 0, "release of free block {block}");
            self.ref_cnt[i] -= 1;
            if self.ref_cnt[i] == 0 {
                if self.hash[i].is_some() {
                    self.free.push_back(block);
                    self.cached_free += 1;
                } else {
                    first.push(block);
                }
            }
        }
        for &b in first.iter().rev() {
            self.free.push_front(b);
        }
        first.clear();
        self.evict_first = first;
    }

    /// Registers the (full, referenced) `block` in the prefix cache under `hash`.
    pub fn cache(&mut self, block: u32, hash: BlockHash, parent: Option<BlockHash>) {
        self.cache_tokens(block, hash, parent, &[], 0);
    }

    /// [`cache`](Self::cache), recording the block's tokens and extra key in its event.
    pub fn cache_tokens(
        &mut self,
        block: u32,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[u32],
        extra_key: u64,
    ) {
        let i = block as usize;
        debug_assert!(self.hash[i].is_none(), "block {block} cached twice");
        debug_assert!(self.ref_cnt[i] > 0);
        self.hash[i] = Some(hash);
        self.cache.insert(hash, block);
        self.events
            .stored_tokens(block, hash, parent, tokens, extra_key);
    }

    /// Drops `block`'s cached hash (the block stays where it is: held, or in
    /// the free queue), returning it; vLLM's `evict_blocks`. No event is
    /// recorded here (the caller knows what the hash meant).
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockHash, BlockPool};
    /// let mut pool = BlockPool::new(2, false);
    /// let b = pool.allocate().unwrap();
    /// let h = BlockHash::of_block(None, 0, &[1]);
    /// pool.cache(b, h, None);
    /// assert_eq!(pool.uncache(b), Some(h));
    /// assert_eq!(pool.lookup(&h), None);
    /// ```
    pub fn uncache(&mut self, block: u32) -> Option<BlockHash> {
        let i = block as usize;
        let h = self.hash[i].take()?;
        self.cache.remove(&h, block);
        if self.ref_cnt[i] == 0 {
            self.cached_free -= 1;
        }
        Some(h)
    }

    /// Drops every cached hash of a free block (`reset_prefix_cache`); `false`
    /// (and nothing changed) if some cached block is still referenced.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.cache.num_blocks() != self.cached_free {
            return false;
        }
        for i in 0..self.hash.len() {
            if let Some(h) = self.hash[i].take() {
                self.events.removed(i as u32, h);
            }
        }
        self.cache.clear();
        self.cached_free = 0;
        true
    }

    /// Checks the pool's own consistency; `Err` names the first violation.
    pub fn check(&self) -> Result<(), String> {
        let mut queued = 0;
        let mut cached_free = 0;
        for b in self.free.iter() {
            queued += 1;
            if self.ref_cnt[b as usize] != 0 {
                return Err(format!(
                    "block {b} is queued free with ref count {}",
                    self.ref_cnt[b as usize]
                ));
            }
            if self.hash[b as usize].is_some() {
                cached_free += 1;
            }
        }
        if queued != self.free.len() {
            return Err("free queue length mismatch".into());
        }
        let zero = self.ref_cnt.iter().filter(|&&r| r == 0).count();
        if zero != queued {
            return Err(format!(
                "{zero} blocks have ref count 0 but {queued} are queued"
            ));
        }
        if cached_free != self.cached_free {
            return Err("cached-free counter mismatch".into());
        }
        let mut hashed = 0;
        for (i, h) in self.hash.iter().enumerate() {
            if let Some(h) = h {
                hashed += 1;
                if self.cache.get(h).is_none() {
                    return Err(format!("block {i} has a hash the cache does not know"));
                }
            }
        }
        if hashed != self.cache.num_blocks() {
            return Err("prefix cache size mismatch".into());
        }
        for (h, b) in self.cache.iter() {
            if self.hash[b as usize] != Some(h) {
                return Err(format!(
                    "cache maps a hash to block {b} which holds another"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_drops_hash_and_emits_event() {
        let mut pool = BlockPool::new(1, true);
        let b = pool.allocate().unwrap();
        let h = BlockHash::of_block(None, 0, &[7]);
        pool.cache(b, h, None);
        pool.release(b);
        assert_eq!(pool.num_cached_free(), 1);
        let again = pool.allocate().unwrap();
        assert_eq!(again, b);
        assert_eq!(pool.lookup(&h), None);
        assert_eq!(pool.evictions, 1);
        let ev = pool.events.drain();
        assert_eq!(ev.len(), 2);
        assert!(pool.check().is_ok());
    }

    #[test]
    fn uncached_blocks_are_reused_first() {
        let mut pool = BlockPool::new(4, false);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        pool.cache(a, BlockHash::of_block(None, 0, &[1]), None);
        // Freed tail first, as a request frees its table.
        pool.free_blocks([c, b, a]);
        assert_eq!(
            pool.free_queue().iter().collect::<Vec<_>>(),
            vec![c, b, 3, a]
        );
        assert!(pool.check().is_ok());
    }

    #[test]
    fn reset_refuses_while_referenced() {
        let mut pool = BlockPool::new(2, false);
        let b = pool.allocate().unwrap();
        pool.cache(b, BlockHash::of_block(None, 0, &[7]), None);
        assert!(!pool.reset_prefix_cache());
        pool.release(b);
        assert!(pool.reset_prefix_cache());
        assert_eq!(pool.num_cached_free(), 0);
        assert!(pool.check().is_ok());
    }
}
