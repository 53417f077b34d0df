//! `MultiBlockAllocator`: one slot size over many blocks from its own `BasicAllocator`.
//!
//! Blocks start at [`MIN_BLOCK_SLOTS`](crate::MIN_BLOCK_SLOTS) slots and double up to
//! [`MAX_BLOCK_BYTES`](crate::MAX_BLOCK_BYTES), so one small object makes a small file, and an
//! empty block goes back to the parent at once. The encoding holds the blocks; the parent's
//! state is derived from them, so the two cannot disagree.

use crate::codec::{self, Kind, Writer};
use crate::pool::{BlockPool, rebuild_pools};
use crate::{AllocStats, Allocator, BasicAllocator, Error, Extent, Result, Run, RunAllocator};

/// Fixed-size slots over blocks that grow by doubling; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiBlockAllocator {
    parent: BasicAllocator,
    pool: BlockPool,
}

fn check_slot_size(slot_size: u64) -> Result<()> {
    if slot_size == 0 || slot_size > crate::pool::MAX_BLOCK_BYTES {
        return Err(Error::Config(format!(
            "slot size {slot_size} is not between 1 and {} bytes",
            crate::pool::MAX_BLOCK_BYTES
        )));
    }
    Ok(())
}

impl MultiBlockAllocator {
    /// An empty allocator of `slot_size`-byte slots whose blocks start at `start`.
    pub fn new(start: u64, slot_size: u64) -> Result<Self> {
        Self::with_limit(start, crate::basic::DEFAULT_LIMIT, slot_size)
    }

    /// An empty allocator whose file end may not pass `limit`.
    pub fn with_limit(start: u64, limit: u64, slot_size: u64) -> Result<Self> {
        check_slot_size(slot_size)?;
        Ok(Self {
            parent: BasicAllocator::with_limit(start, limit),
            pool: BlockPool::new(slot_size),
        })
    }

    /// An allocator whose live slots are exactly `extents` (each `slot_size` bytes); see
    /// the crate docs for how blocks are regrouped.
    pub fn rebuild_from(
        start: u64,
        limit: u64,
        slot_size: u64,
        extents: impl IntoIterator<Item = Extent>,
    ) -> Result<Self> {
        check_slot_size(slot_size)?;
        let sorted =
            crate::extent::sorted_disjoint(extents.into_iter().collect(), start, limit.max(start))?;
        let (mut pools, large) = rebuild_pools(&[slot_size], &sorted)?;
        if let Some(&extent) = large.first() {
            return Err(Error::InvalidExtent { extent, reason: "it is larger than the slot size" });
        }
        let pool = pools.pop().unwrap_or_else(|| BlockPool::new(slot_size));
        let parent = BasicAllocator::rebuild_from(start, limit, pool.block_extents())?;
        Ok(Self { parent, pool })
    }

    /// Decodes state written by [`Allocator::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = codec::open(bytes, Kind::Multi)?;
        let start = reader.u64("start")?;
        let end = reader.u64("file end")?;
        let limit = reader.u64("limit")?;
        let slot_size = reader.u64("slot size")?;
        check_slot_size(slot_size).map_err(|e| Error::Corrupt(e.to_string()))?;
        let pool = BlockPool::decode_from(&mut reader, slot_size)?;
        reader.finish()?;
        let parent = crate::omni::derive_parent(start, end, limit, pool.block_extents())?;
        Ok(Self { parent, pool })
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u64 {
        self.pool.slot_size()
    }

    /// Blocks held now.
    pub fn block_count(&self) -> usize {
        self.pool.block_count()
    }

    /// The extents of the blocks, in offset order.
    pub fn block_extents(&self) -> Vec<Extent> {
        self.pool.block_extents().collect()
    }

    fn check_len(&self, len: u64) -> Result<()> {
        match len {
            0 => Err(Error::ZeroLength),
            len if len > self.slot_size() => Err(Error::TooLarge { len, max: self.slot_size() }),
            _ => Ok(()),
        }
    }
}

impl Allocator for MultiBlockAllocator {
    fn allocate(&mut self, len: u64) -> Result<Extent> {
        self.check_len(len)?;
        self.pool.allocate(&mut self.parent)
    }

    fn free(&mut self, extent: Extent) -> Result<()> {
        self.pool.free(&mut self.parent, extent)
    }

    fn stats(&self) -> AllocStats {
        let parent = self.parent.stats();
        AllocStats {
            live_extents: self.pool.used_slots(),
            bytes_in_use: self.pool.used_slots() * self.slot_size(),
            bytes_free: parent.bytes_free + self.pool.free_slot_bytes(),
            largest_free: if self.pool.has_free_slot() { self.slot_size() } else { 0 },
            file_end: parent.file_end,
        }
    }

    fn live_extents(&self) -> Vec<Extent> {
        self.pool.live_slots().collect()
    }

    fn file_end(&self) -> u64 {
        self.parent.file_end()
    }

    fn verify(&self) -> Result<()> {
        self.parent.verify()?;
        self.pool.verify(&self.parent)?;
        if self.parent.stats().live_extents != self.pool.block_count() as u64 {
            return Err(Error::Invariant("the parent holds extents that are not blocks".into()));
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        codec::seal(Kind::Multi, |writer: &mut Writer| {
            writer.put_u64(self.parent.start());
            writer.put_u64(self.parent.file_end());
            writer.put_u64(self.parent.limit());
            writer.put_u64(self.slot_size());
            self.pool.encode_into(writer);
        })
    }
}

impl RunAllocator for MultiBlockAllocator {
    /// The lowest fitting run in an existing block, or a new block big enough for the run.
    fn allocate_run(&mut self, count: u64, len: u64) -> Result<Run> {
        self.check_len(len)?;
        if count == 0 {
            return Err(Error::ZeroLength);
        }
        self.pool.allocate_run(&mut self.parent, count)
    }
}
