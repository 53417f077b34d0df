//! Journaled commits: one sync per commit, replay at open, checkpoints when the journal
//! fills, and what open does with a torn last record, a record whose data never reached the
//! disk, a damaged record before the last, and stale records of an earlier checkpoint.

use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::{BaseStore, Error, Part, StoreOptions, Storer};

use crate::{bytes, contents, put};

/// The default options: a 2 MiB journal per region.
fn options() -> StoreOptions {
    StoreOptions::default()
}

/// Offset of journal region 0 (right after the two header slots).
const REGION_0: usize = 8192;

/// The image a process crash now would leave (everything written, synced or not).
fn image(disk: &SimDisk) -> Vec<u8> {
    disk.crash_image(CrashMode::ProcessCrash, 0)
}

/// Where `needle` starts in `haystack` (the bytes of an object are random, so unique).
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("bytes not in the image")
}

/// Offsets of the journal records (magic `BOBJ` at a page boundary) in region 0.
fn records_in_region_0(image: &[u8], region_len: usize) -> Vec<usize> {
    (REGION_0..REGION_0 + region_len)
        .step_by(4096)
        .filter(|&at| image[at..at + 4] == *b"BOBJ")
        .collect()
}

#[test]
fn a_commit_costs_one_sync_a_checkpoint_two_and_an_empty_commit_none() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    for round in 0..5u64 {
        for i in 0..100 {
            put(&mut store, &bytes(round * 1000 + i, 300));
        }
        let before = disk.op_counts();
        store.commit().unwrap();
        let after = disk.op_counts();
        assert_eq!(after.syncs - before.syncs, 1, "round {round}");
        // The buffered objects in a few coalesced writes, then the record.
        assert!(after.writes - before.writes <= 6, "{} writes", after.writes - before.writes);
    }
    assert_eq!(store.journaled_commits(), 5);
    let before = disk.op_counts();
    store.commit().unwrap();
    assert_eq!(disk.op_counts(), before, "nothing changed: nothing written, nothing synced");
    let before = disk.op_counts();
    store.checkpoint().unwrap();
    assert_eq!(disk.op_counts().syncs - before.syncs, 2);
    assert_eq!(store.journaled_commits(), 0);
    let before = disk.op_counts();
    store.checkpoint().unwrap();
    assert_eq!(disk.op_counts(), before, "an empty journal: nothing to fold");
}

#[test]
fn journaled_commits_replay_after_a_drop_without_close() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let mut ids = Vec::new();
    for i in 0..20u64 {
        ids.push(put(&mut store, &bytes(i, 100 + 300 * i as usize)));
        if i % 3 == 0 {
            store.delete_obj(ids[i as usize / 2]).unwrap();
        }
        store.commit().unwrap();
    }
    store.write_bytes_to_obj(ids[19], &bytes(77, 40)).unwrap();
    store.commit().unwrap();
    let want = contents(&store).unwrap();
    assert!(store.journaled_commits() > 0);
    drop(store);
    let store = BaseStore::open_with(SimDisk::from_image(image(&disk)), options()).unwrap();
    assert_eq!(contents(&store).unwrap(), want);
    assert_eq!(store.dropped_records(), 0);
    assert!(store.journaled_commits() > 0, "the records were replayed, not folded");
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_full_journal_checkpoints_and_a_clean_close_leaves_no_journal() {
    // Regions of 4 pages: every fifth commit checkpoints.
    let small = StoreOptions { journal_bytes: 4 * 4096, ..options() };
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), small).unwrap();
    let mut want = Vec::new();
    for i in 0..11u64 {
        let data = bytes(i, 500);
        want.push((put(&mut store, &data), data));
        store.commit().unwrap();
    }
    // create's checkpoint, then commits 5 and 10, whose records did not fit.
    assert_eq!(store.checkpoints(), 3);
    assert_eq!(store.journaled_commits(), 1);
    store.close().unwrap();
    let store = BaseStore::open_with(SimDisk::from_image(image(&disk)), small).unwrap();
    assert_eq!(store.journaled_commits(), 0);
    for (id, data) in want {
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), data);
    }
}

