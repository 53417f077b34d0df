//! The database: named trees in one store, write transactions, read snapshots and
//! checkpoints.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use bob_alloc::BasicAllocator;
use bob_io_helpers::OsFile;
use bob_io_helpers::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use bob_io_helpers::sync::thread::{self, ThreadId};
use bob_io_helpers::sync::{Mutex, MutexGuard};
use bob_store_concurrent::{CommitHold, ConcurrentStore, GroupCommit};
use bob_store_core::{ObjectId, PRIME_OBJECT_ID, PrimeStorer, SplitStore, Store, StoreOptions};
use bob_treap::{PersistentTreap, TreapKey, TreapValue};

use crate::catalog::{Catalog, MAX_NAME_LEN, StoredTree};
use crate::node::{
    self, Body, Link, MAX_INLINE_VALUE_LEN, MAX_KEY_LEN, MAX_VALUE_LEN, NODE_TARGET, Node, Touched,
    Val, ValRef, ValView,
};
use crate::tree::{self, Edit, Load, RawIter};
use crate::wal::{LogDir, OsLogDir, Wal};
use crate::{Error, Key, KeyLike, Result, Value, ValueLike};

/// The store a [`Db`] uses unless told otherwise: a `BaseStore` shared between threads.
pub type DefaultStore = Store<BasicAllocator, Arc<OsFile>>;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Durable before `commit` returns.
    #[default]
    Durable,
    /// Visible to readers at once, durable with the next durable commit, checkpoint or
    /// close; a crash before then loses it (and every buffered commit after the last durable
    /// one), never the consistency of the trees.
    Buffered,
}

/// How a [`Db`] is opened.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// The store's options. The default is the store's, but for 128 KiB journal regions
    /// (instead of 1 MiB): the log keeps the commits, so the store commits only at
    /// checkpoints, and open scans the journal region whole (a smaller one opens in about
    /// 0.14 ms instead of 0.19 at 300,000 keys).
    pub store: StoreOptions,
    /// Keep a write-ahead log (the default): a durable commit appends one record to it and
    /// syncs once; checkpoints write the changed nodes now and then. Without it, every
    /// durable commit is a checkpoint.
    pub log: bool,
    /// A commit runs a checkpoint once the log has grown this many bytes since the last
    /// (default 64 MiB).
    pub checkpoint_after_bytes: u64,
    /// A log segment file is closed for appends past this many bytes (default 32 MiB).
    pub segment_bytes: u64,
    /// How often the persistence thread checkpoints what changed (`None`: no thread; then
    /// checkpoints run only on `checkpoint`, `close` and when the log passes
    /// `checkpoint_after_bytes`). Default: 5 seconds.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// Bytes of nodes kept in memory, about: when the trees in memory pass it, the
    /// persistence thread unloads the clean leaves not used since its last round until they
    /// are under three quarters of it (every snapshot keeps what it holds), and it checkpoints
    /// early when changed nodes pass half of it (default 1 GiB).
    pub memory_budget: u64,
    /// `close` compacts the store when a session that wrote leaves live objects filling
    /// less than this fraction of a file of [`compact_on_close_min_bytes`] or more (`None`:
    /// never; compaction is then [`Db::compact`]'s alone). A database opened from a path
    /// (or given [`StoreFiles`]) is copied into a new file that replaces the old one, in
    /// place of the closing checkpoint: each live node is written once, its leaves refilled
    /// (a close of about 0.25 s for 65 MB of entries left in a 185 MB file, the old file's
    /// and trees' release included); otherwise objects move within the file. The default,
    /// 0.5, gives space back after large removals.
    ///
    /// [`compact_on_close_min_bytes`]: Self::compact_on_close_min_bytes
    pub compact_on_close_below: Option<f64>,
    /// The smallest store file `close` compacts (default 4 MiB).
    pub compact_on_close_min_bytes: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions { journal_bytes: 128 << 10, ..StoreOptions::default() },
            log: true,
            checkpoint_after_bytes: 64 << 20,
            segment_bytes: 32 << 20,
            checkpoint_interval: Some(std::time::Duration::from_secs(5)),
            memory_budget: 1 << 30,
            compact_on_close_below: Some(0.5),
            compact_on_close_min_bytes: 4 << 20,
        }
    }
}

/// The log directory of the database file at `path`: `<path>.wal`, where `path` is the
/// file's real path (symbolic links resolved, as `Db::open` resolves them).
pub fn log_dir_of(path: &Path) -> std::path::PathBuf {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".wal");
    dir.into()
}

/// The file of a database `<path>`'s copy while [`Db::close`] compacts it:
/// `<path>.bob-compact` (the name belongs to the database, as `<path>.wal` does).
pub fn copy_path_of(path: &Path) -> std::path::PathBuf {
    let mut copy = path.as_os_str().to_owned();
    copy.push(".bob-compact");
    copy.into()
}

/// The files around a database's store, for the compaction [`Db::close`] runs when the
/// file is mostly free space: the live trees are copied into a new store in a new file
/// (each node written once, leaves refilled), which then takes the old file's place.
pub trait StoreFiles<S>: Send + Sync {
    /// A new, empty store for the copy, in a file of its own beside the database's (one an
    /// unfinished copy left is replaced), locked as the database's file is.
    fn create_copy(&self, options: StoreOptions) -> Result<S>;
    /// Puts the copy (closed, durable) in the database file's place: atomically (a crash
    /// leaves the old file or the copy, each whole) and durably (once this returns `Ok`, a
    /// crash leaves the copy).
    fn install_copy(&self) -> Result<()>;
    /// Removes a copy an unfinished compaction left; no error when there is none.
    fn remove_copy(&self) -> Result<()>;
    /// Makes durable a rename of a copy over the store that an earlier session may have left
    /// undurable (its directory's sync failed, or the process died before it): a power loss
    /// must not undo it once a later session acknowledged a change (then released the log
    /// after it). Called once a session, before it first makes a change durable. Required:
    /// a no-op is right only for files whose replacement is durable when `install_copy`
    /// returns and at every crash after it.
    fn settle(&self) -> Result<()>;
}

/// [`StoreFiles`] for a database file at a path: the copy is [`copy_path_of`] the path,
/// given the file's permissions and owner, and installed by a rename and a sync of the
/// directory. A file with other hard links, or a path that is a symbolic link (`Db` resolves
/// links before it makes these, so only another user of this type passes one), is not copied
/// (a rename would leave the other names on the old file, or replace the link): the store is
/// compacted within its file instead.
#[derive(Debug, Clone)]
pub struct OsStoreFiles {
    path: std::path::PathBuf,
}

impl OsStoreFiles {
    /// The files around the database file at `path`.
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }
}

