//! The block manager: what a serving engine's scheduler calls every step.
//!
//! Behaviour follows vLLM's v1 `KVCacheManager` (see `docs/blocks.md`):
//! all-or-nothing allocation, prefix caching of full blocks by chained hash
//! (the last block of a fully cached prompt is recomputed), freed blocks kept
//! cached and evicted in LRU order (a request's blocks are freed tail first),
//! eviction only when free blocks run out. On top: copy-on-write fork, swap
//! to a host tier with coalesced ranges, TTL pins, and [`BlockManager::step`],
//! which serves a whole scheduler step in one call.

use super::block_hash::BlockHash;
use super::block_pool::BlockPool;
use super::events::BlockEvent;
use super::request_table::{RequestState, RequestTable, Residency};
use super::stats::BlockStats;
use super::swap::{coalesce, CopyRange, HostTier};
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

/// One scheduler step's input: flat arrays, one entry per scheduled request.
///
/// Entry `i` is request `req_ids[i]` with a budget of `num_new_tokens[i]`
/// tokens to compute and the token ids `token_ids[token_offsets[i]..token_offsets[i+1]]`:
///
/// * an id the manager does not know is a **new request**: the slice is its
///   prompt (non-empty); the manager finds its cached prefix, then schedules
///   `min(budget, prompt_len - cached)` tokens (chunked prefill when the
///   budget is smaller);
/// * a known request **appends** the slice (e.g. the token sampled last
///   step) and schedules `min(budget, known_tokens - computed)` tokens.
///
/// `finished` requests are freed first. `extra_keys[i]` (LoRA id / salt,
/// 0 = none) and `programs[i]` (agent program for TTL pins, negative = none)
/// apply to new requests; either slice may be empty for "none at all".
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    /// Requests scheduled this step (unique).
    pub req_ids: &'a [i64],
    /// Token budget per request (>= 0).
    pub num_new_tokens: &'a [i64],
    /// All entries' token ids, concatenated.
    pub token_ids: &'a [i32],
    /// `len(req_ids) + 1` offsets into `token_ids` (or empty: no tokens at all).
    pub token_offsets: &'a [i64],
    /// Per-entry extra hash key for new requests (or empty).
    pub extra_keys: &'a [u64],
    /// Per-entry program id for new requests (or empty; negative = none).
    pub programs: &'a [i64],
    /// Requests to free before scheduling.
    pub finished: &'a [i64],
    /// Extra slots beyond the scheduled tokens (speculative decoding).
    pub num_lookahead_tokens: usize,
    /// The caller's clock, for TTL-pin expiry.
    pub now: f64,
    /// First-come-first-served admission: after the first new request that
    /// does not fit, later new requests in the batch are not tried (-1).
    pub fcfs: bool,
}

/// One scheduler step's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// Tokens scheduled per entry; -1 when the request did not fit (nothing changed for it).
    pub num_scheduled: Vec<i32>,
    /// Prefix-cache hit tokens per entry (new requests; 0 otherwise).
    pub num_cached_tokens: Vec<i32>,
    /// New block ids of all entries, concatenated.
    pub new_blocks: Vec<i32>,
    /// `len(req_ids) + 1` offsets into `new_blocks`.
    pub new_block_offsets: Vec<i64>,
    /// Copy-on-write copies `(src, dst)` the engine must run before the step.
    pub copies: Vec<(u32, u32)>,
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
    cfg: BlockManagerConfig,
    watermark_blocks: usize,
    pool: BlockPool,
    host: HostTier,
    reqs: RequestTable,
    pins: PinSchedule,
    copies: Vec<(u32, u32)>,
    stats: BlockStats,
    scratch_hit: Vec<u32>,
}

fn invalid(msg: String) -> Error {
    Error::invalid_argument(msg)
}

impl BlockManager {
    /// A manager over `cfg.num_blocks` device blocks.
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
            watermark_blocks,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlockManagerConfig {
        &self.cfg
    }

    /// Tokens per block.
    #[inline]
    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Device blocks not referenced by a request or pin.
    #[inline]
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Whether request `id` is live.
    pub fn contains(&self, id: i64) -> bool {
        self.reqs.contains(id)
    }

    /// Number of live requests.
    pub fn num_requests(&self) -> usize {
        self.reqs.len()
    }

