//! The optional stream of prefix-cache events for a cluster router.
//!
//! A router doing prefix-aware routing needs to know which block hashes each
//! worker holds; it subscribes to these events (the same two kinds vLLM
//! publishes): a block was stored under a hash, or a cached block was
//! removed (evicted). Recording is off unless enabled, so an engine that
//! does not drain pays nothing.

use super::block_hash::BlockHash;

/// What happened to a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockEventKind {
    /// A full block was registered in the prefix cache.
    Stored = 0,
    /// A cached block's hash was dropped (the block was evicted for reuse).
    Removed = 1,
}

/// One prefix-cache event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEvent {
    /// Stored or removed.
    pub kind: BlockEventKind,
    /// The device block id.
    pub block_id: u32,
    /// The block's chained hash.
    pub hash: BlockHash,
    /// The hash of the previous block of the sequence (`None` for a first block, and for removals).
    pub parent: Option<BlockHash>,
    /// The extra hash key (LoRA id, salt) the block was hashed with (0 for removals).
    pub extra_key: u64,
    /// For stores, this block's token ids are `EventLog` tokens
    /// `[tokens_start, tokens_start + tokens_len)` (see [`EventLog::drain_with_tokens`]).
    pub tokens_start: usize,
    /// Number of token ids recorded for the event (the block size for stores, 0 for removals).
    pub tokens_len: usize,
}

/// A buffer of events, recording only when enabled.
///
/// ```
/// use slabcache_core::blocks::{BlockHash, EventLog, BlockEventKind};
/// let mut log = EventLog::new(true);
/// log.stored(3, BlockHash::of_block(None, 0, &[1]), None);
/// let events = log.drain();
/// assert_eq!(events[0].kind, BlockEventKind::Stored);
/// assert!(log.drain().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    enabled: bool,
    events: Vec<BlockEvent>,
    tokens: Vec<u32>,
}

impl EventLog {
    /// A log that records iff `enabled`.
    pub fn new(enabled: bool) -> Self {
        EventLog {
            enabled,
            events: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Whether events are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns recording on or off (off also drops what is buffered).
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
        if !enabled {
            self.events.clear();
            self.tokens.clear();
        }
    }

    /// Records a store.
    #[inline]
    pub fn stored(&mut self, block_id: u32, hash: BlockHash, parent: Option<BlockHash>) {
        self.stored_tokens(block_id, hash, parent, &[], 0);
    }

    /// Records a store with the block's token ids and extra key (what
    /// vLLM's `BlockStored` event carries).
    #[inline]
    pub fn stored_tokens(
        &mut self,
        block_id: u32,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[u32],
        extra_key: u64,
    ) {
        if self.enabled {
            let tokens_start = self.tokens.len();
            self.tokens.extend_from_slice(tokens);
            self.events.push(BlockEvent {
                kind: BlockEventKind::Stored,
                block_id,
                hash,
                parent,
                extra_key,
                tokens_start,
                tokens_len: tokens.len(),
            });
        }
    }

    /// Records a removal.
    #[inline]
    pub fn removed(&mut self, block_id: u32, hash: BlockHash) {
        if self.enabled {
            self.events.push(BlockEvent {
                kind: BlockEventKind::Removed,
                block_id,
                hash,
                parent: None,
                extra_key: 0,
                tokens_start: self.tokens.len(),
                tokens_len: 0,
            });
        }
    }

    /// Takes every buffered event, oldest first.
    pub fn drain(&mut self) -> Vec<BlockEvent> {
        self.tokens.clear();
        std::mem::take(&mut self.events)
    }

    /// Takes every buffered event and the token ids their
    /// `tokens_start..tokens_start + tokens_len` ranges index.
    ///
    /// ```
    /// use slabcache_core::blocks::{BlockHash, EventLog};
    /// let mut log = EventLog::new(true);
    /// log.stored_tokens(3, BlockHash::of_block(None, 0, &[1, 2]), None, &[1, 2], 0);
    /// let (events, tokens) = log.drain_with_tokens();
    /// let e = events[0];
    /// assert_eq!(&tokens[e.tokens_start..e.tokens_start + e.tokens_len], &[1, 2]);
    /// ```
    pub fn drain_with_tokens(&mut self) -> (Vec<BlockEvent>, Vec<u32>) {
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.tokens),
        )
    }

    /// Number of buffered events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_log_records_nothing() {
        let mut log = EventLog::new(false);
        log.removed(1, BlockHash::ROOT);
        assert!(log.is_empty());
        log.set_enabled(true);
        log.removed(1, BlockHash::ROOT);
        assert_eq!(log.len(), 1);
        log.set_enabled(false);
        assert!(log.is_empty());
    }
}
