//! YCSB-like benchmark of the concurrent B-skiplist against
//! `crossbeam_skiplist::SkipMap` and `RwLock<BTreeMap>`.
//!
//! Workloads (each a table): insert-only (load `n` keys into an empty map),
//! read-only, 50/50 read/update, 50/50 read/insert (reads of present keys,
//! inserts of fresh ones: the map grows), and short scans (50 entries from a
//! random key); uniform and scrambled-Zipfian (theta 0.99) key choice;
//! `u64 -> u64`. Throughput (million ops/s over all threads) and p50 / p99 /
//! p99.9 latency (ns, one op in 8 timed) per thread count. Also:
//! single-thread lookups against a plain `BTreeMap` (no lock) and, with
//! `--fanouts`, the node-size comparison. `--repeat R` runs each insert-only
//! row R times (a load of 1M keys on 16 cores lasts ~0.1 s: one row is noisy);
//! `--no-btree` leaves the `RwLock<BTreeMap>` peer out (slow at 16 threads).
//! Insert-only rows also give the page faults each load took (the process's
//! faults during it); `--peer-first` runs SkipMap's load before ours in each
//! repeat (the first load of a process grows the allocator's heaps, which
//! the loads after it reuse).
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin skiplist_ycsb -- \
//!     --threads 1,2,4,8,16 --sizes 1000000,10000000 --secs 1
//! cargo run --release -p slabcache-bench --bin skiplist_ycsb -- \
//!     --threads 16 --sizes 1000000 --workloads insert,readinsert --repeat 3 --no-btree
//! cargo run --release -p slabcache-bench --bin skiplist_ycsb -- --quick
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;
use slabcache_core::skiplist::{
    BSkipList, Config, DefaultConfig, Fanout128, Fanout16, Fanout32, Fanout64,
};

const SCAN_LEN: usize = 50;
const SAMPLE_EVERY: u64 = 8;

/// A map under test.
trait Index: Send + Sync + 'static {
    fn insert(&self, k: u64, v: u64);
    fn get(&self, k: u64) -> Option<u64>;
    /// Sums the values of up to `n` entries from `k` upwards.
    fn scan(&self, k: u64, n: usize) -> u64;
}

struct Bsl<C: Config>(BSkipList<u64, u64, C>);

impl<C: Config> Index for Bsl<C> {
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.0.insert(k, v);
    }
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.get(&k)
    }
    #[inline]
    fn scan(&self, k: u64, n: usize) -> u64 {
        let mut sum = 0;
        let mut left = n;
        self.0.for_each_while(Bound::Included(&k), |_, v| {
            sum += *v;
            left -= 1;
            left > 0
        });
        sum
    }
}

struct Skip(SkipMap<u64, u64>);

impl Index for Skip {
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.0.insert(k, v);
    }
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.get(&k).map(|e| *e.value())
    }
    #[inline]
    fn scan(&self, k: u64, n: usize) -> u64 {
        self.0.range(k..).take(n).map(|e| *e.value()).sum()
    }
}

struct Locked(RwLock<BTreeMap<u64, u64>>);

impl Index for Locked {
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.0.write().insert(k, v);
    }
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.read().get(&k).copied()
    }
    #[inline]
    fn scan(&self, k: u64, n: usize) -> u64 {
        self.0.read().range(k..).take(n).map(|(_, v)| *v).sum()
    }
}

/// splitmix64: the i-th key (keys are spread over the u64 space).
#[inline]
fn key_of(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// YCSB's Zipfian generator (Gray et al.), theta 0.99, ranks scrambled over
/// the key space so hot keys are spread out.
#[derive(Clone)]
struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64) -> Self {
        let theta = 0.99;
        let zetan: f64 = (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum();
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }
    #[inline]
    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            ((self.n as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        key_of(rank.min(self.n - 1) ^ 0x5555) % self.n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dist {
    Uniform,
    Zipfian,
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    ReadOnly,
    ReadUpdate,
    ReadInsert,
    Scan,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::ReadOnly => "read-only (100% get)",
            Workload::ReadUpdate => "50/50 read/update",
            Workload::ReadInsert => "50/50 read/insert (fresh keys)",
            Workload::Scan => "short scans (50 entries)",
        }
    }
}

struct Outcome {
    mops: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    /// Page faults (minor + major) the process took during the run.
    faults: u64,
}

/// Page faults (minor + major) this process has taken so far.
fn page_faults() -> u64 {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0;
        }
        (ru.ru_minflt + ru.ru_majflt) as u64
    }
}

