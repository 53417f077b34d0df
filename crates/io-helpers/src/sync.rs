//! The one place that chooses synchronization primitives.
//!
//! Normal builds use `parking_lot` locks and `std` atomics, threads and thread-locals; builds
//! with `RUSTFLAGS="--cfg loom"` use loom's, so the same lock protocols run under loom's model
//! checker. Only this module reads `cfg(loom)`. Every bob crate takes its locks from here.
//!
//! The API is the small common subset: `lock()`, `read()` and `write()` return guards directly
//! (a poisoned loom lock is entered anyway, like a `parking_lot` lock), and `Condvar::wait`
//! takes a guard by value and gives it back. `Condvar::wait_until` times out at once under
//! loom (its time does not pass), so a protocol must be correct whatever such a wait returns.
//! [`SetOnce`] is a `OnceLock` that clones cheaply; its cell is loom's under `cfg(loom)`, so
//! loom checks that every read of its value is ordered after the write.

#[cfg(not(loom))]
mod imp {
    pub use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
    pub use std::sync::{Arc, atomic};
    pub use std::{thread, thread_local};

    /// A condition variable paired with [`Mutex`].
    #[derive(Debug, Default)]
    pub struct Condvar(parking_lot::Condvar);

    impl Condvar {
        /// Creates a condition variable with no waiters.
        pub fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }

        /// Releases `guard`, waits for a notification, and re-acquires the lock.
        /// Wake-ups may be spurious: callers re-check their condition in a loop.
        pub fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }

        /// Like [`wait`](Self::wait), but returns at `deadline` at the latest; `true` with the
        /// guard if the deadline passed.
        pub fn wait_until<'a, T>(
            &self,
            mut guard: MutexGuard<'a, T>,
            deadline: std::time::Instant,
        ) -> (MutexGuard<'a, T>, bool) {
            let timed_out = self.0.wait_until(&mut guard, deadline).timed_out();
            (guard, timed_out)
        }

        /// Wakes one waiter, if any.
        pub fn notify_one(&self) {
            self.0.notify_one();
        }

        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(loom)]
mod imp {
    pub use loom::sync::{Arc, MutexGuard, RwLockReadGuard, RwLockWriteGuard, atomic};
    pub use loom::{thread, thread_local};

    /// A mutual-exclusion lock (loom's, under `cfg(loom)`).
    #[derive(Debug)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        /// Creates an unlocked mutex holding `value`.
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        /// Acquires the lock, blocking until it is free.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// Acquires the lock if it is free, without blocking.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            match self.0.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }

        /// Consumes the mutex and returns the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// A reader/writer lock (loom's, under `cfg(loom)`).
    #[derive(Debug)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        /// Creates an unlocked lock holding `value`.
        pub fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        /// Acquires shared access.
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// Acquires exclusive access.
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// Consumes the lock and returns the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// A condition variable paired with [`Mutex`] (loom's, under `cfg(loom)`).
    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        /// Creates a condition variable with no waiters.
        pub fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        /// Releases `guard`, waits for a notification, and re-acquires the lock.
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// Under loom time does not pass: the deadline has always passed, so this returns at
        /// once (`true`), the guard still held. A protocol must not depend on the wait.
        pub fn wait_until<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            _deadline: std::time::Instant,
        ) -> (MutexGuard<'a, T>, bool) {
            (guard, true)
        }

        /// Wakes one waiter, if any.
        pub fn notify_one(&self) {
            self.0.notify_one();
        }

        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub use imp::*;

/// The cell behind [`SetOnce`]: `std`'s, or loom's under `cfg(loom)` (which checks every
/// access against the atomics that order it).
#[cfg(not(loom))]
mod cell {
    pub(super) struct Cell<T>(std::cell::UnsafeCell<T>);

    impl<T> Cell<T> {
        pub(super) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }

        pub(super) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut()
        }
    }
}

#[cfg(loom)]
mod cell {
    pub(super) struct Cell<T>(loom::cell::UnsafeCell<T>);

    impl<T> Cell<T> {
        pub(super) fn new(value: T) -> Self {
            Self(loom::cell::UnsafeCell::new(value))
        }

        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            self.0.with(f)
        }

        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            self.0.with_mut(f)
        }

        pub(super) fn get_mut(&mut self) -> &mut T {
            // SAFETY: `&mut self` is exclusive: no other access to the value can happen.
            self.0.with_mut(|p| unsafe { &mut *p })
        }
    }
}

