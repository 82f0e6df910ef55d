//! Model checking of the lock protocol with `shuttle`: the per-node locks
//! become shuttle mutexes and every block load/publication a scheduling
//! point, so shuttle explores thread interleavings of small cases (random and
//! PCT schedules). Each case asserts the final content, the structure
//! invariants, and what concurrent readers must see.

use std::sync::Arc;

use shuttle::thread;
use slabcache_core::skiplist::{BSkipList, Config, NodeLock};

/// A shuttle mutex as the node lock.
#[derive(Default)]
struct ShuttleLock(shuttle::sync::Mutex<()>);

impl NodeLock for ShuttleLock {
    type Guard<'a> = shuttle::sync::MutexGuard<'a, ()>;
    fn lock(&self) -> Self::Guard<'_> {
        self.0.lock().unwrap()
    }
}

/// B = 8: splits, promotions and merges after a handful of keys.
struct Model;
impl Config for Model {
    const B: usize = 8;
    type Lock = ShuttleLock;
    fn interleave() {
        thread::yield_now();
    }
}

type List = BSkipList<u32, u32, Model>;

fn filled(keys: impl IntoIterator<Item = u32>) -> Arc<List> {
    let m = Arc::new(List::new());
    for k in keys {
        m.insert(k, k);
    }
    m
}

const ITERS: usize = 1000;

/// Two writers insert into the same full leaves (forcing promotions and
/// splits under contention) while a reader scans: no key is lost, the
/// reader sees every pre-existing key once and in order.
fn concurrent_inserts_with_reader() {
    let m = filled((0..16).map(|k| k * 4));
    let writers: Vec<_> = (0..2u32)
        .map(|t| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                for i in 0..6u32 {
                    m.insert(i * 8 + 1 + t * 2, t);
                }
            })
        })
        .collect();
    let reader = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            let keys: Vec<u32> = m.iter().map(|(k, _)| k).collect();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "scan out of order: {keys:?}"
            );
            for s in 0..16 {
                assert!(
                    keys.contains(&(s * 4)),
                    "stable key {} missed: {keys:?}",
                    s * 4
                );
                assert_eq!(m.get(&(s * 4)), Some(s * 4));
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    m.check_invariants().unwrap();
    assert_eq!(m.len(), 16 + 12);
    for t in 0..2u32 {
        for i in 0..6u32 {
            assert_eq!(m.get(&(i * 8 + 1 + t * 2)), Some(t));
        }
    }
}

/// A remover drains a range (merging nodes) while a writer inserts around it
/// and a reader runs backwards over the stable keys.
fn removes_and_merges_with_inserts() {
    let m = filled(0..24);
    let remover = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            for k in (8..20).filter(|k| k % 3 != 0) {
                assert_eq!(m.remove(&k), Some(k));
            }
        })
    };
    let writer = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            for k in 100..106 {
                m.insert(k, k);
            }
            assert_eq!(m.insert(3, 33), Some(3));
        })
    };
    let reader = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            let keys: Vec<u32> = m.range(..24).rev().map(|(k, _)| k).collect();
            assert!(
                keys.windows(2).all(|w| w[0] > w[1]),
                "reverse scan out of order: {keys:?}"
            );
            for k in (0..24).filter(|k| !(8..20).contains(k) || k % 3 == 0) {
                assert!(keys.contains(&k), "stable key {k} missed: {keys:?}");
            }
        })
    };
    remover.join().unwrap();
    writer.join().unwrap();
    reader.join().unwrap();
    m.check_invariants().unwrap();
    let want: Vec<u32> = (0..24)
        .filter(|k| !(8..20).contains(k) || k % 3 == 0)
        .chain(100..106)
        .collect();
    assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), want);
    assert_eq!(m.get(&3), Some(33));
}

