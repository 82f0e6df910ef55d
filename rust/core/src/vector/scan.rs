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

use std::cell::RefCell;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::vector::crew;
use crate::vector::kernels::{Kernel, KernelKind};
use crate::vector::metric::Metric;
use crate::vector::quantize::{code_sum, code_sumsq, quantize_into};
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
    /// `Σ q_i` of each query's codes (for asymmetric rows' offsets).
    pub(crate) sum: Vec<f32>,
}

impl QueryBatch {
    /// Quantizes `queries` (`m × dim`, finite; validated by the caller).
    pub fn new(queries: &[f32], dim: usize, metric: Metric) -> QueryBatch {
        let m = queries.len() / dim;
        let mut codes = vec![0i8; m * dim];
        let mut factor = Vec::with_capacity(m);
        let mut norm = Vec::with_capacity(m);
        let mut sum = Vec::with_capacity(m);
        for (x, q) in queries.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            let st = quantize_into(x, q);
            factor.push(metric.query_factor(st, code_sumsq(q)));
            norm.push(st.norm);
            sum.push(code_sum(q) as f32);
        }
        QueryBatch {
            dim,
            codes,
            factor,
            norm,
            sum,
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
            sum: idx.iter().map(|&i| self.sum[i]).collect(),
        }
    }

    fn range(&self, q0: usize, q1: usize) -> QueryBatch {
        let d = self.dim;
        QueryBatch {
            dim: d,
            codes: self.codes[q0 * d..q1 * d].to_vec(),
            factor: self.factor[q0..q1].to_vec(),
            norm: self.norm[q0..q1].to_vec(),
            sum: self.sum[q0..q1].to_vec(),
        }
    }
}

/// The most rows in a block.
const MAX_BLOCK_ROWS: usize = 1024;
/// `b_x` of a block of non-l2 rows.
static ZEROS: [f32; MAX_BLOCK_ROWS] = [0.0; MAX_BLOCK_ROWS];

/// Rows per block for width `dim`.
fn block_rows(dim: usize) -> usize {
    (BLOCK_BYTES / dim.max(1)).clamp(8, MAX_BLOCK_ROWS)
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
        let rmul = &store.mul[b0..b1];
        // `b_x` is 0 except for l2 (whose `add` column is the only one kept).
        let radd: &[f32] = if store.add.is_empty() {
            &ZEROS[..nr]
        } else {
            &store.add[b0..b1]
        };
        let mut q0 = 0;
        while q0 < m {
            let q1 = (q0 + QUERY_TILE).min(m);
            let tq = q1 - q0;
            kernel.dots(&queries.codes[q0 * d..q1 * d], rows, d, &mut buf[..nr * tq]);
            let qf = &queries.factor[q0..q1];
            let qs = &queries.sum[q0..q1];
            let hs = &mut heaps[q0..q1];
            if !store.is_asymmetric() {
                for r in 0..nr {
                    // A NaN factor marks a tombstone.
                    if rmul[r].is_nan() {
                        continue;
                    }
                    let key = key_base + (b0 + r) as u64;
                    let dots = &buf[r * tq..(r + 1) * tq];
                    // f64: `a_q · a_x` overflows f32 for components beyond ~1e19 (an
                    // overflowed `b_x` is -inf, so such rows rank last, never NaN).
                    let (am, ab) = (rmul[r] as f64, radd[r] as f64);
                    for ((h, &f), &p) in hs.iter_mut().zip(qf).zip(dots) {
                        h.push((f as f64 * am * p as f64 + ab) as f32, key);
                    }
                }
            } else {
                // Asymmetric rows: x̂ = a_x·q + o_x, so q·x̂ gains o_x·Σq.
                for r in 0..nr {
                    if rmul[r].is_nan() {
                        continue;
                    }
                    let key = key_base + (b0 + r) as u64;
                    let dots = &buf[r * tq..(r + 1) * tq];
                    let (am, ao, ab) =
                        (rmul[r] as f64, store.off_at(b0 + r) as f64, radd[r] as f64);
                    for (((h, &f), &p), &sq) in hs.iter_mut().zip(qf).zip(dots).zip(qs) {
                        h.push(
                            (f as f64 * (am * p as f64 + ao * sq as f64) + ab) as f32,
                            key,
                        );
                    }
                }
            }
            q0 = q1;
        }
        b0 = b1;
    }
}

