//! Portable scalar INT8 kernels: the reference every SIMD kernel must equal.

/// Exact `Σ a[i]·b[i]` with i32 accumulation.
///
/// Exact for every `i8` input while `a.len() <= 133_000` (no i32 overflow).
#[inline]
pub fn dot(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let mut acc = 0i32;
    for (&x, &y) in a.iter().zip(b) {
        acc += x as i32 * y as i32;
    }
    acc
}

/// `out[r * nq + q] = dot(row r, query q)` for every stored row and query.
pub fn dots(queries: &[i8], rows: &[i8], dim: usize, out: &mut [i32]) {
    let nq = queries.len() / dim;
    for (r, row) in rows.chunks_exact(dim).enumerate() {
        for (q, query) in queries.chunks_exact(dim).enumerate() {
            out[r * nq + q] = dot(row, query);
        }
    }
}
