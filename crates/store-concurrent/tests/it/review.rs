//! Outside review of `ConcurrentStore` after 22d047a: hostile interleavings on a SimDisk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
#[allow(unused_imports)]
use bob_store_core::ObjectInfoStorer;
use bob_store_core::{Error, ObjectId, SpaceAllocator, Store, StoreOptions, Storer};

fn opts() -> StoreOptions {
    StoreOptions {
        max_file_bytes: 1 << 30,
        write_buffer_bytes: 64 << 10,
        journal_bytes: 4 * 4096,
        ..StoreOptions::default()
    }
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand_like(seed);
    (0..len).map(|_| rng()).collect()
}

fn fastrand_like(seed: u64) -> impl FnMut() -> u8 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }
}

type Wrapped<A> = ConcurrentStore<Store<A, SimDisk>>;

fn wrapped<A: SpaceAllocator>(disk: &SimDisk) -> Wrapped<A> {
    ConcurrentStore::new(Store::<A, SimDisk>::create_with(disk.clone(), opts()).unwrap(), 0)
}

/// Invariant 5: a concurrent rewrite of a committed object whose tail is damaged on disk is
/// an error (the old checksum is checked), never the damaged tail under a fresh checksum.
fn no_laundering<A: SpaceAllocator>() {
    let disk = SimDisk::new();
    let store = wrapped::<A>(&disk);
    let bytes = data(1, 9000);
    let id = store.write_new_obj_from_bytes(&bytes).unwrap();
    let fresh_bytes = data(2, 9000);
    store.commit().unwrap();
    // Not committed, and streamed so that it is on disk (a whole small object would wait in
    // the write buffer).
    let (fresh, mut writer) = store.late_write_new_obj(fresh_bytes.len() as u64).unwrap();
    std::io::Write::write_all(&mut writer, &fresh_bytes).unwrap();
    writer.finish().unwrap();
    for (id, bytes) in [(id, &bytes), (fresh, &fresh_bytes)] {
        let live = disk.live_image();
        let offset = live.windows(64).position(|w| w == &bytes[..64]).unwrap() as u64;
        disk.write_at(&[0x55; 8], offset + 8500).unwrap();
        let r = store.write_bytes_to_obj(id, b"head");
        let read = store.read_bytes_from_obj(id);
        assert!(
            r.is_err() || read.is_err(),
            "object {id}: a damaged tail was laundered: rewrite {r:?}, read ok"
        );
    }
}

#[test]
fn review_concurrent_rewrite_does_not_launder_basic() {
    no_laundering::<BasicAllocator>();
}

#[test]
fn review_concurrent_rewrite_does_not_launder_omni() {
    no_laundering::<OmniBlockAllocator>();
}

