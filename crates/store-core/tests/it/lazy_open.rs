//! Lazy open (`docs/format.md`, open rule 8): open reads the header slots, the root and the
//! journal only; a table page is read with the first object on it; the first write reads and
//! checks the rest. A lazy open and a full one (`load_on_open`) of the same image agree on
//! every object, or both refuse it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{
    CrashMode, FaultKind, FaultPlan, HookOp, Hooked, OpFilter, OpKind, Repeat, SimDisk,
};
use bob_store_core::{BaseStore, Error, ObjectId, SpaceAllocator, Store, StoreOptions, Storer};

use crate::{Contents, bytes, options, put};

/// `disk`, and a count of the bytes read through it.
fn counting(disk: SimDisk) -> (Hooked<SimDisk>, Arc<AtomicU64>) {
    let read = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&read);
    let disk = Hooked::new(disk, move |op| {
        if let HookOp::Read { len, .. } = op {
            count.fetch_add(len as u64, Ordering::Relaxed);
        }
        Ok(())
    });
    (disk, read)
}

/// Open reads a bounded number of bytes whatever the table's size; one read reads one table
/// page more; the first write reads the rest, and everything is there.
#[test]
fn open_reads_the_header_root_and_journal_only() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let mut model = Contents::new();
    for i in 0..20_000u64 {
        let data = bytes(i, 24);
        model.insert(store.write_new_obj_from_bytes(&data).unwrap(), data);
        if i % 5_000 == 4_999 {
            store.commit().unwrap();
        }
    }
    store.close().unwrap();
    let table_pages = 20_000 / 112;
    let (counter, read) = counting(disk.clone());
    let counter_read = || read.load(Ordering::Relaxed);
    let mut store = Store::<BasicAllocator, _>::open_with(counter.clone(), options()).unwrap();
    // Two header slots, a root of 16 bytes a page, the journal region (4 pages in these
    // tests) and its first page again from the device.
    let journal = 4 * 4096;
    let bound = 2 * 4096 + 16 + 16 * (table_pages + 1) + journal + 4096;
    assert!(counter_read() <= bound, "open read {} bytes, bound {bound}", counter_read());
    assert_eq!(store.object_count(), 20_000);
    let before = counter_read();
    let ids: Vec<ObjectId> = model.keys().copied().collect();
    let id = ids[10_000];
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), model[&id]);
    assert_eq!(counter_read() - before, 4096 + 24, "one table page and the object");
    let before = counter_read();
    assert_eq!(store.read_bytes_from_obj(ids[10_001]).unwrap(), model[&ids[10_001]]);
    assert_eq!(counter_read() - before, 24, "the page is read once");
    // The first write reads every other page and rebuilds the allocator.
    let before = counter_read();
    let new = store.write_new_obj_from_bytes(b"after").unwrap();
    assert!(counter_read() - before >= (table_pages - 1) * 4096);
    model.insert(new, b"after".to_vec());
    assert_eq!(crate::contents(&store).unwrap(), model);
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
    // A full open reads every page at once.
    let (counter, read) = counting(disk);
    let full = StoreOptions { load_on_open: true, ..options() };
    let store = Store::<BasicAllocator, _>::open_with(counter.clone(), full).unwrap();
    assert!(read.load(Ordering::Relaxed) >= bound + (table_pages - 1) * 4096);
    assert_eq!(crate::contents(&store).unwrap(), model);
}

/// A journal record whose sync failed is still in the page cache (Linux marks the pages
/// clean), not on the device: open reads the journal through the cache but the chain's pages
/// again from the device, so the record is not replayed, and the next commit writes over it.
#[test]
fn a_record_whose_sync_failed_is_not_replayed_from_the_page_cache() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
    let a = put(&mut store, &bytes(1, 300));
    store.commit().unwrap();
    let b = put(&mut store, &bytes(2, 300));
    store.commit().unwrap();
    let c = store.write_new_obj_from_bytes(&bytes(3, 300)).unwrap();
    let syncs = disk.op_counts().syncs;
    disk.set_fault(FaultPlan {
        at: syncs,
        on: OpFilter::Only(OpKind::Sync),
        kind: FaultKind::Io,
        repeat: Repeat::Once,
    });
    assert!(store.commit().is_err(), "the commit's sync fails");
    drop(store);
    disk.clear_fault();
    let live = disk.live_image();
    assert!(live.windows(4).filter(|w| *w == b"BOBJ").count() >= 3, "the cache shows it");
    let mut store = BaseStore::open_with(disk.clone(), StoreOptions::default()).unwrap();
    assert_eq!(store.read_bytes_from_obj(a).unwrap(), bytes(1, 300));
    assert_eq!(store.read_bytes_from_obj(b).unwrap(), bytes(2, 300));
    assert!(matches!(store.read_bytes_from_obj(c), Err(Error::NotFound(_))));
    let d = put(&mut store, &bytes(4, 300));
    assert_eq!(d.index(), c.index(), "the lost object's index is handed out again");
    assert!(
        matches!(store.read_bytes_from_obj(c), Err(Error::StaleId { .. })),
        "the lost object's id names no later object"
    );
    store.commit().unwrap();
    drop(store);
    let image = disk.crash_image(CrashMode::PowerLoss, 7);
    let store = BaseStore::open_with(SimDisk::from_image(image), StoreOptions::default()).unwrap();
    assert_eq!(store.ids().unwrap().len(), 3);
    assert_eq!(store.read_bytes_from_obj(d).unwrap(), bytes(4, 300));
}

