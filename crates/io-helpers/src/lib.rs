//! Positioned file I/O and the small, shared mechanisms every bob layer builds on.
//!
//! - [`FileBackend`]: positioned reads and writes on one file, with [`OsFile`] for real files
//!   and, behind the `testing` feature, [`testing::SimDisk`], an in-memory disk that injects
//!   faults and produces process-crash and power-loss images.
//! - [`DiskTokenManager`]: a bound on how many threads do disk I/O at once (0 = unlimited).
//! - [`SectionReader`] / [`SectionWriter`]: `Read`/`Write`/`Seek` over one region of a file.
//! - [`write_batched_sections`] and [`write_zeros`]: few system calls for many writes.
//! - [`checksum`], [`StreamingChecksum`], [`encode_frame`] / [`decode_frame`]: xxh3-64 and the
//!   checksummed frame used by bob's on-disk formats (`docs/format.md`).
//! - [`create_new_durable`] and [`sync_dir`]: file creation that survives a power loss.
//! - [`sync`]: the one module that picks `parking_lot`/`std` or loom primitives.
//! - [`prefetch`]: a cache-line hint for runs of independent accesses to cold memory.
//!
//! # Invariants
//! - A [`FileBackend`] read or write is whole or an error; short transfers and `Interrupted`
//!   are retried inside the backend, never seen by callers.
//! - Batched writes never fill gaps and refuse overlapping sections before writing anything;
//!   section writers refuse, unwritten, any write that would pass their region's end.
//! - Frame decoding bounds every length by the bytes available, never allocates, and
//!   reports truncation and checksum mismatches as errors, never as data.
//! - A thread never waits for a disk token while it holds one, so tokens cannot deadlock.
//! - A file has one writer: [`OsFile::open`] and [`OsFile::create_new`] take an exclusive
//!   `flock`, and a second opener gets [`Error::Locked`] until the owner is dropped; handles
//!   of [`OsFile::open_read_only`] share a shared `flock` among themselves, never with a
//!   writer.
//!
//! # Limits
//! Unix only (`pread`/`pwrite`/`pwritev`). A frame payload is at most `u32::MAX` bytes.
//! [`FileBackend::sync_data`] is only as durable as the device's honouring of `fdatasync`.
//!
//! # Example
//! ```
//! use bob_io_helpers::{FileBackend, OsFile, Section, decode_frame, encode_frame};
//! use bob_io_helpers::write_batched_sections;
//!
//! # fn main() -> bob_io_helpers::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let file = OsFile::create_new(&dir.path().join("blobs"))?;
//!
//! // Two frames laid end to end, written with one positioned write.
//! let (mut first, mut second) = (Vec::new(), Vec::new());
//! encode_frame(b"hello", &mut first)?;
//! encode_frame(b"world", &mut second)?;
//! let report = write_batched_sections(
//!     &file,
//!     &[Section::new(first.len() as u64, &second), Section::new(0, &first)],
//! )?;
//! assert_eq!(report.runs, 1);
//! file.sync_data()?;
//!
//! let mut bytes = vec![0; first.len() + second.len()];
//! file.read_at(&mut bytes, 0)?;
//! let (hello, rest) = decode_frame(&bytes)?;
//! let (world, _) = decode_frame(rest)?;
//! assert_eq!((hello, world), (&b"hello"[..], &b"world"[..]));
//! # Ok(())
//! # }
//! ```

mod backend;
mod batch;
mod error;
mod fault_guard;
mod frame;
mod fs;
mod hint;
mod mapped;
mod section;
#[cfg(any(test, feature = "testing"))]
mod sim;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod token;

pub use backend::{FileBackend, OsFile};
pub use batch::{BatchReport, Section, write_batched_sections, write_zeros};
pub use error::{Error, Result};
pub use fault_guard::mapped_read_faults;
pub use frame::{
    FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD, StreamingChecksum, checksum, decode_frame, encode_frame,
    frame_len,
};
pub use fs::{create_new_durable, create_new_durable_with, sync_dir, sync_parent_dir};
pub use hint::prefetch;
pub use section::{SectionReader, SectionWriter};
pub use token::{DiskToken, DiskTokenManager};
