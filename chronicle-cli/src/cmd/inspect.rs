//! `inspect`: everything an operator asks first about a queue.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use chronicle_core::probe::{self, QueueMeta, QueueProbe};
use chronicle_core::{QueueDir, QueueReader, ReaderConfig, StartAt, os};
use serde::Serialize;

use crate::output::{self, Style};
use crate::queue;

/// Window over which the append rate is measured.
const RATE_WINDOW_NS: u64 = 5_000_000_000;
/// Records counted at most for the rate (keeps inspect quick on a firehose).
const RATE_SCAN_LIMIT: u64 = 50_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue directory.
    queue: PathBuf,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
    /// Evaluate ages and the append rate as of this time (RFC 3339) instead of now: for
    /// post-mortems and reproducible output.
    #[arg(long, value_name = "RFC3339", value_parser = output::parse_time_arg)]
    now: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    queue: String,
    format_version: u32,
    queue_uid: String,
    created_ns: u64,
    geometry: GeometryJ,
    segments: SegmentsJ,
    writer: WriterJ,
    tail: TailJ,
    append_rate_msgs_per_s: Option<f64>,
    /// Why the append rate is unknown (the records of the window could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    append_rate_error: Option<String>,
    append_rate_window_s: u64,
    readers: Vec<ReaderJ>,
    reader_errors: Vec<String>,
    /// Rewrites of the history recorded by recovery after a power cut (0: none).
    history_epoch: u64,
    /// The seq the latest rewrite continued at (when `history_epoch` > 0).
    history_rewritten_from: Option<u64>,
}

#[derive(Debug, Serialize)]
struct GeometryJ {
    segment_size: u64,
    max_payload: u32,
    index_stride: u32,
    file_mode: String,
}

#[derive(Debug, Serialize)]
struct SegmentsJ {
    count: u64,
    bytes: u64,
    oldest: Option<u64>,
    newest: Option<u64>,
    oldest_seq: Option<u64>,
}

#[derive(Debug, Serialize)]
struct WriterJ {
    status: &'static str,
    lock_held: bool,
    pid: Option<u32>,
    pid_alive: Option<bool>,
}

#[derive(Debug, Serialize)]
struct TailJ {
    segment: u64,
    offset: u64,
    next_seq: u64,
    last_timestamp_ns: u64,
}

#[derive(Debug, Serialize)]
struct ReaderJ {
    name: String,
    next_seq: Option<u64>,
    segment: Option<u64>,
    offset: Option<u64>,
    lag_records: Option<u64>,
    lag_bytes: Option<u64>,
    lag_ns: Option<u64>,
    heartbeat_ns: u64,
    heartbeat_age_ns: u64,
    pid: u32,
    in_use: bool,
    state: &'static str,
}

