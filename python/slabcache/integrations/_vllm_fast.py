"""The one-call fast path of :class:`~slabcache.integrations.vllm.SlabcacheScheduler`.

vLLM 0.33's ``Scheduler.schedule()`` walks its running list and waiting queue
in Python, calling the KV-cache manager once or twice per request. When the
configuration and every live request are in the subset modelled here, the
scheduler's step is instead one core call (``BlockManager.schedule_arrays``
with the scheduler's own queues passed in: ``schedule_with_queues``), and
this module turns its result into vLLM's real ``SchedulerOutput`` and the
same updates of ``Request`` objects, ``running`` / ``waiting``, preemption
bookkeeping and stats that stock ``schedule()`` makes. Outside the subset the
scheduler runs stock ``schedule()`` on the adapter, step by step: the core's
per-request state is shared by both paths (``_to_stock`` / ``_to_fast`` move
the few mirrors between them), so the two can alternate freely.

The subset (checked once at construction, see :func:`config_blocker`, and
per request at ``add_request``, see :func:`request_blocker`): the synchronous
``Scheduler`` (not ``AsyncScheduler``), FCFS policy, one full-attention
KV-cache group on :class:`~slabcache.integrations.vllm.SlabcacheKVCacheManager`,
chunked prefill on, no speculative decoding or lookahead, no KV or EC
connector, no auxiliary-output connector, no LoRA config, no encoder /
multimodal inputs, no pipeline parallelism, no pooling or diffusion model,
no prefill cadence or DP throttling, no Mamba / KV zeroing / prefix replay,
no KV-cache events, no KV-cache metrics collector; requests with token ids
(no embeddings), sampling params, no structured output, no
``skip_reading_prefix_cache``, not resumable, no KV-transfer params, a
prompt of 1..``max_model_len`` tokens. Per step also: not paused, no
``throttle_prefills``, no blocked / deferred / KV-holding waiting requests.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

_E64 = np.zeros(0, dtype=np.int64)
_E32 = np.zeros(0, dtype=np.int32)
_OFF0 = np.zeros(1, dtype=np.int64)


def config_blocker(s: Any) -> str | None:
    """Why scheduler ``s``'s configuration is outside the fast path's subset
    (None: inside)."""
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.request_queue import SchedulingPolicy

    from .vllm import SlabcacheHybridKVCacheManager, SlabcacheKVCacheManager

    sc = s.scheduler_config
    mgr = s.kv_cache_manager
    checks: tuple[tuple[bool, str], ...] = (
        (isinstance(s, AsyncScheduler), "async scheduler"),
        (bool(getattr(sc, "async_scheduling", False)), "async scheduling"),
        (s.policy != SchedulingPolicy.FCFS, "priority policy"),
        (
            type(mgr) is not SlabcacheKVCacheManager
            or isinstance(mgr, SlabcacheHybridKVCacheManager),
            "KV-cache manager",
        ),
        (mgr.enable_kv_cache_events, "KV-cache events"),
        (mgr.metrics_collector is not None, "KV-cache metrics collector"),
        (getattr(mgr, "_drop_eagle", False), "EAGLE block drop"),
        (s.connector is not None, "KV connector"),
        (s.ec_connector is not None, "EC connector"),
        (s.aux_output_connector is not None, "aux-output connector"),
        (s.vllm_config.speculative_config is not None, "speculative decoding"),
        (bool(s.num_spec_tokens or s.num_lookahead_tokens), "lookahead slots"),
        (bool(s.num_prefill_lookahead or s.num_hash_lookahead_tokens), "prefill lookahead"),
        (s.dynamic_sd_lookup is not None, "dynamic speculative decoding"),
        (s.lora_config is not None, "LoRA"),
        (bool(s.is_encoder_decoder or s.is_mm_encoder_only), "encoder model"),
        (bool(s.max_num_encoder_input_tokens), "multimodal inputs"),
        (s.use_pp, "pipeline parallelism"),
        (s.num_sampled_tokens_per_step != 1, "pooling or diffusion model"),
        (not sc.enable_chunked_prefill, "chunked prefill off"),
        (s.local_prefill_interval > 1, "prefill cadence"),
        (bool(s.prefix_replay_tokens), "prefix replay"),
        (bool(s.has_mamba_layers or s.needs_kv_cache_zeroing), "Mamba / KV zeroing"),
        (bool(s.defer_block_free or s.requires_kv_delivery), "deferred frees"),
        (bool(s.dcp_world_size != 1 or s.pcp_world_size != 1), "context parallelism"),
        (s.finished_req_ids_dict is not None, "finished-set bookkeeping"),
    )
    for bad, why in checks:
        if bad:
            return why
    return None


def request_blocker(s: Any, req: Any) -> str | None:
    """Why request ``req`` is outside the fast path's subset (None: inside)."""
    from vllm.v1.request import RequestStatus

    n = len(req._all_token_ids)
    checks: tuple[tuple[bool, str], ...] = (
        (req.status is not RequestStatus.WAITING, "status"),
        (req.sampling_params is None or req.pooling_params is not None, "pooling"),
        (req.structured_output_request is not None, "structured output"),
        (bool(req.mm_features), "multimodal"),
        (req.lora_request is not None, "LoRA"),
        (req.prompt_embeds is not None or req.prompt_token_ids is None, "prompt embeddings"),
        (bool(req.skip_reading_prefix_cache), "skip_reading_prefix_cache"),
        (bool(req.resumable) or req.streaming_queue is not None, "streaming"),
        (bool(req.kv_transfer_params) or bool(req.ec_transfer_params), "KV transfer"),
        (bool(getattr(req, "abort_immediately", False)), "abort_immediately"),
        (bool(req.spec_token_ids) or req.num_output_placeholders > 0, "speculative"),
        (req.num_computed_tokens != 0, "computed tokens"),
        (not 0 < n <= s.max_model_len, "prompt length"),
    )
    for bad, why in checks:
        if bad:
            return why
    return None