impl StoreFiles<DefaultStore> for OsStoreFiles {
    fn create_copy(&self, options: StoreOptions) -> Result<DefaultStore> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&self.path).map_err(Error::Compaction)?;
        if meta.file_type().is_symlink() || meta.nlink() != 1 {
            return Err(Error::Compaction(std::io::Error::other(
                "a symbolic link or a file with other hard links is not replaced by a copy",
            )));
        }
        self.remove_copy()?;
        let file =
            OsFile::create_new(&copy_path_of(&self.path)).map_err(bob_store_core::Error::from)?;
        let copy = file.file();
        let made = copy.metadata().map_err(Error::Compaction)?;
        if (made.uid(), made.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(copy, Some(meta.uid()), Some(meta.gid()))
                .map_err(Error::Compaction)?;
        }
        copy.set_permissions(meta.permissions()).map_err(Error::Compaction)?;
        Ok(Store::create_with(Arc::new(file), options)?)
    }

    fn install_copy(&self) -> Result<()> {
        std::fs::rename(copy_path_of(&self.path), &self.path).map_err(Error::Compaction)?;
        self.settle()
    }

    /// Removes the copy unless another handle holds it (the lock is tried, never waited
    /// for): a file under that name that someone is using is left alone.
    fn remove_copy(&self) -> Result<()> {
        let copy = copy_path_of(&self.path);
        match OsFile::open(&copy) {
            Ok(_locked) => std::fs::remove_file(&copy).map_err(Error::Compaction),
            Err(bob_io_helpers::Error::File { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(bob_io_helpers::Error::Locked { .. }) => Ok(()),
            Err(e) => Err(bob_store_core::Error::from(e).into()),
        }
    }

    fn settle(&self) -> Result<()> {
        bob_io_helpers::sync_parent_dir(&self.path).map_err(bob_store_core::Error::from)?;
        Ok(())
    }
}

/// One tree as a snapshot sees it.
#[derive(Clone, Debug)]
struct TreeState {
    id: u32,
    root: Link,
    len: u64,
}

/// The trees as one commit left them.
#[derive(Clone, Debug)]
struct Snapshot {
    /// The last checkpoint at or before this commit.
    epoch: u64,
    /// The last log record this commit includes (0: none).
    lsn: u64,
    next_tree: u32,
    trees: BTreeMap<String, TreeState>,
}

impl Snapshot {
    /// The epoch of the checkpoint that writes this snapshot.
    fn next_epoch(&self) -> Result<u64> {
        self.epoch
            .checked_add(1)
            .ok_or_else(|| Error::Corrupt("the checkpoint epoch is out of range".into()))
    }
}

/// What committed transactions changed since the last checkpoint, besides their nodes.
#[derive(Default)]
struct Pending {
    superseded: Vec<(ObjectId, Arc<Node>)>,
    freed: Vec<ObjectId>,
    /// Value objects whose values left the trees.
    freed_values: Vec<ValRef>,
    /// A commit since the last checkpoint changed something.
    changed: bool,
    /// Nodes commits made dirty since the last checkpoint, about.
    dirtied: u64,
    /// The last commit's record buffer, emptied, for the next transaction's record: a big
    /// commit's record would otherwise grow a new buffer, page by page, every time.
    log_buf: Vec<u8>,
}

/// A record buffer up to this capacity is kept for the next transaction: a load in commits
/// of a few megabytes then builds each record in the buffer the last one left.
const LOG_BUF_KEEP: usize = 4 << 20;

/// Nodes as their objects held them before checkpoint `c` rewrote or freed them, kept while
/// a reader of a snapshot older than `c` is open.
type Rewrites = HashMap<ObjectId, Vec<(u64, Arc<Node>)>>;

/// A checkpoint between its phases (see [`Core::checkpoint_prepare`]).
struct Prepared {
    epoch: u64,
    started: std::time::Instant,
    /// Nodes and bytes written.
    written: (u64, u64),
    /// Changed nodes to rewrite (each with its id), by tree.
    rewrites: Vec<(u32, Arc<Node>)>,
    freed: Vec<ObjectId>,
    /// Value objects to delete (deferred ones no reader can need any more).
    delete_values: Vec<ObjectId>,
    catalog: Vec<u8>,
    /// The last log record the checkpoint holds.
    lsn: u64,
    /// The log's bytes appended when the checkpoint took its records.
    appended: u64,
    /// The snapshot to publish once durable (a commit the checkpoint makes durable).
    unpublished: Option<Snapshot>,
    /// The entries of every tree the checkpoint writes.
    entries: u64,
}

/// The database's shared state: a [`Db`] and its persistence thread hold it.
pub(crate) struct Core<S: SplitStore<Io: Clone> + PrimeStorer> {
    store: ConcurrentStore<S>,
    committed: Mutex<Arc<Snapshot>>,
    writer: Mutex<Pending>,
    /// The thread whose [`WriteTxn`] holds `writer` (a call from it that waits for `writer`
    /// would wait for itself).
    writer_thread: Mutex<Option<ThreadId>>,
    /// Held by a checkpoint through both its phases (taken after `writer`): one at a time,
    /// and the store commits of nothing else interleave with one.
    ckpt: Mutex<()>,
    /// The catalog's `shared` flag, as the last durable catalog holds it: set once
    /// [`Db::shared_store`] handed the store out, or when the database was made in a store
    /// holding objects. Such a store is never compacted by copying the trees away.
    shared: AtomicBool,
    /// The named treaps' roots as the last durable catalog holds them (changed only under
    /// `ckpt`, by `save_treap`); every checkpoint writes them into its catalog.
    treaps: Mutex<BTreeMap<String, Option<ObjectId>>>,
    /// The treaps in use, by name: one per name, each used by one caller at a time.
    named: Mutex<HashMap<String, Arc<NamedTreap<S>>>>,
    rewrites: Mutex<Rewrites>,
    /// Value objects no tree holds, not deleted yet, with the checkpoint that dropped them
    /// (kept in the catalog): deleted by the first checkpoint that publishes when no reader
    /// older than that one is open (an older snapshot may read them meanwhile; their ids are
    /// not reused). Changed only by a checkpoint's first phase.
    deferred: Mutex<Vec<(u64, ObjectId)>>,
    /// Open read snapshots by the checkpoint they belong to.
    readers: Mutex<BTreeMap<u64, usize>>,
    failed: AtomicBool,
    /// The write-ahead log; taken after `writer`.
    wal: Option<Mutex<Wal>>,
    /// The catalog fields that do not change.
    log_id: u64,
    checkpoint_after_bytes: u64,
    /// `DbOptions::compact_on_close_below`.
    compact_on_close_below: Option<f64>,
    /// `DbOptions::compact_on_close_min_bytes`.
    compact_on_close_min_bytes: u64,
    /// The store's options (a copy made by compaction is created with them).
    store_options: StoreOptions,
    /// Where a compaction's copy of the store goes (`None`: compaction moves objects within
    /// the store's file).
    files: Option<Box<dyn StoreFiles<S>>>,
    /// [`StoreFiles::settle`] ran in this session.
    settled: AtomicBool,
    /// The entries of every tree at the last checkpoint (or open), against which `close`
    /// estimates how much of the store its live entries fill before it checkpoints.
    checkpointed_entries: AtomicU64,
    stats: Mutex<DbStats>,
    /// The log's directory and segment size, for the persistence thread's spares.
    log_dir: Option<(Arc<dyn LogDir>, u64)>,
    /// A write transaction began since open (the log will be used: a spare is prepared).
    wrote: AtomicBool,
    /// Preparing a spare failed: not tried again.
    prepare_failed: AtomicBool,
    /// Counts what can change the nodes in memory (loads, write transactions, checkpoints),
    /// and its value when the persistence thread last found nothing to do: while they are
    /// equal, its round skips the walk over the loaded nodes.
    activity: AtomicU64,
    idle_at: AtomicU64,
    /// Nodes read from the store (for [`DbStats::nodes_loaded`]).
    loads: AtomicU64,
    /// Bytes of the nodes in memory when the persistence thread last looked.
    node_bytes: AtomicU64,
    /// Where each tree's eviction walk stopped (a child of its root): the next starts there.
    hand: Mutex<HashMap<String, usize>>,
    /// Durable commits share the log's syncs through it.
    group: GroupCommit,
    /// The store's lazy open is complete (every check a full open makes has passed): the
    /// first write transaction completes it, so no commit is acknowledged through the log
    /// on a store whose first checkpoint would refuse it.
    store_complete: AtomicBool,
}

/// What a [`Db`] did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbStats {
    /// Checkpoints run (by any caller or the persistence thread).
    pub checkpoints: u64,
    /// Their total time, in microseconds.
    pub checkpoint_micros: u64,
    /// Nodes they wrote.
    pub nodes_written: u64,
    /// Node, long value and catalog bytes they wrote.
    pub checkpoint_bytes: u64,
    /// Commits that appended to the log.
    pub logged_commits: u64,
    /// Compactions `close` ran (see [`DbOptions::compact_on_close_below`]).
    pub compactions: u64,
    /// Bytes appended to the log since the last checkpoint.
    pub log_bytes: u64,
    /// Syncs of the log that made durable commits durable: fewer than the durable commits
    /// when commits of several threads shared one (group commit).
    pub log_syncs: u64,
    /// Nodes unloaded from memory to keep to the memory budget.
    pub evicted_nodes: u64,
    /// Nodes changed (or made) since the last checkpoint, and 4 KiB pages of long values
    /// waiting for one: what the next checkpoint writes, about (a long value replaced
    /// before it counts each time; a node changed then dropped still counts). A gauge, set
    /// by each commit and cleared by each checkpoint.
    pub dirty_nodes: u64,
    /// Checkpoints the persistence thread brought forward because the changed nodes in
    /// memory passed half of [`DbOptions::memory_budget`] (a changed node cannot be
    /// unloaded until a checkpoint has written it).
    pub budget_checkpoints: u64,
    /// Nodes read from the store: first uses, and uses after an unload (the node cache's
    /// misses).
    pub nodes_loaded: u64,
    /// Bytes of the nodes in memory (the committed trees'), about, when the persistence
    /// thread last looked: what [`DbOptions::memory_budget`] bounds.
    pub node_bytes: u64,
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> std::fmt::Debug for Db<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.core.committed.lock().clone();
        f.debug_struct("Db")
            .field("epoch", &snap.epoch)
            .field("trees", &snap.trees.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Named B-trees in one bob store; see the crate docs.
pub struct Db<S: SplitStore<Io: Clone> + PrimeStorer = DefaultStore> {
    // Dropped first: the thread is stopped before the state it works on goes.
    manager: Option<Manager>,
    core: Arc<Core<S>>,
}

/// The persistence thread: checkpoints and keeps to the memory budget in the background.
struct Manager {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Manager {
    fn start<S: SplitStore<Io: Clone> + PrimeStorer + Sync + 'static>(
        core: &Arc<Core<S>>,
        options: &DbOptions,
    ) -> Result<Option<Self>> {
        let Some(interval) = options.checkpoint_interval else { return Ok(None) };
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (weak, flag) = (Arc::downgrade(core), Arc::clone(&stop));
        let budget = options.memory_budget;
        let tick = interval.min(std::time::Duration::from_millis(250));
        let thread = std::thread::Builder::new()
            .name("bob-btree-persist".into())
            .spawn(move || {
                let mut since = std::time::Instant::now();
                loop {
                    {
                        let (lock, wake) = &*flag;
                        let stopped =
                            lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let (stopped, _) = wake
                            .wait_timeout_while(stopped, tick, |stopped| !*stopped)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *stopped {
                            return;
                        }
                    }
                    let Some(core) = weak.upgrade() else { return };
                    core.prepare_spare();
                    // Errors latch the database; callers see them on their next write.
                    let due = since.elapsed() >= interval;
                    if core.maintain(due, budget).is_ok() && due {
                        since = std::time::Instant::now();
                    }
                }
            })
            .map_err(Error::Log)?;
        Ok(Some(Self { stop, thread: Some(thread) }))
    }

    fn stop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer + Sync + 'static> Db<S> {
    /// The database in `store`, without a log (every durable commit is a checkpoint): its
    /// catalog is read from the prime object, or written there (and committed) when the store
    /// has no prime object yet. A prime object that does not hold a catalog is
    /// [`Error::NotADatabase`]; a database that keeps a log is [`Error::LogRequired`].
    pub fn new(store: ConcurrentStore<S>) -> Result<Self> {
        Self::build(store, None, None, &DbOptions { log: false, ..DbOptions::default() })
    }

    /// The database in `store` with its write-ahead log in `log`: records after the last
    /// checkpoint are replayed.
    pub fn with_log(
        store: ConcurrentStore<S>,
        log: Box<dyn LogDir>,
        options: &DbOptions,
    ) -> Result<Self> {
        Self::build(store, Some(log), None, options)
    }

    /// The database in `store`, with its log in `log` (if it keeps one) and the files
    /// around its store in `files`: `close` then compacts a sparse store by copying the
    /// trees into a new file (see [`StoreFiles`]); a copy an unfinished compaction left is
    /// removed first, if it can be (the copy is never read: one left in place, say for want
    /// of permission, fails only the next compaction, which then checkpoints in place).
    pub fn with_files(
        store: ConcurrentStore<S>,
        log: Option<Box<dyn LogDir>>,
        files: Box<dyn StoreFiles<S>>,
        options: &DbOptions,
    ) -> Result<Self> {
        let _ = files.remove_copy();
        Self::build(store, log, Some(files), options)
    }

    fn build(
        store: ConcurrentStore<S>,
        log: Option<Box<dyn LogDir>>,
        files: Option<Box<dyn StoreFiles<S>>>,
        options: &DbOptions,
    ) -> Result<Self> {
        let core = Arc::new(Core::build(store, log, files, options)?);
        let manager = Manager::start(&core, options)?;
        Ok(Self { manager, core })
    }

    /// Stops the persistence thread, checkpoints and closes the store; after a session that
    /// wrote, a file whose live objects fill less than
    /// [`DbOptions::compact_on_close_below`] of it is compacted first. Dropping a `Db`
    /// without `close` stops the thread and loses nothing durable: the next open replays the
    /// log. Changes of named treaps not saved ([`Db::save_treap`]) are dropped.
    pub fn close(self) -> Result<()> {
        let Db { manager, core } = self;
        if let Some(mut manager) = manager {
            manager.stop();
        }
        core.close()
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> Db<S> {
    /// The store underneath, to read and check it (`verify`, counts, reads); writing
    /// through it takes [`Db::shared_store`].
    pub fn store(&self) -> StoreView<'_, S> {
        StoreView(&self.core.store)
    }

    /// The store underneath, to keep other objects (blobs, a treap of your own) in the same
    /// file, written and committed from any thread while the database is open: a checkpoint
    /// holds other commits off from its first write to its own commit
    /// ([`ConcurrentStore::hold_commits`]), so none makes half of it durable. Other users
    /// must leave the prime object and the database's objects alone. A call of the database
    /// that could wait for its writer lock (`begin_write`, `checkpoint`, `sync`, `compact`,
    /// the treap methods) is refused with `WouldDeadlock` while the calling thread holds a
    /// reader or writer guard of this store (a compaction holding that lock waits for every
    /// object lock), or holds its commits (a checkpoint holding that lock waits for the
    /// hold): a hold taken inside a write transaction is fine.
    ///
    /// The first call marks the database shared, durably (one small commit of the catalog,
    /// once in the file's life): from then on a sparse file is compacted in place, never by
    /// copying the trees into a new file, which would leave the other objects behind.
    pub fn shared_store(&self) -> Result<&ConcurrentStore<S>> {
        self.core.mark_shared()?;
        Ok(&self.core.store)
    }

    /// The bytes live objects and metadata take and the store file's length
    /// (`ConcurrentStore::space_in_use`; `None` until a lazy open is complete), without
    /// handing the store out (which [`Db::store`] does, and a `close` then compacts in
    /// place only).
    pub fn space_in_use(&self) -> Result<Option<(u64, u64)>> {
        Ok(self.core.store.space_in_use()?)
    }

    /// Runs `change` on the treap (bob-treap) kept under `name` in the catalog, with the
    /// store its nodes are read from and written to: the normal way to keep a treap in a
    /// database file, its root never handled by hand. The database holds one treap per
    /// name, loaded lazily at its first use (its nodes are read as they are used), or new
    /// and empty when the catalog has none; changes stay in memory until
    /// [`Db::save_treap`]. Calls for one name run one at a time (a save included), from
    /// any thread; treaps have names of their own, apart from the B-trees'.
    ///
    /// What `change` may do: read and change the treap, through the store it is given (for
    /// this treap only). Calls of this database from inside it that could wait for another
    /// thread (`begin_write`, `checkpoint`, `sync`, `compact`, any treap method) are refused
    /// with a `WouldDeadlock` store error; reads (`begin_read`) are fine. It must not
    /// persist the treap itself or put another treap in its place (`save_treap` does the
    /// one, and the other would leave the saved nodes unreachable).
    ///
    /// A change that panics is dropped: the treap is read again from its last save. One
    /// that returns an error part way keeps what it did, which the next save makes durable:
    /// [`Db::discard_treap`] goes back to the last save. Unsaved changes are lost at
    /// `close` (or a crash). The treap's nodes stay in memory once read, until the database
    /// closes (bound them with the treap's `set_memory_budget` and `flush`).
    ///
    /// The key and value types are the caller's to keep: a name held with other types is
    /// [`Error::Codec`] (a type mismatch), but the first use after an open decodes with the
    /// types it is given, and the node format checks lengths, not types (a treap of `u64`
    /// keys read as `i64` reads other numbers).
    pub fn with_treap<K, V, R>(
        &self,
        name: &str,
        change: impl FnOnce(&mut PersistentTreap<K, V>, &ConcurrentStore<S>) -> R,
    ) -> Result<R>
    where
        K: TreapKey + Send + 'static,
        V: TreapValue + Send + 'static,
    {
        check_name(name)?;
        self.check_not_in_change("with_treap")?;
        let entry = self.core.named_treap(name);
        let mut held = entry.enter()?;
        if held.is_none() {
            let root = self.core.treaps.lock().get(name).copied().flatten();
            let treap: PersistentTreap<K, V> = match root {
                Some(root) => PersistentTreap::load(&self.core.store, root).map_err(from_treap)?,
                None => PersistentTreap::new(),
            };
            *held = Some(Box::new(treap));
        }
        let any = held.as_mut().expect("set above").as_any();
        let Some(treap) = any.downcast_mut::<PersistentTreap<K, V>>() else {
            return Err(Error::Codec(bob_treap::Error::TypeMismatch {
                what: std::any::type_name::<PersistentTreap<K, V>>(),
                detail: format!("treap {name:?} is held with other key or value types"),
            }));
        };
        let _in_change = InChange::enter(self.core_key());
        let store = &self.core.store;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| change(treap, store))) {
            Ok(result) => Ok(result),
            Err(panic) => {
                // Whatever the change did is dropped: the treap is read again from its last
                // save at its next use.
                *held = None;
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Drops the changes made to the treap under `name` since its last save (it is read
    /// again from the catalog at its next use): the way back from a change that failed part
    /// way, whose edits would otherwise be saved by the next [`Db::save_treap`].
    pub fn discard_treap(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.check_not_in_change("discard_treap")?;
        if let Some(entry) = self.core.named.lock().get(name).cloned() {
            *entry.enter()? = None;
        }
        Ok(())
    }

    fn core_key(&self) -> usize {
        Arc::as_ptr(&self.core) as usize
    }

    /// Refuses a call from inside a treap's change ([`Db::with_treap`]), which holds the
    /// treap while it runs: a call that waits for the database's locks (or another treap)
    /// could wait for a thread that waits for this treap.
    ///
    /// Also refuses a caller holding a reader or writer guard of the shared store
    /// ([`Db::shared_store`]): the call may wait for the database's writer lock, whose holder
    /// (a compaction) may wait for every object lock, that guard's included.
    ///
    /// And a caller holding the store's commits ([`ConcurrentStore::hold_commits`]): the
    /// call may wait for the writer lock, whose holder (a checkpoint: writer lock, then a
    /// hold of the commits) may wait for that hold. Taking the hold inside a write
    /// transaction keeps that order and is allowed.
    fn check_not_in_change(&self, what: &str) -> Result<()> {
        if InChange::active(self.core_key()) {
            return Err(Error::Store(bob_store_core::Error::WouldDeadlock(format!(
                "{what} from inside a treap's change (Db::with_treap): return from the change \
                 first"
            ))));
        }
        if self.core.store.thread_holds_guards() {
            return Err(Error::Store(bob_store_core::Error::WouldDeadlock(format!(
                "{what} while this thread holds a reader or writer guard of the database's \
                 store: drop the guard first"
            ))));
        }
        if self.core.store.thread_holds_commits() {
            return Err(Error::Store(bob_store_core::Error::WouldDeadlock(format!(
                "{what} while this thread holds the commits of the database's store \
                 (ConcurrentStore::hold_commits): a checkpoint holding the database's writer \
                 lock may be waiting for that hold; commit or drop the hold first, or take it \
                 inside the write transaction"
            ))));
        }
        Ok(())
    }

    /// Saves the treap under `name` ([`Db::with_treap`]): its changed nodes, its root in
    /// the catalog, and the release of the nodes it replaced, in one commit of the store,
    /// durable when this returns (a crash leaves the treap as it was saved last, or as it
    /// is now). Nothing to do when the treap was not used since the database opened. Waits
    /// for a checkpoint running now and holds the next one off meanwhile (logged write
    /// transactions go on). A failure once the save began writing latches the database and
    /// its store (reopen them); one before (the catalog unreadable, a commit hold refused)
    /// changes nothing.
    pub fn save_treap(&self, name: &str) -> Result<()> {
        self.save_treap_with(name, |_| Ok(()))
    }

    /// [`Db::save_treap`], with `also` run on the store inside the save's commit hold, after
    /// the treap's nodes and root are written and before the commit: changes `also` makes
    /// (deleting the objects an updated index no longer names, say) become durable in the
    /// same commit as the treap, never earlier. An error from `also` fails the save (and
    /// latches, as any failure once the save began writing).
    pub fn save_treap_with(
        &self,
        name: &str,
        also: impl FnOnce(&ConcurrentStore<S>) -> Result<()>,
    ) -> Result<()> {
        check_name(name)?;
        self.check_not_in_change("save_treap")?;
        let Some(entry) = self.core.named.lock().get(name).cloned() else {
            // No treap in use: `also` still commits under a hold.
            return self.core.commit_held(also);
        };
        let mut held = entry.enter()?;
        match held.as_mut() {
            Some(treap) => self.core.save_treap(name, treap.as_mut(), also),
            None => self.core.commit_held(also),
        }
    }

    /// The names of the treaps in the catalog, in order.
    pub fn treap_names(&self) -> Vec<String> {
        self.core.treaps.lock().keys().cloned().collect()
    }

    /// A write transaction; waits while another one (or a checkpoint) runs. Its changes are
    /// its own until [`WriteTxn::commit`]; dropping it (or [`WriteTxn::abort`]) discards them.
    pub fn begin_write(&self) -> Result<WriteTxn<'_, S>> {
        self.check_not_in_change("begin_write")?;
        self.core.begin_write()
    }

    /// Whether the calling thread holds a write transaction of this database (then
    /// `begin_write`, `checkpoint`, `sync` and `compact` from it are refused with
    /// `WouldDeadlock`: they would wait for that transaction).
    pub fn thread_holds_write(&self) -> bool {
        self.core.thread_holds_write()
    }

    /// `Ok` if the calling thread may wait for the database's writer lock: it holds no write
    /// transaction, is not inside a treap's change ([`Db::with_treap`]) and holds no guard
    /// of its store; else `WouldDeadlock`, naming `what`. For code that hands database work
    /// to other threads and waits for them (a batch writer), which would otherwise wait for
    /// what the caller holds.
    pub fn check_may_wait(&self, what: &str) -> Result<()> {
        self.check_not_in_change(what)?;
        self.core.check_not_writing(what)
    }

    /// A read snapshot of the last commit: later commits do not change what it sees. It
    /// waits for nothing.
    pub fn begin_read(&self) -> ReadTxn<'_, S> {
        self.core.begin_read()
    }

    /// Writes what commits changed since the last checkpoint (the changed nodes, the roots)
    /// in one store commit, and releases the log it covers. Waits for an open write
    /// transaction to end.
    pub fn checkpoint(&self) -> Result<()> {
        self.check_not_in_change("checkpoint")?;
        self.core.check_not_writing("checkpoint")?;
        self.core.checkpoint()
    }

    /// Makes every buffered commit durable: syncs the log (a checkpoint, without one).
    pub fn sync(&self) -> Result<()> {
        self.check_not_in_change("sync")?;
        self.core.check_not_writing("sync")?;
        self.core.sync()
    }

    /// Checks every tree of the last commit; see [`DbReport`].
    pub fn verify(&self) -> Result<DbReport> {
        self.core.verify()
    }

    /// Runs one round of the persistence thread's work now, in the calling thread: a
    /// checkpoint if `due`, one if the changed nodes pass half of `budget`, then unloading
    /// clean leaves past `budget`. For tests, which otherwise depend on that thread's timing
    /// (open with `checkpoint_interval: None` to have no thread).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn maintenance_round(&self, due: bool, budget: u64) -> Result<()> {
        self.check_not_in_change("maintenance_round")?;
        self.core.check_not_writing("maintenance_round")?;
        self.core.maintain(due, budget)
    }

    /// What the database did since it was opened.
    pub fn stats(&self) -> DbStats {
        let mut stats = *self.core.stats.lock();
        stats.nodes_loaded = self.core.loads.load(Ordering::Relaxed);
        stats.node_bytes = self.core.node_bytes.load(Ordering::Relaxed);
        if let Some(wal) = &self.core.wal {
            stats.log_bytes = wal.lock().since_release();
        }
        stats
    }
}

impl<A, B> Db<Store<A, B>>
where
    A: bob_store_core::SpaceAllocator,
    B: bob_io_helpers::FileBackend + Clone,
    Store<A, B>: SplitStore<Io = B> + PrimeStorer,
{
    /// Checkpoints, then compacts the store (objects moved down, the file shortened; ids
    /// keep their meaning), with writers and checkpoints held off meanwhile.
    pub fn compact(&self) -> Result<()> {
        self.check_not_in_change("compact")?;
        self.core.check_not_writing("compact")?;
        let core = &self.core;
        core.check_writable()?;
        let mut pending = core.writer.lock();
        let ckpt = core.ckpt.lock();
        let snapshot = Snapshot::clone(&core.committed.lock());
        if let Some(e) = core.checkpoint_locked(&mut pending, &ckpt, snapshot, true, true)? {
            return Err(e);
        }
        let result = core.store.compact().map(|_| ()).map_err(Error::from);
        core.latch(result)
    }
}

impl Db<DefaultStore> {
    /// A new database in a new file at `path` (an existing file is an error), with its log
    /// in the directory `<path>.wal`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        Self::create_with(path, &DbOptions::default())
    }

    /// [`create`](Self::create) with options.
    pub fn create_with(path: impl AsRef<Path>, options: &DbOptions) -> Result<Self> {
        let path = path.as_ref();
        let store = ConcurrentStore::create_base(path, options.store, 0)?;
        Self::start_new(path, store, options)
    }

    /// The database in the file at `path`, with its log in `<path>.wal`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &DbOptions::default())
    }

    /// [`open`](Self::open) with options.
    pub fn open_with(path: impl AsRef<Path>, options: &DbOptions) -> Result<Self> {
        let path = path.as_ref();
        let store = ConcurrentStore::open_base(path, options.store, 0)?;
        Self::start(path, store, options)
    }

    /// The database in the file at `path`, created if there is none: what most programs
    /// want at start-up. An empty file, or one of zeros a creation cut short by a crash left
    /// (see `Store::open_or_create_with`), is a new database.
    ///
    /// ```
    /// # fn main() -> Result<(), bob_btree::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("app.bob");
    /// let db = bob_btree::Db::open_or_create(&path)?; // created
    /// db.close()?;
    /// let db = bob_btree::Db::open_or_create(&path)?; // opened
    /// # db.close()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_or_create_with(path, &DbOptions::default())
    }

    /// [`open_or_create`](Self::open_or_create) with options.
    pub fn open_or_create_with(path: impl AsRef<Path>, options: &DbOptions) -> Result<Self> {
        let path = path.as_ref();
        let store = ConcurrentStore::open_or_create_base(path, options.store, 0)?;
        // Looked up, not read (opening reads the catalog once, in `build`).
        match store.object_info(PRIME_OBJECT_ID) {
            // No catalog: a new store, whatever a log at this path holds is no one's.
            Err(bob_store_core::Error::NotFound(_)) => Self::start_new(path, store, options),
            _ => Self::start(path, store, options),
        }
    }

    /// The database in `store`, opened at `path`, with its log in `<path>.wal` (`path` with
    /// its symbolic links resolved, so that every name of the file finds one log, and a
    /// compaction's copy replaces the file, not a link to it).
    fn start(
        path: &Path,
        store: ConcurrentStore<DefaultStore>,
        options: &DbOptions,
    ) -> Result<Self> {
        let path = &std::fs::canonicalize(path)?;
        let log = if options.log {
            Some(Box::new(OsLogDir::new(&log_dir_of(path))?) as Box<dyn LogDir>)
        } else {
            None
        };
        Self::with_files(store, log, Box::new(OsStoreFiles::new(path)), options)
    }

    /// A new database in `store`, just created at `path`: a log left at `<path>.wal` by an
    /// earlier database is emptied first.
    fn start_new(
        path: &Path,
        store: ConcurrentStore<DefaultStore>,
        options: &DbOptions,
    ) -> Result<Self> {
        let path = &std::fs::canonicalize(path)?; // as in `start`
        let log_path = log_dir_of(path);
        if !options.log && log_path.exists() {
            // An earlier database's log would otherwise meet this one at a later open.
            std::fs::remove_dir_all(&log_path)?;
        }
        let log = if options.log {
            let dir = OsLogDir::new(&log_path)?;
            // Segments left by an earlier database at this path belong to no one now.
            for seq in dir.list()? {
                dir.remove(seq)?;
            }
            dir.sync()?;
            Some(Box::new(dir) as Box<dyn LogDir>)
        } else {
            None
        };
        Self::with_files(store, log, Box::new(OsStoreFiles::new(path)), options)
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> Core<S> {
    fn build(
        store: ConcurrentStore<S>,
        log: Option<Box<dyn LogDir>>,
        files: Option<Box<dyn StoreFiles<S>>>,
        options: &DbOptions,
    ) -> Result<Self> {
        let catalog = match store.read_bytes_from_obj(PRIME_OBJECT_ID) {
            Ok(bytes) => Catalog::decode(&bytes)?,
            Err(bob_store_core::Error::NotFound(_)) => {
                let catalog = Catalog {
                    logged: log.is_some(),
                    log_id: crate::wal::fresh_salt(0),
                    // Made in a store that holds objects already: they are not its own.
                    shared: store.object_count()? > 0,
                    ..Catalog::default()
                };
                store.prime_object(0)?;
                store.replace_obj(PRIME_OBJECT_ID, &catalog.encode())?;
                store.commit()?;
                catalog
            }
            Err(e) => return Err(e.into()),
        };
        if catalog.logged && log.is_none() {
            return Err(Error::LogRequired);
        }
        let log: Option<Arc<dyn LogDir>> = log.map(Arc::from);
        let (wal, records) = match &log {
            Some(dir) => {
                let (wal, records) = Wal::open(
                    Arc::clone(dir),
                    catalog.log_id,
                    catalog.wal_lsn,
                    options.segment_bytes,
                )?;
                (Some(Mutex::new(wal)), records)
            }
            None => (None, Vec::new()),
        };
        let epoch = catalog.epoch;
        let deferred = catalog.deferred.clone();
        let treaps = catalog.treaps.clone();
        let catalog_shared = catalog.shared;
        let catalog_entries = catalog.trees.values().map(|t| t.len).sum();
        let trees = catalog
            .trees
            .into_iter()
            .map(|(name, t)| {
                let root = match t.root {
                    Some(id) => Link::stored(id, epoch),
                    None => Link::loaded(Node::empty_leaf(), epoch),
                };
                (name, TreeState { id: t.id, root, len: t.len })
            })
            .collect();
        let snapshot =
            Snapshot { epoch, lsn: catalog.wal_lsn, next_tree: catalog.next_tree, trees };
        let db = Self {
            store,
            committed: Mutex::new(Arc::new(snapshot)),
            writer: Mutex::new(Pending::default()),
            writer_thread: Mutex::new(None),
            ckpt: Mutex::new(()),
            shared: AtomicBool::new(catalog_shared),
            treaps: Mutex::new(treaps),
            named: Mutex::new(HashMap::new()),
            rewrites: Mutex::new(HashMap::new()),
            deferred: Mutex::new(deferred),
            readers: Mutex::new(BTreeMap::new()),
            failed: AtomicBool::new(false),
            wal,
            log_id: catalog.log_id,
            checkpoint_after_bytes: options.checkpoint_after_bytes,
            compact_on_close_below: options.compact_on_close_below,
            compact_on_close_min_bytes: options.compact_on_close_min_bytes,
            store_options: options.store,
            files,
            settled: AtomicBool::new(false),
            checkpointed_entries: AtomicU64::new(catalog_entries),
            stats: Mutex::new(DbStats::default()),
            log_dir: log.map(|dir| (dir, options.segment_bytes)),
            wrote: AtomicBool::new(false),
            prepare_failed: AtomicBool::new(false),
            activity: AtomicU64::new(1),
            idle_at: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            node_bytes: AtomicU64::new(0),
            hand: Mutex::new(HashMap::new()),
            group: GroupCommit::default(),
            store_complete: AtomicBool::new(false),
        };
        if catalog.logged != db.wal.is_some() || !records.is_empty() {
            db.replay(records)?;
            // Replayed records may have been read from pages a crash left unsynced, and the
            // catalog must say whether a log is kept before anything relies on it: both are
            // made durable by a checkpoint before the database is used.
            db.checkpoint()?;
        }
        Ok(db)
    }

    /// Applies the log's records after the checkpoint, as commits not yet checkpointed; the
    /// first checkpoint also records whether the database keeps a log.
    fn replay(&self, records: crate::wal::Recovered) -> Result<()> {
        let mut tx = self.begin_write()?;
        for (lsn, record) in records {
            tx.apply_record(&record).map_err(|e| match e {
                Error::Corrupt(why) => Error::Corrupt(format!("log record {lsn}: {why}")),
                other => other,
            })?;
            tx.snapshot.lsn = lsn;
        }
        let WriteTxn { mut pending, snapshot, superseded, freed, freed_values, .. } = tx;
        pending.superseded.extend(superseded);
        pending.freed.extend(freed);
        pending.freed_values.extend(freed_values);
        pending.changed = true;
        self.publish(Arc::new(snapshot));
        Ok(())
    }

    /// A write transaction; waits while another one is open. Its changes are its own until
    /// [`WriteTxn::commit`]; dropping it (or [`WriteTxn::abort`]) discards them.
    pub(crate) fn begin_write(&self) -> Result<WriteTxn<'_, S>> {
        self.check_writable()?;
        if !self.store_complete.load(Ordering::Acquire) {
            // Damage the store's open left unread fails the first write, never a checkpoint
            // after commits the log acknowledged.
            self.latch(self.store.complete_open().map_err(Error::from))?;
            self.store_complete.store(true, Ordering::Release);
        }
        self.settle_files()?;
        self.check_not_writing("begin_write")?;
        self.wrote.store(true, Ordering::Relaxed);
        self.activity.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.writer.lock();
        // Made at once, so an unwind from here on clears the mark (before the lock goes).
        let mark = WriterMark::set(&self.writer_thread);
        let log = std::mem::take(&mut pending.log_buf);
        let snapshot = Snapshot::clone(&self.committed.lock());
        Ok(WriteTxn {
            db: self,
            _writer: mark,
            pending,
            snapshot,
            superseded: Vec::new(),
            freed: Vec::new(),
            freed_values: Vec::new(),
            changed: false,
            log,
            failed: false,
            dirtied: 0,
        })
    }

    /// A read snapshot of the last commit: later commits do not change what it sees.
    pub(crate) fn begin_read(&self) -> ReadTxn<'_, S> {
        let committed = self.committed.lock();
        let snapshot = Arc::clone(&committed);
        *self.readers.lock().entry(snapshot.epoch).or_default() += 1;
        drop(committed);
        ReadTxn { db: self, snapshot }
    }

    /// Writes what commits changed since the last checkpoint (the changed nodes, the roots)
    /// in one store commit. Waits for an open write transaction to end, and holds writers
    /// off only while it marks the changed nodes clean (and writes the new ones), not while
    /// it rewrites the changed ones and syncs.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.checkpoint_if(true).map(|_| ())
    }

    /// A checkpoint, if anything changed or `always`; if not `always` and another checkpoint
    /// is writing, none (that one releases the log, and the next round comes soon). Whether
    /// one ran.
    fn checkpoint_if(&self, always: bool) -> Result<bool> {
        self.check_writable()?;
        // Waits for a checkpoint in its second phase before taking the writer lock, so as
        // not to hold writers off meanwhile.
        drop(self.ckpt.lock());
        let mut pending = self.writer.lock();
        // Deferred value objects no reader needs any more are deleted by a checkpoint even
        // when nothing else changed (in a session that writes: reading alone writes nothing).
        let due = always
            || pending.changed
            || (self.wrote.load(Ordering::Relaxed) && self.deferred_deletable());
        if !due {
            return Ok(false);
        }
        let ckpt = match self.ckpt.try_lock() {
            Some(ckpt) => ckpt,
            None if !always => return Ok(false),
            None => self.ckpt.lock(),
        };
        let snapshot = Snapshot::clone(&self.committed.lock());
        let prepared = self.checkpoint_prepare(&mut pending, &ckpt, snapshot, true, true)?;
        drop(pending);
        match prepared.map(|p| self.checkpoint_write(&ckpt, p)).transpose()?.flatten() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// `also`, then a commit of the store, under a commit hold and the checkpoint lock.
    fn commit_held(&self, also: impl FnOnce(&ConcurrentStore<S>) -> Result<()>) -> Result<()> {
        let _ckpt = self.ckpt.lock();
        self.check_writable()?;
        self.settle_files()?;
        let hold = self.store.hold_commits()?;
        let result = also(&self.store).and_then(|()| Ok(hold.commit()?));
        if let Err(e) = result {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(())
    }

    /// [`Db::shared_store`]: the catalog's `shared` flag set and committed, once.
    fn mark_shared(&self) -> Result<()> {
        if self.shared.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ckpt = self.ckpt.lock();
        if self.shared.load(Ordering::Acquire) {
            return Ok(());
        }
        self.check_writable()?;
        self.settle_files()?;
        let mut catalog = Catalog::decode(&self.store.read_bytes_from_obj(PRIME_OBJECT_ID)?)?;
        catalog.shared = true;
        let hold = self.store.hold_commits()?;
        let result =
            self.store.replace_obj(PRIME_OBJECT_ID, &catalog.encode()).and_then(|()| hold.commit());
        if let Err(e) = result {
            self.failed.store(true, Ordering::Release);
            return Err(e.into());
        }
        self.shared.store(true, Ordering::Release);
        Ok(())
    }

    /// The held treap of `name` (created empty, unloaded, at its first use).
    fn named_treap(&self, name: &str) -> Arc<NamedTreap<S>> {
        let mut named = self.named.lock();
        Arc::clone(named.entry(name.to_owned()).or_default())
    }

    /// [`Db::save_treap`]: under `ckpt`, so the prime object holds the last checkpoint's
    /// catalog and no checkpoint writes one meanwhile.
    fn save_treap(
        &self,
        name: &str,
        treap: &mut dyn HeldTreap<S>,
        also: impl FnOnce(&ConcurrentStore<S>) -> Result<()>,
    ) -> Result<()> {
        let _ckpt = self.ckpt.lock();
        self.check_writable()?;
        self.settle_files()?;
        let mut catalog = Catalog::decode(&self.store.read_bytes_from_obj(PRIME_OBJECT_ID)?)?;
        let hold = self.store.hold_commits()?;
        let mut store = &self.store;
        let saved = treap.persist_into(&mut store, &mut |store, root| {
            catalog.treaps.insert(name.to_owned(), root);
            store.replace_obj(PRIME_OBJECT_ID, &catalog.encode())?;
            Ok(())
        });
        let result = saved
            .map_err(from_treap)
            .and_then(|_| also(&self.store))
            .and_then(|()| Ok(hold.commit()?));
        if let Err(e) = result {
            // Half a save may be in the store (it latched when the hold ended uncommitted).
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        *self.treaps.lock() = catalog.treaps;
        self.wrote.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a deferred value object could be deleted now: no reader older than the
    /// checkpoint that dropped it is open.
    fn deferred_deletable(&self) -> bool {
        let deferred = self.deferred.lock();
        let Some(first) = deferred.iter().map(|&(dropped, _)| dropped).min() else {
            return false;
        };
        let _committed = self.committed.lock();
        self.readers.lock().keys().next().is_none_or(|&oldest| first <= oldest)
    }

    /// Makes every buffered commit durable: syncs the log (a checkpoint, without one).
    pub(crate) fn sync(&self) -> Result<()> {
        self.check_writable()?;
        // What this session saw (an earlier one's commits) is durable only with the file.
        self.settle_files()?;
        match &self.wal {
            Some(wal) => {
                let _writer = self.writer.lock();
                let result = wal.lock().sync();
                self.latch(result)
            }
            None => self.checkpoint(),
        }
    }

    /// Makes every record appended so far durable, sharing the sync with every caller that
    /// asks meanwhile (group commit: one leader syncs for all who appended before it began;
    /// a failed sync latches the database, and no caller it would have covered gets `Ok`).
    fn sync_log(&self) -> Result<()> {
        let Some(wal) = &self.wal else { return Ok(()) };
        self.group.commit(|| {
            // After a failed sync no retry may report success (the kernel may have dropped
            // the pages it could not write): the latch refuses it.
            self.check_writable()?;
            let Some(job) = self.latch(wal.lock().begin_sync())? else { return Ok(false) };
            self.latch(job.run())?;
            wal.lock().end_sync(job.through);
            self.stats.lock().log_syncs += 1;
            Ok(true)
        })
    }

    /// Records a failure of the log or a checkpoint: the database refuses writes from now on.
    fn latch<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    /// Checkpoints and closes the store (or compacts it into a new file).
    fn close(&self) -> Result<()> {
        // A session that wrote nothing (no write transaction, no checkpoint) leaves the file
        // as it found it: closing it writes and syncs nothing.
        let mut copied = None;
        if self.wrote.load(Ordering::Relaxed) || self.stats.lock().checkpoints > 0 {
            // A store the live entries fill too little of is copied into a new file, which
            // is a checkpoint too: estimated first (the closing checkpoint would be wasted),
            // and checked again after that checkpoint.
            // A copy that failed once is not tried again (a disk too full for it, or damage
            // in the trees, which `verify` reports, is still there).
            let tried = self.sparse(true)?;
            if tried {
                copied = self.compact_by_copy()?;
            }
            if copied.is_none() {
                self.checkpoint()?;
                if self.sparse(false)? {
                    if !tried {
                        copied = self.compact_by_copy()?;
                    }
                    if copied.is_none() {
                        self.compact_in_place()?;
                    }
                }
            }
        }
        if copied.is_none() {
            self.store.close()?;
        }
        // Spare log segments are kept for a database in use, not for a closed one.
        if let Some((dir, _)) = &self.log_dir {
            dir.drop_spares()?;
        }
        // The copy's file stays locked until here: an opener waits until the log is done.
        drop(copied);
        Ok(())
    }

    /// Before this session first makes a change durable (its first write transaction, a
    /// checkpoint, a sync, a commit of the store, a release of the log): a copy an earlier
    /// session renamed over the store is made durable first (see [`StoreFiles::settle`]), or
    /// a power loss could bring the old file back under what this session acknowledged. One
    /// directory sync a session that writes; a failure latches the database (a failed sync is
    /// never tried again: it may report success without having written anything), so a
    /// database in a directory that cannot be synced is read-only. A shared database is
    /// never replaced by a copy (`compact_by_copy`), so `mark_shared` may skip this once the
    /// flag is set.
    fn settle_files(&self) -> Result<()> {
        if let Some(files) = &self.files
            && !self.settled.load(Ordering::Acquire)
        {
            self.latch(files.settle())?;
            self.settled.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Whether `close` compacts: a session that wrote left live objects filling less than
    /// `compact_on_close_below` of a store file of `compact_on_close_min_bytes` or more.
    /// `estimate`: before the closing checkpoint, from the live bytes at the last one, scaled
    /// by the entries then and now.
    fn sparse(&self, estimate: bool) -> Result<bool> {
        let Some(fill) = self.compact_on_close_below else { return Ok(false) };
        if !self.wrote.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let _pending = self.writer.lock();
        let _ckpt = self.ckpt.lock();
        self.check_writable()?;
        let Some((used, len)) = self.store.space_in_use()? else { return Ok(false) };
        if len < self.compact_on_close_min_bytes {
            return Ok(false);
        }
        let mut used = used as f64;
        if estimate {
            let now: u64 = self.committed.lock().trees.values().map(|t| t.len).sum();
            let then = self.checkpointed_entries.load(Ordering::Relaxed);
            if then == 0 {
                return Ok(false);
            }
            used *= now as f64 / then as f64;
        }
        Ok(used < fill * len as f64)
    }

    /// Compacts the store within its file (objects moved down, the file shortened).
    fn compact_in_place(&self) -> Result<()> {
        let _pending = self.writer.lock();
        let _ckpt = self.ckpt.lock();
        self.check_writable()?;
        let result = self.store.compact().map_err(Error::from);
        self.latch(result)?;
        self.stats.lock().compactions += 1;
        Ok(())
    }

    /// Copies the committed trees into a new store that then takes this one's place (see
    /// [`StoreFiles`]): a checkpoint into a new file, each tree rebuilt from its entries in
    /// order (leaves filled as a bulk load fills them), long values copied. Returns the
    /// copy's file, whose lock the caller holds until it is done with the log, or `None`
    /// when no copy was made (there are no [`StoreFiles`], or making it failed: nothing
    /// changed, the caller closes as usual). Once the copy is in place, this store is the
    /// database's no longer: the database refuses every write.
    fn compact_by_copy(&self) -> Result<Option<S::Io>> {
        let Some(files) = &self.files else { return Ok(None) };
        if self.shared.load(Ordering::Relaxed) || !self.treaps.lock().is_empty() {
            // The store may hold objects that are not the database's trees' (another
            // user's, a treap's): a copy of the trees would leave them behind.
            return Ok(None);
        }
        let _pending = self.writer.lock();
        let _ckpt = self.ckpt.lock();
        self.check_writable()?;
        let snapshot = Arc::clone(&self.committed.lock());
        let appended = self.wal.as_ref().map_or(0, |wal| wal.lock().appended());
        let started = std::time::Instant::now();
        let (hold, written) = match self.write_copy(files.as_ref(), &snapshot) {
            Ok(copy) => copy,
            Err(_) => {
                // The old file and the log are as they were; the copy is of no use.
                let _ = files.remove_copy();
                return Ok(None);
            }
        };
        // Either file holds every commit (the log still has the ones after the old file's
        // checkpoint): a failure here leaves the log as it is, and the database latched.
        self.latch(files.install_copy())?;
        self.failed.store(true, Ordering::Release);
        let released = match &self.wal {
            Some(wal) => wal.lock().release(snapshot.lsn, appended),
            None => Ok(()),
        };
        {
            let mut stats = self.stats.lock();
            stats.compactions += 1;
            stats.checkpoints += 1;
            stats.checkpoint_micros += started.elapsed().as_micros() as u64;
            stats.nodes_written += written.0;
            stats.checkpoint_bytes += written.1;
        }
        released?;
        Ok(Some(hold))
    }

    /// The catalog of a checkpoint at `epoch` of `snapshot`, whose trees have the given roots
    /// (no deferred values yet).
    fn catalog(
        &self,
        snapshot: &Snapshot,
        epoch: u64,
        trees: BTreeMap<String, StoredTree>,
    ) -> Catalog {
        Catalog {
            epoch,
            next_tree: snapshot.next_tree,
            logged: self.wal.is_some(),
            log_id: self.log_id,
            wal_lsn: snapshot.lsn,
            trees,
            deferred: Vec::new(),
            treaps: self.treaps.lock().clone(),
            shared: self.shared.load(Ordering::Relaxed),
        }
    }

    /// Writes `snapshot`'s trees and catalog into a new store from `files`, committed and
    /// closed; returns the store's file (still locked) and the nodes and bytes written.
    fn write_copy(
        &self,
        files: &dyn StoreFiles<S>,
        snapshot: &Snapshot,
    ) -> Result<(S::Io, (u64, u64))> {
        let epoch = snapshot.next_epoch()?;
        let mut copy = files.create_copy(self.store_options)?;
        copy.prime_object(0)?;
        let mut written = (0, 0);
        let mut trees = BTreeMap::new();
        for (name, state) in &snapshot.trees {
            let root = self.copy_tree(&mut copy, state, epoch, &mut written)?;
            trees.insert(name.clone(), StoredTree { id: state.id, root, len: state.len });
        }
        let catalog = self.catalog(snapshot, epoch, trees).encode();
        written.1 += catalog.len() as u64;
        copy.replace_obj(PRIME_OBJECT_ID, &catalog)?;
        copy.commit()?;
        let file = copy.io().clone();
        copy.close()?;
        Ok((file, written))
    }

    /// Writes tree `state` into `copy` at checkpoint `epoch`, rebuilt from its entries;
    /// returns its root's object (`None`: the tree is empty).
    fn copy_tree(
        &self,
        copy: &mut S,
        state: &TreeState,
        epoch: u64,
        written: &mut (u64, u64),
    ) -> Result<Option<ObjectId>> {
        let tree = state.id;
        let out = std::cell::RefCell::new((copy, Vec::new(), written));
        let mut sink = |body: Body| -> Result<Link> {
            let node =
                Node { id: None, dirty: false, below: false, body, touched: Touched::default() };
            let (copy, buf, written) = &mut *out.borrow_mut();
            node.encode(tree, epoch, buf);
            written.0 += 1;
            written.1 += buf.len() as u64;
            Ok(Link::stored(copy.write_new_obj_from_bytes(buf)?, epoch))
        };
        let mut builder = tree::Builder::new(&mut sink);
        let copy_value = |bytes: &[u8]| -> Result<Val> {
            let (copy, buf, written) = &mut *out.borrow_mut();
            node::encode_value(tree, epoch, bytes, buf);
            written.1 += buf.len() as u64;
            let id = copy.write_new_obj_from_bytes(buf)?;
            let len = u32::try_from(bytes.len()).expect("a value is under 1 GiB");
            Ok(Val::Stored(Arc::new(ValRef { id, written: epoch, len })))
        };
        tree::for_each_entry(self, tree, &state.root, &mut |key, val| {
            let copied = match val {
                ValView::Inline(_) => return builder.push(key, val),
                ValView::Pending(bytes) => copy_value(bytes)?,
                ValView::Stored(r) => copy_value(&self.load_value(r)?)?,
            };
            builder.push(key, copied.view())
        })?;
        let (root, count) = builder.finish_rootless()?;
        if count != state.len {
            return Err(Error::Corrupt(format!(
                "tree {tree} holds {count} entries, its catalog says {}",
                state.len
            )));
        }
        Ok(root.map(|link| link.id.expect("a written node has its object")))
    }

    /// Reads every node of every tree of the last commit and checks the tree invariants:
    /// keys in order within and across nodes (each subtree inside its separators), every
    /// leaf at one depth, no object used twice, entry counts equal to the catalog's. Damage
    /// found is listed in the report; an error is returned only when the store fails.
    pub(crate) fn verify(&self) -> Result<DbReport> {
        // A registered reader: checkpoints keep what this snapshot may still load.
        let read = self.begin_read();
        let snapshot = Arc::clone(&read.snapshot);
        let mut report = DbReport::default();
        let mut seen_ids = std::collections::HashSet::new();
        report.deferred = self.deferred.lock().len() as u64;
        for (name, state) in &snapshot.trees {
            report.trees += 1;
            let mut entries = 0u64;
            let mut leaf_depth = None;
            let mut stack: Vec<Visit<'_>> = vec![(&state.root, 0, None, None)];
            while let Some((link, depth, lo, hi)) = stack.pop() {
                if depth >= tree::MAX_DEPTH {
                    report.problems.push(format!("tree {name:?}: deeper than {depth} nodes"));
                    continue;
                }
                let node = match tree::node(self, state.id, link) {
                    Ok(node) => node,
                    Err(e) if !is_damage(&e) => return Err(e),
                    Err(e) => {
                        report.problems.push(format!("tree {name:?}: {e}"));
                        continue;
                    }
                };
                report.nodes += 1;
                if let Some(id) = node.id
                    && !seen_ids.insert(id)
                {
                    // Not walked again: a crafted tree could name one node many times.
                    report.problems.push(format!("tree {name:?}: object {id} holds two nodes"));
                    continue;
                }
                let outside =
                    |k: &[u8]| lo.is_some_and(|lo| k < lo) || hi.is_some_and(|hi| k >= hi);
                let out_of_bounds = match &node.body {
                    Body::Leaf(entries) => entries.keys().any(outside),
                    Body::Branch { keys, .. } => keys.iter().any(outside),
                };
                if out_of_bounds {
                    report.problems.push(format!("tree {name:?}: a key outside its separators"));
                }
                match &node.body {
                    Body::Leaf(leaf) => {
                        for r in leaf.vals().filter_map(ValView::stored) {
                            if !seen_ids.insert(r.id) {
                                report
                                    .problems
                                    .push(format!("tree {name:?}: object {} is used twice", r.id));
                                continue;
                            }
                            match self.load_value(r) {
                                Ok(_) => report.values += 1,
                                Err(e) if !is_damage(&e) => return Err(e),
                                Err(e) => report.problems.push(format!("tree {name:?}: {e}")),
                            }
                        }
                        entries += leaf.len() as u64;
                        if *leaf_depth.get_or_insert(depth) != depth {
                            report.problems.push(format!("tree {name:?}: leaves at two depths"));
                        }
                        if leaf.is_empty() && depth > 0 {
                            report.problems.push(format!("tree {name:?}: an empty leaf"));
                        }
                    }
                    Body::Branch { keys, children } => {
                        for (i, child) in children.iter().enumerate() {
                            let clo = if i == 0 { lo } else { Some(&keys[i - 1]) };
                            let chi = if i == keys.len() { hi } else { Some(&keys[i]) };
                            stack.push((child, depth + 1, clo, chi));
                        }
                    }
                }
            }
            report.entries += entries;
            if entries != state.len {
                report.problems.push(format!(
                    "tree {name:?}: {entries} entries, the catalog says {}",
                    state.len
                ));
            }
        }
        Ok(report)
    }

    /// Has the log directory prepare a spare segment once writes began and the log will
    /// need a segment soon (errors are left for the log's own operations to meet).
    fn prepare_spare(&self) {
        let (Some((dir, len)), Some(wal)) = (&self.log_dir, &self.wal) else { return };
        if !self.wrote.load(Ordering::Relaxed) || self.failed.load(Ordering::Acquire) {
            return;
        }
        let near = wal.lock().next_segment_near();
        if near && !self.prepare_failed.load(Ordering::Relaxed) {
            // The zeros are written without any lock held. After a failure (a full disk,
            // say) no more are tried until the database is reopened.
            if dir.prepare_spare(*len).is_err() {
                self.prepare_failed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether object `id` holds an intact node of a tree other than `tree`.
    fn another_trees_node(&self, id: ObjectId, tree: u32) -> Result<bool> {
        let bytes = self.store.read_bytes_from_obj(id)?;
        Ok(crate::node::intact_tree_of(&bytes).is_some_and(|t| t != tree))
    }

    /// The bytes of the nodes in memory under the committed trees, the clean leaves that could
    /// be unloaded, and the bytes of the changed nodes (see [`loaded_bytes`]), measured
    /// without holding writers off; the first is kept for [`DbStats::node_bytes`].
    fn measure(&self) -> (u64, u64, u64) {
        let committed = Arc::clone(&self.committed.lock());
        let measured = committed
            .trees
            .values()
            .map(|t| loaded_bytes(&t.root, 0))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        drop(committed);
        self.node_bytes.store(measured.0, Ordering::Relaxed);
        measured
    }

    /// The persistence thread's round: a checkpoint if `due` and anything changed, or if
    /// the changed nodes pass half of `budget` bytes; then unloading clean leaves if the
    /// trees in memory pass `budget`.
    fn maintain(&self, due: bool, budget: u64) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        if due {
            self.checkpoint_if(false)?;
        }
        let activity = self.activity.load(Ordering::Relaxed);
        if activity == self.idle_at.load(Ordering::Relaxed) {
            return Ok(()); // nothing loaded, written or checkpointed since the last walk
        }
        let (mut loaded, mut evictable, dirty) = self.measure();
        if dirty > budget / 2 {
            // Changed nodes (and the long values waiting with them) cannot be unloaded until
            // a checkpoint writes them: without one they would grow past the budget for as
            // long as the interval lasts. Then the leaves it wrote may go.
            if self.checkpoint_if(false)? {
                self.stats.lock().budget_checkpoints += 1;
            }
            (loaded, evictable, _) = self.measure();
        }
        // Nothing to gain when only branches and changed leaves are in memory.
        if loaded <= budget || evictable == 0 {
            self.idle_at.store(activity, Ordering::Relaxed);
            return Ok(());
        }
        let _pending = self.writer.lock();
        // No checkpoint is between its phases: every clean node is in the store as the
        // committed epoch says (an evicted one is read back from there). Next round if one is.
        let Some(_ckpt) = self.ckpt.try_lock() else { return Ok(()) };
        if self.failed.load(Ordering::Acquire) {
            return Ok(()); // a failed checkpoint's clean marks are not in the store
        }
        let mut snapshot = Snapshot::clone(&self.committed.lock());
        let epoch = snapshot.epoch;
        // Down to three quarters of the budget, so that the next rounds have room to load.
        let mut need = loaded - budget / 4 * 3;
        let wanted = need;
        let mut evicted = 0;
        // A second pass when the first falls short (every leaf used since the last round):
        // the leaves not used since the first cleared their marks go, so memory comes down
        // even while readers use every leaf (as a clock's hand sweeps twice at most). Each
        // tree's walk starts where the last round's stopped (the hand: a child of the root),
        // so no part of the key space is always looked at first.
        let mut hand = self.hand.lock();
        for _ in 0..2 {
            if need == 0 {
                break;
            }
            for (name, tree) in &mut snapshot.trees {
                let from = hand.get(name).copied().unwrap_or(0);
                let (n, stopped) = evict(&mut tree.root, epoch, 0, &mut need, from);
                evicted += n;
                hand.insert(name.clone(), stopped);
            }
        }
        drop(hand);
        self.node_bytes.store(loaded - (wanted - need), Ordering::Relaxed);
        self.publish(Arc::new(snapshot));
        self.stats.lock().evicted_nodes += evicted;
        Ok(())
    }

    /// Makes `snapshot` the one new readers get. The snapshot it replaces is dropped once
    /// the lock is released: freeing the node versions only it held takes a while, and
    /// [`Db::begin_read`] must not wait for that.
    ///
    /// Returns whether a reader was open when it was published (a reader registers under
    /// the same lock, so one that is not open then takes this snapshot or a later one).
    fn publish(&self, snapshot: Arc<Snapshot>) -> bool {
        let (replaced, readers) = {
            let mut committed = self.committed.lock();
            let readers = !self.readers.lock().is_empty();
            (std::mem::replace(&mut *committed, snapshot), readers)
        };
        drop(replaced);
        readers
    }

    /// Refuses `what` from the thread whose [`WriteTxn`] holds the writer lock: it would
    /// wait for that transaction, which cannot end while its thread waits.
    fn check_not_writing(&self, what: &str) -> Result<()> {
        if self.thread_holds_write() {
            return Err(Error::Store(bob_store_core::Error::WouldDeadlock(format!(
                "{what} from the thread that holds a write transaction of this database: \
                 commit or drop it first"
            ))));
        }
        Ok(())
    }

    /// Whether the calling thread holds a write transaction.
    fn thread_holds_write(&self) -> bool {
        *self.writer_thread.lock() == Some(thread::current().id())
    }

    fn check_writable(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed);
        }
        Ok(())
    }

    /// A checkpoint of `snapshot` (its dirty nodes, its catalog) in one store commit, both
    /// phases: the caller holds the writer lock and `ckpt` throughout.
    ///
    /// `Err`: the checkpoint is not durable (the database latched). `Ok(Some(e))`: it is
    /// durable and published, and releasing the log after it failed (latched).
    fn checkpoint_locked(
        &self,
        pending: &mut Pending,
        ckpt: &MutexGuard<'_, ()>,
        snapshot: Snapshot,
        always: bool,
        published: bool,
    ) -> Result<Option<Error>> {
        match self.checkpoint_prepare(pending, ckpt, snapshot, always, published)? {
            Some(prepared) => self.checkpoint_write(ckpt, prepared),
            None => Ok(None),
        }
    }

    /// A checkpoint's first phase, under the writer lock (and `ckpt`, held until its second
    /// phase ends): the dirty nodes of `snapshot` are marked clean and collected, new nodes
    /// and new value objects written (to the store's write buffer, in the main), the
    /// catalog encoded. When `published` (`snapshot` is the committed one), the cleaned
    /// snapshot is published now, so writers go on while the second phase writes; otherwise
    /// (a commit this checkpoint makes durable) only once the second phase is done.
    /// `None`: nothing to do (and `snapshot` is published).
    fn checkpoint_prepare(
        &self,
        pending: &mut Pending,
        _ckpt: &MutexGuard<'_, ()>,
        mut snapshot: Snapshot,
        always: bool,
        published: bool,
    ) -> Result<Option<(Prepared, CommitHold<'_, S>)>> {
        // Checked under `ckpt`: a checkpoint whose second phase failed left its nodes marked
        // clean and published; none may follow it into the store.
        self.check_writable()?;
        self.activity.fetch_add(1, Ordering::Relaxed);
        if !pending.changed && !always {
            self.publish(Arc::new(snapshot));
            return Ok(None);
        }
        // No other user of the store commits from the first node this checkpoint writes to
        // its own commit: one between would make a part of the checkpoint durable (nodes
        // rewritten under their ids with the old catalog, or new nodes no catalog names).
        let hold = self.store.hold_commits()?;
        let epoch = snapshot.next_epoch()?;
        let mut prepared = Prepared {
            epoch,
            started: std::time::Instant::now(),
            written: (0, 0),
            rewrites: Vec::new(),
            freed: std::mem::take(&mut pending.freed),
            delete_values: Vec::new(),
            catalog: Vec::new(),
            lsn: snapshot.lsn,
            appended: self.wal.as_ref().map_or(0, |wal| wal.lock().appended()),
            unpublished: None,
            entries: snapshot.trees.values().map(|t| t.len).sum(),
        };
        let result = (|| {
            {
                let mut rewrites = self.rewrites.lock();
                for (id, old) in pending.superseded.drain(..) {
                    rewrites.entry(id).or_default().push((epoch, old));
                }
            }
            let mut buf = Vec::new();
            for tree in snapshot.trees.values_mut() {
                self.collect_dirty(&mut tree.root, tree.id, epoch, &mut buf, 0, &mut prepared)?;
            }
            let trees = snapshot
                .trees
                .iter()
                .map(|(name, t)| {
                    let root = t.root.node.get().map_or(t.root.id, |n| n.id);
                    (name.clone(), StoredTree { id: t.id, root, len: t.len })
                })
                .collect();
            Ok(self.catalog(&snapshot, epoch, trees))
        })();
        let mut catalog = match result {
            Ok(catalog) => catalog,
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                return Err(e);
            }
        };
        snapshot.epoch = epoch;
        pending.changed = false;
        pending.dirtied = 0;
        self.stats.lock().dirty_nodes = 0;
        #[cfg(debug_assertions)]
        for tree in snapshot.trees.values() {
            assert_written(&tree.root, 0);
        }
        // The snapshot this one replaces, dropped once the locks below are released: freeing
        // the node versions only it held takes a while, and readers must not wait for it.
        let mut replaced = None;
        let mut deferred = self.deferred.lock();
        deferred.extend(pending.freed_values.drain(..).map(|r| (epoch, r.id)));
        // A value dropped by checkpoint `c` may be read by a reader of a snapshot older than
        // `c`. Readers register under the `committed` lock: one that registers later takes
        // the snapshot published then (this one, or for a checkpoint that publishes a commit
        // only once durable, the one before it).
        let oldest = {
            let mut committed = self.committed.lock();
            let oldest = self.readers.lock().keys().next().copied().unwrap_or(u64::MAX);
            if published {
                replaced = Some(std::mem::replace(&mut *committed, Arc::new(snapshot)));
                oldest
            } else {
                prepared.unpublished = Some(snapshot);
                oldest.min(epoch - 1)
            }
        };
        deferred.retain(|&(dropped, id)| {
            if dropped <= oldest {
                prepared.delete_values.push(id);
                false
            } else {
                true
            }
        });
        catalog.deferred = deferred.clone();
        drop(deferred);
        drop(replaced);
        prepared.catalog = catalog.encode();
        Ok(Some((prepared, hold)))
    }

    /// A checkpoint's second phase, without the writer lock when the first published: the
    /// changed nodes rewritten, freed objects deleted, the catalog written, the store
    /// committed, the log released.
    fn checkpoint_write(
        &self,
        _ckpt: &MutexGuard<'_, ()>,
        (mut prepared, hold): (Prepared, CommitHold<'_, S>),
    ) -> Result<Option<Error>> {
        let epoch = prepared.epoch;
        let result = (|| {
            // A checkpoint acknowledges what it writes (and, without a log, the commits
            // before it) as durable: only with the file it is written to.
            self.settle_files()?;
            let mut buf = Vec::new();
            for (tree, node) in &prepared.rewrites {
                node.encode(*tree, epoch, &mut buf);
                prepared.written.0 += 1;
                prepared.written.1 += buf.len() as u64;
                self.store.replace_obj(node.id.expect("collected with its id"), &buf)?;
            }
            for &id in &prepared.freed {
                match self.store.delete_obj(id) {
                    // Freed twice (a rebuild replayed over a missing node): already gone.
                    Err(
                        bob_store_core::Error::NotFound(_) | bob_store_core::Error::StaleId { .. },
                    ) => {}
                    other => other?,
                }
            }
            for &id in &prepared.delete_values {
                match self.store.delete_obj(id) {
                    Err(
                        bob_store_core::Error::NotFound(_) | bob_store_core::Error::StaleId { .. },
                    ) => {}
                    other => other?,
                }
            }
            prepared.written.1 += prepared.catalog.len() as u64;
            self.store.replace_obj(PRIME_OBJECT_ID, &prepared.catalog)?;
            Ok(())
        })();
        // A hold dropped uncommitted (an error above) latches the store as well.
        let result = result.and_then(|()| Ok(hold.commit()?));
        if let Err(e) = result {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        // Durable from here: published whatever happens to the log's release (the files
        // were settled above, before the commit).
        let released = match &self.wal {
            Some(wal) => wal.lock().release(prepared.lsn, prepared.appended),
            None => Ok(()),
        };
        self.checkpointed_entries.store(prepared.entries, Ordering::Relaxed);
        {
            let mut stats = self.stats.lock();
            stats.checkpoints += 1;
            stats.checkpoint_micros += prepared.started.elapsed().as_micros() as u64;
            stats.nodes_written += prepared.written.0;
            stats.checkpoint_bytes += prepared.written.1;
        }
        if let Some(snapshot) = prepared.unpublished.take() {
            self.publish(Arc::new(snapshot));
        }
        self.prune_rewrites();
        Ok(self.latch(released).err())
    }

    /// Marks the dirty nodes under `link` clean (copying the ones a snapshot shares) with
    /// `epoch` as their checkpoint: a new node, and each long value waiting for an object,
    /// is written now (its id is needed by its parent); a changed node's rewrite waits for
    /// the second phase, collected in `prepared`.
    fn collect_dirty(
        &self,
        link: &mut Link,
        tree: u32,
        epoch: u64,
        buf: &mut Vec<u8>,
        depth: usize,
        prepared: &mut Prepared,
    ) -> Result<()> {
        let Some(arc) = link.node.get_mut() else { return Ok(()) };
        if !arc.dirty && !arc.below {
            return Ok(());
        }
        if depth >= tree::MAX_DEPTH {
            return Err(Error::Corrupt("a B-tree path is too deep to write".into()));
        }
        let node = Arc::make_mut(arc);
        // A dirty branch may hold children moved in from a sibling (a merge or refill), with
        // changes below them: its children are looked at as well.
        if (node.below || node.dirty)
            && let Body::Branch { children, .. } = &mut node.body
        {
            for child in children {
                self.collect_dirty(child, tree, epoch, buf, depth + 1, prepared)?;
            }
        }
        node.below = false;
        if !node.dirty {
            return Ok(()); // only copied on the way to changes below: its object is current
        }
        if let Body::Leaf(vals) = &mut node.body {
            // Long values first, in objects of their own: the leaf names them.
            for i in 0..vals.len() {
                let ValView::Pending(bytes) = vals.val(i) else { continue };
                node::encode_value(tree, epoch, bytes, buf);
                prepared.written.1 += buf.len() as u64;
                let id = self.store.write_new_obj_from_bytes(buf)?;
                let len = u32::try_from(bytes.len()).expect("a value is under 1 GiB");
                vals.set_stored(i, ValRef { id, written: epoch, len });
            }
        }
        node.dirty = false;
        let rewrite = node.id.is_some();
        if !rewrite {
            node.encode(tree, epoch, buf);
            prepared.written.0 += 1;
            prepared.written.1 += buf.len() as u64;
            node.id = Some(self.store.write_new_obj_from_bytes(buf)?);
        }
        link.id = node.id;
        link.seen = epoch;
        if rewrite {
            // Shared from here on (a writer copies it before any change): the second phase
            // encodes exactly this version.
            prepared.rewrites.push((tree, Arc::clone(link.node.get().expect("loaded"))));
        }
        Ok(())
    }

    /// Drops saved node versions no open reader can need.
    fn prune_rewrites(&self) {
        // Under the lock readers register under: a reader that registers later takes the
        // committed epoch or a newer one, and versions saved by a checkpoint not yet
        // published (past the committed epoch) are kept for the readers of the old one.
        let oldest = {
            let committed = self.committed.lock();
            let readers = self.readers.lock();
            readers.keys().next().copied().unwrap_or(u64::MAX).min(committed.epoch)
        };
        let mut rewrites = self.rewrites.lock();
        if rewrites.is_empty() {
            return;
        }
        rewrites.retain(|_, versions| {
            versions.retain(|(epoch, _)| *epoch > oldest);
            !versions.is_empty()
        });
    }

    /// The saved version of `id` a reader of checkpoint `seen` needs, if a later checkpoint
    /// rewrote or freed it.
    fn rewritten(&self, id: ObjectId, seen: u64) -> Option<Arc<Node>> {
        let rewrites = self.rewrites.lock();
        rewrites
            .get(&id)?
            .iter()
            .filter(|(epoch, _)| *epoch > seen)
            .min_by_key(|(epoch, _)| *epoch)
            .map(|(_, node)| Arc::clone(node))
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> Load for Core<S> {
    /// Read from the store: an object that is not the value `r` names (its id was freed and
    /// reused: never while a reader that may name it is open) is [`Error::Corrupt`].
    fn load_value(&self, r: &ValRef) -> Result<Vec<u8>> {
        let bytes = self.store.read_bytes_from_obj(r.id)?;
        node::decode_value(r, bytes)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "B-tree value object {} no longer holds the value checkpoint {} wrote",
                r.id, r.written
            ))
        })
    }

    fn load(&self, tree: u32, link: &Link) -> Result<Arc<Node>> {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let id = link.id.ok_or_else(|| Error::Corrupt("a B-tree link names no node".into()))?;
        let read = self
            .store
            .read_bytes_from_obj(id)
            .map_err(Error::from)
            .and_then(|bytes| Node::decode(id, tree, link.seen, &bytes));
        match read {
            Ok((node, written)) if written <= link.seen => Ok(Arc::new(node)),
            other => {
                if let Some(node) = self.rewritten(id, link.seen) {
                    return Ok(Arc::new(node.stored_copy(Some(link.seen))));
                }
                match other {
                    Ok((_, written)) => Err(Error::Corrupt(format!(
                        "B-tree node {id} was written by checkpoint {written}, after checkpoint {} \
                         its parent belongs to",
                        link.seen
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Whether a read's error is damage `verify` reports (a checksum mismatch, a missing object,
/// anything the B-tree finds wrong) rather than the store failing, which it returns.
fn is_damage(e: &Error) -> bool {
    match e {
        Error::Store(e) => matches!(
            e,
            bob_store_core::Error::ChecksumMismatch { .. }
                | bob_store_core::Error::NotFound(_)
                | bob_store_core::Error::StaleId { .. }
        ),
        _ => true,
    }
}

/// A node to visit: its link, depth, and the bounds its keys must keep.
type Visit<'a> = (&'a Link, usize, Option<&'a [u8]>, Option<&'a [u8]>);

/// After a checkpoint, no node in memory may still differ from its object (a debug check of
/// the `dirty`/`below` bookkeeping: a change a checkpoint skipped would be lost at reopen).
#[cfg(debug_assertions)]
fn assert_written(link: &Link, depth: usize) {
    let Some(node) = link.node.get() else { return };
    assert!(!node.dirty && !node.below && node.id.is_some(), "a node a checkpoint did not write");
    if let Body::Branch { children, .. } = &node.body
        && depth < tree::MAX_DEPTH
    {
        for child in children {
            assert_written(child, depth + 1);
        }
    }
}

/// Bytes the nodes in memory under `link` take, about (their encoding and bookkeeping), how
/// many of them are clean leaves that could be unloaded, and the bytes of the changed nodes
/// a checkpoint has not written yet, with the long values waiting in them (counted in the
/// first too).
fn loaded_bytes(link: &Link, depth: usize) -> (u64, u64, u64) {
    let Some(node) = link.node.get() else { return (0, 0, 0) };
    let mut own = node.heap_bytes() as u64;
    if let Body::Leaf(entries) = &node.body
        && node.dirty
    {
        // Values waiting for the checkpoint (only a dirty leaf holds them).
        for val in entries.vals() {
            if let ValView::Pending(bytes) = val {
                own += bytes.len() as u64;
            }
        }
    }
    let dirty = if node.dirty { own } else { 0 };
    match &node.body {
        Body::Branch { children, .. } if depth < tree::MAX_DEPTH => children
            .iter()
            .map(|c| loaded_bytes(c, depth + 1))
            .fold((own, 0, dirty), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2)),
        Body::Leaf(_) => (own, u64::from(!node.dirty && node.id.is_some()), dirty),
        Body::Branch { .. } => (own, 0, dirty),
    }
}

/// Unloads clean, stored leaves under `link` not used since the last round, until `need`
/// bytes are freed; a used one is kept and its mark cleared (second chance: the leaves
/// readers keep using stay). The branches on the way to an unloaded leaf are copied; a
/// snapshot holding the old ones keeps what it loaded. The children of the node at `link`
/// are walked from `from` on, round the end and back; returns how many leaves went, and the
/// child where `need` was met (`from` if it never was).
fn evict(link: &mut Link, epoch: u64, depth: usize, need: &mut u64, from: usize) -> (u64, usize) {
    let Some(node) = link.node.get() else { return (0, from) };
    let Body::Branch { children, .. } = &node.body else { return (0, from) };
    if depth >= tree::MAX_DEPTH {
        return (0, from);
    }
    if *need == 0 {
        age(link, depth);
        return (0, from);
    }
    let len = children.len();
    let from = from % len.max(1);
    let order = (from..len).chain(0..from);
    // Looked at through the shared node first: marks cleared, and the leaves that may go.
    let mut unused = vec![false; len];
    let mut descend = false;
    for (i, child) in children.iter().enumerate() {
        let Some(loaded) = child.node.get() else { continue };
        match (&loaded.body, loaded.dirty, loaded.id) {
            (Body::Leaf(_), false, Some(_)) => unused[i] = !loaded.touched.take(),
            (Body::Branch { .. }, _, _) => descend = true,
            _ => {}
        }
    }
    if !descend && !unused.contains(&true) {
        return (0, from);
    }
    let node = Arc::make_mut(link.node.get_mut().expect("loaded"));
    let Body::Branch { children, .. } = &mut node.body else { return (0, from) };
    let (mut evicted, mut stopped) = (0, from);
    for i in order {
        if *need == 0 {
            // Met: the rest are only aged (their marks cleared), through the shared nodes.
            age(&children[i], depth + 1);
            continue;
        }
        stopped = i;
        let child = &mut children[i];
        let Some(loaded) = child.node.get() else { continue };
        match (&loaded.body, loaded.dirty, loaded.id) {
            // Unless used since the look above.
            (Body::Leaf(_), false, Some(id)) if unused[i] && !loaded.touched.take() => {
                *need = need.saturating_sub(loaded.heap_bytes() as u64);
                *child = Link::stored(id, epoch);
                evicted += 1;
            }
            (Body::Branch { .. }, _, _) => evicted += evict(child, epoch, depth + 1, need, 0).0,
            _ => {}
        }
    }
    (evicted, stopped)
}

/// Clears the use marks of the leaves under `link` (nothing is unloaded: a leaf not used
/// before the next round goes first then).
fn age(link: &Link, depth: usize) {
    let Some(node) = link.node.get() else { return };
    let Body::Branch { children, .. } = &node.body else {
        node.touched.take();
        return;
    };
    if depth < tree::MAX_DEPTH {
        for child in children {
            age(child, depth + 1);
        }
    }
}

/// What [`Db::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbReport {
    /// Trees.
    pub trees: u64,
    /// Nodes read.
    pub nodes: u64,
    /// Values kept in objects of their own, read and checked.
    pub values: u64,
    /// Value objects no tree holds any more, as of the last checkpoint, not deleted yet: a
    /// checkpoint deletes them once no reader of a snapshot that held them is open.
    pub deferred: u64,
    /// Entries in all trees.
    pub entries: u64,
    /// Damage found; empty when the trees are sound.
    pub problems: Vec<String>,
}

impl DbReport {
    /// No problem found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A write transaction: see [`Db::begin_write`].
///
/// A transaction stays on the thread that began it:
/// ```compile_fail
/// fn send<T: Send>(_: &T) {}
/// fn check(db: &bob_btree::Db) {
///     let txn = db.begin_write().unwrap();
///     send(&txn); // a WriteTxn is not Send
/// }
/// ```
pub struct WriteTxn<'db, S: SplitStore<Io: Clone> + PrimeStorer = DefaultStore> {
    db: &'db Core<S>,
    /// Which thread holds `pending` (for `WouldDeadlock`).
    _writer: WriterMark<'db>,
    pending: MutexGuard<'db, Pending>,
    snapshot: Snapshot,
    superseded: Vec<(ObjectId, Arc<Node>)>,
    freed: Vec<ObjectId>,
    freed_values: Vec<ValRef>,
    changed: bool,
    /// The transaction's changes as a log record (`docs/format.md`, "B-tree log record").
    log: Vec<u8>,
    /// A change failed partway: the transaction can only be aborted.
    failed: bool,
    /// Nodes this transaction made dirty.
    dirtied: u64,
}

/// Marks the thread holding the writer lock through a [`WriteTxn`]; cleared on drop, unless
/// the next writer's mark is there already (the lock may be released before the mark is
/// dropped). Not `Send` (whatever the lock's guard is), so a transaction ends on the thread
/// its mark names.
struct WriterMark<'db>(&'db Mutex<Option<ThreadId>>, ThreadId, PhantomData<*const ()>);

impl<'db> WriterMark<'db> {
    /// Marks the calling thread (which has just taken the writer lock).
    fn set(slot: &'db Mutex<Option<ThreadId>>) -> Self {
        let me = thread::current().id();
        *slot.lock() = Some(me);
        Self(slot, me, PhantomData)
    }
}

impl Drop for WriterMark<'_> {
    fn drop(&mut self) {
        let mut mark = self.0.lock();
        if *mark == Some(self.1) {
            *mark = None;
        }
    }
}

/// Records shorter than this are always logged.
const BYPASS_MIN: usize = 1 << 20;

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_CREATE: u8 = 3;
const OP_RENAME: u8 = 4;
const OP_DELETE: u8 = 5;
const OP_DROP_READABLE: u8 = 6;

fn log_name(log: &mut Vec<u8>, name: &str) {
    log.push(name.len() as u8);
    log.extend_from_slice(name.as_bytes());
}

/// Reads a log record's fields.
struct OpReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> OpReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::Corrupt("a record ends inside an operation".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn name(&mut self) -> Result<&'a str> {
        let len = usize::from(self.u8()?);
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| Error::Corrupt("a tree name in a record is not UTF-8".into()))
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> std::fmt::Debug for WriteTxn<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn").field("changed", &self.changed).finish_non_exhaustive()
    }
}

std::thread_local! {
    /// The databases (by `Core` address) whose treap change runs on this thread.
    static IN_CHANGE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks a treap change of one database running on this thread, until dropped.
struct InChange(usize);

impl InChange {
    fn enter(core: usize) -> Self {
        IN_CHANGE.with(|c| c.borrow_mut().push(core));
        Self(core)
    }

    fn active(core: usize) -> bool {
        IN_CHANGE.with(|c| c.borrow().contains(&core))
    }
}

impl Drop for InChange {
    fn drop(&mut self) {
        let _ = IN_CHANGE.try_with(|c| {
            let mut c = c.borrow_mut();
            if let Some(at) = c.iter().rposition(|&k| k == self.0) {
                c.remove(at);
            }
        });
    }
}

/// Publishes a persisted treap's root (writes it where it is kept) through the store.
type Publish<'p, 's, S> =
    dyn FnMut(&mut &'s ConcurrentStore<S>, Option<ObjectId>) -> bob_treap::Result<()> + 'p;

/// A treap the database holds for [`Db::with_treap`], its types erased.
trait HeldTreap<S: SplitStore<Io: Clone>>: Send {
    fn as_any(&mut self) -> &mut dyn std::any::Any;

    /// `persist_with` through the shared store: persist, `publish` the root, free the
    /// nodes the persisted tree no longer holds.
    fn persist_into<'s>(
        &mut self,
        store: &mut &'s ConcurrentStore<S>,
        publish: &mut Publish<'_, 's, S>,
    ) -> bob_treap::Result<Option<ObjectId>>;
}

impl<S, K, V> HeldTreap<S> for PersistentTreap<K, V>
where
    S: SplitStore<Io: Clone>,
    K: TreapKey + Send + 'static,
    V: TreapValue + Send + 'static,
{
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn persist_into<'s>(
        &mut self,
        store: &mut &'s ConcurrentStore<S>,
        publish: &mut Publish<'_, 's, S>,
    ) -> bob_treap::Result<Option<ObjectId>> {
        self.persist_with(store, |store, root| publish(store, root))
    }
}

/// One name's treap: its user (a thread: a second use from it would wait for itself) and
/// the treap, once loaded.
struct NamedTreap<S: SplitStore<Io: Clone>> {
    user: Mutex<Option<std::thread::ThreadId>>,
    treap: Mutex<Option<Box<dyn HeldTreap<S>>>>,
}

impl<S: SplitStore<Io: Clone>> Default for NamedTreap<S> {
    fn default() -> Self {
        Self { user: Mutex::new(None), treap: Mutex::new(None) }
    }
}

/// The treap of a [`NamedTreap`], taken by one caller; the user is cleared on drop.
struct HeldGuard<'a, S: SplitStore<Io: Clone>> {
    entry: &'a NamedTreap<S>,
    treap: MutexGuard<'a, Option<Box<dyn HeldTreap<S>>>>,
}

impl<S: SplitStore<Io: Clone>> NamedTreap<S> {
    /// Takes the treap, waiting for another thread using it; refused from the thread that
    /// uses it already.
    fn enter(&self) -> Result<HeldGuard<'_, S>> {
        let me = std::thread::current().id();
        if *self.user.lock() == Some(me) {
            return Err(Error::Store(bob_store_core::Error::WouldDeadlock(
                "a treap's change called the database's treap methods for the same name".into(),
            )));
        }
        let treap = self.treap.lock();
        *self.user.lock() = Some(me);
        Ok(HeldGuard { entry: self, treap })
    }
}

impl<S: SplitStore<Io: Clone>> std::ops::Deref for HeldGuard<'_, S> {
    type Target = Option<Box<dyn HeldTreap<S>>>;
    fn deref(&self) -> &Self::Target {
        &self.treap
    }
}

impl<S: SplitStore<Io: Clone>> std::ops::DerefMut for HeldGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.treap
    }
}

