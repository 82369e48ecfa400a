//! chronicle-core: a persisted, memory-mapped, single-writer / many-reader queue.
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "harness")]
pub mod harness;