/// Invariants 1 and 3 under concurrency: writers create and rewrite their own objects
/// outside the global lock while a committer commits in a loop; after each acknowledged
/// commit, power-loss images are taken while the writers keep going. Each image must open
/// (no `NewestCommitDamaged`), verify clean, and every object the commit covered must read
/// back a version it had at or after the commit was called.
fn power_loss_under_writers<A: SpaceAllocator + Sync + 'static>(threads: usize, rounds: usize) {
    let disk = SimDisk::new();
    let store = Arc::new(wrapped::<A>(&disk));
    let history: Arc<Mutex<BTreeMap<ObjectId, Vec<Vec<u8>>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, history, stop) = (store.clone(), history.clone(), stop.clone());
            thread::spawn(move || {
                let mut own: Vec<ObjectId> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let seed = (t as u64) << 32 | n;
                    let len = [1usize, 40, 300, 1000, 4095, 4096, 5000, 12_000][(n as usize) % 8];
                    if own.is_empty() || n % 3 != 0 {
                        let bytes = data(seed, len);
                        let id = store.write_new_obj_from_bytes(&bytes).unwrap();
                        history.lock().unwrap().insert(id, vec![bytes]);
                        own.push(id);
                    } else {
                        let id = own[(n as usize / 3) % own.len()];
                        let mut next = history.lock().unwrap()[&id].last().unwrap().clone();
                        let patch = data(seed, next.len().min(64));
                        next[..patch.len()].copy_from_slice(&patch);
                        store.write_bytes_to_obj(id, &patch).unwrap();
                        history.lock().unwrap().get_mut(&id).unwrap().push(next);
                    }
                }
            })
        })
        .collect();
    let mut images = Vec::new();
    for round in 0..rounds {
        let snapshot: BTreeMap<ObjectId, usize> =
            history.lock().unwrap().iter().map(|(id, v)| (*id, v.len() - 1)).collect();
        store.commit().unwrap();
        for k in 0..3u64 {
            images.push((
                snapshot.clone(),
                disk.crash_image(CrashMode::PowerLoss, round as u64 * 10 + k),
            ));
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "live: {:?}", report.problems);
    let history = history.lock().unwrap();
    for (i, (snapshot, image)) in images.into_iter().enumerate() {
        let reopened = match Store::<A, SimDisk>::open_with(SimDisk::from_image(image), opts()) {
            Ok(s) => s,
            Err(e) => panic!("image {i}: open failed: {e}"),
        };
        let report = reopened.verify().unwrap();
        assert!(report.is_clean(), "image {i}: {:?}", report.problems);
        for (id, at) in &snapshot {
            let read = reopened
                .read_bytes_from_obj(*id)
                .unwrap_or_else(|e| panic!("image {i}: object {id} of an acked commit: {e}"));
            assert!(
                history[id][*at..].contains(&read),
                "image {i}: object {id} reads a version older than the acked commit or none"
            );
        }
    }
}

#[test]
fn review_power_loss_under_concurrent_writers_basic() {
    power_loss_under_writers::<BasicAllocator>(4, 60);
}

#[test]
fn review_power_loss_under_concurrent_writers_omni() {
    power_loss_under_writers::<OmniBlockAllocator>(4, 60);
}

