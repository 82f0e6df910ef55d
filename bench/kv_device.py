"""KV tiers on the GPU: correctness check + the issue-14 measurements, in one bounded run.

    python bench/kv_device.py --out DIR [--budget 170] [--sections check,bw,restore,trace]

Sections (each prints lines and adds to DIR/kv_device.json):
  probe    the batched short-range Triton kernel, in a subprocess (a bad address must not
           take the main process's CUDA context down); the rest uses it only if it passed
  check    toy model (float32) decode loop through block tables == contiguous KV, token by
           token, across fork (CoW), swap-out/in and reload from the arena (also a new
           manager + pool = restart); the GPU logits are also compared with numpy's
  bw       host<->device bandwidth of swap ranges vs one large cudaMemcpyAsync, per range
           size, DMA per range vs the batched kernel; per-block vs coalesced swap
  restore  restore a prefix from the host tier / the arena vs recomputing its prefill
  trace    multi-turn agent trace with pauses: no caching / device prefix cache / tiers
On a machine without CUDA it runs check on CPU torch (for testing this script).
"""

# ruff: noqa: B023 -- the closures handed to timed() run at once, inside their loop iteration
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from kv_torch_model import TorchContiguousKV, TorchLlama, TorchPagedKV  # noqa: E402

from slabcache import BlockManager  # noqa: E402
from slabcache.kv import (  # noqa: E402
    ArenaKVTier,
    HostKVTier,
    KVCachePool,
    KVLayout,
    KVTransfer,
    TieredKVCache,
)
from slabcache.kv.toy_model import ToyConfig, ToyLlama  # noqa: E402

CUDA = torch.cuda.is_available()
VOCAB = 32000 if CUDA else 1000
DEV = "cuda" if CUDA else "cpu"
T0 = time.monotonic()
RESULTS: dict = {}


def log(*a):
    print(f"[{time.monotonic() - T0:6.1f}s]", *a, flush=True)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def left(budget):
    return budget - (time.monotonic() - T0)


# ---------------------------------------------------------------- probe (subprocess)


def probe_kernel() -> int:
    lay = KVLayout(2, 16, 8, 128, "bfloat16")
    pool = KVCachePool(lay, 64, device="cuda")
    host = HostKVTier(lay, 64, pin=True)
    xf = KVTransfer(pool, host, short_bytes=1 << 30, short_kernel="triton")
    for g in range(2):
        pool.layer_bytes(g).copy_(torch.randint(0, 256, (64, lay.block_bytes), dtype=torch.uint8))
    rows = np.array([[3, 0, 1], [10, 5, 2], [40, 20, 1]], dtype=np.int32)
    h = xf.swap_out(rows)
    h.synchronize()
    if xf.kernel_error or h.num_kernel_blocks != 4:
        print("PROBE-FAIL", xf.kernel_error, h.num_kernel_blocks)
        return 1
    ok = True
    for d0, h0, n in rows.tolist():
        for g in range(2):
            dv = pool.layer_bytes(g)[d0 : d0 + n].cpu().numpy()
            slab, j = host.locate(h0)
            ok &= np.array_equal(dv, host.block_view(g, slab, j, n))
    for g in range(2):
        pool.layer_bytes(g).zero_()
    back = np.array([[0, 3, 1], [5, 10, 2], [20, 40, 1]], dtype=np.int32)
    before = [pool.layer_bytes(g).clone() for g in range(2)]
    xf.swap_in(back).synchronize()
    for h0, d0, n in back.tolist():
        for g in range(2):
            slab, j = host.locate(h0)
            ok &= np.array_equal(
                pool.layer_bytes(g)[d0 : d0 + n].cpu().numpy(), host.block_view(g, slab, j, n)
            )
    del before
    if not ok:
        print("PROBE-MISMATCH", flush=True)
        return 1
    # sweep the kernel's shape on 1-block (64 KiB per layer) scattered rows, both ways
    from slabcache.kv import _copy_kernel

    lay = KVLayout(8, 16, 8, 128, "bfloat16")
    pool = KVCachePool(lay, 1024, device="cuda")
    host = HostKVTier(lay, 512, pin=True)
    xf = KVTransfer(pool, host, short_bytes=1 << 40, short_kernel="triton")
    rows = np.stack([np.arange(512) * 2, np.arange(512), np.ones(512)], 1).astype(np.int32)
    nbytes = 512 * lay.block_bytes_all_layers
    sweep = {}
    for block, warps in ((2048, 4), (2048, 8), (4096, 4), (4096, 8), (8192, 8), (8192, 16)):
        _copy_kernel.CONFIG.update(block=block, num_warps=warps)
        d2h = nbytes / timed(lambda: xf.swap_out(rows).synchronize()) / 1e9
        h2d = nbytes / timed(lambda: xf.swap_in(rows[:, [1, 0, 2]]).synchronize()) / 1e9
        sweep[f"{block}x{warps}"] = (round(d2h, 2), round(h2d, 2))
    best = max(sweep, key=lambda k: min(sweep[k]))
    print("PROBE-SWEEP " + json.dumps(sweep), flush=True)
    print("PROBE-OK " + best, flush=True)
    return 0 if xf.kernel_error is None else 1


