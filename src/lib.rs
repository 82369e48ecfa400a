//! Facade over the chronicle crates, so the programs in `examples/` can use one import path.
//!
//! - [`core`]: the persisted single-writer / many-reader queue engine.
//! - [`bus`]: bus layout, discovery, fan-in and the order-flow scheduler.
//! - [`topology`]: the demo trading topology: tick format, market, trader, and the feed and
//!   strategy process loops.

pub mod topology;

pub use chronicle_bus as bus;
pub use chronicle_core as core;
