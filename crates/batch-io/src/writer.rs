//! `BatchWriter`: bounded parallel writes into a [`Sink`] (a store, a tree, a cache), one
//! result per item in input order, one durable commit per batch.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use bob_io_helpers::DiskTokenManager;
use bob_io_helpers::sync::Mutex;
use bob_io_helpers::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::{Error, Result};

/// Where a [`BatchWriter`] writes: items, then a commit that makes every finished write
/// durable. `write` is called from several threads at once.
pub trait Sink<K>: Sync {
    /// What a written item gives back (an object's id, say).
    type Output: Clone + Send;

    /// Writes one item; it is durable once a later [`commit`](Self::commit) returns `Ok`.
    fn write(&self, key: &K, bytes: &[u8]) -> Result<Self::Output>;

    /// Makes every finished write durable.
    fn commit(&self) -> Result<()>;

    /// Called on the caller's thread before a batch's writes start on other threads: a sink
    /// refuses here what would make those threads wait for the caller (a `ConcurrentStore`
    /// refuses a caller holding one of its guards). Default: nothing.
    fn before_batch(&self) -> Result<()> {
        Ok(())
    }

    /// Whether `key` names one target, so that a later item of a batch with the same key
    /// replaces an earlier one (last wins). Keys that do not (a new object each time) are
    /// all written. Default: every key names its target.
    fn names_one_target(_key: &K) -> bool {
        true
    }
}

/// How many writes a [`BatchWriter`] runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchWriterOptions {
    /// Writes in flight at most (at least 1). Default 8.
    pub permits: usize,
}

impl Default for BatchWriterOptions {
    fn default() -> Self {
        Self { permits: 8 }
    }
}

/// Upper bounds, in microseconds, of the latency histogram's buckets (the last is open).
pub const LATENCY_BUCKETS_MICROS: [u64; 12] =
    [10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, u64::MAX];

/// A [`BatchWriter`]'s counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchWriterStats {
    /// The permits (writes in flight at most).
    pub max_concurrent: usize,
    /// Permits free now.
    pub available_permits: usize,
    /// Writes running now.
    pub in_flight: usize,
    /// The most writes that ever ran at once.
    pub peak_in_flight: usize,
    /// Writes that returned `Ok` (a later failed commit is counted in `failed_commits`).
    pub completed: u64,
    /// Writes that failed.
    pub failed: u64,
    /// Commits made.
    pub commits: u64,
    /// Commits that failed.
    pub failed_commits: u64,
    /// Write latencies: counts per bucket of [`LATENCY_BUCKETS_MICROS`].
    pub latency_micros: [u64; 12],
}

/// Bounded parallel writes into a [`Sink`]: a permit is taken before an item's write starts
/// (at most `permits` run at once, and memory is bounded by them: items are borrowed, never
/// copied into tasks), `write_batch` gives one result per item in input order, and a batch
/// ends with one commit of the sink (a durable group commit where the sink shares them).
///
/// ```
/// use bob_batch_io::{BatchWriter, BatchWriterOptions};
/// use bob_store_concurrent::ConcurrentStore;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = ConcurrentStore::create_base(dir.path().join("blobs"), Default::default(), 0)?;
/// let writer = BatchWriter::new(store, BatchWriterOptions { permits: 8 });
/// let blobs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 4096]).collect();
/// let items: Vec<_> = blobs.iter().map(|b| (None, &b[..])).collect(); // None: new objects
/// let ids = writer.write_batch(&items); // eight at a time, then one durable commit
/// let id = ids[42].clone()?;
/// assert_eq!(writer.sink().read_bytes_from_obj(id)?, vec![42; 4096]);
/// assert!(writer.stats().peak_in_flight <= 8);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BatchWriter<S> {
    sink: S,
    permits: DiskTokenManager,
    limit: usize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    completed: AtomicU64,
    failed: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    latency: [AtomicU64; 12],
}

