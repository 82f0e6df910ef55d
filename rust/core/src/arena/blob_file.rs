//! One generation's append-only blob file, read through a shared read-only mmap.
//!
//! Writes go through `pwritev` at the file's end (under the arena's writer
//! lock); reads go through a mapping that is grown (re-mapped larger) as the
//! file grows. Old mappings stay alive while a [`super::BlobView`] holds them.
//! The mapping may be longer than the file: pages past end-of-file are never
//! touched because a blob is only indexed after its bytes were written.
//!
//! File layout: a 16-byte header (`SCBLOB01` + generation u64 LE), then blobs
//! back to back.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};
use parking_lot::RwLock;

use crate::{Error, ErrorKind, Result};

/// Magic bytes at the start of every generation file.
pub const BLOB_MAGIC: &[u8; 8] = b"SCBLOB01";
/// Bytes of the generation file header.
pub const BLOB_HEADER_LEN: u64 = 16;
/// Smallest mapping made of a generation file (it grows by doubling).
const MIN_MAP_LEN: u64 = 16 << 20;

/// The open file of a generation, unlinked on drop once marked obsolete.
#[derive(Debug)]
pub struct GenerationFile {
    generation: u64,
    path: PathBuf,
    file: File,
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
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A read-only mapping of (a prefix of, or more than) a generation file.
pub struct Mapping {
    mmap: Mmap,
    file: Arc<GenerationFile>,
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
    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.mmap.is_empty()
    }
    /// The generation this maps.
    pub fn generation(&self) -> u64 {
        self.file.generation
    }
}

/// A generation's blob file: append position, file handle and current mapping.
pub struct BlobFile {
    handle: Arc<GenerationFile>,
    end: AtomicU64,
    mapping: RwLock<Arc<Mapping>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} {}: {e}", path.display()))
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
    Ok(Arc::new(Mapping {
        mmap,
        file: handle.clone(),
    }))
}

impl BlobFile {
    /// Creates a new, empty generation file at `path` (header written and fsynced).
    pub fn create(path: &Path, generation: u64) -> Result<BlobFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("cannot create", path, e))?;
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(BLOB_MAGIC);
        header.extend_from_slice(&generation.to_le_bytes());
        write_all_at(&file, &[&header], 0).map_err(|e| io_err("cannot write", path, e))?;
        file.sync_all()
            .map_err(|e| io_err("cannot fsync", path, e))?;
        Self::from_file(path, file, generation, BLOB_HEADER_LEN)
    }

    /// Opens an existing generation file, checking its header; its end is the file length.
    pub fn open(path: &Path, generation: u64) -> Result<BlobFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| {
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
        let mut header = [0u8; 16];
        if len < BLOB_HEADER_LEN || read_exact_at(&file, &mut header, 0).is_err() {
            return Err(Error::corrupt(format!(
                "generation file {} is truncated (no header)",
                path.display()
            )));
        }
        if &header[..8] != BLOB_MAGIC || header[8..] != generation.to_le_bytes() {
            return Err(Error::corrupt(format!(
                "generation file {} has a bad header",
                path.display()
            )));
        }
        Self::from_file(path, file, generation, len)
    }

    fn from_file(path: &Path, file: File, generation: u64, end: u64) -> Result<BlobFile> {
        let handle = Arc::new(GenerationFile {
            generation,
            path: path.to_path_buf(),
            file,
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
        write_all_at(&self.handle.file, bufs, at)
            .map_err(|e| io_err("cannot write", &self.handle.path, e))?;
        self.ensure_mapped(at + total)?;
        self.end.store(at + total, Ordering::Release);
        Ok(at)
    }

    /// Recovery only: writes `data` at `offset` (rewriting a blob from its
    /// put-inline WAL record), extending the end if it grows the file.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        write_all_at(&self.handle.file, &[data], offset)
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
            .file
            .sync_data()
            .map_err(|e| io_err("cannot fsync", &self.handle.path, e))
    }
}

/// Writes every byte of `bufs` back to back at `offset` (`pwritev`, retried on
/// short writes and `EINTR`).
pub fn write_all_at(file: &File, bufs: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    let bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let (mut first, mut skip) = (0usize, 0usize); // next buffer, bytes of it already written
    while first < bufs.len() {
        let iov: Vec<IoSlice<'_>> = bufs[first..bufs.len().min(first + 1024)]
            .iter()
            .enumerate()
            .map(|(i, b)| IoSlice::new(if i == 0 { &b[skip..] } else { b }))
            .collect();
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix; every
        // slice points into a live borrowed buffer; the fd is open.
        let rc = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr() as *const libc::iovec,
                iov.len() as libc::c_int,
                offset as libc::off_t,
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        offset += rc as u64;
        let mut n = rc as usize;
        while n > 0 {
            let left = bufs[first].len() - skip;
            if n >= left {
                n -= left;
                first += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_at_handles_many_and_empty_buffers() {
        let path = std::env::temp_dir().join(format!("sc-wall-{}", std::process::id()));
        let file = OpenOptions::new()
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
