//! Hybrid KV-cache groups: several attention types (full attention, sliding
//! window) over one block pool, with vLLM 0.33's `HybridKVCacheCoordinator`
//! semantics.
//!
//! A hybrid model (e.g. full-attention layers interleaved with sliding-window
//! layers, one page size) keeps one block table per *group* for each request;
//! every table draws from the one shared pool (one free queue, one LRU order).
//! The prefix cache is keyed per group (a hash cached in group 0 is not a hit
//! in group 1). A prefix hit must be valid for every group: the longest hit is
//! a fixed point, full attention scanning left to right, sliding-window groups
//! right to left for a run of window-covering hits, the full-attention hit cut
//! to the agreed length. An allocation counts the blocks of every group and
//! happens for all or none. Sliding-window blocks that fall out of the window
//! are freed (the null block takes their place in the table). A request's
//! blocks are freed group by group, each table tail first.
//!
//! [`HybridBlockManager`] mirrors vLLM's coordinator and single-type managers
//! call for call (`allocate_slots` is vLLM's `KVCacheManager.allocate_slots`),
//! so an adapter gets vLLM's block ids from the same calls.

use std::collections::HashMap;

use super::block_hash::BlockHash;
use super::block_pool::BlockPool;
use super::events::BlockEventKind;
use super::sliding_window::{self, NULL_BLOCK};
use crate::{Error, ErrorKind, Result};

/// The attention type of one KV-cache group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// Full attention: every block of the sequence is kept.
    Full,
    /// Sliding-window attention over the last `window` tokens; blocks before
    /// the window (less `extra_retained` tokens) are freed.
    SlidingWindow {
        /// Tokens the window covers.
        window: usize,
        /// Tokens kept below the window (vLLM's `extra_retained_tokens`).
        extra_retained: usize,
    },
}

impl GroupKind {
    fn skipped_tokens(&self, num_computed_tokens: usize) -> usize {
        match *self {
            GroupKind::Full => 0,
            GroupKind::SlidingWindow {
                window,
                extra_retained,
            } => sliding_window::num_skipped_tokens(num_computed_tokens, window, extra_retained),
        }
    }
}

/// One group: its attention type and the per-request block cap that
/// `full_sequence_must_fit` admission applies (vLLM's
/// `max_admission_blocks_per_request`; `None` for full attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpec {
    /// Attention type.
    pub kind: GroupKind,
    /// Admission cap in blocks, if any.
    pub admission_cap: Option<usize>,
}

/// How a [`HybridBlockManager`] is built.
///
/// ```
/// use slabcache_core::blocks::groups::{GroupKind, GroupSpec, HybridConfig};
/// let cfg = HybridConfig::new(64, 4, vec![
///     GroupSpec { kind: GroupKind::Full, admission_cap: None },
///     GroupSpec { kind: GroupKind::SlidingWindow { window: 8, extra_retained: 0 }, admission_cap: None },
/// ]);
/// assert!(cfg.enable_caching);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridConfig {
    /// Blocks in the shared pool.
    pub num_blocks: usize,
    /// Tokens per block (one page size for every group).
    pub block_size: usize,
    /// The groups, in vLLM's group order.
    pub groups: Vec<GroupSpec>,
    /// Prefix caching.
    pub enable_caching: bool,
    /// Record [`GroupEvent`]s.
    pub enable_events: bool,
    /// Groups that get vLLM's EAGLE/MTP last-block drop (its
    /// `drop_eagle_group_ids`): their hit search matches one block more and
    /// drops it, so the drafting head recomputes the last hit block.
    pub eagle_groups: Vec<usize>,
}

impl HybridConfig {
    /// Caching on, events off.
    pub fn new(num_blocks: usize, block_size: usize, groups: Vec<GroupSpec>) -> Self {
        HybridConfig {
            num_blocks,
            block_size,
            groups,
            enable_caching: true,
            enable_events: false,
            eagle_groups: Vec::new(),
        }
    }
}

/// A prefix-cache event of one group, in vLLM's layout: a store is one event
/// per group and caching call (its hashes, the parent of the first, the
/// tokens of the range it covers); a removal is one event per evicted block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    /// Stored or removed.
    pub kind: BlockEventKind,
    /// The group.
    pub group: usize,
    /// Blocks stored (one for a removal).
    pub blocks: Vec<u32>,
    /// Their chained hashes (the group-independent hash).
    pub hashes: Vec<BlockHash>,
    /// The hash of the block before the first stored one.
    pub parent: Option<BlockHash>,
    /// Extra hash key (LoRA, salt) of the request.
    pub extra_key: u64,
    /// Token ids of the stored range (null blocks' included, as vLLM).
    pub tokens: Vec<u32>,
}

