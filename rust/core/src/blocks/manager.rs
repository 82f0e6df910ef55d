//! The block manager: what a serving engine's scheduler calls every step.
//!
//! Behaviour follows vLLM's v1 `KVCacheManager` (see `docs/blocks.md`):
//! all-or-nothing allocation, prefix caching of full blocks by chained hash
//! (the last block of a fully cached prompt is recomputed), freed blocks kept
//! cached and evicted in LRU order (a request's blocks are freed tail first),
//! eviction only when free blocks run out. On top: copy-on-write fork, swap
//! to a host tier with coalesced ranges, TTL pins, and [`BlockManager::step`],
//! which serves a whole scheduler step in one call.

use super::admit::LookupMemo;
use super::block_hash::BlockHash;
use super::block_pool::BlockPool;
use super::events::BlockEvent;
use super::request_table::{Queue, RequestState, RequestTable, Residency};
use super::schedule::SchedQueues;
use super::stats::BlockStats;
use super::swap::HostTier;
use super::ttl_pins::PinSchedule;
use crate::{Error, ErrorKind, Result};

/// How a [`BlockManager`] is built.
///
/// ```
/// use slabcache_core::blocks::BlockManagerConfig;
/// let cfg = BlockManagerConfig { num_cpu_blocks: 64, watermark: 0.01, ..BlockManagerConfig::new(1024, 16) };
/// assert_eq!(cfg.block_size, 16);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BlockManagerConfig {
    /// Device blocks.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Host-tier blocks for swapping (0: no swapping).
    pub num_cpu_blocks: usize,
    /// Share full blocks between requests by content hash.
    pub enable_prefix_caching: bool,
    /// Fraction of device blocks kept free when admitting a new request or swapping one in.
    pub watermark: f64,
    /// Record [`BlockEvent`]s for [`BlockManager::drain_events`].
    pub enable_events: bool,
}

impl BlockManagerConfig {
    /// Defaults: prefix caching on, no host tier, no watermark, no events.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        BlockManagerConfig {
            num_blocks,
            block_size,
            num_cpu_blocks: 0,
            enable_prefix_caching: true,
            watermark: 0.0,
            enable_events: false,
        }
    }
}

/// The paged KV-cache block manager.
///
/// ```
/// use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
/// let mut bm = BlockManager::new(BlockManagerConfig::new(64, 4)).unwrap();
/// let system: Vec<u32> = (0..8).collect();            // two full blocks shared by everyone
/// let mut p1 = system.clone(); p1.extend([100, 101, 102]);
/// let (hit, n) = bm.get_computed_blocks(1, &p1, 0, None).unwrap();
/// assert_eq!((hit.len(), n), (0, 0));
/// bm.allocate_slots(1, p1.len(), &[], 0, 0.0).unwrap().unwrap();
/// let mut p2 = system.clone(); p2.extend([200, 201]);
/// let (hit, n) = bm.get_computed_blocks(2, &p2, 0, None).unwrap();
/// assert_eq!(n, 8);                                    // the system prompt is shared
/// assert_eq!(hit, bm.block_table(1).unwrap()[..2].to_vec());
/// bm.allocate_slots(2, p2.len() - n, &[], 0, 0.0).unwrap().unwrap();
/// bm.free(1).unwrap();
/// bm.free(2).unwrap();
/// bm.check_invariants().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct BlockManager {
    pub(super) cfg: BlockManagerConfig,
    pub(super) watermark_blocks: usize,
    pub(super) pool: BlockPool,
    pub(super) host: HostTier,
    pub(super) reqs: RequestTable,
    pub(super) pins: PinSchedule,
    pub(super) copies: Vec<(u32, u32)>,
    pub(super) stats: BlockStats,
    pub(super) scratch_hit: Vec<u32>,
    pub(super) queues: SchedQueues,
    pub(super) memo: LookupMemo,
}

pub(super) fn invalid(msg: String) -> Error {
    Error::invalid_argument(msg)
}

