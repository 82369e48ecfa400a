//! Where a spinning reader's latency tail comes from: one writer process, one reader process
//! (this binary re-executed), paced appends, and the reader's one-way latencies split by where
//! the record sits in the segment.
//!
//! ```text
//! cargo run --release -p chronicle-lab --example latency_anatomy -- \
//!     [--size 64] [--count 300000] [--rate 100000] [--segment-mib 64] [--cores 0,1] \
//!     [--no-crc] [--bursts] [--pretouch] [--dir DIR]
//! ```
//!
//! The queue lives in a temporary directory under `DIR` (default `/dev/shm`): point it at a
//! tmpfs mounted with `huge=always` to see what 2 MiB pages change.
//!
//! `--pretouch` prepares segments with `Preallocate::Pretouch`, the paced writer calling
//! `QueueWriter::pretouch` while it waits for its next send (as the comparison harness's
//! `chronicle-pretouch` does; a step can make a send late); the default is the
//! maintenance thread, pinned with the writer. The writer prints how long its append calls took,
//! split the same way by where the record lands (its own address space).
//!
//! Classes: `first-on-page` is a record whose bytes reach a 4 KiB page no earlier record
//! reached, `first-in-64k` one that reaches a new 64 KiB-aligned block of the address space (the
//! kernel's default fault-around window: one read fault maps that much of the reader's mapping),
//! `other` the rest.
//! `--bursts` lists every run of consecutive records above 3 µs with its segment and offset, which
//! shows periodic causes (a page fault every N records, a timer tick every 4 ms) at a glance.
//! A diagnostic, not a benchmark: for ratios against the bare ring use the `latency` bench.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chronicle_core::{
    Preallocate, QueueReader, QueueWriter, ReaderConfig, RetentionPolicy, WriterConfig, os,
};
use hdrhistogram::Histogram;

type Res<T> = Result<T, Box<dyn Error>>;

#[derive(Debug, Clone)]
struct Opts {
    size: usize,
    count: u64,
    rate: u64,
    segment_mib: u64,
    cores: (usize, usize),
    verify_crc: bool,
    bursts: bool,
    pretouch: bool,
    dir: Option<PathBuf>,
}

const WARMUP: u64 = 10_000;
const BURST_NS: u64 = 3_000;

fn parse(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        size: 64,
        count: 300_000,
        rate: 100_000,
        segment_mib: 64,
        cores: (0, 1),
        verify_crc: true,
        bursts: false,
        pretouch: false,
        dir: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--size" => o.size = val()?.parse()?,
            "--count" => o.count = val()?.parse()?,
            "--rate" => o.rate = val()?.parse()?,
            "--segment-mib" => o.segment_mib = val()?.parse()?,
            "--cores" => {
                let v = val()?;
                let (w, r) = v.split_once(',').ok_or("--cores takes W,R")?;
                o.cores = (w.parse()?, r.parse()?);
            }
            "--no-crc" => o.verify_crc = false,
            "--bursts" => o.bursts = true,
            "--pretouch" => o.pretouch = true,
            "--dir" => o.dir = Some(PathBuf::from(val()?)),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.size < 8 || o.rate == 0 {
        return Err("--size must be >= 8 and --rate > 0".into());
    }
    Ok(o)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((first, rest)) if first == "--reader" => {
            let (dir, rest) = rest.split_first().ok_or("--reader needs a directory")?;
            reader(Path::new(dir), &parse(rest)?)
        }
        _ => writer(&args, &parse(&args)?),
    }
}