/// The arguments of one [`HybridBlockManager::allocate_slots`] call (vLLM's
/// `KVCacheManager.allocate_slots`, the request's state included).
///
/// ```
/// use slabcache_core::blocks::groups::HybridAlloc;
/// let a = HybridAlloc { num_new_tokens: 5, max_model_len: 1024, ..HybridAlloc::default() };
/// assert_eq!(a.num_lookahead_tokens, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct HybridAlloc<'a> {
    /// Tokens appended to the request since the manager last saw it (the
    /// whole prompt for a request it does not know).
    pub new_tokens: &'a [u32],
    /// Extra hash key of a new request.
    pub extra_key: u64,
    /// The prefix hit per group ([`HybridBlockManager::find_longest_cache_hit`]),
    /// empty for none.
    pub hit: &'a [Vec<u32>],
    /// The request's computed tokens before this call.
    pub num_computed_tokens: usize,
    /// Tokens of the prefix hit.
    pub num_new_computed_tokens: usize,
    /// Tokens a KV connector loads.
    pub num_external_computed_tokens: usize,
    /// Tokens to compute (drafts included).
    pub num_new_tokens: usize,
    /// Speculative slots.
    pub num_lookahead_tokens: usize,
    /// Tokens scheduled but not yet processed (their blocks stay).
    pub num_in_flight_tokens: usize,
    /// The model's context length.
    pub max_model_len: usize,
    /// Free blocks to leave for others.
    pub reserved_blocks: usize,
    /// Watermark blocks (already decided by the caller).
    pub watermark_blocks: usize,
    /// Admit only if the whole known sequence fits.
    pub full_sequence_must_fit: bool,
    /// Leave the new blocks out of the prefix cache until `cache_blocks`.
    pub delay_cache: bool,
    /// A new request's prompt is the last one looked up
    /// ([`HybridBlockManager::find_longest_cache_hit`]); `new_tokens` and
    /// `extra_key` are then ignored (the adapter's refused admissions pass no
    /// tokens each step).
    pub prompt_from_lookup: bool,
}

#[derive(Debug, Clone)]
struct HybridRequest {
    tokens: Vec<u32>,
    extra_key: u64,
    hashes: Vec<BlockHash>,
    tables: Vec<Vec<u32>>,
    /// vLLM's `num_cached_block` (present for requests it tracks as running).
    num_cached: Vec<Option<usize>>,
}

/// Groups sharing one spec, looked up together (vLLM's `SpecGroup`).
#[derive(Debug, Clone)]
struct SpecGroup {
    kind: GroupKind,
    members: Vec<usize>,
    /// Any member is an EAGLE group (vLLM's `SpecGroup.use_eagle`).
    eagle: bool,
}

/// Block tables of several KV-cache groups over one shared pool.
///
/// ```
/// use slabcache_core::blocks::groups::{GroupKind, GroupSpec, HybridAlloc, HybridBlockManager, HybridConfig};
/// use slabcache_core::blocks::sliding_window::NULL_BLOCK;
/// let full = GroupSpec { kind: GroupKind::Full, admission_cap: None };
/// let swa = GroupSpec { kind: GroupKind::SlidingWindow { window: 4, extra_retained: 0 }, admission_cap: None };
/// let mut bm = HybridBlockManager::new(HybridConfig::new(32, 4, vec![full, swa])).unwrap();
/// let prompt: Vec<u32> = (0..13).collect();
/// let a = HybridAlloc { new_tokens: &prompt, num_new_tokens: 13, max_model_len: 64, ..Default::default() };
/// let new = bm.allocate_slots(1, &a).unwrap().unwrap();
/// assert_eq!((new[0].len(), new[1].len()), (4, 4));          // both groups, one pool
/// let (hit, n) = bm.find_longest_cache_hit(&prompt, 0, 12);
/// assert_eq!(n, 12);                                          // 3 full blocks hit in both groups
/// assert_eq!(hit[1][..2], [NULL_BLOCK, NULL_BLOCK]);           // outside the window: null
/// bm.free(1);
/// assert_eq!(bm.num_free_blocks(), 32);
/// ```
#[derive(Debug, Clone)]
pub struct HybridBlockManager {
    cfg: HybridConfig,
    pool: BlockPool,
    /// Per block: the plain hash and group it is cached under.
    cached_as: Vec<Option<(BlockHash, usize)>>,
    spec_groups: Vec<SpecGroup>,
    reqs: HashMap<i64, HybridRequest>,
    events: Vec<GroupEvent>,
    /// The last looked-up prompt (tokens, extra key) and its block hashes: a
    /// waiting request is looked up, and admitted or refused, every step, and
    /// its prompt is hashed once.
    memo: (Vec<u32>, u64, Vec<BlockHash>),
}