#[test]
fn a_last_record_whose_data_never_reached_the_disk_is_dropped() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let kept = bytes(1, 3000);
    let kept_id = put(&mut store, &kept);
    store.commit().unwrap();
    let lost = bytes(2, 3000);
    let lost_id = put(&mut store, &lost);
    store.commit().unwrap();
    drop(store);
    // The last commit's record reached the disk, its object's bytes did not.
    let mut bytes_on_disk = image(&disk);
    let at = find(&bytes_on_disk, &lost);
    bytes_on_disk[at..at + 4096.min(lost.len())].fill(0);
    let reopened = SimDisk::from_image(bytes_on_disk);
    let store = BaseStore::open_with(reopened.clone(), options()).unwrap();
    assert_eq!(store.dropped_records(), 1);
    // A writable open zeroes the dropped record, durably: it can never count later.
    let after = reopened.crash_image(CrashMode::PowerLoss, 3);
    assert_eq!(records_in_region_0(&after, 2 << 20).len(), 1);
    assert_eq!(store.read_bytes_from_obj(kept_id).unwrap(), kept);
    assert!(matches!(store.read_bytes_from_obj(lost_id), Err(Error::NotFound(_))));
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_torn_last_record_is_dropped_and_the_next_commit_writes_over_it() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let first = put(&mut store, &bytes(1, 100));
    store.commit().unwrap();
    put(&mut store, &bytes(2, 100));
    store.commit().unwrap();
    drop(store);
    let mut torn = image(&disk);
    let records = records_in_region_0(&torn, 2 << 20);
    assert_eq!(records.len(), 2);
    torn[records[1] + 100] ^= 0xFF; // the last record's body: its checksum fails
    let disk = SimDisk::from_image(torn);
    let mut store = BaseStore::open_with(disk.clone(), options()).unwrap();
    assert_eq!(store.ids().unwrap().len(), 1);
    assert_eq!(store.read_bytes_from_obj(first).unwrap(), bytes(1, 100));
    let third = put(&mut store, &bytes(3, 100));
    store.commit().unwrap();
    drop(store);
    let store = BaseStore::open_with(SimDisk::from_image(image(&disk)), options()).unwrap();
    assert_eq!(store.read_bytes_from_obj(third).unwrap(), bytes(3, 100));
    assert_eq!(store.ids().unwrap().len(), 2);
}

#[test]
fn a_damaged_record_before_the_last_is_an_error_not_a_rollback() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    for i in 0..3 {
        put(&mut store, &bytes(i, 100));
        store.commit().unwrap();
    }
    drop(store);
    let mut damaged = image(&disk);
    let records = records_in_region_0(&damaged, 2 << 20);
    assert_eq!(records.len(), 3);
    damaged[records[1] + 70] ^= 0x01;
    match BaseStore::open_with(SimDisk::from_image(damaged), options()) {
        Err(Error::Corrupt { part: Part::Journal, .. }) => {}
        other => panic!("expected a corrupt journal, got {other:?}"),
    }
}

#[test]
fn records_of_an_earlier_checkpoint_in_a_region_never_count() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    // Records in region 0, a checkpoint (slot 1, region 1), records there, a checkpoint
    // (slot 0, region 0 again, where the first records still lie), and one record.
    let mut ids = Vec::new();
    for round in 0..2 {
        for i in 0..4 {
            ids.push(put(&mut store, &bytes(round * 10 + i, 200)));
            store.commit().unwrap();
        }
        store.checkpoint().unwrap();
    }
    store.delete_obj(ids[0]).unwrap();
    store.commit().unwrap();
    let want = contents(&store).unwrap();
    drop(store);
    let image = image(&disk);
    assert!(records_in_region_0(&image, 2 << 20).len() >= 4, "stale records are there");
    let store = BaseStore::open_with(SimDisk::from_image(image), options()).unwrap();
    assert_eq!(contents(&store).unwrap(), want);
    assert_eq!(store.journaled_commits(), 1);
}