# ---------------------------------------------------------------- check


def section_check(short_kernel: str) -> dict:
    cfg = ToyConfig(vocab=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=128)
    bs = 4
    np_model = ToyLlama(cfg, seed=1)
    model = TorchLlama(
        vocab=cfg.vocab,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads,
        ffn=cfg.ffn,
        dtype=torch.float32,
        device=DEV,
        from_numpy=np_model,
    )
    lay = cfg.layout(bs)
    tmp = tempfile.mkdtemp(prefix="kvcheck")
    out = {"steps": 0, "max_abs_paged_vs_contig": 0.0, "max_abs_gpu_vs_numpy": 0.0}

    def make():
        bm = BlockManager(num_blocks=40, block_size=bs, num_cpu_blocks=48)
        pool = KVCachePool(lay, 40, device=DEV, framework="torch")
        host = HostKVTier(lay, 48, slab_blocks=16, pin=CUDA)
        xf = KVTransfer(pool, host, short_bytes=2 * lay.block_bytes, short_kernel=short_kernel)
        disk = ArenaKVTier(os.path.join(tmp, "kv"), lay, model="toy")
        return TieredKVCache(bm, pool, host=host, disk=disk, transfer=xf)

    from slabcache.kv.toy_model import ContiguousKV

    class Seq:
        def __init__(self, tiers, req, tokens, ref=None, np_ref=None):
            self.tiers, self.req, self.tokens = tiers, req, list(tokens)
            self.paged = TorchPagedKV(tiers.pool, lambda: tiers.manager.block_table(req))
            self.ref = ref or TorchContiguousKV(
                cfg.n_layers, 256, cfg.n_kv_heads, cfg.head_dim, torch.float32, DEV
            )
            self.np_ref = np_ref or ContiguousKV(cfg, 256)

        def run(self, toks_all, computed, ref_done):
            self.tiers.ready()
            ta = torch.tensor(toks_all, device=DEV)
            lp = model.forward(ta[computed:], computed, self.paged)[-1]
            lr = model.forward(ta[ref_done:], ref_done, self.ref)[-1]
            ln = np_model.forward(np.array(toks_all[ref_done:]), ref_done, self.np_ref)[-1]
            d1 = float((lp - lr).abs().max())
            d2 = float(np.abs(lp.cpu().numpy() - ln).max())
            out["max_abs_paged_vs_contig"] = max(out["max_abs_paged_vs_contig"], d1)
            out["max_abs_gpu_vs_numpy"] = max(out["max_abs_gpu_vs_numpy"], d2)
            a, b = int(lp.argmax()), int(lr.argmax())
            if a != b or d1 > 1e-4:
                raise AssertionError(
                    f"req {self.req} pos {len(toks_all)}: paged {a} ref {b} diff {d1}"
                )
            out["steps"] += 1
            self.last = a

        def prefill(self, computed=0):
            self.run(self.tokens, computed, 0)

        def decode(self, n):
            for _ in range(n):
                nxt = self.last
                self.tokens.append(nxt)
                assert self.tiers.allocate(self.req, 1, [nxt]) is not None
                self.run(self.tokens, len(self.tokens) - 1, len(self.tokens) - 1)

    def noise(tiers, req, n_tokens, seed):
        g = torch.Generator(device=DEV).manual_seed(seed)
        prompt = np.random.default_rng(seed).integers(0, cfg.vocab, n_tokens)
        assert tiers.admit(req, prompt) is not None
        tiers.ready()  # the "forward pass" below writes blocks a swap-out may still read
        bt = torch.as_tensor(tiers.manager.block_table(req), device=DEV, dtype=torch.long)
        for li in range(cfg.n_layers):
            x = tiers.pool.layer(li)
            x[bt] = torch.randn(x[bt].shape, generator=g, device=DEV)
        tiers.manager.free(req)

    tiers = make()
    bm = tiers.manager
    prompt = list(np.random.default_rng(5).integers(0, cfg.vocab, 18))
    a = Seq(tiers, 1, prompt)
    assert tiers.admit(1, prompt).num_computed_tokens == 0
    a.prefill()
    a.decode(5)
    tiers.fork(1, 2)
    b = Seq(tiers, 2, a.tokens, ref=a.ref.copy(), np_ref=a.np_ref.copy())
    b.last = a.last
    b.decode(4)
    a.decode(4)
    assert tiers.stats["cow_copies"] >= 1
    assert tiers.swap_out(1) is not None
    assert tiers.swap_out(2) is not None  # both: no device block keeps a reference
    noise(tiers, 50, bm.num_free_blocks * bs, seed=9)  # every free block is overwritten
    assert tiers.swap_in(1) is not None
    assert tiers.swap_in(2) is not None
    a.decode(6)
    b.decode(3)
    bm.check_invariants()
    full_a = list(a.tokens)
    bm.free(1)
    bm.free(2)
    for i in range(3):
        noise(tiers, 60 + i, bm.num_free_blocks * bs - bs, seed=20 + i)
    c = Seq(tiers, 3, full_a)
    adm = tiers.admit(3, full_a)
    assert adm.num_disk_tokens > 0
    c.prefill(adm.num_computed_tokens)
    c.decode(5)
    out["disk_tokens_first"] = adm.num_disk_tokens
    out["stats"] = dict(tiers.stats)
    out["transfer"] = dict(tiers.transfer.stats)
    out["kernel_error"] = tiers.transfer.kernel_error
    tiers.disk.close()
    tiers.host.close()
    tiers2 = make()  # restart: new manager + pool, same arena
    d = Seq(tiers2, 7, full_a)
    adm = tiers2.admit(7, full_a)
    assert adm.num_device_tokens == 0 and adm.num_disk_tokens == (len(full_a) - 1) // bs * bs
    d.prefill(adm.num_computed_tokens)
    d.decode(5)
    assert d.tokens == c.tokens
    out["disk_tokens_after_restart"] = adm.num_disk_tokens
    tiers2.disk.close()
    tiers2.host.close()
    if CUDA:  # a CuPy-allocated pool shares its memory with the torch data plane
        try:
            import cupy

            pool = KVCachePool(
                KVLayout(2, 16, 8, 128, "float16"), 32, device="cuda", framework="cupy"
            )
            host = HostKVTier(pool.layout, 32, pin=True)
            xf = KVTransfer(pool, host, short_kernel="none")
            arr = pool.layer(1)
            arr[...] = cupy.random.standard_normal(arr.shape).astype(cupy.float16)
            want = cupy.asnumpy(arr[4:9]).copy()
            xf.swap_out(np.array([[4, 0, 5]], np.int32)).synchronize()
            arr[...] = 0
            xf.swap_in(np.array([[0, 10, 5]], np.int32)).synchronize()
            out["cupy_round_trip_exact"] = bool(np.array_equal(cupy.asnumpy(arr[10:15]), want))
            host.close()
        except Exception as e:  # report, do not fail the run
            out["cupy_round_trip_exact"] = f"error: {e!r}"
    out["passed"] = True
    return out


