//! `tail`: one line per record; `-f` follows on the queue's futex.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use chronicle_core::{
    Error, MessageView, QueueReader, ReaderConfig, StartAt, WaitOutcome, WriterStatus,
};
use serde::Serialize;

use crate::output;

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPoint {
    /// The oldest retained record.
    Start,
    /// The tail (with `-n N`: N records before it).
    End,
    /// The record with this sequence number.
    Seq(u64),
    /// The first record at or after this time (ns since the Unix epoch).
    Time(u64),
}

fn parse_from(s: &str) -> std::result::Result<StartPoint, String> {
    if s == "start" {
        Ok(StartPoint::Start)
    } else if s == "end" {
        Ok(StartPoint::End)
    } else if let Some(n) = s.strip_prefix("seq:") {
        n.parse()
            .map(StartPoint::Seq)
            .map_err(|_| format!("{n:?} is not a sequence number"))
    } else if let Some(t) = s.strip_prefix("time:") {
        output::parse_time(t)
            .map(StartPoint::Time)
            .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "{s:?}: use start, end, seq:N or time:RFC3339 (e.g. time:2024-05-01T12:00:00Z)"
        ))
    }
}

/// Output format of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// Payload as printable text (other bytes escaped as \xNN).
    Text,
    /// Payload as hex.
    Hex,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue directory.
    queue: PathBuf,
    /// Keep waiting for new records (futex wait); stops on Ctrl-C or when the writer goes away.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Where to start: start, end, seq:N or time:RFC3339.
    #[arg(long, value_name = "WHERE", value_parser = parse_from, default_value = "start")]
    from: StartPoint,
    /// With --from end: start N records before the end. Otherwise: stop after N records.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    lines: Option<u64>,
    /// How each record is printed.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
    /// Same as --format json.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct JsonRec {
    seq: u64,
    timestamp_ns: u64,
    #[serde(rename = "type")]
    type_id: u32,
    len: usize,
    payload_hex: String,
}

fn print(out: &mut impl Write, m: &MessageView<'_>, format: OutFormat) -> Result<()> {
    let p = m.payload();
    match format {
        OutFormat::Json => output::json_line(
            out,
            &JsonRec {
                seq: m.seq(),
                timestamp_ns: m.timestamp_ns(),
                type_id: m.type_id(),
                len: p.len(),
                payload_hex: output::hex(p),
            },
        ),
        OutFormat::Text | OutFormat::Hex => {
            let body = if format == OutFormat::Text {
                output::printable(p)
            } else {
                output::hex(p)
            };
            let sep = if body.is_empty() { "" } else { " " };
            writeln!(
                out,
                "{} {} type={} len={}{sep}{body}",
                m.seq(),
                output::time_ns(m.timestamp_ns()),
                m.type_id(),
                p.len(),
            )
            .context("write output")
        }
    }
}

fn position(r: &mut QueueReader, from: StartPoint, lines: Option<u64>) -> Result<()> {
    match from {
        StartPoint::End => {
            if let Some(n) = lines {
                let target = r.next_seq().saturating_sub(n);
                match r.seek(StartAt::Seq(target)) {
                    Err(Error::PositionLost { .. }) => r.seek(StartAt::Earliest)?,
                    other => other?,
                }
            }
        }
        StartPoint::Start | StartPoint::Seq(_) | StartPoint::Time(_) => {}
    }
    Ok(())
}

pub fn run(args: Args) -> Result<u8> {
    let format = if args.json {
        OutFormat::Json
    } else {
        args.format
    };
    let start = match args.from {
        StartPoint::Start => StartAt::Earliest,
        StartPoint::End => StartAt::Latest,
        StartPoint::Seq(n) => StartAt::Seq(n),
        StartPoint::Time(t) => StartAt::Timestamp(t),
    };
    crate::queue::check_queue(&args.queue)?;
    let mut r = QueueReader::open(&args.queue, ReaderConfig::default().start(start))?;
    position(&mut r, args.from, args.lines)?;
    // With --from end, -n chose the start; it does not also limit the output.
    let limit = match args.from {
        StartPoint::End => None,
        _ => args.lines,
    };
    if args.follow {
        crate::signals::install_stop_handler()?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    loop {
        while limit.is_none_or(|l| printed < l) {
            let Some(m) = r.next()? else { break };
            print(&mut out, &m, format)?;
            printed += 1;
        }
        out.flush().context("write output")?;
        if limit.is_some_and(|l| printed >= l) || !args.follow {
            return Ok(0);
        }
        if crate::signals::stop_requested() {
            return Ok(0);
        }
        // Short timeouts only so a signal is noticed; a commit wakes the wait at once.
        match r.wait(Duration::from_millis(150))? {
            WaitOutcome::Ready | WaitOutcome::TimedOut => {}
            WaitOutcome::WriterGone(status) => {
                // Drain whatever was committed before it went.
                while limit.is_none_or(|l| printed < l) {
                    let Some(m) = r.next()? else { break };
                    print(&mut out, &m, format)?;
                    printed += 1;
                }
                out.flush().context("write output")?;
                let at = r.next_seq();
                return Ok(match status {
                    WriterStatus::Dead => {
                        eprintln!(
                            "chron-cli: the writer of {} died without closing it; stopped at seq {at} (run `chron-cli doctor` on it)",
                            args.queue.display()
                        );
                        1
                    }
                    _ => {
                        eprintln!(
                            "chron-cli: the writer of {} closed it; stopped at seq {at}",
                            args.queue.display()
                        );
                        0
                    }
                });
            }
            _ => {}
        }
    }
}
