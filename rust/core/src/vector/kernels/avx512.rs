//! AVX-512 INT8 kernels (x86-64): BW (sign trick) and VNNI (`vpdpbusd`).
//!
//! Both handle the tail (`dim % 64`) with byte-masked loads, which read
//! nothing past the end of a slice and leave the masked-out lanes zero (a
//! zero lane contributes nothing to either kernel's sum).
//!
//! * **BW**: like AVX2, `vpmaddubsw(|x|, ±q)` then `vpmaddwd` with ones; the
//!   sign of `x` is moved onto `q` with a masked subtract (AVX-512 has no
//!   `vpsignb`). Exact for codes in `-127..=127`.
//! * **VNNI**: `vpdpbusd` multiplies *unsigned* by signed bytes and adds four
//!   products straight into i32 lanes (no saturation). The row is biased to
//!   unsigned, `u = x + 128` (a xor with `0x80`), so
//!   `Σ u·q = Σ x·q + 128·Σ q`, and the kernel subtracts `128·Σ q`, which it
//!   gets from a second `vpdpbusd` of the bias bytes with `q` (or once per
//!   query in [`dots_vnni`]). Exact for every `i8` input with wrapping i32
//!   arithmetic, since the true result fits in i32.

use std::arch::x86_64::*;

const W: usize = 64;

#[inline]
fn tail_mask(rem: usize) -> __mmask64 {
    if rem >= 64 {
        !0
    } else {
        (1u64 << rem) - 1
    }
}

/// `x·q` of one 64-byte chunk into sixteen i32 lanes (BW sign trick).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn chunk_bw(ax: __m512i, neg: __mmask64, q: __m512i, ones: __m512i) -> __m512i {
    let sq = _mm512_mask_sub_epi8(q, neg, _mm512_setzero_si512(), q);
    _mm512_madd_epi16(_mm512_maddubs_epi16(ax, sq), ones)
}

/// Loads `len - i` (at most 64) bytes at `p + i`, zero-filling the rest.
///
/// # Safety
/// `p..p + len` must be readable and `i <= len`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load(p: *const i8, i: usize, len: usize) -> __m512i {
    let rem = len - i;
    if rem >= W {
        // SAFETY: i + 64 <= len (caller contract).
        unsafe { _mm512_loadu_si512(p.add(i) as *const _) }
    } else {
        // SAFETY: masked-out bytes are not accessed; the first `rem` are in bounds.
        unsafe { _mm512_maskz_loadu_epi8(tail_mask(rem), p.add(i)) }
    }
}

/// Exact INT8 dot product with AVX-512 BW (codes in `-127..=127`).
///
/// # Safety
/// The CPU must support AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_bw(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let n = a.len();
    let ones = _mm512_set1_epi16(1);
    let mut acc0 = _mm512_setzero_si512();
    let mut acc1 = _mm512_setzero_si512();
    let mut i = 0;
    while i + 2 * W <= n {
        // SAFETY: i + 128 <= n for both slices.
        let (x0, q0, x1, q1) = unsafe {
            (
                load(a.as_ptr(), i, n),
                load(b.as_ptr(), i, n),
                load(a.as_ptr(), i + W, n),
                load(b.as_ptr(), i + W, n),
            )
        };
        acc0 = _mm512_add_epi32(
            acc0,
            chunk_bw(_mm512_abs_epi8(x0), _mm512_movepi8_mask(x0), q0, ones),
        );
        acc1 = _mm512_add_epi32(
            acc1,
            chunk_bw(_mm512_abs_epi8(x1), _mm512_movepi8_mask(x1), q1, ones),
        );
        i += 2 * W;
    }
    while i < n {
        // SAFETY: i < n; `load` masks what lies past n.
        let (x0, q0) = unsafe { (load(a.as_ptr(), i, n), load(b.as_ptr(), i, n)) };
        acc0 = _mm512_add_epi32(
            acc0,
            chunk_bw(_mm512_abs_epi8(x0), _mm512_movepi8_mask(x0), q0, ones),
        );
        i += W;
    }
    _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn dot_bw_1x4(row: &[i8], q: [&[i8]; 4]) -> [i32; 4] {
    let n = row.len();
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and every query has length n (checked by the caller); `load` masks the tail.
        unsafe {
            let x = load(row.as_ptr(), i, n);
            let ax = _mm512_abs_epi8(x);
            let neg = _mm512_movepi8_mask(x);
            for j in 0..4 {
                acc[j] =
                    _mm512_add_epi32(acc[j], chunk_bw(ax, neg, load(q[j].as_ptr(), i, n), ones));
            }
        }
        i += W;
    }
    acc.map(|v| _mm512_reduce_add_epi32(v))
}

