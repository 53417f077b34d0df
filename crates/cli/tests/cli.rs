//! The `bob` binary driven as a user drives it: every subcommand, human and `--json` output,
//! and the files a user may point it at by mistake (missing, not a bob file, truncated,
//! corrupt, locked by another process), each with its exit code and never a panic.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn bob() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bob"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Runs `bob --json ARGS`, expecting success, and parses what it printed.
fn json(args: &[&str]) -> Value {
    let output = bob().arg("--json").args(args).assert().success().get_output().stdout.clone();
    serde_json::from_slice(&output).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e})"))
}

/// Runs `bob ARGS`, expecting exit `code` and no panic; returns standard error.
fn fails(args: &[&str], code: i32) -> String {
    let output = bob().args(args).assert().code(code).get_output().clone();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
    assert!(stderr.starts_with("bob: ") || code == 2, "a clear message: {stderr}");
    stderr
}

/// Runs `bob --json verify FILE`, expecting exit 4 (damage), and parses its report.
fn damaged_report(file: &str) -> Value {
    let output =
        bob().args(["--json", "verify", file]).assert().code(4).get_output().stdout.clone();
    serde_json::from_slice(&output).unwrap_or_else(|e| panic!("verify {file}: not JSON ({e})"))
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(bob().args(args).assert().success().get_output().stdout.clone()).unwrap()
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn trees_from_create_to_drop() {
    let dir = Dir::new();
    let db = dir.file("data.bob");
    let db = path(&db);
    assert_eq!(json(&["create", db])["kind"], "db");
    assert_eq!(json(&["tree", "create", db, "users"])["created"], "users");
    fails(&["tree", "create", db, "users"], 2); // exists
    for (k, v) in
        [("ada", "lovelace"), ("alan", "turing"), ("grace", "hopper"), ("edsger", "dijkstra")]
    {
        bob().args(["tree", "put", db, "users", k, v]).assert().success();
    }
    assert_eq!(json(&["tree", "put", db, "users", "ada", "byron"])["replaced"], true);
    assert_eq!(stdout(&["tree", "get", db, "users", "ada"]).trim(), "byron");
    assert_eq!(json(&["tree", "get", db, "users", "alan"])["value"], "turing");
    fails(&["tree", "get", db, "users", "nobody"], 3);
    fails(&["tree", "get", db, "nothing", "ada"], 3);
    assert_eq!(json(&["tree", "count", db, "users"])["count"], 4);
    let scan =
        json(&["tree", "scan", db, "users", "--from", "alan", "--to", "grace", "--limit", "5"]);
    let keys: Vec<&str> =
        scan["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["alan", "edsger"]);
    assert_eq!(stdout(&["tree", "scan", db, "users", "--limit", "1"]), "ada\tbyron\n");
    assert_eq!(json(&["tree", "del", db, "users", "edsger"])["deleted"], "edsger");
    fails(&["tree", "del", db, "users", "edsger"], 3);
    assert_eq!(json(&["tree", "ls", db])["trees"][0]["entries"], 3);
    let stat = json(&["stat", db]);
    assert_eq!(stat["kind"], "database");
    assert_eq!(stat["trees"][0]["name"], "users");
    assert_eq!(json(&["verify", db])["clean"], true);
    json(&["compact", db]);
    assert_eq!(json(&["tree", "drop", db, "users"])["dropped"], "users");
    fails(&["tree", "drop", db, "users"], 3);
    assert!(json(&["tree", "ls", db])["trees"].as_array().unwrap().is_empty());
}

#[test]
fn objects_of_both_store_kinds() {
    let dir = Dir::new();
    for kind in ["base", "multi"] {
        let file = dir.file(&format!("{kind}.bob"));
        let file = path(&file);
        json(&["create", "--kind", kind, file]);
        let first = json(&["obj", "put", file, "first object"]);
        let id = first["id"].as_str().unwrap().to_string();
        let payload = dir.file("payload");
        std::fs::write(&payload, [0u8, 159, 146, 150]).unwrap(); // not UTF-8
        let second = json(&["obj", "put", file, "--from", path(&payload)]);
        let id2 = second["id"].as_str().unwrap().to_string();
        let from_stdin =
            bob().args(["obj", "put", file]).write_stdin("from stdin").assert().success();
        let id3 =
            String::from_utf8(from_stdin.get_output().stdout.clone()).unwrap().trim().to_string();
        assert_eq!(stdout(&["obj", "get", file, &id]), "first object");
        assert_eq!(stdout(&["obj", "get", file, &format!("#{id3}")]), "from stdin");
        assert_eq!(json(&["obj", "get", file, &id2])["value_hex"], "009f9296");
        let raw = first["raw_id"].as_u64().unwrap().to_string();
        assert_eq!(stdout(&["obj", "get", file, &raw]), "first object", "the raw u64 works too");
        json(&["obj", "put", file, "--id", &id, "replaced"]);
        let out = dir.file("out");
        json(&["obj", "get", file, &id, "--out", path(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), b"replaced");
        let listed = json(&["obj", "ls", file]);
        assert_eq!(listed["objects"].as_array().unwrap().len(), 3, "{kind}");
        json(&["obj", "del", file, &id2]);
        fails(&["obj", "get", file, &id2], 3);
        fails(&["obj", "del", file, &id2], 3);
        fails(&["obj", "get", file, "not-an-id"], 2);
        let stat = json(&["stat", file]);
        assert_eq!((stat["kind"].as_str(), stat["objects"].as_u64()), (Some(kind), Some(2)));
        let version = u64::from(bob_store_core::FORMAT_VERSION);
        assert_eq!(stat["format_version"].as_u64(), Some(version));
        assert!(stat["journal_commits_since_checkpoint"].as_u64().is_some());
        assert_eq!(stat["size_classes"].as_array().is_some_and(|c| !c.is_empty()), kind == "multi");
        assert_eq!(json(&["verify", file])["clean"], true);
        json(&["compact", file]);
        assert_eq!(stdout(&["obj", "get", file, &id]), "replaced");
        // A store is not a database, and a database's objects are its trees'.
        fails(&["tree", "ls", file], 2);
    }
    let db = dir.file("db.bob");
    json(&["create", path(&db)]);
    fails(&["obj", "put", path(&db), "x"], 2);
    assert!(!json(&["obj", "ls", path(&db)])["objects"].as_array().unwrap().is_empty());
}

#[test]
fn import_then_export_gives_the_same_bytes() {
    let dir = Dir::new();
    let db = dir.file("db.bob");
    json(&["create", path(&db)]);
    // Sorted by key, as export writes them; one key that is not UTF-8.
    let mut lines = String::new();
    for i in 0..2_500u32 {
        lines.push_str(&format!("{{\"key\":\"k{i:05}\",\"value\":\"v \\\"{i}\\\" é\"}}\n"));
    }
    lines.push_str("{\"key_hex\":\"ff01\",\"value\":\"bytes\"}\n");
    let jsonl = dir.file("in.jsonl");
    std::fs::write(&jsonl, &lines).unwrap();
    let done = json(&["import", path(&db), "t", "--jsonl", path(&jsonl), "--batch", "1000"]);
    assert_eq!((done["imported"].as_u64(), done["commits"].as_u64()), (Some(2_501), Some(3)));
    assert_eq!(stdout(&["export", path(&db), "t"]), lines);
    let out = dir.file("out.jsonl");
    assert_eq!(json(&["export", path(&db), "t", "--out", path(&out)])["exported"], 2_501);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), lines);
    // CSV, quoted fields included.
    let csv = dir.file("in.csv");
    std::fs::write(&csv, "a,1\n\"b,c\",\"say \"\"hi\"\"\"\n").unwrap();
    assert_eq!(json(&["import", path(&db), "c", "--csv", path(&csv)])["imported"], 2);
    assert_eq!(json(&["tree", "get", path(&db), "c", "b,c"])["value"], "say \"hi\"");
    // A bad line stops the import with its number; a missing input is not found.
    std::fs::write(&jsonl, "{\"key\":\"x\",\"value\":\"y\"}\nnot json\n").unwrap();
    assert!(fails(&["import", path(&db), "bad", "--jsonl", path(&jsonl)], 2).contains("line 2"));
    fails(&["import", path(&db), "bad", "--jsonl", path(&dir.file("none"))], 3);
    fails(&["import", path(&db), "bad"], 2); // neither --jsonl nor --csv
}

#[test]
fn files_a_user_points_at_by_mistake() {
    let dir = Dir::new();
    let missing = dir.file("missing.bob");
    for args in [
        vec!["stat", path(&missing)],
        vec!["verify", path(&missing)],
        vec!["compact", path(&missing)],
        vec!["obj", "ls", path(&missing)],
        vec!["tree", "ls", path(&missing)],
        vec!["export", path(&missing), "t"],
    ] {
        assert!(fails(&args, 3).contains("no such file"), "{args:?}");
    }
    let text = dir.file("notes.txt");
    std::fs::write(&text, "this is not a bob file, it is a grocery list\n".repeat(300)).unwrap();
    for command in ["stat", "verify", "compact"] {
        fails(&[command, path(&text)], 4);
    }
    fails(&["tree", "ls", path(&text)], 4);
    let empty = dir.file("empty.bob");
    std::fs::write(&empty, b"").unwrap();
    fails(&["stat", path(&empty)], 4);
    fails(&["create", path(&text)], 2); // exists
    fails(&["tree"], 2);
    fails(&["no-such-command"], 2);
}

#[test]
fn a_truncated_or_corrupt_file_is_reported_not_read() {
    let dir = Dir::new();
    let file = dir.file("store.bob");
    let file_s = path(&file);
    json(&["create", "--kind", "base", file_s]);
    let blob = "a blob that will be damaged ".repeat(400);
    let id = json(&["obj", "put", file_s, &blob])["id"].as_str().unwrap().to_string();
    // Corrupt: flip bytes in the middle of the object's data.
    let bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(28)
        .position(|w| w == b"a blob that will be damaged ")
        .expect("the blob is in the file");
    let mut damaged = bytes.clone();
    damaged[at + 100] ^= 0xFF;
    std::fs::write(&file, &damaged).unwrap();
    let stderr = fails(&["obj", "get", file_s, &id], 4);
    assert!(stderr.contains("checksum"), "{stderr}");
    let report = damaged_report(file_s);
    assert_eq!(report["clean"], false);
    assert!(!report["problems"].as_array().unwrap().is_empty());
    // Truncated: half the file.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    fails(&["stat", file_s], 4);
    let report = damaged_report(file_s);
    assert_eq!(report["clean"], false, "{report}");
}

#[test]
fn a_file_locked_by_another_process_is_refused() {
    let dir = Dir::new();
    let file = dir.file("store.bob");
    json(&["create", "--kind", "base", path(&file)]);
    // This test's process holds the store open; `bob` is another process.
    let held = bob_store_core::BaseStore::open(&file, Default::default()).unwrap();
    for args in [vec!["stat", path(&file)], vec!["obj", "put", path(&file), "x"]] {
        assert!(fails(&args, 5).contains("open in another"), "{args:?}");
    }
    drop(held);
    json(&["stat", path(&file)]);
    let db = dir.file("db.bob");
    json(&["create", path(&db)]);
    let held = bob_btree::Db::open(&db).unwrap();
    fails(&["tree", "ls", path(&db)], 5);
    held.close().unwrap();
}

/// The commands that only look open the file read-only, with a shared lock: they run beside
/// another reader, and change nothing (a store left with journaled commits is not
/// checkpointed by a `stat`); a writer is still refused while a reader holds the file.
#[test]
fn looking_commands_read_only_beside_other_readers() {
    use bob_store_core::Storer;
    let dir = Dir::new();
    let file = dir.file("store.bob");
    let mut store = bob_store_core::BaseStore::create(&file, Default::default()).unwrap();
    let id = store.write_new_obj_from_bytes(b"kept").unwrap();
    store.commit().unwrap();
    assert!(store.journaled_commits() > 0, "the scenario: a journal to replay");
    drop(store); // no close: the commit stays in the journal
    let before = std::fs::read(&file).unwrap();
    let held = bob_store_core::BaseStore::open_read_only(&file, Default::default()).unwrap();
    let id = id.0.to_string();
    assert_eq!(json(&["stat", path(&file)])["objects"], 1);
    assert_eq!(json(&["verify", path(&file)])["clean"], true);
    assert_eq!(stdout(&["obj", "get", path(&file), &id]), "kept");
    assert!(stdout(&["obj", "ls", path(&file)]).contains("\t4"));
    assert!(fails(&["obj", "put", path(&file), "x"], 5).contains("open in another"));
    drop(held);
    assert!(std::fs::read(&file).unwrap() == before, "the file is as it was");
}

/// A million lines, imported in durable batches; the counts come back in `--json`.
#[test]
fn an_import_of_a_million_lines() {
    let dir = Dir::new();
    let db = dir.file("db.bob");
    json(&["create", path(&db)]);
    let jsonl = dir.file("million.jsonl");
    let mut lines = String::with_capacity(40 << 20);
    for i in 0..1_000_000u32 {
        lines.push_str(&format!("{{\"key\":\"{i:08}\",\"value\":\"{}\"}}\n", i % 977));
    }
    std::fs::write(&jsonl, &lines).unwrap();
    let done = json(&["import", path(&db), "big", "--jsonl", path(&jsonl), "--batch", "50000"]);
    assert_eq!((done["imported"].as_u64(), done["commits"].as_u64()), (Some(1_000_000), Some(20)));
    assert_eq!(json(&["tree", "count", path(&db), "big"])["count"], 1_000_000);
    assert_eq!(
        json(&["tree", "get", path(&db), "big", "00999999"])["value"],
        (999_999 % 977).to_string()
    );
}

/// What a review found: an export never overwrites its database nor empties a file when it
/// fails; a database keeps the log setting it was made with; a missing log directory is
/// damage, not recreated; a store with a prime object is not the tool's to write.
#[test]
fn the_tool_changes_only_what_its_command_says() {
    let dir = Dir::new();
    let db = dir.file("db.bob");
    let db_s = path(&db);
    json(&["create", db_s]);
    json(&["tree", "put", db_s, "t", "k", "v"]);
    let before = std::fs::read(&db).unwrap();
    fails(&["export", db_s, "t", "--out", db_s], 2);
    fails(&["export", db_s, "t", "--out", path(&dir.file("db.bob.wal/x"))], 2);
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database is as it was");
    let keep = dir.file("keep.jsonl");
    std::fs::write(&keep, "precious\n").unwrap();
    fails(&["export", db_s, "no-such-tree", "--out", path(&keep)], 3);
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "precious\n");
    json(&["export", db_s, "t", "--out", path(&keep)]);
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "{\"key\":\"k\",\"value\":\"v\"}\n");

    // A database made without a log stays without one.
    let quiet = dir.file("quiet.bob");
    let options = bob_btree::DbOptions { log: false, ..bob_btree::DbOptions::default() };
    bob_btree::Db::create_with(&quiet, &options).unwrap().close().unwrap();
    json(&["tree", "put", path(&quiet), "t", "k", "v"]);
    json(&["stat", path(&quiet)]);
    assert!(!bob_btree::log_dir_of(&quiet).exists(), "no log directory made");
    bob_btree::Db::open_with(&quiet, &options).unwrap().close().unwrap();

    // A logged database whose log directory is gone is damaged: reported, not recreated.
    let log = bob_btree::log_dir_of(&db);
    std::fs::remove_dir_all(&log).unwrap();
    assert!(fails(&["stat", db_s], 4).contains("missing"));
    let report = damaged_report(db_s);
    assert_eq!(report["clean"], false);
    assert!(!log.exists(), "the log directory is not recreated");

    // A store whose prime object is not a catalog: not a database, and not writable here.
    let other = dir.file("other.bob");
    {
        use bob_store_core::{PrimeStorer, Storer};
        let mut store = bob_store_core::BaseStore::create(&other, Default::default()).unwrap();
        let prime = store.prime_object(5).unwrap();
        store.write_bytes_to_obj(prime, b"hello").unwrap();
        store.close().unwrap();
    }
    fails(&["obj", "put", path(&other), "x"], 2);
    fails(&["obj", "del", path(&other), "0"], 2);
    fails(&["tree", "ls", path(&other)], 4);
    assert_eq!(stdout(&["obj", "get", path(&other), "0"]), "hello");
}

