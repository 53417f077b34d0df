//! A checkpoint holds writers off only for its first phase (marking the changed nodes clean):
//! while it rewrites and syncs, writers commit and readers read, and nothing is lost.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bob_alloc::BasicAllocator;
use bob_btree::{Db, DbOptions, Durability};
use bob_io_helpers::testing::{HookOp, Hooked, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{Store, StoreOptions};

use crate::sim::SimLogDir;

/// Whether syncs wait, and how many are waiting; whether they fail.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, usize)>,
    changed: Condvar,
    fail: std::sync::atomic::AtomicBool,
}

impl Gate {
    /// What a sync does first: fails if told to, else waits while the gate is closed.
    fn wait_open(&self) -> io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        self.changed.notify_all();
        while state.0 {
            state = self.changed.wait(state).unwrap();
        }
        state.1 -= 1;
        Ok(())
    }
}

/// A simulated disk whose syncs wait while its gate is closed.
#[derive(Clone)]
struct GateDisk {
    disk: Hooked<SimDisk>,
    gate: Arc<Gate>,
}

impl GateDisk {
    fn new() -> Self {
        let gate = Arc::new(Gate::default());
        let waits = Arc::clone(&gate);
        let disk = Hooked::new(SimDisk::new(), move |op| {
            if op == HookOp::Sync { waits.wait_open() } else { Ok(()) }
        });
        Self { disk, gate }
    }

    fn close(&self) {
        self.gate.state.lock().unwrap().0 = true;
    }

    fn open(&self) {
        self.gate.state.lock().unwrap().0 = false;
        self.gate.changed.notify_all();
    }

    /// Waits until a sync waits at the closed gate.
    fn await_waiter(&self) {
        let mut state = self.gate.state.lock().unwrap();
        while state.1 == 0 {
            state = self.gate.changed.wait_timeout(state, Duration::from_secs(10)).unwrap().0;
        }
    }
}

fn options() -> DbOptions {
    DbOptions {
        store: StoreOptions { journal_bytes: 16 * 4096, ..StoreOptions::default() },
        checkpoint_interval: None,
        ..DbOptions::default()
    }
}

type GateDb = Db<Store<BasicAllocator, Hooked<SimDisk>>>;

/// The database on `disk` and `log`, created or reopened.
fn open_db(disk: &GateDisk, log: &SimLogDir, create: bool) -> GateDb {
    let store = if create {
        Store::<BasicAllocator, _>::create_with(disk.disk.clone(), options().store)
    } else {
        Store::<BasicAllocator, _>::open_with(disk.disk.clone(), options().store)
    };
    Db::with_log(ConcurrentStore::new(store.unwrap(), 0), Box::new(log.clone()), &options())
        .unwrap()
}

/// Every entry of tree `t`.
fn entries(db: &GateDb) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let read = db.begin_read();
    let tree = read.open_tree::<u64, Vec<u8>>("t").unwrap();
    tree.iter().unwrap().map(Result::unwrap).collect()
}

#[test]
fn writers_and_readers_go_on_while_a_checkpoint_writes_and_syncs() {
    let disk = GateDisk::new();
    let log = SimLogDir::default();
    let db = open_db(&disk, &log, true);
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in 0..3000u64 {
            let len = if k % 100 == 0 { 3000 } else { 20 };
            t.insert(&k, &vec![k as u8; len]).unwrap();
        }
    }
    tx.commit(Durability::Durable).unwrap();
    db.checkpoint().unwrap();
    // Changes spread over many leaves, long values among them, for the next checkpoint.
    let mut tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
        for k in (0..3000u64).step_by(7) {
            t.insert(&k, &vec![1; if k % 2 == 0 { 2500 } else { 10 }]).unwrap();
        }
        for k in (1..3000u64).step_by(11) {
            t.delete(&k).unwrap();
        }
    }
    tx.commit(Durability::Buffered).unwrap();
    let before = db.verify().unwrap();
    assert!(before.is_clean(), "{before:?}");

    disk.close();
    std::thread::scope(|scope| {
        let checkpoint = scope.spawn(|| db.checkpoint());
        disk.await_waiter(); // the checkpoint is syncing the store
        // A writer commits (durably: the log is not behind the gate) and readers see it,
        // and a snapshot taken now reads every entry. (Were writers held off, the writer
        // would wait for the gate: the test opens it and fails.)
        let (done, wrote) = std::sync::mpsc::channel();
        let db = &db;
        scope.spawn(move || {
            let mut tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
                t.insert(&5000, &vec![5; 4000]).unwrap();
                t.insert(&7, &vec![7; 3]).unwrap();
                assert!(t.delete(&14).unwrap());
            }
            tx.commit(Durability::Durable).unwrap();
            done.send(()).unwrap();
        });
        if wrote.recv_timeout(Duration::from_secs(20)).is_err() {
            disk.open();
            panic!("a writer waited for a checkpoint's sync");
        }
        let read = db.begin_read();
        let t = read.open_tree::<u64, Vec<u8>>("t").unwrap();
        assert_eq!(t.get(&5000).unwrap(), Some(vec![5; 4000]));
        assert_eq!(t.get(&7).unwrap(), Some(vec![7; 3]));
        assert_eq!(t.get(&14).unwrap(), None);
        assert_eq!(t.iter().unwrap().count() as u64, t.len());
        assert!(!checkpoint.is_finished(), "the checkpoint waits at the gate");
        drop(read);
        disk.open();
        checkpoint.join().unwrap().unwrap();
    });
    db.checkpoint().unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    let store = db.store().verify().unwrap();
    assert_eq!(store.objects, 1 + report.nodes + report.values + report.deferred);
    let want = entries(&db);
    assert_eq!(want.get(&5000).map(Vec::len), Some(4000));
    db.close().unwrap();
    // Three reopens (a crash of the process too: the disks as they are).
    for _ in 0..3 {
        let db = open_db(&disk, &log, false);
        assert_eq!(entries(&db), want);
        db.close().unwrap();
    }
}

/// A checkpoint whose second phase fails (its store sync) has published its nodes as clean:
/// no later checkpoint or write goes on from there, and the reopened database holds every
/// acknowledged commit (from the log).
#[test]
fn after_a_failed_checkpoint_nothing_follows_it_and_the_log_keeps_every_commit() {
    let disk = GateDisk::new();
    let log = SimLogDir::default();
    let db = open_db(&disk, &log, true);
    let mut want = std::collections::BTreeMap::new();
    for round in 0..3u64 {
        let mut tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_tree::<u64, Vec<u8>>("t").unwrap();
            for k in 0..400u64 {
                let v = vec![(k + round) as u8; if k % 50 == 0 { 2000 } else { 16 }];
                t.put(&(k * 3 + round), &v).unwrap();
                want.insert(k * 3 + round, v);
            }
        }
        tx.commit(Durability::Durable).unwrap();
        if round == 0 {
            db.checkpoint().unwrap();
        }
    }
    disk.gate.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(db.checkpoint().is_err());
    disk.gate.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(db.checkpoint(), Err(bob_btree::Error::Failed)));
    assert!(matches!(db.begin_write(), Err(bob_btree::Error::Failed)));
    drop(db); // the process ends: the disks as they are
    for _ in 0..3 {
        let db = open_db(&disk, &log, false);
        assert_eq!(entries(&db), want);
        assert!(db.verify().unwrap().is_clean());
        db.close().unwrap();
    }
}
