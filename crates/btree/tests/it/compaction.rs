//! `close` compacting a sparse store by copying the trees into a new file: the copy replaces
//! the file only once it is whole and durable; a copy that cannot be made leaves the close to
//! its usual path, and one that cannot be put in place loses nothing.

use std::collections::BTreeMap;
use std::path::Path;

use bob_btree::{
    Db, DbOptions, DefaultStore, Durability, Error, OsLogDir, OsStoreFiles, StoreFiles,
    copy_path_of, log_dir_of,
};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::StoreOptions;

type Model = BTreeMap<u64, Vec<u8>>;

/// The file's inode: a copy renamed over it has a new one, a compaction in place keeps it.
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

fn options() -> DbOptions {
    DbOptions { checkpoint_interval: None, compact_on_close_min_bytes: 0, ..DbOptions::default() }
}

fn value(k: u64) -> Vec<u8> {
    let len = if k % 97 == 0 { 3000 + (k % 7) as usize * 100 } else { 100 };
    vec![k as u8; len]
}

/// Fills tree "t" (long values among short ones) and tree "other", then removes nine
/// entries of "t" in ten: the store is mostly free space. Returns the model of "t".
fn fill_and_shrink(db: &Db<DefaultStore>) -> Model {
    let mut model = Model::new();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 0..30_000u64 {
            t.put(&k, &value(k)).unwrap();
            model.insert(k, value(k));
        }
        let mut other = tx.open_tree::<String, u64>("other").unwrap();
        other.put("x", &1).unwrap();
    }
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in (0..30_000u64).filter(|k| k % 10 != 0) {
            assert!(t.delete(&k).unwrap());
            model.remove(&k);
        }
    }
    tx.commit(Durability::Buffered).unwrap();
    model
}

fn check(path: &Path, model: &Model) {
    for _ in 0..3 {
        let db = Db::open_with(path, &options()).unwrap();
        {
            let read = db.begin_read();
            let t = read.open_tree::<u64, Vec<u8>>("t").unwrap();
            let found: Model = t.iter().unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(&found, model);
            assert_eq!(read.open_tree::<String, u64>("other").unwrap().get("x").unwrap(), Some(1));
        }
        assert!(db.verify().unwrap().is_clean());
        db.close().unwrap();
    }
}

/// The copy holds every committed entry (the last commit only buffered), the file shrinks to
/// about what the entries need, no copy is left beside it, and the log holds nothing more.
#[test]
fn close_copies_a_sparse_store_into_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    let model = fill_and_shrink(&db);
    let before = std::fs::metadata(&path).unwrap().len();
    let old = inode(&path);
    db.close().unwrap();
    assert_ne!(inode(&path), old, "not copied into a new file");
    let after = std::fs::metadata(&path).unwrap().len();
    let live: u64 = model.values().map(|v| 8 + v.len() as u64).sum();
    assert!(after < before / 3, "{before} -> {after} bytes");
    assert!(after < live * 2 + (1 << 20), "{after} bytes for {live} live");
    assert!(!copy_path_of(&path).exists());
    let log: u64 = std::fs::read_dir(log_dir_of(&path))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(log, 0, "log segments left after the compaction");
    check(&path, &model);
    // A later session writes into the copy as into any store.
    let db = Db::open_with(&path, &options()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.open_tree::<u64, Vec<u8>>("t").unwrap().put(&1, &value(1)).unwrap();
    tx.commit(Durability::Durable).unwrap();
    db.close().unwrap();
    let mut model = model;
    model.insert(1, value(1));
    check(&path, &model);
}

/// Store files whose copy cannot be made, or cannot be put in place.
struct Failing {
    inner: OsStoreFiles,
    create: bool,
    install: bool,
}

impl StoreFiles<DefaultStore> for Failing {
    fn create_copy(&self, options: StoreOptions) -> bob_btree::Result<DefaultStore> {
        if self.create {
            return Err(Error::Compaction(std::io::Error::other("no room for a copy")));
        }
        self.inner.create_copy(options)
    }
    fn install_copy(&self) -> bob_btree::Result<()> {
        if self.install {
            return Err(Error::Compaction(std::io::Error::other("rename refused")));
        }
        self.inner.install_copy()
    }
    fn remove_copy(&self) -> bob_btree::Result<()> {
        self.inner.remove_copy()
    }
    fn settle(&self) -> bob_btree::Result<()> {
        self.inner.settle()
    }
}

