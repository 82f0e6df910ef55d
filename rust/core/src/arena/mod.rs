//! WAL-backed, crash-safe, append-only mmap blob arena.
//!
//! An arena is a directory:
//!
//! | file | what |
//! |---|---|
//! | `LOCK` | advisory `flock`: one writer process at a time (`lock`) |
//! | `gen-N.blob` | append-only blob data of generation N, read through mmap (`blob_file`, `generation`) |
//! | `wal-N.log` | the live WAL segment: put / delete / checkpoint / generation-switch records (`wal_record`, `wal`) |
//! | `checkpoint` | index snapshot naming the segment replay starts from (`checkpoint`) |
//!
//! A put writes the blob bytes first, then the WAL record; it is acknowledged
//! once both are durable under the [`SyncMode`]. Opening replays the WAL from
//! the last checkpoint (`recovery`). Reads are zero-copy [`BlobView`]s.
//! [`BlobArena::compact`] copies live blobs into a new generation
//! (`compaction`); [`BlobArena::verify`] re-checks every checksum
//! (`verify.rs`; options and stats are in `options.rs`), and every
//! generation header is judged by one function,
//! [`format::check_header`].
//!
//! ```
//! use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
//! let dir = std::env::temp_dir().join(format!("sc-arena-doc-{}", std::process::id()));
//! {
//!     let arena = BlobArena::open(&dir, ArenaOptions { sync: SyncMode::Batch, ..Default::default() }).unwrap();
//!     arena.put(b"key", b"value").unwrap();
//!     assert_eq!(&*arena.get(b"key").unwrap().unwrap(), b"value");
//!     arena.close().unwrap();
//! }
//! let arena = BlobArena::open(&dir, ArenaOptions::default()).unwrap(); // recovers
//! assert_eq!(arena.len(), 1);
//! # drop(arena); std::fs::remove_dir_all(&dir).unwrap();
//! ```

// The files below are internals; the public surface is what this module
// re-exports (`pub use`) plus the on-disk [`format`].
pub(crate) mod blob_file;
pub(crate) mod checkpoint;
pub(crate) mod compaction;
pub mod format;
pub(crate) mod generation;
pub(crate) mod index;
pub(crate) mod io;
pub(crate) mod lock;
pub(crate) mod options;
pub(crate) mod recovery;
pub(crate) mod repair;
mod verify;
pub(crate) mod view;
pub(crate) mod wal;
pub(crate) mod wal_record;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use compaction::CompactionReport;
pub use index::KeyIndex;
pub use io::{os_io, write_all_at, ArenaIo, OsIo, SharedIo};
pub use options::{ArenaOptions, ArenaStats, SyncMode};
pub use recovery::RecoveryReport;
pub use repair::{repair, RepairReport};
pub use verify::VerifyReport;
pub use view::BlobView;
pub use wal_record::{BlobLocation, MAX_KEY_LEN};

use blob_file::BlobFile;
use checkpoint::CheckpointHeader;
use generation::GenerationTable;
use lock::{fork_epoch, DirLock};
use wal::{Flusher, GroupCommit, SyncTargets, WalWriter};
use wal_record::{encode, WalRecord};

use crate::{Error, ErrorKind, Result};

#[derive(Default)]
struct Counters {
    checkpoints: AtomicU64,
    compactions: AtomicU64,
}

/// State behind the writer lock.
pub(crate) struct Writer {
    lock: Option<DirLock>,
    current: Arc<BlobFile>,
    wal: WalWriter,
    next_seq: u64,
    buf: Vec<u8>,
    poisoned: Option<Error>,
    /// The durable WAL length the last sync mark written claims.
    last_mark: u64,
}

impl Writer {
    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(e) => Err(Error::new(
                e.kind(),
                format!("arena stopped accepting writes after an I/O failure ({e}); reopen it"),
            )),
            None => Ok(()),
        }
    }
}

/// An `always`-mode write waiting for its sync: applied to the index (made
/// visible) only once durable, so a write that raises is never seen.
struct PendingWrite {
    seq: u64,
    ops: Vec<(Vec<u8>, Option<BlobLocation>)>,
}

