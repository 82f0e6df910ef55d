//! WAL-backed mmap blob arena (issue: blob arena).
