//! `ConcurrentStore<S>`: a thread-safe wrapper over any bob store, with per-object locks.
//!
//! Every operation takes `&self`. Different objects are read and written in parallel, and
//! readers of one object share it. The wrapped store sits behind one global lock that is held
//! only for metadata steps (allocating, publishing, deleting, looking up, committing), never
//! across an object's data I/O, which goes through the store's I/O handle
//! ([`SplitStore::io`]) outside that lock. The exception is a whole object of at most
//! [`IN_LOCK_WRITE`] bytes written from memory (`write_new_obj_from_bytes`, `replace_obj`):
//! it is copied into the store's write buffer under the global lock and written, coalesced
//! with its neighbours, at the next flush or commit (streaming many small objects outside the
//! lock would keep each one's pages apart from every other pending object's). A
//! [`DiskTokenManager`] bounds the backend calls made outside the global lock (0 = unlimited).
//!
//! # Lock order
//! Object locks (all of a call's ids at once), then the global lock (briefly; nothing is
//! waited for while it is held except a disk token), then a disk token, held for exactly one
//! backend call. Commits and `close`/`compact` also take the group commit's leadership (a flag
//! under its mutex) before the global lock; its holder takes no object lock, except a commit
//! hold's ([`ConcurrentStore::hold_commits`]): that takes a pin first, which `compact` and
//! `verify` (every object lock, then the leadership) wait for as for an object lock, and
//! then locks only objects of its own. A thread holding a token waits for nothing, and a
//! thread that holds object locks waits for another only as a reader holding only readers,
//! for a writer that waits for no object lock (the rule of `locks.rs`, enforced), so no
//! cycle of waiting threads can form. (The loom models check each of these orders.)
//!
//! No rule is left to the caller: a thread may hold several guards at once and open more; a
//! request that would have to wait while the thread holds a writer guard, a writer wanted
//! while it holds any guard, or `compact`/`verify` while it holds one, returns
//! `Error::WouldDeadlock` at once instead of waiting. Guards stay on the thread that opened
//! them (they are not `Send`).
//!
//! # Guarantees
//! - Rewrites are copy-on-write: a reader of an object never sees a half-written version, and
//!   a commit racing a writer never makes bytes durable that the writer then overwrites.
//! - A delete waits for the object's readers and writers, so freed space is never reused
//!   while a reader of it is still running.
//! - `commit` commits a consistent cut: every write whose guard finished (or whose call
//!   returned) before `commit` was called is in it.
//! - Group commit: threads that call `commit` while another thread's commit runs wait for it,
//!   and then one of them commits for all of them (one journal record and one sync); each gets
//!   its `Ok` only once a commit holding its writes is durable ([`ConcurrentStore::commit_stats`]
//!   counts how many shared).
//! - After `close`, every operation returns `Error::Closed`; writes in flight are not
//!   included.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use bob_store_concurrent::ConcurrentStore;
//! use bob_store_core::StoreOptions;
//!
//! # fn main() -> bob_store_core::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(ConcurrentStore::create_multi(&dir.path().join("s"), StoreOptions::default(), 4)?);
//! let workers: Vec<_> = (0..4u8)
//!     .map(|i| {
//!         let store = store.clone();
//!         std::thread::spawn(move || store.write_new_obj_from_bytes(&[i; 100]))
//!     })
//!     .collect();
//! let ids: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect::<Result<_, _>>()?;
//! store.commit()?;
//! assert_eq!(store.read_bytes_from_obj(ids[2])?, vec![2; 100]);
//! # Ok(())
//! # }
//! ```

mod group;
mod locks;

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bob_alloc::{BasicAllocator, OmniBlockAllocator};
use bob_io_helpers::sync::atomic::{AtomicBool, Ordering};
use bob_io_helpers::sync::thread::{self, ThreadId};
use bob_io_helpers::sync::{Mutex, RwLock};
use bob_io_helpers::{DiskTokenManager, FileBackend, OsFile};
use bob_store_core::{
    Access, BatchStorer, CompactReport, Located, ObjectInfo, ObjectInfoStorer, ObjectReader,
    ObjectWrite, ObjectWriter, PrimeStorer, ReadAt, SplitStore, Store, StoreOptions, VerifyReport,
};
pub use bob_store_core::{Error, ObjectId, Result};

pub use crate::group::{GroupCommit, GroupHold};
use crate::locks::{ExclusiveLock, LockTable, Pin, SharedLock};

/// Whole-object writes from memory up to this many bytes run under the global lock through
/// the store's write buffer (a copy into memory), instead of reserving space apart from every
/// pending object and writing outside the lock.
pub const IN_LOCK_WRITE: usize = 64 * 1024;

/// A thread-safe store over `S`; see the crate docs.
pub struct ConcurrentStore<S: SplitStore<Io: Clone>> {
    inner: RwLock<S>,
    io: S::Io,
    locks: LockTable,
    tokens: DiskTokenManager,
    closed: AtomicBool,
    group: GroupCommit,
    /// The thread holding the commits ([`ConcurrentStore::hold_commits`]), if any: its own
    /// `commit`, `close`, `compact` or `verify` would wait for its hold, and is refused.
    holder: Mutex<Option<ThreadId>>,
}

/// Ends a commit whose sync did not return (its thread unwinds) as a failed one.
struct Ending<'a, S: SplitStore>(Option<&'a RwLock<S>>);

impl<S: SplitStore> Drop for Ending<'_, S> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            let _ =
                inner.write().end_commit(Err(io::Error::other("the committing thread panicked")));
        }
    }
}

