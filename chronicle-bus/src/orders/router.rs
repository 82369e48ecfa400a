//! [`Router`]: the order router, the one process that handles money.
//!
//! It follows strategies as they come and go ([`RouterDiscovery`]), merges their order queues by
//! timestamp ([`FanInReader`], live, per-source positions under the reader name `router`, the bus
//! doorbell), orders the flow fairly per strategy with the DRR scheduler (tenant = strategy,
//! cancels urgent with a reserve of their own, deadlines), writes what it sends to `router/out`
//! under a token-bucket rate limit (the exchange throttle), and answers every order and every
//! cancel exactly once in the strategy's fates queue. See the `orders` module for the protocol
//! and what survives a crash.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use chronicle_core::os::realtime_ns;
use chronicle_core::{
    QueueReader, QueueWriter, ReaderConfig, RetentionPolicy, StartAt, WriterConfig,
};
use hdrhistogram::Histogram;

use super::fates::FateCounts;
use super::journal::{Answer, Journal, Merge};
use super::record::{FateCode, Kind, ORDER, Order, ROUTED, RejectCode, Routed};
use crate::discovery::{DiscoveryConfig, DiscoveryEvent, Endpoint, RemoveReason, RouterDiscovery};
use crate::error::{BusError, Result};
use crate::fanin::{FanInConfig, FanInReader, FanInStats, MergeMode};
use crate::layout::{BusLayout, SourceId};
use crate::sched::{
    Backpressure, Dequeued, Enqueued, LocalScheduler, RejectReason, SchedulerConfig,
    SchedulerCounters, Task, TenantKey, TenantStats,
};

/// The name of the router's readers on the strategies' order queues (its positions there), by
/// default: see [`RouterConfig::reader_name`] and `StrategyEndpoints::router_attached`.
pub const ROUTER_READER: &str = "router";

/// Settings of [`Router`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterConfig {
    /// DRR weights (quanta) by strategy id; strategies not listed weigh 1.
    pub weights: Vec<(String, NonZeroU32)>,
    /// Outbound rate limit in orders (and cancels) per second; 0: unlimited.
    pub rate_limit: u64,
    /// Live merge: send an order held back by a silent strategy's watermark after this long.
    pub max_hold: Duration,
    /// Orders a strategy may have queued before new ones are rejected.
    pub max_per_tenant: usize,
    /// Orders queued for all strategies together before new ones are rejected.
    pub max_global: usize,
    /// Cancels a strategy may have queued beyond `max_per_tenant` and `max_global`: a strategy's
    /// flood of new orders can never crowd out its cancels.
    pub cancel_reserve: usize,
    /// A full strategy: reject the new order ([`Backpressure::Reject`]) or evict its oldest
    /// queued order ([`Backpressure::EvictOldest`], answered `evicted`).
    pub backpressure: Backpressure,
    /// Name of the router's per-strategy positions (named readers on the order queues).
    pub reader_name: String,
    /// Writer settings of `router/out`.
    pub out: WriterConfig,
    /// Writer settings of every `strategies/<id>/fates`.
    pub fates: WriterConfig,
    /// Discovery settings.
    pub discovery: DiscoveryConfig,
    /// How often discovery is polled.
    pub poll_every: Duration,
    /// Waiting for orders: busy polls of the sources, then `sched_yield`s, then a sleep on the
    /// bus doorbell (see [`FanInConfig::spin_limit`]).
    pub spin_limit: u32,
    /// See `spin_limit`.
    pub yield_limit: u32,
    /// Send tokens kept back for strategies that just became active: a backlogged strategy
    /// spends tokens only above this reserve, so a strategy that asks for less than its share
    /// finds a token waiting (the scheduler serves newly active strategies first for one
    /// quantum). 0 turns it off. The outbound rate is unchanged.
    pub sparse_reserve: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        let queue = WriterConfig {
            segment_size: 16 << 20,
            retention: RetentionPolicy {
                max_bytes: Some(256 << 20),
                ..RetentionPolicy::default()
            },
            ..WriterConfig::default()
        };
        RouterConfig {
            weights: Vec::new(),
            rate_limit: 20_000,
            max_hold: Duration::from_micros(500),
            max_per_tenant: 1_024,
            max_global: 65_536,
            cancel_reserve: 256,
            backpressure: Backpressure::Reject,
            reader_name: ROUTER_READER.to_string(),
            out: queue,
            // A fates queue is created inside the router loop when a strategy is first
            // attached: small segments keep that (and each roll) short.
            fates: WriterConfig {
                segment_size: 1 << 20,
                retention: RetentionPolicy {
                    max_bytes: Some(64 << 20),
                    ..RetentionPolicy::default()
                },
                ..WriterConfig::default()
            },
            discovery: DiscoveryConfig::default(),
            // A poll is a non-blocking inotify read when nothing changed (rescans keep their
            // own interval): polling often lets a strategy that comes back after a restart be
            // attached again within a millisecond or two, before its orders' deadlines.
            poll_every: Duration::from_millis(1),
            spin_limit: FanInConfig::default().spin_limit,
            yield_limit: FanInConfig::default().yield_limit,
            sparse_reserve: 1,
        }
    }
}

