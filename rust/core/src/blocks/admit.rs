//! The side-effect-free admission path: [`BlockManager::lookup`] finds a
//! prompt's cached prefix without registering anything (an aborted waiting
//! request leaks nothing), and [`BlockManager::admit`] registers and
//! allocates in one all-or-nothing call, taking the blocks the lookup
//! returned, tokens a KV connector loads from outside (`external`), and an
//! optional delay of prefix caching until the load lands
//! ([`BlockManager::cache_blocks`]), as vLLM's `allocate_slots` with
//! `num_external_computed_tokens` and `delay_cache_blocks`.

use super::block_hash::BlockHash;
use super::manager::{cache_full_blocks, check_now, invalid, token_range, BlockManager};
use super::request_table::{RequestState, Residency};
use crate::{Error, ErrorKind, Result};

/// The block hashes of the last prompt looked up, so that its admission
/// right after does not hash it again (one entry: bounded, not per request).
#[derive(Debug, Clone, Default)]
pub struct LookupMemo {
    tokens: Vec<u32>,
    extra_key: u64,
    hashes: Vec<BlockHash>,
}

/// What [`BlockManager::admit`] allocates for a new request.
///
/// ```
/// use slabcache_core::blocks::Admission;
/// let a = Admission { num_new_tokens: 16, ..Admission::default() };
/// assert!(a.hit.is_empty() && !a.delay_cache);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission<'a> {
    /// Cached blocks to take first (what [`BlockManager::lookup`] returned, possibly cut short).
    pub hit: &'a [u32],
    /// Tokens whose KV a connector loads into fresh blocks (slots, counted computed).
    pub num_external_tokens: usize,
    /// Tokens to compute this step, after the hit and the external tokens.
    pub num_new_tokens: usize,
    /// Extra slots beyond them (speculative tokens).
    pub num_lookahead_tokens: usize,
    /// Blocks to leave free (`None`: the configured watermark).
    pub reserve: Option<usize>,
    /// Do not register the new full blocks in the prefix cache yet (an
    /// asynchronous KV load); [`BlockManager::cache_blocks`] does it later.
    pub delay_cache: bool,
}

impl BlockManager {
    /// The longest cached prefix of `tokens` (at most `max_hit_tokens`, and
    /// at most `len - 1` tokens, so the last token is computed): `(block ids,
    /// hit tokens)`. Registers nothing and counts nothing: a request that is
    /// never admitted leaves no trace.
    ///
    /// ```
    /// use slabcache_core::blocks::{Admission, BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 2)).unwrap();
    /// assert_eq!(bm.lookup(&[1, 2, 3], 0, usize::MAX).unwrap(), (vec![], 0));
    /// bm.admit(1, &[1, 2, 3], 0, None, &Admission { num_new_tokens: 3, ..Default::default() }, 0.0)
    ///     .unwrap().unwrap();
    /// assert_eq!(bm.lookup(&[1, 2, 9], 0, usize::MAX).unwrap(), (vec![0], 2));
    /// assert_eq!(bm.num_requests(), 1);          // the lookups registered nothing
    /// ```
    pub fn lookup(
        &mut self,
        tokens: &[u32],
        extra_key: u64,
        max_hit_tokens: usize,
    ) -> Result<(Vec<u32>, usize)> {
        if tokens.iter().any(|&t| t > i32::MAX as u32) {
            return Err(invalid("token ids must be in [0, 2**31)".into()));
        }
        if !self.cfg.enable_prefix_caching {
            return Ok((Vec::new(), 0));
        }
        self.memoize(tokens, extra_key);
        let bs = self.cfg.block_size;
        let max =
            (tokens.len().saturating_sub(1).min(max_hit_tokens) / bs).min(self.memo.hashes.len());
        let mut hit = Vec::new();
        for h in &self.memo.hashes[..max] {
            match self.pool.lookup(h) {
                Some(b) => hit.push(b),
                None => break,
            }
        }
        let n = hit.len() * bs;
        Ok((hit, n))
    }

    fn memoize(&mut self, tokens: &[u32], extra_key: u64) {
        let m = &mut self.memo;
        if m.extra_key != extra_key || m.tokens != tokens {
            m.tokens.clear();
            m.tokens.extend_from_slice(tokens);
            m.extra_key = extra_key;
            m.hashes.clear();
            BlockHash::extend_chain(&mut m.hashes, extra_key, tokens, self.cfg.block_size);
        }
    }

