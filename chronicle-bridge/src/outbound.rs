//! `chron-bridge out`: tails a local queue with a named reader and publishes every record to
//! JetStream.
//!
//! Two readers share the work. A reader thread (anonymous, CRC-checking) reads ahead and hands
//! owned copies of the records to the publisher over a bounded channel. The named reader is the
//! *cursor*: it moves only over records JetStream has acknowledged, and its position is
//! committed after each acknowledgement, so a restart resumes at the first record not known to
//! be stored. Publishes are pipelined: up to `window` records are in flight; acknowledgements
//! are consumed in publish order. When one fails or times out, every record still in flight is
//! published again, in order, after a backoff (JetStream drops the ones it already stored by
//! their `Nats-Msg-Id`).

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use chronicle_core::{QueueReader, ReaderConfig, StartAt, WaitOutcome};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;

use crate::connect::{self, NatsConfig, StreamSpec};
use crate::error::{BridgeError, Result};
use crate::headers;
use crate::stats::{self, Counters, Reporter};

/// Settings of an out-bridge.
#[derive(Debug, Clone)]
pub struct OutConfig {
    /// The local queue to publish.
    pub queue: PathBuf,
    /// Name of the durable reader that holds the committed position.
    pub reader: String,
    /// Where the reader starts the first time (no persisted position yet).
    pub start: StartAt,
    /// JetStream stream name.
    pub stream: String,
    /// Subject records are published to.
    pub subject: String,
    /// This host's id (headers and message ids).
    pub host: String,
    /// The queue's name on the wire (headers and message ids).
    pub source_name: String,
    /// Largest number of unacknowledged publishes.
    pub window: usize,
    /// Create the stream when it does not exist.
    pub create: Option<StreamSpec>,
    /// Interval of the stats line (None: no stats).
    pub stats_interval: Option<Duration>,
    /// Stats as JSON lines.
    pub stats_json: bool,
    /// Serve the counters to Prometheus at `GET /metrics` on this address (None: no endpoint).
    pub metrics_listen: Option<String>,
    /// Exit once the queue's writer is gone (closed or dead) and every record is acknowledged.
    pub exit_at_end: bool,
}

/// A record on its way to JetStream.
#[derive(Debug, Clone)]
struct Rec {
    seq: u64,
    timestamp_ns: u64,
    type_id: u32,
    payload: Bytes,
}

