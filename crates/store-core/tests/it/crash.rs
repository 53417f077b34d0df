//! A crash after every backend operation of scripted workloads, as a process crash and as a
//! power loss; and I/O errors and a full disk injected at every operation.

use std::io::Write;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{
    CrashMode, FaultKind, FaultPlan, OpFilter, Repeat, SimDisk, test_seed,
};
use bob_store_core::{BatchStorer, ObjectId, ObjectWrite, Result, SpaceAllocator, Store, Storer};

use crate::{Contents, bytes, contents, options};

/// What a workload committed: the state each commit (or close) named, and how many returned
/// `Ok`.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) states: Vec<Contents>,
    pub(crate) acknowledged: usize,
}

impl Log {
    fn commit<A: SpaceAllocator>(
        &mut self,
        store: &mut Store<A, SimDisk>,
        model: &Contents,
    ) -> Result<()> {
        self.step(model, || store.commit())
    }

    /// Logs `model` as the state `step` names, then runs it.
    pub(crate) fn step(
        &mut self,
        model: &Contents,
        step: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.states.push(model.clone());
        step()?;
        self.acknowledged += 1;
        Ok(())
    }

    /// The states a recovered store may hold: the last acknowledged one, or the one whose
    /// commit was in flight.
    pub(crate) fn allowed(&self) -> Vec<Contents> {
        let last =
            self.acknowledged.checked_sub(1).map_or_else(Contents::new, |i| self.states[i].clone());
        let mut allowed = vec![last];
        if self.states.len() > self.acknowledged {
            allowed.push(self.states[self.acknowledged].clone());
        }
        allowed
    }
}

/// Creates, rewrites (in place and copy-on-write), streams, deletes, batches and compacts,
/// committing between steps.
fn workload<A: SpaceAllocator>(store: &mut Store<A, SimDisk>, log: &mut Log) -> Result<()> {
    let mut model = Contents::new();
    let mut ids = Vec::new();
    for (i, len) in [0usize, 10, 100, 1000, 5000, 20_000].into_iter().enumerate() {
        let data = bytes(i as u64, len);
        let id = store.write_new_obj_from_bytes(&data)?;
        ids.push(id);
        model.insert(id, data);
    }
    log.commit(store, &model)?;

    let patch = bytes(99, 50);
    store.write_bytes_to_obj(ids[3], &patch)?; // committed: copy-on-write
    if let Some(object) = model.get_mut(&ids[3]) {
        object[..50].copy_from_slice(&patch);
    }
    store.delete_obj(ids[1])?;
    model.remove(&ids[1]);
    let (streamed, mut writer) = store.late_write_new_obj(3000)?;
    writer.write_all(&bytes(7, 3000)).map_err(bob_store_core::Error::from_io)?;
    writer.finish()?;
    model.insert(streamed, bytes(7, 3000));
    store.write_bytes_to_obj(streamed, &patch)?; // fresh: in place
    if let Some(object) = model.get_mut(&streamed) {
        object[..50].copy_from_slice(&patch);
    }
    log.commit(store, &model)?;

    for id in [ids[0], ids[4]] {
        store.delete_obj(id)?;
        model.remove(&id);
    }
    let run = store.allocate_run(4, 64)?;
    let data: Vec<Vec<u8>> = (0..4).map(|i| bytes(200 + i, 60)).collect();
    let batch: Vec<(ObjectId, &[u8])> =
        run.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
    store.write_batched_objs(&batch)?;
    model.extend(run.into_iter().zip(data));
    let empty_run = store.allocate_run(2, 500)?; // never written: empty objects
    model.extend(empty_run.into_iter().map(|id| (id, Vec::new())));
    log.commit(store, &model)?;

    log.states.push(model.clone());
    store.compact()?;
    log.acknowledged += 1;
    Ok(())
}

