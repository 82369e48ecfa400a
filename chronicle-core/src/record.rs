//! The record cursor: the one walk over the records of a chain of segments.
//!
//! Every reader of records goes through here: `QueueReader::next`/`peek` (the hot path), its
//! seeks and `skip_record`, the check of a saved position, and recovery's walk to the tail.
//! Two layers, each written once:
//!
//! - [`slot_at`] Acquire-loads and decodes the commit word at a position, checks it against the
//!   geometry (a DATA record's payload length and extent, an ABORTED region's extent) and says
//!   where the next record starts;
//! - [`RecordCursor::seek_data`] follows PADs into the next segment and steps over ABORTED
//!   regions to the first DATA record or empty slot. What "the next segment" means is the
//!   implementor's: a reader opens it read-only and applies its `OnLost` policy, recovery
//!   checks that its base sequence follows the previous segment's.
//!
//! Nothing here checks a record's CRC, sequence number or length copy: that is policy of the
//! caller (a reader checks all three, recovery looks at the CRC only for lost pages, seeks trust
//! the header). The format itself is [`RecordHeader`] in `layout.rs`.

use std::sync::atomic::Ordering;

use crate::control::Geometry;
use crate::error::{Error, Result};
use crate::layout::{
    REC_CRC_START, RECORD_HEADER_SIZE, RecordHeader, RecordKind, decode_commit, record_crc,
    record_len,
};
use crate::segment::Segment;

/// What is at a record position, checked against the geometry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot<'s> {
    /// Commit word 0: the tail (or, after a power cut, lost pages).
    Empty,
    /// A committed DATA record whose lengths fit the geometry.
    Data(DataRecord<'s>),
    /// A PAD: the segment ends here; the next record is at the start of the next segment.
    Pad,
    /// An ABORTED region (fenced off by recovery); the next record starts at `next`.
    Aborted { next: u64 },
}

/// A committed DATA record in a segment mapping. Its payload length is at most the queue's
/// maximum and the record ends before the PAD reserve; its CRC, sequence number and length copy
/// are unchecked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataRecord<'s> {
    /// Where the record starts.
    pub(crate) offset: u64,
    /// Where the next record starts.
    pub(crate) next: u64,
    /// Payload length, from the commit word.
    pub(crate) len: u32,
    /// The header's bytes.
    head: &'s [u8; RECORD_HEADER_SIZE as usize],
    /// The whole record: header and payload.
    bytes: &'s [u8],
}

impl<'s> DataRecord<'s> {
    /// The decoded header (only the fields used are read).
    #[inline(always)]
    pub(crate) fn header(&self) -> RecordHeader {
        RecordHeader::decode(self.head)
    }

    /// The whole record (header and payload).
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &'s [u8] {
        self.bytes
    }

    /// True when the stored CRC matches the record's covered bytes.
    #[inline(always)]
    pub(crate) fn crc_matches(&self) -> bool {
        let covered = self.bytes.get(REC_CRC_START as usize..).unwrap_or(&[]);
        record_crc(covered) == self.header().crc
    }
}

/// Acquire-loads the commit word at `offset` of `seg`.
///
/// Errors: `Corrupted` when `offset` is not a record position inside the segment (unaligned or
/// out of range).
#[inline(always)]
fn load_commit(seg: &Segment, offset: u64) -> Result<u32> {
    let Some(word) = seg.commit_at(offset) else {
        return Err(Error::corrupted(
            &seg.path,
            offset,
            "record position outside the segment",
        ));
    };
    // SYNC POINT: Acquire pairs with the writer's Release store of the commit word in
    // `QueueWriter::commit_record` (or of a PAD in `roll`, or of an ABORTED in recovery's
    // `fence_torn_tail`): the header and payload bytes are complete once this is non-zero.
    Ok(word.load(Ordering::Acquire))
}

/// The record at `offset` of `seg`, its lengths checked against `geom`.
///
/// Errors: `Corrupted` when `offset` is not a record position inside the segment, the commit
/// word names no record kind, a DATA record is longer than the maximum payload, or a DATA
/// record (or an ABORTED region) runs into the PAD reserve.
#[inline(always)]
pub(crate) fn slot_at<'s>(seg: &'s Segment, geom: &Geometry, offset: u64) -> Result<Slot<'s>> {
    let c = load_commit(seg, offset)?;
    if c == 0 {
        return Ok(Slot::Empty);
    }
    match decode_commit(c) {
        Some((RecordKind::Data, len)) => {
            if len > geom.max_payload {
                return Err(Error::corrupted(
                    &seg.path,
                    offset,
                    "record length exceeds the maximum payload",
                ));
            }
            let next = offset + record_len(u64::from(len));
            if next > geom.data_end() {
                return Err(Error::corrupted(
                    &seg.path,
                    offset,
                    "record runs past the segment end",
                ));
            }
            let Some((head, bytes)) = seg
                .bytes(offset, RECORD_HEADER_SIZE + u64::from(len))
                .and_then(|b| Some((b.first_chunk()?, b)))
            else {
                return Err(Error::corrupted(
                    &seg.path,
                    offset,
                    "record outside the segment",
                ));
            };
            Ok(Slot::Data(DataRecord {
                offset,
                next,
                len,
                head,
                bytes,
            }))
        }
        Some((RecordKind::Pad, _)) => Ok(Slot::Pad),
        Some((RecordKind::Aborted, len)) => {
            let next = offset + record_len(u64::from(len));
            if next > geom.data_end() {
                return Err(Error::corrupted(
                    &seg.path,
                    offset,
                    "aborted region runs past the segment end",
                ));
            }
            Ok(Slot::Aborted { next })
        }
        None => Err(Error::corrupted(&seg.path, offset, "invalid commit word")),
    }
}

/// The header of the DATA record at `offset` of `seg`, without any length check (`None` for an
/// empty slot, another kind, or a position outside the segment): for a cheap "is this the
/// record I expect" look.
pub(crate) fn data_header_at(seg: &Segment, offset: u64) -> Option<RecordHeader> {
    let c = load_commit(seg, offset).ok()?;
    match decode_commit(c) {
        Some((RecordKind::Data, _)) => seg
            .bytes(offset, RECORD_HEADER_SIZE)
            .and_then(|b| b.first_chunk())
            .map(RecordHeader::decode),
        _ => None,
    }
}

/// A position in a chain of segments, walked record by record. Implemented by the reader and
/// by recovery's walk; they differ only in how they enter the next segment.
pub(crate) trait RecordCursor {
    /// The segment the position is in.
    fn segment(&self) -> &Segment;
    /// The queue's geometry.
    fn geometry(&self) -> &Geometry;
    /// Offset of the position in [`segment`](Self::segment).
    fn offset(&self) -> u64;
    /// Moves the position within the segment.
    fn set_offset(&mut self, offset: u64);
    /// A PAD was found at the position: move to the first record of the next segment.
    fn enter_next_segment(&mut self) -> Result<()>;

    /// Follows PADs and steps over ABORTED regions from the position to the first DATA record,
    /// and returns what `on_data` makes of it (the position stays at the record: move past it
    /// with `set_offset(record.next)`). `None` at an empty slot.
    #[inline(always)]
    fn seek_data<T>(
        &mut self,
        on_data: impl FnOnce(&Self, DataRecord<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        loop {
            match slot_at(self.segment(), self.geometry(), self.offset())? {
                Slot::Empty => return Ok(None),
                Slot::Data(d) => return on_data(self, d).map(Some),
                Slot::Pad => self.enter_next_segment()?,
                Slot::Aborted { next } => self.set_offset(next),
            }
        }
    }
}