/// A session's first change starts it with a checkpoint (two syncs) that skips a
/// generation, so its ids' tags are newer than any a session that lost its last commit can
/// have handed out; its commits are journal records (one sync each).
#[test]
fn a_session_starts_with_a_checkpoint_at_its_first_change() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    put(&mut store, &bytes(1, 100));
    store.commit().unwrap();
    drop(store);
    let disk = SimDisk::from_image(image(&disk));
    let mut store = BaseStore::open_with(disk.clone(), options()).unwrap();
    let generation = store.generation();
    let before = disk.op_counts().syncs;
    let first = put(&mut store, &bytes(10, 100));
    assert_eq!(disk.op_counts().syncs - before, 2, "the first change checkpoints");
    assert_eq!(store.generation(), generation + 2);
    assert_eq!(first.tag() as u64, generation + 3);
    for round in 0..3 {
        put(&mut store, &bytes(11 + round, 100));
        let before = disk.op_counts().syncs;
        store.commit().unwrap();
        assert_eq!(disk.op_counts().syncs - before, 1, "commit {round} after the open");
    }
    assert_eq!(store.checkpoints(), 1);
}

/// The reviewer's case: an id handed out in a session that never committed it is not
/// handed out again, in the next session, with the same tag (it would name the new object).
#[test]
fn an_id_of_a_lost_session_never_names_a_later_object() {
    for crash in [false, true] {
        let disk = SimDisk::new();
        let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
        put(&mut store, &bytes(1, 100));
        store.commit().unwrap();
        let mut lost = Vec::new();
        // Two sessions lose their work: a drop without a commit, or a power loss.
        let mut disk = disk;
        for session in 0..2 {
            lost.push(put(&mut store, &bytes(20 + session, 100)));
            let image =
                if crash { disk.crash_image(CrashMode::PowerLoss, session) } else { image(&disk) };
            drop(store);
            disk = SimDisk::from_image(image);
            store = BaseStore::open_with(disk.clone(), options()).unwrap();
        }
        let new = put(&mut store, &bytes(30, 100));
        store.commit().unwrap();
        for id in &lost {
            assert_eq!(id.index(), new.index(), "the index is handed out again");
            assert_ne!(*id, new, "under another tag");
            assert!(matches!(store.read_bytes_from_obj(*id), Err(Error::StaleId { .. })));
        }
    }
}

/// A record whose checksum holds (xxh3 is not a defence against a crafted file) but whose
/// next id is out of range is refused before the table is sized from it.
#[test]
fn a_record_with_an_out_of_range_next_id_is_corrupt() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    put(&mut store, &bytes(1, 100));
    store.commit().unwrap();
    drop(store);
    for next_id in [0, u64::MAX, (1 << 32) + 1] {
        let mut crafted = image(&disk);
        let at = records_in_region_0(&crafted, 2 << 20)[0];
        crafted[at + 32..at + 40].copy_from_slice(&next_id.to_le_bytes());
        let count = |k: usize| u32::from_le_bytes(crafted[k..k + 4].try_into().unwrap()) as usize;
        let body = 64 + 40 * count(at + 56) + 8 * count(at + 60);
        let sum = bob_io_helpers::checksum(&crafted[at..at + body]);
        crafted[at + body..at + body + 8].copy_from_slice(&sum.to_le_bytes());
        match BaseStore::open_with(SimDisk::from_image(crafted), options()) {
            Err(Error::Corrupt { part: Part::Journal, .. }) => {}
            other => panic!("next id {next_id}: expected a corrupt journal, got {other:?}"),
        }
    }
}

