//! The crate's one error type.

use crate::Extent;

/// Everything that can go wrong in `bob-alloc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request for zero bytes.
    #[error("cannot allocate 0 bytes")]
    ZeroLength,

    /// A request larger than this allocator serves (a slot, or a run's total size).
    #[error("a request for {len} bytes exceeds this allocator's maximum of {max} bytes")]
    TooLarge {
        /// Bytes requested.
        len: u64,
        /// The most this allocator hands out in one extent.
        max: u64,
    },

    /// No free space fits and the file may not grow past its limit.
    #[error("no space for {len} bytes: the file end {file_end} may not pass {limit}")]
    OutOfSpace {
        /// Bytes requested.
        len: u64,
        /// Where the file ends now.
        file_end: u64,
        /// The largest file end allowed.
        limit: u64,
    },

    /// No run of `count` contiguous extents is available; `longest` could be had.
    #[error("no run of {count} contiguous {len}-byte extents; the longest available is {longest}")]
    NoRun {
        /// Extents requested.
        count: u64,
        /// Bytes per extent.
        len: u64,
        /// The longest run this allocator could give now.
        longest: u64,
    },

    /// A free of an extent that is not live exactly as given (double free, wrong length,
    /// or never allocated).
    #[error("extent at offset {} ({} bytes) is not allocated", .0.offset, .0.len)]
    NotAllocated(Extent),

    /// Extents given to `rebuild_from` overlap or fall outside the allocator's range.
    #[error("invalid live extent at offset {} ({} bytes): {reason}", extent.offset, extent.len)]
    InvalidExtent {
        /// The offending extent.
        extent: Extent,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// An invalid configuration (slot size, slot count, start past limit, size classes).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Encoded state ends before its structure does.
    #[error("encoded allocator state truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },

    /// Encoded state's checksum does not match its bytes.
    #[error(
        "encoded allocator state checksum mismatch: stored {stored:#018x}, computed {computed:#018x}"
    )]
    ChecksumMismatch {
        /// Checksum stored in the trailer.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },

    /// Encoded state has the right checksum but describes an impossible allocator.
    #[error("corrupt allocator state: {0}")]
    Corrupt(String),

    /// An allocator's in-memory invariants do not hold (a bug; reported by `verify`).
    #[error("allocator invariant violated: {0}")]
    Invariant(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
