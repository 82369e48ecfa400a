//! chron-bridge: carries chronicle queues between hosts through NATS JetStream.
//!
//! ```text
//! chron-bridge out --queue Q --stream S --subject SUBJ [--create-stream]
//! chron-bridge in  --stream S --consumer C --queue Q [--subject SUBJ]
//! ```
//! Credentials come from `--creds FILE` or the environment (`NATS_USER`/`NATS_PASSWORD`,
//! `NATS_TOKEN`), never from the command line itself. TLS: `--tls-ca FILE` (roots to trust),
//! `--tls-cert FILE --tls-key FILE` (client certificate), `--tls-required`, or a `tls://` URL.
//!
//! Logs (start, connections, re-sends, errors, the stats every `--stats-interval`) are
//! `tracing` events on stderr, set up by `chronicle_metrics::logs` as in `chron-cli`:
//! `--log-format human|json` (or `CHRONICLE_LOG_FORMAT`), filter from `CHRONICLE_LOG`.
//!
//! `--config FILE` takes every one of these settings from a TOML file instead ([`config_file`]);
//! a flag given with it is a usage error, as with `chron-cli router --config`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use chronicle_bridge::connect::{NatsConfig, StreamSpec};
use chronicle_bridge::inbound::{self, InConfig};
use chronicle_bridge::outbound::{self, OutConfig};
use chronicle_core::{StartAt, WriterConfig};
use chronicle_metrics::logs::{self, LogFormat};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

mod config_file;

