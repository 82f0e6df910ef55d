"""vLLM's own v1 ``Scheduler`` with its stock KVCacheManager vs slabcache's adapter.

Runs in an environment with vLLM installed (``SLABCACHE_VLLM_PYTHON``); no
model, no GPU: a fake model runner samples one token per request that
finished its prompt. Three trace shapes (ShareGPT-like, RAG with shared
documents, parallel sampling n=4). Per side it reports CPU time
(``time.thread_time_ns``) of ``Scheduler.schedule()`` + ``update_from_output``
per step, and a digest of every step's schedule and block tables; equal
digests mean the adapter made vLLM schedule exactly as stock.

    python -m slabcache.benchmarks.blocks_vllm_scheduler --json out.json
    python -m slabcache.benchmarks.blocks_vllm_scheduler --record tests/data/x.json.gz
    python -m slabcache.benchmarks.blocks_vllm_scheduler --record-schedule tests/data/y.json.gz
    python -m slabcache.benchmarks.blocks_vllm_scheduler --record-hybrid tests/data/z.json.gz

``--record`` writes the stock KVCacheManager's calls and results on a small
trace (for ``tests/test_blocks_vllm_trace.py``, which replays them on
slabcache's BlockManager without vLLM).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np


def _model_dir() -> str:
    d = os.path.join(tempfile.gettempdir(), "slabcache-vllm-bench-model")
    os.makedirs(d, exist_ok=True)
    cfg = {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "vocab_size": 50272,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "ffn_dim": 3072,
        "num_attention_heads": 12,
        "max_position_embeddings": 8192,
        "word_embed_proj_dim": 768,
        "do_layer_norm_before": True,
        "torch_dtype": "float16",
        "bos_token_id": 2,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def make_scheduler(
    *,
    adapter: bool,
    num_blocks: int,
    block_size: int = 16,
    max_num_seqs: int = 128,
    max_num_batched_tokens: int = 2048,
    max_model_len: int = 8192,
    sliding_windows: list[int | None] | None = None,
    reserve_full_isl: bool = True,
) -> Any:
    """vLLM's Scheduler (stock manager, or the adapter); ``sliding_windows``
    (one entry per KV-cache group, None for full attention) builds a hybrid
    KV-cache config instead of one full-attention group."""
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model_config = ModelConfig(
        model=_model_dir(),
        dtype="float16",
        seed=0,
        skip_tokenizer_init=True,
        max_model_len=max_model_len,
    )
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
        watermark=0.0,
        scheduler_reserve_full_isl=reserve_full_isl,
    )
    cache_config = CacheConfig(
        block_size=block_size, gpu_memory_utilization=0.9, enable_prefix_caching=True
    )
    vllm_config = VllmConfig(
        scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config
    )
    spec = FullAttentionSpec(
        block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32
    )
    groups = [KVCacheGroupSpec(["layer"], spec)]
    if sliding_windows is not None:
        from vllm.v1.kv_cache_interface import SlidingWindowSpec

        groups = [
            KVCacheGroupSpec(
                [f"layer{i}"],
                spec
                if w is None
                else SlidingWindowSpec(
                    block_size=block_size,
                    num_kv_heads=1,
                    head_size=1,
                    dtype=torch.float32,
                    sliding_window=w,
                ),
            )
            for i, w in enumerate(sliding_windows)
        ]
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=groups,
    )
    cache_config.num_gpu_blocks = num_blocks
    if adapter:
        from slabcache.integrations.vllm import SlabcacheScheduler as cls
    else:
        cls = Scheduler
    return cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        block_size=block_size,
        log_stats=True,
        structured_output_manager=StructuredOutputManager(vllm_config),
    )


def make_trace(shape: str, seed: int = 0, n: int = 256) -> list[dict[str, Any]]:
    """Requests ``{id, arrival_step, prompt, max_tokens}``."""
    rng = np.random.default_rng(seed)
    reqs: list[dict[str, Any]] = []
    if shape == "sharegpt":
        systems = [rng.integers(3, 50_000, int(rng.integers(100, 400))).tolist() for _ in range(8)]
        step = 0
        for i in range(n):
            step += int(rng.poisson(0.5))
            plen = int(np.clip(rng.lognormal(np.log(500), 0.7), 16, 3000))
            out = int(np.clip(rng.lognormal(np.log(200), 0.6), 4, 1000))
            sys_p = systems[int(rng.integers(0, len(systems)))]
            prompt = sys_p + rng.integers(3, 50_000, plen).tolist()
            reqs.append({"id": f"s{i}", "arrival": step, "prompt": prompt, "max_tokens": out})
    elif shape == "rag":
        docs = [rng.integers(3, 50_000, 2048).tolist() for _ in range(20)]
        pop = 1.0 / np.arange(1, 21) ** 1.1
        pop /= pop.sum()
        step = 0
        for i in range(n):
            step += int(rng.poisson(0.7))
            d = int(rng.choice(20, p=pop))
            q = rng.integers(3, 50_000, int(rng.integers(20, 120))).tolist()
            out = int(rng.integers(20, 200))
            reqs.append({"id": f"r{i}", "arrival": step, "prompt": docs[d] + q, "max_tokens": out})
    elif shape == "parallel":
        step = 0
        for i in range(n // 4):
            step += int(rng.poisson(1.5))
            prompt = rng.integers(3, 50_000, int(rng.integers(200, 1200))).tolist()
            for k in range(4):
                out = int(rng.integers(50, 300))
                reqs.append(
                    {"id": f"p{i}_{k}", "arrival": step, "prompt": prompt, "max_tokens": out}
                )
    else:
        raise ValueError(shape)
    return reqs


def _vllm_step_record(out: Any) -> list[Any]:
    """A vLLM SchedulerOutput as ``[[rid, tokens, kind, computed, blocks], ...], preempted``
    (kind 0 running, 1 new, 2 resumed; blocks: a running request's new ones or None,
    an admission's whole table)."""
    new = {nr.req_id: nr for nr in out.scheduled_new_reqs}
    c = out.scheduled_cached_reqs
    cached = {rid: i for i, rid in enumerate(c.req_ids)}
    rows = []
    for rid, n in out.num_scheduled_tokens.items():
        if rid in new:
            nr = new[rid]
            rows.append([rid, n, 1, nr.num_computed_tokens, list(nr.block_ids[0])])
        else:
            i = cached[rid]
            nb = c.new_block_ids[i]
            kind = 2 if rid in c.resumed_req_ids else 0
            rows.append(
                [rid, n, kind, c.num_computed_tokens[i], None if nb is None else list(nb[0])]
            )
    return [rows, sorted(out.preempted_req_ids or ())]


def run_loop(
    trace: list[dict[str, Any]],
    *,
    num_blocks: int,
    block_size: int = 16,
    max_num_seqs: int = 128,
    max_num_batched_tokens: int = 2048,
    max_model_len: int = 8192,
    steps_out: list[Any] | None = None,
) -> dict[str, Any]:
    """The same trace and driver as :func:`run`, on slabcache's one-call
    ``BlockManager.schedule`` (:class:`ScheduleLoop`) instead of vLLM's Scheduler."""
    from slabcache import BlockManager, ScheduleConfig
    from slabcache.integrations.schedule_loop import ScheduleLoop, schedule_digest_update

    loop = ScheduleLoop(
        BlockManager(num_blocks - 1, block_size),
        ScheduleConfig(
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
        ),
    )
    pending = sorted(trace, key=lambda r: r["arrival"])
    digest = hashlib.blake2b(digest_size=16)
    tt = time.thread_time_ns
    step = steps = pi = 0
    sched_ns = update_ns = add_ns = 0
    preemptions = hit_tokens = 0
    while pi < len(pending) or loop.has_unfinished_requests():
        ta = tt()
        while pi < len(pending) and pending[pi]["arrival"] <= step:
            r = pending[pi]
            loop.add_request(r["id"], r["prompt"], r["max_tokens"])
            pi += 1
        add_ns += tt() - ta
        step += 1
        if not loop.has_unfinished_requests():
            continue
        t0 = tt()
        s = loop.schedule()
        t1 = tt()
        schedule_digest_update(digest, s)
        preemptions += len(s.preempted)
        hit_tokens += sum(c for _, _, c in s.new_reqs)
        if steps_out is not None:
            raw = s.raw
            assert raw is not None
            rows = []
            for i in range(len(raw.req_ids)):
                rid = loop.request_name(int(raw.req_ids[i]))
                b = (raw.blocks_of(i) + 1).tolist()
                kind = int(raw.kinds[i])
                rows.append(
                    [
                        rid,
                        int(raw.num_scheduled[i]),
                        kind,
                        int(raw.num_computed[i]),
                        b if (b or kind) else None,
                    ]
                )
            steps_out.append([rows, sorted(s.preempted)])
        t2 = tt()
        loop.update()
        t3 = tt()
        sched_ns += t1 - t0
        update_ns += t3 - t2
        steps += 1
    return {
        "steps": steps,
        "add_us_per_step": add_ns / steps / 1e3,
        "schedule_us_per_step": sched_ns / steps / 1e3,
        "update_us_per_step": update_ns / steps / 1e3,
        "total_us_per_step": (sched_ns + update_ns) / steps / 1e3,
        "with_add_us_per_step": (add_ns + sched_ns + update_ns) / steps / 1e3,
        "preemptions": preemptions,
        "prefix_hit_tokens": hit_tokens,
        "digest": digest.hexdigest(),
    }


def run(
    sched: Any,
    trace: list[dict[str, Any]],
    seed: int = 1,
    steps_out: list[Any] | None = None,
) -> dict[str, Any]:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request

    try:
        from vllm.utils.hashing import sha256
    except ImportError:  # older layout
        from vllm.utils import sha256  # type: ignore[no-redef]
    from slabcache.integrations.schedule_loop import ScheduleLoop

    init_none_hash(sha256)
    hasher = get_request_block_hasher(sched.block_size, sha256)
    pending = sorted(trace, key=lambda r: r["arrival"])
    index = {r["id"]: i for i, r in enumerate(pending)}
    sample = ScheduleLoop.sample_token
    digest = hashlib.blake2b(digest_size=16)
    step = 0
    sched_ns = 0
    update_ns = 0
    steps = 0
    preemptions = 0
    hit_tokens = 0
    pi = 0
    tt = time.thread_time_ns
    add_ns = 0
    while pi < len(pending) or sched.has_unfinished_requests():
        ta = tt()
        while pi < len(pending) and pending[pi]["arrival"] <= step:
            r = pending[pi]
            sp = SamplingParams(max_tokens=r["max_tokens"], ignore_eos=True)
            sched.add_request(
                Request(
                    request_id=r["id"],
                    prompt_token_ids=r["prompt"],
                    sampling_params=sp,
                    pooling_params=None,
                    block_hasher=hasher,
                )
            )
            pi += 1
        add_ns += tt() - ta
        step += 1
        if not sched.has_unfinished_requests():
            continue
        t0 = tt()
        out = sched.schedule()
        t1 = tt()
        ids = list(out.num_scheduled_tokens)
        for rid in ids:
            digest.update(f"{rid}:{out.num_scheduled_tokens[rid]};".encode())
        for nr in out.scheduled_new_reqs:
            digest.update(f"N{nr.req_id}:{nr.block_ids}:{nr.num_computed_tokens};".encode())
            hit_tokens += nr.num_computed_tokens
        c = out.scheduled_cached_reqs
        for i, rid in enumerate(c.req_ids):
            nb = c.new_block_ids[i] if c.new_block_ids else None
            digest.update(f"C{rid}:{nb};".encode())
        preemptions += len(getattr(out, "preempted_req_ids", None) or ())
        sampled = []
        for rid in ids:
            req = sched.requests[rid]
            done_prompt = req.num_computed_tokens >= req.num_tokens
            k = req.num_output_tokens
            sampled.append([sample(index[rid], k)] if done_prompt else [])
        if steps_out is not None:
            steps_out.append(_vllm_step_record(out))
        mro = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={r: i for i, r in enumerate(ids)},
            sampled_token_ids=sampled,
            logprobs=None,
            prompt_logprobs_dict={},
            pooler_output=[],
        )
        t2 = tt()
        sched.update_from_output(out, mro)
        t3 = tt()
        sched_ns += t1 - t0
        update_ns += t3 - t2
        steps += 1
    return {
        "steps": steps,
        "add_us_per_step": add_ns / steps / 1e3,
        "schedule_us_per_step": sched_ns / steps / 1e3,
        "update_us_per_step": update_ns / steps / 1e3,
        "total_us_per_step": (sched_ns + update_ns) / steps / 1e3,
        "with_add_us_per_step": (add_ns + sched_ns + update_ns) / steps / 1e3,
        "preemptions": preemptions,
        "prefix_hit_tokens": hit_tokens,
        "digest": digest.hexdigest(),
    }


