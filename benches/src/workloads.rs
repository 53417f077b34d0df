//! The workloads: identical for every engine, with fixed seeds and incompressible payloads.
//!
//! One call runs one suite on one engine in this process and returns its [`RunResult`]; the
//! orchestrator (`bob-bench compare`) runs each in a process of its own.
//!
//! Every row checks what it got: reads compare bytes, range reads their counts, deletes that
//! the keys are gone (outside the timed region where a check would cost more than the read).
//! Read rows repeat their loop until they have run for the profile's `min_row_ms`; write rows
//! are sized so that the fastest engine takes about that long at the default profile. Every
//! row carries a [`Category`] (the report averages per category) and, for writes, the
//! [`Promise`] the engine gave.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::engines::{self, KvEngine, ObjectEngine, Promise, Settings};
use crate::measure::{self, Space};
use crate::payload;

pub mod batch_io;

/// The sizes of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// Its name: `smoke`, `default` or `full`.
    pub name: String,
    /// Objects of the main sequence (4,000 B) loaded, and as many 4 KiB ones.
    pub objects: usize,
    /// Objects of mixed sizes (64 B to 64 KiB) loaded.
    pub mixed_objects: usize,
    /// Objects per durable batch.
    pub batch: usize,
    /// 1 MiB objects loaded.
    pub big_objects: usize,
    /// Batches of overwrites.
    pub overwrite_batches: usize,
    /// Rounds of the delete row: each deletes a quarter of the objects (timed), and all but
    /// the last write them back (not timed).
    pub delete_rounds: usize,
    /// Key-value entries bulk-loaded.
    pub entries: usize,
    /// Single-put durable commits.
    pub single_commits: usize,
    /// Puts made in durable commits of 1,000.
    pub batched_puts: usize,
    /// Single-put commits made without a sync (then one sync).
    pub unsynced_puts: usize,
    /// Puts of the steady overwrite (commits of 1,000).
    pub overwrites: usize,
    /// Reads per read row, at least.
    pub reads: usize,
    /// Read rows repeat their loop until they have run this long.
    pub min_row_ms: u64,
    /// The cache budget of every engine that keeps one, in MiB.
    pub cache_mib: u64,
    /// Repetitions of every (engine, suite) run; the report takes the median.
    pub repetitions: usize,
}

impl Profile {
    /// The profile called `name`.
    ///
    /// The default profile's write rows are sized from a run of each engine at the earlier,
    /// smaller sizes, so that the fastest engine's row takes about 200 ms or more.
    pub fn named(name: &str) -> Result<Self> {
        Ok(match name {
            "full" => Profile {
                name: "full".into(),
                objects: 131_072,
                mixed_objects: 65_536,
                batch: 1_024,
                big_objects: 512,
                overwrite_batches: 128,
                delete_rounds: 16,
                entries: 1_000_000,
                single_commits: 5_000,
                batched_puts: 250_000,
                unsynced_puts: 150_000,
                overwrites: 200_000,
                reads: 200_000,
                min_row_ms: 500,
                // The budget redb's own benchmark gives every engine.
                cache_mib: 4_096,
                repetitions: 5,
            },
            "default" => Profile {
                name: "default".into(),
                objects: 65_536,
                mixed_objects: 32_768,
                batch: 512,
                big_objects: 256,
                overwrite_batches: 128,
                delete_rounds: 16,
                entries: 400_000,
                single_commits: 2_000,
                batched_puts: 120_000,
                unsynced_puts: 70_000,
                overwrites: 75_000,
                reads: 50_000,
                min_row_ms: 200,
                cache_mib: 1_024,
                // This machine's runs vary by a third from one to the next: five, not three.
                repetitions: 5,
            },
            "smoke" => Profile {
                name: "smoke".into(),
                objects: 1_024,
                mixed_objects: 256,
                batch: 64,
                big_objects: 8,
                overwrite_batches: 8,
                delete_rounds: 2,
                entries: 10_000,
                single_commits: 20,
                batched_puts: 2_000,
                unsynced_puts: 200,
                overwrites: 1_000,
                reads: 2_000,
                min_row_ms: 0,
                cache_mib: 64,
                repetitions: 1,
            },
            other => anyhow::bail!("no profile named {other} (smoke, default, full)"),
        })
    }

    /// The engines' settings under this profile.
    pub fn settings(&self) -> Settings {
        Settings { cache_bytes: self.cache_mib << 20 }
    }

    fn min_time(&self) -> Duration {
        Duration::from_millis(self.min_row_ms)
    }
}

/// What a row measures, for the per-category means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    /// Fresh loads in large durable batches.
    Loads,
    /// Small durable (or unsynced) transactions of fresh keys.
    Commits,
    /// Point and range reads.
    Reads,
    /// Overwrites and deletes of existing keys.
    Updates,
    /// Compaction and reopening.
    Maintenance,
    /// Not averaged: `len`, O(1) in a tree that keeps a count and a scan in an LSM tree.
    Other,
}

