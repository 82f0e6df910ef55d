//! Regression tests for the block manager (issue 12's repros).

use slabcache_core::blocks::{try_vec, BlockManager, BlockManagerConfig, StepInput};
use slabcache_core::ErrorKind;

fn step_ids<'a>(ids: &'a [i64], budgets: &'a [i64]) -> StepInput<'a> {
    StepInput {
        req_ids: ids,
        num_new_tokens: budgets,
        token_ids: &[],
        token_offsets: &[],
        extra_keys: &[],
        programs: &[],
        finished: &[],
        num_lookahead_tokens: 0,
        now: 0.0,
        fcfs: true,
    }
}

#[test]
fn fcfs_stops_at_a_refused_registered_request() {
    let mut bm = BlockManager::new(BlockManagerConfig::new(8, 4)).unwrap();
    let long: Vec<u32> = (0..100).collect();
    bm.get_computed_blocks(1, &long, 0, None).unwrap();
    bm.get_computed_blocks(2, &[1, 2, 3], 0, None).unwrap();
    let out = bm.step(&step_ids(&[1, 2], &[1000, 1000])).unwrap();
    assert_eq!(out.num_scheduled, vec![-1, -1]);
    let mut inp = step_ids(&[1, 2], &[1000, 1000]);
    inp.fcfs = false;
    let out = bm.step(&inp).unwrap();
    assert_eq!(out.num_scheduled, vec![-1, 3]);
    bm.check_invariants().unwrap();
}

#[test]
fn impossible_allocation_is_an_error_not_an_abort() {
    let e = try_vec(usize::MAX / 4, 0u64).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
}

#[test]
fn double_free_is_detected_after_many_frees() {
    let mut bm = BlockManager::new(BlockManagerConfig::new(4, 4)).unwrap();
    bm.get_computed_blocks(0, &[1, 2], 0, None).unwrap();
    bm.free(0).unwrap();
    for id in 1..70_000 {
        bm.get_computed_blocks(id, &[1, 2], 0, None).unwrap();
        bm.free(id).unwrap();
    }
    assert_eq!(bm.free(0).unwrap_err().kind(), ErrorKind::DoubleFree);
    assert_eq!(bm.free(70_000).unwrap_err().kind(), ErrorKind::NotFound);
}
