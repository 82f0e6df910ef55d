//! Contiguous rows of INT8 codes with their per-row factors and tombstones.
//!
//! The storage under both index types: row `r`'s codes are
//! `codes[r*dim .. (r+1)*dim]`, next to its id, scale, exact norm and the
//! metric's precomputed `(a_x, b_x)` (see [`metric`](super::metric)). A
//! removed row stays in place as a tombstone (skipped by scans) until
//! [`RowStore::compact`] squeezes it out, keeping the live rows' order.

use crate::error::{Error, Result};
use crate::vector::metric::Metric;
use crate::vector::quantize::{code_sumsq, quantize_into, VectorStats};

/// Rows of codes plus what scanning needs per row.
#[derive(Debug, Clone)]
pub struct RowStore {
    dim: usize,
    metric: Metric,
    pub(crate) codes: Vec<i8>,
    pub(crate) ids: Vec<u64>,
    pub(crate) scales: Vec<f32>,
    pub(crate) norms: Vec<f32>,
    pub(crate) row_mul: Vec<f32>,
    pub(crate) row_add: Vec<f32>,
    pub(crate) live: Vec<bool>,
    dead: usize,
}

/// Rows quantized in parallel above this many values.
const PARALLEL_QUANTIZE: usize = 1 << 16;

impl RowStore {
    /// An empty store of `dim`-wide rows.
    pub fn new(dim: usize, metric: Metric) -> RowStore {
        RowStore {
            dim,
            metric,
            codes: Vec::new(),
            ids: Vec::new(),
            scales: Vec::new(),
            norms: Vec::new(),
            row_mul: Vec::new(),
            row_add: Vec::new(),
            live: Vec::new(),
            dead: 0,
        }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows held, tombstones included.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Live rows.
    pub fn live_rows(&self) -> usize {
        self.ids.len() - self.dead
    }

    /// Tombstoned rows.
    pub fn dead_rows(&self) -> usize {
        self.dead
    }

    /// Bytes held by the rows and their per-row data.
    pub fn memory_bytes(&self) -> usize {
        self.codes.capacity()
            + self.ids.capacity() * 8
            + self.scales.capacity() * 4
            + self.norms.capacity() * 4
            + self.row_mul.capacity() * 4
            + self.row_add.capacity() * 4
            + self.live.capacity()
    }

    /// Makes room for `extra` more rows, or `OutOfMemory`, changing nothing else.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let oom = |_| Error::out_of_memory(format!("cannot reserve {extra} more vectors"));
        let values = extra
            .checked_mul(self.dim)
            .ok_or_else(|| Error::out_of_memory("vector count overflows"))?;
        self.codes.try_reserve(values).map_err(oom)?;
        self.ids.try_reserve(extra).map_err(oom)?;
        self.scales.try_reserve(extra).map_err(oom)?;
        self.norms.try_reserve(extra).map_err(oom)?;
        self.row_mul.try_reserve(extra).map_err(oom)?;
        self.row_add.try_reserve(extra).map_err(oom)?;
        self.live.try_reserve(extra).map_err(oom)?;
        Ok(())
    }

    /// Quantizes and appends rows (validated by the caller: finite values,
    /// `vectors.len() == ids.len() * dim`). Call [`reserve`](Self::reserve)
    /// first so that this cannot fail halfway.
    pub fn append(&mut self, vectors: &[f32], ids: &[u64]) {
        let d = self.dim;
        let n = ids.len();
        debug_assert_eq!(vectors.len(), n * d);
        let start = self.codes.len();
        self.codes.resize(start + n * d, 0);
        let mut stats = vec![
            (
                VectorStats {
                    scale: 0.0,
                    norm: 0.0
                },
                0i64
            );
            n
        ];
        let out = &mut self.codes[start..];
        #[allow(clippy::type_complexity)]
        let work = |(x, (q, st)): (&[f32], (&mut [i8], &mut (VectorStats, i64)))| {
            let s = quantize_into(x, q);
            *st = (s, code_sumsq(q));
        };
        if vectors.len() >= PARALLEL_QUANTIZE {
            use rayon::prelude::*;
            vectors
                .par_chunks_exact(d)
                .zip(out.par_chunks_exact_mut(d).zip(stats.par_iter_mut()))
                .for_each(work);
        } else {
            vectors
                .chunks_exact(d)
                .zip(out.chunks_exact_mut(d).zip(stats.iter_mut()))
                .for_each(work);
        }
        for (&(st, sumsq), &id) in stats.iter().zip(ids) {
            self.push_row_meta(id, st, sumsq);
        }
    }

    fn push_row_meta(&mut self, id: u64, st: VectorStats, sumsq: i64) {
        let (m, a) = self.metric.row_factors(st, sumsq);
        self.ids.push(id);
        self.scales.push(st.scale);
        self.norms.push(st.norm);
        self.row_mul.push(m);
        self.row_add.push(a);
        self.live.push(true);
    }

    /// Appends already-quantized rows (used by load and by compaction into
    /// another store); recomputes the metric's factors from the codes.
    pub fn append_quantized(&mut self, codes: &[i8], ids: &[u64], scales: &[f32], norms: &[f32]) {
        let d = self.dim;
        self.codes.extend_from_slice(codes);
        for (r, &id) in ids.iter().enumerate() {
            let st = VectorStats {
                scale: scales[r],
                norm: norms[r],
            };
            self.push_row_meta(id, st, code_sumsq(&codes[r * d..(r + 1) * d]));
        }
    }

    /// Marks `row` removed; returns whether it was live.
    pub fn tombstone(&mut self, row: usize) -> bool {
        if self.live[row] {
            self.live[row] = false;
            self.dead += 1;
            true
        } else {
            false
        }
    }

    /// Whether tombstones make up a quarter or more of the rows.
    pub fn wants_compaction(&self) -> bool {
        self.dead > 0 && self.dead * 4 >= self.rows()
    }

    /// Drops tombstones, keeping live rows in order; calls `moved(id, new_row)`
    /// for every live row.
    pub fn compact(&mut self, mut moved: impl FnMut(u64, usize)) {
        if self.dead == 0 {
            return;
        }
        let d = self.dim;
        let mut w = 0;
        for r in 0..self.rows() {
            if !self.live[r] {
                continue;
            }
            if w != r {
                self.codes.copy_within(r * d..(r + 1) * d, w * d);
                self.ids[w] = self.ids[r];
                self.scales[w] = self.scales[r];
                self.norms[w] = self.norms[r];
                self.row_mul[w] = self.row_mul[r];
                self.row_add[w] = self.row_add[r];
                self.live[w] = true;
            }
            moved(self.ids[w], w);
            w += 1;
        }
        self.codes.truncate(w * d);
        self.ids.truncate(w);
        self.scales.truncate(w);
        self.norms.truncate(w);
        self.row_mul.truncate(w);
        self.row_add.truncate(w);
        self.live.truncate(w);
        self.dead = 0;
    }

    /// Gives back capacity beyond what the rows use (after a compaction, so
    /// that a shrinking index returns memory to the allocator).
    pub fn shrink_to_fit(&mut self) {
        self.codes.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.scales.shrink_to_fit();
        self.norms.shrink_to_fit();
        self.row_mul.shrink_to_fit();
        self.row_add.shrink_to_fit();
        self.live.shrink_to_fit();
    }

    /// Row `r`'s codes.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.codes[r * self.dim..(r + 1) * self.dim]
    }

    /// Row `r`'s reconstruction `s · q`.
    pub fn reconstruct(&self, r: usize) -> Vec<f32> {
        crate::vector::quantize::dequantize(self.row(r), self.scales[r])
    }
}
