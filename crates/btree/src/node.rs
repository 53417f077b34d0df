//! B-tree nodes: the in-memory form and the on-disk layout (`docs/format.md`, "B-tree node").
//!
//! A node is one store object. In memory it is shared behind an [`Arc`]: snapshots hold the
//! nodes they see, and a writer copies a node the first time it changes it
//! ([`Arc::make_mut`]), so a reader never sees a half-changed node. A child that is not in
//! memory is a [`Link`] with its object id and the checkpoint it was seen at.

use std::sync::Arc;

use bob_io_helpers::sync::SetOnce;

use bob_io_helpers::checksum;
use bob_store_core::ObjectId;

use crate::{Error, Result};

/// The node layout version this build writes (it reads 1 and 2: version 2 adds values in
/// objects of their own, and value objects).
pub(crate) const NODE_VERSION: u8 = 2;
const MAGIC: &[u8; 4] = b"BOBB";
const HEADER: usize = 24;
const TRAILER: usize = 8;
/// A node is split once its encoding passes this many bytes (one 4 KiB page).
pub(crate) const NODE_TARGET: usize = 4096;
/// A node smaller than this after a removal is merged with, or refilled from, a sibling.
pub(crate) const NODE_MIN: usize = NODE_TARGET / 4;
/// The longest key a tree takes, in encoded bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest value kept inside its leaf, in encoded bytes; a longer one is kept in a store
/// object of its own, which its leaf names.
pub const MAX_INLINE_VALUE_LEN: usize = 1024;
/// The longest value a tree takes, in encoded bytes (1 GiB).
pub const MAX_VALUE_LEN: usize = 1 << 30;
/// No valid node is longer: at most one entry past the target.
const MAX_NODE_BYTES: usize = 2 * NODE_TARGET + MAX_KEY_LEN + MAX_INLINE_VALUE_LEN;
const LEAF: u8 = 0;
const BRANCH: u8 = 1;
/// The kind of a value object (version 2).
const VALUE: u8 = 2;
/// In a version 2 leaf, a value length with this bit set names a value object: the low 31
/// bits are the value's length, and its object id and written checkpoint follow the key.
const REF_FLAG: u32 = 1 << 31;
/// The bytes a reference to a value object takes in its leaf (besides the length).
const REF_BYTES: usize = 16;

/// A value's bytes, shared: copying a node (the first change a writer makes to it) copies
/// the pointers, not the bytes.
pub(crate) type Bytes = Arc<[u8]>;

/// A value as a leaf holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Val {
    /// At most [`MAX_INLINE_VALUE_LEN`] bytes, inside the leaf.
    Inline(Bytes),
    /// Longer, and in no object yet: the checkpoint that writes its leaf writes it first.
    Pending(Bytes),
    /// Longer, in an object of its own.
    Stored(Arc<ValRef>),
}

/// A value object, as its leaf names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ValRef {
    /// The object.
    pub id: ObjectId,
    /// The checkpoint that wrote it (an object id is reused once freed: a reader of an older
    /// snapshot tells its value from a later object by this).
    pub written: u64,
    /// The value's length.
    pub len: u32,
}

impl Val {
    /// The value `bytes`, inline if short enough.
    pub(crate) fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= MAX_INLINE_VALUE_LEN {
            Val::Inline(bytes.into())
        } else {
            Val::Pending(bytes.into())
        }
    }

    /// The value object it names, if it is in one.
    pub(crate) fn stored(&self) -> Option<&ValRef> {
        match self {
            Val::Stored(r) => Some(r),
            _ => None,
        }
    }

    /// It, borrowed.
    pub(crate) fn view(&self) -> ValView<'_> {
        match self {
            Val::Inline(b) => ValView::Inline(b),
            Val::Pending(b) => ValView::Pending(b),
            Val::Stored(r) => ValView::Stored(r),
        }
    }
}

/// Replaces `data[range]` with `bytes`, moving the bytes after it once (`Vec::splice` goes
/// through an iterator, byte by byte).
fn splice_bytes(data: &mut Vec<u8>, range: std::ops::Range<usize>, bytes: &[u8]) {
    let (start, end, old_len) = (range.start, range.end, data.len());
    let new_end = start + bytes.len();
    if new_end > end {
        data.resize(old_len + (new_end - end), 0);
        data.copy_within(end..old_len, new_end);
    } else if new_end < end {
        data.copy_within(end..old_len, new_end);
        data.truncate(old_len - (end - new_end));
    }
    data[start..new_end].copy_from_slice(bytes);
}

/// A value as a leaf holds it, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValView<'a> {
    /// Inside the leaf.
    Inline(&'a [u8]),
    /// Longer, and in no object yet.
    Pending(&'a Bytes),
    /// Longer, in an object of its own.
    Stored(&'a ValRef),
}

impl<'a> ValView<'a> {
    /// The bytes it takes in its leaf's encoding (besides the entry's lengths and key).
    pub(crate) fn encoded_len(self) -> usize {
        match self {
            ValView::Inline(b) => b.len(),
            ValView::Pending(_) | ValView::Stored(_) => REF_BYTES,
        }
    }

    /// The value object it names, if it is in one.
    pub(crate) fn stored(self) -> Option<&'a ValRef> {
        match self {
            ValView::Stored(r) => Some(r),
            _ => None,
        }
    }

    /// An owned copy.
    pub(crate) fn to_val(self) -> Val {
        match self {
            ValView::Inline(b) => Val::Inline(b.into()),
            ValView::Pending(b) => Val::Pending(Arc::clone(b)),
            ValView::Stored(r) => Val::Stored(Arc::new(*r)),
        }
    }
}

/// Where one entry of a leaf is (16 bytes, four to a cache line): what a search reads, and
/// where the entry's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    /// The key's first eight bytes as a big-endian integer (zero-padded; see [`Key`]).
    prefix: u64,
    /// Where the entry's bytes start in its leaf's buffer: the key, then an inline value.
    off: u32,
    /// The key's length.
    klen: u16,
    /// An inline value's length, or, with [`BIG`] set, the index of a long value in `big`.
    vlen: u16,
}

/// In a [`Head`]'s `vlen`: the value is kept by reference.
const BIG: u16 = 1 << 15;

impl Head {
    /// The index of its long value, if it has one.
    #[inline]
    fn big(self) -> Option<usize> {
        (self.vlen & BIG != 0).then_some(usize::from(self.vlen & !BIG))
    }

    /// The bytes its entry takes in the buffer (a long value's key only).
    #[inline]
    fn span(self) -> usize {
        usize::from(self.klen) + if self.vlen & BIG != 0 { 0 } else { usize::from(self.vlen) }
    }
}

/// A value kept by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Big {
    Pending(Bytes),
    Stored(ValRef),
}

/// A leaf's entries, in key order: a [`Head`] each in one array (what a search reads), and
/// each entry's key and inline value side by side in one buffer, so a lookup's last compare
/// and its value read touch the same cache lines and pages. A new entry is appended to the
/// buffer (no bytes move when an entry is inserted; what removals and replacements leave
/// unused is reclaimed once it is half the buffer); long values are kept by reference in a
/// third array, in entry order. Copying a leaf copies these buffers (and a reference count
/// per long value waiting for its object), dropping it frees them: no allocation, and no
/// reference count, per entry.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    heads: Vec<Head>,
    data: Vec<u8>,
    /// Bytes of `data` no entry uses.
    unused: usize,
    big: Vec<Big>,
}

impl Clone for Entries {
    /// With room for an entry or two more (see [`copy_with_room`]).
    fn clone(&self) -> Self {
        let live = self.data.len() - self.unused;
        Self {
            heads: copy_with_room(&self.heads, 2),
            data: copy_with_room(&self.data, 2 * live.div_ceil(self.len().max(1))),
            unused: self.unused,
            big: self.big.clone(),
        }
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl Entries {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self::with_room(n, 0)
    }

    /// No entries, with room for `n` of them and `bytes` of their keys and inline values.
    pub(crate) fn with_room(n: usize, bytes: usize) -> Self {
        Self {
            heads: Vec::with_capacity(n),
            data: Vec::with_capacity(bytes),
            unused: 0,
            big: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heads.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Key `i`.
    #[inline]
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let h = self.heads[i];
        &self.data[h.off as usize..h.off as usize + usize::from(h.klen)]
    }

    /// Key `i`, copied out.
    pub(crate) fn key_owned(&self, i: usize) -> Key {
        Key { prefix: self.heads[i].prefix, bytes: self.key(i).into() }
    }

    /// Value `i`.
    #[inline]
    pub(crate) fn val(&self, i: usize) -> ValView<'_> {
        let h = self.heads[i];
        match h.big() {
            None => {
                let start = h.off as usize + usize::from(h.klen);
                ValView::Inline(&self.data[start..start + usize::from(h.vlen)])
            }
            Some(b) => match &self.big[b] {
                Big::Pending(bytes) => ValView::Pending(bytes),
                Big::Stored(r) => ValView::Stored(r),
            },
        }
    }

    /// Entry `i`.
    #[inline]
    pub(crate) fn entry(&self, i: usize) -> (&[u8], ValView<'_>) {
        (self.key(i), self.val(i))
    }

    /// The entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], ValView<'_>)> {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// The keys in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.key(i))
    }

