//! B-tree nodes: the in-memory form and the on-disk layout (`docs/format.md`, "B-tree node").
//!
//! A node is one store object. In memory it is shared behind an [`Arc`]: snapshots hold the
//! nodes they see, and a writer copies a node the first time it changes it
//! ([`Arc::make_mut`]), so a reader never sees a half-changed node. A child that is not in
//! memory is a [`Link`] with its object id and the checkpoint it was seen at.

use std::sync::{Arc, OnceLock};

use bob_io_helpers::checksum;
use bob_store_core::ObjectId;

use crate::{Error, Result};

/// The node layout version this build writes and reads.
pub(crate) const NODE_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"BOBB";
const HEADER: usize = 24;
const TRAILER: usize = 8;
/// A node is split once its encoding passes this many bytes (one 4 KiB page).
pub(crate) const NODE_TARGET: usize = 4096;
/// A node smaller than this after a removal is merged with, or refilled from, a sibling.
pub(crate) const NODE_MIN: usize = NODE_TARGET / 4;
/// The longest key a tree takes, in encoded bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest value a tree takes, in encoded bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// No valid node is longer: at most one entry past the target.
const MAX_NODE_BYTES: usize = 2 * NODE_TARGET + MAX_KEY_LEN + MAX_VALUE_LEN;
const LEAF: u8 = 0;
const BRANCH: u8 = 1;

/// A value's bytes, shared: copying a node (the first change a writer makes to it) copies
/// the pointers, not the bytes.
pub(crate) type Bytes = Arc<[u8]>;

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

/// A node's keys, in order: their 8-byte prefixes in one array (what a search reads, 8 bytes
/// a probe, a cache line per 8 keys) and their bytes beside it (read on a prefix tie).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    prefixes: Vec<u64>,
    bytes: Vec<Arc<[u8]>>,
    /// The keys' lengths summed (a node's encoded length without a walk over its keys).
    total: usize,
}

impl Keys {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { prefixes: Vec::with_capacity(n), bytes: Vec::with_capacity(n), total: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Key `i`, shared.
    pub(crate) fn key(&self, i: usize) -> Key {
        Key { prefix: self.prefixes[i], bytes: Arc::clone(&self.bytes[i]) }
    }

    pub(crate) fn set(&mut self, i: usize, key: Key) {
        self.total = self.total - self.bytes[i].len() + key.bytes.len();
        self.prefixes[i] = key.prefix;
        self.bytes[i] = key.bytes;
    }

    pub(crate) fn push(&mut self, key: Key) {
        self.total += key.bytes.len();
        self.prefixes.push(key.prefix);
        self.bytes.push(key.bytes);
    }

    pub(crate) fn pop(&mut self) -> Option<Key> {
        let prefix = self.prefixes.pop()?;
        let bytes = self.bytes.pop().expect("parallel arrays");
        self.total -= bytes.len();
        Some(Key { prefix, bytes })
    }

    pub(crate) fn insert(&mut self, i: usize, key: Key) {
        self.total += key.bytes.len();
        self.prefixes.insert(i, key.prefix);
        self.bytes.insert(i, key.bytes);
    }

    pub(crate) fn remove(&mut self, i: usize) -> Key {
        let key = Key { prefix: self.prefixes.remove(i), bytes: self.bytes.remove(i) };
        self.total -= key.bytes.len();
        key
    }

    pub(crate) fn split_off(&mut self, at: usize) -> Keys {
        let bytes = self.bytes.split_off(at);
        let total = bytes.iter().map(|b| b.len()).sum();
        self.total -= total;
        Keys { prefixes: self.prefixes.split_off(at), bytes, total }
    }

    pub(crate) fn append(&mut self, other: &mut Keys) {
        self.total += std::mem::take(&mut other.total);
        self.prefixes.append(&mut other.prefixes);
        self.bytes.append(&mut other.bytes);
    }

    /// The keys' lengths summed.
    pub(crate) fn total_len(&self) -> usize {
        self.total
    }

    /// The keys' bytes, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.iter().map(|b| &**b)
    }

    /// How key `i` compares with the probe.
    #[inline]
    fn cmp_at(&self, i: usize, probe: &Probe<'_>) -> std::cmp::Ordering {
        self.prefixes[i].cmp(&probe.prefix).then_with(|| self.bytes[i][..].cmp(probe.bytes))
    }

