//! Per-request state: tokens, block hashes, block table, where it lives.

use std::collections::HashMap;

use super::block_hash::{BlockHash, IdBuildHasher};
use super::freed_ids::FreedIds;

/// Where a request's KV is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Residency {
    /// On the device, in `RequestState::blocks`.
    Device,
    /// Swapped to the host tier: these host blocks, in table order.
    Host(Vec<u32>),
}

/// One request as the block manager sees it.
#[derive(Debug, Clone)]
pub struct RequestState {
    /// Every token id known for the request (prompt and appended output);
    /// kept only with prefix caching on (it feeds the block hashes).
    pub tokens: Vec<u32>,
    /// Number of tokens known (`tokens.len()` when tokens are kept).
    pub num_tokens: usize,
    /// Full blocks of the cached prefix found by `get_computed_blocks`, to
    /// be taken by the next allocation (`None`: look up at allocation).
    pub pending_hit: Option<usize>,
    /// Chained hashes of every full block of `tokens`.
    pub hashes: Vec<BlockHash>,
    /// Device block table.
    pub blocks: Vec<u32>,
    /// Tokens with a slot whose KV is computed (or being computed this step).
    pub num_computed: usize,
    /// Leading blocks registered in the prefix cache.
    pub num_cached_blocks: usize,
    /// Extra hash key (LoRA id, cache salt); 0 for none.
    pub extra_key: u64,
    /// The agent program / conversation this turn belongs to (for TTL pins).
    pub program: Option<i64>,
    /// Device or host.
    pub residency: Residency,
    /// Where [`BlockManager::schedule`](super::BlockManager::schedule)'s
    /// queues hold the request (`None`: driven by the per-request API).
    pub queue: Queue,
    /// Times `schedule` preempted the request (a resumed admission when > 0).
    pub num_preemptions: u32,
}

/// The scheduler queue a request is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Not in `schedule`'s queues.
    None,
    /// Waiting for admission (new or preempted).
    Waiting,
    /// Admitted: holds blocks.
    Running,
}

impl RequestState {
    /// A request with `tokens` known and nothing allocated yet.
    pub fn new(
        tokens: &[u32],
        extra_key: u64,
        program: Option<i64>,
        block_size: usize,
        hashing: bool,
    ) -> Self {
        let mut hashes = Vec::new();
        if hashing {
            BlockHash::extend_chain(&mut hashes, extra_key, tokens, block_size);
        }
        Self::with_hashes(tokens, hashes, extra_key, program, hashing)
    }

    /// [`new`](Self::new) with the block hashes of `tokens` already computed.
    pub fn with_hashes(
        tokens: &[u32],
        hashes: Vec<BlockHash>,
        extra_key: u64,
        program: Option<i64>,
        hashing: bool,
    ) -> Self {
        let kept = if hashing { tokens.to_vec() } else { Vec::new() };
        RequestState {
            tokens: kept,
            num_tokens: tokens.len(),
            pending_hit: None,
            hashes,
            blocks: Vec::new(),
            num_computed: 0,
            num_cached_blocks: 0,
            extra_key,
            program,
            residency: Residency::Device,
            queue: Queue::None,
            num_preemptions: 0,
        }
    }
}

/// Live requests by id, and every freed id (not reused since) to tell a
/// double free from an unknown id, however many frees happened in between.
#[derive(Debug, Clone, Default)]
pub struct RequestTable {
    live: HashMap<i64, RequestState, IdBuildHasher>,
    freed: FreedIds,
}

impl RequestTable {
    /// The live request `id`.
    #[inline]
    pub fn get(&self, id: i64) -> Option<&RequestState> {
        self.live.get(&id)
    }

    /// The live request `id`, mutable.
    #[inline]
    pub fn get_mut(&mut self, id: i64) -> Option<&mut RequestState> {
        self.live.get_mut(&id)
    }

    /// Whether `id` is live.
    #[inline]
    pub fn contains(&self, id: i64) -> bool {
        self.live.contains_key(&id)
    }

    /// Whether `id` was freed (and is not live again).
    pub fn recently_freed(&self, id: i64) -> bool {
        self.freed.contains(id)
    }

    /// Adds a live request (a reused id stops counting as freed).
    pub fn insert(&mut self, id: i64, state: RequestState) {
        if !self.freed.is_empty() {
            self.freed.remove(id);
        }
        self.live.insert(id, state);
    }

    /// Removes `id` without remembering it as freed (a refused admission).
    pub fn discard(&mut self, id: i64) -> Option<RequestState> {
        self.live.remove(&id)
    }

    /// Removes `id` and remembers it as freed.
    pub fn remove_freed(&mut self, id: i64) -> Option<RequestState> {
        let st = self.live.remove(&id)?;
        self.freed.insert(id);
        Some(st)
    }

    /// Number of live requests.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// `true` when no request is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Every live request.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &RequestState)> {
        self.live.iter().map(|(k, v)| (*k, v))
    }
}
