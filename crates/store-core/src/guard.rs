//! The one write protocol and the one read protocol, as guards every store type reuses.
//!
//! A write is *reserve → write → publish*: [`SplitStore::begin_new`] or
//! [`SplitStore::begin_rewrite`] reserves fresh space (never space a commit references, never
//! a page holding committed bytes; while a commit may run before the publish, never a page
//! holding bytes the next commit will reference either), the guard writes it, and
//! [`SplitStore::publish`] records the object, or [`SplitStore::abandon`] gives the space
//! back. A rewrite copies the old object's tail into the new copy and checks the old object's
//! whole checksum on the way, so a damaged tail is an error, never carried over under a fresh
//! checksum. [`ObjectWriter`] is that guard; [`ObjectReader`] streams an object and checks
//! its checksum with the last byte.
//!
//! The guards reach the store through [`Access`]: `Store` gives it directly (`&mut`, no commit
//! can run while a guard lives), `bob-store-concurrent` through its lock, with the data I/O
//! outside the lock.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, StreamingChecksum, checksum, write_zeros};

use crate::split::{Located, SplitStore};
use crate::{Error, ObjectId, ObjectWrite, Result};

/// Bytes moved per call when a writer fills or copies the rest of an object.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

pub(crate) static ZERO_CHUNK: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];

/// Adds `len` zero bytes to `sum` (the checksum of an object's zero-filled tail).
pub(crate) fn hash_zeros(sum: &mut StreamingChecksum, len: u64) {
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        sum.update(&ZERO_CHUNK[..n]);
        left -= n as u64;
    }
}

/// Refuses a write of `len` bytes at `position` into object `id` of `object_len` bytes if it
/// would pass the object's end; the error is `WriteOutOfBounds`, as an `io::Error` for `Write`.
pub(crate) fn check_write_bounds(
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

/// How a guard reaches its store.
pub trait Access {
    /// The store.
    type Store: SplitStore;

    /// Whether the guard holds the store exclusively, so no commit can run before it
    /// publishes (then its space may share pages with other new objects).
    const EXCLUSIVE: bool;

    /// Runs a metadata step on the store.
    fn with<T>(&mut self, step: impl FnOnce(&mut Self::Store) -> Result<T>) -> Result<T>;

    /// One positioned I/O call on space this guard reserved (or an object it may read). An
    /// error here latches the store.
    fn io<T>(
        &mut self,
        call: impl FnOnce(&<Self::Store as SplitStore>::Io) -> io::Result<T>,
    ) -> Result<T>;
}

/// Positioned reads for an [`ObjectReader`].
pub trait ReadAt {
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Replaces `buf`'s contents with the `len` bytes at `offset` (see
    /// [`FileBackend::read_to_vec`]).
    fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        buf.clear();
        buf.resize(len, 0);
        self.read_at(buf, offset)
    }
}

impl<B: FileBackend> ReadAt for &B {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileBackend::read_at(*self, buf, offset)
    }

    fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        FileBackend::read_to_vec(*self, buf, len, offset)
    }
}

/// The bookkeeping of a streaming read that checks an object's checksum: the read that
/// returns the last byte (or, for an empty object, the first read) fails with `InvalidData`
/// carrying [`Error::ChecksumMismatch`] instead of returning bytes that do not match.
#[derive(Debug)]
struct CheckedRead {
    id: ObjectId,
    len: u64,
    checksum: u64,
    position: u64,
    sum: StreamingChecksum,
    verified: bool,
}

impl CheckedRead {
    fn new(id: ObjectId, len: u64, checksum: u64) -> Self {
        Self { id, len, checksum, position: 0, sum: StreamingChecksum::new(), verified: false }
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

    fn read(
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

/// Streams one object's bytes; the read that returns the last byte checks the checksum and
/// fails with [`Error::ChecksumMismatch`] (as `InvalidData`) instead of returning bytes that
/// do not match.
#[derive(Debug)]
pub struct ObjectReader<'a, R> {
    io: R,
    /// The object's bytes when they are still in the write buffer.
    staged: Option<Cow<'a, [u8]>>,
    offset: u64,
    checked: CheckedRead,
}

impl<'a, R: ReadAt> ObjectReader<'a, R> {
    /// A reader of object `id`, where `located` says it is, reading through `io`.
    pub fn new(io: R, id: ObjectId, located: Located<'a>) -> Self {
        Self {
            io,
            staged: located.staged,
            offset: located.extent.offset,
            checked: CheckedRead::new(id, located.len, located.checksum),
        }
    }

    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.checked.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.checked.len == 0
    }

    /// Reads the whole object into `buf` (replacing its contents) with one positioned read
    /// and checks its checksum; on an error `buf` holds no object bytes.
    pub fn read_whole(self, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        match &self.staged {
            Some(bytes) => buf.extend_from_slice(bytes),
            None if self.checked.len == 0 => {} // an empty object may lie past the end
            None => {
                if let Err(e) = self.io.read_to_vec(buf, self.checked.len as usize, self.offset) {
                    buf.clear();
                    return Err(e.into());
                }
            }
        }
        let computed = checksum(buf);
        if computed != self.checked.checksum {
            buf.clear();
            let (id, stored) = (self.checked.id, self.checked.checksum);
            return Err(Error::ChecksumMismatch { id, stored, computed });
        }
        Ok(())
    }
}

impl<R: ReadAt> Read for ObjectReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (io, staged, offset) = (&self.io, &self.staged, self.offset);
        self.checked.read(buf, |dest, position| match staged {
            Some(bytes) => {
                let start = position as usize;
                dest.copy_from_slice(&bytes[start..start + dest.len()]);
                Ok(())
            }
            None => io.read_at(dest, offset + position),
        })
    }
}

