//! `SimDisk`: crash images against a model, fault plans, and a crash sweep.

use std::collections::BTreeSet;
use std::io;
use std::ops::Range;

use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{
    CrashMode, FaultKind, FaultPlan, OpFilter, OpKind, PAGE_BYTES, Repeat, SimDisk, test_seed,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    SetLen(u64),
    Sync,
    /// A sync that fails with an injected I/O error.
    FailedSync,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..12_000, prop::collection::vec(1u8..=255, 1..1200))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
        1 => (0u64..14_000).prop_map(Op::SetLen),
        2 => Just(Op::Sync),
        1 => Just(Op::FailedSync),
    ]
}

const PAGE: usize = PAGE_BYTES as usize;

/// The model of the disk: what reads see, what the last successful sync made durable, and the
/// bytes each operation since the last sync touched (so the pages a power loss may damage).
#[derive(Debug, Default)]
struct Model {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Per pending operation: the bytes it touched, and the length it set, if a `set_len`.
    pending: Vec<(Range<usize>, Option<usize>)>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        let old_len = self.live.len();
        match op {
            Op::Write { offset, data } => {
                let (offset, end) = (*offset as usize, *offset as usize + data.len());
                if self.live.len() < end {
                    self.live.resize(end, 0);
                }
                self.live[offset..end].copy_from_slice(data);
                // A write past the end also fills the gap from the old end with zeros.
                self.pending.push((offset.min(old_len)..end, None));
            }
            Op::SetLen(len) => {
                let len = *len as usize;
                self.live.resize(len, 0);
                self.pending.push((old_len.min(len)..old_len.max(len), Some(len)));
            }
            Op::Sync => {
                // The live content of every touched page becomes durable, and the live length.
                self.durable.resize(self.live.len(), 0);
                for page in self.touched_pages() {
                    let start = (page * PAGE).min(self.live.len());
                    let end = ((page + 1) * PAGE).min(self.live.len());
                    self.durable[start..end].copy_from_slice(&self.live[start..end]);
                }
                self.pending.clear();
            }
            Op::FailedSync => self.pending.clear(),
        }
    }

    fn touched_pages(&self) -> BTreeSet<usize> {
        let ranges = self.pending.iter().map(|(range, _)| range).filter(|r| !r.is_empty());
        ranges.flat_map(|r| r.start / PAGE..=(r.end - 1) / PAGE).collect()
    }
}

fn run(disk: &SimDisk, op: &Op) -> io::Result<()> {
    match op {
        Op::Write { offset, data } => disk.write_at(data, *offset),
        Op::SetLen(len) => disk.set_len(*len),
        Op::Sync => disk.sync_data(),
        Op::FailedSync => {
            fail_next_sync(disk, FaultKind::Io);
            assert!(disk.sync_data().is_err());
            Ok(())
        }
    }
}

proptest! {
    /// A power-loss image keeps every page no operation touched since the last successful sync
    /// exactly as that sync left it, and changes length only as a pending operation did; a
    /// process-crash image is exactly the live state.
    #[test]
    fn crash_images_keep_every_untouched_page_and_nothing_unissued(
        ops in prop::collection::vec(op_strategy(), 0..30),
        seeds in prop::collection::vec(any::<u64>(), 1..6),
    ) {
        let disk = SimDisk::new();
        let mut model = Model::default();
        for op in &ops {
            run(&disk, op).unwrap();
            model.apply(op);
        }
        prop_assert_eq!(&disk.durable_image(), &model.durable);
        prop_assert_eq!(&disk.crash_image(CrashMode::ProcessCrash, 0), &model.live);
        prop_assert_eq!(disk.pending_ops(), model.pending.len());
        let touched = model.touched_pages();
        let cut = model.pending.iter().filter_map(|(_, len)| *len).min().unwrap_or(usize::MAX);
        // The furthest any pending operation could have extended the file.
        let reach = model.pending.iter().fold(model.durable.len(), |reach, (range, len)| {
            reach.max(range.end).max(len.unwrap_or(0))
        });
        for seed in seeds {
            let image = disk.crash_image(CrashMode::PowerLoss, seed);
            prop_assert!(image.len() <= reach, "seed {}: image grew past every issued op", seed);
            prop_assert!(image.len() >= model.durable.len() || cut != usize::MAX,
                "seed {}: durable bytes were lost without a truncation", seed);
            for (i, &byte) in image.iter().enumerate() {
                if i >= cut || touched.contains(&(i / PAGE)) {
                    continue;
                }
                // Untouched pages keep their durable bytes; past the durable end they can only
                // be the zeros of an extension.
                let expected = model.durable.get(i).copied().unwrap_or(0);
                prop_assert_eq!(byte, expected, "byte {} seed {}", i, seed);
            }
            if model.pending.is_empty() {
                prop_assert_eq!(&image, &model.durable);
            }
        }
    }
}