impl BlockManager {
    /// A manager over `cfg.num_blocks` device blocks.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// assert_eq!(bm.num_free_blocks(), 8);
    /// assert!(BlockManager::new(BlockManagerConfig::new(0, 4)).is_err()); // no blocks
    /// ```
    pub fn new(cfg: BlockManagerConfig) -> Result<Self> {
        if cfg.block_size == 0 || cfg.block_size > 1 << 20 {
            return Err(invalid(format!(
                "block_size must be in 1..=2**20, got {}",
                cfg.block_size
            )));
        }
        if cfg.num_blocks == 0
            || cfg.num_blocks >= u32::MAX as usize
            || cfg.num_blocks > i32::MAX as usize
        {
            return Err(invalid(format!(
                "num_blocks must be in 1..2**31, got {}",
                cfg.num_blocks
            )));
        }
        if cfg.num_cpu_blocks > i32::MAX as usize {
            return Err(invalid(format!(
                "num_cpu_blocks must be below 2**31, got {}",
                cfg.num_cpu_blocks
            )));
        }
        if !(cfg.watermark.is_finite() && (0.0..1.0).contains(&cfg.watermark)) {
            return Err(invalid(format!(
                "watermark must be in [0, 1), got {}",
                cfg.watermark
            )));
        }
        let watermark_blocks = (cfg.watermark * cfg.num_blocks as f64) as usize;
        Ok(BlockManager {
            pool: BlockPool::try_new(cfg.num_blocks, cfg.enable_events)?,
            host: HostTier::try_new(cfg.num_cpu_blocks)?,
            reqs: RequestTable::default(),
            pins: PinSchedule::default(),
            copies: Vec::new(),
            stats: BlockStats::default(),
            scratch_hit: Vec::new(),
            queues: SchedQueues::default(),
            memo: LookupMemo::default(),
            watermark_blocks,
            cfg,
        })
    }

    /// The configuration.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// assert_eq!(bm.config().num_blocks, 8);
    /// assert!(bm.config().enable_prefix_caching);
    /// ```
    pub fn config(&self) -> &BlockManagerConfig {
        &self.cfg
    }

    /// Tokens per block.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// assert_eq!(bm.block_size(), 4);
    /// ```
    #[inline]
    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Device blocks not referenced by a request or pin.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap(); // 5 tokens: 2 blocks
    /// assert_eq!(bm.num_free_blocks(), 6);
    /// ```
    #[inline]
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Whether request `id` is live.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// assert!(bm.contains(1) && !bm.contains(2));
    /// bm.free(1).unwrap();
    /// assert!(!bm.contains(1));
    /// ```
    pub fn contains(&self, id: i64) -> bool {
        self.reqs.contains(id)
    }

    /// Number of live requests.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// bm.get_computed_blocks(2, &[4, 5], 0, None).unwrap();
    /// assert_eq!(bm.num_requests(), 2);
    /// ```
    pub fn num_requests(&self) -> usize {
        self.reqs.len()
    }

    /// Ref count of device block `block` (for tests and debugging).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// let new = bm.allocate_slots(1, 3, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.ref_count(new[0]).unwrap(), 1);
    /// assert!(bm.ref_count(8).is_err()); // out of range
    /// ```
    pub fn ref_count(&self, block: u32) -> Result<u32> {
        if block as usize >= self.pool.num_blocks() {
            return Err(invalid(format!(
                "block id {block} out of range 0..{}",
                self.pool.num_blocks()
            )));
        }
        Ok(self.pool.ref_count(block))
    }

    /// Free device blocks from next-evicted to last (for tests and debugging).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// assert_eq!(bm.free_block_order(), (0..8).collect::<Vec<u32>>());
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap(); // blocks 0, 1
    /// bm.free(1).unwrap();
    /// // The partial block 1 holds no hash: reused first. The cached block 0 waits at the back.
    /// assert_eq!(bm.free_block_order(), vec![1, 2, 3, 4, 5, 6, 7, 0]);
    /// ```
    pub fn free_block_order(&self) -> Vec<u32> {
        self.pool.free_queue().iter().collect()
    }

    fn unknown(&self, id: i64) -> Error {
        if self.reqs.recently_freed(id) {
            Error::new(
                ErrorKind::DoubleFree,
                format!("request {id} was already freed"),
            )
        } else {
            Error::not_found(format!("unknown request id {id}"))
        }
    }

    pub(super) fn live(&self, id: i64) -> Result<&RequestState> {
        self.reqs.get(id).ok_or_else(|| self.unknown(id))
    }

    /// Appends the longest cached prefix of request `id` to `out` and counts the query.
    pub(super) fn lookup_prefix(&mut self, id: i64, out: &mut Vec<u32>) {
        self.lookup_prefix_limited(id, out, usize::MAX);
    }

    /// [`lookup_prefix`](Self::lookup_prefix) hitting at most `limit` tokens.
    fn lookup_prefix_limited(&mut self, id: i64, out: &mut Vec<u32>, limit: usize) {
        if !self.cfg.enable_prefix_caching {
            return;
        }
        let st = self.reqs.get(id).expect("live");
        // vLLM: at most num_tokens - 1 tokens may hit, so a fully cached
        // prompt still computes its last token (the model needs its logits).
        let max_tokens = st.num_tokens.saturating_sub(1).min(limit);
        let max = (max_tokens / self.cfg.block_size).min(st.hashes.len());
        let start = out.len();
        for h in &st.hashes[..max] {
            match self.pool.lookup(h) {
                Some(b) => out.push(b),
                None => break,
            }
        }
        self.stats.prefix_queries += 1;
        self.stats.prefix_query_tokens += st.num_tokens as u64;
        self.stats.prefix_hit_tokens += ((out.len() - start) * self.cfg.block_size) as u64;
    }

