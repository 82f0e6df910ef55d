//! [`BlockManager::schedule`]: one call that makes every decision of vLLM's
//! v1 scheduler step (FCFS policy) together with its KV-cache manager.
//!
//! [`step`](BlockManager::step) serves a batch the caller already chose; it
//! cannot preempt, and its budget is per entry. `schedule` owns the two
//! queues instead and reproduces vLLM 0.33's `Scheduler.schedule()`:
//!
//! 1. **running** requests, in order, each asking for all its uncomputed
//!    tokens (capped by `long_prefill_token_threshold`, the shared token
//!    budget and `max_model_len - computed - 1`). When its slots do not fit,
//!    the *last* running request is preempted (blocks freed tail first,
//!    computed tokens reset, put at the *front* of the waiting queue) and the
//!    allocation retried, until it fits or the request preempted itself; then
//!    the running pass stops.
//! 2. **waiting** requests, FCFS, only in a step that preempted nothing, while
//!    budget is left and fewer than `max_num_seqs` run: each takes its cached
//!    prefix (at most `num_tokens - 1` tokens) and a chunk of the rest; with
//!    `full_sequence_must_fit` its whole known sequence must fit first; the
//!    watermark applies when something else runs. The first refusal ends the
//!    pass (head-of-line, as vLLM).
//!
//! Computed tokens advance at scheduling (vLLM's `_update_after_schedule`);
//! the caller appends sampled tokens with the next call and reports finished
//! requests there, which are freed before anything is scheduled.

use std::collections::VecDeque;

use super::block_hash::BlockHash;
use super::manager::{as_u32, check_now, invalid, release_rev, BlockManager};
use super::request_table::{Queue, RequestState, Residency};
use crate::Result;

/// The scheduler's queues (ids in order).
#[derive(Debug, Clone, Default)]
pub struct SchedQueues {
    /// Admitted requests, oldest first; preemption takes from the back.
    pub running: Vec<i64>,
    /// Requests waiting for admission; preempted ones go to the front.
    pub waiting: VecDeque<i64>,
}

/// vLLM's scheduler limits (`SchedulerConfig` and `CacheConfig` names).
///
/// ```
/// use slabcache_core::blocks::ScheduleConfig;
/// let c = ScheduleConfig { max_num_seqs: 64, ..ScheduleConfig::new(2048, 8192) };
/// assert!(c.full_sequence_must_fit);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleConfig {
    /// Token budget of one step (`max_num_batched_tokens`), shared by all requests.
    pub max_num_batched_tokens: usize,
    /// Most running requests (`max_num_seqs`).
    pub max_num_seqs: usize,
    /// Longest sequence (`max_model_len`).
    pub max_model_len: usize,
    /// A request's chunk is capped at this many tokens when more than one
    /// request is eligible (`long_prefill_token_threshold`; 0 = off).
    pub long_prefill_token_threshold: usize,
    /// Extra slots per scheduled request (speculative decoding lookahead).
    pub num_lookahead_tokens: usize,
    /// An admission needs blocks for its whole known sequence
    /// (`scheduler_reserve_full_isl`, on by default in vLLM 0.33).
    pub full_sequence_must_fit: bool,
    /// Blocks kept free for admissions while anything runs (vLLM's
    /// `int(watermark * num_gpu_blocks)`).
    pub watermark_blocks: usize,
}

impl ScheduleConfig {
    /// vLLM's defaults for a budget and a model length.
    pub fn new(max_num_batched_tokens: usize, max_model_len: usize) -> Self {
        ScheduleConfig {
            max_num_batched_tokens,
            max_num_seqs: 256,
            max_model_len,
            long_prefill_token_threshold: 0,
            num_lookahead_tokens: 0,
            full_sequence_must_fit: true,
            watermark_blocks: 0,
        }
    }
}

