//! A crew of helper threads that one query's scan is split across without a
//! thread wake-up on its critical path.
//!
//! Handing one query's scan to rayon from outside its pool costs two
//! wake-ups — a sleeping worker's, then the caller's once the work is done —
//! which on a VM cost as much as a 100 µs scan saves (SIFT nprobe 8 took 118
//! µs split in 2 parts on 16 cores, 37 µs on one thread). Here the caller
//! publishes a job of numbered parts and starts on them at once; helpers
//! that are awake join and claim parts from the same word. Helpers stay
//! awake, spinning, for [`spin_budget`] after each job (as OpenMP's runtimes
//! do after a parallel region), so back-to-back queries find them ready;
//! after that they sleep and the next job wakes them without waiting for
//! them.
//!
//! The caller waits only for helpers that claimed a part, never for one that
//! is late or asleep, so a split is never much slower than the serial scan.
//! What a join costs is cache-line transfers between cores (a few hundred ns
//! each on the 16-core VM), so the protocol keeps them few: helpers spin on
//! a line written once per job; the claim counter, the count of helpers
//! holding parts and the job's generation share one word, so a claim is one
//! compare-and-swap; helpers without a seat in a job touch nothing else; and
//! each participant keeps its results on a line of its own. (The first
//! version counted every helper in and out of every job on shared counters:
//! a split of 16 empty parts cost 7.8 µs median on 16 cores.)
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use slabcache_core::vector::crew;
//! // Sum 0..1000 in 10 parts, helpers taking parts when awake.
//! let total = AtomicU64::new(0);
//! crew::run_parts(10, 9, &|part, _seat| {
//!     let s: u64 = (part * 100..(part + 1) * 100).map(|x| x as u64).sum();
//!     total.fetch_add(s, Ordering::Relaxed);
//! });
//! assert_eq!(total.load(Ordering::Relaxed), 499_500);
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::vector::topk::TopK;

/// The most helper threads (a one-query scan reads ~1 MB: past ~16 cores
/// the parts are too small to pay for joining).
const MAX_HELPERS: usize = 15;
/// Participants of one job: the caller (seat 0) and every helper.
pub const SEATS: usize = MAX_HELPERS + 1;
/// Default time a helper spins for the next job after each one.
const DEFAULT_SPIN_US: u64 = 200;
/// Byte-products (rows × dim) per part of a one-query scan split across the
/// crew: ~70 KB of SIFT codes, 6 µs of one core's memory bandwidth, so that
/// helpers joining late still find parts left and a part outweighs its
/// claim and heap merge. `SLABCACHE_CREW_PART_K` at build time (units of
/// 1,024) overrides it (bench A/B builds only).
pub const PART_WORK: usize = crate::vector::scan::kib_or(option_env!("SLABCACHE_CREW_PART_K"), 64);

/// Byte-products from which one query's probe of the centroids (a ranking
/// of every row, then a selection) is split across the crew; below it the
/// caller ranks them alone. Higher than a scan's two parts: a probe's rows
/// cost less than a scanned list's (no top-k pushes), so a split pays for
/// its join later. `SLABCACHE_CREW_PROBE_SPLIT_K` at build time (units of
/// 1,024) overrides it (bench A/B builds only).
pub const PROBE_SPLIT_WORK: usize =
    crate::vector::scan::kib_or(option_env!("SLABCACHE_CREW_PROBE_SPLIT_K"), 128);

// The claim word: generation (32 bits) | next part (24) | helpers holding parts (8).
const ACTIVE_ONE: u64 = 1;
const NEXT_ONE: u64 = 1 << 8;
/// The most parts one job can have (the caller's unchecked claims may run
/// past the last part by one per participant without reaching the
/// generation bits).
pub const MAX_PARTS: usize = (1 << 24) - 1 - 2 * SEATS;
const _: () = assert!(MAX_PARTS + 2 * SEATS < 1 << 24 && MAX_HELPERS < 32);

fn gen_of(w: u64) -> u32 {
    (w >> 32) as u32
}
fn next_of(w: u64) -> usize {
    ((w >> 8) & 0xff_ffff) as usize
}
fn active_of(w: u64) -> u64 {
    w & 0xff
}

/// How long helpers spin after a job before they sleep:
/// `SLABCACHE_CREW_SPIN_US` (microseconds, read once), else 200 µs. 0 makes
/// them sleep at once: a job then wakes them but is usually done before they
/// arrive, so one-query scans run on the calling thread.
pub fn spin_budget() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("SLABCACHE_CREW_SPIN_US")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_SPIN_US);
        Duration::from_micros(us)
    })
}

