//! What an arena is opened with ([`ArenaOptions`], [`SyncMode`]) and what it
//! reports ([`ArenaStats`]).

use std::str::FromStr;
use std::time::Duration;

use super::io::{self, SharedIo};
use super::recovery::RecoveryReport;
use crate::{Error, Result};

/// When a write is made durable (fsynced) before it is acknowledged.
///
/// | mode | process crash (kill -9) | power loss / kernel crash |
/// |---|---|---|
/// | `Always` | nothing acknowledged is lost | nothing acknowledged is lost |
/// | `Batch` | nothing acknowledged is lost | writes of the last `batch_interval` / `batch_bytes` (since the last sync or `flush()`) may be lost |
/// | `None` | nothing acknowledged is lost | everything since the last `flush()`, checkpoint or compaction may be lost |
///
/// In every mode a recovered arena holds a prefix of the acknowledged writes
/// (in WAL order), never a torn or wrong value.
///
/// ```
/// use slabcache_core::arena::SyncMode;
/// assert_eq!("batch".parse::<SyncMode>().unwrap(), SyncMode::Batch);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync before every acknowledgement; concurrent writers share fsyncs (group commit).
    Always,
    /// fsync every `batch_interval` or `batch_bytes`, and on `flush()`.
    Batch,
    /// No fsync except on `flush()`, checkpoints, compaction and close.
    None,
}

impl FromStr for SyncMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<SyncMode> {
        match s {
            "always" => Ok(SyncMode::Always),
            "batch" => Ok(SyncMode::Batch),
            "none" => Ok(SyncMode::None),
            other => Err(Error::invalid_argument(format!(
                "sync must be \"always\", \"batch\" or \"none\", got {other:?}"
            ))),
        }
    }
}

impl SyncMode {
    /// The mode's name as `FromStr` accepts it.
    ///
    /// ```
    /// use slabcache_core::arena::SyncMode;
    /// for m in [SyncMode::Always, SyncMode::Batch, SyncMode::None] {
    ///     assert_eq!(m.as_str().parse::<SyncMode>().unwrap(), m);
    /// }
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Batch => "batch",
            SyncMode::None => "none",
        }
    }
}

/// Options for [`BlobArena::open`].
///
/// ```
/// use slabcache_core::arena::{ArenaOptions, SyncMode};
/// let o = ArenaOptions { sync: SyncMode::Always, verify_reads: true, ..Default::default() };
/// assert!(o.auto_compact);
/// ```
#[derive(Debug, Clone)]
pub struct ArenaOptions {
    /// Durability mode.
    pub sync: SyncMode,
    /// `Batch`: longest time between syncs.
    pub batch_interval: Duration,
    /// `Batch`: sync inline once this many bytes are unsynced.
    pub batch_bytes: u64,
    /// Write a checkpoint (and start a new WAL segment) once the segment is this long; 0 = never.
    pub checkpoint_bytes: u64,
    /// Compact automatically when dead bytes exceed both thresholds below.
    pub auto_compact: bool,
    /// ... this fraction of all blob data bytes ...
    pub compact_dead_ratio: f64,
    /// ... and this many bytes.
    pub compact_min_dead_bytes: u64,
    /// Check a blob's CRC32C on every `get` (a mismatch is a `Corrupt` error).
    pub verify_reads: bool,
    /// Check the CRC32C of every blob replayed from the WAL on open.
    pub verify_replay: bool,
    /// Create the arena if it does not exist.
    pub create: bool,
    /// `Always`: a put (or `put_many` call) whose values total at most this
    /// many bytes also carries them in its WAL records, so one fsync (of the
    /// WAL) acknowledges it; the blob file is synced lazily (checkpoint,
    /// compaction, close) and recovery rewrites any blob that did not reach
    /// the disk. 0 disables; at most 64 KiB.
    pub inline_max: usize,
    /// The file I/O every write, sync, rename and removal goes through
    /// ([`OsIo`]; tests substitute a fault-injecting one).
    pub io: SharedIo,
}

impl Default for ArenaOptions {
    fn default() -> Self {
        ArenaOptions {
            sync: SyncMode::Batch,
            batch_interval: Duration::from_millis(10),
            batch_bytes: 4 << 20,
            checkpoint_bytes: 64 << 20,
            auto_compact: true,
            compact_dead_ratio: 0.5,
            compact_min_dead_bytes: 64 << 20,
            verify_reads: false,
            verify_replay: true,
            create: true,
            inline_max: 16 << 10,
            io: io::os_io(),
        }
    }
}

/// Counters and sizes of an arena.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArenaStats {
    /// Number of keys.
    pub keys: u64,
    /// Bytes of live values.
    pub live_bytes: u64,
    /// Bytes of blob data in all generation files (live + dead).
    pub data_bytes: u64,
    /// `data_bytes - live_bytes`: what compaction would reclaim.
    pub dead_bytes: u64,
    /// Open generations.
    pub generations: u64,
    /// The generation appends go to.
    pub current_generation: u64,
    /// Live WAL segment number.
    pub wal_segment: u64,
    /// Bytes in the live WAL segment.
    pub wal_bytes: u64,
    /// Next WAL sequence number.
    pub next_seq: u64,
    /// fsync rounds by group commit / batch.
    pub syncs: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// True once a durability step failed: the arena refuses writes until reopened.
    pub poisoned: bool,
    /// The store id bound into every file's header.
    pub store_id: u64,
    /// Compactions since open.
    pub compactions: u64,
    /// What recovery did on open.
    pub recovery: RecoveryReport,
}
