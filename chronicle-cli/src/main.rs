//! `chron-cli`: the operator's tool for chronicle queues and buses.
//!
//! Exit codes: 0 ok, 1 problems found or the operation failed (one sentence on stderr, prefixed
//! `chron-cli:`), 2 usage error (from clap).
//!
//! Logs (the topology roles' and `demo`'s lifecycle events, warnings) are `tracing` events on
//! stderr, set up once by `chronicle_metrics::logs`: `--log-format human|json` (or
//! `CHRONICLE_LOG_FORMAT`), filter from `CHRONICLE_LOG` (default `info`). With JSON logs the
//! final error is a JSON `ERROR` event too, so stderr stays one object per line.

mod cmd;
mod output;
mod queue;
mod signals;
mod topology;

use std::process::ExitCode;
use std::sync::OnceLock;

use chronicle_lab::soak;
use chronicle_metrics::logs::{self, LogFormat};
use clap::{Parser, Subcommand};

/// Inspect, tail, append to, check and benchmark chronicle queues and buses.
#[derive(Debug, Parser)]
#[command(
    name = "chron-cli",
    version,
    propagate_version = true,
    mut_arg("log_format", |a| a.help(logs::format_help("debug,chron_cli=trace")))
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logs::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a queue's format, geometry, segments, writer, readers and append rate.
    Inspect(cmd::inspect::Args),
    /// Print records (and with -f, follow new ones).
    Tail(cmd::tail::Args),
    /// Append records read from stdin, one per line.
    Append(cmd::append::Args),
    /// Serve queues' and buses' numbers to Prometheus (`--listen ADDR`), or print them once
    /// (`--once`).
    Metrics(cmd::metrics::Args),
    /// Check a bus directory or one queue for problems, and optionally fix the safe ones.
    Doctor(cmd::doctor::Args),
    /// Reconcile a bus's orders, fates and router/out: every order answered exactly once,
    /// nothing sent twice or late.
    Audit(cmd::audit::Args),
    /// Measure throughput and cross-process one-way latency on a temporary queue, or soak
    /// (`--soak`): writers, readers and a fan-in as processes for a long run.
    Bench(cmd::bench::Args),
    /// Run the trading topology (feed, strategies, router) as processes on a bus for a while.
    Demo(cmd::demo::Args),
    /// Topology role run by `demo`: the market-data feed.
    #[command(hide = true)]
    Feed(topology::feed::Args),
    /// Topology role run by `demo`: one strategy.
    #[command(hide = true)]
    Strategy(topology::strategy::Args),
    /// Topology role run by `demo`: the order router.
    #[command(hide = true)]
    Router(topology::router::Args),
    /// Soak role run by `bench --soak`: a paced writer.
    #[command(hide = true)]
    SoakWriter(soak::writer::Args),
    /// Soak role run by `bench --soak`: a checking reader.
    #[command(hide = true)]
    SoakReader(soak::reader::Args),
    /// Soak role run by `bench --soak`: the checking fan-in merge.
    #[command(hide = true)]
    SoakFanin(soak::fanin::Args),
}

/// The log format this process was started with (`demo` hands it on to its processes).
static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// See [`LOG_FORMAT`].
pub fn log_format() -> LogFormat {
    LOG_FORMAT.get().copied().unwrap_or_default()
}

fn main() -> ExitCode {
    // A re-executed bench reader child takes this branch and never reaches the CLI.
    if let Some(code) = chronicle_lab::harness::run_child_if_requested() {
        std::process::exit(code);
    }
    // Output piped into `head` ends quietly, like any Unix tool.
    // SAFETY: restoring the default disposition of SIGPIPE has no memory-safety preconditions;
    // it happens before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A bug must still read as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        eprintln!("chron-cli: internal error: {msg} (please report it)");
    }));
    let cli = Cli::parse();
    let format = cli.log.log_format;
    let _ = LOG_FORMAT.set(format);
    if let Err(e) = logs::init(format) {
        eprintln!("chron-cli: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Tail(a) => cmd::tail::run(a),
        Command::Append(a) => cmd::append::run(a),
        Command::Metrics(a) => cmd::metrics::run(a),
        Command::Doctor(a) => cmd::doctor::run(a),
        Command::Audit(a) => cmd::audit::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Feed(a) => topology::feed::run(a),
        Command::Strategy(a) => topology::strategy::run(a),
        Command::Router(a) => topology::router::run(a),
        Command::SoakWriter(a) => signals::install_stop_handler()
            .and_then(|()| soak::writer::run(a, signals::stop_requested)),
        Command::SoakReader(a) => soak::reader::run(a),
        Command::SoakFanin(a) => soak::fanin::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // As an event with JSON logs, unless the filter would drop it: never silent.
            if format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %one_line(&e), "chron-cli failed");
            } else {
                eprintln!("chron-cli: {}", one_line(&e));
            }
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the message before it
/// already quotes (the engine's messages include their OS error), and never a backtrace.
fn one_line(e: &anyhow::Error) -> String {
    let corrupted = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<chronicle_core::Error>(),
            Some(chronicle_core::Error::Corrupted { .. })
        )
    });
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || matches!(
                c.downcast_ref::<chronicle_core::Error>(),
                Some(chronicle_core::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::PermissionDenied
            )
    });
    let mut msg = logs::one_line(e.chain().map(ToString::to_string));
    if denied && !msg.contains("run as") {
        msg.push_str(
            " (run as a user who may access it, e.g. its owner or a member of its group, or choose another directory)",
        );
    }
    if corrupted && !msg.contains("chron-cli doctor") {
        msg.push_str(
            " (run `chron-cli doctor` on the queue: it says what can be recovered and how)",
        );
    }
    msg
}
