//! The host tier for swapping, and coalescing of block copies into ranges.
//!
//! FastSwitch's observation: swapping block by block issues thousands of
//! small copies whose fixed cost dominates. The host tier therefore hands out
//! *contiguous* runs of host blocks where it can (first fit over a free
//! bitmap), and [`coalesce`] turns a list of `(src, dst)` block copies into
//! `(src_start, dst_start, len)` ranges where both sides are consecutive, so
//! an engine issues one `cudaMemcpyAsync` per range.
//! [`BlockManager::swap_out`] / [`BlockManager::swap_in`] move a request
//! between the tiers.

use super::manager::{check_now, invalid, not_queued, release_rev, BlockManager};
use super::request_table::Residency;
use crate::Result;

/// One contiguous copy: blocks `src..src+len` to `dst..dst+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRange {
    /// First source block.
    pub src: u32,
    /// First destination block.
    pub dst: u32,
    /// Number of blocks.
    pub len: u32,
}

/// Merges block copies into contiguous ranges.
///
/// Runs where both ids step by +1 merge; so do runs where both step by -1
/// (a table freed and re-allocated in reverse), normalised to ascending.
///
/// ```
/// use slabcache_core::blocks::{coalesce, CopyRange};
/// let r = coalesce(&[(4, 10), (5, 11), (6, 12), (9, 3), (8, 2)]);
/// assert_eq!(r, vec![
///     CopyRange { src: 4, dst: 10, len: 3 },
///     CopyRange { src: 8, dst: 2, len: 2 },
/// ]);
/// ```
pub fn coalesce(pairs: &[(u32, u32)]) -> Vec<CopyRange> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let (s0, d0) = pairs[i];
        let mut j = i + 1;
        // Ascending run?
        while j < pairs.len()
            && pairs[j].0 as i64 == s0 as i64 + (j - i) as i64
            && pairs[j].1 as i64 == d0 as i64 + (j - i) as i64
        {
            j += 1;
        }
        if j - i == 1 {
            // Try a descending run.
            while j < pairs.len()
                && pairs[j].0 as i64 == s0 as i64 - (j - i) as i64
                && pairs[j].1 as i64 == d0 as i64 - (j - i) as i64
            {
                j += 1;
            }
            let n = (j - i) as u32;
            out.push(CopyRange {
                src: s0 + 1 - n,
                dst: d0 + 1 - n,
                len: n,
            });
        } else {
            out.push(CopyRange {
                src: s0,
                dst: d0,
                len: (j - i) as u32,
            });
        }
        i = j;
    }
    out
}

/// Host-memory blocks, allocated first-fit so swapped tables stay contiguous.
///
/// ```
/// use slabcache_core::blocks::HostTier;
/// let mut host = HostTier::new(8);
/// let a = host.allocate(3).unwrap();
/// assert_eq!(a, vec![0, 1, 2]);
/// host.release(&a[1..2]);
/// assert_eq!(host.allocate(2).unwrap(), vec![3, 4]); // a contiguous run beats the hole
/// assert!(host.allocate(9).is_none());
/// ```
#[derive(Debug, Clone)]
pub struct HostTier {
    used: Vec<bool>,
    num_free: usize,
    /// Search hint: no free block below this index.
    low: usize,
}

impl HostTier {
    /// A host tier of `num_blocks` free blocks.
    pub fn new(num_blocks: usize) -> Self {
        Self::try_new(num_blocks).expect("host tier allocation")
    }

    /// Like [`new`](Self::new), but an allocation failure is an `OutOfMemory` error.
    pub fn try_new(num_blocks: usize) -> crate::Result<Self> {
        Ok(HostTier {
            used: super::try_vec(num_blocks, false)?,
            num_free: num_blocks,
            low: 0,
        })
    }

    /// Host blocks in total.
    pub fn num_blocks(&self) -> usize {
        self.used.len()
    }

    /// Host blocks free.
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Whether host block `b` is in use.
    pub fn is_used(&self, b: u32) -> bool {
        self.used[b as usize]
    }

