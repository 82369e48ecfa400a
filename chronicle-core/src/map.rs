//! Memory maps with checked, typed access.
//!
//! Mapped bytes are untrusted: every typed view is bounds- and alignment-checked when it is made,
//! and only atomics (or plain reads of bytes already published by an Acquire load) touch them.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::error::{Error, Result};

/// A shared mapping, writable or read-only.
#[derive(Debug)]
pub(crate) enum Map {
    /// Read-write shared mapping.
    Rw(MmapMut),
    /// Read-only shared mapping.
    Ro(Mmap),
}

impl Map {
    /// Maps the first `len` bytes of `file` shared, read-write.
    pub(crate) fn rw(file: &File, len: u64, path: &Path) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::InvalidConfig {
            what: "mapping larger than the address space",
        })?;
        // SAFETY: the mapping is MAP_SHARED over a file every chronicle process treats as shared
        // memory: all access to it goes through atomics or bytes published by a Release/Acquire
        // pair, and files are never truncated while mapped (segments are preallocated, and
        // deletion only unlinks).
        let m = unsafe { MmapOptions::new().len(len).map_mut(file) }
            .map_err(|e| Error::io(path, "mmap", e))?;
        Ok(Map::Rw(m))
    }

    /// Maps the first `len` bytes of `file` shared, read-only; `populate` pre-faults it.
    pub(crate) fn ro(file: &File, len: u64, path: &Path, populate: bool) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::InvalidConfig {
            what: "mapping larger than the address space",
        })?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        // SAFETY: as in `rw`; a read-only mapping cannot be used to modify the file.
        let m = unsafe { opts.map(file) }.map_err(|e| Error::io(path, "mmap", e))?;
        Ok(Map::Ro(m))
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        match self {
            Map::Rw(m) => m.as_ptr(),
            Map::Ro(m) => m.as_ptr(),
        }
    }

    /// Pointer for writing; `None` for a read-only mapping.
    #[inline]
    pub(crate) fn as_mut_ptr(&mut self) -> Option<*mut u8> {
        match self {
            Map::Rw(m) => Some(m.as_mut_ptr()),
            Map::Ro(_) => None,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> u64 {
        match self {
            Map::Rw(m) => m.len() as u64,
            Map::Ro(m) => m.len() as u64,
        }
    }

    pub(crate) fn is_writable(&self) -> bool {
        matches!(self, Map::Rw(_))
    }

    /// A typed view of a `#[repr(C)]` struct made only of atomics and padding at `offset`.
    ///
    /// Returns `None` if the struct does not fit or is misaligned.
    pub(crate) fn view<T: AtomicStruct>(&self, offset: u64) -> Option<&T> {
        let size = std::mem::size_of::<T>() as u64;
        let end = offset.checked_add(size)?;
        if end > self.len() {
            return None;
        }
        // SAFETY: `offset + size_of::<T>() <= len`, so the pointer stays inside the mapping.
        let ptr = unsafe { self.as_ptr().add(offset as usize) };
        if (ptr as usize) % std::mem::align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above); `T: AtomicStruct` promises every bit
        // pattern is valid and that all fields are atomics or inert padding, so shared access
        // from several processes is sound. The reference lives no longer than `&self`, i.e. the
        // mapping.
        Some(unsafe { &*(ptr as *const T) })
    }

    /// Bytes `offset..offset+len`, if in bounds.
    ///
    /// Callers read only bytes the single writer published (Acquire on the commit word) and
    /// never changes afterwards.
    #[inline]
    pub(crate) fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        // SAFETY: `offset..end` lies inside the live mapping (checked above); the slice borrows
        // `self`, so it cannot outlive the mapping.
        Some(unsafe {
            std::slice::from_raw_parts(self.as_ptr().add(offset as usize), len as usize)
        })
    }

    /// Drops this process's page-table entries for `offset..offset+len` (clamped to the
    /// mapping), so that unmapping it later is cheap. The file's pages stay in the page cache and
    /// a later access would fault them back in. Errors are ignored: it is only an optimization.
    ///
    /// # Safety
    /// No reference into the range may be alive, and the caller must not create one afterwards
    /// expecting the old page frames (for a shared file mapping the contents stay the file's).
    pub(crate) unsafe fn release(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.len());
        let off = offset.min(end);
        if end == off {
            return;
        }
        let (off, n) = (off as usize, (end - off) as usize);
        // SAFETY: in bounds (clamped above); the caller guarantees nothing borrows the range.
        // MADV_DONTNEED on a shared file mapping only discards page-table entries.
        let _ = unsafe {
            match self {
                Map::Rw(m) => m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, n),
                Map::Ro(m) => m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, n),
            }
        };
    }

    /// Flushes (msync) `offset..offset+len` to the file.
    pub(crate) fn flush_range(&self, offset: u64, len: u64, path: &Path) -> Result<()> {
        if let Map::Rw(m) = self {
            if len == 0 {
                return Ok(());
            }
            let end = offset.saturating_add(len).min(self.len());
            let off = offset.min(end);
            m.flush_range(off as usize, (end - off) as usize)
                .map_err(|e| Error::io(path, "msync", e))?;
            crate::powercut::record(path, off, m.get(off as usize..end as usize).unwrap_or(&[]));
        }
        Ok(())
    }
}

/// Marker for `#[repr(C)]` structs made only of atomics and byte padding, for which every bit
/// pattern is valid and concurrent access from other processes is sound.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only `Atomic*` fields and `[u8; N]` padding that
/// is never read, and have no invariants beyond their bits.
pub(crate) unsafe trait AtomicStruct {}

// SAFETY: atomics of fixed width; every bit pattern valid.
unsafe impl AtomicStruct for AtomicU32 {}
// SAFETY: as above.
unsafe impl AtomicStruct for AtomicU64 {}
// SAFETY: #[repr(C)], atomics plus never-read padding (see layout.rs).
unsafe impl AtomicStruct for crate::layout::ControlBlock {}
// SAFETY: as above.
unsafe impl AtomicStruct for crate::layout::SegmentHeader {}
// SAFETY: as above.
unsafe impl AtomicStruct for crate::layout::IndexHeader {}
// SAFETY: as above.
unsafe impl AtomicStruct for crate::layout::IndexEntry {}
// SAFETY: as above.
unsafe impl AtomicStruct for crate::layout::ReaderMetaBlock {}
// SAFETY: as above.
unsafe impl AtomicStruct for crate::layout::DoorbellBlock {}
