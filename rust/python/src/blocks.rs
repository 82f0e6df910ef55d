//! Bindings of the KV-cache block manager (`slabcache_core::blocks`).
//!
//! `BlockManagerCore` is the raw native object; `slabcache.blocks.BlockManager`
//! wraps it with defaults, a clock and type conversion. Arrays in are
//! C-contiguous numpy arrays of the stated dtype (the Python layer converts);
//! arrays out are fresh numpy arrays handed over without a copy.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList};
use slabcache_core::blocks::sliding_window::NULL_BLOCK;
use slabcache_core::blocks::{
    tokens_from_i32, Admission, BlockEventKind, BlockManager, BlockManagerConfig, CopyRange,
    GroupKind, GroupSpec, HybridAlloc, HybridBlockManager, HybridConfig, ScheduleConfig,
    ScheduleInput, StepInput,
};
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

fn count(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| {
        py_err(
            ErrorKind::InvalidArgument,
            format!("{name} must be >= 0, got {v}"),
        )
    })
}

fn slice<'a, T: numpy::Element>(name: &str, a: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        py_err(
            ErrorKind::InvalidArgument,
            format!("{name} must be a C-contiguous 1-D array"),
        )
    })
}

/// Token ids from an int32 numpy array or a list of ints (a decode step's one
/// token is cheaper to pass as a list than to wrap in an array).
fn token_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    if let Ok(arr) = obj.downcast::<PyArray1<i32>>() {
        let ro = arr.readonly();
        return Ok(tokens_from_i32(slice("token_ids", &ro)?).py()?.to_vec());
    }
    if let Ok(list) = obj.downcast::<PyList>() {
        let mut v = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            match item.extract::<i64>() {
                Ok(t) if (0..=i32::MAX as i64).contains(&t) => v.push(t as u32),
                Ok(t) => {
                    return Err(py_err(
                        ErrorKind::InvalidArgument,
                        format!("token id {t} at index {i} is outside [0, 2**31)"),
                    ))
                }
                Err(_) if item.is_instance_of::<PyInt>() => {
                    return Err(py_err(
                        ErrorKind::InvalidArgument,
                        format!("token id at index {i} is outside [0, 2**31)"),
                    ))
                }
                Err(_) => {
                    return Err(py_err(
                        ErrorKind::InvalidType,
                        format!(
                            "token ids must be ints, got {} at index {i}",
                            item.get_type().name()?
                        ),
                    ))
                }
            }
        }
        return Ok(v);
    }
    Err(py_err(
        ErrorKind::InvalidType,
        "token_ids must be an int32 numpy array or a list of ints",
    ))
}

fn ranges_array<'py>(py: Python<'py>, ranges: &[CopyRange]) -> Bound<'py, PyArray2<i32>> {
    let mut a = Array2::<i32>::zeros((ranges.len(), 3));
    for (i, r) in ranges.iter().enumerate() {
        a[[i, 0]] = r.src as i32;
        a[[i, 1]] = r.dst as i32;
        a[[i, 2]] = r.len as i32;
    }
    a.into_pyarray(py)
}

fn pairs_array<'py>(py: Python<'py>, pairs: &[(u32, u32)]) -> Bound<'py, PyArray2<i32>> {
    let mut a = Array2::<i32>::zeros((pairs.len(), 2));
    for (i, &(s, d)) in pairs.iter().enumerate() {
        a[[i, 0]] = s as i32;
        a[[i, 1]] = d as i32;
    }
    a.into_pyarray(py)
}

fn ids_array<'py>(py: Python<'py>, ids: &[u32]) -> Bound<'py, PyArray1<i32>> {
    ids.iter()
        .map(|&b| b as i32)
        .collect::<Vec<i32>>()
        .into_pyarray(py)
}

/// `schedule`'s result arrays (see `ScheduleResult` in blocks.py).
type ScheduleTuple<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<i32>>,
);

/// `drain_events`' result arrays: kinds, block ids, hashes (n, 32), parents
/// (n, 32), has_parent, extra keys, token ids and their offsets (n + 1).
type EventsTuple<'py> = (
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray2<u8>>,
    Bound<'py, PyArray2<u8>>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<i32>>,
    Bound<'py, PyArray1<i64>>,
);

/// `m`'s guard, waiting with the GIL released while another thread holds it.
fn lock_waiting<'a, T: Send>(py: Python<'_>, m: &'a Mutex<T>) -> MutexGuard<'a, T> {
    loop {
        match m.try_lock() {
            Ok(g) => return g,
            // The core does not panic on bad input; a panic mid-call is a
            // bug that check_invariants() would report, not a reason to
            // make the object unusable.
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                py.allow_threads(|| drop(m.lock()));
            }
        }
    }
}