fn open_checked<A: SpaceAllocator>(image: Vec<u8>, allowed: &[Contents], context: &str) {
    let store = Store::<A, SimDisk>::open_with(SimDisk::from_image(image), options())
        .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
    let found = contents(&store).unwrap_or_else(|e| panic!("{context}: read failed: {e}"));
    assert!(
        allowed.contains(&found),
        "{context}: state matches no allowed commit: {:?}",
        found.keys()
    );
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{context}: {:?}", report.problems);
}

fn count_ops<A: SpaceAllocator>() -> (u64, u64) {
    let disk = SimDisk::new();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let base = disk.ops();
    workload(&mut store, &mut Log::default()).unwrap();
    (base, disk.ops() - base)
}

fn crash_sweep<A: SpaceAllocator>() -> u64 {
    let (_, total) = count_ops::<A>();
    let seed = test_seed();
    let mut states = 0;
    for k in 0..=total {
        let disk = SimDisk::new();
        let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
        disk.set_fault(FaultPlan::crash_at(disk.ops() + k));
        let mut log = Log::default();
        let _ = workload(&mut store, &mut log);
        drop(store);
        let allowed = log.allowed();
        open_checked::<A>(
            disk.crash_image(CrashMode::ProcessCrash, 0),
            &allowed,
            &format!("k={k} process crash"),
        );
        for tear in 0..4 {
            let tear_seed = seed ^ (k << 8) ^ tear;
            let context = format!("k={k} power loss, tear seed {tear_seed}");
            open_checked::<A>(
                disk.crash_image(CrashMode::PowerLoss, tear_seed),
                &allowed,
                &context,
            );
        }
        states += 5;
    }
    states
}

#[test]
fn a_crash_at_every_operation_recovers_a_committed_state() {
    let explored = crash_sweep::<BasicAllocator>() + crash_sweep::<OmniBlockAllocator>();
    assert!(explored > 500, "{explored} crash states");
}

fn fault_sweep<A: SpaceAllocator>(kind: FaultKind) {
    let (_, total) = count_ops::<A>();
    for k in 0..total {
        let disk = SimDisk::new();
        let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
        let at = disk.ops() + k;
        disk.set_fault(FaultPlan { at, on: OpFilter::Any, kind, repeat: Repeat::Once });
        let mut log = Log::default();
        let result = workload(&mut store, &mut log);
        let context = format!("{kind:?} at operation {k}");
        if result.is_err() {
            // The fault was transient, but the store must not trust its memory any more.
            assert!(store.is_failed(), "{context}: {result:?} but the store still accepts writes");
            assert!(store.write_new_obj_from_bytes(b"x").is_err(), "{context}");
            assert!(store.commit().is_err(), "{context}");
        }
        drop(store);
        disk.clear_fault();
        let mut image_store = Store::<A, SimDisk>::open_with(disk.clone(), options())
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        let found = contents(&image_store).unwrap();
        assert!(log.allowed().contains(&found), "{context}: wrong state after reopen");
        image_store.write_new_obj_from_bytes(b"after").unwrap();
        image_store.commit().unwrap();
        assert!(image_store.verify().unwrap().is_clean(), "{context}");
    }
}

#[test]
fn io_errors_and_a_full_disk_at_every_operation_latch_and_reopen_recovers() {
    for kind in [FaultKind::Io, FaultKind::StorageFull, FaultKind::TornWrite] {
        fault_sweep::<BasicAllocator>(kind);
        fault_sweep::<OmniBlockAllocator>(kind);
    }
}

#[test]
fn a_space_limit_is_a_clean_error_and_reopen_recovers() {
    for limit in [20_000u64, 40_000, 60_000, 90_000] {
        let disk = SimDisk::new();
        let mut store =
            Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), options()).unwrap();
        disk.set_space_limit(Some(limit));
        let mut log = Log::default();
        let result = workload(&mut store, &mut log);
        drop(store);
        disk.set_space_limit(None);
        let store = Store::<BasicAllocator, SimDisk>::open_with(disk, options()).unwrap();
        assert!(log.allowed().contains(&contents(&store).unwrap()), "limit {limit}: {result:?}");
    }
}
