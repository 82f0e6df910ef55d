//! The queue of free device blocks, in eviction (LRU) order.
//!
//! A doubly linked list threaded through two arrays indexed by block id (the
//! same shape as vLLM's `FreeKVCacheBlockQueue`): `pop_front` takes the least
//! recently freed block, `push_back` appends a freed block, and `remove`
//! takes a block out of the middle in O(1) when a prefix-cache hit revives
//! it. No allocation after construction.

use super::try_vec;

const NIL: u32 = u32::MAX;

/// Free blocks in LRU order (front = evicted first).
///
/// ```
/// use slabcache_core::blocks::FreeBlockQueue;
/// let mut q = FreeBlockQueue::new(4); // 0, 1, 2, 3 free, in that order
/// assert_eq!(q.pop_front(), Some(0));
/// q.remove(2);
/// q.push_back(0);
/// assert_eq!(q.iter().collect::<Vec<_>>(), vec![1, 3, 0]);
/// ```
#[derive(Debug, Clone)]
pub struct FreeBlockQueue {
    prev: Vec<u32>,
    next: Vec<u32>,
    /// `true` while the block is in the queue.
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeBlockQueue {
    /// A queue holding every block `0..num_blocks`, in id order.
    ///
    /// Panics when the memory cannot be had; [`try_new`](Self::try_new) reports it.
    pub fn new(num_blocks: usize) -> Self {
        Self::try_new(num_blocks).expect("free queue allocation")
    }

    /// Like [`new`](Self::new), but an allocation failure is an `OutOfMemory` error.
    ///
    /// ```
    /// use slabcache_core::blocks::FreeBlockQueue;
    /// assert_eq!(FreeBlockQueue::try_new(3).unwrap().len(), 3);
    /// ```
    pub fn try_new(num_blocks: usize) -> crate::Result<Self> {
        if num_blocks >= NIL as usize {
            return Err(crate::Error::invalid_argument("too many blocks"));
        }
        let n = num_blocks as u32;
        let mut prev = try_vec(num_blocks, NIL)?;
        let mut next = try_vec(num_blocks, NIL)?;
        for i in 0..n {
            if i > 0 {
                prev[i as usize] = i - 1;
            }
            if i + 1 < n {
                next[i as usize] = i + 1;
            }
        }
        Ok(FreeBlockQueue {
            prev,
            next,
            linked: try_vec(num_blocks, true)?,
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n - 1 },
            len: num_blocks,
        })
    }

    /// Number of blocks in the queue.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when no block is free.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `block` is in the queue.
    #[inline]
    pub fn contains(&self, block: u32) -> bool {
        self.linked[block as usize]
    }

    /// The block that would be evicted next, without taking it.
    #[inline]
    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Takes the least recently freed block.
    #[inline]
    pub fn pop_front(&mut self) -> Option<u32> {
        let b = self.front()?;
        self.unlink(b);
        Some(b)
    }

    /// Appends `block` as the most recently freed. It must not be queued already.
    #[inline]
    pub fn push_back(&mut self, block: u32) {
        let i = block as usize;
        debug_assert!(!self.linked[i], "block {block} queued twice");
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        if self.tail == NIL {
            self.head = block;
        } else {
            self.next[self.tail as usize] = block;
        }
        self.tail = block;
        self.linked[i] = true;
        self.len += 1;
    }

    /// Puts `block` at the front: it is reused first (a block with no cached content).
    #[inline]
    pub fn push_front(&mut self, block: u32) {
        let i = block as usize;
        debug_assert!(!self.linked[i], "block {block} queued twice");
        self.next[i] = self.head;
        self.prev[i] = NIL;
        if self.head == NIL {
            self.tail = block;
        } else {
            self.prev[self.head as usize] = block;
        }
        self.head = block;
        self.linked[i] = true;
        self.len += 1;
    }

    /// Takes `block` out of the queue wherever it is (O(1)); `false` if it was not queued.
    #[inline]
    pub fn remove(&mut self, block: u32) -> bool {
        if !self.linked[block as usize] {
            return false;
        }
        self.unlink(block);
        true
    }

    #[inline]
    fn unlink(&mut self, block: u32) {
        let i = block as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
        self.linked[i] = false;
        self.len -= 1;
    }

    /// Blocks from front (next evicted) to back.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let b = cur;
            cur = self.next[b as usize];
            Some(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_middle_removal() {
        let mut q = FreeBlockQueue::new(5);
        assert_eq!(q.len(), 5);
        assert!(q.remove(0));
        assert!(q.remove(4));
        assert!(q.remove(2));
        assert!(!q.remove(2));
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![1, 3]);
        q.push_back(2);
        q.push_back(0);
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![3, 2, 0]);
        assert_eq!(q.len(), 3);
        while q.pop_front().is_some() {}
        assert!(q.is_empty());
        q.push_back(4);
        assert_eq!(q.front(), Some(4));
        q.push_front(1);
        q.push_back(2);
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![1, 4, 2]);
    }

    #[test]
    fn empty_queue() {
        let mut q = FreeBlockQueue::new(0);
        assert_eq!(q.pop_front(), None);
        assert!(q.is_empty());
    }
}
