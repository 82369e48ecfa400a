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
