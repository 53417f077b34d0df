//! The B+tree algorithms over byte keys: lookups and ordered cursors (shared, loading nodes
//! on first touch) and insert / remove (copy-on-write of the nodes a writer touches).
//!
//! Keys live in leaves; a branch's separator is the first key of the subtree on its right.
//! Nodes split when their encoding passes [`NODE_TARGET`] bytes and are merged with, or
//! refilled from, a sibling when they fall under [`NODE_MIN`]. A stored tree is input, so a
//! walk deeper than [`MAX_DEPTH`] is reported as corrupt, never followed.

use std::ops::Bound;
use std::sync::Arc;

use bob_store_core::ObjectId;

use crate::node::{Body, Bytes, Link, NODE_MIN, NODE_TARGET, Node};
use crate::{Error, Result};

/// No valid tree is deeper (a branch has at least two children).
pub(crate) const MAX_DEPTH: usize = 64;

/// Loads the node a link names, as the link's checkpoint saw it.
pub(crate) trait Load {
    /// The node behind `link` (not loaded yet) of tree `tree`.
    fn load(&self, tree: u32, link: &Link) -> Result<Arc<Node>>;
}

/// The node behind `link`, loading it on first use. Readers loading at once each read it;
/// the first to finish is kept.
pub(crate) fn node<'l>(ld: &dyn Load, tree: u32, link: &'l Link) -> Result<&'l Node> {
    if let Some(node) = link.node.get() {
        return Ok(node);
    }
    let loaded = ld.load(tree, link)?;
    let _ = link.node.set(loaded);
    Ok(link.node.get().expect("set just above"))
}

fn too_deep() -> Error {
    Error::Corrupt(format!("a B-tree path is deeper than {MAX_DEPTH} nodes"))
}

/// The value under `key`.
pub(crate) fn get<'l>(
    ld: &dyn Load,
    tree: u32,
    root: &'l Link,
    key: &[u8],
) -> Result<Option<&'l [u8]>> {
    let mut link = root;
    for _ in 0..MAX_DEPTH {
        match &node(ld, tree, link)?.body {
            Body::Branch { keys, children } => {
                link = &children[keys.partition_point(|k| k.as_ref() <= key)];
            }
            Body::Leaf { keys, vals } => {
                return Ok(keys.binary_search_by(|k| k.as_ref().cmp(key)).ok().map(|i| &*vals[i]));
            }
        }
    }
    Err(too_deep())
}

/// What a writer changes besides the nodes: the state a checkpoint needs.
pub(crate) struct Edit<'a> {
    /// Loads nodes.
    pub ld: &'a dyn Load,
    /// The tree's id.
    pub tree: u32,
    /// Nodes as their objects hold them, saved the first time a writer changes them (a
    /// reader of an older snapshot may still need them once a checkpoint rewrites them).
    pub superseded: &'a mut Vec<(ObjectId, Arc<Node>)>,
    /// Objects of nodes that left the tree.
    pub freed: &'a mut Vec<ObjectId>,
}

