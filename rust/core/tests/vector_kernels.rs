//! Every SIMD kernel this CPU supports must equal the scalar kernel exactly,
//! for every dimension (tails included) and on edge inputs.
//!
//! Kernels the CPU lacks are skipped and named on stderr (run with
//! `-- --nocapture` to see which ran).

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use slabcache_core::vector::{Kernel, KernelKind};

/// Named `vector` so that `cargo test vector` selects these tests.
mod vector {
    use super::*;

    const DIMS: &[usize] = &[
        1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 255, 256, 383, 384,
        511, 767, 768, 769, 1024, 1536, 1537, 4099,
    ];

    fn simd_kernels() -> Vec<Kernel> {
        let avail = Kernel::available();
        let skipped: Vec<&str> = KernelKind::ALL
            .iter()
            .filter(|k| !k.is_supported())
            .map(|k| k.name())
            .collect();
        eprintln!(
            "kernels tested: {}; skipped (not on this CPU/arch): {}",
            avail
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", "),
            if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join(", ")
            }
        );
        avail
            .into_iter()
            .filter(|k| k.kind() != KernelKind::Scalar)
            .collect()
    }

    /// Kernels documented as exact for every i8 (including -128).
    fn full_range(k: Kernel) -> bool {
        matches!(
            k.kind(),
            KernelKind::Scalar
                | KernelKind::Avx512Vnni
                | KernelKind::Neon
                | KernelKind::NeonDotprod
        )
    }

    fn random_codes(rng: &mut impl Rng, n: usize, lo: i8) -> Vec<i8> {
        (0..n).map(|_| rng.gen_range(lo..=127)).collect()
    }

    fn check_dot(k: Kernel, a: &[i8], b: &[i8]) {
        let want = Kernel::scalar().dot(a, b);
        assert_eq!(k.dot(a, b), want, "kernel {} dim {}", k.name(), a.len());
        assert_eq!(
            k.dot(b, a),
            want,
            "kernel {} dim {} (swapped)",
            k.name(),
            a.len()
        );
    }

    #[test]
    fn scalar_dot_is_the_definition() {
        let a: Vec<i8> = (0..300).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..300).map(|i| ((i * 91) % 255 - 127) as i8).collect();
        let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
        assert_eq!(Kernel::scalar().dot(&a, &b), want);
    }

    #[test]
    fn every_kernel_equals_scalar_on_random_codes_for_every_dim() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for k in simd_kernels() {
            for &d in DIMS {
                for _ in 0..5 {
                    let a = random_codes(&mut rng, d, -127);
                    let b = random_codes(&mut rng, d, -127);
                    check_dot(k, &a, &b);
                }
            }
        }
    }

    #[test]
    fn every_kernel_equals_scalar_on_extreme_codes() {
        for k in simd_kernels() {
            for &d in DIMS {
                let plus = vec![127i8; d];
                let minus = vec![-127i8; d];
                let alt: Vec<i8> = (0..d)
                    .map(|i| if i % 2 == 0 { 127 } else { -127 })
                    .collect();
                let zero = vec![0i8; d];
                for a in [&plus, &minus, &alt, &zero] {
                    for b in [&plus, &minus, &alt, &zero] {
                        check_dot(k, a, b);
                    }
                }
                assert_eq!(k.dot(&plus, &plus), 16129 * d as i32);
                assert_eq!(k.dot(&plus, &minus), -16129 * d as i32);
            }
        }
    }

    #[test]
    fn full_range_kernels_are_exact_with_minus_128() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for k in Kernel::available().into_iter().filter(|&k| full_range(k)) {
            for &d in DIMS {
                let m128 = vec![-128i8; d];
                let a = random_codes(&mut rng, d, -128);
                check_dot(k, &m128, &m128);
                check_dot(k, &m128, &a);
                check_dot(k, &a, &a);
            }
        }
    }

    #[test]
    fn every_kernel_equals_scalar_in_tiles() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for k in simd_kernels() {
            for &d in &[1usize, 17, 31, 32, 33, 64, 65, 128, 383, 768, 1537] {
                for nq in [1usize, 2, 3, 4, 5, 7, 8, 9, 16] {
                    for nr in [1usize, 3, 4, 5, 7, 8, 13] {
                        let q = random_codes(&mut rng, nq * d, -127);
                        let r = random_codes(&mut rng, nr * d, -127);
                        let mut want = vec![0i32; nr * nq];
                        let mut got = vec![0i32; nr * nq];
                        Kernel::scalar().dots(&q, &r, d, &mut want);
                        k.dots(&q, &r, d, &mut got);
                        assert_eq!(got, want, "kernel {} dim {d} nq {nq} nr {nr}", k.name());
                    }
                }
            }
        }
    }

    /// The plain definition, independent of every kernel (scalar included).
    fn reference(a: &[i8], b: &[i8]) -> i32 {
        a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
    }

    /// Asymmetric codes put -128 in stored rows; queries stay symmetric
    /// (-127..=127). Every kernel — scalar, AVX2, AVX-512 BW/VNNI and, on
    /// aarch64, NEON/SDOT — must be exact on that mix (the sign trick is:
    /// |−128| = 128 as u8, and 2·128·127 < 2^15).
    #[test]
    fn every_kernel_is_exact_on_asymmetric_rows() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for k in Kernel::available() {
            for &d in DIMS {
                let mut row = random_codes(&mut rng, d, -128);
                // Runs of -128 (the lane the sign trick could overflow on).
                for v in row.iter_mut().step_by(3) {
                    *v = -128;
                }
                let cases = [
                    random_codes(&mut rng, d, -127),
                    vec![127; d],
                    vec![-127; d],
                    (0..d)
                        .map(|i| if i % 2 == 0 { 127 } else { -127 })
                        .collect(),
                ];
                for q in &cases {
                    assert_eq!(k.dot(&row, q), reference(&row, q), "{} dim {d}", k.name());
                }
                let all_min = vec![-128i8; d];
                assert_eq!(
                    k.dot(&all_min, &cases[2]),
                    reference(&all_min, &cases[2]),
                    "{} dim {d} all -128 x all -127",
                    k.name()
                );
            }
            for &d in &[1usize, 17, 64, 65, 128, 129, 383, 768] {
                for nq in [1usize, 3, 4, 5, 8, 16] {
                    let q = random_codes(&mut rng, nq * d, -127);
                    let r = random_codes(&mut rng, 5 * d, -128);
                    let mut got = vec![0i32; 5 * nq];
                    k.dots(&q, &r, d, &mut got);
                    for ri in 0..5 {
                        for qi in 0..nq {
                            assert_eq!(
                                got[ri * nq + qi],
                                reference(&r[ri * d..(ri + 1) * d], &q[qi * d..(qi + 1) * d]),
                                "{} dots dim {d} nq {nq}",
                                k.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn forcing_an_unknown_or_unsupported_kernel_is_an_error() {
        assert!(KernelKind::parse("avx9000").is_err());
        for kind in KernelKind::ALL {
            let made = Kernel::new(kind);
            if kind.is_supported() {
                assert_eq!(made.unwrap().kind(), kind);
            } else {
                let err = made.unwrap_err();
                assert_eq!(err.kind(), slabcache_core::ErrorKind::InvalidArgument);
                assert!(err.message().contains("not supported"), "{}", err.message());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn kernels_agree_on_arbitrary_codes(
            pair in (1usize..700).prop_flat_map(|d| (
                proptest::collection::vec(-127i8..=127, d),
                proptest::collection::vec(-127i8..=127, d),
            ))
        ) {
            let (a, b) = pair;
            let want = Kernel::scalar().dot(&a, &b);
            for k in Kernel::available() {
                prop_assert_eq!(k.dot(&a, &b), want, "kernel {}", k.name());
            }
        }

        #[test]
        fn kernels_are_exact_on_asymmetric_rows(
            case in (1usize..400, 1usize..7).prop_flat_map(|(d, nq)| (
                Just(d),
                proptest::collection::vec(any::<i8>(), d * 3),
                proptest::collection::vec(-127i8..=127, d * nq),
            ))
        ) {
            let (d, rows, queries) = case;
            let nq = queries.len() / d;
            for k in Kernel::available() {
                let mut out = vec![0i32; 3 * nq];
                k.dots(&queries, &rows, d, &mut out);
                for r in 0..3 {
                    for q in 0..nq {
                        let want = reference(&rows[r * d..(r + 1) * d], &queries[q * d..(q + 1) * d]);
                        prop_assert_eq!(out[r * nq + q], want, "kernel {}", k.name());
                        prop_assert_eq!(k.dot(&rows[r * d..(r + 1) * d], &queries[q * d..(q + 1) * d]), want);
                    }
                }
            }
        }
    }
}
