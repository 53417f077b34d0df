//! `FileBackend`: positioned I/O on one file, and `OsFile`, its implementation for real files.
//!
//! Every layer of bob does its file I/O through this trait, so tests can put `SimDisk` (the
//! fault-injecting backend behind the `testing` feature) where a real file would be.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::mapped::{GuardedMap, MapSlot, Mapped};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::{Error, Result};

/// The most buffers passed to one `pwritev` (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Positioned I/O on one file.
///
/// Reads and writes are whole: `read_at` fills the buffer or fails, `write_at` writes every
/// byte or fails; implementations retry short transfers and `Interrupted` errors themselves.
/// After an error the file's contents in the affected range are unknown.
pub trait FileBackend: Send + Sync {
    /// Fills `buf` with the bytes at `offset`; `UnexpectedEof` if the file ends first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Replaces `buf`'s contents with the `len` bytes at `offset` (`UnexpectedEof` if the file
    /// ends first; `buf` is then unspecified). The default zero-fills `buf` and calls
    /// `read_at`; a backend that can copy straight into the vector skips the fill.
    fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        buf.clear();
        buf.resize(len, 0);
        self.read_at(buf, offset)
    }

    /// Writes all of `buf` at `offset`, growing the file if the write ends past its end
    /// (a gap before `offset` reads as zeros).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Writes `bufs`, laid end to end, starting at `offset`, with as few system calls as the
    /// backend can manage. The default writes each buffer with `write_at`.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let mut position = offset;
        for buf in bufs {
            self.write_at(buf, position)?;
            position += buf.len() as u64;
        }
        Ok(())
    }

    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data, and the metadata needed to read it back, durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the file's data and all its metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// Asks the system to drop its cached copy of `[offset, offset + len)` where that copy is
    /// clean, so the next read of it comes from the device. After a failed sync the kernel
    /// may keep pages it never wrote, marked clean; this shows what the device really holds.
    /// Advisory: the default does nothing.
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Tells the system the range will be read soon, so it can start reading it from the
    /// device now, in the background (`posix_fadvise(WILLNEED)`): many ranges hinted at once
    /// are read together, at the device's queue depth, where one read after another waits for
    /// each. A hint: it never changes what a read returns. The default does nothing.
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Asks the system to start writing the range's cached changes to the device now, in the
    /// background (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later sync finds less to
    /// write and wait for. It makes nothing durable and never changes what a read returns;
    /// an error means what a failed write means (the range's changes may be lost). The
    /// default does nothing.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Turns reads through a memory map of the file on or off where the backend has them
    /// ([`OsFile`]'s: faster reads, a device read error still an error); the default has
    /// none and does nothing.
    fn map_reads(&self, on: bool) {
        let _ = on;
    }

    /// Extends the file to at least `len` bytes with its space reserved on the device where
    /// the system can (`fallocate`), so later writes below `len` cannot fail for want of
    /// space; never shrinks it. The default extends it with `set_len`.
    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }
}

macro_rules! forward_backend {
    ($($ty:ty),*) => {$(
        impl<B: FileBackend + ?Sized> FileBackend for $ty {
            fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
                (**self).read_at(buf, offset)
            }
            fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
                (**self).write_at(buf, offset)
            }
            fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
                (**self).write_vectored_at(bufs, offset)
            }
            fn len(&self) -> io::Result<u64> {
                (**self).len()
            }
            fn set_len(&self, len: u64) -> io::Result<()> {
                (**self).set_len(len)
            }
            fn sync_data(&self) -> io::Result<()> {
                (**self).sync_data()
            }
            fn sync_all(&self) -> io::Result<()> {
                (**self).sync_all()
            }
            fn allocate(&self, len: u64) -> io::Result<()> {
                (**self).allocate(len)
            }
            fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
                (**self).drop_cache(offset, len)
            }
            fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
                (**self).will_need(offset, len)
            }
            fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
                (**self).start_writeback(offset, len)
            }
            fn map_reads(&self, on: bool) {
                (**self).map_reads(on)
            }
            fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
                (**self).read_to_vec(buf, len, offset)
            }
        }
    )*};
}

forward_backend!(&B, Box<B>, Arc<B>);

