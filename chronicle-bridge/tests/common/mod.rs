//! Real components for the bridge tests: `nats-server` processes (single and clustered) on
//! loopback ports with JetStream in temporary directories, `chron-bridge` processes, and
//! deterministic records to check byte for byte. `jwt` makes NATS operator/account/user JWTs,
//! `.creds` files and an operator-mode server configuration.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod args;
pub mod jwt;

use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, WriterConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Segment size of the test queues (small, so transfers cross segment boundaries).
pub const SEGMENT: u64 = 1 << 20;
/// Timestamp of record 0; record `seq` is stamped `TS0 + seq * 1000 + seq % 7`.
pub const TS0: u64 = 1_700_000_000_000_000_000;

/// The out-bridge's wire form: the transfer and fault tests run in both (see [`both_modes!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch envelopes (the default `--batch`).
    Batched,
    /// One record per message (`--batch 1`).
    OnePerMessage,
}

impl Mode {
    /// Out-bridge options selecting the mode.
    pub fn out_args(self) -> Vec<String> {
        match self {
            Mode::Batched => vec!["--batch".to_string(), "256".to_string()],
            Mode::OnePerMessage => vec!["--batch".to_string(), "1".to_string()],
        }
    }

    /// `extra` followed by this mode's out-bridge options.
    pub fn with(self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(self.out_args());
        v
    }
}

/// Declares, for each scenario function `fn name(mode: Mode)`, a module `name` with two tests,
/// `batched` and `one_per_message`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn batched() {
                    super::$name($crate::common::Mode::Batched)
                }
                #[test]
                fn one_per_message() {
                    super::$name($crate::common::Mode::OnePerMessage)
                }
            }
        )*
    };
}

/// Generous bound for a transfer to complete on a loaded 2-core machine.
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(240);

/// Path of `nats-server`, or None (after saying why) when the test should be skipped.
/// Under CI (`CI` set) a missing binary is a failure, not a skip.
pub fn nats_server_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from("/usr/sbin/nats-server")),
        Some(PathBuf::from("/usr/bin/nats-server")),
        Some(PathBuf::from("/usr/local/bin/nats-server")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return Some(c);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("nats-server is not installed (CI is set, so this is a failure, not a skip)");
    }
    eprintln!(
        "SKIPPED: nats-server not found (install the Debian package nats-server, or set NATS_SERVER)"
    );
    None
}

