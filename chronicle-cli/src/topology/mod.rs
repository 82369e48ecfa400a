//! The trading topology as `chron-cli` roles: `feed`, `strategy` and `router` run the loops
//! (`chronicle_lab::topology::{feed,strategy}::run` through `chronicle_lab::demo::roles`, and the
//! product's `chronicle_bus::orders::Router::run`, the same ones the programs in `examples/` run),
//! built into the CLI binary so that `chron-cli demo` can start each of them as a separate OS
//! process from this one executable. Each role prints one
//! JSON line per second on stdout (and a final one with `"final":true`) for `demo` to aggregate,
//! and stops cleanly on SIGTERM or SIGINT.

pub mod config;
pub mod feed;
pub mod router;
pub mod strategy;

pub use crate::signals::{install_stop_handler, stop_requested};

/// Prints one JSON line on stdout and flushes it (stdout is a pipe when `demo` runs the role).
pub fn emit(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Waiting and placement flags shared by the strategy and router roles.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Waiting for input: busy polls before yielding.
    #[arg(long, default_value_t = 2_000)]
    pub spin: u32,
    /// Waiting for input: `sched_yield`s before sleeping on the futex or the bus doorbell.
    #[arg(long, default_value_t = 50)]
    pub yields: u32,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// Pins the calling process's thread to `cpu` when asked (`--cpu`).
pub fn pin(cpu: Option<usize>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(c) = cpu {
        chronicle_core::os::set_thread_affinity(&[c])
            .with_context(|| format!("cannot pin to CPU {c}"))?;
    }
    Ok(())
}
