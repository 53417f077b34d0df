//! `Table`: the object table in memory (id → slot), with the ids free for reuse and the table
//! pages changed since the last commit. Every change of an object's entry goes through it.
//!
//! It is kept by table page, each page allocated only when it holds an object, and the free
//! ids as ranges, so the memory a table takes is proportional to the objects it holds and to
//! the length of the root that lists its pages, never to `next_id` alone (a crafted root with
//! a huge `next_id` and no objects costs a few bytes per page it lists).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crate::format::{ENTRIES_PER_PAGE, Entry, MAX_OBJECTS, page_of};
use crate::pageset::PageSet;
use crate::{Error, ObjectId, Result};

/// One object as the store tracks it in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) entry: Entry,
    /// The generation whose commit first made this extent durable; an extent born in the
    /// pending generation is referenced by no commit and may be rewritten in place.
    pub(crate) born: u64,
}

/// The slots of one table page.
pub(crate) type PageSlots = [Option<Slot>; ENTRIES_PER_PAGE as usize];

/// A table page in memory: unset while a lazily opened store has not read it (see
/// `Store::slot`), `None` once known to hold no object.
type PageCell = OnceLock<Option<Box<PageSlots>>>;

/// A page cell already known to hold no object.
fn empty_cell() -> PageCell {
    OnceLock::from(None)
}

/// A set of free ids: ranges (what a load derives) in an ordered map, and ids freed one by
/// one as bits of a bitmap, 64 ids to a word, with a summary bit per word that has any. A
/// commit of scattered deletes frees hundreds of single ids: a range per id cost a search,
/// a removal and an insertion in a map of one entry per free id (16% of the delete path's
/// time, `perf`); a word per map entry still cost a map search each (7%); a bit costs a store
/// into a word. The bitmap reaches only as far as the highest single id (a removed object's,
/// whose table page existed), at most [`MAX_BITMAP_WORDS`] words; a single id past that is
/// kept as a range. The two never share an id.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdRanges {
    ranges: BTreeMap<u64, u64>,
    /// Word `w` holds ids `64w .. 64w + 64`.
    words: Vec<u64>,
    /// Bit `w % 64` of `summary[w / 64]` is set when `words[w]` is not 0.
    summary: Vec<u64>,
    /// Every summary word below this is 0.
    low: usize,
}

/// The most words the bitmap of single ids takes (8 MiB, ids below 2^26).
const MAX_BITMAP_WORDS: u64 = 1 << 20;

impl IdRanges {
    /// Adds `[start, end)`, which must not overlap the set.
    pub(crate) fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&before, &before_end)) = self.ranges.range(..start).next_back() {
            if before_end == start {
                self.ranges.remove(&before);
                start = before;
            }
        }
        if let Some(after_end) = self.ranges.remove(&end) {
            end = after_end;
        }
        self.ranges.insert(start, end);
    }

    /// Adds one id, which must not be in the set.
    pub(crate) fn insert(&mut self, id: u64) {
        let word = id / 64;
        if word >= MAX_BITMAP_WORDS {
            return self.insert_range(id, id + 1);
        }
        let word = word as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
            self.summary.resize(word / 64 + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
        self.summary[word / 64] |= 1 << (word % 64);
        self.low = self.low.min(word / 64);
    }

    /// The lowest single id's word, if any (moves `low` past the empty summary words).
    fn first_word(&mut self) -> Option<usize> {
        while let Some(&bits) = self.summary.get(self.low) {
            if bits != 0 {
                return Some(self.low * 64 + bits.trailing_zeros() as usize);
            }
            self.low += 1;
        }
        None
    }

    /// Removes and returns the lowest id.
    pub(crate) fn pop_first(&mut self) -> Option<u64> {
        let range = self.ranges.first_key_value().map(|(&start, _)| start);
        if let Some(w) = self.first_word() {
            let single = w as u64 * 64 + u64::from(self.words[w].trailing_zeros());
            if range.is_none_or(|start| single < start) {
                let bits = &mut self.words[w];
                *bits &= *bits - 1;
                if *bits == 0 {
                    self.summary[w / 64] &= !(1 << (w % 64));
                }
                return Some(single);
            }
        }
        let (start, end) = self.ranges.pop_first()?;
        if start + 1 < end {
            self.ranges.insert(start + 1, end);
        }
        Some(start)
    }

    /// Drops every id at or above `limit`.
    pub(crate) fn truncate(&mut self, limit: u64) {
        let above: Vec<u64> = self.ranges.range(limit..).map(|(&s, _)| s).collect();
        for start in above {
            self.ranges.remove(&start);
        }
        if let Some((_, end)) = self.ranges.range_mut(..limit).next_back() {
            *end = (*end).min(limit);
        }
        // Whole words at or past the limit go; the word holding it keeps the bits below.
        let keep = usize::try_from(limit.div_ceil(64)).unwrap_or(usize::MAX);
        if keep < self.words.len() {
            self.words.truncate(keep);
            self.summary.truncate(keep.div_ceil(64));
        }
        if limit % 64 != 0 {
            if let Some(last) = self.words.get_mut((limit / 64) as usize) {
                *last &= (1u64 << (limit % 64)) - 1;
            }
        }
        // The last summary word is recounted from the words it covers.
        if let Some(last) = self.summary.len().checked_sub(1) {
            let words = &self.words[last * 64..];
            self.summary[last] =
                words.iter().enumerate().fold(0, |acc, (i, &w)| acc | (u64::from(w != 0) << i));
        }
        self.low = self.low.min(self.summary.len());
    }

    /// Whether `id` is in the set.
    #[cfg(test)]
    fn contains(&self, id: u64) -> bool {
        self.ranges.range(..=id).next_back().is_some_and(|(_, &end)| id < end)
            || self.words.get((id / 64) as usize).is_some_and(|bits| bits & (1 << (id % 64)) != 0)
    }

    /// How many ranges and single ids the set holds.
    #[cfg(test)]
    fn pieces(&self) -> usize {
        self.ranges.len() + self.words.iter().map(|b| b.count_ones() as usize).sum::<usize>()
    }
}

