//! Timestamp fan-in: one ordered stream out of many queues.
//!
//! # Merge rule
//!
//! [`FanInReader`] is a k-way merge of its sources' records by the key
//! **(timestamp_ns, source id, seq)**, compared lexicographically. The timestamp is the one the
//! writer stamped in the record; the source id is [`SourceId::of`] the source name (FNV-1a, stable
//! across processes and runs); seq is the record's sequence number in its queue. Keys are unique,
//! so the order is total and the output is deterministic: the same records give the same merged
//! sequence whatever the arrival interleaving. Each source's records stay in queue order; when
//! every source's timestamps are non-decreasing (the queue engine stamps them so), the merged
//! stream is exactly the records sorted by key. A source whose timestamps go backwards (explicit
//! `append_at`) is still emitted in its queue order, and its out-of-order records count as late.
//!
//! # Modes
//!
//! - [`MergeMode::Replay`]: a source with no record pending is treated as finished *for now*;
//!   the minimum pending head is emitted at once. This is exact for history (queues nobody is
//!   appending to) and is the fastest mode (no watermark or liveness reads).
//! - [`MergeMode::Live`]: a pending head with key K from source A is emitted only when no other
//!   source can still produce a smaller key: for every other source B without a pending record,
//!   B's *effective watermark* W_B satisfies (W_B, B) > (K.ts, A). The effective watermark is the
//!   larger of the writer's published watermark ([`QueueReader::watermark_ns`]: its last record's
//!   timestamp or its last heartbeat) and, when a liveness probe found no live writer, the
//!   CLOCK_REALTIME read just before that probe (a writer that starts later stamps later
//!   records later than that), and, while B's writer has announced that it is idle
//!   ([`QueueWriter::idle`](chronicle_core::QueueWriter::idle)), the CLOCK_REALTIME read when the
//!   merger looks ([`QueueReader::idle_watermark_ns`]): an idle writer never holds anybody. Probes run only for sources that block an emission, at most once
//!   per `liveness_probe_interval` each. Sources with a pending record never block (their head
//!   is larger than the one chosen). If `max_hold` is set, a blocked head is emitted anyway once
//!   CLOCK_REALTIME passes its timestamp + `max_hold` (counted in [`FanInStats::forced`]); with
//!   `max_hold = None` a live source that neither writes nor heartbeats stalls the merge.
//!
//! A record whose key is below the largest key already emitted is emitted anyway and counted as
//! late ([`FanInStats::late`]): this happens only when `max_hold` forced an earlier emission, when
//! a source is added with records older than what was already emitted, or with clock steps.
//!
//! # Adding and removing sources
//!
//! [`add_source`](FanInReader::add_source) opens the queue (a named reader resumes at its
//! persisted position, otherwise at `start`). [`remove_source`](FanInReader::remove_source) with
//! `drain = true` keeps merging the source until it has no pending record, then drops it (the
//! records a strategy committed before it stopped are delivered); with `drain = false` it is
//! dropped at once. Removal never commits.
//!
//! # Delivery semantics
//!
//! `next` returns a record without consuming it; the following `next` or `commit` consumes it.
//! [`commit`](FanInReader::commit) persists, for every source, the position after the last record
//! returned from it (named readers, `FanInConfig::reader_name`; a few stores per source, no
//! system call). A router that hands each record on and then commits gets **at-least-once**
//! delivery with exact resume: after a crash it restarts at the committed positions, so exactly
//! the records returned after the last `commit` (at most one if it commits after every record)
//! are delivered again, none is lost. For exactly-once, record (source id, seq) in the output and
//! skip what is already there on restart ([`seek_source`](FanInReader::seek_source)).
//!
//! # Waiting
//!
//! [`wait`](FanInReader::wait) sleeps on the bus doorbell (one futex word every strategy writer
//! rings after each commit and heartbeat) instead of polling N queues, with a timeout capped by
//! the hold deadline and the next liveness probe.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chronicle_core::{
    CommitPolicy, Doorbell, DoorbellWaitOutcome, MessageView, Position, QueueReader, ReaderConfig,
    StartAt, WriterStatus, os,
};

