//! A crew of helper threads that one query's scan is split across without a
//! thread wake-up on its critical path.
//!
//! Handing one query's scan to rayon from outside its pool costs two
//! wake-ups — a sleeping worker's, then the caller's once the work is done —
//! which on a VM cost as much as a 100 µs scan saves (SIFT nprobe 8 took 118
//! µs split in 2 parts on 16 cores, 37 µs on one thread). Here the caller
//! publishes the work and starts on it at once; helpers that are awake join
//! and take parts from the same counter. Helpers stay awake, spinning, for
//! [`spin_budget`] after each job (as OpenMP's runtimes do after a parallel
//! region), so back-to-back queries find them ready; after that they sleep
//! and the next job wakes them without waiting for them. Nobody waits for a
//! helper that has not joined: the caller only waits, after the last part is
//! taken, for the parts that joined helpers are still scanning. So a split
//! is never much slower than the serial scan, whatever the helpers do.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Mutex;
//! use slabcache_core::vector::crew;
//! // Sum 0..1000 in 10 parts, helpers taking parts when awake.
//! let (next, total) = (AtomicUsize::new(0), Mutex::new(0u64));
//! crew::run(9, &|| loop {
//!     let part = next.fetch_add(1, Ordering::Relaxed);
//!     if part >= 10 {
//!         break;
//!     }
//!     let s: u64 = (part * 100..(part + 1) * 100).map(|x| x as u64).sum();
//!     *total.lock().unwrap() += s;
//! });
//! assert_eq!(*total.lock().unwrap(), 499_500);
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::vector::topk::TopK;

/// The most helper threads (a one-query scan reads ~1 MB: past ~16 cores
/// the parts are too small to pay for joining).
const MAX_HELPERS: usize = 15;
/// Default time a helper spins for the next job after each one.
const DEFAULT_SPIN_US: u64 = 200;
/// Byte-products (rows × dim) per part of a one-query scan split across the
/// crew: ~70 KB of SIFT codes, 6 µs of one core's memory bandwidth, so that
/// helpers joining late still find parts left and a part outweighs its
/// claim and heap merge. `SLABCACHE_CREW_PART_K` at build time (units of
/// 1,024) overrides it (bench A/B builds only).
pub const PART_WORK: usize = crate::vector::scan::kib_or(option_env!("SLABCACHE_CREW_PART_K"), 64);

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

/// One published job: a type-erased `&F` and how many helpers may still join.
struct Job {
    data: *const (),
    call: unsafe fn(*const ()),
    seats: AtomicUsize,
    panicked: AtomicBool,
}

/// Calls the `F` behind `data`.
///
/// # Safety
/// `data` must point at a live `F`.
unsafe fn call_as<F: Fn() + Sync>(data: *const ()) {
    // SAFETY: the caller guarantees `data` is a live `&F` (see `run`).
    unsafe { (*(data as *const F))() }
}

