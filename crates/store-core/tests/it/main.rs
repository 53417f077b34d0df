//! Integration tests for bob-store-core: one binary (house style: link time on 2 cores).
//! Both allocators are covered: `BaseStore` (basic) and `Store<OmniBlockAllocator, _>`, the
//! store `bob-store-multi` names `MultiStore`.

mod append;
mod corruption;
mod crash;
mod fuzz_open;
mod journal;
mod lazy_open;
mod model;
mod read_only;
mod regressions;
mod review;
mod roundtrip;
mod seal;

use std::collections::BTreeMap;

use bob_io_helpers::FileBackend;
use bob_store_core::{ObjectId, Result, SpaceAllocator, Store, StoreOptions, Storer};

/// Every object's bytes, by id.
pub(crate) type Contents = BTreeMap<ObjectId, Vec<u8>>;

/// Reads every object of `store`.
pub(crate) fn contents<A: SpaceAllocator, B: FileBackend>(store: &Store<A, B>) -> Result<Contents> {
    store.ids().unwrap().into_iter().map(|id| Ok((id, store.read_bytes_from_obj(id)?))).collect()
}

/// The tests' options: a journal of 4 pages per region, so workloads checkpoint every few
/// commits (crash sweeps cover both kinds of commit) and byte-by-byte sweeps of an image stay
/// small. `journal.rs` also runs the default 2 MiB journal.
pub(crate) fn options() -> StoreOptions {
    StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() }
}

/// Deterministic bytes for object tests.
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Writes a new object holding `data`, returning its id.
pub(crate) fn put<S: Storer>(store: &mut S, data: &[u8]) -> ObjectId {
    store.write_new_obj_from_bytes(data).expect("write")
}
