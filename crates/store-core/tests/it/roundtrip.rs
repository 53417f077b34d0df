//! Round trips through close and reopen, and the behaviours the issue names.

use std::io::Write;

use bob_alloc::OmniBlockAllocator;
use bob_io_helpers::testing::SimDisk;
use bob_io_helpers::{FileBackend, OsFile};
use bob_store_core::{
    BaseStore, BatchStorer, Error, ObjectId, ObjectInfoStorer, ObjectWrite, PRIME_OBJECT_ID,
    PrimeStorer, SpaceAllocator, Store, Storer,
};

use crate::{bytes, contents, options, put};

type Multi<B = OsFile> = Store<OmniBlockAllocator, B>;

const SIZES: [usize; 24] = [
    0,
    1,
    2,
    3,
    5,
    7,
    8,
    15,
    16,
    17,
    31,
    64,
    100,
    255,
    256,
    1000,
    4095,
    4096,
    4097,
    16 * 1024,
    65_539,
    200_000,
    1 << 20,
    4 << 20,
];

fn every_size_round_trips<A: SpaceAllocator>() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = Store::<A, OsFile>::create(&path, options()).unwrap();
    let ids: Vec<(ObjectId, Vec<u8>)> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = bytes(i as u64, len);
            (put(&mut store, &data), data)
        })
        .collect();
    for (id, data) in &ids {
        assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), data, "before commit");
    }
    store.close().unwrap();
    let store = Store::<A, OsFile>::open(&path, options()).unwrap();
    for (id, data) in &ids {
        assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), data, "len {}", data.len());
        assert_eq!(store.object_info(*id).unwrap().len, data.len() as u64);
    }
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn every_size_round_trips_through_close_and_reopen() {
    every_size_round_trips::<bob_alloc::BasicAllocator>();
    every_size_round_trips::<OmniBlockAllocator>();
}

fn four_sessions<A: SpaceAllocator>() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    Store::<A, OsFile>::create(&path, options()).unwrap().close().unwrap();
    let mut expected = crate::Contents::new();
    let mut deleted = Vec::new();
    for session in 0..4u64 {
        let mut store = Store::<A, OsFile>::open(&path, options()).unwrap();
        assert_eq!(contents(&store).unwrap(), expected, "session {session} sees the earlier ones");
        for id in &deleted {
            assert!(matches!(
                store.read_bytes_from_obj(*id),
                Err(Error::NotFound(_) | Error::StaleId { .. })
            ));
        }
        for i in 0..10 {
            let data = bytes(session * 100 + i, (i as usize * 997) % 5000);
            expected.insert(put(&mut store, &data), data);
        }
        let victims: Vec<ObjectId> = expected.keys().copied().step_by(3).take(3).collect();
        for id in victims {
            store.delete_obj(id).unwrap();
            expected.remove(&id);
            deleted.retain(|d| *d != id);
            deleted.push(id);
        }
        store.close().unwrap();
    }
    let store = Store::<A, OsFile>::open(&path, options()).unwrap();
    assert_eq!(contents(&store).unwrap(), expected);
}

/// New objects past the write buffer's size (so it fills, is written, and the writeback of
/// its whole pages is started before the commit) read back, before and after a commit and a
/// reopen, each as written: objects of odd sizes, so page and buffer boundaries fall inside
/// them.
#[test]
fn objects_past_a_full_write_buffer_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let opts = bob_store_core::StoreOptions { write_buffer_bytes: 64 << 10, ..options() };
    let mut store = Store::<bob_alloc::BasicAllocator, OsFile>::create(&path, opts).unwrap();
    let objects: Vec<(ObjectId, Vec<u8>)> = (0..150u64)
        .map(|i| {
            let data = bytes(i, 3_000 + (i as usize * 37) % 1_500);
            (store.write_new_obj_from_bytes(&data).unwrap(), data)
        })
        .collect();
    for (id, data) in &objects {
        assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), data, "before the commit");
    }
    store.commit().unwrap();
    store.close().unwrap();
    let store = Store::<bob_alloc::BasicAllocator, OsFile>::open(&path, opts).unwrap();
    for (id, data) in &objects {
        assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), data, "after a reopen");
    }
}

#[test]
fn four_sessions_each_verify_add_and_delete() {
    four_sessions::<bob_alloc::BasicAllocator>();
    four_sessions::<OmniBlockAllocator>();
}

