//! `BatchWriter` into a B-tree (`TreeSink`) and into the disk cache: one durable commit per
//! batch (what a batch returned `Ok` for survives a power loss), last wins within a batch,
//! and a batch from a thread that would make the workers wait for it is refused.

use bob_batch_io::{BatchWriter, BatchWriterOptions, DiskCache, DiskCacheOptions, TreeSink};
use bob_btree::testing::{Machine, crash_options};
use bob_btree::{Db, Durability};

fn items(batch: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut items: Vec<(Vec<u8>, Vec<u8>)> =
        (0..60u8).map(|k| (vec![k], vec![k ^ batch; 100 + k as usize])).collect();
    items.push((vec![7], b"the last of key 7 wins".to_vec()));
    items
}

/// Batches into a tree of a database on simulated disks: after each batch, every power-loss
/// image holds the batch whole (its commit synced the log once).
#[test]
fn a_batch_into_a_tree_is_durable_when_it_returns_and_the_last_of_a_key_wins() {
    let mut machine = Machine::new();
    let options = crash_options();
    let (_, made) = machine.create(&options, u64::MAX, |db| {
        let writer = BatchWriter::new(TreeSink::new(db, "t"), BatchWriterOptions { permits: 4 });
        let batch = items(1);
        let refs: Vec<(Vec<u8>, &[u8])> = batch.iter().map(|(k, v)| (k.clone(), &v[..])).collect();
        assert!(writer.write_batch(&refs).iter().all(Result::is_ok));
        let stats = writer.stats();
        assert_eq!((stats.commits, stats.failed), (1, 0));
        assert!(stats.peak_in_flight <= 4);
        Ok(())
    });
    made.unwrap();
    for seed in 0..4 {
        let mut after = machine.crashed(seed);
        let (_, checked) = after.open(&options, u64::MAX, |db| {
            let read = db.begin_read();
            let tree = read.open_tree::<Vec<u8>, Vec<u8>>("t").expect("the batch made the tree");
            assert_eq!(tree.len(), 60, "seed {seed}");
            for k in 0..60u8 {
                let want = if k == 7 {
                    b"the last of key 7 wins".to_vec()
                } else {
                    vec![k ^ 1; 100 + k as usize]
                };
                assert_eq!(tree.get(&vec![k]).unwrap(), Some(want), "seed {seed}, key {k}");
            }
            Ok(())
        });
        checked.unwrap();
    }
}

/// A batch from the thread that holds a write transaction of the database would wait for
/// it: every item is refused, nothing hangs.
#[test]
fn a_batch_from_a_thread_holding_a_write_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db")).unwrap();
    let writer = BatchWriter::new(TreeSink::new(&db, "t"), BatchWriterOptions::default());
    let txn = db.begin_write().unwrap();
    let results = writer.write_batch(&[(b"k".to_vec(), &b"v"[..])]);
    assert!(results.iter().all(|r| matches!(
        r,
        Err(bob_batch_io::Error::Store(e)) if matches!(**e, bob_store_core::Error::WouldDeadlock(_))
    )), "{results:?}");
    txn.commit(Durability::Durable).unwrap();
    assert!(writer.write_batch(&[(b"k".to_vec(), &b"v"[..])]).iter().all(Result::is_ok));
    drop(writer);
    db.close().unwrap();
}

/// Batches into the disk cache: flushed when the batch returns, so a cache dropped without
/// `close` reopens with every item, the last of a key winning.
#[test]
fn a_batch_into_the_cache_is_flushed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
    let writer = BatchWriter::new(&cache, BatchWriterOptions { permits: 3 });
    let batch = items(2);
    let refs: Vec<(Vec<u8>, &[u8])> = batch.iter().map(|(k, v)| (k.clone(), &v[..])).collect();
    assert!(writer.write_batch(&refs).iter().all(Result::is_ok));
    assert_eq!(cache.stats().pending_writes, 0);
    drop(cache); // no close
    let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
    assert_eq!(cache.stats().entries, 60);
    assert_eq!(cache.lookup(&[7]).unwrap().unwrap(), b"the last of key 7 wins");
    assert_eq!(cache.lookup(&[59]).unwrap().unwrap(), vec![59 ^ 2; 159]);
    cache.close().unwrap();
}

