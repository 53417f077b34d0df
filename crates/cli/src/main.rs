//! The `bob` binary: parses the command line and runs it (see the `bob_cli` library).

use std::process::ExitCode;

use bob_cli::{Cli, run};
use clap::Parser;

fn main() -> ExitCode {
    // A bug is reported in one line, not with a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("bob: internal error (please report it): {info}");
    }));
    let cli = Cli::parse(); // a usage error exits 2, as clap does
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli, &mut out))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("bob: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
        Err(_) => ExitCode::from(70),
    }
}
