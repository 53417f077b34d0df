//! Integration tests for bob-treap (one binary, house style).

use std::collections::BTreeMap;

use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::{BaseStore, ObjectId, PRIME_OBJECT_ID, PrimeStorer, StoreOptions, Storer};
use bob_treap::PersistentTreap;
use proptest::prelude::*;

mod regressions;

type Tree = PersistentTreap<u64, Vec<u8>>;

/// Records `root` in the prime object: a present flag, then the id.
fn publish<S: PrimeStorer>(store: &mut S, root: Option<ObjectId>) -> bob_treap::Result<()> {
    store.prime_object(16)?;
    let mut record = [0u8; 16];
    if let Some(root) = root {
        record[..8].copy_from_slice(&1u64.to_le_bytes());
        record[8..].copy_from_slice(&root.0.to_le_bytes());
    }
    store.write_bytes_to_obj(PRIME_OBJECT_ID, &record)?;
    Ok(())
}

/// Persists the tree, records its root in the prime object, frees the replaced nodes and
/// commits.
fn save(tree: &mut Tree, store: &mut BaseStore<SimDisk>) {
    tree.persist_with(store, publish).unwrap();
    assert_eq!(tree.replaced_pending(), 0);
    store.commit().unwrap();
}

/// The tree whose root the prime object records.
fn load(store: &BaseStore<SimDisk>) -> Tree {
    let Ok(record) = store.read_bytes_from_obj(PRIME_OBJECT_ID) else { return Tree::new() };
    if record[..8] == [0; 8] {
        return Tree::new();
    }
    let root = u64::from_le_bytes(record[8..16].try_into().unwrap());
    Tree::load(store, ObjectId(root)).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u8),
    Delete(u64),
    Get(u64),
    Range(u64, u64),
    Persist,
    BatchPersist,
    Flush(usize),
    Budget(Option<usize>),
    Iterate(usize),
    Save(bool),
    Reopen,
    Crash(bool, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..300, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (0u64..300).prop_map(Op::Delete),
        2 => (0u64..300).prop_map(Op::Get),
        1 => (0u64..300, 0u64..300).prop_map(|(a, b)| Op::Range(a.min(b), a.max(b))),
        2 => Just(Op::Persist),
        2 => Just(Op::BatchPersist),
        2 => (0usize..40).prop_map(Op::Flush),
        1 => proptest::option::of(0usize..40).prop_map(Op::Budget),
        1 => (0usize..10).prop_map(Op::Iterate),
        2 => any::<bool>().prop_map(Op::Save),
        1 => Just(Op::Reopen),
        1 => (any::<bool>(), any::<u64>()).prop_map(|(p, s)| Op::Crash(p, s)),
    ]
}

