//! A B-tree database, a treap and plain objects in one shared `ConcurrentStore`, from four
//! threads (issue #18): the database's checkpoints rewrite nodes under their ids and then the
//! catalog, and another thread's commit in between would make half a checkpoint durable;
//! `ConcurrentStore::hold_commits` keeps them out. Power-loss images taken while the four
//! threads run must each open to a database that verifies, a treap that loads whole, and
//! objects that read back.

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
    // The treap's root lives in an object of its own: the prime object is the database's.
    let holder = db.store().write_new_obj_from_bytes(&0u64.to_le_bytes()).unwrap();
    let blob = db.store().write_new_obj_from_bytes(&0u64.to_le_bytes()).unwrap();
    db.store().commit().unwrap();
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
            let mut shared = db.store();
            let mut tree: PersistentTreap<u64, u64> = PersistentTreap::new();
            for k in 0..200u64 {
                tree.insert(&shared, k, k * 3).unwrap();
                if k % 20 == 19 {
                    tree.persist_with(&mut shared, |store, root| {
                        let raw = root.map_or(0, |r| r.0);
                        Ok(store.replace_obj(holder, &raw.to_le_bytes())?)
                    })
                    .unwrap();
                    shared.commit().unwrap();
                }
            }
        });
        let objects = scope.spawn(|| {
            let store = db.store();
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
        let store = db.store();
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
/// compacted on close by copying its trees into a new file: the copy would leave the other
/// objects behind. It compacts in place, and the other objects survive.
#[test]
fn close_never_copies_a_shared_store_away_from_its_other_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = bob_btree::DbOptions { compact_on_close_min_bytes: 0, ..Default::default() };
    let db = Db::create_with(&path, &options).unwrap();
    let mut txn = db.begin_write().unwrap();
    {
        let mut tree = txn.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 0..2_000u64 {
            tree.insert(&k, &vec![7u8; 200]).unwrap();
        }
    }
    txn.commit(Durability::Durable).unwrap();
    let theirs = db.store().write_new_obj_from_bytes(b"not the database's").unwrap();
    db.store().commit().unwrap();
    let mut txn = db.begin_write().unwrap();
    {
        let mut tree = txn.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 0..1_990u64 {
            tree.remove(&k).unwrap();
        }
    }
    txn.commit(Durability::Durable).unwrap();
    db.close().unwrap();
    let db = Db::open_with(&path, &options).unwrap();
    assert_eq!(db.store().read_bytes_from_obj(theirs).unwrap(), b"not the database's");
    assert_eq!(db.begin_read().open_tree::<u64, Vec<u8>>("t").unwrap().len(), 10);
    db.close().unwrap();
}
