//! `SharedTreap`: a treap behind a lock, kept within a memory budget by a background thread.
//!
//! The protocol: users lock the treap, work on it and drop the guard; a guard that leaves the
//! treap over its budget wakes the flusher as it drops. The flusher waits on a condition
//! variable until the treap needs a flush or it is told to stop, flushes under the lock and
//! waits again. A flush that cannot reach the budget (changed nodes cannot be unloaded) raises
//! the level at which the treap next asks for one, so the flusher never spins. Dropping the
//! `SharedTreap` (or `into_inner`) stops the flusher and joins it.

use std::ops::{Deref, DerefMut};

use bob_io_helpers::sync::{Arc, Condvar, Mutex, MutexGuard, thread};

use crate::codec::{TreapKey, TreapValue};
use crate::treap::PersistentTreap;

/// What the flusher needs of the value it keeps within budget.
pub(crate) trait Flushable {
    /// Whether a flush is due (over budget, and not known to be stuck there).
    fn flush_due(&self, budget: usize) -> bool;
    /// Unloads what it can toward `budget`.
    fn flush_toward(&mut self, budget: usize);
}

impl<K: TreapKey, V: TreapValue> Flushable for PersistentTreap<K, V> {
    fn flush_due(&self, budget: usize) -> bool {
        self.trim_due(budget)
    }

    fn flush_toward(&mut self, budget: usize) {
        self.trim_now(budget);
    }
}

struct State<T> {
    value: T,
    stop: bool,
    flushes: u64,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    budget: usize,
}

/// The lock protocol, generic so that loom models can drive it with a small stand-in.
pub(crate) struct Background<T: Flushable + Send + 'static> {
    shared: Arc<Shared<T>>,
    flusher: Option<thread::JoinHandle<()>>,
}

impl<T: Flushable + Send + 'static> Background<T> {
    pub(crate) fn spawn(value: T, budget: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { value, stop: false, flushes: 0 }),
            wake: Condvar::new(),
            budget,
        });
        let flusher = {
            let shared = shared.clone();
            thread::spawn(move || flusher(&shared))
        };
        Self { shared, flusher: Some(flusher) }
    }

    pub(crate) fn lock(&self) -> BackgroundGuard<'_, T> {
        BackgroundGuard { guard: Some(self.shared.state.lock()), shared: &self.shared }
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.shared.state.lock().flushes
    }

    fn stop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            // A flusher that panicked has nothing left to clean up; its panic was reported.
            let _ = flusher.join();
        }
    }

    pub(crate) fn into_inner(mut self) -> T {
        self.stop();
        let shared = self.shared.clone();
        drop(self);
        let budget = shared.budget;
        let mut value = match Arc::try_unwrap(shared) {
            Ok(shared) => shared.state.into_inner().value,
            Err(_) => unreachable!("the flusher is joined, so this is the last reference"),
        };
        if value.flush_due(budget) {
            value.flush_toward(budget);
        }
        value
    }
}

impl<T: Flushable + Send + 'static> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn flusher<T: Flushable>(shared: &Shared<T>) {
    let mut state = shared.state.lock();
    loop {
        while !state.stop && !state.value.flush_due(shared.budget) {
            state = shared.wake.wait(state);
        }
        if state.stop {
            return;
        }
        state.value.flush_toward(shared.budget);
        state.flushes += 1;
    }
}

/// Exclusive access; wakes the flusher on drop if the value is over budget.
pub(crate) struct BackgroundGuard<'a, T: Flushable> {
    guard: Option<MutexGuard<'a, State<T>>>,
    shared: &'a Shared<T>,
}

impl<T: Flushable> BackgroundGuard<'_, T> {
    fn state(&self) -> &State<T> {
        self.guard.as_ref().expect("the guard is held until drop")
    }

    fn state_mut(&mut self) -> &mut State<T> {
        self.guard.as_mut().expect("the guard is held until drop")
    }
}

impl<T: Flushable> Drop for BackgroundGuard<'_, T> {
    fn drop(&mut self) {
        let due = self.state().value.flush_due(self.shared.budget);
        drop(self.guard.take());
        if due {
            self.shared.wake.notify_one();
        }
    }
}