#[derive(Parser, Debug)]
#[command(
    name = "chron-bridge",
    version,
    about = "Bridge chronicle queues across hosts through NATS JetStream",
    mut_arg("log_format", |a| a.help(logs::format_help("info,chronicle_bridge=debug")))
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: logs::LogArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish a local queue to a JetStream stream (tails it with a named reader).
    Out(OutArgs),
    /// Import a JetStream stream into a local queue (durable pull consumer).
    In(InArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Read every setting from this TOML file (sections nats, tls, stream, out or in, metrics,
    /// stats, log; each key named as its flag). No other flag may be given with it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// NATS server URLs, comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Credentials file (JWT and nkey seed). Otherwise NATS_USER/NATS_PASSWORD or NATS_TOKEN
    /// from the environment are used, if set.
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
    /// PEM file of the CA certificate(s) to trust for the server's certificate (instead of the
    /// system's roots). Implies TLS.
    #[arg(long, value_name = "FILE", env = "NATS_CA")]
    tls_ca: Option<PathBuf>,
    /// PEM file of the client certificate, for servers that verify clients (mutual TLS). Needs
    /// --tls-key; implies TLS.
    #[arg(long, value_name = "FILE", env = "NATS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "NATS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS (also implied by a tls:// URL, --tls-ca or --tls-cert).
    #[arg(long)]
    tls_required: bool,
    /// Seconds between stats events in the log (0: none).
    #[arg(long, default_value_t = 5.0)]
    stats_interval: f64,
    /// Print the stats as bare JSON objects, one per stderr line, instead of log events.
    #[arg(long)]
    stats_json: bool,
    /// Serve the bridge's counters to Prometheus at `GET /metrics` on this address
    /// (e.g. 127.0.0.1:9466).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Longest delay between reconnect attempts, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    reconnect_max_ms: u64,
    /// Timeout of JetStream requests and publish acknowledgements, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
struct StreamArgs {
    /// Create the stream if it does not exist (capturing --subject).
    #[arg(long)]
    create_stream: bool,
    /// Retention of a created stream.
    #[arg(long, value_enum, default_value_t = Retention::Limits)]
    retention: Retention,
    /// Replicas of a created stream (3 or 5 in a cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Storage of a created stream.
    #[arg(long, value_enum, default_value_t = Storage::File)]
    storage: Storage,
    /// De-duplication window of a created stream, in seconds.
    #[arg(long, default_value_t = 120)]
    duplicate_window: u64,
    /// Maximum age of messages in a created stream, in seconds (0: unlimited).
    #[arg(long, default_value_t = 0)]
    max_age: u64,
    /// Maximum size of a created stream, in bytes (-1: unlimited).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    max_bytes: i64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Retention {
    Limits,
    Interest,
    Workqueue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Compress {
    None,
    Lz4,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Storage {
    File,
    Memory,
}

#[derive(Args, Debug)]
struct OutArgs {
    /// The local queue to publish.
    #[arg(long, required_unless_present = "config")]
    queue: Option<PathBuf>,
    /// JetStream stream.
    #[arg(long, required_unless_present = "config")]
    stream: Option<String>,
    /// Subject to publish to.
    #[arg(long, required_unless_present = "config")]
    subject: Option<String>,
    /// Name of the durable reader holding the position.
    #[arg(long, default_value = "bridge-out")]
    reader: String,
    /// Where a reader without a persisted position starts: earliest, latest, or a sequence
    /// number.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// This host's id in headers and message ids (default: the hostname).
    #[arg(long)]
    host_id: Option<String>,
    /// The queue's name on the wire (default: the queue directory's name).
    #[arg(long)]
    source_name: Option<String>,
    /// Largest number of unacknowledged messages (1-4096).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Largest number of records per JetStream message (1-65536). Above 1 the records travel
    /// in a batch envelope (DESIGN.md section 15); 1 sends each record as its own message,
    /// payload as the body and its fields in headers, for consumers that read the stream with
    /// other NATS clients. `chron-bridge in` reads both.
    #[arg(long, default_value_t = outbound::DEFAULT_BATCH)]
    batch: usize,
    /// Largest size of a batch envelope in bytes (1024 to 1048576; keep it under the server's
    /// max_payload, 1 MiB by default). A larger record travels alone.
    #[arg(long, default_value_t = outbound::DEFAULT_BATCH_BYTES)]
    batch_bytes: usize,
    /// Longest wait, in microseconds, of a batch's first record for more records while other
    /// messages are in flight (0-1000000). An idle pipeline sends at once.
    #[arg(long, default_value_t = outbound::DEFAULT_LINGER_US)]
    linger_us: u64,
    /// Compress batch envelopes: none, or lz4 (sent compressed only when smaller; `chron-bridge
    /// in` reads both). Off by default: on loopback it costs more CPU than it saves
    /// (BENCHMARKS.md "NATS bridge"); it can pay on a slow link.
    #[arg(long, value_enum, default_value_t = Compress::None)]
    compress: Compress,
    /// Exit once the queue's writer is gone and every record is acknowledged.
    #[arg(long)]
    exit_at_end: bool,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    stream_args: StreamArgs,
}

#[derive(Args, Debug)]
struct InArgs {
    /// JetStream stream.
    #[arg(long, required_unless_present = "config")]
    stream: Option<String>,
    /// Durable consumer name.
    #[arg(long, required_unless_present = "config")]
    consumer: Option<String>,
    /// The local queue to append to (created if missing).
    #[arg(long, required_unless_present = "config")]
    queue: Option<PathBuf>,
    /// Only import messages on this subject (also the subject of a created stream).
    #[arg(long)]
    subject: Option<String>,
    /// Import state file (default: <queue>.bridge-in.state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Largest number of messages per pull and per state write (each message may hold a batch
    /// of records).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Make every imported batch durable before acknowledging it: the state file is
    /// fdatasync'ed before the appends and the records msync'ed after them. Exactly once
    /// across a power cut, at the cost of two syncs per batch (DESIGN.md section 15).
    #[arg(long)]
    sync_batches: bool,
    /// Seconds JetStream waits for an acknowledgement before redelivering. Messages handed to
    /// an in-bridge that died are redelivered only after this; later ones are held back until
    /// then, so a short wait keeps the pause after a crash short (redeliveries are harmless).
    #[arg(long, default_value_t = 5)]
    ack_wait: u64,
    /// Largest number of unacknowledged messages handed out.
    #[arg(long, default_value_t = 20_000)]
    max_ack_pending: i64,
    /// Seconds records held back behind a missing source record wait before the missing ones
    /// are declared lost and skipped (0: wait for ever, never skip; the default).
    #[arg(long, default_value_t = 0)]
    gap_timeout: u64,
    /// Segment size of the queue when it is created, in bytes.
    #[arg(long)]
    segment_size: Option<u64>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    stream_args: StreamArgs,
}

fn nats_config(c: &Common) -> anyhow::Result<NatsConfig> {
    let mut cfg = NatsConfig::from_env(c.url.clone());
    cfg.creds = c.creds.clone();
    cfg.tls_ca = c.tls_ca.clone();
    cfg.tls_cert = c.tls_cert.clone();
    cfg.tls_key = c.tls_key.clone();
    cfg.tls_required = c.tls_required;
    cfg.max_reconnect_delay = Duration::from_millis(c.reconnect_max_ms.max(1));
    cfg.request_timeout = Duration::from_millis(c.timeout_ms.max(1));
    Ok(cfg)
}

fn stats_interval(c: &Common) -> anyhow::Result<Option<Duration>> {
    if !c.stats_interval.is_finite() || c.stats_interval < 0.0 {
        bail!("--stats-interval must be a non-negative number of seconds");
    }
    Ok((c.stats_interval > 0.0).then(|| Duration::from_secs_f64(c.stats_interval)))
}

fn stream_spec(s: &StreamArgs, subject: Option<&str>) -> anyhow::Result<Option<StreamSpec>> {
    if !s.create_stream {
        return Ok(None);
    }
    let Some(subject) = subject else {
        bail!("--create-stream needs --subject (the subject the stream captures)");
    };
    if s.replicas == 0 || s.replicas > 5 {
        bail!("--replicas must be between 1 and 5");
    }
    Ok(Some(StreamSpec {
        subjects: vec![subject.to_string()],
        retention: match s.retention {
            Retention::Limits => RetentionPolicy::Limits,
            Retention::Interest => RetentionPolicy::Interest,
            Retention::Workqueue => RetentionPolicy::WorkQueue,
        },
        replicas: s.replicas,
        storage: match s.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        },
        duplicate_window: Duration::from_secs(s.duplicate_window),
        max_age: Duration::from_secs(s.max_age),
        max_bytes: s.max_bytes,
    }))
}

/// A name that goes into `<host>/<queue>/<seq>` message ids: no '/', no whitespace.
fn check_wire_name(what: &str, v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v.len() > 128 || v.chars().any(|c| c == '/' || c.is_whitespace()) {
        bail!("{what} {v:?} must be 1-128 characters without '/' or whitespace");
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn parse_from(s: &str) -> anyhow::Result<StartAt> {
    Ok(match s {
        "earliest" | "start" => StartAt::Earliest,
        "latest" | "end" => StartAt::Latest,
        n => StartAt::Seq(
            n.parse()
                .with_context(|| format!("--from {n:?}: expected earliest, latest or a number"))?,
        ),
    })
}

/// Installs the SIGTERM and SIGINT handlers now (a signal that arrives while the bridge is
/// still connecting is kept, not fatal) and returns the future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A setting clap or the config file guarantees; an error, not a panic, if it is missing.
fn needed<T: Clone>(v: Option<&T>, flag: &str) -> anyhow::Result<T> {
    v.cloned().with_context(|| format!("{flag} is missing"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    match cli.cmd {
        Cmd::Out(a) => {
            let queue = needed(a.queue.as_ref(), "--queue")?;
            let stream = needed(a.stream.as_ref(), "--stream")?;
            let subject = needed(a.subject.as_ref(), "--subject")?;
            let host = a.host_id.clone().unwrap_or_else(hostname);
            check_wire_name("--host-id", &host)?;
            let source_name = match &a.source_name {
                Some(s) => s.clone(),
                None => queue
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .context("--queue has no directory name; pass --source-name")?,
            };
            check_wire_name("--source-name", &source_name)?;
            if a.window == 0 || a.window > 4096 {
                bail!("--window must be between 1 and 4096");
            }
            if a.batch == 0 || a.batch > 65_536 {
                bail!("--batch must be between 1 and 65536");
            }
            if !(1024..=1 << 20).contains(&a.batch_bytes) {
                bail!("--batch-bytes must be between 1024 and 1048576");
            }
            if a.linger_us > 1_000_000 {
                bail!("--linger-us must be at most 1000000 (one second)");
            }
            let cfg = OutConfig {
                queue,
                reader: a.reader.clone(),
                start: parse_from(&a.from)?,
                stream,
                subject: subject.clone(),
                host,
                source_name,
                window: a.window,
                batch: a.batch,
                batch_bytes: a.batch_bytes,
                linger: Duration::from_micros(a.linger_us),
                compress: a.compress == Compress::Lz4,
                create: stream_spec(&a.stream_args, Some(&subject))?,
                stats_interval: stats_interval(&a.common)?,
                stats_json: a.common.stats_json,
                metrics_listen: a.common.metrics_listen.clone(),
                exit_at_end: a.exit_at_end,
            };
            outbound::run(cfg, nats_config(&a.common)?, shutdown).await?;
        }
        Cmd::In(a) => {
            let queue = needed(a.queue.as_ref(), "--queue")?;
            let mut writer = WriterConfig::default();
            if let Some(s) = a.segment_size {
                writer.segment_size = s;
            }
            let cfg = InConfig {
                stream: needed(a.stream.as_ref(), "--stream")?,
                consumer: needed(a.consumer.as_ref(), "--consumer")?,
                filter_subject: a.subject.clone(),
                queue: queue.clone(),
                writer,
                state: a
                    .state
                    .clone()
                    .unwrap_or_else(|| InConfig::default_state_path(&queue)),
                batch: a.batch,
                sync_batches: a.sync_batches,
                ack_wait: Duration::from_secs(a.ack_wait.max(1)),
                max_ack_pending: a.max_ack_pending,
                create: stream_spec(&a.stream_args, a.subject.as_deref())?,
                gap_timeout: (a.gap_timeout > 0).then(|| Duration::from_secs(a.gap_timeout)),
                stats_interval: stats_interval(&a.common)?,
                stats_json: a.common.stats_json,
                metrics_listen: a.common.metrics_listen.clone(),
            };
            inbound::run(cfg, nats_config(&a.common)?, shutdown).await?;
        }
    }
    Ok(())
}

/// The flags given on the command line together with `--config` (environment variables and
/// defaults do not count: the file overrides those), as `--flag` and the file key to use.
fn flags_beside_config(m: &ArgMatches) -> Vec<(String, &'static str)> {
    let mut given = Vec::new();
    if m.value_source("log_format") == Some(ValueSource::CommandLine) {
        given.push(("--log-format".to_string(), "log.format"));
    }
    let cmd = Cli::command();
    let Some((name, sub)) = m.subcommand() else {
        return given;
    };
    let Some(sub_cmd) = cmd.find_subcommand(name) else {
        return given;
    };
    for arg in sub_cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "config" | "log_format" | "help" | "version") {
            continue;
        }
        if sub.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = arg
                .get_long()
                .map_or_else(|| id.to_string(), |l| format!("--{l}"));
            given.push((flag, config_file::file_key(name, id).unwrap_or("?")));
        }
    }
    given
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    match &cli.cmd {
        Cmd::Out(a) => a.common.config.clone(),
        Cmd::In(a) => a.common.config.clone(),
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config_error = match config_path(&cli) {
        Some(path) => {
            // With a file every setting comes from it: a flag beside it is a usage error (exit
            // 2), not a silent override, as with `chron-cli router --config`.
            if let Some((flag, key)) = flags_beside_config(&matches).first() {
                Cli::command()
                    .error(
                        ErrorKind::ArgumentConflict,
                        format!(
                            "'--config <FILE>' cannot be used with '{flag}': set `{key}` in {} instead",
                            path.display()
                        ),
                    )
                    .exit();
            }
            config_file::apply_file(&path, &mut cli).err()
        }
        None => None,
    };
    let format = cli.log.log_format;
    if let Err(e) = logs::init(format) {
        eprintln!("chron-bridge: error: {e}");
        return ExitCode::from(2);
    }
    if let Some(e) = config_error {
        // A file the bridge refuses is an operator's input error, like a bad flag: exit 2.
        if format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
            tracing::error!(error = %e, "chron-bridge failed");
        } else {
            eprintln!("chron-bridge: error: {e}");
        }
        return ExitCode::from(2);
    }
    if let Some(path) = config_path(&cli) {
        tracing::info!(config = %path.display(), "settings read from {}", path.display());
    }
    let fail = |msg: String| {
        // As an event with JSON logs, unless the filter would drop it: never silent.
        if format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
            tracing::error!(error = %msg, "chron-bridge failed");
        } else {
            eprintln!("chron-bridge: error: {msg}");
        }
        ExitCode::FAILURE
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(logs::one_line(e.chain().map(ToString::to_string))),
    }
}
