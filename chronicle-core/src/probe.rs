//! A read-only look at a queue's files, for tools: what `chron-cli inspect`, `doctor` and
//! `metrics` report, and what a monitoring agent of your own may want.
//!
//! The probe takes no lock, maps nothing writable and writes nothing, so it never disturbs a
//! running writer or reader, and it works on damaged queues: each part is read on its own and
//! fails with the engine's own [`Error`] (naming the file and, for damage, the offset).
//!
//! | file | read how | decoded by |
//! |---|---|---|
//! | `queue.meta` | copied with `pread` (twice, until the tail seqlock is settled) | the engine's own validation of its mapping, run on the copy: [`read_meta`] |
//! | `writer.lock` | read as text; its lock probed with `F_OFD_GETLK`, never taken | [`writer_lock`] |
//! | `segments/` | listed and `lstat`ed; a header copied with `pread` on request | [`segments`], [`segment_header`] |
//! | `readers/*.meta` | [`list_readers`] (mapped read-only, not locked) | [`readers`] |
//! | the tail | [`check_tail`](crate::check_tail) (segments mapped read-only) | [`check_tail`] |
//!
//! [`QueueProbe::read`] gathers all but the tail walk in one pass.
//!
//! ```
//! use chronicle_core::probe::{QueueProbe, WriterState};
//! use chronicle_core::{QueueDir, QueueWriter, WriterConfig, WriterStatus};
//! # fn main() -> Result<(), chronicle_core::Error> {
//! # let tmp = std::env::temp_dir().join(format!("chronicle-probe-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&tmp);
//! let cfg = WriterConfig { segment_size: 1 << 20, ..WriterConfig::default() };
//! let mut w = QueueWriter::open(&tmp, cfg)?;
//! w.append(7, b"hello")?;
//!
//! let p = QueueProbe::read(&QueueDir::new(&tmp))?;
//! assert_eq!(p.meta.tail.next_seq, 1);
//! assert_eq!(p.meta.writer_state, WriterState::Open);
//! assert_eq!(p.writer_status(), Some(WriterStatus::Alive)); // writer.lock is held
//! # drop(w);
//! # let _ = std::fs::remove_dir_all(&tmp);
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::Read;
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::control::{self, Geometry, History, QueueDir, Tail};
use crate::error::{Error, Result};
use crate::layout::{
    ControlBlock, SEGMENT_HEADER_SIZE, SegmentHeader, WRITER_CLOSED, WRITER_NEVER, WRITER_OPEN,
};
use crate::map::AtomicStruct;
use crate::reader::WriterStatus;
use crate::reader_meta::{Position, ReaderInfo, list_readers};
use crate::recovery::TailCheck;
use crate::sys;

/// Reads of `queue.meta` at most, waiting for two equal copies with the tail seqlock even.
const META_READS: usize = 100;

/// The `writer_state` word of `queue.meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterState {
    /// No writer ever opened the queue.
    Never,
    /// A writer opened the queue and has not closed it: it is alive, or it died.
    Open,
    /// The last writer closed the queue cleanly.
    Closed,
    /// A value no writer stores (a damaged `queue.meta`).
    Unknown(u32),
}

impl WriterState {
    fn from_word(word: u32) -> Self {
        match word {
            WRITER_NEVER => WriterState::Never,
            WRITER_OPEN => WriterState::Open,
            WRITER_CLOSED => WriterState::Closed,
            other => WriterState::Unknown(other),
        }
    }
}

/// `queue.meta`, read and validated exactly as a writer or reader opening the queue would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueMeta {
    /// Format version of the file (the one this build reads, once validated).
    pub version: u32,
    /// The queue's geometry.
    pub geometry: Geometry,
    /// When the queue was created (ns since the Unix epoch).
    pub created_ns: u64,
    /// The writer's published tail (a hint after a crash: see [`check_tail`]).
    pub tail: Tail,
    /// Pid of the last writer that opened the queue (0: none).
    pub writer_pid: u32,
    /// Whether a writer has the queue open, per the last writer.
    pub writer_state: WriterState,
    /// Oldest segment retention has kept.
    pub oldest_segment: u64,
    /// Oldest sequence number retention has kept.
    pub oldest_seq: u64,
    /// The history record: rewrites recorded by recovery after a power cut.
    pub history: History,
}