/// The native block manager (see `slabcache.blocks.BlockManager`).
///
/// The manager sits behind a mutex, not pyo3's borrow flag: `step` runs with
/// the GIL released, and a call from another thread meanwhile (`stats()` from
/// a metrics thread) must wait for it, not fail with "Already borrowed".
#[pyclass(module = "slabcache._native", name = "BlockManagerCore", frozen)]
pub struct PyBlockManager {
    inner: Mutex<BlockManager>,
}

impl PyBlockManager {
    /// The manager, waiting (with the GIL released) while another thread holds it.
    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, BlockManager> {
        lock_waiting(py, &self.inner)
    }
}

#[pymethods]
impl PyBlockManager {
    #[new]
    #[pyo3(signature = (num_blocks, block_size, num_cpu_blocks=0, enable_prefix_caching=true, watermark=0.0, enable_events=false))]
    fn new(
        num_blocks: i64,
        block_size: i64,
        num_cpu_blocks: i64,
        enable_prefix_caching: bool,
        watermark: f64,
        enable_events: bool,
    ) -> PyResult<Self> {
        let cfg = BlockManagerConfig {
            num_blocks: count("num_blocks", num_blocks)?,
            block_size: count("block_size", block_size)?,
            num_cpu_blocks: count("num_cpu_blocks", num_cpu_blocks)?,
            enable_prefix_caching,
            watermark,
            enable_events,
        };
        Ok(PyBlockManager {
            inner: Mutex::new(BlockManager::new(cfg).py()?),
        })
    }

    #[getter]
    fn num_blocks(&self, py: Python<'_>) -> usize {
        self.lock(py).config().num_blocks
    }
    #[getter]
    fn block_size(&self, py: Python<'_>) -> usize {
        self.lock(py).config().block_size
    }
    #[getter]
    fn num_cpu_blocks(&self, py: Python<'_>) -> usize {
        self.lock(py).config().num_cpu_blocks
    }
    #[getter]
    fn enable_prefix_caching(&self, py: Python<'_>) -> bool {
        self.lock(py).config().enable_prefix_caching
    }
    #[getter]
    fn watermark(&self, py: Python<'_>) -> f64 {
        self.lock(py).config().watermark
    }
    #[getter]
    fn num_free_blocks(&self, py: Python<'_>) -> usize {
        self.lock(py).num_free_blocks()
    }
    #[getter]
    fn num_requests(&self, py: Python<'_>) -> usize {
        self.lock(py).num_requests()
    }

    fn contains(&self, py: Python<'_>, req_id: i64) -> bool {
        self.lock(py).contains(req_id)
    }

