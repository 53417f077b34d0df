//! `ConcurrentStore<S>`: a thread-safe wrapper over any bob store, with per-object locks.
//!
//! Every operation takes `&self`. Different objects are read and written in parallel, and
//! readers of one object share it. The wrapped store sits behind one global lock that is held
//! only for metadata steps (allocating, publishing, deleting, looking up, committing), never
//! across an object's data I/O, which goes through the store's I/O handle
//! ([`SplitStore::io`]) outside that lock. A [`DiskTokenManager`] bounds the backend calls in
//! flight (0 = unlimited).
//!
//! # Lock order
//! Object locks (all of a call's ids at once), then the global lock (briefly; nothing is
//! waited for while it is held except a disk token), then a disk token, held for exactly one
//! backend call. A thread holding a token waits for nothing, and no thread holds some object
//! locks while waiting for others, so no cycle of waiting threads can form. A thread may hold
//! several reader guards at once. It must not hold a writer guard while opening another
//! writer guard on a different object.
//!
//! # Guarantees
//! - Rewrites are copy-on-write: a reader of an object never sees a half-written version, and
//!   a commit racing a writer never makes bytes durable that the writer then overwrites.
//! - A delete waits for the object's readers and writers, so freed space is never reused
//!   while a reader of it is still running.
//! - `commit` commits a consistent cut: every write whose guard finished (or whose call
//!   returned) before `commit` was called is in it.
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

mod locks;

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bob_alloc::{BasicAllocator, Extent, OmniBlockAllocator};
use bob_io_helpers::sync::RwLock;
use bob_io_helpers::sync::atomic::{AtomicBool, Ordering};
use bob_io_helpers::{DiskTokenManager, FileBackend, OsFile, StreamingChecksum, write_zeros};
use bob_store_core::{
    BatchStorer, CheckedRead, CompactReport, Located, ObjectInfo, ObjectInfoStorer, PrimeStorer,
    SplitStore, Store, StoreOptions, VerifyReport,
};
pub use bob_store_core::{Error, ObjectId, Result};

use crate::locks::{ExclusiveLock, LockTable, SharedLock};

/// Bytes moved per backend call when a writer fills or copies the rest of an object.
const CHUNK_BYTES: usize = 64 * 1024;

/// A thread-safe store over `S`; see the crate docs.
pub struct ConcurrentStore<S: SplitStore> {
    inner: RwLock<S>,
    io: S::Io,
    locks: LockTable,
    tokens: DiskTokenManager,
    closed: AtomicBool,
}

impl<S: SplitStore> std::fmt::Debug for ConcurrentStore<S> {
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
    pub fn create_base(path: &Path, options: StoreOptions, max_disk_tokens: usize) -> Result<Self> {
        Ok(Self::new(
            Store::create_with(Arc::new(OsFile::create_new(path)?), options)?,
            max_disk_tokens,
        ))
    }

    /// Opens a `BaseStore` file at `path`, wrapped.
    pub fn open_base(path: &Path, options: StoreOptions, max_disk_tokens: usize) -> Result<Self> {
        Ok(Self::new(Store::open_with(Arc::new(OsFile::open(path)?), options)?, max_disk_tokens))
    }
}

impl ConcurrentStore<Store<OmniBlockAllocator, Arc<OsFile>>> {
    /// Creates a `MultiStore` file at `path`, wrapped; `max_disk_tokens` 0 = unlimited.
    pub fn create_multi(
        path: &Path,
        options: StoreOptions,
        max_disk_tokens: usize,
    ) -> Result<Self> {
        Ok(Self::new(
            Store::create_with(Arc::new(OsFile::create_new(path)?), options)?,
            max_disk_tokens,
        ))
    }

    /// Opens a `MultiStore` file at `path`, wrapped.
    pub fn open_multi(path: &Path, options: StoreOptions, max_disk_tokens: usize) -> Result<Self> {
        Ok(Self::new(Store::open_with(Arc::new(OsFile::open(path)?), options)?, max_disk_tokens))
    }
}

