//! A B-tree database, treaps and plain objects in one shared `ConcurrentStore`, from four
//! threads (issue #18): the database's checkpoints rewrite nodes under their ids and then the
//! catalog, and another thread's commit in between would make half a checkpoint durable;
//! `ConcurrentStore::hold_commits` keeps them out. Power-loss images taken while the threads
//! run must each open to a database that verifies, treaps that load whole (one named in the
//! catalog, one whose root a user keeps), and objects that read back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bob_btree::{Db, Durability};
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{BaseStore, ObjectId, StoreOptions, Storer};
use bob_treap::PersistentTreap;

type SimStore = BaseStore<SimDisk>;

fn open(image: Vec<u8>) -> Db<SimStore> {
    let store = SimStore::open_with(SimDisk::from_image(image), StoreOptions::default()).unwrap();
    Db::new(ConcurrentStore::new(store, 0)).unwrap()
}

/// The keys `0..n` of `entries`, in order, for some `n`: a prefix of what was inserted.
fn prefix_len(keys: impl Iterator<Item = u64>) -> u64 {
    let mut n = 0;
    for k in keys {
        assert_eq!(k, n, "not a prefix of the inserted keys");
        n += 1;
    }
    n
}

#[test]
fn a_btree_a_treap_and_objects_share_one_store_across_four_threads_and_power_losses() {
    let disk = SimDisk::new();
    let store = SimStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
    let db = Db::new(ConcurrentStore::new(store, 2)).unwrap();
    let shared = db.shared_store().unwrap();
    // A user's own treap keeps its root in an object of its own (the prime object is the
    // database's); the named treap keeps it in the catalog.
    let holder = shared.write_new_obj_from_bytes(&0u64.to_le_bytes()).unwrap();
    let blob = shared.write_new_obj_from_bytes(&0u64.to_le_bytes()).unwrap();
    shared.commit().unwrap();
    let done = AtomicBool::new(false);
    let images = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let db = &db;
                scope.spawn(move || {
                    for i in 0..60u64 {
                        let mut txn = db.begin_write().unwrap();
                        txn.open_tree::<u64, u64>(&format!("t{t}"))
                            .unwrap()
                            .insert(&i, &(i * 10 + t))
                            .unwrap();
                        // No log: every durable commit is a checkpoint of the store.
                        txn.commit(Durability::Durable).unwrap();
                    }
                })
            })
            .collect();
        let treap = scope.spawn(|| {
            let mut store = shared;
            let mut own: PersistentTreap<u64, u64> = PersistentTreap::new();
            for k in 0..200u64 {
                own.insert(&store, k, k * 3).unwrap();
                db.with_treap("named", |named: &mut PersistentTreap<u64, u64>, store| {
                    named.insert(&store, k, k * 5)
                })
                .unwrap()
                .unwrap();
                if k % 20 == 19 {
                    own.persist_with(&mut store, |store, root| {
                        let raw = root.map_or(0, |r| r.0);
                        Ok(store.replace_obj(holder, &raw.to_le_bytes())?)
                    })
                    .unwrap();
                    store.commit().unwrap();
                    db.save_treap("named").unwrap();
                }
            }
        });
        let objects = scope.spawn(|| {
            let store = shared;
            for n in 1..=150u64 {
                store.update_obj(blob, |b| b.copy_from_slice(&n.to_le_bytes())).unwrap();
                let scratch = store.write_new_obj_from_bytes(&[n as u8; 300]).unwrap();
                store.commit().unwrap();
                store.delete_obj(scratch).unwrap();
            }
            store.commit().unwrap();
        });
        scope.spawn(|| {
            let mut seed = 0;
            while !done.load(Ordering::Acquire) {
                images.lock().unwrap().push(disk.crash_image(CrashMode::PowerLoss, seed));
                seed += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        for writer in writers {
            writer.join().unwrap();
        }
        treap.join().unwrap();
        objects.join().unwrap();
        done.store(true, Ordering::Release);
    });
    db.close().unwrap();
    let mut images = images.into_inner().unwrap();
    images.push(disk.crash_image(CrashMode::PowerLoss, u64::MAX));
    assert!(images.len() >= 3, "only {} images", images.len());
    for (i, image) in images.into_iter().enumerate() {
        let db = open(image);
        assert!(db.verify().unwrap().is_clean(), "image {i}: the database does not verify");
        let read = db.begin_read();
        for t in 0..2u64 {
            if let Some(tree) = read.open_tree::<u64, u64>(&format!("t{t}")) {
                let entries: Vec<(u64, u64)> =
                    tree.iter().unwrap().collect::<bob_btree::Result<_>>().unwrap();
                assert!(entries.iter().all(|&(k, v)| v == k * 10 + t), "image {i}");
                prefix_len(entries.iter().map(|e| e.0));
            }
        }
        drop(read);
        let entries = db
            .with_treap("named", |named: &mut PersistentTreap<u64, u64>, store| named.to_vec(store))
            .unwrap()
            .unwrap();
        assert!(entries.iter().all(|&(k, v)| v == k * 5), "image {i}");
        assert_eq!(prefix_len(entries.iter().map(|e| e.0)) % 20, 0, "image {i}");
        let store = db.shared_store().unwrap();
        let raw =
            u64::from_le_bytes(store.read_bytes_from_obj(holder).unwrap()[..8].try_into().unwrap());
        if raw != 0 {
            let mut tree: PersistentTreap<u64, u64> =
                PersistentTreap::load(&store, ObjectId(raw)).unwrap();
            let entries = tree.to_vec(&store).unwrap();
            assert!(entries.iter().all(|&(k, v)| v == k * 3), "image {i}");
            assert_eq!(prefix_len(entries.iter().map(|e| e.0)) % 20, 0, "image {i}");
            tree.check(&store).unwrap();
        }
        assert_eq!(store.read_bytes_from_obj(blob).unwrap().len(), 8, "image {i}");
        assert!(store.verify().unwrap().is_clean(), "image {i}: the store does not verify");
    }
}

