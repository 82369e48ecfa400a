//! Retention: deleting whole segments nobody needs any more.
//!
//! A segment is a candidate when it is older than the writer's tail segment and every live
//! registered reader has moved past it (a reader whose heartbeat is older than the TTL does not
//! count). Candidates are deleted oldest first while a cap asks for it (total bytes above
//! `max_bytes`, or newest record older than `max_age`). `oldest_segment`/`oldest_seq` in
//! `queue.meta` are advanced before a file is unlinked, so a reader looking for the oldest record
//! never chases a deleted file for long; a file already gone is not an error.

use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::RetentionPolicy;
use crate::control::{Control, Geometry, QueueDir};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::reader_meta::list_readers;
use crate::segment::Segment;
use crate::sys;

/// What a retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted, ascending.
    pub deleted: Vec<u64>,
    /// The oldest segment still needed by a live registered reader, and that reader's name.
    pub held_by: Option<(u64, String)>,
    /// Segments on disk after the pass (published ones).
    pub segments_remaining: u64,
}

/// Facts about one segment that retention needs.
#[derive(Debug, Clone, Copy)]
struct SegInfo {
    id: u64,
    /// Time of the newest record in it, approximated by the first record of the next segment.
    sealed_ns: Option<u64>,
}

/// Segments retention would delete, and the reader holding the oldest needed segment.
pub type RetentionPlan = (Vec<u64>, Option<(u64, String)>);

/// Plans which segments may go, without deleting anything (used by `run` and by `doctor`).
pub fn plan(
    dir: &QueueDir,
    geom: &Geometry,
    tail_segment: u64,
    policy: &RetentionPolicy,
    now_ns: u64,
) -> Result<RetentionPlan> {
    let ids: Vec<u64> = dir
        .list_segments()?
        .into_iter()
        .filter(|&id| id <= tail_segment)
        .collect();
    // The segment each live reader still needs.
    let ttl = u64::try_from(policy.reader_ttl.as_nanos()).unwrap_or(u64::MAX);
    let mut held_by: Option<(u64, String)> = None;
    for info in list_readers(dir)?.into_iter().flatten() {
        let Some(pos) = info.position else { continue };
        let live = info.heartbeat_ns.saturating_add(ttl) >= now_ns;
        if !live {
            continue;
        }
        if held_by.as_ref().is_none_or(|(s, _)| pos.segment < *s) {
            held_by = Some((pos.segment, info.name));
        }
    }
    let limit = held_by
        .as_ref()
        .map_or(tail_segment, |(s, _)| (*s).min(tail_segment));
    if policy.max_bytes.is_none() && policy.max_age.is_none() {
        return Ok((Vec::new(), held_by));
    }
    let mut infos: Vec<SegInfo> = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let sealed_ns = ids
            .get(i + 1)
            .and_then(|&next| first_timestamp(dir, geom, next));
        infos.push(SegInfo { id, sealed_ns });
    }
    let mut count = ids.len() as u64;
    let mut out = Vec::new();
    for s in infos.iter().filter(|s| s.id < limit) {
        let over_bytes = policy
            .max_bytes
            .is_some_and(|max| count.saturating_mul(geom.segment_size) > max);
        let too_old = match (policy.max_age, s.sealed_ns) {
            (Some(age), Some(sealed)) => {
                let age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
                sealed.saturating_add(age_ns) < now_ns
            }
            _ => false,
        };
        if over_bytes || too_old {
            out.push(s.id);
            count -= 1;
        } else {
            break;
        }
    }
    Ok((out, held_by))
}

/// Timestamp of the first record of segment `id` (from its index, else its creation time).
fn first_timestamp(dir: &QueueDir, geom: &Geometry, id: u64) -> Option<u64> {
    if let Ok(idx) = Index::open(dir, id, geom, false) {
        if let Some(e) = idx.get(0) {
            return Some(e.timestamp_ns);
        }
    }
    Segment::open_ro(dir, id, geom).ok().and_then(|s| {
        s.header()
            .ok()
            .map(|h| h.created_ns.load(Ordering::Relaxed))
    })
}

