//! Sliding-window attention groups: which cached blocks a prefix hit needs,
//! and which blocks fall out of the window.
//!
//! A sliding-window layer attends only to the last `window` tokens, so (as in
//! vLLM 0.33's `SlidingWindowManager`) a prefix hit of `n` tokens needs only
//! the blocks covering tokens `n - window + 1 .. n`: the hit search scans
//! right to left for a run of `cdiv(window - 1, block_size)` cached blocks,
//! the blocks before the run are the null block in the table, and blocks
//! that fall out of the window as the request advances are freed.

use super::block_hash::BlockHash;

/// The table entry of a block that is not held (vLLM's null block): a skipped
/// sliding-window block.
pub const NULL_BLOCK: u32 = u32::MAX;

/// Cached blocks a sliding-window hit needs at its right edge
/// (`cdiv(window - 1, block_size)`, vLLM's `_contiguous_blocks_for_hit`).
///
/// ```
/// use slabcache_core::blocks::sliding_window::contiguous_blocks_for_hit;
/// assert_eq!(contiguous_blocks_for_hit(8, 4), 2);
/// assert_eq!(contiguous_blocks_for_hit(4, 4), 1);
/// ```
pub fn contiguous_blocks_for_hit(window: usize, block_size: usize) -> usize {
    window.saturating_sub(1).div_ceil(block_size)
}

/// Tokens before the window of the next token once `num_computed_tokens` are
/// computed (`num_computed - window + 1 - extra_retained`, at least 0; vLLM's
/// `get_num_skipped_tokens`).
///
/// ```
/// use slabcache_core::blocks::sliding_window::num_skipped_tokens;
/// assert_eq!(num_skipped_tokens(7, 4, 0), 4);
/// assert_eq!(num_skipped_tokens(2, 4, 0), 0);
/// ```
pub fn num_skipped_tokens(
    num_computed_tokens: usize,
    window: usize,
    extra_retained: usize,
) -> usize {
    (num_computed_tokens + 1).saturating_sub(window + extra_retained)
}

/// The longest sliding-window hit of at most `max_length` tokens for the
/// groups of one spec: `lookup(hash)` returns each member group's cached
/// block for a hash, or `None` if any member misses. The result holds one
/// table per member, [`NULL_BLOCK`] before the run of hits; its length times
/// `block_size` is the hit length. `drop_eagle_block` is vLLM's EAGLE rule:
/// the run needs one block more, and its last block is dropped.
///
/// ```
/// use slabcache_core::blocks::BlockHash;
/// use slabcache_core::blocks::sliding_window::{longest_hit, NULL_BLOCK};
/// let hashes: Vec<BlockHash> = (0..4u32).map(|i| BlockHash::of_block(None, 0, &[i])).collect();
/// // Blocks 1 and 2 are cached (as 7 and 8); window 8 with block size 4 needs 2 in a row.
/// let hit = longest_hit(&hashes, 16, 4, 8, false, 1, |h| {
///     let i = hashes.iter().position(|x| x == h).unwrap();
///     [None, Some(vec![7]), Some(vec![8]), None][i].clone()
/// });
/// assert_eq!(hit, vec![vec![NULL_BLOCK, 7, 8]]);
/// ```
pub fn longest_hit(
    hashes: &[BlockHash],
    max_length: usize,
    block_size: usize,
    window: usize,
    drop_eagle_block: bool,
    num_members: usize,
    mut lookup: impl FnMut(&BlockHash) -> Option<Vec<u32>>,
) -> Vec<Vec<u32>> {
    // EAGLE: one more contiguous block is needed, and the last is dropped.
    let need = contiguous_blocks_for_hit(window, block_size) + usize::from(drop_eagle_block);
    let max_blocks = (max_length / block_size).min(hashes.len());
    let mut out = vec![vec![NULL_BLOCK; max_blocks]; num_members];
    let mut run = 0usize;
    let mut found = false;
    for i in (0..max_blocks).rev() {
        if let Some(blocks) = lookup(&hashes[i]) {
            for (t, b) in out.iter_mut().zip(blocks) {
                t[i] = b;
            }
            run += 1;
            if run >= need {
                for t in out.iter_mut() {
                    t.truncate(i + run);
                }
                found = true;
                break;
            }
        } else {
            run = 0;
        }
    }
    if !found {
        // The run that starts at block 0 is a hit even when shorter than the window.
        for t in out.iter_mut() {
            t.truncate(run);
        }
    }
    if drop_eagle_block && !out[0].is_empty() {
        for t in out.iter_mut() {
            t.pop();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: u32) -> Vec<BlockHash> {
        (0..n).map(|i| BlockHash::of_block(None, 0, &[i])).collect()
    }

    fn hit(cached: &[Option<u32>], max_len: usize, window: usize) -> Vec<u32> {
        let hs = hashes(cached.len() as u32);
        longest_hit(&hs, max_len, 4, window, false, 1, |h| {
            let i = hs.iter().position(|x| x == h).unwrap();
            cached[i].map(|b| vec![b])
        })
        .remove(0)
    }

    #[test]
    fn right_to_left_run_and_trailing_trim() {
        let n = NULL_BLOCK;
        // vLLM's example: [NULL, NULL, 8, 3, NULL, 9] -> [NULL, NULL, 8, 3] (window needs 2).
        let c = [None, None, Some(8), Some(3), None, Some(9)];
        assert_eq!(hit(&c, 24, 8), vec![n, n, 8, 3]);
        // Nothing long enough: the run from block 0 is the hit.
        let c = [Some(1), None, Some(3), None];
        assert_eq!(hit(&c, 16, 12), vec![1]);
        assert_eq!(hit(&[None, Some(2)], 8, 12), Vec::<u32>::new());
        // max_length caps the blocks considered.
        let c = [Some(1), Some(2), Some(3), Some(4)];
        assert_eq!(hit(&c, 11, 8), vec![1, 2]);
    }

    #[test]
    fn eagle_needs_one_more_block_and_drops_the_last() {
        let n = NULL_BLOCK;
        let hs = hashes(6);
        let c = [None, None, Some(8), Some(3), None, Some(9)];
        let eagle = |max_len: usize| {
            longest_hit(&hs, max_len, 4, 8, true, 1, |h| {
                let i = hs.iter().position(|x| x == h).unwrap();
                c[i].map(|b| vec![b])
            })
            .remove(0)
        };
        // A run of 2 is not enough (window 8 needs 2, EAGLE 3): no hit.
        assert_eq!(eagle(24), Vec::<u32>::new());
        let c = [Some(1), Some(2), Some(3), Some(4)];
        let hs = hashes(4);
        let got = longest_hit(&hs, 16, 4, 8, true, 1, |h| {
            let i = hs.iter().position(|x| x == h).unwrap();
            c[i].map(|b| vec![b])
        });
        // Blocks 1..=3 form the run of 3; the last is dropped.
        assert_eq!(got, vec![vec![n, 2, 3]]);
    }

    #[test]
    fn skipped_tokens() {
        assert_eq!(num_skipped_tokens(0, 4, 0), 0);
        assert_eq!(num_skipped_tokens(4, 4, 0), 1);
        assert_eq!(num_skipped_tokens(7, 4, 2), 2);
        assert_eq!(contiguous_blocks_for_hit(1, 4), 0);
        assert_eq!(contiguous_blocks_for_hit(5, 4), 1);
        assert_eq!(contiguous_blocks_for_hit(6, 4), 2);
    }
}
