//! `FreeSpace`: the free extents of a `BasicAllocator`, indexed for O(1) work per change.
//!
//! - `by_start` (start → length and position in its bucket) and `by_end` (end → start) find a
//!   freed extent's neighbours in O(1), so coalescing needs no ordered search.
//! - A two-level segregated-fit index finds a hole for a request: 16 buckets per power of two
//!   (exact buckets below 32 bytes), each a vector of `(start, len)`, and a bitmap of the
//!   non-empty buckets. Every hole in a bucket above the request's own fits it; holes in the
//!   request's own bucket are within 1/16 of its size and may or may not.
//!
//! Search order for a request of `len` bytes: up to [`OWN_BUCKET_PEEK`] holes of its own
//! bucket (a tight fit, often exact), then the most recent hole of the lowest non-empty bucket
//! above it, then the rest of its own bucket. Only if all fail does the file grow, so a hole
//! that fits is always reused. Ties go to the most recently freed hole (it is likely cached).
//! An aligned request (`carve_aligned`) scans at most [`ALIGNED_SCAN`] holes past the peeked
//! ones before growing the file, so it may miss a fitting hole deep in a bucket of holes that
//! do not fit once aligned (every hole of `len + align - 1` bytes or more fits, and is found).

use std::collections::HashMap;

use foldhash::fast::FixedState;

use crate::Extent;

pub(crate) type Map<K, V> = HashMap<K, V, FixedState>;

const SUB_BITS: u32 = 4;
const SUBS: usize = 1 << SUB_BITS;
/// Buckets for lengths up to 2^64: exact ones below 32, then 16 per power of two.
const BUCKETS: usize = SUBS + (64 - SUB_BITS as usize) * SUBS;
const BUCKET_WORDS: usize = BUCKETS.div_ceil(64);
/// Own-bucket holes tried before looking in bigger buckets.
pub(crate) const OWN_BUCKET_PEEK: usize = 8;
/// Holes an aligned request scans, past the peeked ones, before growing the file.
pub(crate) const ALIGNED_SCAN: usize = 1024;

fn bucket_of(len: u64) -> usize {
    if len < 2 * SUBS as u64 {
        return len as usize;
    }
    let log = 63 - len.leading_zeros();
    let sub = (len >> (log - SUB_BITS)) as usize & (SUBS - 1);
    SUBS + (log - SUB_BITS) as usize * SUBS + sub
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    len: u64,
    /// Index of this hole in `buckets[bucket_of(len)]`.
    position: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct FreeSpace {
    by_start: Map<u64, Entry>,
    by_end: Map<u64, u64>,
    buckets: Vec<Vec<(u64, u64)>>,
    nonempty: [u64; BUCKET_WORDS],
    bytes: u64,
}

impl PartialEq for FreeSpace {
    /// Equal when they hold the same extents, whatever the order inside buckets.
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
            && self.by_start.len() == other.by_start.len()
            && self
                .by_start
                .iter()
                .all(|(s, e)| other.by_start.get(s).map(|o| o.len) == Some(e.len))
    }
}

impl Eq for FreeSpace {}

impl Default for FreeSpace {
    fn default() -> Self {
        Self {
            by_start: Map::default(),
            by_end: Map::default(),
            buckets: vec![Vec::new(); BUCKETS],
            nonempty: [0; BUCKET_WORDS],
            bytes: 0,
        }
    }
}

impl FreeSpace {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The free extent starting at `start`, if any.
    pub(crate) fn starting_at(&self, start: u64) -> Option<u64> {
        self.by_start.get(&start).map(|e| e.len)
    }

    /// The start of the free extent ending at `end`, if any.
    pub(crate) fn ending_at(&self, end: u64) -> Option<u64> {
        self.by_end.get(&end).copied()
    }

    /// All free extents, in offset order (sorts: for tests, `verify` and stats).
    pub(crate) fn sorted(&self) -> Vec<Extent> {
        let mut all: Vec<Extent> =
            self.by_start.iter().map(|(&s, e)| Extent::new(s, e.len)).collect();
        all.sort_unstable();
        all
    }

    /// The longest free extent (scans the highest non-empty bucket).
    pub(crate) fn largest(&self) -> u64 {
        self.largest_hole().map_or(0, |(_, len)| len)
    }

    /// The longest free extent as `(start, length)` (scans the highest non-empty bucket).
    pub(crate) fn largest_hole(&self) -> Option<(u64, u64)> {
        let word = (0..BUCKET_WORDS).rev().find(|&w| self.nonempty[w] != 0)?;
        let bucket = word * 64 + 63 - self.nonempty[word].leading_zeros() as usize;
        self.buckets[bucket].iter().copied().max_by_key(|&(_, len)| len)
    }

