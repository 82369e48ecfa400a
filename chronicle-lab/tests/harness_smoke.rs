//! End-to-end runs of every built-in transport through the cross-process harness.
// Test helpers outside `#[test]` functions: panicking on failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chronicle_lab::harness::pipe::Pipe;
use chronicle_lab::harness::{
    ChannelConfig, ChildLauncher, HarnessError, Mode, Receiver, Registry, RunConfig, RunReport,
    Sender, Transport, WaitMode, run, run_child_if_requested_with, run_in_threads,
};

/// The libtest test that plays the reader child when the harness re-executes this binary.
const CHILD_TEST: &str = "harness_child_entry";

/// A transport whose reader cannot open: exercises the child-failure path.
struct FailingOpen;

impl Transport for FailingOpen {
    const NAME: &'static str = "failing-open";
    type Tx = <Pipe as Transport>::Tx;
    type Rx = <Pipe as Transport>::Rx;

    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Tx> {
        Pipe::create(dir, cfg)
    }

    fn open(_dir: &Path, _cfg: &ChannelConfig) -> io::Result<Self::Rx> {
        Err(io::Error::other(
            "deliberate open failure for the smoke test",
        ))
    }
}

/// A transport whose reader never receives anything: exercises the watchdog.
struct Hanging;

struct DiscardTx;
struct NeverRx;

impl Sender for DiscardTx {
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        let mut buf = vec![0; len];
        fill(&mut buf);
        Ok(())
    }
}

impl Receiver for NeverRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, _wait: WaitMode, _f: F) -> io::Result<R> {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Transport for Hanging {
    const NAME: &'static str = "hanging";
    type Tx = DiscardTx;
    type Rx = NeverRx;

    fn create(_dir: &Path, _cfg: &ChannelConfig) -> io::Result<Self::Tx> {
        Ok(DiscardTx)
    }

    fn open(_dir: &Path, _cfg: &ChannelConfig) -> io::Result<Self::Rx> {
        Ok(NeverRx)
    }
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register::<FailingOpen>().unwrap();
    r.register::<Hanging>().unwrap();
    r
}

#[test]
fn harness_child_entry() {
    // A no-op unless the harness re-executed this binary as a reader child.
    if let Some(code) = run_child_if_requested_with(&registry()) {
        std::process::exit(code);
    }
}

/// Runs are serialised: each one keeps two threads busy on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn config(mode: Mode, wait: WaitMode) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.launcher =
        ChildLauncher::current_exe_with_args([CHILD_TEST, "--exact", "--nocapture", "-q"]);
    cfg.mode = mode;
    cfg.wait = wait;
    cfg.count = 3_000;
    cfg.warmup = 200;
    cfg.rate = Some(50_000);
    cfg.payload = 64;
    cfg.capacity = 1024;
    cfg.timeout = Duration::from_secs(60);
    cfg
}

fn run_serial(transport: &str, cfg: &RunConfig) -> Result<RunReport, HarnessError> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run(&registry(), transport, cfg)
}

fn assert_clean(r: &RunReport, cfg: &RunConfig) {
    assert_eq!(
        r.seq_errors, 0,
        "{}/{}: sequence errors, first: {:?}",
        r.transport, r.wait, r.first_seq_error
    );
    assert_eq!(r.sent, cfg.count + cfg.warmup);
    assert_eq!(
        r.received, r.sent,
        "{}/{}: lost messages",
        r.transport, r.wait
    );
    assert_eq!(r.measured, cfg.count);
    assert!(r.is_clean());
    assert!(r.throughput > 0.0);
    assert!(r.window_ns > 0);
}

