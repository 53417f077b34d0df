//! The store's on-disk structures: header slots, the table root and table pages
//! (`docs/format.md`, "Object store"). Encoders and decoders only; no I/O.
//!
//! Decoders bound every field by the file length and the format's limits and return
//! `Error::Corrupt`; they never panic.

use bob_alloc::Extent;
use bob_io_helpers::checksum;

#[cfg(doc)]
use crate::ObjectId;
use crate::error::Part;
use crate::{Error, Result};

/// Bytes reserved at the start of the file for the two header slots.
pub const HEADER_REGION: u64 = 2 * SLOT_BYTES as u64;
/// Each header slot is a whole 4 KiB page of its own, written and read alone, so a write
/// that damages the page it touches (the medium's unit of damage) damages one slot only.
pub(crate) const SLOT_BYTES: usize = PAGE_BYTES;
/// Offsets of the two header slots.
pub(crate) const SLOT_OFFSETS: [u64; 2] = [0, SLOT_BYTES as u64];
/// Where format 1 kept its second header slot (both slots shared the first 4 KiB page).
pub(crate) const FORMAT_1_SLOT_OFFSETS: [u64; 2] = [0, 512];

pub(crate) const HEADER_MAGIC: [u8; 8] = *b"BOBSTORE";
/// The store format version this build writes. It reads this one and every version from
/// [`OLDEST_READ_VERSION`] on: version 4 differs only in allowing journal regions of at most
/// 1 MiB (version 5: 8 MiB), so a version 4 file opens as it is, and what a writer rewrites
/// (header, table pages, root, journal records) is written as version 5.
pub const FORMAT_VERSION: u16 = 5;

/// The oldest store format version this build reads.
pub const OLDEST_READ_VERSION: u16 = 4;

/// Whether this build reads structures of store format `version`.
pub(crate) fn readable_version(version: u16) -> bool {
    (OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version)
}

const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_KIND: usize = H_VERSION + 2;
const H_FLAGS: usize = H_KIND + 2;
const H_GENERATION: usize = H_FLAGS + 4;
/// Header flag: the slot was written by a clean close once everything its state names was
/// durable (see [`Header::sealed`]).
const FLAG_SEALED: u32 = 1;
const H_ROOT_OFFSET: usize = H_GENERATION + 8;
const H_ROOT_LEN: usize = H_ROOT_OFFSET + 8;
const H_ROOT_ALLOC_LEN: usize = H_ROOT_LEN + 8;
const H_ROOT_CHECKSUM: usize = H_ROOT_ALLOC_LEN + 8;
const H_NEXT_ID: usize = H_ROOT_CHECKSUM + 8;
const H_OBJECT_COUNT: usize = H_NEXT_ID + 8;
const H_FILE_END: usize = H_OBJECT_COUNT + 8;
const H_JOURNAL_0: usize = H_FILE_END + 8;
const H_JOURNAL_1: usize = H_JOURNAL_0 + 8;
const H_JOURNAL_LEN: usize = H_JOURNAL_1 + 8;
const H_SALT: usize = H_JOURNAL_LEN + 8;
const H_CHECKSUM: usize = H_SALT + 8;
/// Bytes of a header slot that carry data (the rest of the sector is zero).
pub(crate) const HEADER_LEN: usize = H_CHECKSUM + 8;

/// Bytes of a table page.
pub(crate) const PAGE_BYTES: usize = 4096;
/// Object table entries per page.
pub(crate) const ENTRIES_PER_PAGE: u64 = 112;
const P_MAGIC: usize = 0;
const P_VERSION: usize = P_MAGIC + 4;
const P_RESERVED: usize = P_VERSION + 2;
const P_INDEX: usize = P_RESERVED + 2;
const P_PRESENT: usize = P_INDEX + 8;
const P_ENTRIES: usize = P_PRESENT + 16;
const ENTRY_BYTES: usize = 36;
/// Zero bytes after the last entry.
const P_TAIL: usize = P_ENTRIES + ENTRIES_PER_PAGE as usize * ENTRY_BYTES;
const _: () = assert!(P_TAIL <= PAGE_BYTES && PAGE_BYTES - P_TAIL < ENTRY_BYTES);
const PAGE_MAGIC: [u8; 4] = *b"BOBT";

