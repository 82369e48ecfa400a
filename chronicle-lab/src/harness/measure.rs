//! The monomorphized measurement loops: writer (parent) and reader (child).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::affinity::{PinOutcome, SavedAffinity, try_pin};
use super::child::{ChildProc, READY, emit};
use super::clock::spin_until;
use super::config::{ChildSpec, Mode, RunConfig};
use super::error::{HarnessError, Phase};
use super::report::{ChildResults, LINE_PREFIX, LatencyStats, RunReport, new_histogram};
use super::transport::{Receiver, Sender, Transport};
use chronicle_core::os::monotonic_ns;

/// A private per-run directory, removed on drop.
struct RunDir(PathBuf);

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RunDir {
    fn create(base: Option<&Path>) -> Result<Self, HarnessError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = match base {
            Some(b) => b.to_owned(),
            None => {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_owned()
                } else {
                    std::env::temp_dir()
                }
            }
        };
        let mut last_err = None;
        for _ in 0..8 {
            let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "chronicle-harness-{}-{n}-{}",
                std::process::id(),
                monotonic_ns() % 1_000_000_000
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    return Err(HarnessError::io(
                        format!("creating run directory {}", path.display()),
                        e,
                    ));
                }
            }
        }
        Err(HarnessError::io(
            format!("creating a run directory under {}", base.display()),
            last_err.unwrap_or_else(|| std::io::Error::other("no attempt made")),
        ))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the writer loop measured.
struct WriterStats {
    first_measured_send_ns: u64,
    max_send_lag_ns: u64,
}

/// Writes `stamp` and `seq` into the harness header and the body template after it.
#[inline(always)]
fn fill_message(buf: &mut [u8], stamp: u64, seq: u64, body: &[u8]) {
    if let Some((stamp_bytes, rest)) = buf.split_first_chunk_mut::<8>() {
        *stamp_bytes = stamp.to_ne_bytes();
        if let Some((seq_bytes, tail)) = rest.split_first_chunk_mut::<8>() {
            *seq_bytes = seq.to_ne_bytes();
            if tail.len() == body.len() {
                tail.copy_from_slice(body);
            }
        }
    }
}

/// Reads `(stamp, seq)` from a message; `None` if it is shorter than the header.
#[inline(always)]
fn parse_message(buf: &[u8]) -> Option<(u64, u64)> {
    let (stamp, rest) = buf.split_first_chunk::<8>()?;
    let (seq, _) = rest.split_first_chunk::<8>()?;
    Some((u64::from_ne_bytes(*stamp), u64::from_ne_bytes(*seq)))
}

/// Folds every byte of `buf` into one value: the XOR of its native-endian `u64` words, a
/// trailing partial word zero-padded. A change to any single byte changes the result, so
/// the compiler cannot leave any byte unread once the result is passed to
/// [`std::hint::black_box`]: the reader has loaded every cache line of the message.
#[inline(always)]
fn fold_payload(buf: &[u8]) -> u64 {
    let words = buf.chunks_exact(8);
    let rest = words.remainder();
    let acc = words.fold(0u64, |acc, w| {
        acc ^ <[u8; 8]>::try_from(w).map_or(0, u64::from_ne_bytes)
    });
    let mut tail = [0u8; 8];
    for (d, s) in tail.iter_mut().zip(rest) {
        *d = *s;
    }
    acc ^ u64::from_ne_bytes(tail)
}

/// Pins the writer thread (saving the caller's mask), completes the transport's connection,
/// runs the write loop and restores the mask. Pinning comes before `connect`, so a transport can
/// place helper threads next to the writer. `Err` is a connection failure; the write loop's own
/// result comes back inside `Ok`.
fn pinned_write<S: Sender>(
    tx: &mut S,
    cfg: &RunConfig,
) -> std::io::Result<(PinOutcome, std::io::Result<WriterStats>)> {
    let saved = match cfg.cores {
        Some(_) => SavedAffinity::current().ok(),
        None => None,
    };
    let writer_pin = try_pin(cfg.cores.map(|(w, _)| w));
    let written = tx.connect().map(|()| write_loop(tx, cfg));
    if let Some(saved) = saved {
        // Best effort: the caller's thread gets its old mask back.
        let _ = saved.restore();
    }
    written.map(|w| (writer_pin, w))
}

