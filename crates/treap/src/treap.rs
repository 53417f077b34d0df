//! `PersistentTreap<K, V>`: the treap, its lazy loading and its persistence.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::{Bound, RangeBounds};

use bob_store_core::{ObjectId, Storer};

use crate::codec::{TreapKey, TreapValue};
use crate::node::{ChildRef, NodeHead, RawNode};
use crate::{Error, Result};

mod persist;

pub use persist::BatchReport;

/// Where stored nodes are read from: any store, or nowhere for a treap that lives only in
/// memory (see [`Treap`]).
pub(crate) trait NodeSource {
    /// The bytes of object `id`.
    fn read_node_bytes(&self, id: ObjectId) -> Result<Vec<u8>>;
}

impl<S: Storer> NodeSource for S {
    fn read_node_bytes(&self, id: ObjectId) -> Result<Vec<u8>> {
        Ok(self.read_bytes_from_obj(id)?)
    }
}

/// The source of an in-memory treap: it never has stored nodes to read.
struct Memory;

impl NodeSource for Memory {
    fn read_node_bytes(&self, id: ObjectId) -> Result<Vec<u8>> {
        Err(Error::Invariant(format!("an in-memory treap has no stored node {id}")))
    }
}

/// How a parent (or the root) reaches a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Empty,
    /// In memory, at this arena index.
    Mem(usize),
    /// Not loaded yet: the object holding it, and its subtree's size.
    Stored(ChildRef),
}

#[derive(Debug, Clone)]
struct Node<K, V> {
    key: K,
    value: V,
    priority: u64,
    count: u64,
    left: Link,
    right: Link,
    /// The object holding this node's last persisted version.
    stored: Option<ObjectId>,
    /// Changed since it was last persisted (or never persisted).
    dirty: bool,
    /// The operation that last touched it (the treap's `tick` then): what `flush` unloads
    /// first is least recently used. A node is touched only through its parent, so a parent
    /// is never older than its children.
    used: u64,
}

/// The priority of a key in a tree with priority seed `seed`: the seeded xxh3 of the key's
/// encoding. A key set has one shape per seed whatever the order of inserts, and a tree
/// reloads and re-persists identically; with the seed drawn at random per tree, no choice of
/// keys can make the shape a chain (as the unseeded hash of version 1 could).
fn priority_of<K: TreapKey>(key: &K, seed: u64) -> u64 {
    let mut bytes = Vec::new();
    key.encode(&mut bytes);
    xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, seed)
}

/// A fresh priority seed: std's randomly keyed SipHash, so no dependency on a random-number
/// crate (each `RandomState` is keyed differently).
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(0x6274_7265_6170_u64)
}

/// Whether `key` lies before the start of `bounds`.
fn below_start<K: Ord, R: RangeBounds<K>>(bounds: &R, key: &K) -> bool {
    match bounds.start_bound() {
        Bound::Included(s) => key < s,
        Bound::Excluded(s) => key <= s,
        Bound::Unbounded => false,
    }
}

/// Whether `key` lies past the end of `bounds`.
fn past_end<K: Ord, R: RangeBounds<K>>(bounds: &R, key: &K) -> bool {
    match bounds.end_bound() {
        Bound::Included(e) => key > e,
        Bound::Excluded(e) => key >= e,
        Bound::Unbounded => false,
    }
}

/// An in-order iterator over a treap; see [`PersistentTreap::iter_from`].
pub struct Iter<'a, K, V, S> {
    treap: &'a mut PersistentTreap<K, V>,
    store: &'a S,
    next_from: Bound<K>,
    budget: Option<usize>,
    done: bool,
}

