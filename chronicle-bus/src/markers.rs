//! READY and LEASE markers of a strategy directory.
//!
//! Both are small ASCII text files, written to a temporary file in the same directory
//! (`.<NAME>.tmp.<pid>.<n>`, created with `O_EXCL | O_NOFOLLOW`) and renamed into place, so a
//! reader sees either the old complete file or the new complete file, never a partial one.
//! There is no fsync: after a power cut a marker may also be missing, empty or zero-filled,
//! which readers report as `BadMarker`; markers describe live processes, which a power cut
//! ends, and a strategy rewrites both when it reopens (DESIGN.md section 8).
//!
//! ```text
//! READY                                  LEASE
//! chronicle-ready 1                      chronicle-lease 1
//! queue_uid <16 hex digits>              pid <decimal>
//! created_ns <decimal>                   start_time <decimal, clock ticks since boot>
//! pid <decimal>                          heartbeat_ns <decimal, CLOCK_REALTIME>
//!                                        expiry_ns <decimal, CLOCK_REALTIME>
//! ```
//!
//! Markers are parsed as untrusted input: opened with `O_NOFOLLOW` (a symlink is refused, never
//! followed), required to be a regular file of at most [`MAX_MARKER_LEN`] bytes, first line
//! exact, each known key exactly once (unknown keys are ignored for forward compatibility),
//! numbers strictly decimal (hex for `queue_uid`). Anything else is [`BusError::BadMarker`];
//! parsing never panics. A marker contains no path, so it cannot point outside the bus.
//!
//! READY is written by [`StrategyEndpoints::mark_ready`](crate::StrategyEndpoints::mark_ready)
//! only after the order queue exists and is fully initialized; it names the queue's uid so a
//! queue re-created from scratch under the same strategy id is recognised as a different
//! endpoint.
//!
//! A lease is **stale** when its holder is gone (no process with that pid, or one with a
//! different start time: the pid was reused) or when it has expired (`now > expiry_ns`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{BusError, Result};

/// Largest marker file accepted.
pub const MAX_MARKER_LEN: u64 = 1024;

const READY_HEADER: &str = "chronicle-ready 1";
const LEASE_HEADER: &str = "chronicle-lease 1";

/// Contents of a READY marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Uid of the order queue (from its `queue.meta`).
    pub queue_uid: u64,
    /// When READY was written (ns since the Unix epoch).
    pub created_ns: u64,
    /// Pid of the process that wrote it.
    pub pid: u32,
}

/// Contents of a LEASE marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Holder's pid.
    pub pid: u32,
    /// Holder's start time (clock ticks since boot, `/proc/<pid>/stat` field 22): with the pid
    /// it identifies the process across pid reuse.
    pub start_time: u64,
    /// Last renewal (ns since the Unix epoch).
    pub heartbeat_ns: u64,
    /// The lease is void after this (ns since the Unix epoch).
    pub expiry_ns: u64,
}

/// Liveness of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseState {
    /// Holder alive and not expired.
    Live,
    /// The holder process is gone (pid absent, or reused by another process).
    HolderGone,
    /// The holder did not renew in time.
    Expired,
}

impl Lease {
    /// A lease for the current process, renewed now, valid for `ttl_ns`.
    pub fn for_current_process(now_ns: u64, ttl_ns: u64) -> Lease {
        let pid = std::process::id();
        Lease {
            pid,
            start_time: chronicle_core::os::process_start_time(pid).unwrap_or(0),
            heartbeat_ns: now_ns,
            expiry_ns: now_ns.saturating_add(ttl_ns),
        }
    }

    /// The lease's state at `now_ns` (checks `/proc/<pid>/stat`).
    pub fn state(&self, now_ns: u64) -> LeaseState {
        if !chronicle_core::os::process_alive(self.pid, Some(self.start_time)) {
            LeaseState::HolderGone
        } else if now_ns > self.expiry_ns {
            LeaseState::Expired
        } else {
            LeaseState::Live
        }
    }

    /// True when the lease is not [`LeaseState::Live`].
    pub fn is_stale(&self, now_ns: u64) -> bool {
        self.state(now_ns) != LeaseState::Live
    }

    fn render(&self) -> String {
        format!(
            "{LEASE_HEADER}\npid {}\nstart_time {}\nheartbeat_ns {}\nexpiry_ns {}\n",
            self.pid, self.start_time, self.heartbeat_ns, self.expiry_ns
        )
    }

    /// Parses LEASE contents.
    pub fn parse(text: &str, path: &Path) -> Result<Lease> {
        let f = fields(
            text,
            LEASE_HEADER,
            &["pid", "start_time", "heartbeat_ns", "expiry_ns"],
            path,
        )?;
        let [pid, start_time, heartbeat_ns, expiry_ns] = f;
        Ok(Lease {
            pid: u32::try_from(dec(pid, path)?)
                .map_err(|_| BusError::marker(path, "pid out of range"))?,
            start_time: dec(start_time, path)?,
            heartbeat_ns: dec(heartbeat_ns, path)?,
            expiry_ns: dec(expiry_ns, path)?,
        })
    }

