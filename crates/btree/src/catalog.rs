//! The catalog: the named trees of a database and the checkpoint they were written at, kept
//! in the store's prime object (`docs/format.md`, "B-tree catalog").

use std::collections::BTreeMap;

use bob_io_helpers::checksum;
use bob_store_core::ObjectId;

use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"BOBC";
/// The catalog layout version this build writes (it reads 1 to 3: version 2 adds the value
/// objects waiting to be freed, version 3 the named treaps).
pub(crate) const CATALOG_VERSION: u8 = 3;
/// The longest tree name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// One tree as a checkpoint left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredTree {
    /// Its id, carried by each of its nodes.
    pub id: u32,
    /// Its root node's object (`None`: the tree is empty and has no node yet).
    pub root: Option<ObjectId>,
    /// Its number of entries.
    pub len: u64,
}

/// The catalog as a checkpoint wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Catalog {
    /// The checkpoint's sequence number (0: none yet); every node carries the one that wrote it.
    pub epoch: u64,
    /// The id the next new tree gets.
    pub next_tree: u32,
    /// The database keeps a write-ahead log (it must be opened with it).
    pub logged: bool,
    /// The log's id, in each of its segments' headers.
    pub log_id: u64,
    /// The last log record this checkpoint includes (0: none).
    pub wal_lsn: u64,
    /// The trees by name.
    pub trees: BTreeMap<String, StoredTree>,
    /// Value objects no tree holds any more, not deleted yet (a reader of an older snapshot
    /// could still read them when they left), with the checkpoint that dropped them: the
    /// first checkpoint after the next open deletes them.
    pub deferred: Vec<(u64, ObjectId)>,
    /// Treaps (bob-treap) kept by name: each one's root node (`None`: saved empty).
    pub treaps: BTreeMap<String, Option<ObjectId>>,
    /// The store holds objects that are not the database's (it was handed out to other
    /// users, or held objects when the database was made in it): never compacted by copying
    /// the trees into a new file. Once set, it stays.
    pub shared: bool,
}

impl Catalog {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.trees.len() * 32);
        out.extend_from_slice(MAGIC);
        out.push(CATALOG_VERSION);
        out.push(u8::from(self.logged));
        out.push(u8::from(self.shared));
        out.push(0);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.log_id.to_le_bytes());
        out.extend_from_slice(&self.wal_lsn.to_le_bytes());
        out.extend_from_slice(&self.next_tree.to_le_bytes());
        out.extend_from_slice(&(self.trees.len() as u32).to_le_bytes());
        for (name, tree) in &self.trees {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&tree.id.to_le_bytes());
            out.extend_from_slice(&tree.root.map_or(0, |r| r.0).to_le_bytes());
            out.extend_from_slice(&tree.len.to_le_bytes());
        }
        out.extend_from_slice(&(self.deferred.len() as u32).to_le_bytes());
        for (epoch, id) in &self.deferred {
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&id.0.to_le_bytes());
        }
        out.extend_from_slice(&(self.treaps.len() as u32).to_le_bytes());
        for (name, root) in &self.treaps {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&root.map_or(0, |r| r.0).to_le_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 48 {
            return Err(if bytes.is_empty() {
                Error::NotADatabase
            } else {
                corrupt("shorter than its header")
            });
        }
        if &bytes[..4] != MAGIC {
            return Err(Error::NotADatabase);
        }
        let version = bytes[4];
        if !(1..=CATALOG_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                what: "B-tree catalog",
                found: u32::from(bytes[4]),
                read: u32::from(CATALOG_VERSION),
            });
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if checksum(body).to_le_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let flags_allowed = if version >= 3 { 1 } else { 0 };
        if body[5] > 1 || body[6] > flags_allowed || body[7] != 0 {
            return Err(corrupt("reserved bytes are not zero"));
        }
        let logged = body[5] == 1;
        // Before version 3 a store could be handed out with no trace in the catalog: such a
        // store may hold other objects, so it is taken as shared.
        let shared = version < 3 || body[6] == 1;
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let epoch = u64_at(8);
        let log_id = u64_at(16);
        let wal_lsn = u64_at(24);
        let next_tree = u32_at(32);
        let count = u32_at(36);
        let mut at = 40;
        let mut trees = BTreeMap::new();
        for _ in 0..count {
            let name = named(body, &mut at, 20, "tree")?;
            let (id, root, len) = (u32_at(at), u64_at(at + 4), u64_at(at + 12));
            at += 20;
            if id >= next_tree {
                return Err(corrupt("a tree id at or past the next id"));
            }
            let root = (root != 0).then_some(ObjectId(root));
            if trees.insert(name, StoredTree { id, root, len }).is_some() {
                return Err(corrupt("a tree name twice"));
            }
        }
        let mut deferred = Vec::new();
        if version >= 2 {
            let count = counted(body, &mut at, 16, "deferred")?;
            for _ in 0..count {
                let (dropped, id) = (u64_at(at), u64_at(at + 8));
                if id == 0 || dropped > epoch {
                    return Err(corrupt("a deferred object past the catalog's epoch, or 0"));
                }
                deferred.push((dropped, ObjectId(id)));
                at += 16;
            }
        }
        let mut treaps = BTreeMap::new();
        if version >= 3 {
            let count = counted(body, &mut at, 9, "treaps")?;
            for _ in 0..count {
                let name = named(body, &mut at, 8, "treap")?;
                let root = u64_at(at);
                at += 8;
                if treaps.last_key_value().is_some_and(|(last, _)| *last >= name) {
                    return Err(corrupt("treap names out of order, or twice"));
                }
                if treaps.insert(name, (root != 0).then_some(ObjectId(root))).is_some() {
                    return Err(corrupt("a treap name twice"));
                }
            }
        }
        if at != body.len() {
            return Err(corrupt("bytes past the last tree"));
        }
        // A deferred object is deleted by the next checkpoint: never a root, never twice.
        let mut named: Vec<u64> = deferred.iter().map(|d| d.1.0).collect();
        named.extend(trees.values().filter_map(|t| t.root).map(|r| r.0));
        named.extend(treaps.values().flatten().map(|r| r.0));
        named.sort_unstable();
        if named.windows(2).any(|w| w[0] == w[1]) {
            return Err(corrupt("a deferred object twice, or a tree's root"));
        }
        let mut ids: Vec<u32> = trees.values().map(|t| t.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(corrupt("two trees with one id"));
        }
        Ok(Self { epoch, next_tree, logged, log_id, wal_lsn, trees, deferred, treaps, shared })
    }
}