/// A real file, through `pread`/`pwrite`/`pwritev`.
///
/// [`OsFile::open`] and [`OsFile::create_new`] take an exclusive advisory lock on the file
/// (`flock(LOCK_EX | LOCK_NB)`): a bob file has one owner at a time, because two handles
/// committing to one file destroy each other's commits. A second opener, in this process or
/// another, gets [`Error::Locked`]; so does a reader of [`OsFile::open_read_only`], whose
/// handles share a shared lock (many readers, no writer). The lock belongs to the open file and is released when the
/// last handle to it is closed: when the `OsFile` is dropped, or when the `File` from
/// [`OsFile::into_inner`] is. The lock is advisory: it stops other bob handles, not a process
/// that writes the file without asking for it.
///
/// Reads use `pread`, or, once [`map_reads`](FileBackend::map_reads) turned it on, copy reads of up
/// to 64 KiB out of a read-only memory map of the file (no system call: 1.8 times as fast for
/// a cached 4 KiB read). Mapped reads stay below the file's length as this handle last set it;
/// a truncation waits for the readers copying at that moment (see `mapped.rs`), so no read
/// touches a mapped page past the end of the file. A device read error while a read faults a
/// page in, or another process that ignores the lock and truncates the file, raises `SIGBUS`,
/// which kills a process reading through a map (LMDB's hazard); here it is contained (see
/// `fault_guard.rs`): that read is done again with `pread`, which returns the error, and the
/// mapping is made again. The first mapping installs a process-wide `SIGBUS` handler for this,
/// which passes every other `SIGBUS` on to the handler it replaced. Off by default for an
/// `OsFile` (bob's stores turn it on: `StoreOptions::mapped_reads`).
#[derive(Debug)]
pub struct OsFile {
    file: File,
    map: MapSlot<GuardedMap>,
    /// Whether reads go through a mapping (`map_reads`).
    mapped: AtomicBool,
}

/// The least address space a mapping takes (the file grows into it without a remap).
const MIN_MAPPING: u64 = 1 << 30;

/// A read-only mapping of `file` for a file of `len` bytes: twice that, at least 1 GiB, so the
/// file can grow under it (`None` if the system refuses: reads then use `pread`). Reads stay
/// below the file's length (see `mapped.rs`).
fn map_file(file: &File, len: u64) -> Option<GuardedMap> {
    let len =
        usize::try_from(len.saturating_mul(2).max(MIN_MAPPING).next_multiple_of(4096)).ok()?;
    // SAFETY: the mapping is read-only. Reads through it stay below the file's length as this
    // handle knows it (`MapSlot`'s `valid`): a truncation through this handle lowers it first,
    // once the readers copying now are done, and the file is locked against other bob handles.
    // The bytes may change under the mapping (writes through this handle); readers copy them
    // out and check their checksums, never hold references into the mapping. Exercised by the
    // tests `mapped_reads_across_length_changes` and `mapped_reads_while_truncating`. A read
    // that faults all the same (a device error, a truncation by a process that ignores the
    // lock) is contained by the fault guard: the mapping is used only once registered with
    // it (test `a_truncation_behind_the_lock_is_an_error_not_a_crash`).
    GuardedMap::new(unsafe { memmap2::MmapOptions::new().len(len).map(file) }.ok()?)
}

impl OsFile {
    /// Wraps an open file; it must have been opened for reading and writing. No lock is taken:
    /// the caller answers for the file having one owner.
    pub fn new(file: File) -> Self {
        Self { file, map: MapSlot::new(), mapped: AtomicBool::new(false) }
    }

