//! Random heights for new keys: a key reaches level `l` with probability
//! `(2 / B)^l`, so each level has `B / 2` times fewer node boundaries than the
//! one below.

use std::cell::Cell;

use super::config::MAX_LEVELS;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // Distinct per thread: the address of a thread-local plus a counter.
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let c = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let local = 0u8;
    (c ^ (&local as *const u8 as u64)).max(1)
}

/// A fast xorshift64* step on the thread's generator.
#[inline]
pub(crate) fn next_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random height in `0..MAX_LEVELS` for fan-out `b` (keys per node, power of two).
#[inline]
pub(crate) fn random_height(b: usize) -> usize {
    let fanout = (b / 2).max(2);
    let bits = fanout.trailing_zeros();
    let mask = (fanout - 1) as u64;
    let mut r = next_u64();
    let mut h = 0;
    while h < MAX_LEVELS - 1 && r & mask == 0 {
        h += 1;
        r >>= bits;
        if r == 0 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_are_geometric() {
        let n = 200_000;
        let mut counts = [0usize; MAX_LEVELS];
        for _ in 0..n {
            counts[random_height(32)] += 1;
        }
        // P(h >= 1) = 1/16.
        let promoted = n - counts[0];
        assert!(
            promoted > n / 20 && promoted < n / 13,
            "promoted {promoted} of {n}"
        );
        assert!(counts[1] > counts[2] * 8);
    }
}
