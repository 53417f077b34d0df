//! `Store<A, B>`: the object store over allocator `A` and backend `B`: its state, creation,
//! opening, and the commit protocol (`docs/format.md`, "Object store").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bob_alloc::{Extent, Run};
use bob_io_helpers::{FileBackend, OsFile, Section, checksum, write_batched_sections};

use crate::firstfit::FirstFit;
use crate::format::{
    self, ENTRIES_PER_PAGE, Entry, HEADER_REGION, Header, MAX_OBJECTS, PAGE_BYTES, PageRef,
    SLOT_BYTES, SLOT_OFFSETS,
};
use crate::pageset::PageSet;
use crate::space::SpaceAllocator;
use crate::{Error, ObjectId, Result};

/// Objects larger than this are never staged in the write buffer.
pub(crate) const MAX_STAGED_OBJECT: usize = 64 * 1024;

/// Options for creating or opening a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The largest the file may grow, in bytes; allocations past it fail with `OutOfSpace`.
    pub max_file_bytes: u64,
    /// Bytes of new objects (each at most 64 KiB) `write_new_obj_from_bytes` may hold in
    /// memory until the next commit, or until the buffer fills, when they are written with as
    /// few positioned writes as their layout allows. 0 writes every object at once. Buffered
    /// objects are read from memory; like any uncommitted write, they are lost in a crash.
    pub write_buffer_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_file_bytes: bob_alloc::DEFAULT_LIMIT, write_buffer_bytes: 4 << 20 }
    }
}

/// One object as the store tracks it in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) entry: Entry,
    /// The generation whose commit first made this extent durable; an extent born in the
    /// pending generation is referenced by no commit and may be rewritten in place.
    pub(crate) born: u64,
}

/// A single-file object store; see the crate docs for the guarantees.
///
/// Dropping a store without [`close`](crate::Storer::close) or a last `commit` loses what was
/// done since the last commit (the file opens to that commit); it does no I/O.
#[derive(Debug)]
pub struct Store<A: SpaceAllocator, B: FileBackend> {
    pub(crate) backend: B,
    pub(crate) alloc: A,
    /// Indexed by id; ids `0..next_id`.
    pub(crate) table: Vec<Option<Slot>>,
    pub(crate) object_count: u64,
    /// Ids below `next_id` with no object, free for reuse (never 0, the prime id).
    pub(crate) free_ids: BTreeSet<u64>,
    /// Ids freed in the pending generation: reused only after the next commit.
    pub(crate) pending_free_ids: Vec<u64>,
    /// Ids handed out by `SplitStore::begin_new` and not yet published or abandoned: never
    /// trimmed by a commit, never handed out again.
    pub(crate) reserved_ids: BTreeSet<u64>,
    /// Extents the last commit references but the pending generation no longer needs:
    /// returned to the allocator only once the next commit is durable.
    pub(crate) pending_free: Vec<Extent>,
    /// Table pages changed since the last commit.
    pub(crate) dirty_pages: PageSet,
    /// Where each table page of the last commit lives.
    pub(crate) pages: Vec<Option<PageRef>>,
    /// The last durable commit.
    pub(crate) header: Header,
    pub(crate) active_slot: usize,
    /// Whether anything changed since the last commit.
    pub(crate) dirty: bool,
    /// Set by a failed write path: the store refuses writes until reopened.
    pub(crate) failed: Option<String>,
    /// Why open skipped the newest header slot, if it did.
    pub(crate) fallback: Option<String>,
    /// New objects' bytes not yet written, by offset (all in extents born in the pending
    /// generation).
    pub(crate) staged: BTreeMap<u64, Vec<u8>>,
    pub(crate) staged_bytes: usize,
    pub(crate) write_buffer_bytes: usize,
    /// Set while compaction rewrites the metadata: pages and root go to the lowest space.
    pub(crate) metadata_low: bool,
}

