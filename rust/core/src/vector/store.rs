//! Contiguous rows of INT8 codes with their per-row factors and tombstones.
//!
//! The storage under both index types: row `r`'s codes are
//! `codes[r*dim .. (r+1)*dim]`, next to its id and the metric's factors
//! (see [`metric`](super::metric)):
//!
//! | per row | bytes | holds |
//! |---|---:|---|
//! | `codes` | `dim` | the INT8 codes |
//! | `ids` | 4 (8 once an id exceeds `u32`) | the caller's id ([`IdColumn`]) |
//! | `mul` | 4 | `a_x`: the scale `s` (`ip`, `l2`) or `1/‖q_x‖` (`cosine`); **NaN marks a tombstone** |
//! | `off` | 0, or 4 for asymmetric codes once a row's floor is not 0 | `o_x`: the row's offset (`x̂ = a_x·q + o_x`); `128·a_x` (not stored) while every row has a zero floor |
//! | `add` | 4, `l2` only | `b_x = -‖x̂‖²` |
//! | `exact` | `4·dim`, optional | the FP32 vector, for exact re-ranking |
//!
//! So a row costs `dim + 12` bytes (`ip`, `cosine`) or `dim + 16` (`l2`)
//! here with symmetric codes, 4 more with asymmetric ones; the flat index adds an id table only when ids stop arriving in
//! increasing order (see [`flat`](super::flat)). The exact FP32 norm and a
//! separate scale are not kept: `x̂ = mul · q` is the dequantized row for
//! `ip`/`l2`, and its unit direction for `cosine` (which ignores length).
//!
//! A removed row stays in place as a tombstone (skipped by scans) until
//! [`RowStore::compact`] squeezes it out, keeping the live rows' order.

use crate::error::{Error, Result};
use crate::vector::metric::Metric;
use crate::vector::quantize::{
    code_sum, code_sumsq, min_max, quantize_asym_auto_into, quantize_asym_into, quantize_into,
    wants_zero_floor,
};

/// Read access to a column of ids (a [`RowStore`]'s [`IdColumn`], or a plain
/// `u64` slice), so that the id tables work over either.
pub trait IdSource {
    /// The id at row `r`.
    fn id(&self, r: usize) -> u64;
    /// Rows.
    fn count(&self) -> usize;

    /// Whether ids from row `from` on (and the one before it) strictly increase.
    fn increasing_from(&self, from: usize) -> bool {
        (from.max(1)..self.count()).all(|r| self.id(r - 1) < self.id(r))
    }

