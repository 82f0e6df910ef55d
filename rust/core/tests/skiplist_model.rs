//! Property tests: a `BSkipList` behaves exactly like a `BTreeMap` under any
//! sequence of operations (single thread), for small and large fan-outs.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use slabcache_core::skiplist::{BSkipList, Config, DefaultConfig};

/// The smallest legal fan-out, so that splits, promotions and merges happen
/// after a handful of operations.
struct Tiny;
impl Config for Tiny {
    const B: usize = 8;
    type Lock = parking_lot::Mutex<()>;
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    SetDefault(u16, u32),
    Remove(u16),
    Get(u16),
    PopFirst,
    First,
    Last,
    Lower(u16, bool),
    Upper(u16, bool),
    Range(u16, u16, bool),
    Bulk(u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 512, v)),
        1 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::SetDefault(k % 512, v)),
        4 => any::<u16>().prop_map(|k| Op::Remove(k % 512)),
        2 => any::<u16>().prop_map(|k| Op::Get(k % 512)),
        1 => Just(Op::PopFirst),
        1 => Just(Op::First),
        1 => Just(Op::Last),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(k, i)| Op::Lower(k % 520, i)),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(k, i)| Op::Upper(k % 520, i)),
        1 => (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(a, b, r)| Op::Range(a % 520, b % 520, r)),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, n)| Op::Bulk(a % 512, n % 300)),
    ]
}

fn bound(k: u16, inclusive: bool) -> Bound<&'static u16> {
    let k: &'static u16 = Box::leak(Box::new(k));
    if inclusive {
        Bound::Included(k)
    } else {
        Bound::Excluded(k)
    }
}

