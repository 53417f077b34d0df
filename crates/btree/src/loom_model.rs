//! A loom model of the checkpoint's lock protocol (`RUSTFLAGS="--cfg loom"`): the writer
//! lock, then `ckpt`; the first phase publishes the cleaned snapshot and, under the
//! `committed` and `readers` locks readers register under, decides which dropped value
//! objects no reader can still read; the second phase deletes them with only `ckpt` held,
//! while a writer commits (and, past the log's bound, tries a checkpoint of its own) and a
//! reader reads. Checked: no deadlock, no reader ever finds the value object its snapshot
//! names deleted, and no checkpoint follows one whose second phase failed (leaving nodes
//! marked clean that its store commit never wrote) into the store. It mirrors
//! `Core::checkpoint_if`, `Core::checkpoint_prepare`, `Core::checkpoint_write`,
//! `WriteTxn::commit` and `Core::begin_read` step by step; the store is a set of object ids.
//!
//! A second model follows one node: a commit replaces it (a new version, in memory) and
//! keeps the versions replaced since the last checkpoint only if a reader is registered
//! once it has published (under `committed`, which readers register under: a reader that
//! registers later takes the new snapshot); with none, it drops them all, its own and
//! earlier commits'. A checkpoint moves the kept versions into `rewrites` and rewrites the
//! object. Checked: a reader whose snapshot has the node unloaded always finds the version
//! it names, on disk or saved, with two commits between checkpoints. Not modelled: the
//! checkpoint's two phases (here both run under the writer lock, as for a commit that is its
//! own checkpoint), `prune_rewrites`, eviction.

use std::collections::{BTreeMap, BTreeSet};

use bob_io_helpers::sync::atomic::{AtomicBool, Ordering};
use bob_io_helpers::sync::{Arc, Mutex, thread};

/// A snapshot: the checkpoint it follows, and the value object it names.
#[derive(Clone, Copy)]
struct Snap {
    epoch: u64,
    value: u64,
}

#[derive(Default)]
struct Pending {
    freed: Vec<u64>,
}

/// `Core::begin_read`: the committed snapshot, its epoch registered in `readers` under the
/// `committed` lock.
fn begin_read<T: Copy>(
    committed: &Mutex<T>,
    readers: &Mutex<BTreeMap<u64, usize>>,
    epoch: impl Fn(&T) -> u64,
) -> T {
    let committed = committed.lock();
    let snapshot = *committed;
    *readers.lock().entry(epoch(&snapshot)).or_default() += 1;
    snapshot
}

/// `ReadTxn`'s drop: the reader's epoch unregistered.
fn end_read(readers: &Mutex<BTreeMap<u64, usize>>, epoch: u64) {
    let mut readers = readers.lock();
    let count = readers.get_mut(&epoch).expect("registered");
    *count -= 1;
    if *count == 0 {
        readers.remove(&epoch);
    }
}

struct Model {
    writer: Mutex<Pending>,
    ckpt: Mutex<()>,
    committed: Mutex<Snap>,
    readers: Mutex<BTreeMap<u64, usize>>,
    deferred: Mutex<Vec<(u64, u64)>>,
    store: Mutex<BTreeSet<u64>>,
    /// The database latched (a checkpoint's second phase failed).
    failed: AtomicBool,
    /// Checkpoints whose first phase marked nodes clean that their second has not written.
    unwritten: Mutex<Vec<u32>>,
}

impl Model {
    fn new() -> Self {
        Self {
            writer: Mutex::new(Pending::default()),
            ckpt: Mutex::new(()),
            committed: Mutex::new(Snap { epoch: 0, value: 1 }),
            readers: Mutex::new(BTreeMap::new()),
            deferred: Mutex::new(Vec::new()),
            store: Mutex::new([1].into_iter().collect()),
            failed: AtomicBool::new(false),
            unwritten: Mutex::new(Vec::new()),
        }
    }

