//! Persistent B+trees over a bob store: named, ordered key-value maps in one file, with
//! write transactions, read snapshots and incremental checkpoints.
//!
//! A [`Db`] keeps any number of named trees in one store (by default a `BaseStore` behind a
//! `ConcurrentStore`). Each node is one store object (`docs/format.md`, "B-tree node"):
//! versioned, checksummed, tagged with its tree and with the checkpoint that wrote it. A
//! changed node is rewritten under **its own object id** (`Storer::replace_obj`), so a change
//! rewrites that node only, never the path to the root; a split or merge touches the parent
//! as well. The catalog (tree name → root, entry count) lives in the store's prime object.
//!
//! # Transactions and snapshots
//! [`Db::begin_write`] gives the one writer a private copy of the trees: nodes are shared
//! with the last commit and copied the first time the writer changes them, so
//! [`WriteTxn::abort`] (or a drop) costs nothing and readers never wait for it.
//! [`Db::begin_read`] gives a snapshot of the last commit that later commits do not change,
//! from any thread; [`ReadTxn::into_tree`] makes one tree of it a handle that owns the
//! snapshot ([`ReadTree`]), for a reader that keeps a tree for many lookups. A checkpoint may
//! rewrite a node a snapshot still names: the node as its object held it is kept in memory (if
//! a reader was open when the commit replacing it was published) until every older snapshot
//! has ended, and a node loaded from disk is checked to belong to the snapshot's checkpoint.
//!
//! # Durability: the write-ahead log and checkpoints
//! A commit appends one checksummed record of its changes to the write-ahead log (segment
//! files in `<path>.wal`, `docs/format.md`, "B-tree write-ahead log"). A
//! [`Durability::Durable`] commit then syncs the log once (one `fdatasync`, one or a few 4 KiB
//! pages written), after releasing the writer lock: durable commits of several threads share
//! one sync (group commit), and each returns once its record is durable (it is visible to
//! readers from when its record is written); a [`Durability::Buffered`] one is written to the OS (it survives a crash of
//! the process, not a power loss) and made durable by the next durable commit, [`Db::sync`],
//! a checkpoint, or a megabyte of log. A **checkpoint** writes the nodes changed since the last
//! one (each under its own id) and the catalog, with the last log record it includes, in one
//! store commit; segments holding only older records are then removed. It runs on
//! [`Db::checkpoint`], on [`Db::close`], and at a commit once the log has grown
//! [`DbOptions::checkpoint_after_bytes`]. Open reads the catalog, then replays the records
//! after its checkpoint. A torn last record (a crash during its write) is dropped; a damaged
//! record that a later one says was synced is [`Error::Corrupt`], never a silent rollback.
//! Without a log ([`Db::new`], `DbOptions::log = false`) every durable commit is a checkpoint.
//! A commit whose record would be about as large as the nodes it fills (a load) is a
//! checkpoint instead, so its bytes are written once. Retired log segments are kept as spares
//! and reused, so a sync writes the data page alone, never file metadata.
//!
//! # The persistence thread and memory
//! Unless [`DbOptions::checkpoint_interval`] is `None`, a thread checkpoints what changed at
//! that interval, prepares a spare log segment when the log will need one, and, when the
//! nodes in memory pass [`DbOptions::memory_budget`], unloads the clean leaves nobody used
//! since its last round (second chance: the leaves in use stay, a leaf a scan read once goes
//! first) until they are back under three quarters of it (a snapshot keeps what it holds). A changed node cannot be unloaded before a checkpoint writes it, so changed nodes
//! (with the long values waiting in them) past half the budget bring a checkpoint forward:
//! memory stays near the budget however long the interval. [`Db::stats`] counts what it and
//! the commits did, and how many nodes wait for the next checkpoint.
//!
//! A checkpoint runs in two phases. The first, under the writer lock (after any open write
//! transaction), marks the changed nodes clean with their ids (writing the new ones, which
//! their parents name, to the store's write buffer) and publishes that state; the second
//! rewrites the changed nodes, deletes what was freed, writes the catalog and commits the
//! store (its sync) with writers going on meanwhile, and then releases the log. Readers are
//! never held off. One checkpoint runs at a time; a commit that is its own checkpoint (a big
//! one, or a durable one without a log) holds writers off through both phases.
//!
//! # Giving space back
//! A session that wrote and leaves the live entries filling less than half of a store file of
//! 4 MiB or more ([`DbOptions::compact_on_close_below`],
//! [`DbOptions::compact_on_close_min_bytes`]) is compacted by [`Db::close`]: for a database
//! opened from a path (or given [`StoreFiles`]), the trees of the last commit are rebuilt in
//! a new file, `<path>.bob-compact`, renamed over the old one once durable, in place of the
//! closing checkpoint (`docs/format.md`, "Compaction into a new file"); otherwise the store's
//! objects move down within the file. [`Db::compact`] compacts within the file at any time.
//!
//! # Loads and damage
//! [`TreeMut::bulk_load`] fills an empty tree from sorted entries, nodes left to right.
//! [`Db::verify`] reads every node and checks the tree invariants; a tree that is an index
//! over data kept elsewhere is rebuilt from it with [`WriteTxn::rebuild_tree`] when its nodes
//! are found damaged.
//!
//! # Invariants
//! - Keys are ordered by their encoding's bytes ([`Key`]: for every encoding bob provides
//!   the same as the key type's order); every key is at most [`MAX_KEY_LEN`] and every value
//!   at most [`MAX_VALUE_LEN`] encoded bytes.
//! - A value longer than [`MAX_INLINE_VALUE_LEN`] bytes is kept in a store object of its own,
//!   written by the checkpoint that first writes it and never rewritten; the checkpoint
//!   holding the commit that drops it deletes it, or, while a reader of an older snapshot is
//!   open, defers that (the catalog lists it) to the first checkpoint after that reader ends.
//!   Its leaf names the object and the checkpoint that wrote it, and a read checks both, the
//!   length and the checksum.
//! - Every node is at most one entry past 4 KiB; a branch has at least two children.
//! - A node loaded from disk passes its checksum, version, tree id, length and key-order
//!   checks and was written at or before the checkpoint its parent belongs to; otherwise the
//!   read is [`Error::Corrupt`], never data. A walk deeper than 64 nodes is corrupt.
//! - Open reads only the catalog and the log after its checkpoint: nodes load when first
//!   touched.
//! - A log write never touches a page that holds a synced record: after every sync the
//!   segment ends on a page boundary, and each database open appends to a new segment.
//!
//! # Example
//! ```
//! use bob_btree::{Db, Durability};
//!
//! # fn main() -> bob_btree::Result<()> {
//! let dir = tempfile::tempdir().map_err(bob_store_core::Error::from)?;
//! let path = dir.path().join("maps.bob");
//! let db = Db::create(&path)?;
//! let mut tx = db.begin_write()?;
//! {
//!     let mut users = tx.open_tree::<u64, String>("users")?;
//!     for id in 0..1000 {
//!         users.insert(&id, &format!("user {id}"))?;
//!     }
//!     users.remove(&7)?;
//! }
//! tx.commit(Durability::Durable)?;
//! db.close()?;
//!
//! let db = Db::open(&path)?;
//! let read = db.begin_read();
//! let users = read.open_tree::<u64, String>("users").expect("committed");
//! assert_eq!(users.len(), 999);
//! assert_eq!(users.get(&42)?.as_deref(), Some("user 42"));
//! let some: Vec<u64> = users.range(5..10)?.map(|e| e.map(|(k, _)| k)).collect::<Result<_, _>>()?;
//! assert_eq!(some, [5, 6, 8, 9]);
//! assert_eq!(users.last()?.map(|(k, _)| k), Some(999));
//! # Ok(())
//! # }
//! ```

