"""``slabcache bench blocks``: the BlockManager against vLLM's KVCacheManager.

Both managers replay the same synthetic multi-turn chat/agent trace
(:mod:`slabcache.benchmarks.blocks_trace`: shared system prompts, multi-turn
growth, tool-call pauses, bursts) under the same FCFS scheduler. Reported:

* CPU time per scheduler step in the manager (``time.thread_time_ns``):
  slabcache's one ``step()`` call (plus pins) vs vLLM's per-request
  ``get_computed_blocks`` / ``allocate_slots`` / ``free`` calls;
* prefix-hit tokens on both sides (behavioural parity: they should be equal,
  and the schedule digests too);
* TTL pins' effect on the agent trace: prompt tokens re-prefilled without
  pins vs with pins (slabcache only; vLLM has no pins).

vLLM is not a dependency: it runs in its own environment (torch, CUDA wheels)
through ``slabcache/benchmarks/peer_vllm_blocks.py``. Set ``SLABCACHE_VLLM_PYTHON`` to that
environment's python; when it is unset or missing, the peer columns are empty
and the note says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from .blocks_trace import Trace, make_trace, replay
from .report import BenchContext, Measurement


def vllm_python() -> tuple[str | None, str]:
    """The python of vLLM's environment from ``SLABCACHE_VLLM_PYTHON``, or
    (None, why not) when it is unset or does not exist."""
    py = os.environ.get("SLABCACHE_VLLM_PYTHON")
    if not py:
        return None, "set SLABCACHE_VLLM_PYTHON to the python of an environment with vLLM"
    if not Path(py).exists():
        return None, f"vLLM env not found ({py}); set SLABCACHE_VLLM_PYTHON"
    return py, ""


class SlabcacheBackend:
    """Drives :class:`slabcache.BlockManager` with one ``step()`` per scheduler step."""

    def __init__(self, trace: Trace, *, pins: bool = False) -> None:
        from slabcache import BlockManager

        self.bm = BlockManager(trace.num_blocks, trace.block_size)
        self.pins = pins
        self.manager_ns = 0
        self.batch_ns = 0
        self.steps = 0

    def free(self, req_id: int) -> None:
        t0 = time.thread_time_ns()
        self.bm.free(req_id)
        self.manager_ns += time.thread_time_ns() - t0

    def step(self, now, finished, pinned, decodes, admits):
        from slabcache import StepBatch

        tt = time.thread_time_ns
        t0 = tt()
        nd, na = len(decodes), len(admits)
        n = nd + na
        req_ids = np.empty(n, dtype=np.int64)
        budgets = np.empty(n, dtype=np.int64)
        programs = np.full(n, -1, dtype=np.int64)
        offsets = np.empty(n + 1, dtype=np.int64)
        if nd:
            d = np.array(decodes, dtype=np.int64)
            req_ids[:nd] = d[:, 0]
            budgets[:nd] = 1
            offsets[: nd + 1] = np.arange(nd + 1)
            dec_toks = d[:, 1].astype(np.int32)
        else:
            offsets[0] = 0
            dec_toks = np.zeros(0, dtype=np.int32)
        prompts = [dec_toks]
        for j, (rid, prog, prompt) in enumerate(admits):
            req_ids[nd + j] = rid
            budgets[nd + j] = len(prompt)
            programs[nd + j] = prog
            offsets[nd + j + 1] = offsets[nd + j] + len(prompt)
            prompts.append(prompt)
        toks = np.concatenate(prompts)
        to_free = list(finished)
        if not self.pins:
            to_free += [rid for rid, _, _ in pinned]
        batch = StepBatch(
            req_ids,
            budgets,
            toks,
            offsets,
            programs=programs,
            finished=np.array(to_free, dtype=np.int64),
        )
        t1 = tt()
        if self.pins:
            for rid, prog, ttl in pinned:
                self.bm.pin(rid, ttl, program=prog, now=now)
        res = self.bm.step(batch, now=now, fcfs=True)
        t2 = tt()
        self.batch_ns += t1 - t0
        self.manager_ns += t2 - t1
        self.steps += 1
        sched = res.num_scheduled
        ok = (sched[:nd] >= 0).tolist()
        cached = res.num_cached_tokens[nd:]
        hits = []
        for j in range(na):
            if sched[nd + j] < 0:
                hits.append(-1)
                break
            hits.append(int(cached[j]))
        return ok, hits


def run_slabcache(trace: Trace, *, pins: bool = False, pin_ttl_steps: int = 60) -> dict:
    backend = SlabcacheBackend(trace, pins=pins)
    res = replay(trace, backend, pin_ttl_steps=pin_ttl_steps if pins else None)
    backend.bm.check_invariants()
    return {
        "steps": res.steps,
        "admissions": res.admissions,
        "preemptions": res.preemptions,
        "hit_tokens": res.hit_tokens,
        "prompt_tokens": res.prompt_tokens,
        "prefill_tokens": res.prefill_tokens,
        "decode_tokens": res.decode_tokens,
        "max_running": res.max_running,
        "schedule_digest": res.schedule_digest,
        "manager_ns": backend.manager_ns,
        "batch_ns": backend.batch_ns,
        "stats": backend.bm.stats(),
    }


def run_vllm(conversations: int, seed: int, timeout_s: float = 1800) -> tuple[dict | None, str]:
    """Runs the peer driver in vLLM's environment; (result or None, note)."""
    py, why = vllm_python()
    if py is None:
        return None, why
    script = Path(__file__).resolve().parent / "peer_vllm_blocks.py"
    cmd = [py, str(script), "--conversations", str(conversations), "--seed", str(seed)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, "vLLM peer timed out"
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"vLLM peer failed: {tail[0][:200]}"
    return json.loads(p.stdout.strip().splitlines()[-1]), ""


def compare(conversations: int, seed: int = 0) -> dict:
    """Everything the suite reports for one trace size (also used by bench/)."""
    trace = make_trace(conversations, seed)
    ours = run_slabcache(trace)
    pinned = run_slabcache(trace, pins=True)
    peer, note = run_vllm(conversations, seed)
    return {"ours": ours, "pinned": pinned, "peer": peer, "note": note, "trace": trace}


def run(ctx: BenchContext) -> list[Measurement]:
    sizes = [256] if ctx.quick else [256, 512, 1024]
    out: list[Measurement] = []
    with ctx.task("blocks: trace replays", total=len(sizes)) as advance:
        for conv in sizes:
            r = compare(conv)
            ours, pinned, peer, note = r["ours"], r["pinned"], r["peer"], r["note"]
            steps = ours["steps"]
            us_step = ours["manager_ns"] / steps / 1e3
            parity = ""
            if peer is not None:
                same = (
                    peer["hit_tokens"] == ours["hit_tokens"]
                    and peer["schedule_digest"] == ours["schedule_digest"]
                )
                parity = "identical schedule & hits" if same else "schedules DIFFER"
            out.append(
                Measurement(
                    f"CPU per scheduler step, {conv} conversations",
                    us_step,
                    "us/step",
                    peer=None if peer is None else peer["peer"],
                    peer_value=None if peer is None else peer["manager_ns"] / peer["steps"] / 1e3,
                    suite="blocks",
                    note=note or parity,
                    extra={"ours": _jsonable(ours), "peer": peer},
                )
            )
            out.append(
                Measurement(
                    f"prefix-hit tokens, {conv} conversations",
                    float(ours["hit_tokens"]),
                    "tokens",
                    peer=None if peer is None else peer["peer"],
                    peer_value=None if peer is None else float(peer["hit_tokens"]),
                    higher_is_better=True,
                    suite="blocks",
                    note=note or f"hit rate {ours['hit_tokens'] / ours['prompt_tokens']:.1%}",
                )
            )
            saved = ours["prefill_tokens"] - pinned["prefill_tokens"]
            out.append(
                Measurement(
                    f"prefill tokens with TTL pins, {conv} conversations",
                    float(pinned["prefill_tokens"]),
                    "tokens",
                    peer="slabcache without pins",
                    peer_value=float(ours["prefill_tokens"]),
                    suite="blocks",
                    note=f"re-prefill saved: {saved} tokens",
                )
            )
            advance()
    out.extend(run_scheduler_suite(ctx))
    return out


def run_vllm_scheduler(n: int, timeout_s: float = 1800) -> tuple[dict | None, str]:
    """vLLM's own Scheduler, stock vs slabcache's adapter, on the three trace
    shapes (:mod:`slabcache.benchmarks.blocks_vllm_scheduler`), in vLLM's env."""
    py, why = vllm_python()
    if py is None:
        return None, why
    import tempfile

    src = str(Path(__file__).resolve().parents[2])
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [py, "-m", "slabcache.benchmarks.blocks_vllm_scheduler", "--n", str(n)]
        cmd += ["--json", f.name]
        env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return None, "vLLM scheduler bench timed out"
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
            return None, f"vLLM scheduler bench failed: {tail[0][:200]}"
        return json.loads(Path(f.name).read_text()), ""


def run_scheduler_suite(ctx: BenchContext) -> list[Measurement]:
    n = 64 if ctx.quick else 256
    res, note = run_vllm_scheduler(n)
    if res is None:
        return [
            Measurement(
                "vLLM Scheduler step with the adapter",
                float("nan"),
                "us/step",
                suite="blocks",
                note=note,
            )
        ]
    out = []
    for shape, r in res.items():
        same = "identical schedule & block tables" if r["same_schedule"] else "schedules DIFFER"
        out.append(
            Measurement(
                f"vLLM Scheduler.schedule()+update_from_output CPU per step, {shape}, {n} requests",
                r["slabcache"]["total_us_per_step"],
                "us/step",
                peer="vLLM stock KVCacheManager",
                peer_value=r["vllm"]["total_us_per_step"],
                suite="blocks",
                note=f"{same}; schedule() alone x{r['speedup_schedule']:.2f}",
                extra=r,
            )
        )
        s = r.get("slabcache_step")
        if s is not None:
            same = (
                "identical schedule & block tables every step"
                if r["same_schedule_step"]
                else "schedules DIFFER"
            )
            out.append(
                Measurement(
                    f"one-call BlockManager.schedule() (ScheduleLoop) vs vLLM Scheduler "
                    f"schedule()+update_from_output CPU per step, {shape}, {n} requests",
                    s["total_us_per_step"],
                    "us/step",
                    peer="vLLM 0.33 Scheduler + stock KVCacheManager",
                    peer_value=r["vllm"]["total_us_per_step"],
                    suite="blocks",
                    note=f"{same}; preemptions {s['preemptions']} vs {r['vllm']['preemptions']}; "
                    f"with add_request (hashing) x{r['speedup_step_with_add']:.2f}",
                )
            )
    return out


def _jsonable(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, int | float | str | dict)}
