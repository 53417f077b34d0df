//! Values longer than a leaf keeps inline, in store objects of their own: written by the
//! checkpoint, freed by the one after the commit that drops them once no older snapshot is
//! open (deferred, in the catalog, until then), never leaked (through crashes too), and
//! damage to one reported, never returned as data.

use std::collections::BTreeMap;

use bob_btree::{Db, DbOptions, Durability, MAX_INLINE_VALUE_LEN, Postcard};

fn long(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i % 251) as u8)).collect()
}

fn options() -> DbOptions {
    DbOptions { checkpoint_interval: None, ..DbOptions::default() }
}

/// Objects in the store: the catalog, one per node, one per long value; nothing else (with
/// no reader open, a checkpoint leaves no deferred value object).
fn assert_no_leak(db: &Db) {
    db.checkpoint().unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.deferred, 0);
    let store = db.store().verify().unwrap();
    assert!(store.is_clean(), "{store:?}");
    assert_eq!(store.objects, 1 + report.nodes + report.values, "{report:?}");
}

fn contents(db: &Db) -> BTreeMap<u64, Vec<u8>> {
    let read = db.begin_read();
    let Some(t) = read.open_tree::<u64, Vec<u8>>("t") else { return BTreeMap::new() };
    let all: BTreeMap<u64, Vec<u8>> = t.iter().unwrap().map(Result::unwrap).collect();
    // Every way in agrees: gets, both directions, borrowed bytes.
    for (k, v) in &all {
        assert_eq!(t.get(k).unwrap().as_ref(), Some(v));
    }
    let back: Vec<u64> = t.iter().unwrap().rev().map(|e| e.unwrap().0).collect();
    assert!(back.iter().rev().eq(all.keys()));
    let bytes: Vec<usize> =
        t.range_bytes::<u64, _>(..).unwrap().map(|e| e.unwrap().1.len()).collect();
    assert!(bytes.iter().eq(all.values().map(Vec::len).collect::<Vec<_>>().iter()));
    all
}

#[test]
fn long_values_live_in_objects_of_their_own_through_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let mut db = Db::create_with(&path, &options()).unwrap();
    let lens = [0, 1, MAX_INLINE_VALUE_LEN, MAX_INLINE_VALUE_LEN + 1, 4096, 100_000, 3 << 20];
    let mut model = BTreeMap::new();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for (i, &len) in lens.iter().enumerate() {
            let v = long(i as u8, len);
            assert_eq!(t.insert(&(i as u64), &v).unwrap(), None);
            // Readable inside the transaction before any checkpoint wrote it.
            assert_eq!(t.get(&(i as u64)).unwrap(), Some(v.clone()));
            model.insert(i as u64, v);
        }
    }
    // 3 MiB of log: this commit is a checkpoint.
    tx.commit(Durability::Durable).unwrap();
    assert_eq!(contents(&db), model);
    let report = db.verify().unwrap();
    assert_eq!(report.values, 4, "{report:?}");
    assert_no_leak(&db);
    for _ in 0..3 {
        db.close().unwrap();
        db = Db::open_with(&path, &options()).unwrap();
        assert_eq!(contents(&db), model);
    }

    // Long over short, short over long, long over long, removals; logged, replayed at open.
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for (k, v) in [(0, long(50, 5000)), (4, long(51, 10)), (5, long(52, 2000))] {
            let old = t.insert(&k, &v).unwrap();
            assert_eq!(old.as_ref(), model.get(&k));
            model.insert(k, v);
        }
        assert_eq!(t.remove(&3).unwrap(), model.remove(&3));
    }
    tx.commit(Durability::Durable).unwrap();
    assert_eq!(contents(&db), model);
    // A process crash: nothing checkpointed since, the log replays it.
    drop(db);
    db = Db::open_with(&path, &options()).unwrap();
    assert_eq!(contents(&db), model);
    assert_no_leak(&db);
    for _ in 0..3 {
        db.close().unwrap();
        db = Db::open_with(&path, &options()).unwrap();
        assert_eq!(contents(&db), model);
    }
    assert_no_leak(&db);

    // Dropping the tree frees its value objects.
    let mut tx = db.begin_write().unwrap();
    assert!(tx.delete_tree("t").unwrap());
    tx.commit(Durability::Durable).unwrap();
    assert_no_leak(&db);
    assert_eq!(db.store().verify().unwrap().objects, 1);
    db.close().unwrap();
}

