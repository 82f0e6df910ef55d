//! Helpers shared by the integration tests (each test file that needs them
//! declares `mod common;`).

/// A small xorshift generator: reproducible per seed, no dependency, cheap
/// enough to call inside a stress loop.
pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
