//! Regression tests for findings of the outside review, each with its story.

use std::collections::BTreeMap;

use bob_io_helpers::testing::SimDisk;
use bob_store_core::{BaseStore, BatchStorer, ObjectId, PrimeStorer, StoreOptions, Storer};
use bob_treap::{Error, MAX_FIELD_BYTES};

use crate::{Tree, value};

/// Story: `batch_persist` allocated its runs before encoding the nodes, and a value one byte
/// over the limit made it return without freeing them: 399 objects for 300 nodes and a
/// 16.9 MB file after the next commit. Now it fails before allocating, and frees what it
/// allocated on any later error.
#[test]
fn regression_a_failed_batch_persist_leaves_no_objects_behind() {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree = Tree::new();
    for k in 0..299u64 {
        tree.insert(&store, k, value(k, 9)).unwrap();
    }
    tree.insert(&store, 299, vec![7; MAX_FIELD_BYTES + 1]).unwrap();
    let failed = tree.batch_persist(&mut store);
    assert!(matches!(failed, Err(Error::TooLarge { .. })), "{failed:?}");
    store.commit().unwrap();
    assert_eq!(store.object_count(), 0, "nothing was persisted, so nothing is allocated");
    let file_len = store.file_len().unwrap();
    assert!(file_len < 100 << 10, "the file holds no run: {file_len} bytes");
    // Without the oversized value the same tree persists, one object per node.
    tree.delete(&store, &299).unwrap();
    let report = tree.batch_persist(&mut store).unwrap();
    store.commit().unwrap();
    assert_eq!((report.nodes, store.object_count()), (299, 299));
    let mut loaded = Tree::load(&store, report.root.unwrap()).unwrap();
    assert_eq!(loaded.len(), 299);
    loaded.check(&store).unwrap();
}

/// A tree of `keys` keys (`k * 3`), persisted and committed, then loaded again: only its
/// root is in memory.
fn reloaded(keys: u64) -> (BaseStore<SimDisk>, Tree) {
    let mut store = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
    let mut tree = Tree::new();
    for k in 0..keys {
        tree.insert(&store, k * 3, value(k, 1)).unwrap();
    }
    let root = tree.persist(&mut store).unwrap().unwrap();
    store.commit().unwrap();
    let tree = Tree::load(&store, root).unwrap();
    (store, tree)
}

/// Story: `merge` loaded both of its links before looking for an empty one, so deleting a
/// node with one stored child loaded that child and then linked it as stored: a node in
/// memory that nothing referenced, which no flush could reach. Deleting the root of a
/// reloaded 2-key tree left one node in memory after `flush(0)`.
#[test]
fn regression_deleting_a_node_with_one_child_leaves_nothing_unreachable_in_memory() {
    let (store, mut tree) = reloaded(2);
    // Only the root is loaded: `get_cached` finds its key without touching the store.
    let (root_key, other_key) = if tree.get_cached(&0).is_some() { (0, 3) } else { (3, 0) };
    assert_eq!(tree.delete(&store, &root_key).unwrap(), Some(value(root_key / 3, 1)));
    tree.flush(0);
    assert_eq!(tree.nodes_in_memory(), 0);
    assert_eq!(tree.to_vec(&store).unwrap(), [(other_key, value(other_key / 3, 1))]);
}

/// Story: the same unreachable nodes piled up past the memory budget: with a budget of 500
/// nodes, deleting all 10,000 keys of a reloaded tree left 3,269 nodes in memory.
#[test]
fn regression_deletes_from_a_reloaded_tree_keep_the_memory_budget() {
    const BUDGET: usize = 500;
    let (store, mut tree) = reloaded(10_000);
    tree.set_memory_budget(Some(BUDGET));
    for k in 0..10_000u64 {
        assert!(tree.delete(&store, &(k * 3)).unwrap().is_some());
    }
    assert!(tree.is_empty());
    assert!(tree.nodes_in_memory() <= BUDGET, "{} nodes in memory", tree.nodes_in_memory());
}

type Shared = bob_store_concurrent::ConcurrentStore<BaseStore<SimDisk>>;

/// A concurrent store that commits before every change the treap makes, as another thread
/// sharing it may: each commit is one cut between two of the treap's store calls. At each
/// cut the durable image is reopened and the tree its prime object names must load whole,
/// holding one of `expected`.
struct CommitsBetweenCalls {
    store: Shared,
    disk: SimDisk,
    expected: Vec<Vec<(u64, Vec<u8>)>>,
    /// Cuts seen, by the index in `expected` of the tree each found.
    seen: Vec<usize>,
}

