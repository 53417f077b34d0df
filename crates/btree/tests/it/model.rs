//! Random transactions on one tree, checked against `BTreeMap` after every step: commits
//! (durable and buffered), aborts, checkpoints, log syncs, snapshots held across commits and
//! checkpoints, clean reopens, process crashes (every write the kernel got survives) and
//! power losses (each page written since its file's last sync is new, old, zeroed or
//! garbage), on simulated disks for the store and each log segment.

use std::collections::BTreeMap;

use bob_alloc::BasicAllocator;
use bob_btree::{Db, DbOptions, Durability};
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{Store, StoreOptions};
use proptest::prelude::*;

use crate::sim::{SimDb, SimLogDir};

type Model = BTreeMap<u16, Vec<u8>>;

#[derive(Debug, Clone)]
enum WriteOp {
    Insert(u16, u16),
    Remove(u16),
    RemoveNear(u16),
}

#[derive(Debug, Clone)]
enum Op {
    Txn(Vec<WriteOp>, Option<Durability>),
    /// A snapshot taken before a transaction and read (whole) after it and a checkpoint.
    Snapshot(Vec<WriteOp>),
    Range(u16, u16, bool),
    Checkpoint,
    Sync,
    Reopen,
    ProcessCrash,
    PowerLoss(u64),
}

fn value(key: u16, len: u16) -> Vec<u8> {
    (0..len).map(|i| (key as usize + i as usize) as u8).collect()
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        4 => (0..3000u16, 0..400u16).prop_map(|(k, l)| WriteOp::Insert(k, l)),
        // Longer than a leaf keeps inline: a value object of its own.
        1 => (0..3000u16, 1000..9000u16).prop_map(|(k, l)| WriteOp::Insert(k, l)),
        2 => (0..3000u16).prop_map(WriteOp::Remove),
        2 => (0..3000u16).prop_map(WriteOp::RemoveNear),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let durability = prop_oneof![
        3 => Just(Some(Durability::Durable)),
        3 => Just(Some(Durability::Buffered)),
        1 => Just(None),
    ];
    prop_oneof![
        8 => (prop::collection::vec(write_op(), 1..120), durability).prop_map(|(w, d)| Op::Txn(w, d)),
        2 => prop::collection::vec(write_op(), 1..60).prop_map(Op::Snapshot),
        2 => (0..3000u16, 0..3000u16, any::<bool>()).prop_map(|(a, b, r)| Op::Range(a, b, r)),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => Just(Op::ProcessCrash),
        2 => any::<u64>().prop_map(Op::PowerLoss),
    ]
}

pub(crate) fn options() -> DbOptions {
    DbOptions {
        store: StoreOptions { journal_bytes: 16 * 4096, ..StoreOptions::default() },
        // Small, so that checkpoints run on their own and segments roll and are released.
        checkpoint_after_bytes: 96 << 10,
        segment_bytes: 32 << 10,
        // A busy persistence thread: checkpoints and evictions race every step.
        checkpoint_interval: Some(std::time::Duration::from_millis(2)),
        memory_budget: 48 << 10,
        ..DbOptions::default()
    }
}

fn apply(db: &SimDb, ops: &[WriteOp], model: &mut Model, end: Option<Durability>) {
    let mut working = model.clone();
    let mut tx = db.begin_write().unwrap();
    {
        let mut tree = tx.open_tree::<u16, Vec<u8>>("t").unwrap();
        for op in ops {
            match *op {
                // Odd lengths and keys through the variants that return no old value.
                WriteOp::Insert(k, len) if len % 2 == 1 => {
                    let v = value(k, len);
                    assert_eq!(tree.put(&k, &v).unwrap(), working.insert(k, v).is_some());
                }
                WriteOp::Insert(k, len) => {
                    let v = value(k, len);
                    let old = tree.insert(&k, &v).unwrap();
                    assert_eq!(old, working.insert(k, v));
                }
                WriteOp::Remove(k) if k % 2 == 1 => {
                    assert_eq!(tree.delete(&k).unwrap(), working.remove(&k).is_some());
                }
                WriteOp::Remove(k) => assert_eq!(tree.remove(&k).unwrap(), working.remove(&k)),
                WriteOp::RemoveNear(k) => {
                    // The first key at or after k: removes hit present keys often.
                    let Some(&near) = working.range(k..).next().map(|(k, _)| k) else { continue };
                    assert_eq!(tree.remove(&near).unwrap(), working.remove(&near));
                }
            }
            assert_eq!(tree.len(), working.len() as u64);
        }
        let seen: Vec<(u16, Vec<u8>)> = tree.view().iter().unwrap().map(Result::unwrap).collect();
        assert!(seen.iter().map(|e| &e.0).eq(working.keys()), "the writer sees its changes");
    }
    match end {
        Some(d) => {
            tx.commit(d).unwrap();
            *model = working;
        }
        None => tx.abort(),
    }
}

fn contents(db: &SimDb) -> Option<Model> {
    let read = db.begin_read();
    let tree = read.open_tree::<u16, Vec<u8>>("t")?;
    let all: Model = tree.iter().unwrap().map(Result::unwrap).collect();
    assert_eq!(tree.len(), all.len() as u64);
    let back: Vec<u16> = tree.iter().unwrap().rev().map(|e| e.unwrap().0).collect();
    assert!(back.iter().eq(all.keys().rev()));
    Some(all)
}

