//! The flat (exhaustive) INT8 index: exact top-k over every stored row.

use crate::error::{Error, ErrorKind, Result};
use crate::vector::kernels::Kernel;
use crate::vector::metric::Metric;
use crate::vector::quantize::check_finite;
use crate::vector::row_map::RowMap;
use crate::vector::scan::{candidates, finish, scan_store, QueryBatch};
use crate::vector::store::RowStore;

/// The largest vector dimension an index accepts (keeps every i32 dot exact).
pub const MAX_DIM: usize = 65_536;
/// The largest id (ids travel to Python as int64, and -1 marks padding).
pub const MAX_ID: u64 = i64::MAX as u64;
/// The most rows (tombstones included) a flat index holds.
pub const MAX_ROWS: usize = crate::vector::row_map::MAX_ROWS;

/// Checks a dimension.
pub(crate) fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 || dim > MAX_DIM {
        return Err(Error::invalid_argument(format!(
            "dim must be in 1..={MAX_DIM}, got {dim}"
        )));
    }
    Ok(())
}

/// Checks that `values` is a whole number of `dim`-wide finite vectors;
/// returns how many.
pub(crate) fn check_vectors(values: &[f32], dim: usize, what: &str) -> Result<usize> {
    if !values.len().is_multiple_of(dim) {
        return Err(Error::invalid_argument(format!(
            "{what}: {} values is not a whole number of {dim}-dimensional vectors",
            values.len()
        )));
    }
    check_finite(values, dim)?;
    Ok(values.len() / dim)
}

/// Checks `k`.
pub(crate) fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::invalid_argument("k must be at least 1"));
    }
    if k > 1 << 20 {
        return Err(Error::invalid_argument(format!(
            "k must be at most 1048576, got {k}"
        )));
    }
    Ok(())
}

/// User ids or assigned ones, validated against `existing` (nothing changes on error).
pub(crate) fn resolve_ids(
    n: usize,
    ids: Option<&[u64]>,
    next_id: u64,
    exists: impl Fn(u64) -> bool,
) -> Result<Vec<u64>> {
    match ids {
        None => {
            let end = next_id
                .checked_add(n as u64)
                .filter(|&e| e <= MAX_ID + 1)
                .ok_or_else(|| Error::invalid_argument("assigned ids would exceed 2^63-1"))?;
            let out: Vec<u64> = (next_id..end).collect();
            if let Some(&id) = out.iter().find(|&&id| exists(id)) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("id {id} is already in the index"),
                ));
            }
            Ok(out)
        }
        Some(ids) => {
            if ids.len() != n {
                return Err(Error::invalid_argument(format!(
                    "got {} ids for {n} vectors",
                    ids.len()
                )));
            }
            let mut seen = std::collections::HashSet::with_capacity(n);
            for &id in ids {
                if id > MAX_ID {
                    return Err(Error::invalid_argument(format!(
                        "id {id} is out of range (ids must be in 0..=2^63-1)"
                    )));
                }
                if !seen.insert(id) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("id {id} appears twice in one add"),
                    ));
                }
                if exists(id) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("id {id} is already in the index"),
                    ));
                }
            }
            Ok(ids.to_vec())
        }
    }
}

/// An exhaustive INT8 index: rows stored contiguously, exact top-k search.
///
/// ```
/// use slabcache_core::vector::{FlatIndex, Metric};
/// let mut index = FlatIndex::new(4, Metric::Cosine).unwrap();
/// let ids = index
///     .add(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], None)
///     .unwrap();
/// assert_eq!(ids, vec![0, 1]);
/// let (scores, found) = index.search_batch(&[0.9, 0.1, 0.0, 0.0], 3).unwrap();
/// assert_eq!(found, vec![0, 1, -1]); // k beyond the store is padded with -1
/// assert!(scores[0] > 0.99 && scores[2] == f32::NEG_INFINITY);
/// index.remove(&[0]).unwrap();
/// assert_eq!(index.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct FlatIndex {
    pub(crate) metric: Metric,
    kernel: Kernel,
    pub(crate) store: RowStore,
    row_of: RowMap,
    pub(crate) next_id: u64,
}

impl FlatIndex {
    /// An empty index with the kernel from `SLABCACHE_SIMD` (or the best).
    pub fn new(dim: usize, metric: Metric) -> Result<FlatIndex> {
        FlatIndex::with_kernel(dim, metric, Kernel::from_env()?)
    }

    /// An empty index with an explicit kernel.
    pub fn with_kernel(dim: usize, metric: Metric, kernel: Kernel) -> Result<FlatIndex> {
        check_dim(dim)?;
        Ok(FlatIndex {
            metric,
            kernel,
            store: RowStore::new(dim, metric),
            row_of: RowMap::default(),
            next_id: 0,
        })
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.store.dim()
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Switches kernel (results are identical; only speed changes).
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.store.live_rows()
    }

