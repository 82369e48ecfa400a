//! `chron-cli strategy`: a strategy role of the demo ([`chronicle_lab::demo::roles::strategy`]:
//! the loop with JSON status lines); this module parses its arguments. `--hot` floods: an order
//! burst on every tick it sees.

use anyhow::{Context, Result};
use chronicle_lab::demo::roles;
use chronicle_lab::topology::TraderConfig;
use chronicle_lab::topology::strategy::StrategyArgs;

use super::{install_stop_handler, stop_requested};

/// Arguments of `chron-cli strategy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bus directory (created if missing).
    #[arg(long)]
    pub bus: String,
    /// Strategy id (its directory under `strategies/`).
    #[arg(long)]
    pub id: String,
    /// Feed to read.
    #[arg(long, default_value = "md")]
    pub feed: String,
    /// Order on every N-th tick of its symbols.
    #[arg(long, default_value_t = 8)]
    pub every: u64,
    /// Trades symbol s when s % slots == slot.
    #[arg(long, default_value_t = 0)]
    pub slot: u64,
    /// Number of symbol slots.
    #[arg(long, default_value_t = 1)]
    pub slots: u64,
    /// Order deadline after creation, in microseconds.
    #[arg(long, default_value_t = 2_000)]
    pub deadline_us: u64,
    /// Flood: a burst of four orders on every tick, whatever the symbol.
    #[arg(long)]
    pub hot: bool,
    /// Back-off window: at most this many orders without a fate (halved on every refusal or
    /// expiry, grown by one on every routed order); 0 turns back-off off.
    #[arg(long, default_value_t = 64)]
    pub max_outstanding: u64,
    /// Stale market data: ticks older than this when read are not traded on, microseconds
    /// (0: no limit).
    #[arg(long, default_value_t = 1_000)]
    pub max_tick_age_us: u64,
    /// How it waits, and where it runs.
    #[command(flatten)]
    pub wait: super::WaitArgs,
}

/// Runs the strategy until stopped.
pub fn run(a: Args) -> Result<u8> {
    install_stop_handler()?;
    crate::queue::check_bus_dir(std::path::Path::new(&a.bus))?;
    super::pin(a.wait.cpu)?;
    let args = StrategyArgs {
        bus: a.bus.into(),
        id: a.id.clone(),
        feed: a.feed,
        trading: TraderConfig {
            every: a.every,
            slot: a.slot,
            slots: a.slots,
            hot: a.hot,
            deadline_ns: a.deadline_us.saturating_mul(1_000),
            max_outstanding: a.max_outstanding,
            max_tick_age_ns: a.max_tick_age_us.saturating_mul(1_000),
        },
        spin_limit: a.wait.spin,
        yield_limit: a.wait.yields,
    };
    roles::strategy(&args, stop_requested).with_context(|| format!("strategy {}", args.id))?;
    Ok(0)
}
