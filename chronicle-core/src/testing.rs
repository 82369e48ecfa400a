//! Hooks for tests of code built on chronicle, inert in a normal build.
//!
//! - [`crash`]: named crash points. A library calls [`crash::point`] at the steps of its own
//!   protocols (the bus marks its marker renames, the bridge its state writes); with the cargo
//!   feature `crash-points` and `CHRONICLE_CRASH_AT=NAME:N` the process kills itself there.
//!   Without the feature the call is an empty inline function.
//! - [`powercut`]: the power-loss model. With the cargo feature `power-model` every msync and
//!   fsync the engine makes is logged with the bytes it made durable, and
//!   `powercut::Recorder` rebuilds what a disk could hold after a power cut at any point.
//!   Without the feature nothing is logged.
//! - [`layout`]: the on-disk format's constants and file names, for tests that damage files on
//!   purpose. Programs read queues through the engine, never through these offsets.
//!
//! Both features are meant for test builds only (`cargo test --features ...`); release builds of
//! applications must not enable them.

/// Named crash points (see the module docs of [`crate::testing`]).
pub mod crash {
    pub use crate::crash::*;
}

/// The power-loss model (see the module docs of [`crate::testing`]).
pub mod powercut {
    pub use crate::powercut::*;
}

/// The on-disk format: magics, versions, offsets and file names (`DESIGN.md` describes them).
pub mod layout {
    pub use crate::layout::*;
}