/// The object table; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Page `p` holds indexes `112p .. 112p + 112`; `None` when it holds no object, unset while
    /// not yet read (a lazily opened store; every page is set before anything changes but
    /// the journal's replay, which reads the pages it touches first).
    pages: Vec<PageCell>,
    /// Every id is below this.
    next_id: u64,
    objects: u64,
    /// Ids below `next_id` with no object, free for reuse now (never 0, the prime id).
    free: IdRanges,
    /// Ids freed in the pending generation: reused only after the next commit.
    pending_free: Vec<u64>,
    /// Ids handed out for objects not yet published (`SplitStore::begin_new`): never trimmed,
    /// never handed out again until published or abandoned.
    reserved: BTreeSet<u64>,
    /// Table pages changed since the last checkpoint.
    dirty: PageSet,
    /// Ids whose entry changed (written or removed) since the last commit: what the next
    /// journal record holds.
    changed: ChangeLog,
}

/// Ids changed since the last commit, appended as they change: an id changed twice is
/// there twice until the log is sorted, which happens when it doubles (so its length stays
/// within twice the distinct ids, plus 1,024) and when a commit reads it. A push costs no
/// search (an ordered set's insert was 5% of a scattered delete's time, `perf`).
#[derive(Debug, Default)]
struct ChangeLog {
    ids: Vec<u64>,
    /// The length at which the log is sorted and deduplicated next.
    compact_at: usize,
}

impl ChangeLog {
    fn insert(&mut self, id: u64) {
        self.ids.push(id);
        if self.ids.len() >= self.compact_at.max(1024) {
            self.ids.sort_unstable();
            self.ids.dedup();
            self.compact_at = 2 * self.ids.len();
        }
    }

    /// The distinct ids, ascending.
    fn sorted(&self) -> Vec<u64> {
        let mut ids = self.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Empties the log; a log a big commit grew past 64 Ki ids gives its memory back.
    fn clear(&mut self) {
        if self.ids.capacity() > 1 << 16 {
            self.ids = Vec::new();
        } else {
            self.ids.clear();
        }
        self.compact_at = 0;
    }
}

impl Table {
    /// An empty table: only the prime id, 0, exists (and holds no object).
    pub(crate) fn new() -> Self {
        Self { next_id: 1, ..Self::default() }
    }

    /// A table with room for ids below `next_id`, every id free once
    /// [`loaded`](Self::loaded) is called.
    #[cfg(test)]
    pub(crate) fn with_next_id(next_id: u64) -> Self {
        Self { next_id, ..Self::default() }
    }

