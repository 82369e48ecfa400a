//! `chron-bridge in`: a durable JetStream pull consumer that appends records into a local queue.
//!
//! Messages arrive in batches. Each message is classified by its source (`<host>/<queue>`) and
//! source sequence number against the [`ImportState`] table:
//!
//! - the next expected record (or the first ever seen from that source): appended;
//! - an earlier record: already imported (a redelivery or a re-send outside the de-dup window):
//!   acknowledged and skipped;
//! - a later record: held back, unacknowledged, until the records before it arrive (a publish
//!   lost in a failover and re-sent after later ones were stored puts them out of order in the
//!   stream), then appended in source order.
//!
//! For each batch the state file first records the intent (see [`crate::state`]), then the
//! records are appended with their original type id and timestamp, then the messages are
//! acknowledged. A message is acknowledged only after it is in the local queue.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use chronicle_core::{QueueWriter, WriterConfig};
use futures_util::StreamExt;

use crate::connect::{self, NatsConfig, StreamSpec};
use crate::error::{BridgeError, Result};
use crate::headers::{self, RecordMeta};
use crate::state::{ImportState, runs_of};
use crate::stats::{self, Counters, Reporter};

/// Settings of an in-bridge.
#[derive(Debug, Clone)]
pub struct InConfig {
    /// JetStream stream name.
    pub stream: String,
    /// Durable consumer name.
    pub consumer: String,
    /// Only messages on this subject (None: the whole stream).
    pub filter_subject: Option<String>,
    /// The local queue records are appended to (created if missing).
    pub queue: PathBuf,
    /// Geometry and policies used when opening the queue's writer.
    pub writer: WriterConfig,
    /// The import state file.
    pub state: PathBuf,
    /// Largest number of messages handled as one batch (one state write).
    pub batch: usize,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Largest number of unacknowledged messages the consumer hands out.
    pub max_ack_pending: i64,
    /// Create the stream when it does not exist.
    pub create: Option<StreamSpec>,
    /// How long records held back behind a missing one wait before the missing ones are
    /// declared lost and skipped (None: wait for ever; nothing is ever skipped).
    pub gap_timeout: Option<Duration>,
    /// Interval of the stats line (None: no stats).
    pub stats_interval: Option<Duration>,
    /// Stats as JSON lines.
    pub stats_json: bool,
    /// Serve the counters to Prometheus at `GET /metrics` on this address (None: no endpoint).
    pub metrics_listen: Option<String>,
}

impl InConfig {
    /// The default state file of a queue: `<queue>.bridge-in.state`, next to the queue directory.
    pub fn default_state_path(queue: &std::path::Path) -> PathBuf {
        let mut p = queue.as_os_str().to_owned();
        p.push(".bridge-in.state");
        PathBuf::from(p)
    }
}

struct Held {
    meta: RecordMeta,
    msg: jetstream::Message,
}

/// The import loop's memory: the state table, records held back, and the local writer.
struct Importer {
    state: ImportState,
    held: HashMap<String, BTreeMap<u64, Held>>,
    /// Per source with held records: since when it has been waiting for the missing one.
    gap_since: HashMap<String, Instant>,
    gap_timeout: Option<Duration>,
    writer: QueueWriter,
    queue: PathBuf,
    counters: Arc<Counters>,
}