    #[pyo3(signature = (req_id, token_ids, extra_key=0, program=None, max_hit_tokens=None))]
    fn get_computed_blocks<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
        token_ids: &Bound<'py, PyAny>,
        extra_key: u64,
        program: Option<i64>,
        max_hit_tokens: Option<i64>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, usize)> {
        let toks = token_vec(token_ids)?;
        let limit = match max_hit_tokens {
            Some(m) => count("max_hit_tokens", m)?,
            None => usize::MAX,
        };
        let (ids, n) = self
            .lock(py)
            .get_computed_blocks_limited(req_id, &toks, extra_key, program, limit)
            .py()?;
        Ok((ids_array(py, &ids), n))
    }

    #[pyo3(signature = (token_ids, extra_key=0, max_hit_tokens=None))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        token_ids: &Bound<'py, PyAny>,
        extra_key: u64,
        max_hit_tokens: Option<i64>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, usize)> {
        let toks = token_vec(token_ids)?;
        let limit = match max_hit_tokens {
            Some(m) => count("max_hit_tokens", m)?,
            None => usize::MAX,
        };
        let (ids, n) = self.lock(py).lookup(&toks, extra_key, limit).py()?;
        Ok((ids_array(py, &ids), n))
    }

    #[pyo3(signature = (req_id, token_ids, num_new_tokens, hit=None, num_external_tokens=0, num_lookahead_tokens=0, extra_key=0, program=None, reserve=None, delay_cache=false, now=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn admit<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
        token_ids: &Bound<'py, PyAny>,
        num_new_tokens: i64,
        hit: Option<PyReadonlyArray1<'py, i32>>,
        num_external_tokens: i64,
        num_lookahead_tokens: i64,
        extra_key: u64,
        program: Option<i64>,
        reserve: Option<i64>,
        delay_cache: bool,
        now: f64,
    ) -> PyResult<Option<Bound<'py, PyArray1<i32>>>> {
        let toks = token_vec(token_ids)?;
        let hit_ids = match &hit {
            Some(a) => tokens_from_i32(slice("hit", a)?).py()?.to_vec(),
            None => Vec::new(),
        };
        let a = Admission {
            hit: &hit_ids,
            num_external_tokens: count("num_external_tokens", num_external_tokens)?,
            num_new_tokens: count("num_new_tokens", num_new_tokens)?,
            num_lookahead_tokens: count("num_lookahead_tokens", num_lookahead_tokens)?,
            reserve: reserve.map(|r| count("reserve", r)).transpose()?,
            delay_cache,
        };
        let r = self
            .lock(py)
            .admit(req_id, &toks, extra_key, program, &a, now)
            .py()?;
        Ok(r.map(|ids| ids_array(py, &ids)))
    }

    fn cache_blocks(&self, py: Python<'_>, req_id: i64, num_tokens: i64) -> PyResult<()> {
        let n = count("num_tokens", num_tokens)?;
        self.lock(py).cache_blocks(req_id, n).py()
    }

    #[pyo3(signature = (req_id, num_new_tokens, token_ids=None, num_lookahead_tokens=0, now=0.0, reserve=None))]
    #[allow(clippy::too_many_arguments)]
    fn allocate_slots<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
        num_new_tokens: i64,
        token_ids: Option<&Bound<'py, PyAny>>,
        num_lookahead_tokens: i64,
        now: f64,
        reserve: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyArray1<i32>>>> {
        let reserve = reserve.map(|r| count("reserve", r)).transpose()?;
        let n = count("num_new_tokens", num_new_tokens)?;
        let la = count("num_lookahead_tokens", num_lookahead_tokens)?;
        let toks = match token_ids {
            Some(a) => token_vec(a)?,
            None => Vec::new(),
        };
        let r = self
            .lock(py)
            .allocate_slots_reserving(req_id, n, &toks, la, now, reserve)
            .py()?;
        Ok(r.map(|ids| ids_array(py, &ids)))
    }

    fn free(&self, py: Python<'_>, req_id: i64) -> PyResult<()> {
        self.lock(py).free(req_id).py()
    }

    fn fork(&self, py: Python<'_>, parent_id: i64, child_id: i64) -> PyResult<()> {
        self.lock(py).fork(parent_id, child_id).py()
    }

    #[pyo3(signature = (req_id, ttl_s, program=None, now=0.0))]
    fn pin(
        &self,
        py: Python<'_>,
        req_id: i64,
        ttl_s: f64,
        program: Option<i64>,
        now: f64,
    ) -> PyResult<()> {
        self.lock(py).pin(req_id, ttl_s, program, now).py()
    }

    fn unpin(&self, py: Python<'_>, program: i64) -> PyResult<()> {
        self.lock(py).unpin(program).py()
    }

    fn expire_pins(&self, py: Python<'_>, now: f64) -> PyResult<usize> {
        self.lock(py).expire_pins(now).py()
    }

    fn pin_deadline(&self, py: Python<'_>, program: i64) -> Option<f64> {
        self.lock(py).pin_deadline(program)
    }

    fn swap_out<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
    ) -> PyResult<Option<Bound<'py, PyArray2<i32>>>> {
        let r = self.lock(py).swap_out(req_id).py()?;
        Ok(r.map(|r| ranges_array(py, &r)))
    }

    #[pyo3(signature = (req_id, now=0.0))]
    fn swap_in<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
        now: f64,
    ) -> PyResult<Option<Bound<'py, PyArray2<i32>>>> {
        let r = self.lock(py).swap_in(req_id, now).py()?;
        Ok(r.map(|r| ranges_array(py, &r)))
    }

    fn block_table<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        Ok(ids_array(py, self.lock(py).block_table(req_id).py()?))
    }

    fn host_block_table<'py>(
        &self,
        py: Python<'py>,
        req_id: i64,
    ) -> PyResult<Option<Bound<'py, PyArray1<i32>>>> {
        Ok(self
            .lock(py)
            .host_block_table(req_id)
            .py()?
            .map(|h| ids_array(py, h)))
    }

    fn num_cached_blocks(&self, py: Python<'_>, req_id: i64) -> PyResult<usize> {
        self.lock(py).num_cached_blocks(req_id).py()
    }

    fn num_computed_tokens(&self, py: Python<'_>, req_id: i64) -> PyResult<usize> {
        self.lock(py).num_computed_tokens(req_id).py()
    }

    #[pyo3(signature = (req_ids, pad=-1, min_width=0))]
    fn block_tables<'py>(
        &self,
        py: Python<'py>,
        req_ids: PyReadonlyArray1<'py, i64>,
        pad: i32,
        min_width: i64,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let ids = slice("req_ids", &req_ids)?;
        let mw = count("min_width", min_width)?;
        let (flat, width) = self.lock(py).block_tables(ids, pad, mw).py()?;
        let a = Array2::from_shape_vec((ids.len(), width), flat).expect("shape");
        Ok(a.into_pyarray(py))
    }

    /// One scheduler step; returns (num_scheduled, num_cached_tokens,
    /// new_blocks, new_block_offsets, copies, tables or None).
    #[pyo3(signature = (req_ids, num_new_tokens, token_ids, token_offsets, extra_keys=None, programs=None, finished=None, num_lookahead_tokens=0, now=0.0, want_tables=false, pad=-1, fcfs=false))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn step<'py>(
        &self,
        py: Python<'py>,
        req_ids: PyReadonlyArray1<'py, i64>,
        num_new_tokens: PyReadonlyArray1<'py, i64>,
        token_ids: PyReadonlyArray1<'py, i32>,
        token_offsets: PyReadonlyArray1<'py, i64>,
        extra_keys: Option<PyReadonlyArray1<'py, u64>>,
        programs: Option<PyReadonlyArray1<'py, i64>>,
        finished: Option<PyReadonlyArray1<'py, i64>>,
        num_lookahead_tokens: i64,
        now: f64,
        want_tables: bool,
        pad: i32,
        fcfs: bool,
    ) -> PyResult<(
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray2<i32>>,
        Option<Bound<'py, PyArray2<i32>>>,
    )> {
        // The arrays are copied before the GIL is released: another Python
        // thread could otherwise write them while the core reads them.
        let ids = slice("req_ids", &req_ids)?.to_vec();
        let budgets = slice("num_new_tokens", &num_new_tokens)?.to_vec();
        let toks = slice("token_ids", &token_ids)?.to_vec();
        let offs = slice("token_offsets", &token_offsets)?.to_vec();
        let extra = match &extra_keys {
            Some(a) => slice("extra_keys", a)?.to_vec(),
            None => Vec::new(),
        };
        let progs = match &programs {
            Some(a) => slice("programs", a)?.to_vec(),
            None => Vec::new(),
        };
        let fin = match &finished {
            Some(a) => slice("finished", a)?.to_vec(),
            None => Vec::new(),
        };
        let inp = StepInput {
            req_ids: &ids,
            num_new_tokens: &budgets,
            token_ids: &toks,
            token_offsets: &offs,
            extra_keys: &extra,
            programs: &progs,
            finished: &fin,
            num_lookahead_tokens: count("num_lookahead_tokens", num_lookahead_tokens)?,
            now,
            fcfs,
        };
        let mut guard = self.lock(py);
        let inner: &mut BlockManager = &mut guard;
        let (out, tables) = py
            .allow_threads(|| {
                let out = inner.step(&inp)?;
                let tables = want_tables.then(|| inner.padded_block_tables(inp.req_ids, pad, 0));
                Ok::<_, slabcache_core::Error>((out, tables))
            })
            .py()?;
        drop(guard);
        let tables = tables.map(|(flat, width)| {
            Array2::from_shape_vec((ids.len(), width), flat)
                .expect("shape")
                .into_pyarray(py)
        });
        Ok((
            out.num_scheduled.into_pyarray(py),
            out.num_cached_tokens.into_pyarray(py),
            out.new_blocks.into_pyarray(py),
            out.new_block_offsets.into_pyarray(py),
            pairs_array(py, &out.copies),
            tables,
        ))
    }

    #[pyo3(signature = (finished, appended_ids, appended_tokens, appended_offsets, arrival_ids, arrival_tokens, arrival_offsets, arrival_extra_keys=None, now=0.0, *, max_num_batched_tokens, max_model_len, max_num_seqs=256, long_prefill_token_threshold=0, num_lookahead_tokens=0, full_sequence_must_fit=true, watermark_blocks=0, running=None, waiting=None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn schedule<'py>(
        &self,
        py: Python<'py>,
        finished: PyReadonlyArray1<'py, i64>,
        appended_ids: PyReadonlyArray1<'py, i64>,
        appended_tokens: PyReadonlyArray1<'py, i32>,
        appended_offsets: PyReadonlyArray1<'py, i64>,
        arrival_ids: PyReadonlyArray1<'py, i64>,
        arrival_tokens: PyReadonlyArray1<'py, i32>,
        arrival_offsets: PyReadonlyArray1<'py, i64>,
        arrival_extra_keys: Option<PyReadonlyArray1<'py, u64>>,
        now: f64,
        max_num_batched_tokens: i64,
        max_model_len: i64,
        max_num_seqs: i64,
        long_prefill_token_threshold: i64,
        num_lookahead_tokens: i64,
        full_sequence_must_fit: bool,
        watermark_blocks: i64,
        running: Option<PyReadonlyArray1<'py, i64>>,
        waiting: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<ScheduleTuple<'py>> {
        let cfg = ScheduleConfig {
            max_num_batched_tokens: count("max_num_batched_tokens", max_num_batched_tokens)?,
            max_num_seqs: count("max_num_seqs", max_num_seqs)?,
            max_model_len: count("max_model_len", max_model_len)?,
            long_prefill_token_threshold: count(
                "long_prefill_token_threshold",
                long_prefill_token_threshold,
            )?,
            num_lookahead_tokens: count("num_lookahead_tokens", num_lookahead_tokens)?,
            full_sequence_must_fit,
            watermark_blocks: count("watermark_blocks", watermark_blocks)?,
        };
        // Copied before the GIL is released (another thread could write them).
        let fin = slice("finished", &finished)?.to_vec();
        let a_ids = slice("appended_ids", &appended_ids)?.to_vec();
        let a_toks = slice("appended_tokens", &appended_tokens)?.to_vec();
        let a_offs = slice("appended_offsets", &appended_offsets)?.to_vec();
        let n_ids = slice("arrival_ids", &arrival_ids)?.to_vec();
        let n_toks = slice("arrival_tokens", &arrival_tokens)?.to_vec();
        let n_offs = slice("arrival_offsets", &arrival_offsets)?.to_vec();
        let extra = match &arrival_extra_keys {
            Some(a) => slice("arrival_extra_keys", a)?.to_vec(),
            None => Vec::new(),
        };
        // External queues (the caller keeps them): None = schedule() owns them.
        let queues = match (&running, &waiting) {
            (None, None) => None,
            (r, w) => Some((
                match r {
                    Some(a) => slice("running", a)?.to_vec(),
                    None => Vec::new(),
                },
                match w {
                    Some(a) => slice("waiting", a)?.to_vec(),
                    None => Vec::new(),
                },
            )),
        };
        let inp = ScheduleInput {
            finished: &fin,
            appended_ids: &a_ids,
            appended_tokens: &a_toks,
            appended_offsets: &a_offs,
            arrival_ids: &n_ids,
            arrival_tokens: &n_toks,
            arrival_offsets: &n_offs,
            arrival_extra_keys: &extra,
            now,
        };
        let mut guard = self.lock(py);
        let inner: &mut BlockManager = &mut guard;
        let out = py
            .allow_threads(|| match &queues {
                None => inner.schedule(&cfg, &inp),
                Some((r, w)) => inner.schedule_with_queues(&cfg, r, w, &inp),
            })
            .py()?;
        drop(guard);
        Ok((
            out.req_ids.into_pyarray(py),
            out.num_scheduled.into_pyarray(py),
            out.num_computed.into_pyarray(py),
            out.kinds.into_pyarray(py),
            out.blocks.into_pyarray(py),
            out.block_offsets.into_pyarray(py),
            out.preempted.into_pyarray(py),
            pairs_array(py, &out.copies),
        ))
    }

    fn running_queue<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.lock(py).running_queue().to_vec().into_pyarray(py)
    }

    fn waiting_queue<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.lock(py).waiting_queue().into_pyarray(py)
    }

    fn drain_copies<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<i32>> {
        pairs_array(py, &self.lock(py).drain_copies())
    }

    /// Drains the pending KV events as arrays, in `EventsTuple`'s order.
    fn drain_events<'py>(&self, py: Python<'py>) -> EventsTuple<'py> {
        let (ev, toks) = self.lock(py).drain_events_with_tokens();
        let mut extra = Vec::with_capacity(ev.len());
        let mut tok_out: Vec<i32> = Vec::with_capacity(toks.len());
        let mut offs: Vec<i64> = Vec::with_capacity(ev.len() + 1);
        offs.push(0);
        for e in &ev {
            extra.push(e.extra_key);
            tok_out.extend(
                toks[e.tokens_start..e.tokens_start + e.tokens_len]
                    .iter()
                    .map(|&t| t as i32),
            );
            offs.push(tok_out.len() as i64);
        }
        let n = ev.len();
        let mut hashes = Array2::<u8>::zeros((n, 32));
        let mut parents = Array2::<u8>::zeros((n, 32));
        let mut kinds = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut has_parent = Vec::with_capacity(n);
        for (i, e) in ev.iter().enumerate() {
            kinds.push(match e.kind {
                BlockEventKind::Stored => 0u8,
                BlockEventKind::Removed => 1u8,
            });
            ids.push(e.block_id as i32);
            for (j, b) in e.hash.0.iter().enumerate() {
                hashes[[i, j]] = *b;
            }
            has_parent.push(e.parent.is_some());
            if let Some(p) = e.parent {
                for (j, b) in p.0.iter().enumerate() {
                    parents[[i, j]] = *b;
                }
            }
        }
        (
            kinds.into_pyarray(py),
            ids.into_pyarray(py),
            hashes.into_pyarray(py),
            parents.into_pyarray(py),
            has_parent.into_pyarray(py),
            extra.into_pyarray(py),
            tok_out.into_pyarray(py),
            offs.into_pyarray(py),
        )
    }

    fn set_events_enabled(&self, py: Python<'_>, on: bool) {
        self.lock(py).set_events_enabled(on);
    }

    fn reset_prefix_cache(&self, py: Python<'_>) -> bool {
        self.lock(py).reset_prefix_cache()
    }

    fn ref_count(&self, py: Python<'_>, block_id: i64) -> PyResult<u32> {
        let b = u32::try_from(block_id).map_err(|_| {
            py_err(
                ErrorKind::InvalidArgument,
                format!("block id {block_id} out of range"),
            )
        })?;
        self.lock(py).ref_count(b).py()
    }

    fn free_block_order<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        ids_array(py, &self.lock(py).free_block_order())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock(py).stats();
        let d = PyDict::new(py);
        d.set_item("num_blocks", s.num_blocks)?;
        d.set_item("num_free_blocks", s.num_free_blocks)?;
        d.set_item("num_cached_free_blocks", s.num_cached_free_blocks)?;
        d.set_item("num_pinned_blocks", s.num_pinned_blocks)?;
        d.set_item("num_cpu_blocks", s.num_cpu_blocks)?;
        d.set_item("num_used_cpu_blocks", s.num_used_cpu_blocks)?;
        d.set_item("num_requests", s.num_requests)?;
        d.set_item("usage", s.usage())?;
        d.set_item("prefix_queries", s.prefix_queries)?;
        d.set_item("prefix_query_tokens", s.prefix_query_tokens)?;
        d.set_item("prefix_hit_tokens", s.prefix_hit_tokens)?;
        d.set_item("prefix_hit_rate", s.prefix_hit_rate())?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("cow_copies", s.cow_copies)?;
        d.set_item("pins_created", s.pins_created)?;
        d.set_item("pins_released", s.pins_released)?;
        d.set_item("pins_expired", s.pins_expired)?;
        d.set_item("swap_outs", s.swap_outs)?;
        d.set_item("swap_ins", s.swap_ins)?;
        d.set_item("blocks_swapped_out", s.blocks_swapped_out)?;
        d.set_item("blocks_swapped_in", s.blocks_swapped_in)?;
        d.set_item("swap_in_blocks_reused", s.swap_in_blocks_reused)?;
        d.set_item("refusals", s.refusals)?;
        d.set_item("preemptions", s.preemptions)?;
        Ok(d)
    }

    fn check_invariants(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py).check_invariants().py()
    }
}

