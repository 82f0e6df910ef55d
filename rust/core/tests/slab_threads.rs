//! Multi-thread stress: threads allocate, hand objects to each other through
//! channels and free them on the other side (cross-thread frees), while
//! checking contents; double frees racing on one pointer must let exactly
//! one free succeed.

use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use slabcache_core::slab::{SlabAllocator, SlabConfig};
use slabcache_core::ErrorKind;

const THREADS: usize = 4;

fn alloc() -> SlabAllocator {
    SlabAllocator::with_config(SlabConfig {
        arena_size: 4 << 30,
        release_threshold: 1 << 20,
        ..SlabConfig::default()
    })
    .unwrap()
}

#[test]
fn cross_thread_frees_keep_contents_and_counts() {
    let a = alloc();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = mpsc::channel::<(usize, usize, u8)>();
        senders.push(tx);
        receivers.push(rx);
    }
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let a = a.clone();
            let senders = senders.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t as u64 + 1);
                for i in 0..20_000usize {
                    let size = match rng.gen_range(0..=9) {
                        0 => rng.gen_range(33_000..=70_000),
                        1..=3 => rng.gen_range(257..=32_768),
                        _ => rng.gen_range(1..=256),
                    };
                    let p = a.alloc(size).unwrap().as_ptr() as usize;
                    let tag = (i % 251) as u8;
                    // SAFETY: `size` bytes of ours.
                    unsafe { std::ptr::write_bytes(p as *mut u8, tag, size) };
                    let to = rng.gen_range(0..=THREADS - 1);
                    senders[to].send((p, size, tag)).unwrap();
                    while let Ok((q, n, tag)) = rx.try_recv() {
                        check_and_free(&a, q, n, tag);
                    }
                }
                drop(senders);
                rx
            })
        })
        .collect();
    drop(senders);
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in rxs {
        while let Ok((q, n, tag)) = rx.recv() {
            check_and_free(&a, q, n, tag);
        }
    }
    let s = a.stats();
    assert_eq!(s.live_allocations, 0, "{s:?}");
    assert_eq!(s.bytes_requested, 0);
}

fn check_and_free(a: &SlabAllocator, p: usize, n: usize, tag: u8) {
    // SAFETY: a live allocation of `n` bytes handed over by its allocating thread.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
    assert!(bytes.iter().all(|&b| b == tag), "contents changed");
    a.free_sized(NonNull::new(p as *mut u8).unwrap(), n)
        .unwrap();
}

#[test]
fn racing_double_frees_succeed_exactly_once() {
    let a = alloc();
    for round in 0..200 {
        let size = if round % 10 == 0 { 50_000 } else { 16 + round };
        let p = a.alloc(size).unwrap().as_ptr() as usize;
        let barrier = Arc::new(Barrier::new(THREADS));
        let oks: usize = (0..THREADS)
            .map(|_| {
                let a = a.clone();
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    match a.free(NonNull::new(p as *mut u8).unwrap()) {
                        Ok(()) => 1,
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::DoubleFree);
                            0
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(oks, 1);
    }
    assert_eq!(a.stats().live_allocations, 0);
}

#[test]
fn allocator_dropped_while_other_threads_hold_caches() {
    for _ in 0..20 {
        let a = alloc();
        let b = a.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            let p = b.alloc(64).unwrap();
            b.free(p).unwrap(); // leaves the object in this thread's cache
            drop(b);
            done_tx.send(()).unwrap();
            rx.recv().unwrap();
            // The allocator is gone; a new one on this thread must still work.
            let c = alloc();
            c.free(c.alloc(64).unwrap()).unwrap();
        });
        done_rx.recv().unwrap();
        drop(a);
        tx.send(()).unwrap();
        h.join().unwrap();
    }
}
