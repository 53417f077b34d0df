//! The engines under comparison, each behind one of two small traits, so every engine runs
//! the same workload code.
//!
//! - [`ObjectEngine`]: objects named by `u64` keys, written in batches that are durable when
//!   the call returns, read one at a time, deleted in batches, compacted on request. bob's
//!   stores keep a map from the key to the object id they hand out, in the store, committed
//!   with each batch; marble takes the key as its object id; the key-value engines store the
//!   key big-endian.
//! - [`KvEngine`]: byte keys and values, written in transactions that are durable or not,
//!   read by key, by range and by count.
//!
//! Reads go through a reader ([`ObjectReads`], [`KvReads`]) that a read loop takes once: one
//! read transaction per loop for redb and LMDB, as their own benchmarks read, not one per get.
//!
//! Durability is compared like for like: a durable write returns only after the engine's
//! fsync. A non-durable one is synced later; what each engine promises in between (survives a
//! process crash, or not) is [`KvEngine::unsynced_promise`], and the report prints it.
//!
//! Every engine gets the same cache budget ([`Settings::cache_bytes`]) where it has a cache of
//! its own; the others (LMDB, marble, bob's object stores) read through the OS page cache,
//! which on the bench machine holds every data set whole.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{Context, Result, anyhow};

/// What every engine is configured with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bytes of cache for engines that keep one in the process (redb's page cache, fjall's
    /// block cache, bob's treap node budget).
    pub cache_bytes: u64,
}

/// Reads from an object engine, from one read transaction or snapshot where the engine has
/// them.
pub trait ObjectReads {
    /// The bytes of object `key`, if it exists.
    fn read(&self, key: u64) -> Result<Option<Vec<u8>>>;
}

/// An object store under test.
pub trait ObjectEngine: Send {
    /// Writes (creates or replaces) every object of `objects`; durable on return.
    fn write_batch(&mut self, objects: &[(u64, &[u8])]) -> Result<()>;
    /// Deletes every object of `keys`; durable on return.
    fn delete_batch(&mut self, keys: &[u64]) -> Result<()>;
    /// A reader for a loop of reads (one read transaction for the engines that have them).
    fn reader(&self) -> Result<Box<dyn ObjectReads + '_>>;
    /// The bytes of object `key`, if it exists, through a reader of its own.
    fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
        self.reader()?.read(key)
    }
    /// Gives unused space back (the engine's own compaction or maintenance); `false` if the
    /// engine has no such operation (then the report shows no compaction figure for it).
    fn compact(&mut self) -> Result<bool>;
    /// Closes the engine, so that its files are complete on disk.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Reads from a key-value engine, from one read transaction or snapshot where the engine has
/// them.
pub trait KvReads {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Reads up to `n` entries from `from` on; returns how many there were.
    fn range(&self, from: &[u8], n: usize) -> Result<usize>;
}

/// A key-value engine under test.
pub trait KvEngine: Send + Sync {
    /// One transaction: `puts` then `deletes`, durable on return if `durable`.
    fn write(&mut self, puts: &[(&[u8], &[u8])], deletes: &[&[u8]], durable: bool) -> Result<()>;
    /// Makes every earlier write durable.
    fn sync(&mut self) -> Result<()>;
    /// What a non-durable write promises until the next sync.
    fn unsynced_promise(&self) -> Promise;
    /// A reader for a loop of reads (one read transaction for the engines that have them).
    fn reader(&self) -> Result<Box<dyn KvReads + '_>>;
    /// The value of `key`, through a reader of its own.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.reader()?.get(key)
    }
    /// Entries stored.
    fn count(&self) -> Result<u64>;
    /// Gives unused space back; `false` if the engine has no such operation.
    fn compact(&mut self) -> Result<bool>;
    /// Closes the engine, so that its files are complete on disk.
    fn close(self: Box<Self>) -> Result<()>;
}

/// What a write promises when the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Promise {
    /// On the device: survives a power cut (the engine synced before returning).
    Synced,
    /// On the device once the batch it belongs to is flushed or committed (one sync per
    /// batch); a crash before then loses the whole batch, never part of an item.
    SyncedPerBatch,
    /// In the operating system's hands: survives a crash of the process, not a power cut.
    ProcessCrash,
    /// In the process only: lost if the process dies before the next sync.
    Nothing,
}

impl Promise {
    /// A few words for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Promise::Synced => "synced",
            Promise::SyncedPerBatch => "synced once per batch",
            Promise::ProcessCrash => "survives a process crash",
            Promise::Nothing => "lost in a process crash",
        }
    }
}

/// The object engines, by name.
pub const OBJECT_ENGINES: &[&str] =
    &["bob-base", "bob-multi", "bob-pread", "marble", "redb", "lmdb", "fjall"];

/// The key-value engines, by name (`sled` only with the `sled` feature).
pub fn kv_engines() -> Vec<&'static str> {
    let mut engines = vec!["bob-btree", "bob-treap", "redb", "lmdb", "fjall"];
    if cfg!(feature = "sled") {
        engines.push("sled");
    }
    engines
}

