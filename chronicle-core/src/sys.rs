//! Thin, checked wrappers over the Linux system calls the engine needs.
//!
//! Each wrapper turns `-1/errno` into `io::Error`; none of them panics. What users of the bus need
//! for their own threads is public as [`crate::os`]; the rest is the engine's.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch (vDSO, no system call).
#[inline]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Keeps a clock read and the memory accesses around it in program order: on x86-64 an `LFENCE`
/// (RDTSC, which the vDSO clock reads, is not ordered with later loads by itself; after an
/// `MFENCE`, `LFENCE` also orders it after earlier stores). Elsewhere a full fence.
#[inline]
pub fn clock_fence() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: LFENCE has no preconditions and no effect besides ordering.
        unsafe { core::arch::x86_64::_mm_lfence() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// `CLOCK_REALTIME_COARSE` in nanoseconds: a few ns to read, millisecond resolution. Used for
/// heartbeats.
#[inline]
pub fn realtime_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME_COARSE)
}

/// `CLOCK_MONOTONIC` in nanoseconds; shared by all processes of one boot.
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it. The clocks used
    // here always exist on Linux, and on failure `ts` stays zero, which callers tolerate.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Outcome of a futex wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutexWaitOutcome {
    /// Woken (or spurious wake-up): re-check the condition.
    Woken,
    /// The word no longer held the expected value.
    ValueChanged,
    /// The timeout elapsed.
    TimedOut,
    /// Interrupted by a signal.
    Interrupted,
}

/// `FUTEX_WAIT` (shared, not private: the word lives in a mapping shared between processes).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWaitOutcome {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned AtomicU32 for the duration of the call; the kernel
    // only reads it. `ts_ptr` is null or points at a timespec that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return FutexWaitOutcome::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => FutexWaitOutcome::ValueChanged,
        Some(libc::ETIMEDOUT) => FutexWaitOutcome::TimedOut,
        Some(libc::EINTR) => FutexWaitOutcome::Interrupted,
        _ => FutexWaitOutcome::Woken,
    }
}

/// `FUTEX_WAKE` of up to `count` waiters; returns how many were woken.
pub fn futex_wake(word: &AtomicU32, count: i32) -> usize {
    // SAFETY: `word` is a live AtomicU32; FUTEX_WAKE does not access memory through the pointer
    // beyond using its address as the key.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r < 0 { 0 } else { r as usize }
}

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Registers this process as a target of `membarrier(GLOBAL_EXPEDITED)`. Returns false where the
/// kernel lacks it.
pub fn membarrier_register_global() -> bool {
    // SAFETY: membarrier takes only integer arguments and touches no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0,
            0,
        )
    };
    r == 0
}

/// Issues a full memory barrier on every running thread of every registered process.
pub fn membarrier_global() -> bool {
    // SAFETY: membarrier takes only integer arguments and touches no user memory.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) };
    r == 0
}

/// Allocates `len` bytes of `file` so later writes through a mapping cannot hit ENOSPC (SIGBUS).
pub fn fallocate(file: &File, len: u64) -> io::Result<()> {
    fallocate_range(file, 0, len)
}

/// [`fallocate`] of the bytes `off..off + len` only (the file grows to `off + len` if shorter).
pub fn fallocate_range(file: &File, off: u64, len: u64) -> io::Result<()> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "length too large");
    let (o, l) = (
        libc::off_t::try_from(off).map_err(|_| too_large())?,
        libc::off_t::try_from(len).map_err(|_| too_large())?,
    );
    loop {
        // SAFETY: plain system call on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, o, l) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return fill_zeroes(file, off, len),
            _ => return Err(e),
        }
    }
}

/// Restricts the calling thread to the CPUs in `cpus` (sched_setaffinity).
///
/// # Errors
/// `InvalidInput` for an empty list or a CPU beyond `cpu_set_t`, otherwise the OS error
/// (e.g. `EINVAL` when no listed CPU is allowed).
pub fn set_thread_affinity(cpus: &[usize]) -> io::Result<()> {
    let bits = std::mem::size_of::<libc::cpu_set_t>() * 8;
    if cpus.is_empty() || cpus.iter().any(|&c| c >= bits) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CPU list empty or beyond cpu_set_t",
        ));
    }
    // SAFETY: all-zero is a valid empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is below the bit capacity of `set` (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs the calling thread may run on (sched_getaffinity).