/// A hold on a [`ConcurrentStore`]'s commits ([`ConcurrentStore::hold_commits`]); commits
/// of other callers run again once it is dropped.
///
/// Dropping a hold that did not end with a successful [`commit`](CommitHold::commit) (an
/// error, a panic) latches the store: the writes made under it may be half of a change, and
/// the next commit of anyone would make that half durable; the store refuses writes until
/// reopened, which recovers the last commit. A hold stays on the thread that took it.
#[must_use = "other callers' commits run again as soon as the hold is dropped"]
pub struct CommitHold<'a, S: SplitStore<Io: Clone>> {
    store: &'a ConcurrentStore<S>,
    _hold: GroupHold<'a>,
    _pin: Pin<'a>,
    /// Whether the hold ended with a successful commit.
    committed: std::cell::Cell<bool>,
    /// The holder is checked by thread: the hold must not move.
    _thread: std::marker::PhantomData<*const ()>,
}

impl<S: SplitStore<Io: Clone>> CommitHold<'_, S> {
    /// Makes every finished write durable, atomically (as [`ConcurrentStore::commit`], for
    /// the holder alone: no other caller's commit is running or starts meanwhile), and ends
    /// the hold. On an error the store latches (see [`CommitHold`]).
    pub fn commit(self) -> Result<()> {
        self.store.check_open()?;
        self.store.commit_now()?;
        self.committed.set(true);
        Ok(())
    }
}

impl<S: SplitStore<Io: Clone>> Drop for CommitHold<'_, S> {
    fn drop(&mut self) {
        if !self.committed.get() {
            self.store.inner.write().fail(
                "a commit hold ended without its commit: what was written under it may be \
                 half of a change"
                    .into(),
            );
        }
        *self.store.holder.lock() = None;
    }
}

impl<S: SplitStore<Io: Clone>> std::fmt::Debug for CommitHold<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitHold").finish_non_exhaustive()
    }
}

/// How commits through a [`ConcurrentStore`] were grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Calls of `commit` so far.
    pub commits: u64,
    /// Commits of the store written for them (one journal record and one sync each, or a
    /// checkpoint; a call with nothing to commit writes none): fewer than `commits` when
    /// callers committing at the same time shared one.
    pub store_commits: u64,
}

impl<S: SplitStore<Io: Clone>> std::fmt::Debug for ConcurrentStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentStore")
            .field("locks_held", &self.locks.held())
            .field("tokens", &self.tokens)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl ConcurrentStore<Store<BasicAllocator, Arc<OsFile>>> {
    /// Creates a `BaseStore` file at `path`, wrapped; `max_disk_tokens` 0 = unlimited.
    pub fn create_base(
        path: impl AsRef<Path>,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        let file = OsFile::create_new(path.as_ref())?;
        Ok(Self::new(Store::create_with(Arc::new(file), options)?, max_disk_tokens))
    }

    /// Opens a `BaseStore` file at `path`, wrapped.
    pub fn open_base(
        path: impl AsRef<Path>,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        let file = OsFile::open(path.as_ref())?;
        Ok(Self::new(Store::open_with(Arc::new(file), options)?, max_disk_tokens))
    }

    /// Opens a `BaseStore` file at `path`, or creates it if there is none (see
    /// [`Store::open_or_create_with`]), wrapped.
    pub fn open_or_create_base(
        path: impl AsRef<Path>,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        let file = OsFile::open_or_create(path.as_ref())?;
        Ok(Self::new(Store::open_or_create_with(Arc::new(file), options)?, max_disk_tokens))
    }
}

impl ConcurrentStore<Store<OmniBlockAllocator, Arc<OsFile>>> {
    /// Creates a `MultiStore` file at `path`, wrapped; `max_disk_tokens` 0 = unlimited.
    pub fn create_multi(
        path: impl AsRef<Path>,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        let file = OsFile::create_new(path.as_ref())?;
        Ok(Self::new(Store::create_with(Arc::new(file), options)?, max_disk_tokens))
    }

    /// Opens a `MultiStore` file at `path`, wrapped.
    pub fn open_multi(
        path: impl AsRef<Path>,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        let file = OsFile::open(path.as_ref())?;
        Ok(Self::new(Store::open_with(Arc::new(file), options)?, max_disk_tokens))
    }

    /// Opens a `MultiStore` file at `path`, or creates it if there is none (see
    /// [`Store::open_or_create_with`]), wrapped.
    pub fn open_or_create_multi(
        path: impl AsRef<Path>,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        let file = OsFile::open_or_create(path.as_ref())?;
        Ok(Self::new(Store::open_or_create_with(Arc::new(file), options)?, max_disk_tokens))
    }
}

/// How the store-core guards reach a `ConcurrentStore`: the global lock for each metadata
/// step, a disk token for each I/O call (outside the lock).
#[derive(Debug)]
pub struct Shared<'a, S: SplitStore<Io: Clone>>(&'a ConcurrentStore<S>);

impl<S: SplitStore<Io: Clone>> Access for Shared<'_, S> {
    type Store = S;
    const EXCLUSIVE: bool = false;

    fn with<T>(&mut self, step: impl FnOnce(&mut S) -> Result<T>) -> Result<T> {
        self.0.with_store(step)
    }

    fn io<T>(&mut self, call: impl FnOnce(&S::Io) -> io::Result<T>) -> Result<T> {
        self.0.io_call(call)
    }
}

/// Reads with a disk token, outside the global lock.
#[derive(Debug)]
pub struct TokenIo<'a, S: SplitStore<Io: Clone>>(&'a ConcurrentStore<S>);

impl<S: SplitStore<Io: Clone>> ReadAt for TokenIo<'_, S> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let _token = self.0.token();
        self.0.io.read_at(buf, offset)
    }

    fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        let _token = self.0.token();
        self.0.io.read_to_vec(buf, len, offset)
    }
}

impl<S: SplitStore<Io: Clone>> ConcurrentStore<S> {
    /// Wraps `store`; at most `max_disk_tokens` backend calls in flight (0 = unlimited).
    pub fn new(store: S, max_disk_tokens: usize) -> Self {
        Self {
            io: store.io().clone(),
            inner: RwLock::new(store),
            locks: LockTable::default(),
            tokens: DiskTokenManager::new(max_disk_tokens),
            closed: AtomicBool::new(false),
            group: GroupCommit::default(),
            holder: Mutex::new(None),
        }
    }

