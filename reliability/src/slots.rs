//! The store's header slots, decoded from a file image on their own (`docs/format.md`,
//! "Header slot"), so a campaign can tell which commit an open should have taken without
//! asking the store it is checking.

use bob_io_helpers::checksum;

/// Bytes between the starts of the two header slots: each is a 4 KiB page of its own.
pub const SLOT_STRIDE: usize = 4096;
/// Where the journal regions begin: after the two header slots.
pub const HEADER_REGION: usize = 2 * SLOT_STRIDE;
const MAGIC: &[u8; 8] = b"BOBSTORE";
const FLAGS: usize = 12;
const GENERATION: usize = 16;
const SALT: usize = 104;
const CHECKSUM: usize = 112;

/// What one header slot of an image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Magic and checksum hold: an intact slot naming this generation.
    Intact(u64),
    /// The magic is there but the checksum fails: a damaged slot. (A power loss damages
    /// whole pages, so it leaves a slot old, new, zeroed or garbage: [`Slot::Empty`] then.)
    Torn,
    /// No magic (never written, zeroed, garbage, or past the end of the file).
    Empty,
}

/// Slot `i` (0 or 1) of `image`.
pub fn slot(image: &[u8], i: usize) -> Slot {
    let start = i * SLOT_STRIDE;
    let Some(bytes) = image.get(start..start + CHECKSUM + 8) else {
        return Slot::Empty;
    };
    if &bytes[..8] != MAGIC {
        return Slot::Empty;
    }
    let stored = u64::from_le_bytes(bytes[CHECKSUM..].try_into().unwrap_or_default());
    if checksum(&bytes[..CHECKSUM]) != stored {
        return Slot::Torn;
    }
    Slot::Intact(u64::from_le_bytes(
        bytes[GENERATION..GENERATION + 8].try_into().unwrap_or_default(),
    ))
}

/// One journal record found in an image (decoded here, not by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Where it starts in the image.
    pub offset: usize,
    /// Bytes its checksum covers (head, entries, trailer).
    pub checked_len: usize,
    /// Bytes it takes (whole pages).
    pub len: usize,
    /// Its generation.
    pub generation: u64,
    /// The extents (offset, allocated length) of the objects it wrote.
    pub puts: Vec<(u64, u64)>,
}

