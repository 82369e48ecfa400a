//! `CLOCK_MONOTONIC` timestamps and busy-wait pacing.
//!
//! Both ends of a measurement read the same system-wide clock, so a stamp taken in the
//! writer process can be subtracted from a reading taken in the reader process. glibc
//! serves `clock_gettime(CLOCK_MONOTONIC)` from the vDSO, so a reading costs tens of
//! nanoseconds and never enters the kernel.

use std::hint::spin_loop;

/// Nanoseconds on `CLOCK_MONOTONIC`, comparable across processes on the same host.
///
/// Returns 0 in the (never observed on Linux) case that the clock cannot be read.
#[inline(always)]
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call and
    // `CLOCK_MONOTONIC` is a clock id every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    // Monotonic time is non-negative; the casts cannot lose information.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

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