/// A table as Python ints, the null block as -1.
fn table_list(t: &[u32]) -> Vec<i64> {
    t.iter()
        .map(|&b| if b == NULL_BLOCK { -1 } else { b as i64 })
        .collect()
}

/// A table from Python ints (-1: the null block).
fn table_from(name: &str, t: &[i64]) -> PyResult<Vec<u32>> {
    t.iter()
        .map(|&b| match b {
            -1 => Ok(NULL_BLOCK),
            b if (0..NULL_BLOCK as i64).contains(&b) => Ok(b as u32),
            b => Err(py_err(
                ErrorKind::InvalidArgument,
                format!("{name}: block id {b} out of range"),
            )),
        })
        .collect()
}

/// The native hybrid-group manager (see `slabcache.blocks.HybridBlockManager`).
#[pyclass(module = "slabcache._native", name = "HybridBlockManagerCore", frozen)]
pub struct PyHybridBlockManager {
    inner: Mutex<HybridBlockManager>,
}

impl PyHybridBlockManager {
    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, HybridBlockManager> {
        lock_waiting(py, &self.inner)
    }
}

type PyGroupEvent<'py> = (
    u8,
    usize,
    Vec<i64>,
    Vec<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    u64,
    Vec<u32>,
);

#[pymethods]
impl PyHybridBlockManager {
    /// `groups`: one `(sliding_window, extra_retained_tokens, admission_cap)`
    /// per group; `sliding_window` 0 is full attention, `admission_cap` -1 none.
    /// `eagle_groups`: the groups with the EAGLE last-block drop.
    #[new]
    #[pyo3(signature = (num_blocks, block_size, groups, enable_prefix_caching=true, enable_events=false, eagle_groups=Vec::new()))]
    fn new(
        num_blocks: i64,
        block_size: i64,
        groups: Vec<(i64, i64, i64)>,
        enable_prefix_caching: bool,
        enable_events: bool,
        eagle_groups: Vec<i64>,
    ) -> PyResult<Self> {
        let mut specs = Vec::with_capacity(groups.len());
        for (window, extra, cap) in groups {
            let window = count("sliding_window", window)?;
            let kind = if window == 0 {
                GroupKind::Full
            } else {
                GroupKind::SlidingWindow {
                    window,
                    extra_retained: count("extra_retained_tokens", extra)?,
                }
            };
            let admission_cap = if cap < 0 { None } else { Some(cap as usize) };
            specs.push(GroupSpec {
                kind,
                admission_cap,
            });
        }
        let cfg = HybridConfig {
            num_blocks: count("num_blocks", num_blocks)?,
            block_size: count("block_size", block_size)?,
            groups: specs,
            enable_caching: enable_prefix_caching,
            enable_events,
            eagle_groups: eagle_groups
                .into_iter()
                .map(|g| count("eagle_groups", g))
                .collect::<PyResult<_>>()?,
        };
        Ok(PyHybridBlockManager {
            inner: Mutex::new(HybridBlockManager::new(cfg).py()?),
        })
    }

