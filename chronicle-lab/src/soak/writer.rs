//! `chron-cli soak-writer`: creates a queue with small segments and a retention cap, waits for
//! `go` on stdin, then appends paced records until SIGTERM/SIGINT, ends with an end record
//! (the number of data records written) and closes the queue.
//!
//! Pacing: the writer keeps to `rate` records per second on average, appending the records that
//! are due after each short sleep (a few per wake-up at tens of thousands per second), and
//! heartbeats after each burst so a live fan-in never waits on it. After a stall it appends at
//! most 10 ms worth at once and drops the rest of the schedule (counted as `behind`): records
//! are never skipped, only the schedule slips.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chronicle_core::{QueueWriter, WriterConfig};
use serde_json::json;

use super::{DATA, END, Endpoint, HEADER, buckets, fill, histogram, nanos};
use crate::emit;

/// Arguments of `chron-cli soak-writer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue (created), name in the reports and the tag written into every payload.
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Records per second.
    #[arg(long)]
    pub rate: u64,
    /// Payload bytes.
    #[arg(long)]
    pub size: usize,
    /// Segment size in bytes.
    #[arg(long)]
    pub segment_size: u64,
    /// Retention cap in bytes.
    #[arg(long)]
    pub retain_bytes: u64,
    /// Doorbell file to ring after each commit (for the fan-in).
    #[arg(long)]
    pub doorbell: Option<PathBuf>,
    /// Report interval in milliseconds.
    #[arg(long)]
    pub interval_ms: u64,
}

/// Runs the writer until stopped.
pub fn run(a: Args, stop_requested: fn() -> bool) -> Result<u8> {
    let rate = a.rate.max(1);
    let cfg = WriterConfig {
        doorbell: a.doorbell.clone(),
        ..crate::capped_writer_config(a.segment_size, a.retain_bytes)
    };
    let mut w = a.endpoint.open("writer", |q| QueueWriter::open(q, cfg))?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the start signal")?;
    if line.trim() != "go" {
        bail!("no start signal (the soak parent went away)");
    }

    let mut appends = histogram()?;
    let interval = Duration::from_millis(a.interval_ms.max(1));
    let burst_cap = (rate / 100).max(1);
    let start = Instant::now();
    let mut next_report = start + interval;
    let (mut sent, mut behind) = (0u64, 0u64);
    while !stop_requested() {
        let due = u64::try_from(u128::from(rate) * start.elapsed().as_nanos() / 1_000_000_000)
            .unwrap_or(u64::MAX)
            .saturating_sub(behind);
        let mut n = due.saturating_sub(sent);
        if n > burst_cap {
            behind += n - burst_cap;
            n = burst_cap;
        }
        for _ in 0..n {
            let t0 = Instant::now();
            let seq = w.next_seq();
            let mut c = w.claim(DATA, a.size)?;
            fill(c.payload_mut(), seq, a.endpoint.tag);
            c.commit();
            appends.saturating_record(nanos(t0.elapsed()));
            sent += 1;
        }
        w.heartbeat();
        let now = Instant::now();
        if now >= next_report {
            next_report += interval;
            emit(
                &json!({"role": "writer", "name": a.endpoint.name, "written": sent, "behind": behind,
                "append_ns": buckets(&appends), "final": false}),
            );
            appends.reset();
        }
        // Sleep until the next record is due: at least 200 us (a few records per wake-up at
        // tens of thousands per second, so two writers do not spin on a small machine), at most
        // 1 ms (heartbeats).
        let next_due = Duration::from_nanos(
            u64::try_from(u128::from(sent + behind + 1) * 1_000_000_000 / u128::from(rate))
                .unwrap_or(u64::MAX),
        );
        let left = next_due.saturating_sub(start.elapsed());
        std::thread::sleep(left.clamp(Duration::from_micros(200), Duration::from_millis(1)));
    }
    let mut end = [0u8; HEADER];
    fill(&mut end, sent, a.endpoint.tag);
    w.append(END, &end)?;
    w.close()?;
    emit(
        &json!({"role": "writer", "name": a.endpoint.name, "written": sent, "behind": behind,
        "append_ns": buckets(&appends), "final": true}),
    );
    Ok(0)
}