fn check_transport(name: &str) {
    let entry = *registry().get(name).unwrap();
    for wait in WaitMode::ALL {
        if !entry.supports(wait) {
            continue;
        }
        let cfg = config(Mode::Latency, wait);
        let r = run_serial(name, &cfg).unwrap_or_else(|e| panic!("{name}/{wait}: {e}"));
        assert_clean(&r, &cfg);
        let lat = r.latency.expect("latency mode reports percentiles");
        assert_eq!(lat.count, cfg.count);
        assert!(lat.min > 0, "{name}/{wait}: zero latency sample");
        assert!(lat.min <= lat.p50, "{lat:?}");
        assert!(lat.p50 <= lat.p90 && lat.p90 <= lat.p99, "{lat:?}");
        assert!(lat.p99 <= lat.p999, "{lat:?}");
        // Quantiles are bucket-rounded (3 significant digits); the max is exact.
        assert!(lat.p999 <= r.histogram.as_ref().unwrap().max(), "{lat:?}");
        assert!(lat.max >= lat.p50, "{lat:?}");
        assert_eq!(r.histogram.as_ref().unwrap().len(), cfg.count);

        let cfg = config(Mode::Throughput, wait);
        let r = run_serial(name, &cfg).unwrap_or_else(|e| panic!("{name}/{wait} thru: {e}"));
        assert_clean(&r, &cfg);
        assert!(r.latency.is_none());
        assert_eq!(r.rate, None);
    }
}

#[test]
fn ring_delivers_everything_in_order() {
    check_transport("ring");
}

#[test]
fn chronicle_delivers_everything_in_order() {
    check_transport("chronicle");
}

/// The paced writer pretouches the next segment in its waits (`Sender::idle`).
#[test]
fn chronicle_pretouch_delivers_everything_in_order() {
    check_transport("chronicle-pretouch");
}

/// The reader skips the CRC check; everything else is `chronicle`.
#[test]
fn chronicle_nocrc_delivers_everything_in_order() {
    check_transport("chronicle-nocrc");
}

#[test]
fn ring_futex_delivers_everything_in_order() {
    check_transport("ring-futex");
}

#[test]
fn length_prefixed_ring_delivers_everything_in_order() {
    check_transport("ring-len");
}

#[test]
fn pipe_delivers_everything_in_order() {
    check_transport("pipe");
}

#[test]
fn unix_delivers_everything_in_order() {
    check_transport("unix");
}

#[test]
fn batched_throughput_runs_deliver_everything_in_order() {
    for name in ["ring", "ring-len", "chronicle", "pipe"] {
        let mut cfg = config(Mode::Throughput, WaitMode::Spin);
        cfg.batch = 16;
        cfg.capacity = 64;
        // Not a multiple of the batch, so the last batch and the warm-up's are partial.
        cfg.warmup = 1_000;
        cfg.count = 20_007;
        let r = run_serial(name, &cfg).unwrap_or_else(|e| panic!("{name} batched: {e}"));
        assert_clean(&r, &cfg);
    }
    let mut cfg = config(Mode::Throughput, WaitMode::Spin);
    cfg.batch = 0;
    assert!(run_serial("ring", &cfg).is_err());
}

#[test]
fn large_payload_and_small_ring_exercise_back_pressure() {
    // 1 KiB messages through an 8-slot ring, unpaced (as throughput runs always are): the
    // writer laps constantly.
    for (name, mode, wait) in [
        ("ring", Mode::Latency, WaitMode::Spin),
        ("ring-futex", Mode::Throughput, WaitMode::Block),
        ("ring-len", Mode::Throughput, WaitMode::Spin),
    ] {
        let mut cfg = config(mode, wait);
        cfg.payload = 1024;
        cfg.capacity = 8;
        cfg.rate = None;
        let r = run_serial(name, &cfg).unwrap_or_else(|e| panic!("{name} {mode}: {e}"));
        assert_clean(&r, &cfg);
    }
}

