//! Similarity metrics and how an INT8 dot product becomes a score.
//!
//! Every metric turns the exact integer dot `p = q·x` of two code vectors
//! into a *rank* `a_q · a_x · p + b_x` (higher is better) with one factor
//! per query (`a_q`) and one factor and offset per stored row (`a_x`, `b_x`),
//! so scanning costs one multiply-add per row:
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

    /// `(a_x, b_x)` of a stored row with quantization scale `scale` and
    /// code norm² `code_sumsq`.
    #[inline]
    pub fn row_factors(self, scale: f32, code_sumsq: i64) -> (f32, f32) {
        match self {
            Metric::Ip => (scale, 0.0),
            Metric::Cosine => (inv_sqrt(code_sumsq), 0.0),
            // -‖x̂‖² of the dequantized row: ranking by ‖q - x̂‖² keeps near-duplicates at
            // ~0 distance (the exact ‖x‖² would add an error of 2·q·(x - x̂)). Computed in
            // f64; beyond f32's range it is -inf (the final score is recomputed in f64).
            Metric::L2 => (scale, -((scale as f64).powi(2) * code_sumsq as f64) as f32),
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
