//! Sealed stores: a clean close seals the file, and open then trusts the page cache (no sync,
//! no device reads); crashes and failed syncs at every operation of close and of the
//! sessions after it recover a committed state, never an older one.

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{
    CrashMode, FaultKind, FaultPlan, OpFilter, Repeat, SimDisk, test_seed,
};
use bob_store_core::{Result, SpaceAllocator, Store, Storer};

use crate::crash::Log;
use crate::{Contents, bytes, contents, options};

/// Syncs an open makes.
fn open_syncs<A: SpaceAllocator>(disk: &SimDisk) -> (u64, Contents) {
    let before = disk.op_counts().syncs;
    let store = Store::<A, SimDisk>::open_with(disk.clone(), options()).unwrap();
    let syncs = disk.op_counts().syncs - before;
    let found = contents(&store).unwrap();
    drop(store);
    (syncs, found)
}

fn sealed_open<A: SpaceAllocator>() {
    let disk = SimDisk::new();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let mut model = Contents::new();
    for i in 0..5u64 {
        let data = bytes(i, 3000 + i as usize);
        model.insert(store.write_new_obj_from_bytes(&data).unwrap(), data);
    }
    store.commit().unwrap();
    store.close().unwrap();
    // Sealed: nothing to sync, nothing read from the device; read-only sessions keep it so.
    for _ in 0..3 {
        assert_eq!(open_syncs::<A>(&disk), (0, model.clone()));
    }
    // A session that writes and crashes leaves it unsealed: open syncs again.
    let mut store = Store::<A, SimDisk>::open_with(disk.clone(), options()).unwrap();
    let data = bytes(9, 100);
    model.insert(store.write_new_obj_from_bytes(&data).unwrap(), data);
    store.commit().unwrap();
    drop(store);
    let (syncs, found) = open_syncs::<A>(&disk);
    assert!(syncs >= 1, "an unsealed store is synced at open");
    assert_eq!(found, model);
    // Closed cleanly again: sealed again.
    let store = Store::<A, SimDisk>::open_with(disk.clone(), options()).unwrap();
    let mut store = store;
    store.write_new_obj_from_bytes(b"x").map(|id| model.insert(id, b"x".to_vec())).unwrap();
    store.commit().unwrap();
    store.close().unwrap();
    assert_eq!(open_syncs::<A>(&disk), (0, model));
}

#[test]
fn a_store_closed_cleanly_opens_without_a_sync() {
    sealed_open::<BasicAllocator>();
    sealed_open::<OmniBlockAllocator>();
}

/// Three sessions on one disk: writes, a commit and a close (sealed); an open of the sealed
/// file, changes, a commit and a close; an open that only reads, and a close. `model` holds
/// what the last step named.
fn sessions<A: SpaceAllocator>(
    mut store: Store<A, SimDisk>,
    disk: &SimDisk,
    log: &mut Log,
) -> Result<()> {
    let mut model = Contents::new();
    let mut ids = Vec::new();
    for i in 0..4u64 {
        let data = bytes(i, 1000 * i as usize + 10);
        let id = store.write_new_obj_from_bytes(&data)?;
        ids.push(id);
        model.insert(id, data);
    }
    log.step(&model, || store.commit())?;
    log.step(&model, || store.close())?;

    let mut store = Store::<A, SimDisk>::open_with(disk.clone(), options())?;
    let data = bytes(50, 5000);
    let id = store.write_new_obj_from_bytes(&data)?;
    model.insert(id, data);
    store.delete_obj(ids[1])?;
    model.remove(&ids[1]);
    store.write_bytes_to_obj(ids[3], &bytes(51, 40))?;
    if let Some(object) = model.get_mut(&ids[3]) {
        object[..40].copy_from_slice(&bytes(51, 40));
    }
    log.step(&model, || store.commit())?;
    let data = bytes(52, 200);
    model.insert(store.write_new_obj_from_bytes(&data)?, data);
    log.step(&model, || store.commit())?;
    log.step(&model, || store.close())?;

    let store = Store::<A, SimDisk>::open_with(disk.clone(), options())?;
    if read_all(&store)? != model {
        return Err(bob_store_core::Error::InvalidArgument("a session read a wrong state".into()));
    }
    log.step(&model, || store.close())
}

