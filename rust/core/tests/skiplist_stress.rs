//! Multi-thread stress: writers and readers hammer one list; the final state
//! must be exact, and readers must never miss a key that was present the
//! whole time, nor see a key twice or out of order in one scan.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use slabcache_core::skiplist::{BSkipList, Config, DefaultConfig, SpinParkLock};

mod common;
use common::rng;

struct Tiny;
impl Config for Tiny {
    const B: usize = 8;
    type Lock = parking_lot::Mutex<()>;
}

/// B = 8 with the default (spin-then-park) lock.
struct TinySpin;
impl Config for TinySpin {
    const B: usize = 8;
    type Lock = SpinParkLock;
}

const THREADS: u64 = 4;

/// Each writer owns the keys `k % THREADS == t`, so the final content is
/// known exactly; every thread replays its own ops on a local model.
fn disjoint_writers<C: Config>(ops_per_thread: usize, key_space: u64) {
    let m = Arc::new(BSkipList::<u64, u64, C>::new());
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = Arc::clone(&m);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut next = rng(t + 1);
                let mut model = BTreeMap::new();
                barrier.wait();
                for i in 0..ops_per_thread {
                    let k = (next() % key_space) * THREADS + t;
                    match next() % 10 {
                        0..=5 => assert_eq!(m.insert(k, i as u64), model.insert(k, i as u64)),
                        6..=8 => assert_eq!(m.remove(&k), model.remove(&k)),
                        _ => assert_eq!(m.get(&k), model.get(&k).copied()),
                    }
                }
                model
            })
        })
        .collect();
    let mut want = BTreeMap::new();
    for h in handles {
        want.extend(h.join().unwrap());
    }
    m.check_invariants().unwrap();
    let got: Vec<(u64, u64)> = m.iter().collect();
    let want: Vec<(u64, u64)> = want.into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(m.len(), want.len());
}

#[test]
fn disjoint_writers_end_exact_tiny_nodes() {
    disjoint_writers::<Tiny>(60_000, 3_000);
}

#[test]
fn disjoint_writers_end_exact_default_nodes() {
    disjoint_writers::<DefaultConfig>(60_000, 20_000);
}

