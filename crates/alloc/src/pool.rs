//! `BlockPool`: one slot size over many blocks taken from a parent `BasicAllocator`.
//!
//! The logic behind `MultiBlockAllocator` (one pool, its own parent) and
//! `OmniBlockAllocator` (a pool per size class, one shared parent). The parent is passed to
//! each call rather than owned, so pools can share it.
//!
//! Growth: a new block has as many slots as the pool has already (so capacity doubles), at
//! least [`MIN_BLOCK_SLOTS`] and at most [`MAX_BLOCK_BYTES`] worth (but never fewer than the
//! minimum), or fewer when only a smaller hole is free, so holes are reused before the file
//! grows. The next size is derived from the state, so nothing extra is persisted. A block
//! that becomes empty goes back to the parent at once, so the pool never holds idle space.
//! Allocation takes the lowest free slot of the lowest block with one, keeping data dense
//! toward the start of the file.

use crate::block::{BlockAllocator, MAX_BLOCK_SLOTS};
use crate::codec::{Reader, Writer};
use crate::{Allocator, BasicAllocator, Error, Extent, Result, Run};

/// Slots in a pool's first block.
pub const MIN_BLOCK_SLOTS: u64 = 8;
/// Blocks grow (by doubling) until they reach this many bytes (or `MIN_BLOCK_SLOTS` slots).
pub const MAX_BLOCK_BYTES: u64 = 1 << 20;

/// Blocks are kept in offset order in a vector (with their bases in a second, dense vector
/// for the binary search that finds a freed slot's block) and a bitmap over block indices
/// marks the blocks with a free slot. Adding or removing a block is O(blocks); allocating and
/// freeing a slot are O(log blocks) plus a bitmap scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockPool {
    slot_size: u64,
    bases: Vec<u64>,
    blocks: Vec<BlockAllocator>,
    nonfull: Vec<u64>,
    total_slots: u64,
    used_slots: u64,
}

impl BlockPool {
    pub(crate) fn new(slot_size: u64) -> Self {
        Self {
            slot_size,
            bases: Vec::new(),
            blocks: Vec::new(),
            nonfull: Vec::new(),
            total_slots: 0,
            used_slots: 0,
        }
    }

    fn set_nonfull(&mut self, index: usize, nonfull: bool) {
        let bit = 1u64 << (index % 64);
        if nonfull {
            self.nonfull[index / 64] |= bit;
        } else {
            self.nonfull[index / 64] &= !bit;
        }
    }

    fn is_nonfull(&self, index: usize) -> bool {
        self.nonfull[index / 64] & (1 << (index % 64)) != 0
    }