/// Something the router did that an operator wants to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouterEvent {
    /// A strategy's order queue was attached.
    Attached {
        /// Strategy id.
        id: String,
        /// Its DRR weight.
        weight: u32,
    },
    /// A strategy left; what it committed is still merged (drained) before it is dropped.
    Detached {
        /// Strategy id.
        id: String,
        /// Why.
        reason: RemoveReason,
    },
    /// A strategy could not be attached (retried at the next discovery event).
    AttachFailed {
        /// Strategy id.
        id: String,
        /// The error, as text.
        error: String,
    },
    /// At start, the last record of `router/out` had no fate (the previous router died between
    /// sending it and answering it): its `routed` fate was written now.
    Recovered {
        /// Strategy id.
        id: String,
        /// The order's seq in the strategy's order queue.
        order_seq: u64,
        /// Its seq in `router/out`.
        out_seq: u64,
    },
    /// A power cut rewrote the strategy's order queue's history (DESIGN.md section 8): fates
    /// of orders at or past `rewritten_from` written under the old history answer orders that
    /// are gone, and no longer count; the orders now at those seqs are answered as new.
    HistoryRewritten {
        /// Strategy id.
        id: String,
        /// The first seq assigned again.
        rewritten_from: u64,
        /// Answers (old fates, or seqs below the old frontier) that no longer count.
        voided: usize,
    },
}

/// Counters of one strategy in this router's life (they restart at 0 with the process; the
/// fates queue is the lasting record).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StrategyStats {
    /// Strategy id.
    pub id: String,
    /// DRR weight.
    pub weight: u32,
    /// Orders and cancels taken from its queue (each gets exactly one fate).
    pub merged: u64,
    /// Records read again that already had their fate (after a restart or a re-attach).
    pub skipped: u64,
    /// Fates written, by code.
    pub fates: FateCounts,
    /// Its orders the scheduler refused, by reason (each also a `rejected` fate).
    pub rejections: Rejections,
    /// Times its queue was attached.
    pub attached: u64,
    /// Taken and not yet answered (queued in the scheduler).
    pub pending: usize,
    /// Origin-to-route latency of its routed orders, ns.
    pub latency: Histogram<u64>,
    /// The same latency in stages, ns: see [`Stages`].
    pub stages: Stages,
}

/// Orders the scheduler refused for one strategy, by its reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejections {
    /// The strategy had `max_per_tenant` orders queued.
    pub tenant_full: u64,
    /// The router had `max_global` orders queued.
    pub global_full: u64,
    /// The scheduler tracked as many strategies as it can.
    pub too_many_tenants: u64,
    /// The scheduler was closed.
    pub closed: u64,
}

impl Rejections {
    fn add(&mut self, reason: RejectReason) {
        let c = match reason {
            RejectReason::TenantFull => &mut self.tenant_full,
            RejectReason::GlobalFull => &mut self.global_full,
            RejectReason::TooManyTenants => &mut self.too_many_tenants,
            RejectReason::Closed => &mut self.closed,
        };
        *c += 1;
    }
}

/// Where the origin-to-route time of routed orders goes, one histogram (ns) per stage. The
/// first three add up to the origin-to-route latency (whose end is the `router/out` record's
/// stamp, taken when the order left the scheduler); `send` is the work after that stamp.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stages {
    /// Origin (the tick's send stamp) to the order's write: the feed hop and the strategy.
    pub to_order: Histogram<u64>,
    /// The order's write to the merge handing it on: the hop into the router and the live
    /// merge's wait for the other strategies' watermarks.
    pub merge: Histogram<u64>,
    /// Merged to taken out of the scheduler: queueing behind other orders and the rate limit.
    pub queue: Histogram<u64>,
    /// Taken out of the scheduler to written to `router/out` and answered.
    pub send: Histogram<u64>,
    /// Orders that expired: their write to the merge handing them on.
    pub expired_merge: Histogram<u64>,
    /// Orders that expired: merged to found expired.
    pub expired_queue: Histogram<u64>,
}

impl Stages {
    fn new() -> Result<Stages> {
        Ok(Stages {
            to_order: latency_histogram()?,
            merge: latency_histogram()?,
            queue: latency_histogram()?,
            send: latency_histogram()?,
            expired_merge: latency_histogram()?,
            expired_queue: latency_histogram()?,
        })
    }

