//! `MultiStore`: bob's object store with space from size-classed block pools.
//!
//! The same store as `bob_store_core::BaseStore` (one generic implementation, one file
//! format, the same commit protocol and guarantees), with an `OmniBlockAllocator` instead of
//! a `BasicAllocator`: objects up to 32 KiB get a slot of the smallest of 40 size classes
//! (waste under 16 bytes up to 128 bytes, under 20 % above), larger ones exactly their length.
//! Slots of one class pack densely in blocks that start at 8 slots and double, so many small
//! objects cost little space and one small object makes a small file; `allocate_run` works
//! inside a class.
//!
//! The header records the allocator kind: a `MultiStore` file cannot be opened as a
//! `BaseStore` or the other way round (`Error::WrongKind`).
//!
//! # Limits
//! Compaction moves objects into lower free slots of their class; the file shrinks only as
//! far as its last block allows (a block is returned when it empties).
//!
//! # Example
//! ```
//! use bob_store_core::{ObjectInfoStorer, StoreOptions, Storer};
//! use bob_store_multi::MultiStore;
//!
//! # fn main() -> bob_store_core::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("small-things.bob");
//! let mut store = MultiStore::create(&path, StoreOptions::default())?;
//! let id = store.write_new_obj_from_bytes(&[7; 100])?;
//! assert_eq!(store.object_info(id)?.allocated_len, 112); // the 112-byte class
//! store.close()?;
//!
//! let store = MultiStore::open(&path, StoreOptions::default())?;
//! assert_eq!(store.read_bytes_from_obj(id)?, vec![7; 100]);
//! # Ok(())
//! # }
//! ```

pub use bob_alloc::{DEFAULT_CLASSES, OmniBlockAllocator};
pub use bob_store_core::{Error, Result, StoreOptions};

/// The object store over `OmniBlockAllocator`; see the crate docs.
pub type MultiStore<B = bob_io_helpers::OsFile> = bob_store_core::Store<OmniBlockAllocator, B>;

#[cfg(test)]
mod tests {
    use super::*;
    use bob_io_helpers::testing::SimDisk;
    use bob_store_core::{BaseStore, BatchStorer, ObjectInfoStorer, Storer};

    #[test]
    fn one_small_object_makes_a_small_file() {
        let mut store = MultiStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
        store.write_new_obj_from_bytes(&[1; 100]).unwrap();
        store.commit().unwrap();
        // Header region, one 8-slot block of 112 bytes, one 4 KiB page class block (8 pages),
        // a root slot, the room kept for the next commit's metadata (17 pages and a root) and
        // at most one growth step of 64 KiB: below the Go original's 262 KB, besides the two
        // journal regions (2 MiB each by default, `StoreOptions::journal_bytes`).
        let len = store.file_len().unwrap();
        let journals = 2 * StoreOptions::default().journal_bytes;
        assert!(len - journals < 256 * 1024, "{len} bytes");
    }

    #[test]
    fn many_small_objects_pack_by_class() {
        let mut multi = MultiStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
        let mut base = BaseStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
        for i in 0..2000u32 {
            let data = vec![i as u8; 20 + (i as usize % 12)];
            let id = multi.write_new_obj_from_bytes(&data).unwrap();
            assert_eq!(multi.object_info(id).unwrap().allocated_len, 32);
            base.write_new_obj_from_bytes(&data).unwrap();
        }
        multi.commit().unwrap();
        base.commit().unwrap();
        // Every object takes one 32-byte slot (checked above). At this scale the file is
        // dominated by metadata: table pages and the root sit in 4 KiB-class blocks that
        // double, so only a blow-up is checked here.
        let (multi_len, base_len) = (multi.file_len().unwrap(), base.file_len().unwrap());
        assert!(multi_len < base_len * 2, "multi {multi_len}, base {base_len}");
    }

    #[test]
    fn runs_stay_inside_a_class() {
        let mut store = MultiStore::create_with(SimDisk::new(), StoreOptions::default()).unwrap();
        let ids = store.allocate_run(10, 100).unwrap();
        for id in &ids {
            assert_eq!(store.object_info(*id).unwrap().allocated_len, 112);
        }
    }

    #[test]
    fn a_base_store_file_is_refused() {
        let disk = SimDisk::new();
        BaseStore::create_with(disk.clone(), StoreOptions::default()).unwrap().close().unwrap();
        assert!(matches!(
            MultiStore::open_with(disk, StoreOptions::default()),
            Err(Error::WrongKind { .. })
        ));
    }
}
