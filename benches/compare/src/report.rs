//! Aggregation over rounds and the written outputs: the Markdown report, the per-run CSV,
//! the plotted percentile series and the target verdicts.
//!
//! Every figure is a median over rounds with its spread (smallest and largest round).
//! Ratios are taken **within a round** (a transport against the floor measured minutes
//! apart on the same machine state) and then summarised over rounds, never formed from
//! two medians.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chronicle_lab::harness::{LatencyStats, WaitMode};

use crate::machine::Machine;
use crate::options::Options;
use crate::{CASES, Case, Measurement, chart};

/// Where the outputs go.
#[derive(Debug)]
pub struct Outputs {
    /// `results.md`.
    pub markdown: PathBuf,
    /// `compare-latency.svg`.
    pub chart: PathBuf,
    /// `runs.csv`.
    pub runs: PathBuf,
    /// `percentiles.csv`.
    pub percentiles: PathBuf,
}

impl Outputs {
    /// The output paths inside `dir`.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            markdown: dir.join("results.md"),
            chart: dir.join("compare-latency.svg"),
            runs: dir.join("runs.csv"),
            percentiles: dir.join("percentiles.csv"),
        }
    }
}

/// Median and range of one figure over rounds.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub n: usize,
}

/// The spread of `values`, `None` if there are none.
#[must_use]
pub fn spread(mut values: Vec<f64>) -> Option<Spread> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let min = *values.first()?;
    let max = *values.last()?;
    let mid = n / 2;
    let median = if n % 2 == 1 {
        *values.get(mid)?
    } else {
        (values.get(mid - 1)? + values.get(mid)?) / 2.0
    };
    Some(Spread {
        median,
        min,
        max,
        n,
    })
}

/// Index of the case each case is compared with: the first case with the same wait mode
/// (the bare ring for spinning readers, the futex ring for sleeping ones).
#[must_use]
pub fn baseline_of(case: usize) -> Option<usize> {
    let wait = CASES.get(case)?.wait;
    CASES.iter().position(|c| c.wait == wait)
}

fn find(all: &[Measurement], round: u32, payload: usize, case: usize) -> Option<&Measurement> {
    all.iter()
        .find(|m| m.round == round && m.payload == payload && m.case == case)
}

fn rounds(all: &[Measurement]) -> Vec<u32> {
    let mut r: Vec<u32> = all.iter().map(|m| m.round).collect();
    r.sort_unstable();
    r.dedup();
    r
}

fn payloads(all: &[Measurement]) -> Vec<usize> {
    let mut p: Vec<usize> = Vec::new();
    for m in all {
        if !p.contains(&m.payload) {
            p.push(m.payload);
        }
    }
    p
}

fn cases(all: &[Measurement]) -> Vec<usize> {
    let mut c: Vec<usize> = all.iter().map(|m| m.case).collect();
    c.sort_unstable();
    c.dedup();
    c
}

type LatFn = fn(&LatencyStats) -> u64;

fn lat_of(m: &Measurement, f: LatFn) -> Option<f64> {
    m.latency
        .as_ref()
        .and_then(|r| r.latency.as_ref())
        .map(|l| f(l) as f64)
}

fn thru_of(m: &Measurement) -> Option<f64> {
    m.throughput.as_ref().map(|r| r.throughput)
}

fn batched_of(m: &Measurement) -> Option<f64> {
    m.batched.as_ref().map(|r| r.throughput)
}

/// Per-round values of `value(case)`, for a payload.
fn per_round(
    all: &[Measurement],
    payload: usize,
    case: usize,
    value: impl Fn(&Measurement) -> Option<f64>,
) -> Vec<f64> {
    rounds(all)
        .into_iter()
        .filter_map(|r| find(all, r, payload, case).and_then(&value))
        .collect()
}

/// Per-round ratios `value(num) / value(den)`, both from the same round.
fn per_round_ratio(
    all: &[Measurement],
    payload: usize,
    num: usize,
    den: usize,
    value: impl Fn(&Measurement) -> Option<f64>,
) -> Vec<f64> {
    rounds(all)
        .into_iter()
        .filter_map(|r| {
            let n = find(all, r, payload, num).and_then(&value)?;
            let d = find(all, r, payload, den).and_then(&value)?;
            (d > 0.0).then_some(n / d)
        })
        .collect()
}

/// Nanoseconds with a unit picked for `v` (`262 ns`, `12.4 µs`, `1.83 ms`).
#[must_use]
pub fn fmt_ns(v: f64) -> String {
    let (scale, unit) = unit_for(v);
    format!("{} {unit}", fmt_scaled(v / scale))
}

fn unit_for(v: f64) -> (f64, &'static str) {
    if v < 1e3 {
        (1.0, "ns")
    } else if v < 1e6 {
        (1e3, "µs")
    } else if v < 1e9 {
        (1e6, "ms")
    } else {
        (1e9, "s")
    }
}