def add_request(s: Any, request: Any) -> None:
    """After vLLM's ``add_request``: a request the fast path cannot model is
    noted (steps run stock while it lives); one it can is registered in the
    core now, while the fast path is active (its prompt copied and hashed
    here, as stock vLLM hashes it when the ``Request`` is built), so that
    ``schedule()`` passes only its id."""
    if s._fast_config is not None:
        return
    if request_blocker(s, request) is not None:
        s._fast_blockers[request.request_id] = request
        return
    rid = request.request_id
    mgr = s.kv_cache_manager
    if not s._fast_active or rid in mgr._ids or s.requests.get(rid) is not request:
        return
    toks = request._all_token_ids
    cid = mgr._register_id(rid)
    key = mgr._extra_key(request)
    mgr._core.schedule(
        _E64,
        _E64,
        _E32,
        _OFF0,
        np.array([cid], dtype=np.int64),
        np.array(toks, dtype=np.int32),
        np.array([0, len(toks)], dtype=np.int64),
        np.array([key], dtype=np.uint64) if key else None,
        0.0,
        max_num_batched_tokens=0,
        max_model_len=s.max_model_len,
        max_num_seqs=1,
        running=_E64,
        waiting=_E64,
    )
    request._slab_cid = cid
    request._slab_known = len(toks)
    s._fast_waiting.add(rid)


def _unregister(mgr: Any, reqs: list[Any]) -> None:
    """Drops the core ids given to ``reqs`` for a step that did not run."""
    for req in reqs:
        mgr._ids.pop(req.request_id, None)


