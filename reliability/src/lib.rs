//! Reliability campaigns for bob: they measure how much of the fault space has been explored
//! and report it as figures, the way SQLite and redb report theirs.
//!
//! `cargo xtask reliability` runs the `bob-reliability` binary (`--quick` in CI, `--soak` for
//! long runs, `BOB_SEED` to replay). The campaigns ([`campaigns`]):
//! 1. a crash after every backend operation of each scripted [`scenarios`] workload, as a
//!    process crash and as power losses with several tear seeds;
//! 2. random operation sequences with a random crash point and tear, and a leak check;
//! 3. real process kills (`SIGKILL`) of a child that reports acknowledged commits;
//! 4. bit flips, truncation and extension of fixture files of each format, closed cleanly
//!    and left by power losses;
//! 5. fuzzed open ([`fuzz_open`], also a `cargo fuzz` target in `fuzz/`) over a committed
//!    corpus and seeded mutations;
//! 6. I/O errors, a full disk and torn writes at every operation, transient and persistent;
//! 7. a concurrency soak of the concurrent store (batched writes racing commits, verify under
//!    writers, periodic reopen), and the same race on a disk that loses power;
//! 8. crash, recover, keep working, crash again: several power losses in a row, many inside
//!    or right after a recovery;
//! 9. two handles on one file: every second open, in-process or from a child, is `Locked`;
//! 10. the journal: crash at every operation of journaled commits, checkpoints and the
//!     wrap-around to the other region, and targeted damage to the records (a torn last
//!     record, its data missing, a damaged earlier record, stale and duplicate records).
//! 11. the B-tree database: crash at every operation of its workloads (store and log
//!     segments on one clock), process crash and power-loss images, a second crash during
//!     recovery.
//!
//! The medium they model is `docs/format.md`'s ("Assumptions about the medium"): a power loss
//! damages whole 4 KiB pages touched since the last sync ([`bob_io_helpers::testing::SimDisk`]).
//!
//! Invariants every campaign checks: no acknowledged commit is lost; a recovered store holds
//! exactly the last acknowledged state or the one whose commit was in flight; open takes the
//! newest intact header slot ([`slots`] decodes it from the image) or fails, never an older
//! commit; corruption is reported (`Err` or a `verify` problem), never returned as data;
//! nothing panics.
//!
//! ```
//! // Fuzzed open never panics, whatever the bytes.
//! bob_reliability::fuzz_open(b"not a store at all");
//! bob_reliability::fuzz_open(&[0u8; 9000]);
//! ```

pub mod campaigns;
pub mod report;
pub mod scenarios;
pub mod slots;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::SimDisk;
use bob_store_core::{SpaceAllocator, Store, StoreOptions, Storer};

/// Opens a store from arbitrary bytes held in memory, as each kind of store, and if that
/// works verifies it, reads every object, writes one, commits and reopens. It must never
/// panic and never allocate more than the bytes justify; errors are the expected outcome
/// for garbage. The `cargo fuzz` target in `fuzz/` calls this.
pub fn fuzz_open(data: &[u8]) {
    exercise::<BasicAllocator>(data);
    exercise::<OmniBlockAllocator>(data);
}

fn exercise<A: SpaceAllocator>(data: &[u8]) {
    let disk = SimDisk::from_image(data.to_vec());
    let Ok(mut store) = Store::<A, SimDisk>::open_with(disk.clone(), StoreOptions::default())
    else {
        return;
    };
    let _ = store.verify();
    for id in store.ids().unwrap_or_default() {
        let _ = store.read_bytes_from_obj(id);
    }
    if store.write_new_obj_from_bytes(b"fuzz").is_ok() && store.commit().is_ok() {
        drop(store);
        if let Ok(store) = Store::<A, SimDisk>::open_with(disk, StoreOptions::default()) {
            for id in store.ids().unwrap_or_default() {
                let _ = store.read_bytes_from_obj(id);
            }
        }
    }
}

/// Deterministic bytes for a seed and length (`bob_io_helpers::testing::payload` of a seed
/// offset of its own, which the committed fuzz corpus was generated with).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    bob_io_helpers::testing::payload(seed ^ 0x5EED, len)
}