/// One query's view into a [`QueryBatch`] (no copy).
#[derive(Debug, Clone, Copy)]
pub struct OneQuery<'a> {
    /// Its codes.
    pub codes: &'a [i8],
    /// `a_q`.
    pub factor: f32,
    /// `Σ q_i` of its codes.
    pub sum: f32,
}

impl QueryBatch {
    /// Query `i` as a borrowed view.
    pub fn one(&self, i: usize) -> OneQuery<'_> {
        OneQuery {
            codes: &self.codes[i * self.dim..(i + 1) * self.dim],
            factor: self.factor[i],
            sum: self.sum[i],
        }
    }
}

/// Hints the CPU to start loading `store`'s rows (its first `max_bytes` of
/// codes) and per-row factors. The clustered index calls it for the next list
/// while it scans the current one: a list is a short separate stream (~90
/// rows of SIFT, 11 KiB), too short for the hardware prefetcher to ramp up,
/// so without the hint each list is scanned at memory latency rather than
/// bandwidth. One query asks for [`PREFETCH_ONE_QUERY`], a batch scanned
/// list by list for [`PREFETCH_BATCH`].
pub fn prefetch_store(store: &RowStore, max_bytes: usize) {
    use crate::vector::kernels::prefetch_row;
    let n = store.codes.len().min(max_bytes);
    prefetch_row(&store.codes[..n]);
    for col in [&store.mul, &store.add, &store.off] {
        let bytes = col.len() * 4;
        if bytes > 0 {
            let p = col.as_ptr() as *const i8;
            // SAFETY: `p` points at `col`'s `bytes` initialized bytes (f32 has no padding,
            // and any byte is a valid i8), which live as long as this borrow.
            prefetch_row(unsafe { std::slice::from_raw_parts(p, bytes.min(max_bytes)) });
        }
    }
}

/// `KiB` from a build-time variable (for A/B builds of the benches), else `default`.
pub(crate) const fn kib_or(var: Option<&str>, default: usize) -> usize {
    let Some(s) = var else {
        return default * 1024;
    };
    let b = s.as_bytes();
    let mut v = 0usize;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "prefetch KiB must be a number");
        v = v * 10 + (b[i] - b'0') as usize;
        i += 1;
    }
    v * 1024
}

/// The most bytes of the next list's codes that one query's scan prefetches
/// (4 KiB starts the stream; asking for all of a list, up to 32 KiB, cost SIFT
/// nprobe 64 one query 84 µs instead of 74 on the dev machine: the hints
/// filled the line-fill buffers while the current list was still loading).
/// `SLABCACHE_PREFETCH_ONE_KIB` at build time overrides it (bench A/B only).
pub const PREFETCH_ONE_QUERY: usize = kib_or(option_env!("SLABCACHE_PREFETCH_ONE_KIB"), 4);

/// The same for a batch scanned list by list, where each list is multiplied
/// into ~12 queries and so takes long enough for a whole-list prefetch to land
/// (the 32 KiB of session 10; session 11's 4 KiB for both paths went with batch
/// 256 at SIFT nprobe 64 falling from 42k to 32k q/s on 16 cores).
/// `SLABCACHE_PREFETCH_BATCH_KIB` at build time overrides it (bench A/B only).
pub const PREFETCH_BATCH: usize = kib_or(option_env!("SLABCACHE_PREFETCH_BATCH_KIB"), 32);