/// Review finding: open budgeted one table page for the next commit, but the first commit
/// after an open is a checkpoint that writes every page the replayed records changed. At a
/// limit that fits the data but not that checkpoint, the store opened and then every commit
/// failed. Now every limit either opens a store that commits, or is `OptionsMismatch`.
#[test]
fn every_limit_opens_a_store_that_commits_or_is_a_mismatch() {
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let ids: Vec<_> = (0..1_000).map(|i| put(&mut store, &bytes(i, 50))).collect();
    store.commit().unwrap(); // one record: 8 table pages changed since the checkpoint
    assert_eq!(store.journaled_commits(), 1);
    drop(store);
    let image = image(&disk);
    let len = image.len() as u64;
    let (mut opened, mut refused) = (0, 0);
    for limit in (len / 2..len + (64 << 10)).step_by(4096) {
        let limited = StoreOptions { max_file_bytes: limit, ..options() };
        match BaseStore::open_with(SimDisk::from_image(image.clone()), limited) {
            Ok(mut store) => {
                store.delete_obj(ids[7]).unwrap();
                store.commit().unwrap_or_else(|e| panic!("limit {limit}: opened, then {e}"));
                opened += 1;
            }
            Err(Error::OptionsMismatch(_)) => refused += 1,
            Err(e) => panic!("limit {limit}: {e}"),
        }
    }
    assert!(opened > 0 && refused > 0, "{opened} opened, {refused} refused");
}

/// A disk whose `drop_cache` does nothing (it is advisory): after a failed sync, open reads
/// pages the device never got from the cache, as a kernel may show them.
#[derive(Clone)]
struct CachedDisk(SimDisk);

