//! Campaign 10: the journal. A workload whose commits fill a small journal again and again
//! (checkpoints alternate the two regions, so every region is reused over stale records of an
//! earlier checkpoint) is crashed at every operation, each crash point named by what it
//! interrupted; then images taken after each journaled commit are damaged the ways the format
//! says open must handle: a torn last record, the last record's data missing, a record before
//! the last damaged, stale and duplicate records after the last.
//!
//! The records are found in the image by [`crate::slots::active_journal`] (decoded here, not
//! by the store).

use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{CrashMode, FaultPlan, SimDisk};
use bob_store_core::{SpaceAllocator, Store, StoreOptions, Storer};

use super::{Budget, Tally};
use crate::bytes;
use crate::report::Figures;
use crate::scenarios::{Contents, Log, Recovered, State, recover_store, state_of};
use crate::slots::{self, SLOT_STRIDE as PAGE};

/// Commits of the workload.
const ROUNDS: u64 = 18;

/// A journal of 4 pages per region: a checkpoint every few commits.
fn options() -> StoreOptions {
    StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() }
}

/// What an operation of the workload belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `create`, and object writes between commits.
    Other,
    /// A journaled commit (one record, one sync).
    Journaled,
    /// The first journaled commit after a checkpoint: its record goes to the start of a region
    /// that may hold stale records of an earlier checkpoint.
    AfterWrap,
    /// A checkpoint (table pages, root, header slot; two syncs).
    Checkpoint,
}

const PHASES: [(Phase, &str); 4] = [
    (Phase::Journaled, "journaled commits"),
    (Phase::AfterWrap, "the first record after a checkpoint (over stale records)"),
    (Phase::Checkpoint, "checkpoints (the journal full: wrap-around to the other region)"),
    (Phase::Other, "create and object writes between commits"),
];

/// What a dry run learned: each commit's operations and phase.
#[derive(Default)]
struct Spans(Vec<(u64, u64, Phase)>);

impl Spans {
    fn phase(&self, op: u64) -> Phase {
        self.0
            .iter()
            .find(|&&(start, end, _)| (start..end).contains(&op))
            .map_or(Phase::Other, |&(_, _, phase)| phase)
    }
}

/// An image after a journaled commit, and the log up to it.
struct Snapshot {
    image: Vec<u8>,
    log: Log,
}

/// The workload: puts of sizes across pages, an overwrite and a delete per commit, every fifth
/// commit a record of many entries (more than a page). Stops at the first error.
fn workload<A: SpaceAllocator>(
    disk: &SimDisk,
    log: &mut Log,
    spans: &mut Spans,
    snapshots: &mut Vec<Snapshot>,
) -> bob_store_core::Result<()> {
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options())?;
    let mut model = Contents::new();
    let mut after_checkpoint = true;
    for round in 0..ROUNDS {
        let count = if round % 5 == 3 { 110 } else { 3 };
        for i in 0..count {
            let seed = round * 1000 + i;
            let len = [40usize, 700, 5000, 9000][(seed % 4) as usize];
            let data = bytes(seed, len);
            model.insert(store.write_new_obj_from_bytes(&data)?, data);
        }
        let ids: Vec<_> = model.keys().copied().collect();
        let rewrite = ids[(round as usize * 7) % ids.len()];
        let data = bytes(round ^ 0xF00D, model[&rewrite].len());
        store.write_bytes_to_obj(rewrite, &data)?;
        model.insert(rewrite, data);
        if round % 2 == 1 {
            let gone = ids[(round as usize * 13) % ids.len()];
            store.delete_obj(gone)?;
            model.remove(&gone);
        }
        log.states.push(state_of(&model));
        let (ops, checkpoints) = (disk.ops(), store.checkpoints());
        store.commit()?;
        log.acknowledged += 1;
        let phase = if store.checkpoints() > checkpoints {
            Phase::Checkpoint
        } else if after_checkpoint {
            Phase::AfterWrap
        } else {
            Phase::Journaled
        };
        after_checkpoint = phase == Phase::Checkpoint;
        spans.0.push((ops, disk.ops(), phase));
        if phase != Phase::Checkpoint {
            snapshots.push(Snapshot {
                image: disk.crash_image(CrashMode::ProcessCrash, 0),
                log: log.clone(),
            });
        }
    }
    Ok(())
}

