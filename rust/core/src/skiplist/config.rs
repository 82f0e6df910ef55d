//! Compile-time knobs of a [`BSkipList`](super::BSkipList): node capacity and
//! the writer lock type.
//!
//! The default, [`DefaultConfig`], uses `B = 64`. A leaf's keys are one
//! contiguous array, so a point lookup binary-searches up to `B` keys in
//! place; with 8-byte keys 64 keys are 512 bytes (8 cache lines, of which a
//! search touches about 4), and nodes hold 32 keys on average. We measured
//! `B = 16, 32, 64, 128` with `skiplist_ycsb --fanouts 16,32,64,128` (see
//! `bench/RESULTS.md`): 64 was fastest for inserts and lookups in every run
//! (+20-25% over 32, about one level fewer for a million keys, and a level is
//! two dependent cache misses: node, then block). 16 and 32 pay for the extra
//! levels; 128 copies twice the bytes on every copy-on-write insert and its
//! binary search touches more lines than the level it saves is worth.
//!
//! The lock type is a parameter only so that the model-checking test
//! (`tests/skiplist_shuttle.rs`) can swap in `shuttle`'s mutex and explore
//! thread interleavings of the lock protocol; [`Config::interleave`] marks the
//! points (block publications and loads) where the model may switch threads.

/// A writer-side lock guarding one node. Readers never take it.
///
/// ```
/// use slabcache_core::skiplist::NodeLock;
/// let lock = parking_lot::Mutex::new(());
/// let _guard = NodeLock::lock(&lock);
/// ```
pub trait NodeLock: Default + Send + Sync + 'static {
    /// Held while the lock is held.
    type Guard<'a>
    where
        Self: 'a;
    /// Blocks until the lock is held.
    fn lock(&self) -> Self::Guard<'_>;
}

impl NodeLock for parking_lot::Mutex<()> {
    type Guard<'a> = parking_lot::MutexGuard<'a, ()>;
    #[inline]
    fn lock(&self) -> Self::Guard<'_> {
        parking_lot::Mutex::lock(self)
    }
}

/// The node lock of [`DefaultConfig`]: a `parking_lot` mutex taken by
/// spinning first (on a read of the lock word, with exponential backoff, then
/// yielding the CPU), parking only after 200 yields.
///
/// Writers hold a node lock for a few hundred nanoseconds (one block
/// publication, or a split), so a waiter almost always gets the lock by
/// spinning. Parking instead costs a futex sleep and wake-up (tens of
/// microseconds on a VM), and `parking_lot` lets running threads barge past
/// parked ones for up to 0.5 ms: on 16 cores loading keys into a small map,
/// plain `Mutex::lock` gave an insert p99.9 of 0.5-1.4 ms.
///
/// ```
/// use slabcache_core::skiplist::{NodeLock, SpinParkLock};
/// let lock = SpinParkLock::default();
/// drop(lock.lock());
/// let _again = lock.lock();
/// ```
#[derive(Default)]
pub struct SpinParkLock(parking_lot::Mutex<()>);

/// Spin rounds (each up to 64 pause instructions) before yielding.
const SPINS: u32 = 10;
/// Yields before parking.
const YIELDS: u32 = 200;

impl NodeLock for SpinParkLock {
    type Guard<'a> = parking_lot::MutexGuard<'a, ()>;
    #[inline]
    fn lock(&self) -> Self::Guard<'_> {
        if let Some(g) = self.0.try_lock() {
            return g;
        }
        self.lock_slow()
    }
}

impl SpinParkLock {
    #[cold]
    fn lock_slow(&self) -> parking_lot::MutexGuard<'_, ()> {
        for round in 0..SPINS + YIELDS {
            if round < SPINS {
                for _ in 0..(1u32 << round.min(6)) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            // Test before the atomic read-modify-write: waiters share the
            // line read-only until the holder lets go.
            if !self.0.is_locked() {
                if let Some(g) = self.0.try_lock() {
                    return g;
                }
            }
        }
        self.0.lock()
    }
}

/// The knobs of a B-skiplist.
///
/// ```
/// use slabcache_core::skiplist::{BSkipList, Config};
/// struct Small;
/// impl Config for Small {
///     const B: usize = 16;
///     type Lock = parking_lot::Mutex<()>;
/// }
/// let m: BSkipList<u64, u64, Small> = BSkipList::new();
/// m.insert(1, 2);
/// assert_eq!(m.get(&1), Some(2));
/// ```
pub trait Config: Send + Sync + 'static {
    /// Most keys a node holds (a power of two, at least 8). Keys are promoted
    /// one level up with probability `2 / B`, so nodes hold `B / 2` keys on
    /// average; an insert into a full node promotes the new key instead, which
    /// splits the node (see `insert.rs`).
    const B: usize;
    /// The per-node writer lock.
    type Lock: NodeLock;
    /// A scheduling point for model checkers; a no-op in real builds.
    #[inline(always)]
    fn interleave() {}
}

/// `B = 64`, [`SpinParkLock`] node locks: the configuration everyone uses.
pub struct DefaultConfig;

impl Config for DefaultConfig {
    const B: usize = 64;
    type Lock = SpinParkLock;
}

/// `B = 32`, for the fan-out comparison in the benchmarks.
pub struct Fanout32;

impl Config for Fanout32 {
    const B: usize = 32;
    type Lock = parking_lot::Mutex<()>;
}

/// `B = 16`, for the fan-out comparison in the benchmarks.
pub struct Fanout16;

impl Config for Fanout16 {
    const B: usize = 16;
    type Lock = parking_lot::Mutex<()>;
}

/// `B = 64`, for the fan-out comparison in the benchmarks (with
/// [`DefaultConfig`]'s lock).
pub struct Fanout64;

impl Config for Fanout64 {
    const B: usize = 64;
    type Lock = SpinParkLock;
}

/// `B = 128`, for the fan-out comparison in the benchmarks.
pub struct Fanout128;

impl Config for Fanout128 {
    const B: usize = 128;
    type Lock = parking_lot::Mutex<()>;
}

/// Height limit: level `MAX_LEVELS - 1` is the top. With `B / 2 = 32` keys
/// per node on average, 12 levels index 32^12 keys (16^12 with `B = 32`).
pub(crate) const MAX_LEVELS: usize = 12;
