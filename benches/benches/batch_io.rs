//! bob-batch-io against the plain path, on a real file.
//!
//! - `batch_io_buffered_writes`: 256 writes of 4 KiB at random page-aligned offsets of a
//!   64 MiB file, each made durable: `write_at` + `sync_data` per write, against a
//!   `WriteBuffer` flushed once (sorted, one vectored write per run, one sync). "time" is
//!   per write: the speed-up is the first time over the second.
//! - `batch_io_batch_writer`: 256 new 4 KiB objects into a `ConcurrentStore`, durable: one
//!   `write` + `commit` after another, against a `BatchWriter` with 8 permits and one commit.

use std::time::{Duration, Instant};

use bob_batch_io::{BatchWriter, BatchWriterOptions, WriteBuffer, WriteBufferOptions};
use bob_benches::payload;
use bob_io_helpers::{FileBackend, OsFile};
use bob_store_concurrent::ConcurrentStore;
use bob_store_core::StoreOptions;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const WRITES: usize = 256;
const BYTES: usize = 4096;
const FILE_PAGES: u64 = (64 << 20) / 4096;

fn offsets(seed: u64) -> Vec<u64> {
    let mut state = seed | 1;
    (0..WRITES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % FILE_PAGES) * BYTES as u64
        })
        .collect()
}

fn bench_buffered_writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("f");
    let file = OsFile::create_new(&path).expect("create");
    file.set_len(FILE_PAGES * BYTES as u64).expect("size");
    file.sync_all().expect("sync");
    let data = payload(7, BYTES);
    let mut group = c.benchmark_group("batch_io_buffered_writes");
    group.throughput(Throughput::Elements(WRITES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let mut seed = 1;
    group.bench_function("sync_per_write", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                seed += 1;
                for offset in offsets(seed) {
                    file.write_at(&data, offset).expect("write");
                    file.sync_data().expect("sync");
                }
            }
            started.elapsed()
        })
    });
    let mut buffer = WriteBuffer::new(
        &file,
        WriteBufferOptions { max_ops: usize::MAX, max_bytes: usize::MAX, interval: None },
    );
    group.bench_function("write_buffer_one_flush", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                seed += 1;
                for offset in offsets(seed) {
                    buffer.write(offset, &data).expect("buffer");
                }
                buffer.flush().expect("flush");
            }
            started.elapsed()
        })
    });
    group.finish();
}

fn bench_batch_writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = ConcurrentStore::create_base(dir.path().join("s"), StoreOptions::default(), 0)
        .expect("create");
    let blobs: Vec<Vec<u8>> = (0..WRITES).map(|i| payload(i as u64, BYTES)).collect();
    let mut group = c.benchmark_group("batch_io_batch_writer");
    group.throughput(Throughput::Elements(WRITES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("sequential_durable", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                for blob in &blobs {
                    let id = store.write_new_obj_from_bytes(blob).expect("write");
                    store.commit().expect("commit");
                    std::hint::black_box(id);
                }
            }
            started.elapsed()
        })
    });
    let writer = BatchWriter::new(store, BatchWriterOptions { permits: 8 });
    let items: Vec<(Option<bob_store_core::ObjectId>, &[u8])> =
        blobs.iter().map(|b| (None, &b[..])).collect();
    group.bench_function("batch_writer_8_permits", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let results = writer.write_batch(&items);
                assert!(results.iter().all(Result::is_ok));
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_buffered_writes, bench_batch_writer);
criterion_main!(benches);
