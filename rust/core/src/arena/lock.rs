//! The single-writer lock: an advisory `flock` on `LOCK` inside the arena directory.
//!
//! `flock` locks belong to an open file description, so a second open of the
//! same arena fails both from another process and from the same process. The
//! kernel drops the lock when the process dies, so a crashed writer never
//! leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Error, ErrorKind, Result};

/// Name of the lock file inside an arena directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive advisory lock on an arena directory, held while this value lives.
///
/// ```
/// use slabcache_core::arena::lock::DirLock;
/// let dir = std::env::temp_dir().join(format!("sc-lock-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let first = DirLock::acquire(&dir).unwrap();
/// assert!(DirLock::acquire(&dir).is_err()); // LockedError
/// drop(first);
/// assert!(DirLock::acquire(&dir).is_ok());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock without blocking; [`ErrorKind::Locked`] when another holder exists.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot open {}: {e}", path.display()),
                )
            })?;
        // SAFETY: `file` owns a valid open descriptor for the duration of the call;
        // flock only reads the descriptor number.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!(
                        "arena {} is open by another writer (lock {} is held)",
                        dir.display(),
                        path.display()
                    ),
                ));
            }
            return Err(Error::new(
                ErrorKind::Io,
                format!("cannot lock {}: {err}", path.display()),
            ));
        }
        Ok(DirLock { _file: file })
    }
}
