//! The queue directory and its control block (`queue.meta`): creation, publication, validation.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::layout::{
    CONTROL_FILE, CONTROL_FILE_SIZE, CONTROL_MAGIC, ControlBlock, FORMAT_VERSION, INDEX_DIR,
    LOCK_FILE, MAX_PAYLOAD_LIMIT, PAD_RESERVE, READERS_DIR, RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE, SEGMENTS_DIR, WRITER_NEVER, check_magic, check_version, record_len,
};
use crate::map::Map;
use crate::sys;

/// Paths of one queue's files.
#[derive(Debug, Clone)]
pub struct QueueDir {
    /// The queue directory.
    pub root: PathBuf,
    /// Accept queue files and directories that any user may write (refused by default:
    /// anyone could then forge records or positions). See DESIGN.md "Access".
    pub allow_world_writable: bool,
}

impl QueueDir {
    /// The queue at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        QueueDir {
            root: root.into(),
            allow_world_writable: false,
        }
    }
    /// `queue.meta`.
    pub fn control(&self) -> PathBuf {
        self.root.join(CONTROL_FILE)
    }
    /// `writer.lock`.
    pub fn lock(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }
    /// `segments/`.
    pub fn segments(&self) -> PathBuf {
        self.root.join(SEGMENTS_DIR)
    }
    /// `index/`.
    pub fn index(&self) -> PathBuf {
        self.root.join(INDEX_DIR)
    }
    /// `readers/`.
    pub fn readers(&self) -> PathBuf {
        self.root.join(READERS_DIR)
    }
    /// Path of segment `id`.
    pub fn segment(&self, id: u64) -> PathBuf {
        self.segments().join(crate::layout::segment_file_name(id))
    }
    /// Path of the index of segment `id`.
    pub fn index_file(&self, id: u64) -> PathBuf {
        self.index().join(crate::layout::index_file_name(id))
    }
    /// Path of the meta file of the named reader.
    pub fn reader_meta(&self, name: &str) -> PathBuf {
        self.readers().join(format!("{name}.meta"))
    }

    /// Ids of all segment files present, ascending.
    pub fn list_segments(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = entries_of(&self.segments())?
            .filter_map(|e| crate::layout::parse_segment_file_name(e.file_name().to_str()?))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Ids of the segment files readers can reach, ascending: the newest segment and the run of
    /// consecutive ids before it. A segment before a gap is one retention removed (it removes
    /// oldest first) that a power cut brought back (its unlink had not reached the disk): no
    /// PAD leads from it to the rest of the queue, so readers ignore it (a position in it is
    /// `PositionLost`, as before the cut) and retention removes it again.
    pub fn list_reachable_segments(&self) -> Result<Vec<u64>> {
        let mut ids = self.list_segments()?;
        ids.drain(..reachable_start(&ids));
        Ok(ids)
    }
}

/// The entries of `dir` that could be read; a directory that does not exist has none (a queue
/// whose writer has not created it yet).
pub(crate) fn entries_of(dir: &Path) -> Result<impl Iterator<Item = fs::DirEntry>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => Some(rd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(dir, "read directory", e)),
    };
    Ok(rd.into_iter().flatten().filter_map(|e| e.ok()))
}

/// Index in `ids` (ascending segment ids) of the first segment readers can reach: the newest
/// and the run of consecutive ids before it (see [`QueueDir::list_reachable_segments`]).
pub(crate) fn reachable_start(ids: &[u64]) -> usize {
    let mut start = ids.len();
    while start > 0 {
        let consecutive =
            start == ids.len() || ids.get(start - 1).map(|&id| id + 1) == ids.get(start).copied();
        if !consecutive {
            break;
        }
        start -= 1;
    }
    start
}

/// Queue geometry, fixed when the queue is created and read back from `queue.meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Size of every segment file in bytes (a multiple of 4096).
    pub segment_size: u64,
    /// Largest payload accepted.
    pub max_payload: u32,
    /// An index entry is written each time the write offset crosses a multiple of this.
    pub index_stride: u32,
    /// Random id tying segments and reader metas to this queue.
    pub queue_uid: u64,
    /// Mode bits of files created in the queue.
    pub file_mode: u32,
}

impl Geometry {
    /// Offset one past the last byte a record may use (PAD room excluded).
    #[inline]
    pub fn data_end(&self) -> u64 {
        self.segment_size - PAD_RESERVE
    }

