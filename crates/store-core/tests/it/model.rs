//! A model proptest: every operation, commit, reopen and crash, against a `BTreeMap` of the
//! current state and a copy of the last commit, for both allocators.

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::{BatchStorer, ObjectId, SpaceAllocator, Store, StoreOptions, Storer};
use std::io::Write as _;

use bob_store_core::ObjectWrite as _;
use proptest::prelude::*;

use crate::{Contents, bytes, contents};

#[derive(Debug, Clone)]
enum Op {
    Write(usize, u64),
    Rewrite(usize, usize, u64),
    /// Replace an object with new bytes of any length (streamed when `bool`).
    Replace(usize, usize, u64, bool),
    Delete(usize),
    Batch(u64, u64, u64),
    /// Rewrite (replace) `n` objects from an index on, and write as many new ones, of
    /// lengths from the seed: a commit of many small objects, which are appended.
    Burst(usize, usize, u64),
    Commit,
    Reopen,
    Crash(bool, u64),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop_oneof![0usize..64, 0usize..5000, 4000usize..70_000], any::<u64>()).prop_map(|(l, s)| Op::Write(l, s)),
        3 => (any::<usize>(), 0usize..6000, any::<u64>()).prop_map(|(i, l, s)| Op::Rewrite(i, l, s)),
        3 => (any::<usize>(), prop_oneof![0usize..64, 0usize..9000, 60_000usize..70_000], any::<u64>(), any::<bool>())
            .prop_map(|(i, l, s, streamed)| Op::Replace(i, l, s, streamed)),
        4 => any::<usize>().prop_map(Op::Delete),
        1 => (1u64..20, 1u64..300, any::<u64>()).prop_map(|(c, l, s)| Op::Batch(c, l, s)),
        2 => (2usize..12, any::<usize>(), any::<u64>()).prop_map(|(n, i, s)| Op::Burst(n, i, s)),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        2 => (any::<bool>(), any::<u64>()).prop_map(|(p, s)| Op::Crash(p, s)),
        1 => Just(Op::Compact),
    ]
}

/// No write buffer, one that fills after a few objects, and the default.
fn write_buffer() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(5000), Just(4 << 20)]
}

/// Objects that always fill holes, that append until a fifth of the data is free, the
/// default (until as much is free as is live), and that always append.
fn append_room() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(20), Just(100), Just(u32::MAX)]
}

fn nth(model: &Contents, index: usize) -> Option<ObjectId> {
    (!model.is_empty()).then(|| *model.keys().nth(index % model.len()).unwrap_or(&ObjectId(0)))
}

fn run<A: SpaceAllocator>(
    ops: Vec<Op>,
    write_buffer_bytes: usize,
    append_room_percent: u32,
) -> Result<(), TestCaseError> {
    let options = || StoreOptions { write_buffer_bytes, append_room_percent, ..crate::options() };
    let mut disk = SimDisk::new();
    let mut store = Store::<A, SimDisk>::create_with(disk.clone(), options()).unwrap();
    let mut current = Contents::new();
    let mut committed = Contents::new();
    for op in ops {
        match op {
            Op::Write(len, seed) => {
                let data = bytes(seed, len);
                current.insert(store.write_new_obj_from_bytes(&data).unwrap(), data);
            }
            Op::Rewrite(index, len, seed) => {
                if let Some(id) = nth(&current, index) {
                    let object = current.get_mut(&id).unwrap();
                    let data = bytes(seed, len.min(object.len()));
                    store.write_bytes_to_obj(id, &data).unwrap();
                    object[..data.len()].copy_from_slice(&data);
                }
            }
            Op::Replace(index, len, seed, streamed) => {
                if let Some(id) = nth(&current, index) {
                    let data = bytes(seed, len);
                    if streamed {
                        let mut writer = store.late_replace_obj(id, len as u64).unwrap();
                        writer.write_all(&data[..len / 2]).unwrap();
                        writer.write_all(&data[len / 2..]).unwrap();
                        writer.finish().unwrap();
                    } else {
                        store.replace_obj(id, &data).unwrap();
                    }
                    current.insert(id, data);
                }
            }
            Op::Delete(index) => {
                if let Some(id) = nth(&current, index) {
                    store.delete_obj(id).unwrap();
                    current.remove(&id);
                }
            }
            Op::Batch(count, len, seed) => {
                let ids = store.allocate_run(count, len).unwrap();
                let data: Vec<Vec<u8>> = (0..count)
                    .map(|i| bytes(seed ^ i, len.saturating_sub(i % 3).max(1) as usize))
                    .collect();
                let batch: Vec<(ObjectId, &[u8])> =
                    ids.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
                store.write_batched_objs(&batch).unwrap();
                current.extend(ids.into_iter().zip(data));
            }
            Op::Burst(n, index, seed) => {
                let len = |i: usize| [1usize, 100, 3_000, 4_000, 4_096, 5_000, 9_000][i % 7];
                for i in 0..n {
                    if let Some(id) = nth(&current, index.wrapping_add(i * 7)) {
                        let data = bytes(seed ^ i as u64, len(i + seed as usize));
                        store.replace_obj(id, &data).unwrap();
                        current.insert(id, data);
                    }
                    let data = bytes(!seed ^ i as u64, len(i + 3));
                    current.insert(store.write_new_obj_from_bytes(&data).unwrap(), data);
                }
            }
            Op::Commit => {
                store.commit().unwrap();
                committed = current.clone();
            }
            Op::Reopen => {
                store.close().unwrap();
                committed = current.clone();
                store = Store::open_with(disk.clone(), options()).unwrap();
            }
            Op::Crash(power, seed) => {
                let mode = if power { CrashMode::PowerLoss } else { CrashMode::ProcessCrash };
                let image = disk.crash_image(mode, seed);
                drop(store);
                disk = SimDisk::from_image(image);
                store = Store::open_with(disk.clone(), options())
                    .map_err(|e| TestCaseError::fail(format!("open after {mode:?}: {e}")))?;
                current = committed.clone();
            }
            Op::Compact => {
                store.compact().unwrap();
                committed = current.clone();
            }
        }
        prop_assert_eq!(&contents(&store).unwrap(), &current);
    }
    let report = store.verify().unwrap();
    prop_assert!(report.is_clean(), "{:?}", report.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn base_store_matches_the_model_through_commits_reopens_and_crashes(ops in prop::collection::vec(op(), 1..60), buffer in write_buffer(), room in append_room()) {
        run::<BasicAllocator>(ops, buffer, room)?;
    }

    #[test]
    fn multi_store_matches_the_model_through_commits_reopens_and_crashes(ops in prop::collection::vec(op(), 1..60), buffer in write_buffer()) {
        run::<OmniBlockAllocator>(ops, buffer, 100)?;
    }
}
