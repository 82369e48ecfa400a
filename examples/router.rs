//! The order router: finds strategies as they come and go (`RouterDiscovery`), merges their
//! order queues by timestamp (`FanInReader`, live mode), orders the flow fairly per strategy with
//! the DRR scheduler (cancels urgent, expired orders dropped, a full strategy refused), and sends
//! the result to the outbound queue `router/out` under an exchange-style rate limit. It measures
//! tick-to-route latency: from the feed's send stamp of the tick that caused an order to the
//! moment the order is written out.
//!
//! ```text
//! cargo run --release --example router -- --bus /dev/shm/bus [--weights s1=1,s2=3]
//!     [--rate-limit 200000] [--hold-us 500] [--max-per-tenant 1024] [--secs 0]
//! ```
//!
//! This is the readable standalone version. `chron-cli router` (in
//! `chronicle-cli/src/topology/router.rs`) is the operational twin that `chron-cli demo` runs as
//! a process: the same bus calls and the same `chronicle::topology` logic, plus JSON status lines
//! and a clean stop on SIGTERM.

mod common;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use chronicle::bus::sched::{Dequeued, LocalScheduler, SchedulerConfig, TenantKey};
use chronicle::bus::{
    BusLayout, DiscoveryConfig, DiscoveryEvent, FanInConfig, FanInReader, MergeMode,
    RouterDiscovery, SourceId,
};
use chronicle::core::sys::realtime_ns;
use chronicle::core::{QueueWriter, RetentionPolicy, WriterConfig};
use chronicle::topology::{ORDER, Order, TokenBucket, order_task};
use common::Args;
use hdrhistogram::Histogram;

const USAGE: &str = "router --bus DIR [--weights ID=W,..] [--rate-limit ORDERS_PER_S] \
                     [--hold-us US] [--max-per-tenant N] [--secs S]";

/// Per-strategy counters.
#[derive(Default)]
struct PerStrategy {
    name: String,
    weight: u32,
    merged: u64,
    routed: u64,
    rejected: u64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("router: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(USAGE, &[]);
    let bus = args.str("bus").ok_or("--bus is required")?;
    let rate_limit = args.num("rate-limit", 200_000, USAGE).max(1);
    let hold = Duration::from_micros(args.num("hold-us", 500, USAGE));
    let max_per_tenant = args.num("max-per-tenant", 1_024, USAGE).max(1) as usize;
    let run_for = args.secs("secs", USAGE);
    let mut weights: HashMap<String, u32> = HashMap::new();
    for pair in args
        .str("weights")
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (id, w) = pair.split_once('=').ok_or("--weights takes ID=W,ID=W")?;
        weights.insert(
            id.to_string(),
            w.parse().map_err(|_| format!("bad weight in {pair:?}"))?,
        );
    }

    let layout = BusLayout::create(bus)?;
    let mut discovery = RouterDiscovery::new(&layout, DiscoveryConfig::default())?;
    let mut fanin = FanInReader::new(FanInConfig {
        mode: MergeMode::Live,
        max_hold: Some(hold),
        reader_name: Some("router".to_string()),
        doorbell: Some(layout.doorbell()),
        ..FanInConfig::default()
    })?;
    let mut sched_cfg = SchedulerConfig::default().with_max_per_tenant(max_per_tenant);
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
    let mut out = QueueWriter::open(layout.router_out(), out_cfg)?;
    println!(
        "router: out {} (next seq {}), rate limit {rate_limit}/s, hold {hold:?}",
        out.path().display(),
        out.next_seq()
    );

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut strategies: HashMap<SourceId, PerStrategy> = HashMap::new();
    let mut events = Vec::new();
    let start = Instant::now();
    let (mut last_poll, mut last_report) = (start, start);
    let mut bucket = TokenBucket::new(rate_limit as f64, start);
    let (mut routed, mut routed_at_report, mut merged) = (0u64, 0u64, 0u64);
    loop {
        let now = Instant::now();
        if run_for.is_some_and(|d| now.duration_since(start) >= d) {
            break;
        }
        // Follow strategies as they come and go.
        if now.duration_since(last_poll) >= Duration::from_millis(20) {
            events.clear();
            discovery.poll_into(&mut events)?;
            for ev in &events {
                match ev {
                    DiscoveryEvent::Added(ep) => {
                        let weight = weights.get(&ep.id).copied().unwrap_or(1);
                        match fanin.add_source(&ep.id, &ep.orders) {
                            Ok(id) => {
                                println!("router: + {} (weight {weight})", ep.id);
                                let s = strategies.entry(id).or_default();
                                s.name.clone_from(&ep.id);
                                s.weight = weight;
                            }
                            Err(e) => println!("router: cannot attach {}: {e}", ep.id),
                        }
                    }
                    DiscoveryEvent::Removed(ep, reason) => {
                        println!("router: - {} ({reason:?})", ep.id);
                        // Deliver what it committed before it went away, then drop it.
                        if let Err(e) = fanin.remove_source(ep.source_id, true) {
                            println!("router: detaching {}: {e}", ep.id);
                        }
                    }
                }
            }
            last_poll = now;
        }
        // Merge: hand every releasable order to the scheduler.
        let mut moved = 0;
        while moved < 4096 {
            let Some(m) = fanin.next()? else { break };
            let source = m.source();
            let Some(order) = Order::decode(m.payload()) else {
                continue;
            };
            moved += 1;
            merged += 1;
            let s = strategies.entry(source).or_default();
            s.merged += 1;
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
            match sched.try_dequeue_at(now) {
                Dequeued::Task(tenant, task) => {
                    let order = task.into_payload();
                    out.append(ORDER, &order.encode())?;
                    let t2r = realtime_ns().saturating_sub(order.tick_send_ts);
                    let _ = latency.record(t2r.max(1));
                    if let Some(s) = strategies.get_mut(&SourceId(tenant.id())) {
                        s.routed += 1;
                    }
                    routed += 1;
                    sent_now += 1;
                    bucket.spend();
                }
                _ => break,
            }
        }
        if now.duration_since(last_report) >= Duration::from_secs(1) {
            let c = sched.counters();
            println!(
                "router: {} routed/s, merged {merged}, queued {}, rejected {}, expired {}, tick-to-route p50 {} us p99 {} us",
                routed - routed_at_report,
                c.queue_len,
                c.rejected.total(),
                c.expired,
                latency.value_at_quantile(0.5) / 1_000,
                latency.value_at_quantile(0.99) / 1_000,
            );
            routed_at_report = routed;
            last_report = now;
        }
        if moved == 0 && sent_now == 0 {
            // Nothing to do: sleep on the bus doorbell (or until a hold deadline / probe).
            fanin.wait(Duration::from_micros(200))?;
        }
    }
    fanin.commit()?;
    out.close()?;
    let c = sched.counters();
    println!(
        "router: routed {routed}, merged {merged}, rejected {}, expired {}; tick-to-route p50 {} ns, p99 {} ns, p99.9 {} ns",
        c.rejected.total(),
        c.expired,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999)
    );
    let mut rows: Vec<&PerStrategy> = strategies.values().collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    for s in rows {
        let share = if routed == 0 {
            0.0
        } else {
            100.0 * s.routed as f64 / routed as f64
        };
        println!(
            "router:   {:<8} weight {:<3} merged {:>9} routed {:>9} ({share:5.1}%) rejected {:>8}",
            s.name, s.weight, s.merged, s.routed, s.rejected
        );
    }
    Ok(())
}
