//! `bench`: throughput and cross-process one-way latency on a temporary queue, with the reader in
//! a separate process (the harness re-executes this binary as the reader child).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chronicle_lab::harness::{
    self, Latency, Mode, PinOutcome, Registry, RunConfig, RunReport, WaitMode,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::output;

/// How the reader waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// Busy-poll (lowest latency, burns the reader's core).
    Spin,
    /// Sleep on the queue's futex between records.
    Futex,
}

fn parse_cores(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: give two cores as WRITER,READER (e.g. 0,1)"))?;
    let core = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("{x:?} is not a core number"))
    };
    Ok((core(a)?, core(b)?))
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payload bytes per message (at least 16: the send time and a sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured messages (after the warm-up).
    #[arg(long, default_value_t = 100_000, conflicts_with = "soak")]
    count: u64,
    /// Messages sent first and left out of the results.
    #[arg(long, default_value_t = 1_000, conflicts_with = "soak")]
    warmup: u64,
    /// Paced send rate in messages per second (default 100000). The latency run: 0 sends as
    /// fast as possible (which measures mostly queueing). A soak: each writer's rate (default
    /// 50000).
    #[arg(long)]
    rate: Option<u64>,
    /// How the reader waits.
    #[arg(long, value_enum, default_value_t = Wait::Spin, conflicts_with = "soak")]
    wait: Wait,
    /// Pin the writer and the reader: WRITER,READER core numbers.
    #[arg(long, value_name = "A,B", value_parser = parse_cores, conflicts_with = "soak")]
    cores: Option<(usize, usize)>,
    /// Directory for the temporary queue(s) (default /dev/shm, else the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the full latency distribution (HdrHistogram percentile text format) to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "soak")]
    hist: Option<PathBuf>,
    /// The reader reads every payload byte (as a consumer would) before taking its receive
    /// timestamp, instead of only the 16-byte send time and sequence number; the queue's own
    /// CRC check reads the record either way.
    #[arg(long, conflicts_with = "soak")]
    touch_payload: bool,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
    /// Soak run instead: two paced writers, four checking readers (one slow) and a fan-in
    /// merge as separate processes for --secs seconds, with a report line per --interval and
    /// a verdict (exit status 1 on any loss, disorder or RSS growth beyond the limit).
    #[arg(long)]
    soak: bool,
    /// Soak: seconds to run.
    #[arg(long, default_value_t = 60, requires = "soak")]
    secs: u64,
    /// Soak: seconds between report lines.
    #[arg(long, default_value_t = 10, requires = "soak")]
    interval: u64,
    /// Soak: segment size of the queues (small, so segments roll and retention deletes them
    /// all the time).
    #[arg(long, default_value = "4M", value_parser = output::parse_size, requires = "soak")]
    segment_size: u64,
    /// Soak: retention keeps each queue at this many segments.
    #[arg(long, default_value_t = 8, requires = "soak")]
    retain_segments: u64,
    /// Soak: reader r4 sleeps this many milliseconds every second (0: no slow reader).
    #[arg(long, default_value_t = 200, requires = "soak")]
    slow_stall_ms: u64,
    /// Soak: allowed RSS growth of a process after the first interval, plus two segments.
    #[arg(long, default_value = "16M", value_parser = output::parse_size, requires = "soak")]
    rss_slack: u64,
    /// Soak: keep the queues after a passing run (a failing run always keeps them).
    #[arg(long, requires = "soak")]
    keep: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    size: usize,
    count: u64,
    rate: u64,
    wait: &'static str,
    touch_payload: bool,
    throughput_msgs_per_s: f64,
    latency_ns: Latency,
}

fn config(args: &Args, mode: Mode) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.mode = mode;
    cfg.wait = match args.wait {
        Wait::Spin => WaitMode::Spin,
        Wait::Futex => WaitMode::Block,
    };
    cfg.count = args.count;
    cfg.warmup = args.warmup;
    let rate = args.rate.unwrap_or(100_000);
    cfg.rate = (rate > 0).then_some(rate);
    cfg.payload = args.size;
    cfg.cores = args.cores;
    cfg.base_dir = args.dir.clone();
    cfg.touch_payload = args.touch_payload;
    cfg
}

