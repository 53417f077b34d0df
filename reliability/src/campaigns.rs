//! The seven campaigns. Each returns its [`Figures`]; figures marked as must-be-zero fail
//! the run when they are not.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{
    CrashMode, FaultKind, FaultPlan, OpFilter, OpKind, Repeat, SimDisk, mutate_image,
};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{BaseStore, ObjectId, SpaceAllocator, Store, StoreOptions, Storer};
use bob_treap::PersistentTreap;

use crate::report::Figures;
use crate::scenarios::{self, Log, Recovered, RunEnd, Scenario, State};
use crate::{bytes, fuzz_open};

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
            },
            "soak" => Budget {
                tears: 8,
                random_rounds: 20_000,
                kill_rounds: 200,
                fuzz_inputs: 200_000,
                persistent_faults: true,
                soak: (16, 60, 5),
            },
            _ => Budget {
                tears: 4,
                random_rounds: 2_000,
                kill_rounds: 25,
                fuzz_inputs: 10_000,
                persistent_faults: true,
                soak: (8, 10, 3),
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

/// Tallies of recoveries against a log.
#[derive(Default)]
struct Tally {
    states: u64,
    before_first_commit: u64,
    lost: u64,
    no_match: u64,
    unclean: u64,
    recovery_failed: u64,
    panics: u64,
}

impl Tally {
    fn check(&mut self, scenario: &Scenario, image: Vec<u8>, log: &Log) {
        self.states += 1;
        match catch_unwind(AssertUnwindSafe(|| (scenario.recover)(SimDisk::from_image(image)))) {
            Err(_) => self.panics += 1,
            Ok(Err(_)) if log.acknowledged == 0 => self.before_first_commit += 1,
            Ok(Err(_)) => self.recovery_failed += 1,
            Ok(Ok(Recovered { state, clean })) => {
                if !log.allowed().contains(&state) {
                    if log.is_lost(&state) { self.lost += 1 } else { self.no_match += 1 }
                }
                if !clean {
                    self.unclean += 1;
                }
            }
        }
    }

    fn into_figures(self, figures: &mut Figures) {
        figures.info("crash states explored", self.states);
        figures.info("states before the first commit (no store yet)", self.before_first_commit);
        figures.zero("acknowledged commits lost", self.lost);
        figures.zero("states matching no commit", self.no_match);
        figures.zero("verify or check failures", self.unclean);
        figures.zero("recoveries that failed after a commit", self.recovery_failed);
        figures.zero("panics", self.panics);
    }
}

fn ops_of(scenario: &Scenario) -> u64 {
    let disk = SimDisk::new();
    (scenario.run)(&disk, &mut Log::default());
    disk.ops()
}

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

#[derive(Debug, Clone, Copy)]
enum RandomOp {
    Write(u64, usize),
    Overwrite(usize, u64),
    Delete(usize),
    Commit,
    Reopen,
}

fn random_ops(rng: &mut fastrand::Rng) -> Vec<RandomOp> {
    let size = |rng: &mut fastrand::Rng| match rng.u8(0..20) {
        0 => rng.usize(64 << 10..=1 << 20),
        1..=5 => rng.usize(4096..64 << 10),
        6 => 0,
        _ => rng.usize(1..4096),
    };
    (0..rng.usize(10..50))
        .map(|_| match rng.u8(0..20) {
            0..=7 => RandomOp::Write(rng.u64(..), size(rng)),
            8..=10 => RandomOp::Overwrite(rng.usize(..), rng.u64(..)),
            11..=13 => RandomOp::Delete(rng.usize(..)),
            14..=18 => RandomOp::Commit,
            _ => RandomOp::Reopen,
        })
        .collect()
}

fn random_run<A: SpaceAllocator>(
    disk: &SimDisk,
    ops: &[RandomOp],
    log: &mut Log,
) -> bob_store_core::Result<()> {
    let options = StoreOptions::default();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options)?;
    let mut model: BTreeMap<ObjectId, Vec<u8>> = BTreeMap::new();
    let mut committed = model.clone();
    let state = |m: &BTreeMap<ObjectId, Vec<u8>>| -> State {
        m.iter().map(|(id, d)| (id.0.to_le_bytes().to_vec(), d.clone())).collect()
    };
    for op in ops {
        match *op {
            RandomOp::Write(seed, len) => {
                let data = bytes(seed, len);
                model.insert(store.write_new_obj_from_bytes(&data)?, data);
            }
            RandomOp::Overwrite(pick, seed) if !model.is_empty() => {
                let id = *model.keys().nth(pick % model.len()).expect("non-empty");
                let object = model.get_mut(&id).expect("present");
                let patch = bytes(seed, object.len().min(5000));
                store.write_bytes_to_obj(id, &patch)?;
                object[..patch.len()].copy_from_slice(&patch);
            }
            RandomOp::Delete(pick) if !model.is_empty() => {
                let id = *model.keys().nth(pick % model.len()).expect("non-empty");
                store.delete_obj(id)?;
                model.remove(&id);
            }
            RandomOp::Commit => {
                log.states.push(state(&model));
                store.commit()?;
                log.acknowledged += 1;
                committed = model.clone();
            }
            RandomOp::Reopen => {
                drop(store);
                store = Store::<A, SimDisk>::open_with(disk.clone(), options)?;
                model = committed.clone();
            }
            _ => {}
        }
    }
    Ok(())
}

