//! Counters an engine exports as metrics.

/// Cumulative counters plus the pool's current usage.
///
/// ```
/// use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
/// let bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
/// let s = bm.stats();
/// assert_eq!(s.num_free_blocks, 8);
/// assert_eq!(s.usage(), 0.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlockStats {
    /// Device blocks in the pool.
    pub num_blocks: usize,
    /// Device blocks not referenced by any request or pin (cached-evictable ones included).
    pub num_free_blocks: usize,
    /// Free blocks that still hold a cached hash (reusable by a prefix hit).
    pub num_cached_free_blocks: usize,
    /// Blocks held by TTL pins only.
    pub num_pinned_blocks: usize,
    /// Host-tier blocks in total and in use.
    pub num_cpu_blocks: usize,
    /// Host-tier blocks holding swapped-out requests.
    pub num_used_cpu_blocks: usize,
    /// Live requests (running, waiting with a lookup, or swapped).
    pub num_requests: usize,
    /// Prefix-cache lookups (one per new request).
    pub prefix_queries: u64,
    /// Tokens looked up (the prompts' lengths).
    pub prefix_query_tokens: u64,
    /// Tokens served from the cache.
    pub prefix_hit_tokens: u64,
    /// Cached blocks whose hash was dropped to reuse the block.
    pub evictions: u64,
    /// Copy-on-write copies reported.
    pub cow_copies: u64,
    /// Pins created, released by a next turn, expired.
    pub pins_created: u64,
    /// Pins released because the program's next turn arrived (or by `unpin`).
    pub pins_released: u64,
    /// Pins that reached their deadline.
    pub pins_expired: u64,
    /// Swap-outs and swap-ins performed, and blocks moved each way.
    pub swap_outs: u64,
    /// Swap-ins performed.
    pub swap_ins: u64,
    /// Blocks copied device -> host.
    pub blocks_swapped_out: u64,
    /// Blocks copied host -> device.
    pub blocks_swapped_in: u64,
    /// Swap-in blocks not copied because the device still cached that content.
    pub swap_in_blocks_reused: u64,
    /// Allocations refused for lack of blocks.
    pub refusals: u64,
    /// Running requests preempted by [`BlockManager::schedule`](super::BlockManager::schedule).
    pub preemptions: u64,
}

impl BlockStats {
    /// Fraction of device blocks referenced (0.0 - 1.0).
    pub fn usage(&self) -> f64 {
        if self.num_blocks == 0 {
            0.0
        } else {
            1.0 - self.num_free_blocks as f64 / self.num_blocks as f64
        }
    }

    /// Hit tokens / queried tokens (0.0 when nothing was queried).
    pub fn prefix_hit_rate(&self) -> f64 {
        if self.prefix_query_tokens == 0 {
            0.0
        } else {
            self.prefix_hit_tokens as f64 / self.prefix_query_tokens as f64
        }
    }
}