/// [`spin_until`] `due`, handing the transport the wait ([`Sender::idle`]) while it has work.
/// A step of that work may end after `due`: the send is then late (`max_send_lag_ns`), as a
/// real producer's would be, but its message is stamped when it is sent, after the wait.
#[inline]
fn wait_until<S: Sender>(tx: &mut S, due: u64) -> u64 {
    loop {
        let now = monotonic_ns();
        if now >= due {
            return now;
        }
        if !tx.idle() {
            return spin_until(due);
        }
    }
}

fn write_loop<S: Sender>(tx: &mut S, cfg: &RunConfig) -> Result<WriterStats, std::io::Error> {
    let total = cfg.total();
    let warmup = cfg.warmup;
    let latency = cfg.mode == Mode::Latency;
    // Body bytes after the 16-byte header: a fixed pattern, copied into every message so
    // the writer touches the whole payload as a real producer would.
    let body: Vec<u8> = (0..cfg.payload.saturating_sub(super::config::HEADER_LEN))
        .map(|i| (i % 251) as u8)
        .collect();
    let payload = cfg.payload;
    let mut stats = WriterStats {
        first_measured_send_ns: 0,
        max_send_lag_ns: 0,
    };
    let start = monotonic_ns();
    match cfg.effective_rate() {
        Some(rate) => {
            for seq in 0..total {
                // Integer schedule from the start time, so rounding never accumulates.
                let offset = u128::from(seq) * 1_000_000_000 / u128::from(rate);
                let due = start.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX));
                let now = wait_until(tx, due);
                stats.max_send_lag_ns = stats.max_send_lag_ns.max(now.saturating_sub(due));
                if seq == warmup {
                    stats.first_measured_send_ns = now;
                }
                tx.send_with(payload, |buf| {
                    let stamp = if latency { monotonic_ns() } else { 0 };
                    fill_message(buf, stamp, seq, &body);
                })?;
            }
        }
        None if !latency && cfg.batch > 1 => {
            let mut seq = 0;
            while seq < total {
                if seq == warmup {
                    stats.first_measured_send_ns = monotonic_ns();
                }
                // Batches never straddle the end of the warm-up, so the measured window
                // starts exactly at the first measured message.
                let end = if seq < warmup { warmup } else { total };
                let n = (end - seq).min(cfg.batch as u64);
                tx.send_batch_with(n as usize, payload, |i, buf| {
                    fill_message(buf, 0, seq + i as u64, &body);
                })?;
                seq += n;
            }
        }
        None => {
            for seq in 0..total {
                if seq == warmup {
                    stats.first_measured_send_ns = monotonic_ns();
                }
                if latency {
                    tx.send_with(payload, |buf| fill_message(buf, monotonic_ns(), seq, &body))?;
                } else {
                    tx.send_with(payload, |buf| fill_message(buf, 0, seq, &body))?;
                }
            }
        }
    }
    Ok(stats)
}

