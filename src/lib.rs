//! Facade over the chronicle crates, so a program can use one import path.
//!
//! - [`core`]: the persisted single-writer / many-reader queue engine.
//! - [`bus`]: bus layout, discovery, fan-in and the order-flow scheduler.
//!
//! The demo trading topology that the programs in `examples/` run (tick format, market, trader,
//! feed and strategy loops) is measurement and demo equipment: it lives in the `chronicle-lab`
//! crate, a dev-dependency of this one.

pub use chronicle_bus as bus;
pub use chronicle_core as core;
