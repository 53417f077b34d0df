//! `SplitStore`: the metadata steps of the write protocol (see `guard.rs`), which a wrapper
//! runs under a short lock while the guards do the data I/O outside it.

use std::borrow::Cow;

use bob_alloc::Extent;
use bob_io_helpers::FileBackend;

use crate::format::Entry;
use crate::space::SpaceAllocator;
use crate::store::Store;
use crate::{BatchStorer, Error, ObjectId, Result, Storer};

/// Where an object's bytes are, as of one moment: opaque to wrappers, which keep it (to
/// read without the store's lock) and hand it to [`crate::ObjectReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<'a> {
    /// The object's allocated space.
    pub(crate) extent: Extent,
    /// Its logical length.
    pub(crate) len: u64,
    /// The xxh3-64 its bytes must match.
    pub(crate) checksum: u64,
    /// Its bytes when they are still in the write buffer (then disk is not read).
    pub(crate) staged: Option<Cow<'a, [u8]>>,
}

impl Located<'_> {
    /// The same location, owning its staged bytes.
    pub fn into_owned(self) -> Located<'static> {
        Located { staged: self.staged.map(|s| Cow::Owned(s.into_owned())), ..self }
    }

    /// Where the object's space starts in the file (for tools and tests).
    pub fn offset(&self) -> u64 {
        self.extent.offset
    }

    /// The object's length in bytes (what a read of it returns).
    pub fn object_len(&self) -> u64 {
        self.len
    }

    /// The object's allocated length in bytes.
    pub fn allocated_len(&self) -> u64 {
        self.extent.len
    }

    /// Whether the bytes are still in the write buffer (then this location holds a copy, and
    /// caching it is pointless).
    pub fn is_staged(&self) -> bool {
        self.staged.is_some()
    }
}

/// A store whose write protocol a wrapper can split into metadata steps (under its lock) and
/// data I/O (outside it); see [`crate::ObjectWriter`]. Implemented by [`Store`] (so by
/// `BaseStore` and `MultiStore`); the implementation is hidden from `Store`'s documentation,
/// which shows what users call. Only a wrapper such as `ConcurrentStore` needs this trait.
pub trait SplitStore: Storer + BatchStorer + Send + Sized {
    /// The backend, for positioned I/O (a wrapper clones it to do I/O outside its lock).
    type Io: FileBackend;

    /// The backend.
    fn io(&self) -> &Self::Io;

    /// Where object `id` is now.
    fn locate(&self, id: ObjectId) -> Result<Located<'_>>;

    /// Reserves an id and fresh space for a new object of `len` bytes. `outside`: a commit
    /// may run before the object is published (its pages are then kept apart from every
    /// other object's).
    fn begin_new(&mut self, len: u64, outside: bool) -> Result<(ObjectId, Extent)>;