#[test]
fn bad_input_is_refused_with_its_line() {
    let dir = Dir::new();
    let db = dir.file("db.bob");
    let db_s = path(&db);
    json(&["create", db_s]);
    fails(&["tree", "create", db_s, &"n".repeat(300)], 2);
    fails(&["tree", "put", db_s, "t", &"k".repeat(5000), "v"], 2);
    let input = dir.file("in.jsonl");
    let cases: [(&[u8], &str); 5] = [
        (
            b"{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"key\":\"c\",\"value\":\"2\"}\n",
            "line 2",
        ),
        (b"{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"\xff\",\"value\":\"2\"}\n", "line 2"),
        (b"{\"key_hex\":\"+f+f\",\"value\":\"1\"}\n", "line 1"),
        (b"{\"key\":\"a\",\"value\":\"1\",\"extra\":1}\n", "line 1"),
        (b"{\"key\":\"a\"}\n", "line 1"),
    ];
    for (lines, at) in cases {
        std::fs::write(&input, lines).unwrap();
        let stderr = fails(&["import", db_s, "t", "--jsonl", path(&input)], 2);
        assert!(stderr.contains(at), "{stderr}");
    }
    let long_key = format!("{{\"key\":\"{}\",\"value\":\"1\"}}\n", "k".repeat(5000));
    std::fs::write(&input, format!("{{\"key\":\"a\",\"value\":\"1\"}}\n{long_key}")).unwrap();
    assert!(fails(&["import", db_s, "t", "--jsonl", path(&input)], 2).contains("line 2"));
    // A byte-order mark and CRLF line ends are fine.
    std::fs::write(
        &input,
        "\u{feff}{\"key\":\"a\",\"value\":\"1\"}\r\n{\"key\":\"b\",\"value\":\"2\"}\r\n",
    )
    .unwrap();
    assert_eq!(json(&["import", db_s, "bom", "--jsonl", path(&input)])["imported"], 2);
    assert_eq!(json(&["tree", "get", db_s, "bom", "a"])["value"], "1");
    // A directory is not a bob file; a create that fails leaves nothing behind.
    fails(&["stat", path(dir.dir.path())], 4);
    let blocked = dir.file("blocked.bob");
    std::fs::write(bob_btree::log_dir_of(&blocked), b"a file where the log directory goes")
        .unwrap();
    fails(&["create", path(&blocked)], 1);
    assert!(!blocked.exists(), "no half-made database");
}

