//! `chron-cli soak-reader`: a named reader that checks every record of a soak writer's queue
//! until the end record: seq contiguous from 0, payload exactly the writer's pattern, and the
//! end record's count equal to the data records seen. Counts losses (gaps), duplicates (a seq
//! at or below one already seen) and corrupt payloads; measures one-way latency (reader's
//! CLOCK_REALTIME minus the record's timestamp). A slow reader (`--stall-ms`) sleeps that long
//! every `--stall-every-ms` to show that the writer does not wait for it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chronicle_core::os::realtime_ns;
use chronicle_core::{QueueReader, ReaderConfig, StartAt, WaitOutcome};
use serde_json::{Value, json};

use super::{DATA, END, Endpoint, buckets, check, histogram, read_u64};
use crate::emit;

/// Arguments of `chron-cli soak-reader`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue, reader name (its position persists in the queue) and the writer's tag.
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Payload bytes of data records.
    #[arg(long)]
    pub size: usize,
    /// Stall (sleep) this many milliseconds every `--stall-every-ms` (0: never).
    #[arg(long, default_value_t = 0)]
    pub stall_ms: u64,
    /// Milliseconds between stalls.
    #[arg(long, default_value_t = 1_000)]
    pub stall_every_ms: u64,
    /// Report interval in milliseconds.
    #[arg(long)]
    pub interval_ms: u64,
}

#[derive(Debug, Default)]
struct Counts {
    read: u64,
    expected: u64,
    losses: u64,
    duplicates: u64,
    corrupt: u64,
    wrong_type: u64,
    first_problem: Option<String>,
    end_total: Option<u64>,
}

impl Counts {
    fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    /// Accounts for a record with `seq`; false when it is a duplicate (not to be counted).
    fn sequence(&mut self, seq: u64) -> bool {
        if seq < self.expected {
            self.duplicates += 1;
            self.problem(format!("seq {seq} again (expected {})", self.expected));
            return false;
        }
        if seq > self.expected {
            self.losses += seq - self.expected;
            self.problem(format!("seq {} to {} missing", self.expected, seq - 1));
        }
        self.expected = seq + 1;
        true
    }

    fn json(&self, name: &str, lag: u64, hist: Value, fin: bool) -> Value {
        json!({"role": "reader", "name": name, "read": self.read, "lag": lag,
            "losses": self.losses, "duplicates": self.duplicates, "corrupt": self.corrupt,
            "wrong_type": self.wrong_type, "end_total": self.end_total,
            "first_problem": self.first_problem, "latency_ns": hist, "final": fin})
    }
}

/// Reads until the end record.
pub fn run(a: Args) -> Result<u8> {
    let cfg = ReaderConfig {
        start: StartAt::Earliest,
        ..ReaderConfig::named(a.endpoint.name.clone())
    };
    let mut r = a.endpoint.open("reader", |q| QueueReader::open(q, cfg))?;
    let mut lat = histogram()?;
    let mut c = Counts::default();
    let interval = Duration::from_millis(a.interval_ms.max(1));
    let stall = Duration::from_millis(a.stall_ms);
    let stall_every = Duration::from_millis(a.stall_every_ms.max(1));
    let start = Instant::now();
    let (mut next_report, mut next_stall) = (start + interval, start + stall_every);
    let mut since_check = 0u32;
    let mut gone_once = false;
    loop {
        let got = match r.next().context("read")? {
            Some(m) => {
                let seq = m.seq();
                let (ty, ts) = (m.type_id(), m.timestamp_ns());
                let ok = ty == DATA && check(m.payload(), seq, a.endpoint.tag, a.size);
                let end = (ty == END).then(|| read_u64(m.payload(), 0));
                Some((seq, ty, ts, ok, end))
            }
            None => None,
        };
        if let Some((seq, ty, ts, ok, end)) = got {
            gone_once = false;
            if !c.sequence(seq) {
                continue;
            }
            if let Some(total) = end {
                let total = total.unwrap_or(u64::MAX);
                if total != c.read || total != seq {
                    c.problem(format!(
                        "end record says {total} records, {} read, end seq {seq}",
                        c.read
                    ));
                    c.losses += total.saturating_sub(c.read);
                }
                c.end_total = Some(total);
                break;
            }
            lat.saturating_record(realtime_ns().saturating_sub(ts));
            c.read += 1;
            if ty != DATA {
                c.wrong_type += 1;
                c.problem(format!("seq {seq} has type {ty}"));
            } else if !ok {
                c.corrupt += 1;
                c.problem(format!("seq {seq}: payload is not the writer's pattern"));
            }
            since_check += 1;
            if since_check < 64 {
                continue;
            }
        } else {
            if let WaitOutcome::WriterGone(s) =
                r.wait(Duration::from_millis(100)).context("wait")?
            {
                // `wait` reports a gone writer only with nothing left to read; look once more in
                // case the end record landed between the two checks.
                if gone_once {
                    bail!("the writer is gone ({s:?}) and no end record came");
                }
                gone_once = true;
            }
        }
        since_check = 0;
        // Persisting the position is a few stores: keep it close behind, so retention can
        // delete what this reader has passed.
        r.commit()?;
        let now = Instant::now();
        if now >= next_report {
            next_report += interval;
            let lag = r.tail().next_seq.saturating_sub(r.next_seq());
            emit(&c.json(&a.endpoint.name, lag, buckets(&lat), false));
            lat.reset();
        }
        if !stall.is_zero() && now >= next_stall {
            std::thread::sleep(stall);
            next_stall = Instant::now() + stall_every;
        }
    }
    r.commit()?;
    emit(&c.json(&a.endpoint.name, 0, buckets(&lat), true));
    Ok(0)
}