/// Scans every row of `store` for one query into `heap` (keys
/// `key_base + row`), reusing `buf` for the dot products: the inner loop of
/// the clustered index, where a query visits `nprobe` stores one after the
/// other with a single heap, so a scanned row costs a kernel dot and a
/// compare — what a row of the flat scan costs.
pub fn scan_one(
    store: &RowStore,
    kernel: Kernel,
    q: OneQuery<'_>,
    key_base: u64,
    heap: &mut TopK,
    buf: &mut Vec<i32>,
) {
    let d = store.dim();
    let n = store.rows();
    if n == 0 {
        return;
    }
    let br = block_rows(d);
    if buf.len() < br {
        buf.resize(br, 0);
    }
    let fq = (q.factor as f64, q.sum as f64);
    let mut b0 = 0;
    while b0 < n {
        let b1 = (b0 + br).min(n);
        let nr = b1 - b0;
        kernel.dots(q.codes, &store.codes[b0 * d..b1 * d], d, &mut buf[..nr]);
        // Ranks first (a vectorized loop), then the offers: a compare each
        // for most rows; a tombstone's NaN rank never enters.
        BLOCK_RANKS.with_borrow_mut(|ranks| {
            ranks.clear();
            ranks.resize(nr, 0.0);
            let out = &mut ranks[..nr];
            for_each_rank(kernel, store, b0, fq, &buf[..nr], |i, r| out[i] = r);
            for (r, &rank) in out.iter().enumerate() {
                heap.push(rank, key_base + (b0 + r) as u64);
            }
        });
        b0 = b1;
    }
}