SHAPES = {"sharegpt": 2048, "rag": 1536, "parallel": 1024}


def bench(n: int, repeats: int) -> dict[str, Any]:
    """Per shape: stock vLLM, vLLM with the adapter, and the one-call
    ``BlockManager.schedule`` loop; best of ``repeats`` by CPU per step."""
    out: dict[str, Any] = {}
    for shape, nblocks in SHAPES.items():
        trace = make_trace(shape, n=n)
        res: dict[str, Any] = {}
        for side in ("vllm", "slabcache", "slabcache_step"):
            best = None
            for _ in range(repeats):
                if side == "slabcache_step":
                    r = run_loop(trace, num_blocks=nblocks)
                else:
                    r = run(make_scheduler(adapter=side == "slabcache", num_blocks=nblocks), trace)
                if best is None or r["total_us_per_step"] < best["total_us_per_step"]:
                    best = r
            res[side] = best
        v, a, s = res["vllm"], res["slabcache"], res["slabcache_step"]
        res["same_schedule"] = v["digest"] == a["digest"]
        res["same_schedule_step"] = v["digest"] == s["digest"]
        res["speedup_total"] = v["total_us_per_step"] / a["total_us_per_step"]
        res["speedup_schedule"] = v["schedule_us_per_step"] / a["schedule_us_per_step"]
        res["speedup_step"] = v["total_us_per_step"] / s["total_us_per_step"]
        res["speedup_step_with_add"] = v["with_add_us_per_step"] / s["with_add_us_per_step"]
        out[shape] = res
        print(
            f"{shape:9s} steps={v['steps']:5d} vllm={v['total_us_per_step']:7.1f}us "
            f"adapter={a['total_us_per_step']:7.1f}us x{res['speedup_total']:.2f} "
            f"step()={s['total_us_per_step']:6.1f}us x{res['speedup_step']:.2f} "
            f"(with add_request: {v['with_add_us_per_step']:.1f} vs "
            f"{s['with_add_us_per_step']:.1f}us x{res['speedup_step_with_add']:.2f}) "
            f"same_schedule={res['same_schedule']}/{res['same_schedule_step']} "
            f"preempt={v['preemptions']}/{a['preemptions']}/{s['preemptions']}",
            flush=True,
        )
    return out