    #[getter]
    fn num_blocks(&self, py: Python<'_>) -> usize {
        self.lock(py).num_blocks()
    }
    #[getter]
    fn block_size(&self, py: Python<'_>) -> usize {
        self.lock(py).config().block_size
    }
    #[getter]
    fn num_groups(&self, py: Python<'_>) -> usize {
        self.lock(py).config().groups.len()
    }
    #[getter]
    fn enable_prefix_caching(&self, py: Python<'_>) -> bool {
        self.lock(py).config().enable_caching
    }
    #[getter]
    fn num_free_blocks(&self, py: Python<'_>) -> usize {
        self.lock(py).num_free_blocks()
    }

    fn contains(&self, py: Python<'_>, req_id: i64) -> bool {
        self.lock(py).contains(req_id)
    }

    #[pyo3(signature = (token_ids, extra_key=0, max_hit_tokens=None))]
    fn find_longest_cache_hit(
        &self,
        py: Python<'_>,
        token_ids: &Bound<'_, PyAny>,
        extra_key: u64,
        max_hit_tokens: Option<i64>,
    ) -> PyResult<(Vec<Vec<i64>>, usize)> {
        let limit = match max_hit_tokens {
            Some(m) => count("max_hit_tokens", m)?,
            None => usize::MAX,
        };
        // None: the last looked-up prompt again (its hashes are remembered).
        let (hit, n) = if token_ids.is_none() {
            self.lock(py).find_longest_cache_hit_again(limit)
        } else {
            let toks = token_vec(token_ids)?;
            self.lock(py)
                .find_longest_cache_hit(&toks, extra_key, limit)
        };
        Ok((hit.iter().map(|t| table_list(t)).collect(), n))
    }