mod catalog;
mod db;
#[cfg(all(test, loom))]
mod loom_model;
mod node;
mod tree;
mod wal;

#[cfg(feature = "testing")]
pub mod testing;

pub use bob_treap::{Postcard, TreapKey as Key, TreapValue as Value};
pub use catalog::MAX_NAME_LEN;
pub use db::{
    Db, DbOptions, DbReport, DbStats, DefaultStore, Durability, OsStoreFiles, Range, RangeBytes,
    ReadTree, ReadTxn, StoreFiles, StoreView, Tree, TreeMut, WriteTxn, copy_path_of, log_dir_of,
};
pub use node::{MAX_INLINE_VALUE_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use wal::{LogDir, LogFile, OsLogDir};

/// A borrowed form of a key of type `K` that encodes as `K` does (`str` for `String`, `[u8]`
/// for `Vec<u8>`, and `K` itself).
pub trait KeyLike<K> {
    /// Appends the encoding `K` would have.
    fn encode_key(&self, out: &mut Vec<u8>);

    /// The encoding `K` would have: borrowed where it is the bytes themselves (`str`,
    /// `[u8]`), so a lookup allocates nothing.
    fn encoded_key(&self) -> std::borrow::Cow<'_, [u8]> {
        let mut out = Vec::new();
        self.encode_key(&mut out);
        std::borrow::Cow::Owned(out)
    }
}

