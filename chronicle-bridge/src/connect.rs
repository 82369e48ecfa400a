//! Connecting to NATS (URLs, credentials, TLS, reconnect backoff) and finding or creating the
//! stream.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::rustls;
use async_nats::rustls::pki_types::pem::{self, PemObject};
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions, ServerAddr};
use tokio::sync::watch;

use crate::creds::{self, Creds};
use crate::error::{BridgeError, Result};
use crate::stats::Counters;

/// How to reach and authenticate to NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Comma-separated server URLs (`nats://host:port`).
    pub url: String,
    /// A `.creds` file (user JWT + nkey seed), read and checked once, before the first
    /// connection.
    pub creds: Option<PathBuf>,
    /// User name (from `NATS_USER`).
    pub user: Option<String>,
    /// Password (from `NATS_PASSWORD`).
    pub password: Option<String>,
    /// Token (from `NATS_TOKEN`).
    pub token: Option<String>,
    /// Connection name shown by the server.
    pub name: String,
    /// Longest wait between reconnect attempts (the delay doubles from 50 ms up to this).
    pub max_reconnect_delay: Duration,
    /// Timeout of JetStream API requests and of each publish acknowledgement.
    pub request_timeout: Duration,
    /// PEM file of the root certificate(s) trusted for the server's certificate, instead of the
    /// system's roots. Implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain) for servers that verify clients (mutual
    /// TLS). Needs `tls_key`; implies TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk plaintext. A `tls://` URL, `tls_ca` or `tls_cert` imply it.
    pub tls_required: bool,
}

impl NatsConfig {
    /// A configuration for `url` with credentials taken from the environment
    /// (`NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`) and no creds file.
    pub fn from_env(url: impl Into<String>) -> NatsConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        NatsConfig {
            url: url.into(),
            creds: None,
            user: var("NATS_USER"),
            password: var("NATS_PASSWORD"),
            token: var("NATS_TOKEN"),
            name: "chron-bridge".to_string(),
            max_reconnect_delay: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
        }
    }

    /// Whether the connection must use TLS: `--tls-required`, a TLS file option, or a
    /// `tls://` URL among `addrs`.
    pub fn tls_wanted(&self, addrs: &[ServerAddr]) -> bool {
        self.tls_required
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || addrs.iter().any(ServerAddr::tls_required)
    }
}

/// Checks the TLS files before any connection attempt, so that a missing or unusable file is
/// reported by option and path (the client would only say "TLS error", and only once a server
/// answered): the CA file must hold at least one certificate usable as a trust anchor, the
/// certificate file at least one certificate, the key file a private key that signs for the
/// certificate's public key.
pub fn check_tls_files(cfg: &NatsConfig) -> Result<()> {
    if let Some(ca) = &cfg.tls_ca {
        let certs = read_certs("--tls-ca", ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| BridgeError::TlsFile {
                option: "--tls-ca",
                path: ca.clone(),
                problem: format!("certificate {} is not usable as a root: {e}", i + 1),
            })?;
        }
    }
    match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(BridgeError::InvalidConfig {
            what: "--tls-cert needs --tls-key (the private key of the client certificate)"
                .to_string(),
        }),
        (None, Some(_)) => Err(BridgeError::InvalidConfig {
            what: "--tls-key needs --tls-cert (the client certificate of the key)".to_string(),
        }),
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs("--tls-cert", cert_path)?;
            let bytes = read_file("--tls-key", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| BridgeError::TlsFile {
                option: "--tls-key",
                path: key_path.clone(),
                problem: match e {
                    pem::Error::NoItemsFound => {
                        "holds no PEM private key (BEGIN PRIVATE KEY, BEGIN EC PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
                            .to_string()
                    }
                    e => format!("cannot parse the private key: {e}"),
                },
            })?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
                BridgeError::TlsFile {
                    option: "--tls-key",
                    path: key_path.clone(),
                    problem: format!(
                        "not a usable key for the certificate in --tls-cert {}: {e}",
                        cert_path.display()
                    ),
                }
            })?;
            Ok(())
        }
    }
}