#[test]
fn in_place_update_five_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = BaseStore::create(&path, options()).unwrap();
    let id = put(&mut store, &[0u8; 64]);
    for round in 1..=5u8 {
        store.write_bytes_to_obj(id, &[round; 40]).unwrap();
        let mut expected = vec![round; 40];
        expected.extend_from_slice(&[0u8; 24]);
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), expected);
        if round % 2 == 0 {
            store.commit().unwrap();
        }
    }
    store.close().unwrap();
    let store = BaseStore::open(&path, options()).unwrap();
    let mut expected = vec![5u8; 40];
    expected.extend_from_slice(&[0u8; 24]);
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), expected);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_write_past_the_end_fails_and_writes_nothing() {
    let mut store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    let id = put(&mut store, b"abcdef");
    let mut writer = store.write_to_obj(id).unwrap();
    writer.write_all(b"XY").unwrap();
    let err = writer.write(b"12345").unwrap_err();
    assert!(matches!(Error::from_io(err), Error::WriteOutOfBounds { position: 2, len: 5, .. }));
    writer.finish().unwrap();
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"XYcdef");
    let empty = put(&mut store, b"");
    assert!(store.write_bytes_to_obj(empty, b"x").is_err());
    assert!(!store.is_failed(), "a refused write is not a failure");
}

fn size_after_cycles<A: SpaceAllocator>() -> (u64, u64) {
    let mut store = Store::<A, SimDisk>::create_with(SimDisk::new(), options()).unwrap();
    let mut sizes = Vec::new();
    for cycle in 0..3u64 {
        let ids: Vec<ObjectId> = (0..200)
            .map(|i| put(&mut store, &bytes(cycle * 1000 + i, 100 + (i as usize * 37) % 3000)))
            .collect();
        store.commit().unwrap();
        sizes.push(store.file_len().unwrap());
        for id in ids {
            store.delete_obj(id).unwrap();
        }
        store.commit().unwrap();
    }
    (sizes[0], sizes[2])
}

#[test]
fn space_is_reused_over_three_create_and_delete_all_cycles() {
    for (first, last) in [
        size_after_cycles::<bob_alloc::BasicAllocator>(),
        size_after_cycles::<OmniBlockAllocator>(),
    ] {
        assert!(last * 2 < first * 3, "first cycle {first} bytes, third {last}");
    }
}

#[test]
fn empty_open_close_cycles_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = BaseStore::create(&path, options()).unwrap();
    for i in 0..5 {
        put(&mut store, &bytes(i, 500));
    }
    store.close().unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    for _ in 0..20 {
        let store = BaseStore::open(&path, options()).unwrap();
        assert_eq!(store.object_count(), 5);
        store.close().unwrap();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
}

#[test]
fn deleting_a_middle_object_keeps_its_neighbours_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = BaseStore::create(&path, options()).unwrap();
    let (a, b, c) = (bytes(1, 4096), bytes(2, 4096), bytes(3, 4096));
    let (ia, ib, ic) = (put(&mut store, &a), put(&mut store, &b), put(&mut store, &c));
    store.close().unwrap();
    let mut store = BaseStore::open(&path, options()).unwrap();
    store.delete_obj(ib).unwrap();
    store.close().unwrap();
    let mut store = BaseStore::open(&path, options()).unwrap();
    for i in 0..4 {
        put(&mut store, &bytes(10 + i, 4096));
    }
    assert_eq!(store.read_bytes_from_obj(ia).unwrap(), a);
    assert_eq!(store.read_bytes_from_obj(ic).unwrap(), c);
    store.close().unwrap();
    let store = BaseStore::open(&path, options()).unwrap();
    assert_eq!(store.read_bytes_from_obj(ia).unwrap(), a);
    assert_eq!(store.read_bytes_from_obj(ic).unwrap(), c);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn unknown_and_deleted_ids_are_not_found() {
    let mut store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    assert!(matches!(store.read_bytes_from_obj(ObjectId(42)), Err(Error::NotFound(ObjectId(42)))));
    let id = put(&mut store, b"x");
    store.delete_obj(id).unwrap();
    assert!(matches!(store.read_bytes_from_obj(id), Err(Error::NotFound(_))));
    assert!(matches!(store.delete_obj(id), Err(Error::NotFound(_))));
    assert!(matches!(store.write_to_obj(id).map(|_| ()), Err(Error::NotFound(_))));
    assert!(matches!(store.late_read_obj(id).map(|_| ()), Err(Error::NotFound(_))));
}

