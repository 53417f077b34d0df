//! A crash at every operation (`bob_btree::testing`: the store and every log segment on one
//! operation clock), each file then left as a power loss leaves it. The reopened database
//! must hold one of the commits since the last acknowledged durable one, or the one in
//! flight; a second crash during the recovery of some of those states must leave the same
//! choice.

use std::collections::BTreeMap;

use bob_btree::testing::{Machine, SimDb};
use bob_btree::{DbOptions, Durability};
use bob_store_core::StoreOptions;

type Model = BTreeMap<u64, u64>;

fn options() -> DbOptions {
    DbOptions {
        store: StoreOptions { journal_bytes: 8 * 4096, ..StoreOptions::default() },
        checkpoint_after_bytes: 24 << 10,
        segment_bytes: 12 << 10,
        checkpoint_interval: None,
        ..DbOptions::default()
    }
}

fn contents(db: &SimDb) -> Model {
    let read = db.begin_read();
    let Some(t) = read.open_tree::<u64, u64>("t") else { return Model::new() };
    t.iter().unwrap().map(Result::unwrap).collect()
}

/// The workload; `allowed` holds the commits a recovery may show (from the last
/// acknowledged durable one on, and the one in flight).
fn work(db: &SimDb, allowed: &mut Vec<Model>) -> bob_btree::Result<()> {
    let mut model = Model::new();
    *allowed = vec![model.clone()];
    for round in 0..24u64 {
        let mut next = model.clone();
        let mut tx = db.begin_write()?;
        {
            let mut t = tx.open_tree::<u64, u64>("t")?;
            for i in 0..30u64 {
                let k = (round * 37 + i * 11) % 400;
                if i % 4 == 3 {
                    t.remove(&k)?;
                    next.remove(&k);
                } else {
                    t.insert(&k, &(round * 100 + i))?;
                    next.insert(k, round * 100 + i);
                }
            }
        }
        let durable = round % 3 != 1;
        allowed.push(next.clone()); // in flight: may or may not survive
        tx.commit(if durable { Durability::Durable } else { Durability::Buffered })?;
        model = next;
        if durable {
            *allowed = vec![model.clone()];
        }
        if round % 5 == 4 {
            db.checkpoint()?;
            *allowed = vec![model.clone()];
        }
    }
    Ok(())
}

fn check(machine: &Machine, allowed: &[Model], what: &str) {
    let (_, found) = machine.copy().open(&options(), u64::MAX, |db| {
        assert!(db.verify()?.is_clean(), "{what}");
        Ok(contents(db))
    });
    let found = found.unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert!(
        allowed.contains(&found),
        "{what}: {} entries, not one of the {} allowed commits",
        found.len(),
        allowed.len()
    );
}

#[test]
fn a_crash_at_every_operation_recovers_an_allowed_commit() {
    let mut allowed = Vec::new();
    let (clock, result) = Machine::new().create(&options(), u64::MAX, |db| work(db, &mut allowed));
    result.unwrap();
    let total = clock.ops();
    assert!(total > 60, "{total} operations");
    let step = if std::env::var_os("CI").is_some() { 1 } else { 3 };
    for k in (0..total).step_by(step) {
        let mut machine = Machine::new();
        let mut allowed = Vec::new();
        let mut created = false;
        let (_, _) = machine.create(&options(), k, |db| {
            created = true;
            work(db, &mut allowed)
        });
        if !created {
            continue; // a creation that never returned promised nothing
        }
        let crashed = machine.crashed(k);
        check(&crashed, &allowed, &format!("crash at op {k}"));
        // A second crash during recovery, at a few points of it.
        if k % 7 == 0 {
            for j in [0, 2, 5, 9, 14, 30] {
                let mut base = crashed.copy();
                let _ = base.open(&options(), j, |_| Ok(()));
                check(
                    &base.crashed(k ^ j),
                    &allowed,
                    &format!("crash at op {k}, then {j} of recovery"),
                );
            }
        }
    }
}
