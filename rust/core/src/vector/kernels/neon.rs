//! NEON INT8 kernels (aarch64 only): widening multiply and SDOT.
//!
//! * **NEON**: `smull`/`smull2` give exact i16 products of eight byte pairs
//!   (`|x·q| <= 16_384`), and `sadalp` adds adjacent pairs into i32 lanes.
//!   Exact for every `i8` input.
//! * **SDOT** (`dotprod`, ARMv8.2+): `sdot` adds four i8·i8 products straight
//!   into each i32 lane. Its intrinsic (`vdotq_s32`) is not yet stable in
//!   Rust, so the instruction is issued with `asm!`. Exact for every input.
//!
//! Tails (`dim % 16`) run scalar.

use std::arch::aarch64::*;
use std::arch::asm;

const W: usize = 16;

#[inline]
#[target_feature(enable = "neon")]
fn mac(acc: int32x4_t, x: int8x16_t, q: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(x), vget_low_s8(q));
    let hi = vmull_high_s8(x, q);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// Exact INT8 dot product with base NEON.
///
/// # Safety
/// The CPU must support NEON (architectural on aarch64).
#[target_feature(enable = "neon")]
pub unsafe fn dot(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let n = a.len();
    let body = n - n % W;
    let mut acc0 = vdupq_n_s32(0);
    let mut acc1 = vdupq_n_s32(0);
    let mut i = 0;
    while i + 2 * W <= body {
        // SAFETY: i + 32 <= body <= n for both slices.
        unsafe {
            acc0 = mac(
                acc0,
                vld1q_s8(a.as_ptr().add(i)),
                vld1q_s8(b.as_ptr().add(i)),
            );
            acc1 = mac(
                acc1,
                vld1q_s8(a.as_ptr().add(i + W)),
                vld1q_s8(b.as_ptr().add(i + W)),
            );
        }
        i += 2 * W;
    }
    if i < body {
        // SAFETY: i + 16 <= body <= n.
        unsafe {
            acc0 = mac(
                acc0,
                vld1q_s8(a.as_ptr().add(i)),
                vld1q_s8(b.as_ptr().add(i)),
            );
        }
    }
    vaddvq_s32(vaddq_s32(acc0, acc1)) + super::scalar::dot(&a[body..], &b[body..])
}

/// Many-row, many-query products with base NEON; see [`super::Kernel::dots`].
///
/// # Safety
/// The CPU must support NEON; `queries.len()` and `rows.len()` are multiples
/// of `dim`; `out.len() >= nrows * nq`.
#[target_feature(enable = "neon")]
pub unsafe fn dots(queries: &[i8], rows: &[i8], dim: usize, out: &mut [i32]) {
    let nq = queries.len() / dim;
    let nrows = rows.len() / dim;
    for (r, row) in rows.chunks_exact(dim).enumerate() {
        if r + 2 < nrows {
            super::prefetch_row(&rows[(r + 2) * dim..(r + 3) * dim]);
        }
        for (q, query) in queries.chunks_exact(dim).enumerate() {
            // SAFETY: NEON is present (this function's contract).
            out[r * nq + q] = unsafe { dot(row, query) };
        }
    }
}

/// `acc += sdot(x, q)`: four i8 products summed into each i32 lane.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, x: int8x16_t, q: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` only reads the two source registers and updates the
    // accumulator register; the `dotprod` feature is enabled for this function
    // and guaranteed by its callers' contract.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {x:v}.16b, {q:v}.16b",
            acc = inout(vreg) acc,
            x = in(vreg) x,
            q = in(vreg) q,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Exact INT8 dot product with SDOT.
///
/// # Safety
/// The CPU must support NEON and `dotprod`.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn dot_sdot(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let n = a.len();
    let body = n - n % W;
    let mut acc0 = vdupq_n_s32(0);
    let mut acc1 = vdupq_n_s32(0);
    let mut i = 0;
    while i + 2 * W <= body {
        // SAFETY: i + 32 <= body <= n for both slices.
        unsafe {
            acc0 = sdot(
                acc0,
                vld1q_s8(a.as_ptr().add(i)),
                vld1q_s8(b.as_ptr().add(i)),
            );
            acc1 = sdot(
                acc1,
                vld1q_s8(a.as_ptr().add(i + W)),
                vld1q_s8(b.as_ptr().add(i + W)),
            );
        }
        i += 2 * W;
    }
    if i < body {
        // SAFETY: i + 16 <= body <= n.
        unsafe {
            acc0 = sdot(
                acc0,
                vld1q_s8(a.as_ptr().add(i)),
                vld1q_s8(b.as_ptr().add(i)),
            );
        }
    }
    vaddvq_s32(vaddq_s32(acc0, acc1)) + super::scalar::dot(&a[body..], &b[body..])
}

#[inline]
#[target_feature(enable = "neon,dotprod")]
fn dot_sdot_1x4(row: &[i8], q: [&[i8]; 4]) -> [i32; 4] {
    let n = row.len();
    let body = n - n % W;
    let mut acc = [vdupq_n_s32(0); 4];
    let mut i = 0;
    while i < body {
        // SAFETY: i + 16 <= body <= n and every query has length n (checked by the caller).
        unsafe {
            let x = vld1q_s8(row.as_ptr().add(i));
            for j in 0..4 {
                acc[j] = sdot(acc[j], x, vld1q_s8(q[j].as_ptr().add(i)));
            }
        }
        i += W;
    }
    let mut out = [0i32; 4];
    for j in 0..4 {
        out[j] = vaddvq_s32(acc[j]) + super::scalar::dot(&row[body..], &q[j][body..]);
    }
    out
}

/// Many-row, many-query products with SDOT; see [`super::Kernel::dots`].
///
/// # Safety
/// The CPU must support NEON and `dotprod`; `queries.len()` and `rows.len()`
/// are multiples of `dim`; `out.len() >= nrows * nq`.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn dots_sdot(queries: &[i8], rows: &[i8], dim: usize, out: &mut [i32]) {
    super::tile_dots(
        queries,
        rows,
        dim,
        out,
        |row, qs, _| dot_sdot_1x4(row, qs),
        // SAFETY: NEON and SDOT are present (this function's contract).
        |row, q| unsafe { dot_sdot(row, q) },
    );
}
