//! Key types that need a wrapper to be ordered.

use std::cmp::Ordering;

use crate::{Error, Result};

/// An `f64` key with a total order; NaN is refused at construction, and
/// `-0.0` is stored as `0.0` (they are equal numbers, so one key, as in a
/// Python dict), so the order is the usual numeric one.
///
/// ```
/// use slabcache_core::skiplist::F64Key;
/// assert!(F64Key::new(f64::NAN).is_err());
/// assert!(F64Key::new(1.5).unwrap() < F64Key::new(2.0).unwrap());
/// assert_eq!(F64Key::new(-0.0).unwrap(), F64Key::new(0.0).unwrap());
/// assert!(F64Key::new(-0.0).unwrap().get().is_sign_positive());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F64Key(f64);

impl F64Key {
    /// Wraps `v` (`-0.0` becomes `0.0`); NaN gives an `InvalidArgument` error.
    pub fn new(v: f64) -> Result<Self> {
        if v.is_nan() {
            Err(Error::invalid_argument("NaN is not a valid float key"))
        } else {
            // `-0.0 + 0.0` is `0.0`; every other value is unchanged.
            Ok(F64Key(v + 0.0))
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
