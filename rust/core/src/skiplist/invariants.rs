//! A structural checker for tests: every level is a sorted chain whose
//! fences agree with the keys, and every index entry points at the node that
//! starts at that key.

use crossbeam_epoch as epoch;

use super::config::Config;
use super::node::{keys, kids, Node};
use super::BSkipList;

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + std::fmt::Debug + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// Checks the structure; call it when no write is in flight. Returns a
    /// description of the first violation.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for i in 0..1000 { m.insert(i * 7 % 1000, i); }
    /// m.check_invariants().unwrap();
    /// ```
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let guard = &epoch::pin();
        let mut total = 0usize;
        for level in 0..=self.top_level() {
            let mut node: &Node<K, V, C> = self.head(level);
            let mut prev_key: Option<&K> = None;
            loop {
                if node.is_dead() {
                    return Err(format!("dead node linked at level {level}"));
                }
                if node.level as usize != level {
                    return Err(format!(
                        "node of level {} linked at level {level}",
                        node.level
                    ));
                }
                let blk = node.block(guard);
                let ks = keys::<K, V, C>(blk);
                if let (Some(low), Some(first)) = (&node.low, ks.first()) {
                    if first < low {
                        return Err(format!(
                            "key {first:?} below fence {low:?} at level {level}"
                        ));
                    }
                }
                for k in ks {
                    if let Some(p) = prev_key {
                        if p >= k {
                            return Err(format!(
                                "keys out of order at level {level}: {p:?} >= {k:?}"
                            ));
                        }
                    }
                    prev_key = Some(k);
                }
                if let (Some(high), Some(last)) = (&blk.high, ks.last()) {
                    if last >= high {
                        return Err(format!("key {last:?} at or above fence {high:?}"));
                    }
                }
                if level > 0 {
                    let cs = kids::<K, V, C>(blk);
                    if cs.len() != ks.len() + 1 {
                        return Err(format!(
                            "inner node with {} keys, {} kids",
                            ks.len(),
                            cs.len()
                        ));
                    }
                    // SAFETY: children of a published block are live while pinned.
                    let first = unsafe { &*cs[0] };
                    if first.low != node.low {
                        return Err(format!(
                            "first child fence {:?} != {:?}",
                            first.low, node.low
                        ));
                    }
                    for (k, &c) in ks.iter().zip(&cs[1..]) {
                        // SAFETY: as above.
                        let c = unsafe { &*c };
                        if c.low.as_ref() != Some(k) {
                            return Err(format!("child fence {:?} != index key {k:?}", c.low));
                        }
                    }
                } else {
                    total += ks.len();
                }
                if blk.next.is_null() {
                    if blk.high.is_some() {
                        return Err("a fence without a neighbour".into());
                    }
                    break;
                }
                // SAFETY: as above.
                let next = unsafe { &*blk.next };
                if next.low != blk.high {
                    return Err(format!(
                        "fence {:?} != neighbour low {:?}",
                        blk.high, next.low
                    ));
                }
                node = next;
            }
        }
        if total != self.len() {
            return Err(format!("{total} keys linked, len() says {}", self.len()));
        }
        Ok(())
    }
}
