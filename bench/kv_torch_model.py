"""The toy Llama of ``slabcache.kv.toy_model`` in torch, for the GPU check and the benchmarks.

Same architecture (RMSNorm, GQA attention with rotary positions, SwiGLU MLP);
weights either copied from a numpy :class:`~slabcache.kv.toy_model.ToyLlama`
(so GPU logits can be compared with the numpy ones) or random on the device
(the benchmark's Llama-3-8B-shaped layers). Attention writes K/V through a KV
access object and reads the whole prefix back: :class:`TorchContiguousKV` or
:class:`TorchPagedKV` (the pool read through the BlockManager's block table).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class TorchContiguousKV:
    def __init__(self, n_layers: int, max_tokens: int, n_kv: int, hd: int, dtype, device) -> None:
        self.k = torch.zeros((n_layers, max_tokens, n_kv, hd), dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)

    def write(self, layer: int, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k[layer, pos] = k
        self.v[layer, pos] = v

    def read(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer, :n], self.v[layer, :n]

    def copy(self) -> TorchContiguousKV:
        c = object.__new__(TorchContiguousKV)
        c.k, c.v = self.k.clone(), self.v.clone()
        return c


class TorchPagedKV:
    """One sequence's KV in a CUDA :class:`~slabcache.kv.KVCachePool` via its block table."""

    def __init__(self, pool: Any, table_fn: Any) -> None:
        self.pool, self.table_fn = pool, table_fn
        self._bt: torch.Tensor | None = None

    def refresh(self) -> None:
        self._bt = torch.as_tensor(
            np.asarray(self.table_fn(), dtype=np.int64), device=self.pool.device
        )

    def write(self, layer: int, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if layer == 0 or self._bt is None:
            self.refresh()  # the table may have grown, been swapped or copied-on-write
        bs = self.pool.layout.block_size
        slots = self._bt[pos // bs] * bs + pos % bs
        self.pool.write_tokens(layer, slots, k, v)

    def read(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool.gather_tokens(layer, self._bt, n)


class TorchLlama:
    def __init__(
        self,
        *,
        vocab: int,
        dim: int,
        n_layers: int,
        n_heads: int,
        n_kv_heads: int,
        ffn: int,
        dtype: torch.dtype = torch.float32,
        device: str = "cuda",
        from_numpy: Any = None,
        seed: int = 0,
        rope_theta: float = 10000.0,
    ) -> None:
        self.vocab, self.dim, self.n_layers = vocab, dim, n_layers
        self.n_heads, self.n_kv_heads, self.hd = n_heads, n_kv_heads, dim // n_heads
        self.dtype, self.device = dtype, device
        hd = self.hd

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, device=device).to(dtype)

        if from_numpy is not None:
            m = from_numpy
            self.embed = t(m.embed)
            self.layers = [{k: t(v) for k, v in p.items()} for p in m.layers]
            self.norm, self.head = t(m.norm), t(m.head)
        else:
            g = torch.Generator(device=device).manual_seed(seed)

            def w(*shape: int) -> torch.Tensor:
                x = torch.randn(shape, generator=g, device=device, dtype=torch.float32)
                return (x / math.sqrt(shape[0])).to(dtype)

            self.embed = w(vocab, dim) * math.sqrt(vocab)
            self.layers = [
                {
                    "n1": torch.ones(dim, device=device, dtype=dtype),
                    "wq": w(dim, n_heads * hd),
                    "wk": w(dim, n_kv_heads * hd),
                    "wv": w(dim, n_kv_heads * hd),
                    "wo": w(n_heads * hd, dim),
                    "n2": torch.ones(dim, device=device, dtype=dtype),
                    "wg": w(dim, ffn),
                    "wu": w(dim, ffn),
                    "wd": w(ffn, dim),
                }
                for _ in range(n_layers)
            ]
            self.norm = torch.ones(dim, device=device, dtype=dtype)
            self.head = w(dim, vocab)
        inv = 1.0 / rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        self.inv_freq = inv.to(device)

    @staticmethod
    def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        ang = pos[:, None].double() * self.inv_freq[None, :]
        cos = torch.cos(ang).to(x.dtype)[:, None, :]
        sin = torch.sin(ang).to(x.dtype)[:, None, :]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x1 * cos - x2 * sin
        out[..., 1::2] = x1 * sin + x2 * cos
        return out

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start: int, kv: Any, last_only: bool = True):
        n = tokens.shape[0]
        pos = torch.arange(start, start + n, device=self.device)
        x = self.embed[tokens]
        H, Hk, hd = self.n_heads, self.n_kv_heads, self.hd
        total = start + n
        mask = None
        if n > 1 and start > 0:
            mask = pos[:, None] >= torch.arange(total, device=self.device)[None, :]
        for i, p in enumerate(self.layers):
            h = self._rms(x, p["n1"])
            q = self._rope((h @ p["wq"]).view(n, H, hd), pos)
            k = self._rope((h @ p["wk"]).view(n, Hk, hd), pos)
            v = (h @ p["wv"]).view(n, Hk, hd)
            kv.write(i, pos, k, v)
            K, V = kv.read(i, total)
            o = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None],
                K.transpose(0, 1)[None],
                V.transpose(0, 1)[None],
                attn_mask=mask,
                is_causal=(mask is None and n > 1),
                enable_gqa=True,
            )
            x = x + o[0].transpose(0, 1).reshape(n, H * hd) @ p["wo"]
            h = self._rms(x, p["n2"])
            x = x + (F.silu(h @ p["wg"]) * (h @ p["wu"])) @ p["wd"]
        if last_only:
            x = x[-1:]
        return (self._rms(x, self.norm) @ self.head).float()
