//! Crash simulation for tests and the reliability campaigns (feature `testing`): a machine
//! whose store and log segments are simulated disks on one operation clock. At operation
//! `crash_at` the machine stops: that operation and every later one fail and do nothing.
//! Afterwards each file can be left as a power loss leaves it ([`Machine::crashed`]).

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bob_alloc::BasicAllocator;
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::Store;

use bob_store_core::StoreOptions;

use crate::{Db, DbOptions, Durability, Error, LogDir, LogFile, Result, StoreFiles};

/// The machine's operation clock.
#[derive(Debug)]
pub struct Clock {
    ops: AtomicU64,
    crash_at: u64,
}

impl Clock {
    /// A clock that stops the machine at operation `crash_at` (`u64::MAX`: never).
    pub fn new(crash_at: u64) -> Arc<Self> {
        Arc::new(Self { ops: AtomicU64::new(0), crash_at })
    }

    /// Operations issued so far (failed ones included).
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    fn tick(&self) -> io::Result<()> {
        if self.ops.fetch_add(1, Ordering::SeqCst) >= self.crash_at {
            return Err(io::Error::other("the machine is down"));
        }
        Ok(())
    }
}

/// A simulated disk on a clock.
#[derive(Clone, Debug)]
pub struct ClockDisk {
    disk: SimDisk,
    clock: Arc<Clock>,
}

impl FileBackend for ClockDisk {
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

/// A change to the log directory's names that no sync of the directory has made durable: a
/// power loss may undo it ([`Machine::crashed`] undoes each with even odds).
#[derive(Clone, Debug)]
enum Unsynced {
    /// Segment `seq` was removed.
    Removed(u64, SimDisk),
    /// Segment `seq` was retired, and kept as spare `i` if `Some(i)`.
    Retired(u64, SimDisk, Option<usize>),
}

impl Unsynced {
    fn map(&self, f: impl Fn(&SimDisk) -> SimDisk) -> Self {
        match self {
            Self::Removed(seq, disk) => Self::Removed(*seq, f(disk)),
            Self::Retired(seq, disk, spare) => Self::Retired(*seq, f(disk), *spare),
        }
    }
}

/// Log segments as simulated disks on a clock. Retired segments are kept as spares (two at
/// most) and reused, old groups and all, as a directory on a file system does. A removal or
/// retirement is durable only once the directory is synced (or a segment created, which
/// syncs the directory as `OsLogDir` does): until then a power loss may bring the segment
/// back under its name, each one on its own.
#[derive(Clone, Debug)]
pub struct ClockDir {
    files: Arc<Mutex<BTreeMap<u64, SimDisk>>>,
    spares: Arc<Mutex<Vec<SimDisk>>>,
    unsynced: Arc<Mutex<Vec<Unsynced>>>,
    clock: Arc<Clock>,
}

impl ClockDir {
    fn unsynced(&self) -> std::sync::MutexGuard<'_, Vec<Unsynced>> {
        self.unsynced.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogDir for ClockDir {
    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect())
    }
    fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile> {
        self.clock.tick()?;
        let spare = self.spares.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let disk = spare.unwrap_or_default();
        disk.write_at(header, 0)?;
        disk.sync_all()?;
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(seq, disk.clone());
        // The new name is made durable with a sync of the directory, which takes every
        // earlier change of it along.
        self.unsynced().clear();
        Ok(Arc::new(ClockDisk { disk, clock: self.clock.clone() }))
    }
    fn open(&self, seq: u64) -> io::Result<LogFile> {
        let files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let disk = files.get(&seq).cloned().ok_or(io::ErrorKind::NotFound)?;
        Ok(Arc::new(ClockDisk { disk, clock: self.clock.clone() }))
    }
    fn remove(&self, seq: u64) -> io::Result<()> {
        self.clock.tick()?;
        let disk =
            self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&seq);
        if let Some(disk) = disk {
            self.unsynced().push(Unsynced::Removed(seq, disk));
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        self.clock.tick()?;
        self.unsynced().clear();
        Ok(())
    }
    fn retire(&self, seq: u64) -> io::Result<()> {
        self.clock.tick()?;
        let disk =
            self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&seq);
        let mut spares = self.spares.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(disk) = disk {
            let kept = (spares.len() < 2).then(|| {
                spares.push(disk.clone());
                spares.len() - 1
            });
            self.unsynced().push(Unsynced::Retired(seq, disk, kept));
        }
        Ok(())
    }
}

