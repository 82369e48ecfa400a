//! Market-data feed: publishes top-of-book ticks for many symbols into one feed queue on the bus,
//! paced at a fixed rate, heartbeating when idle so a merging reader never waits on it.
//!
//! ```text
//! cargo run --release --example feed -- --bus /dev/shm/bus [--name md] [--rate 100000]
//!     [--symbols 16] [--secs 0]
//! ```
//!
//! This is the readable standalone version. `chron-cli feed` (in
//! `chronicle-cli/src/topology/feed.rs`) is the operational twin that `chron-cli demo` runs as
//! a process: the same bus calls and the same `chronicle::topology` logic, plus JSON status lines
//! and a clean stop on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use chronicle::bus::BusLayout;
use chronicle::core::sys::realtime_ns;
use chronicle::core::{QueueWriter, RetentionPolicy, WriterConfig};
use chronicle::topology::{Market, TICK};
use common::Args;

const USAGE: &str = "feed --bus DIR [--name md] [--rate TICKS_PER_S] [--symbols N] [--secs S]";

fn main() {
    if let Err(e) = run() {
        eprintln!("feed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(USAGE, &[]);
    let bus = args.str("bus").ok_or("--bus is required")?;
    let name = args.str("name").unwrap_or("md");
    let rate = args.num("rate", 100_000, USAGE).max(1);
    let symbols = args.num("symbols", 16, USAGE).clamp(1, u64::from(u32::MAX)) as u32;
    let run_for = args.secs("secs", USAGE);

    let layout = BusLayout::create(bus)?;
    let cfg = WriterConfig {
        segment_size: 16 << 20,
        retention: RetentionPolicy {
            max_bytes: Some(256 << 20),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(layout.feed(name)?, cfg)?;
    println!(
        "feed {name}: {} ({} symbols, {rate} ticks/s), next seq {}",
        w.path().display(),
        symbols,
        w.next_seq()
    );

    let mut market = Market::new(symbols);
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut next_send = start;
    let mut last_report = start;
    let mut last_heartbeat = start;
    let mut sent = 0u64;
    let mut sent_at_report = 0u64;
    loop {
        let now = Instant::now();
        if run_for.is_some_and(|d| now.duration_since(start) >= d) {
            break;
        }
        if now >= next_send {
            let tick = market.tick(realtime_ns());
            w.append(TICK, &tick.encode())?;
            sent += 1;
            next_send += gap;
            // Fall behind by at most 10 ms (after a stall, do not burst to catch up further).
            if now.duration_since(next_send) > Duration::from_millis(10) {
                next_send = now;
            }
            continue;
        }
        if now.duration_since(last_heartbeat) >= Duration::from_millis(1) {
            w.heartbeat();
            last_heartbeat = now;
        }
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            println!(
                "feed {name}: {} ticks/s, seq {}",
                sent - sent_at_report,
                w.next_seq()
            );
            sent_at_report = sent;
            last_report = now;
        }
        let left = next_send.saturating_duration_since(Instant::now());
        if left > Duration::from_micros(60) {
            std::thread::sleep(left - Duration::from_micros(50));
        } else {
            std::hint::spin_loop();
        }
    }
    println!(
        "feed {name}: sent {sent} ticks, last seq {}",
        w.next_seq().saturating_sub(1)
    );
    w.close()?;
    Ok(())
}