    /// Checks that the numbers describe a usable queue.
    pub fn validate(&self) -> std::result::Result<(), &'static str> {
        if self.segment_size < 4096 * 4 || self.segment_size % 4096 != 0 {
            return Err("segment_size must be a multiple of 4096 and at least 16 KiB");
        }
        if self.segment_size > (1 << 40) {
            return Err("segment_size must be at most 1 TiB");
        }
        if self.max_payload > MAX_PAYLOAD_LIMIT {
            return Err("max_payload exceeds the format limit");
        }
        if SEGMENT_HEADER_SIZE + record_len(u64::from(self.max_payload)) > self.data_end() {
            return Err("max_payload does not fit in one segment");
        }
        if self.index_stride < 1024 || !self.index_stride.is_power_of_two() {
            return Err("index_stride must be a power of two of at least 1024");
        }
        let _ = RECORD_HEADER_SIZE;
        Ok(())
    }
}

/// Creates a directory (and parents) with the mode matching `file_mode`; a directory this call
/// creates gets exactly that mode whatever the umask. An existing directory is left as it is.
pub(crate) fn create_dir(path: &Path, file_mode: u32) -> Result<()> {
    create_dir_with_mode(path, dir_mode_for(file_mode))
}

/// Creates `readers/`: like the other directories, plus group write when the group may read,
/// with the sticky bit (a reader may create its own meta file but not remove or replace
/// another's) and set-group-ID (metas inherit the queue's group, so the writer can read them).
pub(crate) fn create_readers_dir(path: &Path, file_mode: u32) -> Result<()> {
    let mut mode = dir_mode_for(file_mode);
    if mode & 0o040 != 0 {
        mode |= 0o020 | 0o1000 | 0o2000;
    }
    create_dir_with_mode(path, mode)
}

fn create_dir_with_mode(path: &Path, mode: u32) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => {}
        Err(e) => return Err(Error::io(path, "create directory", e)),
    }
    // The umask applied to mkdir(2); set the intended mode on the directory we made. (A race
    // with another creator of the same directory ends with both setting the same mode.)
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, "chmod", e))
}

/// Refuses `path` if any user may write it (mode o+w), unless `dir.allow_world_writable`.
pub(crate) fn check_not_world_writable(dir: &QueueDir, path: &Path) -> Result<()> {
    if dir.allow_world_writable {
        return Ok(());
    }
    match fs::symlink_metadata(path) {
        // A link's own mode means nothing; the open (O_NOFOLLOW) refuses it with ELOOP.
        Ok(m) if m.file_type().is_symlink() => Ok(()),
        Ok(m) if m.permissions().mode() & 0o002 != 0 => Err(Error::WorldWritable {
            path: path.to_path_buf(),
            mode: m.permissions().mode() & 0o7777,
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "stat", e)),
    }
}

/// Checks the queue directory and its fixed entries (see [`check_not_world_writable`]).
pub(crate) fn check_queue_access(dir: &QueueDir) -> Result<()> {
    for p in [
        dir.root.clone(),
        dir.control(),
        dir.lock(),
        dir.segments(),
        dir.index(),
        dir.readers(),
    ] {
        check_not_world_writable(dir, &p)?;
    }
    Ok(())
}

/// Directory mode matching a file mode: search permission wherever read permission is given.
pub(crate) fn dir_mode_for(file_mode: u32) -> u32 {
    let m = file_mode & 0o777;
    m | ((m & 0o444) >> 2)
}

/// Sets the exact mode of a freshly created file (independent of the umask).
pub(crate) fn set_mode(file: &File, path: &Path, mode: u32) -> Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| Error::io(path, "chmod", e))
}

/// An open control block.
#[derive(Debug)]
pub(crate) struct Control {
    map: Map,
    cb: std::ptr::NonNull<ControlBlock>,
    pub(crate) path: PathBuf,
    pub(crate) geometry: Geometry,
}

// SAFETY: `cb` points into `map`, which `Control` owns and never remaps; the ControlBlock is made
// of atomics, so sharing it between threads is sound.
unsafe impl Send for Control {}
// SAFETY: as above.
unsafe impl Sync for Control {}

impl Control {
    #[inline]
    pub(crate) fn cb(&self) -> &ControlBlock {
        // SAFETY: `cb` was produced by `Map::view::<ControlBlock>(0)` on `self.map` (bounds and
        // alignment checked); the mapping lives as long as `self` and never shrinks.
        unsafe { self.cb.as_ref() }
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.map.is_writable()
    }