    /// The row of `id` in a strictly increasing column.
    fn search_sorted(&self, id: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.id(mid).cmp(&id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
}

impl IdSource for [u64] {
    #[inline]
    fn id(&self, r: usize) -> u64 {
        self[r]
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl IdSource for Vec<u64> {
    #[inline]
    fn id(&self, r: usize) -> u64 {
        self[r]
    }
    fn count(&self) -> usize {
        self.len()
    }
}

/// Largest id the 3-byte column holds.
const TRI_MAX: u64 = (1 << 24) - 1;

/// A store's ids: 3 bytes a row while every id is below 2^24, 4 while
/// every id fits `u32`, widened to `u64` (for good) when a larger one
/// arrives, so ids up to [`MAX_ID`](super::flat::MAX_ID) keep working and
/// small ids cost less.
///
/// ```
/// use slabcache_core::vector::store::{IdColumn, IdSource};
/// let mut ids = IdColumn::default();
/// ids.reserve(2, 7).unwrap();
/// ids.push(7);
/// assert_eq!(ids.bytes_per_id(), 3);
/// ids.reserve(1, 1 << 30).unwrap(); // widens to 4 bytes
/// ids.push(1 << 30);
/// ids.reserve(1, 1 << 40).unwrap(); // and to 8
/// ids.push(1 << 40);
/// assert_eq!((ids.bytes_per_id(), ids.id(0), ids.id(1), ids.id(2)), (8, 7, 1 << 30, 1 << 40));
/// ```
#[derive(Debug, Clone)]
pub enum IdColumn {
    /// Every id `< 2^24`, little-endian, 3 bytes each.
    Tri(Vec<u8>),
    /// Every id `<= u32::MAX`.
    Narrow(Vec<u32>),
    /// Some id was larger.
    Wide(Vec<u64>),
}

impl Default for IdColumn {
    fn default() -> IdColumn {
        IdColumn::Tri(Vec::new())
    }
}

#[inline]
fn tri_at(v: &[u8], r: usize) -> u64 {
    let b = &v[3 * r..3 * r + 3];
    u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
}

impl IdSource for IdColumn {
    #[inline]
    fn id(&self, r: usize) -> u64 {
        match self {
            IdColumn::Tri(v) => tri_at(v, r),
            IdColumn::Narrow(v) => v[r] as u64,
            IdColumn::Wide(v) => v[r],
        }
    }
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
}

impl IdColumn {
    /// Rows.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            IdColumn::Tri(v) => v.len() / 3,
            IdColumn::Narrow(v) => v.len(),
            IdColumn::Wide(v) => v.len(),
        }
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// 3, 4 or 8.
    pub fn bytes_per_id(&self) -> usize {
        match self {
            IdColumn::Tri(_) => 3,
            IdColumn::Narrow(_) => 4,
            IdColumn::Wide(_) => 8,
        }
    }

    /// Bytes held (capacity).
    pub fn capacity_bytes(&self) -> usize {
        match self {
            IdColumn::Tri(v) => v.capacity(),
            IdColumn::Narrow(v) => v.capacity() * 4,
            IdColumn::Wide(v) => v.capacity() * 8,
        }
    }

    /// Room for `extra` more ids, the largest of them `max_id` (widening
    /// first if it does not fit the column); nothing changes on `OutOfMemory`.
    pub fn reserve(&mut self, extra: usize, max_id: u64) -> Result<()> {
        let oom = |_| Error::out_of_memory(format!("cannot reserve {extra} more ids"));
        let need = self
            .len()
            .checked_add(extra)
            .ok_or_else(|| Error::out_of_memory("id count overflows"))?;
        let wide = max_id > u32::MAX as u64;
        match self {
            IdColumn::Tri(v) if max_id > TRI_MAX => {
                let n = v.len() / 3;
                let old = |r| tri_at(v, r);
                *self = if wide {
                    let mut w: Vec<u64> = Vec::new();
                    w.try_reserve_exact(need).map_err(oom)?;
                    w.extend((0..n).map(old));
                    IdColumn::Wide(w)
                } else {
                    let mut w: Vec<u32> = Vec::new();
                    w.try_reserve_exact(need).map_err(oom)?;
                    w.extend((0..n).map(|r| old(r) as u32));
                    IdColumn::Narrow(w)
                };
                Ok(())
            }
            IdColumn::Narrow(v) if wide => {
                let mut w: Vec<u64> = Vec::new();
                w.try_reserve_exact(need).map_err(oom)?;
                w.extend(v.iter().map(|&i| i as u64));
                *self = IdColumn::Wide(w);
                Ok(())
            }
            IdColumn::Tri(v) => v
                .try_reserve(
                    extra
                        .checked_mul(3)
                        .ok_or_else(|| Error::out_of_memory("id count overflows"))?,
                )
                .map_err(oom),
            IdColumn::Narrow(v) => v.try_reserve(extra).map_err(oom),
            IdColumn::Wide(v) => v.try_reserve(extra).map_err(oom),
        }
    }

    /// Appends `id` (call [`reserve`](Self::reserve) with it first).
    #[inline]
    pub fn push(&mut self, id: u64) {
        match self {
            IdColumn::Tri(v) => {
                assert!(id <= TRI_MAX, "IdColumn: reserve for {id} first");
                v.extend_from_slice(&(id as u32).to_le_bytes()[..3])
            }
            IdColumn::Narrow(v) => {
                assert!(id <= u32::MAX as u64, "IdColumn: reserve for {id} first");
                v.push(id as u32)
            }
            IdColumn::Wide(v) => v.push(id),
        }
    }

    /// Moves row `from`'s id to row `to` (compaction).
    #[inline]
    pub fn copy_row(&mut self, from: usize, to: usize) {
        match self {
            IdColumn::Tri(v) => v.copy_within(3 * from..3 * from + 3, 3 * to),
            IdColumn::Narrow(v) => v[to] = v[from],
            IdColumn::Wide(v) => v[to] = v[from],
        }
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        match self {
            IdColumn::Tri(v) => v.truncate(3 * n),
            IdColumn::Narrow(v) => v.truncate(n),
            IdColumn::Wide(v) => v.truncate(n),
        }
    }

    /// Gives back unused capacity.
    pub fn shrink_to_fit(&mut self) {
        match self {
            IdColumn::Tri(v) => v.shrink_to_fit(),
            IdColumn::Narrow(v) => v.shrink_to_fit(),
            IdColumn::Wide(v) => v.shrink_to_fit(),
        }
    }

    /// The first row holding `id` for which `live(row)`, by a linear scan.
    pub fn position(&self, id: u64, live: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            IdColumn::Tri(v) => {
                if id > TRI_MAX {
                    return None;
                }
                let want = &(id as u32).to_le_bytes()[..3];
                v.chunks_exact(3)
                    .enumerate()
                    .filter(|&(_, x)| x == want)
                    .map(|(r, _)| r)
                    .find(|&r| live(r))
            }
            IdColumn::Narrow(v) => {
                let id = u32::try_from(id).ok()?;
                v.iter()
                    .enumerate()
                    .filter(|&(_, &x)| x == id)
                    .map(|(r, _)| r)
                    .find(|&r| live(r))
            }
            IdColumn::Wide(v) => v
                .iter()
                .enumerate()
                .filter(|&(_, &x)| x == id)
                .map(|(r, _)| r)
                .find(|&r| live(r)),
        }
    }

    /// Every id, in row order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(|r| self.id(r))
    }
}

/// Rows of codes plus what scanning needs per row.
#[derive(Debug, Clone)]
pub struct RowStore {
    /// Row width (`u32`: checked ≤ `MAX_DIM`; the header is per list).
    dim: u32,
    /// Tombstoned rows.
    dead: usize,
    metric: Metric,
    pub(crate) codes: Vec<i8>,
    pub(crate) ids: IdColumn,
    /// `a_x` per row; NaN for a tombstone.
    pub(crate) mul: Vec<f32>,
    /// `o_x` per row: empty for symmetric codes, and for asymmetric ones
    /// while every row has `o_x = 128·a_x` (a zero-floor code, see
    /// [`quantize_asym_auto_into`]); filled for every row (with `128·a_x`
    /// for those) from the first row that needs an offset of its own. Read
    /// it through [`off_at`](Self::off_at).
    pub(crate) off: Vec<f32>,
    /// `b_x` per row (`l2` only; empty otherwise).
    pub(crate) add: Vec<f32>,
    /// Whether rows use the asymmetric code (codes in `-128..=127`).
    asym: bool,
    /// Whether asymmetric rows may use the zero floor (off for the clustered
    /// index's centroids, which keep the exact min-floor code of earlier
    /// builds: a handful of rows, and the probe order stays as it was).
    zero_floor: bool,
    /// The FP32 rows (`rows × dim`) when the store keeps them for re-ranking
    /// (boxed: most stores keep none, and a clustered index has one store
    /// per list, so the header stays small).
    #[allow(clippy::box_collection)] // 8 B in the header, not 24: worth the extra allocation
    pub(crate) exact: Option<Box<Vec<f32>>>,
}

/// Rows quantized in parallel above this many values.
const PARALLEL_QUANTIZE: usize = 1 << 16;

/// Where a store's bytes go (capacities, so what the allocator holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreBytes {
    /// INT8 codes.
    pub codes: usize,
    /// Ids (8 B per row).
    pub ids: usize,
    /// Per-row factors (`mul`, and `add` for `l2`); tombstones live in `mul`.
    pub factors: usize,
    /// FP32 re-rank rows (0 when not kept).
    pub exact: usize,
}

