//! chronicle-core: a persisted, memory-mapped, single-writer / many-reader queue for processes on
//! one host.
//!
//! ```no_run
//! use chronicle_core::{QueueWriter, QueueReader, WriterConfig, ReaderConfig};
//! # fn main() -> Result<(), chronicle_core::Error> {
//! let mut w = QueueWriter::open("/tmp/q", WriterConfig::default())?;
//! let seq = w.append(1, b"hello")?;
//! let mut r = QueueReader::open("/tmp/q", ReaderConfig::named("audit"))?;
//! while let Some(m) = r.next()? {
//!     println!("{} {:?}", m.seq(), m.payload());
//! }
//! r.commit()?;
//! # let _ = seq; Ok(()) }
//! ```
//!
//! See `DESIGN.md` for the file formats and the commit, wait and recovery protocols.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod control;
#[doc(hidden)]
pub mod crash;
pub mod crc;
pub mod doorbell;
pub mod error;
pub mod eventfd;
pub(crate) mod index;
pub mod layout;
pub(crate) mod map;
pub mod os;
#[doc(hidden)]
pub mod powercut;
pub mod probe;
pub mod reader;
pub mod reader_meta;
pub(crate) mod record;
pub mod recovery;
pub mod retention;
pub(crate) mod segment;
pub mod sys;
pub(crate) mod wait;
pub mod writer;

pub use config::{
    CommitPolicy, Durability, OnLost, Preallocate, ReaderConfig, RetentionPolicy, StartAt,
    WriterConfig,
};
pub use control::{Geometry, History, QueueDir, Tail};
pub use doorbell::{Doorbell, DoorbellWaitOutcome};
pub use error::{Error, Result};
pub use eventfd::EventFdBridge;
pub use index::check_index;
pub use reader::{MessageView, QueueReader, WaitOutcome, WriterStatus};
pub use reader_meta::{Position, ReaderInfo, list_readers, remove_reader};
pub use recovery::{Damage, RecoveryAction, RecoveryReport, TailCheck, check_tail, find_damage};
pub use retention::{QuarantineReport, RetentionReport, quarantine};
pub use writer::{Batch, Claim, QueueWriter};