fn fmt_scaled(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.0} k", v / 1e3)
    }
}

/// `median (min–max) unit` for latencies, in the median's unit.
fn lat_cell(s: Option<Spread>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.n == 1 => fmt_ns(s.median),
        Some(s) => {
            let (scale, unit) = unit_for(s.median);
            format!(
                "{} ({}–{}) {unit}",
                fmt_scaled(s.median / scale),
                fmt_scaled(s.min / scale),
                fmt_scaled(s.max / scale)
            )
        }
    }
}

fn ratio_cell(s: Option<Spread>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.n == 1 => format!("{:.2}x", s.median),
        Some(s) => format!("{:.2}x ({:.2}–{:.2})", s.median, s.min, s.max),
    }
}

fn rate_cell(s: Option<Spread>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.n == 1 => format!("{}/s", fmt_rate(s.median)),
        Some(s) if s.median >= 1e6 => format!(
            "{:.2} ({:.2}–{:.2}) M/s",
            s.median / 1e6,
            s.min / 1e6,
            s.max / 1e6
        ),
        Some(s) => format!(
            "{:.0} ({:.0}–{:.0}) k/s",
            s.median / 1e3,
            s.min / 1e3,
            s.max / 1e3
        ),
    }
}

fn reader_of(c: &Case) -> String {
    let wait = match c.wait {
        WaitMode::Spin => "spin",
        WaitMode::Block => "sleep",
    };
    if c.threads {
        format!("{wait}, thread")
    } else {
        format!("{wait}, process")
    }
}

/// The Markdown table for one payload size.
#[must_use]
pub fn markdown_table(all: &[Measurement], payload: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| transport | reader | p50 | p90 | p99 | p99.9 | max | p50 ÷ floor | p99 ÷ floor | msgs/s (unpaced) | msgs/s ÷ floor | msgs/s batched | batched ÷ floor |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ci in cases(all) {
        let Some(c) = CASES.get(ci) else { continue };
        let base = baseline_of(ci).unwrap_or(0);
        let lat = |f: LatFn| spread(per_round(all, payload, ci, |m| lat_of(m, f)));
        let lat_ratio = |f: LatFn| {
            if base == ci {
                None
            } else {
                spread(per_round_ratio(all, payload, ci, base, |m| lat_of(m, f)))
            }
        };
        let thr_ratio = if base == ci {
            None
        } else {
            spread(per_round_ratio(all, payload, ci, base, thru_of))
        };
        let batched_ratio = if base == ci {
            None
        } else {
            spread(per_round_ratio(all, payload, ci, base, batched_of))
        };
        let name = if c.transport == "chronicle" {
            format!("**{}**", c.label)
        } else {
            c.label.to_owned()
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            reader_of(c),
            lat_cell(lat(|l| l.p50)),
            lat_cell(lat(|l| l.p90)),
            lat_cell(lat(|l| l.p99)),
            lat_cell(lat(|l| l.p999)),
            lat_cell(lat(|l| l.max)),
            ratio_cell(lat_ratio(|l| l.p50)),
            ratio_cell(lat_ratio(|l| l.p99)),
            rate_cell(spread(per_round(all, payload, ci, thru_of))),
            ratio_cell(thr_ratio),
            rate_cell(spread(per_round(all, payload, ci, batched_of))),
            ratio_cell(batched_ratio),
        );
    }
    out
}

/// One target from the issue, checked per payload.
struct Target {
    what: &'static str,
    /// `(numerator case, denominator case)` by transport name, spinning readers.
    num: &'static str,
    den: &'static str,
    value: fn(&Measurement) -> Option<f64>,
    /// `true`: the ratio must be at most `bound`; `false`: at least.
    at_most: bool,
    bound: f64,
}

const TARGETS: [Target; 7] = [
    Target {
        what: "chronicle spin p50 ≤ 1.3x ring",
        num: "chronicle",
        den: "ring",
        value: |m| lat_of(m, |l| l.p50),
        at_most: true,
        bound: 1.3,
    },
    Target {
        what: "chronicle spin p99 ≤ 1.5x ring",
        num: "chronicle",
        den: "ring",
        value: |m| lat_of(m, |l| l.p99),
        at_most: true,
        bound: 1.5,
    },
    Target {
        what: "chronicle spin p99 ≤ iceoryx2 p99",
        num: "chronicle",
        den: "iceoryx2",
        value: |m| lat_of(m, |l| l.p99),
        at_most: true,
        bound: 1.0,
    },
    Target {
        what: "iceoryx2 p50 ≥ 3x chronicle spin",
        num: "iceoryx2",
        den: "chronicle",
        value: |m| lat_of(m, |l| l.p50),
        at_most: false,
        bound: 3.0,
    },
    Target {
        what: "unix spin p50 ≥ 5x chronicle spin",
        num: "unix",
        den: "chronicle",
        value: |m| lat_of(m, |l| l.p50),
        at_most: false,
        bound: 5.0,
    },
    Target {
        what: "chronicle throughput ≥ 0.5x ring (single records)",
        num: "chronicle",
        den: "ring",
        value: thru_of,
        at_most: false,
        bound: 0.5,
    },
    Target {
        what: "chronicle batched throughput ≥ 0.8x ring batched",
        num: "chronicle",
        den: "ring",
        value: batched_of,
        at_most: false,
        bound: 0.8,
    },
];