fn check<C: Config>(ops: &[Op]) {
    let m: BSkipList<u16, u32, C> = BSkipList::new();
    let mut model = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Insert(k, v) => assert_eq!(m.insert(k, v), model.insert(k, v), "{op:?}"),
            Op::SetDefault(k, v) => assert_eq!(m.get_or_insert(k, v), *model.entry(k).or_insert(v)),
            Op::Remove(k) => assert_eq!(m.remove(&k), model.remove(&k), "{op:?}"),
            Op::Get(k) => assert_eq!(m.get(&k), model.get(&k).copied()),
            Op::PopFirst => assert_eq!(m.pop_first(), model.pop_first()),
            Op::First => assert_eq!(m.first(), model.first_key_value().map(|(k, v)| (*k, *v))),
            Op::Last => assert_eq!(m.last(), model.last_key_value().map(|(k, v)| (*k, *v))),
            Op::Lower(k, inc) => {
                let want = model
                    .range((bound(k, inc), Bound::Unbounded))
                    .next()
                    .map(|(k, v)| (*k, *v));
                assert_eq!(m.lower_bound(bound(k, inc)), want, "{op:?}");
            }
            Op::Upper(k, inc) => {
                let want = model
                    .range((Bound::Unbounded, bound(k, inc)))
                    .next_back()
                    .map(|(k, v)| (*k, *v));
                assert_eq!(m.upper_bound(bound(k, inc)), want, "{op:?}");
            }
            Op::Range(a, b, rev) => {
                let (lo, hi) = (a.min(b), a.max(b));
                let want: Vec<_> = model.range(lo..hi).map(|(k, v)| (*k, *v)).collect();
                let got: Vec<_> = if rev {
                    let mut g: Vec<_> = m.range(lo..hi).rev().collect();
                    g.reverse();
                    g
                } else {
                    m.range(lo..hi).collect()
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::Bulk(start, n) => {
                for k in start..start.saturating_add(n).min(600) {
                    assert_eq!(m.insert(k, k as u32), model.insert(k, k as u32));
                }
            }
        }
        assert_eq!(m.len(), model.len());
    }
    m.check_invariants().unwrap();
    let all: Vec<_> = m.iter().collect();
    let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(all, want);
    let mut back: Vec<_> = m.iter().rev().collect();
    back.reverse();
    assert_eq!(back, want);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn behaves_like_btreemap_tiny_nodes(ops in proptest::collection::vec(op(), 1..400)) {
        check::<Tiny>(&ops);
    }

    #[test]
    fn behaves_like_btreemap_default_nodes(ops in proptest::collection::vec(op(), 1..400)) {
        check::<DefaultConfig>(&ops);
    }

    #[test]
    fn interleaved_ends_of_a_range_meet_exactly(
        keys in proptest::collection::btree_set(any::<u16>(), 0..300),
        pattern in proptest::collection::vec(any::<bool>(), 0..400),
    ) {
        let m: BSkipList<u16, (), Tiny> = BSkipList::new();
        for &k in &keys { m.insert(k, ()); }
        let want: Vec<u16> = keys.iter().copied().collect();
        let mut it = m.iter();
        let (mut front, mut back) = (Vec::new(), Vec::new());
        for &f in &pattern {
            let e = if f { it.next() } else { it.next_back() };
            match e { Some((k, _)) => if f { front.push(k) } else { back.push(k) }, None => break }
        }
        for (k, _) in it.by_ref() { front.push(k); }
        back.reverse();
        front.extend(back);
        prop_assert_eq!(front, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn insert_many_matches_btreemap(
        before in proptest::collection::vec((0u16..2000, any::<u32>()), 0..300),
        batches in proptest::collection::vec(proptest::collection::vec((0u16..2000, any::<u32>()), 0..700), 1..4),
    ) {
        let m: BSkipList<u16, u32, Tiny> = BSkipList::new();
        let mut model = BTreeMap::new();
        for (k, v) in before {
            m.insert(k, v);
            model.insert(k, v);
        }
        for batch in batches {
            for &(k, v) in &batch {
                model.insert(k, v);
            }
            m.insert_many(batch);
            m.check_invariants().unwrap();
        }
        prop_assert_eq!(m.len(), model.len());
        let got: Vec<_> = m.iter().collect();
        let want: Vec<_> = model.clone().into_iter().collect();
        prop_assert_eq!(got, want);
        // The built structure keeps working: removes merge, inserts split.
        for k in (0u16..2000).step_by(3) {
            prop_assert_eq!(m.remove(&k), model.remove(&k));
            m.insert(k + 1, 7);
            model.insert(k + 1, 7);
        }
        m.check_invariants().unwrap();
        prop_assert_eq!(m.iter().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn insert_many_bulk_load_fills_leaves() {
    let m: BSkipList<u64, u64> = BSkipList::new();
    m.insert_many(
        (0..100_000u64)
            .rev()
            .map(|i| (i * 7919 % 100_003, i))
            .collect(),
    );
    m.check_invariants().unwrap();
    assert_eq!(m.len(), 100_000);
    let leaves = m.nodes_per_level()[0];
    // Node boundaries come from the random promotions (B / 2 keys per node
    // on average), not from one rewrite per key.
    let avg = 100_000 / leaves;
    assert!(avg * 3 >= DefaultConfig::B, "{leaves} leaves for 100k keys");
}

#[test]
fn string_keys_and_borrowed_lookups() {
    let m: BSkipList<String, Vec<u8>, Tiny> = BSkipList::new();
    for i in 0..2000 {
        m.insert(format!("key{i:05}"), vec![i as u8; 3]);
    }
    assert_eq!(m.get("key00042"), Some(vec![42; 3]));
    assert_eq!(m.remove("key00042"), Some(vec![42; 3]));
    assert!(!m.contains_key("key00042"));
    let ks: Vec<String> = m.range("key01990".to_string()..).map(|(k, _)| k).collect();
    assert_eq!(ks.len(), 10);
    // Drain everything: merges must leave a consistent, empty list.
    let mut n = 0;
    while let Some((k, _)) = m.pop_first() {
        assert!(k.starts_with("key"));
        n += 1;
    }
    assert_eq!(n, 1999);
    assert!(m.is_empty());
    assert_eq!(m.len(), 0);
    assert_eq!(m.last(), None);
}

#[test]
fn drained_queue_does_not_keep_empty_nodes() {
    // The TTL-queue pattern: push at the back, pop at the front, forever.
    let m: BSkipList<u64, u64, Tiny> = BSkipList::new();
    let mut next = 0u64;
    for _ in 0..200 {
        for _ in 0..100 {
            m.insert(next, next);
            next += 1;
        }
        for _ in 0..100 {
            assert!(m.pop_first().is_some());
        }
    }
    assert!(m.is_empty());
    m.check_invariants().unwrap();
    let nodes = m.nodes_per_level();
    assert!(nodes[0] <= 4, "empty leaves left behind: {nodes:?}");
}

#[test]
fn values_are_dropped_exactly_once() {
    use std::sync::Arc;
    #[derive(Clone)]
    struct Tracked(#[allow(dead_code)] Arc<()>);
    let token = Arc::new(());
    {
        let m: BSkipList<u32, Tracked, Tiny> = BSkipList::new();
        for i in 0..5000u32 {
            m.insert(i % 3000, Tracked(Arc::clone(&token)));
            if i % 7 == 0 {
                m.remove(&(i / 2));
            }
        }
        m.check_invariants().unwrap();
    }
    // Retired blocks are batched per thread, then freed by the epoch
    // collector, which shares its queue with the other tests running in
    // parallel: reclaim until done.
    for _ in 0..100_000 {
        if Arc::strong_count(&token) == 1 {
            break;
        }
        slabcache_core::skiplist::reclaim_garbage();
        std::thread::yield_now();
    }
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "leaked or double-dropped values"
    );
}

#[test]
fn insert_many_large_batch_later_duplicates_win() {
    // Above the parallel-sort threshold, with many duplicates spread out.
    let batch: Vec<(u32, u32)> = (0..50_000u32).map(|i| ((i * 7_919) % 10_007, i)).collect();
    let mut model = BTreeMap::new();
    for &(k, v) in &batch {
        model.insert(k, v);
    }
    for pre_filled in [false, true] {
        let m: BSkipList<u32, u32> = BSkipList::new();
        if pre_filled {
            m.insert(5, 0);
        }
        m.insert_many(batch.clone());
        m.check_invariants().unwrap();
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        );
    }
}
