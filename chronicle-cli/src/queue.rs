//! Read-only facts about a queue, read from its files without mapping or locking anything, so
//! `inspect`, `doctor` and `metrics` work on damaged queues and never disturb a running writer.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chronicle_core::testing::layout::{
    CONTROL_FILE_SIZE, CONTROL_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
    WRITER_CLOSED, WRITER_NEVER, WRITER_OPEN,
};
use chronicle_core::{Error, Geometry, History, QueueDir, ReaderInfo, Tail, list_readers, sys};

/// The fields of `queue.meta` (see `chronicle_core::layout`).
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub version: u32,
    pub geometry: Geometry,
    pub created_ns: u64,
    pub tail: Tail,
    pub writer_pid: u32,
    pub writer_state: u32,
    pub oldest_seq: u64,
    /// The history record: rewrites recorded by recovery after a power cut.
    pub history: History,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Reads and validates `queue.meta`. Errors are the engine's own (one sentence naming the file).
pub fn read_meta(dir: &QueueDir) -> Result<Meta, Error> {
    let path = dir.control();
    if !dir.root.exists() {
        return Err(Error::Io {
            path: dir.root.clone(),
            op: "open queue",
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
    }
    if !dir.root.is_dir() {
        return Err(Error::NotAQueue {
            path: dir.root.clone(),
        });
    }
    let mut file = match sys::open_ro_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotAQueue {
                path: dir.root.clone(),
            });
        }
        Err(source) => {
            return Err(Error::Io {
                path,
                op: "open",
                source,
            });
        }
    };
    let mut b = Vec::with_capacity(CONTROL_FILE_SIZE as usize);
    file.read_to_end(&mut b).map_err(|source| Error::Io {
        path: path.clone(),
        op: "read",
        source,
    })?;
    if (b.len() as u64) < CONTROL_FILE_SIZE {
        return Err(Error::Corrupted {
            path,
            offset: b.len() as u64,
            what: "queue.meta is truncated",
        });
    }
    let magic = u64_at(&b, 0);
    if magic == 0 {
        return Err(Error::NotYetInitialized { path });
    }
    if magic != CONTROL_MAGIC {
        return Err(Error::Corrupted {
            path,
            offset: 0,
            what: "bad magic: not a chronicle queue.meta",
        });
    }
    let version = u32_at(&b, 8);
    if version != FORMAT_VERSION {
        return Err(Error::VersionMismatch {
            path,
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let geometry = Geometry {
        segment_size: u64_at(&b, 16),
        max_payload: u32_at(&b, 24),
        index_stride: u32_at(&b, 28),
        queue_uid: u64_at(&b, 40),
        file_mode: u32_at(&b, 48),
    };
    geometry.validate().map_err(|what| Error::Corrupted {
        path: path.clone(),
        offset: 16,
        what,
    })?;
    Ok(Meta {
        version,
        geometry,
        created_ns: u64_at(&b, 32),
        tail: Tail {
            segment: u64_at(&b, 136),
            offset: u64_at(&b, 144),
            next_seq: u64_at(&b, 152),
            last_timestamp_ns: u64_at(&b, 160),
        },
        writer_pid: u32_at(&b, 168),
        writer_state: u32_at(&b, 172),
        oldest_seq: u64_at(&b, 392),
        history: History {
            epoch: u64_at(&b, 56),
            rewritten_from: u64_at(&b, 64),
            rewritten_floor: u64_at(&b, 72),
        },
    })
}

/// First sequence number of a segment, from its header (`None` if unreadable or unpublished).
pub fn segment_base_seq(dir: &QueueDir, id: u64) -> Option<u64> {
    let f = sys::open_ro_nofollow(&dir.segment(id)).ok()?;
    let mut h = [0u8; SEGMENT_HEADER_SIZE as usize];
    f.read_exact_at(&mut h, 0).ok()?;
    (u64_at(&h, 0) == SEGMENT_MAGIC).then(|| u64_at(&h, 40))
}

/// Who holds the writer lock, as far as can be told without taking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// A process holds the OFD lock on `writer.lock` right now.
    pub lock_held: bool,
    /// Pid written in `writer.lock` by the last writer.
    pub lock_pid: Option<u32>,
    /// True when that process is still running (same pid and start time).
    pub pid_alive: Option<bool>,
}

/// Probes `writer.lock`.
pub fn liveness(dir: &QueueDir) -> Liveness {
    let path = dir.lock();
    let Ok(mut f) = sys::open_ro_nofollow(&path) else {
        return Liveness {
            lock_held: false,
            lock_pid: None,
            pid_alive: None,
        };
    };
    let lock_held = sys::is_locked(&f).unwrap_or(false);
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let mut it = text.split_whitespace();
    let lock_pid: Option<u32> = it.next().and_then(|p| p.parse().ok());
    let start: Option<u64> = it.next().and_then(|s| s.parse().ok());
    let pid_alive = lock_pid.map(|p| sys::process_alive(p, start.filter(|&s| s != 0)));
    Liveness {
        lock_held,
        lock_pid,
        pid_alive,
    }
}

/// The writer's state in words, for humans and JSON: `alive`, `closed`, `dead` or `never`.
pub fn writer_status(meta: &Meta, live: &Liveness) -> &'static str {
    if live.lock_held {
        "alive"
    } else {
        match meta.writer_state {
            WRITER_NEVER => "never",
            WRITER_CLOSED => "closed",
            WRITER_OPEN => "dead",
            _ => "unknown",
        }
    }
}