/// One published job, on its caller's stack.
struct Job<'a> {
    work: &'a (dyn Fn(usize, usize) + Sync),
    panicked: AtomicBool,
}

/// What the caller writes before it publishes a generation (read by helpers
/// after they see it, and trusted only once a claim on that generation
/// succeeds).
struct JobSlot {
    job: AtomicPtr<Job<'static>>,
    parts: AtomicUsize,
    /// Helpers `0..seats` may claim parts of this job.
    seats: AtomicUsize,
}

/// The process-wide crew.
struct Crew {
    /// The latest published generation: what idle helpers spin on.
    published: CachePadded<AtomicU64>,
    /// See the layout above; only the caller and seated helpers touch it.
    word: CachePadded<AtomicU64>,
    slot: CachePadded<JobSlot>,
    /// Bit `i`: helper `i` is asleep (or about to be) on `wake`.
    sleepers: AtomicU32,
    lock: Mutex<()>,
    wake: Condvar,
    /// One job at a time; a second caller meanwhile runs its work alone.
    busy: AtomicBool,
    helpers: usize,
    /// The process that spawned the helpers (a forked child has none).
    pid: u32,
}

fn crew() -> &'static Crew {
    static CREW: OnceLock<&'static Crew> = OnceLock::new();
    CREW.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Outside any pool this is the global pool's size (RAYON_NUM_THREADS).
        let helpers = rayon::current_num_threads()
            .min(cpus)
            .saturating_sub(1)
            .min(MAX_HELPERS);
        let crew: &'static Crew = Box::leak(Box::new(Crew {
            published: CachePadded::new(AtomicU64::new(0)),
            word: CachePadded::new(AtomicU64::new(0)),
            slot: CachePadded::new(JobSlot {
                job: AtomicPtr::new(std::ptr::null_mut()),
                parts: AtomicUsize::new(0),
                seats: AtomicUsize::new(0),
            }),
            sleepers: AtomicU32::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
            helpers,
            pid: std::process::id(),
        }));
        let mut spawned = 0;
        for i in 0..helpers {
            let ok = std::thread::Builder::new()
                .name(format!("slabcache-crew-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || crew.help(i))
                .is_ok();
            spawned += ok as usize;
        }
        if spawned == 0 {
            // No thread could be made: every job runs on its caller.
            crew.busy.store(true, Relaxed);
        }
        crew
    })
}

/// Helper threads the crew has (0 on one CPU or with a 1-thread rayon pool).
pub fn helpers() -> usize {
    crew().helpers
}

/// Runs `work(part, seat)` once for every `part` in `0..parts`, on the
/// calling thread (seat 0) and on up to `max_helpers` crew threads at once
/// (seats `1..SEATS`; one seat is one thread for the whole job, so per-seat
/// state needs no lock against other seats). Returns when every part is
/// done. Parts are claimed in increasing order.
///
/// A panic in a helper's part is re-raised here after the others finish;
/// a panic in the caller's part stops the claims and is re-raised once the
/// helpers holding parts are done.
pub fn run_parts<F: Fn(usize, usize) + Sync>(parts: usize, max_helpers: usize, work: &F) {
    let serial = || (0..parts).for_each(|j| work(j, 0));
    if parts <= 1 || max_helpers == 0 || parts > MAX_PARTS {
        serial();
        return;
    }
    let c = crew();
    if c.helpers == 0
        || c.busy
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
    {
        serial();
        return;
    }
    if std::process::id() != c.pid {
        // A forked child: its crew threads did not survive the fork.
        c.busy.store(false, Release);
        serial();
        return;
    }
    let job = Job {
        work,
        panicked: AtomicBool::new(false),
    };
    let p = &job as *const Job<'_> as *mut Job<'static>;
    c.slot.job.store(p, Relaxed);
    c.slot.parts.store(parts, Relaxed);
    let seats = max_helpers.min(c.helpers);
    c.slot.seats.store(seats, Relaxed);
    // No helper holds a part now (the last job waited for that), so the
    // word is rewritten whole: a stale helper's claim on it fails.
    let g = gen_of(c.word.load(Relaxed)).wrapping_add(1);
    c.word.store((g as u64) << 32, Release);
    c.published.store(g as u64, SeqCst);
    if c.sleepers.load(SeqCst) & ((1u32 << seats) - 1) != 0 {
        // Wake them for the next job; this one does not wait for them. Only
        // when a helper this job could seat sleeps: helpers past the seats of
        // every job (15 helpers, one-query jobs of 3-11 parts) fall asleep
        // after each spin budget, and waking them costs the caller a futex
        // call for nothing. (No one-query time changed measurably with it.)
        let _g = c.lock.lock().unwrap_or_else(|e| e.into_inner());
        c.wake.notify_all();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| loop {
        // The caller owns this generation, so it claims without a check
        // (overshooting the last part by at most one per participant).
        let j = next_of(c.word.fetch_add(NEXT_ONE, AcqRel));
        if j >= parts {
            break;
        }
        work(j, 0);
    }));
    if mine.is_err() {
        // Stop further claims: move `next` past the last part.
        let _ = c.word.fetch_update(AcqRel, Acquire, |w| {
            (next_of(w) < parts).then(|| w + (parts - next_of(w)) as u64 * NEXT_ONE)
        });
    }
    let mut spins = 0u32;
    while active_of(c.word.load(Acquire)) != 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    c.slot.job.store(std::ptr::null_mut(), Relaxed);
    c.busy.store(false, Release);
    if let Err(p) = mine {
        std::panic::resume_unwind(p);
    }
    if job.panicked.load(Acquire) {
        panic!("a slabcache crew thread panicked while scanning");
    }
}

