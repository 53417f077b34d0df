//! The crate's one error type, and the one rule for which errors latch the store.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::ObjectId;

/// Which structure of a store file a [`Error::Corrupt`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// The header slots (the first two 4 KiB pages).
    HeaderSlots,
    /// The table root a header slot names.
    Root,
    /// One page of the object table, by index.
    TablePage(u64),
    /// The free-space map derived from the table (extents that overlap or do not fit).
    Space,
    /// The journal of commits since the last checkpoint.
    Journal,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::HeaderSlots => write!(f, "the header slots"),
            Part::Root => write!(f, "the table root"),
            Part::TablePage(index) => write!(f, "table page {index}"),
            Part::Space => write!(f, "the space map"),
            Part::Journal => write!(f, "the journal"),
        }
    }
}

/// " at offset N", or nothing.
fn at(offset: &Option<u64>) -> String {
    offset.map(|o| format!(" at offset {o}")).unwrap_or_default()
}

/// Everything that can go wrong in a bob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend reported an I/O error (or an injected fault). After one in a write path the
    /// store refuses writes until reopened.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// Another handle or process has the file open: a store file has one owner at a time.
    #[error("{} is open in another handle or process; a store file has one owner at a time", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },

    /// No object with this id exists (never created, or deleted).
    #[error("object {0} not found")]
    NotFound(ObjectId),

    /// A call on a shared store would wait for an object lock while the calling thread holds
    /// a lock that the other holder may in turn be waiting for (a writer guard kept open while
    /// opening a second guard, a store call from inside `update_obj`'s `change`): refused
    /// instead of risking a deadlock. Nothing was done; drop the guards this thread holds,
    /// then try again.
    #[error("would deadlock: {0}")]
    WouldDeadlock(String),

    /// The id's object was deleted and its index now holds a newer object, `current`: the id
    /// was kept past its object's deletion (a stale root, a stale reference).
    #[error(
        "object {id} is gone: it was deleted, and its place now holds object {current} (the id is stale)"
    )]
    StaleId {
        /// The id asked for.
        id: ObjectId,
        /// The id of the object that holds its index now.
        current: ObjectId,
    },

    /// A write would pass the end of the object; nothing was written.
    #[error(
        "write of {len} bytes at position {position} passes the end of object {id} ({object_len} bytes)"
    )]
    WriteOutOfBounds {
        /// The object.
        id: ObjectId,
        /// Where the write would start.
        position: u64,
        /// Bytes it asked for.
        len: u64,
        /// The object's length.
        object_len: u64,
    },

    /// An object's bytes do not match the checksum its table entry holds.
    #[error("object {id} is corrupt: checksum {computed:#018x}, expected {stored:#018x}")]
    ChecksumMismatch {
        /// The object.
        id: ObjectId,
        /// The checksum in the object table.
        stored: u64,
        /// The checksum of the bytes read.
        computed: u64,
    },

    /// The file's metadata is damaged or inconsistent: what, where, and why.
    #[error("corrupt store: {part}{}: {reason}", at(offset))]
    Corrupt {
        /// The damaged structure.
        part: Part,
        /// Its offset in the file, where known.
        offset: Option<u64>,
        /// What check failed, as a sentence fragment.
        reason: String,
    },

    /// The newest commit could not be loaded, and the older header slot is intact: the store
    /// does not fall back silently (the older commit's space may already be reused). Open it
    /// read-only with `Store::open_previous_commit` to look at it.
    #[error(
        "the newest commit (generation {generation}) is damaged: {source}; an older commit \
         exists, readable with open_previous_commit"
    )]
    NewestCommitDamaged {
        /// The newest commit's generation.
        generation: u64,
        /// Why it could not be loaded.
        source: Box<Error>,
    },

    /// The options do not fit the file (a size limit below what the file already uses).
    #[error("the options do not fit this file: {0}")]
    OptionsMismatch(String),

    /// The file is not a bob store (no header slot has bob's magic).
    #[error("not a bob store: {0}")]
    NotAStore(String),

    /// The file was written by a format version this build cannot read.
    #[error(
        "store format version {found} is not supported: this build reads versions {} to \
         {supported} (a file of another version must be copied out with the build that wrote \
         it)",
        crate::OLDEST_READ_VERSION
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build supports.
        supported: u16,
    },

    /// The file holds a store of another kind (a `MultiStore` opened as a `BaseStore`, say).
    #[error(
        "the file holds a {} (store kind {found}), not a {} (kind {expected}): open it as a {0}",
        kind_name(*found),
        kind_name(*expected)
    )]
    WrongKind {
        /// The kind in the file.
        found: u16,
        /// The kind asked for.
        expected: u16,
    },

    /// The store's size limit leaves no room for `len` bytes.
    #[error("no space for {len} bytes within the store's limit of {limit} bytes")]
    OutOfSpace {
        /// Bytes asked for.
        len: u64,
        /// The size limit.
        limit: u64,
    },

    /// No free space holds `count` extents of `len` bytes end to end
    /// ([`crate::BatchStorer::allocate_run`]); shorter runs may still fit.
    #[error("no run of {count} contiguous {len}-byte objects; the longest available is {longest}")]
    NoRun {
        /// Objects asked for.
        count: u64,
        /// Bytes each.
        len: u64,
        /// The longest run that would fit.
        longest: u64,
    },

    /// The allocator refused a request for another reason (a bad size).
    #[error("allocation failed: {0}")]
    Alloc(bob_alloc::Error),

    /// A caller's request cannot be met as asked.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An earlier failure left the in-memory state untrusted: the store refuses writes until
    /// it is reopened, which recovers the last commit.
    #[error(
        "the store refuses writes after an earlier failure ({0}); reopen it to recover the last commit"
    )]
    Failed(String),

    /// The store was opened read-only (`Store::open_read_only`, or an older commit: see
    /// `Store::open_previous_commit`).
    #[error("the store is open read-only")]
    ReadOnly,

    /// The store was closed.
    #[error("the store is closed")]
    Closed,

    /// A batched write named an object that a commit made durable after it was allocated
    /// (another thread's commit, in a shared store): batched writes fill only objects made
    /// since the last commit. Nothing was written; write the objects one by one instead.
    #[error(
        "object {0} was committed before the batched write that was to fill it; batched writes \
         fill objects made since the last commit"
    )]
    CommittedBeforeFilled(ObjectId),
}

