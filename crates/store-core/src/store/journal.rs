//! Journaled commits (`docs/format.md`, "Commit protocol"): a commit appends one record of
//! what changed to the journal of the last checkpoint and syncs once; at open the records are
//! replayed over the checkpoint. A checkpoint (`commit.rs`) folds them into the table pages.

use bob_alloc::Extent;
use bob_io_helpers::{FileBackend, checksum};

use super::{PAGE, Store};
use crate::error::Part;
use crate::format::Header;
use crate::journal::{self, Chain, Found, Record};
use crate::space::SpaceAllocator;
use crate::table::Table;
use crate::{Error, Result};

/// The most bytes a journal region takes (each of the two; format 4 allowed 1 MiB).
pub(crate) const MAX_JOURNAL_BYTES: u64 = 8 << 20;

/// The journal region length a new store gets by default (each of the two).
pub(crate) const DEFAULT_JOURNAL_BYTES: u64 = 2 << 20;

/// The journal region length a new store gets when asked for `wanted` bytes under the size
/// limit `limit`: whole pages, at most 8 MiB and a sixty-fourth of the limit, at least 4 pages.
pub(crate) fn journal_len_for(wanted: u64, limit: u64) -> u64 {
    (wanted.min(limit / 64).min(MAX_JOURNAL_BYTES) / PAGE * PAGE).max(4 * PAGE)
}

/// The journal of the last checkpoint, as the store tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Journal {
    /// The region records go to: the active slot's.
    pub(crate) region: Extent,
    /// The checkpoint's salt.
    pub(crate) salt: u64,
    /// Bytes of the region durable records use (whole pages).
    pub(crate) tail: u64,
    /// The checksum of the last durable record, or the salt when there is none.
    pub(crate) last: u64,
    /// The last durable generation: the checkpoint's, plus one per record.
    pub(crate) generation: u64,
    /// Records since the checkpoint.
    pub(crate) records: u64,
}

impl Journal {
    /// The empty journal of the checkpoint `header` in slot `slot`.
    pub(crate) fn fresh(header: &Header, slot: usize) -> Self {
        Journal {
            region: header.journal_region(slot),
            salt: header.salt,
            tail: 0,
            last: header.salt,
            generation: header.generation,
            records: 0,
        }
    }
}

/// The salt of a new checkpoint's journal: a hash of the current journal's salt, the
/// checkpoint's generation and its root's checksum. It differs from the current salt, and with
/// overwhelming likelihood from every earlier one, the reused region's included (a stale
/// record of that region would also have to continue the generation chain). Deterministic, so
/// the same history writes the same file.
pub(crate) fn new_salt(previous: u64, generation: u64, root_checksum: u64) -> u64 {
    let mut seed = [0u8; 24];
    seed[..8].copy_from_slice(&previous.to_le_bytes());
    seed[8..16].copy_from_slice(&generation.to_le_bytes());
    seed[16..].copy_from_slice(&root_checksum.to_le_bytes());
    let salt = checksum(&seed);
    if salt == previous { salt ^ 1 } else { salt }
}

/// A journaled commit whose record is written and whose sync has not returned yet.
#[derive(Debug)]
pub(crate) struct Committing {
    /// Space the state before it needed and it does not: free once it is durable.
    pub(crate) releasing: Vec<Extent>,
    /// The bytes of `releasing`.
    pub(crate) releasing_bytes: u64,
    /// Ids it removed: reusable once it is durable.
    pub(crate) freed_ids: Vec<u64>,
}

/// What replaying a journal found.
pub(crate) struct Replayed {
    /// The journal as it stands after the kept records.
    pub(crate) journal: Journal,
    /// Records whose data was checked and failed (the last one, never acknowledged): 0 or 1.
    pub(crate) dropped: u64,
}

