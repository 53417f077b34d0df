//! `DiskCache`: keyed blobs in a bob database file, with LRU eviction under a capacity, TTL
//! expiry, buffered stores, and an index that commits atomically with the data.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bob_btree::{Db, DbOptions, DefaultStore, Durability, TreeMut};
use bob_io_helpers::sync::Mutex;
use bob_io_helpers::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use bob_store_core::{ObjectId, PrimeStorer, SplitStore};
use bob_treap::PersistentTreap;

use crate::{Error, Result};

/// The tree that maps keys to encoded [`Entry`]s.
const INDEX: &str = "bob-batch-io/disk-cache/index";

/// The tree of blobs to delete (key: the object id, big-endian; no value): blobs a durable
/// commit dropped from the index, deleted by the next commit (see [`DiskCache::commit`]).
const FREES: &str = "bob-batch-io/disk-cache/frees";

/// The treap that held the index until 2026-12-02: an open moves its entries into [`INDEX`]
/// and empties it.
const OLD_INDEX: &str = "bob-batch-io/disk-cache";

/// Reads in a row, each as long as a device read, after which `lookup_batch` tells the store
/// which blobs it reads next.
const SLOW_READS_FOR_PREFETCH: u32 = 2;

/// The index as it was kept until 2026-12-02: key → encoded [`Entry`].
type OldIndex = PersistentTreap<Vec<u8>, Vec<u8>>;

/// A tree of the cache's, open in a write transaction.
type TreeOf<'t> = TreeMut<'t, Vec<u8>, Vec<u8>>;