/// Runs an in-bridge until `shutdown` completes.
pub async fn run(
    cfg: InConfig,
    nats: NatsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if cfg.batch == 0 {
        return Err(BridgeError::InvalidConfig {
            what: "--batch must be at least 1".to_string(),
        });
    }
    let counters = Arc::new(Counters::default());
    stats::serve_metrics(cfg.metrics_listen.as_deref(), "in", &cfg.queue, &counters)?;
    // Local mistakes first (URLs, TLS files, credentials, then the queue), the network last.
    let dialer = connect::prepare(&nats, counters.clone())?;
    let writer = QueueWriter::open(&cfg.queue, cfg.writer.clone())
        .map_err(|e| BridgeError::queue(&cfg.queue, "open writer on", e))?;
    let (client, mut fatal) = dialer.dial().await?;
    let js = connect::jetstream(client.clone(), &nats);
    let stream = connect::ensure_stream(&js, &cfg.stream, cfg.create.as_ref()).await?;
    let (state, rec) = ImportState::load(&cfg.state, writer.next_seq())?;
    if rec.applied + rec.dropped + rec.foreign > 0 {
        tracing::warn!(
            applied = rec.applied,
            dropped = rec.dropped,
            foreign = rec.foreign,
            "state recovered: {} records of the last batch are in the queue, {} were not appended (they will be redelivered){}",
            rec.applied,
            rec.dropped,
            if rec.foreign > 0 {
                format!(
                    "; {} records after them were not written by this bridge",
                    rec.foreign
                )
            } else {
                String::new()
            }
        );
    }
    for (src, next) in state.sources() {
        tracing::info!(source = %src, next_seq = next, "source {src}: next expected seq {next}");
    }
    tracing::info!(
        stream = %cfg.stream,
        consumer = %cfg.consumer,
        queue = %cfg.queue.display(),
        state = %cfg.state.display(),
        "in-bridge started: stream {} consumer {} -> {} (state {})",
        cfg.stream,
        cfg.consumer,
        cfg.queue.display(),
        cfg.state.display()
    );
    let mut imp = Importer {
        state,
        held: HashMap::new(),
        gap_since: HashMap::new(),
        gap_timeout: cfg.gap_timeout,
        writer,
        queue: cfg.queue.clone(),
        counters: counters.clone(),
    };

    let consumer_cfg = pull::Config {
        durable_name: Some(cfg.consumer.clone()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: cfg.ack_wait,
        max_ack_pending: cfg.max_ack_pending,
        filter_subject: cfg.filter_subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut reporter = Reporter::new("in", cfg.stats_json);
    let mut ticker = tokio::time::interval(cfg.stats_interval.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    let mut failures = 0usize;
    let mut result = Ok(());

    'outer: loop {
        // (Re)create the consumer and its message stream; back off while the server is away.
        let messages = async {
            let consumer: jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(&cfg.consumer, consumer_cfg.clone())
                .await
                .map_err(|e| format!("create consumer {:?}: {e}", cfg.consumer))?;
            consumer
                .stream()
                .max_messages_per_batch(cfg.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| format!("pull from consumer {:?}: {e}", cfg.consumer))
        };
        let messages = tokio::select! {
            () = &mut shutdown => break 'outer,
            e = fatal.wait() => {
                result = Err(e);
                break 'outer;
            }
            m = messages => m,
        };
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                counters.errors.fetch_add(1, Ordering::Relaxed);
                let delay = connect::backoff(failures, nats.max_reconnect_delay);
                tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "cannot pull messages; retrying");
                tokio::select! {
                    () = &mut shutdown => break 'outer,
                    e = fatal.wait() => {
                        result = Err(e);
                        break 'outer;
                    }
                    () = tokio::time::sleep(delay) => continue 'outer,
                }
            }
        };
        let mut chunks = messages.ready_chunks(cfg.batch);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'outer,
                e = fatal.wait() => {
                    result = Err(e);
                    break 'outer;
                }
                chunk = chunks.next() => {
                    let Some(items) = chunk else {
                        tracing::info!("message stream ended; re-subscribing");
                        continue 'outer;
                    };
                    let mut msgs = Vec::with_capacity(items.len());
                    let mut recreate = false;
                    for item in items {
                        match item {
                            Ok(m) => msgs.push(m),
                            Err(e) => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "consumer error");
                                if matches!(
                                    e.kind(),
                                    pull::MessagesErrorKind::ConsumerDeleted
                                        | pull::MessagesErrorKind::NoResponders
                                ) {
                                    recreate = true;
                                }
                            }
                        }
                    }
                    if !msgs.is_empty() {
                        failures = 0;
                        imp.import(msgs).await?;
                    }
                    if recreate {
                        failures += 1;
                        let delay = connect::backoff(failures, nats.max_reconnect_delay);
                        tokio::time::sleep(delay).await;
                        continue 'outer;
                    }
                }
                _ = ticker.tick(), if cfg.stats_interval.is_some() => {
                    let snap = reporter.snapshot(&counters);
                    reporter.report(&snap);
                    imp.report_gaps();
                }
                _ = housekeeping.tick(), if !imp.gap_since.is_empty() => {
                    imp.skip_old_gaps().await?;
                }
            }
        }
    }
    if cfg.stats_interval.is_some() {
        let snap = reporter.snapshot(&counters);
        reporter.report(&snap);
    }
    imp.writer
        .close()
        .map_err(|e| BridgeError::queue(&cfg.queue, "close writer on", e))?;
    // Bounded: while the client is reconnecting a flush waits for the connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    result
}

