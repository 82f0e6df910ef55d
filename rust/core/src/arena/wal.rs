//! The write-ahead log: segment files, the appender, and group commit.
//!
//! The WAL is a sequence of segments `wal-N.log`; only the segment named by
//! the latest checkpoint is live (a checkpoint rotates to a fresh segment).
//! Every segment starts with a `Checkpoint { segment: N }` record.
//!
//! Durability: [`GroupCommit`] tracks the highest sequence number written and
//! the highest made durable. A writer that needs its record durable either
//! finds a sync already covering it, waits for the sync in flight, or becomes
//! the leader and fsyncs (blob file first, then WAL) for everyone written so
//! far. So N concurrent `sync="always"` writers share one pair of fsyncs; when
//! every pending record carries its value inline, the blob fsync is skipped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::blob_file::BlobFile;
use super::io::{io_error, SharedIo};
use super::wal_record::{encode, WalRecord};
use crate::{Error, ErrorKind, Result};

/// `dir/wal-N.log`.
///
/// ```
/// use slabcache_core::arena::format::{parse_segment_name, segment_path};
/// let p = segment_path(std::path::Path::new("/x"), 3);
/// assert_eq!(parse_segment_name(p.file_name().unwrap().to_str().unwrap()), Some(3));
/// ```
pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("wal-{segment:010}.log"))
}

/// The segment number of a `wal-N.log` file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    io_error(what, path, e)
}

/// Appends records to the live WAL segment. Used under the arena's writer lock.
pub struct WalWriter {
    file: Arc<File>,
    io: SharedIo,
    path: PathBuf,
    segment: u64,
    pos: u64,
}

impl WalWriter {
    /// Creates segment `segment` holding its first record
    /// (`Checkpoint { segment, store_id }` with sequence `first_seq`), fsynced
    /// with its directory.
    pub fn create(
        io: &SharedIo,
        dir: &Path,
        segment: u64,
        first_seq: u64,
        store_id: u64,
    ) -> Result<WalWriter> {
        let path = segment_path(dir, segment);
        let file = io
            .open(&path, true, true)
            .map_err(|e| self::io("cannot create", &path, e))?;
        let mut w = WalWriter {
            file: Arc::new(file),
            io: io.clone(),
            path,
            segment,
            pos: 0,
        };
        let mut buf = Vec::new();
        encode(
            &mut buf,
            first_seq,
            &WalRecord::Checkpoint { segment, store_id },
        );
        w.append(&buf)?;
        w.sync()?;
        io.sync_dir(dir)
            .map_err(|e| self::io("cannot fsync directory", dir, e))?;
        Ok(w)
    }

    /// Continues an existing segment whose valid prefix is `pos` bytes long.
    pub fn open_at(io: &SharedIo, path: &Path, segment: u64, pos: u64) -> Result<WalWriter> {
        let file = io
            .open(path, false, false)
            .map_err(|e| self::io("cannot open", path, e))?;
        Ok(WalWriter {
            file: Arc::new(file),
            io: io.clone(),
            path: path.to_path_buf(),
            segment,
            pos,
        })
    }

    /// Writes `bytes` (whole encoded records) at the end of the segment. On
    /// failure the segment is cut back to its previous end; if even that
    /// fails the error says so ([`WalAppendError::rolled_back`] false) and the
    /// caller must stop writing.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.try_append(bytes).map_err(|e| e.error)
    }

    /// [`append`](Self::append), telling whether a failed write was rolled back.
    pub fn try_append(&mut self, bytes: &[u8]) -> std::result::Result<(), WalAppendError> {
        if let Err(e) = self.io.write_at(&self.file, &[bytes], self.pos) {
            // Roll a partial write back so the next append is not behind garbage.
            let rolled_back = self.io.set_len(&self.file, self.pos).is_ok();
            return Err(WalAppendError {
                error: io("cannot write", &self.path, e),
                rolled_back,
            });
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// fdatasync of the segment.
    pub fn sync(&self) -> Result<()> {
        self.io
            .sync(&self.file)
            .map_err(|e| io("cannot fsync", &self.path, e))
    }

    /// The segment number.
    pub fn segment(&self) -> u64 {
        self.segment
    }
    /// Bytes in the segment.
    pub fn len(&self) -> u64 {
        self.pos
    }
    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The shared file (for the group-commit leader).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }
}

