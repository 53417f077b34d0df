//! Model-based tests: every allocator against an interval map of live extents.
//!
//! After every operation: the live extents equal the model's; none overlap; all lie in
//! `[start, file_end)`; `verify()` holds; the stats agree with the model. Allocation reuses
//! free space before growing the file (checked where the model can tell there is room).
//! `Reencode` replaces the allocator by `decode(encode)`, which must equal it and re-encode
//! to the same bytes; `Rebuild` replaces it by `rebuild_from(live extents)`.

use std::collections::BTreeMap;

use bob_alloc::{
    Allocator, BasicAllocator, BlockAllocator, Error, Extent, MultiBlockAllocator,
    OmniBlockAllocator, RunAllocator,
};
use proptest::prelude::*;

const START: u64 = 4096;

#[derive(Debug, Clone)]
enum Op {
    Allocate(u64),
    /// Free the live extent at this index (mod the number live).
    Free(usize),
    /// Free that extent and allocate its length again.
    FreeRealloc(usize),
    Run(u64, u64),
    /// `allocate_runs(count, len, min_run)`.
    Runs(u64, u64, u64),
    /// `allocate_at` of `len` bytes at the front of the gap at this index (mod the gaps,
    /// the last being past the file end), `skip` bytes past the end when it is the end.
    At(usize, u64, u64),
    Reencode,
    Rebuild,
}

fn ops(max_len: u64) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        8 => (1..=max_len).prop_map(Op::Allocate),
        6 => any::<usize>().prop_map(Op::Free),
        2 => any::<usize>().prop_map(Op::FreeRealloc),
        2 => (1u64..40, 1..=max_len).prop_map(|(c, l)| Op::Run(c, l)),
        2 => (1u64..40, 1..=max_len, 1u64..8).prop_map(|(c, l, m)| Op::Runs(c, l, m)),
        2 => (any::<usize>(), 1..=max_len, 0u64..300).prop_map(|(g, l, s)| Op::At(g, l, s)),
        1 => Just(Op::Reencode),
        1 => Just(Op::Rebuild),
    ];
    prop::collection::vec(op, 1..120)
}

/// How to make, decode and rebuild one kind of allocator, and what "room" means for it.
trait Harness: Allocator + RunAllocator + Sized + PartialEq + std::fmt::Debug {
    fn decode(bytes: &[u8]) -> bob_alloc::Result<Self>;
    fn rebuild(&self, live: Vec<Extent>) -> bob_alloc::Result<Self>;
    /// Whether a request of `len` bytes must be met without growing the file, judged from
    /// the model's live extents.
    fn must_fit(&self, model: &Model, len: u64) -> bool;
    /// `allocate_at(extent)`, for the kinds that have it.
    fn allocate_at(&mut self, _extent: Extent) -> Option<bob_alloc::Result<()>> {
        None
    }
    /// Checks particular to the kind.
    fn check_more(&self, _model: &Model) -> Result<(), TestCaseError> {
        Ok(())
    }
}

impl Harness for BasicAllocator {
    fn decode(bytes: &[u8]) -> bob_alloc::Result<Self> {
        BasicAllocator::decode(bytes)
    }
    fn rebuild(&self, live: Vec<Extent>) -> bob_alloc::Result<Self> {
        BasicAllocator::rebuild_from(self.start(), self.limit(), live)
    }
    fn must_fit(&self, model: &Model, len: u64) -> bool {
        model.gaps(self.file_end()).iter().any(|gap| gap.len >= len)
    }
    fn allocate_at(&mut self, extent: Extent) -> Option<bob_alloc::Result<()>> {
        Some(BasicAllocator::allocate_at(self, extent))
    }
    /// Free space is exactly the gaps between live extents, each gap one coalesced extent,
    /// and nothing free at the end.
    fn check_more(&self, model: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.free_extents(), model.gaps(self.file_end()));
        let last_live_end = model.live.values().last().map_or(START, |e| e.end());
        prop_assert_eq!(self.file_end(), last_live_end, "the file ends at the last live extent");
        Ok(())
    }
}

/// A `BasicAllocator` with page-aligned placement, pages of [`TEST_PAGE`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PageAligned(BasicAllocator);

const TEST_PAGE: u64 = 256;

