//! The single writer of a queue.
//!
//! Append path (no system call, no page fault): bounds check, write header fields and payload in
//! place, CRC, Release-store the commit word, publish the tail (a seqlock in `queue.meta`), and
//! wake sleepers only if the futex word says someone sleeps. Rolling to a new segment swaps in a
//! segment the maintenance thread has already created, allocated and pre-faulted; unmapping and
//! syncing the old one, and retention, happen on that thread too. With `Preallocate::Pretouch`
//! the writer's own thread does that work in [`QueueWriter::pretouch`], a step per call, while
//! the application has nothing to append.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{Ordering, compiler_fence, fence};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Durability, Preallocate, RetentionPolicy, WriterConfig};
use crate::control::{
    Control, Geometry, QueueDir, check_queue_access, create_dir, create_readers_dir,
    open_lock_file, random_u64,
};
use crate::crash;
use crate::crc::Crc32c;
use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::layout::{
    KIND_DATA, KIND_PAD, NOTIFY_WAITERS, PAD_RESERVE, REC_COVERED_FIELDS, REC_CRC_OFFSET,
    REC_CRC_START, RECORD_HEADER_SIZE, RecordHeader, SEGMENT_HEADER_SIZE, WAKE_MODE_ASYMMETRIC,
    WAKE_MODE_FENCE, WRITER_CLOSED, WRITER_OPEN, commit_word, record_len,
};
use crate::recovery::{self, RecoveryReport};
use crate::retention::{self, RetentionReport, nanos};
use crate::segment::{Segment, SegmentPrep};
use crate::sys;

/// Bytes of the next segment one [`QueueWriter::pretouch`] call allocates and pre-faults: a
/// call then takes about 10 µs on tmpfs and 5 µs on ext4 (medians measured on a 2-core VM), and
/// a 64 MiB segment about 4096 calls.
pub const PRETOUCH_STEP: u64 = 16 << 10;

/// How far ahead of the tail `publish` prefetches for ownership: one 4 KiB page, far enough
/// that a page crossing's TLB miss is taken early, near enough to stay within the pre-faulted
/// segment. (Readers prefetch two pages ahead, so the two never fight over one line.)
const WRITE_PREFETCH_AHEAD: u64 = 4096;

/// Work for the maintenance thread.
enum Job {
    /// Prepare segment `id`; `true`: also fsync the new files and their directories.
    Prepare(u64, bool),
    Retire(Box<Segment>, Box<Index>, bool),
    Retention,
    /// Restrict the maintenance thread to these CPUs.
    Affinity(Vec<usize>),
}

type Prepared = (u64, Result<(Segment, Index)>);

struct Maintenance {
    jobs: Sender<Job>,
    prepared: Receiver<Prepared>,
    handle: Option<JoinHandle<()>>,
    pending: Option<u64>,
}

/// What [`QueueWriter::pretouch`] works through, in order: a retention pass, the next segment,
/// then the segment the last roll left to retire.
#[derive(Debug, Default)]
struct Pretoucher {
    /// The full segment being let go of, a step at a time.
    retire: Option<Retiring>,
    retention_due: bool,
    /// The next segment, part way.
    prep: Option<SegmentPrep>,
    /// The next segment, ready to swap in.
    ready: Option<(Segment, Index)>,
}

/// A full segment being let go of (the one place that does it): at once with `finish`, or by
/// [`QueueWriter::pretouch`] a [`RETIRE_STEP`] at a time: msync
/// (when the durability policy asks for it), then this process's page-table entries, then the
/// mapping. Unmapping a populated 64 MiB segment in one call takes 4-8 ms on a 2-core VM, which
/// would make one `pretouch` call, and the append or tick due after it, that late.
#[derive(Debug)]
struct Retiring {
    seg: Segment,
    index: Index,
    sync: bool,
    /// Bytes from the start flushed (all of them when `sync` is off) and released.
    flushed: u64,
    released: u64,
}

/// Bytes of a full segment one `pretouch` call flushes or releases (16 page-table entries).
const RETIRE_STEP: u64 = 64 << 10;

impl Retiring {
    fn new(seg: Segment, index: Index, sync: bool) -> Retiring {
        let flushed = if sync { 0 } else { seg.len() };
        Retiring {
            seg,
            index,
            sync,
            flushed,
            released: 0,
        }
    }

    /// One step; returns whether all of it is done (the segment can be dropped).
    fn step(&mut self) -> bool {
        let len = self.seg.len();
        if self.flushed < len {
            // Best effort, as in `retire`: the data is in the page cache either way.
            let _ = self.seg.flush_range(self.flushed, RETIRE_STEP);
            self.flushed += RETIRE_STEP;
        } else if self.released < len {
            // SAFETY: the segment is held only to be let go of: the writer moved on to the next
            // one, and nothing the writer hands out into a segment outlives the `&mut self`
            // borrow it came from, which ended before this `pretouch` call.
            unsafe { self.seg.release(self.released, RETIRE_STEP) };
            self.released += RETIRE_STEP;
        }
        self.released >= len
    }

    /// The rest at once: the maintenance thread, `Inline`, closing, or a second roll before
    /// the first segment was let go of.
    fn finish(self) {
        if self.sync && self.flushed < self.seg.len() {
            let _ = self
                .seg
                .flush_range(self.flushed, self.seg.len() - self.flushed);
        }
        drop(self.index);
        drop(self.seg);
    }
}

