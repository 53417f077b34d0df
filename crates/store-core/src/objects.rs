//! Object operations of `Store`: the `Storer` traits, and the streaming read and write guards.

use std::io::{self, Read, Write};

use bob_alloc::Extent;
use bob_io_helpers::{
    FileBackend, Section, StreamingChecksum, checksum, write_batched_sections, write_zeros,
};

use crate::format::Entry;
use crate::space::SpaceAllocator;
use crate::store::{MAX_STAGED_OBJECT, Slot, Store};
use crate::{
    BatchStorer, Error, ObjectId, ObjectInfo, ObjectInfoStorer, ObjectWrite, PRIME_OBJECT_ID,
    PrimeStorer, Result, Storer,
};

/// Bytes moved per call when a writer fills or copies the rest of an object.
const CHUNK_BYTES: usize = 64 * 1024;

static ZERO_CHUNK: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];

/// Adds `len` zero bytes to `sum` (the checksum of an object's zero-filled tail).
pub fn hash_zeros(sum: &mut StreamingChecksum, len: u64) {
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        sum.update(&ZERO_CHUNK[..n]);
        left -= n as u64;
    }
}

/// Refuses a write of `len` bytes at `position` into object `id` of `object_len` bytes if it
/// would pass the object's end; the error is `WriteOutOfBounds`, as an `io::Error` for `Write`.
pub fn check_write_bounds(
    id: ObjectId,
    position: u64,
    len: u64,
    object_len: u64,
) -> io::Result<()> {
    if len > object_len.saturating_sub(position) {
        return Err(Error::WriteOutOfBounds { id, position, len, object_len }.into_io());
    }
    Ok(())
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
        write_zeros(&self.backend, extent.offset, size)?;
        let mut sum = StreamingChecksum::new();
        hash_zeros(&mut sum, size);
        let born = self.pending_generation();
        self.put(id, Entry { extent, len: size, checksum: sum.finish() }, born);
        Ok(())
    }
}

