//! Parking for blocked consumers: a condition variable behind a sleeper count, so producers pay
//! for a wake-up only when someone sleeps.
//!
//! The protocol (no lost wake-up, no SeqCst): a consumer decides to sleep while it holds *every*
//! shard lock, having seen no task and no close; still holding them it takes `lock` and raises
//! `sleepers`, then releases the shard locks and waits (which releases `lock`). A producer pushes
//! under its shard lock and, after unlocking, reads `sleepers`. Either the push came first (the
//! consumer, locking that shard afterwards, sees the task and does not sleep) or the consumer's
//! increment came first (it happened before the consumer released the producer's shard lock, so the
//! producer's read after its own lock/unlock of that shard sees it); the producer then takes `lock`,
//! which it can only get once the consumer waits, and notifies. `close` sets its flag under every
//! shard lock and then notifies all under `lock`, so the same argument covers it.

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
    /// Registers as a sleeper, runs `release_shards` (which must drop the shard locks the caller
    /// holds), and sleeps until woken, `deadline` (if any) passes, or a spurious wake-up.
    ///
    /// The caller holds every shard lock and has checked, under them, that there is nothing to do.
    pub(super) fn sleep(&self, deadline: Option<Instant>, release_shards: impl FnOnce()) {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SYNC POINT: Relaxed is enough: this increment is ordered before every later push by the
        // shard locks the caller still holds (released just below); see the module documentation.
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        release_shards();
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
        // Relaxed: a stale larger count only costs a producer one needless notify.
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes one sleeper, if any. Call after releasing the shard lock under which a task was
    /// pushed. Costs one load when nobody sleeps.
    #[inline]
    pub(super) fn wake_one(&self) {
        // SYNC POINT: Relaxed; the shard lock the caller just released orders this load after any
        // sleeper registration that could miss the task (module documentation).
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.cv.notify_one();
        }
    }

    /// Wakes every sleeper (on close). Takes the lock unconditionally.
    pub(super) fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.cv.notify_all();
    }
}
