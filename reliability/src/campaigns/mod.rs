//! The campaigns, one module each. Each returns its [`Figures`]; figures marked as
//! must-be-zero fail the run when they are not.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use bob_io_helpers::testing::{FaultKind, FaultPlan, OpFilter, OpKind, Repeat, SimDisk};

use crate::report::Figures;
use crate::scenarios::{Log, Recovered, Scenario};

mod bit_flips;
mod btree;
mod crash_cycles;
mod crash_points;
mod faults;
mod fixtures;
mod fuzzed_open;
mod journal;
mod locks;
mod process_kills;
mod random_crashes;
mod soak;

pub use bit_flips::bit_flips;
pub use btree::btree;
pub use crash_cycles::crash_cycles;
pub use crash_points::crash_points;
pub use faults::faults;
pub use fuzzed_open::{corpus, corpus_seeds, fuzzed_open};
pub use journal::journal;
pub use locks::{lock_probe, locks, probe};
pub use process_kills::{kill_child, process_kills};
pub use random_crashes::random_crashes;
pub use soak::soak;

/// How much each campaign does.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Power-loss tear seeds per crash point (plus one process crash).
    pub tears: u64,
    /// Random crash-fuzzing rounds.
    pub random_rounds: u64,
    /// Process-kill rounds.
    pub kill_rounds: u64,
    /// Mutated inputs for fuzzed open (beyond the corpus).
    pub fuzz_inputs: u64,
    /// Persistent faults too, not only transient ones.
    pub persistent_faults: bool,
    /// Soak threads, seconds per cycle and cycles.
    pub soak: (usize, u64, u64),
    /// Rounds of the soak's crash part (batched writes racing commits, then a power loss).
    pub soak_crash_rounds: u64,
    /// Rounds of the two-handles campaign.
    pub lock_rounds: u64,
    /// Rounds of the crash-recover-crash campaign, and crash cycles per round.
    pub crash_cycles: (u64, u64),
    /// Power-loss crash images taken of each bit-flip fixture's workload.
    pub crash_flip_images: u64,
    /// In those images, one byte in this many is flipped.
    pub crash_flip_stride: usize,
}

impl Budget {
    /// `--quick` (CI), the default, or `--soak`.
    pub fn of(mode: &str) -> Budget {
        match mode {
            "quick" => Budget {
                tears: 2,
                random_rounds: 300,
                kill_rounds: 6,
                fuzz_inputs: 3_000,
                persistent_faults: false,
                soak: (8, 2, 2),
                soak_crash_rounds: 20,
                lock_rounds: 3,
                crash_cycles: (400, 6),
                crash_flip_images: 6,
                crash_flip_stride: 23,
            },
            "soak" => Budget {
                tears: 8,
                random_rounds: 20_000,
                kill_rounds: 200,
                fuzz_inputs: 200_000,
                persistent_faults: true,
                soak: (16, 60, 5),
                soak_crash_rounds: 1_000,
                lock_rounds: 20,
                crash_cycles: (20_000, 10),
                crash_flip_images: 60,
                crash_flip_stride: 2,
            },
            _ => Budget {
                tears: 4,
                random_rounds: 2_000,
                kill_rounds: 25,
                fuzz_inputs: 10_000,
                persistent_faults: true,
                soak: (8, 10, 3),
                soak_crash_rounds: 150,
                lock_rounds: 5,
                crash_cycles: (2_000, 8),
                crash_flip_images: 12,
                crash_flip_stride: 8,
            },
        }
    }
}

/// The message of the first panic caught, for the report.
static FIRST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Silences panic output while campaigns run, keeping the first message.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let mut first = FIRST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.is_none() {
            *first = Some(info.to_string());
        }
    }));
}