#[test]
fn files_that_are_not_stores_are_refused() {
    let empty = SimDisk::new();
    assert!(matches!(BaseStore::open_with(empty, options()), Err(Error::NotAStore(_))));
    let text = SimDisk::from_image(b"hello world, this is not a store".repeat(200));
    assert!(matches!(BaseStore::open_with(text, options()), Err(Error::NotAStore(_))));
    let disk = SimDisk::new();
    BaseStore::create_with(disk.clone(), options()).unwrap().close().unwrap();
    let wrong = Multi::<SimDisk>::open_with(disk.clone(), options()).unwrap_err();
    assert!(matches!(wrong, Error::WrongKind { found: 1, expected: 2 }));
    // The message names the store types, and what to do.
    assert_eq!(
        wrong.to_string(),
        "the file holds a BaseStore (store kind 1), not a MultiStore (kind 2): open it as a \
         BaseStore"
    );
    assert!(BaseStore::create_with(disk, options()).is_err(), "create refuses a non-empty file");
}

#[test]
fn a_truncated_store_is_refused_or_opens_to_a_valid_state() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let objects: Vec<_> = (0..6)
        .map(|i| {
            let d = bytes(i, 3000);
            (put(&mut store, &d), d)
        })
        .collect();
    store.close().unwrap();
    let image = disk.live_image();
    for cut in (0..image.len()).step_by(97).chain([image.len() - 1]) {
        let truncated = SimDisk::from_image(image[..cut].to_vec());
        if let Ok(store) = BaseStore::open_with(truncated, options()) {
            for (id, data) in &objects {
                if let Ok(read) = store.read_bytes_from_obj(*id) {
                    assert_eq!(&read, data, "cut at {cut}");
                }
            }
        }
    }
}

#[test]
fn the_prime_object_is_reserved_and_survives_reopen() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let first = put(&mut store, b"first");
    assert_ne!(first, PRIME_OBJECT_ID);
    assert_eq!(store.prime_object(16).unwrap(), PRIME_OBJECT_ID);
    assert_eq!(store.read_bytes_from_obj(PRIME_OBJECT_ID).unwrap(), vec![0; 16]);
    store.write_bytes_to_obj(PRIME_OBJECT_ID, b"root=7").unwrap();
    store.close().unwrap();
    let mut store = BaseStore::open_with(disk, options()).unwrap();
    assert_eq!(store.prime_object(99).unwrap(), PRIME_OBJECT_ID, "exists: size ignored");
    assert_eq!(&store.read_bytes_from_obj(PRIME_OBJECT_ID).unwrap()[..6], b"root=7");
}

#[test]
fn object_info_reports_logical_and_allocated_lengths() {
    let mut base = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    let id = put(&mut base, &[1; 100]);
    let info = base.object_info(id).unwrap();
    assert_eq!((info.len, info.allocated_len), (100, 100));
    let mut multi = Multi::<SimDisk>::create_with(SimDisk::new(), options()).unwrap();
    let id = put(&mut multi, &[1; 100]);
    let info = multi.object_info(id).unwrap();
    assert_eq!((info.len, info.allocated_len), (100, 112));
}

fn batched<A: SpaceAllocator>(buffered: bool) {
    let disk = SimDisk::new();
    let options = if buffered {
        options()
    } else {
        bob_store_core::StoreOptions { write_buffer_bytes: 0, ..options() }
    };
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options).unwrap();
    let ids = store.allocate_run(50, 64).unwrap();
    assert_eq!(ids.len(), 50);
    let data: Vec<Vec<u8>> = (0..50).map(|i| bytes(i, 60)).collect();
    let batch: Vec<(ObjectId, &[u8])> =
        ids.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
    let writes_before = disk.op_counts().writes;
    store.write_batched_objs(&batch).unwrap();
    let expected = if buffered { 0 } else { 1 };
    assert_eq!(
        disk.op_counts().writes - writes_before,
        expected,
        "one positioned write for the run"
    );
    if buffered {
        // The buffered run is still one write, at commit: one more than a twin store's
        // commit of the same run left empty (table pages, root and header alike).
        let twin_disk = SimDisk::new();
        let mut twin = Store::<A, SimDisk>::create_with(twin_disk.clone(), options).unwrap();
        twin.allocate_run(50, 64).unwrap();
        let (twin_before, before) = (twin_disk.op_counts().writes, disk.op_counts().writes);
        twin.commit().unwrap();
        store.commit().unwrap();
        let twin_writes = twin_disk.op_counts().writes - twin_before;
        assert_eq!(disk.op_counts().writes - before, twin_writes + 1);
    }
    store.close().unwrap();
    let store = Store::<A, SimDisk>::open_with(disk, options).unwrap();
    for (id, d) in ids.iter().zip(&data) {
        assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), d);
    }
}

