//! Tiled, multi-threaded exact scan of a [`RowStore`] for a batch of queries.
//!
//! The rows are cut into blocks of about 64 KiB (L2-resident) and the queries
//! into tiles of [`QUERY_TILE`]; for each (block, tile) the kernel computes
//! every row-query dot product, loading each row chunk once per four queries,
//! so a stored row is read from memory once per block rather than once per
//! query. Large scans are split across rayon's threads by row ranges (and by
//! query groups when there are many queries); each task keeps its own
//! [`TopK`] heaps, merged at the end (deterministically: ties go to the
//! smaller key).

use rayon::prelude::*;

use crate::vector::kernels::Kernel;
use crate::vector::metric::Metric;
use crate::vector::quantize::{code_sumsq, quantize_into};
use crate::vector::store::RowStore;
use crate::vector::topk::TopK;

/// Queries per tile (their codes stay in L1: 16 × 768 B = 12 KiB).
pub const QUERY_TILE: usize = 16;
/// Target bytes of row codes per block.
const BLOCK_BYTES: usize = 64 * 1024;
/// Queries per parallel query group.
const QUERY_GROUP: usize = 128;
/// Below this many byte-products a scan stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 22;

/// Quantized queries with their metric factors.
#[derive(Debug, Clone)]
pub struct QueryBatch {
    dim: usize,
    pub(crate) codes: Vec<i8>,
    pub(crate) factor: Vec<f32>,
    pub(crate) norm: Vec<f32>,
}

impl QueryBatch {
    /// Quantizes `queries` (`m × dim`, finite; validated by the caller).
    pub fn new(queries: &[f32], dim: usize, metric: Metric) -> QueryBatch {
        let m = queries.len() / dim;
        let mut codes = vec![0i8; m * dim];
        let mut factor = Vec::with_capacity(m);
        let mut norm = Vec::with_capacity(m);
        for (x, q) in queries.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            let st = quantize_into(x, q);
            factor.push(metric.query_factor(st, code_sumsq(q)));
            norm.push(st.norm);
        }
        QueryBatch {
            dim,
            codes,
            factor,
            norm,
        }
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.factor.len()
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.factor.is_empty()
    }

    /// The queries at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> QueryBatch {
        let d = self.dim;
        let mut codes = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            codes.extend_from_slice(&self.codes[i * d..(i + 1) * d]);
        }
        QueryBatch {
            dim: d,
            codes,
            factor: idx.iter().map(|&i| self.factor[i]).collect(),
            norm: idx.iter().map(|&i| self.norm[i]).collect(),
        }
    }

    fn range(&self, q0: usize, q1: usize) -> QueryBatch {
        let d = self.dim;
        QueryBatch {
            dim: d,
            codes: self.codes[q0 * d..q1 * d].to_vec(),
            factor: self.factor[q0..q1].to_vec(),
            norm: self.norm[q0..q1].to_vec(),
        }
    }
}

/// Rows per block for width `dim`.
fn block_rows(dim: usize) -> usize {
    (BLOCK_BYTES / dim.max(1)).clamp(8, 1024)
}

/// Scans rows `r0..r1` of `store`, offering `(rank, key_base + row)` of every
/// live row to each query's heap (`heaps[i]` belongs to query `i`).
pub fn scan_range(
    store: &RowStore,
    kernel: Kernel,
    queries: &QueryBatch,
    r0: usize,
    r1: usize,
    key_base: u64,
    heaps: &mut [TopK],
) {
    let d = store.dim();
    let m = queries.len();
    let br = block_rows(d);
    let mut buf = vec![0i32; br * QUERY_TILE.min(m.max(1))];
    let mut b0 = r0;
    while b0 < r1 {
        let b1 = (b0 + br).min(r1);
        let nr = b1 - b0;
        let rows = &store.codes[b0 * d..b1 * d];
        let live = &store.live[b0..b1];
        let rmul = &store.row_mul[b0..b1];
        let radd = &store.row_add[b0..b1];
        let mut q0 = 0;
        while q0 < m {
            let q1 = (q0 + QUERY_TILE).min(m);
            let tq = q1 - q0;
            kernel.dots(&queries.codes[q0 * d..q1 * d], rows, d, &mut buf[..nr * tq]);
            let qf = &queries.factor[q0..q1];
            let hs = &mut heaps[q0..q1];
            for r in 0..nr {
                if !live[r] {
                    continue;
                }
                let key = key_base + (b0 + r) as u64;
                let dots = &buf[r * tq..(r + 1) * tq];
                for ((h, &f), &p) in hs.iter_mut().zip(qf).zip(dots) {
                    h.push(f * rmul[r] * p as f32 + radd[r], key);
                }
            }
            q0 = q1;
        }
        b0 = b1;
    }
}

