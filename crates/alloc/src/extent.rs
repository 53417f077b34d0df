//! Extents, runs and statistics: the values allocators hand out and report.

use crate::{Error, Result};

/// `len` bytes of a file starting at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// An extent of `len` bytes at `offset`.
    pub const fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// One past the last byte; `None` if that passes `u64::MAX`.
    pub const fn checked_end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }

    /// One past the last byte. Extents made by an allocator never overflow.
    pub const fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// Whether the two extents share a byte.
    pub const fn overlaps(&self, other: &Extent) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

/// `count` extents of `len` bytes laid end to end from `offset`, from `allocate_run`.
/// Each extent is allocated on its own and is freed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Offset of the first extent.
    pub offset: u64,
    /// Bytes per extent (as allocated: a slot's size in the block allocators).
    pub len: u64,
    /// Number of extents.
    pub count: u64,
}

impl Run {
    /// The extents, in offset order.
    pub fn extents(&self) -> impl Iterator<Item = Extent> + '_ {
        (0..self.count).map(|i| Extent::new(self.offset + i * self.len, self.len))
    }

    /// Total bytes of the run.
    pub fn total_len(&self) -> u64 {
        self.len * self.count
    }
}

/// A snapshot of an allocator's space accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Live extents.
    pub live_extents: u64,
    /// Bytes in live extents (allocated lengths).
    pub bytes_in_use: u64,
    /// Bytes below the file end that are free for reuse.
    pub bytes_free: u64,
    /// The largest single request that can be met without growing the file.
    pub largest_free: u64,
    /// One past the last byte the allocator manages.
    pub file_end: u64,
}

/// Sorts `extents` by offset and checks each is non-empty, at or after `start`, at or before
/// `limit`, and disjoint from the others.
pub(crate) fn sorted_disjoint(
    mut extents: Vec<Extent>,
    start: u64,
    limit: u64,
) -> Result<Vec<Extent>> {
    // The stable sort merges ascending runs in linear time, and a store's extents arrive as a
    // few long runs (objects in id order, then table pages).
    extents.sort();
    let mut previous_end = start;
    for extent in &extents {
        let invalid = |reason| Err(Error::InvalidExtent { extent: *extent, reason });
        if extent.len == 0 {
            return invalid("it is empty");
        }
        let Some(end) = extent.checked_end() else { return invalid("it ends past u64::MAX") };
        if extent.offset < start {
            return invalid("it starts before the allocator's start");
        }
        if end > limit {
            return invalid("it ends past the allocator's limit");
        }
        if extent.offset < previous_end {
            return invalid("it overlaps the previous extent");
        }
        previous_end = end;
    }
    Ok(extents)
}