/// How engine `name` is configured, for the report.
pub fn configuration(suite: &str, name: &str, settings: &Settings) -> String {
    let cache = format!("{} MiB", settings.cache_bytes >> 20);
    match (suite, name) {
        (_, "bob-base" | "bob-multi") => {
            "default options; reads of up to 64 KiB copy out of a memory map of the file \
             (a device read error is contained and returned as an error); key -> id map in \
             the store, committed with each batch"
                .into()
        }
        (_, "bob-pread") => "as bob-base, with `StoreOptions::mapped_reads` off: every read \
             is a `pread` through the OS page cache"
            .into(),
        (_, "bob-btree") => "named B+tree (`bob_btree::Db`), 4 KiB nodes, write-ahead log \
             (a durable commit appends one record and syncs once; non-durable commits are \
             written to the OS, `Durability::Buffered`); checkpoints after 64 MiB of log"
            .into(),
        (_, "bob-treap") => format!("payload treap, node budget {cache} (about 320 B a node)"),
        (_, "marble") => "`fsync_each_batch`; reads through the OS page cache".into(),
        (_, "redb") => format!("cache {cache}; `Durability::None` for non-durable commits"),
        (_, "lmdb") => "map 64 GiB; `MDB_NOSYNC` for non-durable commits; compaction is a \
             compacting copy (`mdb_env_copy2` with `MDB_CP_COMPACT`) renamed over the file"
            .into(),
        ("objects", "fjall") => format!(
            "block cache {cache}; key-value separation (values over 1 KiB in blob files); \
             compression off (payloads are random)"
        ),
        (_, "fjall") => format!(
            "block cache {cache}; compression off (payloads are random); non-durable commits \
             flushed to the OS (`PersistMode::Buffer`, fjall's default journal mode)"
        ),
        (_, "sled") => "sled 0.34 defaults".into(),
        _ => String::new(),
    }
}

/// Opens object engine `name` in `dir` (created or reopened).
pub fn open_objects(name: &str, dir: &Path, settings: &Settings) -> Result<Box<dyn ObjectEngine>> {
    std::fs::create_dir_all(dir)?;
    Ok(match name {
        "bob-base" => Box::new(bob::Objects::<bob_alloc::BasicAllocator>::open(dir, true)?),
        "bob-multi" => Box::new(bob::Objects::<bob_alloc::OmniBlockAllocator>::open(dir, true)?),
        "bob-pread" => Box::new(bob::Objects::<bob_alloc::BasicAllocator>::open(dir, false)?),
        "marble" => Box::new(marble_engine::Objects::open(dir)?),
        // The key-value peers store an object under its key, big-endian.
        "redb" => Box::new(KvObjects(Box::new(redb_engine::Kv::open(dir, settings)?))),
        "lmdb" => Box::new(KvObjects(Box::new(lmdb::Kv::open(dir)?))),
        // fjall keeps large values apart from its tree, as its docs advise for blobs.
        "fjall" => Box::new(KvObjects(Box::new(fjall_engine::Kv::open(dir, settings, true)?))),
        other => return Err(anyhow!("no object engine named {other}")),
    })
}

/// Opens key-value engine `name` in `dir` (created or reopened).
pub fn open_kv(name: &str, dir: &Path, settings: &Settings) -> Result<Box<dyn KvEngine>> {
    std::fs::create_dir_all(dir)?;
    Ok(match name {
        "bob-treap" => Box::new(bob::Kv::open(dir, settings)?),
        "bob-btree" => Box::new(btree::Kv::open(dir)?),
        "redb" => Box::new(redb_engine::Kv::open(dir, settings)?),
        "lmdb" => Box::new(lmdb::Kv::open(dir)?),
        "fjall" => Box::new(fjall_engine::Kv::open(dir, settings, false)?),
        #[cfg(feature = "sled")]
        "sled" => Box::new(sled_engine::Kv::open(dir)?),
        other => return Err(anyhow!("no key-value engine named {other}")),
    })
}

/// An object store made of a key-value engine: object `k` is the value under `k`'s
/// big-endian bytes, and every batch is one durable transaction.
struct KvObjects(Box<dyn KvEngine>);

/// Object reads through a key-value reader.
struct KvObjectReads<'a>(Box<dyn KvReads + 'a>);

impl ObjectReads for KvObjectReads<'_> {
    fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
        self.0.get(&key.to_be_bytes())
    }
}

impl ObjectEngine for KvObjects {
    fn write_batch(&mut self, objects: &[(u64, &[u8])]) -> Result<()> {
        let keys: Vec<[u8; 8]> = objects.iter().map(|(k, _)| k.to_be_bytes()).collect();
        let puts: Vec<(&[u8], &[u8])> =
            keys.iter().zip(objects).map(|(k, (_, v))| (&k[..], *v)).collect();
        self.0.write(&puts, &[], true)
    }

    fn delete_batch(&mut self, keys: &[u64]) -> Result<()> {
        let keys: Vec<[u8; 8]> = keys.iter().map(|k| k.to_be_bytes()).collect();
        let deletes: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        self.0.write(&[], &deletes, true)
    }

    fn reader(&self) -> Result<Box<dyn ObjectReads + '_>> {
        Ok(Box::new(KvObjectReads(self.0.reader()?)))
    }

    fn compact(&mut self) -> Result<bool> {
        self.0.compact()
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.0.close()
    }
}

impl<T: ObjectReads + ?Sized> ObjectReads for &T {
    fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
        (**self).read(key)
    }
}

impl<T: KvReads + ?Sized> KvReads for &T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }

    fn range(&self, from: &[u8], n: usize) -> Result<usize> {
        (**self).range(from, n)
    }
}

/// Durable commits and checkpoints bob's stores made in this process (each run is a process
/// of its own): the figures the report's "Checkpoints" table shows.
pub fn bob_commit_counts() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (bob::COMMITS.load(Relaxed), bob::CHECKPOINTS.load(Relaxed))
}