impl Edit<'_> {
    /// The node behind `link`, loaded and made private to this writer, marked dirty.
    fn node_mut<'l>(&mut self, link: &'l mut Link) -> Result<&'l mut Node> {
        if link.node.get().is_none() {
            let loaded = self.ld.load(self.tree, link)?;
            let _ = link.node.set(loaded);
        }
        let arc = link.node.get_mut().expect("loaded just above");
        if !arc.dirty
            && let Some(id) = arc.id
        {
            self.superseded.push((id, Arc::clone(arc)));
        }
        let node = Arc::make_mut(arc);
        node.dirty = true;
        Ok(node)
    }

    fn free(&mut self, node: &Node) {
        if let Some(id) = node.id {
            self.freed.push(id);
        }
    }

    /// Puts `key` → `val` in the tree under `root`; returns the value it replaced.
    pub(crate) fn insert(
        &mut self,
        root: &mut Link,
        key: &[u8],
        val: &[u8],
    ) -> Result<Option<Bytes>> {
        let (old, split) = self.insert_at(root, key, val, 0)?;
        if let Some((sep, right)) = split {
            let seen = root.seen;
            let left = std::mem::replace(root, Link::loaded(Node::empty_leaf(), seen));
            *root = Link::loaded(
                Node {
                    id: None,
                    dirty: true,
                    body: Body::Branch { keys: vec![sep], children: vec![left, right] },
                },
                seen,
            );
        }
        Ok(old)
    }

    #[allow(clippy::type_complexity)]
    fn insert_at(
        &mut self,
        link: &mut Link,
        key: &[u8],
        val: &[u8],
        depth: usize,
    ) -> Result<(Option<Bytes>, Option<(Bytes, Link)>)> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let seen = link.seen;
        let node = self.node_mut(link)?;
        let old = match &mut node.body {
            Body::Leaf { keys, vals } => match keys.binary_search_by(|k| k.as_ref().cmp(key)) {
                Ok(i) => Some(std::mem::replace(&mut vals[i], val.into())),
                Err(i) => {
                    keys.insert(i, key.into());
                    vals.insert(i, val.into());
                    None
                }
            },
            Body::Branch { keys, children } => {
                let i = keys.partition_point(|k| k.as_ref() <= key);
                let (old, split) = self.insert_at(&mut children[i], key, val, depth + 1)?;
                if let Some((sep, right)) = split {
                    keys.insert(i, sep);
                    children.insert(i + 1, right);
                }
                old
            }
        };
        if node.encoded_len() <= NODE_TARGET {
            return Ok((old, None));
        }
        let (sep, right) = split(node);
        Ok((old, Some((sep, Link::loaded(right, seen)))))
    }

    /// Removes `key` from the tree under `root`; returns its value.
    pub(crate) fn remove(&mut self, root: &mut Link, key: &[u8]) -> Result<Option<Bytes>> {
        if get(self.ld, self.tree, root, key)?.is_none() {
            return Ok(None); // Nothing changes: no node is copied or dirtied.
        }
        let old = self.remove_at(root, key, 0)?;
        let node = self.node_mut(root)?;
        if let Body::Branch { keys, children } = &mut node.body
            && keys.is_empty()
        {
            let only = children.pop().expect("a branch has a child");
            let old_root = std::mem::replace(root, only);
            self.free(old_root.node.get().expect("loaded"));
        }
        Ok(old)
    }

    fn remove_at(&mut self, link: &mut Link, key: &[u8], depth: usize) -> Result<Option<Bytes>> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let node = self.node_mut(link)?;
        match &mut node.body {
            Body::Leaf { keys, vals } => match keys.binary_search_by(|k| k.as_ref().cmp(key)) {
                Ok(i) => {
                    keys.remove(i);
                    Ok(Some(vals.remove(i)))
                }
                Err(_) => Ok(None),
            },
            Body::Branch { keys, children } => {
                let i = keys.partition_point(|k| k.as_ref() <= key);
                let old = self.remove_at(&mut children[i], key, depth + 1)?;
                if old.is_some() {
                    self.rebalance(keys, children, i)?;
                }
                Ok(old)
            }
        }
    }

    /// Merges child `i` with a sibling, or refills it from one, if it is under the minimum.
    fn rebalance(
        &mut self,
        keys: &mut Vec<Bytes>,
        children: &mut Vec<Link>,
        i: usize,
    ) -> Result<()> {
        let child = children[i].node.get().expect("the removal loaded it");
        if child.encoded_len() >= NODE_MIN && child.len() > 0 {
            return Ok(());
        }
        let l = if i + 1 < children.len() { i } else { i - 1 };
        let (left_half, right_half) = children.split_at_mut(l + 1);
        let left = self.node_mut(&mut left_half[l])?;
        let right = self.node_mut(&mut right_half[0])?;
        let sep_len = match left.body {
            Body::Branch { .. } => 10 + keys[l].len(),
            Body::Leaf { .. } => 0,
        };
        if left.encoded_len() + right.encoded_len() + sep_len <= NODE_TARGET + 32 {
            let sep = keys.remove(l);
            match (&mut left.body, &mut right.body) {
                (Body::Leaf { keys: lk, vals: lv }, Body::Leaf { keys: rk, vals: rv }) => {
                    lk.append(rk);
                    lv.append(rv);
                }
                (
                    Body::Branch { keys: lk, children: lc },
                    Body::Branch { keys: rk, children: rc },
                ) => {
                    lk.push(sep);
                    lk.append(rk);
                    lc.append(rc);
                }
                _ => return Err(Error::Corrupt("sibling B-tree nodes at different depths".into())),
            }
            let gone = children.remove(l + 1);
            self.free(gone.node.get().expect("loaded"));
            return Ok(());
        }
        // Too much for one node: share the entries out again.
        match (&mut left.body, &mut right.body) {
            (Body::Leaf { keys: lk, vals: lv }, Body::Leaf { keys: rk, vals: rv }) => {
                lk.append(rk);
                lv.append(rv);
                let sizes: Vec<usize> =
                    lk.iter().zip(&*lv).map(|(k, v)| 6 + k.len() + v.len()).collect();
                let m = split_point(&sizes, 1, sizes.len() - 1);
                *rk = lk.split_off(m);
                *rv = lv.split_off(m);
                keys[l] = rk[0].clone();
            }
            (Body::Branch { keys: lk, children: lc }, Body::Branch { keys: rk, children: rc }) => {
                lk.push(std::mem::take(&mut keys[l]));
                lk.append(rk);
                lc.append(rc);
                let sizes: Vec<usize> = lk.iter().map(|k| 10 + k.len()).collect();
                let m = split_point(&sizes, 1, sizes.len() - 2);
                *rk = lk.split_off(m + 1);
                keys[l] = lk.pop().expect("m + 1 keys stay on the left");
                *rc = lc.split_off(m + 1);
            }
            _ => return Err(Error::Corrupt("sibling B-tree nodes at different depths".into())),
        }
        Ok(())
    }
}