/// The best `k` over `parts` numbered parts of one query's scan, split
/// across the caller and up to `max_helpers` crew threads with
/// [`run_parts`]: each seat offers the parts it takes (`scan(part, heap,
/// buf)`) to a heap of its own, and the heaps are merged. Ties go to the
/// smaller key, so the result does not depend on who scanned what.
///
/// ```
/// use slabcache_core::vector::crew;
/// // The 3 largest of 0..1000, scanned in 10 parts.
/// let top = crew::top_k_over_parts(10, 9, 3, |j, heap, _buf| {
///     for x in j * 100..(j + 1) * 100 {
///         heap.push(x as f32, x as u64);
///     }
/// });
/// assert_eq!(top.into_sorted(), vec![(999.0, 999), (998.0, 998), (997.0, 997)]);
/// ```
pub fn top_k_over_parts<S>(parts: usize, max_helpers: usize, k: usize, scan: S) -> TopK
where
    S: Fn(usize, &mut TopK, &mut Vec<i32>) + Sync,
{
    type Seat = CachePadded<Mutex<Option<(TopK, Vec<i32>)>>>;
    let seats: [Seat; SEATS] = std::array::from_fn(|_| CachePadded::new(Mutex::new(None)));
    run_parts(parts, max_helpers, &|j, seat| {
        // Only this seat's thread locks it during the job: never contended.
        let mut g = seats[seat].lock().unwrap_or_else(|e| e.into_inner());
        let (heap, buf) = g.get_or_insert_with(|| (TopK::new(k), Vec::new()));
        scan(j, heap, buf);
    });
    let mut merged = TopK::new(k);
    for s in seats {
        if let Some((h, _)) = s
            .into_inner()
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
        {
            merged.merge(h);
        }
    }
    merged
}

