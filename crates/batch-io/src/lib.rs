//! Batched and buffered I/O on top of bob's file backends.
//!
//! - [`WriteBuffer`]: positioned writes held in memory; a flush sorts them, merges only truly
//!   contiguous bytes into one vectored write per run, and syncs **once**. Gaps between
//!   buffered writes are never written; overlapping buffered writes are last-wins; reads see
//!   what is buffered. Flushes by operation count (default 32), bytes (default 4 MiB), an
//!   optional interval, or by hand.
//! - [`read_batch`]: reads sorted by offset, neighbours within a gap (default 64 KiB) read
//!   with one positioned read and split, each checked against its checksum, results in
//!   **request** order, duplicate requests read once.
//!
//! Invariants: nothing buffered is durable before a flush returns `Ok`; a failed flush
//! latches the buffer ([`Error::Failed`]: a failed sync is never retried); a read never
//! returns bytes whose checksum does not match the one its request carried
//! ([`Error::ChecksumMismatch`]), and one bad request never fails another.
//!
//! - [`BatchWriter`]: bounded parallel writes into a [`Sink`] (a `ConcurrentStore`, a
//!   bob-btree tree through [`TreeSink`], a [`DiskCache`]):
//!   a permit is taken before each write starts, one result per item in input order, the
//!   same key twice in a batch resolves to the last, one commit per batch; `stats` with a
//!   latency histogram.
//!
//! - [`DiskCache`]: keyed blobs in one bob database file, the index a named B-tree that
//!   names a blob only once it is durable and stops naming it before it is deleted;
//!   buffered stores, LRU eviction under a capacity, TTL, optional LZ4 compression (decoded on every read path); `lookup_batch`
//!   looks the keys up in one pass and, when the blobs come from the device, has the
//!   store read the next ones ahead, so the device serves them together. Over any store of
//!   the right kind (`DiskCache::with_db`),
//!   so that tests can crash it on simulated disks.
//!
//! # Example
//! ```
//! use bob_batch_io::{BatchReadOptions, ReadRequest, WriteBuffer, WriteBufferOptions};
//! use bob_io_helpers::checksum;
//!
//! # fn main() -> bob_batch_io::Result<()> {
//! let disk = bob_io_helpers::testing::SimDisk::new();
//! let mut buffer = WriteBuffer::new(disk.clone(), WriteBufferOptions::default());
//! for i in 0..8u64 {
//!     buffer.write(i * 4096, &[i as u8; 4096])?;
//! }
//! let report = buffer.flush()?; // one run, one vectored write, one sync
//! assert_eq!((report.runs, report.syncs), (1, 1));
//!
//! // Out of order, one twice: one read, results in request order.
//! let requests = [
//!     ReadRequest::checked(5 * 4096, 4096, checksum(&[5; 4096])),
//!     ReadRequest::checked(1 * 4096, 4096, checksum(&[1; 4096])),
//!     ReadRequest::checked(5 * 4096, 4096, checksum(&[5; 4096])),
//! ];
//! let (results, report) = bob_batch_io::read_batch(&disk, &requests, &BatchReadOptions::default());
//! assert_eq!(results[0].as_ref().unwrap()[0], 5);
//! assert_eq!(results[1].as_ref().unwrap()[0], 1);
//! assert_eq!((report.distinct, report.reads), (2, 1));
//! # Ok(())
//! # }
//! ```

mod buffer;
mod cache;
mod error;
mod reads;
mod writer;

pub use buffer::{FlushReport, WriteBuffer, WriteBufferOptions, WriteBufferStats};
pub use cache::{DiskCache, DiskCacheOptions, DiskCacheStats};
pub use error::{Error, Result};
pub use reads::{BatchReadOptions, BatchReadReport, ReadRequest, read_batch};
pub use writer::{
    BatchWriter, BatchWriterOptions, BatchWriterStats, LATENCY_BUCKETS_MICROS, Sink, TreeSink,
};
