//! Fuzzed open: 10,000 random and mutated store images. Each is opened and, if that works,
//! read before the lazy open completes, verified, read in full, written to, committed and reopened. Nothing may panic, and no read
//! may return bytes that fail their checksum (the store checks; here we only require that
//! every path returns).

use bob_io_helpers::testing::{SimDisk, mutate_image, test_seed};
use bob_store_core::{BaseStore, ObjectId, Storer};

use crate::{bytes, options, put};

const INPUTS: usize = 10_000;

fn seed_images() -> Vec<Vec<u8>> {
    (0..3u64)
        .map(|round| {
            let disk = SimDisk::new();
            let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
            for i in 0..(4 + round * 5) {
                put(&mut store, &bytes(round * 100 + i, (i as usize * 37) % 700));
            }
            store.commit().unwrap();
            if round > 0 {
                let first = store.ids().unwrap()[0];
                store.delete_obj(first).unwrap();
                put(&mut store, &bytes(999, 50));
                store.commit().unwrap();
            }
            drop(store);
            disk.live_image()
        })
        .collect()
}

/// Ids to read before the open completes: the first indexes under the first tags (the seed
/// images' objects carry small tags: their stores made few commits).
fn early_ids() -> impl Iterator<Item = ObjectId> {
    (0..40).flat_map(|index| (0..10).map(move |tag| ObjectId::from_parts(index, tag)))
}

#[test]
fn ten_thousand_mutated_images_never_panic() {
    let seeds = seed_images();
    let mut rng = fastrand::Rng::with_seed(test_seed());
    let mut opened = 0;
    for i in 0..INPUTS {
        let image = mutate_image(&mut rng, &seeds[i % seeds.len()]);
        let disk = SimDisk::from_image(image);
        let Ok(mut store) = BaseStore::open_with(disk.clone(), options()) else { continue };
        opened += 1;
        // Reads before anything completes the lazy open, then verify, then every object.
        for id in early_ids() {
            let _ = store.read_bytes_from_obj(id);
        }
        let _ = store.verify();
        for id in store.ids().unwrap_or_default() {
            let _ = store.read_bytes_from_obj(id);
        }
        if store.write_new_obj_from_bytes(b"after").is_ok() && store.commit().is_ok() {
            drop(store);
            if let Ok(again) = BaseStore::open_with(disk, options()) {
                let _ = again.verify();
            }
        }
    }
    assert!(opened > 0, "some mutations leave a loadable commit");
}

fn get(image: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(image[at..at + 8].try_into().unwrap())
}

fn set(image: &mut [u8], at: usize, value: u64) {
    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Mutates a table page or the root of the newest commit and reseals every checksum above it
/// (page checksum in the root, root checksum in the header slot, the slot's own checksum), so
/// the decoders see structurally wrong but checksum-valid metadata. Offsets follow
/// `docs/format.md`, "Object store".
fn reseal_mutation(rng: &mut fastrand::Rng, image: &[u8]) -> Vec<u8> {
    use bob_io_helpers::checksum;
    let mut out = image.to_vec();
    let slot = if get(&out, 16) >= get(&out, 512 + 16) { 0 } else { 512 };
    let (root_offset, root_len) = (get(&out, slot + 24) as usize, get(&out, slot + 32) as usize);
    let pages = (root_len - 16) / 16;
    if pages > 0 && rng.bool() {
        let page = rng.usize(..pages);
        let page_offset = get(&out, root_offset + 16 + page * 16) as usize;
        if page_offset != 0 {
            for _ in 0..rng.usize(1..4) {
                let at = page_offset + 16 + rng.usize(..4096 - 16);
                out[at] = [0, 0xFF, rng.u8(..)][rng.usize(..3)];
            }
            let sum = checksum(&out[page_offset..page_offset + 4096]);
            set(&mut out, root_offset + 16 + page * 16 + 8, sum);
        }
    } else {
        let at = root_offset + 8 + rng.usize(..root_len - 8);
        out[at] ^= 1 << rng.u8(0..8);
    }
    let root_sum = checksum(&out[root_offset..root_offset + root_len]);
    set(&mut out, slot + 48, root_sum);
    if rng.u8(0..4) == 0 {
        // Also bend a header field other than the checksums.
        let field = [56usize, 64, 72, 96, 104][rng.usize(..5)];
        set(&mut out, slot + field, [0, 1, u64::MAX, 1 << 40][rng.usize(..4)]);
    }
    let header_sum = checksum(&out[slot..slot + 112]);
    set(&mut out, slot + 112, header_sum);
    out
}

#[test]
fn resealed_metadata_mutations_are_refused_or_consistent() {
    let seeds = seed_images();
    let mut rng = fastrand::Rng::with_seed(test_seed());
    let (mut refused, mut opened) = (0, 0);
    for i in 0..INPUTS / 2 {
        let image = reseal_mutation(&mut rng, &seeds[i % seeds.len()]);
        match BaseStore::open_with(SimDisk::from_image(image), options()) {
            Err(_) => refused += 1,
            Ok(mut store) => {
                // Reads before the lazy open completes never panic; completing it runs the
                // rest of a full open's checks.
                for id in early_ids() {
                    let _ = store.read_bytes_from_obj(id);
                }
                if store.complete_open().is_err() {
                    refused += 1;
                    continue;
                }
                opened += 1;
                // Whatever loaded is internally consistent: the allocator agrees with the
                // table (no overlap, no leak); bytes may fail their checksums, never panic.
                let report = store.verify().unwrap();
                assert!(
                    report.problems.iter().all(|p| p.contains("checksum") || p.contains("corrupt")),
                    "{:?}",
                    report.problems
                );
                for id in store.ids().unwrap() {
                    let _ = store.read_bytes_from_obj(id);
                }
            }
        }
    }
    assert!(refused > INPUTS / 20, "the newest commit was refused {refused} times of {opened}");
}
