//! Regression tests for the findings of the outside review in the concurrent wrapper.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use bob_alloc::BasicAllocator;
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{Error, SplitStore, Store, StoreOptions, Storer};

type Base = Store<BasicAllocator, SimDisk>;

fn unbuffered() -> StoreOptions {
    StoreOptions { write_buffer_bytes: 0, ..StoreOptions::default() }
}

/// Finding 4: `write_batched_objs` wrote in place outside the global lock into objects made
/// since the last commit; a commit landing mid-write made the old entry durable over the new
/// bytes, and after a power loss the acknowledged object failed its checksum. Now no power
/// loss at any moment, however the batch and the commits interleave, damages an object a
/// commit made durable.
#[test]
fn regression_batched_writes_racing_commits_never_damage_committed_objects() {
    let disk = SimDisk::new();
    let store =
        Arc::new(ConcurrentStore::new(Base::create_with(disk.clone(), unbuffered()).unwrap(), 0));
    let done = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (store, done, commits) = (store.clone(), done.clone(), commits.clone());
        thread::spawn(move || {
            for round in 0..300u32 {
                // Let commits interleave however fast the writes are.
                while commits.load(Ordering::Acquire) < round as usize / 10 {
                    thread::yield_now();
                }
                let a = store.write_new_obj_from_bytes(&[round as u8; 300]).unwrap();
                let b = store.write_new_obj_from_bytes(&[round as u8; 300]).unwrap();
                let fill = [(round as u8).wrapping_add(1); 300];
                match store.write_batched_objs(&[(a, &fill), (b, &fill)]) {
                    // A commit came first: the objects are committed, a batch may not fill them.
                    Ok(()) | Err(Error::CommittedBeforeFilled(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut images = Vec::new();
    let mut seed = 0;
    // Until the writer is done, or has failed (its panic is reported by `join`).
    while !done.load(Ordering::Acquire) && !writer.is_finished() {
        store.commit().unwrap();
        commits.fetch_add(1, Ordering::Release);
        seed += 1;
        images.push(disk.crash_image(CrashMode::PowerLoss, seed));
    }
    writer.join().unwrap();
    assert!(images.len() > 1);
    for (i, image) in images.into_iter().enumerate() {
        let reopened = Base::open_with(SimDisk::from_image(image), unbuffered()).unwrap();
        for id in reopened.ids().unwrap() {
            if let Err(e) = reopened.read_bytes_from_obj(id) {
                panic!("image {i}: committed object {id} is damaged: {e}");
            }
        }
    }
}

/// Finding 5: the wrapper's rewrite copied the old object's tail without checking the old
/// checksum, so a flipped byte survived a 5-byte rewrite under a fresh checksum and verify
/// reported the store clean. Now the rewrite fails and the object keeps its old entry.
#[test]
fn regression_a_rewrite_through_the_wrapper_never_launders_a_damaged_tail() {
    let disk = SimDisk::new();
    let mut base = Base::create_with(disk.clone(), unbuffered()).unwrap();
    let id = base.write_new_obj_from_bytes(&[7; 100]).unwrap();
    base.commit().unwrap();
    let offset = base.locate(id).unwrap().offset();
    let store = ConcurrentStore::new(base, 0);
    disk.write_at(&[0xAA], offset + 50).unwrap();
    let result = store.write_bytes_to_obj(id, b"hello");
    assert!(matches!(result, Err(Error::ChecksumMismatch { .. })), "{result:?}");
    assert!(matches!(store.read_bytes_from_obj(id), Err(Error::ChecksumMismatch { .. })));
    assert!(!store.verify().unwrap().is_clean());
}

/// Finding 16: verify reported a healthy store as damaged while a new object was being
/// written (its reserved space was counted by the allocator, not by the store).
#[test]
fn regression_verify_is_clean_while_a_new_object_is_being_written() {
    let store = ConcurrentStore::new(Base::create_with(SimDisk::new(), unbuffered()).unwrap(), 0);
    store.write_new_obj_from_bytes(b"settled").unwrap();
    let (id, mut writer) = store.late_write_new_obj(10_000).unwrap();
    std::io::Write::write_all(&mut writer, &[1; 4000]).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    writer.finish().unwrap();
    assert_eq!(store.read_bytes_from_obj(id).unwrap().len(), 10_000);
    assert!(store.verify().unwrap().is_clean());
}

/// Group commit with a failing sync: eight threads write and commit at once while one sync
/// fails. No thread gets `Ok` for an object the durable image does not hold (a follower of
/// the failed round runs a commit of its own and gets the latched store's error), and the
/// store refuses writes afterwards.
#[test]
fn a_failed_sync_gives_no_follower_an_ok() {
    use bob_io_helpers::testing::{FaultKind, FaultPlan, OpFilter, OpKind, Repeat};
    for round in 0..20u64 {
        let disk = SimDisk::new();
        let store = Arc::new(ConcurrentStore::new(
            Base::create_with(disk.clone(), unbuffered()).unwrap(),
            0,
        ));
        let syncs = disk.op_counts().matching(OpFilter::Only(OpKind::Sync));
        disk.set_fault(FaultPlan {
            at: syncs + round % 5,
            on: OpFilter::Only(OpKind::Sync),
            kind: FaultKind::Io,
            repeat: Repeat::Once,
        });
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let (store, barrier) = (store.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let mut acknowledged = Vec::new();
                    for i in 0..4u64 {
                        let data = vec![(t * 16 + i) as u8; 3000];
                        let Ok(id) = store.write_new_obj_from_bytes(&data) else { break };
                        match store.commit() {
                            Ok(()) => acknowledged.push((id, data)),
                            Err(_) => break,
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        let acknowledged: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        assert!(store.write_new_obj_from_bytes(b"after").is_err(), "round {round}: latched");
        disk.clear_fault();
        let durable = Base::open_with(SimDisk::from_image(disk.durable_image()), unbuffered())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        for (id, data) in &acknowledged {
            assert_eq!(&durable.read_bytes_from_obj(*id).unwrap(), data, "round {round}: {id}");
        }
    }
}

/// Found in review: `ConcurrentStore::close` checkpointed but did not give back the growth
/// steps the file keeps past its data while written (`Storer::close` did), so every
/// database bob-btree closed kept up to two steps (an eighth of the file) past its data.
#[test]
fn regression_close_gives_back_the_growth_steps() {
    let disk = SimDisk::new();
    let store = ConcurrentStore::new(Base::create_with(disk.clone(), unbuffered()).unwrap(), 0);
    for round in 0..40u32 {
        for _ in 0..100 {
            store.write_new_obj_from_bytes(&[round as u8; 1000]).unwrap();
        }
        store.commit().unwrap();
    }
    store.close().unwrap();
    let closed = disk.len().unwrap();
    // The store closed on its own settles to exactly what it needs: the same length.
    let reopened = Base::open_with(disk.clone(), unbuffered()).unwrap();
    assert_eq!(reopened.object_count(), 4_000);
    reopened.close().unwrap();
    assert_eq!(disk.len().unwrap(), closed, "ConcurrentStore::close left growth steps");
}

/// `ConcurrentStore::close` seals the file as `Storer::close` does: the next open makes no
/// sync and finds every committed object.
#[test]
fn a_concurrent_store_closed_cleanly_opens_without_a_sync() {
    let disk = SimDisk::new();
    let store = ConcurrentStore::new(Base::create_with(disk.clone(), unbuffered()).unwrap(), 0);
    let ids: Vec<_> =
        (0..20u8).map(|i| store.write_new_obj_from_bytes(&[i; 1000]).unwrap()).collect();
    store.commit().unwrap();
    store.close().unwrap();
    let before = disk.op_counts().syncs;
    let reopened = Base::open_with(disk.clone(), unbuffered()).unwrap();
    assert_eq!(disk.op_counts().syncs, before, "a sealed store is opened without a sync");
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(reopened.read_bytes_from_obj(id).unwrap(), vec![i as u8; 1000]);
    }
}
