//! `OmniBlockAllocator`: routes each request by size class to a block pool; requests above the
//! largest class go to the shared parent `BasicAllocator`.
//!
//! # Size classes
//! [`DEFAULT_CLASSES`]: every multiple of 16 bytes up to 128 (8 classes), then four classes
//! per doubling (×1.25, ×1.5, ×1.75, ×2) up to 32 KiB (32 classes); 40 in all. A request gets
//! the smallest class that holds it, so the waste is under 16 bytes for requests up to 128
//! bytes and under 20 % of the slot above that (the worst case is 129 bytes in a 160-byte
//! slot, 19.4 %). Requests over 32 KiB get exactly their length from the parent.

use std::collections::BTreeMap;

use crate::codec::{self, Kind, Writer};
use crate::extent::sorted_disjoint;
use crate::pool::{BlockPool, MAX_BLOCK_BYTES, rebuild_pools};
use crate::{AllocStats, Allocator, BasicAllocator, Error, Extent, Result, Run, RunAllocator};

const fn default_classes() -> [u64; 40] {
    let mut classes = [0u64; 40];
    let mut i = 0;
    while i < 8 {
        classes[i] = (i as u64 + 1) * 16;
        i += 1;
    }
    let mut base = 128;
    while i < 40 {
        classes[i] = base * 5 / 4;
        classes[i + 1] = base * 6 / 4;
        classes[i + 2] = base * 7 / 4;
        classes[i + 3] = base * 2;
        base *= 2;
        i += 4;
    }
    classes
}

/// The default slot sizes, ascending; see the module docs.
pub const DEFAULT_CLASSES: [u64; 40] = default_classes();

/// The most size classes an omni allocator may have.
pub const MAX_CLASSES: usize = 64;

/// Size-classed allocation over block pools and a shared parent; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmniBlockAllocator {
    parent: BasicAllocator,
    /// The slot size of each pool, dense, for the class search.
    class_sizes: Vec<u64>,
    /// Class lookup: `class_table[ceil(len / granule)]` is the class of `len` (classes are
    /// multiples of `granule`); empty when the table would be too large.
    class_table: Vec<u8>,
    granule: u64,
    pools: Vec<BlockPool>,
    /// Extents above the largest class, allocated straight from the parent.
    large: BTreeMap<u64, u64>,
    large_bytes: u64,
}

fn check_classes(classes: &[u64]) -> Result<()> {
    let ascending = classes.windows(2).all(|pair| pair[0] < pair[1]);
    let in_range = classes.iter().all(|&size| (1..=MAX_BLOCK_BYTES).contains(&size));
    if classes.is_empty() || classes.len() > MAX_CLASSES || !ascending || !in_range {
        return Err(Error::Config(format!(
            "size classes must be 1 to {MAX_CLASSES} strictly ascending sizes of 1 to \
             {MAX_BLOCK_BYTES} bytes, not {classes:?}"
        )));
    }
    Ok(())
}

/// The most entries in an omni allocator's class lookup table.
const MAX_CLASS_TABLE: u64 = 8192;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The class lookup table for `classes` (see `OmniBlockAllocator::class_table`).
fn class_table(classes: &[u64]) -> (u64, Vec<u8>) {
    let granule = classes.iter().fold(0, |g, &size| gcd(g, size)).max(1);
    let largest = classes.last().copied().unwrap_or(0);
    if largest / granule >= MAX_CLASS_TABLE {
        return (granule, Vec::new());
    }
    let table = (0..=largest / granule)
        .map(|index| classes.partition_point(|&size| size < index * granule) as u8)
        .collect();
    (granule, table)
}