    /// Opens an existing file for reading and writing and locks it; [`Error::Locked`] if
    /// another handle holds the lock.
    ///
    /// The lock belongs to the file the path named when it was opened: if another owner put a
    /// new file in its place (a rename, as a compaction into a new file does) before
    /// releasing the lock, the old file is let go and the path opened again, so this never
    /// holds a file no path leads to any more.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_locked(path, true)
    }

    /// Opens an existing file for reading only and takes a *shared* lock on it: other
    /// read-only handles may hold it too, a handle of [`open`](Self::open) may not (either
    /// waits for the other, then gets [`Error::Locked`]). Every write through it fails
    /// (the descriptor is not open for writing). For looking into a file one may not write,
    /// or must not change.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        Self::open_locked(path, false)
    }

    fn open_locked(path: &Path, write: bool) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let mut attempts = 0;
        loop {
            let file =
                File::options().read(true).write(write).open(path).map_err(|source| {
                    Error::File { action: "open", path: path.to_owned(), source }
                })?;
            lock(&file, path, write)?;
            let stat = |m: std::io::Result<std::fs::Metadata>| m.map(|m| (m.dev(), m.ino()));
            let held = stat(file.metadata()).map_err(|source| Error::File {
                action: "stat",
                path: path.to_owned(),
                source,
            })?;
            attempts += 1;
            match stat(std::fs::metadata(path)) {
                Ok(named) if named == held => return Ok(Self::new(file)),
                // Replaced (or removed) while this waited for the lock: open what is there now.
                _ if attempts < 8 => continue,
                _ => return Err(Error::Locked { path: path.to_owned() }),
            }
        }
    }

    /// Opens the file at `path` as [`open`](Self::open) does, or, if there is none, creates
    /// it as [`create_new`](Self::create_new) does (an empty file, locked, its name durable).
    /// Whether it was created shows in its length: a new file is empty.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        let is_kind = |e: &Error, kind: std::io::ErrorKind| matches!(e, Error::File { source, .. } if source.kind() == kind);
        // Another process may create or remove the file between the two attempts.
        for _ in 0..8 {
            match Self::create_new(path) {
                Ok(file) => return Ok(file),
                Err(e) if is_kind(&e, std::io::ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
            match Self::open(path) {
                Err(e) if is_kind(&e, std::io::ErrorKind::NotFound) => {
                    // A name that exists but opens to nothing: a dangling symbolic link.
                    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                        return Err(e);
                    }
                }
                Ok(file) => {
                    // An empty file may be one whose creator died before making its name
                    // durable: made durable here, as `create_new` would have.
                    if file.file_len() == 0 {
                        crate::fs::sync_parent_dir(path)?;
                    }
                    return Ok(file);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::File {
            action: "open or create",
            path: path.to_owned(),
            source: std::io::Error::other("the file was created and removed eight times over"),
        })
    }

    /// Creates a new file (failing if it exists), locks it, and makes its directory entry
    /// durable. The lock is taken before anything is synced, so an opener that finds the new
    /// name gets [`Error::Locked`] until this handle is dropped.
    pub fn create_new(path: &Path) -> Result<Self> {
        crate::fs::create_new_durable_with(path, |file| lock(file, path, true)).map(Self::new)
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Unwraps the underlying file; the lock, if this handle holds one, stays with it.
    pub fn into_inner(self) -> File {
        self.file
    }

    /// Bytes of the file reads through the memory map may reach (0 when reads are not
    /// mapped).
    pub fn mapped_len(&self) -> u64 {
        self.map.mapped_len()
    }

    fn file_len(&self) -> u64 {
        self.end().unwrap_or(0)
    }

    /// The file's length, by `lseek(SEEK_END)` (the handle does only positioned I/O, so its
    /// offset means nothing), never by `stat` on a commit's path: since Linux 6.13 a `stat`
    /// marks the file's timestamps as queried, so the next write gives them a fine-grained
    /// time; the inode then changes at every write, and an `fdatasync` on ext4 without a
    /// journal writes the inode's block too (a third 4 KiB write per one-page commit:
    /// 8.3 KiB and 104-136 µs a commit became 12.3 KiB and 167 µs on this machine's disk;
    /// `lseek` left it at 8.3 KiB).
    fn end(&self) -> io::Result<u64> {
        Ok(rustix::fs::seek(&self.file, rustix::fs::SeekFrom::End(0))?)
    }

    /// After the file grew through this handle: mapped reads may reach its new length, and
    /// past the mapping's end the file is mapped again, larger.
    fn grew(&self) {
        if self.mapped.load(Ordering::Acquire) && self.map.grown(|| self.file_len()) {
            self.remap();
        }
    }

    /// After a read through the mapping faulted: the mapping is made again (the page of zeros
    /// the fault guard put in it goes with it), at the file's length now.
    fn remap_faulted(&self) {
        self.map.replace_faulted(|| self.new_map());
    }

    /// Maps the file again (or takes the mapping away, if reads are not mapped).
    fn remap(&self) {
        self.map.replace(|| self.new_map());
    }

    /// A mapping of the file at its length now, and that length; none (and no `lseek`) if
    /// reads are not mapped.
    fn new_map(&self) -> (Option<GuardedMap>, u64) {
        if !self.mapped.load(Ordering::Acquire) {
            return (None, 0);
        }
        let len = self.file_len();
        (map_file(&self.file, len), len)
    }
}

/// How long [`lock`] keeps trying while the lock is held, in all. (50 ms was once too short
/// on a loaded two-core CI machine: a child took longer between its `fork` and `exec`.)
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes an exclusive `flock` on `file` (a shared one if not `exclusive`): [`Error::Locked`]
/// if another open file holds one that conflicts (any, for an exclusive lock; an exclusive
/// one, for a shared lock). `flock` locks belong to the open file description, so a second
/// `open` of the same path in this process is refused as surely as one in another process.
///
/// A held lock is retried for up to 500 ms before that answer. A child process that another
/// thread is starting holds a copy of every descriptor, and so of the lock of a handle just
/// dropped, between its `fork` and its `exec` (which closes them: Rust opens files
/// close-on-exec): a drop and reopen must not fail because some thread ran a command.
fn lock(file: &File, path: &Path, exclusive: bool) -> Result<()> {
    use rustix::fs::{FlockOperation, flock};
    use rustix::io::Errno;
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(100);
    let operation = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    let errno = loop {
        match flock(file, operation) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(Errno::WOULDBLOCK) if started.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(5));
            }
            Err(errno) => break errno,
        }
    };
    if errno == Errno::WOULDBLOCK {
        return Err(Error::Locked { path: path.to_owned() });
    }
    Err(Error::File { action: "lock", path: path.to_owned(), source: io::Error::from(errno) })
}