    #[pyo3(signature = (req_id, new_tokens, num_new_tokens, *, extra_key=0, hit=None, num_computed_tokens=0, num_new_computed_tokens=0, num_external_computed_tokens=0, num_lookahead_tokens=0, num_in_flight_tokens=0, max_model_len=i64::MAX, reserved_blocks=0, watermark_blocks=0, full_sequence_must_fit=false, delay_cache=false, prompt_from_lookup=false))]
    #[allow(clippy::too_many_arguments)]
    fn allocate_slots(
        &self,
        py: Python<'_>,
        req_id: i64,
        new_tokens: &Bound<'_, PyAny>,
        num_new_tokens: i64,
        extra_key: u64,
        hit: Option<Vec<Vec<i64>>>,
        num_computed_tokens: i64,
        num_new_computed_tokens: i64,
        num_external_computed_tokens: i64,
        num_lookahead_tokens: i64,
        num_in_flight_tokens: i64,
        max_model_len: i64,
        reserved_blocks: i64,
        watermark_blocks: i64,
        full_sequence_must_fit: bool,
        delay_cache: bool,
        prompt_from_lookup: bool,
    ) -> PyResult<Option<Vec<Vec<i64>>>> {
        let toks = if new_tokens.is_none() {
            Vec::new()
        } else {
            token_vec(new_tokens)?
        };
        let hit: Vec<Vec<u32>> = match hit {
            None => Vec::new(),
            Some(h) => h
                .iter()
                .map(|t| table_from("hit", t))
                .collect::<PyResult<_>>()?,
        };
        let a = HybridAlloc {
            new_tokens: &toks,
            extra_key,
            hit: &hit,
            num_computed_tokens: count("num_computed_tokens", num_computed_tokens)?,
            num_new_computed_tokens: count("num_new_computed_tokens", num_new_computed_tokens)?,
            num_external_computed_tokens: count(
                "num_external_computed_tokens",
                num_external_computed_tokens,
            )?,
            num_new_tokens: count("num_new_tokens", num_new_tokens)?,
            num_lookahead_tokens: count("num_lookahead_tokens", num_lookahead_tokens)?,
            num_in_flight_tokens: count("num_in_flight_tokens", num_in_flight_tokens)?,
            max_model_len: count("max_model_len", max_model_len)?,
            reserved_blocks: count("reserved_blocks", reserved_blocks)?,
            watermark_blocks: count("watermark_blocks", watermark_blocks)?,
            full_sequence_must_fit,
            delay_cache,
            prompt_from_lookup,
        };
        let out = self.lock(py).allocate_slots(req_id, &a).py()?;
        Ok(out.map(|g| g.iter().map(|t| table_list(t)).collect()))
    }