    /// Registers a waiting request's prompt (if new) and finds its longest
    /// cached prefix: `(block ids, cached tokens)`. Changes no block; the next
    /// [`allocate_slots`](Self::allocate_slots) of this request takes these blocks.
    ///
    /// For a request already registered, `tokens` must equal what was
    /// recorded (an error otherwise, with nothing changed).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// let (hit, n) = bm.get_computed_blocks(2, &[1, 2, 3, 4, 7, 7], 0, None).unwrap();
    /// assert_eq!((hit, n), (bm.block_table(1).unwrap()[..1].to_vec(), 4));
    /// ```
    pub fn get_computed_blocks(
        &mut self,
        id: i64,
        tokens: &[u32],
        extra_key: u64,
        program: Option<i64>,
    ) -> Result<(Vec<u32>, usize)> {
        self.get_computed_blocks_limited(id, tokens, extra_key, program, usize::MAX)
    }

    /// [`get_computed_blocks`](Self::get_computed_blocks) hitting at most
    /// `max_hit_tokens` tokens: vLLM's `max_cache_hit_length`, and 0 for a
    /// request that must not read the prefix cache (prompt logprobs). The
    /// next allocation takes exactly the blocks returned.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 2)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// let (hit, n) = bm.get_computed_blocks_limited(2, &[1, 2, 3, 4, 9], 0, None, 0).unwrap();
    /// assert_eq!((hit.len(), n), (0, 0));          // skips the cache
    /// let (hit, n) = bm.get_computed_blocks_limited(2, &[1, 2, 3, 4, 9], 0, None, 3).unwrap();
    /// assert_eq!((hit.len(), n), (1, 2));          // at most 3 tokens: one block
    /// ```
    pub fn get_computed_blocks_limited(
        &mut self,
        id: i64,
        tokens: &[u32],
        extra_key: u64,
        program: Option<i64>,
        max_hit_tokens: usize,
    ) -> Result<(Vec<u32>, usize)> {
        if let Some(st) = self.reqs.get(id) {
            not_queued(id, st)?;
            if !st.blocks.is_empty() || st.num_computed > 0 || st.residency != Residency::Device {
                return Err(invalid(format!(
                    "request {id} is already running; get_computed_blocks is for waiting requests"
                )));
            }
            if st.extra_key != extra_key {
                return Err(invalid(format!(
                    "request {id} was registered with extra key {}, not {extra_key}",
                    st.extra_key
                )));
            }
            if self.cfg.enable_prefix_caching {
                if let Some(i) = first_difference(&st.tokens, tokens) {
                    return Err(invalid(format!(
                        "token ids disagree with those recorded for request {id} at position {i}"
                    )));
                }
            } else if st.num_tokens != tokens.len() {
                return Err(invalid(format!(
                    "request {id} was registered with {} tokens, not {}",
                    st.num_tokens,
                    tokens.len()
                )));
            }
        } else {
            if tokens.is_empty() {
                return Err(invalid(format!("request {id}: the prompt is empty")));
            }
            let st = RequestState::new(
                tokens,
                extra_key,
                program,
                self.cfg.block_size,
                self.cfg.enable_prefix_caching,
            );
            self.reqs.insert(id, st);
        }
        let mut hit = Vec::new();
        self.lookup_prefix_limited(id, &mut hit, max_hit_tokens);
        self.reqs.get_mut(id).expect("registered").pending_hit = Some(hit.len());
        let n = hit.len() * self.cfg.block_size;
        Ok((hit, n))
    }

    /// Allocates slots for `num_new_tokens` more tokens of request `id`
    /// (after appending `new_tokens` to its known tokens), all or nothing.
    ///
    /// For a request with nothing allocated yet this is its admission: it
    /// first takes its cached prefix (the one `get_computed_blocks` reported)
    /// and then `num_new_tokens` tokens beyond it; the watermark applies.
    /// Returns the newly appended block ids, or `None` (and nothing changed)
    /// when the blocks are not there. Copy-on-write copies go to
    /// [`drain_copies`](Self::drain_copies).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// assert_eq!(bm.allocate_slots(1, 3, &[], 0, 0.0).unwrap().unwrap().len(), 1);
    /// // Decode: append the sampled token 9 and compute it (block 0 still has room).
    /// assert!(bm.allocate_slots(1, 1, &[9], 0, 0.0).unwrap().unwrap().is_empty());
    /// // Too many tokens for the pool: refused, nothing changed.
    /// assert!(bm.allocate_slots(1, 0, &[], 40, 0.0).unwrap().is_none());
    /// assert_eq!(bm.num_computed_tokens(1).unwrap(), 4);
    /// ```
    pub fn allocate_slots(
        &mut self,
        id: i64,
        num_new_tokens: usize,
        new_tokens: &[u32],
        num_lookahead_tokens: usize,
        now: f64,
    ) -> Result<Option<Vec<u32>>> {
        self.allocate_slots_reserving(
            id,
            num_new_tokens,
            new_tokens,
            num_lookahead_tokens,
            now,
            None,
        )
    }

