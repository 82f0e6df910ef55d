//! FP32 dot products for the lookaside buffer: AVX2+FMA where the CPU has
//! it (picked once at run time), else a portable loop with eight
//! independent accumulators that the compiler vectorises (SSE2 / NEON).

/// A dot-product function over equal-length slices.
pub type DotFn = fn(&[f32], &[f32]) -> f32;

/// The fastest dot product this CPU supports, and its name.
///
/// ```
/// let (dot, name) = slabcache_core::slb::dot::best();
/// assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// assert!(!name.is_empty());
/// ```
pub fn best() -> (DotFn, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return (dot_avx2_checked, "avx2-fma");
        }
    }
    (dot_portable, "portable")
}

/// `Σ a[i]·b[i]` with eight accumulators (vectorised by the compiler).
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2_checked(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: `best()` hands this function out only after detecting AVX2 and
    // FMA on this CPU, which is `dot_avx2`'s only requirement.
    unsafe { dot_avx2(a, b) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller guarantees AVX2 and FMA (this function's contract); every
    // pointer access below stays inside `a[..n]` / `b[..n]` (see the loop bounds).
    unsafe {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let mut i = 0;
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        let mut s2 = _mm256_setzero_ps();
        let mut s3 = _mm256_setzero_ps();
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        // SAFETY (loads below): every load reads 8 floats at offset `i` with
        // `i + 8 <= n` (or `i + 32 <= n` for the unrolled loop), inside both slices;
        // unaligned loads are used, so no alignment is assumed.
        while i + 32 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            s2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                s2,
            );
            s3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                s3,
            );
            i += 32;
        }
        while i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
        let hi = _mm256_extractf128_ps(s, 1);
        let lo = _mm256_castps256_ps128(s);
        let q = _mm_add_ps(hi, lo);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut total = _mm_cvtss_f32(q);
        while i < n {
            total += a[i] * b[i];
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dot_agrees_with_f64_for_many_lengths() {
        let (best_dot, _) = best();
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 255, 256, 257, 768, 1001] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
                .collect();
            let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            for f in [best_dot, dot_portable as DotFn] {
                let got = f(&a, &b) as f64;
                assert!(
                    (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                    "n={n}: {got} vs {exact}"
                );
            }
        }
    }
}