impl StoreBytes {
    /// The sum.
    pub fn total(&self) -> usize {
        self.codes + self.ids + self.factors + self.exact
    }

    /// Adds another store's bytes.
    pub fn merge(&mut self, o: StoreBytes) {
        self.codes += o.codes;
        self.ids += o.ids;
        self.factors += o.factors;
        self.exact += o.exact;
    }
}

impl RowStore {
    /// An empty store of `dim`-wide rows, keeping the FP32 rows if `keep_exact`.
    pub fn new(dim: usize, metric: Metric, keep_exact: bool) -> RowStore {
        assert!(u32::try_from(dim).is_ok(), "RowStore: dim {dim} too large");
        RowStore {
            dim: dim as u32,
            dead: 0,
            metric,
            codes: Vec::new(),
            ids: IdColumn::default(),
            mul: Vec::new(),
            off: Vec::new(),
            add: Vec::new(),
            asym: false,
            zero_floor: true,
            exact: keep_exact.then(|| Box::new(Vec::new())),
        }
    }

    /// Row width.
    #[inline]
    pub fn dim(&self) -> usize {
        self.dim as usize
    }

    /// Whether rows use the asymmetric (offset + scale) code.
    pub fn is_asymmetric(&self) -> bool {
        self.asym
    }

    /// Chooses the code; only while the store has never held a row.
    pub fn set_asymmetric(&mut self, asym: bool) {
        assert!(self.ids.is_empty(), "the code is fixed once rows exist");
        self.asym = asym;
    }

