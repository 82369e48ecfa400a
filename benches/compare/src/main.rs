//! Side-by-side cross-process latency and throughput: chronicle next to iceoryx2, a Unix
//! socket, a pipe, crossbeam-channel (threads) and a bare shared-memory SPSC ring, all
//! measured by chronicle-lab's harness with the same payloads, pacing and core pinning.
//!
//! The floor is the `ring` transport: fixed slots of the payload's size rounded up to a
//! cache line (a 64-byte message is one line, no length header) and a read cursor released
//! once per batch. `ring, length-prefixed` (`ring-len`) is the same ring with an 8-byte
//! length in front of each payload and its cursor stored per message, shown to separate
//! what framing costs from what chronicle adds.
//!
//! ```text
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- --out target/compare
//! ```
//!
//! Writes `results.md` (tables with median and spread over the rounds, ratios against the
//! bare ring of the same round, target verdicts), `compare-latency.svg` (percentile
//! distribution per transport, log-scale axes), `runs.csv` (every run) and
//! `percentiles.csv` (the plotted series) into `--out`. `--help` lists the options;
//! `--quick` is a short end-to-end check of every transport.
//!
//! `chronicle-compare tick-to-route --build A=CHRON_CLI --build B=CHRON_CLI` runs the demo
//! topology with two or more builds side by side instead (see [`t2r`]);
//! `chronicle-compare instructions` checks the hot operations' instruction counts under
//! callgrind against a checked-in baseline (see [`instr`]);
//! `chronicle-compare bridge-chart --csv FILE --out FILE.svg` draws the NATS bridge's
//! throughput by batch size from `bridge_bench --csv` output (see [`bridge_chart`]).
//!
//! By default every reader reads only the 16-byte stamp and sequence number of each
//! message, except that chronicle's reader verifies its CRC over the whole record, so at
//! 1 KiB chronicle is the only transport whose reader touches every cache line of the
//! payload. `--touch-payload` sets the harness's
//! [`RunConfig::touch_payload`](chronicle_lab::harness::RunConfig::touch_payload): the
//! shared reader loop (the same for every transport, threads included) then reads every
//! payload byte, as a consumer would, before taking the receive timestamp, so latency runs
//! to "reader has read the whole message" and the cost shows in throughput too. Run it
//! both ways; `results.md`, `runs.csv` and the chart title say which one a run was.

mod bridge_chart;
mod channel;
mod chart;
mod instr;
mod iox;
mod machine;
mod options;
mod report;
mod t2r;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use chronicle_lab::harness::{
    self, Mode, Registry, RunConfig, RunReport, SweepSettings, WaitMode, clock, format_table,
};

use options::Options;

/// One row of the comparison: a transport, how its reader waits, and whether the reader
/// is a second process (the default) or a second thread (in-process channels only).
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Name in tables and the chart legend.
    pub label: &'static str,
    /// Harness registry name.
    pub transport: &'static str,
    /// Reader wait mode.
    pub wait: WaitMode,
    /// Reader on a thread of the writer's process instead of a child process.
    pub threads: bool,
    /// A diagnostic row: runs only when `--only` names it.
    pub diagnostic: bool,
}

const fn case(label: &'static str, transport: &'static str, wait: WaitMode) -> Case {
    Case {
        label,
        transport,
        wait,
        threads: false,
        diagnostic: false,
    }
}

/// A case whose reader is a thread of the writer's process.
const fn in_threads(label: &'static str, transport: &'static str, wait: WaitMode) -> Case {
    Case {
        threads: true,
        ..case(label, transport, wait)
    }
}