    fn record_expired(&mut self, q: &Queued, now_ns: u64) {
        let d = |a: u64, b: u64| b.saturating_sub(a).max(1);
        self.expired_merge
            .saturating_record(d(q.written_ns, q.merged_ns));
        self.expired_queue.saturating_record(d(q.merged_ns, now_ns));
    }

    fn record(&mut self, q: &Queued, dequeued_ns: u64, sent_ns: u64) {
        let d = |a: u64, b: u64| b.saturating_sub(a).max(1);
        self.to_order
            .saturating_record(d(q.order.origin_ns, q.written_ns));
        self.merge.saturating_record(d(q.written_ns, q.merged_ns));
        self.queue.saturating_record(d(q.merged_ns, dequeued_ns));
        self.send.saturating_record(d(dequeued_ns, sent_ns));
    }
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    order: Order,
    seq: u64,
    /// The order record's timestamp (when the strategy wrote it).
    written_ns: u64,
    /// When the merge handed it to the router (CLOCK_REALTIME).
    merged_ns: u64,
}

#[derive(Debug)]
struct Strategy {
    journal: Journal,
    stats: StrategyStats,
}

impl Strategy {
    /// Checks the journal against the order queue's history `h` (at attach, and when a merged
    /// order carries another epoch than the journal's); an event when answers no longer count.
    fn rebase(&mut self, h: Option<chronicle_core::History>, events: &mut Vec<RouterEvent>) {
        let Some(h) = h else { return };
        let voided = self.journal.rebase(&h);
        if voided > 0 {
            events.push(RouterEvent::HistoryRewritten {
                id: self.stats.id.clone(),
                rewritten_from: h.rewritten_from,
                voided,
            });
        }
    }

    fn answer(&mut self, a: Answer) -> Result<u64> {
        let seq = self.journal.answer(a)?;
        self.stats.fates.add(a.code);
        self.stats.pending = self.journal.pending();
        Ok(seq)
    }

    fn answer_order(&mut self, q: Queued, code: FateCode) -> Result<u64> {
        self.answer(Answer {
            order_id: q.order.order_id,
            kind: q.order.kind.byte(),
            code,
            reason: None,
            order_seq: q.seq,
            out_seq: None,
        })
    }
}

/// The router's send pacing: `rate` tokens per second, holding at most 1 ms of them (and at
/// least one) plus `reserve`, so a quiet spell never turns into a burst. Tokens above `reserve`
/// go to anyone; the reserve only to a newly active strategy. Rate 0 is unlimited.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    reserve: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate_per_s: u64, reserve: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate_per_s as f64,
            tokens: 0.0,
            reserve: f64::from(reserve),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        let cap = (self.rate / 1000.0).max(1.0) + self.reserve;
        self.tokens = (self.tokens + earned).min(cap);
        self.last = now;
    }

    /// A token for anyone (above the reserve)?
    fn ready(&self) -> bool {
        self.rate == 0.0 || self.tokens >= 1.0 + self.reserve
    }

    /// A token for a newly active strategy (the reserve included)?
    fn ready_for_new(&self) -> bool {
        self.rate == 0.0 || self.tokens >= 1.0
    }

    fn spend(&mut self) {
        if self.rate > 0.0 {
            self.tokens -= 1.0;
        }
    }

    /// Changes the rate from `now` on: tokens earned so far at the old rate are kept, up to
    /// the new rate's cap.
    fn set_rate(&mut self, rate_per_s: u64, now: Instant) {
        self.refill(now);
        self.rate = rate_per_s as f64;
        let cap = (self.rate / 1000.0).max(1.0) + self.reserve;
        self.tokens = self.tokens.min(cap);
    }

    /// Time until the next token for anyone.
    fn until_ready(&self) -> Duration {
        if self.ready() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((1.0 + self.reserve - self.tokens) / self.rate).max(0.0))
    }
}

/// The order router. See the module docs; [`Router::run`] is the whole process loop.
#[derive(Debug)]
pub struct Router {
    layout: BusLayout,
    config: RouterConfig,
    discovery: RouterDiscovery,
    fanin: FanInReader,
    sched: LocalScheduler<Queued>,
    out: QueueWriter,
    strategies: HashMap<SourceId, Strategy>,
    waiting: HashMap<String, Endpoint>,
    /// Fates queues being opened off the loop, by strategy id.
    opening: HashMap<String, std::thread::JoinHandle<Result<Journal>>>,
    events: Vec<RouterEvent>,
    bucket: TokenBucket,
    last_poll: Option<Instant>,
    expired: Vec<(TenantKey, Task<Queued>)>,
    routed: u64,
    total: Histogram<u64>,
    window: Histogram<u64>,
    draining: bool,
}

/// 1 ns to 10 s at 2 significant digits (1 %): small enough (~20 KiB) that reading
/// percentiles once a second costs the router microseconds, not milliseconds.
fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 10_000_000_000, 2).map_err(|_| BusError::InvalidConfig {
        what: "latency histogram bounds",
    })
}

