//! Persisted state of named readers: `readers/<name>.meta`.
//!
//! The position is double-buffered: a commit writes the slot not currently published, then
//! Release-stores the incremented generation. A reader killed mid-commit leaves the previous
//! position intact. A commit is a handful of stores into the mapping: no system call.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::control::{QueueDir, set_mode};
use crate::error::{Error, Result};
use crate::layout::{
    FORMAT_VERSION, READER_MAGIC, READER_META_SIZE, ReaderMetaBlock, check_magic, check_version,
};
use crate::map::Map;
use crate::sys;

/// A reader position: the next record to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Segment holding it.
    pub segment: u64,
    /// Byte offset of it in the segment.
    pub offset: u64,
    /// Timestamp of the last record consumed (0 if none).
    pub timestamp_ns: u64,
}

/// The open meta file of a named reader.
#[derive(Debug)]
pub(crate) struct ReaderMeta {
    _map: Map,
    block: NonNull<ReaderMetaBlock>,
    _file: File,
    path: PathBuf,
}

// SAFETY: `block` points into `_map`, owned and never remapped; the block is all atomics.
unsafe impl Send for ReaderMeta {}

impl ReaderMeta {
    #[inline]
    fn b(&self) -> &ReaderMetaBlock {
        // SAFETY: produced by `Map::view` on `_map` (bounds/alignment checked), which lives as
        // long as `self`.
        unsafe { self.block.as_ref() }
    }

    /// Opens or creates the meta of reader `name`, takes its exclusive lock (one process per
    /// named reader), and returns it with the persisted position, if any, and the queue
    /// history epoch that position is valid under.
    pub(crate) fn open_or_create(
        dir: &QueueDir,
        name: &str,
        queue_uid: u64,
        mode: u32,
    ) -> Result<(ReaderMeta, Option<(Position, u64)>)> {
        let path = dir.reader_meta(name);
        let file = sys::open_or_create_nofollow(&path, mode)
            .map_err(|e| Error::io(&path, "open reader meta", e))?;
        if !sys::try_lock_exclusive(&file).map_err(|e| Error::io(&path, "lock", e))? {
            let pid = read_info(&path).ok().map(|i| i.pid);
            return Err(Error::ReaderInUse { path, pid });
        }
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        let fresh = len == 0;
        if fresh {
            set_mode(&file, &path, mode)?;
            // Allocated, not sparse: a store into a hole of a full file system would be SIGBUS.
            if let Err(e) = sys::fallocate(&file, READER_META_SIZE) {
                // Leave no zero-length meta behind (we hold its lock; nobody else uses it).
                let _ = std::fs::remove_file(&path);
                return Err(crate::Error::space(&path, "allocate", e));
            }
        } else if len < READER_META_SIZE {
            return Err(Error::corrupted(&path, len, "reader meta is truncated"));
        }
        let map = Map::rw(&file, READER_META_SIZE, &path)?;
        let block = map
            .view::<ReaderMetaBlock>(0)
            .ok_or_else(|| Error::corrupted(&path, 0, "reader meta does not fit"))?;
        // SYNC POINT: Acquire pairs with the Release store of the magic below (by whichever
        // process created the file).
        let magic = block.magic.load(Ordering::Acquire);
        let mut position = None;
        if magic == 0 {
            // New, or its creator died before publishing it: (re)initialize. We hold the lock.
            block.version.store(FORMAT_VERSION, Ordering::Relaxed);
            block.meta_size.store(
                std::mem::size_of::<ReaderMetaBlock>() as u32,
                Ordering::Relaxed,
            );
            block
                .created_ns
                .store(sys::realtime_ns(), Ordering::Relaxed);
            block.queue_uid.store(queue_uid, Ordering::Relaxed);
            block.pos_gen.store(0, Ordering::Relaxed);
            // SYNC POINT: publishes the identity fields; pairs with the Acquire above/in
            // `read_info`.
            block.magic.store(READER_MAGIC, Ordering::Release);
        } else {
            validate(block, &path, queue_uid)?;
            position = load_position(block);
        }
        block.pid.store(sys::current_pid(), Ordering::Relaxed);
        block.start_time.store(
            sys::process_start_time(sys::current_pid()).unwrap_or(0),
            Ordering::Relaxed,
        );
        block
            .heartbeat_ns
            .store(sys::realtime_ns(), Ordering::Relaxed);
        let block = NonNull::from(block);
        Ok((
            ReaderMeta {
                _map: map,
                block,
                path: path.clone(),
                _file: file,
            },
            position,
        ))
    }

    /// Makes the meta durable (msync) and its name (fsync of `readers/`): done once, when a
    /// reader is created, so that a power cut leaves it at least its first position rather
    /// than no meta, or a fresh one, that would start over at `ReaderConfig::start` (later
    /// commits are not synced: DESIGN.md section 8).
    pub(crate) fn sync(&self) -> Result<()> {
        self._map.flush_range(0, READER_META_SIZE, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sys::fsync_path(dir).map_err(|e| Error::io(dir, "fsync", e))?;
        }
        Ok(())
    }