fn value(k: u64, v: u8) -> Vec<u8> {
    vec![v; (k % 7) as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Contents, order and the treap invariants agree with a `BTreeMap` through persists,
    /// commits, reopens and crashes.
    #[test]
    fn the_treap_matches_a_btreemap(
        ops in prop::collection::vec(op(), 1..80),
        seed in any::<u64>(),
    ) {
        let mut disk = SimDisk::new();
        let mut store = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
        let mut tree = Tree::with_seed(seed);
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut saved = model.clone();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    prop_assert_eq!(tree.insert(&store, k, value(k, v)).unwrap(), model.insert(k, value(k, v)));
                }
                Op::Delete(k) => prop_assert_eq!(tree.delete(&store, &k).unwrap(), model.remove(&k)),
                Op::Get(k) => {
                    if let Some(found) = tree.get_cached(&k) {
                        prop_assert_eq!(found, model.get(&k).cloned());
                    }
                    prop_assert_eq!(tree.get(&store, &k).unwrap(), model.get(&k).cloned());
                }
                Op::Range(a, b) => {
                    let expected: Vec<_> = model.range(a..b).map(|(k, v)| (*k, v.clone())).collect();
                    prop_assert_eq!(tree.range(&store, a..b).unwrap(), expected.clone());
                    let limit = (a % 5) as usize;
                    let first: Vec<_> = expected.into_iter().take(limit).collect();
                    if let Some(cached) = tree.range_cached(a..b, limit) {
                        prop_assert_eq!(&cached, &first);
                    }
                    prop_assert_eq!(tree.range_limited(&store, a..b, limit).unwrap(), first);
                }
                Op::Persist => {
                    tree.persist(&mut store).unwrap();
                }
                Op::BatchPersist => {
                    let report = tree.batch_persist(&mut store).unwrap();
                    prop_assert_eq!(report.fallback_nodes, 0);
                }
                Op::Flush(budget) => {
                    tree.flush(budget);
                }
                Op::Budget(budget) => tree.set_memory_budget(budget),
                Op::Iterate(budget) => {
                    let walked: Vec<_> = tree.iter_from(&store, None, Some(budget)).map(|i| i.unwrap()).collect();
                    let expected: Vec<_> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
                    prop_assert_eq!(walked, expected);
                }
                Op::Save(batched) => {
                    if batched {
                        tree.batch_persist_with(&mut store, publish).unwrap();
                        store.commit().unwrap();
                    } else {
                        save(&mut tree, &mut store);
                    }
                    saved = model.clone();
                }
                Op::Reopen => {
                    save(&mut tree, &mut store);
                    saved = model.clone();
                    store.close().unwrap();
                    store = BaseStore::open_with(disk.clone(), StoreOptions::default()).unwrap();
                    let budget = tree.memory_budget();
                    tree = load(&store);
                    tree.set_memory_budget(budget);
                }
                Op::Crash(power, seed) => {
                    let mode = if power { CrashMode::PowerLoss } else { CrashMode::ProcessCrash };
                    let image = disk.crash_image(mode, seed);
                    drop(store);
                    disk = SimDisk::from_image(image);
                    store = BaseStore::open_with(disk.clone(), StoreOptions::default()).unwrap();
                    tree = load(&store);
                    model = saved.clone();
                }
            }
            prop_assert_eq!(tree.len(), model.len() as u64);
            let all: Vec<_> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
            prop_assert_eq!(tree.to_vec(&store).unwrap(), all);
            tree.check(&store).unwrap();
        }
    }
}

#[test]
fn trees_of_every_size_persist_and_reload_lazily() {
    for size in [10u64, 100, 1000, 100_000] {
        let disk = SimDisk::new();
        let mut store = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
        let mut tree = Tree::new();
        for k in 0..size {
            tree.insert(&store, k * 3, value(k, k as u8)).unwrap();
        }
        save(&mut tree, &mut store);
        assert_eq!(store.object_count(), size + 1, "one object per node, plus the prime");
        store.close().unwrap();
        let store = BaseStore::open_with(disk, StoreOptions::default()).unwrap();
        let mut tree = load(&store);
        assert_eq!(tree.len(), size);
        assert_eq!(tree.nodes_in_memory(), 1, "only the root is read at load");
        assert_eq!(
            tree.get(&store, &((size - 1) * 3)).unwrap(),
            Some(value(size - 1, (size - 1) as u8))
        );
        assert!(tree.nodes_in_memory() < 200, "a lookup loads one path");
        assert_eq!(tree.first(&store).unwrap().map(|(k, _)| k), Some(0));
        assert_eq!(tree.last(&store).unwrap().map(|(k, _)| k), Some((size - 1) * 3));
        if size <= 1000 {
            tree.check(&store).unwrap();
        }
    }
}

/// Persist and commit; change the tree, even persist it, without committing; crash: the
/// committed tree loads whole.
#[test]
fn the_committed_tree_survives_a_crash_after_uncommitted_changes() {
    for (persist_again, power) in [(false, false), (true, false), (false, true), (true, true)] {
        let disk = SimDisk::new();
        let mut store = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
        let mut tree = Tree::new();
        for k in 0..500 {
            tree.insert(&store, k, value(k, 1)).unwrap();
        }
        save(&mut tree, &mut store);
        for k in 0..500 {
            if k % 2 == 0 {
                tree.delete(&store, &k).unwrap();
            } else {
                tree.insert(&store, k, value(k, 2)).unwrap();
            }
        }
        if persist_again {
            tree.persist(&mut store).unwrap();
        }
        let mode = if power { CrashMode::PowerLoss } else { CrashMode::ProcessCrash };
        let image = disk.crash_image(mode, 7);
        drop(store);
        let store =
            BaseStore::open_with(SimDisk::from_image(image), StoreOptions::default()).unwrap();
        let mut tree = load(&store);
        let expected: Vec<_> = (0..500).map(|k| (k, value(k, 1))).collect();
        assert_eq!(tree.to_vec(&store).unwrap(), expected);
        assert!(store.verify().unwrap().is_clean());
    }
}