impl<K: TreapKey, V: TreapValue, S: Storer> Iterator for Iter<'_, K, V, S> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let found = match &self.next_from {
            Bound::Unbounded => self.treap.successor(self.store, None),
            Bound::Excluded(last) => self.treap.successor(self.store, Some(last)),
            Bound::Included(start) => match self.treap.get(self.store, start) {
                Ok(Some(value)) => Ok(Some((start.clone(), value))),
                Ok(None) => self.treap.successor(self.store, Some(start)),
                Err(e) => Err(e),
            },
        };
        if let Some(budget) = self.budget {
            self.treap.trim(budget);
        }
        match found {
            Ok(Some((key, value))) => {
                self.next_from = Bound::Excluded(key.clone());
                Some(Ok((key, value)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A treap whose nodes are objects in a store; see the crate docs.
///
/// Every call that may visit stored nodes takes the store: nodes load on first touch.
#[derive(Debug, Clone)]
pub struct PersistentTreap<K, V = ()> {
    nodes: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    root: Link,
    /// The priority seed: stored in every node, drawn at random for a new tree.
    seed: u64,
    /// Objects of nodes deleted or changed since the last persist: the last persisted tree
    /// still holds them. A persist moves them to `doomed`.
    replaced: Vec<ObjectId>,
    /// Objects the latest persisted tree no longer holds: deleted only once its root is
    /// published (`delete_replaced`), so that no commit, whoever makes it, makes their
    /// deletes durable while the published root still needs them.
    doomed: Vec<ObjectId>,
    /// Counts operations, for `Node::used`.
    tick: u64,
    /// The memory budget kept after every operation, if set.
    budget: Option<usize>,
    /// When a flush could not reach the budget (changed nodes cannot be unloaded), the
    /// next is tried only above this many nodes, so a run of inserts does not walk the
    /// tree on every operation. Reset by persisting.
    retry_above: usize,
}

impl<K: TreapKey, V: TreapValue> Default for PersistentTreap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: TreapKey, V: TreapValue> PersistentTreap<K, V> {
    /// An empty treap with a random priority seed.
    pub fn new() -> Self {
        Self::with_seed(random_seed())
    }

    /// An empty treap whose priorities use `seed`: the same keys then make the same shape on
    /// every run, for tests and reproducible benchmarks. A seed others can learn lets them
    /// choose keys that make the tree a chain (correct, but slow); prefer [`new`](Self::new).
    pub fn with_seed(seed: u64) -> Self {
        Self {
            seed,
            nodes: Vec::new(),
            free: Vec::new(),
            root: Link::Empty,
            replaced: Vec::new(),
            doomed: Vec::new(),
            tick: 0,
            budget: None,
            retry_above: 0,
        }
    }

    /// Opens the treap whose root node is object `root`, reading only that node.
    pub fn load<S: Storer>(store: &S, root: ObjectId) -> Result<Self> {
        let raw = RawNode::decode(root, &store.read_node_bytes(root)?)?;
        let mut treap = Self::with_seed(raw.head.seed);
        let node = treap.node_from_raw(root, raw)?;
        treap.root = Link::Mem(treap.add(node));
        Ok(treap)
    }

    /// The priority seed, stored in every node (see [`with_seed`](Self::with_seed)).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A node in memory from its stored form, as object `id`.
    fn node_from_raw(&self, id: ObjectId, raw: RawNode) -> Result<Node<K, V>> {
        let NodeHead { priority, seed, count } = raw.head;
        if seed != self.seed {
            return Err(Error::Corrupt(format!(
                "treap node {id} has priority seed {seed:#x}, its tree {:#x}",
                self.seed
            )));
        }
        Ok(Node {
            key: K::decode(&raw.key)?,
            value: V::decode(&raw.value)?,
            priority,
            count,
            left: raw.left.map_or(Link::Empty, Link::Stored),
            right: raw.right.map_or(Link::Empty, Link::Stored),
            stored: Some(id),
            dirty: false,
            used: 0,
        })
    }

    /// Keys in the treap.
    pub fn len(&self) -> u64 {
        self.count_of(self.root)
    }

    /// Whether the treap is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes held in memory now.
    pub fn nodes_in_memory(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn node(&self, index: usize) -> &Node<K, V> {
        self.nodes[index].as_ref().expect("a linked arena slot holds a node")
    }

    fn node_mut(&mut self, index: usize) -> &mut Node<K, V> {
        self.nodes[index].as_mut().expect("a linked arena slot holds a node")
    }

    fn count_of(&self, link: Link) -> u64 {
        match link {
            Link::Empty => 0,
            Link::Mem(index) => self.node(index).count,
            Link::Stored(child) => child.count,
        }
    }

    fn add(&mut self, node: Node<K, V>) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.nodes[index] = Some(node);
                index
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    fn read_node<S: NodeSource>(&self, store: &S, id: ObjectId) -> Result<RawNode> {
        RawNode::decode(id, &store.read_node_bytes(id)?)
    }

    /// The arena index of `link`'s node, loading it if needed. A node loaded must not
    /// outrank its parent, whose priority is `bound` (`u64::MAX` for the root): the heap
    /// order is what bounds the depth, so a file that breaks it is corrupt.
    fn resolve<S: NodeSource>(
        &mut self,
        store: &S,
        link: Link,
        bound: u64,
    ) -> Result<Option<usize>> {
        match link {
            Link::Empty => Ok(None),
            Link::Mem(index) => {
                let tick = self.tick;
                self.node_mut(index).used = tick;
                Ok(Some(index))
            }
            Link::Stored(child) => {
                let raw = self.read_node(store, child.id)?;
                if raw.head.count != child.count {
                    return Err(Error::Corrupt(format!(
                        "treap node {} holds {} keys, its parent says {}",
                        child.id, raw.head.count, child.count
                    )));
                }
                if raw.head.priority > bound {
                    return Err(Error::Corrupt(format!(
                        "treap node {} has priority {:#x}, above its parent's {bound:#x}",
                        child.id, raw.head.priority
                    )));
                }
                let mut node = self.node_from_raw(child.id, raw)?;
                node.used = self.tick;
                Ok(Some(self.add(node)))
            }
        }
    }

    /// The root's node, loaded, with the root link updated.
    fn root_index<S: NodeSource>(&mut self, store: &S) -> Result<Option<usize>> {
        let index = self.resolve(store, self.root, u64::MAX)?;
        if let Some(index) = index {
            self.root = Link::Mem(index);
        }
        Ok(index)
    }

    /// A child of node `index` (`left` or right), loaded, with the parent's link updated.
    fn child<S: NodeSource>(
        &mut self,
        store: &S,
        index: usize,
        left: bool,
    ) -> Result<Option<usize>> {
        let node = self.node(index);
        let (link, bound) = (if left { node.left } else { node.right }, node.priority);
        let child = self.resolve(store, link, bound)?;
        if let Some(child) = child {
            let node = self.node_mut(index);
            if left { node.left = Link::Mem(child) } else { node.right = Link::Mem(child) }
        }
        Ok(child)
    }

    fn refresh(&mut self, index: usize) {
        let (left, right) = (self.node(index).left, self.node(index).right);
        // Saturating: a crafted file may claim any counts below a node not yet loaded
        // (`check` finds them); a panic or a wrap here would be worse.
        let count = self.count_of(left).saturating_add(self.count_of(right)).saturating_add(1);
        let node = self.node_mut(index);
        node.count = count;
        node.dirty = true;
    }

    fn rotate_right(&mut self, index: usize) -> usize {
        let Link::Mem(left) = self.node(index).left else { return index };
        let moved = self.node(left).right;
        self.node_mut(index).left = moved;
        self.node_mut(left).right = Link::Mem(index);
        self.refresh(index);
        self.refresh(left);
        left
    }

    fn rotate_left(&mut self, index: usize) -> usize {
        let Link::Mem(right) = self.node(index).right else { return index };
        let moved = self.node(right).left;
        self.node_mut(index).right = moved;
        self.node_mut(right).left = Link::Mem(index);
        self.refresh(index);
        self.refresh(right);
        right
    }

    /// Inserts `key` with `value`, returning the value it replaces. A key or value whose
    /// encoding is longer than [`MAX_FIELD_BYTES`](crate::MAX_FIELD_BYTES) is
    /// [`Error::TooLarge`](crate::Error::TooLarge), and one that cannot be encoded
    /// [`Error::Encode`](crate::Error::Encode), here rather than at `persist`.
    pub fn insert<S: Storer>(&mut self, store: &S, key: K, value: V) -> Result<Option<V>> {
        let (k, v) = (key.encoded_len(), value.encoded_len()?);
        if k.max(v) > crate::node::MAX_FIELD_BYTES {
            return Err(crate::Error::TooLarge {
                len: k.max(v),
                max: crate::node::MAX_FIELD_BYTES,
            });
        }
        let old = self.insert_now(store, key, value);
        self.after_op();
        old
    }

    /// Descends to `key` or to the empty link where it belongs, then goes back up the path:
    /// each node there takes its new count, and the new node rotates up while it outranks
    /// its parent. A loop, not a recursion: a stored tree decides the depth.
    fn insert_now<S: NodeSource>(&mut self, store: &S, key: K, value: V) -> Result<Option<V>> {
        let mut path: Vec<(usize, bool)> = Vec::new();
        let mut at = self.root_index(store)?;
        while let Some(index) = at {
            let left = match key.cmp(&self.node(index).key) {
                Ordering::Equal => {
                    for &(up, _) in &path {
                        self.node_mut(up).dirty = true;
                    }
                    let node = self.node_mut(index);
                    node.dirty = true;
                    return Ok(Some(std::mem::replace(&mut node.value, value)));
                }
                Ordering::Less => true,
                Ordering::Greater => false,
            };
            path.push((index, left));
            at = self.child(store, index, left)?;
        }
        let node = Node {
            priority: priority_of(&key, self.seed),
            key,
            value,
            count: 1,
            left: Link::Empty,
            right: Link::Empty,
            stored: None,
            dirty: true,
            used: self.tick,
        };
        let mut below = self.add(node);
        for (index, left) in path.into_iter().rev() {
            let node = self.node_mut(index);
            if left {
                node.left = Link::Mem(below)
            } else {
                node.right = Link::Mem(below)
            }
            self.refresh(index);
            below = match self.node(below).priority > self.node(index).priority {
                false => index,
                true if left => self.rotate_right(index),
                true => self.rotate_left(index),
            };
        }
        self.root = Link::Mem(below);
        Ok(None)
    }

    /// Removes `key` (any borrowed form of the key type, as with `BTreeMap`), returning its
    /// value.
    pub fn delete<S: Storer, Q: Ord + ?Sized>(&mut self, store: &S, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let removed = self.delete_now(store, key);
        self.after_op();
        removed
    }

    /// Descends to `key`, replaces its node by the merge of its children and recounts the
    /// path back up. A loop, not a recursion: a stored tree decides the depth.
    fn delete_now<S: NodeSource, Q: Ord + ?Sized>(
        &mut self,
        store: &S,
        key: &Q,
    ) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let mut path: Vec<(usize, bool)> = Vec::new();
        let mut at = self.root_index(store)?;
        let index = loop {
            let Some(index) = at else { return Ok(None) };
            let left = match key.cmp(self.node(index).key.borrow()) {
                Ordering::Equal => break index,
                Ordering::Less => true,
                Ordering::Greater => false,
            };
            path.push((index, left));
            at = self.child(store, index, left)?;
        };
        let node = self.node(index);
        let merged = self.merge(store, (node.left, node.right), node.priority)?;
        let node = self.nodes[index].take().expect("a linked arena slot holds a node");
        self.free.push(index);
        self.replaced.extend(node.stored);
        match path.last() {
            None => self.root = merged,
            Some(&(up, true)) => self.node_mut(up).left = merged,
            Some(&(up, false)) => self.node_mut(up).right = merged,
        }
        for &(up, _) in path.iter().rev() {
            self.refresh(up);
        }
        Ok(Some(node.value))
    }

    /// Joins two treaps whose keys are all ordered `a < b`, walking down their facing
    /// spines (no recursion: a stored tree decides the depth). An empty side ends the walk
    /// before the other is loaded: a node loaded and then linked as stored would stay in
    /// memory with nothing referencing it, out of reach of `flush`.
    /// `bound` is the priority of the node whose children `a` and `b` were.
    fn merge<S: NodeSource>(&mut self, store: &S, pair: (Link, Link), bound: u64) -> Result<Link> {
        let ((mut a, mut b), (mut a_bound, mut b_bound)) = (pair, (bound, bound));
        let mut top = Link::Empty;
        // The node whose child the next piece becomes (`true`: its right child), and the
        // nodes passed, whose counts are refreshed bottom-up at the end.
        let mut hole: Option<(usize, bool)> = None;
        let mut passed = Vec::new();
        loop {
            let (ai, bi) = match (a, b) {
                (Link::Empty, rest) | (rest, Link::Empty) => {
                    self.fill(&mut top, hole, rest);
                    break;
                }
                _ => match (self.resolve(store, a, a_bound)?, self.resolve(store, b, b_bound)?) {
                    (Some(ai), Some(bi)) => (ai, bi),
                    _ => return Err(Error::Invariant("a non-empty link resolved to none".into())),
                },
            };
            if self.node(ai).priority > self.node(bi).priority {
                self.fill(&mut top, hole, Link::Mem(ai));
                (hole, a, b) = (Some((ai, true)), self.node(ai).right, Link::Mem(bi));
                a_bound = self.node(ai).priority;
                passed.push(ai);
            } else {
                self.fill(&mut top, hole, Link::Mem(bi));
                (hole, a, b) = (Some((bi, false)), Link::Mem(ai), self.node(bi).left);
                b_bound = self.node(bi).priority;
                passed.push(bi);
            }
        }
        for &index in passed.iter().rev() {
            self.refresh(index);
        }
        Ok(top)
    }

    /// Links `link` where a merge's next piece goes: as `hole`'s child, or as the top.
    fn fill(&mut self, top: &mut Link, hole: Option<(usize, bool)>, link: Link) {
        match hole {
            None => *top = link,
            Some((index, true)) => self.node_mut(index).right = link,
            Some((index, false)) => self.node_mut(index).left = link,
        }
    }

    /// The value of `key` (any borrowed form of the key type, as with `BTreeMap`).
    pub fn get<S: Storer, Q: Ord + ?Sized>(&mut self, store: &S, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let value = self.get_now(store, key);
        self.after_op();
        value
    }

    fn get_now<S: NodeSource, Q: Ord + ?Sized>(&mut self, store: &S, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let mut at = self.root_index(store)?;
        while let Some(index) = at {
            at = match key.cmp(self.node(index).key.borrow()) {
                Ordering::Equal => return Ok(Some(self.node(index).value.clone())),
                Ordering::Less => self.child(store, index, true)?,
                Ordering::Greater => self.child(store, index, false)?,
            };
        }
        Ok(None)
    }

    /// Whether `key` is present.
    pub fn contains<S: Storer, Q: Ord + ?Sized>(&mut self, store: &S, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
    {
        Ok(self.get(store, key)?.is_some())
    }

    /// The value of `key` if its whole search path is in memory: `Some(answer)`, or `None`
    /// when the search reaches a node not loaded (then use [`get`](Self::get)). It takes
    /// `&self`, so readers can share the treap (behind a reader/writer lock, say) while it
    /// is hot; it does not count as a use for the least-recently-used order of `flush`.
    pub fn get_cached<Q: Ord + ?Sized>(&self, key: &Q) -> Option<Option<V>>
    where
        K: Borrow<Q>,
    {
        let mut link = self.root;
        loop {
            let index = match link {
                Link::Empty => return Some(None),
                Link::Stored(_) => return None,
                Link::Mem(index) => index,
            };
            let node = self.node(index);
            link = match key.cmp(node.key.borrow()) {
                Ordering::Equal => return Some(Some(node.value.clone())),
                Ordering::Less => node.left,
                Ordering::Greater => node.right,
            };
        }
    }

    /// Keeps at most `budget` nodes in memory after every operation (`None`: no bound, the
    /// default). When an operation leaves more, the least recently used clean subtrees are
    /// unloaded down to seven eighths of the budget, so the cost of a flush is shared by
    /// many operations. Changed nodes stay until persisted: a budget smaller than the
    /// changes pending is exceeded until the next `persist`.
    pub fn set_memory_budget(&mut self, budget: Option<usize>) {
        self.budget = budget;
        self.after_op();
    }

    /// The memory budget set by [`set_memory_budget`](Self::set_memory_budget).
    pub fn memory_budget(&self) -> Option<usize> {
        self.budget
    }

    /// Ends an operation: the next one touches nodes with a newer tick, and the budget, if
    /// any, is kept.
    fn after_op(&mut self) {
        self.tick += 1;
        if let Some(budget) = self.budget {
            self.trim(budget);
        }
    }

    /// Flushes to seven eighths of `budget` if a flush is due.
    fn trim(&mut self, budget: usize) -> usize {
        if self.trim_due(budget) { self.trim_now(budget) } else { 0 }
    }

    /// Whether more than `budget` nodes are in memory, and more than a flush that could not
    /// reach the budget left.
    pub(crate) fn trim_due(&self, budget: usize) -> bool {
        let in_memory = self.nodes_in_memory();
        in_memory > budget && in_memory > self.retry_above
    }

    /// Flushes to seven eighths of `budget`; if changed nodes keep it above `budget`, the
    /// next flush is due only after another eighth of the budget is loaded.
    pub(crate) fn trim_now(&mut self, budget: usize) -> usize {
        let unloaded = self.flush(budget - budget / 8);
        let left = self.nodes_in_memory();
        self.retry_above = if left > budget { left + budget / 8 } else { 0 };
        unloaded
    }

    /// The smallest key and its value.
    pub fn first<S: Storer>(&mut self, store: &S) -> Result<Option<(K, V)>> {
        self.edge(store, true)
    }

    /// The largest key and its value.
    pub fn last<S: Storer>(&mut self, store: &S) -> Result<Option<(K, V)>> {
        self.edge(store, false)
    }

    fn edge<S: NodeSource>(&mut self, store: &S, leftmost: bool) -> Result<Option<(K, V)>> {
        let found = self.edge_now(store, leftmost);
        self.after_op();
        found
    }

    fn edge_now<S: NodeSource>(&mut self, store: &S, leftmost: bool) -> Result<Option<(K, V)>> {
        let Some(mut index) = self.root_index(store)? else { return Ok(None) };
        while let Some(next) = self.child(store, index, leftmost)? {
            index = next;
        }
        let node = self.node(index);
        Ok(Some((node.key.clone(), node.value.clone())))
    }

    /// Every key and value in order.
    pub fn to_vec<S: Storer>(&mut self, store: &S) -> Result<Vec<(K, V)>> {
        self.range(store, ..)
    }

    /// The keys and values within `bounds`, in order (subtrees outside them are not loaded).
    pub fn range<S: Storer, R: RangeBounds<K>>(
        &mut self,
        store: &S,
        bounds: R,
    ) -> Result<Vec<(K, V)>> {
        let found = self.range_now(store, bounds, usize::MAX);
        self.after_op();
        found
    }

    /// At most `limit` of the keys and values within `bounds`, in order: one walk, loading
    /// only the nodes it passes (a page of results, where `iter_from` would descend from the
    /// root for each).
    pub fn range_limited<S: Storer, R: RangeBounds<K>>(
        &mut self,
        store: &S,
        bounds: R,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let found = self.range_now(store, bounds, limit);
        self.after_op();
        found
    }

    /// Like [`range_limited`](Self::range_limited), from memory only: `None` when the walk
    /// reaches a node not loaded. It takes `&self` (see [`get_cached`](Self::get_cached)).
    pub fn range_cached<R: RangeBounds<K>>(&self, bounds: R, limit: usize) -> Option<Vec<(K, V)>> {
        let in_memory = |link: Link| match link {
            Link::Empty => Some(None),
            Link::Stored(_) => None,
            Link::Mem(index) => Some(Some(index)),
        };
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut at = in_memory(self.root)?;
        loop {
            while let Some(index) = at {
                let node = self.node(index);
                if below_start(&bounds, &node.key) {
                    at = in_memory(node.right)?;
                } else {
                    stack.push(index);
                    at = in_memory(node.left)?;
                }
            }
            if out.len() >= limit {
                break;
            }
            let Some(index) = stack.pop() else { break };
            let node = self.node(index);
            if past_end(&bounds, &node.key) {
                break;
            }
            out.push((node.key.clone(), node.value.clone()));
            at = in_memory(node.right)?;
        }
        Some(out)
    }

    fn range_now<S: NodeSource, R: RangeBounds<K>>(
        &mut self,
        store: &S,
        bounds: R,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut at = self.root_index(store)?;
        loop {
            while let Some(index) = at {
                if below_start(&bounds, &self.node(index).key) {
                    at = self.child(store, index, false)?;
                } else {
                    stack.push(index);
                    at = self.child(store, index, true)?;
                }
            }
            if out.len() >= limit {
                break;
            }
            let Some(index) = stack.pop() else { break };
            let node = self.node(index);
            if past_end(&bounds, &node.key) {
                break;
            }
            out.push((node.key.clone(), node.value.clone()));
            at = self.child(store, index, false)?;
        }
        Ok(out)
    }

    /// The first key after `after` (or the first key, for `None`) and its value, descending
    /// from the root and loading nodes on the way.
    pub fn successor<S: Storer>(&mut self, store: &S, after: Option<&K>) -> Result<Option<(K, V)>> {
        let found = self.successor_now(store, after);
        self.after_op();
        found
    }

    fn successor_now<S: NodeSource>(
        &mut self,
        store: &S,
        after: Option<&K>,
    ) -> Result<Option<(K, V)>> {
        let mut best = None;
        let mut at = self.root_index(store)?;
        while let Some(index) = at {
            let go_left = after.is_none_or(|a| self.node(index).key > *a);
            if go_left {
                best = Some(index);
            }
            at = self.child(store, index, go_left)?;
        }
        Ok(best.map(|index| (self.node(index).key.clone(), self.node(index).value.clone())))
    }

    /// An in-order iterator over the keys from `start` (inclusive) on. It holds no position
    /// in memory, only the last key it returned, and finds each next key from the root, so it
    /// stays correct whatever is flushed between steps; with `budget`, it flushes to that many
    /// nodes itself after each step. Each step costs a descent (O(log n)).
    pub fn iter_from<'a, S: Storer>(
        &'a mut self,
        store: &'a S,
        start: Option<K>,
        budget: Option<usize>,
    ) -> Iter<'a, K, V, S> {
        Iter {
            treap: self,
            store,
            next_from: start.map(Bound::Included).unwrap_or(Bound::Unbounded),
            budget,
            done: false,
        }
    }

    /// Calls `visit` on every entry in key order with its value to change; an entry for which
    /// `visit` returns `true` is written back (its path becomes dirty, persisted by the next
    /// `persist`). Walks like [`iter_from`](Self::iter_from), flushing to `budget` if given.
    pub fn walk_mut<S: Storer>(
        &mut self,
        store: &S,
        budget: Option<usize>,
        mut visit: impl FnMut(&K, &mut V) -> bool,
    ) -> Result<u64> {
        let mut changed = 0;
        let mut last: Option<K> = None;
        while let Some((key, mut value)) = self.successor(store, last.as_ref())? {
            if visit(&key, &mut value) {
                self.insert(store, key.clone(), value)?;
                changed += 1;
            }
            if let Some(budget) = budget {
                self.trim(budget);
            }
            last = Some(key);
        }
        Ok(changed)
    }

    /// Unloads clean (persisted, unchanged) nodes back to stored links, least recently used
    /// first, until at most `budget` nodes stay in memory or no clean node is left; returns
    /// the nodes unloaded. Changed nodes and their paths stay: a change dirties its whole
    /// path, so a clean node heads a clean subtree, and unloading it unloads that subtree.
    /// A node is touched only through its parent, so children go before their parents.
    pub fn flush(&mut self, budget: usize) -> usize {
        let Link::Mem(root) = self.root else { return 0 };
        if self.nodes_in_memory() <= budget {
            return 0;
        }
        // Each in-memory node's parent (`usize::MAX` for the root) and side, and the clean
        // nodes by (last use, deeper first).
        let mut parent = vec![(usize::MAX, false); self.nodes.len()];
        let mut clean: Vec<(u64, std::cmp::Reverse<u32>, usize)> = Vec::new();
        let mut stack = vec![(root, 0u32)];
        while let Some((index, depth)) = stack.pop() {
            let node = self.node(index);
            if !node.dirty && node.stored.is_some() {
                clean.push((node.used, std::cmp::Reverse(depth), index));
            }
            for (left, link) in [(true, node.left), (false, node.right)] {
                if let Link::Mem(child) = link {
                    parent[child] = (index, left);
                    stack.push((child, depth + 1));
                }
            }
        }
        clean.sort_unstable();
        let mut unloaded = 0;
        for (_, _, index) in clean {
            if self.nodes_in_memory() <= budget {
                break;
            }
            // Gone already if an ancestor went first (possible only for equal ticks).
            let Some(link) = self.nodes[index].as_ref().and_then(|_| self.unloadable(index)) else {
                continue;
            };
            unloaded += self.unload(index);
            match parent[index] {
                (usize::MAX, _) => self.root = link,
                (up, true) => self.node_mut(up).left = link,
                (up, false) => self.node_mut(up).right = link,
            }
        }
        unloaded
    }

    /// The stored link that can replace node `index`, if it heads a clean subtree.
    fn unloadable(&self, index: usize) -> Option<Link> {
        let node = self.node(index);
        match (node.dirty, node.stored) {
            (false, Some(id)) => Some(Link::Stored(ChildRef { id, count: node.count })),
            _ => None,
        }
    }

    /// Frees the in-memory subtree headed by `index`; returns its size in memory.
    fn unload(&mut self, index: usize) -> usize {
        let mut stack = vec![index];
        let mut freed = 0;
        while let Some(at) = stack.pop() {
            if let Some(node) = self.nodes[at].take() {
                for link in [node.left, node.right] {
                    if let Link::Mem(child) = link {
                        stack.push(child);
                    }
                }
                self.free.push(at);
                freed += 1;
            }
        }
        freed
    }

    /// Loads the whole tree and checks the treap invariants: keys in order, each node's
    /// priority at least its children's, counts adding up. A loop over an explicit stack: a
    /// stored tree decides the depth.
    pub fn check<S: Storer>(&mut self, store: &S) -> Result<()> {
        self.check_now(store)
    }

    fn check_now<S: NodeSource>(&mut self, store: &S) -> Result<()> {
        let Some(root) = self.root_index(store)? else { return Ok(()) };
        // Nodes to check, each with the keys its own must lie strictly between.
        let mut stack: Vec<(usize, Option<K>, Option<K>)> = vec![(root, None, None)];
        while let Some((index, low, high)) = stack.pop() {
            let key = self.node(index).key.clone();
            if low.as_ref().is_some_and(|l| key <= *l) || high.as_ref().is_some_and(|h| key >= *h) {
                return Err(Error::Invariant("keys out of order".into()));
            }
            let mut count = 1u64;
            for left in [true, false] {
                let Some(child) = self.child(store, index, left)? else { continue };
                if self.node(child).priority > self.node(index).priority {
                    return Err(Error::Invariant("a child outranks its parent".into()));
                }
                count = count.saturating_add(self.node(child).count);
                let (l, h) = if left {
                    (low.clone(), Some(key.clone()))
                } else {
                    (Some(key.clone()), high.clone())
                };
                stack.push((child, l, h));
            }
            if count != self.node(index).count {
                return Err(Error::Invariant("a subtree count is wrong".into()));
            }
        }
        Ok(())
    }
}

/// A treap that lives only in memory: an ordered map (a set with `V = ()`) with the same
/// shape rules as [`PersistentTreap`], for callers that need no store. Turn it into a
/// persistent one with [`into_persistent`](Self::into_persistent).
///
/// ```
/// let mut set: bob_treap::Treap<u32> = bob_treap::Treap::new();
/// for k in [5, 1, 3] {
///     set.insert(k, ());
/// }
/// assert!(set.contains(&3));
/// assert_eq!(set.keys(), vec![1, 3, 5]);
/// ```
#[derive(Debug, Clone)]
pub struct Treap<K, V = ()> {
    inner: PersistentTreap<K, V>,
}

impl<K: TreapKey, V: TreapValue> Default for Treap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Operations on a treap without stored nodes reach no store, so they cannot fail.
fn in_memory<T>(result: Result<T>) -> T {
    result.unwrap_or_else(|e| unreachable!("an in-memory treap reads no store: {e}"))
}

impl<K: TreapKey, V: TreapValue> Treap<K, V> {
    /// An empty treap with a random priority seed.
    pub fn new() -> Self {
        Self { inner: PersistentTreap::new() }
    }

    /// An empty treap whose priorities use `seed` (see [`PersistentTreap::with_seed`]).
    pub fn with_seed(seed: u64) -> Self {
        Self { inner: PersistentTreap::with_seed(seed) }
    }

    /// Inserts `key` with `value`, returning the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        in_memory(self.inner.insert_now(&Memory, key, value))
    }

    /// Removes `key` (or a borrowed form of it), returning its value.
    pub fn delete<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        in_memory(self.inner.delete_now(&Memory, key))
    }

    /// The value of `key` (or a borrowed form of it).
    pub fn get<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        in_memory(self.inner.get_now(&Memory, key))
    }

    /// Whether `key` (or a borrowed form of it) is present.
    pub fn contains<Q: Ord + ?Sized>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    /// Keys in the treap.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether the treap is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The smallest key and its value.
    pub fn first(&mut self) -> Option<(K, V)> {
        in_memory(self.inner.edge_now(&Memory, true))
    }

    /// The largest key and its value.
    pub fn last(&mut self) -> Option<(K, V)> {
        in_memory(self.inner.edge_now(&Memory, false))
    }

    /// The keys and values within `bounds`, in order.
    pub fn range<R: RangeBounds<K>>(&mut self, bounds: R) -> Vec<(K, V)> {
        in_memory(self.inner.range_now(&Memory, bounds, usize::MAX))
    }

    /// Every key, in order.
    pub fn keys(&mut self) -> Vec<K> {
        self.range(..).into_iter().map(|(k, _)| k).collect()
    }

    /// The first key after `after` (or the first key, for `None`) and its value.
    pub fn successor(&mut self, after: Option<&K>) -> Option<(K, V)> {
        in_memory(self.inner.successor_now(&Memory, after))
    }

    /// Checks the treap invariants (see [`PersistentTreap::check`]).
    pub fn check(&mut self) -> Result<()> {
        self.inner.check_now(&Memory)
    }

    /// The same entries as a [`PersistentTreap`], every node changed (persisted by its
    /// first `persist`).
    pub fn into_persistent(self) -> PersistentTreap<K, V> {
        self.inner
    }
}
