//! The workloads: identical for every engine, with fixed seeds and incompressible payloads.
//!
//! One call runs one suite on one engine in this process and returns its [`RunResult`]; the
//! orchestrator (`bob-bench compare`) runs each in a process of its own.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::engines::{self, KvEngine, ObjectEngine};
use crate::measure::{self, Space};
use crate::payload;

/// The sizes of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// Its name: `smoke`, `default` or `full`.
    pub name: String,
    /// Objects of the main sequence (4,000 B) loaded, and as many 4 KiB ones.
    pub objects: usize,
    /// Objects per durable batch.
    pub batch: usize,
    /// 1 MiB objects loaded.
    pub big_objects: usize,
    /// Key-value entries bulk-loaded.
    pub entries: usize,
    /// Single-put durable commits.
    pub single_commits: usize,
    /// Random reads per read workload.
    pub reads: usize,
    /// Repetitions of every (engine, suite) run; the report takes the median.
    pub repetitions: usize,
}

impl Profile {
    /// The profile called `name`.
    pub fn named(name: &str) -> Result<Self> {
        let full = Profile {
            name: "full".into(),
            objects: 65_536,
            batch: 1_024,
            big_objects: 1_000,
            entries: 1_000_000,
            single_commits: 1_000,
            reads: 200_000,
            repetitions: 5,
        };
        Ok(match name {
            "full" => full,
            "default" => Profile {
                name: "default".into(),
                objects: 16_384,
                batch: 512,
                big_objects: 128,
                entries: 200_000,
                single_commits: 200,
                reads: 50_000,
                // This machine's runs vary by a third from one to the next: five, not three.
                repetitions: 5,
            },
            "smoke" => Profile {
                name: "smoke".into(),
                objects: 1_024,
                batch: 64,
                big_objects: 8,
                entries: 10_000,
                single_commits: 20,
                reads: 2_000,
                repetitions: 1,
            },
            other => anyhow::bail!("no profile named {other} (smoke, default, full)"),
        })
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
}

/// What one (engine, suite) process measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The engine.
    pub engine: String,
    /// `objects` or `kv`.
    pub suite: String,
    /// Throughputs and times.
    pub rows: Vec<Row>,
    /// Space on disk at named points.
    pub space: Vec<Space>,
    /// Bytes of user data written (keys and values, or object bytes).
    pub user_bytes: u64,
    /// Bytes written to the device during the run (see [`measure::device_write_bytes`]).
    pub device_bytes: Option<u64>,
    /// Peak resident memory in KiB (`VmHWM`), if known.
    pub peak_rss_kib: Option<u64>,
    /// Rows the engine has no operation for (LMDB's compaction, say).
    #[serde(default)]
    pub unsupported: Vec<String>,
}

/// The suites.
pub const SUITES: &[&str] = &["objects", "kv"];

/// Opens `engine` for `suite` in `dir` and makes `commits` durable single-object (or
/// single-put) commits: run under `strace -c` at two counts, the difference gives the
/// syncs one commit costs, open and close excluded.
pub fn commits_only(suite: &str, engine: &str, dir: &Path, commits: usize) -> Result<()> {
    let bytes = payload(42, if suite == "kv" { VALUE } else { MAIN });
    if suite == "kv" {
        let mut kv = engines::open_kv(engine, dir)?;
        for i in 0..commits as u64 {
            kv.write(&[(&key(i), &bytes)], &[], true)?;
        }
        kv.close()
    } else {
        let mut objects = engines::open_objects(engine, dir)?;
        for i in 0..commits as u64 {
            objects.write_batch(&[(i, &bytes)])?;
        }
        objects.close()
    }
}

