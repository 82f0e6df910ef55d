//! Crash consistency of the blob arena under a power-loss model, the way redb
//! tests its durability.
//!
//! All arena file I/O goes through `arena::io::ArenaIo`. [`SimIo`] performs
//! it on real files (the arena mmaps them) and keeps, per file, the image as
//! of its last completed `sync` and, per directory entry, the namespace as of
//! the last directory sync. It can fail the N-th call of any operation; a
//! failed sync behaves like Linux ext4 after an I/O error (the dirty pages
//! are dropped and a later sync does not write them: "fsyncgate").
//!
//! A proptest runs operation sequences x sync mode x crash point x fault
//! point: at the crash point it takes the power-loss image (synced images,
//! optionally plus a random subset of unsynced 512-byte sectors and of
//! unsynced directory changes), the arena runs on, and at the end the image
//! is reopened with plain I/O. Asserted:
//! - every mode: the recovered arena equals the state after some prefix of
//!   the writes attempted, in order: no value ever appears that was never
//!   written under that key, and open never fails on a crash image;
//! - `always`: that prefix includes every acknowledged write;
//! - `batch`/`none`: it includes every write acknowledged before the last
//!   `flush()` / checkpoint / compaction / close that returned before the crash;
//! - live: a write that raised is not visible, and once any durability step
//!   failed (sync, dir sync, rename) every later write raises.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use slabcache_core::arena::{write_all_at, ArenaIo};
use slabcache_core::arena::{ArenaOptions, BlobArena, SyncMode};

const SECTOR: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Open,
    Write,
    Sync,
    SetLen,
    Rename,
    Remove,
    SyncDir,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    dirty: BTreeSet<usize>,
    len_dirty: bool,
}

impl Inode {
    fn touch(&mut self, from: usize, to: usize) {
        if to > from {
            for s in from / SECTOR..=(to - 1) / SECTOR {
                self.dirty.insert(s);
            }
        }
    }
}

#[derive(Debug, Default)]
struct SimState {
    inodes: HashMap<u64, Inode>,
    live: BTreeMap<String, u64>,
    durable_ns: BTreeMap<String, u64>,
    calls: HashMap<Op, u64>,
    total: u64,
    fail: Option<(Op, u64)>,
    fired: Option<Op>,
    crash_at: Option<u64>,
    keep_unsynced: Option<u64>,
    image: Option<Vec<(String, Vec<u8>)>>,
    trash: u64,
}

#[derive(Debug)]
struct SimIo {
    dir: PathBuf,
    trash: PathBuf,
    st: Mutex<SimState>,
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_owned()
}

fn ino(f: &File) -> u64 {
    f.metadata().unwrap().ino()
}

fn eio() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EIO)
}

impl SimIo {
    fn new(dir: &Path, trash: &Path) -> SimIo {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all(trash).unwrap();
        SimIo {
            dir: dir.to_path_buf(),
            trash: trash.to_path_buf(),
            st: Mutex::new(SimState::default()),
        }
    }

    /// Counts the call; takes the crash image when the crash point is reached
    /// (before the call runs); true when this call must fail.
    fn enter(&self, st: &mut SimState, op: Op) -> bool {
        st.total += 1;
        if st.crash_at == Some(st.total) && st.image.is_none() {
            st.image = Some(Self::image(st));
        }
        let n = st.calls.entry(op).or_default();
        *n += 1;
        if st.fail == Some((op, *n)) {
            st.fired = Some(op);
            return true;
        }
        false
    }

