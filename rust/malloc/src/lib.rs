//! C ABI of the slabcache allocator (issue: foundation).