const ROOT_MAGIC: [u8; 4] = *b"BOBR";
const R_HEADER: usize = 16;
const PAGE_REF_BYTES: usize = 16;

/// The most objects a store holds (ids below this); bounds the root and the table.
pub const MAX_OBJECTS: u64 = 1 << 32;
/// The most table pages a root can name.
pub(crate) const MAX_PAGES: u64 = MAX_OBJECTS.div_ceil(ENTRIES_PER_PAGE);
/// The longest root: every page named (about 541 MB), the bound on a root's length read from
/// a header before anything is read or allocated from it.
pub(crate) const MAX_ROOT_BYTES: u64 = R_HEADER as u64 + MAX_PAGES * PAGE_REF_BYTES as u64;

pub(crate) fn put_u16(out: &mut [u8], at: usize, value: u16) {
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Reads a little-endian u64 at `at`; the caller has checked `bytes` is long enough.
pub(crate) fn get_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

pub(crate) fn get_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// One committed state, as a header slot names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The format version the slot was written in (`encode` writes [`FORMAT_VERSION`]).
    pub(crate) version: u16,
    pub(crate) kind: u16,
    pub(crate) generation: u64,
    /// The root's allocated extent.
    pub(crate) root: Extent,
    /// The root's logical length (at most `root.len`).
    pub(crate) root_len: u64,
    pub(crate) root_checksum: u64,
    pub(crate) next_id: u64,
    pub(crate) object_count: u64,
    pub(crate) file_end: u64,
    /// The two journal regions (whole pages, `journal_len` bytes each). The commit a slot
    /// names journals into the region of the slot's index; the other region belongs to the
    /// other slot's commit.
    pub(crate) journal: [u64; 2],
    pub(crate) journal_len: u64,
    /// Salts this checkpoint's journal records (chosen afresh at every checkpoint).
    pub(crate) salt: u64,
    /// Written by a clean close after a checkpoint of the same state was durable, the
    /// state's data with it: open may trust what the page cache shows of this slot (no sync,
    /// no reads from the device), see `docs/format.md`, "Open rules". Older builds ignore
    /// the flag and never write it.
    pub(crate) sealed: bool,
}

impl Header {
    /// Journal region `index` (0 or 1).
    pub(crate) fn journal_region(&self, index: usize) -> Extent {
        Extent::new(self.journal[index], self.journal_len)
    }

    pub(crate) fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut slot = [0u8; SLOT_BYTES];
        slot[H_MAGIC..H_VERSION].copy_from_slice(&HEADER_MAGIC);
        put_u16(&mut slot, H_VERSION, FORMAT_VERSION);
        put_u16(&mut slot, H_KIND, self.kind);
        let flags = if self.sealed { FLAG_SEALED } else { 0 };
        slot[H_FLAGS..H_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
        put_u64(&mut slot, H_GENERATION, self.generation);
        put_u64(&mut slot, H_ROOT_OFFSET, self.root.offset);
        put_u64(&mut slot, H_ROOT_LEN, self.root_len);
        put_u64(&mut slot, H_ROOT_ALLOC_LEN, self.root.len);
        put_u64(&mut slot, H_ROOT_CHECKSUM, self.root_checksum);
        put_u64(&mut slot, H_NEXT_ID, self.next_id);
        put_u64(&mut slot, H_OBJECT_COUNT, self.object_count);
        put_u64(&mut slot, H_FILE_END, self.file_end);
        put_u64(&mut slot, H_JOURNAL_0, self.journal[0]);
        put_u64(&mut slot, H_JOURNAL_1, self.journal[1]);
        put_u64(&mut slot, H_JOURNAL_LEN, self.journal_len);
        put_u64(&mut slot, H_SALT, self.salt);
        let sum = checksum(&slot[..H_CHECKSUM]);
        put_u64(&mut slot, H_CHECKSUM, sum);
        slot
    }