/// Every object's bytes, or the first error (a crash injected under the reads).
fn read_all<A: SpaceAllocator>(store: &Store<A, SimDisk>) -> Result<Contents> {
    store.ids()?.into_iter().map(|id| Ok((id, store.read_bytes_from_obj(id)?))).collect()
}

fn open_checked<A: SpaceAllocator>(image: Vec<u8>, allowed: &[Contents], context: &str) {
    let mut store = Store::<A, SimDisk>::open_with(SimDisk::from_image(image), options())
        .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
    let found = contents(&store).unwrap_or_else(|e| panic!("{context}: read failed: {e}"));
    assert!(allowed.contains(&found), "{context}: state matches no allowed commit");
    assert!(store.verify().unwrap().is_clean(), "{context}");
    // And the store goes on: a write, a commit, a clean close.
    store.write_new_obj_from_bytes(b"after").unwrap();
    store.commit().unwrap();
    store.close().unwrap();
}

fn sessions_ops<A: SpaceAllocator>() -> u64 {
    let disk = SimDisk::new();
    let store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let base = disk.ops();
    let mut log = Log::default();
    sessions(store, &disk, &mut log).unwrap();
    assert_eq!(log.acknowledged, log.states.len());
    disk.ops() - base
}

fn crash_sweep<A: SpaceAllocator>() -> u64 {
    let total = sessions_ops::<A>();
    let seed = test_seed();
    let mut states = 0;
    for k in 0..=total {
        let disk = SimDisk::new();
        let store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
        disk.set_fault(FaultPlan::crash_at(disk.ops() + k));
        let mut log = Log::default();
        let _ = sessions(store, &disk, &mut log);
        let allowed = log.allowed();
        let image = disk.crash_image(CrashMode::ProcessCrash, 0);
        open_checked::<A>(image, &allowed, &format!("k={k} process crash"));
        for tear in 0..4 {
            let tear_seed = seed ^ (k << 8) ^ tear;
            let image = disk.crash_image(CrashMode::PowerLoss, tear_seed);
            open_checked::<A>(image, &allowed, &format!("k={k} power loss, seed {tear_seed}"));
        }
        states += 5;
    }
    states
}

#[test]
fn a_crash_at_every_operation_of_sealed_sessions_recovers_a_committed_state() {
    let explored = crash_sweep::<BasicAllocator>() + crash_sweep::<OmniBlockAllocator>();
    assert!(explored > 200, "{explored} crash states");
}

/// Opens `image`: the state, less the objects holding `b"next"` (at most one), must be an
/// allowed one.
fn open_checked_next<A: SpaceAllocator>(image: Vec<u8>, allowed: &[Contents], context: &str) {
    let store = Store::<A, SimDisk>::open_with(SimDisk::from_image(image), options())
        .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
    let mut found = contents(&store).unwrap_or_else(|e| panic!("{context}: read failed: {e}"));
    let before = found.len();
    found.retain(|_, bytes| bytes.as_slice() != b"next");
    assert!(before - found.len() <= 1, "{context}");
    assert!(allowed.contains(&found), "{context}: state matches no allowed commit");
    assert!(store.verify().unwrap().is_clean(), "{context}");
}

