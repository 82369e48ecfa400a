//! Prometheus text exposition (format 0.0.4) and the tiny HTTP/1.1 server that answers
//! `GET /metrics`, shared by `chron-cli metrics`, `chron-cli router --metrics-listen` and
//! `chron-bridge --metrics-listen`.
//!
//! An [`Exposition`] collects samples family by family in any order (a caller walks queue by
//! queue) and renders each family once, with its `# HELP` and `# TYPE` lines, as the format
//! requires. Label values and help texts are escaped here and nowhere else. Names are the
//! caller's: they follow Prometheus conventions (units in the name, `_total` on counters).
//!
//! [`logs`] sets up the binaries' structured logs (`tracing`, human or JSON, filtered by
//! `CHRONICLE_LOG`): the other half of what an operator watches, kept next to the metrics so
//! both binaries share one setup. [`config`] reads their TOML config files (`--config`) with
//! errors that name the file and the key, for the same reason: one walker, not one per binary. [`text`] renders aligned tables and
//! human units for the binaries' and the lab's reports.

pub mod config;
pub mod logs;
pub mod text;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// What can go wrong serving metrics.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The listening address could not be bound (taken, not local, not an address).
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// The listening socket failed (not one client: those are dropped and forgotten).
    Accept { source: std::io::Error },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Bind { addr, source } => {
                write!(f, "cannot listen for metrics on {addr:?}: {source}")
            }
            Error::Accept { source } => write!(f, "the metrics listener failed: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Accept { source } => Some(source),
        }
    }
}

/// Binds the metrics listener on `addr` (`HOST:PORT`; port 0 picks a free one).
pub fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|source| Error::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Nanoseconds in seconds, for the `_seconds` metrics: whole seconds and the fraction are
/// converted apart, so that a timestamp keeps its milliseconds (a `u64` of nanoseconds since
/// the epoch is beyond `f64`'s exact integers) and round values print round.
pub fn seconds(ns: u64) -> f64 {
    (ns / 1_000_000_000) as f64 + (ns % 1_000_000_000) as f64 / 1e9
}

/// The kind of a metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: integers stay exact (a `u64` counter above 2^53 would not survive `f64`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(u64::from(v))
    }
}

fn write_value(out: &mut String, v: Value) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) if f.is_nan() => out.push_str("NaN"),
        Value::Float(f) if f.is_infinite() => out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" }),
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes a `# HELP` text: backslash and line feed.
fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().chain(extra.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label(out, v);
        out.push('"');
    }
    out.push('}');
}

/// One metric family: its header and the sample lines gathered so far.
#[derive(Debug)]
pub struct Family {
    name: String,
    kind: Kind,
    help: String,
    /// When it was first named: families render in that order.
    order: usize,
    lines: String,
}

impl Family {
    fn line(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        v: Value,
    ) {
        self.lines.push_str(&self.name);
        self.lines.push_str(suffix);
        write_labels(&mut self.lines, labels, extra);
        self.lines.push(' ');
        write_value(&mut self.lines, v);
        self.lines.push('\n');
    }

    /// Adds a counter or gauge sample.
    pub fn sample(&mut self, labels: &[(&str, &str)], v: impl Into<Value>) -> &mut Family {
        self.line("", labels, None, v.into());
        self
    }

    /// Adds a histogram: `buckets` are (upper bound, observations at or below it), ascending;
    /// the `+Inf` bucket is `count`.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Family {
        let mut le = String::new();
        for &(bound, n) in buckets {
            le.clear();
            write_value(&mut le, Value::Float(bound));
            self.line("_bucket", labels, Some(("le", &le)), Value::Int(n));
        }
        self.line("_bucket", labels, Some(("le", "+Inf")), Value::Int(count));
        self.line("_sum", labels, None, Value::Float(sum));
        self.line("_count", labels, None, Value::Int(count));
        self
    }
}

/// A scrape's worth of metric families, rendered in the order they were first named.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// The family `name`, created with `kind` and `help` the first time it is named.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Family {
        let order = self.families.len();
        self.families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                name: name.to_string(),
                kind,
                help: help.to_string(),
                order,
                lines: String::new(),
            })
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut families: Vec<&Family> = self.families.values().collect();
        families.sort_by_key(|f| f.order);
        let mut out = String::new();
        for f in families {
            let _ = write!(out, "# HELP {} ", f.name);
            escape_help(&mut out, &f.help);
            let _ = writeln!(out, "\n# TYPE {} {}", f.name, f.kind.name());
            out.push_str(&f.lines);
        }
        out
    }
}

/// Largest request head read before the connection is answered 400.
const MAX_REQUEST: usize = 8 << 10;
/// A client that sends nothing (or reads nothing) for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` forever, one connection at a time (`Connection: close`),
/// calling `render` for each scrape. A misbehaving client costs at most [`IO_TIMEOUT`] and is
/// otherwise ignored; only a failing `accept` ends the loop.
pub fn serve(listener: &TcpListener, render: impl Fn() -> String) -> Result<(), Error> {
    loop {
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(source) => return Err(Error::Accept { source }),
        };
        let _ = answer(stream, &render);
    }
}

