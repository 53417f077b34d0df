//! Object store costs against the raw file operations they stand on.
//!
//! - `load`: 65,536 objects of 4 KiB with a commit every 1,024, against `pwrite` of the same
//!   bytes with an `fdatasync` every 1,024 writes (`raw`), on a real file. Set
//!   `BOB_BENCH_LOAD_OBJECTS` to load fewer.
//! - `read_random`: random 4 KiB object reads (checksum checked) from a committed, cached
//!   store, against `pread` of 4 KiB at the same offsets' pages.
//! - `write_small`: 64-byte objects written without a commit.
//! - `open`: opening a store of 1,000,000 small objects, closed cleanly, and left by a crash
//!   with a full journal (256 records of 100 scattered overwrites each, replayed by open, the
//!   last record's data read and checked).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bob_benches::payload;
use bob_store_core::{BaseStore, ObjectId, StoreOptions, Storer};
use bob_store_multi::MultiStore;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const OBJECT_BYTES: usize = 4096;
const COMMIT_EVERY: usize = 1024;

fn load_objects() -> usize {
    std::env::var("BOB_BENCH_LOAD_OBJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(65_536)
}

fn raw_load(dir: &std::path::Path, blobs: &[Vec<u8>]) -> Duration {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join("raw"))
        .expect("raw file");
    let started = Instant::now();
    for (i, blob) in blobs.iter().enumerate() {
        file.write_all_at(blob, (i * OBJECT_BYTES) as u64).expect("pwrite");
        if (i + 1) % COMMIT_EVERY == 0 {
            file.sync_data().expect("fdatasync");
        }
    }
    file.sync_data().expect("fdatasync");
    started.elapsed()
}

fn store_load<S: Storer>(mut store: S, blobs: &[Vec<u8>]) -> Duration {
    let started = Instant::now();
    for (i, blob) in blobs.iter().enumerate() {
        store.write_new_obj_from_bytes(blob).expect("write");
        if (i + 1) % COMMIT_EVERY == 0 {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
    let elapsed = started.elapsed();
    drop(store);
    elapsed
}

fn bench_load(c: &mut Criterion) {
    let objects = load_objects();
    // A set of distinct payloads reused across objects keeps memory small.
    let blobs: Vec<Vec<u8>> =
        (0..objects).map(|i| payload(i as u64 % 4096, OBJECT_BYTES)).collect();
    let mut group = c.benchmark_group("load");
    group.throughput(Throughput::Bytes((objects * OBJECT_BYTES) as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(20));
    let id = format!("objects={objects}/bytes={OBJECT_BYTES}/commit_every={COMMIT_EVERY}");
    group.bench_function(BenchmarkId::new("raw_pwrite_fdatasync", &id), |b| {
        b.iter_custom(|iters| {
            (0..iters).map(|_| raw_load(tempfile::tempdir().expect("dir").path(), &blobs)).sum()
        })
    });
    group.bench_function(BenchmarkId::new("base_store", &id), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let dir = tempfile::tempdir().expect("dir");
                    let store = BaseStore::create(dir.path().join("s"), StoreOptions::default())
                        .expect("create");
                    store_load(store, &blobs)
                })
                .sum()
        })
    });
    group.bench_function(BenchmarkId::new("multi_store", &id), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let dir = tempfile::tempdir().expect("dir");
                    let store = MultiStore::create(dir.path().join("s"), StoreOptions::default())
                        .expect("create");
                    store_load(store, &blobs)
                })
                .sum()
        })
    });
    group.finish();
}

/// A deterministic xorshift index stream.
fn indices(count: usize, below: usize) -> Vec<usize> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        })
        .collect()
}

