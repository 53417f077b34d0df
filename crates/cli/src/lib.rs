//! `bob`, the command-line tool for bob files: create a store or a database, look into one
//! (`stat`, `obj ls`, `tree scan`), check it (`verify`), compact it, and move trees in and out
//! as JSON lines or CSV (`import`, `export`).
//!
//! The binary (`src/main.rs`) parses the command line into a [`Cli`] and calls [`run`]; this
//! library holds everything else, so tests and other tools can run a command in-process.
//!
//! Invariants:
//! - A bad file (missing, locked, truncated, corrupt, not a bob file) is an [`Error`] with a
//!   clear message and its own exit code ([`Error::exit_code`]), never a panic and never data
//!   that failed its checksum.
//! - Commands that only read (`stat`, `verify`, `obj get|ls`, `tree ls|get|scan|count`,
//!   `export`) never change a store's objects; opening a database may replay its write-ahead
//!   log into a checkpoint, as any open of it does. `stat`, `verify` and `obj get|ls` open an
//!   object store read-only (a shared lock; not a byte written): they work on a file the
//!   user may not write, and beside other readers. A database's trees are read through its
//!   log, so `stat` and `verify` of a database open it for writing.
//! - Objects of a database file belong to its trees: `obj put` and `obj del` refuse such a
//!   file.
//! - `export` writes one JSON object per line in key order, `{"key":…,"value":…}` (a field
//!   that is not UTF-8 is `key_hex`/`value_hex`); importing those lines into an empty tree and
//!   exporting again gives the same bytes.
//!
//! # Example
//! ```
//! use bob_cli::{Cli, run};
//! use clap::Parser;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let file = dir.path().join("data.bob");
//! let file = file.to_str().unwrap();
//! let mut out = Vec::new();
//! run(Cli::parse_from(["bob", "create", file]), &mut out)?;
//! run(Cli::parse_from(["bob", "tree", "put", file, "users", "ada", "lovelace"]), &mut out)?;
//! out.clear();
//! run(Cli::parse_from(["bob", "--json", "tree", "count", file, "users"]), &mut out)?;
//! assert_eq!(String::from_utf8(out)?.trim(), r#"{"count":1,"tree":"users"}"#);
//! # Ok(())
//! # }
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bob_btree::{Db, Durability};
use bob_store_core::{BaseStore, ObjectId, ObjectInfoStorer, PRIME_OBJECT_ID, Storer};
use bob_store_multi::MultiStore;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

mod import;

/// Success.
pub const EXIT_OK: i32 = 0;
/// An I/O error, or another failure not named below.
pub const EXIT_FAILED: i32 = 1;
/// Bad arguments (also what clap exits with for a usage error).
pub const EXIT_USAGE: i32 = 2;
/// A file, object, tree or key that is not there.
pub const EXIT_NOT_FOUND: i32 = 3;
/// A corrupt or truncated file, a file that is not a bob file, or `verify` found damage.
pub const EXIT_CORRUPT: i32 = 4;
/// The file is open in another process (or another handle of this one).
pub const EXIT_LOCKED: i32 = 5;

/// What went wrong; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Something named is not there.
    #[error("{0}")]
    NotFound(String),
    /// The file is damaged, truncated or not a bob file (or `verify` found damage).
    #[error("{0}")]
    Corrupt(String),
    /// Another process (or handle) holds the file.
    #[error("{0}")]
    Locked(String),
    /// Anything else (I/O errors among them).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::NotFound(_) => EXIT_NOT_FOUND,
            Error::Corrupt(_) => EXIT_CORRUPT,
            Error::Locked(_) => EXIT_LOCKED,
            Error::Failed(_) => EXIT_FAILED,
        }
    }

    /// A store error about `path`, sorted into its kind.
    fn store(path: &Path, e: bob_store_core::Error) -> Self {
        use bob_store_core::Error as E;
        let message = format!("{}: {e}", path.display());
        match e {
            E::Locked { .. } => Error::Locked(message),
            E::NotFound(_) | E::StaleId { .. } => Error::NotFound(message),
            E::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("{}: no such file", path.display()))
            }
            E::ChecksumMismatch { .. }
            | E::Corrupt { .. }
            | E::NewestCommitDamaged { .. }
            | E::NotAStore(_)
            | E::UnsupportedVersion { .. } => Error::Corrupt(message),
            E::InvalidArgument(_) => Error::Usage(message),
            _ => Error::Failed(message),
        }
    }

    /// A database error about `path`, sorted into its kind.
    fn db(path: &Path, e: bob_btree::Error) -> Self {
        use bob_btree::Error as E;
        match e {
            E::Store(e) => Self::store(path, e),
            E::Log(io) if io.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("{}: the database's log is missing: {io}", path.display()))
            }
            e @ (E::Corrupt(_) | E::UnsupportedVersion { .. } | E::NotADatabase) => {
                Error::Corrupt(format!("{}: {e}", path.display()))
            }
            e @ (E::TooLarge { .. } | E::TreeExists(_)) => {
                Error::Usage(format!("{}: {e}", path.display()))
            }
            e => Error::Failed(format!("{}: {e}", path.display())),
        }
    }

    fn io(what: &str, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("{what}: no such file"))
        } else {
            Error::Failed(format!("{what}: {e}"))
        }
    }
}

