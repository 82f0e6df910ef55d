//! Paged KV-cache block pool (issue: BlockManager).
