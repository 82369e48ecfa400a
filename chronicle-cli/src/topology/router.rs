//! `chron-cli router`: the bus's order router ([`chronicle_bus::orders::Router`]) as a process,
//! with JSON status lines (one a second, a final one with `"final":true`) and events
//! (`attached`, `detached`, `recovered`, `error`). On SIGTERM/SIGINT it drains: it keeps
//! merging and routing until every strategy has left the bus, everything they committed is
//! merged and every queued order is answered (or 10 s have passed), then closes.
//!
//! With `--config FILE` its settings come from a TOML file ([`super::config`]); the tuning
//! flags then conflict with it. On SIGHUP (or when the file's modification time or size
//! changes, looked at once a second) it reads the file again and applies the new weights and
//! rate limit without a restart; a file that does not validate is refused and the running
//! config kept. Either way the reload is logged.

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chronicle_bus::BusLayout;
use chronicle_bus::orders::{FateCode, Router, RouterConfig, RouterEvent};
use chronicle_bus::sched::Backpressure;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use super::config::{self, RouterFile};
use super::{emit, install_stop_handler, stop_requested};
use crate::signals::{install_reload_handler, take_reload_request};
use chronicle_metrics::{Exposition, Kind, hdr_buckets, seconds};

/// Arguments of `chron-cli router`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bus directory (created if missing).
    #[arg(long)]
    pub bus: String,
    /// Topology config (TOML): weights, rate limit, hold and drain deadlines, scheduler limits,
    /// metrics address. Weights and rate limit are reloaded on SIGHUP or when the file changes.
    /// The tuning flags below conflict with it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Strategy weights (DRR quanta), e.g. `s1=1,s2=2`; unlisted strategies weigh 1.
    #[arg(long, default_value = "", conflicts_with = "config")]
    pub weights: String,
    /// Outbound rate limit, orders per second (0: unlimited).
    #[arg(long, default_value_t = 20_000, conflicts_with = "config")]
    pub rate_limit: u64,
    /// Live merge: send an order held back by a silent strategy after this long, microseconds.
    #[arg(long, default_value_t = 500, conflicts_with = "config")]
    pub hold_us: u64,
    /// Orders a strategy may have queued in the router before new ones are rejected.
    #[arg(long, default_value_t = 1_024, conflicts_with = "config")]
    pub max_per_tenant: usize,
    /// Cancels a strategy may have queued beyond that (cancels are never crowded out by orders).
    #[arg(long, default_value_t = 256, conflicts_with = "config")]
    pub cancel_reserve: usize,
    /// A full strategy's oldest queued order is evicted (answered `evicted`) instead of the new
    /// one being rejected.
    #[arg(long, conflicts_with = "config")]
    pub evict_oldest: bool,
    /// Serve the router's own numbers (fates per strategy, queued orders, tick-to-route
    /// histograms) to Prometheus at `GET /metrics` on this address; refreshed once a second.
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub metrics_listen: Option<String>,
    /// How it waits, and where it runs.
    #[command(flatten)]
    pub wait: super::WaitArgs,
}

/// Parses `ID=W,ID=W`.
pub fn parse_weights(s: &str) -> Result<Vec<(String, NonZeroU32)>> {
    let mut weights = Vec::new();
    for pair in s.split(',').filter(|p| !p.is_empty()) {
        let (id, w) = pair
            .split_once('=')
            .with_context(|| format!("--weights takes ID=W,ID=W, not {pair:?}"))?;
        let w = w
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .with_context(|| format!("bad weight in {pair:?}"))?;
        weights.push((id.to_string(), w));
    }
    Ok(weights)
}

