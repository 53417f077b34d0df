//! Every byte of a small store's file flipped in turn: opening (lazy, then completed) either
//! fails with an error or succeeds, and every read returns the right bytes or an error. Never
//! a panic, never wrong data.

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::SimDisk;
use bob_store_core::{Error, ObjectId, SpaceAllocator, Store, Storer};

use crate::{Contents, bytes, options, put};

fn small_store<A: SpaceAllocator>() -> (Vec<u8>, Contents) {
    let disk = SimDisk::new();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let mut objects = Contents::new();
    for (i, len) in [0usize, 1, 40, 300, 700].into_iter().enumerate() {
        let data = bytes(i as u64 + 50, len);
        objects.insert(put(&mut store, &data), data);
    }
    store.close().unwrap();
    (disk.live_image(), objects)
}

/// Flips every byte (XOR 0xFF) of the file: header slots, root, table pages and data.
fn flip_every_byte<A: SpaceAllocator>() -> (usize, usize, usize) {
    let (image, objects) = small_store::<A>();
    let (mut refused, mut newest_damaged, mut detected) = (0, 0, 0);
    for at in 0..image.len() {
        let mut damaged = image.clone();
        damaged[at] ^= 0xFF;
        let mut store =
            match Store::<A, SimDisk>::open_with(SimDisk::from_image(damaged), options()) {
                Ok(store) => store,
                Err(Error::NewestCommitDamaged { .. }) => {
                    refused += 1;
                    newest_damaged += 1;
                    continue;
                }
                Err(_) => {
                    refused += 1;
                    continue;
                }
            };
        // Open read the header, the root and the journal; a table page is read with the first
        // object on it: damage there fails the read as it would have failed a full open.
        let mut saw_error = false;
        let mut saw_newest_damaged = false;
        for (id, data) in &objects {
            match store.read_bytes_from_obj(*id) {
                Ok(read) => {
                    assert_eq!(&read, data, "flip at {at}: object {id} returned wrong bytes")
                }
                Err(Error::NewestCommitDamaged { .. }) => saw_newest_damaged = true,
                Err(
                    Error::ChecksumMismatch { .. } | Error::NotFound(_) | Error::Corrupt { .. },
                ) => saw_error = true,
                Err(other) => panic!("flip at {at}: unexpected error {other}"),
            }
        }
        // The rest of a full open's checks, as the first write runs them.
        match store.complete_open() {
            Ok(()) => assert!(!saw_newest_damaged, "flip at {at}: a read found the damage"),
            Err(e) => {
                refused += 1;
                if matches!(e, Error::NewestCommitDamaged { .. }) {
                    newest_damaged += 1;
                }
                assert!(
                    matches!(store.write_new_obj_from_bytes(b"x"), Err(Error::Failed(_))),
                    "flip at {at}: a store whose open failed to complete took a write"
                );
                continue;
            }
        }
        let report = store.verify().unwrap();
        if saw_error {
            detected += 1;
            assert!(
                !report.is_clean()
                    || objects.keys().any(|id| store.read_bytes_from_obj(*id).is_err()),
                "flip at {at}"
            );
        }
        let _ = store.read_bytes_from_obj(ObjectId(1_000_000));
    }
    (refused, newest_damaged, detected)
}

/// Flips in the newest commit's root or table refuse the open (the older commit is never
/// opened silently); flips in object data fail those objects' reads.
#[test]
fn every_flipped_byte_is_refused_detected_or_harmless() {
    for (refused, newest_damaged, detected) in
        [flip_every_byte::<BasicAllocator>(), flip_every_byte::<OmniBlockAllocator>()]
    {
        assert!(newest_damaged > 1000, "newest damaged {newest_damaged}, refused {refused}");
        assert!(detected > 0, "detected {detected}");
    }
}