/// The result of a command.
pub type Result<T> = std::result::Result<T, Error>;

/// `bob`: look into, check and change bob files.
///
/// Exit codes: 0 success, 1 failure (I/O and others), 2 bad arguments, 3 not found, 4 corrupt
/// or not a bob file (or `verify` found damage), 5 locked by another process.
#[derive(Debug, Parser)]
#[command(name = "bob", version, about, long_about = None)]
pub struct Cli {
    /// Print JSON (one object per command; `export` prints JSON lines either way).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The kinds of file `bob create` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A database: named B-trees (and a write-ahead log beside the file, `FILE.wal`).
    Db,
    /// An object store with a first-fit allocator (bob-store-core's `BaseStore`).
    Base,
    /// An object store that allocates by size class (bob-store-multi's `MultiStore`).
    Multi,
}

/// A command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates a new file (it must not exist).
    Create {
        /// What kind of file.
        #[arg(long, value_enum, default_value = "db")]
        kind: Kind,
        /// The file.
        file: PathBuf,
    },
    /// Shows what a file holds: its kind, format, generation, objects, space, and a
    /// database's trees.
    Stat {
        /// The file.
        file: PathBuf,
    },
    /// Reads and checks everything; exits 4 if anything is damaged.
    Verify {
        /// The file.
        file: PathBuf,
    },
    /// Moves objects down and shortens the file.
    Compact {
        /// The file.
        file: PathBuf,
    },
    /// Objects of a store.
    #[command(subcommand)]
    Obj(ObjCommand),
    /// Trees of a database.
    #[command(subcommand)]
    Tree(TreeCommand),
    /// Puts the lines of a JSON-lines or CSV file into a tree, in durable batches.
    Import {
        /// The database file.
        file: PathBuf,
        /// The tree (created if it is not there).
        tree: String,
        /// A file of lines `{"key":…,"value":…}` (or `key_hex`/`value_hex`).
        #[arg(long, conflicts_with = "csv", required_unless_present = "csv")]
        jsonl: Option<PathBuf>,
        /// A CSV file of records `key,value` (no header).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Entries per durable commit.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
    },
    /// Writes a tree as JSON lines, in key order.
    Export {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
        /// Where (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `bob obj …`.
#[derive(Debug, Subcommand)]
pub enum ObjCommand {
    /// Writes a new object (or replaces `--id`) from VALUE, `--from FILE`, or standard input;
    /// prints its id.
    Put {
        /// The store file.
        file: PathBuf,
        /// The bytes, as text.
        value: Option<String>,
        /// Read the bytes from this file.
        #[arg(long, conflicts_with = "value")]
        from: Option<PathBuf>,
        /// Replace this object instead of writing a new one.
        #[arg(long, value_parser = parse_id)]
        id: Option<ObjectId>,
    },
    /// Writes an object's bytes to standard output (or `--out`).
    Get {
        /// The store file.
        file: PathBuf,
        /// The object's id (`INDEX.TAG` as `bob obj ls` shows it, or the raw `u64`).
        #[arg(value_parser = parse_id)]
        id: ObjectId,
        /// Write the bytes here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Deletes an object.
    Del {
        /// The store file.
        file: PathBuf,
        /// The object's id (`INDEX.TAG` as `bob obj ls` shows it, or the raw `u64`).
        #[arg(value_parser = parse_id)]
        id: ObjectId,
    },
    /// Lists the objects and their lengths.
    Ls {
        /// The store file.
        file: PathBuf,
    },
}

/// `bob tree …` (keys and values are taken and shown as text).
#[derive(Debug, Subcommand)]
pub enum TreeCommand {
    /// Lists the trees and their entry counts.
    Ls {
        /// The database file.
        file: PathBuf,
    },
    /// Creates an empty tree.
    Create {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
    },
    /// Deletes a tree and everything in it.
    Drop {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
    },
    /// Puts KEY → VALUE (one durable commit).
    Put {
        /// The database file.
        file: PathBuf,
        /// The tree (created if it is not there).
        tree: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Prints the value of KEY.
    Get {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
        /// The key.
        key: String,
    },
    /// Deletes KEY.
    Del {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
        /// The key.
        key: String,
    },
    /// Prints the entries from `--from` (included) to `--to` (excluded), in key order.
    Scan {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
        /// The first key.
        #[arg(long)]
        from: Option<String>,
        /// The key the scan stops before.
        #[arg(long)]
        to: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Prints how many entries the tree holds.
    Count {
        /// The database file.
        file: PathBuf,
        /// The tree.
        tree: String,
    },
}

/// An object store of either kind.
enum AnyStore {
    Base(BaseStore),
    Multi(MultiStore),
}

/// Runs `$body` with `$s` bound to the store, whichever kind it is.
macro_rules! with_store {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            AnyStore::Base($s) => $body,
            AnyStore::Multi($s) => $body,
        }
    };
}

impl AnyStore {
    /// Opens `path` as whichever kind of store it is.
    fn open(path: &Path) -> Result<Self> {
        Self::open_as(path, false)
    }

    /// Opens `path` read-only (a shared lock; nothing is written, not even by `close`), for
    /// the commands that only look: they work on a file this user may not write, and beside
    /// other readers.
    fn open_read_only(path: &Path) -> Result<Self> {
        Self::open_as(path, true)
    }

    fn open_as(path: &Path, read_only: bool) -> Result<Self> {
        check_file(path)?;
        let options = bob_store_core::StoreOptions::default();
        let base = if read_only {
            BaseStore::open_read_only(path, options)
        } else {
            BaseStore::open(path, options)
        };
        match base {
            Ok(store) => Ok(AnyStore::Base(store)),
            Err(bob_store_core::Error::WrongKind { .. }) => {
                let multi = if read_only {
                    MultiStore::open_read_only(path, options)
                } else {
                    MultiStore::open(path, options)
                };
                Ok(AnyStore::Multi(multi.map_err(|e| Error::store(path, e))?))
            }
            Err(e) => Err(Error::store(path, e)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            AnyStore::Base(_) => "base",
            AnyStore::Multi(_) => "multi",
        }
    }

    /// Whether the store holds a bob-btree database (its prime object is a catalog).
    fn is_database(&self) -> bool {
        self.catalog().is_some()
    }

    /// A database's catalog (the prime object, when it starts with the catalog's magic).
    fn catalog(&self) -> Option<Vec<u8>> {
        with_store!(self, s => s
            .read_bytes_from_obj(PRIME_OBJECT_ID)
            .ok()
            .filter(|bytes| bytes.starts_with(b"BOBC")))
    }

    /// Whether the store has a prime object (whatever it holds: a damaged catalog too).
    fn has_prime(&self) -> bool {
        with_store!(self, s => !matches!(
            s.object_info(PRIME_OBJECT_ID),
            Err(bob_store_core::Error::NotFound(_))
        ))
    }

    /// The commit before the newest of the file, read-only, as this kind of store: how many
    /// objects it holds, if it opens.
    fn previous_commit_objects(path: &Path, multi: bool) -> Option<u64> {
        let file = bob_store_core::OsFile::open_read_only(path).ok()?;
        let options = bob_store_core::StoreOptions::default();
        if multi {
            MultiStore::open_previous_commit(file, options).ok().map(|s| s.object_count())
        } else {
            BaseStore::open_previous_commit(file, options).ok().map(|s| s.object_count())
        }
    }
}

/// `Ok` if `path` is a file to open; not found, unreachable, or a directory otherwise.
fn check_file(path: &Path) -> Result<()> {
    match path.try_exists() {
        Ok(false) => Err(Error::NotFound(format!("{}: no such file", path.display()))),
        Err(e) => Err(Error::Failed(format!("{}: cannot be reached: {e}", path.display()))),
        Ok(true) if path.is_dir() => {
            Err(Error::Corrupt(format!("{}: a directory, not a bob file", path.display())))
        }
        Ok(true) => Ok(()),
    }
}

/// A path as JSON text (lossy where it is not UTF-8).
fn pstr(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// An object id as the tool shows it: `INDEX.TAG` (`INDEX` when the tag is 0).
fn show_id(id: ObjectId) -> String {
    if id.tag() == 0 { id.index().to_string() } else { format!("{}.{}", id.index(), id.tag()) }
}

/// Parses an object id: `INDEX.TAG`, `INDEX` (tag 0), either after a `#`, or the raw `u64`
/// (any number of 2^32 or more).
pub fn parse_id(text: &str) -> std::result::Result<ObjectId, String> {
    let text = text.strip_prefix('#').unwrap_or(text);
    let bad = || format!("{text:?} is not an object id (INDEX.TAG, as `bob obj ls` shows)");
    match text.split_once('.') {
        Some((index, tag)) => {
            let index: u64 = index.parse().map_err(|_| bad())?;
            let tag: u32 = tag.parse().map_err(|_| bad())?;
            if index >= bob_store_core::MAX_OBJECTS {
                return Err(bad());
            }
            Ok(ObjectId::from_parts(index, tag))
        }
        None => {
            let raw: u64 = text.parse().map_err(|_| bad())?;
            Ok(if raw < bob_store_core::MAX_OBJECTS {
                ObjectId::from_parts(raw, 0)
            } else {
                ObjectId(raw)
            })
        }
    }
}

/// A value as text if it is UTF-8, else as `0x…` hex.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A JSON field pair for bytes: `name` with the text, or `name_hex` with hex.
fn field(object: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.into(), Value::String(text.into())),
        Err(_) => object.insert(format!("{name}_hex"), Value::String(hex(bytes))),
    };
}

/// What a command prints: JSON with `--json`, else the human text.
fn report(out: &mut dyn Write, json_mode: bool, json: Value, human: String) -> Result<()> {
    let text = if json_mode { json.to_string() } else { human };
    writeln!(out, "{text}").map_err(|e| Error::io("standard output", e))
}

/// Opens the database at `path` as it was made (with or without a write-ahead log), never
/// compacting it by copying at close: the tool changes a file only as its command says.
fn open_db(path: &Path) -> Result<Db> {
    open_db_from(path, AnyStore::open(path)?)
}

/// [`open_db`] for a caller that has the file open as a store already (closed here, before
/// the database opens it).
fn open_db_from(path: &Path, store: AnyStore) -> Result<Db> {
    // A plain store is not a database: say so, rather than let the open make it one.
    let logged = {
        let Some(catalog) = store.catalog() else {
            if store.has_prime() {
                return Err(Error::Corrupt(format!(
                    "{}: its prime object is not a database's catalog (damaged, or a store of \
                     another program)",
                    path.display()
                )));
            }
            return Err(Error::Usage(format!(
                "{}: a {} object store, not a database (trees live in files made by `bob create`)",
                path.display(),
                store.kind()
            )));
        };
        catalog.get(5) == Some(&1)
    };
    drop(store);
    let real = path.canonicalize().map_err(|e| Error::io(&path.display().to_string(), e))?;
    let log = bob_btree::log_dir_of(&real);
    if logged && !log.is_dir() {
        return Err(Error::Corrupt(format!(
            "{}: the database keeps a write-ahead log, and {} is {}",
            path.display(),
            log.display(),
            if log.exists() { "not a directory" } else { "missing" }
        )));
    }
    let options = bob_btree::DbOptions {
        log: logged,
        compact_on_close_below: None,
        checkpoint_interval: None,
        ..bob_btree::DbOptions::default()
    };
    Db::open_with(path, &options).map_err(|e| Error::db(path, e))
}

fn close_db(path: &Path, db: Db) -> Result<()> {
    db.close().map_err(|e| Error::db(path, e))
}

/// Runs one command, printing to `out` (standard output in the binary).
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    let json_mode = cli.json;
    match cli.command {
        Command::Create { kind, file } => create(&file, kind, json_mode, out),
        Command::Stat { file } => stat(&file, json_mode, out),
        Command::Verify { file } => verify(&file, json_mode, out),
        Command::Compact { file } => compact(&file, json_mode, out),
        Command::Obj(command) => obj(command, json_mode, out),
        Command::Tree(command) => tree(command, json_mode, out),
        Command::Import { file, tree, jsonl, csv, batch } => {
            let (source, format) = match (jsonl, csv) {
                (Some(path), None) => (path, import::Format::JsonLines),
                (None, Some(path)) => (path, import::Format::Csv),
                _ => return Err(Error::Usage("give one of --jsonl FILE or --csv FILE".into())),
            };
            let db = open_db(&file)?;
            let done = import::import(&db, &tree, &source, format, batch);
            let closed = close_db(&file, db);
            let stats = done?;
            closed?;
            report(
                out,
                json_mode,
                json!({ "tree": tree, "imported": stats.entries, "commits": stats.commits }),
                format!(
                    "imported {} entries into {tree} in {} commits",
                    stats.entries, stats.commits
                ),
            )
        }
        Command::Export { file, tree, out: to } => {
            if let Some(target) = &to {
                refuse_overwriting_the_database(&file, target)?;
            }
            let db = open_db(&file)?;
            let done = match &to {
                Some(path) => export_to_file(&db, &file, &tree, path),
                None => export(&db, &file, &tree, out),
            };
            let closed = close_db(&file, db);
            let count = done?;
            closed?;
            if to.is_some() {
                report(
                    out,
                    json_mode,
                    json!({ "tree": tree, "exported": count }),
                    format!("exported {count} entries of {tree}"),
                )?;
            }
            Ok(())
        }
    }
}

fn create(path: &Path, kind: Kind, json_mode: bool, out: &mut dyn Write) -> Result<()> {
    if path.try_exists().unwrap_or(true) {
        return Err(Error::Usage(format!(
            "{}: already exists (or cannot be reached)",
            path.display()
        )));
    }
    let log = bob_btree::log_dir_of(path);
    let log_was_there = log.exists();
    let options = bob_store_core::StoreOptions::default();
    let made = match kind {
        Kind::Db => {
            Db::create(path).map_err(|e| Error::db(path, e)).and_then(|db| close_db(path, db))
        }
        Kind::Base => BaseStore::create(path, options)
            .and_then(Storer::close)
            .map_err(|e| Error::store(path, e)),
        Kind::Multi => MultiStore::create(path, options)
            .and_then(Storer::close)
            .map_err(|e| Error::store(path, e)),
    };
    if let Err(e) = made {
        // Nothing half made is left behind (the file did not exist before).
        let _ = std::fs::remove_file(path);
        if !log_was_there {
            let _ = std::fs::remove_dir_all(&log);
        }
        return Err(e);
    }
    let kind = format!("{kind:?}").to_lowercase();
    report(
        out,
        json_mode,
        json!({ "created": pstr(path), "kind": kind }),
        format!("created {} ({kind})", path.display()),
    )
}

fn stat(path: &Path, json_mode: bool, out: &mut dyn Write) -> Result<()> {
    let mut store = AnyStore::open_read_only(path)?;
    let database = store.is_database();
    let kind = store.kind();
    let (generation, objects, space, file_len) = with_store!(&mut store, s => {
        s.complete_open().map_err(|e| Error::store(path, e))?;
        let space = s.space_in_use().map_err(|e| Error::store(path, e))?;
        (s.generation(), s.object_count(), space, s.file_len().map_err(|e| Error::store(path, e))?)
    });
    let version = with_store!(&store, s => s.format_version());
    // Commits in the journal since the last checkpoint, and records open dropped (a commit
    // in flight at a crash); a multi store's size classes.
    let journal = with_store!(&store, s => (s.journaled_commits(), s.dropped_records()));
    let classes = match &store {
        AnyStore::Multi(s) => Some(s.allocator().classes()),
        AnyStore::Base(_) => None,
    };
    let db = if database { Some(open_db_from(path, store)?) } else { None };
    let live = space.map_or(0, |(live, _)| live);
    let mut info = json!({
        "file": pstr(path),
        "kind": if database { "database" } else { kind },
        "store": kind,
        "format_version": version,
        "generation": generation,
        "objects": objects,
        "file_bytes": file_len,
        "live_bytes": live,
        "free_bytes": file_len.saturating_sub(live),
        "amplification": if live == 0 { Value::Null } else { json!(file_len as f64 / live as f64) },
    });
    let mut human = format!(
        "{}: {} ({} store, format {})\ngeneration {generation}, {objects} objects\n\
         {file_len} bytes in the file, {live} live, {} free{}",
        path.display(),
        if database { "database" } else { "object store" },
        kind,
        version,
        file_len.saturating_sub(live),
        if live == 0 {
            String::new()
        } else {
            format!(" (amplification {:.2})", file_len as f64 / live as f64)
        }
    );
    info["journal_commits_since_checkpoint"] = json!(journal.0);
    info["journal_records_dropped_at_open"] = json!(journal.1);
    human.push_str(&format!(
        "\njournal: {} commits since the last checkpoint{}",
        journal.0,
        if journal.1 > 0 {
            format!(", {} unfinished record dropped at open", journal.1)
        } else {
            String::new()
        }
    ));
    if let Some(classes) = classes {
        let shown: Vec<String> = classes.iter().map(u64::to_string).collect();
        human.push_str(&format!("\nsize classes (bytes): {}", shown.join(", ")));
        info["size_classes"] = json!(classes);
    }
    if let Some(db) = db {
        let read = db.begin_read();
        let mut trees = Vec::new();
        for name in read.list_trees() {
            let len = read.open_tree::<Vec<u8>, Vec<u8>>(&name).map_or(0, |t| t.len());
            human.push_str(&format!("\ntree {name}: {len} entries"));
            trees.push(json!({ "name": name, "entries": len }));
        }
        drop(read);
        let log_bytes = db.stats().log_bytes;
        human.push_str(&format!("\nwrite-ahead log: {log_bytes} bytes since the last checkpoint"));
        info["trees"] = Value::Array(trees);
        info["log_bytes"] = json!(log_bytes);
        close_db(path, db)?;
    }
    report(out, json_mode, info, human)
}

fn verify(path: &Path, json_mode: bool, out: &mut dyn Write) -> Result<()> {
    let store = match AnyStore::open_read_only(path) {
        Ok(store) => store,
        Err(Error::Corrupt(why)) => {
            // What is still readable: the commit before the newest, if it opens (as either
            // kind of store).
            let previous = AnyStore::previous_commit_objects(path, false)
                .or_else(|| AnyStore::previous_commit_objects(path, true));
            let readable = match previous {
                Some(n) => {
                    format!("; the commit before the newest opens read-only with {n} objects")
                }
                None => "; no earlier commit opens either".into(),
            };
            let problems = vec![format!("{why}{readable}")];
            report(
                out,
                json_mode,
                json!({ "file": pstr(path), "clean": false, "problems": problems, "previous_commit_objects": previous }),
                format!("{}: damaged\n  {}", path.display(), problems[0]),
            )?;
            return Err(Error::Corrupt(format!("{}: damaged", path.display())));
        }
        Err(e) => return Err(e),
    };
    let database = store.is_database();
    let checked = with_store!(&store, s => s.verify().map_err(|e| Error::store(path, e))?);
    let mut problems = checked.problems.clone();
    let mut trees = None;
    if database && problems.is_empty() {
        // A database that does not open (its catalog or log damaged) is a problem found,
        // reported like the others.
        match open_db_from(path, store) {
            Ok(db) => {
                let checked = db.verify().map_err(|e| Error::db(path, e));
                let closed = close_db(path, db);
                match checked {
                    Ok(report) => {
                        problems.extend(report.problems.iter().cloned());
                        trees = Some(json!({
                            "trees": report.trees, "nodes": report.nodes, "entries": report.entries
                        }));
                    }
                    Err(e) => problems.push(format!("the database's trees: {e}")),
                }
                if let Err(e) = closed {
                    problems.push(format!("closing the database: {e}"));
                }
            }
            // Not damage: another holder, or an I/O error (a file this user may read but
            // not write: a database's trees are read through its log, which needs it
            // writable).
            Err(e @ (Error::Locked(_) | Error::Failed(_) | Error::Usage(_))) => return Err(e),
            Err(e) => problems.push(format!("the database does not open: {e}")),
        }
    }
    let clean = problems.is_empty();
    let mut human = format!(
        "{}: {} ({} objects, {} bytes of object data, {} table pages, {} journal records checked)",
        path.display(),
        if clean { "clean" } else { "damaged" },
        checked.objects,
        checked.object_bytes,
        checked.table_pages,
        checked.journal_records
    );
    for problem in &problems {
        human.push_str(&format!("\n  {problem}"));
    }
    report(
        out,
        json_mode,
        json!({
            "file": pstr(path), "clean": clean, "objects": checked.objects,
            "object_bytes": checked.object_bytes, "problems": problems, "database": trees,
        }),
        human,
    )?;
    if clean { Ok(()) } else { Err(Error::Corrupt(format!("{}: damaged", path.display()))) }
}

fn compact(path: &Path, json_mode: bool, out: &mut dyn Write) -> Result<()> {
    let mut store = AnyStore::open(path)?;
    if store.is_database() {
        let db = open_db_from(path, store)?;
        let before = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let done = db.compact().map_err(|e| Error::db(path, e));
        let closed = close_db(path, db);
        done?; // the compaction's own error first
        closed?;
        let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        return report(
            out,
            json_mode,
            json!({ "file": pstr(path), "file_bytes_before": before, "file_bytes_after": after }),
            format!("{}: {before} bytes before, {after} after", path.display()),
        );
    }
    let done = with_store!(&mut store, s => s.compact().map_err(|e| Error::store(path, e))?);
    with_store!(store, s => s.close().map_err(|e| Error::store(path, e))?);
    report(
        out,
        json_mode,
        json!({ "file": pstr(path), "moved": done.moved, "file_bytes_before": done.file_len_before, "file_bytes_after": done.file_len_after }),
        format!(
            "{}: {} objects moved, {} bytes before, {} after",
            path.display(),
            done.moved,
            done.file_len_before,
            done.file_len_after
        ),
    )
}

fn obj(command: ObjCommand, json_mode: bool, out: &mut dyn Write) -> Result<()> {
    match command {
        ObjCommand::Put { file, value, from, id } => {
            let bytes = match (value, from) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(path)) => {
                    std::fs::read(&path).map_err(|e| Error::io(&path.display().to_string(), e))?
                }
                (None, None) => {
                    let mut bytes = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut bytes)
                        .map_err(|e| Error::io("standard input", e))?;
                    bytes
                }
            };
            let mut store = writable_store(&file)?;
            let id = with_store!(&mut store, s => {
                let id = match id {
                    Some(id) => {
                        s.replace_obj(id, &bytes).map_err(|e| Error::store(&file, e))?;
                        id
                    }
                    None => s.write_new_obj_from_bytes(&bytes).map_err(|e| Error::store(&file, e))?,
                };
                s.commit().map_err(|e| Error::store(&file, e))?;
                id
            });
            with_store!(store, s => s.close().map_err(|e| Error::store(&file, e))?);
            report(
                out,
                json_mode,
                json!({ "id": show_id(id), "raw_id": id.0, "len": bytes.len() }),
                show_id(id),
            )
        }
        ObjCommand::Get { file, id, out: to } => {
            let store = AnyStore::open_read_only(&file)?;
            let bytes = with_store!(&store, s => s.read_bytes_from_obj(id).map_err(|e| Error::store(&file, e))?);
            drop(store);
            if let Some(path) = to {
                std::fs::write(&path, &bytes)
                    .map_err(|e| Error::io(&path.display().to_string(), e))?;
                return report(
                    out,
                    json_mode,
                    json!({ "id": show_id(id), "len": bytes.len(), "out": pstr(&path) }),
                    format!("{} bytes to {}", bytes.len(), path.display()),
                );
            }
            if json_mode {
                let mut object = serde_json::Map::new();
                object.insert("id".into(), json!(show_id(id)));
                object.insert("len".into(), json!(bytes.len()));
                field(&mut object, "value", &bytes);
                return report(out, true, Value::Object(object), String::new());
            }
            out.write_all(&bytes).map_err(|e| Error::io("standard output", e))
        }
        ObjCommand::Del { file, id } => {
            let mut store = writable_store(&file)?;
            with_store!(&mut store, s => {
                s.delete_obj(id).map_err(|e| Error::store(&file, e))?;
                s.commit().map_err(|e| Error::store(&file, e))?;
            });
            with_store!(store, s => s.close().map_err(|e| Error::store(&file, e))?);
            report(
                out,
                json_mode,
                json!({ "deleted": show_id(id) }),
                format!("deleted {}", show_id(id)),
            )
        }
        ObjCommand::Ls { file } => {
            let store = AnyStore::open_read_only(&file)?;
            let listed: Vec<(ObjectId, u64)> = with_store!(&store, s => {
                let ids = s.ids().map_err(|e| Error::store(&file, e))?;
                let mut listed = Vec::with_capacity(ids.len());
                for id in ids {
                    let info = s.object_info(id).map_err(|e| Error::store(&file, e))?;
                    listed.push((id, info.len));
                }
                listed
            });
            let human = listed
                .iter()
                .map(|(id, len)| format!("{}\t{len}", show_id(*id)))
                .collect::<Vec<_>>()
                .join("\n");
            let json = Value::Array(
                listed
                    .iter()
                    .map(|(id, len)| json!({ "id": show_id(*id), "raw_id": id.0, "len": len }))
                    .collect(),
            );
            if !json_mode && listed.is_empty() {
                return Ok(());
            }
            report(out, json_mode, json!({ "objects": json }), human)
        }
    }
}

