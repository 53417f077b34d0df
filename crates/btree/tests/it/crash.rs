//! A crash at every operation (`bob_btree::testing`: the store and every log segment on one
//! operation clock), each file then left as a power loss leaves it. The reopened database
//! must hold one of the commits since the last acknowledged durable one, or the one in
//! flight; a second crash during the recovery of some of those states must leave the same
//! choice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bob_btree::Durability;
use bob_btree::testing::{Machine, SimDb, State, commits, crash_options, long_value, state};

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

/// The state `commits` durable commits of [`racing_commits`] leave.
fn racing_state(commits: u64) -> State {
    let mut state = State::new();
    for round in 1..=commits {
        state.entry("t".into()).or_default().insert(round, round * 7);
        if round % 3 == 0 {
            state.entry("long".into()).or_default().insert(round % 5, round);
        }
    }
    state
}

/// Durable commits one after another (long values among them), counting the acknowledged.
fn racing_commits(db: &SimDb, acked: &AtomicU64) -> bob_btree::Result<()> {
    for round in 1..=60u64 {
        let mut tx = db.begin_write()?;
        tx.open_tree::<u64, u64>("t")?.insert(&round, &(round * 7))?;
        if round % 3 == 0 {
            let k = round % 5;
            tx.open_tree::<u64, Vec<u8>>("long")?.put(&k, &long_value(k, round))?;
        }
        tx.commit(Durability::Durable)?;
        acked.store(round, Ordering::SeqCst);
    }
    Ok(())
}

/// A power loss while checkpoints (a thread running them back to back) race a writer's
/// durable commits: the reopened database holds every acknowledged commit, and at most the
/// one in flight besides.
#[test]
fn a_crash_while_checkpoints_race_durable_commits_loses_no_acknowledged_one() {
    let runs = if std::env::var_os("CI").is_some() { 60 } else { 20 };
    for run in 0..runs {
        let crash_at = 10 + (run * 37) % 320;
        let mut machine = Machine::new();
        let acked = AtomicU64::new(0);
        let mut created = false;
        let _ = machine.create(&crash_options(), crash_at, |db| {
            created = true;
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !stop.load(Ordering::SeqCst) && db.checkpoint().is_ok() {
                        std::thread::yield_now();
                    }
                });
                let result = racing_commits(db, &acked);
                stop.store(true, Ordering::SeqCst);
                result
            })
        });
        if !created {
            continue; // a creation that never returned promised nothing
        }
        let acked = acked.load(Ordering::SeqCst);
        let allowed = [racing_state(acked), racing_state(acked + 1)];
        let what = format!("run {run}, crash at op {crash_at}, {acked} acknowledged");
        check(&machine.crashed(run), &allowed, &what);
    }
}
