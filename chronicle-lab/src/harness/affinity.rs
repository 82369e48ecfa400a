//! Pinning the calling thread to one CPU ([`chronicle_core::os::set_thread_affinity`]).
//!
//! Pinning failures are not fatal for a measurement: the harness records the outcome in
//! the report ([`PinOutcome`]) and carries on unpinned.

use std::fmt;
use std::io;

use chronicle_core::os;

/// What happened when a side of the run tried to pin itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinOutcome {
    /// No core was requested.
    NotRequested,
    /// The thread now runs only on this core.
    Pinned(usize),
    /// Pinning to `core` failed; the run continued unpinned.
    Failed {
        /// Requested core.
        core: usize,
        /// The OS error text.
        reason: String,
    },
}

impl fmt::Display for PinOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRequested => f.write_str("unpinned"),
            Self::Pinned(core) => write!(f, "core {core}"),
            Self::Failed { core, reason } => write!(f, "pin to core {core} failed: {reason}"),
        }
    }
}

/// A saved CPU list of the calling thread; [`restore`](Self::restore) puts it back.
#[derive(Debug)]
pub struct SavedAffinity {
    cpus: Vec<usize>,
}

impl SavedAffinity {
    /// Reads the calling thread's current CPU list.
    ///
    /// # Errors
    /// The OS error from `sched_getaffinity`.
    pub fn current() -> io::Result<Self> {
        Ok(Self {
            cpus: os::thread_affinity()?,
        })
    }

    /// Re-applies the saved CPU list to the calling thread.
    ///
    /// # Errors
    /// The OS error from `sched_setaffinity`.
    pub fn restore(&self) -> io::Result<()> {
        os::set_thread_affinity(&self.cpus)
    }
}

/// Pins the calling thread if `core` is `Some`, turning the result into a [`PinOutcome`].
#[must_use]
pub fn try_pin(core: Option<usize>) -> PinOutcome {
    match core {
        None => PinOutcome::NotRequested,
        Some(core) => match os::set_thread_affinity(&[core]) {
            Ok(()) => PinOutcome::Pinned(core),
            Err(e) => PinOutcome::Failed {
                core,
                reason: e.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_and_restore_round_trip() {
        let saved = SavedAffinity::current().unwrap();
        // Core 0 exists on every machine; the pin may still be refused by a cpuset.
        let outcome = try_pin(Some(0));
        assert!(matches!(
            outcome,
            PinOutcome::Pinned(0) | PinOutcome::Failed { .. }
        ));
        saved.restore().unwrap();
    }

    #[test]
    fn absurd_core_is_reported_not_fatal() {
        let saved = SavedAffinity::current().unwrap();
        assert!(matches!(try_pin(Some(1 << 20)), PinOutcome::Failed { .. }));
        saved.restore().unwrap();
    }
}
