//! `verify` and `compact`.

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, checksum};

use super::{Purpose, Store};
use crate::error::Part;
use crate::format::{self, ENTRIES_PER_PAGE, Entry, Header, PAGE_BYTES, SLOT_BYTES, SLOT_OFFSETS};
use crate::space::SpaceAllocator;
use crate::{Error, ObjectId, Result};

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects checked (every byte read, checksum compared).
    pub objects: u64,
    /// Bytes of object data checked.
    pub object_bytes: u64,
    /// Table pages of the last checkpoint checked.
    pub table_pages: u64,
    /// Journal records since that checkpoint checked.
    pub journal_records: u64,
    /// The file's length.
    pub file_len: u64,
    /// Each problem found, as a sentence; empty when the store is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Objects moved toward the start of the file.
    pub moved: u64,
    /// The file's length before.
    pub file_len_before: u64,
    /// The file's length after.
    pub file_len_after: u64,
}

/// Compaction passes at most; each moves what fits into holes below it.
const MAX_COMPACT_PASSES: usize = 8;

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Checks the whole store: the header slot of the last commit, its root and every table
    /// page (checksums and structure), every object's bytes against its checksum, and the
    /// allocator against the live extents (no overlap, no leak). Corruption is reported in
    /// the report; only an I/O error is an `Err`.
    ///
    /// On a lazily opened store (see [`StoreOptions::load_on_open`](super::StoreOptions))
    /// it reads every table page not read yet and checks what the first write would check.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport { file_len: self.backend.len()?, ..VerifyReport::default() };
        if self.read_all_table_pages().is_err() {
            // Page by page, to report each damaged one (an I/O error is an error).
            for page in self.table.unread_pages() {
                match self.read_table_page(page) {
                    Err(Error::Io(e)) => return Err(Error::Io(e)),
                    Err(e) => report.problems.push(e.to_string()),
                    Ok(()) => {}
                }
            }
        }
        self.verify_metadata(&mut report)?;
        for (id, slot) in self.table.iter() {
            let bytes = match self.staged_at(&slot.entry) {
                Some(staged) => staged.to_vec(),
                None => {
                    let mut bytes = vec![0u8; slot.entry.len as usize];
                    if !bytes.is_empty() {
                        self.backend.read_at(&mut bytes, slot.entry.extent.offset)?;
                    }
                    bytes
                }
            };
            report.objects += 1;
            report.object_bytes += slot.entry.len;
            let computed = checksum(&bytes);
            if computed != slot.entry.checksum {
                report.problems.push(
                    Error::ChecksumMismatch { id, stored: slot.entry.checksum, computed }
                        .to_string(),
                );
            }
        }
        self.verify_space(&mut report);
        Ok(report)
    }

    fn verify_metadata(&self, report: &mut VerifyReport) -> Result<()> {
        let mut slot = [0u8; SLOT_BYTES];
        self.backend.read_at(&mut slot, SLOT_OFFSETS[self.active_slot])?;
        if Header::decode(&slot).ok().flatten() != Some(self.header) {
            report
                .problems
                .push(format!("header slot {} does not hold the last commit", self.active_slot));
        }
        let root = self.header.root;
        let mut root_bytes = vec![0u8; self.header.root_len as usize];
        self.backend.read_at(&mut root_bytes, root.offset)?;
        if checksum(&root_bytes) != self.header.root_checksum {
            report.problems.push("the table root fails its checksum".into());
        } else if format::decode_root(&root_bytes, report.file_len).ok().as_ref()
            != Some(&self.pages)
        {
            report.problems.push("the table root does not match the pages in memory".into());
        }
        let mut page_bytes = vec![0u8; PAGE_BYTES];
        for (index, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            report.table_pages += 1;
            self.backend.read_at(&mut page_bytes, page.offset)?;
            if checksum(&page_bytes) != page.checksum {
                report.problems.push(format!("table page {index} fails its checksum"));
                continue;
            }
            // A page changed since the checkpoint may name space a journal record freed and
            // the file has since given back: only its structure is checked.
            let bound = if self.table.is_dirty(index as u64) { u64::MAX } else { report.file_len };
            match format::decode_page(index as u64, &page_bytes, bound) {
                Err(e) => report.problems.push(e.to_string()),
                // A page changed since the checkpoint is stale on disk by design (the journal
                // holds the change); the others must match memory.
                Ok(entries) if !self.table.is_dirty(index as u64) => {
                    for (i, entry) in entries.iter().enumerate() {
                        let id = index as u64 * ENTRIES_PER_PAGE + i as u64;
                        let in_memory = self.table.lookup_index(id).ok().flatten().map(|s| s.entry);
                        if *entry != in_memory {
                            report
                                .problems
                                .push(format!("object {id}'s committed entry differs from memory"));
                        }
                    }
                }
                Ok(_) => {}
            }
        }
        self.verify_journal(report)
    }

    /// The journal must hold exactly the records this handle knows of, chained, up to its
    /// tail.
    fn verify_journal(&self, report: &mut VerifyReport) -> Result<()> {
        let region = self.journal.region;
        let mut bytes = vec![0u8; self.journal.tail as usize];
        self.backend.read_at(&mut bytes, region.offset)?;
        let mut chain =
            crate::journal::Chain::new(&bytes, self.journal.salt, self.header.generation);
        if let Some(Err(e)) = chain.find(Result::is_err) {
            report.problems.push(e.to_string());
            return Ok(());
        }
        let (generation, previous) = (chain.generation, chain.last);
        report.journal_records = self.journal.records;
        if generation != self.journal.generation || previous != self.journal.last {
            report.problems.push(format!(
                "the journal's records end at generation {generation}, the last commit is {}",
                self.journal.generation
            ));
        }
        Ok(())
    }

    /// The allocator's live extents must be exactly the objects, the committed table pages
    /// and root, and the space waiting for the next commit to be released.
    fn verify_space(&self, report: &mut VerifyReport) {
        if let Some(deferred) = self.deferred.as_deref() {
            // A lazy open not completed: no allocator yet; check what completing it would
            // (once every table page could be read: the damaged ones are reported already).
            if self.table.unread_pages().is_empty() {
                if let Err(e) = self.derive_space(deferred) {
                    report.problems.push(e.to_string());
                }
                let counted = self.table.counted_objects();
                if counted != self.table.object_count() {
                    report.problems.push(format!(
                        "the header and journal count {} objects, the table {counted}",
                        self.table.object_count()
                    ));
                }
            }
            return;
        }
        if let Err(e) = self.alloc.verify() {
            report.problems.push(e.to_string());
        }
        let mut expected: Vec<Extent> = self
            .table
            .iter()
            .map(|(_, s)| s.entry.extent)
            .filter(|e| e.len > 0)
            .chain(self.pages.iter().flatten().map(|p| Extent::new(p.offset, PAGE_BYTES as u64)))
            .chain(std::iter::once(self.header.root))
            .chain(self.pending_free.iter().copied())
            .chain(self.committing.iter().flat_map(|c| c.releasing.iter().copied()))
            .chain(self.in_flight.values().map(|(e, _)| *e))
            .chain(self.placement.held_extents())
            .collect();
        expected.sort_unstable();
        if let Some(pair) = expected.windows(2).find(|w| w[0].overlaps(&w[1])) {
            report.problems.push(format!("extents overlap: {:?} and {:?}", pair[0], pair[1]));
        }
        let pending: u64 = self.pending_free.iter().map(|e| e.len).sum();
        if pending != self.pending_free_bytes {
            report.problems.push(format!(
                "{pending} bytes wait for the next commit to free them, {} counted",
                self.pending_free_bytes
            ));
        }
        let live = self.alloc.live_extents();
        if live != expected {
            report.problems.push(format!(
                "the allocator holds {} live extents, the store references {}",
                live.len(),
                expected.len()
            ));
        }
        // The allocator's end may pass the file's (a block's unwritten slots, which the next
        // commit covers), but no object's bytes and no committed table page or root may.
        let object_data = self
            .table
            .iter()
            .map(|(_, s)| s)
            .filter(|s| self.staged_at(&s.entry).is_none())
            .map(|s| Extent::new(s.entry.extent.offset, s.entry.len));
        let metadata =
            self.pages.iter().flatten().map(|p| Extent::new(p.offset, PAGE_BYTES as u64));
        let mut referenced = object_data.chain(metadata).chain(std::iter::once(self.header.root));
        if let Some(outside) = referenced.find(|e| e.end() > report.file_len) {
            report.problems.push(format!(
                "an extent at {} ({} bytes) ends past the file's {} bytes",
                outside.offset, outside.len, report.file_len
            ));
        }
    }

    /// Moves live objects into holes nearer the start of the file and shrinks it; ids do
    /// not change. Commits first and after each pass (so everything it moved is durable). A
    /// file with at most a thirty-second of it free (or 16 pages) is left as it is: moving
    /// every object would give back next to nothing.
    pub fn compact(&mut self) -> Result<CompactReport> {
        self.ready_to_write()?;
        let result = self.compact_inner();
        if let Err(e) = &result {
            if e.latches() {
                self.fail(e.to_string());
            }
        }
        result
    }

    fn compact_inner(&mut self) -> Result<CompactReport> {
        const SKIP_COMPACTION_FROM: u64 = 1 << 20;
        self.commit_now()?;
        let mut report =
            CompactReport { file_len_before: self.backend.len()?, ..Default::default() };
        // A file with next to no free space among its data (a thirty-second of it) has
        // nothing to give back that moving every object would buy (under 1 MiB of data the
        // whole compaction is cheap, and moves the metadata down to the last page): its
        // length is settled exactly (the growth steps kept past the data go), and
        // that is all. The slack is measured between the journal regions and the data's
        // end, not over the file: the file keeps up to two growth steps past the data while
        // it is written, and the regions (up to 16 MiB) are no one's free space.
        // Space held back beside committed bytes is allocated but free in truth: past an
        // eighth of the data it is worth a compaction of its own (a compaction leaves some,
        // beside the objects its last pass moved, which a second call need not chase).
        let stats = self.alloc.stats();
        let data = stats.file_end.saturating_sub(self.data_start);
        let slack = data.saturating_sub(stats.bytes_in_use);
        let held = self.placement.held_bytes();
        if slack <= data / 32 && held <= data / 8 && data >= SKIP_COMPACTION_FROM {
            self.settle_file_len(true);
            report.file_len_after = self.backend.len()?;
            return Ok(report);
        }
        // A hole beside a committed object shares its page and cannot be written (page
        // granularity), so the objects in the space past the first hole that the live
        // objects will be packed into first move out, together, into fresh space; once that
        // commit is durable that space is whole free pages, and the passes below move every
        // object past the hole down into it (those it held move twice, the others once).
        let evacuated = self.guarded(|store| store.evacuate())?;
        if evacuated > 0 {
            self.commit_now()?;
        }
        for _ in 0..MAX_COMPACT_PASSES {
            let moved = self.guarded(|store| store.compact_pass())?;
            report.moved += moved;
            if moved == 0 {
                break;
            }
            self.commit_now()?;
        }
        // Rewrite every table page (and the root) into the lowest free space, now that the
        // space the objects left is free, so the metadata moves down too and the file can
        // shrink past it. A copy is written while the old one is still referenced, so when
        // nothing lower is free it lands above the old one: then one more rewrite moves it
        // back down into the space the last commit freed.
        self.metadata_low = true;
        let result = self.rewrite_metadata_low();
        self.metadata_low = false;
        result?;
        self.settle_file_len(true);
        report.file_len_after = self.backend.len()?;
        Ok(report)
    }

    fn rewrite_metadata_low(&mut self) -> Result<()> {
        for _ in 0..4 {
            let top = self.metadata_top();
            self.rewrite_metadata()?;
            if self.metadata_top() >= top {
                // Nothing lower was free, so the copy went up: the space the old copy left
                // is free now, and one more rewrite puts the metadata back down there.
                self.rewrite_metadata()?;
                break;
            }
        }
        Ok(())
    }

    fn rewrite_metadata(&mut self) -> Result<()> {
        self.table.mark_all_dirty(self.pages.len() as u64);
        self.dirty = true;
        self.commit_now()
    }

    /// The end of the highest table page or root.
    fn metadata_top(&self) -> u64 {
        let pages =
            self.pages.iter().flatten().map(|p| p.offset + crate::format::PAGE_BYTES as u64);
        pages.chain([self.header.root.offset + self.header.root.len]).max().unwrap_or(0)
    }

    /// One pass: each object, from the end of the file backwards, moves to space below it:
    /// the lowest free extent that holds it where the allocator can be told where to allocate
    /// (first fit, O(log holes) through `FirstFit`), or wherever `allocate` puts it if that is lower. The
    /// old space is freed by the next commit.
    fn compact_pass(&mut self) -> Result<u64> {
        let mut order: Vec<(u64, u64)> = self
            .table
            .iter()
            .filter(|(_, s)| s.entry.extent.len > 0)
            .map(|(id, s)| (s.entry.extent.offset, id.0))
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        let claimable = self.alloc.claimable();
        let mut holes = (!claimable.is_empty()).then(|| crate::firstfit::FirstFit::new(claimable));
        let mut moved = 0;
        let mut buffer = Vec::new();
        for (offset, id) in order {
            let slot = self.slot(ObjectId(id))?;
            let len = slot.entry.extent.len;
            let Some(target) = self.place_lower(&mut holes, offset, len)? else { continue };
            if let Err(e) = self.move_object(ObjectId(id), target, &mut buffer) {
                self.free_space(target)?;
                return Err(e);
            }
            moved += 1;
        }
        Ok(moved)
    }

    /// Empties the space the objects past the first gap in the file (the first byte neither
    /// the header nor a live object's) will be packed into: from the gap, as long as their
    /// extents and a sixteenth more. The objects that lie in it move into fresh space, in
    /// offset order; those past it stay, and the passes move them straight down, once.
    /// Returns how many moved.
    fn evacuate(&mut self) -> Result<u64> {
        let mut order: Vec<(u64, u64, u64)> = self
            .table
            .iter()
            .filter(|(_, s)| s.entry.extent.len > 0)
            .map(|(id, s)| (s.entry.extent.offset, s.entry.extent.len, id.0))
            .collect();
        order.sort_unstable();
        let mut end = self.data_start;
        let first_mover = order
            .iter()
            .position(|&(offset, len, _)| {
                let gap = offset != end;
                end = offset + len;
                gap
            })
            .unwrap_or(order.len());
        let gap = match first_mover.checked_sub(1) {
            Some(before) => order[before].0 + order[before].1,
            None => self.data_start,
        };
        let packed: u64 = order[first_mover..].iter().map(|&(_, len, _)| len).sum();
        let region_end = gap.saturating_add(packed + packed / 16);
        let mut buffer = Vec::new();
        let mut moved = 0;
        for &(offset, len, id) in &order[first_mover..] {
            if offset >= region_end {
                break;
            }
            let target = match self.take_space(len, Purpose::Object) {
                Ok(target) => target,
                Err(Error::OutOfSpace { .. }) => break, // no room to move out: compact in place
                Err(e) => return Err(e),
            };
            if let Err(e) = self.move_object(ObjectId(id), target, &mut buffer) {
                self.free_space(target)?;
                return Err(e);
            }
            moved += 1;
        }
        Ok(moved)
    }

    /// Space for `len` bytes ending at or before `below`, if there is any.
    fn place_lower(
        &mut self,
        holes: &mut Option<crate::firstfit::FirstFit>,
        below: u64,
        len: u64,
    ) -> Result<Option<Extent>> {
        if let Some(holes) = holes {
            loop {
                let Some(target) = self.claim_lowest(holes, len, below)? else { return Ok(None) };
                match self.placement.blocking_page(target) {
                    Some(page) => self.placement.hold(page, target),
                    None => return Ok(Some(target)),
                }
            }
        }
        let target = match self.take_space(len, Purpose::Object) {
            Ok(target) => target,
            Err(Error::OutOfSpace { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if target.offset + len <= below {
            Ok(Some(target))
        } else {
            self.free_space(target)?;
            Ok(None)
        }
    }

    /// Claims the lowest space of `holes` that holds `len` bytes ending at or before `below`,
    /// a whole number of pages starting on a page boundary (as the allocator places them, so
    /// compaction keeps page-sized objects and table pages on pages of their own).
    pub(super) fn claim_lowest(
        &mut self,
        holes: &mut crate::firstfit::FirstFit,
        len: u64,
        below: u64,
    ) -> Result<Option<Extent>> {
        let align = if len % PAGE_BYTES as u64 == 0 { PAGE_BYTES as u64 } else { 1 };
        let Some((target, skipped)) = holes.take_aligned(len, below, align) else {
            return Ok(None);
        };
        // The pass's view of the free space disagrees with the allocator's: a bug, never the
        // disk's damage, but the store's state is then not to be trusted (it latches).
        let corrupt = |e: bob_alloc::Error| {
            Error::corrupt(
                Part::Space,
                Some(target.offset),
                format!("compaction's view of free space disagrees with the allocator: {e}"),
            )
        };
        // The bytes skipped to the boundary stay free.
        self.alloc.claim_within(target.offset - skipped, target).map_err(corrupt)?;
        Ok(Some(target))
    }

    /// Copies object `id` (checking its checksum) into `target` and records the move.
    fn move_object(&mut self, id: ObjectId, target: Extent, buffer: &mut Vec<u8>) -> Result<()> {
        let slot = self.slot(id)?;
        buffer.resize(slot.entry.len as usize, 0);
        self.backend.read_at(buffer, slot.entry.extent.offset)?;
        let computed = checksum(buffer);
        if computed != slot.entry.checksum {
            return Err(Error::ChecksumMismatch { id, stored: slot.entry.checksum, computed });
        }
        // Through the write buffer: the objects a pass moves into one run of free space are
        // written together (evacuated objects are all one run), not a write each.
        self.stage_or_write(target, buffer)?;
        let pending = self.pending_generation();
        self.put(id, Entry { extent: target, ..slot.entry }, pending);
        self.release(slot.entry.extent, slot.born)
    }

    /// Objects in the store.
    pub fn object_count(&self) -> u64 {
        self.table.object_count()
    }

    /// The ids of every object, by ascending index. On a lazily opened store this reads every table
    /// page not read yet: a damaged one is an error.
    pub fn ids(&self) -> Result<Vec<ObjectId>> {
        self.read_all_table_pages()?;
        Ok(self.table.iter().map(|(id, _)| id).collect())
    }

    /// Bytes of free space held back because they share a 4 KiB page with committed bytes
    /// (reused once those bytes are released; see `docs/format.md`, "Page granularity").
    pub fn held_back_bytes(&self) -> u64 {
        self.placement.held_bytes()
    }

    /// The format version of the file's current header: [`FORMAT_VERSION`](crate::FORMAT_VERSION)
    /// once this build has written a checkpoint, else the version of the file as it was opened
    /// (a version 4 file opened read-only says 4).
    pub fn format_version(&self) -> u16 {
        self.header.version
    }

    /// The generation of the last commit (1 after `create`). Between
    /// [`begin_commit`](Self::begin_commit) and [`end_commit`](Self::end_commit) it counts the
    /// commit whose sync is outstanding (as do `journaled_commits` and `verify`'s report).
    pub fn generation(&self) -> u64 {
        self.journal.generation
    }

    /// The bytes the live objects and the metadata take, and the file's length (what
    /// [`compact`](Self::compact) could give back is about the difference). `None` until a
    /// lazy open is complete: the space map is rebuilt then.
    pub fn space_in_use(&self) -> Result<Option<(u64, u64)>> {
        if self.deferred.is_some() {
            return Ok(None);
        }
        Ok(Some((self.alloc.stats().bytes_in_use, self.backend.len()?)))
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> Result<u64> {
        Ok(self.backend.len()?)
    }

    /// Whether an earlier failure makes the store refuse writes until reopened.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The backend, for tests and tools (reads only: writing through it voids every guarantee).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The space allocator, for tools that show how space is kept (a multi store's size
    /// classes, say); read only.
    pub fn allocator(&self) -> &A {
        &self.alloc
    }
}
