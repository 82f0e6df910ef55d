//! Saving and loading indexes: a versioned, checksummed single file.
//!
//! Layout (little-endian), version 3:
//!
//! ```text
//! magic     8 B   "SLABVI8\0"
//! version   u32   3
//! kind      u8    0 = flat, 1 = clustered
//! metric    u8    0 = ip, 1 = cosine, 2 = l2
//! flags     u8    bit 0: FP32 rows kept for re-ranking; bit 1: asymmetric codes
//! reserved  u8    0
//! dim       u32
//! next_id   u64
//! [clustered] nlist u32, nprobe u32, trained u8, coarse flags u8
//!             (bit 1: the centroids' codes are asymmetric), 2 B zero,
//!             centroids as one store (below; ids 0..nlist, no FP32 rows),
//!             only when trained
//! stores    1 (flat) or nlist (clustered), each:
//!             rows u64, ids u64 × rows, scales f32 × rows,
//!             [offsets f32 × rows if flag 1], codes i8 × rows·dim,
//!             [FP32 rows f32 × rows·dim if flag 0]
//! crc32c    u32   of every byte before it
//! ```
//!
//! (`scales` are the quantization scales; a `cosine` store writes its
//! factor `1/‖q_x‖` there and recomputes it from the codes on load.)
//! Version 2 files (FP32 centroids `f32 × nlist·dim` in place of the
//! centroid store, quantized on load) and version 1 files (no flags, an FP32
//! norm column after the scales) still load. The index keeps only the
//! centroids' INT8 codes, which is why version 3 saves those.
//!
//! Only live rows are written. Saving goes to `<path>.tmp`, is synced, then
//! renamed over `path`, so a crash never leaves a half-written index under
//! the real name. Loading checks the magic, version, sizes, checksum and
//! every value's range before building anything; a bad file is a
//! `Corrupt` error (`CorruptionError` in Python), never a panic.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::vector::clustered::{coarse_metric, Centroids, ClusteredIndex};
use crate::vector::flat::{FlatIndex, MAX_DIM, MAX_ID};
use crate::vector::kernels::Kernel;
use crate::vector::metric::Metric;
use crate::vector::quantize::CodeKind;
use crate::vector::store::RowStore;

/// File magic.
pub const MAGIC: &[u8; 8] = b"SLABVI8\0";
/// Current format version.
pub const FORMAT_VERSION: u32 = 3;

/// Either index type, for code that handles both (bindings, persistence).
#[derive(Debug, Clone)]
pub enum AnyIndex {
    /// Exhaustive.
    Flat(FlatIndex),
    /// Page-clustered.
    Clustered(ClusteredIndex),
}

macro_rules! both {
    ($self:expr, $i:ident => $e:expr) => {
        match $self {
            AnyIndex::Flat($i) => $e,
            AnyIndex::Clustered($i) => $e,
        }
    };
}

