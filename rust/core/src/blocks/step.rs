//! [`BlockManager::step`]: a whole scheduler step in one call, with the
//! batch validated up front so that a bad batch changes nothing.

use super::manager::{as_u32, check_now, invalid, not_queued, BlockManager};
use super::request_table::{RequestState, Residency};
use crate::Result;

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

impl BlockManager {
    /// Runs one scheduler step (see [`StepInput`]). Validates the whole batch
    /// first: on an error nothing has changed. A request that does not fit
    /// gets `num_scheduled = -1` and is left as it was; the rest proceed.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// use slabcache_core::blocks::StepInput;
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// let mut inp = StepInput {
    ///     req_ids: &[1], num_new_tokens: &[3], token_ids: &[5, 6, 7, 8, 9], token_offsets: &[0, 5],
    ///     extra_keys: &[], programs: &[], finished: &[], num_lookahead_tokens: 0, now: 0.0, fcfs: true,
    /// };
    /// assert_eq!(bm.step(&inp).unwrap().num_scheduled, vec![3]); // a 3-token chunk
    /// inp.token_ids = &[];
    /// inp.token_offsets = &[];
    /// assert_eq!(bm.step(&inp).unwrap().num_scheduled, vec![2]); // the rest of the prompt
    /// assert_eq!(bm.num_computed_tokens(1).unwrap(), 5);
    /// ```
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
                    true,
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
                    not_queued(id, st)?;
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
}