/// Parent side of one run of `T`: create, spawn, write, collect, reap.
pub(crate) fn parent_run<T: Transport>(cfg: &RunConfig) -> Result<RunReport, HarnessError> {
    let dir = RunDir::create(cfg.base_dir.as_deref())?;
    let chan = cfg.channel();
    let mut tx =
        T::create(&dir.0, &chan).map_err(|e| HarnessError::transport(T::NAME, Phase::Create, e))?;
    let mut child = ChildProc::spawn(T::NAME, cfg, &dir.0)?;
    child.wait_ready()?;
    let (writer_pin, written) = match pinned_write(&mut tx, cfg) {
        Ok(w) => w,
        Err(e) => return Err(child.abort(HarnessError::transport(T::NAME, Phase::Connect, e))),
    };
    // Close the writing end: a reader still waiting for data now sees end-of-stream
    // instead of hanging.
    drop(tx);
    let written = match written {
        Ok(w) => w,
        Err(e) => return Err(child.abort(HarnessError::transport(T::NAME, Phase::Send, e))),
    };

    let results = child.finish()?;
    build_report(T::NAME, cfg, &written, writer_pin, &results)
}

fn build_report(
    transport: &str,
    cfg: &RunConfig,
    w: &WriterStats,
    writer_pin: PinOutcome,
    r: &ChildResults,
) -> Result<RunReport, HarnessError> {
    let missing = |what: &str| HarnessError::Protocol {
        detail: format!("child results lack `{what}`"),
        stderr: String::new(),
    };
    let received = r.received.ok_or_else(|| missing("received"))?;
    let seq_errors = r.seq_errors.ok_or_else(|| missing("seq_errors"))?;
    let (_first_recv, last_recv) = r.recv_window.ok_or_else(|| missing("recv_window"))?;
    let measured = received.saturating_sub(cfg.warmup);
    let (latency, histogram) = match cfg.mode {
        Mode::Latency => {
            let h = r.histogram()?;
            (
                Some(LatencyStats::from_histogram(&h, r.exact_min_max)),
                Some(h),
            )
        }
        Mode::Throughput => (None, None),
    };
    // The window runs from the writer's first measured send to the reader's last
    // receive: both on CLOCK_MONOTONIC, so the cross-process difference is meaningful.
    let window_ns = last_recv.saturating_sub(w.first_measured_send_ns);
    let throughput = if window_ns > 0 {
        measured as f64 * 1e9 / window_ns as f64
    } else {
        0.0
    };
    Ok(RunReport {
        transport: transport.to_owned(),
        mode: cfg.mode,
        wait: cfg.wait,
        payload: cfg.payload,
        rate: cfg.effective_rate(),
        sent: cfg.total(),
        received,
        measured,
        seq_errors,
        first_seq_error: r.first_seq_error.clone(),
        latency,
        histogram,
        throughput,
        window_ns,
        max_send_lag_ns: w.max_send_lag_ns,
        writer_pin,
        reader_pin: r.pin.clone().unwrap_or(PinOutcome::NotRequested),
        touch_payload: cfg.touch_payload,
        batch: if cfg.mode == Mode::Throughput {
            cfg.batch
        } else {
            1
        },
    })
}

/// Child side of one run of `T`: open, pin, report ready, read, report results.
pub(crate) fn child_run<T: Transport>(spec: &ChildSpec, dir: &Path) -> Result<(), HarnessError> {
    let chan = spec.channel();
    let mut rx =
        T::open(dir, &chan).map_err(|e| HarnessError::transport(T::NAME, Phase::Open, e))?;
    let pin = try_pin(spec.core);
    let stdout_err = |e| HarnessError::io("writing results to stdout", e);
    emit(&format!("{LINE_PREFIX}{READY}\n")).map_err(stdout_err)?;
    let results = read_loop::<T>(&mut rx, spec, pin)?;
    emit(&results.encode()).map_err(stdout_err)
}

/// The reader's measurement loop, shared by the child process and the reader thread of
/// [`thread_run`]: receive `spec.total()` messages, check sequence numbers, record
/// latencies. Chooses the monomorphized loop once, so the default (header-only) loop
/// carries no per-message test for [`RunConfig::touch_payload`].
fn read_loop<T: Transport>(
    rx: &mut T::Rx,
    spec: &ChildSpec,
    pin: PinOutcome,
) -> Result<ChildResults, HarnessError> {
    if spec.touch_payload {
        read_messages::<T, true>(rx, spec, pin)
    } else {
        read_messages::<T, false>(rx, spec, pin)
    }
}