/// Invariants 5 and 6: `verify` while writers are in flight is clean, including after
/// compaction runs between them.
fn verify_under_writers<A: SpaceAllocator + Sync + 'static>(runs: bool) {
    let disk = SimDisk::new();
    let store = Arc::new(wrapped::<A>(&disk));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            thread::spawn(move || {
                let mut own = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let len = (n as usize * 977 + t * 31) % 9000;
                    match n % 5 {
                        0 if !own.is_empty() => {
                            let id: ObjectId = own.swap_remove(0);
                            store.delete_obj(id).unwrap();
                        }
                        1 if !own.is_empty() => {
                            let id = own[own.len() / 2];
                            let _ = store.write_bytes_to_obj(id, b"");
                        }
                        2 if runs => {
                            let ids = store.allocate_run(3, 200).unwrap();
                            let d = data(n, 150);
                            let batch: Vec<(ObjectId, &[u8])> =
                                ids.iter().map(|id| (*id, d.as_slice())).collect();
                            match store.write_batched_objs(&batch) {
                                Ok(()) => {}
                                // A commit between the run and the batch makes them committed.
                                Err(Error::CommittedBeforeFilled(_)) => {}
                                Err(e) => panic!("batch: {e}"),
                            }
                            own.extend(ids);
                        }
                        _ => {
                            let (id, mut w) = store.late_write_new_obj(len as u64).unwrap();
                            use std::io::Write;
                            w.write_all(&data(n, len / 2)).unwrap();
                            w.finish().unwrap();
                            own.push(id);
                        }
                    }
                }
            })
        })
        .collect();
    let mut problems = Vec::new();
    for round in 0..200 {
        if round % 7 == 0 {
            store.commit().unwrap();
        }
        if round % 50 == 25 {
            store.compact().unwrap();
        }
        let report = match store.verify() {
            Ok(report) => report,
            Err(e) => {
                let _all = store.compact_lock_probe();
                panic!("round {round}: verify returned {e}; {}", _all)
            }
        };
        if !report.is_clean() {
            problems.push((round, report.problems));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    store.commit().unwrap();
    let report = store.verify().unwrap();
    assert!(problems.is_empty(), "verify under writers: {:?}", &problems[..problems.len().min(3)]);
    assert!(report.is_clean(), "{:?}", report.problems);
    let inner = Arc::try_unwrap(store).unwrap().into_inner();
    let ids = inner.ids().unwrap();
    drop(inner);
    let reopened =
        Store::<A, SimDisk>::open_with(disk.crashed(CrashMode::ProcessCrash, 0), opts()).unwrap();
    assert_eq!(reopened.ids().unwrap(), ids);
    assert!(reopened.verify().unwrap().is_clean());
}

#[test]
fn review_verify_under_writers_basic() {
    verify_under_writers::<BasicAllocator>(true);
}

#[test]
fn review_verify_under_writers_no_runs_basic() {
    verify_under_writers::<BasicAllocator>(false);
}

#[test]
fn review_verify_under_writers_no_runs_omni() {
    verify_under_writers::<OmniBlockAllocator>(false);
}

#[test]
fn review_verify_under_writers_omni() {
    verify_under_writers::<OmniBlockAllocator>(true);
}

/// A stream writer outside the lock holds a reservation across a commit and a compaction:
/// its object must read back, and a power loss after the next commit must keep it.
fn writer_across_commit_and_compact<A: SpaceAllocator>() {
    use std::io::Write;
    let disk = SimDisk::new();
    let store = wrapped::<A>(&disk);
    let mut keep = Vec::new();
    for i in 0..40u64 {
        keep.push((store.write_new_obj_from_bytes(&data(i, 100 + 211 * i as usize)).unwrap(), i));
    }
    store.commit().unwrap();
    for (id, _) in keep.iter().step_by(2) {
        store.delete_obj(*id).unwrap();
    }
    let keep: Vec<_> = keep.into_iter().skip(1).step_by(2).collect();
    store.commit().unwrap();
    let (id, mut w) = store.late_write_new_obj(6000).unwrap();
    w.write_all(&data(999, 3000)).unwrap();
    store.commit().unwrap();
    store.compact().unwrap();
    let image_mid = disk.crash_image(CrashMode::PowerLoss, 5);
    w.write_all(&data(1000, 3000)).unwrap();
    w.finish().unwrap();
    store.commit().unwrap();
    let mut expected = data(999, 3000);
    expected.extend(data(1000, 3000));
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), expected);
    assert!(store.verify().unwrap().is_clean());
    for seed in 0..20 {
        let s = Store::<A, SimDisk>::open_with(disk.crashed(CrashMode::PowerLoss, seed), opts())
            .unwrap();
        assert_eq!(s.read_bytes_from_obj(id).unwrap(), expected, "seed {seed}");
        for (k, i) in &keep {
            assert_eq!(s.read_bytes_from_obj(*k).unwrap(), data(*i, 100 + 211 * *i as usize));
        }
    }
    let s = Store::<A, SimDisk>::open_with(SimDisk::from_image(image_mid), opts()).unwrap();
    for (k, i) in &keep {
        assert_eq!(s.read_bytes_from_obj(*k).unwrap(), data(*i, 100 + 211 * *i as usize));
    }
}

#[test]
fn review_writer_across_commit_and_compact_basic() {
    writer_across_commit_and_compact::<BasicAllocator>();
}

#[test]
fn review_writer_across_commit_and_compact_omni() {
    writer_across_commit_and_compact::<OmniBlockAllocator>();
}

trait Probe {
    fn compact_lock_probe(&self) -> String;
}

