//! Campaign 4: bit flips, truncation and extension of fixture files of each format.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::SimDisk;
use bob_store_core::{SpaceAllocator, Store, StoreOptions, Storer};
use bob_treap::PersistentTreap;

use crate::bytes;
use crate::report::Figures;
use crate::scenarios::{self, Recovered, State};

/// A fixture: a store image and the states it may open to (the last commit, or the one
/// before if the last is damaged).
pub(super) struct Fixture {
    name: &'static str,
    pub(super) image: Vec<u8>,
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

pub(super) fn treap_fixture() -> Result<Fixture, String> {
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