/// Records appended in the `RATE_WINDOW_NS` before `now`, per second (from record timestamps,
/// so it needs no waiting and works on a queue whose writer is gone).
/// Records per second over the window, or why the records of the window could not be read.
fn append_rate(q: &PathBuf, meta: &QueueMeta, now: u64) -> std::result::Result<f64, String> {
    let since = now.saturating_sub(RATE_WINDOW_NS);
    if meta.tail.last_timestamp_ns < since {
        return Ok(0.0);
    }
    let cfg = ReaderConfig {
        verify_crc: false,
        ..ReaderConfig::default()
    }
    .start(StartAt::Timestamp(since));
    let mut r = QueueReader::open(q, cfg).map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while n < RATE_SCAN_LIMIT {
        match r.next() {
            Ok(Some(m)) if m.timestamp_ns() <= now => n += 1,
            Ok(_) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n as f64 * 1e9 / RATE_WINDOW_NS as f64)
}

pub fn run(args: Args) -> Result<u8> {
    queue::check_queue(&args.queue)?;
    let dir = QueueDir::new(&args.queue);
    let now = args.now.unwrap_or_else(os::realtime_ns);
    let p = QueueProbe::read(&dir)?;
    let (meta, geom, tail, live) = (p.meta, p.meta.geometry, p.meta.tail, &p.lock);
    let oldest = p.segments.files.first().map(|s| s.id);
    let newest = p.segments.files.last().map(|s| s.id);
    let mut readers = Vec::new();
    let mut reader_errors = Vec::new();
    for r in &p.readers {
        match r {
            Ok(r) => readers.push(ReaderJ {
                next_seq: r.lag.map(|l| l.next_seq),
                segment: r.info.position.map(|p| p.segment),
                offset: r.info.position.map(|p| p.offset),
                lag_records: r.lag.map(|l| l.records),
                lag_bytes: r.lag.map(|l| l.bytes),
                lag_ns: r.lag.map(|l| l.ns),
                heartbeat_ns: r.info.heartbeat_ns,
                heartbeat_age_ns: now.saturating_sub(r.info.heartbeat_ns),
                pid: r.info.pid,
                in_use: r.info.in_use,
                state: queue::reader_word(r.state),
                name: r.info.name.clone(),
            }),
            Err(e) => reader_errors.push(e.to_string()),
        }
    }
    let rate = append_rate(&args.queue, &meta, now);
    let report = Report {
        queue: args.queue.display().to_string(),
        format_version: meta.version,
        history_epoch: meta.history.epoch,
        history_rewritten_from: (meta.history.epoch > 0).then_some(meta.history.rewritten_from),
        queue_uid: format!("{:016x}", geom.queue_uid),
        created_ns: meta.created_ns,
        geometry: GeometryJ {
            segment_size: geom.segment_size,
            max_payload: geom.max_payload,
            index_stride: geom.index_stride,
            file_mode: format!("{:04o}", geom.file_mode),
        },
        segments: SegmentsJ {
            count: p.segments.files.len() as u64,
            bytes: p.segments.bytes(),
            oldest,
            newest,
            oldest_seq: oldest.and_then(|id| {
                probe::segment_header(&dir, id, &geom)
                    .ok()
                    .map(|h| h.base_seq)
            }),
        },
        writer: WriterJ {
            status: queue::writer_word(p.writer_status()),
            lock_held: live.held,
            pid: live
                .pid
                .or((meta.writer_pid != 0).then_some(meta.writer_pid)),
            pid_alive: live.pid_alive,
        },
        tail: TailJ {
            segment: tail.segment,
            offset: tail.offset,
            next_seq: tail.next_seq,
            last_timestamp_ns: tail.last_timestamp_ns,
        },
        append_rate_msgs_per_s: rate.as_ref().ok().copied(),
        append_rate_error: rate.err(),
        append_rate_window_s: RATE_WINDOW_NS / 1_000_000_000,
        readers,
        reader_errors,
    };
    if args.json {
        output::print_json(&report)?;
    } else {
        print!("{}", render(&report, now, Style::detect()));
    }
    Ok(0)
}

fn render(r: &Report, now: u64, st: Style) -> String {
    let mut s = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(s, "{}{v}", st.bold(&format!("{k:<13}")));
    };
    kv("queue", r.queue.clone());
    kv("format", format!("version {}", r.format_version));
    kv("uid", r.queue_uid.clone());
    kv("created", output::time_ns(r.created_ns));
    if let Some(from) = r.history_rewritten_from {
        kv(
            "history",
            format!(
                "rewritten from seq {from} (epoch {}): records were lost in a power cut and \
                 their seqs assigned again",
                r.history_epoch
            ),
        );
    }
    let g = &r.geometry;
    kv(
        "geometry",
        format!(
            "segment {}, max payload {}, index every {}, file mode {}",
            output::bytes(g.segment_size),
            output::bytes(u64::from(g.max_payload)),
            output::bytes(u64::from(g.index_stride)),
            g.file_mode
        ),
    );
    let sg = &r.segments;
    kv(
        "segments",
        match (sg.oldest, sg.newest) {
            (Some(o), Some(n)) => format!(
                "{} ({}), oldest {o} (first seq {}), newest {n}",
                sg.count,
                output::bytes(sg.bytes),
                sg.oldest_seq.map_or("?".to_string(), |s| s.to_string())
            ),
            _ => "none".to_string(),
        },
    );
    let w = &r.writer;
    let pid = w.pid.map_or(String::new(), |p| format!("pid {p}"));
    let writer = match w.status {
        "alive" => st.green(&format!("alive ({pid}, writer.lock held)")),
        "closed" => format!("closed cleanly (last {pid})"),
        "dead" => st.red(&format!(
            "dead: {pid} died without closing (writer.lock free); run `chron-cli doctor --fix`"
        )),
        "never" => "never opened".to_string(),
        other => other.to_string(),
    };
    kv("writer", writer);
    let t = &r.tail;
    kv(
        "tail",
        format!(
            "next seq {}, segment {} offset {}",
            t.next_seq, t.segment, t.offset
        ),
    );
    kv(
        "last write",
        if t.last_timestamp_ns == 0 {
            "never".to_string()
        } else {
            format!(
                "{} ({})",
                output::time_ns(t.last_timestamp_ns),
                output::ago(now, t.last_timestamp_ns)
            )
        },
    );
    kv(
        "append rate",
        match r.append_rate_msgs_per_s {
            Some(x) => format!("{x:.1} msgs/s over the last {} s", r.append_rate_window_s),
            None => format!(
                "unknown: the last {} s of records could not be read ({}); run `chron-cli doctor {}`",
                r.append_rate_window_s,
                r.append_rate_error.as_deref().unwrap_or("no reason given"),
                r.queue
            ),
        },
    );
    kv(
        "readers",
        if r.readers.is_empty() && r.reader_errors.is_empty() {
            "none".to_string()
        } else {
            r.readers.len().to_string()
        },
    );
    if !r.readers.is_empty() {
        let mut rows = vec![
            [
                "NAME",
                "NEXT SEQ",
                "LAG",
                "LAG BYTES",
                "LAG TIME",
                "HEARTBEAT",
                "PID",
                "STATE",
            ]
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>(),
        ];
        let opt = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or("-".to_string(), f);
        for rd in &r.readers {
            rows.push(vec![
                rd.name.clone(),
                opt(rd.next_seq, &|v| v.to_string()),
                opt(rd.lag_records, &|v| v.to_string()),
                opt(rd.lag_bytes, &output::bytes),
                opt(rd.lag_ns, &output::duration_ns),
                output::ago(now, rd.heartbeat_ns),
                rd.pid.to_string(),
                rd.state.to_string(),
            ]);
        }
        s.push_str(&output::table(
            &rows,
            &[false, true, true, true, true, true, true, false],
            "  ",
        ));
    }
    for e in &r.reader_errors {
        let _ = writeln!(s, "  {}", st.red(&format!("unreadable reader meta: {e}")));
    }
    s
}
