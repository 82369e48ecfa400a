//! A strategy: reads the feed with a named (durable) reader, so a restart resumes where it left
//! off; trades the symbols assigned to it; writes orders (new orders with a deadline, and now and
//! then a cancel) to its own order queue on the bus, announced by READY and kept alive by a LEASE;
//! reads the router's answer to every order from its fates queue, counts them, and backs off
//! while its orders are refused or expire.
//!
//! ```text
//! cargo run --release --example strategy -- --bus /dev/shm/bus --id s1 [--feed md]
//!     [--every 8] [--slot 0 --slots 4] [--deadline-us 2000] [--hot] [--max-outstanding 64]
//!     [--max-tick-age-us 1000] [--secs 0]
//! ```
//! A strategy trades symbol `s` when `s % slots == slot`, on every `every`-th such tick;
//! `--hot` makes it order on every tick it sees and burst four orders each time. It trades only
//! while a router has its order queue open, and not on ticks older than `--max-tick-age-us`.
//!
//! The loop is `chronicle_lab::topology::strategy::run`, the same one `chron-cli strategy` (and so
//! `chron-cli demo`) runs; this program adds arguments and human-readable status lines.

mod common;

use std::time::Instant;

use chronicle_lab::topology::strategy::{self, StrategyArgs};
use chronicle_lab::topology::{FateCode, TraderConfig};
use common::Args;

const USAGE: &str = "strategy --bus DIR --id ID [--feed md] [--every N] [--slot K --slots N] \
                     [--deadline-us US] [--hot] [--max-outstanding N] [--max-tick-age-us US] \
                     [--secs S]";

fn main() {
    common::main_with("strategy", run);
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(USAGE, &["hot"]);
    let id = args.str("id").ok_or("--id is required")?.to_string();
    let cfg = StrategyArgs {
        bus: args.str("bus").ok_or("--bus is required")?.into(),
        id: id.clone(),
        feed: args.str("feed").unwrap_or("md").to_string(),
        trading: TraderConfig {
            every: args.num("every", 8, USAGE),
            slot: args.num("slot", 0, USAGE),
            slots: args.num("slots", 1, USAGE),
            hot: args.flag("hot"),
            deadline_ns: args.num("deadline-us", 2_000, USAGE).saturating_mul(1_000),
            max_outstanding: args.num("max-outstanding", 64, USAGE),
            max_tick_age_ns: args
                .num("max-tick-age-us", 1_000, USAGE)
                .saturating_mul(1_000),
        },
        spin_limit: 2_000,
        yield_limit: 50,
    };
    let run_for = args.secs("secs", USAGE);
    let start = Instant::now();
    let mut last = 0;
    let end = strategy::run(
        &cfg,
        || run_for.is_some_and(|d| start.elapsed() >= d),
        |s| {
            println!(
                "strategy {id}: order queue next seq {}, feed from seq {}",
                s.next_seq, s.feed_seq
            );
        },
        |s, fin| {
            if !fin {
                println!(
                    "strategy {id}: {} orders/s, {} ticks seen, fates: {} routed {} rejected {} expired",
                    s.orders - last,
                    s.ticks,
                    s.fates.get(FateCode::Routed),
                    s.fates.get(FateCode::Rejected),
                    s.fates.get(FateCode::Expired),
                );
                last = s.orders;
            }
        },
    )?;
    println!(
        "strategy {id}: {} orders from {} ticks; fates read: {}",
        end.orders,
        end.ticks,
        common::fate_summary(&end.fates)
    );
    Ok(())
}
