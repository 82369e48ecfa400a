//! Added one-way latency of the fan-in over reading a single queue, two pinned processes.
//!
//! `cargo bench -p chronicle-bus --bench fanin_latency` (env `N` = messages per mode, default
//! 200000; `GAP_NS` = spacing between sends, default 5000). The writer process (this binary
//! re-executed) is pinned to the last CPU, the reader to CPU 0. Latency = reader's
//! CLOCK_REALTIME at receipt minus the writer's CLOCK_REALTIME just before `append` (carried
//! in the payload).
//!
//! Modes, measured in the same run:
//! - `single`: writer appends to one queue; reader busy-polls `QueueReader::next`.
//! - `fanin8_replay`: writer appends round-robin to 8 queues; reader busy-polls a
//!   `FanInReader` in replay mode (merge machinery only: no watermark wait).
//! - `fanin8_live_hold0`: same, live mode with `max_hold = 0` (watermark reads, liveness
//!   probes and clock reads on every blocked decision, then release).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chronicle_bus::{FanInConfig, FanInReader, MergeMode};
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig, os};
use hdrhistogram::Histogram;

const ROLE: &str = "CHRONICLE_FANIN_LAT_ROLE";

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPUs online on the machine (not the calling thread's affinity: a child inherits its
/// parent's pinning, and must still pick the other core).
fn ncpu() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn writer(dir: &Path) {
    pin(ncpu() - 1);
    let queues: u64 = env_u64("QUEUES", 1);
    let n = env_u64("N", 200_000);
    let gap = env_u64("GAP_NS", 5_000);
    let mut ws: Vec<QueueWriter> = (0..queues)
        .map(|i| QueueWriter::open(dir.join(format!("q{i}")), wcfg()).unwrap())
        .collect();
    println!("ready");
    let go = dir.join("go");
    let end = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut next = os::realtime_ns();
    for k in 0..n {
        while os::realtime_ns() < next {
            std::hint::spin_loop();
        }
        next += gap;
        let w = &mut ws[(k % queues) as usize];
        let _ = k;
        w.append(1, &os::realtime_ns().to_le_bytes()).unwrap();
    }
    for w in ws {
        w.close().unwrap();
    }
}

fn wcfg() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 20,
        ..WriterConfig::default()
    }
}

fn run(mode: &str) -> Histogram<u64> {
    let d = tempfile::tempdir().unwrap();
    let dir: PathBuf = d.path().to_path_buf();
    let queues = if mode == "single" { 1 } else { 8 };
    let n = env_u64("N", 200_000);
    for i in 0..queues {
        QueueWriter::open(dir.join(format!("q{i}")), wcfg())
            .unwrap()
            .close()
            .unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "writer")
        .env("DIR", &dir)
        .env("QUEUES", queues.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let warmup = n / 10;
    let mut got = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut record = |ts: u64, got: &mut u64| {
        let lat = os::realtime_ns().saturating_sub(ts);
        if *got >= warmup {
            h.record(lat.max(1)).unwrap();
        }
        *got += 1;
    };
    if mode == "single" {
        let mut r = QueueReader::open(
            dir.join("q0"),
            ReaderConfig::default().start(StartAt::Latest),
        )
        .unwrap();
        std::fs::write(dir.join("go"), b"").unwrap();
        while got < n {
            if let Some(m) = r.next().unwrap() {
                let ts = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
                record(ts, &mut got);
            } else {
                assert!(Instant::now() < deadline, "reader watchdog");
            }
        }
    } else {
        let mut f = FanInReader::new(FanInConfig {
            mode: if mode == "fanin8_replay" {
                MergeMode::Replay
            } else {
                MergeMode::Live
            },
            max_hold: Some(Duration::ZERO),
            start: StartAt::Latest,
            ..FanInConfig::default()
        })
        .unwrap();
        for i in 0..queues {
            f.add_source(&format!("s{i}"), dir.join(format!("q{i}")))
                .unwrap();
        }
        std::fs::write(dir.join("go"), b"").unwrap();
        while got < n {
            if let Some(m) = f.next().unwrap() {
                let ts = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
                record(ts, &mut got);
            } else {
                assert!(Instant::now() < deadline, "reader watchdog");
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h
}

fn main() {
    if std::env::var(ROLE).is_ok() {
        writer(Path::new(&std::env::var("DIR").unwrap()));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    pin(0);
    println!(
        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "mode", "p50 ns", "p90 ns", "p99 ns", "p99.9 ns", "max ns"
    );
    let mut base = 0u64;
    for mode in ["single", "fanin8_replay", "fanin8_live_hold0"] {
        let h = run(mode);
        let p50 = h.value_at_quantile(0.5);
        if mode == "single" {
            base = p50;
        }
        println!(
            "{:<20} {:>8} {:>8} {:>8} {:>8} {:>10}   p50 delta vs single: {:+}",
            mode,
            p50,
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            p50 as i64 - base as i64
        );
    }
}