/// A crash-safe, append-only blob store in one directory. See the [module docs](self).
///
/// Thread-safe: many threads may read and write; writes are serialised by a
/// writer lock, reads take no writer lock.
pub struct BlobArena {
    dir: PathBuf,
    opts: ArenaOptions,
    index: KeyIndex,
    gens: GenerationTable,
    writer: Mutex<Writer>,
    commit: Arc<GroupCommit>,
    flusher: Mutex<Option<Flusher>>,
    pending: Mutex<VecDeque<PendingWrite>>,
    store_id: u64,
    fork_epoch: u64,
    closed: AtomicBool,
    live_bytes: AtomicU64,
    counters: Counters,
    recovery: RecoveryReport,
}

fn closed_err() -> Error {
    Error::new(ErrorKind::Closed, "the arena is closed")
}

fn forked_err() -> Error {
    Error::new(
        ErrorKind::Closed,
        "this arena handle was inherited through fork(): it refuses every call in the child \
         (the parent still owns the arena and its lock); open the arena again in the child \
         once the parent has closed it",
    )
}

impl BlobArena {
    /// Opens (or creates) the arena in directory `path`, recovering it.
    ///
    /// Errors: [`ErrorKind::Locked`] if another writer has it open,
    /// [`ErrorKind::Corrupt`] for damaged files recovery cannot cut away.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-open-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions { sync: SyncMode::Always, ..Default::default() })?;
    /// arena.put(b"k", b"v")?;
    /// // A second writer is refused while the first holds the directory.
    /// let again = BlobArena::open(&dir, ArenaOptions::default());
    /// assert_eq!(again.err().unwrap().kind(), slabcache_core::ErrorKind::Locked);
    /// arena.close()?;
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?; // recovers
    /// assert_eq!(arena.len(), 1);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, opts: ArenaOptions) -> Result<BlobArena> {
        let dir = path.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(Error::invalid_argument(
                "the arena path is empty (give a directory)",
            ));
        }
        if !(opts.compact_dead_ratio.is_finite() && (0.0..=1.0).contains(&opts.compact_dead_ratio))
        {
            return Err(Error::invalid_argument(
                "compact_dead_ratio must be within [0, 1]",
            ));
        }
        if opts.inline_max > wal_record::MAX_INLINE_VALUE {
            return Err(Error::invalid_argument(format!(
                "inline_max must be at most {} bytes",
                wal_record::MAX_INLINE_VALUE
            )));
        }
        if opts.sync == SyncMode::Batch && opts.batch_interval.is_zero() {
            return Err(Error::invalid_argument("batch_interval must be positive"));
        }
        let epoch = fork_epoch();
        let r = recovery::recover(
            &dir,
            recovery::RecoverOptions {
                create: opts.create,
                verify_replay: opts.verify_replay,
                io: &opts.io,
            },
        )?;
        let commit = Arc::new(GroupCommit::new(
            SyncTargets {
                blob: r.current.clone(),
                wal: r.wal.file(),
                io: opts.io.clone(),
            },
            r.next_seq - 1,
            r.wal.len(),
            opts.verify_replay,
        ));
        let flusher = (opts.sync == SyncMode::Batch)
            .then(|| Flusher::start(commit.clone(), opts.batch_interval));
        Ok(BlobArena {
            dir,
            index: r.index,
            gens: r.gens,
            writer: Mutex::new(Writer {
                lock: Some(r.lock),
                current: r.current,
                wal: r.wal,
                next_seq: r.next_seq,
                buf: Vec::new(),
                poisoned: None,
                last_mark: 0,
            }),
            commit,
            flusher: Mutex::new(flusher),
            pending: Mutex::new(VecDeque::new()),
            store_id: r.store_id,
            fork_epoch: epoch,
            closed: AtomicBool::new(false),
            live_bytes: AtomicU64::new(r.live_bytes),
            counters: Counters::default(),
            recovery: r.report,
            opts,
        })
    }

    fn check_open(&self) -> Result<()> {
        if fork_epoch() != self.fork_epoch {
            return Err(forked_err());
        }
        if self.closed.load(Ordering::Acquire) {
            Err(closed_err())
        } else {
            Ok(())
        }
    }

    /// `Ok` while the handle is usable: not closed, not inherited through `fork()`.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-ensure-usable-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// assert!(arena.ensure_usable().is_ok());
    /// arena.close()?;
    /// assert_eq!(arena.ensure_usable().unwrap_err().kind(), slabcache_core::ErrorKind::Closed);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure_usable(&self) -> Result<()> {
        self.check_open()
    }

    fn lock_writer(&self) -> Result<parking_lot::MutexGuard<'_, Writer>> {
        self.check_open()?;
        let w = self.writer.lock();
        self.check_open()?;
        w.check_poisoned()?;
        if let Some(e) = self.commit.failure() {
            return Err(Error::new(
                e.kind(),
                format!("arena stopped accepting writes after an I/O failure ({e}); reopen it"),
            ));
        }
        Ok(w)
    }

    /// After a failed durability step: no later write is accepted, no later
    /// sync acknowledges anything, until the arena is reopened.
    fn poison(&self, w: &mut Writer, e: &Error) {
        if w.poisoned.is_none() {
            w.poisoned = Some(e.clone());
        }
        self.commit.fail(e.clone());
    }

    /// True once a durability step failed (the arena is read-only until reopened).
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-is-poisoned-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"v")?;
    /// assert!(!arena.is_poisoned()); // only a failed fsync or write poisons it
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.commit.failure().is_some()
    }

    /// Applies `always`-mode writes that are durable now, in WAL order.
    fn apply_pending(&self) {
        let synced = self.commit.synced();
        let mut q = self.pending.lock();
        while q.front().is_some_and(|p| p.seq <= synced) {
            let p = q.pop_front().expect("front checked");
            self.apply(p.ops);
        }
    }

    fn apply(&self, ops: Vec<(Vec<u8>, Option<BlobLocation>)>) {
        if ops.iter().all(|(_, l)| l.is_some()) {
            let added: u64 = ops.iter().map(|(_, l)| l.map_or(0, |l| l.len)).sum();
            let replaced = self
                .index
                .insert_many(ops.into_iter().map(|(k, l)| (k, l.expect("all puts"))));
            self.live_bytes.fetch_add(added, Ordering::AcqRel);
            self.live_bytes.fetch_sub(replaced, Ordering::AcqRel);
            return;
        }
        for (k, l) in ops {
            match l {
                Some(loc) => {
                    self.live_bytes.fetch_add(loc.len, Ordering::AcqRel);
                    if let Some(old) = self.index.insert(k, loc) {
                        self.live_bytes.fetch_sub(old.len, Ordering::AcqRel);
                    }
                }
                None => {
                    if let Some(old) = self.index.remove(&k) {
                        self.live_bytes.fetch_sub(old.len, Ordering::AcqRel);
                    }
                }
            }
        }
    }

    /// Makes everything written durable and visible; writer lock held.
    fn settle(&self, w: &mut Writer) -> Result<()> {
        self.commit.sync_all()?;
        self.apply_pending();
        w.current.sync()
    }

    /// A sync mark in front of the next records when a sync completed since the last one.
    fn push_sync_mark(&self, w: &mut Writer, buf: &mut Vec<u8>, seq: &mut u64) {
        let synced = self.commit.synced_wal();
        if synced > w.last_mark {
            encode(buf, *seq, &WalRecord::SyncMark { synced });
            *seq += 1;
            w.last_mark = synced;
        }
    }

    /// The arena directory.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-path-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// assert_eq!(arena.path(), dir.as_path());
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// The options it was opened with.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-options-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions { sync: SyncMode::None, ..Default::default() })?;
    /// assert_eq!(arena.options().sync, SyncMode::None);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &ArenaOptions {
        &self.opts
    }

    /// Stores `value` under `key` (replacing any previous value).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("sc-put-doc-{}", std::process::id()));
    /// # let arena = slabcache_core::arena::BlobArena::open(&dir, Default::default()).unwrap();
    /// arena.put(b"k", b"v1").unwrap();
    /// arena.put(b"k", b"v2").unwrap();
    /// assert_eq!(&*arena.get(b"k").unwrap().unwrap(), b"v2");
    /// # drop(arena); std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_many(&[key], &[value])
    }

    /// Stores a batch: one blob write, one WAL write, at most one sync.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-put-many-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put_many(&[b"a", b"b"], &[b"1", b"22"])?;
    /// assert_eq!(&*arena.get(b"b")?.unwrap(), b"22");
    /// // Keys and values must pair up; nothing is stored otherwise.
    /// assert!(arena.put_many(&[b"c"], &[]).is_err());
    /// assert_eq!(arena.len(), 2);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_many(&self, keys: &[&[u8]], values: &[&[u8]]) -> Result<()> {
        self.put_many_impl(keys, values, true)
    }

    /// [`put_many`](Self::put_many) for values another thread may modify
    /// while the call runs (a Python `bytearray` with the GIL released): each
    /// value's checksum is computed from the bytes that reached the file, so
    /// what is stored is always self-consistent.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-put-many-unstable-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// let shared = vec![7u8; 1000]; // think: a buffer another thread may write to
    /// arena.put_many_unstable(&[b"k"], &[&shared])?;
    /// assert_eq!(arena.get(b"k")?.unwrap().len(), 1000);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_many_unstable(&self, keys: &[&[u8]], values: &[&[u8]]) -> Result<()> {
        self.put_many_impl(keys, values, false)
    }

    fn put_many_impl(&self, keys: &[&[u8]], values: &[&[u8]], stable: bool) -> Result<()> {
        self.check_open()?;
        if keys.len() != values.len() {
            return Err(Error::invalid_argument(format!(
                "{} keys but {} values",
                keys.len(),
                values.len()
            )));
        }
        if let Some(k) = keys.iter().find(|k| k.len() > MAX_KEY_LEN) {
            return Err(Error::invalid_argument(format!(
                "key of {} bytes is longer than the maximum {MAX_KEY_LEN}",
                k.len()
            )));
        }
        if keys.is_empty() {
            return Ok(());
        }
        self.sync_if_batch_full()?;
        let mut crcs: Vec<u32> = if stable {
            values.iter().map(|v| crc32c::crc32c(v)).collect()
        } else {
            Vec::new()
        };
        let last_seq = {
            let mut guard = self.lock_writer()?;
            let w = &mut *guard;
            self.maintain(w)?;
            let generation = w.current.generation();
            let base = w.current.append(values)?;
            let mapping = w.current.mapping();
            if !stable {
                let mut at = base as usize;
                for v in values {
                    crcs.push(crc32c::crc32c(&mapping.bytes()[at..at + v.len()]));
                    at += v.len();
                }
            }
            let mut buf = std::mem::take(&mut w.buf);
            buf.clear();
            let mut offset = base;
            let mut seq = w.next_seq;
            self.push_sync_mark(w, &mut buf, &mut seq);
            if keys.len() > 1 {
                let records = keys.len() as u64;
                encode(&mut buf, seq, &WalRecord::Batch { records });
                seq += 1;
            }
            let mut ops = Vec::with_capacity(keys.len());
            let mut blob_dirty = false;
            // Inline only small calls: a big batch would write its bytes twice,
            // which costs more than the blob fsync it saves.
            let batch_bytes: usize = values.iter().map(|v| v.len()).sum();
            let inline_max =
                if self.opts.sync == SyncMode::Always && batch_bytes <= self.opts.inline_max {
                    self.opts.inline_max
                } else {
                    0
                };
            for ((key, value), crc) in keys.iter().zip(values).zip(&crcs) {
                let loc = BlobLocation {
                    generation,
                    offset,
                    len: value.len() as u64,
                    crc: *crc,
                };
                if inline_max >= value.len() {
                    // The inline copy comes from the file, so it matches the blob.
                    let written = &mapping.bytes()[offset as usize..loc.end() as usize];
                    encode(
                        &mut buf,
                        seq,
                        &WalRecord::PutInline {
                            key,
                            loc,
                            value: if stable { value } else { written },
                        },
                    );
                } else {
                    encode(&mut buf, seq, &WalRecord::Put { key, loc });
                    blob_dirty = true;
                }
                mapping.mark_verified(offset, loc.len);
                ops.push((key.to_vec(), Some(loc)));
                offset += value.len() as u64;
                seq += 1;
            }
            let wal_bytes = buf.len() as u64;
            let res = w.wal.try_append(&buf);
            w.buf = buf;
            if let Err(e) = res {
                if !e.rolled_back {
                    self.poison(w, &e.error);
                }
                return Err(e.error);
            }
            w.next_seq = seq;
            let added: u64 = ops.iter().map(|(_, l)| l.map_or(0, |l| l.len)).sum();
            self.commit
                .mark_written(seq - 1, w.wal.len(), added + wal_bytes, blob_dirty);
            if self.opts.sync == SyncMode::Always {
                self.pending
                    .lock()
                    .push_back(PendingWrite { seq: seq - 1, ops });
            } else {
                self.apply(ops);
            }
            seq - 1
        };
        self.after_write(last_seq)
    }

    /// Deletes `key`; returns whether it was present.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-delete-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"v")?;
    /// assert!(arena.delete(b"k")?);
    /// assert!(!arena.delete(b"k")?); // already gone
    /// assert!(arena.get(b"k")?.is_none());
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.check_open()?;
        self.sync_if_batch_full()?;
        let last_seq = {
            let mut guard = self.lock_writer()?;
            let w = &mut *guard;
            self.maintain(w)?;
            if self.index.get(key).is_none() {
                return Ok(false);
            }
            let mut buf = std::mem::take(&mut w.buf);
            buf.clear();
            let mut seq = w.next_seq;
            self.push_sync_mark(w, &mut buf, &mut seq);
            encode(&mut buf, seq, &WalRecord::Delete { key });
            let res = w.wal.try_append(&buf);
            let n = buf.len() as u64;
            w.buf = buf;
            if let Err(e) = res {
                if !e.rolled_back {
                    self.poison(w, &e.error);
                }
                return Err(e.error);
            }
            w.next_seq = seq + 1;
            self.commit.mark_written(seq, w.wal.len(), n, false);
            let ops = vec![(key.to_vec(), None)];
            if self.opts.sync == SyncMode::Always {
                self.pending.lock().push_back(PendingWrite { seq, ops });
            } else {
                self.apply(ops);
            }
            seq
        };
        self.after_write(last_seq)?;
        Ok(true)
    }

    /// `batch`: once `batch_bytes` are unsynced, the next writer syncs them
    /// before it writes (so a sync failure fails a write that changed nothing).
    fn sync_if_batch_full(&self) -> Result<()> {
        if self.opts.sync == SyncMode::Batch
            && self.commit.unsynced_bytes() >= self.opts.batch_bytes
        {
            self.commit.sync_all()?;
        }
        Ok(())
    }

    fn after_write(&self, seq: u64) -> Result<()> {
        if self.opts.sync == SyncMode::Always {
            self.commit.wait_durable(seq)?;
            self.apply_pending();
        }
        Ok(())
    }

    /// Periodic checkpoint and automatic compaction, before a write; writer
    /// lock held. A failure poisons the arena and fails the write, which then
    /// changed nothing.
    fn maintain(&self, w: &mut Writer) -> Result<()> {
        if self.opts.auto_compact {
            let data = self.gens.data_bytes();
            let dead = data.saturating_sub(self.live_bytes.load(Ordering::Acquire));
            if dead >= self.opts.compact_min_dead_bytes.max(1)
                && dead as f64 >= self.opts.compact_dead_ratio * data as f64
            {
                self.compact_guarded(w)?;
                return Ok(());
            }
        }
        if self.opts.checkpoint_bytes > 0 && w.wal.len() >= self.opts.checkpoint_bytes {
            self.checkpoint_guarded(w)?;
        }
        Ok(())
    }

    /// The value of `key` as a zero-copy view, or `None`.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-get-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"value")?;
    /// let view = arena.get(b"k")?.unwrap(); // zero-copy: points into the mapping
    /// assert_eq!(&*view, b"value");
    /// assert!(arena.get(b"missing")?.is_none());
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, key: &[u8]) -> Result<Option<BlobView>> {
        self.check_open()?;
        loop {
            let Some(loc) = self.index.get(key) else {
                return Ok(None);
            };
            // The generation may have been retired by a compaction between
            // the two lookups; the index then already points at the new one.
            let Some(mapping) = self.gens.mapping(loc.generation) else {
                continue;
            };
            if loc.end() > mapping.len() as u64 {
                return Err(Error::corrupt(format!(
                    "index entry of {:?} points past its mapping",
                    String::from_utf8_lossy(key)
                )));
            }
            let ok = if self.opts.verify_reads {
                crc32c::crc32c(&mapping.bytes()[loc.offset as usize..loc.end() as usize]) == loc.crc
            } else {
                mapping.check_blob(loc.offset, loc.len, loc.crc)
            };
            if !ok {
                return Err(Error::corrupt(format!(
                    "blob of key {:?} fails its checksum",
                    String::from_utf8_lossy(key)
                )));
            }
            return Ok(Some(BlobView::new(
                mapping,
                loc.offset as usize,
                loc.len as usize,
            )));
        }
    }

    /// `get` for many keys.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-get-many-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"a", b"1")?;
    /// let got = arena.get_many(&[b"a", b"z"])?;
    /// assert_eq!(got[0].as_deref(), Some(&b"1"[..]));
    /// assert!(got[1].is_none());
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<BlobView>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// True if `key` is present.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-contains-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"v")?;
    /// assert!(arena.contains(b"k")?);
    /// assert!(!arena.contains(b"other")?);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.check_open()?;
        Ok(self.index.contains(key))
    }

    /// Number of keys.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-len-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put_many(&[b"a", b"b"], &[b"1", b"2"])?;
    /// arena.put(b"a", b"3")?; // a replacement, not a new key
    /// assert_eq!(arena.len(), 2);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.index.len()
    }
    /// True when the arena holds no keys.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-is-empty-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// assert!(arena.is_empty());
    /// arena.put(b"k", b"v")?;
    /// assert!(!arena.is_empty());
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Up to `limit` keys in `[start, end)`, in byte order.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-keys-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put_many(&[b"c", b"a", b"b"], &[b"3", b"1", b"2"])?;
    /// assert_eq!(arena.keys(None, None, 10)?, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    /// assert_eq!(arena.keys(Some(b"b"), None, 1)?, vec![b"b".to_vec()]);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keys(
        &self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        self.check_open()?;
        Ok(self.index.keys(start, end, limit))
    }

    /// Makes every write so far durable.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-flush-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions { sync: SyncMode::None, ..Default::default() })?;
    /// arena.put(b"k", b"v")?;
    /// arena.flush()?; // durable now, even with SyncMode::None
    /// assert!(arena.stats().syncs >= 1);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.commit.sync_all()?;
        self.apply_pending();
        Ok(())
    }

    /// Writes a checkpoint now (bounds the next recovery's replay).
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-checkpoint-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"v")?;
    /// let segment = arena.stats().wal_segment;
    /// arena.checkpoint()?;
    /// assert_eq!(arena.stats().wal_segment, segment + 1); // replay starts after it
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn checkpoint(&self) -> Result<()> {
        let mut w = self.lock_writer()?;
        self.checkpoint_guarded(&mut w)
    }

    fn checkpoint_guarded(&self, w: &mut Writer) -> Result<()> {
        let res = self.checkpoint_locked(w);
        if let Err(e) = &res {
            self.poison(w, e);
        }
        res
    }

    fn compact_guarded(&self, w: &mut Writer) -> Result<CompactionReport> {
        let res = self.settle(w).and_then(|_| self.compact_locked(w));
        if let Err(e) = &res {
            self.poison(w, e);
        }
        res
    }

    fn checkpoint_locked(&self, w: &mut Writer) -> Result<()> {
        self.settle(w)?;
        let segment = w.wal.segment() + 1;
        let header = CheckpointHeader {
            store_id: self.store_id,
            segment,
            next_seq: w.next_seq,
            current_gen: w.current.generation(),
        };
        checkpoint::write(&self.opts.io, &self.dir, header, &self.index)?;
        let wal = WalWriter::create(&self.opts.io, &self.dir, segment, w.next_seq, self.store_id)?;
        let old = std::mem::replace(&mut w.wal, wal);
        let _ = self.opts.io.remove(old.path());
        w.next_seq += 1;
        w.last_mark = 0;
        self.commit.reset(
            SyncTargets {
                blob: w.current.clone(),
                wal: w.wal.file(),
                io: self.opts.io.clone(),
            },
            w.next_seq - 1,
            w.wal.len(),
        );
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Copies live blobs into a new generation and retires the old ones.
    /// A blob that fails its checksum is copied as it is (reads of it still
    /// raise) and counted in [`CompactionReport::bad_blobs`].
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-compact-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", &[1u8; 4096])?;
    /// arena.put(b"k", b"small")?; // the 4 KiB value is dead now
    /// let report = arena.compact()?;
    /// assert_eq!(report.blobs, 1);
    /// assert!(report.bytes_after < report.bytes_before);
    /// assert_eq!(&*arena.get(b"k")?.unwrap(), b"small");
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        let mut w = self.lock_writer()?;
        self.compact_guarded(&mut w)
    }

    /// Sizes and counters.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-stats-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"12345")?;
    /// let s = arena.stats();
    /// assert_eq!((s.keys, s.live_bytes), (1, 5));
    /// assert!(!s.poisoned);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ArenaStats {
        let w = self.writer.lock();
        let live = self.live_bytes.load(Ordering::Acquire);
        let data = self.gens.data_bytes();
        ArenaStats {
            keys: self.index.len() as u64,
            live_bytes: live,
            data_bytes: data,
            dead_bytes: data.saturating_sub(live),
            generations: self.gens.all().len() as u64,
            current_generation: w.current.generation(),
            wal_segment: w.wal.segment(),
            wal_bytes: w.wal.len(),
            next_seq: w.next_seq,
            syncs: self.commit.syncs(),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
            poisoned: self.is_poisoned(),
            store_id: self.store_id,
            compactions: self.counters.compactions.load(Ordering::Relaxed),
            recovery: self.recovery.clone(),
        }
    }

    /// Flushes, stops the background flusher and releases the lock. Later
    /// calls fail with [`ErrorKind::Closed`]; views stay valid. Idempotent.
    /// A clean close ends the WAL with a sync mark, so any later damage to
    /// it is reported as corruption rather than cut as a torn tail.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-close-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put(b"k", b"v")?;
    /// let view = arena.get(b"k")?.unwrap();
    /// arena.close()?;
    /// arena.close()?; // idempotent
    /// assert_eq!(&*view, b"v"); // views outlive the handle
    /// assert_eq!(arena.get(b"k").unwrap_err().kind(), slabcache_core::ErrorKind::Closed);
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) -> Result<()> {
        if fork_epoch() != self.fork_epoch {
            return Err(forked_err());
        }
        let mut guard = self.writer.lock();
        let w = &mut *guard;
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        drop(self.flusher.lock().take());
        let res = if w.poisoned.is_none() && self.commit.failure().is_none() {
            self.settle(w).and_then(|_| {
                let mut buf = Vec::new();
                encode(
                    &mut buf,
                    w.next_seq,
                    &WalRecord::SyncMark {
                        synced: w.wal.len(),
                    },
                );
                w.wal.append(&buf)?;
                w.next_seq += 1;
                w.wal.sync()
            })
        } else {
            Ok(())
        };
        w.lock = None;
        res
    }

    /// True once closed.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-is-closed-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// assert!(!arena.is_closed());
    /// arena.close()?;
    /// assert!(arena.is_closed());
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for BlobArena {
    fn drop(&mut self) {
        if fork_epoch() != self.fork_epoch {
            // A forked child: the flusher thread does not exist here (joining
            // it would hang) and the lock belongs to the parent.
            if let Some(f) = self.flusher.get_mut().take() {
                std::mem::forget(f);
            }
            if let Some(l) = self.writer.get_mut().lock.take() {
                std::mem::forget(l);
            }
            return;
        }
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sc-arena-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn put_get_delete_reopen() {
        let dir = tmp("basic");
        {
            let a = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
            a.put(b"a", b"1").unwrap();
            a.put_many(&[b"b", b"c"], &[b"22", b"333"]).unwrap();
            assert!(a.delete(b"a").unwrap());
            assert!(!a.delete(b"zz").unwrap());
            assert_eq!(
                a.keys(None, None, 10).unwrap(),
                vec![b"b".to_vec(), b"c".to_vec()]
            );
        }
        let a = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(&*a.get(b"c").unwrap().unwrap(), b"333");
        assert!(a.get(b"a").unwrap().is_none());
        a.verify().unwrap();
        drop(a);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_open_is_locked_and_closed_errors() {
        let dir = tmp("lock");
        let a = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
        let err = BlobArena::open(&dir, ArenaOptions::default())
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Locked);
        a.close().unwrap();
        assert_eq!(a.put(b"k", b"v").unwrap_err().kind(), ErrorKind::Closed);
        let b = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
        drop(b);
        drop(a);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