/// Scans every row of `store` for the queries `qidx` of `queries` (several
/// queries that probe the same list in a batch), offering each to
/// `heaps[qidx[j] - heap_base]`. Up to [`QUERY_TILE`] query codes are
/// gathered into `qbuf` so that each row chunk is loaded once for all of
/// them, as in the flat scan; `dbuf` holds the dot products.
#[allow(clippy::too_many_arguments)]
pub fn scan_gathered(
    store: &RowStore,
    kernel: Kernel,
    queries: &QueryBatch,
    qidx: &[usize],
    heap_base: usize,
    key_base: u64,
    heaps: &mut [TopK],
    qbuf: &mut Vec<i8>,
    dbuf: &mut Vec<i32>,
) {
    if store.rows() == 0 || qidx.is_empty() {
        return;
    }
    COLUMN_DOTS.with_borrow_mut(|col| {
        let (d, n) = (store.dim(), store.rows());
        let br = block_rows(d);
        for tile in qidx.chunks(QUERY_TILE) {
            let tq = tile.len();
            qbuf.clear();
            for &qi in tile {
                qbuf.extend_from_slice(&queries.codes[qi * d..(qi + 1) * d]);
            }
            if dbuf.len() < br * tq {
                dbuf.resize(br * tq, 0);
            }
            let mut b0 = 0;
            while b0 < n {
                let b1 = (b0 + br).min(n);
                let nr = b1 - b0;
                kernel.dots(qbuf, &store.codes[b0 * d..b1 * d], d, &mut dbuf[..nr * tq]);
                // Query by query over the block (the kernel's output is row-major):
                // each query's dots gathered, ranked in the vector loop, then
                // offered to its one heap, whose threshold stays in a register
                // (offering row by row touched every tile query's heap per row).
                let (dbuf, col) = (&dbuf[..nr * tq], &mut *col);
                col.clear();
                col.resize(nr, 0);
                BLOCK_RANKS.with_borrow_mut(|ranks| {
                    ranks.clear();
                    ranks.resize(nr, 0.0);
                    let out = &mut ranks[..nr];
                    for (j, &qi) in tile.iter().enumerate() {
                        let dots = &mut col[..nr];
                        for (r, x) in dots.iter_mut().enumerate() {
                            *x = dbuf[r * tq + j];
                        }
                        let fq = (queries.factor[qi] as f64, queries.sum[qi] as f64);
                        for_each_rank(kernel, store, b0, fq, dots, |i, r| out[i] = r);
                        let heap = &mut heaps[qi - heap_base];
                        for (r, &rank) in out.iter().enumerate() {
                            heap.push(rank, key_base + (b0 + r) as u64);
                        }
                    }
                });
                b0 = b1;
            }
        }
    });
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
    let br = block_rows(d);
    if m == 1 && threads > 1 && n.saturating_mul(d) >= 2 * crew::PART_WORK {
        return vec![scan_one_split(store, kernel, queries, k, key_base, threads)];
    }
    if threads <= 1 || n.saturating_mul(m).saturating_mul(d) < PARALLEL_WORK {
        let mut heaps = vec![TopK::new(k); m];
        scan_range(store, kernel, queries, 0, n, key_base, &mut heaps);
        return heaps;
    }
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

/// One query over the whole store, its rows cut into parts of about
/// [`crew::PART_WORK`] (whole blocks) that the caller and the crew take in
/// order: no thread wake-up on the critical path, unlike a rayon split.
fn scan_one_split(
    store: &RowStore,
    kernel: Kernel,
    queries: &QueryBatch,
    k: usize,
    key_base: u64,
    threads: usize,
) -> TopK {
    let (n, d) = (store.rows(), store.dim());
    let br = block_rows(d);
    let chunk = (crew::PART_WORK / d.max(1)).div_ceil(br).max(1) * br;
    let parts = n.div_ceil(chunk);
    crew::top_k_over_parts(parts, (parts - 1).min(threads - 1), k, |j, heap, _| {
        let (r0, r1) = (j * chunk, ((j + 1) * chunk).min(n));
        scan_range(
            store,
            kernel,
            queries,
            r0,
            r1,
            key_base,
            std::slice::from_mut(heap),
        );
    })
}

/// How many INT8 candidates to keep per query for a final top-`k`: the
/// candidates are then re-scored (see [`finish`]). `rerank` is the caller's
/// factor (`k' = rerank · k`); without one, `k + max(k, 16)`, or `4k` when
/// the rows' FP32 vectors are kept (exact re-ranking).
pub fn candidates(k: usize, rerank: Option<usize>, keeps_exact: bool) -> usize {
    match rerank {
        Some(f) => k.saturating_mul(f.max(1)),
        None if keeps_exact => k.saturating_mul(DEFAULT_RERANK),
        None => k + k.max(16),
    }
}

/// Candidates per result re-ranked exactly when FP32 rows are kept and the
/// caller names no factor.
pub const DEFAULT_RERANK: usize = 4;

/// `Σ a·b` in f64 (four accumulators for instruction-level parallelism).
#[inline]
fn dot_f64<T: Copy + Into<f64>>(a: &[f32], b: &[T]) -> f64 {
    let mut acc = [0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..4 {
            acc[j] += x[j] as f64 * y[j].into();
        }
    }
    let mut tail = 0f64;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += *x as f64 * (*y).into();
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ (a - m·b)²` in f64.
#[inline]
fn dist2_f64<T: Copy + Into<f64>>(a: &[f32], b: &[T], m: f64) -> f64 {
    let mut acc = [0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..4 {
            let t = x[j] as f64 - m * y[j].into();
            acc[j] += t * t;
        }
    }
    let mut tail = 0f64;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = *x as f64 - m * (*y).into();
        tail += t * t;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The metric's score of query `q` (norm `qn`) against row `r` of `store`,
/// in f64: against the FP32 row when kept (exact), else against the
/// dequantized row. f64 cannot overflow here (|x| < 3.5e38, dim ≤ 65536),
/// so a score beyond f32's range becomes `±inf` when narrowed, never NaN.
#[inline]
fn exact_score(metric: Metric, q: &[f32], qn: f64, store: &RowStore, r: usize) -> f64 {
    match store.exact_row(r) {
        Some(x) => match metric {
            Metric::Ip => dot_f64(q, x),
            Metric::Cosine => {
                let xn = dot_f64(x, x).sqrt();
                if qn == 0.0 || xn == 0.0 {
                    0.0
                } else {
                    dot_f64(q, x) / (qn * xn)
                }
            }
            Metric::L2 => dist2_f64(q, x, 1.0),
        },
        None => {
            // The dequantized row is `m·q + o` (o = 0 for symmetric codes; for
            // `cosine`, m and o make it the unit direction).
            let codes = store.row(r);
            let m = store.mul[r] as f64;
            let o = store.off_of(r) as f64;
            let qsum = || q.iter().map(|&v| v as f64).sum::<f64>();
            match metric {
                Metric::Ip => m * dot_f64(q, codes) + if o != 0.0 { o * qsum() } else { 0.0 },
                Metric::Cosine => {
                    if qn == 0.0 {
                        0.0
                    } else {
                        (m * dot_f64(q, codes) + if o != 0.0 { o * qsum() } else { 0.0 }) / qn
                    }
                }
                Metric::L2 => dist2_off_f64(q, codes, m, o),
            }
        }
    }
}

/// `Σ (a - m·b - o)²` in f64.
#[inline]
fn dist2_off_f64(a: &[f32], b: &[i8], m: f64, o: f64) -> f64 {
    let mut acc = [0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..4 {
            let t = x[j] as f64 - m * y[j] as f64 - o;
            acc[j] += t * t;
        }
    }
    let mut tail = 0f64;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = *x as f64 - m * *y as f64 - o;
        tail += t * t;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Re-scores each query's INT8 candidates with the FP32 query — against
/// the FP32 rows when the store keeps them (exact), else against the
/// dequantized rows (which removes the query's own quantization error) —
/// in f64, keeps the best `k`, and writes FAISS-shaped outputs:
/// `scores[m*k]`, `ids[m*k]`, best first, missing slots padded with the
/// metric's worst score and id `-1`. `row_of(key)` names the store and row of
/// a heap key. Deterministic (fixed-order f64 arithmetic; ties go to the
/// smaller key).
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
    let lower_is_closer = !metric.higher_is_closer();
    #[allow(clippy::type_complexity)]
    let work = |(((h, q), out_s), out_i): (((TopK, &[f32]), &mut [f32]), &mut [i64])| {
        let qn = dot_f64(q, q).sqrt();
        let cands = h.into_sorted();
        // The candidates' rows are scattered (one query's k' rows from up to
        // k' lists): start all their loads before scoring the first, so the
        // misses overlap instead of following one another.
        for &(_, key) in &cands {
            let (store, r) = row_of(key);
            prefetch_exact_row(store, r);
        }
        let mut best: Vec<(f64, u64)> = cands
            .into_iter()
            .map(|(_, key)| {
                let (store, r) = row_of(key);
                let s = exact_score(metric, q, qn, store, r);
                (if lower_is_closer { -s } else { s }, key)
            })
            .collect();
        best.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (j, &(rank, key)) in best.iter().take(k).enumerate() {
            let (store, r) = row_of(key);
            out_s[j] = (if lower_is_closer { -rank } else { rank }) as f32;
            out_i[j] = store.id(r) as i64;
        }
    };
    let iter = heaps
        .into_iter()
        .zip(queries.chunks_exact(dim))
        .zip(scores.chunks_exact_mut(k))
        .zip(ids.chunks_exact_mut(k));
    // From 16 queries the re-scoring (`k'` f64 dots a query) outweighs waking
    // the pool (on the 2-core dev machine, a clustered batch of 32 spent ~10%
    // of its time here, sequentially).
    if m >= 16 {
        iter.collect::<Vec<_>>().into_par_iter().for_each(work);
    } else {
        iter.for_each(work);
    }
    (scores, ids)
}

/// Hints the loads [`exact_score`] of row `r` will make.
fn prefetch_exact_row(store: &RowStore, r: usize) {
    use crate::vector::kernels::prefetch_row;
    match store.exact_row(r) {
        Some(x) => {
            let p = x.as_ptr() as *const i8;
            // SAFETY: `x` is `x.len()` initialized f32 (no padding; any byte is a valid
            // i8), alive for this borrow.
            prefetch_row(unsafe { std::slice::from_raw_parts(p, std::mem::size_of_val(x)) });
        }
        None => prefetch_row(store.row(r)),
    }
}

/// The INT8 rank of every row of `store` for queries `q0..q1` of `queries`,
/// into `out[(i - q0) * rows + r]` (higher is closer; a tombstone or an
/// overflowed rank is `-inf`). The clustered index probes with it: its
/// centroids are a small store, and the probe order needs no re-scoring,
/// so every centroid is ranked in one pass of the batched kernel and the
/// nearest lists picked by selection (see [`nearest`]).
pub fn rank_rows(
    store: &RowStore,
    kernel: Kernel,
    queries: &QueryBatch,
    q0: usize,
    q1: usize,
    out: &mut [f32],
) {
    let d = store.dim();
    let n = store.rows();
    let br = block_rows(d);
    let mut buf = vec![0i32; br * QUERY_TILE.min((q1 - q0).max(1))];
    let asym = store.is_asymmetric();
    let l2 = !store.add.is_empty();
    let mut t0 = q0;
    while t0 < q1 {
        let t1 = (t0 + QUERY_TILE).min(q1);
        let tq = t1 - t0;
        let mut b0 = 0;
        while b0 < n {
            let b1 = (b0 + br).min(n);
            let nr = b1 - b0;
            kernel.dots(
                &queries.codes[t0 * d..t1 * d],
                &store.codes[b0 * d..b1 * d],
                d,
                &mut buf[..nr * tq],
            );
            for r in 0..nr {
                let am = store.mul[b0 + r] as f64;
                let ao = if asym {
                    store.off_at(b0 + r) as f64
                } else {
                    0.0
                };
                let ab = if l2 { store.add[b0 + r] as f64 } else { 0.0 };
                for j in 0..tq {
                    let qi = t0 + j;
                    let p = buf[r * tq + j] as f64;
                    let rank = (queries.factor[qi] as f64 * (am * p + ao * queries.sum[qi] as f64)
                        + ab) as f32;
                    out[(qi - q0) * n + b0 + r] = if rank.is_nan() {
                        f32::NEG_INFINITY
                    } else {
                        rank
                    };
                }
            }
            b0 = b1;
        }
        t0 = t1;
    }
}

/// The `k` rows of `store` with the highest INT8 rank for one query,
/// highest first (ties to the smaller row; a NaN rank counts as `-inf`),
/// appended to `out`: [`rank_rows`] and [`nearest`] for a single query in one
/// pass over every row. The clustered index probes one query with it.
///
/// Every row's rank becomes an integer key ([`rank_key`]) and the keys are
/// selected once. From [`crew::PROBE_SPLIT_WORK`] byte-products the rows are
/// ranked in parts by the caller and the crew, each writing its own run of
/// the keys; the caller selects after the join (selecting per part and
/// merging top-k buffers cost more than the split saved).
pub fn nearest_one(
    store: &RowStore,
    kernel: Kernel,
    q: OneQuery<'_>,
    k: usize,
    buf: &mut Vec<i32>,
    out: &mut Vec<u32>,
) {
    let (n, d) = (store.rows(), store.dim());
    if n == 0 || k == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    RANK_KEYS.with_borrow_mut(|keys| {
        keys.clear();
        keys.resize(n, 0);
        if threads > 1 && n.saturating_mul(d) >= crew::PROBE_SPLIT_WORK {
            // Rows cut into parts for the caller and the crew (see `crew`).
            let chunk = (crew::PART_WORK / d.max(1)).max(1);
            let runs: Vec<Mutex<&mut [u64]>> = keys.chunks_mut(chunk).map(Mutex::new).collect();
            let parts = runs.len();
            crew::run_parts(parts, (parts - 1).min(threads - 1), &|j, _seat| {
                // Only part `j`'s thread locks run `j`: never contended.
                let mut run = runs[j].lock().unwrap_or_else(|e| e.into_inner());
                PART_DOTS
                    .with_borrow_mut(|dots| rank_keys(store, kernel, q, j * chunk, dots, &mut run));
            });
        } else {
            rank_keys(store, kernel, q, 0, buf, keys);
        }
        out.extend(select_top_keys(keys, k).iter().map(|&key| key_rank(key).1));
    });
}

thread_local! {
    /// Scratch of [`nearest_one`]: one key per ranked row, kept between calls
    /// (a probe ranks ~1,400 centroids per query; an allocation each time cost
    /// about as much as the selection).
    static RANK_KEYS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// Dot products of one part of a split [`nearest_one`], per thread.
    static PART_DOTS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
    /// Ranks of one block of [`scan_one`] and of one query of a block of
    /// [`scan_gathered`], per thread.
    static BLOCK_RANKS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One query's dot products of a block of [`scan_gathered`], per thread.
    static COLUMN_DOTS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// An INT8 rank and its row as one integer whose order is the order of
/// [`TopK`]: higher rank first, then the smaller row (a NaN rank counts as
/// `-inf`; `-0.0` below `0.0`, as `f32::total_cmp`). Selecting on plain
/// integers instead of `(f32, u32)` pairs under a comparator made the probe's
/// selection about twice as fast.
///
/// ```
/// # use slabcache_core::vector::scan::{key_rank, rank_key};
/// assert!(rank_key(2.0, 9) > rank_key(1.5, 0));
/// assert!(rank_key(1.5, 3) > rank_key(1.5, 4)); // a tie goes to the smaller row
/// assert!(rank_key(0.0, 0) > rank_key(-0.0, 0));
/// assert_eq!(rank_key(f32::NAN, 1), rank_key(f32::NEG_INFINITY, 1));
/// assert_eq!(key_rank(rank_key(-3.25, 7)), (-3.25, 7));
/// ```
#[inline]
pub fn rank_key(rank: f32, row: u32) -> u64 {
    let rank = if rank.is_nan() {
        f32::NEG_INFINITY
    } else {
        rank
    };
    let b = rank.to_bits();
    let ord = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    (u64::from(ord) << 32) | u64::from(!row)
}

/// The rank and row a [`rank_key`] was made of.
#[inline]
pub fn key_rank(key: u64) -> (f32, u32) {
    let ord = (key >> 32) as u32;
    let b = if ord >> 31 == 1 {
        ord & !(1 << 31)
    } else {
        !ord
    };
    (f32::from_bits(b), !(key as u32))
}

/// The `k` largest of `keys` (all of them if fewer), largest first; `keys`
/// is reordered. (A bound first, from the minimum of `k` runs' maxima, so
/// that only keys above it reach the selection, was slower for 64 of 1,379.)
pub fn select_top_keys(keys: &mut [u64], k: usize) -> &[u64] {
    let k = k.min(keys.len());
    if k == 0 {
        return &[];
    }
    if k < keys.len() {
        keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    }
    let top = &mut keys[..k];
    top.sort_unstable_by(|a, b| b.cmp(a));
    top
}

/// Sets `keys` to the [`rank_key`]s of rows `r0..r0 + keys.len()` of
/// `store` for one query: one kernel pass into `buf`, then the ranks in a
/// loop per code, compiled for the kernel's vector width (the loops
/// vectorize; per-row accessors did not: 2.0 to 0.7 µs for 1,379 rows).
fn rank_keys(
    store: &RowStore,
    kernel: Kernel,
    q: OneQuery<'_>,
    r0: usize,
    buf: &mut Vec<i32>,
    keys: &mut [u64],
) {
    let d = store.dim();
    let r1 = r0 + keys.len();
    buf.clear();
    buf.resize(r1 - r0, 0);
    kernel.dots(q.codes, &store.codes[r0 * d..r1 * d], d, buf);
    let fq = (q.factor as f64, q.sum as f64);
    let n = keys.len();
    let keys = &mut keys[..n];
    for_each_rank(kernel, store, r0, fq, &buf[..n], |i, rank| {
        keys[i] = rank_key(rank, (r0 + i) as u32);
    });
}

/// Calls `put(i, rank)` with the INT8 rank of each row `r0 + i` of `store`
/// (`i < dots.len()`) from its dot product `dots[i]` with a query of factor
/// and code sum `fq`: `f·(m·p + o·s) + a` in f64, the arithmetic of
/// [`rank_rows`], so that every path orders rows alike. A tombstone (NaN
/// scale) gives a NaN rank. The loop is compiled for the kernel's vector
/// width, one loop per code with its columns inlined: it vectorizes where
/// a loop over per-row accessors did not (1,379 rows: 2.0 to 0.7 µs).
#[inline(always)]
fn for_each_rank(
    kernel: Kernel,
    store: &RowStore,
    r0: usize,
    fq: (f64, f64),
    dots: &[i32],
    put: impl FnMut(usize, f32),
) {
    match kernel.kind() {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512 | KernelKind::Avx512Vnni => {
            // SAFETY: a `Kernel` of these kinds exists only on a CPU with
            // AVX-512 F (`Kernel::new` checks `is_supported`).
            unsafe { ranks_avx512(store, r0, fq, dots, put) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => {
            // SAFETY: as above, a `Kernel` of kind `Avx2` implies AVX2.
            unsafe { ranks_avx2(store, r0, fq, dots, put) }
        }
        _ => ranks_by_code(store, r0, fq, dots, put),
    }
}

/// [`ranks_by_code`] compiled for AVX-512 (its f64 loops run 8 wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn ranks_avx512(
    store: &RowStore,
    r0: usize,
    fq: (f64, f64),
    dots: &[i32],
    put: impl FnMut(usize, f32),
) {
    ranks_by_code(store, r0, fq, dots, put);
}

/// [`ranks_by_code`] compiled for AVX2 (4 wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ranks_avx2(
    store: &RowStore,
    r0: usize,
    fq: (f64, f64),
    dots: &[i32],
    put: impl FnMut(usize, f32),
) {
    ranks_by_code(store, r0, fq, dots, put);
}

/// [`for_each_rank`]'s loop, one instance per code.
#[inline(always)]
fn ranks_by_code(
    store: &RowStore,
    r0: usize,
    fq: (f64, f64),
    dots: &[i32],
    put: impl FnMut(usize, f32),
) {
    let r1 = r0 + dots.len();
    let mul = &store.mul[r0..r1];
    let off = (store.is_asymmetric() && !store.off.is_empty()).then(|| &store.off[r0..r1]);
    let implicit = store.is_asymmetric() && store.off.is_empty();
    let add = (!store.add.is_empty()).then(|| &store.add[r0..r1]);
    let (p, m) = (dots, mul);
    match (off, implicit, add) {
        (None, false, None) => ranks_with(p, m, fq, |_| 0.0, |_| 0.0, put),
        (None, false, Some(a)) => ranks_with(p, m, fq, |_| 0.0, |i| a[i], put),
        (None, true, None) => ranks_with(p, m, fq, |i| 128.0 * m[i], |_| 0.0, put),
        (None, true, Some(a)) => ranks_with(p, m, fq, |i| 128.0 * m[i], |i| a[i], put),
        (Some(o), _, None) => ranks_with(p, m, fq, |i| o[i], |_| 0.0, put),
        (Some(o), _, Some(a)) => ranks_with(p, m, fq, |i| o[i], |i| a[i], put),
    }
}

#[inline(always)]
fn ranks_with(
    dots: &[i32],
    mul: &[f32],
    (f, sq): (f64, f64),
    off: impl Fn(usize) -> f32,
    add: impl Fn(usize) -> f32,
    mut put: impl FnMut(usize, f32),
) {
    let mul = &mul[..dots.len()];
    for i in 0..dots.len() {
        let t = mul[i] as f64 * dots[i] as f64 + off(i) as f64 * sq;
        put(i, (f * t + add(i) as f64) as f32);
    }
}

/// The indexes of the `k` highest of `ranks`, highest first (ties to the
/// smaller index), using `tmp` as scratch.
pub fn nearest(ranks: &[f32], k: usize, tmp: &mut Vec<u64>, out: &mut Vec<u32>) {
    tmp.clear();
    tmp.extend(
        ranks
            .iter()
            .enumerate()
            .map(|(i, &r)| rank_key(r, i as u32)),
    );
    out.extend(select_top_keys(tmp, k).iter().map(|&key| key_rank(key).1));
}
