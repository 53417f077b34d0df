//! Campaign 11: the B-tree database (`bob-btree`): a crash at every operation of its
//! workloads (the store and every log segment on one operation clock), each file then left as
//! a process crash or a power loss leaves it, and for some of those states a second crash
//! during the recovery. The reopened database must hold one of the commits since the last
//! acknowledged durable one, or the one in flight, and verify clean. Then power losses while a
//! thread checkpoints back to back racing a writer's durable commits (the operation clock
//! shared by both threads, the crash point spread over the run): every acknowledged commit
//! must be there. The third workload ends with a close that compacts the store by copying
//! the trees into a new file renamed over the old one (a power loss may undo a rename the
//! directory's sync had not made durable).

use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_btree::Durability;
use bob_btree::testing::{
    Machine, SimDb, State, commits, crash_options, race, racing_state, shrink, shrink_options,
    state,
};

use super::Budget;
use crate::report::Figures;

/// A workload: runs on a database and keeps `allowed` (the states a recovery may show) up to
/// date as it goes.
type Work = fn(&SimDb, &mut Vec<State>) -> bob_btree::Result<()>;

/// Named trees created, renamed and deleted; a bulk load big enough to be a checkpoint of
/// its own; a rebuild.
fn trees(db: &SimDb, allowed: &mut Vec<State>) -> bob_btree::Result<()> {
    let mut model = State::new();
    *allowed = vec![model.clone()];
    let step =
        |db: &SimDb,
         allowed: &mut Vec<State>,
         model: &mut State,
         durable: bool,
         change: &dyn Fn(&mut bob_btree::WriteTxn<'_, _>, &mut State) -> bob_btree::Result<()>|
         -> bob_btree::Result<()> {
            let mut next = model.clone();
            let mut tx = db.begin_write()?;
            change(&mut tx, &mut next)?;
            allowed.push(next.clone());
            tx.commit(if durable { Durability::Durable } else { Durability::Buffered })?;
            *model = next;
            if durable {
                *allowed = vec![model.clone()];
            }
            Ok(())
        };
    for round in 0..6u64 {
        let name = format!("tree{round}");
        step(db, allowed, &mut model, round % 2 == 0, &|tx, m| {
            let mut t = tx.open_tree::<u64, u64>(&name)?;
            let entries = m.entry(name.clone()).or_default();
            for k in 0..40u64 {
                t.insert(&(k * 7 + round), &k)?;
                entries.insert(k * 7 + round, k);
            }
            Ok(())
        })?;
        if round % 3 == 2 {
            let to = format!("renamed{round}");
            step(db, allowed, &mut model, true, &|tx, m| {
                tx.rename_tree(&name, &to)?;
                let entries = m.remove(&name).unwrap_or_default();
                m.insert(to.clone(), entries);
                Ok(())
            })?;
        }
        if round == 3 {
            step(db, allowed, &mut model, false, &|tx, m| {
                tx.delete_tree("tree1")?;
                m.remove("tree1");
                Ok(())
            })?;
        }
    }
    // A load of about 1.5 MiB in one commit: written as a checkpoint, not a log record.
    step(db, allowed, &mut model, true, &|tx, m| {
        let entries: Vec<(u64, u64)> = (0..80_000u64).map(|k| (k, k ^ 0x5555)).collect();
        tx.open_tree::<u64, u64>("bulk")?.bulk_load(entries.iter().copied())?;
        m.insert("bulk".into(), entries.into_iter().collect());
        Ok(())
    })?;
    step(db, allowed, &mut model, true, &|tx, m| {
        let entries: Vec<(u64, u64)> = (0..500u64).map(|k| (k, k + 1)).collect();
        tx.rebuild_tree("tree0", entries.iter().copied())?;
        m.insert("tree0".into(), entries.into_iter().collect());
        Ok(())
    })?;
    Ok(())
}

#[derive(Default)]
struct Counts {
    states: u64,
    not_allowed: u64,
    failed: u64,
    unclean: u64,
    panics: u64,
}

impl Counts {
    fn check(&mut self, machine: &Machine, allowed: &[State]) {
        self.states += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            machine
                .copy()
                .open(&crash_options(), u64::MAX, |db| Ok((db.verify()?.is_clean(), state(db)?)))
        }));
        match outcome {
            Err(_) => self.panics += 1,
            Ok((_, Err(_))) => self.failed += 1,
            Ok((_, Ok((clean, found)))) => {
                self.unclean += u64::from(!clean);
                self.not_allowed += u64::from(!allowed.contains(&found));
            }
        }
    }
}

