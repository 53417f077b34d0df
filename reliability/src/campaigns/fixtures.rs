//! The fixtures of the bit-flip campaign: small workloads of each format, run to a clean
//! close or to a power-loss crash, with the state every commit they made names.

use std::collections::BTreeMap;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::{
    ObjectId, PRIME_OBJECT_ID, PrimeStorer, SpaceAllocator, Store, StoreOptions, Storer,
};
use bob_treap::PersistentTreap;

use super::CrashPoint;
use crate::bytes;
use crate::scenarios::{self, Recovered, State};

/// What a workload's commits named: the state of each generation (the commit in flight at a
/// crash included), and the operation count at which each commit returned.
#[derive(Debug, Default, Clone)]
pub(super) struct Generations {
    /// Generation → the state its commit names.
    pub(super) states: BTreeMap<u64, State>,
    /// The count of syncs on the disk right after each commit returned `Ok` (the commit's
    /// last sync, its header's barrier, is the one before).
    pub(super) commit_syncs: Vec<u64>,
    /// The count of all operations at the end of the workload.
    pub(super) total_ops: u64,
    /// Whether `create` returned: the store's first commit is durable.
    pub(super) created: bool,
}

impl Generations {
    /// Logs the state the next commit of `store` names, before it is made.
    fn before_commit<A: SpaceAllocator>(&mut self, store: &Store<A, SimDisk>, state: State) {
        self.states.insert(store.generation() + 1, state);
    }
}

/// A workload: runs on a fresh disk, logging each commit; `Err` at the first failure (a
/// crash point stops it there).
pub(super) type Workload = fn(&SimDisk, &mut Generations) -> Result<(), String>;

/// A fixture kind: its name, its workload, and how to read what an image holds.
#[derive(Clone, Copy)]
pub(super) struct Kind {
    /// Its name in reports.
    pub(super) name: &'static str,
    workload: Workload,
    /// Opens an image and reads all of it.
    pub(super) recover: fn(SimDisk) -> Result<Recovered, String>,
}

/// The fixture kinds: the object store with each allocator, and a treap.
pub(super) fn kinds() -> [Kind; 3] {
    [
        Kind {
            name: "store/basic",
            workload: store_workload::<BasicAllocator>,
            recover: scenarios::recover_store::<BasicAllocator>,
        },
        Kind {
            name: "store/multi",
            workload: store_workload::<OmniBlockAllocator>,
            recover: scenarios::recover_store::<OmniBlockAllocator>,
        },
        Kind {
            name: "treap",
            workload: treap_workload,
            recover: scenarios::recover_treap::<BasicAllocator>,
        },
    ]
}

/// A store image and the state of every generation its workload committed or had in flight.
pub(super) struct Fixture {
    /// The kind's name.
    pub(super) name: &'static str,
    /// The file.
    pub(super) image: Vec<u8>,
    /// Generation → state.
    pub(super) states: BTreeMap<u64, State>,
    /// Opens an image and reads all of it.
    pub(super) recover: fn(SimDisk) -> Result<Recovered, String>,
    /// Whether the workload's `create` returned (so the image must open).
    pub(super) created: bool,
}

impl Kind {
    /// The workload run to its clean close.
    pub(super) fn closed(&self) -> Result<Fixture, String> {
        let disk = SimDisk::new();
        let mut generations = Generations::default();
        (self.workload)(&disk, &mut generations)?;
        Ok(self.fixture(disk.live_image(), generations))
    }

    /// The operation count of the whole workload and the sync count after each of its
    /// commits.
    pub(super) fn dry_run(&self) -> Generations {
        let disk = SimDisk::new();
        let mut generations = Generations::default();
        let _ = (self.workload)(&disk, &mut generations);
        generations.total_ops = disk.ops();
        generations
    }

    /// The workload crashed at `at` (the machine goes down), as a power loss with tears
    /// picked by `seed` leaves it.
    pub(super) fn crashed(&self, at: CrashPoint, seed: u64) -> Fixture {
        let disk = SimDisk::new();
        disk.set_fault(at.plan());
        let mut generations = Generations::default();
        let _ = (self.workload)(&disk, &mut generations);
        self.fixture(disk.crash_image(CrashMode::PowerLoss, seed), generations)
    }

    fn fixture(&self, image: Vec<u8>, mut generations: Generations) -> Fixture {
        // A clean close seals: the sealed slot names its older slot's state one generation
        // later (opened when the older slot is damaged).
        if let Some((older, sealed)) = crate::slots::sealed_pair(&image)
            && let Some(state) = generations.states.get(&older).cloned()
        {
            generations.states.entry(sealed).or_insert(state);
        }
        Fixture {
            name: self.name,
            image,
            states: generations.states,
            recover: self.recover,
            created: generations.created,
        }
    }
}