    /// The disk tokens (to read how many are in use, or the most ever in use).
    pub fn disk_tokens(&self) -> &DiskTokenManager {
        &self.tokens
    }

    /// Object locks held now (the lock table never holds more entries than this).
    pub fn locks_held(&self) -> usize {
        self.locks.held()
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }

    /// A disk token for one backend call; none when there is no limit (so unlimited stores
    /// touch no shared counter per call, and `disk_tokens()` then reports no use).
    fn token(&self) -> Option<bob_io_helpers::DiskToken<'_>> {
        (self.tokens.limit() != 0).then(|| self.tokens.acquire())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    /// Refuses a call that waits for the group commit (a hold may be leading it, and wait for
    /// this thread's guards) while the calling thread holds a guard.
    fn check_no_guards(&self, what: &str) -> Result<()> {
        if self.locks.holds_any() {
            return Err(Error::WouldDeadlock(format!(
                "{what} while this thread holds a reader or writer guard could wait for a \
                 commit hold that needs it: drop the guards first"
            )));
        }
        Ok(())
    }

    /// Refuses a call that would wait for the calling thread's own commit hold.
    fn check_not_holding(&self, what: &str) -> Result<()> {
        if *self.holder.lock() == Some(thread::current().id()) {
            return Err(Error::InvalidArgument(format!(
                "{what} while this thread holds the store's commits would wait for ever: \
                 commit through the CommitHold, or drop it first"
            )));
        }
        Ok(())
    }

    /// Completes the store's lazy open now (reads and checks what open left, rebuilds the
    /// allocator); a write does it otherwise. See `Store::complete_open`.
    pub fn complete_open(&self) -> Result<()> {
        self.with_store(|store| store.complete_open())
    }

    /// Runs `step` on the store under the global lock.
    fn with_store<T>(&self, step: impl FnOnce(&mut S) -> Result<T>) -> Result<T> {
        self.check_open()?;
        let mut store = self.inner.write();
        step(&mut store)
    }

    /// Runs a read-only `step` on the store under the global lock, shared.
    fn with_store_shared<T>(&self, step: impl FnOnce(&S) -> Result<T>) -> Result<T> {
        self.check_open()?;
        let store = self.inner.read();
        step(&store)
    }

    /// One backend call with a disk token; an error marks the store failed.
    fn io_call<T>(&self, call: impl FnOnce(&S::Io) -> io::Result<T>) -> Result<T> {
        let result = {
            let _token = self.token();
            call(&self.io)
        };
        result.map_err(|e| {
            let error = Error::from_io(e);
            if error.latches() {
                self.inner.write().fail(error.to_string());
            }
            error
        })
    }

    /// A reader of `id` for a caller holding its shared lock.
    fn reader(
        &self,
        id: ObjectId,
        cached: Option<Located<'static>>,
    ) -> Result<ObjectReader<'static, TokenIo<'_, S>>> {
        let located = self.locate(id, cached)?;
        Ok(ObjectReader::new(TokenIo(self), id, located))
    }

