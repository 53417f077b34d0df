//! Behaviours carried over from the Go original, and soaks.

use bob_alloc::{
    Allocator, BasicAllocator, Error, Extent, MIN_BLOCK_SLOTS, MultiBlockAllocator,
    OmniBlockAllocator, RunAllocator,
};

#[test]
fn omni_reuses_a_deleted_middle_extent_of_the_same_size() {
    let mut omni = OmniBlockAllocator::new(0);
    let extents: Vec<_> = (0..5).map(|_| omni.allocate(200).unwrap()).collect();
    omni.free(extents[2]).unwrap();
    assert_eq!(omni.allocate(200).unwrap(), extents[2]);
    let big: Vec<_> = (0..3).map(|_| omni.allocate(50_000).unwrap()).collect();
    omni.free(big[1]).unwrap();
    assert_eq!(omni.allocate(50_000).unwrap(), big[1]);
    omni.verify().unwrap();
}

#[test]
fn multi_blocks_double_and_empty_blocks_return_to_the_parent() {
    let mut multi = MultiBlockAllocator::new(0, 64).unwrap();
    let extents: Vec<_> = (0..MIN_BLOCK_SLOTS * 7).map(|_| multi.allocate(64).unwrap()).collect();
    let sizes: Vec<u64> = multi.block_extents().iter().map(|b| b.len / 64).collect();
    assert_eq!(sizes, vec![8, 8, 16, 32], "capacity doubles");
    // Empty the last block: it goes back and the file shrinks.
    for extent in &extents[32..] {
        multi.free(*extent).unwrap();
    }
    assert_eq!(multi.block_count(), 3);
    assert_eq!(multi.file_end(), 32 * 64);
    // Empty the first block: it goes back as a hole, which the next block reuses.
    for extent in &extents[..8] {
        multi.free(*extent).unwrap();
    }
    assert_eq!(multi.block_count(), 2);
    // Both remaining blocks are full; the doubling size (24 slots) does not fit the 8-slot
    // hole, so the new block takes the hole's size instead of growing the file.
    let next = multi.allocate(64).unwrap();
    assert_eq!(next.offset, 0, "the hole left by the first block is reused");
    assert_eq!(multi.block_extents()[0], Extent::new(0, 8 * 64));
    assert_eq!(multi.file_end(), 32 * 64);
    multi.verify().unwrap();
}

#[test]
fn runs_full_partial_fragmented_and_impossible() {
    // Full: a run in a fresh block.
    let mut multi = MultiBlockAllocator::with_limit(0, 64 * 100, 64).unwrap();
    let run = multi.allocate_run(40, 64).unwrap();
    assert_eq!((run.offset, run.count), (0, 40));

    // Fragmented: free every other slot; no run of 2 exists in the block, so a new block.
    for extent in run.extents().step_by(2) {
        multi.free(extent).unwrap();
    }
    let second = multi.allocate_run(2, 64).unwrap();
    assert_eq!(second.offset, 40 * 64, "a new block after the fragmented one");

    // Partial: the limit leaves room for 58 more slots; asking for 70 says how many fit, and
    // taking that many works (grouped batching).
    let err = multi.allocate_run(70, 64).unwrap_err();
    let Error::NoRun { longest, .. } = err else { panic!("{err}") };
    assert!((1..70).contains(&longest), "{longest}");
    // Impossible: nothing near that long exists. The reported longest is a real run.
    let got = multi.allocate_run(longest, 64).unwrap();
    assert_eq!(got.count, longest);
    multi.verify().unwrap();

    let mut full = MultiBlockAllocator::with_limit(0, 64 * 8, 64).unwrap();
    full.allocate_run(8, 64).unwrap();
    assert!(matches!(full.allocate_run(1, 64), Err(Error::NoRun { longest: 0, .. })));
}

/// 64-byte class, 5,000 extents, 50 rounds of freeing and re-allocating 200: the file end
/// and the encoded state stay where the first fill put them.
#[test]
fn churn_soak_keeps_the_file_and_state_bounded() {
    let mut rng = fastrand::Rng::with_seed(bob_io_helpers::testing::test_seed());
    let mut omni = OmniBlockAllocator::new(0);
    let mut basic = BasicAllocator::new(0);
    let mut live: Vec<(Extent, Extent)> =
        (0..5000).map(|_| (omni.allocate(64).unwrap(), basic.allocate(64).unwrap())).collect();
    let (omni_end, basic_end) = (omni.file_end(), basic.file_end());
    let (omni_state, basic_state) = (omni.encode().len(), basic.encode().len());
    for _ in 0..50 {
        for _ in 0..200 {
            let (a, b) = live.swap_remove(rng.usize(..live.len()));
            omni.free(a).unwrap();
            basic.free(b).unwrap();
        }
        for _ in 0..200 {
            live.push((omni.allocate(64).unwrap(), basic.allocate(64).unwrap()));
        }
        assert!(omni.file_end() <= omni_end && basic.file_end() <= basic_end);
        assert!(omni.encode().len() <= omni_state && basic.encode().len() <= basic_state);
    }
    omni.verify().unwrap();
    basic.verify().unwrap();
    // 5,000 slots of 64 bytes with doubling blocks: at most twice the live bytes.
    assert!(omni_end <= 2 * 5000 * 64, "{omni_end}");
}
