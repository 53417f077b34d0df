//! The disk cache sharing its store with another writer that commits on its own: power-loss
//! images taken while both run each open to a cache whose every entry reads back whole. A
//! foreign commit between a cache commit's release of an old blob and its index save would
//! make the release durable first (the blob's space reused, the index still naming it); the
//! save's commit hold keeps such commits out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bob_batch_io::{DiskCache, DiskCacheOptions};
use bob_btree::Db;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{BaseStore, StoreOptions};

type SimStore = BaseStore<SimDisk>;

/// Version `v` of key `k`'s value: says which it is all along, so a blob of another entry
/// (or of reused space) cannot pass for it.
fn value(k: u64, v: u64) -> Vec<u8> {
    format!("[{k}:{v}]").repeat(150 + (k as usize % 7) * 40).into_bytes()
}

fn options() -> DiskCacheOptions {
    DiskCacheOptions { capacity_bytes: 40_000, max_buffered: 4, ..DiskCacheOptions::default() }
}

#[test]
fn cache_commits_and_foreign_commits_in_one_store_survive_power_losses() {
    let disk = SimDisk::new();
    let store = SimStore::create_with(disk.clone(), StoreOptions::default()).unwrap();
    let db = Db::new(ConcurrentStore::new(store, 0)).unwrap();
    let cache = DiskCache::with_db(db, options()).unwrap();
    let done = AtomicBool::new(false);
    let images = Mutex::new(Vec::new());
    let taken = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            // Not before the camera runs: on a fast machine the writes can all be done in the
            // time a thread takes to start, and the run would see no image taken meanwhile.
            while taken.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            for v in 0..12u64 {
                for k in 0..10u64 {
                    if (k + v) % 3 == 0 {
                        cache.store_buffered(&k.to_le_bytes(), &value(k, v)).unwrap();
                    } else {
                        cache.store(&k.to_le_bytes(), &value(k, v)).unwrap();
                    }
                }
                cache.flush_writes().unwrap();
                cache.remove(&(v % 10).to_le_bytes()).unwrap();
            }
        });
        let foreign = scope.spawn(|| {
            // Another user of the same store: objects written, committed, deleted, committed.
            let store = cache_store(&cache);
            while !done.load(Ordering::Acquire) {
                let id = store.write_new_obj_from_bytes(&[0xAB; 3000]).unwrap();
                store.commit().unwrap();
                store.delete_obj(id).unwrap();
                store.commit().unwrap();
            }
        });
        let camera = scope.spawn(|| {
            let mut seed = 0;
            while !done.load(Ordering::Acquire) {
                images.lock().unwrap().push(disk.crash_image(CrashMode::PowerLoss, seed));
                seed += 1;
                // The first images back to back, then one a millisecond.
                if taken.fetch_add(1, Ordering::AcqRel) >= 8 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        writer.join().unwrap();
        done.store(true, Ordering::Release);
        foreign.join().unwrap();
        camera.join().unwrap();
    });
    cache.close().unwrap();
    let mut images = images.into_inner().unwrap();
    images.push(disk.crash_image(CrashMode::PowerLoss, u64::MAX));
    assert!(images.len() >= 3, "only {} images", images.len());
    for (i, image) in images.into_iter().enumerate() {
        let store = SimStore::open_with(SimDisk::from_image(image), StoreOptions::default())
            .unwrap_or_else(|e| panic!("image {i}: the store does not open: {e}"));
        assert!(store.verify().unwrap().is_clean(), "image {i}: the store does not verify");
        let db = Db::new(ConcurrentStore::new(store, 0)).unwrap();
        let cache = DiskCache::with_db(db, options()).unwrap();
        let keys: Vec<[u8; 8]> = (0..10u64).map(u64::to_le_bytes).collect();
        let asked: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        for (k, got) in cache.lookup_batch(&asked).into_iter().enumerate() {
            let got = got.unwrap_or_else(|e| panic!("image {i}: key {k} does not read: {e}"));
            if let Some(bytes) = got {
                let v = (0..12u64).find(|&v| bytes == value(k as u64, v));
                assert!(v.is_some(), "image {i}: key {k} holds another entry's bytes");
            }
        }
        cache.close().unwrap();
    }
}

/// The cache's store, for the foreign writer (the cache marks it shared when it commits).
fn cache_store<S>(cache: &DiskCache<S>) -> &ConcurrentStore<S>
where
    S: bob_store_core::SplitStore<Io: Clone> + bob_store_core::PrimeStorer + Send + Sync + 'static,
{
    cache.shared_store().unwrap()
}