    /// Forbids the zero-floor code (asymmetric rows then always use their
    /// minimum as the floor); only while the store has never held a row.
    pub fn forbid_zero_floor(&mut self) {
        assert!(self.ids.is_empty(), "the code is fixed once rows exist");
        self.zero_floor = false;
    }

    /// `o_x` of row `r` (0 for symmetric codes).
    #[inline]
    pub fn off_of(&self, r: usize) -> f32 {
        if self.asym {
            self.off_at(r)
        } else {
            0.0
        }
    }

    /// `o_x` of row `r` of an asymmetric store: the offset column, or
    /// `128·a_x` while there is none (NaN for a tombstone).
    #[inline]
    pub fn off_at(&self, r: usize) -> f32 {
        match self.off.get(r) {
            Some(&o) => o,
            None => 128.0 * self.mul[r],
        }
    }

    /// Whether the asymmetric rows keep an offset column (some row's
    /// floor is not 0).
    pub fn has_offset_column(&self) -> bool {
        !self.off.is_empty()
    }

    /// Whether any of `vectors` would need an offset column in this
    /// (asymmetric) store: a vector with a negative value or a minimum
    /// above [`ZERO_FLOOR_MAX`](crate::vector::quantize::ZERO_FLOOR_MAX) of
    /// its range.
    pub fn wants_offsets(&self, vectors: &[f32]) -> bool {
        self.asym
            && (!self.zero_floor
                || vectors.chunks_exact(self.dim()).any(|x| {
                    let (lo, hi) = min_max(x);
                    !wants_zero_floor(lo, hi)
                }))
    }

    /// [`reserve`](Self::reserve) for `vectors` with `ids`, the offset column
    /// included if they need one.
    pub fn reserve_for(&mut self, vectors: &[f32], ids: &[u64]) -> Result<()> {
        self.reserve(ids.len(), ids.iter().copied().max().unwrap_or(0))?;
        self.reserve_offsets(ids.len(), self.wants_offsets(vectors))
    }

    /// Makes room in the offset column for every row plus `extra` when
    /// `needed` (or the column exists already), so that filling it cannot fail.
    pub fn reserve_offsets(&mut self, extra: usize, needed: bool) -> Result<()> {
        if self.asym && (needed || !self.off.is_empty()) {
            let want = self.rows() + extra - self.off.len();
            self.off
                .try_reserve(want)
                .map_err(|_| Error::out_of_memory("cannot reserve the offset column"))?;
        }
        Ok(())
    }

    /// Appends row offset `o` (the row's `a_x` = `m`, already pushed): no
    /// column while `o = 128·m`; the first other offset fills the column.
    fn push_off(&mut self, m: f32, o: f32) {
        if self.off.is_empty() {
            if o == 128.0 * m {
                return;
            }
            let before = self.mul.len() - 1;
            let (mul, off) = (&self.mul, &mut self.off);
            off.extend(mul[..before].iter().map(|&a| 128.0 * a));
        }
        self.off.push(o);
    }

    /// Whether the FP32 rows are kept.
    pub fn keeps_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// Rows held, tombstones included.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The id of row `r`.
    #[inline]
    pub fn id(&self, r: usize) -> u64 {
        self.ids.id(r)
    }

    /// Live rows.
    pub fn live_rows(&self) -> usize {
        self.ids.len() - self.dead
    }

    /// Tombstoned rows.
    pub fn dead_rows(&self) -> usize {
        self.dead
    }

    /// Whether row `r` is live.
    #[inline]
    pub fn is_live(&self, r: usize) -> bool {
        !self.mul[r].is_nan()
    }