impl<S: SplitStore> ConcurrentStore<S> {
    /// Wraps `store`; at most `max_disk_tokens` backend calls in flight (0 = unlimited).
    pub fn new(store: S, max_disk_tokens: usize) -> Self {
        Self {
            io: store.io(),
            inner: RwLock::new(store),
            locks: LockTable::default(),
            tokens: DiskTokenManager::new(max_disk_tokens),
            closed: AtomicBool::new(false),
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
            self.inner.write().fail(e.to_string());
            Error::Io(e)
        })
    }

    fn read_located(&self, id: ObjectId, located: &Located, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        match &located.staged {
            Some(bytes) => buf.extend_from_slice(bytes),
            None => {
                buf.resize(located.len as usize, 0);
                let offset = located.extent.offset;
                let _token = self.token();
                self.io.read_at(buf, offset)?;
            }
        }
        if let Err(e) = located.check(id, buf) {
            buf.clear();
            return Err(e);
        }
        Ok(())
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
        let (_shared, cached) = self.locks.shared_and_cached(id.0);
        let located = self.locate(id, cached)?;
        self.read_located(id, &located, buf)
    }

    /// Where `id` is, for a caller holding its shared lock: the lock table's cached location,
    /// or the store's (then cached).
    fn locate(&self, id: ObjectId, cached: Option<Located>) -> Result<Located> {
        if let Some(located) = cached {
            return Ok(located);
        }
        let located = self.with_store_shared(|store| store.locate(id))?;
        self.locks.remember(id.0, &located);
        Ok(located)
    }

    /// A new object holding `bytes`.
    pub fn write_new_obj_from_bytes(&self, bytes: &[u8]) -> Result<ObjectId> {
        let (id, extent) = self.with_store(|store| store.begin_new(bytes.len() as u64))?;
        // A failed write marks the store failed; the reserved space dies with its memory.
        self.io_call(|io| io.write_at(bytes, extent.offset))?;
        let sum = bob_io_helpers::checksum(bytes);
        self.with_store(|store| store.publish(id, extent, bytes.len() as u64, sum, None))?;
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
        let _exclusive = self.locks.exclusive(&[id.0]);
        self.locks.forget(id.0);
        self.with_store(|store| store.delete_obj(id))
    }

    /// A reader over one object; it holds the object's shared lock until dropped.
    pub fn late_read_obj(&self, id: ObjectId) -> Result<ConcurrentReader<'_, S>> {
        self.check_open()?;
        let (lock, cached) = self.locks.shared_and_cached(id.0);
        let located = self.locate(id, cached)?;
        let checked = CheckedRead::new(id, located.len, located.checksum);
        Ok(ConcurrentReader { store: self, _lock: lock, id, located, checked })
    }

    /// A new object of `size` bytes and a writer filling it; the object appears when the
    /// writer finishes (bytes not written are zeros).
    pub fn late_write_new_obj(&self, size: u64) -> Result<(ObjectId, ConcurrentWriter<'_, S>)> {
        let (id, target) = self.with_store(|store| store.begin_new(size))?;
        Ok((id, ConcurrentWriter::new(self, None, id, target, size, None)))
    }

    /// A writer over an existing object (copy-on-write); it holds the object's exclusive lock.
    pub fn write_to_obj(&self, id: ObjectId) -> Result<ConcurrentWriter<'_, S>> {
        self.check_open()?;
        let lock = self.locks.exclusive(&[id.0]);
        self.locks.forget(id.0);
        let (old, target) = self.with_store(|store| store.begin_rewrite(id))?;
        let len = old.len;
        Ok(ConcurrentWriter::new(self, Some(lock), id, target, len, Some(old)))
    }

    /// Replaces the first `bytes.len()` bytes of an object.
    pub fn write_bytes_to_obj(&self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        let mut writer = self.write_to_obj(id)?;
        writer.write_all(bytes).map_err(Error::from_io)?;
        writer.finish()
    }

    /// Makes every finished write durable, atomically.
    pub fn commit(&self) -> Result<()> {
        self.with_store(|store| store.commit())
    }

    /// Commits, then refuses every later operation with `Error::Closed`.
    pub fn close(&self) -> Result<()> {
        let mut store = self.inner.write();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        store.commit()
    }
}

impl<S: SplitStore + ObjectInfoStorer> ConcurrentStore<S> {
    /// The object's logical and allocated lengths.
    pub fn object_info(&self, id: ObjectId) -> Result<ObjectInfo> {
        self.with_store_shared(|store| store.object_info(id))
    }
}

impl<S: SplitStore + PrimeStorer> ConcurrentStore<S> {
    /// The prime object's id, creating it with `size` zero bytes if needed.
    pub fn prime_object(&self, size: u64) -> Result<ObjectId> {
        self.check_open()?;
        let _exclusive = self.locks.exclusive(&[bob_store_core::PRIME_OBJECT_ID.0]);
        self.locks.forget(bob_store_core::PRIME_OBJECT_ID.0);
        self.with_store(|store| store.prime_object(size))
    }
}

