//! Integration tests for bob-batch-io (one binary, house style).

use bob_batch_io::{
    BatchReadOptions, Error, ReadRequest, WriteBuffer, WriteBufferOptions, read_batch,
};
use bob_io_helpers::FileBackend;
use bob_io_helpers::checksum;
use bob_io_helpers::testing::{CrashMode, FaultKind, FaultPlan, OpFilter, OpKind, Repeat, SimDisk};
use proptest::prelude::*;

/// A disk holding `len` bytes of a pattern, so that a byte nobody wrote is recognisable.
fn patterned(len: usize) -> SimDisk {
    let disk = SimDisk::new();
    let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 0x80).collect();
    disk.write_at(&pattern, 0).unwrap();
    disk.sync_data().unwrap();
    disk
}

fn never_by_itself() -> WriteBufferOptions {
    WriteBufferOptions { max_ops: usize::MAX, max_bytes: usize::MAX, interval: None }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, usize, u8),
    Read(u64, usize),
    Batch(Vec<(u64, usize)>),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..24_000u64, 0..3_000usize, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        2 => (0..26_000u64, 0..3_000usize).prop_map(|(o, l)| Op::Read(o, l)),
        1 => prop::collection::vec((0..26_000u64, 0..2_000usize), 1..8).prop_map(Op::Batch),
        1 => Just(Op::Flush),
    ]
}

/// The buffer against a model: the bytes a reader should see (the file with every write
/// applied in order), and the bytes on the disk (the same, as of the last flush). Reads past
/// the model's end fail; after a flush the disk holds exactly the model, so a gap between
/// buffered writes kept the file's own bytes, and overlaps were last-wins.
fn run(ops: Vec<Op>, max_ops: usize) {
    let disk = patterned(16_384);
    let mut model = disk.live_image();
    let mut flushed = model.clone();
    let options = WriteBufferOptions { max_ops, ..never_by_itself() };
    let mut buffer = WriteBuffer::new(disk.clone(), options);
    for op in ops {
        match op {
            Op::Write(offset, len, byte) => {
                let bytes = vec![byte; len];
                let flushed_now = buffer.write(offset, &bytes).unwrap();
                let end = offset as usize + len;
                if len > 0 {
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&bytes);
                }
                if flushed_now.is_some() {
                    flushed = model.clone();
                }
            }
            Op::Read(offset, len) => {
                let mut buf = vec![0u8; len];
                let got = buffer.read_at(&mut buf, offset);
                let end = offset as usize + len;
                if end <= model.len() {
                    got.unwrap();
                    assert_eq!(buf, model[offset as usize..end], "read {len} at {offset}");
                } else {
                    assert!(matches!(got, Err(Error::OutOfRange { .. })), "{got:?}");
                }
            }
            Op::Batch(ranges) => {
                let requests: Vec<ReadRequest> =
                    ranges.iter().map(|&(o, l)| ReadRequest::unchecked(o, l as u64)).collect();
                let (results, report) =
                    buffer.read_batch(&requests, &BatchReadOptions::default()).unwrap();
                assert!(report.reads <= report.distinct, "{report:?}");
                for (&(offset, len), result) in ranges.iter().zip(results) {
                    let end = offset as usize + len;
                    if end <= model.len() {
                        assert_eq!(result.unwrap(), model[offset as usize..end]);
                    } else {
                        assert!(matches!(result, Err(Error::OutOfRange { .. })), "{result:?}");
                    }
                }
            }
            Op::Flush => {
                buffer.flush().unwrap();
                flushed = model.clone();
            }
        }
        let on_disk = disk.live_image();
        assert_eq!(on_disk.len(), flushed.len(), "the file's length");
        assert!(on_disk == flushed, "the disk holds exactly what was flushed");
    }
    buffer.flush().unwrap();
    assert!(disk.live_image() == model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("CI").is_some() { 256 } else { 64 }))]

    #[test]
    fn the_buffer_matches_a_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, usize::MAX);
    }

    #[test]
    fn the_buffer_matches_a_model_flushing_every_few_writes(
        ops in prop::collection::vec(op(), 1..60),
        every in 1..6usize,
    ) {
        run(ops, every);
    }
}