///
/// # Errors
/// The OS error.
pub fn thread_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: all-zero is a valid empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; pid 0 is the
    // calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let bits = std::mem::size_of::<libc::cpu_set_t>() * 8;
    // SAFETY: every index is below the bit capacity of `set`.
    Ok((0..bits)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// fsyncs the file or directory at `path` (opened read-only, without following a link): makes
/// its allocation, or a directory's entries, durable.
pub fn fsync_path(path: &std::path::Path) -> io::Result<()> {
    let file = open_ro_nofollow(path)?;
    file.sync_all()?;
    #[cfg(feature = "power-model")]
    if crate::powercut::enabled() {
        if file.metadata()?.is_file() {
            let bytes = std::fs::read(path)?;
            crate::powercut::record(path, 0, &bytes);
        } else {
            crate::powercut::record_dir(path);
        }
    }
    Ok(())
}

/// Fallback for file systems without fallocate: write the zeroes out.
fn fill_zeroes(file: &File, from: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeroes = vec![0u8; 1 << 16];
    let end = from.saturating_add(len);
    let mut off = from;
    while off < end {
        let n = (end - off).min(zeroes.len() as u64) as usize;
        let chunk = zeroes.get(..n).unwrap_or(&[]);
        file.write_all_at(chunk, off)?;
        off += n as u64;
    }
    file.sync_data()
}

const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Pre-faults a writable shared mapping so the first store to each page takes no fault.
///
/// # Safety
/// `ptr..ptr+len` must be a live, writable mapping owned by the caller, not yet visible to
/// anybody who relies on its contents other than zeroes (the fallback stores zeroes).
pub unsafe fn populate_write(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is a live writable mapping.
    let r = unsafe { libc::madvise(ptr.cast(), len, MADV_POPULATE_WRITE) };
    if r == 0 {
        return;
    }
    // Older kernels: touch every page with a write of the zero it already holds.
    let page = 4096usize;
    let mut off = 0usize;
    while off < len {
        // SAFETY: `off < len`, inside the caller's live writable mapping; the page holds zeroes
        // (fresh, preallocated file) so writing a zero changes nothing.
        unsafe { std::ptr::write_volatile(ptr.add(off), 0u8) };
        off += page;
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`);
/// together with the pid it identifies a process across pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // `rest` starts at field 3 (state); start time is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when a process with this pid exists and, if `start_time` is given, started at that time.
pub fn process_alive(pid: u32, start_time: Option<u64>) -> bool {
    if pid == 0 {
        return false;
    }
    match process_start_time(pid) {
        None => false,
        Some(st) => start_time.is_none_or(|want| want == st),
    }
}

/// Opens `path` read-only without following a symbolic link in its last component: a link
/// planted where a queue file belongs is refused (ELOOP) instead of followed.
pub fn open_ro_nofollow(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` read-write without following a symbolic link in its last component.
pub fn open_rw_nofollow(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// [`open_rw_nofollow`] or [`open_ro_nofollow`], as `writable` says.
pub fn open_nofollow(path: &std::path::Path, writable: bool) -> io::Result<File> {
    if writable {
        open_rw_nofollow(path)
    } else {
        open_ro_nofollow(path)
    }
}

/// Opens `path` read-write, creating it with permission bits `mode` if it is missing (an existing
/// file keeps its contents), without following a symbolic link in its last component.
pub fn open_or_create_nofollow(path: &std::path::Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates `path` read-write with permission bits `mode`; fails if anything (a link included)
/// is already there.
pub fn create_new_nofollow(path: &std::path::Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// This process's pid.
pub fn current_pid() -> u32 {
    std::process::id()
}

fn ofd_lock(file: &File, cmd: libc::c_int, ty: libc::c_short) -> io::Result<libc::flock> {
    // SAFETY: zero is a valid bit pattern for the plain-data `flock` struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // whole file
    loop {
        // SAFETY: `fl` is a valid flock struct living across the call; the fd is ours.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) };
        if r == 0 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Takes an exclusive open-file-description lock on the whole file without blocking. The kernel
/// releases it when the last descriptor of this open file closes, including on process death.
/// Returns `Ok(false)` when another open file holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match ofd_lock(file, libc::F_OFD_SETLK, libc::F_WRLCK as libc::c_short) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Asks whether some open file holds a lock that conflicts with an exclusive lock, without taking
/// one (so probing never disturbs a writer that is starting).
pub fn is_locked(file: &File) -> io::Result<bool> {
    let fl = ofd_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK as libc::c_short)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_never_faults() {
        // Unmapped, null and kernel addresses: a hint, never an access.
        for p in [0usize, 8, 0xdead_0000, usize::MAX - 63] {
            prefetch(p as *const u8, true);
            prefetch(p as *const u8, false);
        }
        let v = [1u8; 64];
        prefetch(v.as_ptr(), false);
        assert_eq!(v[0], 1);
    }

    #[test]
    fn own_start_time_is_readable() {
        let pid = current_pid();
        let st = process_start_time(pid);
        assert!(st.is_some());
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st.map(|s| s + 1)));
        assert!(!process_alive(0, None));
    }

    #[test]
    fn ofd_lock_probe_sees_holder_from_read_only_fd() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let holder = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let probe = File::open(&p).unwrap();
        assert!(!is_locked(&probe).unwrap());
        assert!(try_lock_exclusive(&holder).unwrap());
        assert!(is_locked(&probe).unwrap());
        let other = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert!(
            !try_lock_exclusive(&other).unwrap(),
            "second open file must not get the lock"
        );
        drop(holder);
        assert!(!is_locked(&probe).unwrap());
        assert!(try_lock_exclusive(&other).unwrap());
    }

    #[test]
    fn futex_wait_times_out_and_sees_changed_value() {
        let w = AtomicU32::new(7);
        assert_eq!(
            futex_wait(&w, 8, Some(Duration::from_millis(1))),
            FutexWaitOutcome::ValueChanged
        );
        assert_eq!(
            futex_wait(&w, 7, Some(Duration::from_millis(1))),
            FutexWaitOutcome::TimedOut
        );
        assert_eq!(futex_wake(&w, 1), 0);
    }
}

/// A cheap wall clock for local deadlines and intervals: `CLOCK_REALTIME` extrapolated with the TSC between
/// re-synchronisations (one `clock_gettime` per millisecond of TSC time), on x86-64 hosts whose
/// TSC is invariant (`constant_tsc` and `nonstop_tsc`). Elsewhere it is `clock_gettime`.
///
/// The error between re-synchronisations is the calibration error times at most 1 ms (tens of
/// nanoseconds). Two processes' clocks can therefore disagree by that much: do not use it for
/// timestamps that other processes compare (record stamps use `CLOCK_REALTIME` directly).
#[derive(Debug, Clone)]
pub struct RecordClock {
    base_tsc: u64,
    base_ns: u64,
    /// Nanoseconds per tick, as a 32.32 fixed-point number; 0 disables the TSC path.
    mult: u64,
    resync_ticks: u64,
}

impl RecordClock {
    /// A clock, calibrated once per process (about 2 ms the first time).
    pub fn new() -> Self {
        let (mult, resync_ticks) = *TSC_CALIBRATION.get_or_init(calibrate_tsc);
        let mut c = RecordClock {
            base_tsc: 0,
            base_ns: 0,
            mult,
            resync_ticks,
        };
        c.resync();
        c
    }

    /// Current time in ns since the Unix epoch.
    #[inline]
    pub fn now_ns(&mut self) -> u64 {
        if self.mult == 0 {
            return realtime_ns();
        }
        let d = rdtsc().wrapping_sub(self.base_tsc);
        if d > self.resync_ticks {
            self.resync();
            return self.base_ns;
        }
        // d <= resync_ticks (about 1 ms of ticks) and mult < 2^34 keep the product below 2^64.
        self.base_ns + (d.wrapping_mul(self.mult) >> 32)
    }

    #[cold]
    fn resync(&mut self) {
        self.base_tsc = rdtsc();
        self.base_ns = realtime_ns();
    }
}

impl Default for RecordClock {
    fn default() -> Self {
        Self::new()
    }
}

static TSC_CALIBRATION: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

#[inline]
fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is available on every x86-64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Returns (ns-per-tick in 32.32 fixed point, ticks per millisecond), or (0, 0) when the TSC
/// cannot be trusted as a clock.
fn calibrate_tsc() -> (u64, u64) {
    if !cfg!(target_arch = "x86_64") {
        return (0, 0);
    }
    let flags_ok = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
        s.lines().find(|l| l.starts_with("flags")).is_some_and(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.contains(&"constant_tsc") && f.contains(&"nonstop_tsc")
        })
    });
    if !flags_ok {
        return (0, 0);
    }
    let (t0, n0) = (rdtsc(), monotonic_ns());
    let mut t1;
    let mut n1;
    loop {
        t1 = rdtsc();
        n1 = monotonic_ns();
        if n1.saturating_sub(n0) >= 2_000_000 {
            break;
        }
        std::hint::spin_loop();
    }
    let ticks = t1.wrapping_sub(t0);
    let ns = n1 - n0;
    if ticks == 0 || ticks > ns.saturating_mul(100) {
        return (0, 0);
    }
    let mult = ((u128::from(ns) << 32) / u128::from(ticks)) as u64;
    if mult == 0 || mult >= (1 << 34) {
        return (0, 0);
    }
    let per_ms = ticks.saturating_mul(1_000_000) / ns.max(1);
    (mult, per_ms.max(1))
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn record_clock_tracks_realtime() {
        let mut c = RecordClock::new();
        for _ in 0..100 {
            let a = realtime_ns();
            let t = c.now_ns();
            let b = realtime_ns();
            // Within 1 ms of the system clock (calibration error over <= 1 ms is far smaller).
            assert!(t + 1_000_000 >= a && t <= b + 1_000_000, "{a} {t} {b}");
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
}

/// Cache-line prefetch of `p`: `prefetchw` (fetch for ownership) when `write`, `prefetcht0`
/// otherwise. A prefetch is only a hint: it never faults, whatever `p` points at, and on CPUs
/// without `prefetchw` that encoding executes as a no-op.
#[inline(always)]
pub fn prefetch(p: *const u8, write: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if write {
            // SAFETY: `prefetchw` reads no memory architecturally and cannot fault.
            unsafe {
                std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
            }
        } else {
            // SAFETY: as above for `prefetcht0`.
            unsafe {
                std::arch::asm!("prefetcht0 [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, write);
    }
}
