//! bob's single-file object store: the [`Storer`] traits, the generic [`Store`], and
//! [`BaseStore`] (the store over `BasicAllocator`).
//!
//! An [`ObjectId`] is a stable handle to a blob of bytes (not a file offset: objects move
//! under copy-on-write and compaction). Objects are written and read whole
//! ([`Storer::write_new_obj_from_bytes`], [`Storer::read_bytes_from_obj`]) or streamed through
//! guards ([`Storer::late_write_new_obj`], [`Storer::write_to_obj`], [`Storer::late_read_obj`])
//! that release what they hold when dropped. [`Storer::replace_obj`] gives an object new
//! contents of any length under the same id (a tree can rewrite one node without touching
//! its parent). Optional capabilities are separate traits a
//! wrapper can forward: [`ObjectInfoStorer`], [`BatchStorer`] (`allocate_run`,
//! `write_batched_objs`) and [`PrimeStorer`] (the object with the fixed id 0 where upper layers
//! keep their roots).
//!
//! # Guarantees
//! - **Atomic, durable commits.** [`Storer::commit`] is the durability point: when it returns
//!   `Ok`, everything written or deleted before it survives a process crash or a power loss
//!   (on a device that honours `fdatasync`). A crash at any moment leaves a file that opens to
//!   exactly one commit, never older than the last acknowledged one. `close` commits.
//!   Dropping a store without `close` does no I/O and loses what was done since the last
//!   commit.
//! - **Committed bytes are never overwritten**, at the granularity the medium damages (a
//!   4 KiB page): until a newer commit that no longer needs them is durable, no page holding
//!   them is written. Rewrites of committed objects are copy-on-write, freed space is reused
//!   only after the commit that freed it, and space beside committed bytes only once they are
//!   gone.
//! - **Every read is checked**: each object's xxh3-64 checksum is in the object table, whose
//!   pages are checksummed by the root, whose checksum is in the header slot. A mismatch is
//!   [`Error::ChecksumMismatch`] or [`Error::Corrupt`], never data.
//! - **Open is strict**: a torn header slot is recovery; a damaged newest commit is an error
//!   ([`Error::NewestCommitDamaged`]), never a silent rollback ([`Store::open_previous_commit`]
//!   opens the older one read-only). A file has one owner: a second open is
//!   [`Error::Locked`].
//! - **Open is lazy**: it reads the header, the table's root and the journal, so it takes the
//!   same time at any size; a table page is read and checked with the first object on it, and
//!   the rest of the checks (every page, the extents, the allocator) run at the first write or
//!   [`Store::complete_open`] ([`StoreOptions::load_on_open`] runs them at open). Damage is
//!   reported as a full open would have, and no object is written before all of it passed.
//! - **No leaks, no double allocation**: before the first write, free space is derived from
//!   what the commit reaches.
//! - **Failures latch**: after an I/O error in a write path ([`Error::latches`]), the store
//!   refuses writes ([`Error::Failed`]) until reopened, which recovers the last commit.
//! - **Deletes commit at the size limit**: objects leave room for the next commit's metadata.
//!
//! Streaming writes follow one protocol, reserve → write → publish ([`ObjectWriter`]), which
//! `bob-store-concurrent` reuses through [`Access`].
//!
//! A commit appends one checksummed record of what changed to a journal and costs one
//! `fdatasync`; when the journal is full (and on [`Store::checkpoint`] and `close`) a
//! checkpoint writes the changed table pages, a root and a header slot with two. At open the
//! journal is replayed over the last checkpoint. The format is in `docs/format.md`, "Object
//! store".
//!
//! # Example
//! ```
//! use std::io::{Read, Write};
//! use bob_store_core::{BaseStore, ObjectWrite, StoreOptions, Storer};
//!
//! # fn main() -> bob_store_core::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("blobs.bob");
//! let mut store = BaseStore::create(&path, StoreOptions::default())?;
//! let greeting = store.write_new_obj_from_bytes(b"hello")?;
//! let (streamed, mut writer) = store.late_write_new_obj(6)?;
//! writer.write_all(b"world!")?;
//! writer.finish()?;
//! store.close()?;
//!
//! let store = BaseStore::open(&path, StoreOptions::default())?;
//! assert_eq!(store.read_bytes_from_obj(greeting)?, b"hello");
//! let mut text = String::new();
//! store.late_read_obj(streamed)?.read_to_string(&mut text)?;
//! assert_eq!(text, "world!");
//! assert!(store.verify()?.is_clean());
//! # Ok(())
//! # }
//! ```

