//! Stress tests of `ConcurrentStore` on real files (one binary, house style).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{Error, ObjectId, StoreOptions};

mod regressions;
mod review;

fn opts() -> StoreOptions {
    StoreOptions::default()
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn the_wrappers_are_send_and_sync() {
    assert_send_sync::<
        ConcurrentStore<
            bob_store_core::Store<bob_alloc::BasicAllocator, Arc<bob_io_helpers::OsFile>>,
        >,
    >();
    assert_send_sync::<
        ConcurrentStore<
            bob_store_core::Store<bob_alloc::OmniBlockAllocator, Arc<bob_io_helpers::OsFile>>,
        >,
    >();
}

fn own_bytes(thread: usize, object: usize) -> Vec<u8> {
    let len = 1 + (thread * 131 + object * 17) % 3000;
    (0..len).map(|i| (thread * 7 + object * 3 + i) as u8).collect()
}

/// 20 threads × 50 objects: unique ids, every object reads back its own bytes, before and
/// after reopen.
#[test]
fn twenty_threads_write_their_own_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Arc::new(ConcurrentStore::create_multi(&path, opts(), 0).unwrap());
    let workers: Vec<_> = (0..20)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                (0..50)
                    .map(|o| (store.write_new_obj_from_bytes(&own_bytes(t, o)).unwrap(), t, o))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let written: Vec<(ObjectId, usize, usize)> =
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let ids: HashSet<ObjectId> = written.iter().map(|w| w.0).collect();
    assert_eq!(ids.len(), 1000, "ids are unique");
    for &(id, t, o) in &written {
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), own_bytes(t, o));
    }
    store.close().unwrap();
    drop(store); // the file has one owner: release it before reopening
    let store = ConcurrentStore::open_multi(&path, opts(), 0).unwrap();
    for &(id, t, o) in &written {
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), own_bytes(t, o));
    }
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(store.locks_held(), 0);
}

/// 10 readers and 5 writers on 10 shared objects whose bytes are all one value: a reader
/// never sees two values in one read.
#[test]
fn readers_never_see_a_torn_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ConcurrentStore::create_base(dir.path().join("s"), opts(), 0).unwrap());
    let ids: Vec<ObjectId> =
        (0..10).map(|i| store.write_new_obj_from_bytes(&[i as u8; 5000]).unwrap()).collect();
    store.commit().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in 0..5u8 {
        let (store, ids, stop) = (store.clone(), ids.clone(), stop.clone());
        handles.push(thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                let id = ids[(round as usize + w as usize) % ids.len()];
                store.write_bytes_to_obj(id, &[round ^ (w << 5); 5000]).unwrap();
                if round % 16 == 0 {
                    store.commit().unwrap();
                }
            }
        }));
    }
    for r in 0..10 {
        let (store, ids, stop, reads) = (store.clone(), ids.clone(), stop.clone(), reads.clone());
        handles.push(thread::spawn(move || {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let bytes = store.read_bytes_from_obj(ids[i % ids.len()]).unwrap();
                assert_eq!(bytes.len(), 5000);
                assert!(bytes.iter().all(|&b| b == bytes[0]), "torn read");
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    thread::sleep(std::time::Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 100);
    assert!(store.verify().unwrap().is_clean());
}

/// 20 threads through 2 disk tokens: never more than 2 backend calls in flight. The objects
/// are streamed (whole small objects go through the write buffer under the global lock).
#[test]
fn two_disk_tokens_bound_twenty_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ConcurrentStore::create_base(dir.path().join("s"), opts(), 2).unwrap());
    let start = Arc::new(Barrier::new(20));
    let workers: Vec<_> = (0..20)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for o in 0..20 {
                    let bytes = own_bytes(t, o);
                    let (id, mut writer) = store.late_write_new_obj(bytes.len() as u64).unwrap();
                    std::io::Write::write_all(&mut writer, &bytes).unwrap();
                    writer.finish().unwrap();
                    assert_eq!(store.read_bytes_from_obj(id).unwrap(), own_bytes(t, o));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let peak = store.disk_tokens().peak();
    assert!((1..=2).contains(&peak), "peak {peak}");
    assert_eq!(store.disk_tokens().in_use(), 0);
}

/// Creators and deleters (a delete for every third object): verify is clean at the end and
/// the lock table is empty.
#[test]
fn mixed_creates_and_deletes_leave_a_clean_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Arc::new(ConcurrentStore::create_base(&path, opts(), 4).unwrap());
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut kept = Vec::new();
                for o in 0..60 {
                    let id = store.write_new_obj_from_bytes(&own_bytes(t, o)).unwrap();
                    if o % 3 == 2 {
                        store.delete_obj(id).unwrap();
                        // Another worker's commit may free the index for reuse at once: the
                        // deleted id is then stale, never a name for the newer object.
                        match store.read_bytes_from_obj(id) {
                            Err(Error::NotFound(_) | Error::StaleId { .. }) => {}
                            Ok(_) => panic!("a deleted id read an object"),
                            Err(other) => panic!("{other}"),
                        }
                    } else {
                        kept.push((id, t, o));
                    }
                    if o % 20 == 0 {
                        store.commit().unwrap();
                    }
                }
                kept
            })
        })
        .collect();
    let kept: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(store.locks_held(), 0);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.objects, kept.len() as u64);
    store.close().unwrap();
    drop(store); // the file has one owner: release it before reopening
    let store = ConcurrentStore::open_base(&path, opts(), 0).unwrap();
    for (id, t, o) in kept {
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), own_bytes(t, o));
    }
}