/// Bytes of log between two positions `(segment, offset)`, segments counted whole: exact
/// within one segment, approximate across segment boundaries; 0 when `to` is not after `from`.
fn log_bytes(segment_size: u64, from: (u64, u64), to: (u64, u64)) -> u64 {
    let ((fs, fo), (ts, to)) = (from, to);
    if ts < fs || (ts == fs && to < fo) {
        return 0;
    }
    (ts - fs)
        .saturating_mul(segment_size)
        .saturating_add(to)
        .saturating_sub(fo)
}

impl QueueMeta {
    /// The writer's liveness: `Alive` when a process holds `writer.lock`, otherwise what the
    /// last writer left in `queue.meta` (`Open` without a holder is `Dead`). `None` when the
    /// state word is damaged ([`WriterState::Unknown`]) and no process holds the lock.
    pub fn writer_status(&self, lock: &WriterLock) -> Option<WriterStatus> {
        if lock.held {
            return Some(WriterStatus::Alive);
        }
        match self.writer_state {
            WriterState::Never => Some(WriterStatus::Never),
            WriterState::Closed => Some(WriterStatus::Closed),
            WriterState::Open => Some(WriterStatus::Dead),
            WriterState::Unknown(_) => None,
        }
    }

    /// Bytes the writer has moved through the log since the queue was created: framing,
    /// padding and segment headers included, segments counted whole (the measure of
    /// [`Lag::bytes`]).
    pub fn appended_bytes(&self) -> u64 {
        log_bytes(
            self.geometry.segment_size,
            (0, SEGMENT_HEADER_SIZE),
            (self.tail.segment, self.tail.offset),
        )
    }

    /// How far a reader at `position` is behind the published tail.
    pub fn lag(&self, position: &Position) -> Lag {
        let tail = self.tail;
        let records = tail.next_seq.saturating_sub(position.next_seq);
        Lag {
            next_seq: position.next_seq,
            records,
            bytes: log_bytes(
                self.geometry.segment_size,
                (position.segment, position.offset),
                (tail.segment, tail.offset),
            ),
            ns: if records == 0 {
                0
            } else {
                tail.last_timestamp_ns.saturating_sub(position.timestamp_ns)
            },
        }
    }
}

/// How far a reader is behind the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lag {
    /// The reader's next sequence number.
    pub next_seq: u64,
    /// Records appended that it has not consumed.
    pub records: u64,
    /// Bytes of log between its position and the tail (segments counted whole: exact within
    /// one segment, approximate across segments).
    pub bytes: u64,
    /// Between the last record it consumed and the last one appended (0 when caught up).
    pub ns: u64,
}

/// A private copy of the first bytes of a file, read with `pread` into 8-byte aligned memory,
/// viewed through the same `layout` structs as a mapping, so the engine's decoders run on it.
struct FileCopy {
    words: Vec<u64>,
}

impl FileCopy {
    fn read(file: &File, len: usize, path: &Path) -> Result<FileCopy> {
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: `len <= 8 * words.len()`, so the pointer and length cover initialized `u64`s
        // of `words`, which this function borrows exclusively; `u8` has no alignment
        // requirement, every byte of a `u64` is a valid `u8` and any bytes make a valid `u64`.
        let buf = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        file.read_exact_at(buf, 0)
            .map_err(|e| Error::io(path, "read", e))?;
        Ok(FileCopy { words })
    }

    /// The struct at the start of the copy; `None` if it does not fit or needs more than
    /// 8-byte alignment.
    fn view<T: AtomicStruct>(&self) -> Option<&T> {
        if std::mem::size_of::<T>() > self.words.len() * 8
            || std::mem::align_of::<T>() > std::mem::align_of::<u64>()
        {
            return None;
        }
        // SAFETY: the copy holds at least `size_of::<T>()` initialized bytes (checked above) at
        // an address aligned for `u64`, hence for `T`; `T: AtomicStruct` makes every bit
        // pattern a valid `T`. The reference borrows `self`, so the buffer outlives it, and
        // nothing writes the buffer while it is shared.
        Some(unsafe { &*self.words.as_ptr().cast::<T>() })
    }
}