    /// [`allocate_slots`](Self::allocate_slots) leaving `reserve` blocks free
    /// (when `Some`) instead of applying the configured watermark to
    /// admissions: a caller with its own admission rule (vLLM's scheduler
    /// reserves blocks for in-flight loads and applies the watermark only
    /// when other requests are scheduled) decides the reserve.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(4, 2)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// assert!(bm.allocate_slots_reserving(1, 3, &[], 0, 0.0, Some(3)).unwrap().is_none());
    /// assert!(bm.allocate_slots_reserving(1, 3, &[], 0, 0.0, Some(2)).unwrap().is_some());
    /// ```
    pub fn allocate_slots_reserving(
        &mut self,
        id: i64,
        num_new_tokens: usize,
        new_tokens: &[u32],
        num_lookahead_tokens: usize,
        now: f64,
        reserve: Option<usize>,
    ) -> Result<Option<Vec<u32>>> {
        check_now(now)?;
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!(
                "request {id} is swapped out; swap it in first"
            )));
        }
        not_queued(id, st)?;
        let admission = st.blocks.is_empty() && st.num_computed == 0;
        let saved_stats = self.stats;
        let mut hit = Vec::new();
        if admission && self.cfg.enable_prefix_caching {
            if !new_tokens.is_empty() {
                return Err(invalid(format!(
                    "request {id} has no slots yet: pass its prompt to get_computed_blocks, not new token ids"
                )));
            }
            match st.pending_hit {
                Some(k) => {
                    for h in &st.hashes[..k] {
                        match self.pool.lookup(h) {
                            Some(b) => hit.push(b),
                            None => {
                                return Err(invalid(format!(
                                    "the cached prefix get_computed_blocks found for request {id} was evicted since; call it again"
                                )));
                            }
                        }
                    }
                }
                None => self.lookup_prefix(id, &mut hit),
            }
        }
        // Validate before anything changes (pin expiry included).
        let st = self.reqs.get(id).expect("live");
        if let Err(e) = token_range(
            id,
            st,
            hit.len(),
            self.cfg.block_size,
            num_new_tokens,
            new_tokens,
        ) {
            self.stats = saved_stats;
            return Err(e);
        }
        self.expire_pins(now)?;
        let mut out = Vec::new();
        let r = self.try_allocate(
            id,
            num_new_tokens,
            new_tokens,
            num_lookahead_tokens,
            &hit,
            admission,
            reserve,
            true,
            &mut out,
        )?;
        Ok(r.map(|_| out))
    }

    /// The all-or-nothing core of allocation. `hit` are cached blocks to take
    /// first (admission only). New block ids are appended to `out`.
    ///
    /// A request's token positions, left to right, and what this call does
    /// with each range:
    ///
    /// ```text
    /// | < computed >  | < hit >       | < new >       | < lookahead > |
    /// +---------------+---------------+---------------+---------------+
    /// | blocks held   | cached blocks | computed this | slots only    |
    /// | already       | taken, ref+1  | step          | (spec tokens) |
    /// +---------------+---------------+---------------+---------------+
    /// |<------ at most the tokens known ------------->|
    ///                 |<-- new blocks: what held + hit do not cover ->|
    /// |<-- its full blocks enter the prefix cache --->|
    /// ```
    ///
    /// `computed + hit + new` never passes the tokens known (checked by
    /// [`token_range`]); lookahead slots may. A held block in the `new` range
    /// that another request shares is copied first (copy-on-write). The refusal check counts new
    /// blocks, copy-on-write copies and the reserve (the watermark for an
    /// admission) against free blocks, less the evictable hits this call
    /// takes out of the free queue; nothing changes on a refusal.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_allocate(
        &mut self,
        id: i64,
        num_new_tokens: usize,
        new_tokens: &[u32],
        lookahead: usize,
        hit: &[u32],
        admission: bool,
        reserve: Option<usize>,
        cache_now: bool,
        out: &mut Vec<u32>,
    ) -> Result<Option<()>> {
        let bs = self.cfg.block_size;
        let caching = self.cfg.enable_prefix_caching;
        let st = self
            .reqs
            .get(id)
            .ok_or_else(|| Error::not_found(format!("unknown request id {id}")))?;
        let (computed_after_hit, tokens_after) =
            token_range(id, st, hit.len(), bs, num_new_tokens, new_tokens)?;
        let need_slots = computed_after_hit + num_new_tokens + lookahead;
        let total_blocks = need_slots.div_ceil(bs);
        let have = st.blocks.len() + hit.len();
        let num_new_blocks = total_blocks.saturating_sub(have);
        // Copy-on-write: existing blocks this step writes into that others share.
        let mut cow = 0;
        if num_new_tokens > 0 && !st.blocks.is_empty() {
            let first = st.num_computed / bs;
            let last = ((st.num_computed + num_new_tokens - 1) / bs).min(st.blocks.len() - 1);
            for i in first..=last.max(first) {
                if i < st.blocks.len() && self.pool.ref_count(st.blocks[i]) > 1 {
                    cow += 1;
                }
            }
        }
        let evictable_hits = hit.iter().filter(|&&b| self.pool.ref_count(b) == 0).count();
        let available = self.pool.num_free() - evictable_hits;
        let reserve = reserve.unwrap_or(if admission { self.watermark_blocks } else { 0 });
        if num_new_blocks + cow + reserve > available {
            self.stats.refusals += 1;
            return Ok(None);
        }
        // Commit: nothing below fails.
        let st = self.reqs.get_mut(id).expect("checked");
        if caching && !new_tokens.is_empty() {
            st.tokens.extend_from_slice(new_tokens);
            BlockHash::extend_chain(&mut st.hashes, st.extra_key, &st.tokens, bs);
        }
        st.num_tokens = tokens_after;
        for &b in hit {
            self.pool.touch(b);
        }
        st.blocks.extend_from_slice(hit);
        st.num_computed = computed_after_hit;
        st.num_cached_blocks += hit.len();
        if cow > 0 {
            let first = st.num_computed / bs;
            let last = (st.num_computed + num_new_tokens - 1) / bs;
            for i in first..=last {
                if i < st.blocks.len() && self.pool.ref_count(st.blocks[i]) > 1 {
                    let src = st.blocks[i];
                    let dst = self.pool.allocate().expect("counted");
                    self.pool.release(src);
                    st.blocks[i] = dst;
                    self.copies.push((src, dst));
                    self.stats.cow_copies += 1;
                }
            }
        }
        for _ in 0..num_new_blocks {
            let b = self.pool.allocate().expect("counted");
            st.blocks.push(b);
            out.push(b);
        }
        st.num_computed += num_new_tokens;
        st.pending_hit = None;
        if caching && cache_now {
            let upto = st.num_computed.min(st.num_tokens) / bs;
            cache_full_blocks(&mut self.pool, st, upto, bs);
        }
        if admission {
            if let Some(p) = st.program {
                if let Some(pin) = self.pins.remove(p) {
                    self.stats.pins_released += 1;
                    release_rev(&mut self.pool, &pin.blocks);
                }
            }
        }
        Ok(Some(()))
    }

    /// Frees request `id`: its blocks' references are dropped tail first, so
    /// cached blocks become evictable suffix before prefix.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// bm.allocate_slots(1, 3, &[], 0, 0.0).unwrap().unwrap();
    /// bm.free(1).unwrap();
    /// assert_eq!(bm.num_free_blocks(), 8);
    /// assert!(bm.free(1).is_err()); // a double free is an error
    /// ```
    pub fn free(&mut self, id: i64) -> Result<()> {
        self.live(id)?;
        let st = self.reqs.remove_freed(id).expect("live");
        self.dequeue(id, st.queue);
        match st.residency {
            Residency::Device => release_rev(&mut self.pool, &st.blocks),
            Residency::Host(h) => self.host.release(&h),
        }
        Ok(())
    }

    /// Forks `parent` into a new request `child` that shares every block
    /// (parallel sampling, beam search). The first write into a shared
    /// partial block copies it (see [`drain_copies`](Self::drain_copies)).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5, 6], 0, None).unwrap();
    /// bm.allocate_slots(1, 6, &[], 0, 0.0).unwrap().unwrap();
    /// bm.fork(1, 2).unwrap();
    /// assert_eq!(bm.block_table(2).unwrap(), bm.block_table(1).unwrap());
    /// assert_eq!(bm.ref_count(bm.block_table(1).unwrap()[1]).unwrap(), 2);
    /// ```
    pub fn fork(&mut self, parent: i64, child: i64) -> Result<()> {
        let p = self.live(parent)?;
        if p.residency != Residency::Device {
            return Err(invalid(format!(
                "request {parent} is swapped out; swap it in first"
            )));
        }
        if self.reqs.contains(child) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("request {child} already exists"),
            ));
        }
        let mut st = p.clone();
        st.program = None;
        st.queue = Queue::None;
        st.num_preemptions = 0;
        for &b in &st.blocks {
            self.pool.touch(b);
        }
        self.reqs.insert(child, st);
        Ok(())
    }

    /// Pins request `id`'s cached blocks for `ttl_s` seconds from `now` under
    /// `program` (default: the program the request was registered with, else
    /// `id`), and finishes the request: its uncached tail is freed. The pin
    /// ends when a new request of the same program is admitted, on `unpin`,
    /// or at the deadline; a program's newer pin replaces its older one.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, Some(7)).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// bm.pin(1, 30.0, None, 0.0).unwrap(); // program 7 keeps its full block for 30 s
    /// assert_eq!(bm.pin_deadline(7), Some(30.0));
    /// assert_eq!(bm.num_free_blocks(), 7); // the partial tail was freed
    /// ```
    pub fn pin(&mut self, id: i64, ttl_s: f64, program: Option<i64>, now: f64) -> Result<()> {
        check_now(now)?;
        if !(ttl_s.is_finite() && ttl_s >= 0.0) {
            return Err(invalid(format!(
                "ttl_s must be a finite number >= 0, got {ttl_s}"
            )));
        }
        if !self.cfg.enable_prefix_caching {
            return Err(invalid(
                "TTL pins need enable_prefix_caching=True".to_string(),
            ));
        }
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!(
                "request {id} is swapped out; swap it in before pinning"
            )));
        }
        let key = program.or(st.program).unwrap_or(id);
        let st = self.reqs.remove_freed(id).expect("live");
        self.dequeue(id, st.queue);
        let keep = st.num_cached_blocks.min(st.blocks.len());
        release_rev(&mut self.pool, &st.blocks[keep..]);
        let kept = st.blocks[..keep].to_vec();
        if let Some(old) = self.pins.insert(key, now + ttl_s, kept) {
            release_rev(&mut self.pool, &old.blocks);
        }
        self.stats.pins_created += 1;
        Ok(())
    }

    /// Releases `program`'s pin now.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4], 0, None).unwrap();
    /// bm.allocate_slots(1, 4, &[], 0, 0.0).unwrap().unwrap();
    /// bm.pin(1, 30.0, Some(5), 0.0).unwrap();
    /// bm.unpin(5).unwrap();
    /// assert_eq!(bm.num_free_blocks(), 8);
    /// assert!(bm.unpin(5).is_err()); // no pin any more
    /// ```
    pub fn unpin(&mut self, program: i64) -> Result<()> {
        let pin = self
            .pins
            .remove(program)
            .ok_or_else(|| Error::not_found(format!("program {program} holds no pin")))?;
        release_rev(&mut self.pool, &pin.blocks);
        self.stats.pins_released += 1;
        Ok(())
    }

    /// Releases, in deadline order, every pin whose deadline is `<= now`; returns how many.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4], 0, None).unwrap();
    /// bm.allocate_slots(1, 4, &[], 0, 0.0).unwrap().unwrap();
    /// bm.pin(1, 10.0, Some(5), 0.0).unwrap();
    /// assert_eq!(bm.expire_pins(9.0).unwrap(), 0);
    /// assert_eq!(bm.expire_pins(10.0).unwrap(), 1);
    /// ```
    pub fn expire_pins(&mut self, now: f64) -> Result<usize> {
        check_now(now)?;
        if self.pins.next_deadline().is_none_or(|d| d > now) {
            return Ok(0);
        }
        let expired: Vec<_> = self.pins.pop_expired(now).collect();
        for (_, pin) in &expired {
            release_rev(&mut self.pool, &pin.blocks);
        }
        self.stats.pins_expired += expired.len() as u64;
        Ok(expired.len())
    }

    /// Whether `program` holds a pin, and its deadline.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// assert_eq!(bm.pin_deadline(5), None);
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4], 0, None).unwrap();
    /// bm.allocate_slots(1, 4, &[], 0, 0.0).unwrap().unwrap();
    /// bm.pin(1, 2.5, Some(5), 1.0).unwrap();
    /// assert_eq!(bm.pin_deadline(5), Some(3.5));
    /// ```
    pub fn pin_deadline(&self, program: i64) -> Option<f64> {
        self.pins.get(program).map(|p| p.deadline)
    }

    /// Request `id`'s device block table.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.block_table(1).unwrap(), &[0, 1]);
    /// assert!(bm.block_table(2).is_err());
    /// ```
    pub fn block_table(&self, id: i64) -> Result<&[u32]> {
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!("request {id} is swapped out")));
        }
        Ok(&st.blocks)
    }

    /// Request `id`'s host block table, if swapped out.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig { num_cpu_blocks: 4, ..BlockManagerConfig::new(8, 4) }).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// bm.allocate_slots(1, 3, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.host_block_table(1).unwrap(), None);
    /// bm.swap_out(1).unwrap().unwrap();
    /// assert_eq!(bm.host_block_table(1).unwrap().unwrap().len(), 1);
    /// ```
    pub fn host_block_table(&self, id: i64) -> Result<Option<&[u32]>> {
        Ok(match &self.live(id)?.residency {
            Residency::Host(h) => Some(h),
            Residency::Device => None,
        })
    }

    /// Tokens computed for request `id` (its KV is in its blocks).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 2, &[], 0, 0.0).unwrap().unwrap(); // a 2-token chunk
    /// assert_eq!(bm.num_computed_tokens(1).unwrap(), 2);
    /// ```
    pub fn num_computed_tokens(&self, id: i64) -> Result<usize> {
        Ok(self.live(id)?.num_computed)
    }

    /// Leading blocks of request `id` registered in the prefix cache.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.num_cached_blocks(1).unwrap(), 1); // the partial block is not cached
    /// ```
    pub fn num_cached_blocks(&self, id: i64) -> Result<usize> {
        Ok(self.live(id)?.num_cached_blocks)
    }

    /// Block tables of `ids` as one row-major `len(ids) x width` array padded
    /// with `pad` (`width` = the longest table, at least `min_width`).
    /// Unknown ids are an error; swapped-out requests get a row of padding.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// bm.get_computed_blocks(2, &[9], 0, None).unwrap();
    /// bm.allocate_slots(2, 1, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.block_tables(&[1, 2], -1, 0).unwrap(), (vec![0, 1, 2, -1], 2));
    /// ```
    pub fn block_tables(
        &self,
        ids: &[i64],
        pad: i32,
        min_width: usize,
    ) -> Result<(Vec<i32>, usize)> {
        let mut width = min_width;
        for &id in ids {
            width = width.max(self.live(id)?.blocks.len());
        }
        let mut out = vec![pad; ids.len() * width];
        for (row, &id) in ids.iter().enumerate() {
            let blocks = &self.reqs.get(id).expect("checked").blocks;
            for (dst, &b) in out[row * width..].iter_mut().zip(blocks) {
                *dst = b as i32;
            }
        }
        Ok((out, width))
    }

    /// Like [`block_tables`](Self::block_tables) but never fails: ids that are
    /// not live (e.g. a new request a step refused) get a row of padding.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// bm.allocate_slots(1, 3, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.padded_block_tables(&[1, 99], -1, 2), (vec![0, -1, -1, -1], 2));
    /// ```
    pub fn padded_block_tables(
        &self,
        ids: &[i64],
        pad: i32,
        min_width: usize,
    ) -> (Vec<i32>, usize) {
        let empty: &[u32] = &[];
        let table = |id: i64| self.reqs.get(id).map_or(empty, |st| st.blocks.as_slice());
        let width = ids
            .iter()
            .map(|&id| table(id).len())
            .max()
            .unwrap_or(0)
            .max(min_width);
        let mut out = vec![pad; ids.len() * width];
        for (row, &id) in ids.iter().enumerate() {
            for (dst, &b) in out[row * width..].iter_mut().zip(table(id)) {
                *dst = b as i32;
            }
        }
        (out, width)
    }

    /// Takes the copy-on-write copies `(src, dst)` made since the last drain.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// bm.fork(1, 2).unwrap();
    /// // The child writes into the shared partial block 1: it gets a copy.
    /// let new = bm.allocate_slots(2, 1, &[6], 0, 0.0).unwrap().unwrap();
    /// assert!(new.is_empty());
    /// assert_eq!(bm.drain_copies(), vec![(1, bm.block_table(2).unwrap()[1])]);
    /// assert!(bm.drain_copies().is_empty());
    /// ```
    pub fn drain_copies(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.copies)
    }

    /// Takes the prefix-cache events recorded since the last drain.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// use slabcache_core::blocks::BlockEventKind;
    /// let mut bm = BlockManager::new(BlockManagerConfig { enable_events: true, ..BlockManagerConfig::new(8, 4) }).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// let ev = bm.drain_events();
    /// assert_eq!(ev.len(), 1); // one full block entered the cache
    /// assert_eq!((ev[0].kind, ev[0].block_id), (BlockEventKind::Stored, 0));
    /// ```
    pub fn drain_events(&mut self) -> Vec<BlockEvent> {
        self.pool.events.drain()
    }

    /// Takes the events and the token ids their ranges index (see
    /// [`EventLog::drain_with_tokens`](super::events::EventLog::drain_with_tokens)).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig { enable_events: true, ..BlockManagerConfig::new(8, 4) }).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// let (ev, tokens) = bm.drain_events_with_tokens();
    /// let e = &ev[0];
    /// assert_eq!(&tokens[e.tokens_start..e.tokens_start + e.tokens_len], &[1, 2, 3, 4]);
    /// ```
    pub fn drain_events_with_tokens(&mut self) -> (Vec<BlockEvent>, Vec<u32>) {
        self.pool.events.drain_with_tokens()
    }

    /// Turns the event stream on or off.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.set_events_enabled(true);
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4], 0, None).unwrap();
    /// bm.allocate_slots(1, 4, &[], 0, 0.0).unwrap().unwrap();
    /// assert_eq!(bm.drain_events().len(), 1);
    /// ```
    pub fn set_events_enabled(&mut self, on: bool) {
        self.pool.events.set_enabled(on);
    }

    /// Drops every cached hash; `false` (nothing changed) while a cached block is in use.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// assert!(!bm.reset_prefix_cache()); // block 0 is cached and in use
    /// bm.free(1).unwrap();
    /// assert!(bm.reset_prefix_cache());
    /// assert_eq!(bm.get_computed_blocks(2, &[1, 2, 3, 4, 5], 0, None).unwrap().1, 0);
    /// ```
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }

    /// Counters and usage.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5], 0, None).unwrap();
    /// bm.allocate_slots(1, 5, &[], 0, 0.0).unwrap().unwrap();
    /// bm.get_computed_blocks(2, &[1, 2, 3, 4, 6], 0, None).unwrap();
    /// let s = bm.stats();
    /// assert_eq!((s.prefix_queries, s.prefix_hit_tokens, s.num_free_blocks), (2, 4, 6));
    /// ```
    pub fn stats(&self) -> BlockStats {
        let mut s = self.stats;
        s.num_blocks = self.pool.num_blocks();
        s.num_free_blocks = self.pool.num_free();
        s.num_cached_free_blocks = self.pool.num_cached_free();
        s.num_pinned_blocks = self.pins.num_blocks();
        s.num_cpu_blocks = self.host.num_blocks();
        s.num_used_cpu_blocks = self.host.num_blocks() - self.host.num_free();
        s.num_requests = self.reqs.len();
        s.evictions = self.pool.evictions;
        s
    }
}

