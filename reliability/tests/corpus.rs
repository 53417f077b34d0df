//! Replays the committed fuzzed-open corpus and 10,000 seeded mutations of it: no panic.

use std::path::Path;

#[test]
fn the_fuzz_corpus_and_seeded_mutations_open_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = bob_reliability::campaigns::corpus(&root);
    assert!(corpus.len() >= 10, "the committed corpus is missing ({} files)", corpus.len());
    for input in &corpus {
        bob_reliability::fuzz_open(input);
    }
    let seed = bob_io_helpers::testing::test_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..10_000 {
        let base = &corpus[rng.usize(..corpus.len())];
        let input = bob_io_helpers::testing::mutate_image(&mut rng, base);
        bob_reliability::fuzz_open(&input);
    }
}

#[test]
fn the_committed_corpus_is_what_the_generator_makes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/open");
    for (name, image) in bob_reliability::campaigns::corpus_seeds() {
        let committed = std::fs::read(root.join(&name)).unwrap_or_default();
        assert!(
            committed == image,
            "fuzz/corpus/open/{name} is stale: run `bob-reliability corpus`"
        );
    }
}
