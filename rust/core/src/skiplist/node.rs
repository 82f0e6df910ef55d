//! A node: a stable identity (low fence, level, writer lock, dead flag) and an
//! atomically swapped pointer to its current immutable [`block`](super::block).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crossbeam_epoch::Guard;

use super::block::{Block, Builder, Header};
use super::config::{Config, NodeLock};
use super::reclaim::{self, Retired};

/// A pointer to a node, stored in inner blocks.
pub(crate) type NodePtr<K, V, C> = *const Node<K, V, C>;
/// A node's writer-lock guard.
pub(crate) type LockGuard<'a, C> = <<C as Config>::Lock as NodeLock>::Guard<'a>;
/// A locked node.
pub(crate) type Locked<'a, K, V, C> = (&'a Node<K, V, C>, LockGuard<'a, C>);
/// A locked node and the block it had when locked.
pub(crate) type LockedBlock<'a, K, V, C> = (&'a Node<K, V, C>, LockGuard<'a, C>, &'a Head<K, V, C>);
/// The header of a node's block.
pub(crate) type Head<K, V, C> = Header<K, Node<K, V, C>>;
/// A leaf block: keys and values.
pub(crate) type Leaf<K, V, C> = Block<K, V, Node<K, V, C>>;
/// An inner block: `n` keys and `n + 1` children; child `i + 1` starts at key `i`,
/// child 0 at the node's own low fence; then one hint per child (see [`hints`]).
pub(crate) type Inner<K, V, C> = Block<K, NodePtr<K, V, C>, Node<K, V, C>, true>;
/// Builds an [`Inner`] block (its hints start empty).
pub(crate) type InnerBuilder<K, V, C> = Builder<K, NodePtr<K, V, C>, Node<K, V, C>, true>;

pub(crate) struct Node<K, V, C: Config> {
    /// The current block. Swapped (Release) under `lock`; read (Acquire) by anyone.
    data: AtomicPtr<Head<K, V, C>>,
    /// Smallest key this node may hold (`None`: minus infinity, a level's head).
    /// Never changes, so the fence outlives deletion of the key itself.
    pub low: Option<K>,
    /// 0 for leaves.
    pub level: u8,
    /// Set (under `lock`) when the node was merged into its left neighbour;
    /// a writer that locks a dead node starts over.
    dead: AtomicBool,
    pub lock: C::Lock,
    _v: PhantomData<V>,
}

impl<K, V, C: Config> Node<K, V, C> {
    pub fn new(low: Option<K>, level: usize, data: *mut Head<K, V, C>) -> *mut Self {
        Box::into_raw(Box::new(Node {
            data: AtomicPtr::new(data),
            low,
            level: level as u8,
            dead: AtomicBool::new(false),
            lock: C::Lock::default(),
            _v: PhantomData,
        }))
    }

    /// The current block. The guard keeps it alive.
    #[inline]
    pub fn block<'g>(&self, _guard: &'g Guard) -> &'g Head<K, V, C> {
        C::interleave();
        // SAFETY: blocks are retired through the epoch collector only after
        // being replaced; `_guard` pins an epoch, so this one outlives 'g.
        unsafe { &*self.data.load(Ordering::Acquire) }
    }

    #[inline]
    pub fn block_ptr(&self) -> *mut Head<K, V, C> {
        self.data.load(Ordering::Acquire)
    }

    /// Publishes `new` (caller holds `lock`) and returns the old block.
    #[inline]
    pub fn publish(&self, new: *mut Head<K, V, C>) -> *mut Head<K, V, C> {
        C::interleave();
        self.data.swap(new, Ordering::AcqRel)
    }

    #[inline]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    #[inline]
    pub fn mark_dead(&self) {
        self.dead.store(true, Ordering::Release)
    }

    #[inline]
    pub fn lock(&self) -> <C::Lock as NodeLock>::Guard<'_> {
        C::interleave();
        self.lock.lock()
    }
}

/// Starts loading every cache line of `s` (a hint: no effect on results).
#[inline(always)]
pub(crate) fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = s.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(s);
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults and reads nothing the program
            // sees; the address lies inside the live slice `s` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Keys of a block.
#[inline]
pub(crate) fn keys<K, V, C: Config>(h: &Head<K, V, C>) -> &[K] {
    // SAFETY: `h` is a live block (the reference proves it) of either type;
    // the key array sits at the same place in both.
    unsafe { Leaf::<K, V, C>::keys(h) }
}

/// Values of a leaf block.
#[inline]
pub(crate) fn vals<K, V, C: Config>(h: &Head<K, V, C>) -> &[V] {
    // SAFETY: callers only ask for values of level-0 blocks, which are leaves.
    unsafe { Leaf::<K, V, C>::items(h) }
}

