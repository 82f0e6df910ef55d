//! Recovery on open: load the last checkpoint, replay its WAL segment, cut a
//! torn tail, rebuild the index, and delete files no checkpoint references
//! (orphans of an interrupted compaction or checkpoint).
//!
//! Recovery never destroys data it cannot prove obsolete:
//! - a directory that holds WAL records or blob data but no checkpoint is
//!   refused ([`crate::ErrorKind::Corrupt`]), never re-initialised;
//! - a damaged WAL record (or the blob of a replayed put) is a *torn tail*
//!   only when no later record proves the damaged bytes were synced. Writers
//!   put a sync mark (the segment length the last completed sync made
//!   durable) in front of their records; a valid mark past the damage means
//!   the damage is inside data that had been made durable: open fails with
//!   the offset and leaves every file as it was (`BlobArena::repair`
//!   salvages what still checks out). A torn tail is truncated; the report
//!   counts the valid-but-unsynced records dropped with it.
//!
//! A replayed put is accepted only if its blob bytes are inside the
//! generation file and (with `verify_replay`) match the record's CRC32C.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::blob_file::{BlobFile, BLOB_HEADER_LEN};
use super::checkpoint::{self, sync_dir, Checkpoint, CheckpointHeader, CHECKPOINT_FILE};
use super::generation::{generation_path, parse_generation_name, GenerationTable};
use super::index::KeyIndex;
use super::io::{io_error, SharedIo};
use super::lock::DirLock;
use super::wal::{parse_segment_name, segment_path, WalWriter};
use super::wal_record::{decode, BlobLocation, Decoded, WalRecord, RECORD_HEADER_LEN};
use crate::{Error, Result};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries loaded from the checkpoint.
    pub checkpoint_entries: u64,
    /// WAL records replayed after the checkpoint.
    pub replayed_records: u64,
    /// Bytes cut off the WAL tail (torn or invalid records).
    pub truncated_bytes: u64,
    /// Valid records inside the cut tail (written, never proven synced).
    pub dropped_records: u64,
    /// Why replay stopped early, if it did.
    pub stop_reason: Option<String>,
    /// Blobs rewritten from put-inline WAL records (their bytes had not reached the disk).
    pub repaired_blobs: u64,
    /// Orphan files deleted.
    pub removed_files: u64,
    /// Wall time of recovery in microseconds.
    pub duration_us: u64,
}

/// Everything `BlobArena::open` needs, rebuilt from disk.
pub(super) struct Recovered {
    pub lock: DirLock,
    pub store_id: u64,
    pub index: KeyIndex,
    pub gens: GenerationTable,
    pub current: Arc<BlobFile>,
    pub wal: WalWriter,
    pub next_seq: u64,
    pub live_bytes: u64,
    pub report: RecoveryReport,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    io_error(what, path, e)
}

pub(super) fn is_ours(name: &str) -> bool {
    parse_generation_name(name).is_some() || parse_segment_name(name).is_some() || is_tmp(name)
}

fn is_tmp(name: &str) -> bool {
    name.ends_with(".tmp") && (name.starts_with("gen-") || name.starts_with(CHECKPOINT_FILE))
}

pub(super) fn list(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io("cannot list", dir, e))?;
        if let Some(n) = ent.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// A fresh store id: not secret, only distinct between stores.
