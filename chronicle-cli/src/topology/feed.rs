//! `chron-cli feed`: the feed role of the demo ([`chronicle_lab::demo::roles::feed`]: the loop
//! with JSON status lines); this module parses its arguments.

use anyhow::{Context, Result};
use chronicle_lab::demo::roles;
use chronicle_lab::topology::feed::FeedConfig;

use super::{install_stop_handler, stop_requested};

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
    roles::feed(&cfg, stop_requested).context("feed")?;
    Ok(0)
}
