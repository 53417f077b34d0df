//! `SplitStore`: a store's operations split into metadata steps and I/O, for wrappers that
//! serialize the metadata steps (a short lock) and do the I/O outside it, in parallel.
//!
//! The protocol for a write: `begin_new` or `begin_rewrite` reserves fresh space (never space
//! a commit references); the caller writes it through `io()`; `publish` records the object,
//! or `abandon` gives the space back. Rewrites are always copy-on-write here, so a commit
//! racing a writer can never make bytes durable that the writer then overwrites.

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, checksum};

use crate::format::Entry;
use crate::space::SpaceAllocator;
use crate::store::Store;
use crate::{Error, ObjectId, Result, Storer};

/// Where an object's bytes are, as of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The object's allocated space.
    pub extent: Extent,
    /// Its logical length.
    pub len: u64,
    /// The xxh3-64 its bytes must match.
    pub checksum: u64,
    /// A copy of its bytes when they are still in the write buffer (then do not read disk).
    pub staged: Option<Vec<u8>>,
}

impl Located {
    /// Checks `bytes` (the object's, as read) against the checksum.
    pub fn check(&self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        let computed = checksum(bytes);
        if computed != self.checksum {
            return Err(Error::ChecksumMismatch { id, stored: self.checksum, computed });
        }
        Ok(())
    }
}

/// A store whose operations a concurrent wrapper can split; see the module docs.
pub trait SplitStore: Storer + Send + Sized {
    /// A handle for positioned I/O that works while another thread holds the store.
    type Io: FileBackend + Clone + 'static;

    /// The I/O handle.
    fn io(&self) -> Self::Io;

    /// Where object `id` is now.
    fn locate(&self, id: ObjectId) -> Result<Located>;

    /// Reserves an id and fresh space for a new object of `len` bytes.
    fn begin_new(&mut self, len: u64) -> Result<(ObjectId, Extent)>;

    /// Reserves fresh space for rewriting object `id`; returns where it is now and the space.
    fn begin_rewrite(&mut self, id: ObjectId) -> Result<(Located, Extent)>;

    /// Records object `id` as `len` bytes with `checksum` in `extent` (written by the caller).
    /// For a rewrite, `replaced` is the location `begin_rewrite` returned; its space is freed
    /// (after the next commit if a commit references it).
    fn publish(
        &mut self,
        id: ObjectId,
        extent: Extent,
        len: u64,
        checksum: u64,
        replaced: Option<&Located>,
    ) -> Result<()>;

    /// Gives back space (and, for `begin_new`, the id) reserved and never to be published.
    fn abandon(&mut self, id: Option<ObjectId>, extent: Extent) -> Result<()>;

    /// Checks a batch for `write_batched_objs` (objects made since the last commit, each
    /// fitting its space, no id twice) and returns each object's space, in order.
    fn begin_batch(&mut self, objects: &[(ObjectId, &[u8])]) -> Result<Vec<Extent>>;

    /// Records each object of a batch written by the caller into the space `begin_batch`
    /// returned: `(id, extent, len, checksum)`.
    fn publish_batch(&mut self, objects: &[(ObjectId, Extent, u64, u64)]) -> Result<()>;

    /// Whether the store refuses writes after a failure.
    fn is_failed(&self) -> bool;

    /// Marks the store failed (a wrapper's I/O outside the store failed).
    fn fail(&mut self, why: String);
}

impl<A: SpaceAllocator, B: FileBackend + Clone + 'static> SplitStore for Store<A, B> {
    type Io = B;

    fn io(&self) -> B {
        self.backend.clone()
    }

    fn locate(&self, id: ObjectId) -> Result<Located> {
        let entry = self.slot(id)?.entry;
        Ok(Located {
            extent: entry.extent,
            len: entry.len,
            checksum: entry.checksum,
            staged: self.staged_at(&entry).map(<[u8]>::to_vec),
        })
    }

    fn begin_new(&mut self, len: u64) -> Result<(ObjectId, Extent)> {
        self.guarded(|store| {
            let (id, extent) = store.reserve_new(len)?;
            store.reserved_ids.insert(id.0);
            Ok((id, extent))
        })
    }

    fn begin_rewrite(&mut self, id: ObjectId) -> Result<(Located, Extent)> {
        let located = self.locate(id)?;
        self.guarded(|store| {
            // The old bytes must be on disk before anyone copies them from there.
            store.flush_one(located.extent.offset)?;
            Ok(())
        })?;
        let target = self.guarded(|store| store.reserve(located.len))?;
        Ok((Located { staged: None, ..located }, target))
    }

    fn publish(
        &mut self,
        id: ObjectId,
        extent: Extent,
        len: u64,
        checksum: u64,
        replaced: Option<&Located>,
    ) -> Result<()> {
        self.guarded(|store| {
            let pending = store.pending_generation();
            if let Some(old) = replaced {
                // Still the object `begin_rewrite` saw: otherwise it was deleted meanwhile.
                let slot = store.slot(id)?;
                if slot.entry.extent != old.extent {
                    return Err(Error::NotFound(id));
                }
                store.release(old.extent, slot.born)?;
            } else if !store.reserved_ids.remove(&id.0) {
                return Err(Error::InvalidArgument(format!(
                    "object {id} was not reserved by begin_new"
                )));
            }
            store.put(id, Entry { extent, len, checksum }, pending);
            Ok(())
        })
    }

    fn abandon(&mut self, id: Option<ObjectId>, extent: Extent) -> Result<()> {
        if let Some(id) = id {
            if self.reserved_ids.remove(&id.0) {
                self.pending_free_ids.push(id.0);
            }
        }
        self.release(extent, self.pending_generation())
    }

    fn begin_batch(&mut self, objects: &[(ObjectId, &[u8])]) -> Result<Vec<Extent>> {
        self.check_writable()?;
        let extents = self.check_batch(objects)?;
        for extent in &extents {
            self.unstage(extent.offset); // the batch replaces what was buffered
        }
        Ok(extents)
    }

    fn publish_batch(&mut self, objects: &[(ObjectId, Extent, u64, u64)]) -> Result<()> {
        self.guarded(|store| {
            let pending = store.pending_generation();
            for &(id, extent, len, checksum) in objects {
                if store.slot(id)?.entry.extent != extent {
                    return Err(Error::NotFound(id));
                }
                store.put(id, Entry { extent, len, checksum }, pending);
            }
            Ok(())
        })
    }

    fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }
}