/// 800 keys, then 50 rounds of 80 deletes and 80 inserts with a save each: the object count
/// stays exact and the file size within 25 % of round 5's. The size is measured from round 5:
/// a save writes the changed paths as new objects while the old ones stay live until its
/// commit, so the first rounds grow the file by that working space (about 40 % of the tree:
/// 160 changes dirty most of the upper tree) and settle the holes; after that it only
/// fluctuates. The shape, and so the sizes, depend on the tree's priority seed (printed, and
/// replayed from `BOB_SEED`): over seeds 0 to 11, round 5 ended at 143–164 KB and no later
/// round more than 16 % above it when this was written.
#[test]
fn churn_keeps_objects_and_file_size_flat() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree = Tree::with_seed(bob_io_helpers::testing::test_seed());
    let mut next = 0u64;
    for _ in 0..800 {
        tree.insert(&store, next, value(next, 3)).unwrap();
        next += 1;
    }
    save(&mut tree, &mut store);
    let objects = store.object_count();
    let start = store.file_len().unwrap();
    let mut size = 0;
    for round in 0..50u64 {
        for i in 0..80 {
            tree.delete(&store, &(round * 80 + i)).unwrap();
            tree.insert(&store, next, value(next, 3)).unwrap();
            next += 1;
        }
        save(&mut tree, &mut store);
        assert_eq!(store.object_count(), objects, "round {round}");
        let now = store.file_len().unwrap();
        if round == 5 {
            size = now;
        }
        // The store keeps room past its data (the next commit's metadata, and up to one
        // growth step of 64 KiB), which moves with the data by up to that much.
        assert!(
            round < 5 || now * 4 <= size * 5 + 4 * (128 << 10),
            "round {round}: file {now} bytes, round 5 {size}"
        );
        assert!(
            round >= 5 || now * 2 <= start * 3,
            "round {round}: {now} bytes, 50 % past the initial {start}"
        );
    }
}

/// The treap runs over the concurrent store through the generic `Storer` traits.
#[test]
fn the_treap_works_over_a_concurrent_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bob_store_concurrent::ConcurrentStore::create_multi(
        dir.path().join("s"),
        StoreOptions::default(),
        2,
    )
    .unwrap();
    let mut tree: PersistentTreap<String> = PersistentTreap::new();
    for word in ["pear", "apple", "fig", "kiwi"] {
        tree.insert(&store, word.to_string(), ()).unwrap();
    }
    let root = tree.persist(&mut store).unwrap().unwrap();
    store.commit().unwrap();
    let mut reloaded: PersistentTreap<String> = PersistentTreap::load(&store, root).unwrap();
    let keys: Vec<String> = reloaded.to_vec(&store).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["apple", "fig", "kiwi", "pear"]);
}