/// A delete racing readers of the same object: each read returns the old bytes or
/// `NotFound`, never anything else.
#[test]
fn a_delete_racing_readers_gives_old_bytes_or_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ConcurrentStore::create_base(dir.path().join("s"), opts(), 0).unwrap());
    for round in 0..30u8 {
        let id = store.write_new_obj_from_bytes(&[round; 20_000]).unwrap();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                thread::spawn(move || match store.read_bytes_from_obj(id) {
                    Ok(bytes) => assert_eq!(bytes, vec![round; 20_000]),
                    Err(Error::NotFound(_)) => {}
                    Err(other) => panic!("{other}"),
                })
            })
            .collect();
        store.delete_obj(id).unwrap();
        // Reuse the space at once: a reader still running would see it change.
        store.write_new_obj_from_bytes(&[255; 20_000]).unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
    }
}

/// Closing while workers run: no panic; afterwards every operation says `Closed`.
#[test]
fn close_while_workers_are_active() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Arc::new(ConcurrentStore::create_base(&path, opts(), 0).unwrap());
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut errors = 0;
                for o in 0..200 {
                    match store.write_new_obj_from_bytes(&own_bytes(t, o)) {
                        Ok(id) => {
                            let _ = store.read_bytes_from_obj(id);
                        }
                        Err(Error::Closed) => errors += 1,
                        Err(other) => panic!("{other}"),
                    }
                }
                errors
            })
        })
        .collect();
    thread::sleep(std::time::Duration::from_millis(5));
    store.close().unwrap();
    let refused: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(matches!(store.write_new_obj_from_bytes(b"late"), Err(Error::Closed)));
    assert!(matches!(store.commit(), Err(Error::Closed)));
    assert!(matches!(store.close(), Err(Error::Closed)));
    let _ = refused;
    drop(store);
    let reopened = ConcurrentStore::open_base(&path, opts(), 0).unwrap();
    assert!(reopened.verify().unwrap().is_clean());
}

/// Generic code over the `Storer` traits runs on the wrapper: streams, rewrites, batches and
/// the prime object behave as on the plain store.
#[test]
fn the_storer_traits_work_through_the_wrapper() {
    use bob_store_core::{BatchStorer, ObjectInfoStorer, ObjectWrite, PrimeStorer, Storer};
    use std::io::{Read, Write};

    fn exercise<S: Storer + BatchStorer + ObjectInfoStorer + PrimeStorer>(store: &mut S) {
        let (id, mut writer) = store.late_write_new_obj(8).unwrap();
        writer.write_all(b"abcd").unwrap();
        writer.finish().unwrap();
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"abcd\0\0\0\0");
        store.write_bytes_to_obj(id, b"XY").unwrap();
        let mut text = Vec::new();
        store.late_read_obj(id).unwrap().read_to_end(&mut text).unwrap();
        assert_eq!(text, b"XYcd\0\0\0\0");
        assert_eq!(store.object_info(id).unwrap().len, 8);
        let ids = store.allocate_run(3, 16).unwrap();
        let data = [b"one".as_slice(), b"two", b"three"];
        let batch: Vec<_> = ids.iter().copied().zip(data).collect();
        store.write_batched_objs(&batch).unwrap();
        assert_eq!(store.read_bytes_from_obj(ids[2]).unwrap(), b"three");
        let prime = store.prime_object(4).unwrap();
        assert_eq!(store.read_bytes_from_obj(prime).unwrap(), vec![0; 4]);
        store.commit().unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let mut store = ConcurrentStore::create_base(dir.path().join("s"), opts(), 2).unwrap();
    exercise(&mut store);
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(store.locks_held(), 0);
}

