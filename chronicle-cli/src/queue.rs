//! Read-only facts about a queue, read from its files without mapping or locking anything, so
//! `inspect` and `doctor` work on damaged queues and never disturb a running writer.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use chronicle_core::layout::{
    CONTROL_FILE_SIZE, CONTROL_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
    WRITER_CLOSED, WRITER_NEVER, WRITER_OPEN,
};
use chronicle_core::{Error, Geometry, QueueDir, Tail, sys};

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
    path.join(chronicle_core::layout::CONTROL_FILE).exists()
}
