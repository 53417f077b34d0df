//! Object operations of `Store`: the `Storer` traits. Streaming reads and writes use the
//! guards of `guard.rs` (the one write protocol); whole-object writes go through the write
//! buffer.

use std::io;

use bob_alloc::Extent;
use bob_io_helpers::{
    FileBackend, Section, StreamingChecksum, checksum, write_batched_sections, write_zeros,
};

use crate::format::Entry;
use crate::guard::{
    Access, CHUNK_BYTES, ObjectReader, ObjectWriter, ZERO_CHUNK, check_write_bounds, hash_zeros,
};
use crate::space::SpaceAllocator;
use crate::split::SplitStore;
use crate::store::{MAX_STAGED_OBJECT, Store};
use crate::{
    BatchStorer, Error, ObjectId, ObjectInfo, ObjectInfoStorer, PRIME_OBJECT_ID, PrimeStorer,
    Result, Storer,
};

/// `Store`'s access for its guards: the store itself, held exclusively (no commit can run
/// while a guard lives).
#[derive(Debug)]
pub struct Direct<'a, A: SpaceAllocator, B: FileBackend>(&'a mut Store<A, B>);

impl<A: SpaceAllocator, B: FileBackend> Access for Direct<'_, A, B> {
    type Store = Store<A, B>;
    const EXCLUSIVE: bool = true;

    fn with<T>(&mut self, step: impl FnOnce(&mut Store<A, B>) -> Result<T>) -> Result<T> {
        step(self.0)
    }

    fn io<T>(&mut self, call: impl FnOnce(&B) -> io::Result<T>) -> Result<T> {
        self.0.guarded(|store| Ok(call(store.backend())?))
    }
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Space for a new object and an id for it (the space goes back if no id is left).
    pub(crate) fn reserve_new(&mut self, size: u64) -> Result<(ObjectId, Extent)> {
        let extent = self.reserve(size)?;
        match self.take_id() {
            Ok(id) => Ok((id, extent)),
            Err(e) => {
                self.release(extent, self.pending_generation())?;
                Err(e)
            }
        }
    }

    /// Creates object `id` holding `size` zero bytes in `extent`.
    fn create_zeroed(&mut self, id: ObjectId, extent: Extent, size: u64) -> Result<()> {
        write_zeros(self.backend(), extent.offset, size)?;
        let mut sum = StreamingChecksum::new();
        hash_zeros(&mut sum, size);
        let born = self.pending_generation();
        self.put(id, Entry { extent, len: size, checksum: sum.finish(), tag: id.tag() }, born);
        Ok(())
    }
}

impl<A: SpaceAllocator, B: FileBackend> Storer for Store<A, B> {
    type Reader<'a>
        = ObjectReader<'a, &'a B>
    where
        Self: 'a;
    type Writer<'a>
        = ObjectWriter<Direct<'a, A, B>>
    where
        Self: 'a;

    /// A new object of `size` zero bytes.
    fn new_obj(&mut self, size: u64) -> Result<ObjectId> {
        self.guarded(|store| {
            let (id, extent) = store.reserve_new(size)?;
            store.create_zeroed(id, extent, size)?;
            Ok(id)
        })
    }

    fn delete_obj(&mut self, id: ObjectId) -> Result<()> {
        self.guarded(|store| {
            let slot = store.remove(id)?;
            store.release(slot.entry.extent, slot.born)
        })
    }

