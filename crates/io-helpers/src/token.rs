//! `DiskTokenManager`: a bound on concurrent disk operations.
//!
//! # Protocol
//! A thread takes a token before disk I/O and drops it after. At most `limit` *threads* hold
//! tokens at once (`limit == 0` means no bound; tokens are still counted). A thread that already
//! holds a token from a manager gets further tokens from it at once, without waiting and without
//! using a slot: a thread performs one operation at a time, so counting threads bounds operations
//! in flight, and a thread never waits while it holds a token. That last property is what rules
//! out deadlock: the only threads that wait hold no tokens, so no cycle of waiters can form,
//! however callers nest guards (a reader guard held while another is opened, say).
//!
//! The slot is released when the thread's last token from the manager is dropped, in any order,
//! including during a panic. Tokens are `!Send` because the accounting is per thread.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

/// Bounds how many threads do disk I/O at once; see the module docs for the protocol.
///
/// ```
/// use bob_io_helpers::DiskTokenManager;
///
/// let tokens = DiskTokenManager::new(2);
/// let outer = tokens.acquire();
/// let nested = tokens.acquire(); // same thread: granted at once, no second slot
/// assert_eq!(tokens.in_use(), 1);
/// drop(outer);
/// drop(nested);
/// assert_eq!(tokens.in_use(), 0);
/// assert_eq!(tokens.peak(), 1);
/// ```
pub struct DiskTokenManager {
    limit: usize,
    /// Threads holding a slot. With a limit it changes only under `waiters`' lock; without
    /// one it is a plain counter and no lock is taken.
    in_use: AtomicUsize,
    peak: AtomicUsize,
    /// Guards waiting for a slot (limited managers only).
    waiters: Mutex<()>,
    freed: Condvar,
}

impl fmt::Debug for DiskTokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskTokenManager")
            .field("limit", &self.limit)
            .field("in_use", &self.in_use())
            .field("peak", &self.peak())
            .finish()
    }
}

crate::sync::thread_local! {
    /// For each manager this thread holds tokens from: (manager address, tokens held).
    /// A manager cannot move or drop while a token borrows it, so its address is a stable key.
    #[allow(clippy::missing_const_for_thread_local, reason = "loom's thread_local! takes no const")]
    static HELD: RefCell<Vec<(usize, usize)>> = RefCell::new(Vec::new());
}

impl DiskTokenManager {
    /// Creates a manager letting at most `limit` threads hold tokens at once; 0 means unlimited.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiters: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Creates a manager with no bound (tokens are still counted).
    pub fn unlimited() -> Self {
        Self::new(0)
    }

    /// The bound given at creation; 0 means unlimited.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Threads holding tokens now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }

    /// The highest number of threads that ever held tokens at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Takes a token, waiting for a free slot unless this thread already holds one.
    pub fn acquire(&self) -> DiskToken<'_> {
        if !self.enter_nested() {
            if self.limit == 0 {
                self.take_slot();
            } else {
                let mut guard = self.waiters.lock();
                while self.in_use.load(Ordering::SeqCst) >= self.limit {
                    guard = self.freed.wait(guard);
                }
                self.take_slot();
            }
        }
        DiskToken { manager: self, _not_send: PhantomData }
    }

    /// Takes a token if one is available without waiting.
    pub fn try_acquire(&self) -> Option<DiskToken<'_>> {
        if !self.enter_nested() {
            if self.limit == 0 {
                self.take_slot();
            } else {
                let _guard = self.waiters.lock();
                if self.in_use.load(Ordering::SeqCst) >= self.limit {
                    return None;
                }
                self.take_slot();
            }
        }
        Some(DiskToken { manager: self, _not_send: PhantomData })
    }

    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// If this thread holds a token already, counts one more and returns true.
    fn enter_nested(&self) -> bool {
        let key = self.key();
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            match held.iter_mut().find(|(k, _)| *k == key) {
                Some((_, depth)) => {
                    *depth += 1;
                    true
                }
                None => false,
            }
        })
    }

    /// Counts this thread in (for a limited manager, under `waiters`' lock).
    fn take_slot(&self) {
        let now = self.in_use.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        HELD.with(|held| held.borrow_mut().push((self.key(), 1)));
    }

    fn release(&self) {
        let key = self.key();
        let last = HELD.with(|held| {
            let mut held = held.borrow_mut();
            let index = held.iter().position(|(k, _)| *k == key);
            // A token exists, so this thread has an entry for its manager.
            let index = index.expect("disk token dropped on a thread that holds none");
            held[index].1 -= 1;
            if held[index].1 == 0 {
                held.swap_remove(index);
                true
            } else {
                false
            }
        });
        if last {
            if self.limit == 0 {
                self.in_use.fetch_sub(1, Ordering::SeqCst);
            } else {
                // Under the lock, so a waiter between its check and its wait cannot miss it.
                let guard = self.waiters.lock();
                self.in_use.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                self.freed.notify_one();
            }
        }
    }
}