def record(path: str, n: int = 48) -> None:
    """Records the stock manager's calls + results on small traces (eviction and
    preemption included) for the CI replay test."""
    import vllm.v1.core.kv_cache_manager as kvm

    log: list[dict[str, Any]] = []
    known: dict[str, int] = {}
    cls = kvm.KVCacheManager
    orig_gcb, orig_alloc, orig_free = cls.get_computed_blocks, cls.allocate_slots, cls.free

    def toks(req: Any) -> list[int]:
        all_t = list(req.all_token_ids)
        k = known.get(req.request_id, 0)
        known[req.request_id] = len(all_t)
        return all_t[k:]

    def gcb(self: Any, request: Any, max_cache_hit_length: Any = None) -> Any:
        blocks, num, boundary = orig_gcb(self, request, max_cache_hit_length)
        known.pop(request.request_id, None)
        log.append(
            {
                "op": "lookup",
                "rid": request.request_id,
                "tokens": toks(request),
                "limit": max_cache_hit_length,
                "out": blocks.get_block_ids()[0],
                "n": num,
            }
        )
        return blocks, num, boundary

    def alloc(self: Any, request: Any, num_new_tokens: int, *a: Any, **kw: Any) -> Any:
        import inspect

        bound = inspect.signature(orig_alloc).bind(self, request, num_new_tokens, *a, **kw)
        bound.apply_defaults()
        args = bound.arguments
        computed_before = request.num_computed_tokens
        res = orig_alloc(self, request, num_new_tokens, *a, **kw)
        ncb = args["new_computed_blocks"]
        log.append(
            {
                "op": "alloc",
                "rid": request.request_id,
                "tokens": toks(request),
                "computed": computed_before,
                "new": num_new_tokens,
                "hit": [] if ncb is None else ncb.get_block_ids()[0],
                "lookahead": args["num_lookahead_tokens"],
                "full": args["full_sequence_must_fit"],
                "num_tokens": request.num_tokens,
                "reserved": args["reserved_blocks"],
                "out": None if res is None else res.get_block_ids()[0],
            }
        )
        return res

    def free(self: Any, request: Any) -> None:
        orig_free(self, request)
        known.pop(request.request_id, None)
        log.append({"op": "free", "rid": request.request_id})

    cls.get_computed_blocks, cls.allocate_slots, cls.free = gcb, alloc, free
    traces = {}
    try:
        for shape, nblocks in (("sharegpt", 160), ("rag", 200), ("parallel", 120)):
            log.clear()
            known.clear()
            trace = make_trace(shape, seed=7, n=n)
            for r in trace:
                r["prompt"] = r["prompt"][:600]
                r["max_tokens"] = min(r["max_tokens"], 60)
            sched = make_scheduler(
                adapter=False, num_blocks=nblocks, max_num_seqs=16, max_num_batched_tokens=512
            )
            res = run(sched, trace)
            traces[shape] = {
                "num_blocks": nblocks,
                "block_size": 16,
                "summary": res,
                "calls": list(log),
            }
    finally:
        cls.get_computed_blocks, cls.allocate_slots, cls.free = orig_gcb, orig_alloc, orig_free
    import vllm

    with gzip.open(path, "wt") as f:
        json.dump({"vllm_version": vllm.__version__, "traces": traces}, f)
    for shape, t in traces.items():
        print(shape, len(t["calls"]), "calls", t["summary"])


