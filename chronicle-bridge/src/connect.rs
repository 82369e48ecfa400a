//! Connecting to NATS (URLs, credentials, reconnect backoff) and finding or creating the stream.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};

use crate::error::{BridgeError, Result};
use crate::stats::Counters;

/// How to reach and authenticate to NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Comma-separated server URLs (`nats://host:port`).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
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
        }
    }
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

/// Connects (one attempt over the URL list; afterwards the client reconnects on its own with
/// exponential backoff, forever) and counts connection events into `counters`.
pub async fn connect(cfg: &NatsConfig, counters: Arc<Counters>) -> Result<async_nats::Client> {
    let addrs = parse_urls(&cfg.url)?;
    let mut opts = ConnectOptions::new();
    if let Some(path) = &cfg.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| BridgeError::Credentials {
                path: path.clone(),
                source,
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
    opts = opts
        .name(&cfg.name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(3))
        .ping_interval(Duration::from_secs(2))
        .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
        .event_callback(move |event| {
            let counters = counters.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        eprintln!("chron-bridge: connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        eprintln!("chron-bridge: disconnected from NATS; reconnecting");
                    }
                    other => eprintln!("chron-bridge: NATS event: {other}"),
                }
            }
        });
    opts.connect(addrs.as_slice()).await.map_err(|e| {
        let detail = e.to_string();
        match e.kind() {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                BridgeError::AuthFailed { url, detail }
            }
            ConnectErrorKind::ServerParse => BridgeError::InvalidUrl {
                url,
                reason: detail,
            },
            _ => BridgeError::Connect { url, detail },
        }
    })
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

/// Turns a JetStream API error into a bridge error, recognizing "JetStream not enabled".
pub(crate) fn classify_js(op: String, e: &dyn std::fmt::Display) -> BridgeError {
    let detail = e.to_string();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("jetstream not enabled")
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

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(2);
        assert_eq!(backoff(0, max), Duration::ZERO);
        assert_eq!(backoff(1, max), Duration::from_millis(50));
        assert_eq!(backoff(3, max), Duration::from_millis(200));
        assert_eq!(backoff(60, max), max);
    }
}
