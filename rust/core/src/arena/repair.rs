//! Offline salvage of a damaged arena: [`repair`] (its doc says how).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::blob_file::{encode_header, read_header, BlobFile, BLOB_HEADER_LEN};
use super::checkpoint::{self, sync_dir, CheckpointHeader, CHECKPOINT_FILE};
use super::generation::{generation_path, parse_generation_name};
use super::io::{io_error, SharedIo};
use super::lock::DirLock;
use super::recovery::{list, new_store_id};
use super::wal::{parse_segment_name, WalWriter};
use super::wal_record::{decode, BlobLocation, Decoded, WalRecord, RECORD_HEADER_LEN};
use crate::{Error, Result};

/// What [`repair`] kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Keys in the repaired arena.
    pub kept_keys: u64,
    /// Checkpoint entries that checked out.
    pub checkpoint_entries: u64,
    /// WAL records that checked out and were applied.
    pub wal_records: u64,
    /// Bytes of WAL that were not part of any valid record.
    pub damaged_wal_bytes: u64,
    /// What was dropped and why, one line each.
    pub dropped: Vec<String>,
    /// The generation holding every kept value.
    pub generation: u64,
    /// Where the old files were kept (hard links).
    pub backup_dir: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    io_error(what, path, e)
}

enum Source {
    At(BlobLocation),
    Bytes(Vec<u8>),
}

fn key_str(k: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(k))
}