    /// The power-loss image: synced contents under the synced namespace,
    /// plus (when `keep_unsynced`) a random subset of what was not synced.
    fn image(st: &SimState) -> Vec<(String, Vec<u8>)> {
        let mut rng = st.keep_unsynced.map(rand::rngs::StdRng::seed_from_u64);
        let mut names: BTreeMap<String, u64> = st.durable_ns.clone();
        if let Some(r) = rng.as_mut() {
            let all: BTreeSet<&String> = st.live.keys().chain(st.durable_ns.keys()).collect();
            for n in all {
                if st.live.get(n) != st.durable_ns.get(n) && r.gen_bool(0.5) {
                    match st.live.get(n) {
                        Some(&i) => names.insert(n.clone(), i),
                        None => names.remove(n),
                    };
                }
            }
        }
        names
            .into_iter()
            .map(|(n, i)| {
                let node = &st.inodes[&i];
                let mut bytes = node.durable.clone();
                if let Some(r) = rng.as_mut() {
                    if node.len_dirty && r.gen_bool(0.5) {
                        bytes.resize(node.current.len(), 0);
                    }
                    for &s in &node.dirty {
                        let (a, b) = (s * SECTOR, ((s + 1) * SECTOR).min(node.current.len()));
                        if a < b && r.gen_bool(0.5) {
                            if bytes.len() < b {
                                bytes.resize(b, 0);
                            }
                            bytes[a..b].copy_from_slice(&node.current[a..b]);
                        }
                    }
                }
                (n, bytes)
            })
            .collect()
    }

    fn take_image(&self) -> Vec<(String, Vec<u8>)> {
        let mut st = self.st.lock().unwrap();
        match st.image.take() {
            Some(i) => i,
            None => Self::image(&st),
        }
    }

    fn crashed(&self) -> bool {
        self.st.lock().unwrap().image.is_some()
    }

    fn fired(&self) -> Option<Op> {
        self.st.lock().unwrap().fired
    }
}

impl ArenaIo for SimIo {
    fn open(&self, path: &Path, create: bool, truncate: bool) -> std::io::Result<File> {
        let mut st = self.st.lock().unwrap();
        if self.enter(&mut st, Op::Open) {
            return Err(eio());
        }
        assert_eq!(
            path.parent().unwrap(),
            self.dir,
            "arena files live in its directory"
        );
        let existed = path.exists();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(truncate)
            .open(path)?;
        let i = ino(&f);
        let name = name_of(path);
        if !existed {
            st.inodes.insert(i, Inode::default());
            st.live.insert(name, i);
        } else if let std::collections::hash_map::Entry::Vacant(e) = st.inodes.entry(i) {
            // A file from before this simulation (a recovered image): durable as is.
            let content = if truncate {
                Vec::new()
            } else {
                std::fs::read(path)?
            };
            e.insert(Inode {
                current: content.clone(),
                durable: content,
                ..Default::default()
            });
            st.live.insert(name.clone(), i);
            st.durable_ns.insert(name, i);
        } else if truncate {
            let node = st.inodes.get_mut(&i).unwrap();
            node.current.clear();
            node.len_dirty = true;
        }
        Ok(f)
    }