    fn late_read_obj(&self, id: ObjectId) -> Result<ObjectReader<'_, &B>> {
        Ok(ObjectReader::new(self.backend(), id, self.locate(id)?))
    }

    /// A writer for a new object of `size` bytes. The object appears when the writer is
    /// finished or dropped; bytes not written by then are zeros.
    fn late_write_new_obj(
        &mut self,
        size: u64,
    ) -> Result<(ObjectId, ObjectWriter<Direct<'_, A, B>>)> {
        self.ready_to_write()?;
        ObjectWriter::create(Direct(self), size)
    }

    /// A writer over object `id` from its first byte, copy-on-write: the old bytes stay intact
    /// until the writer publishes (and, for a committed object, until the next commit), and
    /// the old object's checksum is checked as its tail is copied. Bytes not written keep
    /// their old values.
    fn write_to_obj(&mut self, id: ObjectId) -> Result<ObjectWriter<Direct<'_, A, B>>> {
        self.ready_to_write()?;
        ObjectWriter::rewrite(Direct(self), id)
    }

    /// A writer replacing object `id` with `size` new bytes, copy-on-write (see
    /// [`Storer::late_replace_obj`]).
    fn late_replace_obj(&mut self, id: ObjectId, size: u64) -> Result<Self::Writer<'_>> {
        self.ready_to_write()?;
        ObjectWriter::replace(Direct(self), id, size)
    }

    /// Replaces object `id` with `bytes` (any length). Up to the write buffer's object size
    /// the new copy is staged and written, coalesced with its neighbours, at the next flush;
    /// anything larger streams through [`late_replace_obj`](Storer::late_replace_obj).
    fn replace_obj(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        self.ready_to_write()?;
        let old = self.slot(id)?;
        if bytes.is_empty() || bytes.len() > MAX_STAGED_OBJECT.min(self.write_buffer_bytes()) {
            let writer = self.late_replace_obj(id, bytes.len() as u64)?;
            return crate::ObjectWrite::write_whole(writer, bytes);
        }
        self.guarded(|store| {
            let target = store.reserve(bytes.len() as u64)?;
            store.stage_or_write(target, bytes)?;
            let entry = Entry {
                extent: target,
                len: bytes.len() as u64,
                checksum: checksum(bytes),
                tag: id.tag(),
            };
            store.put(id, entry, store.pending_generation());
            store.release(old.entry.extent, old.born)
        })
    }

    /// Replaces the first `bytes.len()` bytes of an object. A committed object up to the
    /// write buffer's object size is rewritten copy-on-write through the write buffer (the
    /// new copy is staged and written, coalesced with its neighbours, at the next flush);
    /// anything else streams through [`write_to_obj`](Storer::write_to_obj).
    fn write_bytes_to_obj(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        self.ready_to_write()?;
        let old = self.slot(id)?;
        check_write_bounds(id, 0, bytes.len() as u64, old.entry.len).map_err(Error::from_io)?;
        let staged_size =
            (old.entry.len as usize) <= MAX_STAGED_OBJECT.min(self.write_buffer_bytes());
        if old.born == self.pending_generation() || !staged_size || old.entry.len == 0 {
            let writer = self.write_to_obj(id)?;
            return crate::ObjectWrite::write_whole(writer, bytes);
        }
        // The new contents: `bytes`, then the old object's tail, read checked (a damaged
        // tail is an error, never copied under a fresh checksum).
        let mut content = Vec::with_capacity(old.entry.len as usize);
        self.guarded(|store| {
            if (bytes.len() as u64) < old.entry.len {
                store.read_obj_into(id, &mut content)?;
                content[..bytes.len()].copy_from_slice(bytes);
            } else {
                content.extend_from_slice(bytes);
            }
            let target = store.reserve(old.entry.len)?;
            store.stage_or_write(target, &content)?;
            let entry = Entry {
                extent: target,
                len: old.entry.len,
                checksum: checksum(&content),
                tag: id.tag(),
            };
            store.put(id, entry, store.pending_generation());
            store.release(old.entry.extent, old.born)
        })
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_now()
    }

    fn checkpoint(&mut self) -> Result<()> {
        Store::checkpoint(self)
    }

    /// Commits by a checkpoint, then seals the file (see `docs/format.md`, "Open rules"): a
    /// store closed cleanly opens with no journal to replay, no sync and no device reads.
    fn close(mut self) -> Result<()> {
        self.checkpoint()?;
        self.trim_file_len();
        self.seal()
    }

    /// Reads the whole object with one positioned read and checks its checksum.
    fn read_bytes_from_obj(&self, id: ObjectId) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_obj_into(id, &mut bytes)?;
        Ok(bytes)
    }

    /// Reads the whole object into `buf` with one positioned read and checks its checksum;
    /// on an error `buf` holds no object bytes.
    fn read_obj_into(&self, id: ObjectId, buf: &mut Vec<u8>) -> Result<()> {
        ObjectReader::new(self.backend(), id, self.locate(id)?).read_whole(buf)
    }

    /// Writes a new object with one positioned write.
    fn write_new_obj_from_bytes(&mut self, bytes: &[u8]) -> Result<ObjectId> {
        self.guarded(|store| {
            let (id, extent) = store.reserve_new(bytes.len() as u64)?;
            store.stage_or_write(extent, bytes)?;
            let born = store.pending_generation();
            let entry =
                Entry { extent, len: bytes.len() as u64, checksum: checksum(bytes), tag: id.tag() };
            store.put(id, entry, born);
            Ok(id)
        })
    }
}

impl<A: SpaceAllocator, B: FileBackend> ObjectInfoStorer for Store<A, B> {
    fn object_info(&self, id: ObjectId) -> Result<ObjectInfo> {
        let entry = self.slot(id)?.entry;
        Ok(ObjectInfo { len: entry.len, allocated_len: entry.extent.len })
    }
}

