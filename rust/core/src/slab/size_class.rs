//! Size classes: which slot size serves a request.
//!
//! 16-byte steps up to 256 B, then eight classes per power of two up to
//! 32 KiB (72 classes). Every class is a multiple of 16, so every object in a
//! page-aligned slab is 16-byte aligned; above 128 B the internal waste of a
//! request is below 1/8 of its slot (at most 11.1 % above 256 B).
//!
//! ```
//! use slabcache_core::slab::size_class::{class_of, class_size, MAX_SMALL};
//! assert_eq!(class_size(class_of(1).unwrap()), 16);
//! assert_eq!(class_size(class_of(257).unwrap()), 288);
//! assert!(class_of(MAX_SMALL + 1).is_none());
//! ```

/// Number of size classes.
pub const NUM_CLASSES: usize = 72;
/// The largest request served from slabs; larger ones get their own mapping.
pub const MAX_SMALL: usize = 32 * 1024;
/// The smallest slot, and the minimum alignment of every allocation.
pub const MIN_ALIGN: usize = 16;

const fn compute_size(class: usize) -> usize {
    if class < 16 {
        (class + 1) * 16
    } else {
        let group = (class - 16) / 8; // 0 => (256, 512]
        let idx = (class - 16) % 8;
        let base = 256usize << group;
        base + (idx + 1) * (base / 8)
    }
}

const fn build_sizes() -> [u32; NUM_CLASSES] {
    let mut out = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        out[i] = compute_size(i) as u32;
        i += 1;
    }
    out
}

/// Slot size of every class, ascending.
pub const CLASS_SIZES: [u32; NUM_CLASSES] = build_sizes();

/// The class serving a request of `size` bytes (0 is served as 1), or `None`
/// above [`MAX_SMALL`].
#[inline]
pub fn class_of(size: usize) -> Option<usize> {
    if size <= 256 {
        Some(size.saturating_sub(1) >> 4)
    } else if size <= MAX_SMALL {
        let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize; // 2^k < size <= 2^(k+1)
        let idx = (size - 1 - (1 << k)) >> (k - 3);
        Some(16 + (k - 8) * 8 + idx)
    } else {
        None
    }
}

/// Slot size of `class` in bytes.
#[inline]
pub fn class_size(class: usize) -> usize {
    CLASS_SIZES[class] as usize
}

/// The smallest class whose slots hold `size` bytes at an `align`-byte
/// boundary (`align` a power of two, at most 4096), or `None` when no class
/// fits (the request then goes to a page-aligned mapping).
///
/// ```
/// use slabcache_core::slab::size_class::{aligned_class_of, class_size};
/// let c = aligned_class_of(100, 64).unwrap();
/// assert_eq!(class_size(c) % 64, 0);
/// ```
pub fn aligned_class_of(size: usize, align: usize) -> Option<usize> {
    let first = class_of(size)?;
    if align <= MIN_ALIGN {
        return Some(first);
    }
    (first..NUM_CLASSES).find(|&c| class_size(c).is_multiple_of(align))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ascending_multiples_of_16_ending_at_max() {
        for w in CLASS_SIZES.windows(2) {
            assert!(w[0] < w[1]);
        }
        assert!(CLASS_SIZES.iter().all(|s| s % 16 == 0));
        assert_eq!(CLASS_SIZES[NUM_CLASSES - 1] as usize, MAX_SMALL);
    }

    #[test]
    fn class_of_is_the_smallest_fitting_class() {
        for size in 0..=MAX_SMALL {
            let c = class_of(size).unwrap();
            assert!(class_size(c) >= size.max(1), "size {size}");
            if c > 0 {
                assert!(class_size(c - 1) < size, "size {size} class {c}");
            }
        }
        assert_eq!(class_of(MAX_SMALL + 1), None);
    }

    #[test]
    fn waste_is_below_one_eighth_above_128_bytes() {
        for size in 129..=MAX_SMALL {
            let slot = class_size(class_of(size).unwrap());
            assert!((slot - size) * 8 < slot, "size {size} slot {slot}");
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for align in [32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [1, 100, 1000, 5000, 20000] {
                if let Some(c) = aligned_class_of(size, align) {
                    assert_eq!(class_size(c) % align, 0);
                    assert!(class_size(c) >= size);
                }
            }
        }
        assert!(aligned_class_of(1, 4096).is_some());
    }
}
