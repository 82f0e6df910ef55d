//! The page-clustered INT8 index (Atlas-like): rows grouped into pages by
//! k-means centroids; a query scans only its `nprobe` nearest pages.
//!
//! Training runs Lloyd's k-means (10 rounds, at most 256 points per
//! centroid) on a sample; cosine and inner-product indexes cluster
//! directions (spherical k-means), L2 clusters points. Assignment and
//! probing are themselves INT8 searches over the centroids. Recall falls
//! as `nprobe / nlist` falls; `nprobe = nlist` is exact (see
//! `docs/vectors.md` for measured trade-offs).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::vector::crew;
use crate::vector::flat::{
    check_dim, check_k, check_rerank, check_vectors, resolve_ids, FlatIndex, IndexBytes,
};
use crate::vector::kernels::Kernel;
use crate::vector::metric::Metric;
use crate::vector::page_map::Locator;
use crate::vector::quantize::CodeKind;
use crate::vector::scan::{
    candidates, finish, nearest, nearest_one, prefetch_store, rank_rows, scan_gathered, scan_one,
    QueryBatch, PREFETCH_BATCH, PREFETCH_ONE_QUERY, QUERY_TILE,
};
use crate::vector::store::RowStore;
use crate::vector::topk::TopK;

/// Queries per probed list, on average, from which a batch is scanned list by
/// list (each list loaded once for all its queries) rather than query by query.
const LIST_MAJOR_SHARING: usize = 2;
/// Byte-products per task when a batch's lists are split across threads.
const BATCH_TASK_WORK: usize = 1 << 18;
/// k-means rounds.
const KMEANS_ROUNDS: usize = 10;
/// Sample points per centroid used for training.
const POINTS_PER_CENTROID: usize = 256;

/// A page-clustered INT8 index.
///
/// ```
/// use slabcache_core::vector::{ClusteredIndex, Metric};
/// let dim = 8;
/// let data: Vec<f32> = (0..400 * dim).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
/// let mut index = ClusteredIndex::new(dim, Metric::L2, 4, 4).unwrap();
/// index.add(&data, None).unwrap(); // the first add trains the centroids
/// assert_eq!(index.len(), 400);
/// let (dist, ids) = index.search_batch(&data[..dim], 1).unwrap();
/// assert!(dist[0] < 1.0); // vector 0 itself (or one of its duplicates)
/// ```
#[derive(Debug, Clone)]
pub struct ClusteredIndex {
    pub(crate) dim: usize,
    pub(crate) metric: Metric,
    kernel: Kernel,
    pub(crate) nprobe: usize,
    /// The centroids as an INT8 index, for assignment and probing (`None`
    /// until trained). The FP32 centroids are not kept: probing and
    /// assignment only ever read these codes, and a save writes them.
    pub(crate) coarse: Option<FlatIndex>,
    pub(crate) nlist: usize,
    pub(crate) pages: Vec<RowStore>,
    keep_exact: bool,
    /// The code asked for; `Auto` until the first add resolves it.
    codes: CodeKind,
    loc: Locator,
    pub(crate) next_id: u64,
}

pub(crate) fn coarse_metric(metric: Metric) -> Metric {
    match metric {
        Metric::L2 => Metric::L2,
        Metric::Cosine | Metric::Ip => Metric::Cosine,
    }
}

impl ClusteredIndex {
    /// An untrained index of `nlist` pages probing `nprobe` of them per query.
    pub fn new(dim: usize, metric: Metric, nlist: usize, nprobe: usize) -> Result<ClusteredIndex> {
        ClusteredIndex::with_kernel(dim, metric, nlist, nprobe, Kernel::from_env()?)
    }

    /// As [`new`](Self::new) with an explicit kernel.
    pub fn with_kernel(
        dim: usize,
        metric: Metric,
        nlist: usize,
        nprobe: usize,
        kernel: Kernel,
    ) -> Result<ClusteredIndex> {
        ClusteredIndex::with_options(dim, metric, nlist, nprobe, kernel, false)
    }