impl<A: SpaceAllocator, B: FileBackend> PrimeStorer for Store<A, B> {
    /// The prime object (id 0), created with `size` zero bytes if it does not exist.
    fn prime_object(&mut self, size: u64) -> Result<ObjectId> {
        // Only a prime object known to be absent is created: an error reading its table page
        // is returned, never taken for absence.
        match self.slot(PRIME_OBJECT_ID) {
            Ok(_) => return Ok(PRIME_OBJECT_ID),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.guarded(|store| {
            let extent = store.reserve(size)?;
            store.create_zeroed(PRIME_OBJECT_ID, extent, size)
        })?;
        Ok(PRIME_OBJECT_ID)
    }
}

impl<A: SpaceAllocator, B: FileBackend> BatchStorer for Store<A, B> {
    /// `count` empty objects whose space (`size` bytes each, a whole slot in a size-classed
    /// store) is laid end to end; fill them with `write_batched_objs`.
    fn allocate_run(&mut self, count: u64, size: u64) -> Result<Vec<ObjectId>> {
        if size == 0 || count == 0 {
            return Err(Error::InvalidArgument("a run needs a non-zero count and size".into()));
        }
        self.guarded(|store| {
            let run = store.reserve_run(count, size)?;
            store.objects_for_run(run)
        })
    }

    fn allocate_runs(&mut self, count: u64, size: u64, min_run: u64) -> Result<Vec<Vec<ObjectId>>> {
        if size == 0 || count == 0 {
            return Err(Error::InvalidArgument("a run needs a non-zero count and size".into()));
        }
        self.guarded(|store| {
            let runs = store.reserve_runs(count, size, min_run)?;
            runs.into_iter().map(|run| store.objects_for_run(run)).collect()
        })
    }

    /// Fills objects made since the last commit (by `allocate_run` or otherwise) with one
    /// positioned write per run of adjacent objects; each object's length becomes its data's.
    fn write_batched_objs(&mut self, objects: &[(ObjectId, &[u8])]) -> Result<()> {
        let pending = self.pending_generation();
        let extents = self.check_batch(objects)?;
        let total: u64 = extents.iter().map(|e| e.len).sum();
        self.guarded(|store| {
            for extent in &extents {
                store.unstage(extent.offset); // the batch replaces what was buffered
            }
            if total <= SMALL_BATCH_BYTES && total <= store.write_buffer_bytes() as u64 {
                // A small batch joins the write buffer: its bytes are written, coalesced
                // with their neighbours, by the next flush, not by a syscall of their own.
                // Each is padded to its extent, so a run of neighbours stays one write.
                let mut padded = Vec::new();
                for (&(_, data), extent) in objects.iter().zip(&extents) {
                    padded.clear();
                    padded.extend_from_slice(data);
                    padded.resize(extent.len as usize, 0);
                    store.stage_or_write(*extent, &padded)?;
                }
            } else {
                let sections =
                    batch_sections(objects.iter().map(|(_, d)| *d).zip(extents.iter().copied()));
                write_batched_sections(store.backend(), &sections)?;
            }
            for (&(id, data), &extent) in objects.iter().zip(&extents) {
                let entry = Entry {
                    extent,
                    len: data.len() as u64,
                    checksum: checksum(data),
                    tag: id.tag(),
                };
                store.put(id, entry, pending);
            }
            Ok(())
        })
    }
}

/// Batches up to this many bytes go through the write buffer (when it is on) instead of
/// being written at once.
const SMALL_BATCH_BYTES: u64 = 16 << 10;

/// The sections that write each object's bytes into its space, padded with zeros to the
/// space's end (the object's own space), so objects laid end to end form one contiguous run
/// that `write_batched_sections` writes with one positioned write.
fn batch_sections<'a>(items: impl IntoIterator<Item = (&'a [u8], Extent)>) -> Vec<Section<'a>> {
    let mut sections = Vec::new();
    for (data, extent) in items {
        sections.push(Section::new(extent.offset, data));
        let mut pad_at = extent.offset + data.len() as u64;
        let mut left = extent.len.saturating_sub(data.len() as u64) as usize;
        while left > 0 {
            let n = left.min(CHUNK_BYTES);
            sections.push(Section::new(pad_at, &ZERO_CHUNK[..n]));
            pad_at += n as u64;
            left -= n;
        }
    }
    sections
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Checks a batch (no id twice; each object made since the last commit and its bytes
    /// fitting its space) and returns each object's space, in order.
    pub(crate) fn check_batch(&self, objects: &[(ObjectId, &[u8])]) -> Result<Vec<Extent>> {
        let pending = self.pending_generation();
        // Batches usually come in ascending id order (a run's ids): then no sort is needed.
        if !objects.windows(2).all(|w| w[0].0.0 < w[1].0.0) {
            let mut ids: Vec<u64> = objects.iter().map(|(id, _)| id.0).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(Error::InvalidArgument("an object appears twice in one batch".into()));
            }
        }
        objects
            .iter()
            .map(|&(id, data)| {
                let slot = self.slot(id)?;
                if slot.born != pending {
                    return Err(Error::CommittedBeforeFilled(id));
                }
                if data.len() as u64 > slot.entry.extent.len {
                    return Err(Error::WriteOutOfBounds {
                        id,
                        position: 0,
                        len: data.len() as u64,
                        object_len: slot.entry.extent.len,
                    });
                }
                Ok(slot.entry.extent)
            })
            .collect()
    }
}
