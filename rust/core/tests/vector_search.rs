//! Flat and clustered INT8 search: recall against exact FP32 search,
//! identical results across kernels and thread counts, removal, bad input.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use slabcache_core::vector::{ClusteredIndex, FlatIndex, Kernel, Metric};
use slabcache_core::ErrorKind;

/// Named `vector` so that `cargo test vector` selects these tests.
mod vector {
    use super::*;

    fn normal(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| StandardNormal.sample(rng)).collect()
    }

    fn normalize_rows(v: &mut [f32], d: usize) {
        for row in v.chunks_exact_mut(d) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
    }

    /// `n` points around `c` gaussian centers (the shape of real embeddings).
    fn clustered_data(rng: &mut impl Rng, n: usize, d: usize, c: usize, spread: f32) -> Vec<f32> {
        let centers = normal(rng, c * d);
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let k = rng.gen_range(0..c);
            for j in 0..d {
                let z: f32 = StandardNormal.sample(rng);
                out.push(centers[k * d + j] + spread * z);
            }
        }
        out
    }

    /// Exact FP32 top-k ids (higher score first; for l2 the smallest distance).
    fn exact_topk(
        data: &[f32],
        queries: &[f32],
        d: usize,
        k: usize,
        metric: Metric,
    ) -> Vec<Vec<usize>> {
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        queries
            .chunks_exact(d)
            .map(|q| {
                let mut s: Vec<(f32, usize)> = data
                    .chunks_exact(d)
                    .enumerate()
                    .map(|(i, x)| {
                        let dot: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
                        let v = match metric {
                            Metric::Ip => dot,
                            Metric::Cosine => dot / (norm(q) * norm(x)),
                            Metric::L2 => {
                                -q.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                            }
                        };
                        (v, i)
                    })
                    .collect();
                s.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
                s.truncate(k);
                s.into_iter().map(|p| p.1).collect()
            })
            .collect()
    }

    fn recall(found: &[i64], truth: &[Vec<usize>], k: usize) -> f64 {
        let mut hit = 0;
        for (i, t) in truth.iter().enumerate() {
            let got = &found[i * k..(i + 1) * k];
            hit += t.iter().filter(|&&id| got.contains(&(id as i64))).count();
        }
        hit as f64 / (truth.len() * k) as f64
    }

    #[test]
    fn flat_recall_at_10_on_normalized_random_and_clustered_data() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let (n, d, m, k) = (4000, 128, 50, 10);
        let mut random = normal(&mut rng, n * d);
        normalize_rows(&mut random, d);
        let clustered = clustered_data(&mut rng, n, d, 40, 1.0);
        for (name, data) in [("random", &random), ("clustered", &clustered)] {
            let queries: Vec<f32> = data[..m * d].iter().map(|x| x + 0.05).collect();
            for metric in [Metric::Cosine, Metric::Ip, Metric::L2] {
                let mut index = FlatIndex::new(d, metric).unwrap();
                index.add(data, None).unwrap();
                let (scores, ids) = index.search_batch(&queries, k).unwrap();
                let r = recall(&ids, &exact_topk(data, &queries, d, k, metric), k);
                // Near-ties on synthetic data: INT8 measures 0.985-0.995 (as FAISS SQ8); floor 0.98.
                assert!(r >= 0.98, "{name} {metric:?}: recall@10 = {r}");
                for row in scores.chunks_exact(k) {
                    for w in row.windows(2) {
                        if metric.higher_is_closer() {
                            assert!(w[0] >= w[1]);
                        } else {
                            assert!(w[0] <= w[1]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scores_approximate_the_exact_metric() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let d = 96;
        let data = normal(&mut rng, 50 * d);
        let q = normal(&mut rng, d);
        for metric in [Metric::Cosine, Metric::Ip, Metric::L2] {
            let mut index = FlatIndex::new(d, metric).unwrap();
            index.add(&data, None).unwrap();
            let (scores, ids) = index.search_batch(&q, 50).unwrap();
            for (s, &id) in scores.iter().zip(&ids) {
                let x = &data[id as usize * d..(id as usize + 1) * d];
                let dot: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
                let nq = q.iter().map(|v| v * v).sum::<f32>().sqrt();
                let nx = x.iter().map(|v| v * v).sum::<f32>().sqrt();
                let (exact, tol) = match metric {
                    Metric::Ip => (dot, 0.02 * nq * nx),
                    Metric::Cosine => (dot / (nq * nx), 0.02),
                    Metric::L2 => (
                        q.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum(),
                        0.04 * nq * nx,
                    ),
                };
                assert!((s - exact).abs() <= tol, "{metric:?}: {s} vs {exact}");
            }
        }
    }

    #[test]
    fn every_kernel_and_thread_count_gives_identical_results() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (n, d, m, k) = (3000, 383, 37, 7);
        let data = normal(&mut rng, n * d);
        let queries = normal(&mut rng, m * d);
        let mut index = FlatIndex::with_kernel(d, Metric::Cosine, Kernel::scalar()).unwrap();
        index.add(&data, None).unwrap();
        let want = index.search_batch(&queries, k).unwrap();
        for kernel in Kernel::available() {
            index.set_kernel(kernel);
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| index.search_batch(&queries, k).unwrap());
                assert_eq!(got, want, "kernel {} threads {threads}", kernel.name());
            }
        }
    }

    #[test]
    fn l2_keeps_a_stored_vector_at_distance_zero_from_itself() {
        // Large-norm vectors whose neighbours are close: the distance must come from
        // the dequantized row, not from exact norms minus a quantized dot product.
        let d = 8;
        let data: Vec<f32> = (0..400 * d)
            .map(|i| ((i * 7919) % 101) as f32 - 50.0)
            .collect();
        let mut index = FlatIndex::new(d, Metric::L2).unwrap();
        index.add(&data, None).unwrap();
        let (dist, ids) = index.search_batch(&data[..20 * d], 1).unwrap();
        for (i, (&dd, &id)) in dist.iter().zip(&ids).enumerate() {
            let row = &data[id as usize * d..(id as usize + 1) * d];
            assert_eq!(row, &data[i * d..(i + 1) * d], "query {i} found {id}");
            assert!(dd < 1.0, "query {i}: distance to itself {dd}");
        }
    }

    #[test]
    fn k_beyond_the_store_is_padded() {
        let mut index = FlatIndex::new(2, Metric::L2).unwrap();
        index.add(&[0.0, 1.0, 1.0, 0.0], Some(&[5, 9])).unwrap();
        let (scores, ids) = index.search_batch(&[0.0, 1.0, 1.0, 0.0], 4).unwrap();
        assert_eq!(ids, vec![5, 9, -1, -1, 9, 5, -1, -1]);
        assert!(scores[2].is_infinite() && scores[2] > 0.0);
        let empty = FlatIndex::new(2, Metric::Ip).unwrap();
        let (scores, ids) = empty.search_batch(&[1.0, 1.0], 2).unwrap();
        assert_eq!(ids, vec![-1, -1]);
        assert_eq!(scores, vec![f32::NEG_INFINITY; 2]);
    }

    #[test]
    fn removal_hides_rows_and_compaction_keeps_the_rest_searchable() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d = 32;
        let data = normal(&mut rng, 1000 * d);
        let mut index = FlatIndex::new(d, Metric::Cosine).unwrap();
        let ids = index.add(&data, None).unwrap();
        assert_eq!(ids, (0..1000).collect::<Vec<u64>>());
        // Remove every odd id in a few steps (compaction triggers along the way).
        let odd: Vec<u64> = (0..1000).filter(|i| i % 2 == 1).collect();
        for chunk in odd.chunks(100) {
            index.remove(chunk).unwrap();
        }
        assert_eq!(index.len(), 500);
        for i in (0..1000).step_by(97) {
            let (_, found) = index.search_batch(&data[i * d..(i + 1) * d], 1).unwrap();
            if i % 2 == 0 {
                assert_eq!(found[0], i as i64, "even id {i} must still be found");
            } else {
                assert_ne!(found[0], i as i64, "removed id {i} must not be found");
                assert!(!index.contains(i as u64));
            }
        }
        // Unknown ids: NotFound, and nothing changes.
        let err = index.remove(&[0, 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(index.contains(0));
        // New ids continue after the largest ever used.
        assert_eq!(index.add(&data[..d], None).unwrap(), vec![1000]);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut index = FlatIndex::new(4, Metric::Cosine).unwrap();
        index.add(&[1.0, 2.0, 3.0, 4.0], Some(&[3])).unwrap();
        let cases: Vec<(Vec<f32>, Option<Vec<u64>>, ErrorKind)> = vec![
            (vec![1.0; 5], None, ErrorKind::InvalidArgument),
            (
                vec![1.0, f32::NAN, 0.0, 0.0],
                None,
                ErrorKind::InvalidArgument,
            ),
            (
                vec![1.0, f32::INFINITY, 0.0, 0.0],
                None,
                ErrorKind::InvalidArgument,
            ),
            (vec![1.0; 8], Some(vec![1]), ErrorKind::InvalidArgument),
            (vec![1.0; 8], Some(vec![1, 1]), ErrorKind::AlreadyExists),
            (vec![1.0; 4], Some(vec![3]), ErrorKind::AlreadyExists),
            (
                vec![1.0; 4],
                Some(vec![u64::MAX]),
                ErrorKind::InvalidArgument,
            ),
        ];
        for (v, ids, kind) in cases {
            let err = index.add(&v, ids.as_deref()).unwrap_err();
            assert_eq!(err.kind(), kind, "{}", err.message());
            assert_eq!(index.len(), 1);
        }
        assert_eq!(
            index.search_batch(&[1.0; 3], 1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            index.search_batch(&[f32::NAN; 4], 1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            index.search_batch(&[1.0; 4], 0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(FlatIndex::new(0, Metric::L2).is_err());
    }

    #[test]
    fn clustered_recall_rises_with_nprobe_and_is_exact_at_nlist() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let (n, d, m, k, nlist) = (6000, 64, 40, 10, 32);
        let data = clustered_data(&mut rng, n, d, 50, 1.0);
        let queries: Vec<f32> = data[..m * d].iter().map(|x| x + 0.1).collect();
        let truth = exact_topk(&data, &queries, d, k, Metric::Cosine);
        let mut index = ClusteredIndex::new(d, Metric::Cosine, nlist, 1).unwrap();
        index.add(&data, None).unwrap();
        assert_eq!(index.page_sizes().iter().sum::<usize>(), n);
        let mut last = 0.0;
        for nprobe in [1, 4, 16, nlist] {
            index.set_nprobe(nprobe).unwrap();
            let (_, ids) = index.search_batch(&queries, k).unwrap();
            let r = recall(&ids, &truth, k);
            assert!(
                r + 1e-9 >= last,
                "recall fell from {last} to {r} at nprobe {nprobe}"
            );
            last = r;
        }
        assert!(last >= 0.98, "nprobe = nlist recall {last}");
        // nprobe = nlist gives the same ids as the flat index.
        let mut flat = FlatIndex::new(d, Metric::Cosine).unwrap();
        flat.add(&data, None).unwrap();
        let (_, want) = flat.search_batch(&queries, k).unwrap();
        let (_, got) = index.search_batch(&queries, k).unwrap();
        let agree = want.iter().zip(&got).filter(|(a, b)| a == b).count();
        assert!(agree as f64 >= 0.99 * want.len() as f64);
        // Removal.
        index.remove(&[0, 1, 2]).unwrap();
        assert_eq!(index.len(), n - 3);
        let (_, ids) = index.search_batch(&data[..d], 3).unwrap();
        assert!(!ids.contains(&0));
        assert_eq!(index.remove(&[0]).unwrap_err().kind(), ErrorKind::NotFound);
    }

    /// A batch is scanned query by query (few queries per list) or list by
    /// list (many), one query alone possibly split across threads: every way
    /// must give each query exactly what it gets searched alone, with and
    /// without tombstones, for every metric and code.
    #[test]
    fn clustered_batch_paths_match_single_queries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(33);
        let (n, d, k, nlist) = (4000, 48, 10, 24);
        let mut data = clustered_data(&mut rng, n, d, 30, 0.8);
        for metric in [Metric::L2, Metric::Cosine, Metric::Ip] {
            for nonneg in [false, true] {
                if nonneg {
                    data.iter_mut().for_each(|x| *x = x.abs()); // asymmetric codes
                }
                let mut index = ClusteredIndex::new(d, metric, nlist, 1).unwrap();
                index.add(&data, None).unwrap();
                index
                    .remove(&(0..400).step_by(3).collect::<Vec<u64>>())
                    .unwrap();
                // 3 lists of 24 for 4 queries: query by query; 6 for 300: list by list.
                for (nprobe, m) in [(3, 4), (6, 300), (24, 2)] {
                    index.set_nprobe(nprobe).unwrap();
                    let queries = &data[d * 500..d * (500 + m)];
                    let (bs, bi) = index.search_batch(queries, k).unwrap();
                    for (i, q) in queries.chunks_exact(d).enumerate() {
                        let (s1, i1) = index.search_batch(q, k).unwrap();
                        assert_eq!(&bi[i * k..(i + 1) * k], &i1[..], "{metric:?} q{i}");
                        assert_eq!(&bs[i * k..(i + 1) * k], &s1[..], "{metric:?} q{i}");
                    }
                }
            }
        }
    }

    /// A 1-thread and a 4-thread rayon pool (unsplit and split searches).
    fn one_and_four_thread_pools() -> Vec<rayon::ThreadPool> {
        [1, 4]
            .iter()
            .map(|&t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
            })
            .collect()
    }

    /// One query whose probed lists hold at least two `crew::PART_WORK` of
    /// byte-products is split into parts (each every p-th list, heaps merged,
    /// parts taken by the caller and whichever crew threads join): it must give
    /// what the same query gets on one thread (unsplit), and
    /// what it gets inside a batch, with tombstones, for every metric and code.
    #[test]
    fn clustered_one_query_split_equals_unsplit() {
        use slabcache_core::vector::crew::PART_WORK;
        let mut rng = rand::rngs::StdRng::seed_from_u64(41);
        let (n, d, k, nlist) = (36_000, 128, 10, 8);
        // Every list probed: rows × dim = 4.6M byte-products, 70 parts.
        assert!(n * d >= 2 * PART_WORK, "the test must reach the split");
        let mut data = clustered_data(&mut rng, n, d, 40, 0.8);
        let pools = one_and_four_thread_pools();
        for metric in [Metric::L2, Metric::Cosine, Metric::Ip] {
            for nonneg in [false, true] {
                if nonneg {
                    data.iter_mut().for_each(|x| *x = x.abs()); // asymmetric codes
                }
                let mut index = ClusteredIndex::new(d, metric, nlist, nlist).unwrap();
                index.add(&data, None).unwrap();
                index
                    .remove(&(0..3000).step_by(7).collect::<Vec<u64>>())
                    .unwrap();
                let queries = &data[d * 100..d * 120];
                let (bs, bi) = pools[1].install(|| index.search_batch(queries, k).unwrap());
                for (i, q) in queries.chunks_exact(d).enumerate() {
                    let one = pools[0].install(|| index.search_batch(q, k).unwrap());
                    let split = pools[1].install(|| index.search_batch(q, k).unwrap());
                    assert_eq!(split, one, "{metric:?} nonneg {nonneg} q{i}");
                    assert_eq!(&bi[i * k..(i + 1) * k], &one.1[..], "{metric:?} q{i}");
                    assert_eq!(&bs[i * k..(i + 1) * k], &one.0[..], "{metric:?} q{i}");
                }
            }
        }
    }

    /// The probe of one query ranks every centroid through the crew split
    /// (1,100 × 128 byte-products: three parts) and its own selection: it
    /// must name the same lists in the same order as the batch probe, on one
    /// thread and on four, up to every list; bad arguments are refused.
    #[test]
    fn one_query_probe_names_the_batch_probes_lists() {
        use slabcache_core::vector::crew::PART_WORK;
        let mut rng = rand::rngs::StdRng::seed_from_u64(47);
        let (d, nlist) = (128, 1100);
        assert!(nlist * d >= 2 * PART_WORK, "the test must reach the split");
        let data = clustered_data(&mut rng, 3 * nlist, d, 200, 0.8);
        let pools = one_and_four_thread_pools();
        for metric in [Metric::L2, Metric::Cosine, Metric::Ip] {
            let mut index = ClusteredIndex::new(d, metric, nlist, 8).unwrap();
            let err = index.probe_lists(&data[..d], 4).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "untrained");
            index.add(&data, None).unwrap();
            let queries = &data[d * 7..d * 17];
            for nprobe in [1, 64, nlist, nlist + 5] {
                let np = nprobe.min(nlist);
                let batch = index.probe_lists(queries, nprobe).unwrap();
                assert_eq!(batch.len(), 10 * np);
                for (i, q) in queries.chunks_exact(d).enumerate() {
                    for pool in &pools {
                        let one = pool.install(|| index.probe_lists(q, nprobe).unwrap());
                        assert_eq!(
                            one,
                            &batch[i * np..(i + 1) * np],
                            "{metric:?} q{i} {nprobe}"
                        );
                    }
                }
                if np == nlist {
                    let mut all = batch[..np].to_vec();
                    all.sort_unstable();
                    assert!(all.iter().copied().eq(0..nlist as u32), "every list once");
                }
            }
            for (q, nprobe) in [(&data[..d], 0), (&data[..d - 1], 4)] {
                let err = index.probe_lists(q, nprobe).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            }
        }
    }

    /// One flat query over at least two `crew::PART_WORK` of byte-products is
    /// cut into row parts that the caller and the crew take: it must give what
    /// it gets on a 1-thread pool (one pass) and inside a batch, with
    /// tombstones, for every metric and code.
    #[test]
    fn flat_one_query_split_equals_unsplit() {
        use slabcache_core::vector::crew::PART_WORK;
        let mut rng = rand::rngs::StdRng::seed_from_u64(43);
        let (n, d, k) = (12_000, 96, 10);
        assert!(n * d >= 2 * PART_WORK, "the test must reach the split");
        let mut data = clustered_data(&mut rng, n, d, 30, 0.8);
        let pools = one_and_four_thread_pools();
        for metric in [Metric::L2, Metric::Cosine, Metric::Ip] {
            for nonneg in [false, true] {
                if nonneg {
                    data.iter_mut().for_each(|x| *x = x.abs());
                }
                let mut index = FlatIndex::new(d, metric).unwrap();
                index.add(&data, None).unwrap();
                index
                    .remove(&(0..4000).step_by(5).collect::<Vec<u64>>())
                    .unwrap();
                let queries = &data[d * 100..d * 130];
                let (bs, bi) = pools[1].install(|| index.search_batch(queries, k).unwrap());
                for (i, q) in queries.chunks_exact(d).enumerate() {
                    let one = pools[0].install(|| index.search_batch(q, k).unwrap());
                    for _ in 0..3 {
                        let split = pools[1].install(|| index.search_batch(q, k).unwrap());
                        assert_eq!(split, one, "{metric:?} nonneg {nonneg} q{i}");
                    }
                    assert_eq!(&bi[i * k..(i + 1) * k], &one.1[..], "{metric:?} q{i}");
                    assert_eq!(&bs[i * k..(i + 1) * k], &one.0[..], "{metric:?} q{i}");
                }
            }
        }
    }

    #[test]
    fn clustered_needs_enough_vectors_to_train() {
        let mut index = ClusteredIndex::new(4, Metric::L2, 8, 2).unwrap();
        let err = index.add(&[1.0; 12], None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(index.is_empty());
        let (_, ids) = index.search_batch(&[1.0; 4], 2).unwrap();
        assert_eq!(ids, vec![-1, -1]);
    }
}