/// What changed since the last [`BlockManager::schedule`] call: flat arrays.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScheduleInput<'a> {
    /// Requests that finished (or were aborted), freed first, in this order.
    pub finished: &'a [i64],
    /// Running requests with tokens to append (the tokens sampled last step).
    pub appended_ids: &'a [i64],
    /// Their tokens, concatenated.
    pub appended_tokens: &'a [i32],
    /// `len(appended_ids) + 1` offsets into `appended_tokens`.
    pub appended_offsets: &'a [i64],
    /// New requests, appended to the waiting queue in this order.
    pub arrival_ids: &'a [i64],
    /// Their prompts, concatenated.
    pub arrival_tokens: &'a [i32],
    /// `len(arrival_ids) + 1` offsets into `arrival_tokens`.
    pub arrival_offsets: &'a [i64],
    /// Per-arrival extra hash key (LoRA, cache salt), or empty for none.
    pub arrival_extra_keys: &'a [u64],
    /// The caller's clock (TTL pins).
    pub now: f64,
}

/// How a scheduled request entered this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdmissionKind {
    /// It was running already.
    Running = 0,
    /// A new request admitted this step.
    New = 1,
    /// A preempted request admitted again.
    Resumed = 2,
}

/// One step's schedule, in vLLM's order (running requests, then admissions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleOutput {
    /// Scheduled requests.
    pub req_ids: Vec<i64>,
    /// Tokens scheduled per request.
    pub num_scheduled: Vec<i32>,
    /// Tokens computed before this step (an admission: its prefix-cache hit).
    pub num_computed: Vec<i32>,
    /// [`AdmissionKind`] per request.
    pub kinds: Vec<u8>,
    /// Block ids per request, concatenated: a running request's new blocks,
    /// an admission's whole table (cached prefix included).
    pub blocks: Vec<i32>,
    /// `len(req_ids) + 1` offsets into `blocks`.
    pub block_offsets: Vec<i64>,
    /// Requests preempted this step, in order.
    pub preempted: Vec<i64>,
    /// Copy-on-write copies `(src, dst)` to run before the step.
    pub copies: Vec<(u32, u32)>,
}

fn check_offsets(what: &str, n: usize, offsets: &[i64], len: usize) -> Result<()> {
    if n == 0 && offsets.is_empty() {
        return Ok(());
    }
    if offsets.len() != n + 1 || offsets[0] != 0 {
        return Err(invalid(format!(
            "{what} offsets need {} entries starting at 0, got {}",
            n + 1,
            offsets.len()
        )));
    }
    if offsets.windows(2).any(|w| w[1] < w[0]) || offsets[n] as usize != len {
        return Err(invalid(format!(
            "{what} offsets must be non-decreasing and end at {len}"
        )));
    }
    Ok(())
}

fn tokens_of<'a>(tokens: &'a [i32], offsets: &[i64], i: usize) -> &'a [u32] {
    as_u32(&tokens[offsets[i] as usize..offsets[i + 1] as usize])
}

impl BlockManager {
    /// Runs one vLLM scheduler step (see the module docs and
    /// [`ScheduleInput`]). The input is validated first: on an error nothing
    /// has changed.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockManager, BlockManagerConfig, ScheduleConfig, ScheduleInput};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(4, 4)).unwrap();
    /// let cfg = ScheduleConfig { full_sequence_must_fit: false, ..ScheduleConfig::new(8, 64) };
    /// let prompts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9];
    /// let inp = ScheduleInput {
    ///     arrival_ids: &[1, 2], arrival_tokens: &prompts, arrival_offsets: &[0, 10, 14],
    ///     ..Default::default()
    /// };
    /// let out = bm.schedule(&cfg, &inp).unwrap();
    /// // One shared budget of 8 tokens: request 1 gets all of it, request 2 waits.
    /// assert_eq!((out.req_ids, out.num_scheduled), (vec![1], vec![8]));
    /// // Next step: 2 more prompt tokens for request 1 (3 blocks in all), then
    /// // request 2's prompt needs 1 block; 4 of its tokens fit in the budget.
    /// let out = bm.schedule(&cfg, &ScheduleInput::default()).unwrap();
    /// assert_eq!((out.req_ids, out.num_scheduled), (vec![1, 2], vec![2, 4]));
    /// // Request 1 gets 3 tokens (13 in all: a 4th block); the pool is full, so
    /// // the last running request (2) is preempted and the allocation retried.
    /// let more = ScheduleInput { appended_ids: &[1], appended_tokens: &[7, 7, 7], appended_offsets: &[0, 3], ..Default::default() };
    /// let out = bm.schedule(&cfg, &more).unwrap();
    /// assert_eq!((out.req_ids, out.num_scheduled, out.preempted), (vec![1], vec![3], vec![2]));
    /// assert_eq!(bm.waiting_queue(), vec![2]);
    /// bm.check_invariants().unwrap();
    /// ```
    pub fn schedule(
        &mut self,
        cfg: &ScheduleConfig,
        inp: &ScheduleInput<'_>,
    ) -> Result<ScheduleOutput> {
        self.validate_schedule(cfg, inp)?;
        Ok(self.schedule_validated(cfg, inp, false))
    }

