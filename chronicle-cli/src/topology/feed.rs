//! `chron-cli feed`: the feed loop ([`chronicle::topology::feed::run`]) with JSON status lines.

use anyhow::{Context, Result};
use chronicle::topology::feed::{self, FeedConfig, FeedStatus};
use serde_json::json;

use super::{emit, install_stop_handler, stop_requested};

/// Arguments of `chron-cli feed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bus directory (created if missing).
    #[arg(long)]
    pub bus: String,
    /// Feed name (queue `feeds/NAME`).
    #[arg(long, default_value = "md")]
    pub name: String,
    /// Ticks per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Number of symbols.
    #[arg(long, default_value_t = 16)]
    pub symbols: u32,
    /// Spin this many microseconds before each tick is due instead of sleeping (0: sleep).
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// Runs the feed until stopped.
pub fn run(a: Args) -> Result<u8> {
    install_stop_handler()?;
    crate::queue::check_bus_dir(std::path::Path::new(&a.bus))?;
    super::pin(a.cpu)?;
    let cfg = FeedConfig {
        bus: a.bus.into(),
        name: a.name,
        rate: a.rate,
        symbols: a.symbols,
        spin_before: std::time::Duration::from_micros(a.spin_us),
    };
    tracing::info!(bus = %cfg.bus.display(), feed = %cfg.name, rate = cfg.rate, "feed started");
    feed::run(&cfg, stop_requested, |s: &FeedStatus, fin| {
        if fin {
            tracing::info!(ticks = s.ticks, next_seq = s.next_seq, "feed stopped");
        }
        emit(&json!({"role": "feed", "ticks": s.ticks, "seq": s.next_seq, "final": fin}));
    })
    .context("feed")?;
    Ok(0)
}
