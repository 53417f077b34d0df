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
