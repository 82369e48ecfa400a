//! Readers: zero-copy iteration over a queue, optionally durable (named).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::{CommitPolicy, OnLost, ReaderConfig, StartAt, validate_name};
use crate::control::{Control, Geometry, QueueDir, Tail, check_queue_access};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::layout::{RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, WRITER_CLOSED, WRITER_NEVER};
use crate::reader_meta::{Position, ReaderMeta};
use crate::record::{self, DataRecord, RecordCursor, Slot};
use crate::segment::Segment;
use crate::sys;
use crate::wait::{self, Backoff, NotifyWaitOutcome};

/// A record, borrowed from the mapping (zero-copy). Valid until the reader moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    seq: u64,
    timestamp_ns: u64,
    type_id: u32,
    payload: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// Sequence number (global and contiguous for the life of the queue).
    #[inline]
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Timestamp in ns since the Unix epoch.
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }
    /// Application-defined type id.
    #[inline]
    pub fn type_id(&self) -> u32 {
        self.type_id
    }
    /// The payload, in the shared mapping.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Liveness of a queue's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriterStatus {
    /// A process holds the writer lock (it may be idle).
    Alive,
    /// The last writer closed cleanly; no writer now.
    Closed,
    /// The last writer died without closing; no writer now.
    Dead,
    /// No writer ever opened the queue.
    Never,
}

/// Result of [`QueueReader::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitOutcome {
    /// A record (or a segment change) is ready: call `next`.
    Ready,
    /// The timeout passed with nothing new.
    TimedOut,
    /// Nothing new and no writer is alive (`Closed` or `Dead`).
    WriterGone(WriterStatus),
}

/// Reads a queue. `Send`, not `Sync`.
pub struct QueueReader {
    seg: Segment,
    offset: u64,
    next_seq: u64,
    last_ts: u64,
    verify_crc: bool,
    auto_commit: bool,
    uncommitted: bool,
    /// The validated record at the position, after `peek` (cleared whenever the position moves).
    peeked: Option<CheckedRecord>,
    hb_countdown: u32,
    idle_polls: u32,
    /// Idle polls until the next `check_hole` (0: at the next one).
    hole_check: u32,
    /// `(segment id, offset)`: pages of that segment below the offset have been touched by
    /// `fault_ahead`.
    faulted: (u64, u64),
    /// The segment after the current one, opened ahead of time by an idle reader near the end
    /// of the current one (`preopen_next`), so entering it costs a `stat`, not an open and a
    /// mapping.
    next_seg: Option<Segment>,
    /// Idle polls left before `preopen_next` tries again after finding no next segment.
    preopen_backoff: u32,
    /// The segment just left and how much of it has been released: unmapping a populated
    /// 64 MiB mapping at once takes long enough to delay the first record of the next segment,
    /// so idle polls release it piecemeal first (`release_retired`).
    retired: Option<(Segment, u64)>,
    meta: Option<ReaderMeta>,
    /// The queue history epoch this reader's positions are valid under (DESIGN.md section 8),
    /// the epoch it saw last in `queue.meta`, and its next seq when it was last placed (open,
    /// `seek`): a rewrite recorded while it is open is adopted at the next commit when the
    /// reader was placed at or before the rewrite point (it then read only records that
    /// survived, and after the writer's recovery the new ones).
    hist_epoch: u64,
    hist_seen: u64,
    hist_start: u64,
    control: Control,
    geom: Geometry,
    dir: QueueDir,
    lock_probe: Option<File>,
    backoff: Backoff,
    liveness_interval: Duration,
    on_lost: OnLost,
}

impl std::fmt::Debug for QueueReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueReader")
            .field("dir", &self.dir.root)
            .field("segment", &self.seg.id)
            .field("offset", &self.offset)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

const HEARTBEAT_EVERY: u32 = 1024;

/// A record at the reader's position that passed every check `next` makes (see
/// `QueueReader::head`), kept by `peek` for the `next` that follows.
#[derive(Debug, Clone, Copy)]
struct CheckedRecord {
    offset: u64,
    /// Where the record after it starts.
    next: u64,
    seq: u64,
    timestamp_ns: u64,
    type_id: u32,
    len: u32,
}
const IDLE_HEARTBEAT_EVERY: u32 = 64;

/// How far ahead of its position an idle reader prefetches (two 4 KiB pages; see `head`).
const READ_PREFETCH_AHEAD: u64 = 8192;

/// Page size assumed by the fault-ahead walk (a smaller real page only makes it map less ahead).
const PAGE: u64 = 4096;

/// How far ahead of its position an idle reader keeps its mapping populated: room for a burst
/// of 256 KiB to be read without a page fault.
const FAULT_AHEAD: u64 = 256 << 10;

/// How much of a retired segment's mapping one idle poll releases (16 page-table entries).
const RELEASE_STEP: u64 = 64 << 10;

/// Idle polls between checks for a hole before the tail (`check_hole`).
const HOLE_CHECK_EVERY: u32 = 1024;

/// Idle polls between attempts to open the next segment ahead of time while it does not exist.
const PREOPEN_RETRY: u32 = 4096;

