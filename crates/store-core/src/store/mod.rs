//! `Store<A, B>`: the object store over allocator `A` and backend `B`. This module owns the
//! store's state: every change of it goes through the methods here (the object operations in
//! `objects.rs` and `split.rs` call them). Opening is in `open.rs`, the commit protocol in
//! `commit.rs`, page granularity in `placement.rs`, verify and compaction in `maintenance.rs`
//! (`docs/format.md`, "Object store").

mod commit;
mod journal;
mod maintenance;
mod open;
mod placement;

use std::collections::BTreeMap;
use std::path::Path;

use bob_alloc::{Extent, Run};
use bob_io_helpers::{FileBackend, OsFile, Section, checksum, write_batched_sections};

use crate::format::{Entry, HEADER_REGION, Header, PAGE_BYTES, PageRef};
use crate::space::SpaceAllocator;
use crate::table::Table;
use crate::{Error, ObjectId, Result};

pub(crate) use crate::table::Slot;
pub use maintenance::{CompactReport, VerifyReport};
use placement::Placement;

/// Objects larger than this are never staged in the write buffer.
pub(crate) const MAX_STAGED_OBJECT: usize = 64 * 1024;

/// The least the file grows by (see `Store::grow_step`: a large file grows by a sixteenth of
/// itself past its journal regions).
pub(crate) const GROW_STEP: u64 = 64 << 10;

/// The growth step for `len` bytes of data space (the file past its journal regions): a
/// sixteenth of it, at least [`GROW_STEP`], in whole pages.
pub(crate) fn grow_step_for(len: u64) -> u64 {
    GROW_STEP.max(len / 16).next_multiple_of(PAGE)
}

/// The least hole a new append frontier starts in (else it starts at the file's end): a
/// commit's objects then stay one run for at least this many bytes.
const APPEND_HOLE: u64 = 1 << 20;

/// Objects of the pending generation placed in holes before the rest are appended.
const APPEND_AFTER: usize = 4;

/// Table pages a commit may need beyond those already changed (deletes made after the last
/// allocation), kept free below the size limit so a commit of deletes succeeds at the limit.
const COMMIT_SLACK_PAGES: u64 = 16;

const PAGE: u64 = PAGE_BYTES as u64;

/// The largest block a size-classed allocator takes at once for metadata (64 pages of the
/// 4 KiB class).
const METADATA_BLOCK: u64 = 64 * PAGE;

/// Options for creating or opening a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The largest the file may grow, in bytes; allocations past it fail with `OutOfSpace`.
    /// Part of it is kept for the metadata of the next commit, so a commit of deletes always
    /// fits. Opening a file that already uses more is `OptionsMismatch`. Default:
    /// [`bob_alloc::DEFAULT_LIMIT`].
    pub max_file_bytes: u64,
    /// Bytes of new objects (each at most 64 KiB) `write_new_obj_from_bytes` may hold in
    /// memory until the next commit, or until the buffer fills, when they are written with as
    /// few positioned writes as their layout allows. 0 writes every object at once. Buffered
    /// objects are read from memory; like any uncommitted write, they are lost in a crash.
    /// The buffer is one allocation, grown as needed up to this size and kept while the
    /// store is open. When it fills, its bytes are written and the system is asked to start
    /// writing them to the device ([`FileBackend::start_writeback`]), so the commit's sync
    /// waits for less. Default: 512 KiB (a load in commits of 10,000 B-tree entries: commits
    /// 1.25-1.6x faster than with 4 MiB, which starts the device only at the sync).
    pub write_buffer_bytes: usize,
    /// Bytes of each of the two journal regions a new store gets (commits append records
    /// there; a checkpoint runs when one is full). Fixed at creation: rounded down to whole
    /// pages, at least 4 pages, at most 8 MiB and a sixty-fourth of `max_file_bytes`. Open
    /// uses what the file says. A larger journal means fewer checkpoints (each rewrites the
    /// table pages changed since the last one) and a longer replay after a crash; a new store
    /// writes both regions with zeros once. Default: 2 MiB (a one-object durable commit of
    /// 4,000 B then writes 11.4 KiB to the device, checkpoints included; with 1 MiB, 12.3).
    pub journal_bytes: u64,
    /// Reads of up to 64 KiB copy out of a memory map of the file instead of a `pread`
    /// ([`FileBackend::map_reads`]): a cached 4 KiB read takes 0.58 µs instead of 1.06 µs.
    /// A device read error while a read faults a page in (or a truncation of the file by a
    /// process that ignores its lock), which kills a process reading through a map
    /// (`SIGBUS`), is contained: that read is done again with `pread` and returns the error
    /// (`bob_io_helpers::mapped_read_faults` counts them). This installs a `SIGBUS` handler
    /// for the process when a store first maps its file; it passes every other `SIGBUS` on to the
    /// handler that was there before. Pages read through the map count in the process's
    /// resident set (`VmRSS`, as `RssFile`): they are the system's page cache, shared and
    /// reclaimable, not memory the store holds (the objects suite's peak: 421 MiB mapped, 31
    /// through `pread`). Off, reads use `pread` and no handler is installed. Default: on.
    pub mapped_reads: bool,
    /// Open reads and checks every table page and rebuilds the allocator before it returns.
    /// Off (the default), open reads the header, the table's root and the journal only, so
    /// it takes the same time at any size; a table page is read (and checked) when an object
    /// on it is first read, and the rest (every page, the object count, the extents against
    /// the file and each other, the allocator) at the first write or
    /// [`verify`](Store::verify). Damage found then is reported then, as it would have been
    /// at open (`NewestCommitDamaged` when an older commit exists), and the store refuses
    /// writes; nothing unchecked is ever returned.
    pub load_on_open: bool,
    /// Objects of up to 64 KiB are *appended* (past a commit's first four, which fill holes):
    /// each goes right after the one before, at the start of a hole of 1 MiB or more or at
    /// the file's end, so a commit's objects are one run on the device (one write, not one
    /// per object) — while the free space among the
    /// data (counting what the pending commit replaced) is at most this percentage of the
    /// live bytes. Past it, objects fill the holes that freed and rewritten objects left
    /// (no growth, but for the one run below), until [`compact`](Store::compact) or deletes bring the
    /// file back under. So rewrites cost a file of up to `1 + append_room_percent / 100`
    /// times its live bytes (or its live bytes and one commit's new versions, if a commit
    /// rewrites more than that). Filling holes, a commit's small objects still form runs
    /// where the holes allow (each right after the one before when that space is free), and
    /// such a run may start at the file's end while the free space is within the bound plus
    /// the commit before's small objects (at most 1 MiB): so the file stays within the bound
    /// plus one commit's run. 0 always fills holes and never grows the file for a run.
    /// Default: 100.
    pub append_room_percent: u32,
}