impl Crew {
    /// Helper `me`'s life: spin for a new generation, take parts of its job
    /// if seated, repeat; sleep after [`spin_budget`] without one.
    fn help(&self, me: usize) {
        let mut seen = self.published.load(SeqCst);
        let budget = spin_budget();
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if self.published.load(Acquire) != seen {
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256) && start.elapsed() >= budget {
                    self.sleep(me, seen);
                    break;
                }
                std::hint::spin_loop();
            }
            seen = self.published.load(Acquire);
            if me < self.slot.seats.load(Relaxed) {
                self.take_parts(seen as u32, me + 1);
            }
        }
    }

    /// Sleeps until a generation after `seen` is published and someone
    /// wakes the sleepers (a job that can seat a sleeping helper does).
    fn sleep(&self, me: usize, seen: u64) {
        let bit = 1u32 << me;
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_or(bit, SeqCst);
        while self.published.load(SeqCst) == seen {
            g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_and(!bit, SeqCst);
    }

    /// Claims and runs parts of generation `g` until none is left.
    fn take_parts(&self, g: u32, seat: usize) {
        // The first claim both takes a part and counts this helper in, in one
        // compare-and-swap that fails if the job is another or has no part left.
        let mut w = self.word.load(Acquire);
        let first = loop {
            let parts = self.slot.parts.load(Relaxed);
            if gen_of(w) != g || next_of(w) >= parts {
                return;
            }
            match self
                .word
                .compare_exchange_weak(w, w + NEXT_ONE + ACTIVE_ONE, AcqRel, Acquire)
            {
                Ok(_) => break next_of(w),
                Err(now) => w = now,
            }
        };
        // SAFETY: this helper is counted in the word's active count, and
        // `run_parts` neither returns nor republishes until that count is 0,
        // so the `Job` (and the `work` it borrows) that the slot names for
        // generation `g` is alive; the successful claim (AcqRel) read the
        // caller's Release store that followed its writes to the slot.
        let job = unsafe { &*self.slot.job.load(Relaxed) };
        // Parts are read after the claim too: they are this job's for the same reason.
        let parts = self.slot.parts.load(Relaxed);
        let mut j = first;
        while j < parts {
            if catch_unwind(AssertUnwindSafe(|| (job.work)(j, seat))).is_err() {
                job.panicked.store(true, Release);
            }
            // While counted in, the generation cannot change: claim freely.
            j = next_of(self.word.fetch_add(NEXT_ONE, AcqRel));
        }
        self.word.fetch_sub(ACTIVE_ONE, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every part is done exactly once, on a seat that no other thread used
    /// in the same job, over many jobs.
    #[test]
    fn every_part_once_over_many_jobs() {
        for round in 0..2000u64 {
            let parts = 1 + (round % 37) as usize;
            let done: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
            let owner: Vec<Mutex<Option<std::thread::ThreadId>>> =
                (0..SEATS).map(|_| Mutex::new(None)).collect();
            run_parts(parts, parts - 1, &|j, seat| {
                done[j].fetch_add(1, Relaxed);
                let me = std::thread::current().id();
                let mut o = owner[seat].lock().unwrap();
                assert_eq!(*o.get_or_insert(me), me, "seat {seat} shared");
            });
            assert!(done.iter().all(|d| d.load(Relaxed) == 1), "round {round}");
        }
    }

    /// Concurrent callers: one gets the crew, the others run alone; all
    /// finish with their own parts done once.
    #[test]
    fn concurrent_callers() {
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    for _ in 0..300 {
                        let sum = AtomicU64::new(0);
                        run_parts(16, 7, &|j, _| {
                            sum.fetch_add(j as u64 + t, Relaxed);
                        });
                        assert_eq!(sum.load(Relaxed), 120 + 16 * t);
                    }
                });
            }
        });
    }

    /// A helper's panic reaches the caller and leaves the crew usable.
    #[test]
    fn helper_panic_is_reraised() {
        let caller = std::thread::current().id();
        let r = catch_unwind(AssertUnwindSafe(|| {
            for _ in 0..200 {
                run_parts(64, 3, &|_, _| {
                    if std::thread::current().id() != caller {
                        panic!("boom");
                    }
                    std::thread::sleep(Duration::from_micros(20));
                });
            }
        }));
        // With helpers, some helper joined and panicked; without, none did.
        assert_eq!(r.is_err(), helpers() > 0);
        let n = AtomicUsize::new(0);
        run_parts(10, 3, &|_, _| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 10);
    }

    /// The caller's own panic stops the job, waits for the helpers and
    /// leaves the crew usable; no part runs twice.
    #[test]
    fn caller_panic_is_reraised() {
        let caller = std::thread::current().id();
        let done: Vec<AtomicU64> = (0..200).map(|_| AtomicU64::new(0)).collect();
        let r = catch_unwind(AssertUnwindSafe(|| {
            run_parts(200, 3, &|j, _| {
                done[j].fetch_add(1, Relaxed);
                if j >= 5 && std::thread::current().id() == caller {
                    panic!("caller boom");
                }
                std::thread::sleep(Duration::from_micros(10));
            });
        }));
        assert!(r.is_err());
        assert!(done.iter().all(|d| d.load(Relaxed) <= 1));
        let n = AtomicUsize::new(0);
        run_parts(50, 3, &|_, _| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 50);
    }

    /// Helpers asleep past their spin budget are woken by a job that can
    /// seat them (and only the caller's parts run while they wake).
    #[test]
    fn sleeping_helpers_are_woken() {
        if helpers() == 0 {
            return;
        }
        let caller = std::thread::current().id();
        std::thread::sleep(spin_budget() * 4 + Duration::from_millis(20));
        let mut joined = false;
        for _ in 0..200 {
            let helped = AtomicBool::new(false);
            run_parts(8, 1, &|_, _| {
                if std::thread::current().id() != caller {
                    helped.store(true, Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            });
            if helped.load(Relaxed) {
                joined = true;
                break;
            }
        }
        assert!(joined, "no helper joined after sleeping");
    }

    #[test]
    fn word_fields() {
        let w = (7u64 << 32) | (5 * NEXT_ONE) | 3;
        assert_eq!((gen_of(w), next_of(w), active_of(w)), (7, 5, 3));
    }
}