    /// The whole object, checksum checked.
    pub fn read_bytes_from_obj(&self, id: ObjectId) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_obj_into(id, &mut buf)?;
        Ok(buf)
    }

    /// The whole object into `buf`, checksum checked.
    pub fn read_obj_into(&self, id: ObjectId, buf: &mut Vec<u8>) -> Result<()> {
        self.check_open()?;
        let (_shared, cached) = self.locks.shared_and_cached(id.0)?;
        self.reader(id, cached)?.read_whole(buf)
    }

    /// Starts reading objects `ids` from the device in the background, for a caller about to
    /// read them all ([`FileBackend::will_need`] on each one's bytes): the reads that follow
    /// find them in the OS page cache, read together at the device's queue depth where one
    /// read after another would wait for each in turn. A hint: it changes no read's result,
    /// and an object that is not there (or any error) is skipped, for its read to report.
    /// A disk token covers each hint's call, not the device reads it starts, which the
    /// token bound does not count: the caller bounds those by what it names. With a
    /// backend that takes no hints (the default `will_need`), it does nothing.
    pub fn prefetch_objs(&self, ids: &[ObjectId]) {
        if self.check_open().is_err() {
            return;
        }
        for &id in ids {
            let Ok((_shared, cached)) = self.locks.shared_and_cached(id.0) else { continue };
            let Ok(located) = self.locate(id, cached) else { continue };
            if located.is_staged() || located.object_len() == 0 {
                continue;
            }
            let _token = self.token();
            let _ = self.io.will_need(located.offset(), located.object_len());
        }
    }

    /// Where `id` is, for a caller holding its shared lock: the lock table's cached location,
    /// or the store's (then cached).
    fn locate(&self, id: ObjectId, cached: Option<Located<'static>>) -> Result<Located<'static>> {
        if let Some(located) = cached {
            return Ok(located);
        }
        let located = self.with_store_shared(|store| Ok(store.locate(id)?.into_owned()))?;
        self.locks.remember(id.0, &located);
        Ok(located)
    }

    /// A new object holding `bytes`. Up to [`IN_LOCK_WRITE`] bytes the store's own path
    /// runs under the global lock (the bytes go to its write buffer, written coalesced at the
    /// next flush); larger objects stream outside it.
    pub fn write_new_obj_from_bytes(&self, bytes: &[u8]) -> Result<ObjectId> {
        if !bytes.is_empty() && bytes.len() <= IN_LOCK_WRITE {
            return self.with_store(|store| store.write_new_obj_from_bytes(bytes));
        }
        let (id, writer) = self.late_write_new_obj(bytes.len() as u64)?;
        writer.write_whole(bytes)?;
        Ok(id)
    }

    /// A new object of `size` zero bytes.
    pub fn new_obj(&self, size: u64) -> Result<ObjectId> {
        let (id, writer) = self.late_write_new_obj(size)?;
        writer.finish()?;
        Ok(id)
    }

    /// Deletes an object once its readers and writers are done.
    pub fn delete_obj(&self, id: ObjectId) -> Result<()> {
        self.check_open()?;
        let _exclusive = self.locks.exclusive(&[id.0])?;
        self.locks.forget(id.0);
        self.with_store(|store| store.delete_obj(id))
    }

    /// A reader over one object; it holds the object's shared lock until dropped.
    pub fn late_read_obj(&self, id: ObjectId) -> Result<ConcurrentReader<'_, S>> {
        self.check_open()?;
        let (lock, cached) = self.locks.shared_and_cached(id.0)?;
        let inner = self.reader(id, cached)?;
        Ok(ConcurrentReader { inner, _lock: lock, id })
    }

    /// A new object of `size` bytes and a writer filling it; the object appears when the
    /// writer finishes (bytes not written are zeros).
    pub fn late_write_new_obj(&self, size: u64) -> Result<(ObjectId, ConcurrentWriter<'_, S>)> {
        self.check_open()?;
        let (id, inner) = ObjectWriter::create(Shared(self), size)?;
        Ok((id, ConcurrentWriter { inner, _lock: None }))
    }

    /// A writer over an existing object (copy-on-write); it holds the object's exclusive lock.
    pub fn write_to_obj(&self, id: ObjectId) -> Result<ConcurrentWriter<'_, S>> {
        self.check_open()?;
        let lock = self.locks.exclusive(&[id.0])?;
        self.locks.forget(id.0);
        let inner = ObjectWriter::rewrite(Shared(self), id)?;
        Ok(ConcurrentWriter { inner, _lock: Some(lock) })
    }

    /// A writer replacing object `id` with `size` new bytes (any length, copy-on-write); it
    /// holds the object's exclusive lock. Bytes not written are zeros.
    pub fn late_replace_obj(&self, id: ObjectId, size: u64) -> Result<ConcurrentWriter<'_, S>> {
        self.check_open()?;
        let lock = self.locks.exclusive(&[id.0])?;
        self.locks.forget(id.0);
        let inner = ObjectWriter::replace(Shared(self), id, size)?;
        Ok(ConcurrentWriter { inner, _lock: Some(lock) })
    }

    /// Replaces object `id` with `bytes`, of any length; the id keeps its meaning. Up to
    /// [`IN_LOCK_WRITE`] bytes the store's own path runs under the global lock (and the
    /// object's exclusive lock), as for [`write_new_obj_from_bytes`](Self::write_new_obj_from_bytes).
    pub fn replace_obj(&self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() && bytes.len() <= IN_LOCK_WRITE {
            self.check_open()?;
            let _exclusive = self.locks.exclusive(&[id.0])?;
            self.locks.forget(id.0);
            return self.with_store(|store| store.replace_obj(id, bytes));
        }
        self.late_replace_obj(id, bytes.len() as u64)?.write_whole(bytes)
    }

    /// Read-modify-write of object `id`: `change` gets its bytes (checksum checked) to change
    /// in place, to any length, and they are written back under the same id, all under the
    /// object's exclusive lock, so no other writer of the object comes between the read and
    /// the write (a counter, a serde value kept in an object). Returns what `change` returned.
    /// Like every write, it is durable at the next commit. `change` runs with the object's
    /// writer lock held, so a call of this store from inside it that would wait for a lock
    /// (a read or write of the same object, `compact`, `verify`, another object some thread
    /// holds) returns `Error::WouldDeadlock` rather than waiting: compute in `change`, call
    /// the store after.
    ///
    /// ```
    /// # fn main() -> Result<(), bob_store_core::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use bob_store_concurrent::ConcurrentStore;
    /// let store = ConcurrentStore::create_base(dir.path().join("s"), Default::default(), 0)?;
    /// let id = store.write_new_obj_from_bytes(&7u64.to_le_bytes())?;
    /// std::thread::scope(|scope| {
    ///     for _ in 0..4 {
    ///         scope.spawn(|| {
    ///             store.update_obj(id, |bytes| {
    ///                 let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    ///                 bytes.copy_from_slice(&(n + 1).to_le_bytes());
    ///             })
    ///             .unwrap()
    ///         });
    ///     }
    /// });
    /// assert_eq!(store.read_bytes_from_obj(id)?, 11u64.to_le_bytes());
    /// store.commit()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn update_obj<R>(&self, id: ObjectId, change: impl FnOnce(&mut Vec<u8>) -> R) -> Result<R> {
        self.check_open()?;
        let _exclusive = self.locks.exclusive(&[id.0])?;
        self.locks.forget(id.0);
        // Located without caching the location (`reader` would remember it): the write below
        // moves the object, and a remembered old location would send later readers to the
        // old bytes (a loom model caught it), even if the write panicked before a `forget`.
        let located = self.with_store_shared(|store| Ok(store.locate(id)?.into_owned()))?;
        let mut bytes = Vec::new();
        ObjectReader::new(TokenIo(self), id, located).read_whole(&mut bytes)?;
        let out = change(&mut bytes);
        if !bytes.is_empty() && bytes.len() <= IN_LOCK_WRITE {
            self.with_store(|store| store.replace_obj(id, &bytes))?;
        } else {
            ObjectWriter::replace(Shared(self), id, bytes.len() as u64)?.write_whole(&bytes)?;
        }
        Ok(out)
    }

    /// Replaces the first `bytes.len()` bytes of an object.
    pub fn write_bytes_to_obj(&self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        self.write_to_obj(id)?.write_whole(bytes)
    }

    /// Makes every finished write durable, atomically. Callers committing at the same time
    /// share one commit of the store (one journal record, one sync): each returns `Ok` only
    /// once a commit that includes every write it finished before the call is durable.
    pub fn commit(&self) -> Result<()> {
        self.check_open()?;
        self.check_not_holding("commit")?;
        if self.locks.holds_any() {
            // A hold's holder may wait for this thread's guards: never wait for a hold.
            return self.group.commit_unless_held(
                || self.commit_now(),
                || {
                    Error::WouldDeadlock(
                        "a commit while this thread holds a guard would wait for a commit hold \
                         (a checkpoint) that may need it: drop the guards, then commit"
                            .into(),
                    )
                },
            );
        }
        self.group.commit(|| self.commit_now())
    }

    /// One commit of the store, for the group's leader or a hold's owner; whether it wrote.
    fn commit_now(&self) -> Result<bool> {
        // The record is written under the global lock; the sync runs without it, so other
        // threads' writes go on (into the next commit) while it runs.
        let (sync, wrote) = self.with_store(|store| {
            let before = store.generation();
            let sync = store.begin_commit()?;
            Ok((sync, store.generation() != before))
        })?;
        if !sync {
            return Ok(wrote);
        }
        // Should this thread unwind before the commit ends, the store latches (it cannot
        // know whether the record is durable), instead of refusing every later commit.
        let mut ending = Ending(Some(&self.inner));
        let synced = {
            let _token = self.token();
            self.io.sync_data()
        };
        ending.0 = None;
        self.inner.write().end_commit(synced)?;
        Ok(true)
    }

    /// Holds the store's commits for a change made of several writes that must become
    /// durable together, while other threads go on using the store: until the returned
    /// hold is dropped, no other caller's `commit` starts (each waits, then commits as
    /// usual), and the holder commits with [`CommitHold::commit`]. bob-btree's checkpoint
    /// takes one: it rewrites nodes under their ids and then its catalog, and a commit
    /// between the two would make half of it durable.
    ///
    /// Other threads' writes go on during a hold, and its commit makes durable whatever
    /// they finished, as any commit does. A hold dropped without a successful commit latches
    /// the store (see [`CommitHold`]). The holder's own `commit`, `close`, `compact` and
    /// `verify` are refused (they would wait for the hold); a `compact` or `verify` of
    /// another thread waits until the hold is dropped. Waits for the commit running now.
    /// A thread holding a reader or writer guard never waits for a hold, whose holder may
    /// need that guard's object: its `commit` then returns `Error::WouldDeadlock` (it may
    /// retry once it dropped its guards), and `hold_commits` and `close` with a guard open
    /// are refused the same way.
    pub fn hold_commits(&self) -> Result<CommitHold<'_, S>> {
        self.check_open()?;
        self.check_not_holding("hold_commits")?;
        self.check_no_guards("hold_commits")?;
        // The pin first: `compact` and `verify` take every object lock and then the group,
        // so the group is taken only where they cannot be waiting for the holder's locks.
        let pin = self.locks.pin();
        let hold = self.group.hold();
        *self.holder.lock() = Some(thread::current().id());
        Ok(CommitHold {
            store: self,
            _hold: hold,
            _pin: pin,
            committed: std::cell::Cell::new(false),
            _thread: std::marker::PhantomData,
        })
    }

    /// How many commits were asked for and how many commits of the store ran for them.
    pub fn commit_stats(&self) -> CommitStats {
        let (commits, store_commits) = self.group.counts();
        CommitStats { commits, store_commits }
    }

    /// Commits by a checkpoint (see `Storer::checkpoint`), then refuses every later
    /// operation with `Error::Closed`.
    pub fn close(&self) -> Result<()> {
        self.check_not_holding("close")?;
        self.check_no_guards("close")?;
        self.group.exclusive(|| {
            let mut store = self.inner.write();
            if self.closed.swap(true, Ordering::AcqRel) {
                return Err(Error::Closed);
            }
            store.checkpoint()?;
            store.trim_file();
            store.seal()
        })
    }

    /// `count` empty objects laid end to end (see `BatchStorer::allocate_run`).
    pub fn allocate_run(&self, count: u64, size: u64) -> Result<Vec<ObjectId>> {
        self.with_store(|store| store.allocate_run(count, size))
    }

    /// Runs of empty objects reusing free space (see `BatchStorer::allocate_runs`).
    pub fn allocate_runs(&self, count: u64, size: u64, min_run: u64) -> Result<Vec<Vec<ObjectId>>> {
        self.with_store(|store| store.allocate_runs(count, size, min_run))
    }

    /// Fills objects made since the last commit with one positioned write per run. The ids
    /// are locked all at once, so overlapping batches cannot deadlock. The write runs under
    /// the global lock: the objects are in the table already, so a commit landing in the
    /// middle of a write made outside it would make the old, empty entries durable over bytes
    /// still being written.
    pub fn write_batched_objs(&self, objects: &[(ObjectId, &[u8])]) -> Result<()> {
        self.check_open()?;
        let ids: Vec<u64> = objects.iter().map(|(id, _)| id.0).collect();
        let _exclusive = self.locks.exclusive(&ids)?;
        for &id in &ids {
            self.locks.forget(id);
        }
        self.with_store(|store| {
            let _token = self.token();
            store.write_batched_objs(objects)
        })
    }
}

