//! `LockTable`: per-object reader/writer locks, in 64 shards.
//!
//! Each shard is a mutex over a map from object id to `(readers, writer)` plus a condition
//! variable; an id lives in shard `id % 64`, so threads working on different objects rarely
//! touch the same shard. An entry exists only while some thread holds a lock on that object,
//! so the table never grows past the number of locks held.
//!
//! Deadlock freedom: an exclusive lock on several ids is taken all at once or not at all. The
//! shards involved are locked in ascending order; if any id is busy, every shard is released
//! before waiting on the busy one. `all` (for compaction and verification) takes every shard
//! at an instant when no lock is held. And the table knows which locks each thread holds (a
//! thread-local count per table; the guards cannot move to another thread), so the rule that
//! makes waiting safe is enforced, not left to callers: a thread waits for an object lock only
//! when it holds none, or when it holds only shared locks and asks for another shared one.
//! Any other request that would wait (a second writer while holding a guard, a writer while
//! holding a reader, a reader while holding a writer, `all` while holding anything) is
//! refused with `Error::WouldDeadlock` instead. A thread that waits for a shared lock waits
//! for a writer, which by that rule never waits for an object lock; the writers themselves
//! wait only for the store's global lock, disk tokens and the group commit, whose holders
//! wait for no object lock. No cycle of waiting threads can form.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;

use bob_io_helpers::sync::{Condvar, Mutex, MutexGuard, thread_local};
use bob_store_core::{Error, Located, ObjectId};

thread_local! {
    /// The object locks this thread holds, per lock table (by address): (shared guards,
    /// exclusive guards, `all` counted as exclusive).
    #[allow(clippy::missing_const_for_thread_local, reason = "loom's thread_local! takes no const")]
    static HELD: RefCell<Vec<(usize, u32, u32)>> = RefCell::new(Vec::new());
}

/// Keeps a guard on the thread that took it (the per-thread counts must see its release).
type NotSend = PhantomData<*const ()>;

const SHARDS: usize = 64;
/// Cached object locations per shard; a full shard's cache is emptied.
const CACHE_PER_SHARD: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct State {
    readers: u32,
    writer: bool,
}

#[derive(Debug, Default)]
struct Table {
    held: HashMap<u64, State>,
    /// Set while `all` waits or holds: no new lock is granted in this shard.
    draining: bool,
    /// Pins held (`pin`; kept in shard 0 only): `all` waits for them as for object locks.
    pins: usize,
    /// Threads waiting on this shard's condition variable: releases notify only if some.
    waiting: usize,
    /// Where recently read objects of this shard are. An entry changes only under the
    /// object's exclusive lock (`forget`), so a reader holding the shared lock may trust it.
    located: HashMap<u64, Located<'static>>,
}

#[derive(Debug)]
struct Shard {
    table: Mutex<Table>,
    changed: Condvar,
}

impl Shard {
    fn wait<'a>(&self, mut table: MutexGuard<'a, Table>) -> MutexGuard<'a, Table> {
        table.waiting += 1;
        let mut table = self.changed.wait(table);
        table.waiting -= 1;
        table
    }

    fn notify_if_waited(&self, table: MutexGuard<'_, Table>) {
        let wake = table.waiting > 0;
        drop(table);
        if wake {
            self.changed.notify_all();
        }
    }
}

/// Per-object reader/writer locks; see the module docs.
#[derive(Debug)]
pub(crate) struct LockTable {
    shards: Vec<Shard>,
}

impl Default for LockTable {
    fn default() -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard { table: Mutex::new(Table::default()), changed: Condvar::new() })
            .collect();
        Self { shards }
    }
}

fn shard_of(id: u64) -> usize {
    (id % SHARDS as u64) as usize
}

impl LockTable {
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// (shared, exclusive) guards of this table the calling thread holds.
    fn held_here(&self) -> (u32, u32) {
        let key = self.key();
        HELD.try_with(|held| {
            held.borrow().iter().find(|e| e.0 == key).map_or((0, 0), |&(_, s, x)| (s, x))
        })
        .unwrap_or((0, 0))
    }

    /// Whether the calling thread holds any guard of this table.
    pub(crate) fn holds_any(&self) -> bool {
        self.held_here() != (0, 0)
    }