#[derive(Debug)]
enum FromReader {
    Rec(Rec),
    End,
    Failed(BridgeError),
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// Runs an out-bridge until `shutdown` completes (then drains in-flight acknowledgements for a
/// few seconds and commits) or, with `exit_at_end`, until the queue is exhausted.
pub async fn run(
    cfg: OutConfig,
    nats: NatsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if cfg.window == 0 {
        return Err(BridgeError::InvalidConfig {
            what: "--window must be at least 1".to_string(),
        });
    }
    let counters = Arc::new(Counters::default());
    stats::serve_metrics(cfg.metrics_listen.as_deref(), "out", &cfg.queue, &counters)?;
    // Local mistakes first (URLs, TLS files, credentials, then the queue), the network last.
    let dialer = connect::prepare(&nats, counters.clone())?;
    let cursor_cfg = ReaderConfig {
        verify_crc: false,
        ..ReaderConfig::named(cfg.reader.clone()).start(cfg.start)
    };
    let mut cursor = QueueReader::open(&cfg.queue, cursor_cfg)
        .map_err(|e| BridgeError::queue(&cfg.queue, "open reader on", e))?;
    let (client, mut fatal) = dialer.dial().await?;
    let js = connect::jetstream(client.clone(), &nats);
    connect::ensure_stream(&js, &cfg.stream, cfg.create.as_ref()).await?;
    let resume = cursor.next_seq();
    tracing::info!(
        queue = %cfg.queue.display(),
        stream = %cfg.stream,
        subject = %cfg.subject,
        from_seq = resume,
        reader = %cfg.reader,
        "out-bridge started: {} -> stream {} subject {} from seq {resume} (reader {})",
        cfg.queue.display(),
        cfg.stream,
        cfg.subject,
        cfg.reader
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<FromReader>(cfg.window.saturating_mul(2).max(64));
    let reader_thread = {
        let queue = cfg.queue.clone();
        let stop = stop.clone();
        let exit_at_end = cfg.exit_at_end;
        std::thread::Builder::new()
            .name("bridge-reader".to_string())
            .spawn(move || read_ahead(queue, resume, exit_at_end, stop, tx))
            .map_err(|e| BridgeError::InvalidConfig {
                what: format!("cannot start the reader thread: {e}"),
            })?
    };

    let mut pending: VecDeque<Rec> = VecDeque::with_capacity(cfg.window);
    let mut acks: FuturesOrdered<AckFuture> = FuturesOrdered::new();
    let mut reporter = Reporter::new("out", cfg.stats_json);
    let mut ticker = tokio::time::interval(cfg.stats_interval.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    // The cursor's heartbeat keeps it counted by retention while nothing is acknowledged
    // (server away): the source queue keeps the records not yet stored remotely.
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    let mut failures: usize = 0;
    let mut at_end = false;
    let mut result = Ok(());
    tokio::pin!(shutdown);
    counters.position.store(resume, Ordering::Relaxed);

    loop {
        if at_end && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            e = fatal.wait() => {
                result = Err(e);
                break;
            }
            Some(res) = acks.next(), if !acks.is_empty() => match res {
                Ok(ack) => {
                    failures = 0;
                    let Some(rec) = pending.pop_front() else { continue };
                    if ack.duplicate {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(e) = advance(&mut cursor, rec.seq, &cfg.queue) {
                        result = Err(e);
                        break;
                    }
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    counters.position.store(rec.seq + 1, Ordering::Relaxed);
                    counters.in_flight.store(pending.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    let delay = connect::backoff(failures, nats.max_reconnect_delay);
                    let first = pending.front().map_or(0, |r| r.seq);
                    tracing::warn!(
                        seq = first, error = %describe(&e), resend = pending.len(),
                        delay_ms = delay.as_millis() as u64,
                        "publish not acknowledged; re-sending the pending records"
                    );
                    // Forget the outstanding futures: every record still pending goes again.
                    acks = FuturesOrdered::new();
                    tokio::time::sleep(delay).await;
                    for rec in &pending {
                        acks.push_back(publish(&js, &cfg, rec).await);
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        counters.resent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            msg = rx.recv(), if pending.len() < cfg.window && !at_end => match msg {
                Some(FromReader::Rec(rec)) => {
                    acks.push_back(publish(&js, &cfg, &rec).await);
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    pending.push_back(rec);
                    counters.in_flight.store(pending.len() as u64, Ordering::Relaxed);
                }
                Some(FromReader::End) | None => at_end = true,
                Some(FromReader::Failed(e)) => {
                    result = Err(e);
                    break;
                }
            },
            _ = heartbeat.tick() => {
                cursor.heartbeat();
                // Kept current for the metrics endpoint (a scrape reads the atomics).
                let tail = cursor.tail().next_seq;
                counters.lag.store(tail.saturating_sub(cursor.next_seq()), Ordering::Relaxed);
            }
            _ = ticker.tick(), if cfg.stats_interval.is_some() => {
                let tail = cursor.tail().next_seq;
                counters.lag.store(tail.saturating_sub(cursor.next_seq()), Ordering::Relaxed);
                let snap = reporter.snapshot(&counters);
                reporter.report(&snap);
            }
        }
    }

    // Stop reading; let acknowledgements already on their way land (bounded), then commit.
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    if result.is_ok() && !pending.is_empty() {
        let drain = async {
            while let Some(Ok(_)) = acks.next().await {
                if let Some(rec) = pending.pop_front() {
                    advance(&mut cursor, rec.seq, &cfg.queue)?;
                }
            }
            Ok::<(), BridgeError>(())
        };
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(5), drain).await {
            result = r;
        }
    }
    let _ = cursor.commit();
    if reader_thread.join().is_err() {
        tracing::error!("the out-bridge's reader thread panicked");
    }
    if cfg.stats_interval.is_some() {
        counters.lag.store(
            cursor.tail().next_seq.saturating_sub(cursor.next_seq()),
            Ordering::Relaxed,
        );
        let snap = reporter.snapshot(&counters);
        reporter.report(&snap);
    }
    // Bounded: while the client is reconnecting a flush waits for the connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    result
}

fn describe(e: &PublishError) -> String {
    match e.kind() {
        PublishErrorKind::TimedOut => "timed out".to_string(),
        PublishErrorKind::StreamNotFound => {
            "no stream captures the subject, or it has no leader".to_string()
        }
        _ => e.to_string(),
    }
}

async fn publish(js: &async_nats::jetstream::Context, cfg: &OutConfig, rec: &Rec) -> AckFuture {
    let h = headers::encode(
        &cfg.host,
        &cfg.source_name,
        rec.seq,
        rec.timestamp_ns,
        rec.type_id,
    );
    match js
        .publish_with_headers(cfg.subject.clone(), h, rec.payload.clone())
        .await
    {
        Ok(ack) => ack.into_future(),
        Err(e) => Box::pin(async move { Err(e) }),
    }
}

/// Moves the cursor over the record `seq` (acknowledged) and commits its position.
fn advance(cursor: &mut QueueReader, seq: u64, queue: &std::path::Path) -> Result<()> {
    let mut misses = 0u32;
    while cursor.next_seq() <= seq {
        match cursor.next() {
            Ok(Some(_)) => {}
            Ok(None) => {
                // A segment change is taken by the next call; a record that vanished is not.
                misses += 1;
                if misses > 1000 {
                    return Err(BridgeError::StateMismatch {
                        path: queue.to_path_buf(),
                        what: format!("record {seq} was published but the cursor cannot reach it"),
                    });
                }
            }
            Err(e) => return Err(BridgeError::queue(queue, "advance reader on", e)),
        }
    }
    cursor
        .commit()
        .map_err(|e| BridgeError::queue(queue, "commit reader on", e))
}

/// The reader thread: reads from `from` on and sends owned records until stopped.
fn read_ahead(
    queue: PathBuf,
    from: u64,
    exit_at_end: bool,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<FromReader>,
) {
    // Short spin: the bridge is bound by the network, and a long spin takes the CPU the
    // NATS client and server need on a small machine.
    let cfg = ReaderConfig {
        spin_limit: 64,
        yield_limit: 4,
        ..ReaderConfig::default().start(StartAt::Seq(from))
    };
    let mut reader = match QueueReader::open(&queue, cfg) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(FromReader::Failed(BridgeError::queue(
                &queue,
                "open reader on",
                e,
            )));
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let rec = match reader.next() {
            Ok(Some(m)) => Rec {
                seq: m.seq(),
                timestamp_ns: m.timestamp_ns(),
                type_id: m.type_id(),
                payload: Bytes::copy_from_slice(m.payload()),
            },
            Ok(None) => match reader.wait(Duration::from_millis(100)) {
                Ok(WaitOutcome::WriterGone(_)) if exit_at_end => {
                    if !reader.has_next() {
                        let _ = tx.blocking_send(FromReader::End);
                        return;
                    }
                    continue;
                }
                Ok(WaitOutcome::WriterGone(_)) => {
                    // No writer now: poll slowly until one comes back.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.blocking_send(FromReader::Failed(BridgeError::queue(
                        &queue, "wait on", e,
                    )));
                    return;
                }
            },
            Err(e) => {
                let _ = tx.blocking_send(FromReader::Failed(BridgeError::queue(&queue, "read", e)));
                return;
            }
        };
        if tx.blocking_send(FromReader::Rec(rec)).is_err() {
            return;
        }
    }
}
