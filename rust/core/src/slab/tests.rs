//! Unit tests of the allocator as a whole (the model and stress tests live
//! in `rust/core/tests/`).

use super::*;
use crate::ErrorKind;

fn small() -> SlabAllocator {
    SlabAllocator::with_config(SlabConfig {
        arena_size: 256 << 20,
        release_threshold: 0,
        ..SlabConfig::default()
    })
    .unwrap()
}

#[test]
fn alloc_write_read_free() {
    let a = small();
    for size in [0, 1, 15, 16, 17, 100, 256, 257, 4096, 32768, 32769, 1 << 20] {
        let p = a.alloc(size).unwrap();
        assert_eq!(p.as_ptr() as usize % 16, 0, "size {size}");
        assert!(a.usable_size(p).unwrap() >= size);
        // SAFETY: `p` holds at least `size` bytes.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0xAB, size) };
        a.free_sized(p, size).unwrap();
    }
    assert_eq!(a.stats().live_allocations, 0);
}

#[test]
fn double_and_invalid_frees_are_refused_and_change_nothing() {
    let a = small();
    let p = a.alloc(64).unwrap();
    let q = a.alloc(64).unwrap();
    let before = a.stats();
    // Interior pointer.
    let inner = NonNull::new(p.as_ptr().wrapping_add(16)).unwrap();
    assert_eq!(a.free(inner).unwrap_err().kind(), ErrorKind::InvalidFree);
    // Foreign pointer.
    let mut local = 0u64;
    let foreign = NonNull::new(&mut local as *mut u64 as *mut u8).unwrap();
    assert_eq!(a.free(foreign).unwrap_err().kind(), ErrorKind::InvalidFree);
    // Wrong size.
    assert_eq!(
        a.free_sized(p, 1000).unwrap_err().kind(),
        ErrorKind::InvalidFree
    );
    assert_eq!(a.stats().live_allocations, before.live_allocations);
    a.free(p).unwrap();
    assert_eq!(a.free(p).unwrap_err().kind(), ErrorKind::DoubleFree);
    assert_eq!(a.stats().live_allocations, 1);
    a.free(q).unwrap();
    // Large double free and interior free.
    let big = a.alloc(100_000).unwrap();
    let inner = NonNull::new(big.as_ptr().wrapping_add(4096)).unwrap();
    assert_eq!(a.free(inner).unwrap_err().kind(), ErrorKind::InvalidFree);
    a.free(big).unwrap();
    assert_eq!(a.free(big).unwrap_err().kind(), ErrorKind::DoubleFree);
}

#[test]
fn pointers_from_another_allocator_are_refused() {
    let a = small();
    let b = small();
    let p = b.alloc(32).unwrap();
    assert_eq!(a.free(p).unwrap_err().kind(), ErrorKind::InvalidFree);
    b.free(p).unwrap();
}

