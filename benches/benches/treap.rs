//! Treap persistence for fresh trees of u64 keys on a `BaseStore` over a real file:
//! - `persist_unbuffered`: `persist` with the store's write buffer off, one `pwrite` per node
//!   (what the seed's per-node `Persist` does);
//! - `persist`: `persist` with the default write buffer: nodes are staged in memory and the
//!   writes happen at the next commit, which is not timed here;
//! - `batch_persist`: a run per node size, one `pwritev` per run, written now.
//!
//! And a 100,000-node tree made durable (`batch_persist` plus the commit's two syncs).
//! Building the tree is setup, not timed.

use std::time::{Duration, Instant};

use bob_store_core::{BaseStore, StoreOptions, Storer};
use bob_treap::PersistentTreap;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn setup(nodes: u64) -> (tempfile::TempDir, BaseStore, PersistentTreap<u64>) {
    setup_with(nodes, StoreOptions::default())
}

fn setup_with(
    nodes: u64,
    options: StoreOptions,
) -> (tempfile::TempDir, BaseStore, PersistentTreap<u64>) {
    let dir = tempfile::tempdir().expect("dir");
    let store = BaseStore::create(dir.path().join("t"), options).expect("create");
    let mut tree = PersistentTreap::new();
    for k in 0..nodes {
        tree.insert(&store, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), ()).expect("insert");
    }
    (dir, store, tree)
}

fn bench_persist(c: &mut Criterion) {
    let mut group = c.benchmark_group("treap");
    group.measurement_time(Duration::from_secs(3));
    for nodes in [10u64, 50, 100, 500] {
        group.throughput(Throughput::Elements(nodes));
        let unbuffered = StoreOptions { write_buffer_bytes: 0, ..StoreOptions::default() };
        group.bench_function(
            BenchmarkId::new("persist_unbuffered", format!("nodes={nodes}")),
            |b| {
                b.iter_batched(
                    || setup_with(nodes, unbuffered),
                    |(dir, mut store, mut tree)| {
                        let root = tree.persist(&mut store).expect("persist");
                        (dir, store, tree, root)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
        group.bench_function(BenchmarkId::new("persist", format!("nodes={nodes}")), |b| {
            b.iter_batched(
                || setup(nodes),
                // Returned, so dropping the store and its directory is not timed.
                |(dir, mut store, mut tree)| {
                    let root = tree.persist(&mut store).expect("persist");
                    (dir, store, tree, root)
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("batch_persist", format!("nodes={nodes}")), |b| {
            b.iter_batched(
                || setup(nodes),
                |(dir, mut store, mut tree)| {
                    let report = tree.batch_persist(&mut store).expect("batch");
                    (dir, store, tree, report)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn bench_durable(c: &mut Criterion) {
    const NODES: u64 = 100_000;
    let mut group = c.benchmark_group("treap");
    group.throughput(Throughput::Elements(NODES));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(format!("batch_persist_and_commit/nodes={NODES}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_dir, mut store, mut tree) = setup(NODES);
                let started = Instant::now();
                tree.batch_persist(&mut store).expect("batch");
                store.commit().expect("commit");
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench_persist, bench_durable);
criterion_main!(benches);
