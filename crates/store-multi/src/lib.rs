//! `MultiStore`: bob's object store, size-classed over `OmniBlockAllocator`.
//!
//! This crate will own a store with the same `Storer` traits and commit guarantees as `BaseStore`,
//! whose space comes from per-size-class block allocators so small objects pack densely.
//!
//! Not built yet: issue #4 builds it.
