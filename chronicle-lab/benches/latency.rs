//! Cross-process latency and throughput of every registered transport, in one run.
//!
//! ```text
//! cargo bench -p chronicle-lab --bench latency -- [options]
//! ```
//!
//! Options (each also readable from the environment variable in brackets):
//!
//! | option | env | default | meaning |
//! |---|---|---|---|
//! | `--count N` | `CHRONICLE_BENCH_COUNT` | 200000 | measured messages per latency run |
//! | `--warmup N` | `CHRONICLE_BENCH_WARMUP` | 10000 | warm-up messages per run |
//! | `--rate N\|none` | `CHRONICLE_BENCH_RATE` | 100000 | paced msgs/s for latency runs (`none` = unpaced) |
//! | `--size N[,N..]` | `CHRONICLE_BENCH_SIZE` | 64 | payload bytes (>= 16); several sizes run in turn |
//! | `--cores W,R\|none` | `CHRONICLE_BENCH_CORES` | none | pin writer to W, reader to R |
//! | `--thru-count N` | `CHRONICLE_BENCH_THRU_COUNT` | 1000000 | messages per throughput run (0 = skip) |
//! | `--capacity N` | `CHRONICLE_BENCH_CAPACITY` | 4096 | ring slots (power of two) |
//! | `--transports a,b` | `CHRONICLE_BENCH_TRANSPORTS` | all | subset of transports |
//! | `--repeat N` | `CHRONICLE_BENCH_REPEAT` | 1 | rounds; each round runs every transport once and prints its own table |
//! | `--touch-payload` | `CHRONICLE_BENCH_TOUCH=1` | off | every reader reads every payload byte (see below) |
//!
//! Command-line options win over the environment (`--touch-payload=false` turns a set
//! `CHRONICLE_BENCH_TOUCH` off).
//!
//! By default each reader reads only the 16-byte stamp and sequence number, while
//! chronicle's reader also verifies a CRC over the whole record, so at large payloads it is
//! the only one that touches every cache line. `--touch-payload` makes the harness's shared
//! reader loop fold every payload byte (XOR of 8-byte words, kept with `black_box`) for
//! every transport, as a consumer would, **before** taking the receive timestamp: latency
//! then runs to "reader has read the whole message", and the fold's cost shows in the
//! throughput too. Run both ways to compare. The table's ratio columns compare each
//! row with `ring` (spin) or `ring-futex` (block) measured in the same round. On a
//! shared VM, compare ratios across rounds rather than absolute numbers: two spinning
//! threads are not always scheduled at the same time there, and a round where they were
//! not shows it in every row at once.

use std::process::ExitCode;

use chronicle_lab::harness::{
    self, HarnessError, Mode, Registry, RunReport, SweepSettings, WaitMode, clock, comma_list,
    format_table,
};

#[derive(Debug)]
struct Options {
    count: u64,
    warmup: u64,
    rate: Option<u64>,
    sizes: Vec<usize>,
    cores: Option<(usize, usize)>,
    thru_count: u64,
    capacity: usize,
    transports: Option<Vec<String>>,
    repeat: u32,
    touch_payload: bool,
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{key}: `{v}` is not a valid number"))
}

fn parse_rate(v: &str) -> Result<Option<u64>, String> {
    match v.trim() {
        "none" | "0" | "max" => Ok(None),
        other => parse_num("rate", other).map(Some),
    }
}

fn parse_cores(v: &str) -> Result<Option<(usize, usize)>, String> {
    if v.trim() == "none" {
        return Ok(None);
    }
    let (w, r) = v
        .split_once(',')
        .ok_or_else(|| format!("cores: `{v}` is not W,R"))?;
    Ok(Some((parse_num("cores", w)?, parse_num("cores", r)?)))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{key}: `{other}` is not a boolean (1|0)")),
    }
}