/// Every case, in table order: spinning readers, then sleeping readers. The first case of
/// each group is that group's baseline.
pub const CASES: [Case; 14] = [
    case("ring (floor)", "ring", WaitMode::Spin),
    case("ring, length-prefixed", "ring-len", WaitMode::Spin),
    case("chronicle", "chronicle", WaitMode::Spin),
    case("chronicle, pretouch", "chronicle-pretouch", WaitMode::Spin),
    Case {
        diagnostic: true,
        ..case(
            "chronicle, reader skips CRC",
            "chronicle-nocrc",
            WaitMode::Spin,
        )
    },
    case("iceoryx2", "iceoryx2", WaitMode::Spin),
    case("unix seqpacket", "unix", WaitMode::Spin),
    case("pipe", "pipe", WaitMode::Spin),
    in_threads("crossbeam (threads)", "crossbeam", WaitMode::Spin),
    case("ring-futex (floor)", "ring-futex", WaitMode::Block),
    case("chronicle", "chronicle", WaitMode::Block),
    case("unix seqpacket", "unix", WaitMode::Block),
    case("pipe", "pipe", WaitMode::Block),
    in_threads("crossbeam (threads)", "crossbeam", WaitMode::Block),
];

/// The registry used by both the parent and the re-executed reader child.
fn registry() -> Result<Registry> {
    let mut r = Registry::builtin();
    r.register::<iox::Iceoryx2>()
        .context("registering iceoryx2")?;
    r.register::<channel::Crossbeam>()
        .context("registering crossbeam")?;
    Ok(r)
}

/// The outcome of one case in one round at one payload size.
#[derive(Debug)]
pub struct Measurement {
    /// Round number, from 1.
    pub round: u32,
    /// Payload bytes.
    pub payload: usize,
    /// Index into [`CASES`].
    pub case: usize,
    /// The paced latency run.
    pub latency: Option<RunReport>,
    /// The unpaced throughput run.
    pub throughput: Option<RunReport>,
    /// The unpaced throughput run with batches of `--batch` messages.
    pub batched: Option<RunReport>,
}

fn run_one(reg: &Registry, c: &Case, cfg: &RunConfig) -> Result<RunReport> {
    let r = if c.threads {
        harness::run_in_threads(reg, c.transport, cfg)
    } else {
        harness::run(reg, c.transport, cfg)
    };
    r.with_context(|| {
        format!(
            "{} / {} / {} / {} B",
            c.label, c.wait, cfg.mode, cfg.payload
        )
    })
}

fn config(o: &Options, mode: Mode, wait: WaitMode, payload: usize) -> RunConfig {
    SweepSettings {
        count: o.count,
        thru_count: o.thru_count,
        warmup: o.warmup,
        rate: Some(o.rate),
        cores: o.cores,
        capacity: o.capacity,
        touch_payload: o.touch_payload,
    }
    .run_config(mode, wait, payload)
}

