//! `Placement`: page granularity of invariant 1. No 4 KiB page that holds bytes the last
//! durable commit references may be written until a newer commit that no longer references
//! them is durable, because the medium damages whole pages: a write into such a page can, in a
//! power loss, take the committed bytes beside it down too.
//!
//! An extent the allocator hands out never overlaps a committed extent, so the only pages it
//! can share with committed bytes are its first and last, where it covers the page only in
//! part. `Placement` counts, for each page, the committed extents that cover it in part; an
//! extent touching a counted page is *held back* (kept allocated, unused) under that page and
//! the allocator is asked again. When a commit releases the last committed extent of a page,
//! what was held back under it goes back to the allocator. So the objects of one generation
//! pack together into pages no commit references, and holes beside committed objects are
//! used again only once those objects are gone.

use foldhash::HashMap;

use bob_alloc::Extent;

use crate::format::PAGE_BYTES;

const PAGE: u64 = PAGE_BYTES as u64;

/// The pages `extent` covers only in part (at most two: its first and its last).
pub(crate) fn partial_pages(extent: Extent) -> impl Iterator<Item = u64> {
    let (start, end) = (extent.offset, extent.offset + extent.len);
    let mut pages = [None, None];
    if extent.len > 0 {
        let first = start / PAGE;
        let last = (end - 1) / PAGE;
        let covers = |page: u64| start <= page * PAGE && end >= (page + 1) * PAGE;
        if !covers(first) {
            pages[0] = Some(first);
        }
        if last != first && !covers(last) {
            pages[1] = Some(last);
        }
    }
    pages.into_iter().flatten()
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// Page → committed extents covering it in part.
    shared: HashMap<u64, u32>,
    /// Page → extents reserved for writes outside the store's lock (a commit may run before
    /// they are published) covering it in part. Nothing else may be placed in such a page,
    /// or a commit could make bytes beside an unfinished write committed.
    outside: HashMap<u64, u32>,
    /// Page → extents held back because they touch it.
    held: HashMap<u64, Vec<Extent>>,
    held_bytes: u64,
}

impl Placement {
    /// The page that makes `extent` unusable now, if any.
    pub(crate) fn blocking_page(&self, extent: Extent) -> Option<u64> {
        partial_pages(extent)
            .find(|page| self.shared.contains_key(page) || self.outside.contains_key(page))
    }

    /// Counts `extent` as reserved for a write outside the lock.
    pub(crate) fn add_outside(&mut self, extent: Extent) {
        for page in partial_pages(extent) {
            *self.outside.entry(page).or_insert(0) += 1;
        }
    }

    /// Uncounts an outside reservation; what was held back under pages now free of blocks is
    /// passed to `freed`.
    pub(crate) fn remove_outside(&mut self, extent: Extent, freed: &mut Vec<Extent>) {
        for page in partial_pages(extent) {
            if let Some(count) = self.outside.get_mut(&page) {
                *count -= 1;
                if *count == 0 {
                    self.outside.remove(&page);
                    self.unhold(page, freed);
                }
            }
        }
    }

    fn unhold(&mut self, page: u64, freed: &mut Vec<Extent>) {
        if self.shared.contains_key(&page) || self.outside.contains_key(&page) {
            return;
        }
        if let Some(extents) = self.held.remove(&page) {
            self.held_bytes -= extents.iter().map(|e| e.len).sum::<u64>();
            freed.extend(extents);
        }
    }

    /// Holds `extent` back under `page` until that page has no committed bytes.
    pub(crate) fn hold(&mut self, page: u64, extent: Extent) {
        self.held_bytes += extent.len;
        self.held.entry(page).or_default().push(extent);
    }

    /// Room for the pages of `extents` committed extents, before counting them at open.
    pub(crate) fn reserve(&mut self, extents: usize) {
        self.shared.reserve(extents.saturating_mul(2));
    }

    /// Counts `extent` as referenced by the durable commit.
    pub(crate) fn committed(&mut self, extent: Extent) {
        for page in partial_pages(extent) {
            *self.shared.entry(page).or_insert(0) += 1;
        }
    }

    /// Uncounts `extent`, no longer referenced by the durable commit; returns what was held
    /// back under pages that now hold no committed bytes (the caller frees it or holds it
    /// again under another page).
    pub(crate) fn released(&mut self, extent: Extent, freed: &mut Vec<Extent>) {
        for page in partial_pages(extent) {
            let Some(count) = self.shared.get_mut(&page) else {
                debug_assert!(false, "page {page} released more often than committed");
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.shared.remove(&page);
                self.unhold(page, freed);
            }
        }
    }

    /// Every extent held back.
    pub(crate) fn held_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.held.values().flatten().copied()
    }

    /// Bytes held back.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_pages_are_the_ends_an_extent_does_not_fill() {
        let pages = |o, l| partial_pages(Extent::new(o, l)).collect::<Vec<_>>();
        assert_eq!(pages(8192, 4096), Vec::<u64>::new());
        assert_eq!(pages(8192, 100), vec![2]);
        assert_eq!(pages(8292, 8192), vec![2, 4]);
        assert_eq!(pages(8192, 5000), vec![3]);
        assert_eq!(pages(8100, 92), vec![1]);
    }

    #[test]
    fn a_hole_beside_committed_bytes_is_held_until_they_are_released() {
        let mut placement = Placement::default();
        let committed = Extent::new(8192, 100);
        placement.committed(committed);
        let hole = Extent::new(8292, 200);
        assert_eq!(placement.blocking_page(hole), Some(2));
        placement.hold(2, hole);
        assert_eq!(placement.blocking_page(Extent::new(12288, 50)), None);
        let mut freed = Vec::new();
        placement.released(committed, &mut freed);
        assert_eq!(freed, vec![hole]);
        assert_eq!(placement.held_bytes(), 0);
    }
}