/// `x_j·q` of four rows and one query (BW sign trick), the query chunk
/// loaded once for the four rows and the sums reduced together.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn dot_bw_4x1(rows: [&[i8]; 4], q: &[i8]) -> [i32; 4] {
    let n = q.len();
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and every row has length n (checked by the caller); `load` masks the tail.
        unsafe {
            let qv = load(q.as_ptr(), i, n);
            for j in 0..4 {
                let x = load(rows[j].as_ptr(), i, n);
                let neg = _mm512_movepi8_mask(x);
                acc[j] = _mm512_add_epi32(acc[j], chunk_bw(_mm512_abs_epi8(x), neg, qv, ones));
            }
        }
        i += W;
    }
    reduce4(acc)
}

/// Many-row, many-query products with AVX-512 BW; see [`super::Kernel::dots`].
///
/// # Safety
/// The CPU must support AVX-512 F and BW; `queries.len()` and `rows.len()`
/// are multiples of `dim`; `out.len() >= nrows * nq`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dots_bw(queries: &[i8], rows: &[i8], dim: usize, out: &mut [i32]) {
    if queries.len() == dim {
        super::one_query_dots(queries, rows, dim, out, |r, q| dot_bw_4x1(r, q));
        return;
    }
    super::tile_dots(
        queries,
        rows,
        dim,
        out,
        |row, qs, _| dot_bw_1x4(row, qs),
        // SAFETY: AVX-512 F and BW are present (this function's contract).
        |row, q| unsafe { dot_bw(row, q) },
    );
}

/// Exact INT8 dot product with AVX-512 VNNI (any `i8` input).
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot_vnni(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let n = a.len();
    let bias = _mm512_set1_epi8(-128); // 0x80: as unsigned, 128
    let mut acc0 = _mm512_setzero_si512();
    let mut acc1 = _mm512_setzero_si512();
    let mut sum_b = _mm512_setzero_si512();
    let mut i = 0;
    while i < n {
        // SAFETY: i < n; `load` masks what lies past n (masked lanes of b are zero, so
        // the biased a lanes there multiply zero).
        let (x, q) = unsafe { (load(a.as_ptr(), i, n), load(b.as_ptr(), i, n)) };
        let u = _mm512_xor_si512(x, bias);
        if (i / W).is_multiple_of(2) {
            acc0 = _mm512_dpbusd_epi32(acc0, u, q);
        } else {
            acc1 = _mm512_dpbusd_epi32(acc1, u, q);
        }
        sum_b = _mm512_dpbusd_epi32(sum_b, bias, q);
        i += W;
    }
    _mm512_reduce_add_epi32(_mm512_sub_epi32(_mm512_add_epi32(acc0, acc1), sum_b))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_vnni_1x4(row: &[i8], q: [&[i8]; 4], corr: [i32; 4]) -> [i32; 4] {
    let n = row.len();
    let bias = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and every query has length n (checked by the caller); `load` masks the tail.
        unsafe {
            let u = _mm512_xor_si512(load(row.as_ptr(), i, n), bias);
            for j in 0..4 {
                acc[j] = _mm512_dpbusd_epi32(acc[j], u, load(q[j].as_ptr(), i, n));
            }
        }
        i += W;
    }
    let mut out = [0i32; 4];
    for j in 0..4 {
        out[j] = _mm512_reduce_add_epi32(acc[j]).wrapping_sub(corr[j]);
    }
    out
}

