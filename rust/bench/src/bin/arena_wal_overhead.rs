//! WAL overhead of the blob arena against a raw append of the same bytes, and
//! group-commit scaling of `sync=always` puts over writer threads.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin arena_wal_overhead -- [DIR] [THREADS...]
//! ```
//!
//! Prints, per value size, the time to append N values with `put_many`
//! (batches of 64) against `pwritev` of the same values to a plain file, at
//! `sync=none` and with one fsync per batch; then `sync=always` single puts
//! from 1..T threads (puts/s and fsync rounds).

use std::fs::OpenOptions;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};

fn raw_append(dir: &std::path::Path, values: &[Vec<u8>], batch: usize, fsync: bool) -> f64 {
    let path = dir.join("raw.bin");
    let _ = std::fs::remove_file(&path);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let t0 = Instant::now();
    for chunk in values.chunks(batch) {
        let iov: Vec<IoSlice<'_>> = chunk.iter().map(|v| IoSlice::new(v)).collect();
        let mut done = 0usize;
        let total: usize = chunk.iter().map(|v| v.len()).sum();
        while done < total {
            // SAFETY: IoSlice is ABI-compatible with iovec; the buffers are live.
            let n = unsafe {
                libc::writev(
                    f.as_raw_fd(),
                    iov.as_ptr() as *const libc::iovec,
                    iov.len() as i32,
                )
            };
            assert!(n > 0);
            done += n as usize;
            assert_eq!(done, total, "short write in the raw baseline");
        }
        if fsync {
            f.sync_data().unwrap();
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    dt
}

fn arena_append(dir: &std::path::Path, values: &[Vec<u8>], batch: usize, sync: SyncMode) -> f64 {
    let path = dir.join("arena");
    let _ = std::fs::remove_dir_all(&path);
    let a = BlobArena::open(
        &path,
        ArenaOptions {
            sync,
            auto_compact: false,
            ..Default::default()
        },
    )
    .unwrap();
    let keys: Vec<Vec<u8>> = (0..values.len())
        .map(|i| format!("key{i:010}").into_bytes())
        .collect();
    let t0 = Instant::now();
    for (kc, vc) in keys.chunks(batch).zip(values.chunks(batch)) {
        let ks: Vec<&[u8]> = kc.iter().map(|k| &k[..]).collect();
        let vs: Vec<&[u8]> = vc.iter().map(|v| &v[..]).collect();
        a.put_many(&ks, &vs).unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    drop(a);
    std::fs::remove_dir_all(&path).unwrap();
    dt
}

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..3).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| std::env::temp_dir().display().to_string()),
    )
    .join(format!("arena-wal-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let threads: Vec<usize> = {
        let t: Vec<usize> = args.map(|a| a.parse().expect("thread count")).collect();
        if t.is_empty() {
            vec![1, 2, 4, 8, 16]
        } else {
            t
        }
    };
    println!("WAL overhead vs raw append (batches of 64; best of 3)");
    println!(
        "{:>8} {:>6} {:>12} {:>12} {:>10}",
        "value", "sync", "arena MB/s", "raw MB/s", "overhead"
    );
    // ARENA_WAL_SIZES=100,4096 limits the rows (for A/B runs).
    let only: Option<Vec<usize>> = std::env::var("ARENA_WAL_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    for (size, n) in [(100usize, 200_000usize), (4096, 32_768), (1 << 20, 256)] {
        if only.as_ref().is_some_and(|o| !o.contains(&size)) {
            continue;
        }
        let values: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 251) as u8; size]).collect();
        let mb = (size * n) as f64 / 1e6;
        for (label, sync, fsync) in [
            ("none", SyncMode::None, false),
            ("always", SyncMode::Always, true),
        ] {
            // ARENA_WAL_SYNC=none|always limits the rows too.
            if std::env::var("ARENA_WAL_SYNC").is_ok_and(|m| m != label) {
                continue;
            }
            let (vals, mb) = if fsync {
                (
                    &values[..values.len().min(64 * 64)],
                    mb * (values.len().min(64 * 64) as f64 / n as f64),
                )
            } else {
                (&values[..], mb)
            };
            let ours = best(|| arena_append(&dir, vals, 64, sync));
            let raw = best(|| raw_append(&dir, vals, 64, fsync));
            println!(
                "{:>8} {:>6} {:>12.0} {:>12.0} {:>9.1}%",
                size,
                label,
                mb / ours,
                mb / raw,
                100.0 * (ours / raw - 1.0)
            );
        }
    }
    println!();
    println!("sync=always group commit: single 4 KiB puts from T threads, 2 s each");
    println!(
        "{:>8} {:>12} {:>12} {:>14}",
        "threads", "puts/s", "fsyncs", "puts/fsync"
    );
    for &t in &threads {
        let path = dir.join(format!("gc{t}"));
        let a = Arc::new(
            BlobArena::open(
                &path,
                ArenaOptions {
                    sync: SyncMode::Always,
                    auto_compact: false,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let t0 = Instant::now();
        let handles: Vec<_> = (0..t)
            .map(|id| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let v = vec![id as u8; 4096];
                    let mut n = 0u64;
                    while t0.elapsed().as_secs_f64() < 2.0 {
                        a.put(format!("t{id}-{n}").as_bytes(), &v).unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let puts: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let dt = t0.elapsed().as_secs_f64();
        let syncs = a.stats().syncs.max(1);
        println!(
            "{:>8} {:>12.0} {:>12} {:>14.1}",
            t,
            puts as f64 / dt,
            syncs,
            puts as f64 / syncs as f64
        );
        drop(a);
        std::fs::remove_dir_all(&path).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
