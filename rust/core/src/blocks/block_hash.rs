//! Chained content hashes of full KV blocks.
//!
//! A full block is identified by `BLAKE3(parent_hash || extra_key || token_ids)`:
//!
//! * `parent_hash` is the 32-byte hash of the previous block of the same
//!   sequence (32 zero bytes for the first block), so a block hash names the
//!   whole prefix up to and including that block, not just its own tokens;
//! * `extra_key` is a 64-bit key that distinguishes KV that the same tokens
//!   produce differently: a LoRA adapter id, a cache salt, or a multimodal
//!   input's hash (0 when there is none);
//! * `token_ids` are the block's `block_size` token ids, little-endian `u32`.
//!
//! **Why BLAKE3.** Blocks from different tenants share one cache, so a hash
//! collision would hand one request another's KV: the hash must be
//! collision-resistant, not just well spread (vLLM moved from Python's
//! `hash()` to SHA-256 for the same reason). It must also be stable across
//! processes and machines, because a cluster router matches the hashes of the
//! event stream against those of other workers. BLAKE3 is a cryptographic
//! hash with 256-bit output (128-bit collision resistance), stable by
//! specification, and several times faster than SHA-256 on the ~100-byte
//! inputs a block produces, which matters because every prompt token passes
//! through it once.
//!
//! ```
//! use slabcache_core::blocks::BlockHash;
//! let a = BlockHash::of_block(None, 0, &[1, 2, 3, 4]);
//! let b = BlockHash::of_block(Some(&a), 0, &[5, 6, 7, 8]);
//! assert_ne!(a, b);
//! assert_eq!(b, BlockHash::of_block(Some(&a), 0, &[5, 6, 7, 8]));
//! assert_ne!(a, BlockHash::of_block(None, 7, &[1, 2, 3, 4])); // extra key (LoRA id) matters
//! ```

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// The 32-byte chained hash of one full block (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

impl std::hash::Hash for BlockHash {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is uniform already: 8 of its bytes are a full-quality key hash.
        state.write_u64(self.prefix_u64());
    }
}

impl BlockHash {
    /// The parent of a sequence's first block.
    pub const ROOT: BlockHash = BlockHash([0; 32]);

    /// Hashes one block: `parent` (None for the first block), the extra key and its tokens.
    ///
    /// ```
    /// use slabcache_core::blocks::BlockHash;
    /// let h = BlockHash::of_block(None, 0, &[42; 16]);
    /// assert_eq!(h.to_hex().len(), 64);
    /// ```
    pub fn of_block(parent: Option<&BlockHash>, extra_key: u64, tokens: &[u32]) -> BlockHash {
        let mut buf = [0u8; 40 + 4 * 64];
        let parent = parent.unwrap_or(&BlockHash::ROOT);
        let mut h = blake3::Hasher::new();
        buf[..32].copy_from_slice(&parent.0);
        buf[32..40].copy_from_slice(&extra_key.to_le_bytes());
        let mut at = 40;
        for chunk in tokens.chunks(64) {
            for &t in chunk {
                buf[at..at + 4].copy_from_slice(&t.to_le_bytes());
                at += 4;
            }
            h.update(&buf[..at]);
            at = 0;
        }
        if tokens.is_empty() {
            h.update(&buf[..40]);
        }
        BlockHash(*h.finalize().as_bytes())
    }

    /// Appends the hashes of every full block of `tokens` beyond the
    /// `out.len()` blocks already hashed (the chain continues from `out`'s last).
    ///
    /// ```
    /// use slabcache_core::blocks::BlockHash;
    /// let mut hashes = Vec::new();
    /// BlockHash::extend_chain(&mut hashes, 0, &[1, 2, 3, 4, 5], 2);
    /// assert_eq!(hashes.len(), 2); // the fifth token is a partial block
    /// ```
    pub fn extend_chain(
        out: &mut Vec<BlockHash>,
        extra_key: u64,
        tokens: &[u32],
        block_size: usize,
    ) {
        let full = tokens.len() / block_size;
        for i in out.len()..full {
            let parent = out.last().copied();
            let h = BlockHash::of_block(
                parent.as_ref(),
                extra_key,
                &tokens[i * block_size..(i + 1) * block_size],
            );
            out.push(h);
        }
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 8 bytes as a `u64` (already uniformly distributed: used as the hash-map key hash).
    #[inline]
    pub fn prefix_u64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({}..)", &self.to_hex()[..16])
    }
}

/// A `Hasher` for keys that are already uniformly distributed (block hashes)
/// or small integers (block and request ids, mixed with a multiply).
///
/// ```
/// use std::collections::HashMap;
/// use slabcache_core::blocks::block_hash::IdBuildHasher;
/// let mut m: HashMap<u64, u32, IdBuildHasher> = HashMap::default();
/// m.insert(7, 1);
/// assert_eq!(m[&7], 1);
/// ```
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Block hashes: take 8 bytes of the (uniform) digest.
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        // Integer ids: Fibonacci multiply spreads sequential ids over the table.
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    #[inline]
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64)
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64)
    }
}

/// `BuildHasher` of [`IdHasher`].
pub type IdBuildHasher = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_every_input() {
        let a = BlockHash::of_block(None, 0, &[1, 2, 3, 4]);
        assert_ne!(a, BlockHash::of_block(None, 0, &[1, 2, 3, 5]));
        assert_ne!(a, BlockHash::of_block(None, 1, &[1, 2, 3, 4]));
        let other_parent = BlockHash::of_block(None, 0, &[9, 9, 9, 9]);
        assert_ne!(
            BlockHash::of_block(Some(&a), 0, &[5, 6, 7, 8]),
            BlockHash::of_block(Some(&other_parent), 0, &[5, 6, 7, 8])
        );
    }

    #[test]
    fn stable_across_runs() {
        // Pinned value: the hash is part of the event-stream contract.
        let h = BlockHash::of_block(None, 0, &[0, 1, 2, 3]);
        let mut input = vec![0u8; 40];
        for t in 0u32..4 {
            input.extend_from_slice(&t.to_le_bytes());
        }
        assert_eq!(h.0, *blake3::hash(&input).as_bytes());
    }

    #[test]
    fn long_blocks_hash_like_one_buffer() {
        let tokens: Vec<u32> = (0..200).collect();
        let h = BlockHash::of_block(None, 3, &tokens);
        let mut input = vec![0u8; 32];
        input.extend_from_slice(&3u64.to_le_bytes());
        for t in &tokens {
            input.extend_from_slice(&t.to_le_bytes());
        }
        assert_eq!(h.0, *blake3::hash(&input).as_bytes());
    }

    #[test]
    fn extend_chain_is_incremental() {
        let tokens: Vec<u32> = (0..50).collect();
        let mut all = Vec::new();
        BlockHash::extend_chain(&mut all, 0, &tokens, 4);
        let mut inc = Vec::new();
        BlockHash::extend_chain(&mut inc, 0, &tokens[..10], 4);
        BlockHash::extend_chain(&mut inc, 0, &tokens[..31], 4);
        BlockHash::extend_chain(&mut inc, 0, &tokens, 4);
        assert_eq!(all, inc);
        assert_eq!(all.len(), 12);
    }
}
