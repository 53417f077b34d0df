//! The B+tree algorithms over byte keys: lookups and ordered cursors (shared, loading nodes
//! on first touch) and insert / remove (copy-on-write of the nodes a writer touches).
//!
//! Keys live in leaves; a branch's separator is the first key of the subtree on its right.
//! Nodes split when their encoding passes [`NODE_TARGET`] bytes and are merged with, or
//! refilled from, a sibling when they fall under [`NODE_MIN`]. A stored tree is input, so a
//! walk deeper than [`MAX_DEPTH`] is reported as corrupt, never followed.

use std::borrow::Cow;
use std::ops::Bound;
use std::sync::Arc;

use bob_store_core::ObjectId;

use crate::node::{
    Body, Entries, Key, KeyList, Keys, Link, MAX_INLINE_VALUE_LEN, NODE_MIN, NODE_TARGET, Node,
    Probe, Touched, Val, ValRef, ValView,
};
use crate::{Error, Result};

/// No valid tree is deeper (a branch has at least two children).
pub(crate) const MAX_DEPTH: usize = 64;

/// Loads the node a link names, as the link's checkpoint saw it.
pub(crate) trait Load {
    /// The node behind `link` (not loaded yet) of tree `tree`.
    fn load(&self, tree: u32, link: &Link) -> Result<Arc<Node>>;

    /// The bytes of the value object `r` names, as the checkpoint that wrote it left them
    /// (a later checkpoint may have freed the object).
    fn load_value(&self, r: &ValRef) -> Result<Vec<u8>>;
}

/// A value's bytes: borrowed from its leaf, or read from its object.
pub(crate) fn value<'l>(ld: &dyn Load, val: ValView<'l>) -> Result<Cow<'l, [u8]>> {
    match val {
        ValView::Inline(b) => Ok(Cow::Borrowed(b)),
        ValView::Pending(b) => Ok(Cow::Borrowed(b)),
        ValView::Stored(r) => ld.load_value(r).map(Cow::Owned),
    }
}