#[test]
fn aligned_allocations_honour_the_alignment() {
    let a = small();
    for align in [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 1 << 16] {
        for size in [1, 24, 100, 3000, 40_000] {
            let p = a.alloc_aligned(size, align).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
            assert!(a.usable_size(p).unwrap() >= size);
            a.free(p).unwrap();
        }
    }
    assert_eq!(
        a.alloc_aligned(8, 24).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn stats_follow_allocations() {
    let a = small();
    let ptrs = a.alloc_many(&[100, 100, 5000, 50_000]).unwrap();
    let s = a.stats();
    assert_eq!(s.live_allocations, 4);
    assert_eq!(s.bytes_requested, 55_200);
    assert_eq!(s.large_allocations, 1);
    assert_eq!(s.bytes_in_use, 112 * 2 + 5120 + 53_248);
    assert!(s.bytes_mapped >= s.bytes_in_use);
    let c112 = s.classes.iter().find(|c| c.size == 112).unwrap();
    assert_eq!((c112.live, c112.bytes_in_use), (2, 224));
    a.free_many(&ptrs).unwrap();
    let s = a.stats();
    assert_eq!(
        (s.live_allocations, s.bytes_requested, s.bytes_in_use),
        (0, 0, 0)
    );
}

#[test]
fn free_many_is_all_or_nothing() {
    let a = small();
    let ptrs = a.alloc_many(&[10, 20, 30]).unwrap();
    let mut dup = ptrs.clone();
    dup.push(ptrs[0]);
    assert_eq!(a.free_many(&dup).unwrap_err().kind(), ErrorKind::DoubleFree);
    assert_eq!(a.stats().live_allocations, 3);
    a.free(ptrs[1].0).unwrap();
    assert_eq!(
        a.free_many(&ptrs).unwrap_err().kind(),
        ErrorKind::DoubleFree
    );
    assert_eq!(a.stats().live_allocations, 2);
    a.free_many(&[ptrs[0], ptrs[2]]).unwrap();
}

#[test]
fn empty_slabs_are_released_to_the_os() {
    let a = small();
    let ptrs: Vec<_> = (0..20_000).map(|_| a.alloc(1024).unwrap()).collect();
    let full = a.stats();
    assert!(full.slabs >= 70);
    for p in ptrs {
        a.free(p).unwrap();
    }
    a.flush_thread_cache();
    let s = a.stats();
    assert_eq!(s.live_allocations, 0);
    assert!(s.slabs_released >= full.slabs - 2, "{s:?}");
    assert!(s.bytes_mapped < full.bytes_mapped / 10);
    // Released slabs are reused, by any class.
    let again: Vec<_> = (0..20_000).map(|_| a.alloc(2000).unwrap()).collect();
    assert!(a.stats().slabs <= full.slabs * 2 + 2);
    for p in again {
        a.free(p).unwrap();
    }
}

#[test]
fn zero_on_free_and_alloc_zeroed() {
    let a = SlabAllocator::with_config(SlabConfig {
        arena_size: 64 << 20,
        zero_on_free: true,
        ..SlabConfig::default()
    })
    .unwrap();
    let p = a.alloc(64).unwrap();
    // SAFETY: 64 bytes of ours.
    unsafe { std::ptr::write_bytes(p.as_ptr(), 0xFF, 64) };
    a.free(p).unwrap();
    // The slot sits in this thread's cache, zeroed.
    // SAFETY: the slot is still mapped (freed memory of a live allocator) and we only read it.
    assert!((0..64).all(|i| unsafe { *p.as_ptr().add(i) } == 0));
    let b = small();
    for size in [64, 100_000] {
        let p = b.alloc(size).unwrap();
        // SAFETY: `size` bytes of ours.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0xFF, size) };
        b.free(p).unwrap();
        let z = b.alloc_zeroed(size).unwrap();
        // SAFETY: `size` bytes of ours.
        assert!((0..size).all(|i| unsafe { *z.as_ptr().add(i) } == 0));
        b.free(z).unwrap();
    }
}

#[test]
fn the_arena_runs_out_cleanly() {
    let a = SlabAllocator::with_config(SlabConfig {
        arena_size: 1 << 20,
        ..SlabConfig::default()
    })
    .unwrap();
    let mut got = Vec::new();
    let err = loop {
        match a.alloc(30_000) {
            Ok(p) => got.push(p),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::OutOfMemory);
    assert_eq!(got.len(), 4 * 8, "four slabs of eight 32 KiB objects");
    for p in got {
        a.free(p).unwrap();
    }
    assert!(a.alloc(30_000).is_ok());
    assert_eq!(
        SlabAllocator::with_config(SlabConfig {
            arena_size: 10,
            ..SlabConfig::default()
        })
        .unwrap_err()
        .kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn thread_exit_returns_its_cache_and_counts() {
    let a = small();
    let b = a.clone();
    let ptrs: Vec<usize> = std::thread::spawn(move || {
        (0..100)
            .map(|_| b.alloc(48).unwrap().as_ptr() as usize)
            .collect()
    })
    .join()
    .unwrap();
    let s = a.stats();
    assert_eq!(s.live_allocations, 100);
    assert_eq!(s.bytes_requested, 4800);
    for p in ptrs {
        a.free_sized(NonNull::new(p as *mut u8).unwrap(), 48)
            .unwrap();
    }
    assert_eq!(a.stats().bytes_requested, 0);
}

#[test]
fn many_allocators_per_thread_evict_cache_slots() {
    let all: Vec<SlabAllocator> = (0..10).map(|_| small()).collect();
    let mut ptrs = Vec::new();
    for round in 0..3 {
        for a in &all {
            ptrs.push((a.clone(), a.alloc(64 + round).unwrap()));
        }
    }
    for (a, p) in &ptrs {
        a.free(*p).unwrap();
    }
    for a in &all {
        a.flush_thread_cache();
        assert_eq!(a.stats().live_allocations, 0);
    }
    drop(all);
    drop(ptrs);
    // A fresh allocator after the others died still works on this thread.
    let a = small();
    a.free(a.alloc(10).unwrap()).unwrap();
}

#[test]
fn medium_blocks_are_page_runs_checked_like_small_objects() {
    let a = small();
    // Many live medium blocks (each would have been a mapping + guard page).
    let blocks: Vec<_> = (0..300)
        .map(|i| a.alloc(40_000 + i * 100).unwrap())
        .collect();
    for (i, p) in blocks.iter().enumerate() {
        assert_eq!(p.as_ptr() as usize % 4096, 0);
        assert!(a.usable_size(*p).unwrap() >= 40_000 + i * 100);
        // SAFETY: each block holds at least 40,000 bytes.
        unsafe { p.as_ptr().add(39_999).write(i as u8) };
    }
    let p = blocks[7];
    let inner = NonNull::new(p.as_ptr().wrapping_add(4096)).unwrap();
    assert_eq!(a.free(inner).unwrap_err().kind(), ErrorKind::InvalidFree);
    assert_eq!(
        a.free_sized(p, 1 << 20).unwrap_err().kind(),
        ErrorKind::InvalidFree
    );
    a.free(p).unwrap();
    assert_eq!(a.free(p).unwrap_err().kind(), ErrorKind::DoubleFree);
    for (i, q) in blocks.iter().enumerate().filter(|&(i, _)| i != 7) {
        // SAFETY: live blocks written above.
        assert_eq!(unsafe { q.as_ptr().add(39_999).read() }, i as u8);
        a.free(*q).unwrap();
    }
    assert_eq!(a.stats().live_allocations, 0);
}

#[test]
fn realloc_grows_in_place_and_by_mremap_keeping_contents() {
    let a = small();
    let p = a.alloc(40_000).unwrap().as_ptr() as usize;
    // SAFETY: 40,000 bytes.
    unsafe { std::ptr::write_bytes(p as *mut u8, 0x5A, 40_000) };
    // The pages after a fresh chunk's first block are free: grows in place.
    let q = a.raw_realloc(p, 200_000).unwrap().unwrap().as_ptr() as usize;
    assert_eq!(q, p);
    let mut cur = q;
    for size in (3 << 20..=24 << 20).step_by(1 << 20) {
        cur = a.raw_realloc(cur, size).unwrap().unwrap().as_ptr() as usize;
        // SAFETY: `size` bytes, the first 40,000 written above.
        unsafe {
            assert_eq!(*(cur as *const u8).add(39_999), 0x5A);
            *(cur as *mut u8).add(size - 1) = 1;
        }
    }
    assert!(a.raw_free(cur).is_ok());
    assert!(
        a.raw_realloc(cur, 10).is_err(),
        "realloc of a freed block is refused"
    );
}

#[test]
fn impossible_sizes_fail_cleanly() {
    let a = small();
    assert!(a.raw_alloc(usize::MAX).is_none());
    assert!(a.raw_alloc(usize::MAX - 4095).is_none());
    assert!(a.raw_alloc_aligned(usize::MAX - 100, 4096).is_none());
    assert!(a
        .raw_alloc_aligned(usize::MAX - (1 << 19), 1 << 20)
        .is_none());
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if overcommit.trim() != "1" {
        assert!(
            a.raw_alloc(64 << 40).is_none(),
            "64 TiB must not be granted"
        );
    }
}

fn hardened() -> SlabAllocator {
    SlabAllocator::with_config(SlabConfig {
        arena_size: 256 << 20,
        hardened: true,
        ..SlabConfig::default()
    })
    .unwrap()
}

#[test]
fn hardened_canary_catches_an_overflow_at_free() {
    let a = hardened();
    let p = a.alloc(24).unwrap();
    assert_eq!(a.usable_size(p).unwrap(), 24, "slot 32 minus the canary");
    // SAFETY: writing past the request but inside the slot (an 8-byte overflow).
    unsafe { std::ptr::write_bytes(p.as_ptr(), b'x', 32) };
    let e = a.free(p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidFree);
    assert!(e.to_string().contains("canary"), "{e}");
}

#[test]
fn hardened_quarantine_catches_a_double_free_after_other_allocations() {
    let a = hardened();
    let p = a.alloc(48).unwrap();
    a.free(p).unwrap();
    let others: Vec<_> = (0..100).map(|_| a.alloc(48).unwrap()).collect();
    assert!(
        others.iter().all(|&q| q != p),
        "p is quarantined, not reused"
    );
    assert_eq!(a.free(p).unwrap_err().kind(), ErrorKind::DoubleFree);
    for q in others {
        a.free(q).unwrap();
    }
}

#[test]
fn hardened_zero_size_allocations_are_unique_and_checked() {
    let a = hardened();
    let p = a.alloc(0).unwrap();
    let q = a.alloc(0).unwrap();
    assert_ne!(p, q);
    assert_eq!(a.usable_size(p).unwrap(), 0);
    a.free(p).unwrap();
    assert_eq!(a.free(p).unwrap_err().kind(), ErrorKind::DoubleFree);
    let inner = NonNull::new(q.as_ptr().wrapping_add(1)).unwrap();
    assert_eq!(a.free(inner).unwrap_err().kind(), ErrorKind::InvalidFree);
    a.free(q).unwrap();
}
