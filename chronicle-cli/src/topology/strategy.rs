//! `chron-cli strategy`: the strategy loop ([`chronicle::topology::strategy::run`]) with JSON
//! status lines. `--hot` floods: an order burst on every tick it sees. The final line reports
//! `committed` (its order queue's next seq: every order this strategy id ever committed, across
//! restarts) and the fates it read, by code, and the ticks it did not trade on: `held_back` (its
//! back-off window was full), `stale` (older than `--max-tick-age-us`), `not_connected` (no
//! router had its order queue open).

use anyhow::{Context, Result};
use chronicle::topology::strategy::{self, StrategyArgs, StrategyStatus};
use chronicle::topology::{FateCode, TraderConfig};
use serde_json::{Value, json};

use super::{emit, install_stop_handler, stop_requested};

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

fn fates_json(s: &StrategyStatus) -> Value {
    let mut m = serde_json::Map::new();
    for c in FateCode::ALL {
        m.insert(c.name().to_string(), json!(s.fates.get(c)));
    }
    Value::Object(m)
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
    let id = a.id;
    strategy::run(
        &args,
        stop_requested,
        |s| {
            tracing::info!(strategy = %id, hot = a.hot, next_seq = s.next_seq,
                first_order_id = s.first_order_id, "strategy started");
            emit(
                &json!({"role": "strategy", "id": id, "start": true, "hot": a.hot,
                "next_seq": s.next_seq, "first_order_id": s.first_order_id,
                "feed_seq": s.feed_seq}),
            );
        },
        |s, fin| {
            if fin {
                tracing::info!(strategy = %id, orders = s.orders, committed = s.committed,
                    "strategy stopped");
            }
            emit(
                &json!({"role": "strategy", "id": id, "orders": s.orders, "ticks": s.ticks,
                "committed": s.committed, "fates": fates_json(s), "held_back": s.held_back,
                "stale": s.stale, "not_connected": s.not_connected, "window": s.window, "final": fin}),
            );
        },
    )
    .with_context(|| format!("strategy {id}"))?;
    Ok(0)
}
