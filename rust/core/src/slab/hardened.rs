//! The hardened profile's checks (`SlabConfig::hardened`,
//! `SLABCACHE_PROFILE=hardened` under `LD_PRELOAD`), after hardened_malloc's set:
//!
//! * **canary**: the last 8 bytes of every small slot hold `secret ^ addr`
//!   (requests are served from the class of `size + 8`), checked on free: an
//!   overflow into the slack is refused as a heap overflow;
//! * **write-after-free**: the first [`CHECKED_BYTES`] bytes and the canary
//!   word of a freed slot are zeroed, and checked to be still zero when it
//!   is handed out again (fatal if not). With `zero_on_free` the whole slot
//!   is wiped (no stale data left in it), at the cost of a `memset` of every
//!   freed slot; empty slabs are always released to the OS in this profile,
//!   so a recycled slab reads as zero;
//! * **quarantine**: a freed small object waits in a per-thread FIFO of
//!   [`QUARANTINE`] objects before it can be reused, so a double free within
//!   that window is caught even after other allocations;
//! * **zero-size allocations** come from an inaccessible (`PROT_NONE`) area:
//!   any read or write through them faults;
//! * freed medium pages are given back at once and freed huge blocks are
//!   unmapped (see `medium` / `large`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::os;

/// Bytes reserved at the end of each small slot for the canary.
pub const CANARY: usize = 8;
/// Bytes at the start of a reused slot checked for writes after free.
pub const CHECKED_BYTES: usize = 256;
/// Freed small objects a thread holds back before they can be reused.
pub const QUARANTINE: usize = 256;
/// Zero-size allocations that can be live at once (more fall back to 16-byte slots).
const ZERO_SLOTS: usize = 1 << 16;
const ZERO_WORDS: usize = ZERO_SLOTS / 64;
const ZERO_STRIDE: usize = 16;

/// A per-process secret for canaries (from the kernel's random source).
pub fn secret() -> u64 {
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `v`.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // Weak fallback: address-space layout randomisation and time.
        v = (&v as *const u64 as u64).rotate_left(29) ^ std::process::id() as u64;
    }
    v | 1
}

