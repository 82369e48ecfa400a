//! Counters of a running bridge and the periodic stats line on stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters shared by a bridge's tasks. Monotonic counters only grow; gauges are overwritten.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages handed to NATS (out) or received from the consumer (in), re-sends included.
    pub sent: AtomicU64,
    /// Records done: acknowledged by JetStream (out) or appended to the local queue (in).
    pub done: AtomicU64,
    /// Duplicates: publishes JetStream reported as duplicates (out), or redelivered messages
    /// already imported and skipped (in).
    pub duplicates: AtomicU64,
    /// Messages published again after a failed or missing acknowledgement (out).
    pub resent: AtomicU64,
    /// Errors (failed publishes, failed acks, malformed messages, consumer errors).
    pub errors: AtomicU64,
    /// Source records declared lost by the in-bridge's gap timeout (0 unless it is set).
    pub gaps: AtomicU64,
    /// Connections established (the first one included).
    pub reconnects: AtomicU64,
    /// Connections lost.
    pub disconnects: AtomicU64,
    /// Gauge: records behind (out: queue tail minus committed position; in: messages pending in
    /// the consumer).
    pub lag: AtomicU64,
    /// Gauge: publishes awaiting acknowledgement (out), or messages held back waiting for an
    /// earlier source record (in).
    pub in_flight: AtomicU64,
    /// Gauge: the next source sequence number: after the last acknowledged record (out), after
    /// the last imported record of the most recent source (in).
    pub position: AtomicU64,
}

/// A copy of the counters at one instant, with the rate since the previous snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// "out" or "in".
    pub direction: &'static str,
    /// Seconds since the bridge started.
    pub uptime_s: f64,
    /// See [`Counters::sent`].
    pub sent: u64,
    /// See [`Counters::done`].
    pub done: u64,
    /// Records done per second over the last interval.
    pub rate: f64,
    /// See [`Counters::duplicates`].
    pub duplicates: u64,
    /// See [`Counters::resent`].
    pub resent: u64,
    /// See [`Counters::errors`].
    pub errors: u64,
    /// See [`Counters::gaps`].
    pub gaps: u64,
    /// See [`Counters::reconnects`].
    pub reconnects: u64,
    /// See [`Counters::disconnects`].
    pub disconnects: u64,
    /// See [`Counters::lag`].
    pub lag: u64,
    /// See [`Counters::in_flight`].
    pub in_flight: u64,
    /// See [`Counters::position`].
    pub position: u64,
}

/// Produces stats lines at a fixed interval.
#[derive(Debug)]
pub struct Reporter {
    direction: &'static str,
    json: bool,
    start: Instant,
    last: Instant,
    last_done: u64,
}

impl Reporter {
    /// A reporter for one direction; `json` selects one JSON object per line.
    pub fn new(direction: &'static str, json: bool) -> Reporter {
        let now = Instant::now();
        Reporter {
            direction,
            json,
            start: now,
            last: now,
            last_done: 0,
        }
    }

    /// Takes a snapshot and advances the rate window.
    pub fn snapshot(&mut self, c: &Counters) -> Snapshot {
        let now = Instant::now();
        let done = c.done.load(Ordering::Relaxed);
        let dt = now.duration_since(self.last).max(Duration::from_millis(1));
        let rate = done.saturating_sub(self.last_done) as f64 / dt.as_secs_f64();
        self.last = now;
        self.last_done = done;
        Snapshot {
            direction: self.direction,
            uptime_s: now.duration_since(self.start).as_secs_f64(),
            sent: c.sent.load(Ordering::Relaxed),
            done,
            rate,
            duplicates: c.duplicates.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            lag: c.lag.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            position: c.position.load(Ordering::Relaxed),
        }
    }

    /// Formats a snapshot as the stats line.
    pub fn line(&self, s: &Snapshot) -> String {
        if self.json {
            return serde_json::to_string(s).unwrap_or_default();
        }
        let (done, flight) = if s.direction == "out" {
            ("acked", "in_flight")
        } else {
            ("imported", "held")
        };
        format!(
            "chron-bridge {}: {done}={} rate={:.0}/s lag={} {flight}={} position={} sent={} dup={} resent={} errors={} disconnects={}{}",
            s.direction,
            s.done,
            s.rate,
            s.lag,
            s.in_flight,
            s.position,
            s.sent,
            s.duplicates,
            s.resent,
            s.errors,
            s.disconnects,
            if s.gaps > 0 {
                format!(" LOST={}", s.gaps)
            } else {
                String::new()
            }
        )
    }
}
