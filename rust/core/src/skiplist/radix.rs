//! A stable LSD radix sort for batches whose keys have an order-preserving
//! 64-bit image (`i64`, `u64`, [`F64Key`]), used by the batch inserts in
//! place of a comparison sort.
//!
//! A batch of 1M `(i64, value)` pairs in random order (a Python dict's
//! items, say) took ~55 ms in the comparison sort on the dev VM, over half
//! of building the map from it. Radix passes are sequential reads and
//! scattered writes into 256 buckets, and only the bytes where the keys
//! differ are sorted on: keys below 2^24 need 3 passes, not 8.

use std::any::TypeId;
use std::mem::MaybeUninit;

use super::F64Key;

/// The key's image under an order-preserving map to `u64` (`a < b` exactly
/// when `image(a) < image(b)`), if its type has one.
#[inline(always)]
pub(crate) fn image<K: 'static>(k: &K) -> Option<u64> {
    // `TypeId` comparisons fold at compile time (a `dyn Any` downcast did
    // not: a virtual call per key, which made the sort slower than a
    // comparison sort).
    let t = TypeId::of::<K>();
    let p = k as *const K;
    if t == TypeId::of::<i64>() {
        // SAFETY: `K` is `i64` (same type id), so `p` points to an `i64`.
        let i = unsafe { *(p as *const i64) };
        return Some((i as u64) ^ (1 << 63));
    }
    if t == TypeId::of::<u64>() {
        // SAFETY: `K` is `u64`.
        return Some(unsafe { *(p as *const u64) });
    }
    if t == TypeId::of::<F64Key>() {
        // SAFETY: `K` is `F64Key`.
        let b = unsafe { *(p as *const F64Key) }.get().to_bits();
        // The image of `f64::total_cmp`: negative numbers flip all bits,
        // others only the sign bit. (F64Key holds no NaN and no -0.0.)
        return Some(if b >> 63 == 1 { !b } else { b ^ (1 << 63) });
    }
    None
}

/// Whether `K` has an [`image`] (decided at compile time per `K`).
#[inline(always)]
pub(crate) fn has_image<K: 'static>() -> bool {
    let t = TypeId::of::<K>();
    t == TypeId::of::<i64>() || t == TypeId::of::<u64>() || t == TypeId::of::<F64Key>()
}

