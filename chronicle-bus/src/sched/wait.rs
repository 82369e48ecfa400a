//! Parking for blocked consumers: a condition variable behind a sleeper count, so producers pay
//! for a wake-up only when someone sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

/// Sleeping consumers and the condition variable they sleep on.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Waiters {
    /// Sleeps until woken, `deadline` (if any) passes, or a spurious wake-up, unless `ready()` is
    /// already true once this thread is registered as a sleeper.
    ///
    /// No lost wake-up: the sleeper count is raised *before* `ready()` is checked, and both happen
    /// under `lock`, which the condition variable releases only once the thread waits.
    ///
    /// SYNC POINT (SeqCst, the one store-load pair of the scheduler): the sleeper does
    /// `sleepers += 1; load(len)` and a producer does `len += 1; load(sleepers)` (see
    /// `Shared::reserve` and [`Waiters::wake_one`]). Acquire/Release cannot order a store before a
    /// later load of a *different* location; with all four accesses SeqCst, at least one side sees
    /// the other's write: the sleeper sees the task and does not sleep, or the producer sees the
    /// sleeper and takes `lock` to notify, which it can only do once the sleeper waits.
    pub(super) fn sleep_unless(&self, deadline: Option<Instant>, ready: impl FnOnce() -> bool) {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if !ready() {
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        let _woken = self
                            .cv
                            .wait_timeout(guard, left)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
                None => {
                    let _woken = self.cv.wait(guard).unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        // SeqCst for symmetry with the increment; the count is only read by `wake_one`.
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes one sleeper, if any (after a task was added). Costs one load when nobody sleeps.
    #[inline]
    pub(super) fn wake_one(&self) {
        // SYNC POINT: pairs with the increment in `sleep_unless` (see there).
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.cv.notify_one();
        }
    }

    /// Wakes every sleeper (on close). Takes the lock unconditionally, so a consumer that checked
    /// "closed" before the flag was set is already waiting when this notifies.
    pub(super) fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.cv.notify_all();
    }
}
