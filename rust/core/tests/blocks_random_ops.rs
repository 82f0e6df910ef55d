//! Randomized operation sequences on the block manager: every operation
//! (admit, decode, fork, free, pin, expire, swap out/in, step, bad input)
//! keeps every invariant, errors change nothing, and all blocks come back.

use proptest::prelude::*;
use slabcache_core::blocks::{BlockManager, BlockManagerConfig, StepInput};

#[derive(Debug, Clone)]
enum Op {
    Admit {
        prefix: usize,
        tail: Vec<u32>,
    },
    Decode {
        pick: usize,
        tok: u32,
    },
    Fork {
        pick: usize,
    },
    Free {
        pick: usize,
    },
    Pin {
        pick: usize,
        ttl: u8,
    },
    Advance {
        dt: u8,
    },
    SwapOut {
        pick: usize,
    },
    SwapIn {
        pick: usize,
    },
    Step {
        picks: Vec<usize>,
        new_tail: Vec<u32>,
    },
    BadFree {
        id: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4, prop::collection::vec(0u32..4, 1..7)).prop_map(|(prefix, tail)| Op::Admit { prefix, tail }),
        4 => (any::<usize>(), 0u32..4).prop_map(|(pick, tok)| Op::Decode { pick, tok }),
        1 => any::<usize>().prop_map(|pick| Op::Fork { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (any::<usize>(), 0u8..5).prop_map(|(pick, ttl)| Op::Pin { pick, ttl }),
        1 => (0u8..4).prop_map(|dt| Op::Advance { dt }),
        1 => any::<usize>().prop_map(|pick| Op::SwapOut { pick }),
        1 => any::<usize>().prop_map(|pick| Op::SwapIn { pick }),
        2 => (prop::collection::vec(any::<usize>(), 0..4), prop::collection::vec(0u32..4, 1..6))
            .prop_map(|(picks, new_tail)| Op::Step { picks, new_tail }),
        1 => (-3i64..3).prop_map(|id| Op::BadFree { id: id - 1000 }),
    ]
}

const PREFIXES: [&[u32]; 4] = [&[], &[1, 2], &[1, 2, 3, 4], &[7, 7, 7, 7, 7, 7]];

fn pick(live: &[i64], i: usize) -> Option<i64> {
    (!live.is_empty()).then(|| live[i % live.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let cfg = BlockManagerConfig { num_cpu_blocks: 8, watermark: 0.1, ..BlockManagerConfig::new(14, 2) };
        let mut bm = BlockManager::new(cfg).unwrap();
        let mut live: Vec<i64> = Vec::new();
        let mut next: i64 = 0;
        let mut now = 0.0;
        for op in ops {
            match op {
                Op::Admit { prefix, tail } => {
                    let mut prompt = PREFIXES[prefix].to_vec();
                    prompt.extend(tail);
                    let (_, n) = bm.get_computed_blocks(next, &prompt, 0, Some(next % 3)).unwrap();
                    if bm.allocate_slots(next, prompt.len() - n, &[], 0, now).unwrap().is_some() {
                        live.push(next);
                    } else {
                        bm.free(next).unwrap();
                    }
                    next += 1;
                }
                Op::Decode { pick: p, tok } => {
                    if let Some(id) = pick(&live, p) {
                        let free_before = bm.num_free_blocks();
                        match bm.allocate_slots(id, 1, &[tok], 0, now) {
                            Ok(Some(_)) => {}
                            Ok(None) => prop_assert_eq!(bm.num_free_blocks(), free_before),
                            Err(_) => prop_assert!(bm.host_block_table(id).unwrap().is_some()),
                        }
                    }
                }
                Op::Fork { pick: p } => {
                    if let Some(id) = pick(&live, p) {
                        if bm.fork(id, next).is_ok() {
                            live.push(next);
                        }
                        next += 1;
                    }
                }
                Op::Free { pick: p } => {
                    if let Some(id) = pick(&live, p) {
                        bm.free(id).unwrap();
                        live.retain(|&x| x != id);
                        prop_assert!(bm.free(id).is_err());
                    }
                }
                Op::Pin { pick: p, ttl } => {
                    if let Some(id) = pick(&live, p) {
                        if bm.pin(id, ttl as f64, None, now).is_ok() {
                            live.retain(|&x| x != id);
                        }
                    }
                }
                Op::Advance { dt } => {
                    now += dt as f64;
                    bm.expire_pins(now).unwrap();
                }
                Op::SwapOut { pick: p } => {
                    if let Some(id) = pick(&live, p) {
                        let _ = bm.swap_out(id);
                    }
                }
                Op::SwapIn { pick: p } => {
                    if let Some(id) = pick(&live, p) {
                        let before = bm.block_table(id).map(|t| t.len()).ok();
                        if let Ok(Some(ranges)) = bm.swap_in(id, now) {
                            prop_assert!(before.is_none());
                            let host_len: u32 = ranges.iter().map(|r| r.len).sum();
                            prop_assert!(host_len as usize <= bm.block_table(id).unwrap().len());
                        }
                    }
                }
                Op::Step { picks, new_tail } => {
                    let mut ids: Vec<i64> = Vec::new();
                    for p in picks {
                        if let Some(id) = pick(&live, p) {
                            if !ids.contains(&id) && bm.host_block_table(id).unwrap().is_none() {
                                ids.push(id);
                            }
                        }
                    }
                    let mut toks: Vec<i32> = Vec::new();
                    let mut offs = vec![0i64];
                    let mut budgets = Vec::new();
                    for _ in &ids {
                        toks.push(3);
                        offs.push(toks.len() as i64);
                        budgets.push(1);
                    }
                    ids.push(next);
                    toks.extend(new_tail.iter().map(|&t| t as i32));
                    offs.push(toks.len() as i64);
                    budgets.push(100);
                    let inp = StepInput {
                        req_ids: &ids, num_new_tokens: &budgets, token_ids: &toks, token_offsets: &offs,
                        extra_keys: &[], programs: &[], finished: &[], num_lookahead_tokens: 0, now, fcfs: true,
                    };
                    let out = bm.step(&inp).unwrap();
                    if out.num_scheduled[ids.len() - 1] >= 0 {
                        live.push(next);
                    }
                    next += 1;
                }
                Op::BadFree { id } => {
                    prop_assert!(bm.free(id).is_err());
                }
            }
            bm.check_invariants().unwrap();
        }
        for id in live {
            bm.free(id).unwrap();
        }
        bm.expire_pins(1e18).unwrap();
        bm.check_invariants().unwrap();
        prop_assert_eq!(bm.num_free_blocks(), 14);
        prop_assert_eq!(bm.stats().num_used_cpu_blocks, 0);
    }
}

#[test]
fn swap_out_of_shuffled_table_is_one_range() {
    let mut bm = BlockManager::new(BlockManagerConfig {
        num_cpu_blocks: 16,
        ..BlockManagerConfig::new(16, 4)
    })
    .unwrap();
    // Fragment the free queue so the table is not in id order.
    for id in 0..4 {
        bm.get_computed_blocks(id, &[id as u32 * 10 + 1], 0, None)
            .unwrap();
        bm.allocate_slots(id, 1, &[], 0, 0.0).unwrap().unwrap();
    }
    bm.free(2).unwrap();
    bm.free(0).unwrap();
    let prompt: Vec<u32> = (100..120).collect();
    bm.get_computed_blocks(9, &prompt, 0, None).unwrap();
    bm.allocate_slots(9, 20, &[], 0, 0.0).unwrap().unwrap();
    let table = bm.block_table(9).unwrap().to_vec();
    assert_eq!(table.len(), 5);
    let ranges = bm.swap_out(9).unwrap().unwrap();
    let total: u32 = ranges.iter().map(|r| r.len).sum();
    assert_eq!(total, 5);
    // Device ids {0, 2, 4..=6} sorted: runs 0 | 2 | 4,5,6 at most.
    assert!(ranges.len() <= 3, "{ranges:?}");
    bm.check_invariants().unwrap();
}