fn open_failing(path: &Path, create: bool, install: bool) -> Db<DefaultStore> {
    let options = options();
    let store = ConcurrentStore::open_base(path, options.store, 0).unwrap();
    let log = OsLogDir::new(&log_dir_of(path)).unwrap();
    let files = Failing { inner: OsStoreFiles::new(path), create, install };
    Db::with_files(store, Some(Box::new(log)), Box::new(files), &options).unwrap()
}

/// A copy that cannot be made changes nothing: the close checkpoints and compacts the file
/// in place instead.
#[test]
fn a_copy_that_cannot_be_made_leaves_the_close_to_its_usual_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    Db::create_with(&path, &options()).unwrap().close().unwrap();
    let db = open_failing(&path, true, false);
    let model = fill_and_shrink(&db);
    let before = std::fs::metadata(&path).unwrap().len();
    let old = inode(&path);
    db.close().unwrap();
    assert_eq!(inode(&path), old, "compacted in place");
    assert!(std::fs::metadata(&path).unwrap().len() < before);
    check(&path, &model);
}

/// A copy written but not put in place: `close` fails, the database refuses writes, and the
/// next open finds every commit (the old file and its log are as they were; the copy is
/// removed).
#[test]
fn a_copy_that_cannot_be_put_in_place_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    Db::create_with(&path, &options()).unwrap().close().unwrap();
    let db = open_failing(&path, false, true);
    let model = fill_and_shrink(&db);
    assert!(matches!(db.close(), Err(Error::Compaction(_))));
    assert!(copy_path_of(&path).exists());
    check(&path, &model);
    assert!(!copy_path_of(&path).exists());
}

/// The copy takes the file's permissions; a path that is a symbolic link is not replaced:
/// the database works on the file the link leads to (its log beside it), and the copy
/// replaces that file.
#[test]
fn the_copy_keeps_the_files_permissions_and_a_link_stays_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let db = Db::create_with(&path, &options()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let model = fill_and_shrink(&db);
    let before = std::fs::metadata(&path).unwrap().len();
    let old = inode(&path);
    db.close().unwrap();
    assert_ne!(inode(&path), old, "not copied into a new file");
    assert!(std::fs::metadata(&path).unwrap().len() < before / 3);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    check(&path, &model);

    let target = dir.path().join("target.bob");
    let link = dir.path().join("link.bob");
    let db = Db::create_with(&target, &options()).unwrap();
    db.close().unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let db = Db::open_with(&link, &options()).unwrap();
    let model = fill_and_shrink(&db);
    let before = std::fs::metadata(&target).unwrap().len();
    let old = inode(&target);
    db.close().unwrap();
    assert_ne!(inode(&target), old, "the file the link leads to was copied");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(!log_dir_of(&link).exists(), "one log, beside the real file");
    assert!(std::fs::metadata(&target).unwrap().len() < before);
    check(&link, &model);
    check(&target, &model);
}

/// A database without a log is copied as well: its catalog says so, and it opens (without a
/// log) with every entry.
#[test]
fn a_database_without_a_log_is_copied_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bob");
    let options = DbOptions { log: false, ..options() };
    let db = Db::create_with(&path, &options).unwrap();
    let mut model = Model::new();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 0..20_000u64 {
            t.put(&k, &value(k)).unwrap();
            model.insert(k, value(k));
        }
    }
    tx.commit(Durability::Durable).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in (0..20_000u64).filter(|k| k % 8 != 0) {
            t.delete(&k).unwrap();
            model.remove(&k);
        }
    }
    tx.commit(Durability::Durable).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let old = inode(&path);
    db.close().unwrap();
    assert_ne!(inode(&path), old, "not copied into a new file");
    assert!(std::fs::metadata(&path).unwrap().len() < before / 3);
    assert!(!copy_path_of(&path).exists());
    for _ in 0..3 {
        let db = Db::open_with(&path, &options).unwrap();
        let read = db.begin_read();
        let found: Model = read
            .open_tree::<u64, Vec<u8>>("t")
            .unwrap()
            .iter()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found, model);
        drop(read);
        assert!(db.verify().unwrap().is_clean());
        db.close().unwrap();
    }
}
