//! Randomized operation sequences on the hybrid-group manager (full attention
//! and sliding windows over one pool): admissions with prefix hits, chunked
//! prefill, decodes with lookahead, evictions of cached hashes, frees, bad
//! hits. Every call keeps every invariant, a refused admission registers
//! nothing, a rejected call changes nothing, and every block comes back.

use proptest::prelude::*;
use slabcache_core::blocks::groups::{
    GroupKind, GroupSpec, HybridAlloc, HybridBlockManager, HybridConfig,
};

#[derive(Debug, Clone)]
enum Op {
    Admit {
        prefix: usize,
        tail: Vec<u32>,
        chunk: usize,
    },
    Advance {
        pick: usize,
        tok: u32,
        lookahead: usize,
    },
    Evict {
        block: u32,
    },
    Free {
        pick: usize,
    },
    BadHit {
        block: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, prop::collection::vec(0u32..5, 1..9), 1usize..40)
            .prop_map(|(prefix, tail, chunk)| Op::Admit { prefix, tail, chunk }),
        5 => (any::<usize>(), 0u32..5, 0usize..3)
            .prop_map(|(pick, tok, lookahead)| Op::Advance { pick, tok, lookahead }),
        1 => (0u32..40).prop_map(|block| Op::Evict { block }),
        2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (0u32..40).prop_map(|block| Op::BadHit { block }),
    ]
}

fn spec(w: usize) -> GroupSpec {
    let kind = if w == 0 {
        GroupKind::Full
    } else {
        GroupKind::SlidingWindow {
            window: w,
            extra_retained: 0,
        }
    };
    GroupSpec {
        kind,
        admission_cap: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn hybrid_ops_keep_invariants(
        windows in prop::sample::select(vec![vec![0, 8], vec![0, 5, 12], vec![8], vec![0, 0, 6]]),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let bs = 4;
        let nb = 40;
        let mut bm = HybridBlockManager::new(HybridConfig {
            enable_events: true,
            ..HybridConfig::new(nb, bs, windows.iter().map(|&w| spec(w)).collect())
        }).unwrap();
        let prefixes: [Vec<u32>; 3] = [(0..8).collect(), (100..112).collect(), vec![7; 6]];
        // request id -> (computed, known tokens)
        let mut live: Vec<(i64, usize, usize)> = Vec::new();
        let mut next = 0i64;
        for o in ops {
            match o {
                Op::Admit { prefix, tail, chunk } => {
                    let mut p = prefixes[prefix].clone();
                    p.extend(tail);
                    let (hit, n) = bm.find_longest_cache_hit(&p, 0, p.len() - 1);
                    prop_assert!(n < p.len() && n % bs == 0);
                    let k = chunk.min(p.len() - n).max(1);
                    let a = HybridAlloc {
                        new_tokens: &p,
                        hit: &hit,
                        num_new_computed_tokens: n,
                        num_new_tokens: k,
                        max_model_len: 1 << 20,
                        ..HybridAlloc::default()
                    };
                    let free_before = bm.num_free_blocks();
                    match bm.allocate_slots(next, &a).unwrap() {
                        Some(_) => live.push((next, n + k, p.len())),
                        None => {
                            prop_assert!(!bm.contains(next));
                            prop_assert_eq!(bm.num_free_blocks(), free_before);
                        }
                    }
                    next += 1;
                }
                Op::Advance { pick, tok, lookahead } if !live.is_empty() => {
                    let i = pick % live.len();
                    let (id, computed, known) = live[i];
                    let toks = [tok];
                    let (new_tokens, k): (&[u32], usize) =
                        if computed < known { (&[], (known - computed).min(5)) } else { (&toks, 1) };
                    let a = HybridAlloc {
                        new_tokens,
                        num_computed_tokens: computed,
                        num_new_tokens: k,
                        num_lookahead_tokens: lookahead,
                        max_model_len: 1 << 20,
                        ..HybridAlloc::default()
                    };
                    match bm.allocate_slots(id, &a).unwrap() {
                        Some(_) => live[i] = (id, computed + k, known + new_tokens.len()),
                        None => {
                            bm.free(id); // preempted
                            live.swap_remove(i);
                        }
                    }
                }
                Op::Advance { .. } => {}
                Op::Evict { block } => {
                    let r = bm.evict_blocks(&[block]);
                    prop_assert_eq!(r.is_ok(), (block as usize) < nb);
                }
                Op::Free { pick } if !live.is_empty() => {
                    let (id, _, _) = live.swap_remove(pick % live.len());
                    bm.free(id);
                    prop_assert!(!bm.contains(id));
                }
                Op::Free { .. } => {}
                Op::BadHit { block } => {
                    // A hit block that does not hold this prompt's prefix is refused, with no change.
                    let p: Vec<u32> = (900..912).collect();
                    let mut hit = vec![Vec::new(); windows.len()];
                    hit[0] = vec![block];
                    let a = HybridAlloc {
                        new_tokens: &p,
                        hit: &hit,
                        num_new_computed_tokens: bs,
                        num_new_tokens: 4,
                        max_model_len: 1 << 20,
                        ..HybridAlloc::default()
                    };
                    let free_before = bm.num_free_blocks();
                    prop_assert!(bm.allocate_slots(next, &a).is_err());
                    prop_assert!(!bm.contains(next));
                    prop_assert_eq!(bm.num_free_blocks(), free_before);
                }
            }
            bm.check_invariants().unwrap();
            for (id, _, _) in &live {
                for g in 0..windows.len() {
                    for &b in bm.block_table(*id, g) {
                        prop_assert!(b == slabcache_core::blocks::sliding_window::NULL_BLOCK || (b as usize) < nb);
                    }
                }
            }
        }
        for (id, _, _) in live {
            bm.free(id);
        }
        bm.check_invariants().unwrap();
        prop_assert_eq!(bm.num_free_blocks(), nb);
    }
}