    /// `n` host blocks: the first contiguous free run of length `n` if there
    /// is one, else the lowest free blocks; `None` if fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Some(out);
        }
        // First fit for a contiguous run.
        let mut run_start = self.low;
        let mut run = 0;
        let mut found = None;
        for i in self.low..self.used.len() {
            if self.used[i] {
                run = 0;
                run_start = i + 1;
            } else {
                run += 1;
                if run == n {
                    found = Some(run_start);
                    break;
                }
            }
        }
        match found {
            Some(s) => out.extend((s..s + n).map(|b| b as u32)),
            None => {
                for i in self.low..self.used.len() {
                    if !self.used[i] {
                        out.push(i as u32);
                        if out.len() == n {
                            break;
                        }
                    }
                }
            }
        }
        for &b in &out {
            self.used[b as usize] = true;
        }
        self.num_free -= n;
        while self.low < self.used.len() && self.used[self.low] {
            self.low += 1;
        }
        Some(out)
    }

    /// Returns host blocks to the tier.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks {
            debug_assert!(self.used[b as usize], "host block {b} released twice");
            self.used[b as usize] = false;
            self.low = self.low.min(b as usize);
        }
        self.num_free += blocks.len();
    }
}

impl BlockManager {
    /// Moves request `id`'s blocks to the host tier. Returns the device ->
    /// host copies as coalesced ranges, or `None` (nothing changed) when the
    /// host tier is full. The device blocks are freed (cached ones stay cached).
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig { num_cpu_blocks: 4, ..BlockManagerConfig::new(8, 4) }).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5, 6], 0, None).unwrap();
    /// bm.allocate_slots(1, 6, &[], 0, 0.0).unwrap().unwrap(); // device blocks 0, 1
    /// let ranges = bm.swap_out(1).unwrap().unwrap();
    /// assert_eq!((ranges.len(), ranges[0].src, ranges[0].len), (1, 0, 2)); // one 2-block copy
    /// assert_eq!(bm.num_free_blocks(), 8);
    /// ```
    pub fn swap_out(&mut self, id: i64) -> Result<Option<Vec<CopyRange>>> {
        let st = self.live(id)?;
        if st.residency != Residency::Device {
            return Err(invalid(format!("request {id} is already swapped out")));
        }
        not_queued(id, st)?;
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
    ///
    /// ```
    /// # use slabcache_core::blocks::{BlockManager, BlockManagerConfig};
    /// let mut bm = BlockManager::new(BlockManagerConfig { num_cpu_blocks: 4, ..BlockManagerConfig::new(8, 4) }).unwrap();
    /// bm.get_computed_blocks(1, &[1, 2, 3, 4, 5, 6], 0, None).unwrap();
    /// bm.allocate_slots(1, 6, &[], 0, 0.0).unwrap().unwrap();
    /// bm.swap_out(1).unwrap().unwrap();
    /// // The full block is still cached on the device: only the partial one is copied back.
    /// let ranges = bm.swap_in(1, 0.0).unwrap().unwrap();
    /// assert_eq!(ranges.iter().map(|r| r.len).sum::<u32>(), 1);
    /// assert_eq!(bm.block_table(1).unwrap().len(), 2);
    /// ```
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_edge_cases() {
        assert!(coalesce(&[]).is_empty());
        assert_eq!(
            coalesce(&[(1, 1)]),
            vec![CopyRange {
                src: 1,
                dst: 1,
                len: 1
            }]
        );
        // src ascending, dst descending: no merge.
        assert_eq!(coalesce(&[(1, 5), (2, 4)]).len(), 2);
        let total: u32 = coalesce(&[(0, 0), (1, 1), (3, 3), (2, 2)])
            .iter()
            .map(|r| r.len)
            .sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn host_tier_fragmented_fallback() {
        let mut h = HostTier::new(6);
        let a = h.allocate(6).unwrap();
        h.release(&[a[0], a[2], a[4]]);
        assert_eq!(h.allocate(2).unwrap(), vec![0, 2]);
        assert_eq!(h.num_free(), 1);
        assert_eq!(h.allocate(1).unwrap(), vec![4]);
        assert_eq!(h.allocate(0).unwrap(), Vec::<u32>::new());
    }
}
