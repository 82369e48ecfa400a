//! `chron-cli soak-fanin`: a live timestamp merge (`chronicle_bus::FanInReader`, no hold limit,
//! woken by the writers' doorbell) of several soak writers' queues until every source's end
//! record. Checks that merge keys (timestamp, source id, seq) strictly increase, that nothing
//! is late, and per source: seq contiguous from 0, the payload pattern and tag, and the end
//! record's count. Latency is the merger's CLOCK_REALTIME minus the record's timestamp (it
//! includes the time a record waits for the other sources' watermarks).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chronicle_bus::{FanInConfig, FanInReader, MergeMode, SourceId};
use chronicle_core::StartAt;
use chronicle_core::os::realtime_ns;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{DATA, END, buckets, check, histogram, read_u64};
use crate::emit;

/// Arguments of `chron-cli soak-fanin`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A source as NAME=TAG=DIR (repeat).
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// Doorbell file the sources' writers ring.
    #[arg(long)]
    pub doorbell: Option<PathBuf>,
    /// Payload bytes of data records.
    #[arg(long)]
    pub size: usize,
    /// Report interval in milliseconds.
    #[arg(long)]
    pub interval_ms: u64,
}

#[derive(Debug)]
struct Src {
    id: SourceId,
    name: String,
    tag: u64,
    expected: u64,
    read: u64,
    end_total: Option<u64>,
}

#[derive(Debug, Default)]
struct Totals {
    merged: u64,
    losses: u64,
    duplicates: u64,
    corrupt: u64,
    order_violations: u64,
    first_problem: Option<String>,
}

impl Totals {
    fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }
}

fn report(t: &Totals, srcs: &[Src], f: &FanInReader, hist: Value, fin: bool) -> Value {
    let st = f.stats();
    let per: Vec<Value> = srcs
        .iter()
        .map(|s| json!({"name": s.name, "read": s.read, "end_total": s.end_total}))
        .collect();
    json!({"role": "fanin", "name": "fanin", "read": t.merged, "losses": t.losses,
        "duplicates": t.duplicates, "corrupt": t.corrupt, "order_violations": t.order_violations,
        "late": st.late, "forced": st.forced, "sources": per, "first_problem": t.first_problem,
        "latency_ns": hist, "final": fin})
}

/// Commits the merge position and, when `next_report` has passed, emits a progress report
/// (the latency recorded since the last one) and schedules the next.
fn checkpoint(
    f: &mut FanInReader,
    t: &Totals,
    srcs: &[Src],
    lat: &mut Histogram<u64>,
    next_report: &mut Instant,
    interval: Duration,
) -> Result<()> {
    f.commit()?;
    if Instant::now() >= *next_report {
        *next_report += interval;
        emit(&report(t, srcs, f, buckets(lat), false));
        lat.reset();
    }
    Ok(())
}

/// Merges until every source ended.
pub fn run(a: Args) -> Result<u8> {
    let mut f = FanInReader::new(FanInConfig {
        mode: MergeMode::Live,
        max_hold: None,
        reader_name: Some("fanin".to_string()),
        start: StartAt::Earliest,
        doorbell: a.doorbell.clone(),
        ..FanInConfig::default()
    })?;
    let mut srcs = Vec::new();
    for spec in &a.sources {
        let mut parts = spec.splitn(3, '=');
        let (Some(name), Some(tag), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(anyhow!("{spec:?}: give a source as NAME=TAG=DIR"));
        };
        let tag: u64 = tag
            .parse()
            .map_err(|_| anyhow!("{spec:?}: {tag:?} is not a tag number"))?;
        let id = f
            .add_source(name, dir)
            .with_context(|| format!("cannot add source {name}"))?;
        srcs.push(Src {
            id,
            name: name.to_string(),
            tag,
            expected: 0,
            read: 0,
            end_total: None,
        });
    }
    emit(&json!({"role": "fanin", "name": "fanin", "ready": true}));
    let mut lat = histogram()?;
    let mut t = Totals::default();
    let interval = Duration::from_millis(a.interval_ms.max(1));
    let mut next_report = Instant::now() + interval;
    let mut last_key: Option<(u64, u64, u64)> = None;
    let mut since_check = 0u32;
    while srcs.iter().any(|s| s.end_total.is_none()) {
        let size = a.size;
        let got = f.next().context("merge")?.map(|m| {
            let payload = m.payload();
            let tag = read_u64(payload, 8);
            let end = (m.type_id() == END).then(|| read_u64(payload, 0));
            let want = srcs.iter().find(|s| s.id == m.source()).map(|s| s.tag);
            let ok = m.type_id() == DATA && want.is_some_and(|w| check(payload, m.seq(), w, size));
            (m.source(), m.key(), m.late(), ok, tag, end)
        });
        let Some((sid, key, late, ok, tag, end)) = got else {
            f.wait(Duration::from_millis(100)).context("wait")?;
            since_check = 0;
            checkpoint(&mut f, &t, &srcs, &mut lat, &mut next_report, interval)?;
            continue;
        };
        let (ts, _, seq) = key;
        if last_key.is_some_and(|k| key <= k) || late {
            t.order_violations += 1;
            t.problem(format!("key {key:?} after {last_key:?}"));
        }
        last_key = Some(key);
        let Some(s) = srcs.iter_mut().find(|s| s.id == sid) else {
            t.problem(format!("a record from unknown source {}", sid.0));
            continue;
        };
        if seq < s.expected {
            t.duplicates += 1;
            let what = format!("{}: seq {seq} again", s.name);
            t.problem(what);
            continue;
        }
        if seq > s.expected {
            t.losses += seq - s.expected;
            let what = format!("{}: seq {} to {} missing", s.name, s.expected, seq - 1);
            t.problem(what);
        }
        s.expected = seq + 1;
        if let Some(total) = end {
            let total = total.unwrap_or(u64::MAX);
            if total != s.read || tag != Some(s.tag) {
                t.losses += total.saturating_sub(s.read);
                let what = format!("{}: end says {total} records, {} merged", s.name, s.read);
                t.problem(what);
            }
            s.end_total = Some(total);
            continue;
        }
        s.read += 1;
        t.merged += 1;
        lat.saturating_record(realtime_ns().saturating_sub(ts));
        if !ok {
            t.corrupt += 1;
            let what = format!("{}: seq {seq}: not the writer's pattern", s.name);
            t.problem(what);
        }
        since_check += 1;
        if since_check >= 64 {
            since_check = 0;
            checkpoint(&mut f, &t, &srcs, &mut lat, &mut next_report, interval)?;
        }
    }
    f.commit()?;
    emit(&report(&t, &srcs, &f, buckets(&lat), true));
    Ok(0)
}
