//! TTL pins (Continuum): a finished turn's blocks stay resident while the
//! agent program waits on a tool call, until the next turn arrives or the
//! deadline passes.
//!
//! Pins are keyed by program id and ordered by deadline, so expiry pops from
//! the front. The deadline order is the project's concurrent B-skiplist
//! ([`BSkipList`]) keyed by `(deadline, program)`: the earliest deadline is
//! the list's first entry.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use super::block_hash::IdBuildHasher;
use crate::skiplist::BSkipList;

/// A deadline in seconds on the caller's clock (total order over finite f64).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadline(pub f64);

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One program's pin: the blocks it holds a reference on, and its deadline.
#[derive(Debug, Clone)]
pub struct Pin {
    /// When the pin expires.
    pub deadline: f64,
    /// Device blocks (a prefix of the finished turn's table), in table order.
    pub blocks: Vec<u32>,
}

/// Pins by program, ordered by deadline.
///
/// ```
/// use slabcache_core::blocks::PinSchedule;
/// let mut pins = PinSchedule::default();
/// pins.insert(7, 10.0, vec![1, 2]);
/// pins.insert(8, 5.0, vec![3]);
/// let expired: Vec<_> = pins.pop_expired(6.0).collect();
/// assert_eq!(expired.len(), 1);
/// assert_eq!(expired[0].0, 8);
/// assert!(pins.contains(7));
/// ```
#[derive(Default)]
pub struct PinSchedule {
    by_deadline: BSkipList<(Deadline, i64), ()>,
    by_program: HashMap<i64, Pin, IdBuildHasher>,
    num_blocks: usize,
}

impl Clone for PinSchedule {
    fn clone(&self) -> Self {
        let by_deadline = BSkipList::new();
        // Already sorted and unique: the skiplist bulk-loads it.
        by_deadline.insert_many(self.by_deadline.iter().collect());
        PinSchedule {
            by_deadline,
            by_program: self.by_program.clone(),
            num_blocks: self.num_blocks,
        }
    }
}

impl fmt::Debug for PinSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinSchedule")
            .field(
                "by_deadline",
                &self.by_deadline.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("by_program", &self.by_program)
            .field("num_blocks", &self.num_blocks)
            .finish()
    }
}

impl PinSchedule {
    /// Pins `blocks` for `program` until `deadline`; returns the program's previous pin if it had one.
    pub fn insert(&mut self, program: i64, deadline: f64, blocks: Vec<u32>) -> Option<Pin> {
        let old = self.remove(program);
        self.num_blocks += blocks.len();
        self.by_deadline.insert((Deadline(deadline), program), ());
        self.by_program.insert(program, Pin { deadline, blocks });
        old
    }

    /// Removes `program`'s pin.
    pub fn remove(&mut self, program: i64) -> Option<Pin> {
        let pin = self.by_program.remove(&program)?;
        self.by_deadline.remove(&(Deadline(pin.deadline), program));
        self.num_blocks -= pin.blocks.len();
        Some(pin)
    }

    /// Whether `program` holds a pin.
    #[inline]
    pub fn contains(&self, program: i64) -> bool {
        self.by_program.contains_key(&program)
    }

    /// `program`'s pin.
    pub fn get(&self, program: i64) -> Option<&Pin> {
        self.by_program.get(&program)
    }

    /// The earliest deadline.
    #[inline]
    pub fn next_deadline(&self) -> Option<f64> {
        self.by_deadline.first().map(|((d, _), ())| d.0)
    }

    /// Removes and yields, in deadline order, every pin with `deadline <= now`.
    pub fn pop_expired(&mut self, now: f64) -> impl Iterator<Item = (i64, Pin)> + '_ {
        std::iter::from_fn(move || {
            let ((d, program), ()) = self.by_deadline.first()?;
            if d.0 > now {
                return None;
            }
            let pin = self.remove(program).expect("schedule and map agree");
            Some((program, pin))
        })
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.by_program.len()
    }

    /// `true` when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.by_program.is_empty()
    }

    /// Blocks referenced by pins (a block pinned twice counts twice).
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Every pin.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Pin)> {
        self.by_program.iter().map(|(k, v)| (*k, v))
    }

    /// Checks that both indexes agree.
    pub fn check(&self) -> Result<(), String> {
        if self.by_deadline.len() != self.by_program.len() {
            return Err("pin indexes differ in size".into());
        }
        for (program, pin) in &self.by_program {
            if !self
                .by_deadline
                .contains_key(&(Deadline(pin.deadline), *program))
            {
                return Err(format!(
                    "pin of program {program} missing from the deadline order"
                ));
            }
        }
        let n: usize = self.by_program.values().map(|p| p.blocks.len()).sum();
        if n != self.num_blocks {
            return Err("pinned block count mismatch".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_in_deadline_order_and_replacement() {
        let mut p = PinSchedule::default();
        p.insert(1, 3.0, vec![1]);
        p.insert(2, 1.0, vec![2, 3]);
        p.insert(3, 2.0, vec![]);
        let copy = p.clone();
        let old = p.insert(1, 0.5, vec![4]).unwrap();
        assert_eq!(old.blocks, vec![1]);
        assert_eq!(p.num_blocks(), 3);
        assert_eq!(p.next_deadline(), Some(0.5));
        let order: Vec<i64> = p.pop_expired(2.0).map(|(k, _)| k).collect();
        assert_eq!(order, vec![1, 2, 3]);
        assert!(p.is_empty());
        assert!(p.check().is_ok());
        // The clone is independent and keeps its own order.
        assert!(copy.check().is_ok());
        assert_eq!(copy.next_deadline(), Some(1.0));
        assert_eq!(copy.len(), 3);
    }
}