/// A uniform tree (fixed-size keys, no payload) persists as one run with one write, and
/// reloads exactly as a per-node persist of the same keys does; on both stores.
#[test]
fn batch_persist_of_a_uniform_tree_is_one_run_and_one_write() {
    fn run<A: bob_store_core::SpaceAllocator>() {
        let disk = SimDisk::new();
        // Unbuffered, so the batch is written at once (buffered, it waits for the commit).
        let options = StoreOptions { write_buffer_bytes: 0, ..StoreOptions::default() };
        let mut store =
            bob_store_core::Store::<A, SimDisk>::create_with(disk.clone(), options).unwrap();
        let mut batched: PersistentTreap<u64> = PersistentTreap::new();
        let mut single: PersistentTreap<u64> = PersistentTreap::new();
        for k in 0..500u64 {
            batched.insert(&store, k * 7, ()).unwrap();
            single.insert(&store, k * 7, ()).unwrap();
        }
        let writes = disk.op_counts().writes;
        let report = batched.batch_persist(&mut store).unwrap();
        assert_eq!((report.nodes, report.runs, report.fallback_nodes), (500, 1, 0));
        assert_eq!(disk.op_counts().writes - writes, 1, "one positioned write");
        let single_root = single.persist(&mut store).unwrap().unwrap();
        store.commit().unwrap();
        let batched_root = report.root.unwrap();
        let mut a: PersistentTreap<u64> = PersistentTreap::load(&store, batched_root).unwrap();
        let mut b: PersistentTreap<u64> = PersistentTreap::load(&store, single_root).unwrap();
        assert_eq!(a.to_vec(&store).unwrap(), b.to_vec(&store).unwrap());
        a.check(&store).unwrap();
        // Changing a few keys re-persists only their paths, still batched.
        for k in [3u64, 701, 1402] {
            a.insert(&store, k, ()).unwrap();
        }
        let again = a.batch_persist(&mut store).unwrap();
        assert!(again.nodes < 60 && again.fallback_nodes == 0, "{again:?}");
        store.commit().unwrap();
        let mut c: PersistentTreap<u64> =
            PersistentTreap::load(&store, again.root.unwrap()).unwrap();
        assert_eq!(c.len(), 503);
        c.check(&store).unwrap();
    }
    run::<bob_alloc::BasicAllocator>();
    run::<bob_alloc::OmniBlockAllocator>();
}

/// Nodes of different sizes batch per size (a run each).
#[test]
fn batch_persist_groups_variable_sizes() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree = Tree::new();
    for k in 0..300u64 {
        tree.insert(&store, k, value(k, 9)).unwrap(); // 7 payload sizes
    }
    let report = tree.batch_persist(&mut store).unwrap();
    assert_eq!((report.nodes, report.runs, report.fallback_nodes), (300, 7, 0));
    store.commit().unwrap();
    let mut loaded = Tree::load(&store, report.root.unwrap()).unwrap();
    assert_eq!(loaded.len(), 300);
    loaded.check(&store).unwrap();
}

/// 100,000 keys with a budget of 5,000 nodes: after each flush at most 5,000 nodes stay in
/// memory, and a full walk yields all 100,000 keys, three times, with flushes between.
#[test]
fn a_flush_keeps_memory_within_the_budget() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64> = PersistentTreap::new();
    for batch in 0..10u64 {
        for k in batch * 10_000..(batch + 1) * 10_000 {
            tree.insert(&store, k, ()).unwrap();
        }
        tree.batch_persist(&mut store).unwrap();
        tree.flush(5_000);
        assert!(tree.nodes_in_memory() <= 5_000, "after batch {batch}: {}", tree.nodes_in_memory());
    }
    store.commit().unwrap();
    for _ in 0..3 {
        let keys = tree.to_vec(&store).unwrap();
        assert_eq!(keys.len(), 100_000);
        assert!(keys.windows(2).all(|w| w[0].0 < w[1].0));
        tree.flush(5_000);
        assert!(tree.nodes_in_memory() <= 5_000);
    }
    // Unpersisted changes are never flushed away.
    tree.insert(&store, 1_000_000, ()).unwrap();
    tree.flush(0);
    assert_eq!(tree.get(&store, &1_000_000).unwrap(), Some(()));
    tree.check(&store).unwrap();
}