/// Stable keys (multiples of 10) are inserted first and never touched;
/// writers churn the keys in between. Every scan and every point read must
/// see every stable key, once, in order, with its value intact.
fn readers_see_stable_keys<C: Config>() {
    let m = Arc::new(BSkipList::<u64, (u64, u64), C>::new());
    const STABLE: u64 = 4_000;
    for s in 0..STABLE {
        m.insert(s * 10, (s, !s));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let m = Arc::clone(&m);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut next = rng(100 + t);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = (next() % STABLE) * 10 + 1 + next() % 9;
                    if next().is_multiple_of(2) {
                        m.insert(k, (k, !k));
                    } else {
                        m.remove(&k);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                let mut next = rng(200 + t);
                for round in 0..12 {
                    // Full scans, alternating direction.
                    let mut seen = 0;
                    let mut prev: Option<u64> = None;
                    let scan: Box<dyn Iterator<Item = (u64, (u64, u64))>> = if round % 2 == 0 {
                        Box::new(m.iter())
                    } else {
                        Box::new(m.iter().rev())
                    };
                    for (k, (a, b)) in scan {
                        if let Some(p) = prev {
                            assert!(if round % 2 == 0 { p < k } else { p > k }, "order {p} {k}");
                        }
                        prev = Some(k);
                        if k % 10 == 0 {
                            assert_eq!((a, b), (k / 10, !(k / 10)), "torn stable value");
                            seen += 1;
                        } else {
                            assert_eq!((a, b), (k, !k), "torn churn value");
                        }
                    }
                    assert_eq!(seen, STABLE, "a stable key was missed");
                    // Point reads and bounds.
                    for _ in 0..5_000 {
                        let s = next() % STABLE;
                        assert_eq!(m.get(&(s * 10)), Some((s, !s)));
                        let lb = m.lower_bound(std::ops::Bound::Included(&(s * 10))).unwrap();
                        assert_eq!(lb.0, s * 10);
                        let ub = m.upper_bound(std::ops::Bound::Excluded(&(s * 10 + 10)));
                        assert!(ub.unwrap().0 >= s * 10);
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.join().unwrap();
    }
    assert!(writes > 0);
    m.check_invariants().unwrap();
    for s in 0..STABLE {
        assert_eq!(m.get(&(s * 10)), Some((s, !s)));
    }
}

#[test]
fn readers_see_stable_keys_tiny_nodes() {
    readers_see_stable_keys::<Tiny>();
}

#[test]
fn readers_see_stable_keys_default_nodes() {
    readers_see_stable_keys::<DefaultConfig>();
}

/// Concurrent pop_first and inserts: every inserted key is popped exactly once.
#[test]
fn concurrent_queue_pops_each_key_once() {
    let m = Arc::new(BSkipList::<u64, u64, Tiny>::new());
    const PER: u64 = 20_000;
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                for i in 0..PER {
                    m.insert(i * 2 + t, t);
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut idle = 0;
                while idle < 1_000_000 {
                    match m.pop_first() {
                        Some((k, _)) => {
                            got.push(k);
                            idle = 0;
                        }
                        None => idle += 1,
                    }
                    if got.len() as u64 == 2 * PER {
                        break;
                    }
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<u64> = Vec::new();
    for c in consumers {
        all.extend(c.join().unwrap());
    }
    while let Some((k, _)) = m.pop_first() {
        all.push(k);
    }
    all.sort_unstable();
    let want: Vec<u64> = (0..2 * PER).collect();
    assert_eq!(all, want);
    m.check_invariants().unwrap();
}

/// Concurrent setdefault on the same keys: exactly one value wins per key
/// and every caller sees it.
#[test]
fn concurrent_get_or_insert_agrees() {
    let m = Arc::new(BSkipList::<u64, u64, Tiny>::new());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                (0..5_000u64)
                    .map(|k| m.get_or_insert(k, t))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for k in 0..5_000usize {
        let v = m.get(&(k as u64)).unwrap();
        for r in &results {
            assert_eq!(r[k], v);
        }
    }
    assert_eq!(m.len(), 5_000);
}

/// Batches from several threads into overlapping ranges: every key lands,
/// and the value is one some thread wrote for it.
#[test]
fn concurrent_insert_many_is_exact() {
    let m = Arc::new(BSkipList::<u64, u64, Tiny>::new());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                for round in 0..20u64 {
                    let batch: Vec<(u64, u64)> = (0..500u64)
                        .map(|i| ((i * 13 + round * 7 + t) % 3000, t))
                        .collect();
                    m.insert_many(batch);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    m.check_invariants().unwrap();
    let mut want = std::collections::BTreeSet::new();
    for t in 0..4u64 {
        for round in 0..20u64 {
            for i in 0..500u64 {
                want.insert((i * 13 + round * 7 + t) % 3000);
            }
        }
    }
    let got: Vec<u64> = m
        .iter()
        .map(|(k, v)| {
            assert!(v < 4);
            k
        })
        .collect();
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
}

/// Every thread writes into the same few hot leaves at once (keys
/// interleaved: thread `t` owns `k % 8 == t`), so optimistic leaf writes keep
/// losing their snapshot to another thread's write or split and retry, while
/// splits race the inserts and a reader checks a stable key set. Afterwards
/// the content, `len`, positions (`count_below`, `nth`) and value drops are
/// exact.
fn hot_leaves_race<C: Config>(key_space: u64, ops: usize) {
    use std::ops::Bound;
    const T: u64 = 8;
    let token = Arc::new(());
    let m = Arc::new(BSkipList::<u64, (u64, Arc<()>), C>::new());
    // Stable keys `k % 9 == 8`, interleaved with the writers' keys (thread
    // `t` writes `k % 9 == t`), so they sit in the hot leaves too.
    let stable: Vec<u64> = (0..key_space / 4).map(|i| i * 4 * (T + 1) + T).collect();
    for &k in &stable {
        m.insert(k, (0, Arc::clone(&token)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(T as usize + 1));
    let reader = {
        let (m, stop, stable, barrier) = (
            Arc::clone(&m),
            Arc::clone(&stop),
            stable.clone(),
            Arc::clone(&barrier),
        );
        thread::spawn(move || {
            barrier.wait();
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds < 10 {
                for &k in &stable {
                    assert_eq!(m.get(&k).map(|v| v.0), Some(0), "stable key {k} missed");
                }
                let keys: Vec<u64> = m.iter().map(|(k, _)| k).collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "scan out of order");
                rounds += 1;
            }
        })
    };
    let writers: Vec<_> = (0..T)
        .map(|t| {
            let (m, barrier, token) = (Arc::clone(&m), Arc::clone(&barrier), Arc::clone(&token));
            thread::spawn(move || {
                let mut next = rng(t + 11);
                let mut model = BTreeMap::new();
                barrier.wait();
                for i in 0..ops {
                    // Small keys: all threads share the same leaves.
                    let k = (next() % key_space) * (T + 1) + t;
                    let v = (i as u64 + 1, Arc::clone(&token));
                    if next().is_multiple_of(8) {
                        assert_eq!(m.remove(&k).map(|v| v.0), model.remove(&k));
                    } else {
                        assert_eq!(m.insert(k, v).map(|v| v.0), model.insert(k, i as u64 + 1));
                    }
                }
                model
            })
        })
        .collect();
    let mut want: BTreeMap<u64, u64> = stable.iter().map(|&k| (k, 0)).collect();
    for h in writers {
        want.extend(h.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    m.check_invariants().unwrap();
    let got: Vec<(u64, u64)> = m.iter().map(|(k, v)| (k, v.0)).collect();
    let want_v: Vec<(u64, u64)> = want.iter().map(|(&k, &v)| (k, v)).collect();
    assert_eq!(got, want_v);
    assert_eq!(m.len(), want.len());
    let keys: Vec<u64> = want.keys().copied().collect();
    for (i, &k) in keys.iter().enumerate().step_by(7) {
        assert_eq!(m.count_below(Bound::Included(&k)), i, "rank of {k}");
        assert_eq!(m.nth(i).map(|(k, _)| k), Some(k), "nth({i})");
    }
    drop(m);
    for _ in 0..1000 {
        if Arc::strong_count(&token) == 1 {
            break;
        }
        slabcache_core::skiplist::reclaim_garbage();
        thread::yield_now();
    }
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "values leaked or dropped twice"
    );
}

#[test]
fn hot_leaves_race_tiny_nodes() {
    hot_leaves_race::<TinySpin>(64, 20_000);
}

#[test]
fn hot_leaves_race_default_nodes() {
    hot_leaves_race::<DefaultConfig>(512, 30_000);
}