impl Router {
    /// Opens the router on a bus: creates the bus directories if needed, opens `router/out`
    /// (taking its writer lock: one router per bus) and answers the last routed order if the
    /// previous router died before it could (see [`RouterEvent::Recovered`]).
    pub fn open(layout: &BusLayout, config: RouterConfig) -> Result<Router> {
        let layout = BusLayout::create(layout.root())?;
        let discovery = RouterDiscovery::new(&layout, config.discovery)?;
        let fanin = FanInReader::new(FanInConfig {
            mode: MergeMode::Live,
            max_hold: Some(config.max_hold),
            reader_name: Some(config.reader_name.clone()),
            doorbell: Some(layout.doorbell()),
            spin_limit: config.spin_limit,
            yield_limit: config.yield_limit,
            ..FanInConfig::default()
        })?;
        let mut sched_cfg = SchedulerConfig::default()
            .with_max_per_tenant(config.max_per_tenant.max(1))
            .with_max_global(config.max_global.max(1))
            .with_urgent_reserve(config.cancel_reserve)
            .with_backpressure(config.backpressure)
            .with_new_tenants_first(true)
            .with_keep_expired(true);
        for (id, w) in &config.weights {
            sched_cfg = sched_cfg.with_quantum(TenantKey::new(SourceId::of(id).0), *w);
        }
        let sched = LocalScheduler::new(sched_cfg).map_err(|_| BusError::InvalidConfig {
            what: "router scheduler limits (max_per_tenant, max_global, weights)",
        })?;
        let out_path = layout.router_out();
        let out = QueueWriter::open(&out_path, config.out.clone())
            .map_err(|e| BusError::queue(&out_path, e))?;
        let now = Instant::now();
        let mut router = Router {
            bucket: TokenBucket::new(config.rate_limit, config.sparse_reserve, now),
            layout,
            config,
            discovery,
            fanin,
            sched,
            out,
            strategies: HashMap::new(),
            waiting: HashMap::new(),
            opening: HashMap::new(),
            events: Vec::new(),
            last_poll: None,
            expired: Vec::new(),
            routed: 0,
            total: latency_histogram()?,
            window: latency_histogram()?,
            draining: false,
        };
        router.answer_last_routed()?;
        Ok(router)
    }

    /// A crash between writing an order to `router/out` and writing its fate leaves exactly one
    /// routed order without a fate: the last record of `router/out` (every earlier one had its
    /// fate before the next was written). Writes that fate.
    fn answer_last_routed(&mut self) -> Result<()> {
        let n = self.out.next_seq();
        if n == 0 {
            return Ok(());
        }
        let path = self.layout.router_out();
        let mut r = QueueReader::open(&path, ReaderConfig::default().start(StartAt::Seq(n - 1)))
            .map_err(|e| BusError::queue(&path, e))?;
        let last = match r.next().map_err(|e| BusError::queue(&path, e))? {
            Some(m) if m.type_id() == ROUTED && m.seq() == n - 1 => Routed::decode(m.payload()),
            _ => None,
        };
        let Some(last) = last else { return Ok(()) };
        let Some(id) = self.strategy_named(SourceId(last.source_id))? else {
            return Ok(());
        };
        let sid = SourceId(last.source_id);
        self.ensure_strategy(sid, &id)?;
        if let Some(st) = self.strategies.get_mut(&sid) {
            if !st.journal.is_answered(last.order_seq) {
                st.answer(Answer {
                    order_id: last.order.order_id,
                    kind: last.order.kind.byte(),
                    code: FateCode::Routed,
                    reason: None,
                    order_seq: last.order_seq,
                    out_seq: Some(n - 1),
                })?;
                self.events.push(RouterEvent::Recovered {
                    id,
                    order_seq: last.order_seq,
                    out_seq: n - 1,
                });
            }
        }
        Ok(())
    }

