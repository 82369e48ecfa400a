//! `chron-cli router`: follows strategies as they come and go (`RouterDiscovery`), merges their
//! order queues (`FanInReader`, live, named per-source positions "router", bus doorbell), orders
//! the flow per strategy with the DRR scheduler (tenant = strategy, cancels urgent, deadlines,
//! a full strategy refused) and writes it to `router/out` under a token-bucket rate limit (the
//! exchange throttle). Tick-to-route latency (the feed's send stamp of the tick behind an order
//! → the order's write to `router/out`) goes into a histogram.
//!
//! An order is written stamped with the time its deadline was last checked, and only if that
//! time is not past its deadline; otherwise it counts as expired. So every order of a strategy
//! ends up routed, rejected or expired, and no record of `router/out` is past its deadline.
//!
//! On SIGTERM/SIGINT it drains: it keeps merging and routing until every strategy has left the
//! bus, every source is read to its end and the scheduler is empty (or 10 s have passed), then
//! prints its final JSON line.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronicle_bus::sched::{Dequeued, LocalScheduler, SchedulerConfig, TenantKey};
use chronicle_bus::{
    BusError, BusLayout, DiscoveryConfig, DiscoveryEvent, Endpoint, FanInConfig, FanInReader,
    MergeMode, RouterDiscovery, SourceId,
};
use chronicle_core::sys::realtime_ns;
use chronicle_core::{QueueWriter, RetentionPolicy, WriterConfig};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{emit, install_stop_handler, stop_requested};
use chronicle::topology::{ORDER, Order, TokenBucket, order_task};

/// Arguments of `chron-cli router`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bus directory (created if missing).
    #[arg(long)]
    pub bus: String,
    /// Tenant weights (DRR quanta), e.g. `s1=1,s2=2`; unlisted strategies weigh 1.
    #[arg(long, default_value = "")]
    pub weights: String,
    /// Outbound rate limit, orders per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate_limit: u64,
    /// Live merge: release a blocked head after this long, microseconds.
    #[arg(long, default_value_t = 500)]
    pub hold_us: u64,
    /// Orders a strategy may have queued in the scheduler before new ones are refused.
    #[arg(long, default_value_t = 1_024)]
    pub max_per_tenant: usize,
}

/// Per-strategy counters.
#[derive(Debug, Default)]
struct PerStrategy {
    name: String,
    weight: u32,
    merged: u64,
    routed: u64,
    rejected: u64,
    /// Found past their deadline at the outbound check (the scheduler counts its own).
    late: u64,
    attached: u64,
    /// Tick-to-route latency of this strategy's routed orders.
    t2r: Option<Histogram<u64>>,
}

/// Parses `ID=W,ID=W`.
pub fn parse_weights(s: &str) -> Result<HashMap<String, u32>> {
    let mut weights = HashMap::new();
    for pair in s.split(',').filter(|p| !p.is_empty()) {
        let (id, w) = pair
            .split_once('=')
            .with_context(|| format!("--weights takes ID=W,ID=W, not {pair:?}"))?;
        let w: u32 = w
            .parse()
            .ok()
            .filter(|w| *w > 0)
            .with_context(|| format!("bad weight in {pair:?}"))?;
        weights.insert(id.to_string(), w);
    }
    Ok(weights)
}