    /// `b_x` of row `r` (0 unless `l2`).
    #[inline]
    pub fn add_of(&self, r: usize) -> f32 {
        if self.add.is_empty() {
            0.0
        } else {
            self.add[r]
        }
    }

    /// Bytes held, by kind.
    pub fn bytes(&self) -> StoreBytes {
        StoreBytes {
            codes: self.codes.capacity(),
            ids: self.ids.capacity_bytes(),
            factors: (self.mul.capacity() + self.off.capacity() + self.add.capacity()) * 4,
            // The boxed Vec's own 24 B count too.
            exact: self
                .exact
                .as_ref()
                .map_or(0, |e| e.capacity() * 4 + std::mem::size_of::<Vec<f32>>()),
        }
    }

    /// Bytes held by the rows and their per-row data.
    pub fn memory_bytes(&self) -> usize {
        self.bytes().total()
    }

    /// Makes room for `extra` more rows whose largest id is `max_id` (the id
    /// column widens to 4 bytes if it reaches 2^24, to 8 if it exceeds
    /// `u32`), or `OutOfMemory`,
    /// changing nothing else.
    pub fn reserve(&mut self, extra: usize, max_id: u64) -> Result<()> {
        let oom = |_| Error::out_of_memory(format!("cannot reserve {extra} more vectors"));
        let values = extra
            .checked_mul(self.dim())
            .ok_or_else(|| Error::out_of_memory("vector count overflows"))?;
        self.codes.try_reserve(values).map_err(oom)?;
        self.ids.reserve(extra, max_id)?;
        self.mul.try_reserve(extra).map_err(oom)?;
        if !self.off.is_empty() {
            self.off.try_reserve(extra).map_err(oom)?;
        }
        if self.metric == Metric::L2 {
            self.add.try_reserve(extra).map_err(oom)?;
        }
        if let Some(e) = self.exact.as_mut() {
            e.try_reserve(values).map_err(oom)?;
        }
        Ok(())
    }

