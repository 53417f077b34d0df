//! Persistence: `persist` writes changed nodes one by one, `batch_persist` in contiguous runs.

use bob_store_core::{BatchStorer, ObjectId, Storer};

use super::{Link, PersistentTreap};
use crate::codec::{TreapKey, TreapValue};
use crate::node::{ChildRef, MAX_FIELD_BYTES, NodeHead, RawNode, encode_into};
use crate::{Error, Result};

/// A changed node as `batch_persist` encodes it.
struct Planned {
    /// Its arena index.
    index: usize,
    head: NodeHead,
    children: [PlannedChild; 2],
    /// Where its key and value are in the encoded buffer.
    kv_start: usize,
    key_len: usize,
    value_len: usize,
}

/// How a changed node names a child in `batch_persist`.
#[derive(Debug, Clone, Copy)]
enum PlannedChild {
    None,
    /// A clean child: its object.
    Stored(ChildRef),
    /// A changed child: its position in the plan, and its subtree's size.
    Dirty {
        pos: usize,
        count: u64,
    },
}

/// Free space `batch_persist` reuses must hold a run of at least this many bytes: smaller
/// holes are left to single allocations, since each run costs a write of its own.
const MIN_RUN_BYTES: usize = 8 << 10;

/// One run's nodes as `batch_persist` writes them: encoded end to end, and each node's
/// object with where its bytes start.
struct RunBuffer {
    bytes: Vec<u8>,
    starts: Vec<(ObjectId, usize)>,
}

/// A planned node's place in a run, if it has one: its object and the run's number.
type Assigned = Option<(ObjectId, usize)>;

/// What [`PersistentTreap::batch_persist`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// The root's object (`None` for an empty treap).
    pub root: Option<ObjectId>,
    /// Nodes written.
    pub nodes: u64,
    /// Contiguous runs taken (each written with one `write_batched_objs`).
    pub runs: u64,
    /// Nodes written one by one because no run was available.
    pub fallback_nodes: u64,
}

impl<K: TreapKey, V: TreapValue> PersistentTreap<K, V> {
    /// Writes every changed node as a new object, children before parents, and returns the
    /// root's object (`None` when empty). It deletes nothing: the objects of replaced and
    /// deleted nodes are kept until [`delete_replaced`](Self::delete_replaced), to be called
    /// once the caller has published the new root, so that no commit, the caller's or another
    /// thread's on a shared store, can make the old tree's deletes durable before the root
    /// that replaces it. [`persist_with`](Self::persist_with) does all three in that order.
    /// Nothing is durable until a commit; until then, and after any crash before it, the
    /// previously committed tree loads whole.
    pub fn persist<S: Storer>(&mut self, store: &mut S) -> Result<Option<ObjectId>> {
        let root = self.persist_now(store);
        self.retry_above = 0;
        self.after_op();
        root
    }

    /// Persists (see [`persist`](Self::persist)), calls `publish` with the store and the new
    /// root's object (`None` when empty) to record it where the caller finds its root (the
    /// store's prime object, say), and only then deletes the objects of the replaced nodes.
    /// A commit at any point in between finds a whole tree: the old root with the old nodes,
    /// or the new root with the new ones. If `publish` fails, nothing is deleted.
    pub fn persist_with<S: Storer>(
        &mut self,
        store: &mut S,
        publish: impl FnOnce(&mut S, Option<ObjectId>) -> Result<()>,
    ) -> Result<Option<ObjectId>> {
        let root = self.persist(store)?;
        publish(store, root)?;
        self.delete_replaced(store)?;
        Ok(root)
    }