/// Registers `st`'s full blocks before block `upto` that are not cached yet.
pub(super) fn cache_full_blocks(
    pool: &mut BlockPool,
    st: &mut RequestState,
    upto: usize,
    bs: usize,
) {
    for i in st.num_cached_blocks..upto {
        let parent = if i == 0 { None } else { Some(st.hashes[i - 1]) };
        let toks = &st.tokens[i * bs..(i + 1) * bs];
        pool.cache_tokens(st.blocks[i], st.hashes[i], parent, toks, st.extra_key);
    }
    st.num_cached_blocks = st.num_cached_blocks.max(upto);
}

/// Requests in [`BlockManager::schedule`]'s queues are driven by it alone.
pub(super) fn not_queued(id: i64, st: &RequestState) -> Result<()> {
    if st.queue == Queue::None {
        Ok(())
    } else {
        Err(invalid(format!(
            "request {id} is in schedule()'s queues; drive it with schedule() (or free it)"
        )))
    }
}

/// Checks an allocation's token range before anything changes: the appended
/// `new_tokens` are valid ids and the `num_new_tokens` to compute, after the
/// request's computed tokens and `hit_blocks` cached blocks, stay within the
/// tokens known. Returns `(computed after the hit, tokens known after)`.
pub(super) fn token_range(
    id: i64,
    st: &RequestState,
    hit_blocks: usize,
    block_size: usize,
    num_new_tokens: usize,
    new_tokens: &[u32],
) -> Result<(usize, usize)> {
    if let Some(t) = new_tokens.iter().position(|&t| t > i32::MAX as u32) {
        return Err(invalid(format!("token id at {t} is negative or too large")));
    }
    let computed_after_hit = st.num_computed + hit_blocks * block_size;
    let tokens_after = st.num_tokens + new_tokens.len();
    if computed_after_hit + num_new_tokens > tokens_after {
        return Err(invalid(format!(
            "request {id}: {num_new_tokens} new tokens after {computed_after_hit} computed exceed the {tokens_after} token ids known; pass the new token ids"
        )));
    }
    Ok((computed_after_hit, tokens_after))
}