/// A database whose store was handed out (other users may keep objects in it) is never
/// compacted on close by copying its trees into a new file, in that session or any later
/// one (the flag is in the catalog): the copy would leave the other objects behind. It
/// compacts in place, and the other objects survive.
#[test]
fn close_never_copies_a_shared_store_away_from_its_other_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = bob_btree::DbOptions { compact_on_close_min_bytes: 0, ..Default::default() };
    let fill = |db: &Db, from: u64, to: u64, remove: bool| {
        let mut txn = db.begin_write().unwrap();
        {
            let mut tree = txn.open_tree::<u64, Vec<u8>>("t").unwrap();
            for k in from..to {
                if remove {
                    tree.remove(&k).unwrap();
                } else {
                    tree.insert(&k, &vec![7u8; 200]).unwrap();
                }
            }
        }
        txn.commit(Durability::Durable).unwrap();
    };
    let db = Db::create_with(&path, &options).unwrap();
    fill(&db, 0, 2_000, false);
    let store = db.shared_store().unwrap();
    let theirs = store.write_new_obj_from_bytes(b"not the database's").unwrap();
    store.commit().unwrap();
    db.close().unwrap();
    // A later session that never asks for the store makes the file sparse and closes.
    let db = Db::open_with(&path, &options).unwrap();
    fill(&db, 0, 1_990, true);
    db.close().unwrap();
    let db = Db::open_with(&path, &options).unwrap();
    assert_eq!(db.store().read_bytes_from_obj(theirs).unwrap(), b"not the database's");
    assert_eq!(db.begin_read().open_tree::<u64, Vec<u8>>("t").unwrap().len(), 10);
    db.close().unwrap();
}