impl<S: SplitStore<Io: Clone>> Drop for HeldGuard<'_, S> {
    fn drop(&mut self) {
        *self.entry.user.lock() = None;
    }
}

/// A read-only view of a database's store ([`Db::store`]): reads and checks; writing
/// through the store takes [`Db::shared_store`].
pub struct StoreView<'a, S: SplitStore<Io: Clone>>(&'a ConcurrentStore<S>);

impl<S: SplitStore<Io: Clone>> std::fmt::Debug for StoreView<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreView").field(self.0).finish()
    }
}

impl<S: SplitStore<Io: Clone>> StoreView<'_, S> {
    /// The whole object, checksum checked (`ConcurrentStore::read_bytes_from_obj`).
    pub fn read_bytes_from_obj(&self, id: ObjectId) -> Result<Vec<u8>> {
        Ok(self.0.read_bytes_from_obj(id)?)
    }

    /// Starts reading objects `ids` from the device in the background, for a caller about to
    /// read them all (`ConcurrentStore::prefetch_objs`); a hint that changes no result.
    pub fn prefetch_objs(&self, ids: &[ObjectId]) {
        self.0.prefetch_objs(ids)
    }

    /// Objects in the store.
    pub fn object_count(&self) -> Result<u64> {
        Ok(self.0.object_count()?)
    }

    /// The bytes live objects and metadata take and the file's length (`None` until a lazy
    /// open is complete).
    pub fn space_in_use(&self) -> Result<Option<(u64, u64)>> {
        Ok(self.0.space_in_use()?)
    }

    /// Completes the store's lazy open now (`ConcurrentStore::complete_open`).
    pub fn complete_open(&self) -> Result<()> {
        Ok(self.0.complete_open()?)
    }

    /// How commits through the store were grouped.
    pub fn commit_stats(&self) -> bob_store_concurrent::CommitStats {
        self.0.commit_stats()
    }
}

