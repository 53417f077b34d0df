//! Regression tests for findings of the outside review, each with its story.

use bob_io_helpers::testing::SimDisk;
use bob_store_core::{BaseStore, StoreOptions, Storer};
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