/// A named treap through the catalog: used by name, saved atomically, found again after a
/// reopen with every entry; its root is never handled by the caller. One treap per name:
/// other types are refused, and so is a save from inside its own change.
#[test]
fn a_named_treap_is_kept_in_the_catalog_across_reopens() {
    type Names = PersistentTreap<String, u64>;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::create(&path).unwrap();
    db.with_treap("names", |names: &mut Names, store| {
        for i in 0..500u64 {
            names.insert(&store, format!("file-{i:04}"), i)?;
        }
        Ok::<_, bob_treap::Error>(())
    })
    .unwrap()
    .unwrap();
    db.save_treap("names").unwrap();
    db.with_treap("names", |names: &mut Names, store| {
        for i in 0..250u64 {
            names.delete(&store, &format!("file-{i:04}"))?;
        }
        Ok::<_, bob_treap::Error>(())
    })
    .unwrap()
    .unwrap();
    db.save_treap("names").unwrap();
    assert_eq!(db.treap_names(), vec!["names".to_string()]);
    let other_types = db.with_treap("names", |_: &mut PersistentTreap<u64, u64>, _| ());
    assert!(matches!(other_types, Err(bob_btree::Error::Codec(_))), "{other_types:?}");
    let nested = db.with_treap("names", |_: &mut Names, _| db.save_treap("names")).unwrap();
    assert!(nested.is_err(), "a save from inside the treap's own change would wait for itself");
    db.close().unwrap();
    let db = Db::open(&path).unwrap();
    let entries =
        db.with_treap("names", |names: &mut Names, store| names.to_vec(store)).unwrap().unwrap();
    assert_eq!(entries.len(), 250);
    assert!(entries.iter().all(|(k, v)| *k == format!("file-{v:04}") && *v >= 250));
    assert_eq!(db.with_treap("other", |fresh: &mut Names, _| fresh.len()).unwrap(), 0);
    db.save_treap("never-used").unwrap();
    assert_eq!(db.treap_names(), vec!["names".to_string()]);
    assert!(db.verify().unwrap().is_clean());
    assert!(db.store().verify().unwrap().is_clean());
    db.close().unwrap();
}

/// Inside a treap's change nothing that could wait for another thread is allowed (it holds
/// the treap): a write transaction, a checkpoint, another treap. A panicking change is
/// dropped, and `discard_treap` drops the changes since the last save.
#[test]
fn a_treap_change_is_refused_what_could_deadlock_and_can_be_undone() {
    type T = PersistentTreap<u64, u64>;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db")).unwrap();
    let would_deadlock = |r: &bob_btree::Result<()>| {
        matches!(r, Err(bob_btree::Error::Store(bob_store_core::Error::WouldDeadlock(_))))
    };
    let inner = db
        .with_treap("a", |_: &mut T, _| {
            [
                db.begin_write().map(drop),
                db.checkpoint(),
                db.with_treap("b", |_: &mut T, _| ()),
                db.save_treap("b"),
            ]
        })
        .unwrap();
    assert!(inner.iter().all(would_deadlock), "{inner:?}");
    assert!(db.begin_read().list_trees().is_empty(), "reads are fine, and nothing was made");
    // Saved: 1..=10. Then a change that fails part way, undone by discard_treap.
    db.with_treap("a", |t: &mut T, store| {
        (1..=10).try_for_each(|k| t.insert(&store, k, k).map(drop))
    })
    .unwrap()
    .unwrap();
    db.save_treap("a").unwrap();
    db.with_treap("a", |t: &mut T, store| t.insert(&store, 99, 99)).unwrap().unwrap();
    db.discard_treap("a").unwrap();
    let len = |db: &Db| db.with_treap("a", |t: &mut T, _| t.len()).unwrap();
    assert_eq!(len(&db), 10);
    // A change that panics leaves nothing behind either.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.with_treap("a", |t: &mut T, store| {
            t.insert(&store, 100, 100).unwrap();
            panic!("a change fails");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(len(&db), 10);
    db.save_treap("never-used").unwrap();
    assert_eq!(db.treap_names(), vec!["a".to_string()]);
    db.close().unwrap();
}

