//! `DiskCache`: keyed blobs in a bob database file, with LRU eviction under a capacity, TTL
//! expiry, buffered stores, and an index that commits atomically with the data.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bob_btree::{Db, DbOptions};
use bob_io_helpers::sync::Mutex;
use bob_io_helpers::sync::atomic::{AtomicU64, Ordering};
use bob_store_core::ObjectId;
use bob_treap::PersistentTreap;

use crate::{Error, Result};

/// The treap, in the database's catalog, that maps keys to entries.
const INDEX: &str = "bob-batch-io/disk-cache";

/// The index: key → encoded [`Entry`].
type Index = PersistentTreap<Vec<u8>, Vec<u8>>;

/// One cached blob as the index keeps it (24 + 8 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The blob's object.
    id: ObjectId,
    /// Its length.
    len: u64,
    /// When it was stored, in milliseconds since the Unix epoch (seeds recency at open).
    stored_ms: u64,
    /// When it expires, in milliseconds since the Unix epoch (0: never).
    expires_ms: u64,
}

impl Entry {
    const BYTES: usize = 32;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        for v in [self.id.0, self.len, self.stored_ms, self.expires_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::BYTES {
            return Err(Error::Corrupt(format!("a cache entry of {} bytes", bytes.len())));
        }
        let at = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        Ok(Self { id: ObjectId(at(0)), len: at(1), stored_ms: at(2), expires_ms: at(3) })
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How a [`DiskCache`] behaves.
#[derive(Debug, Clone)]
pub struct DiskCacheOptions {
    /// The most blob bytes kept: a store past it evicts the least recently used entries.
    /// Default 1 GiB.
    pub capacity_bytes: u64,
    /// How long an entry lives after it is stored (`None`: until evicted or removed).
    pub ttl: Option<Duration>,
    /// `store_buffered` flushes once this many stores are buffered. Default 32.
    pub max_buffered: usize,
    /// ... or once this many bytes are. Default 4 MiB.
    pub max_buffered_bytes: usize,
    /// The database file's options.
    pub db: DbOptions,
}

impl Default for DiskCacheOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 1 << 30,
            ttl: None,
            max_buffered: 32,
            max_buffered_bytes: 4 << 20,
            db: DbOptions::default(),
        }
    }
}

/// A [`DiskCache`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCacheStats {
    /// Entries in the index (buffered ones not included).
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Lookups that found a live entry (buffered ones included).
    pub hits: u64,
    /// Lookups that did not (expired ones included).
    pub misses: u64,
    /// Entries evicted to keep the capacity.
    pub evictions: u64,
    /// Lookups that found an entry past its time, and expired entries evicted.
    pub expirations: u64,
    /// Stores buffered and not yet flushed.
    pub pending_writes: usize,
    /// Their bytes.
    pub buffered_bytes: usize,
}

/// What is buffered, and which keys were used when.
#[derive(Debug, Default)]
struct State {
    pending: BTreeMap<Vec<u8>, Vec<u8>>,
    pending_bytes: usize,
    /// Recency: a tick per key, and the keys by tick.
    tick: u64,
    last_use: HashMap<Vec<u8>, u64>,
    by_use: BTreeMap<u64, Vec<u8>>,
    /// Bytes of the indexed entries.
    bytes: u64,
    entries: u64,
}

impl State {
    fn touch(&mut self, key: &[u8]) {
        self.tick += 1;
        if let Some(old) = self.last_use.insert(key.to_vec(), self.tick) {
            self.by_use.remove(&old);
        }
        self.by_use.insert(self.tick, key.to_vec());
    }

    fn forget(&mut self, key: &[u8]) {
        if let Some(old) = self.last_use.remove(key) {
            self.by_use.remove(&old);
        }
    }
}

