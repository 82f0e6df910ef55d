//! The semantic lookaside buffer (SLB): a small per-scope FP32 buffer of
//! recent vectors, scanned with SIMD before the INT8 index is searched.
//!
//! | file | concept |
//! |---|---|
//! | [`dot`] | FP32 dot kernels (AVX2+FMA, portable) picked at run time |
//! | [`buffer`] | [`Slb`]: per-scope rows, per-scope and global LRU capacity |
//!
//! ```
//! use slabcache_core::slb::Slb;
//! let mut slb = Slb::new(3, 64, 1024).unwrap();
//! slb.insert("tenant-a", 1, &[0.0, 1.0, 0.0]).unwrap();
//! let hit = slb.find_nearest("tenant-a", &[0.0, 0.99, 0.05], 0.95).unwrap();
//! assert_eq!(hit.map(|h| h.key), Some(1));
//! ```

pub mod buffer;
pub mod dot;

pub use buffer::{check_threshold, snap, Slb, SlbHit, COSINE_EPS};
