//! # slabcache-core
//!
//! The pure-Rust core of slabcache. Nothing in this crate knows about Python:
//! the `slabcache-python` crate wraps it, and `slabcache-malloc` exposes the
//! allocator through a C ABI.
//!
//! | module       | what it holds                                                    |
//! |--------------|------------------------------------------------------------------|
//! | [`slab`]     | size-class slab allocator with out-of-band metadata              |
//! | [`skiplist`] | concurrent B-skiplist ordered index                              |
//! | [`vector`]   | INT8 quantization, SIMD dot kernels, exact / clustered top-k     |
//! | [`arena`]    | WAL-backed, crash-safe, append-only mmap blob arena              |
//! | [`blocks`]   | paged KV-cache block pool (prefix caching, CoW, swap, TTL pins)  |
//!
//! Every fallible operation returns [`Result`], whose [`Error`] carries an
//! [`ErrorKind`] that the bindings map onto a Python exception class.
//!
//! ```
//! let features = slabcache_core::cpu::CpuFeatures::detect();
//! println!("AVX2: {}", features.avx2);
//! ```

// Every public item of the core documents itself (CI runs clippy with -D warnings).
#![warn(missing_docs)]

pub mod arena;
pub mod blocks;
pub mod cpu;
pub mod error;
pub mod skiplist;
pub mod slab;
pub mod vector;

pub use error::{Error, ErrorKind, Result};

/// The crate's version, shared by the whole workspace and the Python package.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