    /// Ref count of device block `block` (for tests and debugging).
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

    fn live(&self, id: i64) -> Result<&RequestState> {
        self.reqs.get(id).ok_or_else(|| self.unknown(id))
    }

    /// Appends the longest cached prefix of request `id` to `out` and counts the query.
    fn lookup_prefix(&mut self, id: i64, out: &mut Vec<u32>) {
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
        if let Some(t) = new_tokens.iter().position(|&t| t > i32::MAX as u32) {
            return Err(invalid(format!("token id at {t} is negative or too large")));
        }
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
        let computed_after_hit = st.num_computed + hit.len() * self.cfg.block_size;
        let tokens_after = st.num_tokens + new_tokens.len();
        if computed_after_hit + num_new_tokens > tokens_after {
            self.stats = saved_stats;
            return Err(invalid(format!(
                "request {id}: {num_new_tokens} new tokens after {computed_after_hit} computed exceed the {tokens_after} token ids known; pass the new token ids"
            )));
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
            &mut out,
        )?;
        Ok(r.map(|_| out))
    }

    /// The all-or-nothing core of allocation. `hit` are cached blocks to take
    /// first (admission only). New block ids are appended to `out`.
    #[allow(clippy::too_many_arguments)]
    fn try_allocate(
        &mut self,
        id: i64,
        num_new_tokens: usize,
        new_tokens: &[u32],
        lookahead: usize,
        hit: &[u32],
        admission: bool,
        reserve: Option<usize>,
        out: &mut Vec<u32>,
    ) -> Result<Option<()>> {
        let bs = self.cfg.block_size;
        let caching = self.cfg.enable_prefix_caching;
        let st = self
            .reqs
            .get(id)
            .ok_or_else(|| Error::not_found(format!("unknown request id {id}")))?;
        if let Some(t) = new_tokens.iter().position(|&t| t > i32::MAX as u32) {
            return Err(invalid(format!("token id at {t} is negative or too large")));
        }
        let computed_after_hit = st.num_computed + hit.len() * bs;
        let tokens_after = st.num_tokens + new_tokens.len();
        if computed_after_hit + num_new_tokens > tokens_after {
            return Err(invalid(format!(
                "request {id}: {num_new_tokens} new tokens after {computed_after_hit} computed exceed the {tokens_after} token ids known; pass the new token ids"
            )));
        }
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
        if caching {
            let upto = st.num_computed.min(st.num_tokens) / bs;
            for i in st.num_cached_blocks..upto {
                let parent = if i == 0 { None } else { Some(st.hashes[i - 1]) };
                let toks = &st.tokens[i * bs..(i + 1) * bs];
                self.pool
                    .cache_tokens(st.blocks[i], st.hashes[i], parent, toks, st.extra_key);
            }
            st.num_cached_blocks = st.num_cached_blocks.max(upto);
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
    pub fn free(&mut self, id: i64) -> Result<()> {
        self.live(id)?;
        let st = self.reqs.remove_freed(id).expect("live");
        match st.residency {
            Residency::Device => release_rev(&mut self.pool, &st.blocks),
            Residency::Host(h) => self.host.release(&h),
        }
        Ok(())
    }

    /// Forks `parent` into a new request `child` that shares every block
    /// (parallel sampling, beam search). The first write into a shared
    /// partial block copies it (see [`drain_copies`](Self::drain_copies)).
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
    pub fn pin_deadline(&self, program: i64) -> Option<f64> {
        self.pins.get(program).map(|p| p.deadline)
    }

    /// Moves request `id`'s blocks to the host tier. Returns the device ->
    /// host copies as coalesced ranges, or `None` (nothing changed) when the
    /// host tier is full. The device blocks are freed (cached ones stay cached).
    pub fn swap_out(&mut self, id: i64) -> Result<Option<Vec<CopyRange>>> {
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!("request {id} is already swapped out")));
        }
        if st.blocks.is_empty() {
            return Err(invalid(format!("request {id} holds no blocks to swap out")));
        }
        let Some(host) = self.host.allocate(st.blocks.len()) else {
            return Ok(None);
        };
        let st = self.reqs.get_mut(id).expect("live");
        // Blocks are interchangeable slots: hand the (ascending, mostly
        // contiguous) host blocks out in device-id order, so that the copies
        // coalesce into ranges whatever order the table is in.
        let mut by_device: Vec<usize> = (0..st.blocks.len()).collect();
        by_device.sort_unstable_by_key(|&i| st.blocks[i]);
        let mut host_table = vec![0u32; st.blocks.len()];
        let mut pairs = Vec::with_capacity(st.blocks.len());
        for (k, &pos) in by_device.iter().enumerate() {
            host_table[pos] = host[k];
            pairs.push((st.blocks[pos], host[k]));
        }
        let host = host_table;
        release_rev(&mut self.pool, &st.blocks);
        self.stats.swap_outs += 1;
        self.stats.blocks_swapped_out += st.blocks.len() as u64;
        st.blocks.clear();
        st.num_cached_blocks = 0;
        st.residency = Residency::Host(host);
        Ok(Some(coalesce(&pairs)))
    }

    /// Brings a swapped-out request back to the device. Full blocks whose
    /// content the device still caches are reused, not copied. Returns the
    /// host -> device copies as coalesced ranges, or `None` (nothing changed)
    /// when the device blocks are not there (the watermark applies).
    pub fn swap_in(&mut self, id: i64, now: f64) -> Result<Option<Vec<CopyRange>>> {
        check_now(now)?;
        let Residency::Host(_) = &self.live(id)?.residency else {
            return Err(invalid(format!("request {id} is not swapped out")));
        };
        self.expire_pins(now)?;
        let st = self.live(id)?;
        let Residency::Host(host) = &st.residency else {
            unreachable!("checked above")
        };
        let n = host.len();
        let full = if self.cfg.enable_prefix_caching {
            (st.num_computed.min(st.num_tokens) / self.cfg.block_size).min(n)
        } else {
            0
        };
        let mut reuse: Vec<Option<u32>> = vec![None; n];
        let mut reused = 0;
        let mut evictable = 0;
        for (i, slot) in reuse.iter_mut().enumerate().take(full) {
            if let Some(b) = self.pool.lookup(&st.hashes[i]) {
                *slot = Some(b);
                reused += 1;
                if self.pool.ref_count(b) == 0 {
                    evictable += 1;
                }
            }
        }
        let need = n - reused;
        if need + self.watermark_blocks > self.pool.num_free() - evictable {
            self.stats.refusals += 1;
            return Ok(None);
        }
        let st = self.reqs.get_mut(id).expect("live");
        let Residency::Host(host) = std::mem::replace(&mut st.residency, Residency::Device) else {
            unreachable!()
        };
        for b in reuse.iter().flatten() {
            self.pool.touch(*b);
        }
        // Fresh device blocks are interchangeable: give them out in host-id
        // order so the copies coalesce (FastSwitch: few large copies).
        let mut fresh: Vec<u32> = (0..need)
            .map(|_| self.pool.allocate().expect("counted"))
            .collect();
        fresh.sort_unstable();
        let mut copy_pos: Vec<usize> = (0..n).filter(|&i| reuse[i].is_none()).collect();
        copy_pos.sort_unstable_by_key(|&i| host[i]);
        st.blocks.clear();
        st.blocks.resize(n, 0);
        for (i, r) in reuse.iter().enumerate() {
            if let Some(b) = r {
                st.blocks[i] = *b;
            }
        }
        let mut pairs = Vec::with_capacity(need);
        for (k, &pos) in copy_pos.iter().enumerate() {
            st.blocks[pos] = fresh[k];
            pairs.push((host[pos], fresh[k]));
        }
        for (i, r) in reuse.iter().enumerate().take(full) {
            if r.is_none() {
                let parent = if i == 0 { None } else { Some(st.hashes[i - 1]) };
                let bs = self.cfg.block_size;
                let toks = &st.tokens[i * bs..(i + 1) * bs];
                self.pool
                    .cache_tokens(st.blocks[i], st.hashes[i], parent, toks, st.extra_key);
            }
        }
        st.num_cached_blocks = full;
        self.host.release(&host);
        self.stats.swap_ins += 1;
        self.stats.blocks_swapped_in += need as u64;
        self.stats.swap_in_blocks_reused += reused as u64;
        Ok(Some(coalesce(&pairs)))
    }

    /// Request `id`'s device block table.
    pub fn block_table(&self, id: i64) -> Result<&[u32]> {
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!("request {id} is swapped out")));
        }
        Ok(&st.blocks)
    }

    /// Request `id`'s host block table, if swapped out.
    pub fn host_block_table(&self, id: i64) -> Result<Option<&[u32]>> {
        Ok(match &self.live(id)?.residency {
            Residency::Host(h) => Some(h),
            Residency::Device => None,
        })
    }

    /// Tokens computed for request `id` (its KV is in its blocks).
    pub fn num_computed_tokens(&self, id: i64) -> Result<usize> {
        Ok(self.live(id)?.num_computed)
    }

    /// Block tables of `ids` as one row-major `len(ids) x width` array padded
    /// with `pad` (`width` = the longest table, at least `min_width`).
    /// Unknown ids are an error; swapped-out requests get a row of padding.
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

    /// Runs one scheduler step (see [`StepInput`]). Validates the whole batch
    /// first: on an error nothing has changed. A request that does not fit
    /// gets `num_scheduled = -1` and is left as it was; the rest proceed.
    pub fn step(&mut self, inp: &StepInput<'_>) -> Result<StepOutput> {
        let n = inp.req_ids.len();
        self.validate_step(inp)?;
        for &id in inp.finished {
            self.free(id).expect("validated");
        }
        self.expire_pins(inp.now)?;
        let bs = self.cfg.block_size;
        let mut out = StepOutput {
            num_scheduled: Vec::with_capacity(n),
            num_cached_tokens: Vec::with_capacity(n),
            new_blocks: Vec::new(),
            new_block_offsets: Vec::with_capacity(n + 1),
            copies: Vec::new(),
        };
        out.new_block_offsets.push(0);
        let mut new_ids: Vec<u32> = Vec::with_capacity(64);
        let mut hit = std::mem::take(&mut self.scratch_hit);
        let mut admissions_stopped = false;
        for i in 0..n {
            let id = inp.req_ids[i];
            let budget = inp.num_new_tokens[i] as usize;
            let toks: &[u32] = if inp.token_offsets.is_empty() {
                &[]
            } else {
                let (a, b) = (
                    inp.token_offsets[i] as usize,
                    inp.token_offsets[i + 1] as usize,
                );
                as_u32(&inp.token_ids[a..b])
            };
            // An admission is a new id or a waiting request registered by
            // get_computed_blocks (known, nothing allocated): FCFS stops both.
            let is_new = !self.reqs.contains(id);
            let waiting = is_new
                || self
                    .reqs
                    .get(id)
                    .is_some_and(|st| st.blocks.is_empty() && st.num_computed == 0);
            if waiting && admissions_stopped {
                out.num_scheduled.push(-1);
                out.num_cached_tokens.push(0);
                out.new_block_offsets.push(out.new_blocks.len() as i64);
                continue;
            }
            if is_new {
                let extra = inp.extra_keys.get(i).copied().unwrap_or(0);
                let program = inp.programs.get(i).copied().filter(|&p| p >= 0);
                let st =
                    RequestState::new(toks, extra, program, bs, self.cfg.enable_prefix_caching);
                self.reqs.insert(id, st);
            }
            let st = self.reqs.get(id).expect("live");
            let admission = st.blocks.is_empty() && st.num_computed == 0;
            hit.clear();
            if admission {
                self.lookup_prefix(id, &mut hit);
            }
            let st = self.reqs.get(id).expect("live");
            let appended = if is_new { 0 } else { toks.len() };
            let remaining =
                (st.num_tokens + appended).saturating_sub(st.num_computed + hit.len() * bs);
            let sched = budget.min(remaining);
            new_ids.clear();
            let tail: &[u32] = if is_new { &[] } else { toks };
            let r = self
                .try_allocate(
                    id,
                    sched,
                    tail,
                    inp.num_lookahead_tokens,
                    &hit,
                    admission,
                    None,
                    &mut new_ids,
                )
                .expect("validated");
            match r {
                Some(()) => {
                    out.num_scheduled.push(sched as i32);
                    out.num_cached_tokens.push((hit.len() * bs) as i32);
                    out.new_blocks.extend(new_ids.iter().map(|&b| b as i32));
                }
                None => {
                    if is_new {
                        self.reqs.discard(id);
                    }
                    if admission && inp.fcfs {
                        admissions_stopped = true;
                    }
                    out.num_scheduled.push(-1);
                    out.num_cached_tokens.push(0);
                }
            }
            out.new_block_offsets.push(out.new_blocks.len() as i64);
        }
        self.scratch_hit = hit;
        out.copies = std::mem::take(&mut self.copies);
        Ok(out)
    }

    fn validate_step(&self, inp: &StepInput<'_>) -> Result<()> {
        check_now(inp.now)?;
        let n = inp.req_ids.len();
        if inp.num_new_tokens.len() != n {
            return Err(invalid(format!(
                "num_new_tokens has {} entries for {n} requests",
                inp.num_new_tokens.len()
            )));
        }
        if !inp.token_offsets.is_empty() {
            if inp.token_offsets.len() != n + 1 {
                return Err(invalid(format!(
                    "token_offsets needs {} entries (len(req_ids) + 1), got {}",
                    n + 1,
                    inp.token_offsets.len()
                )));
            }
            if inp.token_offsets[0] != 0 {
                return Err(invalid("token_offsets must start at 0".into()));
            }
            for w in inp.token_offsets.windows(2) {
                if w[1] < w[0] {
                    return Err(invalid("token_offsets must be non-decreasing".into()));
                }
            }
            if inp.token_offsets[n] as usize > inp.token_ids.len() {
                return Err(invalid(format!(
                    "token_offsets end at {} past the {} token ids",
                    inp.token_offsets[n],
                    inp.token_ids.len()
                )));
            }
        }
        if let Some(i) = inp.token_ids.iter().position(|&t| t < 0) {
            return Err(invalid(format!(
                "token id {} at index {i} is negative",
                inp.token_ids[i]
            )));
        }
        if !inp.extra_keys.is_empty() && inp.extra_keys.len() != n {
            return Err(invalid(
                "extra_keys must be empty or one per request".into(),
            ));
        }
        if !inp.programs.is_empty() && inp.programs.len() != n {
            return Err(invalid("programs must be empty or one per request".into()));
        }
        let mut finished = std::collections::HashSet::with_capacity(inp.finished.len());
        for &id in inp.finished {
            self.live(id)?;
            if !finished.insert(id) {
                return Err(invalid(format!(
                    "request {id} is finished twice in one step"
                )));
            }
        }
        let mut seen: std::collections::HashSet<i64, super::block_hash::IdBuildHasher> =
            std::collections::HashSet::with_capacity_and_hasher(n, Default::default());
        for i in 0..n {
            let id = inp.req_ids[i];
            if !seen.insert(id) {
                return Err(invalid(format!("request {id} appears twice in one step")));
            }
            if finished.contains(&id) {
                return Err(invalid(format!(
                    "request {id} is both finished and scheduled"
                )));
            }
            if inp.num_new_tokens[i] < 0 {
                return Err(invalid(format!(
                    "num_new_tokens[{i}] = {} is negative",
                    inp.num_new_tokens[i]
                )));
            }
            let ntok = if inp.token_offsets.is_empty() {
                0
            } else {
                (inp.token_offsets[i + 1] - inp.token_offsets[i]) as usize
            };
            match self.reqs.get(id) {
                None => {
                    if ntok == 0 {
                        return Err(invalid(format!(
                            "request {id} is new but has no prompt tokens in this step"
                        )));
                    }
                }
                Some(st) => {
                    if st.residency != Residency::Device {
                        return Err(invalid(format!(
                            "request {id} is swapped out; swap it in first"
                        )));
                    }
                    if st.blocks.is_empty() && st.num_computed == 0 && ntok > 0 {
                        return Err(invalid(format!(
                            "request {id} was registered by get_computed_blocks; step it without token ids"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the copy-on-write copies `(src, dst)` made since the last drain.
    pub fn drain_copies(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.copies)
    }

    /// Takes the prefix-cache events recorded since the last drain.
    pub fn drain_events(&mut self) -> Vec<BlockEvent> {
        self.pool.events.drain()
    }

    /// Takes the events and the token ids their ranges index (see
    /// [`EventLog::drain_with_tokens`](super::events::EventLog::drain_with_tokens)).
    pub fn drain_events_with_tokens(&mut self) -> (Vec<BlockEvent>, Vec<u32>) {
        self.pool.events.drain_with_tokens()
    }

    /// Turns the event stream on or off.
    pub fn set_events_enabled(&mut self, on: bool) {
        self.pool.events.set_enabled(on);
    }

    /// Drops every cached hash; `false` (nothing changed) while a cached block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }

    /// Counters and usage.
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

    /// Checks every internal invariant (ref counts equal table and pin
    /// references, free queue = blocks with ref 0, cache and block hashes
    /// agree, tables cover computed tokens, host tier accounting). For tests.
    pub fn check_invariants(&self) -> Result<()> {
        let fail = |m: String| {
            Err(Error::new(
                ErrorKind::Corrupt,
                format!("invariant broken: {m}"),
            ))
        };
        if let Err(m) = self.pool.check() {
            return fail(m);
        }
        if let Err(m) = self.pins.check() {
            return fail(m);
        }
        let bs = self.cfg.block_size;
        let mut refs = vec![0u32; self.pool.num_blocks()];
        let mut host_used = 0;
        let mut host_seen = vec![false; self.host.num_blocks()];
        for (id, st) in self.reqs.iter() {
            if self.cfg.enable_prefix_caching {
                if st.tokens.len() != st.num_tokens {
                    return fail(format!("request {id} token count mismatch"));
                }
                if st.hashes.len() != st.num_tokens / bs {
                    return fail(format!(
                        "request {id} has {} hashes for {} tokens",
                        st.hashes.len(),
                        st.num_tokens
                    ));
                }
            }
            if st.num_computed > st.num_tokens {
                return fail(format!("request {id} computed more tokens than it has"));
            }
            match &st.residency {
                Residency::Device => {
                    if st.blocks.len() < st.num_computed.div_ceil(bs) {
                        return fail(format!("request {id} has too few blocks"));
                    }
                    if st.num_cached_blocks > st.blocks.len() {
                        return fail(format!("request {id} caches more blocks than it has"));
                    }
                    for (i, &b) in st.blocks.iter().enumerate() {
                        refs[b as usize] += 1;
                        if i < st.num_cached_blocks && self.pool.hash_of(b) != Some(&st.hashes[i]) {
                            return fail(format!("request {id} block {i} does not hold its hash"));
                        }
                    }
                    let mut sorted = st.blocks.clone();
                    sorted.sort_unstable();
                    if sorted.windows(2).any(|w| w[0] == w[1]) {
                        return fail(format!("request {id} lists a block twice"));
                    }
                }
                Residency::Host(h) => {
                    if !st.blocks.is_empty() {
                        return fail(format!("swapped request {id} still holds device blocks"));
                    }
                    for &b in h {
                        if host_seen[b as usize] || !self.host.is_used(b) {
                            return fail(format!(
                                "host block {b} double-booked or not marked used"
                            ));
                        }
                        host_seen[b as usize] = true;
                    }
                    host_used += h.len();
                }
            }
        }
        for (program, pin) in self.pins.iter() {
            for &b in &pin.blocks {
                refs[b as usize] += 1;
                if self.pool.hash_of(b).is_none() {
                    return fail(format!("pin of program {program} holds uncached block {b}"));
                }
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            if self.pool.ref_count(b as u32) != r {
                return fail(format!(
                    "block {b} has ref count {} but {r} references",
                    self.pool.ref_count(b as u32)
                ));
            }
        }
        if host_used != self.host.num_blocks() - self.host.num_free() {
            return fail("host tier accounting mismatch".into());
        }
        Ok(())
    }
}

/// Frees a table tail first, so its suffix is evicted before its prefix.
#[inline]
fn release_rev(pool: &mut BlockPool, blocks: &[u32]) {
    pool.free_blocks(blocks.iter().rev().copied());
}

fn check_now(now: f64) -> Result<()> {
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
fn as_u32(t: &[i32]) -> &[u32] {
    // SAFETY: i32 and u32 have the same size and alignment, every bit
    // pattern is valid for both, and the slice's lifetime is carried over.
    unsafe { std::slice::from_raw_parts(t.as_ptr() as *const u32, t.len()) }
}