mod bob {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Durable commits made (each `commit` that had something to commit).
    pub(super) static COMMITS: AtomicU64 = AtomicU64::new(0);
    /// Checkpoints made (counted when a handle closes; a handle dropped without `close` is
    /// not counted).
    pub(super) static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);

    /// Counts a store's checkpoints when its handle goes.
    fn count_checkpoints<A: SpaceAllocator, B: bob_io_helpers::FileBackend>(store: &Store<A, B>) {
        CHECKPOINTS.fetch_add(store.checkpoints(), Relaxed);
    }
    use bob_store_core::{
        ObjectId, PRIME_OBJECT_ID, PrimeStorer, SpaceAllocator, Store, StoreOptions, Storer,
    };
    use bob_treap::PersistentTreap;

    /// Keys per chunk of the key → object id map (4 KiB of ids).
    const KEYS_PER_CHUNK: usize = 512;

    /// Bytes of map changes kept as deltas before they are folded into the chunks: at least
    /// this, and at least half the chunks' bytes, so a fold (which rewrites every chunk a
    /// delta touched) costs the same per change at any map size, as a log-structured map's
    /// compaction does.
    const FOLD_DELTA_BYTES: usize = 256 << 10;

    /// A bob store, with the key → object id map a user would keep in it: the map in chunk
    /// objects of 512 ids and a directory object listing them, plus a chain of delta objects
    /// (the (key, id) pairs each batch changed, an id of 0 for a deleted key, each naming the
    /// one before), the prime object naming the directory and the newest delta. A batch that
    /// only changes keys the chunks cover writes one delta in the same commit as its objects;
    /// past 256 KiB of deltas, or when the map grows, the changed chunks are rewritten and
    /// the deltas deleted, in the batch's commit. After a crash every key whose batch
    /// returned is found, as with the peers. Reads use the map in memory.
    pub(super) struct Objects<A: SpaceAllocator> {
        store: Store<A, bob_io_helpers::OsFile>,
        /// Key `k`'s object id, 0 for none (0 is the prime object, never a key's).
        ids: Vec<u64>,
        /// The chunk objects, chunk `i` holding keys `512i..512i + 512`.
        chunks: Vec<ObjectId>,
        /// The object listing the chunks (0: none yet), as the prime object names it.
        directory: u64,
        /// Chunks whose keys changed since the chunks were last written.
        dirty: std::collections::BTreeSet<usize>,
        /// Keys the current batch changed.
        changed: Vec<usize>,
        /// The delta objects since the chunks were last written, oldest first, and their
        /// bytes.
        deltas: Vec<ObjectId>,
        delta_bytes: usize,
    }

    fn le(bytes: &[u8], at: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(bytes.get(at..at + 8).context("a short map object")?.try_into()?))
    }

    impl<A: SpaceAllocator + Send> Objects<A> {
        /// Opens the store (reads mapped if `mapped`, as by default) and reads its map back.
        pub(super) fn open(dir: &Path, mapped: bool) -> Result<Self> {
            let path = dir.join("objects.bob");
            let options = StoreOptions { mapped_reads: mapped, ..StoreOptions::default() };
            let empty = |store| Self {
                store,
                ids: Vec::new(),
                chunks: Vec::new(),
                directory: 0,
                dirty: std::collections::BTreeSet::new(),
                changed: Vec::new(),
                deltas: Vec::new(),
                delta_bytes: 0,
            };
            if !path.exists() {
                let mut store = Store::create(&path, options)?;
                store.prime_object(16)?;
                store.commit()?;
                return Ok(empty(store));
            }
            let mut map = empty(Store::open(&path, options)?);
            let pointer = map.store.read_bytes_from_obj(PRIME_OBJECT_ID)?;
            map.directory = le(&pointer, 0)?;
            if map.directory != 0 {
                let list = map.store.read_bytes_from_obj(ObjectId(map.directory))?;
                for raw in list.chunks_exact(8) {
                    let chunk = ObjectId(u64::from_le_bytes(raw.try_into()?));
                    map.chunks.push(chunk);
                    for c in map.store.read_bytes_from_obj(chunk)?.chunks_exact(8) {
                        let id = u64::from_le_bytes(c.try_into()?);
                        map.ids.push(id);
                    }
                }
            }
            // The deltas, newest first along the chain: the first value seen for a key is its
            // last.
            let mut next = if pointer.len() >= 16 { le(&pointer, 8)? } else { 0 };
            let mut seen = std::collections::HashSet::new();
            while next != 0 {
                let bytes = map.store.read_bytes_from_obj(ObjectId(next))?;
                map.deltas.push(ObjectId(next));
                map.delta_bytes += bytes.len();
                for pair in bytes.get(8..).unwrap_or_default().chunks_exact(16) {
                    let key = usize::try_from(le(pair, 0)?)?;
                    anyhow::ensure!(key < map.ids.len(), "a delta names key {key} past the map");
                    if seen.insert(key) {
                        map.ids[key] = le(pair, 8)?;
                        map.dirty.insert(key / KEYS_PER_CHUNK);
                    }
                }
                next = le(&bytes, 0)?;
            }
            map.deltas.reverse(); // oldest first
            Ok(map)
        }

        /// Key `key`'s object, if it has one.
        fn id(&self, key: usize) -> Option<ObjectId> {
            self.ids.get(key).copied().filter(|&id| id != 0).map(ObjectId)
        }

        fn chunk_bytes(&self, chunk: usize) -> Vec<u8> {
            let mut bytes = vec![0u8; KEYS_PER_CHUNK * 8];
            let first = chunk * KEYS_PER_CHUNK;
            let keys = self.ids.get(first..).unwrap_or_default().iter().take(KEYS_PER_CHUNK);
            for (slot, id) in bytes.chunks_exact_mut(8).zip(keys) {
                slot.copy_from_slice(&id.to_le_bytes());
            }
            bytes
        }

        fn point(&mut self, delta: u64) -> Result<()> {
            let bytes: Vec<u8> =
                [self.directory, delta].iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok(self.store.replace_obj(PRIME_OBJECT_ID, &bytes)?)
        }

        /// Records the batch's map changes (a delta, or the chunks rewritten) and commits
        /// them with the batch.
        fn commit(&mut self) -> Result<()> {
            let mut changed = std::mem::take(&mut self.changed);
            changed.sort_unstable();
            changed.dedup();
            let grows = changed.last().is_some_and(|&k| k / KEYS_PER_CHUNK >= self.chunks.len());
            let mut chunks: Vec<usize> = changed.iter().map(|k| k / KEYS_PER_CHUNK).collect();
            chunks.dedup();
            self.dirty.extend(chunks);
            let fold_at = FOLD_DELTA_BYTES.max(self.chunks.len() * KEYS_PER_CHUNK * 8 / 2);
            if !changed.is_empty() && !grows && self.delta_bytes < fold_at {
                let prev = self.deltas.last().map_or(0, |d| d.0);
                let mut bytes = Vec::with_capacity(8 + changed.len() * 16);
                bytes.extend_from_slice(&prev.to_le_bytes());
                for &key in &changed {
                    bytes.extend_from_slice(&(key as u64).to_le_bytes());
                    bytes.extend_from_slice(&self.ids[key].to_le_bytes());
                }
                let delta = self.store.write_new_obj_from_bytes(&bytes)?;
                self.deltas.push(delta);
                self.delta_bytes += bytes.len();
                self.point(delta.0)?;
            } else if !changed.is_empty() {
                self.fold()?;
            }
            COMMITS.fetch_add(1, Relaxed);
            Ok(self.store.commit()?)
        }

        /// Rewrites the chunks changed since they were last written (new ones, and a new
        /// directory, where the map grew) and deletes the deltas.
        fn fold(&mut self) -> Result<()> {
            let dirty = std::mem::take(&mut self.dirty);
            let highest = dirty.last().copied();
            for &chunk in dirty.iter().filter(|&&c| c < self.chunks.len()) {
                let bytes = self.chunk_bytes(chunk);
                self.store.write_bytes_to_obj(self.chunks[chunk], &bytes)?;
            }
            if let Some(highest) = highest.filter(|&h| h >= self.chunks.len()) {
                for chunk in self.chunks.len()..=highest {
                    let bytes = self.chunk_bytes(chunk);
                    self.chunks.push(self.store.write_new_obj_from_bytes(&bytes)?);
                }
                let list: Vec<u8> = self.chunks.iter().flat_map(|c| c.0.to_le_bytes()).collect();
                let old = self.directory;
                self.directory = self.store.write_new_obj_from_bytes(&list)?.0;
                if old != 0 {
                    self.store.delete_obj(ObjectId(old))?;
                }
            }
            for delta in std::mem::take(&mut self.deltas) {
                self.store.delete_obj(delta)?;
            }
            self.delta_bytes = 0;
            self.point(0)
        }
    }

    impl<A: SpaceAllocator + Send> ObjectReads for Objects<A> {
        fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
            match self.id(key as usize) {
                Some(id) => Ok(Some(self.store.read_bytes_from_obj(id)?)),
                None => Ok(None),
            }
        }
    }

    impl<A: SpaceAllocator + Send> ObjectEngine for Objects<A> {
        fn write_batch(&mut self, objects: &[(u64, &[u8])]) -> Result<()> {
            for &(key, bytes) in objects {
                let key = key as usize;
                if key >= self.ids.len() {
                    self.ids.resize(key + 1, 0);
                }
                match self.id(key) {
                    // Same length: rewritten in place of its bytes; another length: replaced
                    // (a rewrite keeps bytes it does not cover, so a shorter value would
                    // read back with the old one's tail).
                    Some(id)
                        if bob_store_core::ObjectInfoStorer::object_info(&self.store, id)?.len
                            == bytes.len() as u64 =>
                    {
                        self.store.write_bytes_to_obj(id, bytes)?
                    }
                    Some(id) => self.store.replace_obj(id, bytes)?,
                    None => {
                        self.ids[key] = self.store.write_new_obj_from_bytes(bytes)?.0;
                        self.changed.push(key);
                    }
                }
            }
            self.commit()
        }

        fn delete_batch(&mut self, keys: &[u64]) -> Result<()> {
            for &key in keys {
                let Some(slot) = self.ids.get_mut(key as usize) else { continue };
                let id = std::mem::take(slot);
                if id != 0 {
                    self.store.delete_obj(ObjectId(id))?;
                    self.changed.push(key as usize);
                }
            }
            self.commit()
        }

        fn reader(&self) -> Result<Box<dyn ObjectReads + '_>> {
            Ok(Box::new(self))
        }

        fn compact(&mut self) -> Result<bool> {
            self.store.compact()?;
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            // The close is a checkpoint of its own when anything is journaled.
            count_checkpoints(&self.store);
            CHECKPOINTS.fetch_add(u64::from(self.store.journaled_commits() > 0), Relaxed);
            Ok(self.store.close()?)
        }
    }

    type Tree = PersistentTreap<Vec<u8>, Vec<u8>>;
    type BaseStore = bob_store_core::BaseStore;

    /// bob's payload treap over a base store; the root id lives in the prime object. Reads
    /// share a reader lock while the search path is in memory (`get_cached`) and take the
    /// writer lock only to load nodes.
    pub(super) struct Kv {
        inner: RwLock<(Tree, BaseStore)>,
    }

    /// Bytes a node of these keys (24 B) and values (150 B) takes in memory, roughly: the
    /// bytes, two `Vec` headers and the node's links. The cache budget is turned into nodes
    /// with it.
    const NODE_BYTES: u64 = 320;

    impl Kv {
        pub(super) fn open(dir: &Path, settings: &Settings) -> Result<Self> {
            let path = dir.join("kv.bob");
            let (mut tree, store) = if path.exists() {
                let store = BaseStore::open(&path, StoreOptions::default())?;
                let record = store.read_bytes_from_obj(PRIME_OBJECT_ID)?;
                let root = u64::from_le_bytes(record[..8].try_into()?);
                let tree =
                    if root == 0 { Tree::new() } else { Tree::load(&store, ObjectId(root))? };
                (tree, store)
            } else {
                (Tree::new(), BaseStore::create(&path, StoreOptions::default())?)
            };
            let budget = usize::try_from(settings.cache_bytes / NODE_BYTES)?;
            tree.set_memory_budget(Some(budget));
            Ok(Self { inner: RwLock::new((tree, store)) })
        }

        fn lock(&self) -> std::sync::RwLockWriteGuard<'_, (Tree, BaseStore)> {
            self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    impl KvReads for Kv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            {
                let shared = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(found) = shared.0.get_cached(key) {
                    return Ok(found);
                }
            }
            let (tree, store) = &mut *self.lock();
            Ok(tree.get(store, key)?)
        }

        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            {
                let shared = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(found) = shared.0.range_cached(from.to_vec().., n) {
                    return Ok(found.len());
                }
            }
            let (tree, store) = &mut *self.lock();
            Ok(tree.range_limited(store, from.to_vec().., n)?.len())
        }
    }

    impl KvEngine for Kv {
        fn write(
            &mut self,
            puts: &[(&[u8], &[u8])],
            deletes: &[&[u8]],
            durable: bool,
        ) -> Result<()> {
            let (tree, store) = &mut *self.lock();
            for &(k, v) in puts {
                tree.insert(store, k.to_vec(), v.to_vec())?;
            }
            for &k in deletes {
                tree.delete(store, k)?;
            }
            // The root is published before the replaced nodes are deleted.
            tree.batch_persist_with(store, |store, root| {
                store.prime_object(8)?;
                let root = root.map_or(0, |r| r.0);
                Ok(store.write_bytes_to_obj(PRIME_OBJECT_ID, &root.to_le_bytes())?)
            })?;
            if durable {
                COMMITS.fetch_add(1, Relaxed);
                store.commit()?;
            }
            Ok(())
        }

        fn sync(&mut self) -> Result<()> {
            COMMITS.fetch_add(1, Relaxed);
            Ok(self.lock().1.commit()?)
        }

        fn unsynced_promise(&self) -> Promise {
            // The nodes are written to the file, but no commit points at them yet.
            Promise::Nothing
        }

        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            Ok(Box::new(self))
        }

        fn count(&self) -> Result<u64> {
            Ok(self.lock().0.len())
        }

        fn compact(&mut self) -> Result<bool> {
            self.lock().1.compact()?;
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            let (_, store) =
                self.inner.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            count_checkpoints(&store);
            CHECKPOINTS.fetch_add(u64::from(store.journaled_commits() > 0), Relaxed);
            Ok(store.close()?)
        }
    }
}

