//! Campaign 1: a crash after every backend operation of every scripted workload.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_io_helpers::testing::{CrashMode, FaultPlan, SimDisk};

use super::{Budget, Tally, ops_of};
use crate::report::Figures;
use crate::scenarios::{self, Log};

/// Campaign 1: A crash after every backend operation of every scenario.
pub fn crash_points(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("1. crash at every operation");
    let scenarios = scenarios::all();
    let mut tally = Tally::default();
    let mut points = 0;
    for scenario in &scenarios {
        let total = ops_of(scenario);
        for k in 0..=total {
            points += 1;
            let disk = SimDisk::new();
            disk.set_fault(FaultPlan::crash_at(k));
            let mut log = Log::default();
            if catch_unwind(AssertUnwindSafe(|| (scenario.run)(&disk, &mut log))).is_err() {
                tally.panics += 1;
                continue;
            }
            tally.check(scenario, disk.crash_image(CrashMode::ProcessCrash, 0), &log);
            for tear in 0..budget.tears {
                let tear_seed = seed ^ (k << 16) ^ tear;
                tally.check(scenario, disk.crash_image(CrashMode::PowerLoss, tear_seed), &log);
            }
        }
    }
    figures.info("scripted workloads", scenarios.len() as u64);
    figures.info("crash points (one per backend operation)", points);
    tally.into_figures(&mut figures);
    figures
}