/// The one writer of a queue. `Send`, not `Sync`: one thread appends.
pub struct QueueWriter {
    // hot state
    seg: Segment,
    index: Index,
    offset: u64,
    data_end: u64,
    next_seq: u64,
    last_ts: u64,
    next_index_at: u64,
    fence_mode: bool,
    control: Arc<Control>,
    // policy state
    durability: Durability,
    unsynced_records: u64,
    synced_offset: u64,
    last_sync_ns: u64,
    doorbell: Option<crate::doorbell::Doorbell>,
    /// The segment (and index) just rolled away from, whose retirement waits until the record
    /// that caused the roll is published (see `finish_roll`).
    retiring: Option<(Segment, Index)>,
    /// The writer announced `idle` and has not appended since (mirrors `writer_idle`).
    idle: bool,
    // cold state
    geom: Geometry,
    dir: QueueDir,
    config: WriterConfig,
    maintenance: Option<Maintenance>,
    /// `Some` with [`Preallocate::Pretouch`].
    pretoucher: Option<Pretoucher>,
    recovery: RecoveryReport,
    _lock: File,
    closed: bool,
}

impl std::fmt::Debug for QueueWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWriter")
            .field("dir", &self.dir.root)
            .field("segment", &self.seg.id)
            .field("offset", &self.offset)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl QueueWriter {
    /// Opens the queue at `dir` for writing, creating it if needed, recovering from a crashed
    /// predecessor if there was one. Fails with `WriterLocked` if another writer is alive.
    pub fn open(dir: impl AsRef<Path>, config: WriterConfig) -> Result<QueueWriter> {
        let mut dir = QueueDir::new(dir.as_ref());
        dir.allow_world_writable = config.allow_world_writable;
        let mode = config.file_mode & 0o777;
        create_dir(&dir.root, mode)?;
        check_queue_access(&dir)?;
        let mut lock = open_lock_file(&dir, mode)?;
        if !sys::try_lock_exclusive(&lock).map_err(|e| Error::io(dir.lock(), "lock", e))? {
            let pid = std::fs::read_to_string(dir.lock())
                .ok()
                .and_then(|s| crate::control::parse_lock_holder(&s).0);
            return Err(Error::WriterLocked {
                path: dir.lock(),
                pid,
            });
        }
        let pid = sys::current_pid();
        let start = sys::process_start_time(pid).unwrap_or(0);
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "{pid} {start}");
        create_dir(&dir.segments(), mode)?;
        create_dir(&dir.index(), mode)?;
        create_readers_dir(&dir.readers(), mode)?;
        check_queue_access(&dir)?;
        let wanted = Geometry {
            segment_size: config.segment_size,
            max_payload: config.effective_max_payload(),
            index_stride: config.index_stride,
            queue_uid: random_u64() | 1,
            file_mode: mode,
        };
        let control = Arc::new(Control::create_or_open(&dir, wanted)?);
        let geom = control.geometry;
        let cb = control.cb();
        if !control.is_writable() {
            return Err(Error::io(
                &control.path,
                "open",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ));
        }
        let previous_state = cb.writer_state.load(Ordering::Relaxed);
        let hint = match previous_state {
            crate::layout::WRITER_NEVER => None,
            _ => Some(cb.tail_segment.load(Ordering::Relaxed)),
        };
        // Say "a writer is in here" as soon as we hold the lock: if this process dies during
        // recovery, the queue must read as crashed (lock free, state OPEN), not as closed.
        // The published next seq: what readers could see before (after a power cut, some
        // version of it; never more than was written).
        let published = match previous_state {
            crate::layout::WRITER_NEVER => 0,
            _ => control.tail().next_seq,
        };
        cb.writer_pid.store(pid, Ordering::Relaxed);
        cb.writer_state.store(WRITER_OPEN, Ordering::Release);
        let rec = match recovery::recover(&dir, &geom, hint) {
            Ok(r) => r,
            Err(e) => {
                // Nothing was changed: leave the state as this writer found it.
                cb.writer_state.store(previous_state, Ordering::Release);
                return Err(e);
            }
        };
        // History rewritten? Recovery ends history at the first record that is not there; if
        // a seq at or past that point had been visible (published in `queue.meta`, or in a
        // named reader's saved position), a power cut lost records readers may have seen, and
        // the seqs from here are assigned again: record it (durably) before assigning any, so
        // that positions saved before it are refused past it (`Error::HistoryRewritten`).
        // A process crash never loses a committed record, so it never records a rewrite.
        // Positions an earlier rewrite already invalidated are no evidence of a new one.
        let history = control.history();
        let seen = crate::reader_meta::list_readers(&dir)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r.position?.next_seq, r.history_epoch)))
            .filter(|&(seq, epoch)| history.rewritten_since(epoch).is_none_or(|f| seq <= f))
            .map(|(seq, _)| seq)
            .fold(published, u64::max);
        if seen > rec.report.next_seq {
            control.record_rewrite(rec.report.next_seq)?;
        }
        if config.durability != Durability::PageCache {
            // The queue's own names must survive a power loss for its msynced records to:
            // `queue.meta`, the directories, and the tail segment and its index (recovery
            // creates segment 0 of a new queue, and rebuilds the tail's index).
            for p in [
                dir.control(),
                dir.root.clone(),
                rec.segment.path.clone(),
                dir.index_file(rec.segment.id),
                dir.segments(),
                dir.index(),
            ] {
                sys::fsync_path(&p).map_err(|e| Error::io(&p, "fsync", e))?;
            }
        }
        let fence_mode = !sys::membarrier_register_global();
        cb.wake_mode.store(
            if fence_mode {
                WAKE_MODE_FENCE
            } else {
                WAKE_MODE_ASYMMETRIC
            },
            Ordering::Relaxed,
        );
        if let Some(&oldest) = dir.list_reachable_segments()?.first() {
            cb.oldest_segment.store(oldest, Ordering::Relaxed);
            if let Ok(s) = Segment::open_ro(&dir, oldest, &geom) {
                cb.oldest_seq.store(s.base_seq(), Ordering::Relaxed);
            }
        }
        cb.writer_epoch.fetch_add(1, Ordering::Relaxed);
        let report = rec.report;
        let stride = u64::from(geom.index_stride);
        let next_index_at = if report.tail_offset == SEGMENT_HEADER_SIZE {
            0
        } else {
            (report.tail_offset / stride + 1) * stride
        };
        let maintenance = match config.preallocate {
            Preallocate::Background => Some(spawn_maintenance(
                dir.clone(),
                Arc::clone(&control),
                config.retention,
            )?),
            Preallocate::Inline | Preallocate::Pretouch => None,
        };
        let pretoucher = (config.preallocate == Preallocate::Pretouch).then(Pretoucher::default);
        if let (Some(m), Some(cpus)) = (&maintenance, &config.maintenance_cpus) {
            let _ = m.jobs.send(Job::Affinity(cpus.clone()));
        }
        let now = sys::realtime_ns();
        let doorbell = match &config.doorbell {
            Some(p) => Some(crate::doorbell::Doorbell::open_or_create(p, mode)?),
            None => None,
        };
        let was_idle = control.cb().writer_idle.load(Ordering::Relaxed) != 0;
        let mut w = QueueWriter {
            seg: rec.segment,
            index: rec.index,
            offset: report.tail_offset,
            data_end: geom.data_end(),
            next_seq: report.next_seq,
            last_ts: report.last_timestamp_ns,
            next_index_at,
            fence_mode,
            control,
            durability: config.durability,
            doorbell,
            unsynced_records: 0,
            synced_offset: report.tail_offset,
            last_sync_ns: now,
            geom,
            dir,
            config,
            maintenance,
            pretoucher,
            recovery: report,
            _lock: lock,
            retiring: None,
            // A previous writer may have died idle: then the first append withdraws it.
            idle: was_idle,
            closed: false,
        };
        w.publish_tail();
        // Wake readers that slept through the previous writer's death.
        w.wake_slow();
        w.request_prepare();
        Ok(w)
    }

    /// The queue's history record: whether (and from which seq) a recovery ended history
    /// below a seq that had been visible, after a power cut (DESIGN.md section 8).
    pub fn history(&self) -> crate::control::History {
        self.control.history()
    }

    /// What recovery found and did when this writer opened the queue.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Where the next record goes.
    pub fn tail(&self) -> crate::control::Tail {
        crate::control::Tail {
            segment: self.seg.id,
            offset: self.offset,
            next_seq: self.next_seq,
            last_timestamp_ns: self.last_ts,
        }
    }

    /// The queue's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    /// Largest payload accepted.
    pub fn max_payload(&self) -> u32 {
        self.geom.max_payload
    }

    /// The queue directory.
    pub fn path(&self) -> &Path {
        &self.dir.root
    }

    /// Appends one record stamped with the current time; returns its sequence number.
    #[inline]
    pub fn append(&mut self, type_id: u32, payload: &[u8]) -> Result<u64> {
        let ts = self.now_ts();
        self.append_at(type_id, ts, payload)
    }

    /// Appends one record with an explicit timestamp (ns since the Unix epoch), e.g. when
    /// importing records from elsewhere. Seeking by time assumes timestamps do not decrease.
    #[inline]
    pub fn append_at(&mut self, type_id: u32, timestamp_ns: u64, payload: &[u8]) -> Result<u64> {
        self.leave_idle();
        let seq = self.write_record(type_id, timestamp_ns, payload)?;
        self.after_publish(timestamp_ns, 1);
        Ok(seq)
    }

    /// Starts a batch: records appended through it share one clock reading, one tail
    /// publication and one wake-up of sleeping readers (when the batch ends), for bursts
    /// such as a market-data packet that carries several updates. Each record is still
    /// committed on its own, so a spinning reader sees the first record of a batch before
    /// the last one is written. See [`Batch`].
    #[inline]
    pub fn batch(&mut self) -> Batch<'_> {
        let timestamp_ns = self.now_ts();
        Batch {
            writer: self,
            timestamp_ns,
            pending: 0,
            appended: 0,
        }
    }

    /// Writes and commits one record (header, payload, CRC, commit word, index entry) without
    /// the publication that follows a commit ([`after_publish`](Self::after_publish)).
    #[inline(always)]
    fn write_record(&mut self, type_id: u32, timestamp_ns: u64, payload: &[u8]) -> Result<u64> {
        let len = payload.len();
        let ptr = self.reserve(len)?;
        let fields = RecordHeader::covered_fields(self.next_seq, timestamp_ns, type_id, len as u32);
        // SAFETY: `reserve` returned `record_len(len)` writable bytes at the tail of the current
        // segment: the covered header fields go to +8..+32 (`REC_CRC_START..RECORD_HEADER_SIZE`),
        // the payload to +32..+32+len. No reader looks at them before the commit word is
        // published.
        unsafe {
            std::ptr::copy_nonoverlapping(
                fields.as_ptr(),
                ptr.add(REC_CRC_START as usize),
                REC_COVERED_FIELDS,
            );
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                ptr.add(RECORD_HEADER_SIZE as usize),
                len,
            );
        }
        // The CRC is computed from the sources (in cache), not read back from the mapping:
        // reading freshly stored lines back would stall on their write-allocate misses.
        let crc = crate::crc::crc32c_two(&fields, payload);
        Ok(self.commit_record(ptr, timestamp_ns, len, crc))
    }

    /// Reserves room for a `len`-byte payload and returns a handle to write it in place.
    /// Nothing is visible to readers until [`Claim::commit`]; dropping the claim abandons it.
    #[inline]
    pub fn claim(&mut self, type_id: u32, len: usize) -> Result<Claim<'_>> {
        let ptr = self.reserve(len)?;
        Ok(Claim {
            writer: self,
            ptr,
            len,
            type_id,
            done: false,
        })
    }

    #[inline]
    fn now_ts(&mut self) -> u64 {
        self.leave_idle();
        // CLOCK_REALTIME itself, not a per-process extrapolation: records of different writers
        // are merged by timestamp, so a stamp taken after another writer's (in real time) must
        // not come out smaller.
        sys::realtime_ns().max(self.last_ts)
    }

    /// Announces that the writer is idle: until its next append, no record will come whose
    /// timestamp is earlier than the moment a reader looks (the next record is stamped after
    /// this announcement is withdrawn). A fan-in merger then waits for nothing from this queue.
    /// Call it when the writer has nothing more to write for now (before waiting for input); it
    /// costs one store and a doorbell ring on the first call after an append, nothing on the
    /// next ones. Appends with an explicit timestamp (`append_at`) older than the present break
    /// the promise like they break the heartbeat watermark's: such records are merged late.
    pub fn idle(&mut self) {
        if self.idle {
            return;
        }
        self.idle = true;
        // SYNC POINT: Release pairs with the Acquire load in `QueueReader::idle_watermark_ns`:
        // a reader that sees the announcement sees every record committed before it.
        self.control.cb().writer_idle.store(1, Ordering::Release);
        if let Some(d) = &self.doorbell {
            d.ring();
        }
    }

    /// Withdraws an idle announcement before the next record's timestamp is read.
    #[inline]
    fn leave_idle(&mut self) {
        if self.idle {
            self.leave_idle_slow();
        }
    }

    #[cold]
    fn leave_idle_slow(&mut self) {
        self.idle = false;
        self.control.cb().writer_idle.store(0, Ordering::Relaxed);
        // SYNC POINT: store -> fence -> clock read, against the reader's clock read -> fence ->
        // load in `QueueReader::idle_watermark_ns`. If that load still saw the announcement,
        // its fence came first in the SeqCst order, so the reader's clock read happened before
        // this writer's: the record about to be stamped is not older than the reader's
        // watermark. `clock_fence` keeps the clock read behind the fence.
        fence(Ordering::SeqCst);
        sys::clock_fence();
    }

    /// Makes room for a record of `len` payload bytes, rolling if needed; returns its address.
    #[inline]
    fn reserve(&mut self, len: usize) -> Result<*mut u8> {
        if self.closed {
            return Err(Error::Closed);
        }
        if len > self.geom.max_payload as usize {
            return Err(Error::PayloadTooLarge {
                len,
                max: self.geom.max_payload,
            });
        }
        let rec = record_len(len as u64);
        if self.offset + rec > self.data_end {
            self.roll()?;
        }
        self.seg.write_ptr(self.offset, rec).ok_or_else(|| {
            Error::corrupted(
                &self.seg.path,
                self.offset,
                "record does not fit the segment",
            )
        })
    }

    /// Writes the header fields of a claimed record (whose payload is in the mapping) and
    /// publishes it.
    fn finish_claim(&mut self, ptr: *mut u8, type_id: u32, timestamp_ns: u64, len: usize) -> u64 {
        let fields = RecordHeader::covered_fields(self.next_seq, timestamp_ns, type_id, len as u32);
        // SAFETY: `ptr` addresses `record_len(len)` writable bytes reserved by `reserve`; bytes
        // +8..+32 are this record's header fields, +32..+32+len its payload written by the
        // caller. Nobody else reads them before the commit word is published.
        let crc = unsafe {
            let covered = ptr.add(REC_CRC_START as usize);
            std::ptr::copy_nonoverlapping(fields.as_ptr(), covered, REC_COVERED_FIELDS);
            Crc32c::new()
                .update(std::slice::from_raw_parts(
                    covered,
                    REC_COVERED_FIELDS + len,
                ))
                .finish()
        };
        self.publish(ptr, timestamp_ns, len, crc)
    }

    /// Stores the CRC and then the commit word of the record at `ptr`, and does the
    /// bookkeeping that follows a commit.
    #[inline]
    fn publish(&mut self, ptr: *mut u8, timestamp_ns: u64, len: usize, crc: u32) -> u64 {
        let seq = self.commit_record(ptr, timestamp_ns, len, crc);
        self.after_publish(timestamp_ns, 1);
        seq
    }

    /// Stores the CRC and then the commit word of the record at `ptr` (the record is visible
    /// to readers from here), advances the position and indexes the record.
    #[inline(always)]
    fn commit_record(&mut self, ptr: *mut u8, timestamp_ns: u64, len: usize, crc: u32) -> u64 {
        let seq = self.next_seq;
        // SAFETY: +4..+8 (`REC_CRC_OFFSET`) is the CRC field of the reserved record.
        unsafe {
            let crc = crc.to_le_bytes();
            std::ptr::copy_nonoverlapping(
                crc.as_ptr(),
                ptr.add(REC_CRC_OFFSET as usize),
                crc.len(),
            );
        };
        let offset = self.offset;
        crash::point("append.before_commit");
        if let Some(word) = self.seg.commit_at(offset) {
            // SYNC POINT: Release publishes header and payload; pairs with the Acquire load of the
            // commit word in `QueueReader::next` (and recovery's walk).
            word.store(commit_word(KIND_DATA, len as u32), Ordering::Release);
        }
        self.offset = offset + record_len(len as u64);
        self.next_seq = seq + 1;
        self.last_ts = timestamp_ns;
        crash::point("append.after_commit");
        if offset >= self.next_index_at {
            self.add_index_entry(seq, timestamp_ns, offset);
        }
        seq
    }

    /// What follows the commit of `records` records (one, or a batch): the tail publication,
    /// waking sleepers, the second half of a roll, the prefetch ahead and the durability
    /// policy.
    #[inline]
    fn after_publish(&mut self, timestamp_ns: u64, records: u32) {
        self.publish_tail();
        crash::point("append.after_tail");
        self.wake_if_sleepers();
        if self.retiring.is_some() {
            self.finish_roll(true);
        }
        // Off the critical path (the record is already visible): take ownership of the line one
        // page ahead, so the stores that reach it later neither miss the TLB on a page crossing
        // nor wait for a write-allocate fetch before the commit word can become visible.
        self.seg.prefetch(self.offset + WRITE_PREFETCH_AHEAD, true);
        if self.durability != Durability::PageCache {
            self.after_commit_durability(timestamp_ns, records);
        }
    }

    #[cold]
    fn add_index_entry(&mut self, seq: u64, timestamp_ns: u64, offset: u64) {
        crash::point("index.before_push");
        self.index.push(Entry {
            seq,
            timestamp_ns,
            offset,
        });
        crash::point("index.after_push");
        let stride = u64::from(self.geom.index_stride);
        self.next_index_at = (offset / stride + 1) * stride;
    }

    /// Publishes the tail position in `queue.meta` (seqlock: odd while the fields change).
    #[inline]
    fn publish_tail(&self) {
        let cb = self.control.cb();
        let v = cb.tail_lock.load(Ordering::Relaxed);
        cb.tail_lock.store(v.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd version before the field stores (free on x86).
        fence(Ordering::Release);
        cb.tail_segment.store(self.seg.id, Ordering::Relaxed);
        cb.tail_offset.store(self.offset, Ordering::Relaxed);
        cb.next_seq.store(self.next_seq, Ordering::Relaxed);
        cb.last_timestamp_ns.store(self.last_ts, Ordering::Relaxed);
        // SYNC POINT: Release makes the fields visible before the even version; pairs with the
        // Acquire loads in `Control::tail`.
        cb.tail_lock.store(v.wrapping_add(2), Ordering::Release);
    }

    /// Wakes sleeping readers, paying for it only when the futex word says someone sleeps.
    #[inline]
    fn wake_if_sleepers(&self) {
        // The commit store must be ordered before the load of `notify` (a store→load ordering,
        // Dekker-style, against the sleeper's "set WAITERS, then re-check the commit word").
        // In asymmetric mode the sleeper issues membarrier(GLOBAL_EXPEDITED), which executes a
        // full barrier on this thread, so only the compiler must be kept from reordering here.
        // In fence mode (no membarrier) we pay the full fence.
        if self.fence_mode {
            fence(Ordering::SeqCst);
        } else {
            compiler_fence(Ordering::SeqCst);
        }
        if self.control.cb().notify.load(Ordering::Relaxed) & NOTIFY_WAITERS != 0 {
            self.wake_slow();
        }
        if let Some(d) = &self.doorbell {
            d.ring();
        }
    }

    /// Restricts the maintenance thread (segment preparation, retirement, retention) to `cpus`,
    /// e.g. a housekeeping core, so that pre-faulting the next segment never preempts a pinned
    /// latency-critical thread. Best effort and asynchronous: a mask the kernel refuses leaves
    /// the thread where it was. No effect with `Preallocate::Inline`.
    pub fn pin_maintenance(&mut self, cpus: &[usize]) {
        if let Some(m) = &self.maintenance {
            let _ = m.jobs.send(Job::Affinity(cpus.to_vec()));
        }
    }

    /// Publishes a watermark without writing a record: a promise that no later record will be
    /// stamped earlier than now. An idle writer calls this periodically so a fan-in merger need
    /// not wait for it. Readers see `max(last record timestamp, watermark)`.
    pub fn heartbeat(&mut self) {
        let now = sys::realtime_ns().max(self.last_ts);
        self.last_ts = now;
        self.control.cb().watermark_ns.store(now, Ordering::Release);
        self.publish_tail();
        self.wake_if_sleepers();
        if self.retiring.is_some() {
            // A roll whose record was abandoned: an idle writer finishes it here rather than
            // at its next roll, which would then wait for the preparation.
            self.finish_roll(true);
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_slow(&self) {
        let notify = &self.control.cb().notify;
        let cur = notify.load(Ordering::Relaxed);
        // Bump the counter and clear WAITERS: sleepers whose expected value was `cur` (or any
        // older value) fail their FUTEX_WAIT or are woken below, and re-arm if they still wait.
        // SYNC POINT: AcqRel swap; its Release half publishes the commit to a reader whose
        // compare-exchange reads the new value.
        notify.swap(cur.wrapping_add(2) & !NOTIFY_WAITERS, Ordering::AcqRel);
        sys::futex_wake(notify, i32::MAX);
    }

    #[cold]
    fn after_commit_durability(&mut self, now_ns: u64, records: u32) {
        self.unsynced_records = self.unsynced_records.saturating_add(u64::from(records));
        let due = match self.durability {
            Durability::PageCache => false,
            Durability::EveryRecords(n) => self.unsynced_records >= n.max(1),
            Durability::Interval(d) => now_ns.saturating_sub(self.last_sync_ns) >= nanos(d),
        };
        if due {
            // A failed msync is reported by the next explicit `sync`; appends continue.
            let _ = self.sync();
            self.last_sync_ns = now_ns;
        }
    }

    /// Forces every record appended so far to stable storage (msync).
    pub fn sync(&mut self) -> Result<()> {
        self.sync_to(self.offset)
    }

    /// msyncs the current segment from the last synced offset up to `end`.
    fn sync_to(&mut self, end: u64) -> Result<()> {
        let start = self.synced_offset.min(end) & !4095;
        self.seg.flush_range(start, end - start)?;
        self.synced_offset = end;
        self.unsynced_records = 0;
        Ok(())
    }

    /// Moves to the next segment: take the prepared one, PAD the current one, publish.
    #[cold]
    #[inline(never)]
    fn roll(&mut self) -> Result<()> {
        if self.retiring.is_some() {
            // A roll whose record was never published (an abandoned claim): retire it now.
            self.finish_roll(false);
        }
        let next_id = self.seg.id + 1;
        self.check_capacity(next_id)?;
        let (next, next_index) = self.take_prepared(next_id)?;
        if let Ok(h) = next.header() {
            h.base_seq.store(self.next_seq, Ordering::Relaxed);
        }
        if self.durability != Durability::PageCache {
            // The next segment's base_seq reaches the disk before the PAD that leads to it
            // (below): a power cut between the two must not leave a PAD into a segment whose
            // header still says 0.
            let _ = next.flush_range(0, SEGMENT_HEADER_SIZE);
        }
        // PAD the rest of the current segment (its length field is unused: 0).
        let offset = self.offset;
        crash::point("roll.before_pad");
        let word = self.seg.commit_at(offset).ok_or_else(|| {
            Error::corrupted(&self.seg.path, offset, "no room for the PAD record")
        })?;
        // SYNC POINT: Release publishes the next segment (its header, base_seq and file) to
        // readers, who Acquire-load this PAD and then open segment `next_id`.
        word.store(commit_word(KIND_PAD, 0), Ordering::Release);
        if self.durability != Durability::PageCache {
            // The PAD is made durable with the records before it and before any record of the
            // next segment is: otherwise a power cut could keep msynced records of the next
            // segment behind a full segment that does not lead to it (recovery would then end
            // history in the full one).
            let _ = self.sync_to(offset + PAD_RESERVE);
        }
        crash::point("roll.after_pad");
        let old = std::mem::replace(&mut self.seg, next);
        let old_index = std::mem::replace(&mut self.index, next_index);
        self.offset = SEGMENT_HEADER_SIZE;
        self.synced_offset = SEGMENT_HEADER_SIZE;
        self.next_index_at = 0;
        self.publish_tail();
        crash::point("roll.after_tail");
        self.wake_if_sleepers();
        self.retiring = Some((old, old_index));
        Ok(())
    }

    /// The second half of a roll, run once the record that crossed into the new segment is
    /// visible: hands the old segment to the maintenance thread (msync if the durability policy
    /// asks, unmap), runs retention there and requests the next preparation. Waking the
    /// maintenance thread can cost the appending thread its CPU for a while (when they share a
    /// core, the woken thread preempts it), so it must not happen between a roll and the commit
    /// of the record that caused it: measured, that record then arrived ~600 µs late.
    /// `prepare`: also request the next segment (not when closing, nor when a roll is about to).
    #[cold]
    #[inline(never)]
    fn finish_roll(&mut self, prepare: bool) {
        let Some((old, old_index)) = self.retiring.take() else {
            return;
        };
        let sync_old = self.durability != Durability::PageCache;
        match (&self.maintenance, &mut self.pretoucher) {
            (Some(m), _) => {
                let _ = m
                    .jobs
                    .send(Job::Retire(Box::new(old), Box::new(old_index), sync_old));
                let _ = m.jobs.send(Job::Retention);
            }
            (None, Some(p)) => {
                // Left to `pretouch`; one left over from an earlier roll is retired now.
                if let Some(r) = p.retire.replace(Retiring::new(old, old_index, sync_old)) {
                    r.finish();
                }
                p.retention_due = true;
            }
            (None, None) => {
                Retiring::new(old, old_index, sync_old).finish();
                let _ = retention::run(&self.dir, &self.control, &self.config.retention);
            }
        }
        if prepare {
            self.request_prepare();
        }
    }

    fn check_capacity(&mut self, next_id: u64) -> Result<()> {
        let Some(cap) = self.config.capacity_bytes else {
            return Ok(());
        };
        let fits = |w: &Self| {
            let oldest = w.control.cb().oldest_segment.load(Ordering::Relaxed);
            let count = next_id.saturating_sub(oldest) + 1;
            count.saturating_mul(w.geom.segment_size) <= cap
        };
        if fits(self) {
            return Ok(());
        }
        let _ = retention::run(&self.dir, &self.control, &self.config.retention)?;
        if fits(self) {
            Ok(())
        } else {
            Err(Error::CapacityExceeded { limit_bytes: cap })
        }
    }

    fn request_prepare(&mut self) {
        let id = self.seg.id + 1;
        let durable = self.durability != Durability::PageCache;
        if let Some(m) = &mut self.maintenance {
            if m.pending.is_none() && m.jobs.send(Job::Prepare(id, durable)).is_ok() {
                m.pending = Some(id);
            }
        }
    }

    fn take_prepared(&mut self, id: u64) -> Result<(Segment, Index)> {
        let durable = self.durability != Durability::PageCache;
        if let Some(p) = &mut self.pretoucher {
            if let Some(ready) = p.ready.take().filter(|(s, _)| s.id == id) {
                return Ok(ready);
            }
            if let Some(prep) = p.prep.take().filter(|prep| prep.id() == id) {
                return finish_prepare(&self.dir, prep, &self.geom, durable);
            }
        }
        if let Some(m) = &mut self.maintenance {
            if m.pending.is_none() && m.jobs.send(Job::Prepare(id, durable)).is_ok() {
                m.pending = Some(id);
            }
            while m.pending.is_some() {
                match m.prepared.recv() {
                    Ok((got, res)) => {
                        m.pending = None;
                        if got == id {
                            return res;
                        }
                    }
                    Err(_) => {
                        m.pending = None;
                        break;
                    }
                }
            }
        }
        prepare(
            &self.dir,
            id,
            &self.geom,
            self.durability != Durability::PageCache,
        )
    }

    /// One bounded step of the work [`Preallocate::Pretouch`] leaves to the writer's thread, in
    /// this order: a retention pass after a roll; allocating and pre-faulting the next
    /// [`PRETOUCH_STEP`] bytes of the next segment (creating it first, finishing it last);
    /// letting go of the segment the last roll filled (64 KiB of msync per the durability
    /// policy, or of unmapping, per call). Call it whenever there is nothing
    /// to append (an idle or paced loop); returns whether work remains (`false`: the next
    /// segment is ready and nothing else is pending). Without `Pretouch` it does nothing.
    ///
    /// Errors: creating or allocating the next segment (`NoSpace` on a full file system), or
    /// retention. The append that rolls tries again.
    pub fn pretouch(&mut self) -> Result<bool> {
        let durable = self.durability != Durability::PageCache;
        let Some(p) = self.pretoucher.as_mut() else {
            return Ok(false);
        };
        if p.retention_due {
            p.retention_due = false;
            retention::run(&self.dir, &self.control, &self.config.retention)?;
            return Ok(true);
        }
        let next = self.seg.id + 1;
        if p.ready.as_ref().is_none_or(|(s, _)| s.id != next) {
            let prep = match p.prep.as_mut().filter(|prep| prep.id() == next) {
                Some(prep) => prep,
                None => p
                    .prep
                    .insert(SegmentPrep::start(&self.dir, next, &self.geom)?),
            };
            if !prep.step(PRETOUCH_STEP)? {
                return Ok(true);
            }
            if let Some(prep) = p.prep.take() {
                p.ready = Some(finish_prepare(&self.dir, prep, &self.geom, durable)?);
            }
            return Ok(p.retire.is_some());
        }
        // Last: readers let go of the same segment right after the roll, and two processes
        // unmapping one file's pages at once slow each other down (measured with the
        // `latency_anatomy` example: 2-3 times as many late records in the first MiB after
        // each roll when the writer went first).
        if let Some(r) = p.retire.as_mut() {
            if r.step() {
                p.retire = None;
            }
            return Ok(p.retire.is_some());
        }
        Ok(false)
    }

    /// Runs a retention pass now (normally done after each roll and once a second).
    pub fn run_retention(&mut self) -> Result<RetentionReport> {
        retention::run(&self.dir, &self.control, &self.config.retention)
    }

    /// Closes the writer cleanly: flushes per the durability policy, marks the queue closed
    /// (readers waiting see `WriterStatus::Closed`) and releases the lock.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.finish_roll(false);
        if let Some(r) = self.pretoucher.as_mut().and_then(|p| p.retire.take()) {
            r.finish();
        }
        let res = if self.durability != Durability::PageCache {
            self.sync()
        } else {
            Ok(())
        };
        let cb = self.control.cb();
        cb.writer_state.store(WRITER_CLOSED, Ordering::Release);
        self.wake_slow();
        if let Some(mut m) = self.maintenance.take() {
            drop(m.jobs);
            if let Some(h) = m.handle.take() {
                let _ = h.join();
            }
        }
        res
    }
}

impl Drop for QueueWriter {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A burst of appends that share one clock reading, one tail publication and one wake-up of
/// sleeping readers, from [`QueueWriter::batch`].
///
/// Every record is committed as it is appended (its commit word is stored with Release), so a
/// spinning reader consumes the first record while the writer writes the next; what is paid
/// once per batch is the publication in `queue.meta` (the tail that `tail()`, `inspect` and
/// waiting readers look at), the futex/doorbell wake-up and the durability policy's check.
/// All records of a batch carry the timestamp read when the batch started. The batch ends
/// when it is dropped (or with [`finish`](Self::finish)); a batch that crosses into a new
/// segment publishes what it holds before rolling.
///
/// With `Durability::EveryRecords(n)` the count is checked at the end of the batch, so a batch
/// of more than `n` records is synced once, after its last record.
pub struct Batch<'w> {
    writer: &'w mut QueueWriter,
    timestamp_ns: u64,
    /// Records committed since the last publication.
    pending: u32,
    /// Records appended through this batch.
    appended: u64,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("timestamp_ns", &self.timestamp_ns)
            .field("appended", &self.appended)
            .finish_non_exhaustive()
    }
}