impl Category {
    /// The categories that are averaged, in report order.
    pub const AVERAGED: [Category; 5] = [
        Category::Loads,
        Category::Commits,
        Category::Reads,
        Category::Updates,
        Category::Maintenance,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Category::Loads => "loads",
            Category::Commits => "commits",
            Category::Reads => "reads",
            Category::Updates => "updates/deletes",
            Category::Maintenance => "maintenance",
            Category::Other => "not averaged",
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The workload.
    pub name: String,
    /// `ops/s` (higher is better) or `s` (lower is better).
    pub unit: String,
    /// The measurement.
    pub value: f64,
    /// Bytes the process sent to storage during it, for rows that write.
    #[serde(default)]
    pub device_bytes: Option<u64>,
    /// Operations it counted (to give bytes per operation).
    #[serde(default)]
    pub ops: u64,
    /// What it measures.
    pub category: Category,
    /// For a row that writes: what the engine promised when each write returned.
    #[serde(default)]
    pub promise: Option<Promise>,
}

/// What one (engine, suite) process measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The engine.
    pub engine: String,
    /// `objects` or `kv`.
    pub suite: String,
    /// Which repetition of the comparison this run was (set by the orchestrator).
    #[serde(default)]
    pub repetition: usize,
    /// How the engine was configured.
    #[serde(default)]
    pub configuration: String,
    /// Throughputs and times.
    pub rows: Vec<Row>,
    /// Space on disk at named points.
    pub space: Vec<Space>,
    /// Bytes of user data written (keys and values, or object bytes).
    pub user_bytes: u64,
    /// Bytes written to the device during the run (see [`measure::device_write_bytes`]).
    pub device_bytes: Option<u64>,
    /// Peak resident memory in KiB (`VmHWM`, mapped file pages included), if known.
    pub peak_rss_kib: Option<u64>,
    /// Peak anonymous resident memory in KiB (`RssAnon`, sampled: [`measure::AnonPeak`]).
    #[serde(default)]
    pub peak_anon_kib: Option<u64>,
    /// Rows the engine has no operation for.
    #[serde(default)]
    pub unsupported: Vec<String>,
    /// For bob: (durable commits, checkpoints) its stores made during the run (checkpoints
    /// counted as handles close).
    #[serde(default)]
    pub commits_and_checkpoints: Option<(u64, u64)>,
}

impl RunResult {
    fn new(engine: &str, suite: &str) -> Self {
        RunResult {
            engine: engine.into(),
            suite: suite.into(),
            repetition: 0,
            configuration: String::new(),
            rows: Vec::new(),
            space: Vec::new(),
            user_bytes: 0,
            device_bytes: None,
            peak_rss_kib: None,
            peak_anon_kib: None,
            unsupported: Vec::new(),
            commits_and_checkpoints: None,
        }
    }

    /// A throughput row.
    fn rate(&mut self, name: &str, category: Category, ops: usize, took: Duration) {
        row_done(name);
        let value = ops as f64 / took.as_secs_f64().max(1e-9);
        self.rows.push(Row {
            name: name.into(),
            unit: "ops/s".into(),
            value,
            device_bytes: None,
            ops: ops as u64,
            category,
            promise: None,
        });
    }

    /// A row that writes: its throughput, the bytes it sent to storage, and its promise.
    fn write_rate(
        &mut self,
        name: &str,
        category: Category,
        (ops, took): (usize, Duration),
        device_bytes: Option<u64>,
        promise: Promise,
    ) {
        self.rate(name, category, ops, took);
        if let Some(row) = self.rows.last_mut() {
            row.device_bytes = device_bytes;
            row.promise = Some(promise);
        }
    }

    /// A time row (lower is better).
    fn seconds(&mut self, name: &str, category: Category, took: Duration) {
        row_done(name);
        self.rows.push(Row {
            name: name.into(),
            unit: "s".into(),
            value: took.as_secs_f64(),
            device_bytes: None,
            ops: 1,
            category,
            promise: None,
        });
    }
}

/// Tells the orchestrator (`BOB_BENCH_ROWS` set: it reads this process's standard error) that
/// a row is done, for its progress display.
fn row_done(name: &str) {
    if std::env::var_os("BOB_BENCH_ROWS").is_some() {
        eprintln!("bob-bench row done: {name}");
    }
}

/// The suites.
pub const SUITES: &[&str] = &["objects", "kv", "batch-io"];

/// Opens `engine` for `suite` in `dir` and makes `commits` durable single-object (or
/// single-put) commits: run under `strace -c` at two counts, the difference gives the
/// syncs one commit costs, open and close excluded.
pub fn commits_only(suite: &str, engine: &str, dir: &Path, commits: usize) -> Result<()> {
    let bytes = payload(42, if suite == "kv" { VALUE } else { MAIN });
    let settings = Profile::named("smoke")?.settings();
    if suite == "kv" {
        let mut kv = engines::open_kv(engine, dir, &settings)?;
        for i in 0..commits as u64 {
            kv.write(&[(&key(i), &bytes)], &[], true)?;
        }
        kv.close()
    } else {
        let mut objects = engines::open_objects(engine, dir, &settings)?;
        for i in 0..commits as u64 {
            objects.write_batch(&[(i, &bytes)])?;
        }
        objects.close()
    }
}

