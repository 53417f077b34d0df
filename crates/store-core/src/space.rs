//! `SpaceAllocator`: what the store needs from an allocator, for each kind it can use.

use bob_alloc::{BasicAllocator, Extent, OmniBlockAllocator, RunAllocator};

/// An allocator a store can own: it can be made empty and rebuilt from live extents, and it
/// has a kind number recorded in the file header so a file is always opened with the
/// allocator that wrote it.
pub trait SpaceAllocator: RunAllocator + Send + Sized {
    /// The kind recorded in the header (1 basic, 2 omni).
    const KIND: u16;

    /// An empty allocator handing out space from `start`, never past `limit`.
    fn empty(start: u64, limit: u64) -> Self;

    /// An allocator whose live extents are exactly `extents`.
    fn rebuild(start: u64, limit: u64, extents: Vec<Extent>) -> bob_alloc::Result<Self>;

    /// Free extents, ascending, from whose fronts [`claim`](Self::claim) can take space; empty
    /// when the allocator cannot be told where to allocate (compaction then asks `allocate`
    /// and keeps what lands lower).
    fn claimable(&self) -> Vec<Extent> {
        Vec::new()
    }

    /// Allocates exactly `extent`, the front of a claimable extent.
    fn claim(&mut self, extent: Extent) -> bob_alloc::Result<()> {
        Err(bob_alloc::Error::InvalidExtent { extent, reason: "this allocator cannot claim" })
    }
}

impl SpaceAllocator for BasicAllocator {
    const KIND: u16 = 1;

    fn empty(start: u64, limit: u64) -> Self {
        BasicAllocator::with_limit(start, limit)
    }

    fn rebuild(start: u64, limit: u64, extents: Vec<Extent>) -> bob_alloc::Result<Self> {
        BasicAllocator::rebuild_from(start, limit, extents)
    }

    fn claimable(&self) -> Vec<Extent> {
        self.free_extents()
    }

    fn claim(&mut self, extent: Extent) -> bob_alloc::Result<()> {
        self.allocate_at(extent)
    }
}

impl SpaceAllocator for OmniBlockAllocator {
    const KIND: u16 = 2;

    fn empty(start: u64, limit: u64) -> Self {
        OmniBlockAllocator::with_classes(start, limit, &bob_alloc::DEFAULT_CLASSES)
            .unwrap_or_else(|_| OmniBlockAllocator::new(start))
    }

    fn rebuild(start: u64, limit: u64, extents: Vec<Extent>) -> bob_alloc::Result<Self> {
        OmniBlockAllocator::rebuild_from(start, limit, &bob_alloc::DEFAULT_CLASSES, extents)
    }
}
