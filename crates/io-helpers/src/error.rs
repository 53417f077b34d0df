//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `bob-io-helpers`.
///
/// `Io` and `File` carry errors from the operating system (or an injected fault); `Locked`
/// refuses a second owner of a file; the other variants are refusals of bad input or reports of
/// corrupt bytes, decided before any write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend reported an I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// An operation on a named file failed.
    #[error("could not {action} {}: {source}", path.display())]
    File {
        /// What was being done, as a verb phrase ("create", "sync the directory of").
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file is locked by another handle, in this process or another: bob files are opened
    /// with an exclusive advisory lock (`flock`), held until the owning handle is dropped.
    #[error(
        "{} is open in another handle or process; a bob file has one owner at a time",
        path.display()
    )]
    Locked {
        /// The file that is already open.
        path: PathBuf,
    },

    /// Two sections of one batched write cover some of the same bytes.
    #[error(
        "sections overlap: the section at offset {first_offset} ({first_len} bytes) \
         overlaps the section at offset {second_offset}"
    )]
    OverlappingSections {
        /// Offset of the earlier section (by offset).
        first_offset: u64,
        /// Length of the earlier section in bytes.
        first_len: u64,
        /// Offset of the later section, which starts before the earlier one ends.
        second_offset: u64,
    },

    /// An `offset + len` does not fit in a `u64`.
    #[error("a range of {len} bytes at offset {offset} runs past the largest file offset")]
    OffsetOverflow {
        /// Start of the range.
        offset: u64,
        /// Length of the range in bytes.
        len: u64,
    },

    /// A write through a `SectionWriter` would pass the end of its section.
    #[error(
        "a write of {len} bytes at position {position} passes the end of a \
         {section_len}-byte section"
    )]
    SectionOverflow {
        /// Position inside the section where the write would start.
        position: u64,
        /// Bytes the write asked for.
        len: u64,
        /// The section's length.
        section_len: u64,
    },

    /// A frame is cut short: fewer bytes are available than its header announces.
    #[error("frame truncated: it needs {needed} bytes but only {available} are available")]
    FrameTruncated {
        /// Bytes the frame needs (header, or header plus announced payload).
        needed: u64,
        /// Bytes that were available.
        available: u64,
    },

    /// A frame's payload is larger than the frame format allows.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Payload length in bytes.
        len: u64,
        /// The largest payload a frame may carry.
        max: u64,
    },

    /// A frame's stored checksum does not match its contents.
    #[error("frame checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// The checksum read from the frame header.
        stored: u64,
        /// The checksum computed over the bytes read.
        computed: u64,
    },
}

impl Error {
    /// Turns this error into an `io::Error`, for `Read`/`Write` implementations.
    ///
    /// An `Io` error is returned as it was; anything else becomes `InvalidInput` (refused input)
    /// or `InvalidData` (corrupt bytes) carrying this error as its source, and `Locked` becomes
    /// `ResourceBusy`.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Io(e) => e,
            Error::File { source, .. } => source,
            e @ Error::Locked { .. } => io::Error::new(io::ErrorKind::ResourceBusy, e),
            e @ (Error::OverlappingSections { .. }
            | Error::OffsetOverflow { .. }
            | Error::SectionOverflow { .. }
            | Error::FrameTooLarge { .. }) => io::Error::new(io::ErrorKind::InvalidInput, e),
            e @ (Error::FrameTruncated { .. } | Error::ChecksumMismatch { .. }) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
