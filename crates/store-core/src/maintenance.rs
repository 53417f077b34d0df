//! `verify` and `compact`.

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, checksum};

use crate::format::{
    self, ENTRIES_PER_PAGE, HEADER_REGION, Header, PAGE_BYTES, SLOT_BYTES, SLOT_OFFSETS,
};
use crate::space::SpaceAllocator;
use crate::store::Store;
use crate::{Error, ObjectId, Result};

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects checked (every byte read, checksum compared).
    pub objects: u64,
    /// Bytes of object data checked.
    pub object_bytes: u64,
    /// Table pages of the last commit checked.
    pub table_pages: u64,
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
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport { file_len: self.backend.len()?, ..VerifyReport::default() };
        self.verify_metadata(&mut report)?;
        for (id, slot) in self.table.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let mut bytes = vec![0u8; slot.entry.len as usize];
            self.backend.read_at(&mut bytes, slot.entry.extent.offset)?;
            report.objects += 1;
            report.object_bytes += slot.entry.len;
            let computed = checksum(&bytes);
            if computed != slot.entry.checksum {
                report.problems.push(
                    Error::ChecksumMismatch {
                        id: ObjectId(id as u64),
                        stored: slot.entry.checksum,
                        computed,
                    }
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
            match format::decode_page(index as u64, &page_bytes, report.file_len) {
                Err(e) => report.problems.push(e.to_string()),
                Ok(entries) if !self.dirty => {
                    for (i, entry) in entries.iter().enumerate() {
                        let id = index * ENTRIES_PER_PAGE as usize + i;
                        let in_memory = self.table.get(id).copied().flatten().map(|s| s.entry);
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
        Ok(())
    }

    /// The allocator's live extents must be exactly the objects, the committed table pages
    /// and root, and the space waiting for the next commit to be released.
    fn verify_space(&self, report: &mut VerifyReport) {
        if let Err(e) = self.alloc.verify() {
            report.problems.push(e.to_string());
        }
        let mut expected: Vec<Extent> = self
            .table
            .iter()
            .flatten()
            .map(|s| s.entry.extent)
            .filter(|e| e.len > 0)
            .chain(self.pages.iter().flatten().map(|p| Extent::new(p.offset, PAGE_BYTES as u64)))
            .chain(std::iter::once(self.header.root))
            .chain(self.pending_free.iter().copied())
            .collect();
        expected.sort_unstable();
        if let Some(pair) = expected.windows(2).find(|w| w[0].overlaps(&w[1])) {
            report.problems.push(format!("extents overlap: {:?} and {:?}", pair[0], pair[1]));
        }
        let live = self.alloc.live_extents();
        if live != expected {
            report.problems.push(format!(
                "the allocator holds {} live extents, the store references {}",
                live.len(),
                expected.len()
            ));
        }
        if self.alloc.file_end() > report.file_len.max(HEADER_REGION) {
            report.problems.push(format!(
                "space is allocated up to {} but the file is {} bytes",
                self.alloc.file_end(),
                report.file_len
            ));
        }
    }

    /// Moves live objects into holes nearer the start of the file and shrinks it; ids do
    /// not change. Commits first and after each pass (so everything it moved is durable).
    pub fn compact(&mut self) -> Result<CompactReport> {
        self.commit_now()?;
        let mut report =
            CompactReport { file_len_before: self.backend.len()?, ..Default::default() };
        for _ in 0..MAX_COMPACT_PASSES {
            let moved = self.guarded(|store| store.compact_pass())?;
            // Commit even when nothing moved: the table and root move into holes too.
            self.dirty = true;
            self.commit_now()?;
            report.moved += moved;
            if moved == 0 {
                break;
            }
        }
        report.file_len_after = self.backend.len()?;
        Ok(report)
    }

    /// One pass: each object, from the end of the file backwards, moves if the allocator
    /// offers space below it. The old space is freed by the next commit.
    fn compact_pass(&mut self) -> Result<u64> {
        let mut order: Vec<(u64, u64)> = self
            .table
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                s.filter(|s| s.entry.extent.len > 0).map(|s| (s.entry.extent.offset, id as u64))
            })
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        let pending = self.pending_generation();
        let mut moved = 0;
        let mut buffer = Vec::new();
        for (offset, id) in order {
            let slot = self.slot(ObjectId(id))?;
            let target = self.alloc.allocate(slot.entry.extent.len)?;
            if target.offset >= offset {
                self.alloc
                    .free(target)
                    .map_err(|e| Error::Corrupt(format!("undoing a move: {e}")))?;
                continue;
            }
            buffer.resize(slot.entry.len as usize, 0);
            self.backend.read_at(&mut buffer, offset)?;
            let computed = checksum(&buffer);
            if computed != slot.entry.checksum {
                self.alloc
                    .free(target)
                    .map_err(|e| Error::Corrupt(format!("undoing a move: {e}")))?;
                return Err(Error::ChecksumMismatch {
                    id: ObjectId(id),
                    stored: slot.entry.checksum,
                    computed,
                });
            }
            self.backend.write_at(&buffer, target.offset)?;
            let mut entry = slot.entry;
            entry.extent = target;
            self.put(ObjectId(id), entry, pending);
            self.release(slot.entry.extent, slot.born)?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Objects in the store.
    pub fn object_count(&self) -> u64 {
        self.object_count
    }

    /// The ids of every object, ascending.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.table
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(id, _)| ObjectId(id as u64))
            .collect()
    }

    /// The generation of the last commit (1 after `create`).
    pub fn generation(&self) -> u64 {
        self.header.generation
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
}