mod btree {
    use std::ops::Bound;
    use std::sync::atomic::Ordering::Relaxed;

    use bob_btree::{Db, Durability, ReadTree};

    use super::*;

    const TREE: &str = "kv";

    /// bob's B+tree: one named tree in a `Db`; a batch is one write transaction.
    pub(super) struct Kv {
        db: Db,
    }

    impl Kv {
        pub(super) fn open(dir: &Path) -> Result<Self> {
            let path = dir.join("kv.bob");
            let db = if path.exists() { Db::open(&path)? } else { Db::create(&path)? };
            Ok(Self { db })
        }
    }

    /// The tree opened once for a whole read loop, as the other engines' adapters open their
    /// table once (`None`: the tree does not exist yet).
    struct Reads<'a>(Option<ReadTree<'a, Vec<u8>, Vec<u8>>>);

    impl KvReads for Reads<'_> {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            match &self.0 {
                Some(tree) => Ok(tree.tree().get(key)?),
                None => Ok(None),
            }
        }

        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            let Some(tree) = &self.0 else { return Ok(0) };
            let mut count = 0;
            let range = (Bound::Included(from), Bound::Unbounded);
            for entry in tree.tree().range_bytes::<[u8], _>(range)?.take(n) {
                let (k, v) = entry?;
                std::hint::black_box((k.len(), v.len()));
                count += 1;
            }
            Ok(count)
        }
    }

    impl KvEngine for Kv {
        fn write(
            &mut self,
            puts: &[(&[u8], &[u8])],
            deletes: &[&[u8]],
            durable: bool,
        ) -> Result<()> {
            let mut tx = self.db.begin_write()?;
            {
                let mut tree = tx.open_tree::<Vec<u8>, Vec<u8>>(TREE)?;
                // `put` and `delete`: the other engines' writes return no old value either.
                for &(k, v) in puts {
                    tree.put(k, v)?;
                }
                for &k in deletes {
                    tree.delete(k)?;
                }
            }
            if durable {
                super::bob::COMMITS.fetch_add(1, Relaxed);
                tx.commit(Durability::Durable)?;
            } else {
                tx.commit(Durability::Buffered)?;
            }
            Ok(())
        }

        fn sync(&mut self) -> Result<()> {
            super::bob::COMMITS.fetch_add(1, Relaxed);
            Ok(self.db.sync()?)
        }

        fn unsynced_promise(&self) -> Promise {
            // A buffered commit's log record is written to the OS before `commit` returns.
            Promise::ProcessCrash
        }

        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            Ok(Box::new(Reads(self.db.begin_read().into_tree(TREE)?)))
        }

        fn count(&self) -> Result<u64> {
            let read = self.db.begin_read();
            Ok(read.open_tree::<Vec<u8>, Vec<u8>>(TREE).map_or(0, |t| t.len()))
        }

        fn compact(&mut self) -> Result<bool> {
            self.db.compact()?;
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            let (checkpoints, journaled) = self.db.store().journal_counts();
            super::bob::CHECKPOINTS.fetch_add(checkpoints + u64::from(journaled > 0), Relaxed);
            Ok(self.db.close()?)
        }
    }
}