/// A flush writes each run of contiguous bytes with one vectored write and syncs once; a
/// gap between runs is never written.
#[test]
fn a_flush_is_one_write_per_run_and_one_sync() {
    let disk = patterned(32_768);
    let gap_before = disk.live_image()[8192..10_000].to_vec();
    let mut buffer = WriteBuffer::new(disk.clone(), never_by_itself());
    buffer.write(4096, &[2; 4096]).unwrap();
    buffer.write(0, &[1; 4096]).unwrap(); // out of order: sorted at the flush
    buffer.write(10_000, &[3; 1000]).unwrap();
    buffer.write(10_500, &[4; 100]).unwrap(); // inside the last: last wins
    let before = disk.op_counts();
    let report = buffer.flush().unwrap();
    let after = disk.op_counts();
    assert_eq!((report.writes, report.runs, report.syncs), (4, 2, 1));
    assert_eq!((after.writes - before.writes, after.syncs - before.syncs), (2, 1));
    let image = disk.live_image();
    assert!(image[..4096].iter().all(|&b| b == 1) && image[4096..8192].iter().all(|&b| b == 2));
    assert_eq!(image[8192..10_000], gap_before[..], "the gap kept its bytes");
    assert!(image[10_500..10_600].iter().all(|&b| b == 4));
    assert!(image[10_600..11_000].iter().all(|&b| b == 3));
    assert_eq!(buffer.flush().unwrap().syncs, 0, "nothing buffered: no sync");
    assert_eq!(buffer.stats().flushes, 1);
}

/// The triggers: the count of writes, the bytes.
#[test]
fn a_buffer_flushes_by_itself_at_its_limits() {
    let disk = SimDisk::new();
    let options = WriteBufferOptions { max_ops: 4, max_bytes: 10_000, interval: None };
    let mut buffer = WriteBuffer::new(disk.clone(), options);
    for i in 0..3 {
        assert!(buffer.write(i * 10, b"0123456789").unwrap().is_none());
    }
    assert!(buffer.write(30, b"0123456789").unwrap().is_some(), "the fourth write flushes");
    assert_eq!(buffer.stats().pending_writes, 0);
    assert!(buffer.write(0, &[7; 12_000]).unwrap().is_some(), "past max_bytes");
    assert_eq!(disk.op_counts().syncs, 2);
}

/// What a flush wrote survives a power loss; what was only buffered does not.
#[test]
fn a_flushed_write_survives_a_power_loss_and_a_buffered_one_is_gone() {
    let disk = SimDisk::new();
    let mut buffer = WriteBuffer::new(disk.clone(), never_by_itself());
    buffer.write(0, &[1; 8192]).unwrap();
    buffer.flush().unwrap();
    buffer.write(8192, &[2; 4096]).unwrap();
    for seed in 0..8 {
        let image = disk.crash_image(CrashMode::PowerLoss, seed);
        assert!(image.len() >= 8192 && image[..8192].iter().all(|&b| b == 1), "seed {seed}");
        assert!(image.len() <= 8192, "a write never flushed reached the disk (seed {seed})");
    }
}

/// A crash at every operation of three flushes (unaligned writes, gaps, an overwrite of
/// flushed bytes, overlapping buffered writes): after a power loss or a process crash, every
/// page the interrupted flush did not touch holds exactly what the flushes that returned
/// `Ok` left (gaps keep their old bytes). A page it touched is not checked: the fault model
/// lets an unsynced page come back new, old, zeroed or garbage, whole, and that takes the
/// acknowledged bytes sharing the page with it (the hazard `WriteBuffer`'s docs state: a
/// caller that needs them safe keeps later writes off their pages).
#[test]
fn a_crash_at_every_operation_of_a_flush_keeps_every_acknowledged_page_it_did_not_touch() {
    const LEN: usize = 64 << 10;
    const PAGE: usize = 4096;
    type Round = Vec<(u64, usize, u8)>;
    let rounds: Vec<Round> = vec![
        vec![(0, 4096, 1), (8192, 100, 2), (4196, 50, 3)],
        vec![(0, 10, 4), (20_000, 3000, 5), (21_000, 10, 6)],
        vec![(40_000, 5000, 7), (45_000, 1, 8)],
    ];
    // The image after each acknowledged flush, and the pages each flush touches.
    let pattern: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8 | 0x80).collect();
    let mut images = vec![pattern];
    let mut touched: Vec<Vec<usize>> = Vec::new();
    for round in &rounds {
        let mut image = images.last().unwrap().clone();
        let mut pages = Vec::new();
        for &(offset, len, byte) in round {
            image[offset as usize..offset as usize + len].fill(byte);
            pages.extend(offset as usize / PAGE..=(offset as usize + len - 1) / PAGE);
        }
        images.push(image);
        touched.push(pages);
    }
    let run = |disk: &SimDisk| -> usize {
        let mut buffer = WriteBuffer::new(disk.clone(), never_by_itself());
        let mut acked = 0;
        for round in &rounds {
            for &(offset, len, byte) in round {
                if buffer.write(offset, &vec![byte; len]).is_err() {
                    return acked;
                }
            }
            if buffer.flush().is_err() {
                return acked;
            }
            acked += 1;
        }
        acked
    };
    let clean = patterned(LEN);
    let base = clean.op_counts().total();
    assert_eq!(run(&clean), rounds.len());
    let total = clean.op_counts().total() - base;
    assert!(total >= 9, "three flushes of runs and syncs: {total} operations");
    for crash_at in 0..=total {
        let disk = patterned(LEN);
        disk.set_fault(FaultPlan::crash_at(base + crash_at));
        let acked = run(&disk);
        let expected = &images[acked];
        let unsure = touched.get(acked).cloned().unwrap_or_default();
        for (what, image) in (0..6)
            .map(|seed| ("power loss", disk.crash_image(CrashMode::PowerLoss, seed)))
            .chain([("process crash", disk.crash_image(CrashMode::ProcessCrash, 0))])
        {
            assert!(image.len() >= LEN, "{what} at {crash_at}: the file shrank");
            for page in (0..LEN / PAGE).filter(|p| !unsure.contains(p)) {
                let range = page * PAGE..(page + 1) * PAGE;
                assert!(
                    image[range.clone()] == expected[range],
                    "{what} at operation {crash_at} ({acked} flushes acknowledged): page {page}"
                );
            }
        }
    }
}

