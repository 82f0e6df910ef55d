//! The flat (exhaustive) INT8 index: exact top-k over every stored row.

use crate::error::{Error, ErrorKind, Result};
use crate::vector::id_lookup::IdLookup;
use crate::vector::kernels::Kernel;
use crate::vector::metric::Metric;
use crate::vector::quantize::{check_finite, CodeKind};
use crate::vector::scan::{candidates, finish, scan_store, QueryBatch};
use crate::vector::store::{RowStore, StoreBytes};

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

/// Checks a re-rank factor.
pub(crate) fn check_rerank(rerank: Option<usize>) -> Result<()> {
    match rerank {
        Some(f) if f == 0 || f > 1024 => Err(Error::invalid_argument(format!(
            "rerank must be in 1..=1024 (candidates per result), got {f}"
        ))),
        _ => Ok(()),
    }
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
    lookup: IdLookup,
    pub(crate) next_id: u64,
    /// The code asked for; `Auto` until the first add resolves it.
    codes: CodeKind,
}

/// Where an index's bytes go (see [`FlatIndex::bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexBytes {
    /// The stores' arrays.
    pub store: StoreBytes,
    /// Id → row tables (0 while ids arrive in increasing order).
    pub id_table: usize,
    /// Centroids and other per-index data (clustered only).
    pub other: usize,
}

impl IndexBytes {
    /// The sum.
    pub fn total(&self) -> usize {
        self.store.total() + self.id_table + self.other
    }
}

impl FlatIndex {
    /// An empty index with the kernel from `SLABCACHE_SIMD` (or the best).
    pub fn new(dim: usize, metric: Metric) -> Result<FlatIndex> {
        FlatIndex::with_kernel(dim, metric, Kernel::from_env()?)
    }

    /// An empty index with an explicit kernel.
    pub fn with_kernel(dim: usize, metric: Metric, kernel: Kernel) -> Result<FlatIndex> {
        FlatIndex::with_options(dim, metric, kernel, false)
    }

    /// An empty index that also keeps every vector in FP32 when
    /// `keep_exact`, so that searches re-rank their INT8 candidates exactly
    /// (`4·dim` more bytes per row).
    ///
    /// ```
    /// use slabcache_core::vector::{FlatIndex, Kernel, Metric};
    /// let mut index = FlatIndex::with_options(2, Metric::L2, Kernel::best(), true).unwrap();
    /// // Closer together than one INT8 step: only the FP32 rows tell them apart.
    /// index.add(&[1.0, 0.5, 1.0, 0.501], None).unwrap();
    /// let (dist, ids) = index.search_batch_rerank(&[1.0, 0.501], 1, None).unwrap();
    /// assert_eq!((ids[0], dist[0]), (1, 0.0));
    /// ```
    pub fn with_options(
        dim: usize,
        metric: Metric,
        kernel: Kernel,
        keep_exact: bool,
    ) -> Result<FlatIndex> {
        check_dim(dim)?;
        Ok(FlatIndex {
            metric,
            kernel,
            store: RowStore::new(dim, metric, keep_exact),
            lookup: IdLookup::default(),
            next_id: 0,
            codes: CodeKind::Auto,
        })
    }

    /// Asks for a code (see [`CodeKind`]); only while the index has never
    /// held a vector (`InvalidArgument` after).
    ///
    /// ```
    /// use slabcache_core::vector::{FlatIndex, Metric};
    /// use slabcache_core::vector::quantize::CodeKind;
    /// let mut index = FlatIndex::new(2, Metric::L2).unwrap();
    /// assert_eq!(index.codes(), CodeKind::Auto);
    /// index.add(&[0.0, 1.0, 2.0, 3.0], None).unwrap(); // non-negative
    /// assert_eq!(index.codes(), CodeKind::Asymmetric);
    /// assert!(index.set_codes(CodeKind::Symmetric).is_err());
    /// ```
    pub fn set_codes(&mut self, codes: CodeKind) -> Result<()> {
        if self.codes != CodeKind::Auto || self.store.rows() > 0 {
            return Err(Error::invalid_argument(
                "the code can only be chosen before the first add",
            ));
        }
        self.codes = codes;
        if codes != CodeKind::Auto {
            self.store.set_asymmetric(codes == CodeKind::Asymmetric);
        }
        Ok(())
    }

    /// Keeps asymmetric rows on the min-floor code (no zero floor): for the
    /// clustered index's centroids. Only before the first add.
    pub(crate) fn forbid_zero_floor(&mut self) {
        self.store.forbid_zero_floor();
    }

    /// The code in use (`Auto` until the first add decides).
    pub fn codes(&self) -> CodeKind {
        self.codes
    }

