//! Persistent treaps over a bob store: a set (`PersistentTreap<K>`) and a map
//! (`PersistentTreap<K, V>`, also named [`PersistentPayloadTreap`]).
//!
//! Each node is a store object (`docs/format.md`, "Treap node"): key, value, priority, the
//! tree's priority seed, subtree size and child ids, versioned and checksummed. Nodes load
//! lazily on first touch: [`PersistentTreap::load`] reads only the root. A priority is the xxh3
//! of the key's encoding seeded with the tree's seed, drawn at random for each new tree
//! ([`PersistentTreap::with_seed`] fixes it): a key set has one shape per seed whatever the
//! order of inserts, and no choice of keys can make a tree a chain.
//! Invariants, checked by [`PersistentTreap::check`]: keys in binary-search-tree order,
//! priorities a max-heap, every subtree count exact, and a clean node heads a clean subtree.
//!
//! # Limits on what a file decides
//! A stored tree is input: every walk over it (lookups, iteration, insert, delete, `check`,
//! persist, flush) is a loop over an explicit path or stack, never a recursion, so even a
//! valid tree that is a chain costs time, not the stack. Loading a node checks its checksum,
//! version, lengths and counts (with checked arithmetic), that its count matches its parent's
//! record, that it carries its tree's seed, and that it does not outrank its parent; a node
//! that fails is [`Error::Corrupt`] (or [`Error::UnsupportedVersion`]), never a panic.
//!
//! # Persistence and crash safety
//! [`PersistentTreap::persist`] writes each changed node as a *new* object, children before
//! parents, and returns the new root's object; where to keep the root id is the caller's
//! choice (the store's prime object, say). The objects of replaced and deleted nodes are not
//! deleted then: the published root still needs them, and on a shared store (a
//! `ConcurrentStore`) another thread may commit at any moment. They are deleted by
//! [`PersistentTreap::delete_replaced`], once the caller has published the new root.
//! [`PersistentTreap::persist_with`] does the three steps in that order, the publishing done
//! by a closure, so a commit at any point finds a whole tree: the old root with the old
//! nodes, or the new root with the new ones. Until the commit that makes the new root
//! durable, and after any crash before it, the previously committed tree loads whole.
//! Replaced and deleted nodes' objects are all freed this way, so the object count stays flat
//! over insert/delete/persist rounds.
//!
//! [`PersistentTreap::batch_persist`] (and [`PersistentTreap::batch_persist_with`]) does the
//! same with as few writes as the store allows: changed nodes grouped by size, one contiguous
//! run (`allocate_run`) and one `write_batched_objs` per group, shorter runs when a full one
//! is not available, per-node writes as the last resort. Everything that can fail before a
//! write fails before any run is allocated, and a later failure deletes what was allocated.
//!
//! # Memory
//! Nodes remember the operation that last touched them. [`PersistentTreap::flush`] unloads
//! the least recently used clean (persisted, unchanged) nodes back to stored links until at
//! most a budget of nodes stays in memory; [`PersistentTreap::set_memory_budget`] does that
//! after every operation, and [`SharedTreap`] does it from a background thread while the
//! treap is shared behind a lock. Changed nodes stay until persisted.
//!
//! [`PersistentTreap::iter_from`] walks in order holding only the last key, so it stays
//! correct while nodes are flushed under it; [`PersistentTreap::walk_mut`] changes values in
//! place. [`Treap`] is the same structure without a store, in memory only.
//! [`PersistentTreap::get_cached`] and [`PersistentTreap::range_cached`] take `&self` and
//! answer from memory only, so readers can share a hot treap behind a reader lock.
//!
//! Payloads are any [`TreapValue`]: integers, bytes, strings, or any serde type wrapped in
//! [`Postcard`].
//!
//! # Example
//! ```
//! use bob_store_core::{BaseStore, ObjectId, PRIME_OBJECT_ID, PrimeStorer, StoreOptions, Storer};
//! use bob_treap::PersistentTreap;
//!
//! /// Keeps the root's id in the store's prime object (0: empty).
//! fn publish(store: &mut BaseStore, root: Option<ObjectId>) -> bob_treap::Result<()> {
//!     store.prime_object(8)?;
//!     store.write_bytes_to_obj(PRIME_OBJECT_ID, &root.map_or(0, |r| r.0).to_le_bytes())?;
//!     Ok(())
//! }
//!
//! # fn main() -> bob_treap::Result<()> {
//! let dir = tempfile::tempdir().map_err(bob_store_core::Error::from)?;
//! let path = dir.path().join("tree.bob");
//! let mut store = BaseStore::create(&path, StoreOptions::default())?;
//! let mut tree: PersistentTreap<u64, String> = PersistentTreap::new();
//! for i in 0..100 {
//!     tree.insert(&store, i, format!("value {i}"))?;
//! }
//! tree.persist_with(&mut store, publish)?;
//! for i in 0..10 {
//!     tree.delete(&store, &i)?;
//! }
//! // Publishes the new root first, then deletes the ten nodes' objects.
//! tree.batch_persist_with(&mut store, publish)?;
//! store.close()?;
//!
//! let store = BaseStore::open(&path, StoreOptions::default())?;
//! let root = store.read_bytes_from_obj(PRIME_OBJECT_ID)?;
//! let root = ObjectId(u64::from_le_bytes(root[..8].try_into().expect("8 bytes")));
//! let mut tree: PersistentTreap<u64, String> = PersistentTreap::load(&store, root)?;
//! assert_eq!(tree.len(), 90);
//! assert_eq!(tree.get(&store, &42)?.as_deref(), Some("value 42"));
//! assert_eq!(tree.range(&store, 5..13)?.len(), 3);
//! # Ok(())
//! # }
//! ```

mod background;
mod codec;
mod node;
mod treap;

pub use background::{SharedTreap, TreapGuard};
pub use codec::{Postcard, TreapKey, TreapValue};
pub use node::MAX_FIELD_BYTES;
pub use treap::{BatchReport, Iter, PersistentTreap, Treap};

/// A treap map: keys with payloads.
pub type PersistentPayloadTreap<K, V> = PersistentTreap<K, V>;

/// Everything that can go wrong in `bob-treap`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bob_store_core::Error),
    /// A node's bytes are not a valid node, or nodes do not fit together as a treap.
    #[error("corrupt treap: {0}")]
    Corrupt(String),
    /// A node is in a node format version this build does not read.
    #[error(
        "treap node {id} is in node format version {found}, and this build reads version \
         {read} only; rebuild a version-1 tree by inserting its entries into a new one"
    )]
    UnsupportedVersion {
        /// The node's object.
        id: bob_store_core::ObjectId,
        /// The version it has.
        found: u8,
        /// The version this build reads.
        read: u8,
    },
    /// A value could not be encoded (a serde type postcard cannot represent).
    #[error("cannot encode a value: {0}")]
    Encode(String),
    /// Stored bytes do not decode as the key or value type they were read as: the tree was
    /// written with another type (nodes are checksummed, so the bytes are the ones written).
    #[error(
        "stored bytes do not decode as a {what}: {detail}; were they written with another key \
         or value type?"
    )]
    TypeMismatch {
        /// The type they were read as.
        what: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// A key or value is larger than a node holds.
    #[error("a key or value of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A treap invariant does not hold (a bug; reported by `check`).
    #[error("treap invariant violated: {0}")]
    Invariant(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
