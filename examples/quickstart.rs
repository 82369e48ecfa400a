//! Two processes, one queue: this program creates a queue in a temporary directory, re-executes
//! itself as a reader process (a named, durable reader that sleeps on the queue's futex when idle),
//! appends records from this process, and prints what both sides saw.
//!
//! ```text
//! cargo run --release --example quickstart [-- COUNT]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chronicle::core::{QueueReader, QueueWriter, ReaderConfig, WaitOutcome, WriterConfig};

fn main() {
    if let Err(e) = run() {
        eprintln!("quickstart: {e}");
        std::process::exit(1);
    }
}

type BoxError = Box<dyn std::error::Error>;

fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reader") {
        let (Some(q), Some(n)) = (args.get(2), args.get(3)) else {
            return Err("usage: quickstart --reader QUEUE COUNT".into());
        };
        return reader(q, n.parse()?);
    }
    let count: u64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("chronicle-quickstart-{}", std::process::id()));
    let q = dir.join("ticks");
    let mut writer = QueueWriter::open(&q, WriterConfig::default())?;
    println!("queue    {}", q.display());

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--reader", &q.display().to_string(), &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no child stdout")?).lines();
    // Wait until the reader is attached, then stream.
    let ready = lines.next().ok_or("reader exited")??;
    println!("reader   {ready}");

    let start = Instant::now();
    let mut payload = [0u8; 64];
    for i in 0..count {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        writer.append(1, &payload)?;
    }
    let wrote = start.elapsed();
    println!(
        "writer   appended {count} x 64 B in {:.1} ms ({:.2} M msgs/s)",
        wrote.as_secs_f64() * 1e3,
        count as f64 / wrote.as_secs_f64() / 1e6
    );
    for line in lines {
        println!("reader   {}", line?);
    }
    let status = child.wait()?;
    writer.close()?;
    std::fs::remove_dir_all(&dir)?;
    if !status.success() {
        return Err(format!("reader process failed: {status}").into());
    }
    println!("ok       every record arrived once, in order, byte for byte");
    Ok(())
}

fn reader(q: &str, count: u64) -> Result<(), BoxError> {
    let mut r = QueueReader::open(q, ReaderConfig::named("quickstart"))?;
    println!(
        "attached as named reader 'quickstart' (pid {})",
        std::process::id()
    );
    let mut next = 0u64;
    let mut start = None;
    let mut sleeps = 0u64;
    while next < count {
        match r.next()? {
            Some(m) => {
                start.get_or_insert_with(Instant::now);
                let got = m
                    .payload()
                    .get(..8)
                    .map(|b| b.try_into())
                    .transpose()?
                    .map(u64::from_le_bytes);
                if m.seq() != next || got != Some(next) {
                    return Err(format!(
                        "expected record {next}, got seq {} payload {got:?}",
                        m.seq()
                    )
                    .into());
                }
                next += 1;
            }
            None => {
                r.commit()?;
                sleeps += 1;
                if let WaitOutcome::WriterGone(s) = r.wait(Duration::from_secs(10))? {
                    return Err(format!("writer gone ({s:?}) after {next} records").into());
                }
            }
        }
    }
    r.commit()?;
    let dt = start.map(|s| s.elapsed()).unwrap_or_default();
    println!(
        "read {next} records in {:.1} ms ({:.2} M msgs/s), went idle {sleeps} times, position committed at seq {}",
        dt.as_secs_f64() * 1e3,
        next as f64 / dt.as_secs_f64().max(1e-9) / 1e6,
        r.next_seq()
    );
    Ok(())
}