impl<S> BatchWriter<S> {
    /// A writer into `sink`.
    pub fn new(sink: S, options: BatchWriterOptions) -> Self {
        let limit = options.permits.max(1);
        Self {
            sink,
            permits: DiskTokenManager::new(limit),
            limit,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The counters.
    pub fn stats(&self) -> BatchWriterStats {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        BatchWriterStats {
            max_concurrent: self.limit,
            available_permits: self.limit.saturating_sub(self.permits.in_use()),
            in_flight,
            peak_in_flight: self.peak.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            latency_micros: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }

    /// One write under a permit, counted.
    fn write_counted<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        let _permit = self.permits.acquire();
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        let started = Instant::now();
        // A sink that panics fails its item, not the batch (nor the counters).
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(write)).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(Error::SinkPanicked(what))
            });
        let took = started.elapsed();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.record(took);
        match &result {
            Ok(_) => self.completed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn record(&self, took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BUCKETS_MICROS.iter().position(|&b| micros <= b).unwrap_or(11);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn commit_counted<K>(&self) -> Result<()>
    where
        S: Sink<K>,
    {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let result = self.sink.commit();
        if result.is_err() {
            self.failed_commits.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Writes one item and commits it: durable when this returns `Ok`.
    pub fn write_one<K>(&self, key: &K, bytes: &[u8]) -> Result<S::Output>
    where
        S: Sink<K>,
    {
        let output = self.write_counted(|| self.sink.write(key, bytes))?;
        self.commit_counted::<K>()?;
        Ok(output)
    }

    /// Writes `items` with up to `permits` writes at once, then commits once. One result per
    /// item, in input order; every `Ok` is durable. An item whose key names one target
    /// ([`Sink::names_one_target`]) and comes again later in the batch is not written: the
    /// last one wins, and the earlier ones get its result. A failed (or panicking) write
    /// fails its item (and every item it stood for) alone; a failed commit fails every item,
    /// though the writes stay in the sink, and a later commit of anyone may make them
    /// durable. A sink may refuse the whole batch before it starts ([`Sink::before_batch`]).
    pub fn write_batch<K>(&self, items: &[(K, &[u8])]) -> Vec<Result<S::Output>>
    where
        S: Sink<K>,
        K: Hash + Eq + Sync,
    {
        if let Err(e) = self.sink.before_batch() {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        // The item that is written for each item: itself, or the last with its key.
        let mut last: HashMap<&K, usize> = HashMap::new();
        for (i, (key, _)) in items.iter().enumerate() {
            if S::names_one_target(key) {
                last.insert(key, i);
            }
        }
        let writer_of: Vec<usize> = items
            .iter()
            .enumerate()
            .map(|(i, (key, _))| if S::names_one_target(key) { last[key] } else { i })
            .collect();
        let written: Vec<usize> =
            writer_of.iter().enumerate().filter(|&(i, &w)| i == w).map(|(i, _)| i).collect();
        let results: Vec<Mutex<Option<Result<S::Output>>>> =
            items.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let workers = self.limit.min(written.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = written.get(n) else { break };
                        let (key, bytes) = &items[i];
                        let result = self.write_counted(|| self.sink.write(key, bytes));
                        *results[i].lock() = Some(result);
                    }
                });
            }
        });
        let committed = if written.is_empty() { Ok(()) } else { self.commit_counted::<K>() };
        let results: Vec<Option<Result<S::Output>>> =
            results.into_iter().map(Mutex::into_inner).collect();
        writer_of
            .iter()
            .map(|&w| {
                let result = results[w].clone().expect("every written item has a result");
                match (&committed, result) {
                    (Err(e), Ok(_)) => Err(e.clone()),
                    (_, result) => result,
                }
            })
            .collect()
    }
}

/// A reference to a sink is a sink (so a `BatchWriter` can borrow a store it does not own).
impl<K, S: Sink<K> + ?Sized> Sink<K> for &S {
    type Output = S::Output;

    fn write(&self, key: &K, bytes: &[u8]) -> Result<Self::Output> {
        (**self).write(key, bytes)
    }

    fn commit(&self) -> Result<()> {
        (**self).commit()
    }

    fn before_batch(&self) -> Result<()> {
        (**self).before_batch()
    }

    fn names_one_target(key: &K) -> bool {
        S::names_one_target(key)
    }
}

