//! Run configuration and its encoding for the reader child.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::error::HarnessError;
use super::transport::{ChannelConfig, WaitMode};

/// Bytes at the front of every payload that the harness owns: a `u64` send timestamp
/// (native endian, ns on `CLOCK_MONOTONIC`) followed by a `u64` sequence number.
pub const HEADER_LEN: usize = 16;

/// Smallest payload a run accepts: the stamp and sequence number.
pub const MIN_PAYLOAD: usize = HEADER_LEN;

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every message carries a send timestamp; the reader records one-way latency. Sends
    /// are paced at [`RunConfig::rate`] if set, otherwise as fast as the transport takes
    /// them (which measures latency under saturation, i.e. mostly queueing).
    Latency,
    /// Unpaced, no per-message clock reads: the writer notes the time of its first
    /// measured send, the reader the time of its last receive, and the report gives
    /// `count / (last_receive - first_send)`.
    Throughput,
}

named_variants!(Mode, "mode", {
    Latency => "latency",
    Throughput => "throughput",
});

/// How the reader child is started: `program args...` with the harness environment
/// variables added. The default re-executes [`std::env::current_exe`] with no
/// arguments, which is right for any binary whose `main` calls
/// [`run_child_if_requested`](super::run_child_if_requested) first. A libtest test binary
/// instead passes arguments selecting a test that calls it (see the smoke test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildLauncher {
    /// Executable; `None` means `std::env::current_exe()` at spawn time.
    pub program: Option<PathBuf>,
    /// Arguments passed before nothing else (the role travels in the environment).
    pub args: Vec<OsString>,
}

impl Default for ChildLauncher {
    fn default() -> Self {
        Self::current_exe()
    }
}

impl ChildLauncher {
    /// Re-execute the current binary with no arguments.
    #[must_use]
    pub fn current_exe() -> Self {
        Self {
            program: None,
            args: Vec::new(),
        }
    }

    /// Re-execute the current binary with `args`.
    #[must_use]
    pub fn current_exe_with_args<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            program: None,
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// One measurement: a transport is chosen separately (see [`run`](super::run)).
///
/// Construct with [`RunConfig::default`] and assign fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunConfig {
    /// Latency (timestamps, histogram) or throughput (unpaced, no clock reads).
    pub mode: Mode,
    /// How the reader waits for data.
    pub wait: WaitMode,
    /// Measured messages (after warm-up). At least 1.
    pub count: u64,
    /// Messages sent first and excluded from the histogram and the throughput window.
    pub warmup: u64,
    /// Paced send rate in messages per second ([`Mode::Latency`] only); `None` = unpaced.
    pub rate: Option<u64>,
    /// Payload bytes per message, at least [`MIN_PAYLOAD`].
    pub payload: usize,
    /// `(writer core, reader core)`. Pinning failures are reported, not fatal.
    pub cores: Option<(usize, usize)>,
    /// Channel capacity in messages (ring slot count), a power of two.
    pub capacity: usize,
    /// Deadline for the whole run, extended by the paced duration (`(warmup + count) /
    /// rate`). On expiry the child is killed and the run fails with
    /// [`HarnessError::Timeout`].
    pub timeout: Duration,
    /// Where the per-run directory is created; `None` = `/dev/shm` if it exists, else
    /// the system temp dir.
    pub base_dir: Option<PathBuf>,
    /// How the reader child is launched.
    pub launcher: ChildLauncher,
    /// The reader reads every byte of each payload (folds it into a value the compiler
    /// must compute), as a consumer processing the message would, instead of only the
    /// 16-byte stamp and sequence number. In [`Mode::Latency`] the fold happens **before**
    /// the receive timestamp is taken, so a sample is "writer starts composing" to "reader
    /// has read the whole message"; in both modes its cost shows in the throughput. Default
    /// `false`: the reader touches only the header (and whatever the transport itself reads,
    /// e.g. chronicle's CRC check over the whole record).
    pub touch_payload: bool,
    /// Messages the writer hands over at once in unpaced runs (throughput mode):
    /// [`Sender::send_batch_with`](super::Sender::send_batch_with), which a transport with a
    /// batch publication (the ring, chronicle's `QueueWriter::batch`) implements with one
    /// publication per batch. Default 1: every message on its own. Paced (latency) runs
    /// always send one by one.
    pub batch: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Latency,
            wait: WaitMode::Spin,
            count: 10_000,
            warmup: 1_000,
            rate: Some(100_000),
            payload: 64,
            cores: None,
            capacity: 4096,
            timeout: Duration::from_secs(60),
            base_dir: None,
            launcher: ChildLauncher::default(),
            touch_payload: false,
            batch: 1,
        }
    }
}

/// The settings a benchmark sweep holds fixed while it varies mode, wait mode and payload
/// size; [`run_config`](Self::run_config) turns one point of the sweep into a [`RunConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSettings {
    /// Measured messages of a [`Mode::Latency`] run.
    pub count: u64,
    /// Measured messages of a [`Mode::Throughput`] run.
    pub thru_count: u64,
    /// Warm-up messages of every run.
    pub warmup: u64,
    /// Paced rate of latency runs; `None` = unpaced.
    pub rate: Option<u64>,
    /// `(writer core, reader core)`.
    pub cores: Option<(usize, usize)>,
    /// Channel capacity in messages.
    pub capacity: usize,
    /// Readers read every payload byte (see [`RunConfig::touch_payload`]).
    pub touch_payload: bool,
}

