//! Positioned I/O on a real file.
//!
//! `read_mmap_vs_pread`: random reads from a cached 256 MiB file, each followed by an xxh3
//! check as a store read does, through `pread` into a buffer and as a copy out of a
//! read-only memory map of the file (map made once; its page faults are paid on first touch,
//! in the warm-up); 4 KiB and 1 MiB.
//!
//! `write_batched_sections` against one positioned write per section, on a real file.
//!
//! 64 sections of 4 KiB, laid out contiguously (one vectored write when batched) and scattered
//! with a 4 KiB gap after each (64 writes either way, so the batched path costs only its
//! sorting). Writes go to the page cache; no sync is measured here.

use bob_benches::payload;
use bob_io_helpers::{FileBackend, OsFile, Section, write_batched_sections};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SECTIONS: usize = 64;
const SECTION_BYTES: usize = 4096;

fn layouts() -> [(&'static str, u64); 2] {
    [("contiguous", SECTION_BYTES as u64), ("scattered", 2 * SECTION_BYTES as u64)]
}

fn bench_read_mmap_vs_pread(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    const FILE_BYTES: usize = 256 << 20;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("read");
    {
        let file = std::fs::File::create(&path).expect("file");
        for i in 0..(FILE_BYTES >> 20) {
            file.write_all_at(&payload(i as u64, 1 << 20), (i << 20) as u64).expect("fill");
        }
    }
    let file = std::fs::File::open(&path).expect("file");
    // SAFETY: the file is private to this benchmark and never truncated while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
    let mut group = c.benchmark_group("read_mmap_vs_pread");
    for len in [4096usize, 1 << 20] {
        group.throughput(Throughput::Elements(1));
        let slots = (FILE_BYTES / len) as u64;
        let mut buf = vec![0u8; len];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % slots) * len as u64
        };
        group.bench_function(BenchmarkId::new("pread", len), |b| {
            b.iter(|| {
                file.read_exact_at(&mut buf, next()).expect("read");
                xxhash_rust::xxh3::xxh3_64(&buf)
            })
        });
        group.bench_function(BenchmarkId::new("mmap_copy", len), |b| {
            b.iter(|| {
                let at = next() as usize;
                buf.copy_from_slice(&map[at..at + len]);
                xxhash_rust::xxh3::xxh3_64(&buf)
            })
        });
    }
    group.finish();
}

/// xxh3-64 of 4,000 bytes: xxhash-rust (SIMD as the build target enables: SSE2 on a plain
/// x86-64 build) against twox-hash (AVX2 chosen at run time where the CPU has it).
fn bench_xxh3(c: &mut Criterion) {
    let data = payload(1, 4000);
    assert_eq!(
        xxhash_rust::xxh3::xxh3_64(&data),
        twox_hash::XxHash3_64::oneshot(&data),
        "one function"
    );
    let mut group = c.benchmark_group("xxh3_64");
    group.throughput(Throughput::Bytes(4000));
    group.bench_function("xxhash_rust/4000", |b| b.iter(|| xxhash_rust::xxh3::xxh3_64(&data)));
    group.bench_function("twox_hash/4000", |b| b.iter(|| twox_hash::XxHash3_64::oneshot(&data)));
    group.finish();
}

fn bench_write_batched_sections(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = OsFile::create_new(&dir.path().join("bench")).expect("bench file");
    let blocks: Vec<Vec<u8>> = (0..SECTIONS).map(|i| payload(i as u64, SECTION_BYTES)).collect();
    let mut group = c.benchmark_group("write_batched_sections");
    group.throughput(Throughput::Bytes((SECTIONS * SECTION_BYTES) as u64));
    for (layout, stride) in layouts() {
        let sections: Vec<Section<'_>> =
            blocks.iter().enumerate().map(|(i, b)| Section::new(i as u64 * stride, b)).collect();
        let id = format!("sections={SECTIONS}/bytes={SECTION_BYTES}/layout={layout}");
        group.bench_function(BenchmarkId::new("batched", &id), |b| {
            b.iter(|| write_batched_sections(&file, &sections).expect("batched write"))
        });
        group.bench_function(BenchmarkId::new("one_write_each", &id), |b| {
            b.iter(|| {
                for section in &sections {
                    file.write_at(section.data, section.offset).expect("write");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_xxh3, bench_read_mmap_vs_pread, bench_write_batched_sections);
criterion_main!(benches);