/// Writes into a shared store: `None` writes a new object (its id is the output), `Some(id)`
/// replaces object `id` (any length; the id is the output). New objects are never merged;
/// two replacements of one id in a batch: the last wins.
impl<S: bob_store_core::SplitStore<Io: Clone> + Send + Sync> Sink<Option<bob_store_core::ObjectId>>
    for bob_store_concurrent::ConcurrentStore<S>
{
    type Output = bob_store_core::ObjectId;

    fn write(&self, key: &Option<bob_store_core::ObjectId>, bytes: &[u8]) -> Result<Self::Output> {
        match key {
            None => Ok(self.write_new_obj_from_bytes(bytes)?),
            Some(id) => {
                self.replace_obj(*id, bytes)?;
                Ok(*id)
            }
        }
    }

    fn commit(&self) -> Result<()> {
        Ok(bob_store_concurrent::ConcurrentStore::commit(self)?)
    }

    fn before_batch(&self) -> Result<()> {
        if self.thread_holds_guards() {
            return Err(bob_store_core::Error::WouldDeadlock(
                "a batch written while this thread holds a guard of the store could wait for \
                 it on another thread: drop the guards first"
                    .into(),
            )
            .into());
        }
        Ok(())
    }

    fn names_one_target(key: &Option<bob_store_core::ObjectId>) -> bool {
        key.is_some()
    }
}

/// A [`Sink`] into a named tree of a bob-btree [`Db`](bob_btree::Db), keys and values byte
/// strings: each item is a commit of its own that the write-ahead log holds but has not
/// synced ([`Durability::Buffered`](bob_btree::Durability::Buffered)), and the batch ends
/// with one [`Db::sync`](bob_btree::Db::sync), which makes every item durable. (The log may
/// also sync by itself within a batch: when a segment fills, every 1 MiB of records, or when
/// an item's commit runs a checkpoint, as a very large record or a full log makes it do.)
/// The items' commits take the database's writer lock one at a time, so the permits bound
/// memory and the work around the writes, not the tree's writes themselves. Two items of one
/// key in a batch: the last wins. An item reported `Err` because the batch's sync failed may
/// still be visible to readers (its commit was made); reopen the database to see what is
/// durable.
#[derive(Debug)]
pub struct TreeSink<'db, S = bob_btree::DefaultStore>
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer,
{
    db: &'db bob_btree::Db<S>,
    tree: String,
}

impl<'db, S> TreeSink<'db, S>
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer,
{
    /// A sink into the tree `tree` of `db` (created by the first write if it is not there).
    pub fn new(db: &'db bob_btree::Db<S>, tree: impl Into<String>) -> Self {
        Self { db, tree: tree.into() }
    }
}

impl<S> Sink<Vec<u8>> for TreeSink<'_, S>
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer + Send + Sync + 'static,
{
    type Output = ();

    fn write(&self, key: &Vec<u8>, bytes: &[u8]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.open_tree::<Vec<u8>, Vec<u8>>(&self.tree)?.put(key.as_slice(), bytes)?;
        Ok(txn.commit(bob_btree::Durability::Buffered)?)
    }

    fn commit(&self) -> Result<()> {
        Ok(self.db.sync()?)
    }

    /// Refuses a batch from a thread the workers would wait for: one holding a write
    /// transaction of the database, inside a treap's change, or holding a store guard.
    fn before_batch(&self) -> Result<()> {
        Ok(self.db.check_may_wait("a batch into a tree")?)
    }
}

/// Writes into a [`DiskCache`](crate::DiskCache): each item a buffered store
/// ([`store_buffered`](crate::DiskCache::store_buffered), flushed on its own at the buffer's
/// limits; an item whose flush there fails stays buffered and is `Ok`: the batch's flush
/// decides), the batch's commit one [`flush_writes`](crate::DiskCache::flush_writes). Two
/// items of one key in a batch: the last wins.
impl<S> Sink<Vec<u8>> for crate::DiskCache<S>
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer + Send + Sync + 'static,
{
    type Output = ();

    fn write(&self, key: &Vec<u8>, bytes: &[u8]) -> Result<()> {
        self.buffer_for_batch(key, bytes)
    }

    fn commit(&self) -> Result<()> {
        self.flush_writes()
    }
}