/// A value set once, by the first of racing setters (as `std::sync::OnceLock`), that is
/// cloned without going through a `Once` (a plain atomic load) and read with one Acquire
/// load. A setter that loses waits (yielding) until the winner's value is in, which takes
/// the winner a write of the value: nothing between its claim and its publication can panic.
pub struct SetOnce<T> {
    /// [`EMPTY`], [`WRITING`] (the winner stores the value) or [`SET`].
    state: atomic::AtomicU8,
    value: cell::Cell<Option<T>>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const SET: u8 = 2;

// SAFETY: `value` is written through `&self` by one thread only, the one that moved `state`
// from EMPTY to WRITING, before it stores SET (Release); it is read through `&self` only after
// a load that sees SET (Acquire), and written again only through `&mut self`. Sharing the cell
// therefore shares `&T` between threads (needs `T: Sync`) and lets another thread's `set`
// move a `T` in and a loser take its own back (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    /// An empty cell.
    pub fn new() -> Self {
        Self { state: atomic::AtomicU8::new(EMPTY), value: cell::Cell::new(None) }
    }

    /// A cell holding `value`.
    pub fn with(value: T) -> Self {
        Self { state: atomic::AtomicU8::new(SET), value: cell::Cell::new(Some(value)) }
    }

    /// The value, once set.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(atomic::Ordering::Acquire) != SET {
            return None;
        }
        // SAFETY: SET was stored (Release, seen by the Acquire above) after the value was
        // written, and the value is never written again while the cell is shared.
        self.value.with(|p| unsafe { (*p).as_ref() })
    }

    /// Sets the value if no one has; otherwise waits until the one who did is done and
    /// returns `value` back.
    pub fn set(&self, value: T) -> Result<(), T> {
        let claimed = self.state.compare_exchange(
            EMPTY,
            WRITING,
            atomic::Ordering::Acquire,
            atomic::Ordering::Acquire,
        );
        if claimed.is_err() {
            while self.state.load(atomic::Ordering::Acquire) != SET {
                thread::yield_now();
            }
            return Err(value);
        }
        // SAFETY: this thread moved the state to WRITING: no other thread touches the value
        // until it sees SET, stored below. Storing over `None` drops nothing and cannot panic.
        self.value.with_mut(|p| unsafe { *p = Some(value) });
        self.state.store(SET, atomic::Ordering::Release);
        Ok(())
    }

    /// The value, for a change, with the cell held exclusively.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.value.get_mut().as_mut()
    }
}

impl<T> Default for SetOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Clone for SetOnce<T> {
    fn clone(&self) -> Self {
        match self.get() {
            Some(value) => Self::with(value.clone()),
            None => Self::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SetOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SetOnce").field(&self.get()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod set_once_tests {
    use super::SetOnce;

    /// Threads racing to set a cell all see one value, the winner's; a clone of a set cell
    /// holds it too, a clone of an empty one is empty, and `get_mut` reaches it.
    #[test]
    fn a_set_once_cell_is_set_once_and_clones_hold_the_value() {
        let cell = SetOnce::new();
        assert!(cell.get().is_none() && cell.clone().get().is_none());
        let outcomes: Vec<(bool, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u64)
                .map(|i| {
                    let cell = &cell;
                    scope.spawn(move || {
                        let won = cell.set(std::sync::Arc::new(i)).is_ok();
                        (won, **cell.get().expect("set"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outcomes.iter().filter(|o| o.0).count(), 1);
        assert!(outcomes.iter().all(|o| o.1 == outcomes[0].1));
        let mut copy = cell.clone();
        assert!(std::sync::Arc::ptr_eq(copy.get().unwrap(), cell.get().unwrap()));
        *copy.get_mut().unwrap() = std::sync::Arc::new(99);
        assert_eq!(**copy.get().unwrap(), 99);
        assert_eq!(**cell.get().unwrap(), outcomes[0].1);
    }
}

#[cfg(all(test, loom))]
mod set_once_loom {
    use super::{Arc, SetOnce, thread};

    /// Two setters racing and a reader, under loom (which sees the cell): the winner's write
    /// happens before every read that sees it, the loser gets its value back once it is in,
    /// and nothing hangs.
    #[test]
    fn loom_set_once_publishes_the_winners_value() {
        loom::model(|| {
            let cell = Arc::new(SetOnce::new());
            let racers: Vec<_> = (1..=2u64)
                .map(|i| {
                    let cell = Arc::clone(&cell);
                    thread::spawn(move || (cell.set(i).is_ok(), *cell.get().expect("set")))
                })
                .collect();
            if let Some(&v) = cell.get() {
                assert!(v == 1 || v == 2);
            }
            let results: Vec<(bool, u64)> =
                racers.into_iter().map(|t| t.join().expect("no panic")).collect();
            assert_eq!(results.iter().filter(|r| r.0).count(), 1, "one winner");
            assert_eq!(results[0].1, results[1].1);
            assert_eq!(cell.get().copied(), Some(results[0].1));
        });
    }
}