impl<A: bob_store_core::SpaceAllocator, B: bob_io_helpers::FileBackend + Clone>
    StoreView<'_, Store<A, B>>
{
    /// Checks the whole store (`ConcurrentStore::verify`).
    pub fn verify(&self) -> Result<bob_store_core::VerifyReport> {
        Ok(self.0.verify()?)
    }

    /// Checkpoints made by this handle, and journaled commits since the last one.
    pub fn journal_counts(&self) -> (u64, u64) {
        self.0.journal_counts()
    }
}

/// A treap's error as the database's: the store's own errors stay store errors.
fn from_treap(e: bob_treap::Error) -> Error {
    match e {
        bob_treap::Error::Store(e) => Error::Store(e),
        e => Error::Codec(e),
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::TooLarge { what: "tree name", len: name.len(), max: MAX_NAME_LEN });
    }
    Ok(())
}

impl<'db, S: SplitStore<Io: Clone> + PrimeStorer> WriteTxn<'db, S> {
    /// The tree `name`, created (empty) if it does not exist.
    pub fn open_tree<K: Key, V: Value>(&mut self, name: &str) -> Result<TreeMut<'_, K, V>> {
        self.check_usable()?;
        check_name(name)?;
        if !self.snapshot.trees.contains_key(name) {
            let id = self.snapshot.next_tree;
            self.snapshot.next_tree = id
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt("the tree ids are used up".into()))?;
            let root = Link::loaded(Node::empty_leaf(), self.snapshot.epoch);
            self.snapshot.trees.insert(name.to_owned(), TreeState { id, root, len: 0 });
            self.changed = true;
            self.log.push(OP_CREATE);
            self.log.extend_from_slice(&id.to_le_bytes());
            log_name(&mut self.log, name);
        }
        let state = self.snapshot.trees.get_mut(name).expect("inserted above");
        Ok(TreeMut {
            db: self.db,
            state,
            superseded: &mut self.superseded,
            freed: &mut self.freed,
            freed_values: &mut self.freed_values,
            dirtied: &mut self.dirtied,
            log: &mut self.log,
            changed: &mut self.changed,
            failed: &mut self.failed,
            _types: PhantomData,
        })
    }

    /// The names of the trees, in order.
    pub fn list_trees(&self) -> Vec<String> {
        self.snapshot.trees.keys().cloned().collect()
    }

    /// Renames tree `from` to `to`; false if there is no tree `from`. A tree `to` is an error.
    pub fn rename_tree(&mut self, from: &str, to: &str) -> Result<bool> {
        self.check_usable()?;
        check_name(to)?;
        if self.snapshot.trees.contains_key(to) {
            return Err(Error::TreeExists(to.to_owned()));
        }
        let Some(state) = self.snapshot.trees.remove(from) else { return Ok(false) };
        self.snapshot.trees.insert(to.to_owned(), state);
        self.changed = true;
        self.log.push(OP_RENAME);
        log_name(&mut self.log, from);
        log_name(&mut self.log, to);
        Ok(true)
    }

    /// Deletes tree `name` and its entries; false if there is none. Its nodes are all read
    /// to free their objects; if one cannot be read, the transaction fails (it can only be
    /// aborted).
    pub fn delete_tree(&mut self, name: &str) -> Result<bool> {
        self.check_usable()?;
        let Some(state) = self.snapshot.trees.get(name) else { return Ok(false) };
        let mut saved = Vec::new();
        let mut ids = Vec::new();
        let mut values = Vec::new();
        let mut visited = std::collections::HashSet::new();
        let mut stack = vec![(&state.root, 0usize)];
        while let Some((link, depth)) = stack.pop() {
            if depth >= tree::MAX_DEPTH {
                return Err(Error::Corrupt("a B-tree path is too deep to delete".into()));
            }
            let node = tree::node(self.db, state.id, link)?;
            if let Some(id) = node.id {
                if !visited.insert(id) {
                    return Err(Error::Corrupt(format!("object {id} holds two nodes of {name:?}")));
                }
                if !node.dirty {
                    saved.push((id, Arc::clone(link.node.get().expect("loaded"))));
                }
                ids.push(id);
            }
            match &node.body {
                Body::Branch { children, .. } => {
                    stack.extend(children.iter().map(|c| (c, depth + 1)));
                }
                Body::Leaf(entries) => {
                    values.extend(entries.vals().filter_map(ValView::stored).copied())
                }
            }
        }
        // Nothing has changed until every node was read.
        self.snapshot.trees.remove(name);
        self.superseded.extend(saved);
        self.freed.extend(ids);
        self.freed_values.extend(values);
        self.changed = true;
        self.log.push(OP_DELETE);
        log_name(&mut self.log, name);
        Ok(true)
    }

    /// Replaces tree `name` (an index found damaged, say) with a new one bulk-loaded from
    /// `entries` (strictly increasing keys, e.g. from the data the index was built over).
    /// The old tree's nodes that can still be read are freed, and so are the objects of the
    /// unreadable ones their parents name; returns how many nodes could not be read (their
    /// subtrees' objects stay allocated, as the damage left them).
    pub fn rebuild_tree<K: Key, V: Value>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<u64> {
        self.check_usable()?;
        check_name(name)?;
        // A failure partway leaves the tree half dropped: the transaction can only be aborted.
        let unreadable = self.drop_readable(name).inspect_err(|_| self.failed = true)?;
        if unreadable.is_some() {
            self.log.push(OP_DROP_READABLE);
            log_name(&mut self.log, name);
        }
        let mut tree = self.open_tree::<K, V>(name)?;
        let loaded = tree.bulk_load(entries);
        if loaded.is_err() {
            self.failed = true;
        }
        loaded?;
        Ok(unreadable.unwrap_or(0))
    }

    /// Removes tree `name`, freeing every node that can be read and the objects its readable
    /// nodes name; `None` if there is no such tree, else how many nodes could not be read.
    fn drop_readable(&mut self, name: &str) -> Result<Option<u64>> {
        let Some(state) = self.snapshot.trees.remove(name) else { return Ok(None) };
        let mut unreadable = 0;
        let mut visited = std::collections::HashSet::new();
        let mut visited_values = std::collections::HashSet::new();
        let mut stack = vec![(&state.root, 0usize)];
        while let Some((link, depth)) = stack.pop() {
            let node = match tree::node(self.db, state.id, link) {
                Ok(node) if depth < tree::MAX_DEPTH => node,
                Ok(_) => {
                    unreadable += 1; // too deep: its objects are not this walk's to free
                    continue;
                }
                Err(e) => {
                    unreadable += 1;
                    let Some(id) = link.id else { continue };
                    // Free only an object that exists and fails as this tree's node: a
                    // missing one is gone already, one that is another tree's node is not
                    // ours, and a read error says nothing (it is returned).
                    let ours = match e {
                        Error::Store(
                            bob_store_core::Error::NotFound(_)
                            | bob_store_core::Error::StaleId { .. },
                        ) => false,
                        Error::Store(
                            bob_store_core::Error::ChecksumMismatch { .. }
                            | bob_store_core::Error::Corrupt { .. },
                        ) => true,
                        Error::Store(other) => return Err(other.into()),
                        _ => !self.db.another_trees_node(id, state.id)?,
                    };
                    if ours && visited.insert(id) {
                        self.freed.push(id);
                    }
                    continue;
                }
            };
            if let Some(id) = node.id {
                if !visited.insert(id) {
                    continue; // a crafted tree naming a node twice
                }
                if !node.dirty {
                    self.superseded.push((id, Arc::clone(link.node.get().expect("loaded"))));
                }
                self.freed.push(id);
            }
            match &node.body {
                Body::Branch { children, .. } => {
                    stack.extend(children.iter().map(|c| (c, depth + 1)));
                }
                Body::Leaf(entries) => {
                    // A crafted tree naming a value object twice: freed once.
                    for r in entries.vals().filter_map(ValView::stored) {
                        if visited_values.insert(r.id) {
                            self.freed_values.push(*r);
                        }
                    }
                }
            }
        }
        self.changed = true;
        Ok(Some(unreadable))
    }

    /// Applies one log record's operations (at open, replaying the log).
    fn apply_record(&mut self, record: &[u8]) -> Result<()> {
        let mut r = OpReader { bytes: record, at: 0 };
        while r.at < record.len() {
            match r.u8()? {
                op @ (OP_PUT | OP_REMOVE) => {
                    let id = r.u32()?;
                    let key_len = usize::from(r.u16()?);
                    let val_len = if op == OP_PUT { r.u32()? as usize } else { 0 };
                    if key_len > MAX_KEY_LEN || val_len > MAX_VALUE_LEN {
                        return Err(Error::Corrupt(format!(
                            "an entry of {key_len} + {val_len} bytes is past the limits"
                        )));
                    }
                    let key = r.take(key_len)?;
                    let val = r.take(val_len)?;
                    let state =
                        self.snapshot.trees.values_mut().find(|t| t.id == id).ok_or_else(|| {
                            Error::Corrupt(format!(
                                "an operation on tree {id}, which does not exist"
                            ))
                        })?;
                    let mut edit = Edit {
                        ld: self.db,
                        tree: id,
                        superseded: &mut self.superseded,
                        freed: &mut self.freed,
                        freed_values: &mut self.freed_values,
                        dirtied: &mut self.dirtied,
                        read_old: false,
                        old_bytes: None,
                        untouched: false,
                    };
                    if op == OP_PUT {
                        if edit.insert(&mut state.root, key, val)?.is_none() {
                            state.len += 1;
                        }
                    } else if edit.remove(&mut state.root, key)?.is_some() {
                        state.len = state.len.checked_sub(1).ok_or_else(|| {
                            Error::Corrupt(format!("tree {id} holds more entries than it counts"))
                        })?;
                    }
                }
                OP_CREATE => {
                    let id = r.u32()?;
                    let name = r.name()?;
                    if id != self.snapshot.next_tree || self.snapshot.trees.contains_key(name) {
                        return Err(Error::Corrupt(format!("tree {name:?} created twice")));
                    }
                    self.open_tree::<Vec<u8>, Vec<u8>>(name)?;
                }
                OP_RENAME => {
                    let (from, to) = (r.name()?, r.name()?);
                    if !self.rename_tree(from, to)? {
                        return Err(Error::Corrupt(format!("tree {from:?} renamed, not there")));
                    }
                }
                OP_DELETE => {
                    // As a rebuild's drop: a node damaged since the delete was acknowledged
                    // must not make the open fail over a tree that is gone.
                    let name = r.name()?;
                    if self.drop_readable(name)?.is_none() {
                        return Err(Error::Corrupt(format!("tree {name:?} deleted, not there")));
                    }
                    self.log.push(OP_DELETE);
                    log_name(&mut self.log, name);
                }
                OP_DROP_READABLE => {
                    let name = r.name()?;
                    if self.drop_readable(name)?.is_none() {
                        return Err(Error::Corrupt(format!("tree {name:?} rebuilt, not there")));
                    }
                }
                other => return Err(Error::Corrupt(format!("unknown log operation {other}"))),
            }
        }
        Ok(())
    }

    /// Makes the transaction's changes the last commit, durable as `durability` says.
    ///
    /// The commit is visible to readers once its log record is written; a
    /// [`Durability::Durable`] commit then returns once the record is synced, in a sync it
    /// shares with the durable commits of other threads that wrote their records meanwhile
    /// (group commit). An error from the log's write or sync leaves the outcome unknown, as
    /// a failed `fdatasync` does: the database refuses writes until it is reopened, and the
    /// reopened database may or may not hold the commit (readers may have seen it). A commit
    /// made durable by the checkpoint it runs (past [`DbOptions::checkpoint_after_bytes`])
    /// returns `Ok` even if releasing the log after it fails; that failure latches the
    /// database, and the next write reports it. A failed checkpoint fails a durable commit
    /// (its record may not be synced) and latches the database. A thread holding a guard of
    /// the shared store ([`Db::shared_store`]), or its commits
    /// ([`ConcurrentStore::hold_commits`]), runs no checkpoint (it could not hold the store's
    /// commits): its commit is logged and synced, and a later one (or the persistence
    /// thread) checkpoints; a commit only a checkpoint could make (durable without a log, or
    /// a record too long for the log) is refused with `WouldDeadlock`, nothing of it made.
    pub fn commit(self, durability: Durability) -> Result<()> {
        let WriteTxn {
            db,
            _writer,
            mut pending,
            mut snapshot,
            superseded,
            freed,
            freed_values,
            changed,
            log,
            failed,
            dirtied,
        } = self;
        if failed {
            return Err(Error::TransactionFailed);
        }
        db.check_writable()?;
        let durable = durability == Durability::Durable;
        // A thread holding a guard of the shared store, or the store's commits, cannot run a
        // checkpoint: its hold on the store's commits would be refused. A commit that could
        // only be made by one (durable without a log, or a record too long for the log) is
        // refused here, before anything of it is handed on; any other is logged, and a later
        // commit or the persistence thread checkpoints. (A refusal after the changes' freed
        // nodes went to `pending` left the next checkpoint deleting nodes the committed
        // trees still held: a helper's review.)
        let no_checkpoint = db.store.thread_holds_guards() || db.store.thread_holds_commits();
        let log_refuses = db.wal.is_some() && Wal::check_len(&log).is_err();
        let refuse = || {
            Err(Error::Store(bob_store_core::Error::WouldDeadlock(
                "a commit that must run a checkpoint (durable without a log, or a record too \
                 long for the log) while this thread holds a guard or the commits of the \
                 database's store: drop them first"
                    .into(),
            )))
        };
        // A durable commit without a log with nothing to write runs no checkpoint, but waits
        // for the one running now (it is a barrier for earlier unsynced commits); a thread
        // that cannot run one does not wait, since that checkpoint (or a treap's save, which
        // takes the same lock before the store's commits) may be waiting for this thread's
        // hold or guard (a helper's review).
        let mut ckpt_held = None;
        if no_checkpoint && db.wal.is_none() && durable {
            if changed || pending.changed {
                return refuse();
            }
            match db.ckpt.try_lock() {
                Some(ckpt) => ckpt_held = Some(ckpt),
                None => return refuse(),
            }
        }
        if no_checkpoint && log_refuses {
            return refuse();
        }
        pending.dirtied += dirtied;
        // A record about as large as the nodes the next checkpoint writes anyway (a load in
        // big commits) is not logged: the commit is a checkpoint, so its bytes are written
        // once. (Commits of scattered changes log far fewer bytes than the nodes they dirty.)
        // A record too long for the log (long values) is never logged either.
        if db.wal.is_some()
            && !no_checkpoint
            && ((log.len() >= BYPASS_MIN
                && log.len() as u64 >= pending.dirtied * NODE_TARGET as u64 / 2)
                || log_refuses)
        {
            pending.superseded.extend(superseded);
            pending.freed.extend(freed);
            pending.freed_values.extend(freed_values);
            pending.changed = true;
            if log.capacity() <= LOG_BUF_KEEP {
                let mut log = log;
                log.clear();
                pending.log_buf = log;
            }
            // Durable once the checkpoint's store commit is: a failure after it latches.
            let ckpt = db.ckpt.lock();
            return db.checkpoint_locked(&mut pending, &ckpt, snapshot, true, false).map(|_| ());
        }
        if db.wal.is_some() {
            Wal::check_len(&log)?;
        }
        let Some(wal) = &db.wal else {
            pending.superseded.extend(superseded);
            pending.freed.extend(freed);
            pending.freed_values.extend(freed_values);
            pending.changed |= changed;
            if durable {
                let ckpt = ckpt_held.unwrap_or_else(|| db.ckpt.lock());
                return db
                    .checkpoint_locked(&mut pending, &ckpt, snapshot, false, false)
                    .map(|_| ());
            }
            db.stats.lock().dirty_nodes = pending.dirtied;
            db.publish(Arc::new(snapshot));
            return Ok(());
        };
        // The record is written here, under the writer lock; a durable commit syncs it after
        // the lock is released, in a sync it shares with every commit that wrote its record
        // meanwhile (group commit).
        let logged = {
            let mut wal = wal.lock();
            let appended = match (log.is_empty(), durable) {
                (true, _) => Ok(None),
                (false, true) => wal.append_padded(&log).map(Some),
                (false, false) => wal.append(&log, false).map(Some),
            };
            db.latch(appended).map(|lsn| (lsn, wal.since_release()))
        };
        let (lsn, log_bytes) = logged?;
        if log.capacity() <= LOG_BUF_KEEP {
            let mut log = log;
            log.clear();
            pending.log_buf = log;
        }
        {
            let mut stats = db.stats.lock();
            if let Some(lsn) = lsn {
                snapshot.lsn = lsn;
                stats.logged_commits += 1;
            }
            stats.dirty_nodes = pending.dirtied;
        }
        pending.freed.extend(freed);
        pending.freed_values.extend(freed_values);
        pending.changed |= changed;
        let snapshot = Arc::new(snapshot);
        if db.publish(Arc::clone(&snapshot)) {
            pending.superseded.extend(superseded);
        } else {
            // No reader was open when this commit was published: none can ever load a node
            // as its object held it before a commit up to this one (a reader from now on
            // takes this snapshot or a later one, which name the new versions), so the saved
            // versions go now rather than at the next checkpoint.
            pending.superseded.clear();
            drop(superseded);
        }
        let mut checkpointed = None;
        // A checkpoint already between its phases releases the log once written: this
        // commit does not wait for it (holding writers off) to start another. Nor does a
        // thread that cannot run one (`no_checkpoint`): the commit, published, would report
        // the refusal; its record is synced below instead.
        if log_bytes >= db.checkpoint_after_bytes
            && !no_checkpoint
            && let Some(ckpt) = db.ckpt.try_lock()
        {
            // The commit is visible; a failure here latches the database. Writers go on
            // once the first phase is done.
            let prepared =
                db.checkpoint_prepare(&mut pending, &ckpt, Snapshot::clone(&snapshot), true, true);
            drop(pending);
            checkpointed = Some(
                prepared
                    .and_then(|p| p.map(|p| db.checkpoint_write(&ckpt, p)).transpose())
                    .map(Option::flatten),
            );
        } else {
            drop(pending);
        }
        match checkpointed {
            // The checkpoint's store commit is durable, and the commit with it (a failure to
            // release the log after it latched the database).
            Some(Ok(_)) => Ok(()),
            // A durable commit's outcome is unknown: its record may not have been synced.
            Some(Err(e)) if durable => Err(e),
            _ if durable => db.sync_log(),
            _ => Ok(()),
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed { Err(Error::TransactionFailed) } else { Ok(()) }
    }

    /// Discards the transaction's changes (as dropping it does).
    pub fn abort(self) {}
}