mod marble_engine {
    use super::*;

    /// marble: a batch is one file, fsynced; maintenance compacts.
    pub(super) struct Objects {
        marble: marble::Marble,
    }

    impl Objects {
        pub(super) fn open(dir: &Path) -> Result<Self> {
            let config = marble::Config {
                path: dir.join("marble"),
                fsync_each_batch: true,
                ..marble::Config::default()
            };
            Ok(Self { marble: config.open()? })
        }
    }

    impl ObjectReads for Objects {
        fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
            Ok(self.marble.read(key)?.map(Vec::from))
        }
    }

    impl ObjectEngine for Objects {
        fn write_batch(&mut self, objects: &[(u64, &[u8])]) -> Result<()> {
            Ok(self.marble.write_batch(objects.iter().map(|&(k, v)| (k, Some(v))))?)
        }

        fn delete_batch(&mut self, keys: &[u64]) -> Result<()> {
            Ok(self.marble.write_batch(keys.iter().map(|&k| (k, None::<&[u8]>)))?)
        }

        fn reader(&self) -> Result<Box<dyn ObjectReads + '_>> {
            Ok(Box::new(self))
        }

        fn compact(&mut self) -> Result<bool> {
            self.marble.maintenance()?;
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.marble.sync_all()?;
            Ok(())
        }
    }
}