impl QueueReader {
    /// Opens a reader on the queue at `dir`. A named reader resumes at its persisted position
    /// (or starts at `config.start` the first time) and commits its start position at once.
    pub fn open(dir: impl AsRef<Path>, config: ReaderConfig) -> Result<QueueReader> {
        let mut dir = QueueDir::new(dir.as_ref());
        dir.allow_world_writable = config.allow_world_writable;
        check_queue_access(&dir)?;
        let control = Control::open(&dir, false)?;
        let geom = control.geometry;
        let (meta, persisted) = match &config.name {
            Some(name) => {
                if !validate_name(name) {
                    return Err(Error::InvalidName { name: name.clone() });
                }
                let (m, p) =
                    ReaderMeta::open_or_create(&dir, name, geom.queue_uid, geom.file_mode)?;
                (Some(m), p)
            }
            None => (None, None),
        };
        let lock_probe = sys::open_ro_nofollow(&dir.lock()).ok();
        // Placeholder segment (replaced by the seek below).
        let seg = open_placeholder(&dir, &control, &geom)?;
        let mut r = QueueReader {
            offset: SEGMENT_HEADER_SIZE,
            next_seq: seg.base_seq(),
            seg,
            last_ts: 0,
            verify_crc: config.verify_crc,
            auto_commit: config.commit == CommitPolicy::OnNext,
            uncommitted: false,
            peeked: None,
            hb_countdown: HEARTBEAT_EVERY,
            idle_polls: 0,
            hole_check: 0,
            faulted: (u64::MAX, 0),
            next_seg: None,
            preopen_backoff: 0,
            retired: None,
            meta,
            hist_epoch: 0,
            hist_seen: 0,
            hist_start: 0,
            control,
            geom,
            dir,
            lock_probe,
            backoff: Backoff {
                spin_limit: config.spin_limit,
                yield_limit: config.yield_limit,
            },
            liveness_interval: config.liveness_interval.max(Duration::from_millis(1)),
            on_lost: config.on_lost,
        };
        let created = persisted.is_none();
        let history = r.control.history();
        match persisted {
            Some((p, saved)) => {
                // A position saved before a rewrite of the history, past its point, saw records
                // that are gone: refused whatever the data at its offset says now (the seq may
                // have been assigned again at exactly the same place).
                if let Some(from) = history.rewritten_since(saved) {
                    if p.next_seq > from {
                        return Err(Error::HistoryRewritten {
                            path: r.dir.reader_meta(config.name.as_deref().unwrap_or("")),
                            wanted_seq: p.next_seq,
                            rewritten_from: from,
                            saved_epoch: saved,
                            queue_epoch: history.epoch,
                        });
                    }
                }
                r.restore(p)?;
            }
            None => r.seek(config.start)?,
        }
        r.placed(history.epoch);
        if r.meta.is_some() {
            r.commit()?;
            if let Some(m) = r.meta.as_ref().filter(|_| created) {
                m.sync()?;
            }
        }
        Ok(r)
    }