/// [`read_loop`] for one setting of `TOUCH` ([`RunConfig::touch_payload`]).
fn read_messages<T: Transport, const TOUCH: bool>(
    rx: &mut T::Rx,
    spec: &ChildSpec,
    pin: PinOutcome,
) -> Result<ChildResults, HarnessError> {
    let total = spec.total();
    let warmup = spec.warmup;
    let latency = spec.mode == Mode::Latency;
    let mut hist = new_histogram()?;
    let mut received: u64 = 0;
    let mut expected: u64 = 0;
    let mut seq_errors: u64 = 0;
    let mut first_seq_error = None;
    let mut first_recv = 0;
    let mut last_recv = 0;
    let mut min = u64::MAX;
    let mut max = 0;

    while received < total {
        let (msg, now) = rx
            .recv_with(spec.wait, |buf| {
                if TOUCH {
                    // Read the whole message, as a consumer would, before the receive
                    // timestamp: the sample then runs to "reader has read every byte".
                    std::hint::black_box(fold_payload(buf));
                }
                // Receive timestamp as soon as the message is visible to the reader (and,
                // with TOUCH, read by it).
                let now = if latency { monotonic_ns() } else { 0 };
                (parse_message(buf), now)
            })
            .map_err(|e| HarnessError::transport(T::NAME, Phase::Recv, e))?;
        received += 1;
        let Some((stamp, seq)) = msg else {
            seq_errors += 1;
            first_seq_error.get_or_insert_with(|| {
                format!("message #{received} shorter than the 16-byte header")
            });
            continue;
        };
        if seq != expected {
            seq_errors += 1;
            first_seq_error.get_or_insert_with(|| {
                format!("expected seq {expected}, got {seq} (message #{received})")
            });
        }
        expected = seq.wrapping_add(1);
        if received > warmup {
            if latency {
                let lat = now.saturating_sub(stamp);
                hist.saturating_record(lat);
                min = min.min(lat);
                max = max.max(lat);
                if received == warmup + 1 {
                    first_recv = now;
                }
                last_recv = now;
            } else if received == warmup + 1 {
                first_recv = monotonic_ns();
            }
        }
        // The last sequence number ends the run even if something was lost on the
        // way, so a lossy transport shows up as an error instead of a hang.
        if seq >= total - 1 {
            break;
        }
    }
    if !latency {
        last_recv = monotonic_ns();
    }
    Ok(ChildResults {
        pin: Some(pin),
        received: Some(received),
        seq_errors: Some(seq_errors),
        first_seq_error,
        recv_window: Some((first_recv, last_recv)),
        exact_min_max: (latency && min != u64::MAX).then_some((min, max)),
        buckets: hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
            .collect(),
        done: true,
    })
}

