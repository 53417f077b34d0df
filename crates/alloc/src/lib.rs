//! Space allocators for bob's single-file object store.
//!
//! An allocator hands out and takes back *space* in a file, as `(offset, len)` extents; it does
//! no file I/O itself. This crate will own:
//!
//! - `BasicAllocator`: any size; free extents kept sorted so neighbours coalesce on free; holes are
//!   reused before the file grows.
//! - `BlockAllocator`: fixed-size slots in one block, tracked by a bitmap.
//! - `MultiBlockAllocator`: one slot size over many blocks taken from a parent allocator, growing
//!   by blocks whose slot count starts small and doubles.
//! - `OmniBlockAllocator`: routes each request by size class to a `MultiBlockAllocator`.
//! - `RunAllocator::allocate_run`: extents laid end to end, for batched persistence.
//!
//! Every allocator encodes its state in a versioned, checksummed little-endian layout
//! (`docs/format.md`) and can be rebuilt from the set of live extents alone, so a store can derive
//! free space from what its last commit reaches.
//!
//! Not built yet: issue #3 builds it.