/// After a flush the most recently used nodes stay: reading the hot keys again reads
/// nothing from disk.
#[test]
fn a_flush_unloads_the_least_recently_used_nodes_first() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64> = PersistentTreap::new();
    for k in 0..2_000 {
        tree.insert(&store, k, ()).unwrap();
    }
    let root = tree.persist(&mut store).unwrap().unwrap();
    store.commit().unwrap();
    let hot: Vec<u64> = (0..2_000).step_by(97).collect();
    // The nodes the hot keys' paths hold.
    let mut fresh: PersistentTreap<u64> = PersistentTreap::load(&store, root).unwrap();
    for k in &hot {
        fresh.get(&store, k).unwrap();
    }
    let hot_nodes = fresh.nodes_in_memory();

    let mut tree: PersistentTreap<u64> = PersistentTreap::load(&store, root).unwrap();
    for k in &hot {
        tree.get(&store, k).unwrap();
    }
    for k in 500..1_500 {
        tree.get(&store, &k).unwrap();
    }
    for k in &hot {
        tree.get(&store, k).unwrap();
    }
    assert!(tree.nodes_in_memory() > 2 * hot_nodes);
    tree.flush(hot_nodes);
    assert_eq!(tree.nodes_in_memory(), hot_nodes);
    let reads = disk.op_counts().reads;
    for k in &hot {
        assert_eq!(tree.get(&store, k).unwrap(), Some(()));
    }
    assert_eq!(disk.op_counts().reads, reads, "the hot paths stayed in memory");
    // Priorities are seeded per tree, so a given cold key may sit on a hot path; the cold
    // keys together cannot all.
    for k in (500..1_500).filter(|k| k % 97 != 0) {
        assert!(tree.get(&store, &k).unwrap().is_some());
    }
    assert!(disk.op_counts().reads > reads, "the cold ones were unloaded");
}

/// With a memory budget set, every operation leaves at most that many nodes in memory once
/// the changes are persisted, and full walks still see every key.
#[test]
fn a_memory_budget_holds_after_every_operation() {
    const BUDGET: usize = 5_000;
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64> = PersistentTreap::new();
    tree.set_memory_budget(Some(BUDGET));
    for batch in 0..10u64 {
        for k in batch * 10_000..(batch + 1) * 10_000 {
            tree.insert(&store, k * 7 % 100_000, ()).unwrap();
        }
        tree.batch_persist(&mut store).unwrap();
        assert!(tree.nodes_in_memory() <= BUDGET, "after batch {batch}");
    }
    store.commit().unwrap();
    let mut rng = fastrand::Rng::with_seed(bob_io_helpers::testing::test_seed());
    for _ in 0..20_000 {
        let k = rng.u64(0..100_000);
        assert_eq!(tree.get(&store, &k).unwrap(), Some(()));
        assert!(tree.nodes_in_memory() <= BUDGET);
    }
    for _ in 0..3 {
        let mut count = 0u64;
        let mut last = None;
        for item in tree.iter_from(&store, None, None) {
            let (k, ()) = item.unwrap();
            assert!(last.is_none_or(|l| l < k));
            last = Some(k);
            count += 1;
        }
        assert_eq!(count, 100_000);
        assert!(tree.nodes_in_memory() <= BUDGET);
    }
    tree.check(&store).unwrap();
}

/// A map with serde payloads through postcard round-trips through persist and reload.
#[test]
fn serde_payloads_round_trip() {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Account {
        owner: String,
        balance: i64,
        tags: Vec<String>,
    }
    use bob_treap::{PersistentPayloadTreap, Postcard};
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree: PersistentPayloadTreap<u64, Postcard<Account>> = PersistentPayloadTreap::new();
    for id in 0..50u64 {
        let account = Account {
            owner: format!("owner {id}"),
            balance: id as i64 * -3,
            tags: vec!["a".into(); id as usize % 3],
        };
        tree.insert(&store, id, Postcard(account)).unwrap();
    }
    let root = tree.batch_persist(&mut store).unwrap().root.unwrap();
    store.commit().unwrap();
    let mut loaded: PersistentPayloadTreap<u64, Postcard<Account>> =
        PersistentPayloadTreap::load(&store, root).unwrap();
    let Postcard(account) = loaded.get(&store, &17).unwrap().unwrap();
    assert_eq!(
        account,
        Account { owner: "owner 17".into(), balance: -51, tags: vec!["a".into(); 2] }
    );
}

