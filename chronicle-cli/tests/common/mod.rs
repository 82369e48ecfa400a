//! Helpers for the CLI tests: run the real binary with a watchdog, build queues with fixed
//! timestamps.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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

/// A temporary directory and the path of queue `q` in it (not created yet); the directory is
/// removed when the returned guard drops.
pub fn temp_queue_path() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    (tmp, q)
}

/// Like [`temp_queue_path`], the queue made by [`make_queue`] with `n` records.
pub fn temp_queue(n: u64) -> (tempfile::TempDir, PathBuf) {
    let (tmp, q) = temp_queue_path();
    make_queue(&q, n);
    (tmp, q)
}

/// `chron-cli append q extra..` as a writer in a process of its own: `line` written to its
/// stdin, which stays open (so does the queue) until the child is killed; stderr discarded.
pub fn spawn_append(q: &Path, extra: &[&str], stdout: Stdio, line: &[u8]) -> Child {
    let mut writer = bin()
        .arg("append")
        .arg(q)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let si = writer.stdin.as_mut().unwrap();
    si.write_all(line).unwrap();
    si.flush().unwrap();
    writer
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
    while chronicle_core::os::is_locked(&lock).unwrap() {
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

/// Asserts a success: exit code 0 and `needle` on stdout.
pub fn assert_success(o: &Out, needle: &str) {
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains(needle), "{needle:?} not in {o:?}");
}

/// A pid no process can have (above the kernel's maximum).
pub const NO_SUCH_PID: u32 = 0x7fff_fff0;

/// Overwrites the liveness fields of a reader meta file (pid at 128, start time at 136,
/// heartbeat at 144; see `chronicle_core::testing::layout`).
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

/// A free loopback TCP port (bound and released; good enough on a quiet loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`; the body, or None when nothing answers (yet).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|()| head.contains(" 200 "))
        .map(|()| body.to_string())
}

/// Polls `f` every 100 ms until it returns Some, for at most [`WATCHDOG`] (a watchdog, not a
/// timing assertion); `what` and `log` explain a timeout.
pub fn poll<T>(what: &str, log: &dyn Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: nothing within {WATCHDOG:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let f = std::fs::File::create(log).unwrap();
        Proc(
            cmd.stdin(Stdio::null())
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .spawn()
                .unwrap(),
        )
    }

    /// Like [`Proc::spawn`], stdout and stderr to files of their own.
    pub fn spawn_split(cmd: &mut Command, out: &Path, err: &Path) -> Proc {
        Proc(
            cmd.stdin(Stdio::null())
                .stdout(std::fs::File::create(out).unwrap())
                .stderr(std::fs::File::create(err).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.0.id() as i32, sig);
        }
    }

    /// SIGTERM and wait (bounded by the watchdog).
    pub fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        wait(&mut self.0)
    }

    /// [`Proc::stop`], and asserts the process exited with success; `log` explains a failure.
    pub fn stop_ok(&mut self, log: &dyn Fn() -> String) {
        let st = self.stop();
        assert!(st.success(), "{st}\n{}", log());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chron-cli feed --bus bus --rate rate` (no spinning), its output to `log`.
pub fn spawn_feed(bus: &Path, rate: &str, log: &Path) -> Proc {
    Proc::spawn(
        bin().args(["feed", "--bus", p(bus), "--rate", rate, "--spin-us", "0"]),
        log,
    )
}

/// `chron-cli strategy --bus bus --id id`, its output to `log`.
pub fn spawn_strategy(bus: &Path, id: &str, log: &Path) -> Proc {
    Proc::spawn(bin().args(["strategy", "--bus", p(bus), "--id", id]), log)
}

/// The text of each file of `files` (empty when it is missing), separated by `---` lines: the
/// logs a failing wait shows.
pub fn logs(files: &[&Path]) -> String {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The value of the one sample whose line starts with `series ` (name and labels exactly).
pub fn value(exposition: &str, series: &str) -> Option<String> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

/// The uid and gid of user `nobody`.
pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sets the permission bits of `path` to `mode`.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// For a test that runs chron-cli as user `nobody`: `None` (saying it is skipped) unless the
/// tests run as root; otherwise a temporary directory anyone may enter and, in it, a copy of
/// chron-cli anyone may run.
pub fn nobody_setup() -> Option<(tempfile::TempDir, PathBuf)> {
    if !is_root() {
        eprintln!("skipped: needs root to run chron-cli as user nobody");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let exe = tmp.path().join("chron-cli");
    std::fs::copy(env!("CARGO_BIN_EXE_chron-cli"), &exe).unwrap();
    chmod(&exe, 0o755);
    Some((tmp, exe))
}

pub fn as_nobody(exe: &Path, args: &[&str]) -> Out {
    use std::os::unix::process::CommandExt;
    let out = Command::new(exe)
        .args(args)
        .env("NO_COLOR", "1")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
