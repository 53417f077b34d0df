//! Turns the runs into the report: medians, bob's ratio to each peer, the geometric mean,
//! space and resource tables (markdown), the raw JSON, and an SVG chart of the ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::engines::Promise;
use crate::measure::{Banner, Space};
use crate::workloads::{Category, Profile, RunResult};

/// Everything one `compare` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The machine.
    pub banner: Banner,
    /// The sizes.
    pub profile: Profile,
    /// The seed that shuffled the engines' order in each repetition.
    #[serde(default)]
    pub seed: u64,
    /// Every run, every repetition.
    pub runs: Vec<RunResult>,
    /// Sync calls per durable one-item commit, where `strace` could count them.
    pub syncs: Vec<Syncs>,
}

/// Sync calls (`fsync`, `fdatasync`, `msync`, ...) one durable commit costs an engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Syncs {
    /// The suite whose engine interface made the commits.
    pub suite: String,
    /// The engine.
    pub engine: String,
    /// Sync calls per commit.
    pub per_commit: f64,
}

/// The bob engine the peers are compared with in `suite`.
pub fn bob_engine(suite: &str) -> &'static str {
    match suite {
        "kv" => "bob-btree",
        "batch-io" => "bob-batch-io",
        _ => "bob-base",
    }
}

/// A (suite, engine, row) key.
type Key = (String, String, String);