/// The parent of a decoded block allocator: live extents exactly `extents`, ending at `end`.
pub(crate) fn derive_parent(
    start: u64,
    end: u64,
    limit: u64,
    extents: impl IntoIterator<Item = Extent>,
) -> Result<BasicAllocator> {
    let parent = BasicAllocator::rebuild_from(start, limit, extents)
        .map_err(|e| Error::Corrupt(format!("blocks and large extents: {e}")))?;
    if parent.file_end() != end || start > limit {
        return Err(Error::Corrupt(format!(
            "file end {end} is not the end {} of the last block or large extent",
            parent.file_end()
        )));
    }
    Ok(parent)
}

impl OmniBlockAllocator {
    /// An empty allocator with [`DEFAULT_CLASSES`], handing out space from `start`.
    pub fn new(start: u64) -> Self {
        Self::empty(BasicAllocator::new(start), &DEFAULT_CLASSES)
    }

    /// An empty allocator with the given size classes and file limit.
    pub fn with_classes(start: u64, limit: u64, classes: &[u64]) -> Result<Self> {
        check_classes(classes)?;
        Ok(Self::empty(BasicAllocator::with_limit(start, limit), classes))
    }

    fn empty(parent: BasicAllocator, classes: &[u64]) -> Self {
        let pools = classes.iter().map(|&size| BlockPool::new(size)).collect();
        Self::assemble(parent, classes.to_vec(), pools, BTreeMap::new())
    }

    fn assemble(
        parent: BasicAllocator,
        class_sizes: Vec<u64>,
        pools: Vec<BlockPool>,
        large: BTreeMap<u64, u64>,
    ) -> Self {
        let (granule, class_table) = class_table(&class_sizes);
        let large_bytes = large.values().sum();
        Self { parent, class_sizes, class_table, granule, pools, large, large_bytes }
    }

    /// An allocator whose live extents are exactly `extents`: each either a class's slot size
    /// or larger than every class. Same-class extents are regrouped into blocks (see the
    /// crate docs).
    pub fn rebuild_from(
        start: u64,
        limit: u64,
        classes: &[u64],
        extents: impl IntoIterator<Item = Extent>,
    ) -> Result<Self> {
        check_classes(classes)?;
        let sorted = sorted_disjoint(extents.into_iter().collect(), start, limit.max(start))?;
        let (pools, large) = rebuild_pools(classes, &sorted)?;
        let parent = BasicAllocator::rebuild_from(
            start,
            limit,
            pools.iter().flat_map(BlockPool::block_extents).chain(large.iter().copied()),
        )?;
        let large = large.into_iter().map(|e| (e.offset, e.len)).collect();
        Ok(Self::assemble(parent, classes.to_vec(), pools, large))
    }

    /// Decodes state written by [`Allocator::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = codec::open(bytes, Kind::Omni)?;
        let start = reader.u64("start")?;
        let end = reader.u64("file end")?;
        let limit = reader.u64("limit")?;
        let class_count = reader.count("class count", 8)?;
        let mut classes = Vec::with_capacity(class_count.min(MAX_CLASSES));
        for _ in 0..class_count.min(MAX_CLASSES + 1) {
            classes.push(reader.u64("class size")?);
        }
        check_classes(&classes).map_err(|e| Error::Corrupt(e.to_string()))?;
        let large_count = reader.count("large extent count", 16)?;
        let mut large = BTreeMap::new();
        for _ in 0..large_count {
            let extent = reader.extent("large extent")?;
            if extent.len <= classes[classes.len() - 1] {
                return Err(Error::Corrupt(format!(
                    "large extent at {} is only {} bytes",
                    extent.offset, extent.len
                )));
            }
            if extent.checked_end().is_none() {
                return Err(Error::Corrupt(format!("large extent at {} overflows", extent.offset)));
            }
            large.insert(extent.offset, extent.len);
        }
        if large.len() != large_count {
            return Err(Error::Corrupt("two large extents share an offset".into()));
        }
        let mut pools = Vec::with_capacity(classes.len());
        for &size in &classes {
            pools.push(BlockPool::decode_from(&mut reader, size)?);
        }
        reader.finish()?;
        let parent = derive_parent(
            start,
            end,
            limit,
            pools
                .iter()
                .flat_map(BlockPool::block_extents)
                .chain(large.iter().map(|(&o, &l)| Extent::new(o, l))),
        )?;
        Ok(Self::assemble(parent, classes, pools, large))
    }

    /// The size classes, ascending.
    pub fn classes(&self) -> Vec<u64> {
        self.class_sizes.clone()
    }

    /// The slot size a request of `len` bytes gets, or `None` if it goes to the parent.
    pub fn class_size(&self, len: u64) -> Option<u64> {
        self.class_of(len).map(|class| self.pools[class].slot_size())
    }

    /// Blocks held, over all classes.
    pub fn block_count(&self) -> usize {
        self.pools.iter().map(BlockPool::block_count).sum()
    }

    fn class_of(&self, len: u64) -> Option<usize> {
        if let Some(&class) = self.class_table.get(len.div_ceil(self.granule) as usize) {
            return Some(usize::from(class));
        }
        let class = self.class_sizes.partition_point(|&size| size < len);
        (class < self.class_sizes.len()).then_some(class)
    }
}