    /// The values in order.
    pub(crate) fn vals(&self) -> impl Iterator<Item = ValView<'_>> {
        (0..self.len()).map(|i| self.val(i))
    }

    /// The first index whose key is not less than (`strict`: greater than) the probe.
    #[inline]
    fn bound(&self, probe: &Probe<'_>, strict: bool) -> usize {
        search_bound(self.len(), |i| self.heads[i].prefix, |i| self.key(i), probe, strict)
    }

    /// The number of keys `<=` the probe.
    #[inline]
    pub(crate) fn upper(&self, probe: &Probe<'_>) -> usize {
        self.bound(probe, true)
    }

    /// The number of keys `<` the probe.
    #[inline]
    pub(crate) fn lower(&self, probe: &Probe<'_>) -> usize {
        self.bound(probe, false)
    }

    /// Where the probe is (`Ok`) or would go (`Err`).
    #[inline]
    pub(crate) fn search(&self, probe: &Probe<'_>) -> Result<usize, usize> {
        let i = self.lower(probe);
        if i < self.len() && self.heads[i].prefix == probe.prefix {
            // Start loading the entry's last cache lines (its value, read next) while its key
            // is compared: the loads overlap instead of following one another.
            let h = self.heads[i];
            let (start, end) = (h.off as usize, h.off as usize + h.span());
            let mut at = start + 64;
            while at < end {
                std::hint::black_box(self.data[at]);
                at += 64;
            }
        }
        let found =
            i < self.len() && self.heads[i].prefix == probe.prefix && self.key(i) == probe.bytes;
        if found { Ok(i) } else { Err(i) }
    }

    /// The number of long values before entry `i`.
    fn big_before(&self, i: usize) -> usize {
        self.heads[..i].iter().rev().find_map(|h| h.big().map(|b| b + 1)).unwrap_or(0)
    }

    /// Shifts the long values' indices from entry `from` on by `delta`.
    fn shift_big(&mut self, from: usize, delta: isize) {
        for h in &mut self.heads[from..] {
            if let Some(b) = h.big() {
                h.vlen = BIG | (b as isize + delta) as u16;
            }
        }
    }

    /// `key` and `inline` appended to the buffer: where they start.
    fn append_bytes(&mut self, key: &[u8], inline: &[u8]) -> u32 {
        let off = u32::try_from(self.data.len()).expect("a leaf's entries fit in 4 GiB");
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(inline);
        off
    }

    /// Inserts `key` with `val` as entry `i`.
    pub(crate) fn insert(&mut self, i: usize, key: &[u8], val: ValView<'_>) {
        let klen = u16::try_from(key.len()).expect("keys are at most MAX_KEY_LEN bytes");
        let (off, vlen) = match val {
            ValView::Inline(bytes) => (self.append_bytes(key, bytes), inline_len(bytes)),
            ValView::Pending(bytes) => {
                (self.append_bytes(key, &[]), self.insert_big(i, Big::Pending(Arc::clone(bytes))))
            }
            ValView::Stored(r) => {
                (self.append_bytes(key, &[]), self.insert_big(i, Big::Stored(*r)))
            }
        };
        self.heads.insert(i, Head { prefix: prefix_of(key), off, klen, vlen });
    }

    /// Makes `big` the long value of a new entry `i`: its `vlen`.
    fn insert_big(&mut self, i: usize, big: Big) -> u16 {
        // An index past 15 bits would wrap (a leaf splits at 4 KiB: about 190 at most).
        assert!(
            self.big.len() < usize::from(BIG - 1),
            "a leaf holds fewer than 32,767 long values"
        );
        let at = self.big_before(i);
        self.big.insert(at, big);
        self.shift_big(i, 1);
        BIG | u16::try_from(at).expect("a leaf holds fewer than 32,768 long values")
    }

    /// Appends `key` with `val`.
    pub(crate) fn push(&mut self, key: &[u8], val: ValView<'_>) {
        self.insert(self.len(), key, val);
    }

    /// Removes entry `i` and returns its value (an inline one copied out).
    pub(crate) fn remove(&mut self, i: usize) -> Val {
        let old = self.val(i).to_val();
        let h = self.heads.remove(i);
        self.unused += h.span();
        if let Some(b) = h.big() {
            self.big.remove(b);
            self.shift_big(i, -1);
        }
        self.reclaim();
        old
    }

    /// Replaces value `i` with `val`; returns the old one (an inline one copied out).
    pub(crate) fn replace(&mut self, i: usize, val: ValView<'_>) -> Val {
        let h = self.heads[i];
        if let (None, ValView::Inline(bytes)) = (h.big(), val) {
            let start = h.off as usize + usize::from(h.klen);
            let end = start + usize::from(h.vlen);
            let old = Val::Inline(self.data[start..end].into());
            if bytes.len() == usize::from(h.vlen) {
                self.data[start..end].copy_from_slice(bytes);
            } else {
                // The key moves with its value: the two stay side by side.
                self.unused += h.span();
                let key = h.off as usize..h.off as usize + usize::from(h.klen);
                let off = u32::try_from(self.data.len()).expect("a leaf's entries fit in 4 GiB");
                self.data.extend_from_within(key);
                self.data.extend_from_slice(bytes);
                self.heads[i].off = off;
                self.heads[i].vlen = inline_len(bytes);
                self.reclaim();
            }
            return old;
        }
        let key = self.key(i).to_vec();
        let old = self.remove(i);
        self.insert(i, &key, val);
        old
    }

    /// Lays the entries out again, in order, once half the buffer is unused.
    fn reclaim(&mut self) {
        if self.unused > 256 && self.unused * 2 > self.data.len() {
            self.compact();
        }
    }

    /// The entries laid out again in order, with no unused bytes.
    fn compact(&mut self) {
        let mut data = Vec::with_capacity(self.data.len() - self.unused);
        for h in &mut self.heads {
            let from = h.off as usize..h.off as usize + h.span();
            h.off = data.len() as u32;
            data.extend_from_slice(&self.data[from]);
        }
        self.data = data;
        self.unused = 0;
    }

    /// The bytes its buffers take (their capacities, unused bytes included; a value waiting
    /// for its object is counted apart).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.heads.capacity() * std::mem::size_of::<Head>()
            + self.data.capacity()
            + self.big.capacity() * std::mem::size_of::<Big>()
    }

    /// Marks value `i`, waiting for its object, as in object `r`.
    pub(crate) fn set_stored(&mut self, i: usize, r: ValRef) {
        let Some(b) = self.heads[i].big() else { unreachable!("a value waiting for its object") };
        self.big[b] = Big::Stored(r);
    }

    /// Moves the entries from `at` on into a new leaf's entries.
    pub(crate) fn split_off(&mut self, at: usize) -> Entries {
        self.split_off_room(at, false)
    }

    /// [`split_off`](Self::split_off), the new entries with room for as many more entries
    /// and bytes as stay here: appends fill the right node next, and its buffers then do not
    /// grow (reallocate) entry by entry.
    pub(crate) fn split_off_with_room(&mut self, at: usize) -> Entries {
        self.split_off_room(at, true)
    }

    fn split_off_room(&mut self, at: usize, room: bool) -> Entries {
        let big = self.big_before(at);
        let heads = self.heads.split_off(at);
        let moved: usize = heads.iter().map(|h| h.span()).sum();
        let (more_heads, more_bytes) =
            if room { (self.heads.len(), self.data.len() - self.unused - moved) } else { (0, 0) };
        let mut right = Entries {
            heads: Vec::with_capacity(heads.len() + more_heads),
            data: Vec::with_capacity(moved + more_bytes),
            unused: 0,
            big: self.big.split_off(big),
        };
        for mut h in heads {
            let from = h.off as usize..h.off as usize + h.span();
            self.unused += from.len();
            h.off = right.data.len() as u32;
            right.data.extend_from_slice(&self.data[from]);
            if let Some(b) = h.big() {
                h.vlen = BIG | (b - big) as u16;
            }
            right.heads.push(h);
        }
        // A split at the end (a sorted load) moves a few entries: the left keeps their bytes
        // unused rather than being copied into a new buffer per split; a split in the middle
        // frees about half, and is laid out again.
        if self.unused * 4 > self.data.len() {
            self.compact();
        }
        right
    }

    /// Moves `other`'s entries, all greater than this one's, after them.
    pub(crate) fn append(&mut self, other: &mut Entries) {
        assert!(self.big.len() + other.big.len() < usize::from(BIG), "too many long values");
        let (data, big) = (self.data.len() as u32, self.big.len() as u16);
        self.heads.extend(other.heads.drain(..).map(|mut h| {
            h.off += data;
            if h.big().is_some() {
                h.vlen += big;
            }
            h
        }));
        self.data.append(&mut other.data);
        self.unused += std::mem::take(&mut other.unused);
        self.big.append(&mut other.big);
        self.reclaim();
    }

    /// The bytes the entries take in their leaf's encoding: each entry's 6 bytes of lengths,
    /// its key, and its value (or reference).
    pub(crate) fn encoded_len(&self) -> usize {
        6 * self.len() + self.data.len() - self.unused + REF_BYTES * self.big.len()
    }
}

