//! Per-vector INT8 scalar quantization: symmetric (the default for signed
//! data) and asymmetric (offset + scale, for non-negative data).
//!
//! **Asymmetric** ([`quantize_asym_into`]): `x ≈ o + s·q` with
//! `s = (max - min) / 255` and codes in `-128..=127`, so all 256 levels span
//! the vector's own range. For non-negative data (SIFT, counts, ReLU
//! outputs) the symmetric code uses only `0..=127`; the asymmetric one has
//! twice the resolution: `|x_i - x̂_i| <= (max - min) / 510`.
//!
//! A vector `x` becomes codes `q_i = round(x_i / s)` with one scale
//! `s = max_i |x_i| / 127`, so codes lie in `-127..=127` (never -128: the
//! range is symmetric, which is what lets the AVX2 sign trick be exact).
//!
//! **Error bound.** Rounding moves each component by at most half a step:
//! `|x_i - s·q_i| <= s/2 = max|x| / 254`. Hence `‖x - s·q‖₂ <= √d · s/2`, and
//! for a dot product with another quantized vector `(t, p)`,
//! `|x·y - s·t·(q·p)| <= ‖x - x̂‖·‖y‖ + ‖x̂‖·‖y - ŷ‖`
//! `<= (√d/2)·(s·‖y‖ + t·‖x̂‖)`. For a unit vector of dimension 768 whose
//! largest component is 0.15, `s/2 ≈ 5.9e-4` per component.
//!
//! A zero vector has scale 0 and all-zero codes.

use crate::error::{Error, Result};

/// Which INT8 code an index's rows use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeKind {
    /// Decided by the first vectors added: asymmetric if every value is
    /// non-negative, else symmetric.
    Auto,
    /// `x ≈ s·q`, codes in `-127..=127` (best for signed data).
    Symmetric,
    /// `x ≈ o + s·q`, codes in `-128..=127` (twice the resolution on
    /// non-negative data; 4 more bytes a row).
    Asymmetric,
}

impl CodeKind {
    /// `"auto"`, `"symmetric"` or `"asymmetric"`.
    pub const fn name(self) -> &'static str {
        match self {
            CodeKind::Auto => "auto",
            CodeKind::Symmetric => "symmetric",
            CodeKind::Asymmetric => "asymmetric",
        }
    }

    /// Parses a name (`sym`/`asym` accepted too).
    ///
    /// ```
    /// use slabcache_core::vector::quantize::CodeKind;
    /// assert_eq!(CodeKind::parse("asym").unwrap(), CodeKind::Asymmetric);
    /// assert!(CodeKind::parse("int4").is_err());
    /// ```
    pub fn parse(name: &str) -> Result<CodeKind> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(CodeKind::Auto),
            "symmetric" | "sym" => Ok(CodeKind::Symmetric),
            "asymmetric" | "asym" => Ok(CodeKind::Asymmetric),
            _ => Err(Error::invalid_argument(format!(
                "unknown code {name:?}; expected \"auto\", \"symmetric\" or \"asymmetric\""
            ))),
        }
    }

    /// The code for a first batch `values` (resolves `Auto`).
    pub fn resolve(self, values: &[f32]) -> CodeKind {
        match self {
            CodeKind::Auto if values.iter().all(|&v| v >= 0.0) => CodeKind::Asymmetric,
            CodeKind::Auto => CodeKind::Symmetric,
            k => k,
        }
    }
}

/// The largest code magnitude.
pub const CODE_MAX: i8 = 127;

/// What [`quantize_into`] learns about a vector besides its codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorStats {
    /// `s = max|x| / 127`; `x ≈ s · q`.
    pub scale: f32,
    /// The exact Euclidean norm `‖x‖₂` of the original vector.
    pub norm: f32,
}

/// Quantizes `x` into `out` (same length) and returns its scale and norm.
///
/// `x` must be finite (see [`check_finite`]); non-finite input gives
/// unspecified (but memory-safe) codes.
///
/// ```
/// use slabcache_core::vector::quantize_into;
/// let x = [0.5f32, -1.0, 0.25];
/// let mut q = [0i8; 3];
/// let st = quantize_into(&x, &mut q);
/// assert_eq!(q, [64, -127, 32]);
/// assert!((st.scale - 1.0 / 127.0).abs() < 1e-9);
/// assert!((st.norm - 1.1456439).abs() < 1e-6);
/// ```
pub fn quantize_into(x: &[f32], out: &mut [i8]) -> VectorStats {
    assert_eq!(x.len(), out.len(), "quantize_into: length mismatch");
    let mut max = 0f32;
    let mut sumsq = 0f64;
    for &v in x {
        max = max.max(v.abs());
        sumsq += v as f64 * v as f64;
    }
    let norm = sumsq.sqrt() as f32;
    if max == 0.0 {
        out.fill(0);
        return VectorStats { scale: 0.0, norm };
    }
    // f64: 127/max stays finite even for subnormal max.
    let inv = 127.0f64 / max as f64;
    for (o, &v) in out.iter_mut().zip(x) {
        // Round half away from zero without a libm call (`as` truncates toward zero).
        let r = v as f64 * inv;
        *o = (r + 0.5f64.copysign(r)).clamp(-127.0, 127.0) as i8;
    }
    VectorStats {
        scale: (max as f64 / 127.0) as f32,
        norm,
    }
}