impl Batch<'_> {
    /// Appends one record to the batch; returns its sequence number. The record is visible
    /// to spinning readers at once; sleeping readers are woken when the batch ends.
    ///
    /// # Errors
    /// As for [`QueueWriter::append`]. Records appended before the error stay committed and
    /// are published when the batch ends.
    #[inline]
    pub fn append(&mut self, type_id: u32, payload: &[u8]) -> Result<u64> {
        let w = &mut *self.writer;
        if self.pending > 0 && w.offset + record_len(payload.len() as u64) > w.data_end {
            // The roll publishes a new segment; publish this segment's records first.
            self.publish();
        }
        let seq = self
            .writer
            .write_record(type_id, self.timestamp_ns, payload)?;
        self.pending = self.pending.saturating_add(1);
        self.appended += 1;
        Ok(seq)
    }

    /// Records appended through this batch so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.appended
    }

    /// Whether nothing has been appended through this batch.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.appended == 0
    }

    /// The timestamp every record of this batch carries (ns since the Unix epoch).
    #[must_use]
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// Ends the batch: publishes the tail and wakes sleeping readers (as dropping it does).
    pub fn finish(self) {}

    fn publish(&mut self) {
        if self.pending > 0 {
            let records = std::mem::take(&mut self.pending);
            self.writer.after_publish(self.timestamp_ns, records);
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.publish();
    }
}