/// An inline value's length in a [`Head`] (at most [`MAX_INLINE_VALUE_LEN`], under [`BIG`]).
fn inline_len(bytes: &[u8]) -> u16 {
    debug_assert!(bytes.len() <= MAX_INLINE_VALUE_LEN, "a long value kept inline");
    bytes.len() as u16
}

/// The first index in `0..len` whose key is not less than (`strict`: greater than) the
/// probe, by a binary search on the prefixes, reading bytes only where a prefix ties.
#[inline(always)]
fn search_bound<'k>(
    len: usize,
    prefix: impl Fn(usize) -> u64,
    bytes: impl Fn(usize) -> &'k [u8],
    probe: &Probe<'_>,
    strict: bool,
) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let ord = prefix(mid).cmp(&probe.prefix).then_with(|| bytes(mid).cmp(probe.bytes));
        let below = match ord {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => strict,
            std::cmp::Ordering::Greater => false,
        };
        if below {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A key's bytes, with their first eight as a big-endian integer (zero-padded), so most
/// comparisons in a search are one integer compare in the node's own array. Ordered as the
/// bytes are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Key {
    prefix: u64,
    bytes: Arc<[u8]>,
}

fn prefix_of(bytes: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = bytes.len().min(8);
    head[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(head)
}

impl From<&[u8]> for Key {
    fn from(bytes: &[u8]) -> Self {
        Self { prefix: prefix_of(bytes), bytes: bytes.into() }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Zero-padded prefixes order like the bytes whenever they differ.
        self.prefix.cmp(&other.prefix).then_with(|| self.bytes.cmp(&other.bytes))
    }
}

/// A key searched for, prepared once for many comparisons.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'a> {
    prefix: u64,
    bytes: &'a [u8],
}

impl<'a> Probe<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { prefix: prefix_of(bytes), bytes }
    }
}

/// Keys being laid out, for a branch's [`Keys`]: their 8-byte prefixes in one array, their
/// bytes end to end in another, with each key's end offset. What a decode or a bulk load
/// pushes keys into, and what a change to a branch's keys is made in, before
/// [`freeze`](Self::freeze) lays them out in the buffers a branch's copies share.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyList {
    prefixes: Vec<u64>,
    /// `ends[i]`: where key `i`'s bytes end in `data` (key `i` starts where `i - 1` ends).
    ends: Vec<u32>,
    data: Vec<u8>,
}

/// A copy of `v` with room for `extra` more elements: a node is copied to be changed, and its
/// first change would otherwise grow (reallocate) each buffer it copied.
fn copy_with_room<T: Copy>(v: &[T], extra: usize) -> Vec<T> {
    let mut copy = Vec::with_capacity(v.len() + extra);
    copy.extend_from_slice(v);
    copy
}

impl KeyList {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            prefixes: Vec::with_capacity(n),
            ends: Vec::with_capacity(n),
            data: Vec::with_capacity(n * 16),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.prefixes.len()
    }

    #[inline]
    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] as usize }
    }

    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        &self.data[self.start(i)..self.ends[i] as usize]
    }

    /// Key `i`, copied out.
    pub(crate) fn key(&self, i: usize) -> Key {
        Key { prefix: self.prefixes[i], bytes: self.get(i).into() }
    }

    /// Shifts the end offsets from key `from` on by `delta` bytes.
    fn shift(&mut self, from: usize, delta: isize) {
        for end in &mut self.ends[from..] {
            *end = (*end as isize + delta) as u32;
        }
    }

    pub(crate) fn set(&mut self, i: usize, key: Key) {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        let delta = key.bytes.len() as isize - (end - start) as isize;
        splice_bytes(&mut self.data, start..end, &key.bytes);
        self.prefixes[i] = key.prefix;
        self.shift(i, delta);
    }

    pub(crate) fn push(&mut self, key: Key) {
        self.push_bytes(key.prefix, &key.bytes);
    }

    fn push_bytes(&mut self, prefix: u64, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.prefixes.push(prefix);
        self.ends.push(u32::try_from(self.data.len()).expect("a node's keys fit in 4 GiB"));
    }

    /// Appends `bytes` as the last key.
    pub(crate) fn push_slice(&mut self, bytes: &[u8]) {
        self.push_bytes(prefix_of(bytes), bytes);
    }

    pub(crate) fn pop(&mut self) -> Option<Key> {
        let last = self.len().checked_sub(1)?;
        Some(self.remove(last))
    }

    pub(crate) fn remove(&mut self, i: usize) -> Key {
        let key = self.key(i);
        self.delete(i);
        key
    }

    /// Removes key `i` without copying it out.
    pub(crate) fn delete(&mut self, i: usize) {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        self.data.drain(start..end);
        self.prefixes.remove(i);
        self.ends.remove(i);
        self.shift(i, -((end - start) as isize));
    }

    pub(crate) fn split_off(&mut self, at: usize) -> KeyList {
        let base = self.start(at);
        let mut ends = self.ends.split_off(at);
        for end in &mut ends {
            *end -= base as u32;
        }
        KeyList { prefixes: self.prefixes.split_off(at), ends, data: self.data.split_off(base) }
    }

    pub(crate) fn append(&mut self, other: &mut KeyList) {
        let base = self.data.len() as u32;
        self.prefixes.append(&mut other.prefixes);
        self.ends.extend(other.ends.drain(..).map(|end| end + base));
        self.data.append(&mut other.data);
    }

    /// The keys laid out as a branch keeps them: the prefixes in one buffer, the end offsets
    /// (4 bytes each, little-endian) and then the keys' bytes in another.
    pub(crate) fn freeze(&self) -> Keys {
        let mut rest = Vec::with_capacity(4 * self.len() + self.data.len());
        for end in &self.ends {
            rest.extend_from_slice(&end.to_le_bytes());
        }
        rest.extend_from_slice(&self.data);
        Keys { prefixes: self.prefixes.as_slice().into(), rest: rest.into() }
    }
}

impl From<&Keys> for KeyList {
    fn from(keys: &Keys) -> Self {
        let n = keys.len();
        Self {
            prefixes: keys.prefixes.to_vec(),
            ends: (0..n).map(|i| keys.end(i) as u32).collect(),
            data: keys.rest[4 * n..].to_vec(),
        }
    }
}

/// A branch's separator keys, in order, in two buffers its copies share: a writer's copy of a
/// branch (made to point it at a changed child, which leaves the keys as they were) takes a
/// reference to them instead of copying them, and they are laid out again only when a key
/// changes (a child split or merged), through a [`KeyList`]. The first buffer holds the keys'
/// 8-byte prefixes (what a search reads, a cache line per 8 keys; in an array of `u64`, as
/// reading them out of bytes cost gets 6-8%), the second each key's end offset, then the keys'
/// bytes end to end (read on a prefix tie). Phase-synced A/B against copying them: single-put
/// commits 1.10-1.12x, 1,000-put commits 1.06-1.08x, gets equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    prefixes: Arc<[u64]>,
    rest: Arc<[u8]>,
}