impl SweepSettings {
    /// The run of `payload`-byte messages in `mode`, the reader waiting per `wait`, with a
    /// two-minute deadline.
    #[must_use]
    pub fn run_config(&self, mode: Mode, wait: WaitMode, payload: usize) -> RunConfig {
        RunConfig {
            mode,
            wait,
            payload,
            rate: self.rate,
            cores: self.cores,
            capacity: self.capacity,
            warmup: self.warmup,
            count: match mode {
                Mode::Latency => self.count,
                Mode::Throughput => self.thru_count,
            },
            timeout: Duration::from_secs(120),
            touch_payload: self.touch_payload,
            ..RunConfig::default()
        }
    }
}

/// The trimmed, non-empty items of a comma-separated option value: `"ring, chronicle,"` is
/// `["ring", "chronicle"]`. The benchmark front ends take their transport and size lists so.
#[must_use]
pub fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Largest payload accepted (keeps slot arithmetic comfortably inside `u32`).
pub const MAX_PAYLOAD: usize = 1 << 20;

impl RunConfig {
    /// Checks ranges; returns the first problem found.
    ///
    /// # Errors
    /// [`HarnessError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), HarnessError> {
        if self.count == 0 {
            return Err(HarnessError::config("count", "must be at least 1"));
        }
        if self.count.checked_add(self.warmup).is_none() {
            return Err(HarnessError::config(
                "warmup",
                "count + warmup overflows u64",
            ));
        }
        if self.payload < MIN_PAYLOAD || self.payload > MAX_PAYLOAD {
            return Err(HarnessError::config(
                "payload",
                format!(
                    "{} bytes is outside {MIN_PAYLOAD}..={MAX_PAYLOAD} (the first {HEADER_LEN} bytes carry the timestamp and sequence number)",
                    self.payload
                ),
            ));
        }
        if self.rate == Some(0) {
            return Err(HarnessError::config("rate", "must be positive or unset"));
        }
        if !self.capacity.is_power_of_two() || self.capacity < 2 || self.capacity > (1 << 24) {
            return Err(HarnessError::config(
                "capacity",
                format!("{} is not a power of two in 2..=2^24", self.capacity),
            ));
        }
        if self.timeout.is_zero() {
            return Err(HarnessError::config("timeout", "must be non-zero"));
        }
        if self.batch == 0 || self.batch > self.capacity {
            return Err(HarnessError::config(
                "batch",
                format!("{} is outside 1..=capacity ({})", self.batch, self.capacity),
            ));
        }
        Ok(())
    }

    /// The channel sizing both processes derive from this config.
    #[must_use]
    pub fn channel(&self) -> ChannelConfig {
        ChannelConfig::new(self.payload, self.capacity, self.timeout)
    }

    /// Total messages on the wire: warm-up plus measured.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.warmup.saturating_add(self.count)
    }

    /// The send rate that actually applies (throughput runs are never paced).
    #[must_use]
    pub fn effective_rate(&self) -> Option<u64> {
        match self.mode {
            Mode::Latency => self.rate,
            Mode::Throughput => None,
        }
    }

    /// The run deadline: `timeout` plus the time the paced schedule needs.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        let paced = self.effective_rate().map_or(Duration::ZERO, |r| {
            Duration::from_secs(self.total() / r.max(1))
        });
        self.timeout.saturating_add(paced)
    }
}

/// What the reader child needs to know, encoded into one environment variable as
/// space-separated `key=value` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildSpec {
    pub transport: String,
    pub mode: Mode,
    pub wait: WaitMode,
    pub count: u64,
    pub warmup: u64,
    pub payload: usize,
    pub capacity: usize,
    pub timeout: Duration,
    pub core: Option<usize>,
    pub touch_payload: bool,
}

impl ChildSpec {
    pub(crate) fn from_run(transport: &str, cfg: &RunConfig) -> Self {
        Self {
            transport: transport.to_owned(),
            mode: cfg.mode,
            wait: cfg.wait,
            count: cfg.count,
            warmup: cfg.warmup,
            payload: cfg.payload,
            capacity: cfg.capacity,
            timeout: cfg.timeout,
            core: cfg.cores.map(|(_, reader)| reader),
            touch_payload: cfg.touch_payload,
        }
    }

    pub(crate) fn channel(&self) -> ChannelConfig {
        ChannelConfig::new(self.payload, self.capacity, self.timeout)
    }

    pub(crate) fn total(&self) -> u64 {
        self.warmup.saturating_add(self.count)
    }

    pub(crate) fn encode(&self) -> String {
        let core = self
            .core
            .map_or_else(|| "none".to_owned(), |c| c.to_string());
        format!(
            "v1 transport={} mode={} wait={} count={} warmup={} payload={} capacity={} timeout_ms={} core={} touch={}",
            self.transport,
            self.mode,
            self.wait,
            self.count,
            self.warmup,
            self.payload,
            self.capacity,
            self.timeout.as_millis(),
            core,
            u8::from(self.touch_payload)
        )
    }