/// Streams bytes into one object: a new one (bytes not written are zeros) or a rewrite
/// (bytes not written keep their old values). Finishing, explicitly or by dropping the
/// writer, publishes the object; an error while finishing in `drop` is latched in the store
/// (it refuses writes until reopened), so it surfaces at the next write or commit.
#[derive(Debug)]
pub struct ObjectWriter<X: Access> {
    access: X,
    id: ObjectId,
    target: Extent,
    len: u64,
    position: u64,
    sum: StreamingChecksum,
    /// The object being rewritten, or `None` for a new one.
    old: Option<Located<'static>>,
    /// A replacement: bytes not written are zeros, not the old object's.
    replacing: bool,
    done: bool,
}

impl<X: Access> ObjectWriter<X> {
    /// Reserves a new object of `len` bytes and returns its id and writer.
    pub fn create(mut access: X, len: u64) -> Result<(ObjectId, Self)> {
        let (id, target) = access.with(|store| store.begin_new(len, !X::EXCLUSIVE))?;
        Ok((id, Self::new(access, id, target, len, None)))
    }

    /// Reserves space to rewrite object `id` and returns its writer, from the first byte.
    pub fn rewrite(mut access: X, id: ObjectId) -> Result<Self> {
        let (old, target) = access.with(|store| store.begin_rewrite(id, !X::EXCLUSIVE))?;
        let len = old.len;
        Ok(Self::new(access, id, target, len, Some(old)))
    }

    /// Reserves space to replace object `id` with `len` new bytes (any length) and returns
    /// its writer; bytes not written are zeros.
    pub fn replace(mut access: X, id: ObjectId, len: u64) -> Result<Self> {
        let (old, target) = access.with(|store| store.begin_replace(id, len, !X::EXCLUSIVE))?;
        let mut writer = Self::new(access, id, target, len, Some(old));
        writer.replacing = true;
        Ok(writer)
    }

    fn new(
        access: X,
        id: ObjectId,
        target: Extent,
        len: u64,
        old: Option<Located<'static>>,
    ) -> Self {
        let sum = StreamingChecksum::new();
        Self { access, id, target, len, position: 0, sum, old, replacing: false, done: false }
    }

    /// The object being written.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Writes the rest (zeros, or the old bytes, checked) and publishes the object; on an
    /// error the reserved space is given back and a rewritten object keeps its old bytes.
    fn complete(&mut self) -> Result<()> {
        self.done = true;
        let (id, target) = (self.id, self.target);
        let old = self.old.clone();
        if let Err(e) = self.fill_rest() {
            let new_id = if old.is_none() { Some(id) } else { None };
            let _ = self.access.with(|store| store.abandon(new_id, target));
            return Err(e);
        }
        let (len, sum) = (self.len, self.sum.finish());
        // `publish` gives the space back itself when it refuses.
        self.access.with(|store| store.publish(id, target, len, sum, old.as_ref()))
    }

    fn fill_rest(&mut self) -> Result<()> {
        let (from, to, target) = (self.position, self.len, self.target);
        let Some(old) = self.old.clone().filter(|_| !self.replacing) else {
            self.access.io(|io| {
                write_zeros(io, target.offset + from, to - from).map_err(|e| e.into_io())
            })?;
            hash_zeros(&mut self.sum, to - from);
            return Ok(());
        };
        // Read the whole old object, hashing it to check its checksum, and copy its tail.
        let mut chunk = vec![0u8; CHUNK_BYTES.min(to as usize).max(1)];
        let mut old_sum = StreamingChecksum::new();
        let mut at = 0;
        while at < to {
            // Chunks end at `from`, so each is all prefix or all tail.
            let end = if at < from { from } else { to };
            let n = ((end - at) as usize).min(chunk.len());
            self.access.io(|io| io.read_at(&mut chunk[..n], old.extent.offset + at))?;
            old_sum.update(&chunk[..n]);
            if at >= from {
                self.access.io(|io| io.write_at(&chunk[..n], target.offset + at))?;
                self.sum.update(&chunk[..n]);
            }
            at += n as u64;
        }
        let computed = old_sum.finish();
        if computed != old.checksum {
            return Err(Error::ChecksumMismatch { id: self.id, stored: old.checksum, computed });
        }
        Ok(())
    }
}

impl<X: Access> ObjectWrite for ObjectWriter<X> {
    fn finish(mut self) -> Result<()> {
        self.complete()
    }

    fn abort(mut self) -> Result<()> {
        self.done = true;
        let new_id = if self.old.is_none() { Some(self.id) } else { None };
        let target = self.target;
        self.access.with(|store| store.abandon(new_id, target))
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl<X: Access> Write for ObjectWriter<X> {
    /// Writes all of `buf` or, if it would pass the object's end, nothing (an error).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        check_write_bounds(self.id, self.position, buf.len() as u64, self.len)?;
        let offset = self.target.offset + self.position;
        self.access.io(|io| io.write_at(buf, offset)).map_err(Error::into_io)?;
        self.sum.update(buf);
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<X: Access> Drop for ObjectWriter<X> {
    fn drop(&mut self) {
        if !self.done {
            // An error is latched in the store by `Access::io` or `publish`; `Drop` cannot
            // report it.
            let _ = self.complete();
        }
    }
}
