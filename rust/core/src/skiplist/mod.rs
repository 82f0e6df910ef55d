//! Concurrent B-skiplist ordered index (issue: B-skiplist).