    pub(crate) fn decode(s: &str) -> Result<Self, HarnessError> {
        fn bad(detail: String) -> HarnessError {
            HarnessError::ChildSpec { detail }
        }
        fn num<T: FromStr>(key: &str, v: &str) -> Result<T, HarnessError> {
            v.parse()
                .map_err(|_| bad(format!("`{key}` is not a number: `{v}`")))
        }
        let mut tokens = s.split_ascii_whitespace();
        if tokens.next() != Some("v1") {
            return Err(bad(format!("unsupported spec version in `{s}`")));
        }
        let mut transport = None;
        let mut mode = None;
        let mut wait = None;
        let mut count = None;
        let mut warmup = None;
        let mut payload = None;
        let mut capacity = None;
        let mut timeout = None;
        let mut core = None;
        let mut touch_payload = None;
        for tok in tokens {
            let (k, v) = tok
                .split_once('=')
                .ok_or_else(|| bad(format!("token `{tok}` is not key=value")))?;
            match k {
                "transport" => transport = Some(v.to_owned()),
                "mode" => mode = Some(v.parse().map_err(bad)?),
                "wait" => wait = Some(v.parse().map_err(bad)?),
                "count" => count = Some(num(k, v)?),
                "warmup" => warmup = Some(num(k, v)?),
                "payload" => payload = Some(num(k, v)?),
                "capacity" => capacity = Some(num(k, v)?),
                "timeout_ms" => timeout = Some(Duration::from_millis(num(k, v)?)),
                "core" => core = Some(if v == "none" { None } else { Some(num(k, v)?) }),
                "touch" => {
                    touch_payload = Some(match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad(format!("`touch` is not 0 or 1: `{v}`"))),
                    });
                }
                _ => return Err(bad(format!("unknown key `{k}`"))),
            }
        }
        let missing = |k: &str| bad(format!("missing `{k}` in `{s}`"));
        Ok(Self {
            transport: transport.ok_or_else(|| missing("transport"))?,
            mode: mode.ok_or_else(|| missing("mode"))?,
            wait: wait.ok_or_else(|| missing("wait"))?,
            count: count.ok_or_else(|| missing("count"))?,
            warmup: warmup.ok_or_else(|| missing("warmup"))?,
            payload: payload.ok_or_else(|| missing("payload"))?,
            capacity: capacity.ok_or_else(|| missing("capacity"))?,
            timeout: timeout.ok_or_else(|| missing("timeout_ms"))?,
            core: core.ok_or_else(|| missing("core"))?,
            touch_payload: touch_payload.ok_or_else(|| missing("touch"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_list_trims_and_drops_empty_items() {
        assert_eq!(comma_list(" ring, chronicle,,"), ["ring", "chronicle"]);
        assert!(comma_list("").is_empty());
    }

    #[test]
    fn spec_round_trips() {
        let mut cfg = RunConfig {
            cores: Some((0, 1)),
            wait: WaitMode::Block,
            mode: Mode::Throughput,
            ..RunConfig::default()
        };
        let spec = ChildSpec::from_run("ring", &cfg);
        let back = ChildSpec::decode(&spec.encode()).unwrap();
        assert_eq!(spec, back);
        assert_eq!(back.core, Some(1));

        cfg.cores = None;
        let spec = ChildSpec::from_run("pipe", &cfg);
        assert_eq!(ChildSpec::decode(&spec.encode()).unwrap(), spec);
        assert!(!spec.touch_payload);

        cfg.touch_payload = true;
        let spec = ChildSpec::from_run("unix", &cfg);
        assert!(spec.encode().contains(" touch=1"));
        let back = ChildSpec::decode(&spec.encode()).unwrap();
        assert!(back.touch_payload);
        assert_eq!(back, spec);
    }

    #[test]
    fn spec_rejects_garbage() {
        assert!(ChildSpec::decode("").is_err());
        assert!(ChildSpec::decode("v2 transport=ring").is_err());
        assert!(ChildSpec::decode("v1 transport=ring").is_err());
        assert!(ChildSpec::decode("v1 count=abc").is_err());
        let mut spec = ChildSpec::from_run("ring", &RunConfig::default()).encode();
        assert!(ChildSpec::decode(&spec).is_ok());
        spec = spec.replace(" touch=0", " touch=yes");
        assert!(ChildSpec::decode(&spec).is_err());
        spec = spec.replace(" touch=yes", "");
        assert!(ChildSpec::decode(&spec).is_err(), "touch is required");
    }

    #[test]
    fn validation_catches_bad_fields() {
        let ok = RunConfig::default();
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.payload = 8;
        assert!(matches!(
            c.validate(),
            Err(HarnessError::InvalidConfig {
                field: "payload",
                ..
            })
        ));
        let mut c = ok.clone();
        c.capacity = 1000;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.count = 0;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.rate = Some(0);
        assert!(c.validate().is_err());
    }
}
