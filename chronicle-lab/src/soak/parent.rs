//! `bench --soak`: a long run of real processes on queues with small segments and retention.
//!
//! Processes (this executable re-run with hidden roles, see [`crate::soak`]): writers `w0` (queue
//! `q0`) and `w1` (queue `q1`), each paced at `--rate`; readers `r1`..`r4` on `q0` (`r4` stalls
//! on purpose unless `--slow-stall-ms 0`); `fanin`, a live timestamp merge of `q0` and `q1`.
//! Every reader and the fan-in check every record. Each interval the parent prints records
//! written, reader lags, latency percentiles of that interval, the writers' slowest append, the
//! RSS of every process (read from `/proc/PID/status`) and the queues' disk use. At the end it
//! stops the writers (each appends an end record with its count), waits for the readers and the
//! fan-in to drain, and prints totals, latency over the whole run, RSS per process and a
//! verdict; the exit status is 1 unless the verdict is PASS.
//!
//! RSS check: a process passes when its RSS at the end is at most `--rss-slack` plus two
//! segments above its RSS after the first interval (the warm-up). Mapped queue pages count in
//! RSS (as `RssShmem` on tmpfs, `RssFile` on disk): a writer maps its current segment and the
//! next, pre-faulted one, a reader the segment it reads, so RSS plateaus once retention deletes
//! old segments and the processes unmap them; growth beyond that is a leak.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use chronicle_metrics::text::{bytes, duration_ns, table};

use super::{MIN_SIZE, add_buckets, histogram};
use crate::harness::Latency;
use crate::procs::{Proc, role_command};

/// Settings of a soak run (from `bench --soak ...`).
#[derive(Debug, Clone)]
pub struct Opts {
    pub secs: u64,
    pub rate: u64,
    pub size: usize,
    pub dir: Option<PathBuf>,
    pub interval: u64,
    pub segment_size: u64,
    pub retain_segments: u64,
    pub slow_stall_ms: u64,
    pub rss_slack: u64,
    pub keep: bool,
    pub json: bool,
}

const READERS: [&str; 4] = ["r1", "r2", "r3", "r4"];
const SLOW: &str = "r4";
/// How long children get to open their queues and to drain at the end.
const GRACE: Duration = Duration::from_secs(60);

/// Starts this executable with `args` (stdin a pipe: the "go" line); its stdout lines go to
/// `tx` labelled `label`.
fn spawn(label: &str, args: &[String], tx: &mpsc::Sender<(String, String)>) -> Result<Proc> {
    let mut cmd = role_command(args)?;
    cmd.stdin(Stdio::piped());
    Proc::spawn(label, cmd, tx).with_context(|| format!("cannot start the soak {label}"))
}

/// Resident memory of a process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Rss {
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    shmem_kib: u64,
}

fn rss_of(pid: u32) -> Option<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut r = Rss::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let kib = v.trim().trim_end_matches("kB").trim().parse::<u64>().ok();
        match (k, kib) {
            ("VmRSS", Some(n)) => r.rss_kib = n,
            ("RssAnon", Some(n)) => r.anon_kib = n,
            ("RssFile", Some(n)) => r.file_kib = n,
            ("RssShmem", Some(n)) => r.shmem_kib = n,
            _ => {}
        }
    }
    Some(r)
}

/// RSS samples of one process over the run.
#[derive(Debug, Clone, Default, Serialize)]
struct RssTrack {
    process: String,
    pid: u32,
    start: Rss,
    after_warmup: Option<Rss>,
    peak_kib: u64,
    end: Rss,
    growth_kib: i64,
    within_limit: bool,
}

impl RssTrack {
    fn sample(&mut self, warm: bool) {
        if let Some(r) = rss_of(self.pid) {
            if warm && self.after_warmup.is_none() {
                self.after_warmup = Some(r);
            }
            self.peak_kib = self.peak_kib.max(r.rss_kib);
            self.end = r;
        }
    }
}

/// What the parent knows of one child, from its JSON lines.
#[derive(Debug)]
struct Role {
    ready: bool,
    last: Value,
    fin: Option<Value>,
    interval: Histogram<u64>,
    run: Histogram<u64>,
}