    /// Persists `p`, valid under queue history epoch `epoch` (a few stores; no system call).
    #[inline]
    pub(crate) fn store_position(&self, p: &Position, epoch: u64) {
        let b = self.b();
        let gen_now = b.pos_gen.load(Ordering::Relaxed);
        let next = gen_now.wrapping_add(1);
        let [s0, s1] = &b.slots;
        let (slot, slot_epoch) = if next & 1 == 0 {
            (s0, &b.slot_epochs[0])
        } else {
            (s1, &b.slot_epochs[1])
        };
        slot_epoch.store(epoch, Ordering::Relaxed);
        slot.next_seq.store(p.next_seq, Ordering::Relaxed);
        slot.segment.store(p.segment, Ordering::Relaxed);
        slot.offset.store(p.offset, Ordering::Relaxed);
        slot.timestamp_ns.store(p.timestamp_ns, Ordering::Relaxed);
        crate::crash::point("reader.commit.before_gen");
        // SYNC POINT: Release publishes the slot just written; pairs with the Acquire in
        // `load_position`. Until this store, readers of the meta use the other slot.
        b.pos_gen.store(next, Ordering::Release);
    }

    /// Refreshes the heartbeat.
    #[inline]
    pub(crate) fn heartbeat(&self, now_ns: u64) {
        self.b().heartbeat_ns.store(now_ns, Ordering::Relaxed);
    }
}

/// A meta whose magic is not yet stored is being created; any other value is damage.
fn check_reader_magic(block: &ReaderMetaBlock, path: &Path) -> Result<()> {
    let magic = block.magic.load(Ordering::Acquire);
    check_magic(path, magic, READER_MAGIC, "bad reader meta magic")
}

fn validate(block: &ReaderMetaBlock, path: &Path, queue_uid: u64) -> Result<()> {
    check_reader_magic(block, path)?;
    check_version(path, block.version.load(Ordering::Relaxed))?;
    if block.queue_uid.load(Ordering::Relaxed) != queue_uid {
        return Err(Error::corrupted(
            path,
            24,
            "reader meta belongs to another queue",
        ));
    }
    Ok(())
}

/// The committed position and the history epoch it is valid under.
fn load_position(block: &ReaderMetaBlock) -> Option<(Position, u64)> {
    // SYNC POINT: Acquire pairs with the Release in `store_position`.
    let g = block.pos_gen.load(Ordering::Acquire);
    if g == 0 {
        return None;
    }
    let [s0, s1] = &block.slots;
    let (slot, epoch) = if g & 1 == 0 {
        (s0, &block.slot_epochs[0])
    } else {
        (s1, &block.slot_epochs[1])
    };
    Some((
        Position {
            next_seq: slot.next_seq.load(Ordering::Relaxed),
            segment: slot.segment.load(Ordering::Relaxed),
            offset: slot.offset.load(Ordering::Relaxed),
            timestamp_ns: slot.timestamp_ns.load(Ordering::Relaxed),
        },
        epoch.load(Ordering::Relaxed),
    ))
}

/// What a reader meta says, read without taking its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// Reader name (from the file name).
    pub name: String,
    /// Committed position, if any.
    pub position: Option<Position>,
    /// The queue history epoch the committed position is valid under (DESIGN.md section 8).
    pub history_epoch: u64,
    /// Last heartbeat (ns since the Unix epoch).
    pub heartbeat_ns: u64,
    /// Pid of the last process that opened it.
    pub pid: u32,
    /// That process's start time (clock ticks since boot).
    pub start_time: u64,
    /// True when a process holds the reader open right now.
    pub in_use: bool,
}

/// Reads one reader meta file.
pub fn read_info(path: &Path) -> Result<ReaderInfo> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let file = sys::open_ro_nofollow(path).map_err(|e| Error::io(path, "open", e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    if len < READER_META_SIZE {
        return Err(Error::corrupted(path, len, "reader meta is truncated"));
    }
    let map = Map::ro(&file, READER_META_SIZE, path, false)?;
    let block = map
        .view::<ReaderMetaBlock>(0)
        .ok_or_else(|| Error::corrupted(path, 0, "reader meta does not fit"))?;
    check_reader_magic(block, path)?;
    let in_use = sys::is_locked(&file).unwrap_or(false);
    let saved = load_position(block);
    Ok(ReaderInfo {
        name,
        position: saved.map(|s| s.0),
        history_epoch: saved.map_or(0, |s| s.1),
        heartbeat_ns: block.heartbeat_ns.load(Ordering::Relaxed),
        pid: block.pid.load(Ordering::Relaxed),
        start_time: block.start_time.load(Ordering::Relaxed),
        in_use,
    })
}

/// Lists the named readers of a queue (files that cannot be read are returned as errors so a
/// caller like `doctor` can report them).
pub fn list_readers(dir: &QueueDir) -> Result<Vec<std::result::Result<ReaderInfo, Error>>> {
    let mut paths: Vec<PathBuf> = crate::control::entries_of(&dir.readers())?
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "meta"))
        .collect();
    paths.sort();
    Ok(paths.iter().map(|p| read_info(p)).collect())
}

/// Removes a named reader's meta (it stops holding retention back). Absent is not an error.
pub fn remove_reader(dir: &QueueDir, name: &str) -> Result<()> {
    if !crate::config::validate_name(name) {
        return Err(Error::InvalidName {
            name: name.to_string(),
        });
    }
    let path = dir.reader_meta(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, "remove", e)),
    }
}