/// Runs `suite` on `engine` in `dir` (which must be empty) with `profile`.
pub fn run(suite: &str, engine: &str, dir: &Path, profile: &Profile) -> Result<RunResult> {
    let mut result = RunResult::new(engine, suite);
    let settings = profile.settings();
    result.configuration = if suite == "batch-io" {
        batch_io::configuration(engine)
    } else {
        engines::configuration(suite, engine, &settings)
    };
    measure::watch_device(dir);
    let device_before = measure::device_write_bytes();
    let anon = measure::AnonPeak::start();
    match suite {
        "objects" => {
            let open = |at: &Path| engines::open_objects(engine, at, &settings);
            objects(&open, dir, profile, &mut result)?
        }
        "kv" => kv(&|at| engines::open_kv(engine, at, &settings), dir, profile, &mut result)?,
        "batch-io" => batch_io::run(engine, dir, profile, &mut result)?,
        other => anyhow::bail!("no suite named {other}"),
    }
    result.device_bytes = match (device_before, measure::device_write_bytes()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    result.peak_rss_kib = measure::peak_rss_kib();
    result.peak_anon_kib = anon.stop();
    if engine.starts_with("bob") {
        result.commits_and_checkpoints = Some(engines::bob_commit_counts());
    }
    Ok(result)
}

/// Bytes written to the device from its start (see [`measure::device_write_bytes`]).
#[derive(Clone, Copy)]
struct Meter(Option<u64>);

impl Meter {
    fn start() -> Self {
        Self(measure::device_write_bytes())
    }

    fn bytes(self) -> Option<u64> {
        Some(measure::device_write_bytes()?.saturating_sub(self.0?))
    }
}

/// SplitMix64, for workload choices (payloads come from [`payload`]).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Runs `op(0)`, `op(1)`, ... until at least `min_ops` have run and `min_time` has passed;
/// returns how many ran and how long they took. The clock is read every 256 operations.
fn timed_loop(
    min_ops: usize,
    min_time: Duration,
    mut op: impl FnMut(usize) -> Result<()>,
) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let mut done = 0;
    loop {
        for i in done..done + 256 {
            op(i)?;
        }
        done += 256;
        let took = started.elapsed();
        if done >= min_ops && took >= min_time {
            return Ok((done, took));
        }
    }
}

/// Loads `sizes.len()` objects (keys `0..`) in durable batches of `batch`; returns the time.
fn load_objects(
    engine: &mut dyn ObjectEngine,
    sizes: &[usize],
    batch: usize,
    seed: u64,
    user_bytes: &mut u64,
) -> Result<Duration> {
    let mut took = Duration::ZERO;
    for (chunk_index, chunk) in sizes.chunks(batch).enumerate() {
        let first = chunk_index * batch;
        let data: Vec<Vec<u8>> = chunk
            .iter()
            .enumerate()
            .map(|(i, &len)| payload(seed ^ (first + i) as u64, len))
            .collect();
        let objects: Vec<(u64, &[u8])> =
            data.iter().enumerate().map(|(i, d)| ((first + i) as u64, d.as_slice())).collect();
        *user_bytes += data.iter().map(|d| d.len() as u64).sum::<u64>();
        let started = Instant::now();
        engine.write_batch(&objects)?;
        took += started.elapsed();
    }
    Ok(took)
}

/// Writes `keys` with the payloads of `seeds` in durable batches of `batch`; returns the time.
fn write_keys(
    engine: &mut dyn ObjectEngine,
    keys: &[u64],
    seeds: &[u64],
    batch: usize,
) -> Result<Duration> {
    let mut took = Duration::ZERO;
    for (keys, seeds) in keys.chunks(batch).zip(seeds.chunks(batch)) {
        let data: Vec<Vec<u8>> = seeds.iter().map(|&seed| payload(seed, MAIN)).collect();
        let objects: Vec<(u64, &[u8])> =
            keys.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
        let started = Instant::now();
        engine.write_batch(&objects)?;
        took += started.elapsed();
    }
    Ok(took)
}

/// The object size of the main sequence: 4,000 B, which fits a 4 KiB page of redb or LMDB
/// beside its header (4,096 B overflows one; that load is a row of its own).
const MAIN: usize = 4_000;

/// What the objects of the main sequence must hold: the payload seed of each key.
struct Expected {
    seeds: Vec<u64>,
    /// The first 16 bytes of each key's payload, checked inside the timed loop (cheap and the
    /// same for every engine); whole objects are checked outside it.
    heads: Vec<[u8; 16]>,
}

impl Expected {
    fn new(seeds: Vec<u64>) -> Self {
        let heads = seeds.iter().map(|&seed| head(&payload(seed, MAIN))).collect();
        Self { seeds, heads }
    }

    fn set(&mut self, key: u64, seed: u64) {
        self.seeds[key as usize] = seed;
        self.heads[key as usize] = head(&payload(seed, MAIN));
    }

