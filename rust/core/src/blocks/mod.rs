//! Paged KV-cache block manager for LLM serving engines.
//!
//! The engine's KV cache is a pool of fixed-size blocks (PagedAttention);
//! each request owns a *block table* mapping its token positions to blocks.
//! This module decides which blocks each request gets, shares full blocks
//! between requests with the same prefix (prefix caching by chained block
//! hash), keeps freed blocks cached until their space is needed (LRU),
//! copies on write after a fork, swaps requests to a host tier in coalesced
//! ranges, and pins an agent's finished turn while it waits on a tool call.
//! Behaviour follows vLLM's v1 `KVCacheManager`; see `docs/blocks.md`.
//!
//! | file               | concept                                                   |
//! |--------------------|-----------------------------------------------------------|
//! | `block_hash.rs`    | chained BLAKE3 hashes of full blocks                      |
//! | `free_queue.rs`    | free blocks in LRU order, O(1) removal from the middle    |
//! | `prefix_cache.rs`  | hash -> cached blocks                                     |
//! | `block_pool.rs`    | ref counts, allocation with eviction, release             |
//! | `request_table.rs` | per-request tokens, hashes, table, residency              |
//! | `freed_ids.rs`     | every freed request id, as intervals (double free)        |
//! | `swap.rs`          | host tier (first-fit contiguous), range coalescing, swap  |
//! | `ttl_pins.rs`      | deadline-ordered pins                                     |
//! | `events.rs`        | stored / removed event stream                             |
//! | `stats.rs`         | counters                                                  |
//! | `manager.rs`       | [`BlockManager`]: the API a scheduler calls               |
//! | `admit.rs`         | side-effect-free lookup, one-call admission (connectors)  |
//! | `step.rs`          | [`BlockManager::step`]: one call per scheduler step       |
//! | `schedule.rs`      | [`BlockManager::schedule`]: vLLM's scheduler step, exact  |
//! | `invariants.rs`    | [`BlockManager::check_invariants`]                        |
//! | `sliding_window.rs`| sliding-window hit search, blocks outside the window      |
//! | `groups.rs`        | [`HybridBlockManager`]: hybrid KV-cache groups, one pool  |
//!
//! ```
//! use slabcache_core::blocks::{BlockManager, BlockManagerConfig, StepInput};
//! let mut bm = BlockManager::new(BlockManagerConfig::new(16, 4)).unwrap();
//! // One step admits two requests whose prompts share a 4-token block.
//! let tokens = [1, 2, 3, 4, 9, 1, 2, 3, 4, 8, 7];
//! let inp = StepInput {
//!     req_ids: &[10, 11], num_new_tokens: &[100, 100],
//!     token_ids: &tokens, token_offsets: &[0, 5, 11],
//!     extra_keys: &[], programs: &[], finished: &[], num_lookahead_tokens: 0, now: 0.0, fcfs: false,
//! };
//! let out = bm.step(&inp).unwrap();
//! assert_eq!(out.num_scheduled, vec![5, 2]);     // the second prompt hit 4 tokens
//! assert_eq!(out.num_cached_tokens, vec![0, 4]);
//! bm.check_invariants().unwrap();
//! ```

pub mod admit;
pub mod block_hash;
pub mod block_pool;
pub mod events;
pub mod free_queue;
pub mod freed_ids;
pub mod groups;
pub mod invariants;
pub mod manager;
pub mod prefix_cache;
pub mod request_table;
pub mod schedule;
pub mod sliding_window;
pub mod stats;
pub mod step;
pub mod swap;
pub mod ttl_pins;

/// `n` copies of `v`, or an `OutOfMemory` error when the memory cannot be
/// had (a pool sized past the machine's memory, or under `ulimit -v`, must
/// raise, not abort the process).
///
/// ```
/// assert_eq!(slabcache_core::blocks::try_vec(3, 7u8).unwrap(), vec![7, 7, 7]);
/// ```
pub fn try_vec<T: Clone>(n: usize, v: T) -> crate::Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| {
        crate::Error::out_of_memory(format!(
            "cannot allocate {n} entries of {} bytes for the block manager",
            std::mem::size_of::<T>()
        ))
    })?;
    out.resize(n, v);
    Ok(out)
}

pub use admit::Admission;
pub use block_hash::BlockHash;
pub use block_pool::BlockPool;
pub use events::{BlockEvent, BlockEventKind, EventLog};
pub use free_queue::FreeBlockQueue;
pub use freed_ids::FreedIds;
pub use groups::{GroupEvent, GroupKind, GroupSpec, HybridAlloc, HybridBlockManager, HybridConfig};
pub use manager::{tokens_from_i32, BlockManager, BlockManagerConfig};
pub use prefix_cache::PrefixCache;
pub use request_table::{Queue, RequestState, RequestTable, Residency};
pub use schedule::{AdmissionKind, ScheduleConfig, ScheduleInput, ScheduleOutput};
pub use stats::BlockStats;
pub use step::{StepInput, StepOutput};
pub use swap::{coalesce, CopyRange, HostTier};
pub use ttl_pins::{Deadline, Pin, PinSchedule};