    /// Quantizes and appends rows (validated by the caller: finite values,
    /// `vectors.len() == ids.len() * dim`). Call [`reserve_for`](Self::reserve_for)
    /// first so that this cannot fail halfway.
    pub fn append(&mut self, vectors: &[f32], ids: &[u64]) {
        let d = self.dim();
        let n = ids.len();
        debug_assert_eq!(vectors.len(), n * d);
        let start = self.codes.len();
        self.codes.resize(start + n * d, 0);
        // (scale, offset, Σq, Σq², zero floor) per row.
        let mut stats = vec![(0f32, 0f32, 0i64, 0i64, false); n];
        let out = &mut self.codes[start..];
        let asym = self.asym;
        let zero_floor = self.zero_floor;
        #[allow(clippy::type_complexity)]
        let work = |(x, (q, st)): (&[f32], (&mut [i8], &mut (f32, f32, i64, i64, bool)))| {
            let (s, o, z) = if asym && zero_floor {
                let c = quantize_asym_auto_into(x, q);
                (c.scale, c.offset, c.zero_floor)
            } else if asym {
                let (s, o) = quantize_asym_into(x, q);
                (s, o, false)
            } else {
                (quantize_into(x, q).scale, 0.0, false)
            };
            *st = (s, o, code_sum(q), code_sumsq(q), z);
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
        for (&(sc, o, sum, sumsq, zero), &id) in stats.iter().zip(ids) {
            self.push_row_meta(id, sc, o, sum, sumsq, zero);
        }
        if let Some(e) = self.exact.as_mut() {
            e.extend_from_slice(vectors);
        }
    }

    /// `zero_floor`: the row's offset is `128·scale` by construction, so its
    /// `o_x` is taken as `128·a_x` (what the factors give up to rounding).
    fn push_row_meta(
        &mut self,
        id: u64,
        scale: f32,
        offset: f32,
        sum: i64,
        sumsq: i64,
        zero_floor: bool,
    ) {
        let (m, o, a) = self
            .metric
            .row_factors(scale, offset, self.dim(), sum, sumsq);
        self.ids.push(id);
        self.mul.push(m);
        if self.asym {
            self.push_off(m, if zero_floor { 128.0 * m } else { o });
        }
        if self.metric == Metric::L2 {
            self.add.push(a);
        }
    }

    /// Appends already-quantized rows (used by load): `scales` (and
    /// `offsets` for asymmetric codes) as [`saved_scale`](Self::saved_scale)
    /// gives them; `exact` the FP32 rows when this store keeps them. Reserve
    /// first ([`reserve`](Self::reserve), and
    /// [`reserve_offsets`](Self::reserve_offsets) if some offset is not
    /// `128·scale`).
    pub fn append_quantized(
        &mut self,
        codes: &[i8],
        ids: &[u64],
        scales: &[f32],
        offsets: Option<&[f32]>,
        exact: Option<&[f32]>,
    ) {
        let d = self.dim();
        self.codes.extend_from_slice(codes);
        for (r, &id) in ids.iter().enumerate() {
            let c = &codes[r * d..(r + 1) * d];
            let o = offsets.map_or(0.0, |o| o[r]);
            if self.metric == Metric::Cosine && scales[r] != 0.0 && offsets.is_some() {
                // Saved asymmetric cosine factors already describe the unit direction:
                // take them as they are, so a reload scores bit for bit the same.
                self.ids.push(id);
                self.mul.push(scales[r]);
                self.push_off(scales[r], o);
                continue;
            }
            self.push_row_meta(id, scales[r], o, code_sum(c), code_sumsq(c), false);
        }
        if let (Some(e), Some(x)) = (self.exact.as_mut(), exact) {
            e.extend_from_slice(x);
        }
    }

    /// The scale of row `r` as saved: the quantization scale (`ip`, `l2`);
    /// `cosine` saves its factor, i.e. the scale of the row's unit direction,
    /// which loads back to the same factors.
    pub fn saved_scale(&self, r: usize) -> f32 {
        self.mul[r]
    }

    /// The offset of row `r` as saved (see [`saved_scale`](Self::saved_scale)).
    pub fn saved_offset(&self, r: usize) -> f32 {
        self.off_of(r)
    }

    /// Marks `row` removed; returns whether it was live.
    pub fn tombstone(&mut self, row: usize) -> bool {
        if self.is_live(row) {
            self.mul[row] = f32::NAN;
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
        let d = self.dim();
        let l2 = !self.add.is_empty();
        let mut w = 0;
        for r in 0..self.rows() {
            if !self.is_live(r) {
                continue;
            }
            if w != r {
                self.codes.copy_within(r * d..(r + 1) * d, w * d);
                if let Some(e) = self.exact.as_mut() {
                    e.copy_within(r * d..(r + 1) * d, w * d);
                }
                self.ids.copy_row(r, w);
                self.mul[w] = self.mul[r];
                if !self.off.is_empty() {
                    self.off[w] = self.off[r];
                }
                if l2 {
                    self.add[w] = self.add[r];
                }
            }
            moved(self.ids.id(w), w);
            w += 1;
        }
        self.codes.truncate(w * d);
        if let Some(e) = self.exact.as_mut() {
            e.truncate(w * d);
        }
        self.ids.truncate(w);
        self.mul.truncate(w);
        self.off.truncate(w);
        if l2 {
            self.add.truncate(w);
        }
        self.dead = 0;
    }

    /// Gives back capacity beyond what the rows use (after a compaction, so
    /// that a shrinking index returns memory to the allocator).
    pub fn shrink_to_fit(&mut self) {
        self.codes.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.mul.shrink_to_fit();
        self.off.shrink_to_fit();
        self.add.shrink_to_fit();
        if let Some(e) = self.exact.as_mut() {
            e.shrink_to_fit();
        }
    }

    /// Row `r`'s codes.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.codes[r * self.dim()..(r + 1) * self.dim()]
    }

    /// Row `r`'s FP32 vector, if kept.
    pub fn exact_row(&self, r: usize) -> Option<&[f32]> {
        self.exact
            .as_ref()
            .map(|e| &e[r * self.dim()..(r + 1) * self.dim()])
    }

    /// Row `r`'s vector: the FP32 original if kept, else the dequantized
    /// codes `a_x · q + o_x` (for `cosine`, the unit direction).
    pub fn reconstruct(&self, r: usize) -> Vec<f32> {
        match self.exact_row(r) {
            Some(x) => x.to_vec(),
            None => {
                let (m, o) = (self.mul[r], self.off_of(r));
                self.row(r).iter().map(|&c| m * c as f32 + o).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_column_widens_once_and_keeps_every_id() {
        let mut s = RowStore::new(2, Metric::L2, false);
        s.reserve_for(&[1.0, 2.0, 3.0, 4.0], &[5, 9]).unwrap();
        s.append(&[1.0, 2.0, 3.0, 4.0], &[5, 9]);
        assert_eq!(s.ids.bytes_per_id(), 3);
        assert_eq!(s.ids.position(9, |_| true), Some(1));
        assert_eq!(s.ids.position(1 << 24 | 9, |_| true), None);
        let mid = (1u64 << 24) + 0x0102; // low 3 bytes collide with nothing kept
        s.reserve_for(&[0.5, 1.0], &[mid]).unwrap();
        s.append(&[0.5, 1.0], &[mid]);
        assert_eq!(s.ids.bytes_per_id(), 4);
        let big = crate::vector::MAX_ID;
        s.reserve_for(&[0.0, 1.0], &[big]).unwrap();
        s.append(&[0.0, 1.0], &[big]);
        assert_eq!(s.ids.bytes_per_id(), 8);
        assert_eq!(s.ids.iter().collect::<Vec<_>>(), vec![5, 9, mid, big]);
        s.tombstone(1);
        assert_eq!(s.ids.position(9, |r| s.is_live(r)), None);
        s.compact(|_, _| {});
        assert_eq!((s.id(0), s.id(1), s.id(2), s.rows()), (5, mid, big, 3));
        assert_eq!(s.ids.position(big, |_| true), Some(2));
        assert!(s.ids.search_sorted(big) == Some(2) && s.ids.search_sorted(6).is_none());
        // A 3-byte column compacts in place and keeps every id.
        let mut t = IdColumn::default();
        t.reserve(4, (1 << 24) - 1).unwrap();
        for id in [3, (1 << 24) - 1, 0x00ab_cdef, 0] {
            t.push(id);
        }
        t.copy_row(2, 1);
        t.truncate(3);
        assert_eq!(
            t.iter().collect::<Vec<_>>(),
            vec![3, 0x00ab_cdef, 0x00ab_cdef]
        );
        assert_eq!(
            (t.bytes_per_id(), t.position(0x00ab_cdef, |r| r > 1)),
            (3, Some(2))
        );
    }

    #[test]
    fn zero_floor_rows_keep_no_offset_column_until_a_row_needs_one() {
        let mut s = RowStore::new(3, Metric::L2, false);
        s.set_asymmetric(true);
        let rows = [0.0f32, 1.0, 2.0, 0.5, 0.0, 4.0]; // minimum 0
        s.reserve_for(&rows, &[1, 2]).unwrap();
        s.append(&rows, &[1, 2]);
        assert!(!s.has_offset_column());
        assert_eq!(s.off_at(0), 128.0 * s.mul[0]);
        let x0 = s.reconstruct(0);
        for (a, b) in x0.iter().zip(&rows[..3]) {
            assert!((a - b).abs() <= s.mul[0] / 2.0 + 1e-6, "{x0:?}");
        }
        // Minimum above a quarter of the range: its own offset, the column appears,
        // earlier rows get theirs as 128·a_x (so they score exactly as before).
        let far = [10.0f32, 11.0, 12.0];
        assert!(s.wants_offsets(&far));
        s.reserve_for(&far, &[3]).unwrap();
        let cap = s.off.capacity();
        s.append(&far, &[3]);
        assert!(
            s.has_offset_column() && s.off.capacity() == cap,
            "reserved, no regrowth"
        );
        assert_eq!(s.off[0], 128.0 * s.mul[0]);
        assert_eq!(s.off[1], 128.0 * s.mul[1]);
        let x2 = s.reconstruct(2);
        for (a, b) in x2.iter().zip(&far) {
            assert!((a - b).abs() <= s.mul[2] / 2.0 + 1e-5, "{x2:?}");
        }
        // Forbidden zero floor: the min-floor code, as before.
        let mut c = RowStore::new(3, Metric::L2, false);
        c.set_asymmetric(true);
        c.forbid_zero_floor();
        let pos = [1.0f32, 2.0, 5.0];
        assert!(c.wants_offsets(&pos));
        c.reserve_for(&pos, &[0]).unwrap();
        c.append(&pos, &[0]);
        let mut q = [0i8; 3];
        let (sc, o) = crate::vector::quantize::quantize_asym_into(&pos, &mut q);
        assert_eq!((c.row(0), c.mul[0], c.off_at(0)), (&q[..], sc, o));
    }
}