impl<A: SpaceAllocator, B: FileBackend> Storer for Store<A, B> {
    type Reader<'a>
        = ObjectReader<'a, B>
    where
        Self: 'a;
    type Writer<'a>
        = ObjectWriter<'a, A, B>
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
            store.unstage(slot.entry.extent.offset);
            store.release(slot.entry.extent, slot.born)
        })
    }

    fn late_read_obj(&self, id: ObjectId) -> Result<ObjectReader<'_, B>> {
        let entry = self.slot(id)?.entry;
        Ok(ObjectReader {
            backend: &self.backend,
            staged: self.staged_at(&entry),
            offset: entry.extent.offset,
            checked: CheckedRead::new(id, entry.len, entry.checksum),
        })
    }

    /// A writer for a new object of `size` bytes. The object appears when the writer is
    /// finished or dropped; bytes not written by then are zeros.
    fn late_write_new_obj(&mut self, size: u64) -> Result<(ObjectId, ObjectWriter<'_, A, B>)> {
        self.check_writable()?;
        let (id, target) = self.guarded(|store| store.reserve_new(size))?;
        let writer = ObjectWriter::new(self, id, target, size, Mode::New);
        Ok((id, writer))
    }

    /// A writer over object `id` from its first byte. A committed object is rewritten
    /// copy-on-write (the committed bytes stay intact until the next commit); one created since
    /// the last commit is rewritten in place. Bytes not written keep their old values.
    fn write_to_obj(&mut self, id: ObjectId) -> Result<ObjectWriter<'_, A, B>> {
        self.check_writable()?;
        let old = self.slot(id)?;
        let in_place = old.born == self.pending_generation();
        self.guarded(|store| store.flush_one(old.entry.extent.offset))?;
        let target = if in_place {
            old.entry.extent
        } else {
            self.guarded(|store| store.reserve(old.entry.len))?
        };
        let len = old.entry.len;
        Ok(ObjectWriter::new(self, id, target, len, Mode::Rewrite { old, in_place }))
    }

    /// Replaces the first `bytes.len()` bytes of an object. A committed object up to the
    /// write buffer's object size is rewritten copy-on-write through the write buffer (the
    /// new copy is staged and written, coalesced with its neighbours, at the next flush);
    /// anything else streams through [`write_to_obj`](Storer::write_to_obj).
    fn write_bytes_to_obj(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        let old = self.slot(id)?;
        check_write_bounds(id, 0, bytes.len() as u64, old.entry.len).map_err(Error::from_io)?;
        let staged_size =
            (old.entry.len as usize) <= MAX_STAGED_OBJECT.min(self.write_buffer_bytes);
        if old.born == self.pending_generation() || !staged_size || old.entry.len == 0 {
            let mut writer = self.write_to_obj(id)?;
            writer.write_all(bytes).map_err(Error::from_io)?;
            return writer.finish();
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
            store.stage_or_write(target.offset, &content)?;
            let entry = Entry { extent: target, len: old.entry.len, checksum: checksum(&content) };
            store.put(id, entry, store.pending_generation());
            store.release(old.entry.extent, old.born)
        })
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_now()
    }

    fn close(mut self) -> Result<()> {
        self.commit_now()
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
        let entry = self.slot(id)?.entry;
        buf.clear();
        match self.staged_at(&entry) {
            Some(staged) => buf.extend_from_slice(staged),
            None => {
                buf.resize(entry.len as usize, 0);
                self.backend.read_at(buf, entry.extent.offset)?;
            }
        }
        let computed = checksum(buf);
        if computed != entry.checksum {
            buf.clear();
            return Err(Error::ChecksumMismatch { id, stored: entry.checksum, computed });
        }
        Ok(())
    }

    /// Writes a new object with one positioned write.
    fn write_new_obj_from_bytes(&mut self, bytes: &[u8]) -> Result<ObjectId> {
        self.guarded(|store| {
            let (id, extent) = store.reserve_new(bytes.len() as u64)?;
            store.stage_or_write(extent.offset, bytes)?;
            let born = store.pending_generation();
            let entry = Entry { extent, len: bytes.len() as u64, checksum: checksum(bytes) };
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
        if self.slot(PRIME_OBJECT_ID).is_ok() {
            return Ok(PRIME_OBJECT_ID);
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
            let runs = store.alloc.allocate_runs(count, size, min_run)?;
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
            if !store.staged.is_empty() {
                for extent in &extents {
                    store.unstage(extent.offset); // the batch replaces what was buffered
                }
            }
            if total <= SMALL_BATCH_BYTES && total <= store.write_buffer_bytes as u64 {
                // A small batch joins the write buffer: its bytes are written, coalesced
                // with their neighbours, by the next flush, not by a syscall of their own.
                // Each is padded to its extent, so a run of neighbours stays one write.
                let mut padded = Vec::new();
                for (&(_, data), extent) in objects.iter().zip(&extents) {
                    padded.clear();
                    padded.extend_from_slice(data);
                    padded.resize(extent.len as usize, 0);
                    store.stage_or_write(extent.offset, &padded)?;
                }
            } else {
                let sections =
                    batch_sections(objects.iter().map(|(_, d)| *d).zip(extents.iter().copied()));
                write_batched_sections(&store.backend, &sections)?;
            }
            for (&(id, data), &extent) in objects.iter().zip(&extents) {
                let entry = Entry { extent, len: data.len() as u64, checksum: checksum(data) };
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
pub fn batch_sections<'a>(items: impl IntoIterator<Item = (&'a [u8], Extent)>) -> Vec<Section<'a>> {
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
                    return Err(Error::InvalidArgument(format!(
                        "object {id} is committed; batched writes fill objects made since the last commit"
                    )));
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

/// The bookkeeping of a streaming read that checks an object's checksum: the read that
/// returns the last byte (or, for an empty object, the first read) fails with `InvalidData`
/// carrying [`Error::ChecksumMismatch`] instead of returning bytes that do not match. Readers
/// supply how bytes are fetched; this does the rest.
#[derive(Debug)]
pub struct CheckedRead {
    id: ObjectId,
    len: u64,
    checksum: u64,
    position: u64,
    sum: StreamingChecksum,
    verified: bool,
}

impl CheckedRead {
    /// A read of object `id`, `len` bytes that must hash to `checksum`.
    pub fn new(id: ObjectId, len: u64, checksum: u64) -> Self {
        Self { id, len, checksum, position: 0, sum: StreamingChecksum::new(), verified: false }
    }

    /// The object's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn verify(&mut self) -> io::Result<()> {
        self.verified = true;
        let computed = self.sum.finish();
        if computed != self.checksum {
            let error = Error::ChecksumMismatch { id: self.id, stored: self.checksum, computed };
            return Err(error.into_io());
        }
        Ok(())
    }

    /// Reads the next bytes into `buf`, fetching them with `fetch(dest, position in the
    /// object)`, and checks the checksum when the last byte has been read.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        fetch: impl FnOnce(&mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<usize> {
        let left = self.len - self.position;
        if left == 0 {
            if !self.verified {
                self.verify()?;
            }
            return Ok(0);
        }
        let n = left.min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        fetch(&mut buf[..n], self.position)?;
        self.sum.update(&buf[..n]);
        self.position += n as u64;
        if self.position == self.len {
            self.verify()?;
        }
        Ok(n)
    }
}

/// Streams one object's bytes, checksum checked (see [`CheckedRead`]).
#[derive(Debug)]
pub struct ObjectReader<'a, B> {
    backend: &'a B,
    /// The object's bytes when they are still in the write buffer.
    staged: Option<&'a [u8]>,
    offset: u64,
    checked: CheckedRead,
}