/// pop_first from two threads against an insert of a new minimum: each key
/// comes out exactly once.
fn pops_race_inserts() {
    let m = filled(10..20);
    let poppers: Vec<_> = (0..2)
        .map(|_| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                (0..6)
                    .filter_map(|_| m.pop_first().map(|(k, _)| k))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let writer = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            for k in [1, 25, 2] {
                m.insert(k, k);
            }
        })
    };
    writer.join().unwrap();
    let mut out: Vec<u32> = Vec::new();
    for p in poppers {
        out.extend(p.join().unwrap());
    }
    while let Some((k, _)) = m.pop_first() {
        out.push(k);
    }
    out.sort_unstable();
    let mut want: Vec<u32> = (10..20).chain([1, 2, 25]).collect();
    want.sort_unstable();
    assert_eq!(out, want);
    m.check_invariants().unwrap();
}

/// Optimistic leaf writes: two writers replace the same keys and insert
/// fresh ones into the same leaf (each builds its block from a snapshot and
/// publishes only if the leaf did not change meanwhile; shuttle switches
/// threads between the snapshot, the lock and the swap), a third splits that
/// leaf by filling it. Values are tracked: each is dropped exactly once.
fn optimistic_leaf_writes_race() {
    let token = std::sync::Arc::new(());
    let m: Arc<BSkipList<u32, (u32, std::sync::Arc<()>), Model>> = Arc::new(BSkipList::new());
    for k in 0..4u32 {
        m.insert(k * 10, (0, std::sync::Arc::clone(&token)));
    }
    let writers: Vec<_> = (0..2u32)
        .map(|t| {
            let m = Arc::clone(&m);
            let token = std::sync::Arc::clone(&token);
            thread::spawn(move || {
                for k in 0..4u32 {
                    m.insert(k * 10, (t + 1, std::sync::Arc::clone(&token)));
                    m.insert(k * 10 + 1 + t, (t + 1, std::sync::Arc::clone(&token)));
                }
            })
        })
        .collect();
    let splitter = {
        let m = Arc::clone(&m);
        let token = std::sync::Arc::clone(&token);
        thread::spawn(move || {
            for k in 0..6u32 {
                m.insert(k * 10 + 5, (9, std::sync::Arc::clone(&token)));
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    splitter.join().unwrap();
    m.check_invariants().unwrap();
    assert_eq!(m.len(), 4 + 8 + 6);
    for k in 0..4u32 {
        let v = m.get(&(k * 10)).unwrap().0;
        assert!(v == 1 || v == 2, "replaced value lost: {v}");
        assert_eq!(m.get(&(k * 10 + 1)).unwrap().0, 1);
        assert_eq!(m.get(&(k * 10 + 2)).unwrap().0, 2);
    }
    let stored = m.len();
    drop(m);
    // Shuttle runs its threads as coroutines of one OS thread, which stays
    // pinned while any of them is inside an operation; tests running in
    // parallel do the same, holding the global epoch back meanwhile. So
    // reclaim until the epoch has moved on (1 = our own handle).
    let mut left = std::sync::Arc::strong_count(&token);
    for _ in 0..20_000 {
        if left == 1 {
            break;
        }
        slabcache_core::skiplist::reclaim_garbage();
        std::thread::sleep(std::time::Duration::from_micros(100));
        left = std::sync::Arc::strong_count(&token);
    }
    assert_eq!(left, 1, "values leaked or dropped twice ({stored} stored)");
}

#[test]
fn shuttle_optimistic_leaf_writes_race() {
    shuttle::check_random(optimistic_leaf_writes_race, ITERS);
    shuttle::check_pct(optimistic_leaf_writes_race, ITERS, 3);
}

#[test]
fn shuttle_concurrent_inserts_with_reader() {
    shuttle::check_random(concurrent_inserts_with_reader, ITERS);
    shuttle::check_pct(concurrent_inserts_with_reader, ITERS, 3);
}

#[test]
fn shuttle_removes_and_merges_with_inserts() {
    shuttle::check_random(removes_and_merges_with_inserts, ITERS);
    shuttle::check_pct(removes_and_merges_with_inserts, ITERS, 3);
}

#[test]
fn shuttle_pops_race_inserts() {
    shuttle::check_random(pops_race_inserts, ITERS);
    shuttle::check_pct(pops_race_inserts, ITERS, 3);
}
