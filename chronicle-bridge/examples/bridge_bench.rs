//! Throughput and added end-to-end latency of the NATS bridge over loopback.
//!
//! Starts a local `nats-server -js` (temporary store), runs an out-bridge and an in-bridge in
//! this process (the library, the same code as `chron-bridge`), and measures, per payload size:
//!
//! - throughput: N records already in queue A, time until all of them are in queue B;
//! - latency: records appended to A at a paced rate; for each one arriving in B, the time since
//!   it was appended (both ends read CLOCK_REALTIME on one host); percentiles from hdrhistogram.
//!
//! ```text
//! cargo run --release -p chronicle-bridge --example bridge_bench -- \
//!     [--records 200000] [--rate 10000] [--seconds 5] [--sizes 64,1024] [--window 256] \
//!     [--batches 1,256] [--batch-bytes 131072] [--linger-us 1000] [--no-latency] [--csv FILE] \
//!     [--compress] [--payload const|ticks]
//! ```
//! `--payload ticks` writes tick-like records (instrument, a random-walk price, quantity, side,
//! a timestamp, then price levels up to the size) instead of constant bytes, which would
//! flatter `--compress` (LZ4 envelopes).
//! Every size is measured with every out-bridge batch size in `--batches` (1: one record per
//! message). `--csv` also writes `size,batch,msgs_per_s,p50_us,p99_us` lines (for a chart).
//! `NATS_SERVER` overrides the nats-server binary (default /usr/sbin/nats-server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronicle_bridge::connect::{NatsConfig, StreamSpec};
use chronicle_bridge::inbound::{self, InConfig};
use chronicle_bridge::outbound::{self, OutConfig};
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig};
use hdrhistogram::Histogram;
use tokio::sync::oneshot;

struct Args {
    records: u64,
    rate: u64,
    seconds: u64,
    sizes: Vec<usize>,
    window: usize,
    batches: Vec<usize>,
    batch_bytes: usize,
    linger_us: u64,
    latency: bool,
    csv: Option<PathBuf>,
    compress: bool,
    ticks: bool,
}

/// The out-bridge's batching.
#[derive(Clone, Copy)]
struct Batching {
    window: usize,
    batch: usize,
    batch_bytes: usize,
    linger_us: u64,
    compress: bool,
}

fn args() -> Args {
    let mut a = Args {
        records: 200_000,
        rate: 10_000,
        seconds: 5,
        sizes: vec![64, 1024],
        window: 256,
        batches: vec![1, 256],
        batch_bytes: outbound::DEFAULT_BATCH_BYTES,
        linger_us: outbound::DEFAULT_LINGER_US,
        latency: true,
        csv: None,
        compress: false,
        ticks: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(k) = it.next() {
        if k == "--no-latency" {
            a.latency = false;
            continue;
        }
        if k == "--compress" {
            a.compress = true;
            continue;
        }
        let val = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--records" => a.records = val.parse().unwrap(),
            "--rate" => a.rate = val.parse().unwrap(),
            "--seconds" => a.seconds = val.parse().unwrap(),
            "--window" => a.window = val.parse().unwrap(),
            "--sizes" => a.sizes = val.split(',').map(|s| s.parse().unwrap()).collect(),
            "--batches" => a.batches = val.split(',').map(|s| s.parse().unwrap()).collect(),
            "--batch-bytes" => a.batch_bytes = val.parse().unwrap(),
            "--linger-us" => a.linger_us = val.parse().unwrap(),
            "--csv" => a.csv = Some(PathBuf::from(val)),
            "--payload" => a.ticks = val == "ticks",
            other => panic!("unknown option {other}"),
        }
    }
    a
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path) -> (Server, String) {
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["-js", "-sd"])
        .arg(dir.join("js"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Server(child), format!("nats://127.0.0.1:{port}"))
}

