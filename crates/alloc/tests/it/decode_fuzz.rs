//! Decoding 10,000 random and mutated byte strings per allocator never panics, and anything
//! that decodes is a valid allocator.

use bob_alloc::{
    Allocator, BasicAllocator, BlockAllocator, MultiBlockAllocator, OmniBlockAllocator,
    RunAllocator,
};
use bob_io_helpers::checksum;
use bob_io_helpers::testing::test_seed;

const INPUTS_PER_KIND: usize = 10_000;

/// Recomputes the body length and checksum so mutated bytes reach the body parser.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 24 {
        return;
    }
    let body_len = (bytes.len() - 24) as u64;
    bytes[8..16].copy_from_slice(&body_len.to_le_bytes());
    let n = bytes.len();
    let sum = checksum(&bytes[..n - 8]);
    bytes[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

fn mutate(rng: &mut fastrand::Rng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    match rng.u8(0..6) {
        0 => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
        1 => {
            bytes.truncate(rng.usize(0..=bytes.len()));
            bytes
        }
        2 => {
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                bytes[i] ^= 1 << rng.u8(0..8);
            }
            bytes
        }
        3 => {
            // Overwrite a u64 field in the body with an extreme value.
            if bytes.len() >= 32 {
                let at = 16 + 8 * rng.usize(..(bytes.len() - 24) / 8);
                let value = [0, 1, u64::MAX, u64::MAX / 2, 1 << 62, rng.u64(..)][rng.usize(..6)];
                bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            bytes
        }
        4 => {
            let i = rng.usize(..=bytes.len());
            let extra: Vec<u8> = (0..rng.usize(1..40)).map(|_| rng.u8(..)).collect();
            bytes.splice(i..i, extra);
            bytes
        }
        _ => {
            let i = rng.usize(..bytes.len());
            bytes[i] = rng.u8(..);
            bytes
        }
    }
}

fn fuzz<A: Allocator>(samples: &[Vec<u8>], decode: impl Fn(&[u8]) -> bob_alloc::Result<A>) {
    let mut rng = fastrand::Rng::with_seed(test_seed());
    let mut decoded = 0;
    for i in 0..INPUTS_PER_KIND {
        let mut bytes = mutate(&mut rng, &samples[i % samples.len()]);
        if rng.bool() {
            reseal(&mut bytes);
        }
        if let Ok(allocator) = decode(&bytes) {
            decoded += 1;
            allocator.verify().unwrap_or_else(|e| panic!("decoded an invalid allocator: {e}"));
        }
    }
    // Mutations that leave the structure valid do happen; most inputs are refused.
    assert!(decoded < INPUTS_PER_KIND / 2, "{decoded} of {INPUTS_PER_KIND} decoded");
}

fn churn<A: Allocator + RunAllocator>(a: &mut A, rng: &mut fastrand::Rng, max_len: u64) {
    let mut live = Vec::new();
    for _ in 0..60 {
        if let Ok(e) = a.allocate(rng.u64(1..=max_len)) {
            live.push(e);
        }
    }
    if let Ok(run) = a.allocate_run(5, max_len) {
        live.extend(run.extents());
    }
    for _ in 0..25 {
        let e = live.swap_remove(rng.usize(..live.len()));
        a.free(e).unwrap();
    }
}

fn samples<A: Allocator + RunAllocator>(make: impl Fn() -> A, max_len: u64) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..4)
        .map(|_| {
            let mut a = make();
            churn(&mut a, &mut rng, max_len);
            a.encode()
        })
        .collect()
}

#[test]
fn decoding_mutated_basic_state_never_panics() {
    fuzz(&samples(|| BasicAllocator::new(512), 3000), BasicAllocator::decode);
}

#[test]
fn decoding_mutated_block_state_never_panics() {
    fuzz(&samples(|| BlockAllocator::new(512, 32, 200).unwrap(), 32), BlockAllocator::decode);
}

#[test]
fn decoding_mutated_multi_block_state_never_panics() {
    fuzz(&samples(|| MultiBlockAllocator::new(512, 48).unwrap(), 48), MultiBlockAllocator::decode);
}

#[test]
fn decoding_mutated_omni_state_never_panics() {
    fuzz(&samples(|| OmniBlockAllocator::new(512), 50_000), OmniBlockAllocator::decode);
}