impl Keys {
    pub(crate) fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Where key `i`'s bytes end, from the start of the keys' bytes.
    #[inline]
    fn end(&self, i: usize) -> usize {
        u32::from_le_bytes(self.rest[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize
    }

    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        // The end offsets are followed by the keys' bytes: an index past them would read
        // bytes as an offset.
        assert!(i < self.len(), "key {i} of a branch's {}", self.len());
        let base = 4 * self.len();
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        &self.rest[base + start..base + self.end(i)]
    }

    /// Key `i`, copied out.
    pub(crate) fn key(&self, i: usize) -> Key {
        Key { prefix: self.prefixes[i], bytes: self.get(i).into() }
    }

    /// Makes a change in a [`KeyList`] of the keys and lays them out again.
    fn change<R>(&mut self, f: impl FnOnce(&mut KeyList) -> R) -> R {
        let mut list = KeyList::from(&*self);
        let r = f(&mut list);
        *self = list.freeze();
        r
    }

    pub(crate) fn set(&mut self, i: usize, key: Key) {
        self.change(|l| l.set(i, key));
    }

    pub(crate) fn push(&mut self, key: Key) {
        self.change(|l| l.push(key));
    }

    pub(crate) fn pop(&mut self) -> Option<Key> {
        self.change(KeyList::pop)
    }

    /// Inserts `key` as key `i` (a child split, the change to a branch's keys that writes
    /// make most often), laid out in one pass.
    pub(crate) fn insert(&mut self, i: usize, key: Key) {
        let (n, added) = (self.len(), key.bytes.len());
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let prefixes = self.prefixes[..i]
            .iter()
            .copied()
            .chain(std::iter::once(key.prefix))
            .chain(self.prefixes[i..].iter().copied())
            .collect();
        let data = &self.rest[4 * n..];
        // Made in place in its shared buffer (one allocation: a `Vec` turned into an `Arc`
        // is a second, and these are a branch's size, past the allocator's small-size caches).
        let len = 4 * (n + 1) + data.len() + added;
        let mut rest: Arc<[u8]> = std::iter::repeat_n(0, len).collect();
        let out = Arc::get_mut(&mut rest).expect("made just above");
        let (ends, bytes) = out.split_at_mut(4 * (n + 1));
        ends[..4 * i].copy_from_slice(&self.rest[..4 * i]);
        let end = |e: usize| u32::try_from(e + added).expect("a node's keys fit in 4 GiB");
        ends[4 * i..4 * i + 4].copy_from_slice(&end(start).to_le_bytes());
        for j in i..n {
            ends[4 * j + 4..4 * j + 8].copy_from_slice(&end(self.end(j)).to_le_bytes());
        }
        bytes[..start].copy_from_slice(&data[..start]);
        bytes[start..start + added].copy_from_slice(&key.bytes);
        bytes[start + added..].copy_from_slice(&data[start..]);
        *self = Keys { prefixes, rest };
    }

    pub(crate) fn remove(&mut self, i: usize) -> Key {
        self.change(|l| l.remove(i))
    }

    pub(crate) fn split_off(&mut self, at: usize) -> Keys {
        self.change(|l| l.split_off(at).freeze())
    }

    pub(crate) fn append(&mut self, other: &mut Keys) {
        let mut other_list = KeyList::from(&*other);
        self.change(|l| l.append(&mut other_list));
        *other = Keys::default();
    }

    /// The bytes its buffer takes (counted in full by each node sharing it).
    pub(crate) fn heap_bytes(&self) -> usize {
        32 + 8 * self.prefixes.len() + self.rest.len()
    }

    /// The keys' lengths summed.
    pub(crate) fn total_len(&self) -> usize {
        self.rest.len() - 4 * self.len()
    }

    /// The keys' bytes, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The first index whose key is not less than (`strict`: greater than) the probe.
    #[inline]
    fn bound(&self, probe: &Probe<'_>, strict: bool) -> usize {
        search_bound(self.len(), |i| self.prefixes[i], |i| self.get(i), probe, strict)
    }

    /// The number of keys `<=` the probe (the child a branch descends to).
    #[inline]
    pub(crate) fn upper(&self, probe: &Probe<'_>) -> usize {
        self.bound(probe, true)
    }

    /// The number of keys `<` the probe.
    #[inline]
    pub(crate) fn lower(&self, probe: &Probe<'_>) -> usize {
        self.bound(probe, false)
    }
}

impl std::ops::Index<usize> for Keys {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        self.get(i)
    }
}

/// A node in memory.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The object that holds it on disk (`None`: written by no checkpoint yet).
    pub id: Option<ObjectId>,
    /// It differs from what its object holds (a new node is dirty).
    pub dirty: bool,
    /// A node below it is dirty (it was copied on the way there; its own bytes, child ids
    /// included, are what its object holds unless `dirty`).
    pub below: bool,
    /// Its entries.
    pub body: Body,
    /// Used again (after its load) since the persistence thread last looked: a clean leaf
    /// that was is kept and the mark cleared, one that was not is unloaded first (second
    /// chance, an approximation of least recently used that a scan, using each leaf once,
    /// does not defeat).
    pub touched: Touched,
}

/// A node's use mark (see [`Node::touched`]). Set with a load first, so that a node every
/// reader uses (the root) is written once, not on every read.
#[derive(Debug, Default)]
pub(crate) struct Touched(std::sync::atomic::AtomicBool);

impl Touched {
    /// Marks the node used.
    #[inline]
    pub(crate) fn set(&self) {
        if !self.0.load(std::sync::atomic::Ordering::Relaxed) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the node was used since the last call, clearing the mark.
    pub(crate) fn take(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
            && self.0.swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for Touched {
    /// A copy made for a change was just used.
    fn clone(&self) -> Self {
        Self(std::sync::atomic::AtomicBool::new(true))
    }
}

/// A node's entries.
#[derive(Debug)]
pub(crate) enum Body {
    /// Keys in order, each with its value (the keys strictly increasing).
    Leaf(Entries),
    /// Separator keys and one child more than keys: `children[i]` holds the keys `k` with
    /// `keys[i - 1] <= k < keys[i]`.
    Branch {
        /// The separators, strictly increasing.
        keys: Keys,
        /// The subtrees.
        children: Vec<Link>,
    },
}

impl Clone for Body {
    /// A branch's copy takes a reference to each loaded child: the count of each is in a
    /// line of its own, most of them not cached (a leaf's, below a branch of a hundred), and
    /// each locked increment waits for its line before the next starts. Asking for all the
    /// lines first lets their misses overlap: single-put commits 1.14-1.20x, 1,000-put
    /// commits 1.07-1.08x in phase-synced A/B runs (docs/benchmarks.md).
    fn clone(&self) -> Self {
        match self {
            Body::Leaf(entries) => Body::Leaf(entries.clone()),
            Body::Branch { keys, children } => {
                for child in children {
                    if let Some(node) = child.node.get() {
                        // `Arc` keeps its two counts just before the value; if a later `std`
                        // did not, this would only ask for a line nearby.
                        let counts = Arc::as_ptr(node)
                            .cast::<u8>()
                            .wrapping_sub(2 * std::mem::size_of::<usize>());
                        bob_io_helpers::prefetch(counts);
                    }
                }
                Body::Branch { keys: keys.clone(), children: children.clone() }
            }
        }
    }
}

/// A reference to a child node: in memory, or only its object id.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    /// The child's object when it was last seen on disk (`None`: it never was).
    pub id: Option<ObjectId>,
    /// The checkpoint whose tree this link belongs to: the node to load is the one its object
    /// held at that checkpoint (a later checkpoint may have rewritten the object).
    pub seen: u64,
    /// The node, once loaded or made.
    pub node: NodeCell,
}

/// A child node, filled in once (the first of racing loads wins), as a `OnceLock` is, but
/// cloned without going through a `Once`: copying a branch clones every child's cell, and
/// that copy is most of a small commit's work.
pub(crate) type NodeCell = SetOnce<Arc<Node>>;

impl Link {
    /// A link to a node in memory.
    pub(crate) fn loaded(node: Node, seen: u64) -> Self {
        let id = node.id;
        Self { id, seen, node: NodeCell::with(Arc::new(node)) }
    }

    /// A link to a node that is only on disk.
    pub(crate) fn stored(id: ObjectId, seen: u64) -> Self {
        Self { id: Some(id), seen, node: NodeCell::new() }
    }
}

impl Node {
    /// An empty leaf that no checkpoint has written.
    pub(crate) fn empty_leaf() -> Self {
        Self {
            id: None,
            dirty: true,
            below: false,
            body: Body::Leaf(Entries::default()),
            touched: Touched::default(),
        }
    }

    /// This node with its children as links to their objects, unloaded: `seen` is the
    /// checkpoint the links belong to (`None`: each keeps its own). Saved for older snapshots
    /// (`None`: only for a node that is not dirty, whose bytes and child ids are its
    /// object's), and handed to a reader whose link saw checkpoint `seen` (`Some`: never the
    /// saved node's own links, which may carry a later checkpoint).
    pub(crate) fn stored_copy(&self, seen: Option<u64>) -> Self {
        let body = match &self.body {
            Body::Leaf(_) => self.body.clone(),
            Body::Branch { keys, children } => Body::Branch {
                keys: keys.clone(),
                children: children
                    .iter()
                    .map(|c| match c.node.get().map_or(c.id, |n| n.id) {
                        Some(id) => Link::stored(id, seen.unwrap_or(c.seen)),
                        None => c.clone(), // not reached: a new child makes its parent dirty
                    })
                    .collect(),
            },
        };
        Self { id: self.id, dirty: false, below: false, body, touched: Touched::default() }
    }

    /// The number of keys.
    pub(crate) fn len(&self) -> usize {
        match &self.body {
            Body::Leaf(entries) => entries.len(),
            Body::Branch { keys, .. } => keys.len(),
        }
    }

    /// The memory it takes, about: the node, its shared allocation's counts, and its buffers
    /// at their capacities (what the memory budget counts).
    pub(crate) fn heap_bytes(&self) -> usize {
        let buffers = match &self.body {
            Body::Leaf(entries) => entries.heap_bytes(),
            Body::Branch { keys, children } => {
                keys.heap_bytes() + children.capacity() * std::mem::size_of::<Link>()
            }
        };
        std::mem::size_of::<Node>() + 16 + buffers
    }

    /// Its encoded length in bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        match &self.body {
            Body::Leaf(entries) => HEADER + TRAILER + entries.encoded_len(),
            Body::Branch { keys, .. } => HEADER + TRAILER + 8 + 10 * keys.len() + keys.total_len(),
        }
    }

