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

/// Deterministic, incompressible-looking bytes: the same `seed` and `len` give the same bytes
/// on every run and machine, so every engine and every run sees identical payloads.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    // SplitMix64: a fixed, documented generator, so payloads never change between versions
    // of a random-number crate.
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::payload;

    #[test]
    fn payloads_are_deterministic_and_distinct() {
        assert_eq!(payload(1, 100), payload(1, 100));
        assert_ne!(payload(1, 100), payload(2, 100));
        assert_eq!(payload(3, 13).len(), 13);
    }
}