/// Runs the router until stopped and drained.
pub fn run(a: Args) -> Result<u8> {
    install_stop_handler();
    let weights = parse_weights(&a.weights)?;
    let rate_limit = a.rate_limit.max(1) as f64;
    let layout = BusLayout::create(&a.bus).context("cannot create the bus")?;
    let mut discovery = RouterDiscovery::new(&layout, DiscoveryConfig::default())?;
    let mut fanin = FanInReader::new(FanInConfig {
        mode: MergeMode::Live,
        max_hold: Some(Duration::from_micros(a.hold_us)),
        reader_name: Some("router".to_string()),
        doorbell: Some(layout.doorbell()),
        ..FanInConfig::default()
    })?;
    let mut sched_cfg = SchedulerConfig::default().with_max_per_tenant(a.max_per_tenant.max(1));
    for (id, w) in &weights {
        if let Some(q) = NonZeroU32::new(*w) {
            sched_cfg = sched_cfg.with_quantum(TenantKey::new(SourceId::of(id).0), q);
        }
    }
    let mut sched: LocalScheduler<Order> = LocalScheduler::new(sched_cfg)?;
    let out_cfg = WriterConfig {
        segment_size: 16 << 20,
        retention: RetentionPolicy {
            max_bytes: Some(256 << 20),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    };
    let mut out =
        QueueWriter::open(layout.router_out(), out_cfg).context("cannot open router/out")?;

    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut window = total.clone();
    let mut strategies: HashMap<SourceId, PerStrategy> = HashMap::new();
    // Endpoints whose previous incarnation is still draining in the fan-in.
    let mut pending_add: HashMap<String, Endpoint> = HashMap::new();
    let mut events = Vec::new();
    let start = Instant::now();
    let (mut last_poll, mut last_report) = (start, start);
    let mut bucket = TokenBucket::new(rate_limit, start);
    let mut routed = 0u64;
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stop_at.is_none() && stop_requested() {
            stop_at = Some(now);
            discovery.request_rescan();
        }
        // Follow strategies as they come and go.
        if now.duration_since(last_poll) >= Duration::from_millis(10) {
            events.clear();
            discovery.poll_into(&mut events)?;
            for ev in events.drain(..) {
                match ev {
                    DiscoveryEvent::Added(ep) => {
                        pending_add.insert(ep.id.clone(), ep);
                    }
                    DiscoveryEvent::Removed(ep, reason) => {
                        pending_add.remove(&ep.id);
                        emit(&json!({"role": "router", "event": "removed", "id": ep.id,
                            "reason": format!("{reason:?}")}));
                        // Deliver what it committed before it went away, then drop it.
                        let _ = fanin.remove_source(ep.source_id, true);
                    }
                }
            }
            let mut attached = Vec::new();
            for (id, ep) in &pending_add {
                match fanin.add_source(&ep.id, &ep.orders) {
                    Ok(sid) => {
                        let weight = weights.get(id).copied().unwrap_or(1);
                        let s = strategies.entry(sid).or_default();
                        s.name.clone_from(id);
                        s.weight = weight;
                        s.attached += 1;
                        emit(&json!({"role": "router", "event": "added", "id": id,
                            "weight": weight}));
                        attached.push(id.clone());
                    }
                    // The previous incarnation is still draining: try again next poll.
                    Err(BusError::DuplicateSource { .. }) => {}
                    Err(e) => {
                        emit(&json!({"role": "router", "event": "error", "id": id,
                            "error": e.to_string()}));
                        attached.push(id.clone());
                    }
                }
            }
            for id in attached {
                pending_add.remove(&id);
            }
            last_poll = now;
        }
        // Merge: hand every releasable order to the scheduler.
        let mut moved = 0;
        while moved < 4096 {
            let Some(m) = fanin.next()? else { break };
            moved += 1;
            let source = m.source();
            let s = strategies.entry(source).or_default();
            s.merged += 1;
            let Some(order) = Order::decode(m.payload()) else {
                s.rejected += 1;
                continue;
            };
            let task = order_task(order, realtime_ns(), Instant::now());
            if sched.enqueue(TenantKey::new(source.0), task).is_err() {
                s.rejected += 1;
            }
        }
        if moved > 0 {
            fanin.commit()?;
        }
        // Route under the rate limit (a token bucket holding at most 1 ms of sends).
        let now = Instant::now();
        bucket.refill(now);
        let mut sent_now = 0;
        while bucket.ready() {
            let Dequeued::Task(tenant, task) = sched.try_dequeue_at(Instant::now()) else {
                break;
            };
            let order = task.into_payload();
            let s = strategies.entry(SourceId(tenant.id())).or_default();
            let ts = realtime_ns();
            if ts > order.deadline_ns {
                s.late += 1;
                continue;
            }
            out.append_at(ORDER, ts, &order.encode())?;
            let t2r = realtime_ns().saturating_sub(order.tick_send_ts).max(1);
            let _ = total.record(t2r);
            let _ = window.record(t2r);
            if s.t2r.is_none() {
                s.t2r = Histogram::new_with_bounds(1, 60_000_000_000, 3).ok();
            }
            if let Some(h) = &mut s.t2r {
                let _ = h.record(t2r);
            }
            s.routed += 1;
            routed += 1;
            sent_now += 1;
            bucket.spend();
        }
        let drained = stop_at.is_some()
            && discovery.attached().next().is_none()
            && pending_add.is_empty()
            && fanin.is_empty()
            && sched.queue_len() == 0;
        let give_up = stop_at.is_some_and(|t| now.duration_since(t) > Duration::from_secs(10));
        if drained || give_up || now.duration_since(last_report) >= Duration::from_secs(1) {
            let fin = drained || give_up;
            emit(&report(
                &strategies,
                &sched,
                &total,
                &window,
                routed,
                fin,
                give_up,
            ));
            window.reset();
            last_report = now;
            if fin {
                break;
            }
        }
        if moved == 0 && sent_now == 0 {
            // Nothing to do: sleep on the bus doorbell (or until a hold deadline / probe).
            fanin.wait(Duration::from_micros(200))?;
        }
    }
    fanin.commit()?;
    out.close()?;
    Ok(0)
}

fn report(
    strategies: &HashMap<SourceId, PerStrategy>,
    sched: &LocalScheduler<Order>,
    total: &Histogram<u64>,
    window: &Histogram<u64>,
    routed: u64,
    fin: bool,
    incomplete: bool,
) -> Value {
    let mut rows: Vec<(&SourceId, &PerStrategy)> = strategies.iter().collect();
    rows.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let per: Vec<Value> = rows
        .into_iter()
        .map(|(sid, s)| {
            let st = sched.tenant_stats(TenantKey::new(sid.0));
            let expired = st.map_or(0, |t| t.expired) + s.late;
            let queued = st.map_or(0, |t| t.queued);
            let (p50, p99) = s.t2r.as_ref().map_or((0, 0), |h| {
                (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
            });
            json!({"id": s.name, "weight": s.weight, "merged": s.merged, "routed": s.routed,
                "rejected": s.rejected, "expired": expired, "queued": queued,
                "attached": s.attached, "t2r_p50_ns": p50, "t2r_p99_ns": p99})
        })
        .collect();
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    json!({"role": "router", "final": fin, "incomplete": incomplete, "routed": routed,
        "queued": sched.queue_len(),
        "window": {"p50_ns": q(window, 0.5), "p99_ns": q(window, 0.99)},
        "latency": {"count": total.len(), "p50_ns": q(total, 0.5), "p99_ns": q(total, 0.99),
            "p999_ns": q(total, 0.999), "max_ns": total.max()},
        "strategies": per})
}