/// The lazy iterator walks 100,000 keys in order with a 5,000-node budget enforced between
/// steps, and agrees with `range`; starting mid-way works, present or absent start key.
#[test]
fn the_iterator_stays_correct_while_it_flushes() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64> = PersistentTreap::new();
    for k in 0..100_000u64 {
        tree.insert(&store, k * 2, ()).unwrap();
    }
    tree.batch_persist(&mut store).unwrap();
    store.commit().unwrap();
    tree.flush(0);
    let mut count = 0u64;
    let mut most = 0;
    for item in tree.iter_from(&store, None, Some(5_000)) {
        let (key, ()) = item.unwrap();
        assert_eq!(key, count * 2);
        count += 1;
        most = most.max(key);
    }
    assert_eq!(count, 100_000);
    assert!(tree.nodes_in_memory() <= 5_000);
    let from_absent: Vec<u64> =
        tree.iter_from(&store, Some(7), None).take(3).map(|i| i.unwrap().0).collect();
    assert_eq!(from_absent, [8, 10, 12]);
    let from_present: Vec<u64> =
        tree.iter_from(&store, Some(8), None).take(2).map(|i| i.unwrap().0).collect();
    assert_eq!(from_present, [8, 10]);
    assert_eq!(tree.iter_from(&store, Some(most + 1), None).count(), 0);
}

/// A mutable walk changes the values it says it changed, and only those paths are rewritten.
#[test]
fn a_mutable_walk_updates_values() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64, u64> = PersistentTreap::new();
    for k in 0..1000u64 {
        tree.insert(&store, k, k).unwrap();
    }
    tree.batch_persist(&mut store).unwrap();
    let changed = tree
        .walk_mut(&store, Some(100), |k, v| {
            if k % 100 == 0 {
                *v += 1_000_000;
                true
            } else {
                false
            }
        })
        .unwrap();
    assert_eq!(changed, 10);
    let report = tree.batch_persist(&mut store).unwrap();
    assert!(report.nodes < 200, "only changed paths are written: {report:?}");
    store.commit().unwrap();
    let mut loaded: PersistentTreap<u64, u64> =
        PersistentTreap::load(&store, report.root.unwrap()).unwrap();
    assert_eq!(loaded.get(&store, &300).unwrap(), Some(1_000_300));
    assert_eq!(loaded.get(&store, &301).unwrap(), Some(301));
    loaded.check(&store).unwrap();
}

