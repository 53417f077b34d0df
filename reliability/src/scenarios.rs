//! Scripted workloads over every layer, each able to run on a fresh [`SimDisk`], log the
//! states its commits name, and recover whatever a disk image holds.

use std::collections::BTreeMap;
use std::io::Write;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::SimDisk;
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{
    BatchStorer, ObjectId, ObjectWrite, PRIME_OBJECT_ID, PrimeStorer, Result, SpaceAllocator,
    Store, StoreOptions, Storer,
};
use bob_treap::PersistentTreap;

use crate::bytes;

/// What a store or treap holds, as bytes: object id (little-endian) or key → contents.
pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// The states a workload's commits named, and how many of those commits returned `Ok`.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Each commit's state, in order, whether or not the commit returned.
    pub states: Vec<State>,
    /// Commits that returned `Ok`.
    pub acknowledged: usize,
}

impl Log {
    /// The states a recovered store may hold: the last acknowledged one, or the one whose
    /// commit was in flight.
    pub fn allowed(&self) -> Vec<State> {
        let last =
            self.acknowledged.checked_sub(1).map_or_else(State::new, |i| self.states[i].clone());
        let mut allowed = vec![last];
        if self.states.len() > self.acknowledged {
            allowed.push(self.states[self.acknowledged].clone());
        }
        allowed
    }

    /// Whether `state`, not an allowed one, is an earlier state (the empty store or an older
    /// acknowledged commit): an acknowledged commit was lost.
    pub fn is_lost(&self, state: &State) -> bool {
        if self.allowed().contains(state) {
            return false;
        }
        (self.acknowledged > 0 && state.is_empty())
            || self.states[..self.acknowledged.saturating_sub(1)].contains(state)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every step returned `Ok`.
    Completed,
    /// A step failed; `latched` says whether the store then refused writes, as it must after
    /// a failed write, resize or sync, unless the failure was a clean refusal.
    Failed {
        /// The store refused a write after the failure.
        latched: bool,
        /// The failure was `Error::OutOfSpace`: a full disk refused to grow the file and
        /// nothing changed, so the store may stay usable (deletes must still commit).
        out_of_space: bool,
    },
}

/// What a recovery found.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The contents.
    pub state: State,
    /// `verify` (and the treap's `check`) found no problem.
    pub clean: bool,
    /// The generation of the commit the store opened (`Store::generation`).
    pub generation: u64,
}

/// How a recovery's error message starts when open refused the newest commit as damaged
/// (`Error::NewestCommitDamaged`): detected damage, not a failed crash recovery.
pub const NEWEST_DAMAGED: &str = "open refused the newest commit: ";

/// The message of a failed open, tagged with [`NEWEST_DAMAGED`] when the store refused a
/// damaged newest commit.
fn open_error(e: bob_store_core::Error) -> String {
    match e {
        e @ bob_store_core::Error::NewestCommitDamaged { .. } => format!("{NEWEST_DAMAGED}{e}"),
        e => format!("open: {e}"),
    }
}

/// A scripted workload.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Its name in reports.
    pub name: &'static str,
    /// Runs it on a fresh, empty disk, logging each commit's state.
    pub run: fn(&SimDisk, &mut Log) -> RunEnd,
    /// Opens the store on a disk and reads what it holds; `Err` if recovery failed.
    pub recover: fn(SimDisk) -> std::result::Result<Recovered, String>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).finish()
    }
}

/// Every scenario: six store scripts on both allocators, four treap scripts and one over the
/// concurrent store.
pub fn all() -> Vec<Scenario> {
    vec![
        store::<BasicAllocator, Basics>(
            "store/basic: create, rewrite, stream, delete, batch, compact",
        ),
        store::<OmniBlockAllocator, Basics>(
            "store/multi: create, rewrite, stream, delete, batch, compact",
        ),
        store::<BasicAllocator, Compaction>("store/basic: delete half, compact, refill"),
        store::<OmniBlockAllocator, Compaction>("store/multi: delete half, compact, refill"),
        store::<BasicAllocator, SizeClasses>("store/basic: sizes across classes, reuse"),
        store::<OmniBlockAllocator, SizeClasses>("store/multi: sizes across classes, reuse"),
        store::<BasicAllocator, Prime>("store/basic: prime object and roots"),
        store::<OmniBlockAllocator, Prime>("store/multi: prime object and roots"),
        store::<BasicAllocator, Batches>("store/basic: runs and batched writes into holes"),
        store::<OmniBlockAllocator, Batches>("store/multi: runs and batched writes"),
        store::<BasicAllocator, ManySmall>("store/basic: 300 buffered objects, one commit"),
        store::<OmniBlockAllocator, ManySmall>("store/multi: 300 buffered objects, one commit"),
        treap::<BasicAllocator, TreapPersist>("treap/basic: insert, delete, persist"),
        treap::<BasicAllocator, TreapBatch>("treap/basic: batch_persist"),
        treap::<OmniBlockAllocator, TreapBatch>("treap/multi: batch_persist"),
        treap::<BasicAllocator, TreapBudget>("treap/basic: memory budget, flush, reload"),
        Scenario {
            name: "concurrent: two writer threads, commits",
            run: concurrent_run,
            recover: recover_store::<BasicAllocator>,
        },
    ]
}

