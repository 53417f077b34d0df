//! The disk cache crashed at every operation of a workload of stores, buffered stores,
//! flushes, an overwrite, a remove and an eviction: after a power loss (or a process crash)
//! the reopened cache holds exactly the last acknowledged state or the one the interrupted
//! call was making, never a mix, never an entry without its bytes, and goes on working.

use std::collections::BTreeMap;

use bob_batch_io::{DiskCache, DiskCacheOptions, Result};
use bob_btree::testing::{Machine, crash_options};

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
                cache.close().map_err(to_db)
            });
            reopened.unwrap_or_else(|e| panic!("{context}: the reopen failed: {e}"));
        }
    }
}
