//! The treap node's on-disk layout (`docs/format.md`, "Treap node").
//!
//! ```text
//! offset  width  field
//! 0       4      magic        b"BOBN"
//! 4       1      version      2
//! 5       1      flags        bit 0: has left child, bit 1: has right child; others zero
//! 6       2      reserved     zero
//! 8       8      priority     u64: xxh3-64 of the key's encoding, seeded with `seed`
//! 16      8      seed         u64: the tree's priority seed, the same in all its nodes
//! 24      8      count        u64: nodes in this subtree
//! 32      8      left_id      u64 object id (0 when absent)
//! 40      8      left_count   u64
//! 48      8      right_id     u64 object id (0 when absent)
//! 56      8      right_count  u64
//! 64      4      key_len      u32
//! 68      4      value_len    u32
//! 72      k+v    key, value
//! 72+k+v  8      checksum     xxh3-64 of everything before it
//! ```
//! The store checksums the object too; the node's own checksum also catches a node id
//! that points at some other object.

use bob_io_helpers::checksum;
use bob_store_core::ObjectId;

use crate::{Error, Result};

const MAGIC: [u8; 4] = *b"BOBN";
/// The node format this build writes and reads. Version 1 had no seed: its priorities were
/// the unseeded hash of the key, so a key set chosen for it could make any tree a chain.
const VERSION: u8 = 2;
const VERSION_AT: usize = MAGIC.len();
const FLAGS_AT: usize = VERSION_AT + 1;
const RESERVED_AT: usize = FLAGS_AT + 1;
const PRIORITY_AT: usize = RESERVED_AT + 2;
const SEED_AT: usize = PRIORITY_AT + 8;
const COUNT_AT: usize = SEED_AT + 8;
const LEFT_AT: usize = COUNT_AT + 8;
const RIGHT_AT: usize = LEFT_AT + 16;
const KEY_LEN_AT: usize = RIGHT_AT + 16;
const VALUE_LEN_AT: usize = KEY_LEN_AT + 4;
const HEADER: usize = VALUE_LEN_AT + 4;
const TRAILER: usize = 8;
/// The largest key or value a node holds.
pub const MAX_FIELD_BYTES: usize = 1 << 24;

/// A child as a node on disk names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildRef {
    pub(crate) id: ObjectId,
    pub(crate) count: u64,
}