# ---------------------------------------------------------------- bandwidth


# Llama-3-8B's KV shape (8 KV heads x 128, bf16, 16-token blocks), 8 of its 32 layers
BIG = KVLayout(8, 16, 8, 128, "bfloat16") if CUDA else KVLayout(2, 16, 2, 16, "float32")


def timed(fn, reps=3):
    best = float("inf")
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def section_bw(kernel_ok: bool) -> dict:
    nb = 4096
    pool = KVCachePool(BIG, nb, device="cuda")
    host = HostKVTier(BIG, nb, pin=True)  # 4 GiB in 2 slabs of 1 GiB... (2048 blocks/slab)
    for g in range(BIG.num_layers):
        pool.layer_bytes(g).random_(0, 256)
    dma = KVTransfer(pool, host, short_bytes=0, short_kernel="none")
    ker = KVTransfer(pool, host, short_bytes=1 << 40) if kernel_ok else None
    auto = KVTransfer(pool, host, short_kernel="auto" if kernel_ok else "none")  # the default
    res: dict = {"block_bytes_per_layer": BIG.block_bytes, "layers": BIG.num_layers}
    total = 1024  # blocks per transfer: 8 layers x 1024 x 64 KiB = 512 MiB
    nbytes = total * BIG.block_bytes_all_layers
    # the reference: one cudaMemcpyAsync of the same bytes, torch-pinned and our slab
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    slab = torch.from_numpy(host._views[0].reshape(-1)[:nbytes])
    for name, hbuf in (("torch_pinned", pinned), ("slab_registered", slab)):
        for direction in ("d2h", "h2d"):
            if direction == "d2h":
                t = timed(lambda: hbuf.copy_(dev, non_blocking=True))
            else:
                t = timed(lambda: dev.copy_(hbuf, non_blocking=True))
            res[f"ref_{name}_{direction}_GBps"] = nbytes / t / 1e9
            gbps = nbytes / t / 1e9
            log(f"one {nbytes >> 20} MiB cudaMemcpyAsync {name} {direction}: {gbps:.1f} GB/s")
    dev = pinned = slab = hbuf = None  # the slab view must go before host.close()
    rows_out = {}
    for n in (1, 2, 4, 8, 16, 32, 64, 256):
        k = total // n
        gap = 1 if k * (n + 1) <= nb else 0
        d = np.arange(k) * (n + gap)
        h = np.arange(k) * n
        out_rows = np.stack([d, h, np.full(k, n)], 1).astype(np.int32)
        in_rows = out_rows[:, [1, 0, 2]]
        r = {"range_bytes_per_layer": n * BIG.block_bytes, "rows": k}
        for mode, xf in (("dma", dma), ("kernel", ker), ("default", auto)):
            if xf is None:
                continue
            for direction, rows in (("d2h", out_rows), ("h2d", in_rows)):
                fn = (
                    (lambda: xf.swap_out(rows).synchronize())
                    if direction == "d2h"
                    else (lambda: xf.swap_in(rows).synchronize())
                )
                t = timed(fn)
                gbps = nbytes / t / 1e9
                ref = res[f"ref_slab_registered_{direction}_GBps"]
                r[f"{mode}_{direction}_GBps"] = gbps
                r[f"{mode}_{direction}_vs_ref"] = gbps / ref
        rows_out[n] = r
        log(
            f"range {n:4d} blocks ({n * 64} KiB/layer): "
            + ", ".join(f"{k2}={v:.2f}" for k2, v in r.items() if k2.endswith(("GBps", "vs_ref")))
        )
    res["ranges"] = rows_out
    # per-block vs coalesced: a 256-block request (a 4k-token sequence)
    one = np.array([[0, 0, 256]], dtype=np.int32)
    t_co = timed(lambda: dma.swap_out(one).synchronize())
    t_pb = timed(lambda: dma.swap_out(one, coalesce=False).synchronize())
    res["swap_256_coalesced_ms"] = t_co * 1e3
    res["swap_256_per_block_ms"] = t_pb * 1e3
    res["per_block_over_coalesced"] = t_pb / t_co
    log(
        f"256-block swap-out: coalesced {t_co * 1e3:.2f} ms, per-block {t_pb * 1e3:.2f} ms "
        f"({t_pb / t_co:.1f}x)"
    )
    if ker is not None:
        scattered = np.stack([np.arange(256) * 2, np.arange(256), np.ones(256)], 1).astype(np.int32)
        t_k = timed(lambda: ker.swap_out(scattered).synchronize())
        t_d = timed(lambda: dma.swap_out(scattered).synchronize())
        res["scattered_256_kernel_ms"] = t_k * 1e3
        res["scattered_256_dma_per_block_ms"] = t_d * 1e3
        log(
            f"256 scattered 1-block rows: kernel {t_k * 1e3:.2f} ms, "
            f"one DMA each {t_d * 1e3:.2f} ms"
        )
        # the kernel moved the right bytes
        ker.swap_out(scattered).synchronize()
        ok = all(
            np.array_equal(
                pool.layer_bytes(g)[::2][:256].cpu().numpy()[:8], host.block_view(g, 0, 0, 8)
            )
            for g in range(BIG.num_layers)
        )
        res["kernel_bytes_exact"] = bool(ok)
    host.close()
    return res


