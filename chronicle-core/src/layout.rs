//! Every byte format chronicle maps into memory, in one place.
//!
//! All formats are little-endian, fixed-width and `#[repr(C)]`; every field offset is asserted at
//! compile time below its struct. Shared words are atomics: another process may write any mapped
//! byte at any time, so this crate touches shared memory only through atomics (or, for record
//! payloads after their commit word was Acquire-loaded, through plain reads of bytes the single
//! writer never changes again). Files are published by storing their magic word last, with Release;
//! a magic of 0 means "not initialized yet".
//!
//! ```text
//! <queue>/queue.meta  (CONTROL_FILE_SIZE = 4096 bytes)
//!  span 0   0..128  identity and geometry, immutable once magic is set
//!     0 magic u64 ("CHRQMETA", Release-stored last)   8 version u32   12 control_size u32
//!    16 segment_size u64   24 max_payload u32   28 index_stride u32   32 created_ns u64
//!    40 queue_uid u64   48 file_mode u32   52 reserved u32
//!    56 history_epoch u64   64 rewritten_from u64   72 rewritten_floor u64   80 reserved ...
//!       (the history record: written only by a recovering writer, when it ended history
//!       below a seq that was visible before a power cut; all 0 in queues that never lost any)
//!  span 1 128..256  writer tail, written by the writer on every commit (a seqlock)
//!   128 tail_lock u64 (odd while updating)   136 tail_segment u64   144 tail_offset u64
//!   152 next_seq u64   160 last_timestamp_ns u64   168 writer_pid u32   172 writer_state u32
//!   176 writer_epoch u64   184 reserved
//!  span 2 256..384  wake words, written by sleeping readers and the writer
//!   256 notify u32 (futex word: counter << 1 | WAITERS)   260 wake_mode u32
//!  span 3 384..512  retention (maintenance thread) and the heartbeat watermark (writer,
//!                   only in `heartbeat`, so readers of it never contend with commits)
//!   384 oldest_segment u64   392 oldest_seq u64   400 watermark_ns u64 (no later record
//!   will be stamped earlier)   408 writer_idle u64 (nonzero: the writer announced it is idle;
//!   it clears the word before it reads the clock for its next record: 0 in files of writers
//!   that never announce)
//!
//! <queue>/segments/<id:020>.seg  (segment_size bytes, preallocated)
//!     0 magic u64 ("CHRQSEG\0", Release-stored last)   8 version u32   12 header_size u32
//!    16 segment_id u64   24 queue_uid u64   32 created_ns u64
//!    40 base_seq u64 (first seq in the segment; set before the previous segment's pad publishes it)
//!   128.. records, each 8-byte aligned:
//!     +0 commit u32 = kind << 30 | payload_len   (0 = not written; Release-stored last)
//!     +4 crc u32  CRC-32C of bytes +8..+32+payload_len (header fields and payload, one run)
//!     +8 seq u64   +16 timestamp_ns u64   +24 type_id u32   +28 payload_len u32 (must equal
//!     the commit word's length; CRC-covered)   +32 payload
//!   the record length is align8(32 + payload_len); a PAD record ends every full segment.
//!
//! <queue>/index/<id:020>.idx  sparse index of one segment
//!     0 magic u64 ("CHRQIDX\0")   8 version u32   12 header_size u32   16 segment_id u64
//!    24 capacity u64   32 count u64 (Release-stored after each entry is written)
//!    64.. entries of 32 bytes: seq u64, timestamp_ns u64, offset u64, reserved u64
//!
//! <queue>/readers/<name>.meta  (READER_META_SIZE = 4096 bytes)
//!  span 0   0..128  0 magic u64 ("CHRQREAD", last)  8 version u32  12 meta_size u32
//!                  16 created_ns u64  24 queue_uid u64
//!  span 1 128..256  128 pid u32  132 reserved u32  136 start_time u64  144 heartbeat_ns u64
//!  span 2 256..384  256 pos_gen u64 (Release-stored after a slot is written)
//!                   264 slot 0: next_seq, segment, offset, timestamp_ns (4 x u64)
//!                   296 slot 1: same; slot (pos_gen % 2) is the committed position
//!                   328 slot_epoch[2] u64 x 2: the queue history epoch the position in
//!                   slot 0 / slot 1 is valid under (0 in metas written before it existed)
//! ```

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Error, Result};