pub(super) fn new_store_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// Refuses to initialise over anything that may hold data: a WAL segment
/// with bytes, a generation file with blob bytes, a generation other than 1.
fn check_nothing_to_lose(dir: &Path) -> Result<()> {
    for name in list(dir)? {
        let p = dir.join(&name);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        let risky = match (parse_generation_name(&name), parse_segment_name(&name)) {
            (Some(g), _) => g != 1 || len > BLOB_HEADER_LEN,
            (_, Some(_)) => len > 0,
            _ => false,
        };
        if risky {
            return Err(Error::corrupt(format!(
                "arena {} has no checkpoint but holds {name} ({len} bytes): refusing to \
                 initialise over it; run `slabcache arena repair {}` to salvage it",
                dir.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// A brand-new arena: generation 1 and an empty checkpoint naming segment 1.
fn init_fresh(io_: &SharedIo, dir: &Path) -> Result<Checkpoint> {
    check_nothing_to_lose(dir)?;
    for name in list(dir)? {
        if is_ours(&name) {
            let p = dir.join(&name);
            io_.remove(&p).map_err(|e| io("cannot remove", &p, e))?;
        }
    }
    let store_id = new_store_id();
    BlobFile::create(io_, &generation_path(dir, 1), 1, store_id)?;
    // Its name must be durable before a checkpoint can name it.
    sync_dir(io_, dir)?;
    let header = CheckpointHeader {
        store_id,
        segment: 1,
        next_seq: 1,
        current_gen: 1,
    };
    checkpoint::write_entries(io_, dir, header, &[])?;
    Ok(Checkpoint {
        header,
        entries: Vec::new(),
    })
}

/// Creates `dir` (and its parents) and makes the new entries durable.
fn create_dir_durably(io_: &SharedIo, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
    for m in missing.iter().rev() {
        let parent = match m.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        sync_dir(io_, &parent)?;
    }
    Ok(())
}

/// Cheap test that a record could start at `bytes[at..]` with a sequence
/// number in `[min_seq, max_seq)`, then the full decode.
fn valid_record_at(
    bytes: &[u8],
    at: usize,
    min_seq: u64,
    max_seq: u64,
) -> Option<(u64, WalRecord<'_>, usize)> {
    let b = &bytes[at..];
    if b.len() < RECORD_HEADER_LEN {
        return None;
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().expect("8"));
    if seq < min_seq || seq >= max_seq {
        return None;
    }
    match decode(b) {
        Decoded::Record { seq, record, len } => Some((seq, record, len)),
        _ => None,
    }
}

/// What follows damage at `pos`: the number of valid records after it and
/// the largest durable length a sync mark among them claims.
fn scan_after_damage(bytes: &[u8], pos: usize, min_seq: u64) -> (u64, u64) {
    let max_seq = min_seq.saturating_add(bytes.len() as u64 + 1);
    let (mut valid, mut synced) = (0u64, 0u64);
    let mut at = pos + 1;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        if let Some((_, record, len)) = valid_record_at(bytes, at, min_seq, max_seq) {
            valid += 1;
            if let WalRecord::SyncMark { synced: s } = record {
                synced = synced.max(s);
            }
            at += len;
        } else {
            at += 1;
        }
    }
    (valid, synced)
}

/// Options recovery needs.
pub(super) struct RecoverOptions<'a> {
    pub create: bool,
    pub verify_replay: bool,
    pub io: &'a SharedIo,
}

/// Opens (creating if `create`) and recovers the arena in `dir`.
pub(super) fn recover(dir: &Path, o: RecoverOptions<'_>) -> Result<Recovered> {
    let t0 = Instant::now();
    let io_ = o.io;
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::invalid_argument(format!(
                "{} exists and is not an arena directory",
                dir.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !o.create {
                return Err(Error::not_found(format!("no arena at {}", dir.display())));
            }
            create_dir_durably(io_, dir)?;
        }
        Err(e) => return Err(io("cannot stat", dir, e)),
    }
    let lock = DirLock::acquire(dir)?;
    let ck = match checkpoint::read(dir)? {
        Some(ck) => ck,
        None if o.create => init_fresh(io_, dir)?,
        None => {
            check_nothing_to_lose(dir)?;
            return Err(Error::not_found(format!("no arena at {}", dir.display())));
        }
    };
    let mut report = RecoveryReport {
        checkpoint_entries: ck.entries.len() as u64,
        ..Default::default()
    };
    let header = ck.header;
    let store_id = header.store_id;

    // Open every generation the checkpoint references, plus the append one.
    let gens = GenerationTable::new();
    let mut needed: HashSet<u64> = ck.entries.iter().map(|(_, l)| l.generation).collect();
    needed.insert(header.current_gen);
    for &g in &needed {
        gens.insert(Arc::new(BlobFile::open(
            io_,
            &generation_path(dir, g),
            g,
            store_id,
        )?));
    }
    let ends: HashMap<u64, u64> = needed
        .iter()
        .map(|&g| (g, gens.get(g).expect("opened above").end()))
        .collect();
    for (key, loc) in &ck.entries {
        let ok = loc.offset >= BLOB_HEADER_LEN
            && ends
                .get(&loc.generation)
                .is_some_and(|&end| loc.end() <= end);
        if !ok {
            return Err(Error::corrupt(format!(
                "checkpoint entry {:?} points past the end of generation {} (blob file truncated?)",
                String::from_utf8_lossy(key),
                loc.generation
            )));
        }
    }
    let current = gens.get(header.current_gen).expect("opened above");
    // Newer segments than the checkpoint's only exist if a checkpoint's
    // rename was lost while its segment survived: never delete their records.
    for name in list(dir)? {
        if let Some(sn) = parse_segment_name(&name) {
            let len = std::fs::metadata(dir.join(&name))
                .map(|m| m.len())
                .unwrap_or(0);
            if sn > header.segment && len > 64 {
                return Err(Error::corrupt(format!(
                    "WAL segment {name} ({len} bytes) is newer than the checkpoint (segment {}): \
                     files left untouched; run `slabcache arena repair {}`",
                    header.segment,
                    dir.display()
                )));
            }
        }
    }
    let mut ops: Vec<(Vec<u8>, Option<BlobLocation>)> = Vec::new();

    // Replay the live segment.
    let wal_path = segment_path(dir, header.segment);
    let bytes = match std::fs::read(&wal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("cannot read", &wal_path, e)),
    };
    let mut mapping = current.mapping();
    let mut repaired: Vec<(u64, &[u8])> = Vec::new();
    let mut pos = 0usize;
    let mut expected = header.next_seq;
    let mut stop: Option<&'static str> = None;
    // An open batch: records left, and where to rewind if it is incomplete.
    let mut batch_left = 0u64;
    let mut batch_at = (0usize, 0usize, 0usize, 0u64, 0u64); // pos, ops, repaired, seq, replayed
    while pos < bytes.len() {
        let (seq, record, len) = match decode(&bytes[pos..]) {
            Decoded::Record { seq, record, len } => (seq, record, len),
            Decoded::Incomplete => {
                stop = Some("torn record at the WAL tail");
                break;
            }
            Decoded::Invalid(why) => {
                stop = Some(why);
                break;
            }
        };
        if seq != expected {
            stop = Some("sequence number out of order");
            break;
        }
        let first = pos == 0;
        let counts =
            !first && !matches!(record, WalRecord::SyncMark { .. } | WalRecord::Batch { .. });
        match record {
            WalRecord::Checkpoint {
                segment,
                store_id: s,
            } if first && segment == header.segment && s == store_id => {}
            WalRecord::Checkpoint { store_id: s, .. } if first && s != store_id => {
                return Err(Error::corrupt(format!(
                    "WAL {} belongs to another store (store id {s:#x}, expected {store_id:#x})",
                    wal_path.display()
                )));
            }
            _ if first => {
                stop = Some("segment does not start with its checkpoint record");
                break;
            }
            WalRecord::Checkpoint { .. } => {
                stop = Some("checkpoint record inside a segment");
                break;
            }
            WalRecord::SyncMark { .. } => {}
            WalRecord::Batch { records } => {
                if batch_left > 0 {
                    stop = Some("batch record inside a batch");
                    break;
                }
                batch_at = (
                    pos,
                    ops.len(),
                    repaired.len(),
                    expected,
                    report.replayed_records,
                );
                batch_left = records + 1; // this record counts itself down below
            }
            WalRecord::GenerationSwitch { generation } => {
                if generation != header.current_gen {
                    stop = Some("generation switch to an unknown generation");
                    break;
                }
            }
            WalRecord::Put { key, loc } => {
                if loc.generation != header.current_gen
                    || loc.offset < BLOB_HEADER_LEN
                    || loc.end() > current.end()
                {
                    stop = Some("put record points outside its blob file");
                    break;
                }
                if o.verify_replay
                    && crc32c::crc32c(&mapping.bytes()[loc.offset as usize..loc.end() as usize])
                        != loc.crc
                {
                    stop = Some("put record's blob fails its checksum");
                    break;
                }
                ops.push((key.to_vec(), Some(loc)));
            }
            WalRecord::PutInline { key, loc, value } => {
                if loc.generation != header.current_gen || loc.offset < BLOB_HEADER_LEN {
                    stop = Some("put record points outside its blob file");
                    break;
                }
                // The WAL holds the value: rewrite the blob if it did not reach the disk
                // (after the damage check below, so a refused open changes nothing).
                let intact = loc.end() <= current.end()
                    && mapping.bytes()[loc.offset as usize..loc.end() as usize] == *value;
                if !intact {
                    repaired.push((loc.offset, value));
                }
                ops.push((key.to_vec(), Some(loc)));
            }
            WalRecord::Delete { key } => {
                ops.push((key.to_vec(), None));
            }
        }
        report.replayed_records += counts as u64;
        pos += len;
        expected += 1;
        batch_left = batch_left.saturating_sub(1);
    }
    if batch_left > 0 {
        // A torn put_many: none of it counts.
        (pos, _, _, expected, report.replayed_records) = batch_at;
        ops.truncate(batch_at.1);
        repaired.truncate(batch_at.2);
        if stop.is_none() {
            stop = Some("incomplete batch at the WAL tail");
        }
    }
    if pos < bytes.len() {
        let (valid_after, synced) = scan_after_damage(&bytes, pos, expected);
        if synced > pos as u64 {
            return Err(Error::corrupt(format!(
                "WAL {} is damaged at byte {pos} ({}), inside its synced part ({} valid \
                 records follow, a sync mark covers {synced} bytes): nothing was changed; \
                 run `slabcache arena repair {}` to salvage every record that checks out",
                wal_path.display(),
                stop.unwrap_or("damaged record"),
                valid_after,
                dir.display()
            )));
        }
        report.dropped_records = valid_after;
    }
    for (offset, value) in &repaired {
        current.write_at(*offset, value)?;
    }
    mapping = current.mapping();
    drop(mapping);
    if !repaired.is_empty() {
        current.sync()?;
    }
    report.repaired_blobs = repaired.len() as u64;
    report.stop_reason = stop.map(str::to_owned);
    let wal = if pos == 0 {
        // Empty, missing or torn-at-birth segment: write it afresh.
        report.truncated_bytes = bytes.len() as u64;
        expected = header.next_seq + 1;
        WalWriter::create(io_, dir, header.segment, header.next_seq, store_id)?
    } else {
        let w = WalWriter::open_at(io_, &wal_path, header.segment, pos as u64)?;
        if pos < bytes.len() {
            report.truncated_bytes = (bytes.len() - pos) as u64;
            let f = w.file();
            io_.set_len(&f, pos as u64)
                .and_then(|_| io_.sync(&f))
                .map_err(|e| io("cannot truncate", &wal_path, e))?;
        }
        w
    };

    // Delete what nothing references any more.
    for name in list(dir)? {
        let orphan = match (parse_generation_name(&name), parse_segment_name(&name)) {
            (Some(g), _) => !needed.contains(&g),
            (_, Some(s)) => s != header.segment,
            _ => is_tmp(&name),
        };
        if orphan {
            let p = dir.join(&name);
            io_.remove(&p).map_err(|e| io("cannot remove", &p, e))?;
            report.removed_files += 1;
        }
    }
    if report.removed_files > 0 {
        sync_dir(io_, dir)?;
    }

    let entries = apply_ops(ck.entries, ops);
    let live_bytes = entries.iter().map(|(_, l)| l.len).sum();
    let index = KeyIndex::new();
    index.replace_all(entries);
    report.duration_us = t0.elapsed().as_micros() as u64;
    Ok(Recovered {
        lock,
        store_id,
        index,
        gens,
        current,
        wal,
        next_seq: expected,
        live_bytes,
        report,
    })
}

/// Applies replayed operations (in WAL order) to sorted, unique `base` entries;
/// returns the sorted, unique result.
pub(super) fn apply_ops(
    base: Vec<(Vec<u8>, BlobLocation)>,
    mut ops: Vec<(Vec<u8>, Option<BlobLocation>)>,
) -> Vec<(Vec<u8>, BlobLocation)> {
    if ops.is_empty() {
        return base;
    }
    // Stable: among equal keys the WAL order is kept, so the last one wins.
    ops.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last: Vec<(Vec<u8>, Option<BlobLocation>)> = Vec::with_capacity(ops.len());
    for op in ops {
        match last.last_mut() {
            Some(prev) if prev.0 == op.0 => *prev = op,
            _ => last.push(op),
        }
    }
    let mut out = Vec::with_capacity(base.len() + last.len());
    let mut base = base.into_iter().peekable();
    for (key, op) in last {
        while let Some(b) = base.next_if(|b| b.0 < key) {
            out.push(b);
        }
        base.next_if(|b| b.0 == key); // replaced or deleted by the op
        if let Some(loc) = op {
            out.push((key, loc));
        }
    }
    out.extend(base);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u64) -> BlobLocation {
        BlobLocation {
            generation: 1,
            offset: n,
            len: 1,
            crc: 0,
        }
    }

    #[test]
    fn apply_ops_matches_sequential_application() {
        use std::collections::BTreeMap;
        let base: Vec<_> = [b"b", b"d", b"f"]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_vec(), loc(i as u64)))
            .collect();
        let ops = vec![
            (b"d".to_vec(), None),
            (b"a".to_vec(), Some(loc(10))),
            (b"f".to_vec(), Some(loc(11))),
            (b"a".to_vec(), None),
            (b"a".to_vec(), Some(loc(12))),
            (b"z".to_vec(), Some(loc(13))),
            (b"d".to_vec(), Some(loc(14))),
            (b"z".to_vec(), None),
        ];
        let mut model: BTreeMap<Vec<u8>, BlobLocation> = base.iter().cloned().collect();
        for (k, op) in &ops {
            match op {
                Some(l) => model.insert(k.clone(), *l),
                None => model.remove(k),
            };
        }
        let got = apply_ops(base, ops);
        assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    }
}
