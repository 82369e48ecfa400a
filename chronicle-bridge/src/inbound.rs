//! `chron-bridge in`: a durable JetStream pull consumer that appends records into a local queue.
//!
//! Messages arrive in chunks of up to `batch` messages. A message holds one record (its fields
//! in headers) or a batch envelope of several records of one source ([`headers::decode_message`]
//! reads both). Each message is classified by its source (`<host>/<queue>`) and the source
//! sequence numbers of its records against the [`ImportState`] table:
//!
//! - it holds the next expected record (or comes from a source never seen): its records from
//!   the expected one on are appended (those below it were imported already: a batch re-sent
//!   with other boundaries after an out-bridge restart overlaps the previous one);
//! - all its records are earlier: already imported (a redelivery or a re-send outside the de-dup
//!   window): acknowledged and skipped;
//! - its first record is later: held back, unacknowledged, until the records before it arrive
//!   (a publish lost in a failover and re-sent after later ones were stored puts them out of
//!   order in the stream), then appended in source order.
//!
//! For each chunk the state file first records the intent (one write, see [`crate::state`]),
//! then the records are appended with their original type id and timestamp, then the messages
//! are acknowledged. A message is acknowledged only after all its records are in the local queue
//! (with `sync_batches`, on stable storage).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use chronicle_core::{QueueWriter, WriterConfig};
use futures_util::StreamExt;

use crate::connect::{self, NatsConfig, StreamSpec};
use crate::envelope::WireRecord;
use crate::error::{BridgeError, Result};
use crate::headers;
use crate::state::{ImportState, Recovered, runs_of};
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
    /// Largest number of messages handled as one chunk (one state write).
    pub batch: usize,
    /// Make each chunk durable before acknowledging it: fdatasync the state before the
    /// appends, msync the records after them.
    pub sync_batches: bool,
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

/// Most stream messages a re-read after a lost state write looks at.
const RESCAN_LIMIT: u64 = 1_000_000;

/// A message and its records (increasing source seqs, at least one).
struct Unit {
    source: String,
    records: Vec<WireRecord>,
    msg: jetstream::Message,
}

impl Unit {
    fn new(d: headers::Decoded, msg: jetstream::Message) -> Unit {
        Unit {
            source: d.source,
            records: d.records,
            msg,
        }
    }

    fn first(&self) -> u64 {
        self.records.first().map_or(0, |r| r.seq)
    }

    fn last(&self) -> u64 {
        self.records.last().map_or(0, |r| r.seq)
    }
}

/// A message to append from its record `from` on (the ones before were imported already).
struct Take {
    unit: Unit,
    from: usize,
}

/// A record found in the local queue after the state's last intent (see [`Importer::foreign`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    timestamp_ns: u64,
    type_id: u32,
    len: usize,
    crc: u32,
}

impl Fingerprint {
    fn of(timestamp_ns: u64, type_id: u32, payload: &[u8]) -> Fingerprint {
        Fingerprint {
            timestamp_ns,
            type_id,
            len: payload.len(),
            crc: chronicle_core::crc32c(payload),
        }
    }
}

/// The import loop's memory: the state table, records held back, and the local writer.
struct Importer {
    state: ImportState,
    /// Held messages per source, by (first seq, arrival number).
    held: HashMap<String, BTreeMap<(u64, u64), Unit>>,
    arrivals: u64,
    /// Records in the queue after the state's last intent, in queue order: after a power cut
    /// the state file can lose its newest slot while the queue keeps the batch it announced.
    /// The records arriving next are compared with them and, while they match, taken as
    /// already imported instead of appended again.
    foreign: VecDeque<Fingerprint>,
    sync_batches: bool,
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
    let writer = QueueWriter::open(&cfg.queue, writer_config(&cfg.writer, cfg.sync_batches))
        .map_err(|e| BridgeError::queue(&cfg.queue, "open writer on", e))?;
    let (client, mut fatal) = dialer.dial().await?;
    let js = connect::jetstream(client.clone(), &nats);
    let stream = connect::ensure_stream(&js, &cfg.stream, cfg.create.as_ref()).await?;
    let Resume {
        state,
        recovered: rec,
        foreign,
    } = Resume::load(&cfg.state, &cfg.queue, writer.next_seq())?;
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
    if !foreign.is_empty() {
        tracing::warn!(
            foreign = foreign.len(),
            "{} records follow the state's last batch in the queue (a state file that lost its newest write?); records that match them are taken as already imported",
            foreign.len()
        );
    }
    let mut imp = Importer {
        state,
        held: HashMap::new(),
        arrivals: 0,
        foreign,
        sync_batches: cfg.sync_batches,
        gap_since: HashMap::new(),
        gap_timeout: cfg.gap_timeout,
        writer,
        queue: cfg.queue.clone(),
        counters: counters.clone(),
    };