/// Children of an inner block.
#[inline]
pub(crate) fn kids<K, V, C: Config>(h: &Head<K, V, C>) -> &[NodePtr<K, V, C>] {
    // SAFETY: callers only ask for children of level >= 1 blocks, which are inner.
    unsafe { Inner::<K, V, C>::items(h) }
}

/// The child hints of an inner block, one per child: child `i`'s block
/// address (low 48 bits) and how many cache lines that block spans (high 16
/// bits), as some descent last saw it, or 0. A descent prefetches the hinted
/// lines as it steps to the child, so the child's block loads while its node
/// does: the block address otherwise comes from the node, one more dependent
/// miss per level. A hint is only ever an address to prefetch (which cannot
/// fault, whatever the address) and is never dereferenced: the block a
/// descent reads always comes from the node. Writers do not refresh hints when
/// they publish (a rebuilt inner block copies its children's hints over); a
/// descent that finds one stale (the child published a new block since)
/// stores the current one (see [`Hint`]). Measured with
/// `bench/skiplist_single_calls.py` on 1M int keys (bench/RESULTS.md, issue
/// 10 session 16): `m[k]` with str values 1.08-1.21x -> 1.34-1.45x
/// SortedDict's speed, `k in m` about 1.75x -> 2.2x.
#[inline]
pub(crate) fn hints<K, V, C: Config>(h: &Head<K, V, C>) -> &[AtomicUsize] {
    // SAFETY: callers only ask for hints of level >= 1 blocks, which are inner.
    unsafe { Inner::<K, V, C>::hints(h) }
}

/// The address bits of a hint word.
pub(crate) const HINT_ADDR: usize = (1 << 48) - 1;

/// The hint a descent took on its way to a child, checked against the block
/// the child's node gives.
pub(crate) struct Hint<'g> {
    slot: &'g AtomicUsize,
    word: usize,
}

impl<'g> Hint<'g> {
    /// Reads the hint in `slot` and prefetches the lines it names.
    #[inline(always)]
    pub(crate) fn take(slot: &'g AtomicUsize) -> Self {
        let word = slot.load(Ordering::Relaxed);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let start = (word & HINT_ADDR) as *const i8;
            for i in 0..word >> 48 {
                // SAFETY: a prefetch never faults and reads nothing the program
                // sees, so a stale hint (a block since freed) is harmless.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(i * 64)) };
            }
        }
        Hint { slot, word }
    }

    /// Whether the hint named `blk` (a block at `level`); if it did not,
    /// stores one that does for the next descent (readers' descents only:
    /// writers take no hints, see `BSkipList::find_to_write`).
    #[inline(always)]
    pub(crate) fn check<K, V, C: Config>(self, blk: &Head<K, V, C>, level: usize) -> bool {
        let addr = blk as *const Head<K, V, C> as usize;
        if self.word & HINT_ADDR == addr & HINT_ADDR {
            return true;
        }
        self.fix(blk, level);
        false
    }

    #[cold]
    #[inline(never)]
    fn fix<K, V, C: Config>(&self, blk: &Head<K, V, C>, level: usize) {
        let addr = blk as *const Head<K, V, C> as usize;
        if addr & !HINT_ADDR != 0 {
            // An address above 48 bits has no room for the line count: no hint.
            return;
        }
        // SAFETY: `blk` is a live block of the kind its level says.
        let size = unsafe {
            if level == 0 {
                Leaf::<K, V, C>::alloc_size(blk)
            } else {
                Inner::<K, V, C>::alloc_size(blk)
            }
        };
        let lines = ((addr & 63) + size).div_ceil(64).min(0xFFFF);
        // Relaxed: a hint orders nothing; a lost race leaves another valid
        // guess. The slot may sit in a block a writer has just retired: that
        // memory is not freed while this thread's epoch pin holds.
        self.slot.store(addr | lines << 48, Ordering::Relaxed);
    }
}

/// Frees a retired block after the current epoch, dropping only the named
/// key/item/fence (the entries a write removed).
///
/// # Safety
/// `old` was just replaced in its node (or its node unlinked) and its other
/// entries were moved into a newer block.
pub(crate) unsafe fn retire_block<K, V, C: Config>(
    guard: &Guard,
    old: *mut Head<K, V, C>,
    leaf: bool,
    drop_key: Option<usize>,
    drop_item: Option<usize>,
    drop_high: bool,
) {
    // The block's size is read now, while its header is hot: the deferred
    // free does not touch the (by then cold) block at all for plain-data
    // entries. Entry indices fit in 32 bits (`nkeys`/`nitems` are `u32`).
    // SAFETY: the caller hands over `old`, a live block of the kind `leaf` says.
    let size = unsafe {
        if leaf {
            Leaf::<K, V, C>::alloc_size(old)
        } else {
            Inner::<K, V, C>::alloc_size(old)
        }
    };
    debug_assert!(size < 1 << (FLAG_BITS - 1));
    let flags = size | usize::from(leaf) << FLAG_BITS | usize::from(drop_high) << (FLAG_BITS - 1);
    let idx = |i: Option<usize>| i.map_or(0u64, |i| i as u64 + 1);
    let drops = idx(drop_key) | idx(drop_item) << 32;
    // SAFETY: the caller has unlinked `old` from every published node, so once
    // the epoch ends no reader holds it and this shallow free is its only
    // release (the entries it keeps were moved into the newer block).
    let r = unsafe {
        Retired::new(
            free_block::<K, V, C>,
            MaybeUninit::new(old as usize),
            drops,
            flags,
        )
    };
    reclaim::retire(guard, r);
}

