//! Bulk loads and rebuilding a damaged tree from its source.

use bob_btree::{Db, DbOptions, Durability, Error};

fn options() -> DbOptions {
    DbOptions { checkpoint_interval: None, ..DbOptions::default() }
}

#[test]
fn a_bulk_load_fills_nodes_left_to_right_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, String>("t").unwrap();
        let n = t.bulk_load((0..50_000u64).map(|k| (k * 3, format!("v{k}")))).unwrap();
        assert_eq!(n, 50_000);
        assert!(matches!(t.bulk_load([(1, String::new())]), Err(Error::NotEmpty)));
        t.insert(&1, &"one".to_string()).unwrap();
        assert_eq!(t.get(&3).unwrap().as_deref(), Some("v1"));
    }
    {
        // Out of order: an error, and nothing of it stays.
        let mut u = tx.open_tree::<u64, u64>("u").unwrap();
        assert!(matches!(u.bulk_load([(5, 0), (4, 0)]), Err(Error::Unsorted)));
        assert_eq!(u.len(), 0);
        assert_eq!(u.bulk_load(std::iter::empty()).unwrap(), 0);
    }
    tx.commit(Durability::Durable).unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    // About 7/8 full: fewer nodes than inserts one by one would make.
    assert!(report.nodes < 50_000 * 20 / 3000 + 40, "{} nodes", report.nodes);
    db.close().unwrap();
    for _ in 0..3 {
        let db = Db::open_with(&path, &options()).unwrap();
        {
            let read = db.begin_read();
            let t = read.open_tree::<u64, String>("t").unwrap();
            assert_eq!(t.len(), 50_001);
            assert_eq!(t.get(&149_997).unwrap().as_deref(), Some("v49999"));
            assert_eq!(t.range(10..20).unwrap().count(), 3); // 12, 15, 18
        }
        db.close().unwrap();
    }
}

#[test]
fn a_damaged_tree_is_rebuilt_from_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let source: Vec<(u64, u64)> = (0..20_000u64).map(|k| (k, k * k)).collect();
    let db = Db::create_with(&path, &options()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, u64>("index").unwrap().bulk_load(source.iter().copied()).unwrap();
    tx.open_tree::<u64, u64>("other").unwrap().insert(&7, &7).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.close().unwrap();

    // Damage one node of the index: a byte in the middle of the file's node area.
    let mut bytes = std::fs::read(&path).unwrap();
    let magic: Vec<usize> =
        bytes.windows(4).enumerate().filter(|(_, w)| w == b"BOBB").map(|(i, _)| i).collect();
    let victim = magic[magic.len() / 2];
    bytes[victim + 100] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let db = Db::open_with(&path, &options()).unwrap();
    let report = db.verify().unwrap();
    assert!(!report.is_clean(), "the damage is found");
    let mut tx = db.begin_write().unwrap();
    let unreadable = tx.rebuild_tree("index", source.iter().copied()).unwrap();
    assert!(unreadable >= 1);
    tx.commit(Durability::Durable).unwrap();
    assert!(db.verify().unwrap().is_clean());
    db.close().unwrap();
    let db = Db::open_with(&path, &options()).unwrap();
    let read = db.begin_read();
    let t = read.open_tree::<u64, u64>("index").unwrap();
    assert_eq!(t.len(), 20_000);
    assert!(t.iter().unwrap().map(Result::unwrap).eq(source.iter().copied()));
    assert_eq!(read.open_tree::<u64, u64>("other").unwrap().get(&7).unwrap(), Some(7));
}

