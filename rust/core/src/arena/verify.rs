//! [`BlobArena::verify`]: the full check of an open arena (every live blob's
//! checksum, every generation header, the checkpoint, every WAL record).

use super::wal_record::{decode, Decoded};
use super::{blob_file, checkpoint, BlobArena};
use crate::{Error, ErrorKind, Result};

/// What [`BlobArena::verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Keys whose blob checksum was verified.
    pub keys: u64,
    /// Blob bytes checksummed.
    pub bytes: u64,
    /// WAL records parsed.
    pub wal_records: u64,
    /// Generation files checked.
    pub generations: u64,
}

impl BlobArena {
    /// Checks everything: every live blob's checksum, every generation
    /// header, the checkpoint file and every WAL record of the live segment.
    /// The first problem found is returned as a [`ErrorKind::Corrupt`] error.
    ///
    /// ```
    /// # use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
    /// # let dir = std::env::temp_dir().join(format!("sc-doc-verify-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let arena = BlobArena::open(&dir, ArenaOptions::default())?;
    /// arena.put_many(&[b"a", b"b"], &[b"1", b"22"])?;
    /// let report = arena.verify()?;
    /// assert_eq!((report.keys, report.bytes), (2, 3));
    /// # drop(arena); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_open()?;
        let w = self.writer.lock(); // a stable WAL and checkpoint while we read them
        let mut report = VerifyReport::default();
        for g in self.gens.all() {
            let m = g.mapping();
            if let Err(why) = blob_file::check_header(m.bytes(), g.generation(), self.store_id) {
                return Err(Error::corrupt(format!(
                    "generation {} {why}",
                    g.generation()
                )));
            }
            report.generations += 1;
        }
        let mut bad: Option<Error> = None;
        let mut bad_count = 0u64;
        self.index.for_each(|key, loc| {
            let ok = self.gens.get(loc.generation).is_some_and(|g| {
                loc.end() <= g.end()
                    && crc32c::crc32c(&g.mapping().bytes()[loc.offset as usize..loc.end() as usize])
                        == loc.crc
            });
            if ok {
                report.keys += 1;
                report.bytes += loc.len;
            } else {
                bad_count += 1;
                if bad.is_none() {
                    bad = Some(Error::corrupt(format!(
                        "blob of key {:?} (generation {}, offset {}, {} bytes) fails its checksum",
                        String::from_utf8_lossy(key),
                        loc.generation,
                        loc.offset,
                        loc.len
                    )));
                }
            }
        });
        if let Some(e) = bad {
            return Err(Error::corrupt(format!(
                "{e} ({bad_count} bad blobs in all)"
            )));
        }
        match checkpoint::read(&self.dir)? {
            Some(ck) if ck.header.store_id == self.store_id => {}
            Some(_) => return Err(Error::corrupt("the checkpoint belongs to another store")),
            None => return Err(Error::corrupt("the checkpoint file is missing")),
        }
        let bytes = std::fs::read(w.wal.path())
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read the WAL: {e}")))?;
        let valid = &bytes[..(w.wal.len() as usize).min(bytes.len())];
        let mut pos = 0;
        while pos < valid.len() {
            match decode(&valid[pos..]) {
                Decoded::Record { len, .. } => {
                    pos += len;
                    report.wal_records += 1;
                }
                Decoded::Incomplete | Decoded::Invalid(_) => {
                    return Err(Error::corrupt(format!(
                        "WAL {} is damaged at byte {pos}",
                        w.wal.path().display()
                    )))
                }
            }
        }
        if valid.len() as u64 != w.wal.len() {
            return Err(Error::corrupt("the WAL is shorter than what was written"));
        }
        Ok(report)
    }
}