/// A flush whose sync fails latches the buffer: no retry, every later call refused.
#[test]
fn a_failed_flush_latches_the_buffer() {
    let disk = SimDisk::new();
    let mut buffer = WriteBuffer::new(disk.clone(), never_by_itself());
    buffer.write(0, b"data").unwrap();
    let syncs = disk.op_counts().syncs;
    disk.set_fault(FaultPlan {
        at: syncs,
        on: OpFilter::Only(OpKind::Sync),
        kind: FaultKind::Io,
        repeat: Repeat::Once,
    });
    assert!(matches!(buffer.flush(), Err(Error::Io(_))));
    disk.clear_fault();
    assert!(matches!(buffer.flush(), Err(Error::Failed(_))));
    assert!(matches!(buffer.write(0, b"x"), Err(Error::Failed(_))));
    let mut buf = [0u8; 4];
    assert!(matches!(buffer.read_at(&mut buf, 0), Err(Error::Failed(_))));
    assert!(matches!(buffer.len(), Err(Error::Failed(_))));
    let batch = buffer.read_batch(&[ReadRequest::unchecked(0, 1)], &BatchReadOptions::default());
    assert!(matches!(batch, Err(Error::Failed(_))));
}

/// A write of the same run failing latches the buffer too; an absurd length is refused at
/// once, not at the flush; an interval of zero flushes at every write.
#[test]
fn a_failed_write_latches_and_bad_arguments_are_refused_early() {
    let disk = SimDisk::new();
    let mut buffer = WriteBuffer::new(disk.clone(), never_by_itself());
    assert!(matches!(buffer.write(1 << 63, b"x"), Err(Error::InvalidArgument(_))));
    let huge = ReadRequest::unchecked(0, 1 << 62);
    let (results, _) = read_batch(&disk, &[huge], &BatchReadOptions::default());
    assert!(matches!(results[0], Err(Error::OutOfRange { .. })), "no allocation of 2^62 bytes");
    buffer.write(0, b"data").unwrap();
    disk.set_fault(FaultPlan {
        at: disk.op_counts().writes,
        on: OpFilter::Only(OpKind::Write),
        kind: FaultKind::Io,
        repeat: Repeat::Once,
    });
    assert!(matches!(buffer.flush(), Err(Error::Io(_))));
    disk.clear_fault();
    assert!(matches!(buffer.flush(), Err(Error::Failed(_))));
    let options =
        WriteBufferOptions { interval: Some(std::time::Duration::ZERO), ..never_by_itself() };
    let mut buffer = WriteBuffer::new(SimDisk::new(), options);
    assert!(buffer.write(0, b"now").unwrap().is_some(), "an interval of zero flushes at once");
}