fn read_file(option: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| BridgeError::TlsFile {
        option,
        path: path.to_path_buf(),
        problem: format!("cannot read it: {e}"),
    })
}

fn read_certs(option: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(option, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| BridgeError::TlsFile {
            option,
            path: path.to_path_buf(),
            problem: format!("cannot parse the PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(BridgeError::TlsFile {
            option,
            path: path.to_path_buf(),
            problem: "holds no PEM certificate (BEGIN CERTIFICATE)".to_string(),
        });
    }
    Ok(certs)
}

/// Parses a comma-separated URL list, refusing anything the client would not understand.
pub fn parse_urls(list: &str) -> Result<Vec<ServerAddr>> {
    let mut out = Vec::new();
    for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr = ServerAddr::from_str(url).map_err(|e| BridgeError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(BridgeError::InvalidUrl {
            url: list.to_string(),
            reason: "no server given".to_string(),
        });
    }
    Ok(out)
}

/// Longest wait for the first connection to one server: TCP connect, TLS handshake and the
/// server's answer to CONNECT. The client bounds only the TCP connect by itself; a server
/// that accepts and then says nothing (or stalls in the handshake) would hold the bridge for
/// ever at start.
pub const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Something the connection's event handler found that no reconnect can cure.
#[derive(Debug, Clone)]
enum FatalCause {
    /// The user JWT of `--creds` expired and the server ended the session or refused a
    /// reconnect.
    CredsExpired {
        url: String,
        path: PathBuf,
        expired_at: String,
    },
}

/// Tells a running bridge that its connection cannot recover (see [`Fatal::wait`]).
#[derive(Debug, Clone)]
pub struct Fatal(watch::Receiver<Option<FatalCause>>);