mod error;
mod firstfit;
mod format;
mod guard;
mod journal;
mod objects;
mod pageset;
mod space;
mod split;
mod store;
mod table;

use std::fmt;
use std::io::{Read, Write};

pub use bob_io_helpers::{FileBackend, OsFile};
pub use error::{Error, Part, Result};
pub use format::{FORMAT_VERSION, HEADER_REGION, MAX_OBJECTS, OLDEST_READ_VERSION};
pub use guard::{Access, ObjectReader, ObjectWriter, ReadAt};
pub use objects::Direct;
pub use space::SpaceAllocator;
pub use split::{Located, SplitStore};
pub use store::{CompactReport, Store, StoreOptions, VerifyReport};

/// The store over `BasicAllocator`: extents of exactly the object's size, best reuse of holes.
pub type BaseStore<B = OsFile> = Store<bob_alloc::BasicAllocator, B>;

/// A stable handle to one object.
///
/// The low 32 bits are the object's *index*, its place in the object table; the high 32 bits
/// its *tag*, the low 32 bits of the generation (commit number) in which the store handed the
/// id out. An index is reused after the commit that deletes its object, always with a newer
/// tag, so an id kept past its object's deletion is refused with [`Error::StaleId`] instead
/// of naming whatever object took its place. (Tags wrap after 2^32 commits: an id kept across
/// that many commits and an index reuse at exactly that distance would be accepted.)
///
/// The `u64` is what to persist (`id.0`, `ObjectId(raw)`); no id but 0
/// ([`PRIME_OBJECT_ID`]) can be guessed, so ids are kept, not computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub u64);

impl ObjectId {
    /// The id of index `index` (below 2^32) with tag `tag`.
    #[must_use]
    pub const fn from_parts(index: u64, tag: u32) -> Self {
        debug_assert!(index < MAX_OBJECTS);
        Self(index | (tag as u64) << 32)
    }

    /// The object's place in the table: ids of one index name the same slot, one at a time.
    #[must_use]
    pub const fn index(self) -> u64 {
        self.0 & 0xffff_ffff
    }

    /// The low 32 bits of the generation that handed the id out.
    #[must_use]
    pub const fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tag() == 0 {
            write!(f, "#{}", self.index())
        } else {
            write!(f, "#{}.{}", self.index(), self.tag())
        }
    }
}

/// The id of the prime object ([`PrimeStorer::prime_object`]).
pub const PRIME_OBJECT_ID: ObjectId = ObjectId(0);

/// An object's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Bytes a read returns.
    pub len: u64,
    /// Bytes of file space it holds (a whole slot in a size-classed store).
    pub allocated_len: u64,
}

/// A streaming writer into one object.
pub trait ObjectWrite: Write {
    /// Completes the object (bytes not written are zeros for a new object, or keep their old
    /// values for a rewrite) and records it. Dropping the writer does the same, but cannot
    /// report an error (the store then refuses writes until reopened): a writer that should
    /// not complete (its source failed) is given up with [`abort`](Self::abort).
    fn finish(self) -> Result<()>;

    /// Gives up: a new object is not created (its id and space are given back), a rewritten
    /// or replaced object keeps its old bytes. What was written is discarded.
    fn abort(self) -> Result<()>;

    /// Writes all of `bytes` and finishes; if the write fails, gives up (as
    /// [`abort`](Self::abort)) and returns the write's error: nothing half-written is left.
    fn write_whole(mut self, bytes: &[u8]) -> Result<()>
    where
        Self: Sized,
    {
        match self.write_all(bytes) {
            Ok(()) => self.finish(),
            Err(e) => {
                let _ = self.abort();
                Err(Error::from_io(e))
            }
        }
    }

    /// Bytes written so far.
    fn position(&self) -> u64;

    /// The object's length.
    fn len(&self) -> u64;

    /// Whether the object is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An object store: object lifecycle, streaming reads and writes, and commits.
pub trait Storer {
    /// The guard returned by [`late_read_obj`](Self::late_read_obj).
    type Reader<'a>: Read
    where
        Self: 'a;
    /// The guard returned by [`late_write_new_obj`](Self::late_write_new_obj) and
    /// [`write_to_obj`](Self::write_to_obj).
    type Writer<'a>: ObjectWrite
    where
        Self: 'a;

