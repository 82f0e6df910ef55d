//! Key types that need a wrapper to be ordered.

use std::cmp::Ordering;

use crate::{Error, Result};

/// An `f64` key with a total order; NaN is refused at construction, so the
/// order is the usual numeric one (with `-0.0 < 0.0`).
///
/// ```
/// use slabcache_core::skiplist::F64Key;
/// assert!(F64Key::new(f64::NAN).is_err());
/// assert!(F64Key::new(1.5).unwrap() < F64Key::new(2.0).unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F64Key(f64);

impl F64Key {
    /// Wraps `v`; NaN gives an `InvalidArgument` error.
    pub fn new(v: f64) -> Result<Self> {
        if v.is_nan() {
            Err(Error::invalid_argument("NaN is not a valid float key"))
        } else {
            Ok(F64Key(v))
        }
    }

    /// The wrapped value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for F64Key {}

impl PartialOrd for F64Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for F64Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