    /// Decodes one slot. `Ok(None)` for a slot that is not valid (torn, never written,
    /// checksum wrong); `Err` only when the slot is valid but for a format this build cannot
    /// read (a newer version), which must not be silently skipped.
    pub(crate) fn decode(slot: &[u8]) -> Result<Option<Header>> {
        if slot.len() < HEADER_LEN || slot[H_MAGIC..H_VERSION] != HEADER_MAGIC {
            return Ok(None);
        }
        if checksum(&slot[..H_CHECKSUM]) != get_u64(slot, H_CHECKSUM) {
            return Ok(None);
        }
        let version = get_u16(slot, H_VERSION);
        if !readable_version(version) {
            return Err(Error::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
        }
        Ok(Some(Header {
            version,
            kind: get_u16(slot, H_KIND),
            generation: get_u64(slot, H_GENERATION),
            root: Extent::new(get_u64(slot, H_ROOT_OFFSET), get_u64(slot, H_ROOT_ALLOC_LEN)),
            root_len: get_u64(slot, H_ROOT_LEN),
            root_checksum: get_u64(slot, H_ROOT_CHECKSUM),
            next_id: get_u64(slot, H_NEXT_ID),
            object_count: get_u64(slot, H_OBJECT_COUNT),
            file_end: get_u64(slot, H_FILE_END),
            journal: [get_u64(slot, H_JOURNAL_0), get_u64(slot, H_JOURNAL_1)],
            journal_len: get_u64(slot, H_JOURNAL_LEN),
            salt: get_u64(slot, H_SALT),
            sealed: u32::from_le_bytes(slot[H_FLAGS..H_FLAGS + 4].try_into().expect("4 bytes"))
                & FLAG_SEALED
                != 0,
        }))
    }
}

/// Where one object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Allocated space (offset 0 and length 0 for an object of 0 bytes).
    pub(crate) extent: Extent,
    /// Logical length: the bytes a read returns.
    pub(crate) len: u64,
    /// xxh3-64 of the logical bytes.
    pub(crate) checksum: u64,
    /// The tag of the object's id ([`ObjectId::tag`]); the table's index is the rest.
    pub(crate) tag: u32,
}

/// The location and checksum of one table page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRef {
    pub(crate) offset: u64,
    pub(crate) checksum: u64,
}

/// Page `index`'s bytes from its entries (`None` = no object with that id).
pub(crate) fn encode_page(index: u64, entries: &[Option<Entry>]) -> Vec<u8> {
    debug_assert!(entries.len() as u64 <= ENTRIES_PER_PAGE);
    let mut page = vec![0u8; PAGE_BYTES];
    page[P_MAGIC..P_VERSION].copy_from_slice(&PAGE_MAGIC);
    put_u16(&mut page, P_VERSION, FORMAT_VERSION);
    put_u64(&mut page, P_INDEX, index);
    let mut present = [0u64; 2];
    for (slot, entry) in entries.iter().enumerate() {
        let Some(entry) = entry else { continue };
        present[slot / 64] |= 1 << (slot % 64);
        let at = P_ENTRIES + slot * ENTRY_BYTES;
        put_u64(&mut page, at, entry.extent.offset);
        put_u64(&mut page, at + 8, entry.len);
        put_u64(&mut page, at + 16, entry.extent.len);
        put_u64(&mut page, at + 24, entry.checksum);
        page[at + 32..at + 36].copy_from_slice(&entry.tag.to_le_bytes());
    }
    put_u64(&mut page, P_PRESENT, present[0]);
    put_u64(&mut page, P_PRESENT + 8, present[1]);
    page
}

/// Decodes page `index`, checking every entry lies inside `file_len` past the header region.
pub(crate) fn decode_page(index: u64, page: &[u8], file_len: u64) -> Result<Vec<Option<Entry>>> {
    let mut entries = vec![None; ENTRIES_PER_PAGE as usize];
    decode_page_with(index, page, file_len, |slot, entry| entries[slot] = Some(entry))?;
    Ok(entries)
}