/// After recovery: deleting everything and compacting leaves a file no larger than an empty
/// store's.
fn leaks<A: SpaceAllocator>(image: Vec<u8>) -> Result<u64, String> {
    let empty_len = {
        let disk = SimDisk::new();
        let store = Store::<A, SimDisk>::create_with(disk.clone(), StoreOptions::default())
            .map_err(|e| e.to_string())?;
        store.close().map_err(|e| e.to_string())?;
        disk.live_image().len()
    };
    let disk = SimDisk::from_image(image);
    let Ok(mut store) = Store::<A, SimDisk>::open_with(disk.clone(), StoreOptions::default())
    else {
        return Ok(0); // no store yet: nothing to leak
    };
    for id in store.ids() {
        store.delete_obj(id).map_err(|e| e.to_string())?;
    }
    store.commit().map_err(|e| e.to_string())?;
    store.compact().map_err(|e| e.to_string())?;
    store.commit().map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    Ok(disk.live_image().len().saturating_sub(empty_len) as u64)
}

/// Leak-check results: rounds whose emptied file was larger than an empty store's, and the
/// largest excess in bytes.
#[derive(Default)]
struct Leaks {
    rounds: u64,
    largest: u64,
}

fn random_round<A: SpaceAllocator>(
    rng: &mut fastrand::Rng,
    tally: &mut Tally,
    leaked: &mut Leaks,
    scenario: &Scenario,
) {
    let ops = random_ops(rng);
    let dry = SimDisk::new();
    let _ = random_run::<A>(&dry, &ops, &mut Log::default());
    let k = rng.u64(0..=dry.ops());
    let disk = SimDisk::new();
    disk.set_fault(FaultPlan::crash_at(k));
    let mut log = Log::default();
    if catch_unwind(AssertUnwindSafe(|| random_run::<A>(&disk, &ops, &mut log))).is_err() {
        tally.panics += 1;
        return;
    }
    let image = if rng.bool() {
        disk.crash_image(CrashMode::ProcessCrash, 0)
    } else {
        disk.crash_image(CrashMode::PowerLoss, rng.u64(..))
    };
    tally.check(scenario, image.clone(), &log);
    match catch_unwind(AssertUnwindSafe(|| leaks::<A>(image))) {
        Ok(Ok(0)) => {}
        Ok(Ok(excess)) => {
            leaked.rounds += 1;
            leaked.largest = leaked.largest.max(excess);
        }
        Ok(Err(_)) => tally.recovery_failed += 1,
        Err(_) => tally.panics += 1,
    }
}