/// Sorts `items` by `key(item)`'s [`image`], stably (equal keys keep their
/// order), if `K` has an image and the keys differ in at most
/// `max_passes * MAX_BITS` low bits (more passes lose to a comparison
/// sort); else returns `false` with `items` untouched. Allocates one
/// scratch buffer as large as `items`.
pub(crate) fn sort_by_image<T, K: 'static>(
    items: &mut Vec<T>,
    key: impl Fn(&T) -> &K,
    max_passes: u32,
) -> bool {
    let n = items.len();
    if !has_image::<K>() {
        return false;
    }
    if n < 2 {
        return true;
    }
    let img = |t: &T| image(key(t)).expect("K has an image (checked above)");
    // The bits where the keys differ at all, sorted on in `passes` digits
    // of at most `MAX_BITS` bits each (keys below 2^22: two passes). A
    // sample first, so that a batch too wide for the radix sort costs
    // little before it falls back.
    let first = img(&items[0]);
    let spread = |ts: &[T]| ts.iter().fold(0u64, |v, t| v | (img(t) ^ first));
    let passes_for = |varies: u64| {
        if varies == 0 {
            return 0;
        }
        let bits = 64 - varies.leading_zeros() - varies.trailing_zeros();
        bits.div_ceil(MAX_BITS)
    };
    let step = (n / 1024).max(1);
    let sample = items
        .iter()
        .step_by(step)
        .fold(0u64, |v, t| v | (img(t) ^ first));
    if passes_for(sample) > max_passes {
        return false;
    }
    let varies = spread(items);
    if varies == 0 {
        return true;
    }
    let passes = passes_for(varies);
    if passes > max_passes {
        return false;
    }
    let lo = varies.trailing_zeros();
    let bits = 64 - varies.leading_zeros() - lo;
    let width = bits.div_ceil(passes);
    let mask = (1usize << width) - 1;
    let digit = |x: u64, p: u32| (x >> (lo + p * width)) as usize & mask;
    // One pass for every digit's histogram.
    let mut counts = vec![0usize; (passes as usize) << width];
    for t in items.iter() {
        let x = img(t);
        for p in 0..passes {
            counts[((p as usize) << width) + digit(x, p)] += 1;
        }
    }
    let mut scratch: Vec<MaybeUninit<T>> = Vec::with_capacity(n);
    // From here the entries are moved bitwise between the two buffers;
    // `items` owns none of them until the end (nothing below can panic:
    // `img` reads a plain integer and the indices stay in range by the
    // counts).
    // SAFETY: length 0 only forgets the entries; they are all moved out
    // below and moved back (or the buffers swapped) before it is reset.
    unsafe { items.set_len(0) };
    let mut src = items.as_mut_ptr();
    let mut dst = scratch.as_mut_ptr() as *mut T;
    let mut at = vec![0usize; 1 << width];
    for p in 0..passes {
        let mut sum = 0;
        for (a, &c) in at.iter_mut().zip(&counts[(p as usize) << width..]) {
            *a = sum;
            sum += c;
        }
        for i in 0..n {
            // SAFETY: `src` holds `n` initialised entries (all of `items`'
            // buffer, or all of `scratch`'s after an odd number of passes);
            // each is read once per pass and written once to a distinct slot
            // of `dst` (the prefix sums give every bucket its own range, of
            // exactly its count), so after the pass `dst` holds all `n`.
            unsafe {
                let t = src.add(i);
                let b = digit(img(&*t), p);
                std::ptr::copy_nonoverlapping(t, dst.add(at[b]), 1);
                at[b] += 1;
            }
        }
        std::mem::swap(&mut src, &mut dst);
    }
    if src == items.as_mut_ptr() {
        // SAFETY: `items`' buffer holds the `n` sorted entries again;
        // `scratch` (length 0) owns none of them.
        unsafe { items.set_len(n) };
    } else {
        // The sorted entries are in `scratch`'s buffer: it becomes `items`'
        // (no copy back), and `items`' old buffer, holding no entry, is freed.
        let mut scratch = std::mem::ManuallyDrop::new(scratch);
        let cap = scratch.capacity();
        // SAFETY: `scratch`'s buffer was allocated for `cap` `T`s (as
        // `MaybeUninit<T>`, the same layout) and holds the `n` sorted
        // entries; it is no longer owned by `scratch` (not dropped).
        let sorted = unsafe { Vec::from_raw_parts(scratch.as_mut_ptr() as *mut T, n, cap) };
        // `items` has length 0: dropping its old buffer drops no entry.
        *items = sorted;
    }
    true
}

/// The widest digit: 2^11 buckets of counts (16 KiB) stay in L1/L2.
const MAX_BITS: u32 = 11;

#[cfg(test)]
mod tests {
    use super::*;

