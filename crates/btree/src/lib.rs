//! A persistent B-tree index over a bob store.
//!
//! This crate will own a B-tree that is never rebuilt at start-up: dirty tracking, incremental
//! persistence of changed nodes only (on flush, periodically and on close), versioned and
//! checksummed nodes, lazy loading, and a rebuild as the fallback when a tree is found corrupt.
//!
//! Not built yet: a later issue builds it.