/// A thread holding a guard of the shared store cannot call what may wait for the database's
/// writer lock (a compaction holding it waits for every object lock): refused, not hung.
#[test]
fn a_database_call_while_holding_a_store_guard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db")).unwrap();
    let store = db.shared_store().unwrap();
    let id = store.write_new_obj_from_bytes(b"blob").unwrap();
    store.commit().unwrap();
    let reader = store.late_read_obj(id).unwrap();
    let would_deadlock = |r: bob_btree::Result<()>| {
        matches!(r, Err(bob_btree::Error::Store(bob_store_core::Error::WouldDeadlock(_))))
    };
    assert!(would_deadlock(db.begin_write().map(drop)));
    assert!(would_deadlock(db.checkpoint()));
    assert!(would_deadlock(db.compact()));
    assert!(would_deadlock(db.save_treap("t")));
    assert!(db.begin_read().list_trees().is_empty(), "reads are fine");
    drop(reader);
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&1, &1).unwrap();
    txn.commit(Durability::Durable).unwrap();
    db.close().unwrap();
}

/// A guard taken after the write transaction began, held through its durable commit, with
/// the log past the checkpoint bound: the commit cannot checkpoint (the store's commits
/// cannot be held while this thread holds a guard) and syncs its record instead. It returns
/// `Ok` (it returned `WouldDeadlock` though published, as a helper's review found), the
/// database stays usable, and the change survives a reopen.
#[test]
fn a_durable_commit_with_a_store_guard_held_syncs_instead_of_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = bob_btree::DbOptions { checkpoint_after_bytes: 1, ..Default::default() };
    let db = Db::create_with(&path, &options).unwrap();
    let store = db.shared_store().unwrap();
    let id = store.write_new_obj_from_bytes(b"blob").unwrap();
    store.commit().unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&1, &10).unwrap();
    let reader = store.late_read_obj(id).unwrap();
    txn.commit(Durability::Durable).unwrap();
    drop(reader);
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&2, &20).unwrap();
    txn.commit(Durability::Durable).unwrap();
    drop(db);
    let db = Db::open_with(&path, &options).unwrap();
    let read = db.begin_read();
    let tree = read.open_tree::<u64, u64>("t").unwrap();
    assert_eq!((tree.get(&1).unwrap(), tree.get(&2).unwrap()), (Some(10), Some(20)));
    drop(read);
    db.close().unwrap();
}

/// The thread holding a write transaction cannot call what waits for it (a second
/// transaction, a checkpoint, a sync, a compaction): refused, not hung; other threads wait
/// as before, and once the transaction ends the thread may write again.
#[test]
fn a_call_that_would_wait_for_the_callers_own_write_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db")).unwrap();
    let would_deadlock = |r: bob_btree::Result<()>| {
        matches!(r, Err(bob_btree::Error::Store(bob_store_core::Error::WouldDeadlock(_))))
    };
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&1, &1).unwrap();
    assert!(db.thread_holds_write());
    assert!(would_deadlock(db.begin_write().map(drop)));
    assert!(would_deadlock(db.checkpoint()));
    assert!(would_deadlock(db.sync()));
    assert!(would_deadlock(db.compact()));
    let (acquired, first_done) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            assert!(!db.thread_holds_write());
            let mut txn = db.begin_write().unwrap(); // waits for the first one
            acquired.store(true, Ordering::SeqCst);
            while !first_done.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            // The first transaction's end (its commit went on after releasing the lock)
            // did not clear this thread's mark.
            assert!(db.thread_holds_write());
            assert!(would_deadlock(db.sync()));
            txn.open_tree::<u64, u64>("t").unwrap().insert(&2, &2).unwrap();
            txn.commit(Durability::Durable).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!acquired.load(Ordering::SeqCst), "the other thread waits for the first");
        txn.commit(Durability::Durable).unwrap();
        assert!(!db.thread_holds_write());
        first_done.store(true, Ordering::SeqCst);
        other.join().unwrap();
    });
    assert!(!db.thread_holds_write());
    db.checkpoint().unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&3, &3).unwrap();
    txn.abort();
    assert!(!db.thread_holds_write(), "an aborted transaction clears the mark");
    assert_eq!(db.begin_read().open_tree::<u64, u64>("t").unwrap().len(), 2);
    db.close().unwrap();
}

