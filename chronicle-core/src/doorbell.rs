//! A doorbell: one futex word that many queue writers ring and a consumer of many queues sleeps
//! on, so a reader blocked on N queues wakes on a commit to any of them without polling them all.
//!
//! Writers configured with [`WriterConfig::doorbell`](crate::WriterConfig::doorbell) check the
//! word after every commit and pay for a wake only when the WAITERS bit is set (the same
//! protocol as a queue's own futex, see `wait.rs`). A sleeper arms the bit, issues both the
//! asymmetric barrier and a fence (writers of either wake mode may ring it), re-checks its
//! sources, then sleeps.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, compiler_fence};
use std::time::{Duration, Instant};

use crate::control::set_mode;
use crate::error::{Error, Result};
use crate::layout::{
    DOORBELL_FILE_SIZE, DOORBELL_MAGIC, DoorbellBlock, FORMAT_VERSION, NOTIFY_WAITERS, check_magic,
    check_version,
};
use crate::map::Map;
use crate::sys;
use crate::wait::{self, Backoff, Barrier, NotifyWaitOutcome};

/// A mapped doorbell file.
#[derive(Debug)]
pub struct Doorbell {
    _map: Map,
    block: NonNull<DoorbellBlock>,
    path: PathBuf,
}

// SAFETY: `block` points into `_map`, owned and never remapped; the block is all atomics.
unsafe impl Send for Doorbell {}
// SAFETY: as above.
unsafe impl Sync for Doorbell {}

/// Outcome of [`Doorbell::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorbellWaitOutcome {
    /// `ready()` returned true.
    Ready,
    /// The timeout passed.
    TimedOut,
}

impl Doorbell {
    /// Opens the doorbell at `path`, creating it (atomically, by rename) if missing.
    pub fn open_or_create(path: impl AsRef<Path>, mode: u32) -> Result<Doorbell> {
        let path = path.as_ref();
        match Self::open(path) {
            Ok(d) => return Ok(d),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let tmp = path.with_extension(format!("tmp.{}", sys::current_pid()));
        // A leftover of an earlier process with our pid (or a planted link): unlink it, which
        // never touches a link's target, then create exclusively without following links.
        let _ = fs::remove_file(&tmp);
        let file =
            sys::create_new_nofollow(&tmp, mode).map_err(|e| Error::io(&tmp, "create", e))?;
        set_mode(&file, &tmp, mode)?;
        // Allocated, not sparse: a store into a hole of a full file system would be SIGBUS.
        sys::fallocate(&file, DOORBELL_FILE_SIZE)
            .map_err(|e| crate::Error::space(&tmp, "allocate", e))?;
        {
            let map = Map::rw(&file, DOORBELL_FILE_SIZE, &tmp)?;
            let b = map
                .view::<DoorbellBlock>(0)
                .ok_or_else(|| Error::corrupted(&tmp, 0, "doorbell does not fit"))?;
            b.version.store(FORMAT_VERSION, Ordering::Relaxed);
            // SYNC POINT: publishes the version; pairs with the Acquire in `open`.
            b.magic.store(DOORBELL_MAGIC, Ordering::Release);
            // Durable before it gets its name: after a power cut the doorbell is missing (and
            // created again) or initialized, never a page of zeroes that every writer of the
            // bus would refuse as `NotYetInitialized`.
            map.flush_range(0, DOORBELL_FILE_SIZE, &tmp)?;
        }
        // Another process may have created it meanwhile: keep whichever exists.
        match fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(path, "link", e));
            }
        }
        let _ = fs::remove_file(&tmp);
        Self::open(path)
    }

    /// Opens an existing doorbell.
    pub fn open(path: impl AsRef<Path>) -> Result<Doorbell> {
        let path = path.as_ref();
        let file = sys::open_rw_nofollow(path).map_err(|e| Error::io(path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        if len < DOORBELL_FILE_SIZE {
            return Err(Error::corrupted(path, len, "doorbell file is truncated"));
        }
        let map = Map::rw(&file, DOORBELL_FILE_SIZE, path)?;
        let b = map
            .view::<DoorbellBlock>(0)
            .ok_or_else(|| Error::corrupted(path, 0, "doorbell does not fit"))?;
        // SYNC POINT: Acquire pairs with the Release of the magic in `open_or_create`.
        let magic = b.magic.load(Ordering::Acquire);
        check_magic(path, magic, DOORBELL_MAGIC, "bad doorbell magic")?;
        check_version(path, b.version.load(Ordering::Relaxed))?;
        let block = NonNull::from(b);
        Ok(Doorbell {
            _map: map,
            block,
            path: path.to_path_buf(),
        })
    }

    #[inline]
    fn b(&self) -> &DoorbellBlock {
        // SAFETY: produced by `Map::view` on `_map` (checked), which lives as long as `self`.
        unsafe { self.block.as_ref() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writer side, after a commit: wakes sleepers if any are announced. The caller has already
    /// ordered its commit store before this load (see `QueueWriter::wake_if_sleepers`).
    #[inline]
    pub fn ring(&self) {
        compiler_fence(Ordering::SeqCst);
        let word = &self.b().word;
        if word.load(Ordering::Relaxed) & NOTIFY_WAITERS != 0 {
            self.ring_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn ring_slow(&self) {
        let word = &self.b().word;
        let cur = word.load(Ordering::Relaxed);
        // SYNC POINT: AcqRel swap, as in `QueueWriter::wake_slow`.
        word.swap(cur.wrapping_add(2) & !NOTIFY_WAITERS, Ordering::AcqRel);
        sys::futex_wake(word, i32::MAX);
    }

    /// Consumer side: spins/yields per `backoff`, then sleeps until `ready()` holds or `timeout`
    /// passes. `ready` should check every source the doorbell covers.
    pub fn wait(
        &self,
        timeout: Duration,
        spin_limit: u32,
        yield_limit: u32,
        ready: impl FnMut() -> bool,
    ) -> DoorbellWaitOutcome {
        let until = Instant::now() + timeout;
        let backoff = Backoff {
            spin_limit,
            yield_limit,
        };
        match wait::wait_on(
            &self.b().word,
            Barrier::Both,
            true,
            backoff,
            until,
            timeout,
            ready,
        ) {
            NotifyWaitOutcome::Ready => DoorbellWaitOutcome::Ready,
            NotifyWaitOutcome::Deadline | NotifyWaitOutcome::Slice => DoorbellWaitOutcome::TimedOut,
        }
    }
}
