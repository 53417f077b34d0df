//! Persistent treaps over a bob store: a set (`PersistentTreap`) and a map
//! (`PersistentPayloadTreap`).
//!
//! This crate will own lazily loaded, copy-on-write treap nodes stored as objects, `persist()`
//! (dirty nodes only, children before parents) and `batch_persist()` (one contiguous run, one
//! write, falling back to `persist()`), with a bounded in-memory node budget.
//!
//! Not built yet: issue #6 builds it.