use crate::error::{BusError, Result};
use crate::layout::{SourceId, validate_name};

/// How the merger treats a source with nothing pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeMode {
    /// History: a source with nothing pending is done for now. See the module docs.
    Replay,
    /// Live: wait for watermarks (bounded by `max_hold`). See the module docs.
    Live,
}

/// Settings of [`FanInReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanInConfig {
    /// Replay or live.
    pub mode: MergeMode,
    /// Live mode: emit a blocked head anyway once CLOCK_REALTIME passes its timestamp plus this.
    pub max_hold: Option<Duration>,
    /// Name of the per-source named reader (positions persist and hold retention); `None` reads
    /// anonymously.
    pub reader_name: Option<String>,
    /// Where a source without a persisted position starts.
    pub start: StartAt,
    /// Persist positions at every `next` (at-least-once without explicit commits).
    pub commit: CommitPolicy,
    /// The doorbell every source writer rings (the bus doorbell); `wait` polls without it.
    pub doorbell: Option<PathBuf>,
    /// Minimum time between liveness probes of one blocking source.
    pub liveness_probe_interval: Duration,
    /// Verify record CRCs.
    pub verify_crc: bool,
    /// Busy polls before yielding in `wait`.
    pub spin_limit: u32,
    /// Yields before sleeping in `wait`.
    pub yield_limit: u32,
}

impl Default for FanInConfig {
    fn default() -> Self {
        FanInConfig {
            mode: MergeMode::Live,
            max_hold: Some(Duration::from_millis(5)),
            reader_name: None,
            start: StartAt::Earliest,
            commit: CommitPolicy::Manual,
            doorbell: None,
            liveness_probe_interval: Duration::from_micros(200),
            verify_crc: true,
            spin_limit: 2_000,
            yield_limit: 50,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanInStats {
    /// Records returned by `next`.
    pub emitted: u64,
    /// Records emitted because `max_hold` passed, not because watermarks allowed it.
    pub forced: u64,
    /// Records emitted with a key below one emitted before.
    pub late: u64,
    /// Liveness probes run.
    pub probes: u64,
    /// Sources removed after draining.
    pub drained: u64,
}

/// Result of [`FanInReader::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanInWaitOutcome {
    /// Something changed: call `next`.
    Ready,
    /// The timeout passed.
    TimedOut,
}

/// A merged record, borrowed from its source's mapping.
#[derive(Debug, Clone, Copy)]
pub struct Merged<'a> {
    source: SourceId,
    view: MessageView<'a>,
    late: bool,
    at: Position,
    epoch: u64,
}

impl<'a> Merged<'a> {
    /// The source it came from.
    pub fn source(&self) -> SourceId {
        self.source
    }
    /// Sequence number in its source queue.
    pub fn seq(&self) -> u64 {
        self.view.seq()
    }
    /// Writer-stamped timestamp.
    pub fn timestamp_ns(&self) -> u64 {
        self.view.timestamp_ns()
    }
    /// Application type id.
    pub fn type_id(&self) -> u32 {
        self.view.type_id()
    }
    /// Payload (zero-copy).
    pub fn payload(&self) -> &'a [u8] {
        self.view.payload()
    }
    /// True when its key is below a key emitted before (see the module docs).
    pub fn late(&self) -> bool {
        self.late
    }
    /// Where this record starts in its source: committing this position (see
    /// [`FanInReader::commit_with`]) makes a restart read the record again.
    pub fn position(&self) -> Position {
        self.at
    }
    /// The history epoch of its source queue when it was read (see
    /// [`FanInReader::source_history`]): a consumer keeping state keyed by seq compares it
    /// with the epoch its state was checked against.
    pub fn history_epoch(&self) -> u64 {
        self.epoch
    }
    /// The merge key (timestamp, source id, seq).
    pub fn key(&self) -> (u64, u64, u64) {
        (self.view.timestamp_ns(), self.source.0, self.view.seq())
    }
}

type Key = (u64, u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Emit,
    Blocked,
    /// A source without a head got a record meanwhile: refresh and choose again.
    Retry,
}