/// Reads the records of `journal`'s region from `bytes` (the whole region), checks the chain,
/// and applies every record to `table` (`read_pages` first reads the table pages it needs),
/// except a last record whose data `data_ok` rejects.
/// A record that fails while a later record of this journal follows is corruption: only the
/// last record can have been in flight at a crash.
pub(crate) fn replay(
    bytes: &[u8],
    mut journal: Journal,
    file_len: u64,
    table: &mut Table,
    data_ok: &mut dyn FnMut(&Record) -> Result<bool>,
    read_pages: &mut dyn FnMut(&mut Table, &Record) -> Result<()>,
) -> Result<Replayed> {
    let mut records = Chain::new(bytes, journal.salt, journal.generation);
    let mut chain = (&mut records).collect::<Result<Vec<_>>>()?;
    let (at, generation) = (records.end, records.generation);
    // Past the end of the chain, no record of this journal may follow it.
    let mut page = at;
    while page < bytes.len() {
        if let Found::Record(record, _, _) = journal::decode(&bytes[page..], journal.salt)? {
            if record.generation > generation {
                return Err(Error::corrupt(
                    Part::Journal,
                    Some(journal.region.offset + at as u64),
                    format!(
                        "the record of generation {} is damaged or missing, and generation {} follows it",
                        generation + 1,
                        record.generation
                    ),
                ));
            }
        }
        page += PAGE as usize;
    }
    // The last record's commit may not have finished: if the file's new length or its data
    // did not survive, it was never acknowledged, and it is dropped. (Earlier records are
    // not checked against the file: a later one may have freed their space and the file
    // shrunk past it. The state the chain ends in is, by the caller.)
    let mut dropped = 0;
    if let Some((record, _, _)) = chain.last() {
        if record.fits(file_len).is_err() || !data_ok(record)? {
            chain.pop();
            dropped = 1;
        }
    }
    for (record, len, sum) in chain {
        read_pages(table, &record)?;
        table.replay(record.next_id, &record.puts, &record.removes).map_err(|e| {
            Error::corrupt(
                Part::Journal,
                Some(journal.region.offset + journal.tail),
                format!("record of generation {}: {e}", record.generation),
            )
        })?;
        if table.object_count() != record.object_count {
            return Err(Error::corrupt(
                Part::Journal,
                Some(journal.region.offset + journal.tail),
                format!(
                    "record of generation {} counts {} objects, the table {}",
                    record.generation,
                    record.object_count,
                    table.object_count()
                ),
            ));
        }
        journal.tail += len;
        journal.last = sum;
        journal.generation = record.generation;
        journal.records += 1;
    }
    Ok(Replayed { journal, dropped })
}

impl<A: SpaceAllocator, B: FileBackend> Store<A, B> {
    /// The record the next commit would append, if it fits the rest of the journal.
    pub(super) fn next_record(&self) -> Option<Record> {
        let (puts, removes) = self.table.changes();
        let len = journal::encoded_len(puts.len(), removes.len());
        if self.journal.tail + len > self.journal.region.len {
            return None;
        }
        Some(Record {
            generation: self.pending_generation(),
            salt: self.journal.salt,
            previous: self.journal.last,
            next_id: self.table.next_id(),
            object_count: self.table.object_count(),
            file_end: self.alloc.file_end(),
            puts,
            removes,
        })
    }

    /// The write half of a journaled commit: covers the allocator's end, appends `record`
    /// after the last record (in pages no durable record touches), and moves what the commit
    /// made and freed out of the pending generation: its objects count as committed for
    /// placement at once (nothing new may share their pages), what it freed waits in
    /// `committing` for the sync (`end_commit`).
    pub(super) fn write_record(&mut self, record: &Record) -> Result<()> {
        let (bytes, sum) = record.encode();
        // The file covers every extent the record names before the record exists.
        self.cover_file_end()?;
        self.backend.write_at(&bytes, self.journal.region.offset + self.journal.tail)?;
        self.journal.tail += bytes.len() as u64;
        self.journal.last = sum;
        self.journal.generation = record.generation;
        self.journal.records += 1;
        for extent in std::mem::take(&mut self.fresh).into_values() {
            self.placement.committed(extent);
        }
        self.committing = Some(Committing {
            releasing: std::mem::take(&mut self.pending_free),
            releasing_bytes: std::mem::take(&mut self.pending_free_bytes),
            freed_ids: self.table.seal(),
        });
        self.dirty = false;
        Ok(())
    }

    /// How many commits went to the journal since the last checkpoint.
    pub fn journaled_commits(&self) -> u64 {
        self.journal.records
    }

    /// How many journal records open dropped because the data they name had not reached the
    /// disk: 1 when the last commit before a crash was in flight (never acknowledged), else 0.
    pub fn dropped_records(&self) -> u64 {
        self.dropped_records
    }

    /// How many checkpoints this handle made (journal folded into the table pages; two syncs
    /// each).
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }
}
