//! Sparse per-segment index: `seq -> offset` and `timestamp -> offset`, for seeking.
//!
//! The writer adds an entry for the first record of each segment and whenever the write offset
//! crosses a multiple of the index stride. The index is a hint: readers verify the record they
//! land on, and fall back to scanning from the segment start when an index is missing or bad.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::control::{Geometry, QueueDir};
use crate::error::{Error, Result};
use crate::layout::{
    FORMAT_VERSION, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE, INDEX_MAGIC, IndexEntry, IndexHeader,
    check_magic, check_version, index_capacity,
};
use crate::map::Map;
use crate::segment::create_preallocated;
use crate::sys;

/// One decoded index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) timestamp_ns: u64,
    pub(crate) offset: u64,
}

/// The mapped index of one segment.
#[derive(Debug)]
pub(crate) struct Index {
    map: Map,
    path: PathBuf,
    capacity: u64,
}

/// Checks the sparse index of segment `segment` of the queue at `dir` (read-only): `Ok` if it
/// opens and validates. A bad or missing index only slows seeks in that segment down (they fall
/// back to scanning); the writer rebuilds the tail segment's index when it recovers.
pub fn check_index(dir: &QueueDir, segment: u64) -> Result<()> {
    let control = crate::control::Control::open(dir, false)?;
    Index::open(dir, segment, &control.geometry, false).map(drop)
}

impl Index {
    fn capacity(geom: &Geometry) -> u64 {
        index_capacity(geom.segment_size, u64::from(geom.index_stride))
    }

    fn mapped(map: Map, path: PathBuf, geom: &Geometry) -> Index {
        Index {
            map,
            path,
            capacity: Self::capacity(geom),
        }
    }

    fn file_len(geom: &Geometry) -> u64 {
        INDEX_HEADER_SIZE + Self::capacity(geom) * INDEX_ENTRY_SIZE
    }

    /// Creates (replacing any leftover) the index for segment `id`.
    pub(crate) fn create(dir: &QueueDir, id: u64, geom: &Geometry) -> Result<Index> {
        let path = dir.index_file(id);
        let len = Self::file_len(geom);
        let file = create_preallocated(&path, len, geom.file_mode)?;
        let map = Map::rw(&file, len, &path)?;
        let idx = Index::mapped(map, path, geom);
        let h = idx.header()?;
        h.version.store(FORMAT_VERSION, Ordering::Relaxed);
        h.header_size
            .store(INDEX_HEADER_SIZE as u32, Ordering::Relaxed);
        h.segment_id.store(id, Ordering::Relaxed);
        h.capacity.store(idx.capacity, Ordering::Relaxed);
        h.count.store(0, Ordering::Relaxed);
        // SYNC POINT: publishes the header; pairs with the Acquire in `open`.
        h.magic.store(INDEX_MAGIC, Ordering::Release);
        Ok(idx)
    }

    /// Opens the index of segment `id` (read-write for the writer, read-only otherwise).
    pub(crate) fn open(dir: &QueueDir, id: u64, geom: &Geometry, write: bool) -> Result<Index> {
        let path = dir.index_file(id);
        let file = sys::open_nofollow(&path, write).map_err(|e| Error::io(&path, "open", e))?;
        let len = Self::file_len(geom);
        let flen = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        if flen < len {
            return Err(Error::corrupted(&path, flen, "index file is truncated"));
        }
        let map = if write {
            Map::rw(&file, len, &path)?
        } else {
            Map::ro(&file, len, &path, false)?
        };
        let idx = Index::mapped(map, path, geom);
        let h = idx.header()?;
        // SYNC POINT: Acquire pairs with the Release of the magic in `create`.
        let magic = h.magic.load(Ordering::Acquire);
        check_magic(&idx.path, magic, INDEX_MAGIC, "bad index magic")?;
        check_version(&idx.path, h.version.load(Ordering::Relaxed))?;
        if h.segment_id.load(Ordering::Relaxed) != id
            || h.capacity.load(Ordering::Relaxed) != idx.capacity
        {
            return Err(Error::corrupted(
                &idx.path,
                16,
                "index header does not match its segment",
            ));
        }
        Ok(idx)
    }

    fn header(&self) -> Result<&IndexHeader> {
        self.map
            .view::<IndexHeader>(0)
            .ok_or_else(|| Error::corrupted(&self.path, 0, "index header does not fit"))
    }

    fn entry(&self, i: u64) -> Option<&IndexEntry> {
        if i >= self.capacity {
            return None;
        }
        self.map
            .view::<IndexEntry>(INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE)
    }

    /// Number of published entries (clamped to the capacity: the count is untrusted).
    pub(crate) fn len(&self) -> u64 {
        self.header()
            // SYNC POINT: Acquire pairs with the Release increment in `push`: entries below the
            // count are fully written.
            .map(|h| h.count.load(Ordering::Acquire).min(self.capacity))
            .unwrap_or(0)
    }

    /// Entry `i`, if published.
    pub(crate) fn get(&self, i: u64) -> Option<Entry> {
        if i >= self.len() {
            return None;
        }
        let e = self.entry(i)?;
        Some(Entry {
            seq: e.seq.load(Ordering::Relaxed),
            timestamp_ns: e.timestamp_ns.load(Ordering::Relaxed),
            offset: e.offset.load(Ordering::Relaxed),
        })
    }

    /// Appends an entry (writer only). Silently ignored when full: the index is a hint.
    pub(crate) fn push(&self, e: Entry) {
        let Ok(h) = self.header() else { return };
        let n = h.count.load(Ordering::Relaxed);
        let Some(slot) = self.entry(n) else { return };
        slot.seq.store(e.seq, Ordering::Relaxed);
        slot.timestamp_ns.store(e.timestamp_ns, Ordering::Relaxed);
        slot.offset.store(e.offset, Ordering::Relaxed);
        // SYNC POINT: Release publishes the entry; pairs with the Acquire in `len`.
        h.count.store(n + 1, Ordering::Release);
    }

    /// Last entry whose key is `<= target`, by binary search. `key` picks seq or timestamp.
    pub(crate) fn floor(&self, target: u64, key: impl Fn(&Entry) -> u64) -> Option<Entry> {
        let n = self.len();
        let (mut lo, mut hi) = (0u64, n);
        // invariant: entries < lo have key <= target; entries >= hi have key > target
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.get(mid)?;
            if key(&e) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 { None } else { self.get(lo - 1) }
    }
}
