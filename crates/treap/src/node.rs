//! The treap node's on-disk layout (`docs/format.md`, "Treap node").
//!
//! ```text
//! offset  width  field
//! 0       4      magic        b"BOBN"
//! 4       1      version      1
//! 5       1      flags        bit 0: has left child, bit 1: has right child; others zero
//! 6       2      reserved     zero
//! 8       8      priority     u64
//! 16      8      count        u64: nodes in this subtree
//! 24      8      left_id      u64 object id (0 when absent)
//! 32      8      left_count   u64
//! 40      8      right_id     u64 object id (0 when absent)
//! 48      8      right_count  u64
//! 56      4      key_len      u32
//! 60      4      value_len    u32
//! 64      k+v    key, value
//! 64+k+v  8      checksum     xxh3-64 of everything before it
//! ```
//! The store checksums the object too; the node's own checksum also catches a node id
//! that points at some other object.

use bob_io_helpers::checksum;
use bob_store_core::ObjectId;

use crate::{Error, Result};

const MAGIC: [u8; 4] = *b"BOBN";
const VERSION: u8 = 1;
const HEADER: usize = 64;
const TRAILER: usize = 8;
/// The largest key or value a node holds.
pub const MAX_FIELD_BYTES: usize = 1 << 24;

/// A child as a node on disk names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildRef {
    pub(crate) id: ObjectId,
    pub(crate) count: u64,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawNode {
    pub(crate) priority: u64,
    pub(crate) count: u64,
    pub(crate) left: Option<ChildRef>,
    pub(crate) right: Option<ChildRef>,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn get(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Appends a node's encoding to `out` (see the layout above).
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    priority: u64,
    count: u64,
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
    put(out, priority);
    put(out, count);
    for child in children {
        put(out, child.map_or(0, |c| c.id.0));
        put(out, child.map_or(0, |c| c.count));
    }
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
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
        encode_into(
            &mut out,
            self.priority,
            self.count,
            [self.left, self.right],
            &self.key,
            &self.value,
        )?;
        Ok(out)
    }

    pub(crate) fn decode(id: ObjectId, bytes: &[u8]) -> Result<Self> {
        let corrupt = |why: &str| Error::Corrupt(format!("treap node {id}: {why}"));
        if bytes.len() < HEADER + TRAILER || bytes[..4] != MAGIC {
            return Err(corrupt("bad magic or length"));
        }
        let body = bytes.len() - TRAILER;
        if checksum(&bytes[..body]) != get(bytes, body) {
            return Err(corrupt("checksum mismatch"));
        }
        if bytes[4] != VERSION || bytes[5] & !3 != 0 || bytes[6..8] != [0, 0] {
            return Err(corrupt("unknown version or flags"));
        }
        let key_len = u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]) as usize;
        let value_len = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]) as usize;
        if HEADER + key_len + value_len != body {
            return Err(corrupt("field lengths do not fill the node"));
        }
        let child = |present: bool, at: usize| {
            present.then(|| ChildRef { id: ObjectId(get(bytes, at)), count: get(bytes, at + 8) })
        };
        let node = RawNode {
            priority: get(bytes, 8),
            count: get(bytes, 16),
            left: child(bytes[5] & 1 != 0, 24),
            right: child(bytes[5] & 2 != 0, 40),
            key: bytes[HEADER..HEADER + key_len].to_vec(),
            value: bytes[HEADER + key_len..body].to_vec(),
        };
        let children = node.left.map_or(0, |c| c.count) + node.right.map_or(0, |c| c.count);
        if node.count != children.saturating_add(1) {
            return Err(corrupt("subtree count does not add up"));
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
            priority: 42,
            count: 4,
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
}