impl<A: SpaceAllocator> Probe for Wrapped<A> {
    /// Which objects fail to read, and the file's length, after `verify` failed with I/O.
    fn compact_lock_probe(&self) -> String {
        let mut out = String::new();
        let inner_len = self.disk_tokens();
        let _ = inner_len;
        for raw in 0..4000u64 {
            let id = ObjectId(raw);
            if let Err(e) = self.read_bytes_from_obj(id) {
                if !matches!(e, Error::NotFound(_) | Error::StaleId { .. }) {
                    let info = self.object_info(id);
                    out.push_str(&format!("object {id}: {e} ({info:?}); "));
                }
            }
        }
        out
    }
}

/// Power loss at every backend operation of an interleaving of outside writers and commits
/// (single thread, so it is deterministic): a new-object writer and a rewrite of a committed
/// object stay open across commits, a compaction and deletes.
fn interleaved<A: SpaceAllocator>(
    store: &Wrapped<A>,
    states: &mut Vec<BTreeMap<ObjectId, Vec<u8>>>,
    acked: &mut usize,
) -> bob_store_core::Result<()> {
    use std::io::Write;
    let mut model = BTreeMap::new();
    let commit = |model: &BTreeMap<ObjectId, Vec<u8>>, states: &mut Vec<_>, acked: &mut usize| {
        states.push(model.clone());
        store.commit()?;
        *acked += 1;
        Ok::<(), Error>(())
    };
    let mut small = Vec::new();
    for i in 0..12u64 {
        let d = data(i, [5usize, 100, 700, 3000][i as usize % 4]);
        let id = store.write_new_obj_from_bytes(&d)?;
        small.push(id);
        model.insert(id, d);
    }
    commit(&model, states, acked)?;
    let (nid, mut w1) = store.late_write_new_obj(9000)?;
    w1.write_all(&data(100, 2000)).map_err(Error::from_io)?;
    let x = small[5];
    let mut w2 = store.write_to_obj(x)?;
    w2.write_all(&data(101, 50)).map_err(Error::from_io)?;
    // More small objects beside, and a commit while both writers are open.
    for i in 20..26u64 {
        let d = data(i, 30 + 90 * (i as usize - 20));
        let id = store.write_new_obj_from_bytes(&d)?;
        model.insert(id, d);
    }
    store.delete_obj(small[0])?;
    model.remove(&small[0]);
    commit(&model, states, acked)?;
    w1.write_all(&data(102, 2000)).map_err(Error::from_io)?;
    w2.write_all(&data(103, 50)).map_err(Error::from_io)?;
    commit(&model, states, acked)?;
    w1.finish()?;
    let mut d1 = data(100, 2000);
    d1.extend(data(102, 2000));
    d1.resize(9000, 0);
    model.insert(nid, d1);
    for i in 30..34u64 {
        let d = data(i, 10 + 400 * (i as usize - 30));
        let id = store.write_new_obj_from_bytes(&d)?;
        model.insert(id, d);
    }
    commit(&model, states, acked)?;
    w2.finish()?;
    let mut dx = model[&x].clone();
    dx[..50].copy_from_slice(&data(101, 50));
    dx[50..100].copy_from_slice(&data(103, 50));
    model.insert(x, dx);
    store.delete_obj(small[1])?;
    model.remove(&small[1]);
    let (nid2, mut w3) = store.late_write_new_obj(500)?;
    w3.write_all(&data(104, 500)).map_err(Error::from_io)?;
    states.push(model.clone());
    store.compact()?;
    *acked += 1;
    w3.finish()?;
    model.insert(nid2, data(104, 500));
    store.write_bytes_to_obj(small[2], &data(105, 3))?;
    model.get_mut(&small[2]).unwrap()[..3].copy_from_slice(&data(105, 3));
    commit(&model, states, acked)?;
    Ok(())
}