impl Fatal {
    /// Completes with the error once the connection is found unrecoverable: the user JWT of
    /// `--creds` has expired (by the local clock) and the server ended the session ("user
    /// authentication expired") or refused a reconnect. The client reads the credentials once,
    /// so it would otherwise retry the expired JWT for ever. Never completes otherwise.
    pub async fn wait(&mut self) -> BridgeError {
        loop {
            let cause = self.0.borrow_and_update().clone();
            if let Some(FatalCause::CredsExpired {
                url,
                path,
                expired_at,
            }) = cause
            {
                return BridgeError::CredsExpired {
                    url,
                    path,
                    expired_at,
                };
            }
            if self.0.changed().await.is_err() {
                // The client is gone: nothing more will be found.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The client's report of a refusal or an end of session by the server that concerns the
/// credentials: "authorization violation" on a reconnect, "user authentication expired" or
/// "authorization violation" sent on an open connection.
fn auth_event(event: &async_nats::Event) -> bool {
    let text = match event {
        async_nats::Event::ServerError(e) => e.to_string(),
        async_nats::Event::ClientError(e) => e.to_string(),
        _ => return false,
    }
    .to_ascii_lowercase();
    text.contains("authorization violation") || text.contains("authentication expired")
}

/// Connects (one attempt over the URL list, bounded by [`FIRST_CONNECT_TIMEOUT`] per server;
/// afterwards the client reconnects on its own with exponential backoff, forever) and counts
/// connection events into `counters`. The [`Fatal`] handle reports a connection that cannot
/// recover; the run loops stop on it. [`prepare`] then [`Dialer::dial`], in one call.
pub async fn connect(
    cfg: &NatsConfig,
    counters: Arc<Counters>,
) -> Result<(async_nats::Client, Fatal)> {
    prepare(cfg, counters)?.dial().await
}

/// A connection checked and configured, not yet attempted: see [`prepare`].
pub struct Dialer {
    cfg: NatsConfig,
    opts: ConnectOptions,
    addrs: Vec<ServerAddr>,
    creds: Option<Creds>,
    tls: bool,
    fatal_rx: watch::Receiver<Option<FatalCause>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("url", &self.cfg.url)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Everything about a connection that can be found wrong without the network: the URLs, the
/// TLS files, the credentials. A bridge checks its local queue after this and before
/// [`Dialer::dial`], so every local mistake is reported before any network wait.
pub fn prepare(cfg: &NatsConfig, counters: Arc<Counters>) -> Result<Dialer> {
    let addrs = parse_urls(&cfg.url)?;
    check_tls_files(cfg)?;
    let tls = cfg.tls_wanted(&addrs);
    let mut opts = ConnectOptions::new().require_tls(tls);
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let creds = cfg.creds.as_deref().map(Creds::load).transpose()?;
    if let Some(c) = &creds {
        opts = opts
            .credentials(&c.text)
            .map_err(|e| BridgeError::CredsInvalid {
                path: c.path.clone(),
                problem: format!("the client cannot use it: {e}"),
            })?;
    } else if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    } else if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    } else if cfg.user.is_some() != cfg.password.is_some() {
        return Err(BridgeError::InvalidConfig {
            what: "NATS_USER and NATS_PASSWORD must be set together".to_string(),
        });
    }
    let max_delay = cfg.max_reconnect_delay;
    let url = cfg.url.clone();
    let (fatal_tx, fatal_rx) = watch::channel(None);
    let fatal_tx = Arc::new(fatal_tx);
    let event_creds = creds.clone().map(Arc::new);
    let event_url = url.clone();
    opts = opts
        .name(&cfg.name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(3))
        .ping_interval(Duration::from_secs(2))
        .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
        .event_callback(move |event| {
            let counters = counters.clone();
            let fatal_tx = fatal_tx.clone();
            let creds = event_creds.clone();
            let url = event_url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("disconnected from NATS; reconnecting");
                    }
                    other if auth_event(&other) => {
                        tracing::warn!(event = %other, "NATS event: {other}");
                        let Some(c) = creds else { return };
                        match c.expires {
                            Some(exp) if c.expired_at(creds::unix_now()) => {
                                fatal_tx.send_replace(Some(FatalCause::CredsExpired {
                                    url,
                                    path: c.path.clone(),
                                    expired_at: creds::format_time(exp),
                                }));
                            }
                            _ => tracing::error!(
                                creds = %c.path.display(),
                                account = %c.account,
                                "the server refused the user in --creds {} (account {}); still retrying",
                                c.path.display(),
                                c.account
                            ),
                        }
                    }
                    other => tracing::info!(event = %other, "NATS event: {other}"),
                }
            }
        });
    Ok(Dialer {
        cfg: cfg.clone(),
        opts,
        addrs,
        creds,
        tls,
        fatal_rx,
    })
}

impl Dialer {
    /// The first connection attempt (see [`connect`]).
    pub async fn dial(self) -> Result<(async_nats::Client, Fatal)> {
        let Dialer {
            cfg,
            opts,
            addrs,
            creds,
            tls,
            fatal_rx,
        } = self;
        let url = cfg.url.clone();
        let deadline =
            FIRST_CONNECT_TIMEOUT.saturating_mul(u32::try_from(addrs.len()).unwrap_or(1));
        match tokio::time::timeout(deadline, opts.connect(addrs.as_slice())).await {
            Ok(Ok(client)) => Ok((client, Fatal(fatal_rx))),
            Ok(Err(e)) => Err(classify_connect(&e, &cfg, creds.as_ref(), url, tls)),
            Err(_) => Err(BridgeError::Connect {
                url,
                detail: format!(
                    "no server completed the connection within {} s (it accepted but did not answer{})",
                    deadline.as_secs(),
                    if tls {
                        ", or stalled in the TLS handshake"
                    } else {
                        ""
                    }
                ),
            }),
        }
    }
}