fn store_state(model: &BTreeMap<ObjectId, Vec<u8>>) -> State {
    model.iter().map(|(id, data)| (id.0.to_le_bytes().to_vec(), data.clone())).collect()
}

fn store_workload<A: SpaceAllocator>(disk: &SimDisk, gens: &mut Generations) -> Result<(), String> {
    let e = |e: bob_store_core::Error| e.to_string();
    // `create` commits generation 1, empty; a crash inside it may leave that commit or none.
    gens.states.insert(1, State::new());
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), small_journal()).map_err(e)?;
    gens.created = true;
    gens.commit_syncs.push(super::syncs(disk));
    let mut model = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..12u64 {
        let data = bytes(i, (i as usize * 331) % 2500);
        let id = store.write_new_obj_from_bytes(&data).map_err(e)?;
        ids.push(id);
        model.insert(id, data);
    }
    gens.before_commit(&store, store_state(&model));
    store.commit().map_err(e)?;
    gens.commit_syncs.push(super::syncs(disk));
    store.delete_obj(ids[2]).map_err(e)?;
    model.remove(&ids[2]);
    store.write_bytes_to_obj(ids[5], b"rewritten").map_err(e)?;
    if let Some(object) = model.get_mut(&ids[5]) {
        object[..9].copy_from_slice(b"rewritten");
    }
    let data = bytes(77, 900);
    model.insert(store.write_new_obj_from_bytes(&data).map_err(e)?, data);
    gens.before_commit(&store, store_state(&model));
    store.close().map_err(e)?;
    gens.commit_syncs.push(super::syncs(disk));
    Ok(())
}

/// A treap of 40 keys saved, a third of them deleted, saved again; the image of its clean
/// close is also the fuzz corpus's `treap` seed, so the workload must not change.
fn treap_workload(disk: &SimDisk, gens: &mut Generations) -> Result<(), String> {
    let e = |e: bob_store_core::Error| e.to_string();
    gens.states.insert(1, State::new());
    let mut store =
        Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), small_journal()).map_err(e)?;
    gens.created = true;
    gens.commit_syncs.push(super::syncs(disk));
    // A fixed seed: the corpus image must be the same on every run.
    let mut tree: PersistentTreap<u64, Vec<u8>> = PersistentTreap::with_seed(scenarios::TREAP_SEED);
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let tree_state = |model: &BTreeMap<u64, Vec<u8>>| -> State {
        model.iter().map(|(k, v)| (k.to_be_bytes().to_vec(), v.clone())).collect()
    };
    let save = |store: &mut Store<BasicAllocator, SimDisk>,
                tree: &mut PersistentTreap<u64, Vec<u8>>,
                gens: &mut Generations,
                state: State|
     -> Result<(), String> {
        // The root is published before the replaced nodes are deleted.
        tree.batch_persist_with(store, |store, root| {
            let root = root.ok_or_else(|| bob_treap::Error::Invariant("an empty tree".into()))?;
            store.prime_object(16)?;
            let mut record = [0u8; 16];
            record[..8].copy_from_slice(&1u64.to_le_bytes());
            record[8..].copy_from_slice(&root.0.to_le_bytes());
            Ok(store.write_bytes_to_obj(PRIME_OBJECT_ID, &record)?)
        })
        .map_err(|e| e.to_string())?;
        gens.before_commit(store, state);
        store.commit().map_err(e)?;
        gens.commit_syncs.push(super::syncs(disk));
        Ok(())
    };
    for k in 0..40u64 {
        tree.insert(&store, k, bytes(k, 12)).map_err(|e| e.to_string())?;
        model.insert(k, bytes(k, 12));
    }
    save(&mut store, &mut tree, gens, tree_state(&model))?;
    for k in (0..40u64).step_by(3) {
        tree.delete(&store, &k).map_err(|e| e.to_string())?;
        model.remove(&k);
    }
    save(&mut store, &mut tree, gens, tree_state(&model))?;
    gens.before_commit(&store, tree_state(&model));
    store.close().map_err(e)?;
    gens.commit_syncs.push(super::syncs(disk));
    Ok(())
}

/// Store options with a journal of 4 pages per region: the campaigns flip every byte of
/// their fixtures, and small regions make checkpoints (every few commits) part of every
/// workload.
pub(crate) fn small_journal() -> StoreOptions {
    StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() }
}