impl Default for StoreOptions {
    /// The defaults each field names: the allocator's size limit, a 512 KiB write buffer,
    /// 2 MiB journal regions, reads through a memory map, a lazy open, appends while the free
    /// space is at most the live bytes.
    fn default() -> Self {
        Self {
            max_file_bytes: bob_alloc::DEFAULT_LIMIT,
            write_buffer_bytes: 512 << 10,
            journal_bytes: journal::DEFAULT_JOURNAL_BYTES,
            mapped_reads: true,
            load_on_open: false,
            append_room_percent: 100,
        }
    }
}

/// What space is for: objects leave room below the size limit for the next commit's
/// metadata; metadata may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Object,
    Metadata,
}

/// A single-file object store; see the crate docs for the guarantees.
///
/// Dropping a store without [`close`](crate::Storer::close) or a last `commit` loses what was
/// done since the last commit (the file opens to that commit); it does no I/O.
#[derive(Debug)]
pub struct Store<A: SpaceAllocator, B: FileBackend> {
    backend: B,
    alloc: A,
    /// `StoreOptions::max_file_bytes`.
    limit: u64,
    table: Table,
    /// Extents the last commit references but the pending generation no longer needs:
    /// returned to the allocator only once the next commit is durable.
    pending_free: Vec<Extent>,
    /// Bytes in `pending_free` (free once the next commit is durable: the append bound counts
    /// them free).
    pending_free_bytes: u64,
    /// Extents born in the pending generation and still live, by offset: the next commit
    /// makes them committed.
    fresh: BTreeMap<u64, Extent>,
    /// Extents reserved for objects being written by a guard, by offset, until published
    /// or abandoned; `true` when written outside the store's lock.
    in_flight: BTreeMap<u64, (Extent, bool)>,
    /// Where each table page of the last commit lives.
    pages: Vec<Option<PageRef>>,
    /// The last durable checkpoint (what the active header slot holds).
    header: Header,
    active_slot: usize,
    /// The journal of commits since that checkpoint.
    journal: journal::Journal,
    /// A journaled commit whose record is written and whose sync has not returned.
    committing: Option<journal::Committing>,
    /// Where the allocator's space begins: past the header slots and the journal regions.
    data_start: u64,
    /// Checkpoints this handle made.
    checkpoints: u64,
    /// Journal records open dropped because their data had not reached the disk (0 or 1).
    dropped_records: u64,
    /// Set by open: the next change starts the session with a checkpoint (see
    /// `start_session`); a checkpoint before any change (`checkpoint`, `close`) is that one.
    checkpoint_due: bool,
    /// Whether anything changed since the last commit.
    dirty: bool,
    /// Set by a failed write path: the store refuses writes until reopened.
    failed: Option<String>,
    /// Opened for reading only (`open_read_only`, or on an older commit).
    read_only: bool,
    /// New objects' bytes not yet written, by offset (all in extents born in the pending
    /// generation): where they are in `staging`.
    staged: BTreeMap<u64, std::ops::Range<usize>>,
    /// The staged bytes, end to end (with the bytes of objects staged again or dropped since
    /// the last flush, which no range names). Kept across flushes, so a commit's objects are
    /// copied into memory already mapped rather than each into an allocation of its own (a
    /// large commit's thousands of 4 KiB allocations had the kernel map and zero fresh pages
    /// at every commit); its length is bounded by `write_buffer_bytes`.
    staging: Vec<u8>,
    write_buffer_bytes: usize,
    /// Set while compaction rewrites the metadata: pages and root go to the lowest space.
    metadata_low: bool,
    placement: Placement,
    /// The file length known to be allocated: objects never grow past it minus the room kept
    /// for the next commit's metadata.
    room: u64,
    /// Set by a lazy open until the first write completes it (`complete_open`).
    deferred: Option<Box<Deferred>>,
    /// `StoreOptions::mapped_reads`.
    mapped_reads: bool,
    /// Where the next appended object goes (see `append`): the front of a hole or the file's
    /// end; `None` until one is chosen.
    frontier: Option<u64>,
    /// `StoreOptions::append_room_percent`.
    append_room_percent: u32,
    /// Where the pending commit's small objects placed in holes lie (see `place_in_run`).
    run: SmallRun,
}

/// The run a commit's small objects form when they fill holes (see `Store::place_in_run`).
#[derive(Debug, Default, Clone, Copy)]
struct SmallRun {
    /// The generation the run belongs to (any other: no run yet in the pending one).
    generation: u64,
    /// Where its last object ends (`None`: no object yet): the next one goes there if that
    /// space is free.
    end: Option<u64>,
    /// Bytes of small objects placed in the generation.
    bytes: u64,
    /// Bytes of small objects the generation before placed: what this one is expected to
    /// place, for which its first object looks for a hole.
    expected: u64,
}

/// What a lazy open leaves for [`Store::complete_open`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deferred {
    /// The other intact slot's commit, protected while the newest might not be durable.
    previous: Option<Header>,
    /// The file's length at open: every entry must lie inside it.
    file_len: u64,
    /// Room the first commit (a checkpoint) needs past the live extents.
    commit_room: u64,
}

