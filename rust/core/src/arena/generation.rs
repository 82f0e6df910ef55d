//! Generations: file naming and the table of open generation files.
//!
//! Generation `N` lives in `gen-N.blob` (zero-padded). Compaction writes
//! `gen-N.blob.tmp`, fsyncs it and renames it into place; only the checkpoint
//! that follows makes the arena use it, so a file that no checkpoint or WAL
//! record references is an orphan that recovery deletes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::blob_file::{BlobFile, Mapping};

/// `dir/gen-N.blob`.
///
/// ```
/// use slabcache_core::arena::format::{generation_path, parse_generation_name};
/// let p = generation_path(std::path::Path::new("/x"), 7);
/// assert_eq!(parse_generation_name(p.file_name().unwrap().to_str().unwrap()), Some(7));
/// ```
pub fn generation_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation:010}.blob"))
}

/// The generation number of a `gen-N.blob` file name.
pub fn parse_generation_name(name: &str) -> Option<u64> {
    name.strip_prefix("gen-")?
        .strip_suffix(".blob")?
        .parse()
        .ok()
}

/// The open generations, by number. Readers look a blob's generation up here.
#[derive(Default)]
pub struct GenerationTable {
    gens: RwLock<HashMap<u64, Arc<BlobFile>>>,
}

impl GenerationTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a generation.
    pub fn insert(&self, file: Arc<BlobFile>) {
        self.gens.write().insert(file.generation(), file);
    }
    /// The generation file, if open.
    pub fn get(&self, generation: u64) -> Option<Arc<BlobFile>> {
        self.gens.read().get(&generation).cloned()
    }
    /// The current mapping of `generation`, if open.
    pub fn mapping(&self, generation: u64) -> Option<Arc<Mapping>> {
        self.gens.read().get(&generation).map(|g| g.mapping())
    }
    /// Drops every generation except `keep`, marking the dropped ones obsolete
    /// (their files are unlinked once the last view of them is gone).
    pub fn retire_all_except(&self, keep: u64) {
        let mut gens = self.gens.write();
        gens.retain(|&g, file| {
            if g == keep {
                true
            } else {
                file.handle().mark_obsolete();
                false
            }
        });
    }
    /// Every open generation.
    pub fn all(&self) -> Vec<Arc<BlobFile>> {
        let mut v: Vec<_> = self.gens.read().values().cloned().collect();
        v.sort_by_key(|g| g.generation());
        v
    }
    /// Bytes of blob data (headers excluded) over all open generations.
    pub fn data_bytes(&self) -> u64 {
        self.gens
            .read()
            .values()
            .map(|g| g.end().saturating_sub(super::blob_file::BLOB_HEADER_LEN))
            .sum()
    }
}