/// Where the settings came from: the flags, or a config file (kept for reloads).
struct Source {
    path: PathBuf,
    /// The file's settings in force (weights and rate limit as last applied).
    running: RouterFile,
    /// The file's modification time and size when last read.
    stamp: Option<(std::time::SystemTime, u64)>,
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads the config again and applies its weights and rate limit; a file that does not
/// validate (or weights the scheduler cannot take) is refused and the running config kept.
/// Either way the outcome is logged.
fn reload(src: &mut Source, r: &mut Router, why: &str) {
    src.stamp = stamp(&src.path);
    let file = src.path.display().to_string();
    let new = match config::load(&src.path) {
        Ok(f) => f,
        Err(e) => {
            error!(config = %file, trigger = why, error = %e, "config reload refused; the running config is kept");
            return;
        }
    };
    if let Err(e) = r.set_weights(new.weights.clone()) {
        let _ = r.set_weights(src.running.weights.clone());
        error!(config = %file, trigger = why, error = %e, "config reload refused; the running config is kept");
        return;
    }
    let rate = new.rate_limit.unwrap_or(RouterConfig::default().rate_limit);
    r.set_rate_limit(rate);
    for key in src.running.restart_only_changes(&new) {
        warn!(config = %file, key, "changed in the config: takes effect at the next start");
    }
    src.running.weights = new.weights;
    src.running.rate_limit = new.rate_limit;
    info!(
        config = %file,
        trigger = why,
        rate_limit = rate,
        weights = %weights_text(r.weights()),
        "config reloaded"
    );
}

/// `id=w,id=w`, for the log.
fn weights_text(w: &[(String, NonZeroU32)]) -> String {
    w.iter()
        .map(|(id, w)| format!("{id}={w}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the router until stopped and drained.
pub fn run(a: Args) -> Result<u8> {
    install_stop_handler()?;
    // Always: a SIGHUP must not kill a router started without --config (it is logged).
    install_reload_handler()?;
    crate::queue::check_bus_dir(std::path::Path::new(&a.bus))?;
    super::pin(a.wait.cpu)?;
    let mut cfg = RouterConfig::default();
    cfg.spin_limit = a.wait.spin;
    cfg.yield_limit = a.wait.yields;
    let mut drain_limit = config::DEFAULT_DRAIN;
    let mut metrics_listen = a.metrics_listen.clone();
    let mut source = None;
    if let Some(path) = &a.config {
        let stamp = stamp(path);
        let file = config::load(path)?;
        file.apply(&mut cfg);
        drain_limit = file.drain_limit();
        metrics_listen.clone_from(&file.metrics_listen);
        source = Some(Source {
            path: path.clone(),
            running: file,
            stamp,
        });
    } else {
        cfg.weights = parse_weights(&a.weights)?;
        cfg.rate_limit = a.rate_limit;
        cfg.max_hold = Duration::from_micros(a.hold_us);
        cfg.max_per_tenant = a.max_per_tenant.max(1);
        cfg.cancel_reserve = a.cancel_reserve;
        if a.evict_oldest {
            cfg.backpressure = Backpressure::EvictOldest;
        }
    }
    // Bound before the router opens, so a taken address fails the start, not a scrape.
    let listener = match &metrics_listen {
        Some(addr) => Some((chronicle_metrics::bind(addr)?, addr.clone())),
        None => None,
    };
    let layout = BusLayout::new(&a.bus);
    let mut router = Router::open(&layout, cfg).context("cannot start the router")?;
    let snapshot = match listener {
        Some((l, addr)) => Some(serve_snapshot(l, &addr, exposition(&router))?),
        None => None,
    };
    emit(&json!({"role": "router", "start": true, "out_seq": router.out_next_seq()}));
    info!(
        bus = %a.bus,
        out_seq = router.out_next_seq(),
        config = %a.config.as_ref().map_or("(flags)".to_string(), |p| p.display().to_string()),
        rate_limit = router.rate_limit(),
        weights = %weights_text(router.weights()),
        "router started"
    );
    let mut last_report = Instant::now();
    let mut stopping = false;
    let drained = router.run(stop_requested, drain_limit, |r| {
        if take_reload_request() {
            match &mut source {
                Some(src) => reload(src, r, "SIGHUP"),
                None => warn!("SIGHUP ignored: the router was started without --config"),
            }
        }
        for ev in r.take_events() {
            log_event(&ev);
            emit(&event_json(&ev));
        }
        if !stopping && stop_requested() {
            stopping = true;
            info!(queued = r.queued(), "stop requested: draining");
        }
        let now = Instant::now();
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            if let Some(src) = &mut source {
                if stamp(&src.path) != src.stamp {
                    reload(src, r, "file changed");
                }
            }
            debug!(
                routed = r.routed(),
                queued = r.queued(),
                strategies = r.strategies().len(),
                "status"
            );
            emit(&report(r, false, false));
            if let Some(snap) = &snapshot {
                publish(snap, exposition(r));
            }
            r.reset_window();
            last_report = now;
        }
    })?;
    emit(&report(&router, true, !drained));
    if drained {
        info!(routed = router.routed(), "router stopped, drained");
    } else {
        warn!(
            routed = router.routed(),
            queued = router.queued(),
            "router stopped before the drain completed: the next router takes the rest"
        );
    }
    router.close()?;
    Ok(0)
}

/// The latest exposition, published by the router loop and read by the metrics thread.
type Snapshot = Arc<Mutex<String>>;

/// Serves `first` and then whatever is [`publish`]ed, from a helper thread: a scrape copies
/// the text under the lock and never touches the router.
fn serve_snapshot(listener: TcpListener, addr: &str, first: String) -> Result<Snapshot> {
    let snap: Snapshot = Arc::new(Mutex::new(first));
    match listener.local_addr() {
        Ok(local) => info!(addr = %local, "serving metrics at http://{local}/metrics"),
        Err(_) => info!(addr = %addr, "serving metrics"),
    }
    let theirs = Arc::clone(&snap);
    let addr = addr.to_string();
    std::thread::Builder::new()
        .name("router-metrics".to_string())
        .spawn(move || {
            let read = || {
                theirs
                    .lock()
                    .map_or_else(|p| p.into_inner().clone(), |s| s.clone())
            };
            if let Err(e) = chronicle_metrics::serve(&listener, read) {
                error!(addr = %addr, error = %e, "the metrics server stopped");
                emit(&json!({"role": "router", "event": "error", "id": "",
                    "error": format!("{e} (on {addr})")}));
            }
        })
        .context("cannot start the metrics thread")?;
    Ok(snap)
}

/// Replaces the served exposition; the lock is held for a pointer swap (the text is built
/// before, and the old one is freed after).
fn publish(snap: &Snapshot, mut text: String) {
    match snap.lock() {
        Ok(mut s) => std::mem::swap(&mut *s, &mut text),
        Err(p) => std::mem::swap(&mut *p.into_inner(), &mut text),
    }
}

/// Upper bounds of the latency histograms' buckets, ns: 5 us to 1 s.
const T2R_BOUNDS_NS: [u64; 15] = [
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
];

/// A latency histogram (ns) at the fixed [`T2R_BOUNDS_NS`], in seconds: buckets, sum, count.
fn seconds_buckets(h: &Histogram<u64>) -> (Vec<(f64, u64)>, f64, u64) {
    let (buckets, sum_ns, count) = hdr_buckets(h, &T2R_BOUNDS_NS);
    let buckets = buckets.into_iter().map(|(b, n)| (seconds(b), n)).collect();
    (buckets, sum_ns / 1e9, count)
}

/// The scheduler's order counters, over all strategies and per strategy: the part of the
/// family name between `chronicle_router_scheduler_` (`..._tenant_` per strategy) and `_total`,
/// and the help after "Orders" ("The strategy's orders" per strategy).
const SCHEDULER_COUNTERS: [(&str, &str); 5] = [
    ("enqueued", "the scheduler accepted."),
    ("dispatched", "the scheduler handed on to be sent."),
    (
        "expired",
        "dropped in the scheduler because their deadline passed.",
    ),
    (
        "evicted",
        "evicted from the scheduler to make room (evict-oldest back-pressure).",
    ),
    (
        "removed",
        "taken out of the scheduler by a cancel before dispatch.",
    ),
];

/// The router's own numbers, per strategy, in the Prometheus text format. Counters restart at
/// 0 with the process (the fates queues are the lasting record).
fn exposition(r: &Router) -> String {
    let mut e = Exposition::new();
    let fanin = r.fanin_stats();
    e.family(
        "chronicle_router_merged_records_total",
        Kind::Counter,
        "Records the live merge handed on, over every strategy.",
    )
    .sample(&[], fanin.emitted);
    e.family(
        "chronicle_router_merge_forced_total",
        Kind::Counter,
        "Records the live merge sent because the hold limit passed, not because every strategy's watermark allowed it.",
    )
    .sample(&[], fanin.forced);
    e.family(
        "chronicle_router_merge_late_total",
        Kind::Counter,
        "Records the live merge handed on with a key below one handed on before.",
    )
    .sample(&[], fanin.late);
    e.family(
        "chronicle_router_merge_held_records",
        Kind::Gauge,
        "Records the live merge has read and not yet handed on (held back while another strategy's watermark may still go below them).",
    )
    .sample(&[], r.merge_held() as u64);
    let c = r.scheduler_counters();
    let counts = [c.enqueued, c.dequeued, c.expired, c.evicted, c.removed];
    for ((name, help), v) in SCHEDULER_COUNTERS.iter().zip(counts) {
        e.family(
            &format!("chronicle_router_scheduler_{name}_total"),
            Kind::Counter,
            &format!("Orders {help}"),
        )
        .sample(&[], v);
    }
    e.family(
        "chronicle_router_scheduler_rejected_total",
        Kind::Counter,
        "Orders the scheduler refused, by reason (global_full, tenant_full, too_many_tenants, closed).",
    )
    .sample(&[("reason", "global_full")], c.rejected.global_full)
    .sample(&[("reason", "tenant_full")], c.rejected.tenant_full)
    .sample(&[("reason", "too_many_tenants")], c.rejected.too_many_tenants)
    .sample(&[("reason", "closed")], c.rejected.closed);
    e.family(
        "chronicle_router_scheduler_queue_length",
        Kind::Gauge,
        "Orders held in the scheduler now.",
    )
    .sample(&[], c.queue_len as u64);
    let (buckets, sum, count) = seconds_buckets(r.queue_time());
    e.family(
        "chronicle_router_scheduler_queue_time_seconds",
        Kind::Histogram,
        "Time orders spent in the scheduler, enqueue to dispatch (hdrhistogram at its precision; the sum is approximate).",
    )
    .histogram(&[], &buckets, sum, count);
    e.family(
        "chronicle_router_rate_limit_orders_per_second",
        Kind::Gauge,
        "The outbound rate limit in force, orders per second (0: unlimited); a config reload changes it.",
    )
    .sample(&[], r.rate_limit());
    let strategies = r.strategies();
    e.family(
        "chronicle_router_strategies",
        Kind::Gauge,
        "Strategies this router process has seen (attached now or before; their counters are kept).",
    )
    .sample(&[], strategies.len() as u64);
    for s in strategies {
        let l = [("strategy", s.id.as_str())];
        let f = e.family(
            "chronicle_router_fates_total",
            Kind::Counter,
            "Fates the router wrote to the strategy's fates queue, by fate (routed, rejected, expired, evicted, cancelled, malformed).",
        );
        for code in FateCode::ALL {
            f.sample(&[l[0], ("fate", code.name())], s.fates.get(code));
        }
        e.family(
            "chronicle_router_merged_total",
            Kind::Counter,
            "Orders and cancels the router took from the strategy's queue (each gets one fate).",
        )
        .sample(&l, s.merged);
        e.family(
            "chronicle_router_queued_orders",
            Kind::Gauge,
            "Orders taken from the strategy and not yet answered (queued in the scheduler).",
        )
        .sample(&l, s.pending as u64);
        e.family(
            "chronicle_router_strategy_weight",
            Kind::Gauge,
            "The strategy's DRR weight (quantum) in force; a config reload changes it.",
        )
        .sample(&l, u64::from(s.weight));
        let t = r.tenant_stats(&s.id);
        e.family(
            "chronicle_router_scheduler_tenant_queue_length",
            Kind::Gauge,
            "The strategy's orders held in the scheduler now.",
        )
        .sample(&l, t.map_or(0, |t| t.queued as u64));
        let counts = t.map_or([0; 5], |t| {
            [t.enqueued, t.dequeued, t.expired, t.evicted, t.removed]
        });
        for ((name, help), v) in SCHEDULER_COUNTERS.iter().zip(counts) {
            e.family(
                &format!("chronicle_router_scheduler_tenant_{name}_total"),
                Kind::Counter,
                &format!("The strategy's orders {help}"),
            )
            .sample(&l, v);
        }
        let rj = s.rejections;
        e.family(
            "chronicle_router_scheduler_tenant_rejected_total",
            Kind::Counter,
            "The strategy's orders the scheduler refused, by reason (tenant_full, global_full, too_many_tenants, closed); each is also a rejected fate.",
        )
        .sample(&[l[0], ("reason", "tenant_full")], rj.tenant_full)
        .sample(&[l[0], ("reason", "global_full")], rj.global_full)
        .sample(&[l[0], ("reason", "too_many_tenants")], rj.too_many_tenants)
        .sample(&[l[0], ("reason", "closed")], rj.closed);
        e.family(
            "chronicle_router_attached_total",
            Kind::Counter,
            "Times the router attached the strategy's order queue.",
        )
        .sample(&l, s.attached);
        let (buckets, sum, count) = seconds_buckets(&s.latency);
        e.family(
            "chronicle_router_tick_to_route_seconds",
            Kind::Histogram,
            "Origin (tick) to route latency of the strategy's routed orders (from the router's hdrhistogram at 1 % precision; the sum is approximate).",
        )
        .histogram(&l, &buckets, sum, count);
        let stages = e.family(
            "chronicle_router_stage_seconds",
            Kind::Histogram,
            "Where the strategy's routed orders spent their time, by stage: to_order (tick to order written), merge (written to merged), queue (merged to dispatched), send (dispatched to written to router/out and answered).",
        );
        for (stage, h) in [
            ("to_order", &s.stages.to_order),
            ("merge", &s.stages.merge),
            ("queue", &s.stages.queue),
            ("send", &s.stages.send),
        ] {
            let (buckets, sum, count) = seconds_buckets(h);
            stages.histogram(&[l[0], ("stage", stage)], &buckets, sum, count);
        }
    }
    e.render()
}

/// The log event of a router event (the same event is also a JSON line on stdout for `demo`).
fn log_event(ev: &RouterEvent) {
    match ev {
        RouterEvent::Attached { id, weight } => {
            info!(strategy = %id, weight, "strategy attached");
        }
        RouterEvent::Detached { id, reason } => {
            info!(strategy = %id, reason = ?reason, "strategy detached");
        }
        RouterEvent::AttachFailed { id, error } => {
            error!(strategy = %id, error = %error, "strategy not attached (tried again at the next discovery event)");
        }
        RouterEvent::Recovered {
            id,
            order_seq,
            out_seq,
        } => warn!(
            strategy = %id,
            order_seq,
            out_seq,
            "answered routed the order the previous router sent but did not answer"
        ),
        RouterEvent::HistoryRewritten {
            id,
            rewritten_from,
            voided,
        } => warn!(
            strategy = %id,
            rewritten_from,
            voided,
            "the strategy's order queue lost orders in a power cut: old answers from that seq on no longer count"
        ),
        other => info!(event = ?other, "router event"),
    }
}

fn event_json(ev: &RouterEvent) -> Value {
    match ev {
        RouterEvent::Attached { id, weight } => {
            json!({"role": "router", "event": "added", "id": id, "weight": weight})
        }
        RouterEvent::Detached { id, reason } => {
            json!({"role": "router", "event": "removed", "id": id, "reason": format!("{reason:?}")})
        }
        RouterEvent::AttachFailed { id, error } => {
            json!({"role": "router", "event": "error", "id": id, "error": error})
        }
        RouterEvent::Recovered {
            id,
            order_seq,
            out_seq,
        } => json!({"role": "router", "event": "recovered", "id": id,
            "reason": format!("order seq {order_seq} answered routed as router/out seq {out_seq}")}),
        RouterEvent::HistoryRewritten {
            id,
            rewritten_from,
            voided,
        } => json!({"role": "router", "event": "history-rewritten", "id": id,
            "reason": format!("order queue rewritten from seq {rewritten_from}: {voided} old answers no longer count")}),
        _ => json!({"role": "router", "event": "other", "id": "", "reason": format!("{ev:?}")}),
    }
}

fn q(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(p)
    }
}

fn report(r: &Router, fin: bool, incomplete: bool) -> Value {
    let per: Vec<Value> = r
        .strategies()
        .into_iter()
        .map(|s| {
            json!({"id": s.id, "weight": s.weight, "merged": s.merged, "skipped": s.skipped,
                "routed": s.fates.get(FateCode::Routed), "rejected": s.fates.get(FateCode::Rejected),
                "expired": s.fates.get(FateCode::Expired), "evicted": s.fates.get(FateCode::Evicted),
                "cancelled": s.fates.get(FateCode::Cancelled),
                "malformed": s.fates.get(FateCode::Malformed), "queued": s.pending,
                "attached": s.attached, "t2r_p50_ns": q(&s.latency, 0.5),
                "t2r_p99_ns": q(&s.latency, 0.99),
                "stages_ns": {
                    "to_order": {"p50": q(&s.stages.to_order, 0.5), "p99": q(&s.stages.to_order, 0.99)},
                    "merge": {"p50": q(&s.stages.merge, 0.5), "p99": q(&s.stages.merge, 0.99)},
                    "queue": {"p50": q(&s.stages.queue, 0.5), "p99": q(&s.stages.queue, 0.99)},
                    "send": {"p50": q(&s.stages.send, 0.5), "p99": q(&s.stages.send, 0.99)},
                    "expired_merge": {"p50": q(&s.stages.expired_merge, 0.5),
                        "p99": q(&s.stages.expired_merge, 0.99)},
                    "expired_queue": {"p50": q(&s.stages.expired_queue, 0.5),
                        "p99": q(&s.stages.expired_queue, 0.99)}}})
        })
        .collect();
    let (total, window) = (r.latency(), r.window());
    json!({"role": "router", "final": fin, "incomplete": incomplete, "routed": r.routed(),
        "queued": r.queued(),
        "window": {"p50_ns": q(window, 0.5), "p99_ns": q(window, 0.99)},
        "latency": {"count": total.len(), "p50_ns": q(total, 0.5), "p99_ns": q(total, 0.99),
            "p999_ns": q(total, 0.999), "max_ns": total.max()},
        "strategies": per})
}
