//! The store's header slots, decoded from a file image on their own (`docs/format.md`,
//! "Header slot"), so a campaign can tell which commit an open should have taken without
//! asking the store it is checking.

use bob_io_helpers::checksum;

/// Bytes between the starts of the two header slots: each is a 4 KiB page of its own.
pub const SLOT_STRIDE: usize = 4096;
const MAGIC: &[u8; 8] = b"BOBSTORE";
const GENERATION: usize = 16;
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

/// The generation of the newest intact slot of `image`, if any: the commit a strict open must
/// take (or refuse as damaged), never an older one.
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
}
