//! The commit protocol (`docs/format.md`, "Commit protocol"): plan the metadata (undoable),
//! write it, barrier, header, barrier, release.

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, Section, checksum, write_batched_sections};

use super::{PAGE, Purpose, Store, grow_step_for};
use crate::firstfit::FirstFit;
use crate::format::{self, Header, PageRef, SLOT_OFFSETS};
use crate::space::SpaceAllocator;
use crate::{Error, Result};

/// The metadata a commit writes, with its space already allocated.
struct Plan {
    /// `(offset, bytes)` of every new table page and the root.
    writes: Vec<(u64, Vec<u8>)>,
    header: Header,
    /// Space the previous commit referenced and this one does not (old pages, old root).
    replaced: Vec<Extent>,
    /// Space this commit references that is new (new pages and root).
    added: Vec<Extent>,
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// Makes everything done since the last commit durable; see the crate docs. A commit
    /// appends one record to the journal and syncs once; when the record does not fit the
    /// rest of the journal (or while compacting) it is a checkpoint instead.
    ///
    /// If a checkpoint's metadata does not fit (`OutOfSpace`) nothing was written and the
    /// store stays usable; any other error latches the store (it refuses writes until
    /// reopened).
    pub fn commit_now(&mut self) -> Result<()> {
        if self.begin_commit()? {
            let synced = self.backend.sync_data();
            self.end_commit(synced)?;
        }
        Ok(())
    }

    /// The first half of [`commit_now`](Self::commit_now), for a wrapper that syncs outside
    /// its lock (`ConcurrentStore`'s group commit): writes the staged objects and the commit's
    /// journal record, and returns `true`; the caller then syncs the backend (no other commit,
    /// checkpoint or compaction may start meanwhile; writes, deletes and reads may) and hands
    /// the result to [`end_commit`](Self::end_commit). Returns `false` when the commit is
    /// already complete: nothing changed, or it was a checkpoint (made here, synced).
    ///
    /// Changes made between the two halves belong to the next commit. Space the commit frees
    /// is reused only after `end_commit` saw its sync succeed. A wrapper's protocol (group
    /// commit), hidden from the documentation: users call [`commit`](crate::Storer::commit).
    #[doc(hidden)]
    pub fn begin_commit(&mut self) -> Result<bool> {
        self.check_not_committing()?;
        if self.read_only && !self.dirty {
            return Ok(false); // closing a read-only store
        }
        self.check_writable()?;
        if !self.dirty {
            return Ok(false);
        }
        debug_assert!(self.deferred.is_none(), "a write completed the open");
        self.table.trim();
        if let Err(e) = self.flush_staged() {
            self.fail(e.to_string());
            return Err(e);
        }
        // The first commit after an open is a checkpoint: it puts the state open chose into a
        // header slot of its own, durable, whatever the page cache showed open (dropping
        // cached pages is advisory: a header or record whose sync failed may still have been
        // read from the cache), and the previous commit's space stays protected until then.
        if !self.metadata_low && !self.checkpoint_due {
            if let Some(record) = self.next_record() {
                if let Err(e) = self.write_record(&record) {
                    // Memory and file may now disagree: trust only a reopen.
                    self.fail(e.to_string());
                    return Err(e);
                }
                return Ok(true);
            }
        }
        self.checkpoint_now()?;
        Ok(false)
    }

    /// The second half of a commit [`begin_commit`](Self::begin_commit) started: `synced` is
    /// the backend's sync. On `Ok` the commit is durable and the space it freed is free;
    /// on an error the store latches (the record may or may not be on the disk: only a reopen
    /// can tell). Without a commit in flight this does nothing. Hidden from the
    /// documentation, as [`begin_commit`](Self::begin_commit) is.
    #[doc(hidden)]
    pub fn end_commit(&mut self, synced: std::io::Result<()>) -> Result<()> {
        let Some(committing) = self.committing.take() else { return Ok(()) };
        if let Err(e) = synced {
            // What it would have freed stays accounted (a latched store's `verify` sees no
            // leak); only a reopen can tell whether the record is durable.
            self.pending_free_bytes += committing.releasing_bytes;
            self.pending_free.extend(committing.releasing);
            let e = Error::from_io(e);
            self.fail(e.to_string());
            return Err(e);
        }
        self.release_durable(committing.releasing);
        self.table.free_ids(committing.freed_ids);
        self.settle_file_len(false);
        Ok(())
    }

    /// Refuses a commit, checkpoint or compaction while a commit's sync is outstanding.
    pub(super) fn check_not_committing(&self) -> Result<()> {
        if self.committing.is_some() {
            return Err(Error::InvalidArgument(
                "a commit is in flight: end_commit must come first".into(),
            ));
        }
        Ok(())
    }