/// A journal of 4 pages per region, so the scenarios' commits checkpoint every few commits
/// and crash points cover checkpoints as well as journaled commits.
fn options() -> StoreOptions {
    StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() }
}

pub(crate) type Contents = BTreeMap<ObjectId, Vec<u8>>;

pub(crate) fn state_of(contents: &Contents) -> State {
    contents.iter().map(|(id, data)| (id.0.to_le_bytes().to_vec(), data.clone())).collect()
}

/// A scripted workload over a store (its objects, or a treap kept in it), logging the state
/// each commit names before making it.
pub trait Script {
    /// Runs it.
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()>;
}

fn commit<A: SpaceAllocator>(
    store: &mut Store<A, SimDisk>,
    log: &mut Log,
    model: &Contents,
) -> Result<()> {
    log.states.push(state_of(model));
    store.commit()?;
    log.acknowledged += 1;
    Ok(())
}

/// Compacts; compaction commits, so it logs a state like a commit.
fn compact<A: SpaceAllocator>(
    store: &mut Store<A, SimDisk>,
    log: &mut Log,
    model: &Contents,
) -> Result<()> {
    log.states.push(state_of(model));
    store.compact()?;
    log.acknowledged += 1;
    Ok(())
}

fn store<A: SpaceAllocator + 'static, S: Script + 'static>(name: &'static str) -> Scenario {
    Scenario { name, run: run_script::<A, S>, recover: recover_store::<A> }
}

fn latched<A: SpaceAllocator>(store: &mut Store<A, SimDisk>) -> bool {
    store.is_failed() && store.write_new_obj_from_bytes(b"x").is_err() && store.commit().is_err()
}

/// Whether `e` is a full disk's clean refusal (`Error::OutOfSpace`).
fn out_of_space(e: &bob_store_core::Error) -> bool {
    matches!(e, bob_store_core::Error::OutOfSpace { .. })
}

fn run_script<A: SpaceAllocator, S: Script>(disk: &SimDisk, log: &mut Log) -> RunEnd {
    let mut store = match Store::<A, SimDisk>::create_with(disk.clone(), options()) {
        Ok(store) => store,
        Err(_) => return RunEnd::Failed { latched: true, out_of_space: false },
    };
    match S::run(&mut store, log) {
        Ok(()) => RunEnd::Completed,
        Err(e) => RunEnd::Failed { out_of_space: out_of_space(&e), latched: latched(&mut store) },
    }
}

/// Opens a plain store and reads every object.
pub fn recover_store<A: SpaceAllocator>(disk: SimDisk) -> std::result::Result<Recovered, String> {
    let mut store = Store::<A, SimDisk>::open_with(disk, options()).map_err(open_error)?;
    // Everything a full open checks, as open would report it (open itself reads only the
    // header, the root and the journal).
    store.complete_open().map_err(open_error)?;
    let generation = store.generation();
    let mut contents = Contents::new();
    for id in store.ids().map_err(open_error)? {
        contents.insert(id, store.read_bytes_from_obj(id).map_err(|e| format!("read {id}: {e}"))?);
    }
    let clean = store.verify().map_err(|e| format!("verify: {e}"))?.is_clean();
    Ok(Recovered { state: state_of(&contents), clean, generation })
}

fn put<A: SpaceAllocator>(
    store: &mut Store<A, SimDisk>,
    model: &mut Contents,
    seed: u64,
    len: usize,
) -> Result<ObjectId> {
    let data = bytes(seed, len);
    let id = store.write_new_obj_from_bytes(&data)?;
    model.insert(id, data);
    Ok(id)
}