impl CommitsBetweenCalls {
    fn cut(&mut self) -> bob_store_core::Result<()> {
        if self.expected.is_empty() {
            return Ok(());
        }
        self.store.commit()?;
        let image = SimDisk::from_image(self.disk.durable_image());
        let store = BaseStore::open_with(image, StoreOptions::default()).unwrap();
        let mut tree = crate::load(&store);
        let found = tree.to_vec(&store).unwrap();
        tree.check(&store).unwrap();
        let which = self.expected.iter().position(|e| *e == found);
        self.seen.push(which.expect("a cut holds the old tree or the new one"));
        Ok(())
    }
}

impl Storer for CommitsBetweenCalls {
    type Reader<'a> = bob_store_concurrent::ConcurrentReader<'a, BaseStore<SimDisk>>;
    type Writer<'a> = bob_store_concurrent::ConcurrentWriter<'a, BaseStore<SimDisk>>;

    fn new_obj(&mut self, size: u64) -> bob_store_core::Result<ObjectId> {
        self.cut()?;
        self.store.new_obj(size)
    }

    fn delete_obj(&mut self, id: ObjectId) -> bob_store_core::Result<()> {
        self.cut()?;
        self.store.delete_obj(id)
    }

    fn late_read_obj(&self, id: ObjectId) -> bob_store_core::Result<Self::Reader<'_>> {
        self.store.late_read_obj(id)
    }

    fn late_write_new_obj(
        &mut self,
        size: u64,
    ) -> bob_store_core::Result<(ObjectId, Self::Writer<'_>)> {
        self.cut()?;
        self.store.late_write_new_obj(size)
    }

    fn write_to_obj(&mut self, id: ObjectId) -> bob_store_core::Result<Self::Writer<'_>> {
        self.cut()?;
        self.store.write_to_obj(id)
    }

    fn commit(&mut self) -> bob_store_core::Result<()> {
        self.store.commit()
    }

    fn close(self) -> bob_store_core::Result<()> {
        self.store.close()
    }
}

/// No cuts while runs are allocated and filled: the store fills by batch only objects made
/// since the last commit, so a commit there fails the batch (which then frees its runs), a
/// limit of batched writes and not what these cuts check.
impl BatchStorer for CommitsBetweenCalls {
    fn allocate_run(&mut self, count: u64, size: u64) -> bob_store_core::Result<Vec<ObjectId>> {
        self.store.allocate_run(count, size)
    }

    fn allocate_runs(
        &mut self,
        count: u64,
        size: u64,
        min_run: u64,
    ) -> bob_store_core::Result<Vec<Vec<ObjectId>>> {
        self.store.allocate_runs(count, size, min_run)
    }

    fn write_batched_objs(&mut self, objects: &[(ObjectId, &[u8])]) -> bob_store_core::Result<()> {
        self.store.write_batched_objs(objects)
    }
}

impl PrimeStorer for CommitsBetweenCalls {
    fn prime_object(&mut self, size: u64) -> bob_store_core::Result<ObjectId> {
        self.cut()?;
        self.store.prime_object(size)
    }
}

/// Story: `persist` deleted the old nodes, the old root among them, before the caller
/// published the new root, so any commit in between (another thread's, on a shared
/// `ConcurrentStore`) made the old root's deletion durable while the prime object still
/// named it, and `load` failed with `NotFound`. Now a commit at every point of a save, per
/// node or batched, finds a whole tree: the old one or the new one.
#[test]
fn regression_a_commit_at_any_point_of_a_save_finds_a_whole_tree() {
    for batched in [false, true] {
        let disk = SimDisk::new();
        let base = BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
        let store = Shared::new(base, 0);
        let mut store = CommitsBetweenCalls { store, disk, expected: Vec::new(), seen: Vec::new() };
        let mut tree = Tree::new();
        let mut model = BTreeMap::new();
        for round in 0..3u8 {
            let before: Vec<_> =
                model.iter().map(|(k, v): (&u64, &Vec<u8>)| (*k, v.clone())).collect();
            for k in 0..200u64 {
                if (k + u64::from(round)) % 3 == 0 {
                    tree.delete(&store, &k).unwrap();
                    model.remove(&k);
                } else {
                    tree.insert(&store, k, value(k, round)).unwrap();
                    model.insert(k, value(k, round));
                }
            }
            let after: Vec<_> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
            // The first round has no committed tree to cut against.
            if round > 0 {
                store.expected = vec![before, after];
            }
            if batched {
                tree.batch_persist_with(&mut store, crate::publish).unwrap();
            } else {
                tree.persist_with(&mut store, crate::publish).unwrap();
            }
            store.commit().unwrap();
        }
        let seen = &store.seen;
        assert!(seen.contains(&0) && seen.contains(&1), "cuts before and after: {seen:?}");
        assert_eq!(tree.replaced_pending(), 0);
    }
}