/// Batch reads: out of order and duplicated requests come back in request order, read once;
/// neighbours within the gap share one read, far ones do not; a corrupt item fails alone,
/// and so does one past the end.
#[test]
fn batch_reads_merge_neighbours_and_answer_in_request_order() {
    let disk = SimDisk::new();
    let blocks: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 4096]).collect();
    for (i, block) in blocks.iter().enumerate() {
        disk.write_at(block, i as u64 * 4096).unwrap();
    }
    disk.write_at(&[9; 4096], 1 << 20).unwrap(); // far away
    let req = |i: u64| ReadRequest::checked(i * 4096, 4096, checksum(&blocks[i as usize]));
    let requests =
        [req(7), req(2), req(7), req(3), ReadRequest::checked(1 << 20, 4096, checksum(&[9; 4096]))];
    let before = disk.op_counts().reads;
    let (results, report) = read_batch(&disk, &requests, &BatchReadOptions::default());
    assert_eq!(disk.op_counts().reads - before, 2, "one read for 2..8, one for the far block");
    assert_eq!((report.requests, report.distinct, report.reads), (5, 4, 2));
    let firsts: Vec<u8> = results.iter().map(|r| r.as_ref().unwrap()[0]).collect();
    assert_eq!(firsts, vec![7, 2, 7, 3, 9]);

    // A flipped byte in block 2: its request fails, its neighbours do not.
    disk.write_at(&[0xFF], 2 * 4096 + 100).unwrap();
    let past_end = ReadRequest::unchecked((1 << 20) + 4000, 200); // within the far block's gap
    let (results, _) = read_batch(&disk, &[req(3), req(2), past_end], &BatchReadOptions::default());
    assert_eq!(results[0].as_ref().unwrap()[0], 3);
    assert!(matches!(results[1], Err(Error::ChecksumMismatch { offset: 8192, .. })));
    assert!(matches!(results[2], Err(Error::OutOfRange { .. })));

    // With no gap allowed, blocks 2 and 7 are apart: two reads.
    let options = BatchReadOptions { gap: 0, ..BatchReadOptions::default() };
    let (_, report) = read_batch(&disk, &[req(7), req(3)], &options);
    assert_eq!(report.reads, 2);
    let (_, report) = read_batch(&disk, &[req(4), req(3)], &options);
    assert_eq!(report.reads, 1, "touching blocks merge even with no gap");
}

mod writer {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bob_batch_io::{BatchWriter, BatchWriterOptions, Error, Result, Sink};
    use bob_store_concurrent::ConcurrentStore;
    use bob_store_core::StoreOptions;

    /// A sink that records what it holds, how many writes ran at once, and fails where told.
    #[derive(Default)]
    struct Model {
        written: Mutex<HashMap<u32, Vec<u8>>>,
        durable: Mutex<HashMap<u32, Vec<u8>>>,
        running: AtomicUsize,
        peak: AtomicUsize,
        fail_key: Option<u32>,
        fail_commit: AtomicBool,
    }

    impl Sink<u32> for Model {
        type Output = usize;

        fn write(&self, key: &u32, bytes: &[u8]) -> Result<usize> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.fail_key == Some(*key) {
                return Err(Error::InvalidArgument(format!("key {key} refused")));
            }
            self.written.lock().unwrap().insert(*key, bytes.to_vec());
            Ok(bytes.len())
        }

        fn commit(&self) -> Result<()> {
            if self.fail_commit.load(Ordering::SeqCst) {
                return Err(Error::InvalidArgument("commit refused".into()));
            }
            let written = self.written.lock().unwrap().clone();
            *self.durable.lock().unwrap() = written;
            Ok(())
        }
    }

    /// One result per item in input order; a key twice: the last wins and both items get its
    /// result; at most `permits` writes at once; a failed write fails its item alone; the
    /// batch is durable (committed) when it returns.
    #[test]
    fn a_batch_gives_one_result_per_item_in_order_and_never_exceeds_its_permits() {
        let sink = Model { fail_key: Some(13), ..Model::default() };
        let writer = BatchWriter::new(sink, BatchWriterOptions { permits: 3 });
        let payloads: Vec<Vec<u8>> = (0..40u32).map(|i| vec![i as u8; i as usize + 1]).collect();
        let mut items: Vec<(u32, &[u8])> =
            payloads.iter().enumerate().map(|(i, p)| (i as u32 % 30, &p[..])).collect();
        items.swap(0, 39); // out of order
        let results = writer.write_batch(&items);
        assert_eq!(results.len(), items.len());
        for (i, ((key, _), result)) in items.iter().zip(&results).enumerate() {
            let last = items.iter().rposition(|(k, _)| k == key).unwrap();
            match key {
                13 => assert!(result.is_err(), "item {i}"),
                _ => assert_eq!(*result.as_ref().unwrap(), items[last].1.len(), "item {i}"),
            }
        }
        let sink = writer.sink();
        let durable = sink.durable.lock().unwrap();
        for (key, _) in &items {
            let last = items.iter().rev().find(|(k, _)| k == key).unwrap().1;
            if *key != 13 {
                assert_eq!(durable[key], last, "key {key}: the last item wins");
            }
        }
        assert!(sink.peak.load(Ordering::SeqCst) <= 3);
        let stats = writer.stats();
        assert!(stats.peak_in_flight <= 3, "{stats:?}");
        assert_eq!((stats.in_flight, stats.available_permits, stats.commits), (0, 3, 1));
        assert_eq!(stats.completed + stats.failed, 30, "one write per distinct key");
        assert_eq!(stats.latency_micros.iter().sum::<u64>(), 30);
    }

    /// A failed commit fails every item: nothing it returns `Ok` for is not durable.
    #[test]
    fn a_failed_commit_fails_every_item() {
        let sink = Model::default();
        sink.fail_commit.store(true, Ordering::SeqCst);
        let writer = BatchWriter::new(sink, BatchWriterOptions::default());
        let results = writer.write_batch(&[(1, &b"a"[..]), (2, &b"b"[..])]);
        assert!(results.iter().all(Result::is_err));
        assert!(writer.write_one(&3, b"c").is_err());
        assert_eq!(writer.stats().failed_commits, 2);
    }

    /// Into a shared store: new objects all written, a replaced id twice resolves to the last,
    /// and everything is there after a reopen (one durable commit per batch).
    #[test]
    fn a_batch_into_a_concurrent_store_is_durable_and_last_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = ConcurrentStore::create_base(&path, StoreOptions::default(), 0).unwrap();
        let kept = store.write_new_obj_from_bytes(b"first").unwrap();
        store.commit().unwrap();
        let writer = BatchWriter::new(store, BatchWriterOptions { permits: 8 });
        let blobs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 3000 + i as usize]).collect();
        let mut items: Vec<(Option<bob_store_core::ObjectId>, &[u8])> =
            blobs.iter().map(|b| (None, &b[..])).collect();
        items.push((Some(kept), b"second"));
        items.push((Some(kept), b"third, the last"));
        let results = writer.write_batch(&items);
        let ids: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(ids[64], kept);
        assert_eq!(ids[65], kept);
        let distinct: std::collections::HashSet<_> = ids[..64].iter().collect();
        assert_eq!(distinct.len(), 64, "new objects are never merged");
        assert_eq!(writer.sink().commit_stats().commits, 2, "one commit for the batch");
        drop(writer);
        let store = ConcurrentStore::open_base(&path, StoreOptions::default(), 0).unwrap();
        for (id, blob) in ids[..64].iter().zip(&blobs) {
            assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), blob);
        }
        assert_eq!(store.read_bytes_from_obj(kept).unwrap(), b"third, the last");
    }
}