    // Records left in the queue by a state write that was lost: read the stream from the
    // surviving intent's floor and match them now, whether or not their messages come again.
    if let (false, Some(floor)) = (imp.foreign.is_empty(), rec.stream_floor) {
        imp.rescan(&stream, floor, cfg.filter_subject.clone())
            .await?;
    }
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
    /// Imports one chunk: classify, write the intent, append, acknowledge.
    async fn import(&mut self, msgs: Vec<jetstream::Message>) -> Result<()> {
        let c = self.counters.clone();
        c.sent.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        // Next expected seq per source, including this chunk's appends.
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut append: Vec<Take> = Vec::new();
        let mut dups: Vec<jetstream::Message> = Vec::new();
        let mut pending = 0;
        for msg in msgs {
            if let Ok(info) = msg.info() {
                pending = info.pending;
            }
            let decoded =
                headers::decode_message(msg.headers.as_ref(), &msg.payload).and_then(|d| {
                    if d.records.is_empty() {
                        Err("message holds no record".to_string())
                    } else {
                        Ok(d)
                    }
                });
            let d = match decoded {
                Ok(d) => d,
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
            let unit = Unit::new(d, msg);
            let src = unit.source.clone();
            let expected = match next.get(&src) {
                Some(n) => Some(*n),
                None => self.state.expected(&src),
            };
            match expected {
                Some(n) if unit.last() < n => dups.push(unit.msg),
                Some(n) if unit.first() > n => {
                    let h = self.held.entry(src.clone()).or_default();
                    if h.is_empty() {
                        self.gap_since.insert(src, Instant::now());
                    }
                    self.arrivals += 1;
                    h.insert((unit.first(), self.arrivals), unit);
                }
                _ => {
                    let n = expected.unwrap_or_else(|| unit.first());
                    let n = self.take(unit, n, &mut append, &mut dups);
                    let n = self.release(&src, n, &mut append, &mut dups);
                    next.insert(src, n);
                }
            }
        }
        c.lag.store(pending, Ordering::Relaxed);
        let last_ts = append
            .last()
            .and_then(|t| t.unit.records.last())
            .map(|r| r.timestamp_ns);
        if pending == 0 {
            c.lag_since_ns.store(0, Ordering::Relaxed);
        } else if let Some(ts) = last_ts {
            c.lag_since_ns.store(ts, Ordering::Relaxed);
        }
        self.append_and_ack(append, dups).await
    }

    /// Queues the records of `unit` from seq `next` on for appending (or, when all are below,
    /// its message for acknowledgement); returns the new next expected seq. Records matching
    /// the [`Importer::foreign`] ones are taken as already in the queue.
    fn take(
        &mut self,
        unit: Unit,
        next: u64,
        append: &mut Vec<Take>,
        dups: &mut Vec<jetstream::Message>,
    ) -> u64 {
        if unit.last() < next {
            dups.push(unit.msg);
            return next;
        }
        let from = unit.records.iter().take_while(|r| r.seq < next).count();
        let (from, matched) = match_foreign(
            &mut self.foreign,
            &mut self.state,
            &unit.source,
            &unit.records,
            from,
        );
        self.counters
            .duplicates
            .fetch_add(matched, Ordering::Relaxed);
        let last = unit.last();
        if from == unit.records.len() {
            dups.push(unit.msg);
        } else {
            append.push(Take { unit, from });
        }
        last + 1
    }

    /// Moves the held messages of `src` that continue `next` without a hole into `append` (and
    /// any held one wholly below `next` into `dups`); returns the new next expected seq.
    fn release(
        &mut self,
        src: &str,
        mut next: u64,
        append: &mut Vec<Take>,
        dups: &mut Vec<jetstream::Message>,
    ) -> u64 {
        let Some(mut h) = self.held.remove(src) else {
            return next;
        };
        while let Some(entry) = h.first_entry() {
            if entry.key().0 > next {
                break;
            }
            next = self.take(entry.remove(), next, append, dups);
        }
        if h.is_empty() {
            self.gap_since.remove(src);
        } else {
            self.held.insert(src.to_string(), h);
            self.gap_since.insert(src.to_string(), Instant::now());
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
            let Some(first) = self
                .held
                .get(&src)
                .and_then(|h| h.keys().next().map(|k| k.0))
            else {
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
    /// `append` and `dups`. With `sync_batches` the intent is on stable storage before the
    /// first append and the records before the first acknowledgement.
    async fn append_and_ack(
        &mut self,
        append: Vec<Take>,
        dups: Vec<jetstream::Message>,
    ) -> Result<()> {
        let c = self.counters.clone();
        let records = || {
            append.iter().flat_map(|t| {
                t.unit
                    .records
                    .iter()
                    .skip(t.from)
                    .map(|r| (t.unit.source.as_str(), r))
            })
        };
        if !append.is_empty() {
            let runs = runs_of(records().map(|(s, r)| (s, r.seq)));
            let floor = append
                .iter()
                .map(|t| &t.unit.msg)
                .chain(self.held.values().flat_map(|h| h.values().map(|u| &u.msg)))
                .filter_map(|m| m.info().ok().map(|i| i.stream_sequence))
                .min();
            self.state.set_stream_floor(floor);
            self.state.begin(self.writer.next_seq(), &runs)?;
            if self.sync_batches {
                self.state.sync()?;
            }
            let mut n = 0u64;
            for (i, (_, r)) in records().enumerate() {
                self.writer
                    .append_at(r.type_id, r.timestamp_ns, &r.payload)
                    .map_err(|e| BridgeError::queue(&self.queue, "append to", e))?;
                n += 1;
                if i == 0 {
                    // A crash here leaves a batch half appended (crash-point tests).
                    chronicle_core::testing::crash::point("bridge.in.first_append");
                }
            }
            if self.sync_batches {
                self.writer
                    .sync()
                    .map_err(|e| BridgeError::queue(&self.queue, "sync", e))?;
            }
            self.state.commit(&runs);
            c.done.fetch_add(n, Ordering::Relaxed);
            if let Some((_, r)) = records().last() {
                c.position.store(r.seq + 1, Ordering::Relaxed);
            }
        } else if self.state.dirty() {
            // Records matched as already in the queue moved the table: persist it before
            // their messages are acknowledged (they will not come again). The empty intent
            // starts before the records still to match, so a restart finds them again.
            let unmatched = self.foreign.len() as u64;
            self.state
                .begin(self.writer.next_seq().saturating_sub(unmatched), &[])?;
            if self.sync_batches {
                self.state.sync()?;
            }
        }
        c.duplicates.fetch_add(dups.len() as u64, Ordering::Relaxed);
        c.in_flight.store(
            self.held.values().map(|h| h.len() as u64).sum(),
            Ordering::Relaxed,
        );
        // Acknowledge only now: every record of `append` is in the queue and in the state.
        for m in append.iter().map(|t| &t.unit.msg).chain(dups.iter()) {
            if m.ack().await.is_err() {
                // Redelivered later and recognized as imported.
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Reads the stream from sequence `from` (an ordered consumer: no acknowledgements, no
    /// effect on the durable one) and matches the records of [`Importer::foreign`] against it,
    /// in the order the import would take them, until they are all matched, one does not
    /// match, or the stream has nothing more. Then writes the state if the table moved. Covers
    /// a lost state write whose messages were acknowledged (they will not come again).
    async fn rescan(
        &mut self,
        stream: &jetstream::stream::Stream,
        from: u64,
        filter: Option<String>,
    ) -> Result<()> {
        let cfg = pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            filter_subject: filter.unwrap_or_default(),
            ..Default::default()
        };
        let messages = match stream.create_consumer(cfg).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    from_seq = from,
                    error = %e,
                    "cannot re-read the stream from {from} to match the records after the state's last batch ({e}); matching arriving records only"
                );
                return Ok(());
            }
        };
        tracing::info!(
            from_seq = from,
            unmatched = self.foreign.len(),
            "re-reading the stream from sequence {from} to match the {} records after the state's last batch",
            self.foreign.len()
        );
        let mut held: HashMap<String, BTreeMap<(u64, u64), Unit>> = HashMap::new();
        let mut arrivals = 0u64;
        let mut scanned = 0u64;
        while !self.foreign.is_empty() && scanned < RESCAN_LIMIT {
            let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_secs(2), messages.next()).await
            else {
                break;
            };
            scanned += 1;
            let Ok(d) = headers::decode_message(msg.headers.as_ref(), &msg.payload) else {
                continue;
            };
            if d.records.is_empty() {
                continue;
            }
            let unit = Unit::new(d, msg);
            let src = unit.source.clone();
            let expected = self.state.expected(&src).unwrap_or_else(|| unit.first());
            if unit.last() < expected {
                continue;
            }
            if unit.first() > expected {
                arrivals += 1;
                held.entry(src)
                    .or_default()
                    .insert((unit.first(), arrivals), unit);
                continue;
            }
            // Nothing is appended or acknowledged here: the durable consumer delivers what
            // is not in the queue.
            let (mut append, mut dups) = (Vec::new(), Vec::new());
            let mut next = self.take(unit, expected, &mut append, &mut dups);
            if let Some(h) = held.get_mut(&src) {
                while append.is_empty() && !self.foreign.is_empty() {
                    let Some(entry) = h.first_entry() else { break };
                    if entry.key().0 > next {
                        break;
                    }
                    next = self.take(entry.remove(), next, &mut append, &mut dups);
                }
            }
            if !append.is_empty() {
                break;
            }
        }
        tracing::info!(
            scanned,
            unmatched = self.foreign.len(),
            "re-read {scanned} stream messages; {} records after the state's last batch still unmatched",
            self.foreign.len()
        );
        if self.state.dirty() {
            let unmatched = self.foreign.len() as u64;
            self.state.set_stream_floor(Some(from));
            self.state
                .begin(self.writer.next_seq().saturating_sub(unmatched), &[])?;
            if self.sync_batches {
                self.state.sync()?;
            }
        }
        Ok(())
    }

    /// Says which sources wait for a missing record (held records cannot be appended yet).
    fn report_gaps(&self) {
        for (src, h) in &self.held {
            if let Some((first, _)) = h.keys().next() {
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

/// The configuration the in-bridge opens its queue's writer with. With `sync_batches` a
/// `PageCache` writer becomes `EveryRecords(u64::MAX)`: the count never fires (the in-bridge
/// syncs each chunk itself), but the queue is in a sync mode, so a roll makes the full segment,
/// its PAD and the next segment's header durable, and the queue's file names are fsynced; with
/// `PageCache` an explicit sync covers only the current segment, and a power cut could take
/// acknowledged records with a segment's or `queue.meta`'s name (found by the simulator).
pub fn writer_config(writer: &WriterConfig, sync_batches: bool) -> WriterConfig {
    let mut w = writer.clone();
    if sync_batches && w.durability == chronicle_core::Durability::PageCache {
        w.durability = chronicle_core::Durability::EveryRecords(u64::MAX);
    }
    w
}

/// Compares `records[from..]` of `source`, in order, with the records found in the queue after
/// the state's last intent (`foreign`): each match is taken as already imported (the table
/// adopts it, the fingerprint is consumed); the first mismatch clears `foreign` (the rest is
/// taken as written by someone else). Returns the index of the first record to append and the
/// number matched.
fn match_foreign(
    foreign: &mut VecDeque<Fingerprint>,
    state: &mut ImportState,
    source: &str,
    records: &[WireRecord],
    mut from: usize,
) -> (usize, u64) {
    let mut matched = 0;
    while let (Some(f), Some(r)) = (foreign.front(), records.get(from)) {
        if *f == Fingerprint::of(r.timestamp_ns, r.type_id, &r.payload) {
            foreign.pop_front();
            state.adopt(source, r.seq + 1);
            matched += 1;
            from += 1;
            if foreign.is_empty() {
                tracing::info!(
                    "every record after the state's last batch matched a record of the stream: none imported twice"
                );
            }
        } else {
            tracing::warn!(
                source = %source,
                seq = r.seq,
                unmatched = foreign.len(),
                "source {} seq {} does not match the next of the {} records that follow the state's last batch; they are taken as written by someone else",
                source,
                r.seq,
                foreign.len()
            );
            foreign.clear();
        }
    }
    (from, matched)
}

/// What an in-bridge knows when it starts, before it talks to the server: the import table
/// reconciled with the local queue ([`ImportState::load`]) and the records found in the queue
/// after the state's last intent (a state file that lost its newest write), which the records
/// arriving next are matched against ([`Resume::take_imported`]). `run` starts from exactly
/// this; the power-loss simulator (`tests/powercut.rs`) checks it without a server.
#[derive(Debug)]
pub struct Resume {
    /// The import table.
    pub state: ImportState,
    /// What loading found.
    pub recovered: Recovered,
    foreign: VecDeque<Fingerprint>,
}

impl Resume {
    /// Loads the state at `state_path` against `queue`, whose writer (open: recovery done)
    /// reports `queue_next_seq`, and fingerprints the records after the state's last intent.
    pub fn load(state_path: &Path, queue: &Path, queue_next_seq: u64) -> Result<Resume> {
        let (state, recovered) = ImportState::load(state_path, queue_next_seq)?;
        let foreign = if recovered.foreign > 0 {
            read_fingerprints(queue, queue_next_seq - recovered.foreign, recovered.foreign)?
        } else {
            VecDeque::new()
        };
        Ok(Resume {
            state,
            recovered,
            foreign,
        })
    }

    /// Records found in the queue after the state's last intent and not matched yet.
    pub fn unmatched(&self) -> usize {
        self.foreign.len()
    }

    /// What the import does with records of `source` that arrive (in source order) from the
    /// expected one on: the leading ones that match the records after the last intent are
    /// already in the queue (the table adopts them). Returns how many of `records` those are;
    /// the rest are to be appended.
    pub fn take_imported(&mut self, source: &str, records: &[WireRecord]) -> usize {
        match_foreign(&mut self.foreign, &mut self.state, source, records, 0).0
    }
}

/// Fingerprints of the `count` records of `queue` from seq `from` on.
fn read_fingerprints(
    queue: &std::path::Path,
    from: u64,
    count: u64,
) -> Result<VecDeque<Fingerprint>> {
    let cfg = chronicle_core::ReaderConfig::default().start(chronicle_core::StartAt::Seq(from));
    let mut r = chronicle_core::QueueReader::open(queue, cfg)
        .map_err(|e| BridgeError::queue(queue, "open reader on", e))?;
    let mut out = std::collections::VecDeque::new();
    while (out.len() as u64) < count {
        match r.next() {
            Ok(Some(m)) => {
                out.push_back(Fingerprint::of(m.timestamp_ns(), m.type_id(), m.payload()))
            }
            Ok(None) => break,
            Err(e) => return Err(BridgeError::queue(queue, "read", e)),
        }
    }
    Ok(out)
}