    /// A new object of `size` zero bytes.
    fn new_obj(&mut self, size: u64) -> Result<ObjectId>;

    /// Deletes an object; its space is reused after the next commit.
    fn delete_obj(&mut self, id: ObjectId) -> Result<()>;

    /// A reader over the object's bytes; the checksum is checked by the final read.
    fn late_read_obj(&self, id: ObjectId) -> Result<Self::Reader<'_>>;

    /// A new object of `size` bytes and a writer filling it.
    fn late_write_new_obj(&mut self, size: u64) -> Result<(ObjectId, Self::Writer<'_>)>;

    /// A writer over an existing object, from its first byte; writing past its end fails.
    fn write_to_obj(&mut self, id: ObjectId) -> Result<Self::Writer<'_>>;

    /// A writer that replaces object `id`'s contents with `size` new bytes (any length, longer
    /// or shorter than before): the id keeps its meaning, the object reads as the new bytes
    /// once the writer finishes (bytes not written are zeros), and the old bytes stay intact
    /// until then (and, for a committed object, until the next commit).
    fn late_replace_obj(&mut self, id: ObjectId, size: u64) -> Result<Self::Writer<'_>>;

    /// Replaces object `id`'s contents with `bytes`, of any length; see
    /// [`late_replace_obj`](Self::late_replace_obj).
    fn replace_obj(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        self.late_replace_obj(id, bytes.len() as u64)?.write_whole(bytes)
    }

    /// Makes everything done so far durable, atomically.
    fn commit(&mut self) -> Result<()>;

    /// Commits, and folds what a journaling store keeps in its journal into its main
    /// structures, so that the next open has nothing to replay (`close` does this). For a
    /// store without a journal, a commit.
    fn checkpoint(&mut self) -> Result<()> {
        self.commit()
    }

    /// Commits and closes the store.
    fn close(self) -> Result<()>
    where
        Self: Sized;

    /// The whole object.
    fn read_bytes_from_obj(&self, id: ObjectId) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.late_read_obj(id)?.read_to_end(&mut bytes).map_err(Error::from_io)?;
        Ok(bytes)
    }

    /// Reads the whole object into `buf` (replacing its contents), so a caller reading many
    /// objects can reuse one buffer.
    fn read_obj_into(&self, id: ObjectId, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        self.late_read_obj(id)?.read_to_end(buf).map_err(Error::from_io)?;
        Ok(())
    }

    /// A new object holding `bytes`.
    fn write_new_obj_from_bytes(&mut self, bytes: &[u8]) -> Result<ObjectId> {
        let (id, writer) = self.late_write_new_obj(bytes.len() as u64)?;
        writer.write_whole(bytes)?;
        Ok(id)
    }

    /// Replaces the first `bytes.len()` bytes of an object.
    fn write_bytes_to_obj(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        self.write_to_obj(id)?.write_whole(bytes)
    }
}

/// Stores that report an object's sizes.
pub trait ObjectInfoStorer: Storer {
    /// The object's logical and allocated lengths.
    fn object_info(&self, id: ObjectId) -> Result<ObjectInfo>;
}

/// Stores that lay objects end to end and write them with one positioned write.
pub trait BatchStorer: Storer {
    /// `count` new, empty objects whose space (`size` bytes each) is contiguous, in id order
    /// of the returned vector.
    fn allocate_run(&mut self, count: u64, size: u64) -> Result<Vec<ObjectId>>;

    /// `count` new, empty objects of `size` bytes as one or more runs (each contiguous, ids
    /// in order), reusing free space that holds at least `min_run` of them before growing
    /// the file. One run per `write_batched_objs` keeps each run one write.
    fn allocate_runs(&mut self, count: u64, size: u64, min_run: u64) -> Result<Vec<Vec<ObjectId>>> {
        let _ = min_run;
        Ok(vec![self.allocate_run(count, size)?])
    }

    /// Writes each object's bytes (at most its allocated length), objects made since the
    /// last commit only, with one positioned write per run of adjacent objects.
    fn write_batched_objs(&mut self, objects: &[(ObjectId, &[u8])]) -> Result<()>;
}

/// Stores with a prime object: id 0, reserved, where upper layers keep their roots.
pub trait PrimeStorer: Storer {
    /// The prime object's id, creating it with `size` zero bytes if it does not exist.
    fn prime_object(&mut self, size: u64) -> Result<ObjectId>;
}