impl Allocator for PageAligned {
    fn allocate(&mut self, len: u64) -> bob_alloc::Result<Extent> {
        self.0.allocate(len)
    }
    fn free(&mut self, extent: Extent) -> bob_alloc::Result<()> {
        self.0.free(extent)
    }
    fn stats(&self) -> bob_alloc::AllocStats {
        self.0.stats()
    }
    fn live_extents(&self) -> Vec<Extent> {
        self.0.live_extents()
    }
    fn file_end(&self) -> u64 {
        self.0.file_end()
    }
    fn verify(&self) -> bob_alloc::Result<()> {
        self.0.verify()
    }
    fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
}

impl RunAllocator for PageAligned {
    fn allocate_run(&mut self, count: u64, len: u64) -> bob_alloc::Result<bob_alloc::Run> {
        self.0.allocate_run(count, len)
    }
    fn allocate_runs(
        &mut self,
        count: u64,
        len: u64,
        min_run: u64,
    ) -> bob_alloc::Result<Vec<bob_alloc::Run>> {
        self.0.allocate_runs(count, len, min_run)
    }
}

impl Harness for PageAligned {
    fn decode(bytes: &[u8]) -> bob_alloc::Result<Self> {
        Ok(PageAligned(BasicAllocator::decode(bytes)?.with_page_alignment(TEST_PAGE)))
    }
    fn rebuild(&self, live: Vec<Extent>) -> bob_alloc::Result<Self> {
        let rebuilt = BasicAllocator::rebuild_from(self.0.start(), self.0.limit(), live)?;
        Ok(PageAligned(rebuilt.with_page_alignment(TEST_PAGE)))
    }
    fn allocate_at(&mut self, extent: Extent) -> Option<bob_alloc::Result<()>> {
        Some(self.0.allocate_at(extent))
    }
    /// A whole number of pages fits a gap where it can start on a page boundary.
    fn must_fit(&self, model: &Model, len: u64) -> bool {
        let aligned = len % TEST_PAGE == 0;
        model.gaps(self.file_end()).iter().any(|gap| {
            let at = if aligned { gap.offset.next_multiple_of(TEST_PAGE) } else { gap.offset };
            at + len <= gap.end()
        })
    }
    /// As for `BasicAllocator`, and every extent of whole pages starts on a page boundary.
    fn check_more(&self, model: &Model) -> Result<(), TestCaseError> {
        self.0.check_more(model)?;
        for extent in model.live.values().filter(|e| e.len % TEST_PAGE == 0) {
            prop_assert_eq!(extent.offset % TEST_PAGE, 0, "{:?} is not page-aligned", extent);
        }
        Ok(())
    }
}

/// `ops`, with every even length rounded up to whole pages of [`TEST_PAGE`] bytes.
fn paged_ops(max_len: u64) -> impl Strategy<Value = Vec<Op>> {
    let page = |len: u64| if len % 2 == 0 { len.next_multiple_of(TEST_PAGE) } else { len };
    ops(max_len).prop_map(move |ops| {
        ops.into_iter()
            .map(|op| match op {
                Op::Allocate(len) => Op::Allocate(page(len)),
                Op::Run(count, len) => Op::Run(count, page(len)),
                Op::Runs(count, len, min_run) => Op::Runs(count, page(len), min_run),
                // `allocate_at` places where it is told: an odd length is never whole pages,
                // which must be aligned.
                Op::At(gap, len, skip) => Op::At(gap, len | 1, skip),
                other => other,
            })
            .collect()
    })
}

impl Harness for BlockAllocator {
    fn decode(bytes: &[u8]) -> bob_alloc::Result<Self> {
        BlockAllocator::decode(bytes)
    }
    fn rebuild(&self, live: Vec<Extent>) -> bob_alloc::Result<Self> {
        BlockAllocator::rebuild_from(self.base(), self.slot_size(), self.slot_count(), live)
    }
    fn must_fit(&self, model: &Model, _len: u64) -> bool {
        (model.live.len() as u64) < self.slot_count()
    }
}

impl Harness for MultiBlockAllocator {
    fn decode(bytes: &[u8]) -> bob_alloc::Result<Self> {
        MultiBlockAllocator::decode(bytes)
    }
    fn rebuild(&self, live: Vec<Extent>) -> bob_alloc::Result<Self> {
        MultiBlockAllocator::rebuild_from(START, u64::MAX, self.slot_size(), live)
    }
    fn must_fit(&self, model: &Model, _len: u64) -> bool {
        let slots: u64 = self.block_extents().iter().map(|b| b.len / self.slot_size()).sum();
        let gap_slots: u64 =
            model.gaps_between_blocks(self).iter().map(|g| g.len / self.slot_size()).sum();
        (model.live.len() as u64) < slots || gap_slots > 0
    }
}