def blocked(s: Any, throttle_prefills: bool) -> bool:
    """Whether this step must run stock ``schedule()``."""
    from vllm.v1.core.sched.interface import PauseState

    if s._fast_config is not None or throttle_prefills:
        return True
    if s._fast_blockers:
        live = s.requests
        for rid, req in list(s._fast_blockers.items()):
            if live.get(rid) is not req or req.is_finished():
                del s._fast_blockers[rid]
        if s._fast_blockers:
            return True
    return bool(
        # Attributes tests (and engines) may set after construction.
        s.aux_output_connector is not None
        or s.connector is not None
        or s.ec_connector is not None
        or s._pause_state != PauseState.UNPAUSED
        or s.kv_holding_waiting
        or s.deferred_waiting
        or s.num_waiting_for_streaming_input
    )


def to_stock(s: Any) -> None:
    """Before a stock step after fast ones: the adapter's per-request mirrors
    from the fast path's, and waiting requests the core still holds (fast
    preemptions, refused arrivals) forgotten (stock re-registers them at
    admission, as after its own preemptions)."""
    if not s._fast_active:
        return
    mgr = s.kv_cache_manager
    bm = mgr._bm
    ids = mgr._ids
    for req in s.running:
        cid = req._slab_cid
        known = req._slab_known
        mgr._known[cid] = known
        mgr._running[req.request_id] = [cid, known, bm.num_computed_tokens(cid)]
    for rid in s._fast_waiting:
        cid = ids.pop(rid, None)
        if cid is not None:
            mgr._known.pop(cid, None)
            mgr._running.pop(rid, None)
            if cid in bm:
                bm.free(cid)
    s._fast_waiting.clear()
    s._fast_active = False


def to_fast(s: Any) -> bool:
    """Before a fast step after stock ones: each running request's core id
    and token count from the adapter's mirrors (False: a state the fast path
    does not model, run stock)."""
    mgr = s.kv_cache_manager
    bm = mgr._bm
    ids = mgr._ids
    for req in s.running:
        cid = ids.get(req.request_id)
        if cid is None or cid not in bm or cid not in mgr._known:
            return False
    for req in s.running:
        cid = ids[req.request_id]
        req._slab_cid = cid
        req._slab_known = mgr._known.pop(cid)
        mgr._running.pop(req.request_id, None)
    s._fast_waiting.clear()
    s._fast_active = True
    return True