/// How a power loss left a page that was `old` and became `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    New,
    Old,
    Zeroed,
    Garbage,
}

fn fate(page: &[u8], old: &[u8], new: &[u8]) -> Fate {
    if page == new {
        Fate::New
    } else if page == old {
        Fate::Old
    } else if page.iter().all(|&b| b == 0) {
        Fate::Zeroed
    } else {
        Fate::Garbage
    }
}

/// The page, not the write, is the unit of damage: a 10-byte write can cost the page's other
/// 4086 durable bytes, while pages it did not touch never change.
#[test]
fn power_loss_damages_a_touched_page_whole_and_never_an_untouched_one() {
    let durable: Vec<u8> = [[1u8; PAGE], [3; PAGE], [5; PAGE]].concat();
    let disk = SimDisk::from_image(durable.clone());
    disk.write_at(&[2; 10], PAGE_BYTES + 100).unwrap();
    let old = &durable[PAGE..2 * PAGE];
    let mut new = old.to_vec();
    new[100..110].fill(2);
    let seed = test_seed();
    let mut seen = BTreeSet::new();
    for s in seed..seed + 200 {
        let image = disk.crash_image(CrashMode::PowerLoss, s);
        assert_eq!(image.len(), 3 * PAGE, "seed {s}");
        assert_eq!(&image[..PAGE], &durable[..PAGE], "seed {s}: an untouched page changed");
        assert_eq!(&image[2 * PAGE..], &durable[2 * PAGE..], "seed {s}: an untouched page changed");
        seen.insert(fate(&image[PAGE..2 * PAGE], old, &new));
    }
    let all = BTreeSet::from([Fate::New, Fate::Old, Fate::Zeroed, Fate::Garbage]);
    assert_eq!(seen, all, "200 seeds give every fate of the touched page");
    disk.sync_data().unwrap();
    for s in seed..seed + 20 {
        let image = disk.crash_image(CrashMode::PowerLoss, s);
        assert_eq!(&image[PAGE..2 * PAGE], &new[..], "seed {s}: a synced write was lost");
    }
}

#[test]
fn power_loss_picks_each_touched_page_independently() {
    let disk = SimDisk::from_image(vec![1; 2 * PAGE]);
    disk.write_at(&[2; 20], PAGE_BYTES - 10).unwrap();
    let mut new = vec![1; 2 * PAGE];
    new[PAGE - 10..PAGE + 10].fill(2);
    let seed = test_seed();
    let mixed = (seed..seed + 200).any(|s| {
        let image = disk.crash_image(CrashMode::PowerLoss, s);
        let first = fate(&image[..PAGE], &[1; PAGE], &new[..PAGE]);
        let second = fate(&image[PAGE..], &[1; PAGE], &new[PAGE..]);
        (first, second) == (Fate::New, Fate::Old)
    });
    assert!(mixed, "some seed lands the write's first page and loses its second");
}

#[test]
fn pages_past_the_surviving_length_do_not_exist() {
    let disk = SimDisk::from_image(vec![1; 2 * PAGE]);
    disk.set_len(PAGE_BYTES).unwrap();
    disk.write_at(&[2; 10], 3 * PAGE_BYTES).unwrap();
    let seed = test_seed();
    let mut lengths = BTreeSet::new();
    for s in seed..seed + 100 {
        let image = disk.crash_image(CrashMode::PowerLoss, s);
        assert_eq!(&image[..PAGE], &[1; PAGE], "seed {s}: the page before the cut changed");
        lengths.insert(image.len());
    }
    // The truncation and the extending write each survive or not; the write never shrinks.
    let expected = BTreeSet::from([PAGE, 2 * PAGE, 3 * PAGE + 10]);
    assert_eq!(lengths, expected);
}

/// Extending the file, by `set_len` or by a write past its end, rewrites the page that held
/// its end (the kernel zeroes the rest of it), durable bytes included.
#[test]
fn extending_the_file_exposes_its_last_page() {
    let seed = test_seed();
    let grow_by_set_len = |disk: &SimDisk| disk.set_len(2 * PAGE_BYTES).unwrap();
    let grow_by_write = |disk: &SimDisk| disk.write_at(&[2; 10], 2 * PAGE_BYTES).unwrap();
    for grow in [&grow_by_set_len as &dyn Fn(&SimDisk), &grow_by_write] {
        let disk = SimDisk::from_image(vec![1; 100]);
        grow(&disk);
        let damaged = (seed..seed + 100)
            .any(|s| disk.crash_image(CrashMode::PowerLoss, s).get(..100) != Some(&[1; 100][..]));
        assert!(damaged, "some seed damages the durable bytes of the old last page");
    }
}

