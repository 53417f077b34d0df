//! `ConcurrentStore<S>`: a thread-safe wrapper over any bob store.
//!
//! This crate will own per-object reader/writer locks (so different objects do I/O in parallel),
//! one short global lock for allocation and table changes, disk tokens from
//! `bob_io_helpers::DiskTokenManager`, and loom models of the whole lock protocol.
//!
//! Not built yet: issue #5 builds it.