    /// Whether no vector is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.row_of.get(&self.store.ids, id).is_some()
    }

    /// Live ids in storage order.
    pub fn ids(&self) -> Vec<u64> {
        (0..self.store.rows())
            .filter(|&r| self.store.live[r])
            .map(|r| self.store.ids[r])
            .collect()
    }

    /// Bytes held (codes, per-row data, id table).
    pub fn memory_bytes(&self) -> usize {
        self.store.memory_bytes() + self.row_of.memory_bytes()
    }

    /// The dequantized vector of `id` (`s · q`), or `NotFound`.
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        let r = self
            .row_of
            .get(&self.store.ids, id)
            .ok_or_else(|| Error::not_found(format!("id {id} is not in the index")))?;
        Ok(self.store.reconstruct(r))
    }

    /// Adds `vectors` (`n × dim`, row-major, finite) with the given ids (each
    /// in `0..=2^63-1`, new and distinct) or fresh ones (one more than the
    /// largest id ever used). Returns the ids. On error nothing is added.
    pub fn add(&mut self, vectors: &[f32], ids: Option<&[u64]>) -> Result<Vec<u64>> {
        let d = self.dim();
        let n = check_vectors(vectors, d, "add")?;
        let ids = resolve_ids(n, ids, self.next_id, |id| {
            self.row_of.get(&self.store.ids, id).is_some()
        })?;
        if self.store.rows() + n > MAX_ROWS {
            return Err(Error::out_of_memory(format!(
                "an index holds at most {MAX_ROWS} rows (tombstones included)"
            )));
        }
        self.store.reserve(n)?;
        self.row_of.reserve(&self.store.ids, n)?;
        let first = self.store.rows();
        self.store.append(vectors, &ids);
        for (i, &id) in ids.iter().enumerate() {
            self.row_of.insert(&self.store.ids, first + i);
            self.next_id = self.next_id.max(id + 1);
        }
        Ok(ids)
    }

    /// Removes `ids` (all must be present; repeats count once). Returns how
    /// many were removed. On `NotFound` nothing is removed. Rows become
    /// tombstones, compacted once they are a quarter of the store.
    pub fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        if let Some(&id) = ids
            .iter()
            .find(|&&id| self.row_of.get(&self.store.ids, id).is_none())
        {
            return Err(Error::not_found(format!("id {id} is not in the index")));
        }
        let mut removed = 0;
        for &id in ids {
            if let Some(r) = self.row_of.remove(&self.store.ids, id) {
                self.store.tombstone(r);
                removed += 1;
            }
        }
        if self.store.wants_compaction() {
            self.compact();
        }
        Ok(removed)
    }

    /// Squeezes out tombstones now and gives the freed memory back: the
    /// store's arrays and the id table shrink to the live rows.
    pub fn compact(&mut self) {
        if self.store.dead_rows() == 0 {
            return;
        }
        self.store.compact(|_, _| {});
        self.store.shrink_to_fit();
        let ids = &self.store.ids;
        // Rebuilt at the live size; on allocation failure keep the old
        // (larger) table's contents by rebuilding with growth.
        self.row_of = RowMap::build(ids, |_| true).unwrap_or_else(|_| {
            let mut m = RowMap::default();
            for r in 0..ids.len() {
                m.insert(ids, r);
            }
            m
        });
    }

    /// Exact top-`k` of each query (`m × dim`, finite): returns `scores` and
    /// `ids`, both `m × k` row-major, best first. Scores are the metric's
    /// (`ip`/`cosine`: higher is closer; `l2`: squared distance, lower is
    /// closer). The store is scanned with INT8 dot products for the best
    /// `k + max(k, 16)` candidates, which are then re-scored with the FP32
    /// query against the dequantized rows. Fewer than `k` live vectors: the rest is padded with id `-1`
    /// and score `-inf` (`+inf` for `l2`).
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        let d = self.dim();
        check_vectors(queries, d, "search")?;
        check_k(k)?;
        let qb = QueryBatch::new(queries, d, self.metric);
        let heaps = scan_store(&self.store, self.kernel, &qb, candidates(k), 0);
        let store = &self.store;
        Ok(finish(heaps, queries, d, k, self.metric, |key| {
            (store, key as usize)
        }))
    }

    /// [`search_batch`](Self::search_batch) for one query.
    pub fn search(&self, query: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        if query.len() != self.dim() {
            return Err(Error::invalid_argument(format!(
                "query has {} values, the index has dim {}",
                query.len(),
                self.dim()
            )));
        }
        self.search_batch(query, k)
    }

    /// Rebuilds an index from loaded parts (see [`persist`](super::persist)).
    pub(crate) fn from_parts(
        store: RowStore,
        metric: Metric,
        next_id: u64,
        kernel: Kernel,
    ) -> FlatIndex {
        let live = &store.live;
        let row_of = RowMap::build(&store.ids, |r| live[r]).expect("RowMap: out of memory on load");
        FlatIndex {
            metric,
            kernel,
            store,
            row_of,
            next_id,
        }
    }
}