/// Keyed blobs in one bob database file: each blob an object of the store, the index
/// (key → object, length, time stored, expiry) a treap kept by name in the database's
/// catalog. A store writes the blob, updates the index and frees an overwritten blob in
/// **one** commit of the store ([`Db::save_treap`]): after a crash every flushed entry is
/// there whole, and no entry names a blob that is not. Every read is checked by the store.
///
/// - `store` is durable when it returns; `store_buffered` keeps the blob in memory (lookups
///   see it) until `flush_writes`, or until 32 stores or 4 MiB are buffered; a buffered entry
///   is in the index only with its blob.
/// - Capacity: past `capacity_bytes` the least recently used entries are evicted in the same
///   commit (recency is kept in memory; after a reopen it starts from the time each entry
///   was stored).
/// - TTL: an entry past its time is a miss; its space goes when the capacity needs it, or
///   when its key is stored again or removed.
///
/// Calls take `&self` and may come from several threads; they run one at a time.
pub struct DiskCache {
    db: Db,
    state: Mutex<State>,
    options: DiskCacheOptions,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Opens the cache in the database file at `path`, or creates it. Reads the whole index
    /// once (to count bytes and seed recency).
    pub fn open(path: impl AsRef<Path>, options: DiskCacheOptions) -> Result<Self> {
        let db = Db::open_or_create_with(path, &options.db)?;
        let entries = db.with_treap(INDEX, |index: &mut Index, store| index.to_vec(store))??;
        let mut state = State::default();
        let mut decoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            decoded.push((Entry::decode(&value)?.stored_ms, key, Entry::decode(&value)?.len));
        }
        decoded.sort();
        for (_, key, len) in decoded {
            state.bytes += len;
            state.entries += 1;
            state.touch(&key);
        }
        Ok(Self {
            db,
            state: Mutex::new(state),
            options,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
        })
    }

    /// Stores `bytes` under `key`, durably (replacing what the key held).
    pub fn store(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        if let Some(old) = state.pending.remove(key) {
            state.pending_bytes -= old.len();
        }
        self.commit(&mut state, vec![(key.to_vec(), bytes.to_vec())], &[])
    }

    /// Buffers `bytes` under `key` (last wins; lookups see it), flushed with the others by
    /// [`flush_writes`](Self::flush_writes) or at the buffer's limits.
    pub fn store_buffered(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        if let Some(old) = state.pending.insert(key.to_vec(), bytes.to_vec()) {
            state.pending_bytes -= old.len();
        }
        state.pending_bytes += bytes.len();
        if state.pending.len() >= self.options.max_buffered.max(1)
            || state.pending_bytes >= self.options.max_buffered_bytes
        {
            self.flush_locked(&mut state)?;
        }
        Ok(())
    }

    /// Writes every buffered store, in one commit.
    pub fn flush_writes(&self) -> Result<()> {
        let mut state = self.state.lock();
        self.flush_locked(&mut state)
    }

    fn flush_locked(&self, state: &mut State) -> Result<()> {
        if state.pending.is_empty() {
            return Ok(());
        }
        let items: Vec<(Vec<u8>, Vec<u8>)> =
            std::mem::take(&mut state.pending).into_iter().collect();
        state.pending_bytes = 0;
        self.commit(state, items, &[])
    }

    /// Removes `key`, durably; whether it was there.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let mut state = self.state.lock();
        let buffered = state.pending.remove(key).map(|old| state.pending_bytes -= old.len());
        let before = state.entries;
        self.commit(&mut state, Vec::new(), &[key.to_vec()])?;
        Ok(buffered.is_some() || state.entries < before)
    }

    /// The blob under `key`, if a live one is there.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut state = self.state.lock();
        self.lookup_locked(&mut state, key)
    }

    /// [`lookup`](Self::lookup) for each key; results in the order of `keys`.
    pub fn lookup_batch(&self, keys: &[&[u8]]) -> Vec<Result<Option<Vec<u8>>>> {
        let mut state = self.state.lock();
        keys.iter().map(|key| self.lookup_locked(&mut state, key)).collect()
    }

    fn lookup_locked(&self, state: &mut State, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(bytes) = state.pending.get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(bytes.clone()));
        }
        let key_owned = key.to_vec();
        let found = self
            .db
            .with_treap(INDEX, |index: &mut Index, store| index.get(store, &key_owned))??;
        let entry = match found.map(|v| Entry::decode(&v)).transpose()? {
            Some(entry) if !entry.expired(now_ms()) => entry,
            expired => {
                if expired.is_some() {
                    self.expirations.fetch_add(1, Ordering::Relaxed);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        };
        let bytes = self.db.store().read_bytes_from_obj(entry.id)?;
        if bytes.len() as u64 != entry.len {
            return Err(Error::Corrupt(format!(
                "a cached blob of {} bytes, not {}",
                bytes.len(),
                entry.len
            )));
        }
        state.touch(key);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }

    /// Writes `puts` (new blobs), drops `removes`, expired entries and, past the capacity,
    /// the least recently used ones, and commits it all at once with the index.
    fn commit(
        &self,
        state: &mut State,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        removes: &[Vec<u8>],
    ) -> Result<()> {
        let store = self.db.shared_store()?;
        let now = now_ms();
        let expires = self.options.ttl.map_or(0, |ttl| now + ttl.as_millis() as u64);
        let mut written = Vec::with_capacity(puts.len());
        for (key, bytes) in &puts {
            match store.write_new_obj_from_bytes(bytes) {
                Ok(id) => written.push((
                    key.clone(),
                    Entry { id, len: bytes.len() as u64, stored_ms: now, expires_ms: expires },
                )),
                Err(e) => {
                    for (_, entry) in written {
                        let _ = store.delete_obj(entry.id);
                    }
                    return Err(e.into());
                }
            }
        }
        let capacity = self.options.capacity_bytes;
        let mut counts = (state.entries, state.bytes, 0u64, 0u64);
        let changed =
            self.db.with_treap(INDEX, |index: &mut Index, store| -> Result<Vec<Vec<u8>>> {
                let mut gone = Vec::new();
                let drop_key = |index: &mut Index,
                                    key: &[u8],
                                    counts: &mut (u64, u64, u64, u64)|
                 -> Result<bool> {
                    match index.delete(store, key)? {
                        Some(old) => {
                            let old = Entry::decode(&old)?;
                            store.delete_obj(old.id)?;
                            counts.0 -= 1;
                            counts.1 -= old.len;
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                };
                for key in removes {
                    drop_key(index, key, &mut counts)?;
                    gone.push(key.clone());
                }
                for (key, entry) in &written {
                    drop_key(index, key, &mut counts)?;
                    index.insert(store, key.clone(), entry.encode())?;
                    counts.0 += 1;
                    counts.1 += entry.len;
                }
                // Past the capacity: the least recently used first (what this commit stored
                // counts as used now).
                let fresh: std::collections::HashSet<&Vec<u8>> =
                    written.iter().map(|(k, _)| k).collect();
                let mut by_use = state
                    .by_use
                    .values()
                    .filter(|k| !fresh.contains(k))
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_iter();
                while counts.1 > capacity {
                    let Some(key) = by_use.next() else { break };
                    if let Some(value) = index.get(store, &key)? {
                        let expired = Entry::decode(&value)?.expired(now);
                        drop_key(index, &key, &mut counts)?;
                        if expired {
                            counts.3 += 1
                        } else {
                            counts.2 += 1
                        }
                        gone.push(key);
                    }
                }
                Ok(gone)
            });
        let gone = match changed.map_err(Error::from).and_then(|inner| inner) {
            Ok(gone) => gone,
            Err(e) => {
                let _ = self.db.discard_treap(INDEX);
                for (_, entry) in &written {
                    let _ = store.delete_obj(entry.id);
                }
                return Err(e);
            }
        };
        self.db.save_treap(INDEX)?;
        for key in &gone {
            state.forget(key);
        }
        for (key, _) in &written {
            state.touch(key);
        }
        (state.entries, state.bytes) = (counts.0, counts.1);
        self.evictions.fetch_add(counts.2, Ordering::Relaxed);
        self.expirations.fetch_add(counts.3, Ordering::Relaxed);
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> DiskCacheStats {
        let state = self.state.lock();
        DiskCacheStats {
            entries: state.entries,
            bytes: state.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            pending_writes: state.pending.len(),
            buffered_bytes: state.pending_bytes,
        }
    }

    /// Flushes what is buffered and closes the database.
    pub fn close(self) -> Result<()> {
        self.flush_writes()?;
        Ok(self.db.close()?)
    }
}