/// Refresh rounds `next` runs when sources keep receiving records while it decides.
const MAX_ROUNDS: u32 = 8;

#[derive(Debug)]
struct Source {
    id: SourceId,
    name: String,
    path: PathBuf,
    reader: QueueReader,
    head: Option<Key>,
    uncommitted: bool,
    draining: bool,
    /// CLOCK_REALTIME read before the last probe that found no live writer (0: none / alive).
    dead_wm: u64,
    /// Monotonic ns of the last liveness probe.
    probed_at: u64,
    /// Watermark seen when the source was last found without a head (for `wait`).
    seen_wm: u64,
    /// Timestamp of the last record taken from this source: its writer stamps later records no
    /// earlier (known locally, without reading the writer's hot tail line).
    last_ts: u64,
    /// The writer's idle announcement was up when last looked at (for `wait`).
    seen_idle: bool,
}

impl Source {
    /// The smallest timestamp a future record of this source can carry.
    #[inline]
    fn effective_wm(&self) -> u64 {
        // The heartbeat watermark lives on a line the writer touches only when it heartbeats;
        // the tail line it rewrites on every commit is never read here, so merging does not
        // make every commit of every source pay a cache-line transfer.
        self.reader
            .heartbeat_watermark_ns()
            .max(self.last_ts)
            .max(self.dead_wm)
    }
}

/// K-way timestamp merge over many queues. See the module docs.
#[derive(Debug)]
pub struct FanInReader {
    sources: Vec<Source>,
    config: FanInConfig,
    held: Option<usize>,
    last_key: Option<Key>,
    blocked_until_ns: Option<u64>,
    doorbell: Option<Doorbell>,
    stats: FanInStats,
    /// Cheap clock (TSC-extrapolated CLOCK_REALTIME) for liveness-probe intervals only.
    clock: os::RecordClock,
}

impl FanInReader {
    /// A merger with no sources.
    pub fn new(config: FanInConfig) -> Result<FanInReader> {
        if let Some(n) = &config.reader_name {
            validate_name(n)?;
        }
        let doorbell = match &config.doorbell {
            Some(p) => Some(
                Doorbell::open_or_create(p, 0o660).map_err(|e| BusError::queue(p.clone(), e))?,
            ),
            None => None,
        };
        Ok(FanInReader {
            sources: Vec::new(),
            config,
            held: None,
            last_key: None,
            blocked_until_ns: None,
            doorbell,
            stats: FanInStats::default(),
            clock: os::RecordClock::new(),
        })
    }

    /// Adds the queue at `path` as source `name` (id [`SourceId::of`]`(name)`). A named reader
    /// resumes where it committed. A queue that does not exist (any more) is
    /// [`BusError::SourceGone`].
    pub fn add_source(&mut self, name: &str, path: impl AsRef<Path>) -> Result<SourceId> {
        validate_name(name)?;
        let id = SourceId::of(name);
        if self.sources.iter().any(|s| s.id == id) {
            return Err(BusError::DuplicateSource {
                name: name.to_string(),
            });
        }
        let path = path.as_ref().to_path_buf();
        let rc = ReaderConfig {
            name: self.config.reader_name.clone(),
            start: self.config.start,
            verify_crc: self.config.verify_crc,
            commit: CommitPolicy::Manual,
            spin_limit: self.config.spin_limit,
            yield_limit: self.config.yield_limit,
            ..ReaderConfig::default()
        };
        let reader = QueueReader::open(&path, rc).map_err(|e| BusError::queue(&path, e))?;
        self.consume_held()?;
        let src = Source {
            id,
            name: name.to_string(),
            path,
            reader,
            head: None,
            uncommitted: false,
            draining: false,
            dead_wm: 0,
            probed_at: 0,
            last_ts: 0,
            seen_wm: 0,
            seen_idle: false,
        };
        // Sorted by id: scans (and therefore probes) happen in a deterministic order.
        let at = self.sources.partition_point(|s| s.id < id);
        self.sources.insert(at, src);
        Ok(id)
    }

