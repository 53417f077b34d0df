//! Journal records (`docs/format.md`, "Journal record"): what one journaled commit changed,
//! encoded into whole pages, and decoded only when every check holds. Encoders and decoders
//! only; no I/O.
//!
//! A record is chained to the one before it (it carries that record's checksum, or the
//! checkpoint's salt for the first) and salted by the checkpoint, so a record left in the
//! journal's space by an earlier checkpoint's journal never passes for one of this journal.

use bob_alloc::Extent;
use bob_io_helpers::checksum;

use crate::error::Part;
use crate::format::{
    Entry, FORMAT_VERSION, MAX_OBJECTS, PAGE_BYTES, check_entry, get_u16, get_u64, put_u16, put_u64,
};
use crate::{Error, ObjectId, Result};

const MAGIC: [u8; 4] = *b"BOBJ";
const J_MAGIC: usize = 0;
const J_VERSION: usize = 4;
const J_GENERATION: usize = 8;
const J_SALT: usize = 16;
const J_PREVIOUS: usize = 24;
const J_NEXT_ID: usize = 32;
const J_OBJECT_COUNT: usize = 40;
const J_FILE_END: usize = 48;
const J_PUTS: usize = 56;
const J_REMOVES: usize = 60;
/// Bytes before the entries.
const J_HEAD: usize = 64;
/// Bytes of a put: id (tag and index), offset, len, alloc_len, checksum.
const PUT_BYTES: usize = 40;
/// Bytes of a remove: the id.
const REMOVE_BYTES: usize = 8;
/// The trailing checksum.
const TRAILER: usize = 8;

/// What one journaled commit changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The commit's generation: the checkpoint's + 1 for the first record, + 1 per record.
    pub(crate) generation: u64,
    /// The checkpoint's salt.
    pub(crate) salt: u64,
    /// The previous record's checksum, or the salt for the first record.
    pub(crate) previous: u64,
    /// The table's next id after the commit.
    pub(crate) next_id: u64,
    /// Objects after the commit.
    pub(crate) object_count: u64,
    /// The allocator's end at the commit (informational).
    pub(crate) file_end: u64,
    /// Objects written (created or replaced), by index ([`ObjectId::index`]; the tag is in
    /// the entry).
    pub(crate) puts: Vec<(u64, Entry)>,
    /// Objects removed, by index.
    pub(crate) removes: Vec<u64>,
}

/// The bytes a record with `puts` and `removes` takes, in whole pages.
pub(crate) fn encoded_len(puts: usize, removes: usize) -> u64 {
    let bytes = J_HEAD + puts * PUT_BYTES + removes * REMOVE_BYTES + TRAILER;
    (bytes as u64).next_multiple_of(PAGE_BYTES as u64)
}

impl Record {
    /// Whether every extent the record names lies inside a file of `file_len` bytes; the
    /// reason if not.
    pub(crate) fn fits(&self, file_len: u64) -> std::result::Result<(), String> {
        for (id, entry) in &self.puts {
            check_entry(entry, file_len).map_err(|why| format!("object {id}: {why}"))?;
        }
        Ok(())
    }