impl<K: Key> KeyLike<K> for K {
    fn encode_key(&self, out: &mut Vec<u8>) {
        self.encode(out);
    }
}

impl KeyLike<String> for str {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn encoded_key(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.as_bytes())
    }
}

impl KeyLike<Vec<u8>> for [u8] {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn encoded_key(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self)
    }
}

/// A borrowed form of a value of type `V` that encodes as `V` does (`str` for `String`, `[u8]`
/// for `Vec<u8>`, and `V` itself), so a write need not build a `V` to store bytes it has.
pub trait ValueLike<V> {
    /// The encoding `V` would have: borrowed where it is the bytes themselves.
    fn encoded_value(&self) -> Result<std::borrow::Cow<'_, [u8]>>;
}

impl<V: Value> ValueLike<V> for V {
    fn encoded_value(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(std::borrow::Cow::Owned(out))
    }
}

impl ValueLike<String> for str {
    fn encoded_value(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        Ok(std::borrow::Cow::Borrowed(self.as_bytes()))
    }
}

impl ValueLike<Vec<u8>> for [u8] {
    fn encoded_value(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        Ok(std::borrow::Cow::Borrowed(self))
    }
}

/// Everything that can go wrong in `bob-btree`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bob_store_core::Error),
    /// A node or the catalog is damaged, or nodes do not fit together as a tree.
    #[error("corrupt B-tree: {0}")]
    Corrupt(String),
    /// A structure is in a layout version this build does not read.
    #[error("{what} is in layout version {found}; this build reads version {read}")]
    UnsupportedVersion {
        /// What.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        read: u32,
    },
    /// The store's prime object holds something other than a B-tree catalog.
    #[error("the store's prime object is not a B-tree catalog (not a bob-btree database)")]
    NotADatabase,
    /// A key, value or name is longer than allowed.
    #[error("a {what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// What is too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tree by that name exists already.
    #[error("a tree named {0:?} exists already")]
    TreeExists(String),
    /// The write-ahead log's files failed.
    #[error("write-ahead log: {0}")]
    Log(#[from] std::io::Error),
    /// A file operation of the compaction that copies the trees into a new file failed.
    #[error("compacting into a new file: {0}")]
    Compaction(#[source] std::io::Error),
    /// A key or value did not encode or decode.
    #[error(transparent)]
    Codec(#[from] bob_treap::Error),
    /// Entries given as sorted were not in strictly increasing key order (nothing changed).
    #[error("entries for a bulk load are not in strictly increasing key order")]
    Unsorted,
    /// A bulk load into a tree that is not empty.
    #[error("a bulk load needs an empty tree")]
    NotEmpty,
    /// An operation of this write transaction failed partway; it can only be aborted.
    #[error("an operation of this write transaction failed partway; abort it")]
    TransactionFailed,
    /// The database keeps a write-ahead log and was opened without one (its last commits
    /// would be missing).
    #[error("this database keeps a write-ahead log: open it with its log")]
    LogRequired,
    /// A checkpoint failed earlier: the database refuses writes until it is reopened, which
    /// recovers the last durable commit.
    #[error(
        "an earlier checkpoint or log write failed; reopen the database to recover its last \
         durable commit"
    )]
    Failed,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