/// The first check of every mapped file, on its magic as Acquire-loaded (its creator stores the
/// magic last, with Release): 0 is a file its creator has not finished (`NotYetInitialized`),
/// any value but `expected` is damage, reported as `bad_magic`.
pub(crate) fn check_magic(
    path: &Path,
    magic: u64,
    expected: u64,
    bad_magic: &'static str,
) -> Result<()> {
    match magic {
        0 => Err(Error::NotYetInitialized {
            path: path.to_path_buf(),
        }),
        m if m == expected => Ok(()),
        _ => Err(Error::corrupted(path, 0, bad_magic)),
    }
}

/// The second: a version other than [`FORMAT_VERSION`] is a format this build does not read.
pub(crate) fn check_version(path: &Path, version: u32) -> Result<()> {
    if version == FORMAT_VERSION {
        Ok(())
    } else {
        Err(Error::VersionMismatch {
            path: path.to_path_buf(),
            found: version,
            expected: FORMAT_VERSION,
        })
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("chronicle's mapped formats are little-endian; big-endian hosts are not supported");

/// Format version of every file this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// Span that keeps independently written words on separate cache lines (and adjacent-line
/// prefetch pairs).
pub const HOT_SPAN: usize = 128;

// ---------------------------------------------------------------------------------------------
// queue.meta
// ---------------------------------------------------------------------------------------------

/// Magic of `queue.meta`: "CHRQMETA" read as a little-endian u64.
pub const CONTROL_MAGIC: u64 = u64::from_le_bytes(*b"CHRQMETA");
/// Size of the `queue.meta` file (one page).
pub const CONTROL_FILE_SIZE: u64 = 4096;

/// `writer_state`: no writer ever opened the queue.
pub const WRITER_NEVER: u32 = 0;
/// `writer_state`: a writer opened the queue and has not closed it (alive, or died).
pub const WRITER_OPEN: u32 = 1;
/// `writer_state`: the last writer closed cleanly.
pub const WRITER_CLOSED: u32 = 2;

/// Low bit of `notify`: at least one reader may be asleep on the futex.
pub const NOTIFY_WAITERS: u32 = 1;
/// `wake_mode`: the writer issues a full fence before checking for sleepers on every commit.
pub const WAKE_MODE_FENCE: u32 = 0;
/// `wake_mode`: the writer registered for `membarrier(GLOBAL_EXPEDITED)`; sleepers issue the
/// heavy barrier, the writer's commit path has none.
pub const WAKE_MODE_ASYMMETRIC: u32 = 1;

/// The shared control block at the start of `queue.meta`.
#[repr(C)]
#[derive(Debug)]
pub struct ControlBlock {
    // span 0: identity and geometry
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub control_size: AtomicU32,
    pub segment_size: AtomicU64,
    pub max_payload: AtomicU32,
    pub index_stride: AtomicU32,
    pub created_ns: AtomicU64,
    pub queue_uid: AtomicU64,
    pub file_mode: AtomicU32,
    pub _reserved0a: AtomicU32,
    // history record (recovery only; see `Control::history`)
    pub history_epoch: AtomicU64,
    pub rewritten_from: AtomicU64,
    pub rewritten_floor: AtomicU64,
    pub _reserved0: [u8; 48],
    // span 1: writer tail
    pub tail_lock: AtomicU64,
    pub tail_segment: AtomicU64,
    pub tail_offset: AtomicU64,
    pub next_seq: AtomicU64,
    pub last_timestamp_ns: AtomicU64,
    pub writer_pid: AtomicU32,
    pub writer_state: AtomicU32,
    pub writer_epoch: AtomicU64,
    pub _reserved1a: AtomicU64,
    pub _reserved1: [u8; 64],
    // span 2: wake words
    pub notify: AtomicU32,
    pub wake_mode: AtomicU32,
    pub _reserved2: [u8; 120],
    // span 3: retention
    pub oldest_segment: AtomicU64,
    pub oldest_seq: AtomicU64,
    pub watermark_ns: AtomicU64,
    pub writer_idle: AtomicU64,
    pub _reserved3: [u8; 96],
}

const _: () = {
    assert!(size_of::<ControlBlock>() == 4 * HOT_SPAN);
    assert!(offset_of!(ControlBlock, magic) == 0);
    assert!(offset_of!(ControlBlock, version) == 8);
    assert!(offset_of!(ControlBlock, control_size) == 12);
    assert!(offset_of!(ControlBlock, segment_size) == 16);
    assert!(offset_of!(ControlBlock, max_payload) == 24);
    assert!(offset_of!(ControlBlock, index_stride) == 28);
    assert!(offset_of!(ControlBlock, created_ns) == 32);
    assert!(offset_of!(ControlBlock, queue_uid) == 40);
    assert!(offset_of!(ControlBlock, file_mode) == 48);
    assert!(offset_of!(ControlBlock, history_epoch) == 56);
    assert!(offset_of!(ControlBlock, rewritten_from) == 64);
    assert!(offset_of!(ControlBlock, rewritten_floor) == 72);
    assert!(offset_of!(ControlBlock, tail_lock) == 128);
    assert!(offset_of!(ControlBlock, tail_segment) == 136);
    assert!(offset_of!(ControlBlock, tail_offset) == 144);
    assert!(offset_of!(ControlBlock, next_seq) == 152);
    assert!(offset_of!(ControlBlock, last_timestamp_ns) == 160);
    assert!(offset_of!(ControlBlock, writer_pid) == 168);
    assert!(offset_of!(ControlBlock, writer_state) == 172);
    assert!(offset_of!(ControlBlock, writer_epoch) == 176);
    assert!(offset_of!(ControlBlock, watermark_ns) == 400);
    assert!(offset_of!(ControlBlock, writer_idle) == 408);
    assert!(offset_of!(ControlBlock, notify) == 256);
    assert!(offset_of!(ControlBlock, wake_mode) == 260);
    assert!(offset_of!(ControlBlock, oldest_segment) == 384);
    assert!(offset_of!(ControlBlock, oldest_seq) == 392);
    assert!(size_of::<ControlBlock>() as u64 <= CONTROL_FILE_SIZE);
};

// ---------------------------------------------------------------------------------------------
// segments and records
// ---------------------------------------------------------------------------------------------

/// Magic of a segment file: "CHRQSEG\0".
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"CHRQSEG\0");
/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_SIZE: u64 = 128;

/// Header at the start of every segment file.
#[repr(C)]
#[derive(Debug)]
pub struct SegmentHeader {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub header_size: AtomicU32,
    pub segment_id: AtomicU64,
    pub queue_uid: AtomicU64,
    pub created_ns: AtomicU64,
    pub base_seq: AtomicU64,
    pub _reserved: [u8; 80],
}

const _: () = {
    assert!(size_of::<SegmentHeader>() as u64 == SEGMENT_HEADER_SIZE);
    assert!(offset_of!(SegmentHeader, magic) == 0);
    assert!(offset_of!(SegmentHeader, version) == 8);
    assert!(offset_of!(SegmentHeader, header_size) == 12);
    assert!(offset_of!(SegmentHeader, segment_id) == 16);
    assert!(offset_of!(SegmentHeader, queue_uid) == 24);
    assert!(offset_of!(SegmentHeader, created_ns) == 32);
    assert!(offset_of!(SegmentHeader, base_seq) == 40);
};

/// The header at the start of every record; the payload follows it.
///
/// ```text
///   +0 commit u32 = kind << 30 | payload_len  (0 = not written; Release-stored last, the only
///                                              field read before that store is seen)
///   +4 crc u32    CRC-32C of bytes +8..+32+payload_len (the fields below and the payload)
///   +8 seq u64   +16 timestamp_ns u64   +24 type_id u32   +28 payload_len u32 (a copy of the
///                                              commit word's length, CRC-covered)
///  +32 payload
/// ```
///
/// Little-endian like every mapped format (big-endian hosts are refused at compile time). The
/// writer stores the fields as bytes ([`RecordHeader::covered_fields`]); the commit word is
/// accessed only as an atomic at [`REC_COMMIT_OFFSET`]; readers decode the other fields with
/// [`RecordHeader::decode`] from bytes they may read (after the Acquire load of the commit word).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// `kind << 30 | payload_len` ([`commit_word`]).
    pub commit: u32,
    /// CRC-32C of the bytes from [`REC_CRC_START`] to the end of the payload.
    pub crc: u32,
    /// Sequence number.
    pub seq: u64,
    /// Timestamp, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Application-defined type id.
    pub type_id: u32,
    /// Copy of the commit word's length.
    pub payload_len: u32,
}

