//! One generation's append-only blob file, read through a shared read-only mmap.
//!
//! Writes go through `pwritev` at the file's end (under the arena's writer
//! lock); reads go through a mapping that is grown (re-mapped larger) as the
//! file grows. Old mappings stay alive while a [`super::BlobView`] holds them.
//! The mapping may be longer than the file: pages past end-of-file are never
//! touched because a blob is only indexed after its bytes were written.
//!
//! File layout: a 32-byte header (`SCBLOB02`, generation u64, store id u64,
//! CRC32C u32 of those 24 bytes, 4 zero bytes), then blobs back to back. The
//! store id binds the file to its arena: a generation file copied in from
//! another arena is refused at open.
//!
//! Each mapping carries a "verified" bitmap: a blob of 16 bytes or more is
//! checksummed the first time it is read through that mapping and its bit set
//! (two such blobs never start in the same 16-byte slot); smaller blobs are
//! checksummed on every read (cheaper than the bitmap).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};
use parking_lot::RwLock;

use super::io::{io_error, SharedIo};
use crate::{Error, ErrorKind, Result};

/// Magic bytes at the start of every generation file.
pub const BLOB_MAGIC: &[u8; 8] = b"SCBLOB02";
/// Bytes of the generation file header.
pub const BLOB_HEADER_LEN: u64 = 32;
/// Blobs shorter than this are checksummed on every read; longer ones once per mapping.
pub const VERIFY_SLOT: u64 = 16;

/// The header of generation `generation` of store `store_id`.
pub fn encode_header(generation: u64, store_id: u64) -> [u8; BLOB_HEADER_LEN as usize] {
    let mut h = [0u8; BLOB_HEADER_LEN as usize];
    h[..8].copy_from_slice(BLOB_MAGIC);
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    h[16..24].copy_from_slice(&store_id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A generation header's fields as they stand in the file (see [`read_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// The generation number written in the header.
    pub generation: u64,
    /// The store id written in the header.
    pub store_id: u64,
    /// Whether the header's CRC32C matches and its padding is zero.
    pub intact: bool,
}

/// Reads the header at the start of `bytes` (a file's first bytes or all of
/// them): its fields, or why it is not a generation header at all (too short,
/// wrong magic). Says nothing about whether the fields are the expected ones:
/// that is [`check_header`].
///
/// ```
/// use slabcache_core::arena::format::{encode_header, read_header};
/// let h = read_header(&encode_header(3, 0xabc)).unwrap();
/// assert_eq!((h.generation, h.store_id, h.intact), (3, 0xabc, true));
/// assert!(read_header(b"SCBLOB02").is_err()); // truncated
/// ```
pub fn read_header(bytes: &[u8]) -> std::result::Result<BlobHeader, String> {
    let Some(h) = bytes.get(..BLOB_HEADER_LEN as usize) else {
        return Err("is truncated (no header)".into());
    };
    if &h[..8] != BLOB_MAGIC {
        return Err("has a bad magic (not a slabcache generation file of this format)".into());
    }
    let field = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let (generation, store_id) = (field(8), field(16));
    Ok(BlobHeader {
        generation,
        store_id,
        intact: h == encode_header(generation, store_id),
    })
}

/// Checks that `bytes` start with the header of generation `generation` of
/// store `store_id`; the reason it is wrong otherwise (the one place a
/// generation header is judged: open, `verify` and repair all call it).
///
/// ```
/// use slabcache_core::arena::format::{check_header, encode_header};
/// let h = encode_header(2, 7);
/// assert!(check_header(&h, 2, 7).is_ok());
/// assert!(check_header(&h, 2, 8).unwrap_err().contains("another store"));
/// assert!(check_header(&h, 3, 7).unwrap_err().contains("is generation 2"));
/// ```
pub fn check_header(
    bytes: &[u8],
    generation: u64,
    store_id: u64,
) -> std::result::Result<(), String> {
    let h = read_header(bytes)?;
    if h.store_id != store_id {
        return Err(format!(
            "belongs to another store (store id {:#x}, expected {store_id:#x})",
            h.store_id
        ));
    }
    if h.generation != generation {
        return Err(format!(
            "is generation {}, expected {generation}",
            h.generation
        ));
    }
    if !h.intact {
        return Err("has a header checksum mismatch".into());
    }
    Ok(())
}

/// Smallest mapping made of a generation file (it grows by doubling).
const MIN_MAP_LEN: u64 = 16 << 20;

/// The open file of a generation, unlinked on drop once marked obsolete.
pub struct GenerationFile {
    generation: u64,
    path: PathBuf,
    file: File,
    io: SharedIo,
    obsolete: AtomicBool,
}

impl GenerationFile {
    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
    /// Marks the file for deletion when its last user (mapping or view) is gone.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for GenerationFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // Best effort: recovery removes unreferenced generations anyway.
            let _ = self.io.remove(&self.path);
        }
    }
}