    /// The layout, with `written` as the checkpoint that writes it. Every child must have an
    /// id, and every long value an object.
    pub(crate) fn encode(&self, tree: u32, written: u64, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(NODE_VERSION);
        let count = u16::try_from(self.len()).expect("a node holds fewer than 65,536 keys");
        match &self.body {
            Body::Leaf(_) => out.push(LEAF),
            Body::Branch { .. } => out.push(BRANCH),
        }
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&tree.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&written.to_le_bytes());
        match &self.body {
            Body::Leaf(entries) => {
                for (k, v) in entries.iter() {
                    out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                    match v {
                        ValView::Inline(v) => {
                            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                            out.extend_from_slice(k);
                            out.extend_from_slice(v);
                        }
                        ValView::Stored(r) => {
                            out.extend_from_slice(&(r.len | REF_FLAG).to_le_bytes());
                            out.extend_from_slice(k);
                            out.extend_from_slice(&r.id.0.to_le_bytes());
                            out.extend_from_slice(&r.written.to_le_bytes());
                        }
                        ValView::Pending(_) => {
                            unreachable!("values are written before their leaf")
                        }
                    }
                }
            }
            Body::Branch { keys, children } => {
                let id = |link: &Link| link.id.expect("children are written before parents").0;
                out.extend_from_slice(&id(&children[0]).to_le_bytes());
                for (k, child) in keys.iter().zip(&children[1..]) {
                    out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                    out.extend_from_slice(k);
                    out.extend_from_slice(&id(child).to_le_bytes());
                }
            }
        }
        let sum = checksum(out);
        out.extend_from_slice(&sum.to_le_bytes());
    }

    /// The node object `id` holds, for tree `tree`; its children's links carry `seen`.
    /// Returns the node and the checkpoint that wrote it.
    pub(crate) fn decode(id: ObjectId, tree: u32, seen: u64, bytes: &[u8]) -> Result<(Self, u64)> {
        let corrupt = |why: String| Error::Corrupt(format!("B-tree node {id}: {why}"));
        if bytes.len() < HEADER + TRAILER || bytes.len() > MAX_NODE_BYTES {
            return Err(corrupt(format!("{} bytes is not a node's length", bytes.len())));
        }
        let (body, sum) = bytes.split_at(bytes.len() - TRAILER);
        if &body[..4] != MAGIC {
            return Err(corrupt("no node magic".into()));
        }
        let version = body[4];
        if !(1..=NODE_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                what: "B-tree node",
                found: u32::from(version),
                read: u32::from(NODE_VERSION),
            });
        }
        if checksum(body).to_le_bytes() != sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        let kind = body[5];
        let count = usize::from(u16::from_le_bytes([body[6], body[7]]));
        let node_tree = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if node_tree != tree {
            return Err(corrupt(format!("belongs to tree {node_tree}, found under tree {tree}")));
        }
        if body[12..16] != [0; 4] {
            return Err(corrupt("reserved bytes are not zero".into()));
        }
        let written = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
        let node_written = written;
        let mut r = Cursor { bytes: body, at: HEADER };
        // Capacity for no more entries than the bytes can hold (6 bytes of lengths at
        // least each): a damaged count allocates nothing past the node's size.
        let count_cap = count.min(bytes.len() / 6);
        let mut keys = None;
        let mut entries = Entries::default();
        let mut children = Vec::new();
        match kind {
            LEAF => {
                entries = Entries::with_capacity(count_cap);
                // The entries' bytes: the body less each entry's 6 bytes of lengths (and a
                // reference's 16, which the first long value's push makes room for).
                entries.data.reserve((body.len() - HEADER).saturating_sub(6 * count));
                for _ in 0..count {
                    let k = usize::from(r.u16()?);
                    let v = r.u32()?;
                    if k > MAX_KEY_LEN {
                        return Err(corrupt(format!("a key of {k} bytes is too long")));
                    }
                    if v & REF_FLAG == 0 {
                        if v as usize > MAX_INLINE_VALUE_LEN {
                            return Err(corrupt(format!("an inline value of {v} bytes")));
                        }
                        let key = r.take(k)?;
                        entries.push(key, ValView::Inline(r.take(v as usize)?));
                        continue;
                    }
                    let len = v & !REF_FLAG;
                    if version < 2
                        || (len as usize) <= MAX_INLINE_VALUE_LEN
                        || len as usize > MAX_VALUE_LEN
                    {
                        return Err(corrupt(format!("a value object of {len} bytes")));
                    }
                    let key = r.take(k)?;
                    let (raw, written) = (r.u64()?, r.u64()?);
                    if raw == 0 || written > node_written {
                        return Err(corrupt(format!(
                            "a value object {raw} written by checkpoint {written}"
                        )));
                    }
                    entries.push(key, ValView::Stored(&ValRef { id: ObjectId(raw), written, len }));
                }
            }
            BRANCH => {
                let child = |r: &mut Cursor<'_>| -> Result<Link> {
                    let raw = r.u64()?;
                    if raw == 0 {
                        return Err(corrupt("a child is object 0".into()));
                    }
                    Ok(Link::stored(ObjectId(raw), seen))
                };
                let mut list = KeyList::with_capacity(count_cap);
                children.reserve(count_cap + 1);
                children.push(child(&mut r)?);
                for _ in 0..count {
                    let k = usize::from(r.u16()?);
                    if k > MAX_KEY_LEN {
                        return Err(corrupt(format!("a key of {k} bytes is too long")));
                    }
                    list.push_slice(r.take(k)?);
                    children.push(child(&mut r)?);
                }
                keys = Some(list.freeze());
                if count == 0 {
                    return Err(corrupt("a branch without keys".into()));
                }
            }
            VALUE => return Err(corrupt("a value object, not a node".into())),
            other => return Err(corrupt(format!("unknown node kind {other}"))),
        }
        if r.at != body.len() {
            return Err(corrupt(format!("{} bytes past the last entry", body.len() - r.at)));
        }
        let in_order = match &keys {
            None => strictly_increasing(entries.keys()),
            Some(keys) => strictly_increasing(keys.iter()),
        };
        if !in_order {
            return Err(corrupt("keys out of order".into()));
        }
        let body = match keys {
            None => Body::Leaf(entries),
            Some(keys) => Body::Branch { keys, children },
        };
        Ok((
            Self { id: Some(id), dirty: false, below: false, body, touched: Touched::default() },
            written,
        ))
    }
}

/// Whether `keys` are strictly increasing.
fn strictly_increasing<'k>(keys: impl Iterator<Item = &'k [u8]>) -> bool {
    let mut last: Option<&[u8]> = None;
    keys.into_iter().all(|k| last.replace(k).is_none_or(|l| l < k))
}

/// Encodes a value object: the node header (kind [`VALUE`], no entries) with `written` as
/// the checkpoint that writes it, the value's bytes, and the checksum.
pub(crate) fn encode_value(tree: u32, written: u64, value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER + value.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.push(NODE_VERSION);
    out.push(VALUE);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&tree.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&written.to_le_bytes());
    out.extend_from_slice(value);
    let sum = checksum(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// The value a value object's bytes hold, if they are the object `r` names (`Ok(None)`: an
/// intact object written by another checkpoint, or not a value: the id was reused). Damage
/// is an error.
pub(crate) fn decode_value(r: &ValRef, mut bytes: Vec<u8>) -> Result<Option<Vec<u8>>> {
    let corrupt = |why: String| Error::Corrupt(format!("B-tree value object {}: {why}", r.id));
    if bytes.len() < HEADER + TRAILER || &bytes[..4] != MAGIC {
        return Ok(None); // not a B-tree object at all: another use of the id
    }
    let (body, sum) = bytes.split_at(bytes.len() - TRAILER);
    if checksum(body).to_le_bytes() != sum {
        return Err(corrupt("checksum mismatch".into()));
    }
    let written = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    if body[5] != VALUE || written != r.written {
        return Ok(None);
    }
    if body[4] > NODE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "B-tree value object",
            found: u32::from(body[4]),
            read: u32::from(NODE_VERSION),
        });
    }
    if body[4] < 2 || body[6..8] != [0; 2] || body[12..16] != [0; 4] {
        return Err(corrupt("a bad header".into()));
    }
    if body.len() - HEADER != r.len as usize {
        return Err(corrupt(format!("{} bytes, its leaf says {}", body.len() - HEADER, r.len)));
    }
    bytes.truncate(bytes.len() - TRAILER);
    bytes.drain(..HEADER);
    Ok(Some(bytes))
}