/// A read snapshot: see [`Db::begin_read`].
pub struct ReadTxn<'db, S: SplitStore<Io: Clone> + PrimeStorer = DefaultStore> {
    db: &'db Core<S>,
    snapshot: Arc<Snapshot>,
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> std::fmt::Debug for ReadTxn<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn").field("epoch", &self.snapshot.epoch).finish_non_exhaustive()
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> Drop for ReadTxn<'_, S> {
    fn drop(&mut self) {
        let mut readers = self.db.readers.lock();
        if let Some(count) = readers.get_mut(&self.snapshot.epoch) {
            *count -= 1;
            if *count == 0 {
                readers.remove(&self.snapshot.epoch);
            }
        }
        drop(readers);
        self.db.prune_rewrites();
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> ReadTxn<'_, S> {
    /// The tree `name`, if it exists in this snapshot.
    pub fn open_tree<K: Key, V: Value>(&self, name: &str) -> Option<Tree<'_, K, V>> {
        let state = self.snapshot.trees.get(name)?;
        Some(Tree { ld: self.db, state, _types: PhantomData })
    }

    /// The names of the trees, in order.
    pub fn list_trees(&self) -> Vec<String> {
        self.snapshot.trees.keys().cloned().collect()
    }
}

impl<'db, S: SplitStore<Io: Clone> + PrimeStorer> ReadTxn<'db, S> {
    /// The tree `name` of this snapshot, as a handle that owns the snapshot: what a reader
    /// keeps for many lookups, each then without [`open_tree`](Self::open_tree)'s lookup by
    /// name. `Ok(None)` if there is no such tree; an error if its root node cannot be read
    /// (it is loaded here; the snapshot is dropped with the error).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use bob_btree::{Db, Durability};
    ///
    /// let db = Db::create(dir.path().join("kv.bob"))?;
    /// let mut tx = db.begin_write()?;
    /// tx.open_tree::<String, u64>("counts")?.insert("apples", &3)?;
    /// tx.commit(Durability::Durable)?;
    ///
    /// let counts = db.begin_read().into_tree::<String, u64>("counts")?.expect("created above");
    /// for _ in 0..3 {
    ///     assert_eq!(counts.tree().get("apples")?, Some(3));
    /// }
    /// # Ok::<(), bob_btree::Error>(())
    /// ```
    pub fn into_tree<K: Key, V: Value>(self, name: &str) -> Result<Option<ReadTree<'db, K, V, S>>> {
        let Some(state) = self.snapshot.trees.get(name) else { return Ok(None) };
        // Loaded through the snapshot's own link first, so that the handle's copy of the
        // link shares the root (and every node below it) with the snapshot instead of
        // loading a copy of its own.
        tree::node(self.db, state.id, &state.root)?;
        let state = state.clone();
        Ok(Some(ReadTree { txn: self, state, _types: PhantomData }))
    }
}