/// Runs `suite` on `engine` in `dir` (which must be empty) with `profile`.
pub fn run(suite: &str, engine: &str, dir: &Path, profile: &Profile) -> Result<RunResult> {
    let mut result = RunResult {
        engine: engine.to_string(),
        suite: suite.to_string(),
        rows: Vec::new(),
        space: Vec::new(),
        user_bytes: 0,
        device_bytes: None,
        peak_rss_kib: None,
        unsupported: Vec::new(),
    };
    measure::watch_device(dir);
    let device_before = measure::device_write_bytes();
    match suite {
        "objects" => objects(&|at| engines::open_objects(engine, at), dir, profile, &mut result)?,
        "kv" => kv(&|at| engines::open_kv(engine, at), dir, profile, &mut result)?,
        other => anyhow::bail!("no suite named {other}"),
    }
    result.device_bytes = match (device_before, measure::device_write_bytes()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    result.peak_rss_kib = measure::peak_rss_kib();
    Ok(result)
}

fn rate(result: &mut RunResult, name: &str, ops: usize, took: Duration) {
    let value = ops as f64 / took.as_secs_f64().max(1e-9);
    let row =
        Row { name: name.into(), unit: "ops/s".into(), value, device_bytes: None, ops: ops as u64 };
    result.rows.push(row);
}

/// A row that writes: its throughput and the bytes it sent to storage since `meter`.
fn write_rate(result: &mut RunResult, name: &str, ops: usize, took: Duration, meter: Meter) {
    rate(result, name, ops, took);
    if let Some(row) = result.rows.last_mut() {
        row.device_bytes = meter.bytes();
    }
}

fn seconds(result: &mut RunResult, name: &str, took: Duration) {
    let value = took.as_secs_f64();
    result.rows.push(Row {
        name: name.into(),
        unit: "s".into(),
        value,
        device_bytes: None,
        ops: 1,
    });
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
        for &key in keys {
            let bytes = engine.read(key)?;
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

/// `reads` random reads of `keys`, each checked against `expected` (length and first bytes
/// in the timed loop), then a sample of them re-read and checked whole.
fn random_reads(
    engine: &dyn ObjectEngine,
    keys: &[u64],
    reads: usize,
    seed: u64,
    expected: &Expected,
) -> Result<Duration> {
    let mut rng = Rng(seed);
    let started = Instant::now();
    for _ in 0..reads {
        let key = keys[rng.below(keys.len())];
        let bytes = engine.read(key)?;
        let Some(bytes) = bytes else { anyhow::bail!("object {key} missing") };
        ensure!(
            bytes.len() == MAIN && head(&bytes) == expected.heads[key as usize],
            "object {key} read back wrong bytes"
        );
        std::hint::black_box(bytes);
    }
    let took = started.elapsed();
    let sample: Vec<u64> = keys.iter().copied().step_by((keys.len() / 500).max(1)).collect();
    expected.check_whole(engine, &sample)?;
    Ok(took)
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
    let n = profile.objects;
    let mut user_bytes = 0;
    // 4,096-byte objects: a 4 KiB value overflows a 4 KiB page in redb and LMDB (the main
    // sequence below uses 4,000 B).
    {
        let mut engine = open(&dir.join("4096"))?;
        let meter = Meter::start();
        let took =
            load_objects(engine.as_mut(), &vec![4_096; n], profile.batch, 2, &mut user_bytes)?;
        write_rate(result, "load 4 KiB objects (page overflow)", n, took, meter);
        engine.close()?;
    }
    // Mixed sizes, 64 B to 64 KiB, log-uniform.
    {
        let mut rng = Rng(3);
        let sizes: Vec<usize> = (0..n / 4)
            .map(|_| {
                let base = 64usize << rng.below(10);
                base + rng.below(base)
            })
            .collect();
        let mut engine = open(&dir.join("mixed"))?;
        let meter = Meter::start();
        let took = load_objects(engine.as_mut(), &sizes, profile.batch / 4, 3, &mut user_bytes)?;
        write_rate(result, "load mixed 64 B-64 KiB", sizes.len(), took, meter);
        engine.close()?;
    }
    // 1 MiB objects, 16 to a batch.
    {
        let mut engine = open(&dir.join("big"))?;
        let sizes = vec![1 << 20; profile.big_objects];
        let meter = Meter::start();
        let took = load_objects(engine.as_mut(), &sizes, 16, 4, &mut user_bytes)?;
        write_rate(result, "load 1 MiB objects", sizes.len(), took, meter);
        engine.close()?;
    }
    // The main sequence on 4,000-byte objects.
    let main = dir.join("main");
    let mut engine = open(&main)?;
    let meter = Meter::start();
    let took = load_objects(engine.as_mut(), &vec![MAIN; n], profile.batch, 1, &mut user_bytes)?;
    write_rate(result, "load 4,000 B objects", n, took, meter);
    let mut live: Vec<Option<usize>> = vec![Some(MAIN); n];
    let keys: Vec<u64> = (0..n as u64).collect();
    let mut expected = Expected::new(keys.iter().map(|&k| 1 ^ k).collect());
    let took = random_reads(engine.as_ref(), &keys, profile.reads, 5, &expected)?;
    rate(result, "random 4,000 B reads", profile.reads, took);

    let batches = n / profile.batch;
    let mut rng = Rng(6);
    let mut took = Duration::ZERO;
    let mut overwritten = 0;
    let meter = Meter::start();
    for round in 0..batches / 2 {
        let picked: Vec<u64> = (0..profile.batch)
            .map(|_| rng.below(n) as u64)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let seeds: Vec<u64> = picked.iter().map(|&k| k ^ ((round as u64) << 40)).collect();
        let data: Vec<Vec<u8>> = seeds.iter().map(|&seed| payload(seed, MAIN)).collect();
        let objects: Vec<(u64, &[u8])> =
            picked.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
        user_bytes += (MAIN * objects.len()) as u64;
        overwritten += objects.len();
        let started = Instant::now();
        engine.write_batch(&objects)?;
        took += started.elapsed();
        for (&k, &seed) in picked.iter().zip(&seeds) {
            expected.set(k, seed);
        }
    }
    write_rate(result, "overwrite 4,000 B (batches)", overwritten, took, meter);
    let sample: Vec<u64> = keys.iter().copied().step_by((n / 500).max(1)).collect();
    expected.check_whole(engine.as_ref(), &sample)?;

    let mut order: Vec<u64> = keys.clone();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let doomed: Vec<u64> = order[..(batches / 4) * profile.batch].to_vec();
    let meter = Meter::start();
    let started = Instant::now();
    for chunk in doomed.chunks(profile.batch) {
        engine.delete_batch(chunk)?;
    }
    write_rate(result, "delete 4,000 B (batches)", doomed.len(), started.elapsed(), meter);
    for &k in &doomed {
        live[k as usize] = None;
        ensure!(engine.read(k)?.is_none(), "object {k} is still there after its delete");
    }
    let live_bytes: u64 = live.iter().flatten().map(|&s| s as u64).sum();
    let survivors: Vec<u64> =
        keys.iter().copied().filter(|&k| live[k as usize].is_some()).collect();
    engine.close()?;
    result.space.push(measure::space("after deletes", &main, live_bytes)?);

    let mut engine = open(&main)?;
    let started = Instant::now();
    if engine.compact()? {
        seconds(result, "compaction", started.elapsed());
    } else {
        result.unsupported.push("compaction".into());
    }
    let took = random_reads(engine.as_ref(), &survivors, profile.reads, 7, &expected)?;
    rate(result, "random reads after compaction", profile.reads, took);
    for &k in doomed.iter().step_by((doomed.len() / 500).max(1)) {
        ensure!(engine.read(k)?.is_none(), "object {k} came back after compaction");
    }
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
        write_rate(result, "sorted load (10,000 per commit)", sorted.len(), took, meter);
        engine.close()?;
        user_bytes += n * entry_bytes;
    }
    let main = dir.join("main");
    let mut engine = open(&main)?;
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &entries, entries.len(), true)?;
    write_rate(result, "bulk load (one commit)", entries.len(), took, meter);

    let mut next = n;
    let fresh = |count: usize, next: &mut u64| -> Vec<([u8; 24], Vec<u8>)> {
        let out = (*next..*next + count as u64).map(|i| (key(i), value(i, 0))).collect();
        *next += count as u64;
        out
    };
    let batch = fresh(profile.single_commits, &mut next);
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &batch, 1, true)?;
    write_rate(result, "single-put commits, fsync", batch.len(), took, meter);
    let batch = fresh(profile.single_commits * 100, &mut next);
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &batch, 1_000, true)?;
    write_rate(result, "1,000-put commits, fsync", batch.len(), took, meter);
    let batch = fresh(profile.single_commits * 10, &mut next);
    let meter = Meter::start();
    let started = Instant::now();
    put_all(engine.as_mut(), &batch, 1, false)?;
    engine.sync()?;
    let name = "single-put commits, no fsync, then sync";
    write_rate(result, name, batch.len(), started.elapsed(), meter);
    user_bytes += (profile.single_commits * 111) as u64 * entry_bytes;
    let total = next;

    let started = Instant::now();
    let len = engine.count()?;
    seconds(result, "len", started.elapsed());
    ensure!(len == total, "len says {len}, {total} were written");

    let mut rng = Rng(11);
    let picks: Vec<u64> = (0..profile.reads).map(|_| rng.below(n as usize) as u64).collect();
    // Expected values and range counts, computed outside the timed loops; the loops compare.
    let wanted: Vec<Vec<u8>> = picks.iter().map(|&i| value(i, 0)).collect();
    let started = Instant::now();
    for (&i, want) in picks.iter().zip(&wanted) {
        let got = engine.get(&key(i))?;
        ensure!(got.as_deref() == Some(&want[..]), "key {i}: wrong value or missing");
    }
    rate(result, "random gets", picks.len(), started.elapsed());

    let mut all_keys: Vec<[u8; 24]> = (0..total).map(key).collect();
    all_keys.sort_unstable();
    let starts = &picks[..picks.len() / 10];
    let counts_wanted: Vec<usize> = starts
        .iter()
        .map(|&i| (all_keys.len() - all_keys.partition_point(|k| *k < key(i))).min(10))
        .collect();
    let mut counts = Vec::with_capacity(starts.len());
    let started = Instant::now();
    for &i in starts {
        counts.push(engine.range(&key(i), 10)?);
    }
    rate(result, "range reads of 10", starts.len(), started.elapsed());
    ensure!(counts == counts_wanted, "range reads returned wrong counts");

    let started = Instant::now();
    let shared: &dyn KvEngine = engine.as_ref();
    std::thread::scope(|scope| -> Result<()> {
        let halves: Vec<_> = picks
            .chunks(picks.len().div_ceil(2))
            .map(|half| {
                scope.spawn(move || -> Result<()> {
                    for &i in half {
                        let got = shared.get(&key(i))?;
                        ensure!(got.is_some_and(|v| v.len() == VALUE), "key {i}: wrong or missing");
                    }
                    Ok(())
                })
            })
            .collect();
        for half in halves {
            half.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        Ok(())
    })?;
    rate(result, "random gets, 2 threads", picks.len(), started.elapsed());

    let overwrite: Vec<([u8; 24], Vec<u8>)> =
        picks[..picks.len() / 2].iter().map(|&i| (key(i), value(i, 1))).collect();
    let meter = Meter::start();
    let took = put_all(engine.as_mut(), &overwrite, 1_000, true)?;
    write_rate(result, "steady overwrite (1,000 per commit)", overwrite.len(), took, meter);
    user_bytes += overwrite.len() as u64 * entry_bytes;
    for &i in picks[..picks.len() / 2].iter().step_by(97) {
        let got = engine.get(&key(i))?;
        ensure!(got == Some(value(i, 1)), "key {i}: the overwrite is not what reads return");
    }

    let removed: Vec<[u8; 24]> = (0..n).step_by(2).map(key).collect();
    let meter = Meter::start();
    let started = Instant::now();
    for chunk in removed.chunks(10_000) {
        let deletes: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
        engine.write(&[], &deletes, true)?;
    }
    write_rate(result, "remove half (10,000 per commit)", removed.len(), started.elapsed(), meter);
    for i in (0..n).step_by(2 * 97) {
        ensure!(engine.get(&key(i))?.is_none(), "key {i} is still there after its delete");
    }
    for i in (1..n).step_by(2 * 97) {
        ensure!(engine.get(&key(i))?.is_some(), "key {i} went missing in the removals");
    }
    let live_bytes = (total - removed.len() as u64) * entry_bytes;
    engine.close()?;
    result.space.push(measure::space("after removing half", &main, live_bytes)?);

    let started = Instant::now();
    let mut engine = open(&main)?;
    ensure!(engine.get(&key(1))?.is_some(), "key 1 missing after reopen");
    seconds(result, "reopen and first get", started.elapsed());
    let started = Instant::now();
    if engine.compact()? {
        seconds(result, "compaction", started.elapsed());
    } else {
        result.unsupported.push("compaction".into());
    }
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
        fn read(&self, key: u64) -> Result<Option<Vec<u8>>> {
            let mut got = self.map.get(&key).cloned();
            if let (Fault::WrongBytes, Some(bytes)) = (self.fault, got.as_mut()) {
                if key % 7 == 3 && !bytes.is_empty() {
                    bytes[0] ^= 1;
                }
            }
            Ok(got)
        }
        fn compact(&mut self) -> Result<bool> {
            Ok(false)
        }
        fn close(self: Box<Self>) -> Result<()> {
            self.disk.lock().unwrap().insert(self.at, self.map);
            Ok(())
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
            batch: 32,
            big_objects: 2,
            entries: 2_000,
            single_commits: 2,
            reads: 400,
            repetitions: 1,
        }
    }

    fn empty_result() -> RunResult {
        RunResult {
            engine: "mem".into(),
            suite: String::new(),
            rows: Vec::new(),
            space: Vec::new(),
            user_bytes: 0,
            device_bytes: None,
            peak_rss_kib: None,
            unsupported: Vec::new(),
        }
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