/// A reserved, not yet visible record. Write the payload with [`Claim::payload_mut`], then
/// [`Claim::commit`]. Dropping it without committing abandons the record (its bytes are zeroed).
pub struct Claim<'w> {
    writer: &'w mut QueueWriter,
    ptr: *mut u8,
    len: usize,
    type_id: u32,
    done: bool,
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("len", &self.len)
            .field("type_id", &self.type_id)
            .finish()
    }
}

impl Claim<'_> {
    /// The payload bytes, in the mapping. They start zeroed.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr + 32 .. ptr + 32 + len` was reserved for this claim by `reserve`, is
        // writable, and is not read by anyone else until commit; `&mut self` makes it unique.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(RECORD_HEADER_SIZE as usize), self.len)
        }
    }

    /// Publishes the record, stamped with the current time; returns its sequence number.
    #[inline]
    pub fn commit(mut self) -> u64 {
        self.done = true;
        let ts = self.writer.now_ts();
        self.writer
            .finish_claim(self.ptr, self.type_id, ts, self.len)
    }

    /// Publishes only the first `len` bytes written (for encoders that learn the size late).
    /// The rest of the reservation is zeroed and reused.
    pub fn commit_truncated(mut self, len: usize) -> u64 {
        let len = len.min(self.len);
        // SAFETY: `len..self.len` lies inside this claim's payload (see payload_mut).
        unsafe {
            std::ptr::write_bytes(
                self.ptr.add(RECORD_HEADER_SIZE as usize + len),
                0,
                self.len - len,
            );
        }
        self.done = true;
        let ts = self.writer.now_ts();
        self.writer.finish_claim(self.ptr, self.type_id, ts, len)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Leave only zeroes behind, so no stale byte is ever mistaken for a commit word.
            // SAFETY: the claim's payload range, as in `payload_mut`.
            unsafe {
                std::ptr::write_bytes(self.ptr.add(RECORD_HEADER_SIZE as usize), 0, self.len)
            };
        }
    }
}