SCHEDULE_RECORD_SHAPES = {"sharegpt": 120, "rag": 160, "parallel": 100}


def small_trace(shape: str, n: int = 64) -> list[dict[str, Any]]:
    """The shape at CI size (prompts <= 600 tokens, outputs <= 60)."""
    trace = make_trace(shape, seed=7, n=n)
    for r in trace:
        r["prompt"] = r["prompt"][:600]
        r["max_tokens"] = min(r["max_tokens"], 60)
    return trace


def record_schedule(path: str) -> None:
    """Records vLLM's own Scheduler (stock KVCacheManager), every step's
    schedule, on CI-size traces with preemptions, for
    ``tests/test_blocks_schedule_vllm.py`` (which replays them on
    ``BlockManager.schedule`` without vLLM)."""
    import vllm

    traces = {}
    for shape, nblocks in SCHEDULE_RECORD_SHAPES.items():
        trace = small_trace(shape)
        steps: list[Any] = []
        sched = make_scheduler(
            adapter=False, num_blocks=nblocks, max_num_seqs=16, max_num_batched_tokens=512
        )
        res = run(sched, trace, steps_out=steps)
        traces[shape] = {
            "num_blocks": nblocks,
            "block_size": 16,
            "max_num_seqs": 16,
            "max_num_batched_tokens": 512,
            "max_model_len": 8192,
            "requests": trace,
            "summary": res,
            "steps": steps,
        }
        print(shape, len(steps), "steps", res["preemptions"], "preemptions", flush=True)
    with gzip.open(path, "wt") as f:
        json.dump({"vllm_version": vllm.__version__, "traces": traces}, f, separators=(",", ":"))