mod redb_engine {
    use super::*;
    use redb::{
        Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase,
        ReadableTableMetadata, TableDefinition,
    };

    const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

    /// redb: durable commits use `Immediate`, the others `None` (redb frees pages only after
    /// a durable commit, and a `None` commit is lost if the process dies before the next
    /// durable one). Its cache is the profile's budget.
    pub(super) struct Kv {
        db: Database,
    }

    impl Kv {
        pub(super) fn open(dir: &Path, settings: &Settings) -> Result<Self> {
            let db = Database::builder()
                .set_cache_size(usize::try_from(settings.cache_bytes)?)
                .create(dir.join("redb"))?;
            let txn = db.begin_write()?;
            txn.open_table(KV)?;
            txn.commit()?;
            Ok(Self { db })
        }
    }

    /// One read transaction and the table opened in it, for a whole read loop.
    struct Reads {
        table: ReadOnlyTable<&'static [u8], &'static [u8]>,
        _txn: ReadTransaction,
    }

    impl KvReads for Reads {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(self.table.get(key)?.map(|v| v.value().to_vec()))
        }

        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            let mut count = 0;
            for item in self.table.range(from..)?.take(n) {
                let (k, v) = item?;
                std::hint::black_box((k.value().len(), v.value().len()));
                count += 1;
            }
            Ok(count)
        }
    }

    impl KvEngine for Kv {
        fn write(
            &mut self,
            puts: &[(&[u8], &[u8])],
            deletes: &[&[u8]],
            durable: bool,
        ) -> Result<()> {
            let mut txn = self.db.begin_write()?;
            if !durable {
                txn.set_durability(Durability::None)?;
            }
            {
                let mut table = txn.open_table(KV)?;
                for &(k, v) in puts {
                    table.insert(k, v)?;
                }
                for &k in deletes {
                    table.remove(k)?;
                }
            }
            Ok(txn.commit()?)
        }

        fn sync(&mut self) -> Result<()> {
            // An empty durable commit makes the earlier non-durable ones durable.
            let txn = self.db.begin_write()?;
            Ok(txn.commit()?)
        }

        fn unsynced_promise(&self) -> Promise {
            Promise::Nothing
        }

        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(KV)?;
            Ok(Box::new(Reads { table, _txn: txn }))
        }

        fn count(&self) -> Result<u64> {
            let txn = self.db.begin_read()?;
            Ok(txn.open_table(KV)?.len()?)
        }

        fn compact(&mut self) -> Result<bool> {
            self.db.compact()?;
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }
}

mod lmdb {
    use super::*;
    use heed::types::Bytes;
    use heed::{
        CompactionOption, Database, Env, EnvFlags, EnvOpenOptions, FlagSetMode, RoTxn, WithTls,
    };

    /// LMDB's map size: it must cover the peak, and costs only address space.
    const MAP_SIZE: usize = 64 << 30;

    /// Opens the environment in `path` with LMDB's default, durable commits (data synced,
    /// then the meta page synced); `commit` turns `MDB_NOSYNC` on for a non-durable one.
    fn open_env(path: &Path) -> Result<Env> {
        std::fs::create_dir_all(path)?;
        let mut options = EnvOpenOptions::new();
        options.map_size(MAP_SIZE).max_dbs(4);
        // SAFETY: LMDB requires that an environment be opened at most once per process at a
        // time and its file not be modified other than through LMDB. Each bench process opens
        // one fresh directory of its own; `compact` closes the environment (waiting for the
        // close) before it renames the compacted copy in and opens it again. The smoke run in
        // `cargo xtask ci` exercises both.
        unsafe { options.open(path) }.context("opening LMDB")
    }