/// Exact top-`k` of every query over the whole store, split across threads
/// when the work is large. Returns one heap per query.
pub fn scan_store(
    store: &RowStore,
    kernel: Kernel,
    queries: &QueryBatch,
    k: usize,
    key_base: u64,
) -> Vec<TopK> {
    let n = store.rows();
    let m = queries.len();
    let d = store.dim();
    let threads = rayon::current_num_threads();
    if threads <= 1 || n.saturating_mul(m).saturating_mul(d) < PARALLEL_WORK {
        let mut heaps = vec![TopK::new(k); m];
        scan_range(store, kernel, queries, 0, n, key_base, &mut heaps);
        return heaps;
    }
    let br = block_rows(d);
    let groups = m.div_ceil(QUERY_GROUP);
    // Enough row chunks for ~4 tasks per thread overall.
    let want_chunks = (4 * threads).div_ceil(groups).max(1);
    let chunk = n.div_ceil(want_chunks).div_ceil(br).max(1) * br;
    let chunks = n.div_ceil(chunk);
    (0..groups)
        .into_par_iter()
        .flat_map_iter(|g| {
            let q0 = g * QUERY_GROUP;
            let q1 = (q0 + QUERY_GROUP).min(m);
            let sub = queries.range(q0, q1);
            let merged = (0..chunks)
                .into_par_iter()
                .map(|c| {
                    let mut heaps = vec![TopK::new(k); q1 - q0];
                    scan_range(
                        store,
                        kernel,
                        &sub,
                        c * chunk,
                        ((c + 1) * chunk).min(n),
                        key_base,
                        &mut heaps,
                    );
                    heaps
                })
                .reduce(
                    || vec![TopK::new(k); q1 - q0],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(b) {
                            x.merge(y);
                        }
                        a
                    },
                );
            merged.into_iter()
        })
        .collect()
}

/// How many INT8 candidates to keep per query for a final top-`k`: the
/// candidates are then re-scored asymmetrically (see [`finish`]).
pub fn candidates(k: usize) -> usize {
    k + k.max(16)
}

/// Re-scores each query's INT8 candidates with the FP32 query against the
/// dequantized rows (`q · s_x·q_x`), which removes the query's own
/// quantization error, keeps the best `k`, and writes FAISS-shaped outputs:
/// `scores[m*k]`, `ids[m*k]`, best first, missing slots padded with the
/// metric's worst score and id `-1`. `row_of(key)` names the store and row of
/// a heap key. Deterministic (plain f32 arithmetic in a fixed order; ties go
/// to the smaller key).
pub fn finish<'a>(
    heaps: Vec<TopK>,
    queries: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    row_of: impl Fn(u64) -> (&'a RowStore, usize) + Sync,
) -> (Vec<f32>, Vec<i64>) {
    let m = heaps.len();
    let mut scores = vec![metric.pad_score(); m * k];
    let mut ids = vec![-1i64; m * k];
    #[allow(clippy::type_complexity)]
    let work = |(((h, q), out_s), out_i): (((TopK, &[f32]), &mut [f32]), &mut [i64])| {
        let qn2: f32 = q.iter().map(|v| v * v).sum();
        let qn = qn2.sqrt();
        let mut best = TopK::new(k);
        for (_, key) in h.into_sorted() {
            let (store, r) = row_of(key);
            let codes = store.row(r);
            let p: f32 = q.iter().zip(codes).map(|(&a, &c)| a * c as f32).sum();
            let rank = match metric {
                Metric::Ip => p * store.scales[r],
                // Cosine of the FP32 query and the dequantized row.
                Metric::Cosine => {
                    if qn == 0.0 {
                        0.0
                    } else {
                        p * store.row_mul[r] / qn
                    }
                }
                // 2·q·x̂ - ‖x̂‖² (row_add holds -‖x̂‖²); the score is ‖q‖² minus this.
                Metric::L2 => 2.0 * p * store.scales[r] + store.row_add[r],
            };
            best.push(rank, key);
        }
        for (j, (rank, key)) in best.into_sorted().into_iter().enumerate() {
            let (store, r) = row_of(key);
            out_s[j] = match metric {
                Metric::L2 => (qn2 - rank).max(0.0),
                _ => rank,
            };
            out_i[j] = store.ids[r] as i64;
        }
    };
    let iter = heaps
        .into_iter()
        .zip(queries.chunks_exact(dim))
        .zip(scores.chunks_exact_mut(k))
        .zip(ids.chunks_exact_mut(k));
    if m >= 64 {
        iter.collect::<Vec<_>>().into_par_iter().for_each(work);
    } else {
        iter.for_each(work);
    }
    (scores, ids)
}
