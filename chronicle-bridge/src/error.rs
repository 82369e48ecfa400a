//! Errors of the bridge.
//!
//! One enum for the crate. Every variant says what it is about (URL, stream, file, queue), so the
//! message alone tells an operator what to fix.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can stop a bridge.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError {
    /// The server URL list could not be parsed.
    InvalidUrl {
        /// The offending URL.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// No server in the list could be reached.
    Connect {
        /// The URL list.
        url: String,
        /// What the client reported.
        detail: String,
    },
    /// The server refused the user name and password, or the token.
    AuthFailed {
        /// The URL list.
        url: String,
        /// What the client reported.
        detail: String,
    },
    /// The server requires authentication and no credentials were given.
    AuthRequired {
        /// The URL list.
        url: String,
        /// What the client reported.
        detail: String,
    },
    /// The credentials file could not be read.
    Credentials {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The credentials file is not a usable NATS `.creds` file (no user JWT, no seed, a JWT
    /// that does not decode or is not a user's, a seed that is not the user's).
    CredsInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The server refused the user of a well-formed credentials file (the server says only
    /// "authorization violation"): the account is unknown to it (not signed by an operator it
    /// trusts, or not found by its account resolver), or the user is revoked or restricted.
    CredsRejected {
        /// The URL list.
        url: String,
        /// The file.
        path: PathBuf,
        /// What the client reported.
        detail: String,
        /// The public key of the user's account.
        account: String,
    },
    /// The user JWT of the credentials file has expired: the server refuses it (at start) or
    /// ended the session and refuses to take it back (while running). The file is read once,
    /// so no reconnect can succeed.
    CredsExpired {
        /// The URL list.
        url: String,
        /// The file.
        path: PathBuf,
        /// When the JWT expired (RFC 3339, UTC).
        expired_at: String,
    },
    /// A TLS file (`--tls-ca`, `--tls-cert`, `--tls-key`) is missing, unreadable or holds
    /// nothing usable.
    TlsFile {
        /// The option that named the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The server's certificate is not trusted: not issued by a trusted root (`--tls-ca`, or
    /// the system's roots without it), not valid for the host in the URL, or expired.
    TlsServerUntrusted {
        /// The URL list.
        url: String,
        /// What the TLS stack reported.
        detail: String,
        /// The `--tls-ca` file in use, if any.
        ca: Option<PathBuf>,
    },
    /// The server requires a client certificate (mutual TLS) and none was given.
    TlsClientCertRequired {
        /// The URL list.
        url: String,
        /// What the TLS stack reported.
        detail: String,
    },
    /// The server refused the client certificate that was given.
    TlsClientCertRejected {
        /// The URL list.
        url: String,
        /// What the TLS stack reported.
        detail: String,
        /// The `--tls-cert` file.
        cert: PathBuf,
    },
    /// TLS is required (`--tls-required`, a `--tls-*` file option or a `tls://` URL) and the
    /// server does not offer it.
    TlsNotOffered {
        /// The URL list.
        url: String,
        /// What the TLS stack reported.
        detail: String,
    },
    /// Any other TLS failure.
    Tls {
        /// The URL list.
        url: String,
        /// What the client reported.
        detail: String,
    },
    /// The stream does not exist and `--create-stream` was not given.
    StreamNotFound {
        /// The stream name.
        stream: String,
    },
    /// The server does not have JetStream enabled (or does not answer JetStream requests).
    JetStreamUnavailable {
        /// What the client reported.
        detail: String,
    },
    /// The server has JetStream, but not for the account the bridge connected as.
    JetStreamNotEnabledForAccount {
        /// What the server reported.
        detail: String,
    },
    /// A JetStream API call about a stream or consumer failed.
    JetStream {
        /// What was being done ("create stream S", "create consumer C", ...).
        op: String,
        /// What the server or client reported.
        detail: String,
    },
    /// A local queue operation failed.
    Queue {
        /// The queue directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The queue engine's error.
        source: chronicle_core::Error,
    },
    /// The in-bridge state file could not be read or written.
    State {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The in-bridge state file holds something this build cannot use.
    StateCorrupted {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The local queue and the state file disagree in a way that cannot be reconciled.
    StateMismatch {
        /// The queue directory.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A configuration value is out of range or inconsistent.
    InvalidConfig {
        /// Which setting and why.
        what: String,
    },
    /// The metrics endpoint could not be started (its address taken or invalid).
    Metrics {
        /// What the metrics server reported.
        source: chronicle_metrics::Error,
    },
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::InvalidUrl { url, reason } => {
                write!(f, "invalid NATS server URL {url:?}: {reason}")
            }
            BridgeError::Connect { url, detail } => {
                write!(f, "cannot connect to NATS at {url}: {detail}")
            }
            BridgeError::AuthFailed { url, detail } => write!(
                f,
                "NATS at {url} refused the credentials ({detail}); check --creds, NATS_USER/NATS_PASSWORD or NATS_TOKEN"
            ),
            BridgeError::AuthRequired { url, detail } => write!(
                f,
                "NATS at {url} requires authentication and no credentials were given ({detail}); pass --creds FILE (a .creds file, for a server with JWT accounts), or set NATS_USER and NATS_PASSWORD, or NATS_TOKEN"
            ),
            BridgeError::Credentials { path, source } => {
                write!(
                    f,
                    "cannot read credentials file {} (--creds): {source}",
                    path.display()
                )
            }
            BridgeError::CredsInvalid { path, problem } => write!(
                f,
                "--creds file {} is not a usable NATS credentials file: {problem}",
                path.display()
            ),
            BridgeError::CredsRejected {
                url,
                path,
                detail,
                account,
            } => write!(
                f,
                "NATS at {url} refused the user in --creds {} ({detail}): the server must trust the operator that signed account {account} and find that account through its resolver, and the user must not be revoked or restricted from connecting; check the server's operator and resolver, or use a .creds file of an account it knows",
                path.display()
            ),
            BridgeError::CredsExpired {
                url,
                path,
                expired_at,
            } => write!(
                f,
                "the user JWT in --creds {} expired at {expired_at} and NATS at {url} no longer accepts it; issue a new .creds file for the user and restart the bridge",
                path.display()
            ),
            BridgeError::TlsFile {
                option,
                path,
                problem,
            } => write!(f, "{option} file {}: {problem}", path.display()),
            BridgeError::TlsServerUntrusted { url, detail, ca } => match ca {
                Some(ca) => write!(
                    f,
                    "the TLS certificate of the NATS server at {url} is not trusted ({detail}); it must be issued by a CA in --tls-ca {} and name the host of the URL",
                    ca.display()
                ),
                None => write!(
                    f,
                    "the TLS certificate of the NATS server at {url} is not trusted ({detail}); pass the CA certificate that issued it with --tls-ca FILE"
                ),
            },
            BridgeError::TlsClientCertRequired { url, detail } => write!(
                f,
                "the NATS server at {url} requires a TLS client certificate ({detail}); pass --tls-cert FILE and --tls-key FILE"
            ),
            BridgeError::TlsClientCertRejected { url, detail, cert } => write!(
                f,
                "the NATS server at {url} rejected the TLS client certificate --tls-cert {} ({detail}); it must be issued by a CA the server trusts (its tlscacert / ca_file)",
                cert.display()
            ),
            BridgeError::TlsNotOffered { url, detail } => write!(
                f,
                "the NATS server at {url} does not offer TLS ({detail}), but TLS is required (--tls-required, --tls-ca, --tls-cert or a tls:// URL); enable TLS on the server or drop those options"
            ),
            BridgeError::Tls { url, detail } => write!(
                f,
                "TLS with the NATS server at {url} failed ({detail}); check --tls-ca, --tls-cert and --tls-key"
            ),
            BridgeError::StreamNotFound { stream } => write!(
                f,
                "JetStream stream {stream:?} does not exist (create it, or pass --create-stream)"
            ),
            BridgeError::JetStreamUnavailable { detail } => write!(
                f,
                "JetStream is not available on this server or account ({detail}); start nats-server with -js"
            ),
            BridgeError::JetStreamNotEnabledForAccount { detail } => write!(
                f,
                "JetStream is not enabled for the account the bridge connected as ({detail}); give the account JetStream limits (memory and disk storage in its account JWT, or jetstream enabled for it in the server's accounts block), or use credentials of an account that has them"
            ),
            BridgeError::JetStream { op, detail } => write!(f, "{op}: {detail}"),
            BridgeError::Queue { path, op, source } => {
                write!(
                    f,
                    "{op} queue {}: {source}{}",
                    path.display(),
                    queue_hint(source)
                )
            }
            BridgeError::State { path, op, source } => {
                write!(f, "{op} state file {}: {source}", path.display())
            }
            BridgeError::StateCorrupted { path, what } => {
                write!(f, "state file {} is unusable: {what}", path.display())
            }
            BridgeError::StateMismatch { path, what } => {
                write!(
                    f,
                    "queue {} does not match its bridge state: {what}",
                    path.display()
                )
            }
            BridgeError::InvalidConfig { what } => write!(f, "invalid configuration: {what}"),
            BridgeError::Metrics { source } => write!(f, "{source}"),
        }
    }
}

/// What to do about a local queue error, as the end of its sentence ("" when the error says
/// it already).
fn queue_hint(e: &chronicle_core::Error) -> &'static str {
    use std::io::ErrorKind;
    match e {
        chronicle_core::Error::Io { source, .. }
            if source.kind() == ErrorKind::PermissionDenied =>
        {
            " (run the bridge as the queue's owner or a member of its group, or grant it access)"
        }
        chronicle_core::Error::Io { source, .. } if source.kind() == ErrorKind::NotFound => {
            " (check --queue: the out-bridge publishes an existing queue)"
        }
        chronicle_core::Error::Io { source, .. } if source.kind() == ErrorKind::NotADirectory => {
            " (--queue takes a queue directory, not a file)"
        }
        chronicle_core::Error::NotAQueue { .. } => {
            " (--queue takes a queue directory, the one holding queue.meta)"
        }
        chronicle_core::Error::Corrupted { .. } | chronicle_core::Error::VersionMismatch { .. } => {
            " (run `chron-cli doctor` on the queue: it says what can be recovered and how)"
        }
        _ => "",
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BridgeError::Credentials { source, .. } | BridgeError::State { source, .. } => {
                Some(source)
            }
            BridgeError::Queue { source, .. } => Some(source),
            BridgeError::Metrics { source } => Some(source),
            _ => None,
        }
    }
}

impl BridgeError {
    pub(crate) fn queue(
        path: impl Into<PathBuf>,
        op: &'static str,
        source: chronicle_core::Error,
    ) -> Self {
        BridgeError::Queue {
            path: path.into(),
            op,
            source,
        }
    }

    pub(crate) fn js(op: impl Into<String>, detail: impl fmt::Display) -> Self {
        BridgeError::JetStream {
            op: op.into(),
            detail: detail.to_string(),
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;