/// The node behind `link`, loading it on first use. Readers loading at once each read it;
/// the first to finish is kept. A use of a node already in memory marks it used (a load
/// does not: a leaf a scan reads once is the first to be unloaded, see [`Node::touched`]).
pub(crate) fn node<'l>(ld: &dyn Load, tree: u32, link: &'l Link) -> Result<&'l Node> {
    if let Some(node) = link.node.get() {
        node.touched.set();
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
) -> Result<Option<ValView<'l>>> {
    let probe = Probe::new(key);
    let mut link = root;
    for _ in 0..MAX_DEPTH {
        match &node(ld, tree, link)?.body {
            Body::Branch { keys, children } => {
                link = &children[keys.upper(&probe)];
            }
            Body::Leaf(entries) => {
                return Ok(entries.search(&probe).ok().map(|i| entries.val(i)));
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
    /// Value objects whose values left the tree.
    pub freed_values: &'a mut Vec<ValRef>,
    /// Nodes that became dirty (changed, or new): what the next checkpoint will write.
    pub dirtied: &'a mut u64,
    /// An insert or removal reads the value it replaces when that is kept in an object of
    /// its own, before it changes anything, into `old_bytes`.
    pub read_old: bool,
    /// The value the last insert or removal replaced, read from its object (`read_old`).
    pub old_bytes: Option<Vec<u8>>,
    /// The last insert or removal failed before it changed anything in the tree.
    pub untouched: bool,
}

impl Edit<'_> {
    /// The node behind `link`, loaded.
    fn load(&mut self, link: &mut Link) -> Result<()> {
        if link.node.get().is_none() {
            let loaded = self.ld.load(self.tree, link)?;
            let _ = link.node.set(loaded);
        }
        Ok(())
    }

    /// The node behind `link`, loaded and made private to this writer, marked dirty (its
    /// object's version saved first, for older snapshots).
    fn node_mut<'l>(&mut self, link: &'l mut Link) -> Result<&'l mut Node> {
        self.load(link)?;
        let arc = link.node.get_mut().expect("loaded just above");
        if !arc.dirty
            && let Some(id) = arc.id
        {
            // Unless copied on the way to a change below, the shared node is its object's.
            let saved = if arc.below { Arc::new(arc.stored_copy(None)) } else { Arc::clone(arc) };
            self.superseded.push((id, saved));
        }
        if !arc.dirty {
            *self.dirtied += 1;
        }
        let node = Arc::make_mut(arc);
        node.dirty = true;
        Ok(node)
    }

    /// The node behind `link`, loaded and made private to this writer on the way to a
    /// change below it: marked `below`, not dirty (its own bytes do not change).
    fn node_path<'l>(&mut self, link: &'l mut Link) -> Result<&'l mut Node> {
        self.load(link)?;
        let node = Arc::make_mut(link.node.get_mut().expect("loaded just above"));
        node.below = true;
        Ok(node)
    }

    /// Marks a node reached by [`node_path`](Self::node_path) dirty, before it changes.
    fn dirty(&mut self, node: &mut Node) {
        if !node.dirty {
            *self.dirtied += 1;
            if let Some(id) = node.id {
                self.superseded.push((id, Arc::new(node.stored_copy(None))));
            }
            node.dirty = true;
        }
    }

    fn is_leaf(&mut self, link: &mut Link) -> Result<bool> {
        self.load(link)?;
        Ok(matches!(link.node.get().expect("loaded").body, Body::Leaf { .. }))
    }

    fn free(&mut self, node: &Node) {
        if let Some(id) = node.id {
            self.freed.push(id);
        }
    }

    /// A value leaves the tree: its object, if it has one, is freed.
    fn free_value(&mut self, val: &Val) {
        if let Some(r) = val.stored() {
            self.freed_values.push(*r);
        }
    }

    /// Puts `key` → `val` in the tree under `root`; returns the value it replaced.
    pub(crate) fn insert(
        &mut self,
        root: &mut Link,
        key: &[u8],
        val: &[u8],
    ) -> Result<Option<Val>> {
        self.untouched = false;
        self.old_bytes = None;
        let pending;
        let val = if val.len() <= MAX_INLINE_VALUE_LEN {
            ValView::Inline(val)
        } else {
            // The next checkpoint writes it, as it writes a dirty node.
            *self.dirtied += val.len().div_ceil(NODE_TARGET) as u64;
            pending = val.into();
            ValView::Pending(&pending)
        };
        let (mut old, mut split) = (None, None);
        self.insert_at(root, key, val, 0, &mut old, &mut split)?;
        if let Some(old) = &old {
            self.free_value(old);
        }
        if let Some((sep, right)) = split {
            let seen = root.seen;
            let left = std::mem::replace(root, Link::loaded(Node::empty_leaf(), seen));
            *root = Link::loaded(
                Node {
                    id: None,
                    dirty: true,
                    below: true,
                    body: Body::Branch {
                        keys: {
                            let mut keys = Keys::default();
                            keys.push(sep);
                            keys
                        },
                        children: vec![left, right],
                    },
                    touched: Touched::default(),
                },
                seen,
            );
        }
        Ok(old)
    }

    /// Inserts under `link`: the replaced value goes to `old`, and if the node split, the
    /// separator and the new right node to `split`. (Out-parameters rather than a returned
    /// tuple: moving it up through each level's return cost about 5% of a sorted load.)
    fn insert_at(
        &mut self,
        link: &mut Link,
        key: &[u8],
        val: ValView<'_>,
        depth: usize,
        old: &mut Option<Val>,
        split_out: &mut Option<(Key, Link)>,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let probe = Probe::new(key);
        let seen = link.seen;
        // The change is at the node's end (a key past its last, or a split of its last
        // child): a split then keeps the left node full, as a sorted load would want.
        let mut at_end = false;
        let node = if self.is_leaf(link)? {
            if self.read_old {
                let leaf = link.node.get().expect("loaded");
                if let Body::Leaf(entries) = &leaf.body
                    && let Ok(i) = entries.search(&probe)
                    && let ValView::Stored(r) = entries.val(i)
                {
                    match self.ld.load_value(r) {
                        Ok(bytes) => self.old_bytes = Some(bytes),
                        Err(e) => {
                            self.untouched = true;
                            return Err(e);
                        }
                    }
                }
            }
            let node = self.node_mut(link)?;
            let Body::Leaf(entries) = &mut node.body else { unreachable!("a leaf") };
            match entries.search(&probe) {
                Ok(i) => *old = Some(entries.replace(i, val)),
                Err(i) => {
                    at_end = i == entries.len();
                    entries.insert(i, key, val);
                }
            }
            node
        } else {
            let node = self.node_path(link)?;
            let Body::Branch { keys, children } = &mut node.body else { unreachable!("a branch") };
            let i = keys.upper(&probe);
            let mut below = None;
            self.insert_at(&mut children[i], key, val, depth + 1, old, &mut below)?;
            if let Some((sep, right)) = below {
                self.dirty(node);
                let Body::Branch { keys, children } = &mut node.body else { unreachable!() };
                at_end = i + 1 == children.len();
                keys.insert(i, sep);
                children.insert(i + 1, right);
            }
            node
        };
        if !node.dirty || node.encoded_len() <= NODE_TARGET {
            return Ok(());
        }
        let (sep, right) = split(node, at_end);
        *self.dirtied += 1;
        *split_out = Some((sep, Link::loaded(right, seen)));
        Ok(())
    }

    /// Removes `key` from the tree under `root`; returns its value.
    pub(crate) fn remove(&mut self, root: &mut Link, key: &[u8]) -> Result<Option<Val>> {
        self.untouched = false;
        self.old_bytes = None;
        match get(self.ld, self.tree, root, key) {
            Err(e) => {
                self.untouched = true;
                return Err(e);
            }
            Ok(None) => return Ok(None), // Nothing changes: no node is copied or dirtied.
            Ok(Some(ValView::Stored(r))) if self.read_old => match self.ld.load_value(r) {
                Ok(bytes) => self.old_bytes = Some(bytes),
                Err(e) => {
                    self.untouched = true;
                    return Err(e);
                }
            },
            Ok(Some(_)) => {}
        }
        let old = self.remove_at(root, key, 0)?;
        let collapse = matches!(
            &root.node.get().expect("loaded by the removal").body,
            Body::Branch { keys, .. } if keys.is_empty()
        );
        if collapse {
            let node = self.node_mut(root)?;
            let Body::Branch { children, .. } = &mut node.body else { unreachable!("a branch") };
            let only = children.pop().expect("a branch has a child");
            let old_root = std::mem::replace(root, only);
            self.free(old_root.node.get().expect("loaded"));
        }
        if let Some(old) = &old {
            self.free_value(old);
        }
        Ok(old)
    }

    fn remove_at(&mut self, link: &mut Link, key: &[u8], depth: usize) -> Result<Option<Val>> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let probe = Probe::new(key);
        if self.is_leaf(link)? {
            let node = self.node_mut(link)?;
            let Body::Leaf(entries) = &mut node.body else { unreachable!("a leaf") };
            return Ok(match entries.search(&probe) {
                Ok(i) => Some(entries.remove(i)),
                Err(_) => None,
            });
        }
        let node = self.node_path(link)?;
        let Body::Branch { keys, children } = &mut node.body else { unreachable!("a branch") };
        let i = keys.upper(&probe);
        let old = self.remove_at(&mut children[i], key, depth + 1)?;
        if old.is_some() && self.needs_rebalance(children, i) {
            self.dirty(node);
            let Body::Branch { keys, children } = &mut node.body else { unreachable!() };
            self.rebalance(keys, children, i)?;
        }
        Ok(old)
    }

    /// Whether child `i` fell under the minimum and has a sibling to merge with.
    fn needs_rebalance(&self, children: &[Link], i: usize) -> bool {
        let child = children[i].node.get().expect("the removal loaded it");
        children.len() >= 2 && (child.encoded_len() < NODE_MIN || child.len() == 0)
    }

    /// Merges child `i` with a sibling, or refills it from one, if it is under the minimum.
    fn rebalance(&mut self, keys: &mut Keys, children: &mut Vec<Link>, i: usize) -> Result<()> {
        if !self.needs_rebalance(children, i) {
            return Ok(());
        }
        let l = if i + 1 < children.len() { i } else { i - 1 };
        let (left_half, right_half) = children.split_at_mut(l + 1);
        let left = self.node_mut(&mut left_half[l])?;
        let right = self.node_mut(&mut right_half[0])?;
        // Children may move between the two, with whatever changed below them.
        let below = left.below || right.below;
        left.below = below;
        right.below = below;
        if matches!(left.body, Body::Leaf(_)) != matches!(right.body, Body::Leaf(_)) {
            return Err(Error::Corrupt("sibling B-tree nodes at different depths".into()));
        }
        let sep_len = match left.body {
            Body::Branch { .. } => 10 + keys[l].len(),
            Body::Leaf(_) => 0,
        };
        if left.encoded_len() + right.encoded_len() + sep_len <= NODE_TARGET + 32 {
            let sep = keys.remove(l);
            match (&mut left.body, &mut right.body) {
                (Body::Leaf(left), Body::Leaf(right)) => left.append(right),
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
            (Body::Leaf(left), Body::Leaf(right)) => {
                left.append(right);
                let sizes: Vec<usize> =
                    left.iter().map(|(k, v)| 6 + k.len() + v.encoded_len()).collect();
                let m = split_point(&sizes, 1, sizes.len() - 1);
                *right = left.split_off(m);
                keys.set(l, right.key_owned(0));
            }
            (Body::Branch { keys: lk, children: lc }, Body::Branch { keys: rk, children: rc }) => {
                lk.push(keys.key(l));
                lk.append(rk);
                lc.append(rc);
                let sizes: Vec<usize> = lk.iter().map(|k| 10 + k.len()).collect();
                let m = split_point(&sizes, 1, sizes.len() - 2);
                *rk = lk.split_off(m + 1);
                keys.set(l, lk.pop().expect("m + 1 keys stay on the left"));
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

/// The index in `lo..=hi` where the running total of `sizes` first passes
/// [`BUILD_FILL`] less the header: the left node of an append split about 7/8 full.
fn fill_point(sizes: &[usize], lo: usize, hi: usize) -> usize {
    let mut total = 32;
    for (i, s) in sizes.iter().enumerate() {
        if total + s > BUILD_FILL {
            return i.clamp(lo, hi);
        }
        total += s;
    }
    hi
}

/// Splits an overfull node in two by bytes (at the end: the left about 7/8 full, for
/// appends); returns the separator and the right half.
fn split(node: &mut Node, at_end: bool) -> (Key, Node) {
    let body = match &mut node.body {
        Body::Leaf(entries) => {
            let sizes: Vec<usize> =
                entries.iter().map(|(k, v)| 6 + k.len() + v.encoded_len()).collect();
            let m = if at_end {
                fill_point(&sizes, 1, sizes.len() - 1)
            } else {
                split_point(&sizes, 1, sizes.len() - 1)
            };
            // Appends fill the right node next: room for as much as the left holds.
            let right = if at_end { entries.split_off_with_room(m) } else { entries.split_off(m) };
            Body::Leaf(right)
        }
        Body::Branch { keys, children } => {
            let sizes: Vec<usize> = keys.iter().map(|k| 10 + k.len()).collect();
            let m = if at_end {
                fill_point(&sizes, 1, sizes.len() - 2)
            } else {
                split_point(&sizes, 1, sizes.len() - 2)
            };
            let right_keys = keys.split_off(m + 1);
            let right_children = children.split_off(m + 1);
            let sep = keys.pop().expect("m + 1 keys on the left");
            let right = Node {
                id: None,
                dirty: true,
                below: true,
                body: Body::Branch { keys: right_keys, children: right_children },
                touched: Touched::default(),
            };
            return (sep, right);
        }
    };
    let Body::Leaf(entries) = &body else { unreachable!("built as a leaf") };
    let sep = entries.key_owned(0);
    (sep, Node { id: None, dirty: true, below: false, body, touched: Touched::default() })
}

/// A position in the tree: the path of nodes from the root and the index taken in each.
type Path<'l> = Vec<(&'l Node, usize)>;

/// An ordered walk over a range of entries, from either end. Each end is positioned when
/// first used, so a walk in one direction descends the tree once.
pub(crate) struct RawIter<'l> {
    ld: &'l dyn Load,
    tree: u32,
    root: &'l Link,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    front: Option<Path<'l>>,
    back: Option<Path<'l>>,
    done: bool,
}

fn key_at<'l>(path: &Path<'l>) -> Option<&'l [u8]> {
    let (leaf, i) = path.last()?;
    match &leaf.body {
        Body::Leaf(entries) => Some(entries.key(*i)),
        Body::Branch { .. } => None,
    }
}