/// Reads and validates `queue.meta` of the queue in `dir` (nothing mapped, nothing locked).
///
/// Errors are those of a writer or reader opening the queue: `Io` (`open queue` when the
/// directory does not exist), `NotAQueue`, `NotYetInitialized`, `VersionMismatch`, or
/// `Corrupted` naming the offset (truncated file, bad magic, block size, geometry).
pub fn read_meta(dir: &QueueDir) -> Result<QueueMeta> {
    let path = dir.control();
    if dir.root.exists() && !dir.root.is_dir() {
        return Err(Error::NotAQueue {
            path: dir.root.clone(),
        });
    }
    let file = sys::open_ro_nofollow(&path).map_err(|e| control::open_error(dir, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(&path, "stat", e))?
        .len();
    control::check_len(&path, len)?;
    let size = std::mem::size_of::<ControlBlock>();
    // The tail span is a seqlock the writer updates on every commit: a copy taken while it
    // was odd, or that a second read contradicts, may mix two tails. Two equal copies with an
    // even lock cannot (the lock only grows, and changes before and after every update).
    let mut copy = FileCopy::read(&file, size, &path)?;
    for _ in 0..META_READS {
        let again = FileCopy::read(&file, size, &path)?;
        let settled = copy.words == again.words
            && control_block(&copy, &path)?
                .tail_lock
                .load(Ordering::Relaxed)
                & 1
                == 0;
        copy = again;
        if settled {
            break;
        }
    }
    let cb = control_block(&copy, &path)?;
    let geometry = control::validate(cb, &path)?;
    Ok(QueueMeta {
        version: cb.version.load(Ordering::Relaxed),
        geometry,
        created_ns: cb.created_ns.load(Ordering::Relaxed),
        tail: control::tail_fields(cb),
        writer_pid: cb.writer_pid.load(Ordering::Relaxed),
        writer_state: WriterState::from_word(cb.writer_state.load(Ordering::Relaxed)),
        oldest_segment: cb.oldest_segment.load(Ordering::Relaxed),
        oldest_seq: cb.oldest_seq.load(Ordering::Relaxed),
        history: control::history(cb),
    })
}

fn control_block<'a>(copy: &'a FileCopy, path: &Path) -> Result<&'a ControlBlock> {
    copy.view::<ControlBlock>()
        .ok_or_else(|| Error::corrupted(path, 0, "control block does not fit"))
}

/// Who holds the writer lock, as far as can be told without taking it.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct WriterLock {
    /// A process holds the lock on `writer.lock` right now: a writer is alive.
    pub held: bool,
    /// Pid the last writer recorded in `writer.lock`.
    pub pid: Option<u32>,
    /// That process's start time (clock ticks since boot), when recorded.
    pub start_time: Option<u64>,
    /// Whether that process still runs (same pid and, when recorded, same start time).
    pub pid_alive: Option<bool>,
    /// Why `writer.lock` could not be read or probed (`None` when it was, or does not exist):
    /// then `held` and `pid` say nothing.
    pub error: Option<Error>,
}

/// Probes `writer.lock` of the queue in `dir`: the lock with `F_OFD_GETLK` (never taken, so
/// a starting writer is not disturbed) and the holder the last writer recorded.
pub fn writer_lock(dir: &QueueDir) -> WriterLock {
    let path = dir.lock();
    let mut f = match sys::open_ro_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return WriterLock::default(),
        Err(e) => {
            return WriterLock {
                error: Some(Error::io(&path, "open", e)),
                ..WriterLock::default()
            };
        }
    };
    let mut error = None;
    let held = sys::is_locked(&f).unwrap_or_else(|e| {
        error = Some(Error::io(&path, "probe lock", e));
        false
    });
    let mut text = String::new();
    if let Err(e) = f.read_to_string(&mut text) {
        error = error.or(Some(Error::io(&path, "read", e)));
    }
    let (pid, start_time) = control::parse_lock_holder(&text);
    WriterLock {
        held,
        pid,
        start_time,
        pid_alive: pid.map(|p| sys::process_alive(p, start_time)),
        error,
    }
}

/// One segment file on disk.
#[derive(Debug)]
#[non_exhaustive]
pub struct SegmentFile {
    /// Its id (from the file name).
    pub id: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its size on disk (`lstat`), or why that could not be read.
    pub size: Result<u64>,
    /// `Corrupted` when it is shorter than the queue's segment size (the engine refuses to
    /// open it).
    pub short: Option<Error>,
    /// Readers can reach it: it is the newest or one of the run of consecutive ids before it.
    /// A segment before a gap is one retention removed that a power cut brought back (or one
    /// whose successor is missing): readers ignore it.
    pub reachable: bool,
}

