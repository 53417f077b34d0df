//! `BlockAllocator`: fixed-size slots in one block, tracked by a two-level bitmap.
//!
//! `used` has one bit per slot (1 = live); bits past `slot_count` in the last word are set, so
//! a full word is `u64::MAX` and every search can work a word at a time. `summary` has one bit
//! per `used` word, set while that word has a free slot, so finding a free slot reads one
//! summary word per 4,096 slots and then one `used` word.

use crate::codec::{self, Kind, Reader, Writer};
use crate::{AllocStats, Allocator, Error, Extent, Result, Run, RunAllocator};

/// The most slots one block holds (2^20: a 128 KiB bitmap).
pub const MAX_BLOCK_SLOTS: u64 = 1 << 20;

/// Fixed-size slots over one `(base, slot_size × slot_count)` region; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockAllocator {
    base: u64,
    slot_size: u64,
    slot_count: u64,
    used: Vec<u64>,
    summary: Vec<u64>,
    used_slots: u64,
}

fn words_for(bits: u64) -> usize {
    bits.div_ceil(64) as usize
}

impl BlockAllocator {
    /// An empty block of `slot_count` slots of `slot_size` bytes starting at `base`.
    pub fn new(base: u64, slot_size: u64, slot_count: u64) -> Result<Self> {
        if slot_size == 0 || slot_count == 0 || slot_count > MAX_BLOCK_SLOTS {
            return Err(Error::Config(format!(
                "a block needs a non-zero slot size and 1 to {MAX_BLOCK_SLOTS} slots, \
                 not {slot_count} slots of {slot_size} bytes"
            )));
        }
        let fits = slot_size.checked_mul(slot_count).and_then(|bytes| base.checked_add(bytes));
        if fits.is_none_or(|end| end > crate::basic::DEFAULT_LIMIT) {
            return Err(Error::Config(format!(
                "{slot_count} slots of {slot_size} bytes at {base} end past the largest file"
            )));
        }
        let words = words_for(slot_count);
        let mut used = vec![0u64; words];
        let tail_bits = slot_count % 64;
        if tail_bits != 0 {
            used[words - 1] = !0u64 << tail_bits; // padding past the last slot reads as used
        }
        let mut summary = vec![0u64; words_for(words as u64)];
        for word in 0..words {
            summary[word / 64] |= 1 << (word % 64);
        }
        Ok(Self { base, slot_size, slot_count, used, summary, used_slots: 0 })
    }

    /// A block whose live slots are exactly `extents` (each one whole slot of the block).
    pub fn rebuild_from(
        base: u64,
        slot_size: u64,
        slot_count: u64,
        extents: impl IntoIterator<Item = Extent>,
    ) -> Result<Self> {
        let mut block = Self::new(base, slot_size, slot_count)?;
        for extent in extents {
            match block.slot_of(extent) {
                Some(slot) if !block.is_used(slot) => block.set_range(slot, 1, true),
                Some(_) => {
                    return Err(Error::InvalidExtent { extent, reason: "it is given twice" });
                }
                None => {
                    return Err(Error::InvalidExtent {
                        extent,
                        reason: "it is not a slot of the block",
                    });
                }
            }
        }
        Ok(block)
    }