impl<A: SpaceAllocator> Store<A, OsFile> {
    /// Creates a new store file at `path` (failing if it exists) and makes it durable. The
    /// file is locked: no other handle can open it while this store lives.
    pub fn create(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::create_with(OsFile::create_new(path.as_ref())?, options)
    }

    /// Opens the store file at `path` read-only, with a shared lock (other read-only handles
    /// may open it too, a writer may not while they hold it): for a file this process may not
    /// write, or must not change. Every write returns `ReadOnly`; nothing is written to the
    /// file, not even by `close`. See [`open_read_only_with`](Self::open_read_only_with).
    pub fn open_read_only(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_read_only_with(OsFile::open_read_only(path.as_ref())?, options)
    }

    /// Opens the store file at `path`, recovering its last commit (see
    /// [`open_with`](Self::open_with)). The file is locked: a second open fails with
    /// `Locked` while this store lives.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_with(OsFile::open(path.as_ref())?, options)
    }

    /// Opens the store file at `path`, or creates it if there is none (see
    /// [`open_or_create_with`](Self::open_or_create_with)). The file is locked as by
    /// [`open`](Self::open).
    pub fn open_or_create(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_or_create_with(OsFile::open_or_create(path.as_ref())?, options)
    }
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Opens the store on `backend`, or creates one if the backend holds no store yet: an
    /// empty file (just made, or one whose creation a crash cut short before it wrote
    /// anything), or a file of zeros no longer than a creation with `options` writes (a creation cut short
    /// before its first header was durable: it holds no data). Anything else that is not a
    /// store is `NotAStore` and is never created over, as damage to a store is not.
    pub fn open_or_create_with(backend: B, options: StoreOptions) -> Result<Self> {
        let len = backend.len()?;
        if len == 0 {
            return Self::create_with(backend, options);
        }
        if Self::is_unfinished_creation(&backend, len, &options)? {
            backend.set_len(0)?;
            backend.sync_data()?;
            return Self::create_with(backend, options);
        }
        Self::open_with(backend, options)
    }

    /// Whether `backend` (of `len` bytes) is what a creation with `options` cut short leaves:
    /// no longer than the header slots and the journal regions it writes, and zeros
    /// throughout. (A creation with other options left a file this does not take for one:
    /// it is `NotAStore`, never created over.)
    fn is_unfinished_creation(backend: &B, len: u64, options: &StoreOptions) -> Result<bool> {
        let journal_len = journal::journal_len_for(options.journal_bytes, options.max_file_bytes);
        if len > HEADER_REGION + 2 * journal_len {
            return Ok(false);
        }
        let mut buf = vec![0u8; 64 << 10];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            backend.read_at(&mut buf[..n], at)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Creates a store on an empty backend and commits its empty state.
    pub fn create_with(backend: B, options: StoreOptions) -> Result<Self> {
        if backend.len()? != 0 {
            return Err(Error::InvalidArgument("a new store needs an empty file".into()));
        }
        let journal_len = journal::journal_len_for(options.journal_bytes, options.max_file_bytes);
        let data_start = HEADER_REGION + 2 * journal_len;
        if options.max_file_bytes < data_start + (COMMIT_SLACK_PAGES + 2) * PAGE {
            return Err(Error::InvalidArgument(format!(
                "a size limit of {} bytes leaves no room for the store's metadata",
                options.max_file_bytes
            )));
        }
        // The journal regions are written once with zeros, so that appending a record later
        // changes no block mapping (a sync then writes the record's pages and nothing else).
        backend.set_len(data_start)?;
        bob_io_helpers::write_zeros(&backend, HEADER_REGION, 2 * journal_len)?;
        let header = Header {
            version: crate::format::FORMAT_VERSION,
            kind: A::KIND,
            generation: 0,
            root: Extent::new(0, 0),
            root_len: 0,
            root_checksum: 0,
            next_id: 1,
            object_count: 0,
            file_end: data_start,
            journal: [HEADER_REGION, HEADER_REGION + journal_len],
            journal_len,
            salt: 0,
            sealed: false,
        };
        let mut store = Self::from_parts(
            backend,
            A::empty(data_start, options.max_file_bytes),
            Table::new(),
            Vec::new(),
            header,
            1, // so the first commit writes slot 0
            options,
        );
        store.dirty = true;
        store.checkpoint()?;
        Ok(store)
    }

    fn from_parts(
        backend: B,
        alloc: A,
        table: Table,
        pages: Vec<Option<PageRef>>,
        header: Header,
        active_slot: usize,
        options: StoreOptions,
    ) -> Self {
        // After open's checks: they read the header and journal from the device (their cached
        // pages dropped first), through `pread`.
        if options.mapped_reads {
            backend.map_reads(true);
        }
        Store {
            backend,
            alloc,
            limit: options.max_file_bytes,
            table,
            pending_free: Vec::new(),
            pending_free_bytes: 0,
            fresh: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            pages,
            header,
            active_slot,
            journal: journal::Journal::fresh(&header, active_slot),
            committing: None,
            data_start: header.journal[1] + header.journal_len,
            checkpoints: 0,
            dropped_records: 0,
            checkpoint_due: false,
            dirty: false,
            failed: None,
            read_only: false,
            staged: BTreeMap::new(),
            staging: Vec::new(),
            write_buffer_bytes: options.write_buffer_bytes,
            metadata_low: false,
            placement: Placement::default(),
            room: 0,
            deferred: None,
            mapped_reads: options.mapped_reads,
            frontier: None,
            append_room_percent: options.append_room_percent,
            run: SmallRun::default(),
        }
    }

    /// The generation being built: extents born in it are referenced by no commit.
    pub(crate) fn pending_generation(&self) -> u64 {
        self.journal.generation + 1
    }

    /// Refuses writes after a failure, on a read-only store.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        match &self.failed {
            Some(why) => Err(Error::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Before a write: refuses it after a failure or on a read-only store, and completes a
    /// lazy open (see [`StoreOptions::load_on_open`]).
    pub(crate) fn ready_to_write(&mut self) -> Result<()> {
        self.check_writable()?;
        self.complete_open()?;
        if self.checkpoint_due {
            self.start_session()?;
        }
        Ok(())
    }

    /// Before a session's first change: a checkpoint of the state open chose, which skips a
    /// generation (see `plan_root`), so the ids this session hands out are tagged with
    /// generations no earlier session tagged an id with. An earlier session's ids carry at
    /// most its last durable generation + 2 (a commit being synced, and the one after it),
    /// and the generation open finds is at least that last durable one; the checkpoint is
    /// at + 2, and this session's ids at + 3 and up. It is also the checkpoint the first
    /// commit after an open has to be (see `begin_commit`), only earlier.
    fn start_session(&mut self) -> Result<()> {
        self.check_not_committing()?;
        self.checkpoint_now()
    }

    /// Runs a mutating step; an error that [latches](Error::latches) makes the store refuse
    /// writes until reopened.
    pub(crate) fn guarded<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.ready_to_write()?;
        let result = step(self);
        if let Err(e) = &result {
            if e.latches() {
                self.fail(e.to_string());
            }
        }
        result
    }

    /// Latches the store as failed (the first reason is kept).
    pub(crate) fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }

    /// The write buffer's size in bytes.
    pub(crate) fn write_buffer_bytes(&self) -> usize {
        self.write_buffer_bytes
    }

    /// Writes `bytes` at the start of `extent` (fresh space), or keeps them in the write
    /// buffer. Bytes rounded onto whole pages (`SpaceAllocator::placed_len`: less than a
    /// page) are written as zeros to the extent's end, so the write covers its pages whole
    /// (the kernel need not read a page it only partly overwrites) and neighbours stay one
    /// contiguous write.
    pub(crate) fn stage_or_write(&mut self, extent: Extent, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let offset = extent.offset;
        let rounding = extent.len.saturating_sub(bytes.len() as u64);
        let pad = if rounding < PAGE && extent.end() % PAGE == 0 { rounding as usize } else { 0 };
        let padded_len = bytes.len() + pad;
        if padded_len > MAX_STAGED_OBJECT || padded_len > self.write_buffer_bytes {
            if pad == 0 {
                self.backend.write_at(bytes, offset)?;
            } else {
                let zeros = [0u8; PAGE as usize];
                let parts = [std::io::IoSlice::new(bytes), std::io::IoSlice::new(&zeros[..pad])];
                self.backend.write_vectored_at(&parts, offset)?;
            }
            return Ok(());
        }
        if self.staging.len() + padded_len > self.write_buffer_bytes {
            let span = self.staged_span();
            self.flush_staged()?;
            // The commit's sync will wait for these bytes to reach the device: they start on
            // their way now, while the caller makes the next ones (a load in commits of
            // 10,000: commits 1.25-1.6x faster). Whole pages only: the last, partly filled,
            // is written again by the next flush. An error here is a failed write (the
            // kernel may have dropped pages it could not start writing).
            if let Some((start, end)) = span {
                let (start, end) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
                if start < end {
                    self.backend.start_writeback(start, end - start)?;
                }
            }
        }
        let start = self.staging.len();
        let need = start + padded_len;
        if need > self.staging.capacity() {
            // Doubling, but never past the buffer's bound (it is kept).
            let want = (self.staging.capacity() * 2).clamp(need, self.write_buffer_bytes.max(need));
            self.staging.reserve_exact(want - start);
        }
        self.staging.extend_from_slice(bytes);
        self.staging.resize(start + padded_len, 0);
        // A range staged before at this offset is dropped: its bytes stay unnamed.
        self.staged.insert(offset, start..start + padded_len);
        Ok(())
    }

    /// Where the buffered objects lie: from the first one's start to the last one's end.
    fn staged_span(&self) -> Option<(u64, u64)> {
        let (&first, _) = self.staged.first_key_value()?;
        let (&last, range) = self.staged.last_key_value()?;
        Some((first, last + range.len() as u64))
    }

    /// Writes every buffered object, coalescing neighbours into single writes.
    pub(crate) fn flush_staged(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            // Bytes named by no range (unstaged since): nothing to write.
            self.staging.clear();
            return Ok(());
        }
        let sections: Vec<Section<'_>> = self
            .staged
            .iter()
            .map(|(&offset, range)| Section::new(offset, &self.staging[range.clone()]))
            .collect();
        write_batched_sections(&self.backend, &sections)?;
        self.staged.clear();
        self.staging.clear();
        Ok(())
    }

    /// Drops the buffered bytes of the object at `offset`, if any: where they were in
    /// `staging` (they stay there, named by no range, until the next flush).
    pub(crate) fn unstage(&mut self, offset: u64) -> Option<std::ops::Range<usize>> {
        self.staged.remove(&offset)
    }

    /// Writes the buffered bytes of the object at `offset` now, if any (before its extent is
    /// read from disk or rewritten in place).
    pub(crate) fn flush_one(&mut self, offset: u64) -> Result<()> {
        if let Some(range) = self.unstage(offset) {
            self.backend.write_at(&self.staging[range], offset)?;
        }
        Ok(())
    }

    /// The buffered bytes of the object `entry` describes, if any (a batch buffers objects
    /// padded to their extents: the object is the first `entry.len` bytes).
    pub(crate) fn staged_at(&self, entry: &Entry) -> Option<&[u8]> {
        let range = self.staged.get(&entry.extent.offset)?;
        let bytes = &self.staging[range.clone()];
        Some(&bytes[..(entry.len as usize).min(bytes.len())])
    }

    /// A fresh id, tagged with the pending generation.
    pub(crate) fn take_id(&mut self) -> Result<ObjectId> {
        self.table.take_id(self.id_tag())
    }

    /// The tag of ids handed out now: the pending generation's low 32 bits.
    fn id_tag(&self) -> u32 {
        self.pending_generation() as u32
    }

    /// Space for `len` bytes (nothing for 0 bytes), in no page a commit references: appended
    /// while the file has room for it (see [`append`](Self::append)), else where the allocator
    /// puts it.
    pub(crate) fn reserve(&mut self, len: u64) -> Result<Extent> {
        let placed = A::placed_len(len);
        // The first objects of a commit fill holes: a commit of a few objects gains nothing
        // from a run, and appending past the data costs it the file system's metadata (the
        // first write into space reserved past the data converts it, written at the sync).
        if len == 0 || placed > MAX_STAGED_OBJECT as u64 {
            return self.reserve_placed(len);
        }
        let generation = self.pending_generation();
        if self.run.generation != generation {
            let expected = if self.run.generation + 1 == generation { self.run.bytes } else { 0 };
            self.run = SmallRun { generation, end: None, bytes: 0, expected };
        }
        let appended = if self.fresh.len() >= APPEND_AFTER { self.append(placed)? } else { None };
        let extent = match appended {
            Some(extent) => extent,
            None => match self.place_in_run(placed)? {
                Some(extent) => extent,
                None => self.reserve_placed(len)?,
            },
        };
        self.run.end = Some(extent.end());
        self.run.bytes += placed;
        Ok(extent)
    }

    /// Places a small object of the pending commit, while objects fill holes (appending is
    /// off or past its bound), so that its small objects form one run on the device (one
    /// write at the commit, not one per object) where the holes allow: right after the
    /// commit's last small object if that space is free; for its first, at the start of a
    /// hole that holds as many bytes as the commit before placed (commits that come
    /// together, as a group commit's, are alike; the allocator picks the hole). Past the
    /// file's end only as [`may_grow_for_run`](Self::may_grow_for_run) allows. Otherwise
    /// `None` (the allocator's fit). Without it, concurrent one-object commits
    /// settle into every other page (each round fills the pages the round before last freed,
    /// between those of the last round): eight writes and a sync of 160-260 µs a round on
    /// this machine's disk, where one run of 32 KiB syncs in about 185.
    fn place_in_run(&mut self, placed: u64) -> Result<Option<Extent>> {
        if !A::APPENDS || self.metadata_low || self.may_append() {
            return Ok(None);
        }
        let end = self.alloc.file_end();
        // The run goes on (`hole`: none, the space must start a free extent), or begins. Not
        // from past the file's end: the run's last object is gone (given back in this
        // commit) and the end moved down past it; going on would leave a gap (helper-55).
        let (hole, candidate) = if let Some(at) = self.run.end.filter(|&at| at <= end) {
            (None, Extent::new(at, placed))
        } else {
            let want = self.run.expected.min(APPEND_HOLE);
            if want <= placed {
                return Ok(None);
            }
            // The start of a hole with room for the run and an alignment, else the file's end.
            let Some(hole) = self.alloc.append_start(want + PAGE) else { return Ok(None) };
            let start = if placed % PAGE == 0 { hole.next_multiple_of(PAGE) } else { hole };
            (Some(hole), Extent::new(start, placed))
        };
        if (placed % PAGE == 0 && candidate.offset % PAGE != 0)
            || (candidate.end() > end && !self.may_grow_for_run())
            || self.placement.blocking_page(candidate).is_some()
        {
            return Ok(None);
        }
        let claimed = match hole {
            Some(hole) => self.alloc.claim_within(hole, candidate),
            None => self.alloc.claim(candidate),
        };
        if claimed.is_err() {
            return Ok(None);
        }
        match self.check_reserve(Purpose::Object, placed, end, &[candidate]) {
            Ok(()) => Ok(Some(candidate)),
            Err(Error::OutOfSpace { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Space for `len` bytes where the allocator puts it (never appended).
    fn reserve_placed(&mut self, len: u64) -> Result<Extent> {
        if len == 0 {
            return Ok(Extent::new(0, 0));
        }
        self.take_space(A::placed_len(len), Purpose::Object)
    }

    /// Whether objects may be appended: the allocator can be told where, and the free space
    /// among the data is within `StoreOptions::append_room_percent` of the live bytes. Space
    /// the next commit frees (what this one replaced) and space held back beside committed
    /// bytes count as free: a commit's rewrites must not make room for its own appends.
    fn may_append(&self) -> bool {
        if !A::APPENDS || self.append_room_percent == 0 || self.metadata_low {
            return false;
        }
        let (free, live) = self.free_and_live();
        free as u128 * 100 <= live as u128 * u128::from(self.append_room_percent)
    }

    /// `(free, live)` bytes among the data, counting as free the space the next commit frees
    /// (what this one replaced), the space a commit whose sync runs now frees, and space held
    /// back beside committed bytes.
    fn free_and_live(&self) -> (u64, u64) {
        let (free, used) = self.alloc.usage();
        let committing = self.committing.as_ref().map_or(0, |c| c.releasing_bytes);
        let soon_free = self.pending_free_bytes + committing + self.placement.held_bytes();
        (free + soon_free, used.saturating_sub(soon_free))
    }

    /// Whether a run of small objects may begin (or go on) past the file's end when no hole
    /// holds it: while the free space among the data (as [`may_append`](Self::may_append)
    /// counts it) is at most the append room plus one commit's run (what the commit before
    /// placed, at most [`APPEND_HOLE`]); never with an append room of 0. Past it, they fill
    /// holes: the file does not grow while holes could take them.
    fn may_grow_for_run(&self) -> bool {
        if self.append_room_percent == 0 {
            return false;
        }
        let (free, live) = self.free_and_live();
        let room = live as u128 * u128::from(self.append_room_percent) / 100;
        u128::from(free) <= room + u128::from(self.run.expected.min(APPEND_HOLE))
    }

    /// Appends `placed` bytes at the frontier: right after the last appended object, at the
    /// front of a hole of [`APPEND_HOLE`] bytes or more, or at the file's end, so the objects
    /// of a commit (and of commits in a row) are one run on the device. `None` when objects
    /// are not appended now (see [`may_append`](Self::may_append)). Whole pages start on a
    /// page boundary (the bytes skipped stay free); a partial first page that holds committed
    /// bytes is held back (`Placement`), as `take_space` does.
    fn append(&mut self, placed: u64) -> Result<Option<Extent>> {
        if !self.may_append() {
            self.frontier = None;
            return Ok(None);
        }
        // A few tries: the frontier's hole may have been used up, or taken by another
        // allocation, since the last append; then a new frontier is picked.
        for _ in 0..4 {
            let end = self.alloc.file_end();
            let at = match self.frontier {
                Some(at) if at < end => at,
                // None, or at the end or past it (which may have moved down): a hole of
                // `APPEND_HOLE` bytes or more if one has appeared (deletes, compaction), else
                // the end.
                _ => match self.alloc.append_start(APPEND_HOLE) {
                    Some(at) => at,
                    None => return Ok(None),
                },
            };
            let start = if placed % PAGE == 0 { at.next_multiple_of(PAGE) } else { at };
            let extent = Extent::new(start, placed);
            if let Some(page) = self.placement.blocking_page(extent) {
                // The first page holds committed bytes: hold back what is left of it and
                // go on from its end. A blocked last page ends the hole: pick another.
                let page_end = (page + 1) * PAGE;
                let head = Extent::new(at, page_end.saturating_sub(at));
                if page == at / PAGE && head.len > 0 && self.alloc.claim(head).is_ok() {
                    self.placement.hold(page, head);
                    self.frontier = Some(page_end);
                } else {
                    self.frontier = None;
                }
                continue;
            }
            // The bytes skipped to reach a page boundary stay free.
            match self.alloc.claim_within(at, extent) {
                Ok(()) => {}
                // Past the size limit: holes may still have room.
                Err(bob_alloc::Error::OutOfSpace { .. }) => break,
                Err(_) => {
                    self.frontier = None;
                    continue;
                }
            }
            match self.check_reserve(Purpose::Object, placed, end, &[extent]) {
                Ok(()) => {}
                // Growth the limit or the disk refuses: holes may still have room.
                Err(Error::OutOfSpace { .. }) => break,
                Err(e) => return Err(e),
            }
            self.frontier = Some(extent.end());
            return Ok(Some(extent));
        }
        self.frontier = None;
        Ok(None)
    }

    /// Bytes objects leave free below the size limit: room for a commit that rewrites every
    /// table page (deletes dirty pages without allocating, and must still commit at the
    /// limit), its root, and one block of a size-classed allocator.
    fn limit_reserve(&self) -> u64 {
        let pages = self.table.page_count() + 1;
        let root = (16 + 16 * pages).next_multiple_of(PAGE);
        (pages + COMMIT_SLACK_PAGES) * PAGE + root + METADATA_BLOCK
    }

    /// Bytes kept in the file, reserved on the device, past the objects for the next commit's
    /// table pages and root (the pages changed so far and a margin): deletes commit on a full
    /// disk as long as they change at most the margin's pages more.
    fn commit_reserve(&self) -> u64 {
        let pages = self.table.page_count() + 1;
        let root = (16 + 16 * pages).next_multiple_of(PAGE);
        (self.table.dirty_page_count() as u64 + 1 + COMMIT_SLACK_PAGES) * PAGE + root
    }

    /// Space from the allocator that shares no page with committed bytes (see `Placement`);
    /// objects must leave the commit reserve free below the limit.
    pub(crate) fn take_space(&mut self, len: u64, purpose: Purpose) -> Result<Extent> {
        let end_before = self.alloc.file_end();
        loop {
            let extent = self.alloc.allocate(len)?;
            if let Some(page) = self.placement.blocking_page(extent) {
                self.hold_blocked(page, extent)?;
                continue;
            }
            self.check_reserve(purpose, len, end_before, &[extent])?;
            return Ok(extent);
        }
    }

    /// Holds back the part of `extent` that lies in the blocking `page`, when the allocator
    /// can be told where to allocate, and gives the rest back (so the next try starts at the
    /// page's end, and a page-sized object after a commit stays page-aligned); else all of it.
    fn hold_blocked(&mut self, page: u64, extent: Extent) -> Result<()> {
        let page_end = (page + 1) * PAGE;
        let splits = extent.offset / PAGE == page && extent.offset + extent.len > page_end;
        if splits {
            self.free_space(extent)?;
            let head = Extent::new(extent.offset, page_end - extent.offset);
            if self.alloc.claim(head).is_ok() {
                self.placement.hold(page, head);
                return Ok(());
            }
            // This allocator cannot be told where: take the whole extent again.
            let again = self.alloc.allocate(extent.len)?;
            let page = self.placement.blocking_page(again).unwrap_or(page);
            self.placement.hold(page, again);
            return Ok(());
        }
        self.placement.hold(page, extent);
        Ok(())
    }

    /// Refuses (and gives back) space for objects whose allocation grew the file into the
    /// commit reserve.
    fn check_reserve(
        &mut self,
        purpose: Purpose,
        len: u64,
        end_before: u64,
        taken: &[Extent],
    ) -> Result<()> {
        if purpose == Purpose::Metadata {
            return Ok(());
        }
        let end = self.alloc.file_end().next_multiple_of(PAGE);
        let refusal = if end > end_before.next_multiple_of(PAGE) {
            // Growth keeps room for a commit that rewrites every table page, and the file
            // keeps the room for the next commit reserved on the device.
            if end + self.limit_reserve() > self.limit {
                Some(Error::OutOfSpace { len, limit: self.limit })
            } else {
                self.ensure_file_room(end + self.commit_reserve()).err()
            }
        } else if end + self.next_commit_need() > self.limit {
            // A hole: fine as long as the next commit's metadata still fits.
            Some(Error::OutOfSpace { len, limit: self.limit })
        } else {
            None
        };
        let Some(error) = refusal else { return Ok(()) };
        for extent in taken {
            self.free_space(*extent)?;
        }
        Err(error)
    }

    /// What the next commit's metadata needs beyond the file's end, at most: the pages changed
    /// so far and one more, a root, and one block of a size-classed allocator.
    fn next_commit_need(&self) -> u64 {
        let root = (16 + 16 * (self.table.page_count() + 1)).next_multiple_of(PAGE);
        (self.table.dirty_page_count() as u64 + 2) * PAGE + root + METADATA_BLOCK
    }

    /// The longest whole number of pages within the size limit: the file's length never
    /// leaves a page boundary, so growing it never rewrites a page that holds data.
    pub(crate) fn limit_floor(&self) -> u64 {
        self.limit - self.limit % PAGE
    }

    /// Makes the file at least `needed` bytes long, its space reserved on the device, growing
    /// it in steps. A full disk is `OutOfSpace` (nothing changed: the store stays usable), so
    /// the room kept past the objects for the next commit's metadata is never eaten.
    fn ensure_file_room(&mut self, needed: u64) -> Result<()> {
        if needed <= self.room {
            return Ok(());
        }
        let step = self.grow_step();
        let stepped = (self.room + step).next_multiple_of(PAGE).min(self.limit_floor()).max(needed);
        for target in [stepped, needed] {
            match self.backend.allocate(target) {
                Ok(()) => {
                    self.room = target;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::OutOfSpace { len: needed - self.room, limit: self.room })
    }

    /// How much the file grows by at a time: a sixteenth of its room past the journal regions,
    /// at least [`GROW_STEP`]. Each change of the file's length (or of its blocks) costs the
    /// file system a metadata commit at the next sync, so the length moves in steps, never a
    /// page per commit.
    pub(crate) fn grow_step(&self) -> u64 {
        grow_step_for(self.room.saturating_sub(self.data_start))
    }

    /// Runs of `count` extents of `len` bytes, each run in pages no commit references.
    pub(crate) fn reserve_runs(&mut self, count: u64, len: u64, min_run: u64) -> Result<Vec<Run>> {
        let len = A::placed_len(len);
        let end_before = self.alloc.file_end();
        let mut runs = Vec::new();
        let mut left = count;
        while left > 0 {
            let got = match self.alloc.allocate_runs(left, len, min_run) {
                Ok(got) => got,
                Err(e) => {
                    self.free_runs(&runs)?;
                    return Err(e.into());
                }
            };
            for run in got {
                let span = Extent::new(run.offset, run.len * run.count);
                if let Some(page) = self.placement.blocking_page(span) {
                    for extent in run.extents() {
                        self.placement.hold(page, extent);
                    }
                } else {
                    left -= run.count;
                    runs.push(run);
                }
            }
        }
        let taken: Vec<Extent> =
            runs.iter().flat_map(|r| r.extents().collect::<Vec<_>>()).collect();
        self.check_reserve(Purpose::Object, count * len, end_before, &taken)?;
        Ok(runs)
    }

    /// One run of `count` extents of `len` bytes.
    pub(crate) fn reserve_run(&mut self, count: u64, len: u64) -> Result<Run> {
        let len = A::placed_len(len);
        let end_before = self.alloc.file_end();
        loop {
            let run = self.alloc.allocate_run(count, len)?;
            let span = Extent::new(run.offset, run.len * run.count);
            if let Some(page) = self.placement.blocking_page(span) {
                for extent in run.extents() {
                    self.placement.hold(page, extent);
                }
                continue;
            }
            let taken: Vec<Extent> = run.extents().collect();
            self.check_reserve(Purpose::Object, count * len, end_before, &taken)?;
            return Ok(run);
        }
    }

    fn free_runs(&mut self, runs: &[Run]) -> Result<()> {
        for run in runs {
            for extent in run.extents() {
                self.free_space(extent)?;
            }
        }
        Ok(())
    }

    /// Returns space no commit references to the allocator.
    fn free_space(&mut self, extent: Extent) -> Result<()> {
        self.alloc.free(extent).map_err(|e| {
            Error::corrupt(
                crate::error::Part::Space,
                Some(extent.offset),
                format!("releasing space: {e}"),
            )
        })
    }

    /// Fresh objects for the extents of `run`, in order: empty, born in the pending
    /// generation.
    pub(crate) fn objects_for_run(&mut self, run: Run) -> Result<Vec<ObjectId>> {
        let born = self.pending_generation();
        let empty = checksum(&[]);
        let mut ids = Vec::with_capacity(run.count as usize);
        for extent in run.extents() {
            let id = match self.table.take_id(self.id_tag()) {
                Ok(id) => id,
                Err(e) => {
                    // The rest of the run's space goes back; the objects made stay.
                    for rest in run.extents().skip(ids.len()) {
                        self.free_space(rest)?;
                    }
                    return Err(e);
                }
            };
            self.put(id, Entry { extent, len: 0, checksum: empty, tag: id.tag() }, born);
            ids.push(id);
        }
        Ok(ids)
    }

    /// The slot of object `id` (its table page read and checked first, on a lazily opened
    /// store).
    #[inline]
    pub(crate) fn slot(&self, id: ObjectId) -> Result<Slot> {
        let found = match self.table.lookup(id) {
            Ok(found) => found,
            Err(page) => {
                self.read_table_page(page)?;
                self.table.lookup(id).ok().flatten()
            }
        };
        found.ok_or_else(|| self.table.missing(id))
    }

    /// Records `entry` as object `id`; `born` is the pending generation for an extent written
    /// since the last commit (any other is the object's committed extent, unchanged).
    pub(crate) fn put(&mut self, id: ObjectId, entry: Entry, born: u64) {
        if born == self.pending_generation() && entry.extent.len > 0 {
            self.fresh.insert(entry.extent.offset, entry.extent);
        }
        self.table.put(id, Slot { entry, born });
        self.dirty = true;
    }

    /// Gives back an extent no longer needed: at once if no commit references it, else after
    /// the next commit.
    pub(crate) fn release(&mut self, extent: Extent, born: u64) -> Result<()> {
        if extent.len == 0 {
            return Ok(());
        }
        if born == self.pending_generation() {
            self.fresh.remove(&extent.offset);
            self.unstage(extent.offset);
            self.free_space(extent)?;
        } else {
            self.pending_free.push(extent);
            self.pending_free_bytes += extent.len;
        }
        Ok(())
    }

    /// Removes object `id` from the table; its index is reused, under a newer tag, after the next commit.
    pub(crate) fn remove(&mut self, id: ObjectId) -> Result<Slot> {
        let slot = self.table.remove(id)?;
        self.dirty = true;
        Ok(slot)
    }

    /// Reserves fresh space (and, if `new_id`, an id) for an object written by a guard; it
    /// is not in the table until published. `outside`: a commit may run before the publish,
    /// so the space shares no page with any other object's (see `Placement`).
    pub(crate) fn reserve_outside(
        &mut self,
        len: u64,
        new_id: bool,
        outside: bool,
    ) -> Result<(Option<ObjectId>, Extent)> {
        let extent = if outside { self.reserve_apart(len)? } else { self.reserve(len)? };
        let id = if new_id {
            match self.table.take_id(self.id_tag()) {
                Ok(id) => {
                    self.table.reserve_id(id);
                    Some(id)
                }
                Err(e) => {
                    self.release_reserved(extent);
                    return Err(e);
                }
            }
        } else {
            None
        };
        if extent.len > 0 {
            self.in_flight.insert(extent.offset, (extent, outside));
            if outside {
                self.placement.add_outside(extent);
            }
        }
        Ok((id, extent))
    }

    /// Whether `extent` shares a page with an extent of the pending generation (then it
    /// cannot take a write outside the lock: a commit could make that neighbour durable
    /// while the write is still going on in the page).
    fn beside_fresh(&self, extent: Extent) -> bool {
        placement::partial_pages(extent).any(|page| {
            let (start, end) = (page * PAGE, (page + 1) * PAGE);
            self.fresh.range(..end).next_back().is_some_and(|(_, e)| e.offset + e.len > start)
        })
    }

    /// Space in no page a commit references or the pending generation uses.
    fn reserve_apart(&mut self, len: u64) -> Result<Extent> {
        let mut beside_fresh = Vec::new();
        let result = loop {
            match self.reserve_placed(len) {
                Ok(extent) if extent.len > 0 && self.beside_fresh(extent) => {
                    beside_fresh.push(extent);
                }
                other => break other,
            }
        };
        for extent in beside_fresh {
            self.free_space(extent)?;
        }
        result
    }

    fn release_reserved(&mut self, extent: Extent) {
        if extent.len > 0 {
            if let Err(e) = self.free_space(extent) {
                self.fail(e.to_string());
            }
        }
    }

    /// Ends the reservation of `extent` (and of `new_id`, a reserved id); false if `new_id` was
    /// not reserved.
    pub(crate) fn end_reservation(&mut self, new_id: Option<ObjectId>, extent: Extent) -> bool {
        if let Some((extent, true)) = self.in_flight.remove(&extent.offset) {
            let mut unheld = Vec::new();
            self.placement.remove_outside(extent, &mut unheld);
            self.return_unheld(unheld);
        }
        new_id.is_none_or(|id| self.table.unreserve_id(id))
    }

    /// Gives back a reservation never to be published.
    pub(crate) fn abandon_reserved(
        &mut self,
        new_id: Option<ObjectId>,
        extent: Extent,
    ) -> Result<()> {
        if self.end_reservation(new_id, extent) {
            if let Some(id) = new_id {
                // Reused after the next commit, which must then be one that moves the
                // generation on (a commit of nothing would not), so the id's next holder
                // gets a newer tag.
                self.table.untake_id(id);
                self.dirty = true;
            }
        }
        if extent.len > 0 {
            self.free_space(extent)?;
        }
        Ok(())
    }

    /// Whether the store is open read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

#[cfg(test)]
mod tests {
    use bob_alloc::BasicAllocator;
    use bob_io_helpers::testing::SimDisk;

    use super::*;
    use crate::Storer;

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// The write buffer is one allocation kept across flushes: objects staged and then
    /// deleted or staged again leave bytes no range names, which never grow it past
    /// `write_buffer_bytes`; a flush of nothing but such bytes empties it; what is staged
    /// reads back, before and after the commit and a reopen.
    #[test]
    fn the_write_buffer_stays_within_its_bound_and_writes_only_what_is_named() {
        let bound = 16 << 10;
        let options = StoreOptions { write_buffer_bytes: bound, ..StoreOptions::default() };
        let disk = SimDisk::new();
        let mut store =
            Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), options).unwrap();
        let mut kept = Vec::new();
        for round in 0..200u32 {
            let seed = round as u8;
            // Staged, then deleted while fresh: unstaged, its bytes left unnamed.
            let gone = store.write_new_obj_from_bytes(&bytes(seed, 3000)).unwrap();
            // Staged, then replaced in the same generation with as many bytes.
            let id = store.write_new_obj_from_bytes(&bytes(seed, 2000)).unwrap();
            store.replace_obj(id, &bytes(seed ^ 0x55, 2000)).unwrap();
            store.delete_obj(gone).unwrap();
            assert!(store.staging.len() <= bound, "round {round}: {} bytes", store.staging.len());
            assert!(
                store.staging.capacity() <= bound,
                "round {round}: {}",
                store.staging.capacity()
            );
            assert_eq!(store.read_bytes_from_obj(id).unwrap(), bytes(seed ^ 0x55, 2000));
            kept.push((id, bytes(seed ^ 0x55, 2000)));
            if round % 50 == 49 {
                store.commit().unwrap();
                assert!(store.staged.is_empty() && store.staging.is_empty());
            }
        }
        // Only deleted objects staged since the last flush: a flush writes nothing, and empties
        // the buffer.
        let gone = store.write_new_obj_from_bytes(&bytes(1, 4000)).unwrap();
        store.delete_obj(gone).unwrap();
        store.flush_staged().unwrap();
        assert!(store.staging.is_empty());
        store.commit().unwrap();
        for (id, data) in &kept {
            assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), data);
        }
        store.close().unwrap();
        let store = Store::<BasicAllocator, SimDisk>::open_with(disk, options).unwrap();
        for (id, data) in &kept {
            assert_eq!(&store.read_bytes_from_obj(*id).unwrap(), data);
        }
    }
}