/// A store to write objects into: refused for a database's file (its objects are its
/// trees').
fn writable_store(path: &Path) -> Result<AnyStore> {
    let store = AnyStore::open(path)?;
    if store.has_prime() {
        // A database (or a store whose prime object another program keeps): its objects
        // are not the tool's to write, even when the catalog is damaged.
        return Err(Error::Usage(format!(
            "{}: {}; its objects belong to it (use `bob tree` for a database's trees)",
            path.display(),
            if store.is_database() { "a database" } else { "a store with a prime object" }
        )));
    }
    Ok(store)
}

type Tree<'a> = bob_btree::Tree<'a, Vec<u8>, Vec<u8>>;

fn tree_of<'r>(read: &'r bob_btree::ReadTxn<'_>, path: &Path, name: &str) -> Result<Tree<'r>> {
    read.open_tree::<Vec<u8>, Vec<u8>>(name)
        .ok_or_else(|| Error::NotFound(format!("{}: no tree named {name:?}", path.display())))
}

fn tree(command: TreeCommand, json_mode: bool, out: &mut dyn Write) -> Result<()> {
    let file = match &command {
        TreeCommand::Ls { file }
        | TreeCommand::Create { file, .. }
        | TreeCommand::Drop { file, .. }
        | TreeCommand::Put { file, .. }
        | TreeCommand::Get { file, .. }
        | TreeCommand::Del { file, .. }
        | TreeCommand::Scan { file, .. }
        | TreeCommand::Count { file, .. } => file.clone(),
    };
    let db = open_db(&file)?;
    let done = tree_on(&db, &file, command, json_mode, out);
    let closed = close_db(&file, db);
    done?;
    closed
}