/// Turns a failed first connection into the error that tells the operator what to fix.
fn classify_connect(
    e: &ConnectError,
    cfg: &NatsConfig,
    creds: Option<&Creds>,
    url: String,
    tls: bool,
) -> BridgeError {
    let detail = e.to_string();
    match e.kind() {
        // The server says no more than this, whatever the reason.
        ConnectErrorKind::AuthorizationViolation => {
            return refused(cfg, creds, url, creds::unix_now());
        }
        // Signing the server's nonce failed (locally).
        ConnectErrorKind::Authentication => {
            return BridgeError::AuthFailed { url, detail };
        }
        ConnectErrorKind::ServerParse => {
            return BridgeError::InvalidUrl {
                url,
                reason: detail,
            };
        }
        // The TLS configuration itself (files were checked before, so this is rare).
        ConnectErrorKind::Tls => return BridgeError::Tls { url, detail },
        _ => {}
    }
    let Some(tls_err) = find_tls_error(e) else {
        return BridgeError::Connect { url, detail };
    };
    match tls_err {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            BridgeError::TlsServerUntrusted {
                url,
                detail,
                ca: cfg.tls_ca.clone(),
            }
        }
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert) => {
            match &cfg.tls_cert {
                None => BridgeError::TlsClientCertRequired { url, detail },
                Some(cert) => BridgeError::TlsClientCertRejected {
                    url,
                    detail,
                    cert: cert.clone(),
                },
            }
        }
        // Plaintext protocol bytes ("-ERR ...") read as TLS records: the server does not
        // speak TLS on this port.
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } if tls => {
            BridgeError::TlsNotOffered { url, detail }
        }
        _ => BridgeError::Tls { url, detail },
    }
}

/// The error for a server's "authorization violation" at `now` (Unix seconds): what was
/// refused depends on what was offered. With a credentials file, its user JWT's expiry (by the
/// local clock) tells an expired user from one the server does not accept.
fn refused(cfg: &NatsConfig, creds: Option<&Creds>, url: String, now: i64) -> BridgeError {
    let detail = ConnectErrorKind::AuthorizationViolation.to_string();
    match creds {
        Some(c) => match c.expires {
            Some(exp) if c.expired_at(now) => BridgeError::CredsExpired {
                url,
                path: c.path.clone(),
                expired_at: creds::format_time(exp),
            },
            _ => BridgeError::CredsRejected {
                url,
                path: c.path.clone(),
                detail,
                account: c.account.clone(),
            },
        },
        None if cfg.user.is_some() || cfg.token.is_some() => {
            BridgeError::AuthFailed { url, detail }
        }
        None => BridgeError::AuthRequired { url, detail },
    }
}

/// Alerts a server sends when it wants a client certificate and got none, or got one it does
/// not accept. For a missing one Go's TLS stack (nats-server) sends `bad_certificate` (seen
/// with nats-server 2.9); newer stacks send `certificate_required`.
fn is_client_cert_alert(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
    )
}

/// The TLS error under a connection error, if any. `io::Error` does not return the error it
/// wraps from `source()` (it delegates to that error's own source), so each `io::Error` in the
/// chain is opened with `get_ref()`.
fn find_tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            let inner: &'a (dyn std::error::Error + 'static) = inner;
            if let Some(t) = find_tls_error(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

/// Reconnect delay after `attempts` failed attempts: 0 for the first, then 50 ms doubling up to
/// `max`.
pub fn backoff(attempts: usize, max: Duration) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    Duration::from_millis(50u64 << shift).min(max)
}

/// A JetStream context whose publish acknowledgements time out after `cfg.request_timeout`.
pub fn jetstream(client: async_nats::Client, cfg: &NatsConfig) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(cfg.request_timeout)
        .build(client)
}

