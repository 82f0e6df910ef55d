//! Randomized workloads on `BlockManager::schedule` (vLLM's scheduler step in
//! one call): every step keeps every invariant, respects the shared token
//! budget and `max_num_seqs`, admits nothing in a step that preempted, and
//! every block comes back once all requests are finished.

use proptest::prelude::*;
use slabcache_core::blocks::{
    AdmissionKind, BlockManager, BlockManagerConfig, ScheduleConfig, ScheduleInput,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_workloads(
        num_blocks in 2usize..12,
        budget in 1usize..40,
        max_seqs in 1usize..6,
        watermark in 0usize..2,
        prompts in prop::collection::vec((0usize..9, prop::collection::vec(0u32..6, 1..12), 1usize..12), 1..12),
        abort_at in prop::option::of(0usize..60),
    ) {
        let mut bm = BlockManager::new(BlockManagerConfig::new(num_blocks, 4)).unwrap();
        let cfg = ScheduleConfig {
            max_num_seqs: max_seqs,
            watermark_blocks: watermark,
            ..ScheduleConfig::new(budget, 48)
        };
        let shared: Vec<i32> = (0..8).collect();
        let mut arrival_tokens = Vec::new();
        let mut arrival_offsets = vec![0i64];
        let mut outputs_left = Vec::new();
        for (prefix, tail, out) in &prompts {
            arrival_tokens.extend_from_slice(&shared[..(*prefix).min(8)]);
            arrival_tokens.extend(tail.iter().map(|&t| t as i32 + 100));
            arrival_offsets.push(arrival_tokens.len() as i64);
            outputs_left.push(*out);
        }
        let ids: Vec<i64> = (0..prompts.len() as i64).collect();
        let mut num_tokens: Vec<usize> = (0..prompts.len())
            .map(|i| (arrival_offsets[i + 1] - arrival_offsets[i]) as usize)
            .collect();
        let mut computed = vec![0usize; prompts.len()];
        let mut live = prompts.len();
        let mut finished: Vec<i64> = Vec::new();
        let mut appended: Vec<i64> = Vec::new();
        let mut first = true;
        for step in 0..400 {
            if live == 0 {
                break;
            }
            if abort_at == Some(step) {
                // Abort whatever waits (an aborted waiting request must leak nothing).
                for id in bm.waiting_queue() {
                    if !finished.contains(&id) {
                        finished.push(id);
                        appended.retain(|&a| a != id);
                        live -= 1;
                        num_tokens[id as usize] = usize::MAX;
                    }
                }
            }
            let toks: Vec<i32> = appended.iter().map(|&id| (id as i32) % 7).collect();
            let offs: Vec<i64> = (0..=appended.len() as i64).collect();
            let inp = ScheduleInput {
                finished: &finished,
                appended_ids: &appended,
                appended_tokens: &toks,
                appended_offsets: if appended.is_empty() { &[] } else { &offs },
                arrival_ids: if first { &ids } else { &[] },
                arrival_tokens: if first { &arrival_tokens } else { &[] },
                arrival_offsets: if first { &arrival_offsets } else { &[] },
                ..Default::default()
            };
            let out = bm.schedule(&cfg, &inp).unwrap();
            first = false;
            finished.clear();
            appended.clear();
            bm.check_invariants().unwrap();
            let total: i32 = out.num_scheduled.iter().sum();
            prop_assert!(total as usize <= budget);
            prop_assert!(bm.running_queue().len() <= max_seqs);
            let admitted = out.kinds.iter().any(|&k| k != AdmissionKind::Running as u8);
            prop_assert!(!admitted || out.preempted.is_empty(), "admitted in a step that preempted");
            for &p in &out.preempted {
                computed[p as usize] = 0;
            }
            for (i, &id) in out.req_ids.iter().enumerate() {
                let id = id as usize;
                prop_assert!(out.num_computed[i] % 4 == 0 || out.kinds[i] == 0, "a hit is whole blocks");
                computed[id] = out.num_computed[i] as usize + out.num_scheduled[i] as usize;
                prop_assert!(computed[id] <= num_tokens[id]);
                if computed[id] == num_tokens[id] {
                    outputs_left[id] -= 1;
                    if outputs_left[id] == 0 {
                        finished.push(id as i64);
                        live -= 1;
                    } else {
                        num_tokens[id] += 1;
                        appended.push(id as i64);
                    }
                }
            }
        }
        let inp = ScheduleInput { finished: &finished, ..Default::default() };
        bm.schedule(&cfg, &inp).unwrap();
        bm.check_invariants().unwrap();
        let queued = bm.running_queue().len() + bm.waiting_queue().len();
        prop_assert_eq!(queued, live);
        if live == 0 {
            prop_assert_eq!(bm.num_free_blocks(), num_blocks);
            prop_assert_eq!(bm.num_requests(), 0);
        }
    }
}