    /// [`schedule`](Self::schedule) for a caller that keeps the queues itself
    /// (vLLM's `Scheduler`, whose `running` list and `waiting` queue stay the
    /// truth): the requests of `running` (in order) and `waiting` (next
    /// admission first; it may name `inp`'s arrivals, which are registered
    /// first, anywhere, and arrivals it does not name are only registered:
    /// that is how a caller registers a request ahead of its admission) are put into the
    /// queues for this one step and taken out again after it, so between
    /// calls every request is driven by the per-request API as well (it can
    /// be freed, allocated, looked up as usual). `inp.finished` must be empty
    /// (free requests with [`free`](Self::free)). `long_prefill_token_threshold`
    /// is the effective cap of this step: the caller, who sees the whole
    /// waiting queue, has already applied "only when more than one request is
    /// eligible". The output lists the preempted requests (the caller moves
    /// them to the front of its waiting queue) and the admissions (taken from
    /// the front of `waiting`, in order). A preempted request stays registered
    /// with its tokens and no blocks. Errors change nothing.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockManager, BlockManagerConfig, ScheduleConfig, ScheduleInput};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// let cfg = ScheduleConfig::new(16, 64);
    /// let inp = ScheduleInput { arrival_ids: &[3, 4], arrival_tokens: &[1, 2, 5, 6, 7], arrival_offsets: &[0, 2, 5], ..Default::default() };
    /// let out = bm.schedule_with_queues(&cfg, &[], &[3, 4], &inp).unwrap();
    /// assert_eq!(out.req_ids, vec![3, 4]);
    /// assert!(bm.running_queue().is_empty()); // the caller keeps the queues
    /// // Next step: one sampled token each; the caller's running list is [4, 3].
    /// let more = ScheduleInput { appended_ids: &[3, 4], appended_tokens: &[9, 9], appended_offsets: &[0, 1, 2], ..Default::default() };
    /// let out = bm.schedule_with_queues(&cfg, &[4, 3], &[], &more).unwrap();
    /// assert_eq!((out.req_ids, out.num_scheduled), (vec![4, 3], vec![1, 1]));
    /// bm.free(3).unwrap(); // the per-request API works between steps
    /// assert_eq!(bm.num_requests(), 1);
    /// bm.check_invariants().unwrap();
    /// ```
    pub fn schedule_with_queues(
        &mut self,
        cfg: &ScheduleConfig,
        running: &[i64],
        waiting: &[i64],
        inp: &ScheduleInput<'_>,
    ) -> Result<ScheduleOutput> {
        if !self.queues.running.is_empty() || !self.queues.waiting.is_empty() {
            return Err(invalid(
                "schedule() owns the queues of this manager; use it alone".into(),
            ));
        }
        if !inp.finished.is_empty() {
            return Err(invalid(
                "schedule_with_queues takes no finished requests (free them)".into(),
            ));
        }
        let arrivals: std::collections::HashSet<i64> = inp.arrival_ids.iter().copied().collect();
        let mut seen = std::collections::HashSet::with_capacity(running.len() + waiting.len());
        for (&id, is_waiting) in running
            .iter()
            .map(|i| (i, false))
            .chain(waiting.iter().map(|i| (i, true)))
        {
            if !seen.insert(id) {
                return Err(invalid(format!("request {id} is queued twice")));
            }
            if is_waiting && arrivals.contains(&id) {
                continue; // registered by this call
            }
            let st = self.live(id)?;
            if st.queue != Queue::None || st.residency != Residency::Device {
                return Err(invalid(format!(
                    "request {id} is not a device request outside schedule()'s queues"
                )));
            }
            if is_waiting && (!st.blocks.is_empty() || st.num_computed > 0) {
                return Err(invalid(format!(
                    "waiting request {id} holds blocks or computed tokens"
                )));
            }
        }
        for &id in running {
            self.reqs.get_mut(id).expect("checked").queue = Queue::Running;
        }
        for &id in waiting {
            if !arrivals.contains(&id) {
                self.reqs.get_mut(id).expect("checked").queue = Queue::Waiting;
            }
        }
        self.queues.running.extend_from_slice(running);
        self.queues.waiting.extend(waiting.iter().copied());
        let out = match self.validate_schedule(cfg, inp) {
            Ok(()) => Ok(self.schedule_validated(cfg, inp, true)),
            Err(e) => Err(e),
        };
        let queues = std::mem::take(&mut self.queues);
        let ids = queues.running.into_iter().chain(queues.waiting);
        for id in ids.chain(inp.arrival_ids.iter().copied()) {
            if let Some(st) = self.reqs.get_mut(id) {
                st.queue = Queue::None;
            }
        }
        out
    }