/// A read-only mapping of (a prefix of, or more than) a generation file.
pub struct Mapping {
    mmap: Mmap,
    file: Arc<GenerationFile>,
    verified: Box<[AtomicU64]>,
}

impl Mapping {
    /// The mapped bytes (only the prefix up to the file's written end is ever read).
    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }
    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.mmap.len()
    }
    /// The generation this maps.
    pub fn generation(&self) -> u64 {
        self.file.generation
    }

    /// True when the blob `[offset, offset + len)` matches `crc`: checked once
    /// per mapping for blobs of [`VERIFY_SLOT`] bytes or more, every time for
    /// smaller ones. The caller checked the range lies inside the mapping.
    pub fn check_blob(&self, offset: u64, len: u64, crc: u32) -> bool {
        if len < VERIFY_SLOT {
            return crc32c::crc32c(&self.mmap[offset as usize..(offset + len) as usize]) == crc;
        }
        let slot = (offset / VERIFY_SLOT) as usize;
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        let Some(w) = self.verified.get(word) else {
            return crc32c::crc32c(&self.mmap[offset as usize..(offset + len) as usize]) == crc;
        };
        if w.load(Ordering::Relaxed) & bit != 0 {
            return true;
        }
        let ok = crc32c::crc32c(&self.mmap[offset as usize..(offset + len) as usize]) == crc;
        if ok {
            w.fetch_or(bit, Ordering::Relaxed);
        }
        ok
    }

    /// Marks a blob as verified (its bytes were just checksummed by the writer).
    pub fn mark_verified(&self, offset: u64, len: u64) {
        if len < VERIFY_SLOT {
            return;
        }
        let slot = (offset / VERIFY_SLOT) as usize;
        if let Some(w) = self.verified.get(slot / 64) {
            w.fetch_or(1u64 << (slot % 64), Ordering::Relaxed);
        }
    }
}

/// A generation's blob file: append position, file handle and current mapping.
pub struct BlobFile {
    handle: Arc<GenerationFile>,
    end: AtomicU64,
    mapping: RwLock<Arc<Mapping>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    io_error(what, path, e)
}

fn map(handle: &Arc<GenerationFile>, len: u64) -> Result<Arc<Mapping>> {
    let len = usize::try_from(len).map_err(|_| {
        Error::new(
            ErrorKind::OutOfMemory,
            "mapping larger than the address space",
        )
    })?;
    // SAFETY: the mapping is read-only and shared. The arena holds the
    // directory's exclusive lock, only appends to the file and never truncates a
    // generation file while it is mapped, so the bytes a view exposes never
    // change underneath it. Pages past end-of-file are never read (a blob is
    // indexed only after its bytes are written), so no SIGBUS arises from them.
    let mmap = unsafe { MmapOptions::new().len(len).map(handle.file()) }
        .map_err(|e| io_err("cannot mmap", &handle.path, e))?;
    let slots = (len as u64).div_ceil(VERIFY_SLOT * 64) as usize;
    let verified: Box<[AtomicU64]> = (0..slots).map(|_| AtomicU64::new(0)).collect();
    Ok(Arc::new(Mapping {
        mmap,
        file: handle.clone(),
        verified,
    }))
}

impl BlobFile {
    /// Creates a new, empty generation file at `path` (header written and
    /// fsynced; the caller fsyncs the directory).
    pub fn create(io: &SharedIo, path: &Path, generation: u64, store_id: u64) -> Result<BlobFile> {
        let file = io
            .open(path, true, true)
            .map_err(|e| io_err("cannot create", path, e))?;
        let header = encode_header(generation, store_id);
        io.write_at(&file, &[&header], 0)
            .map_err(|e| io_err("cannot write", path, e))?;
        io.sync(&file)
            .map_err(|e| io_err("cannot fsync", path, e))?;
        Self::from_file(io, path, file, generation, BLOB_HEADER_LEN)
    }

