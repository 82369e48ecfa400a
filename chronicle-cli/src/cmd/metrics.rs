//! `metrics`: queues and buses in the Prometheus text format, served over HTTP (`--listen`) or
//! printed once (`--once`). Every scrape reads the shared files afresh through
//! [`QueueProbe::read`], without locking anything or mapping anything writable, so it can
//! watch any running bus; a
//! bus is expanded to its queues at each scrape, so queues created later appear by themselves.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chronicle_core::probe::QueueProbe;
use chronicle_core::{QueueDir, os};

use crate::queue::{self, Target};
use chronicle_metrics::{Exposition, Kind, seconds};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bus directories (every queue under feeds/, strategies/*/{orders,fates} and router/)
    /// or queue directories.
    #[arg(required = true, value_name = "BUS_OR_QUEUE")]
    paths: Vec<PathBuf>,
    /// Serve `GET /metrics` on this address (e.g. 127.0.0.1:9464) until killed.
    #[arg(long, value_name = "ADDR", required_unless_present = "once")]
    listen: Option<String>,
    /// Print one exposition to stdout and exit.
    #[arg(long, conflicts_with = "listen")]
    once: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let mut targets: Vec<(PathBuf, Target)> = Vec::new();
    for p in &args.paths {
        // The same path twice would serve every series twice, which Prometheus refuses.
        if !targets.iter().any(|(t, _)| t == p) {
            targets.push((p.clone(), queue::classify(p)?));
        }
    }
    if args.once {
        print!("{}", scrape(&targets));
        return Ok(0);
    }
    let addr = args.listen.as_deref().unwrap_or_default();
    let listener = chronicle_metrics::bind(addr)?;
    let local = listener
        .local_addr()
        .map_or(addr.to_string(), |a| a.to_string());
    tracing::info!(addr = %local, "serving metrics at http://{local}/metrics");
    chronicle_metrics::serve(&listener, || scrape(&targets))
        .with_context(|| format!("serving metrics on {local}"))?;
    Ok(0)
}

/// One exposition of every queue of `targets`.
fn scrape(targets: &[(PathBuf, Target)]) -> String {
    let now = os::realtime_ns();
    let mut e = Exposition::new();
    for (path, kind) in targets {
        match kind {
            Target::Queue => queue_metrics(&mut e, "", path, &path.display().to_string(), now),
            Target::Bus => {
                let bus = path.display().to_string();
                for q in queue::bus_queues(path) {
                    let name = q.strip_prefix(path).unwrap_or(&q).display().to_string();
                    queue_metrics(&mut e, &bus, &q, &name, now);
                }
            }
        }
    }
    e.render()
}

const WRITER_STATES: [&str; 5] = ["alive", "closed", "dead", "never", "unknown"];
const READER_STATES: [&str; 3] = ["active", "idle", "gone"];

/// The series of one queue, labelled `bus` (empty for a queue named on its own) and `queue`
/// (its path under the bus, or as given).
fn queue_metrics(e: &mut Exposition, bus: &str, path: &Path, name: &str, now: u64) {
    let l = [("bus", bus), ("queue", name)];
    let facts = QueueProbe::read(&QueueDir::new(path));
    e.family(
        "chronicle_queue_up",
        Kind::Gauge,
        "1 when the queue's files could be read for this scrape, 0 when not (see chron-cli doctor).",
    )
    .sample(&l, facts.is_ok());
    let Ok(f) = facts else { return };
    let tail = f.meta.tail;
    let writer = queue::writer_word(f.writer_status());
    e.family(
        "chronicle_queue_appended_records_total",
        Kind::Counter,
        "Records appended over the queue's life (its next sequence number).",
    )
    .sample(&l, tail.next_seq);
    e.family(
        "chronicle_queue_appended_bytes_total",
        Kind::Counter,
        "Bytes the writer has moved through the log since the queue was created (framing, padding and segment headers included).",
    )
    .sample(&l, f.meta.appended_bytes());
    e.family(
        "chronicle_queue_last_append_timestamp_seconds",
        Kind::Gauge,
        "Timestamp of the last record appended, seconds since the epoch (0: none).",
    )
    .sample(&l, seconds(tail.last_timestamp_ns));
    e.family(
        "chronicle_queue_segments",
        Kind::Gauge,
        "Segment files on disk.",
    )
    .sample(&l, f.segments.files.len() as u64);
    e.family(
        "chronicle_queue_segments_bytes",
        Kind::Gauge,
        "Size of the segment files on disk.",
    )
    .sample(&l, f.segments.bytes());
    e.family(
        "chronicle_queue_segment_size_bytes",
        Kind::Gauge,
        "Size of each segment file (the queue's geometry).",
    )
    .sample(&l, f.meta.geometry.segment_size);
    if let Some(free) = queue::free_bytes(path) {
        e.family(
            "chronicle_queue_filesystem_free_bytes",
            Kind::Gauge,
            "Bytes available to unprivileged users on the file system holding the queue.",
        )
        .sample(&l, free);
    }
    let w = e.family(
        "chronicle_queue_writer_state",
        Kind::Gauge,
        "Writer state, one series per state, 1 for the current one: alive (writer.lock held), closed (closed cleanly), dead (died without closing), never (never opened), unknown.",
    );
    for s in WRITER_STATES {
        w.sample(&[l[0], l[1], ("state", s)], writer == s);
    }
    e.family(
        "chronicle_queue_reader_meta_errors",
        Kind::Gauge,
        "Reader meta files that could not be read.",
    )
    .sample(&l, f.readers.iter().filter(|r| r.is_err()).count() as u64);
    for r in f.readers.iter().flatten() {
        let rl = [l[0], l[1], ("reader", r.info.name.as_str())];
        if let Some(lag) = r.lag {
            e.family(
                "chronicle_reader_position_records",
                Kind::Gauge,
                "Records the named reader has consumed and committed (its next sequence number).",
            )
            .sample(&rl, lag.next_seq);
            e.family(
                "chronicle_reader_lag_records",
                Kind::Gauge,
                "Records appended that the named reader has not consumed.",
            )
            .sample(&rl, lag.records);
            e.family(
                "chronicle_reader_lag_bytes",
                Kind::Gauge,
                "Bytes of log between the named reader's position and the tail.",
            )
            .sample(&rl, lag.bytes);
            e.family(
                "chronicle_reader_lag_seconds",
                Kind::Gauge,
                "Time between the last record the named reader consumed and the last one appended (0 when caught up).",
            )
            .sample(&rl, seconds(lag.ns));
        }
        e.family(
            "chronicle_reader_heartbeat_age_seconds",
            Kind::Gauge,
            "Time since the named reader's last heartbeat.",
        )
        .sample(&rl, seconds(now.saturating_sub(r.info.heartbeat_ns)));
        let st = e.family(
            "chronicle_reader_state",
            Kind::Gauge,
            "Named reader state, one series per state, 1 for the current one: active (a process holds it), idle (its process lives but does not hold it), gone.",
        );
        for s in READER_STATES {
            st.sample(
                &[rl[0], rl[1], rl[2], ("state", s)],
                queue::reader_word(r.state) == s,
            );
        }
    }
}