/// `x_j·q` of four rows and one query (`corr` = `128·Σq`): the query chunk is
/// loaded once for the four rows, and the four sums are reduced together
/// (two rounds of unpack-and-add, then the 128-bit lanes), which costs less
/// than four separate horizontal reductions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_vnni_4x1(rows: [&[i8]; 4], q: &[i8], corr: i32) -> [i32; 4] {
    let n = q.len();
    let bias = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and every row has length n (checked by the caller); `load` masks
        // the tail (masked query lanes are zero, so the biased row lanes there add nothing).
        unsafe {
            let qv = load(q.as_ptr(), i, n);
            for j in 0..4 {
                let u = _mm512_xor_si512(load(rows[j].as_ptr(), i, n), bias);
                acc[j] = _mm512_dpbusd_epi32(acc[j], u, qv);
            }
        }
        i += W;
    }
    reduce4(acc).map(|v| v.wrapping_sub(corr))
}

/// The sixteen-lane sums of four accumulators, reduced together: two
/// rounds of unpack-and-add, then the 256- and 128-bit halves.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce4(acc: [__m512i; 4]) -> [i32; 4] {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then [A, B, C, D].
    let t0 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(acc[0], acc[1]),
        _mm512_unpackhi_epi32(acc[0], acc[1]),
    );
    let t1 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(acc[2], acc[3]),
        _mm512_unpackhi_epi32(acc[2], acc[3]),
    );
    let u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
    let h = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64::<1>(u));
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let mut out = [0i32; 4];
    // SAFETY: `out` has room for four i32 (16 bytes); unaligned store.
    unsafe { _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s) };
    out
}

/// `128 · Σ q` with wrapping arithmetic (the VNNI bias correction).
fn bias_correction(q: &[i8]) -> i32 {
    q.iter()
        .fold(0i32, |s, &v| s.wrapping_add(v as i32))
        .wrapping_mul(128)
}

/// Many-row, many-query products with AVX-512 VNNI; see [`super::Kernel::dots`].
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; `queries.len()` and
/// `rows.len()` are multiples of `dim`; `out.len() >= nrows * nq`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dots_vnni(queries: &[i8], rows: &[i8], dim: usize, out: &mut [i32]) {
    let nq = queries.len() / dim;
    if nq == 1 {
        // One query (a clustered index's list scan, its probe, a 1-query flat
        // scan): four rows at a time against the query loaded once, the bias
        // correction computed once, and one combined reduction per four rows.
        let corr = bias_correction(queries);
        super::one_query_dots(queries, rows, dim, out, |r, q| dot_vnni_4x1(r, q, corr));
        return;
    }
    // The correction of each query; on the stack for a tile (no allocation per call).
    let mut small = [0i32; 16];
    let heap: Vec<i32>;
    let corr: &[i32] = if nq <= small.len() {
        for (c, q) in small.iter_mut().zip(queries.chunks_exact(dim)) {
            *c = bias_correction(q);
        }
        &small[..nq]
    } else {
        heap = queries.chunks_exact(dim).map(bias_correction).collect();
        &heap
    };
    super::tile_dots(
        queries,
        rows,
        dim,
        out,
        |row, qs, q0| {
            dot_vnni_1x4(
                row,
                qs,
                [corr[q0], corr[q0 + 1], corr[q0 + 2], corr[q0 + 3]],
            )
        },
        // SAFETY: AVX-512 VNNI is present (this function's contract).
        |row, q| unsafe { dot_vnni(row, q) },
    );
}
