//! Bulk load: a sorted batch into an empty list, built level by level
//! without a write per key. Used by `insert_many` when the list is empty.

use crossbeam_epoch::Guard;

use super::block::Builder;
use super::config::{Config, MAX_LEVELS};
use super::node::{keys, retire_block, Node, NodePtr};
use super::BSkipList;

type LeafB<K, V, C> = Builder<K, V, Node<K, V, C>>;
type InnerB<K, V, C> = super::node::InnerBuilder<K, V, C>;

/// Splits `heights.len()` children into groups: a child starts a new group
/// when its height exceeds `level` or the current group is full (then its
/// height is raised, so it is an index key one level up). Returns the start
/// index of each group after the head's group (which starts at 0).
fn group_starts(heights: &mut [u8], level: usize, head_cap: usize, cap: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut size = 0;
    let mut limit = head_cap;
    for (i, h) in heights.iter_mut().enumerate() {
        let top = level + 1 >= MAX_LEVELS;
        if !top && (*h as usize > level || size >= limit) {
            *h = (*h).max(level as u8 + 1);
            starts.push(i);
            size = 1;
            limit = cap;
        } else {
            size += 1;
        }
    }
    starts
}

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// Builds the whole list from `items` (sorted, no duplicates) if it is
    /// empty; hands the items back otherwise. Holds every head's lock while
    /// it checks and publishes, so no write can slip in between.
    pub(crate) fn bulk_load(
        &self,
        items: Vec<(K, V)>,
        mut heights: Vec<u8>,
        guard: &Guard,
    ) -> Result<(), Vec<(K, V)>> {
        let _locks: Vec<_> = (0..MAX_LEVELS).rev().map(|l| self.head(l).lock()).collect();
        let hb = self.head(0).block(guard);
        // Every node above level 0 starts at a leaf boundary, so a lone empty
        // head leaf means the whole list is empty.
        if !keys::<K, V, C>(hb).is_empty() || !hb.next.is_null() || items.is_empty() {
            return Err(items);
        }
        let n = items.len();
        let b = C::B;

        // Level 0: leaves. The head leaf takes items up to the first start.
        let starts = group_starts(&mut heights, 0, b, b);
        let mut bounds = Vec::with_capacity(starts.len() + 2);
        bounds.push(0);
        bounds.extend_from_slice(&starts);
        bounds.push(n);
        let lows: Vec<K> = starts.iter().map(|&i| items[i].0.clone()).collect();
        // Children of the next level: (low, height, node) of each non-head node.
        let mut level_nodes: Vec<(K, u8, NodePtr<K, V, C>)> = Vec::with_capacity(starts.len());
        let mut leaf_blocks = Vec::with_capacity(bounds.len() - 1);
        let mut it = items.into_iter();
        for g in 0..bounds.len() - 1 {
            let len = bounds[g + 1] - bounds[g];
            let high = lows.get(g).cloned();
            let mut bb = LeafB::<K, V, C>::new(std::ptr::null(), high, len, len);
            let mut vs = Vec::with_capacity(len);
            for _ in 0..len {
                let (k, v) = it.next().expect("grouped items");
                bb.push_key(k);
                vs.push(v);
            }
            for v in vs {
                bb.push_item(v);
            }
            let blk = bb.finish();
            leaf_blocks.push(blk);
            if g > 0 {
                let node = Node::<K, V, C>::new(Some(lows[g - 1].clone()), 0, blk);
                level_nodes.push((lows[g - 1].clone(), heights[starts[g - 1]], node));
            }
        }
        // Link each block to the next node (nothing is published yet).
        for (g, &blk) in leaf_blocks.iter().enumerate() {
            if let Some(next) = level_nodes.get(g) {
                // SAFETY: `blk` is ours alone until the head is published below.
                unsafe { (*blk).next = next.2 };
            }
        }
        let old = self.head(0).publish(leaf_blocks[0]);
        // SAFETY: the old head block is empty and now unreachable.
        unsafe { retire_block(guard, old, true, None, None, true) };
        let mut top = 0;

        // Levels 1..: index nodes over the previous level's nodes.
        let mut level = 1;
        while level < MAX_LEVELS && !level_nodes.is_empty() {
            let mut hs: Vec<u8> = level_nodes.iter().map(|c| c.1).collect();
            let starts = group_starts(&mut hs, level, b, b + 1);
            for (c, h) in level_nodes.iter_mut().zip(&hs) {
                c.1 = *h;
            }
            top = level;
            let mut bounds = Vec::with_capacity(starts.len() + 2);
            bounds.push(0);
            bounds.extend_from_slice(&starts);
            bounds.push(level_nodes.len());
            let mut parents: Vec<(K, u8, NodePtr<K, V, C>)> = Vec::with_capacity(starts.len());
            let mut next: NodePtr<K, V, C> = std::ptr::null();
            for g in (0..bounds.len() - 1).rev() {
                let group = &level_nodes[bounds[g]..bounds[g + 1]];
                let high = (g + 1 < bounds.len() - 1).then(|| level_nodes[bounds[g + 1]].0.clone());
                if g == 0 {
                    // The head: first child is the head below, then the group.
                    let mut bb = InnerB::<K, V, C>::new(next, high, group.len(), group.len() + 1);
                    bb.push_item(self.heads[level - 1]);
                    for c in group {
                        bb.push_key(c.0.clone());
                    }
                    for c in group {
                        bb.push_item(c.2);
                    }
                    let old = self.head(level).publish(bb.finish());
                    // SAFETY: the old head block held only the head below.
                    unsafe { retire_block(guard, old, false, None, None, true) };
                } else {
                    // A new node starting at its first child.
                    let mut bb = InnerB::<K, V, C>::new(next, high, group.len() - 1, group.len());
                    for c in &group[1..] {
                        bb.push_key(c.0.clone());
                    }
                    for c in group {
                        bb.push_item(c.2);
                    }
                    let node = Node::<K, V, C>::new(Some(group[0].0.clone()), level, bb.finish());
                    parents.push((group[0].0.clone(), group[0].1, node));
                    next = node;
                }
            }
            parents.reverse();
            level_nodes = parents;
            level += 1;
        }
        self.raise_top(top);
        self.len.add(n as isize);
        Ok(())
    }
}