    /// Reads and parses the LEASE at `path` (see the module docs for the checks).
    pub fn read(path: &Path) -> Result<Lease> {
        let text = read_marker(path)?;
        Lease::parse(&text, path)
    }

    /// Writes the lease to `path` atomically (temporary file + rename).
    pub fn write(&self, path: &Path, mode: u32) -> Result<()> {
        write_atomic(path, self.render().as_bytes(), mode)
    }
}

impl Ready {
    fn render(&self) -> String {
        format!(
            "{READY_HEADER}\nqueue_uid {:016x}\ncreated_ns {}\npid {}\n",
            self.queue_uid, self.created_ns, self.pid
        )
    }

    /// Parses READY contents.
    pub fn parse(text: &str, path: &Path) -> Result<Ready> {
        let [uid, created, pid] = fields(
            text,
            READY_HEADER,
            &["queue_uid", "created_ns", "pid"],
            path,
        )?;
        if uid.is_empty() || uid.len() > 16 || !uid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BusError::marker(path, "queue_uid is not 1-16 hex digits"));
        }
        let queue_uid =
            u64::from_str_radix(uid, 16).map_err(|_| BusError::marker(path, "bad queue_uid"))?;
        Ok(Ready {
            queue_uid,
            created_ns: dec(created, path)?,
            pid: u32::try_from(dec(pid, path)?)
                .map_err(|_| BusError::marker(path, "pid out of range"))?,
        })
    }

    /// Reads and parses the READY at `path`.
    pub fn read(path: &Path) -> Result<Ready> {
        let text = read_marker(path)?;
        Ready::parse(&text, path)
    }

    /// Writes READY to `path` atomically (temporary file + rename).
    pub fn write(&self, path: &Path, mode: u32) -> Result<()> {
        write_atomic(path, self.render().as_bytes(), mode)
    }
}

/// Extracts the `N` required `key value` fields after the exact header line.
fn fields<'a, const N: usize>(
    text: &'a str,
    header: &str,
    keys: &[&str; N],
    path: &Path,
) -> Result<[&'a str; N]> {
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(BusError::marker(path, "wrong header line"));
    }
    let mut out: [Option<&'a str>; N] = [None; N];
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(' ') else {
            return Err(BusError::marker(path, "line is not 'key value'"));
        };
        if let Some(i) = keys.iter().position(|&want| want == k) {
            match out.get_mut(i) {
                Some(slot @ None) => *slot = Some(v),
                Some(Some(_)) => return Err(BusError::marker(path, "duplicate key")),
                None => return Err(BusError::marker(path, "internal: key index")),
            }
        }
    }
    let mut res: [&'a str; N] = [""; N];
    for (r, o) in res.iter_mut().zip(out) {
        *r = o.ok_or_else(|| BusError::marker(path, "missing key"))?;
    }
    Ok(res)
}

fn dec(v: &str, path: &Path) -> Result<u64> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BusError::marker(path, "value is not a decimal number"));
    }
    v.parse()
        .map_err(|_| BusError::marker(path, "number out of range"))
}

/// Reads a marker: no symlinks, regular file only, bounded size, UTF-8.
pub(crate) fn read_marker(path: &Path) -> Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                BusError::marker(path, "is a symbolic link (refused)")
            } else {
                BusError::io(path, "open", e)
            }
        })?;
    let md = file.metadata().map_err(|e| BusError::io(path, "stat", e))?;
    if !md.file_type().is_file() {
        return Err(BusError::marker(path, "not a regular file"));
    }
    if md.len() > MAX_MARKER_LEN {
        return Err(BusError::marker(
            path,
            "larger than the maximum marker size",
        ));
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    file.take(MAX_MARKER_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| BusError::io(path, "read", e))?;
    if buf.len() as u64 > MAX_MARKER_LEN {
        return Err(BusError::marker(
            path,
            "larger than the maximum marker size",
        ));
    }
    String::from_utf8(buf).map_err(|_| BusError::marker(path, "not UTF-8"))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` via a temporary file in the same directory and rename(2).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| BusError::marker(path, "marker path has no parent"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BusError::marker(path, "marker path has no file name"))?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    let res = (|| -> Result<()> {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| BusError::io(&tmp, "create", e))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| BusError::io(&tmp, "chmod", e))?;
        f.write_all(bytes)
            .map_err(|e| BusError::io(&tmp, "write", e))?;
        chronicle_core::testing::crash::point("marker.before_rename");
        fs::rename(&tmp, path).map_err(|e| BusError::io(path, "rename", e))?;
        chronicle_core::testing::crash::point("marker.after_rename");
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Removes a marker; absent is not an error.
pub(crate) fn remove_marker(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BusError::io(path, "remove", e)),
    }
}

impl Ready {
    /// A READY for queue `queue_uid`, written now by this process.
    pub fn new(queue_uid: u64, now_ns: u64) -> Ready {
        Ready {
            queue_uid,
            created_ns: now_ns,
            pid: std::process::id(),
        }
    }
}