    pub(crate) fn insert(&mut self, start: u64, len: u64) {
        let bucket = bucket_of(len);
        let position = self.buckets[bucket].len();
        self.buckets[bucket].push((start, len));
        self.nonempty[bucket / 64] |= 1 << (bucket % 64);
        self.by_start.insert(start, Entry { len, position });
        self.by_end.insert(start + len, start);
        self.bytes += len;
    }

    /// Removes the free extent starting at `start`, returning its length.
    pub(crate) fn remove(&mut self, start: u64) -> Option<u64> {
        let entry = self.by_start.remove(&start)?;
        self.by_end.remove(&(start + entry.len));
        self.unlink_from_bucket(bucket_of(entry.len), entry.position);
        self.bytes -= entry.len;
        Some(entry.len)
    }

    /// Replaces the free extent at `start` by `new_start..new_start + new_len`, which shares
    /// its start or its end (a carve from the front, or a merge with a neighbour): the shared
    /// end's index entry is updated in place rather than removed and re-inserted.
    pub(crate) fn replace(&mut self, start: u64, new_start: u64, new_len: u64) {
        let Some(old) = self.by_start.get(&start).copied() else { return };
        let (old_end, new_end) = (start + old.len, new_start + new_len);
        debug_assert!(start == new_start || old_end == new_end);
        let (old_bucket, new_bucket) = (bucket_of(old.len), bucket_of(new_len));
        let position = if old_bucket == new_bucket {
            self.buckets[old_bucket][old.position] = (new_start, new_len);
            old.position
        } else {
            self.unlink_from_bucket(old_bucket, old.position);
            self.buckets[new_bucket].push((new_start, new_len));
            self.nonempty[new_bucket / 64] |= 1 << (new_bucket % 64);
            self.buckets[new_bucket].len() - 1
        };
        let entry = Entry { len: new_len, position };
        if start == new_start {
            self.by_start.insert(start, entry);
            self.by_end.remove(&old_end);
            self.by_end.insert(new_end, new_start);
        } else {
            self.by_start.remove(&start);
            self.by_start.insert(new_start, entry);
            self.by_end.insert(new_end, new_start);
        }
        self.bytes = self.bytes - old.len + new_len;
    }

    /// Removes the hole at `position` of `bucket`, fixing the position of the one moved into
    /// its place.
    fn unlink_from_bucket(&mut self, bucket: usize, position: usize) {
        let holes = &mut self.buckets[bucket];
        holes.swap_remove(position);
        if let Some(&(moved, _)) = holes.get(position) {
            if let Some(moved_entry) = self.by_start.get_mut(&moved) {
                moved_entry.position = position;
            }
        }
        if holes.is_empty() {
            self.nonempty[bucket / 64] &= !(1 << (bucket % 64));
        }
    }

