//! The operating-system helpers a user of a low-latency bus needs for their own threads, the same
//! ones the engine uses: one copy of each, checked wrappers over Linux system calls that never
//! panic.
//!
//! - Thread placement: [`set_thread_affinity`] pins the calling thread to a list of CPUs,
//!   [`thread_affinity`] reads the list it may run on (save it before pinning to restore it).
//! - Clocks: [`monotonic_ns`] (`CLOCK_MONOTONIC`, one clock for all processes of one boot: take a
//!   stamp in one process and subtract it in another), [`realtime_ns`] (`CLOCK_REALTIME`, what
//!   record timestamps use), both vDSO reads without a system call, and [`RecordClock`], a cheaper
//!   process-local wall clock for deadlines and intervals.
//! - Futex: [`futex_wait`] and [`futex_wake`] on an [`AtomicU32`](std::sync::atomic::AtomicU32)
//!   that may live in a mapping shared between processes (shared futexes, not private), with the
//!   wait's outcome as [`FutexWaitOutcome`].
//! - Process liveness: [`process_start_time`] and [`process_alive`] identify a process by pid and
//!   start time, so a reused pid is not taken for the process that died; [`is_locked`] says
//!   whether an open file holds the write lock (`F_OFD_GETLK`, never taken) on a file such as a
//!   queue's `writer.lock` or a named reader's meta.
//! - Durability: [`fsync_path`] makes a file's allocation, or a directory's entries, durable.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use chronicle_core::os;
//!
//! # fn main() -> std::io::Result<()> {
//! let saved = os::thread_affinity()?;
//! os::set_thread_affinity(&[2])?;
//! let t0 = os::monotonic_ns();
//! let word = AtomicU32::new(0);
//! // Returns at once: the word no longer holds 1.
//! let outcome = os::futex_wait(&word, 1, Some(std::time::Duration::from_millis(1)));
//! assert_eq!(outcome, os::FutexWaitOutcome::ValueChanged);
//! word.store(1, Ordering::Release);
//! os::futex_wake(&word, i32::MAX);
//! println!("{} ns", os::monotonic_ns() - t0);
//! os::set_thread_affinity(&saved)?;
//! # Ok(()) }
//! ```

pub use crate::sys::{
    FutexWaitOutcome, RecordClock, fsync_path, futex_wait, futex_wake, is_locked, monotonic_ns,
    process_alive, process_start_time, realtime_ns, set_thread_affinity, thread_affinity,
};
