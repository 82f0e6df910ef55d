//! A striped length counter: each thread bumps its own cache line, so inserts
//! on many cores do not fight over one counter; `len()` adds the stripes.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

const STRIPES: usize = 32;

pub(crate) struct StripedCounter {
    stripes: Box<[CachePadded<AtomicIsize>]>,
}

thread_local! {
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

impl StripedCounter {
    pub fn new() -> Self {
        StripedCounter {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(AtomicIsize::new(0)))
                .collect(),
        }
    }

    #[inline]
    pub fn add(&self, delta: isize) {
        let i = STRIPE.with(|s| *s);
        self.stripes[i].fetch_add(delta, Ordering::Relaxed);
    }

    /// The sum; exact when no write is in flight.
    pub fn sum(&self) -> usize {
        let s: isize = self.stripes.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        s.max(0) as usize
    }
}