/// A shared treap's background flusher keeps it within budget while a walk takes the lock
/// for each step: the walk sees every key in order, and memory comes back under budget.
#[test]
fn a_background_flusher_keeps_a_shared_treap_within_budget() {
    const BUDGET: usize = 2_000;
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let shared = bob_treap::SharedTreap::new(PersistentTreap::<u64>::new(), BUDGET);
    for batch in 0..20u64 {
        let mut tree = shared.lock();
        for k in batch * 1_000..(batch + 1) * 1_000 {
            tree.insert(&store, k * 13 % 20_000, ()).unwrap();
        }
        tree.batch_persist(&mut store).unwrap();
    }
    store.commit().unwrap();
    let within_budget = || {
        for _ in 0..10_000 {
            if shared.lock().nodes_in_memory() <= BUDGET {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    };
    assert!(within_budget());
    assert!(shared.background_flushes() > 0);
    let mut last = None;
    let mut count = 0;
    while let Some((k, ())) = shared.lock().successor(&store, last.as_ref()).unwrap() {
        assert!(last.is_none_or(|l| l < k));
        last = Some(k);
        count += 1;
    }
    assert_eq!(count, 20_000);
    assert!(within_budget());
    let mut tree = shared.into_inner();
    assert!(tree.nodes_in_memory() <= BUDGET);
    tree.check(&store).unwrap();
}

proptest! {
    /// The in-memory treap matches a `BTreeMap` and keeps its invariants; turned into a
    /// persistent treap it persists and reloads the same entries.
    #[test]
    fn the_in_memory_treap_matches_a_btreemap(
        ops in prop::collection::vec((0u8..4, 0u16..200, any::<u32>()), 1..300),
        seed in any::<u64>(),
    ) {
        let mut tree: bob_treap::Treap<u16, u32> = bob_treap::Treap::with_seed(seed);
        let mut model = BTreeMap::new();
        for (op, k, v) in ops {
            match op {
                0 | 1 => prop_assert_eq!(tree.insert(k, v), model.insert(k, v)),
                2 => prop_assert_eq!(tree.delete(&k), model.remove(&k)),
                _ => {
                    let (a, b) = (k.min(v as u16), k.max(v as u16));
                    let expected: Vec<_> = model.range(a..b).map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(tree.range(a..b), expected);
                }
            }
            prop_assert_eq!(tree.len(), model.len() as u64);
            prop_assert_eq!(tree.first(), model.first_key_value().map(|(k, v)| (*k, *v)));
            prop_assert_eq!(tree.last(), model.last_key_value().map(|(k, v)| (*k, *v)));
            tree.check().unwrap();
        }
        let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
        let mut persistent = tree.into_persistent();
        let root = persistent.batch_persist(&mut store).unwrap().root;
        let all: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        match root {
            Some(root) => {
                let mut reloaded: PersistentTreap<u16, u32> = PersistentTreap::load(&store, root).unwrap();
                prop_assert_eq!(reloaded.to_vec(&store).unwrap(), all);
            }
            None => prop_assert!(all.is_empty()),
        }
    }
}

/// `get_cached` answers from memory only: `None` while the path holds an unloaded node,
/// the answer once `get` has loaded it; borrowed keys work like `BTreeMap`'s.
#[test]
fn get_cached_answers_only_from_memory_and_keys_can_be_borrowed() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<Vec<u8>, u32> = PersistentTreap::new();
    for k in 0..200u32 {
        tree.insert(&store, k.to_be_bytes().to_vec(), k).unwrap();
    }
    assert_eq!(tree.get_cached(&7u32.to_be_bytes()[..]), Some(Some(7)));
    assert_eq!(tree.get_cached(&[9u8, 9, 9][..]), Some(None));
    let root = tree.persist(&mut store).unwrap().unwrap();
    store.commit().unwrap();
    let mut tree: PersistentTreap<Vec<u8>, u32> = PersistentTreap::load(&store, root).unwrap();
    let key = 150u32.to_be_bytes();
    assert_eq!(tree.get_cached(&key[..]), None, "its path is not loaded yet");
    assert_eq!(tree.get(&store, &key[..]).unwrap(), Some(150));
    assert_eq!(tree.get_cached(&key[..]), Some(Some(150)));
    assert!(tree.contains(&store, &key[..]).unwrap());
    assert_eq!(tree.delete(&store, &key[..]).unwrap(), Some(150));
    // Where it was may now lie under nodes not loaded: "unknown" or "absent", never found.
    assert!(matches!(tree.get_cached(&key[..]), None | Some(None)));
    assert_eq!(tree.get(&store, &key[..]).unwrap(), None);
}

/// A treap read with another key type than it was written with is told as a type mismatch
/// naming the type, not as damage (a user's first-hour trap: "corrupt treap: u64 needs 8
/// bytes").
#[test]
fn a_treap_read_with_another_key_type_is_a_type_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        bob_store_core::BaseStore::create(dir.path().join("s"), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64> = PersistentTreap::new();
    for k in 0..20u64 {
        tree.insert(&store, k, ()).unwrap();
    }
    let root = tree.persist(&mut store).unwrap().unwrap();
    store.commit().unwrap();
    let err = PersistentTreap::<u32>::load(&store, root)
        .and_then(|mut t| t.to_vec(&store).map(|_| ()))
        .unwrap_err();
    assert!(matches!(&err, bob_treap::Error::TypeMismatch { what: "u32", .. }), "{err}");
    assert!(err.to_string().contains("another key or value type"), "{err}");
}

/// A value too long for a node is refused by `insert`, not accepted and refused at `persist`;
/// the treap is unchanged and persists.
#[test]
fn an_oversized_value_is_refused_at_insert() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        bob_store_core::BaseStore::create(dir.path().join("s"), StoreOptions::default()).unwrap();
    let mut tree: PersistentTreap<u64, Vec<u8>> = PersistentTreap::new();
    tree.insert(&store, 1, vec![1; 10]).unwrap();
    let big = vec![0u8; bob_treap::MAX_FIELD_BYTES + 1];
    let err = tree.insert(&store, 2, big).unwrap_err();
    assert!(matches!(err, bob_treap::Error::TooLarge { .. }), "{err}");
    let big = bob_treap::Postcard(vec![0u8; bob_treap::MAX_FIELD_BYTES]);
    let mut serde_tree: PersistentTreap<u64, bob_treap::Postcard<Vec<u8>>> = PersistentTreap::new();
    assert!(matches!(serde_tree.insert(&store, 2, big), Err(bob_treap::Error::TooLarge { .. })));
    assert_eq!(tree.len(), 1);
    let root = tree.persist(&mut store).unwrap().unwrap();
    store.commit().unwrap();
    let mut back: PersistentTreap<u64, Vec<u8>> = PersistentTreap::load(&store, root).unwrap();
    assert_eq!(back.get(&store, &1).unwrap(), Some(vec![1; 10]));
}