    /// Counts a guard taken (`+1`) or released (`-1`) by the calling thread.
    fn note(&self, shared: i32, exclusive: i32) {
        let key = self.key();
        // `try_with`: a guard dropped while the thread's locals are torn down must still
        // release its lock (the count goes with the thread anyway).
        let _ = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            let at = match held.iter().position(|e| e.0 == key) {
                Some(at) => at,
                None => {
                    held.push((key, 0, 0));
                    held.len() - 1
                }
            };
            let entry = &mut held[at];
            entry.1 = entry.1.saturating_add_signed(shared);
            entry.2 = entry.2.saturating_add_signed(exclusive);
            if entry.1 == 0 && entry.2 == 0 {
                held.swap_remove(at);
            }
        });
    }

    /// The refusal of a wait that could close a cycle.
    fn would_deadlock(&self, asked: &str) -> Error {
        let (shared, exclusive) = self.held_here();
        Error::WouldDeadlock(format!(
            "this thread holds {exclusive} writer and {shared} reader guard(s) of the store and \
             asked for {asked}, which another thread holds: waiting could deadlock; drop the \
             guards first (in update_obj's change, compute, and call the store after)"
        ))
    }

    /// Shared access to `id`: waits while a writer holds it.
    #[cfg(test)]
    pub(crate) fn shared(&self, id: u64) -> SharedLock<'_> {
        self.shared_and_cached(id).expect("no wait that could deadlock").0
    }

    /// Shared access to `id` and, in the same visit to its shard, its cached location.
    /// Waits while a writer holds it, unless this thread holds a writer guard itself
    /// (`WouldDeadlock`).
    pub(crate) fn shared_and_cached(
        &self,
        id: u64,
    ) -> Result<(SharedLock<'_>, Option<Located<'static>>), Error> {
        let may_wait = self.held_here().1 == 0;
        let shard = &self.shards[shard_of(id)];
        let mut table = shard.table.lock();
        while table.draining || table.held.get(&id).is_some_and(|s| s.writer) {
            if !may_wait {
                drop(table);
                return Err(self.would_deadlock(&format!("a reader of object {}", ObjectId(id))));
            }
            table = shard.wait(table);
        }
        table.held.entry(id).or_default().readers += 1;
        let located = table.located.get(&id).cloned();
        drop(table);
        self.note(1, 0);
        Ok((SharedLock { locks: self, id, _thread: PhantomData }, located))
    }

    /// Exclusive access to every id in `ids` (duplicates allowed), all at once. Waits while
    /// any is held, unless this thread holds a guard itself (`WouldDeadlock`).
    pub(crate) fn exclusive(&self, ids: &[u64]) -> Result<ExclusiveLock<'_>, Error> {
        let may_wait = self.held_here() == (0, 0);
        let mut ids = ids.to_vec();
        ids.sort_unstable_by_key(|&id| (shard_of(id), id));
        ids.dedup();
        loop {
            match self.try_exclusive(&ids) {
                Ok(()) => {
                    self.note(0, 1);
                    return Ok(ExclusiveLock { locks: self, ids, _thread: PhantomData });
                }
                Err(_) if !may_wait => {
                    let which = match ids.as_slice() {
                        [id] => format!("a writer of object {}", ObjectId(*id)),
                        _ => format!("writers of {} objects", ids.len()),
                    };
                    return Err(self.would_deadlock(&which));
                }
                Err(busy) => {
                    // Holding nothing, wait for the busy shard to change, then retry.
                    let shard = &self.shards[busy];
                    let table = shard.table.lock();
                    let still_busy = table.draining
                        || ids
                            .iter()
                            .any(|&id| shard_of(id) == busy && table.held.contains_key(&id));
                    if still_busy {
                        drop(shard.wait(table));
                    }
                }
            }
        }
    }

    /// Takes every id in `ids` (sorted by shard) if all are free; else the first busy shard.
    fn try_exclusive(&self, ids: &[u64]) -> Result<(), usize> {
        let mut guards: Vec<(usize, MutexGuard<'_, Table>)> = Vec::new();
        for &id in ids {
            let shard = shard_of(id);
            if guards.last().is_none_or(|(s, _)| *s != shard) {
                guards.push((shard, self.shards[shard].table.lock()));
            }
            let table = &guards.last().expect("just pushed").1;
            if table.draining || table.held.contains_key(&id) {
                return Err(shard);
            }
        }
        let mut guards = guards.into_iter().peekable();
        for &id in ids {
            while guards.peek().is_some_and(|(s, _)| *s != shard_of(id)) {
                guards.next();
            }
            if let Some((_, table)) = guards.peek_mut() {
                table.held.insert(id, State { readers: 0, writer: true });
            }
        }
        Ok(())
    }

    /// Every object, exclusively. With every shard locked (in order) it checks that no lock
    /// is held and only then marks every shard draining, so no thread that already holds a
    /// guard can be left waiting behind it (a reader opening a second guard is safe). Under
    /// load that never leaves a quiet instant it waits. A thread that holds a guard of this
    /// table would wait for itself: `WouldDeadlock`.
    pub(crate) fn all(&self) -> Result<AllLock<'_>, Error> {
        if self.held_here() != (0, 0) {
            return Err(self.would_deadlock("every object (a compaction or a verify)"));
        }
        loop {
            let mut guards: Vec<MutexGuard<'_, Table>> =
                self.shards.iter().map(|s| s.table.lock()).collect();
            match guards.iter().position(|t| t.draining || !t.held.is_empty() || t.pins > 0) {
                None => {
                    for table in &mut guards {
                        table.draining = true;
                    }
                    drop(guards);
                    self.note(0, 1);
                    return Ok(AllLock { locks: self, _thread: PhantomData });
                }
                Some(busy) => {
                    let table = guards.swap_remove(busy);
                    drop(guards);
                    drop(self.shards[busy].wait(table));
                }
            }
        }
    }

    /// A lock on no object that `all` waits for as for an object lock (a commit hold, whose
    /// holder takes object locks while other threads wait for the group commit it holds: a
    /// compaction holding `all` while it waits for the group would otherwise wait for ever).
    /// Waits while `all` is held.
    pub(crate) fn pin(&self) -> Pin<'_> {
        let shard = &self.shards[0];
        let mut table = shard.table.lock();
        while table.draining {
            table = shard.wait(table);
        }
        table.pins += 1;
        Pin { locks: self }
    }

    fn release_pin(&self) {
        let shard = &self.shards[0];
        let mut table = shard.table.lock();
        table.pins -= 1;
        shard.notify_if_waited(table);
    }

    /// Caches where `id` is, for a reader holding its shared lock (buffered objects are not
    /// cached: their bytes are in memory, not at their offset yet).
    pub(crate) fn remember(&self, id: u64, located: &Located<'static>) {
        if located.is_staged() {
            return;
        }
        let mut table = self.shards[shard_of(id)].table.lock();
        if table.located.len() >= CACHE_PER_SHARD {
            table.located.clear();
        }
        table.located.insert(id, located.clone());
    }

    /// Drops the cached location of `id`; called under its exclusive lock before it moves.
    pub(crate) fn forget(&self, id: u64) {
        self.shards[shard_of(id)].table.lock().located.remove(&id);
    }

    /// Drops every cached location; called under `all` before objects move (compaction).
    pub(crate) fn forget_all(&self) {
        for shard in &self.shards {
            shard.table.lock().located.clear();
        }
    }

    /// Locks held now (one per locked object).
    pub(crate) fn held(&self) -> usize {
        self.shards.iter().map(|s| s.table.lock().held.len()).sum()
    }

    fn release_shared(&self, id: u64) {
        self.note(-1, 0);
        let shard = &self.shards[shard_of(id)];
        let mut table = shard.table.lock();
        if let Some(state) = table.held.get_mut(&id) {
            state.readers -= 1;
            if state.readers == 0 && !state.writer {
                table.held.remove(&id);
            }
        }
        shard.notify_if_waited(table);
    }

    fn release_exclusive(&self, ids: &[u64]) {
        self.note(0, -1);
        for &id in ids {
            let shard = &self.shards[shard_of(id)];
            let mut table = shard.table.lock();
            table.held.remove(&id);
            shard.notify_if_waited(table);
        }
    }

    fn release_all(&self) {
        self.note(0, -1);
        for shard in &self.shards {
            let mut table = shard.table.lock();
            table.draining = false;
            shard.notify_if_waited(table);
        }
    }
}