/// Campaign 2: Random operation sequences with a random crash point and tear, and a leak check.
pub fn random_crashes(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("2. random crash fuzzing");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let (mut basic_leaks, mut multi_leaks) = (Leaks::default(), Leaks::default());
    let base = Scenario {
        name: "random/basic",
        run: |_, _| RunEnd::Completed,
        recover: scenarios::recover_store::<BasicAllocator>,
    };
    let multi = Scenario {
        name: "random/multi",
        run: |_, _| RunEnd::Completed,
        recover: scenarios::recover_store::<OmniBlockAllocator>,
    };
    for round in 0..budget.random_rounds {
        if round % 2 == 0 {
            random_round::<BasicAllocator>(&mut rng, &mut tally, &mut basic_leaks, &base);
        } else {
            random_round::<OmniBlockAllocator>(&mut rng, &mut tally, &mut multi_leaks, &multi);
        }
    }
    figures.info("rounds (sizes 0 B-1 MiB, deletes, reuse, reopen)", budget.random_rounds);
    tally.into_figures(&mut figures);
    figures.zero(
        "BaseStore leaks (emptied and compacted file larger than an empty store)",
        basic_leaks.rounds,
    );
    figures.info(
        "MultiStore rounds whose emptied, compacted file stays larger (known limit)",
        multi_leaks.rounds,
    );
    figures.info("  largest excess in bytes", multi_leaks.largest);
    figures.note("MultiStore: size-class blocks near the end of the file, holding the metadata, stop it shrinking to an empty store's size; the excess is free space inside the file, derived again from the live extents at every open, not leaked");
    figures
}

/// The child of the process-kill campaign: commits objects to the store at `path` until
/// killed, reporting on stdout each batch's changes (`put id seed len`, `del id`) before its
/// commit and `ok` once the commit has returned.
pub fn kill_child(path: &Path, seed: u64) -> bob_store_core::Result<()> {
    let mut store = if path.exists() {
        BaseStore::open(path, StoreOptions::default())?
    } else {
        BaseStore::create(path, StoreOptions::default())?
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = std::io::stdout().lock();
    let mut mine: Vec<ObjectId> = Vec::new();
    loop {
        let mut lines = Vec::new();
        for _ in 0..rng.usize(1..6) {
            let object_seed = rng.u64(..);
            let len =
                if rng.u8(0..10) == 0 { rng.usize(4096..200_000) } else { rng.usize(0..4096) };
            let id = store.write_new_obj_from_bytes(&bytes(object_seed, len))?;
            mine.push(id);
            lines.push(format!("put {} {object_seed} {len}", id.0));
        }
        if rng.u8(0..4) == 0 && !mine.is_empty() {
            let id = mine.swap_remove(rng.usize(..mine.len()));
            store.delete_obj(id)?;
            lines.push(format!("del {}", id.0));
        }
        // The parent may be gone; the commit is what matters.
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        store.commit()?;
        let _ = writeln!(out, "ok");
        let _ = out.flush();
    }
}

/// A temporary directory, or a must-be-zero setup failure in `figures`.
fn scratch_dir(figures: &mut Figures) -> Option<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| figures.zero(&format!("setup failures ({e})"), 1)).ok()
}

