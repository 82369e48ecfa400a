//! A strategy's process loop: reads the feed with a named reader (a restart resumes where it
//! left off), trades its symbols with a [`Trader`], writes orders to its own order queue
//! (announced by READY, kept alive by a LEASE), and reads the router's answers from its fates
//! queue: it counts them and backs off while its orders are refused or expire. It trades only
//! while a router has its order queue open, and never on stale ticks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chronicle_bus::orders::{FateCounts, FateReader, ROUTER_READER};
use chronicle_bus::{BusLayout, StrategyConfig, StrategyEndpoints};
use chronicle_core::os::realtime_ns;
use chronicle_core::{QueueReader, ReaderConfig, StartAt, WaitOutcome};

use super::{Error, ORDER, Tick, Trader, TraderConfig, strategy_tag};

/// What the strategy does.
#[derive(Debug, Clone)]
pub struct StrategyArgs {
    /// Bus directory (created if missing).
    pub bus: PathBuf,
    /// Strategy id (its directory under `strategies/`).
    pub id: String,
    /// Feed to read.
    pub feed: String,
    /// Its trading decisions.
    pub trading: TraderConfig,
    /// Waiting for ticks: busy polls, then `sched_yield`s, then the futex (see
    /// [`ReaderConfig::spin_limit`]).
    pub spin_limit: u32,
    /// See `spin_limit`.
    pub yield_limit: u32,
}

/// Where the strategy is.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrategyStatus {
    /// Ticks read by this process.
    pub ticks: u64,
    /// Orders and cancels written by this process.
    pub orders: u64,
    /// Its order queue's next seq: every order this strategy id ever committed.
    pub committed: u64,
    /// Fates read by this process, by code.
    pub fates: FateCounts,
    /// Ticks skipped because its back-off window was full.
    pub held_back: u64,
    /// Ticks skipped because they were stale (see [`TraderConfig::max_tick_age_ns`]).
    pub stale: u64,
    /// Ticks skipped because no router had its order queue open.
    pub not_connected: u64,
    /// Its back-off window now.
    pub window: u64,
}

/// How it started (reported once, before trading).
#[derive(Debug, Clone, Copy)]
pub struct StrategyStart {
    /// Its order queue's next seq.
    pub next_seq: u64,
    /// The id of its first order in this process.
    pub first_order_id: u64,
    /// The feed seq it resumes at.
    pub feed_seq: u64,
}

/// Runs the strategy until `stop()` turns true, then closes cleanly (READY and LEASE removed).
/// `started` is called once trading begins; `report` about once a second and once more, `true`,
/// at the end.
pub fn run(
    args: &StrategyArgs,
    stop: impl Fn() -> bool,
    started: impl FnOnce(&StrategyStart),
    mut report: impl FnMut(&StrategyStatus, bool),
) -> Result<StrategyStatus, Error> {
    let id = args.id.as_str();
    let layout = BusLayout::create(&args.bus)?;
    let mut ep = StrategyEndpoints::open(&layout, id, StrategyConfig::default())?;
    let reader_cfg = ReaderConfig {
        spin_limit: args.spin_limit,
        yield_limit: args.yield_limit,
        ..ReaderConfig::named(format!("strategy-{id}")).start(StartAt::Latest)
    };
    let mut feed = open_feed(&layout, &args.feed, reader_cfg, &stop)?;
    ep.mark_ready()?;
    let next_seq = ep.writer().next_seq();
    // Unique across restarts (at most one order id per record) and strategies (the tag).
    let first_order_id = (strategy_tag(id) << 48) | (next_seq * 16 + 1);
    let mut trader = Trader::new(args.trading, first_order_id);
    started(&StrategyStart {
        next_seq,
        first_order_id,
        feed_seq: feed.next_seq(),
    });
    // The router creates the fates queue when it first attaches this strategy.
    let mut fates: Option<FateReader> = None;
    let mut st = StrategyStatus::default();
    let start = Instant::now();
    let (mut last_heartbeat, mut last_report) = (start, start);
    let mut last_router_check: Option<Instant> = None;
    while !stop() {
        let now = Instant::now();
        // Whether a router takes its orders: every millisecond until one does, then every 10.
        let check_every = Duration::from_millis(if trader.connected() { 10 } else { 1 });
        if last_router_check.is_none_or(|t| now.duration_since(t) >= check_every) {
            trader.set_connected(ep.router_attached(ROUTER_READER)?);
            last_router_check = Some(now);
        }
        if now.duration_since(last_heartbeat) >= Duration::from_millis(1) {
            ep.heartbeat()?;
            feed.commit()?;
            if fates.is_none() {
                fates = FateReader::open(&layout, id, Some("strategy")).ok();
            }
            if let Some(f) = &mut fates {
                f.commit()?;
            }
            last_heartbeat = now;
        }
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            st.committed = ep.writer().next_seq();
            status_into(&trader, &mut st);
            report(&st, false);
            last_report = now;
        }
        if let Some(f) = &mut fates {
            while let Some(fate) = f.next()? {
                st.fates.add(fate.code);
                trader.on_fate(fate.code, fate.order_id);
            }
        }
        let tick = match feed.next()? {
            Some(m) => Tick::decode(m.payload()),
            None => {
                // Nothing to read: nothing to write either until the next tick, so the router
                // need not wait for this strategy's watermark.
                ep.writer().idle();
                if let WaitOutcome::WriterGone(_) = feed.wait(Duration::from_millis(1))? {
                    // The feed is down: keep the lease alive and wait for it to come back.
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            }
        };
        st.ticks += 1;
        let Some(tick) = tick else { continue };
        trader.on_tick(&tick, realtime_ns(), |order| {
            ep.writer().append(ORDER, &order.encode()).map(drop)
        })?;
        st.orders = trader.orders();
    }
    feed.commit()?;
    if let Some(f) = &mut fates {
        while let Some(fate) = f.next()? {
            st.fates.add(fate.code);
        }
        f.commit()?;
    }
    st.committed = ep.writer().next_seq();
    status_into(&trader, &mut st);
    ep.close()?;
    report(&st, true);
    Ok(st)
}

fn status_into(trader: &Trader, st: &mut StrategyStatus) {
    st.held_back = trader.held_back();
    st.stale = trader.stale();
    st.not_connected = trader.not_connected();
    st.window = trader.window();
}

/// Opens the feed, waiting (up to 10 s) for the feed process to create it.
fn open_feed(
    layout: &BusLayout,
    feed: &str,
    cfg: ReaderConfig,
    stop: &impl Fn() -> bool,
) -> Result<QueueReader, Error> {
    let path = layout.feed(feed)?;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match QueueReader::open(&path, cfg.clone()) {
            Ok(r) => return Ok(r),
            Err(
                chronicle_core::Error::NotAQueue { .. }
                | chronicle_core::Error::NotYetInitialized { .. }
                | chronicle_core::Error::Io { .. },
            ) if Instant::now() < until && !stop() => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
