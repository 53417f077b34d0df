//! `bob-bench`: bob against its peers. `cargo xtask bench` runs `bob-bench compare`.
//!
//! `compare` measures the machine, then runs every (suite, engine) pair in a process of its
//! own (`bob-bench run`), engines interleaved in an order shuffled afresh in each repetition
//! (the seed is printed and kept in the report), for the profile's repetitions; it writes
//! `report.md`, `results.json` and one SVG chart per suite to the output directory and prints
//! the markdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bob_benches::engines;
use bob_benches::measure;
use bob_benches::report::{self, Report};
use bob_benches::workloads::{self, Profile, RunResult};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "bob-bench", about = "bob against redb, LMDB, fjall and marble")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every suite on every engine and writes the report.
    Compare {
        /// `smoke` (a tenth of the default, for CI), `default` or `full`.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Only these suites (`objects`, `kv`, `batch-io`); all when absent.
        #[arg(long)]
        suite: Vec<String>,
        /// Only these engines (bob's are always run); all when absent.
        #[arg(long)]
        engine: Vec<String>,
        /// Where the report goes.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Fail unless every engine produced every row.
        #[arg(long)]
        check: bool,
        /// Repetitions per (suite, engine), instead of the profile's.
        #[arg(long)]
        repetitions: Option<usize>,
        /// The seed that shuffles the engines' order (from the clock when absent).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Runs one suite on one engine in this process and prints its result as JSON.
    Run {
        #[arg(long)]
        suite: String,
        #[arg(long)]
        engine: String,
        #[arg(long)]
        profile: String,
        /// An empty directory for the engine's files.
        #[arg(long)]
        dir: PathBuf,
        /// Only open, make this many durable one-item commits and close (for sync counts).
        #[arg(long)]
        commits: Option<usize>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run { suite, engine, dir, commits: Some(commits), .. } => {
            workloads::commits_only(&suite, &engine, &dir, commits)
        }
        Cmd::Run { suite, engine, profile, dir, commits: None } => {
            let result = workloads::run(&suite, &engine, &dir, &Profile::named(&profile)?)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Cmd::Compare { profile, suite, engine, out, check, repetitions, seed } => {
            let mut profile = Profile::named(&profile)?;
            if let Some(n) = repetitions {
                profile.repetitions = n.max(1);
            }
            let seed = seed.unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.map_or(1, |d| d.as_nanos() as u64)
            });
            eprintln!("bob-bench: engine order seed {seed} (repeat it with --seed {seed})");
            compare(&profile, &suite, &engine, &out, check, seed)
        }
    }
}

fn engines_of(suite: &str, only: &[String]) -> Vec<String> {
    let all: Vec<&str> = match suite {
        "kv" => engines::kv_engines(),
        "batch-io" => workloads::batch_io::ENGINES.to_vec(),
        _ => engines::OBJECT_ENGINES.to_vec(),
    };
    all.into_iter()
        .filter(|e| only.is_empty() || e.starts_with("bob") || only.iter().any(|o| o == e))
        .map(String::from)
        .collect()
}

/// What a child prints on standard error when it finished a row (see `workloads`).
const ROW_DONE: &str = "bob-bench row done: ";

/// Runs one (suite, engine) pair in a child process; `row` hears the name of each row the
/// child finishes.
fn run_child(
    suite: &str,
    engine: &str,
    profile: &Profile,
    scratch: &Path,
    row: &dyn Fn(&str),
) -> Result<RunResult> {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir_in(scratch)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["run", "--suite", suite, "--engine", engine, "--profile", &profile.name, "--dir"])
        .arg(dir.path())
        .env("BOB_BENCH_ROWS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting a bench process")?;
    let mut stdout = child.stdout.take().context("the child's output")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let mut stderr_text = String::new();
    for line in std::io::BufReader::new(child.stderr.take().context("the child's errors")?).lines()
    {
        let line = line?;
        match line.strip_prefix(ROW_DONE) {
            Some(name) => row(name),
            None => {
                stderr_text.push_str(&line);
                stderr_text.push('\n');
            }
        }
    }
    let status = child.wait()?;
    let stdout = reader.join().map_err(|_| anyhow::anyhow!("the output reader panicked"))??;
    if !status.success() {
        bail!("{suite} on {engine} failed ({status}): {stderr_text}");
    }
    Ok(serde_json::from_slice(&stdout)?)
}

/// Syscalls that make data durable.
const SYNC_CALLS: &[&str] = &["fsync", "fdatasync", "msync", "sync_file_range", "syncfs"];

/// Sync calls a `commits_only` child makes, counted by `strace -c`; `None` if strace is
/// missing or fails.
fn count_syncs(suite: &str, engine: &str, commits: usize, scratch: &Path) -> Option<u64> {
    let dir = tempfile::tempdir_in(scratch).ok()?;
    let counts = dir.path().join("strace.txt");
    let status = Command::new("strace")
        .args(["-f", "-c", "-e", &format!("trace={}", SYNC_CALLS.join(",")), "-o"])
        .arg(&counts)
        .arg(std::env::current_exe().ok()?)
        .args(["run", "--suite", suite, "--engine", engine, "--profile", "smoke"])
        .args(["--commits", &commits.to_string(), "--dir"])
        .arg(dir.path().join("engine"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&counts).ok()?;
    // `strace -c` rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    Some(
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let name = fields.last()?;
                SYNC_CALLS.contains(name).then(|| fields.get(3)?.parse::<u64>().ok()).flatten()
            })
            .sum(),
    )
}