    /// The record in whole pages (zero after the trailer), and its checksum.
    pub(crate) fn encode(&self) -> (Vec<u8>, u64) {
        let len = encoded_len(self.puts.len(), self.removes.len()) as usize;
        let mut out = vec![0u8; len];
        out[J_MAGIC..J_VERSION].copy_from_slice(&MAGIC);
        put_u16(&mut out, J_VERSION, FORMAT_VERSION);
        put_u64(&mut out, J_GENERATION, self.generation);
        put_u64(&mut out, J_SALT, self.salt);
        put_u64(&mut out, J_PREVIOUS, self.previous);
        put_u64(&mut out, J_NEXT_ID, self.next_id);
        put_u64(&mut out, J_OBJECT_COUNT, self.object_count);
        put_u64(&mut out, J_FILE_END, self.file_end);
        out[J_PUTS..J_PUTS + 4].copy_from_slice(&(self.puts.len() as u32).to_le_bytes());
        out[J_REMOVES..J_REMOVES + 4].copy_from_slice(&(self.removes.len() as u32).to_le_bytes());
        let mut at = J_HEAD;
        for (id, entry) in &self.puts {
            put_u64(&mut out, at, ObjectId::from_parts(*id, entry.tag).0);
            put_u64(&mut out, at + 8, entry.extent.offset);
            put_u64(&mut out, at + 16, entry.len);
            put_u64(&mut out, at + 24, entry.extent.len);
            put_u64(&mut out, at + 32, entry.checksum);
            at += PUT_BYTES;
        }
        for id in &self.removes {
            put_u64(&mut out, at, *id);
            at += REMOVE_BYTES;
        }
        let sum = checksum(&out[..at]);
        put_u64(&mut out, at, sum);
        (out, sum)
    }
}

/// What the bytes at one page boundary of a journal hold.
#[derive(Debug)]
pub(crate) enum Found {
    /// A record of this journal (its salt), whole and checked: the record, its length in
    /// bytes (whole pages) and its checksum.
    Record(Record, u64, u64),
    /// Anything else: zeros, a torn or partly written record, a record of an earlier
    /// journal in this space, a page in the middle of a record.
    Nothing,
}

/// The records of one journal region, in order: each whole, of this journal (its salt) and
/// continuing the one before it (the next generation, chained to its checksum). It ends at the
/// first page boundary that does not hold such a record, or after an `Err` (a record whose
/// checksum holds but whose contents are malformed).
pub(crate) struct Chain<'a> {
    bytes: &'a [u8],
    salt: u64,
    ended: bool,
    /// Bytes of the region the records so far take.
    pub(crate) end: usize,
    /// The last record's generation (the checkpoint's before the first).
    pub(crate) generation: u64,
    /// The last record's checksum (the salt before the first).
    pub(crate) last: u64,
}

impl<'a> Chain<'a> {
    /// The chain in `bytes` (a region from its start) of the checkpoint of `generation`
    /// salted `salt`.
    pub(crate) fn new(bytes: &'a [u8], salt: u64, generation: u64) -> Self {
        Chain { bytes, salt, ended: false, end: 0, generation, last: salt }
    }
}