/// Two threads write overlapping batches, in opposite id orders, over and over: no deadlock,
/// and each object ends up holding one batch's bytes, whole.
#[test]
fn overlapping_batches_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ConcurrentStore::create_base(dir.path().join("s"), opts(), 1).unwrap());
    let ids = store.allocate_run(6, 32).unwrap();
    let workers: Vec<_> = [0u8, 1]
        .into_iter()
        .map(|w| {
            let (store, mut ids) = (store.clone(), ids.clone());
            if w == 1 {
                ids.reverse();
            }
            thread::spawn(move || {
                for round in 0..200u8 {
                    let value = [w * 100 + round % 100; 32];
                    let batch: Vec<(ObjectId, &[u8])> =
                        ids[..4].iter().map(|&id| (id, &value[..])).collect();
                    store.write_batched_objs(&batch).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    for id in &ids[..4] {
        let bytes = store.read_bytes_from_obj(*id).unwrap();
        assert!(bytes.iter().all(|&b| b == bytes[0]));
    }
    assert_eq!(store.locks_held(), 0);
}

/// `replace_obj` through the wrapper: an object grows and shrinks under the same id while
/// readers of it see the whole old or the whole new contents, never a mix; commits from
/// several threads share rounds; everything reads back after reopen.
#[test]
fn objects_replaced_with_new_lengths_while_read_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Arc::new(ConcurrentStore::create_multi(&path, opts(), 4).unwrap());
    let version = |id: u64, v: usize| vec![(id as usize * 31 + v) as u8; 100 + (v * 977) % 9000];
    let ids: Vec<ObjectId> =
        (0..4u64).map(|i| store.write_new_obj_from_bytes(&version(i, 0)).unwrap()).collect();
    store.commit().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop, ids) = (store.clone(), stop.clone(), ids.clone());
        thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for (i, id) in ids.iter().enumerate() {
                    let bytes = store.read_bytes_from_obj(*id).unwrap();
                    let v = (0..40).find(|&v| version(i as u64, v) == bytes);
                    assert!(v.is_some(), "object {id} read {} bytes of no version", bytes.len());
                    reads += 1;
                }
            }
            reads
        })
    };
    let writers: Vec<_> = (0..4usize)
        .map(|i| {
            let (store, id) = (store.clone(), ids[i]);
            thread::spawn(move || {
                for v in 1..40 {
                    store.replace_obj(id, &version(i as u64, v)).unwrap();
                    store.commit().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let stats = store.commit_stats();
    assert_eq!(stats.commits, 1 + 4 * 39);
    assert!(stats.store_commits <= stats.commits);
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
    drop(store);
    let store = ConcurrentStore::open_multi(&path, opts(), 0).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(store.read_bytes_from_obj(*id).unwrap(), version(i as u64, 39));
    }
}

/// A writer given up with `abort` creates nothing and keeps a rewritten object's bytes, and
/// releases the object's lock: the next writer of the object goes on.
#[test]
fn an_aborted_writer_releases_its_lock_and_leaves_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = ConcurrentStore::create_base(dir.path().join("s"), opts(), 0).unwrap();
    let id = store.write_new_obj_from_bytes(b"before").unwrap();
    let mut writer = store.write_to_obj(id).unwrap();
    writer.write_all(b"AFTER!").unwrap();
    writer.abort().unwrap();
    assert_eq!(store.locks_held(), 0);
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"before");
    let mut writer = store.write_to_obj(id).unwrap();
    writer.write_all(b"second").unwrap();
    writer.finish().unwrap();
    assert_eq!(store.read_bytes_from_obj(id).unwrap(), b"second");
    let (new_id, mut writer) = store.late_write_new_obj(64).unwrap();
    writer.write_all(&[1; 10]).unwrap();
    writer.abort().unwrap();
    assert!(matches!(store.read_bytes_from_obj(new_id), Err(Error::NotFound(_))));
    store.commit().unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.objects, 1);
}

