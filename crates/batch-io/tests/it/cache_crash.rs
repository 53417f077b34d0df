//! The disk cache crashed at every operation of a workload of stores, buffered stores,
//! flushes, an overwrite, a remove and an eviction: after a power loss (or a process crash)
//! the reopened cache holds exactly the last acknowledged state or the one the interrupted
//! call was making, never a mix, never an entry without its bytes, and goes on working.

use std::collections::BTreeMap;

use bob_batch_io::{DiskCache, DiskCacheOptions, Error, Result};
use bob_btree::testing::{Machine, crash_options};
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, FaultKind, FaultPlan, OpFilter, OpKind, Repeat, SimDisk};

/// Keys to values, and the keys from least to most recently used.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    recency: Vec<Vec<u8>>,
}

const CAPACITY: u64 = 12_000;

impl Model {
    /// A commit of `puts` (in order) and `removes`, then eviction of the least recently used
    /// entries not just written while the bytes pass the capacity (the cache's rule).
    fn commit(&self, puts: &[(&[u8], Vec<u8>)], removes: &[&[u8]], capacity: u64) -> Model {
        let mut next = self.clone();
        for key in removes {
            next.entries.remove(*key);
            next.recency.retain(|k| k != key);
        }
        for (key, value) in puts {
            next.entries.insert(key.to_vec(), value.clone());
            next.recency.retain(|k| k != key);
            next.recency.push(key.to_vec());
        }
        let fresh: Vec<&[u8]> = puts.iter().map(|(k, _)| *k).collect();
        let mut bytes: u64 = next.entries.values().map(|v| v.len() as u64).sum();
        for key in next.recency.clone() {
            if bytes <= capacity {
                break;
            }
            if !fresh.contains(&key.as_slice()) {
                bytes -= next.entries.remove(&key).expect("listed").len() as u64;
                next.recency.retain(|k| *k != key);
            }
        }
        next
    }
}

fn value(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_mul(31).wrapping_add(i as u8)).collect()
}

/// Raw values under a capacity (one store evicts), or compressed ones (LZ4 entries) with
/// no capacity to speak of (the model counts raw bytes).
fn options(compress: bool) -> DiskCacheOptions {
    DiskCacheOptions {
        capacity_bytes: capacity(compress),
        max_buffered: 3,
        compress,
        ..DiskCacheOptions::default()
    }
}

fn capacity(compress: bool) -> u64 {
    if compress { u64::MAX } else { CAPACITY }
}

/// Every state the workload makes durable, in order (the first: empty).
fn states(capacity: u64) -> Vec<Model> {
    let mut states = vec![Model::default()];
    let mut step = |puts: &[(&[u8], Vec<u8>)], removes: &[&[u8]]| {
        let next = states.last().expect("one").commit(puts, removes, capacity);
        states.push(next);
    };
    step(&[(b"a", value(1, 3000))], &[]);
    step(&[(b"b", value(2, 3000))], &[]);
    step(&[(b"c", value(3, 2000)), (b"d", value(4, 2000)), (b"e", value(5, 1000))], &[]);
    step(&[(b"a", value(6, 3500))], &[]);
    step(&[], &[b"c"]);
    step(&[(b"f", value(7, 4000))], &[]); // evicts b (under the capacity)
    step(&[(b"g", value(8, 500))], &[]);
    states
}

/// The workload; `acked` counts the durable steps that returned `Ok`.
fn workload<S>(cache: &DiskCache<S>, acked: &mut usize) -> Result<()>
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer + Send + Sync + 'static,
{
    cache.store(b"a", &value(1, 3000))?;
    *acked += 1;
    cache.store(b"b", &value(2, 3000))?;
    *acked += 1;
    cache.store_buffered(b"c", &value(3, 2000))?;
    cache.store_buffered(b"d", &value(4, 2000))?;
    cache.store_buffered(b"e", &value(5, 1000))?; // the third: a flush
    *acked += 1;
    cache.store(b"a", &value(6, 3500))?;
    *acked += 1;
    assert!(cache.remove(b"c")?);
    *acked += 1;
    cache.store(b"f", &value(7, 4000))?;
    *acked += 1;
    cache.flush_writes()?; // nothing buffered: no commit
    cache.store_buffered(b"g", &value(8, 500))?;
    cache.flush_writes()?;
    *acked += 1;
    Ok(())
}