def schedule(s: Any) -> Any:
    """vLLM 0.33's ``Scheduler.schedule()`` (FCFS subset) in one core call.
    Returns None (nothing changed) when the queues are in a state it does not
    model; the caller then runs stock ``schedule()``."""
    from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput
    from vllm.v1.engine import EngineCoreEventType
    from vllm.v1.request import RequestStatus

    if not s._fast_active and not to_fast(s):
        return None
    mgr = s.kv_cache_manager
    running = s.running
    waiting = s.waiting
    sc = s.scheduler_config
    max_model_len = s.max_model_len

    # Inputs: the running list (core ids, tokens sampled since the last step)
    # and the head of the waiting queue (core ids of the requests the core
    # holds, then arrivals with their prompts).
    run_cids: list[int] = []
    app_cids: list[int] = []
    app_reqs: list[Any] = []
    app_toks: list[int] = []
    app_offs = [0]
    for req in running:
        cid = req._slab_cid
        run_cids.append(cid)
        toks = req._all_token_ids
        k = req._slab_known
        if len(toks) != k:
            if len(toks) < k or req.spec_token_ids or req.num_output_placeholders:
                return None
            app_cids.append(cid)
            app_reqs.append(req)
            app_toks.extend(toks[k:])
            app_offs.append(len(app_toks))
    num_running = len(running)
    num_waiting = len(waiting)
    budget = min(s.max_num_scheduled_tokens, sc.max_num_batched_tokens)
    eligible = num_running + num_waiting
    threshold = sc.long_prefill_token_threshold if eligible > 1 else 0
    if threshold > 0 and s.adaptive_long_prefill_threshold:
        threshold = max(threshold, sc.max_num_batched_tokens // eligible)
    wait_cids: list[int] = []
    arr_cids: list[int] = []
    arr_reqs: list[Any] = []
    arr_toks: list[int] = []
    arr_offs = [0]
    arr_keys: list[int] = []
    # At most this many waiting requests can be admitted: every admission
    # allocates at least one block (its first uncomputed token lies past its
    # cached full blocks), and nothing is freed in a step that admits.
    room = min(s.max_num_active_reqs - num_running, budget)
    if num_waiting and room > 0:
        room = min(room, mgr._bm.num_free_blocks)
    if num_waiting and room > 0:
        held = s._fast_waiting
        PREEMPTED = RequestStatus.PREEMPTED
        WAITING = RequestStatus.WAITING
        for req in itertools.islice(waiting, room):
            st = req.status
            if st is not WAITING and st is not PREEMPTED:
                return _unregister(mgr, arr_reqs)
            if req.request_id in held:
                wait_cids.append(req._slab_cid)
            else:
                # A request the core does not hold: registered with its prompt.
                if (
                    req.request_id in mgr._ids
                    or req.num_computed_tokens
                    or req.num_stale_output_tokens
                ):
                    return _unregister(mgr, arr_reqs)
                why = request_blocker(s, req) if st is WAITING else None
                if why is not None:
                    s._fast_blockers[req.request_id] = req
                    return _unregister(mgr, arr_reqs)
                cid = mgr._register_id(req.request_id)
                wait_cids.append(cid)
                arr_cids.append(cid)
                arr_reqs.append(req)
                arr_toks.extend(req._all_token_ids)
                arr_offs.append(len(arr_toks))
                arr_keys.append(mgr._extra_key(req))
    r = mgr._core.schedule(
        _E64,
        np.array(app_cids, dtype=np.int64) if app_cids else _E64,
        np.array(app_toks, dtype=np.int32) if app_toks else _E32,
        np.array(app_offs, dtype=np.int64) if app_cids else _OFF0,
        np.array(arr_cids, dtype=np.int64) if arr_cids else _E64,
        np.array(arr_toks, dtype=np.int32) if arr_toks else _E32,
        np.array(arr_offs, dtype=np.int64) if arr_cids else _OFF0,
        np.array(arr_keys, dtype=np.uint64) if any(arr_keys) else None,
        0.0,
        max_num_batched_tokens=budget,
        max_model_len=max_model_len,
        max_num_seqs=s.max_num_active_reqs,
        long_prefill_token_threshold=threshold,
        num_lookahead_tokens=0,
        full_sequence_must_fit=bool(s.scheduler_reserve_full_isl),
        watermark_blocks=mgr.watermark_blocks,
        running=np.array(run_cids, dtype=np.int64) if run_cids else _E64,
        waiting=np.array(wait_cids, dtype=np.int64) if wait_cids else _E64,
    )
    r_ids, r_sched, r_comp, r_kinds, r_blocks, r_offs, r_pre, r_copies = r
    s.current_step += 1
    for req in app_reqs:
        req._slab_known = len(req._all_token_ids)
    held = s._fast_waiting
    for req, cid in zip(arr_reqs, arr_cids, strict=True):
        req._slab_cid = cid  # registered by the call, held while it waits
        req._slab_known = len(req._all_token_ids)
        held.add(req.request_id)
    log_stats = s.log_stats
    ts = time.monotonic() if log_stats else 0.0

    # Preemptions: the last running requests, in order, to the waiting front.
    if len(r_pre):
        for cid in r_pre.tolist():
            req = running.pop()
            assert req._slab_cid == cid, "fast path: preemption order"
            s.encoder_cache_manager.free(req)
            s._pending_encoder_input_ids.pop(req.request_id, None)
            s._inflight_prefills.discard(req)
            req.status = RequestStatus.PREEMPTED
            req.num_computed_tokens = 0
            if req.spec_token_ids:
                req.spec_token_ids = []
            req.drop_stale_output = req.drop_stale_output and req.num_stale_output_tokens > 0
            req.num_stale_output_tokens = req.num_in_flight_tokens
            req.num_output_placeholders = 0
            req.num_preemptions += 1
            if log_stats:
                req.record_event(EngineCoreEventType.PREEMPTED, ts)
            waiting.prepend_request(req)
            s.reset_preempted_req_ids.add(req.request_id)
            held.add(req.request_id)

    ids_l = r_ids.tolist()
    n_total = len(ids_l)
    kinds = r_kinds
    n_run = int(np.argmax(kinds != 0)) if n_total and kinds[-1] != 0 else n_total
    sched_l = r_sched.tolist()
    comp_l = r_comp.tolist()
    offs = r_offs
    # Running requests scheduled this step (in order; some may be skipped).
    by_cid = dict(zip(run_cids, running, strict=False)) if n_run != num_running else None
    run_reqs = running[:n_run] if by_cid is None else [by_cid[c] for c in ids_l[:n_run]]
    blocks_l: list[int] | None = None
    new_block_ids: list[tuple[list[int], ...] | None] = [None] * n_run
    with_blocks = np.flatnonzero(offs[1 : n_run + 1] != offs[:n_run]).tolist()
    if with_blocks or n_run < n_total:
        blocks_l = (r_blocks + 1).tolist()
        ol = offs.tolist()
        for i in with_blocks:
            new_block_ids[i] = (blocks_l[ol[i] : ol[i + 1]],)
    rids = [req.request_id for req in run_reqs]
    num_scheduled_tokens = dict(zip(rids, sched_l[:n_run], strict=True))

    # Admissions, FCFS from the waiting front.
    new_reqs: list[Any] = []
    new_tables: list[list[int]] = []
    resumed_reqs: list[Any] = []
    resumed_tables: list[list[int]] = []
    if n_run < n_total:
        assert blocks_l is not None
        ol = offs.tolist()
        record = mgr.record_prefix_cache_stats
        inflight = s._inflight_prefills
        fetch = s._kv_fetch_stages is not None
        WAITING = RequestStatus.WAITING
        for i in range(n_run, n_total):
            req = waiting.pop_request()
            assert req._slab_cid == ids_l[i], "fast path: admission order"
            rid = req.request_id
            held.discard(rid)
            hit = comp_l[i]
            n = sched_l[i]
            running.append(req)
            if log_stats:
                req.record_event(EngineCoreEventType.SCHEDULED, ts)
            table = blocks_l[ol[i] : ol[i + 1]]
            if req.status is WAITING:
                new_reqs.append(req)
                new_tables.append(table)
            else:
                resumed_reqs.append(req)
                resumed_tables.append(table)
            if req.prefill_stats and req.num_preemptions <= 0:
                req.prefill_stats.set(
                    num_prompt_tokens=req.num_prompt_tokens,
                    num_local_cached_tokens=hit,
                    num_external_cached_tokens=0,
                )
            record(req, hit)
            num_scheduled_tokens[rid] = n
            req.status = RequestStatus.RUNNING
            req.num_computed_tokens = hit
            if fetch:
                s._set_kv_fetch_stage(req, None)
            if hit + n < len(req._all_token_ids):
                inflight.add(req)
    if not len(r_pre):
        s.prefill_capacity_bound = num_waiting_after(s) > len(s.deferred_waiting)

    total = sum(sched_l)
    if total > 0:
        s.num_executed_steps += 1

    # vLLM's output objects (before computed tokens advance, as stock).
    uses_mrope = s.model_uses_mrope
    v2 = s.use_v2_model_runner
    if v2:
        new_reqs.extend(resumed_reqs)
        new_tables.extend(resumed_tables)
        resumed_reqs, resumed_tables = [], []
        new_reqs_data = [
            NewRequestData.from_request(req, (t,), req._all_token_ids, uses_mrope=uses_mrope)
            for req, t in zip(new_reqs, new_tables, strict=True)
        ]
    else:
        new_reqs_data = [
            NewRequestData.from_request(req, (t,), uses_mrope=uses_mrope)
            for req, t in zip(new_reqs, new_tables, strict=True)
        ]
    cached_ids = rids
    cached_comp = comp_l[:n_run]
    if resumed_reqs:
        cached_ids = rids + [req.request_id for req in resumed_reqs]
        new_block_ids.extend((t,) for t in resumed_tables)
        cached_comp = cached_comp + [req.num_computed_tokens for req in resumed_reqs]
        cached_reqs = run_reqs + resumed_reqs
    else:
        cached_reqs = run_reqs
    all_token_ids: dict[str, list[int]] = {}
    if not v2:
        prev = s.prev_step_scheduled_req_ids
        for req in cached_reqs:
            if req.request_id not in prev:
                all_token_ids[req.request_id] = req.all_token_ids.copy()
        prev.clear()
        prev.update(num_scheduled_tokens)
    cached = CachedRequestData(
        req_ids=cached_ids,
        resumed_req_ids={req.request_id for req in resumed_reqs},
        new_token_ids=[],
        all_token_ids=all_token_ids,
        new_block_ids=new_block_ids,
        num_computed_tokens=cached_comp,
        num_output_tokens=[
            len(req._output_token_ids) + req.num_output_placeholders for req in cached_reqs
        ],
    )
    mgr.take_boundary_state_offloads()
    copies, retained = mgr.take_kv_cache_block_copies()
    assert not copies and not len(r_copies), "fast path: copy-on-write"
    stats = None
    if log_stats and s.observability_config.enable_logging_iteration_details:
        stats = s._make_scheduled_encoder_input_stats({})
    out = SchedulerOutput(
        scheduled_new_reqs=new_reqs_data,
        scheduled_cached_reqs=cached,
        num_scheduled_tokens=num_scheduled_tokens,
        total_num_scheduled_tokens=total,
        scheduled_spec_decode_tokens={},
        scheduled_encoder_inputs={},
        scheduled_encoder_input_stats=stats,
        preempted_req_ids=s.reset_preempted_req_ids,
        finished_req_ids=s.finished_req_ids,
        free_encoder_mm_hashes=s.encoder_cache_manager.get_freed_mm_hashes(),
        encoder_input_updates=s._get_encoder_input_updates(num_scheduled_tokens, new_reqs_data, {})
        if v2 and s._pending_encoder_input_ids
        else {},
        new_block_ids_to_zero=s._get_new_block_ids_to_zero(),
        has_sync_kv_loads=False,
        kv_cache_block_copies=None,
        kv_connector_block_state=None,
        num_spec_tokens_to_schedule=s.num_spec_tokens,
        skip_drafts=False,
        ec_manager_metadata=s.encoder_cache_manager.get_manager_metadata(),
    )

    # vLLM's _update_after_schedule: computed tokens advance at scheduling.
    # Running requests start from the core's computed count, the requests
    # admitted this step (the tail of `running`) from their own.
    inflight = s._inflight_prefills
    admitted = running[len(running) - (n_total - n_run) :]
    moves = itertools.chain(
        zip(run_reqs, sched_l, comp_l, strict=False),
        (
            (req, n, req.num_computed_tokens)
            for req, n in zip(admitted, sched_l[n_run:], strict=True)
        ),
    )
    for req, n, c in moves:
        c += n
        req.num_computed_tokens = c
        req.num_in_flight_tokens += n
        chunk = c < len(req._all_token_ids)
        req.is_prefill_chunk = chunk
        if not chunk:
            inflight.discard(req)
    s.finished_req_ids = set()
    s.reset_preempted_req_ids = set()
    return out


def num_waiting_after(s: Any) -> int:
    """vLLM's ``get_request_counts()[1]``."""
    return len(s.waiting) + len(s.kv_holding_waiting)
