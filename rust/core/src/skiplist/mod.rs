//! Concurrent B-skiplist: an ordered map whose nodes hold many sorted keys.
//!
//! After "Bridging Cache-Friendliness and Concurrency: A Locality-Optimized
//! In-Memory B-Skiplist". Each level is a linked list of nodes; a node holds
//! up to `B` sorted keys in one array (a search touches a few cache lines per
//! level instead of one pointer hop per key). A new key draws a height `h`;
//! it becomes a node boundary on levels `0..h` and an index key on level `h`,
//! so nodes are promoted as a whole, not key by key.
//!
//! ## Concurrency
//!
//! - **Readers never lock.** A node's contents are an immutable block behind
//!   an atomic pointer; a reader pins a `crossbeam-epoch` epoch, loads blocks
//!   and binary-searches them. Readers never block readers or writers, and
//!   never see a torn node.
//! - **Writers lock per node, top-down.** A writer finds its node lock-free,
//!   locks it, validates it (not unlinked, key still inside its fences:
//!   otherwise it moves right, B-link style), builds a new block and swaps it
//!   in. An insert of height `h > 0` locks the level-`h` node, then one node
//!   per level on the way down (each under its locked parent), splits them
//!   at the key bottom-up and publishes: a single top-down pass. An insert
//!   into a full node promotes the key one level more instead, so full nodes
//!   are split on the way down.
//!   A leaf write builds its new block from the lock-free snapshot first and
//!   holds the lock only to check that the leaf still has that block and swap
//!   it (falling back to the locked path if not). Node locks spin, then yield,
//!   before they park.
//! - **Memory** of replaced blocks and unlinked nodes is freed once no reader
//!   can hold it: retired blocks are batched per thread, handed to the epoch
//!   collector 64 at a time and then freed a few per write into a per-thread
//!   pool of block memory (see `reclaim.rs`).
//!
//! ## Deletion
//!
//! Deleting a key rewrites its leaf. A leaf left with at most `B / 8` keys
//! triggers a merge with its neighbour under the same parent when the pair
//! holds at most `B / 2` entries (and so on up the levels): nodes are merged
//! eagerly but lazily enough not to thrash, and a drained queue (pop_first
//! over and over) does not leave a trail of empty nodes. Index keys of deleted
//! keys stay as fences until their node is merged.
//!
//! ## Iteration
//!
//! Range iteration (both directions) copies a batch of entries out of a leaf
//! snapshot and re-seeks past the last key it returned for the next batch, so
//! an iterator holds no lock and no epoch between items, stays valid under any
//! concurrent writes, returns keys in strictly increasing (or decreasing)
//! order (each at most once), and returns every key present throughout.
//!
//! ```
//! use slabcache_core::skiplist::BSkipList;
//! let m: BSkipList<u64, &str> = BSkipList::new();
//! m.insert(3, "c");
//! m.insert(1, "a");
//! m.insert(2, "b");
//! assert_eq!(m.get(&2), Some("b"));
//! assert_eq!(m.range(2..).map(|(k, _)| k).collect::<Vec<_>>(), [2, 3]);
//! assert_eq!(m.pop_first(), Some((1, "a")));
//! assert_eq!(m.len(), 2);
//! ```

mod block;
mod bulk;
mod config;
mod counter;
mod height;
mod insert;
mod invariants;
mod iter;
mod key;
mod lookup;
mod node;
mod radix;
mod rank;
mod reclaim;
mod remove;
mod search;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use config::{
    Config, DefaultConfig, Fanout128, Fanout16, Fanout32, Fanout64, NodeLock, SpinParkLock,
};
pub use iter::{Range, RangeCursor};
pub use key::F64Key;
pub use lookup::Reader;
pub use rank::PositionIndex;
pub use reclaim::{reclaim_garbage, release_free_memory};

use block::Builder;
use config::MAX_LEVELS;
use counter::StripedCounter;
use node::{free_node_deep, Node};

/// A concurrent ordered map shared by many threads without an outer lock.
///
/// `K` needs `Clone` (node fences are copies of keys), `V` needs `Clone`
/// (reads return copies: a reader never holds a reference into a node that a
/// writer may retire). Use `Arc<T>` for large values.
///
/// ```
/// use std::sync::Arc;
/// use slabcache_core::skiplist::BSkipList;
/// let m = Arc::new(BSkipList::<u64, u64>::new());
/// let handles: Vec<_> = (0..4u64)
///     .map(|t| {
///         let m = Arc::clone(&m);
///         std::thread::spawn(move || {
///             for i in 0..1000 {
///                 m.insert(i * 4 + t, i);
///             }
///         })
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(m.len(), 4000);
/// assert_eq!(m.first(), Some((0, 0)));
/// assert_eq!(m.last(), Some((3999, 999)));
/// ```
pub struct BSkipList<K, V, C: Config = DefaultConfig> {
    /// The head (low fence = minus infinity) of each level; never unlinked.
    heads: [*mut Node<K, V, C>; MAX_LEVELS],
    /// The highest level any key reached (searches start there).
    top: AtomicUsize,
    len: StripedCounter,
    /// Made by [`BSkipList::with_in_place_values`]: [`BSkipList::set`]
    /// replaces a present key's value in its slot (every leaf write then
    /// locks before it reads the leaf; see `insert.rs`).
    in_place: bool,
    _p: PhantomData<(K, V)>,
}

