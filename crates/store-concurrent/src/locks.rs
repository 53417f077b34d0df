//! `LockTable`: per-object reader/writer locks, in one table.
//!
//! One mutex guards a map from object id to `(readers, writer)`; one condition variable wakes
//! waiters whenever any lock is released. An entry exists only while some thread holds a lock
//! on that object, so the table never grows past the number of locks held.
//!
//! Deadlock freedom: exclusive locks on several objects are taken all at once or not at all
//! (a batch never holds some ids while waiting for others), and `lock_all` (for compaction)
//! first stops new lockers, then waits for the table to drain. So a thread waits only for
//! threads that hold a complete set of locks and wait for nothing but the store's short
//! global lock and disk tokens, which are never held while waiting for an object lock.

use std::collections::HashMap;

use bob_io_helpers::sync::{Condvar, Mutex};

#[derive(Debug, Default, Clone, Copy)]
struct State {
    readers: u32,
    writer: bool,
}

#[derive(Debug, Default)]
struct Table {
    held: HashMap<u64, State>,
    /// Set while `lock_all` waits or holds: no new lock is granted.
    draining: bool,
}

/// Per-object reader/writer locks; see the module docs.
#[derive(Debug)]
pub(crate) struct LockTable {
    table: Mutex<Table>,
    changed: Condvar,
}

impl Default for LockTable {
    fn default() -> Self {
        Self { table: Mutex::new(Table::default()), changed: Condvar::new() }
    }
}

impl LockTable {
    /// Shared access to `id`: waits while a writer holds it.
    pub(crate) fn shared(&self, id: u64) -> SharedLock<'_> {
        let mut table = self.table.lock();
        loop {
            let busy = table.draining || table.held.get(&id).is_some_and(|s| s.writer);
            if !busy {
                table.held.entry(id).or_default().readers += 1;
                return SharedLock { locks: self, id };
            }
            table = self.changed.wait(table);
        }
    }

    /// Exclusive access to every id in `ids` (duplicates allowed), all at once.
    pub(crate) fn exclusive(&self, ids: &[u64]) -> ExclusiveLock<'_> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut table = self.table.lock();
        loop {
            let busy = table.draining || ids.iter().any(|id| table.held.contains_key(id));
            if !busy {
                for &id in &ids {
                    table.held.insert(id, State { readers: 0, writer: true });
                }
                return ExclusiveLock { locks: self, ids };
            }
            table = self.changed.wait(table);
        }
    }

    /// Every object, exclusively: stops new lockers, then waits for all locks to go.
    pub(crate) fn all(&self) -> AllLock<'_> {
        let mut table = self.table.lock();
        while table.draining {
            table = self.changed.wait(table);
        }
        table.draining = true;
        while !table.held.is_empty() {
            table = self.changed.wait(table);
        }
        AllLock { locks: self }
    }

    /// Locks held now (one per locked object).
    pub(crate) fn held(&self) -> usize {
        self.table.lock().held.len()
    }

    fn release_shared(&self, id: u64) {
        let mut table = self.table.lock();
        if let Some(state) = table.held.get_mut(&id) {
            state.readers -= 1;
            if state.readers == 0 && !state.writer {
                table.held.remove(&id);
            }
        }
        drop(table);
        self.changed.notify_all();
    }

    fn release_exclusive(&self, ids: &[u64]) {
        let mut table = self.table.lock();
        for id in ids {
            table.held.remove(id);
        }
        drop(table);
        self.changed.notify_all();
    }

    fn release_all(&self) {
        self.table.lock().draining = false;
        self.changed.notify_all();
    }
}

/// Shared access to one object, released on drop.
#[derive(Debug)]
pub(crate) struct SharedLock<'a> {
    locks: &'a LockTable,
    id: u64,
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
}

impl Drop for ExclusiveLock<'_> {
    fn drop(&mut self) {
        self.locks.release_exclusive(&self.ids);
    }
}

/// Exclusive access to every object, released on drop.
#[derive(Debug)]
pub(crate) struct AllLock<'a> {
    locks: &'a LockTable,
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
        let w = locks.exclusive(&[3, 1, 3]);
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
                            let _w = locks.exclusive(&[7, 8]);
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
                let _all = locks.all();
                locks.held()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(reader);
        assert_eq!(waiter.join().unwrap(), 0);
        let _again = locks.shared(5);
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
                    let _w = locks.exclusive(&ids);
                    assert_eq!(inside.fetch_add(100, Ordering::SeqCst), 0);
                    inside.fetch_sub(100, Ordering::SeqCst);
                })
            };
            let a = batch([1, 2], locks.clone(), inside.clone());
            let b = batch([2, 1], locks.clone(), inside.clone());
            {
                let _r = locks.shared(2);
                assert!(inside.fetch_add(1, Ordering::SeqCst) < 100);
                inside.fetch_sub(1, Ordering::SeqCst);
            }
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(locks.held(), 0);
        });
    }
}
