"""A serving loop on :meth:`slabcache.BlockManager.schedule`: vLLM's scheduler step in one call.

:class:`ScheduleLoop` is the bookkeeping an engine keeps around the one
call: string request ids, each request's output budget, the tokens sampled
since the last step and the requests that finished. Per step it makes one
call into the core (frees, appends, arrivals, then vLLM 0.33's running /
preempt / waiting passes) and returns the schedule in vLLM's
``SchedulerOutput`` order; :meth:`ScheduleLoop.update` takes the sampled
tokens (vLLM's ``update_from_output``: a request that finished its prompt
samples one token; it finishes at ``max_tokens``).

Block ids follow the vLLM adapter's numbering (vLLM keeps block 0 as its
null block), so a schedule here can be compared with vLLM's own, block id
for block id: :func:`schedule_digest_update` hashes a step exactly as the
bench hashes vLLM's ``SchedulerOutput``.

    >>> from slabcache import BlockManager, ScheduleConfig
    >>> loop = ScheduleLoop(BlockManager(15, 16), ScheduleConfig(64, 1024))
    >>> loop.add_request("a", list(range(100)), max_tokens=2)
    >>> s = loop.schedule()
    >>> s.num_scheduled_tokens, s.new_reqs
    ({'a': 64}, [('a', [1, 2, 3, 4], 0)])
    >>> loop.update(), loop.schedule().num_scheduled_tokens   # the rest of the prompt
    ([], {'a': 36})
    >>> loop.update(), loop.schedule().cached_new_block_ids   # 1 sampled: no new block
    ([], [None])
    >>> loop.update()                                         # 2 sampled: done
    ['a']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..blocks import BlockManager, ScheduleConfig, ScheduleResult

__all__ = ["ScheduleLoop", "ScheduledStep", "schedule_digest_update"]


@dataclass
class ScheduledStep:
    """One step's schedule in vLLM's ``SchedulerOutput`` layout (vLLM block ids).

    * ``num_scheduled_tokens``: request id -> tokens, running requests first,
      then admissions in admission order;
    * ``new_reqs``: ``(id, block ids, num_computed_tokens)`` of new admissions;
    * ``cached_req_ids`` / ``cached_new_block_ids`` / ``cached_num_computed``
      (vLLM's ``CachedRequestData``): running requests (new block ids, or None
      when they got none), then resumed ones (whose blocks are the whole table);
    * ``resumed``: ids of resumed requests; ``preempted``: ids preempted this step;
    * ``raw``: the core's :class:`~slabcache.ScheduleResult` (core ids and block ids).
    """

    num_scheduled_tokens: dict[str, int] = field(default_factory=dict)
    new_reqs: list[tuple[str, list[int], int]] = field(default_factory=list)
    cached_req_ids: list[str] = field(default_factory=list)
    cached_new_block_ids: list[list[int] | None] = field(default_factory=list)
    cached_num_computed: list[int] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    raw: ScheduleResult | None = None


def schedule_digest_update(h: Any, step: ScheduledStep) -> None:
    """Feeds one step into ``h`` (a hashlib object) in the bench's format for vLLM."""
    for rid, n in step.num_scheduled_tokens.items():
        h.update(f"{rid}:{n};".encode())
    for rid, blocks, computed in step.new_reqs:
        h.update(f"N{rid}:{(blocks,)}:{computed};".encode())
    for rid, nb in zip(step.cached_req_ids, step.cached_new_block_ids, strict=True):
        h.update(f"C{rid}:{None if nb is None else (nb,)};".encode())


_E64 = np.zeros(0, dtype=np.int64)
_E32 = np.zeros(0, dtype=np.int32)
_OFF0 = np.zeros(1, dtype=np.int64)