fn interleaved_sweep<A: SpaceAllocator>() {
    let total = {
        let disk = SimDisk::new();
        let store = wrapped::<A>(&disk);
        let base = disk.ops();
        let (mut s, mut a) = (Vec::new(), 0);
        interleaved(&store, &mut s, &mut a).unwrap();
        assert!(store.verify().unwrap().is_clean());
        disk.ops() - base
    };
    for k in 0..=total {
        let disk = SimDisk::new();
        let store = wrapped::<A>(&disk);
        disk.set_fault(bob_io_helpers::testing::FaultPlan::crash_at(disk.ops() + k));
        let (mut states, mut acked) = (Vec::new(), 0);
        let _ = interleaved(&store, &mut states, &mut acked);
        drop(store);
        let mut allowed =
            vec![acked.checked_sub(1).map_or_else(BTreeMap::new, |i| states[i].clone())];
        if states.len() > acked {
            allowed.push(states[acked].clone());
        }
        for seed in 0..5u64 {
            let image = disk.crash_image(CrashMode::PowerLoss, seed * 31 + k);
            let s = Store::<A, SimDisk>::open_with(SimDisk::from_image(image), opts())
                .unwrap_or_else(|e| panic!("k={k} seed {seed}: open: {e}"));
            let mut found = BTreeMap::new();
            for id in s.ids().unwrap() {
                let b = s
                    .read_bytes_from_obj(id)
                    .unwrap_or_else(|e| panic!("k={k} seed {seed}: object {id}: {e}"));
                found.insert(id, b);
            }
            assert!(allowed.contains(&found), "k={k} seed {seed}: matches no allowed state");
            let r = s.verify().unwrap();
            assert!(r.is_clean(), "k={k} seed {seed}: {:?}", r.problems);
        }
    }
}

#[test]
fn review_interleaved_writers_power_loss_sweep_basic() {
    interleaved_sweep::<BasicAllocator>();
}

#[test]
fn review_interleaved_writers_power_loss_sweep_omni() {
    interleaved_sweep::<OmniBlockAllocator>();
}

