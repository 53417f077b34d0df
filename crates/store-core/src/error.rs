//! The crate's one error type.

use std::io;

use crate::ObjectId;

/// Everything that can go wrong in a bob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend reported an I/O error (or an injected fault). After one in a write path the
    /// store refuses writes until reopened.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// A lower-level helper failed.
    #[error(transparent)]
    Helpers(#[from] bob_io_helpers::Error),

    /// The allocator refused a request (out of space, a run too long, a bad size).
    #[error("allocation failed: {0}")]
    Alloc(#[from] bob_alloc::Error),

    /// No object with this id exists (never created, or deleted).
    #[error("object {0} not found")]
    NotFound(ObjectId),

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

    /// The file's metadata is damaged or inconsistent.
    #[error("corrupt store: {0}")]
    Corrupt(String),

    /// The file is not a bob store (no header slot has bob's magic).
    #[error("not a bob store: {0}")]
    NotAStore(String),

    /// The file was written by a format version this build cannot read.
    #[error("store format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build supports.
        supported: u16,
    },

    /// The file holds a store of another kind (a `MultiStore` opened as a `BaseStore`, say).
    #[error("the file holds a store of kind {found}, not the expected kind {expected}")]
    WrongKind {
        /// The kind in the file.
        found: u16,
        /// The kind asked for.
        expected: u16,
    },

    /// A caller's request cannot be met as asked.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An earlier I/O error left the in-memory state untrusted: the store refuses writes
    /// until it is reopened, which recovers the last commit.
    #[error(
        "the store refuses writes after an earlier failure ({0}); reopen it to recover the last commit"
    )]
    Failed(String),

    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl Error {
    /// Turns this error into an `io::Error` for `Read`/`Write` implementations; [`Error::from_io`]
    /// gets it back.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Io(e) => e,
            e @ (Error::ChecksumMismatch { .. } | Error::Corrupt(_)) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            e => io::Error::other(e),
        }
    }

    /// The store error inside an `io::Error` made by [`Error::into_io`], or `Io` otherwise.
    pub fn from_io(error: io::Error) -> Self {
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = error.into_inner() {
                if let Ok(store_error) = inner.downcast::<Error>() {
                    return *store_error;
                }
            }
            return Error::Corrupt("an error was lost in conversion".into());
        }
        Error::Io(error)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