impl Harness for OmniBlockAllocator {
    fn decode(bytes: &[u8]) -> bob_alloc::Result<Self> {
        OmniBlockAllocator::decode(bytes)
    }
    fn rebuild(&self, live: Vec<Extent>) -> bob_alloc::Result<Self> {
        OmniBlockAllocator::rebuild_from(START, u64::MAX, &self.classes(), live)
    }
    fn must_fit(&self, _model: &Model, _len: u64) -> bool {
        false // reuse is checked through MultiBlockAllocator, which shares the pool code
    }
}

#[derive(Debug, Default)]
struct Model {
    live: BTreeMap<u64, Extent>,
}

impl Model {
    fn insert(&mut self, extent: Extent) -> Result<(), TestCaseError> {
        let before = self.live.range(..extent.end()).next_back().map(|(_, e)| *e);
        prop_assert!(
            before.is_none_or(|b| !b.overlaps(&extent)),
            "{:?} overlaps live {:?}",
            extent,
            before
        );
        self.live.insert(extent.offset, extent);
        Ok(())
    }

    fn nth(&self, index: usize) -> Option<Extent> {
        if self.live.is_empty() {
            return None;
        }
        self.live.values().nth(index % self.live.len()).copied()
    }

    /// Free space between live extents below `end` (Basic's holes).
    fn gaps(&self, end: u64) -> Vec<Extent> {
        let mut gaps = Vec::new();
        let mut cursor = START;
        for extent in self.live.values().chain(std::iter::once(&Extent::new(end, 0))) {
            if extent.offset > cursor {
                gaps.push(Extent::new(cursor, extent.offset - cursor));
            }
            cursor = cursor.max(extent.end());
        }
        gaps
    }

    /// Free space between blocks below the file end (a multi-block parent's holes).
    fn gaps_between_blocks(&self, multi: &MultiBlockAllocator) -> Vec<Extent> {
        let mut gaps = Vec::new();
        let mut cursor = START;
        for block in multi.block_extents() {
            if block.offset > cursor {
                gaps.push(Extent::new(cursor, block.offset - cursor));
            }
            cursor = block.end();
        }
        gaps
    }
}

fn check<A: Harness>(a: &A, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.verify(), Ok(()));
    let live = a.live_extents();
    prop_assert_eq!(&live, &model.live.values().copied().collect::<Vec<_>>());
    let stats = a.stats();
    prop_assert_eq!(stats.live_extents, model.live.len() as u64);
    prop_assert_eq!(stats.bytes_in_use, model.live.values().map(|e| e.len).sum::<u64>());
    prop_assert_eq!(stats.file_end, a.file_end());
    if let Some(last) = live.last() {
        prop_assert!(last.end() <= a.file_end() && live[0].offset >= START);
    }
    a.check_more(model)
}

fn allocate_checked<A: Harness>(
    a: &mut A,
    model: &mut Model,
    len: u64,
) -> Result<(), TestCaseError> {
    let must_fit = a.must_fit(model, len);
    let end_before = a.file_end();
    match a.allocate(len) {
        Ok(extent) => {
            prop_assert!(extent.len >= len);
            if must_fit {
                prop_assert_eq!(
                    a.file_end(),
                    end_before,
                    "grew the file for {} bytes despite room",
                    len
                );
            }
            model.insert(extent)?;
        }
        Err(Error::OutOfSpace { .. } | Error::TooLarge { .. }) => {}
        Err(other) => prop_assert!(false, "allocate({}) failed: {}", len, other),
    }
    Ok(())
}

