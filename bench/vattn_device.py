"""vAttention on the GPU (issue 19): correctness + every measurement, in one bounded run.

    python bench/vattn_device.py --out DIR [--sections latency,correct,trace,throughput]

Sections (each prints lines and adds to DIR/vattn_device.json):
  latency     cuMemMap / cuMemSetAccess / cuMemUnmap / cuMemCreate per 2 MiB page, GPU idle
              and GPU busy (median, p99); map_batch of adjacent pages
  correct     float32 toy Llama, batch of 4 decoded token by token with its KV in a
              VAttnKVCache (SDPA on the strided views) vs a plain contiguous cache; across
              page boundaries, map-ahead, a fork (shared pages) and a swap-out/in
  trace       ShareGPT-like lengths under continuous batching: mapped minus used bytes of
              vAttention pages vs paged 16-token blocks (Llama-3-8B KV shape)
  throughput  bf16 random-weight Llama-like model, batch 1..256: prefill and decode tok/s
              of (a) vAttention KV + SDPA, (b) the paged path (pool + block table gather +
              SDPA, as bench/kv_torch_model.py), same KV bytes; decode with pages premapped,
              mapped synchronously, and mapped ahead in the background
With VATTN_DEVICE_CPU_TEST=1 (or no CUDA) it runs small versions on CPU torch over
HostVMMDriver, to test this script.
"""

# ruff: noqa: B023, E501 -- the closures run at once inside their loop iteration; log lines
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kv_torch_model import TorchLlama  # noqa: E402

from slabcache.errors import OutOfMemoryError  # noqa: E402
from slabcache.kv import KVCachePool, KVLayout  # noqa: E402
from slabcache.kv.vattn import HostVMMDriver, MapAhead, VAttnKVCache  # noqa: E402

CPU_TEST = os.environ.get("VATTN_DEVICE_CPU_TEST") == "1" or not torch.cuda.is_available()
DEV = "cpu" if CPU_TEST else "cuda"
T0 = time.monotonic()
RESULTS: dict = {}


def log(*a):
    print(f"[{time.monotonic() - T0:6.1f}s]", *a, flush=True)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def make_driver(cpu_page=64 * 1024):
    if CPU_TEST:
        return HostVMMDriver(page_size=cpu_page)
    from slabcache.kv.vattn import CudaVMMDriver

    return CudaVMMDriver()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary_us(xs):
    return {
        "median_us": statistics.median(xs) * 1e6,
        "p99_us": pct(xs, 0.99) * 1e6,
        "max_us": max(xs) * 1e6,
        "n": len(xs),
    }


# ---- batched model over three KV stores -----------------------------------------------


class ContigKV:
    """Plain contiguous reference cache ``[L, B, T, H, D]``."""

    def __init__(self, L, B, T, Hk, hd, dtype):
        self.k = torch.zeros((L, B, T, Hk, hd), dtype=dtype, device=DEV)
        self.v = torch.zeros_like(self.k)

    def begin(self, start, n):
        self.start, self.total = start, start + n

    def step(self, i, k, v):
        self.k[i, :, self.start : self.total] = k
        self.v[i, :, self.start : self.total] = v
        return self.k[i, :, : self.total], self.v[i, :, : self.total]


class VAttnKV:
    """A batch in slots ``0..B-1`` of a VAttnKVCache: write into and read the views."""

    def __init__(self, cache, B):
        self.cache, self.B = cache, B
        self.views = [cache.layer_kv(i) for i in range(cache.num_layers)]

    def begin(self, start, n):
        self.start, self.total = start, start + n

    def step(self, i, k, v):
        K, V = self.views[i]
        K[: self.B, self.start : self.total] = k
        V[: self.B, self.start : self.total] = v
        return K[: self.B, : self.total], V[: self.B, : self.total]