/// Runs one retention pass (the writer, or its maintenance thread, calls this).
pub(crate) fn run(
    dir: &QueueDir,
    control: &Control,
    policy: &RetentionPolicy,
) -> Result<RetentionReport> {
    let geom = control.geometry;
    let tail = control.tail();
    let now = sys::realtime_ns();
    let (victims, held_by) = plan(dir, &geom, tail.segment, policy, now)?;
    let cb = control.cb();
    let mut deleted = Vec::new();
    for id in victims {
        // Advance the published oldest segment first, then unlink.
        let next = id + 1;
        let next_base = Segment::open_ro(dir, next, &geom)
            .map(|s| s.base_seq())
            .ok();
        cb.oldest_segment.fetch_max(next, Ordering::AcqRel);
        if let Some(b) = next_base {
            cb.oldest_seq.fetch_max(b, Ordering::AcqRel);
        }
        crate::crash::point("retention.after_advance");
        remove_if_present(&dir.segment(id))?;
        crate::crash::point("retention.between_unlinks");
        remove_if_present(&dir.index_file(id))?;
        deleted.push(id);
    }
    let remaining = dir
        .list_segments()?
        .into_iter()
        .filter(|&id| id <= tail.segment)
        .count() as u64;
    Ok(RetentionReport {
        deleted,
        held_by,
        segments_remaining: remaining,
    })
}

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "remove", e)),
    }
}

/// Converts a duration to nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What [`quarantine`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantineReport {
    /// Segments moved (with their index files) to `<queue>/quarantine/`.
    pub moved: Vec<u64>,
    /// The queue's oldest segment and seq now.
    pub oldest_segment: u64,
    /// See `oldest_segment`.
    pub oldest_seq: u64,
}

/// Moves segments up to and including `through` (and their index files) aside to
/// `<queue>/quarantine/`, after moving the queue's oldest segment and seq past them, the way
/// retention does before it deletes: readers then start after them, and a reader whose position
/// lies in them gets `PositionLost`. Nothing is deleted: the files can be restored or examined
/// from there (`queue.meta`'s oldest seq is not lowered again by anything). For damage found by [`find_damage`](crate::find_damage) in old segments. The
/// tail segment cannot be moved, and the segment after `through` must open (its base seq
/// becomes the oldest seq).
pub fn quarantine(dir: &QueueDir, through: u64) -> Result<QuarantineReport> {
    let control = Control::open(dir, true)?;
    let geom = control.geometry;
    let tail = control.tail();
    if through >= tail.segment {
        return Err(Error::InvalidConfig {
            what: "quarantine: the tail segment (and those after it) cannot be moved aside",
        });
    }
    let next = through + 1;
    let base = Segment::open_ro(dir, next, &geom)?.base_seq();
    let aside = dir.root.join("quarantine");
    match fs::create_dir(&aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&aside, "create", e)),
    }
    let cb = control.cb();
    // AcqRel as in `run`: readers Acquire-load these before trusting a missing file is retention.
    cb.oldest_segment.fetch_max(next, Ordering::AcqRel);
    cb.oldest_seq.fetch_max(base, Ordering::AcqRel);
    let mut moved = Vec::new();
    for id in dir.list_segments()?.into_iter().filter(|&id| id <= through) {
        for from in [dir.segment(id), dir.index_file(id)] {
            let Some(name) = from.file_name() else {
                continue;
            };
            match fs::rename(&from, aside.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&from, "move aside", e)),
            }
        }
        moved.push(id);
    }
    Ok(QuarantineReport {
        moved,
        oldest_segment: cb.oldest_segment.load(Ordering::Acquire),
        oldest_seq: cb.oldest_seq.load(Ordering::Acquire),
    })
}