/// A tree of a read snapshot that owns the snapshot: see [`ReadTxn::into_tree`]. It holds
/// the snapshot (and what the snapshot keeps from reuse) until it is dropped, as the
/// [`ReadTxn`] it came from would.
pub struct ReadTree<'db, K, V, S: SplitStore<Io: Clone> + PrimeStorer = DefaultStore> {
    txn: ReadTxn<'db, S>,
    state: TreeState,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, S: SplitStore<Io: Clone> + PrimeStorer> std::fmt::Debug for ReadTree<'_, K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTree")
            .field("epoch", &self.txn.snapshot.epoch)
            .field("id", &self.state.id)
            .field("len", &self.state.len)
            .finish()
    }
}

impl<'db, K: Key, V: Value, S: SplitStore<Io: Clone> + PrimeStorer> ReadTree<'db, K, V, S> {
    /// The tree, for lookups and ranges (made without a lookup: as cheap as a reference).
    pub fn tree(&self) -> Tree<'_, K, V> {
        Tree { ld: self.txn.db, state: &self.state, _types: PhantomData }
    }

    /// The snapshot it reads.
    pub fn txn(&self) -> &ReadTxn<'db, S> {
        &self.txn
    }
}

/// A key's encoding (of any length: lookups and bounds may be longer than a stored key).
fn encode_key<K: Key, Q: KeyLike<K> + ?Sized>(key: &Q) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    key.encode_key(&mut out);
    Ok(out)
}