    /// The lowest non-empty bucket above `bucket`.
    fn nonempty_above(&self, bucket: usize) -> Option<usize> {
        let first = bucket + 1;
        let mut word = first / 64;
        let mut bits =
            self.nonempty.get(word)? & (u64::MAX.checked_shl((first % 64) as u32).unwrap_or(0));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.nonempty.get(word)?;
        }
    }

    /// Takes `len` bytes from the front of a hole that fits (see the module docs for the
    /// order), leaving the rest of the hole free; returns the start.
    pub(crate) fn carve(&mut self, len: u64) -> Option<u64> {
        let (start, _) = self.find_fit(len)?;
        self.carve_at(start, len);
        Some(start)
    }

    /// Takes `len` bytes starting at a multiple of `align` (a power of two) from a hole that
    /// holds them there, leaving the bytes before and after free; returns the start. Holes
    /// that fit once aligned are looked for in the buckets that may hold them (the newest
    /// [`OWN_BUCKET_PEEK`] of each), then in the lowest bucket whose every hole fits, then in
    /// the rest of those buckets, up to [`ALIGNED_SCAN`] holes: a request may grow the file
    /// though a fitting hole lies deeper, so that a bucket of holes that never fit cannot
    /// make every request a linear scan.
    pub(crate) fn carve_aligned(&mut self, len: u64, align: u64) -> Option<u64> {
        let (start, hole_len) = self.find_aligned_fit(len, align)?;
        let at = start.next_multiple_of(align);
        let end = start + hole_len;
        if at == start {
            self.carve_at(start, len);
        } else {
            self.replace(start, start, at - start);
            if at + len < end {
                self.insert(at + len, end - at - len);
            }
        }
        Some(at)
    }

    /// A hole that holds `len` bytes from a multiple of `align`, as `(start, hole length)`.
    fn find_aligned_fit(&self, len: u64, align: u64) -> Option<(u64, u64)> {
        let fits = |&&(start, hole_len): &&(u64, u64)| {
            start.next_multiple_of(align) + len <= start + hole_len
        };
        // Holes of `len` to `len + align - 2` bytes fit or not by where they start; from
        // `len + align - 1` bytes on, every hole fits.
        let (own, sure) = (bucket_of(len), bucket_of(len + align - 1));
        let peeked = (own..=sure)
            .filter(|&b| self.nonempty[b / 64] & (1 << (b % 64)) != 0)
            .find_map(|b| self.buckets[b].iter().rev().take(OWN_BUCKET_PEEK).find(fits).copied());
        peeked
            .or_else(|| self.nonempty_above(sure).and_then(|b| self.buckets[b].last().copied()))
            .or_else(|| {
                (own..=sure)
                    .flat_map(|b| {
                        let holes = &self.buckets[b];
                        holes[..holes.len().saturating_sub(OWN_BUCKET_PEEK)].iter()
                    })
                    .take(ALIGNED_SCAN)
                    .find(fits)
                    .copied()
            })
    }

    /// Takes `len` bytes from the front of the hole starting at `start` (the caller checked it
    /// exists and holds them).
    pub(crate) fn carve_at(&mut self, start: u64, len: u64) {
        match self.starting_at(start) {
            Some(hole_len) if hole_len == len => {
                self.remove(start);
            }
            Some(hole_len) => self.replace(start, start + len, hole_len - len),
            None => {}
        }
    }

    /// A hole of at least `len` bytes, as `(start, hole length)`.
    pub(crate) fn fit(&self, len: u64) -> Option<(u64, u64)> {
        self.find_fit(len)
    }

    /// A hole of at least `len` bytes, as `(start, hole length)`.
    fn find_fit(&self, len: u64) -> Option<(u64, u64)> {
        let own = bucket_of(len);
        let holes = &self.buckets[own];
        let peeked = holes.iter().rev().take(OWN_BUCKET_PEEK).find(|&&(_, l)| l >= len).copied();
        peeked
            .or_else(|| self.nonempty_above(own).and_then(|b| self.buckets[b].last().copied()))
            .or_else(|| {
                let holes = &self.buckets[own];
                let rest = holes.len().saturating_sub(OWN_BUCKET_PEEK);
                holes[..rest].iter().find(|&&(_, l)| l >= len).copied()
            })
    }

    /// Checks the indexes agree with each other and with the byte count.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut bytes = 0u64;
        for (bucket, holes) in self.buckets.iter().enumerate() {
            let flagged = self.nonempty[bucket / 64] & (1 << (bucket % 64)) != 0;
            if flagged == holes.is_empty() {
                return Err(format!("bucket {bucket} is flagged wrongly"));
            }
            for (position, &(start, len)) in holes.iter().enumerate() {
                let entry = self.by_start.get(&start);
                if bucket_of(len) != bucket || entry != Some(&Entry { len, position }) {
                    return Err(format!("free extent at {start} is indexed wrongly"));
                }
                if self.by_end.get(&(start + len)) != Some(&start) {
                    return Err(format!("free extent at {start} is missing from the end index"));
                }
                bytes += len;
            }
        }
        if self.by_end.len() != self.by_start.len() || bytes != self.bytes {
            return Err("free indexes disagree in size".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_partition_lengths_in_order() {
        let mut previous = 0;
        for len in (1..5000u64).chain([u64::MAX / 3, u64::MAX]) {
            let bucket = bucket_of(len);
            assert!(bucket >= previous && bucket < BUCKETS, "len {len}");
            previous = bucket;
        }
        assert_eq!(bucket_of(31), 31);
        assert_eq!(bucket_of(32), 32);
        assert_eq!(bucket_of(33), 32);
        assert_eq!(bucket_of(34), 33);
    }

    #[test]
    fn a_fitting_hole_is_always_found() {
        let mut free = FreeSpace::default();
        // 20 holes of 1000 bytes (one bucket), then ask for 1000: beyond the peek window.
        for i in 0..20 {
            free.insert(i * 10_000, 999);
        }
        free.insert(500_000, 1000);
        for i in 0..20 {
            free.insert(1_000_000 + i * 10_000, 999);
        }
        assert_eq!(free.carve(1000), Some(500_000));
        assert_eq!(free.carve(1000), None);
        let start = free.carve(600).unwrap();
        assert_eq!(free.starting_at(start + 600), Some(399), "the rest stays free");
        free.check().unwrap();
        free.check().unwrap();
    }
}
