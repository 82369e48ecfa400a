//! The re-exec protocol: how the parent starts, watches, reads and reaps the reader child.
//!
//! The parent runs `program args...` (by default [`std::env::current_exe`]) with three
//! environment variables: [`ENV_SPEC`] (the encoded run parameters, see
//! `config::ChildSpec`), [`ENV_DIR`] (the run directory holding the channel) and
//! [`ENV_PARENT`] (the parent's pid). A `main` that calls
//! [`run_child_if_requested`](super::run_child_if_requested) first sees `ENV_SPEC`, runs
//! the reader role and exits; without it the call returns `None` and costs nothing.
//!
//! The child reports on stdout with the line protocol described in [`super::report`]:
//! `ready` once the transport is open, then the results and `done`. Errors go to stderr
//! and a non-zero exit code (1 = run failed, 2 = malformed request, 3 = stdout
//! unwritable). The parent drains stdout and stderr on two threads (so the child can
//! never block on a full pipe), and a watchdog thread SIGKILLs the child when the run's
//! deadline passes. Every path out of the parent — success, error or unwinding — stops
//! the watchdog before reaping the child, so the signal can never hit a recycled pid. The
//! child asks the kernel (`PR_SET_PDEATHSIG`) to kill it if the parent thread dies, so a
//! spinning reader cannot outlive a crashed parent.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::{ChildSpec, RunConfig};
use super::error::HarnessError;
use super::report::{ChildResults, LINE_PREFIX};

/// Environment variable carrying the encoded run parameters; its presence selects the
/// reader role.
pub const ENV_SPEC: &str = "CHRONICLE_HARNESS_CHILD";
/// Environment variable carrying the run directory.
pub const ENV_DIR: &str = "CHRONICLE_HARNESS_DIR";
/// Environment variable carrying the parent's pid (checked against `getppid`).
pub const ENV_PARENT: &str = "CHRONICLE_HARNESS_PARENT";

/// The `ready` line body.
pub(crate) const READY: &str = "v1 ready";

/// Most stderr kept for error messages (the tail is kept).
const STDERR_KEEP: usize = 16 * 1024;

enum Event {
    Line(String),
    Eof,
}

/// A running reader child, owned by the parent.
pub(crate) struct ChildProc {
    transport: &'static str,
    child: Option<Child>,
    lines: Receiver<Event>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<String>>,
    watchdog: Option<(SyncSender<()>, JoinHandle<bool>)>,
    deadline: Instant,
    budget: Duration,
}

fn read_lines(stdout: ChildStdout, tx: SyncSender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::with_capacity(128);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if let Some(body) = line.trim_end().strip_prefix(LINE_PREFIX) {
                    if tx.send(Event::Line(body.to_owned())).is_err() {
                        break;
                    }
                }
            }
        }
    }
    let _ = tx.send(Event::Eof);
}

fn read_stderr(mut stderr: impl Read) -> String {
    let mut all = Vec::new();
    let _ = stderr.read_to_end(&mut all);
    let start = all.len().saturating_sub(STDERR_KEEP);
    let tail = all.get(start..).unwrap_or_default();
    String::from_utf8_lossy(tail).into_owned()
}