fn check_key_len(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::TooLarge { what: "key", len: key.len(), max: MAX_KEY_LEN });
    }
    Ok(())
}

fn encode_value<V: Value>(value: &V) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    value.encode(&mut out)?;
    check_value_len(&out)?;
    Ok(out)
}

fn check_value_len(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::TooLarge { what: "value", len: value.len(), max: MAX_VALUE_LEN });
    }
    Ok(())
}

fn encode_bound<K: Key, Q: KeyLike<K> + ?Sized>(bound: Bound<&Q>) -> Result<Bound<Vec<u8>>> {
    Ok(match bound {
        Bound::Included(k) => Bound::Included(encode_key(k)?),
        Bound::Excluded(k) => Bound::Excluded(encode_key(k)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

/// A tree as a snapshot sees it: lookups and ordered ranges.
pub struct Tree<'a, K, V> {
    ld: &'a dyn Load,
    state: &'a TreeState,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for Tree<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("id", &self.state.id).field("len", &self.state.len).finish()
    }
}

impl<'a, K: Key, V: Value> Tree<'a, K, V> {
    /// Its number of entries.
    pub fn len(&self) -> u64 {
        self.state.len
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.state.len == 0
    }

    /// The value under `key`.
    pub fn get<Q: KeyLike<K> + ?Sized>(&self, key: &Q) -> Result<Option<V>> {
        let key = key.encoded_key();
        if key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        match tree::get(self.ld, self.state.id, &self.state.root, &key)? {
            Some(v) => Ok(Some(V::decode(&tree::value(self.ld, v)?)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: KeyLike<K> + ?Sized>(&self, key: &Q) -> Result<bool> {
        let key = key.encoded_key();
        if key.len() > MAX_KEY_LEN {
            return Ok(false);
        }
        Ok(tree::get(self.ld, self.state.id, &self.state.root, &key)?.is_some())
    }

    /// The entries with keys in `range`, in key order (and reversible).
    pub fn range<Q: KeyLike<K> + ?Sized, R: RangeBounds<Q>>(
        &self,
        range: R,
    ) -> Result<Range<'a, K, V>> {
        let lower = encode_bound::<K, Q>(range.start_bound())?;
        let upper = encode_bound::<K, Q>(range.end_bound())?;
        let raw = RawIter::new(self.ld, self.state.id, &self.state.root, lower, upper);
        Ok(Range { raw, _types: PhantomData })
    }

    /// The entries with keys in `range` as their encoded bytes, borrowed from the snapshot
    /// (no copy or allocation per entry, but for a value kept in an object of its own, which
    /// is read), in key order and reversible.
    pub fn range_bytes<Q: KeyLike<K> + ?Sized, R: RangeBounds<Q>>(
        &self,
        range: R,
    ) -> Result<RangeBytes<'a>> {
        let lower = encode_bound::<K, Q>(range.start_bound())?;
        let upper = encode_bound::<K, Q>(range.end_bound())?;
        Ok(RangeBytes(RawIter::new(self.ld, self.state.id, &self.state.root, lower, upper)))
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Result<Range<'a, K, V>> {
        self.range::<K, _>(..)
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Result<Option<(K, V)>> {
        self.iter()?.next().transpose()
    }

    /// The entry with the largest key.
    pub fn last(&self) -> Result<Option<(K, V)>> {
        self.iter()?.next_back().transpose()
    }
}

/// The entries of a range, decoded: see [`Tree::range`].
pub struct Range<'a, K, V> {
    raw: RawIter<'a>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for Range<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Range").finish_non_exhaustive()
    }
}

/// Encoded entries of a range, borrowed: see [`Tree::range_bytes`].
pub struct RangeBytes<'a>(RawIter<'a>);

impl std::fmt::Debug for RangeBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeBytes").finish_non_exhaustive()
    }
}