    /// Reserves fresh space for rewriting object `id` (always copy-on-write, so the old
    /// object's checksum is checked as its tail is copied): where it is now, and the space.
    fn begin_rewrite(&mut self, id: ObjectId, outside: bool) -> Result<(Located<'static>, Extent)>;

    /// Reserves fresh space for replacing object `id` with `len` new bytes (no old byte is
    /// kept): where it is now, and the space.
    fn begin_replace(
        &mut self,
        id: ObjectId,
        len: u64,
        outside: bool,
    ) -> Result<(Located<'static>, Extent)>;

    /// Records object `id` as `len` bytes with `checksum` in `extent`, written by the caller.
    /// For a rewrite, `replaced` is the location `begin_rewrite` returned; its space is freed
    /// (after the next commit if a commit references it). On an error the reserved space is
    /// given back.
    fn publish(
        &mut self,
        id: ObjectId,
        extent: Extent,
        len: u64,
        checksum: u64,
        replaced: Option<&Located<'_>>,
    ) -> Result<()>;

    /// Gives back space (and, for `begin_new`, the id) reserved and never to be published.
    fn abandon(&mut self, new_id: Option<ObjectId>, extent: Extent) -> Result<()>;

    /// Starts a commit that the caller syncs outside its lock; see [`Store::begin_commit`].
    /// `true`: sync [`io`](Self::io), then call [`end_commit`](Self::end_commit).
    fn begin_commit(&mut self) -> Result<bool>;

    /// Ends the commit `begin_commit` started, given the sync's outcome; see
    /// [`Store::end_commit`].
    fn end_commit(&mut self, synced: std::io::Result<()>) -> Result<()>;

    /// The generation of the last commit (written, durable or with its sync outstanding).
    fn generation(&self) -> u64;

    /// Whether the store refuses writes after a failure.
    fn is_failed(&self) -> bool;

    /// Latches the store as failed (a wrapper's I/O outside the store failed).
    fn fail(&mut self, why: String);

    /// Completes a lazy open now; see [`Store::complete_open`].
    fn complete_open(&mut self) -> Result<()>;

    /// Moves live objects down and shrinks the file; see [`Store::compact`].
    fn compact(&mut self) -> Result<crate::CompactReport>;

    /// The bytes live objects and metadata take and the file's length; see
    /// [`Store::space_in_use`].
    fn space_in_use(&self) -> Result<Option<(u64, u64)>>;

    /// Objects in the store; see [`Store::object_count`].
    fn object_count(&self) -> u64;

    /// Sets the file's length to what the data and the next commit need, giving back the
    /// growth steps kept past them while the store was written (a closing wrapper calls it
    /// after its last checkpoint, as [`Storer::close`] does).
    fn trim_file(&mut self);

    /// Seals the file at a clean close, after `checkpoint` and `trim_file` (see
    /// `Store::seal`).
    fn seal(&mut self) -> Result<()>;
}

#[doc(hidden)]
impl<A: SpaceAllocator, B: FileBackend> SplitStore for Store<A, B> {
    type Io = B;

    fn io(&self) -> &B {
        self.backend()
    }

    fn locate(&self, id: ObjectId) -> Result<Located<'_>> {
        let entry = self.slot(id)?.entry;
        Ok(Located {
            extent: entry.extent,
            len: entry.len,
            checksum: entry.checksum,
            staged: self.staged_at(&entry).map(Cow::Borrowed),
        })
    }

    fn begin_new(&mut self, len: u64, outside: bool) -> Result<(ObjectId, Extent)> {
        self.guarded(|store| {
            let (id, extent) = store.reserve_outside(len, true, outside)?;
            let id = id.ok_or_else(|| Error::InvalidArgument("no id was reserved".into()))?;
            Ok((id, extent))
        })
    }

    fn begin_rewrite(&mut self, id: ObjectId, outside: bool) -> Result<(Located<'static>, Extent)> {
        self.guarded(|store| {
            let slot = store.slot(id)?;
            // The old bytes must be on disk before anyone copies them from there.
            store.flush_one(slot.entry.extent.offset)?;
            let located = Located {
                extent: slot.entry.extent,
                len: slot.entry.len,
                checksum: slot.entry.checksum,
                staged: None,
            };
            let (_, target) = store.reserve_outside(slot.entry.len, false, outside)?;
            Ok((located, target))
        })
    }

    fn begin_replace(
        &mut self,
        id: ObjectId,
        len: u64,
        outside: bool,
    ) -> Result<(Located<'static>, Extent)> {
        self.guarded(|store| {
            let slot = store.slot(id)?;
            let located = Located {
                extent: slot.entry.extent,
                len: slot.entry.len,
                checksum: slot.entry.checksum,
                staged: None,
            };
            let (_, target) = store.reserve_outside(len, false, outside)?;
            Ok((located, target))
        })
    }

    fn publish(
        &mut self,
        id: ObjectId,
        extent: Extent,
        len: u64,
        checksum: u64,
        replaced: Option<&Located<'_>>,
    ) -> Result<()> {
        self.guarded(|store| {
            let pending = store.pending_generation();
            let new_id = if replaced.is_none() { Some(id) } else { None };
            let mut old_born = None;
            if let Some(old) = replaced {
                // Still the object `begin_rewrite` saw: otherwise it was deleted meanwhile.
                match store.slot(id) {
                    Ok(slot) if slot.entry.extent == old.extent => old_born = Some(slot.born),
                    Ok(_) => {
                        store.abandon_reserved(None, extent)?;
                        return Err(Error::NotFound(id));
                    }
                    Err(e) => {
                        store.abandon_reserved(None, extent)?;
                        return Err(e);
                    }
                }
            }
            if !store.end_reservation(new_id, extent) {
                return Err(Error::InvalidArgument(format!(
                    "object {id} was not reserved by begin_new"
                )));
            }
            if let (Some(old), Some(born)) = (replaced, old_born) {
                store.release(old.extent, born)?;
            }
            store.put(id, Entry { extent, len, checksum, tag: id.tag() }, pending);
            Ok(())
        })
    }

    fn abandon(&mut self, new_id: Option<ObjectId>, extent: Extent) -> Result<()> {
        self.abandon_reserved(new_id, extent)
    }

    fn begin_commit(&mut self) -> Result<bool> {
        Store::begin_commit(self)
    }

    fn end_commit(&mut self, synced: std::io::Result<()>) -> Result<()> {
        Store::end_commit(self, synced)
    }

    fn generation(&self) -> u64 {
        Store::generation(self)
    }

    fn is_failed(&self) -> bool {
        Store::is_failed(self)
    }

    fn fail(&mut self, why: String) {
        Store::fail(self, why);
    }

    fn complete_open(&mut self) -> Result<()> {
        Store::complete_open(self)
    }

    fn compact(&mut self) -> Result<crate::CompactReport> {
        Store::compact(self)
    }

    fn object_count(&self) -> u64 {
        Store::object_count(self)
    }

    fn trim_file(&mut self) {
        self.trim_file_len();
    }

    fn seal(&mut self) -> Result<()> {
        Store::seal(self)
    }

    fn space_in_use(&self) -> Result<Option<(u64, u64)>> {
        Store::space_in_use(self)
    }
}
