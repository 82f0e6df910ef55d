//! Property tests of the WAL parser and of recovery over arbitrary bytes:
//! decoding never panics, valid records round-trip, and opening an arena whose
//! WAL segment holds arbitrary bytes either recovers or fails cleanly.

use proptest::prelude::*;
use slabcache_core::arena::format::{decode, encode, Decoded, WalRecord, RECORD_HEADER_LEN};
use slabcache_core::arena::{ArenaOptions, BlobArena, BlobLocation};
use slabcache_core::ErrorKind;

fn arb_record() -> impl Strategy<Value = (u64, u8, Vec<u8>, BlobLocation)> {
    (
        any::<u64>(),
        0u8..6,
        proptest::collection::vec(any::<u8>(), 0..64),
        (any::<u64>(), 0u64..1 << 40, 0u64..1 << 20, any::<u32>()),
    )
        .prop_map(|(seq, kind, key, (generation, offset, len, crc))| {
            (
                seq,
                kind,
                key,
                BlobLocation {
                    generation,
                    offset,
                    len,
                    crc,
                },
            )
        })
}

fn make(kind: u8, key: &[u8], loc: BlobLocation) -> WalRecord<'_> {
    match kind {
        0 => WalRecord::Put { key, loc },
        1 => WalRecord::Delete { key },
        4 => WalRecord::PutInline {
            key,
            loc: BlobLocation {
                len: key.len() as u64,
                crc: crc32c::crc32c(key),
                ..loc
            },
            value: key,
        },
        2 => WalRecord::Checkpoint {
            segment: loc.generation,
            store_id: loc.offset,
        },
        3 => WalRecord::SyncMark { synced: loc.len },
        5 => WalRecord::Batch { records: loc.len },
        _ => WalRecord::GenerationSwitch {
            generation: loc.offset,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut pos = 0;
        while pos < bytes.len() {
            match decode(&bytes[pos..]) {
                Decoded::Record { len, .. } => {
                    prop_assert!(len >= RECORD_HEADER_LEN && pos + len <= bytes.len());
                    pos += len;
                }
                _ => break,
            }
        }
    }

    #[test]
    fn records_roundtrip_in_sequence(recs in proptest::collection::vec(arb_record(), 1..20)) {
        let mut buf = Vec::new();
        for (seq, kind, key, loc) in &recs {
            encode(&mut buf, *seq, &make(*kind, key, *loc));
        }
        let mut pos = 0;
        for (seq, kind, key, loc) in &recs {
            match decode(&buf[pos..]) {
                Decoded::Record { seq: s, record, len } => {
                    prop_assert_eq!(s, *seq);
                    prop_assert_eq!(record, make(*kind, key, *loc));
                    pos += len;
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(pos, buf.len());
    }

    #[test]
    fn damaged_records_are_never_misread(
        (seq, kind, key, loc) in arb_record(),
        flip_at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut buf = Vec::new();
        let rec = make(kind, &key, loc);
        encode(&mut buf, seq, &rec);
        let i = flip_at.index(buf.len());
        buf[i] ^= 1 << bit;
        if let Decoded::Record { seq: s, record, .. } = decode(&buf) {
            prop_assert!(!(s == seq && record == rec), "flip at {} went unnoticed", i);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes appended to a real WAL, or replacing it: open recovers the
    /// valid prefix (or nothing) and never returns a value that was not written.
    #[test]
    fn open_with_arbitrary_wal_tail(tail in proptest::collection::vec(any::<u8>(), 0..256), replace in any::<bool>()) {
        let dir = tempdir("fuzz");
        {
            let a = BlobArena::open(&dir, ArenaOptions::default()).unwrap();
            for i in 0..5u8 {
                a.put(&[b'k', i], &[i; 10]).unwrap();
            }
            a.close().unwrap();
        }
        let wal = std::fs::read_dir(&dir).unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let mut bytes = if replace { Vec::new() } else { std::fs::read(&wal).unwrap() };
        bytes.extend_from_slice(&tail);
        std::fs::write(&wal, &bytes).unwrap();
        match BlobArena::open(&dir, ArenaOptions::default()) {
            Ok(a) => {
                for i in 0..5u8 {
                    if let Some(v) = a.get(&[b'k', i]).unwrap() {
                        prop_assert_eq!(&*v, &[i; 10][..]);
                    } else {
                        prop_assert!(replace, "key lost although the WAL prefix was intact");
                    }
                }
                prop_assert!(a.len() <= 5);
                a.verify().unwrap();
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Corrupt),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "sc-arena-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}
