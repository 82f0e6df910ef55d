//! Size-class slab allocator with out-of-band metadata (issue: foundation).