/// A value whose whole state can be replaced through a shared reference, in
/// one atomic step: what lets [`BSkipList::set`] overwrite a present key's
/// value in its leaf slot instead of rewriting the leaf (copy-on-write).
///
/// Readers copy values out of leaves without a lock (`V::clone` through
/// `&V`), so `swap` must make every concurrent reader see the old state or the
/// new one, never a mix: typically the value is one atomic word (an
/// `AtomicUsize`/`AtomicPtr` inside). The map in turn guarantees that the
/// value `swap` returns is dropped only after every reader that could have
/// read it through the slot has finished (it is retired through the epoch
/// like a replaced block), so a `clone` that follows a pointer it loaded from
/// the word may rely on the pointee staying alive for the length of the call.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use slabcache_core::skiplist::{BSkipList, SwapValue};
/// struct Counter(AtomicU64);
/// impl Clone for Counter {
///     fn clone(&self) -> Self { Counter(AtomicU64::new(self.0.load(Ordering::Acquire))) }
/// }
/// impl SwapValue for Counter {
///     fn swap(&self, new: Self) -> Self {
///         Counter(AtomicU64::new(self.0.swap(new.0.into_inner(), Ordering::AcqRel)))
///     }
/// }
/// let m = BSkipList::<u32, Counter>::with_in_place_values();
/// assert!(!m.set(1, Counter(AtomicU64::new(5))));
/// assert!(m.set(1, Counter(AtomicU64::new(6))));
/// assert_eq!(m.get_with(&1, |c| c.0.load(Ordering::Acquire)), Some(6));
/// ```
pub trait SwapValue: Clone {
    /// Stores `new` in `self` (atomically, as seen by concurrent readers of
    /// `&self`) and returns the state `self` held, as an owned value.
    fn swap(&self, new: Self) -> Self;
}

// SAFETY: the raw pointers are owned by the list; every shared access goes
// through atomics, per-node locks and the epoch collector, so the list is as
// thread-safe as `K` and `V` are.
unsafe impl<K: Send + Sync, V: Send + Sync, C: Config> Send for BSkipList<K, V, C> {}
// SAFETY: as above.
unsafe impl<K: Send + Sync, V: Send + Sync, C: Config> Sync for BSkipList<K, V, C> {}

impl<K, V, C> Default for BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// An empty map.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<i64, i64>::new();
    /// assert!(m.is_empty());
    /// ```
    pub fn new() -> Self {
        assert!(
            C::B.is_power_of_two() && C::B >= 8,
            "Config::B must be a power of two >= 8"
        );
        let mut heads = [std::ptr::null_mut(); MAX_LEVELS];
        let leaf = Builder::<K, V, Node<K, V, C>>::new(std::ptr::null(), None, 0, 0).finish();
        heads[0] = Node::new(None, 0, leaf);
        for l in 1..MAX_LEVELS {
            let mut b = node::InnerBuilder::<K, V, C>::new(std::ptr::null(), None, 0, 1);
            b.push_item(heads[l - 1]);
            heads[l] = Node::new(None, l, b.finish());
        }
        BSkipList {
            heads,
            top: AtomicUsize::new(0),
            len: StripedCounter::new(),
            in_place: false,
            _p: PhantomData,
        }
    }

    /// An empty map whose [`set`](Self::set) replaces the value of a present
    /// key in place: under the leaf's lock, one [`SwapValue::swap`] of its
    /// slot, where every other write (and `set` on a map made by `new`)
    /// rewrites the leaf. Readers stay lock-free and see the old value or the
    /// new one; the old one is dropped once no reader can still be copying
    /// it. The cost: leaf writes on this map take the leaf's lock before they
    /// copy it (a swap does not change the leaf's block, so the lock-free
    /// snapshot check of [`insert`](Self::insert)'s fast path could not see
    /// it), which lengthens lock hold times when many threads write the
    /// same leaves.
    ///
    /// See [`SwapValue`] for an example.
    pub fn with_in_place_values() -> Self
    where
        V: SwapValue,
    {
        let mut m = Self::new();
        m.in_place = true;
        m
    }

    /// Number of entries (exact when no write is in flight).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<i64, i64>::new();
    /// m.insert(1, 1);
    /// assert_eq!(m.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.len.sum()
    }

    /// Whether the map holds no entry.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<i64, i64>::new();
    /// assert!(m.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.first_key().is_none()
    }

    #[inline]
    pub(crate) fn top_level(&self) -> usize {
        self.top.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn raise_top(&self, h: usize) {
        if self.top.load(Ordering::Relaxed) < h {
            self.top.fetch_max(h, Ordering::AcqRel);
        }
    }

    /// Number of levels in use and nodes per level, from level 0 up (a
    /// diagnostic for tests and benchmarks; walks the whole list).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<i64, i64>::new();
    /// for i in 0..1000 { m.insert(i, i); }
    /// let nodes = m.nodes_per_level();
    /// assert!(nodes[0] > 1 && nodes.len() >= 2);
    /// ```
    pub fn nodes_per_level(&self) -> Vec<usize> {
        let guard = &crossbeam_epoch::pin();
        (0..=self.top_level())
            .map(|l| {
                let mut n = 0;
                let mut node: *const Node<K, V, C> = self.heads[l];
                while !node.is_null() {
                    n += 1;
                    // SAFETY: nodes reachable from a head stay allocated while pinned.
                    node = unsafe { (*node).block(guard).next };
                }
                n
            })
            .collect()
    }
}

impl<K, V, C: Config> Drop for BSkipList<K, V, C> {
    fn drop(&mut self) {
        for &head in self.heads.iter() {
            let mut node = head;
            while !node.is_null() {
                // SAFETY: `&mut self`: no other thread uses the list. Each
                // linked node is freed once; unlinked ones were retired already.
                unsafe {
                    let next = (*(*node).block_ptr()).next as *mut Node<K, V, C>;
                    free_node_deep(node);
                    node = next;
                }
            }
        }
    }
}