/// `update_obj` is a read-modify-write no other writer comes between: eight threads adding
/// to counters kept as decimal text (which grows, so each write changes the object's length)
/// lose no add; a value past the in-lock size goes through the streaming path alike; the
/// counts survive a reopen.
#[test]
fn update_obj_loses_no_update_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = ConcurrentStore::create_base(&path, opts(), 2).unwrap();
    let counters: Vec<ObjectId> =
        (0..5).map(|_| store.write_new_obj_from_bytes(b"0").unwrap()).collect();
    // A big object: a count in its first 8 bytes, padding after.
    let big = store.write_new_obj_from_bytes(&vec![0u8; 300 << 10]).unwrap();
    thread::scope(|scope| {
        for t in 0..8usize {
            let (store, counters) = (&store, &counters);
            scope.spawn(move || {
                for i in 0..100usize {
                    let id = counters[(t + i) % counters.len()];
                    let old = store
                        .update_obj(id, |bytes| {
                            let n: u64 = std::str::from_utf8(bytes).unwrap().parse().unwrap();
                            *bytes = (n + 1).to_string().into_bytes();
                            n
                        })
                        .unwrap();
                    assert!(old < 800);
                    if i % 10 == 0 {
                        store
                            .update_obj(big, |bytes| {
                                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                                bytes[..8].copy_from_slice(&(n + 1).to_le_bytes());
                            })
                            .unwrap();
                    }
                    if i % 25 == 0 {
                        store.commit().unwrap();
                    }
                }
            });
        }
    });
    let total = |store: &ConcurrentStore<_>| -> u64 {
        counters
            .iter()
            .map(|&id| {
                String::from_utf8(store.read_bytes_from_obj(id).unwrap())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    assert_eq!(total(&store), 800);
    // A read right after an update sees it. (The race in which a reader waiting on the lock
    // got the location the update's read had cached is the loom model's to catch:
    // `loom_two_updates_of_one_object`.)
    for round in 0..3u8 {
        store.update_obj(counters[0], |bytes| bytes.push(b'0' + round)).unwrap();
        let read = store.read_bytes_from_obj(counters[0]).unwrap();
        assert_eq!(read.last(), Some(&(b'0' + round)));
        store.update_obj(counters[0], |bytes| bytes.truncate(bytes.len() - 1)).unwrap();
    }
    store.commit().unwrap();
    assert_eq!(store.locks_held(), 0);
    store.close().unwrap();
    drop(store);
    let store = ConcurrentStore::open_base(&path, opts(), 0).unwrap();
    assert_eq!(total(&store), 800);
    let big_bytes = store.read_bytes_from_obj(big).unwrap();
    assert_eq!(
        (u64::from_le_bytes(big_bytes[..8].try_into().unwrap()), big_bytes.len()),
        (80, 300 << 10)
    );
    // A missing object is an error, and `change` never runs.
    let mut ran = false;
    assert!(store.update_obj(ObjectId(999_999), |_| ran = true).is_err());
    assert!(!ran);
}

/// A stale id through the wrapper: its location was cached by a read before the delete, and
/// its index holds a newer object after the commit; every path refuses it.
#[test]
fn a_stale_id_is_refused_even_after_its_location_was_cached() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConcurrentStore::create_base(dir.path().join("s"), opts(), 0).unwrap();
    let old = store.write_new_obj_from_bytes(b"old").unwrap();
    store.commit().unwrap();
    assert_eq!(store.read_bytes_from_obj(old).unwrap(), b"old");
    store.delete_obj(old).unwrap();
    store.commit().unwrap();
    let new = store.write_new_obj_from_bytes(b"new").unwrap();
    assert_eq!(new.index(), old.index());
    fn stale<T>(r: Result<T, Error>) -> bool {
        matches!(r, Err(Error::StaleId { .. }))
    }
    assert!(stale(store.read_bytes_from_obj(old)));
    assert!(stale(store.replace_obj(old, b"x")));
    assert!(stale(store.update_obj(old, |_| ())));
    assert!(stale(store.delete_obj(old)));
    assert_eq!(store.read_bytes_from_obj(new).unwrap(), b"new");
}

/// The lock-ordering traps of the first user's hour are errors now, not hangs: an update
/// whose `change` reads its own object, and two threads each holding a writer guard and
/// opening one on the other's object.
#[test]
fn lock_order_traps_are_errors_not_deadlocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConcurrentStore::create_base(dir.path().join("s"), opts(), 0).unwrap();
    let a = store.write_new_obj_from_bytes(b"a").unwrap();
    let b = store.write_new_obj_from_bytes(b"b").unwrap();
    let inner = store.update_obj(a, |_| store.read_bytes_from_obj(a)).unwrap();
    assert!(matches!(inner, Err(Error::WouldDeadlock(_))), "{inner:?}");
    let inner = store.update_obj(a, |_| store.compact().map(|_| ())).unwrap();
    assert!(matches!(inner, Err(Error::WouldDeadlock(_))), "{inner:?}");
    let barrier = Barrier::new(2);
    let refused = thread::scope(|scope| {
        let cross = |mine: ObjectId, theirs: ObjectId| {
            let (store, barrier) = (&store, &barrier);
            scope.spawn(move || {
                let held = store.write_to_obj(mine).unwrap();
                barrier.wait();
                let second = store.write_to_obj(theirs).map(drop);
                barrier.wait();
                drop(held);
                matches!(second, Err(Error::WouldDeadlock(_)))
            })
        };
        let (x, y) = (cross(a, b), cross(b, a));
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(refused, (true, true));
    assert_eq!(store.locks_held(), 0);
    assert_eq!(store.read_bytes_from_obj(a).unwrap(), b"a");
    store.commit().unwrap();
}

/// A commit hold that ends without its commit (an error or a panic half way through a
/// change) latches the store: no later commit, of anyone, makes half the change durable.
#[test]
fn a_hold_dropped_without_its_commit_latches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = ConcurrentStore::create_base(&path, opts(), 0).unwrap();
    let node = store.write_new_obj_from_bytes(b"old").unwrap();
    store.commit().unwrap();
    {
        let hold = store.hold_commits().unwrap();
        store.replace_obj(node, b"new, half a change").unwrap();
        drop(hold);
    }
    assert!(matches!(store.commit(), Err(Error::Failed(_))));
    drop(store);
    let store = ConcurrentStore::open_base(&path, opts(), 0).unwrap();
    assert_eq!(store.read_bytes_from_obj(node).unwrap(), b"old");
    // A hold that commits leaves the store usable.
    let hold = store.hold_commits().unwrap();
    store.replace_obj(node, b"whole").unwrap();
    hold.commit().unwrap();
    store.commit().unwrap();
    assert_eq!(store.read_bytes_from_obj(node).unwrap(), b"whole");
}

/// `prefetch_objs` is a hint: committed, uncommitted, deleted and never-made objects may be
/// named (in any order, twice), on an open and a closed store, and nothing read changes; it
/// holds no lock or disk token afterwards.
#[test]
fn a_prefetch_changes_no_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConcurrentStore::create_multi(dir.path().join("s"), opts(), 1).unwrap();
    let committed: Vec<ObjectId> =
        (0..20).map(|o| store.write_new_obj_from_bytes(&own_bytes(1, o)).unwrap()).collect();
    store.commit().unwrap();
    let fresh = store.write_new_obj_from_bytes(&own_bytes(2, 0)).unwrap();
    store.delete_obj(committed[3]).unwrap();
    let mut named: Vec<ObjectId> = committed.iter().rev().copied().collect();
    named.extend([fresh, committed[0], ObjectId(1 << 40)]);
    store.prefetch_objs(&named);
    assert_eq!((store.locks_held(), store.disk_tokens().in_use()), (0, 0));
    for (o, &id) in committed.iter().enumerate() {
        match store.read_bytes_from_obj(id) {
            Ok(bytes) => assert_eq!(bytes, own_bytes(1, o)),
            Err(e) => assert!(o == 3 && matches!(e, Error::NotFound(_)), "object {o}: {e}"),
        }
    }
    assert_eq!(store.read_bytes_from_obj(fresh).unwrap(), own_bytes(2, 0));
    store.close().unwrap();
    store.prefetch_objs(&named);
}
