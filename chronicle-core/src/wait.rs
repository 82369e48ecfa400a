//! Waiting for records: spin, then yield, then sleep on the futex in `queue.meta`.
//!
//! The wake protocol (no lost wake-ups, no system call for the writer while nobody sleeps):
//!
//! ```text
//! sleeper                                   writer
//! w = notify (Acquire)                      store commit word (Release)
//! if record ready: return                   [barrier: compiler-only in asymmetric mode,
//! CAS notify: w -> w | WAITERS (SeqCst)      full fence in fence mode]
//! barrier: membarrier(GLOBAL_EXPEDITED)     if notify & WAITERS:
//!          or fence(SeqCst)                     notify = (counter + 1) << 1   (swap)
//! if record ready: return                       FUTEX_WAKE(all)
//! FUTEX_WAIT(notify, w | WAITERS)
//! ```
//!
//! Either the sleeper's re-check sees the commit, or the writer's load sees WAITERS (the barrier
//! pair forbids both missing). If the writer changed `notify` in between, FUTEX_WAIT returns at
//! once because the value differs. A sleeper that dies leaves WAITERS set: the next commit clears
//! it with one wake call, and later commits pay nothing — a dead reader costs the writer at most
//! one system call.

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicU32;

use crate::layout::{ControlBlock, NOTIFY_WAITERS, WAKE_MODE_ASYMMETRIC};
use crate::sys::{self, FutexWaitOutcome};

/// Spin/yield limits before parking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) spin_limit: u32,
    pub(crate) yield_limit: u32,
}

/// How a wait on a notify word (`wait_on`, `wait_until`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotifyWaitOutcome {
    /// The condition holds.
    Ready,
    /// `until` passed.
    Deadline,
    /// The slice passed (time to check the writer's liveness).
    Slice,
}

/// How a sleeper makes its WAITERS announcement visible to wakers before re-checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// The waker registered for membarrier: issue membarrier(GLOBAL_EXPEDITED).
    Asymmetric,
    /// The waker fences on every commit: a local SeqCst fence pairs with it.
    Fence,
    /// Wakers of both kinds (a bus doorbell): do both.
    Both,
}

/// The barrier matching a queue's writer.
pub(crate) fn queue_barrier(cb: &ControlBlock) -> Barrier {
    if cb.wake_mode.load(Ordering::Relaxed) == WAKE_MODE_ASYMMETRIC {
        Barrier::Asymmetric
    } else {
        Barrier::Fence
    }
}

/// Spins, yields, then sleeps until `ready()` or `until`, or `slice` of sleeping elapsed.
pub(crate) fn wait_until(
    cb: &ControlBlock,
    can_arm: bool,
    backoff: Backoff,
    until: Instant,
    slice: Duration,
    ready: impl FnMut() -> bool,
) -> NotifyWaitOutcome {
    wait_on(
        &cb.notify,
        queue_barrier(cb),
        can_arm,
        backoff,
        until,
        slice,
        ready,
    )
}

/// [`wait_until`] on any futex word that follows the WAITERS protocol.
pub(crate) fn wait_on(
    word: &AtomicU32,
    barrier: Barrier,
    can_arm: bool,
    backoff: Backoff,
    until: Instant,
    slice: Duration,
    mut ready: impl FnMut() -> bool,
) -> NotifyWaitOutcome {
    for _ in 0..backoff.spin_limit {
        if ready() {
            return NotifyWaitOutcome::Ready;
        }
        std::hint::spin_loop();
    }
    for _ in 0..backoff.yield_limit {
        if ready() {
            return NotifyWaitOutcome::Ready;
        }
        if Instant::now() >= until {
            return NotifyWaitOutcome::Deadline;
        }
        std::thread::yield_now();
    }
    let slice_end = Instant::now() + slice;
    loop {
        let now = Instant::now();
        if ready() {
            return NotifyWaitOutcome::Ready;
        }
        if now >= until {
            return NotifyWaitOutcome::Deadline;
        }
        if now >= slice_end {
            return NotifyWaitOutcome::Slice;
        }
        let remaining = until.min(slice_end) - now;
        if !can_arm {
            // Read-only view of queue.meta: we cannot announce ourselves, so poll gently.
            std::thread::sleep(remaining.min(Duration::from_millis(1)));
            continue;
        }
        // SYNC POINT: Acquire pairs with the writer's AcqRel swap in `wake_slow`.
        let w = word.load(Ordering::Acquire);
        let expected = if w & NOTIFY_WAITERS == 0 {
            let armed = w | NOTIFY_WAITERS;
            // SeqCst: this store is the sleeper's half of the Dekker pair with the writer's
            // commit store; see the module docs.
            if word
                .compare_exchange(w, armed, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            armed
        } else {
            w
        };
        let mut timeout = remaining;
        if matches!(barrier, Barrier::Asymmetric | Barrier::Both) {
            // Forces a full barrier on every registered waker's CPU: its commit store is now
            // visible to our re-check, or its next load of the word sees WAITERS.
            if !sys::membarrier_global() && barrier == Barrier::Asymmetric {
                // Should not happen when the writer registered; bound the damage of a miss.
                timeout = timeout.min(Duration::from_millis(1));
            }
        }
        if matches!(barrier, Barrier::Fence | Barrier::Both) {
            fence(Ordering::SeqCst);
        }
        if ready() {
            return NotifyWaitOutcome::Ready;
        }
        match sys::futex_wait(word, expected, Some(timeout)) {
            FutexWaitOutcome::Woken
            | FutexWaitOutcome::ValueChanged
            | FutexWaitOutcome::Interrupted
            | FutexWaitOutcome::TimedOut => {}
        }
    }
}
