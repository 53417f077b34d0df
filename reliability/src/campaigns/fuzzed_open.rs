//! Campaign 5: fuzzed open over the committed corpus and seeded mutations of it.

use std::panic::catch_unwind;
use std::path::Path;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{SimDisk, mutate_image};
use bob_store_core::{SpaceAllocator, Store, StoreOptions, Storer};

use super::Budget;
use super::fixtures;
use crate::report::Figures;
use crate::{bytes, fuzz_open};

/// Seed images for the fuzzed-open corpus: empty and populated stores of both kinds, with
/// one and several commits, deletes and a treap. Deterministic, so the committed corpus can
/// be regenerated (`bob-reliability corpus`).
pub fn corpus_seeds() -> Vec<(String, Vec<u8>)> {
    fn image<A: SpaceAllocator>(objects: u64, commits: u64) -> Vec<u8> {
        let disk = SimDisk::new();
        let Ok(mut store) = Store::<A, SimDisk>::create_with(
            disk.clone(),
            StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() },
        ) else {
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
    if let Some(Ok(fixture)) =
        fixtures::kinds().iter().find(|kind| kind.name == "treap").map(fixtures::Kind::closed)
    {
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
