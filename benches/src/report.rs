//! Turns the runs into the report: medians, bob's ratio to each peer, the geometric mean,
//! space and resource tables (markdown), the raw JSON, and an SVG chart of the ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::measure::{Banner, Space};
use crate::workloads::{Profile, RunResult};

/// Everything one `compare` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The machine.
    pub banner: Banner,
    /// The sizes.
    pub profile: Profile,
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
    if suite == "kv" { "bob-treap" } else { "bob-base" }
}

/// (suite, engine, row) → (unit, median value), rows in the order the workloads ran.
struct Medians {
    rows: BTreeMap<String, Vec<(String, String)>>,
    values: BTreeMap<(String, String, String), f64>,
    engines: BTreeMap<String, Vec<String>>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

fn medians(report: &Report) -> Medians {
    let mut samples: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut rows: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut engines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in &report.runs {
        let suite_engines = engines.entry(run.suite.clone()).or_default();
        if !suite_engines.contains(&run.engine) {
            suite_engines.push(run.engine.clone());
        }
        for row in &run.rows {
            let suite_rows = rows.entry(run.suite.clone()).or_default();
            if !suite_rows.iter().any(|(name, _)| *name == row.name) {
                suite_rows.push((row.name.clone(), row.unit.clone()));
            }
            samples
                .entry((run.suite.clone(), run.engine.clone(), row.name.clone()))
                .or_default()
                .push(row.value);
        }
    }
    let values = samples.into_iter().map(|(k, v)| (k, median(v))).collect();
    Medians { rows, values, engines }
}

/// bob's ratio to a peer: above 1 means bob is faster (or smaller), whatever the unit.
fn ratio(unit: &str, bob: f64, peer: f64) -> f64 {
    if unit == "s" { peer / bob.max(1e-12) } else { bob / peer.max(1e-12) }
}

fn fmt_value(unit: &str, value: f64) -> String {
    if unit == "s" {
        if value < 1.0 { format!("{:.1} ms", value * 1e3) } else { format!("{value:.2} s") }
    } else if value >= 1e6 {
        format!("{:.2} M/s", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} K/s", value / 1e3)
    } else {
        format!("{value:.1}/s")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// The ratios of `suite`: (row, peer, ratio), in row order.
fn ratios(m: &Medians, suite: &str) -> Vec<(String, String, f64)> {
    let bob = bob_engine(suite);
    let mut out = Vec::new();
    for (row, unit) in m.rows.get(suite).into_iter().flatten() {
        let Some(&b) = m.values.get(&(suite.into(), bob.into(), row.clone())) else { continue };
        for peer in m.engines[suite].iter().filter(|e| !e.starts_with("bob")) {
            if let Some(&p) = m.values.get(&(suite.into(), peer.clone(), row.clone())) {
                out.push((row.clone(), peer.clone(), ratio(unit, b, p)));
            }
        }
    }
    out
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
         in its own process, engines interleaved.\n",
        b.cores,
        b.fsync_us,
        b.cached_read_us,
        b.seq_write_mib_s,
        report.profile.name,
        report.profile.repetitions
    );
    for (suite, engines) in &m.engines {
        let bob = bob_engine(suite);
        let peers: Vec<&String> = engines.iter().filter(|e| !e.starts_with("bob")).collect();
        let _ = writeln!(
            out,
            "## {suite}\n\nThroughput (higher is better) or time (`ms`/`s`, lower is better). \
             `{bob}/peer` is bob's ratio to the peer: above 1, bob is faster. The geometric \
             mean covers the throughput rows (one-off times such as `len` or compaction would \
             swamp it); `–`: the engine has no such operation.\n"
        );
        let mut header = String::from("| workload |");
        let mut rule = String::from("|---|");
        for e in engines {
            let _ = write!(header, " {e} |");
            rule.push_str("---:|");
        }
        for p in &peers {
            let _ = write!(header, " {bob}/{p} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        let mut logs: BTreeMap<&String, Vec<f64>> = BTreeMap::new();
        for (row, unit) in &m.rows[suite] {
            let mut line = format!("| {row} |");
            for e in engines {
                match m.values.get(&(suite.clone(), e.clone(), row.clone())) {
                    Some(&v) => {
                        let _ = write!(line, " {} |", fmt_value(unit, v));
                    }
                    None => line.push_str(" – |"),
                }
            }
            let bob_value = m.values.get(&(suite.clone(), bob.to_string(), row.clone()));
            for p in &peers {
                match (bob_value, m.values.get(&(suite.clone(), (*p).clone(), row.clone()))) {
                    (Some(&bv), Some(&pv)) => {
                        let r = ratio(unit, bv, pv);
                        if unit != "s" {
                            logs.entry(p).or_default().push(r.ln());
                        }
                        let _ = write!(line, " {r:.2} |");
                    }
                    _ => line.push_str(" – |"),
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let mut line =
            format!("| **geometric mean** (throughput rows) |{}", " |".repeat(engines.len()));
        for p in &peers {
            let logs = logs.get(p).cloned().unwrap_or_default();
            let g = (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp();
            let _ = write!(line, " **{g:.2}** |");
        }
        let _ = writeln!(out, "{line}\n");
        let _ = writeln!(out, "{}", bytes_per_op(report, suite, engines));
    }
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
    let _ = writeln!(
        out,
        "\n## Resources\n\nWrite amplification = bytes written to the device during the run \
         (its sectors-written count) / user bytes written; peak memory = `VmHWM`. \
         Medians.\n\n\
         | suite | engine | user MiB | device MiB | write amplification | peak memory MiB |\n\
         |---|---|---:|---:|---:|---:|"
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
        let rss =
            if rss.is_empty() { "n/a".into() } else { format!("{:.0}", median(rss) / 1024.0) };
        let _ = writeln!(out, "| {suite} | {engine} | {} | {device} | {amp} | {rss} |", mib(user));
    }
    out
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
            for (row, _) in &m.rows[suite] {
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

    fn run(engine: &str, rows: &[(&str, &str, f64)]) -> RunResult {
        RunResult {
            engine: engine.into(),
            suite: "kv".into(),
            rows: rows
                .iter()
                .map(|&(name, unit, value)| Row {
                    name: name.into(),
                    unit: unit.into(),
                    value,
                    device_bytes: None,
                    ops: 1,
                })
                .collect(),
            space: Vec::new(),
            user_bytes: 100,
            device_bytes: Some(200),
            peak_rss_kib: Some(2048),
            unsupported: Vec::new(),
        }
    }

    fn report(runs: Vec<RunResult>) -> Report {
        Report {
            banner: Banner { fsync_us: 1.0, cached_read_us: 1.0, seq_write_mib_s: 1.0, cores: 2 },
            profile: Profile::named("smoke").unwrap(),
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
    }

    #[test]
    fn the_table_has_every_engine_and_the_geometric_mean_skips_time_rows() {
        let r = report(vec![
            run("bob-treap", &[("gets", "ops/s", 400.0), ("len", "s", 1.0)]),
            run("redb", &[("gets", "ops/s", 100.0), ("len", "s", 1000.0)]),
        ]);
        let md = markdown(&r);
        assert!(md.contains("| gets | 400.0/s | 100.0/s | 4.00 |"), "{md}");
        assert!(md.contains("| **geometric mean** (throughput rows) | | | **4.00** |"), "{md}");
        check_complete(&r).unwrap();
    }

    #[test]
    fn a_missing_row_fails_the_check() {
        let r = report(vec![
            run("bob-treap", &[("gets", "ops/s", 400.0), ("scan", "ops/s", 1.0)]),
            run("redb", &[("gets", "ops/s", 100.0)]),
        ]);
        let err = check_complete(&r).unwrap_err().to_string();
        assert!(err.contains("kv/redb/scan"), "{err}");
        let mut declared = r.clone();
        declared.runs[1].unsupported.push("scan".into());
        check_complete(&declared).unwrap();
    }
}
