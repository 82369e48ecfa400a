//! criterion: append (64 B, 1 KiB), read, the roll to a new segment, and the record CRC.
//!
//! Queues live in /dev/shm when it exists (page cache either way; this keeps disk writeback out
//! of the numbers) and retention keeps them small.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chronicle_core::{
    Preallocate, QueueReader, QueueWriter, ReaderConfig, RetentionPolicy, StartAt, WriterConfig,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn scratch() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn bounded(segment_size: u64) -> WriterConfig {
    WriterConfig {
        segment_size,
        retention: RetentionPolicy {
            max_bytes: Some(4 * segment_size),
            max_age: None,
            reader_ttl: Duration::from_secs(60),
        },
        ..WriterConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for size in [64usize, 1024] {
        let dir = scratch();
        let mut w = QueueWriter::open(dir.path().join("q"), bounded(64 << 20)).unwrap();
        let payload = vec![0x42u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("append", size), &size, |b, _| {
            b.iter(|| w.append(1, black_box(&payload)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("claim_commit", size), &size, |b, _| {
            b.iter(|| {
                let mut c = w.claim(1, size).unwrap();
                c.payload_mut().copy_from_slice(black_box(&payload));
                c.commit()
            })
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    for (size, crc) in [(64usize, true), (64, false), (1024, true)] {
        let dir = scratch();
        let q = dir.path().join("q");
        let mut w = QueueWriter::open(
            &q,
            WriterConfig {
                segment_size: 64 << 20,
                ..WriterConfig::default()
            },
        )
        .unwrap();
        let n = 200_000u64;
        for _ in 0..n {
            w.append(1, &vec![7u8; size]).unwrap();
        }
        let cfg = ReaderConfig {
            verify_crc: crc,
            ..ReaderConfig::default()
        };
        let mut r = QueueReader::open(&q, cfg).unwrap();
        g.throughput(Throughput::Elements(1));
        let name = if crc { "next" } else { "next_no_crc" };
        g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
            b.iter(|| {
                if let Some(m) = r.next().unwrap() {
                    return black_box(m.payload().len());
                }
                r.seek(StartAt::Earliest).unwrap();
                0
            })
        });
    }
    g.finish();
}

/// CRC-32C latency over a record's covered bytes (24 header bytes + payload): each call starts
/// from the previous call's state, so calls cannot overlap and the time is the dependent
/// latency a writer or reader pays per record (the hardware chain is latency-bound).
fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc");
    for payload in [64usize, 1024, 65536] {
        let data: Vec<u8> = (0..24 + payload).map(|i| (i % 251) as u8).collect();
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(BenchmarkId::new("crc32c_dependent", payload), |b| {
            let mut st = chronicle_core::Crc32c::new();
            b.iter(|| {
                st = st.update(black_box(&data));
                st
            })
        });
    }
    g.finish();
}

/// The single append that crosses into a new segment: with the next segment prepared by the
/// maintenance thread (the default) and, for comparison, created on the appending thread.
fn roll(c: &mut Criterion) {
    let mut g = c.benchmark_group("roll");
    for (name, pre) in [
        ("background", Preallocate::Background),
        ("inline", Preallocate::Inline),
    ] {
        let dir = scratch();
        let seg = 4u64 << 20;
        let cfg = WriterConfig {
            preallocate: pre,
            ..bounded(seg)
        };
        let mut w = QueueWriter::open(dir.path().join("q"), cfg).unwrap();
        let payload = [1u8; 1000];
        g.bench_function(BenchmarkId::new("append_that_rolls_1KiB", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Fill the current segment (untimed) until the next append must roll.
                    let start_seg = segment_of(&w);
                    loop {
                        let t = Instant::now();
                        w.append(1, &payload).unwrap();
                        let dt = t.elapsed();
                        if segment_of(&w) != start_seg {
                            total += dt;
                            break;
                        }
                    }
                    // In steady state a segment takes far longer to fill than to prepare.
                    std::thread::sleep(Duration::from_millis(5));
                }
                total
            })
        });
    }
    g.finish();
}

fn segment_of(w: &QueueWriter) -> u64 {
    w.tail().segment
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = append, read, roll, crc
}
criterion_main!(benches);
