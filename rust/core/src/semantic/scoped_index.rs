//! One flat INT8 index per scope, searched in batches.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Result};
use crate::vector::{check_finite, AnyIndex, ClusteredIndex, FlatIndex, Kernel, Metric, MAX_ID};

/// A partition switches from flat to clustered (k-means pages) once it holds
/// this many rows, unless configured otherwise.
pub const DEFAULT_CLUSTER_ABOVE: usize = 20_000;

/// Cosine INT8 indexes keyed by scope name; keys are unique across scopes.
///
/// A partition starts flat (exact). Once it holds `cluster_above` rows it is
/// rebuilt once as a [`ClusteredIndex`] with `nlist = 4·√n` pages (16..=4096)
/// probing `max(8, nlist/32)` of them, so a miss at a million rows scans a
/// few percent of them instead of all; 0 keeps every partition flat.
///
/// ```
/// use slabcache_core::semantic::ScopedIndex;
/// let mut ix = ScopedIndex::new(3).unwrap();
/// ix.add_many(&["m1", "m1"], &[10, 11], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
/// assert_eq!(ix.len(), 2);
/// ix.remove("m1", &[10]).unwrap();
/// let (_, keys) = ix.search_many(&["m1", "m2"], &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 2).unwrap();
/// assert_eq!(keys, vec![11, -1, -1, -1]); // m2 has no rows: padded
/// ```
#[derive(Debug, Clone)]
pub struct ScopedIndex {
    dim: usize,
    kernel: Kernel,
    cluster_above: usize,
    parts: HashMap<Box<str>, AnyIndex>,
}

impl ScopedIndex {
    /// An empty index of `dim`-wide vectors (kernel from `SLABCACHE_SIMD` or the best).
    pub fn new(dim: usize) -> Result<ScopedIndex> {
        ScopedIndex::with_kernel(dim, Kernel::from_env()?)
    }

    /// An empty index with an explicit kernel.
    pub fn with_kernel(dim: usize, kernel: Kernel) -> Result<ScopedIndex> {
        ScopedIndex::with_options(dim, kernel, DEFAULT_CLUSTER_ABOVE)
    }

    /// An empty index whose partitions turn clustered at `cluster_above`
    /// rows (0: never).
    pub fn with_options(dim: usize, kernel: Kernel, cluster_above: usize) -> Result<ScopedIndex> {
        FlatIndex::with_kernel(dim, Metric::Cosine, kernel)?;
        Ok(ScopedIndex {
            dim,
            kernel,
            cluster_above,
            parts: HashMap::new(),
        })
    }

    /// Whether `scope`'s partition is clustered.
    pub fn is_clustered(&self, scope: &str) -> bool {
        matches!(self.parts.get(scope), Some(AnyIndex::Clustered(_)))
    }

    /// Rebuilds a large flat partition as a clustered one (all or nothing).
    fn maybe_cluster(&mut self, scope: &str) -> Result<()> {
        let Some(AnyIndex::Flat(flat)) = self.parts.get(scope) else {
            return Ok(());
        };
        let n = flat.len();
        if self.cluster_above == 0 || n < self.cluster_above {
            return Ok(());
        }
        let ids = flat.ids();
        let mut vecs = Vec::with_capacity(n * self.dim);
        for &id in &ids {
            vecs.extend_from_slice(&flat.reconstruct(id)?);
        }
        let nlist = ((4.0 * (n as f64).sqrt()) as usize).clamp(16, 4096).min(n);
        let nprobe = (nlist / 32).max(8).min(nlist);
        let mut c =
            ClusteredIndex::with_kernel(self.dim, Metric::Cosine, nlist, nprobe, self.kernel)?;
        c.add(&vecs, Some(&ids))?;
        self.parts.insert(scope.into(), AnyIndex::Clustered(c));
        Ok(())
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The INT8 kernel's name.
    pub fn kernel(&self) -> &'static str {
        self.kernel.name()
    }

    /// Live rows in all scopes.
    pub fn len(&self) -> usize {
        self.parts.values().map(AnyIndex::len).sum()
    }

    /// Whether no row is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live rows of `scope`.
    pub fn scope_len(&self, scope: &str) -> usize {
        self.parts.get(scope).map_or(0, AnyIndex::len)
    }