/// The index in `lo..=hi` where the running total of `sizes` first reaches half the sum.
fn split_point(sizes: &[usize], lo: usize, hi: usize) -> usize {
    let total: usize = sizes.iter().sum();
    let mut prefix = 0;
    for (i, s) in sizes.iter().enumerate() {
        if prefix * 2 >= total {
            return i.clamp(lo, hi);
        }
        prefix += s;
    }
    hi
}

/// Splits an overfull node in two by bytes; returns the separator and the right half.
fn split(node: &mut Node) -> (Bytes, Node) {
    let body = match &mut node.body {
        Body::Leaf { keys, vals } => {
            let sizes: Vec<usize> =
                keys.iter().zip(&*vals).map(|(k, v)| 6 + k.len() + v.len()).collect();
            let m = split_point(&sizes, 1, sizes.len() - 1);
            Body::Leaf { keys: keys.split_off(m), vals: vals.split_off(m) }
        }
        Body::Branch { keys, children } => {
            let sizes: Vec<usize> = keys.iter().map(|k| 10 + k.len()).collect();
            let m = split_point(&sizes, 1, sizes.len() - 2);
            let right_keys = keys.split_off(m + 1);
            let right_children = children.split_off(m + 1);
            let sep = keys.pop().expect("m + 1 keys on the left");
            let right = Node {
                id: None,
                dirty: true,
                body: Body::Branch { keys: right_keys, children: right_children },
            };
            return (sep, right);
        }
    };
    let Body::Leaf { keys, .. } = &body else { unreachable!("built as a leaf") };
    let sep = keys[0].clone();
    (sep, Node { id: None, dirty: true, body })
}

/// A position in the tree: the path of nodes from the root and the index taken in each.
type Path<'l> = Vec<(&'l Node, usize)>;

/// An ordered walk over a range of entries, from either end.
pub(crate) struct RawIter<'l> {
    ld: &'l dyn Load,
    tree: u32,
    front: Path<'l>,
    back: Path<'l>,
    done: bool,
}

impl<'l> RawIter<'l> {
    /// The entries of the tree under `root` within the bounds.
    pub(crate) fn new(
        ld: &'l dyn Load,
        tree: u32,
        root: &'l Link,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<Self> {
        let mut it = Self { ld, tree, front: Vec::new(), back: Vec::new(), done: false };
        it.seek_front(root, lower)?;
        it.seek_back(root, upper)?;
        it.done = it.front.is_empty() || it.back.is_empty();
        if !it.done && Self::key(&it.front) > Self::key(&it.back) {
            it.done = true;
        }
        Ok(it)
    }