    /// Reads `keys` whole and compares them byte for byte (outside any timed region).
    fn check_whole(&self, engine: &dyn ObjectEngine, keys: &[u64]) -> Result<()> {
        let reader = engine.reader()?;
        for &key in keys {
            let bytes = reader.read(key)?;
            let want = payload(self.seeds[key as usize], MAIN);
            ensure!(bytes.as_deref() == Some(&want[..]), "object {key} read back wrong bytes");
        }
        Ok(())
    }
}

fn head(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = bytes.len().min(16);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Random reads of `keys` through one reader, each checked against `expected` (length and
/// first bytes in the timed loop), for at least the profile's reads and time; then a sample
/// re-read and checked whole. Returns the reads made and their time.
fn random_reads(
    engine: &dyn ObjectEngine,
    keys: &[u64],
    profile: &Profile,
    seed: u64,
    expected: &Expected,
) -> Result<(usize, Duration)> {
    let mut rng = Rng(seed);
    let reader = engine.reader()?;
    let measured = timed_loop(profile.reads, profile.min_time(), |_| {
        let key = keys[rng.below(keys.len())];
        let bytes = reader.read(key)?;
        let Some(bytes) = bytes else { anyhow::bail!("object {key} missing") };
        ensure!(
            bytes.len() == MAIN && head(&bytes) == expected.heads[key as usize],
            "object {key} read back wrong bytes"
        );
        std::hint::black_box(bytes);
        Ok(())
    })?;
    drop(reader);
    let sample: Vec<u64> = keys.iter().copied().step_by((keys.len() / 500).max(1)).collect();
    expected.check_whole(engine, &sample)?;
    Ok(measured)
}

/// Opens an object engine in a directory.
type OpenObjects<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn ObjectEngine>>;
/// Opens a key-value engine in a directory.
type OpenKv<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn KvEngine>>;

fn objects(
    open: OpenObjects<'_>,
    dir: &Path,
    profile: &Profile,
    result: &mut RunResult,
) -> Result<()> {
    use Category::{Loads, Maintenance, Reads, Updates};
    let synced = Promise::Synced;
    let n = profile.objects;
    let mut user_bytes = 0;
    // 4,096-byte objects: a 4 KiB value overflows a 4 KiB page in redb and LMDB (the main
    // sequence below uses 4,000 B).
    {
        let mut engine = open(&dir.join("4096"))?;
        let meter = Meter::start();
        let took =
            load_objects(engine.as_mut(), &vec![4_096; n], profile.batch, 2, &mut user_bytes)?;
        let name = "load 4 KiB objects (page overflow)";
        result.write_rate(name, Loads, (n, took), meter.bytes(), synced);
        engine.close()?;
    }
    // Mixed sizes, 64 B to 64 KiB, log-uniform.
    {
        let mut rng = Rng(3);
        let sizes: Vec<usize> = (0..profile.mixed_objects)
            .map(|_| {
                let base = 64usize << rng.below(10);
                base + rng.below(base)
            })
            .collect();
        let mut engine = open(&dir.join("mixed"))?;
        let meter = Meter::start();
        let took = load_objects(engine.as_mut(), &sizes, profile.batch / 4, 3, &mut user_bytes)?;
        let name = "load mixed 64 B-64 KiB";
        result.write_rate(name, Loads, (sizes.len(), took), meter.bytes(), synced);
        engine.close()?;
    }
    // 1 MiB objects, 16 to a batch.
    {
        let mut engine = open(&dir.join("big"))?;
        let sizes = vec![1 << 20; profile.big_objects];
        let meter = Meter::start();
        let took = load_objects(engine.as_mut(), &sizes, 16, 4, &mut user_bytes)?;
        result.write_rate("load 1 MiB objects", Loads, (sizes.len(), took), meter.bytes(), synced);
        engine.close()?;
    }
    // The main sequence on 4,000-byte objects.
    let main = dir.join("main");
    let mut engine = open(&main)?;
    let meter = Meter::start();
    let took = load_objects(engine.as_mut(), &vec![MAIN; n], profile.batch, 1, &mut user_bytes)?;
    result.write_rate("load 4,000 B objects", Loads, (n, took), meter.bytes(), synced);
    let keys: Vec<u64> = (0..n as u64).collect();
    let mut expected = Expected::new(keys.iter().map(|&k| 1 ^ k).collect());
    let measured = random_reads(engine.as_ref(), &keys, profile, 5, &expected)?;
    result.rate("random 4,000 B reads", Reads, measured.0, measured.1);

    let mut rng = Rng(6);
    let mut took = Duration::ZERO;
    let mut overwritten = 0;
    let meter = Meter::start();
    for round in 0..profile.overwrite_batches {
        let picked: Vec<u64> = (0..profile.batch)
            .map(|_| rng.below(n) as u64)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let seeds: Vec<u64> = picked.iter().map(|&k| k ^ ((round as u64 + 1) << 40)).collect();
        user_bytes += (MAIN * picked.len()) as u64;
        overwritten += picked.len();
        took += write_keys(engine.as_mut(), &picked, &seeds, profile.batch)?;
        for (&k, &seed) in picked.iter().zip(&seeds) {
            expected.set(k, seed);
        }
    }
    let name = "overwrite 4,000 B (batches)";
    result.write_rate(name, Updates, (overwritten, took), meter.bytes(), synced);
    let sample: Vec<u64> = keys.iter().copied().step_by((n / 500).max(1)).collect();
    expected.check_whole(engine.as_ref(), &sample)?;

    // One object per durable commit: an overwrite of a random existing object (its key keeps
    // its place in every engine's index), synced before the next.
    let picked: Vec<u64> = (0..profile.single_commits).map(|_| rng.below(n) as u64).collect();
    let seeds: Vec<u64> = picked.iter().map(|&k| k ^ (0xC0 << 40)).collect();
    user_bytes += (MAIN * picked.len()) as u64;
    let meter = Meter::start();
    let took = write_keys(engine.as_mut(), &picked, &seeds, 1)?;
    for (&k, &seed) in picked.iter().zip(&seeds) {
        expected.set(k, seed);
    }
    let name = "single-object commits, fsync (4,000 B overwrite)";
    result.write_rate(name, Category::Commits, (picked.len(), took), meter.bytes(), synced);
    expected.check_whole(engine.as_ref(), &picked[picked.len().saturating_sub(50)..])?;

    // Deletes, in rounds: each deletes a random quarter in durable batches (timed), checks
    // they are gone, and writes them back with new payloads (not timed) unless it is the last.
    let per_round = (n / 4 / profile.batch).max(1) * profile.batch;
    let mut order = keys.clone();
    let mut doomed = Vec::new();
    let (mut deleted, mut took, mut device) = (0, Duration::ZERO, Some(0u64));
    for round in 0..profile.delete_rounds.max(1) {
        rng.shuffle(&mut order);
        doomed = order[..per_round].to_vec();
        let meter = Meter::start();
        let started = Instant::now();
        for chunk in doomed.chunks(profile.batch) {
            engine.delete_batch(chunk)?;
        }
        took += started.elapsed();
        device = device.zip(meter.bytes()).map(|(a, b)| a + b);
        deleted += doomed.len();
        let reader = engine.reader()?;
        for &k in doomed.iter().step_by(7) {
            ensure!(reader.read(k)?.is_none(), "object {k} is still there after its delete");
        }
        drop(reader);
        if round + 1 < profile.delete_rounds {
            let seeds: Vec<u64> = doomed.iter().map(|&k| k ^ ((round as u64 + 1) << 48)).collect();
            write_keys(engine.as_mut(), &doomed, &seeds, profile.batch)?;
            user_bytes += (MAIN * doomed.len()) as u64;
            for (&k, &seed) in doomed.iter().zip(&seeds) {
                expected.set(k, seed);
            }
        }
    }
    result.write_rate("delete 4,000 B (batches)", Updates, (deleted, took), device, synced);
    let mut live = vec![true; n];
    let reader = engine.reader()?;
    for &k in &doomed {
        live[k as usize] = false;
        ensure!(reader.read(k)?.is_none(), "object {k} is still there after its delete");
    }
    drop(reader);
    let survivors: Vec<u64> = keys.iter().copied().filter(|&k| live[k as usize]).collect();
    let live_bytes = (survivors.len() * MAIN) as u64;
    engine.close()?;
    result.space.push(measure::space("after deletes", &main, live_bytes)?);

    let mut engine = open(&main)?;
    let started = Instant::now();
    if engine.compact()? {
        result.seconds("compaction", Maintenance, started.elapsed());
    } else {
        result.unsupported.push("compaction".into());
    }
    let measured = random_reads(engine.as_ref(), &survivors, profile, 7, &expected)?;
    result.rate("random reads after compaction", Reads, measured.0, measured.1);
    let reader = engine.reader()?;
    for &k in doomed.iter().step_by((doomed.len() / 500).max(1)) {
        ensure!(reader.read(k)?.is_none(), "object {k} came back after compaction");
    }
    drop(reader);
    engine.close()?;
    result.space.push(measure::space("after compaction", &main, live_bytes)?);
    result.user_bytes = user_bytes;
    Ok(())
}

/// A 24-byte random key.
fn key(i: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key.copy_from_slice(&payload(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xABCD, 24));
    key
}

const VALUE: usize = 150;

fn value(i: u64, round: u64) -> Vec<u8> {
    payload(i ^ (round << 48), VALUE)
}

fn put_all(
    engine: &mut dyn KvEngine,
    entries: &[([u8; 24], Vec<u8>)],
    per_commit: usize,
    durable: bool,
) -> Result<Duration> {
    let started = Instant::now();
    for chunk in entries.chunks(per_commit.max(1)) {
        let puts: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, v)| (&k[..], v.as_slice())).collect();
        engine.write(&puts, &[], durable)?;
    }
    Ok(started.elapsed())
}