/// What the reopened cache holds, checked against `allowed`; then it takes one more store.
fn check<S>(cache: &DiskCache<S>, allowed: &[&Model], compress: bool, context: &str)
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer + Send + Sync + 'static,
{
    let keys: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"e", b"f", b"g"];
    let got = cache.lookup_batch(&keys);
    let mut found = BTreeMap::new();
    for (key, result) in keys.iter().zip(got) {
        let value = result.unwrap_or_else(|e| panic!("{context}: {key:?} fails: {e}"));
        if let Some(value) = value {
            found.insert(key.to_vec(), value);
        }
    }
    assert!(
        allowed.iter().any(|m| m.entries == found),
        "{context}: the cache holds {:?}, not one of {:?}",
        found.keys().collect::<Vec<_>>(),
        allowed.iter().map(|m| m.entries.keys().collect::<Vec<_>>()).collect::<Vec<_>>()
    );
    let stats = cache.stats();
    assert_eq!(stats.entries, found.len() as u64, "{context}: counted entries");
    // The bytes kept: compressed where that is shorter.
    let kept = |v: &Vec<u8>| {
        let packed = lz4_flex::compress_prepend_size(v).len();
        if compress && packed < v.len() { packed as u64 } else { v.len() as u64 }
    };
    let bytes: u64 = found.values().map(kept).sum();
    assert_eq!(stats.bytes, bytes, "{context}: counted bytes");
    cache.store(b"after", b"the cache works after the crash").unwrap();
    assert_eq!(cache.lookup(b"after").unwrap().unwrap(), b"the cache works after the crash");
}

#[test]
fn a_crash_at_every_operation_leaves_an_acknowledged_state_or_the_next() {
    crash_everywhere(false);
}

#[test]
fn a_crash_at_every_operation_with_compressed_values_leaves_an_acknowledged_state() {
    crash_everywhere(true);
}

fn crash_everywhere(compress: bool) {
    let states = states(capacity(compress));
    let db_options = crash_options();
    // A run without a crash: every step acknowledged, and how many operations it takes.
    let mut machine = Machine::new();
    let (clock, done) = machine.run_owned(&db_options, u64::MAX, true, |db| {
        let cache = DiskCache::with_db(db, options(compress)).map_err(to_db)?;
        let mut acked = 0;
        workload(&cache, &mut acked).map_err(to_db)?;
        cache.close().map_err(to_db)?;
        Ok(acked)
    });
    assert_eq!(done.unwrap(), states.len() - 1);
    let total = clock.ops();
    assert!(total > 50, "the workload runs {total} operations");
    for crash_at in 0..total {
        let mut machine = Machine::new();
        let (mut acked, mut opened) = (0, false);
        let _ = machine.run_owned(&db_options, crash_at, true, |db| {
            let cache = DiskCache::with_db(db, options(compress)).map_err(to_db)?;
            opened = true;
            workload(&cache, &mut acked).map_err(to_db)?;
            cache.close().map_err(to_db)
        });
        let allowed: Vec<&Model> = states[acked..].iter().take(2).collect();
        let images = (0..3u64)
            .map(|seed| ("power loss", machine.crashed(crash_at.wrapping_mul(0x9E37_79B9) ^ seed)))
            .chain([("process crash", machine.copy())]);
        for (what, mut after) in images {
            let context =
                format!("{what} at operation {crash_at} of {total} ({acked} acknowledged)");
            let (_, reopened) = after.run_owned(&db_options, u64::MAX, false, |db| {
                let cache = DiskCache::with_db(db, options(compress)).map_err(to_db)?;
                check(&cache, &allowed, compress, &context);
                cache.close().map_err(to_db)
            });
            match reopened {
                Ok(()) => {}
                // Only a store whose creation never finished may fail to open.
                Err(e) => assert!(!opened, "{context}: the reopen failed: {e}"),
            }
        }
    }
}

fn to_db(e: bob_batch_io::Error) -> bob_btree::Error {
    bob_btree::Error::Corrupt(e.to_string())
}