#[test]
fn allocate_run_and_one_batched_write_work_on_both_stores() {
    for buffered in [false, true] {
        batched::<bob_alloc::BasicAllocator>(buffered);
        batched::<OmniBlockAllocator>(buffered);
    }
}

#[test]
fn batched_writes_refuse_committed_objects_and_duplicates() {
    let mut store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    let ids = store.allocate_run(2, 8).unwrap();
    assert!(store.write_batched_objs(&[(ids[0], b"a"), (ids[0], b"b")]).is_err());
    assert!(store.write_batched_objs(&[(ids[0], b"123456789")]).is_err(), "past the slot");
    store.commit().unwrap();
    assert!(store.write_batched_objs(&[(ids[1], b"a")]).is_err());
}

/// `expect_halving`: whether the file must shrink by half. A basic store compacts into the
/// lowest holes; a size-classed store moves objects into lower slots, but its file shrinks
/// only as far as its last block (often the table pages' block) allows.
fn compaction<A: SpaceAllocator>(expect_halving: bool) {
    let disk = SimDisk::new();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let ids: Vec<ObjectId> =
        (0..300).map(|i| put(&mut store, &bytes(i, 1000 + i as usize % 7))).collect();
    store.commit().unwrap();
    let mut kept = crate::Contents::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 4 == 0 {
            kept.insert(*id, store.read_bytes_from_obj(*id).unwrap());
        } else {
            store.delete_obj(*id).unwrap();
        }
    }
    store.commit().unwrap();
    let report = store.compact().unwrap();
    assert!(report.moved > 0);
    assert!(report.file_len_after <= report.file_len_before, "{report:?}");
    if expect_halving {
        assert!(report.file_len_after * 2 < report.file_len_before, "{report:?}");
    }
    assert_eq!(contents(&store).unwrap(), kept, "ids and bytes unchanged");
    let verify = store.verify().unwrap();
    assert!(verify.is_clean(), "{:?}", verify.problems);
    drop(store);
    let store = Store::<A, SimDisk>::open_with(disk, options()).unwrap();
    assert_eq!(contents(&store).unwrap(), kept);
}

#[test]
fn compaction_moves_objects_down_and_shrinks_the_file() {
    compaction::<bob_alloc::BasicAllocator>(true);
    compaction::<OmniBlockAllocator>(false);
}

#[test]
fn a_streaming_read_reports_corruption_by_its_final_read() {
    use std::io::Read;
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let id = put(&mut store, &bytes(5, 10_000));
    store.close().unwrap();
    let mut image = disk.live_image();
    // The object is the only data past the header region and the table; find it and flip it.
    let at = image.windows(16).position(|w| w == &bytes(5, 10_000)[..16]).unwrap();
    image[at + 5000] ^= 1;
    let store = BaseStore::open_with(SimDisk::from_image(image), options()).unwrap();
    let mut reader = store.late_read_obj(id).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(reader.read(&mut buf).unwrap(), 4096);
    assert_eq!(reader.read(&mut buf).unwrap(), 4096);
    let err = reader.read(&mut buf).unwrap_err();
    assert!(matches!(Error::from_io(err), Error::ChecksumMismatch { .. }));
    assert!(matches!(store.read_bytes_from_obj(id), Err(Error::ChecksumMismatch { .. })));
    assert!(!store.verify().unwrap().is_clean());
}