    /// The table of a checkpoint opened lazily: `objects` objects, ids below `next_id`, and
    /// a page cell per page the root lists (`true`: stored, read on first use; `false`:
    /// absent, holding no object). Fill pages with [`fill`](Self::fill); before anything
    /// changes, every page must be filled and [`loaded`](Self::loaded) called.
    pub(crate) fn lazy(next_id: u64, objects: u64, stored: impl Iterator<Item = bool>) -> Self {
        let pages = stored.map(|s| if s { OnceLock::new() } else { empty_cell() }).collect();
        Self { next_id, objects, pages, ..Self::default() }
    }

    /// Sets page `page`'s slots as read from the file (no page becomes dirty); a page already
    /// set keeps what it holds (two readers may read it at once).
    pub(crate) fn fill(&self, page: u64, slots: Option<Box<PageSlots>>) {
        if let Some(cell) = self.pages.get(page as usize) {
            let _ = cell.set(slots);
        }
    }

    /// Whether page `page` still has to be read from the file.
    pub(crate) fn is_unread(&self, page: u64) -> bool {
        self.pages.get(page as usize).is_some_and(|cell| cell.get().is_none())
    }

    /// The pages still to be read, ascending.
    pub(crate) fn unread_pages(&self) -> Vec<u64> {
        (0..self.pages.len() as u64).filter(|&p| self.is_unread(p)).collect()
    }

    /// Objects in the pages read so far (all of them, once every page is read).
    pub(crate) fn counted_objects(&self) -> u64 {
        self.iter().count() as u64
    }

    /// Derives the free ids once every committed entry is loaded.
    pub(crate) fn loaded(&mut self) {
        let mut start = 1;
        for (index, page) in self.pages.iter().enumerate() {
            let Some(Some(page)) = page.get() else { continue };
            let base = index as u64 * ENTRIES_PER_PAGE;
            for (k, cell) in page.iter().enumerate() {
                let id = base + k as u64;
                if cell.is_some() {
                    if id > start {
                        self.free.insert_range(start, id);
                    }
                    start = id + 1;
                }
            }
        }
        self.free.insert_range(start.max(1), self.next_id);
    }

    fn cell_mut(&mut self, index: u64) -> &mut Option<Slot> {
        let (page, k) = page_of(index);
        let page = page as usize;
        if page >= self.pages.len() {
            self.pages.resize_with(page + 1, empty_cell);
        }
        let slots =
            self.pages[page].get_mut().expect("a table page is read before an entry on it changes");
        &mut slots.get_or_insert_with(|| Box::new([None; ENTRIES_PER_PAGE as usize]))[k]
    }

    /// The slots of page `page`, when it is read and holds objects.
    fn page_mut(&mut self, page: u64) -> Option<&mut Box<PageSlots>> {
        self.pages.get_mut(page as usize)?.get_mut()?.as_mut()
    }

    /// The slot of object `id`, if it exists (an object at its index with another tag is
    /// not it: [`Table::missing`] tells), or `Err(page)` when its page has not been read yet
    /// (a lazily opened store).
    #[inline]
    pub(crate) fn lookup(&self, id: ObjectId) -> std::result::Result<Option<Slot>, u64> {
        Ok(self.lookup_index(id.index())?.filter(|slot| slot.entry.tag == id.tag()))
    }

    /// The slot at index `index`, whatever its tag, or `Err(page)` as for `lookup`.
    #[inline]
    pub(crate) fn lookup_index(&self, index: u64) -> std::result::Result<Option<Slot>, u64> {
        let (page, k) = page_of(index);
        match self.pages.get(page as usize) {
            None => Ok(None),
            Some(cell) => match cell.get() {
                None => Err(page),
                Some(slots) => Ok(slots.as_ref().and_then(|s| s[k])),
            },
        }
    }

    /// The slot at index `index`, whatever its tag (`None` on a page not yet read, as `get`).
    pub(crate) fn at(&self, index: u64) -> Option<Slot> {
        let found = self.lookup_index(index);
        debug_assert!(found.is_ok(), "index {index}'s table page is not read");
        found.ok().flatten()
    }

    /// The error for an id `lookup` did not find: [`Error::StaleId`] when its index holds an
    /// object of another tag, else [`Error::NotFound`].
    pub(crate) fn missing(&self, id: ObjectId) -> Error {
        match self.lookup_index(id.index()) {
            Ok(Some(slot)) if slot.entry.tag != id.tag() => {
                Error::StaleId { id, current: ObjectId::from_parts(id.index(), slot.entry.tag) }
            }
            _ => Error::NotFound(id),
        }
    }

