//! Configuration of writers and readers.

use std::time::Duration;

use crate::layout::MAX_PAYLOAD_LIMIT;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default index stride: an index entry every 64 KiB of records.
pub const DEFAULT_INDEX_STRIDE: u32 = 64 << 10;
/// Default mode of files in a queue: owner and group read/write, nothing for others.
pub const DEFAULT_FILE_MODE: u32 = 0o660;

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Records live in the page cache: they survive a crash of any process, not a power loss.
    /// Call [`QueueWriter::sync`](crate::QueueWriter::sync) to force them out on demand.
    #[default]
    PageCache,
    /// msync after every `n` records (on the appending thread).
    EveryRecords(u64),
    /// msync when at least this much time passed since the last one (checked on append).
    Interval(Duration),
}

/// When whole segments are deleted.
///
/// A segment is deleted when it is older than the tail segment, every live registered reader has
/// passed it, and a cap asks for it: the queue is larger than `max_bytes`, or the segment's
/// newest record is older than `max_age`. With no cap, nothing is ever deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the queue's segments at or below this many bytes.
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub max_age: Option<Duration>,
    /// A registered reader whose heartbeat is older than this no longer holds segments back.
    pub reader_ttl: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_bytes: None,
            max_age: None,
            reader_ttl: Duration::from_secs(60),
        }
    }
}

/// How the next segment is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Preallocate {
    /// A maintenance thread creates, allocates and pre-faults the next segment ahead of need
    /// (the append that rolls only swaps it in), and retires old segments.
    #[default]
    Background,
    /// Everything happens on the appending thread when the segment fills (no extra thread).
    Inline,
    /// The appending thread prepares the next segment a step at a time in
    /// [`QueueWriter::pretouch`](crate::QueueWriter::pretouch), which the application calls
    /// while it has nothing to append (no extra thread, so no work taken from another core at
    /// a moment nobody chose). Retiring a full segment and retention run there too. What is not
    /// ready when the segment fills is finished by the append that rolls, as with `Inline`.
    Pretouch,
}

/// Settings of a [`QueueWriter`](crate::QueueWriter). Geometry (`segment_size`, `max_payload`,
/// `index_stride`, `file_mode`) applies when the writer creates the queue; an existing queue
/// keeps the geometry it was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Size of each segment file (multiple of 4096, at least 16 KiB).
    pub segment_size: u64,
    /// Largest payload; default a quarter of the segment, at most 16 MiB.
    pub max_payload: Option<u32>,
    /// Bytes between sparse index entries (power of two, at least 1024).
    pub index_stride: u32,
    /// Mode of created files; directories get matching search bits.
    pub file_mode: u32,
    /// Flush policy.
    pub durability: Durability,
    /// Segment deletion policy.
    pub retention: RetentionPolicy,
    /// Hard cap on the bytes of published segments: an append that needs a new segment beyond
    /// it fails with `CapacityExceeded` unless retention can free one.
    pub capacity_bytes: Option<u64>,
    /// How the next segment is prepared.
    pub preallocate: Preallocate,
    /// A doorbell file (see [`Doorbell`](crate::Doorbell)) this writer also rings after each
    /// commit, so a consumer of many queues can sleep on one word. Created if missing.
    pub doorbell: Option<std::path::PathBuf>,
    /// Open a queue whose files or directories any user may write (refused by default).
    pub allow_world_writable: bool,
    /// CPUs the maintenance thread (segment preparation, retirement, retention) may run on.
    /// `None`: wherever the writer's thread could run when the writer was opened. Keep it off
    /// the cores of latency-critical threads: preparing a segment pre-faults all of it.
    pub maintenance_cpus: Option<Vec<usize>>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_payload: None,
            index_stride: DEFAULT_INDEX_STRIDE,
            file_mode: DEFAULT_FILE_MODE,
            durability: Durability::PageCache,
            retention: RetentionPolicy::default(),
            capacity_bytes: None,
            preallocate: Preallocate::Background,
            doorbell: None,
            allow_world_writable: false,
            maintenance_cpus: None,
        }
    }
}

impl WriterConfig {
    /// The effective maximum payload for this configuration.
    pub fn effective_max_payload(&self) -> u32 {
        self.max_payload.unwrap_or_else(|| {
            let quarter = self.segment_size / 4;
            quarter.min(16 << 20).min(u64::from(MAX_PAYLOAD_LIMIT)) as u32
        })
    }
}

/// Where a reader starts when it has no persisted position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartAt {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// After the newest record: only records appended from now on.
    Latest,
    /// The record with this sequence number.
    Seq(u64),
    /// The first record whose timestamp is at or after this (ns since the Unix epoch).
    Timestamp(u64),
}

/// What a reader does when its position was deleted by retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnLost {
    /// Return [`Error::PositionLost`](crate::Error::PositionLost).
    #[default]
    Error,
    /// Continue at the oldest retained record.
    Earliest,
}

/// When a named reader's position is persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CommitPolicy {
    /// Only on [`QueueReader::commit`](crate::QueueReader::commit).
    #[default]
    Manual,
    /// Each call to `next` first commits everything returned before it (at-least-once: the
    /// record being processed when the process dies is delivered again).
    OnNext,
}

/// Settings of a [`QueueReader`](crate::QueueReader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// A name makes the reader durable: its position persists in `readers/<name>.meta` and it
    /// holds retention back. `None` is an anonymous reader.
    pub name: Option<String>,
    /// Start position when there is no persisted one.
    pub start: StartAt,
    /// Behaviour when the persisted position was deleted.
    pub on_lost: OnLost,
    /// Verify each record's CRC (on by default).
    pub verify_crc: bool,
    /// When the position is persisted.
    pub commit: CommitPolicy,
    /// Busy-poll iterations in `wait` before yielding.
    pub spin_limit: u32,
    /// `sched_yield` iterations after spinning before sleeping on the futex.
    pub yield_limit: u32,
    /// How often a sleeping reader checks that the writer is still alive.
    pub liveness_interval: Duration,
    /// Open a queue whose files or directories any user may write (refused by default).
    pub allow_world_writable: bool,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            name: None,
            start: StartAt::Earliest,
            on_lost: OnLost::Error,
            verify_crc: true,
            commit: CommitPolicy::Manual,
            spin_limit: 2_000,
            yield_limit: 50,
            liveness_interval: Duration::from_millis(100),
            allow_world_writable: false,
        }
    }
}

impl ReaderConfig {
    /// A named (durable) reader.
    pub fn named(name: impl Into<String>) -> Self {
        ReaderConfig {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Sets the start position.
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }
}

/// Checks a reader name: 1-64 characters of `[A-Za-z0-9._-]`, not starting with '.'.
pub fn validate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
