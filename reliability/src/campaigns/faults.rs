//! Campaign 6: I/O errors, a full disk and torn writes at every operation of every scripted
//! workload, transient and persistent.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_io_helpers::testing::{FaultKind, FaultPlan, OpFilter, OpKind, Repeat, SimDisk};

use super::{Budget, Tally};
use crate::report::Figures;
use crate::scenarios::{self, Log, RunEnd};

/// Campaign 6: I/O errors, a full disk and torn writes at every operation of every scenario.
pub fn faults(budget: &Budget) -> Figures {
    let mut figures = Figures::new("6. faults at every operation");
    let mut repeats = vec![Repeat::Once];
    if budget.persistent_faults {
        repeats.push(Repeat::Always);
    }
    let (mut injected, mut errors, mut not_latched, mut panics) = (0u64, 0u64, 0u64, 0u64);
    let mut tally = Tally::default();
    let mut unlatched_in: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut read_faults, mut read_errors, mut refusals) = (0u64, 0u64, 0u64);
    let filters = [OpKind::Write, OpKind::SetLen, OpKind::Sync, OpKind::Read, OpKind::Len];
    for scenario in scenarios::all() {
        let dry = SimDisk::new();
        (scenario.run)(&dry, &mut Log::default());
        let counts = dry.op_counts();
        for (kind, op) in [FaultKind::Io, FaultKind::StorageFull, FaultKind::TornWrite]
            .into_iter()
            .flat_map(|kind| filters.map(|op| (kind, op)))
        {
            // A failed read or length query changes nothing on disk or in memory, so the
            // store need not refuse writes after one; a failed write, resize or sync must.
            let mutating = matches!(op, OpKind::Write | OpKind::SetLen | OpKind::Sync);
            let total = counts.matching(OpFilter::Only(op));
            for &repeat in &repeats {
                for k in 0..total {
                    injected += 1;
                    if !mutating {
                        read_faults += 1;
                    }
                    let disk = SimDisk::new();
                    disk.set_fault(FaultPlan { at: k, on: OpFilter::Only(op), kind, repeat });
                    let mut log = Log::default();
                    match catch_unwind(AssertUnwindSafe(|| (scenario.run)(&disk, &mut log))) {
                        Err(_) => {
                            panics += 1;
                            continue;
                        }
                        Ok(RunEnd::Failed { latched, out_of_space }) => {
                            errors += 1;
                            if !mutating {
                                read_errors += 1;
                            } else if out_of_space && kind == FaultKind::StorageFull {
                                // A full disk refused to grow the file; nothing changed, so
                                // the store stays usable (deletes must still commit).
                                refusals += 1;
                            } else if !latched {
                                not_latched += 1;
                                *unlatched_in.entry(scenario.name).or_default() += 1;
                            }
                        }
                        Ok(RunEnd::Completed) => {}
                    }
                    disk.clear_fault();
                    tally.check(&scenario, disk.live_image(), &log);
                }
            }
        }
    }
    figures.info("faults injected (I/O error, disk full, torn write; each operation)", injected);
    figures.note(if budget.persistent_faults {
        "transient and persistent"
    } else {
        "transient only (--quick)"
    });
    figures.info("errors returned", errors);
    figures.info(
        "  of them on reads and length queries (the store need not refuse writes)",
        read_errors,
    );
    figures.info(
        "  of them a full disk refusing to grow the file (OutOfSpace: nothing changed, no latch)",
        refusals,
    );
    figures.info("faults on reads and length queries", read_faults);
    figures.zero(
        "write, resize or sync errors after which the store still accepted writes",
        not_latched,
    );
    for (name, count) in unlatched_in {
        figures.note(&format!("still accepted writes: {name} ({count})"));
    }
    tally.panics += panics;
    figures.info("reopens after the fault", tally.states);
    figures.zero("acknowledged commits lost", tally.lost);
    figures.zero("states matching no commit", tally.no_match);
    figures.zero("verify or check failures", tally.unclean);
    figures.zero("reopens that failed", tally.recovery_failed);
    figures
        .zero("opened an older commit while the newest slot was intact", tally.older_while_intact);
    figures.zero("panics", tally.panics);
    figures
}