    /// The slot of object `id`, if it exists; on a page not yet read, `None` (only for
    /// callers that run once every page is read).
    #[inline]
    pub(crate) fn get(&self, id: ObjectId) -> Option<Slot> {
        let found = self.lookup(id);
        debug_assert!(found.is_ok(), "object {id}'s table page is not read");
        found.ok().flatten()
    }

    /// Records `slot` as object `id` (an id from [`take_id`](Self::take_id) or an existing
    /// object); its page becomes dirty.
    pub(crate) fn put(&mut self, id: ObjectId, slot: Slot) {
        let index = id.index();
        debug_assert!(index < self.next_id, "put of {id} past the next id {}", self.next_id);
        debug_assert_eq!(slot.entry.tag, id.tag(), "the entry of {id} carries its tag");
        match self.cell_mut(index).replace(slot) {
            None => self.objects += 1,
            Some(old) => debug_assert_eq!(old.entry.tag, id.tag(), "{id} replaced another id"),
        }
        self.dirty.insert(page_of(index).0);
        self.changed.insert(index);
    }

    /// Removes object `id`; its index is reused, under a newer tag, after the next commit.
    pub(crate) fn remove(&mut self, id: ObjectId) -> Result<Slot> {
        if self.get(id).is_none() {
            return Err(self.missing(id));
        }
        let index = id.index();
        let (page, k) = page_of(index);
        let slots = self.page_mut(page).ok_or(Error::NotFound(id))?;
        let slot = slots[k].take().ok_or(Error::NotFound(id))?;
        if slots.iter().all(Option::is_none) {
            self.pages[page as usize] = empty_cell();
        }
        self.objects -= 1;
        self.dirty.insert(page);
        self.changed.insert(index);
        if index != 0 {
            self.pending_free.push(index);
        }
        Ok(slot)
    }

    /// What changed since the last commit: the entries written and the indexes removed
    /// (indexes trimmed off the end included), ascending by index.
    pub(crate) fn changes(&self) -> (Vec<(u64, Entry)>, Vec<u64>) {
        let mut puts = Vec::new();
        let mut removes = Vec::new();
        for id in self.changed.sorted() {
            match self.at(id) {
                Some(slot) => puts.push((id, slot.entry)),
                None => removes.push(id),
            }
        }
        (puts, removes)
    }

    /// Applies one journal record read at open: `removes`, then `puts`, then the next id.
    /// Every page it touches becomes dirty (the checkpoint's copy is stale). An object left
    /// at or past the record's next id is corruption.
    pub(crate) fn replay(
        &mut self,
        next_id: u64,
        puts: &[(u64, Entry)],
        removes: &[u64],
    ) -> Result<()> {
        self.next_id = self.next_id.max(next_id);
        for &id in removes {
            let (page, k) = page_of(id);
            debug_assert!(!self.is_unread(page), "page {page} is read before replay");
            let Some(slots) = self.page_mut(page) else { continue };
            if slots[k].take().is_some() {
                if slots.iter().all(Option::is_none) {
                    self.pages[page as usize] = empty_cell();
                }
                // Wrapping: on a lazily opened store the count starts from the header's
                // claim, which the record's count and the full count check later.
                self.objects = self.objects.wrapping_sub(1);
            }
            self.dirty.insert(page);
        }
        for &(id, entry) in puts {
            if id >= self.next_id {
                return Err(Error::InvalidArgument(format!("object {id} is past the next id")));
            }
            if self.cell_mut(id).replace(Slot { entry, born: 0 }).is_none() {
                self.objects = self.objects.wrapping_add(1);
            }
            self.dirty.insert(page_of(id).0);
        }
        if next_id < self.next_id {
            if self.iter().any(|(id, _)| id.index() >= next_id) {
                return Err(Error::InvalidArgument(format!(
                    "an object is left past the next id {next_id}"
                )));
            }
            self.next_id = next_id;
            self.pages.truncate(self.page_count() as usize);
        }
        Ok(())
    }

