//! Read-only opens (`Store::open_read_only`, `open_read_only_with`): everything committed
//! reads back, every write is refused, and nothing reaches the file.

use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::{BaseStore, Error, Storer};

use crate::{bytes, contents, put};

#[test]
fn a_read_only_open_replays_in_memory_and_writes_nothing() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), crate::options()).unwrap();
    let mut model = std::collections::BTreeMap::new();
    for i in 0..40u64 {
        let data = bytes(i, 100 + i as usize * 300);
        model.insert(put(&mut store, &data), data);
        if i % 3 == 0 {
            store.commit().unwrap();
        }
    }
    store.commit().unwrap();
    assert!(store.journaled_commits() > 0, "the scenario: records to replay");
    // A crash: the journal is not folded into the table.
    let image = disk.crash_image(CrashMode::ProcessCrash, 0);
    drop(store);
    let disk = SimDisk::from_image(image.clone());
    let mut store = BaseStore::open_read_only_with(disk.clone(), crate::options()).unwrap();
    assert!(store.is_read_only());
    assert!(contents(&store).unwrap() == model);
    let id = *model.keys().next().unwrap();
    assert!(matches!(store.write_new_obj_from_bytes(b"x"), Err(Error::ReadOnly)));
    assert!(matches!(store.delete_obj(id), Err(Error::ReadOnly)));
    assert!(matches!(store.write_bytes_to_obj(id, b"x"), Err(Error::ReadOnly)));
    store.commit().unwrap();
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
    assert_eq!(disk.op_counts().writes, 0, "nothing written");
    assert!(disk.live_image() == image, "the file is as it was");
    // A writer opens it as it was, and replays the same commits.
    let store = BaseStore::open_with(disk, crate::options()).unwrap();
    assert!(contents(&store).unwrap() == model);
}

#[test]
fn read_only_handles_share_the_file_and_keep_writers_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.bob");
    let mut store = BaseStore::create(&path, Default::default()).unwrap();
    let data = bytes(1, 5_000);
    let id = put(&mut store, &data);
    store.close().unwrap();
    let before = std::fs::read(&path).unwrap();
    let first = BaseStore::open_read_only(&path, Default::default()).unwrap();
    let second = BaseStore::open_read_only(&path, Default::default()).unwrap();
    assert_eq!(first.read_bytes_from_obj(id).unwrap(), data);
    assert_eq!(second.read_bytes_from_obj(id).unwrap(), data);
    assert!(matches!(BaseStore::open(&path, Default::default()), Err(Error::Locked { .. })));
    first.close().unwrap();
    second.close().unwrap();
    assert!(std::fs::read(&path).unwrap() == before, "the file is as it was");
    let mut store = BaseStore::open(&path, Default::default()).unwrap();
    assert!(matches!(
        BaseStore::open_read_only(&path, Default::default()),
        Err(Error::Locked { .. })
    ));
    store.delete_obj(id).unwrap();
    store.close().unwrap();
}