impl Outcome {
    fn new(mops: f64, mut samples: Vec<u64>) -> Self {
        Outcome {
            mops,
            p50_ns: slabcache_bench::percentile_ns(&mut samples, 50.0),
            p99_ns: slabcache_bench::percentile_ns(&mut samples, 99.0),
            p999_ns: slabcache_bench::percentile_ns(&mut samples, 99.9),
            faults: 0,
        }
    }
    /// A peer that was not run.
    fn skipped() -> Self {
        Outcome {
            mops: f64::NAN,
            p50_ns: 0,
            p99_ns: 0,
            p999_ns: 0,
            faults: 0,
        }
    }
}

/// Fresh-key generations for read/insert runs: each run inserts keys no
/// earlier run (on any map) used, so every insert adds a key.
static FRESH_RUN: AtomicU64 = AtomicU64::new(1);

/// Runs `threads` threads doing `workload` on `map` (holding `n` keys) for `secs`.
fn run_mix<I: Index>(
    map: &Arc<I>,
    n: u64,
    threads: usize,
    workload: Workload,
    dist: Dist,
    zipf: &Zipf,
    secs: f64,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let run = FRESH_RUN.fetch_add(1, Ordering::Relaxed);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let map = Arc::clone(map);
            let stop = Arc::clone(&stop);
            let barrier = Arc::clone(&barrier);
            let zipf = zipf.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(key_of(t as u64 + 1) | 1);
                let mut samples = Vec::with_capacity(1 << 20);
                let mut ops = 0u64;
                let mut sink = 0u64;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let i = match dist {
                            Dist::Uniform => rng.next() % n,
                            Dist::Zipfian => zipf.sample(&mut rng),
                        };
                        let k = key_of(i);
                        let timed = ops.is_multiple_of(SAMPLE_EVERY);
                        let t0 = if timed { Some(Instant::now()) } else { None };
                        match workload {
                            Workload::ReadOnly => sink = sink.wrapping_add(map.get(k).unwrap_or(0)),
                            Workload::ReadUpdate => {
                                if rng.next() & 1 == 0 {
                                    sink = sink.wrapping_add(map.get(k).unwrap_or(0));
                                } else {
                                    map.insert(k, ops);
                                }
                            }
                            Workload::ReadInsert => {
                                if rng.next() & 1 == 0 {
                                    sink = sink.wrapping_add(map.get(k).unwrap_or(0));
                                } else {
                                    // Index n + (run, thread, op): disjoint from the
                                    // preloaded 0..n and from every other run's keys.
                                    let fresh = n + (run << 40) + ((t as u64) << 34) + ops;
                                    map.insert(key_of(fresh), ops);
                                }
                            }
                            Workload::Scan => sink = sink.wrapping_add(map.scan(k, SCAN_LEN)),
                        }
                        if let Some(t0) = t0 {
                            samples.push(t0.elapsed().as_nanos() as u64);
                        }
                        ops += 1;
                    }
                }
                std::hint::black_box(sink);
                (ops, samples)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut all = Vec::new();
    for h in handles {
        let (ops, s) = h.join().unwrap();
        total += ops;
        all.extend(s);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Outcome::new(total as f64 / elapsed / 1e6, all)
}

/// Inserts keys `0..n` into a fresh map from `threads` threads.
fn run_load<I: Index>(make: &dyn Fn() -> I, n: u64, threads: usize) -> (Outcome, Arc<I>) {
    let map = Arc::new(make());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let faults0 = page_faults();
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            let map = Arc::clone(&map);
            let barrier = Arc::clone(&barrier);
            let threads = threads as u64;
            std::thread::spawn(move || {
                let mut samples = Vec::with_capacity((n / threads / SAMPLE_EVERY + 1) as usize);
                barrier.wait();
                let mut i = t;
                let mut ops = 0u64;
                while i < n {
                    let k = key_of(i);
                    if ops.is_multiple_of(SAMPLE_EVERY) {
                        let t0 = Instant::now();
                        map.insert(k, i);
                        samples.push(t0.elapsed().as_nanos() as u64);
                    } else {
                        map.insert(k, i);
                    }
                    ops += 1;
                    i += threads;
                }
                samples
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut out = Outcome::new(n as f64 / elapsed / 1e6, all);
    out.faults = page_faults() - faults0;
    (out, map)
}

struct Args {
    threads: Vec<usize>,
    sizes: Vec<u64>,
    secs: f64,
    fanouts: Vec<usize>,
    workloads: Vec<String>,
    repeat: usize,
    btree: bool,
    /// Insert-only loads: run SkipMap's load before ours in each repeat.
    peer_first: bool,
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad list item {x:?}"))
        })
        .collect()
}

