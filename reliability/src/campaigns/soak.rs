//! Campaign 7: a concurrency soak of the concurrent store with periodic verify and reopen.
//!
//! Two parts. On a real file, soak threads create, rewrite, read and delete while batch
//! threads fill runs from `allocate_run`/`allocate_runs` with `write_batched_objs`, a
//! committer commits every few milliseconds and a verifier runs `verify` under the writers;
//! each cycle ends in a commit, verify and reopen that reads back every acknowledged object.
//! On a [`SimDisk`], the same batch writers race a committer until the machine goes down at a
//! random operation; the power-loss image must hold every object as its last write before the
//! last commit that returned (or as a later one), never older and never other bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bob_alloc::BasicAllocator;
use bob_io_helpers::testing::{CrashMode, FaultPlan, SimDisk};
use bob_io_helpers::{FileBackend, OsFile};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{Error, ObjectId, Store, StoreOptions, Storer};

use super::{Budget, scratch_dir};
use crate::bytes;
use crate::report::Figures;

/// The concurrent store over a backend.
type Shared<B> = ConcurrentStore<Store<BasicAllocator, B>>;

/// Objects and the contents they were given.
type Objects = Vec<(ObjectId, Vec<u8>)>;

/// Whether `e` is the refusal of a batched write whose objects a commit made durable (empty)
/// between their allocation and the write: the expected outcome of that race, not an error.
fn refused_as_committed(e: &Error) -> bool {
    matches!(e, Error::CommittedBeforeFilled(_))
}

/// One batch: `count` objects of `size` bytes as one run (`allocate_run`) or several
/// (`allocate_runs`), each run filled by one `write_batched_objs`. `log` hears of the objects
/// as allocated (empty) and as written, each right after the call returned. `Ok` holds the
/// runs refused because a commit came between allocation and write (they stay empty).
fn batch_step<B: FileBackend + Clone + Send + Sync>(
    store: &Shared<B>,
    rng: &mut fastrand::Rng,
    mut log: impl FnMut(&Objects),
) -> Result<u64, Error> {
    let count = rng.u64(1..=8);
    let size = rng.u64(1..=3000);
    let runs = if rng.bool() {
        vec![store.allocate_run(count, size)?]
    } else {
        store.allocate_runs(count, size, 2)?
    };
    log(&runs.iter().flatten().map(|&id| (id, Vec::new())).collect());
    let mut refused = 0;
    for run in runs {
        let objects: Objects =
            run.iter().map(|&id| (id, bytes(rng.u64(..), rng.usize(0..=size as usize)))).collect();
        let batch: Vec<(ObjectId, &[u8])> =
            objects.iter().map(|(id, data)| (*id, data.as_slice())).collect();
        match store.write_batched_objs(&batch) {
            Ok(()) => log(&objects),
            Err(e) if refused_as_committed(&e) => refused += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

/// What a batch thread of the file part did.
#[derive(Default)]
struct BatchTally {
    ops: u64,
    errors: u64,
    mismatches: u64,
    refused: u64,
    objects: u64,
}

/// A batch thread: batches, reads of its objects, deletes, until `deadline`.
fn batch_thread(
    store: &Shared<Arc<OsFile>>,
    model: &mut HashMap<ObjectId, Vec<u8>>,
    seed: u64,
    deadline: Instant,
) -> BatchTally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = BatchTally::default();
    let mut ids: Vec<ObjectId> = model.keys().copied().collect();
    while Instant::now() < deadline {
        tally.ops += 1;
        match rng.u8(0..10) {
            0..=4 => {
                let logged = batch_step(store, &mut rng, |objects| {
                    for (id, data) in objects {
                        if model.insert(*id, data.clone()).is_none() {
                            ids.push(*id);
                        }
                    }
                });
                match logged {
                    Ok(refused) => tally.refused += refused,
                    Err(_) => tally.errors += 1,
                }
            }
            5..=8 if !ids.is_empty() => {
                let id = ids[rng.usize(..ids.len())];
                if store.read_bytes_from_obj(id).ok().as_ref() != model.get(&id) {
                    tally.mismatches += 1;
                }
            }
            9 if !ids.is_empty() => {
                let id = ids.swap_remove(rng.usize(..ids.len()));
                match store.delete_obj(id) {
                    Ok(()) => {
                        model.remove(&id);
                    }
                    Err(_) => tally.errors += 1,
                }
            }
            _ => {}
        }
    }
    tally.objects = model.len() as u64;
    tally
}

/// A committer: commits every 1 to 10 ms until `deadline`; (commits, errors).
fn committer<B: FileBackend + Clone + Send + Sync>(
    store: &Shared<B>,
    seed: u64,
    deadline: Instant,
) -> (u64, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut commits, mut errors) = (0, 0);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(rng.u64(1000..10_000)));
        match store.commit() {
            Ok(()) => commits += 1,
            Err(_) => errors += 1,
        }
    }
    (commits, errors)
}

