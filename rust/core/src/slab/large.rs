//! Huge allocations (above the medium range, or aligned beyond a page):
//! each gets one mapping of its own (no guard page, so one `vm.max_map_count`
//! entry per block), mapped with commit accounting so an absurd size fails
//! like it does for glibc, and resized with `mremap` (no copy).
//!
//! Every live mapping is recorded in an open-addressing table that itself
//! lives in its own mapping (no heap use, so this works inside `malloc`).
//! Freed entries stay as tombstones, so a second free of the same address is
//! reported as a double free rather than as an unknown pointer. A few freed
//! mappings are kept for reuse, so steady traffic of, say, 64 KiB buffers
//! does not pay an `mmap`/`munmap` pair per allocation.

use super::os;

const EMPTY: u8 = 0;
const LIVE: u8 = 1;
const FREED: u8 = 2;
const CACHE_SLOTS: usize = 64;

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    addr: usize,
    state: u8,
    /// Bytes usable by the caller (page multiple).
    usable: usize,
    /// Bytes the caller asked for.
    requested: usize,
    /// Start and length of the whole mapping.
    map_base: usize,
    map_len: usize,
}

/// A mapping not (or no longer) in the table: freshly made, or freed and
/// kept for reuse (still mapped).
#[derive(Clone, Copy)]
pub struct Cached {
    pub addr: usize,
    pub usable: usize,
    pub map_base: usize,
    pub map_len: usize,
}

/// What a large allocation hands back.
#[cfg(test)]
pub struct LargeBlock {
    pub addr: usize,
    /// True when the memory comes straight from the OS (already zero).
    pub fresh: bool,
}

/// Outcome of looking an address up.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Live: usable bytes and requested bytes.
    Live { usable: usize, requested: usize },
    /// Was live once, already freed.
    Freed,
    /// Never handed out by this table.
    Unknown,
}

/// The table of large mappings (callers wrap it in a lock).
pub struct LargeTable {
    entries: *mut Entry,
    cap: usize,
    live: usize,
    used: usize,
    live_usable: usize,
    live_mapped: usize,
    cache: [Option<Cached>; CACHE_SLOTS],
    cached_bytes: usize,
    cache_limit: usize,
}

// SAFETY: the table owns its mapping; callers serialise access with a lock.
unsafe impl Send for LargeTable {}

fn hash(addr: usize, cap: usize) -> usize {
    ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 7 & (cap - 1)
}

fn map_table(cap: usize) -> Option<*mut Entry> {
    let bytes = (cap * std::mem::size_of::<Entry>()).next_multiple_of(os::page_size());
    let p = os::reserve(bytes)?;
    // SAFETY: committing the whole reservation just made; anonymous memory
    // reads as zeros, i.e. every entry is EMPTY.
    if unsafe { os::commit(p.as_ptr(), bytes) } {
        Some(p.as_ptr().cast())
    } else {
        // SAFETY: releasing the reservation just made.
        unsafe { os::unmap(p.as_ptr(), bytes) };
        None
    }
}

fn unmap_table(entries: *mut Entry, cap: usize) {
    let bytes = (cap * std::mem::size_of::<Entry>()).next_multiple_of(os::page_size());
    // SAFETY: `entries` was mapped by `map_table(cap)` and is no longer used.
    unsafe { os::unmap(entries.cast(), bytes) };
}

impl LargeTable {
    /// An empty table keeping up to `cache_limit` bytes of freed mappings.
    pub const fn new(cache_limit: usize) -> LargeTable {
        LargeTable {
            entries: std::ptr::null_mut(),
            cap: 0,
            live: 0,
            used: 0,
            live_usable: 0,
            live_mapped: 0,
            cache: [None; CACHE_SLOTS],
            cached_bytes: 0,
            cache_limit,
        }
    }