fn spin_case(transport: &str) -> Option<usize> {
    CASES
        .iter()
        .position(|c| c.transport == transport && c.wait == WaitMode::Spin)
}

/// Per-target verdict cells for one payload: `(per-round ratios, median, met rounds)`.
fn target_cell(all: &[Measurement], payload: usize, t: &Target) -> String {
    let (Some(num), Some(den)) = (spin_case(t.num), spin_case(t.den)) else {
        return "-".to_owned();
    };
    let ratios = per_round_ratio(all, payload, num, den, t.value);
    let ok = |r: f64| {
        if t.at_most {
            r <= t.bound
        } else {
            r >= t.bound
        }
    };
    let Some(s) = spread(ratios.clone()) else {
        return "not measured".to_owned();
    };
    let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let met = ratios.iter().filter(|&&r| ok(r)).count();
    format!(
        "{}: median {:.2}x ({}; {met}/{} rounds)",
        if ok(s.median) { "met" } else { "**missed**" },
        s.median,
        rounds.join(", "),
        ratios.len()
    )
}

/// The target table (Markdown).
#[must_use]
pub fn targets_markdown(all: &[Measurement]) -> String {
    let sizes = payloads(all);
    let mut out = String::new();
    let _ = write!(out, "| target (ratio within each round) |");
    for p in &sizes {
        let _ = write!(out, " {p} B |");
    }
    let _ = writeln!(out);
    let _ = write!(out, "|---|");
    for _ in &sizes {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out);
    for t in &TARGETS {
        let _ = write!(out, "| {} |", t.what);
        for &p in &sizes {
            let _ = write!(out, " {} |", target_cell(all, p, t));
        }
        let _ = writeln!(out);
    }
    out
}

/// The target verdicts as console text.
#[must_use]
pub fn targets_text(all: &[Measurement]) -> String {
    let mut out = String::from("targets (ratios within each round; verdict on the median):\n");
    for t in &TARGETS {
        for p in payloads(all) {
            let _ = writeln!(
                out,
                "  {:<36} {:>5} B  {}",
                t.what,
                p,
                target_cell(all, p, t)
            );
        }
    }
    out
}

fn runs_csv(all: &[Measurement]) -> String {
    let mut out = String::from(
        "round,payload,transport,label,wait,reader,touch_payload,mode,batch,measured,p50_ns,p90_ns,p99_ns,p999_ns,max_ns,msgs_per_s,seq_errors,clean\n",
    );
    for m in all {
        let Some(c) = CASES.get(m.case) else { continue };
        for r in [
            m.latency.as_ref(),
            m.throughput.as_ref(),
            m.batched.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let l = |f: LatFn| {
                r.latency
                    .as_ref()
                    .map_or(String::new(), |l| f(l).to_string())
            };
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.0},{},{}",
                m.round,
                m.payload,
                c.transport,
                c.label,
                c.wait,
                if c.threads { "thread" } else { "process" },
                r.touch_payload,
                r.mode,
                r.batch,
                r.measured,
                l(|l| l.p50),
                l(|l| l.p90),
                l(|l| l.p99),
                l(|l| l.p999),
                l(|l| l.max),
                r.throughput,
                r.seq_errors,
                r.is_clean()
            );
        }
    }
    out
}

fn percentiles_csv(all: &[Measurement]) -> String {
    let mut out = String::from("payload,transport,label,wait,percentile,latency_ns\n");
    for p in payloads(all) {
        for ci in cases(all) {
            let Some(c) = CASES.get(ci) else { continue };
            let Some(h) = chart::merged(all, p, ci) else {
                continue;
            };
            for (q, v) in chart::percentile_series(&h) {
                let _ = writeln!(
                    out,
                    "{p},{},{},{},{:.6},{v}",
                    c.transport,
                    c.label,
                    c.wait,
                    q * 100.0
                );
            }
        }
    }
    out
}

/// What each reader read of a message, for the console and the report.
#[must_use]
pub fn reader_reads(o: &Options) -> &'static str {
    if o.touch_payload {
        "the whole payload (--touch-payload)"
    } else {
        "only the 16-byte header"
    }
}

