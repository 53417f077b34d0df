//! Campaign 4: bit flips, truncation and extension of fixture files of each format, closed
//! cleanly or left by a power loss.
//!
//! Open is strict: it takes the newest intact header slot's commit or fails. So every image
//! that opens must open the newest intact slot's generation (decoded from the image by
//! [`crate::slots`], not asked of the store) and read exactly that commit's state. A flip
//! inside the newest slot's checked bytes makes that slot read as torn, which is what a crash
//! during the header write leaves too: opening the older commit is then right, and counted
//! apart.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_io_helpers::testing::SimDisk;

use super::fixtures::{self, Fixture};
use super::{Budget, CrashPoint};
use crate::report::Figures;
use crate::scenarios::{NEWEST_DAMAGED, Recovered};
use crate::slots;

/// The examples of wrong data kept for the report's notes.
const EXAMPLES: usize = 8;

#[derive(Default)]
struct Damage {
    tried: u64,
    detected: u64,
    refused_newest: u64,
    harmless: u64,
    older_torn: u64,
    /// Opened the commit before the newest journal record (the flip hit the record or its
    /// data, as a crash during its commit leaves it).
    dropped_record: u64,
    older_while_intact: u64,
    wrong: u64,
    panics: u64,
    /// The first few damages that returned wrong data or an older commit: descriptions.
    examples: Vec<String>,
}

impl Damage {
    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }

    /// Opens `image` (damaged from `fixture.image`) and classifies what came back.
    /// `unflipped` is the generation the undamaged image opens at, when it has a journal.
    fn try_image(&mut self, fixture: &Fixture, image: Vec<u8>, what: &str, unflipped: Option<u64>) {
        self.tried += 1;
        let newest = slots::expected_open(&image);
        let undamaged = slots::expected_open(&fixture.image);
        let recovered =
            catch_unwind(AssertUnwindSafe(|| (fixture.recover)(SimDisk::from_image(image))));
        match recovered {
            Err(_) => self.panics += 1,
            Ok(Err(e)) => {
                self.detected += 1;
                if e.starts_with(NEWEST_DAMAGED) {
                    self.refused_newest += 1;
                }
            }
            Ok(Ok(Recovered { state, clean, generation })) => {
                if newest.is_some_and(|g| generation < g) {
                    self.older_while_intact += 1;
                    self.example(format!(
                        "{} {what}: opened generation {generation}, newest intact slot {}",
                        fixture.name,
                        newest.unwrap_or_default()
                    ));
                } else if fixture.states.get(&generation) != Some(&state) {
                    self.wrong += 1;
                    self.example(format!(
                        "{} {what}: generation {generation} read wrong data",
                        fixture.name
                    ));
                } else if !clean {
                    self.detected += 1;
                } else if undamaged.is_some_and(|g| generation < g) {
                    self.older_torn += 1;
                } else if unflipped.is_some_and(|g| generation + 1 == g) {
                    self.dropped_record += 1;
                } else if unflipped.is_some_and(|g| generation < g) {
                    self.wrong += 1;
                    self.example(format!(
                        "{} {what}: opened generation {generation}, more than one record back",
                        fixture.name
                    ));
                } else {
                    self.harmless += 1;
                }
            }
        }
    }

    fn flip_rows(&self, figures: &mut Figures) {
        figures.info("  detected (open, read or verify error)", self.detected);
        figures.info("    of them the newest commit refused as damaged", self.refused_newest);
        figures.info(
            "  opened the older commit: the flip tore the newest header slot (as a crash can)",
            self.older_torn,
        );
        if self.dropped_record > 0 {
            figures.info(
                "  opened the commit before the newest journal record: the flip hit that record or its data (as a crash during its commit leaves it; a damaged record before the last is refused)",
                self.dropped_record,
            );
        }
        figures.info("  harmless (bytes no commit references)", self.harmless);
        figures.zero(
            "  opened an older commit while the newest slot was intact",
            self.older_while_intact,
        );
        figures.zero("  silently returned wrong data", self.wrong);
        figures.zero("  panics", self.panics);
    }
}

/// Flips one bit of every `stride`-th byte of `fixture` (from `first`).
fn flip_bytes(
    damage: &mut Damage,
    fixture: &Fixture,
    (first, stride): (usize, usize),
    what: &str,
    unflipped: Option<u64>,
) {
    for at in (first..fixture.image.len()).step_by(stride.max(1)) {
        let mut image = fixture.image.clone();
        image[at] ^= 1 << (at % 8);
        damage.try_image(fixture, image, &format!("{what}flip at {at}"), unflipped);
    }
}

