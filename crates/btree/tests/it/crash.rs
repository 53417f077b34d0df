//! A crash at every operation: the store and every log segment share one operation clock;
//! at operation `k` the machine stops (that operation and every later one fail and do
//! nothing), then each file is left as a power loss leaves it (pages written since their
//! file's last sync are new, old, zeroed or garbage). The reopened database must hold one of
//! the commits since the last acknowledged durable one, or the one in flight. A second crash
//! during the recovery of some of those states must leave the same choice.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bob_alloc::BasicAllocator;
use bob_btree::{Db, DbOptions, Durability, LogDir, LogFile};
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{Store, StoreOptions};

/// The machine's operation clock: operation number `crash_at` and all after it fail.
struct Clock {
    ops: AtomicU64,
    crash_at: u64,
}

impl Clock {
    fn tick(&self) -> io::Result<()> {
        if self.ops.fetch_add(1, Ordering::SeqCst) >= self.crash_at {
            return Err(io::Error::other("the machine is down"));
        }
        Ok(())
    }
}

/// A simulated disk on the shared clock.
#[derive(Clone)]
struct Faulty {
    disk: SimDisk,
    clock: Arc<Clock>,
}

impl FileBackend for Faulty {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.clock.tick()?;
        self.disk.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.clock.tick()?;
        self.disk.write_at(buf, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        self.clock.tick()?;
        self.disk.write_vectored_at(bufs, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.disk.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.clock.tick()?;
        self.disk.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.clock.tick()?;
        self.disk.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.clock.tick()?;
        self.disk.sync_all()
    }
}

/// Log segments on the shared clock; names are durable at once.
#[derive(Clone)]
struct Dir {
    files: Arc<Mutex<BTreeMap<u64, SimDisk>>>,
    clock: Arc<Clock>,
}

impl LogDir for Dir {
    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(self.files.lock().unwrap().keys().copied().collect())
    }
    fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile> {
        self.clock.tick()?;
        let disk = SimDisk::new();
        disk.write_at(header, 0)?;
        disk.sync_all()?;
        self.files.lock().unwrap().insert(seq, disk.clone());
        Ok(Arc::new(Faulty { disk, clock: self.clock.clone() }))
    }
    fn open(&self, seq: u64) -> io::Result<LogFile> {
        let disk = self.files.lock().unwrap().get(&seq).cloned().ok_or(io::ErrorKind::NotFound)?;
        Ok(Arc::new(Faulty { disk, clock: self.clock.clone() }))
    }
    fn remove(&self, seq: u64) -> io::Result<()> {
        self.clock.tick()?;
        self.files.lock().unwrap().remove(&seq);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        self.clock.tick()
    }
}

type Model = BTreeMap<u64, u64>;

fn options() -> DbOptions {
    DbOptions {
        store: StoreOptions { journal_bytes: 8 * 4096, ..StoreOptions::default() },
        checkpoint_after_bytes: 24 << 10,
        segment_bytes: 12 << 10,
        checkpoint_interval: None,
        ..DbOptions::default()
    }
}

/// The files after a crash, on a fresh clock that stops at `crash_at`.
struct Machine {
    store: SimDisk,
    log: BTreeMap<u64, SimDisk>,
}

impl Machine {
    /// A copy to run on, leaving this one as it is.
    fn copy(&self) -> Machine {
        Machine {
            store: self.store.after_process_crash(),
            log: self.log.iter().map(|(&s, d)| (s, d.after_process_crash())).collect(),
        }
    }

    fn crashed(&self, seed: u64) -> Machine {
        Machine {
            store: self.store.crashed(CrashMode::PowerLoss, seed),
            log: self
                .log
                .iter()
                .map(|(&s, d)| (s, d.crashed(CrashMode::PowerLoss, seed ^ s)))
                .collect(),
        }
    }

    fn open(&self, crash_at: u64) -> (bob_btree::Result<Db<Store<BasicAllocator, Faulty>>>, Dir) {
        let clock = Arc::new(Clock { ops: AtomicU64::new(0), crash_at });
        let dir = Dir { files: Arc::new(Mutex::new(self.log.clone())), clock: clock.clone() };
        let disk = Faulty { disk: self.store.clone(), clock };
        let db = Store::<BasicAllocator, _>::open_with(disk, options().store)
            .map_err(bob_btree::Error::from)
            .and_then(|s| {
                Db::with_log(ConcurrentStore::new(s, 0), Box::new(dir.clone()), &options())
            });
        (db, dir)
    }
}