/// Random single-thread interleavings (deterministic by seed) of outside writers held open
/// across commits, compactions, deletes, batches and power losses. After every power loss
/// the image opens to exactly the last commit; the live store verifies clean after each op.
fn random_interleaving<A: SpaceAllocator>(seed: u64, steps: usize) -> Result<(), String> {
    use std::io::Write;
    let mut rng = {
        let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        }
    };
    let disk = SimDisk::new();
    let options = StoreOptions {
        max_file_bytes: 1 << 30,
        write_buffer_bytes: if seed % 2 == 0 { 0 } else { 64 << 10 },
        journal_bytes: 4 * 4096,
        ..StoreOptions::default()
    };
    let store =
        ConcurrentStore::new(Store::<A, SimDisk>::create_with(disk.clone(), options).unwrap(), 0);
    let mut model: BTreeMap<ObjectId, Vec<u8>> = BTreeMap::new();
    let mut committed = model.clone();
    // Open writers: (writer, id, expected bytes so far, position, is_rewrite).
    let mut writers: Vec<(
        bob_store_concurrent::ConcurrentWriter<'_, _>,
        ObjectId,
        Vec<u8>,
        usize,
        bool,
    )> = Vec::new();
    for step in 0..steps {
        let rewriting: Vec<ObjectId> = writers.iter().filter(|w| w.4).map(|w| w.1).collect();
        let free_ids: Vec<ObjectId> =
            model.keys().copied().filter(|id| !rewriting.contains(id)).collect();
        let n = step as u64 + seed * 1000;
        match rng(12) {
            0 | 1 => {
                let len = rng(9000) as usize;
                let (id, w) = store.late_write_new_obj(len as u64).map_err(|e| e.to_string())?;
                writers.push((w, id, vec![0; len], 0, false));
            }
            2 if !free_ids.is_empty() && rewriting.len() < 2 => {
                let id = free_ids[rng(free_ids.len() as u64) as usize];
                let w = store.write_to_obj(id).map_err(|e| e.to_string())?;
                writers.push((w, id, model[&id].clone(), 0, true));
            }
            3 | 4 if !writers.is_empty() => {
                let k = rng(writers.len() as u64) as usize;
                let w = &mut writers[k];
                let left = w.2.len() - w.3;
                let chunk = data(n, rng(left as u64 + 1) as usize);
                w.0.write_all(&chunk).map_err(|e| e.to_string())?;
                let pos = w.3;
                w.2[pos..pos + chunk.len()].copy_from_slice(&chunk);
                w.3 += chunk.len();
            }
            5 if !writers.is_empty() => {
                let k = rng(writers.len() as u64) as usize;
                let (w, id, bytes, _, _) = writers.swap_remove(k);
                w.finish().map_err(|e| format!("step {step}: finish: {e}"))?;
                model.insert(id, bytes);
            }
            6 => {
                let d = data(n, rng(5000) as usize);
                let id = store.write_new_obj_from_bytes(&d).map_err(|e| e.to_string())?;
                model.insert(id, d);
            }
            7 if !free_ids.is_empty() => {
                let id = free_ids[rng(free_ids.len() as u64) as usize];
                store.delete_obj(id).map_err(|e| e.to_string())?;
                model.remove(&id);
            }
            8 => {
                store.commit().map_err(|e| format!("step {step}: commit: {e}"))?;
                committed = model.clone();
            }
            9 if rewriting.is_empty() => {
                store.compact().map_err(|e| format!("step {step}: compact: {e}"))?;
                committed = model.clone();
            }
            10 => {
                let count = 1 + rng(4);
                let size = 1 + rng(700);
                let ids = store.allocate_run(count, size).map_err(|e| e.to_string())?;
                let ds: Vec<Vec<u8>> =
                    (0..count).map(|k| data(n * 10 + k, rng(size + 1) as usize)).collect();
                let batch: Vec<(ObjectId, &[u8])> =
                    ids.iter().copied().zip(ds.iter().map(Vec::as_slice)).collect();
                store.write_batched_objs(&batch).map_err(|e| e.to_string())?;
                model.extend(ids.into_iter().zip(ds));
            }
            11 => {
                let image = disk.crash_image(CrashMode::PowerLoss, n);
                let s = Store::<A, SimDisk>::open_with(SimDisk::from_image(image), options)
                    .map_err(|e| format!("step {step}: open after power loss: {e}"))?;
                let mut found = BTreeMap::new();
                for id in s.ids().unwrap() {
                    let b = s
                        .read_bytes_from_obj(id)
                        .map_err(|e| format!("step {step}: power loss: object {id}: {e}"))?;
                    found.insert(id, b);
                }
                if found != committed {
                    return Err(format!("step {step}: power loss did not give the last commit"));
                }
                let r = s.verify().unwrap();
                if !r.is_clean() {
                    return Err(format!("step {step}: reopened verify {:?}", r.problems));
                }
            }
            _ => {}
        }
        if rewriting.is_empty() && writers.iter().all(|w| !w.4) {
            let r = store.verify().map_err(|e| format!("step {step}: verify: {e}"))?;
            if !r.is_clean() {
                return Err(format!("step {step}: live verify {:?}", r.problems));
            }
        }
    }
    for (w, id, bytes, _, _) in writers.drain(..) {
        w.finish().map_err(|e| e.to_string())?;
        model.insert(id, bytes);
    }
    for (id, bytes) in &model {
        let read = store.read_bytes_from_obj(*id).map_err(|e| format!("final read {id}: {e}"))?;
        if &read != bytes {
            return Err(format!("final: object {id} has wrong bytes"));
        }
    }
    Ok(())
}

#[test]
fn review_random_interleavings_basic() {
    let failures: Vec<String> = (0..800u64)
        .filter_map(|seed| {
            random_interleaving::<BasicAllocator>(seed, 160)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn review_random_interleavings_omni() {
    let failures: Vec<String> = (0..800u64)
        .filter_map(|seed| {
            random_interleaving::<OmniBlockAllocator>(seed, 160)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
