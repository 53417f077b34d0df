//! Benchmarks for bob, kept out of the workspace's default members so `cargo test` never
//! builds them, nor the peer engines they compare against.
//!
//! `cargo xtask bench` runs the `bob-bench` binary: the same workloads on bob and on redb,
//! LMDB (heed), fjall and marble (sled with the `sled` feature), each engine in a process of
//! its own, reported as a markdown table, JSON and SVG charts in `target/bench/`.
//! `cargo xtask bench --micro` runs the criterion micro-benchmarks in `benches/`.
//!
//! - [`engines`]: the two engine traits and an adapter per engine;
//! - [`workloads`]: the suites and profiles;
//! - [`measure`]: space, device writes, memory and the machine banner;
//! - [`report`]: medians, ratios, tables and charts.

pub mod engines;
pub mod measure;
pub mod report;
pub mod workloads;

pub use bob_io_helpers::testing::payload;