/// Outcomes of one kind of damage.
#[derive(Default)]
struct Outcomes {
    tried: u64,
    /// Opened the state the damage calls for.
    expected: u64,
    /// Opened the newest state: the damage missed every byte that counts.
    missed: u64,
    /// Anything else: another state, an open error where a state was due, a state where an
    /// error was due, verify problems, panics.
    wrong: u64,
    examples: Vec<String>,
}

impl Outcomes {
    /// Opens `image`; `expected` is the state it must hold, or `None` when open must refuse.
    fn check(
        &mut self,
        recover: fn(SimDisk) -> Result<Recovered, String>,
        image: Vec<u8>,
        expected: Option<&State>,
        newest: &State,
        what: String,
    ) {
        self.tried += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| recover(SimDisk::from_image(image))));
        let verdict = match (outcome, expected) {
            (Err(_), _) => Err("panicked".to_string()),
            (Ok(Err(_)), None) => Ok(true),
            (Ok(Err(e)), Some(_)) => Err(format!("did not open: {e}")),
            (Ok(Ok(r)), _) if !r.clean => Err("opened, verify found problems".into()),
            (Ok(Ok(r)), Some(state)) if &r.state == state => Ok(true),
            (Ok(Ok(r)), _) if &r.state == newest => Ok(false),
            (Ok(Ok(r)), None) => Err(format!("opened generation {} (a rollback)", r.generation)),
            (Ok(Ok(r)), Some(_)) => Err(format!("opened generation {}: wrong state", r.generation)),
        };
        match verdict {
            Ok(true) => self.expected += 1,
            Ok(false) => self.missed += 1,
            Err(why) => {
                self.wrong += 1;
                if self.examples.len() < 4 {
                    self.examples.push(format!("{what}: {why}"));
                }
            }
        }
    }
}