/// The segment files of a queue against what `queue.meta` expects.
#[derive(Debug)]
#[non_exhaustive]
pub struct SegmentList {
    /// The segment files on disk, ascending by id.
    pub files: Vec<SegmentFile>,
    /// Runs of ids between the oldest retained segment and the tail segment (per
    /// `queue.meta`) that have no file: history readers cannot reach. (Right after a power
    /// cut `queue.meta` may be stale until a writer recovers the queue.)
    pub missing: Vec<RangeInclusive<u64>>,
}

impl SegmentList {
    /// Total size of the segment files whose size could be read.
    pub fn bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| f.size.as_ref().ok()).sum()
    }
}

/// Lists the segment files of the queue in `dir` with their sizes, checked against `meta`.
/// Fails only when `segments/` cannot be listed; a missing directory is an empty list.
pub fn segments(dir: &QueueDir, meta: &QueueMeta) -> Result<SegmentList> {
    let ids = dir.list_segments()?;
    let first_reachable = control::reachable_start(&ids);
    let files = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let path = dir.segment(id);
            let size = std::fs::symlink_metadata(&path)
                .map(|m| m.len())
                .map_err(|e| Error::io(&path, "stat", e));
            let short = size
                .as_ref()
                .ok()
                .and_then(|&len| crate::segment::check_size(&path, len, &meta.geometry).err());
            SegmentFile {
                id,
                path,
                size,
                short,
                reachable: i >= first_reachable,
            }
        })
        .collect();
    // A queue whose first segment is not created yet (tail at its initial value) misses none.
    let fresh = ids.is_empty() && meta.tail.segment == 0 && meta.tail.next_seq == 0;
    let missing = if fresh {
        Vec::new()
    } else {
        gaps(&ids, meta.oldest_segment, meta.tail.segment)
    };
    Ok(SegmentList { files, missing })
}

/// The runs of `lo..=hi` not in `ids` (ascending).
fn gaps(ids: &[u64], lo: u64, hi: u64) -> Vec<RangeInclusive<u64>> {
    let mut out = Vec::new();
    let mut next = Some(lo);
    for &id in ids.iter().filter(|&&id| (lo..=hi).contains(&id)) {
        if let Some(n) = next.filter(|&n| n < id) {
            out.push(n..=id - 1);
        }
        next = id.checked_add(1);
    }
    if let Some(n) = next.filter(|&n| n <= hi) {
        out.push(n..=hi);
    }
    out
}

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentHeaderInfo {
    /// Sequence number of its first record.
    pub base_seq: u64,
    /// When it was created (ns since the Unix epoch).
    pub created_ns: u64,
}

/// Reads and validates the header of segment `id` of the queue with `geometry` in `dir`
/// (copied with `pread`; validated as a reader opening the segment would: magic, version,
/// header size, id, queue uid).
pub fn segment_header(dir: &QueueDir, id: u64, geometry: &Geometry) -> Result<SegmentHeaderInfo> {
    let path = dir.segment(id);
    let file = sys::open_ro_nofollow(&path).map_err(|e| Error::io(&path, "open", e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(&path, "stat", e))?
        .len();
    if len < SEGMENT_HEADER_SIZE {
        crate::segment::check_size(&path, len, geometry)?;
    }
    let copy = FileCopy::read(&file, std::mem::size_of::<SegmentHeader>(), &path)?;
    let h = copy
        .view::<SegmentHeader>()
        .ok_or_else(|| Error::corrupted(&path, 0, "segment header does not fit"))?;
    crate::segment::validate_header(h, &path, id, geometry)?;
    Ok(SegmentHeaderInfo {
        base_seq: h.base_seq.load(Ordering::Relaxed),
        created_ns: h.created_ns.load(Ordering::Relaxed),
    })
}

/// A named reader's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderState {
    /// A process holds its meta open (locked) right now.
    Active,
    /// Its last process still runs but does not hold it.
    Idle,
    /// Its last process is gone.
    Gone,
}

impl ReaderState {
    /// The liveness of the reader whose meta says `info`.
    pub fn of(info: &ReaderInfo) -> ReaderState {
        if info.in_use {
            ReaderState::Active
        } else if sys::process_alive(info.pid, Some(info.start_time)) {
            ReaderState::Idle
        } else {
            ReaderState::Gone
        }
    }
}

