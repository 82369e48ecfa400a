//! Cross-process latency and throughput harness for same-host transports.
//!
//! # What is measured
//!
//! A run has one writer and one reader in **different processes**, as in production.
//! The parent process creates the channel in a private run directory (under `/dev/shm`
//! when it exists), then re-executes its own binary as the reader child (see
//! [`run_child_if_requested`]). When the child reports that its end is open, the parent
//! becomes the writer.
//!
//! * **One-way latency** ([`Mode::Latency`]): the writer reads `CLOCK_MONOTONIC` (vDSO
//!   `clock_gettime`, see [`clock`]) just before writing the message and stores it in the
//!   payload's first 8 bytes, followed by an 8-byte sequence number; the rest of the
//!   payload is filled from a template, so the writer touches every byte it sends. The
//!   reader reads the clock as soon as the message is visible to it and records
//!   `now - stamp` into an HDR histogram (1 ns .. 60 s, 3 significant digits). Both
//!   readings come from the same system-wide clock, so the difference is the time from
//!   "writer starts composing" to "reader can see it", including the reader's wake-up.
//!   The reader does not copy the payload unless the transport has to. Each sample
//!   contains about one clock read of overhead ([`clock::clock_overhead_ns`]).
//! * **What the reader reads**: by default only the 16-byte header (stamp and sequence
//!   number), plus whatever the transport reads on its own (chronicle verifies a CRC over
//!   the whole record). With [`RunConfig::touch_payload`] the shared reader loop folds
//!   every payload byte into a value kept alive with [`std::hint::black_box`], identically
//!   for every transport and for [`run_in_threads`], as a consumer processing the message
//!   would. The fold runs before the receive timestamp, so a latency sample then ends when
//!   the reader has read the whole message; its cost also shows in the throughput.
//! * **Pacing**: with [`RunConfig::rate`] the writer busy-waits on the monotonic clock
//!   to an integer schedule (`start + i * 1e9 / rate`), never sleeping. Samples are
//!   stamped at the actual send time; the report's
//!   [`max_send_lag_ns`](RunReport::max_send_lag_ns) says how far the writer ever fell
//!   behind its schedule (large values mean queueing delay was partly hidden).
//! * **Warm-up**: the first [`RunConfig::warmup`] messages are sent and checked but kept
//!   out of the histogram and the throughput window (page faults, cold caches, the
//!   reader's first wake-up).
//! * **Throughput** ([`Mode::Throughput`]): unpaced, no per-message clock reads. The
//!   writer notes the clock at its first measured send, the reader at its last receive;
//!   `count / (last_receive - first_send)` is reported.
//! * **Correctness**: the reader checks that sequence numbers are contiguous and counts
//!   every discontinuity; [`RunReport::is_clean`] is false if anything was lost,
//!   duplicated or reordered.
//! * **Pinning**: with [`RunConfig::cores`] the writer thread and the reader process pin
//!   themselves with `sched_setaffinity`; a refused pin is reported
//!   ([`PinOutcome`]) and the run continues. The writer's previous mask is restored.
//! * **Wait modes**: [`WaitMode::Spin`] busy-polls; [`WaitMode::Block`] uses the
//!   transport's sleeping primitive (futex, blocking `read`/`recv`).
//!
//! * **Threads instead of processes**: [`run_in_threads`] runs the same loops with the
//!   reader on a second thread of the calling process, for in-process channels measured
//!   as a reference.
//!
//! Percentiles (p50/p90/p99/p99.9/max) are always reported together with the count; a
//! mean alone hides exactly the tail this harness exists to show.
//!
//! # Why ratios against the bare ring
//!
//! The baseline transports — [`ring::Ring`] (the cheapest correct shared-memory hand-off:
//! fixed one-line slots for 64-byte messages, read cursor released per batch),
//! pipes and Unix sockets — are measured by the same harness in the same process run.
//! On a small, shared, virtualised machine absolute numbers drift between runs with
//! neighbour load, frequency scaling and hypervisor scheduling; a ratio against the floor
//! measured minutes apart under the same conditions is far more stable, and it answers
//! the real question: how much does a transport cost on top of moving bytes through
//! shared memory.
//!
//! # Adding a transport
//!
//! Implement [`Transport`], [`Sender`] and [`Receiver`] (generic methods, so the hot
//! loops are monomorphized and never go through a vtable), then register it with
//! [`Registry::register`] in a registry used by **both** the parent ([`run`]) and the
//! child entry ([`run_child_if_requested_with`]) of the same binary.
//!
//! ```ignore
//! // In the crate, next to the other registrations in `Registry::builtin`:
//! pub struct ChronicleQueue;
//! impl Transport for ChronicleQueue {
//!     const NAME: &'static str = "chronicle";
//!     type Tx = QueueTx;   // impl Sender: send_with claims a slot, calls fill, commits
//!     type Rx = QueueRx;   // impl Receiver: Spin polls, Block parks on the futex
//!     fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<QueueTx> { /* create queue in dir */ }
//!     fn open(dir: &Path, cfg: &ChannelConfig) -> io::Result<QueueRx> { /* open tailer at start */ }
//! }
//! ```
//!
//! # Driving the harness from a binary
//!
//! ```no_run
//! use chronicle_lab::harness::{self, Mode, Registry, RunConfig, WaitMode};
//!
//! fn main() {
//!     // First thing: a re-executed reader child takes this branch and exits.
//!     if let Some(code) = harness::run_child_if_requested() {
//!         std::process::exit(code);
//!     }
//!     let registry = Registry::builtin();
//!     let mut cfg = RunConfig::default();
//!     cfg.mode = Mode::Latency;
//!     cfg.wait = WaitMode::Spin;
//!     cfg.count = 200_000;
//!     cfg.rate = Some(100_000);
//!     cfg.cores = Some((0, 1));
//!     let mut reports = Vec::new();
//!     for name in ["ring", "pipe"] {
//!         match harness::run(&registry, name, &cfg) {
//!             Ok(report) => reports.push(report),
//!             Err(e) => eprintln!("{name}: {e}"),
//!         }
//!     }
//!     print!("{}", harness::format_table(&reports, &["ring", "ring-futex"]));
//! }
//! ```
//!
//! # Child result protocol
//!
//! See [`child`] for process handling and [`report`] for the text lines the child writes.

