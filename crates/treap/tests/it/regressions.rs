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