/// Bytes between a reader position and the tail (segments counted whole; approximate across
/// segment boundaries, exact within one).
pub fn lag_bytes(seg_size: u64, from: (u64, u64), to: (u64, u64)) -> u64 {
    let (fs, fo) = from;
    let (ts, to) = to;
    if ts < fs || (ts == fs && to < fo) {
        return 0;
    }
    (ts - fs)
        .saturating_mul(seg_size)
        .saturating_add(to)
        .saturating_sub(fo)
}

/// True when `path` is a queue directory (has `queue.meta`).
pub fn is_queue(path: &Path) -> bool {
    path.join(chronicle_core::testing::layout::CONTROL_FILE)
        .exists()
}

/// Bytes the writer has moved through the log since the queue was created: framing, padding
/// and segment headers included, segments counted whole (the same measure as reader lag).
pub fn appended_bytes(meta: &Meta) -> u64 {
    lag_bytes(
        meta.geometry.segment_size,
        (0, SEGMENT_HEADER_SIZE),
        (meta.tail.segment, meta.tail.offset),
    )
}

/// A named reader's state in words: `active` (its meta is locked by a process), `idle` (its
/// last process still runs) or `gone`.
pub fn reader_state(info: &ReaderInfo) -> &'static str {
    if info.in_use {
        "active"
    } else if sys::process_alive(info.pid, Some(info.start_time)) {
        "idle"
    } else {
        "gone"
    }
}

/// How far a named reader is behind the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// The reader's next sequence number.
    pub next_seq: u64,
    pub records: u64,
    /// See [`lag_bytes`].
    pub bytes: u64,
    /// Between the last record it consumed and the last one appended (0 when caught up).
    pub ns: u64,
}

/// One named reader, as read from its meta file.
#[derive(Debug, Clone)]
pub struct ReaderFacts {
    pub info: ReaderInfo,
    /// `None` until the reader has committed a position.
    pub lag: Option<Lag>,
    pub heartbeat_age_ns: u64,
    /// See [`reader_state`].
    pub state: &'static str,
}

/// What `inspect` and `metrics` report about a queue, gathered in one pass over its files
/// (nothing mapped, nothing locked).
#[derive(Debug, Clone)]
pub struct Facts {
    pub meta: Meta,
    /// Segment ids on disk, ascending.
    pub segments: Vec<u64>,
    /// Their total size on disk.
    pub segment_bytes: u64,
    pub liveness: Liveness,
    /// See [`writer_status`].
    pub writer: &'static str,
    pub readers: Vec<ReaderFacts>,
    /// Reader meta files that could not be read, one sentence each.
    pub reader_errors: Vec<String>,
}

/// Gathers the [`Facts`] of the queue in `dir`, ages taken as of `now` (ns since the epoch).
pub fn gather(dir: &QueueDir, now: u64) -> Result<Facts, Error> {
    let meta = read_meta(dir)?;
    let segments = dir.list_segments()?;
    let segment_bytes = segments
        .iter()
        .filter_map(|id| std::fs::symlink_metadata(dir.segment(*id)).ok())
        .map(|m| m.len())
        .sum();
    let liveness = liveness(dir);
    let tail = meta.tail;
    let mut readers = Vec::new();
    let mut reader_errors = Vec::new();
    for r in list_readers(dir)? {
        match r {
            Ok(info) => readers.push(ReaderFacts {
                lag: info.position.map(|p| {
                    let records = tail.next_seq.saturating_sub(p.next_seq);
                    Lag {
                        next_seq: p.next_seq,
                        records,
                        bytes: lag_bytes(
                            meta.geometry.segment_size,
                            (p.segment, p.offset),
                            (tail.segment, tail.offset),
                        ),
                        ns: if records == 0 {
                            0
                        } else {
                            tail.last_timestamp_ns.saturating_sub(p.timestamp_ns)
                        },
                    }
                }),
                heartbeat_age_ns: now.saturating_sub(info.heartbeat_ns),
                state: reader_state(&info),
                info,
            }),
            Err(e) => reader_errors.push(e.to_string()),
        }
    }
    Ok(Facts {
        writer: writer_status(&meta, &liveness),
        meta,
        segments,
        segment_bytes,
        liveness,
        readers,
        reader_errors,
    })
}

/// What a path given on the command line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Queue,
    Bus,
}

/// The one-sentence refusal of a path this user may not read, with what to do.
pub fn permission_denied(path: &Path) -> anyhow::Error {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    anyhow::anyhow!(
        "{}: permission denied (uid {uid} may not read it or a directory above it); run as its \
         owner or a member of its group, or have read access granted (chmod -R g+rX)",
        path.display()
    )
}