/// A verifier: `verify` every 5 to 20 ms under the writers until `deadline`; (runs, reports
/// that were not clean or failed, the first problem).
fn verifier(store: &Shared<Arc<OsFile>>, seed: u64, deadline: Instant) -> (u64, u64, String) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut runs, mut unclean, mut first) = (0, 0, String::new());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.u64(5..20)));
        runs += 1;
        let problem = match store.verify() {
            Ok(report) if report.is_clean() => continue,
            Ok(report) => format!("{report:?}"),
            Err(e) => e.to_string(),
        };
        unclean += 1;
        if first.is_empty() {
            first = problem.chars().take(300).collect();
        }
    }
    (runs, unclean, first)
}

/// Figures of the file part.
#[derive(Default)]
struct FilePart {
    ops: u64,
    errors: u64,
    mismatches: u64,
    unclean: u64,
    batch: BatchTally,
    commits: u64,
    verifies: u64,
    verifies_unclean: u64,
    first_problem: String,
}

/// The file part: `threads` soak threads, two batch threads, a committer and a verifier.
fn file_part(budget: &Budget, seed: u64, path: &std::path::Path, part: &mut FilePart) {
    let (threads, seconds, cycles) = budget.soak;
    let options = StoreOptions::default();
    let mut models: Vec<HashMap<ObjectId, Vec<u8>>> = vec![HashMap::new(); threads + BATCHERS];
    for cycle in 0..cycles {
        let store = if cycle == 0 {
            ConcurrentStore::create_base(path, options, 4)
        } else {
            ConcurrentStore::open_base(path, options, 4)
        };
        let Ok(store) = store else {
            part.errors += 1;
            break;
        };
        // Everything acknowledged before the reopen reads back.
        for model in &models {
            for (id, data) in model {
                if store.read_bytes_from_obj(*id).ok().as_ref() != Some(data) {
                    part.mismatches += 1;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let cycle_seed = seed ^ (cycle << 32);
        std::thread::scope(|scope| {
            let store = &store;
            let (soakers, batchers) = models.split_at_mut(threads);
            let soaking: Vec<_> = soakers
                .iter_mut()
                .enumerate()
                .map(|(t, model)| {
                    scope.spawn(move || soak_thread(store, model, cycle_seed ^ t as u64, deadline))
                })
                .collect();
            let batching: Vec<_> = batchers
                .iter_mut()
                .enumerate()
                .map(|(t, model)| {
                    let seed = cycle_seed ^ (0xBA7C << 16) ^ t as u64;
                    scope.spawn(move || batch_thread(store, model, seed, deadline))
                })
                .collect();
            let committing = scope.spawn(move || committer(store, cycle_seed ^ 0xC0, deadline));
            let verifying = scope.spawn(move || verifier(store, cycle_seed ^ 0xFE, deadline));
            for handle in soaking {
                let (o, e, m) = handle.join().unwrap_or((0, 1, 0));
                part.ops += o;
                part.errors += e;
                part.mismatches += m;
            }
            for handle in batching {
                let tally = handle.join().unwrap_or(BatchTally { errors: 1, ..Default::default() });
                part.batch.ops += tally.ops;
                part.batch.errors += tally.errors;
                part.batch.mismatches += tally.mismatches;
                part.batch.refused += tally.refused;
                part.batch.objects += tally.objects;
            }
            let (commits, errors) = committing.join().unwrap_or((0, 1));
            part.commits += commits;
            part.errors += errors;
            let (runs, unclean, first) = verifying.join().unwrap_or((0, 1, "panicked".into()));
            part.verifies += runs;
            part.verifies_unclean += unclean;
            if part.first_problem.is_empty() {
                part.first_problem = first;
            }
        });
        if store.commit().is_err() {
            part.errors += 1;
        }
        match store.verify() {
            Ok(report) if report.is_clean() => {}
            _ => part.unclean += 1,
        }
        if store.close().is_err() {
            part.errors += 1;
        }
    }
}

/// Batch threads per cycle of the file part and per round of the crash part.
const BATCHERS: usize = 2;

/// Committer threads of the crash part.
const COMMITTERS: u64 = 3;

/// One object's history in the crash part: (tick after the call returned, contents or
/// `None` once deleted).
type History = Vec<(u64, Option<Vec<u8>>)>;

/// Figures of the crash part.
#[derive(Default)]
struct CrashPart {
    rounds: u64,
    went_down: u64,
    batches: u64,
    refused: u64,
    commits: u64,
    /// Commits of the store written for them (rounds of the group commit).
    store_commits: u64,
    objects_checked: u64,
    lost_or_wrong: u64,
    unclean: u64,
    reopen_failed: u64,
    panics: u64,
    example: String,
}

/// A crash-part writer: batches (and deletes of its objects) until the disk goes down or
/// `stop`; each change logged with a tick taken after it returned.
fn crash_writer(
    store: &Shared<SimDisk>,
    clock: &AtomicU64,
    stop: &AtomicBool,
    seed: u64,
) -> (HashMap<ObjectId, History>, u64, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut histories: HashMap<ObjectId, History> = HashMap::new();
    let (mut batches, mut refused) = (0, 0);
    while !stop.load(Ordering::Acquire) {
        if rng.u8(0..8) == 0 && !histories.is_empty() {
            let ids: Vec<ObjectId> = histories
                .iter()
                .filter(|(_, h)| h.last().is_some_and(|(_, c)| c.is_some()))
                .map(|(id, _)| *id)
                .collect();
            if let Some(&id) = ids.get(rng.usize(..ids.len().max(1))) {
                if store.delete_obj(id).is_err() {
                    break;
                }
                let tick = clock.fetch_add(1, Ordering::SeqCst);
                histories.entry(id).or_default().push((tick, None));
            }
            continue;
        }
        let result = batch_step(store, &mut rng, |objects| {
            let tick = clock.fetch_add(1, Ordering::SeqCst);
            for (id, data) in objects {
                histories.entry(*id).or_default().push((tick, Some(data.clone())));
            }
        });
        match result {
            Ok(r) => {
                batches += 1;
                refused += r;
            }
            Err(_) => break, // the machine went down
        }
    }
    (histories, batches, refused)
}

/// Whether `found` is what an object with `history` may hold after a crash, when the last
/// commit that returned took its tick at `acked`: its contents as of that commit, or as of
/// any later change (a change after the commit began may be in it or in the one in flight).
/// `history` is in the order the changes happened (see `lifetimes`), which its ticks may not
/// follow across writers.
fn allowed(history: &History, acked: u64, found: &Option<Vec<u8>>) -> bool {
    let before = history.iter().rfind(|(tick, _)| *tick < acked);
    let at_commit = before.and_then(|(_, contents)| contents.clone());
    if *found == at_commit {
        return true;
    }
    history.iter().filter(|(tick, _)| *tick >= acked).any(|(_, contents)| contents == found)
}

/// One writer's changes of one id (in its tick order) cut into lifetimes: each ends with the
/// delete that ended it.
fn lifetimes(changes: History) -> Vec<History> {
    let mut lives = vec![History::new()];
    for change in changes {
        let ended = change.1.is_none();
        lives.last_mut().expect("one at least").push(change);
        if ended {
            lives.push(History::new());
        }
    }
    lives.retain(|life| !life.is_empty());
    lives
}

/// One round of the crash part.
fn crash_round(rng: &mut fastrand::Rng, part: &mut CrashPart) -> Result<(), String> {
    let disk = SimDisk::new();
    let base = Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), StoreOptions::default())
        .map_err(|e| format!("create: {e}"))?;
    let store = ConcurrentStore::new(base, 4);
    let clock = AtomicU64::new(1);
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    disk.set_fault(FaultPlan::crash_at(disk.ops() + rng.u64(20..3000)));
    let seed = rng.u64(..);
    let deadline = Instant::now() + Duration::from_millis(150);
    let (histories, commits) = std::thread::scope(|scope| {
        let (store, clock, acked, stop) = (&store, &clock, &acked, &stop);
        let writers: Vec<_> = (0..BATCHERS as u64)
            .map(|t| scope.spawn(move || crash_writer(store, clock, stop, seed ^ t)))
            .collect();
        // Several committers: their commits share rounds (group commit), and a commit's sync
        // runs outside the store's lock while writers go on.
        let committers: Vec<_> = (0..COMMITTERS)
            .map(|c| {
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed ^ 0xC0 ^ c);
                    let (mut commits, mut went_down) = (0, false);
                    while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_micros(rng.u64(0..2000)));
                        let start = clock.fetch_add(1, Ordering::SeqCst);
                        if store.commit().is_err() {
                            went_down = true; // the machine went down
                            break;
                        }
                        acked.fetch_max(start, Ordering::SeqCst);
                        commits += 1;
                    }
                    stop.store(true, Ordering::Release);
                    (commits, went_down)
                })
            })
            .collect();
        let (mut commits, mut went_down) = (0, false);
        for committer in committers {
            let (c, down) = committer.join().unwrap_or((0, false));
            commits += c;
            went_down |= down;
        }
        part.went_down += u64::from(went_down);
        let mut lives: HashMap<ObjectId, Vec<History>> = HashMap::new();
        for writer in writers {
            let (h, batches, refused) = writer.join().unwrap_or_default();
            for (id, changes) in h {
                lives.entry(id).or_default().extend(lifetimes(changes));
            }
            part.batches += batches;
            part.refused += refused;
        }
        // Ids are reused after a delete, perhaps by the other writer: one history per id,
        // its lifetimes in the order they began. (A writer takes its tick after a call
        // returns, so the tick of one writer's delete may come after the tick of the other
        // writer's allocation that reused the id: the allocation needed the delete, and a
        // commit after it, first. Lifetimes of one id never overlap.)
        let histories: HashMap<ObjectId, History> = lives
            .into_iter()
            .map(|(id, mut lives)| {
                lives.sort_by_key(|life| life.first().map_or(0, |(tick, _)| *tick));
                (id, lives.into_iter().flatten().collect())
            })
            .collect();
        (histories, commits)
    });
    part.commits += commits;
    let stats = store.commit_stats();
    part.store_commits += stats.store_commits;
    let image = disk.crash_image(CrashMode::PowerLoss, rng.u64(..));
    let acked = acked.load(Ordering::SeqCst);
    let recovered = Store::<BasicAllocator, SimDisk>::open_with(
        SimDisk::from_image(image),
        StoreOptions::default(),
    );
    let Ok(recovered) = recovered else {
        part.reopen_failed += 1;
        return Err(format!("reopen failed (seed {seed})"));
    };
    for (id, history) in &histories {
        part.objects_checked += 1;
        let found = match recovered.read_bytes_from_obj(*id) {
            Ok(data) => Some(data),
            Err(Error::NotFound(_) | Error::StaleId { .. }) => None,
            Err(e) => {
                part.lost_or_wrong += 1;
                return Err(format!("object {id}: {e}"));
            }
        };
        if !allowed(history, acked, &found) {
            part.lost_or_wrong += 1;
            if part.example.is_empty() {
                let changes: Vec<String> = history
                    .iter()
                    .map(|(tick, c)| match c {
                        Some(data) => format!("{tick}: {} B", data.len()),
                        None => format!("{tick}: deleted"),
                    })
                    .collect();
                let found = found.as_ref().map_or("absent".into(), |d| format!("{} B", d.len()));
                part.example = format!(
                    "object {id} after a crash (round seed {seed}): last commit returned began \
                     at tick {acked}, changes [{}], found {found}",
                    changes.join(", ")
                );
            }
        }
    }
    if !recovered.verify().is_ok_and(|report| report.is_clean()) {
        part.unclean += 1;
    }
    Ok(())
}