/// One named reader, as read from its meta file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderProbe {
    /// What its meta says.
    pub info: ReaderInfo,
    /// How far it is behind the tail; `None` until it has committed a position.
    pub lag: Option<Lag>,
    /// Its liveness.
    pub state: ReaderState,
}

/// The named readers of the queue in `dir`, with their lag behind `meta`'s tail. A meta that
/// cannot be read is its own error (naming the file); the call fails only when `readers/`
/// cannot be listed.
pub fn readers(dir: &QueueDir, meta: &QueueMeta) -> Result<Vec<Result<ReaderProbe>>> {
    Ok(list_readers(dir)?
        .into_iter()
        .map(|r| {
            r.map(|info| ReaderProbe {
                lag: info.position.map(|p| meta.lag(&p)),
                state: ReaderState::of(&info),
                info,
            })
        })
        .collect())
}

/// Finds the true tail as recovery would, starting from the published tail segment when a
/// writer ever opened the queue, and reports bytes written after it but never committed (see
/// [`crate::check_tail`]). Meaningful when no writer is alive.
pub fn check_tail(dir: &QueueDir, meta: &QueueMeta) -> Result<TailCheck> {
    let hint = (meta.writer_state != WriterState::Never).then_some(meta.tail.segment);
    crate::recovery::check_tail(dir, &meta.geometry, hint)
}

/// What a queue's files say, gathered in one pass: `queue.meta`, `writer.lock`, the segment
/// list and the named readers (the tail walk is [`check_tail`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct QueueProbe {
    /// `queue.meta`.
    pub meta: QueueMeta,
    /// `writer.lock`.
    pub lock: WriterLock,
    /// The segment files.
    pub segments: SegmentList,
    /// The named readers; a meta that cannot be read is its error.
    pub readers: Vec<Result<ReaderProbe>>,
}

impl QueueProbe {
    /// Probes the queue in `dir`. Fails when `queue.meta` is not a valid queue's (see
    /// [`read_meta`]) or `segments/` or `readers/` cannot be listed.
    pub fn read(dir: &QueueDir) -> Result<QueueProbe> {
        let meta = read_meta(dir)?;
        let segments = segments(dir, &meta)?;
        let lock = writer_lock(dir);
        let readers = readers(dir, &meta)?;
        Ok(QueueProbe {
            meta,
            lock,
            segments,
            readers,
        })
    }

    /// The writer's liveness (see [`QueueMeta::writer_status`]).
    pub fn writer_status(&self) -> Option<WriterStatus> {
        self.meta.writer_status(&self.lock)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use super::*;
    use crate::{Preallocate, QueueReader, QueueWriter, ReaderConfig, WriterConfig};

    fn cfg() -> WriterConfig {
        WriterConfig {
            segment_size: 64 << 10,
            preallocate: Preallocate::Inline,
            ..WriterConfig::default()
        }
    }

    /// A queue at `q` with `n` records of 100 bytes, its writer closed.
    fn make_queue(q: &Path, n: u64) -> Geometry {
        let mut w = QueueWriter::open(q, cfg()).unwrap();
        for i in 0..n {
            w.append(i as u32, &[i as u8; 100]).unwrap();
        }
        let g = w.geometry();
        w.close().unwrap();
        g
    }

    fn put(path: &Path, at: usize, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, at as u64).unwrap();
    }

    fn put_meta_u32(q: &Path, at: usize, v: u32) {
        put(&q.join("queue.meta"), at, &v.to_le_bytes());
    }

    fn put_meta_u64(q: &Path, at: usize, v: u64) {
        put(&q.join("queue.meta"), at, &v.to_le_bytes());
    }

    /// The probe's error and the engine's (a reader opening the queue) say the same thing.
    fn same_as_engine(q: &Path) -> Error {
        let probed = read_meta(&QueueDir::new(q)).unwrap_err();
        let opened = QueueReader::open(q, ReaderConfig::default()).unwrap_err();
        assert_eq!(probed.to_string(), opened.to_string());
        probed
    }

    #[test]
    fn healthy_queue_reads_as_the_engine_sees_it() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        let before = sys::realtime_ns();
        let geom = make_queue(&q, 10);
        let mut r = QueueReader::open(&q, ReaderConfig::named("audit")).unwrap();
        for _ in 0..4 {
            r.next().unwrap().unwrap();
        }
        r.commit().unwrap();
        let dir = QueueDir::new(&q);

