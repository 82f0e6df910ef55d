//! The host tier for swapping, and coalescing of block copies into ranges.
//!
//! FastSwitch's observation: swapping block by block issues thousands of
//! small copies whose fixed cost dominates. The host tier therefore hands out
//! *contiguous* runs of host blocks where it can (first fit over a free
//! bitmap), and [`coalesce`] turns a list of `(src, dst)` block copies into
//! `(src_start, dst_start, len)` ranges where both sides are consecutive, so
//! an engine issues one `cudaMemcpyAsync` per range.

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
