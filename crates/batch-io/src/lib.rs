//! Batched and buffered I/O on top of bob's stores.
//!
//! This crate will own write buffering (sorted, neighbours merged, one sync per flush), merged
//! batch reads with checksum checks returned in request order, a keyed disk cache
//! (`store_buffered`, `flush_writes`, `lookup_batch`, `stats`, LRU and TTL eviction) and
//! `BatchWriter` (bounded parallel writes with one result per item).
//!
//! Not built yet: a later issue builds it.
