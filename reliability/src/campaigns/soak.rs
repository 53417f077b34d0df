//! Campaign 7: a concurrency soak of the concurrent store with periodic verify and reopen.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bob_alloc::BasicAllocator;
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{ObjectId, Store, StoreOptions};

use super::{Budget, scratch_dir};
use crate::bytes;
use crate::report::Figures;

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