fn tree_on(
    db: &Db,
    file: &Path,
    command: TreeCommand,
    json_mode: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let failed = |e: bob_btree::Error| Error::db(file, e);
    match command {
        TreeCommand::Ls { .. } => {
            let read = db.begin_read();
            let mut trees = Vec::new();
            for name in read.list_trees() {
                let len = tree_of(&read, file, &name)?.len();
                trees.push((name, len));
            }
            let human =
                trees.iter().map(|(n, l)| format!("{n}\t{l}")).collect::<Vec<_>>().join("\n");
            let json = trees.iter().map(|(n, l)| json!({ "name": n, "entries": l })).collect();
            if !json_mode && trees.is_empty() {
                return Ok(());
            }
            report(out, json_mode, json!({ "trees": Value::Array(json) }), human)
        }
        TreeCommand::Create { tree, .. } => {
            if db.begin_read().open_tree::<Vec<u8>, Vec<u8>>(&tree).is_some() {
                return Err(Error::Usage(format!(
                    "{}: a tree named {tree:?} exists",
                    file.display()
                )));
            }
            let mut txn = db.begin_write().map_err(failed)?;
            txn.open_tree::<Vec<u8>, Vec<u8>>(&tree).map_err(failed)?;
            txn.commit(Durability::Durable).map_err(failed)?;
            report(out, json_mode, json!({ "created": tree }), format!("created tree {tree}"))
        }
        TreeCommand::Drop { tree, .. } => {
            let mut txn = db.begin_write().map_err(failed)?;
            if !txn.delete_tree(&tree).map_err(failed)? {
                return Err(Error::NotFound(format!("{}: no tree named {tree:?}", file.display())));
            }
            txn.commit(Durability::Durable).map_err(failed)?;
            report(out, json_mode, json!({ "dropped": tree }), format!("dropped tree {tree}"))
        }
        TreeCommand::Put { tree, key, value, .. } => {
            let mut txn = db.begin_write().map_err(failed)?;
            let replaced = txn
                .open_tree::<Vec<u8>, Vec<u8>>(&tree)
                .map_err(failed)?
                .put(key.as_bytes(), value.as_bytes())
                .map_err(failed)?;
            txn.commit(Durability::Durable).map_err(failed)?;
            report(
                out,
                json_mode,
                json!({ "tree": tree, "key": key, "replaced": replaced }),
                format!("{} {key}", if replaced { "replaced" } else { "put" }),
            )
        }
        TreeCommand::Get { tree, key, .. } => {
            let read = db.begin_read();
            let value = tree_of(&read, file, &tree)?
                .get(key.as_bytes())
                .map_err(failed)?
                .ok_or_else(|| Error::NotFound(format!("no key {key:?} in tree {tree:?}")))?;
            let mut object = serde_json::Map::new();
            object.insert("key".into(), Value::String(key));
            field(&mut object, "value", &value);
            report(out, json_mode, Value::Object(object), show(&value))
        }
        TreeCommand::Del { tree, key, .. } => {
            if db.begin_read().open_tree::<Vec<u8>, Vec<u8>>(&tree).is_none() {
                return Err(Error::NotFound(format!("{}: no tree named {tree:?}", file.display())));
            }
            let mut txn = db.begin_write().map_err(failed)?;
            let removed = txn
                .open_tree::<Vec<u8>, Vec<u8>>(&tree)
                .map_err(failed)?
                .delete(key.as_bytes())
                .map_err(failed)?;
            if !removed {
                return Err(Error::NotFound(format!("no key {key:?} in tree {tree:?}")));
            }
            txn.commit(Durability::Durable).map_err(failed)?;
            report(
                out,
                json_mode,
                json!({ "tree": tree, "deleted": key }),
                format!("deleted {key}"),
            )
        }
        TreeCommand::Scan { tree, from, to, limit, .. } => {
            let read = db.begin_read();
            let t = tree_of(&read, file, &tree)?;
            use std::ops::Bound;
            let start = from.as_deref().map_or(Bound::Unbounded, |k| Bound::Included(k.as_bytes()));
            let end = to.as_deref().map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes()));
            let mut entries = Vec::new();
            for entry in t.range::<[u8], _>((start, end)).map_err(failed)? {
                if limit.is_some_and(|l| entries.len() as u64 >= l) {
                    break;
                }
                entries.push(entry.map_err(failed)?);
            }
            let human = entries
                .iter()
                .map(|(k, v)| format!("{}\t{}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join("\n");
            let json = entries
                .iter()
                .map(|(k, v)| {
                    let mut object = serde_json::Map::new();
                    field(&mut object, "key", k);
                    field(&mut object, "value", v);
                    Value::Object(object)
                })
                .collect();
            if !json_mode && entries.is_empty() {
                return Ok(());
            }
            report(out, json_mode, json!({ "tree": tree, "entries": Value::Array(json) }), human)
        }
        TreeCommand::Count { tree, .. } => {
            let read = db.begin_read();
            let count = tree_of(&read, file, &tree)?.len();
            report(out, json_mode, json!({ "tree": tree, "count": count }), count.to_string())
        }
    }
}

