//! Campaign 8: crash, recover, keep working, crash again.
//!
//! A random workload runs on a [`SimDisk`] until a crash; the power-loss image is recovered
//! and checked, and the next cycle opens that very image, goes on with another random workload
//! on the recovered store, and crashes again. A third of the crashes fall inside the recovery
//! itself or before the first commit after it returns (a crash right after open), a sixth on
//! the last sync of a commit (its header write in flight, so the next open finds a torn,
//! zeroed, old or new slot), the rest anywhere. So each recovery path (a torn newest slot, a
//! missing tail, a length change lost) is followed by more work and another crash.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::{SpaceAllocator, Store, StoreOptions};

use super::random_crashes::{RandomOp, random_ops, run_ops};
use super::{Budget, CrashPoint, Tally};
use crate::report::Figures;
use crate::scenarios::{self, Log, RunEnd, Scenario, State};
use crate::slots;

/// What one cycle's run logged: the commits, the operation count when open returned, and
/// the counts of operations and syncs after each commit.
#[derive(Default)]
struct CycleRun {
    log: Log,
    opened_at: u64,
    commit_ends: Vec<(u64, u64)>,
}

/// Opens the store on `disk` (or creates it, when `base` is `None`: no store yet) and runs
/// `ops` on it. The log starts with `base`, the state the image holds, as acknowledged.
fn cycle_run<A: SpaceAllocator>(
    disk: &SimDisk,
    ops: &[RandomOp],
    base: Option<&State>,
    run: &mut CycleRun,
) -> bob_store_core::Result<()> {
    if let Some(base) = base {
        run.log.states.push(base.clone());
        run.log.acknowledged = 1;
    }
    let options = StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() };
    let store = match base {
        Some(_) => Store::<A, SimDisk>::open_with(disk.clone(), options)?,
        None => Store::<A, SimDisk>::create_with(disk.clone(), options)?,
    };
    run.opened_at = disk.ops();
    run_ops(store, disk, ops, &mut run.log, &mut run.commit_ends)
}

#[derive(Default)]
struct Counts {
    cycles: u64,
    in_recovery: u64,
    at_header: u64,
    torn_images: u64,
}

fn round<A: SpaceAllocator>(
    rng: &mut fastrand::Rng,
    cycles: u64,
    scenario: &Scenario,
    tally: &mut Tally,
    counts: &mut Counts,
) {
    // The image the next cycle opens, and the state it holds (`None`: no store yet).
    let mut image: Vec<u8> = Vec::new();
    let mut base: Option<State> = None;
    for _ in 0..cycles {
        counts.cycles += 1;
        let ops = random_ops(rng);
        let dry_disk = SimDisk::from_image(image.clone());
        let mut dry = CycleRun::default();
        if catch_unwind(AssertUnwindSafe(|| {
            cycle_run::<A>(&dry_disk, &ops, base.as_ref(), &mut dry)
        }))
        .is_err()
        {
            tally.panics += 1;
            return;
        }
        let total = dry_disk.ops();
        let recovered_by =
            dry.commit_ends.first().map_or(total, |&(ops, _)| ops).max(dry.opened_at);
        let at = match rng.u8(0..6) {
            0 | 1 => {
                counts.in_recovery += 1;
                CrashPoint::Op(rng.u64(0..=recovered_by))
            }
            2 if !dry.commit_ends.is_empty() => {
                counts.at_header += 1;
                CrashPoint::Sync(dry.commit_ends[rng.usize(..dry.commit_ends.len())].1 - 1)
            }
            _ => CrashPoint::Op(rng.u64(0..=total)),
        };
        let disk = SimDisk::from_image(image.clone());
        disk.set_fault(at.plan());
        let mut run = CycleRun::default();
        if catch_unwind(AssertUnwindSafe(|| cycle_run::<A>(&disk, &ops, base.as_ref(), &mut run)))
            .is_err()
        {
            tally.panics += 1;
            return;
        }
        let crashed = disk.crash_image(CrashMode::PowerLoss, rng.u64(..));
        let live = disk.live_image();
        if (0..2).any(|i| slots::slot(&live, i) != slots::slot(&crashed, i)) {
            counts.torn_images += 1;
        }
        match tally.check(scenario, crashed.clone(), &run.log) {
            Some(recovered) => {
                image = crashed;
                base = Some(recovered.state);
            }
            // No store yet (a crash inside create), or a failed recovery (counted): start over.
            None => {
                image = Vec::new();
                base = None;
            }
        }
    }
}

/// Campaign 8: Crash, recover, keep working on the recovered store, crash again, several
/// cycles per round, many crashes inside or right after a recovery.
pub fn crash_cycles(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("8. crash, recover, keep working, crash again");
    let (rounds, cycles) = budget.crash_cycles;
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xC7C1E5);
    let mut tally = Tally::default();
    let mut counts = Counts::default();
    let basic = Scenario {
        name: "cycles/basic",
        run: |_, _| RunEnd::Completed,
        recover: scenarios::recover_store::<BasicAllocator>,
    };
    let multi = Scenario {
        name: "cycles/multi",
        run: |_, _| RunEnd::Completed,
        recover: scenarios::recover_store::<OmniBlockAllocator>,
    };
    for r in 0..rounds {
        if r % 2 == 0 {
            round::<BasicAllocator>(&mut rng, cycles, &basic, &mut tally, &mut counts);
        } else {
            round::<OmniBlockAllocator>(&mut rng, cycles, &multi, &mut tally, &mut counts);
        }
    }
    figures.info(&format!("rounds of {cycles} cycles (power loss, reopen, go on)"), rounds);
    figures.info("cycles", counts.cycles);
    figures.info("  crashes inside recovery or before its first commit", counts.in_recovery);
    figures.info("  crashes on a commit's last sync (header write in flight)", counts.at_header);
    figures.info(
        "  crash images whose header slot page the power loss tore, opened by the next cycle",
        counts.torn_images,
    );
    tally.into_figures(&mut figures);
    figures
}