    /// One step on validated input; `external`: the caller's queues
    /// ([`schedule_with_queues`](Self::schedule_with_queues): arrivals are
    /// not queued here, the threshold is already effective).
    fn schedule_validated(
        &mut self,
        cfg: &ScheduleConfig,
        inp: &ScheduleInput<'_>,
        external: bool,
    ) -> ScheduleOutput {
        for &id in inp.finished {
            self.free(id).expect("validated");
        }
        let bs = self.cfg.block_size;
        let caching = self.cfg.enable_prefix_caching;
        for (i, &id) in inp.appended_ids.iter().enumerate() {
            let toks = tokens_of(inp.appended_tokens, inp.appended_offsets, i);
            let st = self.reqs.get_mut(id).expect("validated");
            if caching {
                st.tokens.extend_from_slice(toks);
                BlockHash::extend_chain(&mut st.hashes, st.extra_key, &st.tokens, bs);
            }
            st.num_tokens += toks.len();
        }
        for (i, &id) in inp.arrival_ids.iter().enumerate() {
            let toks = tokens_of(inp.arrival_tokens, inp.arrival_offsets, i);
            let extra = inp.arrival_extra_keys.get(i).copied().unwrap_or(0);
            let mut st = RequestState::new(toks, extra, None, bs, caching);
            st.queue = Queue::Waiting;
            self.reqs.insert(id, st);
            if !external {
                // schedule() queues arrivals; schedule_with_queues has them in `waiting`.
                self.queues.waiting.push_back(id);
            }
        }
        self.expire_pins(inp.now).expect("validated");

        let mut out = ScheduleOutput::default();
        out.block_offsets.push(0);
        let mut budget = cfg.max_num_batched_tokens;
        let eligible = self.queues.running.len() + self.queues.waiting.len();
        let threshold = if external || eligible > 1 {
            cfg.long_prefill_token_threshold
        } else {
            0
        };
        let mut new_ids: Vec<u32> = Vec::with_capacity(16);

        // 1. Running requests, in order; preempt from the back and retry.
        let mut idx = 0;
        while idx < self.queues.running.len() && budget > 0 {
            let id = self.queues.running[idx];
            let st = self.reqs.get(id).expect("queued");
            let mut n = st.num_tokens - st.num_computed;
            if threshold > 0 && threshold < n {
                n = threshold;
            }
            n = n.min(budget).min(
                cfg.max_model_len
                    .saturating_sub(st.num_computed)
                    .saturating_sub(1),
            );
            if n == 0 {
                idx += 1;
                continue;
            }
            let lookahead = cfg
                .num_lookahead_tokens
                .min(cfg.max_model_len.saturating_sub(st.num_computed + n));
            let computed_before = st.num_computed;
            let scheduled = loop {
                new_ids.clear();
                let r = self
                    .try_allocate(
                        id,
                        n,
                        &[],
                        lookahead,
                        &[],
                        false,
                        Some(0),
                        true,
                        &mut new_ids,
                    )
                    .expect("validated");
                if r.is_some() {
                    break true;
                }
                let victim = self.queues.running.pop().expect("non-empty");
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    break false;
                }
            };
            if !scheduled {
                break;
            }
            out.req_ids.push(id);
            out.num_scheduled.push(n as i32);
            out.num_computed.push(computed_before as i32);
            out.kinds.push(AdmissionKind::Running as u8);
            out.blocks.extend(new_ids.iter().map(|&b| b as i32));
            out.block_offsets.push(out.blocks.len() as i64);
            budget -= n;
            idx += 1;
        }