class PagedKV:
    """The paged path: KVCachePool blocks, block table [B, nblk], scatter + gather per layer."""

    def __init__(self, pool, bt):
        self.pool, self.bt = pool, bt
        self.bs = pool.layout.block_size
        self.layers = [pool.layer(i) for i in range(pool.layout.num_layers)]

    def begin(self, start, n):
        self.start, self.total = start, start + n
        pos = torch.arange(start, start + n, device=DEV)
        self.w_blk, self.w_off = self.bt[:, pos // self.bs], (pos % self.bs)[None, :]
        allpos = torch.arange(self.total, device=DEV)
        self.r_blk, self.r_off = self.bt[:, allpos // self.bs], (allpos % self.bs)[None, :]

    def step(self, i, k, v):
        t = self.layers[i]
        t[self.w_blk, 0, self.w_off] = k
        t[self.w_blk, 1, self.w_off] = v
        kv = t[self.r_blk, :, self.r_off]  # one gather: [B, total, 2, H, D]
        return kv[:, :, 0], kv[:, :, 1]


@torch.inference_mode()
def forward(m: TorchLlama, tokens, start, kv, fresh=False):
    """Logits of each sequence's last token; ``fresh``: prefill attends to the new k/v."""
    B, n = tokens.shape
    assert n == 1 or start == 0, "multi-token steps only from position 0 (causal mask)"
    pos = torch.arange(start, start + n, device=DEV)
    kv.begin(start, n)
    x = m.embed[tokens]
    H, Hk, hd = m.n_heads, m.n_kv_heads, m.hd
    for i, p in enumerate(m.layers):
        h = m._rms(x, p["n1"])
        q = m._rope((h @ p["wq"]).view(B, n, H, hd), pos)
        k = m._rope((h @ p["wk"]).view(B, n, Hk, hd), pos)
        v = (h @ p["wv"]).view(B, n, Hk, hd)
        K, V = kv.step(i, k, v)
        if fresh:
            K, V = k, v
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            K.transpose(1, 2),
            V.transpose(1, 2),
            is_causal=n > 1,
            enable_gqa=True,
        )
        x = x + o.transpose(1, 2).reshape(B, n, H * hd) @ p["wo"]
        h = m._rms(x, p["n2"])
        x = x + (F.silu(h @ p["wg"]) * (h @ p["wu"])) @ p["wd"]
    return (m._rms(x[:, -1], m.norm) @ m.head).float()


# ---- latency -----------------------------------------------------------------------------


def section_latency(args):
    drv = make_driver()
    N = 64 if CPU_TEST else 512
    P = drv.page_size
    va = drv.reserve(N * P)
    t_create, t_map, t_acc, t_mapacc, t_unmap, t_release = [], [], [], [], [], []
    hs = []
    for _ in range(N):
        t = time.perf_counter()
        hs.append(drv.create())
        t_create.append(time.perf_counter() - t)
    res = {"page_size": P, "pages": N}
    busy_mm = None
    if not CPU_TEST:
        busy_mm = torch.randn(4096, 4096, device=DEV, dtype=torch.bfloat16)

    for state in ("idle", "busy"):
        if state == "busy" and CPU_TEST:
            continue
        t_map, t_acc, t_mapacc, t_unmap = [], [], [], []
        if state == "busy":
            # GPU time of a fixed queue of matrix products, alone and with the maps issued
            # while it runs: equal times mean mapping does not stall the GPU
            def gpu_queue():
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(300):
                    busy_mm @ busy_mm
                e1.record()
                return e0, e1

            gpu_queue()
            sync()
            e0, e1 = gpu_queue()
            sync()
            alone = e0.elapsed_time(e1) / 1e3
            e0, e1 = gpu_queue()
            tq = time.perf_counter()
        for i, h in enumerate(hs):
            a = va + i * P
            if hasattr(drv, "map_only"):
                t = time.perf_counter()
                drv.map_only(a, h)
                t1 = time.perf_counter()
                drv.set_access_only(a, P)
                t2 = time.perf_counter()
                t_map.append(t1 - t)
                t_acc.append(t2 - t1)
                t_mapacc.append(t2 - t)
            else:
                t = time.perf_counter()
                drv.map(a, h)
                t_mapacc.append(time.perf_counter() - t)
        for i in range(N):
            t = time.perf_counter()
            drv.unmap(va + i * P)
            t_unmap.append(time.perf_counter() - t)
        r = {"map+access": summary_us(t_mapacc), "unmap": summary_us(t_unmap)}
        if t_map:
            r["map_only"], r["set_access_only"] = summary_us(t_map), summary_us(t_acc)
        if state == "busy":
            wall_maps = time.perf_counter() - tq
            sync()
            with_maps = e0.elapsed_time(e1) / 1e3
            r["gpu_queue_alone_s"], r["gpu_queue_with_maps_s"] = alone, with_maps
            r["maps_wall_s"] = wall_maps
        # 16 adjacent pages per map_batch (one set-access for the run)
        tb = []
        for j in range(0, N, 16):
            t = time.perf_counter()
            drv.map_batch([(va + (j + i) * P, hs[j + i]) for i in range(16)])
            tb.append(time.perf_counter() - t)
        for i in range(N):
            drv.unmap(va + i * P)
        r["map_batch16_per_page"] = {k: v / 16 for k, v in summary_us(tb).items() if k != "n"}
        res[state] = r
        log(
            f"latency {state}: map+access median {r['map+access']['median_us']:.1f} us "
            f"p99 {r['map+access']['p99_us']:.1f}; unmap median {r['unmap']['median_us']:.1f} "
            f"p99 {r['unmap']['p99_us']:.1f}; batch16 {r['map_batch16_per_page']['median_us']:.1f}"
            f" us/page"
            + (
                f"; GPU queue {alone * 1e3:.0f} ms alone, {with_maps * 1e3:.0f} ms "
                f"with the maps (maps took {wall_maps * 1e3:.0f} ms)"
                if state == "busy"
                else ""
            )
        )
    for h in hs:
        t = time.perf_counter()
        drv.release(h)
        t_release.append(time.perf_counter() - t)
    drv.free(va)
    res["create"], res["release"] = summary_us(t_create), summary_us(t_release)
    log(
        f"latency: create median {res['create']['median_us']:.1f} us, release {res['release']['median_us']:.1f} us"
    )
    RESULTS["latency"] = res


# ---- correctness ----------------------------------------------------------------------


def section_correct(args):
    if CPU_TEST:
        cfg = dict(vocab=200, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=128)
        P, N = 9, 14
    else:
        cfg = dict(vocab=1000, dim=512, n_layers=8, n_heads=4, n_kv_heads=2, ffn=1024)
        P, N = 100, 60  # 128 tokens a page: decode crosses a page boundary
    m = TorchLlama(**cfg, dtype=torch.float32, device=DEV, seed=1)
    B = 4
    hd = cfg["dim"] // cfg["n_heads"]
    drv = make_driver(cpu_page=4096)
    cache = VAttnKVCache(
        drv,
        num_layers=cfg["n_layers"],
        num_kv_heads=cfg["n_kv_heads"],
        head_dim=hd,
        dtype="float32",
        max_slots=8,
        max_tokens=P + N + 64,
        num_pages=64,
        host_pages=32,
        framework="torch",
    )
    log(f"correct: {cache}")
    ref = ContigKV(cfg["n_layers"], B, P + N, cfg["n_kv_heads"], hd, torch.float32)
    g = torch.Generator(device="cpu").manual_seed(3)
    prompt = torch.randint(0, cfg["vocab"], (B, P), generator=g).to(DEV)
    prompt[3] = prompt[0]  # request 3 = request 0, forked later
    for r in range(3):
        assert cache.admit(r, P, slot=r) == r
    assert cache.admit(99, P, slot=3) == 3  # a stand-in for slot 3 until the fork
    vkv = VAttnKV(cache, B)
    lr = forward(m, prompt, 0, ref)
    lv = forward(m, prompt, 0, vkv)
    worst = (lv - lr).abs().max().item()
    tok = lr.argmax(-1)
    same = bool((lv.argmax(-1) == tok).all())
    steps = 0
    events = []
    ids = [0, 1, 2, 99]
    ahead = MapAhead(cache)
    for t in range(N - 1):
        L = P + t
        if t == 30 or (CPU_TEST and t == 3):
            # fork request 0 into request 3 (slot 3): whole pages shared, the tail copied
            cache.finish(99)
            assert cache.fork(0, 3, L) == 3, "fork failed"
            ids[3] = 3
            shared = sum(
                a == b
                for ga, gb in zip(cache.slot_state(0)[3], cache.slot_state(3)[3], strict=True)
                for a, b in zip(ga, gb, strict=False)
            )
            events.append(f"fork at {L} tokens: {shared} shared pages")
        if t == 35 or (CPU_TEST and t == 7):
            # swap request 1 out, scribble over its slot's pages, swap it back in
            cache.swap_out(1)
            assert cache.admit(98, L, slot=1) == 1
            kk, vv = cache.request_kv(98, 0)
            kk.fill_(7.0)
            for i in range(cfg["n_layers"]):
                k_, v_ = cache.request_kv(98, i)
                k_.normal_()
                v_.normal_()
            cache.finish(98)
            assert cache.swap_in(1, slot=1) == 1
            events.append(f"swap out/in at {L} tokens")
        for r in ids:
            cache.extend(r, L + 1)
        ahead.request([(r, L + 2) for r in ids])
        lr = forward(m, tok[:, None], L, ref)
        lv = forward(m, tok[:, None], L, vkv)
        worst = max(worst, (lv - lr).abs().max().item())
        same = same and bool((lv.argmax(-1) == lr.argmax(-1)).all())
        tok = lr.argmax(-1)
        steps += 1
        ahead.wait()
    ahead.close()
    st = cache.stats()
    RESULTS["correct"] = {
        "steps": steps,
        "batch": B,
        "max_abs_logit_diff": worst,
        "argmax_equal": same,
        "events": events,
        "page_tokens": cache.page_tokens,
        "mapahead_pages": ahead.pages_mapped,
        "sync_maps": st["sync_maps"],
        "driver_counts": dict(drv.counts),
    }
    log(
        f"correct: {steps} decode steps x {B} seqs, max |dlogit| {worst:.2e}, argmax equal {same}; "
        f"{'; '.join(events)}; page {cache.page_tokens} tokens, map-ahead mapped "
        f"{ahead.pages_mapped} pages, {st['sync_maps']} synchronously"
    )
    cache.close()
    if not same or worst > 1e-3:
        raise SystemExit("vAttention KV does not match the contiguous cache")


# ---- ShareGPT-like trace: wasted memory ---------------------------------------------


def sharegpt_lengths(n, rng):
    """Prompt/output lengths: lognormal with ShareGPT's means (161 in, 338 out tokens)."""
    s_in, s_out = 1.0, 0.9
    pin = rng.lognormal(math.log(161) - s_in**2 / 2, s_in, n)
    pout = rng.lognormal(math.log(338) - s_out**2 / 2, s_out, n)
    return np.clip(pin, 4, 3072).astype(int), np.clip(pout, 4, 1024).astype(int)


def section_trace(args):
    rng = np.random.default_rng(0)
    if CPU_TEST:
        L, Hk, hd, dt, nreq, conc, pages = 2, 1, 64, "float16", 60, 16, 400
    else:
        L, Hk, hd, dt, nreq, conc, pages = 32, 8, 128, "float16", 1200, 256, 24000
    pin, pout = sharegpt_lengths(nreq, rng)
    drv = make_driver()
    cache = VAttnKVCache(
        drv,
        num_layers=L,
        num_kv_heads=Hk,
        head_dim=hd,
        dtype=dt,
        max_slots=conc,
        max_tokens=4096,
        num_pages=pages,
        precreate=pages,
    )
    tok_bytes = cache.token_bytes * cache.num_groups  # all layers, K and V
    map_times: list[float] = []
    orig_batch = drv.map_batch

    def timed_batch(pairs):
        t = time.perf_counter()
        orig_batch(pairs)
        map_times.append((time.perf_counter() - t) / max(1, len(pairs)))

    drv.map_batch = timed_batch
    nxt, live, step, preempted = 0, {}, 0, 0
    samples = []
    t_start = time.perf_counter()
    while nxt < nreq or live:
        while nxt < nreq and len(live) < conc and cache.can_admit(int(pin[nxt]) + 1):
            cache.admit(nxt, int(pin[nxt]))
            live[nxt] = [int(pin[nxt]), int(pin[nxt] + pout[nxt])]
            nxt += 1
        for r in list(live):
            cur, end = live[r]
            if cur >= end:
                cache.finish(r)
                del live[r]
                continue
            try:
                cache.extend(r, cur + 1)
            except OutOfMemoryError:  # preempt (recompute later), as a paged engine would
                cache.finish(r)
                del live[r]
                preempted += 1
                continue
            live[r][0] = cur + 1
        step += 1
        if step % 8 == 0 and live:
            st = cache.stats()
            lens = np.array([c for c, _ in live.values()])
            paged = int((np.ceil(lens / 16) * 16 - lens).sum()) * tok_bytes
            samples.append(
                (st["used_bytes"], st["waste_bytes"], paged, st["mapped_minus_used_bytes"])
            )
    wall = time.perf_counter() - t_start
    used = np.array([s[0] for s in samples], dtype=float)
    waste = np.array([s[1] for s in samples], dtype=float)
    paged = np.array([s[2] for s in samples], dtype=float)
    mmu = np.array([s[3] for s in samples], dtype=float)
    r = {
        "kv_shape": f"{L} layers x {Hk} kv heads x {hd} {dt}",
        "page_tokens": cache.page_tokens,
        "requests": nreq,
        "concurrency": conc,
        "mean_prompt": float(pin.mean()),
        "mean_output": float(pout.mean()),
        "steps": step,
        "preempted": preempted,
        "wall_s": wall,
        "vattn_waste_frac_of_used": float(waste.sum() / used.sum()),
        "paged16_waste_frac_of_used": float(paged.sum() / used.sum()),
        "vattn_mean_waste_MiB": float(waste.mean() / 2**20),
        "paged16_mean_waste_MiB": float(paged.mean() / 2**20),
        "mean_used_MiB": float(used.mean() / 2**20),
        "vattn_mapped_minus_used_frac_of_used": float(mmu.sum() / used.sum()),
        "vattn_mean_mapped_minus_used_MiB": float(mmu.mean() / 2**20),
        "map_per_page": summary_us(map_times) if map_times else None,
        "driver_counts": dict(drv.counts),
    }
    RESULTS["trace"] = r
    log(
        f"trace: {nreq} reqs (mean in {pin.mean():.0f}, out {pout.mean():.0f}), conc {conc}, "
        f"page {cache.page_tokens} tok: fragmentation vattn {r['vattn_waste_frac_of_used']:.2%} of used "
        f"({r['vattn_mean_waste_MiB']:.0f} MiB), paged-16 {r['paged16_waste_frac_of_used']:.2%} "
        f"({r['paged16_mean_waste_MiB']:.0f} MiB); used {r['mean_used_MiB']:.0f} MiB; "
        f"vattn mapped-minus-used incl. reclaimable surplus {r['vattn_mapped_minus_used_frac_of_used']:.2%} "
        f"({r['vattn_mean_mapped_minus_used_MiB']:.0f} MiB); maps {drv.counts['map']}, "
        f"unmaps {drv.counts['unmap']}, preempted {preempted}; {wall:.1f} s"
    )
    cache.close()


# ---- throughput ---------------------------------------------------------------------


def section_throughput(args):
    if CPU_TEST:
        cfg = dict(vocab=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn=256)
        batches, P, N, dtype = [1, 4], 60, 6, torch.float32
    else:
        cfg = dict(vocab=32000, dim=2048, n_layers=8, n_heads=16, n_kv_heads=8, ffn=5632)
        batches = [int(b) for b in args.batches.split(",")]
        P, N, dtype = args.prompt, args.decode, torch.bfloat16
    dts = "float32" if dtype == torch.float32 else "bfloat16"
    m = TorchLlama(**cfg, dtype=dtype, device=DEV, seed=0)
    hd, L, Hk = cfg["dim"] // cfg["n_heads"], cfg["n_layers"], cfg["n_kv_heads"]
    Bmax = max(batches)
    drv = make_driver()
    probe = VAttnKVCache(
        drv,
        num_layers=L,
        num_kv_heads=Hk,
        head_dim=hd,
        dtype=dts,
        max_slots=1,
        max_tokens=1,
        num_pages=1,
        precreate=0,
    )
    pt = probe.page_tokens
    probe.close()
    pages_per_req = math.ceil((P + N) / pt) + 1  # +1: map-ahead's lookahead page
    num_pages = Bmax * pages_per_req
    kv_bytes = num_pages * drv.page_size
    layout = KVLayout(num_layers=L, block_size=16, num_kv_heads=Hk, head_dim=hd, dtype=dts)
    num_blocks = kv_bytes // layout.block_bytes_all_layers  # equal KV bytes
    cache = VAttnKVCache(
        drv,
        num_layers=L,
        num_kv_heads=Hk,
        head_dim=hd,
        dtype=dts,
        max_slots=Bmax,
        max_tokens=P + N + 2 * pt,
        num_pages=num_pages,
        framework="torch",
    )
    pool = KVCachePool(layout, num_blocks, device=DEV, framework="torch")
    log(f"throughput: KV {kv_bytes / 2**30:.2f} GiB each: {cache}; paged {num_blocks} blocks of 16")
    rng = np.random.default_rng(0)
    perm = torch.as_tensor(rng.permutation(num_blocks), device=DEV)
    nblk = math.ceil((P + N) / 16)
    rows = []

    def timeit(fn, reps):
        fn()  # warm-up
        sync()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    for B in batches:
        if time.monotonic() - T0 > args.budget:
            log(f"throughput: budget reached before B={B}")
            break
        prompt = torch.randint(0, cfg["vocab"], (B, P), device=DEV)
        for r in range(B):
            assert cache.admit(r, P, slot=r) == r
        vkv = VAttnKV(cache, B)
        pkv = PagedKV(pool, perm[: B * nblk].view(B, nblk))
        reps = 3 if B * P < 65536 else 2
        t_pv = timeit(lambda: forward(m, prompt, 0, vkv), reps)
        t_pp = timeit(lambda: forward(m, prompt, 0, pkv), reps)
        t_ppf = timeit(lambda: forward(m, prompt, 0, pkv, fresh=True), reps)
        t_pvf = timeit(lambda: forward(m, prompt, 0, vkv, fresh=True), reps)
        tok = torch.randint(0, cfg["vocab"], (B, 1), device=DEV)

        def capture(kv):
            # one CUDA graph per decode step (SDPA's shapes grow with the length); the
            # KV addresses are fixed: vattn's virtual range, paged's pool + block table
            gs, pool_h = [], None
            if kv is vkv:
                # a captured copy into the range must find its pages mapped (memcpy nodes
                # check the address); decode() trims them again before each timed run
                for r in range(B):
                    cache.map_tokens(r, P + N)
            for s in range(N):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool_h):
                    out = forward(m, tok, P + s, kv)
                pool_h = g.pool()
                gs.append((g, out))
            return gs

        def decode(kv, mode, graphs=None):
            # N decode steps from length P; vattn pages past P are unmapped first
            if kv is vkv:
                for r in range(B):
                    cache.extend(r, P)
                    cache.trim(r)
                if mode == "premapped":
                    for r in range(B):
                        cache.map_tokens(r, P + N)
            ahead = MapAhead(cache) if mode == "thread" else None
            if ahead is not None:
                # the first decode token's page is mapped ahead during the prefill step
                ahead.request([(r, P + pt) for r in range(B)])
                ahead.wait()
            sync()
            t = time.perf_counter()
            steps = []
            for s in range(N):
                ts = time.perf_counter()
                if kv is vkv:
                    for r in range(B):
                        cache.extend(r, P + s + 1)
                    if ahead is not None:
                        # the next step's tokens plus one page of lookahead
                        ahead.request([(r, P + s + 1 + pt) for r in range(B)])
                if graphs is not None:
                    graphs[s][0].replay()
                else:
                    forward(m, tok, P + s, kv)
                if mode == "inline":
                    # the step is queued on the GPU: map the coming pages meanwhile,
                    # at most args.maps_per_step a step so a burst is spread out
                    cache.map_ahead([(r, P + s + 1 + pt) for r in range(B)], args.maps_per_step)
                steps.append(time.perf_counter() - ts)
            sync()
            dt = time.perf_counter() - t
            if ahead is not None:
                ahead.close()
            return dt, steps

        res = {"batch": B, "prompt": P, "decode_steps": N}
        res["prefill_tok_s"] = {
            "vattn": B * P / t_pv,
            "paged": B * P / t_pp,
            "paged_fresh": B * P / t_ppf,
            "vattn_fresh": B * P / t_pvf,
        }
        if args.graphs:  # one eager step each before capturing
            for r in range(B):
                cache.extend(r, P + 1)
            for kv in (vkv, pkv):
                tw = time.perf_counter()
                forward(m, tok, P, kv)
                sync()
            w_v = w_p = time.perf_counter() - tw
            steps_v = [w_v]
        else:  # warm-ups (the first vattn run was ~2 s slow in run 1)
            w_v, steps_v = decode(vkv, "inline")
            w_p, _ = decode(pkv, "paged")
        res["warmup_s"] = {
            "vattn": w_v,
            "paged": w_p,
            "vattn_slowest_step_s": max(steps_v),
            "vattn_slowest_step": int(np.argmax(steps_v)),
        }
        modes = ["inline", "paged"] * args.reps
        if B in (1, 16, 64, 256) or CPU_TEST:
            modes += ["premapped", "sync", "thread"] * 2
        runs: dict = {}
        graphs = {}
        if args.graphs:
            tc = time.perf_counter()
            graphs = {"v": capture(vkv), "p": capture(pkv)}
            res["capture_s"] = time.perf_counter() - tc
            decode(vkv, "inline", graphs["v"])  # warm-up replays
            decode(pkv, "paged", graphs["p"])
        for mode in modes:
            s0 = cache.sync_maps
            kv = pkv if mode == "paged" else vkv
            dt, _ = decode(kv, mode, graphs.get("p" if mode == "paged" else "v"))
            runs.setdefault(mode, []).append(B * N / dt)
            res[f"sync_maps_{mode}"] = cache.sync_maps - s0
        if graphs:
            # the last replay's logits == an eager step at the same position (both paths)
            for key, kv in (("v", vkv), ("p", pkv)):
                eager = forward(m, tok, P + N - 1, kv)
                d = (graphs[key][-1][1] - eager).abs().max().item()
                res[f"graph_vs_eager_max_abs_{key}"] = d
                assert d < 1e-2 * max(1.0, eager.abs().max().item()), (key, d)
        del graphs
        dec = {k: statistics.median(v) for k, v in runs.items()}
        res["decode_tok_s"] = dec
        res["decode_tok_s_runs"] = runs
        rows.append(res)
        pr, dr = res["prefill_tok_s"], dec
        log(
            f"B={B:3d} prefill tok/s vattn {pr['vattn']:9.0f} paged {pr['paged']:9.0f} "
            f"({pr['vattn'] / pr['paged']:.2f}x; paged-fresh {pr['paged_fresh']:9.0f}, vattn-fresh {pr['vattn_fresh']:9.0f}) | decode tok/s "
            f"vattn {dr['inline']:8.0f} paged {dr['paged']:8.0f} ({dr['inline'] / dr['paged']:.2f}x)"
            + "".join(f" {k} {dr[k]:8.0f}" for k in ("premapped", "sync", "thread") if k in dr)
            + f" [sync maps inline={res['sync_maps_inline']}"
            + (f" sync={res['sync_maps_sync']}" if "sync" in dr else "")
            + f"; warm-up vattn {w_v:.2f}s paged {w_p:.2f}s,"
            f" slowest step {max(steps_v):.2f}s]"
        )
        for r in range(B):
            cache.finish(r)
        vkv = pkv = None  # free the views before the next batch size
    RESULTS["throughput"] = {
        "decode_as_cuda_graphs": bool(args.graphs),
        "model": cfg,
        "dtype": dts,
        "kv_bytes": kv_bytes,
        "page_tokens": pt,
        "paged_blocks": num_blocks,
        "rows": rows,
        "driver_counts": dict(drv.counts),
    }
    cache.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp")
    ap.add_argument("--sections", default="latency,correct,trace,throughput")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64,128,256")
    ap.add_argument(
        "--prompt", type=int, default=1008, help="1008: decode crosses a page at step 16"
    )
    ap.add_argument("--maps-per-step", type=int, default=16)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--budget", type=float, default=400.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--graphs", action="store_true", help="decode steps as CUDA graph replays")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if DEV == "cuda":
        RESULTS["device"] = torch.cuda.get_device_name()
        RESULTS["torch"] = torch.__version__
    log(f"device {DEV}, torch {torch.__version__}")
    try:
        for name in args.sections.split(","):
            globals()[f"section_{name}"](args)
    finally:
        with open(os.path.join(args.out, "vattn_device.json"), "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