/// Campaign 11: the B-tree database.
pub fn btree(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("11. the B-tree database");
    // (name, workload, closed at the end: a compacting close)
    let workloads: [(&str, Work, bool); 3] =
        [("commits", commits, false), ("trees", trees, false), ("shrink", shrink, true)];
    let mut counts = Counts::default();
    let (mut points, mut second) = (0u64, 0u64);
    for (_, work, close) in workloads {
        let options = if close { shrink_options() } else { crash_options() };
        let session = |machine: &mut Machine, k: u64, work: &mut dyn FnMut(&SimDb) -> _| {
            if close {
                machine.create_then_close(&options, k, work)
            } else {
                machine.create(&options, k, work)
            }
        };
        let mut allowed = Vec::new();
        let (clock, result) =
            session(&mut Machine::new(), u64::MAX, &mut |db| work(db, &mut allowed));
        if result.is_err() {
            counts.failed += 1;
            continue;
        }
        for k in 0..clock.ops() {
            let mut machine = Machine::new();
            let mut allowed = Vec::new();
            let mut created = false;
            let run = catch_unwind(AssertUnwindSafe(|| {
                session(&mut machine, k, &mut |db| {
                    created = true;
                    work(db, &mut allowed)
                })
            }));
            if run.is_err() {
                counts.panics += 1;
                continue;
            }
            if !created {
                continue; // a creation that never returned promised nothing
            }
            points += 1;
            counts.check(&machine, &allowed);
            for tear in 0..budget.tears {
                let crashed = machine.crashed(seed ^ (k << 16) ^ tear);
                counts.check(&crashed, &allowed);
                if tear == 0 && k % 5 == 0 {
                    for j in [0, 3, 8, 20] {
                        let mut base = crashed.copy();
                        let _ = catch_unwind(AssertUnwindSafe(|| {
                            base.open(&crash_options(), j, |_| Ok(()))
                        }));
                        second += 1;
                        counts.check(&base.crashed(seed ^ k ^ (j << 8)), &allowed);
                    }
                }
            }
        }
    }
    // Checkpoints racing commits: the interleaving is the threads', so each run is its own.
    let races = 40 * budget.tears.max(1);
    let mut raced = 0u64;
    for run in 0..races {
        let crash_at = 10 + (run * 37 + (seed % 97)) % 320;
        let Ok((machine, acked)) = catch_unwind(AssertUnwindSafe(|| race(crash_at))) else {
            counts.panics += 1;
            continue;
        };
        let Some(acked) = acked else { continue };
        raced += 1;
        let allowed = [racing_state(acked), racing_state(acked + 1)];
        counts.check(&machine.crashed(seed ^ run.wrapping_mul(0x9E37)), &allowed);
    }
    figures.info(
        "workloads (commits; named trees, bulk load, rebuild; a close that compacts by copy)",
        workloads.len() as u64,
    );
    figures.info("power losses while checkpoints race durable commits", raced);
    figures.info("crash points (one per operation of store or log)", points);
    figures.info("second crashes during recovery", second);
    figures.info("states recovered and checked", counts.states);
    figures.zero(
        "state not a commit since the last durable one (or the one in flight)",
        counts.not_allowed,
    );
    figures.zero("recoveries that failed", counts.failed);
    figures.zero("recovered databases that do not verify", counts.unclean);
    figures.zero("panics", counts.panics);
    figures
}