impl<S: SplitStore<Io: Clone>> ConcurrentStore<S> {
    /// Compacts the store (see `Store::compact`), with every object locked.
    pub fn compact(&self) -> Result<CompactReport> {
        self.check_open()?;
        self.check_not_holding("compact")?;
        let _all = self.locks.all()?;
        self.locks.forget_all();
        self.group.exclusive(|| self.with_store(|store| SplitStore::compact(store)))
    }

    /// Whether the calling thread holds a reader or writer guard of this store (work it
    /// hands to other threads must not wait for them).
    pub fn thread_holds_guards(&self) -> bool {
        self.locks.holds_any()
    }

    /// Whether the calling thread holds the store's commits
    /// ([`hold_commits`](Self::hold_commits)): its own `commit` and `hold_commits` are then
    /// refused.
    pub fn thread_holds_commits(&self) -> bool {
        *self.holder.lock() == Some(thread::current().id())
    }

    /// Objects in the store (see `Store::object_count`).
    pub fn object_count(&self) -> Result<u64> {
        self.with_store_shared(|store| Ok(store.object_count()))
    }

    /// The bytes live objects and metadata take and the file's length (see
    /// `Store::space_in_use`): `None` until a lazy open is complete.
    pub fn space_in_use(&self) -> Result<Option<(u64, u64)>> {
        self.check_open()?;
        self.with_store_shared(|store| store.space_in_use())
    }
}