    /// Registers request `id` with its known `tokens` and allocates its
    /// admission in one call, all or nothing: the `hit` blocks (which must
    /// still hold this prompt's block hashes, in order), slots for the
    /// external and new tokens and the lookahead. Returns the new block ids,
    /// or `None` when they do not fit — and then nothing is registered.
    ///
    /// ```
    /// use slabcache_core::blocks::{Admission, BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 2)).unwrap();
    /// // A connector loads 4 tokens (2 blocks); the last one is computed here.
    /// let a = Admission { num_external_tokens: 4, num_new_tokens: 1, delay_cache: true, ..Default::default() };
    /// let new = bm.admit(1, &[1, 2, 3, 4, 5], 0, None, &a, 0.0).unwrap().unwrap();
    /// assert_eq!(new.len(), 3);
    /// assert_eq!(bm.lookup(&[1, 2, 3, 4, 9], 0, usize::MAX).unwrap().1, 0); // not cached yet
    /// bm.cache_blocks(1, 4).unwrap();                                       // the load landed
    /// assert_eq!(bm.lookup(&[1, 2, 3, 4, 9], 0, usize::MAX).unwrap().1, 4);
    /// let big = Admission { num_new_tokens: 20, ..Default::default() };
    /// assert!(bm.admit(2, &[7; 20], 0, None, &big, 0.0).unwrap().is_none());
    /// assert!(!bm.contains(2));                                           // refused: no trace
    /// ```
    pub fn admit(
        &mut self,
        id: i64,
        tokens: &[u32],
        extra_key: u64,
        program: Option<i64>,
        a: &Admission<'_>,
        now: f64,
    ) -> Result<Option<Vec<u32>>> {
        check_now(now)?;
        if self.reqs.contains(id) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("request {id} is already registered"),
            ));
        }
        if tokens.is_empty() {
            return Err(invalid(format!("request {id}: the prompt is empty")));
        }
        if tokens.iter().any(|&t| t > i32::MAX as u32) {
            return Err(invalid("token ids must be in [0, 2**31)".into()));
        }
        let bs = self.cfg.block_size;
        let caching = self.cfg.enable_prefix_caching;
        if !caching && !a.hit.is_empty() {
            return Err(invalid(
                "cached blocks given with prefix caching off".into(),
            ));
        }
        let hashes = if caching {
            self.memoize(tokens, extra_key);
            self.memo.hashes.clone()
        } else {
            Vec::new()
        };
        if a.hit.len() > hashes.len() || a.hit.len() * bs >= tokens.len() {
            return Err(invalid(format!(
                "request {id}: {} cached blocks for {} tokens",
                a.hit.len(),
                tokens.len()
            )));
        }
        for (i, &b) in a.hit.iter().enumerate() {
            if b as usize >= self.pool.num_blocks() || self.pool.hash_of(b) != Some(&hashes[i]) {
                return Err(invalid(format!(
                    "request {id}: block {b} does not hold its prefix block {i} (evicted since the lookup?)"
                )));
            }
        }
        let st = RequestState::with_hashes(tokens, hashes, extra_key, program, caching);
        let n = a.num_external_tokens + a.num_new_tokens;
        token_range(id, &st, a.hit.len(), bs, n, &[])?;
        self.expire_pins(now)?;
        self.reqs.insert(id, st);
        let mut out = Vec::new();
        let r = self
            .try_allocate(
                id,
                n,
                &[],
                a.num_lookahead_tokens,
                a.hit,
                true,
                a.reserve,
                !a.delay_cache,
                &mut out,
            )
            .expect("validated");
        if r.is_none() {
            self.reqs.discard(id);
            return Ok(None);
        }
        // Counted at admission, as vLLM records prefix-cache stats.
        if caching {
            self.stats.prefix_queries += 1;
            self.stats.prefix_query_tokens += tokens.len() as u64;
            self.stats.prefix_hit_tokens += (a.hit.len() * bs) as u64;
        }
        Ok(Some(out))
    }

    /// Registers request `id`'s full blocks among its first `num_tokens`
    /// computed tokens in the prefix cache (after a delayed admission, once
    /// the KV is really there). Tokens not known or not computed are ignored.
    ///
    /// ```
    /// use slabcache_core::blocks::{Admission, BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig::new(8, 2)).unwrap();
    /// let a = Admission { num_external_tokens: 3, delay_cache: true, ..Default::default() };
    /// bm.admit(1, &[1, 2, 3, 4], 0, None, &a, 0.0).unwrap().unwrap();
    /// bm.cache_blocks(1, 100).unwrap();               // only the computed 3 tokens: 1 block
    /// assert_eq!(bm.lookup(&[1, 2, 3, 4, 5], 0, usize::MAX).unwrap().1, 2);
    /// ```
    pub fn cache_blocks(&mut self, id: i64, num_tokens: usize) -> Result<()> {
        let bs = self.cfg.block_size;
        if !self.cfg.enable_prefix_caching {
            self.live(id)?;
            return Ok(());
        }
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!("request {id} holds no device blocks")));
        }
        let st = self.reqs.get_mut(id).expect("live");
        let upto = (num_tokens.min(st.num_computed).min(st.num_tokens) / bs).min(st.blocks.len());
        cache_full_blocks(&mut self.pool, st, upto, bs);
        Ok(())
    }
}