impl FileBackend for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.map.read(buf, offset) {
            Mapped::Copied => return Ok(()),
            Mapped::Faulted => self.remap_faulted(),
            Mapped::No => {}
        }
        // `read_exact_at` retries short reads and `Interrupted`.
        self.file.read_exact_at(buf, offset)
    }

    /// Through the mapping, a copy with no zero-fill first.
    fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        buf.clear();
        match self.map.read_to_vec(buf, len, offset) {
            Mapped::Copied => return Ok(()),
            Mapped::Faulted => self.remap_faulted(),
            Mapped::No => {}
        }
        buf.resize(len, 0);
        self.file.read_exact_at(buf, offset)
    }

    /// In pieces of at most 64 KiB, each ending at a multiple of 64 KiB (`WRITE_CHUNK`).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let piece = (chunk_end(at) - at).min((buf.len() - done) as u64) as usize;
            // `write_all_at` retries short writes and `Interrupted`.
            self.file.write_all_at(&buf[done..done + piece], at)?;
            done += piece;
        }
        if self.map.beyond(offset + buf.len() as u64) {
            self.grew();
        }
        Ok(())
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        // Each call stops at the next multiple of `WRITE_CHUNK` (a short write, which the
        // loop continues).
        write_all_vectored_with(bufs, offset, |chunk, position| {
            let mut room = (chunk_end(position) - position) as usize;
            let mut bounded: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len().min(16));
            for buf in chunk {
                if room == 0 {
                    break;
                }
                let take = buf.len().min(room);
                bounded.push(IoSlice::new(&buf[..take]));
                room -= take;
            }
            rustix::io::pwritev(&self.file, &bounded, position).map_err(io::Error::from)
        })?;
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if self.map.beyond(offset + len) {
            self.grew();
        }
        Ok(())
    }

    /// By `lseek`, not `stat` (see `OsFile::end`).
    fn len(&self) -> io::Result<u64> {
        self.end()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.map.shrink(len, || self.file.set_len(len), || self.file_len())?;
        self.grew();
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Reads through a memory map of the file (see the type's docs), or not.
    fn map_reads(&self, on: bool) {
        self.mapped.store(on, Ordering::Release);
        self.remap();
    }

    /// `posix_fadvise(DONTNEED)`: clean cached pages of the range are dropped.
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let advice = rustix::fs::Advice::DontNeed;
        Ok(rustix::fs::fadvise(&self.file, offset, std::num::NonZeroU64::new(len), advice)?)
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux: writeback of the range's dirty
    /// pages starts, without waiting for it. Elsewhere nothing. An error of the call itself
    /// (not one the device reports later, which the next sync reports) may mean the kernel
    /// dropped pages it could not start writing (ext4's failed delayed allocation): it is
    /// returned, unless it only says there is no such hint (`ENOSYS`, `EINVAL`, `ESPIPE`,
    /// `EOPNOTSUPP`).
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
                return Ok(());
            };
            // SAFETY: `sync_file_range` takes no pointers; the descriptor is this file's,
            // open for as long as `self` is borrowed.
            let done = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    offset,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if done != 0 {
                let error = io::Error::last_os_error();
                // No hint to give (no such call, or not for this file): nothing was started.
                let unsupported = [libc::ENOSYS, libc::EINVAL, libc::ESPIPE, libc::EOPNOTSUPP];
                if error.raw_os_error().is_some_and(|code| unsupported.contains(&code)) {
                    return Ok(());
                }
                return Err(error);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
        Ok(())
    }

    /// `posix_fadvise(WILLNEED)`, one call per MiB of the range: the kernel starts reading
    /// the range's pages that are not cached into the page cache (which mapped reads then
    /// find too), and returns. (Linux reads at most about the device's largest request, 1.25
    /// MiB with default settings, for one call: a longer range in one call would be read
    /// only in part.)
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        const CALL: u64 = 1 << 20;
        let advice = rustix::fs::Advice::WillNeed;
        let end = offset.saturating_add(len);
        let mut at = offset;
        while at < end {
            let piece = (end - at).min(CALL);
            rustix::fs::fadvise(&self.file, at, std::num::NonZeroU64::new(piece), advice)?;
            at += piece;
        }
        Ok(())
    }

    /// `fallocate` from the current end to `len` (blocks reserved, the size extended); where
    /// the file system has no `fallocate`, `set_len`.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.end()?;
        if current >= len {
            return Ok(());
        }
        let flags = rustix::fs::FallocateFlags::empty();
        match rustix::fs::fallocate(&self.file, flags, current, len - current) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                self.file.set_len(len)?
            }
            Err(e) => return Err(e.into()),
        }
        self.grew();
        Ok(())
    }
}