/// Syncs per durable commit of one item: the difference between two runs, so that opening
/// and closing do not count.
fn syncs_per_commit(suite: &str, engine: &str, scratch: &Path) -> Option<f64> {
    let few = count_syncs(suite, engine, 10, scratch)?;
    let many = count_syncs(suite, engine, 60, scratch)?;
    Some(many.saturating_sub(few) as f64 / 50.0)
}

/// The name a filtered run's files carry (`objects`, `objects-redb`), or `None` for a full run.
fn output_label(suites: &[String], only: &[String]) -> Option<String> {
    let parts: Vec<&str> = suites.iter().chain(only).map(String::as_str).collect();
    (!parts.is_empty()).then(|| parts.join("-"))
}

/// Shuffles `items` with SplitMix64 from `state` (Fisher-Yates).
fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

fn compare(
    profile: &Profile,
    suites: &[String],
    only: &[String],
    out: &Path,
    check: bool,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let scratch = out.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut banner = measure::banner(&scratch)?;
    // Freed memory the host takes back costs the next toucher (see `HostMemoryHold`): held
    // off for the run, every engine alike, and both rates go in the banner.
    banner.freed_memory_mib_s = Some(measure::freed_memory_rate(Duration::from_secs(2)));
    let hold = measure::HostMemoryHold::take();
    if let Some(hold) = &hold {
        eprintln!(
            "bob-bench: page reporting delay raised for the run (was {} ms)",
            hold.previous()
        );
        // Memory the first runs will take, backed once: 4 GiB touched and freed.
        measure::touch_memory(4096);
        banner.held_memory_mib_s = Some(measure::freed_memory_rate(Duration::from_secs(2)));
    }
    // A filtered run writes its files under a name of their own, so it never passes for (or
    // leaves a stale chart beside) the full report, which always holds every suite.
    let label = output_label(suites, only);
    let suites: Vec<String> = if suites.is_empty() {
        workloads::SUITES.iter().map(|s| s.to_string()).collect()
    } else {
        suites.to_vec()
    };
    let plan: Vec<(String, String)> = suites
        .iter()
        .flat_map(|s| engines_of(s, only).into_iter().map(move |e| (s.clone(), e)))
        .collect();
    // On a terminal a bar (with the time left, from the runs so far); elsewhere (CI, a
    // pipe) a plain line per run, which the bar would hide.
    let bar = ProgressBar::new((plan.len() * profile.repetitions) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} (about {eta} left) {msg}",
        )?
        .progress_chars("=> "),
    );
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut state = seed;
    for rep in 0..profile.repetitions {
        // Interleaved: every engine once per repetition, so drift hits all alike, in an
        // order shuffled afresh, so that no engine always runs first (or after another).
        let mut order = plan.clone();
        shuffle(&mut order, &mut state);
        for (suite, engine) in &order {
            let what =
                format!("repetition {}/{}: {suite} on {engine}", rep + 1, profile.repetitions);
            bar.set_message(what.clone());
            if plain {
                let done = bar.position();
                let left = if done == 0 {
                    String::new()
                } else {
                    let per = started.elapsed().as_secs_f64() / done as f64;
                    format!(", about {:.0} s left", per * (bar.length().unwrap_or(0) - done) as f64)
                };
                eprintln!(
                    "bob-bench: [{}/{}] {what} ({:.0} s{left})",
                    done + 1,
                    bar.length().unwrap_or(0),
                    started.elapsed().as_secs_f64()
                );
            }
            let row = |name: &str| bar.set_message(format!("{what}: {name} done"));
            let mut run = run_child(suite, engine, profile, &scratch, &row)?;
            run.repetition = rep;
            runs.push(run);
            bar.inc(1);
        }
    }
    let mut syncs = Vec::new();
    if Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()) {
        for (suite, engine) in plan.iter().filter(|(suite, _)| suite != "batch-io") {
            bar.set_message(format!("syncs per commit: {suite} on {engine}"));
            if let Some(per_commit) = syncs_per_commit(suite, engine, &scratch) {
                syncs.push(report::Syncs {
                    suite: suite.clone(),
                    engine: engine.clone(),
                    per_commit,
                });
            }
        }
    }
    bar.finish_and_clear();
    let report = Report { banner, profile: profile.clone(), seed, runs, syncs };
    let markdown = report::markdown(&report);
    let markdown = match &label {
        Some(label) => {
            format!("*A filtered run ({label}): not every suite or engine.*\n\n{markdown}")
        }
        None => markdown,
    };
    let suffix = label.as_ref().map(|l| format!("-{l}")).unwrap_or_default();
    std::fs::write(out.join(format!("report{suffix}.md")), &markdown)?;
    std::fs::write(
        out.join(format!("results{suffix}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    for suite in &suites {
        report::chart(&report, suite, &out.join(format!("ratios-{suite}{suffix}.svg")))?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    drop(hold);
    println!("{markdown}");
    eprintln!(
        "bob-bench: wrote {}/report{suffix}.md, results{suffix}.json and ratios-*{suffix}.svg",
        out.display()
    );
    if check {
        report::check_complete(&report)?;
    }
    Ok(())
}