        let p = QueueProbe::read(&dir).unwrap();
        let m = p.meta;
        assert_eq!(m.version, crate::layout::FORMAT_VERSION);
        assert_eq!(m.geometry, geom);
        assert!(m.created_ns >= before && m.created_ns <= sys::realtime_ns());
        assert_eq!(m.tail, r.tail());
        assert_eq!(m.tail.next_seq, 10);
        assert_eq!(m.history, History::default());
        assert_eq!((m.oldest_segment, m.oldest_seq), (0, 0));
        assert_eq!(m.writer_pid, sys::current_pid());
        assert_eq!(m.writer_state, WriterState::Closed);
        assert_eq!(p.writer_status(), Some(WriterStatus::Closed));

        // writer.lock names this process (alive), and nobody holds it.
        assert!(!p.lock.held);
        assert_eq!(p.lock.pid, Some(sys::current_pid()));
        assert_eq!(
            p.lock.start_time,
            sys::process_start_time(sys::current_pid())
        );
        assert_eq!(p.lock.pid_alive, Some(true));
        assert!(p.lock.error.is_none());

        assert_eq!(p.segments.files.len(), 1);
        let s = &p.segments.files[0];
        assert_eq!((s.id, s.path.clone()), (0, dir.segment(0)));
        assert_eq!(*s.size.as_ref().unwrap(), geom.segment_size);
        assert!(s.short.is_none() && s.reachable);
        assert!(p.segments.missing.is_empty());
        assert_eq!(p.segments.bytes(), geom.segment_size);
        assert_eq!(
            m.appended_bytes(),
            m.tail.offset - SEGMENT_HEADER_SIZE,
            "one segment: the bytes from its header to the tail"
        );

        // The named reader: 4 consumed and committed, held open by this process.
        assert_eq!(p.readers.len(), 1);
        let rp = p.readers[0].as_ref().unwrap();
        assert_eq!(rp.info.name, "audit");
        assert_eq!(rp.state, ReaderState::Active);
        let lag = rp.lag.unwrap();
        assert_eq!((lag.next_seq, lag.records), (4, 6));
        assert_eq!(lag.bytes, 6 * crate::layout::record_len(100));
        assert!(lag.ns > 0);
        drop(r);
        let rp = readers(&dir, &m).unwrap().remove(0).unwrap();
        assert_eq!(
            rp.state,
            ReaderState::Idle,
            "its process (this one) still runs"
        );

        let h = segment_header(&dir, 0, &geom).unwrap();
        assert_eq!(h.base_seq, 0);
        assert!(h.created_ns >= m.created_ns);