    /// Creates (or opens) database `name`, committed durably.
    fn create_db<KC: 'static, DC: 'static>(
        env: &Env,
        name: &str,
    ) -> Result<Database<'static, KC, DC>> {
        let txn = env.write_txn()?;
        let db = env
            .create_databases_and_commit(txn, |opener, txn| -> Result<_, heed::Error> {
                let db = opener.create_database::<KC, DC>(txn, Some(name))?;
                Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
            })?
            .unwrap_commit();
        env.force_sync()?;
        Ok(db)
    }

    /// Commits `txn`, durably (LMDB's own syncs) or not (`MDB_NOSYNC` for this commit; a
    /// later `force_sync` or durable commit makes it durable).
    fn commit(env: &Env, txn: heed::RwTxn<'_>, durable: bool) -> Result<()> {
        let mode = if durable { FlagSetMode::Disable } else { FlagSetMode::Enable };
        // SAFETY: only the thread holding the write transaction changes flags (writes are
        // serialized by `&mut self`), and `MDB_NOSYNC` is on only for commits that asked
        // not to be durable.
        unsafe { env.set_flags(EnvFlags::NO_SYNC, mode)? };
        txn.commit()?;
        Ok(())
    }

    type KvDb = Database<'static, Bytes, Bytes>;

    /// LMDB through heed.
    pub(super) struct Kv {
        path: PathBuf,
        /// `None` only inside `compact`, between closing and reopening.
        env: Option<Env>,
        db: KvDb,
    }

    impl Kv {
        pub(super) fn open(dir: &Path) -> Result<Self> {
            let path = dir.join("lmdb");
            let env = open_env(&path)?;
            let db = create_db(&env, "kv")?;
            Ok(Self { path, env: Some(env), db })
        }

        fn env(&self) -> Result<&Env> {
            self.env.as_ref().context("the LMDB environment failed to reopen")
        }
    }

    /// One read transaction for a whole read loop.
    struct Reads<'a> {
        txn: RoTxn<'a, WithTls>,
        db: KvDb,
    }

    impl KvReads for Reads<'_> {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(self.db.get(&self.txn, key)?.map(<[u8]>::to_vec))
        }

        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            let mut count = 0;
            let bounds = (std::ops::Bound::Included(from), std::ops::Bound::Unbounded);
            for item in self.db.range(&self.txn, &bounds)?.take(n) {
                let (k, v) = item?;
                std::hint::black_box((k.len(), v.len()));
                count += 1;
            }
            Ok(count)
        }
    }

    impl KvEngine for Kv {
        fn write(
            &mut self,
            puts: &[(&[u8], &[u8])],
            deletes: &[&[u8]],
            durable: bool,
        ) -> Result<()> {
            let env = self.env()?;
            let mut txn = env.write_txn()?;
            for &(k, v) in puts {
                self.db.put(&mut txn, k, v)?;
            }
            for &k in deletes {
                self.db.delete(&mut txn, k)?;
            }
            commit(env, txn, durable)
        }

        fn sync(&mut self) -> Result<()> {
            Ok(self.env()?.force_sync()?)
        }

        fn unsynced_promise(&self) -> Promise {
            // The commit is written to the file (the OS's page cache); only the syncs are
            // skipped.
            Promise::ProcessCrash
        }

        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            Ok(Box::new(Reads { txn: self.env()?.read_txn()?, db: self.db }))
        }

        fn count(&self) -> Result<u64> {
            let txn = self.env()?.read_txn()?;
            Ok(self.db.len(&txn)?)
        }

        /// LMDB's own way to give space back: a compacting copy (free pages left out, pages
        /// renumbered), synced, then renamed over the data file and opened.
        fn compact(&mut self) -> Result<bool> {
            let copy = self.path.join("compact.mdb");
            self.env()?.copy_to_path(&copy, CompactionOption::Enabled)?.sync_all()?;
            if let Some(env) = self.env.take() {
                env.prepare_for_closing().wait();
            }
            std::fs::rename(&copy, self.path.join("data.mdb"))?;
            std::fs::File::open(&self.path)?.sync_all()?;
            let env = open_env(&self.path)?;
            self.db = create_db(&env, "kv")?;
            self.env = Some(env);
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            Ok(self.env()?.force_sync()?)
        }
    }
}

mod fjall_engine {
    use super::*;
    use fjall::config::CompressionPolicy;
    use fjall::{
        CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions,
        PersistMode,
    };

    /// fjall as a key-value engine.
    pub(super) struct Kv {
        db: Database,
        keyspace: Keyspace,
    }

    impl Kv {
        /// Payloads are random, so compression is turned off rather than left to waste time.
        /// `separate` keeps values over 1 KiB in blob files (key-value separation), as fjall
        /// advises for large values. The block cache is the profile's budget.
        pub(super) fn open(dir: &Path, settings: &Settings, separate: bool) -> Result<Self> {
            let db =
                Database::builder(dir.join("fjall")).cache_size(settings.cache_bytes).open()?;
            let keyspace = db.keyspace("kv", || {
                let options = KeyspaceCreateOptions::default()
                    .data_block_compression_policy(CompressionPolicy::disabled())
                    .index_block_compression_policy(CompressionPolicy::disabled());
                if separate {
                    let blobs = KvSeparationOptions::default().compression(CompressionType::None);
                    options.with_kv_separation(Some(blobs))
                } else {
                    options
                }
            })?;
            Ok(Self { db, keyspace })
        }
    }