/// The active journal of an image's newest intact slot: its region, its salt, and the records
/// of that salt found at page boundaries of the region, in the region's order (the store's
/// chain rules decide which of them count; this only finds them).
#[derive(Debug, Clone)]
pub struct ActiveJournal {
    /// The region's offset and length.
    pub region: (usize, usize),
    /// The checkpoint's generation.
    pub generation: u64,
    /// The records of this checkpoint's salt.
    pub records: Vec<JournalRecord>,
    /// Page offsets of the region holding a record of another salt (an earlier use).
    pub stale: Vec<usize>,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

fn u32_at(bytes: &[u8], at: usize) -> usize {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        as usize
}

/// The active journal of `image`, if it has an intact slot: the journal of the slot open
/// takes ([`expected_open`]: the newest intact slot, or the older slot of a sealed pair, whose
/// salt the journal's records carry).
pub fn active_journal(image: &[u8]) -> Option<ActiveJournal> {
    let generation = expected_open(image)?;
    let index = (0..2).find(|&i| slot(image, i) == Slot::Intact(generation))?;
    let header = &image[index * SLOT_STRIDE..];
    let region = (u64_at(header, 80 + 8 * index) as usize, u64_at(header, 96) as usize);
    let salt = u64_at(header, 104);
    let mut journal = ActiveJournal { region, generation, records: Vec::new(), stale: Vec::new() };
    let end = (region.0 + region.1).min(image.len());
    let mut at = region.0;
    while at + 64 <= end {
        let head = &image[at..];
        if &head[..4] == b"BOBJ" {
            if u64_at(head, 16) == salt {
                let (puts, removes) = (u32_at(head, 56), u32_at(head, 60));
                let checked_len = 64 + puts * 40 + removes * 8 + 8;
                let len = checked_len.next_multiple_of(SLOT_STRIDE);
                let extents = (0..puts.min(1 << 16))
                    .map(|i| (u64_at(head, 64 + i * 40 + 8), u64_at(head, 64 + i * 40 + 24)))
                    .collect();
                journal.records.push(JournalRecord {
                    offset: at,
                    checked_len,
                    len,
                    generation: u64_at(head, 8),
                    puts: extents,
                });
            } else {
                journal.stale.push(at);
            }
        }
        at += SLOT_STRIDE;
    }
    Some(journal)
}

/// The generation of the commit a strict open of `image` must take (or refuse as damaged),
/// never an older one: the newest intact slot's, but for a sealed pair (both slots intact,
/// the newer sealed, one generation later, and the older's fields otherwise, `docs/format.md`,
/// "Open rules", 1) the older slot's, which names the same state.
pub fn expected_open(image: &[u8]) -> Option<u64> {
    let newest = newest_intact(image)?;
    Some(sealed_pair(image).map_or(newest, |(older, _)| older))
}

/// The generations (older, sealed) of `image`'s slots when they are a sealed pair.
pub fn sealed_pair(image: &[u8]) -> Option<(u64, u64)> {
    let (Slot::Intact(a), Slot::Intact(b)) = (slot(image, 0), slot(image, 1)) else {
        return None;
    };
    let (seal, older) = if a > b { (0, 1) } else { (1, 0) };
    let fields = |i: usize| &image[i * SLOT_STRIDE..i * SLOT_STRIDE + CHECKSUM];
    let flags = |i: usize| u32_at(fields(i), FLAGS) & 1;
    let (s, o) = (fields(seal), fields(older));
    // Equal but for the flags, the generation and the salt.
    let same = |range: std::ops::Range<usize>| s[range.clone()] == o[range];
    let pair = flags(seal) == 1
        && flags(older) == 0
        && u64_at(s, GENERATION) == u64_at(o, GENERATION) + 1
        && same(0..FLAGS)
        && same(GENERATION + 8..SALT);
    pair.then(|| (u64_at(o, GENERATION), u64_at(s, GENERATION)))
}

/// The generation of the newest intact slot of `image`, if any.
pub fn newest_intact(image: &[u8]) -> Option<u64> {
    (0..2)
        .filter_map(|i| match slot(image, i) {
            Slot::Intact(generation) => Some(generation),
            _ => None,
        })
        .max()
}

#[cfg(test)]
mod tests {
    use bob_alloc::BasicAllocator;
    use bob_io_helpers::testing::SimDisk;
    use bob_store_core::{Store, StoreOptions, Storer};

    use super::*;

    #[test]
    fn decodes_the_generations_the_store_writes() {
        let disk = SimDisk::new();
        let mut store = Store::<BasicAllocator, SimDisk>::create_with(
            disk.clone(),
            StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() },
        )
        .expect("create");
        store.write_new_obj_from_bytes(b"x").expect("write");
        // A checkpoint: a journaled commit writes no header slot.
        store.checkpoint().expect("checkpoint");
        let generation = store.generation();
        let image = disk.live_image();
        assert_eq!(newest_intact(&image), Some(generation));
        let mut torn = image.clone();
        let newest = (0..2).find(|&i| slot(&image, i) == Slot::Intact(generation)).expect("slot");
        torn[newest * SLOT_STRIDE + 40] ^= 1;
        assert_eq!(slot(&torn, newest), Slot::Torn);
        assert_eq!(newest_intact(&torn), Some(generation - 1));
    }

    /// A clean close seals: the pair is found, and open is expected to take the older slot.
    #[test]
    fn a_sealed_pair_expects_the_older_slot() {
        let disk = SimDisk::new();
        let options = StoreOptions { journal_bytes: 4 * 4096, ..StoreOptions::default() };
        let mut store =
            Store::<BasicAllocator, SimDisk>::create_with(disk.clone(), options).expect("create");
        store.write_new_obj_from_bytes(b"x").expect("write");
        store.checkpoint().expect("checkpoint");
        let generation = store.generation();
        assert_eq!(sealed_pair(&disk.live_image()), None);
        store.close().expect("close");
        let image = disk.live_image();
        assert_eq!(sealed_pair(&image), Some((generation, generation + 1)));
        assert_eq!(expected_open(&image), Some(generation));
        assert_eq!(newest_intact(&image), Some(generation + 1));
        // The journal the campaigns look at is the one open reads: the older slot's.
        assert_eq!(active_journal(&image).map(|j| j.generation), Some(generation));
        let reopened =
            Store::<BasicAllocator, SimDisk>::open_with(disk.clone(), options).expect("open");
        assert_eq!(reopened.generation(), generation);
    }
}
