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

mod config;
mod control;
mod crash;
mod crc;
mod doorbell;
mod error;
mod eventfd;
mod index;
mod layout;
mod map;
pub mod os;
mod powercut;
pub mod probe;
mod reader;
mod reader_meta;
mod record;
mod recovery;
mod retention;
mod segment;
mod sys;
pub mod testing;
mod wait;
mod writer;

pub use config::{
    CommitPolicy, Durability, OnLost, Preallocate, ReaderConfig, RetentionPolicy, StartAt,
    WriterConfig,
};
pub use control::{Geometry, History, QueueDir, Tail};
pub use crc::{Crc32c, crc32c};
pub use doorbell::{Doorbell, DoorbellWaitOutcome};
pub use error::{Error, Result};
pub use eventfd::EventFdBridge;
pub use index::check_index;
pub use reader::{MessageView, QueueReader, WaitOutcome, WriterStatus};
pub use reader_meta::{Position, ReaderInfo, list_readers, remove_reader};
pub use recovery::{Damage, RecoveryAction, RecoveryReport, TailCheck, check_tail, find_damage};
pub use retention::{QuarantineReport, RetentionReport, plan as plan_retention, quarantine};
pub use writer::{Batch, Claim, QueueWriter};