/// Treaps persist through a store shared between threads (`&ConcurrentStore` is a store):
/// four threads each build a treap, persist it and commit through the same `Arc`; every
/// tree reloads whole after a reopen.
#[test]
fn treaps_persist_through_a_shared_concurrent_store_from_four_threads() {
    use bob_store_concurrent::ConcurrentStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = std::sync::Arc::new(
        ConcurrentStore::create_base(&path, StoreOptions::default(), 2).unwrap(),
    );
    let roots: Vec<(u64, bob_store_core::ObjectId)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let store = std::sync::Arc::clone(&store);
                scope.spawn(move || {
                    let mut shared = &*store;
                    let mut tree: PersistentTreap<u64, Vec<u8>> = PersistentTreap::new();
                    for k in 0..500u64 {
                        tree.insert(&shared, k, vec![t as u8; (k % 40) as usize]).unwrap();
                    }
                    let root = if t % 2 == 0 {
                        tree.persist(&mut shared).unwrap().unwrap()
                    } else {
                        tree.batch_persist(&mut shared).unwrap().root.unwrap()
                    };
                    shared.commit().unwrap();
                    (t, root)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    drop(store);
    let store = ConcurrentStore::open_base(&path, StoreOptions::default(), 0).unwrap();
    for (t, root) in roots {
        let mut tree: PersistentTreap<u64, Vec<u8>> = PersistentTreap::load(&store, root).unwrap();
        let entries = tree.to_vec(&store).unwrap();
        assert_eq!(entries.len(), 500);
        assert!(entries.iter().all(|(k, v)| *v == vec![t as u8; (k % 40) as usize]));
        tree.check(&store).unwrap();
    }
    assert!(store.verify().unwrap().is_clean());
}

/// The first user's trap (issue #18): a root id kept after the tree moved on. Its node was
/// freed by a later save and its index reused by the nodes that followed, so before ids
/// carried a tag it loaded part of the current tree (19 of 200 keys) with no error. Now the
/// stale root is refused, as is every stale child on the path.
#[test]
fn a_stale_root_id_is_refused_not_read_as_another_tree() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree = Tree::new();
    for k in 0..200 {
        tree.insert(&store, k, value(k, 1)).unwrap();
    }
    save(&mut tree, &mut store);
    let saved_root = |store: &BaseStore<SimDisk>| {
        let record = store.read_bytes_from_obj(PRIME_OBJECT_ID).unwrap();
        ObjectId(u64::from_le_bytes(record[8..16].try_into().unwrap()))
    };
    let stale = saved_root(&store);
    for round in 2..6u8 {
        for k in 0..200 {
            tree.insert(&store, k, value(k, round)).unwrap();
        }
        save(&mut tree, &mut store);
    }
    let root = saved_root(&store);
    assert_eq!(stale.index(), root.index(), "the old root's index was reused (else pick again)");
    let err = Tree::load(&store, stale).and_then(|mut t| t.to_vec(&store)).unwrap_err();
    assert!(
        matches!(err, bob_treap::Error::Store(bob_store_core::Error::StaleId { id, .. }) if id == stale),
        "{err}"
    );
    let expected: Vec<_> = (0..200).map(|k| (k, value(k, 5))).collect();
    assert_eq!(load(&store).to_vec(&store).unwrap(), expected);
}
