//! `bob-reliability`: the campaigns of `cargo xtask reliability`, their figure table, and the
//! child process the process-kill campaign kills.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bob_reliability::campaigns::{self, Budget};
use bob_reliability::report;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bob-reliability", about = "Crash, corruption, fault, fuzz and soak campaigns")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the campaigns and prints the table of figures.
    Run {
        /// `quick` (CI), `default` or `soak`.
        #[arg(long, default_value = "default")]
        mode: String,
        /// Where the table is written too (`report.md`).
        #[arg(long, default_value = "target/reliability")]
        out: PathBuf,
        /// The workspace root (for the fuzz corpus).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Runs only the campaigns whose name contains this (e.g. `bit flips`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Writes the fuzzed-open seed corpus (deterministic) into `out`.
    Corpus {
        #[arg(long, default_value = "fuzz/corpus/open")]
        out: PathBuf,
    },
    /// The lock probe: opens the store at `path` once and exits with a code saying how that
    /// went (the two-handles campaign runs it while it owns the file).
    LockProbe {
        #[arg(long)]
        path: PathBuf,
    },
    /// The process-kill child: commits to the store at `path` and reports acknowledgements.
    Child {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        seed: u64,
    },
}

/// A campaign to run, by name.
type Campaign<'a> = Box<dyn Fn() -> report::Figures + 'a>;

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Corpus { out } => {
            let written = std::fs::create_dir_all(&out).and_then(|()| {
                campaigns::corpus_seeds()
                    .into_iter()
                    .try_for_each(|(name, image)| std::fs::write(out.join(name), image))
            });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("corpus: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::LockProbe { path } => ExitCode::from(campaigns::lock_probe(&path)),
        Cmd::Child { path, seed } => match campaigns::kill_child(&path, seed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("child: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { mode, out, root, only } => {
            let budget = Budget::of(&mode);
            let seed = bob_io_helpers::testing::test_seed();
            let Ok(exe) = std::env::current_exe() else {
                eprintln!("cannot find this executable for the process-kill child");
                return ExitCode::FAILURE;
            };
            campaigns::quiet_panics();
            let started = Instant::now();
            let mut all = Vec::new();
            let steps: Vec<(&str, Campaign<'_>)> = vec![
                ("crash points", Box::new(|| campaigns::crash_points(&budget, seed))),
                ("random crashes", Box::new(|| campaigns::random_crashes(&budget, seed))),
                ("process kills", Box::new(|| campaigns::process_kills(&budget, seed, &exe))),
                ("bit flips", Box::new(|| campaigns::bit_flips(&budget, seed))),
                ("fuzzed open", Box::new(|| campaigns::fuzzed_open(&budget, seed, &root))),
                ("faults", Box::new(|| campaigns::faults(&budget))),
                ("soak", Box::new(|| campaigns::soak(&budget, seed))),
                ("crash cycles", Box::new(|| campaigns::crash_cycles(&budget, seed))),
                ("two handles", Box::new(|| campaigns::locks(&budget, seed, &exe))),
                ("journal", Box::new(|| campaigns::journal(&budget, seed))),
                ("btree", Box::new(|| campaigns::btree(&budget, seed))),
            ];
            let chosen = |name: &str| only.as_deref().is_none_or(|only| name.contains(only));
            let steps: Vec<_> = steps.into_iter().filter(|(name, _)| chosen(name)).collect();
            // On a terminal a bar (campaign, elapsed, time left from the campaigns so far);
            // elsewhere the plain lines below, which the bar would hide.
            let bar = indicatif::ProgressBar::new(steps.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:20}] {pos}/{len} (about {eta} left) {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(500));
            let total = steps.len();
            for (k, (name, step)) in steps.into_iter().enumerate() {
                bar.set_message(format!("campaign: {name}"));
                if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    eprintln!(
                        "reliability: [{}/{total}] {name} ({:.0} s so far)",
                        k + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
                let at = Instant::now();
                let figures = step();
                bar.suspend(|| {
                    eprintln!("reliability: {name} done in {:.1} s", at.elapsed().as_secs_f64())
                });
                bar.inc(1);
                all.push(figures);
            }
            bar.finish_and_clear();
            let header = format!(
                "# bob reliability campaigns\n\nMode `{mode}`, BOB_SEED={seed}, {:.0} s.",
                started.elapsed().as_secs_f64()
            );
            let table = report::table(&all, &header);
            println!("{table}");
            let _ = std::fs::create_dir_all(&out);
            let _ = std::fs::write(out.join("report.md"), &table);
            let failures: Vec<String> = all.iter().flat_map(report::Figures::failures).collect();
            if let Some(panic) = campaigns::first_panic() {
                eprintln!("first panic caught: {panic}");
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("reliability: FAILED:\n  {}", failures.join("\n  "));
                ExitCode::FAILURE
            }
        }
    }
}
