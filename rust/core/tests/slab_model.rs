//! Property tests of the slab allocator against a model: random alloc/free
//! sequences (with bad frees mixed in) must keep live allocations disjoint,
//! aligned and intact, refuse every bad free without side effects, and keep
//! the stats equal to the model's sums.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use proptest::prelude::*;
use slabcache_core::slab::{SlabAllocator, SlabConfig};
use slabcache_core::ErrorKind;

#[derive(Debug, Clone)]
enum Step {
    Alloc(usize),
    AllocAligned(usize, u32),
    Free(usize),
    DoubleFree(usize),
    InteriorFree(usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..=300,
        3 => 300usize..=33_000,
        1 => 33_000usize..=200_000,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => size().prop_map(Step::Alloc),
        1 => (size(), 4u32..=13).prop_map(|(s, a)| Step::AllocAligned(s, a)),
        4 => any::<usize>().prop_map(Step::Free),
        1 => any::<usize>().prop_map(Step::DoubleFree),
        1 => any::<usize>().prop_map(Step::InteriorFree),
    ]
}

struct Live {
    size: usize,
    usable: usize,
    fill: u8,
}

fn fill(p: usize, n: usize, byte: u8) {
    // SAFETY: callers pass a live allocation of at least `n` bytes.
    unsafe { std::ptr::write_bytes(p as *mut u8, byte, n) };
}

fn check_contents(p: usize, l: &Live) {
    // SAFETY: a live allocation of `l.size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, l.size) };
    assert!(
        bytes.iter().all(|&b| b == l.fill),
        "contents of {p:#x} changed"
    );
}

fn nn(p: usize) -> NonNull<u8> {
    NonNull::new(p as *mut u8).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic_matches_the_model(steps in prop::collection::vec(step(), 1..300)) {
        let a = SlabAllocator::with_config(SlabConfig {
            arena_size: 1 << 30,
            release_threshold: 0,
            ..SlabConfig::default()
        }).unwrap();
        let mut live: BTreeMap<usize, Live> = BTreeMap::new();
        let mut freed: Vec<usize> = Vec::new();
        let mut counter = 0u8;
        for st in steps {
            match st {
                Step::Alloc(n) | Step::AllocAligned(n, _) => {
                    let align = match st { Step::AllocAligned(_, a) => 1usize << a, _ => 16 };
                    let p = a.alloc_aligned(n, align).unwrap().as_ptr() as usize;
                    prop_assert_eq!(p % align, 0);
                    prop_assert_eq!(p % 16, 0);
                    let usable = a.usable_size(nn(p)).unwrap();
                    prop_assert!(usable >= n);
                    // No overlap with any live allocation (usable ranges).
                    if let Some((&q, l)) = live.range(..=p).next_back() {
                        prop_assert!(q + l.usable.max(1) <= p, "{:#x} overlaps {:#x}", p, q);
                    }
                    if let Some((&q, _)) = live.range(p..).next() {
                        prop_assert!(p + usable.max(1) <= q, "{:#x} overlaps {:#x}", p, q);
                    }
                    counter = counter.wrapping_add(1);
                    fill(p, n, counter);
                    freed.retain(|&f| f != p);
                    live.insert(p, Live { size: n, usable, fill: counter });
                }
                Step::Free(k) if !live.is_empty() => {
                    let p = *live.keys().nth(k % live.len()).unwrap();
                    let l = live.remove(&p).unwrap();
                    check_contents(p, &l);
                    a.free_sized(nn(p), l.size).unwrap();
                    freed.push(p);
                }
                Step::DoubleFree(k) if !freed.is_empty() => {
                    let p = freed[k % freed.len()];
                    let before = a.stats();
                    let e = a.free(nn(p)).unwrap_err();
                    // A freed large mapping may be reported as unknown once
                    // its tombstone is purged; small ones always as double.
                    prop_assert!(matches!(e.kind(), ErrorKind::DoubleFree | ErrorKind::InvalidFree));
                    let after = a.stats();
                    prop_assert_eq!(before.live_allocations, after.live_allocations);
                    prop_assert_eq!(before.bytes_requested, after.bytes_requested);
                }
                Step::InteriorFree(k) if !live.is_empty() => {
                    let (&p, l) = live.iter().nth(k % live.len()).unwrap();
                    if l.usable > 16 {
                        let e = a.free(nn(p + 16)).unwrap_err();
                        prop_assert_eq!(e.kind(), ErrorKind::InvalidFree);
                    }
                }
                _ => {}
            }
            let s = a.stats();
            prop_assert_eq!(s.live_allocations, live.len() as u64);
            prop_assert_eq!(s.bytes_requested, live.values().map(|l| l.size as u64).sum::<u64>());
            prop_assert_eq!(s.bytes_in_use, live.values().map(|l| l.usable as u64).sum::<u64>());
            prop_assert_eq!(
                s.classes.iter().map(|c| c.bytes_in_use).sum::<u64>() + s.large_bytes,
                s.bytes_in_use
            );
        }
        for (&p, l) in &live {
            check_contents(p, l);
        }
        for (&p, l) in &live {
            a.free_sized(nn(p), l.size).unwrap();
        }
        prop_assert_eq!(a.stats().live_allocations, 0);
    }
}