/// The runs, arranged: rows in the order the workloads ran, every sample by repetition.
struct Medians {
    /// Per suite: (row, unit, category).
    rows: BTreeMap<String, Vec<(String, String, Category)>>,
    /// Every sample: repetition → value.
    samples: BTreeMap<Key, BTreeMap<usize, f64>>,
    /// The median of the samples.
    values: BTreeMap<Key, f64>,
    /// What each engine promised in each row that writes.
    promises: BTreeMap<Key, Promise>,
    /// Per suite: the engines, bob's first.
    engines: BTreeMap<String, Vec<String>>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

fn medians(report: &Report) -> Medians {
    let mut samples: BTreeMap<Key, BTreeMap<usize, f64>> = BTreeMap::new();
    let mut rows: BTreeMap<String, Vec<(String, String, Category)>> = BTreeMap::new();
    let mut engines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut promises = BTreeMap::new();
    for run in &report.runs {
        let suite_engines = engines.entry(run.suite.clone()).or_default();
        if !suite_engines.contains(&run.engine) {
            suite_engines.push(run.engine.clone());
        }
        for row in &run.rows {
            let suite_rows = rows.entry(run.suite.clone()).or_default();
            if !suite_rows.iter().any(|(name, _, _)| *name == row.name) {
                suite_rows.push((row.name.clone(), row.unit.clone(), row.category));
            }
            let key = (run.suite.clone(), run.engine.clone(), row.name.clone());
            if let Some(promise) = row.promise {
                promises.insert(key.clone(), promise);
            }
            samples.entry(key).or_default().insert(run.repetition, row.value);
        }
    }
    // bob first, the peers in the order the plan lists them (runs are shuffled).
    for list in engines.values_mut() {
        list.sort_by_key(|e| (!e.starts_with("bob"), engine_rank(e)));
    }
    let values = samples.iter().map(|(k, v)| (k.clone(), median(v.values().copied().collect())));
    let values = values.collect();
    Medians { rows, samples, values, promises, engines }
}

/// Where an engine sits in the tables: bob's first, then the peers in a fixed order.
fn engine_rank(engine: &str) -> usize {
    [
        "bob-base",
        "bob-multi",
        "bob-pread",
        "bob-btree",
        "bob-treap",
        "marble",
        "redb",
        "lmdb",
        "fjall",
        "sled",
        "bob-batch-io",
        "plain-path",
        "cacache",
    ]
    .iter()
    .position(|e| *e == engine)
    .unwrap_or(usize::MAX)
}

/// bob's ratio to a peer: above 1 means bob is faster (or smaller), whatever the unit.
fn ratio(unit: &str, bob: f64, peer: f64) -> f64 {
    if unit == "s" { peer / bob.max(1e-12) } else { bob / peer.max(1e-12) }
}

fn fmt_value(unit: &str, value: f64) -> String {
    if unit == "%" {
        format!("{value:.1}%")
    } else if unit == "s" {
        if value < 1e-6 {
            format!("{:.0} ns", value * 1e9)
        } else if value < 1e-3 {
            format!("{:.1} µs", value * 1e6)
        } else if value < 1.0 {
            format!("{:.1} ms", value * 1e3)
        } else {
            format!("{value:.2} s")
        }
    } else if value >= 1e6 {
        format!("{:.2} M/s", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} K/s", value / 1e3)
    } else {
        format!("{value:.1}/s")
    }
}

/// The spread of `samples` around their median: how far the lowest and highest lie from it,
/// in per cent (`−6/+7%`); empty for a single sample.
fn spread(samples: &BTreeMap<usize, f64>) -> String {
    if samples.len() < 2 {
        return String::new();
    }
    let values: Vec<f64> = samples.values().copied().collect();
    let mid = median(values.clone()).max(1e-12);
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(" (−{:.0}/+{:.0}%)", (mid - low) / mid * 100.0, (high - mid) / mid * 100.0)
}

/// A ratio with two decimals, or two significant digits below 0.1 (so 0.004 is not 0.00).
fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{r:.2}")
    } else {
        let decimals = (-r.log10().floor()) as usize + 1;
        format!("{r:.decimals$}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// The ratios of `suite`: (row, peer, ratio), in row order.
fn ratios(m: &Medians, suite: &str) -> Vec<(String, String, f64)> {
    let bob = bob_engine(suite);
    let mut out = Vec::new();
    for (row, unit, _) in m.rows.get(suite).into_iter().flatten() {
        let Some(&b) = m.values.get(&(suite.into(), bob.into(), row.clone())) else { continue };
        for peer in m.engines[suite].iter().filter(|e| !e.starts_with("bob")) {
            if let Some(&p) = m.values.get(&(suite.into(), peer.clone(), row.clone())) {
                out.push((row.clone(), peer.clone(), ratio(unit, b, p)));
            }
        }
    }
    out
}

fn geomean(ratios: &[f64]) -> Option<f64> {
    (!ratios.is_empty())
        .then(|| (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp())
}

/// The geometric mean of bob's ratio to `peer` over the rows of `category` (every averaged
/// category when `None`, each weighted equally), from the values `value` gives.
fn category_mean(
    m: &Medians,
    suite: &str,
    peer: &str,
    category: Option<Category>,
    value: &dyn Fn(&Key) -> Option<f64>,
) -> Option<f64> {
    let Some(category) = category else {
        let means: Vec<f64> = Category::AVERAGED
            .iter()
            .filter_map(|&c| category_mean(m, suite, peer, Some(c), value))
            .collect();
        return geomean(&means);
    };
    let bob = bob_engine(suite);
    let mut ratios = Vec::new();
    for (row, unit, _) in m.rows[suite].iter().filter(|(_, _, c)| *c == category) {
        let b = value(&(suite.into(), bob.into(), row.clone()));
        let p = value(&(suite.into(), peer.into(), row.clone()));
        if let (Some(b), Some(p)) = (b, p) {
            ratios.push(ratio(unit, b, p));
        }
    }
    geomean(&ratios)
}

/// A category mean from the medians, with the lowest and highest of the means each
/// repetition gives on its own.
fn category_cell(m: &Medians, suite: &str, peer: &str, category: Option<Category>) -> String {
    let Some(mid) = category_mean(m, suite, peer, category, &|k| m.values.get(k).copied()) else {
        return "–".into();
    };
    let repetitions: std::collections::BTreeSet<usize> =
        m.samples.values().flat_map(|s| s.keys().copied()).collect();
    let per_rep: Vec<f64> = repetitions
        .iter()
        .filter_map(|&r| {
            category_mean(m, suite, peer, category, &|k| m.samples.get(k)?.get(&r).copied())
        })
        .collect();
    if per_rep.len() < 2 {
        return fmt_ratio(mid);
    }
    let low = per_rep.iter().copied().fold(f64::INFINITY, f64::min);
    let high = per_rep.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{})", fmt_ratio(mid), fmt_ratio(low), fmt_ratio(high))
}

/// What touching freed memory cost, and whether the run held the host's reclaim of it.
fn memory_line(out: &mut String, b: &Banner) {
    let Some(freed) = b.freed_memory_mib_s else { return };
    let _ = match b.held_memory_mib_s {
        Some(held) => writeln!(
            out,
            "Memory freed 2 s earlier is touched again at {freed:.0} MiB/s on this machine (the \
             host takes freed memory back); the run held that off (the guest's page reporting \
             delay raised for its length): {held:.0} MiB/s under the hold.\n"
        ),
        None => writeln!(
            out,
            "Memory freed 2 s earlier is touched again at {freed:.0} MiB/s; no hold on the \
             host's reclaim was taken (no such setting, or not writable), so rows that grow \
             files may carry the host's cost.\n"
        ),
    };
}

/// The markdown report.
pub fn markdown(report: &Report) -> String {
    let m = medians(report);
    let b = &report.banner;
    let mut out = String::new();
    let _ = writeln!(out, "# bob against its peers\n");
    let _ = writeln!(
        out,
        "Machine: {} cores; 4 KiB write + fdatasync {:.0} µs (median); cached 4 KiB pread {:.1} µs; \
         sequential write {:.0} MiB/s. Profile `{}`, median of {} run(s) per engine, each engine \
         in its own process, the engines' order shuffled in each repetition (seed {}). \
         Every engine with a cache of its own is given {} MiB.\n",
        b.cores,
        b.fsync_us,
        b.cached_read_us,
        b.seq_write_mib_s,
        report.profile.name,
        report.profile.repetitions,
        report.seed,
        report.profile.cache_mib,
    );
    memory_line(&mut out, b);
    configurations(&mut out, report);
    for (suite, engines) in &m.engines {
        suite_tables(&mut out, report, &m, suite, engines);
    }
    space_table(&mut out, report);
    if !report.syncs.is_empty() {
        let _ = writeln!(
            out,
            "\n## Syncs per durable commit\n\nSync system calls (fsync, fdatasync, msync, \
             sync_file_range) per one-item durable commit, counted with `strace -c` as the \
             difference between 60 and 10 commits. LMDB also writes its meta page through \
             an `O_DSYNC` descriptor, a synchronous write this count does not see.\n\n| suite | engine | syncs per commit |\n\
             |---|---|---:|"
        );
        for s in &report.syncs {
            let _ = writeln!(out, "| {} | {} | {:.2} |", s.suite, s.engine, s.per_commit);
        }
    }
    checkpoints_table(&mut out, report);
    resources_table(&mut out, report);
    out
}

/// How often bob's stores checkpointed (the only two-sync operation) per run.
fn checkpoints_table(out: &mut String, report: &Report) {
    let runs: Vec<&RunResult> =
        report.runs.iter().filter(|r| r.commits_and_checkpoints.is_some()).collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Checkpoints\n\nbob's durable commits append one journal record and sync once; a \
         checkpoint (two syncs) runs when the journal is full, on `close` and while compacting. \
         Per run (median over repetitions; checkpoints counted as handles close):\n\n\
         | suite | engine | durable commits | checkpoints | commits per checkpoint |\n|---|---|---:|---:|---:|"
    );
    let mut seen: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
    for run in runs {
        if let Some(counts) = run.commits_and_checkpoints {
            seen.entry((run.suite.clone(), run.engine.clone())).or_default().push(counts);
        }
    }
    for ((suite, engine), mut counts) in seen {
        counts.sort_unstable();
        let (commits, checkpoints) = counts[counts.len() / 2];
        let per = if checkpoints == 0 {
            "-".to_string()
        } else {
            format!("{:.0}", commits as f64 / checkpoints as f64)
        };
        let _ = writeln!(out, "| {suite} | {engine} | {commits} | {checkpoints} | {per} |");
    }
}

/// How each engine was configured.
fn configurations(out: &mut String, report: &Report) {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for run in &report.runs {
        seen.insert((run.suite.clone(), run.engine.clone()), run.configuration.clone());
    }
    let _ = writeln!(out, "## Configurations\n\n| suite | engine | configuration |\n|---|---|---|");
    for ((suite, engine), configuration) in &seen {
        let _ = writeln!(out, "| {suite} | {engine} | {configuration} |");
    }
    out.push('\n');
}

/// A suite's rows, its per-category means and its promises.
fn suite_tables(out: &mut String, report: &Report, m: &Medians, suite: &str, engines: &[String]) {
    let bob = bob_engine(suite);
    let peers: Vec<&String> = engines.iter().filter(|e| !e.starts_with("bob")).collect();
    let _ = writeln!(
        out,
        "## {suite}\n\nThroughput (higher is better) or time (lower is better): the median of \
         the repetitions, with how far the lowest and the highest lie from it. `{bob}/peer` \
         is bob's ratio of the medians: above 1, bob is faster. `–`: the engine has no such \
         operation.\n"
    );
    let mut header = String::from("| workload | category |");
    let mut rule = String::from("|---|---|");
    for e in engines {
        let _ = write!(header, " {e} |");
        rule.push_str("---:|");
    }
    for p in &peers {
        let _ = write!(header, " {bob}/{p} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for (row, unit, category) in &m.rows[suite] {
        let mut line = format!("| {row} | {} |", category.name());
        for e in engines {
            let key = (suite.to_string(), e.clone(), row.clone());
            match (m.values.get(&key), m.samples.get(&key)) {
                (Some(&v), Some(samples)) => {
                    let _ = write!(line, " {}{} |", fmt_value(unit, v), spread(samples));
                }
                _ => line.push_str(" – |"),
            }
        }
        let bob_value = m.values.get(&(suite.to_string(), bob.to_string(), row.clone()));
        for p in &peers {
            match (bob_value, m.values.get(&(suite.to_string(), (*p).clone(), row.clone()))) {
                (Some(&bv), Some(&pv)) => {
                    let _ = write!(line, " {} |", fmt_ratio(ratio(unit, bv, pv)));
                }
                _ => line.push_str(" – |"),
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\nGeometric means of `{bob}/peer` by category: the mean over the medians, and in \
         brackets the lowest and highest mean a single repetition gives. Overall weighs each \
         category equally, so that no kind of work counts more for having more rows; `len` \
         is left out (O(1) in a tree that keeps a count, a scan in an LSM tree).\n"
    );
    let mut header = String::from("| category | rows |");
    let mut rule = String::from("|---|---:|");
    for p in &peers {
        let _ = write!(header, " {bob}/{p} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for category in Category::AVERAGED {
        let rows = m.rows[suite].iter().filter(|(_, _, c)| *c == category).count();
        if rows == 0 {
            continue;
        }
        let mut line = format!("| {} | {rows} |", category.name());
        for p in &peers {
            let _ = write!(line, " {} |", category_cell(m, suite, p, Some(category)));
        }
        let _ = writeln!(out, "{line}");
    }
    let mut line = String::from("| **overall** (categories equal) | |");
    for p in &peers {
        let _ = write!(line, " **{}** |", category_cell(m, suite, p, None));
    }
    let _ = writeln!(out, "{line}\n");
    promises_table(out, m, suite, engines);
    let _ = writeln!(out, "{}", bytes_per_op(report, suite, engines));
}

/// What each engine promised when each write of `suite` returned.
fn promises_table(out: &mut String, m: &Medians, suite: &str, engines: &[String]) {
    let written: Vec<&String> = m.rows[suite]
        .iter()
        .map(|(row, _, _)| row)
        .filter(|row| {
            engines
                .iter()
                .any(|e| m.promises.contains_key(&(suite.into(), e.clone(), (*row).clone())))
        })
        .collect();
    if written.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "What each engine promised when a write returned (every write row ends synced: the \
         unsynced row's time includes the final sync).\n"
    );
    let mut header = String::from("| workload |");
    for e in engines {
        let _ = write!(header, " {e} |");
    }
    let _ = writeln!(out, "{header}\n|---|{}", "---|".repeat(engines.len()));
    for row in written {
        let mut line = format!("| {row} |");
        for e in engines {
            match m.promises.get(&(suite.into(), e.clone(), row.clone())) {
                Some(p) => {
                    let _ = write!(line, " {} |", p.describe());
                }
                None => line.push_str(" – |"),
            }
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}

fn space_table(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "## Space\n\nMiB on disk after close (apparent = file lengths, allocated = blocks); \
         amplification = allocated / live user bytes. Medians of the runs.\n\n\
         | suite | engine | point | live | apparent | allocated | amplification |\n\
         |---|---|---|---:|---:|---:|---:|"
    );
    let mut spaces: BTreeMap<(String, String, String), Vec<Space>> = BTreeMap::new();
    for run in &report.runs {
        for s in &run.space {
            spaces
                .entry((run.suite.clone(), run.engine.clone(), s.name.clone()))
                .or_default()
                .push(s.clone());
        }
    }
    for ((suite, engine, point), list) in &spaces {
        let med = |f: fn(&Space) -> u64| median(list.iter().map(|s| f(s) as f64).collect()) as u64;
        let (live, apparent, allocated) =
            (med(|s| s.live), med(|s| s.apparent), med(|s| s.allocated));
        let _ = writeln!(
            out,
            "| {suite} | {engine} | {point} | {} | {} | {} | {:.2} |",
            mib(live),
            mib(apparent),
            mib(allocated),
            allocated as f64 / live.max(1) as f64
        );
    }
}

fn resources_table(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "\n## Resources\n\nWrite amplification = bytes written to the device during the run \
         (its sectors-written count) / user bytes written; peak memory = `VmHWM`, which \
         counts the touched pages of memory-mapped files (the page cache's, shared and \
         reclaimable: LMDB's and bob's mapped reads) beside the process's own; peak anonymous \
         = the process's own memory (`RssAnon`, sampled every 5 ms). Medians.\n\n\
         | suite | engine | user MiB | device MiB | write amplification | peak memory MiB | \
         peak anonymous MiB |\n\
         |---|---|---:|---:|---:|---:|---:|"
    );
    let mut resources: BTreeMap<(String, String), Vec<&RunResult>> = BTreeMap::new();
    for run in &report.runs {
        resources.entry((run.suite.clone(), run.engine.clone())).or_default().push(run);
    }
    for ((suite, engine), runs) in &resources {
        let user = median(runs.iter().map(|r| r.user_bytes as f64).collect()) as u64;
        let device: Vec<f64> =
            runs.iter().filter_map(|r| r.device_bytes).map(|d| d as f64).collect();
        let rss: Vec<f64> = runs.iter().filter_map(|r| r.peak_rss_kib).map(|k| k as f64).collect();
        let (device, amp) = if device.is_empty() {
            ("n/a".to_string(), "n/a".to_string())
        } else {
            let d = median(device) as u64;
            (mib(d), format!("{:.2}", d as f64 / user.max(1) as f64))
        };
        let anon: Vec<f64> =
            runs.iter().filter_map(|r| r.peak_anon_kib).map(|k| k as f64).collect();
        let show = |kib: Vec<f64>| -> String {
            if kib.is_empty() { "n/a".into() } else { format!("{:.0}", median(kib) / 1024.0) }
        };
        let (rss, anon) = (show(rss), show(anon));
        let _ = writeln!(
            out,
            "| {suite} | {engine} | {} | {device} | {amp} | {rss} | {anon} |",
            mib(user)
        );
    }
}

/// Bytes sent to storage per operation of the rows that write (medians), for `suite`.
fn bytes_per_op(report: &Report, suite: &str, engines: &[String]) -> String {
    let mut samples: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut rows: Vec<String> = Vec::new();
    for run in report.runs.iter().filter(|r| r.suite == suite) {
        for row in &run.rows {
            let Some(bytes) = row.device_bytes else { continue };
            if !rows.contains(&row.name) {
                rows.push(row.name.clone());
            }
            samples
                .entry((row.name.clone(), run.engine.clone()))
                .or_default()
                .push(bytes as f64 / row.ops.max(1) as f64);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "Bytes written to the device per operation (its sectors-written count over the row, \
         after a `sync`; journal and metadata included): why a write row is fast or \
         slow.\n\n| workload |",
    );
    for e in engines {
        let _ = write!(out, " {e} |");
    }
    let _ = write!(out, "\n|---|{}", "---:|".repeat(engines.len()));
    for row in &rows {
        let _ = write!(out, "\n| {row} |");
        for e in engines {
            match samples.get(&(row.clone(), e.clone())) {
                Some(v) => {
                    let _ = write!(out, " {} |", human_bytes(median(v.clone())));
                }
                None => out.push_str(" – |"),
            }
        }
    }
    out.push('\n');
    out
}

fn human_bytes(bytes: f64) -> String {
    if bytes >= (1 << 20) as f64 {
        format!("{:.1} MiB", bytes / (1 << 20) as f64)
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

/// Checks that every engine of every suite produced every row (the smoke test's job).
pub fn check_complete(report: &Report) -> Result<()> {
    let m = medians(report);
    let mut missing = Vec::new();
    let unsupported = |suite: &str, engine: &str, row: &str| {
        report.runs.iter().any(|r| {
            r.suite == suite && r.engine == engine && r.unsupported.iter().any(|u| u == row)
        })
    };
    for (suite, engines) in &m.engines {
        for e in engines {
            for (row, _, _) in &m.rows[suite] {
                if !m.values.contains_key(&(suite.clone(), e.clone(), row.clone()))
                    && !unsupported(suite, e, row)
                {
                    missing.push(format!("{suite}/{e}/{row}"));
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!("rows missing: {}", missing.join(", "));
    }
    Ok(())
}

/// Writes an SVG bar chart of bob's ratios to each peer for `suite` (log scale, 1 = parity).
pub fn chart(report: &Report, suite: &str, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let m = medians(report);
    let bars = ratios(&m, suite);
    if bars.is_empty() {
        return Ok(());
    }
    let peers: Vec<String> =
        m.engines[suite].iter().filter(|e| !e.starts_with("bob")).cloned().collect();
    let height = 80 + 18 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let extent = bars.iter().map(|(_, _, r)| r.log2().abs()).fold(1.0f64, f64::max).ceil();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{suite}: {} / peer (log2; right of 0 = bob faster)", bob_engine(suite)),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(-extent..extent, (0..bars.len()).into_segmented())?;
    let labels: Vec<String> =
        bars.iter().map(|(row, peer, _)| format!("{row} vs {peer}")).collect();
    let n = bars.len();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - i].clone(),
            _ => String::new(),
        })
        .x_desc("log2(ratio)")
        .draw()?;
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, peer, r))| {
        let y = n - 1 - i;
        let color = palette[peers.iter().position(|p| p == peer).unwrap_or(0) % palette.len()];
        Rectangle::new(
            [(0.0, SegmentValue::Exact(y)), (r.log2(), SegmentValue::Exact(y + 1))],
            color.mix(0.7).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::Row;

    /// A run of `engine` in repetition `rep`: rows of (name, unit, value, category).
    fn run(engine: &str, rep: usize, rows: &[(&str, &str, f64, Category)]) -> RunResult {
        RunResult {
            engine: engine.into(),
            suite: "kv".into(),
            repetition: rep,
            configuration: format!("{engine} settings"),
            rows: rows
                .iter()
                .map(|&(name, unit, value, category)| Row {
                    name: name.into(),
                    unit: unit.into(),
                    value,
                    device_bytes: None,
                    ops: 1,
                    category,
                    promise: (category == Category::Commits).then_some(Promise::Synced),
                })
                .collect(),
            space: Vec::new(),
            user_bytes: 100,
            device_bytes: Some(200),
            peak_rss_kib: Some(2048),
            peak_anon_kib: Some(1024),
            unsupported: Vec::new(),
            commits_and_checkpoints: engine.starts_with("bob").then_some((1000, 4)),
        }
    }

    fn report(runs: Vec<RunResult>) -> Report {
        Report {
            banner: Banner {
                fsync_us: 1.0,
                cached_read_us: 1.0,
                seq_write_mib_s: 1.0,
                cores: 2,
                freed_memory_mib_s: None,
                held_memory_mib_s: None,
            },
            profile: Profile::named("smoke").unwrap(),
            seed: 7,
            runs,
            syncs: Vec::new(),
        }
    }

    #[test]
    fn ratios_favour_bob_above_one_for_both_units_and_medians_are_taken() {
        assert_eq!(ratio("ops/s", 200.0, 100.0), 2.0);
        assert_eq!(ratio("s", 1.0, 3.0), 3.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(fmt_ratio(1.234), "1.23");
        assert_eq!(fmt_ratio(0.0042), "0.0042");
        assert_eq!(fmt_ratio(0.05), "0.050");
    }

    #[test]
    fn cells_show_the_spread_and_categories_are_averaged_equally() {
        use Category::{Commits, Other, Reads};
        let r = report(vec![
            // Listed peer first: the table still puts bob first.
            run("redb", 0, &[("gets", "ops/s", 100.0, Reads), ("put", "ops/s", 10.0, Commits)]),
            run(
                "bob-btree",
                0,
                &[("gets", "ops/s", 400.0, Reads), ("put", "ops/s", 10.0, Commits)],
            ),
            run(
                "bob-btree",
                1,
                &[("gets", "ops/s", 200.0, Reads), ("put", "ops/s", 10.0, Commits)],
            ),
            run("redb", 1, &[("gets", "ops/s", 100.0, Reads), ("put", "ops/s", 10.0, Commits)]),
            run("bob-btree", 2, &[("gets", "ops/s", 300.0, Reads), ("len", "s", 1.0, Other)]),
            run("redb", 2, &[("gets", "ops/s", 100.0, Reads), ("len", "s", 1e6, Other)]),
        ]);
        let md = markdown(&r);
        // Median 300 of 200, 300, 400: the spread is −33/+33 %; the ratio of medians is 3.
        assert!(
            md.contains("| gets | reads | 300.0/s (−33/+33%) | 100.0/s (−0/+0%) | 3.00 |"),
            "{md}"
        );
        // Reads mean 3 (repetitions: 4, 2, 3), commits 1 (two repetitions have the row);
        // overall is the mean of the two categories, and `len` counts in neither.
        assert!(md.contains("| reads | 1 | 3.00 (2.00–4.00) |"), "{md}");
        assert!(md.contains("| commits | 1 | 1.00 (1.00–1.00) |"), "{md}");
        let overall = 3f64.sqrt();
        assert!(
            md.contains(&format!("| **overall** (categories equal) | | **{overall:.2}")),
            "{md}"
        );
        assert!(md.contains("| put | synced | synced |"), "{md}");
        assert!(md.contains("| kv | redb | redb settings |"), "{md}");
        assert!(md.contains("seed 7"), "{md}");
        assert!(md.contains("| kv | bob-btree | 1000 | 4 | 250 |"), "{md}");
    }

    #[test]
    fn a_missing_row_fails_the_check() {
        use Category::Reads;
        let r = report(vec![
            run("bob-btree", 0, &[("gets", "ops/s", 400.0, Reads), ("scan", "ops/s", 1.0, Reads)]),
            run("redb", 0, &[("gets", "ops/s", 100.0, Reads)]),
        ]);
        let err = check_complete(&r).unwrap_err().to_string();
        assert!(err.contains("kv/redb/scan"), "{err}");
        let mut declared = r.clone();
        declared.runs[1].unsupported.push("scan".into());
        check_complete(&declared).unwrap();
    }
}