fn check_all(db: &SimDb, model: &Model) {
    assert_eq!(contents(db).unwrap_or_default(), *model);
}

/// Everything durable and consistent: the trees verify and every object is a node.
fn check_sound(db: &SimDb) {
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
}

struct Disks {
    store: SimDisk,
    log: SimLogDir,
}

fn open(disks: &Disks) -> SimDb {
    let store =
        Store::<BasicAllocator, _>::open_with(disks.store.clone(), options().store).unwrap();
    Db::with_log(ConcurrentStore::new(store, 0), Box::new(disks.log.clone()), &options()).unwrap()
}

fn run(ops: Vec<Op>) {
    let mut disks = Disks { store: SimDisk::new(), log: SimLogDir::default() };
    let store =
        Store::<BasicAllocator, _>::create_with(disks.store.clone(), options().store).unwrap();
    let mut db =
        Db::with_log(ConcurrentStore::new(store, 0), Box::new(disks.log.clone()), &options())
            .unwrap();
    // Committed states since the last durable one, which is the first.
    let mut history = vec![Model::new()];
    for op in ops {
        match op {
            Op::Txn(w, end) => {
                let mut model = history.last().unwrap().clone();
                apply(&db, &w, &mut model, end);
                match end {
                    Some(Durability::Durable) => history = vec![model],
                    Some(Durability::Buffered) => history.push(model),
                    None => {}
                }
            }
            Op::Snapshot(w) => {
                let before = history.last().unwrap().clone();
                let read = db.begin_read();
                let mut model = before.clone();
                apply(&db, &w, &mut model, Some(Durability::Buffered));
                db.checkpoint().unwrap();
                history = vec![model];
                let tree = read.open_tree::<u16, Vec<u8>>("t");
                let seen: Model = match &tree {
                    Some(t) => t.iter().unwrap().map(Result::unwrap).collect(),
                    None => Model::new(),
                };
                assert_eq!(seen, before, "a snapshot sees its commit after later ones");
            }
            Op::Range(a, b, rev) => {
                let (lo, hi) = (a.min(b), a.max(b));
                let committed = history.last().unwrap();
                let read = db.begin_read();
                if let Some(tree) = read.open_tree::<u16, Vec<u8>>("t") {
                    let got: Vec<u16> = tree.range(lo..hi).unwrap().map(|e| e.unwrap().0).collect();
                    let want: Vec<u16> = committed.range(lo..hi).map(|e| *e.0).collect();
                    assert_eq!(got, want);
                    if rev {
                        let back: Vec<u16> =
                            tree.range(lo..=hi).unwrap().rev().map(|e| e.unwrap().0).collect();
                        let want: Vec<u16> = committed.range(lo..=hi).rev().map(|e| *e.0).collect();
                        assert_eq!(back, want);
                    }
                    for k in [lo, hi] {
                        assert_eq!(tree.get(&k).unwrap().as_ref(), committed.get(&k));
                    }
                }
            }
            Op::Checkpoint => {
                db.checkpoint().unwrap();
                history = vec![history.pop().unwrap()];
            }
            Op::Sync => {
                db.sync().unwrap();
                history = vec![history.pop().unwrap()];
            }
            Op::Reopen => {
                db.close().unwrap();
                db = open(&disks);
                history = vec![history.pop().unwrap()];
            }
            Op::ProcessCrash => {
                drop(db);
                // Unsynced writes stay unsynced: a later power loss may still lose them,
                // unless the reopened database makes them durable.
                disks = Disks {
                    store: disks.store.after_process_crash(),
                    log: disks.log.after_process_crash(),
                };
                db = open(&disks);
                // The kernel has every log write: buffered commits survive.
                history = vec![history.pop().unwrap()];
            }
            Op::PowerLoss(seed) => {
                drop(db);
                disks = Disks {
                    store: disks.store.crashed(CrashMode::PowerLoss, seed),
                    log: disks.log.crashed(CrashMode::PowerLoss, seed),
                };
                db = open(&disks);
                let found = contents(&db).unwrap_or_default();
                let at = history.iter().position(|m| *m == found);
                assert!(
                    at.is_some(),
                    "after a power loss: {} entries, none of the {} commits since the last \
                     durable one",
                    found.len(),
                    history.len()
                );
                history = vec![found];
            }
        }
        check_all(&db, history.last().unwrap());
    }
    db.checkpoint().unwrap();
    check_sound(&db);
    let report = db.verify().unwrap();
    let store = db.store().verify().unwrap();
    assert!(store.is_clean(), "{store:?}");
    assert_eq!(
        store.objects,
        1 + report.nodes + report.values + report.deferred,
        "one object per node and long value, and the catalog: no leak"
    );
    // Three more open/close cycles.
    let last = history.pop().unwrap();
    for _ in 0..3 {
        db.close().unwrap();
        db = open(&disks);
        check_all(&db, &last);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("CI").is_some() { 48 } else { 16 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_tree_matches_a_btreemap(ops in prop::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
