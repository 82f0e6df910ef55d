//! The arena's file-I/O seam: every write, sync, truncate, rename, removal
//! and directory sync of the arena goes through one [`ArenaIo`].
//!
//! Production uses [`OsIo`] (plain syscalls). Crash-consistency tests plug in
//! an implementation that remembers, per file, the image as of its last
//! completed sync and can fail the N-th call of any operation
//! (`rust/core/tests/arena_crash_model.rs`), the way redb tests its
//! durability. Reads are not part of the seam: they go through `mmap` and
//! `read` of the same files, which see what was written.
//!
//! ```
//! use slabcache_core::arena::{ArenaIo, OsIo};
//! let dir = std::env::temp_dir().join(format!("sc-io-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let io = OsIo;
//! let f = io.open(&dir.join("f"), true, true).unwrap();
//! io.write_at(&f, &[b"hello"], 0).unwrap();
//! io.sync(&f).unwrap();
//! io.sync_dir(&dir).unwrap();
//! assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"hello");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// File operations the arena performs. Implementations must be thread-safe:
/// the group-commit leader syncs while a writer appends.
pub trait ArenaIo: Send + Sync + Debug {
    /// Opens `path` for reading and writing (close-on-exec), creating and/or
    /// truncating it when asked.
    fn open(&self, path: &Path, create: bool, truncate: bool) -> std::io::Result<File>;
    /// Writes every byte of `bufs`, back to back, at `offset`.
    fn write_at(&self, file: &File, bufs: &[&[u8]], offset: u64) -> std::io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync(&self, file: &File) -> std::io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, file: &File, len: u64) -> std::io::Result<()>;
    /// Atomically renames `from` to `to` (same directory).
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Unlinks `path`.
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable (`fsync` of the directory).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// A shared handle to the I/O implementation an arena uses.
pub type SharedIo = Arc<dyn ArenaIo>;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIo;

impl ArenaIo for OsIo {
    fn open(&self, path: &Path, create: bool, truncate: bool) -> std::io::Result<File> {
        // std opens with O_CLOEXEC already; say so, since a forked-and-exec'd
        // child must never inherit the arena's descriptors.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(truncate)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    }

    fn write_at(&self, file: &File, bufs: &[&[u8]], offset: u64) -> std::io::Result<()> {
        write_all_at(file, bufs, offset)
    }

    fn sync(&self, file: &File) -> std::io::Result<()> {
        file.sync_data()
    }

    fn set_len(&self, file: &File, len: u64) -> std::io::Result<()> {
        file.set_len(len)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The default I/O: [`OsIo`].
pub fn os_io() -> SharedIo {
    Arc::new(OsIo)
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

/// Builds the core error for a failed I/O step, keeping the OS error number
/// (so `ENOSPC` stays testable from Python as `e.errno`).
pub fn io_error(what: &str, path: &Path, e: std::io::Error) -> crate::Error {
    let err = crate::Error::new(
        crate::ErrorKind::Io,
        format!("{what} {}: {e}", path.display()),
    );
    match e.raw_os_error() {
        Some(code) => err.with_errno(code),
        None => err,
    }
}