/// A failed WAL append.
#[derive(Debug)]
pub struct WalAppendError {
    /// What failed.
    pub error: Error,
    /// True when the segment was cut back to its previous end.
    pub rolled_back: bool,
}

/// What a sync must flush: the append generation's blob file, then the WAL.
#[derive(Clone)]
pub struct SyncTargets {
    /// The generation blobs are appended to.
    pub blob: Arc<BlobFile>,
    /// The live WAL segment.
    pub wal: Arc<File>,
    /// The I/O that syncs the WAL.
    pub io: SharedIo,
}

struct SyncState {
    written: u64,
    /// WAL segment length once everything up to `written` is written.
    written_wal: u64,
    /// WAL segment length made durable by the last completed sync.
    synced_wal: u64,
    /// Highest sequence number whose blob bytes must be synced (a non-inline put).
    blob_written: u64,
    synced: u64,
    syncing: bool,
    unsynced_bytes: u64,
    targets: SyncTargets,
    failed: Option<Error>,
    syncs: u64,
}

/// Group commit: shares fsyncs between concurrent writers.
///
/// ```
/// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
/// let dir = std::env::temp_dir().join(format!("sc-gc-doc-{}", std::process::id()));
/// let opts = ArenaOptions { sync: SyncMode::Always, ..Default::default() };
/// let arena = std::sync::Arc::new(BlobArena::open(&dir, opts).unwrap());
/// let threads: Vec<_> = (0..4).map(|t| {
///     let a = arena.clone();
///     std::thread::spawn(move || for i in 0..10 { a.put(format!("{t}-{i}").as_bytes(), b"v").unwrap() })
/// }).collect();
/// for t in threads { t.join().unwrap(); }
/// assert!(arena.stats().syncs <= 40 + 1);
/// # drop(arena); std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct GroupCommit {
    state: Mutex<SyncState>,
    cv: Condvar,
    parallel: bool,
    /// Mirrors `state.failed.is_some()`, read by every writer without the lock.
    failed_flag: AtomicBool,
    /// Mirrors `state.synced_wal`, read by every writer without the lock.
    synced_wal_hint: AtomicU64,
}