    fn key(path: &Path<'l>) -> &'l [u8] {
        let (leaf, i) = path.last().expect("a positioned path");
        match &leaf.body {
            Body::Leaf { keys, .. } => &keys[*i],
            Body::Branch { .. } => unreachable!("paths end in leaves"),
        }
    }

    fn entry(path: &Path<'l>) -> (&'l [u8], &'l [u8]) {
        let (leaf, i) = path.last().expect("a positioned path");
        match &leaf.body {
            Body::Leaf { keys, vals } => (&keys[*i], &vals[*i]),
            Body::Branch { .. } => unreachable!("paths end in leaves"),
        }
    }

    fn seek_front(&mut self, root: &'l Link, lower: Bound<&[u8]>) -> Result<()> {
        let mut link = root;
        loop {
            if self.front.len() >= MAX_DEPTH {
                return Err(too_deep());
            }
            let n = node(self.ld, self.tree, link)?;
            match &n.body {
                Body::Branch { keys, children } => {
                    let i = match lower {
                        Bound::Unbounded => 0,
                        Bound::Included(k) | Bound::Excluded(k) => {
                            keys.partition_point(|s| s.as_ref() <= k)
                        }
                    };
                    self.front.push((n, i));
                    link = &children[i];
                }
                Body::Leaf { keys, .. } => {
                    let i = match lower {
                        Bound::Unbounded => 0,
                        Bound::Included(k) => keys.partition_point(|x| x.as_ref() < k),
                        Bound::Excluded(k) => keys.partition_point(|x| x.as_ref() <= k),
                    };
                    self.front.push((n, i));
                    if i == keys.len() {
                        self.front.pop();
                        return self.next_leaf_front();
                    }
                    return Ok(());
                }
            }
        }
    }

    fn seek_back(&mut self, root: &'l Link, upper: Bound<&[u8]>) -> Result<()> {
        let mut link = root;
        loop {
            if self.back.len() >= MAX_DEPTH {
                return Err(too_deep());
            }
            let n = node(self.ld, self.tree, link)?;
            match &n.body {
                Body::Branch { keys, children } => {
                    let i = match upper {
                        Bound::Unbounded => keys.len(),
                        Bound::Included(k) => keys.partition_point(|s| s.as_ref() <= k),
                        Bound::Excluded(k) => keys.partition_point(|s| s.as_ref() < k),
                    };
                    self.back.push((n, i));
                    link = &children[i];
                }
                Body::Leaf { keys, .. } => {
                    let p = match upper {
                        Bound::Unbounded => keys.len(),
                        Bound::Included(k) => keys.partition_point(|x| x.as_ref() <= k),
                        Bound::Excluded(k) => keys.partition_point(|x| x.as_ref() < k),
                    };
                    if p == 0 {
                        return self.next_leaf_back();
                    }
                    self.back.push((n, p - 1));
                    return Ok(());
                }
            }
        }
    }

    /// Moves the front path (its leaf popped) to the first entry of the next leaf.
    fn next_leaf_front(&mut self) -> Result<()> {
        while let Some((n, i)) = self.front.pop() {
            let Body::Branch { children, .. } = &n.body else { continue };
            if i + 1 < children.len() {
                self.front.push((n, i + 1));
                let mut link = &children[i + 1];
                loop {
                    if self.front.len() >= MAX_DEPTH {
                        return Err(too_deep());
                    }
                    let c = node(self.ld, self.tree, link)?;
                    self.front.push((c, 0));
                    match &c.body {
                        Body::Branch { children, .. } => link = &children[0],
                        Body::Leaf { keys, .. } if keys.is_empty() => break,
                        Body::Leaf { .. } => return Ok(()),
                    }
                }
                self.front.pop(); // An empty leaf (a valid tree has none but the root).
            }
        }
        Ok(())
    }

    /// Moves the back path (its leaf popped) to the last entry of the previous leaf.
    fn next_leaf_back(&mut self) -> Result<()> {
        while let Some((n, i)) = self.back.pop() {
            let Body::Branch { children, .. } = &n.body else { continue };
            if i > 0 {
                self.back.push((n, i - 1));
                let mut link = &children[i - 1];
                loop {
                    if self.back.len() >= MAX_DEPTH {
                        return Err(too_deep());
                    }
                    let c = node(self.ld, self.tree, link)?;
                    match &c.body {
                        Body::Branch { children, .. } => {
                            self.back.push((c, children.len() - 1));
                            link = &children[children.len() - 1];
                        }
                        Body::Leaf { keys, .. } if keys.is_empty() => break,
                        Body::Leaf { keys, .. } => {
                            self.back.push((c, keys.len() - 1));
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn step_front(&mut self) -> Result<()> {
        let (leaf, i) = self.front.last_mut().expect("a positioned path");
        *i += 1;
        if *i < leaf.len() {
            return Ok(());
        }
        self.front.pop();
        self.next_leaf_front()
    }

    fn step_back(&mut self) -> Result<()> {
        let (_, i) = self.back.last_mut().expect("a positioned path");
        if *i > 0 {
            *i -= 1;
            return Ok(());
        }
        self.back.pop();
        self.next_leaf_back()
    }

    /// The next entry from the front.
    pub(crate) fn next_entry(&mut self) -> Option<Result<(&'l [u8], &'l [u8])>> {
        if self.done {
            return None;
        }
        let entry = Self::entry(&self.front);
        if entry.0 == Self::key(&self.back) {
            self.done = true;
            return Some(Ok(entry));
        }
        if let Err(e) = self.step_front() {
            self.done = true;
            return Some(Err(e));
        }
        if self.front.is_empty() {
            self.done = true;
        }
        Some(Ok(entry))
    }

    /// The next entry from the back.
    pub(crate) fn next_back_entry(&mut self) -> Option<Result<(&'l [u8], &'l [u8])>> {
        if self.done {
            return None;
        }
        let entry = Self::entry(&self.back);
        if entry.0 == Self::key(&self.front) {
            self.done = true;
            return Some(Ok(entry));
        }
        if let Err(e) = self.step_back() {
            self.done = true;
            return Some(Err(e));
        }
        if self.back.is_empty() {
            self.done = true;
        }
        Some(Ok(entry))
    }
}