    /// Creates `queue.meta` if it does not exist (under the writer lock) and opens it.
    pub(crate) fn create_or_open(dir: &QueueDir, wanted: Geometry) -> Result<Self> {
        let path = dir.control();
        match Self::open(dir, true) {
            Ok(c) => return Ok(c),
            Err(Error::NotAQueue { .. }) => {}
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(Error::NotYetInitialized { .. }) => {
                // A creator died before publishing: we hold the writer lock, so start over.
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(e),
        }
        wanted
            .validate()
            .map_err(|what| Error::InvalidConfig { what })?;
        // Build the file under a temporary name, publish it by rename: openers see either no
        // queue.meta or a complete one.
        let tmp = dir
            .root
            .join(format!(".{CONTROL_FILE}.{}.tmp", sys::current_pid()));
        let _ = fs::remove_file(&tmp);
        let file = sys::create_new_nofollow(&tmp, wanted.file_mode)
            .map_err(|e| Error::io(&tmp, "create", e))?;
        set_mode(&file, &tmp, wanted.file_mode)?;
        // Allocated, not sparse: a store into a hole of a full file system would be SIGBUS.
        sys::fallocate(&file, CONTROL_FILE_SIZE)
            .map_err(|e| crate::Error::space(&tmp, "allocate", e))?;
        let map = Map::rw(&file, CONTROL_FILE_SIZE, &tmp)?;
        {
            let cb = map
                .view::<ControlBlock>(0)
                .ok_or_else(|| Error::corrupted(&tmp, 0, "control block does not fit"))?;
            cb.version.store(FORMAT_VERSION, Ordering::Relaxed);
            cb.control_size.store(
                std::mem::size_of::<ControlBlock>() as u32,
                Ordering::Relaxed,
            );
            cb.segment_size
                .store(wanted.segment_size, Ordering::Relaxed);
            cb.max_payload.store(wanted.max_payload, Ordering::Relaxed);
            cb.index_stride
                .store(wanted.index_stride, Ordering::Relaxed);
            cb.created_ns.store(sys::realtime_ns(), Ordering::Relaxed);
            cb.queue_uid.store(wanted.queue_uid, Ordering::Relaxed);
            cb.file_mode.store(wanted.file_mode, Ordering::Relaxed);
            cb.writer_state.store(WRITER_NEVER, Ordering::Relaxed);
            // A valid (empty) tail until the first writer publishes its own.
            cb.tail_segment.store(0, Ordering::Relaxed);
            cb.tail_offset.store(SEGMENT_HEADER_SIZE, Ordering::Relaxed);
            cb.next_seq.store(0, Ordering::Relaxed);
            cb.oldest_segment.store(0, Ordering::Relaxed);
            cb.oldest_seq.store(0, Ordering::Relaxed);
            // SYNC POINT: Release-store of the magic publishes every field above; pairs with the
            // Acquire load in `Control::open`.
            cb.magic.store(CONTROL_MAGIC, Ordering::Release);
        }
        map.flush_range(0, CONTROL_FILE_SIZE, &tmp)?;
        drop(map);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "rename", e))?;
        Self::open(dir, true)
    }

    /// Opens and validates an existing `queue.meta`. `want_write` maps it read-write (writers,
    /// and readers that sleep on the futex); if that is refused for permissions, a read-only
    /// mapping is used when `want_write` is false... callers pass what they need.
    pub(crate) fn open(dir: &QueueDir, want_write: bool) -> Result<Self> {
        let path = dir.control();
        let (file, writable) = match sys::open_rw_nofollow(&path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !want_write => (
                sys::open_ro_nofollow(&path).map_err(|e| Error::io(&path, "open", e))?,
                false,
            ),
            Err(e) => return Err(open_error(dir, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        check_len(&path, len)?;
        let map = if writable {
            Map::rw(&file, CONTROL_FILE_SIZE, &path)?
        } else {
            Map::ro(&file, CONTROL_FILE_SIZE, &path, false)?
        };
        let cb = map
            .view::<ControlBlock>(0)
            .ok_or_else(|| Error::corrupted(&path, 0, "control block does not fit"))?;
        let geometry = validate(cb, &path)?;
        let cb = std::ptr::NonNull::from(cb);
        Ok(Control {
            map,
            cb,
            path,
            geometry,
        })
    }

    /// Reads the writer tail consistently (seqlock); `None` if the writer kept it busy.
    pub(crate) fn tail(&self) -> Tail {
        let cb = self.cb();
        for _ in 0..1000 {
            // SYNC POINT: Acquire pairs with the writer's final Release store of `tail_lock` in
            // `Writer::publish_tail`: an even value means the fields below are a consistent set.
            let v1 = cb.tail_lock.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let t = tail_fields(cb);
            // Order the field loads before the re-check of the version.
            std::sync::atomic::fence(Ordering::Acquire);
            if cb.tail_lock.load(Ordering::Relaxed) == v1 {
                return t;
            }
        }
        tail_fields(cb)
    }
}

// The decoders below are shared by `Control` (over the mapping) and `probe` (over a private
// copy read with pread): `queue.meta` is parsed in one place.

/// The error for a failed open of `queue.meta` in `dir`: no such directory, a directory that
/// is not a queue, or the open's own error.
pub(crate) fn open_error(dir: &QueueDir, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound && !dir.root.exists() {
        Error::io(&dir.root, "open queue", e)
    } else if e.kind() == io::ErrorKind::NotFound {
        Error::NotAQueue {
            path: dir.root.clone(),
        }
    } else {
        Error::io(dir.control(), "open", e)
    }
}

/// Checks the length of `queue.meta` (`len` bytes): empty is a creator that has not finished,
/// shorter than the format is damage.
pub(crate) fn check_len(path: &Path, len: u64) -> Result<()> {
    if len < CONTROL_FILE_SIZE {
        if len == 0 {
            return Err(Error::NotYetInitialized {
                path: path.to_path_buf(),
            });
        }
        return Err(Error::corrupted(path, len, "queue.meta is truncated"));
    }
    Ok(())
}

/// Validates the identity span of a control block (magic, version, block size, geometry) and
/// returns the queue's geometry.
pub(crate) fn validate(cb: &ControlBlock, path: &Path) -> Result<Geometry> {
    // SYNC POINT: Acquire pairs with the Release store of the magic in `create_or_open`.
    let magic = cb.magic.load(Ordering::Acquire);
    check_magic(
        path,
        magic,
        CONTROL_MAGIC,
        "bad magic: not a chronicle queue.meta",
    )?;
    check_version(path, cb.version.load(Ordering::Relaxed))?;
    if cb.control_size.load(Ordering::Relaxed) as usize != std::mem::size_of::<ControlBlock>() {
        return Err(Error::corrupted(
            path,
            12,
            "control block size does not match",
        ));
    }
    let geometry = Geometry {
        segment_size: cb.segment_size.load(Ordering::Relaxed),
        max_payload: cb.max_payload.load(Ordering::Relaxed),
        index_stride: cb.index_stride.load(Ordering::Relaxed),
        queue_uid: cb.queue_uid.load(Ordering::Relaxed),
        file_mode: cb.file_mode.load(Ordering::Relaxed),
    };
    geometry
        .validate()
        .map_err(|what| Error::corrupted(path, 16, what))?;
    Ok(geometry)
}

/// The tail words of a control block, loaded one by one (callers hold the seqlock: see
/// `Control::tail`).
#[inline(always)]
pub(crate) fn tail_fields(cb: &ControlBlock) -> Tail {
    Tail {
        segment: cb.tail_segment.load(Ordering::Relaxed),
        offset: cb.tail_offset.load(Ordering::Relaxed),
        next_seq: cb.next_seq.load(Ordering::Relaxed),
        last_timestamp_ns: cb.last_timestamp_ns.load(Ordering::Relaxed),
    }
}

/// Reads the history record of a control block. The words change only while a recovering
/// writer (holding the lock) records a rewrite; a reader racing it re-reads until the epoch is
/// stable.
pub(crate) fn history(cb: &ControlBlock) -> History {
    let mut h = History::default();
    for _ in 0..1000 {
        // SYNC POINT: Acquire pairs with the Release store of `history_epoch` in
        // `record_rewrite`: the words below are those stored before it.
        let e = cb.history_epoch.load(Ordering::Acquire);
        h = History {
            epoch: e,
            rewritten_from: cb.rewritten_from.load(Ordering::Relaxed),
            rewritten_floor: cb.rewritten_floor.load(Ordering::Relaxed),
        };
        // Order the word loads before the re-check of the epoch.
        std::sync::atomic::fence(Ordering::Acquire);
        if cb.history_epoch.load(Ordering::Relaxed) == e {
            break;
        }
    }
    h
}

/// The holder recorded in `writer.lock` (`"pid start_time"`, written by the writer that took
/// the lock): its pid and, when known (non-zero), its start time. Either is `None` when the
/// text does not hold it.
pub(crate) fn parse_lock_holder(text: &str) -> (Option<u32>, Option<u64>) {
    let mut it = text.split_whitespace();
    let pid = it.next().and_then(|p| p.parse().ok());
    let start = it
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &u64| s != 0);
    (pid, start)
}

/// The queue's history record (`queue.meta` words 56-80; DESIGN.md section 8): how many times
/// a recovering writer ended history below a sequence number that had been visible before (a
/// power cut lost the records from there, and the writer assigns those seqs again), and from
/// which seq. All zero in a queue that never lost records (and in files written before the
/// record existed: the words were reserved zeroes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// Rewrites so far; a reader position remembers the epoch it is valid under.
    pub epoch: u64,
    /// First seq assigned again by the latest rewrite (the seq recovery continued at).
    pub rewritten_from: u64,
    /// Lowest `rewritten_from` of all rewrites.
    pub rewritten_floor: u64,
}