    /// Decodes state written by [`Allocator::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = codec::open(bytes, Kind::Block)?;
        let base = reader.u64("base")?;
        let slot_size = reader.u64("slot size")?;
        let block = Self::decode_slots(&mut reader, base, slot_size)?;
        reader.finish()?;
        Ok(block)
    }

    /// Writes `slot_count` and the bitmap (the caller writes base and slot size if needed).
    pub(crate) fn encode_slots(&self, writer: &mut Writer) {
        writer.put_u64(self.slot_count);
        for &word in &self.used {
            writer.put_u64(word);
        }
    }

    pub(crate) fn decode_slots(reader: &mut Reader<'_>, base: u64, slot_size: u64) -> Result<Self> {
        let slot_count = reader.u64("slot count")?;
        let mut block = Self::new(base, slot_size, slot_count)
            .map_err(|e| Error::Corrupt(format!("block: {e}")))?;
        for index in 0..block.used.len() {
            let word = reader.u64("bitmap word")?;
            let padding = block.used[index]; // only padding bits are set in a new block
            if word & padding != padding {
                return Err(Error::Corrupt(format!(
                    "bitmap word {index} of the block at {base} clears padding bits"
                )));
            }
            block.used[index] = word;
            block.used_slots += u64::from((word & !padding).count_ones());
            block.update_summary(index);
        }
        Ok(block)
    }

    /// The first byte of the block.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> u64 {
        self.slot_size
    }

    /// Slots in the block.
    pub fn slot_count(&self) -> u64 {
        self.slot_count
    }

    /// Live slots.
    pub fn used_slots(&self) -> u64 {
        self.used_slots
    }

    /// The whole block as one extent.
    pub fn extent(&self) -> Extent {
        Extent::new(self.base, self.slot_size * self.slot_count)
    }

    /// Whether no slot is live.
    pub fn is_empty(&self) -> bool {
        self.used_slots == 0
    }

    /// Whether every slot is live.
    pub fn is_full(&self) -> bool {
        self.used_slots == self.slot_count
    }

    fn slot_extent(&self, slot: u64) -> Extent {
        Extent::new(self.base + slot * self.slot_size, self.slot_size)
    }

    /// The slot `extent` is, if it is exactly one slot of this block.
    pub(crate) fn slot_of(&self, extent: Extent) -> Option<u64> {
        let relative = extent.offset.checked_sub(self.base)?;
        let slot = relative / self.slot_size;
        (extent.len == self.slot_size && relative % self.slot_size == 0 && slot < self.slot_count)
            .then_some(slot)
    }

    fn is_used(&self, slot: u64) -> bool {
        self.used[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn update_summary(&mut self, word: usize) {
        let bit = 1u64 << (word % 64);
        if self.used[word] == u64::MAX {
            self.summary[word / 64] &= !bit;
        } else {
            self.summary[word / 64] |= bit;
        }
    }

    fn set_range(&mut self, first: u64, count: u64, used: bool) {
        for slot in first..first + count {
            let word = (slot / 64) as usize;
            if used {
                self.used[word] |= 1 << (slot % 64);
            } else {
                self.used[word] &= !(1 << (slot % 64));
            }
        }
        for word in (first / 64) as usize..=((first + count - 1) / 64) as usize {
            self.update_summary(word);
        }
        if used {
            self.used_slots += count;
        } else {
            self.used_slots -= count;
        }
    }

    /// Takes the lowest free slot.
    pub(crate) fn take_slot(&mut self) -> Option<u64> {
        let (summary_index, summary_word) =
            self.summary.iter().enumerate().find(|(_, word)| **word != 0)?;
        let word = summary_index * 64 + summary_word.trailing_zeros() as usize;
        let slot = word as u64 * 64 + u64::from(self.used[word].trailing_ones());
        self.used[word] |= 1 << (slot % 64);
        self.used_slots += 1;
        self.update_summary(word);
        Some(slot)
    }

    /// A block with exactly the slots `used` (distinct, below `slot_count`) live, built in
    /// one pass over the bitmap.
    pub(crate) fn with_used(
        base: u64,
        slot_size: u64,
        slot_count: u64,
        used: impl IntoIterator<Item = u64>,
    ) -> Result<Self> {
        let mut block = Self::new(base, slot_size, slot_count)?;
        for slot in used {
            debug_assert!(slot < slot_count && !block.is_used(slot));
            block.used[(slot / 64) as usize] |= 1 << (slot % 64);
            block.used_slots += 1;
        }
        for word in 0..block.used.len() {
            block.update_summary(word);
        }
        Ok(block)
    }

    /// Frees `extent` if it is a live slot of this block.
    pub(crate) fn release(&mut self, extent: Extent) -> Result<()> {
        match self.slot_of(extent) {
            Some(slot) if self.is_used(slot) => {
                self.set_range(slot, 1, false);
                Ok(())
            }
            _ => Err(Error::NotAllocated(extent)),
        }
    }

    /// The first slot at or after `from` that is live (`live == true`) or free, scanning a
    /// word at a time. Padding bits read as live, so a search for a free slot never returns
    /// one past the block.
    fn next_slot(&self, from: u64, live: bool) -> Option<u64> {
        let flip = if live { 0 } else { u64::MAX };
        let mut word = (from / 64) as usize;
        let mut bits = (self.used.get(word)? ^ flip) & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                let slot = word as u64 * 64 + u64::from(bits.trailing_zeros());
                return (slot < self.slot_count).then_some(slot);
            }
            word += 1;
            bits = self.used.get(word)? ^ flip;
        }
    }

    /// Free runs as `(first slot, length)`, in slot order.
    fn free_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut cursor = 0u64;
        std::iter::from_fn(move || {
            let first = self.next_slot(cursor, false)?;
            cursor = self.next_slot(first, true).unwrap_or(self.slot_count);
            Some((first, cursor - first))
        })
    }

    /// The most contiguous free slots.
    pub fn longest_free_run(&self) -> u64 {
        self.free_runs().map(|(_, len)| len).max().unwrap_or(0)
    }

    /// Takes `count` contiguous free slots (the lowest run that fits).
    pub(crate) fn take_run(&mut self, count: u64) -> Option<u64> {
        let (first, _) = self.free_runs().find(|&(_, len)| len >= count)?;
        self.set_range(first, count, true);
        Some(first)
    }

    pub(crate) fn run_at(&self, first: u64, count: u64) -> Run {
        Run { offset: self.slot_extent(first).offset, len: self.slot_size, count }
    }

    /// Live slots as extents, in offset order.
    pub(crate) fn live_slots(&self) -> impl Iterator<Item = Extent> + '_ {
        (0..self.slot_count).filter(|&s| self.is_used(s)).map(|s| self.slot_extent(s))
    }

    /// Checks the bitmap, summary and counter agree.
    pub(crate) fn check(&self) -> Result<()> {
        let counted = (0..self.slot_count).filter(|&s| self.is_used(s)).count() as u64;
        if counted != self.used_slots {
            return Err(Error::Invariant(format!(
                "block at {} counts {} live slots, its bitmap {counted}",
                self.base, self.used_slots
            )));
        }
        for (word, &bits) in self.used.iter().enumerate() {
            let summary_bit = self.summary[word / 64] & (1 << (word % 64)) != 0;
            if summary_bit != (bits != u64::MAX) {
                return Err(Error::Invariant(format!(
                    "block at {}: summary bit for word {word} is stale",
                    self.base
                )));
            }
        }
        let tail = self.slot_count % 64;
        if tail != 0 && self.used[self.used.len() - 1] & (!0u64 << tail) != !0u64 << tail {
            return Err(Error::Invariant(format!("block at {}: padding bits cleared", self.base)));
        }
        Ok(())
    }

    fn free_bytes(&self) -> u64 {
        (self.slot_count - self.used_slots) * self.slot_size
    }
}