impl<S: SplitStore<Io: Clone> + ObjectInfoStorer> ConcurrentStore<S> {
    /// The object's logical and allocated lengths.
    pub fn object_info(&self, id: ObjectId) -> Result<ObjectInfo> {
        self.with_store_shared(|store| store.object_info(id))
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer> ConcurrentStore<S> {
    /// The prime object's id, creating it with `size` zero bytes if needed.
    pub fn prime_object(&self, size: u64) -> Result<ObjectId> {
        self.check_open()?;
        let _exclusive = self.locks.exclusive(&[bob_store_core::PRIME_OBJECT_ID.0])?;
        self.locks.forget(bob_store_core::PRIME_OBJECT_ID.0);
        self.with_store(|store| store.prime_object(size))
    }
}

impl<A: bob_store_core::SpaceAllocator, B: FileBackend + Clone> ConcurrentStore<Store<A, B>> {
    /// Checks the whole store (see `Store::verify`), with every object locked. Space
    /// reserved for objects still being written counts as theirs.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_open()?;
        self.check_not_holding("verify")?;
        let _all = self.locks.all()?;
        self.with_store_shared(|store| store.verify())
    }

    /// How many checkpoints this handle made, and how many commits are in the journal since
    /// the last one (see `Store::checkpoints`, `Store::journaled_commits`).
    pub fn journal_counts(&self) -> (u64, u64) {
        self.with_store_shared(|store| Ok((store.checkpoints(), store.journaled_commits())))
            .unwrap_or((0, 0))
    }
}

/// Streams one object's bytes, checksum checked; holds its shared lock until dropped.
pub struct ConcurrentReader<'a, S: SplitStore<Io: Clone>> {
    inner: ObjectReader<'static, TokenIo<'a, S>>,
    _lock: SharedLock<'a>,
    id: ObjectId,
}

impl<S: SplitStore<Io: Clone>> std::fmt::Debug for ConcurrentReader<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentReader").field("id", &self.id).finish()
    }
}

impl<S: SplitStore<Io: Clone>> Read for ConcurrentReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Streams bytes into one object: store-core's [`ObjectWriter`] through the global lock, and,
/// for a rewrite, the object's exclusive lock. Finishing, explicitly or on drop, publishes it.
pub struct ConcurrentWriter<'a, S: SplitStore<Io: Clone>> {
    // Declared first, so dropping the writer publishes before the lock is released.
    inner: ObjectWriter<Shared<'a, S>>,
    _lock: Option<ExclusiveLock<'a>>,
}

impl<S: SplitStore<Io: Clone>> std::fmt::Debug for ConcurrentWriter<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentWriter")
            .field("id", &self.inner.id())
            .field("position", &self.inner.position())
            .finish()
    }
}

impl<S: SplitStore<Io: Clone>> ConcurrentWriter<'_, S> {
    /// The object being written.
    pub fn id(&self) -> ObjectId {
        self.inner.id()
    }

    /// Writes the rest (zeros, or the old bytes) and publishes the object.
    pub fn finish(self) -> Result<()> {
        self.inner.finish()
    }

    /// Gives up: a new object is not created, a rewritten one keeps its old bytes (see
    /// [`ObjectWrite::abort`]).
    pub fn abort(self) -> Result<()> {
        // The object's lock is released after the writer gives its space back.
        let Self { inner, _lock } = self;
        inner.abort()
    }
}

