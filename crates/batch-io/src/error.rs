//! The crate's one error type.

use std::io;
use std::sync::Arc;

/// Everything that can go wrong in batched I/O. Cloneable, so that one failed read can be
/// the result of every request it served.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed (or an injected fault).
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),

    /// Bytes read do not match the checksum the request carried: reported, never returned.
    #[error(
        "{len} bytes at {offset} are corrupt: checksum {computed:#018x}, expected {expected:#018x}"
    )]
    ChecksumMismatch {
        /// Where the request starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The checksum the request expected.
        expected: u64,
        /// The checksum of what was read.
        computed: u64,
    },

    /// A read asked for bytes past the end of the file (and of every buffered write).
    #[error("{len} bytes at {offset} pass the end of the file ({file_len} bytes)")]
    OutOfRange {
        /// Where the read starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file's length, buffered writes included.
        file_len: u64,
    },

    /// A flush failed: what the buffer held may or may not be on the disk, and a failed sync
    /// is never retried (the kernel may have dropped those writes), so the buffer refuses
    /// every later call (a [`crate::DiskCache`] whose index commit failed refuses every
    /// later commit, for the same reason). Reopen the file and check what it holds.
    #[error("a flush failed earlier ({0}); the buffer refuses every call")]
    Failed(String),

    /// The store underneath (a [`crate::BatchWriter`]'s, a [`crate::DiskCache`]'s) failed.
    #[error("store: {0}")]
    Store(Arc<bob_store_core::Error>),

    /// A [`crate::Sink`]'s write panicked (its message): that item failed, the batch went on.
    #[error("the sink panicked: {0}")]
    SinkPanicked(String),

    /// The disk cache's database (bob-btree) failed.
    #[error("database: {0}")]
    Db(Arc<bob_btree::Error>),

    /// The disk cache's index (a bob-treap) failed.
    #[error("index: {0}")]
    Index(Arc<bob_treap::Error>),

    /// Something read back is not what was written (a damaged index entry or blob): the
    /// error is returned, never the bytes.
    #[error("corrupt: {0}")]
    Corrupt(String),

    /// An argument is out of range (a write ending past 2^63, the largest file offset).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<bob_store_core::Error> for Error {
    fn from(e: bob_store_core::Error) -> Self {
        Error::Store(Arc::new(e))
    }
}

impl From<bob_btree::Error> for Error {
    fn from(e: bob_btree::Error) -> Self {
        match e {
            bob_btree::Error::Store(e) => Error::Store(Arc::new(e)),
            e => Error::Db(Arc::new(e)),
        }
    }
}

impl From<bob_treap::Error> for Error {
    fn from(e: bob_treap::Error) -> Self {
        match e {
            bob_treap::Error::Store(e) => Error::Store(Arc::new(e)),
            e => Error::Index(Arc::new(e)),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
