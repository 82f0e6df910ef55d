//! WAL record format: encode and decode, each record framed by a length, a
//! sequence number and a CRC32C.
//!
//! ```text
//! offset size  field
//! 0      4     payload length (u32 LE)
//! 4      4     CRC32C (u32 LE) over bytes [0..4) and [8..end)
//! 8      8     sequence number (u64 LE)
//! 16     1     record kind (1 put, 2 delete, 3 checkpoint, 4 generation switch)
//! 17     n     payload
//! ```
//!
//! Payloads (all integers little-endian):
//! - put: generation u64, offset u64, length u64, blob CRC32C u32, key length u32, key
//! - delete: key length u32, key
//! - checkpoint: WAL segment number u64, store id u64 (the first record of every segment)
//! - batch: record count u64 (the next that many records are one `put_many`
//!   call; replay applies them all or none)
//! - sync mark: byte length u64 of this segment that a completed sync had made
//!   durable when the record was written: damage before that offset cannot be
//!   a torn write of an unsynced tail, so recovery reports it as corruption
//! - generation switch: generation u64 (appends now go to that generation)
//! - put-inline: a put payload followed by the value bytes (`length` of them):
//!   used by `sync="always"` for small values so that one fsync (of the WAL)
//!   makes the put durable; recovery rewrites the blob from it if needed.
//!
//! The decoder never panics on any input (a proptest feeds it arbitrary bytes):
//! it returns a record, [`Decoded::Incomplete`] for a torn tail or
//! [`Decoded::Invalid`] for a record that fails validation.

/// Bytes of the record header (length, CRC, sequence, kind).
pub const RECORD_HEADER_LEN: usize = 17;
/// The longest key the arena accepts.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// The longest value a put-inline record may carry.
pub const MAX_INLINE_VALUE: usize = 64 * 1024;
/// The longest payload a valid record can have (a put-inline of a maximal key and value).
pub const MAX_PAYLOAD_LEN: usize = 8 * 3 + 4 + 4 + MAX_KEY_LEN + MAX_INLINE_VALUE;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;
const KIND_GENERATION_SWITCH: u8 = 4;
const KIND_PUT_INLINE: u8 = 5;
const KIND_SYNC_MARK: u8 = 6;
const KIND_BATCH: u8 = 7;

/// Where a blob lives: its generation file, offset, length and checksum.
///
/// ```
/// use slabcache_core::arena::BlobLocation;
/// let loc = BlobLocation { generation: 1, offset: 16, len: 5, crc: crc32c::crc32c(b"hello") };
/// assert_eq!(loc.end(), 21);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobLocation {
    /// Generation number (the `gen-N.blob` file).
    pub generation: u64,
    /// Byte offset inside the generation file.
    pub offset: u64,
    /// Length of the blob in bytes.
    pub len: u64,
    /// CRC32C of the blob bytes.
    pub crc: u32,
}

impl BlobLocation {
    /// One past the last byte of the blob.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// One decoded WAL record, borrowing its key from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalRecord<'a> {
    /// `key` now maps to the blob at `loc`.
    Put {
        /// The key.
        key: &'a [u8],
        /// Where its value lives.
        loc: BlobLocation,
    },
    /// `key` now maps to the blob at `loc`, whose bytes the record also carries.
    PutInline {
        /// The key.
        key: &'a [u8],
        /// Where its value lives.
        loc: BlobLocation,
        /// The value (`loc.len` bytes, CRC32C `loc.crc`).
        value: &'a [u8],
    },
    /// `key` is deleted.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// First record of WAL segment `segment`, written right after the checkpoint that starts it.
    Checkpoint {
        /// The segment number.
        segment: u64,
        /// The store the segment belongs to.
        store_id: u64,
    },
    /// The next `records` records are one `put_many` call: replay applies all or none.
    Batch {
        /// Records in the batch.
        records: u64,
    },
    /// The first `synced` bytes of this segment were durable when this record was written.
    SyncMark {
        /// Durable length of the segment.
        synced: u64,
    },
    /// Appends now go to generation `generation` (written after a compaction).
    GenerationSwitch {
        /// The new append generation.
        generation: u64,
    },
}