impl bob_io_helpers::FileBackend for CachedDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn write_vectored_at(&self, bufs: &[std::io::IoSlice<'_>], offset: u64) -> std::io::Result<()> {
        self.0.write_vectored_at(bufs, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.0.sync_all()
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.0.allocate(len)
    }
}

/// Review finding 6: a checkpoint whose header sync fails leaves the previous commit (a
/// journaled one) the durable state, and a reopen that still sees the failed checkpoint's
/// header in the cache must protect the durable state's space. Its journal
/// moved an object (the first place freed) and then put another object in the first place:
/// protecting every place a record ever wrote would overlap and protect nothing, so a power
/// loss after the reopen's writes would damage the durable commit.
#[test]
fn the_previous_commit_stays_protected_when_its_journal_reused_its_own_space() {
    use bob_io_helpers::testing::{FaultKind, FaultPlan, OpFilter, OpKind, Repeat};
    let disk = SimDisk::new();
    // One object a commit: it fills a hole (a commit's first objects are never appended), so
    // an object takes a freed place at once.
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    let mut model = crate::Contents::new();
    for i in 0..40u64 {
        let data = bytes(i, 8192);
        model.insert(put(&mut store, &data), data);
    }
    store.checkpoint().unwrap();
    let first = bytes(100, 8192);
    let x = put(&mut store, &first);
    store.commit().unwrap();
    let first_at = find(&image(&disk), &first);
    let second = bytes(101, 8192);
    store.write_bytes_to_obj(x, &second).unwrap();
    store.commit().unwrap();
    model.insert(x, second);
    let third = bytes(102, 8192);
    let y = put(&mut store, &third);
    store.commit().unwrap();
    model.insert(y, third.clone());
    assert_eq!(find(&image(&disk), &third), first_at, "the scenario: y reuses x's first place");
    assert_eq!(store.journaled_commits(), 3);
    // The checkpoint: deletes, then its header's sync fails.
    let durable = model.clone();
    let ids: Vec<_> = model.keys().copied().collect();
    for id in ids.iter().step_by(2) {
        store.delete_obj(*id).unwrap();
        model.remove(id);
    }
    let syncs = disk.op_counts().matching(OpFilter::Only(OpKind::Sync));
    disk.set_fault(FaultPlan {
        at: syncs + 1,
        on: OpFilter::Only(OpKind::Sync),
        kind: FaultKind::Io,
        repeat: Repeat::Once,
    });
    assert!(store.checkpoint().is_err(), "the checkpoint's header sync fails");
    drop(store);
    disk.clear_fault();
    let mut store = BaseStore::open_with(CachedDisk(disk.clone()), options()).unwrap();
    assert_eq!(store.object_count(), model.len() as u64, "open saw the failed checkpoint");
    // Objects past the write buffer, so they reach the file (no commit: the durable state is
    // still the journaled one).
    let writes = disk.op_counts().writes;
    for i in 0..600u64 {
        let _ = store.write_new_obj_from_bytes(&bytes(10_000 + i, 8192));
    }
    assert!(disk.op_counts().writes > writes);
    drop(store);
    for seed in 0..16u64 {
        let image = disk.crash_image(CrashMode::PowerLoss, seed);
        let store = BaseStore::open_with(SimDisk::from_image(image), options()).unwrap();
        for (id, data) in &durable {
            match store.read_bytes_from_obj(*id) {
                Ok(b) => assert_eq!(&b, data, "seed {seed}: object {id}"),
                Err(Error::NotFound(_)) if !model.contains_key(id) => {}
                Err(e) => panic!("seed {seed}: object {id} of the durable commit: {e}"),
            }
        }
    }
}

/// A commit split around its sync (`begin_commit`, the sync, `end_commit`, as
/// `ConcurrentStore`'s group commit runs it): changes made while the sync is outstanding
/// belong to the next commit, written to disk at once (no write buffer; whole-page objects,
/// which page placement alone does not keep apart), in pages apart from
/// the commit's objects and never in space or ids the commit freed; a power loss at any point
/// of the window opens the commit before it or the commit itself; no other commit or
/// checkpoint may start meanwhile; a failed sync latches.
#[test]
fn a_commit_split_around_its_sync_leaves_window_changes_to_the_next() {
    use bob_io_helpers::FileBackend;
    use bob_store_core::SplitStore;
    let unbuffered = StoreOptions { write_buffer_bytes: 0, ..options() };
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), unbuffered).unwrap();
    let a = put(&mut store, &bytes(1, 8192));
    store.commit().unwrap();
    let a_at = store.locate(a).unwrap().into_owned();
    let b = put(&mut store, &bytes(2, 8192));
    let b_at = store.locate(b).unwrap().into_owned();
    store.delete_obj(a).unwrap();
    let pages = |l: &bob_store_core::Located<'_>| {
        let first = l.offset() / 4096;
        first..(l.offset() + l.allocated_len()).div_ceil(4096)
    };
    // Opens each power-loss image of the disk now: the state before the commit (a) or after
    // it (b), whole, verified clean.
    let check = |disk: &SimDisk, what: &str| {
        for seed in 0..6 {
            let image = disk.crash_image(CrashMode::PowerLoss, seed);
            let crashed = BaseStore::open_with(SimDisk::from_image(image), unbuffered).unwrap();
            let ids = crashed.ids().unwrap();
            assert!(ids == vec![a] || ids == vec![b], "{what}, seed {seed}: {ids:?}");
            let (id, seed_of) = if ids == vec![a] { (a, 1) } else { (b, 2) };
            assert_eq!(crashed.read_bytes_from_obj(id).unwrap(), bytes(seed_of, 8192), "{what}");
            assert!(crashed.verify().unwrap().is_clean(), "{what}, seed {seed}");
        }
    };
    assert!(store.begin_commit().unwrap(), "a journaled commit: the caller syncs");
    check(&disk, "record written, not synced");
    // The window: the next commit's changes, on disk at once.
    let c = put(&mut store, &bytes(3, 8192));
    assert_ne!(c, a, "an id the commit freed is not reused before its sync returned");
    store.write_bytes_to_obj(b, &bytes(4, 8192)).unwrap();
    let (c_at, b2_at) =
        (store.locate(c).unwrap().into_owned(), store.locate(b).unwrap().into_owned());
    for new in [&c_at, &b2_at] {
        for old in [&a_at, &b_at] {
            let (n, o) = (pages(new), pages(old));
            assert!(n.end <= o.start || o.end <= n.start, "{n:?} shares a page with {o:?}");
        }
    }
    assert!(store.begin_commit().is_err(), "one commit at a time");
    assert!(store.checkpoint().is_err());
    assert!(store.verify().unwrap().is_clean());
    check(&disk, "window writes, not synced");
    let synced = disk.sync_data();
    check(&disk, "synced, not ended");
    store.end_commit(synced).unwrap();
    assert!(store.verify().unwrap().is_clean());
    // What a power loss now keeps: the commit, none of the window's changes.
    for seed in 0..4 {
        let image = disk.crash_image(CrashMode::PowerLoss, seed);
        let crashed = BaseStore::open_with(SimDisk::from_image(image), unbuffered).unwrap();
        assert_eq!(crashed.ids().unwrap(), vec![b]);
        assert_eq!(crashed.read_bytes_from_obj(b).unwrap(), bytes(2, 8192));
    }
    store.commit().unwrap();
    drop(store);
    let store = BaseStore::open_with(SimDisk::from_image(image(&disk)), unbuffered).unwrap();
    assert_eq!(store.read_bytes_from_obj(b).unwrap(), bytes(4, 8192));
    assert_eq!(store.read_bytes_from_obj(c).unwrap(), bytes(3, 8192));
    assert_eq!(store.ids().unwrap().len(), 2);
    // A failed sync latches the store.
    let disk = SimDisk::new();
    let mut store = BaseStore::create_with(disk.clone(), options()).unwrap();
    put(&mut store, b"x");
    assert!(store.begin_commit().unwrap());
    assert!(store.end_commit(Err(std::io::Error::other("injected"))).is_err());
    assert!(store.is_failed());
    assert!(store.commit().is_err());
    assert!(store.verify().unwrap().is_clean(), "a latched store accounts for all its space");
}

