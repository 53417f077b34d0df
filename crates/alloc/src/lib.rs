//! Space allocators for bob's single-file object store.
//!
//! An allocator hands out and takes back *space* in a file, as [`Extent`]s (`offset`, `len`);
//! it does no I/O. Every allocator implements [`Allocator`] (allocate, free, stats, the live
//! extents, `verify`, `encode`) and has inherent `decode` and `rebuild_from` constructors;
//! [`RunAllocator`] adds `allocate_run`, extents laid end to end for batched writes.
//!
//! - [`BasicAllocator`]: any size; segregated fit over coalesced holes (a fitting hole is
//!   always reused before the file grows); the file end shrinks when the last extent is freed.
//! - [`BlockAllocator`]: fixed-size slots in one block, a two-level bitmap.
//! - [`MultiBlockAllocator`]: one slot size over blocks from a parent `BasicAllocator`,
//!   growing by doubling from [`MIN_BLOCK_SLOTS`] slots; empty blocks go back to the parent.
//! - [`OmniBlockAllocator`]: routes requests by size class ([`DEFAULT_CLASSES`]) to block
//!   pools sharing one parent; larger requests go to the parent.
//!
//! # Invariants
//! - Live extents never overlap, and lie between the allocator's start and its file end.
//! - Free space is reused before the file grows; neighbouring free space coalesces.
//! - A free must name a live extent exactly as it was handed out (a block allocator's extent
//!   is the whole slot); anything else is [`Error::NotAllocated`] and changes nothing.
//! - `encode` is deterministic and `decode(encode(a))` re-encodes to the same bytes. Decoding
//!   checks the envelope's checksum, version and kind, bounds every count by the bytes left,
//!   and validates the structure (no overlap, no empty block, file end consistent); corrupt
//!   input is an `Err`, never a panic. Parents of block allocators are not encoded: they are
//!   derived from the blocks, so they cannot disagree.
//! - `rebuild_from(live extents)` yields an allocator with exactly those live extents and
//!   every other byte below the last one free, so a store can derive free space from what its
//!   commit reaches. Block allocators may regroup slots into different blocks than the
//!   original had (same-class slots adjacent in the file, spaced by whole slots, share a block).
//!
//! # Limits
//! File ends stop at [`DEFAULT_LIMIT`] (2^62) unless a lower limit is set; a block holds at
//! most [`MAX_BLOCK_SLOTS`] slots; block pools grow blocks up to [`MAX_BLOCK_BYTES`]; an omni
//! allocator has at most [`MAX_CLASSES`] classes.
//!
//! # Example
//! ```
//! use bob_alloc::{Allocator, OmniBlockAllocator, RunAllocator};
//!
//! # fn main() -> bob_alloc::Result<()> {
//! let mut space = OmniBlockAllocator::new(4096); // bytes before 4096 hold a header
//! let small = space.allocate(100)?; // a 112-byte slot
//! let large = space.allocate(100_000)?; // exactly 100,000 bytes from the parent
//! let run = space.allocate_run(16, 64)?; // 16 slots of 64 bytes, end to end
//! assert_eq!(run.extents().count(), 16);
//! space.free(small)?;
//! space.verify()?;
//!
//! // Persist the state, or rebuild it from the live extents alone.
//! let reloaded = OmniBlockAllocator::decode(&space.encode())?;
//! assert_eq!(reloaded.live_extents(), space.live_extents());
//! let classes = space.classes();
//! let rebuilt = OmniBlockAllocator::rebuild_from(4096, u64::MAX, &classes, space.live_extents())?;
//! assert_eq!(rebuilt.live_extents(), space.live_extents());
//! assert!(rebuilt.live_extents().contains(&large));
//! # Ok(())
//! # }
//! ```

mod basic;
mod block;
mod codec;
mod error;
mod extent;
mod free_space;
mod multi;
mod omni;
mod pool;

pub use basic::{BasicAllocator, DEFAULT_LIMIT};
pub use block::{BlockAllocator, MAX_BLOCK_SLOTS};
pub use error::{Error, Result};
pub use extent::{AllocStats, Extent, Run};
pub use multi::MultiBlockAllocator;
pub use omni::{DEFAULT_CLASSES, MAX_CLASSES, OmniBlockAllocator};
pub use pool::{MAX_BLOCK_BYTES, MIN_BLOCK_SLOTS};

/// What every allocator does. Implementations do no I/O.
pub trait Allocator {
    /// Allocates at least `len` bytes; the extent returned is what [`free`](Self::free) takes
    /// back (exactly `len` bytes for [`BasicAllocator`], a whole slot for block allocators).
    fn allocate(&mut self, len: u64) -> Result<Extent>;

    /// Returns a live extent, exactly as `allocate` gave it; anything else is
    /// [`Error::NotAllocated`] and changes nothing.
    fn free(&mut self, extent: Extent) -> Result<()>;

    /// Space accounting now.
    fn stats(&self) -> AllocStats;

    /// The live extents, in offset order.
    fn live_extents(&self) -> Vec<Extent>;

    /// One past the last byte this allocator manages.
    fn file_end(&self) -> u64;

    /// Checks every internal invariant; an `Err` is a bug in this crate.
    fn verify(&self) -> Result<()>;

    /// The state as versioned, checksummed little-endian bytes (`docs/format.md`).
    fn encode(&self) -> Vec<u8>;
}

/// Allocators that can lay several extents end to end.
pub trait RunAllocator: Allocator {
    /// `count` extents of `len` bytes (a slot each, in block allocators), contiguous, each
    /// freed on its own later. When no such run exists, fails with [`Error::NoRun`] giving the
    /// longest run available now, so a caller can take that many and fall back for the rest.
    fn allocate_run(&mut self, count: u64, len: u64) -> Result<Run>;

    /// `count` extents of `len` bytes as one or more runs, reusing free space: free
    /// extents that hold at least `min_run` of them are filled first, and what is left is one
    /// run wherever the allocator finds room (growing the file if need be). Allocators whose
    /// runs already come from free space (the block pools) take one run.
    fn allocate_runs(&mut self, count: u64, len: u64, min_run: u64) -> Result<Vec<Run>> {
        let _ = min_run;
        Ok(vec![self.allocate_run(count, len)?])
    }
}