fn bench_read_random(c: &mut Criterion) {
    const OBJECTS: usize = 65_536;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s");
    let mut store = BaseStore::create(&path, StoreOptions::default()).expect("create");
    let ids: Vec<ObjectId> = (0..OBJECTS)
        .map(|i| store.write_new_obj_from_bytes(&payload(i as u64, OBJECT_BYTES)).expect("write"))
        .collect();
    store.close().expect("close");
    let store = BaseStore::open(&path, StoreOptions::default()).expect("open");
    let raw = File::open(&path).expect("raw");
    let raw_len = raw.metadata().expect("len").len() as usize;
    let order = indices(1 << 16, OBJECTS);
    let mut group = c.benchmark_group("read_random");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let mut next = 0usize;
    let id = format!("objects={OBJECTS}/bytes={OBJECT_BYTES}");
    group.bench_function(BenchmarkId::new("raw_pread", &id), |b| {
        let mut buf = vec![0u8; OBJECT_BYTES];
        b.iter(|| {
            next = (next + 1) % order.len();
            let page = order[next] % (raw_len / OBJECT_BYTES - 1);
            raw.read_exact_at(&mut buf, (page * OBJECT_BYTES) as u64).expect("pread");
        })
    });
    group.bench_function(BenchmarkId::new("base_store/read_bytes_from_obj", &id), |b| {
        b.iter(|| {
            next = (next + 1) % order.len();
            store.read_bytes_from_obj(ids[order[next]]).expect("read")
        })
    });
    group.bench_function(BenchmarkId::new("base_store/read_obj_into", &id), |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            next = (next + 1) % order.len();
            store.read_obj_into(ids[order[next]], &mut buf).expect("read");
        })
    });
    group.finish();
}

fn bench_write_small(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_small");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let data = payload(7, 64);
    group.bench_function("base_store/bytes=64/no_commit", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("dir");
            let mut store =
                BaseStore::create(dir.path().join("s"), StoreOptions::default()).expect("create");
            let started = Instant::now();
            for _ in 0..iters {
                store.write_new_obj_from_bytes(&data).expect("write");
            }
            started.elapsed()
        })
    });
    group.bench_function("multi_store/bytes=64/no_commit", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("dir");
            let mut store =
                MultiStore::create(dir.path().join("s"), StoreOptions::default()).expect("create");
            let started = Instant::now();
            for _ in 0..iters {
                store.write_new_obj_from_bytes(&data).expect("write");
            }
            started.elapsed()
        })
    });
    group.finish();
}

fn bench_open(c: &mut Criterion) {
    const OBJECTS: usize = 1_000_000;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s");
    let mut store = MultiStore::create(&path, StoreOptions::default()).expect("create");
    for i in 0..OBJECTS {
        store.write_new_obj_from_bytes(&(i as u64).to_le_bytes()).expect("write");
    }
    store.close().expect("close");
    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(format!("multi_store/objects={OBJECTS}"), |b| {
        b.iter(|| MultiStore::open(&path, StoreOptions::default()).expect("open"))
    });
    // Fill the journal: the session's first change is a checkpoint, then records of one page
    // each (100 entries) fill it (512 of them, 2 MiB by default); then a crash (a drop: no
    // I/O).
    let records = StoreOptions::default().journal_bytes / 4096;
    let mut store = MultiStore::open(&path, StoreOptions::default()).expect("open");
    let ids = store.ids().expect("ids");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut round = 0u64;
    while store.journaled_commits() < records && round < records + 50 {
        round += 1;
        for _ in 0..100 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = ids[(state % ids.len() as u64) as usize];
            store.write_bytes_to_obj(id, &round.to_le_bytes()).expect("overwrite");
        }
        store.commit().expect("commit");
    }
    assert_eq!((store.checkpoints(), store.journaled_commits()), (1, records), "a full journal");
    drop(store);
    group.bench_function(format!("multi_store/objects={OBJECTS}/crashed_full_journal"), |b| {
        b.iter(|| MultiStore::open(&path, StoreOptions::default()).expect("open"))
    });
    group.finish();
}

criterion_group!(benches, bench_write_small, bench_read_random, bench_open, bench_load);
criterion_main!(benches);
