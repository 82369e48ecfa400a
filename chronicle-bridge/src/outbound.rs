//! `chron-bridge out`: tails a local queue with a named reader and publishes its records to
//! JetStream, several per message by default.
//!
//! Two readers share the work. A reader thread (anonymous, CRC-checking) reads ahead and hands
//! owned copies of the records, in chunks, to the publisher over a bounded channel. The
//! publisher packs them into batches (a [`crate::envelope`] of up to `batch` records and about
//! `batch_bytes` bytes; with `batch` = 1, one record per message with its fields in
//! [`headers`]). A batch is sealed when it is full, when nothing more is ready to read and
//! nothing is in flight (an idle pipeline adds no wait), or when its first record has waited
//! `linger`. The named reader is the *cursor*: it moves only over records JetStream has
//! acknowledged, and its position is committed after each acknowledgement, so a restart resumes
//! at the first record not known to be stored. Publishes are pipelined: up to `window` messages
//! are in flight; acknowledgements are consumed in publish order as they come. When one fails
//! or times out, every message still in flight is published again, unchanged, in order, after
//! a backoff (JetStream drops the ones it already stored by their `Nats-Msg-Id`, which names the
//! source range). A full window stops the publisher from taking more records: a slow
//! destination slows the bridge, it never drops.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use chronicle_core::{QueueReader, ReaderConfig, StartAt, WaitOutcome};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;

use crate::connect::{self, NatsConfig, StreamSpec};
use crate::envelope::{self, Encoder};
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
    /// Largest number of unacknowledged messages.
    pub window: usize,
    /// Largest number of records per message (1: one record per message, its fields in
    /// headers, readable by any NATS client).
    pub batch: usize,
    /// Largest size of a batch envelope in bytes (a larger record travels alone).
    pub batch_bytes: usize,
    /// Longest wait of a batch's first record for more records while messages are in flight
    /// (an idle pipeline sends at once).
    pub linger: Duration,
    /// LZ4-compress batch envelopes (when that makes them smaller; not for `batch` = 1).
    pub compress: bool,
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
    Recs(Vec<Rec>),
    End,
    Failed(BridgeError),
}

/// One JetStream message: a batch envelope, or one record (batch 1).
#[derive(Debug)]
struct Batch {
    first: u64,
    last: u64,
    count: u64,
    first_timestamp_ns: u64,
    headers: HeaderMap,
    body: Bytes,
}