fn run_one(cfg: &RunConfig) -> Result<RunReport> {
    let report = harness::run(&Registry::builtin(), "chronicle", cfg).map_err(|e| anyhow!(e))?;
    if !report.is_clean() {
        bail!(
            "the reader saw {} sequence errors ({}): the queue lost or reordered messages",
            report.seq_errors,
            report.first_seq_error.as_deref().unwrap_or("no detail")
        );
    }
    Ok(report)
}

fn pin_note(what: &str, p: &PinOutcome) {
    if let PinOutcome::Failed { core, reason } = p {
        tracing::warn!(
            core,
            reason = %reason,
            "could not pin the {what} to core {core}; ran unpinned"
        );
    }
}

/// Writes the latency distribution to `path` in HdrHistogram's percentile text format.
fn write_hist(path: &PathBuf, h: &Histogram<u64>) -> Result<()> {
    std::fs::write(path, harness::percentile_distribution(h))
        .with_context(|| format!("write {}", path.display()))
}

pub fn run(args: Args) -> Result<u8> {
    if args.soak {
        crate::signals::install_stop_handler()?;
        let opts = chronicle_lab::soak::Opts {
            secs: args.secs,
            rate: args.rate.unwrap_or(50_000),
            size: args.size,
            dir: args.dir,
            interval: args.interval,
            segment_size: args.segment_size,
            retain_segments: args.retain_segments,
            slow_stall_ms: args.slow_stall_ms,
            rss_slack: args.rss_slack,
            keep: args.keep,
            json: args.json,
        };
        return chronicle_lab::soak::run(&opts, crate::signals::stop_requested);
    }
    let rate_arg = args.rate.unwrap_or(100_000);
    if !args.json {
        eprintln!(
            "chron-cli: bench: {} + {} warm-up messages of {} B, reader in another process ({} wait{})…",
            args.count,
            args.warmup,
            args.size,
            match args.wait {
                Wait::Spin => "spin",
                Wait::Futex => "futex",
            },
            if args.touch_payload {
                ", reading every payload byte"
            } else {
                ""
            }
        );
    }
    let thr = run_one(&config(&args, Mode::Throughput))?;
    let lat = run_one(&config(&args, Mode::Latency))?;
    pin_note("writer", &lat.writer_pin);
    pin_note("reader", &lat.reader_pin);
    let h = lat
        .histogram
        .as_ref()
        .ok_or_else(|| anyhow!("the latency run returned no histogram"))?;
    let latency = Latency::of(h);
    if let Some(path) = &args.hist {
        write_hist(path, h)?;
    }
    let report = Report {
        size: args.size,
        count: args.count,
        rate: rate_arg,
        wait: match args.wait {
            Wait::Spin => "spin",
            Wait::Futex => "futex",
        },
        touch_payload: args.touch_payload,
        throughput_msgs_per_s: thr.throughput,
        latency_ns: latency,
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        output::json_line(&mut out, &report)?;
        return Ok(0);
    }
    let l = &report.latency_ns;
    let rate = if rate_arg == 0 {
        "unpaced".to_string()
    } else {
        format!("paced at {rate_arg} msgs/s")
    };
    println!(
        "throughput   {:.0} msgs/s ({} B payload, unpaced, {} messages)",
        report.throughput_msgs_per_s, args.size, args.count
    );
    println!(
        "latency      one-way, writer to reader process, {rate}, {} wait{}",
        report.wait,
        if args.touch_payload {
            ", reader reads the whole payload"
        } else {
            ""
        }
    );
    let rows = vec![
        ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        [l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max]
            .iter()
            .map(|v| format!("{v} ns"))
            .collect(),
    ];
    print!("{}", output::table(&rows, &[true; 6], "  "));
    if let Some(path) = &args.hist {
        println!("histogram    {}", path.display());
    }
    Ok(0)
}