    /// Whether the FP32 vectors are kept for exact re-ranking.
    pub fn keeps_exact(&self) -> bool {
        self.store.keeps_exact()
    }

    fn row_of(&self, id: u64) -> Option<usize> {
        let store = &self.store;
        self.lookup.get(&store.ids, id, |r| store.is_live(r))
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
        self.row_of(id).is_some()
    }

    /// Live ids in storage order.
    pub fn ids(&self) -> Vec<u64> {
        (0..self.store.rows())
            .filter(|&r| self.store.is_live(r))
            .map(|r| self.store.id(r))
            .collect()
    }

    /// Bytes held (codes, per-row data, id table).
    pub fn memory_bytes(&self) -> usize {
        self.bytes().total()
    }

    /// Bytes held, by kind.
    ///
    /// ```
    /// use slabcache_core::vector::{FlatIndex, Metric};
    /// let mut index = FlatIndex::new(16, Metric::Cosine).unwrap();
    /// index.add(&vec![-0.5; 16 * 1000], None).unwrap(); // signed: symmetric code
    /// let b = index.bytes();
    /// assert_eq!(b.store.codes, 16 * 1000);
    /// assert_eq!(b.store.ids + b.store.factors, 7 * 1000); // id (3 B: ids < 2^24) + one factor
    /// assert_eq!(b.id_table, 0); // ids in increasing order: no table
    /// ```
    pub fn bytes(&self) -> IndexBytes {
        IndexBytes {
            store: self.store.bytes(),
            id_table: self.lookup.memory_bytes(),
            other: 0,
        }
    }

    /// Rows held including tombstones not yet compacted.
    pub fn rows_held(&self) -> usize {
        self.store.rows()
    }

