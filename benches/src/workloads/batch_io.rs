//! The `batch-io` suite: bob-batch-io against bob's plain path (the same work, one call and
//! one sync at a time) and the disk cache against cacache.
//!
//! Engines: `bob-batch-io` (the batched path), `plain-path` (bob without batching: a write
//! and a sync per write, a lookup per key, a commit per object, a durable store per entry)
//! and `cacache` (a content-addressed disk cache, through its sync API; it never syncs and
//! never evicts). Each row is the same work for every engine that has it; the promise column
//! says what each write had promised when it returned.
//!
//! "Cold" rows drop the files' pages from the OS page cache (`posix_fadvise(DONTNEED)`,
//! outside the timed region) before each round, so that every read goes to the device. The
//! kernel keeps pages a process maps, so for them bob's cache is reopened with reads through
//! `pread` (`StoreOptions::mapped_reads` off) and its index loaded first: blobs cold, the
//! index in memory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bob_batch_io::{
    BatchWriter, BatchWriterOptions, DiskCache, DiskCacheOptions, WriteBuffer, WriteBufferOptions,
};
use bob_io_helpers::{FileBackend, OsFile};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{ObjectId, StoreOptions};

use super::{Category, Profile, RunResult};
use crate::engines::Promise;
use crate::measure;
use crate::payload;

/// The engines of the suite, bob's first.
pub const ENGINES: &[&str] = &["bob-batch-io", "plain-path", "cacache"];

/// How each engine of the suite is set up, for the report.
pub fn configuration(engine: &str) -> String {
    match engine {
        "bob-batch-io" => "WriteBuffer (256 writes, one flush); BatchWriter (8 permits, one \
             commit per batch of 256); DiskCache (`store_buffered`, flushed every 32 stores, \
             a flush two syncs: the blobs' store commit, the index's log record; \
             `lookup_batch`; capacity a quarter of the Zipf key space)"
            .into(),
        "plain-path" => "the same files through bob without batching: `write_at` + \
             `sync_data` per write; `write` + `commit` per object; `DiskCache::store` (a \
             durable commit per entry: its blob's store commit and its index's log record, two \
             syncs); one `lookup` per key"
            .into(),
        "cacache" => "cacache 13, `write_sync`/`read_sync` (it never syncs: a write survives \
             a process crash, not a power cut; no capacity: it never evicts, so its Zipf hit \
             rate is the bound and its disk grows)"
            .into(),
        _ => String::new(),
    }
}

const PAGE: usize = 4096;
/// Writes per round of the write rows.
const ROUND: usize = 256;
/// Pages of the file the write rows write into (64 MiB).
const FILE_PAGES: u64 = (64 << 20) / PAGE as u64;
/// Keys per lookup batch.
const LOOKUP_BATCH: usize = 100;

/// A xorshift generator (the same sequence for every engine).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Keys drawn with Zipf's law (exponent `s`) over `n` ranks: rank 0 the most popular.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// The cache key of entry `i` (hex, so cacache takes it as it is).
fn cache_key(i: u64) -> String {
    format!("entry-{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn cache_value(i: u64) -> Vec<u8> {
    payload(i ^ 0x5EED, PAGE)
}

/// Drops the pages of every file under `dir` from the OS page cache (dirty pages are
/// synced first, so that they can go).
fn drop_page_cache(dir: &Path) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                let file = std::fs::File::open(entry.path())?;
                file.sync_data()?;
                rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
            }
        }
    }
    Ok(())
}

/// The disk cache of one engine.
enum Cache {
    Bob { cache: Box<DiskCache>, batched: bool },
    Cacache { dir: std::path::PathBuf },
}

impl Cache {
    fn open(engine: &str, dir: &Path, capacity_bytes: u64) -> Result<Self> {
        Self::open_with(engine, dir, capacity_bytes, true)
    }

