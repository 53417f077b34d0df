//! Group commit: durable commits of several threads share the log's syncs, each returns `Ok`
//! only once its record is durable, and a failed sync gives no caller it would have covered
//! an `Ok`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bob_alloc::BasicAllocator;
use bob_btree::{Db, Durability, LogDir, LogFile};
use bob_io_helpers::testing::{CrashMode, HookOp, Hooked, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::Store;

use crate::model::options;
use crate::sim::{SimDb, SimLogDir};

/// Log segments whose syncs take 2 ms (so commits of other threads pile up behind one) and
/// fail from the `fail_from`-th sync on.
#[derive(Clone)]
struct SlowDir {
    inner: SimLogDir,
    syncs: Arc<AtomicU64>,
    fail_from: u64,
}

impl SlowDir {
    /// `disk`, each sync of it taking 2 ms, and failing from the `fail_from`-th on.
    fn wrap(&self, disk: LogFile) -> LogFile {
        let (syncs, fail_from) = (Arc::clone(&self.syncs), self.fail_from);
        Arc::new(Hooked::new(disk, move |op| {
            if op == HookOp::Sync {
                std::thread::sleep(Duration::from_millis(2));
                if syncs.fetch_add(1, Ordering::SeqCst) + 1 >= fail_from {
                    return Err(io::Error::other("injected sync failure"));
                }
            }
            Ok(())
        }))
    }
}

impl LogDir for SlowDir {
    fn list(&self) -> io::Result<Vec<u64>> {
        self.inner.list()
    }
    fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile> {
        Ok(self.wrap(self.inner.create(seq, header)?))
    }
    fn open(&self, seq: u64) -> io::Result<LogFile> {
        Ok(self.wrap(self.inner.open(seq)?))
    }
    fn remove(&self, seq: u64) -> io::Result<()> {
        self.inner.remove(seq)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn retire(&self, seq: u64) -> io::Result<()> {
        self.inner.retire(seq)
    }
}

const THREADS: u64 = 4;
const COMMITS: u64 = 25;

/// `THREADS` threads make `COMMITS` durable commits each (one key apiece); returns the
/// database, the keys whose commit returned `Ok`, and how many returned an error.
fn commit_from_threads(disk: &SimDisk, dir: &SlowDir) -> (SimDb, Vec<u64>, u64) {
    let store = Store::<BasicAllocator, _>::create_with(disk.clone(), options().store).unwrap();
    let db =
        Db::with_log(ConcurrentStore::new(store, 0), Box::new(dir.clone()), &options()).unwrap();
    let results: Vec<(Vec<u64>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let db = &db;
                scope.spawn(move || {
                    let (mut ok, mut failed) = (Vec::new(), 0);
                    for i in 0..COMMITS {
                        let key = t * 1000 + i;
                        let result = db.begin_write().and_then(|mut tx| {
                            tx.open_tree::<u64, u64>("t")?.insert(&key, &(key * 7))?;
                            tx.commit(Durability::Durable)
                        });
                        match result {
                            Ok(()) => ok.push(key),
                            Err(_) => failed += 1,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().flat_map(|(ok, _)| ok.iter().copied()).collect();
    let failed = results.iter().map(|(_, failed)| failed).sum();
    (db, ok, failed)
}

/// The keys a power loss leaves, after a reopen.
fn keys_after_power_loss(disk: &SimDisk, dir: &SlowDir, seed: u64) -> Vec<u64> {
    let disk = disk.crashed(CrashMode::PowerLoss, seed);
    let log = dir.inner.crashed(CrashMode::PowerLoss, seed);
    let store = Store::<BasicAllocator, _>::open_with(disk, options().store).unwrap();
    let db: SimDb =
        Db::with_log(ConcurrentStore::new(store, 0), Box::new(log), &options()).unwrap();
    let read = db.begin_read();
    let Some(tree) = read.open_tree::<u64, u64>("t") else { return Vec::new() };
    tree.iter().unwrap().map(|e| e.unwrap().0).collect()
}

#[test]
fn durable_commits_of_several_threads_share_syncs() {
    let disk = SimDisk::new();
    let dir = SlowDir { inner: SimLogDir::default(), syncs: Arc::default(), fail_from: u64::MAX };
    let (db, ok, failed) = commit_from_threads(&disk, &dir);
    assert_eq!((ok.len() as u64, failed), (THREADS * COMMITS, 0));
    let syncs = db.stats().log_syncs;
    assert!((1..=THREADS * COMMITS * 3 / 4).contains(&syncs), "{syncs} syncs for 100 commits");
    drop(db);
    for seed in 0..4 {
        let mut found = keys_after_power_loss(&disk, &dir, seed);
        found.sort_unstable();
        let mut want = ok.clone();
        want.sort_unstable();
        assert_eq!(found, want, "seed {seed}: an acknowledged commit is missing");
    }
}

#[test]
fn a_failed_shared_sync_acknowledges_nothing_it_did_not_make_durable() {
    let disk = SimDisk::new();
    let dir = SlowDir { inner: SimLogDir::default(), syncs: Arc::default(), fail_from: 12 };
    let (db, ok, failed) = commit_from_threads(&disk, &dir);
    assert!(failed > 0, "the sync failure reached the committers");
    assert!(!ok.is_empty(), "commits before the failure were acknowledged");
    // The database refuses writes after the failure.
    assert!(db.begin_write().is_err());
    drop(db);
    for seed in 0..4 {
        let found = keys_after_power_loss(&disk, &dir, seed);
        for key in &ok {
            assert!(found.contains(key), "seed {seed}: acknowledged key {key} is missing");
        }
    }
}