        let c = check_tail(&dir, &m).unwrap();
        assert_eq!(
            (c.tail_segment, c.tail_offset, c.next_seq, c.torn),
            (m.tail.segment, m.tail.offset, 10, None)
        );
    }

    #[test]
    fn writer_alive_in_this_process() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        let mut w = QueueWriter::open(&q, cfg()).unwrap();
        w.append(1, b"x").unwrap();
        let p = QueueProbe::read(&QueueDir::new(&q)).unwrap();
        assert!(p.lock.held);
        assert_eq!(p.meta.writer_state, WriterState::Open);
        assert_eq!(p.writer_status(), Some(WriterStatus::Alive));
        assert_eq!(p.meta.tail.next_seq, 1);
        w.close().unwrap();
        let p = QueueProbe::read(&QueueDir::new(&q)).unwrap();
        assert!(!p.lock.held);
        assert_eq!(p.writer_status(), Some(WriterStatus::Closed));
    }

    #[test]
    fn writer_state_word_never_open_and_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        make_queue(&q, 1);
        let dir = QueueDir::new(&q);
        let at = offset_of!(ControlBlock, writer_state);
        for (word, state, status) in [
            (WRITER_NEVER, WriterState::Never, Some(WriterStatus::Never)),
            (WRITER_OPEN, WriterState::Open, Some(WriterStatus::Dead)),
            (7, WriterState::Unknown(7), None),
        ] {
            put_meta_u32(&q, at, word);
            let p = QueueProbe::read(&dir).unwrap();
            assert_eq!(p.meta.writer_state, state);
            assert_eq!(p.writer_status(), status);
        }
    }

    #[test]
    fn stale_and_garbled_writer_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        make_queue(&q, 1);
        let dir = QueueDir::new(&q);
        let me = sys::current_pid();
        // This pid, but another start time: a reused pid, not the writer that wrote it.
        std::fs::write(dir.lock(), format!("{me} 1\n")).unwrap();
        let l = writer_lock(&dir);
        assert_eq!((l.held, l.pid, l.start_time), (false, Some(me), Some(1)));
        assert_eq!(l.pid_alive, Some(false));
        // Start time unknown (0): the pid alone decides.
        std::fs::write(dir.lock(), format!("{me} 0\n")).unwrap();
        let l = writer_lock(&dir);
        assert_eq!((l.start_time, l.pid_alive), (None, Some(true)));
        std::fs::write(dir.lock(), "not a pid\n").unwrap();
        let l = writer_lock(&dir);
        assert_eq!((l.pid, l.pid_alive), (None, None));
        assert!(l.error.is_none());
        std::fs::remove_file(dir.lock()).unwrap();
        let l = writer_lock(&dir);
        assert_eq!((l.held, l.pid, l.pid_alive), (false, None, None));
        assert!(l.error.is_none(), "no lock file: no writer ever ran here");
    }

    #[test]
    fn truncated_and_empty_queue_meta() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        make_queue(&q, 1);
        let meta = q.join("queue.meta");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&meta)
            .unwrap()
            .set_len(100)
            .unwrap();
        match same_as_engine(&q) {
            Error::Corrupted { path, offset, what } => {
                assert_eq!(
                    (path, offset, what),
                    (meta.clone(), 100, "queue.meta is truncated")
                );
            }
            e => panic!("{e}"),
        }
        std::fs::write(&meta, b"").unwrap();
        assert!(matches!(same_as_engine(&q), Error::NotYetInitialized { path } if path == meta));
    }

    #[test]
    fn garbled_queue_meta_names_the_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        make_queue(&q, 1);
        let meta_path = q.join("queue.meta");
        let original = std::fs::read(&meta_path).unwrap();
        type Case = (&'static str, fn(&Path), u64, &'static str);
        let cases: [Case; 5] = [
            (
                "magic",
                |q| put_meta_u64(q, 0, 0x1234),
                0,
                "bad magic: not a chronicle queue.meta",
            ),
            (
                "block size",
                |q| put_meta_u32(q, offset_of!(ControlBlock, control_size), 4000),
                12,
                "control block size does not match",
            ),
            (
                "segment size",
                |q| put_meta_u64(q, offset_of!(ControlBlock, segment_size), 12345),
                16,
                "segment_size must be a multiple of 4096 and at least 16 KiB",
            ),
            (
                "max payload",
                |q| put_meta_u32(q, offset_of!(ControlBlock, max_payload), u32::MAX),
                16,
                "max_payload exceeds the format limit",
            ),
            (
                "index stride",
                |q| put_meta_u32(q, offset_of!(ControlBlock, index_stride), 1000),
                16,
                "index_stride must be a power of two of at least 1024",
            ),
        ];
        for (name, damage, at, why) in cases {
            std::fs::write(&meta_path, &original).unwrap();
            damage(&q);
            match same_as_engine(&q) {
                Error::Corrupted { offset, what, .. } => {
                    assert_eq!((offset, what), (at, why), "{name}");
                }
                e => panic!("{name}: {e}"),
            }
        }
        // Magic 0: its creator has not published it.
        std::fs::write(&meta_path, &original).unwrap();
        put_meta_u64(&q, 0, 0);
        assert!(matches!(
            same_as_engine(&q),
            Error::NotYetInitialized { .. }
        ));
        // Another format version.
        std::fs::write(&meta_path, &original).unwrap();
        put_meta_u32(&q, offset_of!(ControlBlock, version), 9);
        assert!(matches!(
            same_as_engine(&q),
            Error::VersionMismatch {
                found: 9,
                expected: crate::layout::FORMAT_VERSION,
                ..
            }
        ));
    }

    #[test]
    fn not_a_queue_and_no_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            read_meta(&QueueDir::new(&empty)),
            Err(Error::NotAQueue { path }) if path == empty
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            read_meta(&QueueDir::new(&file)),
            Err(Error::NotAQueue { path }) if path == file
        ));
        let gone = tmp.path().join("gone");
        match read_meta(&QueueDir::new(&gone)) {
            Err(Error::Io { path, op, source }) => {
                assert_eq!((path, op), (gone, "open queue"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tail_lock_left_odd_does_not_hang_the_probe() {
        // A writer killed while publishing its tail leaves the seqlock odd for good.
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        make_queue(&q, 3);
        put_meta_u64(&q, offset_of!(ControlBlock, tail_lock), 41);
        let m = read_meta(&QueueDir::new(&q)).unwrap();
        assert_eq!(m.tail.next_seq, 3);
    }

    #[test]
    fn missing_and_unreachable_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        let mut w = QueueWriter::open(&q, cfg()).unwrap();
        while w.tail().segment < 3 {
            w.append(0, &[0u8; 1000]).unwrap();
        }
        let geom = w.geometry();
        w.close().unwrap();
        let dir = QueueDir::new(&q);
        let m = read_meta(&dir).unwrap();
        assert_eq!(m.tail.segment, 3);
        // The probe's base seqs are where a reader seeking to them lands: a segment's start.
        let mut last = 0;
        for id in 1..=3 {
            let h = segment_header(&dir, id, &geom).unwrap();
            assert!(h.base_seq > last);
            last = h.base_seq;
            let at = ReaderConfig::default().start(crate::StartAt::Seq(h.base_seq));
            let r = QueueReader::open(&q, at).unwrap();
            let p = r.position();
            assert_eq!(
                (p.segment, p.offset),
                (id, SEGMENT_HEADER_SIZE),
                "seq {last}"
            );
        }

        std::fs::remove_file(dir.segment(1)).unwrap();
        let s = segments(&dir, &m).unwrap();
        assert_eq!(s.missing, vec![1..=1]);
        let ids: Vec<(u64, bool)> = s.files.iter().map(|f| (f.id, f.reachable)).collect();
        assert_eq!(ids, vec![(0, false), (2, true), (3, true)]);
        match segment_header(&dir, 1, &geom) {
            Err(e) => assert!(e.is_not_found(), "{e}"),
            Ok(h) => panic!("{h:?}"),
        }

        // The tail segment gone as well: two runs.
        std::fs::remove_file(dir.segment(3)).unwrap();
        let s = segments(&dir, &m).unwrap();
        assert_eq!(s.missing, vec![1..=1, 3..=3]);
    }

    #[test]
    fn damaged_segment_headers_and_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("q");
        let geom = make_queue(&q, 5);
        let other = tmp.path().join("other");
        make_queue(&other, 1);
        let dir = QueueDir::new(&q);
        let seg0 = dir.segment(0);
        let original = std::fs::read(&seg0).unwrap();
        let corrupted = |e: Error| match e {
            Error::Corrupted { offset, what, .. } => (offset, what),
            e => panic!("{e}"),
        };

        put(&seg0, 0, &[0xff]);
        assert_eq!(
            corrupted(segment_header(&dir, 0, &geom).unwrap_err()),
            (0, "bad segment magic")
        );

        std::fs::copy(QueueDir::new(&other).segment(0), &seg0).unwrap();
        assert_eq!(
            corrupted(segment_header(&dir, 0, &geom).unwrap_err()),
            (24, "segment belongs to another queue")
        );

        std::fs::write(&seg0, &original).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&seg0).unwrap();
        f.set_len(4096).unwrap();
        let m = read_meta(&dir).unwrap();
        let s = segments(&dir, &m).unwrap();
        let f0 = s.files.into_iter().next().unwrap();
        assert_eq!(*f0.size.as_ref().unwrap(), 4096);
        assert_eq!(
            corrupted(f0.short.unwrap()),
            (4096, "segment file is shorter than the segment size")
        );
        assert_eq!(
            segment_header(&dir, 0, &geom).unwrap().base_seq,
            0,
            "the header is intact"
        );
        f.set_len(10).unwrap();
        assert_eq!(
            corrupted(segment_header(&dir, 0, &geom).unwrap_err()),
            (10, "segment file is shorter than the segment size")
        );
    }

    #[test]
    fn gaps_are_runs() {
        assert_eq!(gaps(&[], 0, 0), vec![0..=0]);
        assert_eq!(gaps(&[0, 1, 2], 0, 2), Vec::<RangeInclusive<u64>>::new());
        assert_eq!(gaps(&[2, 5], 0, 7), vec![0..=1, 3..=4, 6..=7]);
        assert_eq!(
            gaps(&[0, 9], 3, 5),
            vec![3..=5],
            "ids outside the range do not count"
        );
        assert_eq!(
            gaps(&[u64::MAX], u64::MAX - 1, u64::MAX),
            vec![u64::MAX - 1..=u64::MAX - 1]
        );
    }
}
