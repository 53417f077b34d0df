//! Append placement (`StoreOptions::append_room_percent`): a commit's small objects are laid
//! one after another, so they reach the device as one run, until the free space among the
//! data reaches the bound; then they fill holes.

use bob_alloc::Allocator as _;
use bob_io_helpers::testing::SimDisk;
use bob_store_core::{BaseStore, ObjectId, StoreOptions, Storer};

use crate::{bytes, contents, put};

const OBJECT: usize = 4_000;

/// A store of `count` committed 4,000-byte objects.
fn filled(append_room_percent: u32, count: u64) -> (SimDisk, BaseStore<SimDisk>, Vec<ObjectId>) {
    let disk = SimDisk::new();
    let options = StoreOptions { append_room_percent, ..crate::options() };
    let mut store = BaseStore::create_with(disk.clone(), options).unwrap();
    let ids = (0..count).map(|i| put(&mut store, &bytes(i, OBJECT))).collect();
    store.commit().unwrap();
    (disk, store, ids)
}

/// Writes issued by a commit of rewrites of every `step`-th object, after `rounds` such
/// commits (so the holes the first rounds left are there to be filled).
fn writes_of_scattered_rewrites(append_room_percent: u32, rounds: u64) -> u64 {
    let (disk, mut store, ids) = filled(append_room_percent, 512);
    let mut writes = 0;
    for round in 0..rounds {
        for (i, &id) in ids.iter().enumerate().skip(round as usize).step_by(7) {
            store.write_bytes_to_obj(id, &bytes(round << 32 | i as u64, OBJECT)).unwrap();
        }
        let before = disk.op_counts().writes;
        store.commit().unwrap();
        writes = disk.op_counts().writes - before;
    }
    let found = contents(&store).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let last = (0..rounds).rev().find(|&r| i >= r as usize && (i - r as usize) % 7 == 0);
        let seed = last.map_or(i as u64, |r| r << 32 | i as u64);
        assert_eq!(found[id], bytes(seed, OBJECT), "object {i}");
    }
    assert!(store.verify().unwrap().is_clean());
    writes
}

#[test]
fn a_commit_of_scattered_rewrites_is_one_run_while_appending() {
    // 73 rewrites a commit: the first four fill holes (a small commit is not worth a run),
    // the rest are appended, one write, and the journal record one more (a checkpoint,
    // every few commits with the tests' small journal, writes table pages and a header
    // besides: the last round is a journaled commit).
    let appended = writes_of_scattered_rewrites(100, 3);
    assert!(appended <= 4 + 2, "{appended} writes");
    // Filling holes, the same commit writes into the pages the rounds before it freed.
    let filling = writes_of_scattered_rewrites(0, 3);
    assert!(filling > 20, "{filling} writes");
}

#[test]
fn appends_stop_at_the_bound_and_the_file_stays_within_it() {
    let live = 256 * 4096;
    // A commit's objects: a quarter of them.
    let run = 64 * OBJECT as u64;
    let (_, mut store, ids) = filled(50, 256);
    let mut largest = 0;
    // A quarter of the objects a round: a commit rewriting more than the bound's room must
    // put its new versions somewhere before it frees the old ones, so the bound is the
    // larger of the two.
    for round in 0..24u64 {
        for (i, &id) in ids.iter().enumerate().skip(round as usize % 4).step_by(4) {
            store.write_bytes_to_obj(id, &bytes(round << 32 | i as u64, OBJECT)).unwrap();
        }
        store.commit().unwrap();
        largest = largest.max(store.allocator().file_end());
        // The versions a commit replaces count as free while it appends, so the free space
        // stays at the bound (half the live bytes), give or take the table pages a
        // checkpoint moves and the space held back beside committed bytes, and one commit's
        // run (past the bound, a commit's objects may still begin one run at the end when
        // no hole holds it, while the free space is within the bound plus that run).
        let free = store.allocator().bytes_free();
        assert!(free <= live / 2 + run + 64 * 4096, "round {round}: {free} bytes free");
    }
    assert!(largest > 5 * live / 4, "appends happened: the file reached {largest}");
    // The bound, one commit's run, the table and the journal regions.
    let bound = live / 2 + run + live + (2 << 20) + 64 * 4096;
    assert!(largest < bound, "the file stayed bounded: {largest} bytes, bound {bound}");
    let found = contents(&store).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(found[id], bytes((20 + i as u64 % 4) << 32 | i as u64, OBJECT));
    }
    assert!(store.verify().unwrap().is_clean());
}