/// Size of a record header; the payload follows it.
pub const RECORD_HEADER_SIZE: u64 = size_of::<RecordHeader>() as u64;
/// Offset of the commit word in a record header.
pub const REC_COMMIT_OFFSET: u64 = offset_of!(RecordHeader, commit) as u64;
/// Offset of the CRC.
pub const REC_CRC_OFFSET: u64 = offset_of!(RecordHeader, crc) as u64;
/// Offset of the sequence number.
pub const REC_SEQ_OFFSET: u64 = offset_of!(RecordHeader, seq) as u64;
/// Offset of the timestamp.
pub const REC_TIMESTAMP_OFFSET: u64 = offset_of!(RecordHeader, timestamp_ns) as u64;
/// Offset of the type id.
pub const REC_TYPE_OFFSET: u64 = offset_of!(RecordHeader, type_id) as u64;
/// Offset of the CRC-covered copy of the payload length.
pub const REC_LEN_OFFSET: u64 = offset_of!(RecordHeader, payload_len) as u64;
/// Start of the CRC-covered bytes of a record: the fields after the CRC, then the payload.
pub const REC_CRC_START: u64 = REC_SEQ_OFFSET;
/// Number of CRC-covered header bytes (`REC_CRC_START..RECORD_HEADER_SIZE`).
pub const REC_COVERED_FIELDS: usize = (RECORD_HEADER_SIZE - REC_CRC_START) as usize;