/// The most one write system call of [`OsFile`] covers, ending at a multiple of it: 64 KiB.
/// Linux (6.x) caches a file in folios as large as the writes that filled them, up to 2 MiB,
/// and ext4 then walks every 4 KiB block of a folio on each small write into it and again at
/// writeback. Measured here (128 MiB written, then 512 random 4 KiB writes and a sync): in
/// 4 MiB writes, 365 ms to write it and 4.8 + 12.5 ms for the random batch; in 64 KiB
/// writes, 65 ms and 1.4 + 6.0 ms; in 4 KiB writes, 166 ms and 0.8 + 5.0 ms.
pub(crate) const WRITE_CHUNK: u64 = 64 << 10;

/// Where a write starting at `at` stops: the next multiple of [`WRITE_CHUNK`] after it.
fn chunk_end(at: u64) -> u64 {
    (at / WRITE_CHUNK + 1) * WRITE_CHUNK
}

/// Writes every byte of `bufs` starting at `offset` through `write`, a vectored positioned
/// write that may transfer fewer bytes than asked. Short writes continue where they stopped,
/// `Interrupted` is retried, and at most [`MAX_IOVECS`] buffers go to one call.
pub(crate) fn write_all_vectored_with(
    bufs: &[IoSlice<'_>],
    offset: u64,
    mut write: impl FnMut(&[IoSlice<'_>], u64) -> io::Result<usize>,
) -> io::Result<()> {
    let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
    let mut remaining_slices: &mut [IoSlice<'_>] = &mut owned;
    IoSlice::advance_slices(&mut remaining_slices, 0);
    let mut remaining_bytes: u64 = remaining_slices.iter().map(|b| b.len() as u64).sum();
    let mut position = offset;
    while !remaining_slices.is_empty() {
        let chunk = &remaining_slices[..remaining_slices.len().min(MAX_IOVECS)];
        match write(chunk, position) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "vectored write wrote 0 bytes",
                ));
            }
            Ok(written) => {
                let written_u64 = written as u64;
                if written_u64 > remaining_bytes {
                    return Err(io::Error::other("vectored write reported more bytes than given"));
                }
                IoSlice::advance_slices(&mut remaining_slices, written);
                remaining_bytes -= written_u64;
                position += written_u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `pwritev` into a Vec that writes at most `step` bytes a call and fails every
    /// third call with `Interrupted`.
    fn stuttering_writer(
        image: &mut Vec<u8>,
        step: usize,
    ) -> impl FnMut(&[IoSlice<'_>], u64) -> io::Result<usize> + '_ {
        let mut calls = 0;
        move |bufs, position| {
            calls += 1;
            if calls % 3 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let flat: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = flat.len().min(step);
            let start = position as usize;
            if image.len() < start + n {
                image.resize(start + n, 0);
            }
            image[start..start + n].copy_from_slice(&flat[..n]);
            Ok(n)
        }
    }

    #[test]
    fn vectored_write_survives_short_writes_and_interrupts() {
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i + 1; 7 + i as usize * 3]).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let expected: Vec<u8> = parts.concat();
        for step in [1, 2, 5, 13, 1000] {
            let mut image = vec![0u8; 3];
            write_all_vectored_with(&slices, 3, stuttering_writer(&mut image, step)).unwrap();
            assert_eq!(&image[3..], &expected[..], "step {step}");
        }
    }

    #[test]
    fn vectored_write_reports_a_zero_write() {
        let data = [1u8; 4];
        let err = write_all_vectored_with(&[IoSlice::new(&data)], 0, |_, _| Ok(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn vectored_write_rejects_an_overlong_count() {
        let data = [1u8; 4];
        let err = write_all_vectored_with(&[IoSlice::new(&data)], 0, |_, _| Ok(9)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
    }

    #[test]
    fn vectored_write_skips_empty_buffers_and_splits_at_iov_max() {
        let one = [7u8; 1];
        let slices: Vec<IoSlice<'_>> = (0..MAX_IOVECS * 2 + 3)
            .map(|i| IoSlice::new(if i % 2 == 0 { &one } else { &[] }))
            .collect();
        let mut calls = Vec::new();
        write_all_vectored_with(&slices, 0, |chunk, _| {
            assert!(chunk.len() <= MAX_IOVECS);
            calls.push(chunk.len());
            Ok(chunk.iter().map(|b| b.len()).sum())
        })
        .unwrap();
        assert!(calls.len() >= 2, "{calls:?}");
    }

    #[test]
    fn read_only_handles_share_their_lock_and_never_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let writer = OsFile::create_new(&path).unwrap();
        writer.write_at(b"hello", 0).unwrap();
        assert!(matches!(OsFile::open_read_only(&path), Err(Error::Locked { .. })));
        drop(writer);
        let first = OsFile::open_read_only(&path).unwrap();
        let second = OsFile::open_read_only(&path).unwrap();
        let mut buf = [0u8; 5];
        second.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(first.write_at(b"x", 0).is_err(), "not open for writing");
        assert!(first.set_len(1).is_err());
        assert!(matches!(OsFile::open(&path), Err(Error::Locked { .. })), "readers hold it");
        first.map_reads(true);
        first.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello", "through a read-only map");
        drop((first, second));
        let writer = OsFile::open(&path).unwrap();
        assert_eq!(writer.file_len(), 5);
    }

    #[test]
    fn os_file_round_trips_and_reports_eof() {
        let dir = tempfile::tempdir().unwrap();
        let file = OsFile::create_new(&dir.path().join("f")).unwrap();
        let a = [1u8; 10];
        let b = [2u8; 20];
        file.write_vectored_at(&[IoSlice::new(&a), IoSlice::new(&b)], 5).unwrap();
        assert_eq!(file.len().unwrap(), 35);
        let mut back = [0u8; 35];
        file.read_at(&mut back, 0).unwrap();
        assert_eq!(&back[..5], &[0; 5]);
        assert_eq!(&back[5..15], &a);
        assert_eq!(&back[15..], &b);
        let mut past = [0u8; 4];
        assert_eq!(file.read_at(&mut past, 33).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        file.set_len(8).unwrap();
        file.sync_data().unwrap();
        file.sync_all().unwrap();
        assert_eq!(file.len().unwrap(), 8);
        assert!(!file.is_empty().unwrap());
    }

    /// Writes past `WRITE_CHUNK` go in pieces ending at its multiples (see there); the
    /// bytes land where they belong, from any offset, whole or vectored in slices that
    /// straddle the piece boundaries.
    #[test]
    fn os_file_writes_in_pieces_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = OsFile::create_new(&dir.path().join("f")).unwrap();
        let whole: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        file.write_at(&whole, 5_000).unwrap();
        let mut back = vec![0u8; whole.len()];
        file.read_at(&mut back, 5_000).unwrap();
        assert_eq!(back, whole);
        let parts: Vec<IoSlice<'_>> = whole.chunks(7_001).map(IoSlice::new).collect();
        file.write_vectored_at(&parts, 1_000_003).unwrap();
        file.read_at(&mut back, 1_000_003).unwrap();
        assert_eq!(back, whole);
        assert_eq!(file.len().unwrap(), 1_000_003 + whole.len() as u64);
        assert_eq!(chunk_end(0), WRITE_CHUNK);
        assert_eq!(chunk_end(WRITE_CHUNK - 1), WRITE_CHUNK);
        assert_eq!(chunk_end(WRITE_CHUNK), 2 * WRITE_CHUNK);
    }

    #[test]
    fn open_missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = OsFile::open(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
