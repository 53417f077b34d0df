//! Campaign 2: random operation sequences with a random crash point and tear, and a leak
//! check.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{CrashMode, FaultPlan, SimDisk};
use bob_store_core::{ObjectId, SpaceAllocator, Store, StoreOptions, Storer};

use super::{Budget, Tally, syncs};
use crate::bytes;
use crate::report::Figures;
use crate::scenarios::{self, Log, RunEnd, Scenario, State};

/// One step of a random workload.
#[derive(Debug, Clone, Copy)]
pub(super) enum RandomOp {
    /// A new object of (seed, length).
    Write(u64, usize),
    /// A rewrite of the head of the n-th object (modulo the count) with bytes of a seed.
    Overwrite(usize, u64),
    /// A delete of the n-th object (modulo the count).
    Delete(usize),
    /// A commit, logged.
    Commit,
    /// Drop the store and open it again.
    Reopen,
}

/// A random workload of 10 to 50 steps, objects of 0 B to 1 MiB.
pub(super) fn random_ops(rng: &mut fastrand::Rng) -> Vec<RandomOp> {
    let size = |rng: &mut fastrand::Rng| match rng.u8(0..20) {
        0 => rng.usize(64 << 10..=1 << 20),
        1..=5 => rng.usize(4096..64 << 10),
        6 => 0,
        _ => rng.usize(1..4096),
    };
    (0..rng.usize(10..50))
        .map(|_| match rng.u8(0..20) {
            0..=7 => RandomOp::Write(rng.u64(..), size(rng)),
            8..=10 => RandomOp::Overwrite(rng.usize(..), rng.u64(..)),
            11..=13 => RandomOp::Delete(rng.usize(..)),
            14..=18 => RandomOp::Commit,
            _ => RandomOp::Reopen,
        })
        .collect()
}

fn random_run<A: SpaceAllocator>(
    disk: &SimDisk,
    ops: &[RandomOp],
    log: &mut Log,
) -> bob_store_core::Result<()> {
    let store = Store::<A, SimDisk>::create_with(disk.clone(), StoreOptions::default())?;
    run_ops(store, disk, ops, log, &mut Vec::new())
}

/// The state of a model of a store's objects.
pub(super) fn state_of(model: &BTreeMap<ObjectId, Vec<u8>>) -> State {
    model.iter().map(|(id, d)| (id.0.to_le_bytes().to_vec(), d.clone())).collect()
}

/// Runs `ops` on `store` (whose objects are read first, as the model to start from), logging
/// each commit's state in `log` and, in `commit_ends`, the counts of operations and of syncs
/// on `disk` after each commit returned (its last sync, the header's barrier, is the one
/// before the sync count).
pub(super) fn run_ops<A: SpaceAllocator>(
    mut store: Store<A, SimDisk>,
    disk: &SimDisk,
    ops: &[RandomOp],
    log: &mut Log,
    commit_ends: &mut Vec<(u64, u64)>,
) -> bob_store_core::Result<()> {
    let options = StoreOptions::default();
    let mut model: BTreeMap<ObjectId, Vec<u8>> = BTreeMap::new();
    for id in store.ids()? {
        model.insert(id, store.read_bytes_from_obj(id)?);
    }
    let mut committed = model.clone();
    for op in ops {
        match *op {
            RandomOp::Write(seed, len) => {
                let data = bytes(seed, len);
                model.insert(store.write_new_obj_from_bytes(&data)?, data);
            }
            RandomOp::Overwrite(pick, seed) if !model.is_empty() => {
                let id = *model.keys().nth(pick % model.len()).expect("non-empty");
                let object = model.get_mut(&id).expect("present");
                let patch = bytes(seed, object.len().min(5000));
                store.write_bytes_to_obj(id, &patch)?;
                object[..patch.len()].copy_from_slice(&patch);
            }
            RandomOp::Delete(pick) if !model.is_empty() => {
                let id = *model.keys().nth(pick % model.len()).expect("non-empty");
                store.delete_obj(id)?;
                model.remove(&id);
            }
            RandomOp::Commit => {
                log.states.push(state_of(&model));
                store.commit()?;
                log.acknowledged += 1;
                commit_ends.push((disk.ops(), syncs(disk)));
                committed = model.clone();
            }
            RandomOp::Reopen => {
                drop(store);
                store = Store::<A, SimDisk>::open_with(disk.clone(), options)?;
                model = committed.clone();
            }
            _ => {}
        }
    }
    Ok(())
}