/// An I/O error (or a torn write) at every operation of the sessions, the seal's write and
/// sync among them: the failing session stops; the next open, from what the page cache then
/// shows (a failed sync's pages marked clean but kept) and after a power loss, recovers a
/// committed state and goes on. A failed seal leaves its slot in the page cache, naming a
/// state only the older slot holds durably: the next session, opening from the cache and
/// losing power at each operation of its first write and commit, must never leave the
/// device without that older slot.
#[test]
fn io_errors_at_every_operation_of_sealed_sessions_recover_a_committed_state() {
    fn sweep<A: SpaceAllocator>(kind: FaultKind) {
        let total = sessions_ops::<A>();
        let seed = test_seed();
        for k in 0..total {
            let disk = SimDisk::new();
            let store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
            let at = disk.ops() + k;
            disk.set_fault(FaultPlan { at, on: OpFilter::Any, kind, repeat: Repeat::Once });
            let mut log = Log::default();
            let _ = sessions(store, &disk, &mut log);
            disk.clear_fault();
            let allowed = log.allowed();
            let context = format!("{kind:?} at operation {k}");
            // The next session: open (from the cache), a write and a commit.
            let next_session = |disk: &SimDisk| -> Result<()> {
                let mut store = Store::<A, SimDisk>::open_with(disk.clone(), options())?;
                store.write_new_obj_from_bytes(b"next")?;
                store.commit()
            };
            let probe = disk.fork();
            next_session(&probe).unwrap_or_else(|e| panic!("{context}: next session: {e}"));
            for j in 0..probe.ops() {
                let next = disk.fork();
                next.set_fault(FaultPlan::crash_at(j));
                let _ = next_session(&next);
                for tear in 0..3 {
                    let image =
                        next.crash_image(CrashMode::PowerLoss, seed ^ (k << 16) ^ (j << 4) ^ tear);
                    let context = format!("{context}, power loss at the next session's op {j}");
                    open_checked_next::<A>(image, &allowed, &context);
                }
            }
            open_checked::<A>(disk.live_image(), &allowed, &context);
            open_checked::<A>(disk.durable_image(), &allowed, &format!("{context}, power loss"));
        }
    }
    for kind in [FaultKind::Io, FaultKind::TornWrite] {
        sweep::<BasicAllocator>(kind);
        sweep::<OmniBlockAllocator>(kind);
    }
}

/// A caller that seals (`SplitStore::seal`) and goes on writing: its next change starts with
/// a checkpoint, so its commits are in what open loads, after a process crash and after a
/// power loss.
#[test]
fn a_write_after_a_seal_is_not_lost() {
    use bob_store_core::SplitStore;

    let disk = SimDisk::new();
    let mut store = Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let first = store.write_new_obj_from_bytes(b"first").unwrap();
    store.commit().unwrap();
    Storer::checkpoint(&mut store).unwrap();
    SplitStore::seal(&mut store).unwrap();
    let second = store.write_new_obj_from_bytes(b"second").unwrap();
    store.commit().unwrap();
    drop(store);
    for (mode, seed) in [(CrashMode::ProcessCrash, 0), (CrashMode::PowerLoss, 1)] {
        let image = disk.crash_image(mode, seed);
        let store =
            Store::<BasicAllocator, SimDisk>::open_with(SimDisk::from_image(image), options())
                .unwrap();
        assert_eq!(store.read_bytes_from_obj(first).unwrap(), b"first", "{mode:?}");
        assert_eq!(store.read_bytes_from_obj(second).unwrap(), b"second", "{mode:?}");
    }
}

/// A sealed file opens read-only from the cache too, and stays sealed.
#[test]
fn a_sealed_store_opens_read_only_without_a_sync() {
    let disk = SimDisk::new();
    let mut store = Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let id = store.write_new_obj_from_bytes(&bytes(3, 700)).unwrap();
    store.commit().unwrap();
    store.close().unwrap();
    let before = disk.op_counts();
    let store =
        Store::<BasicAllocator, SimDisk>::open_read_only_with(disk.clone(), options()).unwrap();
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), bytes(3, 700));
    store.close().unwrap();
    let after = disk.op_counts();
    assert_eq!((after.syncs, after.writes), (before.syncs, before.writes));
    assert_eq!(open_syncs::<BasicAllocator>(&disk).0, 0);
}
