"""Peer driver: vLLM's own ``KVCacheManager`` replaying the blocks trace.

Run with the Python of an environment that has vLLM installed (vLLM is heavy:
torch and CUDA wheels; it imports and runs this CPU-only code path without
a GPU). It loads the trace module by path, so slabcache need not be installed
there:

    $SLABCACHE_VLLM_PYTHON python/slabcache/benchmarks/peer_vllm_blocks.py \
        --conversations 512 --seed 0

and prints one JSON object: the replay's counters (hit tokens, schedule
digest, ...) and the CPU time spent in the manager per scheduler step.

Timing (``time.thread_time_ns``, CPU time of this thread):

* ``manager_ns``: calls on ``KVCacheManager`` only (get_computed_blocks,
  allocate_slots, free): the strictest figure for vLLM;
* ``hashing_ns``: building ``Request`` objects and appending sampled tokens,
  where vLLM computes the block hashes (work slabcache's ``step`` includes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def _load_trace_module():
    # Loaded by path: this script runs in vLLM's environment, where slabcache is not installed.
    path = Path(__file__).resolve().parent / "blocks_trace.py"
    spec = importlib.util.spec_from_file_location("blocks_trace", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["blocks_trace"] = mod
    spec.loader.exec_module(mod)
    return mod


class VllmBackend:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True) -> None:
        import torch
        from vllm.sampling_params import SamplingParams
        from vllm.utils.hashing import get_hash_fn_by_name
        from vllm.v1.core.kv_cache_manager import KVCacheManager
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.kv_cache_interface import (
            FullAttentionSpec,
            KVCacheConfig,
            KVCacheGroupSpec,
        )
        from vllm.v1.request import Request, RequestStatus

        hash_fn = get_hash_fn_by_name("sha256")  # vLLM's default prefix_caching_hash_algo
        init_none_hash(hash_fn)
        self._hasher = get_request_block_hasher(block_size, hash_fn)
        spec = FullAttentionSpec(
            block_size=block_size, num_kv_heads=1, head_size=64, dtype=torch.float16
        )
        cfg = KVCacheConfig(
            # +1: vLLM reserves block 0 as its null block; same usable capacity.
            num_blocks=num_blocks + 1,
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec(["layer.0"], spec)],
        )
        self.kvm = KVCacheManager(
            kv_cache_config=cfg,
            max_model_len=1 << 20,
            scheduler_block_size=block_size,
            hash_block_size=block_size,
            enable_caching=enable_caching,
        )
        self._Request = Request
        self._RUNNING = RequestStatus.RUNNING
        self._sp = SamplingParams(max_tokens=1 << 16)
        self.reqs: dict[int, object] = {}
        self.manager_ns = 0
        self.hashing_ns = 0
        self.steps = 0

    def free(self, req_id: int) -> None:
        r = self.reqs.pop(req_id)
        t0 = time.thread_time_ns()
        self.kvm.free(r)
        self.manager_ns += time.thread_time_ns() - t0

    def step(self, now, finished, pinned, decodes, admits):
        kvm = self.kvm
        tt = time.thread_time_ns
        m = 0
        h = 0
        self.steps += 1
        for rid in finished:
            r = self.reqs.pop(rid)
            t0 = tt()
            kvm.free(r)
            m += tt() - t0
        for rid, _prog, _ttl in pinned:  # vLLM has no TTL pins: the turn is freed
            r = self.reqs.pop(rid)
            t0 = tt()
            kvm.free(r)
            m += tt() - t0
        ok = []
        for rid, tok in decodes:
            r = self.reqs[rid]
            t0 = tt()
            r.append_output_token_ids(tok)
            t1 = tt()
            new = kvm.allocate_slots(r, 1)
            t2 = tt()
            h += t1 - t0
            m += t2 - t1
            good = new is not None
            if good:
                r.num_computed_tokens += 1
            ok.append(good)
        hits = []
        for rid, _prog, prompt in admits:
            plist = prompt.tolist()
            t0 = tt()
            r = self._Request(
                str(rid), plist, self._sp, None, arrival_time=now, block_hasher=self._hasher
            )
            t1 = tt()
            blocks, n, _ = kvm.get_computed_blocks(r)
            new = kvm.allocate_slots(r, r.num_tokens - n, n, blocks)
            t2 = tt()
            h += t1 - t0
            m += t2 - t1
            if new is None:
                hits.append(-1)
                break
            r.num_computed_tokens = r.num_tokens
            r.status = self._RUNNING
            self.reqs[rid] = r
            hits.append(n)
        self.manager_ns += m
        self.hashing_ns += h
        return ok, hits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--num-blocks", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=100_000)
    args = ap.parse_args()
    bt = _load_trace_module()
    trace = bt.make_trace(
        args.conversations,
        args.seed,
        block_size=args.block_size,
        num_blocks=args.num_blocks or None,
    )
    t_import = time.perf_counter()
    backend = VllmBackend(trace.num_blocks, trace.block_size)
    t_import = time.perf_counter() - t_import
    res = bt.replay(trace, backend, max_steps=args.max_steps)
    import vllm

    out = {
        "peer": f"vllm {vllm.__version__} KVCacheManager",
        "steps": res.steps,
        "admissions": res.admissions,
        "preemptions": res.preemptions,
        "hit_tokens": res.hit_tokens,
        "prompt_tokens": res.prompt_tokens,
        "prefill_tokens": res.prefill_tokens,
        "decode_tokens": res.decode_tokens,
        "max_running": res.max_running,
        "finished_turns": res.finished_turns,
        "schedule_digest": res.schedule_digest,
        "manager_ns": backend.manager_ns,
        "hashing_ns": backend.hashing_ns,
        "setup_s": t_import,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