const _: () = {
    assert!(RECORD_HEADER_SIZE == 32);
    assert!(REC_COMMIT_OFFSET == 0);
    assert!(REC_CRC_OFFSET == 4);
    assert!(REC_SEQ_OFFSET == 8);
    assert!(REC_TIMESTAMP_OFFSET == 16);
    assert!(REC_TYPE_OFFSET == 24);
    assert!(REC_LEN_OFFSET == 28);
    assert!(REC_COVERED_FIELDS == 24);
    // Records are 8-aligned, so the commit word and the u64 fields are naturally aligned.
    assert!(RECORD_HEADER_SIZE % RECORD_ALIGN == 0);
    assert!(REC_SEQ_OFFSET % 8 == 0 && REC_TIMESTAMP_OFFSET % 8 == 0);
};

impl RecordHeader {
    /// Decodes a header from its 32 little-endian bytes. Fields the caller does not use cost
    /// nothing (the loads are dropped).
    #[inline(always)]
    pub fn decode(b: &[u8; RECORD_HEADER_SIZE as usize]) -> RecordHeader {
        RecordHeader {
            commit: u32::from_le_bytes(field(b, REC_COMMIT_OFFSET)),
            crc: u32::from_le_bytes(field(b, REC_CRC_OFFSET)),
            seq: u64::from_le_bytes(field(b, REC_SEQ_OFFSET)),
            timestamp_ns: u64::from_le_bytes(field(b, REC_TIMESTAMP_OFFSET)),
            type_id: u32::from_le_bytes(field(b, REC_TYPE_OFFSET)),
            payload_len: u32::from_le_bytes(field(b, REC_LEN_OFFSET)),
        }
    }

