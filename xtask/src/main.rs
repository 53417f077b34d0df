//! `cargo xtask <task>`: the workspace's task runner (see `cargo xtask --help`).
//!
//! CI calls `cargo xtask ci` and nothing else, so everything CI checks can be run locally with
//! the same command. Tasks shell out to `cargo`; each step prints what it runs.

mod tidy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tasks for the bob workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI checks: fmt, clippy, tests, docs, tidy and a quick loom run.
    Ci,
    /// Structural checks: crate layering, unused internal dependencies, crate docs and READMEs.
    Tidy,
    /// Every `loom_*` test under `--cfg loom`, in release mode.
    Loom,
    /// bob against redb, LMDB, fjall and marble: a table, JSON and charts in target/bench.
    Bench {
        /// `smoke` (seconds; what CI runs), `default` (about 5 minutes) or `full`.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Run the criterion micro-benchmarks of bob's crates instead.
        #[arg(long)]
        micro: bool,
        /// Passed on: to `bob-bench compare` (e.g. `--suite kv --engine redb`), or to
        /// criterion with `--micro`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Crash, corruption, fault, fuzz and soak campaigns, with a table of figures.
    Reliability {
        /// A short run (seconds), for CI.
        #[arg(long, conflicts_with = "soak")]
        quick: bool,
        /// A long run.
        #[arg(long)]
        soak: bool,
    },
    /// Miri on every crate that contains `unsafe` (needs a nightly toolchain with miri).
    Miri,
}

type TaskResult = Result<(), String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    let result = match cli.task {
        Task::Ci => ci(),
        Task::Tidy => tidy::run(&workspace_root()),
        Task::Loom => loom(),
        Task::Bench { profile, micro, args } => bench(&profile, micro, &args),
        Task::Reliability { quick, soak } => reliability(if quick {
            "quick"
        } else if soak {
            "soak"
        } else {
            "default"
        }),
        Task::Miri => miri(),
    };
    match result {
        Ok(()) => {
            eprintln!("xtask: done in {:.1}s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("xtask: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or(manifest_dir)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn describe(command: &Command) -> String {
    let envs: Vec<String> = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut parts = envs;
    parts.push("cargo".into());
    parts.extend(args);
    parts.join(" ")
}

/// Runs `command`, failing the task if it fails.
fn run(step: &str, mut command: Command) -> TaskResult {
    eprintln!("\n==> {step}: {}", describe(&command));
    let status = command.status().map_err(|e| format!("{step}: could not start cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{step} failed ({status})")) }
}

/// Test counts summed from `cargo test` output.
#[derive(Debug, Default, Clone, Copy)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else { continue };
            let Ok(number) = number.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// Runs a `cargo test` command, echoing its output and summing its result lines.
fn run_tests(step: &str, mut command: Command, counts: &mut TestCounts) -> TaskResult {
    eprintln!("\n==> {step}: {}", describe(&command));
    command.stdout(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("{step}: could not start cargo: {e}"))?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("{step}: reading test output: {e}"))?;
            println!("{line}");
            counts.add_line(&line);
        }
    }
    let status = child.wait().map_err(|e| format!("{step}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{step} failed ({status})")) }
}

fn ci() -> TaskResult {
    let locked: &[&str] = if in_ci() { &["--locked"] } else { &[] };
    let mut counts = TestCounts::default();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("fmt", fmt)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets"]).args(locked);
    clippy.args(["--", "-D", "warnings"]);
    run("clippy", clippy)?;

    let mut test = cargo();
    test.arg("test").args(locked);
    run_tests("test", test, &mut counts)?;

    // The examples of the crates, run as a user runs them, each on a file of its own and
    // twice (the second run opens what the first left).
    let scratch = workspace_root().join("target").join("examples-ci");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("examples: {e}"))?;
    for example in ["cache_in_front", "bulk_ingest"] {
        for pass in 1..=2 {
            let mut command = cargo();
            command.args(["run", "--quiet", "--package", "bob-batch-io", "--example", example]);
            command.args(locked).arg("--").arg(scratch.join(format!("{example}.bob")));
            run(&format!("example {example} (run {pass})"), command)?;
        }
    }

    let mut doc = cargo();
    doc.args(["doc", "--no-deps", "--all-features", "--workspace", "--exclude", "bob-benches"]);
    doc.args(locked);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run("doc", doc)?;

    eprintln!("\n==> tidy");
    tidy::run(&workspace_root())?;

    // The peer comparison at a tenth of its default size: that the harness works and every
    // engine produces every row, never a timing assertion. Its own unit tests first.
    let mut harness = cargo();
    harness.args(["test", "--package", "bob-benches", "--lib"]).args(locked);
    run_tests("bench harness tests", harness, &mut counts)?;
    run("bench smoke", compare_command("smoke", &[]))?;

    // The criterion benchmarks, each run once in criterion's test mode: their setup and the
    // assertions in it run (a journal-filling setup rotted unseen while only timings ran
    // them), no timing is taken.
    let mut criterion = cargo();
    criterion.args(["bench", "--package", "bob-benches", "--benches"]).args(locked);
    criterion.args(["--", "--test"]);
    run("criterion benches, once each", criterion)?;

    // The reliability campaigns, short: crash points, random crashes, process kills, bit
    // flips, fuzzed open, faults, a soak, crash-recover-crash cycles and two handles on one
    // file, each with figures that must be zero.
    reliability("quick")?;

    run_tests("loom", loom_command(), &mut counts)?;

    println!(
        "\nci: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(())
}