/// A format 4 store (`tests/fixtures/format4.bob`, written by the build before format 5: 200
/// objects over two table pages checkpointed, then three rewrites and a delete of objects on
/// the first page, four one-object commits left in its journal by a drop without `close`;
/// the generator is in the commit that added the fixture) opens with every object and every
/// journal record, read-only and for writing, verifies clean, and takes new commits, which it
/// writes as format 5 while the untouched second table page stays version 4. Format 5 only
/// allows larger journal regions, so nothing is lost by reading 4; a reader that took a
/// version 4 record for the end of the journal would roll back acknowledged commits.
#[test]
fn a_format_4_store_opens_with_its_journal_and_goes_on_as_format_5() {
    use bob_store_core::{ObjectId, StoreOptions};
    fn data(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|k| (i as usize * 31 + k * 7) as u8).collect()
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("format4.bob");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format4.bob");
    std::fs::copy(fixture, &path).unwrap();
    let slot_versions = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        [0, 4096].map(|at| u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]))
    };
    assert_eq!(slot_versions(&path), [4, 4]);
    let id = |i: u64| ObjectId(2 << 32 | (i + 1)); // the ids the generator handed out
    let mut model = std::collections::BTreeMap::new();
    for i in 0..200u64 {
        model.insert(id(i), data(i, 40 + (i as usize % 7) * 30));
    }
    for (n, k) in [3u64, 7, 9].into_iter().enumerate() {
        model.insert(id(k), data(1000 + n as u64, 300 + n * 100));
    }
    model.remove(&id(5));
    let read_only = BaseStore::open_read_only(&path, StoreOptions::default()).unwrap();
    assert_eq!((read_only.format_version(), read_only.journaled_commits()), (4, 4));
    assert_eq!(contents(&read_only).unwrap(), model);
    drop(read_only);
    let mut store = BaseStore::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(contents(&store).unwrap(), model);
    assert!(store.verify().unwrap().is_clean());
    store.write_bytes_to_obj(id(10), b"format 5").unwrap();
    model.get_mut(&id(10)).unwrap()[..8].copy_from_slice(b"format 5");
    store.commit().unwrap();
    assert_eq!(store.format_version(), bob_store_core::FORMAT_VERSION);
    store.close().unwrap();
    assert!(slot_versions(&path).contains(&bob_store_core::FORMAT_VERSION));
    for _ in 0..2 {
        let store = BaseStore::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(contents(&store).unwrap(), model);
        assert!(store.verify().unwrap().is_clean());
        store.close().unwrap();
    }
}
