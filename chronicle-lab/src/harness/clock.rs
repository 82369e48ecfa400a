//! Busy-wait pacing and the cost of a clock read, on `CLOCK_MONOTONIC`
//! ([`chronicle_core::os::monotonic_ns`]).
//!
//! Both ends of a measurement read the same system-wide clock, so a stamp taken in the
//! writer process can be subtracted from a reading taken in the reader process. glibc
//! serves `clock_gettime(CLOCK_MONOTONIC)` from the vDSO, so a reading costs tens of
//! nanoseconds and never enters the kernel.

use std::hint::spin_loop;

use chronicle_core::os::monotonic_ns;

/// Busy-waits until [`monotonic_ns`] reaches `deadline_ns` and returns the reading that
/// crossed it. Spinning (rather than sleeping) keeps the sender's core hot and gives
/// sub-microsecond pacing accuracy.
#[inline]
pub fn spin_until(deadline_ns: u64) -> u64 {
    loop {
        let now = monotonic_ns();
        if now >= deadline_ns {
            return now;
        }
        spin_loop();
    }
}

/// Estimates the cost of one [`monotonic_ns`] call: the smallest non-zero difference
/// between back-to-back readings over `samples` tries. Printed next to results because
/// every latency sample contains roughly one clock read of overhead.
#[must_use]
pub fn clock_overhead_ns(samples: u32) -> u64 {
    let mut best = u64::MAX;
    for _ in 0..samples {
        let a = monotonic_ns();
        let b = monotonic_ns();
        let d = b.saturating_sub(a);
        if d > 0 && d < best {
            best = d;
        }
    }
    if best == u64::MAX { 0 } else { best }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_backwards() {
        let mut prev = monotonic_ns();
        assert!(prev > 0);
        for _ in 0..10_000 {
            let now = monotonic_ns();
            assert!(now >= prev);
            prev = now;
        }
    }

    #[test]
    fn spin_until_reaches_deadline() {
        let deadline = monotonic_ns() + 200_000;
        assert!(spin_until(deadline) >= deadline);
    }
}