impl History {
    /// For a position saved under history epoch `saved`: the lowest seq that may have been
    /// assigned again since, or `None` when nothing was rewritten since (or `saved` is not an
    /// epoch of this queue). A position whose next seq is above it has seen records that are
    /// gone. A position older than the latest rewrite but one is judged against the floor
    /// of all rewrites: conservative (it may refuse a position the rewrites in between did not
    /// reach), never lenient.
    pub fn rewritten_since(&self, saved: u64) -> Option<u64> {
        if saved >= self.epoch {
            None
        } else if saved + 1 == self.epoch {
            Some(self.rewritten_from)
        } else {
            Some(self.rewritten_floor.min(self.rewritten_from))
        }
    }
}

impl Control {
    /// Reads the history record. The words change only while a recovering writer (holding the
    /// lock) records a rewrite; a reader racing it re-reads until the epoch is stable.
    pub(crate) fn history(&self) -> History {
        history(self.cb())
    }

    /// The history epoch alone (a reader's commit compares it with the one it saw last).
    #[inline]
    pub(crate) fn history_epoch(&self) -> u64 {
        // Relaxed: only compared; a change is followed by a consistent `history()`.
        self.cb().history_epoch.load(Ordering::Relaxed)
    }

    /// Records that recovery ended history at `from`, below a seq that had been visible (the
    /// writer holds the lock), and makes it durable (msync of `queue.meta`) before the writer
    /// assigns any seq again. Returns the new record.
    pub(crate) fn record_rewrite(&self, from: u64) -> Result<History> {
        let cb = self.cb();
        let old = self.history();
        let floor = if old.epoch == 0 {
            from
        } else {
            old.rewritten_floor.min(old.rewritten_from).min(from)
        };
        cb.rewritten_floor.store(floor, Ordering::Relaxed);
        cb.rewritten_from.store(from, Ordering::Relaxed);
        // SYNC POINT: Release publishes the two words above; pairs with the Acquire in
        // `history`.
        cb.history_epoch
            .store(old.epoch.wrapping_add(1), Ordering::Release);
        self.map.flush_range(0, CONTROL_FILE_SIZE, &self.path)?;
        Ok(self.history())
    }
}

/// The writer's published position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tail {
    /// Segment the writer appends to.
    pub segment: u64,
    /// Offset of the next record in that segment.
    pub offset: u64,
    /// Sequence number the next record will get.
    pub next_seq: u64,
    /// Timestamp of the last record written.
    pub last_timestamp_ns: u64,
}

/// Opens (creating if needed) the writer lock file.
pub(crate) fn open_lock_file(dir: &QueueDir, mode: u32) -> Result<File> {
    let path = dir.lock();
    sys::open_or_create_nofollow(&path, mode).map_err(|e| Error::io(&path, "open", e))
}

/// Random 64-bit id from the kernel's entropy (getrandom), falling back to time and pid.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid for writes of 8 bytes.
    let r = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r == 8 {
        u64::from_le_bytes(buf)
    } else {
        sys::realtime_ns() ^ (u64::from(sys::current_pid()) << 32)
    }
}
