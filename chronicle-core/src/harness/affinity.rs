//! Pinning the calling thread to one CPU with `sched_setaffinity`.
//!
//! Pinning failures are not fatal for a measurement: the harness records the outcome in
//! the report ([`PinOutcome`]) and carries on unpinned.

use std::fmt;
use std::io;

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

/// A saved CPU mask of the calling thread; [`restore`](Self::restore) puts it back.
#[derive(Debug)]
pub struct SavedAffinity {
    set: libc::cpu_set_t,
}

impl SavedAffinity {
    /// Reads the calling thread's current mask.
    ///
    /// # Errors
    /// The OS error from `sched_getaffinity`.
    pub fn current() -> io::Result<Self> {
        // SAFETY: `cpu_set_t` is a plain bit array; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable `cpu_set_t` and the size passed matches it;
        // pid 0 means the calling thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { set })
    }

    /// Re-applies the saved mask to the calling thread.
    ///
    /// # Errors
    /// The OS error from `sched_setaffinity`.
    pub fn restore(&self) -> io::Result<()> {
        set_affinity(&self.set)
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` points to a valid `cpu_set_t` of the size passed; pid 0 means the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `core`.
///
/// # Errors
/// `InvalidInput` if `core` does not fit a `cpu_set_t`, otherwise the OS error (e.g.
/// `EINVAL` when the core does not exist or is outside the allowed cpuset).
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    let bits = std::mem::size_of::<libc::cpu_set_t>() * 8;
    if core >= bits {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is beyond the cpu_set_t capacity of {bits}"),
        ));
    }
    // SAFETY: all-zero is a valid empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` is below the bit capacity of `set` (checked above), so CPU_SET writes
    // inside the set.
    unsafe { libc::CPU_SET(core, &mut set) };
    set_affinity(&set)
}

/// Pins the calling thread if `core` is `Some`, turning the result into a [`PinOutcome`].
#[must_use]
pub fn try_pin(core: Option<usize>) -> PinOutcome {
    match core {
        None => PinOutcome::NotRequested,
        Some(core) => match pin_current_thread(core) {
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
