//! `bob verify` (the command-line tool) agrees with `Store::verify` on every fixture of the
//! reliability campaigns: clean, power-loss crashed, bit-flipped and cut images. The tool
//! exits 0 exactly when the store opens and its verify finds nothing, and 4 otherwise.

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::SimDisk;
use bob_store_core::{SpaceAllocator, Store, StoreOptions};
use clap::Parser;

/// Whether the image opens as a store of its kind and verifies clean.
fn sound<A: SpaceAllocator>(image: &[u8]) -> bool {
    let disk = SimDisk::from_image(image.to_vec());
    Store::<A, _>::open_with(disk, StoreOptions::default())
        .and_then(|store| store.verify())
        .is_ok_and(|report| report.is_clean())
}

#[test]
fn bob_verify_agrees_with_store_verify_on_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let images = bob_reliability::campaigns::fixture_images(7, 6, 40);
    assert!(images.len() > 100, "{} images", images.len());
    let (mut clean, mut damaged) = (0, 0);
    for (i, fixture) in images.iter().enumerate() {
        let file = dir.path().join(format!("fixture-{i}.bob"));
        std::fs::write(&file, &fixture.image).unwrap();
        let expected = if fixture.multi {
            sound::<OmniBlockAllocator>(&fixture.image)
        } else {
            sound::<BasicAllocator>(&fixture.image)
        };
        let cli = bob_cli::Cli::parse_from(["bob", "--json", "verify", file.to_str().unwrap()]);
        let mut out = Vec::new();
        let verdict = bob_cli::run(cli, &mut out);
        match (&verdict, expected) {
            (Ok(()), true) => clean += 1,
            (Err(e), false) => {
                assert_eq!(e.exit_code(), bob_cli::EXIT_CORRUPT, "{}: {e}", fixture.name);
                damaged += 1;
            }
            _ => panic!(
                "{}: bob verify says {verdict:?}, Store::verify says {}",
                fixture.name,
                if expected { "sound" } else { "damaged" }
            ),
        }
        std::fs::remove_file(&file).unwrap();
    }
    assert!(clean > 0 && damaged > 0, "{clean} clean, {damaged} damaged");
}