/// A database on simulated disks.
pub type SimDb = Db<Store<BasicAllocator, ClockDisk>>;

/// The store's file and a compaction's copy, as a directory holds them.
#[derive(Debug, Default, Clone)]
struct StoreSlots {
    /// The file the database's name leads to.
    current: SimDisk,
    /// A compaction's copy, under its own name.
    copy: Option<SimDisk>,
    /// The file the name led to before the copy was renamed over it, until the directory
    /// is synced: a power loss may bring it back.
    replaced: Option<SimDisk>,
}

/// [`StoreFiles`] on a machine: creating the copy, renaming it over the store and syncing
/// the directory are operations on its clock.
#[derive(Clone, Debug)]
struct ClockStoreFiles {
    slots: Arc<Mutex<StoreSlots>>,
    clock: Arc<Clock>,
}

impl ClockStoreFiles {
    fn slots(&self) -> std::sync::MutexGuard<'_, StoreSlots> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StoreFiles<Store<BasicAllocator, ClockDisk>> for ClockStoreFiles {
    fn create_copy(&self, options: StoreOptions) -> Result<Store<BasicAllocator, ClockDisk>> {
        self.clock.tick()?;
        let disk = SimDisk::default();
        self.slots().copy = Some(disk.clone());
        Ok(Store::create_with(ClockDisk { disk, clock: self.clock.clone() }, options)?)
    }

    fn install_copy(&self) -> Result<()> {
        self.clock.tick()?; // the rename
        {
            let mut slots = self.slots();
            let copy = slots.copy.take().ok_or(io::Error::from(io::ErrorKind::NotFound))?;
            let old = std::mem::replace(&mut slots.current, copy);
            slots.replaced = Some(old);
        }
        self.settle()
    }

    fn remove_copy(&self) -> Result<()> {
        if self.slots().copy.is_some() {
            self.clock.tick()?;
            self.slots().copy = None;
        }
        Ok(())
    }

    fn settle(&self) -> Result<()> {
        self.clock.tick()?; // the directory's sync
        self.slots().replaced = None;
        Ok(())
    }
}

/// The files of a machine: the store (and a compaction's copy), the log segments and the
/// spare segments.
#[derive(Debug, Default)]
pub struct Machine {
    store: StoreSlots,
    log: BTreeMap<u64, SimDisk>,
    spares: Vec<SimDisk>,
    /// Changes of the log directory's names no sync made durable.
    unsynced: Vec<Unsynced>,
}

impl StoreSlots {
    fn map(&self, f: impl Fn(&SimDisk) -> SimDisk) -> Self {
        Self {
            current: f(&self.current),
            copy: self.copy.as_ref().map(&f),
            replaced: self.replaced.as_ref().map(&f),
        }
    }
}

impl Machine {
    /// A machine with empty disks.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy to run on, leaving this one as it is (unsynced writes stay unsynced).
    pub fn copy(&self) -> Machine {
        Machine {
            store: self.store.map(SimDisk::after_process_crash),
            log: self.log.iter().map(|(&s, d)| (s, d.after_process_crash())).collect(),
            spares: self.spares.iter().map(SimDisk::after_process_crash).collect(),
            unsynced: self.unsynced.iter().map(|u| u.map(SimDisk::after_process_crash)).collect(),
        }
    }