/// How to create the stream when asked to.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Subjects the stream captures.
    pub subjects: Vec<String>,
    /// Retention policy.
    pub retention: stream::RetentionPolicy,
    /// Number of replicas (1 for a single server, 3 or 5 in a cluster).
    pub replicas: usize,
    /// Storage type.
    pub storage: stream::StorageType,
    /// Window in which JetStream de-duplicates by message id (bounds how late a re-send is
    /// still recognized).
    pub duplicate_window: Duration,
    /// Oldest message kept (zero: unlimited).
    pub max_age: Duration,
    /// Largest stream size in bytes (-1: unlimited).
    pub max_bytes: i64,
}

/// Gets the stream `name`, creating it from `create` if it does not exist and `create` is given.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    create: Option<&StreamSpec>,
) -> Result<stream::Stream> {
    match js.get_stream(name).await {
        Ok(s) => return Ok(s),
        Err(e) => {
            let not_found = matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
            if !not_found {
                return Err(classify_js(format!("look up stream {name:?}"), &e));
            }
        }
    }
    let Some(spec) = create else {
        return Err(BridgeError::StreamNotFound {
            stream: name.to_string(),
        });
    };
    let config = stream::Config {
        name: name.to_string(),
        subjects: spec.subjects.clone(),
        retention: spec.retention,
        num_replicas: spec.replicas,
        storage: spec.storage,
        duplicate_window: spec.duplicate_window,
        max_age: spec.max_age,
        max_bytes: spec.max_bytes,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| classify_js(format!("create stream {name:?}"), &e))
}