/// The canary of the object at `addr`.
#[inline]
pub fn canary(secret: u64, addr: usize) -> u64 {
    secret ^ (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Writes the canary at the end of slot `[addr, addr+slot)`.
///
/// # Safety
/// The slot must be a live object of ours, `slot >= CANARY` bytes.
#[inline]
pub unsafe fn put_canary(secret: u64, addr: usize, slot: usize) {
    // SAFETY: forwarded; unaligned write, the slot end is 16-aligned anyway.
    unsafe { ((addr + slot - CANARY) as *mut u64).write_unaligned(canary(secret, addr)) };
}

/// Whether the canary at the end of slot `[addr, addr+slot)` is intact.
///
/// # Safety
/// As [`put_canary`].
#[inline]
pub unsafe fn canary_ok(secret: u64, addr: usize, slot: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { ((addr + slot - CANARY) as *const u64).read_unaligned() == canary(secret, addr) }
}

/// Whether `[addr, addr+len)` is all zero (`len` a multiple of 8).
///
/// # Safety
/// The range must be readable memory of ours.
pub unsafe fn is_zero(addr: usize, len: usize) -> bool {
    // SAFETY: forwarded; 16-aligned slots, so u64 reads are aligned.
    let words = unsafe { std::slice::from_raw_parts(addr as *const u64, len / 8) };
    words.iter().fold(0u64, |acc, &w| acc | w) == 0
}

/// Reports heap corruption found by a check and aborts (there is no one to
/// return an error to when `malloc` finds it).
#[cold]
pub fn fatal(what: &str, addr: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut len = 0;
    for part in [b"slabcache: ".as_slice(), what.as_bytes(), b" at 0x"] {
        let k = part.len().min(buf.len() - len);
        buf[len..len + k].copy_from_slice(&part[..k]);
        len += k;
    }
    for i in 0..16 {
        buf[len] = b"0123456789abcdef"[(addr >> ((15 - i) * 4)) & 0xf];
        len += 1;
    }
    buf[len] = b'\n';
    os::write_stderr(&buf[..len + 1]);
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Inaccessible area for zero-size allocations: unique addresses, 16 bytes
/// apart, whose memory faults on any access.
pub struct ZeroArea {
    base: usize,
    used: [AtomicU64; ZERO_WORDS],
    hint: AtomicUsize,
}

impl ZeroArea {
    /// Reserves the area (`None` when the OS refuses).
    pub fn new() -> Option<ZeroArea> {
        let base = os::reserve(ZERO_SLOTS * ZERO_STRIDE)?.as_ptr() as usize;
        Some(ZeroArea {
            base,
            used: [const { AtomicU64::new(0) }; ZERO_WORDS],
            hint: AtomicUsize::new(0),
        })
    }

    /// Whether `addr` lies in the area.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < ZERO_SLOTS * ZERO_STRIDE
    }

    /// A free slot's address, or `None` when all are live.
    pub fn alloc(&self) -> Option<usize> {
        let start = self.hint.load(Ordering::Relaxed);
        for k in 0..ZERO_WORDS {
            let w = (start + k) % ZERO_WORDS;
            let mut cur = self.used[w].load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros() as usize;
                match self.used[w].compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.hint.store(w, Ordering::Relaxed);
                        return Some(self.base + (w * 64 + bit) * ZERO_STRIDE);
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Frees slot `addr` (inside the area): `Ok` or `Err(double)` /
    /// `Err(not a slot start)`.
    pub fn free(&self, addr: usize) -> Result<(), bool> {
        let off = addr - self.base;
        if !off.is_multiple_of(ZERO_STRIDE) {
            return Err(false);
        }
        let i = off / ZERO_STRIDE;
        let mask = 1u64 << (i % 64);
        if self.used[i / 64].fetch_and(!mask, Ordering::AcqRel) & mask == 0 {
            return Err(true);
        }
        Ok(())
    }

    /// Whether slot `addr` is live (`Err(false)`: not a slot start).
    pub fn is_live(&self, addr: usize) -> Result<bool, bool> {
        let off = addr - self.base;
        if !off.is_multiple_of(ZERO_STRIDE) {
            return Err(false);
        }
        let i = off / ZERO_STRIDE;
        Ok(self.used[i / 64].load(Ordering::Acquire) >> (i % 64) & 1 == 1)
    }
}

impl Drop for ZeroArea {
    fn drop(&mut self) {
        // SAFETY: the reservation made in `new`, no longer reachable.
        unsafe { os::unmap(self.base as *mut u8, ZERO_SLOTS * ZERO_STRIDE) };
    }
}

/// A FIFO of freed small objects `(addr, class)` held back from reuse.
pub struct Quarantine {
    items: [(usize, u8); QUARANTINE],
    next: usize,
}

impl Default for Quarantine {
    fn default() -> Self {
        Self::new()
    }
}

impl Quarantine {
    /// An empty quarantine.
    pub const fn new() -> Quarantine {
        Quarantine {
            items: [(0, 0); QUARANTINE],
            next: 0,
        }
    }

    /// Puts `(addr, class)` in; returns the oldest entry it pushed out, if any.
    #[inline]
    pub fn push(&mut self, addr: usize, class: usize) -> Option<(usize, usize)> {
        let old = std::mem::replace(&mut self.items[self.next], (addr, class as u8));
        self.next = (self.next + 1) % QUARANTINE;
        (old.0 != 0).then_some((old.0, old.1 as usize))
    }

    /// Empties the quarantine, handing every entry to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(usize, usize)) {
        for e in &mut self.items {
            if e.0 != 0 {
                f(e.0, e.1 as usize);
                *e = (0, 0);
            }
        }
        self.next = 0;
    }
}
