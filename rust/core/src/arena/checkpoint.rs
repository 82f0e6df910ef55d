//! Checkpoints: an index snapshot that bounds WAL replay.
//!
//! A checkpoint names the WAL segment replay starts from, the next sequence
//! number, the generation appends go to, and every key with its location. It
//! is written to `checkpoint.tmp`, fsynced, renamed over `checkpoint` and the
//! directory fsynced, so the file on disk is always one whole checkpoint.
//!
//! ```text
//! "SCCKPT02" | store_id u64 | segment u64 | next_seq u64 | current_gen u64 | count u64
//! count x ( key_len u32 | key | generation u64 | offset u64 | len u64 | crc u32 )
//! CRC32C u32 of everything before it
//! ```

use std::path::Path;

use super::index::KeyIndex;
use super::io::{io_error, SharedIo};
use super::wal_record::{BlobLocation, MAX_KEY_LEN};
use crate::{Error, Result};

/// Name of the checkpoint file inside an arena directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const CHECKPOINT_MAGIC: &[u8; 8] = b"SCCKPT02";
const FIXED_LEN: usize = 8 + 40;

/// The header of a checkpoint (what replay needs besides the entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The store's id: every generation header and WAL segment carries it.
    pub store_id: u64,
    /// WAL segment that replay starts from.
    pub segment: u64,
    /// Sequence number of that segment's first record.
    pub next_seq: u64,
    /// Generation new blobs are appended to.
    pub current_gen: u64,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Where replay starts.
    pub header: CheckpointHeader,
    /// Every key and its location, in key order.
    pub entries: Vec<(Vec<u8>, BlobLocation)>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    io_error(what, path, e)
}

/// Fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(io: &SharedIo, dir: &Path) -> Result<()> {
    io.sync_dir(dir)
        .map_err(|e| self::io("cannot fsync directory", dir, e))
}

/// Serialises a checkpoint of `entries` (given through a visitor so a large
/// index is not copied first).
pub fn encode(
    header: CheckpointHeader,
    count: usize,
    visit: impl FnOnce(&mut dyn FnMut(&[u8], &BlobLocation)),
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FIXED_LEN + count * 48 + 4);
    buf.extend_from_slice(CHECKPOINT_MAGIC);
    buf.extend_from_slice(&header.store_id.to_le_bytes());
    buf.extend_from_slice(&header.segment.to_le_bytes());
    buf.extend_from_slice(&header.next_seq.to_le_bytes());
    buf.extend_from_slice(&header.current_gen.to_le_bytes());
    let count_at = buf.len();
    buf.extend_from_slice(&0u64.to_le_bytes());
    let mut n = 0u64;
    visit(&mut |key: &[u8], loc: &BlobLocation| {
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&loc.generation.to_le_bytes());
        buf.extend_from_slice(&loc.offset.to_le_bytes());
        buf.extend_from_slice(&loc.len.to_le_bytes());
        buf.extend_from_slice(&loc.crc.to_le_bytes());
        n += 1;
    });
    buf[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Writes a checkpoint of `index` durably (tmp file, fsync, rename, fsync dir).
pub fn write(io: &SharedIo, dir: &Path, header: CheckpointHeader, index: &KeyIndex) -> Result<()> {
    let bytes = encode(header, index.len(), |f| index.for_each(f));
    write_bytes(io, dir, &bytes)
}

/// Writes a checkpoint of explicit `entries` durably.
pub fn write_entries(
    io: &SharedIo,
    dir: &Path,
    header: CheckpointHeader,
    entries: &[(Vec<u8>, BlobLocation)],
) -> Result<()> {
    let bytes = encode(header, entries.len(), |f| {
        for (k, v) in entries {
            f(k, v);
        }
    });
    write_bytes(io, dir, &bytes)
}

/// tmp file, fsync, rename, fsync the directory. A failure before the rename
/// removes the tmp file (nothing changed); after it the caller must treat the
/// checkpoint on disk as unknown (old or new).
fn write_bytes(io: &SharedIo, dir: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let dst = dir.join(CHECKPOINT_FILE);
    let staged = (|| {
        let f = io
            .open(&tmp, true, true)
            .map_err(|e| self::io("cannot create", &tmp, e))?;
        io.write_at(&f, &[bytes], 0)
            .map_err(|e| self::io("cannot write", &tmp, e))?;
        io.sync(&f).map_err(|e| self::io("cannot fsync", &tmp, e))?;
        io.rename(&tmp, &dst)
            .map_err(|e| self::io("cannot rename", &tmp, e))
    })();
    if let Err(e) = staged {
        let _ = io.remove(&tmp);
        return Err(e);
    }
    sync_dir(io, dir)
}

fn corrupt(path: &Path, why: &str) -> Error {
    Error::corrupt(format!("checkpoint {} is corrupt: {why}", path.display()))
}

/// Reads the checkpoint of `dir`; `None` if there is none.
pub fn read(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", &path, e)),
    };
    decode(&bytes).map(Some).map_err(|why| corrupt(&path, why))
}

/// Parses checkpoint bytes; never panics on any input.
pub fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, &'static str> {
    if bytes.len() < FIXED_LEN + 4 {
        return Err("too short");
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err("checksum mismatch");
    }
    if &body[..8] != CHECKPOINT_MAGIC {
        return Err("bad magic");
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let header = CheckpointHeader {
        store_id: u64_at(8),
        segment: u64_at(16),
        next_seq: u64_at(24),
        current_gen: u64_at(32),
    };
    let count = u64_at(40);
    let mut entries = Vec::with_capacity(count.min(body.len() as u64 / 32) as usize);
    let mut at = FIXED_LEN;
    for _ in 0..count {
        if body.len() < at + 4 {
            return Err("truncated entry");
        }
        let klen = u32::from_le_bytes(body[at..at + 4].try_into().expect("4")) as usize;
        at += 4;
        if klen > MAX_KEY_LEN || body.len() < at + klen + 28 {
            return Err("truncated entry");
        }
        let key = body[at..at + klen].to_vec();
        at += klen;
        let loc = BlobLocation {
            generation: u64_at(at),
            offset: u64_at(at + 8),
            len: u64_at(at + 16),
            crc: u32::from_le_bytes(body[at + 24..at + 28].try_into().expect("4")),
        };
        at += 28;
        if loc.offset.checked_add(loc.len).is_none() {
            return Err("entry range overflows");
        }
        if let Some((prev, _)) = entries.last() {
            if *prev >= key {
                return Err("entries out of order");
            }
        }
        entries.push((key, loc));
    }
    if at != body.len() {
        return Err("trailing bytes");
    }
    Ok(Checkpoint { header, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let h = CheckpointHeader {
            store_id: 77,
            segment: 3,
            next_seq: 10,
            current_gen: 2,
        };
        let loc = BlobLocation {
            generation: 2,
            offset: 16,
            len: 4,
            crc: 1,
        };
        let entries = vec![(b"a".to_vec(), loc), (b"b".to_vec(), loc)];
        let bytes = encode(h, 2, |f| {
            for (k, v) in &entries {
                f(k, v)
            }
        });
        let ck = decode(&bytes).unwrap();
        assert_eq!(ck.header, h);
        assert_eq!(ck.entries, entries);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
    }
}
