//! Crash recovery: find the true tail after a writer died, and fence off a torn record.
//!
//! A writer publishes a record by Release-storing its commit word last, so a record is either
//! fully committed or invisible. A writer killed mid-record leaves an invisible (commit word 0)
//! region that may hold partial header and payload bytes. The next writer, holding the lock:
//!
//! 1. walks committed records from the start of the last published segment (following PADs into
//!    later segments) to the first zero commit word: that is the tail, and the last DATA record
//!    seen gives the next sequence number;
//! 2. looks for non-zero bytes in the window a torn record could have touched (one maximal record
//!    from the tail); if there are any, it writes an ABORTED record covering them so no reader ever
//!    interprets leftover bytes as a commit word, and appending resumes after it;
//! 3. rebuilds the tail segment's sparse index and deletes segments prepared ahead of the tail
//!    (no reader can have entered them).
//!
//! Committed records are never changed.

use std::sync::atomic::Ordering;

use crate::control::{Geometry, QueueDir};
use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::layout::{
    KIND_ABORTED, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, commit_word, record_len,
};
use crate::record::{DataRecord, RecordCursor};
use crate::segment::Segment;

/// What recovery did to the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryAction {
    /// The tail was clean (the previous writer closed, or died between records).
    NoAction,
    /// A torn record was found and fenced off with an ABORTED record.
    Unblocked {
        /// Segment of the torn record.
        segment: u64,
        /// Offset of the torn record.
        offset: u64,
        /// Bytes fenced off.
        len: u64,
    },
}

/// Result of opening a queue for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment the writer continues in.
    pub tail_segment: u64,
    /// Offset of the next record.
    pub tail_offset: u64,
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Timestamp of the last committed record (0 if none).
    pub last_timestamp_ns: u64,
    /// Records walked to find the tail.
    pub records_scanned: u64,
    /// What was done about a torn record.
    pub action: RecoveryAction,
    /// Segments prepared ahead of the tail by a previous writer and removed.
    pub removed_prepared: Vec<u64>,
}

/// The recovered writer state: open tail segment and index plus the report.
pub(crate) struct Recovered {
    pub(crate) segment: Segment,
    pub(crate) index: Index,
    pub(crate) report: RecoveryReport,
}

/// Where a walk over committed records ended.
struct WalkEnd {
    /// The segment holding the tail (read-write or read-only, as requested).
    seg: Segment,
    /// Offset of the first uncommitted position.
    tail_offset: u64,
    next_seq: u64,
    last_ts: u64,
    /// DATA records walked.
    scanned: u64,
    /// Sparse index entries of the tail segment.
    entries: Vec<Entry>,
}

/// Recovery's record cursor: a walk from the start of a segment that maps segments read-write
/// or read-only, checks sequence continuity across PADs and collects the index entries of the
/// segment it is in.
struct Walker<'a> {
    dir: &'a QueueDir,
    geom: &'a Geometry,
    writable: bool,
    seg: Segment,
    offset: u64,
    next_seq: u64,
    last_ts: u64,
    scanned: u64,
    entries: Vec<Entry>,
    next_index_at: u64,
}

impl Walker<'_> {
    fn open(&self, id: u64) -> Result<Segment> {
        if self.writable {
            Segment::open_rw(self.dir, id, self.geom)
        } else {
            Segment::open_ro(self.dir, id, self.geom)
        }
    }

    /// Takes the DATA record `d` at the position into the walk (continuity, index entry,
    /// next seq) and moves past it.
    fn take(&mut self, d: Taken) -> Result<()> {
        if self.scanned > 0 && d.seq != self.next_seq {
            return Err(Error::corrupted(
                &self.seg.path,
                d.offset,
                "sequence numbers are not contiguous",
            ));
        }
        if d.offset >= self.next_index_at {
            self.entries.push(Entry {
                seq: d.seq,
                timestamp_ns: d.timestamp_ns,
                offset: d.offset,
            });
            let stride = u64::from(self.geom.index_stride);
            self.next_index_at = (d.offset / stride + 1) * stride;
        }
        self.next_seq = d.seq.wrapping_add(1);
        self.last_ts = d.timestamp_ns;
        self.scanned += 1;
        self.offset = d.next;
        Ok(())
    }
}