impl<S: SplitStore + BatchStorer> ConcurrentStore<S> {
    /// `count` empty objects laid end to end (see `BatchStorer::allocate_run`).
    pub fn allocate_run(&self, count: u64, size: u64) -> Result<Vec<ObjectId>> {
        self.with_store(|store| store.allocate_run(count, size))
    }

    /// Runs of empty objects reusing free space (see `BatchStorer::allocate_runs`).
    pub fn allocate_runs(&self, count: u64, size: u64, min_run: u64) -> Result<Vec<Vec<ObjectId>>> {
        self.with_store(|store| store.allocate_runs(count, size, min_run))
    }

    /// Fills objects made since the last commit with one positioned write per run. The ids
    /// are locked all at once, so overlapping batches cannot deadlock.
    pub fn write_batched_objs(&self, objects: &[(ObjectId, &[u8])]) -> Result<()> {
        self.check_open()?;
        let ids: Vec<u64> = objects.iter().map(|(id, _)| id.0).collect();
        let _exclusive = self.locks.exclusive(&ids);
        for &id in &ids {
            self.locks.forget(id);
        }
        let extents = self.with_store(|store| store.begin_batch(objects))?;
        let sections = bob_store_core::batch_sections(
            objects.iter().map(|(_, d)| *d).zip(extents.iter().copied()),
        );
        self.io_call(|io| {
            bob_io_helpers::write_batched_sections(io, &sections).map_err(|e| e.into_io())
        })?;
        let published: Vec<(ObjectId, Extent, u64, u64)> = objects
            .iter()
            .zip(&extents)
            .map(|(&(id, data), &extent)| {
                (id, extent, data.len() as u64, bob_io_helpers::checksum(data))
            })
            .collect();
        self.with_store(|store| store.publish_batch(&published))
    }
}

impl<A: bob_store_core::SpaceAllocator, B: FileBackend + Clone + 'static>
    ConcurrentStore<Store<A, B>>
{
    /// Checks the whole store (see `Store::verify`), with every object locked.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_open()?;
        let _all = self.locks.all();
        self.with_store_shared(|store| store.verify())
    }

    /// Compacts the store (see `Store::compact`), with every object locked.
    pub fn compact(&self) -> Result<CompactReport> {
        self.check_open()?;
        let _all = self.locks.all();
        self.locks.forget_all();
        self.with_store(|store| store.compact())
    }
}

/// Streams one object's bytes, checksum checked (see `CheckedRead`); holds its shared lock
/// until dropped.
pub struct ConcurrentReader<'a, S: SplitStore> {
    store: &'a ConcurrentStore<S>,
    _lock: SharedLock<'a>,
    id: ObjectId,
    located: Located,
    checked: CheckedRead,
}

impl<S: SplitStore> std::fmt::Debug for ConcurrentReader<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentReader")
            .field("id", &self.id)
            .field("checked", &self.checked)
            .finish()
    }
}

impl<S: SplitStore> std::fmt::Debug for ConcurrentWriter<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrentWriter")
            .field("id", &self.id)
            .field("position", &self.position)
            .finish()
    }
}

impl<S: SplitStore> Read for ConcurrentReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (store, located) = (self.store, &self.located);
        self.checked.read(buf, |dest, position| match &located.staged {
            Some(bytes) => {
                let start = position as usize;
                dest.copy_from_slice(&bytes[start..start + dest.len()]);
                Ok(())
            }
            None => {
                let _token = store.token();
                store.io.read_at(dest, located.extent.offset + position)
            }
        })
    }
}

/// Streams bytes into one object (new, or a copy-on-write rewrite holding the object's
/// exclusive lock). Finishing, explicitly or on drop, publishes it.
pub struct ConcurrentWriter<'a, S: SplitStore> {
    store: &'a ConcurrentStore<S>,
    _lock: Option<ExclusiveLock<'a>>,
    id: ObjectId,
    target: Extent,
    len: u64,
    position: u64,
    sum: StreamingChecksum,
    old: Option<Located>,
    done: bool,
}

impl<'a, S: SplitStore> ConcurrentWriter<'a, S> {
    fn new(
        store: &'a ConcurrentStore<S>,
        lock: Option<ExclusiveLock<'a>>,
        id: ObjectId,
        target: Extent,
        len: u64,
        old: Option<Located>,
    ) -> Self {
        Self {
            store,
            _lock: lock,
            id,
            target,
            len,
            position: 0,
            sum: StreamingChecksum::new(),
            old,
            done: false,
        }
    }

    /// The object being written.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Writes the rest (zeros, or the old bytes) and publishes the object.
    pub fn finish(mut self) -> Result<()> {
        self.complete()
    }