fn fail_next_sync(disk: &SimDisk, kind: FaultKind) {
    let at = disk.op_counts().syncs;
    disk.set_fault(FaultPlan { at, on: OpFilter::Only(OpKind::Sync), kind, repeat: Repeat::Once });
}

/// A failed sync used to leave its writes pending, so the next sync made them durable; Linux
/// marks the pages clean after a failed fdatasync, and they may never reach the disk.
#[test]
fn regression_a_failed_sync_drops_its_writes_and_a_later_sync_does_not_revive_them() {
    let disk = SimDisk::from_image(vec![1; 100]);
    disk.write_at(b"abc", 0).unwrap();
    fail_next_sync(&disk, FaultKind::Io);
    assert!(disk.sync_data().is_err());
    assert_eq!(disk.pending_ops(), 0);
    disk.sync_data().unwrap(); // the fault was transient
    assert_eq!(disk.durable_image(), vec![1; 100]);
    assert_eq!(&disk.live_image()[..3], b"abc", "the page cache still shows the write");
    let seed = test_seed();
    for s in seed..seed + 20 {
        assert_eq!(disk.crash_image(CrashMode::PowerLoss, s), vec![1; 100], "seed {s}");
    }
}

/// A lost page written again is dirty again: the next sync writes the whole page as the page
/// cache holds it, bytes of the failed sync's writes included.
#[test]
fn a_page_written_after_a_failed_sync_becomes_durable_whole() {
    let disk = SimDisk::from_image(vec![1; 2 * PAGE]);
    disk.write_at(b"abc", 0).unwrap();
    disk.write_at(b"xyz", PAGE_BYTES).unwrap();
    fail_next_sync(&disk, FaultKind::Io);
    assert!(disk.sync_data().is_err());
    disk.write_at(b"d", 3).unwrap();
    disk.sync_data().unwrap();
    let durable = disk.durable_image();
    assert_eq!(&durable[..4], b"abcd");
    assert_eq!(&durable[PAGE..PAGE + 3], &[1; 3], "the page not written again stays lost");
}

/// A crash is not a failed sync: the writes before it stay in flight for a power loss to tear.
#[test]
fn a_crash_at_a_sync_leaves_its_writes_in_flight() {
    let disk = SimDisk::from_image(vec![1; PAGE]);
    disk.write_at(&[2; PAGE], 0).unwrap();
    disk.set_fault(FaultPlan::crash_at(disk.ops()));
    assert!(disk.sync_data().is_err());
    assert_eq!(disk.pending_ops(), 1);
    let seed = test_seed();
    let landed = (seed..seed + 50).any(|s| disk.crash_image(CrashMode::PowerLoss, s) == [2; PAGE]);
    assert!(landed, "some seed lands the in-flight write");
}