impl<S: SplitStore<Io: Clone>> Write for ConcurrentWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use bob_io_helpers::sync::thread;
    use bob_io_helpers::testing::SimDisk;
    use bob_store_core::Storer;

    type Base = Store<BasicAllocator, SimDisk>;

    fn new_store(disk: &SimDisk) -> ConcurrentStore<Base> {
        let options = StoreOptions { write_buffer_bytes: 0, ..StoreOptions::default() };
        ConcurrentStore::new(Base::create_with(disk.clone(), options).unwrap(), 1)
    }

    /// A writer and a commit race: no deadlock; the object is readable after both, and after
    /// a final commit it survives a reopen; the store verifies clean.
    #[test]
    fn loom_commit_racing_a_writer() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let writer = {
                let store = store.clone();
                thread::spawn(move || store.write_new_obj_from_bytes(b"abc").unwrap())
            };
            store.commit().unwrap();
            let id = writer.join().unwrap();
            assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"abc");
            store.commit().unwrap();
            let reopened = Base::open_with(disk, StoreOptions::default()).unwrap();
            assert_eq!(reopened.read_bytes_from_obj(id).unwrap(), b"abc");
        });
    }

    /// Two read-modify-writes of one object race a reader: neither update is lost (the
    /// exclusive lock spans the read and the write), and the reader sees 0, 1 or 2 whole.
    #[test]
    fn loom_two_updates_of_one_object() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let id = store.write_new_obj_from_bytes(&[0]).unwrap();
            let add = |store: bob_io_helpers::sync::Arc<ConcurrentStore<Base>>| {
                thread::spawn(move || store.update_obj(id, |b| b[0] += 1).unwrap())
            };
            let (a, b) = (add(store.clone()), add(store.clone()));
            let seen = store.read_bytes_from_obj(id).unwrap();
            assert!(seen.len() == 1 && seen[0] <= 2, "{seen:?}");
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(store.read_bytes_from_obj(id).unwrap(), [2]);
            assert_eq!(store.locks_held(), 0);
        });
    }

    /// A commit hold (two writes that must become durable together, then its own commit)
    /// races a compaction, which takes every object lock and then the group: no deadlock
    /// (the hold's pin keeps `all` off until it is dropped), and both writes are there.
    #[test]
    fn loom_a_commit_hold_races_a_compaction() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let node = store.write_new_obj_from_bytes(b"n0").unwrap();
            store.prime_object(4).unwrap();
            store.commit().unwrap();
            let compactor = {
                let store = store.clone();
                thread::spawn(move || store.compact().map(|_| ()).unwrap())
            };
            {
                let hold = store.hold_commits().unwrap();
                assert!(store.commit().is_err(), "the holder's own commit is refused");
                store.replace_obj(node, b"n1").unwrap();
                store.replace_obj(bob_store_core::PRIME_OBJECT_ID, b"root").unwrap();
                hold.commit().unwrap();
            }
            compactor.join().unwrap();
            assert_eq!(store.read_bytes_from_obj(node).unwrap(), b"n1");
            assert_eq!(
                store.read_bytes_from_obj(bob_store_core::PRIME_OBJECT_ID).unwrap(),
                b"root"
            );
            assert_eq!(store.locks_held(), 0);
        });
    }

    /// A thread holding a reader commits while another takes a hold and rewrites that very
    /// object: the commit never waits for the hold (it commits before it, or is refused with
    /// `WouldDeadlock`), so the holder's rewrite gets the object once the reader is dropped.
    #[test]
    fn loom_a_commit_by_a_guard_holder_never_waits_for_a_hold() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let id = store.write_new_obj_from_bytes(b"v0").unwrap();
            store.commit().unwrap();
            let holder = {
                let store = store.clone();
                thread::spawn(move || {
                    let hold = store.hold_commits().unwrap();
                    store.replace_obj(id, b"v1").unwrap();
                    hold.commit().unwrap();
                })
            };
            {
                let reader = store.late_read_obj(id).unwrap();
                match store.commit() {
                    Ok(()) | Err(Error::WouldDeadlock(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                drop(reader);
            }
            holder.join().unwrap();
            assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"v1");
        });
    }

    /// A hold and another thread's commit: the commit waits for the hold and then commits
    /// the other thread's write; the holder's commit made its own write durable.
    #[test]
    fn loom_a_commit_waits_for_a_hold() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let other = {
                let store = store.clone();
                thread::spawn(move || {
                    let id = store.write_new_obj_from_bytes(b"other").unwrap();
                    store.commit().unwrap();
                    id
                })
            };
            let mine = {
                let hold = store.hold_commits().unwrap();
                let mine = store.write_new_obj_from_bytes(b"mine").unwrap();
                hold.commit().unwrap();
                mine
            };
            let theirs = other.join().unwrap();
            drop(store);
            let image = disk.crash_image(bob_io_helpers::testing::CrashMode::PowerLoss, 1);
            let reopened =
                Base::open_with(SimDisk::from_image(image), StoreOptions::default()).unwrap();
            assert_eq!(reopened.read_bytes_from_obj(mine).unwrap(), b"mine");
            assert_eq!(reopened.read_bytes_from_obj(theirs).unwrap(), b"other");
        });
    }

    /// An allocation, a delete and a read race on one id: the new object never takes the
    /// deleted id (ids are reused only after a commit), the reader gets the old bytes or
    /// `NotFound`, and the new object reads back whole.
    #[test]
    fn loom_allocation_delete_and_read_of_one_id() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let id = store.write_new_obj_from_bytes(b"old").unwrap();
            let allocator = {
                let store = store.clone();
                thread::spawn(move || store.write_new_obj_from_bytes(b"new").unwrap())
            };
            let deleter = {
                let store = store.clone();
                thread::spawn(move || store.delete_obj(id).unwrap())
            };
            match store.read_bytes_from_obj(id) {
                Ok(bytes) => assert_eq!(bytes, b"old"),
                Err(Error::NotFound(_)) => {}
                Err(other) => panic!("{other}"),
            }
            let fresh = allocator.join().unwrap();
            deleter.join().unwrap();
            assert_ne!(fresh, id);
            assert_eq!(store.read_bytes_from_obj(fresh).unwrap(), b"new");
            assert!(matches!(store.read_bytes_from_obj(id), Err(Error::NotFound(_))));
        });
    }

    /// Group commit over the real store: two threads write and commit at once (one of them
    /// may commit for both); when a thread's commit returns `Ok`, what a power loss keeps (the
    /// durable image) holds its object.
    #[test]
    fn loom_group_commit_two_committers() {
        fn write_commit_check(store: &ConcurrentStore<Base>, disk: &SimDisk, bytes: &[u8]) {
            let id = store.write_new_obj_from_bytes(bytes).unwrap();
            store.commit().unwrap();
            let durable =
                Base::open_with(SimDisk::from_image(disk.durable_image()), StoreOptions::default())
                    .unwrap();
            assert_eq!(durable.read_bytes_from_obj(id).unwrap(), bytes);
        }
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let other = {
                let (store, disk) = (store.clone(), disk.clone());
                thread::spawn(move || write_commit_check(&store, &disk, b"one"))
            };
            write_commit_check(&store, &disk, b"two");
            other.join().unwrap();
            let stats = store.commit_stats();
            assert_eq!(stats.commits, 2);
            assert!((1..=2).contains(&stats.store_commits));
        });
    }

    /// A delete and a read of one object race: the reader gets the bytes or `NotFound`.
    #[test]
    fn loom_delete_racing_a_reader() {
        loom::model(|| {
            let disk = SimDisk::new();
            let store = bob_io_helpers::sync::Arc::new(new_store(&disk));
            let id = store.write_new_obj_from_bytes(b"xyz").unwrap();
            let reader = {
                let store = store.clone();
                thread::spawn(move || match store.read_bytes_from_obj(id) {
                    Ok(bytes) => assert_eq!(bytes, b"xyz"),
                    Err(Error::NotFound(_)) => {}
                    Err(other) => panic!("{other}"),
                })
            };
            store.delete_obj(id).unwrap();
            reader.join().unwrap();
            assert_eq!(store.locks_held(), 0);
        });
    }
}