impl Options {
    fn apply(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "count" => self.count = parse_num(key, v)?,
            "warmup" => self.warmup = parse_num(key, v)?,
            "rate" => self.rate = parse_rate(v)?,
            "size" => {
                self.sizes = comma_list(v)
                    .iter()
                    .map(|s| parse_num("size", s))
                    .collect::<Result<_, _>>()?;
            }
            "cores" => self.cores = parse_cores(v)?,
            "thru-count" => self.thru_count = parse_num(key, v)?,
            "capacity" => self.capacity = parse_num(key, v)?,
            "transports" => self.transports = Some(comma_list(v)),
            "repeat" => self.repeat = parse_num(key, v)?,
            "touch-payload" => self.touch_payload = parse_bool(key, v)?,
            other => return Err(format!("unknown option --{other}")),
        }
        Ok(())
    }

    fn load() -> Result<Self, String> {
        let mut o = Self {
            count: 200_000,
            warmup: 10_000,
            rate: Some(100_000),
            sizes: vec![64],
            cores: None,
            thru_count: 1_000_000,
            capacity: 4096,
            transports: None,
            repeat: 1,
            touch_payload: false,
        };
        for key in [
            "count",
            "warmup",
            "rate",
            "size",
            "cores",
            "thru-count",
            "capacity",
            "transports",
            "repeat",
        ] {
            let var = format!(
                "CHRONICLE_BENCH_{}",
                key.replace('-', "_").to_ascii_uppercase()
            );
            if let Ok(v) = std::env::var(&var) {
                o.apply(key, &v).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        if let Ok(v) = std::env::var("CHRONICLE_BENCH_TOUCH") {
            o.apply("touch-payload", &v)
                .map_err(|e| format!("CHRONICLE_BENCH_TOUCH: {e}"))?;
        }
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            // `cargo bench` adds `--bench`; a bare word is cargo's name filter.
            if arg == "--bench" || !arg.starts_with("--") {
                continue;
            }
            let (key, value) = match arg.trim_start_matches("--").split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                // The one flag without a value.
                None if arg == "--touch-payload" => ("touch-payload".to_owned(), "1".to_owned()),
                None => {
                    let k = arg.trim_start_matches("--").to_owned();
                    let v = args.next().ok_or_else(|| format!("--{k} needs a value"))?;
                    (k, v)
                }
            };
            o.apply(&key, &value)?;
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    // Reader children re-execute this binary: they must take their branch first.
    if let Some(code) = harness::run_child_if_requested() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let opts = match Options::load() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("latency bench: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = Registry::builtin();
    let entries: Vec<_> = registry
        .entries()
        .iter()
        .filter(|e| {
            opts.transports
                .as_ref()
                .is_none_or(|t| t.iter().any(|n| n == e.name()))
        })
        .copied()
        .collect();

    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    // Other load on the machine distorts everything; say how much there was.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "chronicle harness: {} transports, cpus={cpus}, loadavg(1m)={loadavg}, clock read ~{} ns, cores={}",
        entries.len(),
        clock::clock_overhead_ns(10_000),
        opts.cores.map_or_else(
            || "unpinned".to_owned(),
            |(w, r)| format!("writer {w} / reader {r}")
        )
    );
    println!(
        "latency: {} msgs + {} warm-up at {}; throughput: {} msgs unpaced; ring capacity {}",
        opts.count,
        opts.warmup,
        opts.rate
            .map_or_else(|| "max rate".to_owned(), |r| format!("{r} msgs/s")),
        opts.thru_count,
        opts.capacity
    );
    println!(
        "readers read {}",
        if opts.touch_payload {
            "every payload byte (--touch-payload), before the receive timestamp"
        } else {
            "only the 16-byte stamp and sequence number (chronicle's reader also checks its CRC)"
        }
    );

    let mut plan: Vec<(Mode, usize, &'static str, WaitMode)> = Vec::new();
    for &size in &opts.sizes {
        for mode in [Mode::Latency, Mode::Throughput] {
            if mode == Mode::Throughput && opts.thru_count == 0 {
                continue;
            }
            for e in &entries {
                for wait in WaitMode::ALL {
                    if e.supports(wait) {
                        plan.push((mode, size, e.name(), wait));
                    }
                }
            }
        }
    }
    let rounds = opts.repeat.max(1);
    let mut reports: Vec<RunReport> = Vec::new();
    let mut failures: Vec<(String, HarnessError)> = Vec::new();
    let sweep = SweepSettings {
        count: opts.count,
        thru_count: opts.thru_count,
        warmup: opts.warmup,
        rate: opts.rate,
        cores: opts.cores,
        capacity: opts.capacity,
        touch_payload: opts.touch_payload,
    };
    for round in 1..=rounds {
        let mut round_reports = Vec::new();
        for (i, &(mode, size, name, wait)) in plan.iter().enumerate() {
            let cfg = sweep.run_config(mode, wait, size);
            eprintln!(
                "[round {round}/{rounds}, {}/{}] {name} {wait} {mode} {size}B ...",
                i + 1,
                plan.len()
            );
            match harness::run(&registry, name, &cfg) {
                Ok(r) => round_reports.push(r),
                Err(e) => {
                    failures.push((format!("round {round}: {name} {wait} {mode} {size}B"), e))
                }
            }
        }
        println!();
        if rounds > 1 {
            println!("round {round}/{rounds}");
        }
        print!("{}", format_table(&round_reports, &["ring", "ring-futex"]));
        reports.extend(round_reports);
    }
    println!();
    println!(
        "latency in ns (one-way, CLOCK_MONOTONIC writer stamp -> reader visibility{}); \
         p50 x / p99 x = row / baseline; rate x = row msgs/s / baseline msgs/s; \
         baseline = ring (spin rows) or ring-futex (block rows) from the same round",
        if opts.touch_payload {
            " + reading the whole payload"
        } else {
            ""
        }
    );

    let mut code = ExitCode::SUCCESS;
    for r in reports.iter().filter(|r| !r.is_clean()) {
        eprintln!(
            "UNCLEAN: {} {} {}: received {}/{}, {} sequence errors, first: {:?}",
            r.transport, r.wait, r.mode, r.received, r.sent, r.seq_errors, r.first_seq_error
        );
        code = ExitCode::FAILURE;
    }
    for (what, e) in &failures {
        eprintln!("FAILED: {what}: {e}");
        code = ExitCode::FAILURE;
    }
    code
}
