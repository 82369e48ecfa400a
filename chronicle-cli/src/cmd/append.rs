//! `append`: records from stdin, one per line.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chronicle_core::{Preallocate, QueueDir, QueueWriter, WriterConfig};
use serde::{Deserialize, Serialize};

use crate::output;

/// How each stdin line encodes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InFormat {
    /// The line's bytes (without the newline) are the payload.
    Text,
    /// The line is the payload in hex (whitespace between bytes allowed).
    Hex,
    /// The line is `{"type":N,"payload_hex":".."}` (or `"payload":"text"`; optional
    /// `"timestamp_ns":T`); `tail --format json` output is accepted as is.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue directory.
    queue: PathBuf,
    /// Type id of the records (a JSON line's "type" overrides it).
    #[arg(long = "type", default_value_t = 0, value_name = "N")]
    type_id: u32,
    /// How stdin lines encode records.
    #[arg(long, value_enum, default_value_t = InFormat::Text)]
    format: InFormat,
    /// Create the queue if it does not exist.
    #[arg(long)]
    create: bool,
    /// Segment size of a queue created with --create (e.g. 64M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = output::parse_size, default_value = "64M")]
    segment_size: u64,
    /// Print the sequence number of each appended record.
    #[arg(long)]
    print_seq: bool,
    /// Machine-readable output: with --print-seq one `{"seq":N}` line per record, and a final
    /// summary object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize)]
struct JsonIn {
    #[serde(rename = "type")]
    type_id: Option<u32>,
    payload_hex: Option<String>,
    payload: Option<String>,
    timestamp_ns: Option<u64>,
}

#[derive(Debug, Serialize)]
struct SeqOut {
    seq: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    queue: String,
    appended: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

/// One decoded input line.
struct Rec {
    type_id: u32,
    payload: Vec<u8>,
    timestamp_ns: Option<u64>,
}

fn decode(line: &[u8], args: &Args) -> std::result::Result<Option<Rec>, String> {
    match args.format {
        InFormat::Text => Ok(Some(Rec {
            type_id: args.type_id,
            payload: line.to_vec(),
            timestamp_ns: None,
        })),
        InFormat::Hex => {
            let s = std::str::from_utf8(line).map_err(|_| "not valid hex text".to_string())?;
            Ok(Some(Rec {
                type_id: args.type_id,
                payload: output::parse_hex(s)?,
                timestamp_ns: None,
            }))
        }
        InFormat::Json => {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            let j: JsonIn = serde_json::from_slice(line).map_err(|e| format!("bad JSON: {e}"))?;
            let payload = match (j.payload_hex, j.payload) {
                (Some(h), None) => output::parse_hex(&h)?,
                (None, Some(t)) => t.into_bytes(),
                (Some(_), Some(_)) => {
                    return Err("give either \"payload_hex\" or \"payload\", not both".into());
                }
                (None, None) => return Err("missing \"payload_hex\" (or \"payload\")".into()),
            };
            Ok(Some(Rec {
                type_id: j.type_id.unwrap_or(args.type_id),
                payload,
                timestamp_ns: j.timestamp_ns,
            }))
        }
    }
}

pub fn run(args: Args) -> Result<u8> {
    let dir = QueueDir::new(&args.queue);
    match std::fs::metadata(&args.queue) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !args.create {
                anyhow::bail!(
                    "{}: no such queue (check the path, or pass --create to create a queue there)",
                    args.queue.display()
                );
            }
        }
        // An existing directory to create a queue in.
        _ if args.create && !crate::queue::is_queue(&args.queue) => {
            crate::queue::check_dir(
                &args.queue,
                "a queue directory (the directory holding queue.meta)",
            )?;
        }
        _ => crate::queue::check_queue(&args.queue).map_err(|e| {
            if e.to_string().contains("is not a chronicle queue") {
                anyhow!("{e} (or pass --create to create a queue there)")
            } else {
                e
            }
        })?,
    }
    if !args.create {
        // Refuse to create a queue by accident: it must already be one.
        chronicle_core::probe::read_meta(&dir).map_err(|e| match e {
            chronicle_core::Error::NotAQueue { .. } => {
                anyhow!("{e} (pass --create to create a queue there)")
            }
            chronicle_core::Error::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                anyhow!("{e} (pass --create to create a queue there)")
            }
            other => anyhow!(other),
        })?;
    }
    let cfg = WriterConfig {
        segment_size: args.segment_size,
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(&args.queue, cfg)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    let mut lineno = 0u64;
    let mut first = None;
    let mut last = None;
    let mut count = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .context("read standard input")?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let rec = match decode(&line, &args) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(msg) => {
                out.flush().context("write output")?;
                w.close()?;
                bail!("stdin line {lineno}: {msg} ({count} records before it were appended)");
            }
        };
        let res = match rec.timestamp_ns {
            Some(ts) => w.append_at(rec.type_id, ts, &rec.payload),
            None => w.append(rec.type_id, &rec.payload),
        };
        let seq = match res {
            Ok(s) => s,
            Err(e) => {
                out.flush().context("write output")?;
                let _ = w.close();
                bail!("stdin line {lineno}: {e} ({count} records before it were appended)");
            }
        };
        count += 1;
        first.get_or_insert(seq);
        last = Some(seq);
        if args.print_seq {
            if args.json {
                output::json_line(&mut out, &SeqOut { seq })?;
            } else {
                writeln!(out, "{seq}").context("write output")?;
            }
            // Whoever reads the seqs may be waiting for them before sending the next line.
            out.flush().context("write output")?;
        }
    }
    w.close()?;
    if args.json {
        output::json_line(
            &mut out,
            &Summary {
                queue: args.queue.display().to_string(),
                appended: count,
                first_seq: first,
                last_seq: last,
            },
        )?;
    }
    out.flush().context("write output")?;
    Ok(0)
}
