//! `chron-cli strategy`: reads the feed with a named reader (so a restart resumes where it left
//! off), trades its symbols and writes orders (new orders with a deadline, and now and then a
//! cancel) to its own order queue on the bus, announced by READY and kept alive by a LEASE.
//! `--hot` floods: an order burst on every tick it sees. Runs until SIGTERM/SIGINT, then closes
//! cleanly (READY and LEASE removed) and reports `committed`: its order queue's next sequence
//! number, i.e. every order this strategy id ever committed, across restarts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronicle_bus::{BusLayout, StrategyConfig, StrategyEndpoints};
use chronicle_core::sys::realtime_ns;
use chronicle_core::{QueueReader, ReaderConfig, StartAt, WaitOutcome};
use serde_json::json;

use super::{emit, install_stop_handler, stop_requested};
use chronicle::topology::{ORDER, Tick, Trader, TraderConfig, strategy_tag};

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
}

/// Runs the strategy until stopped.
pub fn run(a: Args) -> Result<u8> {
    install_stop_handler();
    let trading = TraderConfig {
        every: a.every,
        slot: a.slot,
        slots: a.slots,
        hot: a.hot,
        deadline_ns: a.deadline_us.saturating_mul(1_000),
    };
    let id = a.id;
    let layout = BusLayout::create(&a.bus).context("cannot create the bus")?;
    let mut ep = StrategyEndpoints::open(&layout, &id, StrategyConfig::default())
        .with_context(|| format!("cannot open the endpoints of strategy {id}"))?;
    let reader_cfg = ReaderConfig::named(format!("strategy-{id}")).start(StartAt::Latest);
    let mut feed = open_feed(&layout, &a.feed, reader_cfg)?;
    ep.mark_ready()?;
    let next_seq = ep.writer().next_seq();
    // Unique across restarts (at most one order id per record) and strategies (the tag).
    let tag = strategy_tag(&id) << 48;
    let first_order_id = tag | (next_seq * 16 + 1);
    let mut trader = Trader::new(trading, first_order_id);
    emit(
        &json!({"role": "strategy", "id": id, "start": true, "hot": a.hot,
        "next_seq": next_seq, "first_order_id": first_order_id, "feed_seq": feed.next_seq()}),
    );

    let start = Instant::now();
    let (mut last_heartbeat, mut last_report) = (start, start);
    let mut ticks = 0u64;
    while !stop_requested() {
        let now = Instant::now();
        if now.duration_since(last_heartbeat) >= Duration::from_millis(1) {
            ep.heartbeat()?;
            feed.commit()?;
            last_heartbeat = now;
        }
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            emit(
                &json!({"role": "strategy", "id": id, "orders": trader.orders(), "ticks": ticks,
                "committed": ep.writer().next_seq(), "final": false}),
            );
            last_report = now;
        }
        let tick = match feed.next()? {
            Some(m) => Tick::decode(m.payload()),
            None => {
                if let WaitOutcome::WriterGone(_) = feed.wait(Duration::from_millis(1))? {
                    // The feed is down: keep the lease alive and wait for it to come back.
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
        };
        ticks += 1;
        let Some(tick) = tick else { continue };
        trader.on_tick(&tick, realtime_ns(), |order| {
            ep.writer().append(ORDER, &order.encode()).map(drop)
        })?;
    }
    feed.commit()?;
    let committed = ep.writer().next_seq();
    ep.close()?;
    emit(
        &json!({"role": "strategy", "id": id, "orders": trader.orders(), "ticks": ticks,
        "committed": committed, "final": true}),
    );
    Ok(0)
}

/// Opens the feed, waiting (up to 10 s) for the feed process to create it.
fn open_feed(layout: &BusLayout, feed: &str, cfg: ReaderConfig) -> Result<QueueReader> {
    let path = layout.feed(feed)?;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match QueueReader::open(&path, cfg.clone()) {
            Ok(r) => return Ok(r),
            Err(
                chronicle_core::Error::NotAQueue { .. }
                | chronicle_core::Error::NotYetInitialized { .. }
                | chronicle_core::Error::Io { .. },
            ) if Instant::now() < until && !stop_requested() => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open feed {}", path.display()));
            }
        }
    }
}
