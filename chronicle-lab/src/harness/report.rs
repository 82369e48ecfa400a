//! Results: the per-run report, the child's text result lines and the comparison table.
//!
//! # Child result protocol (version 1)
//!
//! The reader child writes newline-terminated lines to stdout, each starting with
//! [`LINE_PREFIX`] so they can be picked out of anything else the binary prints (a libtest
//! binary prints its own banner first):
//!
//! ```text
//! CHRONICLE-HARNESS v1 ready                 transport opened; the parent may connect and send
//! CHRONICLE-HARNESS pin none|pinned <core>|failed <core> <reason>
//! CHRONICLE-HARNESS received <n>             messages received, warm-up included
//! CHRONICLE-HARNESS seq_errors <n>           sequence-number discontinuities
//! CHRONICLE-HARNESS seq_error_first <text>   first discontinuity, if any
//! CHRONICLE-HARNESS recv_window <first_ns> <last_ns>   receive times of the first measured and last message
//! CHRONICLE-HARNESS exact_min_max <min_ns> <max_ns>    latency mode only
//! CHRONICLE-HARNESS bucket <value_ns> <count>          latency mode only, one per recorded histogram bucket
//! CHRONICLE-HARNESS done
//! ```
//!
//! The `bucket` lines carry every non-empty bucket of the child's 3-significant-digit
//! histogram, so the parent rebuilds an identical histogram and can take any quantile.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::affinity::PinOutcome;
use super::config::Mode;
use super::error::HarnessError;
use super::transport::WaitMode;

/// Prefix of every protocol line on the child's stdout.
pub const LINE_PREFIX: &str = "CHRONICLE-HARNESS ";

/// Highest latency the histogram tracks (60 s); larger samples saturate.
pub const HIST_MAX_NS: u64 = 60_000_000_000;

/// Significant decimal digits kept by the histogram.
pub const HIST_SIGFIG: u8 = 3;

/// A fresh latency histogram with the harness's bounds.
///
/// # Errors
/// Never in practice (the bounds are constants); mapped to [`HarnessError::Protocol`].
pub fn new_histogram() -> Result<Histogram<u64>, HarnessError> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).map_err(|e| HarnessError::Protocol {
        detail: format!("cannot create histogram: {e}"),
        stderr: String::new(),
    })
}

/// Latency percentiles in nanoseconds. Quantiles come from the 3-significant-digit
/// histogram (each within 0.1 % of the true sample); `min` and `max` are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Samples in the histogram (measured messages).
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl LatencyStats {
    /// Summarises `hist`, using the exact extremes when given. Quantiles are clamped
    /// into `[min, max]` (a bucket's upper edge can lie just above the exact maximum).
    #[must_use]
    pub fn from_histogram(hist: &Histogram<u64>, exact: Option<(u64, u64)>) -> Self {
        let (min, max) = exact.unwrap_or_else(|| (hist.min(), hist.max()));
        let q = |quantile: f64| hist.value_at_quantile(quantile).clamp(min, max.max(min));
        Self {
            count: hist.len(),
            min,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max,
        }
    }
}

/// Latency percentiles in ns, as `chron-cli bench` and the soak report them (the `latency_ns`
/// objects of their JSON reports).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Latency {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Latency {
        let q = |x: f64| h.value_at_quantile(x);
        Latency {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: h.max(),
        }
    }
}

/// The classic HdrHistogram percentile distribution text (as `outputPercentileDistribution`
/// prints it), values in ns: what `chron-cli bench --hist FILE` writes.
#[must_use]
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut body = String::new();
    body.push_str("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        total += v.count_since_last_iteration();
        let line = if q < 1.0 {
            format!(
                "{:12.3} {:14.12} {:10} {:14.2}",
                v.value_iterated_to() as f64,
                q,
                total,
                1.0 / (1.0 - q)
            )
        } else {
            format!(
                "{:12.3} {:14.12} {:10}",
                v.value_iterated_to() as f64,
                q,
                total
            )
        };
        body.push_str(&line);
        body.push('\n');
    }
    body.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.mean(),
        h.stdev(),
        h.max() as f64,
        h.len(),
    ));
    body
}

