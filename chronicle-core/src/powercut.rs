//! A log of what reached stable storage, for the power-loss simulator (tests only).
//!
//! A power cut keeps, of every page, some version written since the last time the page was
//! made durable (msync of a mapping, fsync of a file). To model that, a test must know what was
//! made durable and when: with the cargo feature `power-model`, once a test called [`enable`],
//! every successful msync (`Map::flush_range`) and fsync (`sys::fsync_path`) the library issues
//! appends the bytes it made durable to a process-wide log, which the test drains with
//! [`take_under`]. Without the feature [`record`] is an empty inline function; with it but not
//! enabled (other tests of a build with all features), one relaxed load. Tests only.

use std::path::{Path, PathBuf};

/// Bytes of one file that one msync or fsync made durable.
#[derive(Debug, Clone)]
pub struct Synced {
    /// The file.
    pub path: PathBuf,
    /// Offset of `bytes` in it.
    pub offset: u64,
    /// The content made durable.
    pub bytes: Vec<u8>,
}

#[cfg(feature = "power-model")]
static LOG: std::sync::Mutex<Vec<Synced>> = std::sync::Mutex::new(Vec::new());

#[cfg(feature = "power-model")]
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts logging (for the rest of the process). Without `power-model`, nothing is ever logged.
pub fn enable() {
    // Relaxed: the flag orders nothing; the log itself is behind a mutex.
    #[cfg(feature = "power-model")]
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`enable`] was called (callers skip gathering bytes otherwise).
#[cfg(feature = "power-model")]
pub(crate) fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Records that `bytes` at `offset` of `path` are durable now.
#[cfg(feature = "power-model")]
pub(crate) fn record(path: &Path, offset: u64, bytes: &[u8]) {
    if !enabled() {
        return;
    }
    if let Ok(mut log) = LOG.lock() {
        log.push(Synced {
            path: path.to_path_buf(),
            offset,
            bytes: bytes.to_vec(),
        });
    }
}

/// Records that `bytes` at `offset` of `path` are durable now (no-op without `power-model`).
#[cfg(not(feature = "power-model"))]
#[inline(always)]
pub(crate) fn record(_path: &Path, _offset: u64, _bytes: &[u8]) {}

/// Removes and returns the log entries of files under `dir`, oldest first (tests running in
/// parallel each drain their own directory). Always empty without `power-model`.
pub fn take_under(dir: &Path) -> Vec<Synced> {
    #[cfg(feature = "power-model")]
    if let Ok(mut log) = LOG.lock() {
        let (mine, rest): (Vec<Synced>, Vec<Synced>) =
            log.drain(..).partition(|s| s.path.starts_with(dir));
        *log = rest;
        return mine;
    }
    let _ = dir;
    Vec::new()
}