/// What the walk keeps of a DATA record (`None` from `seek_data`'s callback: a lost page).
#[derive(Clone, Copy)]
struct Taken {
    offset: u64,
    next: u64,
    seq: u64,
    timestamp_ns: u64,
}

impl RecordCursor for Walker<'_> {
    fn segment(&self) -> &Segment {
        &self.seg
    }

    fn geometry(&self) -> &Geometry {
        self.geom
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    fn enter_next_segment(&mut self) -> Result<()> {
        let seg = self.open(self.seg.id + 1).map_err(|e| match e {
            Error::Io { .. } => Error::corrupted(
                &self.seg.path,
                self.offset,
                "PAD leads to a missing segment",
            ),
            other => other,
        })?;
        if self.scanned > 0 && seg.base_seq() != self.next_seq {
            return Err(Error::corrupted(
                &seg.path,
                40,
                "segment base sequence does not follow its predecessor",
            ));
        }
        self.next_seq = seg.base_seq();
        self.seg = seg;
        self.offset = SEGMENT_HEADER_SIZE;
        self.entries.clear();
        self.next_index_at = 0;
        Ok(())
    }
}

/// Walks committed records from the start of segment `start`, following PADs, to the first zero
/// commit word. Checks sequence continuity (within and across segments) and collects the tail
/// segment's index entries. Never writes: `writable` only chooses how segments are mapped.
fn walk_to_tail(dir: &QueueDir, geom: &Geometry, start: u64, writable: bool) -> Result<WalkEnd> {
    let seg = if writable {
        Segment::open_rw(dir, start, geom)?
    } else {
        Segment::open_ro(dir, start, geom)?
    };
    let mut w = Walker {
        dir,
        geom,
        writable,
        next_seq: seg.base_seq(),
        seg,
        offset: SEGMENT_HEADER_SIZE,
        last_ts: 0,
        scanned: 0,
        entries: Vec::new(),
        next_index_at: 0,
    };
    let tail_offset = loop {
        let found = w.seek_data(|_, d| {
            // A page of this record never reached the disk (a power cut: its commit word did,
            // another page of it did not). History ends before it; recovery fences it and
            // whatever follows (`torn_extent`).
            if lost_page(&d) {
                return Ok(None);
            }
            let h = d.header();
            Ok(Some(Taken {
                offset: d.offset,
                next: d.next,
                seq: h.seq,
                timestamp_ns: h.timestamp_ns,
            }))
        })?;
        match found {
            Some(Some(d)) => w.take(d)?,
            // A lost page, or the first empty slot.
            Some(None) | None => break w.offset,
        }
    };
    Ok(WalkEnd {
        seg: w.seg,
        tail_offset,
        next_seq: w.next_seq,
        last_ts: w.last_ts,
        scanned: w.scanned,
        entries: w.entries,
    })
}

/// True when the DATA record `d` fails its CRC and one of the 4 KiB pages it spans holds only
/// zeroes within it: what a power cut leaves when that page's older version (from before the
/// record was written: zeroes there) is what reached the disk. A record that fails its CRC
/// otherwise (a flipped bit) is damage, not a lost page: recovery keeps it, readers report it
/// (`Corrupted`), `skip_record` passes it.
fn lost_page(d: &DataRecord<'_>) -> bool {
    const PAGE: u64 = 4096;
    if d.crc_matches() {
        return false;
    }
    let (offset, rec) = (d.offset, d.bytes());
    let end = offset + rec.len() as u64;
    let mut from = offset;
    while from < end {
        let to = ((from / PAGE + 1) * PAGE).min(end);
        let chunk = rec
            .get((from - offset) as usize..(to - offset) as usize)
            .unwrap_or(&[]);
        if !chunk.is_empty() && chunk.iter().all(|&b| b == 0) {
            return true;
        }
        from = to;
    }
    false
}