/// A database opened through a symbolic link keeps its log beside the real file, so every
/// name of the file finds the same log.
#[cfg(unix)]
#[test]
fn a_database_opened_through_a_link_uses_the_real_files_log() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.bob");
    let link = dir.path().join("link.bob");
    Db::create(&real).unwrap().close().unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let db = Db::open(&link).unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&1, &1).unwrap();
    txn.commit(Durability::Durable).unwrap();
    assert!(bob_btree::log_dir_of(&real).is_dir());
    assert!(!bob_btree::log_dir_of(&link).exists(), "no second log beside the link");
    db.close().unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "still a link");
    let db = Db::open(&real).unwrap();
    assert_eq!(db.begin_read().open_tree::<u64, u64>("t").unwrap().len(), 1);
    db.close().unwrap();
}

/// Options without a log (a durable commit is a checkpoint), and nothing in the background:
/// no persistence thread, no compaction at close.
fn unlogged() -> bob_btree::DbOptions {
    bob_btree::DbOptions {
        log: false,
        checkpoint_interval: None,
        compact_on_close_below: None,
        ..Default::default()
    }
}

/// Options under which every logged commit is past the checkpoint bound, with no
/// persistence thread.
fn checkpoint_at_every_commit() -> bob_btree::DbOptions {
    bob_btree::DbOptions {
        checkpoint_after_bytes: 1,
        checkpoint_interval: None,
        ..Default::default()
    }
}

/// A tree of 5,000 entries, and a blob in the shared store to hold a guard on.
fn five_thousand(path: &std::path::Path, options: &bob_btree::DbOptions) -> (Db, ObjectId) {
    let db = Db::create_with(path, options).unwrap();
    let store = db.shared_store().unwrap();
    let id = store.write_new_obj_from_bytes(b"blob").unwrap();
    store.commit().unwrap();
    let mut txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_tree::<u64, u64>("t").unwrap();
        for k in 0..5000u64 {
            t.insert(&k, &(k * 10)).unwrap();
        }
    }
    txn.commit(Durability::Durable).unwrap();
    (db, id)
}

/// Reopens the database at `path` and checks it verifies clean and holds `t` whole
/// (`t_kept`) or not at all.
fn reopened_holds(path: &std::path::Path, options: &bob_btree::DbOptions, t_kept: bool) {
    let db = Db::open_with(path, options).unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let read = db.begin_read();
    match read.open_tree::<u64, u64>("t") {
        Some(t) => {
            assert!(t_kept, "the deleted tree came back");
            for k in (0..5000u64).step_by(97) {
                assert_eq!(t.get(&k).unwrap(), Some(k * 10), "key {k}");
            }
        }
        None => assert!(!t_kept, "the tree was lost"),
    }
    drop(read);
    db.close().unwrap();
}

