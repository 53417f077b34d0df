//! Keys up to the limit (1,024 bytes) and values around and past the inline limit: branches
//! with few separators, splits, merges and refills of big entries, values moving in and out
//! of objects of their own, against `BTreeMap`, through reopens.

use std::collections::BTreeMap;
use std::ops::Bound;

use bob_btree::{
    Db, Durability, Error, MAX_INLINE_VALUE_LEN, MAX_KEY_LEN, MAX_VALUE_LEN, Postcard,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16, u32),
    Remove(u8),
    Range(u8, u8),
    Commit,
    Checkpoint,
    Reopen,
}

/// Value lengths: inline, at the inline limit, and past it (in objects of their own).
fn value_len() -> impl Strategy<Value = u32> {
    let inline = MAX_INLINE_VALUE_LEN as u32;
    prop_oneof![
        4 => 0..=inline,
        2 => inline - 2..=inline + 2,
        2 => inline + 1..=40_000,
    ]
}

/// A key of `len` bytes that sorts by `id` first (so one id may have keys of many lengths).
fn key(id: u8, len: u16) -> Vec<u8> {
    let len = usize::from(len).clamp(1, MAX_KEY_LEN);
    let mut k = vec![id; len];
    k[len - 1] = (len % 251) as u8;
    k
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0..=MAX_KEY_LEN as u16, value_len()).prop_map(|(i, k, v)| Op::Put(i, k, v)),
        1 => Just(Op::Checkpoint),
        3 => any::<u8>().prop_map(Op::Remove),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Range(a, b)),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let mut db = Db::create(&path).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        // One session: transactions until a reopen.
        let mut committed = model.clone();
        let mut tx = db.begin_write().unwrap();
        let mut reopen = false;
        for op in ops.by_ref() {
            match op {
                Op::Put(id, k, v) => {
                    let (k, v) = (key(id, k), vec![id; v as usize]);
                    let mut t = tx.open_tree::<Vec<u8>, Vec<u8>>("t").unwrap();
                    assert_eq!(t.insert(&k, &v).unwrap(), model.insert(k, v));
                }
                Op::Remove(id) => {
                    // The first key of this id or after, if any.
                    let Some(k) = model.range(vec![id]..).next().map(|e| e.0.clone()) else {
                        continue;
                    };
                    let mut t = tx.open_tree::<Vec<u8>, Vec<u8>>("t").unwrap();
                    assert_eq!(t.remove(&k).unwrap(), model.remove(&k));
                }
                Op::Range(a, b) => {
                    let (lo, hi) = (vec![a.min(b)], vec![a.max(b), 0xFF]);
                    let t = tx.open_tree::<Vec<u8>, Vec<u8>>("t").unwrap();
                    let view = t.view();
                    let range = (Bound::Included(lo.as_slice()), Bound::Excluded(hi.as_slice()));
                    let got: Vec<Vec<u8>> =
                        view.range::<[u8], _>(range).unwrap().rev().map(|e| e.unwrap().0).collect();
                    let want: Vec<Vec<u8>> =
                        model.range(lo.clone()..hi.clone()).rev().map(|e| e.0.clone()).collect();
                    assert_eq!(got, want);
                }
                Op::Commit => {
                    tx.commit(Durability::Durable).unwrap();
                    committed = model.clone();
                    tx = db.begin_write().unwrap();
                }
                Op::Checkpoint => {
                    // The open transaction first (a checkpoint waits for writers).
                    tx.commit(Durability::Buffered).unwrap();
                    db.checkpoint().unwrap();
                    committed = model.clone();
                    tx = db.begin_write().unwrap();
                }
                Op::Reopen => {
                    reopen = true;
                    break;
                }
            }
        }
        if reopen {
            tx.abort();
            model = committed;
            db.close().unwrap();
            db = Db::open(&path).unwrap();
        } else {
            tx.commit(Durability::Buffered).unwrap();
        }
    }
    db.checkpoint().unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.entries, model.len() as u64);
    let store = db.store().verify().unwrap();
    assert_eq!(
        store.objects,
        1 + report.nodes + report.values + report.deferred,
        "no object leaked"
    );
    db.close().unwrap();
    let db = Db::open(&path).unwrap();
    let read = db.begin_read();
    let all: BTreeMap<Vec<u8>, Vec<u8>> = match read.open_tree::<Vec<u8>, Vec<u8>>("t") {
        Some(t) => t.iter().unwrap().map(Result::unwrap).collect(),
        None => BTreeMap::new(),
    };
    assert_eq!(all, model);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("CI").is_some() { 24 } else { 8 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn big_keys_and_values_match_a_btreemap(ops in prop::collection::vec(op(), 1..300)) {
        run(ops);
    }
}

#[test]
fn limits_and_long_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db.bob")).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<Vec<u8>, Vec<u8>>("t").unwrap();
        let long = vec![0xFFu8; MAX_KEY_LEN + 1];
        assert!(matches!(t.insert(&long, &vec![]), Err(Error::TooLarge { .. })));
        assert!(matches!(
            t.insert(&vec![1], &vec![0; MAX_VALUE_LEN + 1]),
            Err(Error::TooLarge { .. })
        ));
        // Nothing changed, and lookups and bounds of any length work.
        assert_eq!(t.len(), 0);
        t.insert(&vec![5], &vec![5]).unwrap();
        assert_eq!(t.get(long.as_slice()).unwrap(), None);
        assert_eq!(t.remove(long.as_slice()).unwrap(), None);
        let view = t.view();
        let range = (Bound::Unbounded, Bound::Excluded(long.as_slice()));
        let below: Vec<_> = view.range::<[u8], _>(range).unwrap().collect();
        assert_eq!(below.len(), 1);
    }
    tx.commit(Durability::Durable).unwrap();
}

/// A change that fails partway fails the transaction: it can only be aborted, and nothing
/// of it is committed.
#[test]
fn a_failed_change_fails_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path().join("db.bob")).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, Postcard<String>>("t")
        .unwrap()
        .insert(&1, &Postcard("one".into()))
        .unwrap();
    tx.commit(Durability::Durable).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        // The stored value is not a u64: the replace happens, its old value does not decode.
        let mut t = tx.open_tree::<u64, u64>("t").unwrap();
        // Told as a type mismatch, not as damage.
        let err = t.insert(&1, &7).unwrap_err();
        assert!(
            matches!(&err, Error::Codec(bob_treap::Error::TypeMismatch { what: "u64", .. })),
            "{err}"
        );
        assert!(err.to_string().contains("another key or value type"), "{err}");
        assert!(matches!(t.insert(&2, &8), Err(Error::TransactionFailed)));
    }
    assert!(matches!(tx.commit(Durability::Durable), Err(Error::TransactionFailed)));
    let read = db.begin_read();
    let t = read.open_tree::<u64, Postcard<String>>("t").unwrap();
    assert_eq!(t.get(&1).unwrap(), Some(Postcard("one".to_string())));
    assert_eq!(t.len(), 1);
}