/// Walks to the tail from the published tail segment, or from an earlier one when the
/// segment before it does not end with a PAD: after a power cut the tail segment's pages (and
/// `queue.meta`) can reach the disk while the end of its predecessor does not, and then history
/// ends in the predecessor (the later segment is removed like a prepared one). Costs one walk of
/// the segment before the tail. A predecessor that does not open (damaged, or removed by
/// retention meanwhile) is left to the readers that reach it.
fn walk_checked(
    dir: &QueueDir,
    geom: &Geometry,
    ids: &[u64],
    start: u64,
    writable: bool,
) -> Result<WalkEnd> {
    let mut s = start;
    loop {
        let Some(prev) = s.checked_sub(1).filter(|p| ids.contains(p)) else {
            return walk_to_tail(dir, geom, s, writable);
        };
        match walk_to_tail(dir, geom, prev, writable) {
            Ok(w) if w.seg.id >= s => return Ok(w),
            Ok(_) => s = prev,
            Err(_) => return walk_to_tail(dir, geom, s, writable),
        }
    }
}

/// The segment a walk starts from: the published tail segment when it exists, else the oldest
/// (prepared-ahead segments are never reached through a PAD, so the walk stops at the true tail).
fn walk_start(ids: &[u64], hint_segment: Option<u64>) -> Option<u64> {
    match hint_segment {
        Some(h) if ids.contains(&h) => Some(h),
        _ => ids.first().copied(),
    }
}

/// Bytes from `tail` to the last non-zero byte after it in the segment, or `None` when the
/// rest of the segment is clean. A writer that died mid-record can have written one maximal
/// record's worth; after a power cut, any later page of the segment can hold records that
/// reached the disk while an earlier page did not, so the whole rest is looked at (a scan of
/// the segment's unused part at writer open).
fn torn_extent(seg: &Segment, geom: &Geometry, tail: u64) -> Result<Option<u64>> {
    // To the file's end: the PAD reserve after `data_end` can hold a lost history's PAD.
    let window_end = geom.segment_size;
    let window = seg
        .bytes(tail, window_end.saturating_sub(tail))
        .ok_or_else(|| Error::corrupted(&seg.path, tail, "tail outside the segment"))?;
    Ok(window
        .iter()
        .rposition(|&b| b != 0)
        .map(|last| last as u64 + 1))
}

/// Finds and repairs the tail. `hint_segment` is the tail segment published in `queue.meta`;
/// `None` (or a missing file) falls back to the newest segment on disk.
pub(crate) fn recover(
    dir: &QueueDir,
    geom: &Geometry,
    hint_segment: Option<u64>,
) -> Result<Recovered> {
    let ids = dir.list_reachable_segments()?;
    let Some(&newest) = ids.last() else {
        // A queue without segments (fresh): start segment 0.
        let segment = Segment::create(dir, 0, geom)?;
        let index = Index::create(dir, 0, geom)?;
        return Ok(Recovered {
            segment,
            index,
            report: RecoveryReport {
                tail_segment: 0,
                tail_offset: SEGMENT_HEADER_SIZE,
                next_seq: 0,
                last_timestamp_ns: 0,
                records_scanned: 0,
                action: RecoveryAction::NoAction,
                removed_prepared: Vec::new(),
            },
        });
    };
    let start = walk_start(&ids, hint_segment).unwrap_or(newest);
    let WalkEnd {
        seg,
        tail_offset,
        next_seq,
        last_ts,
        scanned,
        entries,
    } = walk_checked(dir, geom, &ids, start, true)?;
    // Torn-record repair.
    let action = fence_torn_tail(&seg, geom, tail_offset)?;
    let tail_offset = match action {
        RecoveryAction::Unblocked { len, .. } => tail_offset + len,
        RecoveryAction::NoAction => tail_offset,
    };
    // Rebuild the index of the tail segment.
    let index = Index::create(dir, seg.id, geom)?;
    for e in entries {
        index.push(e);
    }
    // Remove segments prepared ahead of the tail.
    let mut removed_prepared = Vec::new();
    for &id in ids.iter().filter(|&&id| id > seg.id) {
        let _ = std::fs::remove_file(dir.segment(id));
        let _ = std::fs::remove_file(dir.index_file(id));
        removed_prepared.push(id);
    }
    let report = RecoveryReport {
        tail_segment: seg.id,
        tail_offset,
        next_seq,
        last_timestamp_ns: last_ts,
        records_scanned: scanned,
        action,
        removed_prepared,
    };
    Ok(Recovered {
        segment: seg,
        index,
        report,
    })
}

