//! chronicle-lab: the measurement and demo equipment of chronicle, kept out of the product crates.
//!
//! Module map:
//! - [`harness`]: the cross-process latency and throughput harness (writer in this process,
//!   reader in a re-executed child), with its baseline transports (bare shared-memory ring,
//!   pipe, Unix socket, the chronicle queue), HDR histograms and report tables. `cargo bench -p
//!   chronicle-lab --bench latency`, `chron-cli bench` and the comparison in `benches/compare`
//!   run it.
//! - [`soak`]: the soak framework of `chron-cli bench --soak`: paced writers, checking readers
//!   and a checking fan-in as processes for a long run, RSS and disk tracking, the verdict.
//! - [`topology`]: the demo trading topology: tick format, [`Market`](topology::Market),
//!   [`Trader`](topology::Trader), and the feed and strategy process loops (the programs in
//!   `examples/` run them).
//! - [`demo`]: `chron-cli demo`: the topology's processes started, watched, killed and restarted,
//!   their JSON status lines aggregated, the bus audited and the report; [`demo::roles`] are the
//!   feed and strategy loops with the status lines the demo reads.
//!
//! The rule: this crate uses only the public APIs of `chronicle-core` and `chronicle-bus` (for
//! its own threads' pinning, clocks and futexes, [`chronicle_core::os`]), plus the text and log
//! helpers of `chronicle-metrics` that the binaries share. Nothing in the product crates depends
//! on it, except `chron-cli`'s `bench`, `demo` and `bench --soak` front ends and the role
//! subcommands they start, which are thin dispatchers into this crate. Signals stay with the
//! front end: the long-running loops here take a `stop_requested` function to poll.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod demo;
pub mod harness;
mod procs;
pub mod soak;
pub mod topology;

/// Prints one JSON line on stdout and flushes it: how a role process reports to the parent that
/// started it (stdout is a pipe then).
pub fn emit(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A queue writer's config with `segment_size`-byte segments and retention capped at
/// `max_bytes`, everything else default: how the lab's writers bound their queues' disk use.
pub(crate) fn capped_writer_config(
    segment_size: u64,
    max_bytes: u64,
) -> chronicle_core::WriterConfig {
    chronicle_core::WriterConfig {
        segment_size,
        retention: chronicle_core::RetentionPolicy {
            max_bytes: Some(max_bytes),
            ..chronicle_core::RetentionPolicy::default()
        },
        ..chronicle_core::WriterConfig::default()
    }
}