impl ChildProc {
    /// Spawns the reader for `transport` on `dir` and arms the watchdog.
    pub(crate) fn spawn(
        transport: &'static str,
        cfg: &RunConfig,
        dir: &Path,
    ) -> Result<Self, HarnessError> {
        let program = match &cfg.launcher.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| HarnessError::io("locating the current executable", e))?,
        };
        let spec = ChildSpec::from_run(transport, cfg).encode();
        let mut child = Command::new(&program)
            .args(&cfg.launcher.args)
            .env(ENV_SPEC, spec)
            .env(ENV_DIR, dir)
            .env(ENV_PARENT, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                program: program.clone(),
                source,
            })?;
        let spawned = Instant::now();
        let budget = cfg.deadline();
        let deadline = spawned + budget;

        let (line_tx, lines) = mpsc::sync_channel(4096);
        let stdout_thread = child.stdout.take().and_then(|out| {
            std::thread::Builder::new()
                .name("harness-child-stdout".into())
                .spawn(move || read_lines(out, line_tx))
                .ok()
        });
        let stderr_thread = child.stderr.take().and_then(|err| {
            std::thread::Builder::new()
                .name("harness-child-stderr".into())
                .spawn(move || read_stderr(err))
                .ok()
        });
        let pid = child.id();
        let (stop_tx, stop_rx) = mpsc::sync_channel::<()>(1);
        let watchdog = std::thread::Builder::new()
            .name("harness-watchdog".into())
            .spawn(move || {
                match stop_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Err(RecvTimeoutError::Timeout) => {
                        // SAFETY: `pid` is our child, and it has not been reaped: the
                        // owner of the `Child` joins this thread before any wait/try_wait,
                        // so the pid cannot have been recycled. kill(2) has no memory
                        // effects in this process.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                        true
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => false,
                }
            });
        let mut proc = Self {
            transport,
            child: Some(child),
            lines,
            stdout_thread,
            stderr_thread,
            watchdog: None,
            deadline,
            budget,
        };
        match watchdog {
            Ok(handle) => proc.watchdog = Some((stop_tx, handle)),
            Err(e) => {
                // Without a watchdog the run could hang; refuse to start it.
                proc.kill_and_reap();
                return Err(HarnessError::io("starting the watchdog thread", e));
            }
        }
        if proc.stdout_thread.is_none() || proc.stderr_thread.is_none() {
            proc.kill_and_reap();
            return Err(HarnessError::io(
                "starting the child output threads",
                std::io::Error::other("thread spawn failed or pipe missing"),
            ));
        }
        Ok(proc)
    }

    /// Waits for the child's `ready` line.
    pub(crate) fn wait_ready(&mut self) -> Result<(), HarnessError> {
        loop {
            match self.next_event() {
                Some(Event::Line(l)) if l == READY => return Ok(()),
                Some(Event::Line(_)) => {}
                Some(Event::Eof) => return Err(self.exited_early("before reporting ready")),
                None => return Err(self.timed_out("the child to open the transport")),
            }
        }
    }

    /// Collects the results, reaps the child and checks its exit status.
    pub(crate) fn finish(mut self) -> Result<ChildResults, HarnessError> {
        let mut results = ChildResults::default();
        let mut protocol_error = None;
        loop {
            match self.next_event() {
                Some(Event::Line(l)) => {
                    if let Err(e) = results.accept(&l) {
                        protocol_error.get_or_insert(e);
                    }
                    if results.done {
                        break;
                    }
                }
                Some(Event::Eof) => break,
                None => return Err(self.timed_out("the child's results")),
            }
        }
        let (status, killed, stderr) = self.reap();
        if killed {
            return Err(self.timeout_error("the child's results", stderr));
        }
        match status {
            Some(s) if s.success() => {}
            other => {
                return Err(HarnessError::Child {
                    transport: self.transport.to_owned(),
                    detail: describe(other),
                    stderr,
                });
            }
        }
        if let Some(detail) = protocol_error {
            return Err(HarnessError::Protocol { detail, stderr });
        }
        if !results.done {
            return Err(HarnessError::Protocol {
                detail: "stdout closed without a `done` line".to_owned(),
                stderr,
            });
        }
        Ok(results)
    }

    /// The parent side failed mid-run: give the child a moment to exit on its own (its
    /// own error is usually the root cause, e.g. a writer seeing EPIPE), then kill and
    /// reap it. Returns the child's failure if it had one, else `parent_error`.
    pub(crate) fn abort(mut self, parent_error: HarnessError) -> HarnessError {
        self.stop_watchdog();
        let grace = Instant::now() + Duration::from_millis(500);
        let mut exited = None;
        if let Some(child) = self.child.as_mut() {
            while Instant::now() < grace {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        exited = Some(s);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
        let (status, _, stderr) = self.reap();
        match exited.or(status) {
            Some(s) if !s.success() && exited.is_some() => HarnessError::Child {
                transport: self.transport.to_owned(),
                detail: format!(
                    "{}; the writer then failed: {parent_error}",
                    describe(Some(s))
                ),
                stderr,
            },
            _ => parent_error,
        }
    }

    fn next_event(&mut self) -> Option<Event> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Disconnected) => Some(Event::Eof),
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    fn exited_early(&mut self, when: &str) -> HarnessError {
        let (status, killed, stderr) = self.reap();
        if killed {
            return self.timeout_error("the child to open the transport", stderr);
        }
        HarnessError::Child {
            transport: self.transport.to_owned(),
            detail: format!("exited {when}: {}", describe(status)),
            stderr,
        }
    }

    fn timed_out(&mut self, waiting_for: &'static str) -> HarnessError {
        self.kill_and_reap_inner();
        let stderr = self.join_stderr();
        self.timeout_error(waiting_for, stderr)
    }

    fn timeout_error(&self, waiting_for: &'static str, stderr: String) -> HarnessError {
        HarnessError::Timeout {
            transport: self.transport.to_owned(),
            waiting_for,
            after: self.budget,
            stderr,
        }
    }

    /// Stops the watchdog (returns whether it fired), then waits for the child. The wait
    /// itself is bounded by the run deadline: a child that outstays it is killed through
    /// its `Child` handle (never by bare pid, so no recycled pid can be hit).
    fn reap(&mut self) -> (Option<ExitStatus>, bool, String) {
        let mut killed = self.stop_watchdog();
        let status = self.child.take().and_then(|mut c| {
            loop {
                match c.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() >= self.deadline => {
                        killed = true;
                        let _ = c.kill();
                        break c.wait().ok();
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                    Err(_) => {
                        let _ = c.kill();
                        break c.wait().ok();
                    }
                }
            }
        });
        let stderr = self.join_stderr();
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        (status, killed, stderr)
    }

    fn stop_watchdog(&mut self) -> bool {
        match self.watchdog.take() {
            Some((stop, handle)) => {
                let _ = stop.try_send(());
                handle.join().unwrap_or(false)
            }
            None => false,
        }
    }

    fn join_stderr(&mut self) -> String {
        self.stderr_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }

    fn kill_and_reap_inner(&mut self) {
        self.stop_watchdog();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn kill_and_reap(&mut self) {
        self.kill_and_reap_inner();
        let _ = self.join_stderr();
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Only reached with a live child on an early-return path; never leave a zombie
        // or an orphaned spinning reader behind.
        if self.child.is_some() {
            self.kill_and_reap();
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "exit status unavailable".to_owned(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => format!("ended with {s}"),
        },
    }
}

/// Child side: ask to be SIGKILLed when the parent dies, and bail out if it already has.
pub(crate) fn tie_to_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer signal number; no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let expected = std::env::var(ENV_PARENT)
        .ok()
        .and_then(|p| p.parse::<libc::pid_t>().ok());
    // SAFETY: getppid has no preconditions.
    let actual = unsafe { libc::getppid() };
    if let Some(expected) = expected {
        if expected != actual {
            // The parent died before the death signal was armed.
            std::process::exit(1);
        }
    }
}

/// Child side: write protocol lines to stdout and flush.
pub(crate) fn emit(text: &str) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(text.as_bytes())?;
    lock.flush()
}
