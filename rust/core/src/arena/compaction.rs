//! Generational compaction: copy live blobs into a new generation and switch.
//!
//! Steps (the writer lock is held throughout; readers keep going):
//! 1. make everything written durable (blob file, WAL);
//! 2. copy every live blob, checksum-verified, into `gen-N.blob.tmp`; fsync;
//!    rename to `gen-N.blob`; fsync the directory;
//! 3. write a checkpoint naming generation N and a new WAL segment (the commit
//!    point: before it, recovery uses the old checkpoint and deletes
//!    `gen-N.blob` as an orphan; after it, recovery uses the new one and deletes
//!    the old generations);
//! 4. start the new segment with its checkpoint record and a
//!    `GenerationSwitch { N }` record;
//! 5. publish: add generation N, swap the index, retire the old generations.
//!    A retired generation file is unlinked when its last view is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::blob_file::{encode_header, BlobFile, Mapping, BLOB_HEADER_LEN};
use super::checkpoint::{self, sync_dir, CheckpointHeader};
use super::generation::generation_path;
use super::io::io_error;
use super::wal::{SyncTargets, WalWriter};
use super::wal_record::{encode, BlobLocation, WalRecord};
use super::{BlobArena, Writer};
use crate::{Error, Result};

/// What a compaction did.
///
/// ```
/// use slabcache_core::arena::{ArenaOptions, BlobArena};
/// let dir = std::env::temp_dir().join(format!("sc-compact-doc-{}", std::process::id()));
/// let arena = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
/// arena.put(b"a", &[1u8; 1000]).unwrap();
/// arena.put(b"a", &[2u8; 1000]).unwrap(); // the first 1000 bytes are dead now
/// let report = arena.compact().unwrap();
/// assert_eq!(report.bytes_before - report.bytes_after, 1000);
/// # drop(arena); std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The new generation (unchanged when nothing was done).
    pub generation: u64,
    /// Live blobs copied.
    pub blobs: u64,
    /// Blob data bytes (all generations) before.
    pub bytes_before: u64,
    /// Blob data bytes after (= live bytes).
    pub bytes_after: u64,
    /// Live blobs whose bytes fail their checksum: copied as they are (a
    /// read of them still raises `Corrupt`), never a reason to abort.
    pub bad_blobs: u64,
    /// Wall time in microseconds.
    pub duration_us: u64,
}

fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    io_error(what, path, e)
}

impl BlobArena {
    /// Compaction body; the caller holds the writer lock and has made
    /// everything written durable. Any error leaves the arena to be poisoned
    /// by the caller; before the commit point the new files are removed.
    pub(super) fn compact_locked(&self, w: &mut Writer) -> Result<CompactionReport> {
        let t0 = Instant::now();
        let io_ = &self.opts.io;
        let bytes_before = self.gens.data_bytes();
        let entries = self.index.snapshot();
        let new_gen = self
            .gens
            .all()
            .iter()
            .map(|g| g.generation())
            .max()
            .unwrap_or(0)
            + 1;
        let final_path = generation_path(&self.dir, new_gen);
        let tmp_path = final_path.with_extension("blob.tmp");

        // Step 2: copy (checksums checked; a bad blob is copied as it is).
        let mut bad_blobs = 0u64;
        let staged = (|| -> Result<Vec<(Vec<u8>, BlobLocation)>> {
            let file = io_
                .open(&tmp_path, true, true)
                .map_err(|e| io("cannot create", &tmp_path, e))?;
            let mut chunk: Vec<u8> = Vec::with_capacity(8 << 20);
            chunk.extend_from_slice(&encode_header(new_gen, self.store_id));
            let mut written = 0u64;
            let mut pos = BLOB_HEADER_LEN;
            let mut maps: HashMap<u64, Arc<Mapping>> = HashMap::new();
            let mut relocated = Vec::with_capacity(entries.len());
            for (key, loc) in entries {
                let m = match maps.entry(loc.generation) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.gens.mapping(loc.generation).ok_or_else(|| {
                            Error::corrupt(format!("generation {} is not open", loc.generation))
                        })?)
                    }
                };
                let bytes = &m.bytes()[loc.offset as usize..loc.end() as usize];
                if crc32c::crc32c(bytes) != loc.crc {
                    bad_blobs += 1;
                }
                if chunk.len() + bytes.len() > chunk.capacity() && !chunk.is_empty() {
                    io_.write_at(&file, &[&chunk], written)
                        .map_err(|e| io("cannot write", &tmp_path, e))?;
                    written += chunk.len() as u64;
                    chunk.clear();
                }
                if bytes.len() >= chunk.capacity() {
                    io_.write_at(&file, &[bytes], written)
                        .map_err(|e| io("cannot write", &tmp_path, e))?;
                    written += bytes.len() as u64;
                } else {
                    chunk.extend_from_slice(bytes);
                }
                relocated.push((
                    key,
                    BlobLocation {
                        generation: new_gen,
                        offset: pos,
                        len: loc.len,
                        crc: loc.crc,
                    },
                ));
                pos += loc.len;
            }
            io_.write_at(&file, &[&chunk], written)
                .map_err(|e| io("cannot write", &tmp_path, e))?;
            io_.sync(&file)
                .map_err(|e| io("cannot fsync", &tmp_path, e))?;
            drop(file);
            io_.rename(&tmp_path, &final_path)
                .map_err(|e| io("cannot rename", &tmp_path, e))?;
            sync_dir(io_, &self.dir)?;
            Ok(relocated)
        })();
        let relocated = match staged {
            Ok(r) => r,
            Err(e) => {
                let _ = io_.remove(&tmp_path);
                let _ = io_.remove(&final_path);
                return Err(e);
            }
        };
        let new_file = match BlobFile::open(io_, &final_path, new_gen, self.store_id) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let _ = io_.remove(&final_path);
                return Err(e);
            }
        };

        // Step 3: the commit point. A failure inside it leaves the checkpoint
        // on disk unknown (old or new): both are complete, and the caller
        // stops all writes, so neither loses anything.
        let segment = w.wal.segment() + 1;
        let header = CheckpointHeader {
            store_id: self.store_id,
            segment,
            next_seq: w.next_seq,
            current_gen: new_gen,
        };
        checkpoint::write_entries(io_, &self.dir, header, &relocated)?;

        // Steps 4-5.
        let mut wal = WalWriter::create(io_, &self.dir, segment, w.next_seq, self.store_id)?;
        let mut buf = Vec::new();
        encode(
            &mut buf,
            w.next_seq + 1,
            &WalRecord::GenerationSwitch {
                generation: new_gen,
            },
        );
        wal.append(&buf)?;
        wal.sync()?;
        let old_wal = std::mem::replace(&mut w.wal, wal);
        let _ = io_.remove(old_wal.path());
        w.next_seq += 2;
        w.last_mark = 0;
        let blobs = relocated.len() as u64;
        self.gens.insert(new_file.clone());
        self.index.replace_all(relocated);
        self.gens.retire_all_except(new_gen);
        w.current = new_file.clone();
        self.commit.reset(
            SyncTargets {
                blob: new_file,
                wal: w.wal.file(),
                io: io_.clone(),
            },
            w.next_seq - 1,
            w.wal.len(),
        );
        self.counters
            .compactions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(CompactionReport {
            generation: new_gen,
            blobs,
            bytes_before,
            bytes_after: self.gens.data_bytes(),
            bad_blobs,
            duration_us: t0.elapsed().as_micros() as u64,
        })
    }
}
