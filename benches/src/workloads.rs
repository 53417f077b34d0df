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
    /// 4 KiB objects loaded (and 4,000-byte ones).
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
    let bytes = payload(42, if suite == "kv" { VALUE } else { 4_096 });
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
        "objects" => objects(engine, dir, profile, &mut result)?,
        "kv" => kv(engine, dir, profile, &mut result)?,
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

fn random_reads(
    engine: &dyn ObjectEngine,
    keys: &[u64],
    reads: usize,
    seed: u64,
) -> Result<Duration> {
    let mut rng = Rng(seed);
    let started = Instant::now();
    for _ in 0..reads {
        let key = keys[rng.below(keys.len())];
        let bytes = engine.read(key)?;
        ensure!(bytes.is_some(), "object {key} missing");
        std::hint::black_box(bytes);
    }
    Ok(started.elapsed())
}

fn objects(engine_name: &str, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    let n = profile.objects;
    let mut user_bytes = 0;
    // 4,000-byte objects (4 KiB values overflow a 4 KiB page in redb and LMDB).
    {
        let mut engine = engines::open_objects(engine_name, &dir.join("4000"))?;
        let meter = Meter::start();
        let took =
            load_objects(engine.as_mut(), &vec![4_000; n], profile.batch, 2, &mut user_bytes)?;
        write_rate(result, "load 4,000 B objects", n, took, meter);
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
        let mut engine = engines::open_objects(engine_name, &dir.join("mixed"))?;
        let meter = Meter::start();
        let took = load_objects(engine.as_mut(), &sizes, profile.batch / 4, 3, &mut user_bytes)?;
        write_rate(result, "load mixed 64 B-64 KiB", sizes.len(), took, meter);
        engine.close()?;
    }
    // 1 MiB objects, 16 to a batch.
    {
        let mut engine = engines::open_objects(engine_name, &dir.join("big"))?;
        let sizes = vec![1 << 20; profile.big_objects];
        let meter = Meter::start();
        let took = load_objects(engine.as_mut(), &sizes, 16, 4, &mut user_bytes)?;
        write_rate(result, "load 1 MiB objects", sizes.len(), took, meter);
        engine.close()?;
    }
    // The main sequence on 4 KiB objects.
    let main = dir.join("4096");
    let mut engine = engines::open_objects(engine_name, &main)?;
    let meter = Meter::start();
    let took = load_objects(engine.as_mut(), &vec![4_096; n], profile.batch, 1, &mut user_bytes)?;
    write_rate(result, "load 4 KiB objects", n, took, meter);
    let mut live: Vec<Option<usize>> = vec![Some(4_096); n];
    let keys: Vec<u64> = (0..n as u64).collect();
    let took = random_reads(engine.as_ref(), &keys, profile.reads, 5)?;
    rate(result, "random 4 KiB reads", profile.reads, took);

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
        let data: Vec<Vec<u8>> =
            picked.iter().map(|&k| payload(k ^ (round as u64) << 40, 4_096)).collect();
        let objects: Vec<(u64, &[u8])> =
            picked.iter().copied().zip(data.iter().map(Vec::as_slice)).collect();
        user_bytes += 4_096 * objects.len() as u64;
        overwritten += objects.len();
        let started = Instant::now();
        engine.write_batch(&objects)?;
        took += started.elapsed();
    }
    write_rate(result, "overwrite 4 KiB (batches)", overwritten, took, meter);

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
    write_rate(result, "delete 4 KiB (batches)", doomed.len(), started.elapsed(), meter);
    for &k in &doomed {
        live[k as usize] = None;
    }
    let live_bytes: u64 = live.iter().flatten().map(|&s| s as u64).sum();
    let survivors: Vec<u64> =
        keys.iter().copied().filter(|&k| live[k as usize].is_some()).collect();
    engine.close()?;
    result.space.push(measure::space("after deletes", &main, live_bytes)?);

    let mut engine = engines::open_objects(engine_name, &main)?;
    let started = Instant::now();
    if engine.compact()? {
        seconds(result, "compaction", started.elapsed());
    } else {
        result.unsupported.push("compaction".into());
    }
    let took = random_reads(engine.as_ref(), &survivors, profile.reads, 7)?;
    rate(result, "random reads after compaction", profile.reads, took);
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

fn kv(engine_name: &str, dir: &Path, profile: &Profile, result: &mut RunResult) -> Result<()> {
    let n = profile.entries as u64;
    let entries: Vec<([u8; 24], Vec<u8>)> = (0..n).map(|i| (key(i), value(i, 0))).collect();
    let entry_bytes = (24 + VALUE) as u64;
    let mut user_bytes = n * entry_bytes;
    // Sorted load, in durable commits of 10,000, into its own directory.
    {
        let mut sorted = entries.clone();
        sorted.sort();
        let mut engine = engines::open_kv(engine_name, &dir.join("sorted"))?;
        let meter = Meter::start();
        let took = put_all(engine.as_mut(), &sorted, 10_000, true)?;
        write_rate(result, "sorted load (10,000 per commit)", sorted.len(), took, meter);
        engine.close()?;
        user_bytes += n * entry_bytes;
    }
    let main = dir.join("main");
    let mut engine = engines::open_kv(engine_name, &main)?;
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
    let started = Instant::now();
    for &i in &picks {
        ensure!(engine.get(&key(i))?.is_some(), "key {i} missing");
    }
    rate(result, "random gets", picks.len(), started.elapsed());

    let started = Instant::now();
    for &i in &picks[..picks.len() / 10] {
        std::hint::black_box(engine.range(&key(i), 10)?);
    }
    rate(result, "range reads of 10", picks.len() / 10, started.elapsed());

    let started = Instant::now();
    let shared: &dyn KvEngine = engine.as_ref();
    std::thread::scope(|scope| -> Result<()> {
        let halves: Vec<_> = picks
            .chunks(picks.len().div_ceil(2))
            .map(|half| {
                scope.spawn(move || -> Result<()> {
                    for &i in half {
                        ensure!(shared.get(&key(i))?.is_some(), "key {i} missing");
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

    let removed: Vec<[u8; 24]> = (0..n).step_by(2).map(key).collect();
    let meter = Meter::start();
    let started = Instant::now();
    for chunk in removed.chunks(10_000) {
        let deletes: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
        engine.write(&[], &deletes, true)?;
    }
    write_rate(result, "remove half (10,000 per commit)", removed.len(), started.elapsed(), meter);
    let live_bytes = (total - removed.len() as u64) * entry_bytes;
    engine.close()?;
    result.space.push(measure::space("after removing half", &main, live_bytes)?);

    let started = Instant::now();
    let mut engine = engines::open_kv(engine_name, &main)?;
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