impl Iterator for Chain<'_> {
    /// A record, its length in bytes (whole pages) and its checksum.
    type Item = Result<(Record, u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended || self.end >= self.bytes.len() {
            return None;
        }
        match decode(&self.bytes[self.end..], self.salt) {
            Ok(Found::Record(record, len, sum))
                if record.generation == self.generation + 1 && record.previous == self.last =>
            {
                self.generation = record.generation;
                self.last = sum;
                self.end += len as usize;
                Some(Ok((record, len, sum)))
            }
            Ok(_) => {
                self.ended = true;
                None
            }
            Err(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes the record at the start of `bytes` (the journal from a page boundary to its end)
/// if it is a whole record of the journal salted `salt`. A record whose checksum holds but
/// whose entries are malformed is corruption: an `Err`. Whether its extents lie inside the
/// file is for the caller to judge ([`Record::fits`]): the last record's may not, when the
/// file's new length did not survive a crash with it.
pub(crate) fn decode(bytes: &[u8], salt: u64) -> Result<Found> {
    if bytes.len() < J_HEAD + TRAILER
        || bytes[J_MAGIC..J_VERSION] != MAGIC
        || !crate::format::readable_version(get_u16(bytes, J_VERSION))
        || get_u64(bytes, J_SALT) != salt
    {
        return Ok(Found::Nothing);
    }
    let count =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (puts, removes) = (count(J_PUTS) as usize, count(J_REMOVES) as usize);
    let body =
        J_HEAD as u64 + puts as u64 * PUT_BYTES as u64 + removes as u64 * REMOVE_BYTES as u64;
    if body + TRAILER as u64 > bytes.len() as u64 {
        return Ok(Found::Nothing); // its counts run past the journal: not a record
    }
    let body = body as usize;
    let sum = get_u64(bytes, body);
    if checksum(&bytes[..body]) != sum {
        return Ok(Found::Nothing);
    }
    let generation = get_u64(bytes, J_GENERATION);
    let corrupt = |why: String| {
        Error::corrupt(Part::Journal, None, format!("record of generation {generation}: {why}"))
    };
    let next_id = get_u64(bytes, J_NEXT_ID);
    if next_id == 0 || next_id > MAX_OBJECTS {
        return Err(corrupt(format!("next id {next_id} is out of range")));
    }
    let mut record = Record {
        generation,
        salt,
        previous: get_u64(bytes, J_PREVIOUS),
        next_id: get_u64(bytes, J_NEXT_ID),
        object_count: get_u64(bytes, J_OBJECT_COUNT),
        file_end: get_u64(bytes, J_FILE_END),
        puts: Vec::with_capacity(puts),
        removes: Vec::with_capacity(removes),
    };
    let mut at = J_HEAD;
    for _ in 0..puts {
        let full = ObjectId(get_u64(bytes, at));
        let id = full.index();
        let entry = Entry {
            extent: Extent::new(get_u64(bytes, at + 8), get_u64(bytes, at + 24)),
            len: get_u64(bytes, at + 16),
            checksum: get_u64(bytes, at + 32),
            tag: full.tag(),
        };
        if id == 0 && full.tag() != 0 {
            return Err(corrupt(format!("the prime object has tag {}, not 0", full.tag())));
        }
        if id >= record.next_id {
            return Err(corrupt(format!("object {id} is past the next id {}", record.next_id)));
        }
        check_entry(&entry, u64::MAX).map_err(|why| corrupt(format!("object {id}: {why}")))?;
        record.puts.push((id, entry));
        at += PUT_BYTES;
    }
    for _ in 0..removes {
        record.removes.push(get_u64(bytes, at));
        at += REMOVE_BYTES;
    }
    Ok(Found::Record(record, encoded_len(puts, removes), sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let entry = Entry { extent: Extent::new(1 << 20, 4096), len: 4000, checksum: 77, tag: 8 };
        Record {
            generation: 9,
            salt: 0x5A17,
            previous: 0x5A17,
            next_id: 40,
            object_count: 12,
            file_end: 2 << 20,
            puts: vec![(3, entry), (39, entry)],
            removes: vec![5, 6],
        }
    }

    #[test]
    fn records_round_trip_in_whole_pages() {
        let (bytes, sum) = record().encode();
        assert_eq!(bytes.len(), PAGE_BYTES);
        match decode(&bytes, 0x5A17).unwrap() {
            Found::Record(got, len, got_sum) => {
                assert_eq!((got, len, got_sum), (record(), PAGE_BYTES as u64, sum));
            }
            Found::Nothing => panic!("not decoded"),
        }
        assert_eq!(encoded_len(101, 0), 2 * PAGE_BYTES as u64);
    }

    #[test]
    fn any_flip_another_salt_or_a_short_read_is_no_record() {
        let (bytes, _) = record().encode();
        let used = J_HEAD + 2 * PUT_BYTES + 2 * REMOVE_BYTES + TRAILER;
        for byte in 0..used {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x04;
            let found = decode(&bad, 0x5A17);
            assert!(matches!(found, Ok(Found::Nothing)), "flip at {byte}: {found:?}");
        }
        assert!(matches!(decode(&bytes, 0x5A18), Ok(Found::Nothing)));
        assert!(matches!(decode(&bytes[..used - 1], 0x5A17), Ok(Found::Nothing)));
    }

    #[test]
    fn a_record_knows_whether_it_fits_the_file() {
        assert!(record().fits(4 << 20).is_ok());
        assert!(record().fits(1 << 20).is_err());
    }
}