impl AnyIndex {
    /// Vector width.
    pub fn dim(&self) -> usize {
        both!(self, i => i.dim())
    }
    /// The metric.
    pub fn metric(&self) -> Metric {
        both!(self, i => i.metric())
    }
    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        both!(self, i => i.kernel())
    }
    /// Switches kernel.
    pub fn set_kernel(&mut self, kernel: Kernel) {
        both!(self, i => i.set_kernel(kernel))
    }
    /// Live vectors.
    pub fn len(&self) -> usize {
        both!(self, i => i.len())
    }
    /// Whether no vector is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        both!(self, i => i.contains(id))
    }
    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        both!(self, i => i.memory_bytes())
    }
    /// See [`FlatIndex::add`].
    pub fn add(&mut self, vectors: &[f32], ids: Option<&[u64]>) -> Result<Vec<u64>> {
        both!(self, i => i.add(vectors, ids))
    }
    /// See [`FlatIndex::remove`].
    pub fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        both!(self, i => i.remove(ids))
    }
    /// See [`FlatIndex::search_batch`].
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        both!(self, i => i.search_batch(queries, k))
    }
    /// See [`FlatIndex::search_batch_rerank`].
    pub fn search_batch_rerank(
        &self,
        queries: &[f32],
        k: usize,
        rerank: Option<usize>,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        both!(self, i => i.search_batch_rerank(queries, k, rerank))
    }
    /// Whether the FP32 vectors are kept for exact re-ranking.
    pub fn keeps_exact(&self) -> bool {
        both!(self, i => i.keeps_exact())
    }
    /// Bytes held, by kind.
    pub fn bytes(&self) -> crate::vector::flat::IndexBytes {
        both!(self, i => i.bytes())
    }
    /// The code in use (`Auto` until the first add decides).
    pub fn codes(&self) -> CodeKind {
        both!(self, i => i.codes())
    }
    /// See [`FlatIndex::set_codes`].
    pub fn set_codes(&mut self, codes: CodeKind) -> Result<()> {
        both!(self, i => i.set_codes(codes))
    }
    /// Live ids.
    pub fn ids(&self) -> Vec<u64> {
        both!(self, i => i.ids())
    }
    /// See [`FlatIndex::reconstruct`].
    pub fn reconstruct(&self, id: u64) -> Result<Vec<f32>> {
        both!(self, i => i.reconstruct(id))
    }

    /// Saves to `path` (atomically: temp file, fsync, rename).
    ///
    /// ```
    /// use slabcache_core::vector::{load_index, AnyIndex, FlatIndex, Metric};
    /// let mut index = FlatIndex::new(2, Metric::Ip).unwrap();
    /// index.add(&[1.0, 2.0], Some(&[7])).unwrap();
    /// let path = std::env::temp_dir().join(format!("doc-{}.sci8", std::process::id()));
    /// AnyIndex::Flat(index).save(&path).unwrap();
    /// let loaded = load_index(&path).unwrap();
    /// assert!(loaded.contains(7));
    /// std::fs::remove_file(path).unwrap();
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let result = (|| -> Result<()> {
            let file = File::create(&tmp)?;
            let mut w = CrcWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                crc: 0,
            };
            self.write_body(&mut w)?;
            let crc = w.crc;
            let mut inner = w.inner;
            inner.write_all(&crc.to_le_bytes())?;
            let file = inner
                .into_inner()
                .map_err(|e| Error::from(e.into_error()))?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_body(&self, w: &mut CrcWriter) -> Result<()> {
        w.put(MAGIC)?;
        w.put(&FORMAT_VERSION.to_le_bytes())?;
        let kind: u8 = match self {
            AnyIndex::Flat(_) => 0,
            AnyIndex::Clustered(_) => 1,
        };
        let asym = self.codes() == CodeKind::Asymmetric;
        let flags = self.keeps_exact() as u8 | (asym as u8) << 1;
        w.put(&[kind, self.metric().code(), flags, 0])?;
        w.put(&(self.dim() as u32).to_le_bytes())?;
        match self {
            AnyIndex::Flat(f) => {
                w.put(&f.next_id.to_le_bytes())?;
                write_store(w, &f.store)?;
            }
            AnyIndex::Clustered(c) => {
                w.put(&c.next_id.to_le_bytes())?;
                w.put(&(c.nlist as u32).to_le_bytes())?;
                w.put(&(c.nprobe as u32).to_le_bytes())?;
                let coarse_asym = c.coarse.as_ref().is_some_and(|k| k.store.is_asymmetric());
                w.put(&[c.is_trained() as u8, (coarse_asym as u8) << 1, 0, 0])?;
                if let Some(k) = &c.coarse {
                    write_store(w, &k.store)?;
                }
                for p in &c.pages {
                    write_store(w, p)?;
                }
            }
        }
        Ok(())
    }
}

struct CrcWriter {
    inner: BufWriter<File>,
    crc: u32,
}

impl CrcWriter {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.inner.write_all(bytes)?;
        Ok(())
    }
}

