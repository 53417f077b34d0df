//! Campaign 9: two handles on one store file. A file has one owner at a time
//! (`docs/format.md`, "Assumptions about the medium"): while a store holds it, a second open,
//! from this process or another, must fail with `Error::Locked`; once the owner is gone,
//! closed or killed, the file opens again.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bob_alloc::OmniBlockAllocator;
use bob_io_helpers::OsFile;
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{BaseStore, Error, Store, StoreOptions, Storer};

use super::{Budget, scratch_dir, spawn_child};
use crate::report::Figures;

/// What [`lock_probe`] found, as its exit code.
pub mod probe {
    /// The open failed with `Error::Locked`, as it must while another process owns the file.
    pub const LOCKED: u8 = 10;
    /// The open succeeded: two owners.
    pub const OPENED: u8 = 11;
    /// The open failed with another error.
    pub const OTHER: u8 = 12;
}

/// The lock-probe child: opens the store at `path` once and reports how that went as a
/// [`probe`] exit code (and a line on stdout).
pub fn lock_probe(path: &Path) -> u8 {
    match BaseStore::open(path, StoreOptions::default()) {
        Err(Error::Locked { .. }) => {
            println!("locked");
            probe::LOCKED
        }
        Ok(_) => {
            println!("opened");
            probe::OPENED
        }
        Err(e) => {
            println!("error: {e}");
            probe::OTHER
        }
    }
}

/// Outcomes of second opens.
#[derive(Default)]
struct Opens {
    tried: u64,
    succeeded: u64,
    other_error: u64,
    examples: Vec<String>,
}

impl Opens {
    /// Counts a second open, which must have failed with `Locked`.
    fn second<T>(&mut self, what: &str, result: Result<T, Error>) {
        self.tried += 1;
        match result {
            Err(Error::Locked { .. }) => {}
            Ok(_) => {
                self.succeeded += 1;
                self.example(format!("{what}: opened"));
            }
            Err(e) => {
                self.other_error += 1;
                self.example(format!("{what}: {e}"));
            }
        }
    }

    /// Counts a child probe's exit code.
    fn probed(&mut self, code: Option<i32>) {
        self.tried += 1;
        match code {
            Some(c) if c == i32::from(probe::LOCKED) => {}
            Some(c) if c == i32::from(probe::OPENED) => {
                self.succeeded += 1;
                self.example("child process: opened".into());
            }
            other => {
                self.other_error += 1;
                self.example(format!("child process: exit {other:?}"));
            }
        }
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 4 {
            self.examples.push(text);
        }
    }
}

/// Every way this process can open the file a second time.
fn same_process_opens(path: &Path, opens: &mut Opens) {
    let options = StoreOptions::default();
    opens.second("OsFile::open", OsFile::open(path).map_err(Error::from));
    opens.second("BaseStore::open", BaseStore::open(path, options));
    opens.second(
        "Store (other kind)::open",
        Store::<OmniBlockAllocator, OsFile>::open(path, options),
    );
    opens.second("ConcurrentStore::open_base", ConcurrentStore::open_base(path, options, 2));
    opens.second("open_previous_commit", {
        OsFile::open(path)
            .map_err(Error::from)
            .and_then(|file| BaseStore::open_previous_commit(file, options))
    });
}

/// Campaign 9: Second opens of a store file in this process and in a child while a store
/// owns it, and a child that owns it while this process tries; then opens after the owner
/// closed or was killed.
pub fn locks(budget: &Budget, seed: u64, exe: &Path) -> Figures {
    let mut figures = Figures::new("9. two handles on one file");
    let Some(dir) = scratch_dir(&mut figures) else { return figures };
    let options = StoreOptions::default();
    let (mut same, mut child_opens, mut parent_opens) =
        (Opens::default(), Opens::default(), Opens::default());
    let (mut refused_after, mut child_failed) = (0u64, 0u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..budget.lock_rounds {
        let path = dir.path().join(format!("locked-{round}.bob"));
        // This process owns the file.
        match BaseStore::create(&path, options) {
            Ok(mut owner) => {
                let _ = owner.write_new_obj_from_bytes(b"owned");
                let _ = owner.commit();
                same_process_opens(&path, &mut same);
                let probe = Command::new(exe)
                    .args(["lock-probe", "--path"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                match probe {
                    Ok(status) => child_opens.probed(status.code()),
                    Err(_) => child_failed += 1,
                }
                if owner.close().is_err() {
                    refused_after += 1;
                }
            }
            Err(e) => {
                figures.zero(&format!("setup failures ({e})"), 1);
                return figures;
            }
        }
        // Closed: the file opens again.
        if BaseStore::open(&path, options).is_err() {
            refused_after += 1;
        }
        // A child owns the file: the kill campaign's child, committing until killed.
        let Some((mut child, stdout)) = spawn_child(exe, rng.u64(..), &path) else {
            child_failed += 1;
            continue;
        };
        let (committed, first_ok) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ok" && !sent {
                    sent = committed.send(()).is_ok();
                }
            }
        });
        if first_ok.recv_timeout(Duration::from_secs(20)).is_ok() {
            parent_opens.second("BaseStore::open (child owns it)", BaseStore::open(&path, options));
            parent_opens
                .second("OsFile::open (child owns it)", OsFile::open(&path).map_err(Error::from));
        } else {
            child_failed += 1;
        }
        let _ = child.kill(); // SIGKILL: the kernel releases the child's lock
        let _ = child.wait();
        let _ = reader.join();
        if BaseStore::open(&path, options).is_err() {
            refused_after += 1;
        }
    }
    for example in same.examples.iter().chain(&child_opens.examples).chain(&parent_opens.examples) {
        figures.note(&format!("second open: {example}"));
    }
    figures.info("rounds", budget.lock_rounds);
    figures.info("second opens in the owning process (5 ways)", same.tried);
    figures.info("second opens from a child process", child_opens.tried);
    figures.info("opens while a child process owned the file", parent_opens.tried);
    figures.zero(
        "second opens that succeeded",
        same.succeeded + child_opens.succeeded + parent_opens.succeeded,
    );
    figures.zero(
        "second opens refused with another error than Locked",
        same.other_error + child_opens.other_error + parent_opens.other_error,
    );
    figures.zero("opens refused after the owner closed or was killed", refused_after);
    figures.zero("children that could not start", child_failed);
    figures
}
