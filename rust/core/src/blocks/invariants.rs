//! [`BlockManager::check_invariants`]: every structural invariant of the
//! manager, checked from scratch (for tests and debugging, O(blocks + tokens)).

use super::manager::BlockManager;
use super::request_table::{Queue, Residency};
use crate::{Error, ErrorKind, Result};

impl BlockManager {
    /// Checks every internal invariant (ref counts equal table and pin
    /// references, free queue = blocks with ref 0, cache and block hashes
    /// agree, tables cover computed tokens, host tier accounting). For tests.
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// # let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3], 0, None).unwrap();
    /// bm.allocate_slots(1, 3, &[], 0, 0.0).unwrap().unwrap();
    /// bm.check_invariants().unwrap();
    /// ```
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
        // schedule()'s queues: each queued request once, in the queue its state says;
        // a waiting one holds no blocks.
        let mut queued = 0;
        for (q, ids) in [
            (Queue::Running, self.queues.running.clone()),
            (
                Queue::Waiting,
                self.queues.waiting.iter().copied().collect(),
            ),
        ] {
            for id in ids {
                match self.reqs.get(id) {
                    Some(st) if st.queue == q => {
                        if q == Queue::Waiting && (!st.blocks.is_empty() || st.num_computed > 0) {
                            return fail(format!("waiting request {id} holds blocks"));
                        }
                    }
                    _ => return fail(format!("queued request {id} is not live in that queue")),
                }
                queued += 1;
            }
        }
        if queued
            != self
                .reqs
                .iter()
                .filter(|(_, st)| st.queue != Queue::None)
                .count()
        {
            return fail("a request is queued twice or missing from its queue".into());
        }
        Ok(())
    }
}