impl<B: FileBackend> ObjectReader<'_, B> {
    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.checked.len()
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.checked.is_empty()
    }
}

impl<B: FileBackend> Read for ObjectReader<'_, B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (backend, staged, offset) = (self.backend, self.staged, self.offset);
        self.checked.read(buf, |dest, position| match staged {
            Some(bytes) => {
                let start = position as usize;
                dest.copy_from_slice(&bytes[start..start + dest.len()]);
                Ok(())
            }
            None => backend.read_at(dest, offset + position),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    New,
    Rewrite { old: Slot, in_place: bool },
}

/// Streams bytes into one object. Finishing (explicitly, or by dropping the writer) records
/// the object; an I/O error while finishing in `drop` leaves the store refusing writes, so it
/// surfaces at the next write or commit.
#[derive(Debug)]
pub struct ObjectWriter<'a, A: SpaceAllocator, B: FileBackend> {
    store: &'a mut Store<A, B>,
    id: ObjectId,
    target: Extent,
    len: u64,
    position: u64,
    sum: StreamingChecksum,
    mode: Mode,
    done: bool,
}

impl<'a, A: SpaceAllocator, B: FileBackend> ObjectWriter<'a, A, B> {
    fn new(store: &'a mut Store<A, B>, id: ObjectId, target: Extent, len: u64, mode: Mode) -> Self {
        Self {
            store,
            id,
            target,
            len,
            position: 0,
            sum: StreamingChecksum::new(),
            mode,
            done: false,
        }
    }

    /// The object being written.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Writes the rest of the object (zeros, or the old bytes) and records it.
    fn complete(&mut self) -> Result<()> {
        self.done = true;
        let (store, sum) = (&mut *self.store, &mut self.sum);
        let (id, target, len, position, mode) =
            (self.id, self.target, self.len, self.position, self.mode);
        store.guarded(|store| {
            match mode {
                Mode::New => {
                    write_zeros(&store.backend, target.offset + position, len - position)?;
                    hash_zeros(sum, len - position);
                }
                Mode::Rewrite { old, in_place } => {
                    let mut chunk = vec![0u8; CHUNK_BYTES.min(len as usize).max(1)];
                    // Copying the old tail into a new copy: check the whole old object on
                    // the way, so a damaged tail is an error, never carried over under a
                    // fresh checksum. (In place, the old bytes are this generation's own.)
                    let check_old = !in_place && position < len;
                    let mut old_sum = StreamingChecksum::new();
                    let mut at = if check_old { 0 } else { position };
                    while at < len {
                        // Chunks end at `position`, so each is all prefix or all tail.
                        let end = if at < position { position } else { len };
                        let n = ((end - at) as usize).min(chunk.len());
                        store.backend.read_at(&mut chunk[..n], old.entry.extent.offset + at)?;
                        if check_old {
                            old_sum.update(&chunk[..n]);
                        }
                        if at >= position {
                            if !in_place {
                                store.backend.write_at(&chunk[..n], target.offset + at)?;
                            }
                            sum.update(&chunk[..n]);
                        }
                        at += n as u64;
                    }
                    if check_old && old_sum.finish() != old.entry.checksum {
                        // The new copy is abandoned; the object keeps its old entry.
                        let _ = store.alloc.free(target);
                        return Err(Error::ChecksumMismatch {
                            id,
                            stored: old.entry.checksum,
                            computed: old_sum.finish(),
                        });
                    }
                }
            }
            let pending = store.pending_generation();
            store.put(id, Entry { extent: target, len, checksum: sum.finish() }, pending);
            if let Mode::Rewrite { old, in_place: false } = mode {
                store.release(old.entry.extent, old.born)?;
            }
            Ok(())
        })
    }
}

impl<A: SpaceAllocator, B: FileBackend> ObjectWrite for ObjectWriter<'_, A, B> {
    fn finish(mut self) -> Result<()> {
        self.complete()
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl<A: SpaceAllocator, B: FileBackend> Write for ObjectWriter<'_, A, B> {
    /// Writes all of `buf` or, if it would pass the object's end, nothing (an error).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        check_write_bounds(self.id, self.position, buf.len() as u64, self.len)?;
        let (offset, target) = (self.position, self.target);
        self.store
            .guarded(|store| Ok(store.backend.write_at(buf, target.offset + offset)?))
            .map_err(Error::into_io)?;
        self.sum.update(buf);
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<A: SpaceAllocator, B: FileBackend> Drop for ObjectWriter<'_, A, B> {
    fn drop(&mut self) {
        if !self.done {
            // An error is latched in the store by `guarded`; `Drop` cannot report it.
            let _ = self.complete();
        }
    }
}