#[test]
fn a_dropped_writer_finishes_its_object() {
    let mut store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    let (id, mut writer) = store.late_write_new_obj(10).unwrap();
    writer.write_all(b"abc").unwrap();
    drop(writer);
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"abc\0\0\0\0\0\0\0");
    let new = store.new_obj(5).unwrap();
    assert_eq!(store.read_bytes_from_obj(new).unwrap(), vec![0; 5]);
}

#[test]
fn ids_freed_by_a_commit_are_reused_after_it() {
    let mut store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    let a = put(&mut store, b"a");
    let _b = put(&mut store, b"b");
    store.delete_obj(a).unwrap();
    let c = put(&mut store, b"c");
    assert_ne!(c, a, "not reused before the delete is committed");
    store.commit().unwrap();
    let d = put(&mut store, b"d");
    assert_eq!(d.index(), a.index(), "the index is reused");
    assert_ne!(d, a, "under a newer tag");
    match store.read_bytes_from_obj(a) {
        Err(Error::StaleId { id, current }) => assert_eq!((id, current), (a, d)),
        other => panic!("a stale id read {other:?}"),
    }
    assert!(matches!(store.delete_obj(a), Err(Error::StaleId { .. })));
    assert!(matches!(store.replace_obj(a, b"x"), Err(Error::StaleId { .. })));
    assert!(matches!(store.object_info(a), Err(Error::StaleId { .. })));
    assert_eq!(store.read_bytes_from_obj(d).unwrap(), b"d");
    store.close().unwrap();
}

#[test]
fn the_backend_is_a_file_backend() {
    fn takes_backend<B: FileBackend>(_: &B) {}
    let store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    takes_backend(store.backend());
}

#[test]
fn read_obj_into_reuses_the_buffer_and_clears_it_on_corruption() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let (a, b) = (bytes(1, 3000), bytes(2, 10));
    let (ia, ib) = (put(&mut store, &a), put(&mut store, &b));
    let mut buf = Vec::new();
    store.read_obj_into(ia, &mut buf).unwrap(); // from the write buffer
    assert_eq!(buf, a);
    store.close().unwrap();
    let mut image = disk.live_image();
    let at = image.windows(16).position(|w| w == &a[..16]).unwrap();
    image[at + 100] ^= 1;
    let store = BaseStore::open_with(SimDisk::from_image(image), options()).unwrap();
    store.read_obj_into(ib, &mut buf).unwrap(); // from disk
    assert_eq!(buf, b);
    assert!(matches!(store.read_obj_into(ia, &mut buf), Err(Error::ChecksumMismatch { .. })));
    assert!(buf.is_empty(), "no corrupt bytes are left behind");
}

/// Found by `cargo xtask reliability` (random crash fuzzing, leak check): compacting an
/// emptied store left its root a page above where it could be, or moved it up into a tail
/// left by a crash, so the file stayed a page larger than an empty store's.
#[test]
fn compacting_an_emptied_store_returns_the_file_to_an_empty_stores_size() {
    let empty_len = {
        let disk = SimDisk::new();
        BaseStore::create_with(disk.clone(), options()).unwrap().close().unwrap();
        disk.live_image().len()
    };
    for sizes in [vec![10usize], vec![5000, 100, 300_000], vec![0, 0, 70_000]] {
        let disk = SimDisk::new();
        let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
        for (i, &len) in sizes.iter().enumerate() {
            put(&mut store, &bytes(i as u64, len));
        }
        store.commit().unwrap();
        for id in store.ids().unwrap() {
            store.delete_obj(id).unwrap();
        }
        store.commit().unwrap();
        store.compact().unwrap();
        store.close().unwrap();
        assert_eq!(disk.live_image().len(), empty_len, "sizes {sizes:?}");
    }
    // A crash can leave bytes past the last commit's end: compaction still gets down.
    let disk = SimDisk::new();
    BaseStore::create_with(disk.clone(), options()).unwrap().close().unwrap();
    let mut image = disk.live_image();
    image.extend(std::iter::repeat_n(7u8, 4096));
    let disk = SimDisk::from_image(image);
    let mut store = BaseStore::open_with(disk.clone(), options()).unwrap();
    store.compact().unwrap();
    store.close().unwrap();
    assert_eq!(disk.live_image().len(), empty_len);
}