/// Checks that `path` is a directory this user may read (and, if it holds a `queue.meta`,
/// that the file may be read): one sentence saying what is wrong and what to do otherwise.
/// `wants` completes "X is a file, not ..." (e.g. "a queue directory").
pub fn check_dir(path: &Path, wants: &str) -> anyhow::Result<()> {
    if let Some(denied) = denied_path(path) {
        return Err(permission_denied(&denied));
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "{}: no such file or directory (check the path)",
                path.display()
            )
        }
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
        Ok(m) if !m.is_dir() => anyhow::bail!("{} is a file, not {wants}", path.display()),
        Ok(_) => Ok(()),
    }
}

/// Tells a queue from a bus, or says in one sentence why `path` is neither (missing, a file,
/// not readable by this user, or a directory that is neither) and what to pass instead.
pub fn classify(path: &Path) -> anyhow::Result<Target> {
    check_dir(path, "a queue or bus directory")?;
    if is_queue(path) {
        Ok(Target::Queue)
    } else if ["feeds", "strategies", "router"]
        .iter()
        .any(|d| path.join(d).is_dir())
    {
        Ok(Target::Bus)
    } else {
        anyhow::bail!(
            "{} is neither a chronicle queue (no queue.meta) nor a bus (no feeds/, strategies/ or router/): pass a queue directory or a bus root",
            path.display()
        );
    }
}

/// Checks a `--bus` directory of a topology role before it is created or opened: missing is
/// fine (it is created), otherwise it must be a readable directory that is not a queue.
pub fn check_bus_dir(path: &Path) -> anyhow::Result<()> {
    if matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(());
    }
    check_dir(
        path,
        "a bus directory (--bus takes a directory; it is created if missing)",
    )?;
    if is_queue(path) {
        anyhow::bail!(
            "{} is a queue, not a bus: --bus takes a bus root (a directory holding feeds/, strategies/ and router/, created if missing)",
            path.display()
        );
    }
    Ok(())
}

/// Checks that `path` is one queue (for `inspect`, `tail`, `append`): a bus is refused naming
/// one of its queues to pass instead.
pub fn check_queue(path: &Path) -> anyhow::Result<()> {
    check_dir(path, "a queue directory (the directory holding queue.meta)")?;
    if is_queue(path) {
        return Ok(());
    }
    if ["feeds", "strategies", "router"]
        .iter()
        .any(|d| path.join(d).is_dir())
    {
        let example = bus_queues(path).first().map_or_else(
            || format!("{}/feeds/NAME", path.display()),
            |q| q.display().to_string(),
        );
        anyhow::bail!(
            "{} is a bus, not a queue: pass one of its queues (e.g. {example}); `chron-cli doctor` and `metrics` take a whole bus",
            path.display()
        );
    }
    anyhow::bail!(
        "{} is not a chronicle queue (no queue.meta): pass the directory that holds queue.meta",
        path.display()
    )
}

/// Every queue of a bus, in a stable order: feeds, then each strategy's orders and fates, then
/// the router's queues (`router/out`). Symbolic links are not followed.
pub fn bus_queues(root: &Path) -> Vec<PathBuf> {
    let bus = chronicle_bus::BusLayout::new(root);
    let mut v: Vec<PathBuf> = subdirs(&bus.feeds_dir());
    for s in subdirs(&bus.strategies_dir()) {
        v.push(s.join(chronicle_bus::layout::ORDERS));
        v.push(s.join(chronicle_bus::layout::FATES));
    }
    v.extend(subdirs(&bus.router_dir()));
    v.retain(|q| maybe_queue(q));
    v
}

/// True when `path` is a queue, or may be one this user cannot look into: kept in a bus walk
/// (its check then says permission denied), not skipped as if it were not there.
pub fn maybe_queue(path: &Path) -> bool {
    !matches!(
        std::fs::metadata(path.join(chronicle_core::testing::layout::CONTROL_FILE)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    )
}

/// The first of `path`, its listing and its `queue.meta` that this user may not read, if any.
pub fn denied_path(path: &Path) -> Option<PathBuf> {
    let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
    match std::fs::metadata(path) {
        Err(e) if denied(&e) => return Some(path.to_path_buf()),
        Err(_) => return None,
        Ok(m) if !m.is_dir() => return None,
        Ok(_) => {}
    }
    if std::fs::read_dir(path).is_err_and(|e| denied(&e)) {
        return Some(path.to_path_buf());
    }
    let meta = path.join(chronicle_core::testing::layout::CONTROL_FILE);
    std::fs::File::open(&meta)
        .is_err_and(|e| denied(&e))
        .then_some(meta)
}

/// Sub-directories of `dir` (not links, not hidden), sorted; empty if it cannot be read.
pub fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statvfs is valid plain data; `c` is a NUL-terminated path living across
    // the call, and `st` is a live local the kernel fills in.
    let (r, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        let r = libc::statvfs(c.as_ptr(), &mut st);
        (r, st)
    };
    let (avail, frsize): (u64, u64) = (st.f_bavail, st.f_frsize);
    (r == 0).then(|| avail.saturating_mul(frsize))
}
