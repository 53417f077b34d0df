//! The example programs, run as a user runs them: every command, across restarts.

use std::path::Path;
use std::process::{Command, Output};

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().expect("the example runs");
    assert!(out.stderr.is_empty() || !out.status.success(), "{out:?}");
    out
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_file_cache_keeps_files_across_restarts() {
    let cache = env!("CARGO_BIN_EXE_file_cache");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cache.bob");
    let db = db.to_str().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let small = file("small.txt", b"hello\n");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let big_path = file("big.bin", &big);
    assert!(stdout(&run(cache, &[db, "put", "small", &small])).contains("stored small (6 bytes)"));
    stdout(&run(cache, &[db, "put", "big", &big_path]));
    // Each command is a process of its own: what the last one committed is there.
    assert_eq!(run(cache, &[db, "get", "small"]).stdout, b"hello\n");
    assert_eq!(run(cache, &[db, "get", "big"]).stdout, big);
    let listing = stdout(&run(cache, &[db, "ls"]));
    assert!(
        listing.contains("big\t100000 bytes") && listing.contains("small\t6 bytes"),
        "{listing}"
    );
    // A replacement, a removal, and the errors a user meets.
    stdout(&run(cache, &[db, "put", "small", &big_path]));
    assert_eq!(run(cache, &[db, "get", "small"]).stdout, big);
    stdout(&run(cache, &[db, "rm", "big"]));
    let missing = run(cache, &[db, "get", "big"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no file named big"));
    assert!(!run(cache, &[db, "rm", "big"]).status.success());
    assert!(!run(cache, &[db, "put", "x", "no/such/file"]).status.success());
    assert!(!run(cache, &[db, "frobnicate"]).status.success());
    assert_eq!(stdout(&run(cache, &[db, "ls"])).lines().count(), 1);
    assert!(Path::new(db).exists());
}

#[test]
fn the_counters_lose_no_add_and_carry_on_across_runs() {
    let counters = env!("CARGO_BIN_EXE_counters");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("counters.bob");
    let db = db.to_str().unwrap();
    assert!(stdout(&run(counters, &[db, "8", "50"])).contains("total 0 -> 400"));
    assert!(stdout(&run(counters, &[db, "3", "20"])).contains("total 400 -> 460"));
    assert!(!run(counters, &[db, "many"]).status.success());
}