    /// Scopes that hold rows.
    pub fn scopes(&self) -> Vec<String> {
        self.parts.keys().map(|s| s.to_string()).collect()
    }

    /// Whether `key` is live in `scope`.
    pub fn contains(&self, scope: &str, key: u64) -> bool {
        self.parts.get(scope).is_some_and(|p| p.contains(key))
    }

    /// Bytes held by every partition.
    pub fn memory_bytes(&self) -> usize {
        self.parts.values().map(AnyIndex::memory_bytes).sum()
    }

    /// Adds `n` vectors (`n × dim`), vector `i` under `keys[i]` in `scopes[i]`.
    /// Keys must be new in their scope and distinct. Validated before
    /// anything is added: on error nothing changes.
    pub fn add_many<S: AsRef<str>>(
        &mut self,
        scopes: &[S],
        keys: &[u64],
        vectors: &[f32],
    ) -> Result<()> {
        let d = self.dim;
        let n = keys.len();
        if scopes.len() != n || vectors.len() != n * d {
            return Err(Error::invalid_argument(format!(
                "add: {} scopes, {} keys and {} values do not match (dim {d})",
                scopes.len(),
                n,
                vectors.len()
            )));
        }
        check_finite(vectors, d)?;
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut seen = std::collections::HashSet::with_capacity(n);
        for (i, (s, &k)) in scopes.iter().zip(keys).enumerate() {
            if k > MAX_ID {
                return Err(Error::invalid_argument(format!("key {k} exceeds 2^63-1")));
            }
            if !seen.insert(k) || self.contains(s.as_ref(), k) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("key {k} is already in scope {:?}", s.as_ref()),
                ));
            }
            groups.entry(s.as_ref()).or_default().push(i);
        }
        for (scope, rows) in groups {
            let mut vecs = Vec::with_capacity(rows.len() * d);
            let mut ks = Vec::with_capacity(rows.len());
            for &i in &rows {
                vecs.extend_from_slice(&vectors[i * d..(i + 1) * d]);
                ks.push(keys[i]);
            }
            let part = match self.parts.get_mut(scope) {
                Some(p) => p,
                None => self.parts.entry(scope.into()).or_insert(AnyIndex::Flat(
                    FlatIndex::with_kernel(d, Metric::Cosine, self.kernel)?,
                )),
            };
            // Only an allocation failure can fail here (everything else was
            // checked above).
            part.add(&vecs, Some(&ks))?;
            self.maybe_cluster(scope)?;
        }
        Ok(())
    }

    /// Removes the keys of `scope` that are present; returns how many. An
    /// emptied scope's partition is freed.
    pub fn remove(&mut self, scope: &str, keys: &[u64]) -> Result<usize> {
        let Some(part) = self.parts.get_mut(scope) else {
            return Ok(0);
        };
        let mut present: Vec<u64> = keys.iter().copied().filter(|&k| part.contains(k)).collect();
        present.sort_unstable();
        present.dedup();
        let n = part.remove(&present)?;
        if part.is_empty() {
            self.parts.remove(scope);
        }
        Ok(n)
    }

    /// Removes a whole scope; returns its keys.
    pub fn drop_scope(&mut self, scope: &str) -> Vec<u64> {
        self.parts
            .remove(scope)
            .map(|p| p.ids())
            .unwrap_or_default()
    }

    /// The dequantised vector of `key` in `scope`.
    pub fn reconstruct(&self, scope: &str, key: u64) -> Result<Vec<f32>> {
        self.parts
            .get(scope)
            .ok_or_else(|| Error::not_found(format!("scope {scope:?} holds no rows")))?
            .reconstruct(key)
    }

    /// Top-`k` cosine neighbours of each query (`m × dim`) within its own
    /// scope: `(scores, keys)`, both `m × k`, best first, padded with key
    /// `-1` and score `-inf`. Queries of one scope are searched as one batch
    /// (INT8 scan, then FP32 re-score of the candidates).
    pub fn search_many<S: AsRef<str>>(
        &self,
        scopes: &[S],
        queries: &[f32],
        k: usize,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let d = self.dim;
        let m = scopes.len();
        if queries.len() != m * d {
            return Err(Error::invalid_argument(format!(
                "search: {} values do not make {m} vectors of dim {d}",
                queries.len()
            )));
        }
        check_finite(queries, d)?;
        if k == 0 || k > 1 << 20 {
            return Err(Error::invalid_argument(format!(
                "k must be in 1..=1048576, got {k}"
            )));
        }
        let mut scores = vec![f32::NEG_INFINITY; m * k];
        let mut keys = vec![-1i64; m * k];
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, s) in scopes.iter().enumerate() {
            groups.entry(s.as_ref()).or_default().push(i);
        }
        for (scope, qs) in groups {
            let Some(part) = self.parts.get(scope) else {
                continue;
            };
            let (s, ks) = if qs.len() == 1 {
                let i = qs[0];
                part.search_batch(&queries[i * d..(i + 1) * d], k)?
            } else {
                let mut batch = Vec::with_capacity(qs.len() * d);
                for &i in &qs {
                    batch.extend_from_slice(&queries[i * d..(i + 1) * d]);
                }
                part.search_batch(&batch, k)?
            };
            for (j, &i) in qs.iter().enumerate() {
                scores[i * k..(i + 1) * k].copy_from_slice(&s[j * k..(j + 1) * k]);
                keys[i * k..(i + 1) * k].copy_from_slice(&ks[j * k..(j + 1) * k]);
            }
        }
        Ok((scores, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_never_crosses_scopes() {
        let mut ix = ScopedIndex::new(2).unwrap();
        // Scope b's row is identical to the query; scope a's is far.
        ix.add_many(&["a", "b"], &[1, 2], &[0.0, 1.0, 1.0, 0.0])
            .unwrap();
        let (s, k) = ix.search_many(&["a"], &[1.0, 0.0], 1).unwrap();
        assert_eq!(k, vec![1]);
        assert!(s[0].abs() < 0.01);
    }

    #[test]
    fn a_large_partition_turns_clustered_and_still_finds_its_rows() {
        let d = 16;
        let mut ix = ScopedIndex::with_options(d, Kernel::best(), 300).unwrap();
        let mut x = 99u64;
        let mut vecs = Vec::new();
        for _ in 0..400 * d {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            vecs.push(((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5);
        }
        let keys: Vec<u64> = (0..400).collect();
        let scopes = vec!["s"; 400];
        ix.add_many(&scopes[..200], &keys[..200], &vecs[..200 * d])
            .unwrap();
        assert!(!ix.is_clustered("s"));
        ix.add_many(&scopes[200..], &keys[200..], &vecs[200 * d..])
            .unwrap();
        assert!(ix.is_clustered("s"));
        assert_eq!(ix.len(), 400);
        // Every row finds itself (its own page is always the nearest).
        let (s, k) = ix.search_many(&scopes, &vecs, 1).unwrap();
        let found = k
            .iter()
            .zip(&keys)
            .filter(|(a, b)| **a == **b as i64)
            .count();
        assert!(found >= 396, "{found}/400");
        assert!(s
            .iter()
            .all(|&v| v > 0.9 || v == f32::NEG_INFINITY || v <= 1.0));
        assert_eq!(ix.remove("s", &[0, 1, 2]).unwrap(), 3);
        assert!(ix.reconstruct("s", 5).is_ok() && ix.reconstruct("s", 0).is_err());
        assert_eq!(ix.drop_scope("s").len(), 397);
    }

    #[test]
    fn failed_add_changes_nothing_and_empty_scopes_are_freed() {
        let mut ix = ScopedIndex::new(2).unwrap();
        ix.add_many(&["a"], &[1], &[1.0, 0.0]).unwrap();
        assert!(ix
            .add_many(&["b", "a"], &[5, 1], &[1.0, 0.0, 0.0, 1.0])
            .is_err());
        assert_eq!(ix.len(), 1);
        assert!(ix.add_many(&["b"], &[6], &[f32::NAN, 0.0]).is_err());
        assert_eq!(ix.scopes(), vec!["a".to_string()]);
        assert_eq!(ix.remove("a", &[1, 99]).unwrap(), 1);
        assert!(ix.scopes().is_empty());
    }
}