impl Error {
    /// A [`Error::Corrupt`] about `part`.
    pub(crate) fn corrupt(part: Part, offset: Option<u64>, reason: impl Into<String>) -> Self {
        Error::Corrupt { part, offset, reason: reason.into() }
    }

    /// Whether this error, met in a step that changes the store, leaves its memory untrusted,
    /// so the store must refuse writes until reopened: I/O errors (a failed write or sync may
    /// have left anything on disk, and a failed sync is never retried) and inconsistencies
    /// found in the store's own state. Refusals of a request (bad arguments, out of space,
    /// not found) and a damaged object's checksum do not latch: nothing was changed.
    pub fn latches(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Corrupt { .. } | Error::Failed(_))
    }

    /// Turns this error into an `io::Error` for `Read`/`Write` implementations; [`Error::from_io`]
    /// gets it back.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Io(e) => e,
            e @ (Error::ChecksumMismatch { .. } | Error::Corrupt { .. }) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            e => io::Error::other(e),
        }
    }

    /// The store error inside an `io::Error` made by [`Error::into_io`], or `Io` otherwise.
    pub fn from_io(error: io::Error) -> Self {
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            match error.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(store_error)) => return *store_error,
                _ => return Error::Io(io::Error::other("an error was lost in conversion")),
            }
        }
        Error::Io(error)
    }
}

impl From<bob_io_helpers::Error> for Error {
    /// I/O errors arrive as [`Error::Io`] whichever layer saw them; a lock held elsewhere is
    /// [`Error::Locked`]; the helpers' refusals of input are [`Error::InvalidArgument`].
    fn from(error: bob_io_helpers::Error) -> Self {
        use bob_io_helpers::Error as H;
        match error {
            H::Io(e) => Error::Io(e),
            H::Locked { path } => Error::Locked { path },
            H::File { action, path, source } => Error::Io(io::Error::new(
                source.kind(),
                format!("could not {action} {}: {source}", path.display()),
            )),
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}

impl From<bob_alloc::Error> for Error {
    fn from(error: bob_alloc::Error) -> Self {
        match error {
            bob_alloc::Error::OutOfSpace { len, limit, .. } => Error::OutOfSpace { len, limit },
            bob_alloc::Error::NoRun { count, len, longest } => Error::NoRun { count, len, longest },
            other => Error::Alloc(other),
        }
    }
}

/// The store type a file's kind number stands for (`SpaceAllocator::KIND`).
fn kind_name(kind: u16) -> &'static str {
    match kind {
        1 => "BaseStore",
        2 => "MultiStore",
        _ => "store of an unknown kind",
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