    impl KvReads for Kv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(self.keyspace.get(key)?.map(|v| v.to_vec()))
        }

        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            let mut count = 0;
            for guard in self.keyspace.range(from..).take(n) {
                let (k, v) = guard.into_inner()?;
                std::hint::black_box((k.len(), v.len()));
                count += 1;
            }
            Ok(count)
        }
    }

    impl KvEngine for Kv {
        /// A durable batch is synced (`SyncAll`); a non-durable one is flushed to the OS
        /// (`Buffer`), which is what fjall's default journal mode does after every write.
        fn write(
            &mut self,
            puts: &[(&[u8], &[u8])],
            deletes: &[&[u8]],
            durable: bool,
        ) -> Result<()> {
            let mode = if durable { PersistMode::SyncAll } else { PersistMode::Buffer };
            let mut batch = self.db.batch().durability(Some(mode));
            for &(k, v) in puts {
                batch.insert(&self.keyspace, k, v);
            }
            for &k in deletes {
                batch.remove(&self.keyspace, k);
            }
            Ok(batch.commit()?)
        }

        fn sync(&mut self) -> Result<()> {
            Ok(self.db.persist(PersistMode::SyncAll)?)
        }

        fn unsynced_promise(&self) -> Promise {
            Promise::ProcessCrash
        }

        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            Ok(Box::new(self))
        }

        fn count(&self) -> Result<u64> {
            Ok(self.keyspace.len()? as u64)
        }

        fn compact(&mut self) -> Result<bool> {
            self.keyspace.major_compact()?;
            Ok(true)
        }

        fn close(self: Box<Self>) -> Result<()> {
            Ok(self.db.persist(PersistMode::SyncAll)?)
        }
    }
}

#[cfg(feature = "sled")]
mod sled_engine {
    use super::*;

    /// sled 0.34: writes reach its log; `flush` makes them durable.
    pub(super) struct Kv {
        db: sled::Db,
    }

    impl Kv {
        pub(super) fn open(dir: &Path) -> Result<Self> {
            Ok(Self { db: sled::open(dir.join("sled"))? })
        }
    }

    impl KvReads for Kv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(self.db.get(key)?.map(|v| v.to_vec()))
        }

        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            let mut count = 0;
            for item in self.db.range(from..).take(n) {
                item?;
                count += 1;
            }
            Ok(count)
        }
    }

    impl KvEngine for Kv {
        fn write(
            &mut self,
            puts: &[(&[u8], &[u8])],
            deletes: &[&[u8]],
            durable: bool,
        ) -> Result<()> {
            let mut batch = sled::Batch::default();
            for &(k, v) in puts {
                batch.insert(k, v);
            }
            for &k in deletes {
                batch.remove(k);
            }
            self.db.apply_batch(batch)?;
            if durable {
                self.db.flush()?;
            }
            Ok(())
        }

        fn sync(&mut self) -> Result<()> {
            self.db.flush()?;
            Ok(())
        }

        fn unsynced_promise(&self) -> Promise {
            // sled buffers its log in the process until a flush (or its periodic one).
            Promise::Nothing
        }

        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            Ok(Box::new(self))
        }

        fn count(&self) -> Result<u64> {
            Ok(self.db.len() as u64)
        }

        fn compact(&mut self) -> Result<bool> {
            Ok(false)
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.db.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings { cache_bytes: 16 << 20 };

    /// The map's deltas: batches of deletes and rewrites (past the fold threshold, with
    /// reopens after drops without `close` in between) leave every key as a model says.
    #[test]
    fn bob_objects_map_deltas_and_folds_survive_reopens() {
        let dir = std::env::temp_dir().join(format!("bob-bench-deltas-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let at = dir.join("bob-base");
        let mut model: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        let mut objects = open_objects("bob-base", &at, &SETTINGS).unwrap();
        let all: Vec<(u64, Vec<u8>)> = (0..5_000u64).map(|k| (k, vec![k as u8; 40])).collect();
        let batch: Vec<(u64, &[u8])> = all.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        objects.write_batch(&batch).unwrap();
        model.extend(all.iter().cloned());
        let mut state = 7u64;
        for round in 0..48u64 {
            let mut keys: Vec<u64> = (0..512)
                .map(|_| {
                    state =
                        state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 33) % 5_000
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            if round % 2 == 0 {
                objects.delete_batch(&keys).unwrap();
                for k in &keys {
                    model.remove(k);
                }
            } else {
                let values: Vec<(u64, Vec<u8>)> =
                    keys.iter().map(|&k| (k, vec![(k ^ round) as u8; 30])).collect();
                let batch: Vec<(u64, &[u8])> =
                    values.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                objects.write_batch(&batch).unwrap();
                model.extend(values);
            }
            if round % 7 == 6 {
                drop(objects); // no close, as a crash
                objects = open_objects("bob-base", &at, &SETTINGS).unwrap();
            }
        }
        drop(objects);
        let objects = open_objects("bob-base", &at, &SETTINGS).unwrap();
        for k in 0..5_000u64 {
            assert_eq!(objects.read(k).unwrap(), model.get(&k).cloned(), "key {k}");
        }
        objects.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// bob's object adapter keeps its key → id map in the store, committed with each batch:
    /// a reopen after dropping it without `close` (as a crash would) finds every key.
    #[test]
    fn bob_objects_find_every_key_after_a_drop_without_close() {
        let dir = std::env::temp_dir().join(format!("bob-bench-map-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for engine in ["bob-base", "bob-multi", "bob-pread"] {
            let at = dir.join(engine);
            let mut objects = open_objects(engine, &at, &SETTINGS).unwrap();
            let data: Vec<Vec<u8>> = (0..1_500u64).map(|k| vec![k as u8; 100]).collect();
            let batch: Vec<(u64, &[u8])> =
                data.iter().enumerate().map(|(k, d)| (k as u64, d.as_slice())).collect();
            objects.write_batch(&batch).unwrap();
            objects.delete_batch(&[3, 700]).unwrap();
            drop(objects);
            let objects = open_objects(engine, &at, &SETTINGS).unwrap();
            for k in 0..1_500u64 {
                let want = (k != 3 && k != 700).then(|| vec![k as u8; 100]);
                assert_eq!(objects.read(k).unwrap(), want, "{engine}: key {k}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