    /// The vector of `id`, or `NotFound`: the FP32 original when kept, else
    /// the dequantized codes (`s · q`; for `cosine`, their unit direction).
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        let r = self
            .row_of(id)
            .ok_or_else(|| Error::not_found(format!("id {id} is not in the index")))?;
        Ok(self.store.reconstruct(r))
    }

    /// Adds `vectors` (`n × dim`, row-major, finite) with the given ids (each
    /// in `0..=2^63-1`, new and distinct) or fresh ones (one more than the
    /// largest id ever used). Returns the ids. On error nothing is added.
    pub fn add(&mut self, vectors: &[f32], ids: Option<&[u64]>) -> Result<Vec<u64>> {
        let d = self.dim();
        let n = check_vectors(vectors, d, "add")?;
        let ids = resolve_ids(n, ids, self.next_id, |id| self.row_of(id).is_some())?;
        if self.store.rows() + n > MAX_ROWS {
            return Err(Error::out_of_memory(format!(
                "an index holds at most {MAX_ROWS} rows (tombstones included)"
            )));
        }
        if n > 0 && self.codes == CodeKind::Auto {
            self.codes = CodeKind::Auto.resolve(vectors);
            self.store
                .set_asymmetric(self.codes == CodeKind::Asymmetric);
        }
        self.store.reserve_for(vectors, &ids)?;
        self.lookup.reserve(&self.store.ids, n)?;
        // Leaving the sorted lookup builds a table: build it before anything changes.
        let mut lookup = if self.lookup.stays_sorted(&self.store.ids, &ids) {
            None
        } else if self.lookup.is_sorted() {
            let mut all: Vec<u64> = self.store.ids.iter().collect();
            all.extend_from_slice(&ids);
            let rows = self.store.rows();
            let store = &self.store;
            let table =
                crate::vector::row_map::RowMap::build(&all, |r| r >= rows || store.is_live(r))?;
            Some(IdLookup::Map(table))
        } else {
            None
        };
        let first = self.store.rows();
        self.store.append(vectors, &ids);
        match lookup.take() {
            Some(l) => self.lookup = l,
            None => {
                let store = &self.store;
                self.lookup
                    .appended(&store.ids, first, |r| store.is_live(r))
                    .expect("the id table was reserved");
            }
        }
        for &id in &ids {
            self.next_id = self.next_id.max(id + 1);
        }
        Ok(ids)
    }

    /// Removes `ids` (all must be present; repeats count once). Returns how
    /// many were removed. On `NotFound` nothing is removed. Rows become
    /// tombstones, compacted once they are a quarter of the store.
    pub fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        if let Some(&id) = ids.iter().find(|&&id| self.row_of(id).is_none()) {
            return Err(Error::not_found(format!("id {id} is not in the index")));
        }
        let mut removed = 0;
        for &id in ids {
            let store = &self.store;
            if let Some(r) = self.lookup.remove(&store.ids, id, |r| store.is_live(r)) {
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
        if self.lookup.rebuild(ids, |_| true).is_err() {
            let mut m = crate::vector::row_map::RowMap::default();
            for r in 0..ids.len() {
                m.insert(ids, r);
            }
            self.lookup = IdLookup::Map(m);
        }
    }

    /// Exact top-`k` of each query (`m × dim`, finite): returns `scores` and
    /// `ids`, both `m × k` row-major, best first. Scores are the metric's
    /// (`ip`/`cosine`: higher is closer; `l2`: squared distance, lower is
    /// closer). The store is scanned with INT8 dot products for the best
    /// `k + max(k, 16)` candidates, which are then re-scored with the FP32
    /// query against the dequantized rows (against the FP32 rows, `4k`
    /// candidates, when they are kept). Fewer than `k` live vectors: the rest
    /// is padded with id `-1` and score `-inf` (`+inf` for `l2`).
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        self.search_batch_rerank(queries, k, None)
    }

    /// [`search_batch`](Self::search_batch) keeping `rerank · k` INT8
    /// candidates per query for the final re-score (`None`: the default).
    pub fn search_batch_rerank(
        &self,
        queries: &[f32],
        k: usize,
        rerank: Option<usize>,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let d = self.dim();
        check_vectors(queries, d, "search")?;
        check_k(k)?;
        check_rerank(rerank)?;
        let qb = QueryBatch::new(queries, d, self.metric);
        let kc = candidates(k, rerank, self.keeps_exact());
        let heaps = scan_store(&self.store, self.kernel, &qb, kc, 0);
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
        let lookup = IdLookup::for_rows(&store.ids, |r| store.is_live(r))
            .expect("id table: out of memory on load");
        let codes = match (store.rows(), store.is_asymmetric()) {
            (0, false) => CodeKind::Auto,
            (_, true) => CodeKind::Asymmetric,
            (_, false) => CodeKind::Symmetric,
        };
        FlatIndex {
            metric,
            kernel,
            store,
            lookup,
            next_id,
            codes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_beyond_f32_range_is_inf_never_zero_or_nan() {
        let big = 3e38f32;
        let data = [big, 0.0, 0.0, 1.0, big, big];
        for exact in [false, true] {
            let mut ix = FlatIndex::with_options(2, Metric::L2, Kernel::best(), exact).unwrap();
            ix.add(&data, None).unwrap();
            let (d, ids) = ix.search_batch(&data, 3).unwrap();
            assert!(ids.iter().all(|&i| i >= 0), "{ids:?}");
            assert!(d.iter().all(|v| !v.is_nan()));
            // Query 1 ([0, 1]) is ~3e38 away from rows 0 and 2: squared, inf.
            assert_eq!(ids[3], 1);
            assert_eq!(&d[4..6], &[f32::INFINITY, f32::INFINITY]);
            if exact {
                assert_eq!((ids[0], d[0]), (0, 0.0));
                assert_eq!((ids[6], d[6]), (2, 0.0));
            }
        }
    }

    #[test]
    fn ids_out_of_order_switch_to_a_table_and_stay_consistent() {
        let mut ix = FlatIndex::with_kernel(2, Metric::Ip, Kernel::scalar()).unwrap();
        let v = |n: usize| -> Vec<f32> { (0..2 * n).map(|i| i as f32 + 1.0).collect() };
        ix.add(&v(3), Some(&[1, 5, 9])).unwrap();
        assert_eq!(ix.bytes().id_table, 0);
        ix.remove(&[5]).unwrap();
        assert!(!ix.contains(5) && ix.contains(9));
        // Re-adding 5 breaks the order: a table is built, lookups still agree.
        ix.add(&v(1), Some(&[5])).unwrap();
        assert!(ix.bytes().id_table > 0);
        for id in [1, 5, 9] {
            assert!(ix.contains(id));
        }
        assert!(!ix.contains(2));
        assert!(ix.add(&v(1), Some(&[9])).is_err());
        ix.remove(&[1, 9]).unwrap();
        assert_eq!(ix.ids(), vec![5]);
    }

    #[test]
    fn exact_rows_tell_near_duplicates_apart() {
        let mut ix = FlatIndex::with_options(3, Metric::Cosine, Kernel::best(), true).unwrap();
        let a = [1.0f32, 0.2, 0.3];
        let b = [1.0f32, 0.2, 0.3001];
        ix.add(&[a, b].concat(), None).unwrap();
        let (_, ids) = ix.search_batch(&[a, b].concat(), 1).unwrap();
        assert_eq!(ids, vec![0, 1]);
        assert!(check_rerank(Some(0)).is_err() && check_rerank(Some(4)).is_ok());
    }
}