/// The tree id of an intact node's bytes (magic and checksum right), whatever else is wrong.
pub(crate) fn intact_tree_of(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < HEADER + TRAILER || &bytes[..4] != MAGIC {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - TRAILER);
    (checksum(body).to_le_bytes() == sum)
        .then(|| u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            Error::Corrupt(format!("a B-tree node ends inside an entry (at byte {})", self.at))
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// Asks the processor to bring `items` into its cache and goes on without waiting (on
/// x86_64; elsewhere it does nothing).
#[inline]
pub(crate) fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = items.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(items)).step_by(64) {
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 processor has (it is in
            // the target's baseline). A prefetch is a hint: it changes no memory and never
            // faults, and each address lies inside the live borrowed slice anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    start.wrapping_add(offset),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefetch of any slice (empty, unaligned, ending at its allocation's last byte)
    /// changes nothing in it.
    #[test]
    fn a_prefetch_changes_no_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        for (start, end) in [(0, 0), (0, 256), (1, 256), (63, 65), (200, 256)] {
            prefetch(&bytes[start..end]);
        }
        prefetch::<u64>(&[]);
        prefetch(&[7u64; 100][3..]);
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    /// Threads racing to fill a cell all see one node, the winner's; a clone of a filled
    /// cell shares it, a clone of an empty one is empty, and `get_mut` reaches it.
    #[test]
    fn a_node_cell_is_filled_once_and_clones_share_it() {
        let cell = NodeCell::new();
        assert!(cell.get().is_none() && cell.clone().get().is_none());
        let winners = std::sync::atomic::AtomicUsize::new(0);
        let seen: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u64)
                .map(|i| {
                    let (cell, winners) = (&cell, &winners);
                    scope.spawn(move || {
                        let mut node = Node::empty_leaf();
                        node.id = Some(ObjectId(i + 1));
                        if cell.set(Arc::new(node)).is_ok() {
                            winners.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Arc::as_ptr(cell.get().expect("set")) as usize
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(seen.iter().all(|&p| p == seen[0]));
        let copy = cell.clone();
        assert!(Arc::ptr_eq(copy.get().unwrap(), cell.get().unwrap()));
        let mut owned = copy;
        Arc::make_mut(owned.get_mut().unwrap()).dirty = false;
        assert!(!Arc::ptr_eq(owned.get().unwrap(), cell.get().unwrap()), "copied on change");
    }

    fn leaf(pairs: &[(&[u8], &[u8])]) -> Node {
        Node {
            id: Some(ObjectId(9)),
            dirty: false,
            below: false,
            touched: Touched::default(),
            body: Body::Leaf({
                let mut entries = Entries::default();
                pairs.iter().for_each(|p| entries.push(p.0, Val::new(p.1).view()));
                entries
            }),
        }
    }

    #[test]
    fn a_leaf_and_a_branch_round_trip_and_every_flip_is_caught() {
        let node = leaf(&[(b"a", b"1"), (b"bc", b""), (b"d", b"xyz")]);
        let mut bytes = Vec::new();
        node.encode(3, 7, &mut bytes);
        assert_eq!(bytes.len(), node.encoded_len());
        let (back, written) = Node::decode(ObjectId(9), 3, 7, &bytes).unwrap();
        assert_eq!(written, 7);
        let Body::Leaf(entries) = back.body else { panic!("a leaf") };
        assert_eq!(entries.key(1), b"bc");
        assert_eq!(entries.val(2), ValView::Inline(b"xyz"));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Node::decode(ObjectId(9), 3, 7, &bad).is_err(), "flip at {i}");
        }
        assert!(Node::decode(ObjectId(9), 4, 7, &bytes).is_err(), "another tree's node");

        let branch = Node {
            id: None,
            dirty: true,
            below: false,
            touched: Touched::default(),
            body: Body::Branch {
                keys: {
                    let mut keys = Keys::default();
                    keys.push(Key::from(b"m".as_slice()));
                    keys
                },
                children: vec![Link::stored(ObjectId(5), 1), Link::stored(ObjectId(6), 1)],
            },
        };
        branch.encode(3, 8, &mut bytes);
        assert_eq!(bytes.len(), branch.encoded_len());
        let (back, _) = Node::decode(ObjectId(10), 3, 8, &bytes).unwrap();
        let Body::Branch { children, .. } = back.body else { panic!("a branch") };
        assert_eq!(children[1].id, Some(ObjectId(6)));
        assert_eq!(children[1].seen, 8);
    }

    /// A leaf naming a value object round-trips; a version 1 leaf (no references) still
    /// decodes; a value object decodes only as the object its reference names.
    #[test]
    fn value_references_and_value_objects_round_trip() {
        let mut node = leaf(&[(b"a", b"1"), (b"b", b"2")]);
        let r = ValRef { id: ObjectId(44), written: 6, len: 5000 };
        let Body::Leaf(vals) = &mut node.body else { unreachable!() };
        vals.replace(1, ValView::Stored(&r));
        let mut bytes = Vec::new();
        node.encode(3, 7, &mut bytes);
        assert_eq!(bytes.len(), node.encoded_len());
        let (back, _) = Node::decode(ObjectId(9), 3, 7, &bytes).unwrap();
        let Body::Leaf(vals) = back.body else { panic!("a leaf") };
        assert_eq!(vals.val(1).stored(), Some(&r));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Node::decode(ObjectId(9), 3, 7, &bad).is_err(), "flip at {i}");
        }
        // A reference written after the node that names it is corrupt.
        let late = ValRef { written: 8, ..r };
        let Body::Leaf(vals) = &mut node.body else { unreachable!() };
        vals.replace(1, ValView::Stored(&late));
        node.encode(3, 7, &mut bytes);
        assert!(Node::decode(ObjectId(9), 3, 7, &bytes).is_err());

        // Version 1: the same layout without references.
        let old = leaf(&[(b"a", b"1"), (b"b", b"2")]);
        old.encode(3, 7, &mut bytes);
        bytes.truncate(bytes.len() - TRAILER);
        bytes[4] = 1;
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        assert!(Node::decode(ObjectId(9), 3, 7, &bytes).is_ok());
        bytes[4] = 3;
        assert!(matches!(
            Node::decode(ObjectId(9), 3, 7, &bytes),
            Err(Error::UnsupportedVersion { .. })
        ));

        let value: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        encode_value(3, 6, &value, &mut bytes);
        assert_eq!(decode_value(&r, bytes.clone()).unwrap(), Some(value.clone()));
        // Another checkpoint's object under the id (the id was reused): not this value.
        assert_eq!(decode_value(&ValRef { written: 5, ..r }, bytes.clone()).unwrap(), None);
        assert!(decode_value(&ValRef { len: 4999, ..r }, bytes.clone()).is_err());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(!matches!(decode_value(&r, bad), Ok(Some(_))), "flip at {i}");
        }
        // A node is not a value, and a value is not a node.
        node.encode(3, 6, &mut bytes);
        assert_eq!(decode_value(&r, bytes.clone()).unwrap(), None);
        encode_value(3, 6, &value, &mut bytes);
        assert!(Node::decode(ObjectId(44), 3, 6, &bytes).is_err());
    }

    /// A branch's keys follow every change as a sorted vector would, searches included, and
    /// a copy (which shares the keys' buffers) keeps the keys it was made with whatever
    /// changes the original goes through.
    #[test]
    fn branch_keys_follow_every_change_and_copies_keep_theirs() {
        let key = |n: u64| {
            // Ties on the first eight bytes, and keys that are prefixes of others.
            let mut k = b"sep-".to_vec();
            k.extend_from_slice(&(n / 3).to_be_bytes()[4..]);
            k.extend(std::iter::repeat_n(b'x', (n % 3) as usize));
            k
        };
        let check = |keys: &Keys, model: &[Vec<u8>]| {
            assert_eq!(keys.len(), model.len());
            assert_eq!(keys.is_empty(), model.is_empty());
            assert!(keys.iter().eq(model.iter().map(Vec::as_slice)));
            for (i, k) in model.iter().enumerate() {
                assert_eq!(&keys[i], k.as_slice());
                assert_eq!(keys.key(i), Key::from(k.as_slice()));
            }
            assert_eq!(keys.total_len(), model.iter().map(Vec::len).sum::<usize>());
            for n in 0..3 * 40 {
                let p = key(n);
                let probe = Probe::new(&p);
                assert_eq!(keys.lower(&probe), model.partition_point(|k| *k < p));
                assert_eq!(keys.upper(&probe), model.partition_point(|k| *k <= p));
            }
        };
        let mut list = KeyList::default();
        let mut model: Vec<Vec<u8>> = (0..60).step_by(2).map(key).collect();
        model.iter().for_each(|k| list.push_slice(k));
        let mut keys = list.freeze();
        check(&keys, &model);
        let mut copies = vec![(keys.clone(), model.clone())];
        keys.insert(6, Key::from(key(11).as_slice()));
        model.insert(6, key(11));
        copies.push((keys.clone(), model.clone()));
        keys.set(0, Key::from(key(1).as_slice()));
        model[0] = key(1);
        assert_eq!(keys.remove(7), Key::from(model.remove(7).as_slice()));
        copies.push((keys.clone(), model.clone()));
        assert_eq!(keys.pop(), model.pop().map(|k| Key::from(k.as_slice())));
        keys.push(Key::from(key(99).as_slice()));
        model.push(key(99));
        keys.insert(0, Key::from(key(0).as_slice()));
        model.insert(0, key(0));
        keys.insert(keys.len(), Key::from(key(100).as_slice()));
        model.push(key(100));
        check(&keys, &model);
        let mut right = keys.split_off(10);
        let mut right_model = model.split_off(10);
        check(&keys, &model);
        check(&right, &right_model);
        copies.push((right.clone(), right_model.clone()));
        keys.append(&mut right);
        model.append(&mut right_model);
        check(&keys, &model);
        check(&right, &[]);
        // Splits at either end, appends into and of no keys, an insert into no keys.
        copies.push((keys.clone(), model.clone()));
        let mut all = keys.split_off(0);
        check(&keys, &[]);
        check(&all, &model);
        let mut none = all.split_off(all.len());
        check(&none, &[]);
        none.append(&mut all);
        check(&none, &model);
        check(&all, &[]);
        none.append(&mut all);
        check(&none, &model);
        let mut one = Keys::default();
        one.insert(0, Key::from(model[0].as_slice()));
        check(&one, &model[..1]);
        for (copy, its_model) in &copies {
            check(copy, its_model);
        }
        assert_eq!(KeyList::from(&none).freeze(), none);
    }

    /// Set keys change the bytes the rest of the keys sit at: each key reads back as set.
    #[test]
    fn a_branch_key_set_shorter_or_longer_moves_the_rest() {
        let key = |n: usize| Key::from(vec![b'a' + n as u8; 1 + n].as_slice());
        let mut keys = Keys::default();
        (0..8).for_each(|n| keys.push(key(n)));
        let copy = keys.clone();
        keys.set(2, Key::from(&b"c"[..]));
        keys.set(5, Key::from(vec![b'f'; 30].as_slice()));
        let expect: Vec<Vec<u8>> = (0..8)
            .map(|n| match n {
                2 => b"c".to_vec(),
                5 => vec![b'f'; 30],
                n => vec![b'a' + n as u8; 1 + n],
            })
            .collect();
        assert!(keys.iter().eq(expect.iter().map(Vec::as_slice)));
        assert!(
            copy.iter().eq((0..8)
                .map(|n| vec![b'a' + n as u8; 1 + n])
                .collect::<Vec<_>>()
                .iter()
                .map(Vec::as_slice))
        );
    }

    /// A merge of two copied siblings, an entry of no bytes at the end of the bytes,
    /// replacements of the same length (written over) and of another, and a split of the
    /// merged leaf keep each copy what its vector says.
    #[test]
    fn leaf_copies_merge_replace_and_split_as_vectors_do() {
        type Model = Vec<(Vec<u8>, Vec<u8>)>;
        let check = |entries: &Entries, model: &Model| {
            assert_eq!(entries.len(), model.len());
            for (i, (k, v)) in model.iter().enumerate() {
                assert_eq!(entries.entry(i), (k.as_slice(), ValView::Inline(v)), "entry {i}");
            }
            let encoded = model.iter().map(|(k, v)| 6 + k.len() + v.len()).sum::<usize>();
            assert_eq!(entries.encoded_len(), encoded);
        };
        // Keys lo..hi with 100-byte values.
        let build = |lo: u32, hi: u32| {
            let (mut entries, mut model) = (Entries::default(), Model::new());
            for n in lo..hi {
                let (k, v) = (n.to_be_bytes().to_vec(), vec![n as u8; 100]);
                entries.push(&k, ValView::Inline(&v));
                model.push((k, v));
            }
            (entries, model)
        };
        let (left_first, left_model) = build(1, 30);
        let (right_first, right_model) = build(100, 130);
        let (left_folded, right_folded) = (left_first.clone(), right_first.clone());
        let (mut left, mut right) = (left_folded.clone(), right_folded.clone());
        let (mut lm, mut rm) = (left_model.clone(), right_model.clone());

        // An entry of no bytes, at the end of the bytes.
        left.insert(0, b"", ValView::Inline(b""));
        lm.insert(0, (Vec::new(), Vec::new()));
        let total = left.data.len();
        left.replace(0, ValView::Inline(b""));
        assert_eq!(left.data.len(), total);
        // A same-length value is written over in place.
        left.replace(5, ValView::Inline(&[0xEE; 100]));
        lm[5].1 = vec![0xEE; 100];
        left.replace(5, ValView::Inline(&[0xDD; 100]));
        lm[5].1 = vec![0xDD; 100];
        assert_eq!(left.data.len(), total);
        left.replace(6, ValView::Inline(&[0xCC; 7]));
        lm[6].1 = vec![0xCC; 7];
        right.replace(2, ValView::Inline(&[0xBB; 100]));
        rm[2].1 = vec![0xBB; 100];
        check(&left, &lm);
        check(&right, &rm);
        check(&left_folded, &left_model);

        // A merge of the two copies.
        left.append(&mut right);
        lm.append(&mut rm);
        check(&left, &lm);
        check(&right, &rm);
        let merged = left.clone();
        check(&merged, &lm);
        let mut upper = left.split_off(lm.len() / 2);
        let upper_model = lm.split_off(lm.len() / 2);
        check(&left, &lm);
        check(&upper, &upper_model);
        upper.remove(0);
        check(&merged, &[lm.clone(), upper_model.clone()].concat());
        for (copy, model) in [
            (&left_first, &left_model),
            (&left_folded, &left_model),
            (&right_first, &right_model),
            (&right_folded, &right_model),
        ] {
            check(copy, model);
        }
    }

    /// The keys' summed length follows every change (a node's encoded length reads it).
    #[test]
    fn the_key_total_follows_every_change() {
        let key = |n: usize| Key::from(vec![b'k'; n].as_slice());
        let sum = |keys: &Keys| keys.iter().map(<[u8]>::len).sum::<usize>();
        let mut keys = Keys::default();
        for n in 1..20 {
            keys.push(key(n));
        }
        keys.insert(3, key(40));
        keys.set(5, key(2));
        keys.remove(7);
        keys.pop();
        assert_eq!(keys.total_len(), sum(&keys));
        let mut right = keys.split_off(6);
        assert_eq!((keys.total_len(), right.total_len()), (sum(&keys), sum(&right)));
        keys.append(&mut right);
        assert_eq!((keys.total_len(), right.total_len()), (sum(&keys), 0));
        let node = Node {
            id: None,
            dirty: true,
            below: false,
            touched: Touched::default(),
            body: Body::Branch {
                children: (0..=keys.len())
                    .map(|i| Link::stored(ObjectId(i as u64 + 1), 1))
                    .collect(),
                keys,
            },
        };
        let mut bytes = Vec::new();
        node.encode(1, 1, &mut bytes);
        assert_eq!(bytes.len(), node.encoded_len());
    }

    /// Every change to a leaf's entries keeps each key's and inline value's bytes, and the
    /// encoded length, as a plain vector of owned entries would.
    #[test]
    fn the_entries_follow_every_change_as_a_vector_would() {
        let inline = |n: usize| Val::Inline(vec![n as u8; n].into());
        let stored =
            |n: u64| Val::Stored(Arc::new(ValRef { id: ObjectId(n), written: 1, len: 2000 }));
        let pending = |n: usize| Val::Pending(vec![n as u8; 1500 + n].into());
        let key =
            |n: usize| vec![b'k'; 1 + n % 13].into_iter().chain([n as u8]).collect::<Vec<u8>>();
        let mut entries = Entries::default();
        let mut model: Vec<(Vec<u8>, Val)> = Vec::new();
        let check = |entries: &Entries, model: &[(Vec<u8>, Val)]| {
            assert_eq!(entries.len(), model.len());
            for (i, (k, v)) in model.iter().enumerate() {
                assert_eq!(entries.entry(i), (k.as_slice(), v.view()), "entry {i}");
                assert_eq!(entries.key_owned(i), Key::from(k.as_slice()));
            }
            assert_eq!(
                entries.encoded_len(),
                model.iter().map(|(k, v)| 6 + k.len() + v.view().encoded_len()).sum::<usize>()
            );
        };
        for (i, v) in [inline(3), stored(7), inline(0), pending(2), inline(5), inline(9)]
            .into_iter()
            .enumerate()
        {
            let at = i / 2;
            entries.insert(at, &key(i), v.view());
            model.insert(at, (key(i), v));
            check(&entries, &model);
        }
        let swap = |model: &mut Vec<(Vec<u8>, Val)>, i: usize, v: Val| {
            std::mem::replace(&mut model[i].1, v)
        };
        assert_eq!(entries.replace(2, inline(11).view()), swap(&mut model, 2, inline(11)));
        check(&entries, &model);
        assert_eq!(entries.replace(0, stored(8).view()), swap(&mut model, 0, stored(8)));
        check(&entries, &model);
        assert_eq!(entries.remove(3), model.remove(3).1);
        check(&entries, &model);
        let p = model.iter().position(|(_, v)| matches!(v, Val::Pending(_))).unwrap();
        entries.set_stored(p, ValRef { id: ObjectId(99), written: 2, len: 1502 });
        model[p].1 = Val::Stored(Arc::new(ValRef { id: ObjectId(99), written: 2, len: 1502 }));
        check(&entries, &model);
        // Replacements of other lengths and removals leave bytes unused until they are
        // reclaimed: the entries stay what the vector holds. Copies made along the way keep
        // what they held, whatever changes the entries go through after them.
        let mut copies = Vec::new();
        for round in 0..200usize {
            let i = round % model.len();
            let v = if round % 7 == 3 { pending(round % 5) } else { inline(round % 40) };
            assert_eq!(entries.replace(i, v.view()), swap(&mut model, i, v));
            if round % 9 == 0 {
                assert_eq!(entries.remove(i), model.remove(i).1);
                entries.insert(0, &key(round), inline(33).view());
                model.insert(0, (key(round), inline(33)));
            }
            check(&entries, &model);
            assert!(entries.unused <= 256 || entries.unused * 2 <= entries.data.len());
            if round % 3 == 1 {
                let copy = entries.clone();
                check(&copy, &model);
                copies.push((std::mem::replace(&mut entries, copy), model.clone()));
            }
        }
        for (copy, its_model) in &copies {
            check(copy, its_model);
        }
        // The leaf's encoding is what a leaf built from the vector encodes, byte for byte.
        let encoded = |entries: &Entries| {
            // Values waiting for their objects are given one (as a checkpoint does) first.
            let mut stored = entries.clone();
            for i in 0..stored.len() {
                if let ValView::Pending(b) = stored.val(i) {
                    let r =
                        ValRef { id: ObjectId(1000 + i as u64), written: 1, len: b.len() as u32 };
                    stored.set_stored(i, r);
                }
            }
            let mut node = Node::empty_leaf();
            node.body = Body::Leaf(stored);
            let mut out = Vec::new();
            node.encode(1, 9, &mut out);
            assert_eq!(out.len(), node.encoded_len());
            out
        };
        let mut rebuilt = Entries::default();
        model.iter().for_each(|(k, v)| rebuilt.push(k, v.view()));
        assert_eq!(encoded(&entries), encoded(&rebuilt));
        for at in 0..=entries.len() {
            let (mut left, mut m) = (entries.clone(), model.clone());
            let mut right = left.split_off(at);
            let rm = m.split_off(at);
            check(&left, &m);
            check(&right, &rm);
            left.append(&mut right);
            check(&left, &model);
            assert_eq!(left, entries);
            assert_eq!(encoded(&left), encoded(&rebuilt));
            // A value waiting for its object, moved by the split and the append, is still
            // the one `set_stored` marks.
            let mut waiting = left.clone();
            let mut wm = model.clone();
            waiting.insert(at.min(waiting.len()), b"w", pending(7).view());
            wm.insert(at.min(wm.len()), (b"w".to_vec(), pending(7)));
            let mut tail = waiting.split_off(waiting.len() / 2);
            let tm = wm.split_off(wm.len() / 2);
            waiting.append(&mut tail);
            wm.extend(tm);
            let p = wm.iter().position(|(_, v)| matches!(v, Val::Pending(_))).unwrap();
            let r = ValRef { id: ObjectId(77), written: 3, len: 1507 };
            waiting.set_stored(p, r);
            wm[p].1 = Val::Stored(Arc::new(r));
            check(&waiting, &wm);
        }
    }

    /// Searches agree with a sorted vector's, for keys that tie on their first eight bytes,
    /// are prefixes of each other, end in zero bytes, or are empty; and a leaf holds an empty
    /// key with an empty value, and long keys through replacements that compact it.
    #[test]
    fn searches_agree_with_a_sorted_vector() {
        let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], b"a".to_vec()];
        for tail in [&b""[..], b"\0", b"\0\0", b"x", b"\xff", b"xy\0"] {
            for head in
                [&b"abcdefgh"[..], b"abcdefg", b"abcdefgi", b"\xff\xff\xff\xff\xff\xff\xff\xff"]
            {
                keys.push([head, tail].concat());
            }
        }
        keys.sort();
        keys.dedup();
        let mut entries = Entries::default();
        keys.iter().for_each(|k| entries.push(k, ValView::Inline(b"")));
        let mut probes = keys.clone();
        probes.extend(keys.iter().map(|k| [k.as_slice(), &[0]].concat()));
        probes.extend(keys.iter().filter(|k| !k.is_empty()).map(|k| k[..k.len() - 1].to_vec()));
        probes.push(b"abcdefgh\0\0\0".to_vec());
        for p in &probes {
            let probe = Probe::new(p);
            assert_eq!(entries.search(&probe), keys.binary_search(p), "{p:?}");
            assert_eq!(entries.lower(&probe), keys.partition_point(|k| k < p), "{p:?}");
            assert_eq!(entries.upper(&probe), keys.partition_point(|k| k <= p), "{p:?}");
        }
        assert_eq!(entries.entry(0), (&b""[..], ValView::Inline(b"")));
        // Long keys, with values of changing lengths: replacements move the key along, and
        // compaction keeps every entry whole.
        let mut long = Entries::default();
        let key = |i: u8| vec![i; MAX_KEY_LEN];
        for i in 0..4 {
            long.push(&key(i), ValView::Inline(&[i]));
        }
        for round in 0..100usize {
            let i = round % 4;
            let v = vec![round as u8; round % 50];
            long.replace(i, ValView::Inline(&v));
            assert_eq!(long.entry(i), (key(i as u8).as_slice(), ValView::Inline(&v)));
            assert!(long.unused <= 256 || long.unused * 2 <= long.data.len());
        }
        assert_eq!(long.keys().collect::<Vec<_>>(), (0..4).map(key).collect::<Vec<_>>());
    }

    /// The memory a node is counted at includes the room its buffers hold, not only what its
    /// encoding uses: a right node given room by an append split counts that room.
    #[test]
    fn a_nodes_memory_counts_its_buffers_capacity() {
        let full = leaf(&[(b"aaaa", &[1; 900]), (b"bbbb", &[2; 900]), (b"cccc", &[3; 900])]);
        assert!(full.heap_bytes() >= full.encoded_len());
        let mut left = full.clone();
        let Body::Leaf(entries) = &mut left.body else { unreachable!() };
        // One entry moves; the new node has room for the two that stay.
        let right = entries.split_off_with_room(2);
        assert_eq!(right.len(), 1);
        assert!(right.heap_bytes() >= 2700, "{}", right.heap_bytes());
        let Body::Leaf(entries) = &mut left.body else { unreachable!() };
        assert!(entries.split_off(1).heap_bytes() < 1000);
    }

    #[test]
    fn truncations_and_bad_orders_are_corrupt_not_panics() {
        let node = leaf(&[(b"a", b"1"), (b"b", b"2")]);
        let mut bytes = Vec::new();
        node.encode(1, 1, &mut bytes);
        for len in 0..bytes.len() {
            assert!(Node::decode(ObjectId(9), 1, 1, &bytes[..len]).is_err());
        }
        let unordered = leaf(&[(b"b", b"1"), (b"a", b"2")]);
        unordered.encode(1, 1, &mut bytes);
        assert!(matches!(Node::decode(ObjectId(9), 1, 1, &bytes), Err(Error::Corrupt(_))));
        // A branch whose separators are out of order, or repeat one.
        for seps in [&[&b"b"[..], b"a"][..], &[b"a", b"a"], &[b"a", b"c", b"b"]] {
            let mut keys = KeyList::default();
            seps.iter().for_each(|k| keys.push_slice(k));
            let branch = Node {
                id: Some(ObjectId(9)),
                dirty: false,
                below: false,
                touched: Touched::default(),
                body: Body::Branch {
                    keys: keys.freeze(),
                    children: (0..=seps.len())
                        .map(|i| Link::stored(ObjectId(i as u64 + 20), 1))
                        .collect(),
                },
            };
            bytes.clear();
            branch.encode(1, 1, &mut bytes);
            let decoded = Node::decode(ObjectId(9), 1, 1, &bytes);
            assert!(matches!(decoded, Err(Error::Corrupt(_))), "{seps:?}");
        }
    }
}
