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
//! # The API, by what you do with it
//!
//! Every name is reachable once, from the crate root or from one of the three public modules.
//!
//! | to | use |
//! |---|---|
//! | write | [`QueueWriter`] (`append`, `claim`/[`Claim`], `batch`/[`Batch`], `pretouch`), [`WriterConfig`], [`Durability`], [`Preallocate`] ([`PRETOUCH_STEP`]), [`RetentionPolicy`] |
//! | read | [`QueueReader`] (`next` → [`MessageView`], `drain`, `seek`, `wait` → [`WaitOutcome`], `writer_status` → [`WriterStatus`]), [`ReaderConfig`], [`StartAt`], [`CommitPolicy`], [`OnLost`], [`Position`] |
//! | sleep in epoll, or wake many queues' readers at once | [`EventFdBridge`], [`Doorbell`] ([`DoorbellWaitOutcome`]) |
//! | name a queue's files, read its geometry | [`QueueDir`], [`Geometry`], [`Tail`], [`History`] |
//! | manage readers and retention | [`list_readers`], [`ReaderInfo`], [`remove_reader`], [`plan_retention`], [`RetentionReport`], [`quarantine`], [`QuarantineReport`] |
//! | check and repair after a crash | [`check_tail`], [`TailCheck`], [`find_damage`], [`Damage`], [`RecoveryReport`], [`RecoveryAction`], [`check_index`] |
//! | checksum like the engine | [`crc32c`], [`Crc32c`] |
//! | errors | [`Error`] (one enum, `#[non_exhaustive]`), [`Result`] |
//! | look at a queue without touching it (monitoring, `chron-cli inspect`/`doctor`) | [`probe`] |
//! | pin threads, read clocks, futexes, process liveness, fsync | [`os`] |
//! | crash points, the power-loss model, the format constants (tests only) | [`testing`] |
//!
//! Everything else (the mapped layouts, the record cursor, the wait loop, the segment and index
//! files, the system-call wrappers) is private to the engine. See `DESIGN.md` for the file
//! formats and the commit, wait and recovery protocols.
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
pub use writer::{Batch, Claim, PRETOUCH_STEP, QueueWriter};
