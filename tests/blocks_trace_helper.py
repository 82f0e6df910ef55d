"""A multi-turn chat / agent trace and an FCFS replay loop for the block-manager tests.

Test-owned (tests do not import the bench package): shared system prompts,
conversations of several turns whose next prompt is the whole conversation so
far, agent turns that pause on a tool call (and may be pinned meanwhile),
bursty arrivals, a pool tight enough to evict, refuse and preempt. The
replay drives :class:`slabcache.BlockManager` with one ``step()`` per
scheduler step: frees and pins, one decode token per running request, then
FCFS admissions of whole prompts; a decode that does not fit preempts its
request (freed, re-queued at the front with everything so far as its prompt).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slabcache import BlockManager, StepBatch

VOCAB = 32000


@dataclass
class Turn:
    user_tokens: np.ndarray
    output_tokens: np.ndarray
    pause_steps: int
    tool_call: bool


@dataclass
class Conversation:
    conv_id: int
    system: int
    arrival_step: int
    turns: list[Turn]


@dataclass
class Trace:
    systems: list[np.ndarray]
    conversations: list[Conversation]
    block_size: int
    num_blocks: int
    step_seconds: float = 0.05

    def total_turns(self) -> int:
        return sum(len(c.turns) for c in self.conversations)


def make_trace(
    num_conversations: int, seed: int, *, num_blocks: int, block_size: int = 16
) -> Trace:
    rng = np.random.default_rng(seed)
    systems = [
        rng.integers(0, VOCAB, size=int(rng.integers(256, 1025)), dtype=np.int32) for _ in range(6)
    ]
    bursts = np.sort(rng.integers(0, 200, size=max(1, num_conversations // 64)))
    convs = []
    for c in range(num_conversations):
        agent = bool(rng.random() < 0.5)
        turns = []
        for _ in range(int(rng.integers(2, 7))):
            user, out, pause = (
                (rng.integers(16, 128), rng.integers(16, 96), rng.integers(4, 40))
                if agent
                else (rng.integers(32, 256), rng.integers(32, 192), rng.integers(40, 160))
            )
            turns.append(
                Turn(
                    rng.integers(0, VOCAB, size=int(user), dtype=np.int32),
                    rng.integers(0, VOCAB, size=int(out), dtype=np.int32),
                    int(pause),
                    agent,
                )
            )
        arrival = int(bursts[int(rng.integers(0, len(bursts)))] + rng.integers(0, 4))
        convs.append(Conversation(c, int(rng.integers(0, 6)), arrival, turns))
    return Trace(systems, convs, block_size, num_blocks)


@dataclass
class ReplayResult:
    steps: int = 0
    admissions: int = 0
    preemptions: int = 0
    finished_turns: int = 0


@dataclass
class _Running:
    conv: Conversation
    turn: int
    tokens: np.ndarray
    generated: int = 0


def replay(
    trace: Trace,
    bm: BlockManager,
    *,
    pin_ttl_steps: int | None = None,
    after_each_call: Callable[[], None] = lambda: None,
    max_steps: int = 100_000,
) -> ReplayResult:
    """Replays ``trace`` on ``bm``; ``after_each_call`` runs after every manager call."""
    res = ReplayResult()
    arrivals: dict[int, list[tuple[Conversation, int, np.ndarray]]] = {}
    for c in trace.conversations:
        prompt = np.concatenate([trace.systems[c.system], c.turns[0].user_tokens])
        arrivals.setdefault(c.arrival_step, []).append((c, 0, prompt))
    waiting: deque[tuple[int, Conversation, int, np.ndarray, int]] = deque()
    running: dict[int, _Running] = {}
    finished: list[int] = []
    pinned: list[tuple[int, int, float]] = []
    next_req = 0
    pending = trace.total_turns()
    step = 0
    while step < max_steps and (pending > 0 or running or waiting):
        now = step * trace.step_seconds
        for c, t, prompt in arrivals.pop(step, ()):
            waiting.append((next_req, c, t, prompt, 0))
            next_req += 1
        for rid, prog, ttl in pinned:
            bm.pin(rid, ttl, program=prog, now=now)
            after_each_call()
        decodes = [
            (rid, int(r.conv.turns[r.turn].output_tokens[r.generated]))
            for rid, r in running.items()
        ]
        admits = list(waiting)[:64]
        ids = [rid for rid, _ in decodes] + [a[0] for a in admits]
        budgets = [1] * len(decodes) + [len(a[3]) for a in admits]
        toks = [[tok] for _, tok in decodes] + [a[3].tolist() for a in admits]
        programs = [-1] * len(decodes) + [a[1].conv_id for a in admits]
        batch = StepBatch.from_lists(ids, budgets, toks, programs=programs, finished=finished)
        out = bm.step(batch, now=now, fcfs=True)
        after_each_call()
        finished, pinned = [], []
        sched = out.num_scheduled.tolist()
        preempted = []
        for j, (rid, tok) in enumerate(decodes):
            r = running[rid]
            if sched[j] < 0:
                preempted.append(rid)
                continue
            r.tokens = np.append(r.tokens, np.int32(tok))
            r.generated += 1
            turn = r.conv.turns[r.turn]
            if r.generated == len(turn.output_tokens):
                del running[rid]
                res.finished_turns += 1
                pending -= 1
                nxt = r.turn + 1
                if nxt < len(r.conv.turns):
                    prompt = np.concatenate([r.tokens, r.conv.turns[nxt].user_tokens])
                    arrivals.setdefault(step + 1 + turn.pause_steps, []).append(
                        (r.conv, nxt, prompt)
                    )
                    if pin_ttl_steps is not None and turn.tool_call:
                        pinned.append((rid, r.conv.conv_id, pin_ttl_steps * trace.step_seconds))
                        continue
                finished.append(rid)
        for rid in preempted:
            r = running.pop(rid)
            bm.free(rid)
            after_each_call()
            res.preemptions += 1
            waiting.appendleft((next_req, r.conv, r.turn, r.tokens, r.generated))
            next_req += 1
        for j in range(len(admits)):
            if sched[len(decodes) + j] < 0:
                break
            rid, c, t, prompt, pre = waiting.popleft()
            res.admissions += 1
            running[rid] = _Running(c, t, prompt, pre)
        step += 1
    for rid in finished + [p[0] for p in pinned]:
        bm.free(rid)
    res.steps = step
    return res
