//! Segment files: creation (preallocated, pre-faulted), validation, and record access.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::control::{Geometry, QueueDir, set_mode};
use crate::error::{Error, Result};
use crate::layout::{
    FORMAT_VERSION, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC, SegmentHeader, check_magic, check_version,
};
use crate::map::Map;
use crate::sys;

/// One mapped segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    map: Map,
    base: *mut u8,
    len: u64,
    /// `(device, inode)` of the mapped file, to tell whether `path` still names it.
    identity: (u64, u64),
}

// SAFETY: `base` points into `map`, owned by the segment and never remapped; all shared access
// goes through atomics or published, immutable bytes.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates segment `id`: a fresh, fully allocated, zeroed and pre-faulted file with an
    /// initialized header. Any file already at that path (a segment prepared by a writer that
    /// died before using it) is replaced. Only the writer (or its maintenance thread) calls this,
    /// and only for ids past the published tail, which no reader can have entered.
    pub(crate) fn create(dir: &QueueDir, id: u64, geom: &Geometry) -> Result<Segment> {
        let mut prep = SegmentPrep::start(dir, id, geom)?;
        prep.step(geom.segment_size)?;
        prep.finish(geom)
    }

    /// Writes the header of a fresh segment and publishes it (its magic, last).
    fn init_header(self, geom: &Geometry) -> Result<Segment> {
        let seg = self;
        let h = seg.header()?;
        h.version.store(FORMAT_VERSION, Ordering::Relaxed);
        h.header_size
            .store(SEGMENT_HEADER_SIZE as u32, Ordering::Relaxed);
        h.segment_id.store(seg.id, Ordering::Relaxed);
        h.queue_uid.store(geom.queue_uid, Ordering::Relaxed);
        h.created_ns.store(sys::realtime_ns(), Ordering::Relaxed);
        h.base_seq.store(0, Ordering::Relaxed);
        // SYNC POINT: Release publishes the header fields; pairs with the Acquire in `validate`.
        h.magic.store(SEGMENT_MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Opens an existing segment read-write (the writer, after a restart).
    pub(crate) fn open_rw(dir: &QueueDir, id: u64, geom: &Geometry) -> Result<Segment> {
        Self::open(dir, id, geom, true)
    }

    /// Opens an existing segment read-only (readers). A reader can never modify it.
    pub(crate) fn open_ro(dir: &QueueDir, id: u64, geom: &Geometry) -> Result<Segment> {
        Self::open(dir, id, geom, false)
    }

    fn open(dir: &QueueDir, id: u64, geom: &Geometry, writable: bool) -> Result<Segment> {
        let path = dir.segment(id);
        let file = sys::open_nofollow(&path, writable).map_err(|e| Error::io(&path, "open", e))?;
        check_len(&file, &path, geom)?;
        crate::control::check_not_world_writable(dir, &path)?;
        let (map, base) = if writable {
            map_rw(&file, &path, geom)?
        } else {
            let map = Map::ro(&file, geom.segment_size, &path, false)?;
            let base = map.as_ptr() as *mut u8;
            (map, base)
        };
        let seg = Segment::mapped(id, &file, path, map, base, geom);
        seg.validate(geom)?;
        Ok(seg)
    }

    /// Segment `id` over `map` of `file`, whose first byte is at `base`.
    fn mapped(
        id: u64,
        file: &File,
        path: PathBuf,
        map: Map,
        base: *mut u8,
        geom: &Geometry,
    ) -> Segment {
        Segment {
            id,
            identity: identity(file),
            path,
            map,
            base,
            len: geom.segment_size,
        }
    }

    fn validate(&self, geom: &Geometry) -> Result<()> {
        validate_header(self.header()?, &self.path, self.id, geom)
    }

    /// The segment header.
    pub(crate) fn header(&self) -> Result<&SegmentHeader> {
        self.map
            .view::<SegmentHeader>(0)
            .ok_or_else(|| Error::corrupted(&self.path, 0, "segment header does not fit"))
    }

    /// Sequence number of the first record of the segment (valid once the segment is published).
    pub(crate) fn base_seq(&self) -> u64 {
        self.header()
            .map(|h| h.base_seq.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    #[inline]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The commit word of the record at `offset`; `None` when `offset` is not an 8-aligned
    /// position with room for a commit word.
    #[inline]
    pub(crate) fn commit_at(&self, offset: u64) -> Option<&AtomicU32> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: `offset + 8 <= len` keeps the word inside the mapping, and `offset` is 8-aligned
        // from a page-aligned base. AtomicU32 accepts any bit pattern. The reference borrows
        // `self`, so it cannot outlive the mapping.
        Some(unsafe { &*(self.base.add(offset as usize) as *const AtomicU32) })
    }

    /// Bytes `offset..offset+len` (see `Map::bytes` for when reading them is allowed).
    #[inline]
    pub(crate) fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.map.bytes(offset, len)
    }

    /// Raw pointer to `offset` for the writer; `None` if out of bounds or not writable.
    #[inline]
    pub(crate) fn write_ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        if !self.map.is_writable() || offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above) of a writable mapping.
        Some(unsafe { self.base.add(offset as usize) })
    }

    /// Reads the word at `offset` (8-aligned, in range; otherwise nothing happens) for its side
    /// effect: the page gets mapped into this process now, not when a record is read from it.
    #[inline]
    pub(crate) fn touch(&self, offset: u64) {
        if let Some(w) = self.commit_at(offset) {
            std::hint::black_box(w.load(Ordering::Relaxed));
        }
    }

    /// Hints the CPU to fetch the cache line at `offset` (and the page's translation) ahead of
    /// use: for ownership when `write`, for reading otherwise. Out-of-range offsets are ignored.
    #[inline(always)]
    pub(crate) fn prefetch(&self, offset: u64, write: bool) {
        if offset >= self.len {
            return;
        }
        // SAFETY: in bounds of the mapping (checked above).
        let p = unsafe { self.base.add(offset as usize) };
        crate::sys::prefetch(p, write);
    }

    /// Drops this process's page-table entries for `offset..offset+len` (see `Map::release`).
    ///
    /// # Safety
    /// No reference into the range may be alive or be created afterwards.
    pub(crate) unsafe fn release(&self, offset: u64, len: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { self.map.release(offset, len) }
    }

    /// True when the segment's path still names the file this mapping was made from (a segment
    /// prepared by a writer that died before using it is replaced by the next writer).
    pub(crate) fn is_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
    }

    /// msync of a byte range.
    pub(crate) fn flush_range(&self, offset: u64, len: u64) -> Result<()> {
        self.map.flush_range(offset, len, &self.path)
    }
}