    /// Deletes the objects of the nodes replaced or deleted before the last successful
    /// persist, and returns how many. Call it only once the root that persist returned is
    /// published: before that, the published root may still need them, and any commit would
    /// make their deletes durable. Changes made since the last persist are not affected.
    pub fn delete_replaced<S: Storer>(&mut self, store: &mut S) -> Result<u64> {
        let mut deleted = 0;
        // One at a time, so that a failed delete leaves the rest to a later call.
        while let Some(&id) = self.doomed.last() {
            store.delete_obj(id)?;
            self.doomed.pop();
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Objects waiting for [`delete_replaced`](Self::delete_replaced): replaced by a
    /// persisted tree whose root may not be published yet.
    pub fn replaced_pending(&self) -> usize {
        self.doomed.len()
    }

    fn persist_now<S: Storer>(&mut self, store: &mut S) -> Result<Option<ObjectId>> {
        let mut kv = Vec::new();
        let plan = self.plan_batch(&mut kv)?;
        let mut created = Vec::new();
        let written = encode_and_write(store, &plan, &kv, &[], &mut [], &mut created);
        let ids = freeing_on_error(store, written, &created)?;
        self.adopt(&plan, &ids);
        Ok(self.root_id())
    }

    /// Like [`persist`](Self::persist), with as few writes as the store allows: the changed
    /// nodes are grouped by encoded size, each group takes one contiguous run of objects
    /// (`allocate_run`), every node is encoded with its children's final ids, and each run is
    /// written with one `write_batched_objs`. When a group's full run is not available, it
    /// takes the shorter runs the store can give (grouped batching); when none is, that group
    /// falls back to one write per node, as every group does when another thread's commit of
    /// a shared store makes the runs durable before they are filled (they are freed, and the
    /// tree persisted as [`persist`](Self::persist) does). A uniform tree is one run and one
    /// write. Like
    /// `persist`, it deletes nothing: see [`delete_replaced`](Self::delete_replaced) and
    /// [`batch_persist_with`](Self::batch_persist_with).
    pub fn batch_persist<S: BatchStorer>(&mut self, store: &mut S) -> Result<BatchReport> {
        let report = self.batch_persist_now(store);
        self.retry_above = 0;
        self.after_op();
        report
    }

    /// [`batch_persist`](Self::batch_persist), then `publish` with the new root, then
    /// [`delete_replaced`](Self::delete_replaced): the order of
    /// [`persist_with`](Self::persist_with), with the batched writes.
    pub fn batch_persist_with<S: BatchStorer>(
        &mut self,
        store: &mut S,
        publish: impl FnOnce(&mut S, Option<ObjectId>) -> Result<()>,
    ) -> Result<BatchReport> {
        let report = self.batch_persist(store)?;
        publish(store, report.root)?;
        self.delete_replaced(store)?;
        Ok(report)
    }

    fn batch_persist_now<S: BatchStorer>(&mut self, store: &mut S) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        // Everything that can fail before a write (encoding, size limits) fails here, before
        // any object is allocated.
        let mut kv = Vec::new();
        let plan = self.plan_batch(&mut kv)?;
        let mut created = Vec::new();
        let written = write_in_runs(store, &plan, &kv, &mut report, &mut created);
        let ids = match freeing_on_error(store, written, &created) {
            // Another thread's commit (a shared store) made the runs durable before they
            // were filled: they are freed, and the nodes written one by one instead.
            Err(Error::Store(bob_store_core::Error::CommittedBeforeFilled(_))) => {
                let root = self.persist_now(store)?;
                let nodes = plan.len() as u64;
                return Ok(BatchReport { root, nodes, runs: 0, fallback_nodes: nodes });
            }
            other => other?,
        };
        self.adopt(&plan, &ids);
        report.nodes = plan.len() as u64;
        report.root = self.root_id();
        Ok(report)
    }

    /// The root's object, once persisted (`None` for an empty treap).
    fn root_id(&self) -> Option<ObjectId> {
        match self.root {
            Link::Empty => None,
            Link::Stored(child) => Some(child.id),
            Link::Mem(index) => self.node(index).stored,
        }
    }

    /// With everything written, the planned nodes take their new objects (`ids[i]` is plan
    /// node i's), and their old ones and those of the nodes replaced since the last persist
    /// wait for `delete_replaced`. When they are a good part of the arena,
    /// in arena order (a sequential sweep rather than a random walk); when they are few,
    /// directly (a sweep would cost the whole arena).
    fn adopt(&mut self, plan: &[Planned], ids: &[ObjectId]) {
        if plan.len() * 8 >= self.nodes.len() {
            let mut new_ids: Vec<Option<ObjectId>> = vec![None; self.nodes.len()];
            for (planned, &id) in plan.iter().zip(ids) {
                new_ids[planned.index] = Some(id);
            }
            for (slot, id) in self.nodes.iter_mut().zip(new_ids) {
                if let (Some(node), Some(id)) = (slot.as_mut(), id) {
                    node.dirty = false;
                    if let Some(old) = node.stored.replace(id) {
                        self.doomed.push(old);
                    }
                }
            }
        } else {
            for (planned, &id) in plan.iter().zip(ids) {
                let node = self.node_mut(planned.index);
                node.dirty = false;
                if let Some(old) = node.stored.replace(id) {
                    self.doomed.push(old);
                }
            }
        }
        self.doomed.append(&mut self.replaced);
    }

    /// The changed nodes in post-order (children before parents), each with what its
    /// encoding needs; keys and values are encoded once, into `kv`. A clean node heads a
    /// clean subtree (a change dirties its whole path), so clean subtrees are not entered.
    fn plan_batch(&self, kv: &mut Vec<u8>) -> Result<Vec<Planned>> {
        let mut plan: Vec<Planned> = Vec::new();
        let Link::Mem(root) = self.root else { return Ok(plan) };
        // Frames to visit (index, children done) and the finished children's references.
        let mut stack = vec![(root, false)];
        let mut done: Vec<PlannedChild> = Vec::new();
        while let Some((index, children_done)) = stack.pop() {
            let node = self.node(index);
            if !children_done {
                if let (false, Some(id)) = (node.dirty, node.stored) {
                    done.push(PlannedChild::Stored(ChildRef { id, count: node.count }));
                    continue;
                }
                stack.push((index, true));
                for link in [node.right, node.left] {
                    if let Link::Mem(child) = link {
                        stack.push((child, false));
                    }
                }
                continue;
            }
            // Children finished first left then right, so right's reference is on top.
            let mut children = [PlannedChild::None; 2];
            for (side, link) in [(1, node.right), (0, node.left)] {
                children[side] = match link {
                    Link::Empty => PlannedChild::None,
                    Link::Stored(child) => PlannedChild::Stored(child),
                    Link::Mem(_) => done
                        .pop()
                        .ok_or_else(|| Error::Invariant("post-order lost a child".into()))?,
                };
            }
            let kv_start = kv.len();
            node.key.encode(kv);
            let key_len = kv.len() - kv_start;
            node.value.encode(kv)?;
            let value_len = kv.len() - kv_start - key_len;
            if key_len > MAX_FIELD_BYTES || value_len > MAX_FIELD_BYTES {
                return Err(Error::TooLarge { len: key_len.max(value_len), max: MAX_FIELD_BYTES });
            }
            done.push(PlannedChild::Dirty { pos: plan.len(), count: node.count });
            plan.push(Planned {
                index,
                head: NodeHead { priority: node.priority, seed: self.seed, count: node.count },
                children,
                kv_start,
                key_len,
                value_len,
            });
        }
        Ok(plan)
    }
}

/// `written`, or its error after deleting the objects the failed persist `created`: nothing
/// references them, and they would otherwise stay allocated for good. A store whose write
/// failed may refuse the deletes too; it then drops everything uncommitted when reopened, so
/// the persist's error is the one reported.
fn freeing_on_error<S: Storer, T>(
    store: &mut S,
    written: Result<T>,
    created: &[ObjectId],
) -> Result<T> {
    if written.is_err() {
        for &id in created {
            let _ = store.delete_obj(id);
        }
    }
    written
}

/// Allocates runs for the plan and writes it; the objects allocated or written are pushed
/// to `created` as they are made. Returns each plan node's object.
fn write_in_runs<S: BatchStorer>(
    store: &mut S,
    plan: &[Planned],
    kv: &[u8],
    report: &mut BatchReport,
    created: &mut Vec<ObjectId>,
) -> Result<Vec<ObjectId>> {
    let (assigned, mut runs) = allocate_runs(store, plan, report, created)?;
    report.runs = runs.len() as u64;
    let ids = encode_and_write(store, plan, kv, &assigned, &mut runs, created)?;
    let mut objects = Vec::new();
    for RunBuffer { bytes, starts } in &runs {
        objects.clear();
        for (n, &(id, at)) in starts.iter().enumerate() {
            let end = starts.get(n + 1).map_or(bytes.len(), |next| next.1);
            objects.push((id, &bytes[at..end]));
        }
        store.write_batched_objs(&objects)?;
    }
    Ok(ids)
}

/// Ids first, so every node's id is known before any parent is encoded: the plan's nodes
/// grouped by encoded length, each group given runs of objects. Returns, by plan position,
/// (object id, run number) for the nodes given a run, and the runs' empty buffers; the
/// nodes left without a run are counted in `report.fallback_nodes`.
fn allocate_runs<S: BatchStorer>(
    store: &mut S,
    plan: &[Planned],
    report: &mut BatchReport,
    created: &mut Vec<ObjectId>,
) -> Result<(Vec<Assigned>, Vec<RunBuffer>)> {
    let len_of = |p: &Planned| RawNode::encoded_len(p.key_len, p.value_len);
    // Group by encoded length, keeping post-order inside each group (a uniform tree is
    // one group and needs no sort).
    let mut order: Vec<usize> = (0..plan.len()).collect();
    if !plan.windows(2).all(|w| len_of(&w[0]) == len_of(&w[1])) {
        order.sort_by_key(|&i| len_of(&plan[i]));
    }
    let mut assigned: Vec<Assigned> = vec![None; plan.len()];
    let mut runs: Vec<RunBuffer> = Vec::new();
    let mut take_run = |nodes: &[usize], run: Vec<ObjectId>, len: usize| {
        created.extend_from_slice(&run);
        for (&i, id) in nodes.iter().zip(run) {
            assigned[i] = Some((id, runs.len()));
        }
        runs.push(RunBuffer {
            bytes: Vec::with_capacity(nodes.len() * len),
            starts: Vec::with_capacity(nodes.len()),
        });
    };
    for group in order.chunk_by(|&a, &b| len_of(&plan[a]) == len_of(&plan[b])) {
        let len = len_of(&plan[group[0]]);
        let mut rest = group;
        // Free space first, where it holds a run of at least this many nodes.
        let min_run = (MIN_RUN_BYTES / len).max(1) as u64;
        match store.allocate_runs(rest.len() as u64, len as u64, min_run) {
            Ok(taken) => {
                for run in taken {
                    let (these, others) = rest.split_at(run.len().min(rest.len()));
                    take_run(these, run, len);
                    rest = others;
                }
            }
            // Not even that: shorter runs below, then single nodes.
            Err(bob_store_core::Error::NoRun { .. }) => {}
            Err(other) => return Err(other.into()),
        }
        while !rest.is_empty() {
            let take = match store.allocate_run(rest.len() as u64, len as u64) {
                Ok(run) => Some((rest.len(), run)),
                // The allocator's longest run may still be refused by the store (its reserve,
                // or pages a commit holds): single nodes then.
                Err(bob_store_core::Error::NoRun { longest, .. }) if longest > 0 => {
                    let take = (longest as usize).min(rest.len());
                    store.allocate_run(take as u64, len as u64).ok().map(|run| (take, run))
                }
                Err(_) => None,
            };
            let Some((take, run)) = take else {
                report.fallback_nodes += rest.len() as u64;
                break;
            };
            take_run(&rest[..take], run, len);
            rest = &rest[take..];
        }
    }
    Ok((assigned, runs))
}

/// Encodes the plan in post-order (children before parents), each node given a run
/// appended to its run's buffer, each other node written alone, so it too has its id before
/// its parent is encoded; written objects are pushed to `created`. Returns each plan node's
/// object.
fn encode_and_write<S: Storer>(
    store: &mut S,
    plan: &[Planned],
    kv: &[u8],
    assigned: &[Assigned],
    runs: &mut [RunBuffer],
    created: &mut Vec<ObjectId>,
) -> Result<Vec<ObjectId>> {
    let mut ids: Vec<ObjectId> = Vec::with_capacity(plan.len());
    let mut single = Vec::new();
    for (i, node) in plan.iter().enumerate() {
        let child = |c: PlannedChild| match c {
            PlannedChild::None => None,
            PlannedChild::Stored(child) => Some(child),
            PlannedChild::Dirty { pos, count } => Some(ChildRef { id: ids[pos], count }),
        };
        let children = [child(node.children[0]), child(node.children[1])];
        let key = &kv[node.kv_start..node.kv_start + node.key_len];
        let value = &kv[node.kv_start + node.key_len..][..node.value_len];
        let id = match assigned.get(i).copied().flatten() {
            Some((id, run)) => {
                let buffer = &mut runs[run];
                let at = buffer.bytes.len();
                encode_into(&mut buffer.bytes, node.head, children, key, value)?;
                buffer.starts.push((id, at));
                id
            }
            None => {
                single.clear();
                encode_into(&mut single, node.head, children, key, value)?;
                let id = store.write_new_obj_from_bytes(&single)?;
                created.push(id);
                id
            }
        };
        ids.push(id);
    }
    Ok(ids)
}