    /// Indices of the blocks with a free slot, ascending.
    fn nonfull_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.nonfull.iter().enumerate().flat_map(|(word, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let index = word * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    index
                })
            })
        })
    }

    fn rebuild_nonfull(&mut self) {
        self.nonfull = vec![0; self.blocks.len().div_ceil(64)];
        for index in 0..self.blocks.len() {
            let nonfull = !self.blocks[index].is_full();
            self.set_nonfull(index, nonfull);
        }
    }

    /// The block that would hold `offset`: the last one starting at or before it.
    fn block_index(&self, offset: u64) -> Option<usize> {
        self.bases.partition_point(|&base| base <= offset).checked_sub(1)
    }

    pub(crate) fn slot_size(&self) -> u64 {
        self.slot_size
    }

    pub(crate) fn used_slots(&self) -> u64 {
        self.used_slots
    }

    pub(crate) fn block_count(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn free_slot_bytes(&self) -> u64 {
        (self.total_slots - self.used_slots) * self.slot_size
    }

    pub(crate) fn has_free_slot(&self) -> bool {
        self.total_slots > self.used_slots
    }

    pub(crate) fn block_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.blocks.iter().map(BlockAllocator::extent)
    }

    pub(crate) fn live_slots(&self) -> impl Iterator<Item = Extent> + '_ {
        self.blocks.iter().flat_map(BlockAllocator::live_slots)
    }

    fn cap_slots(&self) -> u64 {
        (MAX_BLOCK_BYTES / self.slot_size).clamp(MIN_BLOCK_SLOTS, MAX_BLOCK_SLOTS)
    }

    fn next_block_slots(&self) -> u64 {
        self.total_slots.clamp(MIN_BLOCK_SLOTS, self.cap_slots())
    }

    /// Files `block` in offset order; returns its index. The caller ensures no overlap.
    fn insert_block(&mut self, block: BlockAllocator) -> usize {
        let index = self.bases.partition_point(|&base| base < block.base());
        self.total_slots += block.slot_count();
        self.used_slots += block.used_slots();
        self.bases.insert(index, block.base());
        self.blocks.insert(index, block);
        self.rebuild_nonfull();
        index
    }

    fn remove_block(&mut self, index: usize) -> BlockAllocator {
        self.bases.remove(index);
        let block = self.blocks.remove(index);
        self.total_slots -= block.slot_count();
        self.used_slots -= block.used_slots();
        self.rebuild_nonfull();
        block
    }

    fn add_block(&mut self, parent: &mut BasicAllocator, slots: u64) -> Result<usize> {
        let extent = parent.allocate(slots * self.slot_size)?;
        let block = BlockAllocator::new(extent.offset, self.slot_size, slots)?;
        Ok(self.insert_block(block))
    }

    /// Slots for a new single-slot-driven block: the doubling size if some hole holds it or
    /// no hole holds even one slot; otherwise as many as the largest hole holds, so holes are
    /// reused before the file grows.
    fn growth_slots(&self, parent: &BasicAllocator) -> u64 {
        let wanted = self.next_block_slots();
        let hole_slots = parent.stats().largest_free / self.slot_size;
        if hole_slots == 0 || hole_slots >= wanted { wanted } else { hole_slots }
    }

    pub(crate) fn allocate(&mut self, parent: &mut BasicAllocator) -> Result<Extent> {
        let first_nonfull = self.nonfull_indices().next();
        let index = match first_nonfull {
            Some(index) => index,
            None => self.add_block(parent, self.growth_slots(parent))?,
        };
        let block = &mut self.blocks[index];
        let base = block.base();
        let slot = block.take_slot().ok_or_else(|| {
            Error::Invariant(format!("block at {base} is listed as not full but has no free slot"))
        })?;
        if block.is_full() {
            self.set_nonfull(index, false);
        }
        self.used_slots += 1;
        Ok(Extent::new(base + slot * self.slot_size, self.slot_size))
    }

    pub(crate) fn free(&mut self, parent: &mut BasicAllocator, extent: Extent) -> Result<()> {
        let Some(index) = self.block_index(extent.offset) else {
            return Err(Error::NotAllocated(extent));
        };
        self.blocks[index].release(extent)?;
        self.used_slots -= 1;
        if self.blocks[index].is_empty() {
            let block = self.remove_block(index);
            parent.free(block.extent()).map_err(|e| {
                Error::Invariant(format!("returning an empty block to the parent failed: {e}"))
            })?;
        } else {
            self.set_nonfull(index, true);
        }
        Ok(())
    }

    pub(crate) fn longest_run(&self) -> u64 {
        self.nonfull_indices().map(|i| self.blocks[i].longest_free_run()).max().unwrap_or(0)
    }

    /// `count` contiguous slots: the lowest fitting run in an existing block, or a new block.
    pub(crate) fn allocate_run(&mut self, parent: &mut BasicAllocator, count: u64) -> Result<Run> {
        let slot_size = self.slot_size;
        let no_run = |longest| Error::NoRun { count, len: slot_size, longest };
        if count > MAX_BLOCK_SLOTS {
            return Err(no_run(MAX_BLOCK_SLOTS));
        }
        let found: Option<usize> =
            self.nonfull_indices().find(|&i| self.blocks[i].longest_free_run() >= count);
        let index = match found {
            Some(index) => index,
            None => match self.add_block(parent, self.next_block_slots().max(count)) {
                Ok(index) => index,
                Err(Error::OutOfSpace { .. }) => return Err(no_run(self.longest_run())),
                Err(other) => return Err(other),
            },
        };
        let block = &mut self.blocks[index];
        let first = block.take_run(count).ok_or_else(|| {
            Error::Invariant(format!("block at {} lost a free run of {count} slots", block.base()))
        })?;
        let run = block.run_at(first, count);
        if block.is_full() {
            self.set_nonfull(index, false);
        }
        self.used_slots += count;
        Ok(run)
    }

    /// Checks every block, the counters and the not-full index, and that each block is live
    /// in `parent`.
    pub(crate) fn verify(&self, parent: &BasicAllocator) -> Result<()> {
        let (mut total, mut used) = (0, 0);
        if self.bases.len() != self.blocks.len()
            || self.nonfull.len() != self.blocks.len().div_ceil(64)
        {
            return Err(Error::Invariant("block indexes differ in length".into()));
        }
        for (index, block) in self.blocks.iter().enumerate() {
            let base = self.bases[index];
            block.check()?;
            let ordered = index == 0 || self.blocks[index - 1].extent().end() <= base;
            if block.base() != base || block.slot_size() != self.slot_size || !ordered {
                return Err(Error::Invariant(format!("block at {base} is filed wrongly")));
            }
            if block.is_empty() {
                return Err(Error::Invariant(format!("empty block at {base} was kept")));
            }
            if self.is_nonfull(index) == block.is_full() {
                return Err(Error::Invariant(format!("not-full index is wrong for block {base}")));
            }
            if !parent.is_live(block.extent()) {
                return Err(Error::Invariant(format!("block at {base} is not live in the parent")));
            }
            total += block.slot_count();
            used += block.used_slots();
        }
        if self.nonfull.len() > self.blocks.len()
            || (total, used) != (self.total_slots, self.used_slots)
        {
            return Err(Error::Invariant(format!(
                "pool of {}-byte slots counts {}/{} slots, its blocks {used}/{total}",
                self.slot_size, self.used_slots, self.total_slots
            )));
        }
        Ok(())
    }

    /// `block_count: u64`, then per block `offset: u64` and the block's slots encoding.
    pub(crate) fn encode_into(&self, writer: &mut Writer) {
        writer.put_u64(self.blocks.len() as u64);
        for block in &self.blocks {
            writer.put_u64(block.base());
            block.encode_slots(writer);
        }
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>, slot_size: u64) -> Result<Self> {
        let mut pool = Self::new(slot_size);
        let count = reader.count("block count", 24)?;
        for _ in 0..count {
            let base = reader.u64("block offset")?;
            let block = BlockAllocator::decode_slots(reader, base, slot_size)?;
            if block.is_empty() {
                return Err(Error::Corrupt(format!("the block at {base} holds no live slot")));
            }
            if pool.bases.last().is_some_and(|&last| last >= base) {
                return Err(Error::Corrupt(format!("block at offset {base} is out of order")));
            }
            pool.bases.push(base);
            pool.total_slots += block.slot_count();
            pool.used_slots += block.used_slots();
            pool.blocks.push(block);
        }
        pool.rebuild_nonfull();
        Ok(pool)
    }
}