/// Found in review: a frontier at the file's end stayed there while appends succeeded, so a
/// hole of a megabyte that deletes opened below it was never appended into and the file grew
/// up to the bound instead (without one, without end).
#[test]
fn appends_move_into_a_large_hole_that_deletes_opened() {
    // The default journal, so no commit here is a checkpoint (whose table pages would move
    // the end past the frontier).
    let options = StoreOptions { append_room_percent: u32::MAX, ..StoreOptions::default() };
    let mut store = BaseStore::create_with(SimDisk::new(), options).unwrap();
    let ids: Vec<ObjectId> = (0..600).map(|i| put(&mut store, &bytes(i, OBJECT))).collect();
    store.commit().unwrap();
    for &id in &ids[..300] {
        store.delete_obj(id).unwrap();
    }
    store.commit().unwrap();
    let end = store.allocator().file_end();
    for round in 0..5u64 {
        for (i, &id) in ids[300..].iter().enumerate().skip(round as usize).step_by(15) {
            store.write_bytes_to_obj(id, &bytes(round << 32 | i as u64, OBJECT)).unwrap();
        }
        store.commit().unwrap();
    }
    assert!(store.allocator().file_end() <= end, "the rewrites went into the hole");
    assert_eq!(store.journaled_commits(), 7, "the scenario: journaled commits only");
    assert!(store.verify().unwrap().is_clean());
}

/// Power loss while appended objects of odd sizes are written after a commit whose last
/// object ends inside a page: the committed objects read back, whatever the lost writes
/// did to the pages they touched.
#[test]
fn a_power_loss_during_appends_keeps_the_committed_objects() {
    use bob_io_helpers::testing::CrashMode;
    for seed in 0..24u64 {
        let disk = SimDisk::new();
        // Unbuffered: every object is written when it is made.
        let options = StoreOptions { write_buffer_bytes: 0, ..crate::options() };
        let mut store = BaseStore::create_with(disk.clone(), options).unwrap();
        let mut committed = std::collections::BTreeMap::new();
        for round in 0..3u64 {
            for i in 0..9u64 {
                let data =
                    bytes(seed << 32 | round << 8 | i, [100, 3_001, 5_000][(i % 3) as usize]);
                committed.insert(put(&mut store, &data), data);
            }
            store.commit().unwrap();
        }
        // Appends after the last commit (rewrites and new objects), written, never committed.
        let ids: Vec<ObjectId> = committed.keys().copied().collect();
        for (i, &id) in ids.iter().enumerate().step_by(2) {
            store.replace_obj(id, &bytes(seed << 40 | i as u64, 2_999)).unwrap();
        }
        for i in 0..9u64 {
            put(&mut store, &bytes(seed << 48 | i, 700));
        }
        let image = disk.crash_image(CrashMode::PowerLoss, seed);
        drop(store);
        let store = BaseStore::open_with(SimDisk::from_image(image), options).unwrap();
        assert!(contents(&store).unwrap() == committed, "seed {seed}: the committed objects");
        assert!(store.verify().unwrap().is_clean());
    }
}

/// Objects of odd sizes appended over many commits share pages with the commit before (its
/// last object's page); those pages are held back, never written, and everything reads back
/// across reopens.
#[test]
fn odd_sized_appends_across_commits_reopen_intact() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), crate::options()).unwrap();
    let mut model = std::collections::BTreeMap::new();
    for round in 0..40u64 {
        for i in 0..5u64 {
            let seed = round * 10 + i;
            let data = bytes(seed, [100, 3_000, 5_000, 1][(seed % 4) as usize]);
            model.insert(put(&mut store, &data), data);
        }
        if let Some((&id, _)) = model.iter().nth(round as usize % model.len()) {
            let data = bytes(round << 40, 2_500);
            store.replace_obj(id, &data).unwrap();
            model.insert(id, data);
        }
        store.commit().unwrap();
        if round % 10 == 9 {
            store.close().unwrap();
            store = BaseStore::open_with(disk.clone(), crate::options()).unwrap();
        }
    }
    assert!(contents(&store).unwrap() == model, "the objects read back");
    assert!(store.verify().unwrap().is_clean());
}