    fn check<K: Ord + Clone + 'static + std::fmt::Debug>(keys: Vec<K>) {
        let mut items: Vec<(K, usize)> =
            keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
        let mut want = items.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0)); // stable
        assert!(sort_by_image(&mut items, |t| &t.0, 6));
        assert_eq!(items, want);
    }

    fn rng(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    #[test]
    fn sorts_like_a_stable_comparison_sort() {
        let mut r = rng(7);
        check::<i64>((0..5000).map(|_| r() as i64).collect());
        check::<i64>((0..5000).map(|_| (r() % 100) as i64 - 50).collect());
        check::<i64>(vec![i64::MAX, i64::MIN, 0, -1, 1, i64::MIN, i64::MAX]);
        check::<u64>((0..5000).map(|_| r() >> (r() % 64)).collect());
        check::<u64>(vec![3; 100]);
        check::<u64>(vec![]);
        check::<u64>(vec![1]);
        let floats = [
            -1e300,
            -2.5,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        check::<F64Key>(
            (0..3000)
                .map(|_| F64Key::new(floats[(r() % 10) as usize]).unwrap())
                .collect(),
        );
        check::<F64Key>(
            (0..3000)
                .map(|_| f64::from_bits(r()))
                .filter(|f| !f.is_nan())
                .map(|f| F64Key::new(f).unwrap())
                .collect(),
        );
        // Only the high byte varies: one pass.
        check::<u64>((0..1000).map(|_| r() & 0xFF00_0000_0000_0000).collect());
    }

    #[test]
    fn moves_owned_values_without_leaks_or_double_drops() {
        use std::sync::Arc;
        let token = Arc::new(());
        let mut r = rng(3);
        let mut items: Vec<(i64, Arc<()>)> = (0..2000)
            .map(|_| ((r() % 300) as i64, token.clone()))
            .collect();
        assert!(sort_by_image(&mut items, |t| &t.0, 3));
        assert!(items.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(Arc::strong_count(&token), 2001);
        drop(items);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn declines_wide_keys_and_keys_without_an_image() {
        let mut r = rng(5);
        let wide: Vec<(u64, ())> = (0..10_000).map(|_| (r(), ())).collect();
        let mut items = wide.clone();
        assert!(!sort_by_image(&mut items, |t| &t.0, 3));
        assert_eq!(items, wide);
        // One wide key among narrow ones, missed by the sample: still declined.
        let mut items: Vec<(u64, ())> = (0..10_000).map(|i| (i % 7, ())).collect();
        items[4321].0 = u64::MAX;
        let before = items.clone();
        assert!(!sort_by_image(&mut items, |t| &t.0, 3));
        assert_eq!(items, before);
        let mut strs = vec![("b".to_string(), ()), ("a".to_string(), ())];
        assert!(!sort_by_image(&mut strs, |t| &t.0, 6));
        assert_eq!(strs[0].0, "b");
    }

    #[test]
    fn knows_which_types_have_an_image() {
        assert!(has_image::<i64>() && has_image::<u64>() && has_image::<F64Key>());
        assert!(!has_image::<u32>() && !has_image::<Vec<u8>>());
        assert_eq!(image(&"x".to_string()), None);
    }
}
#[cfg(test)]
mod timing {
    #[test]
    #[ignore]
    fn time_radix_vs_sorts() {
        use rayon::slice::ParallelSliceMut;
        let mut s = 7u64;
        let mut r = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        // RADIX_N items per batch (default 1M), as many batches as make 1M items.
        let n: usize = std::env::var("RADIX_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let reps = (1_000_000 / n).max(1);
        for bits in [22u32, 40, 63] {
            let base: Vec<Vec<(i64, u64)>> = (0..reps)
                .map(|_| {
                    (0..n as u64)
                        .map(|i| ((r() >> (64 - bits)) as i64, i))
                        .collect()
                })
                .collect();
            let mut a = base.clone();
            let t = std::time::Instant::now();
            for v in &mut a {
                super::sort_by_image(v, |t| &t.0, 6);
            }
            let radix = t.elapsed();
            let mut b = base.clone();
            let t = std::time::Instant::now();
            for v in &mut b {
                v.sort_unstable_by_key(|x| x.0);
            }
            let seq = t.elapsed();
            let mut c = base.clone();
            let t = std::time::Instant::now();
            for v in &mut c {
                v.par_sort_unstable_by(|x, y| x.0.cmp(&y.0));
            }
            let par = t.elapsed();
            for (a, b) in a.iter().zip(&base) {
                let mut want = b.clone();
                want.sort_by_key(|x| x.0);
                assert!(a == &want, "radix sort differs from a stable sort");
            }
            println!(
                "{reps} x {n} items, bits {bits}: radix {radix:?} unstable {seq:?} \
                 par_unstable {par:?} ({} threads)",
                rayon::current_num_threads()
            );
        }
    }
}