    /// Opens an existing generation file, checking its header (magic,
    /// generation number, store id); its end is the file length.
    pub fn open(io: &SharedIo, path: &Path, generation: u64, store_id: u64) -> Result<BlobFile> {
        let file = io.open(path, false, false).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::corrupt(format!("generation file {} is missing", path.display()))
            } else {
                io_err("cannot open", path, e)
            }
        })?;
        let len = file
            .metadata()
            .map_err(|e| io_err("cannot stat", path, e))?
            .len();
        // A file shorter than a header reads as short, and check_header says so.
        let mut header = [0u8; BLOB_HEADER_LEN as usize];
        let have = len.min(BLOB_HEADER_LEN) as usize;
        read_exact_at(&file, &mut header[..have], 0)
            .map_err(|e| io_err("cannot read the header of", path, e))?;
        let header = &header[..have];
        if let Err(why) = check_header(header, generation, store_id) {
            return Err(Error::corrupt(format!(
                "generation file {} {why}",
                path.display()
            )));
        }
        Self::from_file(io, path, file, generation, len)
    }

    fn from_file(
        io: &SharedIo,
        path: &Path,
        file: File,
        generation: u64,
        end: u64,
    ) -> Result<BlobFile> {
        let handle = Arc::new(GenerationFile {
            generation,
            path: path.to_path_buf(),
            file,
            io: io.clone(),
            obsolete: AtomicBool::new(false),
        });
        let mapping = map(&handle, end.max(MIN_MAP_LEN).next_power_of_two())?;
        Ok(BlobFile {
            handle,
            end: AtomicU64::new(end),
            mapping: RwLock::new(mapping),
        })
    }

    /// The generation number.
    pub fn generation(&self) -> u64 {
        self.handle.generation
    }
    /// The shared file handle (also held by every mapping).
    pub fn handle(&self) -> &Arc<GenerationFile> {
        &self.handle
    }
    /// Bytes written so far, header included: where the next blob goes.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }
    /// The current mapping (covers every written byte).
    pub fn mapping(&self) -> Arc<Mapping> {
        self.mapping.read().clone()
    }

    /// Appends `bufs` back to back at the end; returns the offset of the first.
    /// Caller holds the arena's writer lock (a single appender).
    pub fn append(&self, bufs: &[&[u8]]) -> Result<u64> {
        let at = self.end();
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.handle
            .io
            .write_at(&self.handle.file, bufs, at)
            .map_err(|e| io_err("cannot write", &self.handle.path, e))?;
        self.ensure_mapped(at + total)?;
        self.end.store(at + total, Ordering::Release);
        Ok(at)
    }

    /// Recovery only: writes `data` at `offset` (rewriting a blob from its
    /// put-inline WAL record), extending the end if it grows the file.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.handle
            .io
            .write_at(&self.handle.file, &[data], offset)
            .map_err(|e| io_err("cannot write", &self.handle.path, e))?;
        let end = self.end().max(offset + data.len() as u64);
        self.ensure_mapped(end)?;
        self.end.store(end, Ordering::Release);
        Ok(())
    }

    /// Grows the mapping so it covers `end` bytes.
    fn ensure_mapped(&self, end: u64) -> Result<()> {
        if (self.mapping.read().len() as u64) >= end {
            return Ok(());
        }
        let new = map(&self.handle, end.next_power_of_two())?;
        *self.mapping.write() = new;
        Ok(())
    }

    /// fdatasync of the file.
    pub fn sync(&self) -> Result<()> {
        self.handle
            .io
            .sync(&self.handle.file)
            .map_err(|e| io_err("cannot fsync", &self.handle.path, e))
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(test)]
mod tests {
    use super::super::io::write_all_at;
    use super::*;

    #[test]
    fn write_all_at_handles_many_and_empty_buffers() {
        let path = std::env::temp_dir().join(format!("sc-wall-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let owned: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 7) as usize])
            .collect();
        let bufs: Vec<&[u8]> = owned.iter().map(|b| &b[..]).collect();
        write_all_at(&file, &bufs, 5).unwrap();
        let expect: Vec<u8> = owned.concat();
        let mut got = vec![0u8; expect.len()];
        read_exact_at(&file, &mut got, 5).unwrap();
        assert_eq!(got, expect);
        std::fs::remove_file(&path).unwrap();
    }
}