    #[pyo3(signature = (req_id, num_tokens, total_computed_tokens, apply_admission_cap=false))]
    fn num_blocks_to_allocate(
        &self,
        py: Python<'_>,
        req_id: i64,
        num_tokens: i64,
        total_computed_tokens: i64,
        apply_admission_cap: bool,
    ) -> PyResult<usize> {
        let n = count("num_tokens", num_tokens)?;
        let c = count("total_computed_tokens", total_computed_tokens)?;
        Ok(self
            .lock(py)
            .num_blocks_to_allocate(req_id, n, c, apply_admission_cap))
    }

    fn append_tokens(
        &self,
        py: Python<'_>,
        req_id: i64,
        token_ids: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let toks = token_vec(token_ids)?;
        self.lock(py).append_tokens(req_id, &toks).py()
    }

    fn cache_blocks(&self, py: Python<'_>, req_id: i64, num_tokens: i64) -> PyResult<()> {
        let n = count("num_tokens", num_tokens)?;
        self.lock(py).cache_blocks(req_id, n).py()
    }

    fn remove_skipped_blocks(
        &self,
        py: Python<'_>,
        req_id: i64,
        num_computed_tokens: i64,
    ) -> PyResult<()> {
        let n = count("num_computed_tokens", num_computed_tokens)?;
        self.lock(py).remove_skipped_blocks(req_id, n);
        Ok(())
    }

