//! Allocator costs: steady-state allocate + free at a fixed fill level, and `allocate_run`.
//!
//! Each `alloc_free` iteration allocates one extent and frees one live extent chosen at
//! random, so the fill level stays put; criterion's throughput is set to 2 elements, so
//! "time" is per pair and elements/s counts single operations. Block-based allocators hold
//! 65,536 slots at "full=100".

use std::time::{Duration, Instant};

use bob_alloc::{
    Allocator, BasicAllocator, BlockAllocator, Extent, MultiBlockAllocator, OmniBlockAllocator,
    RunAllocator,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SLOTS: u64 = 65_536;

/// A tiny deterministic generator (xorshift) so every run frees the same victims.
struct Victims(u64);

impl Victims {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// Fills `a` with `SLOTS` extents of `len`, then frees random ones down to `full_percent`.
fn fill<A: Allocator>(
    a: &mut A,
    len: u64,
    full_percent: u64,
    victims: &mut Victims,
) -> Vec<Extent> {
    let mut live: Vec<Extent> = (0..SLOTS).map(|_| a.allocate(len).expect("fill")).collect();
    let keep = (SLOTS * full_percent / 100) as usize;
    while live.len() > keep {
        let extent = live.swap_remove(victims.next(live.len()));
        a.free(extent).expect("free");
    }
    live
}

fn steady<A: Allocator>(c: &mut Criterion, group: &str, len: u64, make: impl Fn() -> A) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(2));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for full in [0, 50, 90, 99] {
        let mut victims = Victims(0x9E37_79B9_7F4A_7C15);
        let mut a = make();
        let mut live = fill(&mut a, len, full, &mut victims);
        let id = BenchmarkId::new("alloc_free", format!("slot={len}/full={full}"));
        group.bench_function(id, |b| {
            b.iter(|| {
                live.push(a.allocate(len).expect("allocate"));
                let extent = live.swap_remove(victims.next(live.len()));
                a.free(extent).expect("free");
            })
        });
    }
    group.finish();
}

fn bench_block_allocators(c: &mut Criterion) {
    for slot in [64, 256, 1024, 4096] {
        steady(c, "block", slot, || BlockAllocator::new(0, slot, SLOTS).expect("block"));
    }
    for slot in [64, 4096] {
        steady(c, "multi", slot, || MultiBlockAllocator::new(0, slot).expect("multi"));
        steady(c, "omni", slot, || OmniBlockAllocator::new(0));
    }
}

/// `BasicAllocator` with 100,000 holes: 200,000 extents of 1–4,096 bytes, every other freed;
/// then allocate a random length and free a random live extent.
fn bench_basic(c: &mut Criterion) {
    let mut group = c.benchmark_group("basic");
    group.throughput(Throughput::Elements(2));
    group.measurement_time(Duration::from_secs(2));
    for holes in [0usize, 100_000] {
        let mut victims = Victims(0x2545_F491_4F6C_DD1D);
        let mut a = BasicAllocator::new(0);
        let mut live: Vec<Extent> = (0..holes.max(1) * 2)
            .map(|_| a.allocate(1 + victims.next(4096) as u64).expect("fill"))
            .collect();
        let mut kept = Vec::with_capacity(live.len() / 2);
        for (i, extent) in live.drain(..).enumerate() {
            if i % 2 == 1 && holes > 0 {
                a.free(extent).expect("free");
            } else {
                kept.push(extent);
            }
        }
        live = kept;
        let id = BenchmarkId::new("alloc_free", format!("free_extents={holes}"));
        group.bench_function(id, |b| {
            b.iter(|| {
                live.push(a.allocate(1 + victims.next(4096) as u64).expect("allocate"));
                let extent = live.swap_remove(victims.next(live.len()));
                a.free(extent).expect("free");
            })
        });
    }
    group.finish();
}

/// Times `allocate_run(500, 64)` alone; the run's extents are freed outside the timing.
fn bench_runs(c: &mut Criterion) {
    fn run_500<A: RunAllocator>(a: &mut A, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let started = Instant::now();
            let run = a.allocate_run(500, 64).expect("run");
            total += started.elapsed();
            for extent in run.extents() {
                a.free(extent).expect("free");
            }
        }
        total
    }
    let mut group = c.benchmark_group("allocate_run");
    group.measurement_time(Duration::from_secs(2));
    let mut basic = BasicAllocator::new(0);
    let _pinned = basic.allocate(1).expect("keeps the file from emptying");
    group.bench_function("basic/count=500/len=64", |b| b.iter_custom(|n| run_500(&mut basic, n)));
    let mut multi = MultiBlockAllocator::new(0, 64).expect("multi");
    let _pinned = multi.allocate(64).expect("keeps one block");
    group.bench_function("multi/count=500/len=64", |b| b.iter_custom(|n| run_500(&mut multi, n)));
    let mut omni = OmniBlockAllocator::new(0);
    group.bench_function("omni/count=500/len=64", |b| b.iter_custom(|n| run_500(&mut omni, n)));
    group.finish();
}

criterion_group!(benches, bench_block_allocators, bench_basic, bench_runs);
criterion_main!(benches);
