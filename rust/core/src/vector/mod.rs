//! INT8 vector search: symmetric scalar quantization, SIMD dot kernels
//! chosen at run time, and exact (flat) or page-clustered top-k indexes.
//!
//! | file | concept |
//! |---|---|
//! | [`quantize`] | symmetric per-vector INT8 quantization and its error bound |
//! | [`kernels`] | i8·i8→i32 dot kernels: scalar, AVX2, AVX-512 BW/VNNI, NEON/SDOT |
//! | [`metric`] | inner product, cosine, L2: dot → score |
//! | [`topk`] | bounded heap of the k best |
//! | [`store`] | contiguous rows + per-row factors + tombstones |
//! | [`id_lookup`] | id → row: binary search while ids increase, else a [`row_map::RowMap`] |
//! | [`page_map`] | id → (list, row) of the clustered index, ids compared through the lists |
//! | [`row_map`] | id → row table of bare `u32` rows (ids compared through the store) |
//! | [`crew`] | spinning helper threads one query's scan is split across |
//! | [`scan`] | tiled, multi-threaded scan of a store for a query batch |
//! | [`flat`] | [`FlatIndex`]: exact search, remove, compaction |
//! | [`clustered`] | [`ClusteredIndex`]: k-means pages, probe the nearest `nprobe` |
//! | [`persist`] | versioned, checksummed save/load |
//!
//! ```
//! use slabcache_core::vector::{FlatIndex, Metric};
//! let mut index = FlatIndex::new(3, Metric::L2).unwrap();
//! index.add(&[0.0, 0.0, 1.0, 5.0, 5.0, 5.0], Some(&[10, 20])).unwrap();
//! let (dist, ids) = index.search_batch(&[0.0, 0.1, 1.0], 1).unwrap();
//! assert_eq!(ids, vec![10]);
//! assert!(dist[0] < 0.05);
//! ```

pub mod clustered;
pub mod crew;
pub mod flat;
pub mod id_lookup;
pub mod kernels;
pub mod metric;
pub mod page_map;
pub mod persist;
pub mod quantize;
pub mod row_map;
pub mod scan;
pub mod store;
pub mod topk;

pub use clustered::ClusteredIndex;
pub use flat::{FlatIndex, MAX_DIM, MAX_ID};
pub use kernels::{Kernel, KernelKind, SIMD_ENV};
pub use metric::Metric;
pub use persist::{load_index, AnyIndex};
pub use quantize::{check_finite, quantize, quantize_into, VectorStats};
pub use topk::TopK;
