//! Counters of a running bridge, the periodic stats event (or `--stats-json` line) on stderr, and the same counters for
//! Prometheus (`--metrics-listen`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chronicle_metrics::{Exposition, Kind};

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
    /// Gauge: timestamp (ns since the Unix epoch) of the record the lag is measured from, 0
    /// when there is no lag: the oldest record not acknowledged yet (out), the last record
    /// imported while the consumer still has messages pending (in). See [`Counters::lag_seconds`].
    pub lag_since_ns: AtomicU64,
}

impl Counters {
    /// Lag in seconds: how long ago the record named by `lag_since_ns` was written (0 without
    /// lag). Source and destination clocks are compared, so across hosts it includes their skew.
    pub fn lag_seconds(&self) -> f64 {
        let since = self.lag_since_ns.load(Ordering::Relaxed);
        if since == 0 {
            return 0.0;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        now.saturating_sub(since) as f64 / 1e9
    }
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
    /// See [`Counters::lag_seconds`].
    pub lag_s: f64,
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
            lag_s: c.lag_seconds(),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            position: c.position.load(Ordering::Relaxed),
        }
    }

    /// Writes a snapshot: as a log event (`INFO`, target `chronicle_bridge::stats`, message
    /// `stats`, one field per counter), or with `--stats-json` as the bare JSON object on its
    /// own stderr line, as before logs existed (scripts parse it).
    pub fn report(&self, s: &Snapshot) {
        if self.json {
            eprintln!("{}", serde_json::to_string(s).unwrap_or_default());
            return;
        }
        let rate = s.rate.round() as u64;
        // One event in both directions; the names of `done` and `in_flight` tell which.
        macro_rules! stats_event {
            ($done:ident, $in_flight:ident) => {
                tracing::info!(
                    direction = s.direction,
                    $done = s.done,
                    rate,
                    lag = s.lag,
                    lag_s = s.lag_s,
                    $in_flight = s.in_flight,
                    position = s.position,
                    sent = s.sent,
                    dup = s.duplicates,
                    resent = s.resent,
                    errors = s.errors,
                    disconnects = s.disconnects,
                    lost = s.gaps,
                    "stats"
                )
            };
        }
        if s.direction == "out" {
            stats_event!(acked, in_flight);
        } else {
            stats_event!(imported, held);
        }
    }
}

/// The counters in the Prometheus text format, labelled `direction` ("out" or "in") and
/// `queue` (the local queue's path).
pub fn exposition(direction: &str, queue: &str, c: &Counters) -> String {
    let l = [("direction", direction), ("queue", queue)];
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut e = Exposition::new();
    for (name, kind, help, v) in [
        (
            "chronicle_bridge_sent_messages_total",
            Kind::Counter,
            "Messages handed to NATS (out, re-sends included) or received from the consumer (in).",
            &c.sent,
        ),
        (
            "chronicle_bridge_done_records_total",
            Kind::Counter,
            "Records done: acknowledged by JetStream (out) or appended to the local queue (in).",
            &c.done,
        ),
        (
            "chronicle_bridge_duplicates_total",
            Kind::Counter,
            "Publishes JetStream reported as duplicates (out), or redelivered messages already imported and skipped (in).",
            &c.duplicates,
        ),
        (
            "chronicle_bridge_resent_total",
            Kind::Counter,
            "Messages published again after a failed or missing acknowledgement (out).",
            &c.resent,
        ),
        (
            "chronicle_bridge_errors_total",
            Kind::Counter,
            "Errors: failed publishes or acknowledgements, malformed messages, consumer errors.",
            &c.errors,
        ),
        (
            "chronicle_bridge_lost_records_total",
            Kind::Counter,
            "Source records declared lost by the in-bridge's gap timeout (0 unless it is set).",
            &c.gaps,
        ),
        (
            "chronicle_bridge_connections_total",
            Kind::Counter,
            "Connections to NATS established, the first one included (reconnects are this minus one).",
            &c.reconnects,
        ),
        (
            "chronicle_bridge_disconnections_total",
            Kind::Counter,
            "Connections to NATS lost.",
            &c.disconnects,
        ),
        (
            "chronicle_bridge_lag_records",
            Kind::Gauge,
            "Records behind: the local queue's tail minus the acknowledged position (out, updated every second), or messages pending in the consumer (in).",
            &c.lag,
        ),
        (
            "chronicle_bridge_in_flight_messages",
            Kind::Gauge,
            "Publishes awaiting acknowledgement (out), or messages held back waiting for an earlier source record (in).",
            &c.in_flight,
        ),
        (
            "chronicle_bridge_position_records",
            Kind::Gauge,
            "The next source sequence number: after the last acknowledged record (out), after the last imported record of the most recent source (in).",
            &c.position,
        ),
    ] {
        e.family(name, kind, help).sample(&l, get(v));
    }
    e.family(
        "chronicle_bridge_lag_seconds",
        Kind::Gauge,
        "Seconds behind: age of the oldest record not acknowledged yet (out), or of the last record imported while the consumer has messages pending (in); 0 without lag.",
    )
    .sample(&l, c.lag_seconds());
    e.render()
}

/// With an address, binds it and serves [`exposition`] of `counters` from a helper thread: a
/// scrape reads the atomics, it never waits for the bridge's tasks. Without one, does nothing.
pub fn serve_metrics(
    addr: Option<&str>,
    direction: &'static str,
    queue: &std::path::Path,
    counters: &Arc<Counters>,
) -> crate::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let queue = queue.display().to_string();
    let counters = Arc::clone(counters);
    let listener =
        chronicle_metrics::bind(addr).map_err(|source| crate::BridgeError::Metrics { source })?;
    std::thread::Builder::new()
        .name("bridge-metrics".to_string())
        .spawn(move || {
            if let Err(e) =
                chronicle_metrics::serve(&listener, || exposition(direction, &queue, &counters))
            {
                tracing::error!(direction, error = %e, "the metrics server stopped");
            }
        })
        .map_err(|e| crate::BridgeError::InvalidConfig {
            what: format!("cannot start the metrics thread: {e}"),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_labels_every_counter() {
        let c = Counters::default();
        c.done.store(7, Ordering::Relaxed);
        c.lag.store(3, Ordering::Relaxed);
        let text = exposition("out", "/q/a\"b", &c);
        assert!(
            text.contains(
                "chronicle_bridge_done_records_total{direction=\"out\",queue=\"/q/a\\\"b\"} 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE chronicle_bridge_lag_records gauge\n"));
        assert!(
            text.contains(
                "chronicle_bridge_lag_records{direction=\"out\",queue=\"/q/a\\\"b\"} 3\n"
            )
        );
        assert_eq!(text.matches("# TYPE ").count(), 12);
        assert!(
            text.contains(
                "chronicle_bridge_lag_seconds{direction=\"out\",queue=\"/q/a\\\"b\"} 0\n"
            ),
            "{text}"
        );
    }
}