impl GroupCommit {
    /// Starts with everything up to `seq` durable. `parallel`: fsync the blob
    /// file and the WAL at the same time rather than blob first. Only sound
    /// when recovery checks every replayed blob's checksum (`verify_replay`):
    /// a WAL record made durable before its blob then ends replay instead of
    /// exposing garbage, and neither was acknowledged yet.
    pub fn new(targets: SyncTargets, seq: u64, wal_len: u64, parallel: bool) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(SyncState {
                written: seq,
                written_wal: wal_len,
                synced_wal: wal_len,
                blob_written: seq,
                synced: seq,
                syncing: false,
                unsynced_bytes: 0,
                targets,
                failed: None,
                syncs: 0,
            }),
            cv: Condvar::new(),
            parallel,
            failed_flag: AtomicBool::new(false),
            synced_wal_hint: AtomicU64::new(wal_len),
        }
    }

    /// New sync targets after a checkpoint or compaction made everything up
    /// to `seq` durable; the new segment is `wal_len` bytes, all durable.
    pub fn reset(&self, targets: SyncTargets, seq: u64, wal_len: u64) {
        let mut st = self.state.lock();
        st.targets = targets;
        st.written = st.written.max(seq);
        st.synced = st.synced.max(seq);
        st.written_wal = wal_len;
        st.synced_wal = wal_len;
        self.synced_wal_hint.store(wal_len, Ordering::Release);
        st.unsynced_bytes = 0;
        self.cv.notify_all();
    }

    /// Records that everything up to `seq` is written (not yet durable) and
    /// the WAL is now `wal_len` bytes; returns the bytes written since the
    /// last sync. `blob_dirty`: the records need their blob bytes synced too
    /// (not all inline).
    pub fn mark_written(&self, seq: u64, wal_len: u64, bytes: u64, blob_dirty: bool) -> u64 {
        let mut st = self.state.lock();
        st.written = st.written.max(seq);
        st.written_wal = st.written_wal.max(wal_len);
        if blob_dirty {
            st.blob_written = st.blob_written.max(seq);
        }
        st.unsynced_bytes += bytes;
        st.unsynced_bytes
    }

    /// Highest sequence number made durable.
    pub fn synced(&self) -> u64 {
        self.state.lock().synced
    }

    /// Length of the WAL segment a completed sync made durable.
    pub fn synced_wal(&self) -> u64 {
        self.synced_wal_hint.load(Ordering::Acquire)
    }

    /// Bytes written since the last completed sync.
    pub fn unsynced_bytes(&self) -> u64 {
        self.state.lock().unsynced_bytes
    }

    /// The failure that stopped durability, if any.
    pub fn failure(&self) -> Option<Error> {
        if !self.failed_flag.load(Ordering::Acquire) {
            return None;
        }
        self.state.lock().failed.clone()
    }

    /// Records a failed durability step elsewhere (checkpoint, compaction):
    /// every waiter and every later sync request gets `e`.
    pub fn fail(&self, e: Error) {
        let mut st = self.state.lock();
        if st.failed.is_none() {
            st.failed = Some(e);
        }
        self.failed_flag.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// True if something written is not yet durable.
    pub fn dirty(&self) -> bool {
        let st = self.state.lock();
        st.written > st.synced
    }

    /// Number of fsync rounds done so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Blocks until everything up to `seq` is durable, leading a sync if none is in flight.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.synced >= seq {
                return Ok(());
            }
            if st.syncing {
                self.cv.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let target = st.written;
            let target_wal = st.written_wal;
            let bytes = st.unsynced_bytes;
            let targets = st.targets.clone();
            let sync_blob = st.blob_written > st.synced;
            let parallel = self.parallel;
            let res = MutexGuard::unlocked(&mut st, || {
                let wal_sync = || {
                    targets.io.sync(&targets.wal).map_err(|e| {
                        let err = Error::new(ErrorKind::Io, format!("cannot fsync the WAL: {e}"));
                        match e.raw_os_error() {
                            Some(code) => err.with_errno(code),
                            None => err,
                        }
                    })
                };
                match (sync_blob, parallel) {
                    (false, _) => wal_sync(),
                    (true, false) => targets.blob.sync().and_then(|_| wal_sync()),
                    (true, true) => std::thread::scope(|s| {
                        let blob = s.spawn(|| targets.blob.sync());
                        let wal = wal_sync();
                        let blob = blob.join().unwrap_or_else(|_| {
                            Err(Error::new(ErrorKind::Io, "blob fsync thread panicked"))
                        });
                        blob.and(wal)
                    }),
                }
            });
            st.syncing = false;
            match res {
                Ok(()) => {
                    st.synced = st.synced.max(target);
                    st.synced_wal = st.synced_wal.max(target_wal);
                    self.synced_wal_hint.store(st.synced_wal, Ordering::Release);
                    st.unsynced_bytes = st.unsynced_bytes.saturating_sub(bytes);
                    st.syncs += 1;
                }
                // After a failed fsync the page cache state is unknown (Linux
                // may have dropped the dirty pages and cleared the error):
                // refuse every later ack rather than risk acknowledging lost data.
                Err(e) => {
                    if st.failed.is_none() {
                        st.failed = Some(Error::new(
                            e.kind(),
                            format!("{e}; the arena is read-only until reopened"),
                        ));
                        if let Some(code) = e.errno() {
                            st.failed = st.failed.take().map(|f| f.with_errno(code));
                        }
                    }
                    self.failed_flag.store(true, Ordering::Release);
                }
            }
            self.cv.notify_all();
        }
    }

    /// Makes everything written so far durable.
    pub fn sync_all(&self) -> Result<()> {
        let seq = self.state.lock().written;
        self.wait_durable(seq)
    }
}

/// Background thread of `sync="batch"`: syncs every `interval` while dirty.
pub struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread.
    pub fn start(commit: Arc<GroupCommit>, interval: Duration) -> Flusher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("slabcache-arena-flush".into())
            .spawn(move || {
                let (lock, cv) = &*stop2;
                let mut stopped = lock.lock();
                loop {
                    let deadline = Instant::now() + interval;
                    while !*stopped && Instant::now() < deadline {
                        cv.wait_until(&mut stopped, deadline);
                    }
                    if *stopped {
                        return;
                    }
                    if commit.dirty() {
                        // An error is remembered by the commit state and
                        // surfaces at the next put/flush.
                        let _ = MutexGuard::unlocked(&mut stopped, || commit.sync_all());
                    }
                }
            })
            .expect("spawn flusher thread");
        Flusher {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