/// A node whose object is missing: the rebuild frees nothing it should not, the checkpoints
/// after it (and a reopen that replays it) succeed (review 2, finding 1).
#[test]
fn a_tree_with_a_missing_node_is_rebuilt_and_the_database_reopens() {
    use bob_store_core::Storer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let source: Vec<(u64, u64)> = (0..5_000u64).map(|k| (k, k + 1)).collect();
    let db = Db::create_with(&path, &options()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, u64>("index").unwrap().bulk_load(source.iter().copied()).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.close().unwrap();
    // Remove one node's object behind the database's back.
    let mut store = bob_store_core::BaseStore::open(&path, Default::default()).unwrap();
    // The first leaf a bulk load wrote (the lowest id after the catalog): its parent names it.
    let victim = *store.ids().unwrap().iter().filter(|id| id.0 > 0).min().unwrap();
    store.delete_obj(victim).unwrap();
    store.close().unwrap();

    let db = Db::open_with(&path, &options()).unwrap();
    assert!(!db.verify().unwrap().is_clean());
    let mut tx = db.begin_write().unwrap();
    assert_eq!(tx.rebuild_tree("index", source.iter().copied()).unwrap(), 1);
    tx.commit(Durability::Durable).unwrap(); // small: logged, not a checkpoint
    drop(db); // a crash: the rebuild is replayed at open, and checkpointed there
    let db = Db::open_with(&path, &options()).unwrap();
    db.checkpoint().unwrap();
    assert!(db.verify().unwrap().is_clean());
    let report = db.verify().unwrap();
    assert_eq!(
        db.store().verify().unwrap().objects,
        1 + report.nodes + report.values + report.deferred,
        "nothing leaked"
    );
    let read = db.begin_read();
    assert!(
        read.open_tree::<u64, u64>("index")
            .unwrap()
            .iter()
            .unwrap()
            .map(Result::unwrap)
            .eq(source.iter().copied())
    );
}

/// A logged tree delete replays at open even when a node of the deleted tree was damaged
/// after the delete was acknowledged (review 2).
#[test]
fn a_logged_delete_replays_over_a_damaged_node() {
    use bob_store_core::Storer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, u64>("gone").unwrap().bulk_load((0..5_000u64).map(|k| (k, k))).unwrap();
    tx.open_tree::<u64, u64>("kept").unwrap().insert(&1, &1).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap(); // the nodes are in the store
    let mut tx = db.begin_write().unwrap();
    tx.delete_tree("gone").unwrap();
    tx.commit(Durability::Durable).unwrap(); // logged
    drop(db); // a crash before any checkpoint
    let mut store = bob_store_core::BaseStore::open(&path, Default::default()).unwrap();
    let victim = *store.ids().unwrap().iter().filter(|id| id.0 > 0).min().unwrap();
    store.delete_obj(victim).unwrap();
    store.close().unwrap();
    let db = Db::open_with(&path, &options()).unwrap();
    assert_eq!(db.begin_read().list_trees(), ["kept"]);
    assert!(db.verify().unwrap().is_clean());
}

/// Keys inserted in increasing order fill nodes as a bulk load does (a split at a node's
/// end leaves the left one about 7/8 full), not half full; random inserts still split evenly.
#[test]
fn sorted_inserts_fill_nodes_as_a_bulk_load_does() {
    let nodes = |sorted: bool, bulk: bool| {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(dir.path().join("db.bob")).unwrap();
        let mut keys: Vec<u64> = (0..20_000u64).map(|k| k * 3).collect();
        if !sorted {
            keys.sort_by_key(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        let mut tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
            if bulk {
                t.bulk_load(keys.iter().map(|&k| (k, vec![1u8; 100]))).unwrap();
            } else {
                for &k in &keys {
                    t.put(&k, &vec![1u8; 100]).unwrap();
                }
            }
        }
        tx.commit(Durability::Durable).unwrap();
        let report = db.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.entries, 20_000);
        report.nodes
    };
    let (bulk, sorted, random) = (nodes(true, true), nodes(true, false), nodes(false, false));
    assert!(sorted * 10 <= bulk * 11, "sorted inserts: {sorted} nodes, a bulk load {bulk}");
    assert!(random > sorted * 5 / 4, "random inserts: {random} nodes, sorted {sorted}");
}