/// A partial rewrite of a committed object copies its old tail into the new copy: a damaged
/// tail must be an error, never carried over under a fresh checksum (through the write
/// buffer for small objects, streamed for large ones).
#[test]
fn a_partial_rewrite_never_launders_a_damaged_tail() {
    for len in [3_000usize, 200_000] {
        let disk = SimDisk::new();
        let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
        let data = bytes(4242, len);
        let id = put(&mut store, &data);
        store.close().unwrap();
        let mut image = disk.live_image();
        let at = image.windows(64).position(|w| w == &data[..64]).unwrap() + len - 10;
        image[at] ^= 0x20;
        let disk = SimDisk::from_image(image);
        let mut store = BaseStore::open_with(disk, options()).unwrap();
        let err = store.write_bytes_to_obj(id, b"new head").unwrap_err();
        assert!(matches!(err, bob_store_core::Error::ChecksumMismatch { .. }), "{len}: {err}");
        assert!(store.read_bytes_from_obj(id).is_err(), "{len}: still reported corrupt");
        store.commit().unwrap();
        assert!(store.read_bytes_from_obj(id).is_err(), "{len}: after commit too");
        assert!(!store.verify().unwrap().is_clean());
    }
}

/// `StoreOptions::mapped_reads` on a real file: objects read back through the memory map
/// before and after commits, overwrites, deletes, a compaction that shrinks the file under the
/// mapping, and a reopen; the store verifies clean throughout.
#[test]
fn mapped_reads_round_trip_through_compaction_and_reopen() {
    fn mapped() -> bob_store_core::StoreOptions {
        bob_store_core::StoreOptions { mapped_reads: true, ..options() }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapped.bob");
    let mut store = Multi::create(&path, mapped()).unwrap();
    assert!(store.backend().mapped_len() > 0, "reads are mapped");
    let mut model = std::collections::BTreeMap::new();
    for i in 0..600u64 {
        let data = bytes(i, [100usize, 4000, 4096, 20_000][i as usize % 4]);
        model.insert(put(&mut store, &data), data);
    }
    store.commit().unwrap();
    assert_eq!(contents(&store).unwrap(), model);
    let ids: Vec<ObjectId> = model.keys().copied().collect();
    for (n, id) in ids.iter().enumerate() {
        if n % 3 == 0 {
            let data = bytes(10_000 + n as u64, model[id].len() + 77);
            store.replace_obj(*id, &data).unwrap();
            model.insert(*id, data);
        } else if n % 3 == 1 {
            store.delete_obj(*id).unwrap();
            model.remove(id);
        }
    }
    store.commit().unwrap();
    assert_eq!(contents(&store).unwrap(), model);
    let before = store.backend().len().unwrap();
    store.compact().unwrap();
    store.compact().unwrap();
    let after = store.backend().len().unwrap();
    assert!(after < before, "compaction shrank the file ({before} -> {after})");
    assert!(store.backend().mapped_len() <= after);
    assert_eq!(contents(&store).unwrap(), model);
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
    let store = Multi::open(&path, mapped()).unwrap();
    assert_eq!(contents(&store).unwrap(), model);
    assert!(store.verify().unwrap().is_clean());
}

/// Mapped reads are the default, and a store file cut short behind the lock (another process
/// that ignores it) does not kill the reader with `SIGBUS`: every object reads back whole
/// or as an error, never as the zeros the fault guard maps over the faulting page, and the
/// store still reads what the file kept. A device read error takes the same path.
#[test]
fn a_store_file_truncated_behind_the_lock_gives_errors_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.bob");
    let mut store = BaseStore::create(&path, bob_store_core::StoreOptions::default()).unwrap();
    assert!(store.backend().mapped_len() > 0, "reads are mapped by default");
    let mut model = std::collections::BTreeMap::new();
    for i in 0..2000u64 {
        let data = bytes(i, 4000);
        model.insert(put(&mut store, &data), data);
    }
    store.commit().unwrap();
    assert_eq!(contents(&store).unwrap(), model);
    let faults = bob_io_helpers::mapped_read_faults();
    let len = store.backend().len().unwrap();
    let intruder = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    intruder.set_len(len / 2).unwrap();
    let (mut read, mut failed) = (0, 0);
    for (id, data) in &model {
        match store.read_bytes_from_obj(*id) {
            Ok(got) => {
                assert!(got == *data, "{id:?} read back wrong bytes");
                read += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert!(read > 0 && failed > 0, "{read} read, {failed} failed");
    assert!(bob_io_helpers::mapped_read_faults() > faults, "the reads went through the map");
    drop(store);
}

/// `open_or_create` creates a missing store, opens an existing one with its objects, and
/// takes an empty file (a creation a crash cut short) for a new store; a file with bytes that
/// are not a store is reported, never created over.
#[test]
fn open_or_create_creates_opens_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let mut store = BaseStore::open_or_create(&path, options()).unwrap();
    let id = put(&mut store, b"kept");
    store.commit().unwrap();
    drop(store);
    for _ in 0..3 {
        let store = BaseStore::open_or_create(&path, options()).unwrap();
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"kept");
    }
    let empty = dir.path().join("empty.bob");
    std::fs::File::create(&empty).unwrap();
    let mut store = BaseStore::open_or_create(&empty, options()).unwrap();
    let id = put(&mut store, b"new");
    store.commit().unwrap();
    drop(store);
    assert_eq!(
        BaseStore::open(&empty, options()).unwrap().read_bytes_from_obj(id).unwrap(),
        b"new"
    );
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, vec![7u8; 10_000]).unwrap();
    assert!(BaseStore::open_or_create(&other, options()).is_err());
    assert_eq!(std::fs::read(&other).unwrap(), vec![7u8; 10_000], "not created over");
}