/// Decodes page `index`, calling `each(slot, entry)` for every present entry. On an error,
/// some entries may already have been passed on.
pub(crate) fn decode_page_with(
    index: u64,
    page: &[u8],
    file_len: u64,
    mut each: impl FnMut(usize, Entry),
) -> Result<()> {
    let corrupt = |what: String| Error::corrupt(Part::TablePage(index), None, what);
    if page.len() != PAGE_BYTES || page[P_MAGIC..P_VERSION] != PAGE_MAGIC {
        return Err(corrupt("bad magic or length".into()));
    }
    if !readable_version(get_u16(page, P_VERSION)) || get_u64(page, P_INDEX) != index {
        return Err(corrupt(format!(
            "holds page {} of version {}",
            get_u64(page, P_INDEX),
            get_u16(page, P_VERSION)
        )));
    }
    let present = [get_u64(page, P_PRESENT), get_u64(page, P_PRESENT + 8)];
    if present[1] >> (ENTRIES_PER_PAGE - 64) != 0 {
        return Err(corrupt("presence bits past the last entry".into()));
    }
    if page[P_TAIL..].iter().any(|&b| b != 0) {
        return Err(corrupt("bytes after the last entry are not zero".into()));
    }
    for slot in 0..ENTRIES_PER_PAGE as usize {
        let at = P_ENTRIES + slot * ENTRY_BYTES;
        if present[slot / 64] & (1 << (slot % 64)) == 0 {
            if page[at..at + ENTRY_BYTES].iter().any(|&b| b != 0) {
                return Err(corrupt(format!("absent entry {slot} is not zero")));
            }
            continue;
        }
        let entry = Entry {
            extent: Extent::new(get_u64(page, at), get_u64(page, at + 16)),
            len: get_u64(page, at + 8),
            checksum: get_u64(page, at + 24),
            tag: u32::from_le_bytes(page[at + 32..at + 36].try_into().expect("4 bytes")),
        };
        check_entry(&entry, file_len).map_err(|why| corrupt(format!("entry {slot}: {why}")))?;
        if index == 0 && slot == 0 && entry.tag != 0 {
            return Err(corrupt(format!("the prime object has tag {}, not 0", entry.tag)));
        }
        each(slot, entry);
    }
    Ok(())
}

pub(crate) fn check_entry(entry: &Entry, file_len: u64) -> std::result::Result<(), String> {
    let extent = entry.extent;
    if extent.len == 0 {
        return if entry.len == 0 && extent.offset == 0 {
            Ok(())
        } else {
            Err("an empty extent holds bytes".into())
        };
    }
    if entry.len > extent.len {
        return Err(format!("logical length {} exceeds allocated {}", entry.len, extent.len));
    }
    match extent.checked_end() {
        Some(end) if extent.offset >= HEADER_REGION && end <= file_len => Ok(()),
        _ => Err(format!(
            "extent at {} ({} bytes) lies outside the file of {file_len} bytes",
            extent.offset, extent.len
        )),
    }
}

/// The root: where each table page lives. Absent pages have offset 0.
pub(crate) fn encode_root(pages: &[Option<PageRef>]) -> Vec<u8> {
    let mut root = vec![0u8; R_HEADER + pages.len() * PAGE_REF_BYTES];
    root[..4].copy_from_slice(&ROOT_MAGIC);
    put_u16(&mut root, 4, FORMAT_VERSION);
    put_u64(&mut root, 8, pages.len() as u64);
    for (index, page) in pages.iter().enumerate() {
        if let Some(page) = page {
            let at = R_HEADER + index * PAGE_REF_BYTES;
            put_u64(&mut root, at, page.offset);
            put_u64(&mut root, at + 8, page.checksum);
        }
    }
    root
}

pub(crate) fn decode_root(root: &[u8], file_len: u64) -> Result<Vec<Option<PageRef>>> {
    let corrupt = |what: String| Error::corrupt(Part::Root, None, what);
    if root.len() < R_HEADER || root[..4] != ROOT_MAGIC || !readable_version(get_u16(root, 4)) {
        return Err(corrupt("bad magic, version or length".into()));
    }
    let count = get_u64(root, 8);
    if count.checked_mul(PAGE_REF_BYTES as u64).and_then(|n| n.checked_add(R_HEADER as u64))
        != Some(root.len() as u64)
    {
        return Err(corrupt(format!("{count} pages do not fill {} bytes", root.len())));
    }
    let mut pages = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let at = R_HEADER + index * PAGE_REF_BYTES;
        let (offset, sum) = (get_u64(root, at), get_u64(root, at + 8));
        if offset == 0 {
            if sum != 0 {
                return Err(corrupt(format!("absent page {index} has a checksum")));
            }
            pages.push(None);
        } else if offset < HEADER_REGION
            || offset.checked_add(PAGE_BYTES as u64).is_none_or(|end| end > file_len)
        {
            return Err(corrupt(format!("page {index} at {offset} lies outside the file")));
        } else {
            pages.push(Some(PageRef { offset, checksum: sum }));
        }
    }
    Ok(pages)
}

