//! In-place value replacement (`BSkipList::set` on a map made by
//! `with_in_place_values`) racing lock-free readers, scans, removes,
//! copy-on-write inserts and splits: a reader must never see a torn value or
//! a value already dropped, every value is dropped exactly once, and the
//! final content is exact.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use slabcache_core::skiplist::{BSkipList, Config, DefaultConfig, SpinParkLock, SwapValue};

mod common;
use common::rng;

/// B = 8: many splits and merges for the swaps to race.
struct TinySpin;
impl Config for TinySpin {
    const B: usize = 8;
    type Lock = SpinParkLock;
}

/// What a value points to, shared by a value and its clones (a count of
/// them, 0 once the last is dropped). Never freed, so a reader that copies a
/// value already dropped finds the count at 0 (and fails) instead of
/// reading freed memory.
struct Payload {
    key: u64,
    ver: u64,
    /// `key ^ ver`, written with them: a torn value mixes them.
    check: u64,
    refs: AtomicU64,
    counts: &'static Counts,
}

struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

/// One word, like the Python binding's value: a pointer swapped atomically.
struct Val(AtomicPtr<Payload>);

impl Val {
    fn new(key: u64, ver: u64, counts: &'static Counts) -> Self {
        counts.made.fetch_add(1, Ordering::Relaxed);
        Val(AtomicPtr::new(Box::into_raw(Box::new(Payload {
            key,
            ver,
            check: key ^ ver,
            refs: AtomicU64::new(1),
            counts,
        }))))
    }

    fn payload(&self) -> &Payload {
        // SAFETY: payloads are never freed (see `Payload`).
        unsafe { &*self.0.load(Ordering::Acquire) }
    }

    /// Reads the value once and checks it is whole and alive.
    fn read(&self) -> (u64, u64) {
        let p = self.payload();
        assert_ne!(
            p.refs.load(Ordering::Acquire),
            0,
            "read a value already dropped"
        );
        assert_eq!(p.key ^ p.ver, p.check, "torn value");
        (p.key, p.ver)
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        let p = self.payload();
        assert_ne!(
            p.refs.fetch_add(1, Ordering::AcqRel),
            0,
            "cloned a value already dropped"
        );
        Val(AtomicPtr::new(p as *const Payload as *mut Payload))
    }
}

impl SwapValue for Val {
    fn swap(&self, new: Self) -> Self {
        let new = std::mem::ManuallyDrop::new(new);
        Val(AtomicPtr::new(
            self.0.swap(new.0.load(Ordering::Relaxed), Ordering::AcqRel),
        ))
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        // SAFETY: as in `payload`.
        let p = unsafe { &**self.0.get_mut() };
        match p.refs.fetch_sub(1, Ordering::AcqRel) {
            0 => panic!("value dropped twice"),
            1 => {
                p.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Stable keys (`k % 4 == 0`) are only ever replaced in place (by every
/// writer, with increasing versions per writer); the other keys belong to
/// one writer each (`k % 4 == t + 1`), which replaces them in place, inserts
/// them (copy-on-write `insert`, splits included) and removes them, against
/// a local model. Readers point-read and scan meanwhile.
fn replace_read_delete<C: Config>(key_space: u64, ops: usize) {
    const W: u64 = 3;
    let counts: &'static Counts = Box::leak(Box::new(Counts {
        made: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
    }));
    let m = Arc::new(BSkipList::<u64, Val, C>::with_in_place_values());
    let stable: Vec<u64> = (0..key_space).map(|i| i * 4).collect();
    for &k in &stable {
        assert!(!m.set(k, Val::new(k, 0, counts)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(W as usize + 2));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (m, stop, barrier, stable) = (
                Arc::clone(&m),
                Arc::clone(&stop),
                Arc::clone(&barrier),
                stable.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) || rounds < 5 {
                    for &k in &stable {
                        let v = if r == 0 {
                            m.get(&k).map(|v| v.read())
                        } else {
                            m.get_with(&k, Val::read)
                        };
                        let (vk, _) = v.unwrap_or_else(|| panic!("stable key {k} missed"));
                        assert_eq!(vk, k, "value of another key");
                    }
                    let mut last = None;
                    for (k, v) in m.iter() {
                        assert_eq!(v.read().0, k, "scan: value of another key");
                        assert!(last < Some(k), "scan out of order");
                        last = Some(k);
                    }
                    rounds += 1;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..W)
        .map(|t| {
            let (m, barrier) = (Arc::clone(&m), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut next = rng(t + 5);
                let mut model: BTreeMap<u64, u64> = BTreeMap::new();
                barrier.wait();
                for i in 1..=ops as u64 {
                    let ver = (t << 40) | i;
                    let r = next();
                    if r.is_multiple_of(3) {
                        let k = (next() % key_space) * 4;
                        assert!(m.set(k, Val::new(k, ver, counts)), "stable key {k} absent");
                        continue;
                    }
                    let k = (next() % key_space) * 4 + t + 1;
                    match r % 7 {
                        0 | 1 => {
                            let was = m.remove(&k).map(|v| v.read().1);
                            assert_eq!(was, model.remove(&k));
                        }
                        2 => {
                            let old = m.insert(k, Val::new(k, ver, counts)).map(|v| v.read().1);
                            assert_eq!(old, model.insert(k, ver));
                        }
                        _ => {
                            let present = m.set(k, Val::new(k, ver, counts));
                            assert_eq!(present, model.insert(k, ver).is_some());
                        }
                    }
                }
                model
            })
        })
        .collect();
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    for h in writers {
        want.extend(h.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
        h.join().unwrap();
    }
    m.check_invariants().unwrap();
    // Owned keys end exactly as their writer's model; stable keys hold the
    // last version some writer stored (any writer's), with their own key.
    for (k, v) in m.iter() {
        let (vk, ver) = v.read();
        assert_eq!(vk, k);
        if k % 4 != 0 {
            assert_eq!(want.remove(&k), Some(ver), "owned key {k}");
        }
    }
    assert!(
        want.is_empty(),
        "owned keys lost: {:?}",
        want.keys().take(5)
    );
    assert_eq!(
        m.len() as u64 - key_space,
        m.iter().filter(|(k, _)| k % 4 != 0).count() as u64
    );
    drop(m);
    // The epoch advances only when no thread of the process is pinned (the other
    // test in this binary runs beside this one), so give it time, not a count of
    // tries: 1,000 yields were too few once on a loaded 2-core CI machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        slabcache_core::skiplist::reclaim_garbage();
        if counts.dropped.load(Ordering::Relaxed) == counts.made.load(Ordering::Relaxed) {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(
        counts.dropped.load(Ordering::Relaxed),
        counts.made.load(Ordering::Relaxed),
        "values leaked"
    );
}

#[test]
fn replace_read_delete_tiny_nodes() {
    replace_read_delete::<TinySpin>(200, 200_000);
}

#[test]
fn replace_read_delete_default_nodes() {
    replace_read_delete::<DefaultConfig>(3000, 200_000);
}