fn parse_args() -> Args {
    let mut a = Args {
        threads: vec![1, 2],
        sizes: vec![1_000_000, 10_000_000],
        secs: 1.0,
        fanouts: vec![],
        workloads: vec![
            "insert".into(),
            "read".into(),
            "update".into(),
            "scan".into(),
        ],
        repeat: 1,
        btree: true,
        peer_first: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => a.threads = parse_list(&val()),
            "--sizes" => a.sizes = parse_list(&val()),
            "--secs" => a.secs = val().parse().expect("--secs"),
            "--fanouts" => a.fanouts = parse_list(&val()),
            "--workloads" => a.workloads = parse_list(&val()),
            "--repeat" => a.repeat = val().parse().expect("--repeat"),
            "--no-btree" => a.btree = false,
            "--peer-first" => a.peer_first = true,
            "--quick" => {
                a.sizes = vec![1_000_000];
                a.secs = 0.3;
            }
            "-h" | "--help" => {
                println!(
                    "skiplist_ycsb [--threads 1,2,4,8,16] [--sizes 1000000,10000000] [--secs 1] \
                     [--workloads insert,read,update,readinsert,scan] [--repeat 1] [--no-btree] [--peer-first] \
                     [--fanouts 16,32,64] [--quick]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A load row: `fmt_row` plus the page faults each map's load took.
fn fmt_load_row(threads: usize, outs: &[Outcome]) -> String {
    format!(
        "{} {} | {} |",
        fmt_row(threads, outs),
        outs[0].faults,
        outs[1].faults
    )
}

fn fmt_row(threads: usize, outs: &[Outcome]) -> String {
    let mut row = format!("| {threads} |");
    for (i, o) in outs.iter().enumerate() {
        if o.mops.is_nan() {
            row += " - | - |";
        } else if i < 2 {
            row += &format!(
                " {:.2} | {} | {} | {} |",
                o.mops, o.p50_ns, o.p99_ns, o.p999_ns
            );
        } else {
            row += &format!(" {:.2} | {} |", o.mops, o.p99_ns);
        }
    }
    let ratio = outs[0].mops / outs[1].mops;
    let p99r = outs[1].p99_ns as f64 / outs[0].p99_ns.max(1) as f64;
    row += &format!(" {ratio:.2}x | {p99r:.2}x |");
    row
}

const HEADER: &str = "| threads | BSkipList Mops/s | p50 ns | p99 ns | p99.9 ns | SkipMap Mops/s | p50 ns | p99 ns | p99.9 ns | RwLock<BTreeMap> Mops/s | p99 ns | BSkipList/SkipMap throughput | SkipMap/BSkipList p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

const LOAD_HEADER: &str = "| threads | BSkipList Mops/s | p50 ns | p99 ns | p99.9 ns | SkipMap Mops/s | p50 ns | p99 ns | p99.9 ns | RwLock<BTreeMap> Mops/s | p99 ns | BSkipList/SkipMap throughput | SkipMap/BSkipList p99 | BSkipList page faults | SkipMap page faults |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn preload<I: Index>(make: &dyn Fn() -> I, n: u64, threads: usize) -> Arc<I> {
    run_load(make, n, threads).1
}

fn main() {
    let args = parse_args();
    let max_threads = *args.threads.iter().max().unwrap_or(&1);
    println!("# B-skiplist YCSB-like benchmark\n");
    println!(
        "u64 keys (splitmix-scrambled), u64 values; {} s per cell; p99 from 1 op in {SAMPLE_EVERY}; \
         {} logical CPUs.\n",
        args.secs,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let want = |w: &str| args.workloads.iter().any(|x| x == w);
    for &n in &args.sizes {
        let zipf = Zipf::new(n);
        if want("insert") {
            let order = if args.peer_first {
                " (SkipMap's load runs first in each repeat)"
            } else {
                ""
            };
            println!("## {n} keys: insert-only (load into an empty map){order}\n\n{LOAD_HEADER}");
            for &t in &args.threads {
                for _ in 0..args.repeat.max(1) {
                    let ours =
                        || run_load(&|| Bsl(BSkipList::<u64, u64, DefaultConfig>::new()), n, t).0;
                    let peer = || run_load(&|| Skip(SkipMap::new()), n, t).0;
                    let (a, b) = if args.peer_first {
                        let b = peer();
                        (ours(), b)
                    } else {
                        let a = ours();
                        (a, peer())
                    };
                    let c = if args.btree {
                        run_load(&|| Locked(RwLock::new(BTreeMap::new())), n, t).0
                    } else {
                        Outcome::skipped()
                    };
                    println!("{}", fmt_load_row(t, &[a, b, c]));
                }
            }
            println!();
        }
        let mixes: Vec<Workload> = [
            ("read", Workload::ReadOnly),
            ("update", Workload::ReadUpdate),
            ("readinsert", Workload::ReadInsert),
            ("scan", Workload::Scan),
        ]
        .into_iter()
        .filter(|(w, _)| want(w))
        .map(|(_, w)| w)
        .collect();
        if mixes.is_empty() {
            continue;
        }
        let bsl = preload(
            &|| Bsl(BSkipList::<u64, u64, DefaultConfig>::new()),
            n,
            max_threads,
        );
        let skip = preload(&|| Skip(SkipMap::new()), n, max_threads);
        let locked = Arc::new(Locked(RwLock::new(if args.btree {
            (0..n).map(|i| (key_of(i), i)).collect()
        } else {
            BTreeMap::new()
        })));
        for &w in &mixes {
            for dist in [Dist::Uniform, Dist::Zipfian] {
                let dname = if dist == Dist::Uniform {
                    "uniform"
                } else {
                    "zipfian 0.99"
                };
                println!("## {n} keys: {}, {dname}\n\n{HEADER}", w.name());
                for &t in &args.threads {
                    let a = run_mix(&bsl, n, t, w, dist, &zipf, args.secs);
                    let b = run_mix(&skip, n, t, w, dist, &zipf, args.secs);
                    let c = if args.btree {
                        run_mix(&locked, n, t, w, dist, &zipf, args.secs)
                    } else {
                        Outcome::skipped()
                    };
                    println!("{}", fmt_row(t, &[a, b, c]));
                }
                println!();
            }
        }
        // Single-thread point lookups against a plain BTreeMap (no lock).
        if want("read") {
            let plain = Arc::new(Plain((0..n).map(|i| (key_of(i), i)).collect()));
            println!("## {n} keys: single-thread lookups vs plain BTreeMap (no lock)\n");
            println!("| distribution | BSkipList Mops/s | BTreeMap Mops/s | BTreeMap/BSkipList time |\n|---|---:|---:|---:|");
            for dist in [Dist::Uniform, Dist::Zipfian] {
                let a = run_mix(&bsl, n, 1, Workload::ReadOnly, dist, &zipf, args.secs);
                let b = run_mix(&plain, n, 1, Workload::ReadOnly, dist, &zipf, args.secs);
                let dname = if dist == Dist::Uniform {
                    "uniform"
                } else {
                    "zipfian 0.99"
                };
                println!(
                    "| {dname} | {:.2} | {:.2} | {:.2}x |",
                    a.mops,
                    b.mops,
                    b.mops / a.mops
                );
            }
            println!();
        }
        drop((bsl, skip, locked));
    }
    if !args.fanouts.is_empty() {
        let n = args.sizes[0];
        let zipf = Zipf::new(n);
        let plain = Arc::new(Plain((0..n).map(|i| (key_of(i), i)).collect()));
        println!("## node size B: {n} keys, {max_threads} threads\n");
        println!("| B | insert-only Mops/s | read-only uniform Mops/s | read-only p99 ns | 50/50 uniform Mops/s | BTreeMap/BSkipList 1-thread lookup time |\n|---:|---:|---:|---:|---:|---:|");
        for &b in &args.fanouts {
            let row = match b {
                16 => fanout_row::<Fanout16>(n, max_threads, &zipf, args.secs, &plain),
                32 => fanout_row::<Fanout32>(n, max_threads, &zipf, args.secs, &plain),
                64 => fanout_row::<Fanout64>(n, max_threads, &zipf, args.secs, &plain),
                128 => fanout_row::<Fanout128>(n, max_threads, &zipf, args.secs, &plain),
                other => {
                    eprintln!("fan-out {other} not built in (16, 32, 64, 128)");
                    continue;
                }
            };
            println!("| {b} | {row} |");
        }
        println!();
    }
}

fn fanout_row<C: Config>(
    n: u64,
    threads: usize,
    zipf: &Zipf,
    secs: f64,
    plain: &Arc<Plain>,
) -> String {
    let (load, map) = run_load(&|| Bsl(BSkipList::<u64, u64, C>::new()), n, threads);
    let read = run_mix(
        &map,
        n,
        threads,
        Workload::ReadOnly,
        Dist::Uniform,
        zipf,
        secs,
    );
    let upd = run_mix(
        &map,
        n,
        threads,
        Workload::ReadUpdate,
        Dist::Uniform,
        zipf,
        secs,
    );
    let one = run_mix(&map, n, 1, Workload::ReadOnly, Dist::Uniform, zipf, secs);
    let base = run_mix(plain, n, 1, Workload::ReadOnly, Dist::Uniform, zipf, secs);
    format!(
        "{:.2} | {:.2} | {} | {:.2} | {:.2}x",
        load.mops,
        read.mops,
        read.p99_ns,
        upd.mops,
        base.mops / one.mops
    )
}

/// A plain `BTreeMap` (no lock): the single-thread lookup baseline.
struct Plain(BTreeMap<u64, u64>);

impl Index for Plain {
    fn insert(&self, _: u64, _: u64) {
        unreachable!("read-only baseline")
    }
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.get(&k).copied()
    }
    fn scan(&self, _: u64, _: usize) -> u64 {
        unreachable!("read-only baseline")
    }
}