/// The generic `Storer` API, for code written against it (each call takes the shared path).
/// The `Storer` trait family for `$target` (the store, or a reference to it), each method
/// calling the inherent method of the same name. Guards borrow the store for `$lt` (the
/// call's borrow of an owned store, the reference's lifetime otherwise); `$gat` is that
/// lifetime as the associated types name it.
macro_rules! storer_traits {
    (
        impl<$($generic:lifetime),*> $target:ty,
        guards $gat:lifetime / $lt:lifetime,
        close($store:ident) => $close:expr
    ) => {
        impl<$($generic,)* S: SplitStore<Io: Clone>> bob_store_core::Storer for $target {
            type Reader<'a>
                = ConcurrentReader<$gat, S>
            where
                Self: 'a;
            type Writer<'a>
                = ConcurrentWriter<$gat, S>
            where
                Self: 'a;

            fn new_obj(&mut self, size: u64) -> Result<ObjectId> {
                ConcurrentStore::new_obj(self, size)
            }

            fn delete_obj(&mut self, id: ObjectId) -> Result<()> {
                ConcurrentStore::delete_obj(self, id)
            }

            fn late_read_obj(&self, id: ObjectId) -> Result<ConcurrentReader<$lt, S>> {
                ConcurrentStore::late_read_obj(self, id)
            }

            fn late_write_new_obj(
                &mut self,
                size: u64,
            ) -> Result<(ObjectId, ConcurrentWriter<$lt, S>)> {
                ConcurrentStore::late_write_new_obj(self, size)
            }

            fn write_to_obj(&mut self, id: ObjectId) -> Result<ConcurrentWriter<$lt, S>> {
                ConcurrentStore::write_to_obj(self, id)
            }

            fn late_replace_obj(
                &mut self,
                id: ObjectId,
                size: u64,
            ) -> Result<ConcurrentWriter<$lt, S>> {
                ConcurrentStore::late_replace_obj(self, id, size)
            }

            fn replace_obj(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
                ConcurrentStore::replace_obj(self, id, bytes)
            }

            fn commit(&mut self) -> Result<()> {
                ConcurrentStore::commit(self)
            }

            fn close(self) -> Result<()> {
                let $store = self;
                $close
            }

            fn read_bytes_from_obj(&self, id: ObjectId) -> Result<Vec<u8>> {
                ConcurrentStore::read_bytes_from_obj(self, id)
            }

            fn read_obj_into(&self, id: ObjectId, buf: &mut Vec<u8>) -> Result<()> {
                ConcurrentStore::read_obj_into(self, id, buf)
            }

            fn write_new_obj_from_bytes(&mut self, bytes: &[u8]) -> Result<ObjectId> {
                ConcurrentStore::write_new_obj_from_bytes(self, bytes)
            }
        }

        impl<$($generic,)* S: SplitStore<Io: Clone> + ObjectInfoStorer> ObjectInfoStorer
            for $target
        {
            fn object_info(&self, id: ObjectId) -> Result<ObjectInfo> {
                ConcurrentStore::object_info(self, id)
            }
        }

        impl<$($generic,)* S: SplitStore<Io: Clone> + BatchStorer> BatchStorer for $target {
            fn allocate_run(&mut self, count: u64, size: u64) -> Result<Vec<ObjectId>> {
                ConcurrentStore::allocate_run(self, count, size)
            }

            fn allocate_runs(
                &mut self,
                count: u64,
                size: u64,
                min_run: u64,
            ) -> Result<Vec<Vec<ObjectId>>> {
                ConcurrentStore::allocate_runs(self, count, size, min_run)
            }

            fn write_batched_objs(&mut self, objects: &[(ObjectId, &[u8])]) -> Result<()> {
                ConcurrentStore::write_batched_objs(self, objects)
            }
        }

        impl<$($generic,)* S: SplitStore<Io: Clone> + PrimeStorer> PrimeStorer for $target {
            fn prime_object(&mut self, size: u64) -> Result<ObjectId> {
                ConcurrentStore::prime_object(self, size)
            }
        }
    };
}

storer_traits!(
    impl<> ConcurrentStore<S>,
    guards 'a / '_,
    close(store) => ConcurrentStore::close(&store)
);

// A shared store is a store too: structures that write through the `Storer` traits (a
// treap's `persist`, `batch_persist`) work through `&ConcurrentStore` (say `&*arc`) while
// other threads use the same store. `close` through a reference closes the store for every
// holder, as `ConcurrentStore::close` does.
storer_traits!(
    impl<'s> &'s ConcurrentStore<S>,
    guards 's / 's,
    close(store) => ConcurrentStore::close(store)
);

/// A `BaseStore` file behind a `ConcurrentStore`: what [`ConcurrentStore::create_base`] and
/// [`ConcurrentStore::open_base`] return.
pub type ConcurrentBaseStore = ConcurrentStore<Store<BasicAllocator, Arc<OsFile>>>;

/// A `MultiStore` file behind a `ConcurrentStore`: what [`ConcurrentStore::create_multi`] and
/// [`ConcurrentStore::open_multi`] return.
pub type ConcurrentMultiStore = ConcurrentStore<Store<OmniBlockAllocator, Arc<OsFile>>>;

impl<S: SplitStore<Io: Clone>> ObjectWrite for ConcurrentWriter<'_, S> {
    fn finish(self) -> Result<()> {
        ConcurrentWriter::finish(self)
    }

    fn abort(self) -> Result<()> {
        ConcurrentWriter::abort(self)
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}