/// Campaign 7: The concurrent store under threads that create, write, read and delete, batch
/// threads racing a committer, and a verifier under the writers; verify and reopen between
/// cycles. Then batched writes racing commits on a disk that loses power.
pub fn soak(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("7. concurrency soak");
    let (threads, seconds, cycles) = budget.soak;
    let Some(dir) = scratch_dir(&mut figures) else { return figures };
    let started = Instant::now();
    let mut file = FilePart::default();
    file_part(budget, seed, &dir.path().join("soak.bob"), &mut file);
    let secs = started.elapsed().as_secs_f64();
    let mut crash = CrashPart::default();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x50A4);
    for _ in 0..budget.soak_crash_rounds {
        crash.rounds += 1;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crash_round(&mut rng, &mut crash)
        })) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if crash.example.is_empty() {
                    crash.example = e;
                }
            }
            Err(_) => crash.panics += 1,
        }
    }
    figures.info(
        &format!(
            "threads {threads} + {BATCHERS} batch + committer + verifier, cycles {cycles} of \
             {seconds} s, each ending in verify and reopen"
        ),
        cycles,
    );
    let all_ops = file.ops + file.batch.ops;
    figures.info("operations", all_ops);
    figures.info("operations per second", (all_ops as f64 / secs.max(1e-9)) as u64);
    figures.info(
        "  of them batches (allocate_run/allocate_runs + write_batched_objs), reads, deletes",
        file.batch.ops,
    );
    figures.info("  runs refused: a commit came between allocation and write", file.batch.refused);
    figures.info("  commits by the committer thread", file.commits);
    figures.zero("errors", file.errors + file.batch.errors);
    figures.zero(
        "reads that did not match the last acknowledged write",
        file.mismatches + file.batch.mismatches,
    );
    figures.zero("verify failures", file.unclean);
    figures.info("verify runs under concurrent writers", file.verifies);
    figures
        .zero("verify reports under concurrent writers that were not clean", file.verifies_unclean);
    if !file.first_problem.is_empty() {
        figures.note(&format!("first unclean verify: {}", file.first_problem));
    }
    figures.info("crash rounds (batch writers racing commits, then power loss)", crash.rounds);
    figures.info(
        "  rounds in which the machine went down (the rest: power lost at the end)",
        crash.went_down,
    );
    figures.info("  batches", crash.batches);
    figures.info("  runs refused: a commit came between allocation and write", crash.refused);
    figures.info("  commits that returned (from 3 committer threads)", crash.commits);
    figures
        .info("  commits of the store written for them (group commit rounds)", crash.store_commits);
    figures.info("  objects checked after the crash", crash.objects_checked);
    figures.zero("  acknowledged objects lost or wrong after the crash", crash.lost_or_wrong);
    figures.zero("  verify failures after the crash", crash.unclean);
    figures.zero("  reopens that failed", crash.reopen_failed);
    figures.zero("  panics", crash.panics);
    if !crash.example.is_empty() {
        figures.note(&format!("crash part: {}", crash.example));
    }
    figures
}

/// A soak thread: creates, rewrites, reads, deletes its own objects and now and then commits.
fn soak_thread(
    store: &Shared<Arc<OsFile>>,
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