/// Runs both bridges on their own threads; dropping the returned senders stops them.
fn start_bridges(
    url: &str,
    a: &Path,
    b: &Path,
    stream: &str,
    bt: Batching,
) -> Vec<(oneshot::Sender<()>, std::thread::JoinHandle<()>)> {
    let subject = format!("bench.{stream}");
    let spec = StreamSpec {
        subjects: vec![subject.clone()],
        retention: async_nats::jetstream::stream::RetentionPolicy::Limits,
        replicas: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: Duration::ZERO,
        max_bytes: -1,
    };
    let out = OutConfig {
        queue: a.to_path_buf(),
        reader: "bench".into(),
        start: StartAt::Earliest,
        stream: stream.into(),
        subject: subject.clone(),
        host: "bench".into(),
        source_name: "a".into(),
        window: bt.window,
        batch: bt.batch,
        batch_bytes: bt.batch_bytes,
        linger: Duration::from_micros(bt.linger_us),
        compress: bt.compress,
        create: Some(spec.clone()),
        stats_interval: std::env::var("BENCH_STATS")
            .ok()
            .map(|_| Duration::from_secs(1)),
        stats_json: false,
        metrics_listen: None,
        exit_at_end: false,
    };
    let inc = InConfig {
        stream: stream.into(),
        consumer: "bench".into(),
        filter_subject: Some(subject),
        queue: b.to_path_buf(),
        writer: WriterConfig::default(),
        state: InConfig::default_state_path(b),
        batch: 256,
        sync_batches: false,
        ack_wait: Duration::from_secs(5),
        max_ack_pending: 20_000,
        create: Some(spec),
        gap_timeout: None,
        stats_interval: std::env::var("BENCH_STATS")
            .ok()
            .map(|_| Duration::from_secs(1)),
        stats_json: false,
        metrics_listen: None,
    };
    let nats = NatsConfig::from_env(url);
    let n2 = nats.clone();
    vec![
        spawn_bridge(move |rx| {
            inbound::run(inc, n2, async move {
                let _ = rx.await;
            })
        }),
        spawn_bridge(move |rx| {
            outbound::run(out, nats, async move {
                let _ = rx.await;
            })
        }),
    ]
}

/// Runs one bridge direction on its own thread and current-thread runtime; `run` gets the
/// receiver whose signal (or drop) stops it.
fn spawn_bridge<E, Fut>(
    run: impl FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
) -> (oneshot::Sender<()>, std::thread::JoinHandle<()>)
where
    E: std::fmt::Debug,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let (tx, rx) = oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(rx)).unwrap();
    });
    (tx, handle)
}

fn stop(handles: Vec<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>) {
    for (tx, h) in handles {
        let _ = tx.send(());
        h.join().unwrap();
    }
}

fn open_reader(q: &Path) -> QueueReader {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let cfg = ReaderConfig {
            spin_limit: 64,
            yield_limit: 4,
            ..ReaderConfig::default()
        };
        match QueueReader::open(q, cfg) {
            Ok(r) => return r,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("cannot open {}: {e}", q.display()),
        }
    }
}

/// A tick-like payload of `size` bytes: instrument, random-walk price, quantity, side, a
/// timestamp, then (price, quantity) levels around the price.
fn tick(rng: &mut u64, price: &mut i64, i: u64, size: usize) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    *price += (next() % 11) as i64 - 5;
    let mut v = Vec::with_capacity(size + 16);
    v.extend_from_slice(&((next() % 50) as u32).to_le_bytes());
    v.extend_from_slice(&price.to_le_bytes());
    v.extend_from_slice(&((next() % 1000) as u32).to_le_bytes());
    v.push((next() % 2) as u8);
    v.extend_from_slice(&(1_700_000_000_000_000_000 + i * 997 + next() % 500).to_le_bytes());
    let mut level = 0i64;
    while v.len() < size {
        level += 1;
        v.extend_from_slice(&(*price + level * ((next() % 3) as i64 + 1)).to_le_bytes());
        v.extend_from_slice(&((next() % 5000) as u32).to_le_bytes());
    }
    v.truncate(size);
    v
}

