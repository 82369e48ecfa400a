//! `bench`: throughput and cross-process one-way latency on a temporary queue, with the reader in
//! a separate process (the harness re-executes this binary as the reader child).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use chronicle_core::harness::{self, Mode, PinOutcome, Registry, RunConfig, RunReport, WaitMode};
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
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Messages sent first and left out of the results.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Paced send rate of the latency run in messages per second; 0 sends as fast as possible
    /// (which measures mostly queueing).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How the reader waits.
    #[arg(long, value_enum, default_value_t = Wait::Spin)]
    wait: Wait,
    /// Pin the writer and the reader: WRITER,READER core numbers.
    #[arg(long, value_name = "A,B", value_parser = parse_cores)]
    cores: Option<(usize, usize)>,
    /// Directory for the temporary queue (default /dev/shm, else the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the full latency distribution (HdrHistogram percentile text format) to FILE.
    #[arg(long, value_name = "FILE")]
    hist: Option<PathBuf>,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p99_9: u64,
    p99_99: u64,
    max: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    size: usize,
    count: u64,
    rate: u64,
    wait: &'static str,
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
    cfg.rate = (args.rate > 0).then_some(args.rate);
    cfg.payload = args.size;
    cfg.cores = args.cores;
    cfg.base_dir = args.dir.clone();
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
        eprintln!("chron-cli: could not pin the {what} to core {core} ({reason}); ran unpinned");
    }
}

/// The classic HdrHistogram percentile distribution text (as `outputPercentileDistribution`
/// prints it), values in ns.
fn write_hist(path: &PathBuf, h: &Histogram<u64>) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
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
    f.write_all(body.as_bytes())
        .and_then(|()| f.flush())
        .with_context(|| format!("write {}", path.display()))
}

pub fn run(args: Args) -> Result<u8> {
    if !args.json {
        eprintln!(
            "chron-cli: bench: {} + {} warm-up messages of {} B, reader in another process ({} wait)…",
            args.count,
            args.warmup,
            args.size,
            match args.wait {
                Wait::Spin => "spin",
                Wait::Futex => "futex",
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
    let q = |x: f64| h.value_at_quantile(x);
    let latency = Latency {
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p99_9: q(0.999),
        p99_99: q(0.9999),
        max: h.max(),
    };
    if let Some(path) = &args.hist {
        write_hist(path, h)?;
    }
    let report = Report {
        size: args.size,
        count: args.count,
        rate: args.rate,
        wait: match args.wait {
            Wait::Spin => "spin",
            Wait::Futex => "futex",
        },
        throughput_msgs_per_s: thr.throughput,
        latency_ns: latency,
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        output::json_line(&mut out, &report)?;
        return Ok(0);
    }
    let l = &report.latency_ns;
    let rate = if args.rate == 0 {
        "unpaced".to_string()
    } else {
        format!("paced at {} msgs/s", args.rate)
    };
    println!(
        "throughput   {:.0} msgs/s ({} B payload, unpaced, {} messages)",
        report.throughput_msgs_per_s, args.size, args.count
    );
    println!(
        "latency      one-way, writer to reader process, {rate}, {} wait",
        report.wait
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