/// Names the variants of a fieldless enum: `as_str` (the lowercase name used in tables and on
/// the child command line), `Display` with that name, and `FromStr` from it, whose error names
/// `what` the value was meant to be and the choices.
macro_rules! named_variants {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The lowercase name used in tables and on the child command line.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` ({})",
                        $what,
                        [$($name),+].join("|")
                    )),
                }
            }
        }
    };
}

pub mod affinity;
pub mod child;
pub mod chronicle;
pub mod clock;
pub mod config;
pub mod error;
mod measure;
pub mod pipe;
pub mod report;
pub mod ring;
pub mod transport;
pub mod unix;

use std::io::Write as _;
use std::path::PathBuf;

pub use affinity::PinOutcome;
pub use config::{
    ChildLauncher, HEADER_LEN, MIN_PAYLOAD, Mode, RunConfig, SweepSettings, comma_list,
};
pub use error::{HarnessError, Phase};
pub use report::{Latency, LatencyStats, RunReport, format_table, percentile_distribution};
pub use transport::{ChannelConfig, Receiver, Sender, Transport, WaitMode, staging};

use config::ChildSpec;

type ParentFn = fn(&RunConfig) -> Result<RunReport, HarnessError>;
type ChildFn = fn(&ChildSpec, &std::path::Path) -> Result<(), HarnessError>;

/// A transport's name and its monomorphized entry points. Calling through these function
/// pointers happens once per run, never per message.
#[derive(Debug, Clone, Copy)]
pub struct TransportEntry {
    name: &'static str,
    supports: fn(WaitMode) -> bool,
    parent: ParentFn,
    child: ChildFn,
    threads: ParentFn,
}

impl TransportEntry {
    /// The entry for `T`.
    #[must_use]
    pub fn of<T: Transport>() -> Self {
        Self {
            name: T::NAME,
            supports: T::supports,
            parent: measure::parent_run::<T>,
            child: measure::child_run::<T>,
            threads: measure::thread_run::<T>,
        }
    }

    /// The transport's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the transport's reader implements `wait`.
    #[must_use]
    pub fn supports(&self, wait: WaitMode) -> bool {
        (self.supports)(wait)
    }
}

/// The transports a binary can measure, by name. The parent and the child of a run must
/// resolve the name to the same transport, so a binary uses one registry for both.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<TransportEntry>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// The baseline transports, in table order: `ring` and `ring-futex` (the fixed-slot
    /// floor), `ring-len` (length-prefixed slots), `pipe`, `unix`.
    #[must_use]
    pub fn builtin() -> Self {
        Self {
            entries: vec![
                TransportEntry::of::<chronicle::Chronicle>(),
                TransportEntry::of::<chronicle::ChroniclePretouch>(),
                TransportEntry::of::<chronicle::ChronicleNoCrc>(),
                TransportEntry::of::<ring::Ring>(),
                TransportEntry::of::<ring::RingFutex>(),
                TransportEntry::of::<ring::RingLen>(),
                TransportEntry::of::<pipe::Pipe>(),
                TransportEntry::of::<unix::UnixSeqpacket>(),
            ],
        }
    }

    /// Adds `T`, replacing any transport with the same name.
    ///
    /// # Errors
    /// [`HarnessError::InvalidConfig`] if `T::NAME` is empty or has characters other than
    /// ASCII letters, digits, `-` and `_`.
    pub fn register<T: Transport>(&mut self) -> Result<&mut Self, HarnessError> {
        if !valid_name(T::NAME) {
            return Err(HarnessError::config(
                "transport name",
                format!("`{}` must be non-empty [A-Za-z0-9_-]", T::NAME),
            ));
        }
        let entry = TransportEntry::of::<T>();
        match self.entries.iter_mut().find(|e| e.name == T::NAME) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
        Ok(self)
    }

    /// Looks a transport up by name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&TransportEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// All entries in registration order.
    #[must_use]
    pub fn entries(&self) -> &[TransportEntry] {
        &self.entries
    }

    /// All names in registration order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }
}

/// Runs one measurement of the transport called `transport`: creates the channel, spawns
/// the reader child, writes, collects and reaps. Blocks for the duration of the run; at
/// most [`RunConfig::deadline`] before the child is killed.
///
/// The binary's `main` must call [`run_child_if_requested_with`] (or
/// [`run_child_if_requested`] when `registry` is [`Registry::builtin`]) with the same
/// registry before doing anything else, or the child will not know its role.
///
/// # Errors
/// Invalid config, unknown transport or wait mode, transport failures, a failed or
/// timed-out child (with its stderr). Lost or reordered messages are **not** errors: they
/// are counted in the report (see [`RunReport::is_clean`]).
pub fn run(
    registry: &Registry,
    transport: &str,
    cfg: &RunConfig,
) -> Result<RunReport, HarnessError> {
    (resolve(registry, transport, cfg)?.parent)(cfg)
}

/// Like [`run`], but the reader runs on a second thread of this process instead of in a
/// re-executed child: the same writer and reader loops, pacing, pinning (writer on the
/// calling thread, reader thread on the reader core), histogram and report.
///
/// For channels that only exist inside one process (an in-process queue measured as a
/// reference next to the cross-process transports), or to see what a transport costs
/// between threads. No child is spawned, so the binary needs no child entry for these
/// runs. A reader thread still running at the deadline cannot be killed: the run fails
/// with [`HarnessError::Timeout`] and the thread is left detached.
///
/// # Errors
/// As for [`run`], with reader failures reported as the reader's own error.
pub fn run_in_threads(
    registry: &Registry,
    transport: &str,
    cfg: &RunConfig,
) -> Result<RunReport, HarnessError> {
    (resolve(registry, transport, cfg)?.threads)(cfg)
}

/// Validates `cfg` and finds `transport` in `registry`, checking it supports the wait mode.
fn resolve<'r>(
    registry: &'r Registry,
    transport: &str,
    cfg: &RunConfig,
) -> Result<&'r TransportEntry, HarnessError> {
    cfg.validate()?;
    let entry = registry
        .get(transport)
        .ok_or_else(|| HarnessError::UnknownTransport {
            name: transport.to_owned(),
            known: registry.names(),
        })?;
    if !entry.supports(cfg.wait) {
        return Err(HarnessError::UnsupportedWaitMode {
            transport: transport.to_owned(),
            wait: cfg.wait,
        });
    }
    Ok(entry)
}

/// [`run_child_if_requested_with`] using [`Registry::builtin`].
#[must_use]
pub fn run_child_if_requested() -> Option<i32> {
    run_child_if_requested_with(&Registry::builtin())
}

/// If this process was started as a harness reader child, runs the reader and returns
/// the exit code the caller must exit with; otherwise returns `None` immediately.
///
/// Call it first thing in `main`:
///
/// ```no_run
/// if let Some(code) = chronicle_lab::harness::run_child_if_requested() {
///     std::process::exit(code);
/// }
/// ```
///
/// Exit codes: 0 success, 1 the run failed (details on stderr), 2 malformed request or
/// unknown transport.
#[must_use]
pub fn run_child_if_requested_with(registry: &Registry) -> Option<i32> {
    let spec = std::env::var_os(child::ENV_SPEC)?;
    child::tie_to_parent();
    let fail = |code: i32, msg: &dyn std::fmt::Display| {
        let _ = writeln!(std::io::stderr(), "chronicle harness child: {msg}");
        Some(code)
    };
    let Some(spec) = spec.to_str() else {
        return fail(2, &format!("{} is not UTF-8", child::ENV_SPEC));
    };
    let spec = match ChildSpec::decode(spec) {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    let Some(dir) = std::env::var_os(child::ENV_DIR).map(PathBuf::from) else {
        return fail(2, &format!("{} is not set", child::ENV_DIR));
    };
    let Some(entry) = registry.get(&spec.transport) else {
        return fail(
            2,
            &HarnessError::UnknownTransport {
                name: spec.transport.clone(),
                known: registry.names(),
            },
        );
    };
    match (entry.child)(&spec, &dir) {
        Ok(()) => Some(0),
        Err(e) => fail(1, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct BadName;
    impl Transport for BadName {
        const NAME: &'static str = "bad name";
        type Tx = <pipe::Pipe as Transport>::Tx;
        type Rx = <pipe::Pipe as Transport>::Rx;
        fn create(dir: &std::path::Path, cfg: &ChannelConfig) -> std::io::Result<Self::Tx> {
            pipe::Pipe::create(dir, cfg)
        }
        fn open(dir: &std::path::Path, cfg: &ChannelConfig) -> std::io::Result<Self::Rx> {
            pipe::Pipe::open(dir, cfg)
        }
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [Mode::Latency, Mode::Throughput] {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        for w in WaitMode::ALL {
            assert_eq!(w.as_str().parse::<WaitMode>(), Ok(w));
            assert_eq!(w.to_string(), w.as_str());
        }
        assert_eq!(
            "x".parse::<Mode>(),
            Err("unknown mode `x` (latency|throughput)".to_owned())
        );
        assert_eq!(
            "x".parse::<WaitMode>(),
            Err("unknown wait mode `x` (spin|block)".to_owned())
        );
    }

    #[test]
    fn registry_lookup_and_validation() {
        let mut r = Registry::builtin();
        assert_eq!(
            r.names(),
            vec![
                "chronicle",
                "chronicle-pretouch",
                "chronicle-nocrc",
                "ring",
                "ring-futex",
                "ring-len",
                "pipe",
                "unix"
            ]
        );
        assert!(r.get("chronicle").unwrap().supports(WaitMode::Block));
        assert!(!r.get("ring").unwrap().supports(WaitMode::Block));
        assert!(r.get("ring-futex").unwrap().supports(WaitMode::Block));
        assert!(r.register::<BadName>().is_err());
        r.register::<pipe::Pipe>().unwrap();
        assert_eq!(r.entries().len(), 8);
    }

    #[test]
    fn run_rejects_unknown_and_unsupported() {
        let r = Registry::builtin();
        let cfg = RunConfig::default();
        assert!(matches!(
            run(&r, "nope", &cfg),
            Err(HarnessError::UnknownTransport { .. })
        ));
        let cfg = RunConfig {
            wait: WaitMode::Block,
            ..RunConfig::default()
        };
        assert!(matches!(
            run(&r, "ring", &cfg),
            Err(HarnessError::UnsupportedWaitMode { .. })
        ));
    }
}