/// If bytes after the tail are not all zero, a record was torn there: cover them with an ABORTED
/// record. Returns what was done.
pub(crate) fn fence_torn_tail(seg: &Segment, geom: &Geometry, tail: u64) -> Result<RecoveryAction> {
    let Some(extent) = torn_extent(seg, geom, tail)? else {
        return Ok(RecoveryAction::NoAction);
    };
    // Zero [tail + 4, tail + extent): after a power cut the bytes after the tail can hold
    // intact records (and a PAD) of a lost history, from pages that reached the disk after a
    // hole; a saved reader position pointing at one of them must not find it there
    // (`QueueReader::restore`), and no reader may take one for the next record.
    let zero_end = tail + extent;
    let ptr = seg
        .write_ptr(
            tail,
            extent.max(RECORD_HEADER_SIZE).min(geom.segment_size - tail),
        )
        .ok_or_else(|| Error::corrupted(&seg.path, tail, "tail segment is not writable"))?;
    // SAFETY: `ptr..ptr+extent` is inside the writable mapping (checked by write_ptr, `extent`
    // was measured in it). These bytes belong to no record of the recovered history: readers
    // read bytes after a commit word only after Acquire-loading it non-zero at a position of
    // that history, and the commit word at `tail` is written only through the atomic below.
    unsafe { std::ptr::write_bytes(ptr.add(4), 0, (zero_end - tail).saturating_sub(4) as usize) };
    // Then cover the region with an ABORTED record rounded up to a whole record (at least a
    // header), where one fits before the PAD reserve; a region inside the reserve is clean now.
    let covered = extent.max(RECORD_HEADER_SIZE);
    let total = record_len(covered - RECORD_HEADER_SIZE).min(geom.data_end().saturating_sub(tail));
    let word = seg
        .commit_at(tail)
        .ok_or_else(|| Error::corrupted(&seg.path, tail, "tail outside the segment"))?;
    if total < RECORD_HEADER_SIZE {
        // Relaxed: no reader of the recovered history reads this word before the writer
        // publishes a record here (with Release).
        word.store(0, Ordering::Relaxed);
        return Ok(RecoveryAction::NoAction);
    }
    let body = total - RECORD_HEADER_SIZE;
    if let Some(hdr) = seg.write_ptr(tail, RECORD_HEADER_SIZE) {
        // SAFETY: in the writable mapping (checked); the header's bytes after the commit word,
        // not read before the commit word below is published (as above).
        unsafe { std::ptr::write_bytes(hdr.add(4), 0, RECORD_HEADER_SIZE as usize - 4) };
    }
    // SYNC POINT: Release publishes the zeroed header; pairs with readers' Acquire load.
    word.store(commit_word(KIND_ABORTED, body as u32), Ordering::Release);
    Ok(RecoveryAction::Unblocked {
        segment: seg.id,
        offset: tail,
        len: total,
    })
}

/// What a read-only look at a queue's tail found (see [`check_tail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCheck {
    /// Segment holding the true tail (the first uncommitted record position).
    pub tail_segment: u64,
    /// Offset of the true tail in that segment.
    pub tail_offset: u64,
    /// Sequence number the next record would get.
    pub next_seq: u64,
    /// DATA records walked from the start of the published tail segment.
    pub records_walked: u64,
    /// Where non-zero bytes follow the tail (a record torn by a writer that died mid-write):
    /// `(offset, bytes from the tail to the last non-zero byte)`. `None` when the tail is clean.
    pub torn: Option<(u64, u64)>,
}