/// Campaign 3: Real process kills: a child commits and reports through a pipe; it is killed at a
/// random moment; every acknowledged change must survive.
pub fn process_kills(budget: &Budget, seed: u64, exe: &Path) -> Figures {
    let mut figures = Figures::new("3. real process kills (SIGKILL)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let Some(dir) = scratch_dir(&mut figures) else { return figures };
    let path = dir.path().join("killed.bob");
    let mut expected: HashMap<u64, Option<(u64, usize)>> = HashMap::new();
    let (mut checked, mut lost, mut wrong, mut reopen_failed, mut child_failed) = (0, 0, 0, 0, 0);
    for round in 0..budget.kill_rounds {
        let child = Command::new(exe)
            .args(["child", "--seed", &rng.u64(..).to_string(), "--path"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            child_failed += 1;
            continue;
        };
        let Some(stdout) = child.stdout.take() else {
            child_failed += 1;
            continue;
        };
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(rng.u64(20..250)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let lines = reader.join().unwrap_or_default();
        // Changes of the batch whose `ok` has not come yet: that commit was in flight, so
        // each of its ids may hold the old or the new state.
        let mut in_flight: HashMap<u64, Option<(u64, usize)>> = HashMap::new();
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["put", id, s, len] => {
                    if let (Ok(id), Ok(s), Ok(len)) = (id.parse(), s.parse(), len.parse()) {
                        in_flight.insert(id, Some((s, len)));
                    }
                }
                ["del", id] => {
                    if let Ok(id) = id.parse() {
                        in_flight.insert(id, None);
                    }
                }
                ["ok"] => expected.extend(in_flight.drain()),
                _ => {}
            }
        }
        let store = match BaseStore::open(&path, StoreOptions::default()) {
            Ok(store) => store,
            Err(_) => {
                reopen_failed += 1;
                continue;
            }
        };
        let ids: std::collections::BTreeSet<u64> =
            expected.keys().chain(in_flight.keys()).copied().collect();
        for id in ids {
            checked += 1;
            let got = store.read_bytes_from_obj(ObjectId(id));
            let matches = |want: &Option<(u64, usize)>| match (want, &got) {
                (Some((s, len)), Ok(bytes_read)) => *bytes_read == bytes(*s, *len),
                (None, Err(bob_store_core::Error::NotFound(_))) => true,
                _ => false,
            };
            let acknowledged = expected.get(&id).copied().unwrap_or(None);
            let ok = matches(&acknowledged) || in_flight.get(&id).is_some_and(&matches);
            if !ok {
                match got {
                    Ok(_) if acknowledged.is_some() => wrong += 1,
                    _ => lost += 1,
                }
            } else if let Some(new) = in_flight.get(&id) {
                // The in-flight commit settled one way or the other: so does the model.
                if matches(new) {
                    expected.insert(id, *new);
                }
            }
        }
        if round + 1 == budget.kill_rounds && !store.verify().is_ok_and(|r| r.is_clean()) {
            wrong += 1;
        }
    }
    figures.info("rounds (child killed at a random moment)", budget.kill_rounds);
    figures.info("acknowledged ids checked", checked);
    figures.zero("acknowledged changes lost", lost);
    figures.zero("ids reading wrong bytes", wrong);
    figures.zero("reopens that failed", reopen_failed);
    figures.zero("children that could not start", child_failed);
    figures
}

/// A fixture: a store image and the states it may open to (the last commit, or the one
/// before if the last is damaged).
struct Fixture {
    name: &'static str,
    image: Vec<u8>,
    last: State,
    previous: State,
    recover: fn(SimDisk) -> Result<Recovered, String>,
}

fn store_fixture<A: SpaceAllocator>(name: &'static str) -> Result<Fixture, String> {
    let disk = SimDisk::new();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), StoreOptions::default())
        .map_err(|e| e.to_string())?;
    let e = |e: bob_store_core::Error| e.to_string();
    let mut ids = Vec::new();
    for i in 0..12u64 {
        ids.push(store.write_new_obj_from_bytes(&bytes(i, (i as usize * 331) % 2500)).map_err(e)?);
    }
    store.commit().map_err(e)?;
    let previous = scenarios::recover_store::<A>(SimDisk::from_image(disk.live_image()))?.state;
    store.delete_obj(ids[2]).map_err(e)?;
    store.write_bytes_to_obj(ids[5], b"rewritten").map_err(e)?;
    store.write_new_obj_from_bytes(&bytes(77, 900)).map_err(e)?;
    store.close().map_err(e)?;
    let image = disk.live_image();
    let last = scenarios::recover_store::<A>(SimDisk::from_image(image.clone()))?.state;
    Ok(Fixture { name, image, last, previous, recover: scenarios::recover_store::<A> })
}