/// Turns a JetStream API error into a bridge error, recognizing "JetStream not enabled" for
/// the server and for the account.
pub(crate) fn classify_js(op: String, e: &dyn std::fmt::Display) -> BridgeError {
    let detail = e.to_string();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("not enabled for account") || lower.contains("error code 10039") {
        BridgeError::JetStreamNotEnabledForAccount { detail }
    } else if lower.contains("jetstream not enabled")
        || lower.contains("no responders")
        || lower.contains("jetstream unavailable")
    {
        BridgeError::JetStreamUnavailable { detail }
    } else {
        BridgeError::js(op, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_off_for_the_server_and_for_the_account_are_told_apart() {
        let op = || "create stream \"S\"".to_string();
        assert!(matches!(
            classify_js(
                op(),
                &"jetstream error: JetStream not enabled for account (code 503, error code 10039)"
            ),
            BridgeError::JetStreamNotEnabledForAccount { .. }
        ));
        assert!(matches!(
            classify_js(
                op(),
                &"jetstream error: JetStream not enabled (code 503, error code 10076)"
            ),
            BridgeError::JetStreamUnavailable { .. }
        ));
        assert!(matches!(
            classify_js(op(), &"no responders"),
            BridgeError::JetStreamUnavailable { .. }
        ));
        assert!(matches!(
            classify_js(op(), &"stream name already in use"),
            BridgeError::JetStream { .. }
        ));
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse_urls("nats://127.0.0.1:4222, nats://127.0.0.1:4223")
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            parse_urls("http://[::1"),
            Err(BridgeError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_urls(" , "),
            Err(BridgeError::InvalidUrl { .. })
        ));
    }

    /// A connection error as the client builds it from a failed TLS read or handshake.
    fn tls_failure(e: rustls::Error) -> ConnectError {
        ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    }

    #[test]
    fn tls_failures_are_told_apart() {
        let url = || "nats://127.0.0.1:4222".to_string();
        let mut cfg = NatsConfig::from_env(url());
        let tls = |e: rustls::Error, cfg: &NatsConfig| {
            classify_connect(&tls_failure(e), cfg, None, url(), true)
        };
        let bad_cert = || rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert!(matches!(
            tls(bad_cert(), &cfg),
            BridgeError::TlsClientCertRequired { .. }
        ));
        cfg.tls_cert = Some(PathBuf::from("client.pem"));
        cfg.tls_key = Some(PathBuf::from("client-key.pem"));
        assert!(matches!(
            tls(bad_cert(), &cfg),
            BridgeError::TlsClientCertRejected { .. }
        ));
        let unknown_issuer =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(matches!(
            tls(unknown_issuer, &cfg),
            BridgeError::TlsServerUntrusted { .. }
        ));
        let plaintext = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(matches!(
            tls(plaintext, &cfg),
            BridgeError::TlsNotOffered { .. }
        ));
        let other = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert!(matches!(tls(other, &cfg), BridgeError::Tls { .. }));
        // Not a TLS failure at all.
        let refused = ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert!(matches!(
            classify_connect(&refused, &cfg, None, url(), false),
            BridgeError::Connect { .. }
        ));
    }

    #[test]
    fn authorization_violations_are_told_apart_by_what_was_offered() {
        let url = || "nats://127.0.0.1:4222".to_string();
        let violation = ConnectError::new(ConnectErrorKind::AuthorizationViolation);
        let mut cfg = NatsConfig::from_env(url());
        cfg.user = None;
        cfg.password = None;
        cfg.token = None;
        assert!(matches!(
            classify_connect(&violation, &cfg, None, url(), false),
            BridgeError::AuthRequired { .. }
        ));
        cfg.token = Some("t".to_string());
        assert!(matches!(
            classify_connect(&violation, &cfg, None, url(), false),
            BridgeError::AuthFailed { .. }
        ));
        let user = nkeys::KeyPair::new_user();
        let claims = format!(
            r#"{{"sub":"{}","iss":"AACC","exp":1700000000,"nats":{{"type":"user"}}}}"#,
            user.public_key()
        );
        let text = format!(
            "-----BEGIN NATS USER JWT-----\ne30.{}.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            data_encoding::BASE64URL_NOPAD.encode(claims.as_bytes()),
            user.seed().unwrap()
        );
        let c = Creds::parse(Path::new("u.creds"), text).unwrap();
        assert!(matches!(
            refused(&cfg, Some(&c), url(), 1_699_999_999),
            BridgeError::CredsRejected { account, .. } if account == "AACC"
        ));
        assert!(matches!(
            refused(&cfg, Some(&c), url(), 1_700_000_000),
            BridgeError::CredsExpired { expired_at, .. } if expired_at == "2023-11-14T22:13:20Z"
        ));
    }

    #[test]
    fn tls_is_wanted_by_any_tls_option_or_url() {
        let plain = parse_urls("nats://127.0.0.1:4222").unwrap();
        let mixed = parse_urls("nats://127.0.0.1:4222,tls://127.0.0.1:4223").unwrap();
        let mut cfg = NatsConfig::from_env("unused");
        assert!(!cfg.tls_wanted(&plain));
        assert!(cfg.tls_wanted(&mixed));
        cfg.tls_ca = Some(PathBuf::from("ca.pem"));
        assert!(cfg.tls_wanted(&plain));
        cfg.tls_ca = None;
        cfg.tls_required = true;
        assert!(cfg.tls_wanted(&plain));
    }

    #[test]
    fn half_a_client_certificate_pair_is_refused() {
        let mut cfg = NatsConfig::from_env("nats://127.0.0.1:4222");
        cfg.tls_cert = Some(PathBuf::from("client.pem"));
        assert!(matches!(
            check_tls_files(&cfg),
            Err(BridgeError::InvalidConfig { what }) if what.contains("--tls-key")
        ));
        cfg.tls_cert = None;
        cfg.tls_key = Some(PathBuf::from("client-key.pem"));
        assert!(matches!(
            check_tls_files(&cfg),
            Err(BridgeError::InvalidConfig { what }) if what.contains("--tls-cert")
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(2);
        assert_eq!(backoff(0, max), Duration::ZERO);
        assert_eq!(backoff(1, max), Duration::from_millis(50));
        assert_eq!(backoff(3, max), Duration::from_millis(200));
        assert_eq!(backoff(60, max), max);
    }
}
