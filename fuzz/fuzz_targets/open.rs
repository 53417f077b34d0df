//! Fuzzed open: arbitrary bytes as a store file, opened, verified, read, written, reopened.
//! Seeds: `corpus/open` (regenerate with `cargo run -p bob-reliability -- corpus`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bob_reliability::fuzz_open(data);
});