    /// As [`with_kernel`](Self::with_kernel), keeping the FP32 vectors for
    /// exact re-ranking when `keep_exact` (see [`FlatIndex::with_options`]).
    pub fn with_options(
        dim: usize,
        metric: Metric,
        nlist: usize,
        nprobe: usize,
        kernel: Kernel,
        keep_exact: bool,
    ) -> Result<ClusteredIndex> {
        check_dim(dim)?;
        if nlist == 0 || nlist > 1 << 20 {
            return Err(Error::invalid_argument(format!(
                "nlist must be in 1..=1048576, got {nlist}"
            )));
        }
        if nprobe == 0 {
            return Err(Error::invalid_argument("nprobe must be at least 1"));
        }
        Ok(ClusteredIndex {
            dim,
            metric,
            kernel,
            nprobe: nprobe.min(nlist),
            coarse: None,
            nlist,
            pages: (0..nlist)
                .map(|_| RowStore::new(dim, metric, keep_exact))
                .collect(),
            keep_exact,
            codes: CodeKind::Auto,
            loc: Locator::new(nlist),
            next_id: 0,
        })
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    /// Switches kernel.
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
        if let Some(c) = self.coarse.as_mut() {
            c.set_kernel(kernel);
        }
    }
    /// Pages (centroids).
    pub fn nlist(&self) -> usize {
        self.nlist
    }
    /// Pages scanned per query.
    pub fn nprobe(&self) -> usize {
        self.nprobe
    }
    /// Sets the pages scanned per query (clamped to `nlist`).
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        if nprobe == 0 {
            return Err(Error::invalid_argument("nprobe must be at least 1"));
        }
        self.nprobe = nprobe.min(self.nlist);
        Ok(())
    }
    /// Whether the centroids are trained.
    pub fn is_trained(&self) -> bool {
        self.coarse.is_some()
    }
    /// Live vectors.
    pub fn len(&self) -> usize {
        self.loc.len()
    }
    /// Whether no vector is live.
    pub fn is_empty(&self) -> bool {
        self.loc.is_empty()
    }
    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.loc.contains(&self.pages, id)
    }
    /// Live ids, page by page.
    pub fn ids(&self) -> Vec<u64> {
        self.pages
            .iter()
            .flat_map(|p| (0..p.rows()).filter(|&r| p.is_live(r)).map(|r| p.id(r)))
            .collect()
    }

    /// The dequantized vector of `id` (`s · q`), or `NotFound`.
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        let (p, r) = self
            .loc
            .get(&self.pages, id)
            .ok_or_else(|| Error::not_found(format!("id {id} is not in the index")))?;
        Ok(self.pages[p as usize].reconstruct(r as usize))
    }

    /// Live rows per page.
    pub fn page_sizes(&self) -> Vec<usize> {
        self.pages.iter().map(|p| p.live_rows()).collect()
    }
    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.bytes().total()
    }

    /// Whether the FP32 vectors are kept for exact re-ranking.
    pub fn keeps_exact(&self) -> bool {
        self.keep_exact
    }

    /// As [`FlatIndex::set_codes`].
    pub fn set_codes(&mut self, codes: CodeKind) -> Result<()> {
        if self.codes != CodeKind::Auto || self.pages.iter().any(|p| p.rows() > 0) {
            return Err(Error::invalid_argument(
                "the code can only be chosen before the first add",
            ));
        }
        self.apply_codes(codes);
        Ok(())
    }

    fn apply_codes(&mut self, codes: CodeKind) {
        self.codes = codes;
        if codes != CodeKind::Auto {
            for p in &mut self.pages {
                p.set_asymmetric(codes == CodeKind::Asymmetric);
            }
        }
    }

    /// The code in use (`Auto` until the first add decides).
    pub fn codes(&self) -> CodeKind {
        self.codes
    }

    /// Bytes held, by kind (`id_table`: the id → list array, or the id →
    /// (list, row) table; `other`: the coarse index of centroids, the
    /// lists' headers and the index's own struct).
    pub fn bytes(&self) -> IndexBytes {
        let mut store = crate::vector::store::StoreBytes::default();
        for p in &self.pages {
            store.merge(p.bytes());
        }
        IndexBytes {
            store,
            id_table: self.loc.memory_bytes(),
            other: self.coarse.as_ref().map_or(0, |c| c.memory_bytes())
                + self.pages.capacity() * std::mem::size_of::<RowStore>()
                + std::mem::size_of::<ClusteredIndex>(),
        }
    }

    /// Trains the centroids by k-means on `sample` (at least `nlist`
    /// vectors). Only allowed while the index is empty.
    pub fn train(&mut self, sample: &[f32]) -> Result<()> {
        let n = check_vectors(sample, self.dim, "train")?;
        if !self.is_empty() {
            return Err(Error::invalid_argument(
                "train: the index already holds vectors",
            ));
        }
        if n < self.nlist {
            return Err(Error::invalid_argument(format!(
                "train: need at least nlist = {} vectors, got {n}",
                self.nlist
            )));
        }
        let centroids = kmeans(sample, self.dim, self.nlist, self.metric, self.kernel)?;
        self.set_centroids(centroids)
    }

    pub(crate) fn set_centroids(&mut self, centroids: Vec<f32>) -> Result<()> {
        let mut coarse = FlatIndex::with_kernel(self.dim, coarse_metric(self.metric), self.kernel)?;
        coarse.forbid_zero_floor();
        coarse.add(&centroids, None)?;
        coarse.store.shrink_to_fit();
        self.coarse = Some(coarse);
        Ok(())
    }

    /// Adds vectors (as [`FlatIndex::add`]). An untrained index first trains
    /// on this batch, which then needs at least `nlist` vectors.
    pub fn add(&mut self, vectors: &[f32], ids: Option<&[u64]>) -> Result<Vec<u64>> {
        let d = self.dim;
        let n = check_vectors(vectors, d, "add")?;
        let ids = resolve_ids(n, ids, self.next_id, |id| self.contains(id))?;
        if n == 0 {
            return Ok(ids);
        }
        if !self.is_trained() {
            self.train(vectors)?;
        }
        if self.codes == CodeKind::Auto {
            self.apply_codes(CodeKind::Auto.resolve(vectors));
        }
        let assign = self.nearest_pages(vectors, 1)?;
        let mut per_page: Vec<Vec<usize>> = vec![Vec::new(); self.nlist];
        for (i, &p) in assign.iter().enumerate() {
            per_page[p as usize].push(i);
        }
        for (p, rows) in per_page.iter().enumerate() {
            let max_id = rows.iter().map(|&i| ids[i]).max().unwrap_or(0);
            let page = &mut self.pages[p];
            page.reserve(rows.len(), max_id)?;
            let own = rows
                .iter()
                .any(|&i| page.wants_offsets(&vectors[i * d..(i + 1) * d]));
            page.reserve_offsets(rows.len(), own)?;
        }
        let max_id = ids.iter().copied().max().unwrap_or(0);
        self.loc.reserve(&self.pages, n, max_id)?;
        let mut buf = Vec::new();
        let mut page_ids = Vec::new();
        for (p, rows) in per_page.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            buf.clear();
            page_ids.clear();
            for &i in rows {
                buf.extend_from_slice(&vectors[i * d..(i + 1) * d]);
                page_ids.push(ids[i]);
            }
            let first = self.pages[p].rows();
            self.pages[p].append(&buf, &page_ids);
            for j in 0..page_ids.len() {
                self.loc.insert(&self.pages, p, first + j);
            }
        }
        for &id in &ids {
            self.next_id = self.next_id.max(id + 1);
        }
        Ok(ids)
    }

    /// Removes ids (as [`FlatIndex::remove`]).
    pub fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        if let Some(&id) = ids.iter().find(|&&id| !self.contains(id)) {
            return Err(Error::not_found(format!("id {id} is not in the index")));
        }
        let mut removed = 0;
        let mut touched = Vec::new();
        for &id in ids {
            if let Some((p, r)) = self.loc.remove(&self.pages, id) {
                self.pages[p as usize].tombstone(r as usize);
                touched.push(p as usize);
                removed += 1;
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            if self.pages[p].wants_compaction() {
                // A table reads ids through the list: take the list's entries out
                // while its rows are where the table says, put them back after.
                // (The dense array names only the list, which does not change.)
                let tracks = self.loc.tracks_rows();
                let page = &self.pages[p];
                let live: Vec<u64> = (0..page.rows())
                    .filter(|&r| tracks && page.is_live(r))
                    .map(|r| page.id(r))
                    .collect();
                for &id in &live {
                    self.loc.remove(&self.pages, id);
                }
                self.pages[p].compact(|_, _| {});
                self.pages[p].shrink_to_fit();
                if tracks {
                    for r in 0..self.pages[p].rows() {
                        self.loc.insert(&self.pages, p, r);
                    }
                }
            }
        }
        // Give the id table's memory back once it is mostly empty (or the
        // dense array mostly holes).
        self.loc.shrink(&self.pages);
        Ok(removed)
    }

    /// The `nprobe` nearest page numbers of each vector (`m × nprobe`).
    fn nearest_pages(&self, vectors: &[f32], nprobe: usize) -> Result<Vec<u64>> {
        let coarse = self
            .coarse
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("index is not trained"))?;
        let (_, ids) = coarse.search_batch(vectors, nprobe)?;
        Ok(ids.into_iter().map(|i| i.max(0) as u64).collect())
    }

    /// Top-`k` of each query over its `nprobe` nearest pages (same output
    /// shape and padding as [`FlatIndex::search_batch`]).
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        self.search_batch_rerank(queries, k, None)
    }

    /// [`search_batch`](Self::search_batch) with a re-rank factor (see
    /// [`FlatIndex::search_batch_rerank`]).
    pub fn search_batch_rerank(
        &self,
        queries: &[f32],
        k: usize,
        rerank: Option<usize>,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let d = self.dim;
        let m = check_vectors(queries, d, "search")?;
        check_k(k)?;
        check_rerank(rerank)?;
        let qb = QueryBatch::new(queries, d, self.metric);
        if !self.is_trained() || m == 0 {
            let heaps = vec![TopK::new(k); m];
            return Ok(finish(
                heaps,
                queries,
                d,
                k,
                self.metric,
                |_| unreachable!(),
            ));
        }
        let np = self.nprobe;
        let probes = self.probe(queries, &qb, np);
        let kernel = self.kernel;
        let kc = candidates(k, rerank, self.keep_exact);
        let threads = rayon::current_num_threads().max(1);
        let rows_of = |p: u32| self.pages[p as usize].rows();
        // One heap per query across all its probed lists; the query's codes
        // are quantized once and borrowed, never copied per list.
        let scan_into = |qi: usize,
                         lists: &mut dyn Iterator<Item = u32>,
                         heap: &mut TopK,
                         buf: &mut Vec<i32>| {
            let mut next = lists.next();
            while let Some(p) = next {
                next = lists.next();
                if let Some(n) = next {
                    prefetch_store(&self.pages[n as usize], PREFETCH_ONE_QUERY);
                }
                let page = &self.pages[p as usize];
                scan_one(page, kernel, qb.one(qi), (p as u64) << 32, heap, buf);
            }
        };
        let scan = |qi: usize, lists: &mut dyn Iterator<Item = u32>| -> TopK {
            let mut heap = TopK::new(kc);
            scan_into(qi, lists, &mut heap, &mut Vec::new());
            heap
        };
        let heaps: Vec<TopK> = if m == 1 {
            // One query: split its lists across the crew when there is enough
            // work, part `j` taking every `parts`-th list from the `j`-th
            // nearest, so that every part gets near and far lists and the
            // caller's first part fills its heap from the nearest list.
            let lists = &probes[..np];
            let rows: usize = lists.iter().map(|&p| rows_of(p)).sum();
            let parts = (rows.saturating_mul(d) / crew::PART_WORK).min(np);
            if parts > 1 && threads > 1 {
                let merged = crew::top_k_over_parts(
                    parts,
                    (parts - 1).min(threads - 1),
                    kc,
                    |j, heap, buf| {
                        let mut part = lists.iter().skip(j).step_by(parts).copied();
                        scan_into(0, &mut part, heap, buf);
                    },
                );
                vec![merged]
            } else {
                vec![scan(0, &mut lists.iter().copied())]
            }
        } else if m * np < LIST_MAJOR_SHARING * self.nlist {
            // A small batch: lists are rarely shared, so each query scans its own
            // lists nearest first (as one query does), queries in parallel.
            (0..m)
                .into_par_iter()
                .map(|qi| scan(qi, &mut probes[qi * np..(qi + 1) * np].iter().copied()))
                .collect()
        } else {
            self.scan_lists(&qb, &probes, np, kc, threads)
        };
        let pages = &self.pages;
        Ok(finish(heaps, queries, d, k, self.metric, |key| {
            (&pages[(key >> 32) as usize], (key & 0xffff_ffff) as usize)
        }))
    }

    /// The lists a search with `nprobe` would scan for each query of
    /// `queries` (`m × dim`), nearest first (`m × nprobe'` with
    /// `nprobe' = min(nprobe, nlist)`): for diagnosing recall (is the true
    /// neighbour's list among them?) and for timing the probe alone.
    ///
    /// ```
    /// use slabcache_core::vector::{ClusteredIndex, Metric};
    /// let dim = 8;
    /// let data: Vec<f32> = (0..400 * dim).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
    /// let mut index = ClusteredIndex::new(dim, Metric::L2, 4, 2).unwrap();
    /// index.add(&data, None).unwrap();
    /// let lists = index.probe_lists(&data[..dim], 3).unwrap();
    /// assert_eq!(lists.len(), 3);
    /// assert!(lists.iter().all(|&l| (l as usize) < index.nlist()));
    /// ```
    pub fn probe_lists(&self, queries: &[f32], nprobe: usize) -> Result<Vec<u32>> {
        check_vectors(queries, self.dim, "probe")?;
        if nprobe == 0 {
            return Err(Error::invalid_argument("nprobe must be at least 1"));
        }
        if !self.is_trained() {
            return Err(Error::invalid_argument("index is not trained"));
        }
        let qb = QueryBatch::new(queries, self.dim, self.metric);
        Ok(self.probe(queries, &qb, nprobe.min(self.nlist)))
    }

    /// The `np` nearest lists of each query, nearest first (`m × np`): every
    /// centroid ranked by the INT8 kernel in one batched pass, then a
    /// selection — no re-scoring, since only the order matters and INT8
    /// ranks of centroids order them as FP32 would up to near-ties.
    fn probe(&self, queries: &[f32], qb: &QueryBatch, np: usize) -> Vec<u32> {
        let coarse = &self
            .coarse
            .as_ref()
            .expect("probe on a trained index")
            .store;
        let cm = coarse_metric(self.metric);
        let own;
        let cq = if cm == self.metric {
            qb
        } else {
            own = QueryBatch::new(queries, self.dim, cm);
            &own
        };
        let m = cq.len();
        let nl = coarse.rows();
        let kernel = self.kernel;
        if m == 1 {
            let mut out = Vec::with_capacity(np);
            nearest_one(coarse, kernel, cq.one(0), np, &mut Vec::new(), &mut out);
            return out;
        }
        let work = |q0: usize, q1: usize| -> Vec<u32> {
            let mut ranks = vec![0f32; (q1 - q0) * nl];
            rank_rows(coarse, kernel, cq, q0, q1, &mut ranks);
            let mut out = Vec::with_capacity((q1 - q0) * np);
            let mut tmp = Vec::with_capacity(nl);
            for r in ranks.chunks_exact(nl) {
                nearest(r, np, &mut tmp, &mut out);
            }
            out
        };
        let threads = rayon::current_num_threads().max(1);
        if m <= QUERY_TILE || threads == 1 {
            return work(0, m);
        }
        let chunk = m.div_ceil(threads).next_multiple_of(4).max(4);
        (0..m.div_ceil(chunk))
            .into_par_iter()
            .flat_map_iter(|c| work(c * chunk, ((c + 1) * chunk).min(m)))
            .collect()
    }

    /// A batch, list by list: each list is read once for all the queries of
    /// the batch that probe it (up to [`QUERY_TILE`] at a time through the
    /// batched kernel), so at batch 256 and `nprobe` 64 of ~1,400 lists a row
    /// is loaded once for ~12 queries instead of once per query. The lists are
    /// cut into tasks of about equal work (rows × queries); each task keeps a
    /// heap per query it touches, merged per query at the end.
    fn scan_lists(
        &self,
        qb: &QueryBatch,
        probes: &[u32],
        np: usize,
        kc: usize,
        threads: usize,
    ) -> Vec<TopK> {
        let m = qb.len();
        let d = self.dim;
        let kernel = self.kernel;
        // Queries per list (CSR by list).
        let mut start = vec![0usize; self.nlist + 1];
        for &p in probes {
            start[p as usize + 1] += 1;
        }
        for i in 0..self.nlist {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut who = vec![0usize; probes.len()];
        for (i, &p) in probes.iter().enumerate() {
            who[fill[p as usize]] = i / np;
            fill[p as usize] += 1;
        }
        let work_of = |p: usize| self.pages[p].rows() * (start[p + 1] - start[p]) * d;
        let total: usize = (0..self.nlist).map(work_of).sum();
        let tasks = (total / BATCH_TASK_WORK).clamp(1, threads * 4);
        // Contiguous runs of lists of about total / tasks work each.
        let mut cuts = vec![0usize];
        let mut acc = 0usize;
        for p in 0..self.nlist {
            acc += work_of(p);
            if acc * tasks >= total * cuts.len() && cuts.len() < tasks {
                cuts.push(p + 1);
            }
        }
        cuts.push(self.nlist);
        cuts.dedup();
        let run = |l0: usize, l1: usize| -> Vec<TopK> {
            let mut heaps = vec![TopK::new(kc); m];
            let (mut qbuf, mut dbuf, mut one) = (Vec::new(), Vec::new(), Vec::new());
            for p in l0..l1 {
                let qidx = &who[start[p]..start[p + 1]];
                if qidx.is_empty() {
                    continue;
                }
                if let Some(n) = (p + 1..l1).find(|&n| start[n + 1] > start[n]) {
                    prefetch_store(&self.pages[n], PREFETCH_BATCH);
                }
                let page = &self.pages[p];
                let key = (p as u64) << 32;
                match qidx {
                    [] => {}
                    [qi] => scan_one(page, kernel, qb.one(*qi), key, &mut heaps[*qi], &mut one),
                    _ => scan_gathered(
                        page, kernel, qb, qidx, 0, key, &mut heaps, &mut qbuf, &mut dbuf,
                    ),
                }
            }
            heaps
        };
        if cuts.len() <= 2 {
            return run(0, self.nlist);
        }
        let parts: Vec<Vec<TopK>> = cuts.par_windows(2).map(|w| run(w[0], w[1])).collect();
        (0..m)
            .into_par_iter()
            .map(|qi| {
                let mut h = TopK::new(kc);
                for part in &parts {
                    h.merge_ref(&part[qi]);
                }
                h
            })
            .collect()
    }

    /// Rebuilds from loaded parts (see [`persist`](super::persist)): the
    /// centroids as FP32 (files of version 2) or as the coarse index itself.
    pub(crate) fn from_parts(
        mut index: ClusteredIndex,
        centroids: Option<Centroids>,
        pages: Vec<RowStore>,
        next_id: u64,
    ) -> Result<ClusteredIndex> {
        match centroids {
            Some(Centroids::Fp32(c)) => index.set_centroids(c)?,
            Some(Centroids::Coarse(mut c)) => {
                if c.len() != index.nlist
                    || c.dim() != index.dim
                    || c.metric() != coarse_metric(index.metric)
                {
                    return Err(Error::corrupt(
                        "vector index file has centroids that do not fit the index",
                    ));
                }
                c.set_kernel(index.kernel);
                index.coarse = Some(c);
            }
            None => {}
        }
        let loc = Locator::for_pages(&pages, index.nlist)?;
        let asym = pages.iter().any(|p| p.is_asymmetric());
        let any_rows = pages.iter().any(|p| p.rows() > 0);
        index.pages = pages;
        index.codes = match (any_rows, asym) {
            (_, true) => CodeKind::Asymmetric,
            (false, false) => CodeKind::Auto,
            (true, false) => CodeKind::Symmetric,
        };
        index.loc = loc;
        index.next_id = next_id;
        Ok(index)
    }
}

