//! Market-data feed: publishes top-of-book ticks for many symbols into one feed queue on the bus,
//! paced at a fixed rate, heartbeating when idle so a merging reader never waits on it.
//!
//! ```text
//! cargo run --release --example feed -- --bus /dev/shm/bus [--name md] [--rate 100000]
//!     [--symbols 16] [--secs 0]
//! ```
//!
//! The loop is `chronicle_lab::topology::feed::run`, the same one `chron-cli feed` (and so
//! `chron-cli demo`) runs; this program adds arguments and human-readable status lines.

mod common;

use std::time::Instant;

use chronicle_lab::topology::feed::{self, FeedConfig};
use common::Args;

const USAGE: &str = "feed --bus DIR [--name md] [--rate TICKS_PER_S] [--symbols N] [--secs S]";

fn main() {
    common::main_with("feed", run);
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(USAGE, &[]);
    let cfg = FeedConfig {
        bus: args.str("bus").ok_or("--bus is required")?.into(),
        name: args.str("name").unwrap_or("md").to_string(),
        rate: args.num("rate", 100_000, USAGE).max(1),
        symbols: args.num("symbols", 16, USAGE).clamp(1, u64::from(u32::MAX)) as u32,
        spin_before: std::time::Duration::from_micros(50),
    };
    let run_for = args.secs("secs", USAGE);
    println!(
        "feed {}: {} ticks/s over {} symbols on bus {}",
        cfg.name,
        cfg.rate,
        cfg.symbols,
        cfg.bus.display()
    );
    let start = Instant::now();
    let mut last = 0;
    let end = feed::run(
        &cfg,
        || run_for.is_some_and(|d| start.elapsed() >= d),
        |s, fin| {
            if !fin {
                println!(
                    "feed {}: {} ticks/s, seq {}",
                    cfg.name,
                    s.ticks - last,
                    s.next_seq
                );
                last = s.ticks;
            }
        },
    )?;
    println!(
        "feed {}: sent {} ticks, last seq {}",
        cfg.name,
        end.ticks,
        end.next_seq.saturating_sub(1)
    );
    Ok(())
}