/// What a node's header holds besides its children and lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeHead {
    pub(crate) priority: u64,
    /// The tree's priority seed.
    pub(crate) seed: u64,
    /// Nodes in this subtree.
    pub(crate) count: u64,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawNode {
    pub(crate) head: NodeHead,
    pub(crate) left: Option<ChildRef>,
    pub(crate) right: Option<ChildRef>,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// The u64 at `at`; callers check `bytes` holds the whole header first.
fn get(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn get_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// Appends a node's encoding to `out` (see the layout above).
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    head: NodeHead,
    children: [Option<ChildRef>; 2],
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    if key.len() > MAX_FIELD_BYTES || value.len() > MAX_FIELD_BYTES {
        return Err(Error::TooLarge { len: key.len().max(value.len()), max: MAX_FIELD_BYTES });
    }
    let start = out.len();
    out.reserve(RawNode::encoded_len(key.len(), value.len()));
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(u8::from(children[0].is_some()) | (u8::from(children[1].is_some()) << 1));
    out.extend_from_slice(&[0, 0]);
    put(out, head.priority);
    put(out, head.seed);
    put(out, head.count);
    for child in children {
        put(out, child.map_or(0, |c| c.id.0));
        put(out, child.map_or(0, |c| c.count));
    }
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    debug_assert_eq!(out.len() - start, HEADER + key.len() + value.len());
    let sum = checksum(&out[start..]);
    put(out, sum);
    Ok(())
}

impl RawNode {
    /// Bytes this node encodes to (child ids do not change it: they are fixed-width).
    pub(crate) fn encoded_len(key_len: usize, value_len: usize) -> usize {
        HEADER + key_len + value_len + TRAILER
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.key.len(), self.value.len()));
        encode_into(&mut out, self.head, [self.left, self.right], &self.key, &self.value)?;
        Ok(out)
    }

    pub(crate) fn decode(id: ObjectId, bytes: &[u8]) -> Result<Self> {
        let corrupt = |why: String| Error::Corrupt(format!("treap node {id}: {why}"));
        if bytes.len() < HEADER + TRAILER || bytes[..VERSION_AT] != MAGIC {
            return Err(corrupt(format!(
                "{} bytes without the node magic, or shorter than the {}-byte minimum",
                bytes.len(),
                HEADER + TRAILER
            )));
        }
        let body = bytes.len() - TRAILER;
        if checksum(&bytes[..body]) != get(bytes, body) {
            return Err(corrupt("checksum mismatch".into()));
        }
        if bytes[VERSION_AT] != VERSION {
            return Err(Error::UnsupportedVersion { id, found: bytes[VERSION_AT], read: VERSION });
        }
        let flags = bytes[FLAGS_AT];
        if flags & !3 != 0 || bytes[RESERVED_AT..PRIORITY_AT] != [0, 0] {
            return Err(corrupt(format!("unknown flags {flags:#04x} or reserved bytes set")));
        }
        let key_len = get_u32(bytes, KEY_LEN_AT);
        let value_len = get_u32(bytes, VALUE_LEN_AT);
        if HEADER + key_len + value_len != body {
            return Err(corrupt(format!(
                "a {key_len}-byte key and a {value_len}-byte value do not fill its {body} bytes"
            )));
        }
        let child = |present: bool, at: usize| {
            present.then(|| ChildRef { id: ObjectId(get(bytes, at)), count: get(bytes, at + 8) })
        };
        let node = RawNode {
            head: NodeHead {
                priority: get(bytes, PRIORITY_AT),
                seed: get(bytes, SEED_AT),
                count: get(bytes, COUNT_AT),
            },
            left: child(flags & 1 != 0, LEFT_AT),
            right: child(flags & 2 != 0, RIGHT_AT),
            key: bytes[HEADER..HEADER + key_len].to_vec(),
            value: bytes[HEADER + key_len..body].to_vec(),
        };
        // Counts come from the file: an overflow is corruption, not a wrap or a panic.
        let children =
            node.left.map_or(0, |c| c.count).checked_add(node.right.map_or(0, |c| c.count));
        if children.and_then(|c| c.checked_add(1)) != Some(node.head.count) {
            return Err(corrupt(format!(
                "it counts {} nodes, but its children {} and {} plus itself do not add up to it",
                node.head.count,
                node.left.map_or(0, |c| c.count),
                node.right.map_or(0, |c| c.count)
            )));
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_reject_any_flip() {
        let node = RawNode {
            head: NodeHead { priority: 42, seed: 0x5eed, count: 4 },
            left: Some(ChildRef { id: ObjectId(7), count: 2 }),
            right: Some(ChildRef { id: ObjectId(9), count: 1 }),
            key: b"key".to_vec(),
            value: b"value".to_vec(),
        };
        let bytes = node.encode().unwrap();
        assert_eq!(RawNode::decode(ObjectId(1), &bytes).unwrap(), node);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(RawNode::decode(ObjectId(1), &bad).is_err(), "flip at {at}");
        }
        assert!(RawNode::decode(ObjectId(1), &bytes[..bytes.len() - 1]).is_err());
    }

    /// `bytes` with `edit` applied and the checksum made good again.
    fn resealed(bytes: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut out = bytes.to_vec();
        edit(&mut out);
        let body = out.len() - TRAILER;
        let sum = checksum(&out[..body]);
        out[body..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    #[test]
    fn a_version_1_node_is_refused_by_name() {
        let node = RawNode {
            head: NodeHead { priority: 1, seed: 2, count: 1 },
            left: None,
            right: None,
            key: vec![1],
            value: vec![],
        };
        let v1 = resealed(&node.encode().unwrap(), |b| b[VERSION_AT] = 1);
        let err = RawNode::decode(ObjectId(5), &v1).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { found: 1, read: 2, .. }), "{err}");
    }

    #[test]
    fn counts_that_overflow_are_corrupt_not_a_panic() {
        let node = RawNode {
            head: NodeHead { priority: 1, seed: 2, count: 0 },
            left: Some(ChildRef { id: ObjectId(7), count: u64::MAX }),
            right: Some(ChildRef { id: ObjectId(9), count: 1 }),
            key: vec![1],
            value: vec![],
        };
        let bytes = node.encode().unwrap();
        assert!(matches!(RawNode::decode(ObjectId(5), &bytes), Err(Error::Corrupt(_))));
        let only_left = resealed(&bytes, |b| b[FLAGS_AT] = 1);
        assert!(matches!(RawNode::decode(ObjectId(5), &only_left), Err(Error::Corrupt(_))));
    }
}
