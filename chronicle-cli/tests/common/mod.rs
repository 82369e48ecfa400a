//! Helpers for the CLI tests: run the real binary with a watchdog, build queues with fixed
//! timestamps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chronicle_core::{Preallocate, QueueWriter, WriterConfig};

/// Every wait in these tests gives up after this (the VM is small and noisy; this is a
/// watchdog, not a performance assertion).
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// A fixed base time: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000_000_000_000;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chron-cli"));
    c.env_remove("RUST_BACKTRACE").env("NO_COLOR", "1");
    c
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` with the watchdog; kills and reaps it on expiry.
pub fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chron-cli did not finish within {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs chron-cli with `args`, feeding `stdin`.
pub fn run(args: &[&str], stdin: &[u8]) -> Out {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut si = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = si.write_all(&input);
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let st = wait(&mut child);
    feeder.join().unwrap();
    Out {
        code: st.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn small() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    }
}

/// A queue with `n` records of type `i % 3`, payload `rec-<i>`, stamped `T0 + i ms`.
pub fn make_queue(dir: &Path, n: u64) {
    let mut w = QueueWriter::open(dir, small()).unwrap();
    for i in 0..n {
        w.append_at(
            (i % 3) as u32,
            T0 + i * 1_000_000,
            format!("rec-{i}").as_bytes(),
        )
        .unwrap();
    }
    w.close().unwrap();
    wait_unlocked(dir);
}

/// Waits (bounded) until no open file holds the queue's writer lock. A closed writer's lock can
/// outlive it for a moment: a child process that another test thread is spawning holds a copy of
/// every descriptor (close-on-exec ones included) between its fork and its exec, and an OFD lock
/// lasts until the last descriptor of its open file is closed. Tests that expect a closed writer
/// wait for that moment to pass instead of racing it.
pub fn wait_unlocked(dir: &Path) {
    wait_file_unlocked(&dir.join("writer.lock"));
}

/// Waits (bounded) until no open file holds the OFD lock of `path` (a writer lock or a named
/// reader's meta): see [`wait_unlocked`] for why a closed holder's lock can outlive it.
pub fn wait_file_unlocked(path: &Path) {
    let lock = std::fs::File::open(path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while chronicle_core::sys::is_locked(&lock).unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "lock of {} still held 30 s after close",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Asserts a failure is exactly one `chron-cli: ...` line on stderr.
pub fn assert_one_sentence(o: &Out, code: i32, needle: &str) {
    assert_eq!(o.code, code, "{o:?}");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{o:?}");
    assert!(lines[0].starts_with("chron-cli: "), "{o:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {o:?}");
    assert!(!o.stderr.contains("panicked"), "{o:?}");
    assert!(!o.stderr.contains("backtrace"), "{o:?}");
}

/// A pid no process can have (above the kernel's maximum).
pub const NO_SUCH_PID: u32 = 0x7fff_fff0;

/// Overwrites the liveness fields of a reader meta file (pid at 128, start time at 136,
/// heartbeat at 144; see `chronicle_core::layout`).
pub fn set_reader_liveness(meta: &Path, pid: u32, start_time: u64, heartbeat_ns: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(meta).unwrap();
    f.write_all_at(&pid.to_le_bytes(), 128).unwrap();
    f.write_all_at(&start_time.to_le_bytes(), 136).unwrap();
    f.write_all_at(&heartbeat_ns.to_le_bytes(), 144).unwrap();
}

/// Opens named reader `name`, reads `n` records, commits and closes it.
pub fn make_reader(q: &Path, name: &str, n: u64) {
    let mut r =
        chronicle_core::QueueReader::open(q, chronicle_core::ReaderConfig::named(name)).unwrap();
    for _ in 0..n {
        r.next().unwrap().unwrap();
    }
    r.commit().unwrap();
    drop(r);
    wait_file_unlocked(&q.join("readers").join(format!("{name}.meta")));
}
