//! Merged throughput of 8 queues into one reader, against reading one queue of the same total.
//!
//! `cargo bench -p chronicle-bus --bench fanin`
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chronicle_bus::{FanInConfig, FanInReader, MergeMode};
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, WriterConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SOURCES: usize = 8;
const PER_SOURCE: u64 = 50_000;
const PAYLOAD: [u8; 32] = [7u8; 32];

fn fill(root: &Path) -> (Vec<PathBuf>, PathBuf) {
    let mut paths = Vec::new();
    let cfg = WriterConfig {
        segment_size: 16 << 20,
        ..WriterConfig::default()
    };
    let mut ws: Vec<QueueWriter> = (0..SOURCES)
        .map(|i| {
            let p = root.join(format!("q{i}"));
            paths.push(p.clone());
            QueueWriter::open(&p, cfg.clone()).unwrap()
        })
        .collect();
    let single = root.join("single");
    let mut one = QueueWriter::open(&single, cfg.clone()).unwrap();
    // Interleaved timestamps: source i gets t = k * SOURCES + i (a different source every step).
    for k in 0..PER_SOURCE {
        for (i, w) in ws.iter_mut().enumerate() {
            let ts = 1_000_000 + k * SOURCES as u64 + i as u64;
            w.append_at(1, ts, &PAYLOAD).unwrap();
            one.append_at(1, ts, &PAYLOAD).unwrap();
        }
    }
    for w in ws {
        w.close().unwrap();
    }
    one.close().unwrap();
    (paths, single)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (paths, single) = fill(dir.path());
    let total = SOURCES as u64 * PER_SOURCE;
    let mut g = c.benchmark_group("fanin");
    g.throughput(Throughput::Elements(total));
    g.sample_size(10);
    g.bench_function("single_queue_read", |b| {
        b.iter(|| {
            let mut r = QueueReader::open(&single, ReaderConfig::default()).unwrap();
            let mut n = 0u64;
            while let Some(m) = r.next().unwrap() {
                n += m.payload().len() as u64 & 1;
                n += 1;
            }
            assert!(n >= total);
        })
    });
    for (name, mode) in [
        ("merge8_replay", MergeMode::Replay),
        ("merge8_live", MergeMode::Live),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut f = FanInReader::new(FanInConfig {
                    mode,
                    max_hold: None,
                    ..FanInConfig::default()
                })
                .unwrap();
                for (i, p) in paths.iter().enumerate() {
                    f.add_source(&format!("s{i}"), p).unwrap();
                }
                let mut n = 0u64;
                while let Some(m) = f.next().unwrap() {
                    n += m.payload().len() as u64 & 1;
                    n += 1;
                }
                assert!(n >= total);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
