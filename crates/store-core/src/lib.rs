//! bob's single-file object store: the `Storer` traits and `BaseStore`.
//!
//! This crate will own the object store at the heart of bob: an `ObjectId` is a stable handle to a
//! blob, written and read whole or streamed through RAII guards, deleted with its space reused.
//! `commit()` is atomic and crash-safe (two checksummed header slots, copy-on-write object table,
//! see `../shared/design/object-store-commit.md` and `docs/format.md`), and every read is
//! checksum-verified, so corruption is reported, never returned as data.
//!
//! Not built yet: issue #4 builds it.