    /// A fresh id, tagged `tag` (the pending generation's low bits): the lowest index freed
    /// by an earlier commit, or the next new one. An index is handed out again only after
    /// the commit that freed it, so its next tag is newer than any it had before.
    pub(crate) fn take_id(&mut self, tag: u32) -> Result<ObjectId> {
        if let Some(index) = self.free.pop_first() {
            return Ok(ObjectId::from_parts(index, tag));
        }
        if self.next_id >= MAX_OBJECTS {
            return Err(Error::InvalidArgument(format!(
                "the store holds its maximum of {MAX_OBJECTS} objects"
            )));
        }
        self.next_id += 1;
        Ok(ObjectId::from_parts(self.next_id - 1, tag))
    }

    /// Gives back an id from [`take_id`](Self::take_id) that never held an object; reused
    /// after the next commit.
    pub(crate) fn untake_id(&mut self, id: ObjectId) {
        if id.index() != 0 {
            self.pending_free.push(id.index());
        }
    }

    /// Marks `id` reserved for an object being written elsewhere.
    pub(crate) fn reserve_id(&mut self, id: ObjectId) {
        self.reserved.insert(id.index());
    }

    /// Ends a reservation; false if `id` was not reserved.
    pub(crate) fn unreserve_id(&mut self, id: ObjectId) -> bool {
        self.reserved.remove(&id.index())
    }

    /// Objects in the table.
    pub(crate) fn object_count(&self) -> u64 {
        self.objects
    }

    /// Every id is below this.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Table pages the ids below `next_id` need.
    pub(crate) fn page_count(&self) -> u64 {
        self.next_id.div_ceil(ENTRIES_PER_PAGE)
    }

    /// Every object on the pages read so far, ascending by id (every object once every page
    /// is read).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ObjectId, Slot)> + '_ {
        self.pages.iter().enumerate().flat_map(|(index, page)| {
            let base = index as u64 * ENTRIES_PER_PAGE;
            page.get().and_then(Option::as_ref).into_iter().flat_map(move |slots| {
                slots.iter().enumerate().filter_map(move |(k, s)| {
                    s.map(|slot| (ObjectId::from_parts(base + k as u64, slot.entry.tag), slot))
                })
            })
        })
    }

    /// The entries of table page `page` (`None` = no object).
    pub(crate) fn page_entries(&self, page: u64) -> Vec<Option<Entry>> {
        let first = page * ENTRIES_PER_PAGE;
        let count = self.next_id.saturating_sub(first).min(ENTRIES_PER_PAGE) as usize;
        match self.pages.get(page as usize).and_then(|p| p.get()).and_then(Option::as_ref) {
            Some(slots) => slots[..count].iter().map(|s| s.map(|s| s.entry)).collect(),
            None => vec![None; count],
        }
    }

    /// The pages changed since the last commit, ascending.
    pub(crate) fn dirty_pages(&self) -> Vec<u64> {
        self.dirty.iter().collect()
    }

    /// How many pages changed since the last commit.
    pub(crate) fn dirty_page_count(&self) -> usize {
        self.dirty.len()
    }

    /// Marks pages `0..count` dirty (a full rewrite of the table).
    pub(crate) fn mark_all_dirty(&mut self, count: u64) {
        self.dirty.extend(0..count);
    }

    /// Before a commit: drops trailing free ids, so the last id lives on a stored page and
    /// the next id is bounded by the pages at open. Pages past the new end become dirty.
    pub(crate) fn trim(&mut self) {
        // Ids deleted since the last commit are not handed out before it, so they stay.
        let floor = self.pending_free.iter().max().map_or(1, |&id| id + 1);
        let mut next_id = self.next_id;
        while next_id > floor
            && self.at(next_id - 1).is_none()
            && !self.reserved.contains(&(next_id - 1))
        {
            next_id -= 1;
        }
        if next_id == self.next_id {
            return;
        }
        // The ids trimmed off were removed (and so are in `changed`): the record says so.
        let old_pages = self.page_count();
        self.next_id = next_id;
        self.free.truncate(next_id);
        self.pending_free.retain(|&id| id < next_id);
        // The pages past the new end lost their objects by `remove`, which marked them dirty.
        let new_pages = self.page_count();
        debug_assert!((new_pages..old_pages).all(|p| {
            self.pages.get(p as usize).is_none_or(|cell| cell.get().is_none_or(Option::is_none))
        }));
        self.pages.truncate(new_pages as usize);
    }