    /// `checkpoint_if(true)` whose second phase fails (`fail`), as checkpoint `me`: the
    /// failure check under `ckpt`, the clean marks of the first phase, the store commit.
    fn checkpoint_failing(&self, me: u32, fail: bool) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        drop(self.ckpt.lock());
        let _pending = self.writer.lock();
        let ckpt = self.ckpt.lock();
        if self.failed.load(Ordering::Acquire) {
            return; // `checkpoint_prepare`'s check
        }
        self.unwritten.lock().push(me);
        drop(_pending);
        if fail {
            self.failed.store(true, Ordering::Release);
        } else {
            let mut unwritten = self.unwritten.lock();
            unwritten.retain(|&c| c != me);
            assert!(unwritten.is_empty(), "a store commit over another's unwritten marks");
        }
        drop(ckpt);
    }

    /// `checkpoint_prepare` (under the writer lock and `ckpt`): returns what to delete.
    fn prepare(&self, pending: &mut Pending, snapshot: Snap) -> Vec<u64> {
        let epoch = snapshot.epoch + 1;
        let mut deferred = self.deferred.lock();
        deferred.extend(pending.freed.drain(..).map(|id| (epoch, id)));
        let oldest = {
            let mut committed = self.committed.lock();
            let oldest = self.readers.lock().keys().next().copied().unwrap_or(u64::MAX);
            // Published: the commits since keep their own value, the checkpoint's epoch.
            committed.epoch = committed.epoch.max(epoch);
            oldest
        };
        let mut delete = Vec::new();
        deferred.retain(|&(dropped, id)| {
            let gone = dropped <= oldest;
            if gone {
                delete.push(id);
            }
            !gone
        });
        delete
    }

    /// `checkpoint_write` (with only `ckpt` held).
    fn write(&self, delete: Vec<u64>) {
        let mut store = self.store.lock();
        for id in delete {
            store.remove(&id);
        }
    }

    /// `checkpoint_if(true)`.
    fn checkpoint(&self) {
        drop(self.ckpt.lock());
        let mut pending = self.writer.lock();
        let ckpt = match self.ckpt.try_lock() {
            Some(ckpt) => ckpt,
            None => self.ckpt.lock(),
        };
        let snapshot = *self.committed.lock();
        let delete = self.prepare(&mut pending, snapshot);
        drop(pending);
        self.write(delete);
        drop(ckpt);
    }

    /// A commit replacing the value (a new object), then the log-bound checkpoint.
    fn commit(&self, new: u64) {
        let mut pending = self.writer.lock();
        let snapshot = *self.committed.lock();
        self.store.lock().insert(new);
        pending.freed.push(snapshot.value);
        let snapshot = Snap { epoch: snapshot.epoch, value: new };
        *self.committed.lock() = snapshot;
        if let Some(ckpt) = self.ckpt.try_lock() {
            let delete = self.prepare(&mut pending, snapshot);
            drop(pending);
            self.write(delete);
            drop(ckpt);
        }
    }

    /// `begin_read`, a read of the snapshot's value, and the reader's end.
    fn read(&self) {
        let snapshot = begin_read(&self.committed, &self.readers, |s| s.epoch);
        thread::yield_now();
        assert!(self.store.lock().contains(&snapshot.value), "a reader's value was deleted");
        end_read(&self.readers, snapshot.epoch);
    }
}

#[test]
fn loom_a_checkpoint_never_deletes_what_a_reader_may_read() {
    loom::model(|| {
        let model = Arc::new(Model::new());
        let threads = [
            {
                let m = Arc::clone(&model);
                thread::spawn(move || m.checkpoint())
            },
            {
                let m = Arc::clone(&model);
                thread::spawn(move || {
                    m.commit(2);
                    m.commit(3);
                })
            },
        ];
        model.read();
        for t in threads {
            t.join().expect("no panic");
        }
        // Nothing leaked: with no reader left, a last checkpoint deletes every dropped value.
        model.checkpoint();
        let store = model.store.lock();
        assert_eq!(store.iter().copied().collect::<Vec<_>>(), vec![3]);
    });
}