/// The results.md paragraph on what the readers read.
fn describe_reading(o: &Options) -> &'static str {
    if o.touch_payload {
        "**Readers read the whole payload** (`--touch-payload`): the harness's reader loop, \
         the same for every transport, folds every payload byte into a value the compiler \
         cannot drop, before taking the receive timestamp. Latency therefore runs to \
         \"reader has read the whole message\", and the fold's cost also shows in \
         throughput. chronicle's reader additionally verifies its CRC over the record, as \
         in production."
    } else {
        "**Readers read only the 16-byte header** (send stamp and sequence number), not the \
         rest of the payload; chronicle's reader alone also verifies a CRC over the whole \
         record, so at large payloads it is the only one that touches every cache line of \
         the message. Run with `--touch-payload` for readers that read every byte."
    }
}

fn describe_run(o: &Options) -> String {
    format!(
        "{} round(s); in each round every case runs once per payload size, back to back. \
         Latency runs: {} measured messages after {} warm-up, paced at {} msgs/s (busy-wait \
         pacing, never sleeping). Throughput runs: {} messages, unpaced. Writer pinned to \
         core {}, reader to core {}; channel capacity {} messages.",
        o.rounds,
        o.count,
        o.warmup,
        o.rate,
        o.thru_count,
        o.cores
            .map_or_else(|| "none".to_owned(), |c| c.0.to_string()),
        o.cores
            .map_or_else(|| "none".to_owned(), |c| c.1.to_string()),
        o.capacity
    )
}

/// Writes `results.md`, `runs.csv` and `percentiles.csv`.
///
/// # Errors
/// Any file that cannot be written.
pub fn write_all(
    out: &Outputs,
    o: &Options,
    before: &Machine,
    after: &Machine,
    all: &[Measurement],
    failures: &[String],
) -> Result<()> {
    let mut md = String::new();
    let _ = writeln!(md, "# chronicle next to the alternatives\n");
    let _ = writeln!(md, "Command: `{}`\n", o.command());
    let _ = writeln!(
        md,
        "Machine: {} x {}, kernel {}, {}. Run {} → {}, 1-minute load average {} → {}.\n",
        before.cpus,
        before.cpu,
        before.kernel,
        before.rustc,
        before.utc,
        after.utc,
        before.loadavg,
        after.loadavg
    );
    let _ = writeln!(md, "{}\n", describe_run(o));
    let _ = writeln!(md, "{}\n", describe_reading(o));
    let _ = writeln!(
        md,
        "Each cell is the median over rounds with the smallest and largest round in \
         parentheses. Latency is one-way, writer's `CLOCK_MONOTONIC` stamp taken just \
         before the send to the reader's reading {}, from HDR histograms. Ratio columns \
         divide by the floor **of the same round** (the bare ring for spinning readers, the \
         futex ring for sleeping ones), then take the median over rounds.\n",
        if o.touch_payload {
            "once it has read the whole message"
        } else {
            "as soon as the message is visible"
        }
    );
    for p in payloads(all) {
        let _ = writeln!(md, "## {p} B payload\n");
        md.push_str(&markdown_table(all, p));
        md.push('\n');
    }
    let _ = writeln!(md, "## Targets\n");
    md.push_str(&targets_markdown(all));
    md.push('\n');
    let _ = writeln!(
        md,
        "![latency percentile distribution]({})\n",
        out.chart
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    if !failures.is_empty() {
        let _ = writeln!(md, "## Failed or unclean runs\n");
        for f in failures {
            let _ = writeln!(md, "- {f}");
        }
    }
    std::fs::write(&out.markdown, md)
        .with_context(|| format!("writing {}", out.markdown.display()))?;
    std::fs::write(&out.runs, runs_csv(all))
        .with_context(|| format!("writing {}", out.runs.display()))?;
    std::fs::write(&out.percentiles, percentiles_csv(all))
        .with_context(|| format!("writing {}", out.percentiles.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        let s = spread(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = spread(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(spread(vec![]).is_none());
        assert!(spread(vec![f64::NAN]).is_none());
    }

    #[test]
    fn units() {
        assert_eq!(fmt_ns(262.0), "262 ns");
        assert_eq!(fmt_ns(12_400.0), "12.4 µs");
        assert_eq!(fmt_ns(1_830_000.0), "1.83 ms");
        assert_eq!(
            lat_cell(spread(vec![950.0, 900.0, 1200.0])),
            "950 (900–1200) ns"
        );
    }

    #[test]
    fn baselines_follow_wait_mode() {
        for (i, c) in CASES.iter().enumerate() {
            let b = CASES.get(baseline_of(i).unwrap()).unwrap();
            assert_eq!(b.wait, c.wait);
            assert!(b.transport.starts_with("ring"));
        }
    }
}