    /// The CRC-covered header bytes (`REC_CRC_START..RECORD_HEADER_SIZE`: seq, timestamp, type
    /// id, payload length), as the writer stores them in one copy.
    #[inline(always)]
    pub fn covered_fields(
        seq: u64,
        timestamp_ns: u64,
        type_id: u32,
        payload_len: u32,
    ) -> [u8; REC_COVERED_FIELDS] {
        const fn at(offset: u64) -> usize {
            (offset - REC_CRC_START) as usize
        }
        let mut f = [0u8; REC_COVERED_FIELDS];
        put(&mut f, at(REC_SEQ_OFFSET), &seq.to_le_bytes());
        put(
            &mut f,
            at(REC_TIMESTAMP_OFFSET),
            &timestamp_ns.to_le_bytes(),
        );
        put(&mut f, at(REC_TYPE_OFFSET), &type_id.to_le_bytes());
        put(&mut f, at(REC_LEN_OFFSET), &payload_len.to_le_bytes());
        f
    }
}

/// The `N` bytes at `offset` of a header (offsets are the asserted constants above, so the
/// range is always inside; the fallback is never taken).
#[inline(always)]
fn field<const N: usize>(b: &[u8; RECORD_HEADER_SIZE as usize], offset: u64) -> [u8; N] {
    let at = offset as usize;
    b.get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

/// Copies `v` into `f` at `at` (inside by construction, as for `field`).
#[inline(always)]
fn put(f: &mut [u8; REC_COVERED_FIELDS], at: usize, v: &[u8]) {
    if let Some(d) = f.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// Records start and end on this alignment.
pub const RECORD_ALIGN: u64 = 8;
/// Bytes always kept free at the end of a segment so a PAD record fits.
pub const PAD_RESERVE: u64 = RECORD_ALIGN;
/// Bits of the commit word that hold the payload (or, for PAD/ABORTED, skip) length.
pub const COMMIT_LEN_MASK: u32 = (1 << 30) - 1;
/// Shift of the record kind in the commit word.
pub const COMMIT_KIND_SHIFT: u32 = 30;
/// Largest payload the format can describe (the commit word has 30 length bits).
pub const MAX_PAYLOAD_LIMIT: u32 = COMMIT_LEN_MASK - RECORD_HEADER_SIZE as u32;

/// Kind of a record, from the top two bits of its commit word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A message.
    Data,
    /// End of segment: the next record is at the start of the next segment.
    Pad,
    /// A region left by a writer that died mid-record, fenced off by recovery; skip `len` bytes
    /// (the length counts from the end of this header).
    Aborted,
}

/// Kind code of a DATA record.
pub const KIND_DATA: u32 = 1;
/// Kind code of a PAD record.
pub const KIND_PAD: u32 = 2;
/// Kind code of an ABORTED record.
pub const KIND_ABORTED: u32 = 3;

/// Builds a commit word.
#[inline]
pub const fn commit_word(kind: u32, len: u32) -> u32 {
    (kind << COMMIT_KIND_SHIFT) | (len & COMMIT_LEN_MASK)
}

/// Splits a non-zero commit word into kind and length; `None` for an unknown kind.
#[inline]
pub fn decode_commit(word: u32) -> Option<(RecordKind, u32)> {
    let len = word & COMMIT_LEN_MASK;
    match word >> COMMIT_KIND_SHIFT {
        KIND_DATA => Some((RecordKind::Data, len)),
        KIND_PAD => Some((RecordKind::Pad, len)),
        KIND_ABORTED => Some((RecordKind::Aborted, len)),
        _ => None,
    }
}

/// Total bytes a record with `payload_len` payload bytes occupies.
#[inline]
pub const fn record_len(payload_len: u64) -> u64 {
    (RECORD_HEADER_SIZE + payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// CRC-32C of a record: `covered` is bytes `+8 .. +32 + payload_len` of the record (seq,
/// timestamp, type id, payload length and payload), contiguous in the segment.
#[inline]
pub fn record_crc(covered: &[u8]) -> u32 {
    crate::crc::crc32c(covered)
}

// ---------------------------------------------------------------------------------------------
// index
// ---------------------------------------------------------------------------------------------

/// Magic of an index file: "CHRQIDX\0".
pub const INDEX_MAGIC: u64 = u64::from_le_bytes(*b"CHRQIDX\0");
/// Bytes before the first index entry.
pub const INDEX_HEADER_SIZE: u64 = 64;
/// Size of one index entry.
pub const INDEX_ENTRY_SIZE: u64 = 32;

/// Header of an index file.
#[repr(C)]
#[derive(Debug)]
pub struct IndexHeader {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub header_size: AtomicU32,
    pub segment_id: AtomicU64,
    pub capacity: AtomicU64,
    pub count: AtomicU64,
    pub _reserved: [u8; 24],
}

const _: () = {
    assert!(size_of::<IndexHeader>() as u64 == INDEX_HEADER_SIZE);
    assert!(offset_of!(IndexHeader, magic) == 0);
    assert!(offset_of!(IndexHeader, version) == 8);
    assert!(offset_of!(IndexHeader, header_size) == 12);
    assert!(offset_of!(IndexHeader, segment_id) == 16);
    assert!(offset_of!(IndexHeader, capacity) == 24);
    assert!(offset_of!(IndexHeader, count) == 32);
};

/// One index entry: the record starting at `offset` has sequence `seq` and time `timestamp_ns`.
#[repr(C)]
#[derive(Debug)]
pub struct IndexEntry {
    pub seq: AtomicU64,
    pub timestamp_ns: AtomicU64,
    pub offset: AtomicU64,
    pub _reserved: AtomicU64,
}

const _: () = {
    assert!(size_of::<IndexEntry>() as u64 == INDEX_ENTRY_SIZE);
    assert!(offset_of!(IndexEntry, seq) == 0);
    assert!(offset_of!(IndexEntry, timestamp_ns) == 8);
    assert!(offset_of!(IndexEntry, offset) == 16);
};

/// Size of the index file for a segment of `segment_size` bytes indexed every `stride` bytes.
pub const fn index_capacity(segment_size: u64, stride: u64) -> u64 {
    segment_size / stride + 2
}

// ---------------------------------------------------------------------------------------------
// reader meta
// ---------------------------------------------------------------------------------------------

/// Magic of a reader meta file: "CHRQREAD".
pub const READER_MAGIC: u64 = u64::from_le_bytes(*b"CHRQREAD");
/// Size of a reader meta file.
pub const READER_META_SIZE: u64 = 4096;

/// One committed reader position.
#[repr(C)]
#[derive(Debug)]
pub struct PositionSlot {
    pub next_seq: AtomicU64,
    pub segment: AtomicU64,
    pub offset: AtomicU64,
    pub timestamp_ns: AtomicU64,
}

/// The mapped meta of a named reader.
#[repr(C)]
#[derive(Debug)]
pub struct ReaderMetaBlock {
    // span 0: identity
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub meta_size: AtomicU32,
    pub created_ns: AtomicU64,
    pub queue_uid: AtomicU64,
    pub _reserved0: [u8; 96],
    // span 1: liveness
    pub pid: AtomicU32,
    pub _reserved1a: AtomicU32,
    pub start_time: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    pub _reserved1: [u8; 104],
    // span 2: position (double-buffered)
    pub pos_gen: AtomicU64,
    pub slots: [PositionSlot; 2],
    pub slot_epochs: [AtomicU64; 2],
    pub _reserved2: [u8; 40],
}

const _: () = {
    assert!(size_of::<PositionSlot>() == 32);
    assert!(size_of::<ReaderMetaBlock>() == 3 * HOT_SPAN);
    assert!(offset_of!(ReaderMetaBlock, magic) == 0);
    assert!(offset_of!(ReaderMetaBlock, version) == 8);
    assert!(offset_of!(ReaderMetaBlock, meta_size) == 12);
    assert!(offset_of!(ReaderMetaBlock, created_ns) == 16);
    assert!(offset_of!(ReaderMetaBlock, queue_uid) == 24);
    assert!(offset_of!(ReaderMetaBlock, pid) == 128);
    assert!(offset_of!(ReaderMetaBlock, start_time) == 136);
    assert!(offset_of!(ReaderMetaBlock, heartbeat_ns) == 144);
    assert!(offset_of!(ReaderMetaBlock, pos_gen) == 256);
    assert!(offset_of!(ReaderMetaBlock, slots) == 264);
    assert!(offset_of!(ReaderMetaBlock, slot_epochs) == 328);
    assert!(size_of::<ReaderMetaBlock>() as u64 <= READER_META_SIZE);
};

// ---------------------------------------------------------------------------------------------
// doorbell
// ---------------------------------------------------------------------------------------------

/// Magic of a doorbell file: "CHRQBELL".
pub const DOORBELL_MAGIC: u64 = u64::from_le_bytes(*b"CHRQBELL");
/// Size of a doorbell file.
pub const DOORBELL_FILE_SIZE: u64 = 4096;

/// A futex word shared by many writers and one or more sleepers (a bus doorbell).
///
/// ```text
///   0 magic u64 (Release-stored last)   8 version u32   12 reserved
/// 128 word u32 (futex: counter << 1 | WAITERS)
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct DoorbellBlock {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub _reserved0: [u8; 116],
    pub word: AtomicU32,
    pub _reserved1: [u8; 124],
}

const _: () = {
    assert!(size_of::<DoorbellBlock>() == 2 * HOT_SPAN);
    assert!(offset_of!(DoorbellBlock, magic) == 0);
    assert!(offset_of!(DoorbellBlock, version) == 8);
    assert!(offset_of!(DoorbellBlock, word) == 128);
};

// ---------------------------------------------------------------------------------------------
// names
// ---------------------------------------------------------------------------------------------

/// Name of the control file.
pub const CONTROL_FILE: &str = "queue.meta";
/// Name of the writer lock file.
pub const LOCK_FILE: &str = "writer.lock";
/// Directory of segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// Directory of index files.
pub const INDEX_DIR: &str = "index";
/// Directory of reader meta files.
pub const READERS_DIR: &str = "readers";

/// File name of segment `id`.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// File name of the index of segment `id`.
pub fn index_file_name(id: u64) -> String {
    format!("{id:020}.idx")
}

/// Parses a segment file name back into its id.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_word_round_trips() {
        for (kind, k) in [
            (KIND_DATA, RecordKind::Data),
            (KIND_PAD, RecordKind::Pad),
            (KIND_ABORTED, RecordKind::Aborted),
        ] {
            for len in [0u32, 1, 64, MAX_PAYLOAD_LIMIT] {
                assert_eq!(decode_commit(commit_word(kind, len)), Some((k, len)));
            }
        }
        assert_eq!(
            decode_commit(5),
            None,
            "kind 0 with a length is not a record"
        );
    }

    #[test]
    fn record_header_fields_round_trip() {
        let fields = RecordHeader::covered_fields(0x0102_0304_0506_0708, 42, 7, 64);
        let mut bytes = [0u8; RECORD_HEADER_SIZE as usize];
        bytes[..4].copy_from_slice(&commit_word(KIND_DATA, 64).to_le_bytes());
        bytes[4..8].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
        bytes[REC_CRC_START as usize..].copy_from_slice(&fields);
        assert_eq!(
            RecordHeader::decode(&bytes),
            RecordHeader {
                commit: commit_word(KIND_DATA, 64),
                crc: 0xdead_beef,
                seq: 0x0102_0304_0506_0708,
                timestamp_ns: 42,
                type_id: 7,
                payload_len: 64,
            }
        );
        // Little-endian at the documented offsets (DESIGN.md section 2).
        assert_eq!(bytes[8], 0x08);
        assert_eq!(bytes[15], 0x01);
        assert_eq!(bytes[16], 42);
        assert_eq!(bytes[24], 7);
        assert_eq!(bytes[28], 64);
    }

    #[test]
    fn record_len_is_aligned() {
        assert_eq!(record_len(0), 32);
        assert_eq!(record_len(1), 40);
        assert_eq!(record_len(8), 40);
        assert_eq!(record_len(64), 96);
        for n in 0..200 {
            assert_eq!(record_len(n) % RECORD_ALIGN, 0);
            assert!(record_len(n) >= RECORD_HEADER_SIZE + n);
        }
    }

    #[test]
    fn segment_names_parse() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_file_name(&index_file_name(1)), None);
    }
}