#[test]
fn loom_no_checkpoint_follows_a_failed_one_into_the_store() {
    loom::model(|| {
        let model = Arc::new(Model::new());
        let other = {
            let m = Arc::clone(&model);
            thread::spawn(move || m.checkpoint_failing(2, false))
        };
        model.checkpoint_failing(1, true);
        other.join().expect("no panic");
    });
}

/// One node as a snapshot names it: the version, and whether it is clean (its object holds
/// it as of the snapshot's epoch: a reader loads it from there) or changed (in memory).
#[derive(Clone, Copy, Debug)]
struct NodeSnap {
    epoch: u64,
    version: u64,
    clean: bool,
}

/// The node's model: `Core::publish`'s reader check, `WriteTxn::commit`'s saved versions,
/// `checkpoint_prepare` moving them into `rewrites`, `Load::load`'s fallback.
struct NodeModel {
    writer: Mutex<Vec<u64>>,
    committed: Mutex<NodeSnap>,
    readers: Mutex<BTreeMap<u64, usize>>,
    /// The node's object: the epoch that wrote it and the version it holds.
    object: Mutex<(u64, u64)>,
    /// Saved versions by the epoch of the checkpoint that rewrote the object.
    rewrites: Mutex<Vec<(u64, u64)>>,
}

impl NodeModel {
    fn new() -> Self {
        Self {
            writer: Mutex::new(Vec::new()),
            committed: Mutex::new(NodeSnap { epoch: 1, version: 1, clean: true }),
            readers: Mutex::new(BTreeMap::new()),
            object: Mutex::new((1, 1)),
            rewrites: Mutex::new(Vec::new()),
        }
    }

    /// A commit that changes the node: saves the clean version it replaces only if a reader
    /// is registered when it publishes.
    fn commit(&self) {
        let mut superseded = self.writer.lock();
        let old = *self.committed.lock();
        let new = NodeSnap { epoch: old.epoch, version: old.version + 1, clean: false };
        let readers = {
            let mut committed = self.committed.lock();
            let readers = !self.readers.lock().is_empty();
            *committed = new;
            readers
        };
        if readers {
            if old.clean {
                superseded.push(old.version);
            }
        } else {
            superseded.clear();
        }
    }

    /// A checkpoint (both phases under the writer lock, as a commit that is its own): the
    /// saved versions go to `rewrites`, the object is rewritten, the clean state published.
    fn checkpoint(&self) {
        let mut superseded = self.writer.lock();
        let snap = *self.committed.lock();
        if snap.clean {
            return;
        }
        let epoch = snap.epoch + 1;
        {
            let mut rewrites = self.rewrites.lock();
            for version in superseded.drain(..) {
                rewrites.push((epoch, version));
            }
        }
        *self.object.lock() = (epoch, snap.version);
        *self.committed.lock() = NodeSnap { epoch, version: snap.version, clean: true };
    }

    /// `begin_read`, a load of the node if the snapshot has it unloaded, and the end.
    fn read(&self) {
        let snap = begin_read(&self.committed, &self.readers, |s| s.epoch);
        thread::yield_now();
        if snap.clean {
            let (written, version) = *self.object.lock();
            let found = if written <= snap.epoch {
                Some(version)
            } else {
                let rewrites = self.rewrites.lock();
                rewrites
                    .iter()
                    .filter(|(e, _)| *e > snap.epoch)
                    .min_by_key(|(e, _)| *e)
                    .map(|r| r.1)
            };
            assert_eq!(found, Some(snap.version), "a reader could not load its node version");
        }
        end_read(&self.readers, snap.epoch);
    }
}

#[test]
fn loom_a_reader_finds_the_node_version_it_names() {
    loom::model(|| {
        let model = Arc::new(NodeModel::new());
        let writer = {
            let m = Arc::clone(&model);
            thread::spawn(move || {
                m.commit();
                m.commit();
                m.checkpoint();
                m.commit();
                m.checkpoint();
            })
        };
        model.read();
        writer.join().expect("no panic");
    });
}