impl Allocator for OmniBlockAllocator {
    /// A slot of the smallest class that holds `len`, or exactly `len` bytes from the parent
    /// above the largest class.
    fn allocate(&mut self, len: u64) -> Result<Extent> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        match self.class_of(len) {
            Some(class) => self.pools[class].allocate(&mut self.parent),
            None => {
                let extent = self.parent.allocate(len)?;
                self.large.insert(extent.offset, extent.len);
                self.large_bytes += extent.len;
                Ok(extent)
            }
        }
    }

    fn free(&mut self, extent: Extent) -> Result<()> {
        match self.class_of(extent.len) {
            Some(class) if self.class_sizes[class] == extent.len => {
                self.pools[class].free(&mut self.parent, extent)
            }
            Some(_) => Err(Error::NotAllocated(extent)),
            None => {
                if self.large.get(&extent.offset) != Some(&extent.len) {
                    return Err(Error::NotAllocated(extent));
                }
                self.large.remove(&extent.offset);
                self.large_bytes -= extent.len;
                self.parent.free(extent).map_err(|e| {
                    Error::Invariant(format!("a large extent was not live in the parent: {e}"))
                })
            }
        }
    }

    fn stats(&self) -> AllocStats {
        let parent = self.parent.stats();
        let slots: u64 = self.pools.iter().map(BlockPool::used_slots).sum();
        let slot_bytes: u64 = self.pools.iter().map(|p| p.used_slots() * p.slot_size()).sum();
        let free_slot_bytes: u64 = self.pools.iter().map(BlockPool::free_slot_bytes).sum();
        let largest_slot = self
            .pools
            .iter()
            .filter(|p| p.has_free_slot())
            .map(BlockPool::slot_size)
            .max()
            .unwrap_or(0);
        AllocStats {
            live_extents: slots + self.large.len() as u64,
            bytes_in_use: slot_bytes + self.large_bytes,
            bytes_free: parent.bytes_free + free_slot_bytes,
            largest_free: parent.largest_free.max(largest_slot),
            file_end: parent.file_end,
        }
    }

    fn live_extents(&self) -> Vec<Extent> {
        let mut all: Vec<Extent> = self.pools.iter().flat_map(BlockPool::live_slots).collect();
        all.extend(self.large.iter().map(|(&offset, &len)| Extent::new(offset, len)));
        all.sort_unstable();
        all
    }

    fn file_end(&self) -> u64 {
        self.parent.file_end()
    }

    fn verify(&self) -> Result<()> {
        self.parent.verify()?;
        for pool in &self.pools {
            pool.verify(&self.parent)?;
        }
        for (&offset, &len) in &self.large {
            if !self.parent.is_live(Extent::new(offset, len)) {
                return Err(Error::Invariant(format!("large extent at {offset} is not live")));
            }
        }
        let expected = self.block_count() as u64 + self.large.len() as u64;
        if self.parent.stats().live_extents != expected
            || self.large.values().sum::<u64>() != self.large_bytes
        {
            return Err(Error::Invariant(
                "the parent's live extents are not exactly the blocks and large extents".into(),
            ));
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        codec::seal(Kind::Omni, |writer: &mut Writer| {
            writer.put_u64(self.parent.start());
            writer.put_u64(self.parent.file_end());
            writer.put_u64(self.parent.limit());
            writer.put_u64(self.pools.len() as u64);
            for pool in &self.pools {
                writer.put_u64(pool.slot_size());
            }
            writer.put_u64(self.large.len() as u64);
            for (&offset, &len) in &self.large {
                writer.put_extent(Extent::new(offset, len));
            }
            for pool in &self.pools {
                pool.encode_into(writer);
            }
        })
    }
}