/// Refuses an export's output that is the database's file or inside its log directory.
fn refuse_overwriting_the_database(file: &Path, target: &Path) -> Result<()> {
    let resolve = |p: &Path| -> Option<PathBuf> {
        match p.canonicalize() {
            Ok(p) => Some(p),
            // Not there yet: its directory resolved, and its name.
            Err(_) => {
                let parent =
                    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                Some(parent.canonicalize().ok()?.join(p.file_name()?))
            }
        }
    };
    let (Some(db), Some(out)) = (resolve(file), resolve(target)) else { return Ok(()) };
    let log = bob_btree::log_dir_of(&db);
    if out == db || out.starts_with(&log) {
        return Err(Error::Usage(format!(
            "{}: the export would overwrite the database it reads",
            target.display()
        )));
    }
    Ok(())
}

/// Exports into `path` through a file beside it, synced and renamed over `path` once whole
/// (the directory synced after): a failed export (a missing tree, a read error) or a power
/// loss leaves what was at `path`, or the whole new export.
fn export_to_file(db: &Db, file: &Path, tree: &str, path: &Path) -> Result<u64> {
    {
        // The tree first, so a missing one touches nothing.
        let read = db.begin_read();
        tree_of(&read, file, tree)?;
    }
    let name = path.display().to_string();
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = (|| {
        let target = std::fs::File::create(&partial).map_err(|e| Error::io(&name, e))?;
        let mut writer = std::io::BufWriter::new(target);
        let count = export(db, file, tree, &mut writer)?;
        let target = writer.into_inner().map_err(|e| Error::io(&name, e.into_error()))?;
        target.sync_all().map_err(|e| Error::io(&name, e))?;
        std::fs::rename(&partial, path).map_err(|e| Error::io(&name, e))?;
        // The rename is durable once the directory is synced.
        bob_io_helpers::sync_parent_dir(path).map_err(|e| Error::Failed(format!("{name}: {e}")))?;
        Ok(count)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Writes every entry of `tree` as a JSON line; how many.
fn export(db: &Db, file: &Path, tree: &str, out: &mut dyn Write) -> Result<u64> {
    let read = db.begin_read();
    let t = tree_of(&read, file, tree)?;
    let mut count = 0;
    for entry in t.iter().map_err(|e| Error::db(file, e))? {
        let (key, value) = entry.map_err(|e| Error::db(file, e))?;
        writeln!(out, "{}", export_line(&key, &value)).map_err(|e| Error::io("export", e))?;
        count += 1;
    }
    Ok(count)
}

/// One entry as its JSON line: `{"key":…,"value":…}`, in that order whatever map order
/// serde_json is built with (a field that is not UTF-8 is `key_hex`/`value_hex`).
pub fn export_line(key: &[u8], value: &[u8]) -> String {
    let part = |name: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(text) => format!("\"{name}\":{}", Value::String(text.into())),
        Err(_) => format!("\"{name}_hex\":\"{}\"", hex(bytes)),
    };
    format!("{{{},{}}}", part("key", key), part("value", value))
}

/// Reads one JSON line's entry (`key` or `key_hex`, `value` or `value_hex`).
pub fn parse_line(line: &str) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    /// A line's fields: no others, none twice (serde refuses a repeated field).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        key: Option<String>,
        key_hex: Option<String>,
        value: Option<String>,
        value_hex: Option<String>,
    }
    let line: Line = serde_json::from_str(line).map_err(|e| format!("not an entry: {e}"))?;
    let bytes = |name: &str, text: Option<String>, hex: Option<String>| match (text, hex) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(hex)) => unhex(&hex).ok_or(format!("{name}_hex is not hex")),
        _ => Err(format!("needs one of `{name}` or `{name}_hex`")),
    };
    let key = bytes("key", line.key, line.key_hex)?;
    let value = bytes("value", line.value, line.value_hex)?;
    check_entry(&key, &value)?;
    Ok((key, value))
}

/// Refuses a key or value longer than a tree takes (so an import names the line).
pub fn check_entry(key: &[u8], value: &[u8]) -> std::result::Result<(), String> {
    if key.len() > bob_btree::MAX_KEY_LEN {
        return Err(format!("a key of {} bytes (at most {})", key.len(), bob_btree::MAX_KEY_LEN));
    }
    if value.len() > bob_btree::MAX_VALUE_LEN {
        return Err(format!(
            "a value of {} bytes (at most {})",
            value.len(),
            bob_btree::MAX_VALUE_LEN
        ));
    }
    Ok(())
}