fn writer(args: &[String], o: &Opts) -> Res<()> {
    let base = if let Some(d) = &o.dir {
        d.clone()
    } else if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let tmp = tempfile::tempdir_in(base)?;
    let dir = tmp.path().join("q");
    os::set_thread_affinity(&[o.cores.0])?;
    let cfg = WriterConfig {
        segment_size: o.segment_mib << 20,
        maintenance_cpus: Some(vec![o.cores.0]),
        preallocate: if o.pretouch {
            Preallocate::Pretouch
        } else {
            Preallocate::Background
        },
        retention: RetentionPolicy {
            max_bytes: Some(4 << 30),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(&dir, cfg)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--reader")
        .arg(&dir)
        .args(args)
        .spawn()?;
    // Let the reader open and the first background segment preparation finish.
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = vec![7u8; o.size];
    let gap = 1_000_000_000 / o.rate;
    let mut slow: Vec<(u64, u64)> = Vec::new(); // (ns, measured message index), slowest first
    let mut rolls: Vec<u64> = Vec::new(); // append time of each record that rolled
    let mut last_seg = w.tail().segment;
    let mut classes = Classes::new()?;
    let mut late = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut pretouch_calls = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let start = os::monotonic_ns();
    for i in 0..o.count + WARMUP {
        let due = start + i * gap;
        let mut now = os::monotonic_ns();
        while now < due {
            if o.pretouch {
                let more = w.pretouch()?;
                let after = os::monotonic_ns();
                pretouch_calls.saturating_record(after.saturating_sub(now));
                now = after;
                if more {
                    continue;
                }
            }
            std::hint::spin_loop();
            now = os::monotonic_ns();
        }
        let t0 = os::monotonic_ns();
        if i >= WARMUP {
            late.saturating_record(t0.saturating_sub(due).max(1));
        }
        if let Some(stamp) = buf.first_chunk_mut::<8>() {
            *stamp = t0.to_ne_bytes();
        }
        let at = w.tail();
        w.append(1, &buf)?;
        let took = os::monotonic_ns().saturating_sub(t0);
        let seg = w.tail().segment;
        if seg != last_seg && i >= WARMUP {
            rolls.push(took);
        }
        last_seg = seg;
        // The record's bytes in the file (segments are page aligned, so file pages and
        // address-space pages coincide); the header comes first.
        let class = classes.class(
            at.segment,
            at.offset,
            w.tail().offset.max(at.offset + 1) - 1,
        );
        if i >= WARMUP {
            classes.record(class, took);
            slow.push((took, i - WARMUP));
            slow.sort_unstable_by(|a, b| b.cmp(a));
            slow.truncate(5);
        }
    }
    let status = child.wait()?;
    classes.print("writer: append call");
    println!(
        "writer: sends late by p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns; {} by over 100 µs",
        late.value_at_quantile(0.5),
        late.value_at_quantile(0.99),
        late.value_at_quantile(0.999),
        late.max(),
        late.count_between(100_000, u64::MAX)
    );
    if o.pretouch {
        println!(
            "writer: {} pretouch calls, {} above 20 µs, {} above 100 µs, {} above 1 ms, max {} ns",
            pretouch_calls.len(),
            pretouch_calls.count_between(20_000, u64::MAX),
            pretouch_calls.count_between(100_000, u64::MAX),
            pretouch_calls.count_between(1_000_000, u64::MAX),
            pretouch_calls.max()
        );
    }
    let slowest: Vec<String> = slow
        .iter()
        .map(|(ns, i)| format!("{ns} ns (msg {i})"))
        .collect();
    println!("writer: slowest appends {}", slowest.join(", "));
    rolls.sort_unstable();
    if let (Some(lo), Some(hi)) = (rolls.first(), rolls.last()) {
        let mid = rolls.get(rolls.len() / 2).unwrap_or(hi);
        println!(
            "writer: {} appends rolled to a new segment: min {lo} ns, median {mid} ns, max {hi} ns",
            rolls.len()
        );
    }
    if !status.success() {
        return Err(format!("reader exited with {status}").into());
    }
    Ok(())
}

fn reader(dir: &Path, o: &Opts) -> Res<()> {
    os::set_thread_affinity(&[o.cores.1])?;
    let cfg = ReaderConfig {
        verify_crc: o.verify_crc,
        ..ReaderConfig::default()
    };
    let mut r = QueueReader::open(dir, cfg)?;
    let mut classes = Classes::new()?;
    let mut bursts: Vec<(u64, u64, u64, u64, u64)> = Vec::new(); // first msg, len, max, seg, off
    let mut got = 0u64;
    while got < o.count + WARMUP {
        let pos = r.position();
        let Some(m) = r.next()? else {
            std::hint::spin_loop();
            continue;
        };
        let now = os::monotonic_ns();
        let p = m.payload();
        let stamp = p.first_chunk::<8>().map_or(now, |s| u64::from_ne_bytes(*s));
        let lat = now.saturating_sub(stamp);
        // Addresses, not file offsets: fault-around windows are aligned in the address space,
        // and the mapping's base need not be 64 KiB aligned.
        let start = p.as_ptr() as u64;
        let class = classes.class(
            pos.segment,
            start,
            (start + p.len() as u64).saturating_sub(1),
        );
        got += 1;
        if got <= WARMUP {
            continue;
        }
        classes.record(class, lat);
        if o.bursts && lat > BURST_NS {
            match bursts.last_mut() {
                Some(b) if b.0 + b.1 == got => {
                    b.1 += 1;
                    b.2 = b.2.max(lat);
                }
                _ => bursts.push((got, 1, lat, pos.segment, pos.offset)),
            }
        }
    }
    println!(
        "{} B records, {} msgs/s, {} MiB segments, CRC {}",
        o.size,
        o.rate,
        o.segment_mib,
        if o.verify_crc { "verified" } else { "off" }
    );
    classes.print("reader: one-way latency");
    if o.bursts {
        println!("{} bursts above {BURST_NS} ns:", bursts.len());
        for (first, len, max, seg, off) in &bursts {
            println!("  msg {first:>8}  len {len:>4}  max {max:>9} ns  segment {seg} offset {off}");
        }
    }
    Ok(())
}

/// Latencies split by where the record lands: `other`, `first-on-page` (its bytes reach a 4 KiB
/// page no earlier record of the segment reached), `first-in-64k` (a new 64 KiB block).
struct Classes {
    hists: [(&'static str, Histogram<u64>); 3],
    all: Histogram<u64>,
    /// The segment last seen and the highest address (or offset) reached in it.
    seg: u64,
    reached: u64,
}

impl Classes {
    fn new() -> Res<Classes> {
        let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
        Ok(Classes {
            hists: [
                ("other", new()?),
                ("first-on-page", new()?),
                ("first-in-64k", new()?),
            ],
            all: new()?,
            seg: u64::MAX,
            reached: 0,
        })
    }

    /// The class of a record spanning `start..=end` in segment `seg`.
    fn class(&mut self, seg: u64, start: u64, end: u64) -> usize {
        if seg != self.seg {
            (self.seg, self.reached) = (seg, start);
        }
        let class = if end >> 16 != self.reached >> 16 {
            2
        } else if end >> 12 != self.reached >> 12 {
            1
        } else {
            0
        };
        self.reached = self.reached.max(end);
        class
    }

    fn record(&mut self, class: usize, ns: u64) {
        if let Some((_, h)) = self.hists.get_mut(class) {
            h.saturating_record(ns);
        }
        self.all.saturating_record(ns);
    }

    fn print(&self, what: &str) {
        println!("{what}");
        println!("class              count     p50     p90     p99   p99.9       max (ns)");
        for (name, h) in self
            .hists
            .iter()
            .chain(std::iter::once(&("all", self.all.clone())))
        {
            println!(
                "{name:14} {:>9} {:>7} {:>7} {:>7} {:>7} {:>9}",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            );
        }
    }
}