/// Frees a table tail first, so its suffix is evicted before its prefix.
#[inline]
pub(super) fn release_rev(pool: &mut BlockPool, blocks: &[u32]) {
    pool.free_blocks(blocks.iter().rev().copied());
}

pub(super) fn check_now(now: f64) -> Result<()> {
    if now.is_finite() {
        Ok(())
    } else {
        Err(invalid(format!(
            "now must be a finite time in seconds, got {now}"
        )))
    }
}

fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    let n = a.len().min(b.len());
    match (0..n).find(|&i| a[i] != b[i]) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(n),
        None => None,
    }
}

/// Token ids from an `int32` array: an error if any is negative.
///
/// ```
/// use slabcache_core::blocks::tokens_from_i32;
/// assert_eq!(tokens_from_i32(&[1, 2]).unwrap(), &[1u32, 2]);
/// assert!(tokens_from_i32(&[1, -2]).is_err());
/// ```
pub fn tokens_from_i32(t: &[i32]) -> Result<&[u32]> {
    if let Some(i) = t.iter().position(|&x| x < 0) {
        return Err(invalid(format!(
            "token id {} at index {i} is negative",
            t[i]
        )));
    }
    Ok(as_u32(t))
}

/// Reinterprets validated (non-negative) token ids.
#[inline]
pub(super) fn as_u32(t: &[i32]) -> &[u32] {
    // SAFETY: i32 and u32 have the same size and alignment, every bit
    // pattern is valid for both, and the slice's lifetime is carried over.
    unsafe { std::slice::from_raw_parts(t.as_ptr() as *const u32, t.len()) }
}
