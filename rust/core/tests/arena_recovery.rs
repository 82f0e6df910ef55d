//! Recovery: torn tails at every byte offset, orphan cleanup after an
//! interrupted compaction, and readers during writes and compaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};
use slabcache_core::ErrorKind;

fn tempdir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "sc-arena-rec-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn find(dir: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == ext))
        .unwrap()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

fn value(i: u32) -> Vec<u8> {
    format!("v{i}-").repeat(i as usize + 2).into_bytes()
}

fn opts() -> ArenaOptions {
    ArenaOptions {
        sync: SyncMode::Always,
        auto_compact: false,
        checkpoint_bytes: 0,
        inline_max: 0, // every put needs its blob fsynced: the blob file tail matters
        ..Default::default()
    }
}

fn inline_opts() -> ArenaOptions {
    ArenaOptions {
        inline_max: 16 << 10,
        ..opts()
    }
}

#[test]
fn inline_puts_survive_losing_the_unsynced_blob_tail() {
    // With put-inline records (sync=always, small values) the blob file is not
    // fsynced per put; a power loss can drop its tail. Recovery rewrites those
    // blobs from the WAL.
    let src = tempdir("inline-src");
    let gen_lo;
    {
        let a = BlobArena::open(&src, inline_opts()).unwrap();
        a.put(b"first", &value(0)).unwrap();
        a.checkpoint().unwrap(); // syncs the blob file up to here
        gen_lo = a.stats().data_bytes + 32;
        for i in 1..10 {
            a.put(format!("k{i}").as_bytes(), &value(i)).unwrap();
        }
    }
    let gen_hi = std::fs::metadata(find(&src, "blob")).unwrap().len();
    for cut in (gen_lo..=gen_hi).step_by(7).chain([gen_hi]) {
        let dst = tempdir("inline-cut");
        copy_dir(&src, &dst);
        let blob = find(&dst, "blob");
        let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let a = BlobArena::open(&dst, inline_opts()).unwrap();
        assert_eq!(a.stats().recovery.truncated_bytes, 0);
        assert_eq!(&*a.get(b"first").unwrap().unwrap(), &value(0)[..]);
        for i in 1..10 {
            assert_eq!(
                &*a.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
                &value(i)[..],
                "cut at {cut}"
            );
        }
        assert_eq!(a.stats().recovery.repaired_blobs > 0, cut < gen_hi);
        a.verify().unwrap();
        drop(a);
        std::fs::remove_dir_all(&dst).unwrap();
    }
    std::fs::remove_dir_all(&src).unwrap();
}

#[test]
fn truncating_wal_or_blob_at_every_offset_recovers_the_prefix() {
    let src = tempdir("src");
    let (wal_lo, wal_hi, gen_lo, gen_hi);
    {
        let a = BlobArena::open(&src, opts()).unwrap();
        for i in 0..9 {
            a.put(format!("k{i}").as_bytes(), &value(i)).unwrap();
        }
        let s = a.stats();
        (wal_lo, gen_lo) = (s.wal_bytes, s.data_bytes + 32);
        a.put(b"k9", &value(9)).unwrap();
        let s = a.stats();
        (wal_hi, gen_hi) = (s.wal_bytes, s.data_bytes + 32);
    }
    for (ext, lo, hi) in [("log", wal_lo, wal_hi), ("blob", gen_lo, gen_hi)] {
        for cut in lo..=hi {
            let dst = tempdir("cut");
            copy_dir(&src, &dst);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(find(&dst, ext))
                .unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            // A cut WAL tail is what a crash during the last put leaves (that put
            // never returned): the acknowledged prefix must be intact. A cut blob
            // under an intact WAL (whose close sync mark proves the blob was
            // synced) is corruption: open refuses and changes nothing.
            if ext == "blob" && cut < hi {
                let before = std::fs::read(find(&dst, "log")).unwrap();
                let err = BlobArena::open(&dst, opts()).err().expect("must refuse");
                assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
                assert_eq!(std::fs::read(find(&dst, "log")).unwrap(), before);
                std::fs::remove_dir_all(&dst).unwrap();
                continue;
            }
            let a = BlobArena::open(&dst, opts()).unwrap();
            for i in 0..9 {
                assert_eq!(
                    &*a.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
                    &value(i)[..]
                );
            }
            assert_eq!(
                a.get(b"k9").unwrap().is_some(),
                cut == hi,
                "{ext} cut at {cut}"
            );
            a.verify().unwrap();
            drop(a);
            std::fs::remove_dir_all(&dst).unwrap();
        }
    }
    std::fs::remove_dir_all(&src).unwrap();
}

#[test]
fn orphans_of_an_interrupted_compaction_are_removed() {
    let dir = tempdir("orphan");
    {
        let a = BlobArena::open(&dir, opts()).unwrap();
        a.put(b"a", b"1").unwrap();
    }
    // A compaction that died before its checkpoint leaves these behind.
    std::fs::write(dir.join("gen-0000000007.blob"), b"SCBLOB01junk").unwrap();
    std::fs::write(dir.join("gen-0000000008.blob.tmp"), b"partial").unwrap();
    std::fs::write(dir.join("checkpoint.tmp"), b"partial").unwrap();
    let a = BlobArena::open(&dir, opts()).unwrap();
    assert_eq!(a.stats().recovery.removed_files, 3);
    assert_eq!(&*a.get(b"a").unwrap().unwrap(), b"1");
    drop(a);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_checkpoint_or_missing_generation_is_a_clear_error() {
    let dir = tempdir("ck");
    {
        let a = BlobArena::open(&dir, opts()).unwrap();
        a.put(b"a", b"1").unwrap();
        a.checkpoint().unwrap();
    }
    let ck = dir.join("checkpoint");
    let mut bytes = std::fs::read(&ck).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&ck, &bytes).unwrap();
    let err = BlobArena::open(&dir, opts()).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    bytes[20] ^= 1;
    std::fs::write(&ck, &bytes).unwrap();
    std::fs::remove_file(find(&dir, "blob")).unwrap();
    let err = BlobArena::open(&dir, opts()).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn readers_see_whole_values_during_writes_and_compaction() {
    let dir = tempdir("conc");
    let a = Arc::new(
        BlobArena::open(
            &dir,
            ArenaOptions {
                sync: SyncMode::None,
                compact_min_dead_bytes: 8 << 10,
                compact_dead_ratio: 0.3,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let val = |k: u32, v: u32| -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..(4 + v % 40) {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    };
    for k in 0..32u32 {
        a.put(&k.to_le_bytes(), &val(k, 0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4u32)
        .map(|t| {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut views = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let k = (n as u32 * 7 + t) % 32;
                    let v = a.get(&k.to_le_bytes()).unwrap().expect("key vanished");
                    let ver = u32::from_le_bytes(v[4..8].try_into().unwrap());
                    assert_eq!(&*v, &val(k, ver)[..], "garbage for key {k}");
                    if n.is_multiple_of(50) && views.len() < 1000 {
                        views.push((k, ver, v)); // hold some views across compactions
                    }
                    n += 1;
                }
                for (k, ver, v) in views {
                    assert_eq!(&*v, &val(k, ver)[..]);
                }
                n
            })
        })
        .collect();
    for v in 1..3000u32 {
        a.put(&(v % 32).to_le_bytes(), &val(v % 32, v)).unwrap();
        if v % 500 == 0 {
            a.compact().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert!(a.stats().compactions >= 5);
    a.verify().unwrap();
    drop(a);
    std::fs::remove_dir_all(&dir).unwrap();
}
