//! Similarity metrics and how an INT8 dot product becomes a score.
//!
//! Every metric turns the exact integer dot `p = q·x` of two code vectors
//! into a *rank* `a_q · a_x · p + b_x` (higher is better) with one factor
//! per query (`a_q`) and one factor and offset per stored row (`a_x`, `b_x`),
//! so scanning costs one multiply-add per row (asymmetric rows, `x̂ = o + s·q`,
//! add `a_q · o_x · Σq_q`; see [`Metric::row_factors`]). Symmetric rows:
//!
//! | metric | `a_x` | `b_x` | `a_q` | reported score |
//! |---|---|---|---|---|
//! | `Ip` | `s_x` | 0 | `s_q` | rank ≈ `q·x` (higher is closer) |
//! | `Cosine` | `1/‖q_x‖` | 0 | `1/‖q_q‖` | rank = cosine of the quantized vectors |
//! | `L2` | `s_x` | `-‖x̂‖²` | `2·s_q` | `‖q‖² - rank` = `‖q - x̂‖²` (lower is closer) |
//!
//! (`‖q_x‖` is the norm of the integer codes; `x̂ = s_x·q_x` the dequantized
//! row. Distances use `‖x̂‖`, which keeps a stored vector at distance ~0 from
//! itself.) The scan ranks in f32; the final scores of the candidates are
//! recomputed in f64 (see [`scan::finish`](super::scan::finish)), so a
//! distance beyond f32's range is reported `inf`, never a wrapped or NaN
//! value.

use crate::error::{Error, Result};
use crate::vector::quantize::VectorStats;

/// How closeness is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Inner product (higher is closer).
    Ip,
    /// Cosine similarity (higher is closer).
    Cosine,
    /// Squared Euclidean distance (lower is closer).
    L2,
}

impl Metric {
    /// `"ip"`, `"cosine"` or `"l2"`.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Ip => "ip",
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
        }
    }

    /// Parses a metric name (`ip`/`inner_product`/`dot`, `cosine`/`cos`, `l2`/`euclidean`).
    ///
    /// ```
    /// use slabcache_core::vector::Metric;
    /// assert_eq!(Metric::parse("cosine").unwrap(), Metric::Cosine);
    /// assert!(Metric::parse("hamming").is_err());
    /// ```
    pub fn parse(name: &str) -> Result<Metric> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ip" | "inner_product" | "dot" => Ok(Metric::Ip),
            "cosine" | "cos" => Ok(Metric::Cosine),
            "l2" | "euclidean" => Ok(Metric::L2),
            _ => Err(Error::invalid_argument(format!(
                "unknown metric {name:?}; expected \"cosine\", \"ip\" or \"l2\""
            ))),
        }
    }

    /// The stable byte used in saved files.
    pub(crate) const fn code(self) -> u8 {
        match self {
            Metric::Ip => 0,
            Metric::Cosine => 1,
            Metric::L2 => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Metric> {
        match c {
            0 => Some(Metric::Ip),
            1 => Some(Metric::Cosine),
            2 => Some(Metric::L2),
            _ => None,
        }
    }

    /// Whether a larger reported score means closer.
    pub const fn higher_is_closer(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// `(a_x, o_x, b_x)` of a stored row whose dequantized form is
    /// `x̂ = offset + scale · q` (`offset` 0 for symmetric codes); `sum` and
    /// `sumsq` are `Σ q_i` and `Σ q_i²` of its `dim` codes. A row is ranked
    /// by `a_q·(a_x·p + o_x·Σq_q) + b_x`, i.e. `rank ∝ q·x̂` (`ip`),
    /// `q·x̂/‖x̂‖` (`cosine`: `a_x`, `o_x` are divided by `‖x̂‖`, so that
    /// `a_x·q + o_x` is the unit direction) or `2q·x̂ - ‖x̂‖²` (`l2`).
    /// Computed in f64; an `l2` `b_x` beyond f32's range is `-inf` (the final
    /// score is recomputed in f64).
    #[inline]
    pub fn row_factors(
        self,
        scale: f32,
        offset: f32,
        dim: usize,
        sum: i64,
        sumsq: i64,
    ) -> (f32, f32, f32) {
        let (s, o) = (scale as f64, offset as f64);
        // ‖x̂‖² = Σ (o + s·q_i)² = d·o² + 2·o·s·Σq + s²·Σq².
        let n2 = dim as f64 * o * o + 2.0 * o * s * sum as f64 + s * s * sumsq as f64;
        match self {
            Metric::Ip => (scale, offset, 0.0),
            // Without an offset the direction is the codes' own: `1/‖q‖`, independent of
            // the scale, so a reload (which saves this factor) recomputes it bit for bit.
            Metric::Cosine if offset == 0.0 => (inv_sqrt(sumsq), 0.0, 0.0),
            Metric::Cosine => {
                if n2 <= 0.0 {
                    (0.0, 0.0, 0.0)
                } else {
                    let inv = 1.0 / n2.sqrt();
                    ((s * inv) as f32, (o * inv) as f32, 0.0)
                }
            }
            // -‖x̂‖² of the dequantized row: ranking by ‖q - x̂‖² keeps near-duplicates at
            // ~0 distance (the exact ‖x‖² would add an error of 2·q·(x - x̂)).
            Metric::L2 => (scale, offset, (-n2) as f32),
        }
    }

    /// `a_q` of a query.
    #[inline]
    pub fn query_factor(self, stats: VectorStats, code_sumsq: i64) -> f32 {
        match self {
            Metric::Ip => stats.scale,
            Metric::Cosine => inv_sqrt(code_sumsq),
            Metric::L2 => 2.0 * stats.scale,
        }
    }

    /// The reported score of a rank for a query with exact norm `qnorm`.
    #[inline]
    pub fn score(self, rank: f32, qnorm: f32) -> f32 {
        match self {
            Metric::L2 => (qnorm * qnorm - rank).max(0.0),
            _ => rank,
        }
    }

    /// The score reported in padding slots (no result): the worst value.
    pub const fn pad_score(self) -> f32 {
        match self {
            Metric::L2 => f32::INFINITY,
            _ => f32::NEG_INFINITY,
        }
    }
}

fn inv_sqrt(sumsq: i64) -> f32 {
    if sumsq == 0 {
        0.0
    } else {
        (1.0 / (sumsq as f64).sqrt()) as f32
    }
}