/// Without a log, a durable commit is a checkpoint, which a thread holding a guard of the
/// store cannot run: refused before anything of it is handed on. (It was refused after the
/// deleted tree's nodes had been queued for freeing, and the next checkpoint deleted nodes
/// the committed tree still held: a helper's review found `verify` failing after a reopen.)
#[test]
fn a_durable_unlogged_commit_under_a_store_guard_is_refused_and_frees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = unlogged();
    let (db, id) = five_thousand(&path, &options);
    let store = db.shared_store().unwrap();
    let mut txn = db.begin_write().unwrap();
    assert!(txn.delete_tree("t").unwrap());
    let reader = store.late_read_obj(id).unwrap();
    let refused = txn.commit(Durability::Durable);
    drop(reader);
    assert!(
        matches!(refused, Err(bob_btree::Error::Store(bob_store_core::Error::WouldDeadlock(_)))),
        "{refused:?}"
    );
    assert_eq!(
        db.begin_read().open_tree::<u64, u64>("t").unwrap().get(&1234).unwrap(),
        Some(12340)
    );
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("u").unwrap().insert(&1, &1).unwrap();
    txn.commit(Durability::Durable).unwrap();
    db.close().unwrap();
    reopened_holds(&path, &options, true);
}

/// With the log, a commit big enough to be a checkpoint of its own is logged instead when
/// its thread holds a guard of the store, and stands (it was refused after its freed nodes
/// were queued, as above).
#[test]
fn a_big_commit_under_a_store_guard_is_logged_instead_of_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = bob_btree::DbOptions {
        checkpoint_interval: None,
        compact_on_close_below: None,
        ..Default::default()
    };
    let (db, id) = five_thousand(&path, &options);
    db.checkpoint().unwrap();
    let store = db.shared_store().unwrap();
    let mut txn = db.begin_write().unwrap();
    assert!(txn.delete_tree("t").unwrap());
    {
        // A load large enough that its commit would bypass the log.
        let mut big = txn.open_tree::<u64, Vec<u8>>("big").unwrap();
        for k in 0..3000u64 {
            big.insert(&k, &vec![7u8; 1000]).unwrap();
        }
    }
    let reader = store.late_read_obj(id).unwrap();
    let logged_before = db.stats().logged_commits;
    txn.commit(Durability::Durable).unwrap();
    drop(reader);
    assert_eq!(db.stats().logged_commits, logged_before + 1, "logged, not a checkpoint");
    assert!(db.begin_read().open_tree::<u64, u64>("t").is_none());
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("u").unwrap().insert(&1, &1).unwrap();
    txn.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    drop(db);
    reopened_holds(&path, &options, false);
}

/// The thread holding the store's commits (`hold_commits`, taken inside its write
/// transaction) commits past the checkpoint bound: no checkpoint is tried (it was, and
/// refused after the commit was published, so a commit that stood reported `Err`), the
/// record is synced, and it survives a reopen.
#[test]
fn a_commit_under_the_threads_own_commit_hold_is_logged_and_stands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = checkpoint_at_every_commit();
    let db = Db::create_with(&path, &options).unwrap();
    let store = db.shared_store().unwrap();
    let mut txn = db.begin_write().unwrap();
    let hold = store.hold_commits().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&1, &10).unwrap();
    txn.commit(Durability::Durable).unwrap();
    hold.commit().unwrap();
    drop(db);
    let db = Db::open_with(&path, &options).unwrap();
    assert_eq!(db.begin_read().open_tree::<u64, u64>("t").unwrap().get(&1).unwrap(), Some(10));
    db.close().unwrap();
}