# ---------------------------------------------------------------- restore vs recompute


def big_model():
    if not CUDA:  # testing this script on a CPU: a small float32 stand-in
        return TorchLlama(
            vocab=1000,
            dim=64,
            n_layers=BIG.num_layers,
            n_heads=4,
            n_kv_heads=BIG.num_kv_heads,
            ffn=128,
            dtype=torch.float32,
            device=DEV,
        )
    return TorchLlama(
        vocab=32000,
        dim=4096,
        n_layers=BIG.num_layers,
        n_heads=32,
        n_kv_heads=8,
        ffn=14336,
        dtype=torch.bfloat16,
        device=DEV,
        seed=0,
    )


def section_restore(model, kernel_ok: bool) -> dict:
    nb = 2048  # requests use at most 1016 blocks (free order), the top 512 are scratch
    res: dict = {"model": "Llama-3-8B-shaped, 8 layers, bf16, random weights", "lengths": {}}
    tmp = tempfile.mkdtemp(prefix="kvrestore", dir="/tmp")
    bm = BlockManager(num_blocks=nb, block_size=16, num_cpu_blocks=nb, enable_prefix_caching=True)
    pool = KVCachePool(BIG, nb, device=DEV, framework="torch")
    host = HostKVTier(BIG, nb, pin=CUDA)
    disk = ArenaKVTier(os.path.join(tmp, "kv"), BIG, model="bench")
    tiers = TieredKVCache(
        bm,
        pool,
        host=host,
        disk=disk,
        transfer=KVTransfer(pool, host, short_kernel="auto" if kernel_ok else "none"),
    )
    rng = np.random.default_rng(0)
    req = 100
    for L in (128, 256, 512, 1024, 2048, 4096, 8192):
        prompt = rng.integers(0, VOCAB, L + 1)
        toks = torch.as_tensor(prompt, device=DEV)
        # recompute: the prefill of the first L tokens (what a miss costs)
        req += 1
        assert tiers.admit(req, prompt) is not None
        kv = TorchPagedKV(pool, lambda r=req: bm.block_table(r))
        model.forward(toks[:L], 0, kv)  # warm-up (also fills the blocks)
        t_pre = timed(lambda: model.forward(toks[:L], 0, kv))
        nblk = L // 16
        table = bm.block_table(req)[:nblk]
        orig = pool.read_blocks(table)
        dst = np.arange(nb - nblk, nb)  # blocks no request uses (see nb)
        # host tier: the real swap-out of the request, then time the swap-in copy into
        # other device blocks (the manager's own swap-in would reuse the blocks the device
        # still caches and copy nothing)
        ranges = bm.swap_out(req)
        tiers.transfer.swap_out(ranges).synchronize()
        ht = bm.host_block_table(req)[:nblk].astype(np.int64)
        cut = np.flatnonzero(np.diff(ht) != 1) + 1  # coalesce the host table into runs
        starts = np.concatenate([[0], cut])
        lens = np.diff(np.concatenate([starts, [nblk]]))
        rows = np.stack([ht[starts], dst[0] + starts, lens], 1).astype(np.int32)
        res.setdefault("host_rows", {})[L] = len(rows)
        t_host = timed(lambda: tiers.transfer.swap_in(rows).synchronize())
        host_exact = bool(np.array_equal(pool.read_blocks(dst), orig))
        pool.write_blocks(dst, np.zeros_like(orig))
        assert bm.swap_in(req) is not None
        # disk tier: write the blocks, then time get -> pinned staging -> device
        hashes = np.frombuffer(os.urandom(32 * nblk), np.uint8).reshape(nblk, 32).copy()
        disk.put(hashes, orig)
        disk.flush()

        def arena_load():
            st = pool.staging(nblk)
            pool.write_blocks(dst, disk.get(hashes, out=st))

        t_arena = timed(arena_load)
        t_get = timed(lambda: disk.get(hashes, out=pool.staging(nblk)))
        exact = bool(np.array_equal(pool.read_blocks(dst), orig))
        cold = None
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            cold = timed(arena_load, reps=1)
        except OSError:
            pass
        bm.free(req)
        del orig
        r = {
            "prefill_ms": t_pre * 1e3,
            "host_ms": t_host * 1e3,
            "arena_warm_ms": t_arena * 1e3,
            "arena_get_only_ms": t_get * 1e3,
            "arena_vs_prefill": t_pre / t_arena,
            "host_exact": host_exact,
            "arena_cold_ms": None if cold is None else cold * 1e3,
            "restored_exact": exact,
            "kv_MiB": nblk * BIG.block_bytes_all_layers / 2**20,
        }
        res["lengths"][L] = r
        log(
            f"prefix {L:5d}: prefill {t_pre * 1e3:7.2f} ms, host {t_host * 1e3:6.2f} ms, arena "
            f"{t_arena * 1e3:6.2f} ms (get {t_get * 1e3:.2f}, after drop_caches "
            f"{r['arena_cold_ms']}), exact={host_exact}/{exact}, "
            f"{r['kv_MiB']:.0f} MiB"
        )
    disk.close()
    host.close()
    return res