/// Reads one request head and writes one response.
fn answer(mut s: TcpStream, render: &impl Fn() -> String) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            return respond(
                &mut s,
                "400 Bad Request",
                "text/plain",
                "request too large\n",
                true,
            );
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render();
            respond(&mut s, "200 OK", CONTENT_TYPE, &body, method == "GET")
        }
        ("GET" | "HEAD", "/") => respond(
            &mut s,
            "200 OK",
            "text/plain",
            "chronicle metrics: GET /metrics\n",
            method == "GET",
        ),
        ("GET" | "HEAD", _) => respond(&mut s, "404 Not Found", "text/plain", "not found\n", true),
        _ => respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            true,
        ),
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if with_body {
        s.write_all(body.as_bytes())?;
    }
    s.flush()
}

/// Cumulative bucket counts of an hdrhistogram at fixed upper bounds (in the histogram's unit),
/// its approximate sum (from its mean: hdrhistogram keeps values to its precision, not a sum)
/// and its count.
pub fn hdr_buckets(
    h: &hdrhistogram::Histogram<u64>,
    bounds: &[u64],
) -> (Vec<(u64, u64)>, f64, u64) {
    let buckets = bounds.iter().map(|&b| (b, h.count_between(0, b))).collect();
    (buckets, h.mean() * h.len() as f64, h.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_group_their_samples_and_escape() {
        let mut e = Exposition::new();
        e.family("a_total", Kind::Counter, "A count.\nSecond \\ line.")
            .sample(&[("q", "x\"y\\z\nw")], 3u64);
        e.family("b_bytes", Kind::Gauge, "B.").sample(&[], 1.5);
        e.family("a_total", Kind::Counter, "ignored")
            .sample(&[("q", "p")], u64::MAX);
        assert_eq!(
            e.render(),
            "# HELP a_total A count.\\nSecond \\\\ line.\n# TYPE a_total counter\n\
             a_total{q=\"x\\\"y\\\\z\\nw\"} 3\na_total{q=\"p\"} 18446744073709551615\n\
             # HELP b_bytes B.\n# TYPE b_bytes gauge\nb_bytes 1.5\n"
        );
    }

    #[test]
    fn histograms_have_buckets_sum_and_count() {
        let mut e = Exposition::new();
        e.family("t_seconds", Kind::Histogram, "T.").histogram(
            &[("s", "1")],
            &[(0.001, 2), (0.01, 5)],
            0.25,
            7,
        );
        assert_eq!(
            e.render(),
            "# HELP t_seconds T.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{s=\"1\",le=\"0.001\"} 2\nt_seconds_bucket{s=\"1\",le=\"0.01\"} 5\n\
             t_seconds_bucket{s=\"1\",le=\"+Inf\"} 7\nt_seconds_sum{s=\"1\"} 0.25\n\
             t_seconds_count{s=\"1\"} 7\n"
        );
    }

    #[test]
    fn special_floats() {
        let mut s = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-7] {
            write_value(&mut s, Value::Float(v));
            s.push(' ');
        }
        assert_eq!(s, "NaN +Inf -Inf 0.0000001 ");
    }

    #[test]
    fn seconds_print_round() {
        let s = |ns| {
            let mut o = String::new();
            write_value(&mut o, Value::Float(seconds(ns)));
            o
        };
        assert_eq!(s(1_700_000_000_009_000_000), "1700000000.009");
        assert_eq!(s(5_000), "0.000005");
        assert_eq!(s(6_000_000), "0.006");
        assert_eq!(s(0), "0");
    }

    #[test]
    fn hdr_buckets_are_cumulative() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 2).unwrap();
        for v in [500, 1_500, 1_500, 90_000] {
            h.record(v).unwrap();
        }
        let (b, sum, n) = hdr_buckets(&h, &[1_000, 10_000, 100_000]);
        assert_eq!(b, vec![(1_000, 1), (10_000, 3), (100_000, 4)]);
        assert_eq!(n, 4);
        assert!((sum - 93_500.0).abs() < 93_500.0 * 0.02, "{sum}");
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let l = bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || serve(&l, || "m 1\n".to_string()));
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        assert!(get("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A client whose head grows past the limit is answered 400 and forgotten; serving goes
        // on. (Exactly one byte over, so the server has read everything when it answers.)
        let start = "GET /metrics HTTP/1.1\r\nX: ";
        let big = format!("{start}{}", "a".repeat(MAX_REQUEST + 1 - start.len()));
        assert!(get(&big).starts_with("HTTP/1.1 400"));
        assert!(get("GET /metrics HTTP/1.1\r\n\r\n").ends_with("m 1\n"));
    }

    #[test]
    fn a_taken_address_is_a_bind_error() {
        let l = bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let e = bind(&addr).unwrap_err();
        assert!(matches!(e, Error::Bind { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("cannot listen for metrics on"),
            "{e}"
        );
    }
}
