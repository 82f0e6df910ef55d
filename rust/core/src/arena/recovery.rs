//! Recovery on open: load the last checkpoint, replay its WAL segment, stop at
//! the first torn or invalid record and truncate the tail there, rebuild the
//! index, and delete files no checkpoint references (orphans of an
//! interrupted compaction or checkpoint).
//!
//! A replayed put is accepted only if its blob bytes are inside the
//! generation file and (with `verify_replay`) match the record's CRC32C, so a
//! WAL record that reached the disk before its blob (possible after a power
//! loss under `sync="batch"`/`"none"`) ends replay instead of indexing garbage.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::blob_file::{BlobFile, BLOB_HEADER_LEN};
use super::checkpoint::{self, sync_dir, Checkpoint, CheckpointHeader, CHECKPOINT_FILE};
use super::generation::{generation_path, parse_generation_name, GenerationTable};
use super::index::KeyIndex;
use super::lock::DirLock;
use super::wal::{parse_segment_name, segment_path, WalWriter};
use super::wal_record::{decode, BlobLocation, Decoded, WalRecord};
use crate::{Error, ErrorKind, Result};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries loaded from the checkpoint.
    pub checkpoint_entries: u64,
    /// WAL records replayed after the checkpoint.
    pub replayed_records: u64,
    /// Bytes cut off the WAL tail (torn or invalid records).
    pub truncated_bytes: u64,
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
    pub index: KeyIndex,
    pub gens: GenerationTable,
    pub current: Arc<BlobFile>,
    pub wal: WalWriter,
    pub next_seq: u64,
    pub live_bytes: u64,
    pub report: RecoveryReport,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} {}: {e}", path.display()))
}

fn is_ours(name: &str) -> bool {
    parse_generation_name(name).is_some()
        || parse_segment_name(name).is_some()
        || (name.ends_with(".tmp")
            && (name.starts_with("gen-") || name.starts_with(CHECKPOINT_FILE)))
}

fn list(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io("cannot list", dir, e))?;
        if let Some(n) = ent.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// A brand-new arena: generation 1 and an empty checkpoint naming segment 1.
fn init_fresh(dir: &Path) -> Result<Checkpoint> {
    for name in list(dir)? {
        if is_ours(&name) {
            let p = dir.join(&name);
            std::fs::remove_file(&p).map_err(|e| io("cannot remove", &p, e))?;
        }
    }
    BlobFile::create(&generation_path(dir, 1), 1)?;
    let header = CheckpointHeader {
        segment: 1,
        next_seq: 1,
        current_gen: 1,
    };
    checkpoint::write_entries(dir, header, &[])?;
    Ok(Checkpoint {
        header,
        entries: Vec::new(),
    })
}

/// Opens (creating if `create`) and recovers the arena in `dir`.
pub(super) fn recover(dir: &Path, create: bool, verify_replay: bool) -> Result<Recovered> {
    let t0 = Instant::now();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::invalid_argument(format!(
                "{} exists and is not an arena directory",
                dir.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Err(Error::not_found(format!("no arena at {}", dir.display())));
            }
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        }
        Err(e) => return Err(io("cannot stat", dir, e)),
    }
    let lock = DirLock::acquire(dir)?;
    let ck = match checkpoint::read(dir)? {
        Some(ck) => ck,
        // No checkpoint: creation never finished, so nothing was ever acknowledged.
        None if create => init_fresh(dir)?,
        None => return Err(Error::not_found(format!("no arena at {}", dir.display()))),
    };
    let mut report = RecoveryReport {
        checkpoint_entries: ck.entries.len() as u64,
        ..Default::default()
    };
    let header = ck.header;

    // Open every generation the checkpoint references, plus the append one.
    let gens = GenerationTable::new();
    let mut needed: HashSet<u64> = ck.entries.iter().map(|(_, l)| l.generation).collect();
    needed.insert(header.current_gen);
    for &g in &needed {
        gens.insert(Arc::new(BlobFile::open(&generation_path(dir, g), g)?));
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
    // Replayed operations, applied to the checkpoint's sorted entries at the end
    // (a sort that is linear for the usual, mostly ordered keys, then a merge)
    // rather than one ordered-map insert per record.
    let mut ops: Vec<(Vec<u8>, Option<BlobLocation>)> = Vec::new();

    // Replay the live segment.
    let wal_path = segment_path(dir, header.segment);
    let bytes = match std::fs::read(&wal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("cannot read", &wal_path, e)),
    };
    let mut mapping = current.mapping();
    let mut repaired = 0u64;
    let mut pos = 0usize;
    let mut expected = header.next_seq;
    let mut stop: Option<&'static str> = None;
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
        match record {
            WalRecord::Checkpoint { segment } if first && segment == header.segment => {}
            _ if first => {
                stop = Some("segment does not start with its checkpoint record");
                break;
            }
            WalRecord::Checkpoint { .. } => {
                stop = Some("checkpoint record inside a segment");
                break;
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
                if verify_replay
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
                // The WAL holds the value: rewrite the blob if it did not reach the disk.
                let intact = loc.end() <= current.end()
                    && mapping.bytes()[loc.offset as usize..loc.end() as usize] == *value;
                if !intact {
                    current.write_at(loc.offset, value)?;
                    mapping = current.mapping();
                    repaired += 1;
                }
                ops.push((key.to_vec(), Some(loc)));
            }
            WalRecord::Delete { key } => {
                ops.push((key.to_vec(), None));
            }
        }
        report.replayed_records += !first as u64;
        pos += len;
        expected += 1;
    }
    drop(mapping);
    if repaired > 0 {
        current.sync()?;
    }
    report.repaired_blobs = repaired;
    report.stop_reason = stop.map(str::to_owned);
    let wal = if pos == 0 {
        // Empty, missing or torn-at-birth segment: write it afresh.
        report.truncated_bytes = bytes.len() as u64;
        expected = header.next_seq + 1;
        WalWriter::create(dir, header.segment, header.next_seq)?
    } else {
        if pos < bytes.len() {
            report.truncated_bytes = (bytes.len() - pos) as u64;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&wal_path)
                .map_err(|e| io("cannot open", &wal_path, e))?;
            f.set_len(pos as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| io("cannot truncate", &wal_path, e))?;
        }
        WalWriter::open_at(&wal_path, header.segment, pos as u64)?
    };

    // Delete what nothing references any more.
    for name in list(dir)? {
        let orphan = match (parse_generation_name(&name), parse_segment_name(&name)) {
            (Some(g), _) => !needed.contains(&g),
            (_, Some(s)) => s != header.segment,
            _ => is_ours(&name),
        };
        if orphan {
            let p = dir.join(&name);
            std::fs::remove_file(&p).map_err(|e| io("cannot remove", &p, e))?;
            report.removed_files += 1;
        }
    }
    if report.removed_files > 0 {
        sync_dir(dir)?;
    }

    let entries = apply_ops(ck.entries, ops);
    let live_bytes = entries.iter().map(|(_, l)| l.len).sum();
    let index = KeyIndex::new();
    index.replace_all(entries);
    report.duration_us = t0.elapsed().as_micros() as u64;
    Ok(Recovered {
        lock,
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
fn apply_ops(
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
