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

criterion_group!(benches, bench_write_batched_sections);
criterion_main!(benches);
