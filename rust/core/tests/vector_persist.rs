//! Save/load round trips and corrupt-file detection.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use slabcache_core::vector::{load_index, AnyIndex, ClusteredIndex, FlatIndex, Metric};
use slabcache_core::ErrorKind;

/// Named `vector` so that `cargo test vector` selects these tests.
mod vector {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("slabcache-vec-{}-{name}", std::process::id()))
    }

    fn data(n: usize, d: usize) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
        (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }

    fn round_trip(index: AnyIndex, name: &str) {
        let d = index.dim();
        let q = data(20, d);
        let before = index.search_batch(&q, 5).unwrap();
        let path = tmp(name);
        index.save(&path).unwrap();
        let loaded = load_index(&path).unwrap();
        assert_eq!(loaded.len(), index.len());
        assert_eq!(loaded.metric(), index.metric());
        assert_eq!(loaded.search_batch(&q, 5).unwrap(), before);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn flat_and_clustered_round_trip_with_removals() {
        let d = 48;
        for metric in [Metric::Cosine, Metric::Ip, Metric::L2] {
            let mut flat = FlatIndex::new(d, metric).unwrap();
            flat.add(&data(500, d), None).unwrap();
            flat.remove(&[3, 7, 11]).unwrap();
            round_trip(AnyIndex::Flat(flat.clone()), "flat");
            let mut clustered = ClusteredIndex::new(d, metric, 8, 3).unwrap();
            clustered.add(&data(500, d), None).unwrap();
            clustered.remove(&[1, 2]).unwrap();
            round_trip(AnyIndex::Clustered(clustered), "clustered");
        }
        // Ids continue after a reload.
        let mut flat = FlatIndex::new(4, Metric::L2).unwrap();
        flat.add(&data(3, 4), Some(&[100, 5, 6])).unwrap();
        let path = tmp("next-id");
        AnyIndex::Flat(flat).save(&path).unwrap();
        let mut loaded = load_index(&path).unwrap();
        assert_eq!(loaded.add(&data(1, 4), None).unwrap(), vec![101]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_clear_errors() {
        let mut flat = FlatIndex::new(16, Metric::Cosine).unwrap();
        flat.add(&data(50, 16), None).unwrap();
        let path = tmp("corrupt");
        AnyIndex::Flat(flat).save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"hello world, not an index".to_vec(),
            good[..good.len() / 2].to_vec(),
            good[..good.len() - 1].to_vec(),
        ];
        for pos in [9usize, 20, 40, good.len() / 2, good.len() - 2] {
            let mut bad = good.clone();
            bad[pos] ^= 0x5a;
            cases.push(bad);
        }
        let mut extra = good.clone();
        extra.push(0);
        cases.push(extra);
        for (i, bytes) in cases.iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            let err = load_index(&path).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Corrupt,
                "case {i}: {}",
                err.message()
            );
        }
        std::fs::remove_file(&path).unwrap();
        let err = load_index(tmp("missing")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