impl Allocator for BlockAllocator {
    /// Takes the lowest free slot; the extent is the whole slot (`slot_size` bytes).
    fn allocate(&mut self, len: u64) -> Result<Extent> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if len > self.slot_size {
            return Err(Error::TooLarge { len, max: self.slot_size });
        }
        let end = self.extent().end();
        let slot = self.take_slot().ok_or(Error::OutOfSpace { len, file_end: end, limit: end })?;
        Ok(self.slot_extent(slot))
    }

    fn free(&mut self, extent: Extent) -> Result<()> {
        self.release(extent)
    }

    fn stats(&self) -> AllocStats {
        AllocStats {
            live_extents: self.used_slots,
            bytes_in_use: self.used_slots * self.slot_size,
            bytes_free: self.free_bytes(),
            largest_free: if self.is_full() { 0 } else { self.slot_size },
            file_end: self.extent().end(),
        }
    }

    fn live_extents(&self) -> Vec<Extent> {
        self.live_slots().collect()
    }

    fn file_end(&self) -> u64 {
        self.extent().end()
    }

    fn verify(&self) -> Result<()> {
        self.check()
    }

    fn encode(&self) -> Vec<u8> {
        codec::seal(Kind::Block, |writer| {
            writer.put_u64(self.base);
            writer.put_u64(self.slot_size);
            self.encode_slots(writer);
        })
    }
}