/// A batch from a thread the workers would wait for is refused before any item starts:
/// from inside a treap's change, and while holding a guard of the database's store.
#[test]
fn a_batch_from_a_thread_the_workers_would_wait_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db")).unwrap();
    let writer = BatchWriter::new(TreeSink::new(&db, "t"), BatchWriterOptions::default());
    let refused = |results: Vec<bob_batch_io::Result<()>>| {
        results.iter().all(|r| {
            matches!(r, Err(bob_batch_io::Error::Store(e))
                if matches!(**e, bob_store_core::Error::WouldDeadlock(_)))
        })
    };
    let item = [(b"k".to_vec(), &b"v"[..])];
    let inside = db
        .with_treap("names", |_: &mut bob_treap::PersistentTreap<u64, u64>, _| {
            writer.write_batch(&item)
        })
        .unwrap();
    assert!(refused(inside), "from inside a treap's change");
    let store = db.shared_store().unwrap();
    let id = store.write_new_obj_from_bytes(b"blob").unwrap();
    store.commit().unwrap();
    let guard = store.late_read_obj(id).unwrap();
    assert!(refused(writer.write_batch(&item)), "while holding a store guard");
    drop(guard);
    assert!(writer.write_batch(&item).iter().all(Result::is_ok));
    assert!(db.begin_read().open_tree::<Vec<u8>, Vec<u8>>("t").unwrap().len() == 1);
    db.close().unwrap();
}

/// The same durability without a write-ahead log (every commit a checkpoint of its own,
/// buffered ones made durable by the batch's sync).
#[test]
fn a_batch_into_a_tree_without_a_log_is_durable_when_it_returns() {
    let mut machine = Machine::new();
    let options = bob_btree::DbOptions { log: false, ..crash_options() };
    let (_, made) = machine.create(&options, u64::MAX, |db| {
        let writer = BatchWriter::new(TreeSink::new(db, "t"), BatchWriterOptions { permits: 4 });
        let batch = items(3);
        let refs: Vec<(Vec<u8>, &[u8])> = batch.iter().map(|(k, v)| (k.clone(), &v[..])).collect();
        assert!(writer.write_batch(&refs).iter().all(Result::is_ok));
        Ok(())
    });
    made.unwrap();
    for seed in 0..4 {
        let (_, checked) = machine.crashed(seed).open(&options, u64::MAX, |db| {
            let read = db.begin_read();
            let tree = read.open_tree::<Vec<u8>, Vec<u8>>("t").expect("the batch made the tree");
            assert_eq!(tree.len(), 60, "seed {seed}");
            assert_eq!(tree.get(&vec![9]).unwrap(), Some(vec![9 ^ 3; 109]));
            Ok(())
        });
        checked.unwrap();
    }
}

/// A batch into a disk cache on simulated disks survives a power loss once it returned.
#[test]
fn a_batch_into_the_cache_survives_a_power_loss_once_it_returned() {
    let mut machine = Machine::new();
    let options = crash_options();
    let (_, made) = machine.run_owned(&options, u64::MAX, true, |db| {
        let cache =
            DiskCache::with_db(db, DiskCacheOptions { max_buffered: 16, ..Default::default() })
                .map_err(|e| bob_btree::Error::Corrupt(e.to_string()))?;
        let writer = BatchWriter::new(&cache, BatchWriterOptions { permits: 3 });
        let batch = items(4);
        let refs: Vec<(Vec<u8>, &[u8])> = batch.iter().map(|(k, v)| (k.clone(), &v[..])).collect();
        assert!(writer.write_batch(&refs).iter().all(Result::is_ok));
        drop(cache); // no close
        Ok(())
    });
    made.unwrap();
    for seed in 0..4 {
        let (_, checked) = machine.crashed(seed).run_owned(&options, u64::MAX, false, |db| {
            let cache = DiskCache::with_db(db, DiskCacheOptions::default())
                .map_err(|e| bob_btree::Error::Corrupt(e.to_string()))?;
            assert_eq!(cache.stats().entries, 60, "seed {seed}");
            assert_eq!(cache.lookup(&[7]).unwrap().unwrap(), b"the last of key 7 wins");
            assert_eq!(cache.lookup(&[30]).unwrap().unwrap(), vec![30 ^ 4; 130]);
            Ok(())
        });
        checked.unwrap();
    }
}