/// A streaming writer given up with `abort` leaves nothing behind: a new object is never
/// created (not even zero-filled, as a dropped writer's would be), a rewritten or replaced
/// one keeps its bytes, through a commit and a reopen.
#[test]
fn an_aborted_writer_leaves_no_object_and_old_bytes_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let mut store = BaseStore::create(&path, options()).unwrap();
    let kept = put(&mut store, b"kept bytes");
    store.commit().unwrap();
    let count = store.object_count();

    let (new_id, mut writer) = store.late_write_new_obj(1000).unwrap();
    writer.write_all(&[9; 500]).unwrap();
    writer.abort().unwrap();
    assert!(matches!(store.read_bytes_from_obj(new_id), Err(Error::NotFound(_))));
    // An aborted object holds no more space than one written and deleted.
    let space = store.space_in_use().unwrap();
    let (written, writer) = store.late_write_new_obj(1000).unwrap();
    writer.finish().unwrap();
    store.delete_obj(written).unwrap();
    assert_eq!(store.space_in_use().unwrap(), space);
    let mut writer = store.write_to_obj(kept).unwrap();
    writer.write_all(b"LOST").unwrap();
    writer.abort().unwrap();
    let mut writer = store.late_replace_obj(kept, 3).unwrap();
    writer.write_all(b"no").unwrap();
    writer.abort().unwrap();
    assert_eq!(store.space_in_use().unwrap(), space, "the reserved space was given back");
    assert_eq!(store.read_bytes_from_obj(kept).unwrap(), b"kept bytes");
    store.commit().unwrap();
    assert_eq!(store.object_count(), count);
    drop(store);
    let store = BaseStore::open(&path, options()).unwrap();
    assert_eq!(store.read_bytes_from_obj(kept).unwrap(), b"kept bytes");
    assert!(matches!(store.read_bytes_from_obj(new_id), Err(Error::NotFound(_))));
    store.verify().unwrap();
}

/// `compact` converges in one call (a first user had to call it twice: 13.3 % over the data
/// after one, 8.3 % after the second): after it, the file is within a few percent of what is
/// in use, and a second call moves nothing.
#[test]
fn compact_converges_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BaseStore::create(dir.path().join("s"), options()).unwrap();
    let mut x = 7u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ids: Vec<ObjectId> = (0..4000u64)
        .map(|i| put(&mut store, &vec![i as u8; 100 + (next() % 9000) as usize]))
        .collect();
    store.commit().unwrap();
    for (i, id) in ids.iter().enumerate() {
        if next() % 2 == 0 || i % 7 == 0 {
            store.delete_obj(*id).unwrap();
        }
    }
    store.commit().unwrap();
    let first = store.compact().unwrap();
    let (used, len) = store.space_in_use().unwrap().unwrap();
    assert!(first.moved > 0 && first.file_len_after < first.file_len_before / 2, "{first:?}");
    assert!(len as f64 <= used as f64 * 1.05, "{len} bytes for {used} in use");
    let second = store.compact().unwrap();
    assert_eq!((second.moved, second.file_len_after), (0, len), "{second:?}");
    assert!(store.verify().unwrap().is_clean());
}