/// The outcome of one run of one transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunReport {
    /// Transport name.
    pub transport: String,
    /// Latency or throughput.
    pub mode: Mode,
    /// Reader wait mode.
    pub wait: WaitMode,
    /// Payload bytes per message.
    pub payload: usize,
    /// Paced rate that applied, if any.
    pub rate: Option<u64>,
    /// Messages the writer sent, warm-up included.
    pub sent: u64,
    /// Messages the reader received, warm-up included.
    pub received: u64,
    /// Messages measured (received after warm-up).
    pub measured: u64,
    /// Sequence-number discontinuities the reader saw (loss, duplication, reordering).
    pub seq_errors: u64,
    /// Description of the first discontinuity.
    pub first_seq_error: Option<String>,
    /// Latency summary ([`Mode::Latency`] only).
    pub latency: Option<LatencyStats>,
    /// The full latency histogram ([`Mode::Latency`] only).
    pub histogram: Option<Histogram<u64>>,
    /// Measured messages per second over [`window_ns`](Self::window_ns).
    pub throughput: f64,
    /// From the writer's first measured send to the reader's last receive.
    pub window_ns: u64,
    /// Worst lateness of a paced send against its schedule. A large value means the
    /// writer fell behind and latency samples around it under-count queueing delay.
    pub max_send_lag_ns: u64,
    /// Writer-side pinning.
    pub writer_pin: PinOutcome,
    /// Reader-side pinning.
    pub reader_pin: PinOutcome,
    /// The reader read every payload byte ([`RunConfig::touch_payload`](super::RunConfig::touch_payload)),
    /// not only the 16-byte header.
    pub touch_payload: bool,
    /// Messages per batch the writer sent ([`RunConfig::batch`](super::RunConfig::batch)).
    pub batch: usize,
}

impl RunReport {
    /// True when every sent message arrived exactly once and in order.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.seq_errors == 0 && self.received == self.sent
    }
}

/// What the reader child sends back, before the parent combines it with its own data.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChildResults {
    pub pin: Option<PinOutcome>,
    pub received: Option<u64>,
    pub seq_errors: Option<u64>,
    pub first_seq_error: Option<String>,
    pub recv_window: Option<(u64, u64)>,
    pub exact_min_max: Option<(u64, u64)>,
    pub buckets: Vec<(u64, u64)>,
    pub done: bool,
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl ChildResults {
    /// Renders the result lines (everything after `ready`).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let p = LINE_PREFIX;
        match &self.pin {
            None | Some(PinOutcome::NotRequested) => {
                let _ = writeln!(out, "{p}pin none");
            }
            Some(PinOutcome::Pinned(c)) => {
                let _ = writeln!(out, "{p}pin pinned {c}");
            }
            Some(PinOutcome::Failed { core, reason }) => {
                let _ = writeln!(out, "{p}pin failed {core} {}", one_line(reason));
            }
        }
        if let Some(n) = self.received {
            let _ = writeln!(out, "{p}received {n}");
        }
        if let Some(n) = self.seq_errors {
            let _ = writeln!(out, "{p}seq_errors {n}");
        }
        if let Some(e) = &self.first_seq_error {
            let _ = writeln!(out, "{p}seq_error_first {}", one_line(e));
        }
        if let Some((a, b)) = self.recv_window {
            let _ = writeln!(out, "{p}recv_window {a} {b}");
        }
        if let Some((a, b)) = self.exact_min_max {
            let _ = writeln!(out, "{p}exact_min_max {a} {b}");
        }
        for (v, c) in &self.buckets {
            let _ = writeln!(out, "{p}bucket {v} {c}");
        }
        if self.done {
            let _ = writeln!(out, "{p}done");
        }
        out
    }

    /// Folds one protocol line (prefix already stripped) into `self`.
    pub(crate) fn accept(&mut self, line: &str) -> Result<(), String> {
        fn n(tok: Option<&str>, what: &str) -> Result<u64, String> {
            tok.ok_or_else(|| format!("`{what}` is missing a number"))?
                .parse()
                .map_err(|_| format!("`{what}` has a non-numeric value"))
        }
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut toks = rest.split_ascii_whitespace();
        match key {
            "pin" => {
                self.pin = Some(match toks.next() {
                    Some("none") => PinOutcome::NotRequested,
                    Some("pinned") => PinOutcome::Pinned(
                        usize::try_from(n(toks.next(), "pin")?).map_err(|e| e.to_string())?,
                    ),
                    Some("failed") => {
                        let core =
                            usize::try_from(n(toks.next(), "pin")?).map_err(|e| e.to_string())?;
                        let reason = toks.collect::<Vec<_>>().join(" ");
                        PinOutcome::Failed { core, reason }
                    }
                    other => return Err(format!("bad pin line: {other:?}")),
                });
            }
            "received" => self.received = Some(n(toks.next(), key)?),
            "seq_errors" => self.seq_errors = Some(n(toks.next(), key)?),
            "seq_error_first" => self.first_seq_error = Some(rest.to_owned()),
            "recv_window" => self.recv_window = Some((n(toks.next(), key)?, n(toks.next(), key)?)),
            "exact_min_max" => {
                self.exact_min_max = Some((n(toks.next(), key)?, n(toks.next(), key)?));
            }
            "bucket" => self
                .buckets
                .push((n(toks.next(), key)?, n(toks.next(), key)?)),
            "done" => self.done = true,
            // Unknown keys from a newer child are ignored.
            _ => {}
        }
        Ok(())
    }

    /// Rebuilds the histogram from the bucket lines.
    pub(crate) fn histogram(&self) -> Result<Histogram<u64>, HarnessError> {
        let mut h = new_histogram()?;
        for &(v, c) in &self.buckets {
            h.record_n(v, c).map_err(|e| HarnessError::Protocol {
                detail: format!("bucket {v} x{c} out of range: {e:?}"),
                stderr: String::new(),
            })?;
        }
        Ok(h)
    }
}

