//! `SpaceAllocator`: what the store needs from an allocator, for each kind it can use.

use bob_alloc::{Allocator, BasicAllocator, Extent, OmniBlockAllocator, RunAllocator};

use crate::format::PAGE_BYTES;

const PAGE: u64 = PAGE_BYTES as u64;

/// Objects up to this many pages are rounded up to whole pages (see
/// `BasicAllocator`'s `placed_len`).
const ROUNDED_PAGES: u64 = 4;

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

    /// The space an object of `len` bytes is given (its allocated length, at least `len`).
    fn placed_len(len: u64) -> u64 {
        len
    }

    /// Whether the store may append objects one after another through
    /// [`append_start`](Self::append_start) and [`claim`](Self::claim) (the store's append
    /// placement, see `StoreOptions::append_room_percent`). False (the default) when this
    /// allocator decides where everything goes (size classes).
    const APPENDS: bool = false;

    /// Allocates exactly `extent`, inside the free extent that starts at `hole` (the bytes
    /// before it stay free), or at or past the file's end when `hole` is there.
    fn claim_within(&mut self, hole: u64, extent: Extent) -> bob_alloc::Result<()> {
        if hole == extent.offset {
            return self.claim(extent);
        }
        Err(bob_alloc::Error::InvalidExtent { extent, reason: "this allocator cannot claim" })
    }

    /// Where objects laid one after another may begin: the start of a hole of at least
    /// `min_hole` bytes, else the file's end. `None` when this allocator cannot append.
    fn append_start(&self, _min_hole: u64) -> Option<u64> {
        None
    }

    /// `(bytes free in holes below the file end, bytes in live extents)`.
    fn usage(&self) -> (u64, u64) {
        let stats = self.stats();
        (stats.bytes_free, stats.bytes_in_use)
    }
}

impl SpaceAllocator for BasicAllocator {
    const KIND: u16 = 1;
    const APPENDS: bool = true;

    fn empty(start: u64, limit: u64) -> Self {
        BasicAllocator::with_limit(start, limit).with_page_alignment(PAGE)
    }

    fn rebuild(start: u64, limit: u64, extents: Vec<Extent>) -> bob_alloc::Result<Self> {
        Ok(BasicAllocator::rebuild_from(start, limit, extents)?.with_page_alignment(PAGE))
    }

    /// An object within an eighth of a whole number of pages gets those pages, from a page
    /// boundary (the allocator places whole pages aligned): when it is freed its pages are
    /// whole and free, so the page-granular invariant lets the next commit's objects use them
    /// at once. Packed at its own length it would share its first and last pages with its
    /// neighbours, and its space would be held back until they were gone too. Smaller
    /// objects, and those further from a page multiple, pack at their own length.
    fn placed_len(len: u64) -> u64 {
        if len > ROUNDED_PAGES * PAGE {
            return len;
        }
        let pages = len.next_multiple_of(PAGE);
        if pages - len <= pages / 8 { pages } else { len }
    }

    fn claimable(&self) -> Vec<Extent> {
        self.free_extents()
    }

    fn claim(&mut self, extent: Extent) -> bob_alloc::Result<()> {
        self.allocate_at(extent)
    }

    fn claim_within(&mut self, hole: u64, extent: Extent) -> bob_alloc::Result<()> {
        self.allocate_within(hole, extent)
    }

    fn append_start(&self, min_hole: u64) -> Option<u64> {
        Some(self.hole_of_at_least(min_hole).map_or(self.file_end(), |hole| hole.offset))
    }

    fn usage(&self) -> (u64, u64) {
        (self.bytes_free(), self.bytes_in_use())
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