/// A free loopback TCP port (bound and released; good enough on a quiet loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Number from the environment, or a default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One nats-server process with JetStream.
pub struct NatsServer {
    bin: PathBuf,
    pub name: String,
    pub port: u16,
    args: Vec<String>,
    pub store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Arguments of a JetStream server named `name` on 127.0.0.1:`port`, storing under `store`.
fn jetstream_args(store: &Path, port: u16, name: &str) -> Vec<String> {
    vec![
        "-js".into(),
        "-sd".into(),
        store.display().to_string(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-n".into(),
        name.to_string(),
    ]
}

impl NatsServer {
    /// A stand-alone server with JetStream storing under `dir`.
    pub fn single(bin: &Path, dir: &Path, extra: &[&str]) -> NatsServer {
        let port = free_port();
        let store = dir.join("js-single");
        let mut args = jetstream_args(&store, port, "single");
        args.extend(extra.iter().map(|s| s.to_string()));
        NatsServer::launch(bin, dir, "single", port, args, store)
    }

    /// Starts the server `name` on 127.0.0.1:`port` with `args`, logging to
    /// `dir/nats-<name>.log`; `store` is where its arguments keep JetStream data.
    fn launch(
        bin: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        args: Vec<String>,
        store: PathBuf,
    ) -> NatsServer {
        let mut s = NatsServer {
            bin: bin.to_path_buf(),
            name: name.to_string(),
            port,
            args,
            store,
            log: dir.join(format!("nats-{name}.log")),
            child: None,
        };
        s.start();
        s
    }

    /// A server started from the configuration file `config` (which must listen on
    /// 127.0.0.1:`port` and keep JetStream data under `store`), logging under `dir`.
    pub fn from_config(
        bin: &Path,
        dir: &Path,
        name: &str,
        config: &Path,
        port: u16,
        store: &Path,
    ) -> NatsServer {
        let args = vec!["-c".into(), config.display().to_string()];
        NatsServer::launch(bin, dir, name, port, args, store.to_path_buf())
    }

    /// A 3-node cluster (routes on loopback), JetStream on every node.
    pub fn cluster(bin: &Path, dir: &Path) -> Vec<NatsServer> {
        let cports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let name = format!("n{i}");
            let store = dir.join(format!("js-{name}"));
            let routes: Vec<String> = cports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect();
            let mut args = jetstream_args(&store, port, &name);
            args.extend([
                "--cluster_name".into(),
                "chron".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cports[i]),
                "--routes".into(),
                routes.join(","),
            ]);
            nodes.push(NatsServer::launch(bin, dir, &name, port, args, store));
        }
        nodes
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The same server with the `tls://` scheme (the client insists on TLS).
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// The INFO line the server sends to a new plain TCP connection (it says whether the
    /// server requires TLS).
    pub fn info_line(&self) -> String {
        use std::io::{BufRead, BufReader};
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    /// Starts the process (same port, same store) and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        // This start is ready when its own log says so (a port taken by someone else would
        // also accept connections).
        let ready_before = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Server is ready")
            .count();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        let ready = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("Server is ready")
                .count()
                > ready_before
        };
        while !ready(&self.log) || TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "nats-server {} exited ({st}) on start; log:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            assert!(
                Instant::now() < end,
                "nats-server {} did not listen on {} within 30 s; log:\n{}",
                self.name,
                self.port,
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 30)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nats-server arguments for TLS on the client port with `cert`/`key`; with `client_ca`,
/// clients must present a certificate issued by it (mutual TLS).
pub fn tls_args(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Vec<String> {
    let mut v = vec![
        "--tls".to_string(),
        "--tlscert".to_string(),
        cert.display().to_string(),
        "--tlskey".to_string(),
        key.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        v.extend([
            "--tlscacert".to_string(),
            ca.display().to_string(),
            "--tlsverify".to_string(),
        ]);
    }
    v
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `chron-bridge` process; its stderr goes to a log file (appended across restarts).
pub struct Bridge {
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Bridge {
    pub fn new(args: &[String], log: PathBuf) -> Bridge {
        Bridge {
            args: args.to_vec(),
            envs: Vec::new(),
            log,
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chron-bridge"));
        cmd.args(&self.args)
            .env_remove("NATS_CA")
            .env_remove("NATS_CERT")
            .env_remove("NATS_KEY")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; SIGKILL if it does not come.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `chron-bridge` to completion with a deadline; returns (exit code, stderr).
pub fn run_bridge(args: &[&str], envs: &[(&str, &str)], deadline: Duration) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chron-bridge"));
    cmd.args(args)
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("NATS_TOKEN")
        .env_remove("NATS_URL")
        .env_remove("NATS_CA")
        .env_remove("NATS_CERT")
        .env_remove("NATS_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let end = Instant::now() + deadline;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code().unwrap_or(-1), err);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chron-bridge {args:?} did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic payload of source record `seq` (8 to 263 bytes).
pub fn payload(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2654435761) % 256) as usize;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (seq as u8) ^ (i as u8).wrapping_mul(31)));
    v
}

pub fn type_id(seq: u64) -> u32 {
    (seq % 13) as u32 + 1
}

pub fn timestamp(seq: u64) -> u64 {
    TS0 + seq * 1000 + seq % 7
}

pub fn writer_config() -> WriterConfig {
    WriterConfig {
        segment_size: SEGMENT,
        ..WriterConfig::default()
    }
}

/// Appends records `[from, to)` to the queue, `per_ms` records per millisecond (0: unpaced).
pub fn write_records(w: &mut QueueWriter, from: u64, to: u64, per_ms: u64) {
    let start = Instant::now();
    for seq in from..to {
        assert_eq!(
            w.append_at(type_id(seq), timestamp(seq), &payload(seq))
                .unwrap(),
            seq
        );
        if per_ms > 0 && (seq - from) % per_ms == per_ms - 1 {
            let due = Duration::from_millis((seq - from + 1) / per_ms);
            if let Some(d) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(d);
            }
        }
    }
}

/// Appends records `[from, to)` from a thread as `write_records` does, then closes the queue.
pub fn spawn_writer(
    mut w: QueueWriter,
    from: u64,
    to: u64,
    per_ms: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        write_records(&mut w, from, to, per_ms);
        w.close().unwrap();
    })
}

/// Calls `attempt` every 50 ms until it gives a value; past `end`, panics with its complaint
/// and `diag()`.
fn retry_until<T>(
    end: Instant,
    diag: &dyn Fn() -> String,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(why) => {
                assert!(Instant::now() < end, "{why}\n{}", diag());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Waits until the queue at `q` holds `n` records, checking each one against the source
/// records 0..n as it arrives (payload, type id, timestamp, order). Panics with `diag()` on a
/// mismatch or after the deadline.
pub fn verify_arrival(q: &Path, n: u64, deadline: Duration, diag: &dyn Fn() -> String) {
    let end = Instant::now() + deadline;
    retry_until(end, diag, || {
        if q.join("queue.meta").exists() {
            Ok(())
        } else {
            Err(format!("queue {} was never created", q.display()))
        }
    });
    let mut r = retry_until(end, diag, || {
        QueueReader::open(q, ReaderConfig::default())
            .map_err(|e| format!("cannot open {}: {e}", q.display()))
    });
    let mut i = 0u64;
    let mut last_report = Instant::now();
    while i < n {
        match r.next().unwrap() {
            Some(m) => {
                let want = payload(i);
                if m.payload() != want.as_slice()
                    || m.type_id() != type_id(i)
                    || m.timestamp_ns() != timestamp(i)
                {
                    let got_seq = m
                        .payload()
                        .get(..8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                    panic!(
                        "record {} of {} is wrong: expected source seq {i}, got a record whose payload starts with seq {got_seq:?} (type {}, ts {})\n{}",
                        m.seq(),
                        q.display(),
                        m.type_id(),
                        m.timestamp_ns(),
                        diag()
                    );
                }
                i += 1;
            }
            None => {
                assert!(
                    Instant::now() < end,
                    "only {i} of {n} records arrived in {} within {deadline:?}\n{}",
                    q.display(),
                    diag()
                );
                if last_report.elapsed() > Duration::from_secs(10) {
                    eprintln!("... {i} of {n} records arrived");
                    last_report = Instant::now();
                }
                let _ = r.wait(Duration::from_millis(100)).unwrap();
            }
        }
    }
}

/// Counts the records in the queue at `q`.
pub fn count_records(q: &Path) -> u64 {
    let mut r = QueueReader::open(q, ReaderConfig::default()).unwrap();
    let mut n = 0;
    while r.next().unwrap().is_some() {
        n += 1;
    }
    n
}

/// A small xorshift generator; the seed is printed so a failing run can be replayed with
/// `CHRONICLE_BRIDGE_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = env_u64(
            "CHRONICLE_BRIDGE_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1,
        );
        eprintln!("seed {seed} (replay with CHRONICLE_BRIDGE_SEED={seed})");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The last JSON line of a bridge log (its last stats line); panics, showing the log, if none.
pub fn last_json_line(log: &str) -> serde_json::Value {
    log.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no JSON stats line:\n{log}"))
}

/// Two hosts' queue paths (`hostA/feed`, `hostB/feed`) under one temporary directory.
pub struct Hosts {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub a: PathBuf,
    pub b: PathBuf,
}

/// A fresh pair of hosts.
pub fn hosts() -> Hosts {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let a = root.join("hostA").join("feed");
    let b = root.join("hostB").join("feed");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    Hosts {
        _dir: dir,
        root,
        a,
        b,
    }
}