fn run_model<A: Harness>(mut a: A, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Allocate(len) => allocate_checked(&mut a, &mut model, len)?,
            Op::Free(index) => {
                if let Some(extent) = model.nth(index) {
                    prop_assert_eq!(a.free(extent), Ok(()));
                    model.live.remove(&extent.offset);
                    prop_assert_eq!(a.free(extent), Err(Error::NotAllocated(extent)));
                }
            }
            Op::FreeRealloc(index) => {
                if let Some(extent) = model.nth(index) {
                    prop_assert_eq!(a.free(extent), Ok(()));
                    model.live.remove(&extent.offset);
                    allocate_checked(&mut a, &mut model, extent.len)?;
                }
            }
            Op::Run(count, len) => match a.allocate_run(count, len) {
                Ok(run) => {
                    prop_assert_eq!(run.count, count);
                    for extent in run.extents() {
                        prop_assert!(extent.len >= len);
                        model.insert(extent)?;
                    }
                }
                Err(Error::NoRun { longest, .. }) => prop_assert!(longest < count),
                Err(Error::TooLarge { .. }) => {}
                Err(other) => {
                    prop_assert!(false, "allocate_run({}, {}) failed: {}", count, len, other)
                }
            },
            Op::Runs(count, len, min_run) => match a.allocate_runs(count, len, min_run) {
                Ok(runs) => {
                    prop_assert_eq!(runs.iter().map(|r| r.count).sum::<u64>(), count);
                    // Every run but the last filled free space and holds at least `min_run`.
                    for run in &runs[..runs.len() - 1] {
                        prop_assert!(run.count >= min_run.min(count));
                    }
                    for extent in runs.iter().flat_map(|r| r.extents()) {
                        prop_assert!(extent.len >= len);
                        model.insert(extent)?;
                    }
                }
                Err(Error::NoRun { .. } | Error::TooLarge { .. } | Error::OutOfSpace { .. }) => {}
                Err(other) => prop_assert!(
                    false,
                    "allocate_runs({}, {}, {}) failed: {}",
                    count,
                    len,
                    min_run,
                    other
                ),
            },
            Op::At(index, len, skip) => {
                let end = a.file_end();
                let gaps = model.gaps(end);
                let gap = gaps.get(index % (gaps.len() + 1)).copied();
                // The front of a gap, whole or in part, or past the end.
                let extent = match gap {
                    Some(gap) => Extent::new(gap.offset, len),
                    None => Extent::new(end + skip, len),
                };
                let fits = gap.is_none_or(|g| len <= g.len);
                match a.allocate_at(extent) {
                    None => {}
                    Some(Ok(())) => {
                        prop_assert!(fits, "allocate_at({:?}) took more than the gap", extent);
                        model.insert(extent)?;
                    }
                    Some(Err(Error::OutOfSpace { .. })) if gap.is_none() => {}
                    Some(Err(Error::InvalidExtent { .. })) if !fits => {}
                    Some(Err(e)) => prop_assert!(false, "allocate_at({:?}): {}", extent, e),
                }
            }
            Op::Reencode => {
                let bytes = a.encode();
                let decoded = A::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&decoded, &a);
                prop_assert_eq!(decoded.encode(), bytes);
                a = decoded;
            }
            Op::Rebuild => {
                let rebuilt =
                    a.rebuild(a.live_extents()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(rebuilt.file_end() <= a.file_end());
                a = rebuilt;
            }
        }
        check(&a, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn basic_allocator_matches_the_model(ops in ops(5000)) {
        run_model(BasicAllocator::new(START), ops)?;
    }

    #[test]
    fn basic_allocator_with_a_limit_matches_the_model(ops in ops(5000)) {
        run_model(BasicAllocator::with_limit(START, START + 40_000), ops)?;
    }

    #[test]
    fn page_aligned_basic_allocator_matches_the_model(ops in paged_ops(3000)) {
        run_model(PageAligned(BasicAllocator::new(START).with_page_alignment(TEST_PAGE)), ops)?;
    }

    #[test]
    fn page_aligned_basic_allocator_with_a_limit_matches_the_model(ops in paged_ops(3000)) {
        let limited = BasicAllocator::with_limit(START, START + 40_000);
        run_model(PageAligned(limited.with_page_alignment(TEST_PAGE)), ops)?;
    }

    #[test]
    fn block_allocator_matches_the_model(ops in ops(64), slots in 1u64..300) {
        run_model(BlockAllocator::new(START, 64, slots).unwrap(), ops)?;
    }

    #[test]
    fn multi_block_allocator_matches_the_model(ops in ops(100), slot in 1u64..=100) {
        run_model(MultiBlockAllocator::new(START, slot).unwrap(), ops)?;
    }

    #[test]
    fn omni_block_allocator_matches_the_model(ops in ops(40_000)) {
        run_model(OmniBlockAllocator::new(START), ops)?;
    }

    #[test]
    fn omni_with_few_classes_and_a_limit_matches_the_model(ops in ops(300)) {
        let omni = OmniBlockAllocator::with_classes(START, START + 20_000, &[8, 24, 100]).unwrap();
        run_model(omni, ops)?;
    }
}