# ---------------------------------------------------------------- multi-turn trace


def make_trace(n_conv=8, turns=3, seed=0):
    rng = np.random.default_rng(seed)
    system = rng.integers(0, VOCAB, 1024)
    events = []
    for c in range(n_conv):
        first = rng.integers(0, VOCAB, 512)
        t = c * 0.5
        parts = []
        for k in range(turns):
            new = first if k == 0 else rng.integers(0, VOCAB, 384)  # tool output / user turn
            agent = bool(c % 2)
            pause = float(rng.uniform(0.5, 2.0) if agent else rng.uniform(8, 20))
            parts.append((t, c, k, new, pause))
            t += 2.0 + pause
        events.extend(parts)
    events.sort(key=lambda e: e[0])
    return system, events


def run_trace(model, mode: str, decode_tokens: int, tmp: str) -> dict:
    nb, ncpu = 320, 1024  # the device holds about 2 of the 8 conversations
    caching = mode != "none"
    bm = BlockManager(
        num_blocks=nb,
        block_size=16,
        num_cpu_blocks=ncpu if mode == "tiers" else 0,
        enable_prefix_caching=caching,
    )
    pool = KVCachePool(BIG, nb, device=DEV, framework="torch")
    host = disk = None
    if mode == "tiers":
        host = HostKVTier(BIG, ncpu, pin=CUDA)
        disk = ArenaKVTier(os.path.join(tmp, f"kv-{mode}"), BIG, model="bench", byte_budget=8 << 30)
    tiers = TieredKVCache(bm, pool, host=host, disk=disk)
    system, events = make_trace(n_conv=8)
    context: dict[int, list[int]] = {}
    parked: dict[int, int] = {}  # conv -> swapped-out request
    stats = {"prefill_tokens": 0, "generated": 0, "refused": 0, "swapped_in": 0, "pinned": 0}
    req = 0
    sync()
    t0 = time.perf_counter()
    for t_arr, c, k, new, pause in events:
        now = t_arr
        prompt = (list(system) if k == 0 else context[c]) + list(new)
        r = parked.pop(c, None)
        start = 0
        if (
            r is not None
            and tiers.swap_in(r, now=now) is not None
            and tiers.allocate(r, len(new), list(new), now=now) is not None
        ):
            stats["swapped_in"] += 1
            start = len(prompt) - len(new)
        else:
            if r is not None:
                bm.free(r)
            req += 1
            r = req
            adm = tiers.admit(r, prompt, program=c, now=now)
            if adm is None:
                bm.expire_pins(now=1e18)
                adm = tiers.admit(r, prompt, program=c, now=now)
            if adm is None:
                stats["refused"] += 1
                bm.free(r)
                continue
            start = adm.num_computed_tokens
        tiers.ready()
        kv = TorchPagedKV(pool, lambda r=r: bm.block_table(r))
        toks = torch.as_tensor(prompt, device=DEV)
        logits = model.forward(toks[start:], start, kv)
        stats["prefill_tokens"] += len(prompt) - start
        out = []
        for _ in range(decode_tokens):
            nxt = int(logits.argmax())
            out.append(nxt)
            if tiers.allocate(r, 1, [nxt], now=now) is None:
                out.pop()  # not appended: the context must hold computed tokens only
                break
            logits = model.forward(torch.tensor([nxt], device=DEV), len(prompt) + len(out) - 1, kv)
            stats["generated"] += 1
        context[c] = prompt + out
        if mode == "tiers" and pause > 5 and tiers.swap_out(r) is not None:
            parked[c] = r  # long pause: park on the host tier
        elif mode == "tiers":
            bm.pin(r, ttl_s=pause + 1.0, program=c, now=now)  # tool call: TTL pin
            stats["pinned"] += 1
        else:
            bm.free(r)
    sync()
    wall = time.perf_counter() - t0
    stats.update(wall_s=wall, tokens_per_s=stats["generated"] / wall, tiers=dict(tiers.stats))
    if disk is not None:
        stats["disk"] = dict(disk.stats)
        disk.close()
    if host is not None:
        host.close()
    return stats