    /// Next record, or `None` if the reader is at the tail. Never returns a torn record.
    ///
    /// Errors: `Corrupted` when a record fails validation or its CRC (see [`skip_record`]),
    /// `PositionLost` when the next segment was deleted by retention.
    ///
    /// [`skip_record`]: QueueReader::skip_record
    #[inline]
    #[allow(clippy::should_implement_trait)] // lending: the view borrows the reader
    pub fn next(&mut self) -> Result<Option<MessageView<'_>>> {
        if self.auto_commit && self.uncommitted {
            self.commit_position();
        }
        let h = match self.peeked.take() {
            Some(h) => h,
            None => match self.head()? {
                Some(h) => h,
                None => return Ok(None),
            },
        };
        self.offset = h.next;
        // Wrapping: a damaged segment header can put seq at u64::MAX (the next record then
        // fails validation instead of overflowing).
        self.next_seq = h.seq.wrapping_add(1);
        self.last_ts = h.timestamp_ns;
        self.uncommitted = true;
        self.hb_countdown -= 1;
        if self.hb_countdown == 0 {
            self.busy_heartbeat();
        }
        Ok(Some(self.view(&h)))
    }

    /// Reads the records that are there now, up to `max`, handing each to `f`; returns how many
    /// it handed out (0 at the tail). It never waits. A burst costs what `next` in a loop costs,
    /// except that with [`CommitPolicy::OnNext`](crate::CommitPolicy::OnNext) the position is
    /// committed once, after `f` returned for the last record, instead of once per record.
    ///
    /// Errors: those of `next`. Records handed to `f` before the error stay consumed (and, with
    /// `OnNext`, committed); the failing one is where the reader stands, as after `next`.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(MessageView<'_>)) -> Result<usize> {
        let auto = std::mem::replace(&mut self.auto_commit, false);
        if auto && self.uncommitted {
            self.commit_position();
        }
        let mut n = 0;
        let ended = loop {
            if n == max {
                break Ok(n);
            }
            match self.next() {
                Ok(Some(m)) => {
                    f(m);
                    n += 1;
                }
                Ok(None) => break Ok(n),
                Err(e) => break Err(e),
            }
        };
        self.auto_commit = auto;
        if auto && self.uncommitted {
            self.commit_position();
        }
        ended
    }

    /// The record `next` would return, validated (CRC included), without consuming it: the
    /// position does not move, so a following `next` returns the same record without validating
    /// it again. Used by fan-in merging to look at every source's head before choosing one.
    #[inline]
    pub fn peek(&mut self) -> Result<Option<MessageView<'_>>> {
        let h = match self.peeked {
            Some(h) => h,
            None => match self.head()? {
                Some(h) => {
                    self.peeked = Some(h);
                    h
                }
                None => return Ok(None),
            },
        };
        Ok(Some(self.view(&h)))
    }

    #[inline]
    fn view(&self, h: &CheckedRecord) -> MessageView<'_> {
        let payload = self
            .seg
            .bytes(h.offset + RECORD_HEADER_SIZE, u64::from(h.len))
            .unwrap_or(&[]);
        MessageView {
            seq: h.seq,
            timestamp_ns: h.timestamp_ns,
            type_id: h.type_id,
            payload,
        }
    }

    /// Validates the record at the position (following PADs and skipping ABORTED records) and
    /// returns it without consuming it.
    #[inline]
    fn head(&mut self) -> Result<Option<CheckedRecord>> {
        let found = self.seek_data(|r, d| r.check(d))?;
        if found.is_none() {
            // Idle at the tail: keep the translation (and a line) of the page two ahead
            // warm, so crossing into a new page costs less on the critical path of the
            // next record (with the writer's own prefetch, see DESIGN.md section 3 and the
            // `latency_anatomy` example for the measurement). Two pages ahead, not one, so
            // it never contends for the line the writer is prefetching for ownership
            // (`QueueWriter::publish`).
            self.seg.prefetch(self.offset + READ_PREFETCH_AHEAD, false);
            self.fault_ahead();
            self.idle_heartbeat();
            if self.hole_check == 0 {
                self.check_hole()?;
            }
            self.hole_check -= 1;
        }
        Ok(found)
    }

    /// The checks `next` makes beyond the record cursor's: the expected sequence number, the
    /// length copy, and the CRC unless disabled.
    #[inline(always)]
    fn check(&self, d: DataRecord<'_>) -> Result<CheckedRecord> {
        let h = d.header();
        if h.seq != self.next_seq {
            return Err(Error::corrupted(
                &self.seg.path,
                d.offset,
                "unexpected sequence number",
            ));
        }
        if h.payload_len != d.len {
            return Err(Error::corrupted(
                &self.seg.path,
                d.offset,
                "length fields disagree",
            ));
        }
        if self.verify_crc && !d.crc_matches() {
            return Err(Error::corrupted(&self.seg.path, d.offset, "CRC mismatch"));
        }
        Ok(CheckedRecord {
            offset: d.offset,
            next: d.next,
            seq: h.seq,
            timestamp_ns: h.timestamp_ns,
            type_id: h.type_id,
            len: d.len,
        })
    }

    /// An empty slot is the tail only in the segment the writer writes: if the published tail
    /// names a later segment, the pages here were lost (a power cut with `PageCache`, DESIGN.md
    /// section 8) and waiting would wait forever. Run at the first idle poll and then every
    /// `HOLE_CHECK_EVERY` (it reads the tail's line, which the writer stores on every commit).
    #[cold]
    #[inline(never)]
    fn check_hole(&mut self) -> Result<()> {
        self.hole_check = HOLE_CHECK_EVERY;
        no_hole_at(&self.control, &self.seg, self.offset)
    }

    /// Skips the record at the current position (after a `Corrupted` error). If its length is
    /// unusable, skips to the next segment. Returns the number of sequence numbers skipped.
    pub fn skip_record(&mut self) -> Result<u64> {
        self.peeked = None;
        let next = match record::slot_at(&self.seg, &self.geom, self.offset) {
            Ok(Slot::Data(d)) => d.next,
            _ => return self.skip_segment(),
        };
        let Some(next_seq) = self.next_seq.checked_add(1) else {
            return Err(Error::corrupted(
                &self.seg.path,
                self.offset,
                "sequence number overflows",
            ));
        };
        self.offset = next;
        self.next_seq = next_seq;
        self.uncommitted = true;
        Ok(1)
    }

    fn skip_segment(&mut self) -> Result<u64> {
        let before = self.next_seq;
        self.enter_next_segment()?;
        Ok(self.next_seq.saturating_sub(before))
    }

    /// True when `next` would return a record (or move to the next segment) right now.
    #[inline]
    pub fn has_next(&self) -> bool {
        self.seg
            .commit_at(self.offset)
            .is_some_and(|w| w.load(Ordering::Acquire) != 0)
    }

    /// Waits until a record is available, the timeout passes, or the writer is found gone.
    /// Spins, yields, then sleeps on the queue's futex (the writer wakes it on commit).
    pub fn wait(&mut self, timeout: Duration) -> Result<WaitOutcome> {
        let until = Instant::now() + timeout;
        loop {
            if self.has_next() {
                return Ok(WaitOutcome::Ready);
            }
            let seg = &self.seg;
            let offset = self.offset;
            let outcome = wait::wait_until(
                self.control.cb(),
                self.control.is_writable(),
                self.backoff,
                until,
                self.liveness_interval,
                || {
                    seg.commit_at(offset)
                        .is_some_and(|w| w.load(Ordering::Acquire) != 0)
                },
            );
            match outcome {
                NotifyWaitOutcome::Ready => return Ok(WaitOutcome::Ready),
                NotifyWaitOutcome::Deadline => {
                    return Ok(match self.writer_status() {
                        s @ (WriterStatus::Dead | WriterStatus::Closed) => {
                            WaitOutcome::WriterGone(s)
                        }
                        _ => WaitOutcome::TimedOut,
                    });
                }
                NotifyWaitOutcome::Slice => {
                    self.busy_heartbeat();
                    let s = self.writer_status();
                    if matches!(s, WriterStatus::Dead | WriterStatus::Closed) && !self.has_next() {
                        return Ok(WaitOutcome::WriterGone(s));
                    }
                }
            }
        }
    }

    /// The writer's liveness, from its lock (a live process holds it) and the state word.
    pub fn writer_status(&mut self) -> WriterStatus {
        if self.lock_probe.is_none() {
            self.lock_probe = sys::open_ro_nofollow(&self.dir.lock()).ok();
        }
        if let Some(f) = &self.lock_probe {
            if sys::is_locked(f).unwrap_or(false) {
                return WriterStatus::Alive;
            }
        }
        match self.control.cb().writer_state.load(Ordering::Acquire) {
            WRITER_NEVER => WriterStatus::Never,
            WRITER_CLOSED => WriterStatus::Closed,
            _ => WriterStatus::Dead,
        }
    }

    /// Persists the position after the last record returned (named readers; no-op otherwise).
    /// A few stores into the mapped meta file: cheap enough to call after every record.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_position();
        Ok(())
    }

    /// Persists `pos`, a position this reader had earlier (from [`position`](Self::position)),
    /// instead of the current one: for consumers that answer records out of order and may only
    /// commit up to the first record not yet answered. The reader itself stays where it is. A
    /// position past the current one is [`Error::InvalidConfig`] (a reader cannot vouch for
    /// records it has not read). No-op for anonymous readers.
    pub fn commit_at(&mut self, pos: Position) -> Result<()> {
        if pos.next_seq > self.next_seq || pos.segment > self.seg.id {
            return Err(Error::InvalidConfig {
                what: "commit_at: the position is past the reader's own",
            });
        }
        if self.control.history_epoch() != self.hist_seen {
            self.adopt_history();
        }
        if let Some(m) = &self.meta {
            m.store_position(&pos, self.hist_epoch);
            self.uncommitted = pos.next_seq != self.next_seq;
            if self.hb_countdown < HEARTBEAT_EVERY / 2 {
                self.busy_heartbeat();
            }
        }
        Ok(())
    }

    #[inline]
    fn commit_position(&mut self) {
        if self.control.history_epoch() != self.hist_seen {
            self.adopt_history();
        }
        if let Some(m) = &self.meta {
            m.store_position(
                &Position {
                    next_seq: self.next_seq,
                    segment: self.seg.id,
                    offset: self.offset,
                    timestamp_ns: self.last_ts,
                },
                self.hist_epoch,
            );
            self.uncommitted = false;
            if self.hb_countdown < HEARTBEAT_EVERY / 2 {
                self.busy_heartbeat();
            }
        }
    }

    /// The queue's history record (DESIGN.md section 8): for consumers that keep their own
    /// state keyed by this queue's seqs (a journal, an import table) and must not take a
    /// re-assigned seq for the one they saw.
    pub fn history(&self) -> crate::control::History {
        self.control.history()
    }

    /// The queue's current history epoch alone (one relaxed load of `queue.meta`; a change is
    /// followed by a consistent [`history`](Self::history)). It can be ahead of
    /// [`history_epoch`](Self::history_epoch) until this reader's next commit.
    #[inline]
    pub fn queue_history_epoch(&self) -> u64 {
        self.control.history_epoch()
    }

    /// The history epoch this reader's positions are valid under.
    pub fn history_epoch(&self) -> u64 {
        self.hist_epoch
    }

    /// The reader was just placed (open, `seek`) at a position checked against the queue as
    /// it is under history epoch `epoch`.
    fn placed(&mut self, epoch: u64) {
        self.hist_epoch = epoch;
        self.hist_seen = epoch;
        self.hist_start = self.next_seq;
    }

    /// A recovering writer recorded a rewrite of the history while this reader was open.
    /// The reader was placed before the writer recovered: if at or before the rewrite point,
    /// it could read only records that survived (it stops where recovery ends history) and
    /// after that the new ones, so its positions are valid under the new epoch; if past it, it
    /// was reading records that recovery dropped, and its positions keep their old epoch, so
    /// that the next open refuses them (`HistoryRewritten`).
    #[cold]
    #[inline(never)]
    fn adopt_history(&mut self) {
        let h = self.control.history();
        self.hist_seen = h.epoch;
        if h.rewritten_since(self.hist_epoch)
            .is_some_and(|from| self.hist_start <= from)
        {
            self.hist_epoch = h.epoch;
        }
    }

    /// Refreshes the named reader's heartbeat (no-op for anonymous readers), so retention keeps
    /// honouring it while the reader is idle for longer than the retention `reader_ttl`.
    pub fn heartbeat(&mut self) {
        self.busy_heartbeat();
    }

    /// While idle at the tail, maps the pages ahead of the position into this process, one
    /// page per idle poll, up to `FAULT_AHEAD` bytes ahead. The reader's mapping is not
    /// pre-populated, so otherwise the first read of every fault-around block (64 KiB by
    /// default) takes a page fault of a few microseconds on the record's critical path:
    /// measured, one record in 62 at 1 KiB paid it (which made it the p99). Touching a page
    /// that is already mapped costs a load. Also the idle moment for the two other pieces of
    /// read-ahead work: opening the next segment near the end of this one, and releasing the
    /// segment left behind.
    #[inline]
    fn fault_ahead(&mut self) {
        let (id, mut to) = self.faulted;
        if id != self.seg.id {
            to = self.offset & !(PAGE - 1);
        }
        if to < self.offset + FAULT_AHEAD {
            // The page's last word: the writer reaches it last, and prefetches it for
            // ownership (one page ahead of itself) well after this touch.
            self.seg.touch(to + PAGE - 8);
            to += PAGE;
        }
        self.faulted = (self.seg.id, to);
        if to >= self.seg.len() && self.next_seg.is_none() {
            self.preopen_next();
        }
        if self.retired.is_some() {
            self.release_retired();
        }
    }

    /// Releases `RELEASE_STEP` bytes of the retired segment's mapping per call; unmaps it once
    /// all is released.
    #[cold]
    #[inline(never)]
    fn release_retired(&mut self) {
        let Some((seg, done)) = &mut self.retired else {
            return;
        };
        if *done >= seg.len() {
            self.retired = None;
            return;
        }
        // SAFETY: the retired segment is only held to be unmapped: no view into it exists
        // (views borrow the reader, and the position moved to the next segment).
        unsafe { seg.release(*done, RELEASE_STEP) };
        *done += RELEASE_STEP;
    }

    /// Opens segment `id + 1` ahead of the PAD that leads to it (the writer prepares it in the
    /// background, so it usually exists well before it is needed) and maps its first page.
    /// At most one attempt every `PREOPEN_RETRY` idle polls while it does not exist yet.
    #[cold]
    #[inline(never)]
    fn preopen_next(&mut self) {
        if self.preopen_backoff > 0 {
            self.preopen_backoff -= 1;
            return;
        }
        match Segment::open_ro(&self.dir, self.seg.id + 1, &self.geom) {
            Ok(s) => {
                s.touch(SEGMENT_HEADER_SIZE);
                self.next_seg = Some(s);
            }
            // Not there yet, or not valid yet (its header is published last): entering it
            // will open it the usual way and report what is wrong then.
            Err(_) => self.preopen_backoff = PREOPEN_RETRY,
        }
    }

    /// Heartbeat from an idle `next` (rate-limited so a spinning reader stays cheap).
    #[inline]
    fn idle_heartbeat(&mut self) {
        if self.meta.is_some() {
            self.idle_polls = self.idle_polls.wrapping_add(1);
            if self.idle_polls % IDLE_HEARTBEAT_EVERY == 0 {
                self.busy_heartbeat();
            }
        }
    }

    #[cold]
    fn busy_heartbeat(&mut self) {
        self.hb_countdown = HEARTBEAT_EVERY;
        if let Some(m) = &self.meta {
            m.heartbeat(sys::realtime_coarse_ns());
        }
    }

    /// The current position (the next record to read).
    pub fn position(&self) -> Position {
        Position {
            next_seq: self.next_seq,
            segment: self.seg.id,
            offset: self.offset,
            timestamp_ns: self.last_ts,
        }
    }

    /// Sequence number of the next record this reader will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The writer's published tail (for lag computations).
    pub fn tail(&self) -> Tail {
        self.control.tail()
    }

    /// The queue's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    /// The writer's watermark: no record appended from now on carries an earlier timestamp
    /// (the later of the last record's timestamp and the last [`QueueWriter::heartbeat`]).
    /// Used by fan-in merging to release records without waiting on an idle source.
    ///
    /// [`QueueWriter::heartbeat`]: crate::QueueWriter::heartbeat
    pub fn watermark_ns(&self) -> u64 {
        let cb = self.control.cb();
        // SYNC POINT: Acquire pairs with the writer's `fence(Release)` in `publish_tail`, which
        // orders the commit word of the last record before `last_timestamp_ns`: seeing a
        // timestamp here means the record carrying it is visible. (A single word: no seqlock.)
        let last = cb.last_timestamp_ns.load(Ordering::Acquire);
        last.max(self.heartbeat_watermark_ns())
    }

    /// The watermark of the writer's last [`QueueWriter::heartbeat`] only. It lives on a line
    /// the writer does not touch on commits, so polling it does not slow the writer; a merger
    /// combines it with the timestamps of the records it has already seen.
    ///
    /// [`QueueWriter::heartbeat`]: crate::QueueWriter::heartbeat
    pub fn heartbeat_watermark_ns(&self) -> u64 {
        // SYNC POINT: Acquire pairs with the Release store in `QueueWriter::heartbeat`: records
        // committed before that heartbeat are visible once this value is seen.
        self.control.cb().watermark_ns.load(Ordering::Acquire)
    }

    /// If the writer announced that it is idle ([`QueueWriter::idle`]), a watermark valid now:
    /// the current CLOCK_REALTIME, which no record the writer appends from now on can be
    /// stamped before; and every record it committed before announcing is visible. `None` while
    /// the writer is busy (or never announces).
    ///
    /// [`QueueWriter::idle`]: crate::QueueWriter::idle
    pub fn idle_watermark_ns(&self) -> Option<u64> {
        let now = sys::realtime_ns();
        sys::clock_fence();
        // SYNC POINT: clock read -> fence -> load, against the writer's store -> fence -> clock
        // read in `QueueWriter::leave_idle_slow` (see there).
        std::sync::atomic::fence(Ordering::SeqCst);
        // SYNC POINT: Acquire pairs with the Release store in `QueueWriter::idle`.
        (self.control.cb().writer_idle.load(Ordering::Acquire) != 0).then_some(now)
    }

    /// Whether the writer's idle announcement is up (a cheap check; see
    /// [`idle_watermark_ns`](Self::idle_watermark_ns) for the watermark it implies).
    pub fn writer_idle(&self) -> bool {
        // Relaxed: a hint for waiting; the watermark itself is read by `idle_watermark_ns`.
        self.control.cb().writer_idle.load(Ordering::Relaxed) != 0
    }

    /// Moves the reader. For a named reader the new position is not persisted until `commit`.
    pub fn seek(&mut self, to: StartAt) -> Result<()> {
        let epoch = self.control.history().epoch;
        self.seek_to(to)?;
        self.placed(epoch);
        Ok(())
    }

    fn seek_to(&mut self, to: StartAt) -> Result<()> {
        match to {
            StartAt::Earliest => {
                let (seg, base) = open_earliest(&self.dir, &self.control, &self.geom)?;
                self.set_pos(seg, SEGMENT_HEADER_SIZE, base);
                Ok(())
            }
            StartAt::Latest => {
                let tail = self.control.tail();
                let seg = match Segment::open_ro(&self.dir, tail.segment, &self.geom) {
                    Ok(s) => s,
                    Err(e) if e.is_not_found() => {
                        open_earliest(&self.dir, &self.control, &self.geom)?.0
                    }
                    Err(e) => return Err(e),
                };
                // The published tail is a hint: before the first writer publishes it (a queue
                // being created) it is all zeroes, and a damaged control block can hold anything.
                // Use it only when it is a plausible record position in this segment; otherwise
                // walk from the start of the segment.
                let plausible = tail.offset >= SEGMENT_HEADER_SIZE
                    && tail.offset % 8 == 0
                    && tail.offset <= self.geom.data_end();
                let (offset, seq) = if seg.id == tail.segment && plausible {
                    (tail.offset, tail.next_seq)
                } else {
                    (SEGMENT_HEADER_SIZE, seg.base_seq())
                };
                self.set_pos(seg, offset, seq);
                // The published tail may trail the writer by a record: skip what is committed.
                self.skip_while(|_, _| true)
            }
            StartAt::Seq(target) => self.seek_seq(target),
            StartAt::Timestamp(t) => self.seek_time(t),
        }
    }

    fn set_pos(&mut self, seg: Segment, offset: u64, next_seq: u64) {
        self.peeked = None;
        self.next_seg = None;
        self.seg = seg;
        self.offset = offset;
        self.next_seq = next_seq;
        self.uncommitted = true;
    }

    /// Advances over committed records while `keep(seq, timestamp)` holds, without CRC checks.
    fn skip_while(&mut self, keep: impl Fn(u64, u64) -> bool) -> Result<()> {
        self.peeked = None;
        loop {
            let Some((seq, ts, next)) = self.seek_data(|_, d| {
                let h = d.header();
                Ok((h.seq, h.timestamp_ns, d.next))
            })?
            else {
                return Ok(());
            };
            if !keep(seq, ts) {
                self.next_seq = seq;
                return Ok(());
            }
            self.offset = next;
            self.next_seq = seq.wrapping_add(1);
            self.last_ts = ts;
        }
    }

    fn seek_seq(&mut self, target: u64) -> Result<()> {
        let tail = self.control.tail();
        // Segments past the published tail's are prepared ahead (their base seq not set yet)
        // and passed over, unless the walk to the real end went through them: the published
        // tail can trail far behind after a power cut (a stale `queue.meta` page).
        let mut newest = tail.segment;
        if target > tail.next_seq {
            // The published tail may trail by a record; check the real end before refusing.
            self.seek_to(StartAt::Latest)?;
            if target > self.next_seq {
                return Err(Error::SeqNotWritten {
                    wanted_seq: target,
                    next_seq: self.next_seq,
                });
            }
            newest = newest.max(self.seg.id);
        }
        let ids = self.dir.list_reachable_segments()?;
        // Newest segment whose base seq is <= target. A segment that does not open (damaged)
        // is passed over: if the target lies in it, the walk from its predecessor runs into
        // it and reports it; if the target lies after it, the damage is no concern of ours.
        let mut chosen = None;
        let mut damaged = None;
        for &id in ids.iter().rev().filter(|&&id| id <= newest) {
            match Segment::open_ro(&self.dir, id, &self.geom) {
                Ok(s) if s.base_seq() <= target => {
                    chosen = Some(s);
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.is_not_found() => continue,
                Err(e) => damaged = Some(e),
            }
        }
        let Some(seg) = chosen else {
            if let Some(e) = damaged {
                return Err(e);
            }
            let oldest = self.control.cb().oldest_seq.load(Ordering::Acquire);
            return self.lost(target, oldest);
        };
        let base = seg.base_seq();
        let start = Index::open(&self.dir, seg.id, &self.geom, false)
            .ok()
            .and_then(|idx| idx.floor(target, |e| e.seq))
            // An index that reached the disk ahead of its segment's pages (power loss) names
            // records that are not there: use an entry only where its record is.
            .filter(|e| holds_record(&seg, &self.geom, e.offset, e.seq));
        match start {
            Some(e) => self.set_pos(seg, e.offset, e.seq),
            None => self.set_pos(seg, SEGMENT_HEADER_SIZE, base),
        }
        self.skip_while(|seq, _| seq < target)?;
        if self.next_seq < target {
            // Stopped at an empty slot: the tail, unless the queue goes on in a later segment.
            self.check_hole()?;
            return Err(Error::SeqNotWritten {
                wanted_seq: target,
                next_seq: self.next_seq,
            });
        }
        if self.next_seq > target {
            // The chosen segment starts at or before `target` and seqs are contiguous within a
            // queue, so jumping past it means a damaged record (or index), not retention.
            return Err(Error::corrupted(
                &self.seg.path,
                self.offset,
                "sequence numbers are not contiguous",
            ));
        }
        Ok(())
    }

    fn lost(&mut self, wanted: u64, oldest: u64) -> Result<()> {
        if self.on_lost == OnLost::Earliest {
            self.seek_to(StartAt::Earliest)
        } else {
            Err(Error::PositionLost {
                wanted_seq: wanted,
                oldest_seq: Some(oldest),
            })
        }
    }

    fn seek_time(&mut self, t: u64) -> Result<()> {
        let tail = self.control.tail();
        let ids = self.dir.list_reachable_segments()?;
        // Last segment whose first record is older than t (else the oldest).
        let mut chosen: Option<(Segment, Option<Index>)> = None;
        for &id in ids.iter().filter(|&&id| id <= tail.segment) {
            let seg = match Segment::open_ro(&self.dir, id, &self.geom) {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                // Damaged: passed over like in `seek_seq` (a walk that reaches it reports it).
                Err(_) => continue,
            };
            let idx = Index::open(&self.dir, id, &self.geom, false).ok();
            let first_ts = idx.as_ref().and_then(|i| i.get(0)).map(|e| e.timestamp_ns);
            match first_ts {
                Some(ts) if ts < t => chosen = Some((seg, idx)),
                Some(_) => {
                    if chosen.is_none() {
                        chosen = Some((seg, idx));
                    }
                    break;
                }
                None => {
                    if chosen.is_none() {
                        chosen = Some((seg, idx));
                    }
                    break;
                }
            }
        }
        let Some((seg, idx)) = chosen else {
            return self.seek_to(StartAt::Earliest);
        };
        let start = idx
            .and_then(|i| i.floor(t.saturating_sub(1), |e| e.timestamp_ns))
            // An index that reached the disk ahead of its segment's pages (power loss) names
            // records that are not there: use an entry only where its record is.
            .filter(|e| holds_record(&seg, &self.geom, e.offset, e.seq));
        let base = seg.base_seq();
        match start {
            Some(e) => self.set_pos(seg, e.offset, e.seq),
            None => self.set_pos(seg, SEGMENT_HEADER_SIZE, base),
        }
        self.skip_while(|_, ts| ts < t)
    }

    /// Restores a persisted position, verifying it against the data: the record the position
    /// names must be at its offset, or the position must lead to it over PADs and ABORTED
    /// regions only (a reader that stopped at a segment's end or at a record a dead writer
    /// tore). Otherwise the sequence number decides: `SeqNotWritten` when the queue does not
    /// reach it (its tail was lost, e.g. in a power cut), `PositionMismatch` when it is
    /// elsewhere (the lost sequence numbers were assigned again). Never lands mid-record.
    fn restore(&mut self, p: Position) -> Result<()> {
        let reachable = self.dir.list_reachable_segments()?;
        if reachable.first().is_some_and(|&first| p.segment < first) {
            // Removed by retention (perhaps back after a power cut, unreachable: see
            // `QueueDir::list_reachable_segments`).
            let oldest = self.control.cb().oldest_seq.load(Ordering::Acquire);
            let oldest = match reachable.first() {
                Some(&id) => Segment::open_ro(&self.dir, id, &self.geom)
                    .map_or(oldest, |s| s.base_seq().max(oldest)),
                None => oldest,
            };
            return self.lost(p.next_seq, oldest);
        }
        let seg = match Segment::open_ro(&self.dir, p.segment, &self.geom) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                let oldest = self.control.cb().oldest_seq.load(Ordering::Acquire);
                if p.next_seq < oldest {
                    return self.lost(p.next_seq, oldest);
                }
                // Not retention: recovery removed the segment because history now ends before
                // it (a power cut). `SeqNotWritten` while the seq is beyond the tail; once it
                // was assigned again, in another file, the position does not match.
                self.seek_seq(p.next_seq)?;
                if self.offset == SEGMENT_HEADER_SIZE
                    && self.seg.id > p.segment
                    && self.seg.base_seq() == p.next_seq
                {
                    // The position was at the segment's end (its PAD), and retention removed
                    // the segment just now (it advances `oldest_seq` to exactly this seq).
                    self.last_ts = p.timestamp_ns;
                    return Ok(());
                }
                return Err(Error::PositionMismatch {
                    path: self.dir.segment(p.segment),
                    offset: p.offset,
                    wanted_seq: p.next_seq,
                    found_segment: self.seg.id,
                    found_offset: self.offset,
                });
            }
            Err(e) => return Err(e),
        };
        let plausible = p.offset >= SEGMENT_HEADER_SIZE
            && p.offset % 8 == 0
            && p.offset <= self.geom.data_end();
        if !plausible {
            // A damaged meta: the sequence number is all that is left of the position.
            return self.seek_seq(p.next_seq);
        }
        if !holds_record(&seg, &self.geom, p.offset, p.next_seq) {
            // Where the sequence number really is (or `SeqNotWritten` beyond the true tail)...
            self.seek_seq(p.next_seq)?;
            let found = (self.seg.id, self.offset);
            // ...and whether the saved offset leads there without passing a DATA record.
            let (offset, path) = (p.offset, seg.path.clone());
            self.set_pos(seg, offset, p.next_seq);
            let leads =
                self.skip_while(|_, _| false).is_ok() && (self.seg.id, self.offset) == found;
            if !leads {
                // Lost pages rather than re-assigned seqs (before recovery): the records of the
                // position's segment stop at an empty slot no later than the position, with no
                // PAD, while the queue goes on in a later segment.
                if let Ok(seg) = Segment::open_ro(&self.dir, p.segment, &self.geom) {
                    let base = seg.base_seq();
                    self.set_pos(seg, SEGMENT_HEADER_SIZE, base);
                    if self.skip_while(|_, _| true).is_ok()
                        && self.seg.id == p.segment
                        && self.offset <= offset
                    {
                        no_hole_at(&self.control, &self.seg, self.offset)?;
                    }
                }
                return Err(Error::PositionMismatch {
                    path,
                    offset,
                    wanted_seq: p.next_seq,
                    found_segment: found.0,
                    found_offset: found.1,
                });
            }
            self.next_seq = p.next_seq;
            self.last_ts = p.timestamp_ns;
            return Ok(());
        }
        self.set_pos(seg, p.offset, p.next_seq);
        self.last_ts = p.timestamp_ns;
        Ok(())
    }
}