# shape -> (pool blocks, sliding windows per group, vLLM's scheduler_reserve_full_isl);
# "parallel" admits without the full-sequence check, so decodes preempt.
HYBRID_RECORD_SHAPES = {
    "sharegpt": (100, [None, 128], True),
    "rag": (150, [None, 64, 256], True),
    "parallel": (90, [None, 48], False),
}


def record_hybrid(path: str, n: int = 48) -> None:
    """Records the stock manager's calls + results with hybrid KV-cache groups
    (full attention + sliding windows) under vLLM's own Scheduler, for
    ``tests/test_blocks_hybrid.py``'s replay (no vLLM needed there)."""
    import inspect

    import vllm.v1.core.kv_cache_manager as kvm

    log: list[dict[str, Any]] = []
    known: dict[str, int] = {}
    cls = kvm.KVCacheManager
    orig = {
        k: getattr(cls, k)
        for k in ("get_computed_blocks", "allocate_slots", "free", "cache_blocks",
                  "remove_skipped_blocks")
    }  # fmt: skip

    def toks(req: Any) -> list[int]:
        all_t = list(req.all_token_ids)
        k = known.get(req.request_id, 0)
        known[req.request_id] = len(all_t)
        return all_t[k:]

    def ids(blocks: Any) -> list[list[int]]:
        return [list(g) for g in blocks.get_block_ids()]

    def gcb(self: Any, request: Any, max_cache_hit_length: Any = None) -> Any:
        blocks, num, boundary = orig["get_computed_blocks"](self, request, max_cache_hit_length)
        known.pop(request.request_id, None)
        limit = request.num_tokens - 1 if max_cache_hit_length is None else max_cache_hit_length
        log.append(
            {"op": "lookup", "rid": request.request_id, "tokens": toks(request),
             "limit": limit, "out": ids(blocks), "n": num}
        )  # fmt: skip
        return blocks, num, boundary

    def alloc(self: Any, request: Any, num_new_tokens: int, *a: Any, **kw: Any) -> Any:
        bound = inspect.signature(orig["allocate_slots"]).bind(
            self, request, num_new_tokens, *a, **kw
        )
        bound.apply_defaults()
        args = bound.arguments
        computed_before = request.num_computed_tokens
        in_flight = request.num_in_flight_tokens
        res = orig["allocate_slots"](self, request, num_new_tokens, *a, **kw)
        ncb = args["new_computed_blocks"]
        log.append(
            {
                "op": "alloc",
                "rid": request.request_id,
                "tokens": toks(request),
                "computed": computed_before,
                "in_flight": in_flight,
                "new": num_new_tokens,
                "new_computed": args["num_new_computed_tokens"],
                "hit": None if ncb is None else ids(ncb),
                "lookahead": args["num_lookahead_tokens"],
                "external": args["num_external_computed_tokens"],
                "full": args["full_sequence_must_fit"],
                "reserved": args["reserved_blocks"],
                "out": None if res is None else ids(res),
            }
        )
        return res

    def free(self: Any, request: Any) -> None:
        orig["free"](self, request)
        known.pop(request.request_id, None)
        log.append({"op": "free", "rid": request.request_id})

    def cache(self: Any, request: Any, num_computed_tokens: int) -> None:
        orig["cache_blocks"](self, request, num_computed_tokens)
        log.append(
            {"op": "cache", "rid": request.request_id, "tokens": toks(request),
             "n": num_computed_tokens}
        )  # fmt: skip

    def skipped(self: Any, request_id: str, processed: int, num_prompt: Any = None) -> None:
        orig["remove_skipped_blocks"](self, request_id, processed, num_prompt)
        log.append({"op": "skip", "rid": request_id, "n": processed})

    patched = {
        "get_computed_blocks": gcb, "allocate_slots": alloc, "free": free,
        "cache_blocks": cache, "remove_skipped_blocks": skipped,
    }  # fmt: skip
    for k, f in patched.items():
        setattr(cls, k, f)
    traces = {}
    try:
        for shape, (nblocks, windows, full_isl) in HYBRID_RECORD_SHAPES.items():
            log.clear()
            known.clear()
            trace = small_trace(shape, n)
            sched = make_scheduler(
                adapter=False,
                num_blocks=nblocks,
                max_num_seqs=16,
                max_num_batched_tokens=512,
                sliding_windows=windows,
                reserve_full_isl=full_isl,
            )
            caps = [
                getattr(m, "max_admission_blocks_per_request", None)
                for m in sched.kv_cache_manager.coordinator.single_type_managers
            ]
            res = run(sched, trace)
            traces[shape] = {
                "num_blocks": nblocks,
                "block_size": 16,
                "sliding_windows": windows,
                "admission_caps": caps,
                "max_model_len": 8192,
                "summary": res,
                "calls": list(log),
            }
            print(shape, len(log), "calls", res, flush=True)
    finally:
        for k, f in orig.items():
            setattr(cls, k, f)
    import vllm

    with gzip.open(path, "wt") as f:
        json.dump({"vllm_version": vllm.__version__, "traces": traces}, f, separators=(",", ":"))


