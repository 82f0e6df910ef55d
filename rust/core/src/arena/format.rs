//! The arena's on-disk format, for tools and format tests: the WAL record
//! codec, the generation-file header, and the names of the files in an arena
//! directory. The arena itself reads and writes through these same functions.
//!
//! ```
//! use slabcache_core::arena::format::{decode, encode, generation_path, Decoded, WalRecord};
//! let mut buf = Vec::new();
//! encode(&mut buf, 1, &WalRecord::Delete { key: b"k" });
//! assert!(matches!(decode(&buf), Decoded::Record { seq: 1, .. }));
//! let p = generation_path(std::path::Path::new("/arena"), 2);
//! assert_eq!(p.file_name().unwrap(), "gen-0000000002.blob");
//! ```

pub use super::blob_file::{
    check_header, encode_header, read_header, BlobHeader, BLOB_HEADER_LEN, BLOB_MAGIC,
};
pub use super::checkpoint::CHECKPOINT_FILE;
pub use super::generation::{generation_path, parse_generation_name};
pub use super::lock::LOCK_FILE;
pub use super::wal::{parse_segment_name, segment_path};
pub use super::wal_record::{
    decode, encode, Decoded, WalRecord, MAX_INLINE_VALUE, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN,
};