/// One run of `T` with the reader on a second thread of this process instead of a child
/// process: the same writer loop, reader loop, pinning and report as [`parent_run`], for
/// channels that only exist inside one process (an in-process channel as a reference
/// point) or to compare a transport's cross-thread and cross-process cost.
///
/// The reader thread opens its end, pins itself to the reader core and signals ready;
/// the calling thread then connects and writes as in [`parent_run`]. There is no process
/// to kill, so a reader that outlives the deadline is reported as
/// [`HarnessError::Timeout`] and left running detached.
pub(crate) fn thread_run<T: Transport>(cfg: &RunConfig) -> Result<RunReport, HarnessError> {
    let dir = RunDir::create(cfg.base_dir.as_deref())?;
    let chan = cfg.channel();
    let mut tx =
        T::create(&dir.0, &chan).map_err(|e| HarnessError::transport(T::NAME, Phase::Create, e))?;
    let spec = ChildSpec::from_run(T::NAME, cfg);
    let reader_dir = dir.0.clone();
    // The reader drops `ready_tx` without sending if `open` fails.
    let (ready_tx, ready_rx) = mpsc::sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name("harness-reader".into())
        .spawn(move || -> Result<ChildResults, HarnessError> {
            let mut rx = T::open(&reader_dir, &spec.channel())
                .map_err(|e| HarnessError::transport(T::NAME, Phase::Open, e))?;
            let pin = try_pin(spec.core);
            let _ = ready_tx.send(());
            read_loop::<T>(&mut rx, &spec, pin)
        })
        .map_err(|e| HarnessError::io("starting the reader thread", e))?;
    let reader = ReaderThread {
        handle,
        transport: T::NAME,
        deadline: Instant::now() + cfg.deadline(),
        budget: cfg.deadline(),
    };
    if ready_rx.recv().is_err() {
        return Err(
            match reader.join("the reader thread to open the transport") {
                Err(e) => e,
                Ok(_) => HarnessError::Protocol {
                    detail: "the reader thread ended without reporting ready".to_owned(),
                    stderr: String::new(),
                },
            },
        );
    }
    // On the error paths below, dropping `tx` ends the stream, so a reader still waiting
    // sees end-of-stream and its thread finishes on its own.
    let (writer_pin, written) = pinned_write(&mut tx, cfg)
        .map_err(|e| HarnessError::transport(T::NAME, Phase::Connect, e))?;
    drop(tx);
    let written = written.map_err(|e| HarnessError::transport(T::NAME, Phase::Send, e))?;
    let results = reader.join("the reader thread's results")?;
    build_report(T::NAME, cfg, &written, writer_pin, &results)
}

/// The reader thread of a [`thread_run`], joined with the run's deadline.
struct ReaderThread {
    handle: JoinHandle<Result<ChildResults, HarnessError>>,
    transport: &'static str,
    deadline: Instant,
    budget: Duration,
}

impl ReaderThread {
    fn join(self, waiting_for: &'static str) -> Result<ChildResults, HarnessError> {
        while !self.handle.is_finished() {
            if Instant::now() >= self.deadline {
                // A thread cannot be killed: leave it detached and report the timeout.
                return Err(HarnessError::Timeout {
                    transport: self.transport.to_owned(),
                    waiting_for,
                    after: self.budget,
                    stderr: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.handle.join().unwrap_or_else(|_| {
            Err(HarnessError::Child {
                transport: self.transport.to_owned(),
                detail: "the reader thread panicked".to_owned(),
                stderr: String::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_header_round_trips() {
        let body = vec![7u8; 48];
        let mut buf = vec![0u8; 64];
        fill_message(&mut buf, 123, 456, &body);
        assert_eq!(parse_message(&buf), Some((123, 456)));
        assert_eq!(&buf[16..], &body[..]);
        assert_eq!(parse_message(&buf[..15]), None);
    }

    #[test]
    fn fold_reads_every_byte() {
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 1024, 1031] {
            let buf: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let base = fold_payload(&buf);
            for i in 0..len {
                for delta in [0x01, 0x80, 0xff] {
                    let mut changed = buf.clone();
                    changed[i] ^= delta;
                    assert_ne!(
                        fold_payload(&changed),
                        base,
                        "len {len}: byte {i} ^ {delta:#x} left the fold unchanged"
                    );
                }
            }
        }
        assert_eq!(fold_payload(&[]), 0);
        // The trailing partial word counts as zero-padded.
        assert_eq!(
            fold_payload(&[1, 2, 3]),
            u64::from_ne_bytes([1, 2, 3, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn run_dir_is_removed() {
        let base = tempfile::tempdir().unwrap();
        let path = {
            let d = RunDir::create(Some(base.path())).unwrap();
            std::fs::write(d.0.join("x"), b"y").unwrap();
            d.0.clone()
        };
        assert!(!path.exists());
    }
}
