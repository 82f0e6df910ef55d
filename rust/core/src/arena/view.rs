//! Zero-copy views of blobs: a slice of a generation's mapping that keeps the
//! mapping (and so the generation file) alive for as long as the view lives.

use std::ops::Deref;
use std::sync::Arc;

use super::blob_file::Mapping;

/// A read-only, zero-copy view of one blob inside an mmap'd generation file.
///
/// The view holds an `Arc` to the mapping, so it stays valid after the key is
/// overwritten or deleted, after compaction retires the generation, and after
/// the arena is closed; the file is unlinked once its last view is dropped.
///
/// ```
/// use slabcache_core::arena::{ArenaOptions, BlobArena};
/// let dir = std::env::temp_dir().join(format!("sc-view-doc-{}", std::process::id()));
/// let arena = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
/// arena.put(b"k", b"hello").unwrap();
/// let view = arena.get(b"k").unwrap().unwrap();
/// arena.delete(b"k").unwrap();
/// arena.compact().unwrap();
/// assert_eq!(&*view, b"hello"); // still mapped
/// # drop(view); drop(arena); std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct BlobView {
    mapping: Arc<Mapping>,
    offset: usize,
    len: usize,
}

impl BlobView {
    /// A view of `len` bytes at `offset` of `mapping`; the caller checked the range.
    pub(crate) fn new(mapping: Arc<Mapping>, offset: usize, len: usize) -> BlobView {
        debug_assert!(offset + len <= mapping.len());
        BlobView {
            mapping,
            offset,
            len,
        }
    }

    /// The blob's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.mapping.bytes()[self.offset..self.offset + self.len]
    }

    /// The generation the blob lives in.
    pub fn generation(&self) -> u64 {
        self.mapping.generation()
    }
}

impl Deref for BlobView {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for BlobView {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for BlobView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobView")
            .field("generation", &self.generation())
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}