/// Salvages every record of the arena in `dir` that checks out into a new
/// generation. Needs the writer lock (the arena must not be open).
///
/// Opening refuses an arena whose synced data is damaged (it changes nothing
/// and names the offset). `repair` then keeps every record that still checks
/// out, on both sides of the damage: checkpoint entries whose blob matches its
/// CRC32C, and every WAL record found by scanning each segment byte by byte
/// (valid framing and checksum; a put's blob must match its CRC, a put-inline
/// carries its value). It applies them in sequence order, writes the
/// surviving values into a fresh generation with a new checkpoint and WAL
/// segment, and reports what it dropped. The old files are kept, hard-linked
/// into `salvaged-<unix time>/` inside the arena directory, so nothing is
/// destroyed; delete that directory once satisfied.
///
/// ```
/// use slabcache_core::arena::{repair, ArenaOptions, BlobArena};
/// let dir = std::env::temp_dir().join(format!("sc-repair-doc-{}", std::process::id()));
/// {
///     let a = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
///     a.put(b"k", b"v").unwrap();
/// }
/// let report = repair(&dir, &slabcache_core::arena::os_io()).unwrap();
/// assert_eq!(report.kept_keys, 1);
/// let a = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
/// assert_eq!(&*a.get(b"k").unwrap().unwrap(), b"v");
/// # drop(a); std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn repair(dir: &Path, io_: &SharedIo) -> Result<RepairReport> {
    if !dir.is_dir() {
        return Err(Error::not_found(format!("no arena at {}", dir.display())));
    }
    let _lock = DirLock::acquire(dir)?;
    let mut report = RepairReport::default();
    let ck = match checkpoint::read(dir) {
        Ok(c) => c,
        Err(e) => {
            report
                .dropped
                .push(format!("checkpoint: {e} (its entries are lost)"));
            None
        }
    };
    let names = list(dir)?;
    // The store id: the checkpoint's, else the one most generation headers carry.
    let store_id = match &ck {
        Some(c) => c.header.store_id,
        None => {
            let mut votes: HashMap<u64, usize> = HashMap::new();
            for n in &names {
                if parse_generation_name(n).is_some() {
                    if let Ok(b) = std::fs::read(dir.join(n)) {
                        if let Ok(h) = read_header(&b) {
                            *votes.entry(h.store_id).or_default() += 1;
                        }
                    }
                }
            }
            votes
                .into_iter()
                .max_by_key(|&(_, n)| n)
                .map(|(id, _)| id)
                .unwrap_or_else(new_store_id)
        }
    };
    let mut gens: HashMap<u64, BlobFile> = HashMap::new();
    let mut max_gen = 0;
    for n in &names {
        if let Some(g) = parse_generation_name(n) {
            max_gen = max_gen.max(g);
            match BlobFile::open(io_, &dir.join(n), g, store_id) {
                Ok(f) => {
                    gens.insert(g, f);
                }
                Err(e) => report.dropped.push(format!("generation {g}: {e}")),
            }
        }
    }
    let blob_ok = |loc: &BlobLocation| -> bool {
        gens.get(&loc.generation).is_some_and(|g| {
            loc.offset >= BLOB_HEADER_LEN
                && loc.end() <= g.end()
                && crc32c::crc32c(&g.mapping().bytes()[loc.offset as usize..loc.end() as usize])
                    == loc.crc
        })
    };
    let mut state: BTreeMap<Vec<u8>, Source> = BTreeMap::new();
    let (first_segment, first_seq) = match &ck {
        Some(c) => (c.header.segment, c.header.next_seq),
        None => (0, 0),
    };
    if let Some(c) = &ck {
        for (k, loc) in &c.entries {
            if blob_ok(loc) {
                state.insert(k.clone(), Source::At(*loc));
                report.checkpoint_entries += 1;
            } else {
                report.dropped.push(format!(
                    "{}: checkpointed blob (generation {}, offset {}) fails its checksum",
                    key_str(k),
                    loc.generation,
                    loc.offset
                ));
            }
        }
    }
    // Every valid WAL record of the segments replay would read, by sequence number.
    let mut max_segment = first_segment;
    let mut records: Vec<(u64, Vec<u8>, Option<Source>)> = Vec::new();
    let mut max_seq = first_seq;
    for n in &names {
        let Some(sn) = parse_segment_name(n) else {
            continue;
        };
        max_segment = max_segment.max(sn);
        if sn < first_segment {
            continue;
        }
        let path = dir.join(n);
        let bytes = std::fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
        let mut at = 0usize;
        let mut bad_from: Option<usize> = None;
        let note_bad = |from: &mut Option<usize>, to: usize, dropped: &mut Vec<String>| {
            if let Some(a) = from.take() {
                dropped.push(format!(
                    "{n}: bytes {a}..{to} are not a valid record (whatever they held is lost)"
                ));
            }
        };
        while at < bytes.len() {
            let rec = if bytes.len() - at >= RECORD_HEADER_LEN {
                match decode(&bytes[at..]) {
                    Decoded::Record { seq, record, len } => Some((seq, record, len)),
                    _ => None,
                }
            } else {
                None
            };
            let Some((seq, record, len)) = rec else {
                report.damaged_wal_bytes += 1;
                bad_from.get_or_insert(at);
                at += 1;
                continue;
            };
            note_bad(&mut bad_from, at, &mut report.dropped);
            at += len;
            max_seq = max_seq.max(seq);
            if seq < first_seq {
                continue;
            }
            match record {
                WalRecord::Put { key, loc } => {
                    if blob_ok(&loc) {
                        records.push((seq, key.to_vec(), Some(Source::At(loc))));
                    } else {
                        report.dropped.push(format!(
                            "{}: put #{seq} whose blob fails its checksum",
                            key_str(key)
                        ));
                    }
                }
                WalRecord::PutInline { key, value, .. } => {
                    records.push((seq, key.to_vec(), Some(Source::Bytes(value.to_vec()))));
                }
                WalRecord::Delete { key } => records.push((seq, key.to_vec(), None)),
                WalRecord::Checkpoint { .. }
                | WalRecord::SyncMark { .. }
                | WalRecord::Batch { .. }
                | WalRecord::GenerationSwitch { .. } => {}
            }
        }
        note_bad(&mut bad_from, bytes.len(), &mut report.dropped);
    }
    records.sort_by_key(|r| r.0);
    records.dedup_by_key(|r| r.0);
    report.wal_records = records.len() as u64;
    for (_, key, op) in records {
        match op {
            Some(src) => {
                state.insert(key, src);
            }
            None => {
                state.remove(&key);
            }
        }
    }

    // Keep the old files (hard links), then write the salvage.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let backup = dir.join(format!("salvaged-{stamp}"));
    std::fs::create_dir_all(&backup).map_err(|e| io("cannot create", &backup, e))?;
    let old: Vec<String> = names
        .iter()
        .filter(|n| {
            parse_generation_name(n).is_some()
                || parse_segment_name(n).is_some()
                || n.as_str() == CHECKPOINT_FILE
        })
        .cloned()
        .collect();
    for n in &old {
        let dst = backup.join(n);
        if !dst.exists() {
            std::fs::hard_link(dir.join(n), &dst).map_err(|e| io("cannot link", &dst, e))?;
        }
    }
    sync_dir(io_, &backup)?;
    sync_dir(io_, dir)?;

    let new_gen = max_gen + 1;
    let path = generation_path(dir, new_gen);
    let tmp = path.with_extension("blob.tmp");
    let file = io_
        .open(&tmp, true, true)
        .map_err(|e| io("cannot create", &tmp, e))?;
    let mut out: Vec<u8> = encode_header(new_gen, store_id).to_vec();
    let mut entries = Vec::with_capacity(state.len());
    let mut written = 0u64;
    for (key, src) in &state {
        let bytes: Vec<u8> = match src {
            Source::At(loc) => {
                let g = &gens[&loc.generation];
                g.mapping().bytes()[loc.offset as usize..loc.end() as usize].to_vec()
            }
            Source::Bytes(b) => b.clone(),
        };
        let loc = BlobLocation {
            generation: new_gen,
            offset: written + out.len() as u64,
            len: bytes.len() as u64,
            crc: crc32c::crc32c(&bytes),
        };
        out.extend_from_slice(&bytes);
        if out.len() >= 8 << 20 {
            io_.write_at(&file, &[&out], written)
                .map_err(|e| io("cannot write", &tmp, e))?;
            written += out.len() as u64;
            out.clear();
        }
        entries.push((key.clone(), loc));
    }
    io_.write_at(&file, &[&out], written)
        .map_err(|e| io("cannot write", &tmp, e))?;
    io_.sync(&file).map_err(|e| io("cannot fsync", &tmp, e))?;
    drop(file);
    io_.rename(&tmp, &path)
        .map_err(|e| io("cannot rename", &tmp, e))?;
    sync_dir(io_, dir)?;
    drop(gens);
    // Opening checks the header just written (blob_file::check_header).
    BlobFile::open(io_, &path, new_gen, store_id)?;
    let segment = max_segment + 1;
    let next_seq = max_seq + 1;
    let header = CheckpointHeader {
        store_id,
        segment,
        next_seq,
        current_gen: new_gen,
    };
    checkpoint::write_entries(io_, dir, header, &entries)?;
    WalWriter::create(io_, dir, segment, next_seq, store_id)?;
    for n in &old {
        if n.as_str() != CHECKPOINT_FILE {
            let p = dir.join(n);
            io_.remove(&p).map_err(|e| io("cannot remove", &p, e))?;
        }
    }
    sync_dir(io_, dir)?;
    report.kept_keys = entries.len() as u64;
    report.generation = new_gen;
    report.backup_dir = backup;
    Ok(report)
}
