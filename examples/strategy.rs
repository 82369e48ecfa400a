//! A strategy: reads the feed with a named (durable) reader, so a restart resumes where it left
//! off; trades the symbols assigned to it; writes orders (new orders with a deadline, and now and
//! then a cancel) to its own order queue on the bus, announced by READY and kept alive by a LEASE.
//!
//! ```text
//! cargo run --release --example strategy -- --bus /dev/shm/bus --id s1 [--feed md]
//!     [--every 8] [--slot 0 --slots 4] [--deadline-us 2000] [--hot] [--secs 0]
//! ```
//! A strategy trades symbol `s` when `s % slots == slot`, on every `every`-th such tick;
//! `--hot` makes it order on every tick it sees and burst four orders each time.
//!
//! This is the readable standalone version. `chron-cli strategy` (in
//! `chronicle-cli/src/topology/strategy.rs`) is the operational twin that `chron-cli demo` runs as
//! a process: the same bus calls and the same `chronicle::topology` logic, plus JSON status lines
//! and a clean stop on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use chronicle::bus::{BusLayout, StrategyConfig, StrategyEndpoints};
use chronicle::core::sys::realtime_ns;
use chronicle::core::{QueueReader, ReaderConfig, StartAt, WaitOutcome};
use chronicle::topology::{ORDER, Tick, Trader, TraderConfig};
use common::Args;

const USAGE: &str = "strategy --bus DIR --id ID [--feed md] [--every N] [--slot K --slots N] \
                     [--deadline-us US] [--hot] [--secs S]";

fn main() {
    if let Err(e) = run() {
        eprintln!("strategy: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(USAGE, &["hot"]);
    let bus = args.str("bus").ok_or("--bus is required")?;
    let id = args.str("id").ok_or("--id is required")?.to_string();
    let feed = args.str("feed").unwrap_or("md");
    let hot = args.flag("hot");
    let trading = TraderConfig {
        every: args.num("every", 8, USAGE),
        slot: args.num("slot", 0, USAGE),
        slots: args.num("slots", 1, USAGE),
        hot,
        deadline_ns: args.num("deadline-us", 2_000, USAGE).saturating_mul(1_000),
    };
    let run_for = args.secs("secs", USAGE);

    let layout = BusLayout::create(bus)?;
    let mut ep = StrategyEndpoints::open(&layout, &id, StrategyConfig::default())?;
    // Resume after our last committed tick; the first time, start with the live stream.
    let reader_cfg = ReaderConfig::named(format!("strategy-{id}")).start(StartAt::Latest);
    let mut feed_reader = open_feed(&layout, feed, reader_cfg)?;
    ep.mark_ready()?;
    let next_seq = ep.writer().next_seq();
    // Order ids stay unique across restarts: derived from the queue's sequence numbers.
    let mut trader = Trader::new(trading, next_seq * 16 + 1);
    println!(
        "strategy {id}: orders {} (next seq {next_seq}), feed from seq {}{}",
        ep.orders_path().display(),
        feed_reader.next_seq(),
        if hot { ", hot" } else { "" }
    );

    let start = Instant::now();
    let mut last_heartbeat = start;
    let mut last_report = start;
    let (mut ticks, mut orders_at_report) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if run_for.is_some_and(|d| now.duration_since(start) >= d) {
            break;
        }
        if now.duration_since(last_heartbeat) >= Duration::from_millis(1) {
            ep.heartbeat()?;
            feed_reader.commit()?;
            last_heartbeat = now;
        }
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            println!(
                "strategy {id}: {} orders/s, {ticks} ticks seen",
                trader.orders() - orders_at_report
            );
            orders_at_report = trader.orders();
            last_report = now;
        }
        let tick = match feed_reader.next()? {
            Some(m) => Tick::decode(m.payload()),
            None => {
                if let WaitOutcome::WriterGone(s) = feed_reader.wait(Duration::from_millis(1))? {
                    // The feed is down: keep the lease alive and wait for it to come back.
                    let _ = s;
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
    feed_reader.commit()?;
    println!(
        "strategy {id}: {} orders from {ticks} ticks",
        trader.orders()
    );
    ep.close()?;
    Ok(())
}

/// Opens the feed, waiting (up to 10 s) for the feed process to create it.
fn open_feed(
    layout: &BusLayout,
    feed: &str,
    cfg: ReaderConfig,
) -> Result<QueueReader, Box<dyn std::error::Error>> {
    let path = layout.feed(feed)?;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match QueueReader::open(&path, cfg.clone()) {
            Ok(r) => return Ok(r),
            Err(e)
                if Instant::now() < until
                    && matches!(
                        e,
                        chronicle::core::Error::NotAQueue { .. }
                            | chronicle::core::Error::NotYetInitialized { .. }
                            | chronicle::core::Error::Io { .. }
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