    /// The strategy directory whose id hashes to `sid`.
    fn strategy_named(&self, sid: SourceId) -> Result<Option<String>> {
        let dir = self.layout.strategies_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| BusError::io(&dir, "list", e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|name| SourceId::of(name) == sid))
    }

    fn weight_of(&self, id: &str) -> NonZeroU32 {
        self.config
            .weights
            .iter()
            .rev()
            .find(|(w, _)| w == id)
            .map_or(NonZeroU32::MIN, |(_, q)| *q)
    }

    /// Opens the strategy's journal (fates queue) the first time it is seen in this process.
    fn ensure_strategy(&mut self, sid: SourceId, id: &str) -> Result<()> {
        if self.strategies.contains_key(&sid) {
            return Ok(());
        }
        let journal = Journal::open(&self.layout, id, self.config.fates.clone())?;
        self.insert_strategy(sid, id, journal)
    }

    fn insert_strategy(&mut self, sid: SourceId, id: &str, journal: Journal) -> Result<()> {
        let stats = StrategyStats {
            id: id.to_string(),
            weight: self.weight_of(id).get(),
            merged: 0,
            skipped: 0,
            fates: FateCounts::default(),
            rejections: Rejections::default(),
            attached: 0,
            pending: 0,
            latency: latency_histogram()?,
            stages: Stages::new()?,
        };
        self.strategies.insert(sid, Strategy { journal, stats });
        Ok(())
    }

    /// Where a discovered strategy's journal is: opened already, being opened on a helper
    /// thread (creating a fates queue takes milliseconds: the loop keeps routing for the
    /// strategies it has meanwhile), or failed to open.
    fn journal_state(&mut self, ep: &Endpoint) -> std::result::Result<bool, String> {
        if self.strategies.contains_key(&ep.source_id) {
            return Ok(true);
        }
        let Some(handle) = self.opening.remove(&ep.id) else {
            let (layout, id, cfg) = (
                self.layout.clone(),
                ep.id.clone(),
                self.config.fates.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("open-fates-{}", ep.id))
                .spawn(move || Journal::open(&layout, &id, cfg));
            match spawned {
                Ok(h) => {
                    self.opening.insert(ep.id.clone(), h);
                    return Ok(false);
                }
                // No thread to be had: open it here.
                Err(_) => {
                    return self
                        .ensure_strategy(ep.source_id, &ep.id)
                        .map(|()| true)
                        .map_err(|e| e.to_string());
                }
            }
        };
        if !handle.is_finished() {
            self.opening.insert(ep.id.clone(), handle);
            return Ok(false);
        }
        match handle.join() {
            Ok(Ok(journal)) => self
                .insert_strategy(ep.source_id, &ep.id, journal)
                .map(|()| true)
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the thread opening its fates queue panicked".to_string()),
        }
    }

    /// One pass: discovery (when due), merge, send, answer what expired, commit. Returns
    /// whether anything was merged or sent.
    pub fn step(&mut self) -> Result<bool> {
        let now = Instant::now();
        if self
            .last_poll
            .is_none_or(|t| now.duration_since(t) >= self.config.poll_every)
        {
            self.follow_discovery()?;
            self.last_poll = Some(now);
        }
        // Not only at polls: a strategy that restarts is attached again as soon as its
        // previous incarnation has drained, and one whose fates queue is being opened as soon
        // as it is open.
        if !self.waiting.is_empty() {
            self.attach_waiting();
        }
        let merged = self.merge()?;
        let sent = self.send()?;
        let expired = self.answer_expired()?;
        if merged + sent + expired > 0 {
            self.commit()?;
        }
        Ok(merged + sent > 0)
    }

    fn follow_discovery(&mut self) -> Result<()> {
        let mut events = Vec::new();
        self.discovery.poll_into(&mut events)?;
        for ev in events {
            match ev {
                DiscoveryEvent::Added(ep) => {
                    self.waiting.insert(ep.id.clone(), ep);
                }
                DiscoveryEvent::Removed(ep, reason) => {
                    self.waiting.remove(&ep.id);
                    // Deliver what it committed before it went away, then drop it.
                    if self.fanin.remove_source(ep.source_id, true).is_ok() {
                        self.events
                            .push(RouterEvent::Detached { id: ep.id, reason });
                    }
                }
            }
        }
        for st in self.strategies.values_mut() {
            st.journal.heartbeat();
        }
        Ok(())
    }

    /// Attaches what discovery found, each once its journal is open.
    fn attach_waiting(&mut self) {
        let mut done = Vec::new();
        let waiting: Vec<Endpoint> = self.waiting.values().cloned().collect();
        for ep in waiting {
            match self.journal_state(&ep) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    self.events.push(RouterEvent::AttachFailed {
                        id: ep.id.clone(),
                        error,
                    });
                    done.push(ep.id);
                    continue;
                }
            }
            match self.fanin.add_source(&ep.id, &ep.orders) {
                Ok(sid) => {
                    if let Some(st) = self.strategies.get_mut(&sid) {
                        st.rebase(self.fanin.source_history(sid), &mut self.events);
                        st.stats.attached += 1;
                        self.events.push(RouterEvent::Attached {
                            id: ep.id.clone(),
                            weight: st.stats.weight,
                        });
                    }
                    done.push(ep.id);
                }
                // The previous incarnation is still draining: try again at the next step.
                Err(BusError::DuplicateSource { .. }) => {}
                Err(e) => {
                    self.events.push(RouterEvent::AttachFailed {
                        id: ep.id.clone(),
                        error: e.to_string(),
                    });
                    done.push(ep.id);
                }
            }
        }
        for id in done {
            self.waiting.remove(&id);
        }
    }

    /// Hands every releasable order to the scheduler (answering at once what cannot queue).
    fn merge(&mut self) -> Result<usize> {
        let mut moved = 0;
        while moved < 4096 {
            let Some(m) = self.fanin.next()? else { break };
            moved += 1;
            let (sid, seq, pos, written_ns) = (m.source(), m.seq(), m.position(), m.timestamp_ns());
            let epoch = m.history_epoch();
            let order = if m.type_id() == ORDER {
                Order::decode(m.payload())
            } else {
                None
            };
            // Only a record that is not an order needs its raw id and kind (for `malformed`).
            let raw = order.is_none().then(|| Order::id_and_kind_of(m.payload()));
            let Some(st) = self.strategies.get_mut(&sid) else {
                continue;
            };
            if epoch != st.journal.epoch() {
                st.rebase(self.fanin.source_history(sid), &mut self.events);
            }
            if st.journal.classify(seq) == Merge::Skip {
                st.stats.skipped += 1;
                continue;
            }
            st.journal.take(seq, pos);
            st.stats.merged += 1;
            st.stats.pending = st.journal.pending();
            let tenant = TenantKey::new(sid.0);
            let Some(order) = order else {
                let (raw_id, raw_kind) = raw.unwrap_or((0, super::record::KIND_UNKNOWN));
                st.answer(Answer {
                    order_id: raw_id,
                    kind: raw_kind,
                    code: FateCode::Malformed,
                    reason: None,
                    order_seq: seq,
                    out_seq: None,
                })?;
                continue;
            };
            let merged_ns = realtime_ns();
            let q = Queued {
                order,
                seq,
                written_ns,
                merged_ns,
            };
            if order.kind == Kind::Cancel {
                let target = order.order_id;
                let caught = self.sched.remove_last_where(tenant, |p| {
                    p.order.kind == Kind::New && p.order.order_id == target
                });
                if let Some(task) = caught {
                    // The order never left: both are answered `cancelled`, nothing is sent.
                    st.answer_order(task.into_payload(), FateCode::Cancelled)?;
                    st.answer_order(q, FateCode::Cancelled)?;
                    continue;
                }
            }
            let now_ns = merged_ns;
            let now = Instant::now();
            let mut task = Task::new(q);
            if order.deadline_ns != 0 {
                let left = Duration::from_nanos(order.deadline_ns.saturating_sub(now_ns));
                task = task.with_deadline(now + left);
            }
            if order.kind == Kind::Cancel {
                task = task.urgent();
            }
            match self.sched.enqueue_at(tenant, task, now) {
                Ok(Enqueued::Queued) => {
                    chronicle_core::testing::crash::point("router.enqueued");
                }
                Ok(Enqueued::Evicted(victim)) => {
                    st.answer_order(victim.into_payload(), FateCode::Evicted)?;
                }
                Err(rejected) => {
                    st.stats.rejections.add(rejected.reason());
                    let reason = match rejected.reason() {
                        RejectReason::TenantFull => RejectCode::StrategyFull,
                        RejectReason::GlobalFull => RejectCode::RouterFull,
                        RejectReason::TooManyTenants => RejectCode::TooManyStrategies,
                        RejectReason::Closed => RejectCode::Closed,
                    };
                    st.answer(Answer {
                        order_id: order.order_id,
                        kind: order.kind.byte(),
                        code: FateCode::Rejected,
                        reason: Some(reason),
                        order_seq: seq,
                        out_seq: None,
                    })?;
                }
            }
        }
        Ok(moved)
    }

    /// Sends under the rate limit: each order is written to `router/out` stamped with the time
    /// its deadline was checked (never later than its deadline), then answered `routed`.
    fn send(&mut self) -> Result<usize> {
        let now = Instant::now();
        self.bucket.refill(now);
        let mut sent = 0;
        while self.bucket.ready()
            || (self.bucket.ready_for_new() && self.sched.new_tenant_waiting())
        {
            let Dequeued::Task(tenant, task) = self.sched.try_dequeue_at(now) else {
                break;
            };
            let q = task.into_payload();
            let sid = SourceId(tenant.id());
            let Some(st) = self.strategies.get_mut(&sid) else {
                continue;
            };
            let ts = realtime_ns();
            let dequeued_ns = ts;
            if q.order.expired_at(ts) {
                st.stats.stages.record_expired(&q, ts);
                st.answer_order(q, FateCode::Expired)?;
                continue;
            }
            let routed = Routed {
                order: q.order,
                source_id: sid.0,
                order_seq: q.seq,
            };
            let out_seq = self
                .out
                .append_at(ROUTED, ts, &routed.encode())
                .map_err(|e| BusError::queue(self.layout.router_out(), e))?;
            chronicle_core::testing::crash::point("router.after_out");
            st.answer(Answer {
                order_id: q.order.order_id,
                kind: q.order.kind.byte(),
                code: FateCode::Routed,
                reason: None,
                order_seq: q.seq,
                out_seq: Some(out_seq),
            })?;
            chronicle_core::testing::crash::point("router.after_fate");
            let latency = ts.saturating_sub(q.order.origin_ns).max(1);
            st.stats.latency.saturating_record(latency);
            st.stats.stages.record(&q, dequeued_ns, realtime_ns());
            self.total.saturating_record(latency);
            self.window.saturating_record(latency);
            self.routed += 1;
            sent += 1;
            self.bucket.spend();
        }
        Ok(sent)
    }

    fn answer_expired(&mut self) -> Result<usize> {
        if self.sched.queue_len() > 0 {
            self.sched.purge_expired_at(Instant::now());
        }
        self.sched.drain_expired(&mut self.expired);
        let n = self.expired.len();
        for (tenant, task) in self.expired.drain(..) {
            if let Some(st) = self.strategies.get_mut(&SourceId(tenant.id())) {
                let q = task.into_payload();
                st.stats.stages.record_expired(&q, realtime_ns());
                st.answer_order(q, FateCode::Expired)?;
            }
        }
        Ok(n)
    }

    /// Commits every strategy's position up to its first order without a fate.
    fn commit(&mut self) -> Result<()> {
        let strategies = &self.strategies;
        self.fanin
            .commit_with(|sid| strategies.get(&sid).and_then(|s| s.journal.hold()))
    }

    /// Sleeps until there may be work: a strategy commits, a hold runs out, or a token for a
    /// queued order comes due (at most `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        let mut timeout = timeout;
        if self.sched.queue_len() > 0 {
            timeout = timeout.min(self.bucket.until_ready());
        }
        if timeout.is_zero() {
            return Ok(());
        }
        self.fanin.wait(timeout).map(drop)
    }

    /// Starts a drain: from now on [`is_drained`](Self::is_drained) tells when every strategy
    /// has left, everything it committed is merged and every queued order is answered.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        self.discovery.request_rescan();
    }

    /// See [`begin_drain`](Self::begin_drain).
    pub fn is_drained(&self) -> bool {
        self.draining
            && self.discovery.attached().next().is_none()
            && self.waiting.is_empty()
            && self.fanin.is_empty()
            && self.sched.queue_len() == 0
    }

    /// The whole router process loop: steps and waits until `stop()` turns true, then drains
    /// (for at most `drain_limit`). `observe` is called after every step (report, take events).
    /// Returns whether the drain completed; an order still queued when it did not keeps its
    /// position uncommitted and is taken again by the next router.
    pub fn run(
        &mut self,
        stop: impl Fn() -> bool,
        drain_limit: Duration,
        mut observe: impl FnMut(&mut Router),
    ) -> Result<bool> {
        let mut stop_at: Option<Instant> = None;
        loop {
            if stop_at.is_none() && stop() {
                stop_at = Some(Instant::now());
                self.begin_drain();
            }
            let busy = self.step()?;
            observe(self);
            if let Some(t) = stop_at {
                if self.is_drained() {
                    return Ok(true);
                }
                if t.elapsed() > drain_limit {
                    return Ok(false);
                }
            }
            if !busy {
                self.wait(Duration::from_micros(200))?;
            }
        }
    }

    /// Takes the events since the last call.
    pub fn take_events(&mut self) -> Vec<RouterEvent> {
        std::mem::take(&mut self.events)
    }

    /// Per-strategy counters, ordered by id.
    pub fn strategies(&self) -> Vec<&StrategyStats> {
        let mut v: Vec<&StrategyStats> = self.strategies.values().map(|s| &s.stats).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Orders routed by this process.
    pub fn routed(&self) -> u64 {
        self.routed
    }

    /// Orders queued in the scheduler now.
    pub fn queued(&self) -> usize {
        self.sched.queue_len()
    }

    /// Origin-to-route latency of every order this process routed, ns.
    pub fn latency(&self) -> &Histogram<u64> {
        &self.total
    }

    /// Origin-to-route latency since the last [`reset_window`](Self::reset_window), ns.
    pub fn window(&self) -> &Histogram<u64> {
        &self.window
    }

    /// Restarts the latency window.
    pub fn reset_window(&mut self) {
        self.window.reset();
    }

    /// The live merge's counters (records emitted, forced out by `max_hold`, late).
    pub fn fanin_stats(&self) -> FanInStats {
        self.fanin.stats()
    }

    /// The scheduler's counters (enqueued, dispatched, expired, evicted, removed, rejected by
    /// reason, queue length), over every strategy.
    pub fn scheduler_counters(&self) -> SchedulerCounters {
        self.sched.counters()
    }

    /// The scheduler's counters of one strategy (queued now, enqueued, dispatched, expired,
    /// evicted, removed, rejected), if the scheduler tracks it.
    pub fn tenant_stats(&self, id: &str) -> Option<TenantStats> {
        self.sched.tenant_stats(TenantKey::new(SourceId::of(id).0))
    }

    /// Records the live merge has read and not yet handed on (see [`FanInReader::held`]).
    pub fn merge_held(&self) -> usize {
        self.fanin.held()
    }

    /// Time orders spent in the scheduler, enqueue to dispatch (ns), over every strategy.
    pub fn queue_time(&self) -> &Histogram<u64> {
        self.sched.queue_time_histogram()
    }

    /// Replaces the strategies' DRR weights (strategies not listed weigh 1), for a config
    /// reload without a restart. A strategy's new weight applies from its next grant (its next
    /// entry into the round or top-up); queued orders stay where they are.
    ///
    /// # Errors
    /// [`BusError::InvalidConfig`] if a newly listed strategy cannot be tracked (more than the
    /// scheduler's tenant limit); the weights are then as far as they got.
    pub fn set_weights(&mut self, weights: Vec<(String, NonZeroU32)>) -> Result<()> {
        let mut ids: Vec<String> = self
            .config
            .weights
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        self.config.weights = weights;
        ids.extend(self.config.weights.iter().map(|(id, _)| id.clone()));
        ids.extend(self.strategies.values().map(|s| s.stats.id.clone()));
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let w = self.weight_of(&id);
            let sid = SourceId::of(&id);
            if let Some(st) = self.strategies.get_mut(&sid) {
                st.stats.weight = w.get();
            }
            self.sched
                .set_quantum(TenantKey::new(sid.0), w)
                .map_err(|_| BusError::InvalidConfig {
                    what: "router weights: more strategies than the scheduler tracks",
                })?;
        }
        Ok(())
    }

    /// The DRR weights in force (strategies not listed weigh 1).
    pub fn weights(&self) -> &[(String, NonZeroU32)] {
        &self.config.weights
    }

    /// Changes the outbound rate limit (orders and cancels per second, 0: unlimited) from now
    /// on, for a config reload without a restart.
    pub fn set_rate_limit(&mut self, rate_per_s: u64) {
        self.config.rate_limit = rate_per_s;
        self.bucket.set_rate(rate_per_s, Instant::now());
    }

    /// The outbound rate limit in force (orders per second, 0: unlimited).
    pub fn rate_limit(&self) -> u64 {
        self.config.rate_limit
    }

    /// The next seq of `router/out`.
    pub fn out_next_seq(&self) -> u64 {
        self.out.next_seq()
    }

    /// Commits what is answered and closes `router/out` and every fates queue cleanly.
    pub fn close(mut self) -> Result<()> {
        self.commit()?;
        let out_path = self.layout.router_out();
        self.out.close().map_err(|e| BusError::queue(out_path, e))?;
        for (_, st) in self.strategies.drain() {
            st.journal.close()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_paces_and_caps_at_one_millisecond() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000, 0, t0);
        let drain = |b: &mut TokenBucket| {
            let mut n = 0;
            while b.ready() && n < 1_000 {
                b.spend();
                n += 1;
            }
            n
        };
        assert_eq!(drain(&mut b), 0);
        assert!(b.until_ready() > Duration::ZERO);
        b.refill(t0 + Duration::from_micros(250));
        assert_eq!(drain(&mut b), 2);
        // A long quiet spell earns at most 1 ms worth (10 tokens).
        b.refill(t0 + Duration::from_secs(5));
        assert_eq!(drain(&mut b), 10);
        // Rate 0 is unlimited.
        let mut u = TokenBucket::new(0, 1, t0);
        assert_eq!(drain(&mut u), 1_000);
        assert_eq!(u.until_ready(), Duration::ZERO);
        // A reserve of one: anyone may spend down to one token, a new strategy the last one.
        let mut r = TokenBucket::new(10_000, 1, t0);
        r.refill(t0 + Duration::from_secs(1));
        assert_eq!(drain(&mut r), 10, "1 ms worth for anyone, the reserve kept");
        assert!(r.ready_for_new());
        r.spend();
        assert!(!r.ready_for_new());
        // A lower rate caps what was earned at its own 1 ms; a higher one earns faster.
        let mut c = TokenBucket::new(100_000, 0, t0);
        c.refill(t0 + Duration::from_secs(1));
        c.set_rate(10_000, t0 + Duration::from_secs(1));
        assert_eq!(drain(&mut c), 10);
        c.set_rate(1_000_000, t0 + Duration::from_secs(1));
        c.refill(t0 + Duration::from_secs(1) + Duration::from_micros(100));
        assert_eq!(drain(&mut c), 100);
    }
}