/// Commits of eight one-page objects, each replacing (deleting) one of the commit before, as
/// eight threads committing an object each through a group commit make them, the threads
/// joining one by one: each commit's objects reach the device as one run (two where a run
/// breaks), not one write each. Without runs, the objects settled into every other page
/// (each commit filling the pages the commit before last freed, between the last commit's):
/// eight writes a commit.
#[test]
fn a_group_of_one_page_objects_reaches_the_device_as_one_run() {
    use std::collections::BTreeMap;
    let disk = SimDisk::new();
    // The default journal: the commits are journaled (no table pages between the objects).
    let mut store = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
    let mut slots: Vec<Option<ObjectId>> = vec![None; 8];
    let mut model = BTreeMap::new();
    let mut most = 0;
    for round in 0..48u64 {
        // Thread `t` joins at round `t`.
        for (t, slot) in slots.iter_mut().enumerate().take(round as usize + 1) {
            if let Some(old) = slot.take() {
                store.delete_obj(old).unwrap();
                model.remove(&old);
            }
            let data = bytes(round << 8 | t as u64, 4096);
            let id = put(&mut store, &data);
            model.insert(id, data);
            *slot = Some(id);
        }
        let before = disk.op_counts().writes;
        store.commit().unwrap();
        if round >= 16 {
            most = most.max(disk.op_counts().writes - before);
        }
    }
    // The objects' runs and the journal record.
    assert!(most <= 3, "a commit made {most} writes");
    assert!(contents(&store).unwrap() == model, "the objects read back");
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
    let store = BaseStore::open_with(disk, StoreOptions::default()).unwrap();
    assert!(contents(&store).unwrap() == model, "the objects read back after a reopen");
}

/// Found in review (helper-55): a run's end outlived the object that ended it. An object put
/// and deleted in the same commit gives its space back at once, and the file's end moves
/// back down; the next object then went at the old run's end, past the file's end, leaving a
/// gap of one object behind; a thousand such pairs in one commit grew the file by 4 MiB.
#[test]
fn objects_put_and_deleted_within_a_commit_do_not_push_a_run_past_the_file_end() {
    let options = StoreOptions { append_room_percent: 10, ..StoreOptions::default() };
    let mut store = BaseStore::create_with(SimDisk::new(), options).unwrap();
    let page = vec![7u8; 4096];
    let ids: Vec<ObjectId> = (0..100).map(|_| put(&mut store, &page)).collect();
    store.commit().unwrap();
    // Single-page holes: more free space than the append room, so objects fill holes.
    for &id in ids.iter().step_by(7) {
        store.delete_obj(id).unwrap();
    }
    store.commit().unwrap();
    // A commit of four objects: the next one expects a run of four.
    for _ in 0..4 {
        put(&mut store, &page);
    }
    store.commit().unwrap();
    let end = store.allocator().file_end();
    for _ in 0..1_000 {
        let id = put(&mut store, &page);
        store.delete_obj(id).unwrap();
    }
    let kept = put(&mut store, &page);
    store.commit().unwrap();
    let grown = store.allocator().file_end().saturating_sub(end);
    assert!(grown <= 16 * 4096, "the file grew by {grown} bytes for one object");
    assert_eq!(contents(&store).unwrap()[&kept], page);
    assert!(store.verify().unwrap().is_clean());
}

/// Power loss while a commit's objects are being laid as runs in holes (appending past its
/// bound), objects of odd sizes so that a run's objects share pages with each other and
/// start beside committed bytes: whatever the lost writes did to the pages they touched
/// (new, old, zeroed or garbage, page by page), the committed objects read back.
#[test]
fn a_power_loss_while_runs_fill_holes_keeps_the_committed_objects() {
    use bob_io_helpers::testing::CrashMode;
    use std::collections::BTreeMap;
    for seed in 0..24u64 {
        let disk = SimDisk::new();
        // Unbuffered, every object is written as it is made; a small append room, so the
        // objects fill holes.
        let options =
            StoreOptions { write_buffer_bytes: 0, append_room_percent: 10, ..crate::options() };
        let mut store = BaseStore::create_with(disk.clone(), options).unwrap();
        let mut committed = BTreeMap::new();
        let mut slots: Vec<Option<ObjectId>> = vec![None; 8];
        let sizes = [3_001, 4_096, 5_000, 700];
        let mut round_of =
            |store: &mut BaseStore<SimDisk>, round: u64, model: &mut BTreeMap<_, _>| {
                for (t, slot) in slots.iter_mut().enumerate() {
                    if let Some(old) = slot.take() {
                        store.delete_obj(old).unwrap();
                        model.remove(&old);
                    }
                    let data =
                        bytes(seed << 32 | round << 8 | t as u64, sizes[(round as usize + t) % 4]);
                    let id = put(store, &data);
                    model.insert(id, data);
                    *slot = Some(id);
                }
            };
        for round in 0..12u64 {
            round_of(&mut store, round, &mut committed);
            store.commit().unwrap();
        }
        // One more round, written and never committed.
        let mut pending = committed.clone();
        round_of(&mut store, 12, &mut pending);
        let image = disk.crash_image(CrashMode::PowerLoss, seed);
        drop(store);
        let store = BaseStore::open_with(SimDisk::from_image(image), options).unwrap();
        assert!(contents(&store).unwrap() == committed, "seed {seed}: the committed objects");
        assert!(store.verify().unwrap().is_clean());
    }
}
