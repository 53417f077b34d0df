//! The example programs (`src/bin/`): a file cache and counters kept by many threads, each
//! run by this package's tests as a user would run them. This library holds no code; it makes
//! `cargo test` compile the workspace README's example, included below.
#![doc = include_str!("../../README.md")]