/// The outcome of decoding the bytes at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record with its sequence number, and the bytes it took.
    Record {
        /// Sequence number.
        seq: u64,
        /// The record.
        record: WalRecord<'a>,
        /// Bytes consumed (header + payload).
        len: usize,
    },
    /// The buffer ends inside a record (a torn tail) or is empty.
    Incomplete,
    /// The bytes do not form a valid record (bad CRC, kind or payload).
    Invalid(&'static str),
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends the encoding of `record` with sequence number `seq` to `buf`.
///
/// ```
/// use slabcache_core::arena::format::{decode, encode, Decoded, WalRecord};
/// let mut buf = Vec::new();
/// encode(&mut buf, 7, &WalRecord::Delete { key: b"k" });
/// match decode(&buf) {
///     Decoded::Record { seq, record, len } => {
///         assert_eq!((seq, len), (7, buf.len()));
///         assert_eq!(record, WalRecord::Delete { key: b"k" });
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
pub fn encode(buf: &mut Vec<u8>, seq: u64, record: &WalRecord<'_>) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]); // length + crc, patched below
    put_u64(buf, seq);
    match record {
        WalRecord::Put { key, loc } => {
            buf.push(KIND_PUT);
            put_u64(buf, loc.generation);
            put_u64(buf, loc.offset);
            put_u64(buf, loc.len);
            put_u32(buf, loc.crc);
            put_u32(buf, key.len() as u32);
            buf.extend_from_slice(key);
        }
        WalRecord::PutInline { key, loc, value } => {
            buf.push(KIND_PUT_INLINE);
            put_u64(buf, loc.generation);
            put_u64(buf, loc.offset);
            put_u64(buf, loc.len);
            put_u32(buf, loc.crc);
            put_u32(buf, key.len() as u32);
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
        }
        WalRecord::Delete { key } => {
            buf.push(KIND_DELETE);
            put_u32(buf, key.len() as u32);
            buf.extend_from_slice(key);
        }
        WalRecord::Checkpoint { segment, store_id } => {
            buf.push(KIND_CHECKPOINT);
            put_u64(buf, *segment);
            put_u64(buf, *store_id);
        }
        WalRecord::SyncMark { synced } => {
            buf.push(KIND_SYNC_MARK);
            put_u64(buf, *synced);
        }
        WalRecord::Batch { records } => {
            buf.push(KIND_BATCH);
            put_u64(buf, *records);
        }
        WalRecord::GenerationSwitch { generation } => {
            buf.push(KIND_GENERATION_SWITCH);
            put_u64(buf, *generation);
        }
    }
    let payload_len = (buf.len() - start - RECORD_HEADER_LEN) as u32;
    buf[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = record_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C of a framed record: the length field and everything after the CRC field.
fn record_crc(rec: &[u8]) -> u32 {
    let c = crc32c::crc32c(&rec[0..4]);
    crc32c::crc32c_append(c, &rec[8..])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `buf`.
///
/// Never panics: every length is checked before it is used.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < RECORD_HEADER_LEN {
        return Decoded::Incomplete;
    }
    let payload_len = u32_at(buf, 0) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Decoded::Invalid("record length out of range");
    }
    let total = RECORD_HEADER_LEN + payload_len;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    let rec = &buf[..total];
    if record_crc(rec) != u32_at(rec, 4) {
        return Decoded::Invalid("record checksum mismatch");
    }
    let seq = u64_at(rec, 8);
    let p = &rec[RECORD_HEADER_LEN..];
    let record = match rec[16] {
        kind @ (KIND_PUT | KIND_PUT_INLINE) => {
            if p.len() < 32 {
                return Decoded::Invalid("put record too short");
            }
            let key_len = u32_at(p, 28) as usize;
            let loc = BlobLocation {
                generation: u64_at(p, 0),
                offset: u64_at(p, 8),
                len: u64_at(p, 16),
                crc: u32_at(p, 24),
            };
            if loc.offset.checked_add(loc.len).is_none() {
                return Decoded::Invalid("put record blob range overflows");
            }
            let value_len = if kind == KIND_PUT_INLINE {
                if loc.len > MAX_INLINE_VALUE as u64 {
                    return Decoded::Invalid("inline value too long");
                }
                loc.len as usize
            } else {
                0
            };
            if key_len > MAX_KEY_LEN || p.len() != 32 + key_len + value_len {
                return Decoded::Invalid("put record key length mismatch");
            }
            let key = &p[32..32 + key_len];
            if kind == KIND_PUT_INLINE {
                let value = &p[32 + key_len..];
                if crc32c::crc32c(value) != loc.crc {
                    return Decoded::Invalid("inline value fails its checksum");
                }
                WalRecord::PutInline { key, loc, value }
            } else {
                WalRecord::Put { key, loc }
            }
        }
        KIND_DELETE => {
            if p.len() < 4 {
                return Decoded::Invalid("delete record too short");
            }
            let key_len = u32_at(p, 0) as usize;
            if key_len > MAX_KEY_LEN || p.len() != 4 + key_len {
                return Decoded::Invalid("delete record key length mismatch");
            }
            WalRecord::Delete { key: &p[4..] }
        }
        KIND_CHECKPOINT => {
            if p.len() != 16 {
                return Decoded::Invalid("checkpoint record has the wrong length");
            }
            WalRecord::Checkpoint {
                segment: u64_at(p, 0),
                store_id: u64_at(p, 8),
            }
        }
        KIND_BATCH => {
            if p.len() != 8 {
                return Decoded::Invalid("batch record has the wrong length");
            }
            WalRecord::Batch {
                records: u64_at(p, 0),
            }
        }
        KIND_SYNC_MARK => {
            if p.len() != 8 {
                return Decoded::Invalid("sync mark record has the wrong length");
            }
            WalRecord::SyncMark {
                synced: u64_at(p, 0),
            }
        }
        KIND_GENERATION_SWITCH => {
            if p.len() != 8 {
                return Decoded::Invalid("generation switch record has the wrong length");
            }
            WalRecord::GenerationSwitch {
                generation: u64_at(p, 0),
            }
        }
        _ => return Decoded::Invalid("unknown record kind"),
    };
    Decoded::Record {
        seq,
        record,
        len: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(rec: WalRecord<'_>) {
        let mut buf = Vec::new();
        encode(&mut buf, 42, &rec);
        match decode(&buf) {
            Decoded::Record { seq, record, len } => {
                assert_eq!(seq, 42);
                assert_eq!(len, buf.len());
                assert_eq!(record, rec);
            }
            other => panic!("{other:?}"),
        }
        // Every strict prefix is incomplete, never a record.
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        // Every single-bit flip is detected.
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(&b), Decoded::Record { seq: 42, ref record, .. } if *record == rec),
                    "flip at {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn each_kind_roundtrips_and_detects_damage() {
        let loc = BlobLocation {
            generation: 3,
            offset: 99,
            len: 1234,
            crc: 0xdead_beef,
        };
        roundtrip(WalRecord::Put { key: b"alpha", loc });
        roundtrip(WalRecord::Put { key: b"", loc });
        let value = b"inline value";
        let inline_loc = BlobLocation {
            len: value.len() as u64,
            crc: crc32c::crc32c(value),
            ..loc
        };
        roundtrip(WalRecord::PutInline {
            key: b"k",
            loc: inline_loc,
            value,
        });
        roundtrip(WalRecord::Delete { key: b"beta" });
        roundtrip(WalRecord::Checkpoint {
            segment: 9,
            store_id: 0x1234_5678,
        });
        roundtrip(WalRecord::SyncMark { synced: 4096 });
        roundtrip(WalRecord::Batch { records: 3 });
        roundtrip(WalRecord::GenerationSwitch { generation: 5 });
    }

    #[test]
    fn oversized_length_is_invalid_not_incomplete() {
        let mut buf = vec![0u8; RECORD_HEADER_LEN];
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&buf), Decoded::Invalid(_)));
    }
}
