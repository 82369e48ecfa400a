//! The bus: many chronicle queues under one directory, found at run time and merged, and the
//! order-flow scheduler that fairly interleaves the strategies' orders.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod discovery;
pub mod endpoints;
pub mod error;
pub mod fanin;
pub mod layout;
pub mod markers;
pub mod orders;
pub mod sched;

pub use discovery::{DiscoveryConfig, DiscoveryEvent, Endpoint, RemoveReason, RouterDiscovery};
pub use endpoints::{ReaderRegistration, StrategyConfig, StrategyEndpoints};
pub use error::{BusError, NameProblem, Result};

pub use fanin::{FanInConfig, FanInReader, FanInStats, FanInWaitOutcome, MergeMode, Merged};
pub use layout::{BusLayout, SourceId, validate_name};
pub use markers::{Lease, LeaseState, Ready};
