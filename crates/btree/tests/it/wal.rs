//! The write-ahead log under targeted damage.

use bob_alloc::BasicAllocator;
use bob_btree::{Db, DbOptions, Durability, Error};
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::Store;

use crate::sim::{SimDb, SimLogDir};

/// The model's options without its persistence thread: a checkpoint of its own between the
/// commits below would release the log these tests damage.
fn options() -> DbOptions {
    DbOptions { checkpoint_interval: None, ..crate::model::options() }
}

fn create(disk: &SimDisk, log: &SimLogDir) -> SimDb {
    let store = Store::<BasicAllocator, _>::create_with(disk.clone(), options().store).unwrap();
    Db::with_log(ConcurrentStore::new(store, 0), Box::new(log.clone()), &options()).unwrap()
}

fn reopen(disk: &SimDisk, log: &SimLogDir) -> bob_btree::Result<SimDb> {
    let store = Store::<BasicAllocator, _>::open_with(disk.clone(), options().store).unwrap();
    Db::with_log(ConcurrentStore::new(store, 0), Box::new(log.clone()), &options())
}

/// Five durable commits of one key each after a checkpoint; the database is then dropped
/// (a process crash), so they live in the log only.
fn five_logged_commits() -> (SimDisk, SimLogDir) {
    let (disk, log) = (SimDisk::new(), SimLogDir::default());
    let db = create(&disk, &log);
    db.checkpoint().unwrap();
    for i in 0..5u64 {
        let mut tx = db.begin_write().unwrap();
        tx.open_tree::<u64, u64>("t").unwrap().insert(&i, &(i * 10)).unwrap();
        tx.commit(Durability::Durable).unwrap();
    }
    drop(db);
    (disk.crashed(CrashMode::ProcessCrash, 0), log.crashed(CrashMode::ProcessCrash, 0))
}

fn keys(db: &SimDb) -> Vec<u64> {
    let read = db.begin_read();
    let tree = read.open_tree::<u64, u64>("t").unwrap();
    tree.iter().unwrap().map(|e| e.unwrap().0).collect()
}

#[test]
fn logged_commits_are_replayed_after_a_crash() {
    let (disk, log) = five_logged_commits();
    let db = reopen(&disk, &log).unwrap();
    assert_eq!(keys(&db), [0, 1, 2, 3, 4]);
    // Replayed commits are checkpointed like any other; the log is then released.
    db.checkpoint().unwrap();
    assert!(log.segments().is_empty(), "every segment held only checkpointed records");
    drop(db);
    assert_eq!(keys(&reopen(&disk, &log).unwrap()), [0, 1, 2, 3, 4]);
}

#[test]
fn a_damaged_record_before_the_last_is_an_error_never_a_rollback() {
    let (disk, log) = five_logged_commits();
    let (_, segment) = log.segments().pop().unwrap();
    // Each durable group starts a page: page 0 is the header, page 1 the first commit.
    for page in 1..5u64 {
        let damaged = log.crashed(CrashMode::ProcessCrash, 0);
        let (_, seg) = damaged.segments().pop().unwrap();
        let mut byte = [0u8];
        seg.read_at(&mut byte, page * 4096 + 60).unwrap();
        seg.write_at(&[byte[0] ^ 0x08], page * 4096 + 60).unwrap();
        match reopen(&disk, &damaged) {
            Err(Error::Corrupt(why)) => assert!(why.contains("synced"), "{why}"),
            other => panic!("page {page}: {:?}", other.map(|db| keys(&db))),
        }
    }
    // The last commit's group damaged: a torn tail, dropped (the commits before it stay).
    let mut byte = [0u8];
    segment.read_at(&mut byte, 5 * 4096 + 60).unwrap();
    segment.write_at(&[byte[0] ^ 0x08], 5 * 4096 + 60).unwrap();
    assert_eq!(keys(&reopen(&disk, &log).unwrap()), [0, 1, 2, 3]);
}

#[test]
fn a_log_of_another_database_is_refused_and_a_logged_database_needs_its_log() {
    let (disk, log) = five_logged_commits();
    let (other_disk, other_log) = five_logged_commits();
    drop(other_disk);
    assert!(
        matches!(reopen(&disk, &other_log), Err(Error::Corrupt(why)) if why.contains("another database"))
    );
    let store = Store::<BasicAllocator, _>::open_with(disk.clone(), options().store).unwrap();
    assert!(matches!(Db::new(ConcurrentStore::new(store, 0)), Err(Error::LogRequired)));
    assert_eq!(keys(&reopen(&disk, &log).unwrap()), [0, 1, 2, 3, 4]);
}

/// The store opens lazily (its table pages read as nodes are): a damaged table page of the
/// newest commit that the open and the first reads never touch fails the first write
/// transaction, before the log acknowledges any commit a checkpoint could not then write.
#[test]
fn the_first_write_checks_what_the_stores_lazy_open_left_unread() {
    let (disk, log) = (SimDisk::new(), SimLogDir::default());
    let db = create(&disk, &log);
    let mut tx = db.begin_write().unwrap();
    {
        let mut tree = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for i in 0..8000u64 {
            tree.insert(&i, &vec![i as u8; 200]).unwrap();
        }
    }
    tx.commit(Durability::Durable).unwrap();
    db.close().unwrap();
    // The newest header slot, its table root, and the last table page it lists.
    let image = disk.crash_image(CrashMode::ProcessCrash, 0);
    let u64_at = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
    let slot = if u64_at(16) > u64_at(4096 + 16) { 0 } else { 4096 };
    let root = u64_at(slot + 24) as usize;
    let pages = u64_at(root + 8) as usize;
    assert!(pages > 2, "{pages} table pages");
    let page = u64_at(root + 16 + 16 * (pages - 1));
    let damaged = SimDisk::from_image(image.clone());
    damaged.write_at(&[image[page as usize + 200] ^ 0x40], page + 200).unwrap();
    let store = Store::<BasicAllocator, _>::open_with(damaged, options().store).unwrap();
    let db =
        Db::with_log(ConcurrentStore::new(store, 0), Box::new(log.clone()), &options()).unwrap();
    // Reads of nodes on intact pages work; the first write is refused, and so is the next.
    let read = db.begin_read();
    assert!(read.open_tree::<u64, Vec<u8>>("t").is_some());
    drop(read);
    let first = db.begin_write().map(|_| ());
    assert!(
        matches!(&first, Err(Error::Store(bob_store_core::Error::NewestCommitDamaged { .. }))),
        "{first:?}"
    );
    assert!(db.begin_write().is_err());
}