        // 2. Waiting requests, FCFS, in a step that preempted nothing.
        let mut hit = std::mem::take(&mut self.scratch_hit);
        while out.preempted.is_empty() && budget > 0 {
            let Some(&id) = self.queues.waiting.front() else {
                break;
            };
            if self.queues.running.len() >= cfg.max_num_seqs {
                break;
            }
            hit.clear();
            self.lookup_prefix(id, &mut hit);
            let st = self.reqs.get(id).expect("queued");
            let computed = hit.len() * bs;
            let mut n = st.num_tokens - computed;
            if threshold > 0 && threshold < n {
                n = threshold;
            }
            n = n.min(budget);
            let reserve = if self.queues.running.is_empty() {
                0
            } else {
                cfg.watermark_blocks
            };
            if cfg.full_sequence_must_fit {
                let full = st.num_tokens.min(cfg.max_model_len);
                let need = full.div_ceil(bs).saturating_sub(hit.len());
                let evictable = hit.iter().filter(|&&b| self.pool.ref_count(b) == 0).count();
                if need + reserve > self.pool.num_free() - evictable {
                    self.stats.refusals += 1;
                    break;
                }
            }
            let lookahead = cfg
                .num_lookahead_tokens
                .min(cfg.max_model_len.saturating_sub(computed + n));
            let resumed = st.num_preemptions > 0;
            new_ids.clear();
            let r = self
                .try_allocate(
                    id,
                    n,
                    &[],
                    lookahead,
                    &hit,
                    true,
                    Some(reserve),
                    true,
                    &mut new_ids,
                )
                .expect("validated");
            if r.is_none() {
                break;
            }
            self.queues.waiting.pop_front();
            self.queues.running.push(id);
            let st = self.reqs.get_mut(id).expect("queued");
            st.queue = Queue::Running;
            out.req_ids.push(id);
            out.num_scheduled.push(n as i32);
            out.num_computed.push(computed as i32);
            out.kinds.push(if resumed {
                AdmissionKind::Resumed as u8
            } else {
                AdmissionKind::New as u8
            });
            out.blocks.extend(st.blocks.iter().map(|&b| b as i32));
            out.block_offsets.push(out.blocks.len() as i64);
            budget -= n;
        }
        self.scratch_hit = hit;
        out.copies = std::mem::take(&mut self.copies);
        out
    }

    /// The scheduler's running queue, oldest first.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockManager, BlockManagerConfig, ScheduleConfig, ScheduleInput};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// let inp = ScheduleInput { arrival_ids: &[3], arrival_tokens: &[1, 2], arrival_offsets: &[0, 2], ..Default::default() };
    /// bm.schedule(&ScheduleConfig::new(16, 64), &inp).unwrap();
    /// assert_eq!(bm.running_queue(), &[3]);
    /// ```
    pub fn running_queue(&self) -> &[i64] {
        &self.queues.running
    }

    /// The scheduler's waiting queue, next admission first.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockManager, BlockManagerConfig, ScheduleConfig, ScheduleInput};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// let inp = ScheduleInput { arrival_ids: &[3], arrival_tokens: &[1, 2], arrival_offsets: &[0, 2], ..Default::default() };
    /// bm.schedule(&ScheduleConfig { max_num_seqs: 1, ..ScheduleConfig::new(1, 64) }, &inp).unwrap();
    /// assert!(bm.waiting_queue().is_empty()); // admitted with a 1-token chunk
    /// ```
    pub fn waiting_queue(&self) -> Vec<i64> {
        self.queues.waiting.iter().copied().collect()
    }

    /// Preempts running request `id` (already taken off the running queue):
    /// its blocks are freed tail first, its tokens kept, and it waits at the
    /// front of the waiting queue.
    fn preempt(&mut self, id: i64) {
        let st = self.reqs.get_mut(id).expect("running");
        let blocks = std::mem::take(&mut st.blocks);
        st.num_computed = 0;
        st.num_cached_blocks = 0;
        st.pending_hit = None;
        st.num_preemptions += 1;
        st.queue = Queue::Waiting;
        release_rev(&mut self.pool, &blocks);
        self.queues.waiting.push_front(id);
        self.stats.preemptions += 1;
    }

    /// Removes `id` from whichever scheduler queue holds it.
    pub(super) fn dequeue(&mut self, id: i64, queue: Queue) {
        match queue {
            Queue::None => {}
            Queue::Running => {
                if let Some(i) = self.queues.running.iter().position(|&r| r == id) {
                    self.queues.running.remove(i);
                }
            }
            Queue::Waiting => {
                if let Some(i) = self.queues.waiting.iter().position(|&r| r == id) {
                    self.queues.waiting.remove(i);
                }
            }
        }
    }

    fn validate_schedule(&self, cfg: &ScheduleConfig, inp: &ScheduleInput<'_>) -> Result<()> {
        check_now(inp.now)?;
        if cfg.max_num_seqs == 0 || cfg.max_model_len == 0 {
            return Err(invalid(
                "max_num_seqs and max_model_len must be at least 1".into(),
            ));
        }
        check_offsets(
            "appended",
            inp.appended_ids.len(),
            inp.appended_offsets,
            inp.appended_tokens.len(),
        )?;
        check_offsets(
            "arrival",
            inp.arrival_ids.len(),
            inp.arrival_offsets,
            inp.arrival_tokens.len(),
        )?;
        for (what, toks) in [
            ("appended", inp.appended_tokens),
            ("arrival", inp.arrival_tokens),
        ] {
            if let Some(i) = toks.iter().position(|&t| t < 0) {
                return Err(invalid(format!(
                    "{what} token id {} at index {i} is negative",
                    toks[i]
                )));
            }
        }
        if !inp.arrival_extra_keys.is_empty()
            && inp.arrival_extra_keys.len() != inp.arrival_ids.len()
        {
            return Err(invalid(
                "arrival_extra_keys must be empty or one per arrival".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for &id in inp.finished {
            let st = self.live(id)?;
            if st.queue == Queue::None {
                return Err(invalid(format!(
                    "request {id} was not added through schedule()"
                )));
            }
            if !seen.insert(id) {
                return Err(invalid(format!("request {id} is finished twice")));
            }
        }
        let mut appended = std::collections::HashSet::new();
        for &id in inp.appended_ids {
            let st = self.live(id)?;
            if seen.contains(&id) {
                return Err(invalid(format!(
                    "request {id} is both finished and appended to"
                )));
            }
            if st.queue == Queue::None || st.residency != Residency::Device {
                return Err(invalid(format!(
                    "request {id} is not in schedule()'s queues"
                )));
            }
            if !appended.insert(id) {
                return Err(invalid(format!("request {id} is appended to twice")));
            }
        }
        let mut arrivals = std::collections::HashSet::new();
        for (i, &id) in inp.arrival_ids.iter().enumerate() {
            if self.reqs.contains(id) || !arrivals.insert(id) {
                return Err(invalid(format!("request {id} already exists")));
            }
            let n = (inp.arrival_offsets[i + 1] - inp.arrival_offsets[i]) as usize;
            if n == 0 || n > cfg.max_model_len {
                return Err(invalid(format!(
                    "request {id}: a prompt of {n} tokens (must be 1..={})",
                    cfg.max_model_len
                )));
            }
        }
        Ok(())
    }
}