/// The batch being filled.
struct Builder {
    enc: Encoder,
    since: Instant,
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// Default largest number of records per message.
pub const DEFAULT_BATCH: usize = 256;
/// Default largest size of a batch envelope, in bytes (the server's `max_payload` is 1 MiB by
/// default; a single record larger than this travels alone).
pub const DEFAULT_BATCH_BYTES: usize = 128 << 10;
/// Default longest wait of a batch's first record for more records while others are in flight,
/// in microseconds.
pub const DEFAULT_LINGER_US: u64 = 1000;
/// [`DEFAULT_LINGER_US`] as a duration.
pub const DEFAULT_LINGER: Duration = Duration::from_micros(DEFAULT_LINGER_US);
/// Records the reader thread hands over at most per chunk.
const CHUNK: usize = 512;
/// Payload bytes the reader thread hands over at most per chunk (a larger record goes alone).
const CHUNK_BYTES: usize = 256 << 10;

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
    if cfg.batch == 0 || cfg.batch_bytes == 0 {
        return Err(BridgeError::InvalidConfig {
            what: "--batch and --batch-bytes must be at least 1".to_string(),
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
        batch = cfg.batch,
        "out-bridge started: {} -> stream {} subject {} from seq {resume} (reader {}, {})",
        cfg.queue.display(),
        cfg.stream,
        cfg.subject,
        cfg.reader,
        if cfg.batch == 1 {
            "one record per message".to_string()
        } else {
            format!(
                "batches of up to {} records / {} bytes, linger {} us{}",
                cfg.batch,
                cfg.batch_bytes,
                cfg.linger.as_micros(),
                if cfg.compress { ", lz4" } else { "" }
            )
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    // In chunks of up to CHUNK records: a few chunks read ahead cover the window.
    let chunks = (cfg.window.saturating_mul(cfg.batch) / CHUNK).clamp(4, 256);
    let (tx, mut rx) = mpsc::channel::<FromReader>(chunks);
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

    // Sealed batches not yet published (the window is full), and those in flight.
    let mut ready: VecDeque<Batch> = VecDeque::new();
    let mut pending: VecDeque<Batch> = VecDeque::with_capacity(cfg.window);
    let mut building: Option<Builder> = None;
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
        // Seal what is being built when waiting would gain nothing: the reader has nothing
        // more right now and nothing is in flight (or the queue ended).
        if building.is_some() && rx.is_empty() && (pending.is_empty() || at_end) {
            if let Some(b) = building.take() {
                ready.push_back(seal(&cfg, b.enc));
            }
        }
        while pending.len() < cfg.window {
            let Some(batch) = ready.pop_front() else {
                break;
            };
            acks.push_back(publish(&js, &cfg, &batch).await);
            counters.sent.fetch_add(1, Ordering::Relaxed);
            pending.push_back(batch);
            // A crash here leaves messages published and not acknowledged (crash-point tests).
            chronicle_core::testing::crash::point("bridge.out.published");
        }
        counters
            .in_flight
            .store(pending.len() as u64, Ordering::Relaxed);
        if at_end && pending.is_empty() && ready.is_empty() && building.is_none() {
            break;
        }
        let linger_at = building
            .as_ref()
            .map(|b| tokio::time::Instant::from_std(b.since + cfg.linger));
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
                    let Some(batch) = pending.pop_front() else { continue };
                    if ack.duplicate {
                        counters.duplicates.fetch_add(batch.count, Ordering::Relaxed);
                    }
                    if let Err(e) = advance(&mut cursor, batch.last, &cfg.queue) {
                        result = Err(e);
                        break;
                    }
                    counters.done.fetch_add(batch.count, Ordering::Relaxed);
                    counters.position.store(batch.last + 1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    let delay = connect::backoff(failures, nats.max_reconnect_delay);
                    let first = pending.front().map_or(0, |b| b.first);
                    tracing::warn!(
                        seq = first, error = %describe(&e), resend = pending.len(),
                        delay_ms = delay.as_millis() as u64,
                        "publish not acknowledged; re-sending the pending messages"
                    );
                    // Forget the outstanding futures: every message still pending goes again,
                    // unchanged (same body, same message id).
                    acks = FuturesOrdered::new();
                    tokio::time::sleep(delay).await;
                    for batch in &pending {
                        acks.push_back(publish(&js, &cfg, batch).await);
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        counters.resent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            // Only while nothing sealed waits for room in the window: a full window stops the
            // reading (the reader thread then blocks on the full channel).
            msg = rx.recv(), if ready.is_empty() && !at_end => match msg {
                Some(FromReader::Recs(recs)) => {
                    for rec in recs {
                        add(&cfg, &mut building, &mut ready, rec);
                    }
                }
                Some(FromReader::End) | None => at_end = true,
                Some(FromReader::Failed(e)) => {
                    result = Err(e);
                    break;
                }
            },
            () = sleep_until(linger_at), if linger_at.is_some() => {
                if let Some(b) = building.take() {
                    ready.push_back(seal(&cfg, b.enc));
                }
            }
            _ = heartbeat.tick() => {
                cursor.heartbeat();
                // Kept current for the metrics endpoint (a scrape reads the atomics).
                update_lag(&counters, &cursor, &pending, &ready, building.as_ref());
            }
            _ = ticker.tick(), if cfg.stats_interval.is_some() => {
                update_lag(&counters, &cursor, &pending, &ready, building.as_ref());
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
                if let Some(batch) = pending.pop_front() {
                    advance(&mut cursor, batch.last, &cfg.queue)?;
                    counters.done.fetch_add(batch.count, Ordering::Relaxed);
                    counters.position.store(batch.last + 1, Ordering::Relaxed);
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
        update_lag(&counters, &cursor, &pending, &ready, building.as_ref());
        let snap = reporter.snapshot(&counters);
        reporter.report(&snap);
    }
    // Bounded: while the client is reconnecting a flush waits for the connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    result
}

/// Sleeps until `at`, or for ever without one (the branch is disabled then anyway).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Lag in records (queue tail minus acknowledged position) and the timestamp of the oldest
/// record not acknowledged yet (for the lag in seconds).
fn update_lag(
    counters: &Counters,
    cursor: &QueueReader,
    pending: &VecDeque<Batch>,
    ready: &VecDeque<Batch>,
    building: Option<&Builder>,
) {
    let tail = cursor.tail().next_seq;
    let lag = tail.saturating_sub(cursor.next_seq());
    counters.lag.store(lag, Ordering::Relaxed);
    let oldest = if lag == 0 {
        0
    } else {
        pending
            .front()
            .or(ready.front())
            .map(|b| b.first_timestamp_ns)
            .or(building.map(|b| b.enc.first_timestamp_ns()))
            .unwrap_or(0)
    };
    counters.lag_since_ns.store(oldest, Ordering::Relaxed);
}

/// Adds a record to the batch being built, sealing it into `ready` when full.
fn add(cfg: &OutConfig, building: &mut Option<Builder>, ready: &mut VecDeque<Batch>, rec: Rec) {
    if cfg.batch == 1 {
        ready.push_back(Batch {
            first: rec.seq,
            last: rec.seq,
            count: 1,
            first_timestamp_ns: rec.timestamp_ns,
            headers: headers::encode(
                &cfg.host,
                &cfg.source_name,
                rec.seq,
                rec.timestamp_ns,
                rec.type_id,
            ),
            body: rec.payload,
        });
        return;
    }
    let record_len = envelope::RECORD_HEADER_LEN + rec.payload.len();
    // A record that would overflow the byte budget starts a new batch (alone if it is large).
    if building
        .as_ref()
        .is_some_and(|b| b.enc.len() + record_len > cfg.batch_bytes)
    {
        if let Some(b) = building.take() {
            ready.push_back(seal(cfg, b.enc));
        }
    }
    let b = building.get_or_insert_with(|| Builder {
        enc: Encoder::new(
            (envelope::HEADER_LEN + record_len * cfg.batch).min(cfg.batch_bytes.max(record_len)),
        ),
        since: Instant::now(),
    });
    if !b
        .enc
        .push(rec.seq, rec.timestamp_ns, rec.type_id, &rec.payload)
    {
        // Not above the previous seq (the reader never does this): start a new batch with it.
        if let Some(b) = building.take() {
            ready.push_back(seal(cfg, b.enc));
        }
        let mut enc = Encoder::new(envelope::HEADER_LEN + record_len);
        enc.push(rec.seq, rec.timestamp_ns, rec.type_id, &rec.payload);
        *building = Some(Builder {
            enc,
            since: Instant::now(),
        });
    }
    if building
        .as_ref()
        .is_some_and(|b| b.enc.count() as usize >= cfg.batch || b.enc.len() >= cfg.batch_bytes)
    {
        if let Some(b) = building.take() {
            ready.push_back(seal(cfg, b.enc));
        }
    }
}

fn seal(cfg: &OutConfig, enc: Encoder) -> Batch {
    let (first, last) = enc.range();
    Batch {
        first,
        last,
        count: u64::from(enc.count()),
        first_timestamp_ns: enc.first_timestamp_ns(),
        headers: headers::encode_batch(&cfg.host, &cfg.source_name, first, last),
        body: if cfg.compress {
            enc.finish_lz4()
        } else {
            enc.finish()
        },
    }
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

async fn publish(js: &async_nats::jetstream::Context, cfg: &OutConfig, batch: &Batch) -> AckFuture {
    match js
        .publish_with_headers(
            cfg.subject.clone(),
            batch.headers.clone(),
            batch.body.clone(),
        )
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
    // Records read but not sent yet: their fields, and their payloads in one buffer (one
    // allocation per chunk, not per record).
    let mut metas: Vec<(u64, u64, u32, usize, usize)> = Vec::with_capacity(CHUNK);
    let mut data = bytes::BytesMut::with_capacity(CHUNK * 128);
    let send = |metas: &mut Vec<(u64, u64, u32, usize, usize)>, data: &mut bytes::BytesMut| {
        let bytes = data.split().freeze();
        let recs = metas
            .drain(..)
            .map(|(seq, timestamp_ns, type_id, at, len)| Rec {
                seq,
                timestamp_ns,
                type_id,
                payload: bytes.slice(at..at + len),
            })
            .collect();
        tx.blocking_send(FromReader::Recs(recs)).is_ok()
    };
    while !stop.load(Ordering::Relaxed) {
        match reader.next() {
            Ok(Some(m)) => {
                let at = data.len();
                data.extend_from_slice(m.payload());
                metas.push((
                    m.seq(),
                    m.timestamp_ns(),
                    m.type_id(),
                    at,
                    m.payload().len(),
                ));
                if (metas.len() >= CHUNK || data.len() >= CHUNK_BYTES)
                    && !send(&mut metas, &mut data)
                {
                    return;
                }
                continue;
            }
            Ok(None) if !metas.is_empty() => {
                // Nothing more right now: hand over what was read before waiting.
                if !send(&mut metas, &mut data) {
                    return;
                }
                continue;
            }
            Ok(None) => match reader.wait(Duration::from_millis(100)) {
                Ok(WaitOutcome::WriterGone(_)) if exit_at_end => {
                    if !reader.has_next() {
                        let _ = tx.blocking_send(FromReader::End);
                        return;
                    }
                }
                Ok(WaitOutcome::WriterGone(_)) => {
                    // No writer now: poll slowly until one comes back.
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.blocking_send(FromReader::Failed(BridgeError::queue(
                        &queue, "wait on", e,
                    )));
                    return;
                }
            },
            Err(e) => {
                // Records read before the failure go first, in order.
                if !metas.is_empty() && !send(&mut metas, &mut data) {
                    return;
                }
                let _ = tx.blocking_send(FromReader::Failed(BridgeError::queue(&queue, "read", e)));
                return;
            }
        }
    }
}