/// The top bit of `retire_block`'s flag word (leaf), the one below (drop the fence).
const FLAG_BITS: u32 = usize::BITS - 1;

/// Releases a block retired by [`retire_block`].
///
/// # Safety
/// The arguments are those `retire_block` packed; called once, after the epoch.
unsafe fn free_block<K, V, C: Config>(addr: MaybeUninit<usize>, drops: u64, flags: usize) {
    // SAFETY: `retire_block` stored an initialised address.
    let old = unsafe { addr.assume_init() } as *mut Head<K, V, C>;
    let size = flags & ((1 << (FLAG_BITS - 1)) - 1);
    let at = |w: u64| (w != 0).then(|| (w - 1) as usize);
    let drop_key = at(drops & 0xFFFF_FFFF);
    let drop_item = at(drops >> 32);
    let drop_high = flags >> (FLAG_BITS - 1) & 1 == 1;
    // SAFETY: forwarded from the caller: `old` is a retired block of the
    // recorded kind and size, freed once.
    unsafe {
        if flags >> FLAG_BITS == 1 {
            Leaf::<K, V, C>::free_shallow_sized(old, size, drop_key, drop_item, drop_high)
        } else {
            Inner::<K, V, C>::free_shallow_sized(old, size, drop_key, drop_item, drop_high)
        }
    }
}

/// Frees a retired leaf block after the current epoch, dropping the values
/// at `drop_items` (replaced by a batch merge) and nothing else.
///
/// # Safety
/// As for [`retire_block`].
pub(crate) unsafe fn retire_leaf_values<K, V, C: Config>(
    guard: &Guard,
    old: *mut Head<K, V, C>,
    drop_items: Vec<usize>,
) {
    let addr = old as usize;
    // SAFETY: as in `retire_block`; the values at `drop_items` were replaced in
    // the newer block, so this old block is their last owner and drops each once.
    unsafe {
        guard.defer_unchecked(move || {
            let old = addr as *mut Head<K, V, C>;
            let items = Leaf::<K, V, C>::items(old).as_ptr() as *mut V;
            for i in drop_items {
                std::ptr::drop_in_place(items.add(i));
            }
            Leaf::<K, V, C>::free_shallow(old, None, None, false)
        })
    };
}

/// Frees an unlinked node (and its last block, whose entries and fence moved
/// into its left neighbour)
/// after the current epoch.
///
/// # Safety
/// `node` is dead and no longer reachable from any block published from now on.
pub(crate) unsafe fn retire_node<K, V, C: Config>(guard: &Guard, node: *const Node<K, V, C>) {
    let addr = node as usize;
    // SAFETY: the caller guarantees `node` is dead and unreachable from blocks
    // published from now on; after the epoch no reader holds it, so the box
    // (made by `Box::into_raw`) and its last block are freed exactly once.
    unsafe {
        guard.defer_unchecked(move || {
            let node = Box::from_raw(addr as *mut Node<K, V, C>);
            let data = node.data.load(Ordering::Relaxed);
            if node.level == 0 {
                Leaf::<K, V, C>::free_shallow(data, None, None, false)
            } else {
                Inner::<K, V, C>::free_shallow(data, None, None, false)
            }
            drop(node);
        })
    };
}

/// Frees a node and everything its block owns (used by `Drop` of the list).
///
/// # Safety
/// No other reference to `node` or its block exists.
pub(crate) unsafe fn free_node_deep<K, V, C: Config>(node: *mut Node<K, V, C>) {
    // SAFETY: the caller holds the only reference to `node` (a `Box::into_raw`
    // pointer) and its block, so both are freed here exactly once.
    unsafe {
        let node = Box::from_raw(node);
        let data = node.data.load(Ordering::Relaxed);
        if node.level == 0 {
            Leaf::<K, V, C>::free_deep(data)
        } else {
            // Children are freed level by level by the caller; `*const` items need no drop.
            Inner::<K, V, C>::free_deep(data)
        }
    }
}