/// A path that is not UTF-8 is shown lossily, never a panic.
#[cfg(unix)]
#[test]
fn a_path_that_is_not_utf8_works() {
    use std::os::unix::ffi::OsStrExt;
    let dir = Dir::new();
    let odd = dir.dir.path().join(std::ffi::OsStr::from_bytes(b"\xff.bob"));
    let output =
        bob().arg("--json").arg("create").arg(&odd).assert().success().get_output().clone();
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(created["created"].as_str().unwrap().ends_with("\u{fffd}.bob"));
    bob().arg("stat").arg(&odd).assert().success();
    bob().arg("--json").arg("verify").arg(&odd).assert().success();
}

/// `stat` shows the file's format version, not the build's: a version 4 store (store-core's
/// fixture) says 4, read-only (nothing is rewritten), and 5 once a write checkpointed it.
#[test]
fn stat_shows_the_files_format_version() {
    let dir = Dir::new();
    let file = dir.file("format4.bob");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../store-core/tests/fixtures/format4.bob");
    std::fs::copy(fixture, &file).unwrap();
    let file = path(&file);
    assert_eq!(json(&["stat", file])["format_version"].as_u64(), Some(4));
    assert_eq!(json(&["stat", file])["format_version"].as_u64(), Some(4), "stat wrote nothing");
    json(&["obj", "put", file, "written by format 5"]);
    let version = u64::from(bob_store_core::FORMAT_VERSION);
    assert_eq!(json(&["stat", file])["format_version"].as_u64(), Some(version));
}