    /// [`open`](Self::open); `mapped_reads: false` reads bob's blobs with `pread`, so that
    /// dropping the files' pages from the OS page cache makes them cold (pages a process
    /// maps are not dropped: with the store's default mapped reads, a "cold" batch would
    /// read from memory).
    fn open_with(
        engine: &str,
        dir: &Path,
        capacity_bytes: u64,
        mapped_reads: bool,
    ) -> Result<Self> {
        Ok(match engine {
            "cacache" => Cache::Cacache { dir: dir.to_path_buf() },
            _ => {
                std::fs::create_dir_all(dir)?;
                let mut options =
                    DiskCacheOptions { capacity_bytes, ..DiskCacheOptions::default() };
                options.db.store.mapped_reads = mapped_reads;
                let cache = DiskCache::open(dir.join("cache.bob"), options)?;
                Cache::Bob { cache: Box::new(cache), batched: engine == "bob-batch-io" }
            }
        })
    }

    /// Stores an entry: buffered for the batched path (flushed every 32), durable for the
    /// plain path, written to the OS for cacache.
    fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        match self {
            Cache::Bob { cache, batched: true } => cache.store_buffered(key.as_bytes(), value)?,
            Cache::Bob { cache, batched: false } => cache.store(key.as_bytes(), value)?,
            Cache::Cacache { dir } => {
                cacache::write_sync(dir, key, value)?;
            }
        }
        Ok(())
    }

    /// Makes what is buffered durable (nothing for the others).
    fn flush(&self) -> Result<()> {
        if let Cache::Bob { cache, .. } = self {
            cache.flush_writes()?;
        }
        Ok(())
    }

    fn lookup(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Cache::Bob { cache, .. } => Ok(cache.lookup(key.as_bytes())?),
            Cache::Cacache { dir } => match cacache::read_sync(dir, key) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(cacache::Error::EntryNotFound(..)) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The values of `keys`, in their order: one `lookup_batch` for the batched path, a
    /// lookup per key for the others.
    fn lookup_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        match self {
            Cache::Bob { cache, batched: true } => {
                let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
                cache.lookup_batch(&keys).into_iter().map(|r| Ok(r?)).collect()
            }
            _ => keys.iter().map(|k| self.lookup(k)).collect(),
        }
    }

    fn close(self) -> Result<()> {
        if let Cache::Bob { cache, .. } = self {
            cache.close()?;
        }
        Ok(())
    }
}

/// Runs the suite on `engine`.
pub fn run(engine: &str, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    let bob = engine != "cacache";
    if bob {
        writes(engine, dir, profile, result, false)?;
        writes(engine, dir, profile, result, true)?;
        batch_writer(engine, dir, profile, result)?;
    } else {
        for row in ["4 KiB writes, random offsets", "4 KiB writes, sequential", "4 KiB objects"] {
            result.unsupported.push(row.into());
        }
    }
    cache(engine, dir, profile, result)?;
    if engine != "plain-path" {
        zipf(engine, dir, profile, result)?;
    } else {
        result.unsupported.extend(["Zipf get-or-fill".into(), "Zipf hit rate".into()]);
    }
    Ok(())
}