impl RunAllocator for BlockAllocator {
    /// The lowest run of `count` free slots; `NoRun` with the longest free run otherwise.
    fn allocate_run(&mut self, count: u64, len: u64) -> Result<Run> {
        if len == 0 || count == 0 {
            return Err(Error::ZeroLength);
        }
        if len > self.slot_size {
            return Err(Error::TooLarge { len, max: self.slot_size });
        }
        match self.take_run(count) {
            Some(first) => Ok(self.run_at(first, count)),
            None => {
                Err(Error::NoRun { count, len: self.slot_size, longest: self.longest_free_run() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_handed_out_lowest_first_until_exhausted() {
        let mut block = BlockAllocator::new(1000, 64, 130).unwrap();
        for i in 0..130 {
            assert_eq!(block.allocate(10).unwrap(), Extent::new(1000 + i * 64, 64));
        }
        assert!(matches!(block.allocate(1), Err(Error::OutOfSpace { .. })));
        block.free(Extent::new(1000 + 70 * 64, 64)).unwrap();
        assert_eq!(block.allocate(64).unwrap().offset, 1000 + 70 * 64);
        block.verify().unwrap();
    }

    #[test]
    fn frees_must_name_a_live_slot_exactly() {
        let mut block = BlockAllocator::new(0, 64, 8).unwrap();
        let slot = block.allocate(64).unwrap();
        assert!(block.free(Extent::new(1, 64)).is_err());
        assert!(block.free(Extent::new(0, 32)).is_err());
        assert!(block.free(Extent::new(64, 64)).is_err(), "never allocated");
        assert!(block.free(Extent::new(8 * 64, 64)).is_err(), "past the block");
        block.free(slot).unwrap();
        assert_eq!(block.free(slot), Err(Error::NotAllocated(slot)));
        assert!(matches!(block.allocate(65), Err(Error::TooLarge { len: 65, max: 64 })));
    }

    #[test]
    fn free_runs_cross_word_boundaries() {
        let mut block = BlockAllocator::new(0, 1, 200).unwrap();
        let all = block.allocate_run(200, 1).unwrap();
        assert_eq!(all.count, 200);
        for slot in 60..140 {
            block.free(Extent::new(slot, 1)).unwrap();
        }
        block.free(Extent::new(5, 1)).unwrap();
        block.free(Extent::new(199, 1)).unwrap();
        let runs: Vec<_> = block.free_runs().collect();
        assert_eq!(runs, vec![(5, 1), (60, 80), (199, 1)]);
        assert_eq!(block.longest_free_run(), 80);
        assert_eq!(block.allocate_run(70, 1).unwrap().offset, 60);
        assert!(matches!(block.allocate_run(11, 1), Err(Error::NoRun { longest: 10, .. })));
        block.verify().unwrap();
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(BlockAllocator::new(0, 0, 8).is_err());
        assert!(BlockAllocator::new(0, 8, 0).is_err());
        assert!(BlockAllocator::new(0, 8, MAX_BLOCK_SLOTS + 1).is_err());
        assert!(BlockAllocator::new(u64::MAX - 10, 8, 8).is_err());
    }
}