/// A segment being created a step at a time: the file exists at its full length and is
/// mapped; [`step`](Self::step) allocates and pre-faults the next bytes, [`finish`](Self::finish)
/// the rest and writes the header. Until then the file has no magic (readers and recovery take it
/// for a segment not yet created, and the next creator replaces it); dropped unfinished (or
/// failed), it removes its file.
#[derive(Debug)]
pub(crate) struct SegmentPrep {
    id: u64,
    path: PathBuf,
    file: File,
    /// `None` once finished (the mapping moved into the segment).
    map: Option<(Map, *mut u8)>,
    len: u64,
    /// Bytes from the start allocated and pre-faulted.
    done: u64,
    /// Set once the segment is built: the file then belongs to it.
    finished: bool,
}

// SAFETY: `map`'s pointer points into the mapping the prep owns; only the owner touches it.
unsafe impl Send for SegmentPrep {}

impl SegmentPrep {
    /// Replaces any file at segment `id`'s path with a new one of the segment's length (not yet
    /// allocated) and maps it.
    pub(crate) fn start(dir: &QueueDir, id: u64, geom: &Geometry) -> Result<SegmentPrep> {
        let path = dir.segment(id);
        let file = create_file(&path, geom.file_mode)?;
        let mut prep = SegmentPrep {
            id,
            path,
            file,
            map: None,
            len: geom.segment_size,
            done: 0,
            finished: false,
        };
        prep.file
            .set_len(prep.len)
            .map_err(|e| Error::space(&prep.path, "set length", e))?;
        prep.map = Some(map_rw(&prep.file, &prep.path, geom)?);
        Ok(prep)
    }