/// The first panic message caught, if any.
pub fn first_panic() -> Option<String> {
    FIRST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Where a crash falls: at an operation of any kind, or at the n-th sync (a commit's last
/// sync: its header write is then in flight, for a power loss to tear).
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    /// The k-th operation and everything after it fail.
    Op(u64),
    /// The n-th sync fails, as do later syncs; the workload stops at that error.
    Sync(u64),
}

impl CrashPoint {
    fn plan(self) -> FaultPlan {
        match self {
            CrashPoint::Op(at) => FaultPlan::crash_at(at),
            CrashPoint::Sync(at) => FaultPlan {
                at,
                on: OpFilter::Only(OpKind::Sync),
                kind: FaultKind::Crash,
                repeat: Repeat::Always,
            },
        }
    }
}

/// Syncs issued on `disk` so far.
fn syncs(disk: &SimDisk) -> u64 {
    disk.op_counts().matching(OpFilter::Only(OpKind::Sync))
}

/// Tallies of recoveries against a log.
#[derive(Default)]
struct Tally {
    states: u64,
    before_first_commit: u64,
    lost: u64,
    no_match: u64,
    unclean: u64,
    recovery_failed: u64,
    older_while_intact: u64,
    panics: u64,
}

impl Tally {
    /// Recovers `image` as `scenario` does and checks what it holds against `log`; the
    /// recovery, if the store opened.
    fn check(&mut self, scenario: &Scenario, image: Vec<u8>, log: &Log) -> Option<Recovered> {
        self.states += 1;
        let newest = crate::slots::expected_open(&image);
        match catch_unwind(AssertUnwindSafe(|| (scenario.recover)(SimDisk::from_image(image)))) {
            Err(_) => self.panics += 1,
            Ok(Err(_)) if log.acknowledged == 0 => self.before_first_commit += 1,
            Ok(Err(_)) => self.recovery_failed += 1,
            Ok(Ok(recovered)) => {
                if newest.is_some_and(|g| recovered.generation < g) {
                    self.older_while_intact += 1;
                }
                if !log.allowed().contains(&recovered.state) {
                    if log.is_lost(&recovered.state) { self.lost += 1 } else { self.no_match += 1 }
                }
                if !recovered.clean {
                    self.unclean += 1;
                }
                return Some(recovered);
            }
        }
        None
    }

    fn into_figures(self, figures: &mut Figures) {
        figures.info("crash states explored", self.states);
        figures.info("states before the first commit (no store yet)", self.before_first_commit);
        figures.zero("acknowledged commits lost", self.lost);
        figures.zero("states matching no commit", self.no_match);
        figures.zero("verify or check failures", self.unclean);
        figures.zero("recoveries that failed after a commit", self.recovery_failed);
        figures.zero(
            "opened an older commit while the newest slot was intact",
            self.older_while_intact,
        );
        figures.zero("panics", self.panics);
    }
}

fn ops_of(scenario: &Scenario) -> u64 {
    let disk = SimDisk::new();
    (scenario.run)(&disk, &mut Log::default());
    disk.ops()
}

/// A temporary directory, or a must-be-zero setup failure in `figures`.
/// Starts this binary's `child` (it opens the store at `path`, commits and prints what it
/// did, until killed) with its stdout piped; `None` if it could not start (then nothing runs).
fn spawn_child(
    exe: &std::path::Path,
    seed: u64,
    path: &std::path::Path,
) -> Option<(std::process::Child, std::process::ChildStdout)> {
    let mut child = std::process::Command::new(exe)
        .args(["child", "--seed", &seed.to_string(), "--path"])
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    match child.stdout.take() {
        Some(stdout) => Some((child, stdout)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

fn scratch_dir(figures: &mut Figures) -> Option<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| figures.zero(&format!("setup failures ({e})"), 1)).ok()
}

/// An image of one fixture of the campaigns (see [`fixture_images`]).
#[derive(Debug, Clone)]
pub struct FixtureImage {
    /// The fixture and what was done to it.
    pub name: String,
    /// Whether the store allocates by size class (`MultiStore`), else first-fit (`BaseStore`).
    pub multi: bool,
    /// The file's bytes.
    pub image: Vec<u8>,
}

/// Images of every fixture kind of the bit-flip campaign: closed cleanly, crashed by a power
/// loss at `crashes` random operations, `flips` single-bit flips at random bytes, and cut at
/// every page boundary: for tools that check files (the `bob` tool's `verify` is tested
/// against `Store::verify` on them).
pub fn fixture_images(seed: u64, crashes: usize, flips: usize) -> Vec<FixtureImage> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut images = Vec::new();
    for kind in fixtures::kinds() {
        let multi = kind.name == "store/multi";
        let Ok(closed) = kind.closed() else { continue };
        let total = kind.dry_run().total_ops.max(1);
        for i in 0..crashes {
            let at = rng.u64(..total);
            let fixture = kind.crashed(CrashPoint::Op(at), seed ^ i as u64);
            let name = format!("{} crashed at operation {at}", kind.name);
            images.push(FixtureImage { name, multi, image: fixture.image });
        }
        let len = closed.image.len();
        for _ in 0..flips {
            let at = rng.usize(..len);
            let mut image = closed.image.clone();
            image[at] ^= 1 << rng.u8(..8);
            images.push(FixtureImage {
                name: format!("{} flipped at {at}", kind.name),
                multi,
                image,
            });
        }
        for at in (0..len).step_by(4096) {
            let image = closed.image[..at].to_vec();
            images.push(FixtureImage { name: format!("{} cut at {at}", kind.name), multi, image });
        }
        images.push(FixtureImage {
            name: format!("{} closed", kind.name),
            multi,
            image: closed.image,
        });
    }
    images
}