/// The reader walks records with the shared cursor; a PAD leads it to the next segment as the
/// reader's `OnLost` policy says.
impl RecordCursor for QueueReader {
    #[inline(always)]
    fn segment(&self) -> &Segment {
        &self.seg
    }

    #[inline(always)]
    fn geometry(&self) -> &Geometry {
        &self.geom
    }

    #[inline(always)]
    fn offset(&self) -> u64 {
        self.offset
    }

    #[inline(always)]
    fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    fn enter_next_segment(&mut self) -> Result<()> {
        self.peeked = None;
        let id = self.seg.id + 1;
        let opened = match self.next_seg.take() {
            // Still the file that is at the path (a segment left prepared by a writer that
            // died is replaced by its successor's own).
            Some(s) if s.id == id && s.is_at_path() => Ok(s),
            _ => Segment::open_ro(&self.dir, id, &self.geom),
        };
        match opened {
            Ok(s) => {
                self.next_seq = s.base_seq();
                let old = std::mem::replace(&mut self.seg, s);
                self.retired = Some((old, 0));
                self.offset = SEGMENT_HEADER_SIZE;
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                let oldest = self.control.cb().oldest_seq.load(Ordering::Acquire);
                if self.on_lost == OnLost::Earliest {
                    let from = self.seg.id;
                    self.seek(StartAt::Earliest)?;
                    if self.seg.id <= from {
                        // Going back would loop: the PAD points at a segment that never existed.
                        return Err(Error::corrupted(
                            &self.seg.path,
                            0,
                            "PAD leads to a missing segment",
                        ));
                    }
                    Ok(())
                } else {
                    Err(Error::PositionLost {
                        wanted_seq: self.next_seq,
                        oldest_seq: Some(oldest),
                    })
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// `Corrupted` when the slot at `offset` of `seg` is empty although the published tail names a
/// later segment: pages were lost there (see `QueueReader::check_hole`).
fn no_hole_at(control: &Control, seg: &Segment, offset: u64) -> Result<()> {
    // The writer Release-stores the PAD before it publishes a later tail segment (`roll`), and
    // `tail()` Acquire-reads the tail: a later segment seen here means a PAD would be visible at
    // the end of this one. So the tail is read first, the slot after.
    let tail = control.tail();
    let empty = seg
        .commit_at(offset)
        .is_some_and(|w| w.load(Ordering::Acquire) == 0);
    if tail.segment > seg.id && empty {
        return Err(Error::corrupted(
            &seg.path,
            offset,
            "no record here, but the queue continues in a later segment (pages lost)",
        ));
    }
    Ok(())
}

/// True when a committed DATA record carrying `seq` starts at `offset` of `seg` (header only:
/// the CRC is checked when the record is read).
fn holds_record(seg: &Segment, geom: &Geometry, offset: u64, seq: u64) -> bool {
    if offset < SEGMENT_HEADER_SIZE || offset % 8 != 0 || offset >= geom.data_end() {
        return false;
    }
    record::data_header_at(seg, offset).is_some_and(|h| h.seq == seq)
}

/// Opens a segment to hold until the reader seeks: the newest published one that opens, so
/// that damage confined to old segments stops only the readers that run into it.
fn open_placeholder(dir: &QueueDir, control: &Control, geom: &Geometry) -> Result<Segment> {
    let tail = control.tail();
    let ids = dir.list_reachable_segments()?;
    let newest_published = tail.segment.max(ids.first().copied().unwrap_or(0));
    let mut damaged = None;
    for &id in ids.iter().rev().filter(|&&id| id <= newest_published) {
        match Segment::open_ro(dir, id, geom) {
            Ok(s) => return Ok(s),
            Err(e) if e.is_not_found() => continue,
            Err(e) => damaged = Some(e),
        }
    }
    match damaged {
        Some(e) => Err(e),
        // None present (or all removed while listing): the oldest, with its retries.
        None => open_earliest(dir, control, geom).map(|(s, _)| s),
    }
}

/// Opens the oldest segment still present; returns it and its base sequence number.
fn open_earliest(dir: &QueueDir, control: &Control, geom: &Geometry) -> Result<(Segment, u64)> {
    for _attempt in 0..8 {
        let tail = control.tail();
        let ids = dir.list_reachable_segments()?;
        for &id in ids
            .iter()
            .filter(|&&id| id <= tail.segment.max(ids.first().copied().unwrap_or(0)))
        {
            match Segment::open_ro(dir, id, geom) {
                Ok(s) => {
                    let base = s.base_seq();
                    return Ok((s, base));
                }
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        if ids.is_empty() {
            break;
        }
    }
    // A writer creates `queue.meta` first and its first segment right after: a queue without a
    // segment is one still being created (or emptied by hand), not a damaged one.
    Err(Error::NotYetInitialized {
        path: dir.segments(),
    })
}