impl Role {
    fn new() -> Result<Role> {
        Ok(Role {
            ready: false,
            last: Value::Null,
            fin: None,
            interval: histogram()?,
            run: histogram()?,
        })
    }

    fn absorb(&mut self, v: Value) {
        let key = if v.get("append_ns").is_some() {
            "append_ns"
        } else {
            "latency_ns"
        };
        if let Some(b) = v.get(key) {
            add_buckets(&mut self.interval, b);
            add_buckets(&mut self.run, b);
        }
        if v.get("final").and_then(Value::as_bool) == Some(true) {
            self.fin = Some(v.clone());
        }
        if v.get("ready").is_some() {
            self.ready = true;
        } else {
            self.last = v;
        }
    }

    fn n(&self, k: &str) -> u64 {
        let v = self.fin.as_ref().unwrap_or(&self.last);
        v.get(k).and_then(Value::as_u64).unwrap_or(0)
    }

    /// The `first_problem` of the role's final report, if it has one.
    fn first_problem(&self) -> Option<String> {
        self.fin
            .as_ref()?
            .get("first_problem")?
            .as_str()
            .map(String::from)
    }
}

/// One interval of the run.
#[derive(Debug, Serialize)]
struct Interval {
    t_secs: u64,
    written: u64,
    written_per_s: u64,
    lag: BTreeMap<String, u64>,
    readers_latency_ns: Latency,
    slow_reader_latency_ns: Option<Latency>,
    fanin_latency_ns: Latency,
    append_max_ns: u64,
    rss_kib: BTreeMap<String, u64>,
    disk_bytes: u64,
}

#[derive(Debug, Serialize)]
struct ReaderSummary {
    name: String,
    slow: bool,
    records: u64,
    losses: u64,
    duplicates: u64,
    corrupt: u64,
    end_total: Option<u64>,
    first_problem: Option<String>,
    latency_ns: Latency,
}

#[derive(Debug, Serialize)]
struct WriterSummary {
    name: String,
    records: u64,
    behind_schedule: u64,
    append_ns: Latency,
}

#[derive(Debug, Serialize)]
struct FanInSummary {
    records: u64,
    per_source: BTreeMap<String, u64>,
    losses: u64,
    duplicates: u64,
    corrupt: u64,
    order_violations: u64,
    late: u64,
    forced: u64,
    first_problem: Option<String>,
    latency_ns: Latency,
}

#[derive(Debug, Serialize)]
struct Summary {
    mode: &'static str,
    secs: f64,
    rate: u64,
    size: usize,
    segment_size: u64,
    retain_bytes: u64,
    interval_secs: u64,
    interrupted: bool,
    records: u64,
    losses: u64,
    writers: Vec<WriterSummary>,
    readers: Vec<ReaderSummary>,
    fanin: FanInSummary,
    latency_ns: Latency,
    rss_limit_growth_kib: u64,
    rss: Vec<RssTrack>,
    disk_max_bytes: u64,
    intervals: Vec<Interval>,
    problems: Vec<String>,
    verdict: &'static str,
}