/// A reader of a snapshot keeps reading the long values it saw after later checkpoints
/// dropped them: their objects wait (deferred) until it ends, through a crash too.
#[test]
fn an_old_snapshot_reads_long_values_later_checkpoints_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 0..20u64 {
            t.insert(&k, &long(k as u8, 3000)).unwrap();
        }
    }
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    let old = db.begin_read();
    let before = old.open_tree::<u64, Vec<u8>>("t").unwrap();
    // A value read once, so its leaf is in memory; the others load later.
    assert_eq!(before.get(&0).unwrap(), Some(long(0, 3000)));
    for round in 0..3u8 {
        let mut tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
            for k in 0..20u64 {
                if k % 3 == 0 {
                    t.remove(&k).unwrap();
                } else {
                    t.insert(&k, &long(100 + round, 3000 + usize::from(round))).unwrap();
                }
            }
            // New long values that take the freed ids.
            for k in 100..120u64 {
                t.insert(&k, &long(round, 3000)).unwrap();
            }
        }
        tx.commit(Durability::Durable).unwrap();
        db.checkpoint().unwrap();
    }
    for k in 0..20u64 {
        assert_eq!(before.get(&k).unwrap(), Some(long(k as u8, 3000)), "key {k}");
    }
    assert_eq!(before.iter().unwrap().count(), 20);
    let report = db.verify().unwrap();
    assert!(report.deferred >= 20, "{report:?}");
    let store = db.store().verify().unwrap();
    assert_eq!(store.objects, 1 + report.nodes + report.values + report.deferred);
    drop(old);
    let now = contents(&db);
    assert_eq!(now.len(), 13 + 20);
    assert_eq!(now[&1], long(102, 3002));
    assert_no_leak(&db);

    // A crash while objects wait: the catalog names them, the next open's first checkpoint
    // deletes them.
    let old = db.begin_read();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 100..120u64 {
            assert!(t.delete(&k).unwrap());
        }
    }
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    assert_eq!(db.verify().unwrap().deferred, 20);
    drop(old);
    drop(db); // a crash: nothing more written
    let db = Db::open_with(&path, &options()).unwrap();
    assert_eq!(db.verify().unwrap().deferred, 20);
    assert_eq!(contents(&db).len(), 13);
    assert_no_leak(&db);
}

/// Damage to a value object is reported by reads and by `verify`, never returned as data.
#[test]
fn a_damaged_value_object_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    let value = vec![0xA5u8; 6000];
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, Vec<u8>>("t").unwrap().insert(&7, &value).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.close().unwrap();
    // Flip a byte inside the value's bytes (the only 0xA5 run in the file).
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(64).position(|w| w.iter().all(|&b| b == 0xA5)).unwrap() + 100;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let db = Db::open_with(&path, &options()).unwrap();
    let read = db.begin_read();
    let t = read.open_tree::<u64, Vec<u8>>("t").unwrap();
    assert!(t.get(&7).is_err());
    assert!(t.iter().unwrap().next().unwrap().is_err());
    drop(read);
    let report = db.verify().unwrap();
    assert!(!report.is_clean(), "{report:?}");

    // `insert` and `remove` read the damaged value to return it: they fail and change
    // nothing, and the transaction goes on; `put` and `delete` do not read it.
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        assert!(t.insert(&7, &vec![1; 10]).is_err());
        assert!(t.remove(&7).is_err());
        assert_eq!(t.len(), 1);
        assert!(t.put(&7, &vec![2; 5000]).unwrap());
        assert_eq!(t.get(&7).unwrap(), Some(vec![2; 5000]));
    }
    tx.commit(Durability::Durable).unwrap();
    let mut tx = db.begin_write().unwrap();
    assert!(tx.open_tree::<u64, Vec<u8>>("t").unwrap().delete(&7).unwrap());
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    assert!(db.verify().unwrap().is_clean());
}

/// Postcard values that grow past the inline limit move to an object and back.
#[test]
fn a_growing_serde_value_moves_out_of_its_leaf_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    let mut list: Vec<u64> = Vec::new();
    for round in 0..40u64 {
        list.extend(round * 100..round * 100 + 20);
        if round % 10 == 9 {
            list.truncate(5);
        }
        let mut tx = db.begin_write().unwrap();
        tx.open_tree::<String, Postcard<Vec<u64>>>("lists")
            .unwrap()
            .insert("a", &Postcard(list.clone()))
            .unwrap();
        tx.commit(if round % 2 == 0 { Durability::Durable } else { Durability::Buffered }).unwrap();
        if round % 3 == 0 {
            db.checkpoint().unwrap();
        }
    }
    db.close().unwrap();
    let db = Db::open_with(&path, &options()).unwrap();
    let read = db.begin_read();
    let t = read.open_tree::<String, Postcard<Vec<u64>>>("lists").unwrap();
    assert_eq!(t.get("a").unwrap(), Some(Postcard(list)));
    drop(read);
    db.checkpoint().unwrap();
    let report = db.verify().unwrap();
    assert_eq!(db.store().verify().unwrap().objects, 1 + report.nodes + report.values);
}

/// With no more writes, the persistence thread still deletes deferred value objects once
/// the reader that held them ends.
#[test]
fn deferred_values_are_deleted_once_their_reader_ends_without_more_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions {
        checkpoint_interval: Some(std::time::Duration::from_millis(5)),
        ..DbOptions::default()
    };
    let db = Db::create_with(dir.path().join("db.bob"), &options).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, Vec<u8>>("t").unwrap().insert(&1, &long(1, 9000)).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    let old = db.begin_read();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, Vec<u8>>("t").unwrap().put(&1, &long(2, 9000)).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    assert_eq!(db.verify().unwrap().deferred, 1);
    assert_eq!(old.open_tree::<u64, Vec<u8>>("t").unwrap().get(&1).unwrap(), Some(long(1, 9000)));
    drop(old);
    let started = std::time::Instant::now();
    while db.verify().unwrap().deferred != 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "never deleted");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    db.close().unwrap();
}