class ScheduleLoop:
    """Requests and sampled tokens around :meth:`BlockManager.schedule` (see the
    module docs). Per-request state lives in arrays indexed by the core's
    request id, so a step costs a handful of array operations, not a Python
    loop over the batch."""

    def __init__(self, bm: BlockManager, config: ScheduleConfig, capacity: int = 1024) -> None:
        self.bm = bm
        self.config = config
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._num_tokens = np.zeros(capacity, dtype=np.int64)
        self._num_outputs = np.zeros(capacity, dtype=np.int64)
        self._max_tokens = np.zeros(capacity, dtype=np.int64)
        self._live = 0
        self._arrival_ids: list[int] = []
        self._arrival_tokens: list[int] = []
        self._arrival_lens: list[int] = []
        self._app_ids = _E64
        self._app_tokens = _E32
        self._app_offsets = _OFF0
        self._finished = _E64
        self._last: ScheduleResult | None = None
        self._aborted: list[int] = []

    def add_request(
        self, request_id: str, prompt: Sequence[int] | np.ndarray, max_tokens: int
    ) -> None:
        """Queues a new request (it joins the waiting queue at the next step)."""
        cid = len(self._names)
        if cid == len(self._num_tokens):
            for name in ("_num_tokens", "_num_outputs", "_max_tokens"):
                old = getattr(self, name)
                new = np.zeros(2 * len(old), dtype=np.int64)
                new[: len(old)] = old
                setattr(self, name, new)
        self._ids[request_id] = cid
        self._names.append(request_id)
        self._num_tokens[cid] = len(prompt)
        self._max_tokens[cid] = int(max_tokens)
        self._live += 1
        self._arrival_ids.append(cid)
        self._arrival_tokens.extend(prompt.tolist() if isinstance(prompt, np.ndarray) else prompt)
        self._arrival_lens.append(len(prompt))

    def abort(self, request_id: str) -> None:
        """Finishes a request now, wherever it is (not yet sent to the core,
        waiting, preempted or running): it is freed at the next step.

        >>> from slabcache import BlockManager, ScheduleConfig
        >>> loop = ScheduleLoop(BlockManager(15, 16), ScheduleConfig(64, 1024))
        >>> loop.add_request("a", [1, 2, 3], max_tokens=4)
        >>> loop.abort("a"); loop.has_unfinished_requests()
        False
        """
        cid = self._ids.pop(request_id)
        self._live -= 1
        if cid in self._arrival_ids:  # never reached the core
            i = self._arrival_ids.index(cid)
            start = sum(self._arrival_lens[:i])
            del self._arrival_tokens[start : start + self._arrival_lens[i]]
            del self._arrival_ids[i]
            del self._arrival_lens[i]
            return
        keep = self._app_ids != cid
        if not keep.all():
            lens = np.diff(self._app_offsets)
            self._app_tokens = self._app_tokens[np.repeat(keep, lens)]
            offs = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
            np.cumsum(lens[keep], out=offs[1:])
            self._app_offsets = offs
            self._app_ids = self._app_ids[keep]
        self._finished = np.append(self._finished, np.int64(cid))
        if self._last is not None:
            # Scheduled in the last step: update() must not sample for it.
            self._aborted.append(cid)

    def has_unfinished_requests(self) -> bool:
        return self._live > 0

    def request_name(self, core_id: int) -> str:
        """The request id a core id stands for."""
        return self._names[core_id]

    def schedule(self) -> ScheduledStep:
        """One call into the core; the step in vLLM's layout."""
        if self._arrival_ids:
            arr_ids = np.array(self._arrival_ids, dtype=np.int64)
            arr_toks = np.array(self._arrival_tokens, dtype=np.int32)
            arr_offs = np.zeros(len(self._arrival_lens) + 1, dtype=np.int64)
            np.cumsum(self._arrival_lens, out=arr_offs[1:])
            self._arrival_ids, self._arrival_tokens, self._arrival_lens = [], [], []
        else:
            arr_ids, arr_toks, arr_offs = _E64, _E32, _OFF0
        self._aborted = []
        r = self.bm.schedule_arrays(
            self.config,
            self._finished,
            self._app_ids,
            self._app_tokens,
            self._app_offsets,
            arr_ids,
            arr_toks,
            arr_offs,
        )
        self._finished, self._app_ids, self._app_tokens, self._app_offsets = _E64, _E64, _E32, _OFF0
        self._last = r
        names = self._names
        out = ScheduledStep(raw=r)
        ids = r.req_ids.tolist()
        rn = [names[c] for c in ids]
        out.num_scheduled_tokens = dict(zip(rn, r.num_scheduled.tolist(), strict=True))
        kinds = r.kinds
        n = len(ids)
        n_run = int(np.argmax(kinds != 0)) if n and kinds[-1] != 0 else n
        offs = r.block_offsets
        out.cached_req_ids = rn[:n_run]
        nb: list[list[int] | None] = [None] * n_run
        with_blocks = np.flatnonzero(offs[1 : n_run + 1] != offs[:n_run]).tolist()
        if with_blocks or n_run < n:
            blocks = (r.blocks + 1).tolist()
            ol = offs.tolist()
            for i in with_blocks:
                nb[i] = blocks[ol[i] : ol[i + 1]]
        out.cached_new_block_ids = nb
        comp = r.num_computed.tolist()
        out.cached_num_computed = comp[:n_run]
        if n_run < n:
            kl = kinds.tolist()
            resumed = []
            for i in range(n_run, n):
                b = blocks[ol[i] : ol[i + 1]]
                if kl[i] == 1:
                    out.new_reqs.append((rn[i], b, comp[i]))
                else:
                    resumed.append((rn[i], b, comp[i]))
            for name, b, c in resumed:
                out.resumed.append(name)
                out.cached_req_ids.append(name)
                out.cached_new_block_ids.append(b)
                out.cached_num_computed.append(c)
        if len(r.preempted):
            out.preempted = [names[c] for c in r.preempted.tolist()]
        return out

    def update(self, sampled: dict[str, list[int]] | None = None) -> list[str]:
        """vLLM's ``update_from_output`` for the last step: every scheduled
        request whose prompt is computed takes its sampled token (``sampled``
        maps request id -> tokens; :meth:`sample_token` otherwise); returns
        the requests that finished (at ``max_tokens``), freed next step."""
        r = self._last
        if r is None:
            return []
        self._last = None
        ids = r.req_ids
        done = ids[(r.num_computed + r.num_scheduled) >= self._num_tokens[ids]]
        if self._aborted:
            done = done[~np.isin(done, self._aborted)]
            self._aborted = []
        if sampled is None:
            toks = self.sample_token(done, self._num_outputs[done])
            lens = np.ones(len(done), dtype=np.int64)
        else:
            per = [sampled[self._names[c]] for c in done.tolist()]
            lens = np.array([len(t) for t in per], dtype=np.int64)
            toks = np.array([t for ts in per for t in ts], dtype=np.int64)
        self._num_outputs[done] += lens
        self._num_tokens[done] += lens
        over = self._num_outputs[done] >= self._max_tokens[done]
        fin = done[over]
        self._finished = np.concatenate([self._finished, fin]) if len(self._finished) else fin
        self._live -= len(fin)
        keep = ~over
        self._app_ids = done[keep]
        kept_lens = lens[keep]
        offs = np.zeros(len(kept_lens) + 1, dtype=np.int64)
        np.cumsum(kept_lens, out=offs[1:])
        self._app_offsets = offs
        self._app_tokens = toks[np.repeat(keep, lens)].astype(np.int32)
        names = self._names
        out = [names[c] for c in fin.tolist()]
        for name in out:
            del self._ids[name]
        return out

    @staticmethod
    def sample_token(index: Any, k: Any) -> Any:
        """The deterministic stand-in for the model's ``k``-th output token of
        the ``index``-th request added (ints or int64 arrays; the bench's vLLM
        driver uses the same)."""
        return 3 + (index * 1_000_003 + k * 7_919) % 49_997
