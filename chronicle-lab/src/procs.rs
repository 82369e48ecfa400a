//! The role processes of the lab's orchestrators ([`soak`](crate::soak), [`demo`](crate::demo)):
//! the calling executable re-run with a role subcommand, in its own process group (Ctrl-C
//! reaches the parent only, which stops its children in order), its stdout lines handed to the
//! parent over a channel, and killed and reaped if still running when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The calling executable with `args`: how an orchestrator starts one of its roles.
pub(crate) fn role_command(args: &[String]) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the chron-cli executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    Ok(cmd)
}

/// A started role process.
#[derive(Debug)]
pub(crate) struct Proc {
    /// Its name in the parent's reports.
    pub label: String,
    pub pid: u32,
    child: Child,
    /// Its standard input, when the command asked for a pipe.
    pub stdin: Option<ChildStdin>,
    /// Its exit status, once [`exited`](Self::exited) saw it.
    pub exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (stdin as the caller set it up) in its own process group, with stderr
    /// inherited; every line of its stdout goes to `tx` labelled `label`, read on a thread of
    /// its own and handed over unparsed (the parent parses on its main thread).
    pub(crate) fn spawn(
        label: &str,
        mut cmd: Command,
        tx: &mpsc::Sender<(String, String)>,
    ) -> std::io::Result<Proc> {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            let label = label.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((label.clone(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Proc {
            label: label.to_string(),
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            exit: None,
        })
    }

    /// Whether it has exited (and its status is recorded).
    pub(crate) fn exited(&mut self) -> bool {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit.is_some()
    }

    /// Sends `sig` unless it has been reaped.
    pub(crate) fn signal(&mut self, sig: libc::c_int) {
        if self.exited() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: sending a signal to our own child, not yet reaped, so the pid is ours.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Writes `line` to its standard input. A role that already died (its pipe is broken) is
    /// not an error here: the caller's liveness check reports it with its exit status. The
    /// write runs with SIGPIPE blocked, because `chron-cli` restores SIGPIPE's default (its
    /// output piped into `head` ends quietly) and a dead role must not end the orchestrator.
    pub(crate) fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        let written = without_sigpipe(|| {
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.flush())
        });
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.exit = Some(st);
            }
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL; returns whether it exited on its own.
    pub(crate) fn stop(&mut self, grace: Duration) -> bool {
        if self.exited() {
            return true;
        }
        self.signal(libc::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(process = %self.label, ?grace, "did not stop within its grace period: killed");
        self.kill();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` with SIGPIPE blocked on this thread, then discards a SIGPIPE that `f` raised, so a
/// write to a dead process's pipe returns `EPIPE` instead of ending this process.
fn without_sigpipe<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `sigset_t` is plain data; both sets are initialised by `sigemptyset` (and
    // `pthread_sigmask` fills `old`) before they are read.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to live sets; changing this thread's signal mask has no
    // memory-safety preconditions.
    let blocked = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0
    };
    let out = f();
    if blocked {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointers; a zero timeout only takes a SIGPIPE already pending (standard
        // signals do not queue, so one take is enough), then the old mask is restored.
        unsafe {
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_to_a_dead_role_is_no_sigpipe() {
        // The disposition chron-cli runs with; the test runner's default (ignored) would hide
        // the signal. Restored below, so other tests keep the runner's.
        // SAFETY: changing SIGPIPE's disposition has no memory-safety preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (tx, _rx) = mpsc::channel();
        let mut cmd = Command::new("true");
        cmd.stdin(Stdio::piped());
        let mut pr = Proc::spawn("dead", cmd, &tx).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while !pr.exited() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(pr.exited());
        // Without the guard this write ends the test process with SIGPIPE.
        let sent = pr.send_line("go");
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        sent.unwrap();
        assert!(pr.exit.is_some_and(|st| st.success()));
    }
}