/// Rounds of 256 durable 4 KiB writes into a 64 MiB file, random or sequential offsets:
/// through a `WriteBuffer` flushed once a round, or a write and a sync each.
fn writes(
    engine: &str,
    dir: &Path,
    profile: &Profile,
    result: &mut RunResult,
    sequential: bool,
) -> Result<()> {
    let path = dir.join(if sequential { "writes-seq" } else { "writes-random" });
    let file = OsFile::create_new(&path)?;
    // Written once, as a raw cache's file is: a write then changes no file system metadata
    // (a sparse file's first write to a page allocates it, and the sync commits that).
    bob_io_helpers::write_zeros(&file, 0, FILE_PAGES * PAGE as u64)?;
    file.sync_all()?;
    let mut rng = Rng(0x00DD_BA11 ^ u64::from(sequential));
    let mut buffer = WriteBuffer::new(
        &file,
        WriteBufferOptions { max_ops: usize::MAX, max_bytes: usize::MAX, interval: None },
    );
    let mut expected = std::collections::HashMap::new();
    let (mut took, mut writes) = (Duration::ZERO, 0usize);
    let batched = engine == "bob-batch-io";
    while took < profile.min_time() || writes == 0 {
        let start = rng.below(FILE_PAGES - ROUND as u64);
        let offsets: Vec<u64> = (0..ROUND as u64)
            .map(|i| if sequential { start + i } else { rng.below(FILE_PAGES) })
            .map(|page| page * PAGE as u64)
            .collect();
        let data = payload(rng.next(), PAGE);
        let started = Instant::now();
        if batched {
            for &offset in &offsets {
                buffer.write(offset, &data)?;
            }
            let report = buffer.flush()?;
            ensure!(report.syncs == 1, "a flush made {} syncs", report.syncs);
        } else {
            for &offset in &offsets {
                file.write_at(&data, offset)?;
                file.sync_data()?;
            }
        }
        took += started.elapsed();
        writes += ROUND;
        for offset in offsets {
            expected.insert(offset, data[0..8].to_vec());
        }
    }
    drop(buffer);
    // Checked: the last bytes written at each offset are there.
    let mut head = [0u8; 8];
    for (offset, bytes) in &expected {
        file.read_at(&mut head, *offset)?;
        ensure!(head[..] == bytes[..], "the write at {offset} is not in the file");
    }
    let name = if sequential { "4 KiB writes, sequential" } else { "4 KiB writes, random offsets" };
    let promise = if batched { Promise::SyncedPerBatch } else { Promise::Synced };
    result.write_rate(name, Category::Commits, (writes, took), None, promise);
    result.user_bytes += (writes * PAGE) as u64;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Durable new 4 KiB objects in a `ConcurrentStore`: a `BatchWriter` with 8 permits and one
/// commit per batch of 256, or a write and a commit each.
fn batch_writer(engine: &str, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    let path = dir.join("objects.bob");
    let store = ConcurrentStore::create_base(&path, StoreOptions::default(), 0)?;
    let blobs: Vec<Vec<u8>> = (0..ROUND as u64).map(|i| payload(i ^ 0xB10B, PAGE)).collect();
    let (mut took, mut written) = (Duration::ZERO, Vec::<(ObjectId, usize)>::new());
    let batched = engine == "bob-batch-io";
    let writer = BatchWriter::new(&store, BatchWriterOptions { permits: 8 });
    let items: Vec<(Option<ObjectId>, &[u8])> = blobs.iter().map(|b| (None, &b[..])).collect();
    while took < profile.min_time() || written.is_empty() {
        let started = Instant::now();
        if batched {
            for (i, r) in writer.write_batch(&items).into_iter().enumerate() {
                written.push((r?, i));
            }
        } else {
            for (i, blob) in blobs.iter().enumerate() {
                let id = store.write_new_obj_from_bytes(blob)?;
                store.commit()?;
                written.push((id, i));
            }
        }
        took += started.elapsed();
    }
    store.close()?;
    drop(store);
    // Checked after a reopen: every object is there with its bytes.
    let store = ConcurrentStore::open_base(&path, StoreOptions::default(), 0)?;
    for &(id, i) in written.iter().step_by(7) {
        ensure!(store.read_bytes_from_obj(id)? == blobs[i], "object {id:?} lost its bytes");
    }
    store.close()?;
    let promise = if batched { Promise::SyncedPerBatch } else { Promise::Synced };
    result.write_rate("4 KiB objects", Category::Commits, (written.len(), took), None, promise);
    result.user_bytes += (written.len() * PAGE) as u64;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// The disk cache: a load of 4 KiB entries, then batches of 100 random keys looked up, with
/// the pages in the OS page cache (hot) and dropped before each batch (cold).
fn cache(engine: &str, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    let entries = (profile.objects / 4).max(256) as u64;
    let at = dir.join("cache");
    let cache = Cache::open(engine, &at, u64::MAX)?;
    // The plain path stores durably one at a time: it is timed over its first
    // `single_commits` entries, and the rest are loaded buffered (not timed).
    let timed =
        if engine == "plain-path" { (profile.single_commits as u64).min(entries) } else { entries };
    let started = Instant::now();
    for i in 0..timed {
        cache.store(&cache_key(i), &cache_value(i))?;
    }
    cache.flush()?;
    let took = started.elapsed();
    if let Cache::Bob { cache, .. } = &cache {
        for i in timed..entries {
            cache.store_buffered(cache_key(i).as_bytes(), &cache_value(i))?;
        }
        cache.flush_writes()?;
    }
    let promise = match engine {
        "bob-batch-io" => Promise::SyncedPerBatch,
        "plain-path" => Promise::Synced,
        _ => Promise::ProcessCrash,
    };
    result.write_rate("cache store, 4 KiB", Category::Loads, (timed as usize, took), None, promise);
    result.user_bytes += entries * PAGE as u64;
    let mut rng = Rng(0xCAC4E);
    let mut cache = cache;
    for cold in [false, true] {
        if cold && engine != "cacache" {
            // Reopened with reads through `pread` (see `Cache::open_with`), its index
            // loaded by a pass over every key (not timed): the blobs are then cold after
            // each drop, the index in memory, as in a cache that has run for a while.
            cache.close()?;
            cache = Cache::open_with(engine, &at, u64::MAX, false)?;
            for i in 0..entries {
                ensure!(cache.lookup(&cache_key(i))?.is_some(), "entry {i} lost by a reopen");
            }
        }
        let (mut took, mut looked) = (Duration::ZERO, 0usize);
        let mut rounds = 0;
        while (took < profile.min_time() || rounds == 0) && rounds < 200 {
            let ids: Vec<u64> = (0..LOOKUP_BATCH).map(|_| rng.below(entries)).collect();
            let keys: Vec<String> = ids.iter().map(|&i| cache_key(i)).collect();
            if cold {
                drop_page_cache(&at)?;
            }
            let started = Instant::now();
            let values = cache.lookup_many(&keys)?;
            took += started.elapsed();
            for (value, &i) in values.iter().zip(&ids) {
                ensure!(value.as_deref() == Some(&cache_value(i)[..]), "entry {i} came back wrong");
            }
            looked += keys.len();
            rounds += 1;
        }
        let name =
            if cold { "lookup, 100 random keys, cold" } else { "lookup, 100 random keys, hot" };
        result.rate(name, Category::Reads, looked, took);
    }
    cache.close()?;
    result.space.push(measure::space("cache loaded", &at, entries * PAGE as u64)?);
    Ok(())
}

/// Get-or-fill under a Zipf load (exponent 0.99) over four times as many keys as the
/// capacity holds: a lookup, and on a miss a store of the value. Rows: throughput and the
/// hit rate.
fn zipf(engine: &str, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    let keys = (profile.objects / 4).max(256);
    let capacity = (keys / 4 * PAGE) as u64;
    let at = dir.join("zipf");
    let cache = Cache::open(engine, &at, capacity)?;
    let zipf = Zipf::new(keys, 0.99);
    let mut rng = Rng(0x21_9F);
    let ops = profile.reads;
    let mut hits = 0usize;
    let started = Instant::now();
    for _ in 0..ops {
        let i = zipf.sample(&mut rng);
        let key = cache_key(i);
        match cache.lookup(&key)? {
            Some(value) => {
                ensure!(value == cache_value(i), "entry {i} came back wrong");
                hits += 1;
            }
            None => cache.store(&key, &cache_value(i))?,
        }
    }
    cache.flush()?;
    let took = started.elapsed();
    result.rate("Zipf get-or-fill", Category::Reads, ops, took);
    result.rows.push(super::Row {
        name: "Zipf hit rate".into(),
        unit: "%".into(),
        value: hits as f64 / ops.max(1) as f64 * 100.0,
        device_bytes: None,
        ops: ops as u64,
        category: Category::Other,
        promise: None,
    });
    cache.close()?;
    result.space.push(measure::space("after Zipf", &at, capacity).context("space")?);
    Ok(())
}