fn main() -> ExitCode {
    // A re-executed reader child takes this branch first and never returns to `run`.
    let reg = match registry() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chronicle-compare: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = harness::run_child_if_requested_with(&reg) {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    match std::env::args().nth(1).as_deref() {
        Some("tick-to-route") => return tick_to_route(),
        Some("bridge-chart") => return bridge_chart(),
        Some("instructions") => return instructions(),
        Some("instructions-child") => {
            return match instr::child(std::env::args().skip(2)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("chronicle-compare instructions-child: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", options::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chronicle-compare: {e:#}\n\n{}", options::HELP);
            return ExitCode::from(2);
        }
    };
    match run(&reg, &opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chronicle-compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A subcommand: parse its arguments (`Ok(None)` for `--help`), run it, and map the
/// outcome to an exit status (2 for a usage error, 1 for a failed or missed run).
fn subcommand<O>(
    name: &str,
    help: &str,
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> Result<Option<O>>,
    run: impl FnOnce(&O) -> Result<bool>,
) -> ExitCode {
    let opts = match parse(std::env::args().skip(2)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chronicle-compare {name}: {e:#}\n\n{help}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chronicle-compare {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `chronicle-compare instructions ...` (see [`instr`]).
fn instructions() -> ExitCode {
    subcommand(
        "instructions",
        instr::HELP,
        instr::Options::parse,
        instr::run,
    )
}

/// `chronicle-compare bridge-chart ...` (see [`bridge_chart`]).
fn bridge_chart() -> ExitCode {
    subcommand(
        "bridge-chart",
        bridge_chart::HELP,
        bridge_chart::Options::parse,
        |o| bridge_chart::run(o).map(|()| true),
    )
}

/// `chronicle-compare tick-to-route ...` (see [`t2r`]).
fn tick_to_route() -> ExitCode {
    subcommand("tick-to-route", t2r::HELP, t2r::Options::parse, |o| {
        t2r::run(o).map(|()| true)
    })
}

/// Runs every round and writes the outputs; `Ok(false)` if a run failed or lost messages
/// (the outputs are still written, with the failures listed).
fn run(reg: &Registry, o: &Options) -> Result<bool> {
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("creating the output directory {}", o.out.display()))?;
    let cases: Vec<usize> = (0..CASES.len())
        .filter(|&i| {
            CASES.get(i).is_some_and(|c| match &o.only {
                Some(only) => only.iter().any(|n| n == c.transport),
                None => !c.diagnostic,
            })
        })
        .collect();
    let before = machine::Machine::probe();
    println!(
        "chronicle-compare: {} cases x {:?} B x {} rounds; latency {} msgs (+{} warm-up) at {} msgs/s, \
         throughput {} msgs unpaced; cores {}; readers read {}; clock read ~{} ns; {}",
        cases.len(),
        o.sizes,
        o.rounds,
        o.count,
        o.warmup,
        o.rate,
        o.thru_count,
        o.cores.map_or_else(
            || "unpinned".to_owned(),
            |(w, r)| format!("{w} (writer) / {r} (reader)")
        ),
        report::reader_reads(o),
        clock::clock_overhead_ns(10_000),
        before.one_line()
    );
    let total = o.rounds as usize * o.sizes.len() * cases.len();
    let mut done = 0usize;
    let mut all = Vec::with_capacity(total);
    let mut failures = Vec::new();
    for round in 1..=o.rounds {
        let mut table_rows = Vec::new();
        for &payload in &o.sizes {
            for &ci in &cases {
                let Some(c) = CASES.get(ci) else { continue };
                done += 1;
                eprintln!(
                    "[{done}/{total}] round {round}: {} / {} / {payload} B",
                    c.label, c.wait
                );
                let mut m = Measurement {
                    round,
                    payload,
                    case: ci,
                    latency: None,
                    throughput: None,
                    batched: None,
                };
                let runs = [
                    (Mode::Latency, 1),
                    (Mode::Throughput, 1),
                    (Mode::Throughput, o.batch),
                ];
                for (i, (mode, batch)) in runs.into_iter().enumerate() {
                    if mode == Mode::Throughput && o.thru_count == 0 || i == 2 && batch == 1 {
                        continue;
                    }
                    let mut cfg = config(o, mode, c.wait, payload);
                    cfg.batch = batch;
                    match run_one(reg, c, &cfg) {
                        Ok(r) => {
                            if !r.is_clean() {
                                failures.push(format!(
                                    "round {round}: {} / {} / {mode} / {payload} B: received {}/{}, {} sequence errors, first: {:?}",
                                    c.label, c.wait, r.received, r.sent, r.seq_errors, r.first_seq_error
                                ));
                            }
                            table_rows.push(r.clone());
                            match (mode, batch) {
                                (Mode::Latency, _) => m.latency = Some(r),
                                (Mode::Throughput, 1) => m.throughput = Some(r),
                                (Mode::Throughput, _) => m.batched = Some(r),
                            }
                        }
                        Err(e) => {
                            eprintln!("  FAILED: {e:#}");
                            failures.push(format!("round {round}: {e:#}"));
                        }
                    }
                }
                all.push(m);
            }
        }
        println!("\nround {round}/{}", o.rounds);
        print!("{}", format_table(&table_rows, &["ring", "ring-futex"]));
    }
    let after = machine::Machine::probe();
    let outputs = report::Outputs::new(&o.out);
    report::write_all(&outputs, o, &before, &after, &all, &failures)?;
    chart::draw(&outputs.chart, o, &all).context("drawing the chart")?;
    println!("\n{}", report::targets_text(&all));
    println!(
        "wrote {}, {}, {}, {}",
        outputs.markdown.display(),
        outputs.chart.display(),
        outputs.runs.display(),
        outputs.percentiles.display()
    );
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    Ok(failures.is_empty())
}