/// A cache whose index is still the treap of the layout before 2026-12-02, built with the
/// database's own calls: blobs in the shared store, 32-byte raw entries in the named treap.
fn old_layout(
    db: &bob_btree::testing::SimDb,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> bob_btree::Result<()> {
    let store = db.shared_store()?;
    let mut encoded = Vec::new();
    for (key, value) in entries {
        let id = store.write_new_obj_from_bytes(value)?;
        let entry: Vec<u8> =
            [id.0, value.len() as u64, 1, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        encoded.push((key.clone(), entry));
    }
    db.with_treap(
        "bob-batch-io/disk-cache",
        |index: &mut bob_treap::PersistentTreap<Vec<u8>, Vec<u8>>, store| {
            for (key, entry) in encoded {
                index.insert(store, key, entry)?;
            }
            Ok::<(), bob_treap::Error>(())
        },
    )??;
    db.save_treap("bob-batch-io/disk-cache")
}

/// The move of a treap index into the tree (the first open of a cache written before
/// 2026-12-02) crashed at every operation: every reopen, after a power loss or a process
/// crash, finds every entry with its value.
#[test]
fn a_crash_while_the_old_index_moves_into_the_tree_loses_no_entry() {
    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        (0..12u8).map(|k| (vec![b'k', k], value(k, 300 + 97 * k as usize))).collect();
    let db_options = crash_options();
    let mut base = Machine::new();
    let (_, made) = base.run_owned(&db_options, u64::MAX, true, |db| {
        old_layout(&db, &entries)?;
        db.close()
    });
    made.unwrap();
    let check = |cache: &DiskCache<_>, context: &str| {
        assert_eq!(cache.stats().entries, entries.len() as u64, "{context}");
        for (key, value) in &entries {
            let got = cache.lookup(key).unwrap_or_else(|e| panic!("{context}: {key:?}: {e}"));
            assert_eq!(got.as_ref(), Some(value), "{context}: {key:?}");
        }
    };
    let (clock, done) = base.copy().run_owned(&db_options, u64::MAX, false, |db| {
        let cache = DiskCache::with_db(db, options(false)).map_err(to_db)?;
        check(&cache, "no crash");
        cache.close().map_err(to_db)
    });
    done.unwrap();
    let total = clock.ops();
    assert!(total > 10, "the move runs {total} operations");
    for crash_at in 0..total {
        let mut machine = base.copy();
        let _ = machine.run_owned(&db_options, crash_at, false, |db| {
            let cache = DiskCache::with_db(db, options(false)).map_err(to_db)?;
            cache.close().map_err(to_db)
        });
        let images = (0..3u64)
            .map(|seed| ("power loss", machine.crashed(crash_at.wrapping_mul(0x9E37_79B9) ^ seed)))
            .chain([("process crash", machine.copy())]);
        for (what, mut after) in images {
            let context = format!("{what} at operation {crash_at} of {total}");
            let (_, reopened) = after.run_owned(&db_options, u64::MAX, false, |db| {
                let cache = DiskCache::with_db(db, options(false)).map_err(to_db)?;
                check(&cache, &context);
                // The moved entries change like any other, and stay changed.
                cache.store(&entries[0].0, b"changed").map_err(to_db)?;
                assert!(cache.remove(&entries[1].0).map_err(to_db)?, "{context}");
                cache.close().map_err(to_db)
            });
            reopened.unwrap_or_else(|e| panic!("{context}: the reopen failed: {e}"));
            let (_, again) = after.run_owned(&db_options, u64::MAX, false, |db| {
                let cache = DiskCache::with_db(db, options(false)).map_err(to_db)?;
                assert_eq!(cache.stats().entries, entries.len() as u64 - 1, "{context}");
                let first = cache.lookup(&entries[0].0).map_err(to_db)?;
                assert_eq!(first.as_deref(), Some(&b"changed"[..]), "{context}");
                assert!(cache.lookup(&entries[1].0).map_err(to_db)?.is_none(), "{context}");
                for (key, value) in &entries[2..] {
                    let got = cache.lookup(key).map_err(to_db)?;
                    assert_eq!(got.as_ref(), Some(value), "{context}: {key:?}");
                }
                cache.close().map_err(to_db)
            });
            again.unwrap_or_else(|e| panic!("{context}: the second reopen failed: {e}"));
        }
    }
}

/// A log directory of simulated disks whose next sync can be made to fail once.
#[derive(Clone, Default)]
struct FaultyLog {
    files: std::sync::Arc<std::sync::Mutex<BTreeMap<u64, SimDisk>>>,
}

impl FaultyLog {
    /// The next sync of every segment fails (once).
    fn fail_next_sync(&self) {
        for disk in self.files.lock().unwrap().values() {
            let at = disk.op_counts().syncs;
            disk.set_fault(FaultPlan {
                at,
                on: OpFilter::Only(OpKind::Sync),
                kind: FaultKind::Io,
                repeat: Repeat::Once,
            });
        }
    }

    /// The segments as a power loss leaves them.
    fn crashed(&self, seed: u64) -> Self {
        let files = self.files.lock().unwrap();
        let files = files
            .iter()
            .map(|(&seq, disk)| (seq, disk.crashed(CrashMode::PowerLoss, seed ^ seq)))
            .collect();
        Self { files: std::sync::Arc::new(std::sync::Mutex::new(files)) }
    }
}

impl bob_btree::LogDir for FaultyLog {
    fn list(&self) -> std::io::Result<Vec<u64>> {
        Ok(self.files.lock().unwrap().keys().copied().collect())
    }

    fn create(&self, seq: u64, header: &[u8]) -> std::io::Result<bob_btree::LogFile> {
        let disk = SimDisk::new();
        disk.write_at(header, 0)?;
        disk.sync_all()?;
        self.files.lock().unwrap().insert(seq, disk.clone());
        Ok(std::sync::Arc::new(disk))
    }

    fn open(&self, seq: u64) -> std::io::Result<bob_btree::LogFile> {
        let files = self.files.lock().unwrap();
        let disk =
            files.get(&seq).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(std::sync::Arc::new(disk.clone()))
    }

    fn remove(&self, seq: u64) -> std::io::Result<()> {
        self.files.lock().unwrap().remove(&seq);
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

type SimCache = DiskCache<bob_store_core::BaseStore<SimDisk>>;

fn cache_on(store: SimDisk, log: &FaultyLog, create: bool) -> SimCache {
    let options = bob_btree::DbOptions { checkpoint_interval: None, ..crash_options() };
    let store = if create {
        bob_store_core::BaseStore::create_with(store, options.store)
    } else {
        bob_store_core::BaseStore::open_with(store, options.store)
    }
    .unwrap();
    let db = bob_btree::Db::with_log(
        bob_store_concurrent::ConcurrentStore::new(store, 0),
        Box::new(log.clone()),
        &options,
    )
    .unwrap();
    DiskCache::with_db(db, DiskCacheOptions::default()).unwrap()
}

/// Found in review: an overwrite whose log sync failed is visible in the index (its list of
/// blobs to delete included), durable or not; a later commit that read that list deleted the
/// overwritten blob and committed the store, so after a power loss that dropped the record
/// the durable index named a deleted blob. Now every commit after a failed index commit is
/// refused, and each power-loss image opens to the old value or the new one.
#[test]
fn a_failed_index_commit_stops_later_commits_from_deleting_what_it_dropped() {
    let store = SimDisk::new();
    let log = FaultyLog::default();
    let cache = cache_on(store.clone(), &log, true);
    cache.store(b"a", &value(1, 500)).unwrap();
    log.fail_next_sync();
    assert!(cache.store(b"a", &value(2, 500)).is_err(), "the overwrite's sync failed");
    let refused = cache.store(b"b", &value(3, 500));
    let removed = cache.remove(b"a");
    assert!(cache.lookup(b"a").unwrap().is_some(), "reads go on");
    for seed in 0..16u64 {
        let image = cache_on(store.crashed(CrashMode::PowerLoss, seed), &log.crashed(seed), false);
        let got = image.lookup(b"a").unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            got == Some(value(1, 500)) || got == Some(value(2, 500)),
            "seed {seed}: the old value or the new one"
        );
        assert!(image.lookup(b"b").unwrap().is_none(), "seed {seed}: b was refused");
    }
    assert!(matches!(refused, Err(Error::Failed(_))), "{refused:?}");
    assert!(matches!(removed, Err(Error::Failed(_))), "{removed:?}");
    drop(cache);
}