/// A [`PersistentTreap`] behind a lock, kept within a memory budget by a background thread.
///
/// [`lock`](Self::lock) gives the treap to one user at a time; when a guard leaves more than
/// the budget of nodes in memory, dropping it wakes the flusher, which unloads least
/// recently used clean subtrees (see [`PersistentTreap::flush`]) while nobody holds the
/// lock. Changed nodes are never unloaded: persist to let the flusher reach the budget.
/// Dropping the `SharedTreap` stops and joins the flusher.
///
/// ```
/// use bob_store_core::{BaseStore, PRIME_OBJECT_ID, PrimeStorer, StoreOptions, Storer};
/// use bob_treap::{PersistentTreap, SharedTreap};
///
/// # fn main() -> bob_treap::Result<()> {
/// let dir = tempfile::tempdir().map_err(bob_store_core::Error::from)?;
/// let mut store = BaseStore::create(&dir.path().join("t.bob"), StoreOptions::default())?;
/// let shared = SharedTreap::new(PersistentTreap::<u64>::new(), 1_000);
/// {
///     let mut tree = shared.lock();
///     for k in 0..10_000 {
///         tree.insert(&store, k, ())?;
///     }
///     tree.batch_persist_with(&mut store, |store, root| {
///         store.prime_object(8)?;
///         let id = root.map_or(0, |r| r.0);
///         Ok(store.write_bytes_to_obj(PRIME_OBJECT_ID, &id.to_le_bytes())?)
///     })?;
/// } // over budget: the flusher wakes
/// let tree = shared.into_inner();
/// assert!(tree.nodes_in_memory() <= 1_000);
/// # Ok(())
/// # }
/// ```
pub struct SharedTreap<K: TreapKey + Send + 'static, V: TreapValue + Send + 'static = ()> {
    inner: Background<PersistentTreap<K, V>>,
}

impl<K: TreapKey + Send + 'static, V: TreapValue + Send + 'static> SharedTreap<K, V> {
    /// Shares `treap` and starts its flusher, which keeps at most `budget` nodes in memory
    /// (unloading down to seven eighths of it when woken).
    pub fn new(treap: PersistentTreap<K, V>, budget: usize) -> Self {
        Self { inner: Background::spawn(treap, budget) }
    }

    /// Exclusive access to the treap until the guard drops.
    pub fn lock(&self) -> TreapGuard<'_, K, V> {
        TreapGuard { inner: self.inner.lock() }
    }

    /// Flushes the background thread has done so far.
    pub fn background_flushes(&self) -> u64 {
        self.inner.flushes()
    }

    /// Stops the flusher and returns the treap, flushed to the budget if a flush was due.
    pub fn into_inner(self) -> PersistentTreap<K, V> {
        self.inner.into_inner()
    }
}

impl<K: TreapKey + Send + 'static, V: TreapValue + Send + 'static> std::fmt::Debug
    for SharedTreap<K, V>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTreap").field("budget", &self.inner.shared.budget).finish()
    }
}

/// Exclusive access to a [`SharedTreap`]'s treap; dereferences to the [`PersistentTreap`].
pub struct TreapGuard<'a, K: TreapKey, V: TreapValue> {
    inner: BackgroundGuard<'a, PersistentTreap<K, V>>,
}

impl<K: TreapKey, V: TreapValue> Deref for TreapGuard<'_, K, V> {
    type Target = PersistentTreap<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.inner.state().value
    }
}

impl<K: TreapKey, V: TreapValue> DerefMut for TreapGuard<'_, K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner.state_mut().value
    }
}

impl<K: TreapKey, V: TreapValue> std::fmt::Debug for TreapGuard<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreapGuard").field("nodes_in_memory", &self.nodes_in_memory()).finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// A stand-in: `clean` nodes can be unloaded, `dirty` ones cannot.
    struct Counter {
        clean: usize,
        dirty: usize,
        retry_above: usize,
    }

    impl Flushable for Counter {
        fn flush_due(&self, budget: usize) -> bool {
            let n = self.clean + self.dirty;
            n > budget && n > self.retry_above
        }

        fn flush_toward(&mut self, budget: usize) {
            self.clean = budget.saturating_sub(self.dirty).min(self.clean);
            let n = self.clean + self.dirty;
            self.retry_above = if n > budget { n } else { 0 };
        }
    }

    /// A user over budget wakes the flusher; dropping the handle stops it whether or not it
    /// ran; nothing deadlocks, and a flush never unloads changed nodes.
    #[test]
    fn loom_flusher_wakes_and_stops() {
        loom::model(|| {
            let shared = Background::spawn(Counter { clean: 0, dirty: 0, retry_above: 0 }, 2);
            {
                let mut guard = shared.lock();
                guard.state_mut().value.clean = 5;
            }
            {
                let mut guard = shared.lock();
                guard.state_mut().value.dirty = 1;
            }
            let counter = shared.into_inner();
            assert_eq!(counter.dirty, 1);
            assert_eq!(counter.clean, 1);
        });
    }

    /// A flusher stuck above budget (only changed nodes left) waits instead of spinning:
    /// loom would report a livelock as a branch explosion.
    #[test]
    fn loom_a_stuck_flusher_waits() {
        loom::model(|| {
            let shared = Background::spawn(Counter { clean: 0, dirty: 0, retry_above: 0 }, 1);
            shared.lock().state_mut().value.dirty = 3;
            drop(shared);
        });
    }
}