impl Importer {
    /// Imports one batch: classify, write the intent, append, acknowledge.
    async fn import(&mut self, msgs: Vec<jetstream::Message>) -> Result<()> {
        let c = self.counters.clone();
        c.sent.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        // Next expected seq per source, including this batch's appends.
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut append: Vec<Held> = Vec::new();
        let mut dups: Vec<jetstream::Message> = Vec::new();
        for msg in msgs {
            if let Ok(info) = msg.info() {
                c.lag.store(info.pending, Ordering::Relaxed);
            }
            let meta = match headers::decode(msg.headers.as_ref()) {
                Ok(m) => m,
                Err(what) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    let at = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                    tracing::error!(
                        stream_seq = at,
                        reason = %what,
                        "stream message {at} is not a bridged record ({what}); terminating its delivery"
                    );
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let src = meta.source();
            let expected = match next.get(&src) {
                Some(n) => Some(*n),
                None => self.state.expected(&src),
            };
            match expected {
                Some(n) if meta.seq < n => dups.push(msg),
                Some(n) if meta.seq > n => {
                    let h = self.held.entry(src.clone()).or_default();
                    if h.is_empty() {
                        self.gap_since.insert(src, Instant::now());
                    }
                    h.insert(meta.seq, Held { meta, msg });
                }
                _ => {
                    let n = meta.seq + 1;
                    append.push(Held { meta, msg });
                    let n = self.release(&src, n, &mut append, &mut dups);
                    next.insert(src, n);
                }
            }
        }
        self.append_and_ack(append, dups).await
    }

    /// Moves the held records of `src` that follow `next` without a hole into `append` (and
    /// any held one below `next` into `dups`); returns the new next expected seq.
    fn release(
        &mut self,
        src: &str,
        mut next: u64,
        append: &mut Vec<Held>,
        dups: &mut Vec<jetstream::Message>,
    ) -> u64 {
        if let Some(h) = self.held.get_mut(src) {
            while let Some(entry) = h.first_entry() {
                if *entry.key() < next {
                    dups.push(entry.remove().msg);
                } else if *entry.key() == next {
                    append.push(entry.remove());
                    next += 1;
                } else {
                    break;
                }
            }
            if h.is_empty() {
                self.held.remove(src);
                self.gap_since.remove(src);
            } else {
                self.gap_since.insert(src.to_string(), Instant::now());
            }
        }
        next
    }

    /// Gives up on holes older than the gap timeout: the missing records are declared lost,
    /// counted and logged, and the held records after them are appended.
    async fn skip_old_gaps(&mut self) -> Result<()> {
        let Some(timeout) = self.gap_timeout else {
            return Ok(());
        };
        let stale: Vec<String> = self
            .gap_since
            .iter()
            .filter(|(_, since)| since.elapsed() >= timeout)
            .map(|(src, _)| src.clone())
            .collect();
        let mut append = Vec::new();
        let mut dups = Vec::new();
        for src in stale {
            let Some(first) = self.held.get(&src).and_then(|h| h.keys().next().copied()) else {
                self.gap_since.remove(&src);
                continue;
            };
            let want = self.state.expected(&src).unwrap_or(first);
            self.counters
                .gaps
                .fetch_add(first.saturating_sub(want), Ordering::Relaxed);
            tracing::error!(
                source = %src,
                from_seq = want,
                to_seq = first,
                gap_timeout_s = timeout.as_secs(),
                "source {src}: records {want}..{first} did not arrive within the gap timeout; skipping them (LOST)"
            );
            self.release(&src, first, &mut append, &mut dups);
        }
        self.append_and_ack(append, dups).await
    }

    /// Writes the intent, appends `append` in order, records the commit, then acknowledges
    /// `append` and `dups`.
    async fn append_and_ack(
        &mut self,
        append: Vec<Held>,
        dups: Vec<jetstream::Message>,
    ) -> Result<()> {
        let c = self.counters.clone();
        if !append.is_empty() {
            let sources: Vec<String> = append.iter().map(|h| h.meta.source()).collect();
            let runs = runs_of(
                sources
                    .iter()
                    .zip(append.iter())
                    .map(|(s, h)| (s.as_str(), h.meta.seq)),
            );
            self.state.begin(self.writer.next_seq(), &runs)?;
            for h in &append {
                self.writer
                    .append_at(h.meta.type_id, h.meta.timestamp_ns, &h.msg.payload)
                    .map_err(|e| BridgeError::queue(&self.queue, "append to", e))?;
            }
            self.state.commit(&runs);
            c.done.fetch_add(append.len() as u64, Ordering::Relaxed);
            if let Some(last) = append.last() {
                c.position.store(last.meta.seq + 1, Ordering::Relaxed);
            }
        }
        c.duplicates.fetch_add(dups.len() as u64, Ordering::Relaxed);
        c.in_flight.store(
            self.held.values().map(|h| h.len() as u64).sum(),
            Ordering::Relaxed,
        );
        // Acknowledge only now: every record of `append` is in the queue and in the state.
        for m in append.iter().map(|h| &h.msg).chain(dups.iter()) {
            if m.ack().await.is_err() {
                // Redelivered later and recognized as imported.
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Says which sources wait for a missing record (held records cannot be appended yet).
    fn report_gaps(&self) {
        for (src, h) in &self.held {
            if let Some(first) = h.keys().next() {
                let want = self.state.expected(src).unwrap_or(0);
                tracing::warn!(
                    source = %src,
                    waiting_for = want,
                    held = h.len(),
                    first_held = *first,
                    "source {src}: waiting for seq {want}; later records held"
                );
            }
        }
    }
}
