//! The blob arena's key index under many reader threads: `arena::KeyIndex`
//! (the lock-free B-skiplist) against the `RwLock<BTreeMap>` it replaced.
//!
//! `n` keys of 16 bytes (`key-%012d`, like typical arena keys); each reader
//! thread does `get` of random present keys for `secs`; with `--writer`, one
//! more thread meanwhile re-puts batches of 64 keys through `insert_many`
//! (what `BlobArena::put_many` does under its writer lock). Prints total
//! million gets/s per thread count for both, and the ratio. First line: the
//! time to build each from `n` sorted entries (what recovery does) and to
//! drop it.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin arena_index_readers -- \
//!     --threads 1,2,4,8,16 --keys 1000000 --secs 2 --writer
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use slabcache_core::arena::{BlobLocation, KeyIndex};

trait Index: Send + Sync + 'static {
    fn get(&self, k: &[u8]) -> Option<BlobLocation>;
    fn insert_many(&self, items: Vec<(Vec<u8>, BlobLocation)>) -> u64;
}

impl Index for KeyIndex {
    fn get(&self, k: &[u8]) -> Option<BlobLocation> {
        KeyIndex::get(self, k)
    }
    fn insert_many(&self, items: Vec<(Vec<u8>, BlobLocation)>) -> u64 {
        KeyIndex::insert_many(self, items)
    }
}

/// The index as it was before the B-skiplist (same methods, same locking).
#[derive(Default)]
struct LockedBTree(RwLock<BTreeMap<Vec<u8>, BlobLocation>>);

impl Index for LockedBTree {
    fn get(&self, k: &[u8]) -> Option<BlobLocation> {
        self.0.read().get(k).copied()
    }
    fn insert_many(&self, items: Vec<(Vec<u8>, BlobLocation)>) -> u64 {
        let mut m = self.0.write();
        items
            .into_iter()
            .filter_map(|(k, l)| m.insert(k, l))
            .map(|l| l.len)
            .sum()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn loc(i: u64) -> BlobLocation {
    BlobLocation {
        generation: 1,
        offset: i * 100,
        len: 100,
        crc: i as u32,
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Million gets per second over all reader threads.
fn run<I: Index>(idx: Arc<I>, n: u64, threads: usize, secs: f64, writer: bool) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1 + usize::from(writer)));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (idx, stop, total, barrier) =
            (idx.clone(), stop.clone(), total.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            let keys: Vec<Vec<u8>> = {
                let mut s = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
                (0..4096).map(|_| key(xorshift(&mut s) % n)).collect()
            };
            barrier.wait();
            let mut ops = 0u64;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    let hit = idx.get(&keys[i & 4095]);
                    assert!(hit.is_some());
                    i += 1;
                }
                ops += 256;
            }
            total.fetch_add(ops, Ordering::Relaxed);
        }));
    }
    if writer {
        let (idx, stop, barrier) = (idx.clone(), stop.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            let mut s = 0xDEAD_BEEFu64;
            barrier.wait();
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..64)
                    .map(|_| {
                        let i = xorshift(&mut s) % n;
                        (key(i), loc(i))
                    })
                    .collect();
                idx.insert_many(batch);
            }
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let mut threads = vec![1, 2];
    let mut n = 200_000u64;
    let mut secs = 1.0;
    let mut writer = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .expect("--threads 1,2,4")
                    .split(',')
                    .map(|t| t.parse().expect("a thread count"))
                    .collect()
            }
            "--keys" => n = args.next().expect("--keys N").parse().expect("a key count"),
            "--secs" => secs = args.next().expect("--secs S").parse().expect("seconds"),
            "--writer" => writer = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let items: Vec<_> = (0..n).map(|i| (key(i), loc(i))).collect();
    // Building the index from sorted entries is what recovery does.
    let copy = items.clone();
    let t0 = Instant::now();
    let old = Arc::new(LockedBTree(RwLock::new(copy.into_iter().collect())));
    let t_old = t0.elapsed();
    let copy = items.clone();
    let t0 = Instant::now();
    let new = Arc::new(KeyIndex::new());
    new.replace_all(copy);
    let t_new = t0.elapsed();
    let (copy_old, copy_new) = (
        LockedBTree(RwLock::new(items.iter().cloned().collect())),
        KeyIndex::new(),
    );
    copy_new.replace_all(items);
    let t0 = Instant::now();
    drop(copy_old);
    let d_old = t0.elapsed();
    let t0 = Instant::now();
    drop(copy_new);
    let d_new = t0.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{n} sorted entries (recovery): build BTreeMap {:.1} ms, B-skiplist {:.1} ms; \
         drop BTreeMap {:.1} ms, B-skiplist {:.1} ms",
        ms(t_old),
        ms(t_new),
        ms(d_old),
        ms(d_new)
    );
    println!(
        "arena index gets, {n} keys, {secs} s per point{}",
        if writer {
            ", one insert_many writer (64/batch)"
        } else {
            ""
        }
    );
    println!("| readers | RwLock<BTreeMap> Mget/s | B-skiplist Mget/s | ratio |");
    println!("|---|---|---|---|");
    for &t in &threads {
        let a = run(old.clone(), n, t, secs, writer);
        let b = run(new.clone(), n, t, secs, writer);
        println!("| {t} | {a:.2} | {b:.2} | {:.2}x |", b / a);
    }
}