impl<A: SpaceAllocator> Store<A, OsFile> {
    /// Creates a new store file at `path` (failing if it exists) and makes it durable.
    pub fn create(path: &Path, options: StoreOptions) -> Result<Self> {
        Self::create_with(OsFile::create_new(path)?, options)
    }

    /// Opens the store file at `path`, recovering its last commit.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        Self::open_with(OsFile::open(path)?, options)
    }
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Creates a store on an empty backend and commits its empty state.
    pub fn create_with(backend: B, options: StoreOptions) -> Result<Self> {
        if backend.len()? != 0 {
            return Err(Error::InvalidArgument("a new store needs an empty file".into()));
        }
        backend.set_len(HEADER_REGION)?;
        let header = Header {
            kind: A::KIND,
            generation: 0,
            root: Extent::new(0, 0),
            root_len: 0,
            root_checksum: 0,
            next_id: 1,
            object_count: 0,
            file_end: HEADER_REGION,
        };
        let mut store = Self {
            backend,
            alloc: A::empty(HEADER_REGION, options.max_file_bytes),
            table: vec![None],
            object_count: 0,
            free_ids: BTreeSet::new(),
            pending_free_ids: Vec::new(),
            reserved_ids: BTreeSet::new(),
            pending_free: Vec::new(),
            dirty_pages: PageSet::default(),
            pages: Vec::new(),
            header,
            active_slot: 1, // so the first commit writes slot 0
            dirty: true,
            failed: None,
            fallback: None,
            staged: BTreeMap::new(),
            staged_bytes: 0,
            write_buffer_bytes: options.write_buffer_bytes,
            metadata_low: false,
        };
        store.commit_now()?;
        Ok(store)
    }

    /// Opens a store on `backend`: the newest header slot whose whole table checks out.
    pub fn open_with(backend: B, options: StoreOptions) -> Result<Self> {
        let file_len = backend.len()?;
        if file_len < HEADER_REGION {
            return Err(Error::NotAStore(format!(
                "the file is {file_len} bytes, shorter than a store header"
            )));
        }
        let mut slots = [0u8; 2 * SLOT_BYTES];
        backend.read_at(&mut slots, 0)?;
        let mut candidates = Vec::new();
        for (index, bytes) in slots.chunks(SLOT_BYTES).enumerate() {
            if let Some(header) = Header::decode(bytes)? {
                candidates.push((header, index));
            }
        }
        if candidates.is_empty() {
            let magic = slots.chunks(SLOT_BYTES).any(|s| s[..8] == format::HEADER_MAGIC);
            return Err(if magic {
                Error::Corrupt("neither header slot is intact".into())
            } else {
                Error::NotAStore("no header slot carries bob's magic".into())
            });
        }
        candidates.sort_by_key(|(header, _)| std::cmp::Reverse(header.generation));
        let mut first_error = None;
        for (header, slot) in candidates {
            if header.kind != A::KIND {
                return Err(Error::WrongKind { found: header.kind, expected: A::KIND });
            }
            match Self::load(&backend, header, slot, file_len, options) {
                Ok(state) => {
                    let mut store = state.into_store(backend, options);
                    store.fallback = first_error.map(|e: Error| e.to_string());
                    return Ok(store);
                }
                Err(e @ (Error::Corrupt(_) | Error::Alloc(_))) => {
                    first_error.get_or_insert(e);
                }
                Err(other) => return Err(other),
            }
        }
        Err(first_error.unwrap_or_else(|| Error::Corrupt("no loadable commit".into())))
    }

    fn load(
        backend: &B,
        header: Header,
        slot: usize,
        file_len: u64,
        options: StoreOptions,
    ) -> Result<Loaded<A>> {
        let root = header.root;
        let root_fits = root.offset >= HEADER_REGION
            && header.root_len <= root.len
            && root.checked_end().is_some_and(|end| end <= file_len);
        if !root_fits {
            return Err(Error::Corrupt(format!(
                "the root ({} bytes at {}) lies outside the file of {file_len} bytes",
                root.len, root.offset
            )));
        }
        let mut root_bytes = vec![0u8; header.root_len as usize];
        backend.read_at(&mut root_bytes, root.offset)?;
        if checksum(&root_bytes) != header.root_checksum {
            return Err(Error::Corrupt("the table root's checksum does not match".into()));
        }
        let pages = format::decode_root(&root_bytes, file_len)?;
        let capacity = pages.len() as u64 * ENTRIES_PER_PAGE;
        if header.next_id == 0 || header.next_id > capacity.max(1) || header.next_id > MAX_OBJECTS {
            return Err(Error::Corrupt(format!(
                "next id {} does not fit {} table pages",
                header.next_id,
                pages.len()
            )));
        }
        let mut table: Vec<Option<Slot>> = vec![None; header.next_id as usize];
        let mut extents = Vec::with_capacity(table.len() + pages.len() + 1);
        let mut metadata = vec![root];
        let mut past_next_id = None;
        let mut object_count = 0u64;
        for_each_page(backend, &pages, |index, page_bytes| {
            metadata.push(Extent::new(pages[index].map_or(0, |p| p.offset), PAGE_BYTES as u64));
            format::decode_page_with(index as u64, page_bytes, file_len, |i, entry| {
                let id = index * ENTRIES_PER_PAGE as usize + i;
                match table.get_mut(id) {
                    Some(cell) => *cell = Some(Slot { entry, born: 0 }),
                    None => past_next_id = Some(id),
                }
                object_count += 1;
                if entry.extent.len > 0 {
                    extents.push(entry.extent);
                }
            })
        })?;
        if let Some(id) = past_next_id {
            return Err(Error::Corrupt(format!("object {id} is past the next id")));
        }
        extents.append(&mut metadata);
        if object_count != header.object_count {
            return Err(Error::Corrupt(format!(
                "the header counts {} objects, the table {object_count}",
                header.object_count
            )));
        }
        let alloc = A::rebuild(HEADER_REGION, options.max_file_bytes, extents)
            .map_err(|e| Error::Corrupt(format!("extents in the table: {e}")))?;
        Ok(Loaded { header, slot, table, object_count, pages, alloc })
    }

    /// The generation being built: extents born in it are referenced by no commit.
    pub(crate) fn pending_generation(&self) -> u64 {
        self.header.generation + 1
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs a mutating step; an I/O error latches the store as failed.
    pub(crate) fn guarded<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let result = step(self);
        if let Err(e @ (Error::Io(_) | Error::Helpers(bob_io_helpers::Error::Io(_)))) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Makes everything done since the last commit durable (two syncs); see the crate docs.
    pub fn commit_now(&mut self) -> Result<()> {
        self.check_writable()?;
        if !self.dirty {
            return Ok(());
        }
        let result = self.commit_inner();
        if let Err(e) = &result {
            // Whatever failed, memory now disagrees with the file: trust only a reopen.
            self.failed = Some(e.to_string());
        }
        result
    }

    fn commit_inner(&mut self) -> Result<()> {
        // Trailing free ids are dropped, so the last id lives on a stored page and the next id
        // is bounded by the pages at open.
        while self.table.len() > 1
            && self.table.last() == Some(&None)
            && !self.reserved_ids.contains(&(self.table.len() as u64 - 1))
        {
            self.table.pop();
        }
        let next_id = self.table.len() as u64;
        self.free_ids.retain(|&id| id < next_id);
        self.pending_free_ids.retain(|&id| id < next_id);
        let mut freed_by_commit = Vec::new();
        let page_count = self.table.len().div_ceil(ENTRIES_PER_PAGE as usize);
        let highest_dirty = self.dirty_pages.last().map_or(0, |p| p as usize + 1);
        self.pages.resize(page_count.max(self.pages.len()).max(highest_dirty), None);
        // 1. Buffered objects, then dirty table pages, copy-on-write, into fresh space.
        self.flush_staged()?;
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        let dirty: Vec<u64> = self.dirty_pages.iter().collect();
        let mut low = self.metadata_low.then(|| FirstFit::new(self.alloc.claimable()));
        for page in dirty {
            let first = (page * ENTRIES_PER_PAGE) as usize;
            let last = (first + ENTRIES_PER_PAGE as usize).min(self.table.len());
            let entries: Vec<Option<Entry>> = self
                .table
                .get(first..last)
                .unwrap_or_default()
                .iter()
                .map(|s| s.map(|s| s.entry))
                .collect();
            if let Some(old) = self.pages[page as usize].take() {
                freed_by_commit.push(Extent::new(old.offset, PAGE_BYTES as u64));
            }
            if entries.iter().all(Option::is_none) {
                continue; // an empty page is not stored
            }
            let bytes = format::encode_page(page, &entries);
            let extent = self.allocate_metadata(&mut low, PAGE_BYTES as u64)?;
            self.pages[page as usize] =
                Some(PageRef { offset: extent.offset, checksum: checksum(&bytes) });
            writes.push((extent.offset, bytes));
        }
        while self.pages.last() == Some(&None) && self.pages.len() > page_count {
            self.pages.pop();
        }
        // 2. A new root naming every page.
        let root_bytes = format::encode_root(&self.pages);
        // Whole pages, so the root never shifts page-sized objects and table pages allocated
        // after it off page boundaries (a 4 KiB read then touches one page-cache page, not two).
        let root_alloc = (root_bytes.len() as u64).next_multiple_of(PAGE_BYTES as u64);
        let root = self.allocate_metadata(&mut low, root_alloc)?;
        if self.header.root.len > 0 {
            freed_by_commit.push(self.header.root);
        }
        writes.push((root.offset, root_bytes.clone()));
        let sections: Vec<Section<'_>> = writes.iter().map(|(o, b)| Section::new(*o, b)).collect();
        write_batched_sections(&self.backend, &sections)?;
        // Space allocated but never written (a block's tail, an empty object from
        // `allocate_run`) may lie past the file's end; open requires every referenced extent
        // inside the file, so the file covers the allocator's end before the barrier.
        if self.backend.len()? < self.alloc.file_end() {
            self.backend.set_len(self.alloc.file_end())?;
        }
        // 3. Barrier: every object and table byte of this generation is durable.
        self.backend.sync_data()?;
        // 4. The inactive header slot names the new state; barrier: the commit is durable.
        let header = Header {
            kind: A::KIND,
            generation: self.pending_generation(),
            root,
            root_len: root_bytes.len() as u64,
            root_checksum: checksum(&root_bytes),
            next_id: self.table.len() as u64,
            object_count: self.object_count,
            file_end: self.alloc.file_end(),
        };
        let slot = 1 - self.active_slot;
        self.backend.write_at(&header.encode(), SLOT_OFFSETS[slot])?;
        self.backend.sync_data()?;
        // 5. Durable: what the previous commit needed and this one does not is free now.
        self.header = header;
        self.active_slot = slot;
        for extent in self.pending_free.drain(..).chain(freed_by_commit) {
            self.alloc.free(extent).map_err(|e| Error::Corrupt(format!("releasing space: {e}")))?;
        }
        self.free_ids.extend(self.pending_free_ids.drain(..));
        self.dirty_pages.clear();
        self.dirty = false;
        // The space past the allocator's end is referenced by no commit: give it back.
        let end = self.alloc.file_end().max(HEADER_REGION);
        if self.backend.len()? > end {
            self.backend.set_len(end)?;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` (a fresh extent), or keeps them in the write buffer.
    pub(crate) fn stage_or_write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() > MAX_STAGED_OBJECT || bytes.len() > self.write_buffer_bytes {
            self.backend.write_at(bytes, offset)?;
            return Ok(());
        }
        if self.staged_bytes + bytes.len() > self.write_buffer_bytes {
            self.flush_staged()?;
        }
        self.staged_bytes += bytes.len();
        self.staged.insert(offset, bytes.to_vec());
        Ok(())
    }

    /// Writes every buffered object, coalescing neighbours into single writes.
    pub(crate) fn flush_staged(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let sections: Vec<Section<'_>> =
            self.staged.iter().map(|(&offset, bytes)| Section::new(offset, bytes)).collect();
        write_batched_sections(&self.backend, &sections)?;
        self.staged.clear();
        self.staged_bytes = 0;
        Ok(())
    }

    /// Drops the buffered bytes of the object at `offset`, if any, returning them.
    pub(crate) fn unstage(&mut self, offset: u64) -> Option<Vec<u8>> {
        let bytes = self.staged.remove(&offset)?;
        self.staged_bytes -= bytes.len();
        Some(bytes)
    }

    /// Writes the buffered bytes of the object at `offset` now, if any (before its extent is
    /// read from disk or rewritten in place).
    pub(crate) fn flush_one(&mut self, offset: u64) -> Result<()> {
        if let Some(bytes) = self.unstage(offset) {
            self.backend.write_at(&bytes, offset)?;
        }
        Ok(())
    }

    /// The buffered bytes of the object `entry` describes, if any (a batch buffers objects
    /// padded to their extents: the object is the first `entry.len` bytes).
    pub(crate) fn staged_at(&self, entry: &Entry) -> Option<&[u8]> {
        let bytes = self.staged.get(&entry.extent.offset)?;
        Some(&bytes[..(entry.len as usize).min(bytes.len())])
    }

    /// A fresh id: the lowest one freed by an earlier commit, or the next new one.
    pub(crate) fn take_id(&mut self) -> Result<ObjectId> {
        if let Some(id) = self.free_ids.pop_first() {
            return Ok(ObjectId(id));
        }
        let id = self.table.len() as u64;
        if id >= MAX_OBJECTS {
            return Err(Error::InvalidArgument(format!(
                "the store holds its maximum of {MAX_OBJECTS} objects"
            )));
        }
        self.table.push(None);
        Ok(ObjectId(id))
    }

    /// Space for `len` bytes (nothing for 0 bytes).
    pub(crate) fn reserve(&mut self, len: u64) -> Result<Extent> {
        if len == 0 {
            return Ok(Extent::new(0, 0));
        }
        Ok(self.alloc.allocate(len)?)
    }

    /// Space for a table page or the root: where the allocator chooses, or, while
    /// compacting, the lowest free extent that holds it (first fit), so the metadata moves
    /// down and the file can shrink past it.
    /// `low` is the free space as this commit began, built once per commit.
    fn allocate_metadata(
        &mut self,
        low: &mut Option<FirstFit>,
        len: u64,
    ) -> Result<bob_alloc::Extent> {
        if let Some(extent) = low.as_mut().and_then(|holes| holes.take(len, u64::MAX)) {
            self.alloc.claim(extent)?;
            return Ok(extent);
        }
        Ok(self.alloc.allocate(len)?)
    }

    /// Fresh objects for the extents of `run`, in order: empty, born in the pending
    /// generation.
    pub(crate) fn objects_for_run(&mut self, run: Run) -> Result<Vec<ObjectId>> {
        let born = self.pending_generation();
        let empty = checksum(&[]);
        let mut ids = Vec::with_capacity(run.count as usize);
        self.table.reserve(run.count as usize);
        for extent in run.extents() {
            let id = self.take_id()?;
            self.put(id, Entry { extent, len: 0, checksum: empty }, born);
            ids.push(id);
        }
        Ok(ids)
    }

    /// Space for `count` objects of `len` bytes laid end to end.
    pub(crate) fn reserve_run(&mut self, count: u64, len: u64) -> Result<Run> {
        Ok(self.alloc.allocate_run(count, len)?)
    }

    pub(crate) fn slot(&self, id: ObjectId) -> Result<Slot> {
        self.table.get(id.0 as usize).copied().flatten().ok_or(Error::NotFound(id))
    }

    /// Records `entry` as object `id`, born in the pending generation if `fresh`.
    pub(crate) fn put(&mut self, id: ObjectId, entry: Entry, born: u64) {
        let cell = &mut self.table[id.0 as usize];
        if cell.is_none() {
            self.object_count += 1;
        }
        *cell = Some(Slot { entry, born });
        self.dirty_pages.insert(format::page_of(id).0);
        self.dirty = true;
    }

    /// Gives back an extent no longer needed: at once if no commit references it, else after
    /// the next commit.
    pub(crate) fn release(&mut self, extent: Extent, born: u64) -> Result<()> {
        if extent.len == 0 {
            return Ok(());
        }
        if born == self.pending_generation() {
            self.alloc.free(extent).map_err(|e| Error::Corrupt(format!("releasing space: {e}")))?;
        } else {
            self.pending_free.push(extent);
        }
        Ok(())
    }

    /// Removes object `id` from the table; its id is reused after the next commit.
    pub(crate) fn remove(&mut self, id: ObjectId) -> Result<Slot> {
        let slot = self.slot(id)?;
        self.table[id.0 as usize] = None;
        self.object_count -= 1;
        self.dirty_pages.insert(format::page_of(id).0);
        self.dirty = true;
        if id.0 != 0 {
            self.pending_free_ids.push(id.0);
        }
        Ok(slot)
    }
}

/// Pages read per positioned read at open (1 MiB).
const PAGES_PER_READ: usize = 256;

/// Reads every present table page, checks its checksum and passes `(index, bytes)` to
/// `each`. Pages that lie end to end are read together, up to 1 MiB a read.
fn for_each_page<B: FileBackend>(
    backend: &B,
    pages: &[Option<PageRef>],
    mut each: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut order: Vec<(u64, usize, u64)> = pages
        .iter()
        .enumerate()
        .filter_map(|(index, page)| page.map(|p| (p.offset, index, p.checksum)))
        .collect();
    order.sort_unstable();
    let mut buffer = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len()
            && end - start < PAGES_PER_READ
            && order[end].0 == order[end - 1].0 + PAGE_BYTES as u64
        {
            end += 1;
        }
        buffer.resize((end - start) * PAGE_BYTES, 0);
        backend.read_at(&mut buffer, order[start].0)?;
        for (k, &(_, index, sum)) in order[start..end].iter().enumerate() {
            let bytes = &buffer[k * PAGE_BYTES..(k + 1) * PAGE_BYTES];
            if checksum(bytes) != sum {
                return Err(Error::Corrupt(format!("table page {index} fails its checksum")));
            }
            each(index, bytes)?;
        }
        start = end;
    }
    Ok(())
}

/// A commit read from disk, before it becomes a store.
struct Loaded<A> {
    header: Header,
    slot: usize,
    table: Vec<Option<Slot>>,
    object_count: u64,
    pages: Vec<Option<PageRef>>,
    alloc: A,
}

impl<A: SpaceAllocator> Loaded<A> {
    fn into_store<B: FileBackend>(self, backend: B, options: StoreOptions) -> Store<A, B> {
        let free_ids =
            (1..self.table.len() as u64).filter(|&id| self.table[id as usize].is_none()).collect();
        Store {
            backend,
            alloc: self.alloc,
            table: self.table,
            object_count: self.object_count,
            free_ids,
            pending_free_ids: Vec::new(),
            reserved_ids: BTreeSet::new(),
            pending_free: Vec::new(),
            dirty_pages: PageSet::default(),
            pages: self.pages,
            header: self.header,
            active_slot: self.slot,
            dirty: false,
            failed: None,
            fallback: None,
            staged: BTreeMap::new(),
            staged_bytes: 0,
            write_buffer_bytes: options.write_buffer_bytes,
            metadata_low: false,
        }
    }
}