/// Asymmetric quantization of `x` into `out`: returns `(scale, offset)` with
/// `x_i ≈ offset + scale · out_i`, codes in `-128..=127`. A constant vector
/// gets scale 0, codes 0 and `offset` = its value. `x` must be finite.
///
/// ```
/// use slabcache_core::vector::quantize::quantize_asym_into;
/// let x = [0.0f32, 1.0, 0.5];
/// let mut q = [0i8; 3];
/// let (s, o) = quantize_asym_into(&x, &mut q);
/// assert_eq!(q, [-128, 127, 0]);
/// for (v, c) in x.iter().zip(q) {
///     assert!((o + s * c as f32 - v).abs() <= s / 2.0 + 1e-7);
/// }
/// ```
pub fn quantize_asym_into(x: &[f32], out: &mut [i8]) -> (f32, f32) {
    assert_eq!(x.len(), out.len(), "quantize_asym_into: length mismatch");
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if x.is_empty() || hi <= lo {
        out.fill(0);
        return (0.0, if x.is_empty() { 0.0 } else { lo });
    }
    // f64: the range of two finite f32 values may exceed f32 (e.g. -3e38..3e38).
    let scale = (hi as f64 - lo as f64) / 255.0;
    let inv = 1.0 / scale;
    for (o, &v) in out.iter_mut().zip(x) {
        let r = (v as f64 - lo as f64) * inv; // 0..=255
        *o = ((r + 0.5).floor().clamp(0.0, 255.0) - 128.0) as i8;
    }
    ((scale) as f32, (lo as f64 + 128.0 * scale) as f32)
}

/// A vector's minimum may reach this fraction of its range and still use
/// the zero floor (`x ≈ s·(q + 128)`, `s = max/255`): the step then grows by
/// at most 1.25x (a third of a bit), and the row needs no offset of its own
/// (4 bytes a row). SIFT's minimum is 0 in 97% of its vectors and at most
/// 0.22 of the range.
pub const ZERO_FLOOR_MAX: f32 = 0.25;

/// An asymmetric code as [`quantize_asym_auto_into`] chose it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymCode {
    /// `s`.
    pub scale: f32,
    /// `o` (`128·s` exactly when `zero_floor`).
    pub offset: f32,
    /// Whether the code's floor is 0 (`x ≈ s·(q + 128)`), so that the
    /// offset follows from the scale.
    pub zero_floor: bool,
}

/// Whether a non-negative vector with minimum `lo` and maximum `hi` uses
/// the zero floor (see [`ZERO_FLOOR_MAX`]).
#[inline]
pub fn wants_zero_floor(lo: f32, hi: f32) -> bool {
    lo >= 0.0 && lo as f64 <= ZERO_FLOOR_MAX as f64 * (hi as f64 - lo as f64)
}