mod writer_edges {
    use bob_batch_io::{BatchWriter, BatchWriterOptions, Error, Result, Sink};
    use bob_store_concurrent::ConcurrentStore;
    use bob_store_core::StoreOptions;

    struct Panicky;

    impl Sink<u32> for Panicky {
        type Output = u32;
        fn write(&self, key: &u32, _: &[u8]) -> Result<u32> {
            assert!(*key != 3, "the sink fails on key 3");
            Ok(*key)
        }
        fn commit(&self) -> Result<()> {
            Ok(())
        }
    }

    /// A panicking write fails its item only; the counters stay right; an empty batch is
    /// nothing, not even a commit.
    #[test]
    fn a_panicking_sink_fails_one_item_and_an_empty_batch_does_nothing() {
        let writer = BatchWriter::new(Panicky, BatchWriterOptions { permits: 2 });
        let items: Vec<(u32, &[u8])> = (0..6).map(|k| (k, &b"x"[..])).collect();
        let results = writer.write_batch(&items);
        assert!(matches!(results[3], Err(Error::SinkPanicked(_))));
        assert!(results.iter().enumerate().all(|(i, r)| i == 3 || r.is_ok()));
        let stats = writer.stats();
        assert_eq!((stats.in_flight, stats.completed, stats.failed), (0, 5, 1));
        assert!(writer.write_batch(&[]).is_empty());
        assert_eq!(writer.stats().commits, 1);
    }

    /// A caller holding a guard of the store: the batch is refused, not left waiting for
    /// the caller on another thread.
    #[test]
    fn a_batch_from_a_thread_holding_a_guard_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ConcurrentStore::create_base(dir.path().join("s"), StoreOptions::default(), 0).unwrap();
        let id = store.write_new_obj_from_bytes(b"x").unwrap();
        let writer = BatchWriter::new(store, BatchWriterOptions::default());
        let guard = writer.sink().late_read_obj(id).unwrap();
        let results = writer.write_batch(&[(Some(id), &b"y"[..])]);
        assert!(
            matches!(&results[0], Err(Error::Store(e)) if matches!(**e, bob_store_core::Error::WouldDeadlock(_)))
        );
        drop(guard);
        assert!(writer.write_batch(&[(Some(id), &b"y"[..])])[0].is_ok());
        assert_eq!(writer.sink().read_bytes_from_obj(id).unwrap(), b"y");
    }
}

mod cache {
    use bob_batch_io::{DiskCache, DiskCacheOptions};

    fn blob(i: u8, len: usize) -> Vec<u8> {
        (0..len).map(|j| i.wrapping_add(j as u8)).collect()
    }

