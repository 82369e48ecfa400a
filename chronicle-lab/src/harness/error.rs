//! The harness error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Which step of a transport's life failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// [`Transport::create`](super::Transport::create) in the parent (writer).
    Create,
    /// [`Transport::open`](super::Transport::open) in the child (reader).
    Open,
    /// [`Sender::connect`](super::Sender::connect) in the parent.
    Connect,
    /// [`Sender::send_with`](super::Sender::send_with).
    Send,
    /// [`Receiver::recv_with`](super::Receiver::recv_with).
    Recv,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Open => "open",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Recv => "recv",
        })
    }
}

/// Everything that can go wrong while setting up, running or collecting a measurement.
#[derive(Debug)]
#[non_exhaustive]
pub enum HarnessError {
    /// A [`RunConfig`](super::RunConfig) field is out of range.
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// No transport of that name is in the registry.
    UnknownTransport {
        /// The name asked for.
        name: String,
        /// The names the registry knows.
        known: Vec<&'static str>,
    },
    /// The transport does not implement the requested wait mode.
    UnsupportedWaitMode {
        /// Transport name.
        transport: String,
        /// The wait mode asked for.
        wait: super::WaitMode,
    },
    /// A harness-level OS operation (run directory, pipes to the child) failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// A transport operation failed.
    Transport {
        /// Transport name.
        transport: String,
        /// The step that failed.
        phase: Phase,
        /// The transport's error.
        source: io::Error,
    },
    /// The reader child process could not be started.
    Spawn {
        /// The program that was executed.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The reader child failed: it exited unsuccessfully, was killed, or reported an error.
    Child {
        /// Transport name.
        transport: String,
        /// What went wrong (exit status and/or error reported by the parent side).
        detail: String,
        /// Everything the child wrote to stderr.
        stderr: String,
    },
    /// The child's stdout did not follow the result protocol.
    Protocol {
        /// What was malformed or missing.
        detail: String,
        /// Everything the child wrote to stderr.
        stderr: String,
    },
    /// The run did not finish before its deadline; the child was killed and reaped.
    Timeout {
        /// Transport name.
        transport: String,
        /// What the parent was waiting for.
        waiting_for: &'static str,
        /// The deadline that expired, measured from the spawn.
        after: Duration,
        /// Everything the child wrote to stderr.
        stderr: String,
    },
    /// The child role was requested but its environment was malformed.
    ChildSpec {
        /// What was wrong.
        detail: String,
    },
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn transport(transport: &str, phase: Phase, source: io::Error) -> Self {
        Self::Transport {
            transport: transport.to_owned(),
            phase,
            source,
        }
    }
}

fn write_stderr(f: &mut fmt::Formatter<'_>, stderr: &str) -> fmt::Result {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() {
        f.write_str("; child stderr was empty")
    } else {
        write!(f, "; child stderr:\n{trimmed}")
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid harness config `{field}`: {reason}")
            }
            Self::UnknownTransport { name, known } => {
                write!(
                    f,
                    "unknown transport `{name}` (known: {})",
                    known.join(", ")
                )
            }
            Self::UnsupportedWaitMode { transport, wait } => {
                write!(
                    f,
                    "transport `{transport}` does not support wait mode `{wait}`"
                )
            }
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Transport {
                transport,
                phase,
                source,
            } => write!(f, "transport `{transport}` failed in {phase}: {source}"),
            Self::Spawn { program, source } => {
                write!(
                    f,
                    "could not spawn reader child `{}`: {source}",
                    program.display()
                )
            }
            Self::Child {
                transport,
                detail,
                stderr,
            } => {
                write!(f, "reader child for `{transport}` failed: {detail}")?;
                write_stderr(f, stderr)
            }
            Self::Protocol { detail, stderr } => {
                write!(f, "reader child broke the result protocol: {detail}")?;
                write_stderr(f, stderr)
            }
            Self::Timeout {
                transport,
                waiting_for,
                after,
                stderr,
            } => {
                write!(
                    f,
                    "run of `{transport}` timed out after {after:?} waiting for {waiting_for}; child killed"
                )?;
                write_stderr(f, stderr)
            }
            Self::ChildSpec { detail } => write!(f, "malformed harness child request: {detail}"),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. }
            | Self::Transport { source, .. }
            | Self::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}