    /// Folds the journal into the table pages: writes every table page changed since the
    /// last checkpoint and a new root, syncs, writes the other header slot, syncs (two
    /// syncs). Commits what is pending. `close` checkpoints, so a store closed cleanly opens
    /// with nothing to replay.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.check_not_committing()?;
        if self.read_only {
            return Ok(());
        }
        self.check_writable()?;
        if !self.dirty && self.journal.records == 0 {
            return Ok(());
        }
        self.complete_open()?;
        self.table.trim();
        if let Err(e) = self.flush_staged() {
            self.fail(e.to_string());
            return Err(e);
        }
        self.checkpoint_now()
    }

    /// The checkpoint protocol, once staged bytes are written.
    pub(super) fn checkpoint_now(&mut self) -> Result<()> {
        let plan = match self.plan_commit() {
            Ok(plan) => plan,
            Err(e) => {
                if e.latches() {
                    self.fail(e.to_string());
                }
                return Err(e);
            }
        };
        let result = self.write_commit(&plan);
        if let Err(e) = result {
            // Memory and file may now disagree: trust only a reopen.
            self.fail(e.to_string());
            return Err(e);
        }
        self.after_commit(plan);
        Ok(())
    }

    /// Encodes the changed table pages and a new root and allocates their space. On an error
    /// every allocation is undone and `pages` is as before.
    fn plan_commit(&mut self) -> Result<Plan> {
        let page_count = self.table.page_count() as usize;
        let old_len = self.pages.len();
        let mut undo = Vec::new();
        let mut added = Vec::new();
        let result = self.plan_pages(page_count, &mut undo, &mut added);
        let plan =
            result.and_then(|(writes, replaced)| self.plan_root(writes, replaced, &mut added));
        match plan {
            Ok(plan) => Ok(Plan { added, ..plan }),
            Err(e) => {
                // Entries past the old length were absent; the changed ones come back.
                self.pages.resize(self.pages.len().max(old_len), None);
                for (index, old) in undo.into_iter().rev() {
                    self.pages[index] = old;
                }
                self.pages.truncate(old_len);
                for extent in added {
                    self.free_space(extent)?;
                }
                Err(e)
            }
        }
    }

    /// Plans the changed pages; `undo` gets each page's entry before it changed.
    #[allow(clippy::type_complexity)]
    fn plan_pages(
        &mut self,
        page_count: usize,
        undo: &mut Vec<(usize, Option<PageRef>)>,
        added: &mut Vec<Extent>,
    ) -> Result<(Vec<(u64, Vec<u8>)>, Vec<Extent>)> {
        let dirty = self.table.dirty_pages();
        let highest_dirty = dirty.last().map_or(0, |&p| p as usize + 1);
        self.pages.resize(page_count.max(self.pages.len()).max(highest_dirty), None);
        let mut low = self.metadata_low.then(|| FirstFit::new(self.alloc.claimable()));
        let mut writes = Vec::new();
        let mut replaced = Vec::new();
        for page in dirty {
            let entries = self.table.page_entries(page);
            undo.push((page as usize, self.pages[page as usize]));
            if let Some(old) = self.pages[page as usize].take() {
                replaced.push(Extent::new(old.offset, PAGE));
            }
            if entries.iter().all(Option::is_none) {
                continue; // an empty page is not stored
            }
            let bytes = format::encode_page(page, &entries);
            let extent = self.allocate_metadata(&mut low, PAGE)?;
            added.push(extent);
            self.pages[page as usize] =
                Some(PageRef { offset: extent.offset, checksum: checksum(&bytes) });
            writes.push((extent.offset, bytes));
        }
        while self.pages.last() == Some(&None) && self.pages.len() > page_count {
            self.pages.pop();
        }
        if self.header.root.len > 0 {
            replaced.push(self.header.root);
        }
        Ok((writes, replaced))
    }

    fn plan_root(
        &mut self,
        mut writes: Vec<(u64, Vec<u8>)>,
        replaced: Vec<Extent>,
        added: &mut Vec<Extent>,
    ) -> Result<Plan> {
        let root_bytes = format::encode_root(&self.pages);
        // Whole pages, so the root never shifts page-sized objects and table pages allocated
        // after it off page boundaries, and never shares a page with an object.
        let root_alloc = (root_bytes.len() as u64).next_multiple_of(PAGE);
        let mut low = self.metadata_low.then(|| FirstFit::new(self.alloc.claimable()));
        let root = self.allocate_metadata(&mut low, root_alloc)?;
        added.push(root);
        // A session's first checkpoint skips a generation: ids of an earlier session that
        // never became durable may carry the next two (see `start_session`). Otherwise a
        // checkpoint of nothing new names the last record's state under its generation
        // (still newer than the other slot's); one that commits changes is a commit.
        let generation = if self.checkpoint_due {
            self.journal.generation + 2
        } else if self.dirty {
            self.pending_generation()
        } else {
            self.journal.generation
        };
        let root_checksum = checksum(&root_bytes);
        let header = Header {
            version: crate::format::FORMAT_VERSION,
            kind: A::KIND,
            generation,
            root,
            root_len: root_bytes.len() as u64,
            root_checksum,
            next_id: self.table.next_id(),
            object_count: self.table.object_count(),
            file_end: self.alloc.file_end(),
            journal: self.header.journal,
            journal_len: self.header.journal_len,
            salt: super::journal::new_salt(self.journal.salt, generation, root_checksum),
            sealed: false,
        };
        writes.push((root.offset, root_bytes));
        Ok(Plan { writes, header, replaced, added: Vec::new() })
    }

    /// Steps 1 to 4: the metadata, barrier, the header slot, barrier.
    fn write_commit(&mut self, plan: &Plan) -> Result<()> {
        let sections: Vec<Section<'_>> =
            plan.writes.iter().map(|(o, b)| Section::new(*o, b)).collect();
        write_batched_sections(&self.backend, &sections)?;
        self.cover_file_end()?;
        self.backend.sync_data()?;
        let slot = 1 - self.active_slot;
        self.backend.write_at(&plan.header.encode(), SLOT_OFFSETS[slot])?;
        self.backend.sync_data()?;
        Ok(())
    }

    /// Seals the store at a clean close, once a checkpoint made everything durable: the
    /// same state again in the other header slot (generation + 1, a new salt, so its journal
    /// is empty), flagged sealed, and a sync. Open then trusts what the page cache shows of
    /// a sealed newest slot: no sync and no reads from the device (`docs/format.md`, "Open
    /// rules"). Nothing is sealed by a read-only store, a failed one, one with anything not
    /// in its last checkpoint, or one whose session has not yet checkpointed (its state is
    /// the one open chose, which the page cache may have shown without the device holding
    /// it); a sealed one is left as it is. A failure latches and is returned: the state is
    /// durable (the last checkpoint), the seal perhaps not.
    pub(crate) fn seal(&mut self) -> Result<()> {
        if self.read_only
            || self.failed.is_some()
            || self.checkpoint_due
            || self.header.sealed
            || self.dirty
            || self.journal.records > 0
            || self.committing.is_some()
            || !self.staged.is_empty()
        {
            return Ok(());
        }
        let generation = self.header.generation + 1;
        let header = Header {
            generation,
            salt: super::journal::new_salt(
                self.journal.salt,
                generation,
                self.header.root_checksum,
            ),
            sealed: true,
            ..self.header
        };
        let slot = 1 - self.active_slot;
        let written = self
            .backend
            .write_at(&header.encode(), SLOT_OFFSETS[slot])
            .and_then(|()| self.backend.sync_data());
        if let Err(e) = written {
            self.fail(format!("sealing at close: {e}"));
            return Err(e.into());
        }
        self.header = header;
        self.active_slot = slot;
        self.journal = super::journal::Journal::fresh(&self.header, slot);
        // A change after the seal (a caller of `SplitStore::seal` that goes on) starts with a
        // checkpoint, as after an open: a record in the sealed slot's journal would be lost,
        // since open loads the older slot of a sealed pair and never reads that journal.
        self.checkpoint_due = true;
        Ok(())
    }

    /// Space allocated but never written (a block's tail, an empty object from
    /// `allocate_run`) may lie past the file's end; open requires every referenced extent
    /// inside the file, so the file covers the allocator's end before a commit's barrier.
    /// The length is a whole number of pages, so changing it never rewrites a page that holds
    /// committed bytes.
    pub(super) fn cover_file_end(&mut self) -> Result<()> {
        let end = self.alloc.file_end().next_multiple_of(PAGE);
        if end > self.room {
            self.backend.allocate(end)?;
            self.room = end;
        }
        Ok(())
    }

    /// Step 5 of a checkpoint, once it is durable: its header is the last, its journal (the
    /// other region) starts empty, and what the previous state needed and this one does not
    /// is free now. Nothing here can fail the commit: it is durable.
    fn after_commit(&mut self, plan: Plan) {
        self.header = plan.header;
        self.active_slot = 1 - self.active_slot;
        self.journal = super::journal::Journal::fresh(&self.header, self.active_slot);
        self.checkpoints += 1;
        self.checkpoint_due = false;
        self.after_durable(plan.added, plan.replaced);
        self.table.committed();
    }

    /// Once a commit is durable: what it made is committed, what the state before it needed
    /// and it does not is released, and the file's length is settled.
    pub(super) fn after_durable(&mut self, added: Vec<Extent>, replaced: Vec<Extent>) {
        let fresh = std::mem::take(&mut self.fresh);
        for extent in fresh.into_values() {
            self.placement.committed(extent);
        }
        for extent in added {
            self.placement.committed(extent);
        }
        let released: Vec<Extent> = self.pending_free.drain(..).chain(replaced).collect();
        self.pending_free_bytes = 0;
        self.release_durable(released);
        self.dirty = false;
        // Past the allocator's end the file keeps room, reserved on the device, for the next
        // commit's metadata, so a commit of deletes succeeds on a full disk; the rest is
        // referenced by no commit and goes back. A failure of either is not the commit's: it
        // is durable, and the file length is settled again by the next commit.
        self.settle_file_len(false);
    }

    /// Gives back space no durable commit references any more (or holds it back under a page
    /// that still holds committed bytes).
    fn release_durable(&mut self, released: Vec<Extent>) {
        let mut unheld = Vec::new();
        for extent in released {
            self.placement.released(extent, &mut unheld);
            if let Err(e) = self.free_space(extent) {
                self.fail(e.to_string());
            }
        }
        self.return_unheld(unheld);
    }

    /// Sets the file's length to at least the allocator's end plus the room for the next
    /// commit's metadata, reserved on the device. Unless `exact`, the length moves in growth
    /// steps: it grows a step past that, and shrinks only when it is more than two steps
    /// past it (each length change costs the file system a metadata commit at the next
    /// sync: a length that followed the reserve, which grows by a page for each table page
    /// a commit dirties, made every small commit pay one). `exact` (compaction, `close`)
    /// sets it to that. Failures are not errors: the length is settled again later.
    pub(super) fn settle_file_len(&mut self, exact: bool) {
        // Before a lazy open completes, the allocator knows only what was read: its end says
        // nothing about where the committed data ends.
        if self.deferred.is_some() {
            return;
        }
        let end = self.alloc.file_end().max(self.data_start).next_multiple_of(PAGE);
        // Whole pages, within the size limit (but never below what the data needs).
        let floor = self.limit_floor();
        let want = (end + self.commit_reserve()).min(floor).max(end);
        let stepped = |step: u64| (want + step).min(floor).max(want);
        let shrink_step = grow_step_for(want.saturating_sub(self.data_start));
        match self.backend.len() {
            Ok(len) if len < want => {
                let step = if exact { 0 } else { self.grow_step() };
                for target in [stepped(step), want] {
                    if self.backend.allocate(target).is_ok() {
                        self.room = target;
                        break;
                    }
                }
            }
            // A shrink's step follows what the file needs now, not what it held: a file that
            // lost most of its data settles in one change.
            Ok(len) if len > want + 2 * (if exact { 0 } else { shrink_step }) => {
                let target = stepped(if exact { 0 } else { shrink_step });
                if self.backend.set_len(target).is_ok() {
                    self.room = target;
                }
            }
            Ok(len) => self.room = len,
            Err(_) => {}
        }
    }

    /// Sets the file's length to what the data and the next commit's room need, no more
    /// (at `close`: the growth steps kept ahead while the store was written give back).
    /// Only once the open is complete: before, the allocator knows only what was read, and
    /// its end says nothing about where the committed data ends.
    pub(crate) fn trim_file_len(&mut self) {
        if self.check_writable().is_ok() {
            self.settle_file_len(true);
        }
    }

    /// Space held back under pages that no longer block it: to the allocator, or held again
    /// under a page that still blocks it.
    pub(super) fn return_unheld(&mut self, unheld: Vec<Extent>) {
        for extent in unheld {
            if let Some(page) = self.placement.blocking_page(extent) {
                self.placement.hold(page, extent);
            } else if let Err(e) = self.free_space(extent) {
                self.fail(e.to_string());
            }
        }
    }

    /// Space for a table page or the root: where the allocator chooses, or, while
    /// compacting, the lowest free extent that holds it (first fit), so the metadata moves
    /// down and the file can shrink past it. `low` is the free space as this step began.
    fn allocate_metadata(&mut self, low: &mut Option<FirstFit>, len: u64) -> Result<Extent> {
        while let Some(holes) = low.as_mut() {
            let Some(extent) = self.claim_lowest(holes, len, u64::MAX)? else { break };
            if let Some(page) = self.placement.blocking_page(extent) {
                self.placement.hold(page, extent);
                continue;
            }
            return Ok(extent);
        }
        self.take_space(len, Purpose::Metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{HEADER_REGION, PAGE_BYTES};

    #[test]
    fn header_slots_are_whole_pages_of_their_own() {
        assert_eq!(SLOT_OFFSETS[1] - SLOT_OFFSETS[0], PAGE_BYTES as u64);
        assert_eq!(HEADER_REGION, 2 * PAGE);
    }
}