    /// The segment id being prepared.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Allocates and pre-faults up to `bytes` more; returns whether all of it is done.
    pub(crate) fn step(&mut self, bytes: u64) -> Result<bool> {
        let n = bytes.min(self.len - self.done);
        let Some((_, base)) = self.map.as_ref() else {
            return Ok(true);
        };
        if n > 0 {
            // Allocated, not sparse: a store into a hole of a full file system would be SIGBUS.
            sys::fallocate_range(&self.file, self.done, n)
                .map_err(|e| Error::space(&self.path, "fallocate", e))?;
            // SAFETY: `done..done+n` lies inside the writable mapping of `len` bytes this prep
            // owns; the file is fresh (all zeroes) and has no magic, so nobody reads it yet.
            unsafe { sys::populate_write(base.add(self.done as usize), n as usize) };
            self.done += n;
        }
        Ok(self.done == self.len)
    }

    /// Does what is left, then writes and publishes the header: the finished segment.
    pub(crate) fn finish(mut self, geom: &Geometry) -> Result<Segment> {
        self.step(self.len)?;
        let Some((map, base)) = self.map.take() else {
            return Err(Error::corrupted(
                &self.path,
                0,
                "segment file is not mapped",
            ));
        };
        self.finished = true;
        let seg = Segment::mapped(
            self.id,
            &self.file,
            std::mem::take(&mut self.path),
            map,
            base,
            geom,
        );
        seg.init_header(geom)
    }
}

impl Drop for SegmentPrep {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates `path` anew (removing what was there) with permission bits `mode`.
fn create_file(path: &std::path::Path, mode: u32) -> Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, "remove stale file", e)),
    }
    let file = sys::create_new_nofollow(path, mode).map_err(|e| Error::space(path, "create", e))?;
    set_mode(&file, path, mode)?;
    Ok(file)
}

/// Creates `path` fresh (replacing a leftover file), with exactly `mode`, and allocates `len`
/// bytes so writes through a mapping can never hit ENOSPC. On failure nothing is left behind.
pub(crate) fn create_preallocated(path: &std::path::Path, len: u64, mode: u32) -> Result<File> {
    let file = create_file(path, mode)?;
    if let Err(e) = sys::fallocate(&file, len) {
        let err = Error::space(path, "fallocate", e);
        drop(file);
        let _ = fs::remove_file(path);
        return Err(err);
    }
    Ok(file)
}

/// Validates the header of segment `id` (file `path`) of the queue with geometry `geom`: magic,
/// version, header size, id and queue uid. Shared by `Segment` (over the mapping) and `probe`
/// (over a copy read with pread).
pub(crate) fn validate_header(
    h: &SegmentHeader,
    path: &std::path::Path,
    id: u64,
    geom: &Geometry,
) -> Result<()> {
    // SYNC POINT: Acquire pairs with the Release store of the magic in `Segment::create`.
    let magic = h.magic.load(Ordering::Acquire);
    check_magic(path, magic, SEGMENT_MAGIC, "bad segment magic")?;
    check_version(path, h.version.load(Ordering::Relaxed))?;
    if u64::from(h.header_size.load(Ordering::Relaxed)) != SEGMENT_HEADER_SIZE {
        return Err(Error::corrupted(path, 12, "bad segment header size"));
    }
    if h.segment_id.load(Ordering::Relaxed) != id {
        return Err(Error::corrupted(
            path,
            16,
            "segment id does not match its file name",
        ));
    }
    if h.queue_uid.load(Ordering::Relaxed) != geom.queue_uid {
        return Err(Error::corrupted(
            path,
            24,
            "segment belongs to another queue",
        ));
    }
    Ok(())
}

/// Maps a segment file read-write: the mapping and its base address.
fn map_rw(file: &File, path: &Path, geom: &Geometry) -> Result<(Map, *mut u8)> {
    let mut map = Map::rw(file, geom.segment_size, path)?;
    let base = map
        .as_mut_ptr()
        .ok_or_else(|| Error::corrupted(path, 0, "segment mapping is not writable"))?;
    Ok((map, base))
}

fn identity(file: &File) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    // A failed fstat gives an identity no file has, so `is_at_path` answers false.
    file.metadata()
        .map_or((u64::MAX, u64::MAX), |m| (m.dev(), m.ino()))
}

fn check_len(file: &File, path: &std::path::Path, geom: &Geometry) -> Result<()> {
    let len = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    check_size(path, len, geom)
}

/// Checks that a segment file of `len` bytes holds a whole segment of the queue's geometry.
pub(crate) fn check_size(path: &std::path::Path, len: u64, geom: &Geometry) -> Result<()> {
    if len < geom.segment_size {
        return Err(Error::corrupted(
            path,
            len,
            "segment file is shorter than the segment size",
        ));
    }
    Ok(())
}