fn contents<S>(db: &Db<S>) -> Model
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer,
{
    let read = db.begin_read();
    let Some(t) = read.open_tree::<u64, u64>("t") else { return Model::new() };
    t.iter().unwrap().map(Result::unwrap).collect()
}

/// Runs the workload on a machine that stops at operation `crash_at`. Returns the files,
/// the commits a recovery may show (from the last acknowledged durable one on, and the one
/// in flight), and how many operations ran.
fn run(crash_at: u64) -> (Machine, Option<Vec<Model>>, u64) {
    let clock = Arc::new(Clock { ops: AtomicU64::new(0), crash_at });
    let store_disk = SimDisk::new();
    let dir = Dir { files: Arc::new(Mutex::new(BTreeMap::new())), clock: clock.clone() };
    let mut allowed = vec![Model::new()];
    let mut model = Model::new();
    let mut created = false;
    let result = (|| -> bob_btree::Result<()> {
        let disk = Faulty { disk: store_disk.clone(), clock: clock.clone() };
        let store = Store::<BasicAllocator, _>::create_with(disk, options().store)?;
        let db = Db::with_log(ConcurrentStore::new(store, 0), Box::new(dir.clone()), &options())?;
        created = true;
        for round in 0..24u64 {
            let mut next = model.clone();
            let mut tx = db.begin_write()?;
            {
                let mut t = tx.open_tree::<u64, u64>("t")?;
                for i in 0..30u64 {
                    let k = (round * 37 + i * 11) % 400;
                    if i % 4 == 3 {
                        t.remove(&k)?;
                        next.remove(&k);
                    } else {
                        t.insert(&k, &(round * 100 + i))?;
                        next.insert(k, round * 100 + i);
                    }
                }
            }
            let durable = round % 3 != 1;
            allowed.push(next.clone()); // in flight: may or may not survive
            tx.commit(if durable { Durability::Durable } else { Durability::Buffered })?;
            model = next;
            if durable {
                allowed = vec![model.clone()];
            }
            if round % 5 == 4 {
                db.checkpoint()?;
                allowed = vec![model.clone()];
            }
        }
        db.close()?;
        allowed = vec![model.clone()];
        Ok(())
    })();
    let ran = clock.ops.load(Ordering::SeqCst);
    if crash_at == u64::MAX {
        result.expect("no crash, no error");
    }
    let log = dir.files.lock().unwrap().clone();
    // A creation that never returned promised nothing.
    (Machine { store: store_disk, log }, created.then_some(allowed), ran)
}

fn check(machine: &Machine, allowed: &[Model], what: &str) {
    let (db, _) = machine.copy().open(u64::MAX);
    let db = db.unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let found = contents(&db);
    assert!(
        allowed.contains(&found),
        "{what}: {} entries, not one of the {} allowed commits",
        found.len(),
        allowed.len()
    );
    assert!(db.verify().unwrap().is_clean(), "{what}");
}

#[test]
fn a_crash_at_every_operation_recovers_an_allowed_commit() {
    let (_, _, total) = run(u64::MAX);
    assert!(total > 60, "{total} operations");
    let step = if std::env::var_os("CI").is_some() { 1 } else { 3 };
    for k in (0..total).step_by(step) {
        let (machine, allowed, _) = run(k);
        let Some(allowed) = allowed else { continue };
        let crashed = machine.crashed(k);
        check(&crashed, &allowed, &format!("crash at op {k}"));
        // A second crash during recovery, at a few points of it.
        if k % 7 == 0 {
            for j in [0, 2, 5, 9, 14, 30] {
                let base = crashed.copy();
                let (db, dir) = base.open(j);
                drop(db);
                let again = Machine { store: base.store, log: dir.files.lock().unwrap().clone() }
                    .crashed(k ^ j);
                check(&again, &allowed, &format!("crash at op {k}, then at op {j} of recovery"));
            }
        }
    }
}