fn treap_fixture() -> Result<Fixture, String> {
    let disk = SimDisk::new();
    let e = |e: bob_store_core::Error| e.to_string();
    let mut store =
        Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), StoreOptions::default())
            .map_err(e)?;
    // A fixed seed: the corpus image must be the same on every run.
    let mut tree: PersistentTreap<u64, Vec<u8>> = PersistentTreap::with_seed(scenarios::TREAP_SEED);
    let save = |store: &mut Store<BasicAllocator, SimDisk>,
                tree: &mut PersistentTreap<u64, Vec<u8>>|
     -> Result<(), String> {
        // The root is published before the replaced nodes are deleted.
        tree.batch_persist_with(store, |store, root| {
            let root = root.ok_or_else(|| bob_treap::Error::Invariant("an empty tree".into()))?;
            bob_store_core::PrimeStorer::prime_object(store, 16)?;
            let mut record = [0u8; 16];
            record[..8].copy_from_slice(&1u64.to_le_bytes());
            record[8..].copy_from_slice(&root.0.to_le_bytes());
            Ok(store.write_bytes_to_obj(bob_store_core::PRIME_OBJECT_ID, &record)?)
        })
        .map_err(|e| e.to_string())?;
        store.commit().map_err(e)
    };
    for k in 0..40u64 {
        tree.insert(&store, k, bytes(k, 12)).map_err(|e| e.to_string())?;
    }
    save(&mut store, &mut tree)?;
    let previous =
        scenarios::recover_treap::<BasicAllocator>(SimDisk::from_image(disk.live_image()))?.state;
    for k in (0..40u64).step_by(3) {
        tree.delete(&store, &k).map_err(|e| e.to_string())?;
    }
    save(&mut store, &mut tree)?;
    store.close().map_err(e)?;
    let image = disk.live_image();
    let last =
        scenarios::recover_treap::<BasicAllocator>(SimDisk::from_image(image.clone()))?.state;
    Ok(Fixture {
        name: "treap",
        image,
        last,
        previous,
        recover: scenarios::recover_treap::<BasicAllocator>,
    })
}

#[derive(Default)]
struct Damage {
    tried: u64,
    detected: u64,
    harmless: u64,
    fell_back: u64,
    wrong: u64,
    panics: u64,
    /// The first few damages that returned wrong data: (fixture, description).
    examples: Vec<String>,
}

impl Damage {
    fn try_image(&mut self, fixture: &Fixture, image: Vec<u8>, what: &str) {
        self.tried += 1;
        match catch_unwind(AssertUnwindSafe(|| (fixture.recover)(SimDisk::from_image(image)))) {
            Err(_) => self.panics += 1,
            Ok(Err(_)) => self.detected += 1,
            Ok(Ok(Recovered { state, clean })) => {
                if state == fixture.last {
                    if clean { self.harmless += 1 } else { self.detected += 1 }
                } else if state == fixture.previous {
                    self.fell_back += 1;
                } else {
                    self.wrong += 1;
                    if self.examples.len() < 8 {
                        self.examples.push(format!("{} {what}", fixture.name));
                    }
                }
            }
        }
    }
}

/// Campaign 4: Every byte of each fixture flipped; truncation at every page boundary and at random
/// offsets; extension with zeros and with garbage.
pub fn bit_flips(seed: u64) -> Figures {
    let mut figures = Figures::new("4. bit flips, truncation, extension");
    let fixtures = [
        store_fixture::<BasicAllocator>("store/basic"),
        store_fixture::<OmniBlockAllocator>("store/multi"),
        treap_fixture(),
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut flips, mut cuts) = (Damage::default(), Damage::default());
    let mut names = Vec::new();
    for fixture in fixtures {
        let fixture = match fixture {
            Ok(f) => f,
            Err(e) => {
                figures.zero(&format!("fixtures that could not be built ({e})"), 1);
                continue;
            }
        };
        names.push(format!("{} ({} B)", fixture.name, fixture.image.len()));
        for at in 0..fixture.image.len() {
            let mut image = fixture.image.clone();
            image[at] ^= 1 << (at % 8);
            flips.try_image(&fixture, image, &format!("flip at {at}"));
        }
        let len = fixture.image.len();
        let mut offsets: Vec<usize> = (0..len).step_by(4096).collect();
        offsets.extend((0..32).map(|_| rng.usize(..len)));
        for at in offsets {
            cuts.try_image(&fixture, fixture.image[..at].to_vec(), &format!("cut at {at}"));
        }
        let mut zeros = fixture.image.clone();
        zeros.extend(std::iter::repeat_n(0u8, 8192));
        cuts.try_image(&fixture, zeros, "zeros appended");
        let mut garbage = fixture.image.clone();
        garbage.extend((0..8192).map(|_| rng.u8(..)));
        cuts.try_image(&fixture, garbage, "garbage appended");
    }
    figures.note(&format!("fixtures: {}", names.join(", ")));
    for example in flips.examples.iter().chain(&cuts.examples) {
        figures.note(&format!("wrong data: {example}"));
    }
    figures.info("bytes flipped (every byte of every fixture)", flips.tried);
    figures.info("  detected (open, read or verify error)", flips.detected);
    figures.info(
        "  opened to the previous commit (damage to the last one, reported)",
        flips.fell_back,
    );
    figures.info("  harmless (bytes no commit references)", flips.harmless);
    figures.zero("  silently returned wrong data", flips.wrong);
    figures.zero("  panics", flips.panics);
    figures.info("truncations and extensions tried", cuts.tried);
    figures.info("  detected", cuts.detected + cuts.fell_back);
    figures.info("  harmless (extensions)", cuts.harmless);
    figures.zero("  silently returned wrong data", cuts.wrong);
    figures.zero("  panics", cuts.panics);
    figures
}

