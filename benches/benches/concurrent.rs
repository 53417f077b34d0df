//! `ConcurrentStore` scaling.
//!
//! - `concurrent_read_random`: random 4 KiB reads of distinct objects from 1 and 2 threads
//!   (each thread reads its own half of the objects). "time" is per read, so the speed-up of
//!   2 threads is the 1-thread time divided by the 2-thread time.
//! - `concurrent_commit`: durable one-object commits (write a 4 KiB object, `commit`) from 1
//!   and 8 threads; "time" is per commit call, so the group-commit speed-up is the 1-thread
//!   time divided by the 8-thread time. The store's commits per call are printed.

use std::time::{Duration, Instant};

use bob_benches::payload;
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::{ObjectId, StoreOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const OBJECTS: usize = 65_536;
const OBJECT_BYTES: usize = 4096;

fn reads(
    store: &ConcurrentStore<impl bob_store_core::SplitStore<Io: Clone>>,
    ids: &[ObjectId],
    count: u64,
    seed: u64,
) {
    let mut state = seed | 1;
    let mut buf = Vec::new();
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = ids[(state % ids.len() as u64) as usize];
        store.read_obj_into(id, &mut buf).expect("read");
    }
}

fn bench_read_scaling(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = ConcurrentStore::create_base(dir.path().join("s"), StoreOptions::default(), 0)
        .expect("create");
    let ids: Vec<ObjectId> = (0..OBJECTS)
        .map(|i| store.write_new_obj_from_bytes(&payload(i as u64, OBJECT_BYTES)).expect("write"))
        .collect();
    store.commit().expect("commit");
    // Warm the page cache and let the machine settle, so neither case pays for the load.
    let mut buf = Vec::new();
    for &id in &ids {
        store.read_obj_into(id, &mut buf).expect("warm-up read");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (first, second) = ids.split_at(OBJECTS / 2);
    let mut group = c.benchmark_group("concurrent_read_random");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("threads=2/bytes=4096", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                scope.spawn(|| reads(&store, first, iters / 2, 0x1234_5678));
                scope.spawn(|| reads(&store, second, iters - iters / 2, 0x8765_4321));
            });
            started.elapsed()
        })
    });
    group.bench_function("threads=1/bytes=4096", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            reads(&store, &ids, iters, 0x1234_5678);
            started.elapsed()
        })
    });
    group.finish();
}

/// `count` durable one-object commits of 4 KiB from each of `threads` threads.
fn commits(
    store: &ConcurrentStore<impl bob_store_core::SplitStore<Io: Clone + Sync> + Sync>,
    threads: u64,
    count: u64,
) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in 0..count {
                    let bytes = payload(t << 32 | i, OBJECT_BYTES);
                    let id = store.write_new_obj_from_bytes(&bytes).expect("write");
                    store.commit().expect("commit");
                    store.delete_obj(id).expect("delete");
                }
            });
        }
    });
}

fn bench_group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = ConcurrentStore::create_base(dir.path().join("c"), StoreOptions::default(), 0)
        .expect("create");
    let mut group = c.benchmark_group("concurrent_commit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    for threads in [1u64, 8] {
        let before = store.commit_stats();
        group.bench_function(format!("threads={threads}/bytes=4096"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads);
                let started = Instant::now();
                commits(&store, threads, per_thread);
                // Time per commit call made.
                started.elapsed().mul_f64(iters as f64 / (per_thread * threads) as f64)
            })
        });
        let after = store.commit_stats();
        eprintln!(
            "concurrent_commit threads={threads}: {} commit calls, {} store commits",
            after.commits - before.commits,
            after.store_commits - before.store_commits
        );
    }
    group.finish();
}

criterion_group!(benches, bench_read_scaling, bench_group_commit);
criterion_main!(benches);