fn corrupt(why: &str) -> Error {
    Error::Corrupt(format!("B-tree catalog: {why}"))
}

/// A count (u32) at `*at`, moved past; bounded by the entries of at least `least` bytes each
/// that the rest of `body` could hold.
fn counted(body: &[u8], at: &mut usize, least: usize, what: &str) -> Result<usize> {
    let bytes =
        body.get(*at..*at + 4).ok_or_else(|| corrupt(&format!("ends before its {what}")))?;
    let count = u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize;
    *at += 4;
    if count > (body.len() - *at) / least {
        return Err(corrupt(&format!("ends in its {what}")));
    }
    Ok(count)
}

/// A name (length u8, UTF-8) at `*at` followed by `rest` bytes of its entry, all inside
/// `body`; `*at` moves past the name.
fn named(body: &[u8], at: &mut usize, rest: usize, what: &str) -> Result<String> {
    let ends = || corrupt(&format!("ends in a {what}"));
    let len = usize::from(*body.get(*at).ok_or_else(ends)?);
    if *at + 1 + len + rest > body.len() {
        return Err(ends());
    }
    let name = std::str::from_utf8(&body[*at + 1..*at + 1 + len])
        .map_err(|_| corrupt(&format!("a {what} name is not UTF-8")))?
        .to_owned();
    *at += 1 + len;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_round_trips_and_damage_is_refused() {
        let mut cat = Catalog {
            epoch: 12,
            next_tree: 3,
            logged: true,
            log_id: 0xABCD,
            wal_lsn: 77,
            trees: BTreeMap::new(),
            deferred: vec![(11, ObjectId(40)), (12, ObjectId(41))],
            treaps: BTreeMap::new(),
            shared: true,
        };
        cat.trees.insert("users".into(), StoredTree { id: 0, root: Some(ObjectId(7)), len: 99 });
        cat.treaps.insert("names".into(), Some(ObjectId(9)));
        cat.treaps.insert("empty".into(), None);
        cat.trees.insert("é".into(), StoredTree { id: 2, root: None, len: 0 });
        let bytes = cat.encode();
        assert_eq!(Catalog::decode(&bytes).unwrap(), cat);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Catalog::decode(&bad).is_err(), "flip at {i}");
        }
        for len in 0..bytes.len() {
            assert!(Catalog::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        assert!(matches!(Catalog::decode(&[]), Err(Error::NotADatabase)));
        let twice = Catalog { deferred: vec![(1, ObjectId(40)), (2, ObjectId(40))], ..cat.clone() };
        assert!(Catalog::decode(&twice.encode()).is_err());
        let root = Catalog { deferred: vec![(1, ObjectId(7))], ..cat.clone() };
        assert!(Catalog::decode(&root.encode()).is_err());
        let mut treap_root = cat.clone();
        treap_root.treaps.insert("n2".into(), Some(ObjectId(7)));
        assert!(Catalog::decode(&treap_root.encode()).is_err(), "a treap's root is a tree's");

        // Version 2: no treaps, no flags (and taken as shared).
        let v2 = Catalog { treaps: BTreeMap::new(), shared: true, ..cat.clone() };
        let mut bytes = Catalog { shared: false, ..v2.clone() }.encode();
        bytes.truncate(bytes.len() - 12); // the checksum and the treap count
        bytes[4] = 2;
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(Catalog::decode(&bytes).unwrap(), v2);
        // Version 1: no deferred list either.
        let v1 = Catalog { deferred: Vec::new(), ..v2.clone() };
        let mut bytes = Catalog { shared: false, ..v1.clone() }.encode();
        bytes.truncate(bytes.len() - 16); // the checksum and the two counts
        bytes[4] = 1;
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(Catalog::decode(&bytes).unwrap(), v1);
        bytes[4] = 4;
        assert!(matches!(Catalog::decode(&bytes), Err(Error::UnsupportedVersion { .. })));
        // A version 2 catalog with the shared byte set is damage.
        let mut bytes = Catalog { shared: false, ..v2.clone() }.encode();
        bytes.truncate(bytes.len() - 12);
        bytes[4] = 2;
        bytes[6] = 1;
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        assert!(Catalog::decode(&bytes).is_err());
    }
}