/// The process-wide crew.
struct Crew {
    /// The job of the current `run`, or null.
    job: AtomicPtr<Job>,
    /// Bumped once per published job; helpers join each epoch at most once.
    epoch: AtomicU64,
    /// Helpers between "about to look at `job`" and "done with it".
    entered: AtomicUsize,
    /// Helpers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
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
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            entered: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
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
                .spawn(move || crew.help())
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

/// Runs `work` on the calling thread and on up to `max_helpers` crew threads
/// at once, and returns when every participant has returned from it. `work`
/// must take its parts from shared state and return when none is left (so
/// that any number of participants, the caller alone included, does all of
/// it); it is called at most once per participant.
///
/// A panic in a helper's call is re-raised here after the others finish.
pub fn run<F: Fn() + Sync>(max_helpers: usize, work: &F) {
    if max_helpers == 0 {
        work();
        return;
    }
    let c = crew();
    if c.helpers == 0
        || c.busy
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
    {
        work();
        return;
    }
    if std::process::id() != c.pid {
        // A forked child: its crew threads did not survive the fork.
        c.busy.store(false, Release);
        work();
        return;
    }
    let job = Job {
        data: work as *const F as *const (),
        call: call_as::<F>,
        seats: AtomicUsize::new(max_helpers.min(c.helpers)),
        panicked: AtomicBool::new(false),
    };
    c.job.store(&job as *const Job as *mut Job, SeqCst);
    c.epoch.fetch_add(1, SeqCst);
    if c.sleepers.load(SeqCst) > 0 {
        // Wake them for the next job; this one does not wait for them.
        let _g = c.lock.lock().unwrap_or_else(|e| e.into_inner());
        c.wake.notify_all();
    }
    // A panic here must not leave `job` published: retract it first.
    let mine = catch_unwind(AssertUnwindSafe(work));
    c.job.store(std::ptr::null_mut(), SeqCst);
    // With `job` retracted (SeqCst), a helper that enters from now on sees
    // null; one that entered before is counted in `entered`.
    let mut spins = 0u32;
    while c.entered.load(SeqCst) != 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    c.busy.store(false, Release);
    if let Err(p) = mine {
        std::panic::resume_unwind(p);
    }
    if job.panicked.load(Acquire) {
        panic!("a slabcache crew thread panicked while scanning");
    }
}

/// The best `k` over `parts` numbered parts of one query's scan, split
/// across the caller and up to `max_helpers` crew threads with [`run`]:
/// each participant offers the parts it takes (`scan(part, heap, buf)`) to a
/// heap of its own, and the heaps are merged. Ties go to the smaller key, so
/// the result does not depend on who scanned what.
pub fn top_k_over_parts<S>(parts: usize, max_helpers: usize, k: usize, scan: S) -> TopK
where
    S: Fn(usize, &mut TopK, &mut Vec<i32>) + Sync,
{
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    run(max_helpers, &|| {
        let (mut heap, mut buf) = (None, Vec::new());
        loop {
            let j = next.fetch_add(1, Relaxed);
            if j >= parts {
                break;
            }
            scan(j, heap.get_or_insert_with(|| TopK::new(k)), &mut buf);
        }
        if let Some(h) = heap {
            found.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        }
    });
    let mut merged = TopK::new(k);
    for h in found.into_inner().unwrap_or_else(|e| e.into_inner()) {
        merged.merge(h);
    }
    merged
}

impl Crew {
    /// A helper's life: spin for a new epoch, join its job, repeat; sleep
    /// after [`spin_budget`] without one.
    fn help(&self) {
        let mut seen = self.epoch.load(SeqCst);
        let budget = spin_budget();
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if self.epoch.load(Relaxed) != seen {
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256) && start.elapsed() >= budget {
                    self.sleep(seen);
                    break;
                }
                std::hint::spin_loop();
            }
            seen = self.epoch.load(SeqCst);
            self.join();
        }
    }

    /// Sleeps until the epoch moves past `seen`.
    fn sleep(&self, seen: u64) {
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, SeqCst);
        while self.epoch.load(SeqCst) == seen {
            g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, SeqCst);
    }

    /// Joins the published job, if any and if a seat is left.
    fn join(&self) {
        self.entered.fetch_add(1, SeqCst);
        let p = self.job.load(SeqCst);
        if !p.is_null() {
            // SAFETY: `run` publishes `p` (a `Job` on its stack) before it
            // starts its own share and, after retracting it, waits until
            // `entered` is 0; both sides use SeqCst, so either this load saw
            // null or `run` sees this helper counted and waits for it. So the
            // job (and the `work` it points at) outlives this use.
            let job = unsafe { &*p };
            let seated = job
                .seats
                .fetch_update(Relaxed, Relaxed, |s| s.checked_sub(1))
                .is_ok();
            if seated {
                // SAFETY: `job.data` is the `&F` that `job.call` was made
                // for, alive for the reason above.
                let r = catch_unwind(|| unsafe { (job.call)(job.data) });
                if r.is_err() {
                    job.panicked.store(true, Release);
                }
            }
        }
        self.entered.fetch_sub(1, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every part is done exactly once, whoever joins, over many jobs.
    #[test]
    fn every_part_once_over_many_jobs() {
        for round in 0..2000u64 {
            let parts = 1 + (round % 37) as usize;
            let next = AtomicUsize::new(0);
            let done: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
            run(parts - 1, &|| loop {
                let j = next.fetch_add(1, Relaxed);
                if j >= parts {
                    break;
                }
                done[j].fetch_add(1, Relaxed);
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
                        let next = AtomicUsize::new(0);
                        let sum = AtomicU64::new(0);
                        run(7, &|| loop {
                            let j = next.fetch_add(1, Relaxed);
                            if j >= 16 {
                                break;
                            }
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
                let next = AtomicUsize::new(0);
                run(3, &|| loop {
                    let j = next.fetch_add(1, Relaxed);
                    if j >= 64 {
                        break;
                    }
                    if std::thread::current().id() != caller {
                        panic!("boom");
                    }
                    std::thread::sleep(Duration::from_micros(20));
                });
            }
        }));
        // With helpers, some helper joined and panicked; without, none did.
        assert_eq!(r.is_err(), helpers() > 0);
        let next = AtomicUsize::new(0);
        let n = AtomicUsize::new(0);
        run(3, &|| loop {
            if next.fetch_add(1, Relaxed) >= 10 {
                break;
            }
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 10);
    }
}