/// Creates, allocates and pre-faults segment `id` and its index. `durable`: also fsync both
/// files (their allocation) and their directories (their names), so that records msynced into
/// the segment later are found after a power loss.
fn prepare(dir: &QueueDir, id: u64, geom: &Geometry, durable: bool) -> Result<(Segment, Index)> {
    finish_prepare(dir, SegmentPrep::start(dir, id, geom)?, geom, durable)
}

/// [`prepare`] from a segment part way (see [`SegmentPrep`]).
fn finish_prepare(
    dir: &QueueDir,
    prep: SegmentPrep,
    geom: &Geometry,
    durable: bool,
) -> Result<(Segment, Index)> {
    let id = prep.id();
    let seg = prep.finish(geom)?;
    crash::point("prepare.after_segment");
    let idx = match Index::create(dir, id, geom) {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&seg.path);
            return Err(e);
        }
    };
    if durable {
        for p in [
            seg.path.clone(),
            dir.index_file(id),
            dir.segments(),
            dir.index(),
        ] {
            sys::fsync_path(&p).map_err(|e| Error::io(&p, "fsync", e))?;
        }
    }
    Ok((seg, idx))
}

fn spawn_maintenance(
    dir: QueueDir,
    control: Arc<Control>,
    policy: RetentionPolicy,
) -> Result<Maintenance> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (prep_tx, prep_rx) = mpsc::channel::<Prepared>();
    let path = dir.root.clone();
    let handle = std::thread::Builder::new()
        .name("chronicle-maint".into())
        .spawn(move || maintenance_loop(dir, control, policy, jobs_rx, prep_tx))
        .map_err(|e| Error::io(path, "spawn maintenance thread", e))?;
    Ok(Maintenance {
        jobs: jobs_tx,
        prepared: prep_rx,
        handle: Some(handle),
        pending: None,
    })
}

fn maintenance_loop(
    dir: QueueDir,
    control: Arc<Control>,
    policy: RetentionPolicy,
    jobs: Receiver<Job>,
    prepared: Sender<Prepared>,
) {
    let periodic = policy.max_age.is_some() || policy.max_bytes.is_some();
    loop {
        match jobs.recv_timeout(Duration::from_secs(1)) {
            Ok(Job::Prepare(id, durable)) => {
                let res = prepare(&dir, id, &control.geometry, durable);
                if prepared.send((id, res)).is_err() {
                    return;
                }
            }
            Ok(Job::Retire(seg, idx, sync)) => Retiring::new(*seg, *idx, sync).finish(),
            Ok(Job::Retention) => {
                let _ = retention::run(&dir, &control, &policy);
            }
            Ok(Job::Affinity(cpus)) => {
                // Best effort: a refused mask leaves the thread where it was.
                let _ = sys::set_thread_affinity(&cpus);
            }
            Err(RecvTimeoutError::Timeout) => {
                if periodic {
                    let _ = retention::run(&dir, &control, &policy);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