    fn slots(&mut self) -> &mut [Entry] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: `entries` points at `cap` initialised entries owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.entries, self.cap) }
    }

    fn find(&mut self, addr: usize) -> Option<usize> {
        if self.cap == 0 {
            return None;
        }
        let cap = self.cap;
        let mut i = hash(addr, cap);
        let slots = self.slots();
        loop {
            let e = &slots[i];
            if e.state == EMPTY {
                return None;
            }
            if e.addr == addr {
                return Some(i);
            }
            i = (i + 1) & (cap - 1);
        }
    }

    fn grow(&mut self) -> bool {
        let new_cap = if self.cap == 0 {
            1024
        } else if self.live * 4 > self.cap {
            self.cap * 2
        } else {
            self.cap // only tombstones to purge
        };
        let Some(new) = map_table(new_cap) else {
            return false;
        };
        let (old, old_cap) = (self.entries, self.cap);
        self.entries = new;
        self.cap = new_cap;
        self.used = 0;
        if old_cap > 0 {
            // SAFETY: the old table is intact until unmapped below.
            let olds = unsafe { std::slice::from_raw_parts(old, old_cap) };
            for e in olds.iter().filter(|e| e.state == LIVE) {
                self.insert_entry(*e);
            }
            // Cached mappings keep their tombstones so their double frees stay detected.
            for c in self.cache.into_iter().flatten() {
                self.insert_entry(Entry {
                    addr: c.addr,
                    state: FREED,
                    usable: c.usable,
                    requested: 0,
                    map_base: c.map_base,
                    map_len: c.map_len,
                });
            }
            unmap_table(old, old_cap);
        }
        true
    }

    fn insert_entry(&mut self, e: Entry) {
        let cap = self.cap;
        let mut i = hash(e.addr, cap);
        let mut target = None;
        let slots = self.slots();
        loop {
            let cur = &slots[i];
            if cur.state == EMPTY {
                break;
            }
            if cur.addr == e.addr {
                target = Some(i);
                break;
            }
            if cur.state == FREED && target.is_none() {
                target = Some(i);
            }
            i = (i + 1) & (cap - 1);
        }
        let fresh_slot = target.is_none();
        let i = target.unwrap_or(i);
        slots[i] = e;
        if fresh_slot {
            self.used += 1;
        }
    }

    /// Maps `size` bytes aligned to `align` (a power of two), or reuses a
    /// cached mapping, in one call (the heap uses the steps below so the
    /// `mmap` happens outside its lock). `None` when the OS refuses.
    #[cfg(test)]
    pub fn alloc(&mut self, size: usize, align: usize) -> Option<LargeBlock> {
        let (c, fresh) = match self.take_cached(size, align) {
            Some(c) => (c, false),
            None => (Self::map_fresh(size, align)?, true),
        };
        if !self.insert_live(c, size) {
            // SAFETY: the mapping was just made or taken from the cache, and is no one's.
            unsafe { os::unmap(c.map_base as *mut u8, c.map_len) };
            return None;
        }
        Some(LargeBlock {
            addr: c.addr,
            fresh,
        })
    }

    /// A cached mapping for `size` bytes at `align` (best fit, at most twice
    /// the size: the excess is address space, only touched pages are resident).
    pub fn take_cached(&mut self, size: usize, align: usize) -> Option<Cached> {
        let page = os::page_size();
        let usable = size.max(1).checked_next_multiple_of(page)?;
        if align > page {
            return None;
        }
        let mut hit: Option<(usize, usize)> = None;
        for (i, c) in self.cache.iter().enumerate() {
            if let Some(c) = c {
                let fits = c.usable >= usable && c.usable - usable <= usable;
                if fits && hit.is_none_or(|(_, u)| c.usable < u) {
                    hit = Some((i, c.usable));
                }
            }
        }
        let (i, _) = hit?;
        let c = self.cache[i].take().expect("found above");
        self.cached_bytes -= c.usable;
        Some(c)
    }

    /// A fresh mapping for `size` bytes at `align` (no table change; call
    /// without holding the table's lock).
    pub fn map_fresh(size: usize, align: usize) -> Option<Cached> {
        let usable = size.max(1).checked_next_multiple_of(os::page_size())?;
        Self::map(usable, align)
    }

    /// Records mapping `c` as live, `size` bytes requested. False: the
    /// table could not grow (the caller unmaps `c`).
    pub fn insert_live(&mut self, c: Cached, size: usize) -> bool {
        if (self.used + 1) * 2 > self.cap && !self.grow() {
            return false;
        }
        self.insert_entry(Entry {
            addr: c.addr,
            state: LIVE,
            usable: c.usable,
            requested: size,
            map_base: c.map_base,
            map_len: c.map_len,
        });
        self.live += 1;
        self.live_usable += c.usable;
        self.live_mapped += c.map_len;
        true
    }

    fn map(usable: usize, align: usize) -> Option<Cached> {
        let page = os::page_size();
        if align <= page {
            let addr = os::map(usable)?.as_ptr() as usize;
            return Some(Cached {
                addr,
                usable,
                map_base: addr,
                map_len: usable,
            });
        }
        let total = usable.checked_add(align)?;
        let raw = os::map(total)?.as_ptr() as usize;
        let addr = raw.next_multiple_of(align);
        let end = addr + usable;
        // SAFETY: trimming the head and tail of the mapping just made.
        unsafe {
            if addr > raw {
                os::unmap(raw as *mut u8, addr - raw);
            }
            if raw + total > end {
                os::unmap(end as *mut u8, raw + total - end);
            }
        }
        Some(Cached {
            addr,
            usable,
            map_base: addr,
            map_len: usable,
        })
    }

    /// Resizes live mapping `addr` to hold `size` bytes with `mremap` (it may
    /// move; the old address becomes a tombstone). Returns the new address,
    /// or `None` (nothing changed).
    pub fn remap(&mut self, addr: usize, size: usize) -> Option<usize> {
        let page = os::page_size();
        let usable = size.max(1).checked_next_multiple_of(page)?;
        if let Some(i) = self.find(addr) {
            let e = self.slots()[i];
            if e.state == LIVE && usable <= e.usable && usable * 2 > e.usable {
                // Shrinking by less than half: keep the mapping as it is.
                self.slots()[i].requested = size;
                return Some(addr);
            }
        }
        // Growth gets a quarter of headroom, so a buffer grown in small
        // steps costs O(log n) `mremap` calls, not one per page.
        let grown = usable.checked_add(usable / 4)?.next_multiple_of(page);
        let usable = match self.find(addr) {
            Some(i) if self.slots()[i].usable < usable => grown,
            _ => usable,
        };
        if (self.used + 1) * 2 > self.cap && !self.grow() {
            return None;
        }
        let i = self.find(addr)?;
        let e = self.slots()[i];
        if e.state != LIVE || e.map_base != e.addr {
            return None;
        }
        // SAFETY: `[map_base, map_base+map_len)` is a whole live mapping of ours.
        let p = unsafe { os::remap(e.map_base as *mut u8, e.map_len, usable) }?.as_ptr() as usize;
        self.live_usable = self.live_usable - e.usable + usable;
        self.live_mapped = self.live_mapped - e.map_len + usable;
        let moved = Entry {
            addr: p,
            state: LIVE,
            usable,
            requested: size,
            map_base: p,
            map_len: usable,
        };
        if p == addr {
            self.slots()[i] = moved;
        } else {
            self.slots()[i].state = FREED;
            self.insert_entry(moved);
        }
        Some(p)
    }

    /// State of `addr` in the table.
    pub fn lookup(&mut self, addr: usize) -> Lookup {
        match self.find(addr) {
            Some(i) => {
                let e = self.slots()[i];
                if e.state == LIVE {
                    Lookup::Live {
                        usable: e.usable,
                        requested: e.requested,
                    }
                } else {
                    Lookup::Freed
                }
            }
            None => Lookup::Unknown,
        }
    }

    /// Frees live mapping `addr` (checked with [`LargeTable::lookup`] first).
    /// Returns its requested size, and the range the caller must unmap
    /// (after dropping the table's lock) when it is not cached.
    pub fn free(&mut self, addr: usize) -> Option<(usize, Option<(usize, usize)>)> {
        let i = self.find(addr)?;
        let e = self.slots()[i];
        if e.state != LIVE {
            return None;
        }
        self.slots()[i].state = FREED;
        self.live -= 1;
        self.live_usable -= e.usable;
        self.live_mapped -= e.map_len;
        let c = Cached {
            addr: e.addr,
            usable: e.usable,
            map_base: e.map_base,
            map_len: e.map_len,
        };
        let fits = self.cached_bytes + e.usable <= self.cache_limit && e.map_base == e.addr;
        let slot = self.cache.iter().position(|c| c.is_none());
        match (fits, slot) {
            (true, Some(s)) => {
                self.cache[s] = Some(c);
                self.cached_bytes += e.usable;
                Some((e.requested, None))
            }
            _ => Some((e.requested, Some((e.map_base, e.map_len)))),
        }
    }

    /// Live mappings, their usable bytes, and all mapped bytes (live and cached).
    pub fn totals(&self) -> (usize, usize, usize) {
        (
            self.live,
            self.live_usable,
            self.live_mapped + self.cached_bytes,
        )
    }
}