    /// Stores, overwrites, removes and buffered stores, across reopens: every flushed entry
    /// comes back, a buffered one only once flushed, an overwrite frees the old blob (the
    /// store holds one object per entry, plus its database's).
    #[test]
    fn entries_survive_reopens_and_overwrites_free_their_old_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
        for round in 0..5u8 {
            for k in 0..20u8 {
                cache.store(&[k], &blob(k ^ round, 1000 + k as usize)).unwrap();
            }
        }
        assert!(cache.remove(&[3]).unwrap());
        assert!(!cache.remove(&[200]).unwrap());
        cache.store_buffered(b"buffered", b"kept once flushed").unwrap();
        assert_eq!(cache.lookup(b"buffered").unwrap().unwrap(), b"kept once flushed");
        assert_eq!(cache.stats().pending_writes, 1);
        cache.flush_writes().unwrap();
        cache.store_buffered(b"lost", b"never flushed").unwrap();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.pending_writes), (20, 1));
        drop(cache); // no close: the buffered store is lost, the flushed ones are not
        let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
        for k in 0..20u8 {
            let got = cache.lookup(&[k]).unwrap();
            if k == 3 {
                assert!(got.is_none());
            } else {
                assert_eq!(got.unwrap(), blob(k ^ 4, 1000 + k as usize), "key {k}");
            }
        }
        assert_eq!(cache.lookup(b"buffered").unwrap().unwrap(), b"kept once flushed");
        assert!(cache.lookup(b"lost").unwrap().is_none());
        assert_eq!(cache.stats().entries, 20);
        cache.close().unwrap();
        let db = bob_btree::Db::open(&path).unwrap();
        let objects = db.store().object_count().unwrap();
        // 20 blobs, a leaf of the index tree, one of the list of blobs to free (empty: the
        // last flush deleted what the removal listed) and the catalog: the 80 blobs
        // overwritten and the one removed were freed.
        assert_eq!(objects, 20 + 1 + 1 + 1, "old blobs were freed");
        db.close().unwrap();
    }

    /// Past the capacity the least recently used entry goes first; a lookup makes an entry
    /// recent; lookup_batch answers in request order.
    #[test]
    fn the_least_recently_used_entry_is_evicted_and_batches_answer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let options = DiskCacheOptions { capacity_bytes: 10_000, ..DiskCacheOptions::default() };
        let cache = DiskCache::open(dir.path().join("cache"), options).unwrap();
        for k in 0..3u8 {
            cache.store(&[k], &blob(k, 3000)).unwrap();
        }
        cache.lookup(&[0]).unwrap().unwrap(); // 0 is now more recent than 1
        cache.store(&[9], &blob(9, 3000)).unwrap(); // 12,000 bytes: one must go
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.evictions), (3, 9000, 1));
        let keys: [&[u8]; 5] = [&[9], &[1], &[0], &[9], &[2]];
        let got = cache.lookup_batch(&keys);
        assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(&blob(9, 3000)[..]));
        assert!(got[1].as_ref().unwrap().is_none(), "1 was the least recently used");
        assert_eq!(got[2].as_ref().unwrap().as_deref(), Some(&blob(0, 3000)[..]));
        assert_eq!(got[3].as_ref().unwrap().as_deref(), Some(&blob(9, 3000)[..]));
        assert_eq!(got[4].as_ref().unwrap().as_deref(), Some(&blob(2, 3000)[..]));
        cache.close().unwrap();
    }

    /// A flush that fails half way (a key too long for the index, after an overwrite of
    /// another key was applied) changes nothing: the old entry still reads, nothing buffered
    /// is lost, and once the bad key is gone the flush goes through.
    #[test]
    fn a_failed_flush_changes_nothing_and_keeps_what_is_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path().join("cache"), DiskCacheOptions::default()).unwrap();
        cache.store(b"a", b"old").unwrap();
        cache.store_buffered(b"a", b"new").unwrap();
        let too_long = vec![b'k'; bob_btree::MAX_KEY_LEN + 1];
        cache.store_buffered(&too_long, b"x").unwrap();
        assert!(cache.flush_writes().is_err());
        assert_eq!(cache.stats().pending_writes, 2, "still buffered");
        assert_eq!(cache.lookup(b"a").unwrap().unwrap(), b"new", "lookups see the buffer");
        assert!(cache.remove(&too_long).unwrap());
        cache.flush_writes().unwrap();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.pending_writes), (1, 0));
        cache.close().unwrap();
        let cache = DiskCache::open(dir.path().join("cache"), DiskCacheOptions::default()).unwrap();
        assert_eq!(cache.lookup(b"a").unwrap().unwrap(), b"new");
        cache.close().unwrap();
    }

    /// lookup_batch with every kind of key at once (found, buffered, missing, repeated, out
    /// of order), read with no prefetch and with one from the third blob on, its window
    /// about two blobs: the same answers as one lookup per key, in request order, counted
    /// per request.
    #[test]
    fn a_batch_answers_like_single_lookups_whoever_reads_it() {
        for (prefetch_bytes, device_read) in [(0, None), (1_200, Some(std::time::Duration::ZERO))] {
            let dir = tempfile::tempdir().unwrap();
            let options =
                DiskCacheOptions { prefetch_bytes, device_read, ..DiskCacheOptions::default() };
            let cache = DiskCache::open(dir.path().join("cache"), options).unwrap();
            for k in 0..40u8 {
                cache.store_buffered(&[k], &blob(k, 500 + k as usize * 10)).unwrap();
            }
            cache.flush_writes().unwrap();
            cache.store_buffered(&[200], b"only buffered").unwrap();
            let keys: Vec<Vec<u8>> =
                [39u8, 3, 200, 3, 77, 0, 39, 17, 200, 250].iter().map(|k| vec![*k]).collect();
            let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let before = cache.stats();
            let batch = cache.lookup_batch(&asked);
            let after = cache.stats();
            assert_eq!(after.hits - before.hits, 8, "prefetch {prefetch_bytes}");
            assert_eq!(after.misses - before.misses, 2, "prefetch {prefetch_bytes}");
            for (key, got) in asked.iter().zip(batch) {
                let got = got.unwrap();
                assert_eq!(
                    got,
                    cache.lookup(key).unwrap(),
                    "key {key:?}, prefetch {prefetch_bytes}"
                );
                match key[0] {
                    200 => assert_eq!(got.as_deref(), Some(&b"only buffered"[..])),
                    k @ 0..40 => assert_eq!(got, Some(blob(k, 500 + k as usize * 10))),
                    _ => assert!(got.is_none()),
                }
            }
            assert!(cache.lookup_batch(&[]).is_empty());
            cache.close().unwrap();
        }
    }

    /// With compression on, a value that shrinks is kept compressed (the capacity counts the
    /// bytes kept) and comes back whole on every read path, before and after a reopen; one
    /// that does not shrink is kept as it is.
    #[test]
    fn compressed_values_come_back_whole_on_every_read_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let options = || DiskCacheOptions { compress: true, ..DiskCacheOptions::default() };
        let cache = DiskCache::open(&path, options()).unwrap();
        let text: Vec<u8> = b"a value that repeats itself. ".repeat(400);
        let noise: Vec<u8> = bob_io_helpers::testing::payload(9, 3000);
        cache.store(b"text", &text).unwrap();
        cache.store(b"noise", &noise).unwrap();
        cache.store_buffered(b"text2", &text).unwrap();
        cache.flush_writes().unwrap();
        let bytes = cache.stats().bytes;
        assert!(
            bytes < 2 * 1000 + 3000,
            "kept compressed: {bytes} bytes for two 11,600s and 3,000"
        );
        assert!(bytes >= 3000, "the noise is kept as it is");
        let check = |cache: &DiskCache| {
            assert_eq!(cache.lookup(b"text").unwrap().unwrap(), text);
            assert_eq!(cache.lookup(b"noise").unwrap().unwrap(), noise);
            let got = cache.lookup_batch(&[b"noise", b"text2", b"text"]);
            assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(&noise[..]));
            assert_eq!(got[1].as_ref().unwrap().as_deref(), Some(&text[..]));
            assert_eq!(got[2].as_ref().unwrap().as_deref(), Some(&text[..]));
        };
        check(&cache);
        cache.close().unwrap();
        let cache = DiskCache::open(&path, options()).unwrap();
        check(&cache);
        cache.close().unwrap();
        // Read by a cache that does not compress: the entries say how they are kept.
        let plain = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
        assert_eq!(plain.lookup(b"text").unwrap().unwrap(), text);
        let got = plain.lookup_batch(&[b"text2", b"noise"]);
        assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(&text[..]));
        assert_eq!(got[1].as_ref().unwrap().as_deref(), Some(&noise[..]));
        plain.close().unwrap();
    }

    /// A store that fails leaves the key's buffered value as it was (lookups still see it).
    #[test]
    fn a_failed_store_keeps_the_buffered_value_of_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path().join("cache"), DiskCacheOptions::default()).unwrap();
        let too_long = vec![b'k'; bob_btree::MAX_KEY_LEN + 1];
        cache.store_buffered(&too_long, b"buffered").unwrap();
        assert!(cache.store(&too_long, b"durable").is_err());
        assert_eq!(cache.lookup(&too_long).unwrap().unwrap(), b"buffered");
        assert_eq!(cache.stats().pending_writes, 1);
        assert!(cache.remove(&too_long).unwrap());
        assert!(cache.lookup(&too_long).unwrap().is_none());
        cache.close().unwrap();
    }

    /// A cache written when the index was a treap (`tests/fixtures/cache-treap-index.bob`,
    /// made by the build before the B-tree index with 40 stores, some compressed, an
    /// overwrite and a removal) opens with every entry; they are in the tree from then on,
    /// through more changes and reopens.
    #[test]
    fn a_cache_with_the_treap_index_opens_with_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.bob");
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cache-treap-index.bob");
        std::fs::copy(fixture, &path).unwrap();
        // Round 0 overwrites key 3 and removes key 5 once the entries moved.
        let expected = |i: u32, round: u32| -> Option<Vec<u8>> {
            match i {
                1 => Some(b"overwritten".to_vec()),
                2 => None,
                3 if round > 0 => Some(b"changed after the move".to_vec()),
                5 if round > 0 => None,
                i if i % 4 == 0 => {
                    Some(format!("a value that repeats itself {i}. ").repeat(50).into_bytes())
                }
                i => Some((0..(100 + i * 37)).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect()),
            }
        };
        let options = || DiskCacheOptions { compress: true, ..DiskCacheOptions::default() };
        for round in 0..3u32 {
            let cache = DiskCache::open(&path, options()).unwrap();
            // 39 moved; then one new, one removed.
            assert_eq!(cache.stats().entries, 39, "round {round}");
            for i in 0..40u32 {
                let got = cache.lookup(format!("key-{i:03}").as_bytes()).unwrap();
                assert_eq!(got, expected(i, round), "key {i}, round {round}");
            }
            let keys: Vec<String> = (0..40u32).rev().map(|i| format!("key-{i:03}")).collect();
            let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            for (got, i) in cache.lookup_batch(&asked).into_iter().zip((0..40u32).rev()) {
                assert_eq!(got.unwrap(), expected(i, round), "batch, key {i}, round {round}");
            }
            if round == 0 {
                cache.store(b"new", b"stored after the move").unwrap();
                cache.store(b"key-003", b"changed after the move").unwrap();
                assert!(cache.remove(b"key-005").unwrap());
            }
            assert_eq!(
                cache.lookup(b"new").unwrap().as_deref(),
                Some(&b"stored after the move"[..])
            );
            cache.close().unwrap();
        }
        let db = bob_btree::Db::open(&path).unwrap();
        assert!(db.store().verify().unwrap().is_clean());
        // 39 live blobs (38 moved, one new), a leaf of the index, one of the (empty) list of
        // blobs to free, and the catalog: the treap's 39 nodes were freed when it was
        // emptied, key-003's old blob by the removal's commit, key-005's by the close.
        assert_eq!(db.store().object_count().unwrap(), 39 + 1 + 1 + 1);
        db.close().unwrap();
    }

    /// The blob an overwrite dropped is deleted by the next commit, by `close`, or, after a
    /// crash (here a drop without `close`), by the next open.
    #[test]
    fn blobs_an_overwrite_dropped_go_at_close_or_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let objects = |cache: &DiskCache| cache.shared_store().unwrap().object_count().unwrap();
        let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
        cache.store(b"a", &blob(1, 700)).unwrap();
        let before = objects(&cache);
        cache.store(b"a", &blob(2, 700)).unwrap();
        assert_eq!(objects(&cache), before + 1, "the old blob waits for the next commit");
        drop(cache); // no close
        // One blob, the catalog and a leaf of each tree (written by the checkpoint that
        // follows the log's replay at open): the dropped blob is gone.
        let one = 4;
        let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
        assert_eq!(objects(&cache), one, "the open deleted it");
        assert_eq!(cache.lookup(b"a").unwrap().unwrap(), blob(2, 700));
        cache.store(b"a", &blob(3, 700)).unwrap();
        cache.close().unwrap();
        let cache = DiskCache::open(&path, DiskCacheOptions::default()).unwrap();
        assert_eq!(objects(&cache), one, "the close deleted it");
        assert_eq!(cache.lookup(b"a").unwrap().unwrap(), blob(3, 700));
        cache.close().unwrap();
    }

    /// An entry past its time is a miss.
    #[test]
    fn an_expired_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let options = DiskCacheOptions {
            ttl: Some(std::time::Duration::from_millis(1)),
            ..DiskCacheOptions::default()
        };
        let cache = DiskCache::open(dir.path().join("cache"), options).unwrap();
        cache.store(b"k", b"v").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(cache.lookup(b"k").unwrap().is_none());
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.expirations), (1, 1));
        cache.close().unwrap();
    }
}
mod cache_crash;
mod cache_model;
mod cache_shared;
mod sinks;
