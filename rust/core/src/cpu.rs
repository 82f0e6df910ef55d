//! Run-time CPU feature detection, done once and cached.
//!
//! SIMD kernels are chosen from these flags at run time, so one binary runs
//! on every CPU of its architecture and uses the best path each one has.

use std::sync::OnceLock;

/// The SIMD-relevant features of the CPU this process runs on.
///
/// ```
/// let f = slabcache_core::cpu::CpuFeatures::detect();
/// // On x86-64, SSE2 is architectural; on aarch64, NEON is.
/// assert!(f.sse2 || f.neon);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuFeatures {
    /// x86-64 SSE2 (always present on x86-64).
    pub sse2: bool,
    /// x86-64 SSE4.2.
    pub sse42: bool,
    /// x86-64 AVX2.
    pub avx2: bool,
    /// x86-64 FMA3.
    pub fma: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// AVX-512 VNNI (`vpdpbusd`).
    pub avx512vnni: bool,
    /// AVX-VNNI (the VEX-encoded VNNI of Alder Lake and later).
    pub avxvnni: bool,
    /// aarch64 Advanced SIMD (always present on aarch64).
    pub neon: bool,
    /// aarch64 SDOT/UDOT (`dotprod`).
    pub neon_dotprod: bool,
}

impl CpuFeatures {
    /// Detects the features once per process and returns the cached answer.
    pub fn detect() -> CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        *FEATURES.get_or_init(Self::probe)
    }

    #[cfg(target_arch = "x86_64")]
    fn probe() -> CpuFeatures {
        CpuFeatures {
            sse2: true,
            sse42: std::is_x86_feature_detected!("sse4.2"),
            avx2: std::is_x86_feature_detected!("avx2"),
            fma: std::is_x86_feature_detected!("fma"),
            avx512f: std::is_x86_feature_detected!("avx512f"),
            avx512bw: std::is_x86_feature_detected!("avx512bw"),
            avx512vnni: std::is_x86_feature_detected!("avx512vnni"),
            avxvnni: std::is_x86_feature_detected!("avxvnni"),
            ..CpuFeatures::default()
        }
    }

    #[cfg(target_arch = "aarch64")]
    fn probe() -> CpuFeatures {
        CpuFeatures {
            neon: true,
            neon_dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
            ..CpuFeatures::default()
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn probe() -> CpuFeatures {
        CpuFeatures::default()
    }

    /// `(name, present)` pairs in a fixed order, for display.
    pub fn as_pairs(&self) -> [(&'static str, bool); 10] {
        [
            ("sse2", self.sse2),
            ("sse4.2", self.sse42),
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vnni", self.avx512vnni),
            ("avxvnni", self.avxvnni),
            ("neon", self.neon),
            ("neon-dotprod", self.neon_dotprod),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_stable_and_consistent() {
        let a = CpuFeatures::detect();
        assert_eq!(a, CpuFeatures::detect());
        // AVX-512 BW/VNNI imply AVX-512F.
        if a.avx512bw || a.avx512vnni {
            assert!(a.avx512f);
        }
    }
}