/// The page holding index `index` ([`ObjectId::index`]), and the slot in it.
pub(crate) fn page_of(index: u64) -> (u64, usize) {
    (index / ENTRIES_PER_PAGE, (index % ENTRIES_PER_PAGE) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: FORMAT_VERSION,
            kind: 1,
            generation: 7,
            root: Extent::new(8192, 64),
            root_len: 48,
            root_checksum: 0xABCD,
            next_id: 300,
            object_count: 12,
            file_end: 1 << 20,
            journal: [8192, 8192 + 65536],
            journal_len: 65536,
            salt: 0xFEED,
            sealed: false,
        }
    }

    #[test]
    fn header_round_trips_and_rejects_any_flip() {
        let slot = header().encode();
        assert_eq!(Header::decode(&slot).unwrap(), Some(header()));
        for byte in 0..HEADER_LEN {
            let mut bad = slot;
            bad[byte] ^= 0x10;
            assert_eq!(Header::decode(&bad).unwrap(), None, "flip at {byte}");
        }
        assert_eq!(Header::decode(&[0u8; SLOT_BYTES]).unwrap(), None);
    }

    #[test]
    fn a_newer_version_is_an_error_not_a_skip() {
        let with_version = |version: u16| {
            let mut slot = header().encode();
            put_u16(&mut slot, H_VERSION, version);
            let sum = checksum(&slot[..H_CHECKSUM]);
            put_u64(&mut slot, H_CHECKSUM, sum);
            Header::decode(&slot)
        };
        for version in [FORMAT_VERSION + 1, OLDEST_READ_VERSION - 1, 1] {
            let got = with_version(version);
            assert!(
                matches!(got, Err(Error::UnsupportedVersion { found, .. }) if found == version),
                "{version}: {got:?}"
            );
        }
        // Version 4 is read (and says so); what this build writes is version 5.
        assert_eq!(with_version(4).unwrap().unwrap().version, 4);
        assert_eq!(Header::decode(&header().encode()).unwrap().unwrap().version, FORMAT_VERSION);
        // A table page, root or journal record of an unread version is refused too.
        assert!(!readable_version(3) && readable_version(4) && readable_version(5));
        assert!(!readable_version(FORMAT_VERSION + 1));
    }

    #[test]
    fn pages_round_trip_and_check_bounds() {
        let mut entries = vec![None; ENTRIES_PER_PAGE as usize];
        let at = HEADER_REGION;
        entries[0] = Some(Entry { extent: Extent::new(at, 100), len: 90, checksum: 5, tag: 7 });
        entries[111] =
            Some(Entry { extent: Extent::new(0, 0), len: 0, checksum: 9, tag: u32::MAX });
        let page = encode_page(3, &entries);
        assert_eq!(decode_page(3, &page, at + 10_000).unwrap(), entries);
        assert!(decode_page(4, &page, at + 10_000).is_err(), "misdirected page");
        assert!(decode_page(3, &page, at + 4).is_err(), "extent past the file end");
        let mut below = entries.clone();
        below[0] = Some(Entry { extent: Extent::new(4096, 100), len: 90, checksum: 5, tag: 7 });
        let page = encode_page(3, &below);
        assert!(decode_page(3, &page, at + 10_000).is_err(), "extent in the header slots");
    }

    #[test]
    fn roots_round_trip() {
        let pages = vec![Some(PageRef { offset: HEADER_REGION, checksum: 1 }), None];
        let root = encode_root(&pages);
        let file_len = HEADER_REGION + 4096;
        assert_eq!(decode_root(&root, file_len).unwrap(), pages);
        assert!(decode_root(&root[..root.len() - 1], file_len).is_err());
        assert!(decode_root(&root, HEADER_REGION).is_err());
    }
}
