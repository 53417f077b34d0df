//! A crash at every operation (`bob_btree::testing`: the store and every log segment on one
//! operation clock), each file then left as a power loss leaves it. The reopened database
//! must hold one of the commits since the last acknowledged durable one, or the one in
//! flight; a second crash during the recovery of some of those states must leave the same
//! choice.

use bob_btree::testing::{
    Machine, State, commits, crash_options, race, racing_state, shrink, shrink_options, state,
};

fn check(machine: &Machine, allowed: &[State], what: &str) {
    let (_, found) = machine.copy().open(&crash_options(), u64::MAX, |db| {
        assert!(db.verify()?.is_clean(), "{what}");
        state(db)
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
    let (clock, result) =
        Machine::new().create(&crash_options(), u64::MAX, |db| commits(db, &mut allowed));
    result.unwrap();
    let total = clock.ops();
    assert!(total > 60, "{total} operations");
    let step = if std::env::var_os("CI").is_some() { 1 } else { 3 };
    for k in (0..total).step_by(step) {
        let mut machine = Machine::new();
        let mut allowed = Vec::new();
        let mut created = false;
        let (_, _) = machine.create(&crash_options(), k, |db| {
            created = true;
            commits(db, &mut allowed)
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
                let _ = base.open(&crash_options(), j, |_| Ok(()));
                check(
                    &base.crashed(k ^ j),
                    &allowed,
                    &format!("crash at op {k}, then {j} of recovery"),
                );
            }
        }
    }
}

/// A power loss while checkpoints (a thread running them back to back) race a writer's
/// durable commits: the reopened database holds every acknowledged commit, and at most the
/// one in flight besides.
#[test]
fn a_crash_while_checkpoints_race_durable_commits_loses_no_acknowledged_one() {
    let runs = if std::env::var_os("CI").is_some() { 60 } else { 20 };
    for run in 0..runs {
        let crash_at = 10 + (run * 37) % 320;
        let (machine, acked) = race(crash_at);
        let Some(acked) = acked else { continue }; // a creation that never returned
        let allowed = [racing_state(acked), racing_state(acked + 1)];
        let what = format!("run {run}, crash at op {crash_at}, {acked} acknowledged");
        check(&machine.crashed(run), &allowed, &what);
    }
}

/// A close that compacts the store into a new file (the copy written and closed, renamed over
/// the store, the directory synced, the log released), crashed at every operation; each file
/// then left as the process's death leaves it, and as a power loss does (which may undo a
/// rename the directory's sync had not made durable). The reopened database holds the last
/// durable commit or the buffered one after it, and a copy left behind is removed.
#[test]
fn a_crash_at_every_operation_of_a_compacting_close_loses_nothing() {
    let options = shrink_options();
    let mut allowed = Vec::new();
    let mut machine = Machine::new();
    let (clock, before) = machine.create_then_close(&options, u64::MAX, |db| {
        shrink(db, &mut allowed)?;
        Ok(db.space_in_use()?.expect("a complete open").1)
    });
    let before = before.unwrap();
    let last = allowed.last().unwrap().clone();
    let (_, after) = machine.open(&options, u64::MAX, |db| {
        assert!(db.verify()?.is_clean());
        assert_eq!(state(db)?, last);
        db.store().complete_open()?;
        Ok(db.store().space_in_use()?.expect("a complete open"))
    });
    let (used, after) = after.unwrap();
    assert!(after < before, "the store is {after} bytes after the close, {before} before");
    assert!(used * 5 > after, "{used} of {after} bytes in use after the compaction");
    let total = clock.ops();
    let (opened, _) = Machine::new().create(&options, u64::MAX, |db| shrink(db, &mut Vec::new()));
    let first = opened.ops();
    assert!(total > first + 20, "the close ran {} operations", total - first);
    for k in first..total {
        let mut machine = Machine::new();
        let mut allowed = Vec::new();
        let _ = machine.create_then_close(&options, k, |db| shrink(db, &mut allowed));
        check(&machine, &allowed, &format!("process crash at op {k} of {total}"));
        for seed in [k, k + 1] {
            let crashed = machine.crashed(seed);
            check(&crashed, &allowed, &format!("power loss at op {k} of {total} (seed {seed})"));
            let mut reopened = crashed.copy();
            let (_, done) = reopened.open(&options, u64::MAX, |_| Ok(()));
            done.unwrap();
            assert!(!reopened.has_copy(), "a copy left at op {k} outlives the next open");
        }
    }
}

/// For every operation of a compacting close (the rename perhaps made but not yet durable):
/// the machine the close cut short there, as a second session finds it, with the states the
/// first session may have left.
fn after_each_cut_close(mut then: impl FnMut(u64, Machine, &[State])) {
    let options = shrink_options();
    let (clock, _) =
        Machine::new().create_then_close(&options, u64::MAX, |db| shrink(db, &mut Vec::new()));
    let total = clock.ops();
    let (opened, _) = Machine::new().create(&options, u64::MAX, |db| shrink(db, &mut Vec::new()));
    for k in opened.ops()..total {
        let mut machine = Machine::new();
        let mut allowed = Vec::new();
        let _ = machine.create_then_close(&options, k, |db| shrink(db, &mut allowed));
        then(k, machine.copy(), &allowed);
    }
}

/// A second session (not closed: a close that compacts again would settle the rename
/// itself) that reads the state, does `work`, and must leave `found` plus `add` durable
/// through a power loss after it.
fn second_session_survives(
    k: u64,
    mut next: Machine,
    allowed: &[State],
    work: impl FnOnce(&bob_btree::testing::SimDb) -> bob_btree::Result<()>,
    add: Option<(u64, u64)>,
) {
    let (_, found) = next.open(&shrink_options(), u64::MAX, |db| {
        let found = state(db)?;
        work(db)?;
        Ok(found)
    });
    let mut found = found.unwrap_or_else(|e| panic!("op {k}: the second session failed: {e}"));
    assert!(allowed.contains(&found), "op {k}: the second session opened another state");
    if let Some((key, value)) = add {
        found.entry("t".into()).or_default().insert(key, value);
    }
    for seed in [k, k + 1] {
        check(&next.crashed(seed), std::slice::from_ref(&found), &format!("op {k}, seed {seed}"));
    }
}

/// The second sessions' one write: key 1,000,000 of tree `t`, committed durably.
fn put_one_durably(db: &bob_btree::testing::SimDb) -> bob_btree::Result<()> {
    let mut tx = db.begin_write()?;
    tx.open_tree::<u64, u64>("t")?.put(&1_000_000, &1)?;
    tx.commit(bob_btree::Durability::Durable)
}

/// A compacting close cut short at every operation, then a session whose one durable commit
/// is logged (no checkpoint, so no release of the log), then a power loss: the commit
/// survives. (In this simulation it survives without the settle too: the old file comes
/// back with the first session's log whole, whose records lead up to the commit's. Kept
/// for the property.)
#[test]
fn a_durable_commit_after_a_rename_left_undurable_survives_a_power_loss() {
    after_each_cut_close(|k, next, allowed| {
        second_session_survives(k, next, allowed, put_one_durably, Some((1_000_000, 1)));
    });
}

/// As above, with a second session that writes nothing and calls `Db::sync`: the commits
/// it saw (the first session's last, a buffered one, in the copy) are durable once `sync`
/// returns, so the rename under them must be. (As above, this simulation keeps them without
/// the settle too.)
#[test]
fn a_sync_after_a_rename_left_undurable_makes_what_it_saw_durable() {
    after_each_cut_close(|k, next, allowed| {
        second_session_survives(k, next, allowed, |db| db.sync(), None);
    });
}

/// As above, with the second session's one durable change an object committed through the
/// store it shares (`Db::shared_store`): no write transaction, no log; the object survives.
#[test]
fn a_shared_store_commit_after_a_rename_left_undurable_survives_a_power_loss() {
    let options = shrink_options();
    after_each_cut_close(|k, mut next, _| {
        let (_, written) = next.open(&options, u64::MAX, |db| {
            let store = db.shared_store()?;
            let id = store.write_new_obj_from_bytes(b"kept")?;
            store.commit()?;
            Ok(id)
        });
        let id = written.unwrap_or_else(|e| panic!("op {k}: the second session failed: {e}"));
        for seed in [k, k + 1] {
            let (_, read) = next
                .crashed(seed)
                .copy()
                .open(&options, u64::MAX, |db| Ok(db.shared_store()?.read_bytes_from_obj(id)?));
            let read = read.unwrap_or_else(|e| panic!("op {k}, seed {seed}: {e}"));
            assert_eq!(read, b"kept", "op {k}, seed {seed}");
        }
    });
}

/// A compacting close cut short at every operation, then a session that commits and
/// checkpoints (releasing the log) and is not closed, then a power loss: the rename the first
/// session left is made durable before the second releases the log, so the power loss cannot
/// bring the old file back without the log it needs.
#[test]
fn a_rename_left_undurable_is_settled_before_a_later_session_releases_the_log() {
    after_each_cut_close(|k, next, allowed| {
        let commit_and_checkpoint = |db: &bob_btree::testing::SimDb| {
            put_one_durably(db)?;
            db.checkpoint()
        };
        second_session_survives(k, next, allowed, commit_and_checkpoint, Some((1_000_000, 1)));
    });
}