/// The key under which [`FREES`] lists a blob.
fn free_key(id: ObjectId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// How a blob's bytes are kept.
const RAW: u64 = 0;
/// An LZ4 block, its uncompressed length in front (`lz4_flex::compress_prepend_size`).
const LZ4: u64 = 1;

/// One cached blob as the index keeps it: little-endian `u64`s, four for a value kept as it
/// is (id, length, time stored, expiry: version 1, which older readers read too), six for a
/// compressed one (then codec and the value's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The blob's object.
    id: ObjectId,
    /// Its length in the store (compressed, if it is).
    len: u64,
    /// When it was stored, in milliseconds since the Unix epoch (seeds recency at open).
    stored_ms: u64,
    /// When it expires, in milliseconds since the Unix epoch (0: never).
    expires_ms: u64,
    /// How its bytes are kept ([`RAW`] or [`LZ4`]).
    codec: u64,
    /// The value's length (`len` for a raw one).
    value_len: u64,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut fields = vec![self.id.0, self.len, self.stored_ms, self.expires_ms];
        if self.codec != RAW {
            fields.extend([self.codec, self.value_len]);
        }
        fields.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 && bytes.len() != 48 {
            return Err(Error::Corrupt(format!("a cache entry of {} bytes", bytes.len())));
        }
        let at = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        let (codec, value_len) = if bytes.len() == 48 { (at(4), at(5)) } else { (RAW, at(1)) };
        // LZ4 expands a value at most 255 times; a length past that is damage.
        let plausible = value_len <= at(1).saturating_mul(255).saturating_add(16);
        if codec != LZ4 && bytes.len() == 48 || !plausible || value_len > u64::from(u32::MAX) {
            return Err(Error::Corrupt(format!(
                "a cache entry with codec {codec} and value length {value_len}"
            )));
        }
        Ok(Self {
            id: ObjectId(at(0)),
            len: at(1),
            stored_ms: at(2),
            expires_ms: at(3),
            codec,
            value_len,
        })
    }

    /// The value from the blob's bytes as stored: a compressed block must name the value's
    /// length the entry gives and decode to exactly that many bytes.
    fn value(&self, stored: Vec<u8>) -> Result<Vec<u8>> {
        if self.codec == RAW {
            return Ok(stored);
        }
        let corrupt = |what: String| Error::Corrupt(format!("a compressed blob {what}"));
        let Some((prefix, block)) = stored.split_first_chunk::<4>() else {
            return Err(corrupt(format!("of {} bytes", stored.len())));
        };
        if u64::from(u32::from_le_bytes(*prefix)) != self.value_len {
            return Err(corrupt(format!(
                "names {} bytes, not {}",
                u32::from_le_bytes(*prefix),
                self.value_len
            )));
        }
        let mut value = vec![0; self.value_len as usize];
        match lz4_flex::block::decompress_into(block, &mut value) {
            Ok(n) if n == value.len() => Ok(value),
            Ok(n) => Err(corrupt(format!("decodes to {n} bytes, not {}", value.len()))),
            Err(e) => Err(corrupt(format!("does not decode: {e}"))),
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a commit's index changes add up to, and the blobs they free.
struct Tally {
    entries: u64,
    bytes: u64,
    free: Vec<ObjectId>,
}

/// Drops `key` from the index, listing its blob to free; its entry, if there was one.
fn drop_key(index: &mut TreeOf<'_>, key: &[u8], tally: &mut Tally) -> Result<Option<Entry>> {
    let Some(old) = index.remove(key)? else { return Ok(None) };
    let old = Entry::decode(&old)?;
    tally.free.push(old.id);
    tally.entries -= 1;
    tally.bytes -= old.len;
    Ok(Some(old))
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
    /// How far ahead of its reads a [`lookup_batch`](DiskCache::lookup_batch) whose blobs
    /// come from the device asks for the next ones, in blob bytes (0: never): the most it
    /// has the device read ahead at once, past any disk token bound. Default 8 MiB. (On a
    /// store whose file backend takes no hints, the blobs are read one after another.)
    pub prefetch_bytes: u64,
    /// A blob read that takes this long came from the device; two in a row start a
    /// batch's prefetch. Default (`None`): 20 µs plus 1 µs per 2 KiB of the blob.
    pub device_read: Option<Duration>,
    /// Compress values with LZ4 (a value that does not shrink is kept as it is). Every read
    /// path decompresses; the capacity counts the bytes kept. Default off.
    pub compress: bool,
    /// The clock that stamps entries and expires them (for tests and simulations).
    /// Default `SystemTime::now`.
    pub now: fn() -> SystemTime,
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
            prefetch_bytes: 8 << 20,
            device_read: None,
            compress: false,
            now: SystemTime::now,
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
    /// Expiry of each indexed entry that has one, and the entries by expiry.
    expiry: HashMap<Vec<u8>, u64>,
    by_expiry: BTreeSet<(u64, Vec<u8>)>,
    /// The blobs [`FREES`] lists as of the last durable commit (read at open, then what each
    /// commit listed): never a list a commit whose outcome is unknown wrote.
    listed: Vec<ObjectId>,
}

impl State {
    fn touch(&mut self, key: &[u8]) {
        self.tick += 1;
        // A key used again moves in `by_use` with the bytes it has there: no allocation.
        if let Some(last) = self.last_use.get_mut(key) {
            if let Some(kept) = self.by_use.remove(last) {
                *last = self.tick;
                self.by_use.insert(self.tick, kept);
                return;
            }
        }
        self.last_use.insert(key.to_vec(), self.tick);
        self.by_use.insert(self.tick, key.to_vec());
    }

    fn forget(&mut self, key: &[u8]) {
        if let Some(old) = self.last_use.remove(key) {
            self.by_use.remove(&old);
        }
        if let Some(old) = self.expiry.remove(key) {
            self.by_expiry.remove(&(old, key.to_vec()));
        }
    }

    /// Records an indexed entry's expiry (0: none).
    fn expires(&mut self, key: &[u8], expires_ms: u64) {
        if let Some(old) = self.expiry.remove(key) {
            self.by_expiry.remove(&(old, key.to_vec()));
        }
        if expires_ms != 0 {
            self.expiry.insert(key.to_vec(), expires_ms);
            self.by_expiry.insert((expires_ms, key.to_vec()));
        }
    }
}

/// Keyed blobs in one bob database file: each blob an object of the store, the index
/// (key → object, length, time stored, expiry) a named B-tree of the database. A commit
/// makes its new blobs durable (a store commit) before the index names them (the index's
/// commit, in the database's log), and deletes a blob only once a durable commit no longer
/// names it (the blobs to delete are listed in a second tree, and deleted by the next
/// commit): after a crash every flushed entry is there whole, and no entry names a blob
/// that is not. Every read is checked by the store.
///
/// - `store` is durable when it returns; `store_buffered` keeps the blob in memory (lookups
///   see it) until `flush_writes`, or until 32 stores or 4 MiB are buffered; a buffered entry
///   is in the index only with its blob.
/// - Capacity: past `capacity_bytes` the least recently used entries are evicted in the same
///   commit (recency is kept in memory; after a reopen it starts from the time each entry
///   was stored). What a commit stores is never evicted by it, so one commit storing more
///   than the capacity leaves the cache over it until the next store or remove; `close` and
///   `open` evict nothing.
/// - TTL: an entry past its time is a miss; its space goes when the capacity needs it
///   (expired entries go before live ones), or when its key is stored again or removed.
///
/// Calls take `&self` and may come from several threads; they run one at a time. Dropping
/// the cache without [`close`](Self::close) loses what is buffered (never what was flushed).
/// A crash between a commit's blob writes and its index commit can leave those blobs' space
/// unreachable (never an entry without its blob). Blobs a commit drops are deleted by the
/// next commit, or by `close`, or at the next open after a crash.
pub struct DiskCache<S: SplitStore<Io: Clone> + PrimeStorer = DefaultStore> {
    db: Db<S>,
    state: Mutex<State>,
    options: DiskCacheOptions,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    /// An index commit failed (its outcome unknown): every later commit is refused before it
    /// touches the store (the database would refuse its index commit anyway), since the
    /// index may hold that commit, durable or not.
    failed: AtomicBool,
}

impl<S: SplitStore<Io: Clone> + PrimeStorer + Send + Sync + 'static> std::fmt::Debug
    for DiskCache<S>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Opens the cache in the database file at `path`, or creates it. Reads the whole index
    /// once (to count bytes and seed recency).
    pub fn open(path: impl AsRef<Path>, options: DiskCacheOptions) -> Result<Self> {
        Self::with_db(Db::open_or_create_with(path, &options.db)?, options)
    }
}

impl<S: SplitStore<Io: Clone> + PrimeStorer + Send + Sync + 'static> DiskCache<S> {
    /// The cache in `db` (its index a named tree, created on the first store), which it
    /// owns from now on (`options.db` is not used). Reads the whole index once. A cache
    /// written before the index moved to a tree (2026-12-02: a treap) has its entries moved
    /// into the tree first, in one commit, and the treap emptied after it.
    pub fn with_db(db: Db<S>, options: DiskCacheOptions) -> Result<Self> {
        Self::move_old_index(&db)?;
        let entries: Vec<(Vec<u8>, Vec<u8>)> = {
            let read = db.begin_read();
            match read.open_tree::<Vec<u8>, Vec<u8>>(INDEX) {
                Some(tree) => tree.iter()?.collect::<std::result::Result<_, _>>()?,
                None => Vec::new(),
            }
        };
        let mut state = State { listed: Self::listed_frees(&db)?, ..State::default() };
        let mut decoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let entry = Entry::decode(&value)?;
            decoded.push((entry.stored_ms, key, entry.len, entry.expires_ms));
        }
        decoded.sort();
        for (_, key, len, expires_ms) in decoded {
            state.bytes += len;
            state.entries += 1;
            state.touch(&key);
            state.expires(&key, expires_ms);
        }
        let cache = Self {
            db,
            state: Mutex::new(state),
            options,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        };
        // Blobs a commit before a crash dropped (the next commit would have deleted them). A
        // failure here leaves them listed and the cache readable; the next commit meets the
        // same failure (a latched store or database, a damaged list) and reports it.
        let _ = cache.delete_listed();
        Ok(cache)
    }

    /// Deletes the blobs [`FREES`] lists, if any, in a commit of nothing else (two syncs).
    fn delete_listed(&self) -> Result<()> {
        let mut state = self.state.lock();
        if state.listed.is_empty() {
            return Ok(());
        }
        self.commit(&mut state, Vec::new(), &[])
    }

    /// Moves the entries of a treap index (the layout before 2026-12-02) into the tree, in
    /// one commit, then empties the treap (freeing its nodes). A crash between the two
    /// leaves both holding the same entries: the next open moves them again.
    fn move_old_index(db: &Db<S>) -> Result<()> {
        if !db.treap_names().iter().any(|name| name == OLD_INDEX) {
            return Ok(());
        }
        let entries = db.with_treap(OLD_INDEX, |old: &mut OldIndex, store| old.to_vec(store))??;
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = db.begin_write()?;
        let mut displaced = Vec::new();
        {
            let mut index = tx.open_tree::<Vec<u8>, Vec<u8>>(INDEX)?;
            for (key, entry) in &entries {
                let id = Entry::decode(entry)?.id;
                // An entry the tree holds already names another blob only if the treap was
                // written again after a move (by a build that knows no tree): that blob is
                // listed to free, as an overwrite's would be.
                if let Some(old) = index.insert(key.as_slice(), entry.as_slice())? {
                    let old = Entry::decode(&old)?.id;
                    if old != id {
                        displaced.push(old);
                    }
                }
            }
            let mut frees = tx.open_tree::<Vec<u8>, Vec<u8>>(FREES)?;
            for id in displaced {
                frees.put(&free_key(id)[..], &[][..])?;
            }
        }
        tx.commit(Durability::Durable)?;
        db.with_treap(OLD_INDEX, |old: &mut OldIndex, store| -> Result<()> {
            for (key, _) in &entries {
                old.delete(store, key)?;
            }
            Ok(())
        })??;
        db.save_treap(OLD_INDEX)?;
        Ok(())
    }

    /// The entry of `key` in the index, encoded, if there is one.
    fn indexed(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let read = self.db.begin_read();
        match read.open_tree::<Vec<u8>, Vec<u8>>(INDEX) {
            Some(index) => Ok(index.get(key)?),
            None => Ok(None),
        }
    }

    /// The blobs [`FREES`] lists.
    fn listed_frees(db: &Db<S>) -> Result<Vec<ObjectId>> {
        let read = db.begin_read();
        let Some(frees) = read.open_tree::<Vec<u8>, Vec<u8>>(FREES) else { return Ok(Vec::new()) };
        let mut ids = Vec::new();
        for listed in frees.iter()? {
            let (key, _) = listed?;
            let bytes: [u8; 8] = key.as_slice().try_into().map_err(|_| {
                Error::Corrupt(format!("a blob to free named by {} bytes", key.len()))
            })?;
            ids.push(ObjectId(u64::from_be_bytes(bytes)));
        }
        Ok(ids)
    }

    /// Stores `bytes` under `key`, durably (replacing what the key held).
    pub fn store(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        self.commit(&mut state, vec![(key.to_vec(), bytes.to_vec())], &[])?;
        // Only now: a failed store leaves a buffered value of the key as it was.
        if let Some(old) = state.pending.remove(key) {
            state.pending_bytes -= old.len();
        }
        Ok(())
    }

    /// Buffers `bytes` under `key` (last wins; lookups see it), flushed with the others by
    /// [`flush_writes`](Self::flush_writes) or at the buffer's limits. A flush at the limits
    /// that fails returns its error and leaves everything buffered (this store included).
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

    /// [`store_buffered`](Self::store_buffered) for a batch: a flush at the buffer's limits
    /// that fails leaves this store buffered (with every other), so it is `Ok` (the batch's
    /// `flush_writes` decides what is durable); any other failure is this store's.
    pub(crate) fn buffer_for_batch(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        match self.store_buffered(key, bytes) {
            Err(_) if self.state.lock().pending.get(key).is_some_and(|v| v == bytes) => Ok(()),
            done => done,
        }
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
        let pending_bytes = std::mem::take(&mut state.pending_bytes);
        let result = self.commit(state, items.clone(), &[]);
        if result.is_err() {
            // Still buffered: a failed flush loses nothing a lookup saw.
            state.pending = items.into_iter().collect();
            state.pending_bytes = pending_bytes;
        }
        result
    }

    /// Removes `key`, durably; whether it was there.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let mut state = self.state.lock();
        let indexed = self.indexed(key)?;
        if indexed.is_some() {
            // Only a key the index holds costs a commit (and its sync).
            self.commit(&mut state, Vec::new(), &[key.to_vec()])?;
        }
        // Only now: a failed remove leaves a buffered value of the key as it was.
        let buffered = state.pending.remove(key).map(|old| state.pending_bytes -= old.len());
        Ok(buffered.is_some() || indexed.is_some())
    }

    /// The blob under `key`, if a live one is there.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut state = self.state.lock();
        self.lookup_locked(&mut state, key)
    }

    /// [`lookup`](Self::lookup) for each key, results in the order of `keys` (a key asked
    /// for twice is looked up and read once, and counted as two lookups).
    ///
    /// The keys the buffer does not hold are looked up in the index in one pass, in key
    /// order; the blobs are then read, and once two reads in a row take as long as a device
    /// read (so the blobs are not in the OS page cache; one alone may be a thread the system
    /// paused), the store is asked to read the next ones ahead
    /// ([`DiskCacheOptions::prefetch_bytes`]): on a device that serves several reads
    /// together, a batch of cold reads costs a few reads' time, while a batch of cached ones
    /// asks nothing.
    pub fn lookup_batch(&self, keys: &[&[u8]]) -> Vec<Result<Option<Vec<u8>>>> {
        let mut state = self.state.lock();
        let mut out: Vec<Option<Result<Option<Vec<u8>>>>> = (0..keys.len()).map(|_| None).collect();
        // The first requests that found an entry past its time.
        let mut expired = vec![false; keys.len()];
        // The first request of each distinct key the buffer does not hold, in key order.
        let mut first: Vec<usize> = Vec::new();
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(bytes) = state.pending.get(*key) {
                out[i] = Some(Ok(Some(bytes.clone())));
            } else if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(key) {
                slot.insert(i);
                first.push(i);
            }
        }
        first.sort_by_key(|&i| keys[i]);
        let found: Vec<Result<Option<Vec<u8>>>> = {
            let read = self.db.begin_read();
            let index = read.open_tree::<Vec<u8>, Vec<u8>>(INDEX);
            first
                .iter()
                .map(|&i| match &index {
                    Some(index) => index.get(keys[i]).map_err(Error::from),
                    None => Ok(None),
                })
                .collect()
        };
        let now = self.now_ms();
        let mut reads: Vec<(usize, Entry)> = Vec::new();
        for (&i, value) in first.iter().zip(found) {
            match value.and_then(|v| v.map(|v| Entry::decode(&v)).transpose()) {
                Ok(Some(entry)) if !entry.expired(now) => reads.push((i, entry)),
                Ok(Some(_)) => {
                    expired[i] = true;
                    out[i] = Some(Ok(None));
                }
                Ok(None) => out[i] = Some(Ok(None)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for ((i, _), bytes) in reads.iter().zip(self.read_blobs(&reads)) {
            out[*i] = Some(bytes.map(Some));
        }
        self.finish_batch(&mut state, keys, out, &expired, &seen)
    }

    /// Fills the duplicates from their first request, counts hits, misses and expired
    /// entries per request, and marks the keys found as used, in request order.
    fn finish_batch(
        &self,
        state: &mut State,
        keys: &[&[u8]],
        mut out: Vec<Option<Result<Option<Vec<u8>>>>>,
        expired: &[bool],
        seen: &HashMap<&[u8], usize>,
    ) -> Vec<Result<Option<Vec<u8>>>> {
        for i in 0..keys.len() {
            if state.pending.contains_key(keys[i]) {
                continue;
            }
            if expired[seen[keys[i]]] {
                self.expirations.fetch_add(1, Ordering::Relaxed);
            }
            if out[i].is_none() {
                let j = seen[keys[i]];
                out[i] = Some(match &out[j] {
                    Some(Ok(found)) => Ok(found.clone()),
                    Some(Err(e)) => Err(e.clone()),
                    None => unreachable!("a first request is always answered"),
                });
            }
        }
        let out: Vec<Result<Option<Vec<u8>>>> =
            out.into_iter().map(|r| r.expect("every request answered")).collect();
        for (key, result) in keys.iter().zip(&out) {
            match result {
                Ok(Some(_)) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    if !state.pending.contains_key(*key) {
                        state.touch(key);
                    }
                }
                Ok(None) => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        out
    }

    /// Reads the blobs of `reads` (in their order), checking each one's length. Once
    /// [`SLOW_READS_FOR_PREFETCH`] reads in a row take as long as a device read (the blobs
    /// are not in the OS page cache), the store is told which blobs come next, up to
    /// [`DiskCacheOptions::prefetch_bytes`] ahead of the read
    /// ([`StoreView::prefetch_objs`](bob_btree::StoreView::prefetch_objs)): the device then
    /// reads them together, at its queue depth, while this thread copies them one by one.
    fn read_blobs(&self, reads: &[(usize, Entry)]) -> Vec<Result<Vec<u8>>> {
        let mut out = Vec::with_capacity(reads.len());
        let mut slow = 0;
        // Once prefetching: the blobs before `ahead` were hinted, and `pending` bytes of
        // them are not read yet.
        let mut prefetching = false;
        let (mut ahead, mut pending) = (0usize, 0u64);
        for (i, (_, entry)) in reads.iter().enumerate() {
            if prefetching {
                let mut ids = Vec::new();
                while ahead < reads.len() && pending < self.options.prefetch_bytes {
                    ids.push(reads[ahead].1.id);
                    pending += reads[ahead].1.len;
                    ahead += 1;
                }
                if !ids.is_empty() {
                    self.db.store().prefetch_objs(&ids);
                }
                pending -= entry.len.min(pending);
            }
            // Only the store's read is timed (not the decoding).
            let started = Instant::now();
            let stored = self.read_stored(entry);
            let took = started.elapsed();
            out.push(stored.and_then(|b| entry.value(b)));
            if !prefetching && self.options.prefetch_bytes > 0 {
                // A cached 4 KiB read takes a few microseconds, a device read tens; one
                // slow read alone is no evidence (a thread preempted during a cached read
                // takes as long).
                let device = self
                    .options
                    .device_read
                    .unwrap_or_else(|| Duration::from_micros(20 + entry.len / 2048));
                slow = if took >= device { slow + 1 } else { 0 };
                if slow >= SLOW_READS_FOR_PREFETCH {
                    prefetching = true;
                    ahead = i + 1;
                }
            }
        }
        out
    }

    /// One value: its blob, checked against the index's length, decompressed.
    fn read_blob(&self, entry: &Entry) -> Result<Vec<u8>> {
        entry.value(self.read_stored(entry)?)
    }

    /// An entry's blob as stored, checked against the index's length.
    fn read_stored(&self, entry: &Entry) -> Result<Vec<u8>> {
        let bytes = self.db.store().read_bytes_from_obj(entry.id)?;
        if bytes.len() as u64 != entry.len {
            return Err(Error::Corrupt(format!(
                "a cached blob of {} bytes, not {}",
                bytes.len(),
                entry.len
            )));
        }
        Ok(bytes)
    }

    fn now_ms(&self) -> u64 {
        millis((self.options.now)())
    }

    /// A value as it is kept: (bytes, codec). A value longer than 4 GiB - 1 (what the
    /// block's length prefix holds) is kept as it is.
    fn encode_value<'v>(&self, value: &'v [u8]) -> (std::borrow::Cow<'v, [u8]>, u64) {
        if self.options.compress && u32::try_from(value.len()).is_ok() {
            let packed = lz4_flex::compress_prepend_size(value);
            if packed.len() < value.len() {
                return (std::borrow::Cow::Owned(packed), LZ4);
            }
        }
        (std::borrow::Cow::Borrowed(value), RAW)
    }

    fn lookup_locked(&self, state: &mut State, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(bytes) = state.pending.get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(bytes.clone()));
        }
        let found = self.indexed(key)?;
        let entry = match found.map(|v| Entry::decode(&v)).transpose()? {
            Some(entry) if !entry.expired(self.now_ms()) => entry,
            expired => {
                if expired.is_some() {
                    self.expirations.fetch_add(1, Ordering::Relaxed);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        };
        let bytes = self.read_blob(&entry)?;
        state.touch(key);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }

    /// Writes `puts` (new blobs), drops `removes` and, past the capacity, expired entries and
    /// then the least recently used ones, in three steps:
    ///
    /// 1. the blobs [`FREES`] lists (dropped from the index by an earlier, durable commit)
    ///    are deleted, the new blobs written, and the store committed: the blobs are durable
    ///    before any index entry names them;
    /// 2. one write transaction puts the new entries and drops the old ones in the index,
    ///    takes the deleted blobs off [`FREES`] and lists there the blobs it drops;
    /// 3. it commits, durably (the database's log, synced).
    ///
    /// So a blob is deleted only once a durable commit no longer names it, and a crash at
    /// any point leaves every indexed entry with its blob: at worst a blob of step 1 that no
    /// entry names (its space is lost), or a listed blob deleted twice (the second time
    /// finds it gone). On an error before step 3, nothing the index holds changes and the
    /// new blobs are given back; if step 3's commit fails, its outcome is unknown (a failed
    /// sync), so they are kept (the database refuses writes until it is reopened).
    fn commit(
        &self,
        state: &mut State,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        removes: &[Vec<u8>],
    ) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed(
                "an earlier index commit failed (it may or may not be durable); reopen the cache"
                    .into(),
            ));
        }
        let store = self.db.shared_store()?;
        let now = self.now_ms();
        let expires = self.options.ttl.map_or(0, |ttl| {
            now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        });
        let freeing = state.listed.clone();
        for &id in &freeing {
            match store.delete_obj(id) {
                // Deleted by a commit a crash cut off before it cleared the list.
                Ok(())
                | Err(bob_store_core::Error::NotFound(_) | bob_store_core::Error::StaleId { .. }) =>
                    {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut written = Vec::with_capacity(puts.len());
        let give_back = |written: &[(Vec<u8>, Entry)]| {
            for (_, entry) in written {
                let _ = store.delete_obj(entry.id);
            }
        };
        for (key, value) in &puts {
            let (bytes, codec) = self.encode_value(value);
            match store.write_new_obj_from_bytes(&bytes) {
                Ok(id) => written.push((
                    key.clone(),
                    Entry {
                        id,
                        len: bytes.len() as u64,
                        stored_ms: now,
                        expires_ms: expires,
                        codec,
                        value_len: value.len() as u64,
                    },
                )),
                Err(e) => {
                    give_back(&written);
                    return Err(e.into());
                }
            }
        }
        if !written.is_empty() || !freeing.is_empty() {
            if let Err(e) = store.commit() {
                give_back(&written);
                return Err(e.into());
            }
        }
        let capacity = self.options.capacity_bytes;
        let mut tally = Tally { entries: state.entries, bytes: state.bytes, free: Vec::new() };
        let (mut evicted, mut expired) = (0u64, 0u64);
        let (by_use, by_expiry) = (&state.by_use, &state.by_expiry);
        let mut tx = match self.db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                give_back(&written);
                return Err(e.into());
            }
        };
        let changed = (|| -> Result<Vec<Vec<u8>>> {
            let mut gone = Vec::new();
            let mut index = tx.open_tree::<Vec<u8>, Vec<u8>>(INDEX)?;
            for key in removes {
                drop_key(&mut index, key, &mut tally)?;
                gone.push(key.clone());
            }
            for (key, entry) in &written {
                drop_key(&mut index, key, &mut tally)?;
                index.put(key.as_slice(), entry.encode().as_slice())?;
                tally.entries += 1;
                tally.bytes += entry.len;
            }
            // A commit that stores and removes nothing (the one `close`, or an open after a
            // crash, runs to delete the blobs the last commit dropped) changes no entry: the
            // capacity is kept by the next commit that does.
            if tally.bytes > capacity && !(written.is_empty() && removes.is_empty()) {
                // Expired entries first (soonest expired first), then the least recently
                // used; what this commit stored is neither.
                let fresh: std::collections::HashSet<&Vec<u8>> =
                    written.iter().map(|(k, _)| k).collect();
                let past = by_expiry.iter().take_while(|(at, _)| *at <= now).map(|(_, k)| k);
                for key in past.chain(by_use.values()).filter(|k| !fresh.contains(k)) {
                    if tally.bytes <= capacity {
                        break;
                    }
                    if let Some(old) = drop_key(&mut index, key, &mut tally)? {
                        if old.expired(now) {
                            expired += 1;
                        } else {
                            evicted += 1;
                        }
                        gone.push(key.clone());
                    }
                }
            }
            let mut frees = tx.open_tree::<Vec<u8>, Vec<u8>>(FREES)?;
            for &id in &freeing {
                frees.delete(&free_key(id)[..])?;
            }
            for &id in &tally.free {
                frees.put(&free_key(id)[..], &[][..])?;
            }
            Ok(gone)
        })();
        let gone = match changed {
            Ok(gone) => gone,
            Err(e) => {
                drop(tx);
                give_back(&written);
                return Err(e);
            }
        };
        // A failed durable commit's outcome is unknown: the new blobs stay, the blobs it
        // listed are not taken as listed (only a durable commit's list is deleted), and no
        // later commit runs.
        if let Err(e) = tx.commit(Durability::Durable) {
            self.failed.store(true, Ordering::Release);
            return Err(e.into());
        }
        state.listed = std::mem::take(&mut tally.free);
        for key in &gone {
            state.forget(key);
        }
        for (key, entry) in &written {
            state.touch(key);
            state.expires(key, entry.expires_ms);
        }
        (state.entries, state.bytes) = (tally.entries, tally.bytes);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        self.expirations.fetch_add(expired, Ordering::Relaxed);
        Ok(())
    }

    /// The store underneath, to keep other objects in the same file ([`Db::shared_store`]):
    /// their commits may run at any time (a cache commit's blobs are durable before its
    /// index names them, and a blob is deleted only once no durable index names it, so no
    /// other commit makes half of a cache commit durable). Leave the cache's objects (its
    /// blobs, its trees' nodes) alone.
    pub fn shared_store(&self) -> Result<&bob_store_concurrent::ConcurrentStore<S>> {
        Ok(self.db.shared_store()?)
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

    /// Flushes what is buffered, deletes the blobs the last commit dropped, and closes the
    /// database.
    pub fn close(self) -> Result<()> {
        self.flush_writes()?;
        self.delete_listed()?;
        Ok(self.db.close()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4_entry(value_len: u64, stored: &[u8]) -> Entry {
        Entry {
            id: ObjectId(1),
            len: stored.len() as u64,
            stored_ms: 0,
            expires_ms: 0,
            codec: LZ4,
            value_len,
        }
    }

    /// Entries round-trip; a raw one is written in the 32 bytes older readers know.
    #[test]
    fn entries_round_trip_and_raw_ones_keep_the_first_layout() {
        let raw = Entry {
            id: ObjectId(7),
            len: 10,
            stored_ms: 1,
            expires_ms: 2,
            codec: RAW,
            value_len: 10,
        };
        assert_eq!(raw.encode().len(), 32);
        assert_eq!(Entry::decode(&raw.encode()).unwrap(), raw);
        let packed = lz4_entry(1000, &[0; 20]);
        assert_eq!(packed.encode().len(), 48);
        assert_eq!(Entry::decode(&packed.encode()).unwrap(), packed);
        for bad in [&raw.encode()[..31], &[0; 40][..], &[0; 49][..]] {
            assert!(matches!(Entry::decode(bad), Err(Error::Corrupt(_))));
        }
        let mut unknown = packed.encode();
        unknown[32] = 9; // codec 9
        assert!(matches!(Entry::decode(&unknown), Err(Error::Corrupt(_))));
        let implausible = lz4_entry(20 * 255 + 17, &[0; 20]).encode();
        assert!(matches!(Entry::decode(&implausible), Err(Error::Corrupt(_))), "no 4 GiB alloc");
    }

    /// A compressed blob whose prefix or decoded length disagrees with its entry is
    /// `Corrupt`, never a shorter or longer value.
    #[test]
    fn a_compressed_blob_that_disagrees_with_its_entry_is_corrupt() {
        let value = b"abcabcabcabcabcabcabcabcabcabcabcabc".repeat(10);
        let packed = lz4_flex::compress_prepend_size(&value);
        assert_eq!(lz4_entry(value.len() as u64, &packed).value(packed.clone()).unwrap(), value);
        // The entry says one byte more than the block holds (the prefix disagrees).
        let wrong = lz4_entry(value.len() as u64 + 1, &packed);
        assert!(matches!(wrong.value(packed.clone()), Err(Error::Corrupt(_))));
        // Prefix and entry agree, but the block decodes to fewer bytes.
        let mut short = packed.clone();
        short[..4].copy_from_slice(&(value.len() as u32 + 5).to_le_bytes());
        let entry = lz4_entry(value.len() as u64 + 5, &short);
        assert!(matches!(entry.value(short), Err(Error::Corrupt(_))));
        // A blob too short to hold a prefix, and one that is not a block.
        assert!(matches!(lz4_entry(3, &[1, 2]).value(vec![1, 2]), Err(Error::Corrupt(_))));
        let garbage = [3, 0, 0, 0, 0xFF, 0xFF, 0xFF].to_vec();
        assert!(matches!(lz4_entry(3, &garbage).value(garbage), Err(Error::Corrupt(_))));
    }
}