/// Pools for `classes` (ascending slot sizes) holding exactly the given live extents, and the
/// extents larger than every class. Each maximal group of same-class extents that are adjacent
/// in offset order, spaced by whole slots, becomes one block (split at the largest block size);
/// the whole slots between them become free slots. Block boundaries can thus differ from the
/// allocator the extents came from; the live extents and the free space below them do not.
pub(crate) fn rebuild_pools(
    classes: &[u64],
    extents: &[Extent],
) -> Result<(Vec<BlockPool>, Vec<Extent>)> {
    let mut pools: Vec<BlockPool> = classes.iter().map(|&size| BlockPool::new(size)).collect();
    let largest_class = classes.last().copied().unwrap_or(0);
    let mut large = Vec::new();
    // The group being built: its class and the index of its first extent; its extents are
    // `extents[first..i]`. Runs of one size are common, so the last class found is reused.
    let mut group: Option<(usize, usize)> = None;
    let mut last_class: Option<(u64, usize)> = None;
    for (i, &extent) in extents.iter().enumerate() {
        if extent.len > largest_class {
            close_group(group.take(), extents, i, &mut pools)?;
            large.push(extent);
            continue;
        }
        let class = match last_class {
            Some((len, class)) if len == extent.len => class,
            _ => {
                let class = classes.partition_point(|&size| size < extent.len);
                if classes.get(class) != Some(&extent.len) {
                    return Err(Error::InvalidExtent {
                        extent,
                        reason: "its length is no class's slot size",
                    });
                }
                last_class = Some((extent.len, class));
                class
            }
        };
        let slot = extent.len;
        let joins = group.is_some_and(|(c, first)| {
            let start = extents[first].offset;
            c == class
                && (extent.offset - extents[i - 1].end()) % slot == 0
                && (extent.end() - start) / slot <= pools[class].cap_slots()
        });
        if !joins {
            close_group(group.take(), extents, i, &mut pools)?;
            group = Some((class, i));
        }
    }
    close_group(group.take(), extents, extents.len(), &mut pools)?;
    Ok((pools, large))
}

/// Turns the group `extents[first..end]` (all slots of one class) into one block.
fn close_group(
    group: Option<(usize, usize)>,
    extents: &[Extent],
    end: usize,
    pools: &mut [BlockPool],
) -> Result<()> {
    let Some((class, first)) = group else { return Ok(()) };
    let pool = &mut pools[class];
    let slot = pool.slot_size;
    let live = &extents[first..end];
    let base = live[0].offset;
    let block_end = live[live.len() - 1].end();
    let block = BlockAllocator::with_used(
        base,
        slot,
        (block_end - base) / slot,
        live.iter().map(|e| (e.offset - base) / slot),
    )?;
    // Groups close in offset order, so the block goes last.
    pool.bases.push(block.base());
    pool.total_slots += block.slot_count();
    pool.used_slots += block.used_slots();
    pool.blocks.push(block);
    pool.rebuild_nonfull();
    Ok(())
}