    /// The files as a power loss leaves them; `seed` picks each unsynced page's fate and
    /// which unsynced changes of the log directory's names come undone.
    pub fn crashed(&self, seed: u64) -> Machine {
        // A rename not made durable by its directory's sync may be undone.
        let mut store = self.store.clone();
        if let Some(old) = store.replaced.take().filter(|_| seed % 2 == 0) {
            store.copy = Some(std::mem::replace(&mut store.current, old));
        }
        // So may a removal or retirement of a log segment: each comes undone on its own.
        let mut log = self.log.clone();
        let mut spares: Vec<Option<&SimDisk>> = self.spares.iter().map(Some).collect();
        for (j, change) in self.unsynced.iter().enumerate() {
            let mixed = seed.wrapping_add(j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            if mixed >> 63 == 0 {
                continue;
            }
            match change {
                Unsynced::Removed(seq, disk) => {
                    log.insert(*seq, disk.clone());
                }
                Unsynced::Retired(seq, disk, kept) => {
                    log.insert(*seq, disk.clone());
                    if let Some(slot) = kept.and_then(|i| spares.get_mut(i)) {
                        *slot = None;
                    }
                }
            }
        }
        Machine {
            store: store.map(|d| d.crashed(CrashMode::PowerLoss, seed ^ 0xC0)),
            log: log
                .iter()
                .map(|(&s, d)| (s, d.crashed(CrashMode::PowerLoss, seed ^ s.wrapping_mul(0x9E37))))
                .collect(),
            spares: spares
                .into_iter()
                .flatten()
                .map(|d| d.crashed(CrashMode::PowerLoss, seed ^ 0x5A))
                .collect(),
            unsynced: Vec::new(),
        }
    }

    /// Runs `work` on a new database on this machine (its store created) with a clock that
    /// stops at `crash_at`; returns the clock (how many operations ran) and `work`'s result.
    pub fn create<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        work: impl FnOnce(&SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        self.run(options, crash_at, true, work)
    }

    /// Opens the database on this machine (a recovery) with a clock that stops at
    /// `crash_at`, and runs `work` on it.
    pub fn open<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        work: impl FnOnce(&SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        self.run(options, crash_at, false, work)
    }

    /// [`create`](Self::create), then `Db::close` once `work` returned `Ok` (a close that
    /// may compact the store into a new file).
    pub fn create_then_close<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        work: impl FnOnce(&SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        self.run_closing(options, crash_at, true, true, work)
    }

    /// [`open`](Self::open), then `Db::close` once `work` returned `Ok`.
    pub fn open_then_close<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        work: impl FnOnce(&SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        self.run_closing(options, crash_at, false, true, work)
    }

    fn run<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        create: bool,
        work: impl FnOnce(&SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        self.run_closing(options, crash_at, create, false, work)
    }

    fn run_closing<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        create: bool,
        close: bool,
        work: impl FnOnce(&SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        self.run_owned(options, crash_at, create, |db| {
            let done = work(&db)?;
            if close {
                db.close()?;
            }
            Ok(done)
        })
    }

    /// Runs `work` on the database on this machine (created when `create`, else opened) with a
    /// clock that stops at `crash_at`, handing the database over (for a layer that owns its
    /// database, as a disk cache does). `work` must close or drop it before it returns: the
    /// machine takes its files' state then, and a database kept past that point would write
    /// files the machine no longer follows.
    pub fn run_owned<T>(
        &mut self,
        options: &DbOptions,
        crash_at: u64,
        create: bool,
        work: impl FnOnce(SimDb) -> Result<T>,
    ) -> (Arc<Clock>, Result<T>) {
        let clock = Clock::new(crash_at);
        let (disk, dir) = self.attach(&clock);
        let files = ClockStoreFiles {
            slots: Arc::new(Mutex::new(self.store.clone())),
            clock: clock.clone(),
        };
        let store = if create {
            Store::<BasicAllocator, _>::create_with(disk, options.store)
        } else {
            Store::<BasicAllocator, _>::open_with(disk, options.store)
        };
        let result = store.map_err(crate::Error::from).and_then(|s| {
            let db = Db::with_files(
                ConcurrentStore::new(s, 0),
                Some(Box::new(dir.clone())),
                Box::new(files.clone()),
                options,
            )?;
            work(db)
        });
        self.store = files.slots().clone();
        self.log = dir.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        self.spares = dir.spares.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        self.unsynced = dir.unsynced().clone();
        (clock, result)
    }

    fn attach(&self, clock: &Arc<Clock>) -> (ClockDisk, ClockDir) {
        let disk = ClockDisk { disk: self.store.current.clone(), clock: clock.clone() };
        let dir = ClockDir {
            files: Arc::new(Mutex::new(self.log.clone())),
            spares: Arc::new(Mutex::new(self.spares.clone())),
            unsynced: Arc::new(Mutex::new(self.unsynced.clone())),
            clock: clock.clone(),
        };
        (disk, dir)
    }

    /// Whether a compaction's copy is left beside the store (an open removes it).
    pub fn has_copy(&self) -> bool {
        self.store.copy.is_some()
    }
}

/// Every tree's entries (trees of `u64` keys and values).
pub type State = BTreeMap<String, BTreeMap<u64, u64>>;

/// Options that make a short workload roll log segments, reuse them and checkpoint on its
/// own, with no persistence thread (the operations are the same in every run).
pub fn crash_options() -> DbOptions {
    DbOptions {
        store: StoreOptions { journal_bytes: 8 * 4096, ..StoreOptions::default() },
        checkpoint_after_bytes: 24 << 10,
        segment_bytes: 12 << 10,
        checkpoint_interval: None,
        ..DbOptions::default()
    }
}

/// The value a tree named `long…` keeps under key `k` for `tag`: longer than a leaf keeps
/// inline (in an object of its own), `tag` repeated.
pub fn long_value(k: u64, tag: u64) -> Vec<u8> {
    let len = 1500 + (k % 5) as usize * 1700;
    tag.to_le_bytes().iter().copied().cycle().take(len).collect()
}

/// The entries of every tree of the last commit (a `long…` tree's values as their tags;
/// a value that is not [`long_value`] of its key and tag is [`Error::Corrupt`]).
pub fn state(db: &SimDb) -> Result<State> {
    let read = db.begin_read();
    let mut all = State::new();
    for name in read.list_trees() {
        if name.starts_with("long") {
            let tree = read.open_tree::<u64, Vec<u8>>(&name).expect("listed");
            let mut entries = BTreeMap::new();
            for entry in tree.iter()? {
                let (k, v) = entry?;
                let tag =
                    u64::from_le_bytes(v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(
                        || Error::Corrupt(format!("long value {k}: {} bytes", v.len())),
                    )?);
                if v != long_value(k, tag) {
                    return Err(Error::Corrupt(format!("long value {k} is not its pattern")));
                }
                entries.insert(k, tag);
            }
            all.insert(name, entries);
            continue;
        }
        let tree = read.open_tree::<u64, u64>(&name).expect("listed");
        all.insert(name, tree.iter()?.collect::<Result<_>>()?);
    }
    Ok(all)
}

/// A workload of commits of 30 changes to one tree and 3 to a tree of long values (in
/// objects of their own), durable and buffered, with checkpoints.
/// `allowed` is kept up to date with the states a recovery may show: the commits since the
/// last acknowledged durable one, and the one in flight.
pub fn commits(db: &SimDb, allowed: &mut Vec<State>) -> Result<()> {
    let mut model = State::new();
    *allowed = vec![model.clone()];
    for round in 0..24u64 {
        let mut next = model.clone();
        let mut tx = db.begin_write()?;
        {
            let entries = next.entry("t".into()).or_default();
            let mut t = tx.open_tree::<u64, u64>("t")?;
            for i in 0..30u64 {
                let k = (round * 37 + i * 11) % 400;
                if i % 4 == 3 {
                    t.remove(&k)?;
                    entries.remove(&k);
                } else {
                    t.insert(&k, &(round * 100 + i))?;
                    entries.insert(k, round * 100 + i);
                }
            }
        }
        {
            let entries = next.entry("long".into()).or_default();
            let mut t = tx.open_tree::<u64, Vec<u8>>("long")?;
            for i in 0..3u64 {
                let k = (round * 7 + i * 3) % 20;
                if (round + i) % 4 == 3 {
                    t.remove(&k)?;
                    entries.remove(&k);
                } else {
                    t.insert(&k, &long_value(k, round * 100 + i))?;
                    entries.insert(k, round * 100 + i);
                }
            }
        }
        let durable = round % 3 != 1;
        allowed.push(next.clone()); // in flight: may or may not survive
        tx.commit(if durable { Durability::Durable } else { Durability::Buffered })?;
        model = next;
        if durable {
            *allowed = vec![model.clone()];
        }
        if round % 5 == 4 {
            db.checkpoint()?;
            *allowed = vec![model.clone()];
        }
    }
    Ok(())
}

/// Options for [`shrink`]: [`crash_options`], with `close` compacting any store its live
/// entries fill less than half of (a copy into a new file).
pub fn shrink_options() -> DbOptions {
    DbOptions { compact_on_close_min_bytes: 0, ..crash_options() }
}

/// A workload that fills three trees (one of long values, one dropped at the end), then
/// removes nine entries in ten, in durable commits, and ends with a buffered one: at close
/// the store is mostly free space. `allowed` is kept as [`commits`] keeps it.
pub fn shrink(db: &SimDb, allowed: &mut Vec<State>) -> Result<()> {
    let mut model = State::new();
    *allowed = vec![model.clone()];
    let mut commit = |model: &mut State,
                      next: State,
                      tx: crate::WriteTxn<'_, Store<BasicAllocator, ClockDisk>>,
                      durable: bool|
     -> Result<()> {
        allowed.push(next.clone()); // in flight: may or may not survive
        tx.commit(if durable { Durability::Durable } else { Durability::Buffered })?;
        *model = next;
        if durable {
            *allowed = vec![model.clone()];
        }
        Ok(())
    };
    for round in 0..4u64 {
        let mut next = model.clone();
        let mut tx = db.begin_write()?;
        {
            let entries = next.entry("t".into()).or_default();
            let mut t = tx.open_tree::<u64, u64>("t")?;
            for k in round * 500..(round + 1) * 500 {
                t.put(&k, &(k * 3))?;
                entries.insert(k, k * 3);
            }
        }
        {
            let entries = next.entry("long".into()).or_default();
            let mut t = tx.open_tree::<u64, Vec<u8>>("long")?;
            for k in round * 5..(round + 1) * 5 {
                t.put(&k, &long_value(k, round))?;
                entries.insert(k, round);
            }
        }
        if round == 0 {
            let mut t = tx.open_tree::<u64, u64>("gone")?;
            t.put(&1, &1)?;
            next.entry("gone".into()).or_default().insert(1, 1);
        }
        commit(&mut model, next, tx, true)?;
    }
    for round in 0..4u64 {
        let mut next = model.clone();
        let mut tx = db.begin_write()?;
        {
            let entries = next.entry("t".into()).or_default();
            let mut t = tx.open_tree::<u64, u64>("t")?;
            for k in (round * 500..(round + 1) * 500).filter(|k| k % 10 != 0) {
                t.delete(&k)?;
                entries.remove(&k);
            }
        }
        {
            let entries = next.entry("long".into()).or_default();
            let mut t = tx.open_tree::<u64, Vec<u8>>("long")?;
            for k in (round * 5..(round + 1) * 5).filter(|k| k % 3 != 0) {
                t.delete(&k)?;
                entries.remove(&k);
            }
        }
        if round == 3 {
            tx.delete_tree("gone")?;
            next.remove("gone");
        }
        commit(&mut model, next, tx, true)?;
    }
    let mut next = model.clone();
    let mut tx = db.begin_write()?;
    tx.open_tree::<u64, u64>("t")?.put(&7, &7)?;
    next.entry("t".into()).or_default().insert(7, 7);
    commit(&mut model, next, tx, false)
}

/// The state `commits` durable commits of [`race`] leave.
pub fn racing_state(commits: u64) -> State {
    let mut state = State::new();
    for round in 1..=commits {
        state.entry("t".into()).or_default().insert(round, round * 7);
        if round % 3 == 0 {
            state.entry("long".into()).or_default().insert(round % 5, round);
        }
    }
    state
}

/// Durable commits one after another (long values among them) while a second thread
/// checkpoints back to back, on a new machine whose clock stops at `crash_at`. Returns the
/// machine and, if the database was created, how many commits were acknowledged: a recovery
/// must show [`racing_state`] of that many or one more.
pub fn race(crash_at: u64) -> (Machine, Option<u64>) {
    use std::sync::atomic::AtomicBool;
    let mut machine = Machine::new();
    let acked = AtomicU64::new(0);
    let mut created = false;
    let _ = machine.create(&crash_options(), crash_at, |db| {
        created = true;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) && db.checkpoint().is_ok() {
                    std::thread::yield_now();
                }
            });
            let result = (|| {
                for round in 1..=60u64 {
                    let mut tx = db.begin_write()?;
                    tx.open_tree::<u64, u64>("t")?.insert(&round, &(round * 7))?;
                    if round % 3 == 0 {
                        let k = round % 5;
                        tx.open_tree::<u64, Vec<u8>>("long")?.put(&k, &long_value(k, round))?;
                    }
                    tx.commit(Durability::Durable)?;
                    acked.store(round, Ordering::SeqCst);
                }
                Ok(())
            })();
            stop.store(true, Ordering::SeqCst);
            result
        })
    });
    let acked = created.then(|| acked.load(Ordering::SeqCst));
    (machine, acked)
}