fn entry_at<'l>(path: &Path<'l>) -> Option<(&'l [u8], ValView<'l>)> {
    let (leaf, i) = path.last()?;
    match &leaf.body {
        Body::Leaf(entries) => Some(entries.entry(*i)),
        Body::Branch { .. } => None,
    }
}

fn below_upper(key: &[u8], upper: &Bound<Vec<u8>>) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => key <= u.as_slice(),
        Bound::Excluded(u) => key < u.as_slice(),
    }
}

fn above_lower(key: &[u8], lower: &Bound<Vec<u8>>) -> bool {
    match lower {
        Bound::Unbounded => true,
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
    }
}

impl<'l> RawIter<'l> {
    /// The entries of the tree under `root` within the bounds.
    pub(crate) fn new(
        ld: &'l dyn Load,
        tree: u32,
        root: &'l Link,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Self {
        Self { ld, tree, root, lower, upper, front: None, back: None, done: false }
    }

    /// What loads its nodes and values.
    pub(crate) fn loader(&self) -> &'l dyn Load {
        self.ld
    }

    fn seek_front(&self) -> Result<Path<'l>> {
        let mut path = Vec::with_capacity(8);
        let lower = self.lower.as_ref().map(|k| Probe::new(k));
        let mut link = self.root;
        loop {
            if path.len() >= MAX_DEPTH {
                return Err(too_deep());
            }
            let n = node(self.ld, self.tree, link)?;
            match &n.body {
                Body::Branch { keys, children } => {
                    let i = match lower {
                        Bound::Unbounded => 0,
                        Bound::Included(p) | Bound::Excluded(p) => keys.upper(&p),
                    };
                    path.push((n, i));
                    link = &children[i];
                }
                Body::Leaf(entries) => {
                    let i = match lower {
                        Bound::Unbounded => 0,
                        Bound::Included(p) => entries.lower(&p),
                        Bound::Excluded(p) => entries.upper(&p),
                    };
                    if i == entries.len() {
                        self.next_leaf_front(&mut path)?;
                    } else {
                        path.push((n, i));
                    }
                    return Ok(path);
                }
            }
        }
    }

    fn seek_back(&self) -> Result<Path<'l>> {
        let mut path = Vec::with_capacity(8);
        let upper = self.upper.as_ref().map(|k| Probe::new(k));
        let mut link = self.root;
        loop {
            if path.len() >= MAX_DEPTH {
                return Err(too_deep());
            }
            let n = node(self.ld, self.tree, link)?;
            match &n.body {
                Body::Branch { keys, children } => {
                    let i = match upper {
                        Bound::Unbounded => keys.len(),
                        Bound::Included(p) => keys.upper(&p),
                        Bound::Excluded(p) => keys.lower(&p),
                    };
                    path.push((n, i));
                    link = &children[i];
                }
                Body::Leaf(entries) => {
                    let p = match upper {
                        Bound::Unbounded => entries.len(),
                        Bound::Included(p) => entries.upper(&p),
                        Bound::Excluded(p) => entries.lower(&p),
                    };
                    if p == 0 {
                        self.next_leaf_back(&mut path)?;
                    } else {
                        path.push((n, p - 1));
                    }
                    return Ok(path);
                }
            }
        }
    }

    /// Moves `path` (its leaf popped) to the first entry of the next leaf; empty at the end.
    fn next_leaf_front(&self, path: &mut Path<'l>) -> Result<()> {
        while let Some((n, i)) = path.pop() {
            let Body::Branch { children, .. } = &n.body else { continue };
            if i + 1 < children.len() {
                path.push((n, i + 1));
                let mut link = &children[i + 1];
                loop {
                    if path.len() >= MAX_DEPTH {
                        return Err(too_deep());
                    }
                    let c = node(self.ld, self.tree, link)?;
                    path.push((c, 0));
                    match &c.body {
                        Body::Branch { children, .. } => link = &children[0],
                        Body::Leaf(entries) if entries.is_empty() => break,
                        Body::Leaf(_) => return Ok(()),
                    }
                }
                path.pop(); // An empty leaf (a valid tree has none but the root).
            }
        }
        Ok(())
    }

    /// Moves `path` (its leaf popped) to the last entry of the previous leaf; empty at the
    /// start.
    fn next_leaf_back(&self, path: &mut Path<'l>) -> Result<()> {
        while let Some((n, i)) = path.pop() {
            let Body::Branch { children, .. } = &n.body else { continue };
            if i > 0 {
                path.push((n, i - 1));
                let mut link = &children[i - 1];
                loop {
                    if path.len() >= MAX_DEPTH {
                        return Err(too_deep());
                    }
                    let c = node(self.ld, self.tree, link)?;
                    match &c.body {
                        Body::Branch { children, .. } => {
                            path.push((c, children.len() - 1));
                            link = &children[children.len() - 1];
                        }
                        Body::Leaf(entries) if entries.is_empty() => break,
                        Body::Leaf(entries) => {
                            path.push((c, entries.len() - 1));
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: Error) -> Option<Result<(&'l [u8], ValView<'l>)>> {
        self.done = true;
        Some(Err(e))
    }

    /// The next entry from the front.
    pub(crate) fn next_entry(&mut self) -> Option<Result<(&'l [u8], ValView<'l>)>> {
        if self.done {
            return None;
        }
        if self.front.is_none() {
            match self.seek_front() {
                Ok(path) => self.front = Some(path),
                Err(e) => return self.fail(e),
            }
        }
        let front = self.front.as_ref().expect("positioned above");
        let Some(entry) = entry_at(front) else {
            self.done = true;
            return None;
        };
        if !below_upper(entry.0, &self.upper) {
            self.done = true;
            return None;
        }
        if let Some(back) = &self.back {
            match key_at(back) {
                Some(last) if entry.0 < last => {}
                Some(last) if entry.0 == last => {
                    self.done = true;
                    return Some(Ok(entry));
                }
                _ => {
                    self.done = true;
                    return None;
                }
            }
        }
        let mut front = self.front.take().expect("positioned above");
        let stepped = {
            let (leaf, i) = front.last_mut().expect("an entry");
            *i += 1;
            if *i < leaf.len() {
                Ok(())
            } else {
                front.pop();
                self.next_leaf_front(&mut front)
            }
        };
        self.front = Some(front);
        if let Err(e) = stepped {
            return self.fail(e);
        }
        Some(Ok(entry))
    }

    /// The next entry from the back.
    pub(crate) fn next_back_entry(&mut self) -> Option<Result<(&'l [u8], ValView<'l>)>> {
        if self.done {
            return None;
        }
        if self.back.is_none() {
            match self.seek_back() {
                Ok(path) => self.back = Some(path),
                Err(e) => return self.fail(e),
            }
        }
        let back = self.back.as_ref().expect("positioned above");
        let Some(entry) = entry_at(back) else {
            self.done = true;
            return None;
        };
        if !above_lower(entry.0, &self.lower) {
            self.done = true;
            return None;
        }
        if let Some(front) = &self.front {
            match key_at(front) {
                Some(first) if entry.0 > first => {}
                Some(first) if entry.0 == first => {
                    self.done = true;
                    return Some(Ok(entry));
                }
                _ => {
                    self.done = true;
                    return None;
                }
            }
        }
        let mut back = self.back.take().expect("positioned above");
        let stepped = {
            let (_, i) = back.last_mut().expect("an entry");
            if *i > 0 {
                *i -= 1;
                Ok(())
            } else {
                back.pop();
                self.next_leaf_back(&mut back)
            }
        };
        self.back = Some(back);
        if let Err(e) = stepped {
            return self.fail(e);
        }
        Some(Ok(entry))
    }
}

/// Fill of a node built by [`build`], in bytes: room is left for later inserts.
const BUILD_FILL: usize = NODE_TARGET * 7 / 8;

/// Builds a tree from `entries` in strictly increasing key order: leaves filled left to right
/// to [`BUILD_FILL`], then each level of branches over the one below. Every node is new
/// (dirty, no object yet). Returns the root and the number of entries; keys out of order
/// are [`Error::Unsorted`].
pub(crate) fn build(
    entries: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    seen: u64,
    dirtied: &mut u64,
) -> Result<(Link, u64)> {
    let mut sink = |body: Body| {
        *dirtied += 1;
        Ok(Link::loaded(
            Node { id: None, dirty: true, below: true, body, touched: Touched::default() },
            seen,
        ))
    };
    let mut builder = Builder::new(&mut sink);
    let mut pending = 0;
    for entry in entries {
        let (k, v) = entry?;
        let val = Val::new(&v);
        if let Val::Pending(b) = &val {
            pending += b.len().div_ceil(NODE_TARGET) as u64;
        }
        builder.push(&k, val.view())?;
    }
    let (root, count) = builder.finish()?;
    *dirtied += pending;
    Ok((root.expect("a built tree has a root"), count))
}

/// What a [`Builder`] does with each node it completes (children before their parent): a
/// link to it, in memory or written.
pub(crate) type Sink<'s> = dyn FnMut(Body) -> Result<Link> + 's;

/// Builds a tree from entries pushed in strictly increasing key order: leaves filled left to
/// right to [`BUILD_FILL`], each handed to the sink once full; then each level of branches
/// over the one below. Only the current leaf and one link per completed node are held.
pub(crate) struct Builder<'s, 'b> {
    sink: &'b mut Sink<'s>,
    /// The completed leaves: (link, first key).
    level: Vec<(Link, Key)>,
    entries: Entries,
    bytes: usize,
    count: u64,
    /// The last key pushed (when `count > 0`).
    last: Vec<u8>,
}

impl<'s, 'b> Builder<'s, 'b> {
    pub(crate) fn new(sink: &'b mut Sink<'s>) -> Self {
        Self {
            sink,
            level: Vec::new(),
            entries: Entries::default(),
            bytes: 32,
            count: 0,
            last: Vec::new(),
        }
    }

    /// The next entry; a key not after the last one pushed is [`Error::Unsorted`].
    pub(crate) fn push(&mut self, key: &[u8], val: ValView<'_>) -> Result<()> {
        if self.count > 0 && key <= self.last.as_slice() {
            return Err(Error::Unsorted);
        }
        let size = 6 + key.len() + val.encoded_len();
        if !self.entries.is_empty() && self.bytes + size > BUILD_FILL {
            let first = self.entries.key_owned(0);
            // The next leaf holds about as many entries: room for them from the start (grown
            // one doubling at a time, it would be reallocated and copied about ten times).
            let room = Entries::with_room(self.entries.len() + 2, BUILD_FILL);
            let entries = std::mem::replace(&mut self.entries, room);
            self.level.push(((self.sink)(Body::Leaf(entries))?, first));
            self.bytes = 32;
        }
        self.last.clear();
        self.last.extend_from_slice(key);
        self.entries.push(key, val);
        self.bytes += size;
        self.count += 1;
        Ok(())
    }

    /// The root (`None`: no entry was pushed and `empty_root` is false) and the number of
    /// entries.
    fn finish_with(mut self, empty_root: bool) -> Result<(Option<Link>, u64)> {
        if !self.entries.is_empty() || (self.level.is_empty() && empty_root) {
            let first =
                if self.entries.is_empty() { Key::default() } else { self.entries.key_owned(0) };
            let body = Body::Leaf(std::mem::take(&mut self.entries));
            self.level.push(((self.sink)(body)?, first));
        }
        let mut level = std::mem::take(&mut self.level);
        let mut depth = 0;
        while level.len() > 1 {
            depth += 1;
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            let mut upper: Vec<(Link, Key)> = Vec::new();
            let mut group: Vec<(Link, Key)> = Vec::new();
            let mut bytes = 40;
            let total = level.len();
            for (i, (link, first)) in level.into_iter().enumerate() {
                let size = 10 + first.len();
                // Close a group when full, but never leave one child for the last group.
                if group.len() >= 2 && bytes + size > BUILD_FILL && total - i >= 2 {
                    upper.push(branch(std::mem::take(&mut group), self.sink)?);
                    bytes = 40;
                }
                bytes += size;
                group.push((link, first));
            }
            upper.push(branch(group, self.sink)?);
            level = upper;
        }
        Ok((level.pop().map(|(root, _)| root), self.count))
    }

    /// The root (an empty leaf when nothing was pushed) and the number of entries.
    pub(crate) fn finish(self) -> Result<(Option<Link>, u64)> {
        self.finish_with(true)
    }

    /// The root (`None` when nothing was pushed: an empty tree needs no node) and the number
    /// of entries.
    pub(crate) fn finish_rootless(self) -> Result<(Option<Link>, u64)> {
        self.finish_with(false)
    }
}

fn branch(group: Vec<(Link, Key)>, sink: &mut Sink<'_>) -> Result<(Link, Key)> {
    let first = group[0].1.clone();
    let mut keys = KeyList::with_capacity(group.len() - 1);
    let mut children = Vec::with_capacity(group.len());
    for (i, (link, key)) in group.into_iter().enumerate() {
        if i > 0 {
            keys.push(key);
        }
        children.push(link);
    }
    Ok((sink(Body::Branch { keys: keys.freeze(), children })?, first))
}

/// Calls `f` with every entry of the tree under `root`, in key order, reading the nodes not
/// in memory without keeping them (memory stays bounded by the tree's depth).
pub(crate) fn for_each_entry(
    ld: &dyn Load,
    tree: u32,
    root: &Link,
    f: &mut dyn FnMut(&[u8], ValView<'_>) -> Result<()>,
) -> Result<()> {
    fn walk(
        ld: &dyn Load,
        tree: u32,
        link: &Link,
        depth: usize,
        f: &mut dyn FnMut(&[u8], ValView<'_>) -> Result<()>,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let read;
        let node: &Node = match link.node.get() {
            Some(node) => node,
            None => {
                read = ld.load(tree, link)?;
                &read
            }
        };
        match &node.body {
            Body::Leaf(entries) => {
                for (k, v) in entries.iter() {
                    f(k, v)?;
                }
            }
            Body::Branch { children, .. } => {
                for child in children {
                    walk(ld, tree, child, depth + 1, f)?;
                }
            }
        }
        Ok(())
    }
    walk(ld, tree, root, 0, f)
}