/// Shared access to one object, released on drop.
#[derive(Debug)]
pub(crate) struct SharedLock<'a> {
    locks: &'a LockTable,
    id: u64,
    _thread: NotSend,
}

impl Drop for SharedLock<'_> {
    fn drop(&mut self) {
        self.locks.release_shared(self.id);
    }
}

/// Exclusive access to some objects, released on drop.
#[derive(Debug)]
pub(crate) struct ExclusiveLock<'a> {
    locks: &'a LockTable,
    ids: Vec<u64>,
    _thread: NotSend,
}

impl Drop for ExclusiveLock<'_> {
    fn drop(&mut self) {
        self.locks.release_exclusive(&self.ids);
    }
}

/// A pin ([`LockTable::pin`]), released on drop.
#[derive(Debug)]
pub(crate) struct Pin<'a> {
    locks: &'a LockTable,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.locks.release_pin();
    }
}

/// Exclusive access to every object, released on drop.
#[derive(Debug)]
pub(crate) struct AllLock<'a> {
    locks: &'a LockTable,
    _thread: NotSend,
}

impl Drop for AllLock<'_> {
    fn drop(&mut self) {
        self.locks.release_all();
    }
}
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn readers_share_and_the_table_empties() {
        let locks = LockTable::default();
        let a = locks.shared(1);
        let b = locks.shared(1);
        let c = locks.shared(2);
        assert_eq!(locks.held(), 2);
        drop((a, b, c));
        assert_eq!(locks.held(), 0);
        let w = locks.exclusive(&[3, 1, 3]).unwrap();
        assert_eq!(locks.held(), 2);
        drop(w);
        assert_eq!(locks.held(), 0);
    }

    #[test]
    fn writers_exclude_readers_and_each_other() {
        let locks = Arc::new(LockTable::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let (locks, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        if i % 2 == 0 {
                            let _w = locks.exclusive(&[7, 8]).unwrap();
                            assert_eq!(inside.fetch_add(100, Ordering::SeqCst), 0);
                            inside.fetch_sub(100, Ordering::SeqCst);
                        } else {
                            let _r = locks.shared(8);
                            assert!(inside.fetch_add(1, Ordering::SeqCst) < 100);
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(locks.held(), 0);
    }

    #[test]
    fn lock_all_waits_for_holders_and_blocks_newcomers() {
        let locks = Arc::new(LockTable::default());
        let reader = locks.shared(5);
        let waiter = {
            let locks = locks.clone();
            std::thread::spawn(move || {
                let _all = locks.all().unwrap();
                locks.held()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(reader);
        assert_eq!(waiter.join().unwrap(), 0);
        let _again = locks.shared(5);
    }

    /// Two threads each hold a writer and ask for the other's object: the classic deadlock.
    /// Both requests are refused at once (neither may wait while holding a writer), and
    /// both objects are free again afterwards.
    #[test]
    fn crossed_writers_are_refused_not_deadlocked() {
        let locks = Arc::new(LockTable::default());
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let cross = |mine: u64, theirs: u64| {
            let (locks, barrier) = (locks.clone(), barrier.clone());
            std::thread::spawn(move || {
                let _held = locks.exclusive(&[mine]).unwrap();
                barrier.wait();
                let refused = matches!(locks.exclusive(&[theirs]), Err(Error::WouldDeadlock(_)));
                barrier.wait();
                refused
            })
        };
        let (a, b) = (cross(1, 2), cross(2, 1));
        assert!(a.join().unwrap() && b.join().unwrap());
        assert_eq!(locks.held(), 0);
        drop(locks.exclusive(&[1, 2]).unwrap());
    }

    /// Every request that could close a cycle is refused while it would wait, and allowed
    /// when it need not wait; a reader holding readers waits for a writer as before.
    #[test]
    fn what_a_holder_may_wait_for() {
        let locks = LockTable::default();
        // Holding a writer: a reader of the same object (an update's change reading its own
        // object), an upgrade, `all`.
        let w = locks.exclusive(&[1]).unwrap();
        assert!(matches!(locks.shared_and_cached(1), Err(Error::WouldDeadlock(_))));
        assert!(matches!(locks.exclusive(&[1]), Err(Error::WouldDeadlock(_))));
        assert!(matches!(locks.all(), Err(Error::WouldDeadlock(_))));
        // Free objects are granted even so.
        let r = locks.shared(2);
        let w2 = locks.exclusive(&[3]).unwrap();
        drop((w, r, w2));
        // Holding a reader: a writer of a busy object is refused; another reader is fine.
        let r = locks.shared(1);
        let r_again = locks.shared(1);
        assert!(matches!(locks.exclusive(&[1]), Err(Error::WouldDeadlock(_))));
        drop((r, r_again));
        assert_eq!(locks.held(), 0);
        assert_eq!(locks.held_here(), (0, 0), "the thread's counts are back to zero");
    }

    /// A thread holding only readers waits for another thread's writer, as before.
    #[test]
    fn a_reader_holding_readers_waits_for_a_writer() {
        let locks = Arc::new(LockTable::default());
        let writer = locks.exclusive(&[9]).unwrap();
        let reader = {
            let locks = locks.clone();
            std::thread::spawn(move || {
                let _first = locks.shared(8);
                let _second = locks.shared(9); // waits for the writer
                locks.held()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(writer);
        assert_eq!(reader.join().unwrap(), 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use bob_io_helpers::sync::Arc;
    use bob_io_helpers::sync::atomic::{AtomicUsize, Ordering};
    use bob_io_helpers::sync::thread;

    /// Two batches over overlapping ids, taken in opposite orders, and a reader: no deadlock,
    /// never a reader beside a writer, never two writers of one id.
    #[test]
    fn loom_overlapping_batches_and_a_reader() {
        loom::model(|| {
            let locks = Arc::new(LockTable::default());
            let inside = Arc::new(AtomicUsize::new(0));
            let batch = |ids: [u64; 2], locks: Arc<LockTable>, inside: Arc<AtomicUsize>| {
                thread::spawn(move || {
                    let _w = locks.exclusive(&ids).unwrap();
                    assert_eq!(inside.fetch_add(100, Ordering::SeqCst), 0);
                    inside.fetch_sub(100, Ordering::SeqCst);
                })
            };
            // Ids 2 and 66 share a shard; 1 is in another.
            let a = batch([1, 66], locks.clone(), inside.clone());
            let b = batch([66, 2], locks.clone(), inside.clone());
            {
                let _r = locks.shared(66);
                assert!(inside.fetch_add(1, Ordering::SeqCst) < 100);
                inside.fetch_sub(1, Ordering::SeqCst);
            }
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(locks.held(), 0);
        });
    }

    /// Two threads each hold a writer and ask for the other's object, and a third holds a
    /// reader of one and asks for the other: no interleaving deadlocks; a refused request
    /// is `WouldDeadlock`, and every lock is released at the end.
    #[test]
    fn loom_crossed_requests_never_deadlock() {
        loom::model(|| {
            let locks = Arc::new(LockTable::default());
            let cross = |mine: u64, theirs: u64, locks: Arc<LockTable>| {
                thread::spawn(move || {
                    let _held = locks.exclusive(&[mine]).unwrap();
                    match locks.exclusive(&[theirs]) {
                        Ok(_) | Err(Error::WouldDeadlock(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                })
            };
            let a = cross(1, 2, locks.clone());
            let b = cross(2, 1, locks.clone());
            {
                let _r = locks.shared_and_cached(1).unwrap();
                let _r2 = locks.shared_and_cached(2).unwrap();
            }
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(locks.held(), 0);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod nesting_tests {
    use super::*;
    use std::sync::Arc;

    /// A reader holding one guard opens a second while `all` waits: both finish.
    #[test]
    fn a_nested_reader_is_not_stuck_behind_lock_all() {
        let locks = Arc::new(LockTable::default());
        let first = locks.shared(1);
        let waiter = {
            let locks = locks.clone();
            std::thread::spawn(move || drop(locks.all().unwrap()))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = locks.shared(2); // would deadlock if `all` drained shard 2 already
        drop((first, second));
        waiter.join().unwrap();
        assert_eq!(locks.held(), 0);
    }
}