    /// The first index whose key is not less than (`strict`: greater than) the probe.
    #[inline]
    fn bound(&self, probe: &Probe<'_>, strict: bool) -> usize {
        // Binary search on the prefix array; bytes only where the prefix ties.
        let (mut lo, mut hi) = (0, self.prefixes.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let below = match self.cmp_at(mid, probe) {
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

    /// Where the probe is (`Ok`) or would go (`Err`).
    #[inline]
    pub(crate) fn search(&self, probe: &Probe<'_>) -> Result<usize, usize> {
        let i = self.lower(probe);
        if i < self.len() && self.cmp_at(i, probe).is_eq() { Ok(i) } else { Err(i) }
    }
}

impl std::ops::Index<usize> for Keys {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        &self.bytes[i]
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
}

/// A node's entries.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    /// Keys in order, each with its value.
    Leaf {
        /// The keys, strictly increasing.
        keys: Keys,
        /// `vals[i]` belongs to `keys[i]`.
        vals: Vec<Bytes>,
    },
    /// Separator keys and one child more than keys: `children[i]` holds the keys `k` with
    /// `keys[i - 1] <= k < keys[i]`.
    Branch {
        /// The separators, strictly increasing.
        keys: Keys,
        /// The subtrees.
        children: Vec<Link>,
    },
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
    pub node: OnceLock<Arc<Node>>,
}

impl Link {
    /// A link to a node in memory.
    pub(crate) fn loaded(node: Node, seen: u64) -> Self {
        let id = node.id;
        Self { id, seen, node: OnceLock::from(Arc::new(node)) }
    }

    /// A link to a node that is only on disk.
    pub(crate) fn stored(id: ObjectId, seen: u64) -> Self {
        Self { id: Some(id), seen, node: OnceLock::new() }
    }
}

impl Node {
    /// An empty leaf that no checkpoint has written.
    pub(crate) fn empty_leaf() -> Self {
        Self {
            id: None,
            dirty: true,
            below: false,
            body: Body::Leaf { keys: Keys::default(), vals: Vec::new() },
        }
    }

    /// This node with its children as links to their objects, unloaded: `seen` is the
    /// checkpoint the links belong to (`None`: each keeps its own). Saved for older snapshots
    /// (`None`: only for a node that is not dirty, whose bytes and child ids are its
    /// object's), and handed to a reader whose link saw checkpoint `seen` (`Some`: never the
    /// saved node's own links, which may carry a later checkpoint).
    pub(crate) fn stored_copy(&self, seen: Option<u64>) -> Self {
        let body = match &self.body {
            Body::Leaf { .. } => self.body.clone(),
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
        Self { id: self.id, dirty: false, below: false, body }
    }

    /// The number of keys.
    pub(crate) fn len(&self) -> usize {
        match &self.body {
            Body::Leaf { keys, .. } | Body::Branch { keys, .. } => keys.len(),
        }
    }

    /// Its encoded length in bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        match &self.body {
            Body::Leaf { keys, vals } => {
                HEADER
                    + TRAILER
                    + 6 * keys.len()
                    + keys.total_len()
                    + vals.iter().map(|v| v.len()).sum::<usize>()
            }
            Body::Branch { keys, .. } => HEADER + TRAILER + 8 + 10 * keys.len() + keys.total_len(),
        }
    }

    /// The layout, with `written` as the checkpoint that writes it. Every child must have an id.
    pub(crate) fn encode(&self, tree: u32, written: u64, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(NODE_VERSION);
        let count = u16::try_from(self.len()).expect("a node holds fewer than 65,536 keys");
        match &self.body {
            Body::Leaf { .. } => out.push(LEAF),
            Body::Branch { .. } => out.push(BRANCH),
        }
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&tree.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&written.to_le_bytes());
        match &self.body {
            Body::Leaf { keys, vals } => {
                for (k, v) in keys.iter().zip(vals) {
                    out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(k);
                    out.extend_from_slice(v);
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
        if body[4] != NODE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "B-tree node",
                found: u32::from(body[4]),
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
        let mut r = Cursor { bytes: body, at: HEADER };
        let mut keys = Keys::with_capacity(count);
        let mut vals = Vec::new();
        let mut children = Vec::new();
        match kind {
            LEAF => {
                vals.reserve(count);
                for _ in 0..count {
                    let k = usize::from(r.u16()?);
                    let v = r.u32()? as usize;
                    if k > MAX_KEY_LEN || v > MAX_VALUE_LEN {
                        return Err(corrupt(format!("an entry of {k} + {v} bytes is too long")));
                    }
                    keys.push(Key::from(r.take(k)?));
                    vals.push(r.take(v)?.into());
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
                children.reserve(count + 1);
                children.push(child(&mut r)?);
                for _ in 0..count {
                    let k = usize::from(r.u16()?);
                    if k > MAX_KEY_LEN {
                        return Err(corrupt(format!("a key of {k} bytes is too long")));
                    }
                    keys.push(Key::from(r.take(k)?));
                    children.push(child(&mut r)?);
                }
                if count == 0 {
                    return Err(corrupt("a branch without keys".into()));
                }
            }
            other => return Err(corrupt(format!("unknown node kind {other}"))),
        }
        if r.at != body.len() {
            return Err(corrupt(format!("{} bytes past the last entry", body.len() - r.at)));
        }
        if keys.iter().zip(keys.iter().skip(1)).any(|(a, b)| a >= b) {
            return Err(corrupt("keys out of order".into()));
        }
        let body =
            if kind == LEAF { Body::Leaf { keys, vals } } else { Body::Branch { keys, children } };
        Ok((Self { id: Some(id), dirty: false, below: false, body }, written))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(pairs: &[(&[u8], &[u8])]) -> Node {
        Node {
            id: Some(ObjectId(9)),
            dirty: false,
            below: false,
            body: Body::Leaf {
                keys: {
                    let mut keys = Keys::default();
                    pairs.iter().for_each(|p| keys.push(Key::from(p.0)));
                    keys
                },
                vals: pairs.iter().map(|p| p.1.into()).collect(),
            },
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
        let Body::Leaf { keys, vals } = back.body else { panic!("a leaf") };
        assert_eq!(keys[1].as_ref(), b"bc");
        assert_eq!(vals[2].as_ref(), b"xyz");
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
    }
}
