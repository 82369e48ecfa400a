//! Errors of the queue engine.
//!
//! One enum for the crate: every variant names the file (and, for corruption, the offset) it is
//! about, so an operator can act on the message alone. Variants are `#[non_exhaustive]`-open so new
//! failure modes can be added without breaking callers.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong opening, writing or reading a queue.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    Io {
        /// File or directory the operation was about.
        path: PathBuf,
        /// What was being done ("open", "fallocate", "mmap", ...).
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file exists but its creator has not finished initializing it (magic word still 0).
    NotYetInitialized {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by an incompatible version of the format.
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads and writes.
        expected: u32,
    },
    /// Mapped bytes failed validation: wrong magic, impossible geometry, bad length, CRC mismatch.
    Corrupted {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// Another live process holds the queue's writer lock.
    WriterLocked {
        /// The lock file.
        path: PathBuf,
        /// Pid recorded in the lock file, if readable.
        pid: Option<u32>,
    },
    /// Another live process has this named reader open.
    ReaderInUse {
        /// The reader meta file.
        path: PathBuf,
        /// Pid recorded in it, if readable.
        pid: Option<u32>,
    },
    /// The queue directory has no `queue.meta`: it is not a queue (or was never created).
    NotAQueue {
        /// The directory.
        path: PathBuf,
    },
    /// A payload larger than the queue's maximum was offered.
    PayloadTooLarge {
        /// Offered length.
        len: usize,
        /// The queue's maximum payload length.
        max: u32,
    },
    /// The file system has no room for the next segment (ENOSPC/EDQUOT at roll time).
    /// Every record appended before is intact; appending works again once space is freed.
    StorageFull {
        /// The segment that could not be allocated.
        path: PathBuf,
    },
    /// The configured capacity cap would be exceeded and retention could not free a segment.
    CapacityExceeded {
        /// The configured cap in bytes.
        limit_bytes: u64,
    },
    /// The reader's position lies in a segment that retention has already deleted.
    PositionLost {
        /// The sequence number the reader wanted next.
        wanted_seq: u64,
        /// The oldest sequence number still retained, if known.
        oldest_seq: Option<u64>,
    },
    /// The requested sequence number has not been written yet.
    SeqNotWritten {
        /// The requested sequence number.
        wanted_seq: u64,
        /// The next sequence number the writer will assign.
        next_seq: u64,
    },
    /// A persisted reader position no longer matches the queue's data: the record it names is
    /// not where the position says. This happens after a power loss took the queue's tail and
    /// the recovering writer assigned the lost sequence numbers again (to records of other
    /// sizes): the reader has seen records that no longer exist, so it is not moved silently.
    /// Decide what the reader missed, then reset it (e.g. remove its meta and reopen at a seq).
    PositionMismatch {
        /// The segment file the position points into.
        path: PathBuf,
        /// The position's offset in it.
        offset: u64,
        /// The sequence number the position expects next.
        wanted_seq: u64,
        /// Segment holding `wanted_seq` in the queue as it is now.
        found_segment: u64,
        /// Offset of `wanted_seq` (or of the tail, if it is the next to be written) there.
        found_offset: u64,
    },
    /// A configuration value is out of range.
    InvalidConfig {
        /// Which setting and why.
        what: &'static str,
    },
    /// A reader name is empty, too long, or contains characters other than `[A-Za-z0-9._-]`.
    InvalidName {
        /// The offending name.
        name: String,
    },
    /// The writer was closed or the operation is not possible on a closed writer.
    Closed,
    /// A queue file or directory that any user may write: refused unless the opener allows it
    /// (`allow_world_writable` in the writer or reader configuration).
    WorldWritable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl Error {
    /// An I/O error from allocating space: `StorageFull` when the disk or quota is full.
    pub(crate) fn space(path: &std::path::Path, op: &'static str, e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Self::StorageFull {
                path: path.to_path_buf(),
            },
            _ => Self::io(path, op, e),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    pub(crate) fn corrupted(path: impl Into<PathBuf>, offset: u64, what: &'static str) -> Self {
        Error::Corrupted {
            path: path.into(),
            offset,
            what,
        }
    }

    /// True when the error is an I/O "file not found" (the file may have been removed under us).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::NotYetInitialized { path } => {
                write!(
                    f,
                    "{} is not initialized yet (its creator has not finished)",
                    path.display()
                )
            }
            Error::VersionMismatch {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} has format version {found}, this build reads version {expected}",
                path.display()
            ),
            Error::Corrupted { path, offset, what } => {
                write!(
                    f,
                    "{} is corrupted at offset {offset}: {what}",
                    path.display()
                )
            }
            Error::WriterLocked { path, pid } => match pid {
                Some(pid) => write!(f, "{} is held by a live writer (pid {pid})", path.display()),
                None => write!(f, "{} is held by a live writer", path.display()),
            },
            Error::ReaderInUse { path, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "{} is in use by another process (pid {pid})",
                    path.display()
                ),
                None => write!(f, "{} is in use by another process", path.display()),
            },
            Error::NotAQueue { path } => {
                write!(
                    f,
                    "{} is not a chronicle queue (no queue.meta)",
                    path.display()
                )
            }
            Error::PayloadTooLarge { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the queue maximum of {max} bytes"
                )
            }
            Error::StorageFull { path } => write!(
                f,
                "no space left to allocate {} (records before it are intact)",
                path.display()
            ),
            Error::CapacityExceeded { limit_bytes } => write!(
                f,
                "queue capacity cap of {limit_bytes} bytes reached and no segment can be retired"
            ),
            Error::PositionLost {
                wanted_seq,
                oldest_seq,
            } => match oldest_seq {
                Some(o) => write!(
                    f,
                    "record {wanted_seq} was deleted by retention (oldest retained is {o})"
                ),
                None => write!(f, "record {wanted_seq} was deleted by retention"),
            },
            Error::SeqNotWritten {
                wanted_seq,
                next_seq,
            } => write!(
                f,
                "record {wanted_seq} has not been written yet (next is {next_seq})"
            ),
            Error::PositionMismatch {
                path,
                offset,
                wanted_seq,
                found_segment,
                found_offset,
            } => write!(
                f,
                "the saved position (record {wanted_seq} at offset {offset} of {}) does not match \
                 the queue: record {wanted_seq} is at offset {found_offset} of segment \
                 {found_segment} (the queue's tail was lost and its sequence numbers assigned \
                 again, e.g. after a power loss); reset the reader",
                path.display()
            ),
            Error::InvalidConfig { what } => write!(f, "invalid configuration: {what}"),
            Error::InvalidName { name } => write!(
                f,
                "invalid name {name:?}: use 1-64 characters from [A-Za-z0-9._-], not starting with '.'"
            ),
            Error::Closed => write!(f, "the writer is closed"),
            Error::WorldWritable { path, mode } => write!(
                f,
                "{}: mode {mode:04o} lets any user write it, so anyone could forge records or \
                 positions; remove world write permission (chmod o-w) or open with \
                 allow_world_writable",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
