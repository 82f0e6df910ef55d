"""A tiny Llama-shaped transformer in numpy, to check the data plane end to end.

Random weights, float32: token embedding, per layer RMSNorm -> grouped-query
attention with rotary positions -> RMSNorm -> SwiGLU MLP, final norm, LM head.
Attention reads and writes KV through a :class:`KVAccess`: the contiguous
reference (:class:`ContiguousKV`) or the paged pool read through the
BlockManager's block table (:class:`PagedKV`). Same weights and tokens give
the same logits either way; the tests and the GPU check compare them token by
token across swaps, forks and disk reloads.

    >>> import numpy as np
    >>> m = ToyLlama(ToyConfig(vocab=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2), seed=0)
    >>> cache = ContiguousKV(m.cfg, max_tokens=16)
    >>> m.forward(np.array([1, 2, 3]), 0, cache).shape
    (3, 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .layout import KVLayout
from .pool import KVCachePool

__all__ = ["ContiguousKV", "KVAccess", "PagedKV", "ToyConfig", "ToyLlama"]


@dataclass(frozen=True)
class ToyConfig:
    vocab: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn: int = 128
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def layout(self, block_size: int) -> KVLayout:
        return KVLayout(self.n_layers, block_size, self.n_kv_heads, self.head_dim, "float32")


class KVAccess(Protocol):
    """Where attention keeps one sequence's KV."""

    def write(self, layer: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None: ...
    def read(self, layer: int, num_tokens: int) -> tuple[np.ndarray, np.ndarray]: ...


class ContiguousKV:
    """The reference: one ``[max_tokens, H, D]`` array per layer for K and for V."""

    def __init__(self, cfg: ToyConfig, max_tokens: int) -> None:
        shape = (cfg.n_layers, max_tokens, cfg.n_kv_heads, cfg.head_dim)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)

    def write(self, layer: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        self.k[layer, positions] = k
        self.v[layer, positions] = v

    def read(self, layer: int, num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        return self.k[layer, :num_tokens], self.v[layer, :num_tokens]

    def copy(self) -> ContiguousKV:
        c = object.__new__(ContiguousKV)
        c.k, c.v = self.k.copy(), self.v.copy()
        return c


class PagedKV:
    """One sequence's KV in a :class:`KVCachePool`, addressed by its block table
    (``block_table()`` is called on every access, so it follows swaps and CoW)."""

    def __init__(self, pool: KVCachePool, block_table: object) -> None:
        self.pool = pool
        self._table = block_table  # callable returning the current int32 table

    def _bt(self) -> np.ndarray:
        return np.asarray(self._table(), dtype=np.int64)  # type: ignore[operator]

    def write(self, layer: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        bs = self.pool.layout.block_size
        slots = self._bt()[positions // bs] * bs + positions % bs
        self.pool.write_tokens(layer, slots, k, v)

    def read(self, layer: int, num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pool.gather_tokens(layer, self._bt(), num_tokens)


def _rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w
    return out


class ToyLlama:
    """Random-weight Llama-like model (float32 numpy)."""

    def __init__(self, cfg: ToyConfig, seed: int = 0) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(seed)
        d, hd = cfg.dim, cfg.head_dim

        def w(*shape: int) -> np.ndarray:
            out: np.ndarray = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
            return out

        self.embed = rng.standard_normal((cfg.vocab, d)).astype(np.float32)
        self.layers = [
            {
                "n1": np.ones(d, np.float32),
                "wq": w(d, cfg.n_heads * hd),
                "wk": w(d, cfg.n_kv_heads * hd),
                "wv": w(d, cfg.n_kv_heads * hd),
                "wo": w(cfg.n_heads * hd, d),
                "n2": np.ones(d, np.float32),
                "wg": w(d, cfg.ffn),
                "wu": w(d, cfg.ffn),
                "wd": w(cfg.ffn, d),
            }
            for _ in range(cfg.n_layers)
        ]
        self.norm = np.ones(d, np.float32)
        self.head = w(d, cfg.vocab)
        inv = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        self._inv_freq = inv

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        ang = pos[:, None].astype(np.float64) * self._inv_freq[None, :]
        cos = np.cos(ang).astype(np.float32)[:, None, :]
        sin = np.sin(ang).astype(np.float32)[:, None, :]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x1 * cos - x2 * sin
        out[..., 1::2] = x1 * sin + x2 * cos
        return out

    def forward(self, tokens: np.ndarray, start: int, kv: KVAccess) -> np.ndarray:
        """Logits ``[n, vocab]`` of ``tokens`` at positions ``start..start+n``; their K/V
        are written to ``kv`` and attention reads positions ``0..start+n`` from it."""
        cfg = self.cfg
        n = len(tokens)
        pos = np.arange(start, start + n)
        x = self.embed[np.asarray(tokens)]
        hd, rep = cfg.head_dim, cfg.n_heads // cfg.n_kv_heads
        causal = pos[:, None] >= np.arange(start + n)[None, :]
        for i, p in enumerate(self.layers):
            h = _rms(x, p["n1"])
            q = self._rope((h @ p["wq"]).reshape(n, cfg.n_heads, hd), pos)
            k = self._rope((h @ p["wk"]).reshape(n, cfg.n_kv_heads, hd), pos)
            v = (h @ p["wv"]).reshape(n, cfg.n_kv_heads, hd)
            kv.write(i, pos, k, v)
            K, V = kv.read(i, start + n)
            K, V = np.repeat(K, rep, axis=1), np.repeat(V, rep, axis=1)
            s = np.einsum("qhd,khd->hqk", q, K) / np.float32(np.sqrt(hd))
            s = np.where(causal[None], s, np.float32(-1e30))
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", s, V).reshape(n, cfg.n_heads * hd)
            x = x + o @ p["wo"]
            h = _rms(x, p["n2"])
            g = h @ p["wg"]
            x = x + ((g / (1 + np.exp(-g))) * (h @ p["wu"])) @ p["wd"]
        logits: np.ndarray = _rms(x, self.norm) @ self.head
        return logits