fn delete<A: SpaceAllocator>(
    store: &mut Store<A, SimDisk>,
    model: &mut Contents,
    id: ObjectId,
) -> Result<()> {
    store.delete_obj(id)?;
    model.remove(&id);
    Ok(())
}

/// Creates, rewrites (copy-on-write and in place), streams, deletes, batches and compacts.
pub struct Basics;

impl Script for Basics {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let mut model = Contents::new();
        let mut ids = Vec::new();
        for (i, len) in [0usize, 10, 100, 1000, 5000, 20_000].into_iter().enumerate() {
            ids.push(put(store, &mut model, i as u64, len)?);
        }
        commit(store, log, &model)?;
        let patch = bytes(99, 50);
        store.write_bytes_to_obj(ids[3], &patch)?;
        if let Some(object) = model.get_mut(&ids[3]) {
            object[..50].copy_from_slice(&patch);
        }
        delete(store, &mut model, ids[1])?;
        let (streamed, mut writer) = store.late_write_new_obj(3000)?;
        writer.write_all(&bytes(7, 3000)).map_err(bob_store_core::Error::from_io)?;
        writer.finish()?;
        model.insert(streamed, bytes(7, 3000));
        commit(store, log, &model)?;
        let run = store.allocate_run(4, 64)?;
        let data: Vec<Vec<u8>> = (0..4).map(|i| bytes(200 + i, 60)).collect();
        let batch: Vec<(ObjectId, &[u8])> =
            run.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
        store.write_batched_objs(&batch)?;
        model.extend(run.into_iter().zip(data));
        delete(store, &mut model, ids[0])?;
        commit(store, log, &model)?;
        compact(store, log, &model)
    }
}

/// Fills, deletes every other object, compacts, refills.
pub struct Compaction;

impl Script for Compaction {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let mut model = Contents::new();
        let mut ids = Vec::new();
        for i in 0..30u64 {
            ids.push(put(store, &mut model, 1000 + i, 100 + (i as usize * 397) % 3000)?);
        }
        commit(store, log, &model)?;
        for id in ids.iter().step_by(2) {
            delete(store, &mut model, *id)?;
        }
        commit(store, log, &model)?;
        compact(store, log, &model)?;
        for i in 0..10u64 {
            put(store, &mut model, 2000 + i, 700)?;
        }
        commit(store, log, &model)
    }
}

/// Objects of sizes across the size classes, deleted and replaced by the same sizes, then
/// rewritten.
pub struct SizeClasses;

impl Script for SizeClasses {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let sizes = [1usize, 7, 63, 64, 65, 500, 4095, 4096, 4097, 60_000];
        let mut model = Contents::new();
        let mut ids = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            ids.push(put(store, &mut model, 300 + i as u64, len)?);
        }
        commit(store, log, &model)?;
        for (i, &len) in sizes.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            delete(store, &mut model, ids[i])?;
            put(store, &mut model, 400 + i as u64, len)?;
        }
        commit(store, log, &model)?;
        for &id in ids.iter().skip(1).step_by(3) {
            let len = model[&id].len();
            let data = bytes(id.0 ^ 0xAB, len);
            store.write_bytes_to_obj(id, &data)?;
            model.insert(id, data);
        }
        commit(store, log, &model)
    }
}

/// The prime object as a root record, rewritten on every commit.
pub struct Prime;

impl Script for Prime {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let mut model = Contents::new();
        store.prime_object(16)?;
        model.insert(PRIME_OBJECT_ID, vec![0; 16]);
        for round in 0..4u64 {
            let id = put(store, &mut model, 500 + round, 200 * round as usize + 1)?;
            let mut record = [0u8; 16];
            record[..8].copy_from_slice(&round.to_le_bytes());
            record[8..].copy_from_slice(&id.0.to_le_bytes());
            store.write_bytes_to_obj(PRIME_OBJECT_ID, &record)?;
            model.insert(PRIME_OBJECT_ID, record.to_vec());
            commit(store, log, &model)?;
        }
        Ok(())
    }
}

/// Runs from free space and batched writes, with deletes between that leave holes.
pub struct Batches;

impl Script for Batches {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let mut model = Contents::new();
        for round in 0..3u64 {
            let runs = store.allocate_runs(12, 90, 2)?;
            for run in runs {
                let data: Vec<Vec<u8>> =
                    run.iter().map(|id| bytes(id.0 ^ round << 32, 80)).collect();
                let batch: Vec<(ObjectId, &[u8])> =
                    run.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
                store.write_batched_objs(&batch)?;
                model.extend(run.into_iter().zip(data));
            }
            commit(store, log, &model)?;
            let doomed: Vec<ObjectId> = model.keys().copied().step_by(3).collect();
            for id in doomed {
                delete(store, &mut model, id)?;
            }
            commit(store, log, &model)?;
        }
        Ok(())
    }
}