def _time_manager_calls(manager: Any) -> list[int]:
    """Wraps the manager's per-request methods (on the instance) with a CPU
    timer; the returned one-element list accumulates their nanoseconds."""
    acc = [0]
    tt = time.thread_time_ns
    for name in ("get_computed_blocks", "allocate_slots", "free", "cache_blocks"):
        f = getattr(manager, name)

        def timed(*a: Any, _f: Any = f, **k: Any) -> Any:
            t0 = tt()
            try:
                return _f(*a, **k)
            finally:
                acc[0] += tt() - t0

        setattr(manager, name, timed)
    return acc


def compare_hybrid(n: int = 48, repeats: int = 3) -> dict[str, Any]:
    """vLLM's Scheduler with hybrid groups, stock manager vs the adapter, on
    the ``--record-hybrid`` shapes: schedule digests (equal means identical
    schedules and block tables) and the best-of-``repeats`` step time."""
    out: dict[str, Any] = {}
    for shape, (nblocks, windows, full_isl) in HYBRID_RECORD_SHAPES.items():
        row: dict[str, Any] = {"sliding_windows": windows, "num_blocks": nblocks}
        for name, adapter in (("vllm", False), ("slabcache", True)):
            best = None
            for _ in range(repeats):
                sched = make_scheduler(
                    adapter=adapter,
                    num_blocks=nblocks,
                    max_num_seqs=16,
                    max_num_batched_tokens=512,
                    sliding_windows=windows,
                    reserve_full_isl=full_isl,
                )
                kv_ns = _time_manager_calls(sched.kv_cache_manager)
                res = run(sched, small_trace(shape, n))
                res["kv_us_per_step"] = kv_ns[0] / res["steps"] / 1e3
                if best is None or res["total_us_per_step"] < best["total_us_per_step"]:
                    best = res
            assert best is not None
            row[name] = best
        row["identical"] = row["vllm"]["digest"] == row["slabcache"]["digest"]
        row["step_ratio"] = row["vllm"]["total_us_per_step"] / row["slabcache"]["total_us_per_step"]
        row["kv_ratio"] = row["vllm"]["kv_us_per_step"] / row["slabcache"]["kv_us_per_step"]
        out[shape] = row
        print(
            shape,
            "identical" if row["identical"] else "DIFFERENT",
            f"vllm {row['vllm']['total_us_per_step']:.0f} us/step,",
            f"adapter {row['slabcache']['total_us_per_step']:.0f} us/step,",
            f"ratio {row['step_ratio']:.2f}x,",
            f"manager {row['vllm']['kv_us_per_step']:.1f} vs",
            f"{row['slabcache']['kv_us_per_step']:.1f} us/step ({row['kv_ratio']:.2f}x),",
            f"preemptions {row['vllm']['preemptions']}/{row['slabcache']['preemptions']}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="requests per trace")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--record", help="record the stock manager's calls to this .json.gz")
    ap.add_argument("--record-schedule", help="record vLLM's per-step schedules to this .json.gz")
    ap.add_argument(
        "--record-hybrid", help="record the stock manager's calls, hybrid groups, to this .json.gz"
    )
    ap.add_argument(
        "--hybrid",
        action="store_true",
        help="hybrid groups: stock vs adapter under vLLM's Scheduler (digests, step time)",
    )
    a = ap.parse_args(argv)
    if a.hybrid:
        res = compare_hybrid(repeats=a.repeats)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return 0
    if a.record_hybrid:
        record_hybrid(a.record_hybrid)
        return 0
    if a.record:
        record(a.record)
        return 0
    if a.record_schedule:
        record_schedule(a.record_schedule)
        return 0
    res = bench(a.n, a.repeats)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