/// Campaign 10: crash at every operation of a journal-wrapping workload, and targeted damage to
/// its journal records.
pub fn journal(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("10. the journal");
    let mut rng = fastrand::Rng::with_seed(seed);
    let kinds: [(&str, Kind); 2] = [
        ("store/basic", (workload::<BasicAllocator>, recover_store::<BasicAllocator>)),
        ("store/multi", (workload::<OmniBlockAllocator>, recover_store::<OmniBlockAllocator>)),
    ];
    let mut tally = Tally::default();
    let mut per_phase = [(0u64, 0u64); 4];
    let mut dry_failures = 0;
    let (mut torn, mut missing, mut before_last, mut extra) =
        (Outcomes::default(), Outcomes::default(), Outcomes::default(), Outcomes::default());
    let (mut images, mut with_stale, mut checkpoints) = (0, 0, 0);
    for (name, (run, recover)) in kinds {
        let scenario = crate::scenarios::Scenario {
            name,
            run: |_, _| crate::scenarios::RunEnd::Completed,
            recover,
        };
        // The dry run: phases and snapshots.
        let disk = SimDisk::new();
        let (mut log, mut spans, mut snapshots) = (Log::default(), Spans::default(), Vec::new());
        if run(&disk, &mut log, &mut spans, &mut snapshots).is_err() {
            dry_failures += 1;
            continue;
        }
        checkpoints += spans.0.iter().filter(|s| s.2 == Phase::Checkpoint).count() as u64;
        let total = disk.ops();
        for k in 0..=total {
            let phase = spans.phase(k);
            let slot = PHASES.iter().position(|(p, _)| *p == phase).unwrap_or(3);
            let disk = SimDisk::new();
            disk.set_fault(FaultPlan::crash_at(k));
            let mut log = Log::default();
            let ran = catch_unwind(AssertUnwindSafe(|| {
                let _ = run(&disk, &mut log, &mut Spans::default(), &mut Vec::new());
            }));
            let before = failures(&tally);
            per_phase[slot].0 += 1;
            if ran.is_err() {
                tally.panics += 1;
            } else {
                tally.check(&scenario, disk.crash_image(CrashMode::ProcessCrash, 0), &log);
                for tear in 0..budget.tears {
                    let image = disk.crash_image(CrashMode::PowerLoss, seed ^ (k << 16) ^ tear);
                    tally.check(&scenario, image, &log);
                }
            }
            per_phase[slot].1 += failures(&tally) - before;
        }
        // Targeted damage to the images taken after each journaled commit.
        for snapshot in &snapshots {
            let Some(journal) = slots::active_journal(&snapshot.image) else { continue };
            let Some(last) = journal.records.last() else { continue };
            images += 1;
            let newest = &snapshot.log.states[snapshot.log.acknowledged - 1];
            let empty = State::new();
            let previous = snapshot
                .log
                .acknowledged
                .checked_sub(2)
                .map_or(&empty, |i| &snapshot.log.states[i]);
            let tail = last.offset + last.len;
            let region_end = journal.region.0 + journal.region.1;
            if journal.stale.iter().any(|&at| at >= tail) {
                with_stale += 1;
            }
            let label = |what: &str| format!("{name} generation {}: {what}", last.generation);
            // A torn last record: a page of it zeroed, garbage, or cut mid-page.
            let mut tears: Vec<(String, Vec<u8>)> = Vec::new();
            for page in (last.offset..tail).step_by(PAGE) {
                let mut zeroed = snapshot.image.clone();
                zeroed[page..page + PAGE].fill(0);
                tears.push((format!("record page {page} zeroed"), zeroed));
                let mut garbage = snapshot.image.clone();
                garbage[page..page + PAGE].iter_mut().for_each(|b| *b = rng.u8(..));
                tears.push((format!("record page {page} garbage"), garbage));
            }
            let cut = last.offset + rng.usize(1..last.checked_len);
            let mut halved = snapshot.image.clone();
            halved[cut..tail].fill(0);
            tears.push((format!("record cut at {cut}"), halved));
            for (what, image) in tears {
                torn.check(recover, image, Some(previous), newest, label(&what));
            }
            // The last record's data missing: the pages its objects were written to, zeroed;
            // and one page of one object, garbage.
            let pages_of = |&(offset, len): &(u64, u64)| {
                let (first, end) = (offset as usize / PAGE, (offset + len) as usize);
                (first..end.div_ceil(PAGE)).map(|p| p * PAGE)
            };
            let written: Vec<usize> =
                last.puts.iter().filter(|e| e.1 > 0).flat_map(pages_of).collect();
            if let Some(&one) = written.last() {
                let mut zeroed = snapshot.image.clone();
                for &page in &written {
                    if page + PAGE <= zeroed.len() {
                        zeroed[page..page + PAGE].fill(0);
                    }
                }
                missing.check(recover, zeroed, Some(previous), newest, label("data zeroed"));
                let mut garbage = snapshot.image.clone();
                if one + PAGE <= garbage.len() {
                    garbage[one..one + PAGE].iter_mut().for_each(|b| *b = rng.u8(..));
                }
                missing.check(
                    recover,
                    garbage,
                    Some(previous),
                    newest,
                    label("a data page garbage"),
                );
            }
            // A record before the last damaged: a flipped bit in its checked bytes, or its
            // first page zeroed. Open must refuse (never roll back to before it).
            for record in &journal.records[..journal.records.len() - 1] {
                for _ in 0..3 {
                    let at = record.offset + rng.usize(..record.checked_len);
                    let mut flipped = snapshot.image.clone();
                    flipped[at] ^= 1 << rng.u8(..8);
                    let what =
                        format!("record of generation {} flipped at {at}", record.generation);
                    before_last.check(recover, flipped, None, newest, label(&what));
                }
                let mut zeroed = snapshot.image.clone();
                zeroed[record.offset..record.offset + PAGE].fill(0);
                let what = format!("record of generation {} zeroed", record.generation);
                before_last.check(recover, zeroed, None, newest, label(&what));
            }
            // After the last record: a copy of it (a duplicate), and a stale record of an
            // earlier checkpoint from either region. Neither may be replayed.
            if tail + last.len <= region_end {
                let mut duplicate = snapshot.image.clone();
                duplicate.copy_within(last.offset..tail, tail);
                extra.check(recover, duplicate, Some(newest), newest, label("last record twice"));
            }
            let other = (slots::HEADER_REGION..slots::HEADER_REGION + 2 * journal.region.1)
                .step_by(PAGE)
                .filter(|&at| {
                    snapshot.image.get(at..at + 4) == Some(b"BOBJ")
                        && !journal.records.iter().any(|r| r.offset == at)
                })
                .collect::<Vec<_>>();
            if let Some(&stale) = other.first() {
                if tail + PAGE <= region_end {
                    let mut copied = snapshot.image.clone();
                    copied.copy_within(stale..stale + PAGE, tail);
                    let what = format!("stale record from {stale} copied after the last");
                    extra.check(recover, copied, Some(newest), newest, label(&what));
                }
            }
        }
    }
    figures.zero("workloads that failed without a fault", dry_failures);
    figures
        .info("checkpoints in the workloads (each a wrap-around to the other region)", checkpoints);
    figures.info(
        "crash points (one per backend operation), of them in:",
        per_phase.iter().map(|p| p.0).sum(),
    );
    for ((_, name), (points, failed)) in PHASES.iter().zip(per_phase) {
        figures.info(&format!("  {name}"), points);
        figures.zero("    crashes there that broke an invariant below", failed);
    }
    tally.into_figures(&mut figures);
    figures.info("images after a journaled commit, damaged below", images);
    figures.info("  of them with stale records past the active journal's tail", with_stale);
    for (name, outcomes, expected, missed) in [
        (
            "torn last record (a page zeroed or garbage, or cut mid-record)",
            &torn,
            "  dropped: opened the commit before it",
            "  the tear missed its checked bytes: opened it",
        ),
        (
            "last record's data missing (its pages zeroed, or one garbage)",
            &missing,
            "  dropped: opened the commit before it",
            "  opened it anyway (the damage missed its data)",
        ),
        (
            "record before the last damaged (a bit flipped, or zeroed)",
            &before_last,
            "  refused: open returned an error",
            "  opened the newest commit anyway",
        ),
        (
            "stale or duplicate record after the last",
            &extra,
            "  ignored: opened the newest commit",
            "  (not used)",
        ),
    ] {
        figures.info(name, outcomes.tried);
        figures.info(expected, outcomes.expected);
        if outcomes.missed > 0 {
            figures.info(missed, outcomes.missed);
        }
        figures.zero("  anything else (rollback, wrong state, failed open, panic)", outcomes.wrong);
        for example in &outcomes.examples {
            figures.note(&format!("wrong: {example}"));
        }
    }
    figures
}

/// A workload and the recovery of its store.
type Kind = (
    fn(&SimDisk, &mut Log, &mut Spans, &mut Vec<Snapshot>) -> bob_store_core::Result<()>,
    fn(SimDisk) -> Result<Recovered, String>,
);

/// The invariant failures `tally` has counted.
fn failures(tally: &Tally) -> u64 {
    tally.lost
        + tally.no_match
        + tally.unclean
        + tally.recovery_failed
        + tally.older_while_intact
        + tally.panics
}