/// Seed images for the fuzzed-open corpus: empty and populated stores of both kinds, with
/// one and several commits, deletes and a treap. Deterministic, so the committed corpus can
/// be regenerated (`bob-reliability corpus`).
pub fn corpus_seeds() -> Vec<(String, Vec<u8>)> {
    fn image<A: SpaceAllocator>(objects: u64, commits: u64) -> Vec<u8> {
        let disk = SimDisk::new();
        let Ok(mut store) = Store::<A, SimDisk>::create_with(disk.clone(), StoreOptions::default())
        else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for c in 0..commits {
            for i in 0..objects {
                if let Ok(id) =
                    store.write_new_obj_from_bytes(&bytes(c * 1000 + i, (i as usize * 97) % 900))
                {
                    ids.push(id);
                }
            }
            if c > 0 && !ids.is_empty() {
                let _ = store.delete_obj(ids.remove(0));
            }
            let _ = store.commit();
        }
        let _ = store.close();
        disk.live_image()
    }
    let mut out = Vec::new();
    for (objects, commits) in [(0, 1), (1, 1), (5, 1), (20, 1), (6, 3)] {
        out.push((format!("basic-{objects}x{commits}"), image::<BasicAllocator>(objects, commits)));
        out.push((
            format!("multi-{objects}x{commits}"),
            image::<OmniBlockAllocator>(objects, commits),
        ));
    }
    if let Ok(fixture) = treap_fixture() {
        out.push(("treap".into(), fixture.image));
    }
    out
}

