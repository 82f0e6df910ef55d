//! Single-thread point lookups: `BSkipList<u64, u64>` against
//! `std::collections::BTreeMap<u64, u64>`, same keys, same probe sequence,
//! interleaved repeats (a load spike on a shared machine hits both sides).
//!
//! Two probe patterns: *independent* (a pre-drawn array of uniform random
//! present keys; consecutive lookups may overlap in the CPU, as in a server
//! loop or the YCSB read-only workload) and *chained* (the next key depends
//! on the value just read, so every lookup pays its full latency, as a
//! Python loop of `m[k]` roughly does). Both maps are built the two ways a
//! map is filled: random-order single inserts and one sorted batch.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin skiplist_lookup -- [N] [REPEATS]
//! ```
//! Prints a Markdown table: ns per lookup (best of the repeats) and the ratio
//! BSkipList time / BTreeMap time (the issue's target: <= 1.5 on uniform keys).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use slabcache_core::skiplist::BSkipList;

/// splitmix64: distinct, scrambled keys from 0..n.
fn key_of(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// ns per lookup over `probes` (independent lookups).
fn independent(probes: &[u64], mut value: impl FnMut(u64) -> u64) -> f64 {
    let t0 = Instant::now();
    let mut sum = 0u64;
    for &k in probes {
        sum = sum.wrapping_add(value(k));
    }
    black_box(sum);
    t0.elapsed().as_nanos() as f64 / probes.len() as f64
}

/// ns per lookup of `count` chained lookups: value `i` of key `key_of(i)`
/// gives the next index, so no lookup starts before the previous one ends.
fn chained(n: u64, count: usize, seed: u64, mut value: impl FnMut(u64) -> u64) -> f64 {
    let t0 = Instant::now();
    let mut i = seed % n;
    for j in 0..count as u64 {
        let v = value(key_of(i));
        // `j` too: a fixed map i -> f(i) would soon cycle through a few
        // cached keys.
        i = key_of(v ^ (j << 32) ^ seed) % n;
    }
    black_box(i);
    t0.elapsed().as_nanos() as f64 / count as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let repeats: usize = args.next().map_or(7, |s| s.parse().expect("REPEATS"));
    let count = 1usize << 20;
    let probes: Vec<u64> = (0..count as u64)
        .map(|j| key_of(key_of(j + 7) % n))
        .collect();

    let tree: BTreeMap<u64, u64> = (0..n).map(|i| (key_of(i), i)).collect();
    let single = BSkipList::<u64, u64>::new();
    for i in 0..n {
        single.insert(key_of(i), i);
    }
    let batch = BSkipList::<u64, u64>::new();
    batch.insert_many((0..n).map(|i| (key_of(i), i)).collect());

    println!("{n} u64 keys, {count} uniform lookups, best of {repeats} interleaved repeats\n");
    println!(
        "| pattern | BTreeMap ns | BSkipList, single inserts ns | ratio | BSkipList, one batch ns | ratio | one batch, a pin per 64 lookups ns | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for chain in [false, true] {
        let mut best = [f64::INFINITY; 4];
        for r in 0..repeats {
            let seed = r as u64 + 1;
            let time = |value: &mut dyn FnMut(u64) -> u64| {
                if chain {
                    chained(n, count / 4, seed, value)
                } else {
                    independent(&probes, value)
                }
            };
            let get = |m: &BSkipList<u64, u64>, k: u64| m.get(&k).expect("present");
            let t = [
                time(&mut |k| *tree.get(&k).expect("present")),
                time(&mut |k| get(&single, k)),
                time(&mut |k| get(&batch, k)),
                {
                    // A fresh pin every 64 lookups: a pin held for long
                    // would hold back the reclamation of replaced blocks.
                    let mut reader = Some(batch.reader());
                    let mut left = 0;
                    time(&mut |k| {
                        if left == 0 {
                            reader = None;
                            reader = Some(batch.reader());
                            left = 64;
                        }
                        left -= 1;
                        reader.as_ref().and_then(|r| r.get(&k)).expect("present")
                    })
                },
            ];
            for (b, t) in best.iter_mut().zip(t) {
                *b = b.min(t);
            }
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.2}x | {:.1} | {:.2}x |",
            if chain { "chained" } else { "independent" },
            best[0],
            best[1],
            best[1] / best[0],
            best[2],
            best[2] / best[0],
            best[3],
            best[3] / best[0]
        );
    }
}
