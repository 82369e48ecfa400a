//! Errors of the bus.
//!
//! One enum for the crate. Variants that concern a file carry its path so an operator can act on
//! the message alone; queue-engine errors are wrapped with the queue they came from.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias of the bus.
pub type Result<T> = std::result::Result<T, BusError>;

/// Why a bus name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// Longer than [`MAX_NAME_LEN`](crate::layout::MAX_NAME_LEN) bytes.
    TooLong,
    /// Starts with `.` (hidden files, `.` and `..`, temporary files of the bus).
    LeadingDot,
    /// Contains a byte outside `[A-Za-z0-9._-]` (for instance `/`, a space or a NUL).
    BadCharacter,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "empty",
            NameProblem::TooLong => "too long",
            NameProblem::LeadingDot => "starts with '.'",
            NameProblem::BadCharacter => "contains a character outside [A-Za-z0-9._-]",
        })
    }
}

/// Everything that can go wrong on the bus.
#[derive(Debug)]
#[non_exhaustive]
pub enum BusError {
    /// A feed, strategy or reader name is not acceptable (it could escape the bus directory or
    /// collide with the bus's own files).
    InvalidName {
        /// The offending name (lossy if it was not UTF-8).
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A system call on `path` failed.
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The queue engine failed on the queue at `path`.
    Queue {
        /// The queue directory.
        path: PathBuf,
        /// The engine's error.
        source: chronicle_core::Error,
    },
    /// A READY or LEASE marker is malformed, too large, or not a regular file (a symlink is
    /// refused, never followed).
    BadMarker {
        /// The marker file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// Another live process holds the strategy's lease.
    LeaseHeld {
        /// The lease file.
        path: PathBuf,
        /// The holder.
        pid: u32,
    },
    /// A queue disappeared (or was never created) between being discovered and being opened.
    /// Callers racing with deletion treat this as "not there".
    SourceGone {
        /// The queue directory.
        path: PathBuf,
    },
    /// Two fan-in sources would get the same source id (a 64-bit hash collision of their names,
    /// or the same name added twice).
    DuplicateSource {
        /// The name being added.
        name: String,
    },
    /// No fan-in source has this id.
    UnknownSource {
        /// The id.
        id: u64,
    },
    /// A configuration value is out of range.
    InvalidConfig {
        /// Which setting and why.
        what: &'static str,
    },
    /// A record the order path relies on cannot be read (a fates queue whose last record is not
    /// a fate, for instance).
    BadRecord {
        /// The queue directory.
        path: PathBuf,
        /// The record's seq.
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl BusError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        BusError::Io {
            path: path.into(),
            op,
            source,
        }
    }

    pub(crate) fn marker(path: impl Into<PathBuf>, what: &'static str) -> Self {
        BusError::BadMarker {
            path: path.into(),
            what,
        }
    }

    /// Wraps a queue-engine error; "no such file" and "not a queue" become [`BusError::SourceGone`].
    pub(crate) fn queue(path: impl Into<PathBuf>, source: chronicle_core::Error) -> Self {
        let path = path.into();
        if source.is_not_found() || matches!(source, chronicle_core::Error::NotAQueue { .. }) {
            BusError::SourceGone { path }
        } else {
            BusError::Queue { path, source }
        }
    }

    /// True for errors that mean "the file or queue is not there (any more)".
    pub fn is_gone(&self) -> bool {
        match self {
            BusError::SourceGone { .. } => true,
            BusError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::InvalidName { name, problem } => {
                write!(f, "invalid bus name {name:?}: {problem}")
            }
            BusError::Io { path, op, source } => write!(f, "{op} {}: {source}", path.display()),
            BusError::Queue { path, source } => write!(f, "queue {}: {source}", path.display()),
            BusError::BadMarker { path, what } => {
                write!(f, "bad marker {}: {what}", path.display())
            }
            BusError::LeaseHeld { path, pid } => {
                write!(f, "{} is held by live process {pid}", path.display())
            }
            BusError::SourceGone { path } => {
                write!(f, "queue {} is gone (or not created yet)", path.display())
            }
            BusError::DuplicateSource { name } => {
                write!(
                    f,
                    "fan-in source {name:?} collides with an existing source id"
                )
            }
            BusError::UnknownSource { id } => write!(f, "no fan-in source with id {id:#018x}"),
            BusError::InvalidConfig { what } => write!(f, "invalid configuration: {what}"),
            BusError::BadRecord { path, seq, what } => {
                write!(f, "queue {} record {seq}: {what}", path.display())
            }
        }
    }
}

impl std::error::Error for BusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BusError::Io { source, .. } => Some(source),
            BusError::Queue { source, .. } => Some(source),
            _ => None,
        }
    }
}
