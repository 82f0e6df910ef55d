//! The single-writer lock: an advisory `flock` on `LOCK` inside the arena directory.
//!
//! `flock` locks belong to an open file description, so a second open of the
//! same arena fails both from another process and from the same process. The
//! kernel drops the lock when the process dies, so a crashed writer never
//! leaves a stale lock behind.
//!
//! Fork: a `flock` belongs to the open file description, which a forked
//! child shares; a live child would keep the parent's lock after the parent
//! closed. A `pthread_atfork` child handler therefore closes the child's copy
//! of every lock descriptor (and bumps [`fork_epoch`], which makes every
//! inherited arena handle refuse all calls). Every arena descriptor is opened
//! `O_CLOEXEC`, so `exec`'d children inherit none.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

use crate::{Error, ErrorKind, Result};

/// Name of the lock file inside an arena directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive advisory lock on an arena directory, held while this value
/// lives (a second [`DirLock::acquire`] fails with [`ErrorKind::Locked`]
/// until it is dropped; see the test below).
#[derive(Debug)]
pub struct DirLock {
    file: Option<File>,
    slot: Option<usize>,
}

static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();
const LOCK_SLOTS: usize = 256;
/// Descriptors of held locks, closed in a forked child (async-signal-safe: atomics and `close`).
static LOCK_FDS: [AtomicI32; LOCK_SLOTS] = [const { AtomicI32::new(-1) }; LOCK_SLOTS];

extern "C" fn in_forked_child() {
    FORK_EPOCH.fetch_add(1, Ordering::SeqCst);
    for slot in &LOCK_FDS {
        let fd = slot.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: `fd` is the child's inherited copy of a lock descriptor;
            // nothing else in the child uses it (the DirLock that owns it sees
            // its slot emptied and forgets its File instead of closing it).
            unsafe { libc::close(fd) };
        }
    }
}

/// Increases in a process created by `fork()` (after the first arena was
/// opened in its parent): an arena opened under another epoch is inherited.
pub fn fork_epoch() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only touches atomics and calls
        // close(2), both async-signal-safe as a post-fork child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
    });
    FORK_EPOCH.load(Ordering::Relaxed)
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else { return };
        let fd = file.as_raw_fd();
        let owned = match self.slot {
            Some(i) => LOCK_FDS[i]
                .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok(),
            None => true,
        };
        if owned {
            drop(file);
        } else {
            // A forked child already closed this descriptor.
            std::mem::forget(file);
        }
    }
}

impl DirLock {
    /// Takes the lock without blocking; [`ErrorKind::Locked`] when another holder exists.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        fork_epoch();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
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
        let fd = file.as_raw_fd();
        let slot = LOCK_FDS.iter().position(|s| {
            s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Ok(DirLock {
            file: Some(file),
            slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_drops() {
        let dir = std::env::temp_dir().join(format!("sc-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = DirLock::acquire(&dir).unwrap();
        let err = DirLock::acquire(&dir).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Locked);
        drop(first);
        assert!(DirLock::acquire(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