fn write_store(w: &mut CrcWriter, s: &RowStore) -> Result<()> {
    let live: Vec<usize> = (0..s.rows()).filter(|&r| s.is_live(r)).collect();
    w.put(&(live.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(live.len() * 8);
    for &r in &live {
        buf.extend_from_slice(&s.id(r).to_le_bytes());
    }
    w.put(&buf)?;
    buf.clear();
    for &r in &live {
        buf.extend_from_slice(&s.saved_scale(r).to_le_bytes());
    }
    w.put(&buf)?;
    if s.is_asymmetric() {
        buf.clear();
        for &r in &live {
            buf.extend_from_slice(&s.saved_offset(r).to_le_bytes());
        }
        w.put(&buf)?;
    }
    for &r in &live {
        let row = s.row(r);
        // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid for both.
        let bytes = unsafe { std::slice::from_raw_parts(row.as_ptr() as *const u8, row.len()) };
        w.put(bytes)?;
    }
    for &r in &live {
        if let Some(x) = s.exact_row(r) {
            buf.clear();
            for v in x {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.put(&buf)?;
        }
    }
    Ok(())
}

/// A bounds-checked reader over the file's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated() -> Error {
    Error::corrupt("vector index file is truncated")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        if end > self.buf.len() {
            return Err(truncated());
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let bytes = self.take(n.checked_mul(4).ok_or_else(truncated)?)?;
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::corrupt(format!(
                "vector index file has a non-finite {what}"
            )));
        }
        Ok(v)
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// What a file's stores hold besides ids, scales and codes.
#[derive(Clone, Copy)]
struct StoreFormat {
    version: u32,
    exact: bool,
    asym: bool,
}

fn read_store(
    r: &mut Reader,
    dim: usize,
    metric: Metric,
    fmt: StoreFormat,
    seen: &mut HashSet<u64>,
) -> Result<RowStore> {
    let rows = r.u64()?;
    // Bytes each row needs: reject impossible counts before allocating.
    let per_row = match fmt.version {
        1 => 16 + dim as u64,
        _ => {
            12 + dim as u64
                + if fmt.exact { 4 * dim as u64 } else { 0 }
                + if fmt.asym { 4 } else { 0 }
        }
    };
    if rows
        .checked_mul(per_row)
        .is_none_or(|b| b > r.remaining() as u64)
    {
        return Err(truncated());
    }
    let rows = rows as usize;
    let id_bytes = r.take(rows * 8)?;
    let ids: Vec<u64> = id_bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for &id in &ids {
        if id > MAX_ID || !seen.insert(id) {
            return Err(Error::corrupt(format!(
                "vector index file has an invalid or repeated id {id}"
            )));
        }
    }
    let scales = r.f32s(rows, "scale")?;
    let norms = if fmt.version == 1 {
        r.f32s(rows, "norm")?
    } else {
        Vec::new()
    };
    let offsets = if fmt.asym {
        Some(r.f32s(rows, "offset")?)
    } else {
        None
    };
    if scales.iter().chain(&norms).any(|&x| x < 0.0) {
        return Err(Error::corrupt(
            "vector index file has a negative scale or norm",
        ));
    }
    let code_bytes = r.take(rows * dim)?;
    if !fmt.asym && code_bytes.contains(&0x80) {
        return Err(Error::corrupt(
            "vector index file has a code outside -127..=127",
        ));
    }
    let codes: Vec<i8> = code_bytes.iter().map(|&b| b as i8).collect();
    let exact = if fmt.exact {
        Some(r.f32s(rows * dim, "vector value")?)
    } else {
        None
    };
    let mut store = RowStore::new(dim, metric, fmt.exact);
    store.set_asymmetric(fmt.asym);
    store.reserve(rows, ids.iter().copied().max().unwrap_or(0))?;
    // Zero-floor rows (offset = 128·scale) need no offset column.
    let own_offsets = offsets
        .as_ref()
        .is_some_and(|o| o.iter().zip(&scales).any(|(&o, &s)| o != 128.0 * s));
    store.reserve_offsets(rows, own_offsets)?;
    store.append_quantized(&codes, &ids, &scales, offsets.as_deref(), exact.as_deref());
    Ok(store)
}

/// Loads an index saved by [`AnyIndex::save`], with the kernel from
/// `SLABCACHE_SIMD` (or the best).
pub fn load_index(path: impl AsRef<Path>) -> Result<AnyIndex> {
    load_index_with_kernel(path, Kernel::from_env()?)
}

/// [`load_index`] with an explicit kernel.
pub fn load_index_with_kernel(path: impl AsRef<Path>, kernel: Kernel) -> Result<AnyIndex> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::Io,
            _ => Error::from(std::io::Error::new(e.kind(), "")).kind(),
        };
        Error::new(
            kind,
            format!("cannot read vector index {}: {e}", path.display()),
        )
    })?;
    parse(&bytes, kernel)
}