/// Formats a message rate compactly (`1.23M`, `456.7k`).
#[must_use]
pub fn fmt_rate(rate: f64) -> String {
    if !rate.is_finite() || rate <= 0.0 {
        "-".to_owned()
    } else if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 && num.is_finite() && den.is_finite() {
        format!("{:.2}x", num / den)
    } else {
        "-".to_owned()
    }
}

/// Renders `reports` as an aligned text table. Latency figures are in nanoseconds.
///
/// Every row also shows ratios against the first transport in `baselines` that has a
/// report with the same mode, wait mode, payload, rate and
/// [`touch_payload`](RunReport::touch_payload) setting (e.g. `["ring", "ring-futex"]`:
/// spin rows compare with `ring`, block rows with `ring-futex`): `p50 x` and
/// `p99 x` are this row's percentile divided by the baseline's (1.00x = as fast as the
/// baseline, larger = slower), `rate x` is this row's throughput divided by the
/// baseline's (smaller = slower).
#[must_use]
pub fn format_table(reports: &[RunReport], baselines: &[&str]) -> String {
    let header = [
        "transport",
        "mode",
        "wait",
        "payload",
        "count",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "msgs/s",
        "p50 x",
        "p99 x",
        "rate x",
        "notes",
    ];
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(reports.len());
    for r in reports {
        let base = baselines.iter().find_map(|b| {
            reports.iter().find(|o| {
                o.transport == *b
                    && o.mode == r.mode
                    && o.wait == r.wait
                    && o.payload == r.payload
                    && o.rate == r.rate
                    && o.touch_payload == r.touch_payload
                    && o.batch == r.batch
            })
        });
        let mode = match (r.mode, r.rate) {
            (Mode::Latency, Some(rate)) => format!("lat@{}", fmt_rate(rate as f64)),
            (Mode::Latency, None) => "lat@max".to_owned(),
            (Mode::Throughput, _) if r.batch > 1 => format!("thru x{}", r.batch),
            (Mode::Throughput, _) => "thru".to_owned(),
        };
        let lat = |f: fn(&LatencyStats) -> u64| {
            r.latency
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| f(l).to_string())
        };
        let lat_ratio = |f: fn(&LatencyStats) -> u64| match (
            r.latency.as_ref(),
            base.and_then(|b| b.latency.as_ref()),
        ) {
            (Some(l), Some(b)) => ratio(f(l) as f64, f(b) as f64),
            _ => "-".to_owned(),
        };
        let mut notes = Vec::new();
        if !r.is_clean() {
            notes.push(format!(
                "LOST/REORDERED: recv {}/{} seq_err {}",
                r.received, r.sent, r.seq_errors
            ));
        }
        if let PinOutcome::Failed { core, .. } = r.writer_pin {
            notes.push(format!("writer unpinned (core {core} refused)"));
        }
        if let PinOutcome::Failed { core, .. } = r.reader_pin {
            notes.push(format!("reader unpinned (core {core} refused)"));
        }
        if r.touch_payload {
            notes.push("reader read whole payload".to_owned());
        }
        if r.rate.is_some() && r.max_send_lag_ns > 100_000 {
            notes.push(format!("send lag max {}us", r.max_send_lag_ns / 1000));
        }
        rows.push(vec![
            r.transport.clone(),
            mode,
            r.wait.to_string(),
            r.payload.to_string(),
            r.measured.to_string(),
            lat(|l| l.p50),
            lat(|l| l.p90),
            lat(|l| l.p99),
            lat(|l| l.p999),
            lat(|l| l.max),
            fmt_rate(r.throughput),
            lat_ratio(|l| l.p50),
            lat_ratio(|l| l.p99),
            base.map_or_else(|| "-".to_owned(), |b| ratio(r.throughput, b.throughput)),
            notes.join("; "),
        ]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            // Text columns left-aligned, numbers right-aligned; notes last, unpadded.
            let _ = match i {
                0..=2 => write!(line, "{cell:<w$}  "),
                14 => write!(line, "{cell}"),
                _ => write!(line, "{cell:>w$}  "),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&mut header.iter().copied());
    for row in &rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_results_round_trip() {
        let mut h = new_histogram().unwrap();
        for v in [100, 150, 150, 2000, 1_000_000] {
            h.record(v).unwrap();
        }
        let res = ChildResults {
            pin: Some(PinOutcome::Failed {
                core: 3,
                reason: "Invalid argument\n(os error 22)".to_owned(),
            }),
            received: Some(5),
            seq_errors: Some(1),
            first_seq_error: Some("expected 2 got 3 at 2".to_owned()),
            recv_window: Some((10, 20)),
            exact_min_max: Some((100, 1_000_000)),
            buckets: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
                .collect(),
            done: true,
        };
        let mut back = ChildResults::default();
        for line in res.encode().lines() {
            back.accept(line.strip_prefix(LINE_PREFIX).unwrap())
                .unwrap();
        }
        assert!(back.done);
        assert_eq!(back.received, Some(5));
        assert_eq!(back.seq_errors, Some(1));
        assert_eq!(
            back.first_seq_error.as_deref(),
            Some("expected 2 got 3 at 2")
        );
        assert_eq!(back.recv_window, Some((10, 20)));
        assert!(matches!(back.pin, Some(PinOutcome::Failed { core: 3, .. })));
        let h2 = back.histogram().unwrap();
        assert_eq!(h2.len(), h.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(h2.value_at_quantile(q), h.value_at_quantile(q));
        }
    }

    #[test]
    fn table_has_ratios_against_baseline() {
        let mut h = new_histogram().unwrap();
        h.record(100).unwrap();
        let base = RunReport {
            transport: "ring".into(),
            mode: Mode::Latency,
            wait: WaitMode::Spin,
            payload: 64,
            rate: Some(1000),
            sent: 1,
            received: 1,
            measured: 1,
            seq_errors: 0,
            first_seq_error: None,
            latency: Some(LatencyStats::from_histogram(&h, None)),
            histogram: Some(h.clone()),
            throughput: 1000.0,
            window_ns: 1,
            max_send_lag_ns: 0,
            writer_pin: PinOutcome::NotRequested,
            reader_pin: PinOutcome::NotRequested,
            touch_payload: false,
            batch: 1,
        };
        let mut other = base.clone();
        other.transport = "pipe".into();
        let mut h3 = new_histogram().unwrap();
        h3.record(300).unwrap();
        other.latency = Some(LatencyStats::from_histogram(&h3, None));
        let mut touched = other.clone();
        touched.transport = "unix".into();
        touched.touch_payload = true;
        let table = format_table(&[base, other, touched], &["ring"]);
        let pipe_line = table.lines().find(|l| l.starts_with("pipe")).unwrap();
        assert!(pipe_line.contains("3.00x"), "{table}");
        assert!(!pipe_line.contains("whole payload"), "{table}");
        // No baseline read whole payloads, so the touched row gets no ratios.
        let unix_line = table.lines().find(|l| l.starts_with("unix")).unwrap();
        assert!(!unix_line.contains("0x"), "{table}");
        assert!(unix_line.ends_with("reader read whole payload"), "{table}");
        assert_eq!(table.lines().count(), 4);
    }

    #[test]
    fn rates_format_compactly() {
        assert_eq!(fmt_rate(1_500_000.0), "1.50M");
        assert_eq!(fmt_rate(100_000.0), "100.0k");
        assert_eq!(fmt_rate(0.0), "-");
    }
}
