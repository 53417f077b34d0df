//! Opening a store (`docs/format.md`, "Open rules"): read each header slot alone, take the
//! newest intact one, load and check everything it names, and refuse, never fall back, when
//! an intact slot's commit fails its checks.

use std::io;

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, StreamingChecksum};

use super::{PAGE, Slot, Store, StoreOptions};
use crate::error::Part;
use crate::format::{
    self, ENTRIES_PER_PAGE, FORMAT_1_SLOT_OFFSETS, FORMAT_VERSION, HEADER_MAGIC, HEADER_REGION,
    Header, MAX_OBJECTS, MAX_ROOT_BYTES, PAGE_BYTES, PageRef, SLOT_BYTES, SLOT_OFFSETS,
};
use crate::journal::{Chain, Record};
use crate::space::SpaceAllocator;
use crate::table::{PageSlots, Table};
use crate::{Error, Result};

/// Generations stay below this (2^62: thousands of years of commits), so `generation + 1`
/// never overflows.
const MAX_GENERATION: u64 = 1 << 62;

/// Bytes read per positioned read while loading (1 MiB).
const READ_CHUNK: usize = 1 << 20;

/// What one header slot holds.
enum SlotState {
    Valid(Header),
    /// Torn or never written (its own checksum fails); `true` if it carries bob's magic.
    Invalid {
        magic: bool,
    },
    /// Its page could not be read.
    Unreadable(io::Error),
}