/// Centroids as a file holds them.
pub(crate) enum Centroids {
    /// `nlist × dim` FP32 values (version 2 files): quantized on load.
    Fp32(Vec<f32>),
    /// The coarse INT8 index as saved (version 3).
    Coarse(FlatIndex),
}

/// A small deterministic generator for sampling (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Lloyd's k-means; returns `nlist × dim` centroids.
fn kmeans(
    sample: &[f32],
    dim: usize,
    nlist: usize,
    metric: Metric,
    kernel: Kernel,
) -> Result<Vec<f32>> {
    let n = sample.len() / dim;
    let spherical = metric != Metric::L2;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Subsample.
    let cap = nlist.saturating_mul(POINTS_PER_CENTROID).max(nlist);
    let mut points: Vec<f32>;
    if n > cap {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..cap {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(cap);
        idx.sort_unstable();
        points = Vec::with_capacity(cap * dim);
        for i in idx {
            points.extend_from_slice(&sample[i * dim..(i + 1) * dim]);
        }
    } else {
        points = sample.to_vec();
    }
    let np = points.len() / dim;
    if spherical {
        points.par_chunks_exact_mut(dim).for_each(normalize);
    }
    // Init: nlist distinct random points.
    let mut idx: Vec<usize> = (0..np).collect();
    for i in 0..nlist {
        let j = i + rng.below(np - i);
        idx.swap(i, j);
    }
    let mut centroids: Vec<f32> = Vec::with_capacity(nlist * dim);
    for &i in &idx[..nlist] {
        centroids.extend_from_slice(&points[i * dim..(i + 1) * dim]);
    }
    let cm = coarse_metric(metric);
    for _ in 0..KMEANS_ROUNDS {
        let mut coarse = FlatIndex::with_kernel(dim, cm, kernel)?;
        coarse.forbid_zero_floor();
        coarse.add(&centroids, None)?;
        let (_, assign) = coarse.search_batch(&points, 1)?;
        let mut sums = vec![0f64; nlist * dim];
        let mut counts = vec![0usize; nlist];
        for (i, &c) in assign.iter().enumerate() {
            let c = c.max(0) as usize;
            counts[c] += 1;
            for (s, &x) in sums[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&points[i * dim..(i + 1) * dim])
            {
                *s += x as f64;
            }
        }
        for c in 0..nlist {
            let dst = &mut centroids[c * dim..(c + 1) * dim];
            if counts[c] == 0 {
                // Re-seed an empty cluster with a random point.
                let i = rng.below(np);
                dst.copy_from_slice(&points[i * dim..(i + 1) * dim]);
                continue;
            }
            let inv = 1.0 / counts[c] as f64;
            for (o, &s) in dst.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                *o = (s * inv) as f32;
            }
            if spherical {
                normalize(dst);
            }
        }
    }
    Ok(centroids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Non-negative rows (asymmetric, zero floor) under dense ids, then far
    /// ids (the id column widens, the locator becomes a table): every id is
    /// found, reconstructed and removed where it is, before and after a save.
    #[test]
    fn storage_survives_widening_ids_the_table_switch_and_reload() {
        let (d, n) = (8, 600);
        let mut x = 1u64;
        // SIFT-like: non-negative, each row's minimum 0 (component 0).
        let data: Vec<f32> = (0..n * d)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % d == 0 {
                    0.0
                } else {
                    (x % 1000) as f32 / 100.0
                }
            })
            .collect();
        let mut ix = ClusteredIndex::new(d, Metric::L2, 8, 8).unwrap();
        ix.add(&data[..400 * d], None).unwrap();
        assert!(ix.loc.is_dense() && !ix.pages.iter().any(|p| p.has_offset_column()));
        assert_eq!(ix.bytes().store.ids, 3 * 400);
        let far: Vec<u64> = (0..200).map(|i| (1u64 << 40) + 7 * i).collect();
        ix.add(&data[400 * d..], Some(&far)).unwrap();
        assert!(!ix.loc.is_dense());
        let check = |ix: &ClusteredIndex| {
            for (i, id) in (0..400u64).chain(far.iter().copied()).enumerate() {
                if id % 5 == 0 {
                    assert!(!ix.contains(id));
                    continue;
                }
                let v = ix.reconstruct(id).unwrap();
                for (a, b) in v.iter().zip(&data[i * d..(i + 1) * d]) {
                    assert!((a - b).abs() <= 10.0 / 255.0, "{id}: {a} vs {b}");
                }
            }
        };
        let gone: Vec<u64> = (0..400u64)
            .chain(far.iter().copied())
            .filter(|id| id % 5 == 0)
            .collect();
        assert_eq!(ix.remove(&gone).unwrap(), gone.len());
        check(&ix);
        let path = std::env::temp_dir().join(format!("slabcache-clu-{}", std::process::id()));
        crate::vector::AnyIndex::Clustered(ix.clone())
            .save(&path)
            .unwrap();
        let back = match crate::vector::load_index(&path).unwrap() {
            crate::vector::AnyIndex::Clustered(c) => c,
            _ => unreachable!(),
        };
        std::fs::remove_file(&path).unwrap();
        check(&back);
        assert_eq!(
            back.search_batch(&data[..20 * d], 5).unwrap(),
            ix.search_batch(&data[..20 * d], 5).unwrap()
        );
    }
}