/// Campaign 4: Every byte of each fixture flipped; truncation at every page boundary and at
/// random offsets; extension with zeros and with garbage; then bytes flipped in power-loss
/// images of the same workloads, crashed at random operations and at each commit's last sync.
pub fn bit_flips(budget: &Budget, seed: u64) -> Figures {
    let mut figures = Figures::new("4. bit flips, truncation, extension");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut flips, mut cuts, mut crashed) =
        (Damage::default(), Damage::default(), Damage::default());
    let (mut names, mut crash_images, mut no_store, mut unopenable) = (Vec::new(), 0, 0, 0);
    for kind in fixtures::kinds() {
        let fixture = match kind.closed() {
            Ok(f) => f,
            Err(e) => {
                figures.zero(&format!("fixtures that could not be built ({e})"), 1);
                continue;
            }
        };
        names.push(format!("{} ({} B)", fixture.name, fixture.image.len()));
        flip_bytes(&mut flips, &fixture, (0, 1), "", None);
        let len = fixture.image.len();
        let mut offsets: Vec<usize> = (0..len).step_by(4096).collect();
        offsets.extend((0..32).map(|_| rng.usize(..len)));
        for at in offsets {
            cuts.try_image(&fixture, fixture.image[..at].to_vec(), &format!("cut at {at}"), None);
        }
        let mut zeros = fixture.image.clone();
        zeros.extend(std::iter::repeat_n(0u8, 8192));
        cuts.try_image(&fixture, zeros, "zeros appended", None);
        let mut garbage = fixture.image.clone();
        garbage.extend((0..8192).map(|_| rng.u8(..)));
        cuts.try_image(&fixture, garbage, "garbage appended", None);

        // Power-loss images: half at a random operation, half at the last sync of a commit
        // (its header write in flight, so torn, zeroed, old or new).
        let dry = kind.dry_run();
        for i in 0..budget.crash_flip_images {
            // The commits after `create`'s: a torn first header leaves no store to damage.
            let commits = dry.commit_syncs.get(1..).unwrap_or_default();
            let at = if i % 2 == 1 && !commits.is_empty() {
                CrashPoint::Sync(commits[rng.usize(..commits.len())] - 1)
            } else {
                CrashPoint::Op(rng.u64(0..=dry.total_ops))
            };
            let tear = rng.u64(..);
            let image = catch_unwind(AssertUnwindSafe(|| kind.crashed(at, tear)));
            let Ok(image) = image else {
                crashed.panics += 1;
                continue;
            };
            crash_images += 1;
            let what = format!("(crash at {at:?}, tear seed {tear}) ");
            // The crash image itself first: no store yet, or a commit's exact state.
            let unflipped = catch_unwind(AssertUnwindSafe(|| {
                (image.recover)(SimDisk::from_image(image.image.clone()))
            }));
            let opened_at = match unflipped {
                Err(_) => {
                    crashed.panics += 1;
                    continue;
                }
                Ok(Err(e)) => {
                    if image.created {
                        unopenable += 1;
                        crashed.example(format!("{} {what}did not open: {e}", image.name));
                    } else {
                        no_store += 1;
                    }
                    continue;
                }
                Ok(Ok(Recovered { state, generation, .. })) => {
                    if image.states.get(&generation) != Some(&state) {
                        crashed.wrong += 1;
                        crashed.example(format!("{} {what}unflipped: wrong state", image.name));
                    }
                    generation
                }
            };
            let first = rng.usize(..budget.crash_flip_stride.max(1));
            flip_bytes(
                &mut crashed,
                &image,
                (first, budget.crash_flip_stride),
                &what,
                Some(opened_at),
            );
        }
    }
    figures.note(&format!("fixtures: {}", names.join(", ")));
    for example in flips.examples.iter().chain(&cuts.examples).chain(&crashed.examples) {
        figures.note(&format!("wrong: {example}"));
    }
    figures.info("bytes flipped (every byte of every fixture, closed cleanly)", flips.tried);
    flips.flip_rows(&mut figures);
    figures.info("truncations and extensions tried", cuts.tried);
    figures.info("  detected", cuts.detected);
    figures.info("  harmless (extensions, cuts of space no commit references)", cuts.harmless);
    figures.info("  opened the older commit (the cut removed the newest slot)", cuts.older_torn);
    figures
        .zero("  opened an older commit while the newest slot was intact", cuts.older_while_intact);
    figures.zero("  silently returned wrong data", cuts.wrong);
    figures.zero("  panics", cuts.panics);
    figures.info("power-loss crash images of the fixtures' workloads", crash_images);
    figures.info("  of them before the first commit (no store to damage)", no_store);
    figures.zero("  of them that did not open after the first commit", unopenable);
    figures.info(
        &format!("bytes flipped in them (one in {})", budget.crash_flip_stride),
        crashed.tried,
    );
    crashed.flip_rows(&mut figures);
    figures
}
