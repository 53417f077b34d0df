//! `SimDisk`: crash images against a model, fault plans, and a crash sweep.

use std::io;

use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{
    CrashMode, FaultKind, FaultPlan, OpFilter, OpKind, Repeat, SimDisk, test_seed,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
    Sync,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4096, prop::collection::vec(1u8..=255, 1..1200))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
        1 => (0u64..5000).prop_map(Op::SetLen),
        2 => Just(Op::Sync),
    ]
}

/// What the file holds after `ops`, applied to a plain `Vec`.
fn model_apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
        Op::Sync => {}
    }
}

fn run(disk: &SimDisk, op: &Op) -> io::Result<()> {
    match op {
        Op::Write { offset, data } => disk.write_at(data, *offset),
        Op::SetLen(len) => disk.set_len(*len),
        Op::Sync => disk.sync_data(),
    }
}

/// Bytes that the ops after the last sync may have changed: every pending write's range, and
/// everything from the smallest pending `set_len` on.
fn exempt(pending: &[Op]) -> impl Fn(usize) -> bool + '_ {
    let cut = pending
        .iter()
        .filter_map(|op| if let Op::SetLen(len) = op { Some(*len as usize) } else { None })
        .min()
        .unwrap_or(usize::MAX);
    move |i| {
        i >= cut
            || pending.iter().any(|op| match op {
                Op::Write { offset, data } => {
                    (*offset as usize..*offset as usize + data.len()).contains(&i)
                }
                _ => false,
            })
    }
}

proptest! {
    /// A power-loss image holds every synced byte, and differs from the last synced state
    /// only where an unsynced write or length change was issued; a process-crash image is
    /// exactly the live state.
    #[test]
    fn crash_images_hold_synced_writes_and_nothing_unissued(
        ops in prop::collection::vec(op_strategy(), 0..30),
        seeds in prop::collection::vec(any::<u64>(), 1..6),
    ) {
        let disk = SimDisk::new();
        let mut live = Vec::new();
        let mut synced = Vec::new();
        let mut pending: Vec<Op> = Vec::new();
        for op in &ops {
            run(&disk, op).unwrap();
            model_apply(&mut live, op);
            if let Op::Sync = op {
                synced = live.clone();
                pending.clear();
            } else {
                pending.push(op.clone());
            }
        }
        prop_assert_eq!(&disk.durable_image(), &synced);
        prop_assert_eq!(&disk.crash_image(CrashMode::ProcessCrash, 0), &live);
        let may_differ = exempt(&pending);
        // The furthest any pending operation could have extended the file.
        let reach = pending.iter().fold(synced.len(), |reach, op| match op {
            Op::Write { offset, data } => reach.max(*offset as usize + data.len()),
            Op::SetLen(len) => reach.max(*len as usize),
            Op::Sync => reach,
        });
        for seed in seeds {
            let image = disk.crash_image(CrashMode::PowerLoss, seed);
            prop_assert!(image.len() <= reach, "seed {}: image grew past every issued op", seed);
            for (i, &byte) in image.iter().enumerate() {
                if may_differ(i) {
                    continue;
                }
                // Untouched bytes keep their synced value; past the synced end they can only
                // be the zeros of an extension.
                let expected = synced.get(i).copied().unwrap_or(0);
                prop_assert_eq!(byte, expected, "byte {} seed {}", i, seed);
            }
            prop_assert!(image.len() >= synced.len() || pending.iter().any(|op| matches!(op, Op::SetLen(_))),
                "seed {}: synced bytes were lost without a truncation", seed);
            if pending.is_empty() {
                prop_assert_eq!(&image, &synced);
            }
        }
    }
}

#[test]
fn power_loss_tears_unsynced_writes_per_sector() {
    let disk = SimDisk::new();
    disk.write_at(&[1; 4096], 0).unwrap();
    disk.sync_data().unwrap();
    disk.write_at(&[2; 4096], 0).unwrap();
    let seed = test_seed();
    let mut saw = [false; 2];
    for s in seed..seed + 64 {
        let image = disk.crash_image(CrashMode::PowerLoss, s);
        assert_eq!(image.len(), 4096);
        for sector in image.chunks(512) {
            // Each sector is old, new, zeroed or garbage; count the first two.
            if sector == [1; 512] {
                saw[0] = true;
            } else if sector == [2; 512] {
                saw[1] = true;
            }
        }
    }
    assert_eq!(saw, [true, true], "64 seeds produce both old and new sectors");
}

#[test]
fn a_failed_sync_leaves_writes_pending() {
    let disk = SimDisk::new();
    disk.write_at(b"abc", 0).unwrap();
    disk.set_fault(FaultPlan {
        at: 0,
        on: OpFilter::Only(OpKind::Sync),
        kind: FaultKind::Io,
        repeat: Repeat::Once,
    });
    assert!(disk.sync_data().is_err());
    assert_eq!(disk.pending_ops(), 1);
    assert!(disk.durable_image().is_empty());
    disk.sync_data().unwrap(); // the fault was transient
    assert_eq!(disk.durable_image(), b"abc");
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

/// A toy commit protocol: write the round's data, sync, write the round number into the
/// header slot `round % 2` (the other slot keeps the previous commit), sync.
fn commit_workload(disk: &SimDisk, rounds: u8) -> io::Result<()> {
    for round in 1..=rounds {
        disk.write_at(&[round; 1000], data_offset(round))?;
        disk.sync_data()?;
        disk.write_at(&[round; 8], slot_offset(round))?;
        disk.sync_data()?;
    }
    Ok(())
}

fn data_offset(round: u8) -> u64 {
    1024 * u64::from(round)
}

fn slot_offset(round: u8) -> u64 {
    512 * u64::from(round % 2)
}

/// The newest round whose header slot is intact and whose data is complete, as an open
/// would choose it; 0 when none is.
fn recovered_round(image: &[u8]) -> u8 {
    let valid = |slot: usize| {
        let header = image.get(slot..slot + 8)?;
        let round = header[0];
        let data_start = data_offset(round) as usize;
        let data = image.get(data_start..data_start + 1000)?;
        (round != 0 && header.iter().all(|&b| b == round) && data.iter().all(|&b| b == round))
            .then_some(round)
    };
    valid(0).into_iter().chain(valid(512)).max().unwrap_or(0)
}

/// Sweeping a crash over every operation: every image, process crash or power loss, recovers
/// a round at least as new as the last one whose header sync returned.
#[test]
fn a_crash_sweep_over_every_operation_finds_only_committed_states() {
    let rounds = 4;
    let probe = SimDisk::new();
    commit_workload(&probe, rounds).unwrap();
    let total_ops = probe.ops();
    assert_eq!(total_ops, 4 * u64::from(rounds));
    assert_eq!(recovered_round(&probe.durable_image()), rounds);
    let seed = test_seed();
    for k in 0..=total_ops {
        let disk = SimDisk::new();
        disk.set_fault(FaultPlan::crash_at(k));
        let _ = commit_workload(&disk, rounds);
        // Rounds whose header sync (the 4th op of each round) returned before the crash.
        let acknowledged = (k / 4) as u8;
        let power_losses = (0..8).map(|i| (CrashMode::PowerLoss, seed ^ (k << 8) ^ i));
        for (mode, tear_seed) in [(CrashMode::ProcessCrash, 0)].into_iter().chain(power_losses) {
            let round = recovered_round(&disk.crash_image(mode, tear_seed));
            assert!(
                round >= acknowledged,
                "k={k} {mode:?} seed={tear_seed}: recovered {round} < acknowledged {acknowledged}"
            );
        }
    }
}