#[test]
fn touch_payload_runs_complete_for_every_transport() {
    // Readers fold every byte of 1 KiB payloads; the option travels to the reader child
    // (and to the reader thread) and comes back in the report.
    for name in Registry::builtin().names() {
        let mut cfg = config(Mode::Latency, WaitMode::Spin);
        cfg.payload = 1024;
        cfg.touch_payload = true;
        if !registry().get(name).unwrap().supports(cfg.wait) {
            cfg.wait = WaitMode::Block;
        }
        let r = run_serial(name, &cfg).unwrap_or_else(|e| panic!("{name} touch: {e}"));
        assert_clean(&r, &cfg);
        assert!(r.touch_payload, "{name}");
        assert_eq!(r.latency.expect("latency mode").count, cfg.count);
    }
    let mut cfg = config(Mode::Throughput, WaitMode::Block);
    cfg.payload = 1000;
    cfg.touch_payload = true;
    let r = run_serial("chronicle", &cfg).unwrap();
    assert_clean(&r, &cfg);
    assert!(r.touch_payload);
    let mut cfg = config(Mode::Latency, WaitMode::Spin);
    cfg.payload = 100;
    cfg.touch_payload = true;
    let r = {
        let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        run_in_threads(&registry(), "ring", &cfg).unwrap()
    };
    assert_clean(&r, &cfg);
    assert!(r.touch_payload);
    let table = chronicle_lab::harness::format_table(&[r], &["ring"]);
    assert!(table.contains("reader read whole payload"), "{table}");
}

#[test]
fn child_failure_is_reported_with_its_stderr() {
    let cfg = config(Mode::Latency, WaitMode::Spin);
    let err = run_serial("failing-open", &cfg).unwrap_err();
    let HarnessError::Child { stderr, detail, .. } = &err else {
        panic!("expected a child failure, got {err}");
    };
    assert!(stderr.contains("deliberate open failure"), "{err}");
    assert!(detail.contains("code 1"), "{err}");
}

#[test]
fn hung_child_is_killed_at_the_deadline() {
    let mut cfg = config(Mode::Latency, WaitMode::Block);
    cfg.count = 10;
    cfg.warmup = 0;
    cfg.rate = None;
    cfg.timeout = Duration::from_secs(2);
    let err = run_serial("hanging", &cfg).unwrap_err();
    assert!(
        matches!(err, HarnessError::Timeout { .. }),
        "expected a timeout, got {err}"
    );
}

/// An in-process channel (a `Mutex<VecDeque>` handed from `create` to `open` through a
/// process-global slot): it exists only inside one process, so only the thread runner can
/// measure it.
struct InProcess;

type Shared = std::sync::Arc<Mutex<std::collections::VecDeque<Vec<u8>>>>;
static HANDOFF: Mutex<Option<Shared>> = Mutex::new(None);

struct QueueTx(Shared);
struct QueueRx(Shared);

impl Sender for QueueTx {
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        let mut buf = vec![0; len];
        fill(&mut buf);
        self.0.lock().unwrap().push_back(buf);
        Ok(())
    }
}

impl Receiver for QueueRx {
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, _wait: WaitMode, f: F) -> io::Result<R> {
        loop {
            if let Some(m) = self.0.lock().unwrap().pop_front() {
                return Ok(f(&m));
            }
            std::hint::spin_loop();
        }
    }
}

impl Transport for InProcess {
    const NAME: &'static str = "in-process";
    type Tx = QueueTx;
    type Rx = QueueRx;

    fn create(_dir: &Path, _cfg: &ChannelConfig) -> io::Result<Self::Tx> {
        let q = Shared::default();
        *HANDOFF.lock().unwrap() = Some(q.clone());
        Ok(QueueTx(q))
    }

    fn open(_dir: &Path, _cfg: &ChannelConfig) -> io::Result<Self::Rx> {
        HANDOFF
            .lock()
            .unwrap()
            .take()
            .map(QueueRx)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no in-process channel"))
    }
}

#[test]
fn thread_runner_measures_in_process_and_cross_process_transports() {
    let mut reg = registry();
    reg.register::<InProcess>().unwrap();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["in-process", "ring", "pipe"] {
        for mode in [Mode::Latency, Mode::Throughput] {
            let cfg = config(mode, WaitMode::Spin);
            let r = run_in_threads(&reg, name, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_clean(&r, &cfg);
            assert_eq!(r.latency.is_some(), mode == Mode::Latency);
        }
    }
    // The reader thread's open failure comes back as the reader's error.
    let err =
        run_in_threads(&reg, "failing-open", &config(Mode::Latency, WaitMode::Spin)).unwrap_err();
    assert!(
        matches!(
            err,
            HarnessError::Transport {
                phase: chronicle_lab::harness::Phase::Open,
                ..
            }
        ),
        "{err}"
    );
}