    fn write_at(&self, file: &File, bufs: &[&[u8]], offset: u64) -> std::io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let fail = self.enter(&mut st, Op::Write);
        let mut data: Vec<u8> = bufs.concat();
        if fail {
            data.truncate(data.len() / 2); // a short write, then the error
        }
        write_all_at(file, &[&data], offset)?;
        let node = st
            .inodes
            .get_mut(&ino(file))
            .expect("opened through the sim");
        let (a, b) = (offset as usize, offset as usize + data.len());
        if node.current.len() < b {
            node.current.resize(b, 0);
            node.len_dirty = true;
        }
        node.current[a..b].copy_from_slice(&data);
        node.touch(a, b);
        if fail {
            return Err(eio());
        }
        Ok(())
    }

    fn sync(&self, file: &File) -> std::io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let fail = self.enter(&mut st, Op::Sync);
        let node = st
            .inodes
            .get_mut(&ino(file))
            .expect("opened through the sim");
        if fail {
            // Linux: the dirty pages are marked clean (dropped), the error is
            // reported once; a later fsync will not write them.
            node.dirty.clear();
            node.len_dirty = false;
            return Err(eio());
        }
        node.durable.resize(node.current.len(), 0);
        let dirty = std::mem::take(&mut node.dirty);
        for s in dirty {
            let (a, b) = (s * SECTOR, ((s + 1) * SECTOR).min(node.current.len()));
            if a < b {
                let src = node.current[a..b].to_vec();
                node.durable[a..b].copy_from_slice(&src);
            }
        }
        node.len_dirty = false;
        Ok(())
    }

    fn set_len(&self, file: &File, len: u64) -> std::io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.enter(&mut st, Op::SetLen) {
            return Err(eio());
        }
        file.set_len(len)?;
        let node = st
            .inodes
            .get_mut(&ino(file))
            .expect("opened through the sim");
        let old = node.current.len();
        node.current.resize(len as usize, 0);
        node.len_dirty = true;
        node.touch(old.min(len as usize), old.max(len as usize));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.enter(&mut st, Op::Rename) {
            return Err(eio());
        }
        std::fs::rename(from, to)?;
        let i = st
            .live
            .remove(&name_of(from))
            .expect("renamed file is known");
        st.live.insert(name_of(to), i);
        Ok(())
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.enter(&mut st, Op::Remove) {
            return Err(eio());
        }
        // Move aside instead of unlinking, so inode numbers are never reused.
        st.trash += 1;
        std::fs::rename(path, self.trash.join(st.trash.to_string()))?;
        st.live.remove(&name_of(path));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.enter(&mut st, Op::SyncDir) {
            return Err(eio());
        }
        if dir == self.dir {
            st.durable_ns = st.live.clone();
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, usize, u8),
    PutMany(Vec<(u8, usize, u8)>),
    Delete(u8),
    Flush,
    Checkpoint,
    Compact,
}

const SIZES: [usize; 6] = [0, 3, 16, 100, 700, 5000];
const KEYS: u8 = 5;

fn value(size: usize, tag: u8) -> Vec<u8> {
    (0..size).map(|i| tag.wrapping_add(i as u8)).collect()
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    let put = (0..KEYS, 0..SIZES.len(), any::<u8>());
    prop_oneof![
        6 => put.clone().prop_map(|(k, s, t)| Step::Put(k, s, t)),
        2 => proptest::collection::vec(put, 1..4).prop_map(Step::PutMany),
        2 => (0..KEYS).prop_map(Step::Delete),
        1 => Just(Step::Flush),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Compact),
    ]
}

fn fault() -> impl Strategy<Value = Option<(Op, u64)>> {
    let op = prop_oneof![
        Just(Op::Open),
        Just(Op::Write),
        Just(Op::Sync),
        Just(Op::SetLen),
        Just(Op::Rename),
        Just(Op::Remove),
        Just(Op::SyncDir),
    ];
    prop_oneof![1 => Just(None), 3 => (op, 1u64..30).prop_map(Some)]
}