/// A thread holding the store's commits asked for a write transaction while another
/// thread's commit ran a checkpoint, which holds the writer lock and waits for that hold:
/// both waited for ever (helper-52's review of d7901e4). `begin_write` (and every call that
/// may wait for the writer lock) is now refused under the thread's own hold; the hold's
/// commit then lets the checkpoint go on, and both commits stand.
#[test]
fn regression_a_write_under_the_threads_commit_hold_is_refused_not_a_deadlock() {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = checkpoint_at_every_commit();
    let db = Arc::new(Db::create_with(&path, &options).unwrap());
    let store = db.shared_store().unwrap();
    let hold = store.hold_commits().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let writer = Arc::clone(&db);
    let committer = std::thread::spawn(move || {
        let mut txn = writer.begin_write().unwrap();
        txn.open_tree::<u64, u64>("u").unwrap().insert(&2, &20).unwrap();
        // Past the bound: its checkpoint waits for the hold, the writer lock held.
        let committed = txn.commit(Durability::Durable);
        done_tx.send(()).unwrap();
        committed
    });
    // Until the checkpoint waits (nothing shows it; the test passes either way).
    std::thread::sleep(Duration::from_millis(200));
    for refused in [db.begin_write().err(), db.checkpoint().err(), db.sync().err()] {
        let refused = refused.expect("refused under the thread's own hold");
        assert!(refused.to_string().contains("holds the commits"), "{refused}");
    }
    hold.commit().unwrap();
    done_rx.recv_timeout(Duration::from_secs(10)).expect("the other commit finished");
    committer.join().unwrap().unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.open_tree::<u64, u64>("t").unwrap().insert(&1, &10).unwrap();
    txn.commit(Durability::Durable).unwrap();
    let db = Arc::into_inner(db).unwrap();
    drop(db);
    let db = Db::open_with(&path, &options).unwrap();
    let read = db.begin_read();
    assert_eq!(read.open_tree::<u64, u64>("u").unwrap().get(&2).unwrap(), Some(20));
    assert_eq!(read.open_tree::<u64, u64>("t").unwrap().get(&1).unwrap(), Some(10));
    drop(read);
    db.close().unwrap();
}

/// Without a log, a durable commit with nothing to write runs no checkpoint, so a thread
/// holding a store guard may make one: it is `Ok`, as before d7901e4 refused it
/// (helper-52's review).
#[test]
fn an_empty_durable_unlogged_commit_under_a_store_guard_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = unlogged();
    let (db, id) = five_thousand(&path, &options);
    let store = db.shared_store().unwrap();
    let txn = db.begin_write().unwrap();
    let reader = store.late_read_obj(id).unwrap();
    let result = txn.commit(Durability::Durable);
    drop(reader);
    result.unwrap();
    db.close().unwrap();
}

/// An empty durable commit without a log, from a thread holding the store's commits (taken
/// inside its transaction) or a reader guard, while a treap's save holds the checkpoint
/// lock and waits for that hold or guard: the commit waited for the checkpoint lock, and
/// both waited for ever (helper-53's review of 1a9b61a). It now returns at once (`Ok`, or
/// `WouldDeadlock` while the lock is taken), and the save goes on once the hold or guard is
/// gone.
#[test]
fn regression_an_empty_unlogged_commit_never_waits_for_a_save_that_waits_for_it() {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;
    for guard in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let options = unlogged();
        let (db, id) = five_thousand(&path, &options);
        let db = Arc::new(db);
        let (held_tx, held_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let a = Arc::clone(&db);
        let holder = std::thread::spawn(move || {
            let store = a.shared_store().unwrap();
            let txn = a.begin_write().unwrap();
            let (hold, reader) = if guard {
                (None, Some(store.late_read_obj(id).unwrap()))
            } else {
                (Some(store.hold_commits().unwrap()), None)
            };
            held_tx.send(()).unwrap();
            // Until the save holds the checkpoint lock and waits (the test passes either way).
            std::thread::sleep(Duration::from_millis(300));
            let committed = txn.commit(Durability::Durable);
            done_tx.send(()).unwrap();
            drop(reader);
            if let Some(hold) = hold {
                hold.commit().unwrap();
            }
            committed
        });
        held_rx.recv().unwrap();
        let c = Arc::clone(&db);
        let saver = std::thread::spawn(move || {
            c.save_treap_with("x", |store| {
                if guard {
                    store.delete_obj(id)?;
                }
                Ok(())
            })
        });
        done_rx.recv_timeout(Duration::from_secs(10)).expect("the commit returned");
        match holder.join().unwrap() {
            Ok(()) => {}
            Err(e) => assert!(e.to_string().contains("drop them first"), "guard {guard}: {e}"),
        }
        saver.join().unwrap().unwrap();
        Arc::into_inner(db).unwrap().close().unwrap();
    }
}