    fn complete(&mut self) -> Result<()> {
        self.done = true;
        let store = self.store;
        let (from, to) = (self.position, self.len);
        match &self.old {
            None => {
                store.io_call(|io| {
                    write_zeros(io, self.target.offset + from, to - from).map_err(|e| e.into_io())
                })?;
                bob_store_core::hash_zeros(&mut self.sum, to - from);
            }
            Some(old) => {
                let mut chunk = vec![0u8; CHUNK_BYTES.min((to - from) as usize)];
                let mut at = from;
                while at < to {
                    let n = ((to - at) as usize).min(chunk.len());
                    store.io_call(|io| io.read_at(&mut chunk[..n], old.extent.offset + at))?;
                    store.io_call(|io| io.write_at(&chunk[..n], self.target.offset + at))?;
                    self.sum.update(&chunk[..n]);
                    at += n as u64;
                }
            }
        }
        let (id, target, len, sum) = (self.id, self.target, self.len, self.sum.finish());
        let old = self.old.clone();
        let published = store.with_store(|inner| inner.publish(id, target, len, sum, old.as_ref()));
        if published.is_err() {
            // Closed, deleted meanwhile, or failed: the reserved space is not published.
            let _ =
                store.inner.write().abandon(if old.is_none() { Some(id) } else { None }, target);
        }
        published
    }
}

impl<S: SplitStore> Write for ConcurrentWriter<'_, S> {
    /// Writes all of `buf` or, if it would pass the object's end, nothing (an error).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        bob_store_core::check_write_bounds(self.id, self.position, buf.len() as u64, self.len)?;
        let offset = self.target.offset + self.position;
        self.store.io_call(|io| io.write_at(buf, offset)).map_err(Error::into_io)?;
        self.sum.update(buf);
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: SplitStore> Drop for ConcurrentWriter<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            // Errors are latched in the store (or the store is closed); Drop cannot report.
            let _ = self.complete();
        }
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
impl<S: SplitStore> bob_store_core::Storer for ConcurrentStore<S> {
    type Reader<'a>
        = ConcurrentReader<'a, S>
    where
        Self: 'a;
    type Writer<'a>
        = ConcurrentWriter<'a, S>
    where
        Self: 'a;

    fn new_obj(&mut self, size: u64) -> Result<ObjectId> {
        ConcurrentStore::new_obj(self, size)
    }

    fn delete_obj(&mut self, id: ObjectId) -> Result<()> {
        ConcurrentStore::delete_obj(self, id)
    }

    fn late_read_obj(&self, id: ObjectId) -> Result<ConcurrentReader<'_, S>> {
        ConcurrentStore::late_read_obj(self, id)
    }

    fn late_write_new_obj(&mut self, size: u64) -> Result<(ObjectId, ConcurrentWriter<'_, S>)> {
        ConcurrentStore::late_write_new_obj(self, size)
    }

    fn write_to_obj(&mut self, id: ObjectId) -> Result<ConcurrentWriter<'_, S>> {
        ConcurrentStore::write_to_obj(self, id)
    }

    fn commit(&mut self) -> Result<()> {
        ConcurrentStore::commit(self)
    }

    fn close(self) -> Result<()> {
        ConcurrentStore::close(&self)
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

impl<S: SplitStore> bob_store_core::ObjectWrite for ConcurrentWriter<'_, S> {
    fn finish(self) -> Result<()> {
        ConcurrentWriter::finish(self)
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl<S: SplitStore + ObjectInfoStorer> ObjectInfoStorer for ConcurrentStore<S> {
    fn object_info(&self, id: ObjectId) -> Result<ObjectInfo> {
        ConcurrentStore::object_info(self, id)
    }
}

impl<S: SplitStore + BatchStorer> BatchStorer for ConcurrentStore<S> {
    fn allocate_run(&mut self, count: u64, size: u64) -> Result<Vec<ObjectId>> {
        ConcurrentStore::allocate_run(self, count, size)
    }

    fn allocate_runs(&mut self, count: u64, size: u64, min_run: u64) -> Result<Vec<Vec<ObjectId>>> {
        ConcurrentStore::allocate_runs(self, count, size, min_run)
    }

    fn write_batched_objs(&mut self, objects: &[(ObjectId, &[u8])]) -> Result<()> {
        ConcurrentStore::write_batched_objs(self, objects)
    }
}

impl<S: SplitStore + PrimeStorer> PrimeStorer for ConcurrentStore<S> {
    fn prime_object(&mut self, size: u64) -> Result<ObjectId> {
        ConcurrentStore::prime_object(self, size)
    }
}