/// After recovery: deleting everything and compacting leaves a file no larger than an empty
/// store's.
fn leaks<A: SpaceAllocator>(image: Vec<u8>) -> Result<u64, String> {
    let empty_len = {
        let disk = SimDisk::new();
        let store = Store::<A, SimDisk>::create_with(disk.clone(), StoreOptions::default())
            .map_err(|e| e.to_string())?;
        store.close().map_err(|e| e.to_string())?;
        disk.live_image().len()
    };
    let disk = SimDisk::from_image(image);
    let Ok(mut store) = Store::<A, SimDisk>::open_with(disk.clone(), StoreOptions::default())
    else {
        return Ok(0); // no store yet: nothing to leak
    };
    for id in store.ids().map_err(|e| e.to_string())? {
        store.delete_obj(id).map_err(|e| e.to_string())?;
    }
    store.commit().map_err(|e| e.to_string())?;
    store.compact().map_err(|e| e.to_string())?;
    store.commit().map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    Ok(disk.live_image().len().saturating_sub(empty_len) as u64)
}

/// Leak-check results: rounds whose emptied file was larger than an empty store's, and the
/// largest excess in bytes.
#[derive(Default)]
struct Leaks {
    rounds: u64,
    largest: u64,
}

fn random_round<A: SpaceAllocator>(
    rng: &mut fastrand::Rng,
    tally: &mut Tally,
    leaked: &mut Leaks,
    scenario: &Scenario,
) {
    let ops = random_ops(rng);
    let dry = SimDisk::new();
    let _ = random_run::<A>(&dry, &ops, &mut Log::default());
    let k = rng.u64(0..=dry.ops());
    let disk = SimDisk::new();
    disk.set_fault(FaultPlan::crash_at(k));
    let mut log = Log::default();
    if catch_unwind(AssertUnwindSafe(|| random_run::<A>(&disk, &ops, &mut log))).is_err() {
        tally.panics += 1;
        return;
    }
    let image = if rng.bool() {
        disk.crash_image(CrashMode::ProcessCrash, 0)
    } else {
        disk.crash_image(CrashMode::PowerLoss, rng.u64(..))
    };
    tally.check(scenario, image.clone(), &log);
    match catch_unwind(AssertUnwindSafe(|| leaks::<A>(image))) {
        Ok(Ok(0)) => {}
        Ok(Ok(excess)) => {
            leaked.rounds += 1;
            leaked.largest = leaked.largest.max(excess);
        }
        Ok(Err(_)) => tally.recovery_failed += 1,
        Err(_) => tally.panics += 1,
    }
}

/// Campaign 2: Random operation sequences with a random crash point and tear, and a leak check.
pub fn random_crashes(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("2. random crash fuzzing");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let (mut basic_leaks, mut multi_leaks) = (Leaks::default(), Leaks::default());
    let base = Scenario {
        name: "random/basic",
        run: |_, _| RunEnd::Completed,
        recover: scenarios::recover_store::<BasicAllocator>,
    };
    let multi = Scenario {
        name: "random/multi",
        run: |_, _| RunEnd::Completed,
        recover: scenarios::recover_store::<OmniBlockAllocator>,
    };
    for round in 0..budget.random_rounds {
        if round % 2 == 0 {
            random_round::<BasicAllocator>(&mut rng, &mut tally, &mut basic_leaks, &base);
        } else {
            random_round::<OmniBlockAllocator>(&mut rng, &mut tally, &mut multi_leaks, &multi);
        }
    }
    figures.info("rounds (sizes 0 B-1 MiB, deletes, reuse, reopen)", budget.random_rounds);
    tally.into_figures(&mut figures);
    figures.zero(
        "BaseStore leaks (emptied and compacted file larger than an empty store)",
        basic_leaks.rounds,
    );
    figures.info(
        "MultiStore rounds whose emptied, compacted file stays larger (known limit)",
        multi_leaks.rounds,
    );
    figures.info("  largest excess in bytes", multi_leaks.largest);
    figures.note("MultiStore: size-class blocks near the end of the file, holding the metadata, stop it shrinking to an empty store's size; the excess is free space inside the file, derived again from the live extents at every open, not leaked");
    figures
}
