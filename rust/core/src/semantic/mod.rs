//! The vector side of the semantic cache: an INT8 index partitioned by scope.
//!
//! | file | concept |
//! |---|---|
//! | [`scoped_index`] | [`ScopedIndex`]: one [`FlatIndex`](crate::vector::FlatIndex) per scope, batched search |
//!
//! A scope (model, sampling parameters, system-prompt hash, tenant, ...) is a
//! hard partition: a query is only ever compared with its own scope's rows,
//! so the nearest neighbour can never come from another scope.
//!
//! ```
//! use slabcache_core::semantic::ScopedIndex;
//! let mut ix = ScopedIndex::new(2).unwrap();
//! ix.add_many(&["a", "b"], &[1, 2], &[1.0, 0.0, 1.0, 0.0]).unwrap();
//! let (scores, keys) = ix.search_many(&["b"], &[1.0, 0.0], 1).unwrap();
//! assert_eq!(keys, vec![2]);
//! assert!(scores[0] > 0.99);
//! ```

pub mod scoped_index;

pub use scoped_index::ScopedIndex;