/// Many small objects staged in the write buffer, one commit, then deletes.
pub struct ManySmall;

impl Script for ManySmall {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let mut model = Contents::new();
        let mut ids = Vec::new();
        for i in 0..300u64 {
            ids.push(put(store, &mut model, 600 + i, 1 + (i as usize * 13) % 200)?);
        }
        commit(store, log, &model)?;
        for id in ids.iter().step_by(3) {
            delete(store, &mut model, *id)?;
        }
        commit(store, log, &model)
    }
}

type Tree = PersistentTreap<u64, Vec<u8>>;

/// The scripts' treap priority seed: fixed, so that a script makes the same store calls on
/// every run and a crash point names the same call.
pub const TREAP_SEED: u64 = 0x7472_6561_7073;

fn tree_state(model: &BTreeMap<u64, Vec<u8>>) -> State {
    model.iter().map(|(k, v)| (k.to_be_bytes().to_vec(), v.clone())).collect()
}

/// Persists (per node or batched), records the root in the prime object and commits.
fn save<A: SpaceAllocator>(
    store: &mut Store<A, SimDisk>,
    tree: &mut Tree,
    model: &BTreeMap<u64, Vec<u8>>,
    log: &mut Log,
    batched: bool,
) -> Result<()> {
    // The root is published before the replaced nodes are deleted.
    let publish =
        |store: &mut Store<A, SimDisk>, root: Option<ObjectId>| -> bob_treap::Result<()> {
            store.prime_object(16)?;
            let mut record = [0u8; 16];
            if let Some(root) = root {
                record[..8].copy_from_slice(&1u64.to_le_bytes());
                record[8..].copy_from_slice(&root.0.to_le_bytes());
            }
            Ok(store.write_bytes_to_obj(PRIME_OBJECT_ID, &record)?)
        };
    if batched {
        tree.batch_persist_with(store, publish).map_err(treap_error)?;
    } else {
        tree.persist_with(store, publish).map_err(treap_error)?;
    }
    log.states.push(tree_state(model));
    store.commit()?;
    log.acknowledged += 1;
    Ok(())
}

fn treap_error(e: bob_treap::Error) -> bob_store_core::Error {
    match e {
        bob_treap::Error::Store(e) => e,
        other => bob_store_core::Error::InvalidArgument(format!("treap: {other}")),
    }
}

fn treap<A: SpaceAllocator + 'static, S: Script + 'static>(name: &'static str) -> Scenario {
    Scenario { name, run: run_script::<A, S>, recover: recover_treap::<A> }
}

/// Opens the store, loads the treap whose root the prime object records, and reads it all.
pub fn recover_treap<A: SpaceAllocator>(disk: SimDisk) -> std::result::Result<Recovered, String> {
    let store = Store::<A, SimDisk>::open_with(disk, options()).map_err(open_error)?;
    let generation = store.generation();
    let clean = store.verify().map_err(|e| format!("verify: {e}"))?.is_clean();
    let record = match store.read_bytes_from_obj(PRIME_OBJECT_ID) {
        Ok(record) => record,
        // No prime object: nothing was ever saved.
        Err(bob_store_core::Error::NotFound(_)) => {
            return Ok(Recovered { state: State::new(), clean, generation });
        }
        Err(e) => return Err(format!("prime object: {e}")),
    };
    if record.len() < 16 || record[..8] == [0; 8] {
        return Ok(Recovered { state: State::new(), clean, generation });
    }
    let root = ObjectId(u64::from_le_bytes(record[8..16].try_into().map_err(|_| "prime record")?));
    let mut tree = Tree::load(&store, root).map_err(|e| format!("load: {e}"))?;
    let entries = tree.to_vec(&store).map_err(|e| format!("read: {e}"))?;
    let checked = tree.check(&store).is_ok();
    let state = entries.into_iter().map(|(k, v)| (k.to_be_bytes().to_vec(), v)).collect();
    Ok(Recovered { state, clean: clean && checked, generation })
}

fn treap_value(k: u64, round: u64) -> Vec<u8> {
    bytes(k ^ round << 40, (k as usize * 7 + round as usize) % 40)
}

/// Inserts, deletes and overwrites with per-node `persist`.
pub struct TreapPersist;