/// The committed corpus of fuzzed open (`fuzz/corpus/open`), if present.
pub fn corpus(root: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(root.join("fuzz/corpus/open"))
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Campaign 5: Fuzzed open over the committed corpus and seeded mutations of it.
pub fn fuzzed_open(budget: &Budget, seed: u64, root: &Path) -> Figures {
    let mut figures = Figures::new("5. fuzzed open");
    let corpus = corpus(root);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut panics = 0;
    for input in &corpus {
        if catch_unwind(|| fuzz_open(input)).is_err() {
            panics += 1;
        }
    }
    for _ in 0..budget.fuzz_inputs {
        let base =
            if corpus.is_empty() { Vec::new() } else { corpus[rng.usize(..corpus.len())].clone() };
        let mut input = mutate_image(&mut rng, &base);
        if rng.bool() {
            input = mutate_image(&mut rng, &input);
        }
        if catch_unwind(|| fuzz_open(&input)).is_err() {
            panics += 1;
        }
    }
    figures.info("corpus inputs (fuzz/corpus/open)", corpus.len() as u64);
    figures.info("seeded mutated inputs", budget.fuzz_inputs);
    figures.zero("panics", panics);
    if corpus.is_empty() {
        figures.zero("corpus missing", 1);
    }
    figures
}

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
    let (mut read_faults, mut read_errors) = (0u64, 0u64);
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
                        Ok(RunEnd::Failed { latched }) => {
                            errors += 1;
                            if !mutating {
                                read_errors += 1;
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
    figures.zero("panics", tally.panics);
    figures
}

/// Campaign 7: The concurrent store under threads that create, write, read and delete, with verify
/// and reopen between cycles; every object reads as its last acknowledged write.
pub fn soak(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("7. concurrency soak");
    let (threads, seconds, cycles) = budget.soak;
    let Some(dir) = scratch_dir(&mut figures) else { return figures };
    let path = dir.path().join("soak.bob");
    let options = StoreOptions::default();
    let mut models: Vec<HashMap<ObjectId, Vec<u8>>> = vec![HashMap::new(); threads];
    let (mut ops, mut errors, mut mismatches, mut unclean) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for cycle in 0..cycles {
        let store = if cycle == 0 {
            ConcurrentStore::create_base(&path, options, 4)
        } else {
            ConcurrentStore::open_base(&path, options, 4)
        };
        let Ok(store) = store else {
            errors += 1;
            break;
        };
        // Everything acknowledged before the reopen reads back.
        for model in &models {
            for (id, data) in model {
                if store.read_bytes_from_obj(*id).ok().as_ref() != Some(data) {
                    mismatches += 1;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let results: Vec<(u64, u64, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = models
                .iter_mut()
                .enumerate()
                .map(|(t, model)| {
                    let store = &store;
                    scope.spawn(move || {
                        soak_thread(store, model, seed ^ (cycle << 32) ^ t as u64, deadline)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or((0, 1, 0))).collect()
        });
        for (o, e, m) in results {
            ops += o;
            errors += e;
            mismatches += m;
        }
        if store.commit().is_err() {
            errors += 1;
        }
        match store.verify() {
            Ok(report) if report.is_clean() => {}
            _ => unclean += 1,
        }
        if store.close().is_err() {
            errors += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    figures.info(
        &format!(
            "threads {threads}, cycles {cycles} of {seconds} s, each ending in verify and reopen"
        ),
        cycles,
    );
    figures.info("operations", ops);
    figures.info("operations per second", (ops as f64 / secs.max(1e-9)) as u64);
    figures.zero("errors", errors);
    figures.zero("reads that did not match the last acknowledged write", mismatches);
    figures.zero("verify failures", unclean);
    figures
}

fn soak_thread(
    store: &ConcurrentStore<Store<BasicAllocator, std::sync::Arc<bob_io_helpers::OsFile>>>,
    model: &mut HashMap<ObjectId, Vec<u8>>,
    seed: u64,
    deadline: Instant,
) -> (u64, u64, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut ops, mut errors, mut mismatches) = (0u64, 0u64, 0u64);
    let mut ids: Vec<ObjectId> = model.keys().copied().collect();
    while Instant::now() < deadline {
        ops += 1;
        let pick = |rng: &mut fastrand::Rng, ids: &Vec<ObjectId>| ids[rng.usize(..ids.len())];
        match rng.u8(0..20) {
            0..=7 => {
                let data = bytes(rng.u64(..), rng.usize(0..8192));
                match store.write_new_obj_from_bytes(&data) {
                    Ok(id) => {
                        model.insert(id, data);
                        ids.push(id);
                    }
                    Err(_) => errors += 1,
                }
            }
            8..=10 if !ids.is_empty() => {
                let id = pick(&mut rng, &ids);
                let object = model.get_mut(&id).expect("own object");
                let patch = bytes(rng.u64(..), object.len().min(1000));
                match store.write_bytes_to_obj(id, &patch) {
                    Ok(()) => object[..patch.len()].copy_from_slice(&patch),
                    Err(_) => errors += 1,
                }
            }
            11..=16 if !ids.is_empty() => {
                let id = pick(&mut rng, &ids);
                if store.read_bytes_from_obj(id).ok().as_ref() != model.get(&id) {
                    mismatches += 1;
                }
            }
            17 | 18 if !ids.is_empty() => {
                let at = rng.usize(..ids.len());
                let id = ids.swap_remove(at);
                match store.delete_obj(id) {
                    Ok(()) => {
                        model.remove(&id);
                    }
                    Err(_) => errors += 1,
                }
            }
            19 if store.commit().is_err() => errors += 1,
            _ => {}
        }
    }
    (ops, errors, mismatches)
}
