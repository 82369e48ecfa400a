//! Appends N records of SIZE bytes as fast as possible and prints the rate (profiling aid).
#![allow(clippy::unwrap_used)]
use std::time::Instant;

use chronicle_core::{QueueWriter, RetentionPolicy, WriterConfig};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let size: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let cfg = WriterConfig {
        retention: RetentionPolicy {
            max_bytes: Some(256 << 20),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(dir.path().join("q"), cfg).unwrap();
    let p = vec![1u8; size];
    let t = Instant::now();
    let mut chunk = Instant::now();
    let mut rates = Vec::new();
    for i in 0..n {
        w.append(1, &p).unwrap();
        if i % 100_000 == 99_999 {
            rates.push(chunk.elapsed().as_nanos() as f64 / 100_000.0);
            chunk = Instant::now();
        }
    }
    let dt = t.elapsed();
    if std::env::var("CHUNKS").is_ok() {
        println!(
            "ns/append per 100k chunk: {:?}",
            rates.iter().map(|r| *r as u32).collect::<Vec<_>>()
        );
    }
    println!(
        "{n} appends of {size} B in {dt:?}: {:.1} M/s, {:.1} ns each",
        n as f64 / dt.as_secs_f64() / 1e6,
        dt.as_nanos() as f64 / n as f64
    );
}