    /// Removes a source: at once (`drain = false`), or once it has no pending record
    /// (`drain = true`). Never commits its position. Unknown ids are [`BusError::UnknownSource`].
    pub fn remove_source(&mut self, id: SourceId, drain: bool) -> Result<()> {
        self.consume_held()?;
        let Some(i) = self.sources.iter().position(|s| s.id == id) else {
            return Err(BusError::UnknownSource { id: id.0 });
        };
        if drain {
            if let Some(s) = self.sources.get_mut(i) {
                s.draining = true;
            }
        } else {
            self.sources.remove(i);
        }
        Ok(())
    }

    /// Moves one source (e.g. past records already found in the router's output). Not persisted
    /// until `commit`.
    pub fn seek_source(&mut self, id: SourceId, to: StartAt) -> Result<()> {
        self.consume_held()?;
        let Some(s) = self.sources.iter_mut().find(|s| s.id == id) else {
            return Err(BusError::UnknownSource { id: id.0 });
        };
        s.reader.seek(to).map_err(|e| BusError::queue(&s.path, e))?;
        s.head = None;
        s.uncommitted = true;
        Ok(())
    }

    /// The history record (DESIGN.md section 8) of one source queue: for state kept by seq
    /// (the router's journal) that must not take a re-assigned seq for the one it saw.
    pub fn source_history(&self, id: SourceId) -> Option<chronicle_core::History> {
        self.sources
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.reader.history())
    }

    /// The sources: (id, name, next seq to read), ordered by id.
    pub fn sources(&self) -> impl Iterator<Item = (SourceId, &str, u64)> {
        self.sources
            .iter()
            .map(|s| (s.id, s.name.as_str(), s.reader.next_seq()))
    }

    /// Number of sources (draining ones included).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when there is no source.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> FanInStats {
        self.stats
    }

    /// Records read and not yet handed on: sources whose next record is waiting in the merge
    /// (in live mode, held back while another source's watermark may still go below it).
    /// Walks the sources: for a report, not for every record.
    pub fn held(&self) -> usize {
        self.sources.iter().filter(|s| s.head.is_some()).count()
    }

    #[inline]
    fn consume_held(&mut self) -> Result<()> {
        if let Some(i) = self.held.take() {
            if let Some(s) = self.sources.get_mut(i) {
                // Consumes the record `peek` validated (no second validation).
                s.reader.next().map_err(|e| BusError::queue(&s.path, e))?;
                s.head = None;
                s.uncommitted = true;
            }
        }
        Ok(())
    }

    /// Persists every source's position after the last record returned from it.
    pub fn commit(&mut self) -> Result<()> {
        self.consume_held()?;
        for s in &mut self.sources {
            if s.uncommitted {
                s.reader.commit().map_err(|e| BusError::queue(&s.path, e))?;
                s.uncommitted = false;
            }
        }
        Ok(())
    }

    /// Persists positions chosen per source: for each source, `hold(id)` returns the position of
    /// the first record it must not yet commit past (a record handed on but not yet answered,
    /// from [`Merged::position`]), or `None` to commit everything returned from it. Positions
    /// held back stay pending and are offered again at the next commit. This is how a consumer
    /// that finishes records out of order (a router whose orders wait in a scheduler) commits only
    /// what it has finished, so a crash loses nothing it took.
    pub fn commit_with(
        &mut self,
        mut hold: impl FnMut(SourceId) -> Option<Position>,
    ) -> Result<()> {
        self.consume_held()?;
        for s in &mut self.sources {
            if !s.uncommitted {
                continue;
            }
            match hold(s.id) {
                Some(pos) if pos.next_seq < s.reader.next_seq() => {
                    s.reader
                        .commit_at(pos)
                        .map_err(|e| BusError::queue(&s.path, e))?;
                }
                _ => {
                    s.reader.commit().map_err(|e| BusError::queue(&s.path, e))?;
                    s.uncommitted = false;
                }
            }
        }
        Ok(())
    }

    /// The next record in merge order, or `None` when nothing may be emitted now. See the module
    /// docs for the rule; errors name the source queue.
    #[allow(clippy::should_implement_trait)] // lending: the record borrows the merger
    pub fn next(&mut self) -> Result<Option<Merged<'_>>> {
        self.consume_held()?;
        if self.config.commit == CommitPolicy::OnNext {
            self.commit()?;
        }
        let mut round = 0;
        let (key, idx, forced) = loop {
            round += 1;
            let Some((key, idx)) = self.refresh()? else {
                self.blocked_until_ns = None;
                return Ok(None);
            };
            if self.config.mode == MergeMode::Replay {
                break (key, idx, false);
            }
            // When the hold has already run out the record goes out either way; the watermark
            // check then only classifies it (allowed vs forced) and may stop at the first
            // source that blocks, instead of reading every writer's control block.
            // The system clock, like the writers' stamps (an extrapolated clock could release a
            // record a few ns before its hold has really passed).
            let now_ns = os::realtime_ns();
            let hold_over = self.config.max_hold.is_some_and(|h| {
                now_ns
                    >= key
                        .0
                        .saturating_add(u64::try_from(h.as_nanos()).unwrap_or(u64::MAX))
            });
            match self.may_emit(key, hold_over) {
                Verdict::Emit => break (key, idx, false),
                Verdict::Retry if round < MAX_ROUNDS => continue,
                Verdict::Retry | Verdict::Blocked => {}
            }
            if hold_over {
                break (key, idx, true);
            }
            let deadline = self.config.max_hold.map(|h| {
                key.0
                    .saturating_add(u64::try_from(h.as_nanos()).unwrap_or(u64::MAX))
            });
            match deadline {
                Some(d) if os::realtime_ns() >= d => break (key, idx, true),
                _ => {
                    self.blocked_until_ns = deadline;
                    return Ok(None);
                }
            }
        };
        self.blocked_until_ns = None;
        let late = self.last_key.is_some_and(|l| key < l);
        if late {
            self.stats.late += 1;
        } else {
            self.last_key = Some(key);
        }
        if forced {
            self.stats.forced += 1;
        }
        self.stats.emitted += 1;
        self.held = Some(idx);
        let Some(s) = self.sources.get_mut(idx) else {
            return Ok(None);
        };
        let source = s.id;
        s.last_ts = s.last_ts.max(key.0);
        let at = s.reader.position();
        let epoch = s.reader.queue_history_epoch();
        match s.reader.peek() {
            Ok(Some(view)) => Ok(Some(Merged {
                source,
                view,
                late,
                at,
                epoch,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(BusError::queue(&s.path, e)),
        }
    }

    /// Peeks every source without a head, drops drained sources, returns the minimum head.
    #[inline]
    fn refresh(&mut self) -> Result<Option<(Key, usize)>> {
        let mut best: Option<(Key, usize)> = None;
        let mut i = 0;
        while i < self.sources.len() {
            let Some(s) = self.sources.get_mut(i) else {
                break;
            };
            if s.head.is_none() {
                let src = s.id.0;
                s.head = s
                    .reader
                    .peek()
                    .map_err(|e| BusError::queue(&s.path, e))?
                    .map(|m| (m.timestamp_ns(), src, m.seq()));
                if s.head.is_none() && s.draining {
                    self.sources.remove(i);
                    self.stats.drained += 1;
                    continue;
                }
            }
            if let Some(k) = s.head {
                if best.is_none_or(|(b, _)| k < b) {
                    best = Some((k, i));
                }
            }
            i += 1;
        }
        Ok(best)
    }

    /// Live rule: may the head with `key` be emitted? Probes liveness of blocking sources.
    fn may_emit(&mut self, key: Key, first_blocker_decides: bool) -> Verdict {
        let (ts, src, _) = key;
        let probe_every =
            u64::try_from(self.config.liveness_probe_interval.as_nanos()).unwrap_or(u64::MAX);
        let clock = &mut self.clock;
        let mut now_cached: Option<u64> = None;
        let mut blocked = false;
        for s in &mut self.sources {
            if s.head.is_some() || s.id.0 == src {
                continue;
            }
            let clears = |wm: u64| (wm, s.id.0) > (ts, src);
            let wm = s.effective_wm();
            s.seen_wm = wm;
            // The watermark was read (Acquire) before this check: a record stamped below it is
            // committed and visible now. A record that arrived since the refresh may be smaller
            // than `key`: look again.
            if s.reader.has_next() {
                return Verdict::Retry;
            }
            if clears(wm) {
                continue;
            }
            // An idle writer stamps whatever it appends later after now: nothing to wait for.
            match s.reader.idle_watermark_ns() {
                Some(now) => {
                    s.seen_idle = true;
                    // Records committed before the announcement are visible now.
                    if s.reader.has_next() {
                        return Verdict::Retry;
                    }
                    if clears(now) {
                        continue;
                    }
                }
                None => s.seen_idle = false,
            }
            if s.draining {
                // Nothing pending and being removed: it will be dropped at the next refresh.
                continue;
            }
            // The clock is read only when a probe may be due (it costs tens of ns here).
            let now = *now_cached.get_or_insert_with(|| clock.now_ns());
            if s.probed_at == 0 || now.saturating_sub(s.probed_at) >= probe_every {
                s.probed_at = now.max(1);
                self.stats.probes += 1;
                let before = os::realtime_ns();
                s.dead_wm = match s.reader.writer_status() {
                    WriterStatus::Alive => 0,
                    _ => {
                        // A record may have been committed just before the writer went away.
                        if s.reader.has_next() { 0 } else { before }
                    }
                };
                if s.reader.has_next() {
                    return Verdict::Retry;
                }
                let wm = s.effective_wm();
                s.seen_wm = wm;
                if clears(wm) {
                    continue;
                }
            }
            blocked = true;
            if first_blocker_decides {
                break;
            }
        }
        if blocked {
            Verdict::Blocked
        } else {
            Verdict::Emit
        }
    }

    /// Waits until `next` may have something (a source got a record or a new watermark, a hold
    /// deadline or probe is due) or `timeout` passes. Sleeps on the doorbell when configured.
    pub fn wait(&mut self, timeout: Duration) -> Result<FanInWaitOutcome> {
        let mut timeout = timeout;
        if let Some(d) = self.blocked_until_ns {
            let now = os::realtime_ns();
            if now >= d {
                return Ok(FanInWaitOutcome::Ready);
            }
            timeout = timeout.min(Duration::from_nanos(d - now));
        }
        let any_blocked = self.sources.iter().any(|s| s.head.is_some());
        if any_blocked && self.config.mode == MergeMode::Live {
            // A blocking source may die: re-probe in time.
            timeout = timeout.min(
                self.config
                    .liveness_probe_interval
                    .max(Duration::from_micros(50)),
            );
        }
        let sources = &self.sources;
        // A new watermark or idle announcement matters only while a record is held back for
        // it; otherwise only new records do (else an idle merger would spin on every heartbeat).
        let live = any_blocked && self.config.mode == MergeMode::Live;
        let ready = || {
            sources.iter().any(|s| {
                s.head.is_none()
                    && (s.reader.has_next()
                        || (live
                            && (s.reader.heartbeat_watermark_ns() > s.seen_wm
                                || (!s.seen_idle && s.reader.writer_idle()))))
            })
        };
        if ready() {
            return Ok(FanInWaitOutcome::Ready);
        }
        match &self.doorbell {
            Some(d) => Ok(
                match d.wait(
                    timeout,
                    self.config.spin_limit,
                    self.config.yield_limit,
                    ready,
                ) {
                    DoorbellWaitOutcome::Ready => FanInWaitOutcome::Ready,
                    DoorbellWaitOutcome::TimedOut => FanInWaitOutcome::TimedOut,
                },
            ),
            None => {
                let until = Instant::now() + timeout;
                let mut spins = 0u32;
                loop {
                    if ready() {
                        return Ok(FanInWaitOutcome::Ready);
                    }
                    if Instant::now() >= until {
                        return Ok(FanInWaitOutcome::TimedOut);
                    }
                    if spins < self.config.spin_limit {
                        spins += 1;
                        std::hint::spin_loop();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
    }
}
