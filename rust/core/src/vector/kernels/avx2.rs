//! AVX2 INT8 kernels (x86-64).
//!
//! The classic sign trick: `vpmaddubsw` multiplies unsigned by signed bytes,
//! so the row is made non-negative (`|x|`) and its sign moved onto the query
//! (`vpsignb`); pairs of i16 products are widened to i32 by `vpmaddwd` with
//! ones. Exact (no i16 saturation) for codes in `-127..=127`: a pair sums to
//! at most `2·127·127 = 32_258`. Tails (`dim % 32`) run scalar.

use std::arch::x86_64::*;

const W: usize = 32;

/// Horizontal sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// `x·q` partial products of one 32-byte chunk, widened to eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn chunk(ax: __m256i, x: __m256i, q: __m256i, ones: __m256i) -> __m256i {
    let sq = _mm256_sign_epi8(q, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sq), ones)
}

#[inline]
fn tail(a: &[i8], b: &[i8]) -> i32 {
    super::scalar::dot(a, b)
}

/// Exact INT8 dot product (codes in `-127..=127`).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dot(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let n = a.len();
    let body = n - n % W;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    while i + 4 * W <= body {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 128 <= body <= n, so the 32-byte loads at i + 32j are in bounds.
            let (x, q) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(i + j * W) as *const __m256i),
                    _mm256_loadu_si256(pb.add(i + j * W) as *const __m256i),
                )
            };
            *acc = _mm256_add_epi32(*acc, chunk(_mm256_abs_epi8(x), x, q, ones));
        }
        i += 4 * W;
    }
    while i < body {
        // SAFETY: i + 32 <= body <= n.
        let (x, q) = unsafe {
            (
                _mm256_loadu_si256(pa.add(i) as *const __m256i),
                _mm256_loadu_si256(pb.add(i) as *const __m256i),
            )
        };
        acc[0] = _mm256_add_epi32(acc[0], chunk(_mm256_abs_epi8(x), x, q, ones));
        i += W;
    }
    let acc0 = _mm256_add_epi32(acc[0], acc[2]);
    let acc1 = _mm256_add_epi32(acc[1], acc[3]);
    hsum(_mm256_add_epi32(acc0, acc1)) + tail(&a[body..], &b[body..])
}

/// One stored row against four queries: each 32-byte row chunk is loaded
/// and made non-negative once, then multiplied into four accumulators.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_1x4(row: &[i8], q: [&[i8]; 4]) -> [i32; 4] {
    let n = row.len();
    let body = n - n % W;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let pr = row.as_ptr();
    let pq = [q[0].as_ptr(), q[1].as_ptr(), q[2].as_ptr(), q[3].as_ptr()];
    let mut i = 0;
    while i < body {
        // SAFETY: i + 32 <= body <= n and every query has length n (checked by the caller).
        unsafe {
            let x = _mm256_loadu_si256(pr.add(i) as *const __m256i);
            let ax = _mm256_abs_epi8(x);
            for j in 0..4 {
                let qv = _mm256_loadu_si256(pq[j].add(i) as *const __m256i);
                acc[j] = _mm256_add_epi32(acc[j], chunk(ax, x, qv, ones));
            }
        }
        i += W;
    }
    let mut out = [0i32; 4];
    for j in 0..4 {
        out[j] = hsum(acc[j]) + tail(&row[body..], &q[j][body..]);
    }
    out
}

/// `x_j·q` of four rows and one query: the query chunk is loaded once for
/// the four rows, and the four sums are reduced together with three
/// horizontal adds and one cross-lane add.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_4x1(rows: [&[i8]; 4], q: &[i8]) -> [i32; 4] {
    let n = q.len();
    let body = n - n % W;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let pq = q.as_ptr();
    let pr = rows.map(|r| r.as_ptr());
    let mut i = 0;
    while i < body {
        // SAFETY: i + 32 <= body <= n and every row has length n (checked by the caller).
        unsafe {
            let qv = _mm256_loadu_si256(pq.add(i) as *const __m256i);
            for j in 0..4 {
                let x = _mm256_loadu_si256(pr[j].add(i) as *const __m256i);
                acc[j] = _mm256_add_epi32(acc[j], chunk(_mm256_abs_epi8(x), x, qv, ones));
            }
        }
        i += W;
    }
    // Per 128-bit lane: [a01, a23, b01, b23], [c01, c23, d01, d23], then [a, b, c, d].
    let t = _mm256_hadd_epi32(
        _mm256_hadd_epi32(acc[0], acc[1]),
        _mm256_hadd_epi32(acc[2], acc[3]),
    );
    let s = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
    let mut out = [0i32; 4];
    // SAFETY: `out` has room for four i32 (16 bytes); unaligned store.
    unsafe { _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s) };
    if body < n {
        for (o, r) in out.iter_mut().zip(rows) {
            *o += tail(&r[body..], &q[body..]);
        }
    }
    out
}

/// `out[r * nq + q] = dot(row r, query q)`; see [`super::Kernel::dots`].
///
/// # Safety
/// The CPU must support AVX2; `queries.len()` and `rows.len()` are multiples
/// of `dim` and `out.len() >= nrows * nq`.
#[target_feature(enable = "avx2")]
pub unsafe fn dots(queries: &[i8], rows: &[i8], dim: usize, out: &mut [i32]) {
    if queries.len() == dim {
        super::one_query_dots(queries, rows, dim, out, |r, q| dot_4x1(r, q));
        return;
    }
    super::tile_dots(
        queries,
        rows,
        dim,
        out,
        |row, qs, _| dot_1x4(row, qs),
        // SAFETY: AVX2 is present (this function's contract).
        |row, q| unsafe { dot(row, q) },
    );
}
