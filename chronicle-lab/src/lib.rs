//! chronicle-lab: the measurement and demo equipment of chronicle, kept out of the product crates.
//!
//! Module map:
//! - [`harness`]: the cross-process latency and throughput harness (writer in this process,
//!   reader in a re-executed child), with its baseline transports (bare shared-memory ring,
//!   pipe, Unix socket, the chronicle queue), HDR histograms and report tables. `cargo bench -p
//!   chronicle-lab --bench latency`, `chron-cli bench` and the comparison in `benches/compare`
//!   run it.
//!
//! The rule: this crate uses only the public APIs of `chronicle-core` and `chronicle-bus` (for
//! its own threads' pinning, clocks and futexes, [`chronicle_core::os`]). Nothing in the product
//! crates depends on it, except `chron-cli`'s `bench`, `demo` and `bench --soak` front ends and
//! the role subcommands they start, which are thin dispatchers into this crate.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod harness;