impl Drop for LargeTable {
    fn drop(&mut self) {
        for e in self.slots().iter().filter(|e| e.state == LIVE) {
            // SAFETY: the table owns every live mapping; the allocator is going away.
            unsafe { os::unmap(e.map_base as *mut u8, e.map_len) };
        }
        for c in self.cache.iter().flatten() {
            // SAFETY: cached mappings are owned by the table.
            unsafe { os::unmap(c.map_base as *mut u8, c.map_len) };
        }
        if self.cap > 0 {
            unmap_table(self.entries, self.cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_and_double_free_are_told_apart() {
        let mut t = LargeTable::new(0);
        let b = t.alloc(100_000, 16).unwrap();
        assert!(b.fresh);
        assert_eq!(b.addr % os::page_size(), 0);
        assert!(matches!(
            t.lookup(b.addr),
            Lookup::Live {
                requested: 100_000,
                ..
            }
        ));
        let (req, unmap) = t.free(b.addr).unwrap();
        assert_eq!(req, 100_000);
        let (base, len) = unmap.unwrap();
        // SAFETY: the freed mapping, no longer in use.
        unsafe { os::unmap(base as *mut u8, len) };
        assert_eq!(t.lookup(b.addr), Lookup::Freed);
        assert_eq!(t.free(b.addr), None);
        assert_eq!(t.lookup(b.addr + 16), Lookup::Unknown);
    }

    #[test]
    fn over_aligned_mappings_are_aligned() {
        let mut t = LargeTable::new(1 << 20);
        let b = t.alloc(10, 1 << 16).unwrap();
        assert_eq!(b.addr % (1 << 16), 0);
        t.free(b.addr);
    }

    #[test]
    fn many_entries_survive_growth() {
        let mut t = LargeTable::new(1 << 20);
        let blocks: Vec<_> = (0..2000)
            .map(|_| t.alloc(40_000, 16).unwrap().addr)
            .collect();
        for &a in &blocks {
            assert!(matches!(t.lookup(a), Lookup::Live { .. }));
        }
        for &a in &blocks {
            assert!(t.free(a).is_some());
        }
        assert_eq!(t.totals().0, 0);
    }
}