/// The same with a commit of one delete (no data for open to check): replayed from the
/// cache, it would free the object's space for the next writes while the device still holds
/// the commit that has it; a power loss then would damage a committed object.
#[test]
fn a_delete_whose_sync_failed_does_not_free_space_after_a_reopen() {
    let opts = StoreOptions { write_buffer_bytes: 0, ..StoreOptions::default() };
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), opts).unwrap();
    let a = put(&mut store, &bytes(1, 8192));
    store.commit().unwrap();
    let b = put(&mut store, &bytes(2, 8192));
    store.commit().unwrap();
    store.delete_obj(b).unwrap();
    let syncs = disk.op_counts().syncs;
    disk.set_fault(FaultPlan {
        at: syncs,
        on: OpFilter::Only(OpKind::Sync),
        kind: FaultKind::Io,
        repeat: Repeat::Once,
    });
    assert!(store.commit().is_err(), "the commit's sync fails");
    drop(store);
    disk.clear_fault();
    let mut store = BaseStore::open_with(disk.clone(), opts).unwrap();
    assert_eq!(store.read_bytes_from_obj(b).unwrap(), bytes(2, 8192), "the delete is not durable");
    for i in 0..4 {
        store.write_new_obj_from_bytes(&bytes(10 + i, 8192)).unwrap();
    }
    drop(store);
    for seed in 0..8 {
        let image = disk.crash_image(CrashMode::PowerLoss, seed);
        let store = BaseStore::open_with(SimDisk::from_image(image), opts).unwrap();
        assert_eq!(store.read_bytes_from_obj(a).unwrap(), bytes(1, 8192), "seed {seed}");
        assert_eq!(store.read_bytes_from_obj(b).unwrap(), bytes(2, 8192), "seed {seed}");
    }
}

/// What one open of `image` shows: every object, or the error's kind.
fn opened<A: SpaceAllocator>(image: &[u8], load_on_open: bool) -> Result<Contents, String> {
    let opts = StoreOptions { load_on_open, ..options() };
    let kind = |e: Error| match e {
        Error::NewestCommitDamaged { .. } => "newest commit damaged".to_string(),
        e => format!("{e}"),
    };
    let mut store =
        Store::<A, SimDisk>::open_with(SimDisk::from_image(image.to_vec()), opts).map_err(kind)?;
    // Reads before anything completes the lazy open, then the rest of the checks.
    let mut early = Contents::new();
    for (index, tag) in (0..64).flat_map(|index| (0..16).map(move |tag| (index, tag))) {
        let id = ObjectId::from_parts(index, tag);
        if let Ok(data) = store.read_bytes_from_obj(id) {
            early.insert(id, data);
        }
    }
    store.complete_open().map_err(kind)?;
    let all = crate::contents(&store).map_err(kind)?;
    for (id, data) in &early {
        assert_eq!(all.get(id), Some(data), "object {id} read before the open completed");
    }
    Ok(all)
}

/// A workload of puts, rewrites, deletes (trailing ids trimmed), commits and checkpoints,
/// crashed at every operation (process crash and power loss): the lazy open and the full one
/// agree on every image.
fn lazy_and_full_open_agree<A: SpaceAllocator>() {
    let run = |disk: &SimDisk| -> bob_store_core::Result<()> {
        let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options())?;
        let mut ids = Vec::new();
        for round in 0..6u64 {
            for i in 0..5 {
                ids.push(
                    store
                        .write_new_obj_from_bytes(&bytes(round * 10 + i, 200 + 700 * i as usize))?,
                );
            }
            store.replace_obj(ids[round as usize], &bytes(round + 100, 5000))?;
            if round % 2 == 1 {
                let last = ids.pop().unwrap();
                store.delete_obj(last)?;
                store.delete_obj(ids[1])?;
                ids.remove(1);
            }
            store.commit()?;
            if round == 3 {
                store.checkpoint()?;
            }
        }
        store.close()
    };
    let probe = SimDisk::new();
    run(&probe).unwrap();
    let ops = probe.ops();
    let mut compared = 0;
    for at in 0..ops {
        let disk = SimDisk::new();
        disk.set_fault(FaultPlan::crash_at(at));
        let _ = run(&disk);
        for (mode, seed) in [(CrashMode::ProcessCrash, 0), (CrashMode::PowerLoss, at)] {
            let image = disk.crash_image(mode, seed);
            let lazy = opened::<A>(&image, false);
            let full = opened::<A>(&image, true);
            assert_eq!(lazy, full, "crash at {at} ({mode:?})");
            compared += 1;
        }
    }
    assert!(compared > 40, "{compared} images");
}

#[test]
fn lazy_and_full_open_agree_basic() {
    lazy_and_full_open_agree::<BasicAllocator>();
}

#[test]
fn lazy_and_full_open_agree_omni() {
    lazy_and_full_open_agree::<OmniBlockAllocator>();
}