def section_trace(model) -> dict:
    tmp = tempfile.mkdtemp(prefix="kvtrace", dir="/tmp")
    res = {}
    for mode in ("none", "device", "tiers"):
        res[mode] = run_trace(model, mode, decode_tokens=16, tmp=tmp)
        s = res[mode]
        log(
            f"trace {mode:6s}: {s['wall_s']:.2f} s, {s['tokens_per_s']:.1f} generated tok/s, "
            f"prefill tokens {s['prefill_tokens']}, refused {s['refused']}, tiers {s['tiers']}"
        )
    res["tiers_vs_none"] = res["tiers"]["tokens_per_s"] / res["none"]["tokens_per_s"]
    res["tiers_vs_device"] = res["tiers"]["tokens_per_s"] / res["device"]["tokens_per_s"]
    return res


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--budget", type=float, default=170.0)
    ap.add_argument("--sections", default="probe,check,bw,restore,trace")
    ap.add_argument("--probe-kernel", action="store_true")
    a = ap.parse_args()
    if a.probe_kernel:
        return probe_kernel()
    secs = a.sections.split(",")
    RESULTS["env"] = {
        "torch": torch.__version__,
        "cuda": CUDA,
        "gpu": torch.cuda.get_device_name() if CUDA else None,
    }
    log("env", RESULTS["env"])
    kernel_ok = False
    if CUDA and "probe" in secs:
        try:
            p = subprocess.run(
                [sys.executable, __file__, "--probe-kernel"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            kernel_ok, text = p.returncode == 0, p.stdout + p.stderr
            if kernel_ok:
                from slabcache.kv import _copy_kernel

                best = text.split("PROBE-OK ")[1].split()[0]
                block, warps = (int(x) for x in best.split("x"))
                _copy_kernel.CONFIG.update(block=block, num_warps=warps)
                RESULTS["kernel_config"] = dict(_copy_kernel.CONFIG)
        except subprocess.TimeoutExpired as e:
            kernel_ok, text = False, f"timeout: {e}"
        RESULTS["probe"] = {"ok": kernel_ok, "out": text[-2000:]}
        log("kernel probe:", "OK" if kernel_ok else "FAILED", text[-600:])

    def dump():
        with open(os.path.join(a.out, "kv_device.json"), "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)

    def run(name, fn):
        if name not in secs:
            return
        if left(a.budget) < 10:
            log(f"skip {name}: time budget spent")
            RESULTS[name] = "skipped: budget"
            return
        try:
            RESULTS[name] = fn()
            log(f"{name}: done")
        except Exception as e:
            import traceback

            traceback.print_exc()
            RESULTS[name] = f"error: {e!r}"
        dump()

    run("check", lambda: section_check("triton" if kernel_ok else "none"))
    log(
        "check result:",
        {k: v for k, v in (RESULTS.get("check") or {}).items()}
        if isinstance(RESULTS.get("check"), dict)
        else RESULTS.get("check"),
    )
    if CUDA:
        run("bw", lambda: section_bw(kernel_ok))
    if CUDA or os.environ.get("KV_DEVICE_CPU_TEST"):
        model = big_model() if {"restore", "trace"} & set(secs) else None
        run("restore", lambda: section_restore(model, kernel_ok))
        run("trace", lambda: section_trace(model))
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