    fn free(&self, py: Python<'_>, req_id: i64) {
        self.lock(py).free(req_id);
    }

    fn block_table(&self, py: Python<'_>, req_id: i64, group: usize) -> Vec<i64> {
        table_list(self.lock(py).block_table(req_id, group))
    }

    fn block_tables(&self, py: Python<'_>, req_id: i64) -> Vec<Vec<i64>> {
        let g = self.lock(py);
        (0..g.config().groups.len())
            .map(|i| table_list(g.block_table(req_id, i)))
            .collect()
    }

    fn num_cached_blocks(&self, py: Python<'_>, req_id: i64, group: usize) -> Option<usize> {
        self.lock(py).num_cached_blocks(req_id, group)
    }

    fn num_tokens(&self, py: Python<'_>, req_id: i64) -> Option<usize> {
        self.lock(py).num_tokens(req_id)
    }

    fn ref_count(&self, py: Python<'_>, block_id: i64) -> PyResult<u32> {
        let b = u32::try_from(block_id).map_err(|_| {
            py_err(
                ErrorKind::InvalidArgument,
                format!("block id {block_id} out of range"),
            )
        })?;
        self.lock(py).ref_count(b).py()
    }

    /// `(group, 32-byte hash)` a block is cached under, or None.
    fn cached_hash<'py>(
        &self,
        py: Python<'py>,
        block_id: i64,
    ) -> Option<(usize, Bound<'py, PyBytes>)> {
        let b = u32::try_from(block_id).ok()?;
        let c = self.lock(py).cached_hash(b);
        c.map(|(h, g)| (g, PyBytes::new(py, &h.0)))
    }

    fn free_block_order<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        ids_array(py, &self.lock(py).free_block_order())
    }

    fn reset_prefix_cache(&self, py: Python<'_>) -> bool {
        self.lock(py).reset_prefix_cache()
    }

    fn evict_blocks(&self, py: Python<'_>, block_ids: Vec<i64>) -> PyResult<()> {
        let ids = table_from("block_ids", &block_ids)?;
        if ids.contains(&NULL_BLOCK) {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                "block id -1 out of range",
            ));
        }
        self.lock(py).evict_blocks(&ids).py()
    }

    /// `(kind, group, blocks, hashes, parent, extra_key, token_ids)` per event;
    /// kind 0 stored, 1 removed.
    fn drain_events<'py>(&self, py: Python<'py>) -> Vec<PyGroupEvent<'py>> {
        let ev = self.lock(py).drain_events();
        ev.into_iter()
            .map(|e| {
                (
                    match e.kind {
                        BlockEventKind::Stored => 0u8,
                        BlockEventKind::Removed => 1u8,
                    },
                    e.group,
                    table_list(&e.blocks),
                    e.hashes.iter().map(|h| PyBytes::new(py, &h.0)).collect(),
                    e.parent.map(|h| PyBytes::new(py, &h.0)),
                    e.extra_key,
                    e.tokens,
                )
            })
            .collect()
    }

    fn check_invariants(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py).check_invariants().py()
    }
}

/// Chained BLAKE3 hashes of every full block of `token_ids`: uint8 (n, 32).
#[pyfunction]
#[pyo3(signature = (token_ids, block_size, extra_key=0))]
fn block_hashes<'py>(
    py: Python<'py>,
    token_ids: PyReadonlyArray1<'py, i32>,
    block_size: i64,
    extra_key: u64,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let bs = count("block_size", block_size)?;
    if bs == 0 {
        return Err(py_err(
            ErrorKind::InvalidArgument,
            "block_size must be >= 1",
        ));
    }
    let toks = tokens_from_i32(slice("token_ids", &token_ids)?).py()?;
    let mut hs = Vec::new();
    slabcache_core::blocks::BlockHash::extend_chain(&mut hs, extra_key, toks, bs);
    let mut a = Array2::<u8>::zeros((hs.len(), 32));
    for (i, h) in hs.iter().enumerate() {
        for (j, b) in h.0.iter().enumerate() {
            a[[i, j]] = *b;
        }
    }
    Ok(a.into_pyarray(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBlockManager>()?;
    m.add_class::<PyHybridBlockManager>()?;
    m.add_function(wrap_pyfunction!(block_hashes, m)?)?;
    Ok(())
}
