//! Random transactions on one tree, checked against `BTreeMap` after every step: commits
//! (durable and buffered), aborts, checkpoints, snapshots held across commits and
//! checkpoints, clean reopens, and crashes (the database dropped without closing it, which
//! loses what was not durable).

use std::collections::BTreeMap;
use std::path::Path;

use bob_btree::{Db, Durability};
use proptest::prelude::*;

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
    Reopen,
    Crash,
}

fn value(key: u16, len: u16) -> Vec<u8> {
    (0..len).map(|i| (key as usize + i as usize) as u8).collect()
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        4 => (0..3000u16, 0..400u16).prop_map(|(k, l)| WriteOp::Insert(k, l)),
        2 => (0..3000u16).prop_map(WriteOp::Remove),
        2 => (0..3000u16).prop_map(WriteOp::RemoveNear),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let durability = prop_oneof![
        3 => Just(Some(Durability::Durable)),
        2 => Just(Some(Durability::Buffered)),
        1 => Just(None),
    ];
    prop_oneof![
        8 => (prop::collection::vec(write_op(), 1..120), durability).prop_map(|(w, d)| Op::Txn(w, d)),
        2 => prop::collection::vec(write_op(), 1..60).prop_map(Op::Snapshot),
        2 => (0..3000u16, 0..3000u16, any::<bool>()).prop_map(|(a, b, r)| Op::Range(a, b, r)),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn apply(db: &Db, ops: &[WriteOp], model: &mut Model, end: Option<Durability>) {
    let mut working = model.clone();
    let mut tx = db.begin_write().unwrap();
    {
        let mut tree = tx.open_tree::<u16, Vec<u8>>("t").unwrap();
        for op in ops {
            match *op {
                WriteOp::Insert(k, len) => {
                    let v = value(k, len);
                    let old = tree.insert(&k, &v).unwrap();
                    assert_eq!(old, working.insert(k, v));
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

fn check_all(db: &Db, model: &Model) {
    let read = db.begin_read();
    let Some(tree) = read.open_tree::<u16, Vec<u8>>("t") else {
        assert!(model.is_empty());
        return;
    };
    assert_eq!(tree.len(), model.len() as u64);
    let all: Vec<(u16, Vec<u8>)> = tree.iter().unwrap().map(Result::unwrap).collect();
    let expected: Vec<(u16, Vec<u8>)> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(all, expected);
    let back: Vec<u16> = tree.iter().unwrap().rev().map(|e| e.unwrap().0).collect();
    assert!(back.iter().eq(model.keys().rev()));
}

fn run(path: &Path, ops: Vec<Op>) {
    let mut db = Db::create(path).unwrap();
    let mut committed = Model::new();
    let mut durable = Model::new();
    for op in ops {
        match op {
            Op::Txn(w, end) => {
                apply(&db, &w, &mut committed, end);
                if end == Some(Durability::Durable) {
                    durable = committed.clone();
                }
            }
            Op::Snapshot(w) => {
                let before = committed.clone();
                let read = db.begin_read();
                apply(&db, &w, &mut committed, Some(Durability::Buffered));
                db.checkpoint().unwrap();
                durable = committed.clone();
                let tree = read.open_tree::<u16, Vec<u8>>("t");
                let seen: Vec<(u16, Vec<u8>)> = match &tree {
                    Some(t) => t.iter().unwrap().map(Result::unwrap).collect(),
                    None => Vec::new(),
                };
                let expected: Vec<(u16, Vec<u8>)> =
                    before.iter().map(|(k, v)| (*k, v.clone())).collect();
                assert_eq!(seen, expected, "a snapshot sees its commit after later ones");
                drop(read);
            }
            Op::Range(a, b, rev) => {
                let (lo, hi) = (a.min(b), a.max(b));
                let read = db.begin_read();
                if let Some(tree) = read.open_tree::<u16, Vec<u8>>("t") {
                    let mut got: Vec<u16> =
                        tree.range(lo..hi).unwrap().map(|e| e.unwrap().0).collect();
                    if rev {
                        let back: Vec<u16> =
                            tree.range(lo..=hi).unwrap().rev().map(|e| e.unwrap().0).collect();
                        let want: Vec<u16> = committed.range(lo..=hi).rev().map(|e| *e.0).collect();
                        assert_eq!(back, want);
                        got.reverse();
                        got.reverse();
                    }
                    let want: Vec<u16> = committed.range(lo..hi).map(|e| *e.0).collect();
                    assert_eq!(got, want);
                    for k in [lo, hi] {
                        assert_eq!(tree.get(&k).unwrap().as_ref(), committed.get(&k));
                    }
                }
            }
            Op::Checkpoint => {
                db.checkpoint().unwrap();
                durable = committed.clone();
            }
            Op::Reopen => {
                db.close().unwrap();
                db = Db::open(path).unwrap();
                durable = committed.clone();
            }
            Op::Crash => {
                drop(db);
                db = Db::open(path).unwrap();
                committed = durable.clone();
            }
        }
        check_all(&db, &committed);
    }
    db.checkpoint().unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.entries, committed.len() as u64);
    let store = db.store().verify().unwrap();
    assert!(store.is_clean(), "{store:?}");
    assert_eq!(store.objects, 1 + report.nodes, "one object per node and the catalog: no leak");
    // Three more open/close cycles.
    for _ in 0..3 {
        db.close().unwrap();
        db = Db::open(path).unwrap();
        check_all(&db, &committed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if std::env::var_os("CI").is_some() { 24 } else { 12 }, ..ProptestConfig::default() })]

    #[test]
    fn the_tree_matches_a_btreemap(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        run(&dir.path().join("db.bob"), ops);
    }
}