/// Which commit to open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Newest,
    /// The newest, read-only.
    NewestReadOnly,
    Previous,
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Opens a store on `backend`, recovering its last commit.
    ///
    /// Open is strict. A torn header slot (its own checksum fails: a crash during the header
    /// write) means the other slot holds the last commit, which is normal recovery. But when
    /// the newest intact slot names a commit that fails its checks (a damaged root or table
    /// page, extents that do not fit), the store does not silently open the older commit,
    /// whose space may already have been reused: it returns `NewestCommitDamaged` (or the
    /// damage itself when there is no older commit); [`open_previous_commit`](Self::open_previous_commit)
    /// opens the older one read-only. Options that do not fit the file are `OptionsMismatch`.
    /// Open first syncs the file, so a header a crashed process left in the page cache is
    /// durable before anything acts on it; a file sealed by a clean close is opened from the
    /// page cache, with no sync and no device reads (`docs/format.md`, "Open rules", 1).
    pub fn open_with(backend: B, options: StoreOptions) -> Result<Self> {
        Self::open_which(backend, options, Which::Newest)
    }

    /// Opens the commit before the newest, read-only (every write returns `ReadOnly`), to
    /// look at what it holds when the newest is damaged. Its objects may have been
    /// overwritten since; every read is still checked, so that shows as a checksum error,
    /// never as data.
    pub fn open_previous_commit(backend: B, options: StoreOptions) -> Result<Self> {
        Self::open_which(backend, options, Which::Previous)
    }

    /// Opens the store on `backend` as [`open_with`](Self::open_with) does, read-only: every
    /// write returns `ReadOnly`, and nothing is written to the backend, not even by `close`
    /// (a journal is replayed in memory; a record dropped because its data never reached the
    /// disk is dropped in memory only). See [`Store::open_read_only`] for a file.
    pub fn open_read_only_with(backend: B, options: StoreOptions) -> Result<Self> {
        Self::open_which(backend, options, Which::NewestReadOnly)
    }

    fn open_which(backend: B, options: StoreOptions, which: Which) -> Result<Self> {
        // Open's checks read from the device, their cached pages dropped first: pages a
        // memory map of the file holds (a backend an earlier store left mapped) cannot be
        // dropped, so the mapping goes until open is done (`from_parts` maps again).
        backend.map_reads(false);
        // A store sealed by a clean close is opened from what the page cache shows (rule 1):
        // its older slot's checkpoint was durable before the seal was written, nothing was
        // written after the seal, and a later session's first write is a checkpoint over
        // the sealed slot.
        let len = backend.len()?;
        let cached = match len {
            // Any error here is left to the full rules below, which read the device.
            len if which != Which::Previous && len >= HEADER_REGION => {
                read_slots(&backend, len).ok().filter(sealed_pair)
            }
            _ => None,
        };
        let sealed = cached.is_some();
        let (file_len, states) = match cached {
            Some(states) => (len, states),
            None => {
                backend.sync_data()?;
                // A header write that a failed sync dropped may still sit in the page cache,
                // marked clean: read the slots from the device. (Advisory: if the system
                // keeps the pages, the previous commit's space is still protected below.)
                let _ = backend.drop_cache(0, HEADER_REGION);
                let file_len = backend.len()?;
                if file_len < SLOT_BYTES as u64 {
                    return Err(Error::NotAStore(format!(
                        "the file is {file_len} bytes, shorter than a store header"
                    )));
                }
                (file_len, read_slots(&backend, file_len)?)
            }
        };
        let mut valid: Vec<(Header, usize)> = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                SlotState::Valid(h) => Some((*h, i)),
                _ => None,
            })
            .collect();
        if valid.is_empty() {
            return Err(no_valid_slot(&backend, states));
        }
        valid.sort_by_key(|(header, _)| std::cmp::Reverse(header.generation));
        if valid[0].0.generation >= MAX_GENERATION {
            return Err(Error::corrupt(
                Part::HeaderSlots,
                None,
                format!("generation {} is out of range", valid[0].0.generation),
            ));
        }
        if valid.len() == 2 && valid[0].0.generation == valid[1].0.generation {
            return Err(Error::corrupt(
                Part::HeaderSlots,
                None,
                format!("both slots claim generation {}", valid[0].0.generation),
            ));
        }
        for (header, _) in &valid {
            if header.kind != A::KIND {
                return Err(Error::WrongKind { found: header.kind, expected: A::KIND });
            }
        }
        let (header, slot) = match which {
            // Sealed: the older slot, the same state as the seal's and surely durable (the
            // seal's own sync may have failed, its page marked clean but still cached). The
            // session's first checkpoint then goes over the sealed slot, never over it.
            _ if sealed => valid[1],
            Which::Newest | Which::NewestReadOnly => valid[0],
            Which::Previous => *valid.get(1).ok_or_else(|| {
                Error::InvalidArgument("the file holds no intact older commit".into())
            })?,
        };
        // The other intact slot's commit, protected while the newest might not be durable.
        let previous = match which {
            _ if sealed => Some(valid[0].0),
            Which::Newest | Which::NewestReadOnly => valid.get(1).map(|(h, _)| *h),
            Which::Previous => None,
        };
        match Self::load(backend, header, slot, previous, file_len, options, sealed) {
            Ok(mut store) => {
                store.read_only = which != Which::Newest;
                if !store.read_only && store.dropped_records > 0 {
                    // The dropped record must never count later (its data could check out
                    // after this session writes there): its first page is zeroed, durably.
                    let at = store.journal.region.offset + store.journal.tail;
                    store.backend.write_at(&[0u8; PAGE_BYTES], at)?;
                    store.backend.sync_data()?;
                }
                Ok(store)
            }
            // A sealed pair holds one state twice: no older commit to look at.
            Err(e @ (Error::Corrupt { .. } | Error::Alloc(_)))
                if which != Which::Previous && valid.len() == 2 && !sealed =>
            {
                Err(Error::NewestCommitDamaged {
                    generation: header.generation,
                    source: Box::new(e),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the commit `header` names: its root and its journal, replayed over the table
    /// pages the journal touches. The rest (every other table page, the allocator, the space
    /// the previous commit still needs) waits for [`complete_open`](Self::complete_open): the
    /// first write, [`verify`](Self::verify), or now when `options.load_on_open` asks (or the
    /// size limit may not fit the file, which only all of it can tell).
    fn load(
        backend: B,
        header: Header,
        slot: usize,
        previous: Option<Header>,
        file_len: u64,
        options: StoreOptions,
        sealed: bool,
    ) -> Result<Self> {
        let data_start = check_journal_regions(&header, slot, file_len)?;
        let pages = read_root(&backend, &header, file_len)?;
        let mut table =
            Table::lazy(header.next_id, header.object_count, pages.iter().map(Option::is_some));
        // The commits since the checkpoint: its journal, replayed over the table (each record's
        // pages read first). The last record's data is checked: a record whose data did not
        // reach the disk was never acknowledged (its sync did not return), so it is dropped.
        let journal = super::journal::Journal::fresh(&header, slot);
        let bytes = read_journal(&backend, journal.region, header.salt, header.generation, sealed)?;
        let mut data_ok = |record: &Record| record_data_intact(&backend, record);
        let mut read_pages = |table: &mut Table, record: &Record| {
            for page in record_pages(table, record) {
                // Entries are checked against the file once every page is read: a record
                // may have freed an object's space and the file shrunk past it since the
                // checkpoint.
                read_page(&backend, &pages, table, page, header.next_id, u64::MAX)?;
            }
            Ok(())
        };
        let replayed = super::journal::replay(
            &bytes,
            journal,
            file_len,
            &mut table,
            &mut data_ok,
            &mut read_pages,
        )?;
        drop(bytes);
        // A cheap bound first: every extent lies inside the file (checked by `complete_open`),
        // so a file whose length leaves room for a commit fits the limit.
        let page_count = (pages.len() as u64).max(table.page_count());
        let commit_room = (table.dirty_page_count() as u64 + 2) * PAGE
            + (16 + 16 * (page_count + 1)).next_multiple_of(PAGE);
        let fits = file_len.next_multiple_of(PAGE) + commit_room <= options.max_file_bytes;
        let alloc = A::empty(data_start, options.max_file_bytes);
        let mut store = Self::from_parts(backend, alloc, table, pages, header, slot, options);
        store.room = file_len;
        store.journal = replayed.journal;
        store.dropped_records = replayed.dropped;
        store.checkpoint_due = true;
        store.deferred = Some(Box::new(super::Deferred { previous, file_len, commit_room }));
        if options.load_on_open || !fits {
            store.finish_load()?;
        }
        Ok(store)
    }

    /// Reads table page `page` if it is not read yet (a lazily opened store), checking it
    /// against the root; entries are checked against the file's length at open.
    pub(crate) fn read_table_page(&self, page: u64) -> Result<()> {
        let bound = self.deferred.as_ref().map_or(u64::MAX, |d| d.file_len);
        read_page(&self.backend, &self.pages, &self.table, page, self.header.next_id, bound)
            .map_err(|e| self.newest_damaged(e))
    }

    /// Damage to the newest commit found after a lazy open is reported as a full open would
    /// have: `NewestCommitDamaged` when an older intact commit exists.
    fn newest_damaged(&self, e: Error) -> Error {
        match e {
            e @ (Error::Corrupt { .. } | Error::Alloc(_))
                if self.deferred.as_ref().is_some_and(|d| d.previous.is_some()) =>
            {
                Error::NewestCommitDamaged {
                    generation: self.header.generation,
                    source: Box::new(e),
                }
            }
            e => e,
        }
    }

    /// Reads every table page not read yet, coalescing neighbours (up to 1 MiB a read).
    pub(crate) fn read_all_table_pages(&self) -> Result<()> {
        let bound = self.deferred.as_ref().map_or(u64::MAX, |d| d.file_len);
        let mut wanted = vec![None; self.pages.len()];
        for page in self.table.unread_pages() {
            wanted[page as usize] = self.pages[page as usize];
        }
        let next_id = self.header.next_id;
        for_each_page(&self.backend, &wanted, |index, bytes| {
            self.table.fill(index as u64, decode_slots(index as u64, bytes, next_id, bound)?);
            Ok(())
        })
        .map_err(|e| self.newest_damaged(e))
    }

    /// Completes a lazy open now (the first write does it otherwise; see
    /// [`StoreOptions::load_on_open`]): reads every table page not read yet, checks the object
    /// count against the header and journal and every entry against the file, derives the
    /// free ids, protects the space the previous commit still needs, and rebuilds the
    /// allocator from the live extents. Damage found here is what a full open reports
    /// (`NewestCommitDamaged` when an older intact commit exists) and latches the store: it
    /// refuses writes; reads go on, each checked. Does nothing on a store already complete.
    pub fn complete_open(&mut self) -> Result<()> {
        if self.deferred.is_none() {
            return Ok(());
        }
        self.finish_load().inspect_err(|e| self.fail(e.to_string()))
    }

    fn finish_load(&mut self) -> Result<()> {
        let Some(deferred) = self.deferred.as_deref().copied() else { return Ok(()) };
        // The previous commit's check reads from the device (cached pages dropped first),
        // which a memory map would defeat: `pread` meanwhile.
        if self.mapped_reads {
            self.backend.map_reads(false);
        }
        let result = self.finish_load_inner(&deferred);
        if self.mapped_reads {
            self.backend.map_reads(true);
        }
        match result {
            Ok(()) => {
                self.deferred = None;
                Ok(())
            }
            Err(e) => Err(self.newest_damaged(e)),
        }
    }

    fn finish_load_inner(&mut self, deferred: &super::Deferred) -> Result<()> {
        self.read_all_table_pages()?;
        let file_len = deferred.file_len;
        let counted = self.table.counted_objects();
        if counted != self.table.object_count() {
            return Err(Error::corrupt(
                Part::HeaderSlots,
                Some(SLOT_OFFSETS[self.active_slot]),
                format!(
                    "the header and journal count {} objects, the table {counted}",
                    self.table.object_count()
                ),
            ));
        }
        let (alloc, placement, protected) = self.derive_space(deferred)?;
        self.table.loaded();
        self.alloc = alloc;
        self.placement = placement;
        self.pending_free_bytes = protected.iter().map(|e| e.len).sum();
        self.pending_free = protected;
        debug_assert_eq!(self.room, file_len);
        Ok(())
    }

    /// The allocator and page placement the live extents of the opened commit (every table
    /// page read) imply, and the extents of the previous commit to protect until a commit
    /// made after this open is durable; an entry outside the file or extents that overlap
    /// are corruption.
    pub(crate) fn derive_space(
        &self,
        deferred: &super::Deferred,
    ) -> Result<(A, super::Placement, Vec<Extent>)> {
        let file_len = deferred.file_len;
        for (id, slot) in self.table.iter() {
            format::check_entry(&slot.entry, file_len)
                .map_err(|why| Error::corrupt(Part::Space, None, format!("object {id}: {why}")))?;
        }
        let mut extents: Vec<Extent> =
            self.table.iter().map(|(_, s)| s.entry.extent).filter(|e| e.len > 0).collect();
        extents.push(self.header.root);
        extents.extend(self.pages.iter().flatten().map(|p| Extent::new(p.offset, PAGE)));
        // The newest header may be one a failed sync dropped (the page cache still shows it,
        // the disk does not): then the previous commit is the durable one, and its space must
        // not be reused before a commit made after this open is durable.
        let mut protected = deferred
            .previous
            .map(|older| {
                previous_only_extents(
                    &self.backend,
                    &older,
                    1 - self.active_slot,
                    &self.pages,
                    &self.table,
                    file_len,
                )
            })
            .unwrap_or_default();
        if overlaps_any(&mut extents, &protected) {
            protected.clear(); // the older commit is not intact: nothing of it to protect
        }
        let end = extents
            .iter()
            .chain(&protected)
            .map(|e| e.offset + e.len)
            .max()
            .unwrap_or(self.data_start);
        // Room for one commit past what the file uses. The first commit after an open is a
        // checkpoint: every page the journal's records changed, one more, and a root.
        if end.next_multiple_of(PAGE) + deferred.commit_room > self.limit {
            return Err(Error::OptionsMismatch(format!(
                "the file uses {end} bytes; a size limit of {} bytes leaves no room to commit",
                self.limit
            )));
        }
        let mut placement = super::Placement::default();
        placement.reserve(extents.len() + protected.len());
        for extent in extents.iter().chain(&protected) {
            placement.committed(*extent);
        }
        let mut all = extents;
        all.extend_from_slice(&protected);
        let alloc = A::rebuild(self.data_start, self.limit, all).map_err(|e| {
            Error::corrupt(Part::Space, None, format!("the table's extents do not fit: {e}"))
        })?;
        Ok((alloc, placement, protected))
    }
}

/// The table pages replaying `record` changes or checks that are not read yet: those of its
/// puts and removes and, when it lowers the next id, every page past the new end (no object
/// may be left there).
fn record_pages(table: &Table, record: &Record) -> Vec<u64> {
    let per_page = ENTRIES_PER_PAGE;
    let ids = record.puts.iter().map(|(id, _)| *id).chain(record.removes.iter().copied());
    let mut pages: Vec<u64> = ids.map(|id| id / per_page).filter(|&p| table.is_unread(p)).collect();
    if record.next_id < table.next_id() {
        let past = record.next_id / per_page..table.page_count();
        pages.extend(past.filter(|&p| table.is_unread(p)));
    }
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// Reads table page `page` into `table` if it is not read yet: its 4 KiB from where the root
/// says, checked against the root's checksum, entries past `next_id` refused, extents bounded
/// by `bound`.
fn read_page<B: FileBackend>(
    backend: &B,
    pages: &[Option<PageRef>],
    table: &Table,
    page: u64,
    next_id: u64,
    bound: u64,
) -> Result<()> {
    if !table.is_unread(page) {
        return Ok(());
    }
    let Some(Some(at)) = pages.get(page as usize) else {
        table.fill(page, None);
        return Ok(());
    };
    let mut bytes = vec![0u8; PAGE_BYTES];
    backend.read_at(&mut bytes, at.offset)?;
    if bob_io_helpers::checksum(&bytes) != at.checksum {
        return Err(Error::corrupt(
            Part::TablePage(page),
            Some(at.offset),
            "its checksum does not match the root's",
        ));
    }
    table.fill(page, decode_slots(page, &bytes, next_id, bound)?);
    Ok(())
}

/// The slots of table page `index` (`None` when it holds no object).
fn decode_slots(
    index: u64,
    bytes: &[u8],
    next_id: u64,
    bound: u64,
) -> Result<Option<Box<PageSlots>>> {
    let mut slots: Box<PageSlots> = Box::new([None; ENTRIES_PER_PAGE as usize]);
    let mut any = false;
    let mut past = None;
    format::decode_page_with(index, bytes, bound, |i, entry| {
        let id = index * ENTRIES_PER_PAGE + i as u64;
        if id >= next_id {
            past.get_or_insert(id);
        }
        slots[i] = Some(Slot { entry, born: 0 });
        any = true;
    })?;
    if let Some(id) = past {
        return Err(Error::corrupt(
            Part::TablePage(index),
            None,
            format!("object {id} is past the next id {next_id}"),
        ));
    }
    Ok(any.then_some(slots))
}

/// Checks the journal regions a header names: two regions of whole pages, between 4 pages
/// and 8 MiB each, right after the header slots, inside the file. Returns where the
/// allocator's space begins.
fn check_journal_regions(header: &Header, slot: usize, file_len: u64) -> Result<u64> {
    let len = header.journal_len;
    let sane = len % PAGE == 0
        && (4 * PAGE..=super::journal::MAX_JOURNAL_BYTES).contains(&len)
        && header.journal == [HEADER_REGION, HEADER_REGION + len]
        && HEADER_REGION + 2 * len <= file_len;
    if !sane {
        return Err(Error::corrupt(
            Part::HeaderSlots,
            Some(SLOT_OFFSETS[slot]),
            format!(
                "journal regions at {:?} of {len} bytes do not fit a file of {file_len} bytes",
                header.journal
            ),
        ));
    }
    Ok(HEADER_REGION + 2 * len)
}

/// Reads the journal region of the checkpoint of `generation` salted `salt`. The pages its
/// chain of records takes (and the page after) are read from the device, their cached pages
/// dropped first, like the header slots', so a record a failed sync never wrote is not
/// trusted; the rest of the region, only searched for records that should not be there, may
/// come from the page cache (which shows every write the device holds and perhaps more: a
/// record seen only there makes open refuse, never roll back). A store closed cleanly has no
/// records, so open reads one journal page from the device.
fn read_journal<B: FileBackend>(
    backend: &B,
    region: Extent,
    salt: u64,
    generation: u64,
    sealed: bool,
) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; region.len as usize];
    backend.read_at(&mut bytes, region.offset)?;
    let mut chain = Chain::new(&bytes, salt, generation);
    let broken = chain.by_ref().any(|item| item.is_err());
    if sealed && !broken && chain.end == 0 {
        // A sealed checkpoint's journal is empty, and nothing later writes it while the
        // slot is the newest: the cache shows what the device holds.
        return Ok(bytes);
    }
    let device = if broken { bytes.len() } else { (chain.end + PAGE_BYTES).min(bytes.len()) };
    let _ = backend.drop_cache(region.offset, device as u64);
    backend.read_at(&mut bytes[..device], region.offset)?;
    Ok(bytes)
}

/// Whether every object `record` wrote holds the bytes its checksum names (read from the
/// device, its cached pages dropped first).
fn record_data_intact<B: FileBackend>(backend: &B, record: &Record) -> Result<bool> {
    let mut buffer = Vec::new();
    for (_, entry) in &record.puts {
        let _ = backend.drop_cache(entry.extent.offset, entry.extent.len);
        // Streamed in chunks of at most 1 MiB: an object of any size costs no more memory.
        let mut sum = StreamingChecksum::new();
        let mut at = 0;
        while at < entry.len {
            let n = ((entry.len - at) as usize).min(READ_CHUNK);
            buffer.resize(n, 0);
            backend.read_at(&mut buffer, entry.extent.offset + at)?;
            sum.update(&buffer);
            at += n as u64;
        }
        if sum.finish() != entry.checksum {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether any of `others` (sorted) overlaps any of `extents` (sorted here) or another.
fn overlaps_any(extents: &mut [Extent], others: &[Extent]) -> bool {
    extents.sort_unstable();
    let hits = |e: &Extent| {
        let at = extents.partition_point(|x| x.offset + x.len <= e.offset);
        extents.get(at).is_some_and(|x| x.offset < e.offset + e.len)
    };
    others.iter().any(hits) || others.windows(2).any(|w| w[0].offset + w[0].len > w[1].offset)
}

/// The extents the commit `older` references and the newest does not (its table pages and root
/// where they differ, and its objects' extents in the state its journal ends in), when they are
/// intact; empty when the older commit cannot be read (then its space was legitimately reused,
/// after the newest was durable, or it is damaged, and either way nothing of it can be
/// protected).
///
/// Only the older commit's *final* state is protected: an extent one of its records wrote and a
/// later record of the same journal replaced was freed and may since hold another object of that
/// journal, and protecting both would overlap and protect nothing.
fn previous_only_extents<B: FileBackend>(
    backend: &B,
    older: &Header,
    older_slot: usize,
    newest_pages: &[Option<PageRef>],
    newest: &Table,
    file_len: u64,
) -> Vec<Extent> {
    use std::collections::HashMap;
    let Ok(pages) = read_root(backend, older, file_len) else { return Vec::new() };
    let changed: Vec<Option<PageRef>> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| page.filter(|p| newest_pages.get(i).copied().flatten() != Some(*p)))
        .collect();
    let mut only = vec![older.root];
    // The older state of every id on a changed page or touched by the older journal (`None`:
    // no object); ids elsewhere hold what the newest checkpoint holds.
    let mut state: HashMap<u64, Option<Extent>> = HashMap::new();
    let read = for_each_page(backend, &changed, |index, page_bytes| {
        only.push(Extent::new(changed[index].map_or(0, |p| p.offset), PAGE));
        format::decode_page_with(index as u64, page_bytes, file_len, |i, entry| {
            let id = index as u64 * ENTRIES_PER_PAGE + i as u64;
            state.insert(id, Some(entry.extent));
        })
    });
    if read.is_err() {
        return Vec::new();
    }
    // The older journal's records, in order, as open would replay them (its region is never
    // written while the newest checkpoint's journal is in use): the chain up to its first
    // break, the last record dropped when its data is not on the device.
    let region = older.journal_region(older_slot);
    let inside = region.offset.checked_add(region.len).is_some_and(|end| end <= file_len);
    if region.len <= super::journal::MAX_JOURNAL_BYTES && inside {
        if let Ok(bytes) = read_journal(backend, region, older.salt, older.generation, false) {
            let mut records: Vec<Record> = Chain::new(&bytes, older.salt, older.generation)
                .map_while(|item| item.ok().map(|(record, _, _)| record))
                .collect();
            if let Some(last) = records.last() {
                if last.fits(file_len).is_err()
                    || !record_data_intact(backend, last).unwrap_or(false)
                {
                    records.pop();
                }
            }
            for record in &records {
                for &id in &record.removes {
                    state.insert(id, None);
                }
                for (id, entry) in &record.puts {
                    state.insert(*id, Some(entry.extent));
                }
            }
        }
    }
    let differs = |id: u64, extent: Extent| {
        extent.len > 0 && newest.at(id).is_none_or(|slot| slot.entry.extent != extent)
    };
    only.extend(state.into_iter().filter_map(|(id, extent)| extent.filter(|e| differs(id, *e))));
    only.sort_unstable();
    only.dedup();
    only
}

/// Reads and decodes both header slots: with one read of their two pages, or, when that
/// fails, each alone, so damage to one slot's page never stops the other from being read.
fn read_slots<B: FileBackend>(backend: &B, file_len: u64) -> Result<[SlotState; 2]> {
    if file_len >= HEADER_REGION {
        let mut bytes = vec![0u8; HEADER_REGION as usize];
        if backend.read_at(&mut bytes, 0).is_ok() {
            let decode = |index: usize| -> Result<SlotState> {
                let at = SLOT_OFFSETS[index] as usize;
                let slot = &bytes[at..at + SLOT_BYTES];
                Ok(match Header::decode(slot)? {
                    Some(header) => SlotState::Valid(header),
                    None => SlotState::Invalid { magic: slot[..8] == HEADER_MAGIC },
                })
            };
            return Ok([decode(0)?, decode(1)?]);
        }
    }
    Ok([read_slot(backend, 0, file_len)?, read_slot(backend, 1, file_len)?])
}

/// Whether both slots are intact, the newer one sealed (see `Store::seal`) and naming the
/// older one's state one generation later: open may then trust what the page cache shows.
fn sealed_pair(states: &[SlotState; 2]) -> bool {
    let [SlotState::Valid(a), SlotState::Valid(b)] = states else { return false };
    let (seal, older) = if a.generation > b.generation { (a, b) } else { (b, a) };
    seal.sealed
        && !older.sealed
        && older.generation.checked_add(1) == Some(seal.generation)
        && Header { generation: older.generation, salt: older.salt, sealed: false, ..*seal }
            == *older
}

/// Reads and decodes header slot `index` alone (its own page), so damage to one slot's page
/// never stops the other from being read.
fn read_slot<B: FileBackend>(backend: &B, index: usize, file_len: u64) -> Result<SlotState> {
    let offset = SLOT_OFFSETS[index];
    if offset + SLOT_BYTES as u64 > file_len {
        return Ok(SlotState::Invalid { magic: false });
    }
    let mut bytes = vec![0u8; SLOT_BYTES];
    if let Err(e) = backend.read_at(&mut bytes, offset) {
        return Ok(SlotState::Unreadable(e));
    }
    Ok(match Header::decode(&bytes)? {
        Some(header) => SlotState::Valid(header),
        None => SlotState::Invalid { magic: bytes[..8] == HEADER_MAGIC },
    })
}

/// The error when neither slot is intact: format 1's second slot (a version this build does
/// not read), an I/O error, damage, or not a store at all.
fn no_valid_slot<B: FileBackend>(backend: &B, states: [SlotState; 2]) -> Error {
    let mut old = [0u8; 88];
    if backend.read_at(&mut old, FORMAT_1_SLOT_OFFSETS[1]).is_ok() {
        if let Err(e @ Error::UnsupportedVersion { .. }) = Header::decode(&old) {
            return e;
        }
        if old[..8] == HEADER_MAGIC && u16::from_le_bytes([old[8], old[9]]) == 1 {
            return Error::UnsupportedVersion { found: 1, supported: FORMAT_VERSION };
        }
    }
    let mut magic = false;
    let mut io_error = None;
    for state in states {
        match state {
            SlotState::Invalid { magic: m } => magic |= m,
            SlotState::Unreadable(e) => io_error = Some(e),
            SlotState::Valid(_) => {}
        }
    }
    match (io_error, magic) {
        (Some(e), _) => Error::Io(e),
        (None, true) => Error::corrupt(Part::HeaderSlots, Some(0), "neither header slot is intact"),
        (None, false) => Error::NotAStore("no header slot carries bob's magic".into()),
    }
}

/// Reads, checks and decodes the root `header` names. Its length is bounded by the format
/// (a root of the pages `next_id` needs) and the file before anything is read, and a root
/// longer than 1 MiB has its checksum checked on a streaming pass before it is allocated.
fn read_root<B: FileBackend>(
    backend: &B,
    header: &Header,
    file_len: u64,
) -> Result<Vec<Option<PageRef>>> {
    let root = header.root;
    let corrupt = |reason: String| Error::corrupt(Part::Root, Some(root.offset), reason);
    if header.next_id == 0 || header.next_id > MAX_OBJECTS {
        return Err(corrupt(format!("next id {} is out of range", header.next_id)));
    }
    let page_count = header.next_id.div_ceil(ENTRIES_PER_PAGE);
    let expected_len = 16 + 16 * page_count;
    let fits = root.offset >= HEADER_REGION
        && header.root_len == expected_len
        && header.root_len <= MAX_ROOT_BYTES
        && header.root_len <= root.len
        && root.checked_end().is_some_and(|end| end <= file_len);
    if !fits {
        return Err(corrupt(format!(
            "a root of {} bytes ({} allocated) for {page_count} pages does not fit the file of \
             {file_len} bytes",
            header.root_len, root.len
        )));
    }
    // A root of up to 1 MiB is read once; a longer one is checked on a streaming pass first,
    // so a crafted length costs reads, not memory, until its checksum holds.
    if header.root_len > READ_CHUNK as u64 {
        let mut sum = StreamingChecksum::new();
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut at = 0;
        while at < header.root_len {
            let n = ((header.root_len - at) as usize).min(buffer.len());
            backend.read_at(&mut buffer[..n], root.offset + at)?;
            sum.update(&buffer[..n]);
            at += n as u64;
        }
        if sum.finish() != header.root_checksum {
            return Err(corrupt("its checksum does not match the header's".into()));
        }
    }
    let mut bytes = vec![0u8; header.root_len as usize];
    backend.read_at(&mut bytes, root.offset)?;
    if bob_io_helpers::checksum(&bytes) != header.root_checksum {
        return Err(corrupt("its checksum does not match the header's".into()));
    }
    let pages = format::decode_root(&bytes, file_len)?;
    if pages.len() as u64 != page_count {
        return Err(corrupt(format!("it names {} pages, not {page_count}", pages.len())));
    }
    Ok(pages)
}

/// Pages read per positioned read at open (1 MiB).
const PAGES_PER_READ: usize = READ_CHUNK / PAGE_BYTES;

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
            && order[end].0 == order[end - 1].0 + PAGE
        {
            end += 1;
        }
        buffer.resize((end - start) * PAGE_BYTES, 0);
        backend.read_at(&mut buffer, order[start].0)?;
        for (k, &(offset, index, sum)) in order[start..end].iter().enumerate() {
            let bytes = &buffer[k * PAGE_BYTES..(k + 1) * PAGE_BYTES];
            if bob_io_helpers::checksum(bytes) != sum {
                return Err(Error::corrupt(
                    Part::TablePage(index as u64),
                    Some(offset),
                    "its checksum does not match the root's",
                ));
            }
            each(index, bytes)?;
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bob_alloc::BasicAllocator;
    use bob_io_helpers::checksum;
    use bob_io_helpers::testing::SimDisk;

    use super::*;
    use crate::ObjectId;
    use crate::format::Entry;

    /// Finding 11: a 1 MiB file whose root lists 65,000 pages, all absent but the last, opened
    /// at 550 MB (table, extent list and free ids sized from `next_id`). Now the table keeps
    /// only the one page that holds an object and the free ids as a few ranges.
    #[test]
    fn regression_a_root_of_absent_pages_opens_in_memory_proportional_to_the_file() {
        let page_count = 65_000u64;
        let next_id = page_count * ENTRIES_PER_PAGE;
        let journal_len = 4 * PAGE;
        let root_at = HEADER_REGION + 2 * journal_len;
        let mut pages = vec![None; page_count as usize];
        let root_len = 16 + 16 * page_count;
        let page_at = (root_at + root_len).next_multiple_of(PAGE);
        let data_at = page_at + PAGE;
        let data = b"the only object";
        let mut entries = vec![None; ENTRIES_PER_PAGE as usize];
        let entry = Entry {
            extent: Extent::new(data_at, data.len() as u64),
            len: data.len() as u64,
            checksum: checksum(data),
            tag: 0,
        };
        entries[ENTRIES_PER_PAGE as usize - 1] = Some(entry);
        let page = format::encode_page(page_count - 1, &entries);
        pages[page_count as usize - 1] =
            Some(PageRef { offset: page_at, checksum: checksum(&page) });
        let root = format::encode_root(&pages);
        let header = Header {
            version: crate::format::FORMAT_VERSION,
            kind: 1,
            generation: 1,
            root: Extent::new(root_at, (root.len() as u64).next_multiple_of(PAGE)),
            root_len: root.len() as u64,
            root_checksum: checksum(&root),
            next_id,
            object_count: 1,
            file_end: data_at + PAGE,
            journal: [HEADER_REGION, HEADER_REGION + journal_len],
            journal_len,
            salt: 7,
            sealed: false,
        };
        let mut image = vec![0u8; (data_at + PAGE) as usize];
        image[..SLOT_BYTES].copy_from_slice(&header.encode());
        image[root_at as usize..][..root.len()].copy_from_slice(&root);
        image[page_at as usize..][..PAGE_BYTES].copy_from_slice(&page);
        image[data_at as usize..][..data.len()].copy_from_slice(data);
        assert!(image.len() < 2 << 20);
        let store = Store::<BasicAllocator, SimDisk>::open_with(
            SimDisk::from_image(image),
            StoreOptions::default(),
        )
        .unwrap();
        let id = ObjectId(next_id - 1);
        assert_eq!(store.ids().unwrap(), vec![id]);
        assert_eq!(store.table.allocated_pages(), 1);
        assert!(store.table.free_ranges() <= 2);
        use crate::Storer;
        assert_eq!(store.read_bytes_from_obj(id).unwrap(), data);
    }
}