#[test]
fn faults_fire_once_or_from_then_on() {
    let disk = SimDisk::new();
    disk.set_fault(FaultPlan {
        at: 1,
        on: OpFilter::Only(OpKind::Write),
        kind: FaultKind::StorageFull,
        repeat: Repeat::Once,
    });
    disk.write_at(b"a", 0).unwrap();
    let err = disk.write_at(b"b", 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    disk.write_at(b"c", 2).unwrap();
    assert_eq!(disk.live_image(), b"a\0c", "the failed write did nothing");

    disk.set_fault(FaultPlan {
        at: 4,
        on: OpFilter::Any,
        kind: FaultKind::Io,
        repeat: Repeat::Always,
    });
    assert_eq!(disk.ops(), 3);
    disk.len().unwrap(); // op 3
    for _ in 0..3 {
        assert!(disk.len().is_err());
        assert!(disk.read_at(&mut [0], 0).is_err());
    }
    disk.clear_fault();
    assert_eq!(disk.len().unwrap(), 3);
    assert_eq!(disk.op_counts().lens, 5);
}

#[test]
fn a_torn_write_lands_half_and_reports_an_error() {
    let disk = SimDisk::new();
    disk.set_fault(FaultPlan {
        at: 0,
        on: OpFilter::Mutating,
        kind: FaultKind::TornWrite,
        repeat: Repeat::Once,
    });
    assert!(disk.write_at(&[9; 10], 0).is_err());
    assert_eq!(disk.live_image(), vec![9; 5]);
}

#[test]
fn the_space_limit_refuses_growth_but_allows_overwrites() {
    let disk = SimDisk::new();
    disk.set_space_limit(Some(100));
    disk.write_at(&[1; 100], 0).unwrap();
    disk.write_at(&[2; 10], 50).unwrap();
    assert_eq!(disk.write_at(&[3], 100).unwrap_err().kind(), io::ErrorKind::StorageFull);
    assert_eq!(disk.set_len(101).unwrap_err().kind(), io::ErrorKind::StorageFull);
    disk.set_len(10).unwrap();
    disk.set_space_limit(None);
    disk.set_len(1000).unwrap();
}

#[test]
fn reads_past_the_end_are_eof() {
    let disk = SimDisk::from_image(vec![1; 8]);
    let mut buf = [0; 4];
    disk.read_at(&mut buf, 4).unwrap();
    assert_eq!(disk.read_at(&mut buf, 5).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(disk.read_at(&mut buf, u64::MAX).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

/// A toy commit protocol: write the round's data as a whole page of its own (so the file's end
/// stays page-aligned and growing it rewrites no page a commit holds), sync, write the round
/// number into the header slot `round % 2` (the other slot keeps the previous commit), sync.
/// The slots lie `slot_stride` bytes apart.
fn commit_workload(disk: &SimDisk, rounds: u8, slot_stride: u64) -> io::Result<()> {
    for round in 1..=rounds {
        disk.write_at(&[round; PAGE], data_offset(round))?;
        disk.sync_data()?;
        disk.write_at(&[round; 8], slot_stride * u64::from(round % 2))?;
        disk.sync_data()?;
    }
    Ok(())
}

fn data_offset(round: u8) -> u64 {
    PAGE_BYTES * (1 + u64::from(round))
}

/// The newest round whose header slot is intact and whose data is complete, as an open
/// would choose it; 0 when none is.
fn recovered_round(image: &[u8], slot_stride: u64) -> u8 {
    let valid = |slot: usize| {
        let header = image.get(slot..slot + 8)?;
        let round = header[0];
        let data_start = data_offset(round) as usize;
        let data = image.get(data_start..data_start + PAGE)?;
        (round != 0 && header.iter().all(|&b| b == round) && data.iter().all(|&b| b == round))
            .then_some(round)
    };
    valid(0).into_iter().chain(valid(slot_stride as usize)).max().unwrap_or(0)
}

/// Crashes the toy protocol at every operation and returns the crash states, process crash or
/// power loss, that recover a round older than the last one whose header sync returned.
fn lost_commits(slot_stride: u64) -> Vec<String> {
    let rounds = 4;
    let probe = SimDisk::new();
    commit_workload(&probe, rounds, slot_stride).unwrap();
    let total_ops = probe.ops();
    assert_eq!(total_ops, 4 * u64::from(rounds));
    assert_eq!(recovered_round(&probe.durable_image(), slot_stride), rounds);
    let seed = test_seed();
    let mut lost = Vec::new();
    for k in 0..=total_ops {
        let disk = SimDisk::new();
        disk.set_fault(FaultPlan::crash_at(k));
        let _ = commit_workload(&disk, rounds, slot_stride);
        // Rounds whose header sync (the 4th op of each round) returned before the crash.
        let acknowledged = (k / 4) as u8;
        let power_losses = (0..8).map(|i| (CrashMode::PowerLoss, seed ^ (k << 8) ^ i));
        for (mode, tear_seed) in [(CrashMode::ProcessCrash, 0)].into_iter().chain(power_losses) {
            let round = recovered_round(&disk.crash_image(mode, tear_seed), slot_stride);
            if round < acknowledged {
                lost.push(format!(
                    "k={k} {mode:?} seed={tear_seed}: recovered {round} < acknowledged \
                     {acknowledged}"
                ));
            }
        }
    }
    lost
}

/// Sweeping a crash over every operation of a protocol whose header slots lie in separate
/// pages: every crash state recovers a round at least as new as the last acknowledged one.
#[test]
fn a_crash_sweep_over_every_operation_finds_only_committed_states() {
    let lost = lost_commits(PAGE_BYTES);
    assert!(lost.is_empty(), "{lost:#?}");
}

/// Two header slots in one page break under a power loss: writing one slot can destroy the
/// other, the last acknowledged commit. The page model must see it.
#[test]
fn a_crash_sweep_catches_two_header_slots_in_one_page() {
    let lost = lost_commits(512);
    assert!(!lost.is_empty(), "no crash state lost a commit with both slots in one page");
}