/// The pool key of `hash` in `group`: the same content in two groups is two
/// different cache entries (vLLM's `BlockHashWithGroupId`).
fn keyed(hash: &BlockHash, group: usize) -> BlockHash {
    if group == 0 {
        return *hash;
    }
    let mut k = *hash;
    let tag = (group as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for (i, b) in tag.to_le_bytes().iter().enumerate() {
        k.0[i] ^= b;
        k.0[24 + i] ^= b;
    }
    k
}

impl HybridBlockManager {
    /// A manager over `cfg.num_blocks` free blocks.
    pub fn new(cfg: HybridConfig) -> Result<Self> {
        if cfg.block_size == 0 || cfg.block_size > 1 << 20 {
            return Err(Error::invalid_argument(format!(
                "block_size must be in [1, 2**20], got {}",
                cfg.block_size
            )));
        }
        if cfg.groups.is_empty() || cfg.groups.len() > 64 {
            return Err(Error::invalid_argument(format!(
                "a hybrid manager needs 1 to 64 groups, got {}",
                cfg.groups.len()
            )));
        }
        if cfg.num_blocks >= NULL_BLOCK as usize {
            return Err(Error::invalid_argument(format!(
                "num_blocks must be < 2**32 - 1, got {}",
                cfg.num_blocks
            )));
        }
        if let Some(&g) = cfg.eagle_groups.iter().find(|&&g| g >= cfg.groups.len()) {
            return Err(Error::invalid_argument(format!(
                "eagle group {g} out of range ({} groups)",
                cfg.groups.len()
            )));
        }
        for g in &cfg.groups {
            if let GroupKind::SlidingWindow { window: 0, .. } = g.kind {
                return Err(Error::invalid_argument("sliding window must be >= 1 token"));
            }
        }
        // vLLM's attention groups: identical specs looked up together, full
        // attention first (a stable sort, so first-seen order otherwise).
        let mut spec_groups: Vec<SpecGroup> = Vec::new();
        for (i, g) in cfg.groups.iter().enumerate() {
            let eagle = cfg.eagle_groups.contains(&i);
            match spec_groups.iter_mut().find(|s| s.kind == g.kind) {
                Some(s) => {
                    s.members.push(i);
                    s.eagle |= eagle;
                }
                None => spec_groups.push(SpecGroup {
                    kind: g.kind,
                    members: vec![i],
                    eagle,
                }),
            }
        }
        spec_groups.sort_by_key(|s| s.kind != GroupKind::Full);
        Ok(HybridBlockManager {
            pool: BlockPool::try_new(cfg.num_blocks, false)?,
            cached_as: super::try_vec(cfg.num_blocks, None)?,
            spec_groups,
            reqs: HashMap::new(),
            events: Vec::new(),
            memo: (Vec::new(), 0, Vec::new()),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HybridConfig {
        &self.cfg
    }

    /// Whether `group`'s attention group drops the EAGLE block (vLLM
    /// propagates the bit to every member of an attention group).
    fn group_is_eagle(&self, group: usize) -> bool {
        self.spec_groups
            .iter()
            .any(|s| s.eagle && s.members.contains(&group))
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.cfg.num_blocks
    }

    /// Free blocks (cached ones included).
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Whether `req` holds state.
    pub fn contains(&self, req: i64) -> bool {
        self.reqs.contains_key(&req)
    }

    /// Ref count of `block`.
    pub fn ref_count(&self, block: u32) -> Result<u32> {
        if block as usize >= self.cfg.num_blocks {
            return Err(Error::invalid_argument(format!(
                "block id {block} out of range"
            )));
        }
        Ok(self.pool.ref_count(block))
    }

    /// The group and plain hash `block` is cached under, if any.
    pub fn cached_hash(&self, block: u32) -> Option<(BlockHash, usize)> {
        self.cached_as.get(block as usize).copied().flatten()
    }

    /// Free blocks in eviction order (first = next allocated).
    pub fn free_block_order(&self) -> Vec<u32> {
        self.pool.free_queue().iter().collect()
    }

    /// `req`'s table in `group` ([`NULL_BLOCK`] for skipped blocks; empty if unknown).
    pub fn block_table(&self, req: i64, group: usize) -> &[u32] {
        self.reqs
            .get(&req)
            .and_then(|r| r.tables.get(group))
            .map_or(&[], |t| t.as_slice())
    }

    /// vLLM's `num_cached_block[req]` of `group` (`None`: not tracked).
    pub fn num_cached_blocks(&self, req: i64, group: usize) -> Option<usize> {
        self.reqs
            .get(&req)
            .and_then(|r| r.num_cached.get(group).copied().flatten())
    }

    /// [`find_longest_cache_hit`](Self::find_longest_cache_hit) on the last
    /// looked-up prompt again (a waiting request retried next step).
    pub fn find_longest_cache_hit_again(&mut self, max_length: usize) -> (Vec<Vec<u32>>, usize) {
        if !self.cfg.enable_caching {
            return (vec![Vec::new(); self.cfg.groups.len()], 0);
        }
        self.longest_hit(&self.memo.2, max_length)
    }

    /// Tokens the manager holds for `req`.
    pub fn num_tokens(&self, req: i64) -> Option<usize> {
        self.reqs.get(&req).map(|r| r.tokens.len())
    }

    fn hashes_of(&self, tokens: &[u32], extra_key: u64) -> Vec<BlockHash> {
        if self.memo.1 == extra_key && self.memo.0 == tokens {
            return self.memo.2.clone();
        }
        let mut out = Vec::with_capacity(tokens.len() / self.cfg.block_size);
        BlockHash::extend_chain(&mut out, extra_key, tokens, self.cfg.block_size);
        out
    }

    /// The hashes of `tokens`, remembered for the admission that follows.
    fn memo_hashes(&mut self, tokens: &[u32], extra_key: u64) -> &[BlockHash] {
        if !(self.memo.1 == extra_key && self.memo.0 == tokens) {
            let mut out = Vec::with_capacity(tokens.len() / self.cfg.block_size);
            BlockHash::extend_chain(&mut out, extra_key, tokens, self.cfg.block_size);
            self.memo = (tokens.to_vec(), extra_key, out);
        }
        &self.memo.2
    }

    fn cached_block(&self, hash: &BlockHash, members: &[usize]) -> Option<Vec<u32>> {
        members
            .iter()
            .map(|&g| self.pool.lookup(&keyed(hash, g)))
            .collect()
    }

    /// The longest prefix of `tokens` (at most `max_length` tokens) cached in
    /// every group: the hit blocks per group ([`NULL_BLOCK`] where a sliding
    /// window skips) and the hit length. Changes no block or request (the
    /// prompt's hashes are remembered for its admission).
    pub fn find_longest_cache_hit(
        &mut self,
        tokens: &[u32],
        extra_key: u64,
        max_length: usize,
    ) -> (Vec<Vec<u32>>, usize) {
        let n = self.cfg.groups.len();
        if !self.cfg.enable_caching {
            return (vec![Vec::new(); n], 0);
        }
        self.memo_hashes(tokens, extra_key);
        self.longest_hit(&self.memo.2, max_length)
    }

    fn longest_hit(&self, hashes: &[BlockHash], max_length: usize) -> (Vec<Vec<u32>>, usize) {
        let bs = self.cfg.block_size;
        let n = self.cfg.groups.len();
        let mut hit_length = max_length;
        let mut by_group: Vec<Option<Vec<u32>>> = vec![None; n];
        let mut len_by_group = vec![0usize; n];
        let simple = self.spec_groups.len() == 2 && self.spec_groups[0].kind == GroupKind::Full;
        // vLLM's `eagle_verified`: an EAGLE group drops its last block at most
        // once per candidate length; a shrinking non-dropping lookup resets it.
        let mut eagle_verified = vec![false; self.spec_groups.len()];
        loop {
            let mut curr = hit_length;
            for (idx, sg) in self.spec_groups.iter().enumerate() {
                let first = sg.members[0];
                if sg.kind == GroupKind::Full && by_group[first].is_some() {
                    curr = curr.min(len_by_group[first]);
                    continue;
                }
                let drop = sg.eagle && !eagle_verified[idx];
                // EAGLE matches one block past the candidate, then drops it
                // (vLLM's hybrid coordinator; its one-group coordinator adds
                // no margin).
                let max_len = if drop && n > 1 {
                    (curr + bs).min(hashes.len() * bs)
                } else {
                    curr
                };
                let blocks = match sg.kind {
                    GroupKind::Full => {
                        let mut out = vec![Vec::new(); sg.members.len()];
                        for h in hashes.iter().take(max_len / bs) {
                            match self.cached_block(h, &sg.members) {
                                Some(bl) => out.iter_mut().zip(bl).for_each(|(t, b)| t.push(b)),
                                None => break,
                            }
                        }
                        if drop {
                            out.iter_mut().for_each(|t| {
                                t.pop();
                            });
                        }
                        out
                    }
                    GroupKind::SlidingWindow { window, .. } => sliding_window::longest_hit(
                        hashes,
                        max_len,
                        bs,
                        window,
                        drop,
                        sg.members.len(),
                        |h| self.cached_block(h, &sg.members),
                    ),
                };
                let new_len = blocks[0].len() * bs;
                if drop {
                    eagle_verified[idx] = true;
                } else if new_len < curr {
                    eagle_verified.iter_mut().for_each(|v| *v = false);
                }
                curr = new_len;
                for (&g, b) in sg.members.iter().zip(blocks) {
                    by_group[g] = Some(b);
                    len_by_group[g] = curr;
                }
            }
            if curr >= hit_length {
                break;
            }
            hit_length = curr;
            if simple {
                break;
            }
        }
        let keep = hit_length.div_ceil(bs);
        for sg in self
            .spec_groups
            .iter()
            .filter(|s| s.kind == GroupKind::Full)
        {
            for &g in &sg.members {
                if let Some(b) = by_group[g].as_mut() {
                    b.truncate(keep);
                }
            }
        }
        (
            by_group
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
            hit_length,
        )
    }

    fn check_hit(&self, req: Option<&HybridRequest>, a: &HybridAlloc<'_>) -> Result<()> {
        let n = self.cfg.groups.len();
        if a.hit.is_empty() {
            return Ok(());
        }
        if a.hit.len() != n {
            return Err(Error::invalid_argument(format!(
                "hit has {} groups, the manager {n}",
                a.hit.len()
            )));
        }
        let hashes = match req {
            Some(r) => {
                let mut all = r.tokens.clone();
                all.extend_from_slice(a.new_tokens);
                self.hashes_of(&all, r.extra_key)
            }
            None => self.hashes_of(a.new_tokens, a.extra_key),
        };
        for (g, blocks) in a.hit.iter().enumerate() {
            for (i, &b) in blocks.iter().enumerate() {
                if b == NULL_BLOCK {
                    continue;
                }
                let ok = (b as usize) < self.cfg.num_blocks
                    && i < hashes.len()
                    && self.cached_as[b as usize] == Some((hashes[i], g));
                if !ok {
                    return Err(Error::invalid_argument(format!(
                        "hit block {b} (group {g}, position {i}) does not hold this prompt's prefix"
                    )));
                }
            }
        }
        Ok(())
    }

    /// vLLM's `get_num_blocks_to_allocate` over every group.
    fn blocks_to_allocate(
        &self,
        r: &HybridRequest,
        num_tokens: usize,
        hit: &[Vec<u32>],
        total_computed: usize,
        cap: bool,
    ) -> usize {
        let bs = self.cfg.block_size;
        let mut total = 0;
        for (g, spec) in self.cfg.groups.iter().enumerate() {
            let mut required = num_tokens.div_ceil(bs);
            if cap {
                if let Some(c) = spec.admission_cap {
                    required = required.min(c);
                }
            }
            let have = r.tables[g].len();
            let h: &[u32] = hit.get(g).map_or(&[], |v| v.as_slice());
            if r.num_cached[g].is_some() {
                total += required.saturating_sub(have);
                continue;
            }
            let skipped = spec.kind.skipped_tokens(total_computed) / bs;
            let local = h.len() + have;
            let new = required.saturating_sub(skipped.max(local));
            let skip_hit = skipped.saturating_sub(have).min(h.len());
            let evictable = h[skip_hit..]
                .iter()
                .filter(|&&b| b != NULL_BLOCK && self.pool.ref_count(b) == 0)
                .count();
            total += new + evictable;
        }
        total
    }

    /// Blocks `req` would need (every group) to hold `num_tokens` slots with
    /// `total_computed` tokens computed and no new hit (vLLM's coordinator
    /// `get_num_blocks_to_allocate`; `cap` applies the admission caps). An
    /// unknown request counts from an empty table.
    pub fn num_blocks_to_allocate(
        &self,
        req: i64,
        num_tokens: usize,
        total_computed: usize,
        cap: bool,
    ) -> usize {
        let n = self.cfg.groups.len();
        let empty;
        let r = match self.reqs.get(&req) {
            Some(r) => r,
            None => {
                empty = HybridRequest {
                    tokens: Vec::new(),
                    extra_key: 0,
                    hashes: Vec::new(),
                    tables: vec![Vec::new(); n],
                    num_cached: vec![None; n],
                };
                &empty
            }
        };
        self.blocks_to_allocate(r, num_tokens, &[], total_computed, cap)
    }

    fn removed_event(&mut self, block: u32, hash: BlockHash, group: usize) {
        if self.cfg.enable_events {
            self.events.push(GroupEvent {
                kind: BlockEventKind::Removed,
                group,
                blocks: vec![block],
                hashes: vec![hash],
                parent: None,
                extra_key: 0,
                tokens: Vec::new(),
            });
        }
    }

    fn new_blocks(&mut self, n: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(front) = self.pool.free_queue().front() {
                if let Some((h, g)) = self.cached_as[front as usize].take() {
                    self.removed_event(front, h, g);
                }
            }
            out.push(
                self.pool
                    .allocate()
                    .expect("free blocks counted before allocating"),
            );
        }
        out
    }

    /// vLLM's `KVCacheManager.allocate_slots`: frees the blocks that left the
    /// window, checks that every group's new blocks fit (`None`: they do not,
    /// nothing else changed), adopts the prefix hit (all groups' hits touched
    /// before any external block is taken), allocates each group's new blocks
    /// and caches the full blocks of known tokens (unless `delay_cache`).
    /// Returns the new blocks per group.
    pub fn allocate_slots(
        &mut self,
        req: i64,
        a: &HybridAlloc<'_>,
    ) -> Result<Option<Vec<Vec<u32>>>> {
        if a.prompt_from_lookup && !self.reqs.contains_key(&req) {
            let (toks, key) = (self.memo.0.clone(), self.memo.1);
            let b = HybridAlloc {
                new_tokens: &toks,
                extra_key: key,
                prompt_from_lookup: false,
                ..a.clone()
            };
            return self.allocate_slots(req, &b);
        }
        let n = self.cfg.groups.len();
        if a.num_new_tokens == 0
            && a.num_external_computed_tokens == 0
            && a.num_new_computed_tokens == 0
        {
            return Err(Error::invalid_argument(
                "num_new_tokens must be greater than 0 when there are no computed tokens to adopt",
            ));
        }
        if a.new_tokens.iter().any(|&t| t > i32::MAX as u32) {
            return Err(Error::invalid_argument("token ids must be in [0, 2**31)"));
        }
        self.check_hit(self.reqs.get(&req), a)?;
        let has_hit = a.hit.iter().any(|g| !g.is_empty());
        if let Some(r) = self.reqs.get(&req) {
            if has_hit && r.num_cached.iter().any(Option::is_some) {
                return Err(Error::invalid_argument(
                    "a request already holding cached blocks cannot adopt a prefix hit",
                ));
            }
        }
        let bs = self.cfg.block_size;
        let caching = self.cfg.enable_caching;
        let is_new = !self.reqs.contains_key(&req);
        let r = self.reqs.entry(req).or_insert_with(|| HybridRequest {
            tokens: Vec::new(),
            extra_key: a.extra_key,
            hashes: Vec::new(),
            tables: vec![Vec::new(); n],
            num_cached: vec![None; n],
        });
        r.tokens.extend_from_slice(a.new_tokens);
        if caching && !is_new {
            BlockHash::extend_chain(&mut r.hashes, r.extra_key, &r.tokens, bs);
        }
        let known = r.tokens.len();
        let num_local = a.num_computed_tokens + a.num_new_computed_tokens;
        let total_computed = (num_local + a.num_external_computed_tokens).min(a.max_model_len);
        let free = self.pool.num_free();
        let r = &self.reqs[&req];
        if a.full_sequence_must_fit {
            let full = known.min(a.max_model_len);
            let need = self.blocks_to_allocate(r, full, a.hit, total_computed, true);
            if need + a.watermark_blocks > free {
                if is_new {
                    self.reqs.remove(&req);
                }
                return Ok(None);
            }
        }
        let main = total_computed + a.num_new_tokens;
        let need_slot = (main + a.num_lookahead_tokens).min(a.max_model_len);
        self.remove_skipped_blocks(req, total_computed.saturating_sub(a.num_in_flight_tokens));
        let r = &self.reqs[&req];
        let need = self.blocks_to_allocate(
            r,
            need_slot,
            a.hit,
            num_local + a.num_external_computed_tokens,
            false,
        );
        let available = self.pool.num_free() as i64 - a.reserved_blocks as i64;
        if (need + a.watermark_blocks) as i64 > available {
            if is_new {
                self.reqs.remove(&req); // it held nothing: a refusal registers nothing
            }
            return Ok(None);
        }
        if caching && is_new {
            // Hashed only once admitted (a refused admission needs none).
            let r = self.reqs.remove(&req).expect("registered");
            let h = self.memo_hashes(&r.tokens, r.extra_key).to_vec();
            self.reqs.insert(req, HybridRequest { hashes: h, ..r });
        }
        if has_hit || a.num_external_computed_tokens > 0 {
            self.adopt_computed(req, a.hit, num_local, a.num_external_computed_tokens);
        }
        let mut out = Vec::with_capacity(n);
        for g in 0..n {
            let have = self.reqs[&req].tables[g].len();
            let k = need_slot.div_ceil(bs).saturating_sub(have);
            let blocks = self.new_blocks(k);
            self.reqs.get_mut(&req).expect("registered").tables[g].extend_from_slice(&blocks);
            out.push(blocks);
        }
        if !a.delay_cache {
            self.cache_blocks(req, main.min(known))?;
        }
        Ok(Some(out))
    }

    /// vLLM's `allocate_new_computed_blocks`: every group's hit first, then
    /// blocks for external (connector-loaded) tokens.
    fn adopt_computed(
        &mut self,
        req: i64,
        hit: &[Vec<u32>],
        num_local: usize,
        num_external: usize,
    ) {
        let bs = self.cfg.block_size;
        let n = self.cfg.groups.len();
        if self.reqs[&req].num_cached.iter().any(Option::is_some) {
            return;
        }
        let total = num_local + num_external;
        for g in 0..n {
            let skipped = self.cfg.groups[g].kind.skipped_tokens(total) / bs;
            let h: &[u32] = hit.get(g).map_or(&[], |v| v.as_slice());
            let kept = &h[skipped.min(h.len())..];
            if self.cfg.enable_caching {
                for &b in kept.iter().filter(|&&b| b != NULL_BLOCK) {
                    self.pool.touch(b);
                }
            }
            let r = self.reqs.get_mut(&req).expect("registered");
            let t = &mut r.tables[g];
            t.resize(t.len() + skipped, NULL_BLOCK);
            t.extend_from_slice(kept);
            r.num_cached[g] = Some(t.len());
        }
        if num_external == 0 {
            return;
        }
        for g in 0..n {
            let skipped = self.cfg.groups[g].kind.skipped_tokens(total);
            let ext = if skipped > 0 {
                num_external.min(total - skipped)
            } else {
                num_external
            };
            if ext == 0 {
                continue;
            }
            let have = self.reqs[&req].tables[g].len();
            let k = total.div_ceil(bs).saturating_sub(have);
            let blocks = self.new_blocks(k);
            self.reqs.get_mut(&req).expect("registered").tables[g].extend_from_slice(&blocks);
        }
    }

    /// Appends tokens the request gained (sampled or accepted) without allocating.
    pub fn append_tokens(&mut self, req: i64, tokens: &[u32]) -> Result<()> {
        if tokens.iter().any(|&t| t > i32::MAX as u32) {
            return Err(Error::invalid_argument("token ids must be in [0, 2**31)"));
        }
        let bs = self.cfg.block_size;
        let caching = self.cfg.enable_caching;
        let r = self
            .reqs
            .get_mut(&req)
            .ok_or_else(|| Error::not_found(format!("unknown request id {req}")))?;
        r.tokens.extend_from_slice(tokens);
        if caching {
            BlockHash::extend_chain(&mut r.hashes, r.extra_key, &r.tokens, bs);
        }
        Ok(())
    }

    /// Caches `req`'s full blocks up to `num_tokens` in every group (vLLM's
    /// `cache_blocks`: null blocks skipped, one store event per group).
    pub fn cache_blocks(&mut self, req: i64, num_tokens: usize) -> Result<()> {
        if !self.cfg.enable_caching {
            return Ok(());
        }
        let bs = self.cfg.block_size;
        let Some(mut r) = self.reqs.remove(&req) else {
            return Err(Error::not_found(format!("unknown request id {req}")));
        };
        let num_tokens = num_tokens / bs * bs;
        for g in 0..self.cfg.groups.len() {
            if let GroupKind::SlidingWindow { window, .. } = self.cfg.groups[g].kind {
                let need = sliding_window::contiguous_blocks_for_hit(window, bs)
                    + usize::from(self.group_is_eagle(g));
                if need == 0 {
                    continue; // no block can ever serve a hit (vLLM's mask)
                }
            }
            let cached = r.num_cached[g].unwrap_or(0);
            let full = num_tokens.min(r.hashes.len() * bs) / bs;
            if cached >= full {
                continue;
            }
            let full = full.min(r.tables[g].len());
            let mut ev = GroupEvent {
                kind: BlockEventKind::Stored,
                group: g,
                blocks: Vec::new(),
                hashes: Vec::new(),
                parent: if cached == 0 {
                    None
                } else {
                    Some(r.hashes[cached - 1])
                },
                extra_key: r.extra_key,
                tokens: Vec::new(),
            };
            for i in cached..full {
                let b = r.tables[g][i];
                if b == NULL_BLOCK {
                    continue;
                }
                let h = r.hashes[i];
                match self.cached_as[b as usize] {
                    Some(x) if x == (h, g) => {}
                    Some(_) => continue, // already cached under another prefix: keep it
                    None => {
                        self.pool.cache(b, keyed(&h, g), None);
                        self.cached_as[b as usize] = Some((h, g));
                    }
                }
                ev.blocks.push(b);
                ev.hashes.push(h);
            }
            if self.cfg.enable_events {
                ev.tokens = r.tokens[cached * bs..full * bs].to_vec();
                self.events.push(ev);
            }
            r.num_cached[g] = Some(full);
        }
        self.reqs.insert(req, r);
        Ok(())
    }

    /// Frees the sliding-window blocks before the window once
    /// `processed_tokens` are computed (null block in their place; freed
    /// newest first, stopping at one already freed).
    pub fn remove_skipped_blocks(&mut self, req: i64, processed_tokens: usize) {
        let bs = self.cfg.block_size;
        let Some(r) = self.reqs.get_mut(&req) else {
            return;
        };
        for (g, spec) in self.cfg.groups.iter().enumerate() {
            let skipped = spec.kind.skipped_tokens(processed_tokens);
            if skipped == 0 {
                continue;
            }
            let t = &mut r.tables[g];
            let k = (skipped / bs).min(t.len());
            let mut freed = Vec::new();
            for i in (0..k).rev() {
                if t[i] == NULL_BLOCK {
                    break;
                }
                freed.push(t[i]);
                t[i] = NULL_BLOCK;
            }
            self.pool.free_blocks(freed);
        }
    }

    /// Frees `req`'s blocks group by group, each table tail first (a request
    /// the manager does not know is a no-op, as in vLLM).
    pub fn free(&mut self, req: i64) {
        let Some(r) = self.reqs.remove(&req) else {
            return;
        };
        for t in r.tables {
            self.pool
                .free_blocks(t.into_iter().rev().filter(|&b| b != NULL_BLOCK));
        }
    }

    /// Drops the cached hash of each of `blocks` (held or free; they stay
    /// where they are), with a removal event each (vLLM's `evict_blocks`, a
    /// KV load that failed). Ids out of range are an error, before any change.
    pub fn evict_blocks(&mut self, blocks: &[u32]) -> Result<()> {
        if let Some(&b) = blocks.iter().find(|&&b| b as usize >= self.cfg.num_blocks) {
            return Err(Error::invalid_argument(format!(
                "block id {b} out of range"
            )));
        }
        for &b in blocks {
            if let Some((h, g)) = self.cached_as[b as usize].take() {
                self.pool.uncache(b);
                self.removed_event(b, h, g);
            }
        }
        Ok(())
    }

    /// Drops every cached hash; `false` (nothing changed) while a block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.pool.num_free() != self.cfg.num_blocks {
            return false;
        }
        if !self.pool.reset_prefix_cache() {
            return false;
        }
        self.cached_as.iter_mut().for_each(|c| *c = None);
        true
    }

    /// Takes the recorded events.
    pub fn drain_events(&mut self) -> Vec<GroupEvent> {
        std::mem::take(&mut self.events)
    }

    /// Checks ref counts against the tables, the free queue and the cache;
    /// `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<()> {
        let fail = |m: String| Err(Error::new(ErrorKind::Corrupt, m));
        let mut refs = vec![0u32; self.cfg.num_blocks];
        for (id, r) in &self.reqs {
            for t in &r.tables {
                for &b in t {
                    if b == NULL_BLOCK {
                        continue;
                    }
                    if b as usize >= self.cfg.num_blocks {
                        return fail(format!("request {id} holds block {b} out of range"));
                    }
                    refs[b as usize] += 1;
                }
            }
        }
        for (b, &n) in refs.iter().enumerate() {
            if self.pool.ref_count(b as u32) != n {
                return fail(format!(
                    "block {b}: ref count {} but {n} table entries",
                    self.pool.ref_count(b as u32)
                ));
            }
            let cached = self.cached_as[b];
            if cached.is_some() != self.pool.hash_of(b as u32).is_some() {
                return fail(format!("block {b}: cache bookkeeping disagrees"));
            }
            if let Some((h, g)) = cached {
                if self.pool.hash_of(b as u32) != Some(&keyed(&h, g)) {
                    return fail(format!("block {b}: cached under another key"));
                }
            }
        }
        self.pool.check().or_else(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: GroupSpec = GroupSpec {
        kind: GroupKind::Full,
        admission_cap: None,
    };

    fn swa(window: usize) -> GroupSpec {
        GroupSpec {
            kind: GroupKind::SlidingWindow {
                window,
                extra_retained: 0,
            },
            admission_cap: None,
        }
    }

    fn alloc<'a>(tokens: &'a [u32], n: usize) -> HybridAlloc<'a> {
        HybridAlloc {
            new_tokens: tokens,
            num_new_tokens: n,
            max_model_len: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn eagle_drops_the_last_hit_block_with_a_look_past_margin() {
        let cfg = |eagle: Vec<usize>| HybridConfig {
            eagle_groups: eagle,
            ..HybridConfig::new(40, 4, vec![FULL, swa(8)])
        };
        let p: Vec<u32> = (0..25).collect();
        for (eagle, want) in [(vec![], 24), (vec![0, 1], 20), (vec![1], 20)] {
            let mut bm = HybridBlockManager::new(cfg(eagle.clone())).unwrap();
            bm.allocate_slots(1, &alloc(&p, 25)).unwrap().unwrap();
            bm.free(1);
            let (hit, n) = bm.find_longest_cache_hit(&p, 0, 24);
            assert_eq!(n, want, "eagle groups {eagle:?}");
            assert!(hit.iter().all(|t| t.len() * 4 == n));
        }
        // One group (vLLM's unitary coordinator): no margin, 24 -> 20.
        let one = HybridConfig {
            eagle_groups: vec![0],
            ..HybridConfig::new(40, 4, vec![FULL])
        };
        let mut bm = HybridBlockManager::new(one).unwrap();
        let q: Vec<u32> = (0..24).collect();
        bm.allocate_slots(1, &alloc(&q, 24)).unwrap().unwrap();
        bm.free(1);
        assert_eq!(bm.find_longest_cache_hit(&q, 0, 23).1, 16);
        let bad = HybridConfig {
            eagle_groups: vec![2],
            ..HybridConfig::new(40, 4, vec![FULL, swa(8)])
        };
        assert!(HybridBlockManager::new(bad).is_err());
    }

    #[test]
    fn keyed_hashes_differ_per_group() {
        let h = BlockHash::of_block(None, 0, &[1, 2]);
        assert_eq!(keyed(&h, 0), h);
        assert_ne!(keyed(&h, 1), h);
        assert_ne!(keyed(&h, 1), keyed(&h, 2));
    }

    #[test]
    fn window_frees_blocks_and_hits_need_only_the_window() {
        let mut bm = HybridBlockManager::new(HybridConfig::new(40, 4, vec![FULL, swa(8)])).unwrap();
        let p: Vec<u32> = (0..33).collect();
        let new = bm.allocate_slots(1, &alloc(&p, 33)).unwrap().unwrap();
        assert_eq!(new[0], (0..9).collect::<Vec<_>>());
        assert_eq!(new[1], (9..18).collect::<Vec<_>>());
        bm.check_invariants().unwrap();
        // Decode one token: 33 computed; window 8 skips 26 tokens = 6 blocks.
        bm.allocate_slots(
            1,
            &HybridAlloc {
                num_computed_tokens: 33,
                ..alloc(&[99], 1)
            },
        )
        .unwrap()
        .unwrap();
        let t = bm.block_table(1, 1);
        assert!(t[..6].iter().all(|&b| b == NULL_BLOCK));
        assert_eq!(t[6..], [15, 16, 17]);
        // Freed newest first: 14, 13, ..., 9; they hold hashes, so they join the back.
        let order = bm.free_block_order();
        assert_eq!(order[order.len() - 6..], [14, 13, 12, 11, 10, 9]);
        bm.check_invariants().unwrap();
        // A second request with the same prompt: the full group hits 8 blocks, the window group
        // needs blocks 6 and 7 (cdiv(7, 4) = 2), which are still held by request 1.
        let (hit, n) = bm.find_longest_cache_hit(&p, 0, 32);
        assert_eq!(n, 32);
        assert_eq!(hit[0], (0..8).collect::<Vec<_>>());
        assert_eq!(hit[1][6..], [15, 16]);
        bm.free(1);
        bm.check_invariants().unwrap();
        assert_eq!(bm.num_free_blocks(), 40);
    }

    #[test]
    fn hit_shrinks_to_what_the_window_group_has() {
        let mut bm = HybridBlockManager::new(HybridConfig::new(40, 4, vec![FULL, swa(8)])).unwrap();
        let p: Vec<u32> = (0..17).collect();
        bm.allocate_slots(1, &alloc(&p, 17)).unwrap().unwrap();
        bm.free(1);
        // Free queue now: 9, 4 (uncached tails, front), 10..39, then the cached blocks in
        // free order: group 0's tail first (3, 2, 1, 0), then group 1's (8, 7, 6, 5).
        let order = bm.free_block_order();
        assert_eq!(order[..2], [9, 4]);
        assert_eq!(order[32..], [3, 2, 1, 0, 8, 7, 6, 5]);
        // 17 blocks per group = 34: evicts 3 and 2 (full attention, positions 3 and 2).
        let q: Vec<u32> = (1000..1000 + 4 * 17).collect();
        bm.allocate_slots(2, &alloc(&q, 4 * 17)).unwrap().unwrap();
        let (hit, n) = bm.find_longest_cache_hit(&p, 0, 16);
        // Full attention hits 2 blocks; the window group is searched within 8 tokens.
        assert_eq!(n, 8);
        assert_eq!(hit[0], [0, 1]);
        assert_eq!(hit[1], [5, 6]);
        bm.check_invariants().unwrap();
    }

    #[test]
    fn all_or_nothing_over_the_groups() {
        let mut bm = HybridBlockManager::new(HybridConfig::new(7, 4, vec![FULL, swa(8)])).unwrap();
        let p: Vec<u32> = (0..16).collect();
        // 4 blocks per group = 8 > 7: refused, nothing taken.
        assert!(bm.allocate_slots(1, &alloc(&p, 16)).unwrap().is_none());
        assert_eq!(bm.num_free_blocks(), 7);
        assert!(bm.allocate_slots(1, &alloc(&[], 12)).unwrap().is_some());
        assert_eq!(bm.num_free_blocks(), 1);
        bm.check_invariants().unwrap();
    }

    #[test]
    fn admission_can_reuse_the_looked_up_prompt() {
        let mut a_bm =
            HybridBlockManager::new(HybridConfig::new(40, 4, vec![FULL, swa(8)])).unwrap();
        let mut b_bm = a_bm.clone();
        let p: Vec<u32> = (0..30).collect();
        for bm in [&mut a_bm, &mut b_bm] {
            bm.allocate_slots(1, &alloc(&p, 30)).unwrap().unwrap();
        }
        let (hit, n) = a_bm.find_longest_cache_hit(&p, 0, 29);
        assert_eq!(a_bm.find_longest_cache_hit_again(29), (hit.clone(), n));
        let explicit = HybridAlloc {
            hit: &hit,
            num_new_computed_tokens: n,
            ..alloc(&p, 30 - n)
        };
        let from_lookup = HybridAlloc {
            new_tokens: &[],
            prompt_from_lookup: true,
            ..explicit.clone()
        };
        let (hit_b, _) = b_bm.find_longest_cache_hit(&p, 0, 29);
        assert_eq!(hit_b, hit);
        let x = a_bm.allocate_slots(2, &from_lookup).unwrap();
        let y = b_bm.allocate_slots(2, &explicit).unwrap();
        assert_eq!(x, y);
        assert_eq!(a_bm.num_tokens(2), Some(30));
        assert_eq!(a_bm.block_table(2, 1), b_bm.block_table(2, 1));
        a_bm.check_invariants().unwrap();
    }

    #[test]
    fn bad_hits_are_refused() {
        let mut bm = HybridBlockManager::new(HybridConfig::new(16, 4, vec![FULL, swa(8)])).unwrap();
        let p: Vec<u32> = (0..8).collect();
        let hit = vec![vec![3u32], vec![]];
        let a = HybridAlloc {
            hit: &hit,
            num_new_computed_tokens: 4,
            ..alloc(&p, 4)
        };
        assert_eq!(
            bm.allocate_slots(1, &a).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(!bm.contains(1));
        assert!(HybridBlockManager::new(HybridConfig::new(16, 4, vec![])).is_err());
        assert!(HybridBlockManager::new(HybridConfig::new(16, 0, vec![FULL])).is_err());
    }
}
