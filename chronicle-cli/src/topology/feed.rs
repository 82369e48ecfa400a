//! `chron-cli feed`: publishes paced top-of-book ticks for many symbols into one feed queue,
//! heartbeating when idle so a merging reader never waits on it. Runs until SIGTERM/SIGINT.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronicle_bus::BusLayout;
use chronicle_core::sys::realtime_ns;
use chronicle_core::{QueueWriter, RetentionPolicy, WriterConfig};
use serde_json::json;

use super::{emit, install_stop_handler, stop_requested};
use chronicle::topology::{Market, TICK};

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
}

/// Runs the feed until stopped.
pub fn run(a: Args) -> Result<u8> {
    install_stop_handler();
    let rate = a.rate.max(1);
    let symbols = a.symbols.max(1);
    let layout = BusLayout::create(&a.bus).context("cannot create the bus")?;
    let cfg = WriterConfig {
        segment_size: 16 << 20,
        retention: RetentionPolicy {
            max_bytes: Some(256 << 20),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(layout.feed(&a.name)?, cfg).context("cannot open the feed")?;
    let mut market = Market::new(symbols);
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let (mut next_send, mut last_report, mut last_heartbeat) = (start, start, start);
    let mut sent = 0u64;
    while !stop_requested() {
        let now = Instant::now();
        if now >= next_send {
            let ts = realtime_ns();
            let tick = market.tick(ts);
            w.append_at(TICK, ts, &tick.encode())?;
            sent += 1;
            next_send += gap;
            // After a stall, fall behind by at most 10 ms rather than bursting to catch up.
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
            emit(&json!({"role": "feed", "ticks": sent, "seq": w.next_seq(), "final": false}));
            last_report = now;
        }
        let left = next_send.saturating_duration_since(Instant::now());
        if left > Duration::from_micros(60) {
            std::thread::sleep(left - Duration::from_micros(50));
        } else {
            std::hint::spin_loop();
        }
    }
    let seq = w.next_seq();
    w.close()?;
    emit(&json!({"role": "feed", "ticks": sent, "seq": seq, "final": true}));
    Ok(0)
}