impl Script for TreapPersist {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        treap_rounds(store, log, false)
    }
}

/// The same with `batch_persist`.
pub struct TreapBatch;

impl Script for TreapBatch {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        treap_rounds(store, log, true)
    }
}

fn treap_rounds<A: SpaceAllocator>(
    store: &mut Store<A, SimDisk>,
    log: &mut Log,
    batched: bool,
) -> Result<()> {
    let mut tree = Tree::with_seed(TREAP_SEED);
    let mut model = BTreeMap::new();
    for round in 0..3u64 {
        for k in (round * 7..round * 7 + 40).map(|k| k * 13 % 97) {
            tree.insert(store, k, treap_value(k, round)).map_err(treap_error)?;
            model.insert(k, treap_value(k, round));
        }
        for k in (0..97).step_by(5 + round as usize) {
            tree.delete(store, &k).map_err(treap_error)?;
            model.remove(&k);
        }
        save(store, &mut tree, &model, log, batched)?;
    }
    Ok(())
}

/// A tree kept within a small memory budget (flushes load nodes back from the store), saved
/// and changed again.
pub struct TreapBudget;

impl Script for TreapBudget {
    fn run<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
        let mut tree = Tree::with_seed(TREAP_SEED);
        let mut model = BTreeMap::new();
        for k in 0..120u64 {
            tree.insert(store, k, treap_value(k, 0)).map_err(treap_error)?;
            model.insert(k, treap_value(k, 0));
        }
        save(store, &mut tree, &model, log, true)?;
        tree.set_memory_budget(Some(16));
        for k in (0..120u64).step_by(7) {
            tree.insert(store, k, treap_value(k, 1)).map_err(treap_error)?;
            model.insert(k, treap_value(k, 1));
        }
        save(store, &mut tree, &model, log, true)?;
        for k in (0..120u64).step_by(4) {
            tree.delete(store, &k).map_err(treap_error)?;
            model.remove(&k);
        }
        save(store, &mut tree, &model, log, false)
    }
}

/// Objects a thread wrote.
type Written = Vec<(ObjectId, Vec<u8>)>;
/// Objects a thread changed: new contents, or `None` if deleted.
type Changed = Vec<(ObjectId, Option<Vec<u8>>)>;

/// Two threads write through a `ConcurrentStore`, then one commits; then deletes and
/// rewrites from both threads, and a commit.
fn concurrent_run(disk: &SimDisk, log: &mut Log) -> RunEnd {
    let Ok(base) = Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), options()) else {
        return RunEnd::Failed { latched: true, out_of_space: false };
    };
    let store = ConcurrentStore::new(base, 2);
    let result = (|| -> Result<()> {
        let mut model = Contents::new();
        let written: Vec<Result<Written>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    let store = &store;
                    scope.spawn(move || {
                        (0..6u64)
                            .map(|i| {
                                let data = bytes(t * 100 + i, (i as usize * 211) % 1500);
                                Ok((store.write_new_obj_from_bytes(&data)?, data))
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Ok(Vec::new()))).collect()
        });
        for part in written {
            model.extend(part?);
        }
        log.states.push(state_of(&model));
        store.commit()?;
        log.acknowledged += 1;
        let ids: Vec<ObjectId> = model.keys().copied().collect();
        let changes: Vec<Result<Changed>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .chunks(ids.len().div_ceil(2).max(1))
                .map(|chunk| {
                    let store = &store;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(i, &id)| {
                                if i % 2 == 0 {
                                    store.delete_obj(id)?;
                                    Ok((id, None))
                                } else {
                                    let mut expected = store.read_bytes_from_obj(id)?;
                                    let n = expected.len().min(300);
                                    let patch = bytes(id.0 ^ 0xC0, n);
                                    store.write_bytes_to_obj(id, &patch)?;
                                    expected[..n].copy_from_slice(&patch);
                                    Ok((id, Some(expected)))
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Ok(Vec::new()))).collect()
        });
        for part in changes {
            for (id, after) in part? {
                match after {
                    Some(data) => model.insert(id, data),
                    None => model.remove(&id),
                };
            }
        }
        log.states.push(state_of(&model));
        store.commit()?;
        log.acknowledged += 1;
        Ok(())
    })();
    match result {
        Ok(()) => RunEnd::Completed,
        Err(e) => RunEnd::Failed {
            out_of_space: out_of_space(&e),
            latched: store.write_new_obj_from_bytes(b"x").is_err(),
        },
    }
}