type State = BTreeMap<Vec<u8>, Vec<u8>>;
/// One write call: key -> new value (None: delete).
type Write = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn apply(state: &mut State, w: &[(Vec<u8>, Option<Vec<u8>>)]) {
    for (k, v) in w {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
}

fn read_all(a: &BlobArena) -> State {
    let mut out = State::new();
    for k in 0..KEYS {
        let k = key(k);
        if let Some(v) = a.get(&k).expect("no read error on a recovered arena") {
            out.insert(k, v.to_vec());
        }
    }
    out
}

static CASE: AtomicU64 = AtomicU64::new(0);

#[allow(clippy::too_many_arguments)]
fn run_case(
    steps: Vec<Step>,
    mode: SyncMode,
    inline: bool,
    crash_at: Option<u64>,
    fault: Option<(Op, u64)>,
    keep_unsynced: Option<u64>,
) -> Result<(), TestCaseError> {
    let root = std::env::temp_dir().join(format!(
        "sc-crash-model-{}-{}",
        std::process::id(),
        CASE.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("arena");
    let sim = Arc::new(SimIo::new(&dir, &root.join("trash")));
    {
        let mut st = sim.st.lock().unwrap();
        st.fail = fault;
        st.crash_at = crash_at;
        st.keep_unsynced = keep_unsynced;
    }
    let opts = ArenaOptions {
        sync: mode,
        batch_interval: Duration::from_secs(3600), // no background syncs: deterministic
        batch_bytes: 6000,
        checkpoint_bytes: 1500,
        auto_compact: true,
        compact_min_dead_bytes: 4000,
        compact_dead_ratio: 0.5,
        inline_max: if inline { 16 << 10 } else { 0 },
        io: sim.clone(),
        ..Default::default()
    };
    // Writes attempted (each one batch of key -> value/None), in order.
    let mut attempted: Vec<Write> = Vec::new();
    let mut floor = 0usize; // attempted writes the crash image must contain
    let mut live = State::new(); // what the running arena must show
    let arena = BlobArena::open(&dir, opts.clone());
    let arena = match arena {
        Ok(a) => Some(a),
        Err(_) => {
            prop_assert!(sim.fired().is_some(), "open failed without a fault");
            None
        }
    };
    if let Some(a) = &arena {
        let mut poisoned_seen = false;
        for s in steps.iter().chain(std::iter::once(&Step::Flush)) {
            let fired_before = sim.fired();
            let write: Option<Write> = match s {
                Step::Put(k, sz, t) => Some(vec![(key(*k), Some(value(SIZES[*sz], *t)))]),
                Step::PutMany(items) => Some(
                    items
                        .iter()
                        .map(|(k, sz, t)| (key(*k), Some(value(SIZES[*sz], *t))))
                        .collect(),
                ),
                Step::Delete(k) if live.contains_key(&key(*k)) => Some(vec![(key(*k), None)]),
                _ => None,
            };
            let res: Result<(), slabcache_core::Error> = match s {
                Step::Put(..) | Step::PutMany(..) => {
                    let w = write.as_ref().unwrap();
                    let ks: Vec<&[u8]> = w.iter().map(|(k, _)| &k[..]).collect();
                    let vs: Vec<&[u8]> = w.iter().map(|(_, v)| &v.as_ref().unwrap()[..]).collect();
                    a.put_many(&ks, &vs)
                }
                Step::Delete(k) => a.delete(&key(*k)).map(|present| {
                    assert_eq!(present, write.is_some());
                }),
                Step::Flush => a.flush(),
                Step::Checkpoint => a.checkpoint(),
                Step::Compact => a.compact().map(|_| ()),
            };
            let crashed = sim.crashed();
            let fired_now = fired_before.is_none() && sim.fired().is_some();
            if poisoned_seen && (write.is_some() || matches!(s, Step::Checkpoint | Step::Compact)) {
                prop_assert!(res.is_err(), "a poisoned arena accepted {s:?}");
            }
            if fired_now && sim.fired() != Some(Op::Remove) {
                prop_assert!(
                    res.is_err(),
                    "{s:?} hit a {:?} fault and succeeded",
                    sim.fired()
                );
            }
            if fired_now && matches!(sim.fired(), Some(Op::Sync | Op::SyncDir | Op::Rename)) {
                prop_assert!(a.is_poisoned(), "a failed durability step did not poison");
            }
            match (&res, write) {
                (Ok(()), Some(w)) => {
                    apply(&mut live, &w);
                    attempted.push(w);
                    if mode == SyncMode::Always && !crashed {
                        floor = attempted.len();
                    }
                }
                (Err(_), Some(w)) => {
                    // It may have reached the WAL only if the arena stopped
                    // there (a write error that was rolled back left nothing,
                    // a poisoned arena refuses before writing).
                    if a.is_poisoned() && !poisoned_seen {
                        attempted.push(w);
                    }
                }
                (Ok(()), None) => {
                    if !crashed && matches!(s, Step::Flush | Step::Checkpoint | Step::Compact) {
                        floor = attempted.len();
                    }
                }
                (Err(_), None) => {}
            }
            poisoned_seen |= a.is_poisoned();
            // Live: the arena shows exactly the acknowledged writes.
            prop_assert_eq!(read_all(a), live.clone(), "live state after {:?}", s);
        }
        let was_poisoned = a.is_poisoned();
        let closed = a.close();
        if closed.is_ok() && !was_poisoned && !sim.crashed() {
            floor = attempted.len();
        }
    }
    drop(arena);
    // Power loss: materialise the image and recover it with plain I/O.
    let image = sim.take_image();
    let rec = root.join("recovered");
    std::fs::create_dir_all(&rec).unwrap();
    for (n, b) in &image {
        std::fs::write(rec.join(n), b).unwrap();
    }
    let reopen = ArenaOptions {
        sync: mode,
        ..Default::default()
    };
    if image.iter().any(|(n, _)| n == "checkpoint") {
        let got = {
            let a = BlobArena::open(&rec, reopen.clone());
            let a = match a {
                Ok(a) => a,
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "recovery failed on a crash image: {e}"
                    )))
                }
            };
            a.verify()
                .map_err(|e| TestCaseError::fail(format!("verify after recovery: {e}")))?;
            read_all(&a)
        };
        let mut state = State::new();
        let mut ok = floor == 0 && got == state;
        for (i, w) in attempted.iter().enumerate() {
            apply(&mut state, w);
            if i + 1 >= floor && got == state {
                ok = true;
            }
        }
        prop_assert!(
            ok,
            "recovered {:?} is no prefix >= {} of {} attempted writes",
            got,
            floor,
            attempted.len()
        );
        // Recovery is idempotent.
        let again = read_all(&BlobArena::open(&rec, reopen).unwrap());
        prop_assert_eq!(again, got);
    } else {
        // No checkpoint survived: the arena was never fully created, so
        // nothing can have been acknowledged durably.
        prop_assert_eq!(floor, 0, "the image lost the checkpoint");
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn mode() -> impl Strategy<Value = SyncMode> {
    prop_oneof![
        Just(SyncMode::Always),
        Just(SyncMode::Batch),
        Just(SyncMode::None)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("ARENA_CRASH_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovered_state_keeps_each_modes_promise(
        steps in proptest::collection::vec(step(), 1..30),
        mode in mode(),
        inline in any::<bool>(),
        crash_at in prop_oneof![1 => Just(None), 3 => (1u64..250).prop_map(Some)],
        fault in fault(),
        keep_unsynced in prop_oneof![Just(None), any::<u64>().prop_map(Some)],
    ) {
        run_case(steps, mode, inline, crash_at, fault, keep_unsynced)?;
    }
}

/// Case 1 of issue 9: a checkpoint whose directory sync fails must not let
/// later writes go to the segment the new checkpoint abandoned.
#[test]
fn failed_checkpoint_dir_sync_loses_nothing() {
    for mode in [SyncMode::Always, SyncMode::Batch, SyncMode::None] {
        // The fourth directory sync: creation (generation, checkpoint, segment), then the checkpoint's.
        let steps = vec![
            Step::Put(0, 3, 1),
            Step::Put(1, 3, 2),
            Step::Checkpoint,
            Step::Put(2, 3, 3),
            Step::Put(3, 3, 4),
            Step::Flush,
        ];
        run_case(steps, mode, false, None, Some((Op::SyncDir, 4)), None).unwrap();
    }
}

/// fsyncgate: after a failed WAL sync nothing later is acknowledged, and a
/// write that raised is not visible.
#[test]
fn failed_sync_poisons_every_mode() {
    for mode in [SyncMode::Always, SyncMode::Batch, SyncMode::None] {
        for n in 1..8 {
            let steps = vec![
                Step::Put(0, 2, 1),
                Step::Flush,
                Step::Put(1, 3, 2),
                Step::Put(2, 4, 3),
                Step::Flush,
                Step::Checkpoint,
                Step::Put(3, 5, 4),
                Step::Compact,
                Step::Put(4, 1, 5),
            ];
            run_case(steps, mode, n % 2 == 0, None, Some((Op::Sync, n)), None).unwrap();
        }
    }
}