impl RunAllocator for OmniBlockAllocator {
    /// A run inside the class of `len` (extents are whole slots), or, above the largest
    /// class, a run of exactly `len`-byte extents from the parent.
    fn allocate_run(&mut self, count: u64, len: u64) -> Result<Run> {
        if len == 0 || count == 0 {
            return Err(Error::ZeroLength);
        }
        match self.class_of(len) {
            Some(class) => self.pools[class].allocate_run(&mut self.parent, count),
            None => {
                let run = self.parent.allocate_run(count, len)?;
                for extent in run.extents() {
                    self.large.insert(extent.offset, extent.len);
                }
                self.large_bytes += run.total_len();
                Ok(run)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes_ascend_with_bounded_waste() {
        assert_eq!(DEFAULT_CLASSES[0], 16);
        assert_eq!(DEFAULT_CLASSES[7], 128);
        assert_eq!(DEFAULT_CLASSES[39], 32 * 1024);
        check_classes(&DEFAULT_CLASSES).unwrap();
        for pair in DEFAULT_CLASSES.windows(2) {
            let worst_request = pair[0] + 1;
            let waste = pair[1] - worst_request;
            if pair[1] <= 128 {
                assert!(waste < 16, "{pair:?}");
            } else {
                assert!((waste as f64) / (pair[1] as f64) < 0.20, "{pair:?}");
            }
        }
    }

    #[test]
    fn requests_route_by_class_and_large_ones_go_to_the_parent() {
        let mut omni = OmniBlockAllocator::new(0);
        assert_eq!(omni.allocate(100).unwrap().len, 112);
        assert_eq!(omni.allocate(129).unwrap().len, 160);
        let big = omni.allocate(40_000).unwrap();
        assert_eq!(big.len, 40_000);
        assert_eq!(omni.class_size(1), Some(16));
        assert_eq!(omni.class_size(32 * 1024 + 1), None);
        omni.verify().unwrap();
        omni.free(big).unwrap();
        assert!(omni.free(big).is_err());
        assert!(omni.free(Extent::new(0, 100)).is_err(), "not a slot size");
        omni.verify().unwrap();
    }

    #[test]
    fn the_class_table_agrees_with_a_search() {
        for classes in [&DEFAULT_CLASSES[..], &[8, 24, 100], &[3, 1 << 20]] {
            let omni = OmniBlockAllocator::with_classes(0, u64::MAX, classes).unwrap();
            for len in (1..70_000).chain([1 << 20, (1 << 20) + 1]) {
                let searched = classes.partition_point(|&size| size < len);
                let expected = (searched < classes.len()).then_some(searched);
                assert_eq!(omni.class_of(len), expected, "{classes:?} len {len}");
            }
        }
    }

    #[test]
    fn one_small_object_makes_a_small_file() {
        let mut omni = OmniBlockAllocator::new(0);
        omni.allocate(100).unwrap();
        assert_eq!(omni.file_end(), 8 * 112, "one block of 8 slots, not 262 KB");
    }
}