fn queue_bytes(q: &Path) -> u64 {
    std::fs::read_dir(q.join("segments"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Runs the soak.
pub fn run(o: &Opts, stop_requested: fn() -> bool) -> Result<u8> {
    if o.size < MIN_SIZE {
        bail!(
            "--size {}: the soak payload needs at least {MIN_SIZE} bytes",
            o.size
        );
    }
    if o.rate == 0 || o.secs == 0 || o.interval == 0 {
        bail!("--rate, --secs and --interval must be above 0 for a soak run");
    }
    if o.retain_segments < 2 {
        bail!("--retain-segments must be at least 2");
    }
    let base = match &o.dir {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let run_dir = base.join(format!("chronicle-soak-{}", std::process::id()));
    std::fs::create_dir(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    match soak(o, &run_dir, stop_requested) {
        Ok(0) if !o.keep => {
            let _ = std::fs::remove_dir_all(&run_dir);
            Ok(0)
        }
        Ok(code) => Ok(code),
        // One line: the error, then where its queues are (for `inspect` and `doctor`).
        Err(e) => Err(anyhow!("{e:#} (queues left in {})", run_dir.display())),
    }
}

fn soak(o: &Opts, run_dir: &Path, stop_requested: fn() -> bool) -> Result<u8> {
    let say = |line: &str| {
        if o.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let retain = o.segment_size.saturating_mul(o.retain_segments);
    let q0 = run_dir.join("q0");
    let q1 = run_dir.join("q1");
    let doorbell = run_dir.join("doorbell");
    let p = |x: &Path| x.to_string_lossy().to_string();
    let interval_ms = (o.interval * 1000).to_string();
    let (tx, rx) = mpsc::channel::<(String, String)>();
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut procs: Vec<Proc> = Vec::new();

    // Writers first (they create the queues), then readers and the fan-in, then "go".
    for (i, (label, q)) in [("w0", &q0), ("w1", &q1)].into_iter().enumerate() {
        let args = vec![
            s("soak-writer"),
            s("--queue"),
            p(q),
            s("--name"),
            if i == 0 { s("q0") } else { s("q1") },
            s("--tag"),
            i.to_string(),
            s("--rate"),
            o.rate.to_string(),
            s("--size"),
            o.size.to_string(),
            s("--segment-size"),
            o.segment_size.to_string(),
            s("--retain-bytes"),
            retain.to_string(),
            s("--doorbell"),
            p(&doorbell),
            s("--interval-ms"),
            interval_ms.clone(),
        ];
        procs.push(spawn(label, &args, &tx)?);
        roles.insert(label.to_string(), Role::new()?);
    }
    wait_ready(&rx, &mut procs, &mut roles)?;
    for name in READERS {
        let mut args = vec![
            s("soak-reader"),
            s("--queue"),
            p(&q0),
            s("--name"),
            s(name),
            s("--tag"),
            s("0"),
            s("--size"),
            o.size.to_string(),
            s("--interval-ms"),
            interval_ms.clone(),
        ];
        if name == SLOW && o.slow_stall_ms > 0 {
            args.extend([s("--stall-ms"), o.slow_stall_ms.to_string()]);
        }
        procs.push(spawn(name, &args, &tx)?);
        roles.insert(name.to_string(), Role::new()?);
    }
    procs.push(spawn(
        "fanin",
        &[
            s("soak-fanin"),
            s("--source"),
            format!("q0=0={}", p(&q0)),
            s("--source"),
            format!("q1=1={}", p(&q1)),
            s("--doorbell"),
            p(&doorbell),
            s("--size"),
            o.size.to_string(),
            s("--interval-ms"),
            interval_ms.clone(),
        ],
        &tx,
    )?);
    roles.insert(s("fanin"), Role::new()?);
    wait_ready(&rx, &mut procs, &mut roles)?;

    let mut rss: Vec<RssTrack> = procs
        .iter()
        .map(|pr| RssTrack {
            process: pr.label.clone(),
            pid: pr.pid,
            ..RssTrack::default()
        })
        .chain(std::iter::once(RssTrack {
            process: s("soak"),
            pid: std::process::id(),
            ..RssTrack::default()
        }))
        .collect();
    for r in &mut rss {
        r.sample(false);
        r.start = r.end;
    }
    let slow_note = if o.slow_stall_ms > 0 {
        format!(" ({SLOW} stalls {} ms every second)", o.slow_stall_ms)
    } else {
        String::new()
    };
    say(&format!(
        "soak: {} s, writers w0 (q0) and w1 (q1) at {} msgs/s each, {} B payload, segments {}, \
         retention {} per queue, in {}",
        o.secs,
        o.rate,
        o.size,
        bytes(o.segment_size),
        bytes(retain),
        run_dir.display()
    ));
    say(&format!(
        "soak: readers {} on q0{slow_note}; fanin merges q0+q1; pids {}",
        READERS.join(" "),
        procs
            .iter()
            .map(|pr| format!("{}={}", pr.label, pr.pid))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    say(&format!(
        "soak: columns: t, written (both queues), lag of {} (records), read latency of r1-r3 \
         this interval, fan-in latency, slowest append, RSS MiB of {}, queue disk use",
        READERS.join("/"),
        rss.iter()
            .map(|r| r.process.as_str())
            .collect::<Vec<_>>()
            .join("/")
    ));
    for pr in &mut procs {
        pr.send_line("go")
            .with_context(|| format!("cannot start the {}", pr.label))?;
    }

    let start = Instant::now();
    let interval = Duration::from_secs(o.interval);
    let run_for = Duration::from_secs(o.secs);
    // Children report on their own interval clocks; the parent summarizes a little after each
    // boundary so their lines have arrived.
    let settle = Duration::from_millis(200);
    let mut next_line = start + interval + settle;
    let mut intervals = Vec::new();
    let mut prev_written = 0u64;
    let mut disk_max = 0u64;
    let mut interrupted = false;
    let mut k = 0u64;
    loop {
        while let Ok((label, v)) = rx.recv_timeout(Duration::from_millis(20)) {
            absorb(&mut roles, &label, &v);
            if Instant::now() >= next_line {
                break;
            }
        }
        all_running(&mut procs, "during the run", "; stopped the others")?;
        if stop_requested() {
            interrupted = true;
            break;
        }
        let now = Instant::now();
        if now >= next_line {
            k += 1;
            next_line += interval;
            for r in &mut rss {
                r.sample(true);
            }
            let disk = queue_bytes(&q0) + queue_bytes(&q1);
            disk_max = disk_max.max(disk);
            let iv = interval_line(o, k, &mut roles, &rss, disk, &mut prev_written)?;
            say(&format_interval(&iv, &rss));
            intervals.push(iv);
        }
        if now.duration_since(start) >= run_for {
            break;
        }
    }

    // Stop the writers; each appends its end record and closes. The readers and the fan-in
    // drain up to the end records and exit.
    say(&format!(
        "soak: {}stopping the writers; readers and fan-in drain",
        if interrupted { "interrupted; " } else { "" }
    ));
    let elapsed = start.elapsed();
    for pr in procs.iter_mut().filter(|pr| pr.label.starts_with('w')) {
        pr.signal(libc::SIGTERM);
    }
    let until = Instant::now() + GRACE;
    let mut problems = Vec::new();
    while procs.iter_mut().any(|pr| !pr.exited()) {
        if Instant::now() > until {
            for pr in procs.iter().filter(|pr| pr.exit.is_none()) {
                problems.push(format!(
                    "{} did not finish within {} s of the stop (killed)",
                    pr.label,
                    GRACE.as_secs()
                ));
            }
            break;
        }
        while let Ok((label, v)) = rx.recv_timeout(Duration::from_millis(20)) {
            absorb(&mut roles, &label, &v);
        }
    }
    for pr in &mut procs {
        if let Some(st) = pr.exit.filter(|st| !st.success()) {
            problems.push(format!("{} exited with {st}", pr.label));
        }
    }
    drop(procs);
    drop(tx);
    // The pipe readers end with the children; take every last line.
    while let Ok((label, v)) = rx.recv_timeout(Duration::from_secs(5)) {
        absorb(&mut roles, &label, &v);
    }

    let summary = summarize(
        o,
        &roles,
        rss,
        intervals,
        disk_max,
        elapsed,
        interrupted,
        problems,
    )?;
    if o.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
        out.flush()?;
    } else {
        print_summary(&summary);
    }
    if summary.verdict == "PASS" {
        if o.keep {
            say(&format!("soak: queues kept in {}", run_dir.display()));
        }
        Ok(0)
    } else {
        eprintln!(
            "chron-cli: soak failed: {} (queues left in {})",
            summary.problems.join("; "),
            run_dir.display()
        );
        Ok(1)
    }
}

/// Parses a role's JSON line and adds it to what the parent knows of that role.
fn absorb(roles: &mut BTreeMap<String, Role>, label: &str, line: &str) {
    if let (Some(r), Ok(v)) = (roles.get_mut(label), serde_json::from_str::<Value>(line)) {
        r.absorb(v);
    }
}

/// Polls every role and fails naming the first one that exited: "the soak LABEL (pid N)
/// exited `when` (STATUS)`then`".
fn all_running(procs: &mut [Proc], when: &str, then: &str) -> Result<()> {
    procs.iter_mut().for_each(|pr| {
        pr.exited();
    });
    if let Some(pr) = procs.iter().find(|pr| pr.exit.is_some()) {
        bail!(
            "the soak {} (pid {}) exited {when} ({}){then}",
            pr.label,
            pr.pid,
            pr.exit
                .map_or_else(|| s("unknown status"), |st| st.to_string())
        );
    }
    Ok(())
}

/// Waits until every running role printed its ready line.
fn wait_ready(
    rx: &mpsc::Receiver<(String, String)>,
    procs: &mut [Proc],
    roles: &mut BTreeMap<String, Role>,
) -> Result<()> {
    let until = Instant::now() + GRACE;
    loop {
        let waiting: Vec<&str> = procs
            .iter()
            .map(|pr| pr.label.as_str())
            .filter(|l| !roles.get(*l).is_some_and(|r| r.ready))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > until {
            bail!(
                "the soak {} did not start within {GRACE:?}",
                waiting.join(", ")
            );
        }
        all_running(procs, "while starting", "")?;
        if let Ok((label, v)) = rx.recv_timeout(Duration::from_millis(20)) {
            absorb(roles, &label, &v);
        }
    }
}

fn lat_of(h: &Histogram<u64>) -> Latency {
    Latency::of(h)
}

fn interval_line(
    o: &Opts,
    k: u64,
    roles: &mut BTreeMap<String, Role>,
    rss: &[RssTrack],
    disk: u64,
    prev_written: &mut u64,
) -> Result<Interval> {
    let written: u64 = ["w0", "w1"]
        .iter()
        .filter_map(|w| roles.get(*w))
        .map(|r| r.n("written"))
        .sum();
    let mut fast = histogram()?;
    let mut appends = 0u64;
    for (label, r) in roles.iter() {
        if label.starts_with('r') && !(label == SLOW && o.slow_stall_ms > 0) {
            let _ = fast.add(&r.interval);
        }
        if label.starts_with('w') {
            appends = appends.max(r.interval.max());
        }
    }
    let slow = (o.slow_stall_ms > 0)
        .then(|| roles.get(SLOW).map(|r| lat_of(&r.interval)))
        .flatten();
    let fanin = roles
        .get("fanin")
        .map(|r| lat_of(&r.interval))
        .unwrap_or_default();
    let lag = READERS
        .iter()
        .map(|n| (n.to_string(), roles.get(*n).map_or(0, |r| r.n("lag"))))
        .collect();
    for r in roles.values_mut() {
        r.interval.reset();
    }
    let iv = Interval {
        t_secs: k * o.interval,
        written,
        written_per_s: written.saturating_sub(*prev_written) / o.interval.max(1),
        lag,
        readers_latency_ns: lat_of(&fast),
        slow_reader_latency_ns: slow,
        fanin_latency_ns: fanin,
        append_max_ns: appends,
        rss_kib: rss
            .iter()
            .map(|r| (r.process.clone(), r.end.rss_kib))
            .collect(),
        disk_bytes: disk,
    };
    *prev_written = written;
    Ok(iv)
}

fn format_interval(iv: &Interval, order: &[RssTrack]) -> String {
    let l = &iv.readers_latency_ns;
    let f = &iv.fanin_latency_ns;
    format!(
        "{:>5}s  written {:>10} ({:>6}/s)  lag {}  read p50 {} p99 {} p99.9 {} max {}  \
         fanin p50 {} p99 {} max {}  append max {}  rss {}  disk {}",
        iv.t_secs,
        iv.written,
        iv.written_per_s,
        iv.lag
            .values()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        duration_ns(l.p50),
        duration_ns(l.p99),
        duration_ns(l.p99_9),
        duration_ns(l.max),
        duration_ns(f.p50),
        duration_ns(f.p99),
        duration_ns(f.max),
        duration_ns(iv.append_max_ns),
        order
            .iter()
            .map(|r| iv.rss_kib.get(&r.process).copied().unwrap_or(0))
            .map(|k| format!("{:.1}", k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join("/"),
        bytes(iv.disk_bytes),
    )
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    o: &Opts,
    roles: &BTreeMap<String, Role>,
    mut rss: Vec<RssTrack>,
    intervals: Vec<Interval>,
    disk_max: u64,
    elapsed: Duration,
    interrupted: bool,
    mut problems: Vec<String>,
) -> Result<Summary> {
    let role = |l: &str| roles.get(l).ok_or_else(|| anyhow!("no report from {l}"));
    let fin = |l: &str, r: &Role, problems: &mut Vec<String>| {
        if r.fin.is_none() {
            problems.push(format!("{l} sent no final report"));
        }
    };
    let mut writers = Vec::new();
    for (label, q) in [("w0", "q0"), ("w1", "q1")] {
        let r = role(label)?;
        fin(label, r, &mut problems);
        writers.push(WriterSummary {
            name: q.to_string(),
            records: r.n("written"),
            behind_schedule: r.n("behind"),
            append_ns: Latency::of(&r.run),
        });
    }
    let q0_written = writers.first().map_or(0, |w| w.records);
    let mut all_fast = histogram()?;
    let mut readers = Vec::new();
    let mut losses = 0u64;
    for name in READERS {
        let r = role(name)?;
        fin(name, r, &mut problems);
        let slow = name == SLOW && o.slow_stall_ms > 0;
        if !slow {
            let _ = all_fast.add(&r.run);
        }
        let fin_v = r.fin.clone().unwrap_or(Value::Null);
        let rs = ReaderSummary {
            name: name.to_string(),
            slow,
            records: r.n("read"),
            losses: r.n("losses"),
            duplicates: r.n("duplicates"),
            corrupt: r.n("corrupt") + r.n("wrong_type"),
            end_total: fin_v.get("end_total").and_then(Value::as_u64),
            first_problem: r.first_problem(),
            latency_ns: Latency::of(&r.run),
        };
        losses += rs.losses;
        if rs.losses + rs.duplicates + rs.corrupt > 0 {
            problems.push(format!(
                "{name}: {} lost, {} duplicated, {} corrupt ({})",
                rs.losses,
                rs.duplicates,
                rs.corrupt,
                rs.first_problem.as_deref().unwrap_or("no detail")
            ));
        }
        if rs.records != q0_written {
            problems.push(format!(
                "{name} read {} records, w0 wrote {q0_written}",
                rs.records
            ));
        }
        readers.push(rs);
    }
    let fr = role("fanin")?;
    fin("fanin", fr, &mut problems);
    let fv = fr.fin.clone().unwrap_or(Value::Null);
    let per_source: BTreeMap<String, u64> = fv
        .get("sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|x| {
            (
                x.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                x.get("read").and_then(Value::as_u64).unwrap_or(0),
            )
        })
        .collect();
    let fanin = FanInSummary {
        records: fr.n("read"),
        per_source,
        losses: fr.n("losses"),
        duplicates: fr.n("duplicates"),
        corrupt: fr.n("corrupt"),
        order_violations: fr.n("order_violations"),
        late: fr.n("late"),
        forced: fr.n("forced"),
        first_problem: fr.first_problem(),
        latency_ns: Latency::of(&fr.run),
    };
    losses += fanin.losses;
    if fanin.losses + fanin.duplicates + fanin.corrupt + fanin.order_violations + fanin.late > 0 {
        problems.push(format!(
            "fanin: {} lost, {} duplicated, {} corrupt, {} out of order, {} late ({})",
            fanin.losses,
            fanin.duplicates,
            fanin.corrupt,
            fanin.order_violations,
            fanin.late,
            fanin.first_problem.as_deref().unwrap_or("no detail")
        ));
    }
    for w in &writers {
        let got = fanin.per_source.get(&w.name).copied().unwrap_or(0);
        if got != w.records {
            problems.push(format!(
                "fanin merged {got} records of {}, its writer wrote {}",
                w.name, w.records
            ));
        }
    }
    let limit_kib = (o.rss_slack + 2 * o.segment_size) / 1024;
    for r in &mut rss {
        let base = r.after_warmup.unwrap_or(r.start);
        r.growth_kib = i64::try_from(r.end.rss_kib).unwrap_or(i64::MAX)
            - i64::try_from(base.rss_kib).unwrap_or(i64::MAX);
        r.within_limit = r.growth_kib <= i64::try_from(limit_kib).unwrap_or(i64::MAX);
        if !r.within_limit {
            problems.push(format!(
                "{}: RSS grew by {} KiB after the warm-up (limit {limit_kib} KiB)",
                r.process, r.growth_kib
            ));
        }
    }
    let records = writers.iter().map(|w| w.records).sum();
    if records == 0 {
        problems.push(s("no records were written"));
    }
    let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
    Ok(Summary {
        mode: "soak",
        secs: elapsed.as_secs_f64(),
        rate: o.rate,
        size: o.size,
        segment_size: o.segment_size,
        retain_bytes: o.segment_size.saturating_mul(o.retain_segments),
        interval_secs: o.interval,
        interrupted,
        records,
        losses,
        writers,
        readers,
        fanin,
        latency_ns: Latency::of(&all_fast),
        rss_limit_growth_kib: limit_kib,
        rss,
        disk_max_bytes: disk_max,
        intervals,
        problems,
        verdict,
    })
}

/// Prints a summary table of ten columns: a name on the left, then right-aligned numbers.
fn print_table(rows: &[Vec<String>]) {
    print!(
        "{}",
        table(
            rows,
            &[false, true, true, true, true, true, true, true, true, true],
            "  "
        )
    );
}

fn print_summary(sm: &Summary) {
    let d = duration_ns;
    println!(
        "\nsoak summary: {:.1} s{}, {} records written ({}), disk use at most {}",
        sm.secs,
        if sm.interrupted { " (interrupted)" } else { "" },
        sm.records,
        sm.writers
            .iter()
            .map(|w| format!(
                "{} {}, {} behind schedule",
                w.name, w.records, w.behind_schedule
            ))
            .collect::<Vec<_>>()
            .join("; "),
        bytes(sm.disk_max_bytes)
    );
    let head = [
        "", "records", "lost", "dup", "corrupt", "p50", "p99", "p99.9", "p99.99", "max",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = vec![head];
    let lat = |l: &Latency| [d(l.p50), d(l.p99), d(l.p99_9), d(l.p99_99), d(l.max)];
    // A row: the name, records, losses, duplicates, corrupt, then the latency columns.
    let row = |name: String, counts: [String; 4], l: &Latency| {
        let mut row = vec![name];
        row.extend(counts);
        row.extend(lat(l));
        row
    };
    let counted = |records: u64, losses: u64, duplicates: u64, corrupt: u64| {
        [records, losses, duplicates, corrupt].map(|n| n.to_string())
    };
    for r in &sm.readers {
        let name = if r.slow {
            format!("reader {} (slow)", r.name)
        } else {
            format!("reader {}", r.name)
        };
        let counts = counted(r.records, r.losses, r.duplicates, r.corrupt);
        rows.push(row(name, counts, &r.latency_ns));
    }
    let f = &sm.fanin;
    let counts = counted(f.records, f.losses, f.duplicates, f.corrupt);
    rows.push(row(s("fan-in q0+q1"), counts, &f.latency_ns));
    for w in &sm.writers {
        let counts = [
            w.records.to_string(),
            String::new(),
            String::new(),
            String::new(),
        ];
        rows.push(row(format!("append {}", w.name), counts, &w.append_ns));
    }
    rows.push(row(
        s("readers r1-r3"),
        std::array::from_fn(|_| String::new()),
        &sm.latency_ns,
    ));
    print_table(&rows);
    println!(
        "fan-in: merge order violations {}, late {}, forced {}; per source {}",
        f.order_violations,
        f.late,
        f.forced,
        f.per_source
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
    let mut rows = vec![
        [
            "process",
            "pid",
            "start",
            "warm",
            "peak",
            "end",
            "growth",
            "end anon",
            "end file",
            "end shmem",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &sm.rss {
        rows.push(vec![
            r.process.clone(),
            r.pid.to_string(),
            mib(r.start.rss_kib),
            mib(r.after_warmup.map_or(0, |w| w.rss_kib)),
            mib(r.peak_kib),
            mib(r.end.rss_kib),
            format!("{:+.1}", r.growth_kib as f64 / 1024.0),
            mib(r.end.anon_kib),
            mib(r.end.file_kib),
            mib(r.end.shmem_kib),
        ]);
    }
    println!(
        "RSS in MiB (growth = end - warm, limit +{} MiB):",
        mib(sm.rss_limit_growth_kib)
    );
    print_table(&rows);
    if sm.verdict == "PASS" {
        println!(
            "verdict: PASS: 0 losses; every reader and the fan-in saw all {} records in order; \
             RSS growth within limits",
            sm.records
        );
    } else {
        println!("verdict: FAIL: {}", sm.problems.join("; "));
    }
}