/// Permission to do disk I/O, returned to its [`DiskTokenManager`] when dropped.
///
/// Not `Send`: a token is dropped on the thread that took it. A token passed to
/// `std::mem::forget` never returns its slot.
#[must_use = "a token is released as soon as it is dropped"]
pub struct DiskToken<'a> {
    manager: &'a DiskTokenManager,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for DiskToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskToken").field("limit", &self.manager.limit).finish()
    }
}

impl Drop for DiskToken<'_> {
    fn drop(&mut self) {
        self.manager.release();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    #[test]
    fn never_more_than_limit_threads_hold_tokens() {
        let tokens = Arc::new(DiskTokenManager::new(3));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (tokens, inside, most) = (tokens.clone(), inside.clone(), most.clone());
                thread::spawn(move || {
                    for _ in 0..200 {
                        let _token = tokens.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert!(tokens.peak() <= 3);
        assert_eq!(tokens.in_use(), 0);
    }

    #[test]
    fn nested_tokens_on_one_thread_never_wait() {
        let tokens = DiskTokenManager::new(1);
        let a = tokens.acquire();
        let b = tokens.acquire(); // would deadlock if nesting waited for a slot
        let c = tokens.try_acquire().expect("nested try_acquire succeeds");
        assert_eq!(tokens.in_use(), 1);
        // Dropping the first token does not free the slot while others are held.
        drop(a);
        assert_eq!(tokens.in_use(), 1);
        drop(c);
        drop(b);
        assert_eq!(tokens.in_use(), 0);
    }

    #[test]
    fn try_acquire_fails_when_full() {
        let tokens = Arc::new(DiskTokenManager::new(1));
        let _held = tokens.acquire();
        let other = tokens.clone();
        let got = thread::spawn(move || other.try_acquire().is_some()).join().unwrap();
        assert!(!got);
    }

    #[test]
    fn unlimited_counts_but_never_blocks() {
        let tokens = DiskTokenManager::unlimited();
        let held: Vec<_> = (0..4).map(|_| tokens.acquire()).collect();
        assert_eq!(tokens.in_use(), 1, "one thread holds one slot");
        drop(held);
        assert_eq!(tokens.limit(), 0);
    }

    #[test]
    fn token_is_released_when_its_holder_panics() {
        let tokens = Arc::new(DiskTokenManager::new(1));
        let holder = tokens.clone();
        let result = thread::spawn(move || {
            let _token = holder.acquire();
            panic!("holder fails while holding a token");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(tokens.in_use(), 0);
        // A new holder is not blocked.
        let _token = tokens.try_acquire().expect("slot was returned by the panicking holder");
    }

    #[test]
    fn two_managers_are_counted_apart() {
        let first = DiskTokenManager::new(1);
        let second = DiskTokenManager::new(1);
        let _a = first.acquire();
        let _b = second.acquire();
        assert_eq!((first.in_use(), second.in_use()), (1, 1));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;
    use crate::sync::atomic::{AtomicUsize, Ordering};
    use crate::sync::thread;

    /// Three threads contend for one token: never two inside, and no lost wake-up (loom
    /// reports a deadlock if a waiter is never woken).
    #[test]
    fn loom_disk_tokens_bound_holders_and_wake_waiters() {
        loom::model(|| {
            let tokens = Arc::new(DiskTokenManager::new(1));
            let inside = Arc::new(AtomicUsize::new(0));
            let spawn = |tokens: Arc<DiskTokenManager>, inside: Arc<AtomicUsize>| {
                thread::spawn(move || {
                    let _token = tokens.acquire();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            };
            let a = spawn(tokens.clone(), inside.clone());
            let b = spawn(tokens.clone(), inside.clone());
            {
                let _token = tokens.acquire();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                inside.fetch_sub(1, Ordering::SeqCst);
            }
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(tokens.in_use(), 0);
        });
    }

    /// Two slots, three threads, each nesting a second token: at most two threads inside,
    /// nesting never waits, and everyone finishes.
    #[test]
    fn loom_nested_tokens_do_not_deadlock() {
        loom::model(|| {
            let tokens = Arc::new(DiskTokenManager::new(2));
            let inside = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (tokens, inside) = (tokens.clone(), inside.clone());
                    thread::spawn(move || {
                        let outer = tokens.acquire();
                        assert!(inside.fetch_add(1, Ordering::SeqCst) < 2);
                        let inner = tokens.acquire();
                        drop(outer);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(inner);
                    })
                })
                .collect();
            {
                let _only = tokens.acquire();
                assert!(inside.fetch_add(1, Ordering::SeqCst) < 2);
                inside.fetch_sub(1, Ordering::SeqCst);
            }
            for handle in handles {
                handle.join().unwrap();
            }
            assert_eq!(tokens.in_use(), 0);
        });
    }
}