/// Parses a whole file image.
pub fn parse(bytes: &[u8], kernel: Kernel) -> Result<AnyIndex> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err(Error::corrupt(
            "not a slabcache vector index file (bad magic)",
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(Error::corrupt(format!(
            "vector index file format version {version} is not supported (this build reads 1 to {FORMAT_VERSION})"
        )));
    }
    if bytes.len() < 4 + 32 {
        return Err(truncated());
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap());
    if crc32c::crc32c(body) != stored {
        return Err(Error::corrupt(
            "vector index file checksum mismatch (corrupt or truncated)",
        ));
    }
    let mut r = Reader { buf: body, pos: 12 };
    let kind = r.u8()?;
    let metric = Metric::from_code(r.u8()?)
        .ok_or_else(|| Error::corrupt("vector index file has an unknown metric"))?;
    let flags = r.take(2)?[0];
    if (version == 1 && flags != 0) || flags > 3 {
        return Err(Error::corrupt("vector index file has unknown flags"));
    }
    let fmt = StoreFormat {
        version,
        exact: flags & 1 == 1,
        asym: flags & 2 == 2,
    };
    let dim = r.u32()? as usize;
    if dim == 0 || dim > MAX_DIM {
        return Err(Error::corrupt(format!(
            "vector index file has an invalid dim {dim}"
        )));
    }
    let next_id = r.u64()?;
    let mut seen = HashSet::new();
    let index = match kind {
        0 => {
            let store = read_store(&mut r, dim, metric, fmt, &mut seen)?;
            let next = next_id.max(seen.iter().max().map_or(0, |m| m + 1));
            AnyIndex::Flat(FlatIndex::from_parts(store, metric, next, kernel))
        }
        1 => {
            let nlist = r.u32()? as usize;
            let nprobe = r.u32()? as usize;
            let head = r.take(4)?;
            let (trained, coarse_flags) = (head[0], head[1]);
            if coarse_flags & !2 != 0 || (version < 3 && coarse_flags != 0) {
                return Err(Error::corrupt(
                    "vector index file has unknown centroid flags",
                ));
            }
            let shell = ClusteredIndex::with_options(dim, metric, nlist, nprobe, kernel, fmt.exact)
                .map_err(|e| Error::corrupt(format!("vector index file: {}", e.message())))?;
            let centroids = match (trained, version) {
                (0, _) => None,
                (1, 1 | 2) => Some(Centroids::Fp32(
                    r.f32s(nlist.checked_mul(dim).ok_or_else(truncated)?, "centroid")?,
                )),
                (1, _) => {
                    let cfmt = StoreFormat {
                        version,
                        exact: false,
                        asym: coarse_flags & 2 == 2,
                    };
                    let cm = coarse_metric(metric);
                    let store = read_store(&mut r, dim, cm, cfmt, &mut HashSet::new())?;
                    // Probing returns these ids as list numbers: they must be 0..nlist.
                    if store.rows() != nlist || (0..nlist).any(|i| store.id(i) != i as u64) {
                        return Err(Error::corrupt(
                            "vector index file has centroids that do not fit the index",
                        ));
                    }
                    Some(Centroids::Coarse(FlatIndex::from_parts(
                        store,
                        cm,
                        nlist as u64,
                        kernel,
                    )))
                }
                _ => return Err(Error::corrupt("vector index file has a bad trained flag")),
            };
            if centroids.is_none() && nlist > r.remaining() {
                return Err(truncated());
            }
            let mut pages = Vec::with_capacity(nlist.min(r.remaining() / 8));
            for _ in 0..nlist {
                pages.push(read_store(&mut r, dim, metric, fmt, &mut seen)?);
            }
            if centroids.is_none() && pages.iter().any(|p| p.rows() > 0) {
                return Err(Error::corrupt(
                    "vector index file has rows but no centroids",
                ));
            }
            let next = next_id.max(seen.iter().max().map_or(0, |m| m + 1));
            AnyIndex::Clustered(ClusteredIndex::from_parts(shell, centroids, pages, next)?)
        }
        _ => {
            return Err(Error::corrupt(format!(
                "vector index file has an unknown index kind {kind}"
            )))
        }
    };
    if r.remaining() != 0 {
        return Err(Error::corrupt("vector index file has trailing bytes"));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 file (scales and norms, no flags), as earlier builds wrote.
    fn v1_file(metric: Metric, ids: &[u64], scales: &[f32], codes: &[i8], dim: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0, metric.code(), 0, 0]);
        b.extend_from_slice(&dim.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
        for id in ids {
            b.extend_from_slice(&id.to_le_bytes());
        }
        for s in scales {
            b.extend_from_slice(&s.to_le_bytes());
        }
        for s in scales {
            b.extend_from_slice(&(s * 100.0).to_le_bytes()); // norms: ignored now
        }
        b.extend(codes.iter().map(|&c| c as u8));
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn version_1_files_still_load() {
        for metric in [Metric::Ip, Metric::Cosine, Metric::L2] {
            let bytes = v1_file(metric, &[4, 2], &[0.5, 0.25], &[127, 0, 0, -127], 2);
            let ix = parse(&bytes, Kernel::scalar()).unwrap();
            assert_eq!(ix.len(), 2);
            let (_, ids) = ix.search_batch(&[63.5, 0.0, 0.0, -31.75], 1).unwrap();
            assert_eq!(ids, vec![4, 2], "{metric:?}");
            let want = if metric == Metric::Cosine { 1.0 } else { 63.5 };
            assert_eq!(ix.reconstruct(4).unwrap(), vec![want, 0.0]);
        }
        let mut bad = v1_file(Metric::Ip, &[1], &[1.0], &[1, 1], 2);
        bad[14] = 1; // flags did not exist in version 1
        let n = bad.len() - 4;
        let crc = crc32c::crc32c(&bad[..n]);
        bad[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(parse(&bad, Kernel::scalar()).is_err());
    }
}