/// The minimum and maximum of `x` (`(inf, -inf)` when empty).
#[inline]
pub fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// Asymmetric quantization choosing the floor: 0 when the vector is
/// non-negative and its minimum small (see [`wants_zero_floor`]): codes
/// `q = round(x/s) - 128` with `s = max/255`, offset `128·s`; else as
/// [`quantize_asym_into`] (floor = the minimum). `x` must be finite.
///
/// ```
/// use slabcache_core::vector::quantize::quantize_asym_auto_into;
/// let mut q = [0i8; 3];
/// let c = quantize_asym_auto_into(&[0.0, 2.0, 1.0], &mut q);
/// assert!(c.zero_floor && c.offset == 128.0 * c.scale);
/// assert_eq!(q, [-128, 127, 0]);
/// let c = quantize_asym_auto_into(&[1.0, 2.0, 1.5], &mut q); // minimum too large
/// assert!(!c.zero_floor);
/// ```
pub fn quantize_asym_auto_into(x: &[f32], out: &mut [i8]) -> AsymCode {
    assert_eq!(
        x.len(),
        out.len(),
        "quantize_asym_auto_into: length mismatch"
    );
    let (lo, hi) = min_max(x);
    if x.is_empty() || !wants_zero_floor(lo, hi) {
        let (scale, offset) = quantize_asym_into(x, out);
        return AsymCode {
            scale,
            offset,
            zero_floor: false,
        };
    }
    if hi == 0.0 {
        out.fill(0);
        return AsymCode {
            scale: 0.0,
            offset: 0.0,
            zero_floor: true,
        };
    }
    let scale = hi as f64 / 255.0;
    let inv = 1.0 / scale;
    for (o, &v) in out.iter_mut().zip(x) {
        let r = v as f64 * inv; // 0..=255
        *o = ((r + 0.5).floor().clamp(0.0, 255.0) - 128.0) as i8;
    }
    let s = scale as f32;
    AsymCode {
        scale: s,
        // Exact: a power-of-two multiple (s ≤ f32::MAX / 255).
        offset: 128.0 * s,
        zero_floor: true,
    }
}

/// Quantizes one vector into a fresh code vector.
///
/// ```
/// let (codes, stats) = slabcache_core::vector::quantize(&[3.0, -4.0]);
/// assert_eq!(codes, vec![95, -127]);
/// assert_eq!(stats.norm, 5.0);
/// ```
pub fn quantize(x: &[f32]) -> (Vec<i8>, VectorStats) {
    let mut codes = vec![0i8; x.len()];
    let stats = quantize_into(x, &mut codes);
    (codes, stats)
}

/// Reconstructs `s · q`.
pub fn dequantize(codes: &[i8], scale: f32) -> Vec<f32> {
    codes.iter().map(|&c| c as f32 * scale).collect()
}

/// `Σ q_i` of a code vector (exact).
pub fn code_sum(codes: &[i8]) -> i64 {
    codes.iter().map(|&c| c as i64).sum()
}

/// `Σ q_i²` of a code vector (exact).
pub fn code_sumsq(codes: &[i8]) -> i64 {
    codes.iter().map(|&c| (c as i64) * (c as i64)).sum()
}

/// `InvalidArgument` naming the first non-finite value, if any.
///
/// ```
/// use slabcache_core::vector::check_finite;
/// assert!(check_finite(&[1.0, 2.0], 2).is_ok());
/// assert!(check_finite(&[1.0, f32::NAN], 2).is_err());
/// ```
pub fn check_finite(values: &[f32], dim: usize) -> Result<()> {
    if values.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    let i = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
    let d = dim.max(1);
    Err(Error::invalid_argument(format!(
        "vector {} has a non-finite value ({}) at component {}",
        i / d,
        values[i],
        i % d
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_stay_symmetric_and_within_half_a_step() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let (q, st) = quantize(&x);
        assert!(q.iter().all(|&c| (-127..=127).contains(&c)));
        for (&v, &c) in x.iter().zip(&q) {
            assert!((v - c as f32 * st.scale).abs() <= st.scale * 0.5 * (1.0 + 1e-5));
        }
    }

    #[test]
    fn asymmetric_codes_use_the_whole_range_within_half_a_step() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0)
            .collect();
        let mut q = vec![0i8; x.len()];
        let (s, o) = quantize_asym_into(&x, &mut q);
        assert_eq!(q.iter().min(), Some(&-128));
        assert_eq!(q.iter().max(), Some(&127));
        for (&v, &c) in x.iter().zip(&q) {
            assert!(
                (v - (o + s * c as f32)).abs() <= s * 0.5 * (1.0 + 1e-4),
                "{v} {c}"
            );
        }
        // Constant and extreme-range vectors.
        let mut q3 = [9i8; 3];
        assert_eq!(quantize_asym_into(&[2.5; 3], &mut q3), (0.0, 2.5));
        assert_eq!(q3, [0; 3]);
        let (s, o) = quantize_asym_into(&[-3e38, 3e38, 0.0], &mut q3);
        assert!(s.is_finite() && o.is_finite());
        assert_eq!(q3, [-128, 127, 0]);
    }

    #[test]
    fn zero_and_subnormal_vectors() {
        let (q, st) = quantize(&[0.0; 4]);
        assert_eq!(q, vec![0; 4]);
        assert_eq!(st.scale, 0.0);
        let tiny = f32::from_bits(1); // smallest subnormal
        let (q, _) = quantize(&[tiny, -tiny, 0.0]);
        assert_eq!(q, vec![127, -127, 0]);
    }
}