/// An id's tag survives both ways back from disk: the journal's replay (a crash after
/// journaled commits) and a checkpoint's table pages (after `close`).
#[test]
fn a_stale_id_stays_stale_after_a_replay_and_after_a_checkpoint() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let a = put(&mut store, b"a");
    store.commit().unwrap();
    store.delete_obj(a).unwrap();
    store.commit().unwrap();
    let d = put(&mut store, b"d");
    store.commit().unwrap();
    assert_eq!(d.index(), a.index());
    assert!(store.journaled_commits() > 0, "the commits are journal records");
    let image = disk.crash_image(bob_io_helpers::testing::CrashMode::PowerLoss, 3);
    drop(store);
    let disk = SimDisk::from_image(image);
    for round in ["replayed", "checkpointed"] {
        let store = BaseStore::open_with(disk.clone(), options()).unwrap();
        assert!(matches!(store.read_bytes_from_obj(a), Err(Error::StaleId { .. })), "{round}");
        assert_eq!(store.read_bytes_from_obj(d).unwrap(), b"d", "{round}");
        assert_eq!(store.ids().unwrap(), vec![d], "{round}");
        store.close().unwrap();
    }
}

/// An aborted writer's id goes back to the table and is handed out after the next commit,
/// under a newer tag, even when that commit is a checkpoint that changed nothing else.
#[test]
fn an_aborted_id_comes_back_under_a_newer_tag() {
    let mut store = BaseStore::create_with(SimDisk::new(), options()).unwrap();
    put(&mut store, b"x");
    store.commit().unwrap();
    let (aborted, writer) = store.late_write_new_obj(3).unwrap();
    writer.abort().unwrap();
    store.checkpoint().unwrap();
    let y = put(&mut store, b"y");
    assert_eq!(y.index(), aborted.index());
    assert_ne!(y, aborted);
    assert!(matches!(store.read_bytes_from_obj(aborted), Err(Error::StaleId { .. })));
}

/// A creation cut short before its first header was durable leaves zeros: `open_or_create`
/// creates over them (they hold no data). A file of zeros longer than any creation writes, or
/// with any other byte, is not a store and is never created over.
#[test]
fn open_or_create_finishes_a_creation_a_crash_cut_short() {
    let zeros = vec![0u8; 8192 + 2 * options().journal_bytes as usize];
    let mut store = BaseStore::open_or_create_with(SimDisk::from_image(zeros), options()).unwrap();
    let id = put(&mut store, b"after");
    store.commit().unwrap();
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"after");
    let too_long = vec![0u8; 8192 + 2 * options().journal_bytes as usize + 4096];
    let got = BaseStore::open_or_create_with(SimDisk::from_image(too_long), options());
    assert!(matches!(got, Err(Error::NotAStore(_))));
    let mut one_byte = vec![0u8; 16_384];
    one_byte[9000] = 1;
    let got = BaseStore::open_or_create_with(SimDisk::from_image(one_byte), options());
    assert!(matches!(got, Err(Error::NotAStore(_))));
    // Creations cut short by a power loss at their first sync: each image opens, or is
    // created over, or (a torn header page) is refused, never opened as something else.
    for seed in 0..24 {
        let disk = SimDisk::new();
        disk.set_fault(bob_io_helpers::testing::FaultPlan {
            at: 0,
            on: bob_io_helpers::testing::OpFilter::Only(bob_io_helpers::testing::OpKind::Sync),
            kind: bob_io_helpers::testing::FaultKind::Io,
            repeat: bob_io_helpers::testing::Repeat::Once,
        });
        assert!(BaseStore::create_with(disk.clone(), options()).is_err());
        disk.clear_fault();
        let image = disk.crash_image(bob_io_helpers::testing::CrashMode::PowerLoss, seed);
        let zero = image.iter().all(|&b| b == 0);
        match BaseStore::open_or_create_with(SimDisk::from_image(image), options()) {
            Ok(mut store) => {
                let id = put(&mut store, b"x");
                store.commit().unwrap();
                assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"x");
            }
            Err(Error::NotAStore(_) | Error::Corrupt { .. }) if !zero => {}
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
}