    /// Pages that hold at least one object (memory the table really takes).
    #[cfg(test)]
    pub(crate) fn allocated_pages(&self) -> usize {
        self.pages.iter().filter(|p| p.get().is_some_and(Option::is_some)).count()
    }

    /// Ranges of free ids.
    #[cfg(test)]
    pub(crate) fn free_ranges(&self) -> usize {
        self.free.pieces()
    }

    /// When a journaled commit's record is written: what changed is in the record (the next
    /// commit's changes start empty); returns the ids it freed, reusable once it is durable
    /// ([`Table::free_ids`]).
    pub(crate) fn seal(&mut self) -> Vec<u64> {
        self.changed.clear();
        std::mem::take(&mut self.pending_free)
    }

    /// Ids a durable commit freed become reusable.
    pub(crate) fn free_ids(&mut self, ids: Vec<u64>) {
        for id in ids {
            self.free.insert(id);
        }
    }

    /// After a durable commit: ids freed in it become reusable, and the next commit's changes
    /// start empty.
    pub(crate) fn journaled(&mut self) {
        let ids = self.seal();
        self.free_ids(ids);
    }

    /// After a durable checkpoint: ids freed in it become reusable; no page is dirty.
    pub(crate) fn committed(&mut self) {
        self.journaled();
        self.dirty.clear();
    }

    /// Whether page `page` changed since the last checkpoint.
    pub(crate) fn is_dirty(&self, page: u64) -> bool {
        self.dirty.contains(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges_merge_split_and_truncate() {
        let mut ids = IdRanges::default();
        ids.insert_range(5, 10);
        ids.insert(10);
        ids.insert(4);
        ids.insert_range(11, 12);
        assert_eq!(ids.ranges.len(), 2);
        assert!(ids.contains(4) && ids.contains(10) && ids.contains(11) && !ids.contains(12));
        ids.truncate(8);
        assert!(ids.contains(7) && !ids.contains(8) && !ids.contains(10));
        assert_eq!(ids.pop_first(), Some(4));
        assert_eq!(ids.pop_first(), Some(5));
    }

    #[test]
    fn single_ids_past_the_bitmap_are_kept_as_ranges() {
        let mut ids = IdRanges::default();
        let far = MAX_BITMAP_WORDS * 64 + 5;
        ids.insert(far);
        ids.insert(far + 1);
        ids.insert(70);
        assert!(ids.words.len() < 4 && ids.ranges.len() == 1);
        assert!(ids.contains(far) && ids.contains(far + 1) && ids.contains(70));
        assert_eq!([ids.pop_first(), ids.pop_first()], [Some(70), Some(far)]);
        ids.truncate(far + 1);
        assert_eq!([ids.pop_first(), ids.pop_first()], [None, None]);
    }

    proptest::proptest! {
        /// Agrees with a `BTreeSet`: inserts of ranges and single ids (never of ids in the
        /// set), pops of the lowest, truncations.
        #[test]
        fn id_ranges_match_a_set(
            ops in proptest::collection::vec((0u8..4, 1u64..200, 0u64..6), 1..200),
            spread in proptest::prop_oneof![proptest::strategy::Just(1u64), 1u64..300],
        ) {
            let mut ids = IdRanges::default();
            let mut model = BTreeSet::new();
            // `spread` scatters the ids over many bitmap words and summary words.
            for (op, at, len) in ops {
                let at = at * spread;
                match op {
                    0 => {
                        let end = (at..at + len).find(|i| model.contains(i)).unwrap_or(at + len);
                        ids.insert_range(at, end);
                        model.extend(at..end);
                    }
                    1 if !model.contains(&at) => {
                        ids.insert(at);
                        model.insert(at);
                    }
                    2 => proptest::prop_assert_eq!(ids.pop_first(), model.pop_first()),
                    3 => {
                        ids.truncate(at);
                        model.retain(|&i| i < at);
                    }
                    _ => {}
                }
                for i in (0..210).map(|i| i * spread).chain(model.iter().copied()) {
                    proptest::prop_assert_eq!(ids.contains(i), model.contains(&i), "id {}", i);
                }
            }
        }
    }

    #[test]
    fn a_huge_next_id_costs_nothing_until_pages_hold_objects() {
        let mut table = Table::with_next_id(MAX_OBJECTS - 1);
        table.loaded();
        assert_eq!(table.take_id(5).unwrap(), ObjectId::from_parts(1, 5));
        assert!(table.pages.is_empty());
    }
}