fn throughput(url: &str, dir: &Path, size: usize, n: u64, bt: Batching, ticks: bool) -> f64 {
    let a = dir.join(format!("tp-a-{size}-{}", bt.batch));
    let b = dir.join(format!("tp-b-{size}-{}", bt.batch));
    let mut w = QueueWriter::open(&a, WriterConfig::default()).unwrap();
    let constant = vec![0xA5u8; size];
    let (mut rng, mut price) = (0x2545_F491_4F6C_DD1D_u64, 1_000_000i64);
    for i in 0..n {
        if ticks {
            w.append((i % 7) as u32, &tick(&mut rng, &mut price, i, size))
                .unwrap();
        } else {
            w.append((i % 7) as u32, &constant).unwrap();
        }
    }
    let t0 = Instant::now();
    let h = start_bridges(url, &a, &b, &format!("TP{size}_{}", bt.batch), bt);
    let mut r = open_reader(&b);
    let mut got = 0;
    while got < n {
        match r.next().unwrap() {
            Some(_) => got += 1,
            None => {
                let _ = r.wait(Duration::from_millis(100)).unwrap();
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop(h);
    w.close().unwrap();
    drop(r);
    // Free the disk for the next run: both queues and the stream.
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
    delete_stream(url, &format!("TP{size}_{}", bt.batch));
    n as f64 / secs
}

fn delete_stream(url: &str, stream: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream(stream).await;
    });
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn latency(
    url: &str,
    dir: &Path,
    size: usize,
    rate: u64,
    seconds: u64,
    bt: Batching,
) -> Histogram<u64> {
    let a = dir.join(format!("lat-a-{size}-{}", bt.batch));
    let b = dir.join(format!("lat-b-{size}-{}", bt.batch));
    let mut w = QueueWriter::open(&a, WriterConfig::default()).unwrap();
    let h = start_bridges(url, &a, &b, &format!("LAT{size}_{}", bt.batch), bt);
    // Warm up: the first record also creates B.
    w.append(0, &vec![0u8; size]).unwrap();
    let mut r = open_reader(&b);
    r.seek(StartAt::Latest).unwrap();
    let n = rate * seconds;
    let writer = std::thread::spawn(move || {
        let payload = vec![0x5Au8; size];
        let t0 = Instant::now();
        for i in 0..n {
            let due = Duration::from_nanos(i * 1_000_000_000 / rate);
            // Sleep-paced (a spinning writer would take a core from the bridges); each
            // record's timestamp is taken at append, so pacing jitter does not bias latency.
            if let Some(d) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(d);
            }
            w.append(1, &payload).unwrap();
        }
        w
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut got = 0;
    let warmup = rate / 10;
    while got < n {
        match r.next().unwrap() {
            Some(m) => {
                if m.type_id() == 1 {
                    got += 1;
                    if got > warmup {
                        let _ = hist.record(now_ns().saturating_sub(m.timestamp_ns()).max(1));
                    }
                }
            }
            None => {
                let _ = r.wait(Duration::from_millis(100)).unwrap();
            }
        }
    }
    let w = writer.join().unwrap();
    stop(h);
    w.close().unwrap();
    hist
}

fn us(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1000.0)
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    let (_server, url) = start_server(&root);
    println!(
        "NATS bridge over loopback: out-bridge -> nats-server (JetStream, file storage, R1) -> in-bridge; window {}, batch bytes {}, linger {} us, lz4 {}, payload {}",
        a.window,
        a.batch_bytes,
        a.linger_us,
        a.compress,
        if a.ticks { "ticks" } else { "constant" }
    );
    println!(
        "| payload | batch | throughput (msgs/s) | MB/s | latency p50 | p90 | p99 | p99.9 | max | paced rate |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut csv = String::from("size,batch,msgs_per_s,p50_us,p99_us\n");
    for &size in &a.sizes {
        for &batch in &a.batches {
            let bt = Batching {
                window: a.window,
                batch,
                batch_bytes: a.batch_bytes,
                linger_us: a.linger_us,
                compress: a.compress,
            };
            let tp = throughput(&url, &root, size, a.records, bt, a.ticks);
            let q = |h: &Option<Histogram<u64>>, p: f64| h.as_ref().map(|h| h.value_at_quantile(p));
            let h = a
                .latency
                .then(|| latency(&url, &root, size, a.rate, a.seconds, bt));
            let show = |v: Option<u64>| v.map_or("-".to_string(), us);
            println!(
                "| {size} B | {batch} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {}/s |",
                tp,
                tp * size as f64 / 1e6,
                show(q(&h, 0.50)),
                show(q(&h, 0.90)),
                show(q(&h, 0.99)),
                show(q(&h, 0.999)),
                show(h.as_ref().map(|h| h.max())),
                a.rate
            );
            csv.push_str(&format!(
                "{size},{batch},{tp:.0},{},{}\n",
                q(&h, 0.50).map_or(String::new(), |v| format!("{:.1}", v as f64 / 1e3)),
                q(&h, 0.99).map_or(String::new(), |v| format!("{:.1}", v as f64 / 1e3)),
            ));
        }
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, csv).unwrap();
    }
}