fn kv(open: OpenKv<'_>, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    use Category::{Commits, Loads, Maintenance, Other, Reads, Updates};
    let synced = Promise::Synced;
    let n = profile.entries as u64;
    let entries: Vec<([u8; 24], Vec<u8>)> = (0..n).map(|i| (key(i), value(i, 0))).collect();
    let entry_bytes = (24 + VALUE) as u64;
    let mut user_bytes = n * entry_bytes;
    // Sorted load, in durable commits of 10,000, into its own directory.
    {
        let mut sorted = entries.clone();
        sorted.sort();
        let mut engine = open(&dir.join("sorted"))?;
        let meter = Meter::start();
        let took = put_all(engine.as_mut(), &sorted, 10_000, true)?;
        let name = "sorted load (10,000 per commit)";
        result.write_rate(name, Loads, (sorted.len(), took), meter.bytes(), synced);
        engine.close()?;
        user_bytes += n * entry_bytes;
    }
    let main = dir.join("main");
    let mut engine = open(&main)?;
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &entries, entries.len(), true)?;
    let name = "bulk load (one commit)";
    result.write_rate(name, Loads, (entries.len(), took), meter.bytes(), synced);
    drop(entries);

    let mut next = n;
    let fresh = |count: usize, next: &mut u64| -> Vec<([u8; 24], Vec<u8>)> {
        let out = (*next..*next + count as u64).map(|i| (key(i), value(i, 0))).collect();
        *next += count as u64;
        out
    };
    let batch = fresh(profile.single_commits, &mut next);
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &batch, 1, true)?;
    let name = "single-put commits, fsync";
    result.write_rate(name, Commits, (batch.len(), took), meter.bytes(), synced);
    let batch = fresh(profile.batched_puts, &mut next);
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &batch, 1_000, true)?;
    let name = "1,000-put commits, fsync";
    result.write_rate(name, Commits, (batch.len(), took), meter.bytes(), synced);
    let batch = fresh(profile.unsynced_puts, &mut next);
    let meter = Meter::start();
    let started = Instant::now();
    put_all(engine.as_mut(), &batch, 1, false)?;
    engine.sync()?;
    let took = started.elapsed();
    let name = "single-put commits, no fsync, then sync";
    let promise = engine.unsynced_promise();
    result.write_rate(name, Commits, (batch.len(), took), meter.bytes(), promise);
    drop(batch);
    let total = next;
    user_bytes += (total - n) * entry_bytes;

    let mut lens = 0;
    let (calls, took) = timed_loop(1, profile.min_time(), |_| {
        lens = engine.count()?;
        Ok(())
    })?;
    result.seconds("len", Other, took / calls as u32);
    ensure!(lens == total, "len says {lens}, {total} were written");

    let mut rng = Rng(11);
    let picks: Vec<u64> = (0..profile.reads).map(|_| rng.below(n as usize) as u64).collect();
    // Expected values and range counts, computed outside the timed loops; the loops compare.
    let wanted: Vec<Vec<u8>> = picks.iter().map(|&i| value(i, 0)).collect();
    let picked_keys: Vec<[u8; 24]> = picks.iter().map(|&i| key(i)).collect();
    let reader = engine.reader()?;
    let (gets, took) = timed_loop(picks.len(), profile.min_time(), |i| {
        let i = i % picks.len();
        let got = reader.get(&picked_keys[i])?;
        ensure!(got.as_deref() == Some(&wanted[i][..]), "key {}: wrong value or missing", picks[i]);
        Ok(())
    })?;
    result.rate("random gets", Reads, gets, took);

    let mut all_keys: Vec<[u8; 24]> = (0..total).map(key).collect();
    all_keys.sort_unstable();
    let starts = &picked_keys[..picked_keys.len() / 10];
    let counts_wanted: Vec<usize> = starts
        .iter()
        .map(|k| (all_keys.len() - all_keys.partition_point(|x| x < k)).min(10))
        .collect();
    drop(all_keys);
    let (ranges, took) = timed_loop(starts.len(), profile.min_time(), |i| {
        let i = i % starts.len();
        let count = reader.range(&starts[i], 10)?;
        ensure!(count == counts_wanted[i], "range reads returned wrong counts");
        Ok(())
    })?;
    result.rate("range reads of 10", Reads, ranges, took);
    drop(reader);

    let started = Instant::now();
    let shared: &dyn KvEngine = engine.as_ref();
    let halves = picks.len().div_ceil(2);
    let per_thread = std::thread::scope(|scope| -> Result<usize> {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (keys, wanted) = (&picked_keys, &wanted);
                scope.spawn(move || -> Result<usize> {
                    let reader = shared.reader()?;
                    let (done, _) = timed_loop(halves, profile.min_time(), |i| {
                        let i = (t * halves + i) % keys.len();
                        let got = reader.get(&keys[i])?;
                        ensure!(got.as_deref() == Some(&wanted[i][..]), "wrong value or missing");
                        Ok(())
                    })?;
                    Ok(done)
                })
            })
            .collect();
        let mut total = 0;
        for thread in threads {
            total += thread.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        Ok(total)
    })?;
    result.rate("random gets, 2 threads", Reads, per_thread, started.elapsed());
    drop(wanted);

    let mut rng = Rng(12);
    let overwritten: Vec<u64> =
        (0..profile.overwrites).map(|_| rng.below(n as usize) as u64).collect();
    let overwrite: Vec<([u8; 24], Vec<u8>)> =
        overwritten.iter().map(|&i| (key(i), value(i, 1))).collect();
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &overwrite, 1_000, true)?;
    let name = "steady overwrite (1,000 per commit)";
    result.write_rate(name, Updates, (overwrite.len(), took), meter.bytes(), synced);
    user_bytes += overwrite.len() as u64 * entry_bytes;
    drop(overwrite);
    let reader = engine.reader()?;
    for &i in overwritten.iter().step_by(97) {
        let got = reader.get(&key(i))?;
        ensure!(got == Some(value(i, 1)), "key {i}: the overwrite is not what reads return");
    }
    drop(reader);

    let removed: Vec<[u8; 24]> = (0..n).step_by(2).map(key).collect();
    let meter = Meter::start();
    let started = Instant::now();
    for chunk in removed.chunks(10_000) {
        let deletes: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
        engine.write(&[], &deletes, true)?;
    }
    let name = "remove half (10,000 per commit)";
    let took = started.elapsed();
    result.write_rate(name, Updates, (removed.len(), took), meter.bytes(), synced);
    let reader = engine.reader()?;
    for i in (0..n).step_by(2 * 97) {
        ensure!(reader.get(&key(i))?.is_none(), "key {i} is still there after its delete");
    }
    for i in (1..n).step_by(2 * 97) {
        ensure!(reader.get(&key(i))?.is_some(), "key {i} went missing in the removals");
    }
    drop(reader);
    let live_bytes = (total - removed.len() as u64) * entry_bytes;
    // Timed, and counted with the compaction below: an engine may give the space back at
    // close (bob-btree compacts a file left more than half empty), then find nothing to do.
    let started = Instant::now();
    engine.close()?;
    let closing = started.elapsed();
    result.space.push(measure::space("after removing half", &main, live_bytes)?);

    // Reopens, each timed with its first get (the close before it is not), repeated up to
    // the row's time or 50 reopens.
    let (mut reopens, mut took) = (0u32, Duration::ZERO);
    let mut engine = loop {
        let started = Instant::now();
        let engine = open(&main)?;
        ensure!(engine.get(&key(1))?.is_some(), "key 1 missing after reopen");
        took += started.elapsed();
        reopens += 1;
        if took >= profile.min_time() || reopens >= 50 {
            break engine;
        }
        engine.close()?;
    };
    result.seconds("reopen and first get", Maintenance, took / reopens);
    // The close after removing half and the compaction: what giving that space back cost,
    // wherever the engine did it.
    let name = "compaction (with the close after removing half)";
    let started = Instant::now();
    if engine.compact()? {
        result.seconds(name, Maintenance, closing + started.elapsed());
    } else {
        result.unsupported.push(name.into());
    }
    let reader = engine.reader()?;
    for i in (1..n).step_by(2 * 97) {
        ensure!(reader.get(&key(i))?.is_some(), "key {i} went missing in the compaction");
    }
    drop(reader);
    engine.close()?;
    result.space.push(measure::space("after compaction", &main, live_bytes)?);
    result.user_bytes = user_bytes;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The content checks catch an adapter that returns wrong data: in-memory engines, once
    //! right and once broken in one way each, run the suites at a tiny size.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engines::{KvReads, ObjectReads};

    /// How a test engine misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        /// Reads return one flipped byte for every seventh key.
        WrongBytes,
        /// Deletes do nothing.
        KeepsDeleted,
        /// Range reads stop one short.
        ShortRange,
    }

    /// Every directory's objects, as its files would hold them after a close.
    type Disk<K> = Arc<Mutex<BTreeMap<std::path::PathBuf, BTreeMap<K, Vec<u8>>>>>;

    /// An object engine in memory that saves its map to `disk` at close.
    struct MemObjects {
        map: BTreeMap<u64, Vec<u8>>,
        fault: Fault,
        disk: Disk<u64>,
        at: std::path::PathBuf,
    }

    impl ObjectEngine for MemObjects {
        fn write_batch(&mut self, objects: &[(u64, &[u8])]) -> Result<()> {
            for &(k, v) in objects {
                self.map.insert(k, v.to_vec());
            }
            Ok(())
        }
        fn delete_batch(&mut self, keys: &[u64]) -> Result<()> {
            if self.fault != Fault::KeepsDeleted {
                for k in keys {
                    self.map.remove(k);
                }
            }
            Ok(())
        }
        fn reader(&self) -> Result<Box<dyn ObjectReads + '_>> {
            Ok(Box::new(self))
        }
        fn compact(&mut self) -> Result<bool> {
            Ok(false)
        }
        fn close(self: Box<Self>) -> Result<()> {
            self.disk.lock().unwrap().insert(self.at, self.map);
            Ok(())
        }
    }

    impl ObjectReads for MemObjects {
        fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
            let mut got = self.map.get(&key).cloned();
            if let (Fault::WrongBytes, Some(bytes)) = (self.fault, got.as_mut()) {
                if key % 7 == 3 && !bytes.is_empty() {
                    bytes[0] ^= 1;
                }
            }
            Ok(got)
        }
    }

    /// A key-value engine in memory that saves its map to `disk` at close.
    struct MemKv {
        map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
        fault: Fault,
        disk: Disk<Vec<u8>>,
        at: std::path::PathBuf,
    }

    impl KvEngine for MemKv {
        fn write(&mut self, puts: &[(&[u8], &[u8])], deletes: &[&[u8]], _: bool) -> Result<()> {
            let mut map = self.map.lock().unwrap();
            for &(k, v) in puts {
                map.insert(k.to_vec(), v.to_vec());
            }
            if self.fault != Fault::KeepsDeleted {
                for k in deletes {
                    map.remove(*k);
                }
            }
            Ok(())
        }
        fn sync(&mut self) -> Result<()> {
            Ok(())
        }
        fn unsynced_promise(&self) -> Promise {
            Promise::Nothing
        }
        fn reader(&self) -> Result<Box<dyn KvReads + '_>> {
            Ok(Box::new(self))
        }
        fn count(&self) -> Result<u64> {
            Ok(self.map.lock().unwrap().len() as u64)
        }
        fn compact(&mut self) -> Result<bool> {
            Ok(false)
        }
        fn close(self: Box<Self>) -> Result<()> {
            let map = self.map.into_inner().unwrap();
            self.disk.lock().unwrap().insert(self.at, map);
            Ok(())
        }
    }

    impl KvReads for MemKv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            let mut got = self.map.lock().unwrap().get(key).cloned();
            if let (Fault::WrongBytes, Some(bytes)) = (self.fault, got.as_mut()) {
                if key[0] % 7 == 3 {
                    bytes[0] ^= 1;
                }
            }
            Ok(got)
        }
        fn range(&self, from: &[u8], n: usize) -> Result<usize> {
            let count = self.map.lock().unwrap().range(from.to_vec()..).take(n).count();
            Ok(if self.fault == Fault::ShortRange { count.saturating_sub(1) } else { count })
        }
    }

    /// What `disk` holds for `at` (empty for a new directory), creating the directory.
    fn reopen<K: Clone>(disk: &Disk<K>, at: &Path) -> Result<BTreeMap<K, Vec<u8>>> {
        std::fs::create_dir_all(at)?;
        Ok(disk.lock().unwrap().get(at).cloned().unwrap_or_default())
    }

    /// Runs the object suite over a `MemObjects` with `fault`.
    fn run_objects(fault: Fault) -> Result<()> {
        let dir = scratch();
        let disk: Disk<u64> = Arc::default();
        let open = |at: &Path| -> Result<Box<dyn ObjectEngine>> {
            let map = reopen(&disk, at)?;
            Ok(Box::new(MemObjects { map, fault, disk: disk.clone(), at: at.to_path_buf() }))
        };
        let result = objects(&open, &dir, &tiny(), &mut empty_result());
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Runs the key-value suite over a `MemKv` with `fault`.
    fn run_kv(fault: Fault) -> Result<()> {
        let dir = scratch();
        let disk: Disk<Vec<u8>> = Arc::default();
        let open = |at: &Path| -> Result<Box<dyn KvEngine>> {
            let map = Mutex::new(reopen(&disk, at)?);
            Ok(Box::new(MemKv { map, fault, disk: disk.clone(), at: at.to_path_buf() }))
        };
        let result = kv(&open, &dir, &tiny(), &mut empty_result());
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// A directory of its own for each run (the tests run in parallel).
    fn scratch() -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("bob-bench-check-{}-{n}", std::process::id()))
    }

    fn tiny() -> Profile {
        Profile {
            name: "test".into(),
            objects: 256,
            mixed_objects: 64,
            batch: 32,
            big_objects: 2,
            overwrite_batches: 4,
            delete_rounds: 2,
            entries: 2_000,
            single_commits: 2,
            batched_puts: 2_000,
            unsynced_puts: 20,
            overwrites: 1_000,
            reads: 400,
            min_row_ms: 0,
            cache_mib: 1,
            repetitions: 1,
        }
    }

    fn empty_result() -> RunResult {
        RunResult::new("mem", "")
    }

    #[test]
    fn a_correct_adapter_passes_every_content_check() {
        run_objects(Fault::None).unwrap();
        run_kv(Fault::None).unwrap();
    }

    #[test]
    fn an_adapter_returning_wrong_bytes_fails_the_run() {
        let e = run_objects(Fault::WrongBytes).unwrap_err().to_string();
        assert!(e.contains("wrong bytes"), "{e}");
        let e = run_kv(Fault::WrongBytes).unwrap_err().to_string();
        assert!(e.contains("wrong value"), "{e}");
    }

    #[test]
    fn an_adapter_that_keeps_deleted_keys_fails_the_run() {
        let e = run_objects(Fault::KeepsDeleted).unwrap_err().to_string();
        assert!(e.contains("still there"), "{e}");
        let e = run_kv(Fault::KeepsDeleted).unwrap_err().to_string();
        assert!(e.contains("still there"), "{e}");
    }

    #[test]
    fn an_adapter_with_short_ranges_fails_the_run() {
        let e = run_kv(Fault::ShortRange).unwrap_err().to_string();
        assert!(e.contains("wrong counts"), "{e}");
    }
}