/// Finds the true tail exactly as recovery would and reports whether a torn record follows it,
/// without writing anything (segments are mapped read-only). Meant for a queue with no live
/// writer: with one, records committed during the walk just move the tail.
pub fn check_tail(dir: &QueueDir, geom: &Geometry, hint_segment: Option<u64>) -> Result<TailCheck> {
    let ids = dir.list_reachable_segments()?;
    let Some(&newest) = ids.last() else {
        return Ok(TailCheck {
            tail_segment: 0,
            tail_offset: SEGMENT_HEADER_SIZE,
            next_seq: 0,
            records_walked: 0,
            torn: None,
        });
    };
    let start = walk_start(&ids, hint_segment).unwrap_or(newest);
    let walk = walk_checked(dir, geom, &ids, start, false)?;
    let torn = torn_extent(&walk.seg, geom, walk.tail_offset)?.map(|len| (walk.tail_offset, len));
    let (seg, tail_offset, next_seq, walked) =
        (walk.seg, walk.tail_offset, walk.next_seq, walk.scanned);
    Ok(TailCheck {
        tail_segment: seg.id,
        tail_offset,
        next_seq,
        records_walked: walked,
        torn,
    })
}

/// Damage before the tail segment found by [`find_damage`]: a segment that does not open, or
/// whose records stop before the PAD that would lead to the next segment.
#[derive(Debug)]
#[non_exhaustive]
pub struct Damage {
    /// The damaged segment.
    pub segment: u64,
    /// What is wrong, naming the file and offset (`Corrupted`, `NotYetInitialized`, ...).
    pub error: Error,
    /// The first sequence number that cannot be read, when known (the walk reached the damage
    /// through intact records).
    pub first_seq: Option<u64>,
    /// The first sequence number readable again after the damage: the base of the next
    /// segment that opens. Readers starting there or later are not affected. `None` when no
    /// later segment opens.
    pub resume_seq: Option<u64>,
    /// The segment holding `resume_seq`.
    pub resume_segment: Option<u64>,
}

/// Walks the queue's segments below `tail_segment` the way readers and recovery do (records,
/// PADs, CRCs of records with a lost page) and lists where history is damaged, without writing
/// anything. Each damaged segment is reported once; the walk resumes at the next segment that
/// opens. Damage in the tail segment itself is recovery's (see [`check_tail`]).
pub fn find_damage(dir: &QueueDir, geom: &Geometry, tail_segment: u64) -> Result<Vec<Damage>> {
    let ids: Vec<u64> = dir
        .list_reachable_segments()?
        .into_iter()
        .filter(|&id| id <= tail_segment)
        .collect();
    let resume_after = |bad: u64| {
        ids.iter().filter(|&&id| id > bad).find_map(|&id| {
            Segment::open_ro(dir, id, geom)
                .ok()
                .map(|s| (id, s.base_seq()))
        })
    };
    let mut out = Vec::new();
    let mut next = ids.first().copied();
    while let Some(s) = next.filter(|&s| s < tail_segment) {
        let (bad, error, first_seq) = match walk_to_tail(dir, geom, s, false) {
            Ok(w) if w.seg.id >= tail_segment => break,
            Ok(w) => (
                w.seg.id,
                Error::corrupted(
                    &w.seg.path,
                    w.tail_offset,
                    "records end here, but the queue continues in a later segment",
                ),
                Some(w.next_seq),
            ),
            Err(e) => {
                let bad = match &e {
                    Error::Corrupted { path, .. }
                    | Error::NotYetInitialized { path }
                    | Error::VersionMismatch { path, .. }
                    | Error::Io { path, .. } => ids
                        .iter()
                        .copied()
                        .find(|&id| dir.segment(id) == *path)
                        .unwrap_or(s),
                    _ => s,
                };
                (bad, e, None)
            }
        };
        if bad >= tail_segment {
            break;
        }
        let resume = resume_after(bad);
        out.push(Damage {
            segment: bad,
            error,
            first_seq,
            resume_seq: resume.map(|r| r.1),
            resume_segment: resume.map(|r| r.0),
        });
        next = resume.map(|r| r.0);
    }
    Ok(out)
}