impl<'a> Iterator for RangeBytes<'a> {
    type Item = Result<(&'a [u8], Cow<'a, [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let ld = self.0.loader();
        self.0.next_entry().map(|e| e.and_then(|(k, v)| Ok((k, tree::value(ld, v)?))))
    }
}

impl DoubleEndedIterator for RangeBytes<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let ld = self.0.loader();
        self.0.next_back_entry().map(|e| e.and_then(|(k, v)| Ok((k, tree::value(ld, v)?))))
    }
}

fn decode_entry<K: Key, V: Value>(
    ld: &dyn Load,
    entry: Result<(&[u8], ValView<'_>)>,
) -> Result<(K, V)> {
    let (k, v) = entry?;
    Ok((K::decode(k)?, V::decode(&tree::value(ld, v)?)?))
}

impl<K: Key, V: Value> Iterator for Range<'_, K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        let ld = self.raw.loader();
        self.raw.next_entry().map(|e| decode_entry(ld, e))
    }
}

impl<K: Key, V: Value> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let ld = self.raw.loader();
        self.raw.next_back_entry().map(|e| decode_entry(ld, e))
    }
}

/// A tree inside a write transaction: changes, and reads that see them.
pub struct TreeMut<'a, K, V> {
    db: &'a dyn Load,
    state: &'a mut TreeState,
    superseded: &'a mut Vec<(ObjectId, Arc<Node>)>,
    freed: &'a mut Vec<ObjectId>,
    freed_values: &'a mut Vec<ValRef>,
    dirtied: &'a mut u64,
    log: &'a mut Vec<u8>,
    changed: &'a mut bool,
    failed: &'a mut bool,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for TreeMut<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeMut").field("id", &self.state.id).field("len", &self.state.len).finish()
    }
}

impl<K: Key, V: Value> TreeMut<'_, K, V> {
    /// The tree as this transaction sees it, for reads.
    pub fn view(&self) -> Tree<'_, K, V> {
        Tree { ld: self.db, state: self.state, _types: PhantomData }
    }

    fn edit(&mut self, read_old: bool) -> (Edit<'_>, &mut Link) {
        (
            Edit {
                ld: self.db,
                tree: self.state.id,
                superseded: self.superseded,
                freed: self.freed,
                freed_values: self.freed_values,
                dirtied: self.dirtied,
                read_old,
                old_bytes: None,
                untouched: false,
            },
            &mut self.state.root,
        )
    }

    /// Its number of entries.
    pub fn len(&self) -> u64 {
        self.state.len
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.state.len == 0
    }

    /// The value under `key`.
    pub fn get<Q: KeyLike<K> + ?Sized>(&self, key: &Q) -> Result<Option<V>> {
        self.view().get(key)
    }

    /// Puts `value` under `key`; returns the value it replaced. A key longer than
    /// [`MAX_KEY_LEN`] or a value longer than [`MAX_VALUE_LEN`] encoded bytes is
    /// [`Error::TooLarge`] (nothing changes). A value longer than
    /// [`MAX_INLINE_VALUE_LEN`](crate::MAX_INLINE_VALUE_LEN) is kept in memory until the next
    /// checkpoint writes it to an object of its own. A replaced value kept in such an object
    /// is read to be returned, before anything changes (if that read fails, nothing
    /// changes and the transaction goes on; [`put`](Self::put) does not read it). If the
    /// change fails partway (a node cannot be read, or the old value does not decode as
    /// `V`), the transaction can only be aborted.
    pub fn insert<Q: KeyLike<K> + ?Sized, W: ValueLike<V> + ?Sized>(
        &mut self,
        key: &Q,
        value: &W,
    ) -> Result<Option<V>> {
        let (old, bytes) = self.put_encoded(key, value, true)?;
        self.decode_old(old, bytes)
    }

    /// Puts `value` under `key`, as [`insert`](Self::insert) does, without reading or
    /// decoding the value it replaces; returns whether there was one. `value` may be a
    /// borrowed form (`[u8]` for `Vec<u8>`, `str` for `String`): nothing is built to store it.
    pub fn put<Q: KeyLike<K> + ?Sized, W: ValueLike<V> + ?Sized>(
        &mut self,
        key: &Q,
        value: &W,
    ) -> Result<bool> {
        Ok(self.put_encoded(key, value, false)?.0.is_some())
    }

    /// The change of [`insert`](Self::insert) and [`put`](Self::put): the replaced value,
    /// and its bytes if `read_old` and it was kept in an object of its own.
    fn put_encoded<Q: KeyLike<K> + ?Sized, W: ValueLike<V> + ?Sized>(
        &mut self,
        key: &Q,
        value: &W,
        read_old: bool,
    ) -> Result<(Option<Val>, Option<Vec<u8>>)> {
        if *self.failed {
            return Err(Error::TransactionFailed);
        }
        let key = key.encoded_key();
        check_key_len(&key)?;
        let value = value.encoded_value()?;
        check_value_len(&value)?;
        // The value's bytes are copied into the leaf at the end of the descent: fetched from
        // memory meanwhile, not once each level's copy-on-write check (an atomic operation,
        // which waits for earlier loads) has waited for the last put's. A sorted load of
        // 150-byte values from a shuffled heap: puts 1.25-1.4x faster (docs/benchmarks.md).
        node::prefetch(&value[..value.len().min(MAX_INLINE_VALUE_LEN)]);
        let (mut edit, root) = self.edit(read_old);
        let result = edit.insert(root, &key, &value);
        let (untouched, bytes) = (edit.untouched, edit.old_bytes.take());
        let old = match result {
            Ok(old) => old,
            Err(e) => {
                if !untouched {
                    *self.failed = true;
                }
                return Err(e);
            }
        };
        if old.is_none() {
            self.state.len += 1;
        }
        *self.changed = true;
        self.log.push(OP_PUT);
        self.log.extend_from_slice(&self.state.id.to_le_bytes());
        self.log.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.log.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.log.extend_from_slice(&key);
        self.log.extend_from_slice(&value);
        Ok((old, bytes))
    }

    /// The replaced or removed value (`bytes`: read from its object), decoded; a value that
    /// does not decode fails the transaction (the change is made and logged, so it can only
    /// be aborted).
    fn decode_old(&mut self, old: Option<Val>, bytes: Option<Vec<u8>>) -> Result<Option<V>> {
        let decoded = match (&old, bytes) {
            (None, _) => Ok(None),
            (Some(_), Some(bytes)) => V::decode(&bytes).map(Some).map_err(Error::from),
            (Some(Val::Inline(b) | Val::Pending(b)), None) => {
                V::decode(b).map(Some).map_err(Error::from)
            }
            (Some(Val::Stored(_)), None) => unreachable!("a stored old value is read first"),
        };
        if decoded.is_err() {
            *self.failed = true;
        }
        decoded
    }

    /// Removes `key`; returns its value. A value kept in an object of its own is read
    /// before anything changes, as for [`insert`](Self::insert); a failure partway fails the
    /// transaction.
    pub fn remove<Q: KeyLike<K> + ?Sized>(&mut self, key: &Q) -> Result<Option<V>> {
        let (old, bytes) = self.remove_encoded(key, true)?;
        self.decode_old(old, bytes)
    }

    /// Removes `key`, as [`remove`](Self::remove) does, without reading or decoding its
    /// value; returns whether it was there.
    pub fn delete<Q: KeyLike<K> + ?Sized>(&mut self, key: &Q) -> Result<bool> {
        Ok(self.remove_encoded(key, false)?.0.is_some())
    }

    fn remove_encoded<Q: KeyLike<K> + ?Sized>(
        &mut self,
        key: &Q,
        read_old: bool,
    ) -> Result<(Option<Val>, Option<Vec<u8>>)> {
        if *self.failed {
            return Err(Error::TransactionFailed);
        }
        let key = encode_key(key)?;
        if key.len() > MAX_KEY_LEN {
            return Ok((None, None)); // never stored
        }
        let (mut edit, root) = self.edit(read_old);
        let result = edit.remove(root, &key);
        let (untouched, bytes) = (edit.untouched, edit.old_bytes.take());
        let old = match result {
            Ok(old) => old,
            Err(e) => {
                if !untouched {
                    *self.failed = true;
                }
                return Err(e);
            }
        };
        if old.is_some() {
            self.state.len = self.state.len.saturating_sub(1);
            *self.changed = true;
            self.log.push(OP_REMOVE);
            self.log.extend_from_slice(&self.state.id.to_le_bytes());
            self.log.extend_from_slice(&(key.len() as u16).to_le_bytes());
            self.log.extend_from_slice(&key);
        }
        Ok((old, bytes))
    }

    /// Fills this empty tree from `entries` in strictly increasing key order, nodes filled
    /// left to right (a load costs no splits, and its nodes are about 7/8 full). Returns
    /// how many entries. A tree that is not empty is [`Error::NotEmpty`]; keys out of order
    /// are [`Error::Unsorted`]; either way, and on a key or value past the limits, nothing
    /// changes.
    pub fn bulk_load(&mut self, entries: impl IntoIterator<Item = (K, V)>) -> Result<u64> {
        if *self.failed {
            return Err(Error::TransactionFailed);
        }
        if self.state.len != 0 {
            return Err(Error::NotEmpty);
        }
        let tree = self.state.id;
        let mut log = Vec::new();
        let mut encoded = entries.into_iter().map(|(k, v)| {
            let mut key = Vec::new();
            k.encode(&mut key);
            check_key_len(&key)?;
            let value = encode_value(&v)?;
            log.push(OP_PUT);
            log.extend_from_slice(&tree.to_le_bytes());
            log.extend_from_slice(&(key.len() as u16).to_le_bytes());
            log.extend_from_slice(&(value.len() as u32).to_le_bytes());
            log.extend_from_slice(&key);
            log.extend_from_slice(&value);
            Ok((key, value))
        });
        let mut dirtied = 0;
        let (root, count) = tree::build(&mut encoded, self.state.root.seen, &mut dirtied)?;
        drop(encoded);
        // The empty root leaf it replaces leaves the tree.
        let old = tree::node(self.db, tree, &self.state.root)?;
        if let Some(id) = old.id {
            if !old.dirty {
                let saved = Arc::clone(self.state.root.node.get().expect("loaded"));
                self.superseded.push((id, saved));
            }
            self.freed.push(id);
        }
        self.state.root = root;
        self.state.len = count;
        *self.dirtied += dirtied;
        *self.changed = true;
        self.log.extend_from_slice(&log);
        Ok(count)
    }

    /// Removes the entries with keys in `range` and returns them, in key order.
    pub fn drain_range<Q: KeyLike<K> + ?Sized, R: RangeBounds<Q>>(
        &mut self,
        range: R,
    ) -> Result<Vec<(K, V)>> {
        let entries: Vec<(K, V)> = self.view().range(range)?.collect::<Result<_>>()?;
        for (k, _) in &entries {
            self.delete::<K>(k)?;
        }
        Ok(entries)
    }

    /// Removes the entries with keys in `range` for which `keep` is false; returns how many.
    pub fn retain_range<Q: KeyLike<K> + ?Sized, R: RangeBounds<Q>>(
        &mut self,
        range: R,
        mut keep: impl FnMut(&K, &V) -> bool,
    ) -> Result<u64> {
        let mut doomed = Vec::new();
        for entry in self.view().range(range)? {
            let (k, v) = entry?;
            if !keep(&k, &v) {
                doomed.push(k);
            }
        }
        for k in &doomed {
            self.delete::<K>(k)?;
        }
        Ok(doomed.len() as u64)
    }
}