fn loom_command() -> Command {
    let mut command = cargo();
    let root = workspace_root();
    // A separate target directory: `--cfg loom` rebuilds everything, and sharing the normal
    // one would throw its cache away on every switch.
    command.env("CARGO_TARGET_DIR", root.join("target").join("loom"));
    command.env("RUSTFLAGS", "--cfg loom");
    command.env("LOOM_MAX_PREEMPTIONS", "2");
    command.args(["test", "--release", "--lib", "--tests"]);
    if in_ci() {
        command.arg("--locked");
    }
    command.arg("loom_");
    command
}

fn loom() -> TaskResult {
    run_tests("loom", loom_command(), &mut TestCounts::default())
}

fn bench(profile: &str, micro: bool, args: &[String]) -> TaskResult {
    if micro {
        let mut criterion = cargo();
        criterion.args(["bench", "--package", "bob-benches"]);
        if !args.is_empty() {
            criterion.arg("--").args(args);
        }
        return run("micro-benchmarks", criterion);
    }
    run("compare", compare_command(profile, args))
}

/// `bob-bench compare` through cargo: release for timings; the smoke profile only checks
/// that the harness works, so it builds in the test profile and checks every row is there.
fn compare_command(profile: &str, args: &[String]) -> Command {
    let mut command = cargo();
    command.args(["run", "--package", "bob-benches", "--bin", "bob-bench"]);
    if profile != "smoke" {
        command.arg("--release");
    }
    if in_ci() {
        command.arg("--locked");
    }
    // The smoke run writes elsewhere, so it never overwrites a real report.
    let out = workspace_root().join("target").join(if profile == "smoke" {
        "bench-smoke"
    } else {
        "bench"
    });
    command.args(["--", "compare", "--profile", profile, "--out"]).arg(out);
    if profile == "smoke" {
        command.arg("--check");
    }
    command.args(args);
    command
}

fn reliability(mode: &str) -> TaskResult {
    let locked: &[&str] = if in_ci() { &["--locked"] } else { &[] };
    let mut counts = TestCounts::default();
    let mut corpus = cargo();
    corpus.args(["test", "--package", "bob-reliability", "--release"]).args(locked);
    run_tests("fuzz corpus replay and harness tests", corpus, &mut counts)?;
    let root = workspace_root();
    let mut campaigns = cargo();
    campaigns.args(["run", "--release", "--package", "bob-reliability"]).args(locked);
    campaigns.args(["--", "run", "--mode", mode, "--root"]).arg(&root);
    campaigns.arg("--out").arg(root.join("target").join("reliability"));
    run("campaigns", campaigns)
}

/// Crates under `crates/` whose sources contain `unsafe`.
fn crates_with_unsafe() -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let crates_dir = workspace_root().join("crates");
    let entries = std::fs::read_dir(&crates_dir).map_err(|e| format!("reading crates/: {e}"))?;
    for entry in entries {
        let dir = entry.map_err(|e| e.to_string())?.path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if tidy::rust_sources(&dir.join("src"))?
            .iter()
            .any(|file| std::fs::read_to_string(file).is_ok_and(|text| text.contains("unsafe ")))
        {
            found.push(format!("bob-{name}"));
        }
    }
    found.sort();
    Ok(found)
}

fn miri() -> TaskResult {
    let crates = crates_with_unsafe()?;
    if crates.is_empty() {
        eprintln!("miri: no crate contains `unsafe`; nothing to check.");
        return Ok(());
    }
    for name in crates {
        let mut command = Command::new("cargo");
        command.current_dir(workspace_root());
        command.args(["+nightly", "miri", "test", "--package", &name]);
        run(&format!("miri {name}"), command)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn test_result_lines_are_summed() {
        let mut counts = TestCounts::default();
        counts.add_line("test result: ok. 30 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.11s");
        counts.add_line("running 3 tests");
        counts.add_line("test result: FAILED. 1 passed; 4 failed; 0 ignored; 0 measured");
        assert_eq!((counts.passed, counts.failed, counts.ignored), (31, 4, 2));
    }
}
