//! Helpers shared by the multi-process tests: child processes are this same test binary,
//! re-executed to run one `#[ignore]`d entry test with a role in the environment.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Environment variable naming the child's role.
pub const ROLE: &str = "CHRONICLE_TEST_ROLE";

/// Deterministic payload of record `seq`: its content is derivable from the seq alone, so any
/// record read back can be verified byte for byte.
pub fn payload(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2654435761) % 200) as usize;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (seq as u8) ^ (i as u8).wrapping_mul(31)));
    v
}

/// A new queue `q` in a fresh temporary directory (removed when the returned guard drops), with
/// its writer open on `cfg`.
pub fn new_queue(
    cfg: chronicle_core::WriterConfig,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    chronicle_core::QueueWriter,
) {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let w = chronicle_core::QueueWriter::open(&q, cfg).unwrap();
    (dir, q, w)
}

/// A writer config with 64 KiB segments (and an index entry every KiB), so a test of a few
/// thousand records crosses several segments.
pub fn small_segments() -> chronicle_core::WriterConfig {
    chronicle_core::WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        ..chronicle_core::WriterConfig::default()
    }
}

/// A writer config with 64 KiB segments prepared inline (no maintenance thread), for tests
/// that look at the files while the writer is open.
pub fn small_inline_segments() -> chronicle_core::WriterConfig {
    chronicle_core::WriterConfig {
        segment_size: 64 << 10,
        preallocate: chronicle_core::Preallocate::Inline,
        ..chronicle_core::WriterConfig::default()
    }
}

/// Iterations of a crash test: `CHRONICLE_CRASH_ITERS`, or `default` (CI's shorter count).
pub fn crash_iterations(default: u64) -> u64 {
    std::env::var("CHRONICLE_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `#[ignore]`d test that each multi-process test file runs as its children's entry point.
pub const ENTRY: &str = "child_entry";

/// This test binary, to be re-run as a child: the test [`ENTRY`] alone, with `role` and extra env
/// vars, stdout piped (the caller adds what else it needs and starts it).
pub fn child_command(role: &str, env: &[(&str, String)]) -> Command {
    child_command_at(&std::env::current_exe().unwrap(), role, env)
}

/// [`child_command`] running `exe`, a copy of this test binary.
pub fn child_command_at(exe: &std::path::Path, role: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        ENTRY,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE, role)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts [`child_command`].
pub fn spawn_child(role: &str, env: &[(&str, String)]) -> Child {
    child_command(role, env).spawn().unwrap()
}

/// Lines printed by a child, read on a thread so the parent can wait with a deadline.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(out: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// The next line, whatever it is; an error after `timeout` or once the child's output
    /// closed.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Next line starting with `prefix` (others are skipped); `None` if the child closed its
    /// output first (it died); panics after `deadline`.
    pub fn expect_or_eof(&self, prefix: &str, deadline: Duration) -> Option<String> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Some(l),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(e) => panic!("child did not print {prefix:?} within {deadline:?}: {e:?}"),
            }
        }
    }

    /// Next line starting with `prefix` (others are skipped), or panic after `deadline`.
    pub fn expect(&self, prefix: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => panic!("child did not print {prefix:?} within {deadline:?}: {e:?}"),
            }
        }
    }
}

/// Kills (SIGKILL) and reaps a child.
pub fn kill9(child: &mut Child) {
    // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

/// Waits for a child to exit, killing it and panicking after `deadline` (watchdog).
pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= end {
            kill9(child);
            panic!("child {} did not exit within {deadline:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How a crash-test child's run ended.
pub struct CrashRun {
    /// It died of SIGKILL: at a crash point or by the parent's timer.
    pub killed: bool,
    /// Its `resume ...` line, printed once open (`None`: it died while opening).
    pub resume: Option<String>,
    /// Its `done ...` line, printed when it finished cleanly.
    pub done: Option<String>,
}

/// Runs a crash-test child to its end. The child prints `resume ...` once open and `done ...`
/// when finished; with `kill_after` the parent SIGKILLs it that long after `resume`. Dying of
/// anything but SIGKILL, or exiting unsuccessfully, fails; each wait is bounded by `deadline`.
pub fn run_crash_child(
    mut child: Child,
    kill_after: Option<Duration>,
    deadline: Duration,
) -> CrashRun {
    use std::os::unix::process::ExitStatusExt as _;
    let lines = Lines::new(child.stdout.take().unwrap());
    let Some(resume) = lines.expect_or_eof("resume", deadline) else {
        // Died while opening (a crash point in recovery, the lease write, ...).
        let st = child.wait().unwrap();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "child failed to start: {st:?}"
        );
        return CrashRun {
            killed: true,
            resume: None,
            done: None,
        };
    };
    let resume = Some(resume);
    if let Some(after) = kill_after {
        std::thread::sleep(after);
        kill9(&mut child);
        return CrashRun {
            killed: true,
            resume,
            done: None,
        };
    }
    let status = wait_with_deadline(&mut child, deadline);
    if status.signal() == Some(libc::SIGKILL) {
        return CrashRun {
            killed: true,
            resume,
            done: None,
        };
    }
    assert!(status.success(), "child failed: {status:?}");
    let done = Some(lines.expect("done", deadline));
    CrashRun {
        killed: false,
        resume,
        done,
    }
}

/// Small xorshift generator: tests print their seed so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_env_or_time(var: &str) -> Self {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{var}={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Files of `fuzz/corpus/<target>/` (empty when the directory is absent).
pub fn corpus(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
        .join("corpus")
        .join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<(std::path::PathBuf, Vec<u8>)> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}
